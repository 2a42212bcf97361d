#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "trainyard/cas/snapshot.h"
#include "trainyard/common/mutex.h"
#include "trainyard/envbuild/image_builder.h"
#include "trainyard/http/http_server.h"
#include "trainyard/sched/scheduler.h"
#include "trainyard/store/store.h"

namespace trainyard::api {

// The environment definition a POST body holds, its build context checked to be a snapshot of
// `snapshots` (InvalidArgument / NotFound otherwise): for the workspace's environments and a
// registry's.
StatusOr<spec::EnvironmentDefinition> EnvironmentFromBody(const HttpRequest& req,
                                                          const cas::Snapshotter& snapshots);

// The environment routes (docs/api.md, "Environments"):
//   POST /api/v1/environments                                  register (a version per change)
//   GET  /api/v1/environments[/{name}]                         every version (of one name)
//   GET  /api/v1/environments/{name}/versions/{version|latest}  one version
//   POST /api/v1/environments/{name}/versions/{version}/build   build (or find) its image
// Borrows what it is given; must outlive the server it is installed on (stop the server first).
// Its destructor waits for the builds it started.
class EnvironmentRoutes {
 public:
  EnvironmentRoutes(store::Store& store, envbuild::EnvironmentRegistry& registry,
                    const cas::Snapshotter& snapshots, envbuild::ImageBuilder& builder);
  ~EnvironmentRoutes();
  EnvironmentRoutes(const EnvironmentRoutes&) = delete;
  EnvironmentRoutes& operator=(const EnvironmentRoutes&) = delete;

  void Install(HttpServer& server);

 private:
  // Builds asked for by POST .../build: each on a thread of its own (a build takes minutes,
  // which would starve the blocking pool), at most kMaxBuilds at once.
  struct BuildTask {
    Mutex mu;
    bool done GUARDED_BY(mu) = false;
    std::string image GUARDED_BY(mu);
    std::string error GUARDED_BY(mu);
    std::string log GUARDED_BY(mu);
    std::thread thread;
  };
  static constexpr int kMaxBuilds = 4;

  asio::awaitable<HttpResponse> Build(HttpRequest& req);
  // Joins the finished builds' threads (all of them with `all`, waiting for those running).
  void Reap(bool all);

  HttpServer* http_ = nullptr;
  store::Store& store_;
  envbuild::EnvironmentRegistry& registry_;
  const cas::Snapshotter& snapshots_;
  envbuild::ImageBuilder& builder_;
  Mutex builds_mu_;
  std::vector<std::shared_ptr<BuildTask>> builds_ GUARDED_BY(builds_mu_);
  std::uint64_t next_build_ GUARDED_BY(builds_mu_) = 0;
};

}  // namespace trainyard::api

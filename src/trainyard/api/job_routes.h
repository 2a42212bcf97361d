#pragma once

#include <functional>
#include <string>

#include "trainyard/common/workspace.h"
#include "trainyard/http/http_server.h"
#include "trainyard/sched/scheduler.h"
#include "trainyard/store/store.h"
#include "trainyard/tracking/series_store.h"

namespace trainyard::api {

// The job routes (docs/api.md, "Jobs"):
//   POST /api/v1/jobs                      submit a RunRequest; 201 with the run
//   GET  /api/v1/jobs?experiment=&limit=   the newest runs first
//   GET  /api/v1/jobs/{name}               one run (status, transitions, phase durations, ...)
//   POST /api/v1/jobs/{name}/cancel        cancel; 200 with the run
//   GET  /api/v1/jobs/{name}/stream        long poll for the build log, the log and the status
//   GET  /api/v1/jobs/{name}/files         the run's files (a run token sees its own folders)
//   GET  /api/v1/jobs/{name}/files/{path}  one file, with its recorded digest
// Borrows what it is given; must outlive the server it is installed on (stop the server first).
class JobRoutes {
 public:
  // `base_url`: the daemon's loopback address, for each run's "url".
  JobRoutes(store::Store& store, sched::Scheduler& scheduler, tracking::SeriesStore& series,
            WorkspaceLayout layout, std::function<std::string()> base_url);

  void Install(HttpServer& server);

 private:
  // Why `r` waits; an ended run waits for nothing, and the scheduler is not asked.
  std::string WaitReasonOf(const store::RunRecord& r) const;
  HttpResponse File(HttpRequest& req);
  asio::awaitable<HttpResponse> Stream(HttpRequest& req);

  HttpServer* http_ = nullptr;
  store::Store& store_;
  sched::Scheduler& scheduler_;
  tracking::SeriesStore& series_;
  WorkspaceLayout layout_;
  std::function<std::string()> base_url_;
};

}  // namespace trainyard::api

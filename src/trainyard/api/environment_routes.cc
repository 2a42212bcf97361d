#include "trainyard/api/environment_routes.h"

#include <algorithm>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <optional>

#include "trainyard/common/util.h"

namespace trainyard::api {

using json = nlohmann::json;

StatusOr<spec::EnvironmentDefinition> EnvironmentFromBody(const HttpRequest& req,
                                                          const cas::Snapshotter& snapshots) {
  TY_ASSIGN_OR_RETURN(json body, req.JsonBody());
  TY_ASSIGN_OR_RETURN(spec::EnvironmentDefinition def, spec::EnvironmentDefinition::FromJson(body));
  if (!def.build_context.empty()) {
    if (auto m = snapshots.Load(def.build_context); !m.ok()) {
      return m.status().WithPrefix("build context");
    }
  }
  return def;
}

EnvironmentRoutes::EnvironmentRoutes(store::Store& store, envbuild::EnvironmentRegistry& registry,
                                     const cas::Snapshotter& snapshots,
                                     envbuild::ImageBuilder& builder)
    : store_(store), registry_(registry), snapshots_(snapshots), builder_(builder) {}

EnvironmentRoutes::~EnvironmentRoutes() { Reap(/*all=*/true); }

void EnvironmentRoutes::Reap(bool all) {
  std::vector<std::shared_ptr<BuildTask>> reaped;
  {
    MutexLock lock(builds_mu_);
    auto keep =
        std::partition(builds_.begin(), builds_.end(), [all](const std::shared_ptr<BuildTask>& b) {
          MutexLock l(b->mu);
          return !all && !b->done;
        });
    reaped.assign(keep, builds_.end());
    builds_.erase(keep, builds_.end());
  }
  for (auto& b : reaped) {
    if (b->thread.joinable()) b->thread.join();
  }
}

void EnvironmentRoutes::Install(HttpServer& s) {
  http_ = &s;
  // Environments.
  s.Route("POST", "/api/v1/environments", SyncHandler([this](HttpRequest& req) {
            auto def = EnvironmentFromBody(req, snapshots_);
            if (!def.ok()) return HttpResponse::FromStatus(def.status());
            auto rec = registry_.Register(std::move(def).value());
            if (!rec.ok()) return HttpResponse::FromStatus(rec.status());
            return HttpResponse::Json(201, envbuild::EnvironmentRegistry::ToApiJson(*rec));
          }));
  auto list_envs = [this](const std::string& name) {
    auto recs = store_.ListEnvironments(name);
    if (!recs.ok()) return HttpResponse::FromStatus(recs.status());
    json out = json::array();
    for (const auto& r : *recs) out.push_back(envbuild::EnvironmentRegistry::ToApiJson(r));
    return HttpResponse::Json(200, out);
  };
  s.Route("GET", "/api/v1/environments",
          SyncHandler([list_envs](HttpRequest&) { return list_envs(""); }));
  s.Route("GET", "/api/v1/environments/{name}", SyncHandler([list_envs](HttpRequest& req) {
            auto resp = list_envs(req.Param("name"));
            if (resp.status == 200 && resp.body == "[]") {
              return HttpResponse::FromStatus(
                  NotFound("environment " + req.Param("name") + " not found"));
            }
            return resp;
          }));
  s.Route("GET", "/api/v1/environments/{name}/versions/{version}",
          SyncHandler([this](HttpRequest& req) {
            std::string version = req.Param("version");
            if (version == "latest") version.clear();
            auto rec = store_.GetEnvironment(req.Param("name"), version);
            if (!rec.ok()) return HttpResponse::FromStatus(rec.status());
            return HttpResponse::Json(200, envbuild::EnvironmentRegistry::ToApiJson(*rec));
          }));

  // Builds (or finds, when it was built before) an environment's image without a run: the
  // Python SDK's Environment.build (BuildEnvironment).
  s.Route("POST", "/api/v1/environments/{name}/versions/{version}/build",
          AsyncHandler([this](HttpRequest& req) { return Build(req); }));
}

// Answers when the image is ready or the build failed: {name, version, status, image | error,
// log}. The log is the build's output, each piece redacted of the registry password as it
// arrives, kept to its last MiB from a line start.
asio::awaitable<HttpResponse> EnvironmentRoutes::Build(HttpRequest& req) {
  std::string version = req.Param("version");
  if (version == "latest") version.clear();
  const std::string name = req.Param("name");
  std::optional<StatusOr<spec::EnvironmentDefinition>> def;
  co_await http_->Offload([&] { def.emplace(registry_.Resolve(name, version)); });
  if (!def->ok()) co_return HttpResponse::FromStatus(def->status());
  const std::string env_name = def->value().name;
  const std::string env_version = def->value().version;

  Reap(/*all=*/false);
  auto build = std::make_shared<BuildTask>();
  std::string key;
  {
    MutexLock lock(builds_mu_);
    if (builds_.size() >= kMaxBuilds) {
      co_return HttpResponse::FromStatus(
          ResourceExhausted("the limit of " + std::to_string(kMaxBuilds) +
                            " environment builds at once is reached; retry when one has finished"));
    }
    key = "environment-build:" + std::to_string(next_build_++);
    builds_.push_back(build);
    build->thread = std::thread([this, build, key, d = std::move(def->value())] {
      constexpr std::size_t kKeep = 1 << 20;
      const std::string password = d.registry ? d.registry->password : "";
      std::string log;
      auto keep_tail = [&log] {
        if (log.size() <= kKeep) return;
        std::size_t cut = log.size() - kKeep;
        const std::size_t line = log.find('\n', cut);
        cut = line == std::string::npos ? cut : line + 1;
        log.erase(0, cut);
      };
      auto image = builder_.EnsureImage(d, [&](std::string_view text) {
        log += password.empty() ? std::string(text) : Redact(std::string(text), password);
        if (log.size() > 2 * kKeep) keep_tail();
      });
      keep_tail();
      {
        MutexLock l(build->mu);
        build->log = std::move(log);
        if (image.ok()) {
          build->image = image->image;
        } else {
          build->error = password.empty() ? image.status().message()
                                          : Redact(image.status().message(), password);
        }
        build->done = true;
      }
      http_->notifier().Notify(key);
    });
  }
  for (;;) {
    const std::uint64_t seen = http_->notifier().Sequence(key);
    {
      MutexLock l(build->mu);
      if (build->done) break;
    }
    co_await http_->notifier().WaitForChange(key, seen,
                                             Notifier::Clock::now() + std::chrono::seconds(5));
  }
  http_->notifier().Forget(key);
  MutexLock l(build->mu);
  json out = {{"name", env_name},
              {"version", env_version},
              {"status", build->error.empty() ? "Succeeded" : "Failed"},
              {"log", build->log}};
  if (build->error.empty()) {
    out["image"] = build->image;
  } else {
    out["error"] = build->error;
  }
  co_return HttpResponse::Json(200, out);
}

}  // namespace trainyard::api

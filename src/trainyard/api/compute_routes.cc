#include "trainyard/api/compute_routes.h"

#include <optional>
#include <string>
#include <utility>

#include "trainyard/common/util.h"
#include "trainyard/spec/compute.h"

namespace trainyard::api {
namespace {

using json = nlohmann::json;

HttpResponse CreateCompute(sched::Scheduler& scheduler, HttpRequest& req) {
  auto body = req.JsonBody();
  if (!body.ok()) return HttpResponse::FromStatus(body.status());
  if (!body->is_object()) {
    return HttpResponse::FromStatus(InvalidArgument("a compute definition must be a JSON object"));
  }
  bool update = false;
  if (auto it = body->find("update"); it != body->end()) {
    if (!it->is_boolean())
      return HttpResponse::FromStatus(InvalidArgument("update must be a boolean"));
    update = it->get<bool>();
    body->erase(it);
  }
  auto def = spec::ComputeDefinition::FromJson(*body);
  if (!def.ok()) return HttpResponse::FromStatus(def.status());
  // What it was before, only to tell "updated" from "unchanged" in the answer.
  std::optional<spec::ComputeDefinition> before;
  if (update) {
    if (auto all = scheduler.ListComputes(); all.ok()) {
      for (auto& c : *all) {
        if (c.name == def->name) before = std::move(c);
      }
    }
  }
  bool created = false;
  auto stored = scheduler.PutCompute(*def, update, &created);
  if (!stored.ok()) return HttpResponse::FromStatus(stored.status());
  json out = stored->ToJson(spec::SecretMode::kRedact);
  out["outcome"] = created                                    ? "created"
                   : before && !before->SameSettings(*stored) ? "updated"
                                                              : "unchanged";
  return HttpResponse::Json(created ? 201 : 200, out);
}

}  // namespace

json ComputeStatusToJson(const sched::ComputeStatus& status) {
  json out = status.definition.ToJson(spec::SecretMode::kRedact);
  out["nodes"] = {{"busy", status.busy_nodes},
                  {"idle", status.idle_nodes},
                  {"total", status.definition.max_nodes}};
  out["running"] = status.running;
  json queued = json::array();
  for (const sched::QueuedRun& q : status.queued) {
    queued.push_back({{"name", q.run_id},
                      {"nodes", q.nodes},
                      {"priority", q.priority},
                      {"queued_at", q.queued_at > 0 ? FormatTimeIso(q.queued_at) : ""},
                      {"queued_ms", q.queued_at},
                      {"wait_reason", q.wait_reason}});
  }
  out["queued"] = std::move(queued);
  out["totals"] = {{"running", status.running.size()}, {"queued", status.queued.size()}};
  if (!status.cluster.is_null()) out["slurm"] = status.cluster;
  return out;
}

void AddComputeRoutes(HttpServer& server, sched::Scheduler& scheduler) {
  sched::Scheduler* s = &scheduler;
  server.Route("POST", "/api/v1/computes",
               SyncHandler([s](HttpRequest& req) { return CreateCompute(*s, req); }));
  server.Route("GET", "/api/v1/computes", SyncHandler([s](HttpRequest&) {
                 auto all = s->ListComputes();
                 if (!all.ok()) return HttpResponse::FromStatus(all.status());
                 json out = json::array();
                 for (const auto& c : *all) out.push_back(c.ToJson(spec::SecretMode::kRedact));
                 return HttpResponse::Json(200, out);
               }));
  server.Route("GET", "/api/v1/computes/{name}", SyncHandler([s](HttpRequest& req) {
                 auto status = s->GetComputeStatus(req.Param("name"));
                 if (!status.ok()) return HttpResponse::FromStatus(status.status());
                 return HttpResponse::Json(200, ComputeStatusToJson(*status));
               }));
  server.Route("DELETE", "/api/v1/computes/{name}", SyncHandler([s](HttpRequest& req) {
                 const std::string name = req.Param("name");
                 if (Status st = s->DeleteCompute(name); !st.ok()) {
                   return HttpResponse::FromStatus(st);
                 }
                 return HttpResponse::Json(200, {{"deleted", name}});
               }));
}

}  // namespace trainyard::api

#pragma once

#include <nlohmann/json.hpp>

#include "trainyard/http/http_server.h"
#include "trainyard/sched/scheduler.h"

namespace trainyard::api {

// Registers the compute target routes (docs/api.md, "Compute targets"):
//   POST   /api/v1/computes         a ComputeDefinition, plus "update": true to change one;
//                                   201 created, 200 existing with the same settings or updated
//                                   (body: the definition and "outcome": created | unchanged |
//                                   updated), 409 when it exists with other settings
//   GET    /api/v1/computes         [definition, ...], `local` included
//   GET    /api/v1/computes/{name}  the status view (ComputeStatusToJson)
//   DELETE /api/v1/computes/{name}  {"deleted": name}; 409 while runs are active, 404 unknown
// Borrows `scheduler`, which must outlive the server.
void AddComputeRoutes(HttpServer& server, sched::Scheduler& scheduler);

// The status view of a compute as the API serves it: the definition's fields, then
// {"nodes": {busy, idle, total}, "running": [run ids], "queued": [{name, nodes, priority,
// queued_at, queued_ms, wait_reason}], "totals": {running, queued}}.
nlohmann::json ComputeStatusToJson(const sched::ComputeStatus& status);

}  // namespace trainyard::api

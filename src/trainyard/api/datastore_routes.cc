#include "trainyard/api/datastore_routes.h"

#include <string>

#include "trainyard/spec/datastore.h"

namespace trainyard::api {
namespace {

using json = nlohmann::json;

HttpResponse CreateDatastore(assets::Datastores& datastores, HttpRequest& req) {
  auto body = req.JsonBody();
  if (!body.ok()) return HttpResponse::FromStatus(body.status());
  auto def = spec::DatastoreDefinition::FromJson(*body);
  if (!def.ok()) return HttpResponse::FromStatus(def.status());
  std::string outcome;
  auto stored = datastores.Put(std::move(*def), &outcome);
  if (!stored.ok()) return HttpResponse::FromStatus(stored.status());
  json out = stored->ToJson(spec::SecretMode::kRedact);
  out["outcome"] = outcome;
  return HttpResponse::Json(outcome == "created" ? 201 : 200, out);
}

}  // namespace

void AddDatastoreRoutes(HttpServer& server, assets::Datastores& datastores) {
  assets::Datastores* d = &datastores;
  // The access check may wait on a remote service: a sync handler, off the event loop.
  server.Route("POST", "/api/v1/datastores",
               SyncHandler([d](HttpRequest& req) { return CreateDatastore(*d, req); }));
  server.Route("GET", "/api/v1/datastores", SyncHandler([d](HttpRequest&) {
                 auto all = d->List();
                 if (!all.ok()) return HttpResponse::FromStatus(all.status());
                 json out = json::array();
                 for (const auto& ds : *all) out.push_back(ds.ToJson(spec::SecretMode::kRedact));
                 return HttpResponse::Json(200, out);
               }));
  server.Route("GET", "/api/v1/datastores/{name}", SyncHandler([d](HttpRequest& req) {
                 auto ds = d->Get(req.Param("name"));
                 if (!ds.ok()) return HttpResponse::FromStatus(ds.status());
                 return HttpResponse::Json(200, ds->ToJson(spec::SecretMode::kRedact));
               }));
  server.Route("DELETE", "/api/v1/datastores/{name}", SyncHandler([d](HttpRequest& req) {
                 const std::string name = req.Param("name");
                 if (Status st = d->Delete(name); !st.ok()) return HttpResponse::FromStatus(st);
                 return HttpResponse::Json(200, {{"deleted", name}});
               }));
}

}  // namespace trainyard::api

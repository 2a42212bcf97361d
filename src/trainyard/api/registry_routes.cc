#include "trainyard/api/registry_routes.h"

#include <string>

#include "trainyard/api/asset_routes.h"
#include "trainyard/api/environment_routes.h"

namespace trainyard::api {
namespace {

using json = nlohmann::json;

HttpResponse Answer(const StatusOr<json>& out, int status = 200) {
  if (!out.ok()) return HttpResponse::FromStatus(out.status());
  return HttpResponse::Json(status, *out);
}

json EnvironmentJson(const std::string& registry, const store::EnvironmentRecord& rec) {
  json out = envbuild::EnvironmentRegistry::ToApiJson(rec);
  out["registry"] = registry;
  out["id"] =
      "azureml://registries/" + registry + "/environments/" + rec.name + "/versions/" + rec.version;
  return out;
}

HttpResponse ListEnvironments(assets::Registries& registries, HttpRequest& req) {
  const std::string name = req.Param("registry");
  auto r = registries.Open(name);
  if (!r.ok()) return HttpResponse::FromStatus(r.status());
  auto recs = (*r)->store->ListEnvironments(req.Param("name"));
  if (!recs.ok()) return HttpResponse::FromStatus(recs.status());
  if (recs->empty() && !req.Param("name").empty()) {
    return HttpResponse::FromStatus(
        NotFound("environment " + req.Param("name") + " is not in registry " + name));
  }
  json out = json::array();
  for (const auto& rec : *recs) out.push_back(EnvironmentJson(name, rec));
  return HttpResponse::Json(200, out);
}

}  // namespace

void AddRegistryRoutes(HttpServer& server, assets::Registries& registries,
                       const cas::Snapshotter& snapshots) {
  assets::Registries* regs = &registries;
  // Opening a registry reads its folder and database: sync handlers, off the event loop.
  server.Route("POST", "/api/v1/registries", SyncHandler([regs](HttpRequest& req) {
                 auto body = req.JsonBody();
                 if (!body.ok()) return HttpResponse::FromStatus(body.status());
                 if (!body->is_object() || !body->value("name", json()).is_string() ||
                     !body->value("path", json()).is_string()) {
                   return HttpResponse::FromStatus(
                       InvalidArgument("expected {\"name\": \"...\", \"path\": \"/folder\"}"));
                 }
                 auto out = regs->Attach((*body)["name"].get<std::string>(),
                                         (*body)["path"].get<std::string>());
                 const bool created = out.ok() && (*out)["outcome"] == "created";
                 return Answer(out, created ? 201 : 200);
               }));
  server.Route("GET", "/api/v1/registries",
               SyncHandler([regs](HttpRequest&) { return Answer(regs->List()); }));
  server.Route("GET", "/api/v1/registries/{registry}", SyncHandler([regs](HttpRequest& req) {
                 return Answer(regs->Describe(req.Param("registry")));
               }));
  server.Route("DELETE", "/api/v1/registries/{registry}", SyncHandler([regs](HttpRequest& req) {
                 const std::string name = req.Param("registry");
                 if (Status st = regs->Detach(name); !st.ok()) return HttpResponse::FromStatus(st);
                 return HttpResponse::Json(200, {{"detached", name}});
               }));

  const std::string envs = "/api/v1/registries/{registry}/environments";
  server.Route("POST", envs, SyncHandler([regs, &snapshots](HttpRequest& req) {
                 auto def = EnvironmentFromBody(req, snapshots);
                 if (!def.ok()) return HttpResponse::FromStatus(def.status());
                 const std::string name = req.Param("registry");
                 auto rec = regs->PublishEnvironment(name, std::move(def).value());
                 if (!rec.ok()) return HttpResponse::FromStatus(rec.status());
                 return HttpResponse::Json(201, EnvironmentJson(name, *rec));
               }));
  server.Route("GET", envs,
               SyncHandler([regs](HttpRequest& req) { return ListEnvironments(*regs, req); }));
  server.Route("GET", envs + "/{name}",
               SyncHandler([regs](HttpRequest& req) { return ListEnvironments(*regs, req); }));
  server.Route("GET", envs + "/{name}/versions/{version}", SyncHandler([regs](HttpRequest& req) {
                 const std::string name = req.Param("registry");
                 auto r = regs->Open(name);
                 if (!r.ok()) return HttpResponse::FromStatus(r.status());
                 std::string version = req.Param("version");
                 if (version == "latest") version.clear();
                 auto rec = (*r)->store->GetEnvironment(req.Param("name"), version);
                 if (!rec.ok()) return HttpResponse::FromStatus(rec.status());
                 return HttpResponse::Json(200, EnvironmentJson(name, *rec));
               }));

  // A registry's content, for downloads: its manifests and objects by digest.
  server.Route("GET", "/api/v1/registries/{registry}/snapshots/{id}",
               SyncHandler([regs](HttpRequest& req) {
                 auto r = regs->Open(req.Param("registry"));
                 if (!r.ok()) return HttpResponse::FromStatus(r.status());
                 auto manifest = (*r)->snapshots->Load(req.Param("id"));
                 if (!manifest.ok()) return HttpResponse::FromStatus(manifest.status());
                 return HttpResponse::Text(200, manifest->ToJson(), "application/json");
               }));
  server.Route("GET", "/api/v1/registries/{registry}/objects/{digest}",
               SyncHandler([regs](HttpRequest& req) {
                 auto r = regs->Open(req.Param("registry"));
                 if (!r.ok()) return HttpResponse::FromStatus(r.status());
                 return ObjectResponse(*(*r)->objects, req.Param("digest"));
               }));

  AddCatalogRoutes(
      server,
      [regs](HttpRequest& req) -> StatusOr<assets::Catalog*> {
        TY_ASSIGN_OR_RETURN(assets::Registry * r, regs->Open(req.Param("registry")));
        return r->catalog.get();
      },
      "/api/v1/registries/{registry}");
}

}  // namespace trainyard::api

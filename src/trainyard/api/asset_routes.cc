#include "trainyard/api/asset_routes.h"

#include <fcntl.h>

#include <string>

#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/sha256.h"

namespace trainyard::api {
namespace {

using json = nlohmann::json;

// The kind a route prefix serves: "data" for /api/v1/data, "model" for /api/v1/models.
struct Kind {
  const char* kind;
  const char* prefix;
};
constexpr Kind kKinds[] = {{"data", "/data"}, {"model", "/models"}};

HttpResponse Answer(const StatusOr<json>& out, int status = 200) {
  if (!out.ok()) return HttpResponse::FromStatus(out.status());
  return HttpResponse::Json(status, *out);
}

StatusOr<std::map<std::string, std::string>> StringMap(const json& body, const char* key) {
  std::map<std::string, std::string> out;
  if (!body.contains(key) || body[key].is_null()) return out;
  if (!body[key].is_object()) return InvalidArgument(std::string("'") + key + "' must be a map");
  for (const auto& [k, v] : body[key].items()) {
    if (v.is_string()) {
      out[k] = v.get<std::string>();
    } else if (v.is_number() || v.is_boolean()) {
      out[k] = v.dump();
    } else {
      return InvalidArgument(std::string("'") + key + "." + k + "' must be a string");
    }
  }
  return out;
}

StatusOr<assets::AssetRequest> ParseRequest(const char* kind, const json& body) {
  if (!body.is_object()) return InvalidArgument("expected a JSON object");
  static constexpr const char* kKeys[] = {"name",        "version", "type",        "path",
                                          "snapshot_id", "file",    "description", "tags",
                                          "properties",  "label",   "run"};
  assets::AssetRequest r;
  r.kind = kind;
  for (const auto& [key, value] : body.items()) {
    if (std::find(std::begin(kKeys), std::end(kKeys), key) == std::end(kKeys)) {
      return InvalidArgument("unknown field '" + key + "'");
    }
    if (key != "tags" && key != "properties" && !value.is_string() && !value.is_null()) {
      return InvalidArgument("'" + key + "' must be a string");
    }
  }
  auto str = [&](const char* key) {
    return body.value(key, json()).is_string() ? body[key].get<std::string>() : std::string();
  };
  r.name = str("name");
  r.version = str("version");
  r.type = str("type");
  r.path = str("path");
  r.snapshot_id = str("snapshot_id");
  r.file = str("file");
  r.description = str("description");
  r.label = str("label");
  r.run = str("run");
  TY_ASSIGN_OR_RETURN(r.tags, StringMap(body, "tags"));
  TY_ASSIGN_OR_RETURN(r.properties, StringMap(body, "properties"));
  return r;
}

void AddKindRoutes(HttpServer& server, const CatalogOf& catalog_of, const std::string& base,
                   const Kind& k) {
  const std::string kind = k.kind;
  const std::string prefix = base + k.prefix;
  // Each handler finds its catalog (the workspace's, or a registry's) first.
  auto with = [catalog_of](auto fn) {
    return SyncHandler([catalog_of, fn](HttpRequest& req) {
      auto c = catalog_of(req);
      if (!c.ok()) return HttpResponse::FromStatus(c.status());
      return fn(**c, req);
    });
  };
  // Creating may snapshot a folder or fetch a model: a sync handler, off the event loop.
  server.Route("POST", prefix, with([kind](assets::Catalog& c, HttpRequest& req) {
                 auto body = req.JsonBody();
                 if (!body.ok()) return HttpResponse::FromStatus(body.status());
                 auto r = ParseRequest(kind.c_str(), *body);
                 if (!r.ok()) return HttpResponse::FromStatus(r.status());
                 return Answer(c.Create(*r), 201);
               }));
  server.Route("GET", prefix, with([kind](assets::Catalog& c, HttpRequest& req) {
                 return Answer(c.List(kind, req.Query("name").value_or(""),
                                      req.Query("archived").value_or("") == "true"));
               }));
  server.Route("GET", prefix + "/{name}", with([kind](assets::Catalog& c, HttpRequest& req) {
                 return Answer(c.Get(kind, req.Param("name"), "", req.Query("label").value_or("")));
               }));
  const std::string one = prefix + "/{name}/versions/{version}";
  server.Route("GET", one, with([kind](assets::Catalog& c, HttpRequest& req) {
                 return Answer(c.Get(kind, req.Param("name"), req.Param("version")));
               }));
  for (const bool archive : {true, false}) {
    server.Route(
        "POST", one + (archive ? "/archive" : "/restore"),
        with([kind, archive](assets::Catalog& c, HttpRequest& req) {
          return Answer(c.SetArchived(kind, req.Param("name"), req.Param("version"), archive));
        }));
  }
  server.Route(
      "POST", one + "/labels", with([kind](assets::Catalog& c, HttpRequest& req) {
        auto body = req.JsonBody();
        if (!body.ok()) return HttpResponse::FromStatus(body.status());
        if (!body->is_object() || !body->value("label", json()).is_string()) {
          return HttpResponse::FromStatus(InvalidArgument("expected {\"label\": \"...\"}"));
        }
        return Answer(c.SetLabel(kind, req.Param("name"), req.Param("version"),
                                 (*body)["label"].get<std::string>()));
      }));
}

}  // namespace

HttpResponse ObjectResponse(const cas::ObjectStore& objects, const std::string& digest) {
  if (!IsSha256Hex(digest)) {
    return HttpResponse::FromStatus(
        InvalidArgument("'" + digest.substr(0, 80) + "' is not a SHA-256 digest"));
  }
  ScopedFd fd(::open(objects.PathFor(digest).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return HttpResponse::FromStatus(NotFound("object " + digest + " is not stored"));
  return HttpResponse::File(std::move(fd));
}

void AddCatalogRoutes(HttpServer& server, const CatalogOf& catalog_of, const std::string& base) {
  for (const Kind& k : kKinds) AddKindRoutes(server, catalog_of, base, k);
}

void AddAssetRoutes(HttpServer& server, assets::Catalog& catalog, cas::ObjectStore& objects) {
  AddCatalogRoutes(
      server, [&catalog](HttpRequest&) -> StatusOr<assets::Catalog*> { return &catalog; },
      "/api/v1");
  server.Route("GET", "/api/v1/objects/{digest}", SyncHandler([&objects](HttpRequest& req) {
                 return ObjectResponse(objects, req.Param("digest"));
               }));
}

}  // namespace trainyard::api

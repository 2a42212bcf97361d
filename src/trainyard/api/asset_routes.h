#pragma once

#include <functional>
#include <string>

#include "trainyard/assets/catalog.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/http/http_server.h"

namespace trainyard::api {

// Registers the routes of data assets and models (docs/api.md, "Data assets and models"). For
// KIND in data, models:
//   POST /api/v1/KIND                              a new version: {"name", "version"?, "type",
//        "path" | "snapshot_id" (+ "file"), "description", "tags", "properties", "label",
//        "run"}; 201 with the version; 409 when that version exists
//   GET  /api/v1/KIND[?name=N][&archived=true]     the latest version of each name, or every
//                                                  version of N, newest first
//   GET  /api/v1/KIND/{name}[?label=L]             the latest version (or the one L names)
//   GET  /api/v1/KIND/{name}/versions/{version}    one version
//   POST /api/v1/KIND/{name}/versions/{version}/archive | /restore
//   POST /api/v1/KIND/{name}/versions/{version}/labels  {"label": L}
// and GET /api/v1/objects/{digest}, the bytes of a stored object (a model's files, by the
// digests of its manifest, GET /api/v1/snapshots/{id}).
// Borrows `catalog` and `objects`, which must outlive the server.
void AddAssetRoutes(HttpServer& server, assets::Catalog& catalog, cas::ObjectStore& objects);

// The data and model routes above under `base` ("/api/v1", "/api/v1/registries/{registry}"),
// each request served by the catalog `catalog_of` finds for it.
// The bytes of object `digest` of `objects` (400 for a malformed digest, 404 when absent).
HttpResponse ObjectResponse(const cas::ObjectStore& objects, const std::string& digest);

using CatalogOf = std::function<StatusOr<assets::Catalog*>(HttpRequest&)>;
void AddCatalogRoutes(HttpServer& server, const CatalogOf& catalog_of, const std::string& base);

}  // namespace trainyard::api

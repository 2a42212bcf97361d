#pragma once

#include "trainyard/assets/registries.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/http/http_server.h"

namespace trainyard::api {

// Registers the registry routes (docs/api.md, "Registries"):
//   POST   /api/v1/registries              {"name", "path"}: create the registry in the folder,
//                                          or attach the one there; 201 created, 200 attached
//   GET    /api/v1/registries              [{"name", "path", "environments", "data", "models"}]
//   GET    /api/v1/registries/{registry}   one (404 naming the workspace's registries)
//   DELETE /api/v1/registries/{registry}   forget it in this workspace (its folder stays)
//   POST   /api/v1/registries/{registry}/environments   publish an environment definition
//   GET    /api/v1/registries/{registry}/environments[/{name}[/versions/{version}]]
//   and the data and model routes (asset_routes.h) under /api/v1/registries/{registry}.
// Borrows `registries` and `snapshots` (the workspace's), which must outlive the server.
void AddRegistryRoutes(HttpServer& server, assets::Registries& registries,
                       const cas::Snapshotter& snapshots);

}  // namespace trainyard::api

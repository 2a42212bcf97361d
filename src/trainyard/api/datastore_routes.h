#pragma once

#include "trainyard/assets/datastores.h"
#include "trainyard/http/http_server.h"

namespace trainyard::api {

// Registers the datastore routes (docs/api.md, "Datastores"). Answers never carry a secret:
// account keys, SAS tokens and secret access keys are "***".
//   POST   /api/v1/datastores         a DatastoreDefinition (secrets in plain text, over loopback
//                                     or TLS); its access is checked first. 201 created, 200
//                                     updated or unchanged (body: the definition and "outcome");
//                                     403 when the service rejects the credentials, 404 when the
//                                     container, bucket or folder does not exist, 503 when the
//                                     service cannot be reached
//   GET    /api/v1/datastores         [definition, ...], workspaceblobstore first
//   GET    /api/v1/datastores/{name}  one definition (404 naming the workspace's datastores)
//   DELETE /api/v1/datastores/{name}  {"deleted": name}; 400 for workspaceblobstore
// Borrows `datastores`, which must outlive the server.
void AddDatastoreRoutes(HttpServer& server, assets::Datastores& datastores);

}  // namespace trainyard::api

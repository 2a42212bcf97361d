#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/http/http_server.h"

namespace trainyard::api {

// Limits of the remote-submission routes.
struct SnapshotRouteOptions {
  // Largest object accepted by PUT /api/v1/objects/{digest} (the daemon uses the workspace's
  // snapshot_max_bytes: no object of an acceptable snapshot is larger).
  std::uint64_t max_object_bytes = 300'000'000;
  // Largest JSON body of POST /api/v1/objects/missing and POST /api/v1/snapshots.
  std::uint64_t max_json_bytes = 64 << 20;
  // Most digests one POST /api/v1/objects/missing may ask about.
  std::size_t max_digests = 100'000;
  // Largest snapshot POST /api/v1/snapshots accepts (the workspace's snapshot_max_files and
  // snapshot_max_bytes, as for a local snapshot).
  std::uint64_t max_snapshot_files = 2000;
  std::uint64_t max_snapshot_bytes = 300'000'000;
  // Where POST /api/v1/snapshots/from-folder keeps its stat caches (the CLI's, for a local
  // workspace: `<objects>/statcache`); empty: none.
  std::filesystem::path stat_cache_dir;
};

// Registers the routes a remote client uses to submit a snapshot (see docs/api.md, "Remote
// snapshots"):
//   POST /api/v1/objects/missing   {"digests": [...]} -> {"missing": [...]}
//   PUT  /api/v1/objects/{digest}  raw bytes, streamed to disk and checked against the digest
//   POST /api/v1/snapshots         a manifest (cas::Manifest JSON) whose objects are all present
//   GET  /api/v1/snapshots/{id}    the manifest
// Work that touches the disk beyond appending to a temp file (existence checks, fsync on
// publish, writing the manifest) runs on the server's blocking pool, not its event loop.
// Borrows `objects` and `snapshots` (which must use that store): both must outlive the server.
// POST /api/v1/objects/missing, PUT /api/v1/objects/{digest}, POST /api/v1/snapshots (a
// client's scan and upload), GET /api/v1/snapshots/{id}, and POST /api/v1/snapshots/from-folder
// ({"path": absolute folder of the daemon's machine}: the daemon snapshots it with the code
// and rules a local CLI uses; for programs on the same machine, e.g. the Python SDK, which
// then need no second process). Only the workspace token reaches them (run_scope.h).
void AddSnapshotRoutes(HttpServer& server, cas::ObjectStore& objects, cas::Snapshotter& snapshots,
                       const SnapshotRouteOptions& options = {});

}  // namespace trainyard::api

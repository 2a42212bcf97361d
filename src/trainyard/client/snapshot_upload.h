#pragma once

#include <cstdint>
#include <functional>

#include "trainyard/cas/snapshot.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/status.h"

namespace trainyard::client {

// What UploadSnapshot did.
struct UploadStats {
  std::uint64_t objects = 0;           // Distinct file contents in the snapshot.
  std::uint64_t objects_missing = 0;   // Of those, the ones the server lacked.
  std::uint64_t objects_uploaded = 0;  // Uploads the server accepted.
  std::uint64_t bytes_uploaded = 0;    // Request body bytes of object uploads actually sent.
};

// Submits a snapshot scanned on this machine (cas::ScanTree) to a daemon, possibly on another
// machine, through `http`: asks which of its distinct objects the server lacks (POST
// /api/v1/objects/missing, in batches of at most 10000 digests), uploads only those (PUT
// /api/v1/objects/{digest}, each streamed from `scan.source_root / entry.path`, up to 4 at a
// time), then stores the manifest (POST /api/v1/snapshots) and checks that the server's id is
// `scan.id`. An unchanged tree the server already has uploads nothing. `progress`, when set,
// is called after each batch of questions and each finished upload, one call at a time (from
// the calling thread or an upload thread).
//
// Errors: FailedPrecondition "<path> changed while it was being uploaded; submit again" when a
// file no longer matches its scanned digest (the server refuses the upload with 400) or shrank
// meanwhile; NotFound / PermissionDenied when a file cannot be opened; Internal when the server
// answers something unexpected (a digest it was not asked about, another snapshot id); errors
// of the server (e.g. 401 Unauthenticated, 413 PayloadTooLarge, 409 FailedPrecondition naming
// objects missing when the manifest is stored) as StatusFromHttpResult; Unavailable when the
// server cannot be reached. Objects uploaded before an error stay on the server, so a retry
// sends only the rest.
StatusOr<UploadStats> UploadSnapshot(HttpClient& http, const cas::SnapshotResult& scan,
                                     std::function<void(const UploadStats&)> progress = {});

}  // namespace trainyard::client

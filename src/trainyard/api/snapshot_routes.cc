#include "trainyard/api/snapshot_routes.h"

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "trainyard/cas/manifest.h"
#include "trainyard/common/sha256.h"

namespace trainyard::api {
namespace {

using json = nlohmann::json;

std::string DigestRule() { return "a SHA-256 digest (64 lower-case hex characters)"; }

HttpResponse Missing(cas::ObjectStore& objects, const SnapshotRouteOptions& options,
                     const HttpRequest& req) {
  StatusOr<json> parsed = req.JsonBody();
  if (!parsed.ok()) return HttpResponse::FromStatus(parsed.status());
  if (!parsed->is_object() || !parsed->contains("digests") || !(*parsed)["digests"].is_array()) {
    return HttpResponse::FromStatus(
        InvalidArgument("request body must be {\"digests\": [\"<sha256 hex>\", ...]}"));
  }
  const json& digests = (*parsed)["digests"];
  if (digests.size() > options.max_digests) {
    return HttpResponse::FromStatus(
        InvalidArgument("too many digests: " + std::to_string(digests.size()) + " (at most " +
                        std::to_string(options.max_digests) + " per request)"));
  }
  std::vector<std::string> distinct;
  std::unordered_set<std::string> seen;
  for (std::size_t i = 0; i < digests.size(); ++i) {
    const json& d = digests[i];
    if (!d.is_string() || !IsSha256Hex(d.get_ref<const std::string&>())) {
      return HttpResponse::FromStatus(
          InvalidArgument("digests[" + std::to_string(i) + "] is not " + DigestRule()));
    }
    if (seen.insert(d.get<std::string>()).second) distinct.push_back(d.get<std::string>());
  }
  const std::vector<bool> present = objects.HasEach(distinct);
  json missing = json::array();
  for (std::size_t i = 0; i < distinct.size(); ++i) {
    if (!present[i]) missing.push_back(distinct[i]);
  }
  return HttpResponse::Json(200, {{"missing", std::move(missing)}});
}

// Streams one object into the store; Finish verifies and publishes it.
class ObjectSink : public BodySink {
 public:
  ObjectSink(cas::ObjectStore::Writer writer, std::string digest)
      : writer_(std::move(writer)), digest_(std::move(digest)) {}

  Status Write(std::string_view data) override {
    return writer_.Write(data).WithPrefix("object " + digest_);
  }

  HttpResponse Finish() override {
    StatusOr<cas::ObjectStore::PutResult> put = writer_.Commit(digest_);
    if (!put.ok()) return HttpResponse::FromStatus(put.status().WithPrefix("object " + digest_));
    return HttpResponse::Json(
        put->added ? 201 : 200,
        {{"digest", put->digest}, {"size", put->size}, {"added", put->added}});
  }

 private:
  cas::ObjectStore::Writer writer_;  // Dropped (temp file removed) unless committed.
  std::string digest_;
};

HttpResponse AddSnapshot(cas::Snapshotter& snapshots, const SnapshotRouteOptions& options,
                         const HttpRequest& req) {
  StatusOr<cas::Manifest> manifest = cas::Manifest::FromJson(req.body);
  if (!manifest.ok()) return HttpResponse::FromStatus(manifest.status().WithPrefix("manifest"));
  if (manifest->entries.size() > options.max_snapshot_files) {
    return HttpResponse::FromStatus(InvalidArgument(
        "snapshot has " + std::to_string(manifest->entries.size()) +
        " files and symlinks, over the workspace's limit of " +
        std::to_string(options.max_snapshot_files) + " (snapshot_max_files in workspace.json)"));
  }
  if (const std::uint64_t bytes = manifest->TotalBytes(); bytes > options.max_snapshot_bytes) {
    return HttpResponse::FromStatus(InvalidArgument(
        "snapshot has " + std::to_string(bytes) + " bytes, over the workspace's limit of " +
        std::to_string(options.max_snapshot_bytes) + " (snapshot_max_bytes in workspace.json)"));
  }
  StatusOr<std::string> id = snapshots.AddManifest(*manifest);
  if (!id.ok()) {
    // Objects the client has not uploaded: a precondition of this call, not an unknown resource.
    if (id.status().code() == StatusCode::kNotFound) {
      return HttpResponse::FromStatus(FailedPrecondition(id.status().message()));
    }
    return HttpResponse::FromStatus(id.status());
  }
  return HttpResponse::Json(
      201, {{"id", *id}, {"files", manifest->entries.size()}, {"bytes", manifest->TotalBytes()}});
}

HttpResponse SnapshotFolder(cas::ObjectStore& objects, const cas::Snapshotter& snapshots,
                            const SnapshotRouteOptions& options, const HttpRequest& req) {
  const nlohmann::json doc = nlohmann::json::parse(req.body, nullptr, false);
  if (!doc.is_object() || !doc.contains("path") || !doc["path"].is_string()) {
    return HttpResponse::FromStatus(
        InvalidArgument("expected {\"path\": \"/absolute/folder\"} (a folder of the daemon's "
                        "machine)"));
  }
  const std::string path = doc["path"].get<std::string>();
  if (path.empty() || path.front() != '/' || path.find('\0') != std::string::npos) {
    return HttpResponse::FromStatus(
        InvalidArgument("'path' must be an absolute folder of the daemon's machine, not '" +
                        path.substr(0, 200) + "'"));
  }
  cas::SnapshotLimits limits;
  limits.max_files = options.max_snapshot_files;
  limits.max_bytes = options.max_snapshot_bytes;
  // A snapshotter of its own for the stat cache; the store and the manifests are the daemon's.
  cas::Snapshotter snapshotter(objects, snapshots.snapshots_dir(), options.stat_cache_dir);
  StatusOr<cas::SnapshotResult> snap = snapshotter.Snapshot(path, limits);
  if (!snap.ok()) return HttpResponse::FromStatus(snap.status().WithPrefix("snapshot of " + path));
  return HttpResponse::Json(
      201, {{"id", snap->id}, {"files", snap->file_count}, {"bytes", snap->total_bytes}});
}

}  // namespace

void AddSnapshotRoutes(HttpServer& server, cas::ObjectStore& objects, cas::Snapshotter& snapshots,
                       const SnapshotRouteOptions& options) {
  server.BufferedRoute(
      "POST", "/api/v1/objects/missing", options.max_json_bytes,
      [&objects, options](HttpRequest& req) { return Missing(objects, options, req); });

  server.UploadRoute(
      "PUT", "/api/v1/objects/{digest}", options.max_object_bytes,
      [&objects](HttpRequest& req) -> StatusOr<std::unique_ptr<BodySink>> {
        std::string digest = req.Param("digest");
        if (!IsSha256Hex(digest)) {
          return InvalidArgument("object digest '" + digest + "' is not " + DigestRule());
        }
        StatusOr<cas::ObjectStore::Writer> writer = objects.NewWriter();
        if (!writer.ok()) return writer.status().WithPrefix("object " + digest);
        return std::unique_ptr<BodySink>(
            std::make_unique<ObjectSink>(std::move(writer).value(), std::move(digest)));
      });

  server.BufferedRoute(
      "POST", "/api/v1/snapshots", options.max_json_bytes,
      [&snapshots, options](HttpRequest& req) { return AddSnapshot(snapshots, options, req); });

  // Reading a folder may take seconds: on the blocking pool.
  server.BufferedRoute("POST", "/api/v1/snapshots/from-folder", options.max_json_bytes,
                       [&objects, &snapshots, options](HttpRequest& req) {
                         return SnapshotFolder(objects, snapshots, options, req);
                       });

  server.Route("GET", "/api/v1/snapshots/{id}", SyncHandler([&snapshots](HttpRequest& req) {
                 StatusOr<cas::Manifest> manifest = snapshots.Load(req.Param("id"));
                 if (!manifest.ok()) return HttpResponse::FromStatus(manifest.status());
                 return HttpResponse::Text(200, manifest->ToJson(), "application/json");
               }));
}

}  // namespace trainyard::api

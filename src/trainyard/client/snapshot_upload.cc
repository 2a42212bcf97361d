#include "trainyard/client/snapshot_upload.h"

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "trainyard/cas/manifest.h"
#include "trainyard/common/mutex.h"

namespace trainyard::client {
namespace {

using json = nlohmann::json;

constexpr std::size_t kMaxDigestsPerQuestion = 10'000;
constexpr std::size_t kParallelUploads = 4;
constexpr long kJsonTimeoutMs = 120'000;

// One distinct object of the snapshot and the first file that holds it.
struct Object {
  std::string digest;
  const cas::ManifestEntry* entry = nullptr;
};

Status ChangedWhileUploading(const cas::ManifestEntry& entry) {
  return FailedPrecondition(cas::PrintablePath(entry.path) +
                            " changed while it was being uploaded; submit again");
}

// The objects of `objects` the server lacks, in their order.
StatusOr<std::vector<const Object*>> AskMissing(
    HttpClient& http, const std::vector<Object>& objects, UploadStats* stats,
    const std::function<void(const UploadStats&)>& progress) {
  std::unordered_map<std::string_view, const Object*> by_digest;
  for (const Object& o : objects) by_digest.emplace(o.digest, &o);
  std::vector<const Object*> missing;
  for (std::size_t start = 0; start < objects.size(); start += kMaxDigestsPerQuestion) {
    const std::size_t end = std::min(objects.size(), start + kMaxDigestsPerQuestion);
    json digests = json::array();
    for (std::size_t i = start; i < end; ++i) digests.push_back(objects[i].digest);
    TY_ASSIGN_OR_RETURN(json answer,
                        http.PostJson("/api/v1/objects/missing", {{"digests", std::move(digests)}},
                                      kJsonTimeoutMs));
    if (!answer.is_object() || !answer.contains("missing") || !answer["missing"].is_array()) {
      return Internal("unexpected answer to POST /api/v1/objects/missing: " +
                      answer.dump().substr(0, 200));
    }
    for (const json& d : answer["missing"]) {
      auto it = d.is_string() ? by_digest.find(d.get_ref<const std::string&>()) : by_digest.end();
      if (it == by_digest.end()) {
        return Internal("server named a missing object it was not asked about: " +
                        d.dump().substr(0, 100));
      }
      missing.push_back(it->second);
    }
    stats->objects_missing = missing.size();
    if (progress) progress(*stats);
  }
  return missing;
}

// Uploads `missing`, up to kParallelUploads at a time.
Status UploadObjects(HttpClient& http, const cas::SnapshotResult& scan,
                     const std::vector<const Object*>& missing, UploadStats* stats,
                     const std::function<void(const UploadStats&)>& progress) {
  Mutex mu;  // Guards *stats, first_error and progress calls.
  std::optional<Status> first_error;
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};

  auto upload_one = [&](const Object& object) -> Status {
    const cas::ManifestEntry& entry = *object.entry;
    std::uint64_t sent = 0;
    StatusOr<HttpResult> result =
        http.UploadFile("PUT", "/api/v1/objects/" + object.digest, scan.source_root / entry.path,
                        "application/octet-stream", &sent);
    {
      MutexLock lock(mu);
      stats->bytes_uploaded += sent;
    }
    if (!result.ok()) {
      if (result.status().code() == StatusCode::kFailedPrecondition) {
        return ChangedWhileUploading(entry);  // The file shrank.
      }
      return result.status();
    }
    Status status = StatusFromHttpResult(*result);
    if (!status.ok()) {
      // The server hashed something other than what was scanned: the file changed.
      if (status.code() == StatusCode::kInvalidArgument &&
          status.message().find("content hashes to") != std::string::npos) {
        return ChangedWhileUploading(entry);
      }
      return status.WithPrefix("uploading " + cas::PrintablePath(entry.path));
    }
    MutexLock lock(mu);
    ++stats->objects_uploaded;
    if (progress) progress(*stats);
    return Status::Ok();
  };

  auto worker = [&] {
    for (;;) {
      if (failed) return;
      const std::size_t i = next++;
      if (i >= missing.size()) return;
      Status status = upload_one(*missing[i]);
      if (!status.ok()) {
        MutexLock lock(mu);
        if (!first_error) first_error = std::move(status);
        failed = true;
        return;
      }
    }
  };

  const std::size_t n = std::min(kParallelUploads, missing.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < n; ++i) threads.emplace_back(worker);
  if (n > 0) worker();
  for (std::thread& t : threads) t.join();
  return first_error ? *first_error : Status::Ok();
}

}  // namespace

StatusOr<UploadStats> UploadSnapshot(HttpClient& http, const cas::SnapshotResult& scan,
                                     std::function<void(const UploadStats&)> progress) {
  if (scan.id.empty() || scan.source_root.empty()) {
    return InvalidArgument("UploadSnapshot needs a ScanTree result (with id and source_root)");
  }
  std::vector<Object> objects;
  {
    std::unordered_map<std::string_view, bool> seen;
    for (const cas::ManifestEntry& e : scan.manifest.entries) {
      if (e.type != cas::ManifestEntry::Type::kFile) continue;
      if (seen.emplace(e.digest, true).second) objects.push_back({e.digest, &e});
    }
  }
  UploadStats stats;
  stats.objects = objects.size();

  TY_ASSIGN_OR_RETURN(std::vector<const Object*> missing,
                      AskMissing(http, objects, &stats, progress));
  TY_RETURN_IF_ERROR(UploadObjects(http, scan, missing, &stats, progress));

  TY_ASSIGN_OR_RETURN(HttpResult stored,
                      http.Request("POST", "/api/v1/snapshots", scan.manifest.ToJson(),
                                   "application/json", kJsonTimeoutMs));
  TY_RETURN_IF_ERROR(StatusFromHttpResult(stored));
  const json answer = json::parse(stored.body, nullptr, /*allow_exceptions=*/false);
  if (!answer.is_object() || !answer.contains("id") || !answer["id"].is_string()) {
    return Internal("unexpected answer to POST /api/v1/snapshots: " + stored.body.substr(0, 200));
  }
  if (answer["id"].get<std::string>() != scan.id) {
    return Internal("server stored snapshot " + answer["id"].get<std::string>() + ", expected " +
                    scan.id);
  }
  return stats;
}

}  // namespace trainyard::client

#include "trainyard/assets/run_data.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "trainyard/assets/catalog.h"
#include "trainyard/assets/client_internal.h"
#include "trainyard/assets/registries.h"
#include "trainyard/cas/io.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::assets {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using spec::DataUri;

constexpr int kTransferThreads = 8;

// Runs fn(i) for every i in [0, n) on up to kTransferThreads threads (transfers wait on the
// network, not the CPU). The first error stops the handing out of further items and is returned.
Status ForEachTransfer(size_t n, const std::function<Status(size_t)>& fn) {
  Mutex mu;
  Status first = Status::Ok();
  cas::internal::ParallelFor(
      n,
      [&](size_t i) {
        Status st = fn(i);
        if (st.ok()) return true;
        MutexLock lock(mu);
        if (first.ok()) first = std::move(st);
        return false;
      },
      kTransferThreads, /*io_bound=*/true);
  MutexLock lock(mu);
  return first;
}

std::int64_t SinceMs(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

// A URL as it may be shown: without its query, which can hold a SAS token or a signature.
std::string ShownUrl(const std::string& url) {
  const size_t q = url.find('?');
  return q == std::string::npos ? url : url.substr(0, q) + "?...";
}

std::string Megabytes(std::uint64_t bytes) { return FormatBytes(bytes); }

// Reads a cache index (a JSON object); an unreadable or corrupt one is an empty index (the
// objects are then fetched again).
json ReadIndex(const fs::path& file) {
  auto text = ReadFile(file);
  if (!text.ok()) return json::object();
  json j = json::parse(*text, nullptr, false);
  return j.is_object() ? j : json::object();
}

// A private folder for one transfer, removed with everything in it when it goes out of scope.
class StagingDir {
 public:
  static StatusOr<std::unique_ptr<StagingDir>> Make(const fs::path& parent, std::string_view tag) {
    fs::path dir = parent / (std::string(tag) + "-" + RandomHex(8));
    TY_RETURN_IF_ERROR(MakeDirs(dir));
    return std::unique_ptr<StagingDir>(new StagingDir(std::move(dir)));
  }
  ~StagingDir() { (void)RemoveTree(dir_); }
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
  const fs::path& path() const { return dir_; }

 private:
  explicit StagingDir(fs::path dir) : dir_(std::move(dir)) {}
  fs::path dir_;
};

Status WriteIndex(const fs::path& file, const json& index) {
  TY_RETURN_IF_ERROR(MakeDirs(file.parent_path()));
  return WriteFileAtomic(file, index.dump(), /*mode=*/0600);
}

// What an output with a name registers: a model for a model type, else a data asset.
std::string OutputKind(const spec::OutputSpec& out) {
  return spec::IsModelType(out.type) ? "model" : "data";
}

}  // namespace

RunData::RunData(Datastores& datastores, cas::ObjectStore& objects, cas::Snapshotter& snapshots,
                 fs::path cache_dir, fs::path runs_dir)
    : datastores_(datastores),
      objects_(objects),
      snapshots_(snapshots),
      cache_dir_(std::move(cache_dir)),
      runs_dir_(std::move(runs_dir)) {}

Mutex& RunData::LockFor(const std::string& key) {
  MutexLock lock(locks_mu_);
  auto& slot = locks_[key];
  if (!slot) slot = std::make_unique<Mutex>();
  return *slot;
}

Status RunData::Check(spec::RunRequest& request) {
  for (auto& [name, in] : request.inputs) {
    if (in.kind == spec::InputSpec::Kind::kLiteral) continue;
    TY_ASSIGN_OR_RETURN(DataUri uri, spec::ParseDataUri(in.path));
    if (uri.kind == DataUri::Kind::kAsset) {
      auto src = ResolveAsset(in, uri);
      if (!src.ok()) return src.status().WithPrefix("input '" + name + "'");
      in.path = src->id;
    } else if (uri.kind == DataUri::Kind::kDatastore) {
      auto ds = datastores_.Get(uri.datastore);
      if (!ds.ok()) return ds.status().WithPrefix("input '" + name + "'");
    } else if (uri.kind == DataUri::Kind::kRunOutput) {
      std::error_code ec;
      if (!fs::is_directory(runs_dir_ / uri.run_id, ec)) {
        return NotFound("input '" + name + "': run '" + uri.run_id + "' does not exist");
      }
    }
  }
  for (const auto& [name, out] : request.outputs) {
    if (!out.name.empty()) {
      // What registering needs is checked now, not when the run ends (the name rule of job files
      // too: an output is not named "latest").
      if (out.name == "latest") {
        return InvalidArgument("output '" + name + "': invalid asset name or version '" + out.name +
                               ":" + out.version + "'");
      }
      if (out.type != "uri_folder" && !spec::IsModelType(out.type)) {
        return InvalidArgument("output '" + name + "': an output registered as an asset is of " +
                               "type uri_folder, mlflow_model or custom_model, not '" + out.type +
                               "'");
      }
      if (catalog_ == nullptr) {
        return FailedPrecondition("output '" + name + "': registering outputs is not available");
      }
      Status fresh = catalog_->CheckNew(OutputKind(out), out.name, out.version, out.type);
      if (!fresh.ok()) return fresh.WithPrefix("output '" + name + "'");
    }
    if (out.path.empty()) continue;
    TY_ASSIGN_OR_RETURN(DataUri uri, spec::ParseDataUri(out.path));
    auto ds = datastores_.Get(uri.datastore);
    if (!ds.ok()) return ds.status().WithPrefix("output '" + name + "'");
  }
  return Status::Ok();
}

StatusOr<std::map<std::string, spec::InputSpec>> RunData::ResolveInputs(
    const spec::RunRequest& request, const Log& log, const std::function<bool()>& canceled) {
  std::map<std::string, spec::InputSpec> out = request.inputs;
  for (auto& [name, in] : out) {
    if (in.kind == spec::InputSpec::Kind::kLiteral) continue;
    auto uri = spec::ParseDataUri(in.path);
    if (!uri.ok()) return uri.status().WithPrefix("input '" + name + "'");
    if (uri->kind == DataUri::Kind::kAsset) {
      auto src = ResolveAsset(in, *uri);
      if (!src.ok()) return src.status().WithPrefix("input '" + name + "'");
      const std::string ref = AssetKindName(src->kind) + " " + src->name + ":" + src->version;
      if (src->stored) {
        auto path = PathOf(*src->stored);
        if (!path.ok()) return path.status().WithPrefix("input '" + name + "': " + ref);
        in.path = path->string();
        if (in.mode == "direct") {
          in.kind = spec::InputSpec::Kind::kLiteral;
          in.value = in.path;
        }
        log("input '" + name + "': " + ref + ", " + std::to_string(src->stored->files) +
            (src->stored->files == 1 ? " file (" : " files (") + Megabytes(src->stored->bytes) +
            ") kept by the workspace\n");
        continue;
      }
      log("input '" + name + "': " + ref + " is " + src->uri + "\n");
      in.path = src->uri;
      uri = spec::ParseDataUri(in.path);
      if (!uri.ok()) return uri.status().WithPrefix("input '" + name + "': " + ref);
    }
    if (in.mode == "direct") {
      // The script gets the address itself and reads it with its own tools.
      in.kind = spec::InputSpec::Kind::kLiteral;
      in.value = in.path;
      log("input '" + name + "': passed as is (direct)\n");
      continue;
    }
    if (uri->kind == DataUri::Kind::kLocalPath) continue;
    if (uri->kind == DataUri::Kind::kDatastore && in.mode == "ro_mount") {
      // A local datastore's folder is mounted as it is, without a copy.
      auto ds = datastores_.Get(uri->datastore);
      if (!ds.ok()) return ds.status().WithPrefix("input '" + name + "'");
      if (ds->type == "local") {
        const fs::path p = uri->path.empty() ? fs::path(ds->path) : fs::path(ds->path) / uri->path;
        const bool folder = in.kind == spec::InputSpec::Kind::kUriFolder;
        // Opened through the datastore's folder: no symbolic link anywhere below it, and of the
        // kind the input says. The path is then bind-mounted as it is.
        auto root = RootedDir::Open(ds->path);
        if (!root.ok())
          return root.status().WithPrefix("input '" + name + "': datastore " + ds->name);
        struct stat st {};
        Status opened = Status::Ok();
        if (folder) {
          opened = root->OpenDir(uri->path).status();
        } else {
          auto f = root->OpenFile(uri->path, &st);
          opened = f.status();
        }
        if (!opened.ok()) {
          return Status(opened.code() == StatusCode::kNotFound ? StatusCode::kNotFound
                                                               : StatusCode::kInvalidArgument,
                        "input '" + name + "': " + (folder ? "folder " : "file ") + in.path + " (" +
                            p.string() + ") cannot be mounted from datastore " + ds->name + ": " +
                            opened.message());
        }
        in.path = p.string();
        log("input '" + name + "': " + p.string() + " mounted read-only\n");
        continue;
      }
    }
    auto captured = Capture("input '" + name + "'", *uri,
                            in.kind == spec::InputSpec::Kind::kUriFile, log, canceled);
    if (!captured.ok()) return captured.status();
    TY_ASSIGN_OR_RETURN(fs::path path, PathOf(*captured));
    in.path = path.string();
  }
  return out;
}

StatusOr<AssetSource> RunData::ResolveAsset(const spec::InputSpec& in, const DataUri& uri) {
  const bool model = spec::IsModelType(in.type);
  if (catalog_ == nullptr) {
    return FailedPrecondition("data assets and models are not available here");
  }
  std::string type = in.type;
  if (type.empty()) type = in.kind == spec::InputSpec::Kind::kUriFile ? "uri_file" : "uri_folder";
  Catalog* catalog = catalog_;
  if (!uri.asset_registry.empty()) {
    if (registries_ == nullptr) return FailedPrecondition("registries are not available here");
    TY_ASSIGN_OR_RETURN(Registry * r, registries_->Open(uri.asset_registry));
    catalog = r->catalog.get();
  }
  const std::string kind = !uri.asset_kind.empty() ? uri.asset_kind : model ? "model" : "data";
  return catalog->Resolve(kind, uri.asset_name, uri.asset_version, uri.asset_label, type);
}

StatusOr<std::unique_ptr<ObjectClient>> RunData::ClientFor(const DataUri& uri,
                                                           std::string* location) {
  if (uri.kind == DataUri::Kind::kDatastore) {
    TY_ASSIGN_OR_RETURN(spec::DatastoreDefinition def, datastores_.Get(uri.datastore));
    *location = "datastore " + def.name + " (" + def.Location() + ")";
    return datastores_.Open(uri.datastore);
  }
  if (uri.kind == DataUri::Kind::kRunOutput) {
    spec::DatastoreDefinition def =
        spec::WorkspaceBlobStore((runs_dir_ / uri.run_id / "outputs").string());
    def.name = "run-outputs";
    *location = "the outputs of run " + uri.run_id;
    return OpenObjectClient(def);
  }
  // wasbs://, abfss://, s3://: the credentials of a datastore of that container or bucket, or
  // anonymous access.
  TY_ASSIGN_OR_RETURN(std::vector<spec::DatastoreDefinition> all, datastores_.List());
  for (const auto& ds : all) {
    const bool same = uri.kind == DataUri::Kind::kAzureBlob
                          ? ds.type == "azure_blob" && ds.account_name == uri.account &&
                                ds.container_name == uri.container
                          : ds.type == "s3" && ds.bucket == uri.bucket;
    if (same) {
      *location = "datastore " + ds.name + " (" + ds.Location() + ")";
      return datastores_.Open(ds.name);
    }
  }
  spec::DatastoreDefinition def;
  def.name = "anonymous";
  if (uri.kind == DataUri::Kind::kAzureBlob) {
    def.type = "azure_blob";
    def.account_name = uri.account;
    def.container_name = uri.container;
    def.endpoint = uri.suffix;
  } else {
    def.type = "s3";
    def.bucket = uri.bucket;
  }
  *location = def.Location() + " (anonymous: no datastore of this " +
              (def.type == "s3" ? "bucket" : "container") + ")";
  return OpenObjectClient(def);
}

StatusOr<RunData::Captured> RunData::CaptureObjects(const std::string& what, bool file,
                                                    const DataUri& uri, const Log& log,
                                                    const std::function<bool()>& canceled) {
  std::string location;
  auto client_or = ClientFor(uri, &location);
  if (!client_or.ok()) return client_or.status().WithPrefix(what);
  ObjectClient& client = **client_or;

  // What the source holds now: one object, or every object under the folder's prefix.
  const auto list_start = std::chrono::steady_clock::now();
  std::vector<ObjectInfo> listing;
  std::string prefix;  // stripped from keys to make paths in the folder
  if (file) {
    if (uri.path.empty()) return InvalidArgument(what + ": " + uri.text + " names no file");
    auto info = client.Stat(uri.path);
    if (!info.ok()) return info.status().WithPrefix(what);
    listing.push_back(std::move(*info));
    const size_t slash = uri.path.rfind('/');
    prefix = slash == std::string::npos ? "" : uri.path.substr(0, slash + 1);
  } else {
    prefix = uri.path.empty() ? "" : uri.path + "/";
    auto all = client.List(prefix);
    if (!all.ok()) return all.status().WithPrefix(what);
    // Folder markers are not files: keys ending in '/' (S3 consoles make them) and empty
    // objects that other keys sit under (the directories of an account with a hierarchical
    // namespace).
    auto has_children = [&](const std::string& key) {
      const std::string below = key + "/";
      auto it =
          std::lower_bound(all->begin(), all->end(), below,
                           [](const ObjectInfo& a, const std::string& k) { return a.key < k; });
      return it != all->end() && StartsWith(it->key, below);
    };
    for (const ObjectInfo& o : *all) {
      const bool marker = EndsWith(o.key, "/") || (o.size == 0 && has_children(o.key));
      if (!marker) listing.push_back(o);
    }
    // Keys that are not files of a tree ("a//b", "../x") cannot become paths: refused, named.
    for (const ObjectInfo& o : listing) {
      if (!StartsWith(o.key, prefix)) {
        return Internal(what + ": " + location + " listed '" + o.key + "' under '" + prefix + "'");
      }
      if (Status st = CheckObjectKey(o.key.substr(prefix.size())); !st.ok()) {
        return InvalidArgument(what + ": object '" + o.key + "' of " + location +
                               " cannot be a file of a folder: " + st.message());
      }
    }
    if (listing.empty()) {
      return NotFound(what + ": " + location + " has no objects under '" + uri.path + "'");
    }
  }

  const std::int64_t list_ms = SinceMs(list_start);
  const auto fetch_start = std::chrono::steady_clock::now();
  // The validators of what was fetched before from this source.
  const std::string source_key = Sha256Hex(location + "\n" + prefix);
  const fs::path index_file = cache_dir_ / "index" / (source_key + ".json");
  MutexLock source_lock(LockFor(source_key));
  json index = ReadIndex(index_file);
  json& known = index["objects"];
  if (!known.is_object()) known = json::object();

  std::vector<size_t> missing;
  std::vector<std::string> digests(listing.size());
  std::vector<std::string> candidates(listing.size());
  for (size_t i = 0; i < listing.size(); ++i) {
    const ObjectInfo& o = listing[i];
    auto it = known.find(o.key);
    if (it != known.end() && it->is_object() && !o.etag.empty() &&
        it->value("etag", "") == o.etag && it->value("size", std::uint64_t{0}) == o.size) {
      candidates[i] = it->value("digest", "");
    }
  }
  const std::vector<bool> present = objects_.HasEach(candidates);
  std::uint64_t reused_bytes = 0;
  for (size_t i = 0; i < listing.size(); ++i) {
    if (present[i]) {
      digests[i] = candidates[i];
      reused_bytes += listing[i].size;
    } else {
      missing.push_back(i);
    }
  }

  std::uint64_t fetched_bytes = 0;
  if (!missing.empty()) {
    // Fetched into a private staging folder on a few threads, then taken into the store in one
    // batch (renamed, not copied; two file-system flushes in all); the staging folder is on the
    // store's file system and goes away whatever happens.
    TY_ASSIGN_OR_RETURN(std::unique_ptr<StagingDir> stage,
                        StagingDir::Make(objects_.root() / "tmp", "fetch"));
    const fs::path& staging = stage->path();
    std::vector<ObjectInfo> got(missing.size());
    Status fetched = ForEachTransfer(missing.size(), [&](size_t j) -> Status {
      if (canceled && canceled()) return Cancelled("canceled while fetching");
      auto r = client.Download(listing[missing[j]].key, staging / std::to_string(j),
                               /*durable=*/false);
      if (!r.ok()) return r.status();
      got[j] = std::move(*r);
      return Status::Ok();
    });
    if (fetched.code() == StatusCode::kCancelled) return fetched;
    if (!fetched.ok()) return fetched.WithPrefix(what + ": fetching from " + location);
    std::vector<fs::path> files;
    for (size_t j = 0; j < missing.size(); ++j) files.push_back(staging / std::to_string(j));
    auto stored = objects_.AdoptFiles(files);
    if (!stored.ok()) return stored.status().WithPrefix(what + ": storing what was fetched");
    for (size_t j = 0; j < missing.size(); ++j) {
      const size_t i = missing[j];
      // A short transfer the connection did not report (a body cut off without a length) is
      // caught here: the bytes must be the size the listing and the answer gave.
      const std::uint64_t want = got[j].size != 0 ? got[j].size : listing[i].size;
      if ((*stored)[j].size != want || (*stored)[j].size != listing[i].size) {
        return Unavailable(what + ": object '" + listing[i].key + "' of " + location +
                           " came with " + std::to_string((*stored)[j].size) + " bytes, not " +
                           std::to_string(listing[i].size) +
                           "; it changed during the fetch or "
                           "the transfer was cut short");
      }
      // The object as the transfer saw it: its size and tag belong with these bytes.
      digests[i] = (*stored)[j].digest;
      fetched_bytes += (*stored)[j].size;
      const std::string etag = got[j].etag.empty() ? listing[i].etag : got[j].etag;
      if (!etag.empty()) {
        known[listing[i].key] = {
            {"etag", etag}, {"size", (*stored)[j].size}, {"digest", digests[i]}};
      }
    }
    if (Status st = WriteIndex(index_file, index); !st.ok()) {
      log("warning: the data cache's index was not saved (" + st.message() +
          "); the next run fetches again\n");
    }
  }

  const std::int64_t fetch_ms = SinceMs(fetch_start);
  const auto folder_start = std::chrono::steady_clock::now();
  // Each size is the listing's: a reused object matched it in the index, a fetched one was
  // checked against it above.
  cas::Manifest manifest;
  for (size_t i = 0; i < listing.size(); ++i) {
    cas::ManifestEntry e;
    e.path = listing[i].key.substr(prefix.size());
    e.size = listing[i].size;
    e.digest = digests[i];
    manifest.entries.push_back(std::move(e));
  }
  std::sort(
      manifest.entries.begin(), manifest.entries.end(),
      [](const cas::ManifestEntry& a, const cas::ManifestEntry& b) { return a.path < b.path; });
  auto id = snapshots_.AddManifest(manifest);
  if (!id.ok()) return id.status().WithPrefix(what);
  Captured out;
  out.snapshot_id = *id;
  if (file) out.file = manifest.entries.front().path;
  out.files = listing.size();
  out.bytes = manifest.TotalBytes();
  log(what + ": " + std::to_string(listing.size()) + (listing.size() == 1 ? " file" : " files") +
      " from " + location + ": " + std::to_string(missing.size()) + " fetched (" +
      Megabytes(fetched_bytes) + "), " + std::to_string(listing.size() - missing.size()) +
      " unchanged from the cache (" + Megabytes(reused_bytes) + "); listed in " +
      std::to_string(list_ms) + " ms, fetched in " + std::to_string(fetch_ms) + " ms, stored in " +
      std::to_string(SinceMs(folder_start)) + " ms\n");
  return out;
}

StatusOr<RunData::Captured> RunData::CaptureHttp(const std::string& what, const DataUri& uri,
                                                 const Log& log) {
  const std::string& url = uri.path;
  TY_ASSIGN_OR_RETURN(internal::SplitUrl split, internal::SplitServiceUrl(url));
  const std::string rest = url.substr(split.origin.size());
  std::string name = rest.substr(0, rest.find('?'));
  name = name.substr(name.rfind('/') + 1);
  if (name.empty()) name = "download";

  const std::string source_key = Sha256Hex("url\n" + url);
  const fs::path index_file = cache_dir_ / "index" / (source_key + ".json");
  MutexLock source_lock(LockFor(source_key));
  json index = ReadIndex(index_file);
  std::string digest = index.value("digest", "");
  if (!digest.empty() && !objects_.Has(digest)) digest.clear();

  HttpHeaders conditions;
  if (!digest.empty()) {
    if (const std::string etag = index.value("etag", ""); !etag.empty()) {
      conditions.push_back("If-None-Match: " + etag);
    }
    if (const std::string modified = index.value("last_modified", ""); !modified.empty()) {
      conditions.push_back("If-Modified-Since: " + modified);
    }
  }
  TY_ASSIGN_OR_RETURN(std::unique_ptr<StagingDir> stage,
                      StagingDir::Make(objects_.root() / "tmp", "fetch"));
  const fs::path& staging = stage->path();
  HttpClient http(split.origin);
  auto r = http.Download(rest.empty() ? "/" : rest, staging / "body", conditions, false);
  if (!r.ok()) {
    // The client's message shows the URL without its query too.
    return Unavailable(what + ": " + r.status().message());
  }
  bool reused = false;
  if (r->status == 304 && !digest.empty() && !conditions.empty()) {
    reused = true;
  } else if (r->status / 100 != 2 || r->status == 206) {
    std::string status_text = std::to_string(r->status);
    return Status(r->status == 404 ? StatusCode::kNotFound : StatusCode::kUnavailable,
                  what + ": GET " + ShownUrl(url) + " answered HTTP " + status_text +
                      (r->status / 100 == 3 ? " (a redirect; give the address it leads to)" : ""));
  } else {
    auto stored = objects_.AdoptFiles({staging / "body"});
    if (!stored.ok()) return stored.status().WithPrefix(what + ": storing what was fetched");
    digest = (*stored)[0].digest;
    if (auto len = r->headers.find("content-length"); len != r->headers.end()) {
      auto want = ParseWholeInteger<std::uint64_t>(len->second);
      if (want && *want != (*stored)[0].size) {
        return Unavailable(what + ": GET " + ShownUrl(url) + " sent " +
                           std::to_string((*stored)[0].size) + " of " + len->second + " bytes");
      }
    }
    json entry = {{"url_sha256", source_key}, {"digest", digest}};
    if (auto e = r->headers.find("etag"); e != r->headers.end()) entry["etag"] = e->second;
    if (auto m = r->headers.find("last-modified"); m != r->headers.end()) {
      entry["last_modified"] = m->second;
    }
    if (Status st = WriteIndex(index_file, entry); !st.ok()) {
      log("warning: the data cache's index was not saved (" + st.message() + ")\n");
    }
  }
  std::error_code ec;
  const std::uint64_t size = fs::file_size(objects_.PathFor(digest), ec);
  if (ec) return Internal(what + ": object " + digest + " vanished from the store");
  auto id = snapshots_.AddManifest(cas::Manifest::OneFile(name, digest, size));
  if (!id.ok()) return id.status().WithPrefix(what);
  log(what + ": " + ShownUrl(url) + " " +
      (reused ? "unchanged (HTTP 304), from the cache" : "fetched (" + Megabytes(size) + ")") +
      "\n");
  return Captured{*id, name, 1, size};
}

StatusOr<RunData::Captured> RunData::Capture(const std::string& what, const DataUri& uri, bool file,
                                             const Log& log,
                                             const std::function<bool()>& canceled) {
  switch (uri.kind) {
    case DataUri::Kind::kHttp:
      return CaptureHttp(what, uri, log);
    case DataUri::Kind::kDatastore:
    case DataUri::Kind::kRunOutput:
    case DataUri::Kind::kAzureBlob:
    case DataUri::Kind::kS3:
      return CaptureObjects(what, file, uri, log, canceled);
    case DataUri::Kind::kLocalPath:
    case DataUri::Kind::kAsset:
      break;
  }
  return Internal(what + ": " + uri.text + " is not fetched");
}

StatusOr<fs::path> RunData::PathOf(const Captured& captured) {
  TY_ASSIGN_OR_RETURN(fs::path folder, Folder(captured.snapshot_id));
  return captured.file.empty() ? folder : folder / captured.file;
}

StatusOr<fs::path> RunData::Folder(const std::string& id) {
  fs::path folder = cache_dir_ / "folders" / id;
  std::error_code ec;
  if (fs::is_directory(folder, ec)) return folder;
  Status st = snapshots_.Materialize(id, folder, cas::MaterializeMode::kLink);
  // Another run may have made it meanwhile: then it is there, whole (Materialize renames).
  if (!st.ok() && !fs::is_directory(folder, ec)) return st;
  return folder;
}

Status RunData::DeliverOutputs(const spec::RunRequest& request, const fs::path& run_dir,
                               const Log& log) {
  for (const auto& [output, out] : request.outputs) {
    if (out.path.empty()) continue;
    const std::string& name = output;  // a plain reference: lambdas below capture it
    const std::string what = "output '" + name + "'";
    TY_ASSIGN_OR_RETURN(DataUri uri, spec::ParseDataUri(out.path));
    auto client = datastores_.Open(uri.datastore);
    if (!client.ok()) return client.status().WithPrefix(what);
    auto dir = RootedDir::Open(run_dir / "outputs");
    if (!dir.ok()) return dir.status().WithPrefix(what);
    std::vector<std::string> files;
    std::uint64_t bytes = 0;
    TY_RETURN_IF_ERROR(dir->Walk(name, [&](const RootedDir::Entry& e) {
      if (S_ISREG(e.st.st_mode)) {
        files.push_back(e.rel);
        bytes += static_cast<std::uint64_t>(e.st.st_size);
      }
      return true;
    }));
    // Each file is read through the folder's descriptor (a run may have planted links): copied
    // to a staging file first, then uploaded from there.
    TY_ASSIGN_OR_RETURN(std::unique_ptr<StagingDir> stage,
                        StagingDir::Make(cache_dir_ / "staging", "upload"));
    const fs::path& staging = stage->path();
    Status written = ForEachTransfer(files.size(), [&](size_t j) -> Status {
      const std::string rel = files[j].substr(name.size() + 1);
      const std::string key = uri.path.empty() ? rel : uri.path + "/" + rel;
      const fs::path copy = staging / std::to_string(j);
      Status st = Status::Ok();
      auto in = dir->OpenFile(files[j]);
      if (!in.ok()) {
        st = in.status();
      } else {
        ScopedFd outfd(::open(copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        st = outfd.valid() ? internal::CopyFd(in->get(), outfd.get(), files[j])
                           : Internal("cannot create a staging copy of " + files[j]);
        if (st.ok() && outfd.Close() != 0) st = Internal("cannot copy " + files[j] + " for upload");
        if (st.ok()) st = (*client)->Upload(copy, key);
        ::unlink(copy.c_str());
      }
      return st.ok() ? st : st.WithPrefix("file " + rel);
    });
    if (!written.ok()) return written.WithPrefix(what + ": writing to " + out.path);
    log("output '" + name + "': " + std::to_string(files.size()) +
        (files.size() == 1 ? " file (" : " files (") + Megabytes(bytes) + ") written to " +
        out.path + "\n");
  }
  return RegisterOutputs(request, run_dir, log);
}

Status RunData::RegisterOutputs(const spec::RunRequest& request, const fs::path& run_dir,
                                const Log& log) {
  const std::string run_id = run_dir.filename().string();
  for (const auto& [output, out] : request.outputs) {
    if (out.name.empty()) continue;
    const std::string what = "output '" + output + "'";
    if (catalog_ == nullptr) return FailedPrecondition(what + ": registering is not available");
    AssetRequest r;
    r.kind = OutputKind(out);
    r.name = out.name;
    r.version = out.version;
    r.type = out.type;
    r.run = run_id;
    // Data written to a datastore is registered where it was written; a model, and data kept
    // only in the run, are copied from the run's outputs into the workspace's store.
    r.path = !out.path.empty() && r.kind == "data"
                 ? out.path
                 : "azureml://jobs/" + run_id + "/outputs/artifacts/paths/" + output;
    auto created = catalog_->Create(r);
    if (!created.ok()) return created.status().WithPrefix(what + ": registering " + out.name);
    log(what + ": registered as " + AssetKindName(r.kind) + " " + out.name + ":" +
        (*created)["version"].get<std::string>() + "\n");
  }
  return Status::Ok();
}

}  // namespace trainyard::assets

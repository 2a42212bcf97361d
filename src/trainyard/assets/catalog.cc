#include "trainyard/assets/catalog.h"

#include <sys/stat.h>

#include <algorithm>
#include <limits>

#include "trainyard/common/clock.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/data_uri.h"

namespace trainyard::assets {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using spec::DataUri;
using spec::IsModelType;

constexpr std::size_t kMaxTagsOrProperties = 100;

Status CheckType(const std::string& kind, const std::string& type) {
  if (kind == "data") {
    if (type != "uri_file" && type != "uri_folder") {
      return InvalidArgument("type must be uri_file or uri_folder for a data asset, not '" + type +
                             "'");
    }
  } else if (!IsModelType(type)) {
    return InvalidArgument("type must be custom_model or mlflow_model for a model, not '" + type +
                           "'");
  }
  return Status::Ok();
}

Status VersionTaken(const std::string& what, const std::string& version) {
  return AlreadyExists(what + ":" + version +
                       " already exists; versions are immutable: give another version, or none "
                       "for the next");
}

Status CheckMap(const std::map<std::string, std::string>& m, const char* what) {
  if (m.size() > kMaxTagsOrProperties) {
    return InvalidArgument(std::string("at most ") + std::to_string(kMaxTagsOrProperties) + " " +
                           what + " (got " + std::to_string(m.size()) + ")");
  }
  for (const auto& [k, v] : m) {
    if (k.empty() || k.size() > 255 || v.size() > 4096) {
      return InvalidArgument(std::string(what) + ": a key is 1 to 255 characters and a value at " +
                             "most 4096 ('" + k.substr(0, 40) + "')");
    }
  }
  return Status::Ok();
}

// A label a user may set: a name, and not "latest", which always means the newest version.
Status CheckLabel(const std::string& label) {
  if (!IsValidName(label)) return InvalidArgument("invalid label '" + label + "'");
  if (label == "latest") {
    return InvalidArgument("'latest' always names the newest version and cannot be set");
  }
  return Status::Ok();
}

// The highest version that is a whole number, or 0.
std::uint64_t HighestNumber(const std::vector<store::AssetRecord>& versions) {
  std::uint64_t top = 0;
  for (const auto& v : versions) {
    if (auto n = ParseWholeInteger<std::uint64_t>(v.version)) top = std::max(top, *n);
  }
  return top;
}

std::string VersionList(const std::vector<store::AssetRecord>& versions) {
  std::vector<std::string> names;
  for (const auto& v : versions) names.push_back(v.version + (v.archived ? " (archived)" : ""));
  return Join(names, ", ");
}

}  // namespace

std::string AssetId(const std::string& registry, const std::string& kind, const std::string& name,
                    const std::string& version) {
  if (registry.empty()) return "azureml:" + name + ":" + version;
  return "azureml://registries/" + registry + "/" + (kind == "model" ? "models" : "data") + "/" +
         name + "/versions/" + version;
}

Status CopySnapshot(const cas::Snapshotter& from, cas::Snapshotter& to,
                    cas::ObjectStore& to_objects, const std::string& id) {
  TY_ASSIGN_OR_RETURN(cas::Manifest manifest, from.Load(id));
  for (const cas::ManifestEntry& e : manifest.entries) {
    if (e.type != cas::ManifestEntry::Type::kFile || to_objects.Has(e.digest)) continue;
    TY_ASSIGN_OR_RETURN(cas::ObjectStore::PutResult put,
                        to_objects.Put(from.objects().PathFor(e.digest)));
    if (put.digest != e.digest) {
      return Internal("object " + e.digest + " of snapshot " + id + " does not match its digest");
    }
  }
  return to.AddManifest(manifest).status();
}

Catalog::Catalog(store::Store& store, cas::ObjectStore& objects, cas::Snapshotter& snapshots,
                 Datastores& datastores, RunData& run_data, fs::path stat_cache_dir,
                 const CatalogHome* home)
    : ws_store_(store),
      store_(home != nullptr ? *home->store : store),
      objects_(objects),
      snapshots_(snapshots),
      datastores_(datastores),
      run_data_(run_data),
      stat_cache_dir_(std::move(stat_cache_dir)),
      home_(home != nullptr ? std::optional<CatalogHome>(*home) : std::nullopt) {}

Status Catalog::CheckNew(const std::string& kind, const std::string& name,
                         const std::string& version, const std::string& type) {
  if (kind != "data" && kind != "model") return InvalidArgument("unknown kind '" + kind + "'");
  const std::string what = AssetKindName(kind);
  if (!IsValidName(name)) {
    return InvalidArgument("invalid " + what + " name '" + name +
                           "': letters, digits, '.', '_' and '-', starting with a letter or digit");
  }
  if (!version.empty() && (!IsValidName(version) || version == "latest")) {
    return InvalidArgument("invalid version '" + version + "' of " + what + " " + name);
  }
  TY_RETURN_IF_ERROR(CheckType(kind, type));
  if (version.empty()) return Status::Ok();
  auto existing = store_.GetAsset(kind, name, version);
  if (existing.ok()) return VersionTaken(what + " " + name, version);
  return existing.status().code() == StatusCode::kNotFound ? Status::Ok() : existing.status();
}

StatusOr<json> Catalog::Create(const AssetRequest& request) {
  AssetRequest r = request;
  if (r.type.empty()) r.type = r.kind == "data" ? "uri_folder" : "custom_model";
  // Before any content is read or fetched: versions are immutable.
  TY_RETURN_IF_ERROR(CheckNew(r.kind, r.name, r.version, r.type));
  const std::string what = AssetKindName(r.kind);
  TY_RETURN_IF_ERROR(CheckMap(r.tags, "tags"));
  TY_RETURN_IF_ERROR(CheckMap(r.properties, "properties"));
  if (!r.label.empty()) TY_RETURN_IF_ERROR(CheckLabel(r.label));
  if (r.snapshot_id.empty() == r.path.empty()) {
    return InvalidArgument("give the " + what + "'s content as exactly one of 'path' and " +
                           "'snapshot_id'");
  }
  return Store(r);
}

StatusOr<json> Catalog::Store(const AssetRequest& r) {
  const std::string what =
      AssetKindName(r.kind) + " " + r.name + (home_ ? " of registry " + home_->registry : "");
  json asset = {{"type", r.type},
                {"description", r.description},
                {"tags", r.tags},
                {"properties", r.properties}};
  json storage;
  const bool one_file = r.type == "uri_file";
  // The run it comes from (given, or the run of an azureml://jobs/ or runs:/ address), read
  // once, before any content is: an unknown run fails here.
  std::string lineage_run = r.run;
  if (!r.path.empty() && r.path.front() != '/') {
    auto uri = spec::ParseDataUri(r.path);
    if (uri.ok() && uri->kind == DataUri::Kind::kRunOutput) lineage_run = uri->run_id;
  }
  if (!lineage_run.empty()) {
    auto run = ws_store_.GetRun(lineage_run);
    if (!run.ok()) return run.status().WithPrefix(what);
    json lineage = {{"run", run->id},
                    {"experiment", run->experiment},
                    {"run_status", std::string(store::RunStatusName(run->status))},
                    {"code_snapshot", run->snapshot_id},
                    {"environment", run->environment_name + ":" + run->environment_version},
                    {"image", run->image}};
    const json request = json::parse(run->request_json, nullptr, false);
    if (request.is_object() && request.contains("inputs")) lineage["inputs"] = request["inputs"];
    asset["lineage"] = lineage;
  }
  auto stored = [&](const RunData::Captured& c) {
    storage = {
        {"snapshot_id", c.snapshot_id}, {"file", c.file}, {"files", c.files}, {"bytes", c.bytes}};
  };

  if (!r.snapshot_id.empty()) {
    // Content a client uploaded: every object is in the store (AddManifest checked it).
    auto manifest = snapshots_.Load(r.snapshot_id);
    if (!manifest.ok()) return manifest.status().WithPrefix(what);
    std::string file = r.file;
    if (one_file && file.empty() && manifest->entries.size() == 1) {
      file = manifest->entries.front().path;
    }
    if (!file.empty()) {
      if (manifest->FindFile(file) == nullptr) {
        return InvalidArgument(what + ": snapshot " + r.snapshot_id + " has no file '" + file +
                               "'");
      }
    } else if (one_file) {
      return InvalidArgument(what + ": a uri_file asset names its file in the snapshot ('file')");
    }
    stored({r.snapshot_id, file, manifest->entries.size(), manifest->TotalBytes()});
    asset["source"] = "uploaded";
  } else if (r.path.front() == '/') {
    // A file or folder of the daemon's machine, read by the daemon as the user's CLI would.
    struct stat st {};
    if (::stat(r.path.c_str(), &st) != 0) {
      return NotFound(what + ": " + r.path + " does not exist on the daemon's machine");
    }
    const bool is_dir = S_ISDIR(st.st_mode);
    if (!is_dir && !S_ISREG(st.st_mode)) {
      return InvalidArgument(what + ": " + r.path + " is neither a file nor a folder");
    }
    if (is_dir && one_file) {
      return InvalidArgument(what + ": " + r.path + " is a folder; a uri_file asset is one file");
    }
    if (!is_dir && (r.type == "uri_folder" || r.type == "mlflow_model")) {
      return InvalidArgument(what + ": " + r.path + " is a file; a " + r.type +
                             " asset is a folder");
    }
    if (is_dir) {
      cas::Snapshotter snapshotter(objects_, snapshots_.snapshots_dir(), stat_cache_dir_);
      cas::SnapshotLimits unlimited;
      unlimited.max_bytes = std::numeric_limits<std::uint64_t>::max();
      unlimited.max_files = std::numeric_limits<std::uint64_t>::max();
      auto snap = snapshotter.Snapshot(r.path, unlimited);
      if (!snap.ok()) return snap.status().WithPrefix(what);
      stored({snap->id, "", snap->file_count, snap->total_bytes});
    } else {
      auto put = objects_.Put(r.path);
      if (!put.ok()) return put.status().WithPrefix(what);
      const std::string file = fs::path(r.path).filename().string();
      auto id = snapshots_.AddManifest(cas::Manifest::OneFile(
          file, put->digest, put->size, (st.st_mode & S_IXUSR) != 0 ? 0755 : 0644));
      if (!id.ok()) return id.status().WithPrefix(what);
      stored({*id, file, 1, put->size});
    }
    asset["source"] = r.path;
  } else {
    auto uri = spec::ParseDataUri(r.path);
    if (!uri.ok()) return uri.status().WithPrefix(what);
    if (uri->kind == DataUri::Kind::kLocalPath) {
      return InvalidArgument(what + ": '" + r.path + "' is a relative path; give an absolute one");
    }
    if (uri->kind == DataUri::Kind::kAsset) {
      return InvalidArgument(what + ": '" + r.path + "' is already an asset; give its content");
    }
    if (uri->kind == DataUri::Kind::kDatastore) {
      auto ds = datastores_.Get(uri->datastore);
      if (!ds.ok()) return ds.status().WithPrefix(what);
    }
    if (uri->kind == DataUri::Kind::kHttp && r.path.find('?') != std::string::npos) {
      // A query may hold a SAS token or a signature: it would be kept and shown in plain text.
      return InvalidArgument(what +
                             ": a URL with a query (?...) cannot be registered: it may "
                             "hold a token; register a datastore with the credentials "
                             "and give its path");
    }
    if (home_ && uri->kind == DataUri::Kind::kDatastore && r.kind == "data") {
      // A datastore is a workspace's: another workspace would read its own of that name.
      return InvalidArgument(what +
                             ": a registry's data asset cannot refer to a workspace's "
                             "datastore; give a local path or a URL (the content is "
                             "then copied into the registry)");
    }
    asset["source"] = r.path;
    if (r.kind == "data" && uri->kind != DataUri::Kind::kRunOutput) {
      // Data stays where it is; runs read it through the data cache.
      if (uri->kind == DataUri::Kind::kHttp && !one_file) {
        return InvalidArgument(what + ": an http(s) URL names one file (type uri_file)");
      }
      storage = {{"uri", r.path}};
    } else {
      // A run's outputs may go when the run is deleted, and a model is downloaded and served
      // from its digests: both are kept by the workspace.
      auto noop = [](std::string_view) {};
      bool as_file = one_file;
      auto captured = run_data_.Capture(what, *uri, as_file, noop);
      if (!captured.ok() && captured.status().code() == StatusCode::kNotFound &&
          r.type == "custom_model" && !uri->path.empty()) {
        captured = run_data_.Capture(what, *uri, /*file=*/true, noop);  // a one-file model
      }
      if (!captured.ok()) return captured.status();
      stored(*captured);
    }
  }
  if (r.type == "mlflow_model" && storage.contains("snapshot_id")) {
    auto manifest = snapshots_.Load(storage["snapshot_id"].get<std::string>());
    if (!manifest.ok()) return manifest.status().WithPrefix(what);
    const bool has_mlmodel =
        std::any_of(manifest->entries.begin(), manifest->entries.end(),
                    [](const cas::ManifestEntry& e) { return e.path == "MLmodel"; });
    if (!has_mlmodel) {
      return InvalidArgument(what + ": an mlflow_model is a folder with an MLmodel file at its " +
                             "top; " + r.path + r.snapshot_id + " has none (use custom_model)");
    }
  }
  if (home_ && storage.contains("snapshot_id")) {
    // The registry keeps the content itself: the workspaces that read it may be others.
    Status copied = CopySnapshot(snapshots_, *home_->snapshots, *home_->objects,
                                 storage["snapshot_id"].get<std::string>());
    if (!copied.ok()) return copied.WithPrefix(what + ": copying into the registry");
  }
  asset["storage"] = storage;

  store::AssetRecord rec;
  rec.kind = r.kind;
  rec.name = r.name;
  rec.asset_json = asset.dump();
  {
    MutexLock lock(create_mu_);
    rec.created_at = NowMillis();
    Status inserted = Status::Ok();
    // A version left out is the next one; another process sharing the database (a registry's
    // other workspaces) may take it first, so it is counted again then.
    for (int attempt = 0; attempt < 5; ++attempt) {
      if (r.version.empty()) {
        TY_ASSIGN_OR_RETURN(rec.version, NextVersion(r.kind, r.name));
      } else {
        rec.version = r.version;
      }
      inserted = store_.InsertAsset(rec);
      if (inserted.code() != StatusCode::kAlreadyExists || !r.version.empty()) break;
    }
    if (inserted.code() == StatusCode::kAlreadyExists) return VersionTaken(what, rec.version);
    TY_RETURN_IF_ERROR(inserted);
  }
  if (!r.label.empty()) {
    TY_RETURN_IF_ERROR(store_.SetAssetLabel(r.kind, r.name, r.label, rec.version));
  }
  TY_ASSIGN_OR_RETURN(store::AssetRecord back, store_.GetAsset(r.kind, r.name, rec.version));
  return View(back);
}

StatusOr<std::string> Catalog::NextVersion(const std::string& kind, const std::string& name) {
  TY_ASSIGN_OR_RETURN(std::vector<store::AssetRecord> versions, store_.ListAssets(kind, name));
  return std::to_string(HighestNumber(versions) + 1);
}

StatusOr<store::AssetRecord> Catalog::Find(const std::string& kind, const std::string& name,
                                           const std::string& version, const std::string& label) {
  const std::string what = AssetKindName(kind);
  TY_ASSIGN_OR_RETURN(std::vector<store::AssetRecord> versions, store_.ListAssets(kind, name));
  if (versions.empty()) {
    TY_ASSIGN_OR_RETURN(std::vector<store::AssetRecord> all, store_.ListAssets(kind, ""));
    std::vector<std::string> names;
    for (const auto& a : all) names.push_back(a.name);
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return NotFound(what + " '" + name + "' does not exist; the workspace's " + what +
                    "s: " + (names.empty() ? "none" : Join(names, ", ")));
  }
  if (!version.empty()) {
    for (auto& v : versions) {
      if (v.version == version) return std::move(v);
    }
    return NotFound(what + " " + name + ":" + version +
                    " does not exist; its versions: " + VersionList(versions));
  }
  if (!label.empty() && label != "latest") {
    for (auto& v : versions) {
      if (std::find(v.labels.begin(), v.labels.end(), label) != v.labels.end()) {
        return std::move(v);
      }
    }
    std::vector<std::string> labels;
    for (const auto& v : versions) {
      for (const auto& l : v.labels) labels.push_back(l + " (" + v.version + ")");
    }
    return NotFound(what + " " + name + " has no label '" + label +
                    "'; its labels: " + (labels.empty() ? "none" : Join(labels, ", ")));
  }
  for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
    if (!it->archived) return std::move(*it);
  }
  return NotFound("every version of " + what + " " + name +
                  " is archived; name one (versions: " + VersionList(versions) + ")");
}

StatusOr<json> Catalog::Get(const std::string& kind, const std::string& name,
                            const std::string& version, const std::string& label) {
  TY_ASSIGN_OR_RETURN(store::AssetRecord rec, Find(kind, name, version, label));
  return View(rec);
}

StatusOr<json> Catalog::List(const std::string& kind, const std::string& name,
                             bool include_archived) {
  TY_ASSIGN_OR_RETURN(std::vector<store::AssetRecord> all, store_.ListAssets(kind, name));
  json out = json::array();
  if (!name.empty()) {
    if (all.empty()) return Find(kind, name, "", "").status();  // NotFound naming what exists
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      if (include_archived || !it->archived) out.push_back(View(*it));
    }
    return out;
  }
  // The newest listed version of each name, by name.
  std::map<std::string, const store::AssetRecord*> newest;
  for (const auto& a : all) {
    if (include_archived || !a.archived) newest[a.name] = &a;
  }
  for (const auto& [n, a] : newest) out.push_back(View(*a));
  return out;
}

StatusOr<json> Catalog::SetArchived(const std::string& kind, const std::string& name,
                                    const std::string& version, bool archived) {
  TY_ASSIGN_OR_RETURN(store::AssetRecord rec, Find(kind, name, version, ""));
  TY_RETURN_IF_ERROR(store_.SetAssetArchived(kind, name, rec.version, archived));
  rec.archived = archived;
  return View(rec);
}

StatusOr<json> Catalog::SetLabel(const std::string& kind, const std::string& name,
                                 const std::string& version, const std::string& label) {
  TY_RETURN_IF_ERROR(CheckLabel(label));
  TY_ASSIGN_OR_RETURN(store::AssetRecord rec, Find(kind, name, version, ""));
  TY_RETURN_IF_ERROR(store_.SetAssetLabel(kind, name, label, rec.version));
  TY_ASSIGN_OR_RETURN(store::AssetRecord back, store_.GetAsset(kind, name, rec.version));
  return View(back);
}

StatusOr<AssetSource> Catalog::Resolve(const std::string& kind, const std::string& name,
                                       const std::string& version, const std::string& label,
                                       const std::string& input_type) {
  TY_ASSIGN_OR_RETURN(store::AssetRecord rec, Find(kind, name, version, label));
  const json asset = json::parse(rec.asset_json, nullptr, false);
  if (!asset.is_object()) {
    return Internal(AssetKindName(kind) + " " + name + ":" + rec.version + " is unreadable");
  }
  AssetSource src;
  src.kind = kind;
  src.name = rec.name;
  src.version = rec.version;
  src.type = asset.value("type", "");
  src.id = AssetId(home_ ? home_->registry : "", kind, rec.name, rec.version);
  const std::string& ref = src.id;
  const bool fits = kind == "model" ? IsModelType(input_type) &&
                                          (input_type == "custom_model" || src.type == input_type)
                                    : input_type.empty() || input_type == src.type;
  if (!fits) {
    return InvalidArgument(ref + " is a " + src.type + " " + AssetKindName(kind) +
                           "; the input is of type " + input_type);
  }
  const json storage = asset.value("storage", json::object());
  // What the record says is checked before a run sees it: a registry's database is a file other
  // workspaces write.
  const std::string bad = ref + " has unusable storage";
  if (storage.contains("snapshot_id")) {
    RunData::Captured c;
    c.snapshot_id = storage.value("snapshot_id", "");
    c.file = storage.value("file", "");
    c.files = storage.value("files", std::uint64_t{0});
    c.bytes = storage.value("bytes", std::uint64_t{0});
    if (home_) {
      // Read by a run of this workspace: into the workspace's stores first.
      Status copied = CopySnapshot(*home_->snapshots, snapshots_, objects_, c.snapshot_id);
      if (!copied.ok()) return copied.WithPrefix(ref);
    }
    if (!c.file.empty()) {
      TY_ASSIGN_OR_RETURN(cas::Manifest manifest, snapshots_.Load(c.snapshot_id));
      if (manifest.FindFile(c.file) == nullptr) {
        return Internal(bad + ": no file '" + c.file + "' in its snapshot");
      }
    }
    src.stored = c;
  } else {
    src.uri = storage.value("uri", "");
    auto uri = spec::ParseDataUri(src.uri);
    const bool remote = uri.ok() && uri->kind != DataUri::Kind::kLocalPath &&
                        uri->kind != DataUri::Kind::kAsset &&
                        uri->kind != DataUri::Kind::kRunOutput &&
                        !(home_ && uri->kind == DataUri::Kind::kDatastore);
    if (!remote) return Internal(bad + ": '" + src.uri.substr(0, 200) + "'");
  }
  return src;
}

json Catalog::View(const store::AssetRecord& record) const {
  json out = json::parse(record.asset_json, nullptr, false);
  if (!out.is_object()) out = json::object();
  out["kind"] = record.kind;
  out["name"] = record.name;
  out["version"] = record.version;
  if (home_) out["registry"] = home_->registry;
  out["id"] = AssetId(home_ ? home_->registry : "", record.kind, record.name, record.version);
  out["archived"] = record.archived;
  out["labels"] = record.labels;
  out["created_at"] = FormatTimeIso(record.created_at);
  return out;
}

}  // namespace trainyard::assets

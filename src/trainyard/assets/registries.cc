#include "trainyard/assets/registries.h"

#include <sys/stat.h>
#include <unistd.h>

#include "trainyard/common/clock.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard::assets {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kRegistryFile = "registry.json";

// The name a registry folder says it holds, "" when it holds none yet.
StatusOr<std::string> FolderName(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path / kRegistryFile, ec)) return std::string();
  TY_ASSIGN_OR_RETURN(std::string text, ReadFile(path / kRegistryFile));
  const json j = json::parse(text, nullptr, false);
  if (!j.is_object() || !j.value("name", json()).is_string()) {
    return InvalidArgument((path / kRegistryFile).string() + " is not a registry's description");
  }
  return j["name"].get<std::string>();
}

// A registry's folder is trusted content (environments, models, their secrets): it must be the
// daemon user's and writable by no one else, as a workspace is.
Status CheckFolder(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return NotFound("registry folder " + path.string() + " does not exist");
  }
  if (!S_ISDIR(st.st_mode)) {
    return InvalidArgument("registry folder " + path.string() + " is not a folder");
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 022) != 0) {
    return FailedPrecondition("registry folder " + path.string() + " is not yours alone (owner " +
                              std::to_string(st.st_uid) + ", writable by group or others): " +
                              "another user could change what it holds; make it yours with "
                              "mode 0755 or stricter");
  }
  return Status::Ok();
}

}  // namespace

Registries::Registries(store::Store& store, cas::ObjectStore& objects, cas::Snapshotter& snapshots,
                       Datastores& datastores, RunData& run_data, fs::path stat_cache_dir)
    : store_(store),
      objects_(objects),
      snapshots_(snapshots),
      datastores_(datastores),
      run_data_(run_data),
      stat_cache_dir_(std::move(stat_cache_dir)) {}

Registries::~Registries() = default;

StatusOr<std::unique_ptr<Registry>> Registries::OpenFolder(const std::string& name,
                                                           const fs::path& path) {
  const std::string what = "registry " + name + " (" + path.string() + ")";
  TY_ASSIGN_OR_RETURN(std::string held, FolderName(path));
  if (held.empty()) return NotFound(what + ": the folder holds no registry");
  if (held != name) {
    return InvalidArgument(what + ": the folder holds registry '" + held + "'");
  }
  auto r = std::make_unique<Registry>();
  r->name = name;
  r->path = path;
  for (const char* sub : {"cas", "snapshots"}) {
    if (Status st = MakeDirs(path / sub); !st.ok()) return st.WithPrefix(what);
  }
  auto store = store::OpenSqliteStore((path / "registry.db").string());
  if (!store.ok()) return store.status().WithPrefix(what);
  r->store = std::move(*store);
  r->objects = std::make_unique<cas::ObjectStore>(path / "cas");
  r->snapshots = std::make_unique<cas::Snapshotter>(*r->objects, path / "snapshots");
  auto secrets = SecretBox::Open(path / "secret.key");
  if (!secrets.ok()) return secrets.status().WithPrefix(what);
  r->secrets = std::make_unique<SecretBox>(std::move(*secrets));
  r->environments = std::make_unique<envbuild::EnvironmentRegistry>(*r->store, *r->secrets);
  const CatalogHome home{name, r->store.get(), r->objects.get(), r->snapshots.get()};
  r->catalog = std::make_unique<Catalog>(store_, objects_, snapshots_, datastores_, run_data_,
                                         stat_cache_dir_, &home);
  return r;
}

StatusOr<json> Registries::Attach(const std::string& name, const std::string& path_text) {
  if (!IsValidName(name)) {
    return InvalidArgument("invalid registry name '" + name +
                           "': letters, digits, '.', '_' and '-', starting with a letter or digit");
  }
  const fs::path path = fs::path(path_text).lexically_normal();
  if (path_text.empty() || !path.is_absolute()) {
    return InvalidArgument("a registry's path is an absolute folder, not '" + path_text + "'");
  }
  MutexLock lock(mu_);
  std::string outcome = "attached";
  TY_ASSIGN_OR_RETURN(std::string held, FolderName(path));
  if (held.empty()) {
    std::error_code ec;
    const bool fresh = !fs::exists(path, ec);
    if (Status st = MakeDirs(path); !st.ok()) return st.WithPrefix("registry " + name);
    if (fresh) ::chmod(path.c_str(), 0750);
    json desc = {{"name", name}, {"created_at", FormatTimeIso(NowMillis())}};
    if (Status st = WriteFileAtomic(path / kRegistryFile, desc.dump(2) + "\n"); !st.ok()) {
      return st.WithPrefix("registry " + name);
    }
    outcome = "created";
  } else if (held != name) {
    return InvalidArgument(path.string() + " holds registry '" + held + "', not '" + name +
                           "'; give its name, or another folder");
  }
  TY_RETURN_IF_ERROR(CheckFolder(path));
  std::unique_ptr<Registry> opened;
  if (auto it = open_.find(name); it == open_.end() || it->second->path != path) {
    TY_ASSIGN_OR_RETURN(opened, OpenFolder(name, path));
  }
  auto existing = store_.GetRegistry(name);
  if (existing.ok()) {
    const json def = json::parse(existing->definition_json, nullptr, false);
    if (def.is_object() && def.value("path", "") == path.string() && outcome == "attached") {
      outcome = "unchanged";
    }
  }
  store::RegistryRecord rec;
  rec.name = name;
  rec.type = "folder";
  rec.definition_json = json{{"path", path.string()}}.dump();
  rec.created_at = existing.ok() ? existing->created_at : NowMillis();
  rec.updated_at = NowMillis();
  TY_RETURN_IF_ERROR(store_.PutRegistry(rec));
  if (opened) {
    if (auto it = open_.find(name); it != open_.end()) retired_.push_back(std::move(it->second));
    open_[name] = std::move(opened);
  }
  return json{{"name", name}, {"path", path.string()}, {"outcome", outcome}};
}

StatusOr<Registry*> Registries::Open(const std::string& name) {
  auto rec = store_.GetRegistry(name);
  if (!rec.ok()) {
    if (rec.status().code() != StatusCode::kNotFound) return rec.status();
    TY_ASSIGN_OR_RETURN(std::vector<store::RegistryRecord> all, store_.ListRegistries());
    std::vector<std::string> names;
    for (const auto& r : all) names.push_back(r.name);
    return NotFound("registry '" + name + "' does not exist in this workspace; its registries: " +
                    (names.empty() ? "none (trainyard registry create --name N --path DIR)"
                                   : Join(names, ", ")));
  }
  const json def = json::parse(rec->definition_json, nullptr, false);
  const fs::path path = def.is_object() ? fs::path(def.value("path", "")) : fs::path();
  MutexLock lock(mu_);
  auto it = open_.find(name);
  // An opened registry stays open (a run may be reading from it) even when detached.
  if (it != open_.end() && it->second->path == path) return it->second.get();
  TY_RETURN_IF_ERROR(CheckFolder(path));
  TY_ASSIGN_OR_RETURN(std::unique_ptr<Registry> opened, OpenFolder(name, path));
  Registry* r = opened.get();
  if (it != open_.end()) {
    retired_.push_back(std::move(it->second));
    it->second = std::move(opened);
  } else {
    open_[name] = std::move(opened);
  }
  return r;
}

json Registries::Summary(Registry& r) {
  json out = {{"name", r.name}, {"path", r.path.string()}};
  auto envs = r.store->ListEnvironments("");
  auto data = r.store->ListAssets("data", "");
  auto models = r.store->ListAssets("model", "");
  out["environments"] = envs.ok() ? envs->size() : 0;
  out["data"] = data.ok() ? data->size() : 0;
  out["models"] = models.ok() ? models->size() : 0;
  return out;
}

StatusOr<json> Registries::List() {
  TY_ASSIGN_OR_RETURN(std::vector<store::RegistryRecord> all, store_.ListRegistries());
  json out = json::array();
  for (const auto& rec : all) {
    auto r = Open(rec.name);
    if (!r.ok()) {
      const json def = json::parse(rec.definition_json, nullptr, false);
      out.push_back({{"name", rec.name},
                     {"path", def.is_object() ? def.value("path", "") : ""},
                     {"error", r.status().message()}});
      continue;
    }
    out.push_back(Summary(**r));
  }
  return out;
}

StatusOr<json> Registries::Describe(const std::string& name) {
  TY_ASSIGN_OR_RETURN(Registry * r, Open(name));
  return Summary(*r);
}

Status Registries::Detach(const std::string& name) {
  TY_RETURN_IF_ERROR(Open(name).status());
  return store_.DeleteRegistry(name);
}

StatusOr<store::EnvironmentRecord> Registries::PublishEnvironment(const std::string& name,
                                                                  spec::EnvironmentDefinition def) {
  TY_ASSIGN_OR_RETURN(Registry * r, Open(name));
  if (!def.build_context.empty()) {
    Status copied = CopySnapshot(snapshots_, *r->snapshots, *r->objects, def.build_context);
    if (!copied.ok()) return copied.WithPrefix("build context of " + def.name);
  }
  return r->environments->Register(std::move(def));
}

StatusOr<spec::EnvironmentDefinition> Registries::ImportEnvironment(const std::string& registry,
                                                                    const std::string& name,
                                                                    const std::string& version) {
  TY_ASSIGN_OR_RETURN(Registry * r, Open(registry));
  auto def = r->environments->Resolve(name, version);
  if (!def.ok()) {
    auto versions = r->store->ListEnvironments(name);
    std::vector<std::string> names;
    if (versions.ok()) {
      for (const auto& v : *versions) names.push_back(v.version);
    }
    if (def.status().code() == StatusCode::kNotFound) {
      return NotFound("environment " + name + (version.empty() ? "" : ":" + version) +
                      " is not in registry " + registry + "; its versions of " + name + ": " +
                      (names.empty() ? "none" : Join(names, ", ")));
    }
    return def.status().WithPrefix("registry " + registry);
  }
  if (!def->build_context.empty()) {
    Status copied = CopySnapshot(*r->snapshots, snapshots_, objects_, def->build_context);
    if (!copied.ok()) {
      return copied.WithPrefix("environment " + name + " of registry " + registry);
    }
  }
  // The workspace keeps it under a name of its own, so it never becomes a version of the
  // workspace's environment of the same name.
  def->name = registry + "." + name;
  def->version.clear();
  return def;
}

}  // namespace trainyard::assets

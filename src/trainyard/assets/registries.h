#pragma once

// Registries: catalogs of environments, data assets and models that several workspaces share
// (docs/data.md, "Registries").
//
// A registry is a folder: `registry.json` (its name), `registry.db` (a store of the workspace's
// schema: environments, assets), `cas/` and `snapshots/` (content, as a workspace keeps it) and
// `secret.key` (seals the registry passwords of its environments). Any workspace that can reach
// the folder (the same machine, or a shared file system) attaches it by name and path; what one
// publishes the others read. A version's content lives in the registry, and is copied into a
// workspace's stores when one of its runs reads it.

#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainyard/assets/catalog.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/envbuild/environment_registry.h"

namespace trainyard::assets {

// An opened registry.
struct Registry {
  std::string name;
  std::filesystem::path path;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<cas::ObjectStore> objects;
  std::unique_ptr<cas::Snapshotter> snapshots;
  std::unique_ptr<SecretBox> secrets;
  std::unique_ptr<envbuild::EnvironmentRegistry> environments;
  std::unique_ptr<Catalog> catalog;  // its data assets and models
};

// The registries of a workspace. Thread-safe; borrows everything, which must outlive it.
class Registries {
 public:
  Registries(store::Store& store, cas::ObjectStore& objects, cas::Snapshotter& snapshots,
             Datastores& datastores, RunData& run_data, std::filesystem::path stat_cache_dir);
  ~Registries();

  // Creates the registry `name` in folder `path` (absolute; made when missing), or attaches the
  // one already there, and records it in the workspace. InvalidArgument for a bad name or a
  // relative path, or when the folder holds a registry of another name; answers
  // {"name", "path", "outcome": "created" | "attached" | "unchanged"}.
  StatusOr<nlohmann::json> Attach(const std::string& name, const std::string& path);
  // {"name", "path", "environments", "data", "models"} per registry, by name.
  StatusOr<nlohmann::json> List();
  StatusOr<nlohmann::json> Describe(const std::string& name);
  // Forgets the registry in this workspace; its folder and content stay.
  Status Detach(const std::string& name);

  // The opened registry `name`: NotFound naming the workspace's registries.
  StatusOr<Registry*> Open(const std::string& name);

  // Publishes an environment definition made in this workspace (its build context a snapshot
  // of the workspace) to registry `name`: the context is copied into the registry.
  StatusOr<store::EnvironmentRecord> PublishEnvironment(const std::string& name,
                                                        spec::EnvironmentDefinition def);
  // The definition of an environment of registry `registry` (version empty: the latest) ready to
  // register in this workspace: its build context copied into the workspace's stores, its
  // registry password unsealed (the workspace seals it again), its version left to the
  // workspace. NotFound naming the registry's versions.
  StatusOr<spec::EnvironmentDefinition> ImportEnvironment(const std::string& registry,
                                                          const std::string& name,
                                                          const std::string& version);

 private:
  StatusOr<std::unique_ptr<Registry>> OpenFolder(const std::string& name,
                                                 const std::filesystem::path& path);
  nlohmann::json Summary(Registry& r);

  store::Store& store_;
  cas::ObjectStore& objects_;
  cas::Snapshotter& snapshots_;
  Datastores& datastores_;
  RunData& run_data_;
  const std::filesystem::path stat_cache_dir_;
  Mutex mu_;
  std::map<std::string, std::unique_ptr<Registry>> open_ GUARDED_BY(mu_);
  // Registries replaced in open_ (attached again at another folder): kept open, since a request
  // may still be using them.
  std::vector<std::unique_ptr<Registry>> retired_ GUARDED_BY(mu_);
};

}  // namespace trainyard::assets

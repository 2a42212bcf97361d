#pragma once

// The workspace's catalog of data assets and models (docs/data.md, "Data assets and models").
//
// A version is immutable once created. Its content is either kept by the workspace,
// content-addressed in the object store the code snapshots use (a local file or folder, a
// run's outputs, and every model whatever its source), or, for a data asset registered from
// an address (a datastore path, https://, wasbs://, abfss://, s3://), that address, which a run
// reads through the data cache. Versions are strings; one left out is the next integer after
// the highest integer version of the name. `latest` is the newest version not archived, and a
// label (`production`) names the version it was last set on.

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "trainyard/assets/datastores.h"
#include "trainyard/assets/run_data.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/status.h"
#include "trainyard/store/store.h"

namespace trainyard::assets {

// What `data create` and `model create` ask for.
struct AssetRequest {
  std::string kind;  // "data" | "model"
  std::string name;
  std::string version;  // empty: the next one
  // data: uri_file | uri_folder; model: custom_model | mlflow_model (models are folders, or one
  // file for custom_model).
  std::string type;
  // Exactly one source:
  //  - `snapshot_id` (and `file` for one file): content a client already stored (uploaded);
  //  - `path`: an absolute path of the daemon's machine, which the daemon reads itself, or an
  //    address: azureml://datastores/..., azureml://jobs/<run>/outputs/artifacts/paths/...,
  //    runs:/<run>/<path>, https://, wasbs://, abfss://, s3://.
  std::string snapshot_id;
  std::string file;
  std::string path;
  std::string description;
  std::map<std::string, std::string> tags;
  std::map<std::string, std::string> properties;
  // The run it comes from, when the source is not a run's address (the SDK's
  // run.register_model with a path of that run).
  std::string run;
  // Set on the new version when given.
  std::string label;
};

// Where a catalog other than the workspace's keeps its versions: a registry's database and
// content stores (assets/registries.h).
struct CatalogHome {
  std::string registry;  // its name, for ids and messages
  store::Store* store = nullptr;
  cas::ObjectStore* objects = nullptr;
  cas::Snapshotter* snapshots = nullptr;
};

// Copies snapshot `id` (its manifest and the objects it names, each checked against its digest
// as it is stored) from one store to another; objects the destination has are not copied again.
Status CopySnapshot(const cas::Snapshotter& from, cas::Snapshotter& to,
                    cas::ObjectStore& to_objects, const std::string& id);

// Where a version's content is, for a run to read it.
struct AssetSource {
  std::string kind, name, version, type;
  std::string id;                           // AssetId: what a run records it read
  std::optional<RunData::Captured> stored;  // kept by the workspace
  std::string uri;                          // otherwise: the address it was registered from
};

// Thread-safe. Borrows everything; all must outlive it.
class Catalog {
 public:
  // `store`, `objects` and `snapshots` are the workspace's: its runs, and where content is read
  // into. With a `home` (a registry), versions are kept there instead: content is copied into
  // the home's stores when registered and back into the workspace's when a run reads it.
  Catalog(store::Store& store, cas::ObjectStore& objects, cas::Snapshotter& snapshots,
          Datastores& datastores, RunData& run_data, std::filesystem::path stat_cache_dir,
          const CatalogHome* home = nullptr);

  // Registers a new version and returns its JSON (ToJson). InvalidArgument naming the field for
  // a bad name, version, type or source; NotFound for a source that does not exist (a file, a
  // snapshot, a datastore, a run); AlreadyExists for a version that exists ("versions are
  // immutable"); the fetch's errors for a model from an address.
  StatusOr<nlohmann::json> Create(const AssetRequest& request);

  // One version: `version`, else the version `label` names ("latest" or a label set), else
  // the latest. NotFound naming what exists.
  StatusOr<nlohmann::json> Get(const std::string& kind, const std::string& name,
                               const std::string& version, const std::string& label = "");
  // Every version of `name` (empty: the latest version of every name), newest first; archived
  // ones only when `include_archived`.
  StatusOr<nlohmann::json> List(const std::string& kind, const std::string& name,
                                bool include_archived);
  // Archives (hides from list and `latest`; still usable by name:version) or restores.
  StatusOr<nlohmann::json> SetArchived(const std::string& kind, const std::string& name,
                                       const std::string& version, bool archived);
  // Points `label` at a version. InvalidArgument for "latest" (not settable) or a bad label.
  StatusOr<nlohmann::json> SetLabel(const std::string& kind, const std::string& name,
                                    const std::string& version, const std::string& label);

  // Whether a new version `name`:`version` (version empty: the next one) of `kind` and `type`
  // can be registered: InvalidArgument for a bad name, version or type, AlreadyExists when the
  // version is taken ("versions are immutable"). Checked by Create, and at submit for outputs a
  // run will register.
  Status CheckNew(const std::string& kind, const std::string& name, const std::string& version,
                  const std::string& type);

  // The version an input names, for `kind` "data" or "model": NotFound naming the versions
  // that exist; InvalidArgument when the version's type does not fit `input_type` (a uri_file
  // asset given as uri_folder, a data asset as a model).
  StatusOr<AssetSource> Resolve(const std::string& kind, const std::string& name,
                                const std::string& version, const std::string& label,
                                const std::string& input_type);

 private:
  StatusOr<store::AssetRecord> Find(const std::string& kind, const std::string& name,
                                    const std::string& version, const std::string& label);
  StatusOr<std::string> NextVersion(const std::string& kind, const std::string& name);
  StatusOr<nlohmann::json> Store(const AssetRequest& request);
  nlohmann::json View(const store::AssetRecord& record) const;

  store::Store& ws_store_;  // the workspace's: runs
  store::Store& store_;     // where versions are kept: the workspace's, or the home's
  cas::ObjectStore& objects_;
  cas::Snapshotter& snapshots_;
  Datastores& datastores_;
  RunData& run_data_;
  const std::filesystem::path stat_cache_dir_;
  const std::optional<CatalogHome> home_;
  Mutex create_mu_;  // one new version at a time: "the next version" is then well defined
};

using store::AssetKindName;

// How a version is named in job files: azureml:<name>:<version>, or for a registry's
// azureml://registries/<registry>/(models|data)/<name>/versions/<version>.
std::string AssetId(const std::string& registry, const std::string& kind, const std::string& name,
                    const std::string& version);

}  // namespace trainyard::assets

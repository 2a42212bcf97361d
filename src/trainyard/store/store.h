#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/store/records.h"

namespace trainyard::store {

// Metadata persistence of a workspace. Implementations: SqliteStore (embedded default).
// Thread-safe: every method may be called from any thread.
class Store {
 public:
  virtual ~Store() = default;

  // Creates the experiment when missing. InvalidArgument for an invalid name.
  virtual Status EnsureExperiment(const std::string& name) = 0;
  virtual StatusOr<std::vector<std::string>> ListExperiments() = 0;

  // Inserts a new version. AlreadyExists when (name, version) is taken.
  virtual Status InsertEnvironment(const EnvironmentRecord& env) = 0;
  // `version` empty: the latest (highest created). NotFound naming name[:version].
  virtual StatusOr<EnvironmentRecord> GetEnvironment(const std::string& name,
                                                     const std::string& version) = 0;
  // Replaces the stored definition JSON of an existing version (used to rotate a sealed
  // registry password, which does not enter the definition hash). NotFound when missing.
  virtual Status UpdateEnvironmentDefinition(const std::string& name, const std::string& version,
                                             const std::string& definition_json) = 0;
  // Every version of `name`, oldest first (empty name: every environment).
  virtual StatusOr<std::vector<EnvironmentRecord>> ListEnvironments(const std::string& name) = 0;

  // Inserts a compute target, or replaces the one of the same name (keeping its created_at).
  virtual Status PutCompute(const ComputeRecord& compute) = 0;
  // NotFound "compute target 'NAME' does not exist".
  virtual StatusOr<ComputeRecord> GetCompute(const std::string& name) = 0;
  // Ordered by name.
  virtual StatusOr<std::vector<ComputeRecord>> ListComputes() = 0;
  // NotFound when there is no such compute target.
  virtual Status DeleteCompute(const std::string& name) = 0;

  // Inserts a datastore, or replaces the one of the same name (keeping its created_at). The
  // definition's secrets are sealed by the caller.
  virtual Status PutDatastore(const DatastoreRecord& datastore) = 0;
  // NotFound "datastore 'NAME' does not exist".
  virtual StatusOr<DatastoreRecord> GetDatastore(const std::string& name) = 0;
  // Ordered by name.
  virtual StatusOr<std::vector<DatastoreRecord>> ListDatastores() = 0;
  // NotFound when there is no such datastore.
  virtual Status DeleteDatastore(const std::string& name) = 0;

  // Records a registry the workspace uses, or replaces the one of that name.
  virtual Status PutRegistry(const RegistryRecord& registry) = 0;
  // NotFound "registry 'NAME' does not exist".
  virtual StatusOr<RegistryRecord> GetRegistry(const std::string& name) = 0;
  // Ordered by name.
  virtual StatusOr<std::vector<RegistryRecord>> ListRegistries() = 0;
  // NotFound when there is no such registry.
  virtual Status DeleteRegistry(const std::string& name) = 0;

  // Inserts a version of an asset. AlreadyExists "<kind> NAME:VERSION already exists".
  virtual Status InsertAsset(const AssetRecord& asset) = 0;
  // NotFound "<kind> NAME:VERSION does not exist".
  virtual StatusOr<AssetRecord> GetAsset(const std::string& kind, const std::string& name,
                                         const std::string& version) = 0;
  // Every version of `name` (empty: of every name), in the order they were created.
  virtual StatusOr<std::vector<AssetRecord>> ListAssets(const std::string& kind,
                                                        const std::string& name) = 0;
  // NotFound when there is no such version.
  virtual Status SetAssetArchived(const std::string& kind, const std::string& name,
                                  const std::string& version, bool archived) = 0;
  // Points `label` of `name` at `version` (moving it from another version). NotFound when
  // there is no such version.
  virtual Status SetAssetLabel(const std::string& kind, const std::string& name,
                               const std::string& label, const std::string& version) = 0;

  // Inserts a run with its first transition. AlreadyExists for a taken id.
  virtual Status InsertRun(const RunRecord& run) = 0;
  virtual StatusOr<RunRecord> GetRun(const std::string& id) = 0;
  // Newest first. The records' request_json is left empty (GetRun has it): a page of runs does
  // not show it, and `command` is there.
  virtual StatusOr<std::vector<RunRecord>> ListRuns(const RunFilter& filter) = 0;
  // Runs in any of the non-terminal states, oldest first.
  virtual StatusOr<std::vector<RunRecord>> ListActiveRuns() = 0;

  // Records a transition (and its time) durably before it takes effect. FailedPrecondition when
  // the run is already terminal (a terminal state is never left).
  virtual Status TransitionRun(const std::string& id, RunStatus to, std::int64_t at) = 0;
  // Updates the mutable fields: image_hash, image, exit_code, failure_reason, container_id,
  // environment name/version. Status and transitions are not touched.
  virtual Status UpdateRun(const RunRecord& run) = 0;
  // Sets the fields given in `fields` and no other, in one statement (no read first).
  // NotFound for an unknown run.
  virtual Status SetRunFields(const std::string& id, const RunFields& fields) = 0;
  // Sets the tags in `set` (new or replaced), then removes those in `remove` (a name the run
  // does not have is fine), all or none. InvalidArgument naming the limit when the run would then
  // have more than `max_tags` tags; NotFound for an unknown run.
  virtual Status UpdateRunTags(const std::string& id, const std::map<std::string, std::string>& set,
                               const std::vector<std::string>& remove,
                               std::uint64_t max_tags = UINT64_MAX) = 0;

  // Adds immutable properties, all or none: AlreadyExists naming the key when one exists with
  // another value (the same value again is accepted). InvalidArgument naming the limit when the
  // run would then have more than `max_properties`. NotFound for an unknown run.
  virtual Status AddRunProperties(const std::string& id,
                                  const std::map<std::string, std::string>& properties,
                                  std::uint64_t max_properties = UINT64_MAX) = 0;
  // The run's properties (empty when none). NotFound for an unknown run.
  virtual StatusOr<std::map<std::string, std::string>> GetRunProperties(const std::string& id) = 0;

  // Records the script's own verdict (`status` Completed or Failed; the last call wins), read
  // back as RunRecord::script_status/script_message. InvalidArgument for another status;
  // NotFound for an unknown run.
  virtual Status SetScriptVerdict(const std::string& id, RunStatus status,
                                  const std::string& message) = 0;
};

struct StoreOptions {
  // Transitions to Starting and to a final state reach the disk before they return
  // (synchronous=FULL). Off only where a benchmark measures what that costs.
  bool durable_transitions = true;
};

// Opens (creating when missing) the SQLite store at `path` and applies pending migrations.
// ":memory:" gives an in-memory store for tests.
StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                 StoreOptions options = {});

}  // namespace trainyard::store

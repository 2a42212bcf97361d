#pragma once

// The records the workspace keeps: experiments, environments, runs and their transitions.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trainyard::store {

// The life of a run (REFERENCE.md, "States").
enum class RunStatus {
  kNotStarted,
  kQueued,
  kPreparing,
  kStarting,
  kRunning,
  kFinalizing,
  kCancelRequested,
  kCompleted,
  kFailed,
  kCanceled,
};

std::string_view RunStatusName(RunStatus s);  // "Running"
std::optional<RunStatus> ParseRunStatus(std::string_view name);
bool IsTerminal(RunStatus s);

struct EnvironmentRecord {
  std::string name;
  std::string version;
  std::string definition_json;  // spec::EnvironmentDefinition JSON, secrets sealed
  std::string definition_hash;  // decides "same definition" when registering again
  std::string image_hash;       // what shapes the image; names the image trainyard/env:<hash>
  std::int64_t created_at = 0;  // unix millis
};

// A compute target: where runs execute (spec::ComputeDefinition holds its settings).
// A named definition kept as JSON: compute targets, datastores and registries.
struct DefinitionRecord {
  std::string name;
  std::string type;             // computes: "docker" | "process" | "slurm"; datastores: "local" ...
  std::string definition_json;  // spec::ComputeDefinition / spec::DatastoreDefinition JSON
  std::int64_t created_at = 0;  // unix millis
  std::int64_t updated_at = 0;
};
using ComputeRecord = DefinitionRecord;
using DatastoreRecord = DefinitionRecord;
using RegistryRecord = DefinitionRecord;  // type "folder"; definition_json {"path": ...}

// "data asset" for kind "data", else the kind ("model", "component"): how messages name one.
std::string AssetKindName(std::string_view kind);

// A version of a catalogued asset: a data asset, a model or a command component
// (assets::Catalog). The asset itself is kept as JSON; the columns are what lookups need.
struct AssetRecord {
  std::string kind;  // "data" | "model" | "component"
  std::string name;
  std::string version;
  std::string asset_json;  // assets::Asset JSON
  bool archived = false;
  std::int64_t created_at = 0;      // unix millis
  std::vector<std::string> labels;  // read only: the labels that name this version
};

struct RunTransition {
  RunStatus status;
  std::int64_t at = 0;  // unix millis
};

struct RunRecord {
  std::string id;  // also the run's name in the CLI
  std::string experiment;
  std::string display_name;
  std::string description;
  std::string compute;
  RunStatus status = RunStatus::kNotStarted;
  std::string request_json;  // the submitted job, as the daemon received it (secrets sealed)
  std::string command;       // request_json's "command" when it is a string; read, not written
  std::string snapshot_id;
  std::string environment_name;
  std::string environment_version;
  std::string image_hash;
  std::string image;  // the image reference the run used
  std::optional<int> exit_code;
  std::string failure_reason;
  std::string container_id;
  std::map<std::string, std::string> tags;
  // The script's own verdict (POST /jobs/{run}/status, the SDK's complete()/fail()): Completed
  // or Failed, absent when it gave none. A Failed verdict makes the run end Failed with
  // "failed by the script: <script_message>" whatever its exit code.
  std::optional<RunStatus> script_status;
  std::string script_message;
  std::vector<RunTransition> transitions;  // oldest first
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;

  // Time of the first transition into `s`, or 0.
  std::int64_t TimeOf(RunStatus s) const;
};

// Fields of a run to change (Store::SetRunFields), each only when given; their meaning is
// RunRecord's.
struct RunFields {
  std::optional<std::string> image_hash;
  std::optional<std::string> image;
  std::optional<int> exit_code;
  std::optional<std::string> failure_reason;
  std::optional<std::string> container_id;
};

struct RunFilter {
  std::string experiment;  // empty: all
  int limit = 100;
};

}  // namespace trainyard::store

#pragma once

// The resolved forms the CLI sends and the daemon stores: local paths are replaced by content
// (snapshot ids of folders), so a definition means the same thing on any machine.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "trainyard/common/status.h"
#include "trainyard/spec/spec.h"

namespace trainyard::spec {

// How ToJson treats a registry password.
enum class SecretMode {
  kPlain,   // the password as is (only on the wire from CLI to daemon, over loopback)
  kRedact,  // "***" (API responses)
  kAsIs,    // the stored text, which the daemon has sealed before storing
};

// A registry's credentials as JSON: {"address", "username", "password"}, the password "***"
// under kRedact when it is set.
nlohmann::json RegistryToJson(const RegistryCredentials& registry, SecretMode mode);

struct EnvironmentDefinition {
  std::string name;
  std::string version;
  std::string description;
  std::string image;                           // a base image reference, or
  std::string build_context;                   // the snapshot id of a build context folder, or
  std::string dockerfile;                      // an inline Dockerfile text
  std::string dockerfile_path = "Dockerfile";  // inside the build context
  std::optional<CondaSpec> conda;
  std::vector<std::string> pip_requirements;
  bool user_managed_dependencies = false;
  std::map<std::string, std::string> environment_variables;
  std::optional<RegistryCredentials> registry;
  std::string platform = "linux/amd64";
  std::map<std::string, std::string> tags;

  nlohmann::json ToJson(SecretMode mode) const;
  // InvalidArgument naming the field when the JSON is not a valid definition.
  static StatusOr<EnvironmentDefinition> FromJson(const nlohmann::json& j);

  // SHA-256 of everything but name, version, description, tags and the password: two
  // registrations with the same hash are the same definition.
  std::string DefinitionHash() const;

  // True when the definition installs Python dependencies in a layer of its own.
  bool HasManagedDependencies() const;
  // The pip requirements to install: the conda file's pip part, then pip_requirements.
  std::vector<std::string> ManagedPipRequirements() const;
};

// Builds a definition from a parsed spec. `build_context_snapshot` is the snapshot id of
// spec.build->path when the spec has a build context (else ignored).
EnvironmentDefinition DefinitionFromSpec(const EnvironmentSpec& spec,
                                         const std::string& build_context_snapshot);

// A job as submitted to the daemon.
struct RunRequest {
  std::string name;  // requested run name; empty: generated
  std::string experiment_name = "Default";
  std::string display_name;
  std::string description;
  std::map<std::string, std::string> tags;
  std::string command;      // before ${{...}} substitution
  std::string snapshot_id;  // the code folder's snapshot; empty: no code
  // The run's code folder is a writable copy of the snapshot; otherwise (the default) it is
  // mounted read-only and its files are hard links to the snapshot's objects.
  bool code_copy = false;
  // Either a registered environment (name, version empty = latest) or an inline definition.
  std::string environment_name;
  std::string environment_version;
  // Set with environment_name: the registry the environment is taken from (azureml://registries/
  // <registry>/environments/<name>/...); the daemon copies it into the workspace at submit.
  std::string environment_registry;
  std::optional<EnvironmentDefinition> environment;
  std::map<std::string, std::string> environment_variables;
  std::map<std::string, InputSpec> inputs;  // uri paths are absolute on the daemon's machine
  std::map<std::string, OutputSpec> outputs;
  std::optional<std::int64_t> timeout_seconds;
  std::optional<std::int64_t> shm_size_bytes;
  int instance_count = 1;
  // Queue order within a compute: higher first, then submission order (spec.h: kPriorityLow..High).
  int priority = 0;
  std::string compute = "local";
  std::optional<DistributionSpec> distribution;

  nlohmann::json ToJson(SecretMode mode) const;
  static StatusOr<RunRequest> FromJson(const nlohmann::json& j);
};

// Builds a request from a parsed job. Registered environment refs are copied; an inline
// environment must be given as `inline_env` (already converted with its context snapshot).
RunRequest RequestFromJob(const JobSpec& job, const std::string& code_snapshot,
                          std::optional<EnvironmentDefinition> inline_env);

}  // namespace trainyard::spec

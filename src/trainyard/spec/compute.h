#pragma once

// Compute targets: where runs execute. `docker` runs each node as a container on the local
// Docker engine; `process` runs the command directly on the host (no container, no image: for
// user-managed environments on the host and for fast tests); `slurm` submits each run as a
// batch job to an existing Slurm cluster, whose tasks run the run's container (docs/slurm.md).
// Created from CLI flags or a YAML file (docs/compute.md).

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/spec/definition.h"

namespace trainyard::spec {

struct ComputeDefinition {
  std::string name;
  std::string type = "docker";  // "docker" | "process" | "slurm"
  int max_nodes = 1;            // nodes runs may hold at once; a run holds instance_count
  // One node's size. 0 means "the machine's": no CPU quota / memory limit is set.
  double node_cpus = 0;
  std::int64_t node_memory_bytes = 0;
  int node_gpus = 0;
  std::int64_t idle_seconds = 0;  // idle time before scale-down (accepted, reported)

  // `slurm` only (and required there: partition). A node's size is the partition's: node_cpus,
  // node_memory_bytes and node_gpus stay 0; GPUs are asked for with gpus_per_node.
  std::string partition;
  std::string account;  // sbatch --account; empty: the user's default
  std::string qos;      // sbatch --qos; empty: the default
  int gpus_per_node = 0;
  std::string container_runtime = "docker";  // the CLI on the nodes: "docker" | "podman"
  std::vector<std::string> sbatch_args;      // passed to sbatch as given
  // Where the environment image is pushed and the nodes pull it from. The password is sealed
  // (SecretBox) once the daemon has it; absent: the nodes use the image as built on the
  // daemon's machine (a cluster whose nodes share its engine, or images pre-seeded).
  std::optional<RegistryCredentials> registry;
  // The folder every node sees at the same path; runs' folders go under it. Empty: the
  // workspace.
  std::string shared_dir;

  // {"name", "type", "max_nodes", "node_cpus", "node_memory_bytes", "node_gpus",
  //  "idle_seconds"} and, for slurm, {"partition", "account", "qos", "gpus_per_node",
  //  "container_runtime", "sbatch_args", "registry": {address, username, password},
  //  "shared_dir"}. kRedact replaces the registry password with "***".
  nlohmann::json ToJson(SecretMode mode = SecretMode::kAsIs) const;
  // InvalidArgument naming the field for a bad or unknown one.
  static StatusOr<ComputeDefinition> FromJson(const nlohmann::json& j);
  // Checks every field: a valid name (IsValidName), a known type, 1 <= max_nodes <= 10000,
  // node_cpus >= 0, node_memory_bytes >= 0 (a set memory of at least 6 MiB, Docker's floor),
  // 0 <= node_gpus <= 64, idle_seconds >= 0; `process` computes have no GPUs; a `slurm` compute
  // has a partition, a runtime of docker or podman, an absolute shared_dir when one is given, a
  // complete registry when one is given, and no node size; the slurm fields are empty for the
  // other types. InvalidArgument naming the field otherwise.
  Status Validate() const;
  // The slurm part of Validate.
  Status ValidateSlurm() const;
  // True when every setting (not the name) is the same. A registry password is compared as
  // given: callers compare unsealed passwords.
  bool SameSettings(const ComputeDefinition& other) const;
};

// What the daemon's machine has: its CPUs, memory and NVIDIA GPUs (the folders under
// `nvidia_gpus_dir`, one per GPU the kernel driver knows; none without the driver).
struct MachineSize {
  double cpus = 1;
  std::int64_t memory_bytes = 0;  // 0: unknown
  int gpus = 0;
};
inline constexpr std::string_view kNvidiaGpusDir = "/proc/driver/nvidia/gpus";
MachineSize ThisMachine(const std::filesystem::path& nvidia_gpus_dir = kNvidiaGpusDir);

// The `local` compute that exists by default: the local Docker engine, one node sized to the
// machine (its CPU count and memory; no GPUs, which a compute asks for explicitly: a run that
// requests GPUs fails on an engine without the NVIDIA runtime).
ComputeDefinition DefaultLocalCompute();

// Parses a compute YAML file (docs/compute.md). Errors are InvalidArgument "FILE:LINE:COL:
// message" like the job file's.
StatusOr<ComputeDefinition> ParseComputeFile(const std::string& path);
StatusOr<ComputeDefinition> ParseComputeYaml(const std::string& yaml, const std::string& file_name);

}  // namespace trainyard::spec

#pragma once

// Compute targets: where runs execute. `docker` runs each node as a container on the local
// Docker engine; `process` runs the command directly on the host (no container, no image: for
// user-managed environments on the host and for fast tests). Created from CLI flags or a YAML
// file (docs/compute.md).

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "trainyard/common/status.h"

namespace trainyard::spec {

struct ComputeDefinition {
  std::string name;
  std::string type = "docker";  // "docker" | "process"
  int max_nodes = 1;            // nodes runs may hold at once; a run holds instance_count
  // One node's size. 0 means "the machine's": no CPU quota / memory limit is set.
  double node_cpus = 0;
  std::int64_t node_memory_bytes = 0;
  int node_gpus = 0;
  std::int64_t idle_seconds = 0;  // idle time before scale-down (accepted, reported)

  // {"name", "type", "max_nodes", "node_cpus", "node_memory_bytes", "node_gpus",
  //  "idle_seconds"}
  nlohmann::json ToJson() const;
  // InvalidArgument naming the field for a bad or unknown one.
  static StatusOr<ComputeDefinition> FromJson(const nlohmann::json& j);
  // Checks every field: a valid name (IsValidName), a known type, 1 <= max_nodes <= 10000,
  // node_cpus >= 0, node_memory_bytes >= 0 (a set memory of at least 6 MiB, Docker's floor),
  // 0 <= node_gpus <= 64, idle_seconds >= 0; `process` computes have no GPUs. InvalidArgument
  // naming the field otherwise.
  Status Validate() const;
  // True when every setting (not the name) is the same.
  bool SameSettings(const ComputeDefinition& other) const;
};

// The `local` compute that exists by default: the local Docker engine, one node sized to the
// machine (its CPU count and memory).
ComputeDefinition DefaultLocalCompute();

// Parses a compute YAML file (docs/compute.md). Errors are InvalidArgument "FILE:LINE:COL:
// message" like the job file's.
StatusOr<ComputeDefinition> ParseComputeFile(const std::string& path);
StatusOr<ComputeDefinition> ParseComputeYaml(const std::string& yaml, const std::string& file_name);

}  // namespace trainyard::spec

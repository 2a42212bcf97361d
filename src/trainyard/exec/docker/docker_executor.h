#pragma once

#include <map>
#include <string>

#include "trainyard/common/status.h"
#include "trainyard/docker/engine.h"
#include "trainyard/exec/node_executor.h"

namespace trainyard::exec {

// Runs nodes as containers on a Docker engine (borrowed; must outlive the executor).
class DockerExecutor : public NodeExecutor {
 public:
  explicit DockerExecutor(docker::Engine& engine) : engine_(engine) {}

  StatusOr<std::string> Launch(const LaunchSpec& spec) override;
  using NodeExecutor::StreamLogs;
  // Positions are the engine's message timestamps (docker::LogPosition).
  Status StreamLogs(const std::string& handle, const std::string& from,
                    const PositionedSink& sink) override;
  StatusOr<ExitInfo> Wait(const std::string& handle) override;
  Status Stop(const std::string& handle, int grace_seconds) override;
  StatusOr<bool> IsRunning(const std::string& handle) override;
  Status Cleanup(const std::string& handle) override;
  Status CreateNetwork(const std::string& name,
                       const std::map<std::string, std::string>& labels) override;
  Status RemoveNetwork(const std::string& name) override;
  Status Ping() override { return engine_.Ping(); }
  StatusOr<bool> HasEnded(const std::string& handle) override;
  StatusOr<NodeLabels> Labels(const std::string& handle) override;

 private:
  docker::Engine& engine_;
};

}  // namespace trainyard::exec

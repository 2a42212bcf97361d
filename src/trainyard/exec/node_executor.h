#pragma once

// A node executor starts, follows, stops and removes the nodes of runs one node at a time: a
// container on a Docker engine (exec/docker/docker_executor.h) or a process on this host
// (exec/process/process_executor.h). The run executors of those computes (RunExecutor,
// exec/run_executor.h) drive them; they own no run state.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/docker/engine.h"

namespace trainyard::exec {

// Everything needed to start one node of a run.
struct LaunchSpec {
  std::string run_id;
  std::string name;  // a unique, human-readable name for the container/process
  std::string image;
  std::vector<std::string> argv;  // the command, e.g. {"/bin/sh", "-c", "python train.py"}
  std::vector<std::string> env;   // "KEY=VALUE"
  std::string working_dir;
  std::vector<docker::Mount> mounts;
  // A multi-node run's nodes share a network of their own, where each is reachable by its
  // hostname (and aliases). Empty: the default network.
  std::string network;
  std::string hostname;
  std::vector<std::string> network_aliases;
  std::int64_t shm_size_bytes = 0;
  // The node's size (0: no limit): CPU quota in billionths of a CPU, memory limit, and the
  // machine's GPUs it gets (device ids). A process executor enforces none of them.
  std::int64_t nano_cpus = 0;
  std::int64_t memory_bytes = 0;
  std::vector<std::string> gpu_device_ids;
  // Processes and threads the node may have at once (a fork bomb stops there); 0: no limit.
  std::int64_t pids_limit = 0;
  // The engine's own copy of the output is rotated at this size, four files kept (trainyard
  // keeps the run's log itself, and a follower more than three files behind would lose the
  // middle); 0: the engine's defaults.
  std::int64_t engine_log_max_bytes = 0;
  std::map<std::string, std::string> labels;
  // Search-path variables to extend rather than replace: for each (VAR, DIR), the node sees
  // VAR=DIR followed by ":" and the value it would otherwise have (from `env`, else from the
  // image's own environment), so e.g. the SDK joins an image's PYTHONPATH instead of hiding it.
  std::map<std::string, std::string> prepend_paths;
};

// How a launched node ended.
struct ExitInfo {
  int exit_code = 0;
  bool oom_killed = false;
};

// Receives a node's output with the position just after it (an opaque string to resume from).
using PositionedSink = std::function<void(std::string_view data, const std::string& position)>;

// Thread-safe. Handles are opaque strings (a container id for DockerExecutor).
class NodeExecutor {
 public:
  virtual ~NodeExecutor() = default;
  // Creates and starts the node. Returns its handle.
  virtual StatusOr<std::string> Launch(const LaunchSpec& spec) = 0;
  // Streams the node's output from just after `from` (a position `sink` was given before; ""
  // for the first byte) into `sink` until the node ends. InvalidArgument for a malformed `from`.
  virtual Status StreamLogs(const std::string& handle, const std::string& from,
                            const PositionedSink& sink) = 0;
  // The node's output from its first byte, without positions.
  Status StreamLogs(const std::string& handle, const docker::TextSink& sink) {
    return StreamLogs(handle, "", [&sink](std::string_view data, const std::string&) {
      if (sink) sink(data);
    });
  }
  // Blocks until the node ends.
  virtual StatusOr<ExitInfo> Wait(const std::string& handle) = 0;
  // Asks the node to stop (SIGTERM), killing it after `grace_seconds`.
  virtual Status Stop(const std::string& handle, int grace_seconds) = 0;
  // True while the node runs; NotFound when it vanished.
  virtual StatusOr<bool> IsRunning(const std::string& handle) = 0;
  // Removes what the node left behind. OK when nothing is left.
  virtual Status Cleanup(const std::string& handle) = 0;
  // The network of a multi-node run's nodes (LaunchSpec::network), made before they launch and
  // removed after they are cleaned up. OK when it exists / is gone. Executors whose nodes share
  // the host's network need none.
  virtual Status CreateNetwork(const std::string& /*name*/,
                               const std::map<std::string, std::string>& /*labels*/) {
    return Status::Ok();
  }
  virtual Status RemoveNetwork(const std::string& /*name*/) { return Status::Ok(); }
  // The labels the node was launched with (LaunchSpec::labels), read back from where it runs,
  // so that a node of another workspace or run that happens to have the same name is never
  // stopped, removed or followed. NotFound when it does not exist; nullopt for executors whose
  // nodes no one else can have (the process executor keeps them in the workspace's folder).
  using NodeLabels = std::optional<std::map<std::string, std::string>>;
  virtual StatusOr<NodeLabels> Labels(const std::string& /*handle*/) { return NodeLabels(); }
  // OK while whatever runs the nodes answers (the Docker engine); Unavailable otherwise.
  virtual Status Ping() { return Status::Ok(); }
  // True when the node was started and has ended (its exit code is known), false while it runs
  // or when it was made but never started; NotFound when it vanished.
  virtual StatusOr<bool> HasEnded(const std::string& handle) {
    TY_ASSIGN_OR_RETURN(bool running, IsRunning(handle));
    return !running;
  }
};

}  // namespace trainyard::exec

#pragma once

// ProcessExecutor runs a node as a plain process on the host (the `process` compute type). Each
// node runs under trainyard-shim (exec/process/shim_main.cc), a small program the daemon starts
// with posix_spawn in a session of its own, which starts the node, waits for it and records its
// exit status in the node's state folder, so a node outlives a daemon crash and a restarted
// daemon, given the same state folder, finds it again.

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/exec/node_executor.h"

namespace trainyard::exec {

// The shim's records (the state folder below), parsed with bounds: what is in them is written by
// processes of the run's user, so it is not trusted further than that.
struct PidRecord {
  pid_t pid = 0;
  unsigned long long start_time = 0;
  std::string boot_id;
};
// "<pid> <start time> [<boot id>]"; nullopt when malformed.
std::optional<PidRecord> ParsePidRecord(std::string_view text);
// {"exit_code": N, ...}; InvalidArgument when malformed.
StatusOr<ExitInfo> ParseExitRecord(std::string_view text);

struct ProcessExecutorOptions {
  // Holds one subfolder per launched node, `<state_dir>/<node name>/`, with:
  //   node.json   run_id, labels, argv, working_dir (for a later daemon to see what it belongs to)
  //   output.log  the node's stdout and stderr
  //   shim.pid    "<pid> <start time> <boot id>" of the shim (written by the daemon)
  //   child.pid   "<pid> <start time>" of the node's process, also its process group (by the shim)
  //   exit        {"exit_code":N,"signal":S} once the node ended (by the shim, atomically)
  // Created when missing.
  std::filesystem::path state_dir;
  // The trainyard-shim program. Empty: found beside the running program, in ../libexec/trainyard
  // from it, or where this build made it, in that order.
  std::filesystem::path shim;
};

// Runs nodes as host processes. The handle of a node is its name (LaunchSpec::name); everything
// else is read from the state folder, so a new executor on the same state_dir (e.g. in a restarted
// daemon) can wait for, stream, stop and clean up nodes launched by an earlier one.
//
// LaunchSpec for a process: argv[0] is searched in the PATH of the node's environment (the
// daemon's environment overlaid with `env`, then `prepend_paths`); `working_dir` is a host folder;
// `image` and `shm_size_bytes` are ignored; `mounts` must be empty.
//
// Thread-safe: the executor keeps no mutable state; all of it lives in the state folders.
class ProcessExecutor : public NodeExecutor {
 public:
  explicit ProcessExecutor(ProcessExecutorOptions options);

  // Starts the node and returns its handle (the node name). InvalidArgument for an invalid name,
  // an empty argv, a missing working_dir, mounts or a malformed env entry; AlreadyExists when the
  // node's state folder exists; FailedPrecondition when trainyard-shim is nowhere to be found. A
  // command that cannot be executed is not an error here: the node exits with 127 and says why in
  // its log.
  StatusOr<std::string> Launch(const LaunchSpec& spec) override;
  // Streams output.log from its first byte until the node has ended and the log is drained.
  // NotFound when there is no such node.
  using NodeExecutor::StreamLogs;
  // Positions are byte offsets into the node's output file.
  Status StreamLogs(const std::string& handle, const std::string& from,
                    const PositionedSink& sink) override;
  // Blocks until the node ends; its exit code, or 128+N when killed by signal N (oom_killed is
  // always false). NotFound when there is no such node or its shim vanished without recording
  // an exit status.
  StatusOr<ExitInfo> Wait(const std::string& handle) override;
  // SIGTERM to the node's process group, SIGKILL to it after `grace_seconds`; returns once the
  // exit status is recorded. OK when the node already ended. NotFound when there is no such node
  // or its shim vanished; DeadlineExceeded when even SIGKILL did not end it within seconds.
  Status Stop(const std::string& handle, int grace_seconds) override;
  // True while the node runs, false once it ended. NotFound when there is no such node or its
  // shim vanished without recording an exit status.
  StatusOr<bool> IsRunning(const std::string& handle) override;
  // Kills the node if it still runs (no grace) and removes its state folder. OK when nothing is
  // left.
  Status Cleanup(const std::string& handle) override;

  // The handles of every node with a state folder (running or ended), sorted.
  StatusOr<std::vector<std::string>> ListNodes();

 private:
  ProcessExecutorOptions options_;
  std::filesystem::path shim_;  // empty when not found: Launch says where it looked
  std::string boot_id_;  // this boot's /proc/sys/kernel/random/boot_id; pids of another are gone
};

}  // namespace trainyard::exec

#pragma once

// A run executor runs a whole run on one kind of compute target: `docker` (exec/docker/),
// `process` (exec/process/) or `slurm` (exec/slurm/). The scheduler (sched/) decides when a run
// starts and what its final state is; an executor decides where the run's folders, image and
// nodes are and how they start, end, stop and are found again after a restart. The scheduler
// holds one executor per compute type (ExecutorRegistry) and knows no compute type itself.
//
// The life of a run as an executor sees it:
//   CheckFit        at submit: can the compute ever hold it (Slurm: the partition's nodes)?
//   WorkFolderOf    where the scheduler materialises the code, and how
//   Launch          nodes started (a LaunchedRun); moves the run to Starting itself
//   Follow          logs written, Running reported, cancel and timeout carried out, until
//                   every node ended
//   Release         nodes removed, what the run wrote brought back into the workspace
//   Recover         a previous daemon's run found again (attached), or not launched
// Cancel and timeout reach a launched run through its RunControl; every state it reaches goes
// through its RunHost, which persists it before anyone sees it.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/clock.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/status.h"
#include "trainyard/spec/compute.h"
#include "trainyard/spec/definition.h"
#include "trainyard/spec/spec.h"
#include "trainyard/store/store.h"

namespace trainyard::exec {

// Everything an executor needs to run one run. Made by the scheduler once per attempt: the
// environment is resolved (and its password unsealed) once, here.
struct RunPlan {
  std::string run_id;
  spec::RunRequest request;
  // The compute target as stored (a registry password stays sealed).
  spec::ComputeDefinition compute;
  // The run's environment, resolved; its variables reach every node. Its registry password is
  // dropped once the image is made.
  spec::EnvironmentDefinition environment;
  // The image built for it; empty for executors that need none (NeedsImage).
  std::string image;
  std::string image_hash;
  // The workspace: its root and short id (Scheduler::WorkspaceId), which name the run's
  // containers, networks and jobs so two workspaces sharing an engine or a cluster never meet.
  std::filesystem::path workspace_root;
  std::string workspace_id;
  // The run's folder in the workspace: outputs/, logs/, user_logs/ (and code/ unless the
  // executor works elsewhere, WorkFolderOf).
  std::filesystem::path run_dir;
  int nodes = 1;
  // The compute's node slots it holds, one per node (GPU k of a node slot s is the machine's
  // s * node_gpus + k).
  std::vector<int> slots;
  // How the run reports its metrics, files and status: the run's token (made just before
  // Launch; empty in Recover, where no node is started), and an address on the
  // network (with the certificate to trust it by, "" for the system's) when the daemon serves
  // beyond loopback. An executor whose nodes may be other machines uses the address; the others
  // use the daemon's socket.
  std::string run_token;
  std::string network_tracking_url;
  std::string network_tracking_ca;
};

// How a run ends in the scheduler's words: its final state and reason.
struct Verdict {
  store::RunStatus status = store::RunStatus::kFailed;
  std::string reason;
};

// What Follow learned about the end of a run. The scheduler decides the final state in this
// order: canceled, timed out (RunControl), `compute_verdict`, the script's own verdict (it
// called fail()), `exit_verdict`, outputs that could not be collected, else Completed.
struct RunEnd {
  // The exit code the run is recorded with, when known.
  std::optional<int> exit_code;
  // The compute's account of the end, which outranks the script's: its nodes were lost, Slurm
  // ended the job, the image could not be pulled.
  std::optional<Verdict> compute_verdict;
  // The end as the exit told it (a non-zero code, the kernel's OOM killer, a signal), which the
  // script's own fail() outranks.
  std::optional<Verdict> exit_verdict;
  // The daemon is shutting down: the run goes on without it, and the next daemon recovers it.
  bool detached = false;
};

// Cancel and timeout of a run, and why it waits: asked for by the scheduler, carried out and
// told by the executor. `cv` is signalled whenever a field changes.
struct RunControl {
  Mutex mu;
  std::condition_variable cv;
  bool cancel_requested GUARDED_BY(mu) = false;
  bool timed_out GUARDED_BY(mu) = false;
  // Why the compute holds a launched run back (e.g. "Slurm job 42 pending: Resources").
  std::string wait_reason GUARDED_BY(mu);

  bool CancelRequested() {
    MutexLock lock(mu);
    return cancel_requested;
  }
};

// When a run's timeout (RunRequest::timeout_seconds, counted from `running_since`, unix millis
// on `clock`) is up, on `clock`'s steady time; nullopt for a run without one.
std::optional<Clock::TimePoint> TimeoutDeadline(const RunPlan& plan, std::int64_t running_since,
                                                Clock& clock);

// The scheduler's side of a run, for its executor: valid for the call it is passed to (Launch,
// Follow, Release, Recover), not to be kept beyond it. Thread-safe.
class RunHost {
 public:
  virtual ~RunHost() = default;
  // Records the run's new state (persisted, then told to listeners). Running also starts the
  // run's timeout clock.
  virtual Status Transition(store::RunStatus to) = 0;
  virtual store::RunStatus status() = 0;
  // When the run started Running (unix millis), 0 before.
  virtual std::int64_t running_since() = 0;
  // The run's logs changed (listeners follow them).
  virtual void LogsChanged() = 0;
  // Records what the run is known by where it runs (a container, a Slurm job), so a later
  // daemon and `job show` find it.
  virtual void RecordHandle(const std::string& handle) = 0;
  // Records the image the run's nodes actually run (e.g. the pushed copy in a registry).
  virtual void RecordImage(const std::string& image) = 0;
  // Appends to the run's image build log.
  virtual void BuildLog(std::string_view text) = 0;
  // What the run's timeout is measured and waited on (the scheduler's clock).
  virtual Clock& clock() = 0;
  // True once the daemon shuts down: a follower may return at once with RunEnd::detached.
  virtual bool ShuttingDown() = 0;
  virtual RunControl& control() = 0;
};

// A run whose nodes were launched (or found again after a restart).
class LaunchedRun {
 public:
  virtual ~LaunchedRun() = default;
  // Follows the run until every node ended: writes its logs (user_logs/std_log.txt, and one
  // per node for several), reports its states, stops the nodes on cancel, timeout or a failed
  // node. `resume` (a recovered run): carries on with the logs where a previous daemon's
  // followers stopped.
  virtual RunEnd Follow(RunHost& host, bool resume) = 0;
  // After Finalizing is recorded: removes the nodes and brings what the run wrote back into
  // the run's folder. An error means the outputs could not be kept ("cannot collect the
  // outputs: ...").
  virtual Status Release(RunHost& host) = 0;
};

// Where the scheduler lays out a run's code before Launch.
struct WorkFolder {
  std::filesystem::path dir;  // holds code/, outputs/, logs/ (the run's folder, or elsewhere)
  // The code is a writable copy of the snapshot rather than hard links to its objects.
  bool copy_code = false;
  // ./outputs and ./logs in the code folder are links to the run's folders (no mounts), rather
  // than empty folders the nodes mount them over.
  bool link_outputs = false;
};

// Thread-safe: one executor serves every run of its compute type at once.
class RunExecutor {
 public:
  virtual ~RunExecutor() = default;

  // Checks a compute target of this type when it is created or changed (e.g. that its Slurm
  // partition exists): InvalidArgument naming what is wrong.
  virtual Status CheckCompute(const spec::ComputeDefinition& /*compute*/) { return Status::Ok(); }
  // Whether `req` could ever start on `compute` beyond its node count (the scheduler checks
  // that): InvalidArgument saying why not.
  virtual Status CheckFit(const spec::ComputeDefinition& /*compute*/,
                          const spec::RunRequest& /*req*/) {
    return Status::Ok();
  }
  // Whether runs need an image built (and a build log).
  virtual bool NeedsImage() const { return true; }
  virtual WorkFolder WorkFolderOf(const RunPlan& plan) const = 0;

  // Starts the run's nodes, moving it to Starting (and, when its nodes run at once, Running).
  // An error is the reason the run fails with ("could not start the run: ..."); when the run
  // was canceled meanwhile it ends Canceled instead.
  virtual StatusOr<std::unique_ptr<LaunchedRun>> Launch(const RunPlan& plan, RunHost& host) = 0;

  // Finds the nodes a previous daemon launched for `plan`'s run (in state `status`, known there
  // as `handle`, RecordHandle). The run to follow when they run or ran to their end; NotFound
  // when they were never launched (or vanished), so the run starts again or ends by its
  // record; another error when whatever runs them cannot be asked now (the run then stays as it
  // is until a daemon can ask).
  virtual StatusOr<std::unique_ptr<LaunchedRun>> Recover(const RunPlan& plan, RunHost& host,
                                                         store::RunStatus status,
                                                         const std::string& handle) = 0;

  // What the compute's own scheduler says about it (`compute show`): e.g. a Slurm partition's
  // nodes and queue. Null when there is nothing beyond trainyard's own queue.
  virtual nlohmann::json ClusterStatus(const spec::ComputeDefinition& /*compute*/) {
    return nullptr;
  }
};

// The executors of a daemon, by compute type ("docker", "process", "slurm"). Borrowed.
class ExecutorRegistry {
 public:
  void Add(const std::string& type, RunExecutor* executor) { executors_[type] = executor; }
  // nullptr when this daemon cannot run computes of `type`.
  RunExecutor* Find(const std::string& type) const {
    auto it = executors_.find(type);
    return it == executors_.end() ? nullptr : it->second;
  }

 private:
  std::map<std::string, RunExecutor*> executors_;
};

// Options every executor shares (from workspace.json).
struct ExecutorOptions {
  int stop_grace_seconds = 10;  // SIGTERM → SIGKILL on cancel and timeout
  // Processes and threads a container node may have at once; 0: no limit.
  std::int64_t container_pids_limit = 32'768;
  // Size at which the engine rotates a container's own log.
  std::int64_t container_log_max_bytes = 256 << 20;
  // Run tracking from inside runs (docs/tracking.md). `sdk_dir`: the host folder of the Python
  // package (sdk/python), first on the run's PYTHONPATH. `socket_dir`: the host folder holding
  // the daemon's API socket `api.sock` (the folder, so a restarted daemon's new socket is
  // seen). Either may be empty: that part is then not offered to runs.
  std::filesystem::path sdk_dir;
  std::filesystem::path socket_dir;
};

// Names of a run's files, relative to its folder.
inline constexpr const char* kStdLog = "user_logs/std_log.txt";
inline constexpr const char* kBuildLog = "logs/image_build.log";
// Node `i`'s log (runs of several nodes).
std::string NodeLogName(int i);
// "trainyard-<workspace id>-<run>": the container of a one-node run, the network of a
// multi-node one, the Slurm job of a run. The workspace id keeps two workspaces that share an
// engine or a cluster (and both run a job named `baseline`) apart.
std::string ContainerName(const std::string& workspace_id, const std::string& run_id);
// Processes the command runs as on each node (distribution.process_count_per_instance).
int ProcessesPerNode(const spec::RunRequest& req);
// Whether a run's code folder is read-only to it (hard links to the snapshot's objects).
bool CodeIsReadOnly(const spec::RunRequest& req);
// What a failure reason adds when the script wrote into its read-only code folder (the run's
// log says "Read-only file system"); "" otherwise.
std::string ReadOnlyCodeHint(const RunPlan& plan);

}  // namespace trainyard::exec

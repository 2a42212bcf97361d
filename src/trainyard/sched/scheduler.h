#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "trainyard/cas/snapshot.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/workspace.h"
#include "trainyard/envbuild/image_builder.h"
#include "trainyard/exec/executor.h"
#include "trainyard/slurm/slurm.h"
#include "trainyard/spec/compute.h"
#include "trainyard/spec/definition.h"
#include "trainyard/store/store.h"

namespace trainyard::sched {

struct SchedulerOptions {
  int stop_grace_seconds = 10;  // SIGTERM → SIGKILL on cancel and timeout
  // Processes and threads a container node may have at once (workspace.json
  // container_pids_limit); 0: no limit.
  std::int64_t container_pids_limit = 32'768;
  // Size at which the engine rotates a container's own log (workspace.json
  // container_log_max_bytes).
  std::int64_t container_log_max_bytes = 256 << 20;
  // Run tracking from inside containers (docs/tracking.md). `sdk_dir`: the host folder of the
  // Python package (sdk/python), mounted read-only at /trainyard/sdk/python and put first on
  // PYTHONPATH. `socket_dir`: the host folder holding the daemon's API socket `api.sock`,
  // mounted at /trainyard/sock (the folder, so a restarted daemon's new socket is seen). Either
  // may be empty: that part is then not offered to runs.
  std::filesystem::path sdk_dir;
  std::filesystem::path socket_dir;
  // Called in Finalizing, after the node is gone and before the final state, to record the
  // run's ./outputs (in the daemon: hashed into the tracking store). Returns warnings about
  // files it skipped (each written to the run's log, the run still completes). An error fails a
  // run that would otherwise complete: "cannot collect the outputs: ...". Unset: nothing is
  // recorded.
  std::function<StatusOr<std::vector<std::string>>(const std::string& run_id,
                                                   const std::filesystem::path& run_dir)>
      collect_outputs;
  // Runs the nodes of `process` computes; unset: such computes cannot be created.
  exec::Executor* process_executor = nullptr;
  // max_nodes of the `local` compute when the scheduler creates it (it exists by default).
  int local_max_nodes = 1;
  // The cluster of `slurm` computes; unset: such computes cannot be created.
  slurm::Client* slurm = nullptr;
  // The engine images are built on, to push them to a slurm compute's registry.
  docker::Engine* engine = nullptr;
  // How often Slurm is asked how the jobs of running runs are doing.
  int slurm_poll_ms = 500;
};

// Registers environments with versions. Same definition under the same name → the existing
// version; a changed one → the next version. Secrets are sealed before they are stored.
class EnvironmentRegistry {
 public:
  EnvironmentRegistry(store::Store& store, const SecretBox& secrets)
      : store_(store), secrets_(secrets) {}

  // `def.version` empty: the latest version when the definition is unchanged, else the next
  // integer version. Given: AlreadyExists when that version holds a different definition.
  StatusOr<store::EnvironmentRecord> Register(spec::EnvironmentDefinition def);
  // The definition of a stored environment with its password unsealed (for building only).
  StatusOr<spec::EnvironmentDefinition> Resolve(const std::string& name,
                                                const std::string& version);
  // Converts a stored record's definition to API JSON (password redacted).
  static nlohmann::json ToApiJson(const store::EnvironmentRecord& rec);

 private:
  StatusOr<spec::EnvironmentDefinition> ResolveRecord(const store::EnvironmentRecord& rec);

  store::Store& store_;
  const SecretBox& secrets_;
  Mutex mu_;  // serialises Register's read-then-insert
};

// A queued run as `compute show` lists it.
struct QueuedRun {
  std::string run_id;
  int nodes = 1;
  int priority = 0;
  std::int64_t queued_at = 0;  // unix millis
  // Why it has not started, e.g. "waiting for 2 nodes (1 of 4 free)", "waiting for its image
  // build", "behind run X (priority 10)".
  std::string wait_reason;
};

// The `get_status` view of one compute target.
struct ComputeStatus {
  spec::ComputeDefinition definition;
  int busy_nodes = 0;
  int idle_nodes = 0;
  std::vector<std::string> running;  // runs holding nodes (Preparing..Finalizing), oldest first
  std::vector<QueuedRun> queued;     // in the order they will start
  // A slurm compute's cluster as Slurm reports it: {"partition", "nodes": [{name, state, cpus,
  // alloc_cpus, memory_mb, gpus}], "jobs": [{job_id, name, run, state, reason, nodes}] (the
  // partition's queue, every user's), "error" when Slurm could not be asked}. Null otherwise.
  nlohmann::json cluster;
};

// Drives runs through NotStarted → Queued → Preparing → Starting → Running → Finalizing →
// Completed | Failed | Canceled. Each transition is persisted before it takes effect.
//
// Each compute target has a queue: higher priority first, then submission order. A queued run
// starts when its image is built (builds run while runs wait, once per image, holding no nodes)
// and its instance_count nodes are free; a ready run that does not fit holds back every run
// behind it, so a large run is never starved by small ones. A run holds its nodes from
// Preparing to its end and has a worker thread while it does; queued runs have none.
// Thread-safe.
class Scheduler {
 public:
  // Every reference is borrowed and must outlive the scheduler.
  Scheduler(store::Store& store, EnvironmentRegistry& environments, envbuild::ImageBuilder& builder,
            exec::Executor& executor, const cas::Snapshotter& snapshots, const SecretBox& secrets,
            WorkspaceLayout layout, SchedulerOptions options);
  // Joins every worker and build. A daemon that must exit while runs go on
  // exits the process instead: runs outlive the daemon and Recover() picks them up.
  ~Scheduler();

  // Called (from any thread) whenever a run's state or logs change.
  void SetChangeListener(std::function<void(const std::string& run_id)> listener);

  // When the daemon serves beyond loopback: the address Slurm runs report to instead of the
  // socket (nodes may be other machines), and the PEM certificate they trust it by ("" for the
  // system's authorities). Thread-safe; applies to runs launched afterwards.
  void SetNetworkTracking(std::string url, std::string ca_pem);

  // Picks up the runs a previous daemon left active: queued and preparing runs start again,
  // running containers are re-attached (their log is re-read from the start, so nothing is
  // duplicated), finished containers are finalised with their real exit code, and runs whose
  // container vanished fail with a reason.
  Status Recover();

  // Validates and admits a run. InvalidArgument for a bad request, NotFound for an unknown
  // environment or snapshot, AlreadyExists for a taken run name.
  StatusOr<store::RunRecord> Submit(spec::RunRequest request);

  // Compute targets. PutCompute creates `def`, or returns the stored one when its settings are
  // the same (create-or-attach); a name that exists with other settings is AlreadyExists naming
  // them, unless `update`, which applies the new settings to runs started from then on.
  // `*created` tells whether it was new. InvalidArgument for an invalid definition.
  StatusOr<spec::ComputeDefinition> PutCompute(spec::ComputeDefinition def, bool update,
                                               bool* created = nullptr);
  StatusOr<std::vector<spec::ComputeDefinition>> ListComputes();
  // NotFound naming it.
  StatusOr<ComputeStatus> GetComputeStatus(const std::string& name);
  // FailedPrecondition while runs are active on it (naming them) or for `local`; NotFound
  // naming it.
  Status DeleteCompute(const std::string& name);

  // Cancels a run in any non-terminal state. FailedPrecondition when it already ended.
  Status Cancel(const std::string& run_id);

  // The Slurm job of a run on a slurm compute, once submitted (kept in its container_id as
  // "slurm:<id>").
  static std::optional<std::int64_t> SlurmJobOf(const store::RunRecord& rec);
  static constexpr const char* kSlurmJobPrefix = "slurm:";

  // Why an active run waits: in its compute's queue (as QueuedRun::wait_reason), or in Slurm's
  // ("Slurm job 42 pending: Resources"). Empty when it does not wait.
  std::string WaitReason(const std::string& run_id);

  // When a run token handed to a run submitted as `req` at `now_ms` expires (unix seconds):
  // after the run's timeout (at most 30 days) plus an hour.
  static std::int64_t RunTokenExpiry(const spec::RunRequest& req, std::int64_t now_ms);

  // A short id of the workspace at `root` (12 hex digits of a hash of its path): in container,
  // network and Slurm job names ("trainyard-<id>-<run>"), job comments and shared folders.
  static std::string WorkspaceId(const std::filesystem::path& root);

  // Names of a run's log files, relative to its folder.
  static constexpr const char* kStdLog = "user_logs/std_log.txt";
  static constexpr const char* kBuildLog = "logs/image_build.log";

 private:
  struct RunContext;
  struct BuildTask;
  // One compute target's live state. Guarded by mu_.
  struct ComputeState {
    spec::ComputeDefinition def;
    // Node slots: the run holding each, empty when free. Grows with max_nodes; a slot beyond a
    // lowered max_nodes is no longer handed out.
    std::vector<std::string> slots;
    int busy = 0;
    // Queued runs in start order: higher priority first, then submission order.
    std::map<std::pair<int, std::uint64_t>, std::shared_ptr<RunContext>> queue;
  };

  // The compute's state, loading it from the store when first used.
  StatusOr<ComputeState*> ComputeLocked(const std::string& name) REQUIRES(mu_);
  // Why a queued run waits (see QueuedRun::wait_reason).
  std::string WaitReasonLocked(const ComputeState& c, const RunContext& ctx,
                               const RunContext* blocker) const REQUIRES(mu_);
  // Puts an admitted run in its compute's queue; starts its image build when it needs one.
  // NotFound when its compute does not exist.
  Status EnqueueLocked(std::shared_ptr<RunContext> ctx) REQUIRES(mu_);
  // Starts the queued runs of `c` that are ready and fit, in queue order; a ready run that does
  // not fit stops the walk (no run overtakes it).
  void DispatchLocked(ComputeState& c) REQUIRES(mu_);
  // Builds (or finds) the image of `ctx`'s environment while it waits in the queue, once per
  // image for every run that needs it.
  void PrebuildLocked(const std::shared_ptr<RunContext>& ctx) REQUIRES(mu_);
  void RunBuild(std::shared_ptr<BuildTask> task);
  void ReleaseNodes(RunContext& ctx);
  exec::Executor& ExecutorFor(const RunContext& ctx);
  // Whether node `handle` is run `run_id`'s of this workspace, by the labels it was launched
  // with: false when it does not exist or belongs to someone else (never to be stopped or
  // removed); an error when the executor cannot be asked.
  StatusOr<bool> OwnsNode(exec::Executor& executor, const std::string& handle,
                          const std::string& run_id);

  // Sets where the run goes (compute, its kind, shared folder, nodes) from the compute's
  // definition.
  void PlaceLocked(RunContext& ctx, const spec::ComputeDefinition& def) REQUIRES(mu_);
  // A re-attached run holds its nodes again.
  void HoldNodesLocked(RunContext& ctx) REQUIRES(mu_);
  void StartWorkerLocked(std::shared_ptr<RunContext> ctx) REQUIRES(mu_);
  // Joins the workers that have returned.
  void ReapWorkersLocked() REQUIRES(mu_);
  void Work(std::shared_ptr<RunContext> ctx);
  // Prepares, launches and follows the run; returns the final state and reason.
  void Execute(RunContext& ctx);
  void FollowAndFinish(RunContext& ctx);
  // Records `to` at `at_ms` (now when 0).
  Status Transition(RunContext& ctx, store::RunStatus to, std::int64_t at_ms = 0);
  void Finish(RunContext& ctx, store::RunStatus status, const std::string& reason);
  // Records the run's outputs (SchedulerOptions::collect_outputs); a file that was skipped is
  // named in the run's log as a warning.
  Status CollectOutputs(RunContext& ctx);
  void Notify(const std::string& run_id);
  // The launch of node `node` (0-based) of the run.
  StatusOr<exec::LaunchSpec> MakeLaunchSpec(RunContext& ctx, const std::string& image, int node);
  // A multi-node run's hostfile: one "HOST slots=P" line per node.
  static std::string Hostfile(const RunContext& ctx);

  // Slurm runs (slurm_runs.cc). The folder a run works in: its own, or its folder under a slurm
  // compute's shared_dir.
  std::filesystem::path WorkDir(const RunContext& ctx) const;
  // Pushes the image to the compute's registry (once per image and registry), submits the job
  // and follows it to its end.
  void ExecuteSlurm(RunContext& ctx, const std::string& image);
  // Follows a submitted job (ctx.slurm_job) to its end: its state, its nodes' logs, cancel and
  // timeout; then finishes the run.
  void FollowSlurm(RunContext& ctx);
  // Finds the Slurm job of a run a previous daemon submitted, by the run id in its comment.
  // Returns true when the run was taken care of (attached, finished or requeued).
  bool RecoverSlurm(const std::shared_ptr<RunContext>& ctx, const store::RunRecord& rec);
  // The job comment that names a run of this workspace.
  std::string SlurmComment(const std::string& run_id) const;
  // The compute's definition with its registry password unsealed.
  StatusOr<spec::ComputeDefinition> UnsealedCompute(const std::string& name);
  // Fails fast when the partition does not exist or cannot hold the run (more nodes or GPUs
  // than it has); without a run, checks the partition only.
  Status CheckSlurmFit(const spec::ComputeDefinition& compute,
                       const std::optional<spec::RunRequest>& req);
  // GetComputeStatus without the cluster part.
  StatusOr<ComputeStatus> GetQueueStatus(const std::string& name);
  nlohmann::json ClusterStatus(const spec::ComputeDefinition& compute);
  // The last successful answer of a call, given again while younger than `max_age` (an error is
  // never kept: the next caller asks again); one call at a time, callers meanwhile waiting for
  // its answer. Thread-safe.
  template <typename T>
  class CachedCall {
   public:
    StatusOr<T> Get(std::chrono::milliseconds max_age, const std::function<StatusOr<T>()>& call) {
      MutexLock lock(mu_);
      if (!value_ || !value_->ok() || std::chrono::steady_clock::now() - at_ > max_age) {
        value_ = call();
        at_ = std::chrono::steady_clock::now();
      }
      return *value_;
    }

   private:
    Mutex mu_;
    std::chrono::steady_clock::time_point at_ GUARDED_BY(mu_);
    std::optional<StatusOr<T>> value_ GUARDED_BY(mu_);
  };
  // Slurm's job list, asked at most once per `max_age` by all the runs that follow jobs.
  StatusOr<std::vector<slurm::JobInfo>> SlurmJobs(std::chrono::milliseconds max_age);

  store::Store& store_;
  EnvironmentRegistry& environments_;
  envbuild::ImageBuilder& builder_;
  exec::Executor& executor_;
  const cas::Snapshotter& snapshots_;
  const SecretBox& secrets_;
  WorkspaceLayout layout_;
  SchedulerOptions options_;
  // A short id of the workspace (a hash of its path): in job comments and shared folders, so
  // two workspaces sharing a cluster never take each other's jobs or files.
  std::string workspace_id_;

  Mutex mu_;
  std::uint64_t next_seq_ GUARDED_BY(mu_) = 0;  // submission order
  bool shutting_down_ GUARDED_BY(mu_) = false;
  bool recovering_ GUARDED_BY(mu_) = false;  // no dispatch until every run is placed
  std::map<std::string, ComputeState> computes_ GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<BuildTask>> builds_ GUARDED_BY(mu_);  // by image hash
  std::map<std::uint64_t, std::thread> build_threads_ GUARDED_BY(mu_);        // by build number
  std::uint64_t next_build_ GUARDED_BY(mu_) = 0;
  std::set<std::string> ready_images_ GUARDED_BY(mu_);  // image hashes built in this daemon
  std::map<std::string, std::shared_ptr<RunContext>> active_ GUARDED_BY(mu_);
  // Nodes whose removal failed (their engine was gone), tried again when a run is launched.
  std::vector<std::pair<exec::Executor*, std::string>> leftovers_ GUARDED_BY(mu_);
  // Images this daemon pushed, as "<reference> <user> <sha256 of the password>".
  std::set<std::string> pushed_images_ GUARDED_BY(mu_);
  std::map<std::string, std::thread> workers_ GUARDED_BY(mu_);
  std::vector<std::string> finished_ GUARDED_BY(mu_);  // workers that returned, to be joined
  std::vector<std::uint64_t> finished_builds_ GUARDED_BY(mu_);  // build threads to join
  CachedCall<std::vector<slurm::JobInfo>> slurm_jobs_;          // squeue
  CachedCall<std::vector<slurm::NodeInfo>> slurm_nodes_;        // sinfo, for the checks at submit
  Mutex network_mu_;
  std::string network_tracking_url_ GUARDED_BY(network_mu_);  // SetNetworkTracking
  std::string network_tracking_ca_ GUARDED_BY(network_mu_);
  Mutex listener_mu_;
  std::function<void(const std::string&)> listener_ GUARDED_BY(listener_mu_);
};

}  // namespace trainyard::sched

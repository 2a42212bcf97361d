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
#include "trainyard/common/clock.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/workspace.h"
#include "trainyard/envbuild/environment_registry.h"
#include "trainyard/envbuild/image_builder.h"
#include "trainyard/exec/run_executor.h"
#include "trainyard/sched/compute_queue.h"
#include "trainyard/spec/compute.h"
#include "trainyard/spec/definition.h"
#include "trainyard/store/store.h"

namespace trainyard::sched {

struct SchedulerOptions {
  // Called in Finalizing, after the nodes are gone and before the final state, to record the
  // run's ./outputs (in the daemon: hashed into the tracking store). Returns warnings about
  // files it skipped (each written to the run's log, the run still completes). An error fails a
  // run that would otherwise complete: "cannot collect the outputs: ...". Unset: nothing is
  // recorded.
  std::function<StatusOr<std::vector<std::string>>(const std::string& run_id,
                                                   const std::filesystem::path& run_dir)>
      collect_outputs;
  // A run's data (assets::RunData in the daemon). `check_data` is asked at submit whether the
  // request's inputs and outputs name things that exist; `resolve_inputs` in Preparing turns
  // each input that is not a local path into one (or a literal, for `direct`), writing progress
  // to `log`; `deliver_outputs` in Finalizing, before a run completes, writes its outputs to the
  // datastores they name. An error of `resolve_inputs` fails the run in Preparing, one of
  // `deliver_outputs` fails it in Finalizing, each with the message. Unset: inputs must be local
  // paths and outputs have no path.
  using DataLog = std::function<void(std::string_view)>;
  // An environment from a registry (request.environment_registry): its definition, with its
  // build context copied into the workspace, registered in the workspace at submit like an
  // inline one. Unset: such requests are refused.
  std::function<StatusOr<spec::EnvironmentDefinition>(
      const std::string& registry, const std::string& name, const std::string& version)>
      import_environment;
  // `check_data` may pin what the request names (an asset's `@latest` to its version).
  std::function<Status(spec::RunRequest& request)> check_data;
  // `canceled` says whether the run was canceled meanwhile: a fetch then stops between files
  // and answers Cancelled (the run ends Canceled).
  std::function<StatusOr<std::map<std::string, spec::InputSpec>>(
      const spec::RunRequest& request, const DataLog& log, const std::function<bool()>& canceled)>
      resolve_inputs;
  std::function<Status(const spec::RunRequest& request, const std::filesystem::path& run_dir,
                       const DataLog& log)>
      deliver_outputs;
  // max_nodes of the `local` compute when the scheduler creates it (it exists by default).
  int local_max_nodes = 1;
  // What runs' times are read from and their timeouts waited on (tests move a FakeClock).
  // Borrowed; outlives the scheduler.
  Clock* clock = &Clock::Real();
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
  // The compute's own scheduler's view (RunExecutor::ClusterStatus): a slurm compute's
  // partition, its nodes and queue. Null otherwise.
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
//
// Where and how a run's nodes run is its compute type's executor's (exec::RunExecutor, found
// in the ExecutorRegistry by the compute's type); the scheduler knows no compute type.
// Thread-safe.
class Scheduler {
 public:
  // Every reference is borrowed and must outlive the scheduler.
  Scheduler(store::Store& store, envbuild::EnvironmentRegistry& environments,
            envbuild::ImageBuilder& builder, const exec::ExecutorRegistry& executors,
            const cas::Snapshotter& snapshots, const SecretBox& secrets, WorkspaceLayout layout,
            SchedulerOptions options);
  // Joins every worker and build. A daemon that must exit while runs go on
  // exits the process instead: runs outlive the daemon and Recover() picks them up.
  ~Scheduler();

  // Called (from any thread) whenever a run's state or logs change.
  void SetChangeListener(std::function<void(const std::string& run_id)> listener);

  // When the daemon serves beyond loopback: the address runs whose nodes may be other machines
  // (RunPlan::network_tracking_url) report to instead of the socket, and the PEM certificate they
  // trust it by ("" for the system's authorities). Thread-safe; applies to runs launched
  // afterwards.
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

  // Why an active run waits: in its compute's queue (as QueuedRun::wait_reason), or in its
  // compute's own ("Slurm job 42 pending: Resources"). Empty when it does not wait.
  std::string WaitReason(const std::string& run_id);

  // When a run token handed to a run submitted as `req` at `now_ms` expires (unix seconds):
  // after the run's timeout (at most 30 days) plus an hour.
  static std::int64_t RunTokenExpiry(const spec::RunRequest& req, std::int64_t now_ms);

  // A short id of the workspace at `root` (12 hex digits of a hash of its path): in container,
  // network and Slurm job names ("trainyard-<id>-<run>"), job comments and shared folders.
  static std::string WorkspaceId(const std::filesystem::path& root);

  // Names of a run's log files, relative to its folder.
  static constexpr const char* kStdLog = exec::kStdLog;
  static constexpr const char* kBuildLog = exec::kBuildLog;

 private:
  struct RunContext;
  struct BuildTask;
  class Host;
  // One compute target's live state. Guarded by mu_.
  struct ComputeState {
    spec::ComputeDefinition def;
    ComputeQueue queue;  // its node slots and queued runs
  };

  // The compute's state, loading it from the store when first used.
  StatusOr<ComputeState*> ComputeLocked(const std::string& name) REQUIRES(mu_);
  // The executor of a compute type; FailedPrecondition when this daemon has none.
  StatusOr<exec::RunExecutor*> ExecutorOf(const std::string& type) const;
  // Puts an admitted run in its compute's queue; starts its image build when it needs one.
  // NotFound when its compute does not exist.
  Status EnqueueLocked(std::shared_ptr<RunContext> ctx) REQUIRES(mu_);
  // Starts the queued runs of `c` that are ready and fit, in queue order; a ready run that does
  // not fit stops the walk (no run overtakes it).
  void DispatchLocked(ComputeState& c) REQUIRES(mu_);
  // Builds (or finds) the image of `ctx`'s environment while it waits in the queue, once per
  // image for every run that needs it.
  void PrebuildLocked(const std::shared_ptr<RunContext>& ctx, ComputeState& compute) REQUIRES(mu_);
  void RunBuild(std::shared_ptr<BuildTask> task);
  // Builds (or finds) the image of `env`, its output and then any failure written to `log` with
  // the registry password redacted; the error's message is the reason runs fail with.
  StatusOr<envbuild::ImageBuilder::Result> MakeImage(
      const spec::EnvironmentDefinition& env, const std::function<void(std::string_view)>& log);
  void ReleaseNodes(RunContext& ctx);

  // Sets where the run goes (its compute and executor, nodes) from the compute's definition.
  void PlaceLocked(RunContext& ctx, const spec::ComputeDefinition& def) REQUIRES(mu_);
  // A re-attached run holds its nodes again.
  void HoldNodesLocked(RunContext& ctx) REQUIRES(mu_);
  void StartWorkerLocked(std::shared_ptr<RunContext> ctx) REQUIRES(mu_);
  // Joins the workers that have returned.
  void ReapWorkersLocked() REQUIRES(mu_);
  void Work(std::shared_ptr<RunContext> ctx);
  // What the run's executor is given: the run, its compute as it is now, its environment
  // (resolved once, its password unsealed) and its image (set later, once built).
  StatusOr<exec::RunPlan> MakePlan(const RunContext& ctx);
  // Prepares and launches the run, then follows and finishes it.
  void Execute(RunContext& ctx);
  // Lays out the run's working folder: its code from the snapshot, ./outputs and ./logs.
  Status PrepareWorkFolder(const RunContext& ctx, const exec::WorkFolder& folder);
  // Follows a launched run to its end and records the end.
  void FollowAndFinish(RunContext& ctx, Host& host);
  // Records `to` at `at_ms` (now when 0).
  Status Transition(RunContext& ctx, store::RunStatus to, std::int64_t at_ms = 0);
  void Finish(RunContext& ctx, store::RunStatus status, const std::string& reason);
  // Records the run's outputs (SchedulerOptions::collect_outputs); a file that was skipped is
  // named in the run's log as a warning.
  Status CollectOutputs(RunContext& ctx);
  // Writes the outputs that name a datastore there (SchedulerOptions::deliver_outputs).
  Status DeliverOutputs(RunContext& ctx);
  void Notify(const std::string& run_id);
  // GetComputeStatus without the executor's part.
  StatusOr<ComputeStatus> GetQueueStatus(const std::string& name);

  store::Store& store_;
  envbuild::EnvironmentRegistry& environments_;
  envbuild::ImageBuilder& builder_;
  const exec::ExecutorRegistry& executors_;
  const cas::Snapshotter& snapshots_;
  const SecretBox& secrets_;
  WorkspaceLayout layout_;
  SchedulerOptions options_;
  Clock& clock_;
  // A short id of the workspace (a hash of its path): in node names, job comments and shared
  // folders, so two workspaces sharing an engine or a cluster never take each other's.
  std::string workspace_id_;

  Mutex mu_;
  bool shutting_down_ GUARDED_BY(mu_) = false;
  bool recovering_ GUARDED_BY(mu_) = false;  // no dispatch until every run is placed
  std::map<std::string, ComputeState> computes_ GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<BuildTask>> builds_ GUARDED_BY(mu_);  // by image hash
  std::map<std::uint64_t, std::thread> build_threads_ GUARDED_BY(mu_);        // by build number
  std::uint64_t next_build_ GUARDED_BY(mu_) = 0;
  std::set<std::string> ready_images_ GUARDED_BY(mu_);  // image hashes built in this daemon
  std::map<std::string, std::shared_ptr<RunContext>> active_ GUARDED_BY(mu_);
  std::map<std::string, std::thread> workers_ GUARDED_BY(mu_);
  std::vector<std::string> finished_ GUARDED_BY(mu_);  // workers that returned, to be joined
  std::vector<std::uint64_t> finished_builds_ GUARDED_BY(mu_);  // build threads to join
  Mutex network_mu_;
  std::string network_tracking_url_ GUARDED_BY(network_mu_);  // SetNetworkTracking
  std::string network_tracking_ca_ GUARDED_BY(network_mu_);
  Mutex listener_mu_;
  std::function<void(const std::string&)> listener_ GUARDED_BY(listener_mu_);
};

}  // namespace trainyard::sched

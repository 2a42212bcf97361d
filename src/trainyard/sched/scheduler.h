#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "trainyard/cas/snapshot.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/workspace.h"
#include "trainyard/envbuild/image_builder.h"
#include "trainyard/exec/executor.h"
#include "trainyard/spec/definition.h"
#include "trainyard/store/store.h"

namespace trainyard::sched {

struct SchedulerOptions {
  int max_concurrent_runs = 1;  // runs in Preparing..Finalizing at once; others wait in Queued
  int stop_grace_seconds = 10;  // SIGTERM → SIGKILL on cancel and timeout
  // Run tracking from inside containers (docs/tracking.md). `sdk_dir`: the host folder of the
  // Python package (sdk/python), mounted read-only at /trainyard/sdk/python and put first on
  // PYTHONPATH. `socket_dir`: the host folder holding the daemon's API socket `api.sock`,
  // mounted at /trainyard/sock (the folder, so a restarted daemon's new socket is seen). Either
  // may be empty: that part is then not offered to runs.
  std::filesystem::path sdk_dir;
  std::filesystem::path socket_dir;
  // Called in Finalizing, after the node is gone and before the final state, to record the
  // run's ./outputs (in the daemon: hashed into the tracking store). An error fails a run that
  // would otherwise complete: "cannot collect the outputs: ...". Unset: nothing is recorded.
  std::function<Status(const std::string& run_id, const std::filesystem::path& run_dir)>
      collect_outputs;
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
  std::mutex mu_;  // serialises Register's read-then-insert
};

// Drives runs through NotStarted → Queued → Preparing → Starting → Running → Finalizing →
// Completed | Failed | Canceled. Each transition is persisted before it takes effect. Each
// admitted run has a worker thread; at most `max_concurrent_runs` are past Queued at once, in
// submission order. Thread-safe.
class Scheduler {
 public:
  // Every reference is borrowed and must outlive the scheduler.
  Scheduler(store::Store& store, EnvironmentRegistry& environments, envbuild::ImageBuilder& builder,
            exec::Executor& executor, const cas::Snapshotter& snapshots, const SecretBox& secrets,
            WorkspaceLayout layout, SchedulerOptions options);
  // Wakes queued workers and joins every worker. A daemon that must exit while runs go on
  // exits the process instead: runs outlive the daemon and Recover() picks them up.
  ~Scheduler();

  // Called (from any thread) whenever a run's state or logs change.
  void SetChangeListener(std::function<void(const std::string& run_id)> listener);

  // Picks up the runs a previous daemon left active: queued and preparing runs start again,
  // running containers are re-attached (their log is re-read from the start, so nothing is
  // duplicated), finished containers are finalised with their real exit code, and runs whose
  // container vanished fail with a reason.
  Status Recover();

  // Validates and admits a run. InvalidArgument for a bad request, NotFound for an unknown
  // environment or snapshot, AlreadyExists for a taken run name.
  StatusOr<store::RunRecord> Submit(spec::RunRequest request);

  // Cancels a run in any non-terminal state. FailedPrecondition when it already ended.
  Status Cancel(const std::string& run_id);

  // Names of a run's log files, relative to its folder.
  static constexpr const char* kStdLog = "user_logs/std_log.txt";
  static constexpr const char* kBuildLog = "logs/image_build.log";

 private:
  struct RunContext;

  void StartWorker(std::shared_ptr<RunContext> ctx);
  // Joins the workers that have returned. Requires mu_.
  void ReapWorkersLocked();
  void Work(std::shared_ptr<RunContext> ctx);
  bool WaitForSlot(RunContext& ctx);
  void ReleaseSlot();
  // Prepares, launches and follows the run; returns the final state and reason.
  void Execute(RunContext& ctx);
  void Attach(RunContext& ctx, bool finished);
  void FollowAndFinish(RunContext& ctx);
  Status Transition(RunContext& ctx, store::RunStatus to);
  void Finish(RunContext& ctx, store::RunStatus status, const std::string& reason);
  void Notify(const std::string& run_id);
  StatusOr<exec::LaunchSpec> MakeLaunchSpec(RunContext& ctx, const std::string& image);

  store::Store& store_;
  EnvironmentRegistry& environments_;
  envbuild::ImageBuilder& builder_;
  exec::Executor& executor_;
  const cas::Snapshotter& snapshots_;
  const SecretBox& secrets_;
  WorkspaceLayout layout_;
  SchedulerOptions options_;

  std::mutex mu_;
  std::condition_variable slot_cv_;
  std::deque<std::string> queue_;  // Guarded by mu_: runs waiting for a slot, in order.
  int busy_ = 0;                   // Guarded by mu_: slots in use.
  bool shutting_down_ = false;     // Guarded by mu_.
  std::map<std::string, std::shared_ptr<RunContext>> active_;  // Guarded by mu_.
  std::map<std::string, std::thread> workers_;                 // Guarded by mu_.
  std::vector<std::string> finished_;  // Guarded by mu_: workers that returned, to be joined.
  std::function<void(const std::string&)> listener_;  // Guarded by mu_.
};

}  // namespace trainyard::sched

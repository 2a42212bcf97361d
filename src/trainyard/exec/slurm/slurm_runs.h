#pragma once

// `slurm` computes (docs/slurm.md): a run is one batch job whose tasks each run the run's
// container. The image is pushed to the compute's registry (once per image and registry), the
// job's files are written into the run's working folder (the compute's shared folder when it
// has one), the job is submitted and followed through squeue until it ends; a later daemon
// finds it again by the run id in its comment.

#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "trainyard/common/mutex.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/docker/engine.h"
#include "trainyard/exec/run_executor.h"
#include "trainyard/slurm/slurm.h"

namespace trainyard::exec {

struct SlurmExecutorOptions {
  ExecutorOptions common;
  // How often Slurm is asked how the jobs of running runs are doing.
  int poll_ms = 500;
};

class SlurmRunExecutor : public RunExecutor {
 public:
  // Every reference is borrowed and must outlive the executor. `engine` holds the images to
  // push; `secrets` unseals the compute's registry password.
  SlurmRunExecutor(slurm::Client& slurm, docker::Engine& engine, const SecretBox& secrets,
                   SlurmExecutorOptions options)
      : slurm_(slurm), engine_(engine), secrets_(secrets), options_(std::move(options)) {}

  // The partition must exist.
  Status CheckCompute(const spec::ComputeDefinition& compute) override;
  // The partition must have as many nodes as the run asks for, with the compute's GPUs.
  Status CheckFit(const spec::ComputeDefinition& compute, const spec::RunRequest& req) override;
  // A run whose compute has a shared folder works there, where its nodes see it: a copy of the
  // code, since that may be another file system.
  WorkFolder WorkFolderOf(const RunPlan& plan) const override;
  StatusOr<std::unique_ptr<LaunchedRun>> Launch(const RunPlan& plan, RunHost& host) override;
  StatusOr<std::unique_ptr<LaunchedRun>> Recover(const RunPlan& plan, RunHost& host,
                                                 store::RunStatus status,
                                                 const std::string& handle) override;
  // {"partition", "nodes": [{name, state, cpus, alloc_cpus, memory_mb, gpus}], "jobs": [{job_id,
  // name, run, state, reason, nodes}] (the partition's queue, every user's), "error" when Slurm
  // could not be asked}.
  nlohmann::json ClusterStatus(const spec::ComputeDefinition& compute) override;

  // The Slurm job of a run, from what it is known by (RunHost::RecordHandle): "slurm:<id>".
  static std::optional<std::int64_t> JobOf(const std::string& handle);

 private:
  class Run;

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

  // Checks the partition; with a run, that it could hold it.
  Status CheckPartition(const spec::ComputeDefinition& compute, const spec::RunRequest* req);
  // The folder a run works in.
  std::filesystem::path WorkDir(const RunPlan& plan) const;
  // The job comment that names a run of a workspace.
  static std::string Comment(const RunPlan& plan);
  // Pushes the run's image to the compute's registry (once per image and credentials); the
  // reference the nodes pull and the credentials they pull with.
  StatusOr<std::string> Push(const RunPlan& plan, const spec::ComputeDefinition& compute,
                             RunHost& host);
  // Slurm's job list, asked at most once per `max_age` by all the runs that follow jobs.
  StatusOr<std::vector<slurm::JobInfo>> Jobs(std::chrono::milliseconds max_age);

  slurm::Client& slurm_;
  docker::Engine& engine_;
  const SecretBox& secrets_;
  SlurmExecutorOptions options_;
  CachedCall<std::vector<slurm::JobInfo>> jobs_;    // squeue
  CachedCall<std::vector<slurm::NodeInfo>> nodes_;  // sinfo, for the checks at submit
  Mutex mu_;
  // Images pushed, as "<reference> <user> <sha256 of the password>".
  std::set<std::string> pushed_ GUARDED_BY(mu_);
};

}  // namespace trainyard::exec

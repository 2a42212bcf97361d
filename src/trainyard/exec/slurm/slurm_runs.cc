#include "trainyard/exec/slurm/slurm_runs.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <thread>

#include "trainyard/common/fs.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/exec/node_launch.h"
#include "trainyard/exec/run_logs.h"

namespace trainyard::exec {
namespace {

using store::RunStatus;

// What a run is known by (RunHost::RecordHandle): its Slurm job.
constexpr const char* kJobHandlePrefix = "slurm:";
// The image a slurm compute's nodes pull: one repository per registry, tagged by image hash.
constexpr const char* kPushRepository = "trainyard/environments";
// The start of the job comment that names a run (SlurmComment).
constexpr const char* kCommentPrefix = "trainyard run=";
// A run's job folder (slurm::JobFiles) in its working folder, and where its batch script's
// output goes.
constexpr const char* kJobFolder = "slurm";
constexpr const char* kJobLog = "logs/slurm_job.log";
// How old the partition's nodes may be when a submit is checked against them.
constexpr std::chrono::milliseconds kNodesMaxAge(5000);
// How often a job is looked at until it runs.
constexpr std::chrono::milliseconds kStartPoll(100);

// A file another host (or process) appends to, read from where the last read stopped. The file
// is in a folder the run can write: opened below `root` by descriptor, never through a link and
// never blocking on a FIFO.
class Tail {
 public:
  Tail(fs::path root, std::string rel) : root_(std::move(root)), rel_(std::move(rel)) {}
  // Sends what was appended since the last call to `sink`.
  void Read(const docker::TextSink& sink) {
    auto dir = RootedDir::Open(root_);
    if (!dir.ok()) return;
    auto fd = dir->OpenFile(rel_);
    if (!fd.ok()) return;
    std::string buf(64 << 10, '\0');
    for (;;) {
      const ssize_t n = ::pread(fd->get(), buf.data(), buf.size(), offset_);
      if (n <= 0) break;
      offset_ += n;
      sink(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    }
  }

 private:
  fs::path root_;
  std::string rel_;
  off_t offset_ = 0;
};

// The last line of a batch log (at most its last 4 KiB) that is not Slurm's own ("srun: ...",
// "slurmstepd: ..."), for failure reasons: the error of the command that failed. The log is in
// the run's logs/ folder: read by descriptor below `root`, the tail only.
std::string LastLine(const fs::path& root, std::string_view rel) {
  auto dir = RootedDir::Open(root);
  if (!dir.ok()) return "";
  auto text = dir->ReadTail(rel, 4096);
  if (!text.ok()) return "";
  std::string_view t = *text;
  std::string last, last_slurm;
  for (const std::string& line : Split(t, '\n')) {
    const std::string_view l = Trim(line);
    if (l.empty()) continue;
    (StartsWith(l, "srun:") || StartsWith(l, "slurmstepd:") ? last_slurm : last) = l;
  }
  return last.empty() ? last_slurm : last;
}

bool InPartition(const slurm::NodeInfo& node, const std::string& partition) {
  return std::find(node.partitions.begin(), node.partitions.end(), partition) !=
         node.partitions.end();
}

// "pending: Resources" from squeue's reason, in words a user can act on where Slurm's are terse.
std::string PendingReason(const slurm::JobInfo& job) {
  std::string out = "Slurm job " + std::to_string(job.id) + " pending";
  if (job.reason.empty()) return out;
  out += ": " + job.reason;
  if (job.reason == "Resources") out += " (the partition's nodes are busy)";
  if (job.reason == "Priority") out += " (jobs of higher priority go first)";
  if (job.reason == "BeginTime") out += " (it asked to start later)";
  if (job.reason == "PartitionDown" || job.reason == "PartitionInactive") {
    out += " (partition " + job.partition + " does not run jobs now)";
  }
  return out;
}

}  // namespace

class SlurmRunExecutor::Run : public LaunchedRun {
 public:
  Run(SlurmRunExecutor& executor, RunPlan plan, std::int64_t job)
      : executor_(executor), plan_(std::move(plan)), job_(job) {}

  RunEnd Follow(RunHost& host, bool resume) override;
  Status Release(RunHost& host) override;

 private:
  SlurmRunExecutor& executor_;
  const RunPlan plan_;
  const std::int64_t job_;
};

std::optional<std::int64_t> SlurmRunExecutor::JobOf(const std::string& handle) {
  if (!StartsWith(handle, kJobHandlePrefix)) return std::nullopt;
  return ParseWholeInteger<std::int64_t>(
      std::string_view(handle).substr(std::strlen(kJobHandlePrefix)));
}

fs::path SlurmRunExecutor::WorkDir(const RunPlan& plan) const {
  if (plan.compute.shared_dir.empty()) return plan.run_dir;
  // One folder per workspace, so two daemons sharing a cluster folder never meet.
  return fs::path(plan.compute.shared_dir) / "trainyard" / plan.workspace_id / plan.run_id;
}

WorkFolder SlurmRunExecutor::WorkFolderOf(const RunPlan& plan) const {
  const fs::path dir = WorkDir(plan);
  return {dir, plan.request.code_copy || dir != plan.run_dir, /*link_outputs=*/false};
}

std::string SlurmRunExecutor::Comment(const RunPlan& plan) {
  return std::string(kCommentPrefix) + plan.run_id + " workspace=" + plan.workspace_id;
}

Status SlurmRunExecutor::CheckCompute(const spec::ComputeDefinition& compute) {
  return CheckPartition(compute, nullptr);
}

Status SlurmRunExecutor::CheckFit(const spec::ComputeDefinition& compute,
                                  const spec::RunRequest& req) {
  return CheckPartition(compute, &req);
}

Status SlurmRunExecutor::CheckPartition(const spec::ComputeDefinition& compute,
                                        const spec::RunRequest* req) {
  // A partition's nodes change rarely: one sinfo serves a burst of submits.
  auto nodes = nodes_.Get(kNodesMaxAge, [this] { return slurm_.ListNodes(); });
  if (!nodes.ok())
    return nodes.status().WithPrefix("asking Slurm for partition " + compute.partition);
  int count = 0;
  int min_gpus = -1;
  std::set<std::string> partitions;
  for (const auto& n : *nodes) {
    partitions.insert(n.partitions.begin(), n.partitions.end());
    if (!InPartition(n, compute.partition)) continue;
    ++count;
    min_gpus = min_gpus < 0 ? n.gpus : std::min(min_gpus, n.gpus);
  }
  if (count == 0) {
    std::string names;
    for (const auto& p : partitions) names += (names.empty() ? "" : ", ") + p;
    return InvalidArgument(
        "Slurm partition '" + compute.partition +
        "' does not exist or has no nodes (partitions: " + (names.empty() ? "none" : names) + ")");
  }
  if (compute.gpus_per_node > min_gpus) {
    return InvalidArgument("compute '" + compute.name + "' asks for " +
                           std::to_string(compute.gpus_per_node) +
                           " GPUs per node, but partition " + compute.partition +
                           (min_gpus == 0 ? " has nodes without GPUs"
                                          : " has nodes with only " + std::to_string(min_gpus)));
  }
  if (req != nullptr && req->instance_count > count) {
    return InvalidArgument("the job asks for " + std::to_string(req->instance_count) +
                           " nodes (resources.instance_count), but Slurm partition " +
                           compute.partition + " has " + std::to_string(count) +
                           "; it could never start");
  }
  return Status::Ok();
}

nlohmann::json SlurmRunExecutor::ClusterStatus(const spec::ComputeDefinition& compute) {
  nlohmann::json out{{"partition", compute.partition},
                     {"nodes", nlohmann::json::array()},
                     {"jobs", nlohmann::json::array()}};
  auto nodes = slurm_.ListNodes();
  if (!nodes.ok()) {
    out["error"] = nodes.status().message();
    return out;
  }
  for (const auto& n : *nodes) {
    if (!InPartition(n, compute.partition)) continue;
    out["nodes"].push_back({{"name", n.name},
                            {"state", n.state},
                            {"cpus", n.cpus},
                            {"alloc_cpus", n.alloc_cpus},
                            {"memory_mb", n.memory_mb},
                            {"gpus", n.gpus}});
  }
  auto jobs = slurm_.ListJobs();
  if (!jobs.ok()) {
    out["error"] = jobs.status().message();
    return out;
  }
  const std::string_view prefix = kCommentPrefix;
  for (const auto& j : *jobs) {
    if (j.partition != compute.partition || slurm::IsFinalState(j.state)) continue;
    std::string run;
    if (StartsWith(j.comment, prefix)) {
      run = j.comment.substr(prefix.size(), j.comment.find(' ', prefix.size()) - prefix.size());
    }
    out["jobs"].push_back({{"job_id", j.id},
                           {"name", j.name},
                           {"run", run},
                           {"state", j.state},
                           {"reason", j.reason},
                           {"nodes", j.nodes}});
  }
  return out;
}

StatusOr<std::vector<slurm::JobInfo>> SlurmRunExecutor::Jobs(std::chrono::milliseconds max_age) {
  return jobs_.Get(max_age, [this] { return slurm_.ListJobs(); });
}

StatusOr<std::string> SlurmRunExecutor::Push(const RunPlan& plan,
                                             const spec::ComputeDefinition& compute,
                                             RunHost& host) {
  if (!compute.registry) return plan.image;
  // Built once on this machine, pushed once per registry; every node pulls it from there.
  const auto& reg = *compute.registry;
  const std::string hash = plan.image_hash.empty() ? Sha256Hex(plan.image) : plan.image_hash;
  std::string image_ref = reg.address + "/" + kPushRepository + ":" + hash.substr(0, 64);
  // Pushed once per image and credentials: other credentials must prove they may push too.
  const std::string push_key = image_ref + " " + reg.username + " " + Sha256Hex(reg.password);
  bool pushed;
  {
    MutexLock lock(mu_);
    pushed = pushed_.count(push_key) > 0;
  }
  if (!pushed) {
    host.BuildLog("Pushing " + image_ref + "\n");
    const docker::RegistryAuth auth{reg.username, reg.password, reg.address};
    Status st = engine_.TagImage(plan.image, image_ref);
    if (st.ok()) {
      st = engine_.PushImage(image_ref, auth, [&](std::string_view text) {
        host.BuildLog(Redact(std::string(text), reg.password));
      });
    }
    if (!st.ok()) {
      const std::string reason =
          Redact("pushing the image to registry " + reg.address + " failed: " + st.message(),
                 reg.password);
      host.BuildLog("\n" + reason + "\n");
      return Status(st.code(), reason);
    }
    MutexLock lock(mu_);
    pushed_.insert(push_key);
  }
  host.RecordImage(image_ref);
  return image_ref;
}

StatusOr<std::unique_ptr<LaunchedRun>> SlurmRunExecutor::Launch(const RunPlan& plan,
                                                                RunHost& host) {
  spec::ComputeDefinition compute = plan.compute;
  if (compute.registry && SecretBox::IsSealed(compute.registry->password)) {
    auto password = secrets_.Unseal(compute.registry->password);
    if (!password.ok()) return password.status().WithPrefix("compute lost");
    compute.registry->password = *password;
  }
  TY_ASSIGN_OR_RETURN(const std::string image_ref, Push(plan, compute, host));
  std::optional<docker::RegistryAuth> auth;
  if (compute.registry) {
    auth = docker::RegistryAuth{compute.registry->username, compute.registry->password,
                                compute.registry->address};
  }
  if (host.control().CancelRequested()) return Cancelled("canceled by user");
  TY_RETURN_IF_ERROR(host.Transition(RunStatus::kStarting).WithPrefix("internal"));

  RunPlan pulled = plan;
  pulled.image = image_ref;
  const fs::path work = WorkDir(plan);
  const NodeView view = ContainerView(pulled, work, options_.common, /*network_tracking=*/true);
  // Each task of the Slurm job derives its place in the run from SLURM_* (slurm::TaskSpec) and
  // runs the command in a container of its own.
  auto launch = MakeNodeLaunch(pulled, view, 0, /*distribution=*/false, options_.common);
  const slurm::JobFiles files{work / kJobFolder};
  Status written = launch.status();
  slurm::TaskSpec task;
  if (written.ok()) {
    task.run_id = plan.run_id;
    task.runtime = compute.container_runtime;
    task.image = image_ref;
    task.pull_auth = auth;
    task.container_prefix = ContainerName(plan.workspace_id, plan.run_id);
    for (const std::string& kv : launch->env) {
      const std::size_t eq = kv.find('=');
      task.env[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
    }
    task.prepend_paths = launch->prepend_paths;
    task.mounts = launch->mounts;
    task.working_dir = launch->working_dir;
    task.command = launch->argv.back();
    task.shm_size_bytes = launch->shm_size_bytes;
    task.gpus_per_node = compute.gpus_per_node;
    task.distribution = plan.request.distribution ? plan.request.distribution->type : "";
    if (plan.request.distribution) {
      task.tensorflow_parameter_servers = plan.request.distribution->parameter_server_count;
    }
    task.tasks_per_node = ProcessesPerNode(plan.request);
    if (auto port = task.env.find("MASTER_PORT"); port != task.env.end()) {
      const std::string& text = port->second;
      (void)std::from_chars(text.data(), text.data() + text.size(), task.master_port);
    }
    task.stop_grace_seconds = options_.common.stop_grace_seconds;
    (void)RemoveTree(files.dir);  // a leftover from an interrupted attempt
    written = slurm::WriteJobFiles(task, files);
  }
  // The registry credentials and the variables file (with the run token) are only for a job
  // that runs: when none does, they go at once.
  auto drop_secrets = [&files] {
    (void)RemoveTree(files.dir / "auth");
    (void)RemoveTree(files.EnvFile());
  };
  if (!written.ok()) {
    drop_secrets();
    return written.WithPrefix("could not start the run");
  }
  slurm::JobRequest req;
  req.name = ContainerName(plan.workspace_id, plan.run_id);
  req.comment = Comment(plan);
  req.partition = compute.partition;
  req.account = compute.account;
  req.qos = compute.qos;
  req.nodes = plan.nodes;
  req.tasks_per_node = task.tasks_per_node;
  req.gpus_per_node = compute.gpus_per_node;
  // trainyard stops the run at its exact timeout; Slurm's limit (whole minutes) is the backstop
  // should this daemon be down then.
  req.time_limit_seconds = plan.request.timeout_seconds.value_or(0);
  req.extra_args = compute.sbatch_args;
  req.script = files.BatchScript();
  req.output = work / kJobLog;
  req.working_dir = files.dir;
  auto job = slurm_.Submit(req);
  if (!job.ok()) {
    drop_secrets();
    return job.status().WithPrefix("Slurm refused the job");
  }
  std::fprintf(stderr, "[%s] run %s: Slurm job %lld in partition %s\n",
               FormatTimeIso(NowMillis()).c_str(), plan.run_id.c_str(),
               static_cast<long long>(*job), compute.partition.c_str());
  host.RecordHandle(kJobHandlePrefix + std::to_string(*job));
  return std::unique_ptr<LaunchedRun>(std::make_unique<Run>(*this, plan, *job));
}

RunEnd SlurmRunExecutor::Run::Follow(RunHost& host, bool /*resume*/) {
  const fs::path run_dir = plan_.run_dir;
  const fs::path work = executor_.WorkDir(plan_);
  const slurm::JobFiles files{work / kJobFolder};
  RunControl& control = host.control();
  const std::int64_t job_id = job_;
  const std::string job_name = "Slurm job " + std::to_string(job_id);

  // The nodes' output, as for a local run: one node's is the run's log; several each have their
  // own, and the run's log has every node's lines prefixed "[node i] ". Re-read from the first
  // byte into truncated files, also after a re-attach.
  const int n = plan_.nodes;
  LogWriter std_log(run_dir, kStdLog, true, [&host] { host.LogsChanged(); });
  std::vector<Tail> tails;
  std::vector<std::unique_ptr<LogWriter>> node_logs;
  std::vector<std::unique_ptr<LinePrefixer>> prefixed;
  for (int i = 0; i < n; ++i) {
    tails.emplace_back(files.dir, files.NodeLog(i).filename().string());
    if (n > 1) {
      node_logs.push_back(std::make_unique<LogWriter>(run_dir, NodeLogName(i), true, [] {}));
      prefixed.push_back(
          std::make_unique<LinePrefixer>("[node " + std::to_string(i) + "] ", std_log.Sink()));
    }
  }
  auto read_logs = [&] {
    for (int i = 0; i < n; ++i) {
      if (n == 1) {
        tails[0].Read(std_log.Sink());
      } else {
        tails[static_cast<std::size_t>(i)].Read([&](std::string_view t) {
          node_logs[static_cast<std::size_t>(i)]->Write(t);
          prefixed[static_cast<std::size_t>(i)]->Write(t);
        });
      }
    }
  };

  std::optional<Clock::TimePoint> deadline;  // on host.clock()
  // Armed once the job runs: the timeout counts from Running.
  auto arm_deadline = [&] {
    if (!deadline) deadline = TimeoutDeadline(plan_, host.running_since(), host.clock());
  };
  if (host.status() == RunStatus::kRunning) arm_deadline();

  std::optional<slurm::JobInfo> ended;  // the job as it ended, when Slurm still knew it
  bool cancel_sent = false;
  int misses = 0;
  const auto poll = std::chrono::milliseconds(std::max(20, executor_.options_.poll_ms));
  auto next_poll = std::chrono::steady_clock::now();
  for (;;) {
    read_logs();
    // The job goes on without this daemon; the next one finds it again (Recover).
    if (host.ShuttingDown()) return RunEnd{.detached = true};
    const auto now = std::chrono::steady_clock::now();
    bool cancel, timed_out;
    {
      MutexLock lock(control.mu);
      if (deadline && host.clock().SteadyNow() >= *deadline) control.timed_out = true;
      cancel = control.cancel_requested;
      timed_out = control.timed_out;
    }
    if ((cancel || timed_out) && !cancel_sent) {
      // scancel signals the job's steps; each task stops its container with the grace period.
      if (Status st = executor_.slurm_.Cancel(job_id); st.ok()) {
        cancel_sent = true;
      } else {
        std::fprintf(stderr, "[%s] run %s: scancel %lld: %s\n", FormatTimeIso(NowMillis()).c_str(),
                     plan_.run_id.c_str(), static_cast<long long>(job_id), st.message().c_str());
      }
    }
    if (now >= next_poll) {
      // Quickly while the job waits to start, so Running shows when it does; then every poll.
      next_poll = now + (host.status() == RunStatus::kRunning ? poll : kStartPoll);
      auto jobs = executor_.Jobs(kStartPoll / 2);
      if (jobs.ok()) {
        const slurm::JobInfo* job = nullptr;
        for (const auto& j : *jobs) {
          if (j.id == job_id) job = &j;
        }
        if (job == nullptr) {
          // Forgotten by slurmctld (MinJobAge passed while this daemon was away), or not yet
          // listed: the job's own exit file and accounting tell how it ended.
          if (slurm::ReadJobExit(files) || ++misses >= 3) {
            if (auto acct = executor_.slurm_.AccountedJob(job_id); acct.ok() && *acct)
              ended = **acct;
            break;
          }
        } else {
          misses = 0;
          if (job->state == "PENDING") {
            const std::string why = PendingReason(*job);
            bool changed;
            {
              MutexLock lock(control.mu);
              changed = control.wait_reason != why;
              control.wait_reason = why;
            }
            if (host.status() != RunStatus::kQueued) {
              (void)host.Transition(RunStatus::kQueued);
            } else if (changed) {
              host.LogsChanged();
            }
          } else if (!slurm::IsFinalState(job->state)) {
            {
              MutexLock lock(control.mu);
              control.wait_reason.clear();
            }
            const RunStatus status = host.status();
            if (status != RunStatus::kRunning && status != RunStatus::kCancelRequested &&
                job->state != "CONFIGURING") {
              if (status == RunStatus::kQueued) (void)host.Transition(RunStatus::kStarting);
              (void)host.Transition(RunStatus::kRunning);
            }
            if (host.status() == RunStatus::kRunning) arm_deadline();
          } else {
            ended = *job;
            const RunStatus status = host.status();
            if (status != RunStatus::kRunning && status != RunStatus::kCancelRequested &&
                job->start_time > 0) {
              // It ran between two looks: it still went through Running.
              (void)host.Transition(RunStatus::kRunning);
            }
            break;
          }
        }
      } else {
        std::fprintf(stderr, "[%s] run %s: squeue: %s\n", FormatTimeIso(NowMillis()).c_str(),
                     plan_.run_id.c_str(), jobs.status().message().c_str());
      }
    }
    MutexLock lock(control.mu);
    const auto poll_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    while (!(control.cancel_requested && !cancel_sent)) {
      if (!lock.WaitUntil(control.cv, poll_until)) break;
    }
  }
  {
    MutexLock lock(control.mu);
    control.wait_reason.clear();
  }
  // The nodes' last lines: the files are on a shared folder and may trail the job's end a bit.
  std::optional<slurm::JobExit> job_exit = slurm::ReadJobExit(files);
  for (int i = 0; i < 20 && !job_exit && ended && ended->state == "COMPLETED"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    job_exit = slurm::ReadJobExit(files);
  }
  read_logs();
  for (auto& p : prefixed) p->Flush();
  // The registry credentials stay only as long as the pull: a job canceled before it ran never
  // pulled, and its auth file is still there. The variables file holds the run token: the job
  // has ended, so neither is left behind.
  (void)RemoveTree(files.dir / "auth");
  (void)RemoveTree(files.EnvFile());

  // The task that failed first is the cause; the others were most likely stopped because of it.
  std::optional<slurm::TaskExit> cause;
  const int tasks = n * ProcessesPerNode(plan_.request);
  for (int t = 0; t < tasks; ++t) {
    auto e = slurm::ReadTaskExit(files, t);
    if (e && e->exit_code != 0 && (!cause || e->ended_ns < cause->ended_ns)) cause = e;
  }
  RunEnd end;
  if (cause) {
    end.exit_code = cause->exit_code;
  } else if (job_exit) {
    end.exit_code = job_exit->exit_code;
  } else if (ended && ended->exit_code) {
    end.exit_code = *ended->exit_code;
  }

  const std::string state = ended ? ended->state : "";
  const std::string node_prefix =
      cause && n > 1 ? "node " + std::to_string(cause->node) + ": " : "";
  auto failed = [](std::string reason) { return Verdict{RunStatus::kFailed, std::move(reason)}; };
  if (state == "TIMEOUT") {
    end.compute_verdict = failed("timed out: " + job_name + " reached its Slurm time limit of " +
                                 std::to_string(ended->time_limit_minutes) + " min");
  } else if (state == "CANCELLED") {
    end.compute_verdict = Verdict{RunStatus::kCanceled,
                                  job_name +
                                      " was cancelled in Slurm (scancel or an administrator), not "
                                      "through trainyard"};
  } else if (state == "NODE_FAIL" || state == "BOOT_FAIL") {
    end.compute_verdict = failed("compute lost: a node of " + job_name + " failed (" + state +
                                 ", nodes " + ended->nodes + ")");
  } else if (state == "OUT_OF_MEMORY" || (cause && cause->oom_killed)) {
    end.compute_verdict =
        failed("out of memory: " + node_prefix + "the kernel killed the script (" + job_name +
               (state == "OUT_OF_MEMORY" ? ", OUT_OF_MEMORY" : "") + ")");
  } else if (state == "PREEMPTED" || state == "DEADLINE" || state == "REVOKED") {
    end.compute_verdict = failed(job_name + " ended " + state + " in Slurm");
  } else if (job_exit && job_exit->pull_failed) {
    const std::string last = LastLine(work, kJobLog);
    end.compute_verdict =
        failed("the nodes could not pull the run's image" + (last.empty() ? "" : ": " + last) +
               " (its log: logs/slurm_job.log)");
  } else if (!ended && !job_exit) {
    end.compute_verdict =
        failed("lost: " + job_name + " is no longer known to Slurm and left no exit status in " +
               files.dir.string() + " (its log: logs/slurm_job.log)");
  } else if (end.exit_code && *end.exit_code != 0) {
    std::string reason = node_prefix + "script exited with code " + std::to_string(*end.exit_code);
    if (n > 1 && cause) {
      reason += " (its log: " + NodeLogName(cause->node) + "; the other nodes were stopped)";
    }
    if (!cause) reason = job_name + " failed: " + reason + " (its log: logs/slurm_job.log)";
    end.exit_verdict = failed(reason + ReadOnlyCodeHint(plan_));
  } else if (ended && ended->signal) {
    end.exit_verdict = failed(job_name + " was killed by signal " + std::to_string(*ended->signal));
  }
  return end;
}

Status SlurmRunExecutor::Run::Release(RunHost& /*host*/) {
  const fs::path work = executor_.WorkDir(plan_);
  if (work == plan_.run_dir) return Status::Ok();
  // The run wrote its outputs and logs on the shared folder; they are kept in the workspace.
  // Both folders were the run's to write: copied by descriptor, links left behind.
  auto from = RootedDir::Open(work);
  auto to = RootedDir::Create(plan_.run_dir);
  Status copied = !from.ok() ? from.status() : to.status();
  for (const char* d : {"outputs", "logs"}) {
    if (copied.ok()) copied = CopyTree(*from, *to, d);
  }
  return copied.WithPrefix("copying " + work.string() + " back");
}

StatusOr<std::unique_ptr<LaunchedRun>> SlurmRunExecutor::Recover(const RunPlan& plan,
                                                                 RunHost& /*host*/,
                                                                 RunStatus status,
                                                                 const std::string& handle) {
  auto jobs = slurm_.ListJobs();
  // Failing the run would be a guess: its job may be alive. It stays until Slurm answers.
  if (!jobs.ok()) return jobs.status().WithPrefix("Slurm did not answer");
  // The job is found by the run id in its comment: also one submitted just before the previous
  // daemon died, before it could record the job id.
  const std::string comment = Comment(plan);
  std::int64_t job = 0;
  for (const auto& j : *jobs) {
    if (j.comment == comment && j.id > job) job = j.id;
  }
  if (const auto recorded = JobOf(handle); job == 0 && recorded) {
    // Forgotten by slurmctld: its exit file says whether it ran to its end.
    if (slurm::ReadJobExit(slurm::JobFiles{WorkDir(plan) / kJobFolder}) ||
        status == RunStatus::kRunning || status == RunStatus::kFinalizing ||
        status == RunStatus::kCancelRequested) {
      job = *recorded;
    }
  }
  // Never submitted: back in its queue like any run.
  if (job == 0) return NotFound("no Slurm job");
  return std::unique_ptr<LaunchedRun>(std::make_unique<Run>(*this, plan, job));
}

}  // namespace trainyard::exec

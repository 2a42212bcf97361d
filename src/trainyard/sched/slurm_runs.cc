// Runs on `slurm` computes (docs/slurm.md): a run is one batch job whose tasks each run the run's
// container. The scheduler prepares the run as for any compute (queue, image build, snapshot),
// then pushes the image to the compute's registry, writes the job's files into the run's
// folder, submits it and follows it through squeue until it ends.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "trainyard/common/fs.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/sched/internal.h"
#include "trainyard/sched/scheduler.h"

namespace trainyard::sched {
namespace {

using namespace internal;  // NOLINT(google-build-using-namespace)
using store::RunStatus;

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

fs::path Scheduler::WorkDir(const RunContext& ctx) const {
  if (!ctx.slurm || ctx.shared_dir.empty()) return layout_.RunDir(ctx.id);
  // One folder per workspace, so two daemons sharing a cluster folder never meet.
  return fs::path(ctx.shared_dir) / "trainyard" / workspace_id_ / ctx.id;
}

std::string Scheduler::SlurmComment(const std::string& run_id) const {
  return std::string(kCommentPrefix) + run_id + " workspace=" + workspace_id_;
}

StatusOr<spec::ComputeDefinition> Scheduler::UnsealedCompute(const std::string& name) {
  spec::ComputeDefinition def;
  {
    MutexLock lock(mu_);
    TY_ASSIGN_OR_RETURN(ComputeState * c, ComputeLocked(name));
    def = c->def;
  }
  if (def.registry && SecretBox::IsSealed(def.registry->password)) {
    TY_ASSIGN_OR_RETURN(def.registry->password, secrets_.Unseal(def.registry->password));
  }
  return def;
}

Status Scheduler::CheckSlurmFit(const spec::ComputeDefinition& compute,
                                const std::optional<spec::RunRequest>& req) {
  if (options_.slurm == nullptr) return FailedPrecondition("this daemon cannot run slurm computes");
  // A partition's nodes change rarely: one sinfo serves a burst of submits.
  auto nodes = slurm_nodes_.Get(kNodesMaxAge, [this] { return options_.slurm->ListNodes(); });
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
  if (req && req->instance_count > count) {
    return InvalidArgument("the job asks for " + std::to_string(req->instance_count) +
                           " nodes (resources.instance_count), but Slurm partition " +
                           compute.partition + " has " + std::to_string(count) +
                           "; it could never start");
  }
  return Status::Ok();
}

nlohmann::json Scheduler::ClusterStatus(const spec::ComputeDefinition& compute) {
  nlohmann::json out{{"partition", compute.partition},
                     {"nodes", nlohmann::json::array()},
                     {"jobs", nlohmann::json::array()}};
  if (options_.slurm == nullptr) {
    out["error"] = "this daemon cannot reach Slurm";
    return out;
  }
  auto nodes = options_.slurm->ListNodes();
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
  auto jobs = options_.slurm->ListJobs();
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

std::optional<std::int64_t> Scheduler::SlurmJobOf(const store::RunRecord& rec) {
  if (!StartsWith(rec.container_id, kSlurmJobPrefix)) return std::nullopt;
  return std::atoll(rec.container_id.c_str() + std::strlen(kSlurmJobPrefix));
}

StatusOr<std::vector<slurm::JobInfo>> Scheduler::SlurmJobs(std::chrono::milliseconds max_age) {
  return slurm_jobs_.Get(max_age, [this] { return options_.slurm->ListJobs(); });
}

std::string Scheduler::WaitReason(const std::string& run_id) {
  std::shared_ptr<RunContext> ctx;
  {
    MutexLock lock(mu_);
    auto it = active_.find(run_id);
    if (it == active_.end()) return "";
    ctx = it->second;
    if (ctx->queued) {
      auto c = computes_.find(ctx->compute);
      return c == computes_.end() ? "" : WaitReasonLocked(c->second, *ctx, nullptr);
    }
  }
  MutexLock lock(ctx->mu);
  return ctx->slurm_wait;
}

void Scheduler::ExecuteSlurm(RunContext& ctx, const std::string& image) {
  const fs::path run_dir = layout_.RunDir(ctx.id);
  auto compute = UnsealedCompute(ctx.compute);
  if (!compute.ok()) {
    Finish(ctx, RunStatus::kFailed, "compute lost: " + compute.status().message());
    return;
  }
  LogWriter build_log(run_dir, kBuildLog, false, [this, &ctx] { Notify(ctx.id); });
  std::string image_ref = image;
  std::optional<docker::RegistryAuth> auth;
  if (compute->registry) {
    // Built once on this machine, pushed once per registry; every node pulls it from there.
    const auto& reg = *compute->registry;
    auth = docker::RegistryAuth{reg.username, reg.password, reg.address};
    std::string hash = ctx.image_hash;
    if (hash.empty()) hash = Sha256Hex(image);
    image_ref = reg.address + "/" + kPushRepository + ":" + hash.substr(0, 64);
    // Pushed once per image and credentials: other credentials must prove they may push too.
    const std::string push_key = image_ref + " " + reg.username + " " + Sha256Hex(reg.password);
    bool pushed;
    {
      MutexLock lock(mu_);
      pushed = pushed_images_.count(push_key) > 0;
    }
    if (!pushed) {
      if (options_.engine == nullptr) {
        Finish(ctx, RunStatus::kFailed, "internal: no engine to push images with");
        return;
      }
      build_log.Write("Pushing " + image_ref + "\n");
      Status st = options_.engine->TagImage(image, image_ref);
      if (st.ok()) {
        st = options_.engine->PushImage(image_ref, auth, [&](std::string_view text) {
          build_log.Write(Redact(std::string(text), reg.password));
        });
      }
      if (!st.ok()) {
        const std::string reason =
            Redact("pushing the image to registry " + reg.address + " failed: " + st.message(),
                   reg.password);
        build_log.Write("\n" + reason + "\n");
        Finish(ctx, RunStatus::kFailed, reason);
        return;
      }
      MutexLock lock(mu_);
      pushed_images_.insert(push_key);
    }
    if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
      rec->image = image_ref;
      (void)store_.UpdateRun(*rec);
    }
  }
  {
    MutexLock lock(ctx.mu);
    if (ctx.cancel_requested) {
      Finish(ctx, RunStatus::kCanceled, "canceled by user");
      return;
    }
  }
  if (Status t = Transition(ctx, RunStatus::kStarting); !t.ok()) {
    Finish(ctx, RunStatus::kFailed, "internal: " + t.message());
    return;
  }

  auto launch = MakeLaunchSpec(ctx, image_ref, 0);
  const fs::path work = WorkDir(ctx);
  const slurm::JobFiles files{work / kJobFolder};
  Status written = launch.status();
  slurm::TaskSpec task;
  if (written.ok()) {
    task.run_id = ctx.id;
    task.runtime = compute->container_runtime;
    task.image = image_ref;
    task.pull_auth = auth;
    task.container_prefix = ContainerName(workspace_id_, ctx.id);
    for (const std::string& kv : launch->env) {
      const std::size_t eq = kv.find('=');
      task.env[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
    }
    task.prepend_paths = launch->prepend_paths;
    task.mounts = launch->mounts;
    task.working_dir = launch->working_dir;
    task.command = launch->argv.back();
    task.shm_size_bytes = launch->shm_size_bytes;
    task.gpus_per_node = compute->gpus_per_node;
    task.distribution = ctx.request.distribution ? ctx.request.distribution->type : "";
    task.tasks_per_node = ProcessesPerNode(ctx.request);
    if (auto port = task.env.find("MASTER_PORT"); port != task.env.end()) {
      task.master_port = std::atoi(port->second.c_str());
    }
    task.stop_grace_seconds = options_.stop_grace_seconds;
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
    Finish(ctx, RunStatus::kFailed, "could not start the run: " + written.message());
    return;
  }
  slurm::JobRequest req;
  req.name = ContainerName(workspace_id_, ctx.id);
  req.comment = SlurmComment(ctx.id);
  req.partition = compute->partition;
  req.account = compute->account;
  req.qos = compute->qos;
  req.nodes = ctx.nodes;
  req.tasks_per_node = task.tasks_per_node;
  req.gpus_per_node = compute->gpus_per_node;
  // trainyard stops the run at its exact timeout; Slurm's limit (whole minutes) is the backstop
  // should this daemon be down then.
  req.time_limit_seconds = ctx.request.timeout_seconds.value_or(0);
  req.extra_args = compute->sbatch_args;
  req.script = files.BatchScript();
  req.output = work / kJobLog;
  req.working_dir = files.dir;
  auto job = options_.slurm->Submit(req);
  if (!job.ok()) {
    drop_secrets();
    Finish(ctx, RunStatus::kFailed, "Slurm refused the job: " + job.status().message());
    return;
  }
  std::fprintf(stderr, "[%s] run %s: Slurm job %lld in partition %s\n",
               FormatTimeIso(NowMillis()).c_str(), ctx.id.c_str(), static_cast<long long>(*job),
               compute->partition.c_str());
  if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
    rec->container_id = kSlurmJobPrefix + std::to_string(*job);
    (void)store_.UpdateRun(*rec);
  }
  {
    MutexLock lock(ctx.mu);
    ctx.slurm_job = *job;
  }
  FollowSlurm(ctx);
}

void Scheduler::FollowSlurm(RunContext& ctx) {
  const fs::path run_dir = layout_.RunDir(ctx.id);
  const fs::path work = WorkDir(ctx);
  const slurm::JobFiles files{work / kJobFolder};
  std::int64_t job_id;
  {
    MutexLock lock(ctx.mu);
    job_id = ctx.slurm_job;
  }
  const std::string job_name = "Slurm job " + std::to_string(job_id);

  // The nodes' output, as for a local run: one node's is the run's log; several each have their
  // own, and the run's log has every node's lines prefixed "[node i] ". Re-read from the first
  // byte into truncated files, also after a re-attach.
  const int n = ctx.nodes;
  LogWriter std_log(run_dir, kStdLog, true, [this, &ctx] { Notify(ctx.id); });
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

  std::optional<std::chrono::steady_clock::time_point> deadline;
  auto arm_deadline = [&] {
    if (!ctx.request.timeout_seconds || deadline) return;
    const std::int64_t elapsed_ms = std::max<std::int64_t>(0, NowMillis() - ctx.running_since);
    deadline = std::chrono::steady_clock::now() +
               std::chrono::milliseconds(*ctx.request.timeout_seconds * 1000 - elapsed_ms);
  };
  if (ctx.status == RunStatus::kRunning) arm_deadline();

  std::optional<slurm::JobInfo> ended;  // the job as it ended, when Slurm still knew it
  bool cancel_sent = false;
  int misses = 0;
  const auto poll = std::chrono::milliseconds(std::max(20, options_.slurm_poll_ms));
  auto next_poll = std::chrono::steady_clock::now();
  for (;;) {
    read_logs();
    {
      // The job goes on without this daemon; the next one finds it again (RecoverSlurm).
      MutexLock lock(mu_);
      if (shutting_down_) return;
    }
    const auto now = std::chrono::steady_clock::now();
    bool cancel, timed_out;
    {
      MutexLock lock(ctx.mu);
      if (deadline && now >= *deadline) ctx.timed_out = true;
      cancel = ctx.cancel_requested;
      timed_out = ctx.timed_out;
    }
    if ((cancel || timed_out) && !cancel_sent) {
      // scancel signals the job's steps; each task stops its container with the grace period.
      if (Status st = options_.slurm->Cancel(job_id); st.ok()) {
        cancel_sent = true;
      } else {
        std::fprintf(stderr, "[%s] run %s: scancel %lld: %s\n", FormatTimeIso(NowMillis()).c_str(),
                     ctx.id.c_str(), static_cast<long long>(job_id), st.message().c_str());
      }
    }
    if (now >= next_poll) {
      // Quickly while the job waits to start, so Running shows when it does; then every poll.
      next_poll = now + (ctx.status == RunStatus::kRunning ? poll : kStartPoll);
      auto jobs = SlurmJobs(kStartPoll / 2);
      if (jobs.ok()) {
        const slurm::JobInfo* job = nullptr;
        for (const auto& j : *jobs) {
          if (j.id == job_id) job = &j;
        }
        if (job == nullptr) {
          // Forgotten by slurmctld (MinJobAge passed while this daemon was away), or not yet
          // listed: the job's own exit file and accounting tell how it ended.
          if (slurm::ReadJobExit(files) || ++misses >= 3) {
            if (auto acct = options_.slurm->AccountedJob(job_id); acct.ok() && *acct)
              ended = **acct;
            break;
          }
        } else {
          misses = 0;
          if (job->state == "PENDING") {
            const std::string why = PendingReason(*job);
            bool changed;
            {
              MutexLock lock(ctx.mu);
              changed = ctx.slurm_wait != why;
              ctx.slurm_wait = why;
            }
            if (ctx.status != RunStatus::kQueued) {
              (void)Transition(ctx, RunStatus::kQueued);
            } else if (changed) {
              Notify(ctx.id);
            }
          } else if (!slurm::IsFinalState(job->state)) {
            {
              MutexLock lock(ctx.mu);
              ctx.slurm_wait.clear();
            }
            if (ctx.status != RunStatus::kRunning && ctx.status != RunStatus::kCancelRequested &&
                job->state != "CONFIGURING") {
              if (ctx.status == RunStatus::kQueued) (void)Transition(ctx, RunStatus::kStarting);
              (void)Transition(ctx, RunStatus::kRunning);
              ctx.running_since = NowMillis();
            }
            if (ctx.status == RunStatus::kRunning) arm_deadline();
          } else {
            ended = *job;
            if (ctx.status != RunStatus::kRunning && ctx.status != RunStatus::kCancelRequested &&
                job->start_time > 0) {
              // It ran between two looks: it still went through Running.
              (void)Transition(ctx, RunStatus::kRunning);
            }
            break;
          }
        }
      } else {
        std::fprintf(stderr, "[%s] run %s: squeue: %s\n", FormatTimeIso(NowMillis()).c_str(),
                     ctx.id.c_str(), jobs.status().message().c_str());
      }
    }
    MutexLock lock(ctx.mu);
    const auto poll_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    while (!(ctx.cancel_requested && !cancel_sent)) {
      if (!lock.WaitUntil(ctx.cv, poll_until)) break;
    }
  }
  {
    MutexLock lock(ctx.mu);
    ctx.slurm_wait.clear();
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

  bool canceled, timed_out;
  {
    MutexLock lock(ctx.mu);
    canceled = ctx.cancel_requested;
    timed_out = ctx.timed_out;
  }
  // The task that failed first is the cause; the others were most likely stopped because of it.
  std::optional<slurm::TaskExit> cause;
  const int tasks = n * ProcessesPerNode(ctx.request);
  for (int t = 0; t < tasks; ++t) {
    auto e = slurm::ReadTaskExit(files, t);
    if (e && e->exit_code != 0 && (!cause || e->ended_ns < cause->ended_ns)) cause = e;
  }
  std::optional<int> exit_code;
  if (cause) {
    exit_code = cause->exit_code;
  } else if (job_exit) {
    exit_code = job_exit->exit_code;
  } else if (ended && ended->exit_code) {
    exit_code = *ended->exit_code;
  }
  if (exit_code) {
    if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
      rec->exit_code = *exit_code;
      (void)store_.UpdateRun(*rec);
    }
  }
  (void)Transition(ctx, RunStatus::kFinalizing);
  Status collected = Status::Ok();
  if (work != run_dir) {
    // The run wrote its outputs and logs on the shared folder; they are kept in the workspace.
    // Both folders were the run's to write: copied by descriptor, links left behind.
    auto from = RootedDir::Open(work);
    auto to = RootedDir::Create(run_dir);
    collected = !from.ok() ? from.status() : to.status();
    for (const char* d : {"outputs", "logs"}) {
      if (collected.ok()) collected = CopyTree(*from, *to, d);
    }
    if (!collected.ok()) collected = collected.WithPrefix("copying " + work.string() + " back");
  }
  if (collected.ok()) collected = CollectOutputs(ctx);

  const std::string state = ended ? ended->state : "";
  const std::string node_prefix =
      cause && n > 1 ? "node " + std::to_string(cause->node) + ": " : "";
  if (canceled) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
  } else if (timed_out) {
    Finish(ctx, RunStatus::kFailed,
           "timed out after " + std::to_string(*ctx.request.timeout_seconds) + " s");
  } else if (state == "TIMEOUT") {
    Finish(ctx, RunStatus::kFailed,
           "timed out: " + job_name + " reached its Slurm time limit of " +
               std::to_string(ended->time_limit_minutes) + " min");
  } else if (state == "CANCELLED") {
    Finish(ctx, RunStatus::kCanceled,
           job_name +
               " was cancelled in Slurm (scancel or an administrator), not through "
               "trainyard");
  } else if (state == "NODE_FAIL" || state == "BOOT_FAIL") {
    Finish(ctx, RunStatus::kFailed,
           "compute lost: a node of " + job_name + " failed (" + state + ", nodes " + ended->nodes +
               ")");
  } else if (state == "OUT_OF_MEMORY" || (cause && cause->oom_killed)) {
    Finish(ctx, RunStatus::kFailed,
           "out of memory: " + node_prefix + "the kernel killed the script (" + job_name +
               (state == "OUT_OF_MEMORY" ? ", OUT_OF_MEMORY" : "") + ")");
  } else if (state == "PREEMPTED" || state == "DEADLINE" || state == "REVOKED") {
    Finish(ctx, RunStatus::kFailed, job_name + " ended " + state + " in Slurm");
  } else if (job_exit && job_exit->pull_failed) {
    const std::string last = LastLine(work, kJobLog);
    Finish(ctx, RunStatus::kFailed,
           "the nodes could not pull the run's image" + (last.empty() ? "" : ": " + last) +
               " (its log: logs/slurm_job.log)");
  } else if (!ended && !job_exit) {
    Finish(ctx, RunStatus::kFailed,
           "lost: " + job_name + " is no longer known to Slurm and left no exit status in " +
               files.dir.string() + " (its log: logs/slurm_job.log)");
  } else if (auto verdict = ScriptFailure(store_, ctx.id)) {
    Finish(ctx, RunStatus::kFailed, *verdict);
  } else if (exit_code && *exit_code != 0) {
    std::string reason = node_prefix + "script exited with code " + std::to_string(*exit_code);
    if (n > 1 && cause) {
      reason += " (its log: " + NodeLogName(cause->node) + "; the other nodes were stopped)";
    }
    if (!cause) reason = job_name + " failed: " + reason + " (its log: logs/slurm_job.log)";
    if (CodeIsReadOnly(ctx.request) && LogTailMentions(run_dir, kStdLog, "Read-only file system")) {
      reason +=
          "; it tried to write into its code folder, which is read-only: write into ./outputs "
          "or ./logs, or submit with --copy for a writable copy";
    }
    Finish(ctx, RunStatus::kFailed, reason);
  } else if (ended && ended->signal) {
    Finish(ctx, RunStatus::kFailed,
           job_name + " was killed by signal " + std::to_string(*ended->signal));
  } else if (!collected.ok()) {
    Finish(ctx, RunStatus::kFailed, "cannot collect the outputs: " + collected.message());
  } else {
    Finish(ctx, RunStatus::kCompleted, "");
  }
}

bool Scheduler::RecoverSlurm(const std::shared_ptr<RunContext>& ctx, const store::RunRecord& rec) {
  auto jobs =
      options_.slurm != nullptr
          ? options_.slurm->ListJobs()
          : StatusOr<std::vector<slurm::JobInfo>>(Unavailable("this daemon cannot reach Slurm"));
  if (!jobs.ok()) {
    // Failing the run would be a guess: its job may be alive. It stays until Slurm answers.
    std::fprintf(stderr, "[%s] run %s: not recovered, Slurm did not answer: %s\n",
                 FormatTimeIso(NowMillis()).c_str(), rec.id.c_str(),
                 jobs.status().message().c_str());
    return true;
  }
  // The job is found by the run id in its comment: also one submitted just before the previous
  // daemon died, before it could record the job id.
  const std::string comment = SlurmComment(rec.id);
  std::int64_t job = 0;
  for (const auto& j : *jobs) {
    if (j.comment == comment && j.id > job) job = j.id;
  }
  if (const auto recorded = SlurmJobOf(rec); job == 0 && recorded) {
    // Forgotten by slurmctld: its exit file says whether it ran to its end.
    if (slurm::ReadJobExit(slurm::JobFiles{WorkDir(*ctx) / kJobFolder}) ||
        rec.status == RunStatus::kRunning || rec.status == RunStatus::kFinalizing ||
        rec.status == RunStatus::kCancelRequested) {
      job = *recorded;
    }
  }
  if (job == 0) return false;  // never submitted: back in its queue like any run
  ctx->attach = true;
  {
    MutexLock lock(ctx->mu);
    ctx->slurm_job = job;
    ctx->cancel_requested = rec.status == RunStatus::kCancelRequested;
  }
  if (ctx->running_since == 0) ctx->running_since = NowMillis();
  MutexLock lock(mu_);
  HoldNodesLocked(*ctx);
  StartWorkerLocked(ctx);
  return true;
}

}  // namespace trainyard::sched

#include "trainyard/sched/scheduler.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard::sched {
namespace {

using store::RunStatus;

// Paths inside the container.
constexpr const char* kCodeDir = "/trainyard/code";
constexpr const char* kSocketDir = "/trainyard/sock";
constexpr const char* kSdkDir = "/trainyard/sdk/python";
constexpr const char* kInputsDir = "/trainyard/inputs";
constexpr const char* kAnonymousEnv = "anonymous";

std::string ContainerName(const std::string& run_id) { return "trainyard-" + run_id; }

// Appends to one of a run's log files and tells listeners after each write.
class LogWriter {
 public:
  LogWriter(const fs::path& path, bool truncate, std::function<void()> on_write)
      : on_write_(std::move(on_write)) {
    (void)MakeDirs(path.parent_path());
    // The folder may be writable by the run: never write through a symlink or into a FIFO.
    fd_ = ::open(
        path.c_str(),
        O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | (truncate ? O_TRUNC : O_APPEND),
        0644);
    struct stat st {};
    if (fd_ >= 0 && (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode))) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~LogWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  void Write(std::string_view text) {
    if (fd_ < 0 || text.empty()) return;
    while (!text.empty()) {
      ssize_t n = ::write(fd_, text.data(), text.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      text.remove_prefix(static_cast<size_t>(n));
    }
    on_write_();
  }
  docker::TextSink Sink() {
    return [this](std::string_view t) { Write(t); };
  }

 private:
  int fd_ = -1;
  std::function<void()> on_write_;
};

// Whether a run's code folder is mounted read-only (hard links to the snapshot's objects).
bool CodeIsReadOnly(const spec::RunRequest& req) {
  return !req.snapshot_id.empty() && !req.code_copy;
}

// Whether the last 64 KiB of the regular file at `path` (never through a symlink) contain
// `needle`.
bool LogTailMentions(const fs::path& path, std::string_view needle) {
  constexpr off_t kTail = 64 << 10;
  const int fd = OpenRegularNoFollow(path);
  if (fd < 0) return false;
  struct stat st {};
  std::string buf;
  if (::fstat(fd, &st) == 0) {
    const off_t start = st.st_size > kTail ? st.st_size - kTail : 0;
    buf.resize(static_cast<size_t>(st.st_size - start));
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), start);
    buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  ::close(fd);
  return buf.find(needle) != std::string::npos;
}

// The reason a run ends with when its script reported fail(message) (POST /jobs/{run}/status),
// or nullopt when it did not (or the store cannot say).
std::optional<std::string> ScriptFailure(store::Store& store, const std::string& run_id) {
  auto rec = store.GetRun(run_id);
  if (!rec.ok() || rec->script_status != store::RunStatus::kFailed) return std::nullopt;
  return "failed by the script: " + rec->script_message;
}

}  // namespace

struct Scheduler::RunContext {
  std::string id;
  spec::RunRequest request;
  RunStatus status = RunStatus::kNotStarted;
  std::int64_t running_since = 0;

  // How the worker starts: a fresh run, or a re-attach to a container a previous daemon
  // launched.
  bool attach = false;
  bool holds_slot = false;

  std::mutex mu;
  std::condition_variable cv;
  bool cancel_requested = false;  // Guarded by mu.
  bool timed_out = false;         // Guarded by mu.
  bool node_done = false;         // Guarded by mu.
  std::string handle;             // Guarded by mu: the container, once launched.
};

Scheduler::Scheduler(store::Store& store, EnvironmentRegistry& environments,
                     envbuild::ImageBuilder& builder, exec::Executor& executor,
                     const cas::Snapshotter& snapshots, const SecretBox& secrets,
                     WorkspaceLayout layout, SchedulerOptions options)
    : store_(store),
      environments_(environments),
      builder_(builder),
      executor_(executor),
      snapshots_(snapshots),
      secrets_(secrets),
      layout_(std::move(layout)),
      options_(options) {
  if (options_.max_concurrent_runs < 1) options_.max_concurrent_runs = 1;
}

Scheduler::~Scheduler() {
  std::map<std::string, std::thread> workers;
  {
    std::lock_guard lock(mu_);
    shutting_down_ = true;
    workers.swap(workers_);
  }
  slot_cv_.notify_all();
  for (auto& [id, t] : workers) {
    if (t.joinable()) t.join();
  }
}

void Scheduler::ReapWorkersLocked() {
  for (const auto& id : finished_) {
    auto it = workers_.find(id);
    if (it == workers_.end()) continue;
    // The worker has released mu_ for the last time; all that is left is its return.
    if (it->second.joinable()) it->second.join();
    workers_.erase(it);
  }
  finished_.clear();
}

void Scheduler::SetChangeListener(std::function<void(const std::string&)> listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

void Scheduler::Notify(const std::string& run_id) {
  std::function<void(const std::string&)> listener;
  {
    std::lock_guard lock(mu_);
    listener = listener_;
  }
  if (listener) listener(run_id);
}

Status Scheduler::Transition(RunContext& ctx, RunStatus to) {
  TY_RETURN_IF_ERROR(store_.TransitionRun(ctx.id, to, NowMillis()));
  // One line per transition in the daemon's log (stderr): what happened to which run, and when.
  std::fprintf(stderr, "[%s] run %s: %s -> %s\n", FormatTimeIso(NowMillis()).c_str(),
               ctx.id.c_str(), std::string(store::RunStatusName(ctx.status)).c_str(),
               std::string(store::RunStatusName(to)).c_str());
  ctx.status = to;
  Notify(ctx.id);
  return Status::Ok();
}

StatusOr<store::RunRecord> Scheduler::Submit(spec::RunRequest request) {
  // Fail fast on what can never run.
  if (request.compute != "local") {
    return NotFound("compute target '" + request.compute + "' not found; available: local");
  }
  if (request.instance_count != 1) {
    return InvalidArgument("the job asks for " + std::to_string(request.instance_count) +
                           " nodes, but compute 'local' has 1 node");
  }
  if (!IsValidName(request.experiment_name)) {
    return InvalidArgument("invalid experiment name '" + request.experiment_name + "'");
  }
  if (!request.name.empty() && !IsValidName(request.name)) {
    return InvalidArgument("invalid run name '" + request.name + "'");
  }
  constexpr std::int64_t kMaxTimeoutSeconds = 10LL * 366 * 24 * 3600;  // ten years
  if (request.timeout_seconds &&
      (*request.timeout_seconds <= 0 || *request.timeout_seconds > kMaxTimeoutSeconds)) {
    return InvalidArgument("limits.timeout must be a positive number of seconds, at most " +
                           std::to_string(kMaxTimeoutSeconds) + " (leave it out for no limit)");
  }
  if (!request.snapshot_id.empty()) {
    auto m = snapshots_.Load(request.snapshot_id);
    if (!m.ok()) return m.status().WithPrefix("the job's code snapshot");
  }
  for (const auto& [name, in] : request.inputs) {
    if (in.kind == spec::InputSpec::Kind::kLiteral) continue;
    std::error_code ec;
    fs::path p(in.path);
    bool want_dir = in.kind == spec::InputSpec::Kind::kUriFolder;
    if (!p.is_absolute() || (want_dir ? !fs::is_directory(p, ec) : !fs::is_regular_file(p, ec))) {
      return InvalidArgument("input '" + name + "': " + (want_dir ? "folder " : "file ") + in.path +
                             " does not exist on the daemon's machine");
    }
  }
  // The environment: an inline one is registered (anonymously unless it has a name) so every
  // run refers to a stored, versioned definition.
  if (request.environment) {
    spec::EnvironmentDefinition def = *request.environment;
    if (def.name.empty()) {
      def.name = kAnonymousEnv;
      def.version = def.DefinitionHash().substr(0, 16);
    }
    TY_ASSIGN_OR_RETURN(store::EnvironmentRecord rec, environments_.Register(std::move(def)));
    request.environment_name = rec.name;
    request.environment_version = rec.version;
    request.environment.reset();
  }
  TY_ASSIGN_OR_RETURN(store::EnvironmentRecord env,
                      store_.GetEnvironment(request.environment_name, request.environment_version));
  request.environment_version = env.version;

  // The command must substitute cleanly before the run is accepted.
  {
    std::map<std::string, std::string> ins, outs;
    for (const auto& [k, v] : request.inputs) ins[k] = v.value.empty() ? v.path : v.value;
    for (const auto& [k, v] : request.outputs) outs[k] = k;
    auto cmd = spec::SubstituteCommand(request.command, ins, outs);
    if (!cmd.ok()) return cmd.status();
  }

  store::RunRecord rec;
  rec.id = request.name.empty() ? NewRunId(request.experiment_name) : request.name;
  rec.experiment = request.experiment_name;
  rec.display_name = request.display_name.empty() ? rec.id : request.display_name;
  rec.description = request.description;
  rec.compute = request.compute;
  rec.status = RunStatus::kNotStarted;
  rec.request_json = request.ToJson(spec::SecretMode::kAsIs).dump();
  rec.snapshot_id = request.snapshot_id;
  rec.environment_name = env.name;
  rec.environment_version = env.version;
  rec.image_hash = env.image_hash;
  rec.tags = request.tags;
  rec.created_at = NowMillis();
  TY_RETURN_IF_ERROR(store_.InsertRun(rec));

  auto ctx = std::make_shared<RunContext>();
  ctx->id = rec.id;
  ctx->request = std::move(request);
  if (Status t = Transition(*ctx, RunStatus::kQueued); !t.ok()) {
    Finish(*ctx, RunStatus::kFailed, "internal: " + t.message());
    return t;
  }
  {
    std::lock_guard lock(mu_);
    queue_.push_back(ctx->id);
  }
  StartWorker(ctx);
  return store_.GetRun(rec.id);
}

void Scheduler::StartWorker(std::shared_ptr<RunContext> ctx) {
  std::lock_guard lock(mu_);
  ReapWorkersLocked();
  active_[ctx->id] = ctx;
  workers_[ctx->id] = std::thread([this, ctx] { Work(ctx); });
}

bool Scheduler::WaitForSlot(RunContext& ctx) {
  std::unique_lock lock(mu_);
  slot_cv_.wait(lock, [&] {
    std::lock_guard run_lock(ctx.mu);
    return shutting_down_ || ctx.cancel_requested ||
           (!queue_.empty() && queue_.front() == ctx.id && busy_ < options_.max_concurrent_runs);
  });
  std::erase(queue_, ctx.id);
  bool canceled;
  {
    std::lock_guard run_lock(ctx.mu);
    canceled = ctx.cancel_requested;
  }
  if (shutting_down_ || canceled) {
    slot_cv_.notify_all();  // the queue's head may have changed
    return false;
  }
  ++busy_;
  ctx.holds_slot = true;
  slot_cv_.notify_all();  // the queue's head changed: the next run may fit too
  return true;
}

void Scheduler::ReleaseSlot() {
  {
    std::lock_guard lock(mu_);
    --busy_;
  }
  slot_cv_.notify_all();
}

void Scheduler::Work(std::shared_ptr<RunContext> ctx) {
  if (ctx->attach) {
    FollowAndFinish(*ctx);
  } else {
    Execute(*ctx);
  }
  if (ctx->holds_slot) ReleaseSlot();
  std::lock_guard lock(mu_);
  active_.erase(ctx->id);
  finished_.push_back(ctx->id);
}

void Scheduler::Finish(RunContext& ctx, RunStatus status, const std::string& reason) {
  if (!reason.empty()) {
    std::fprintf(stderr, "[%s] run %s: %s\n", FormatTimeIso(NowMillis()).c_str(), ctx.id.c_str(),
                 reason.c_str());
  }
  auto rec = store_.GetRun(ctx.id);
  if (rec.ok()) {
    rec->failure_reason = reason;
    (void)store_.UpdateRun(*rec);
  }
  (void)Transition(ctx, status);
}

StatusOr<exec::LaunchSpec> Scheduler::MakeLaunchSpec(RunContext& ctx, const std::string& image) {
  const spec::RunRequest& req = ctx.request;
  const fs::path run_dir = layout_.RunDir(ctx.id);
  exec::LaunchSpec spec;
  spec.run_id = ctx.id;
  spec.name = ContainerName(ctx.id);
  spec.image = image;
  spec.working_dir = kCodeDir;
  spec.shm_size_bytes = req.shm_size_bytes.value_or(0);
  spec.labels = {{"trainyard.run_id", ctx.id},
                 {"trainyard.node", "0"},
                 {"trainyard.workspace", layout_.root.string()}};
  spec.mounts.push_back({(run_dir / "code").string(), kCodeDir, CodeIsReadOnly(req)});
  spec.mounts.push_back(
      {(run_dir / "outputs").string(), std::string(kCodeDir) + "/outputs", false});
  spec.mounts.push_back({(run_dir / "logs").string(), std::string(kCodeDir) + "/logs", false});

  std::map<std::string, std::string> env;
  TY_ASSIGN_OR_RETURN(spec::EnvironmentDefinition def,
                      environments_.Resolve(req.environment_name, req.environment_version));
  for (const auto& [k, v] : def.environment_variables) env[k] = v;
  for (const auto& [k, v] : req.environment_variables) env[k] = v;
  if (!env.count("PYTHONUNBUFFERED")) env["PYTHONUNBUFFERED"] = "1";  // logs stream live

  std::map<std::string, std::string> ins, outs;
  for (const auto& [name, in] : req.inputs) {
    std::string value;
    if (in.kind == spec::InputSpec::Kind::kLiteral) {
      value = in.value;
    } else {
      std::string target = std::string(kInputsDir) + "/" + name;
      if (in.kind == spec::InputSpec::Kind::kUriFile) {
        target += "/" + fs::path(in.path).filename().string();
      }
      spec.mounts.push_back({in.path, target, true});
      value = target;
    }
    ins[name] = value;
    env["AZURE_ML_INPUT_" + name] = value;
  }
  for (const auto& [name, out] : req.outputs) {
    TY_RETURN_IF_ERROR(MakeDirs(run_dir / "outputs" / name));
    std::string target = std::string(kCodeDir) + "/outputs/" + name;
    outs[name] = target;
    env["AZURE_ML_OUTPUT_" + name] = target;
  }
  if (!options_.socket_dir.empty()) {
    spec.mounts.push_back({options_.socket_dir.string(), kSocketDir, true});
    env["TRAINYARD_TRACKING_URL"] = std::string("unix://") + kSocketDir + "/api.sock";
    env["TRAINYARD_RUN_TOKEN"] = secrets_.RunToken(ctx.id);
  }
  if (!options_.sdk_dir.empty()) {
    spec.mounts.push_back({options_.sdk_dir.string(), kSdkDir, true});
    spec.prepend_paths["PYTHONPATH"] = kSdkDir;
  }
  env["TRAINYARD_RUN_ID"] = ctx.id;
  env["TRAINYARD_EXPERIMENT"] = req.experiment_name;
  env["TRAINYARD_WORKSPACE"] = layout_.root.string();
  env["AZUREML_RUN_ID"] = ctx.id;
  env["AZUREML_ARM_PROJECT_NAME"] = req.experiment_name;
  for (const auto& [k, v] : env) spec.env.push_back(k + "=" + v);

  TY_ASSIGN_OR_RETURN(std::string command, spec::SubstituteCommand(req.command, ins, outs));
  spec.argv = {"/bin/sh", "-c", command};
  return spec;
}

void Scheduler::Execute(RunContext& ctx) {
  auto canceled = [&] {
    std::lock_guard lock(ctx.mu);
    return ctx.cancel_requested;
  };
  if (!WaitForSlot(ctx)) {
    if (canceled()) Finish(ctx, RunStatus::kCanceled, "canceled by user");
    return;  // shutting down: the run stays Queued and the next daemon picks it up
  }
  if (canceled()) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
    return;
  }
  if (Status t = Transition(ctx, RunStatus::kPreparing); !t.ok()) {
    Finish(ctx, RunStatus::kFailed, "internal: " + t.message());
    return;
  }
  const fs::path run_dir = layout_.RunDir(ctx.id);
  LogWriter build_log(run_dir / kBuildLog, false, [this, &ctx] { Notify(ctx.id); });

  // The snapshot becomes the working folder: hard links to its read-only objects (the folder
  // is then mounted read-only, so a run cannot write through a link into the store), or a
  // writable copy when the job asks for one. Outputs and logs are the run's own folders,
  // mounted over ./outputs and ./logs; their mount points must exist in a read-only folder.
  const fs::path code_dir = run_dir / "code";
  (void)RemoveTree(code_dir);
  Status s = ctx.request.snapshot_id.empty()
                 ? MakeDirs(code_dir)
                 : snapshots_.Materialize(ctx.request.snapshot_id, code_dir,
                                          ctx.request.code_copy ? cas::MaterializeMode::kCopy
                                                                : cas::MaterializeMode::kLink);
  for (const char* d : {"outputs", "logs", "user_logs", "code/outputs", "code/logs"}) {
    if (s.ok()) s = MakeDirs(run_dir / d);
  }
  if (!s.ok()) {
    build_log.Write("Preparing the working folder failed: " + s.message() + "\n");
    Finish(ctx, RunStatus::kFailed, "preparing the working folder failed: " + s.message());
    return;
  }

  auto def = environments_.Resolve(ctx.request.environment_name, ctx.request.environment_version);
  if (!def.ok()) {
    Finish(ctx, RunStatus::kFailed, "environment: " + def.status().message());
    return;
  }
  build_log.Write("Environment " + def->name + ":" + def->version + "\n");
  // Secrets never reach a log: the sink redacts the registry password should the engine echo it.
  std::string password = def->registry ? def->registry->password : "";
  auto image = builder_.EnsureImage(*def, [&](std::string_view text) {
    build_log.Write(password.empty() ? std::string(text) : Redact(std::string(text), password));
  });
  if (!image.ok()) {
    const Status& e = image.status();
    std::string reason;
    switch (e.code()) {
      case StatusCode::kUnauthenticated:
        reason = e.message();
        break;
      case StatusCode::kNotFound:
        reason = "image not found: " + e.message();
        break;
      case StatusCode::kUnavailable:
        reason = "compute lost: " + e.message();
        break;
      default:
        reason = "image build failed: " + e.message();
        break;
    }
    reason = Redact(reason, password);
    build_log.Write("\n" + reason + "\n");
    Finish(ctx, RunStatus::kFailed, reason);
    return;
  }
  if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
    rec->image = image->image;
    rec->image_hash = image->image_hash;
    (void)store_.UpdateRun(*rec);
  }
  if (canceled()) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
    return;
  }
  if (Status t = Transition(ctx, RunStatus::kStarting); !t.ok()) {
    Finish(ctx, RunStatus::kFailed, "internal: " + t.message());
    return;
  }
  auto launch = MakeLaunchSpec(ctx, image->image);
  StatusOr<std::string> handle =
      launch.ok() ? StatusOr<std::string>(Status::Ok()) : launch.status();
  if (launch.ok()) {
    (void)executor_.Cleanup(launch->name);  // a leftover from an interrupted attempt
    handle = executor_.Launch(*launch);
  }
  if (!handle.ok()) {
    Finish(ctx, RunStatus::kFailed, "could not start the run: " + handle.status().message());
    return;
  }
  {
    std::lock_guard lock(ctx.mu);
    ctx.handle = launch->name;
  }
  if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
    rec->container_id = *handle;
    (void)store_.UpdateRun(*rec);
  }
  if (!Transition(ctx, RunStatus::kRunning).ok()) {
    // Canceled between launch and now: FollowAndFinish stops the container.
  }
  ctx.running_since = NowMillis();
  FollowAndFinish(ctx);
}

void Scheduler::FollowAndFinish(RunContext& ctx) {
  const fs::path run_dir = layout_.RunDir(ctx.id);
  std::string handle;
  {
    std::lock_guard lock(ctx.mu);
    handle = ctx.handle;
  }
  // Cancel and timeout are carried out by a watchdog, so the log stream is never blocked.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (ctx.request.timeout_seconds) {
    std::int64_t elapsed_ms = std::max<std::int64_t>(0, NowMillis() - ctx.running_since);
    deadline = std::chrono::steady_clock::now() +
               std::chrono::milliseconds(*ctx.request.timeout_seconds * 1000 - elapsed_ms);
  }
  std::thread watchdog([&] {
    std::unique_lock lock(ctx.mu);
    auto stop_wanted = [&] { return ctx.node_done || ctx.cancel_requested; };
    if (deadline) {
      if (!ctx.cv.wait_until(lock, *deadline, stop_wanted)) ctx.timed_out = true;
    } else {
      ctx.cv.wait(lock, stop_wanted);
    }
    if (ctx.node_done) return;
    lock.unlock();
    (void)executor_.Stop(handle, options_.stop_grace_seconds);
  });

  // Re-reading from the first byte into a truncated file keeps the log whole and free of
  // duplicates, also after a re-attach.
  LogWriter std_log(run_dir / kStdLog, true, [this, &ctx] { Notify(ctx.id); });
  Status logs = executor_.StreamLogs(handle, std_log.Sink());
  auto exit = executor_.Wait(handle);
  {
    std::lock_guard lock(ctx.mu);
    ctx.node_done = true;
  }
  ctx.cv.notify_all();
  watchdog.join();

  bool canceled, timed_out;
  {
    std::lock_guard lock(ctx.mu);
    canceled = ctx.cancel_requested;
    timed_out = ctx.timed_out;
  }
  if (exit.ok()) {
    if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
      rec->exit_code = exit->exit_code;
      (void)store_.UpdateRun(*rec);
    }
  }
  (void)Transition(ctx, RunStatus::kFinalizing);
  // ./outputs and ./logs were written straight into the run's folders by the bind mounts;
  // nothing is left inside the container once it is removed.
  (void)executor_.Cleanup(handle);
  Status collected = Status::Ok();
  if (options_.collect_outputs) {
    collected = options_.collect_outputs(ctx.id, layout_.RunDir(ctx.id));
  }

  if (canceled) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
  } else if (timed_out) {
    Finish(ctx, RunStatus::kFailed,
           "timed out after " + std::to_string(*ctx.request.timeout_seconds) + " s");
  } else if (!exit.ok()) {
    Finish(ctx, RunStatus::kFailed, "compute lost: " + exit.status().message());
  } else if (auto verdict = ScriptFailure(store_, ctx.id)) {
    // The script called fail(): its verdict stands whatever the exit code (docs/tracking.md).
    Finish(ctx, RunStatus::kFailed, *verdict);
  } else if (exit->oom_killed) {
    Finish(ctx, RunStatus::kFailed,
           "out of memory: the kernel killed the script (exit code " +
               std::to_string(exit->exit_code) + ")");
  } else if (exit->exit_code != 0) {
    std::string reason = "script exited with code " + std::to_string(exit->exit_code);
    if (CodeIsReadOnly(ctx.request) &&
        LogTailMentions(layout_.RunDir(ctx.id) / kStdLog, "Read-only file system")) {
      reason +=
          "; it tried to write into its code folder, which is read-only (the files are the "
          "snapshot's, shared with other runs): write into ./outputs or ./logs, or submit with "
          "--copy (or `snapshot: {copy: true}` in the job file) for a writable copy";
    }
    Finish(ctx, RunStatus::kFailed, reason);
  } else if (!collected.ok()) {
    Finish(ctx, RunStatus::kFailed, "cannot collect the outputs: " + collected.message());
  } else {
    Finish(ctx, RunStatus::kCompleted, "");
  }
  (void)logs;
}

Status Scheduler::Cancel(const std::string& run_id) {
  TY_ASSIGN_OR_RETURN(store::RunRecord rec, store_.GetRun(run_id));
  if (store::IsTerminal(rec.status)) {
    return FailedPrecondition("run '" + run_id + "' already ended as " +
                              std::string(store::RunStatusName(rec.status)));
  }
  std::shared_ptr<RunContext> ctx;
  {
    std::lock_guard lock(mu_);
    auto it = active_.find(run_id);
    if (it != active_.end()) ctx = it->second;
  }
  if (!ctx) return FailedPrecondition("run '" + run_id + "' is not active in this daemon");
  {
    std::lock_guard lock(ctx->mu);
    if (ctx->cancel_requested) return Status::Ok();
    ctx->cancel_requested = true;
  }
  (void)store_.TransitionRun(run_id, RunStatus::kCancelRequested, NowMillis());
  Notify(run_id);
  ctx->cv.notify_all();
  {
    // A queued worker checks its flag under mu_: taking it here means the wake-up cannot fall
    // between that check and its wait.
    std::lock_guard lock(mu_);
  }
  slot_cv_.notify_all();
  return Status::Ok();
}

Status Scheduler::Recover() {
  TY_ASSIGN_OR_RETURN(auto runs, store_.ListActiveRuns());
  for (const auto& rec : runs) {
    auto req_json = nlohmann::json::parse(rec.request_json, nullptr, false);
    auto req = req_json.is_discarded() ? StatusOr<spec::RunRequest>(Internal("bad request JSON"))
                                       : spec::RunRequest::FromJson(req_json);
    auto ctx = std::make_shared<RunContext>();
    ctx->id = rec.id;
    ctx->status = rec.status;
    if (!req.ok()) {
      Finish(*ctx, RunStatus::kFailed, "lost: the stored job could not be read after a restart");
      continue;
    }
    ctx->request = std::move(req).value();
    ctx->handle = ContainerName(rec.id);
    ctx->running_since = rec.TimeOf(RunStatus::kRunning);
    auto running = executor_.IsRunning(ctx->handle);
    if (!running.ok() && running.status().code() != StatusCode::kNotFound) {
      // The engine cannot be asked (dockerd down or restarting): failing the run would be a
      // guess, and its container may be alive. It stays as it is until a daemon can ask.
      std::fprintf(stderr, "[%s] run %s: not recovered, the engine did not answer: %s\n",
                   FormatTimeIso(NowMillis()).c_str(), rec.id.c_str(),
                   running.status().message().c_str());
      continue;
    }
    // A run caught in Starting is followed when its container runs, else started again
    // (Execute removes a half-made container first).
    const bool launched = rec.status == RunStatus::kRunning ||
                          rec.status == RunStatus::kFinalizing ||
                          rec.status == RunStatus::kCancelRequested ||
                          (rec.status == RunStatus::kStarting && running.ok() && *running);
    if (launched && running.ok()) {
      // The container is there, running or finished: follow it to its end.
      ctx->attach = true;
      ctx->cancel_requested = rec.status == RunStatus::kCancelRequested;
      if (ctx->running_since == 0) ctx->running_since = NowMillis();
      {
        std::lock_guard lock(mu_);
        ++busy_;
      }
      ctx->holds_slot = true;
      StartWorker(ctx);
    } else if (rec.status == RunStatus::kNotStarted || rec.status == RunStatus::kQueued ||
               rec.status == RunStatus::kPreparing || rec.status == RunStatus::kStarting) {
      {
        std::lock_guard lock(mu_);
        queue_.push_back(rec.id);
      }
      StartWorker(ctx);
    } else if (rec.status == RunStatus::kCancelRequested) {
      Finish(*ctx, RunStatus::kCanceled, "canceled by user");
    } else if (rec.status == RunStatus::kFinalizing && rec.exit_code &&
               ScriptFailure(store_, rec.id)) {
      Finish(*ctx, RunStatus::kFailed, *ScriptFailure(store_, rec.id));
    } else if (rec.status == RunStatus::kFinalizing && rec.exit_code) {
      Finish(
          *ctx, *rec.exit_code == 0 ? RunStatus::kCompleted : RunStatus::kFailed,
          *rec.exit_code == 0 ? "" : "script exited with code " + std::to_string(*rec.exit_code));
    } else {
      Finish(*ctx, RunStatus::kFailed, "lost — container missing after daemon restart");
    }
  }
  return Status::Ok();
}

}  // namespace trainyard::sched

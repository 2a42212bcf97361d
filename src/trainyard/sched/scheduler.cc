#include "trainyard/sched/scheduler.h"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "trainyard/common/fs.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/exec/run_logs.h"
#include "trainyard/spec/run_request_check.h"
#include "trainyard/spec/spec.h"

namespace trainyard::sched {
namespace {

namespace fs = std::filesystem;
using exec::LogWriter;
using store::RunStatus;

constexpr const char* kAnonymousEnv = "anonymous";

// The reason a run fails with when its image cannot be made.
std::string ImageFailureReason(const Status& e) {
  switch (e.code()) {
    case StatusCode::kUnauthenticated:
      return e.message();
    case StatusCode::kNotFound:
      return "image not found: " + e.message();
    case StatusCode::kUnavailable:
      return "compute lost: " + e.message();
    default:
      return "image build failed: " + e.message();
  }
}

// The reason a run ends with when its script reported fail(message), or nullopt.
std::optional<std::string> ScriptFailure(store::Store& store, const std::string& run_id) {
  auto rec = store.GetRun(run_id);
  if (!rec.ok() || rec->script_status != store::RunStatus::kFailed) return std::nullopt;
  return "failed by the script: " + rec->script_message;
}

}  // namespace

// An image built while the runs that need it wait in their queues: one build per image for
// all of them, its log copied into each run's build log (a run that joins late gets what was
// written so far).
struct Scheduler::BuildTask {
  std::uint64_t number = 0;  // its thread's key in build_threads_
  std::string image_hash;
  spec::EnvironmentDefinition def;
  Mutex mu;
  std::string text GUARDED_BY(mu);                                        // the build log so far
  std::map<std::string, std::shared_ptr<LogWriter>> logs GUARDED_BY(mu);  // by run id
  std::vector<std::shared_ptr<RunContext>> waiting;  // guarded by the scheduler's mu_

  void Attach(const std::string& run_id, std::shared_ptr<LogWriter> log) {
    MutexLock lock(mu);
    log->Write(text);
    logs[run_id] = std::move(log);
  }
  void Detach(const std::string& run_id) {
    MutexLock lock(mu);
    logs.erase(run_id);
  }
  void Write(std::string_view t) {
    MutexLock lock(mu);
    text.append(t);
    for (auto& [id, log] : logs) log->Write(t);
  }
};

struct Scheduler::RunContext {
  std::string id;
  spec::RunRequest request;
  store::RunStatus status = store::RunStatus::kNotStarted;  // the worker's
  std::int64_t running_since = 0;

  // How the worker starts: a fresh run, or following `launched`, which a previous daemon
  // launched (Recover).
  bool attach = false;
  std::unique_ptr<exec::LaunchedRun> launched;  // the worker's

  // Where it runs. Set at admission; `slots` while it holds nodes. Guarded by the scheduler's
  // mu_ (except `compute`, `executor` and `nodes`, fixed at admission).
  std::string compute;
  exec::RunExecutor* executor = nullptr;  // its compute type's; null when this daemon has none
  int nodes = 1;
  std::int64_t queued_at = 0;
  std::vector<int> slots;  // node slots held
  std::string image_hash;  // its environment's image, for the prebuild
  // Its environment, when its image build resolved it (for the build only: its password is
  // unsealed), so it is resolved once.
  std::optional<spec::EnvironmentDefinition> environment;

  // Cancel and timeout, shared with its executor.
  exec::RunControl control;
};

// The scheduler's side of one run, as its executor sees it.
class Scheduler::Host : public exec::RunHost {
 public:
  Host(Scheduler& scheduler, RunContext& ctx) : s_(scheduler), ctx_(ctx) {}

  // The run's image build log (for runs whose executor builds an image).
  void OpenBuildLog() {
    build_log_.emplace(s_.layout_.RunDir(ctx_.id), exec::kBuildLog, false,
                       [this] { s_.Notify(ctx_.id); });
  }

  Status Transition(RunStatus to) override {
    // Before the state is recorded (whoever sees Running may already count the timeout), and
    // also when it is refused (canceled meanwhile): the timeout counts from the launch.
    if (to == RunStatus::kRunning) ctx_.running_since = s_.clock_.NowMillis();
    return s_.Transition(ctx_, to);
  }
  RunStatus status() override { return ctx_.status; }
  std::int64_t running_since() override { return ctx_.running_since; }
  void LogsChanged() override { s_.Notify(ctx_.id); }
  void RecordHandle(const std::string& handle) override {
    (void)s_.store_.SetRunFields(ctx_.id, {.container_id = handle});
  }
  void RecordImage(const std::string& image) override {
    (void)s_.store_.SetRunFields(ctx_.id, {.image = image});
  }
  void BuildLog(std::string_view text) override {
    if (build_log_) build_log_->Write(text);
  }
  Clock& clock() override { return s_.clock_; }
  bool ShuttingDown() override {
    MutexLock lock(s_.mu_);
    return s_.shutting_down_;
  }
  exec::RunControl& control() override { return ctx_.control; }

 private:
  Scheduler& s_;
  RunContext& ctx_;
  std::optional<LogWriter> build_log_;
};

Scheduler::Scheduler(store::Store& store, envbuild::EnvironmentRegistry& environments,
                     envbuild::ImageBuilder& builder, const exec::ExecutorRegistry& executors,
                     const cas::Snapshotter& snapshots, const SecretBox& secrets,
                     WorkspaceLayout layout, SchedulerOptions options)
    : store_(store),
      environments_(environments),
      builder_(builder),
      executors_(executors),
      snapshots_(snapshots),
      secrets_(secrets),
      layout_(std::move(layout)),
      options_(std::move(options)),
      clock_(*options_.clock) {
  if (options_.local_max_nodes < 1) options_.local_max_nodes = 1;
  workspace_id_ = WorkspaceId(layout_.root);
}

Scheduler::~Scheduler() {
  std::map<std::string, std::thread> workers;
  std::map<std::uint64_t, std::thread> builds;
  {
    MutexLock lock(mu_);
    shutting_down_ = true;
    workers.swap(workers_);
    builds.swap(build_threads_);
  }
  for (auto& [id, t] : builds) {
    if (t.joinable()) t.join();
  }
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
  for (const std::uint64_t build : finished_builds_) {
    auto it = build_threads_.find(build);
    if (it == build_threads_.end()) continue;
    if (it->second.joinable()) it->second.join();
    build_threads_.erase(it);
  }
  finished_builds_.clear();
}

void Scheduler::SetChangeListener(std::function<void(const std::string&)> listener) {
  MutexLock lock(listener_mu_);
  listener_ = std::move(listener);
}

void Scheduler::SetNetworkTracking(std::string url, std::string ca_pem) {
  MutexLock lock(network_mu_);
  network_tracking_url_ = std::move(url);
  network_tracking_ca_ = std::move(ca_pem);
}

void Scheduler::Notify(const std::string& run_id) {
  std::function<void(const std::string&)> listener;
  {
    // Its own mutex: logs written while mu_ is held (a run joining a build) notify too.
    MutexLock lock(listener_mu_);
    listener = listener_;
  }
  if (listener) listener(run_id);
}

std::string Scheduler::WorkspaceId(const fs::path& root) {
  return Sha256Hex(root.string()).substr(0, 12);
}

std::int64_t Scheduler::RunTokenExpiry(const spec::RunRequest& req, std::int64_t now_ms) {
  // A run with a timeout cannot need its token longer than that; one without gets 30 days.
  // The margin covers the wait for a node and the finalising after the timeout.
  constexpr std::int64_t kDefaultLifetime = 30LL * 24 * 3600, kMargin = 3600;
  const std::int64_t lifetime = req.timeout_seconds && *req.timeout_seconds > 0
                                    ? std::min(*req.timeout_seconds, kDefaultLifetime)
                                    : kDefaultLifetime;
  return now_ms / 1000 + lifetime + kMargin;
}

Status Scheduler::Transition(RunContext& ctx, RunStatus to, std::int64_t at_ms) {
  TY_RETURN_IF_ERROR(store_.TransitionRun(ctx.id, to, at_ms != 0 ? at_ms : clock_.NowMillis()));
  // One line per transition in the daemon's log (stderr): what happened to which run, and when.
  std::fprintf(stderr, "[%s] run %s: %s -> %s\n", FormatTimeIso(clock_.NowMillis()).c_str(),
               ctx.id.c_str(), std::string(store::RunStatusName(ctx.status)).c_str(),
               std::string(store::RunStatusName(to)).c_str());
  ctx.status = to;
  Notify(ctx.id);
  return Status::Ok();
}

StatusOr<store::RunRecord> Scheduler::Submit(spec::RunRequest request) {
  // Fail fast on what can never run.
  spec::ComputeDefinition compute;
  {
    MutexLock lock(mu_);
    auto c = ComputeLocked(request.compute);
    if (!c.ok()) {
      (void)ComputeLocked("local");  // exists by default: listed too
      std::string names;
      if (auto all = store_.ListComputes(); all.ok()) {
        for (const auto& r : *all) names += (names.empty() ? "" : ", ") + r.name;
      }
      return NotFound("compute target '" + request.compute +
                      "' does not exist (create it with `trainyard compute create --name " +
                      request.compute + " ...`; existing: " + names + ")");
    }
    compute = (*c)->def;
  }
  if (request.instance_count < 1 || request.instance_count > compute.max_nodes) {
    return InvalidArgument("the job asks for " + std::to_string(request.instance_count) +
                           " nodes (resources.instance_count), but compute '" + compute.name +
                           "' has at most " + std::to_string(compute.max_nodes) +
                           " (max_nodes); it could never start");
  }
  TY_ASSIGN_OR_RETURN(exec::RunExecutor * executor, ExecutorOf(compute.type));
  TY_RETURN_IF_ERROR(executor->CheckFit(compute, request));
  if (request.shm_size_bytes && compute.node_memory_bytes > 0 &&
      *request.shm_size_bytes > compute.node_memory_bytes) {
    return InvalidArgument("the job asks for " + std::to_string(*request.shm_size_bytes) +
                           " bytes of shared memory (resources.shm_size), more than a node of '" +
                           compute.name + "' has (" + std::to_string(compute.node_memory_bytes) +
                           " bytes); it could never start");
  }
  // What the request alone decides, as the CLI checked it before uploading anything.
  TY_RETURN_IF_ERROR(spec::CheckRunRequest(request));
  if (!request.snapshot_id.empty()) {
    auto m = snapshots_.Load(request.snapshot_id);
    if (!m.ok()) return m.status().WithPrefix("the job's code snapshot");
  }
  if (options_.check_data) TY_RETURN_IF_ERROR(options_.check_data(request));
  for (const auto& [name, in] : request.inputs) {
    if (in.kind == spec::InputSpec::Kind::kLiteral) continue;
    if (!in.path.empty() && in.path.front() != '/') {
      // A datastore path or a URL: check_data saw it; resolve_inputs fetches it.
      if (!options_.resolve_inputs) {
        return InvalidArgument("input '" + name + "': only local paths are supported here");
      }
      continue;
    }
    std::error_code ec;
    fs::path p(in.path);
    bool want_dir = in.kind == spec::InputSpec::Kind::kUriFolder;
    if (!p.is_absolute() || (want_dir ? !fs::is_directory(p, ec) : !fs::is_regular_file(p, ec))) {
      return InvalidArgument("input '" + name + "': " + (want_dir ? "folder " : "file ") + in.path +
                             " does not exist on the daemon's machine");
    }
  }
  // An environment from a registry becomes the workspace's own, as an inline one does.
  if (!request.environment_registry.empty()) {
    if (!options_.import_environment) {
      return InvalidArgument("environments from registries are not available here");
    }
    TY_ASSIGN_OR_RETURN(
        spec::EnvironmentDefinition def,
        options_.import_environment(request.environment_registry, request.environment_name,
                                    request.environment_version));
    request.environment = std::move(def);
    request.environment_name.clear();
    request.environment_version.clear();
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
  rec.created_at = clock_.NowMillis();
  TY_RETURN_IF_ERROR(store_.InsertRun(rec));

  auto ctx = std::make_shared<RunContext>();
  ctx->id = rec.id;
  ctx->request = std::move(request);
  ctx->image_hash = env.image_hash;
  if (Status t = Transition(*ctx, RunStatus::kQueued); !t.ok()) {
    Finish(*ctx, RunStatus::kFailed, "internal: " + t.message());
    return t;
  }
  Status queued;
  {
    MutexLock lock(mu_);
    queued = EnqueueLocked(ctx);
  }
  if (!queued.ok()) {
    Finish(*ctx, RunStatus::kFailed, "compute lost: " + queued.message());
    return queued;
  }
  return store_.GetRun(rec.id);
}

StatusOr<Scheduler::ComputeState*> Scheduler::ComputeLocked(const std::string& name) {
  auto it = computes_.find(name);
  if (it != computes_.end()) return &it->second;
  auto rec = store_.GetCompute(name);
  if (!rec.ok() && rec.status().code() == StatusCode::kNotFound && name == "local") {
    // `local` exists by default: the local Docker engine, one node sized to the machine.
    spec::ComputeDefinition def = spec::DefaultLocalCompute();
    def.max_nodes = options_.local_max_nodes;
    const std::int64_t now = clock_.NowMillis();
    store::ComputeRecord r{def.name, def.type, def.ToJson().dump(), now, now};
    TY_RETURN_IF_ERROR(store_.PutCompute(r));
    rec = r;
  }
  if (!rec.ok()) return rec.status();
  auto def = spec::ComputeDefinition::FromJson(
      nlohmann::json::parse(rec->definition_json, nullptr, false));
  if (!def.ok()) return def.status().WithPrefix("stored compute target '" + name + "'");
  ComputeState& c = computes_[name];
  c.def = std::move(def).value();
  c.queue.SetMaxNodes(c.def.max_nodes);
  return &c;
}

StatusOr<exec::RunExecutor*> Scheduler::ExecutorOf(const std::string& type) const {
  exec::RunExecutor* executor = executors_.Find(type);
  if (executor == nullptr)
    return FailedPrecondition("this daemon cannot run " + type + " computes");
  return executor;
}

Status Scheduler::EnqueueLocked(std::shared_ptr<RunContext> ctx) {
  TY_ASSIGN_OR_RETURN(ComputeState * c, ComputeLocked(ctx->request.compute));
  ComputeState& compute = *c;
  PlaceLocked(*ctx, compute.def);
  if (ctx->executor == nullptr) TY_RETURN_IF_ERROR(ExecutorOf(compute.def.type).status());
  if (ctx->queued_at == 0) ctx->queued_at = clock_.NowMillis();
  const bool ready = !ctx->executor->NeedsImage() || ready_images_.count(ctx->image_hash) > 0;
  active_[ctx->id] = ctx;
  compute.queue.Push({ctx->id, ctx->nodes, ctx->request.priority, ctx->queued_at, ready});
  if (!ready) PrebuildLocked(ctx, compute);
  DispatchLocked(compute);
  return Status::Ok();
}

void Scheduler::PrebuildLocked(const std::shared_ptr<RunContext>& ctx, ComputeState& compute) {
  auto log = std::make_shared<LogWriter>(layout_.RunDir(ctx->id), kBuildLog, false,
                                         [this, id = ctx->id] { Notify(id); });
  auto it = builds_.find(ctx->image_hash);
  if (it != builds_.end()) {
    it->second->waiting.push_back(ctx);
    it->second->Attach(ctx->id, std::move(log));
    return;
  }
  auto def = environments_.Resolve(ctx->request.environment_name, ctx->request.environment_version);
  if (!def.ok()) {
    // Known at Preparing as well; let the run get there and fail with the reason.
    compute.queue.SetReady(ctx->id);
    return;
  }
  ctx->environment = *def;  // Execute needs it again: resolved once per run
  auto task = std::make_shared<BuildTask>();
  task->image_hash = ctx->image_hash;
  task->def = std::move(def).value();
  task->waiting.push_back(ctx);
  task->Attach(ctx->id, std::move(log));
  builds_[task->image_hash] = task;
  if (shutting_down_) return;
  task->number = next_build_++;
  build_threads_[task->number] = std::thread([this, task] { RunBuild(task); });
}

StatusOr<envbuild::ImageBuilder::Result> Scheduler::MakeImage(
    const spec::EnvironmentDefinition& env, const std::function<void(std::string_view)>& log) {
  log("Environment " + env.name + ":" + env.version + "\n");
  // Secrets never reach a log: the registry password is redacted should the engine echo it.
  const std::string password = env.registry ? env.registry->password : "";
  auto image = builder_.EnsureImage(env, [&](std::string_view text) {
    log(password.empty() ? std::string(text) : Redact(std::string(text), password));
  });
  if (image.ok()) return image;
  const std::string reason = Redact(ImageFailureReason(image.status()), password);
  log("\n" + reason + "\n");
  return Status(image.status().code(), reason);
}

void Scheduler::RunBuild(std::shared_ptr<BuildTask> task) {
  auto image = MakeImage(task->def, [&task](std::string_view text) { task->Write(text); });
  const std::string reason = image.ok() ? "" : image.status().message();
  std::vector<std::shared_ptr<RunContext>> failed;
  {
    MutexLock lock(mu_);
    builds_.erase(task->image_hash);
    if (image.ok()) ready_images_.insert(task->image_hash);
    for (auto& ctx : task->waiting) {
      auto c = computes_.find(ctx->compute);
      if (c == computes_.end() || !c->second.queue.IsQueued(ctx->id)) continue;  // canceled
      if (image.ok()) {
        c->second.queue.SetReady(ctx->id);
      } else {
        c->second.queue.Remove(ctx->id);
        active_.erase(ctx->id);
        failed.push_back(ctx);
      }
    }
    if (!shutting_down_) {
      std::set<std::string> touched;
      for (auto& ctx : task->waiting) touched.insert(ctx->compute);
      for (const auto& name : touched) {
        if (auto c = computes_.find(name); c != computes_.end()) DispatchLocked(c->second);
      }
    }
    // Last: a dispatch above reaps finished builds, and must not try to join this one.
    finished_builds_.push_back(task->number);
  }
  // Every run that waited for this image fails with the build's reason.
  for (auto& ctx : failed) Finish(*ctx, RunStatus::kFailed, reason);
}

void Scheduler::DispatchLocked(ComputeState& c) {
  if (shutting_down_ || recovering_) return;
  for (ComputeQueue::Started& started : c.queue.Dispatch()) {
    auto it = active_.find(started.run_id);
    if (it == active_.end()) {
      c.queue.Release(started.run_id);  // (every queued run is active; never kept by mistake)
      continue;
    }
    it->second->slots = std::move(started.slots);
    StartWorkerLocked(it->second);
  }
}

void Scheduler::ReleaseNodes(RunContext& ctx) {
  MutexLock lock(mu_);
  auto it = computes_.find(ctx.compute);
  if (it == computes_.end() || ctx.slots.empty()) return;
  it->second.queue.Release(ctx.id);
  ctx.slots.clear();
  DispatchLocked(it->second);
}

void Scheduler::PlaceLocked(RunContext& ctx, const spec::ComputeDefinition& def) {
  ctx.compute = def.name;
  ctx.executor = executors_.Find(def.type);
  ctx.nodes = std::max(1, ctx.request.instance_count);
}

void Scheduler::HoldNodesLocked(RunContext& ctx) {
  if (auto c = computes_.find(ctx.compute); c != computes_.end()) {
    ctx.slots = c->second.queue.Hold(ctx.id, ctx.nodes);
  }
}

void Scheduler::StartWorkerLocked(std::shared_ptr<RunContext> ctx) {
  ReapWorkersLocked();
  active_[ctx->id] = ctx;
  workers_[ctx->id] = std::thread([this, ctx] { Work(ctx); });
}

void Scheduler::Work(std::shared_ptr<RunContext> ctx) {
  if (ctx->attach) {
    Host host(*this, *ctx);
    FollowAndFinish(*ctx, host);
  } else {
    Execute(*ctx);
  }
  ReleaseNodes(*ctx);  // when it ended without Finish (the daemon shutting down)
  MutexLock lock(mu_);
  if (auto it = active_.find(ctx->id); it != active_.end() && it->second == ctx) active_.erase(it);
  finished_.push_back(ctx->id);
}

void Scheduler::Finish(RunContext& ctx, RunStatus status, const std::string& reason) {
  // The run ended now, before its nodes go to the next run: its end is never recorded after
  // the next run's start (the durable final commit can take a while).
  const std::int64_t ended_at = clock_.NowMillis();
  if (!reason.empty()) {
    std::fprintf(stderr, "[%s] run %s: %s\n", FormatTimeIso(clock_.NowMillis()).c_str(),
                 ctx.id.c_str(), reason.c_str());
    (void)store_.SetRunFields(ctx.id, {.failure_reason = reason});
  }
  // Its nodes are free and it is no longer active before anyone can see it ended: a compute
  // can be deleted, or its nodes given to the next run, the moment the run reads as ended.
  ReleaseNodes(ctx);
  {
    MutexLock lock(mu_);
    if (auto it = active_.find(ctx.id); it != active_.end() && it->second.get() == &ctx) {
      active_.erase(it);
    }
  }
  (void)Transition(ctx, status, ended_at);
  // Nothing is left to resume.
  exec::FollowedLogs::Forget(layout_.RunDir(ctx.id));
}

Status Scheduler::CollectOutputs(RunContext& ctx) {
  if (!options_.collect_outputs) return Status::Ok();
  const fs::path run_dir = layout_.RunDir(ctx.id);
  TY_ASSIGN_OR_RETURN(std::vector<std::string> skipped, options_.collect_outputs(ctx.id, run_dir));
  if (skipped.empty()) return Status::Ok();
  LogWriter log(run_dir, kStdLog, /*truncate=*/false, [this, &ctx] { Notify(ctx.id); });
  for (const std::string& why : skipped) {
    std::fprintf(stderr, "[%s] run %s: output not collected: %s\n",
                 FormatTimeIso(clock_.NowMillis()).c_str(), ctx.id.c_str(), why.c_str());
    log.Write("[trainyard] warning: output not collected: " + why + "\n");
  }
  return Status::Ok();
}

Status Scheduler::DeliverOutputs(RunContext& ctx) {
  if (!options_.deliver_outputs) return Status::Ok();
  const fs::path run_dir = layout_.RunDir(ctx.id);
  LogWriter log(run_dir, kStdLog, /*truncate=*/false, [this, &ctx] { Notify(ctx.id); });
  Status st = options_.deliver_outputs(ctx.request, run_dir, [&log](std::string_view text) {
    log.Write("[trainyard] " + std::string(text));
  });
  if (!st.ok()) log.Write("[trainyard] " + st.message() + "\n");
  return st;
}

StatusOr<exec::RunPlan> Scheduler::MakePlan(const RunContext& ctx) {
  exec::RunPlan plan;
  plan.run_id = ctx.id;
  plan.request = ctx.request;
  plan.image_hash = ctx.image_hash;
  plan.workspace_root = layout_.root;
  plan.workspace_id = workspace_id_;
  plan.run_dir = layout_.RunDir(ctx.id);
  plan.nodes = ctx.nodes;
  {
    MutexLock lock(mu_);
    TY_ASSIGN_OR_RETURN(ComputeState * c, ComputeLocked(ctx.compute));
    plan.compute = c->def;
    plan.slots = ctx.slots;
  }
  MutexLock lock(network_mu_);
  plan.network_tracking_url = network_tracking_url_;
  plan.network_tracking_ca = network_tracking_ca_;
  return plan;
}

Status Scheduler::PrepareWorkFolder(const RunContext& ctx, const exec::WorkFolder& folder) {
  // The snapshot becomes the working folder: hard links to its read-only objects (the folder
  // is then mounted read-only, so a run cannot write through a link into the store), or a
  // writable copy when the job or the executor asks for one. Outputs and logs are the run's
  // own folders, mounted over ./outputs and ./logs (their mount points must exist in a
  // read-only folder) or linked there.
  const fs::path run_dir = layout_.RunDir(ctx.id);
  const fs::path& work_dir = folder.dir;
  const fs::path code_dir = work_dir / "code";
  (void)RemoveTree(code_dir);
  const bool copy = ctx.request.code_copy || folder.copy_code;
  Status s = ctx.request.snapshot_id.empty()
                 ? MakeDirs(code_dir)
                 : snapshots_.Materialize(
                       ctx.request.snapshot_id, code_dir,
                       copy ? cas::MaterializeMode::kCopy : cas::MaterializeMode::kLink);
  for (const char* d : {"outputs", "logs", "user_logs"}) {
    if (s.ok()) s = MakeDirs(run_dir / d);
    if (s.ok() && work_dir != run_dir) s = MakeDirs(work_dir / d);
  }
  for (const char* d : {"outputs", "logs"}) {
    if (!s.ok()) break;
    if (!folder.link_outputs) {
      s = MakeDirs(code_dir / d);  // mount points of the run's own folders
      continue;
    }
    (void)RemoveTree(code_dir / d);
    std::error_code ec;
    fs::create_directory_symlink(fs::path("..") / d, code_dir / d, ec);
    if (ec) s = Internal("cannot link " + (code_dir / d).string() + ": " + ec.message());
  }
  return s;
}

void Scheduler::Execute(RunContext& ctx) {
  if (ctx.control.CancelRequested()) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
    return;
  }
  if (Status t = Transition(ctx, RunStatus::kPreparing); !t.ok()) {
    Finish(ctx, RunStatus::kFailed, "internal: " + t.message());
    return;
  }
  exec::RunExecutor& executor = *ctx.executor;
  Host host(*this, ctx);
  // An executor that builds no image (a process compute) gives its runs no build log.
  if (executor.NeedsImage()) host.OpenBuildLog();
  auto plan = MakePlan(ctx);
  if (!plan.ok()) {
    Finish(ctx, RunStatus::kFailed, "compute lost: " + plan.status().message());
    return;
  }
  // Inputs that are not local paths become folders of the data cache (or literals, direct).
  // What is fetched is told in the preparation (build) log: the run's own log starts afresh
  // when its nodes start.
  if (options_.resolve_inputs) {
    LogWriter log(layout_.RunDir(ctx.id), kBuildLog, /*truncate=*/false,
                  [this, &ctx] { Notify(ctx.id); });
    auto inputs = options_.resolve_inputs(
        ctx.request,
        [&log](std::string_view text) { log.Write("[trainyard] " + std::string(text)); },
        [&ctx] { return ctx.control.CancelRequested(); });
    if (!inputs.ok() && inputs.status().code() == StatusCode::kCancelled) {
      Finish(ctx, RunStatus::kCanceled, "canceled by user");
      return;
    }
    if (!inputs.ok()) {
      log.Write("[trainyard] " + inputs.status().message() + "\n");
      Finish(ctx, RunStatus::kFailed, inputs.status().message());
      return;
    }
    plan->request.inputs = std::move(*inputs);
  }
  Status s = PrepareWorkFolder(ctx, executor.WorkFolderOf(*plan));
  if (!s.ok()) {
    host.BuildLog("Preparing the working folder failed: " + s.message() + "\n");
    Finish(ctx, RunStatus::kFailed, "preparing the working folder failed: " + s.message());
    return;
  }
  // The environment is resolved (its password unsealed) once per run: here, unless its image
  // build already did while it was queued.
  std::optional<spec::EnvironmentDefinition> resolved;
  {
    MutexLock lock(mu_);
    resolved.swap(ctx.environment);
  }
  if (!resolved) {
    auto def = environments_.Resolve(ctx.request.environment_name, ctx.request.environment_version);
    if (!def.ok()) {
      Finish(ctx, RunStatus::kFailed, "environment: " + def.status().message());
      return;
    }
    resolved = std::move(def).value();
  }
  plan->environment = std::move(*resolved);
  if (executor.NeedsImage()) {
    // Built while the run was queued, the image is normally found at once here.
    auto image =
        MakeImage(plan->environment, [&host](std::string_view text) { host.BuildLog(text); });
    if (!image.ok()) {
      Finish(ctx, RunStatus::kFailed, image.status().message());
      return;
    }
    plan->image = image->image;
    plan->image_hash = image->image_hash;
    (void)store_.SetRunFields(ctx.id, {.image_hash = image->image_hash, .image = image->image});
  }
  // The environment's registry password was for the image only: it goes no further.
  plan->environment.registry.reset();
  if (ctx.control.CancelRequested()) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
    return;
  }
  // The run's token lives from its launch: its expiry counts the run's timeout from here.
  plan->run_token = secrets_.RunToken(ctx.id, RunTokenExpiry(ctx.request, NowMillis()));
  auto launched = executor.Launch(*plan, host);
  if (!launched.ok()) {
    if (launched.status().code() == StatusCode::kCancelled) {
      Finish(ctx, RunStatus::kCanceled, "canceled by user");
    } else {
      Finish(ctx, RunStatus::kFailed, launched.status().message());
    }
    return;
  }
  ctx.launched = std::move(launched).value();
  FollowAndFinish(ctx, host);
}

void Scheduler::FollowAndFinish(RunContext& ctx, Host& host) {
  const exec::RunEnd end = ctx.launched->Follow(host, /*resume=*/ctx.attach);
  if (end.detached) return;  // the daemon shuts down; the next one recovers the run
  if (end.exit_code) (void)store_.SetRunFields(ctx.id, {.exit_code = end.exit_code});
  (void)Transition(ctx, RunStatus::kFinalizing);
  Status collected = ctx.launched->Release(host);
  if (collected.ok()) collected = CollectOutputs(ctx);

  bool canceled, timed_out;
  {
    MutexLock lock(ctx.control.mu);
    canceled = ctx.control.cancel_requested;
    timed_out = ctx.control.timed_out;
  }
  if (canceled) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
  } else if (timed_out) {
    Finish(ctx, RunStatus::kFailed,
           "timed out after " + std::to_string(*ctx.request.timeout_seconds) + " s");
  } else if (end.compute_verdict) {
    Finish(ctx, end.compute_verdict->status, end.compute_verdict->reason);
  } else if (auto verdict = ScriptFailure(store_, ctx.id)) {
    // The script called fail(): its verdict stands whatever the exit code (docs/tracking.md).
    Finish(ctx, RunStatus::kFailed, *verdict);
  } else if (end.exit_verdict) {
    Finish(ctx, end.exit_verdict->status, end.exit_verdict->reason);
  } else if (!collected.ok()) {
    Finish(ctx, RunStatus::kFailed, "cannot collect the outputs: " + collected.message());
  } else if (Status delivered = DeliverOutputs(ctx); !delivered.ok()) {
    Finish(ctx, RunStatus::kFailed, delivered.message());
  } else {
    Finish(ctx, RunStatus::kCompleted, "");
  }
}

std::string Scheduler::WaitReason(const std::string& run_id) {
  std::shared_ptr<RunContext> ctx;
  {
    MutexLock lock(mu_);
    auto it = active_.find(run_id);
    if (it == active_.end()) return "";
    ctx = it->second;
    auto c = computes_.find(ctx->compute);
    if (c != computes_.end() && c->second.queue.IsQueued(run_id)) {
      return c->second.queue.WaitReason(run_id);
    }
  }
  MutexLock lock(ctx->control.mu);
  return ctx->control.wait_reason;
}

Status Scheduler::Cancel(const std::string& run_id) {
  TY_ASSIGN_OR_RETURN(store::RunRecord rec, store_.GetRun(run_id));
  if (store::IsTerminal(rec.status)) {
    return FailedPrecondition("run '" + run_id + "' already ended as " +
                              std::string(store::RunStatusName(rec.status)));
  }
  std::shared_ptr<RunContext> ctx;
  bool was_queued = false;
  {
    MutexLock lock(mu_);
    auto it = active_.find(run_id);
    if (it != active_.end()) ctx = it->second;
    auto c = ctx ? computes_.find(ctx->compute) : computes_.end();
    if (c != computes_.end() && c->second.queue.Remove(run_id)) {
      // A queued run leaves its queue (and stops waiting for its image build) at once.
      was_queued = true;
      DispatchLocked(c->second);  // the runs behind it may fit now
      if (auto b = builds_.find(ctx->image_hash); b != builds_.end()) b->second->Detach(run_id);
      active_.erase(run_id);
    }
  }
  if (!ctx) return FailedPrecondition("run '" + run_id + "' is not active in this daemon");
  {
    MutexLock lock(ctx->control.mu);
    if (ctx->control.cancel_requested) return Status::Ok();
    ctx->control.cancel_requested = true;
  }
  (void)store_.TransitionRun(run_id, RunStatus::kCancelRequested, clock_.NowMillis());
  Notify(run_id);
  if (was_queued) {
    Finish(*ctx, RunStatus::kCanceled, "canceled by user");
    return Status::Ok();
  }
  ctx->control.cv.notify_all();
  return Status::Ok();
}

Status Scheduler::Recover() {
  TY_ASSIGN_OR_RETURN(auto runs, store_.ListActiveRuns());
  {
    MutexLock lock(mu_);
    recovering_ = true;
  }
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
    ctx->running_since = rec.TimeOf(RunStatus::kRunning);
    ctx->image_hash = rec.image_hash;
    ctx->queued_at = rec.TimeOf(RunStatus::kQueued);
    std::string type;
    {
      MutexLock lock(mu_);
      auto c = ComputeLocked(ctx->request.compute);
      if (c.ok()) {
        PlaceLocked(*ctx, (*c)->def);
        type = (*c)->def.type;
        // Active from now on: its compute cannot be deleted while it is being recovered.
        active_[ctx->id] = ctx;
      }
    }
    if (ctx->compute.empty()) {
      Finish(*ctx, RunStatus::kFailed,
             "compute lost: compute target '" + ctx->request.compute + "' no longer exists");
      continue;
    }
    if (ctx->executor == nullptr) {
      Finish(*ctx, RunStatus::kFailed, "compute lost: " + ExecutorOf(type).status().message());
      continue;
    }
    StatusOr<std::unique_ptr<exec::LaunchedRun>> found = Internal("no plan");
    if (auto plan = MakePlan(*ctx); !plan.ok()) {
      // Not a verdict on its nodes: never taken for "they are gone".
      found = Internal(plan.status().message());
    } else {
      Host host(*this, *ctx);
      found = ctx->executor->Recover(*plan, host, rec.status, rec.container_id);
    }
    if (!found.ok() && found.status().code() != StatusCode::kNotFound) {
      // Whatever runs its nodes cannot be asked (dockerd down or restarting, Slurm not
      // answering): failing the run would be a guess, and its nodes may be alive. It stays as it
      // is until a daemon can ask.
      std::fprintf(stderr, "[%s] run %s: not recovered, %s\n",
                   FormatTimeIso(clock_.NowMillis()).c_str(), rec.id.c_str(),
                   found.status().message().c_str());
      MutexLock lock(mu_);
      if (auto it = active_.find(ctx->id); it != active_.end() && it->second == ctx) {
        active_.erase(it);
      }
      continue;
    }
    if (found.ok()) {
      // Its nodes are there, running or finished: follow them to their end.
      ctx->attach = true;
      ctx->launched = std::move(found).value();
      {
        MutexLock lock(ctx->control.mu);
        ctx->control.cancel_requested = rec.status == RunStatus::kCancelRequested;
      }
      if (ctx->running_since == 0) ctx->running_since = clock_.NowMillis();
      MutexLock lock(mu_);
      HoldNodesLocked(*ctx);  // before any queued run is dispatched
      StartWorkerLocked(ctx);
    } else if (rec.status == RunStatus::kNotStarted || rec.status == RunStatus::kQueued ||
               rec.status == RunStatus::kPreparing || rec.status == RunStatus::kStarting) {
      // Back in its queue, in submission order (runs come oldest first), with its priority. A
      // run caught in Preparing or Starting holds no nodes now: it says so.
      if (rec.status != RunStatus::kQueued && rec.status != RunStatus::kNotStarted) {
        (void)Transition(*ctx, RunStatus::kQueued);
      }
      Status queued;
      {
        MutexLock lock(mu_);
        queued = EnqueueLocked(ctx);
      }
      if (!queued.ok()) Finish(*ctx, RunStatus::kFailed, "compute lost: " + queued.message());
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
  // Every re-attached run holds its nodes again: the queues may start now.
  MutexLock lock(mu_);
  recovering_ = false;
  for (auto& [name, c] : computes_) DispatchLocked(c);
  return Status::Ok();
}

// --- compute targets -------------------------------------------------------------------------

namespace {

// "max_nodes 4 (stored: 2), node_cpus 2 (stored: 0)" for the settings that differ.
std::string SettingsDiff(const spec::ComputeDefinition& want, const spec::ComputeDefinition& have) {
  const nlohmann::json a = want.ToJson(spec::SecretMode::kRedact),
                       b = have.ToJson(spec::SecretMode::kRedact);
  std::string out;
  for (const auto& [k, v] : a.items()) {
    if (k == "name" || (b.contains(k) && b[k] == v)) continue;
    out += (out.empty() ? "" : ", ") + k + " " + v.dump() + " (it has " +
           (b.contains(k) ? b[k].dump() : "none") + ")";
  }
  return out;
}

}  // namespace

StatusOr<spec::ComputeDefinition> Scheduler::PutCompute(spec::ComputeDefinition def, bool update,
                                                        bool* created) {
  TY_RETURN_IF_ERROR(def.Validate());
  // Fail fast: e.g. a partition Slurm does not have is refused now, not at the first run.
  TY_ASSIGN_OR_RETURN(exec::RunExecutor * executor, ExecutorOf(def.type));
  TY_RETURN_IF_ERROR(executor->CheckCompute(def));
  MutexLock lock(mu_);
  auto existing = ComputeLocked(def.name);
  if (!existing.ok() && existing.status().code() != StatusCode::kNotFound) {
    return existing.status();
  }
  if (created != nullptr) *created = !existing.ok();
  if (existing.ok()) {
    ComputeState& c = **existing;
    spec::ComputeDefinition have = c.def;
    if (have.registry && SecretBox::IsSealed(have.registry->password)) {
      TY_ASSIGN_OR_RETURN(have.registry->password, secrets_.Unseal(have.registry->password));
    }
    if (have.SameSettings(def)) return def;
    if (!update) {
      return AlreadyExists("compute target '" + def.name + "' exists with other settings: " +
                           SettingsDiff(def, c.def) + "; pass --update to change it");
    }
    if (c.def.type != def.type) {
      std::size_t active = c.queue.queued() + static_cast<std::size_t>(c.queue.busy());
      if (active > 0) {
        return FailedPrecondition("compute target '" + def.name + "' cannot change its type from " +
                                  c.def.type + " to " + def.type + " while " +
                                  std::to_string(active) + " runs use it");
      }
    }
  }
  const std::int64_t now = clock_.NowMillis();
  // A registry password is stored sealed, and kept sealed in memory until a run needs it.
  spec::ComputeDefinition sealed = def;
  if (sealed.registry) sealed.registry->password = secrets_.Seal(sealed.registry->password);
  store::ComputeRecord rec{def.name, def.type, sealed.ToJson().dump(), now, now};
  TY_RETURN_IF_ERROR(store_.PutCompute(rec));
  ComputeState& c = computes_[def.name];
  c.def = std::move(sealed);
  c.queue.SetMaxNodes(c.def.max_nodes);
  DispatchLocked(c);  // more nodes may start queued runs
  return def;
}

StatusOr<std::vector<spec::ComputeDefinition>> Scheduler::ListComputes() {
  MutexLock lock(mu_);
  (void)ComputeLocked("local");  // exists by default
  TY_ASSIGN_OR_RETURN(auto recs, store_.ListComputes());
  std::vector<spec::ComputeDefinition> out;
  for (const auto& r : recs) {
    auto c = ComputeLocked(r.name);
    if (c.ok()) out.push_back((*c)->def);
  }
  return out;
}

StatusOr<ComputeStatus> Scheduler::GetQueueStatus(const std::string& name) {
  MutexLock lock(mu_);
  TY_ASSIGN_OR_RETURN(ComputeState * c, ComputeLocked(name));
  ComputeStatus st;
  st.definition = c->def;
  st.busy_nodes = c->queue.busy();
  st.idle_nodes = c->queue.idle();
  st.running = c->queue.Running();
  for (ComputeQueue::Waiting& w : c->queue.Queue()) {
    st.queued.push_back({std::move(w.item.run_id), w.item.nodes, w.item.priority, w.item.queued_at,
                         std::move(w.reason)});
  }
  return st;
}

StatusOr<ComputeStatus> Scheduler::GetComputeStatus(const std::string& name) {
  TY_ASSIGN_OR_RETURN(ComputeStatus st, GetQueueStatus(name));
  // Asked without holding mu_: e.g. Slurm's commands take milliseconds to seconds.
  if (exec::RunExecutor* executor = executors_.Find(st.definition.type)) {
    st.cluster = executor->ClusterStatus(st.definition);
  }
  return st;
}

Status Scheduler::DeleteCompute(const std::string& name) {
  if (name == "local") {
    return FailedPrecondition("compute target 'local' always exists and cannot be deleted");
  }
  MutexLock lock(mu_);
  TY_ASSIGN_OR_RETURN(ComputeState * c, ComputeLocked(name));
  std::vector<std::string> active;
  for (const auto& [id, ctx] : active_) {
    if (ctx->compute == name) active.push_back(id);
  }
  if (!active.empty() || c->queue.busy() > 0 || c->queue.queued() > 0) {
    std::string names;
    for (std::size_t i = 0; i < active.size() && i < 5; ++i) {
      names += (i ? ", " : "") + active[i];
    }
    return FailedPrecondition("compute target '" + name + "' has " + std::to_string(active.size()) +
                              " active runs (" + names + (active.size() > 5 ? ", ..." : "") +
                              "); cancel them or wait for them to end");
  }
  TY_RETURN_IF_ERROR(store_.DeleteCompute(name));
  computes_.erase(name);
  return Status::Ok();
}

}  // namespace trainyard::sched

#include "trainyard/sched/scheduler.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "trainyard/common/fs.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/sched/internal.h"
#include "trainyard/spec/run_request_check.h"
#include "trainyard/spec/spec.h"

namespace trainyard::sched {
namespace internal {

std::string ContainerName(const std::string& workspace_id, const std::string& run_id) {
  return "trainyard-" + workspace_id + "-" + run_id;
}

std::string NodeLogName(int i) { return "user_logs/std_log_node_" + std::to_string(i) + ".txt"; }

int ProcessesPerNode(const spec::RunRequest& req) {
  return req.distribution ? std::max(1, req.distribution->process_count_per_instance) : 1;
}

bool CodeIsReadOnly(const spec::RunRequest& req) {
  return !req.snapshot_id.empty() && !req.code_copy;
}

bool LogTailMentions(const fs::path& run_dir, std::string_view rel, std::string_view needle) {
  auto dir = RootedDir::Open(run_dir);
  if (!dir.ok()) return false;
  auto tail = dir->ReadTail(rel, 64 << 10);
  return tail.ok() && tail->find(needle) != std::string::npos;
}

std::optional<std::string> ScriptFailure(store::Store& store, const std::string& run_id) {
  auto rec = store.GetRun(run_id);
  if (!rec.ok() || rec->script_status != store::RunStatus::kFailed) return std::nullopt;
  return "failed by the script: " + rec->script_message;
}

FollowedLogs::FollowedLogs(const fs::path& run_dir, int nodes, bool resume,
                           std::function<void()> on_write)
    : run_dir_(run_dir),
      nodes_(static_cast<std::size_t>(std::max(1, nodes))),
      on_write_(std::move(on_write)) {
  MutexLock lock(mu_);
  state_.nodes.resize(nodes_);
  if (!(resume && Resume())) {
    state_ = State{};
    state_.nodes.resize(nodes_);
    Open(/*truncate=*/true);
  }
  for (std::size_t i = 0; nodes_ > 1 && i < nodes_; ++i) {
    prefixers_.push_back(std::make_unique<LinePrefixer>(
        "[node " + std::to_string(i) + "] ",
        // Called by Write, with mu_ held.
        [this](std::string_view t) REQUIRES(mu_) { prefixed_.append(t); }));
    prefixers_.back()->Restore(state_.nodes[i].pending);
  }
  // The checkpoint is written in place (a record per write); opened truncated, so it is never
  // read back with a link or FIFO planted on the way.
  if (auto dir = RootedDir::Create(run_dir_); dir.ok()) {
    if (auto fd = dir->OpenForWrite(kCheckpoint, /*truncate=*/true, 0600); fd.ok()) {
      checkpoint_fd_ = fd->Release();
    }
  }
  RecordLocked(state_);
}

FollowedLogs::~FollowedLogs() {
  if (checkpoint_fd_ >= 0) ::close(checkpoint_fd_);
}

void FollowedLogs::Open(bool truncate) {
  run_log_ = std::make_unique<LogWriter>(run_dir_, Scheduler::kStdLog, truncate, on_write_);
  node_logs_.clear();
  for (std::size_t i = 0; nodes_ > 1 && i < nodes_; ++i) {
    node_logs_.push_back(
        std::make_unique<LogWriter>(run_dir_, NodeLogName(static_cast<int>(i)), truncate, [] {}));
  }
}

nlohmann::json FollowedLogs::ToJson(const State& state) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const NodeState& n : state.nodes) {
    nodes.push_back({{"position", n.position},
                     {"log_bytes", n.log_bytes},
                     {"pending_b64", Base64Encode(n.pending)}});
  }
  return {{"log_bytes", state.log_bytes}, {"nodes", std::move(nodes)}};
}

std::optional<FollowedLogs::State> FollowedLogs::FromJson(const nlohmann::json& j,
                                                          std::size_t nodes) {
  if (!j.is_object() || !j.value("log_bytes", nlohmann::json()).is_number_unsigned() ||
      !j.value("nodes", nlohmann::json()).is_array() || j["nodes"].size() != nodes) {
    return std::nullopt;
  }
  State state;
  state.log_bytes = j["log_bytes"].get<std::uint64_t>();
  for (const nlohmann::json& n : j["nodes"]) {
    NodeState node;
    if (!n.is_object() || !n.value("position", nlohmann::json()).is_string() ||
        !n.value("log_bytes", nlohmann::json()).is_number_unsigned() ||
        !n.value("pending_b64", nlohmann::json()).is_string() ||
        !Base64Decode(n["pending_b64"].get<std::string>(), &node.pending)) {
      return std::nullopt;
    }
    node.position = n["position"].get<std::string>();
    node.log_bytes = n["log_bytes"].get<std::uint64_t>();
    state.nodes.push_back(std::move(node));
  }
  return state;
}

bool FollowedLogs::Resume() {
  auto dir = RootedDir::Open(run_dir_);
  if (!dir.ok()) return false;
  auto text = dir->ReadFile(kCheckpoint, 16 << 20);
  if (!text.ok()) return false;
  // "<length>\n<record>", the record {"before": state, "after": state}; what follows is left
  // over from a longer record.
  const std::size_t nl = text->find('\n');
  std::uint64_t length = 0;
  if (nl == std::string::npos ||
      std::from_chars(text->data(), text->data() + nl, length).ec != std::errc() ||
      length > text->size() - nl - 1) {
    return false;
  }
  const nlohmann::json record =
      nlohmann::json::parse(text->substr(nl + 1, length), nullptr, /*allow_exceptions=*/false);
  if (!record.is_object()) return false;
  const auto before = FromJson(record.value("before", nlohmann::json()), nodes_);
  const auto after = FromJson(record.value("after", nlohmann::json()), nodes_);
  if (!before || !after) return false;
  Open(/*truncate=*/false);
  auto sizes_are = [&](const State& s) REQUIRES(mu_) {
    if (run_log_->Size() != s.log_bytes) return false;
    for (std::size_t i = 0; i < node_logs_.size(); ++i) {
      if (node_logs_[i]->Size() != s.nodes[i].log_bytes) return false;
    }
    return true;
  };
  auto at_least = [&](const State& s) REQUIRES(mu_) {
    if (run_log_->Size().value_or(0) < s.log_bytes) return false;
    for (std::size_t i = 0; i < node_logs_.size(); ++i) {
      if (node_logs_[i]->Size().value_or(0) < s.nodes[i].log_bytes) return false;
    }
    return true;
  };
  if (sizes_are(*after)) {
    state_ = *after;  // The last write was whole.
    return true;
  }
  if (!at_least(*before)) return false;  // Not the files the record describes.
  // The last write was cut short by the crash: cut it off; it is read again.
  if (!run_log_->TruncateTo(before->log_bytes)) return false;
  for (std::size_t i = 0; i < node_logs_.size(); ++i) {
    if (!node_logs_[i]->TruncateTo(before->nodes[i].log_bytes)) return false;
  }
  state_ = *before;
  return true;
}

void FollowedLogs::RecordLocked(const State& after) {
  if (checkpoint_fd_ < 0) return;
  const std::string record =
      nlohmann::json{{"before", ToJson(state_)}, {"after", ToJson(after)}}.dump();
  const std::string text = std::to_string(record.size()) + "\n" + record;
  // One pwrite: a crash of the daemon leaves the old record or the new one, never half of one
  // (a power loss takes the running containers too, so no fsync).
  (void)::pwrite(checkpoint_fd_, text.data(), text.size(), 0);
}

void FollowedLogs::ApplyLocked(int i, std::string_view node_text, const std::string& run_text,
                               State after) {
  RecordLocked(after);
  if (nodes_ > 1) node_logs_[static_cast<std::size_t>(i)]->Write(node_text);
  run_log_->Write(run_text);
  state_ = std::move(after);
}

std::string FollowedLogs::Position(int i) {
  MutexLock lock(mu_);
  return state_.nodes.at(static_cast<std::size_t>(i)).position;
}

void FollowedLogs::Write(int i, std::string_view data, const std::string& position) {
  MutexLock lock(mu_);
  const auto at = static_cast<std::size_t>(i);
  State after = state_;
  after.nodes.at(at).position = position;
  if (nodes_ == 1) {
    after.log_bytes += data.size();
    ApplyLocked(i, {}, std::string(data), std::move(after));
    return;
  }
  prefixed_.clear();
  prefixers_.at(at)->Write(data);
  after.nodes[at].log_bytes += data.size();
  after.nodes[at].pending = prefixers_[at]->pending();
  after.log_bytes += prefixed_.size();
  ApplyLocked(i, data, prefixed_, std::move(after));
}

void FollowedLogs::Flush(int i) {
  MutexLock lock(mu_);
  if (nodes_ == 1) return;
  const auto at = static_cast<std::size_t>(i);
  prefixed_.clear();
  prefixers_.at(at)->Flush();
  if (prefixed_.empty()) return;
  State after = state_;
  after.nodes[at].pending.clear();
  after.log_bytes += prefixed_.size();
  ApplyLocked(i, {}, prefixed_, std::move(after));
}

void FollowedLogs::Forget(const fs::path& run_dir) {
  if (auto dir = RootedDir::Open(run_dir); dir.ok()) (void)dir->Remove(kCheckpoint);
}

}  // namespace internal

namespace {

using namespace internal;  // NOLINT(google-build-using-namespace)
using store::RunStatus;

// Paths inside the container.
constexpr const char* kCodeDir = "/trainyard/code";
constexpr const char* kSocketDir = "/trainyard/sock";
constexpr const char* kSdkDir = "/trainyard/sdk/python";
constexpr const char* kInputsDir = "/trainyard/inputs";
constexpr const char* kAnonymousEnv = "anonymous";

// The container (or process) of node `i` of a run on `n` nodes; a one-node run's is the run's.
std::string NodeName(const std::string& workspace_id, const std::string& run_id, int i, int n) {
  const std::string base = ContainerName(workspace_id, run_id);
  return n == 1 ? base : base + "-" + std::to_string(i);
}

// Where a multi-node run's hostfile is kept (relative to the run's folder), and where its
// containers see it.
constexpr const char* kHostfile = "hostfile";
constexpr const char* kHostfileInContainer = "/trainyard/hostfile";

// The hostname of node `i` on a multi-node run's network.
std::string NodeHost(int i) { return "node-" + std::to_string(i); }

constexpr int kDefaultMasterPort = 6105;  // REFERENCE.md
constexpr int kTensorFlowPort = 2222;

// Runs `process_count_per_instance` copies of the command ($TRAINYARD_COMMAND) on one node,
// each with its own rank variables, and exits with the first non-zero exit code among them. A
// TERM reaches every copy.
constexpr const char* kLauncher = R"sh(
pids=""
i=0
while [ "$i" -lt "$TRAINYARD_PROCESSES" ]; do
  rank=$((TRAINYARD_NODE_RANK * TRAINYARD_PROCESSES + i))
  if [ "$TRAINYARD_DISTRIBUTION" = mpi ]; then
    ( export OMPI_COMM_WORLD_RANK=$rank OMPI_COMM_WORLD_LOCAL_RANK=$i
      exec /bin/sh -c "$TRAINYARD_COMMAND" ) &
  else
    ( export RANK=$rank LOCAL_RANK=$i; exec /bin/sh -c "$TRAINYARD_COMMAND" ) &
  fi
  pids="$pids $!"
  i=$((i + 1))
done
trap 'kill -TERM $pids 2>/dev/null' TERM INT
rc=0
for p in $pids; do
  wait "$p"
  c=$?
  if [ "$rc" -eq 0 ] && [ "$c" -ne 0 ]; then rc=$c; fi
done
exit "$rc"
)sh";

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

StatusOr<bool> Scheduler::OwnsNode(exec::Executor& executor, const std::string& handle,
                                   const std::string& run_id) {
  auto labels = executor.Labels(handle);
  if (!labels.ok()) {
    if (labels.status().code() == StatusCode::kNotFound) return false;
    return labels.status();
  }
  if (!labels->has_value()) return true;  // nodes no one else can have
  const auto& l = **labels;
  auto is = [&](const char* key, const std::string& want) {
    auto it = l.find(key);
    return it != l.end() && it->second == want;
  };
  return is("trainyard.workspace", layout_.root.string()) && is("trainyard.run_id", run_id);
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
  TY_RETURN_IF_ERROR(store_.TransitionRun(ctx.id, to, at_ms != 0 ? at_ms : NowMillis()));
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
  if (compute.type == "slurm") TY_RETURN_IF_ERROR(CheckSlurmFit(compute, request));
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
    store::ComputeRecord r{def.name, def.type, def.ToJson().dump(), NowMillis(), NowMillis()};
    TY_RETURN_IF_ERROR(store_.PutCompute(r));
    rec = r;
  }
  if (!rec.ok()) return rec.status();
  auto def = spec::ComputeDefinition::FromJson(
      nlohmann::json::parse(rec->definition_json, nullptr, false));
  if (!def.ok()) return def.status().WithPrefix("stored compute target '" + name + "'");
  ComputeState& c = computes_[name];
  c.def = std::move(def).value();
  return &c;
}

exec::Executor& Scheduler::ExecutorFor(const RunContext& ctx) {
  return ctx.process && options_.process_executor != nullptr ? *options_.process_executor
                                                             : executor_;
}

Status Scheduler::EnqueueLocked(std::shared_ptr<RunContext> ctx) {
  TY_ASSIGN_OR_RETURN(ComputeState * c, ComputeLocked(ctx->request.compute));
  ComputeState& compute = *c;
  PlaceLocked(*ctx, compute.def);
  ctx->queue_key = {-ctx->request.priority, next_seq_++};
  if (ctx->queued_at == 0) ctx->queued_at = NowMillis();
  ctx->image_ready = ctx->process || ready_images_.count(ctx->image_hash) > 0;
  ctx->queued = true;
  active_[ctx->id] = ctx;
  compute.queue.emplace(ctx->queue_key, ctx);
  if (!ctx->image_ready) PrebuildLocked(ctx);
  DispatchLocked(compute);
  return Status::Ok();
}

void Scheduler::PrebuildLocked(const std::shared_ptr<RunContext>& ctx) {
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
    ctx->image_ready = true;
    return;
  }
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

void Scheduler::RunBuild(std::shared_ptr<BuildTask> task) {
  const std::string password = task->def.registry ? task->def.registry->password : "";
  task->Write("Environment " + task->def.name + ":" + task->def.version + "\n");
  auto image = builder_.EnsureImage(task->def, [&](std::string_view text) {
    task->Write(password.empty() ? std::string(text) : Redact(std::string(text), password));
  });
  std::string reason;
  if (!image.ok()) {
    reason = Redact(ImageFailureReason(image.status()), password);
    task->Write("\n" + reason + "\n");
  }
  std::vector<std::shared_ptr<RunContext>> failed;
  {
    MutexLock lock(mu_);
    builds_.erase(task->image_hash);
    if (image.ok()) ready_images_.insert(task->image_hash);
    for (auto& ctx : task->waiting) {
      if (!ctx->queued) continue;  // canceled meanwhile
      if (image.ok()) {
        ctx->image_ready = true;
      } else {
        auto c = computes_.find(ctx->compute);
        if (c != computes_.end()) c->second.queue.erase(ctx->queue_key);
        ctx->queued = false;
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
  if (static_cast<int>(c.slots.size()) < c.def.max_nodes) c.slots.resize(c.def.max_nodes);
  int free = 0;
  for (int i = 0; i < c.def.max_nodes; ++i) free += c.slots[i].empty() ? 1 : 0;
  for (auto it = c.queue.begin(); it != c.queue.end();) {
    std::shared_ptr<RunContext> ctx = it->second;
    if (!ctx->image_ready) {
      ++it;  // its image is being built; runs behind it that are ready go first
      continue;
    }
    if (ctx->nodes > free) break;  // strict order: nothing overtakes a ready run that waits
    ctx->slots.clear();
    for (int i = 0; i < c.def.max_nodes && static_cast<int>(ctx->slots.size()) < ctx->nodes; ++i) {
      if (c.slots[i].empty()) {
        c.slots[i] = ctx->id;
        ctx->slots.push_back(i);
      }
    }
    free -= ctx->nodes;
    c.busy += ctx->nodes;
    ctx->queued = false;
    it = c.queue.erase(it);
    StartWorkerLocked(ctx);
  }
}

void Scheduler::ReleaseNodes(RunContext& ctx) {
  MutexLock lock(mu_);
  auto it = computes_.find(ctx.compute);
  if (it == computes_.end() || ctx.slots.empty()) return;
  ComputeState& c = it->second;
  for (int i : ctx.slots) {
    if (i < static_cast<int>(c.slots.size()) && c.slots[i] == ctx.id) c.slots[i].clear();
  }
  c.busy -= static_cast<int>(ctx.slots.size());
  ctx.slots.clear();
  DispatchLocked(c);
}

std::string Scheduler::WaitReasonLocked(const ComputeState& c, const RunContext& ctx,
                                        const RunContext* blocker) const {
  if (!ctx.image_ready) return "waiting for its image build";
  const int free = std::max(0, c.def.max_nodes - c.busy);
  if (blocker != nullptr) {
    return "behind run " + blocker->id + " (priority " + std::to_string(blocker->request.priority) +
           "), which waits for " + std::to_string(blocker->nodes) +
           (blocker->nodes == 1 ? " node" : " nodes");
  }
  return "waiting for " + std::to_string(ctx.nodes) + (ctx.nodes == 1 ? " node" : " nodes") + " (" +
         std::to_string(free) + " of " + std::to_string(c.def.max_nodes) + " free)";
}

void Scheduler::PlaceLocked(RunContext& ctx, const spec::ComputeDefinition& def) {
  ctx.compute = def.name;
  ctx.process = def.type == "process";
  ctx.slurm = def.type == "slurm";
  ctx.shared_dir = def.shared_dir;
  ctx.nodes = std::max(1, ctx.request.instance_count);
}

void Scheduler::HoldNodesLocked(RunContext& ctx) {
  ComputeState& c = computes_[ctx.compute];
  if (static_cast<int>(c.slots.size()) < c.def.max_nodes) c.slots.resize(c.def.max_nodes);
  for (std::size_t i = 0; static_cast<int>(ctx.slots.size()) < ctx.nodes; ++i) {
    if (i == c.slots.size()) c.slots.emplace_back();
    if (c.slots[i].empty()) {
      c.slots[i] = ctx.id;
      ctx.slots.push_back(static_cast<int>(i));
    }
  }
  c.busy += ctx.nodes;
}

void Scheduler::StartWorkerLocked(std::shared_ptr<RunContext> ctx) {
  ReapWorkersLocked();
  active_[ctx->id] = ctx;
  workers_[ctx->id] = std::thread([this, ctx] { Work(ctx); });
}

void Scheduler::Work(std::shared_ptr<RunContext> ctx) {
  if (ctx->attach && ctx->slurm) {
    FollowSlurm(*ctx);
  } else if (ctx->attach) {
    FollowAndFinish(*ctx);
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
  const std::int64_t ended_at = NowMillis();
  if (!reason.empty()) {
    std::fprintf(stderr, "[%s] run %s: %s\n", FormatTimeIso(NowMillis()).c_str(), ctx.id.c_str(),
                 reason.c_str());
  }
  if (!reason.empty()) {
    if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
      rec->failure_reason = reason;
      (void)store_.UpdateRun(*rec);
    }
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
  FollowedLogs::Forget(layout_.RunDir(ctx.id));
}

Status Scheduler::CollectOutputs(RunContext& ctx) {
  if (!options_.collect_outputs) return Status::Ok();
  const fs::path run_dir = layout_.RunDir(ctx.id);
  TY_ASSIGN_OR_RETURN(std::vector<std::string> skipped, options_.collect_outputs(ctx.id, run_dir));
  if (skipped.empty()) return Status::Ok();
  LogWriter log(run_dir, kStdLog, /*truncate=*/false, [this, &ctx] { Notify(ctx.id); });
  for (const std::string& why : skipped) {
    std::fprintf(stderr, "[%s] run %s: output not collected: %s\n",
                 FormatTimeIso(NowMillis()).c_str(), ctx.id.c_str(), why.c_str());
    log.Write("[trainyard] warning: output not collected: " + why + "\n");
  }
  return Status::Ok();
}

std::string Scheduler::Hostfile(const RunContext& ctx) {
  const int per_node = ProcessesPerNode(ctx.request);
  std::string out;
  for (int i = 0; i < ctx.nodes; ++i) {
    out += (ctx.process ? std::string("localhost") : NodeHost(i)) +
           " slots=" + std::to_string(per_node) + "\n";
  }
  return out;
}

StatusOr<exec::LaunchSpec> Scheduler::MakeLaunchSpec(RunContext& ctx, const std::string& image,
                                                     int node) {
  const spec::RunRequest& req = ctx.request;
  const fs::path run_dir = WorkDir(ctx);
  // A container sees the run's folders where it mounts them; a process sees the host's paths.
  const bool process = ctx.process;
  const std::string code_dir = process ? (run_dir / "code").string() : kCodeDir;
  exec::LaunchSpec spec;
  spec.run_id = ctx.id;
  spec.name = NodeName(workspace_id_, ctx.id, node, ctx.nodes);
  spec.image = image;
  spec.working_dir = code_dir;
  spec.shm_size_bytes = req.shm_size_bytes.value_or(0);
  const int slot =
      node < static_cast<int>(ctx.slots.size()) ? ctx.slots[static_cast<std::size_t>(node)] : 0;
  spec.labels = {{"trainyard.run_id", ctx.id},
                 {"trainyard.node", std::to_string(node)},
                 {"trainyard.compute", ctx.compute},
                 {"trainyard.workspace", layout_.root.string()}};
  if (!process) {
    spec.mounts.push_back({(run_dir / "code").string(), kCodeDir, CodeIsReadOnly(req)});
    spec.mounts.push_back({(run_dir / "outputs").string(), code_dir + "/outputs", false});
    spec.mounts.push_back({(run_dir / "logs").string(), code_dir + "/logs", false});
  }

  std::map<std::string, std::string> env;
  TY_ASSIGN_OR_RETURN(spec::EnvironmentDefinition def,
                      environments_.Resolve(req.environment_name, req.environment_version));
  for (const auto& [k, v] : def.environment_variables) env[k] = v;
  for (const auto& [k, v] : req.environment_variables) env[k] = v;
  if (!env.count("PYTHONUNBUFFERED")) env["PYTHONUNBUFFERED"] = "1";  // logs stream live

  // The node's size. Containers are held to it; a process is told its GPUs.
  spec::ComputeDefinition compute;
  {
    MutexLock lock(mu_);
    if (auto c = computes_.find(ctx.compute); c != computes_.end()) compute = c->second.def;
  }
  spec.nano_cpus = static_cast<std::int64_t>(compute.node_cpus * 1e9);
  spec.memory_bytes = compute.node_memory_bytes;
  spec.pids_limit = options_.container_pids_limit;
  spec.engine_log_max_bytes = options_.container_log_max_bytes;
  if (compute.node_gpus > 0) {
    // Node slot k owns GPUs [k*g, (k+1)*g) of the machine.
    std::string host_ids, local_ids;
    for (int g = 0; g < compute.node_gpus; ++g) {
      const std::string id = std::to_string(slot * compute.node_gpus + g);
      spec.gpu_device_ids.push_back(id);
      host_ids += (g ? "," : "") + id;
      local_ids += (g ? "," : "") + std::to_string(g);
    }
    // Inside a container only its own GPUs exist, numbered from 0.
    if (!env.count("CUDA_VISIBLE_DEVICES")) {
      env["CUDA_VISIBLE_DEVICES"] = process ? host_ids : local_ids;
    }
  }

  std::map<std::string, std::string> ins, outs;
  for (const auto& [name, in] : req.inputs) {
    std::string value;
    if (in.kind == spec::InputSpec::Kind::kLiteral) {
      value = in.value;
    } else if (process) {
      value = in.path;  // the daemon's machine is the host: the path as given
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
    std::string target =
        (process ? (run_dir / "outputs").string() : code_dir + "/outputs") + "/" + name;
    outs[name] = target;
    env["AZURE_ML_OUTPUT_" + name] = target;
  }
  std::string network_url;
  std::string network_ca;
  if (ctx.slurm) {
    MutexLock lock(network_mu_);
    network_url = network_tracking_url_;
    network_ca = network_tracking_ca_;
  }
  if (!network_url.empty()) {
    // A node may be another machine: it reports to the daemon's public address, trusting the
    // certificate the daemon serves there (docs/security.md, "Serving beyond loopback").
    env["TRAINYARD_TRACKING_URL"] = network_url;
    if (!network_ca.empty()) env["TRAINYARD_TRACKING_CA"] = network_ca;
    env["TRAINYARD_RUN_TOKEN"] = secrets_.RunToken(ctx.id, RunTokenExpiry(req, NowMillis()));
  } else if (!options_.socket_dir.empty()) {
    const std::string socket_dir = process ? options_.socket_dir.string() : kSocketDir;
    if (!process) spec.mounts.push_back({options_.socket_dir.string(), kSocketDir, true});
    env["TRAINYARD_TRACKING_URL"] = "unix://" + socket_dir + "/api.sock";
    env["TRAINYARD_RUN_TOKEN"] = secrets_.RunToken(ctx.id, RunTokenExpiry(req, NowMillis()));
  }
  if (!options_.sdk_dir.empty()) {
    if (!process) spec.mounts.push_back({options_.sdk_dir.string(), kSdkDir, true});
    spec.prepend_paths["PYTHONPATH"] = process ? options_.sdk_dir.string() : kSdkDir;
  }
  env["TRAINYARD_RUN_ID"] = ctx.id;
  env["TRAINYARD_EXPERIMENT"] = req.experiment_name;
  env["TRAINYARD_WORKSPACE"] = layout_.root.string();
  env["AZUREML_RUN_ID"] = ctx.id;
  env["AZUREML_ARM_PROJECT_NAME"] = req.experiment_name;

  // Distributed training (REFERENCE.md): every node learns the run's shape and its place in it.
  const std::string type = req.distribution ? req.distribution->type : "";
  const int per_node = ProcessesPerNode(req);
  const int world = ctx.nodes * per_node;
  const std::string master = process ? "127.0.0.1" : NodeHost(0);
  if (ctx.slurm) {
    // Each task of the Slurm job derives its place in the run from SLURM_* (slurm::TaskSpec)
    // and runs the command in a container of its own.
    TY_ASSIGN_OR_RETURN(std::string command, spec::SubstituteCommand(req.command, ins, outs));
    spec.argv = {"/bin/sh", "-c", command};
    for (const auto& [k, v] : env) spec.env.push_back(k + "=" + v);
    return spec;
  }
  // The cloud service's v1 runtime names for the node's index and the head node (a one-node
  // container has no host name of its own: itself).
  env["AZ_BATCHAI_TASK_INDEX"] = std::to_string(node);
  env["AZ_BATCHAI_MPI_MASTER_NODE"] = ctx.nodes > 1 ? master : "127.0.0.1";
  if (ctx.nodes > 1 && !process) {
    spec.network = ContainerName(workspace_id_, ctx.id);
    spec.hostname = NodeHost(node);
    spec.network_aliases = {NodeHost(node)};
    spec.mounts.push_back({(run_dir / kHostfile).string(), kHostfileInContainer, true});
  }
  if (ctx.nodes > 1 || !type.empty()) {
    env["TRAINYARD_NODE_RANK"] = std::to_string(node);
    env["TRAINYARD_NODE_COUNT"] = std::to_string(ctx.nodes);
    env["TRAINYARD_PROCESSES"] = std::to_string(per_node);
    env["TRAINYARD_DISTRIBUTION"] = type;
    if (ctx.nodes > 1) {
      env["TRAINYARD_HOSTFILE"] =
          process ? (run_dir / kHostfile).string() : std::string(kHostfileInContainer);
    }
  }
  if (type == "mpi") {
    env["OMPI_COMM_WORLD_SIZE"] = std::to_string(world);
    env["OMPI_COMM_WORLD_LOCAL_SIZE"] = std::to_string(per_node);
    env["OMPI_COMM_WORLD_NODE_RANK"] = std::to_string(node);
    if (per_node == 1) {
      env["OMPI_COMM_WORLD_RANK"] = std::to_string(node);
      env["OMPI_COMM_WORLD_LOCAL_RANK"] = "0";
    }
  } else if (type == "tensorflow") {
    nlohmann::json workers = nlohmann::json::array();
    for (int i = 0; i < ctx.nodes; ++i) {
      workers.push_back((process ? "127.0.0.1" : NodeHost(i)) + ":" +
                        std::to_string(kTensorFlowPort + (process ? i : 0)));
    }
    env["TF_CONFIG"] = nlohmann::json{
        {"cluster", {{"worker", workers}}},
        {"task", {{"type", "worker"}, {"index", node}}},
        {"environment",
         "cloud"}}.dump();
  } else if (type == "pytorch" || ctx.nodes > 1) {
    env["MASTER_ADDR"] = master;
    if (!env.count("MASTER_PORT")) env["MASTER_PORT"] = std::to_string(kDefaultMasterPort);
    env["WORLD_SIZE"] = std::to_string(world);
    env["NODE_RANK"] = std::to_string(node);
    if (per_node == 1) {
      env["RANK"] = std::to_string(node);
      env["LOCAL_RANK"] = "0";
    }
  }

  TY_ASSIGN_OR_RETURN(std::string command, spec::SubstituteCommand(req.command, ins, outs));
  if (per_node > 1) {
    // Several processes per node: a launcher starts them, each with its own ranks.
    env["TRAINYARD_COMMAND"] = command;
    spec.argv = {"/bin/sh", "-c", kLauncher};
  } else {
    spec.argv = {"/bin/sh", "-c", command};
  }
  spec.env.clear();
  for (const auto& [k, v] : env) spec.env.push_back(k + "=" + v);
  return spec;
}

void Scheduler::Execute(RunContext& ctx) {
  auto canceled = [&] {
    MutexLock lock(ctx.mu);
    return ctx.cancel_requested;
  };
  if (canceled()) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
    return;
  }
  if (Status t = Transition(ctx, RunStatus::kPreparing); !t.ok()) {
    Finish(ctx, RunStatus::kFailed, "internal: " + t.message());
    return;
  }
  const fs::path run_dir = layout_.RunDir(ctx.id);
  // A process compute builds nothing: its runs have no build log.
  std::optional<LogWriter> build_log;
  if (!ctx.process) build_log.emplace(run_dir, kBuildLog, false, [this, &ctx] { Notify(ctx.id); });
  auto build_note = [&](std::string_view text) {
    if (build_log) build_log->Write(text);
  };

  // The snapshot becomes the working folder: hard links to its read-only objects (the folder
  // is then mounted read-only, so a run cannot write through a link into the store), or a
  // writable copy when the job asks for one. Outputs and logs are the run's own folders,
  // mounted over ./outputs and ./logs; their mount points must exist in a read-only folder.
  // A slurm run whose compute has a shared folder of its own works there, where its nodes see it.
  const fs::path work_dir = WorkDir(ctx);
  const fs::path code_dir = work_dir / "code";
  (void)RemoveTree(code_dir);
  // A process runs on the host with the daemon's rights, which could write through a hard link
  // into the store: it always gets a copy. So does a run in a shared folder elsewhere, which
  // may be another file system.
  const bool copy = ctx.request.code_copy || ctx.process || work_dir != run_dir;
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
    if (!ctx.process) {
      s = MakeDirs(code_dir / d);  // mount points of the run's own folders
      continue;
    }
    // No mounts for a process: ./outputs and ./logs lead to the run's own folders.
    (void)RemoveTree(code_dir / d);
    std::error_code ec;
    fs::create_directory_symlink(fs::path("..") / d, code_dir / d, ec);
    if (ec) s = Internal("cannot link " + (code_dir / d).string() + ": " + ec.message());
  }
  if (!s.ok()) {
    build_note("Preparing the working folder failed: " + s.message() + "\n");
    Finish(ctx, RunStatus::kFailed, "preparing the working folder failed: " + s.message());
    return;
  }

  std::string image_ref;
  if (!ctx.process) {
    auto def = environments_.Resolve(ctx.request.environment_name, ctx.request.environment_version);
    if (!def.ok()) {
      Finish(ctx, RunStatus::kFailed, "environment: " + def.status().message());
      return;
    }
    build_note("Environment " + def->name + ":" + def->version + "\n");
    // Secrets never reach a log: the sink redacts the registry password should the engine
    // echo it. Built while the run was queued, the image is normally found at once here.
    std::string password = def->registry ? def->registry->password : "";
    auto image = builder_.EnsureImage(*def, [&](std::string_view text) {
      build_note(password.empty() ? std::string(text) : Redact(std::string(text), password));
    });
    if (!image.ok()) {
      const std::string reason = Redact(ImageFailureReason(image.status()), password);
      build_note("\n" + reason + "\n");
      Finish(ctx, RunStatus::kFailed, reason);
      return;
    }
    image_ref = image->image;
    if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
      rec->image = image->image;
      rec->image_hash = image->image_hash;
      (void)store_.UpdateRun(*rec);
    }
  }
  if (canceled()) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
    return;
  }
  if (ctx.slurm) {
    ExecuteSlurm(ctx, image_ref);
    return;
  }
  if (Status t = Transition(ctx, RunStatus::kStarting); !t.ok()) {
    Finish(ctx, RunStatus::kFailed, "internal: " + t.message());
    return;
  }
  exec::Executor& executor = ExecutorFor(ctx);
  // A multi-node run's nodes share a network of their own, where they find each other by name.
  Status launched = Status::Ok();
  if (ctx.nodes > 1) {
    launched = WriteFileAtomic(layout_.RunDir(ctx.id) / kHostfile, Hostfile(ctx));
    if (launched.ok()) {
      launched = executor.CreateNetwork(
          ContainerName(workspace_id_, ctx.id),
          {{"trainyard.run_id", ctx.id}, {"trainyard.workspace", layout_.root.string()}});
    }
  }
  // Nodes of earlier runs that could not be removed when their engine was gone; it answers now.
  std::vector<std::pair<exec::Executor*, std::string>> leftovers;
  {
    MutexLock lock(mu_);
    leftovers.swap(leftovers_);
  }
  for (const auto& [e, h] : leftovers) {
    if (!e->Cleanup(h).ok()) {
      MutexLock lock(mu_);
      leftovers_.emplace_back(e, h);
    }
  }
  std::vector<std::string> handles;
  for (int node = 0; node < ctx.nodes && launched.ok(); ++node) {
    auto launch = MakeLaunchSpec(ctx, image_ref, node);
    if (!launch.ok()) {
      launched = launch.status();
      break;
    }
    // A leftover from an interrupted attempt of this run is removed; a node of that name that
    // is not this run's of this workspace is never touched (the launch then fails, naming it).
    if (auto owned = OwnsNode(executor, launch->name, ctx.id); owned.ok() && *owned) {
      (void)executor.Cleanup(launch->name);
    }
    auto handle = executor.Launch(*launch);
    if (!handle.ok()) {
      launched = handle.status().WithPrefix(ctx.nodes > 1 ? "node " + std::to_string(node) : "");
      break;
    }
    handles.push_back(launch->name);
    if (node == 0) {
      if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
        rec->container_id = *handle;
        (void)store_.UpdateRun(*rec);
      }
    }
  }
  if (!launched.ok()) {
    for (const auto& h : handles) (void)executor.Cleanup(h);
    if (ctx.nodes > 1) (void)executor.RemoveNetwork(ContainerName(workspace_id_, ctx.id));
    Finish(ctx, RunStatus::kFailed, "could not start the run: " + launched.message());
    return;
  }
  {
    MutexLock lock(ctx.mu);
    ctx.handles = std::move(handles);
  }
  if (!Transition(ctx, RunStatus::kRunning).ok()) {
    // Canceled between launch and now: FollowAndFinish stops the container.
  }
  ctx.running_since = NowMillis();
  FollowAndFinish(ctx);
}

void Scheduler::FollowAndFinish(RunContext& ctx) {
  const fs::path run_dir = layout_.RunDir(ctx.id);
  exec::Executor& executor = ExecutorFor(ctx);
  std::vector<std::string> handles;
  {
    MutexLock lock(ctx.mu);
    handles = ctx.handles;
  }
  const int n = static_cast<int>(handles.size());
  // Cancel, timeout and a failed node are carried out by a watchdog, so the log streams are
  // never blocked: it stops every node that still runs.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (ctx.request.timeout_seconds) {
    std::int64_t elapsed_ms = std::max<std::int64_t>(0, NowMillis() - ctx.running_since);
    deadline = std::chrono::steady_clock::now() +
               std::chrono::milliseconds(*ctx.request.timeout_seconds * 1000 - elapsed_ms);
  }
  std::thread watchdog([&] {
    MutexLock lock(ctx.mu);
    auto stop_wanted = [&]() REQUIRES(ctx.mu) {
      return ctx.node_done || ctx.cancel_requested || ctx.node_failed;
    };
    while (!stop_wanted()) {
      if (!deadline) {
        lock.Wait(ctx.cv);
      } else if (!lock.WaitUntil(ctx.cv, *deadline)) {
        if (!stop_wanted()) ctx.timed_out = true;
        break;
      }
    }
    if (ctx.node_done) return;
    lock.Unlock();
    std::vector<std::thread> stops;
    for (const auto& h : handles) {
      stops.emplace_back([&, h] { (void)executor.Stop(h, options_.stop_grace_seconds); });
    }
    for (auto& t : stops) t.join();
  });

  // One node: its output is the run's log. Several: each has its own
  // (user_logs/std_log_node_<i>.txt) and the run's log has every node's lines, each prefixed
  // "[node i] ". A re-attach resumes each from where the previous daemon's checkpoint left it.
  FollowedLogs logs(run_dir, n, ctx.attach, [this, &ctx] { Notify(ctx.id); });
  std::vector<StatusOr<exec::ExitInfo>> exits(n, Internal("not waited for"));
  // The order nodes ended badly in (1 = first), 0 for those that did not: the first is the cause,
  // the others were most likely stopped because of it.
  std::vector<int> failed_at(n, 0);
  std::atomic<int> failures{0};
  auto follow = [&](int i) {
    // The engine may end a follow before the end of the output (Docker 20.10 does when a
    // container exits while the follower is behind): ask again from where it stopped until a
    // follow brings nothing new.
    Status streamed;
    // Positions only move forward and the output of an ended node is finite: this ends. The
    // bound is a backstop against an engine that keeps answering with the same messages.
    constexpr int kMaxFollows = 1000;
    for (int follows = 0; follows < kMaxFollows && streamed.ok(); ++follows) {
      bool more = false;
      streamed = executor.StreamLogs(handles[i], logs.Position(i),
                                     [&](std::string_view data, const std::string& position) {
                                       more = true;
                                       logs.Write(i, data, position);
                                     });
      if (!more) break;
    }
    if (!streamed.ok()) {
      std::fprintf(stderr, "[%s] run %s: following the output of node %d stopped: %s\n",
                   FormatTimeIso(NowMillis()).c_str(), ctx.id.c_str(), i,
                   streamed.message().c_str());
    }
    logs.Flush(i);
    exits[i] = executor.Wait(handles[i]);
    if (!exits[i].ok() || exits[i]->exit_code != 0) {
      failed_at[i] = ++failures;
      {
        MutexLock lock(ctx.mu);
        ctx.node_failed = true;
      }
      ctx.cv.notify_all();
    }
  };
  if (n == 1) {
    follow(0);
  } else {
    std::vector<std::thread> followers;
    for (int i = 0; i < n; ++i) followers.emplace_back(follow, i);
    for (auto& t : followers) t.join();
  }
  {
    MutexLock lock(ctx.mu);
    ctx.node_done = true;
  }
  ctx.cv.notify_all();
  watchdog.join();

  bool canceled, timed_out;
  {
    MutexLock lock(ctx.mu);
    canceled = ctx.cancel_requested;
    timed_out = ctx.timed_out;
  }
  // The node the run's outcome is told by: the first to fail, else node 0.
  int cause = 0;
  for (int i = 0; i < n; ++i) {
    if (failed_at[i] != 0 && (failed_at[cause] == 0 || failed_at[i] < failed_at[cause])) cause = i;
  }
  StatusOr<exec::ExitInfo> exit = exits[cause];
  if (!ctx.process && !canceled && !timed_out && exit.ok() && !exit->oom_killed &&
      (exit->exit_code == 137 || exit->exit_code == 143)) {
    // Killed by a signal nobody here sent: the engine may be shutting down (dockerd stops its
    // containers as it goes). Its API goes away moments after the containers do.
    for (int i = 0; i < 30; ++i) {
      if (Status ping = executor.Ping(); !ping.ok()) {
        exit = Unavailable("the node was killed (exit code " + std::to_string(exit->exit_code) +
                           ") as its engine went away: " + ping.message());
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const std::string node_prefix = n > 1 ? "node " + std::to_string(cause) + ": " : "";
  if (exit.ok()) {
    if (auto rec = store_.GetRun(ctx.id); rec.ok()) {
      rec->exit_code = exit->exit_code;
      (void)store_.UpdateRun(*rec);
    }
  }
  (void)Transition(ctx, RunStatus::kFinalizing);
  // ./outputs and ./logs were written straight into the run's folders by the bind mounts;
  // nothing is left inside the container once it is removed.
  for (const auto& h : handles) {
    if (!executor.Cleanup(h).ok()) {
      // The engine went away with the node: removed the next time a run starts on it.
      MutexLock lock(mu_);
      leftovers_.emplace_back(&executor, h);
    }
  }
  if (n > 1) (void)executor.RemoveNetwork(ContainerName(workspace_id_, ctx.id));
  const Status collected = CollectOutputs(ctx);

  if (canceled) {
    Finish(ctx, RunStatus::kCanceled, "canceled by user");
  } else if (timed_out) {
    Finish(ctx, RunStatus::kFailed,
           "timed out after " + std::to_string(*ctx.request.timeout_seconds) + " s");
  } else if (!exit.ok()) {
    Finish(ctx, RunStatus::kFailed, "compute lost: " + node_prefix + exit.status().message());
  } else if (auto verdict = ScriptFailure(store_, ctx.id)) {
    // The script called fail(): its verdict stands whatever the exit code (docs/tracking.md).
    Finish(ctx, RunStatus::kFailed, *verdict);
  } else if (exit->oom_killed) {
    Finish(ctx, RunStatus::kFailed,
           "out of memory: " + node_prefix + "the kernel killed the script (exit code " +
               std::to_string(exit->exit_code) + ")");
  } else if (exit->exit_code != 0) {
    std::string reason = node_prefix + "script exited with code " + std::to_string(exit->exit_code);
    if (n > 1) {
      reason += " (its log: " + NodeLogName(cause) + "; the other nodes were stopped)";
    }
    if (CodeIsReadOnly(ctx.request) &&
        LogTailMentions(layout_.RunDir(ctx.id), kStdLog, "Read-only file system")) {
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
    if (ctx && ctx->queued) {
      // A queued run leaves its queue (and stops waiting for its image build) at once.
      was_queued = true;
      ctx->queued = false;
      if (auto c = computes_.find(ctx->compute); c != computes_.end()) {
        c->second.queue.erase(ctx->queue_key);
        DispatchLocked(c->second);  // the runs behind it may fit now
      }
      if (auto b = builds_.find(ctx->image_hash); b != builds_.end()) b->second->Detach(run_id);
      active_.erase(run_id);
    }
  }
  if (!ctx) return FailedPrecondition("run '" + run_id + "' is not active in this daemon");
  {
    MutexLock lock(ctx->mu);
    if (ctx->cancel_requested) return Status::Ok();
    ctx->cancel_requested = true;
  }
  (void)store_.TransitionRun(run_id, RunStatus::kCancelRequested, NowMillis());
  Notify(run_id);
  if (was_queued) {
    Finish(*ctx, RunStatus::kCanceled, "canceled by user");
    return Status::Ok();
  }
  ctx->cv.notify_all();
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
    {
      MutexLock lock(mu_);
      auto c = ComputeLocked(ctx->request.compute);
      if (c.ok()) PlaceLocked(*ctx, (*c)->def);
    }
    if (ctx->compute.empty()) {
      Finish(*ctx, RunStatus::kFailed,
             "compute lost: compute target '" + ctx->request.compute + "' no longer exists");
      continue;
    }
    if (ctx->slurm && RecoverSlurm(ctx, rec)) continue;
    std::vector<std::string> handles;
    for (int i = 0; i < ctx->nodes; ++i) {
      handles.push_back(NodeName(workspace_id_, rec.id, i, ctx->nodes));
    }
    {
      MutexLock lock(ctx->mu);
      ctx->handles = handles;
    }
    // A slurm run without a job (RecoverSlurm found none) has no container here to ask about;
    // a container of that name that is not this run's (another workspace's) is not its either.
    StatusOr<bool> running = NotFound("no Slurm job");
    if (!ctx->slurm) {
      auto owned = OwnsNode(ExecutorFor(*ctx), handles.front(), rec.id);
      running = !owned.ok() ? StatusOr<bool>(owned.status())
                : *owned    ? ExecutorFor(*ctx).IsRunning(handles.front())
                         : StatusOr<bool>(NotFound("the container of that name is not this run's"));
    }
    if (!running.ok() && running.status().code() != StatusCode::kNotFound) {
      // The engine cannot be asked (dockerd down or restarting): failing the run would be a
      // guess, and its container may be alive. It stays as it is until a daemon can ask.
      std::fprintf(stderr, "[%s] run %s: not recovered, the engine did not answer: %s\n",
                   FormatTimeIso(NowMillis()).c_str(), rec.id.c_str(),
                   running.status().message().c_str());
      continue;
    }
    // A run caught in Starting is followed when its container runs or ran to its end (its
    // command must not run twice), else started again (Execute removes a half-made container).
    bool started = running.ok() && *running;
    if (rec.status == RunStatus::kStarting && running.ok() && !*running) {
      auto ended = ExecutorFor(*ctx).HasEnded(handles.front());
      started = ended.ok() && *ended;
    }
    const bool launched = rec.status == RunStatus::kRunning ||
                          rec.status == RunStatus::kFinalizing ||
                          rec.status == RunStatus::kCancelRequested ||
                          (rec.status == RunStatus::kStarting && started);
    if (launched && running.ok()) {
      // The container is there, running or finished: follow it to its end.
      ctx->attach = true;
      {
        MutexLock lock(ctx->mu);
        ctx->cancel_requested = rec.status == RunStatus::kCancelRequested;
      }
      if (ctx->running_since == 0) ctx->running_since = NowMillis();
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
  if (def.type == "process" && options_.process_executor == nullptr) {
    return FailedPrecondition("this daemon cannot run process computes");
  }
  if (def.type == "slurm") {
    if (options_.slurm == nullptr) {
      return FailedPrecondition("this daemon cannot run slurm computes");
    }
    // Fail fast: a partition Slurm does not have is refused now, not at the first run.
    TY_RETURN_IF_ERROR(CheckSlurmFit(def, std::nullopt));
  }
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
      std::size_t active = c.queue.size() + static_cast<std::size_t>(c.busy);
      if (active > 0) {
        return FailedPrecondition("compute target '" + def.name + "' cannot change its type from " +
                                  c.def.type + " to " + def.type + " while " +
                                  std::to_string(active) + " runs use it");
      }
    }
  }
  const std::int64_t now = NowMillis();
  // A registry password is stored sealed, and kept sealed in memory until a run needs it.
  spec::ComputeDefinition sealed = def;
  if (sealed.registry) sealed.registry->password = secrets_.Seal(sealed.registry->password);
  store::ComputeRecord rec{def.name, def.type, sealed.ToJson().dump(), now, now};
  TY_RETURN_IF_ERROR(store_.PutCompute(rec));
  ComputeState& c = computes_[def.name];
  c.def = std::move(sealed);
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
  st.busy_nodes = c->busy;
  st.idle_nodes = std::max(0, c->def.max_nodes - c->busy);
  std::set<std::string> seen;
  for (const auto& id : c->slots) {
    if (!id.empty() && seen.insert(id).second) st.running.push_back(id);
  }
  // The first ready run that does not fit blocks every ready run behind it.
  const RunContext* blocker = nullptr;
  int free = st.idle_nodes;
  for (const auto& [key, ctx] : c->queue) {
    QueuedRun q;
    q.run_id = ctx->id;
    q.nodes = ctx->nodes;
    q.priority = ctx->request.priority;
    q.queued_at = ctx->queued_at;
    q.wait_reason = WaitReasonLocked(*c, *ctx, ctx->image_ready ? blocker : nullptr);
    if (ctx->image_ready && blocker == nullptr && ctx->nodes > free) blocker = ctx.get();
    if (ctx->image_ready && blocker == nullptr) free -= ctx->nodes;
    st.queued.push_back(std::move(q));
  }
  return st;
}

StatusOr<ComputeStatus> Scheduler::GetComputeStatus(const std::string& name) {
  TY_ASSIGN_OR_RETURN(ComputeStatus st, GetQueueStatus(name));
  // Slurm is asked without holding mu_: its commands take milliseconds to seconds.
  if (st.definition.type == "slurm") st.cluster = ClusterStatus(st.definition);
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
  if (!active.empty() || c->busy > 0 || !c->queue.empty()) {
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

#include "trainyard/sched/scheduler.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include "trainyard/common/fs.h"
#include "trainyard/common/testing/fake_clock.h"
#include "trainyard/common/util.h"
#include "trainyard/docker/fake_engine.h"
#include "trainyard/exec/docker/docker_runs.h"
#include "trainyard/exec/process/process_runs.h"
#include "trainyard/exec/run_logs.h"
#include "trainyard/exec/slurm/slurm_runs.h"
#include "trainyard/spec/spec.h"

namespace trainyard::sched {
namespace {

using store::RunStatus;
using namespace std::chrono_literals;

// An in-memory Slurm: jobs are records a test moves through their states; nothing runs.
class FakeSlurm : public slurm::Client {
 public:
  StatusOr<std::int64_t> Submit(const slurm::JobRequest& req) override {
    std::lock_guard lock(mu_);
    if (!refuse_.empty()) return InvalidArgument(refuse_);
    slurm::JobInfo j;
    j.id = next_id_++;
    j.name = req.name;
    j.comment = req.comment;
    j.partition = req.partition;
    j.state = "PENDING";
    j.reason = "Priority";
    j.time_limit_minutes = (req.time_limit_seconds + 59) / 60;
    jobs_.push_back(j);
    requests_.push_back(req);
    cv_.notify_all();
    return j.id;
  }
  StatusOr<std::vector<slurm::JobInfo>> ListJobs() override {
    std::lock_guard lock(mu_);
    return jobs_;
  }
  StatusOr<std::optional<slurm::JobInfo>> AccountedJob(std::int64_t) override {
    return std::optional<slurm::JobInfo>();
  }
  Status Cancel(std::int64_t id) override {
    std::lock_guard lock(mu_);
    ++cancels_;
    for (auto& j : jobs_) {
      if (j.id == id && !slurm::IsFinalState(j.state)) {
        j.state = "CANCELLED";
        j.signal = 15;
      }
    }
    return Status::Ok();
  }
  StatusOr<std::vector<slurm::NodeInfo>> ListNodes() override {
    slurm::NodeInfo n;
    n.name = "n1";
    n.state = "idle";
    n.cpus = 2;
    n.partitions = {"debug"};
    return std::vector<slurm::NodeInfo>{n};
  }

  // The request of the `i`th submit, once it came (else fails the test).
  slurm::JobRequest WaitForSubmit(std::size_t i = 0) {
    std::unique_lock lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, 20s, [&] { return requests_.size() > i; }))
        << "no sbatch call #" << i;
    return requests_.size() > i ? requests_[i] : slurm::JobRequest{};
  }
  void Set(std::int64_t id, const std::string& state, const std::string& reason = "",
           std::optional<int> exit_code = std::nullopt) {
    std::lock_guard lock(mu_);
    for (auto& j : jobs_) {
      if (j.id != id) continue;
      j.state = state;
      j.reason = reason;
      j.exit_code = exit_code;
      if (state != "PENDING") j.start_time = 1;
    }
  }
  void Forget(std::int64_t id) {
    std::lock_guard lock(mu_);
    std::erase_if(jobs_, [&](const auto& j) { return j.id == id; });
  }
  void Refuse(std::string message) {
    std::lock_guard lock(mu_);
    refuse_ = std::move(message);
  }
  int cancels() {
    std::lock_guard lock(mu_);
    return cancels_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<slurm::JobInfo> jobs_;
  std::vector<slurm::JobRequest> requests_;
  std::int64_t next_id_ = 1;
  int cancels_ = 0;
  std::string refuse_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override { Build(2); }

  void Build(int max_concurrent, exec::ExecutorOptions eopts = {}) {
    scheduler_.reset();
    if (root_.empty()) {
      root_ = fs::temp_directory_path() / ("ty-sched-" + RandomHex(4));
      layout_.root = root_;
      ASSERT_TRUE(layout_.Create().ok());
      auto st = store::OpenSqliteStore(layout_.Database().string());
      ASSERT_TRUE(st.ok());
      store_ = std::move(st).value();
      objects_ = std::make_unique<cas::ObjectStore>(layout_.ObjectsDir());
      snapshots_ = std::make_unique<cas::Snapshotter>(*objects_, layout_.SnapshotsDir());
      builder_ = std::make_unique<envbuild::ImageBuilder>(engine_, *snapshots_,
                                                          layout_.ScratchDir(), root_ / "none");
      executor_ = std::make_unique<exec::DockerExecutor>(engine_);
      process_executor_ =
          std::make_unique<exec::ProcessExecutor>(exec::ProcessExecutorOptions{root_ / "nodes"});
      registry_ = std::make_unique<envbuild::EnvironmentRegistry>(*store_, secrets_);
      engine_.AddImage("python:3.11-slim");
    }
    eopts.stop_grace_seconds = 1;
    docker_runs_ = std::make_unique<exec::DockerRunExecutor>(*executor_, eopts);
    process_runs_ = std::make_unique<exec::ProcessRunExecutor>(*process_executor_, eopts);
    slurm_runs_ = std::make_unique<exec::SlurmRunExecutor>(
        slurm_, engine_, secrets_, exec::SlurmExecutorOptions{eopts, /*poll_ms=*/20});
    executors_ = exec::ExecutorRegistry();
    executors_.Add("docker", docker_runs_.get());
    executors_.Add("process", process_runs_.get());
    executors_.Add("slurm", slurm_runs_.get());
    SchedulerOptions opts;
    opts.local_max_nodes = max_concurrent;
    opts.clock = &clock_;
    scheduler_ = std::make_unique<Scheduler>(*store_, *registry_, *builder_, executors_,
                                             *snapshots_, secrets_, layout_, opts);
    scheduler_->SetChangeListener([this](const std::string&) {
      {
        std::lock_guard lock(changes_mu_);
        ++changes_;
      }
      changes_cv_.notify_all();
    });
  }

  void TearDown() override {
    scheduler_.reset();
    (void)RemoveTree(root_);
  }

  static spec::RunRequest Request(const std::string& command) {
    spec::RunRequest r;
    r.experiment_name = "unit";
    r.command = command;
    spec::EnvironmentDefinition env;
    env.image = "python:3.11-slim";
    env.user_managed_dependencies = true;
    r.environment = env;
    return r;
  }

  store::RunRecord WaitFor(const std::string& id, std::chrono::milliseconds timeout = 20s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const std::uint64_t seen = Changes();
      auto r = store_->GetRun(id);
      EXPECT_TRUE(r.ok());
      if (store::IsTerminal(r->status) || !WaitForChange(seen, deadline)) return *r;
    }
  }

  // How many changes the scheduler announced (SetChangeListener): a state is recorded before it
  // is announced, so a test reads the count, then the store, then waits for the count to move.
  std::uint64_t Changes() {
    std::lock_guard lock(changes_mu_);
    return changes_;
  }
  // False when `deadline` passed first.
  bool WaitForChange(std::uint64_t seen, std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(changes_mu_);
    return changes_cv_.wait_until(lock, deadline, [&] { return changes_ != seen; });
  }

  // Records a run as a previous daemon would have left it: submitted and moved up to `status`
  // (one of Queued, Preparing, Starting, Running), with a registered environment.
  void InsertLeftoverRun(const std::string& id, RunStatus status) {
    spec::EnvironmentDefinition env;
    env.name = "leftover-env";
    env.image = "python:3.11-slim";
    env.user_managed_dependencies = true;
    auto rec_env = registry_->Register(env);
    ASSERT_TRUE(rec_env.ok()) << rec_env.status().ToString();
    spec::RunRequest req;
    req.experiment_name = "unit";
    req.command = "python train.py";
    req.environment_name = rec_env->name;
    req.environment_version = rec_env->version;
    store::RunRecord r;
    r.id = id;
    r.experiment = "unit";
    r.compute = "local";
    r.request_json = req.ToJson(spec::SecretMode::kAsIs).dump();
    r.environment_name = rec_env->name;
    r.environment_version = rec_env->version;
    r.created_at = NowMillis();
    ASSERT_TRUE(store_->InsertRun(r).ok());
    for (RunStatus s :
         {RunStatus::kQueued, RunStatus::kPreparing, RunStatus::kStarting, RunStatus::kRunning}) {
      ASSERT_TRUE(store_->TransitionRun(id, s, NowMillis()).ok());
      if (s == status) break;
    }
  }

  // Starts a container `name` on the fake engine, as a previous daemon would have left it;
  // returns its id, "" when it could not be created and started.
  // The container a previous daemon of this workspace launched for `run`: its name and labels.
  // `workspace` names another workspace's instead.
  std::string StartLeftoverContainer(const std::string& run, const std::string& workspace = "") {
    docker::ContainerConfig c;
    c.name = ContainerOf(run);
    c.labels = {{"trainyard.run_id", run},
                {"trainyard.workspace", workspace.empty() ? layout_.root.string() : workspace}};
    c.image = "python:3.11-slim";
    auto id = engine_.CreateContainer(c);
    if (!id.ok() || !engine_.StartContainer(*id).ok()) return "";
    return *id;
  }

  // The container name of one-node run `run` of this workspace.
  std::string ContainerOf(const std::string& run) const {
    return "trainyard-" + Scheduler::WorkspaceId(layout_.root) + "-" + run;
  }

  // A `process` compute named `name` with `max_nodes` nodes.
  void AddProcessCompute(const std::string& name, int max_nodes) {
    spec::ComputeDefinition c;
    c.name = name;
    c.type = "process";
    c.max_nodes = max_nodes;
    ASSERT_TRUE(scheduler_->PutCompute(c, false).ok());
  }

  void WaitForStatus(const std::string& id, RunStatus s) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
      const std::uint64_t seen = Changes();
      if (store_->GetRun(id)->status == s) return;
      if (!WaitForChange(seen, deadline)) break;
    }
    FAIL() << "run " << id << " never reached " << store::RunStatusName(s);
  }

  fs::path root_;
  WorkspaceLayout layout_;
  docker::FakeEngine engine_;
  SecretBox secrets_ = SecretBox::ForTesting("0123456789abcdef0123456789abcdef");
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<cas::ObjectStore> objects_;
  std::unique_ptr<cas::Snapshotter> snapshots_;
  std::unique_ptr<envbuild::ImageBuilder> builder_;
  std::unique_ptr<exec::DockerExecutor> executor_;
  std::unique_ptr<exec::ProcessExecutor> process_executor_;
  std::unique_ptr<exec::DockerRunExecutor> docker_runs_;
  std::unique_ptr<exec::ProcessRunExecutor> process_runs_;
  std::unique_ptr<exec::SlurmRunExecutor> slurm_runs_;
  exec::ExecutorRegistry executors_;
  std::unique_ptr<envbuild::EnvironmentRegistry> registry_;
  std::unique_ptr<Scheduler> scheduler_;
  FakeSlurm slurm_;
  // Runs' times and timeouts: a timeout is reached by moving it, not by waiting.
  trainyard::testing::FakeClock clock_;
  std::mutex changes_mu_;
  std::condition_variable changes_cv_;
  std::uint64_t changes_ = 0;
};

// A node that writes without newlines must not grow the daemon's memory: the multi-node log's
// line prefixer cuts a line at kMaxLine, and keeps every byte.
TEST(LinePrefixerTest, LongLinesArePassedOnInBoundedPieces) {
  constexpr std::size_t kMax = exec::LinePrefixer::kMaxLine;
  std::string out;
  std::size_t largest_write = 0;
  exec::LinePrefixer p("[n] ", [&](std::string_view t) {
    largest_write = std::max(largest_write, t.size());
    out.append(t);
  });
  p.Write("short\nhalf");
  p.Write("-line\n");
  EXPECT_EQ(out, "[n] short\n[n] half-line\n");
  out.clear();
  const std::string chunk(1000, 'x');
  for (int i = 0; i < 1000; ++i) p.Write(chunk);  // 1 MB, no newline
  p.Write("\nend\n");
  p.Flush();
  std::size_t x_count = 0, lines = 0;
  for (const std::string& line : Split(out, '\n')) {
    if (line.empty()) continue;
    ++lines;
    ASSERT_EQ(line.rfind("[n] ", 0), 0u) << line.substr(0, 20);
    EXPECT_LE(line.size(), kMax + 4);
    x_count += static_cast<std::size_t>(std::count(line.begin(), line.end(), 'x'));
  }
  EXPECT_EQ(x_count, 1'000'000u);
  EXPECT_EQ(lines, (1'000'000 + kMax - 1) / kMax + 1);
  EXPECT_NE(out.find("[n] end\n"), std::string::npos);
  EXPECT_LE(largest_write, 2 * kMax + 8);
}

TEST_F(SchedulerTest, CompletedRunWalksEveryStateAndGetsItsIdentity) {
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink& log) {
    log("epoch 1 accuracy 0.9\n");
    return 0;
  });
  auto req = Request("python train.py --epochs ${{inputs.epochs}}");
  req.inputs["epochs"] = spec::InputSpec{spec::InputSpec::Kind::kLiteral, "3", "", "ro_mount"};
  req.outputs["model"] = spec::OutputSpec{};
  req.environment_variables = {{"OMP_NUM_THREADS", "4"}};
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  auto done = WaitFor(run->id);
  EXPECT_EQ(done.status, RunStatus::kCompleted) << done.failure_reason;
  std::vector<RunStatus> seen;
  for (const auto& t : done.transitions) seen.push_back(t.status);
  EXPECT_EQ(seen, (std::vector<RunStatus>{RunStatus::kNotStarted, RunStatus::kQueued,
                                          RunStatus::kPreparing, RunStatus::kStarting,
                                          RunStatus::kRunning, RunStatus::kFinalizing,
                                          RunStatus::kCompleted}));
  EXPECT_EQ(done.exit_code.value_or(-1), 0);
  auto log = ReadFile(layout_.RunDir(run->id) / Scheduler::kStdLog);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(*log, "epoch 1 accuracy 0.9\n");

  auto cfg = engine_.last_container_config();
  ASSERT_TRUE(cfg.has_value());
  EXPECT_EQ(cfg->cmd, (std::vector<std::string>{"-c", "python train.py --epochs 3"}));
  EXPECT_EQ(cfg->working_dir, "/trainyard/code");
  EXPECT_TRUE(cfg->init) << "the engine's init must forward SIGTERM to the script";
  EXPECT_EQ(cfg->labels.at("trainyard.run_id"), run->id);
  auto has_env = [&](const std::string& kv) {
    return std::find(cfg->env.begin(), cfg->env.end(), kv) != cfg->env.end();
  };
  EXPECT_TRUE(has_env("TRAINYARD_RUN_ID=" + run->id));
  EXPECT_TRUE(has_env("AZUREML_RUN_ID=" + run->id));
  EXPECT_TRUE(has_env("TRAINYARD_EXPERIMENT=unit"));
  EXPECT_TRUE(has_env("AZURE_ML_INPUT_epochs=3"));
  EXPECT_TRUE(has_env("AZURE_ML_OUTPUT_model=/trainyard/code/outputs/model"));
  EXPECT_TRUE(has_env("OMP_NUM_THREADS=4"));
  EXPECT_TRUE(has_env("PYTHONUNBUFFERED=1"));
  EXPECT_TRUE(fs::is_directory(layout_.RunDir(run->id) / "outputs" / "model"));
  EXPECT_TRUE(engine_.ContainerIds().empty()) << "the container is removed at Finalizing";
}

// The code folder: hard links to the snapshot's objects mounted read-only by default, a
// writable copy with code_copy. A run that fails writing into read-only code is told why.
TEST_F(SchedulerTest, CodeFolderIsReadOnlyLinksUnlessCopied) {
  const fs::path src = root_ / "src";
  ASSERT_TRUE(MakeDirs(src).ok());
  ASSERT_TRUE(WriteFileAtomic(src / "train.py", "print('hi')\n").ok());
  auto snap = snapshots_->Snapshot(src, cas::SnapshotLimits{});
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  const std::string digest = snap->manifest.entries.at(0).digest;
  struct stat object {};
  ASSERT_EQ(::stat(objects_->PathFor(digest).c_str(), &object), 0);

  struct Seen {
    bool read_only = false;
    ino_t inode = 0;
  };
  auto code_mount = [](const docker::ContainerConfig& c) {
    for (const docker::Mount& m : c.mounts) {
      if (m.target == "/trainyard/code") return m;
    }
    return docker::Mount{};
  };
  auto run_with = [&](bool copy, int exit_code, const std::string& output) {
    auto seen = std::make_shared<Seen>();
    engine_.SetRunner([seen, code_mount, exit_code, output](const docker::ContainerConfig& c,
                                                            const docker::TextSink& log) {
      docker::Mount m = code_mount(c);
      seen->read_only = m.read_only;
      struct stat st {};
      if (::stat((fs::path(m.source) / "train.py").c_str(), &st) == 0) seen->inode = st.st_ino;
      log(output);
      return exit_code;
    });
    auto req = Request("python train.py");
    req.snapshot_id = snap->id;
    req.code_copy = copy;
    auto run = scheduler_->Submit(req);
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return std::make_pair(WaitFor(run->id), *seen);
  };

  auto [linked, linked_seen] = run_with(false, 0, "hi\n");
  EXPECT_EQ(linked.status, RunStatus::kCompleted) << linked.failure_reason;
  EXPECT_TRUE(linked_seen.read_only);
  EXPECT_EQ(linked_seen.inode, object.st_ino) << "the code file is a hard link to the object";
  // The mount points of ./outputs and ./logs exist inside the read-only folder.
  EXPECT_TRUE(fs::is_directory(layout_.RunDir(linked.id) / "code" / "outputs"));
  EXPECT_TRUE(fs::is_directory(layout_.RunDir(linked.id) / "code" / "logs"));

  auto [copied, copied_seen] = run_with(true, 0, "hi\n");
  EXPECT_EQ(copied.status, RunStatus::kCompleted) << copied.failure_reason;
  EXPECT_FALSE(copied_seen.read_only);
  EXPECT_NE(copied_seen.inode, 0u);
  EXPECT_NE(copied_seen.inode, object.st_ino) << "a copy is its own file";

  auto [failed, failed_seen] =
      run_with(false, 1, "OSError: [Errno 30] Read-only file system: 'model.pkl'\n");
  EXPECT_EQ(failed.status, RunStatus::kFailed);
  EXPECT_NE(failed.failure_reason.find("script exited with code 1; it tried to write into its "
                                       "code folder, which is read-only"),
            std::string::npos)
      << failed.failure_reason;
  EXPECT_NE(failed.failure_reason.find("--copy"), std::string::npos) << failed.failure_reason;
  // A writable copy that fails the same way gets no such advice.
  auto [failed_copy, unused] =
      run_with(true, 1, "OSError: [Errno 30] Read-only file system: '/data/x'\n");
  EXPECT_EQ(failed_copy.failure_reason, "script exited with code 1");
}

// Runs can reach the daemon: its socket folder and the SDK are mounted, the SDK joins the
// image's own PYTHONPATH, and the run gets a token that names it alone.
TEST_F(SchedulerTest, RunsGetTheTrackingSocketSdkAndARunToken) {
  exec::ExecutorOptions eopts;
  eopts.sdk_dir = root_ / "sdk-python";
  eopts.socket_dir = root_ / "sock";
  Build(1, eopts);
  engine_.SetImageEnv("python:3.11-slim", {"PATH=/usr/bin", "PYTHONPATH=/app/lib"});
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) { return 0; });
  auto run = scheduler_->Submit(Request("python train.py"));
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(WaitFor(run->id).status, RunStatus::kCompleted);
  auto cfg = engine_.last_container_config();
  ASSERT_TRUE(cfg.has_value());
  std::map<std::string, std::string> env;
  for (const std::string& kv : cfg->env)
    env[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
  EXPECT_EQ(env["TRAINYARD_TRACKING_URL"], "unix:///trainyard/sock/api.sock");
  const std::int64_t now_s = NowMillis() / 1000;
  EXPECT_EQ(secrets_.RunOfToken(env["TRAINYARD_RUN_TOKEN"], now_s), run->id);
  // No timeout: the token lasts 30 days and an hour, not forever.
  EXPECT_EQ(secrets_.RunOfToken(env["TRAINYARD_RUN_TOKEN"], now_s + 30 * 86400 + 3700), "");
  EXPECT_EQ(env["PYTHONPATH"], "/trainyard/sdk/python:/app/lib");
  std::map<std::string, docker::Mount> mounts;
  for (const docker::Mount& m : cfg->mounts) mounts[m.target] = m;
  ASSERT_TRUE(mounts.count("/trainyard/sock"));
  EXPECT_EQ(mounts["/trainyard/sock"].source, (root_ / "sock").string());
  EXPECT_TRUE(mounts["/trainyard/sock"].read_only);
  ASSERT_TRUE(mounts.count("/trainyard/sdk/python"));
  EXPECT_EQ(mounts["/trainyard/sdk/python"].source, (root_ / "sdk-python").string());
  EXPECT_TRUE(mounts["/trainyard/sdk/python"].read_only);

  // A job that sets PYTHONPATH itself keeps it, after the SDK.
  auto req = Request("python train.py");
  req.environment_variables["PYTHONPATH"] = "/mine";
  auto run2 = scheduler_->Submit(req);
  ASSERT_TRUE(run2.ok()) << run2.status().ToString();
  EXPECT_EQ(WaitFor(run2->id).status, RunStatus::kCompleted);
  cfg = engine_.last_container_config();
  EXPECT_NE(std::find(cfg->env.begin(), cfg->env.end(), "PYTHONPATH=/trainyard/sdk/python:/mine"),
            cfg->env.end());
}

TEST_F(SchedulerTest, NonZeroExitFailsWithTheCode) {
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) { return 3; });
  auto run = scheduler_->Submit(Request("exit 3"));
  ASSERT_TRUE(run.ok());
  auto done = WaitFor(run->id);
  EXPECT_EQ(done.status, RunStatus::kFailed);
  EXPECT_EQ(done.failure_reason, "script exited with code 3");
  EXPECT_EQ(done.exit_code.value_or(-1), 3);
}

TEST_F(SchedulerTest, TimeoutStopsTheRun) {
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) {
    docker::FakeEngine::WaitForStop();
    return 0;
  });
  auto req = Request("sleep 1000");
  req.timeout_seconds = 1;
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok());
  WaitForStatus(run->id, RunStatus::kRunning);
  clock_.Advance(1s);
  auto done = WaitFor(run->id);
  EXPECT_EQ(done.status, RunStatus::kFailed);
  EXPECT_EQ(done.failure_reason, "timed out after 1 s");
}

TEST_F(SchedulerTest, CancelRunningAndQueuedRuns) {
  Build(1);
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) {
    docker::FakeEngine::WaitForStop();
    return 0;
  });
  auto first = scheduler_->Submit(Request("sleep 1000"));
  ASSERT_TRUE(first.ok());
  WaitForStatus(first->id, RunStatus::kRunning);
  auto second = scheduler_->Submit(Request("sleep 1000"));
  ASSERT_TRUE(second.ok());
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(store_->GetRun(second->id)->status, RunStatus::kQueued);

  ASSERT_TRUE(scheduler_->Cancel(second->id).ok());
  auto queued = WaitFor(second->id);
  EXPECT_EQ(queued.status, RunStatus::kCanceled);
  EXPECT_EQ(queued.failure_reason, "canceled by user");
  EXPECT_EQ(engine_.creates(), 1) << "a canceled queued run never starts";

  ASSERT_TRUE(scheduler_->Cancel(first->id).ok());
  auto running = WaitFor(first->id);
  EXPECT_EQ(running.status, RunStatus::kCanceled);
  EXPECT_EQ(running.TimeOf(RunStatus::kCancelRequested) > 0, true);
  EXPECT_EQ(scheduler_->Cancel(first->id).code(), StatusCode::kFailedPrecondition);
}

TEST_F(SchedulerTest, QueueRunsInSubmissionOrderWithinCapacity) {
  Build(1);
  std::mutex mu;
  std::vector<std::string> order;
  engine_.SetRunner([&](const docker::ContainerConfig& c, const docker::TextSink&) {
    std::lock_guard lock(mu);
    order.push_back(c.labels.at("trainyard.run_id"));
    return 0;
  });
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto req = Request("true");
    req.name = "ordered-" + std::to_string(i);
    auto run = scheduler_->Submit(req);
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    ids.push_back(run->id);
  }
  for (const auto& id : ids) EXPECT_EQ(WaitFor(id).status, RunStatus::kCompleted);
  EXPECT_EQ(order, ids);
}

TEST_F(SchedulerTest, EveryFreeSlotIsFilled) {
  Build(4);
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) {
    docker::FakeEngine::WaitForStop();
    return 0;
  });
  // Repeated: whether a run took its slot before the next checked was a race.
  for (int round = 0; round < 5; ++round) {
    std::vector<std::string> ids;
    for (int i = 0; i < 4; ++i) {
      auto run = scheduler_->Submit(Request("sleep 1000"));
      ASSERT_TRUE(run.ok());
      ids.push_back(run->id);
    }
    for (const auto& id : ids) WaitForStatus(id, RunStatus::kRunning);
    for (const auto& id : ids) ASSERT_TRUE(scheduler_->Cancel(id).ok());
    for (const auto& id : ids) EXPECT_EQ(WaitFor(id).status, RunStatus::kCanceled);
  }
}

TEST_F(SchedulerTest, ApiPathRefusesPathLikeNames) {
  auto with = [](const char* field, const nlohmann::json& value) {
    nlohmann::json j = Request("true").ToJson(spec::SecretMode::kPlain);
    j[field] = value;
    return spec::RunRequest::FromJson(j).status();
  };
  EXPECT_EQ(with("outputs", {{"/etc/x", {{"type", "uri_folder"}}}}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(with("inputs", {{"../code", {{"kind", "literal"}, {"value", "1"}}}}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(with("environment_variables", {{"A=B", "x"}}).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(with("outputs", {{"model_1", {{"type", "uri_folder"}}}}).ok());
  auto req = Request("true");
  req.timeout_seconds = 99999999999LL;
  EXPECT_EQ(scheduler_->Submit(req).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SchedulerTest, FailFastOnWhatCanNeverRun) {
  auto req = Request("true");
  req.compute = "gpu-cluster";
  auto refused = scheduler_->Submit(req);
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound);
  EXPECT_NE(refused.status().message().find("compute target 'gpu-cluster' does not exist"),
            std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("existing: local"), std::string::npos);
  req = Request("true");
  req.instance_count = 3;
  refused = scheduler_->Submit(req);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("at most 2 (max_nodes)"), std::string::npos)
      << refused.status().message();
  spec::ComputeDefinition small;
  small.name = "small";
  small.node_memory_bytes = 64 << 20;
  ASSERT_TRUE(scheduler_->PutCompute(small, false).ok());
  req = Request("true");
  req.compute = "small";
  req.shm_size_bytes = 128 << 20;
  refused = scheduler_->Submit(req);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("more than a node of 'small' has"), std::string::npos)
      << refused.status().message();
  req = Request("true");
  req.priority = 5000;
  EXPECT_EQ(scheduler_->Submit(req).status().code(), StatusCode::kInvalidArgument);
  req = Request("echo ${{inputs.missing}}");
  EXPECT_EQ(scheduler_->Submit(req).status().code(), StatusCode::kInvalidArgument);
  req = Request("true");
  req.environment.reset();
  req.environment_name = "nope";
  EXPECT_EQ(scheduler_->Submit(req).status().code(), StatusCode::kNotFound);
  req = Request("true");
  req.name = "dup";
  ASSERT_TRUE(scheduler_->Submit(req).ok());
  EXPECT_EQ(scheduler_->Submit(req).status().code(), StatusCode::kAlreadyExists);
  WaitFor("dup");
}

TEST_F(SchedulerTest, RegistryPasswordIsSealedAndNeverInTheDatabase) {
  engine_.AddRemoteImage("127.0.0.1:5000/team/img:1");
  engine_.SetRegistryCredentials("127.0.0.1:5000", "u", "s3cret-Pw-917");
  auto req = Request("true");
  req.environment->image = "127.0.0.1:5000/team/img:1";
  req.environment->registry = spec::RegistryCredentials{"127.0.0.1:5000", "u", "s3cret-Pw-917"};
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(WaitFor(run->id).status, RunStatus::kCompleted);
  EXPECT_EQ(engine_.last_pull_auth()->password, "s3cret-Pw-917");
  // Checkpoint the WAL so every byte is in the main file, then look at every byte. The scheduler
  // stops first: its run thread may still be leaving the store after the final commit.
  scheduler_.reset();
  store_.reset();
  std::string bytes;
  for (const char* suffix : {"", "-wal"}) {
    auto b = ReadFile(layout_.Database().string() + suffix);
    if (b.ok()) bytes += *b;
  }
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(bytes.find("s3cret-Pw-917"), std::string::npos);
  auto st = store::OpenSqliteStore(layout_.Database().string());
  ASSERT_TRUE(st.ok());
  store_ = std::move(st).value();
  registry_ = std::make_unique<envbuild::EnvironmentRegistry>(*store_, secrets_);
  auto def = registry_->Resolve("anonymous", "");
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->registry->password, "s3cret-Pw-917");
  auto api = envbuild::EnvironmentRegistry::ToApiJson(*store_->GetEnvironment("anonymous", ""));
  EXPECT_EQ(api.dump().find("s3cret-Pw-917"), std::string::npos);
  // Registering the same definition again without the password (what a client that fetched it
  // has) keeps the stored password; another password replaces it.
  spec::EnvironmentDefinition again = *def;
  again.registry->password.clear();
  ASSERT_TRUE(registry_->Register(again).ok());
  EXPECT_EQ(registry_->Resolve("anonymous", "")->registry->password, "s3cret-Pw-917");
  again.registry->password = "rotated-Pw-2";
  ASSERT_TRUE(registry_->Register(again).ok());
  EXPECT_EQ(registry_->Resolve("anonymous", "")->registry->password, "rotated-Pw-2");
  Build(2);  // the scheduler must not outlive the store it borrowed
}

TEST_F(SchedulerTest, RecoverReattachesFailsTheVanishedAndRequeues) {
  // What a previous daemon left: three runs, one of them with a live container.
  InsertLeftoverRun("alive", RunStatus::kRunning);
  InsertLeftoverRun("vanished", RunStatus::kRunning);
  InsertLeftoverRun("waiting", RunStatus::kQueued);
  InsertLeftoverRun("preparing", RunStatus::kPreparing);
  const std::string alive = ContainerOf("alive");
  engine_.SetRunner([alive](const docker::ContainerConfig& c, const docker::TextSink& log) {
    if (c.name != alive) return 0;
    log("before restart\n");
    std::this_thread::sleep_for(200ms);
    log("after restart\n");
    return 0;
  });
  ASSERT_FALSE(StartLeftoverContainer("alive").empty());

  ASSERT_TRUE(scheduler_->Recover().ok());
  auto a = WaitFor("alive");
  EXPECT_EQ(a.status, RunStatus::kCompleted) << a.failure_reason;
  EXPECT_EQ(*ReadFile(layout_.RunDir("alive") / Scheduler::kStdLog),
            "before restart\nafter restart\n")
      << "the re-attached log is whole, without duplicates";
  auto v = WaitFor("vanished");
  EXPECT_EQ(v.status, RunStatus::kFailed);
  EXPECT_EQ(v.failure_reason, "lost — container missing after daemon restart");
  auto w = WaitFor("waiting");
  EXPECT_EQ(w.status, RunStatus::kCompleted) << w.failure_reason;
  // A run caught in Preparing went back to the queue (holding no node) and says so.
  auto p = WaitFor("preparing");
  EXPECT_EQ(p.status, RunStatus::kCompleted) << p.failure_reason;
  std::vector<RunStatus> history;
  for (const auto& t : p.transitions) history.push_back(t.status);
  const std::vector<RunStatus> want = {
      RunStatus::kNotStarted, RunStatus::kQueued,     RunStatus::kPreparing,
      RunStatus::kQueued,     RunStatus::kPreparing,  RunStatus::kStarting,
      RunStatus::kRunning,    RunStatus::kFinalizing, RunStatus::kCompleted};
  EXPECT_EQ(history, want);
}

// A run caught in Starting whose container already ran to its end is finalised with that
// container's exit code; its command is not run a second time.
TEST_F(SchedulerTest, RecoverFinalisesAStartingRunWhoseContainerEnded) {
  InsertLeftoverRun("ended", RunStatus::kStarting);
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink& log) {
    log("ran once\n");
    return 5;
  });
  const std::string id = StartLeftoverContainer("ended");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(engine_.WaitContainer(id).ok());
  const int starts = engine_.starts();

  ASSERT_TRUE(scheduler_->Recover().ok());
  auto r = WaitFor("ended");
  EXPECT_EQ(r.status, RunStatus::kFailed);
  EXPECT_EQ(r.failure_reason, "script exited with code 5");
  EXPECT_EQ(engine_.starts(), starts) << "the command must not run again";
  EXPECT_EQ(*ReadFile(layout_.RunDir("ended") / Scheduler::kStdLog), "ran once\n");
}

// A container with this run's name that another workspace launched (its labels say so) is not
// this run's: recovery neither follows nor removes it, and a new launch never removes it.
TEST_F(SchedulerTest, ContainersOfAnotherWorkspaceAreNeverTouched) {
  InsertLeftoverRun("theirs", RunStatus::kRunning);
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) {
    std::this_thread::sleep_for(2s);
    return 0;
  });
  const std::string id = StartLeftoverContainer("theirs", "/elsewhere/other-workspace");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(scheduler_->Recover().ok());
  auto r = WaitFor("theirs");
  EXPECT_EQ(r.status, RunStatus::kFailed);
  EXPECT_EQ(r.failure_reason, "lost — container missing after daemon restart");
  auto still = engine_.InspectContainer(id);
  ASSERT_TRUE(still.ok()) << "the other workspace's container was removed";
  EXPECT_TRUE(still->running);
}

TEST_F(SchedulerTest, RecoverLeavesRunsAloneWhenTheEngineCannotBeAsked) {
  InsertLeftoverRun("unknowable", RunStatus::kRunning);
  engine_.SetAvailable(false);  // dockerd down: the container may well be alive
  ASSERT_TRUE(scheduler_->Recover().ok());
  EXPECT_EQ(store_->GetRun("unknowable")->status, RunStatus::kRunning)
      << "a run must not be failed on a guess";
  engine_.SetAvailable(true);
  ASSERT_TRUE(scheduler_->Recover().ok());  // now the engine says: no such container
  EXPECT_EQ(WaitFor("unknowable").status, RunStatus::kFailed);
}

TEST_F(SchedulerTest, EnvironmentVersioning) {
  spec::EnvironmentDefinition def;
  def.name = "fastai";
  def.image = "python:3.11-slim";
  auto v1 = registry_->Register(def);
  ASSERT_TRUE(v1.ok()) << v1.status().ToString();
  EXPECT_EQ(v1->version, "1");
  auto again = registry_->Register(def);
  EXPECT_EQ(again->version, "1") << "an unchanged definition keeps its version";
  def.pip_requirements = {"numpy"};
  auto v2 = registry_->Register(def);
  EXPECT_EQ(v2->version, "2");
  EXPECT_NE(v1->image_hash, v2->image_hash);
  def.version = "1";
  EXPECT_EQ(registry_->Register(def).status().code(), StatusCode::kAlreadyExists);
  def.name = "bad/name";
  def.version = "";
  EXPECT_EQ(registry_->Register(def).status().code(), StatusCode::kInvalidArgument);
}

// A runner that records the order containers start in and runs until stopped. What it records
// is shared with the runner threads, which may outlive the test's own scope.
class Recorder {
 public:
  docker::FakeEngine::Runner Runner() {
    return [state = state_](const docker::ContainerConfig& c, const docker::TextSink&) {
      {
        std::lock_guard lock(state->mu);
        state->order.push_back(c.labels.at("trainyard.run_id"));
        state->configs.push_back(c);
      }
      docker::FakeEngine::WaitForStop();
      return 0;
    };
  }
  std::vector<std::string> order() {
    std::lock_guard lock(state_->mu);
    return state_->order;
  }
  std::vector<docker::ContainerConfig> configs() {
    std::lock_guard lock(state_->mu);
    return state_->configs;
  }
  // The configs once `n` containers have started (or what there is after 10 s).
  std::vector<docker::ContainerConfig> WaitForConfigs(std::size_t n) {
    for (int i = 0; i < 2000 && configs().size() < n; ++i) std::this_thread::sleep_for(5ms);
    return configs();
  }

 private:
  struct State {
    std::mutex mu;
    std::vector<std::string> order;
    std::vector<docker::ContainerConfig> configs;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// Higher priority first, then submission order; nothing overtakes the queue's head.
TEST_F(SchedulerTest, QueueOrderIsPriorityThenSubmission) {
  Build(1);
  Recorder rec;
  engine_.SetRunner(rec.Runner());
  auto first = scheduler_->Submit(Request("sleep 1000"));
  ASSERT_TRUE(first.ok());
  WaitForStatus(first->id, RunStatus::kRunning);
  std::vector<std::pair<std::string, int>> submitted = {{"low", spec::kPriorityLow},
                                                        {"high-1", spec::kPriorityHigh},
                                                        {"medium", 0},
                                                        {"high-2", spec::kPriorityHigh}};
  for (const auto& [name, priority] : submitted) {
    auto req = Request("sleep 1000");
    req.name = name;
    req.priority = priority;
    ASSERT_TRUE(scheduler_->Submit(req).ok());
  }
  auto st = scheduler_->GetComputeStatus("local");
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->busy_nodes, 1);
  EXPECT_EQ(st->idle_nodes, 0);
  ASSERT_EQ(st->running, std::vector<std::string>{first->id});
  ASSERT_EQ(st->queued.size(), 4u);
  EXPECT_EQ(st->queued[0].run_id, "high-1");
  EXPECT_EQ(st->queued[0].wait_reason, "waiting for 1 node (0 of 1 free)");
  EXPECT_EQ(st->queued[1].run_id, "high-2");
  EXPECT_EQ(st->queued[1].wait_reason, "behind run high-1 (priority 100), which waits for 1 node");
  EXPECT_EQ(st->queued[3].run_id, "low");
  for (const std::string& id : {first->id, std::string("high-1"), std::string("high-2"),
                                std::string("medium"), std::string("low")}) {
    WaitForStatus(id, RunStatus::kRunning);
    ASSERT_TRUE(scheduler_->Cancel(id).ok());
    WaitFor(id);
  }
  EXPECT_EQ(rec.order(),
            (std::vector<std::string>{first->id, "high-1", "high-2", "medium", "low"}));
}

// Capacity is counted in nodes of the run's compute; a compute's node size reaches the engine,
// and each node slot gets its own GPUs.
TEST_F(SchedulerTest, ComputeCapacityNodeSizeAndGpuSlots) {
  Recorder rec;
  engine_.SetRunner(rec.Runner());
  spec::ComputeDefinition gpu;
  gpu.name = "gpus";
  gpu.max_nodes = 2;
  gpu.node_cpus = 1.5;
  gpu.node_memory_bytes = 2LL << 30;
  gpu.node_gpus = 2;
  bool created = false;
  ASSERT_TRUE(scheduler_->PutCompute(gpu, false, &created).ok());
  EXPECT_TRUE(created);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto req = Request("sleep 1000");
    req.compute = "gpus";
    auto run = scheduler_->Submit(req);
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    ids.push_back(run->id);
  }
  WaitForStatus(ids[0], RunStatus::kRunning);
  WaitForStatus(ids[1], RunStatus::kRunning);
  EXPECT_EQ(store_->GetRun(ids[2])->status, RunStatus::kQueued);
  auto st = scheduler_->GetComputeStatus("gpus");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->busy_nodes, 2);
  ASSERT_EQ(st->queued.size(), 1u);
  EXPECT_EQ(st->queued[0].wait_reason, "waiting for 1 node (0 of 2 free)");

  auto configs = rec.WaitForConfigs(2);
  ASSERT_EQ(configs.size(), 2u);
  std::set<std::vector<std::string>> devices;
  for (const auto& c : configs) {
    EXPECT_EQ(c.nano_cpus, 1'500'000'000);
    EXPECT_EQ(c.memory_bytes, 2LL << 30);
    ASSERT_TRUE(c.gpus.has_value());
    devices.insert(c.gpus->device_ids);
    // Inside the container its own two GPUs are 0 and 1.
    EXPECT_NE(std::find(c.env.begin(), c.env.end(), "CUDA_VISIBLE_DEVICES=0,1"), c.env.end());
  }
  EXPECT_EQ(devices, (std::set<std::vector<std::string>>{{"0", "1"}, {"2", "3"}}));

  // A node freed starts the queued run on the freed slot.
  ASSERT_TRUE(scheduler_->Cancel(ids[0]).ok());
  WaitForStatus(ids[2], RunStatus::kRunning);
  std::vector<std::string> freed;
  for (const auto& c : configs) {
    if (c.labels.at("trainyard.run_id") == ids[0]) freed = c.gpus->device_ids;
  }
  ASSERT_EQ(rec.WaitForConfigs(3).size(), 3u);
  EXPECT_EQ(rec.configs().back().gpus->device_ids, freed);
  // Deleting a compute in use is refused, naming its runs; local never goes.
  auto del = scheduler_->DeleteCompute("gpus");
  EXPECT_EQ(del.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(del.message().find("2 active runs"), std::string::npos) << del.message();
  EXPECT_EQ(scheduler_->DeleteCompute("local").code(), StatusCode::kFailedPrecondition);
  for (const auto& id : {ids[1], ids[2]}) ASSERT_TRUE(scheduler_->Cancel(id).ok());
  for (const auto& id : ids) WaitFor(id);
  EXPECT_TRUE(scheduler_->DeleteCompute("gpus").ok());
  EXPECT_EQ(scheduler_->GetComputeStatus("gpus").status().code(), StatusCode::kNotFound);
}

TEST_F(SchedulerTest, ComputeCreateOrAttachAndUpdate) {
  spec::ComputeDefinition c;
  c.name = "cpu";
  c.max_nodes = 4;
  bool created = false;
  ASSERT_TRUE(scheduler_->PutCompute(c, false, &created).ok());
  EXPECT_TRUE(created);
  ASSERT_TRUE(scheduler_->PutCompute(c, false, &created).ok());
  EXPECT_FALSE(created);  // attached: same settings
  c.max_nodes = 8;
  auto differ = scheduler_->PutCompute(c, false, &created);
  EXPECT_EQ(differ.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(differ.status().message().find("max_nodes 8 (it has 4)"), std::string::npos)
      << differ.status().message();
  ASSERT_TRUE(scheduler_->PutCompute(c, true, &created).ok());
  EXPECT_EQ(scheduler_->GetComputeStatus("cpu")->definition.max_nodes, 8);
  // Stored: a new scheduler on the same store sees it, and `local` exists by default.
  Build(1);
  auto all = scheduler_->ListComputes();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "cpu");
  EXPECT_EQ((*all)[0].max_nodes, 8);
  EXPECT_EQ((*all)[1].name, "local");
  c.max_nodes = 0;
  EXPECT_EQ(scheduler_->PutCompute(c, true).status().code(), StatusCode::kInvalidArgument);
}

// Ten runs needing one image that is not built yet: one build, while they wait holding no
// node; a failing build fails every one of them with its reason.
TEST_F(SchedulerTest, OneBuildForManyRunsAndAFailedBuildFailsThemAll) {
  Build(4);
  auto with_dockerfile = [](const std::string& text) {
    auto req = Request("true");
    req.environment->image.clear();
    req.environment->dockerfile = text;
    return req;
  };
  // Builds are held until every run is queued, so all ten wait for the same one.
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open = false;
  engine_.SetBuildHook([&] {
    std::unique_lock lock(gate_mu);
    gate_cv.wait(lock, [&] { return open; });
  });
  auto release = [&] {
    {
      std::lock_guard lock(gate_mu);
      open = true;
    }
    gate_cv.notify_all();
  };
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i) {
    auto run = scheduler_->Submit(with_dockerfile("FROM python:3.11-slim\nRUN echo one\n"));
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    ids.push_back(run->id);
  }
  // While the image builds, they wait in the queue holding no node.
  auto st = scheduler_->GetComputeStatus("local");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->busy_nodes, 0);
  ASSERT_EQ(st->queued.size(), 10u);
  EXPECT_EQ(st->queued[0].wait_reason, "waiting for its image build");
  release();
  for (const auto& id : ids) EXPECT_EQ(WaitFor(id).status, RunStatus::kCompleted) << id;
  EXPECT_EQ(engine_.builds(), 1);
  // Every run's build log has the build's output.
  for (const auto& id : ids) {
    auto log = ReadFile(layout_.RunDir(id) / Scheduler::kBuildLog);
    ASSERT_TRUE(log.ok());
    EXPECT_NE(log->find("Successfully tagged"), std::string::npos) << id << ": " << *log;
  }

  engine_.SetBuildFailure("RUN pip install nothing: exit 1");
  {
    std::lock_guard lock(gate_mu);
    open = false;
  }
  ids.clear();
  for (int i = 0; i < 5; ++i) {
    auto run = scheduler_->Submit(with_dockerfile("FROM python:3.11-slim\nRUN echo two\n"));
    ASSERT_TRUE(run.ok());
    ids.push_back(run->id);
  }
  release();
  for (const auto& id : ids) {
    auto r = WaitFor(id);
    EXPECT_EQ(r.status, RunStatus::kFailed);
    EXPECT_NE(r.failure_reason.find("image build failed"), std::string::npos) << r.failure_reason;
    EXPECT_NE(r.failure_reason.find("RUN pip install nothing"), std::string::npos);
    // It failed from the queue: it never held a node.
    EXPECT_EQ(r.TimeOf(RunStatus::kPreparing), 0) << id;
  }
  EXPECT_EQ(engine_.builds(), 2);
}

// A `process` compute runs the command on the host: same lifecycle, logs, env and outputs.
TEST_F(SchedulerTest, ProcessComputeRunsOnTheHost) {
  ASSERT_NO_FATAL_FAILURE(AddProcessCompute("host", 2));
  auto req = Request(
      "echo run=$TRAINYARD_RUN_ID; echo weights > outputs/model.bin; "
      "echo in-logs > logs/note.txt; echo err >&2; exit 0");
  req.compute = "host";
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  auto done = WaitFor(run->id);
  ASSERT_EQ(done.status, RunStatus::kCompleted) << done.failure_reason;
  EXPECT_EQ(engine_.creates(), 0) << "no container for a process compute";
  auto log = ReadFile(layout_.RunDir(run->id) / Scheduler::kStdLog);
  ASSERT_TRUE(log.ok());
  EXPECT_NE(log->find("run=" + run->id), std::string::npos) << *log;
  EXPECT_NE(log->find("err"), std::string::npos) << *log;
  EXPECT_EQ(*ReadFile(layout_.RunDir(run->id) / "outputs/model.bin"), "weights\n");
  EXPECT_EQ(*ReadFile(layout_.RunDir(run->id) / "logs/note.txt"), "in-logs\n");

  auto failing = Request("exit 7");
  failing.compute = "host";
  auto bad = scheduler_->Submit(failing);
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(WaitFor(bad->id).failure_reason, "script exited with code 7");

  auto slow = Request("sleep 1000");
  slow.compute = "host";
  slow.timeout_seconds = 1;
  auto timed = scheduler_->Submit(slow);
  ASSERT_TRUE(timed.ok());
  WaitForStatus(timed->id, RunStatus::kRunning);
  clock_.Advance(1s);
  auto t = WaitFor(timed->id);
  EXPECT_EQ(t.status, RunStatus::kFailed);
  EXPECT_NE(t.failure_reason.find("timed out"), std::string::npos) << t.failure_reason;
}

// TensorFlow: each node gets TF_CONFIG naming every task; with parameter servers the last nodes
// are "ps" tasks and the others workers (worker 0 the chief).
TEST_F(SchedulerTest, TensorFlowRunGetsTfConfigWithParameterServers) {
  Build(3);
  std::mutex mu;
  std::map<std::string, nlohmann::json> tf_configs;  // by node
  engine_.SetRunner([&](const docker::ContainerConfig& c, const docker::TextSink&) {
    for (const std::string& kv : c.env) {
      if (StartsWith(kv, "TF_CONFIG=")) {
        std::lock_guard lock(mu);
        tf_configs[c.labels.at("trainyard.node")] = nlohmann::json::parse(kv.substr(10));
      }
    }
    return 0;
  });
  auto req = Request("python train.py");
  req.instance_count = 3;
  req.distribution = spec::DistributionSpec{"tensorflow", 1, 1};
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_EQ(WaitFor(run->id).status, RunStatus::kCompleted);
  ASSERT_EQ(tf_configs.size(), 3u);
  const nlohmann::json cluster = {{"worker", {"node-0:2222", "node-1:2222"}},
                                  {"ps", {"node-2:2222"}}};
  for (const auto& [node, tf] : tf_configs) EXPECT_EQ(tf["cluster"], cluster) << tf.dump();
  EXPECT_EQ(tf_configs["0"]["task"], (nlohmann::json{{"type", "worker"}, {"index", 0}}));
  EXPECT_EQ(tf_configs["1"]["task"], (nlohmann::json{{"type", "worker"}, {"index", 1}}));
  EXPECT_EQ(tf_configs["2"]["task"], (nlohmann::json{{"type", "ps"}, {"index", 0}}));

  // Every node a parameter server: refused at submit, not started.
  req.distribution = spec::DistributionSpec{"tensorflow", 1, 3};
  auto refused = scheduler_->Submit(req);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("leaves at least one of the run's 3 nodes"),
            std::string::npos)
      << refused.status().message();
}

// Multi-node: one container per node on a network of the run's own, each told the run's shape
// (PyTorch variables), logs per node and prefixed in the run's log; the network goes at the end.
TEST_F(SchedulerTest, MultiNodeRunGetsANetworkRanksAndLogsPerNode) {
  Build(4);
  std::mutex mu;
  std::vector<docker::ContainerConfig> configs;
  engine_.SetRunner([&](const docker::ContainerConfig& c, const docker::TextSink& log) {
    {
      std::lock_guard lock(mu);
      configs.push_back(c);
    }
    log("hello from " + c.hostname + "\npartial");
    return 0;
  });
  auto req = Request("python train.py");
  req.instance_count = 3;
  req.distribution = spec::DistributionSpec{"pytorch", 1};
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  auto done = WaitFor(run->id);
  ASSERT_EQ(done.status, RunStatus::kCompleted) << done.failure_reason;
  ASSERT_EQ(configs.size(), 3u);
  std::set<std::string> hosts;
  for (const auto& c : configs) {
    const std::string node = c.labels.at("trainyard.node");
    hosts.insert(c.hostname);
    EXPECT_EQ(c.hostname, "node-" + node);
    EXPECT_EQ(c.network_mode, ContainerOf(run->id));
    EXPECT_EQ(c.name, ContainerOf(run->id) + "-" + node);
    auto has = [&](const std::string& kv) {
      return std::find(c.env.begin(), c.env.end(), kv) != c.env.end();
    };
    EXPECT_TRUE(has("MASTER_ADDR=node-0"));
    EXPECT_TRUE(has("MASTER_PORT=6105"));
    EXPECT_TRUE(has("WORLD_SIZE=3"));
    EXPECT_TRUE(has("NODE_RANK=" + node));
    EXPECT_TRUE(has("RANK=" + node));
    EXPECT_TRUE(has("LOCAL_RANK=0"));
    EXPECT_TRUE(has("AZ_BATCHAI_TASK_INDEX=" + node));
    EXPECT_TRUE(has("AZ_BATCHAI_MPI_MASTER_NODE=node-0"));
  }
  EXPECT_EQ(hosts, (std::set<std::string>{"node-0", "node-1", "node-2"}));
  EXPECT_TRUE(engine_.Networks().empty()) << "the run's network is removed at the end";
  for (int i = 0; i < 3; ++i) {
    auto log = ReadFile(layout_.RunDir(run->id) /
                        ("user_logs/std_log_node_" + std::to_string(i) + ".txt"));
    ASSERT_TRUE(log.ok());
    EXPECT_EQ(*log, "hello from node-" + std::to_string(i) + "\npartial");
  }
  auto all = ReadFile(layout_.RunDir(run->id) / Scheduler::kStdLog);
  ASSERT_TRUE(all.ok());
  EXPECT_NE(all->find("[node 1] hello from node-1\n"), std::string::npos) << *all;
  EXPECT_NE(all->find("[node 2] partial\n"), std::string::npos) << *all;
  auto hostfile = ReadFile(layout_.RunDir(run->id) / "hostfile");
  ASSERT_TRUE(hostfile.ok());
  EXPECT_EQ(*hostfile, "node-0 slots=1\nnode-1 slots=1\nnode-2 slots=1\n");
}

// One node failing fails the run, naming the node; the others are stopped, not waited for.
TEST_F(SchedulerTest, MultiNodeRunFailsWhenANodeFailsAndStopsTheOthers) {
  Build(2);
  engine_.SetRunner([](const docker::ContainerConfig& c, const docker::TextSink&) {
    if (c.labels.at("trainyard.node") == "1") return 3;
    docker::FakeEngine::WaitForStop();
    return 0;
  });
  auto req = Request("python train.py");
  req.instance_count = 2;
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  auto done = WaitFor(run->id, 10s);
  EXPECT_EQ(done.status, RunStatus::kFailed);
  EXPECT_NE(done.failure_reason.find("node 1: script exited with code 3"), std::string::npos)
      << done.failure_reason;
  EXPECT_TRUE(engine_.ContainerIds().empty());
  // MPI: its own variables and a launcher for several processes per node.
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) { return 0; });
  req = Request("./train");
  req.instance_count = 2;
  req.distribution = spec::DistributionSpec{"mpi", 4};
  run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(WaitFor(run->id).status, RunStatus::kCompleted);
  auto c = engine_.last_container_config();
  ASSERT_TRUE(c.has_value());
  auto has = [&](const std::string& kv) {
    return std::find(c->env.begin(), c->env.end(), kv) != c->env.end();
  };
  EXPECT_TRUE(has("OMPI_COMM_WORLD_SIZE=8"));
  EXPECT_TRUE(has("OMPI_COMM_WORLD_LOCAL_SIZE=4"));
  EXPECT_TRUE(has("TRAINYARD_COMMAND=./train"));
  // tensorflow with several processes per node can never run.
  req.distribution = spec::DistributionSpec{"tensorflow", 2};
  EXPECT_EQ(scheduler_->Submit(req).status().code(), StatusCode::kInvalidArgument);
}

// The launcher on a process compute: two nodes of two processes each get ranks 0..3 once.
TEST_F(SchedulerTest, ProcessComputeMultiNodeRanks) {
  ASSERT_NO_FATAL_FAILURE(AddProcessCompute("host", 2));
  auto req = Request(
      "echo rank=$RANK local=$LOCAL_RANK node=$NODE_RANK world=$WORLD_SIZE "
      "master=$MASTER_ADDR");
  req.compute = "host";
  req.instance_count = 2;
  req.distribution = spec::DistributionSpec{"pytorch", 2};
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  auto done = WaitFor(run->id);
  ASSERT_EQ(done.status, RunStatus::kCompleted) << done.failure_reason;
  auto log = ReadFile(layout_.RunDir(run->id) / Scheduler::kStdLog);
  ASSERT_TRUE(log.ok());
  for (const char* line :
       {"[node 0] rank=0 local=0 node=0 world=4 master=127.0.0.1",
        "[node 0] rank=1 local=1 node=0 world=4", "[node 1] rank=2 local=0 node=1 world=4",
        "[node 1] rank=3 local=1 node=1 world=4"}) {
    EXPECT_NE(log->find(line), std::string::npos) << line << "\n" << *log;
  }
}

// Canceling a run that waits for its image build: it leaves the queue at once; the build goes
// on for whoever else needs it.
TEST_F(SchedulerTest, CancelWhileWaitingForItsImageBuild) {
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool open = false;
  engine_.SetBuildHook([&] {
    std::unique_lock lock(gate_mu);
    gate_cv.wait(lock, [&] { return open; });
  });
  auto req = Request("true");
  req.environment->image.clear();
  req.environment->dockerfile = "FROM python:3.11-slim\nRUN echo cancel-me\n";
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_TRUE(scheduler_->Cancel(run->id).ok());
  auto done = WaitFor(run->id, 5s);
  EXPECT_EQ(done.status, RunStatus::kCanceled);
  EXPECT_EQ(done.failure_reason, "canceled by user");
  EXPECT_EQ(done.TimeOf(RunStatus::kPreparing), 0);
  EXPECT_TRUE(scheduler_->GetComputeStatus("local")->queued.empty());
  {
    std::lock_guard lock(gate_mu);
    open = true;
  }
  gate_cv.notify_all();
  // The build goes on after the cancel: its thread must be done with the gate before the gate
  // goes (ThreadSanitizer saw it still waking on the condition variable as the test returned).
  scheduler_.reset();
}

// dockerd going away: a running run fails at once with a reason, a run submitted meanwhile fails
// clearly, and once it is back runs go through again with nothing to restart by hand.
TEST_F(SchedulerTest, DockerdDownFailsRunsClearlyAndSchedulingResumes) {
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) {
    docker::FakeEngine::WaitForStop();
    return 0;
  });
  auto running = scheduler_->Submit(Request("sleep 1000"));
  ASSERT_TRUE(running.ok());
  WaitForStatus(running->id, RunStatus::kRunning);
  const auto down = std::chrono::steady_clock::now();
  engine_.SetAvailable(false);
  auto lost = WaitFor(running->id, 30s);
  EXPECT_EQ(lost.status, RunStatus::kFailed);
  EXPECT_NE(lost.failure_reason.find("compute lost"), std::string::npos) << lost.failure_reason;
  EXPECT_LT(std::chrono::steady_clock::now() - down, 30s);

  auto meanwhile = scheduler_->Submit(Request("true"));
  ASSERT_TRUE(meanwhile.ok());
  auto refused = WaitFor(meanwhile->id, 30s);
  EXPECT_EQ(refused.status, RunStatus::kFailed);
  EXPECT_NE(refused.failure_reason.find("cannot reach the Docker engine"), std::string::npos)
      << refused.failure_reason;

  engine_.SetAvailable(true);
  engine_.SetRunner([](const docker::ContainerConfig&, const docker::TextSink&) { return 0; });
  auto after = scheduler_->Submit(Request("true"));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(WaitFor(after->id).status, RunStatus::kCompleted);
  EXPECT_EQ(scheduler_->GetComputeStatus("local")->busy_nodes, 0);
}

// --- slurm computes ------------------------------------------------------------------------

class SlurmSchedulerTest : public SchedulerTest {
 protected:
  void SetUp() override {
    SchedulerTest::SetUp();
    spec::ComputeDefinition c;
    c.name = "hpc";
    c.type = "slurm";
    c.partition = "debug";
    c.max_nodes = 1;
    auto put = scheduler_->PutCompute(c, false);
    ASSERT_TRUE(put.ok()) << put.status().ToString();
  }
  static spec::RunRequest SlurmRequest(const std::string& command) {
    spec::RunRequest r = Request(command);
    r.compute = "hpc";
    return r;
  }
  // The job's folder, where its nodes' logs and exit files are.
  fs::path JobDir(const std::string& run) const { return layout_.RunDir(run) / "slurm"; }
  // What the job's scripts write when they end.
  void WriteExits(const std::string& run, int task_code, const std::string& phase = "run",
                  bool oom = false) {
    ASSERT_TRUE(
        WriteFileAtomic(JobDir(run) / "task-0.exit",
                        std::to_string(task_code) + (oom ? " true" : " false") + " 0 1000\n")
            .ok());
    ASSERT_TRUE(
        WriteFileAtomic(JobDir(run) / "exit", std::to_string(task_code) + " " + phase + "\n").ok());
  }
};

TEST_F(SlurmSchedulerTest, RunFollowsItsJobFromPendingToCompleted) {
  auto req = SlurmRequest("echo hi");
  req.timeout_seconds = 90;
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  const slurm::JobRequest job = slurm_.WaitForSubmit();
  EXPECT_EQ(job.name, ContainerOf(run->id));
  EXPECT_NE(job.comment.find("trainyard run=" + run->id + " "), std::string::npos) << job.comment;
  EXPECT_EQ(job.partition, "debug");
  EXPECT_EQ(job.nodes, 1);
  EXPECT_EQ(job.tasks_per_node, 1);
  EXPECT_EQ(job.time_limit_seconds, 90);
  EXPECT_EQ(job.output, layout_.RunDir(run->id) / "logs" / "slurm_job.log");
  EXPECT_TRUE(fs::exists(job.script)) << job.script;

  // Pending in Slurm: Queued, with Slurm's reason.
  slurm_.Set(1, "PENDING", "Resources");
  WaitForStatus(run->id, RunStatus::kQueued);
  for (int i = 0; i < 200 && scheduler_->WaitReason(run->id).find("Resources") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(scheduler_->WaitReason(run->id),
            "Slurm job 1 pending: Resources (the partition's nodes are busy)");

  slurm_.Set(1, "RUNNING");
  WaitForStatus(run->id, RunStatus::kRunning);
  EXPECT_EQ(scheduler_->WaitReason(run->id), "");
  ASSERT_TRUE(AppendFile(JobDir(run->id) / "node-0.log", "hello from the node\n").ok());
  WriteExits(run->id, 0);
  slurm_.Set(1, "COMPLETED", "", 0);
  auto done = WaitFor(run->id);
  EXPECT_EQ(done.status, RunStatus::kCompleted) << done.failure_reason;
  EXPECT_EQ(done.exit_code, 0);
  EXPECT_EQ(done.container_id, "slurm:1");
  EXPECT_EQ(*ReadFile(layout_.RunDir(run->id) / Scheduler::kStdLog), "hello from the node\n");
  // Queued (Slurm) → Starting → Running, all recorded.
  EXPECT_GT(done.TimeOf(RunStatus::kRunning), 0);
}

TEST_F(SlurmSchedulerTest, SlurmEndingsBecomeReasons) {
  struct Case {
    std::string state;
    int task_code;
    std::string phase;
    bool oom;
    RunStatus want;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"FAILED", 3, "run", false, RunStatus::kFailed, "script exited with code 3"},
      {"TIMEOUT", 143, "run", false, RunStatus::kFailed, "reached its Slurm time limit"},
      {"NODE_FAIL", 0, "", false, RunStatus::kFailed, "compute lost: a node of Slurm job"},
      {"OUT_OF_MEMORY", 137, "run", false, RunStatus::kFailed, "out of memory"},
      {"FAILED", 137, "run", true, RunStatus::kFailed, "out of memory"},
      {"CANCELLED", 143, "run", false, RunStatus::kCanceled, "cancelled in Slurm"},
      {"FAILED", 1, "pull", false, RunStatus::kFailed, "could not pull the run's image"},
  };
  std::int64_t id = 0;
  for (const Case& c : cases) {
    auto run = scheduler_->Submit(SlurmRequest("true"));
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    slurm_.WaitForSubmit(static_cast<std::size_t>(id++));
    slurm_.Set(id, "RUNNING");
    WaitForStatus(run->id, RunStatus::kRunning);
    if (!c.phase.empty()) WriteExits(run->id, c.task_code, c.phase, c.oom);
    slurm_.Set(id, c.state, "", c.task_code);
    auto done = WaitFor(run->id);
    EXPECT_EQ(done.status, c.want) << c.state << ": " << done.failure_reason;
    EXPECT_NE(done.failure_reason.find(c.reason), std::string::npos)
        << c.state << ": " << done.failure_reason;
  }
}

TEST_F(SlurmSchedulerTest, CancelAndTimeoutRunScancel) {
  auto pending = scheduler_->Submit(SlurmRequest("sleep 100"));
  ASSERT_TRUE(pending.ok());
  slurm_.WaitForSubmit(0);
  WaitForStatus(pending->id, RunStatus::kQueued);
  ASSERT_TRUE(scheduler_->Cancel(pending->id).ok());
  auto canceled = WaitFor(pending->id);
  EXPECT_EQ(canceled.status, RunStatus::kCanceled);
  EXPECT_EQ(canceled.failure_reason, "canceled by user");
  EXPECT_EQ(slurm_.cancels(), 1);

  auto req = SlurmRequest("sleep 100");
  req.timeout_seconds = 1;
  auto timed = scheduler_->Submit(req);
  ASSERT_TRUE(timed.ok());
  slurm_.WaitForSubmit(1);
  slurm_.Set(2, "RUNNING");
  WaitForStatus(timed->id, RunStatus::kRunning);
  clock_.Advance(1s);
  auto out = WaitFor(timed->id);
  EXPECT_EQ(out.status, RunStatus::kFailed);
  EXPECT_EQ(out.failure_reason, "timed out after 1 s");
  EXPECT_EQ(slurm_.cancels(), 2);
}

TEST_F(SlurmSchedulerTest, RecoveryFindsTheJobByItsComment) {
  auto run = scheduler_->Submit(SlurmRequest("echo hi"));
  ASSERT_TRUE(run.ok());
  slurm_.WaitForSubmit();
  slurm_.Set(1, "RUNNING");
  WaitForStatus(run->id, RunStatus::kRunning);
  // The daemon goes away (its job goes on), as if it died before recording the job id.
  Build(2);
  auto rec = store_->GetRun(run->id);
  rec->container_id.clear();
  ASSERT_TRUE(store_->UpdateRun(*rec).ok());
  ASSERT_TRUE(scheduler_->Recover().ok());
  ASSERT_TRUE(AppendFile(JobDir(run->id) / "node-0.log", "line\n").ok());
  WriteExits(run->id, 0);
  slurm_.Set(1, "COMPLETED", "", 0);
  auto done = WaitFor(run->id);
  EXPECT_EQ(done.status, RunStatus::kCompleted) << done.failure_reason;
  EXPECT_EQ(*ReadFile(layout_.RunDir(run->id) / Scheduler::kStdLog), "line\n");

  // A job slurmctld forgot while no daemon watched: its exit file tells how it ended.
  auto second = scheduler_->Submit(SlurmRequest("exit 4"));
  ASSERT_TRUE(second.ok());
  slurm_.WaitForSubmit(1);
  slurm_.Set(2, "RUNNING");
  WaitForStatus(second->id, RunStatus::kRunning);
  Build(2);
  WriteExits(second->id, 4);
  slurm_.Forget(2);
  ASSERT_TRUE(scheduler_->Recover().ok());
  auto forgotten = WaitFor(second->id);
  EXPECT_EQ(forgotten.status, RunStatus::kFailed);
  EXPECT_EQ(forgotten.exit_code, 4);
  EXPECT_EQ(forgotten.failure_reason, "script exited with code 4");
}

TEST_F(SlurmSchedulerTest, SharedFolderHoldsTheRunAndOutputsComeBack) {
  const fs::path shared = root_ / "shared";
  ASSERT_TRUE(MakeDirs(shared).ok());
  spec::ComputeDefinition c;
  c.name = "hpc-shared";
  c.type = "slurm";
  c.partition = "debug";
  c.shared_dir = shared.string();
  ASSERT_TRUE(scheduler_->PutCompute(c, false).ok());
  auto req = SlurmRequest("true");
  req.compute = "hpc-shared";
  auto run = scheduler_->Submit(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  const slurm::JobRequest job = slurm_.WaitForSubmit();
  // Everything the nodes need is under the shared folder: the job's files, its log, the code.
  const fs::path work = job.script.parent_path().parent_path();
  EXPECT_TRUE(IsWithin(shared, work)) << work;
  EXPECT_EQ(work.filename(), run->id);
  EXPECT_TRUE(IsWithin(shared, job.output)) << job.output;
  EXPECT_TRUE(fs::is_directory(work / "code"));
  const std::string task = *ReadFile(work / "slurm" / "task.sh");
  EXPECT_NE(task.find((work / "code").string() + ":/trainyard/code"), std::string::npos) << task;

  slurm_.Set(1, "RUNNING");
  WaitForStatus(run->id, RunStatus::kRunning);
  ASSERT_TRUE(MakeDirs(work / "outputs" / "model").ok());
  ASSERT_TRUE(WriteFileAtomic(work / "outputs" / "model" / "weights.bin", "w").ok());
  ASSERT_TRUE(AppendFile(work / "slurm" / "node-0.log", "trained\n").ok());
  ASSERT_TRUE(WriteFileAtomic(work / "slurm" / "task-0.exit", "0 false 0 1\n").ok());
  ASSERT_TRUE(WriteFileAtomic(work / "slurm" / "exit", "0 run\n").ok());
  slurm_.Set(1, "COMPLETED", "", 0);
  auto done = WaitFor(run->id);
  EXPECT_EQ(done.status, RunStatus::kCompleted) << done.failure_reason;
  // The workspace keeps the run: its log, and its outputs copied back from the shared folder.
  EXPECT_EQ(*ReadFile(layout_.RunDir(run->id) / Scheduler::kStdLog), "trained\n");
  EXPECT_EQ(*ReadFile(layout_.RunDir(run->id) / "outputs" / "model" / "weights.bin"), "w");
}

TEST_F(SlurmSchedulerTest, FailsFastAndSaysWhy) {
  auto two = SlurmRequest("true");
  two.instance_count = 2;
  spec::ComputeDefinition big;
  big.name = "hpc-big";
  big.type = "slurm";
  big.partition = "debug";
  big.max_nodes = 4;
  ASSERT_TRUE(scheduler_->PutCompute(big, false).ok());
  two.compute = "hpc-big";
  auto refused = scheduler_->Submit(two);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("Slurm partition debug has 1"), std::string::npos)
      << refused.status().message();

  spec::ComputeDefinition nope = big;
  nope.name = "hpc-nope";
  nope.partition = "gpu";
  auto bad = scheduler_->PutCompute(nope, false);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "Slurm partition 'gpu' does not exist or has no nodes (partitions: debug)");

  slurm_.Refuse("sbatch: error: Invalid account or account/partition combination specified");
  auto run = scheduler_->Submit(SlurmRequest("true"));
  ASSERT_TRUE(run.ok());
  auto done = WaitFor(run->id);
  EXPECT_EQ(done.status, RunStatus::kFailed);
  EXPECT_EQ(done.failure_reason,
            "Slurm refused the job: sbatch: error: Invalid account or account/partition "
            "combination specified");
  // The variables file holds the run token: a job that never ran leaves none behind.
  EXPECT_TRUE(fs::exists(layout_.RunDir(run->id) / "slurm" / "job.sh"));
  EXPECT_FALSE(fs::exists(layout_.RunDir(run->id) / "slurm" / "env.sh"));
}

TEST_F(SlurmSchedulerTest, ImagePushedOnceAndPasswordSealed) {
  engine_.SetRegistryCredentials("127.0.0.1:5000", "ci", "pa55word");
  spec::ComputeDefinition c;
  c.name = "hpc-reg";
  c.type = "slurm";
  c.partition = "debug";
  c.max_nodes = 1;
  c.registry = spec::RegistryCredentials{"127.0.0.1:5000", "ci", "pa55word"};
  ASSERT_TRUE(scheduler_->PutCompute(c, false).ok());
  // Stored sealed; the same settings again attach.
  auto stored = store_->GetCompute("hpc-reg");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->definition_json.find("pa55word"), std::string::npos);
  bool created = true;
  ASSERT_TRUE(scheduler_->PutCompute(c, false, &created).ok());
  EXPECT_FALSE(created);

  std::string image;
  for (int i = 0; i < 2; ++i) {
    auto req = SlurmRequest("true");
    req.compute = "hpc-reg";
    auto run = scheduler_->Submit(req);
    ASSERT_TRUE(run.ok());
    slurm_.WaitForSubmit(static_cast<std::size_t>(i));
    const std::string env = *ReadFile(JobDir(run->id) / "env.sh");
    EXPECT_EQ(env.find("pa55word"), std::string::npos);
    const std::string auth = *ReadFile(JobDir(run->id) / "auth" / "config.json");
    EXPECT_NE(auth.find(Base64Encode("ci:pa55word")), std::string::npos);
    slurm_.Set(i + 1, "RUNNING");
    WaitForStatus(run->id, RunStatus::kRunning);
    WriteExits(run->id, 0);
    slurm_.Set(i + 1, "COMPLETED", "", 0);
    auto done = WaitFor(run->id);
    EXPECT_EQ(done.status, RunStatus::kCompleted) << done.failure_reason;
    EXPECT_EQ(done.image.rfind("127.0.0.1:5000/trainyard/environments:", 0), 0u) << done.image;
    if (i == 1) {
      EXPECT_EQ(done.image, image);
    }
    image = done.image;
    // The credentials do not outlive the job.
    EXPECT_FALSE(fs::exists(JobDir(run->id) / "auth"));
  }
  EXPECT_EQ(engine_.pushes(), 1);
  ASSERT_TRUE(engine_.last_push_auth().has_value());
  EXPECT_EQ(engine_.last_push_auth()->username, "ci");
}

}  // namespace
}  // namespace trainyard::sched

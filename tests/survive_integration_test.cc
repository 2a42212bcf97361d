// The daemon survives `kill -9`: with runs queued, preparing and running, the real `trainyard
// server` process is SIGKILLed, the world moves on without it (nodes end, a container is
// removed), and a new daemon on the same workspace brings every run to its right end with
// its whole log, once. Runs on a `process` compute need no Docker; the rest need dockerd and
// python:3.11-slim.
//
// The test process is a child subreaper: the shims a killed daemon leaves behind (and any
// process they would orphan) become its children, so the test can tell that nothing is left
// running and reap what ended.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/daemon_process.h"
#include "tests/support/test_env.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/docker/http_engine.h"
#include "trainyard/envbuild/image_builder.h"
#include "trainyard/sched/scheduler.h"
#include "trainyard/spec/definition.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kStdLog = "user_logs/std_log.txt";
constexpr const char* kBuildLog = "logs/image_build.log";

bool IsTerminal(const std::string& s) {
  return s == "Completed" || s == "Failed" || s == "Canceled";
}

// "line 1\n" .. "line n\n": what the counting runs print.
std::string Lines(int n) {
  std::string out;
  for (int i = 1; i <= n; ++i) out += "line " + std::to_string(i) + "\n";
  return out;
}

// The lines of `text`, sorted.
std::string SortedLines(const std::string& text) {
  std::vector<std::string> lines = Split(text, '\n');
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) {
    if (!l.empty()) out += l + "\n";
  }
  return out;
}

// A shell loop printing "line 1" .. "line n", one every 0.1 s.
std::string CountingCommand(int n) {
  return "for i in $(seq 1 " + std::to_string(n) + "); do echo line $i; sleep 0.1; done";
}

// The time (ms) of the first transition of `run` to `status`, 0 when there is none.
std::int64_t FirstTransition(const json& run, const std::string& status) {
  for (const auto& t : run.value("transitions", json::array())) {
    if (t.value("status", "") == status) return t.value("at_ms", std::int64_t{0});
  }
  return 0;
}

int CountTransitions(const json& run, const std::string& status) {
  int n = 0;
  for (const auto& t : run.value("transitions", json::array())) {
    n += t.value("status", "") == status;
  }
  return n;
}

long long MillisSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// The pids whose parent is this process, with their state letter from /proc/<pid>/stat.
std::vector<std::pair<pid_t, char>> Children() {
  std::vector<std::pair<pid_t, char>> out;
  const pid_t self = ::getpid();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto stat = ReadFile(e.path() / "stat");
    if (!stat.ok()) continue;
    // pid (comm) state ppid ...; comm may hold spaces and parentheses.
    const auto close = stat->rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(stat->c_str() + close + 1, " %c %d", &state, &ppid) != 2) continue;
    if (ppid == self) out.emplace_back(static_cast<pid_t>(std::stoi(name)), state);
  }
  return out;
}

class SurviveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    root_ = fs::temp_directory_path() / ("ty-surv-" + RandomHex(4));
    layout_.root = root_ / "ws";
    ASSERT_TRUE(MakeDirs(layout_.root).ok());
    suffix_ = RandomHex(3);
  }

  void TearDown() override {
    if (daemon_pid_ > 0) KillDaemon();
    // Whatever a failed case left running: with the daemon gone, every shim is a child of this
    // process, and so is a node's process once its shim is killed; each leads a process group.
    for (int round = 0; round < 40; ++round) {
      std::vector<pid_t> alive = ReapChildren(0ms);
      if (alive.empty()) break;
      for (pid_t pid : alive) {
        ::kill(-pid, SIGKILL);
        ::kill(pid, SIGKILL);
      }
      std::this_thread::sleep_for(50ms);
    }
    if (docker_used_) {
      docker::HttpEngine engine;
      auto left = engine.ListContainers("trainyard.workspace", layout_.root.string());
      if (left.ok()) {
        for (const auto& c : *left) (void)engine.RemoveContainer(c.id, true);
      }
      for (const auto& image : images_) (void)engine.RemoveImage(image, true);
    }
    if (HasFailure()) {
      auto log = ReadFile(layout_.root / "daemon.log");
      std::fprintf(stderr, "--- daemon log ---\n%s\n", log.ok() ? log->c_str() : "(none)");
    }
    (void)RemoveTree(root_);
  }

  // Starts `trainyard server` on the workspace as a process of its own, and waits until it
  // serves (it publishes server.json after recovering the runs of a previous daemon).
  void StartDaemon() {
    ASSERT_NO_FATAL_FAILURE(daemon_.Start(layout_.root));
    daemon_pid_ = daemon_.pid();
    client_ = daemon_.client();
  }

  // kill -9, then reaps it.
  void KillDaemon() {
    client_ = nullptr;
    daemon_.Kill();
    daemon_pid_ = -1;
  }

  // Reaps the children that ended (the killed daemon's shims) for up to `budget`, until only
  // the daemon is left; returns the pids of the others still alive.
  std::vector<pid_t> ReapChildren(std::chrono::milliseconds budget) {
    const auto deadline = Clock::now() + budget;
    std::vector<pid_t> alive;
    for (;;) {
      alive.clear();
      for (const auto& [pid, state] : Children()) {
        if (pid == daemon_pid_) continue;
        if (state == 'Z') {
          ::waitpid(pid, nullptr, WNOHANG);
        } else {
          alive.push_back(pid);
        }
      }
      if (alive.empty() || Clock::now() >= deadline) return alive;
      std::this_thread::sleep_for(50ms);
    }
  }

  // An environment of python:3.11-slim, or one built from `dockerfile`.
  static spec::EnvironmentDefinition Env(const std::string& dockerfile = "") {
    spec::EnvironmentDefinition env;
    if (dockerfile.empty()) {
      env.image = "python:3.11-slim";
    } else {
      env.dockerfile = dockerfile;
    }
    env.user_managed_dependencies = true;
    return env;
  }

  static json Job(const std::string& name, const std::string& command, const std::string& compute,
                  int priority = 0, int nodes = 1, const spec::EnvironmentDefinition& env = Env()) {
    spec::RunRequest r;
    r.name = name;
    r.experiment_name = "survive";
    r.command = command;
    r.compute = compute;
    r.priority = priority;
    r.instance_count = nodes;
    r.environment = env;
    return r.ToJson(spec::SecretMode::kPlain);
  }

  void CreateCompute(const std::string& name, const std::string& type, int max_nodes) {
    auto c = client_->PostJson("/api/v1/computes",
                               {{"name", name}, {"type", type}, {"max_nodes", max_nodes}});
    ASSERT_TRUE(c.ok()) << c.status().ToString();
  }

  std::string Submit(const json& job) {
    auto run = client_->PostJson("/api/v1/jobs", job);
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return run.ok() ? (*run)["name"].get<std::string>() : "";
  }

  json Get(const std::string& name) { return daemon_.Run(name); }

  // Waits until `pred(run)` holds; fails naming the run's status and logs when it does not.
  template <typename Pred>
  json WaitUntil(const std::string& name, Pred pred, const std::string& what,
                 std::chrono::seconds timeout = 60s) {
    return daemon_.WaitRun(name, pred, what, timeout);
  }

  json WaitStatus(const std::string& name, const std::string& status,
                  std::chrono::seconds timeout = 60s) {
    return daemon_.WaitRunStatus(name, status, timeout);
  }

  json WaitEnd(const std::string& name, std::chrono::seconds timeout = 120s) {
    return daemon_.WaitRunEnd(name, timeout);
  }

  // What a client following the run's log through the stream API receives, from the first
  // byte until the run has ended, and how many answers brought log bytes while it still ran.
  struct Streamed {
    std::string log;
    int live_answers = 0;
  };
  Streamed StreamLog(const std::string& name, std::chrono::seconds timeout = 60s) {
    Streamed out;
    std::uint64_t offset = 0;
    std::string status;
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      auto answer =
          client_->GetJson("/api/v1/jobs/" + name + "/stream?log_offset=" + std::to_string(offset) +
                           "&status=" + status + "&wait_ms=5000");
      if (!answer.ok()) {
        ADD_FAILURE() << answer.status().ToString();
        return out;
      }
      const std::string log = (*answer)["log"];
      out.log += log;
      offset = (*answer)["log_offset"];
      status = (*answer)["status"];
      if (!log.empty() && status == "Running") ++out.live_answers;
      if ((*answer)["done"] == true) return out;
    }
    ADD_FAILURE() << "the stream of run " << name << " did not end in time";
    return out;
  }

  std::string RunFile(const std::string& name, const std::string& rel) {
    return daemon_.RunFile(name, rel);
  }

  // Nothing left on `compute`: no busy node, no queued or running run.
  void ExpectIdle(const std::string& compute) {
    auto c = client_->GetJson("/api/v1/computes/" + compute);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ((*c)["nodes"]["busy"], 0) << c->dump();
    EXPECT_TRUE((*c)["running"].empty()) << c->dump();
    EXPECT_TRUE((*c)["queued"].empty()) << c->dump();
  }

  // Every run of the workspace has ended.
  void ExpectAllEnded() {
    auto runs = client_->GetJson("/api/v1/jobs");
    ASSERT_TRUE(runs.ok()) << runs.status().ToString();
    for (const auto& r : *runs) {
      EXPECT_TRUE(IsTerminal(r.value("status", ""))) << r["name"] << " is " << r["status"];
    }
  }

  fs::path root_;
  WorkspaceLayout layout_;
  std::string suffix_;  // keeps run (and container) names apart from other tests on dockerd
  testing::DaemonProcess daemon_;
  pid_t daemon_pid_ = -1;
  HttpClient* client_ = nullptr;  // daemon_'s
  bool docker_used_ = false;
  std::vector<std::string> images_;  // built by the test's runs; removed in TearDown
};

// Process compute: A runs, B runs and fails while the daemon is down, C and D wait in the
// queue (D submitted first at low priority, C at high; each needs both nodes, so they run one
// after the other, after A and B).
TEST_F(SurviveTest, ProcessRunsSurviveKill9) {
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(CreateCompute("host", "process", 2));
  const std::string a = Submit(Job("surv-a-" + suffix_, CountingCommand(40), "host"));
  const std::string b = Submit(Job("surv-b-" + suffix_, "echo b starts; sleep 1; exit 3", "host"));
  const std::string d = Submit(Job("surv-d-" + suffix_, "echo d", "host", -100, 2));
  const std::string c = Submit(Job("surv-c-" + suffix_, "echo c", "host", 100, 2));
  ASSERT_FALSE(a.empty() || b.empty() || c.empty() || d.empty());
  WaitStatus(a, "Running");
  WaitStatus(b, "Running");
  EXPECT_EQ(Get(c)["status"], "Queued");
  EXPECT_EQ(Get(d)["status"], "Queued");

  const auto killed_at = Clock::now();
  KillDaemon();
  std::this_thread::sleep_for(2s);  // B ends meanwhile (A most likely not)
  ASSERT_TRUE(fs::exists(layout_.root / "nodes" /
                         ("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + b) /
                         "exit"))
      << "B should have ended while the daemon was down";
  ASSERT_NO_FATAL_FAILURE(StartDaemon());

  // A client following A's log from the first byte gets every line once, live.
  Streamed streamed = StreamLog(a);
  EXPECT_EQ(streamed.log, Lines(40));
  EXPECT_GT(streamed.live_answers, 0) << "A's log should stream while it runs";
  json ra = WaitEnd(a), rb = WaitEnd(b), rc = WaitEnd(c), rd = WaitEnd(d);
  std::fprintf(stderr, "all ended %lld ms after the kill\n", MillisSince(killed_at));

  EXPECT_EQ(ra["status"], "Completed") << ra.dump(1);
  EXPECT_EQ(ra["exit_code"], 0);
  EXPECT_EQ(RunFile(a, kStdLog), Lines(40)) << "every line once, in order";
  EXPECT_EQ(CountTransitions(ra, "Running"), 1) << ra.dump(1);

  EXPECT_EQ(rb["status"], "Failed") << rb.dump(1);
  EXPECT_EQ(rb["exit_code"], 3);
  EXPECT_EQ(rb["failure_reason"], "script exited with code 3");
  EXPECT_EQ(RunFile(b, kStdLog), "b starts\n");

  EXPECT_EQ(rc["status"], "Completed") << rc.dump(1);
  EXPECT_EQ(rd["status"], "Completed") << rd.dump(1);
  // The nodes' lines interleave in either order.
  EXPECT_EQ(SortedLines(RunFile(c, kStdLog)), "[node 0] c\n[node 1] c\n");
  EXPECT_EQ(SortedLines(RunFile(d, kStdLog)), "[node 0] d\n[node 1] d\n");
  // Priority survived the restart: C (high, submitted later) ran before D, and D only after
  // C had ended (each needs both nodes).
  const std::int64_t c_start = FirstTransition(rc, "Preparing");
  const std::int64_t d_start = FirstTransition(rd, "Preparing");
  ASSERT_GT(c_start, 0);
  ASSERT_GT(d_start, 0);
  EXPECT_LT(c_start, d_start);
  EXPECT_LE(rc["ended_ms"].get<std::int64_t>(), d_start);
  // C and D waited in the queue through the restart: neither started before A and B ended.
  EXPECT_GE(c_start, FirstTransition(rb, "Finalizing"));

  ExpectAllEnded();
  ExpectIdle("host");
  std::error_code ec;
  EXPECT_TRUE(fs::is_empty(layout_.root / "nodes", ec)) << "node state folders left behind";
  EXPECT_TRUE(ReapChildren(5s).empty()) << "a shim or a run's process is still alive";
}

// Docker compute: L runs through the kill and completes with all its lines once; N's container
// exits with 3 while the daemon is down; M's container is removed while the daemon is down, so
// M fails as lost.
TEST_F(SurviveTest, DockerRunsSurviveKill9) {
  TY_REQUIRE_SERVICE(testing::DockerAvailable(), "dockerd at /var/run/docker.sock");
  docker_used_ = true;
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(CreateCompute("dock", "docker", 3));
  const std::string l = Submit(Job("surv-l-" + suffix_, CountingCommand(50), "dock"));
  const std::string m = Submit(Job("surv-m-" + suffix_, "echo m starts; sleep 60", "dock"));
  const std::string n = Submit(Job("surv-n-" + suffix_, "echo n starts; sleep 1; exit 3", "dock"));
  ASSERT_FALSE(l.empty() || m.empty() || n.empty());
  WaitStatus(l, "Running");
  WaitStatus(n, "Running");
  WaitUntil(
      m, [&](const json&) { return RunFile(m, kStdLog) == "m starts\n"; }, "logging");
  ASSERT_FALSE(HasFailure());

  KillDaemon();
  docker::HttpEngine engine;
  ASSERT_TRUE(engine
                  .RemoveContainer(
                      "trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + m, true)
                  .ok());
  std::this_thread::sleep_for(2s);  // N ends meanwhile (L does not)
  auto n_state =
      engine.InspectContainer("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + n);
  ASSERT_TRUE(n_state.ok()) << n_state.status().ToString();
  ASSERT_FALSE(n_state->running) << "N should have ended while the daemon was down";
  ASSERT_NO_FATAL_FAILURE(StartDaemon());

  json rm = WaitEnd(m, 30s);
  EXPECT_EQ(rm["status"], "Failed") << rm.dump(1);
  EXPECT_NE(rm.value("failure_reason", "").find("lost"), std::string::npos) << rm.dump(1);
  Streamed streamed = StreamLog(l);
  EXPECT_EQ(streamed.log, Lines(50));
  EXPECT_GT(streamed.live_answers, 0) << "L's log should stream while it runs";
  json rn = WaitEnd(n, 30s);
  EXPECT_EQ(rn["status"], "Failed") << rn.dump(1);
  EXPECT_EQ(rn["exit_code"], 3);
  EXPECT_EQ(rn["failure_reason"], "script exited with code 3");
  EXPECT_EQ(RunFile(n, kStdLog), "n starts\n");
  json rl = WaitEnd(l);
  EXPECT_EQ(rl["status"], "Completed") << rl.dump(1);
  EXPECT_EQ(rl["exit_code"], 0);
  EXPECT_EQ(RunFile(l, kStdLog), Lines(50)) << "every line once, in order";
  EXPECT_EQ(CountTransitions(rl, "Running"), 1) << rl.dump(1);

  ExpectAllEnded();
  ExpectIdle("dock");
  auto left = engine.ListContainers("trainyard.workspace", layout_.root.string());
  ASSERT_TRUE(left.ok()) << left.status().ToString();
  EXPECT_TRUE(left->empty()) << left->size() << " containers left behind";
}

// The numbers of the "line N" lines of `log` that start with `prefix`, in order.
std::vector<int> LineNumbers(const std::string& log, const std::string& prefix = "") {
  std::vector<int> out;
  for (const std::string& line : Split(log, '\n')) {
    if (line.rfind(prefix + "line ", 0) == 0)
      out.push_back(std::stoi(line.substr(prefix.size() + 5)));
  }
  return out;
}

// Checks that `numbers` start with 1..30, end with `last`, and only ever go up: nothing the log
// had before the crash was lost and nothing was written twice. Returns how many there are.
std::size_t ExpectResumed(const std::vector<int>& numbers, int last, const std::string& what) {
  EXPECT_GE(numbers.size(), 30u) << what;
  for (int i = 0; i < 30 && i < static_cast<int>(numbers.size()); ++i) {
    EXPECT_EQ(numbers[static_cast<std::size_t>(i)], i + 1) << what << ": line " << i;
  }
  for (std::size_t i = 1; i < numbers.size(); ++i) {
    EXPECT_LT(numbers[i - 1], numbers[i]) << what << ": out of order or repeated at " << i;
  }
  EXPECT_FALSE(numbers.empty() || numbers.back() != last) << what << ": does not end with " << last;
  return numbers.size();
}

// Hardening finding 10: a daemon that re-attaches after kill -9 resumes each node's output where
// its logs stopped. Meanwhile the engine rotated its own copy of the output (kept small here,
// workspace.json container_log_max_bytes): re-reading that from the start, as a re-attach did
// before, loses the lines the run's log already had.
TEST_F(SurviveTest, ReattachResumesTheLogAfterTheEngineRotatedIt) {
  TY_REQUIRE_SERVICE(testing::DockerAvailable(), "dockerd at /var/run/docker.sock");
  docker_used_ = true;
  ASSERT_TRUE(WriteFileAtomic(layout_.ConfigFile(), R"({"container_log_max_bytes": 4096})").ok());
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(CreateCompute("dock", "docker", 3));
  const std::string command =
      "for i in $(seq 1 30); do echo line $i; done; sleep 4; "
      "for i in $(seq 31 2000); do echo line $i; done; sleep 1";
  const std::string one = Submit(Job("surv-rot1-" + suffix_, command, "dock"));
  const std::string two = Submit(Job("surv-rot2-" + suffix_, command, "dock", 0, 2));
  ASSERT_FALSE(one.empty() || two.empty());
  auto has_30 = [&](const std::string& run, const std::string& rel) {
    return RunFile(run, rel).find("line 30\n") != std::string::npos;
  };
  WaitUntil(
      one, [&](const json&) { return has_30(one, kStdLog); }, "logging line 30");
  WaitUntil(
      two,
      [&](const json&) {
        return has_30(two, "user_logs/std_log_node_0.txt") &&
               has_30(two, "user_logs/std_log_node_1.txt");
      },
      "logging line 30 on both nodes");
  ASSERT_FALSE(HasFailure());

  KillDaemon();
  std::this_thread::sleep_for(6s);  // 20 KB more, five times what the engine keeps, meanwhile
  ASSERT_NO_FATAL_FAILURE(StartDaemon());

  json r1 = WaitEnd(one);
  EXPECT_EQ(r1["status"], "Completed") << r1.dump(1);
  const std::size_t kept = ExpectResumed(LineNumbers(RunFile(one, kStdLog)), 2000, "one node");
  EXPECT_LT(kept, 2000u) << "the engine kept every line: the test did not make it rotate";
  json r2 = WaitEnd(two);
  EXPECT_EQ(r2["status"], "Completed") << r2.dump(1);
  const std::string merged = RunFile(two, kStdLog);
  for (int node = 0; node < 2; ++node) {
    const std::string what = "node " + std::to_string(node);
    ExpectResumed(
        LineNumbers(RunFile(two, "user_logs/std_log_node_" + std::to_string(node) + ".txt")), 2000,
        what + "'s log");
    ExpectResumed(LineNumbers(merged, "[" + what + "] "), 2000, what + " in the run's log");
  }
  EXPECT_FALSE(fs::exists(layout_.RunDir(one) / "user_logs/.follow"))
      << "the resume checkpoint outlived the run";
}

// Docker compute with one node: P is killed in Preparing (its image, removed from the engine
// after an earlier run built it, is being rebuilt), Q waits in the queue behind it for the
// same image, and R waits in the queue while its own image builds. All three complete after
// the restart.
TEST_F(SurviveTest, RunsKilledInPreparingAndQueuedComplete) {
  TY_REQUIRE_SERVICE(testing::DockerAvailable(), "dockerd at /var/run/docker.sock");
  docker_used_ = true;
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  ASSERT_NO_FATAL_FAILURE(CreateCompute("dock1", "docker", 1));
  // Unique Dockerfiles, so no build cache of another test run applies. Their images are
  // removed in TearDown.
  const spec::EnvironmentDefinition slow_build =
      Env("FROM python:3.11-slim\nRUN sleep 5 && echo survive-" + suffix_ + "\n");
  const spec::EnvironmentDefinition other_build =
      Env("FROM python:3.11-slim\nRUN sleep 5 && echo survive-other-" + suffix_ + "\n");
  const std::string image = envbuild::PlanImage(slow_build).final_image;
  images_ = {image, envbuild::PlanImage(other_build).final_image};

  // First: a run builds the image (while queued) and completes.
  const std::string first =
      Submit(Job("surv-first-" + suffix_, "echo first", "dock1", 0, 1, slow_build));
  ASSERT_FALSE(first.empty());
  json rf = WaitEnd(first);
  ASSERT_EQ(rf["status"], "Completed") << rf.dump(1);
  ASSERT_EQ(rf["image"], image) << rf.dump(1);
  // The image goes away behind the daemon's back: the next run with it finds it missing only
  // at Preparing, and builds it then.
  docker::HttpEngine engine;
  ASSERT_TRUE(engine.RemoveImage(image, true).ok());

  const std::string p = Submit(Job("surv-p-" + suffix_, "echo p", "dock1", 0, 1, slow_build));
  const std::string q = Submit(Job("surv-q-" + suffix_, "echo q", "dock1", 0, 1, slow_build));
  const std::string r = Submit(Job("surv-r-" + suffix_, "echo r", "dock1", 0, 1, other_build));
  ASSERT_FALSE(p.empty() || q.empty() || r.empty());
  WaitUntil(
      p,
      [&](const json& run) {
        return run.value("status", "") == "Preparing" &&
               RunFile(p, kBuildLog).find("Building image") != std::string::npos;
      },
      "building in Preparing", 30s);
  WaitUntil(
      r,
      [&](const json&) { return RunFile(r, kBuildLog).find("RUN sleep 5") != std::string::npos; },
      "building while queued", 30s);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(Get(p)["status"], "Preparing");
  EXPECT_EQ(Get(q)["status"], "Queued");
  EXPECT_EQ(Get(r)["status"], "Queued");

  KillDaemon();
  std::this_thread::sleep_for(1s);
  ASSERT_NO_FATAL_FAILURE(StartDaemon());

  json rp = WaitEnd(p), rq = WaitEnd(q), rr = WaitEnd(r);
  for (const auto& [name, run] : {std::pair{p, rp}, {q, rq}, {r, rr}}) {
    EXPECT_EQ(run["status"], "Completed") << run.dump(1);
    EXPECT_EQ(run["exit_code"], 0);
    EXPECT_EQ(CountTransitions(run, "Running"), 1) << run.dump(1);
  }
  EXPECT_EQ(RunFile(p, kStdLog), "p\n");
  EXPECT_EQ(RunFile(q, kStdLog), "q\n");
  EXPECT_EQ(RunFile(r, kStdLog), "r\n");
  // P and Q keep their order (same priority, same image): P first.
  EXPECT_LT(FirstTransition(rp, "Running"), FirstTransition(rq, "Running"));

  ExpectAllEnded();
  ExpectIdle("dock1");
  auto left = engine.ListContainers("trainyard.workspace", layout_.root.string());
  ASSERT_TRUE(left.ok()) << left.status().ToString();
  EXPECT_TRUE(left->empty()) << left->size() << " containers left behind";
}

}  // namespace
}  // namespace trainyard

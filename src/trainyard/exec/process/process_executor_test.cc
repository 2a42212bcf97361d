#include "trainyard/exec/process/process_executor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

#include "trainyard/common/fs.h"

namespace trainyard::exec {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Runs `fn` on its own thread; a call that does not return within `limit` fails the whole test
// binary instead of hanging it.
template <typename F>
auto WithTimeout(F fn, seconds limit = seconds(20)) -> decltype(fn()) {
  using R = decltype(fn());
  auto task = std::make_shared<std::packaged_task<R()>>(std::move(fn));
  std::future<R> result = task->get_future();
  std::thread([task] { (*task)(); }).detach();
  if (result.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "FATAL: a call did not return within %llds\n",
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::abort();
  }
  return result.get();
}

// True when `pid` no longer runs (gone, or a zombie nobody reaped yet).
bool ProcessGone(pid_t pid) {
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return true;
  size_t paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() &&
         ((*stat)[paren + 2] == 'Z' || (*stat)[paren + 2] == 'X');
}

bool Eventually(const std::function<bool()>& cond, milliseconds limit = milliseconds(10'000)) {
  auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return cond();
}

pid_t FirstPid(const fs::path& file) {
  auto text = ReadFile(file);
  if (!text.ok()) return -1;
  std::istringstream in(*text);
  pid_t pid = -1;
  in >> pid;
  return pid;
}

class ProcessExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ty-pexec-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    state_dir_ = root_ / "state";
    exec_ = std::make_unique<ProcessExecutor>(ProcessExecutorOptions{state_dir_});
  }
  void TearDown() override {
    // Whatever a failed test left running is stopped.
    ProcessExecutor cleaner({state_dir_});
    if (auto nodes = cleaner.ListNodes(); nodes.ok()) {
      for (const std::string& n : *nodes) (void)cleaner.Cleanup(n);
    }
    (void)RemoveTree(root_);
  }

  LaunchSpec Spec(const std::string& name, std::vector<std::string> argv) {
    LaunchSpec s;
    s.run_id = "run_1";
    s.name = name;
    s.argv = std::move(argv);
    return s;
  }
  LaunchSpec Sh(const std::string& name, const std::string& script) {
    return Spec(name, {"/bin/sh", "-c", script});
  }

  std::string Launch(const LaunchSpec& spec, ProcessExecutor* exec = nullptr) {
    auto h = (exec ? exec : exec_.get())->Launch(spec);
    EXPECT_TRUE(h.ok()) << h.status().ToString();
    return h.ok() ? *h : std::string();
  }
  int WaitCode(const std::string& handle, ProcessExecutor* exec = nullptr) {
    ProcessExecutor* e = exec ? exec : exec_.get();
    auto info = WithTimeout([&] { return e->Wait(handle); });
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    return info.ok() ? info->exit_code : -1;
  }
  std::string Logs(const std::string& handle, ProcessExecutor* exec = nullptr) {
    ProcessExecutor* e = exec ? exec : exec_.get();
    std::string out;
    Status s = WithTimeout(
        [&] { return e->StreamLogs(handle, [&](std::string_view d) { out.append(d); }); });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }
  fs::path NodeDir(const std::string& handle) { return state_dir_ / handle; }

  fs::path root_;
  fs::path state_dir_;
  std::unique_ptr<ProcessExecutor> exec_;
};

TEST_F(ProcessExecutorTest, PropagatesTheExitCode) {
  std::string h = Launch(Sh("exit3", "exit 3"));
  EXPECT_EQ(h, "exit3");
  auto info = WithTimeout([&] { return exec_->Wait(h); });
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->exit_code, 3);
  EXPECT_FALSE(info->oom_killed);
  EXPECT_EQ(WaitCode(h), 3);  // again, after the shim was reaped
  auto running = exec_->IsRunning(h);
  ASSERT_TRUE(running.ok()) << running.status().ToString();
  EXPECT_FALSE(*running);
}

TEST_F(ProcessExecutorTest, RecordsDeathBySignal) {
  std::string h = Launch(Sh("killed", "kill -TERM $$"));
  EXPECT_EQ(WaitCode(h), 143);
  auto exit = ReadFile(NodeDir(h) / "exit");
  ASSERT_TRUE(exit.ok());
  EXPECT_NE(exit->find("\"signal\":15"), std::string::npos) << *exit;
}

TEST_F(ProcessExecutorTest, GivesAMinimalBaseOverlaidWithTheSpecAndPrependsPaths) {
  // Of the daemon's environment a node gets PATH, HOME and the like, never the rest (a password
  // the daemon was started with, say).
  ASSERT_EQ(::setenv("TRAINYARD_REGISTRY_PASSWORD", "daemon-secret", 1), 0);
  ASSERT_EQ(::setenv("TY_PEXEC_INHERITED", "from-daemon", 1), 0);
  ASSERT_EQ(::setenv("TY_PEXEC_OVERRIDDEN", "from-daemon", 1), 0);
  ASSERT_EQ(::setenv("TY_PEXEC_DAEMON_PATH", "/daemon", 1), 0);
  fs::path bin = root_ / "bin";
  ASSERT_TRUE(MakeDirs(bin).ok());
  ASSERT_TRUE(WriteFileAtomic(bin / "ty-pexec-tool", "#!/bin/sh\necho tool-ran\n", 0755).ok());

  LaunchSpec s = Spec("env", {"ty-pexec-tool"});
  s.argv = {"/bin/sh", "-c",
            "echo I=$TY_PEXEC_INHERITED O=$TY_PEXEC_OVERRIDDEN L=$TY_PEXEC_LATER "
            "U=$TY_PEXEC_UNSET_PATH S=$TY_PEXEC_SPEC_PATH D=$TY_PEXEC_DAEMON_PATH "
            "P=$TRAINYARD_REGISTRY_PASSWORD H=${HOME:+set}; ty-pexec-tool"};
  s.env = {"TY_PEXEC_OVERRIDDEN=from-spec", "TY_PEXEC_LATER=first", "TY_PEXEC_LATER=second",
           "TY_PEXEC_SPEC_PATH=/spec"};
  s.prepend_paths = {{"TY_PEXEC_UNSET_PATH", "/new"},
                     {"TY_PEXEC_SPEC_PATH", "/new"},
                     {"TY_PEXEC_DAEMON_PATH", "/new"},
                     {"PATH", bin.string()}};
  std::string h = Launch(s);
  EXPECT_EQ(WaitCode(h), 0);
  EXPECT_EQ(Logs(h), "I= O=from-spec L=second U=/new S=/new:/spec D=/new P= H=set\ntool-ran\n");
  ::unsetenv("TRAINYARD_REGISTRY_PASSWORD");
  ::unsetenv("TY_PEXEC_INHERITED");
  ::unsetenv("TY_PEXEC_OVERRIDDEN");
  ::unsetenv("TY_PEXEC_DAEMON_PATH");
}

TEST_F(ProcessExecutorTest, SearchesArgv0InTheNodesPath) {
  fs::path bin = root_ / "bin";
  ASSERT_TRUE(MakeDirs(bin).ok());
  ASSERT_TRUE(
      WriteFileAtomic(bin / "ty-pexec-direct", "#!/bin/sh\necho direct \"$@\"\n", 0755).ok());
  // A script without a #! line runs through /bin/sh, as with execvp.
  ASSERT_TRUE(WriteFileAtomic(bin / "ty-pexec-nohashbang", "echo plain \"$1\"\n", 0755).ok());
  LaunchSpec s = Spec("path", {"ty-pexec-direct", "a b"});
  s.env = {"PATH=/nonexistent:" + bin.string() + ":/usr/bin:/bin"};
  std::string h = Launch(s);
  EXPECT_EQ(WaitCode(h), 0);
  EXPECT_EQ(Logs(h), "direct a b\n");

  LaunchSpec plain = Spec("plain", {"ty-pexec-nohashbang", "x"});
  plain.env = s.env;
  h = Launch(plain);
  EXPECT_EQ(WaitCode(h), 0);
  EXPECT_EQ(Logs(h), "plain x\n");
}

TEST_F(ProcessExecutorTest, HonoursTheWorkingDir) {
  fs::path work = root_ / "work";
  ASSERT_TRUE(MakeDirs(work).ok());
  ASSERT_TRUE(WriteFileAtomic(work / "run.sh", "#!/bin/sh\necho script-here\n", 0755).ok());
  LaunchSpec s = Sh("cwd", "pwd; ./run.sh");
  s.working_dir = work.string();
  std::string h = Launch(s);
  EXPECT_EQ(WaitCode(h), 0);
  EXPECT_EQ(Logs(h), work.string() + "\nscript-here\n");
}

TEST_F(ProcessExecutorTest, RefusesBadSpecs) {
  LaunchSpec missing = Sh("nowork", "true");
  missing.working_dir = (root_ / "does-not-exist").string();
  auto r = exec_->Launch(missing);
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find((root_ / "does-not-exist").string()), std::string::npos);

  LaunchSpec mounts = Sh("mounts", "true");
  mounts.mounts.push_back({"/host", "/container", true});
  r = exec_->Launch(mounts);
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("the process compute cannot mount"), std::string::npos);

  EXPECT_EQ(exec_->Launch(Spec("noargv", {})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(exec_->Launch(Sh("../escape", "true")).status().code(), StatusCode::kInvalidArgument);
  LaunchSpec bad_env = Sh("badenv", "true");
  bad_env.env = {"NOEQUALS"};
  EXPECT_EQ(exec_->Launch(bad_env).status().code(), StatusCode::kInvalidArgument);

  // None of them left a state folder behind.
  auto nodes = exec_->ListNodes();
  ASSERT_TRUE(nodes.ok());
  EXPECT_TRUE(nodes->empty());
}

TEST_F(ProcessExecutorTest, RefusesADuplicateName) {
  std::string h = Launch(Sh("dup", "true"));
  EXPECT_EQ(exec_->Launch(Sh("dup", "true")).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(WaitCode(h), 0);
  // Still refused after it ended: the folder is there until Cleanup.
  EXPECT_EQ(exec_->Launch(Sh("dup", "true")).status().code(), StatusCode::kAlreadyExists);
  ASSERT_TRUE(exec_->Cleanup(h).ok());
  h = Launch(Sh("dup", "exit 4"));
  EXPECT_EQ(WaitCode(h), 4);
}

TEST_F(ProcessExecutorTest, StreamsStdoutAndStderrInOrderAndReturnsSoonAfterExit) {
  std::string h = Launch(Sh("logs", "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three"));
  std::string out;
  auto streamed = std::async(std::launch::async, [&] {
    Status s = exec_->StreamLogs(h, [&](std::string_view d) { out.append(d); });
    return std::make_pair(s, Clock::now());
  });
  EXPECT_EQ(WaitCode(h), 0);
  auto waited_at = Clock::now();
  ASSERT_EQ(streamed.wait_for(seconds(10)), std::future_status::ready);
  auto [status, streamed_at] = streamed.get();
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(out, "one\ntwo\nthree\n");
  EXPECT_LT(streamed_at - waited_at, milliseconds(300));
  // From the first byte again, for a node that has ended.
  EXPECT_EQ(Logs(h), "one\ntwo\nthree\n");
}

TEST_F(ProcessExecutorTest, ExecFailureExits127WithAMessage) {
  std::string h = Launch(Spec("nocmd", {"ty-no-such-command-xyz", "arg"}));
  EXPECT_EQ(WaitCode(h), 127);
  std::string log = Logs(h);
  EXPECT_NE(log.find("trainyard: cannot run 'ty-no-such-command-xyz': command not found in PATH="),
            std::string::npos)
      << log;

  ASSERT_TRUE(WriteFileAtomic(root_ / "not-executable", "#!/bin/sh\n", 0644).ok());
  h = Launch(Spec("noexec", {(root_ / "not-executable").string()}));
  EXPECT_EQ(WaitCode(h), 127);
  log = Logs(h);
  EXPECT_NE(log.find("cannot run '" + (root_ / "not-executable").string() + "': Permission denied"),
            std::string::npos)
      << log;
}

TEST_F(ProcessExecutorTest, StopLetsATermTrapRun) {
  std::string h = Launch(Sh("trap",
                            "trap 'echo trapped; exit 0' TERM; echo ready; "
                            "while :; do sleep 0.05; done"));
  ASSERT_TRUE(Eventually([&] {
    auto log = ReadFile(NodeDir(h) / "output.log");
    return log.ok() && log->find("ready") != std::string::npos;
  }));
  auto started = Clock::now();
  Status s = WithTimeout([&] { return exec_->Stop(h, 10); });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_LT(Clock::now() - started, seconds(5));  // it ended on SIGTERM, not after the grace
  EXPECT_EQ(WaitCode(h), 0);
  EXPECT_NE(Logs(h).find("trapped"), std::string::npos);
  auto running = exec_->IsRunning(h);
  ASSERT_TRUE(running.ok());
  EXPECT_FALSE(*running);
  // Stopping an ended node is fine.
  EXPECT_TRUE(exec_->Stop(h, 1).ok());
}

TEST_F(ProcessExecutorTest, StopKillsTheWholeGroupAfterTheGrace) {
  fs::path bg = root_ / "bg.pid";
  std::string h = Launch(Sh("stubborn", "trap '' TERM; sleep 1000 & echo $! > " + bg.string() +
                                            "; echo ready; while :; do sleep 0.05; done"));
  ASSERT_TRUE(Eventually([&] {
    auto log = ReadFile(NodeDir(h) / "output.log");
    return log.ok() && log->find("ready") != std::string::npos;
  }));
  pid_t bg_pid = FirstPid(bg);
  ASSERT_GT(bg_pid, 0);
  ASSERT_FALSE(ProcessGone(bg_pid));
  auto started = Clock::now();
  Status s = WithTimeout([&] { return exec_->Stop(h, 1); });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_GE(Clock::now() - started, milliseconds(900));
  EXPECT_EQ(WaitCode(h), 137);
  EXPECT_TRUE(Eventually([&] { return ProcessGone(bg_pid); }));
}

TEST_F(ProcessExecutorTest, StopWithoutGraceRightAfterLaunch) {
  std::string h = Launch(Sh("quick", "sleep 1000"));
  Status s = WithTimeout([&] { return exec_->Stop(h, 0); });
  EXPECT_TRUE(s.ok()) << s.ToString();
  int code = WaitCode(h);
  EXPECT_TRUE(code == 143 || code == 137) << code;
}

TEST_F(ProcessExecutorTest, NodeSurvivesItsExecutor) {
  auto a = std::make_unique<ProcessExecutor>(ProcessExecutorOptions{state_dir_});
  LaunchSpec s = Sh("survivor", "sleep 1; echo done");
  s.labels = {{"trainyard.run", "run_1"}};
  std::string h = Launch(s, a.get());
  a.reset();

  ProcessExecutor b({state_dir_});
  auto running = b.IsRunning(h);
  ASSERT_TRUE(running.ok()) << running.status().ToString();
  EXPECT_TRUE(*running);
  EXPECT_EQ(WaitCode(h, &b), 0);
  EXPECT_EQ(Logs(h, &b), "done\n");
  auto meta = ReadFile(NodeDir(h) / "node.json");
  ASSERT_TRUE(meta.ok());
  EXPECT_NE(meta->find("\"run_id\":\"run_1\""), std::string::npos) << *meta;
  EXPECT_NE(meta->find("\"trainyard.run\":\"run_1\""), std::string::npos) << *meta;
}

TEST_F(ProcessExecutorTest, NodeSurvivesTheDaemonProcess) {
  // A "daemon" process launches the node and dies at once, as in a crash.
  pid_t daemon = ::fork();
  ASSERT_GE(daemon, 0);
  if (daemon == 0) {
    ProcessExecutor a({state_dir_});
    auto h = a.Launch(Sh("crash", "sleep 1; echo done; exit 5"));
    if (!h.ok()) ::_exit(1);
    ::raise(SIGKILL);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(daemon, &status, 0), daemon);
  ASSERT_TRUE(WIFSIGNALED(status)) << status;

  ProcessExecutor b({state_dir_});
  auto running = b.IsRunning("crash");
  ASSERT_TRUE(running.ok()) << running.status().ToString();
  EXPECT_TRUE(*running);
  EXPECT_EQ(WaitCode("crash", &b), 5);  // the shim is not this process's child
  EXPECT_EQ(Logs("crash", &b), "done\n");
}

TEST_F(ProcessExecutorTest, NodeGetsOnlyStdioAndDefaultSignals) {
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGUSR1, &ignore, &old), 0);  // the daemon's choice, not the node's
  // A descriptor the daemon left inheritable (no O_CLOEXEC) does not reach the node either.
  const int leaked = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 0);
  std::string fds = Launch(Sh("fds", "ls /proc/$$/fd; readlink /proc/$$/fd/0"));
  std::string usr1 = Launch(Sh("usr1", "kill -USR1 $$; exit 0"));
  ::close(leaked);
  ASSERT_EQ(::sigaction(SIGUSR1, &old, nullptr), 0);
  EXPECT_EQ(WaitCode(fds), 0);
  EXPECT_EQ(Logs(fds), "0\n1\n2\n/dev/null\n");
  EXPECT_EQ(WaitCode(usr1), 128 + SIGUSR1);
}

TEST_F(ProcessExecutorTest, AMissingShimIsAClearErrorAndLeavesNothing) {
  ProcessExecutor missing({state_dir_, root_ / "no-such-shim"});
  auto h = missing.Launch(Spec("n", {"true"}));
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kInternal) << h.status().ToString();
  EXPECT_NE(h.status().message().find("no-such-shim"), std::string::npos) << h.status().ToString();
  EXPECT_FALSE(fs::exists(NodeDir("n")));
}

TEST_F(ProcessExecutorTest, RecordsTheExitWhenNobodyWaits) {
  std::string h;
  {
    ProcessExecutor a({state_dir_});
    h = Launch(Sh("unwatched", "exit 7"), &a);
  }
  ASSERT_TRUE(Eventually([&] { return fs::exists(NodeDir(h) / "exit"); }));
  pid_t shim = FirstPid(NodeDir(h) / "shim.pid");
  ProcessExecutor b({state_dir_});
  auto running = b.IsRunning(h);
  ASSERT_TRUE(running.ok()) << running.status().ToString();
  EXPECT_FALSE(*running);
  EXPECT_EQ(WaitCode(h, &b), 7);
  // The shim (this process's child) was reaped rather than left a zombie.
  EXPECT_FALSE(fs::exists("/proc/" + std::to_string(shim)));
}

TEST_F(ProcessExecutorTest, AVanishedShimIsAnErrorNotAHang) {
  // Two nodes whose shims get SIGKILLed: one is then stopped, the other cleaned up.
  std::vector<std::string> handles = {Launch(Sh("orphan1", "sleep 1000")),
                                      Launch(Sh("orphan2", "sleep 1000"))};
  std::vector<pid_t> children;
  for (const std::string& h : handles) {
    ASSERT_TRUE(Eventually([&] { return fs::exists(NodeDir(h) / "child.pid"); }));
    pid_t shim = FirstPid(NodeDir(h) / "shim.pid");
    children.push_back(FirstPid(NodeDir(h) / "child.pid"));
    ASSERT_GT(shim, 0);
    ASSERT_EQ(::kill(shim, SIGKILL), 0);
    ASSERT_TRUE(Eventually([&] { return ProcessGone(shim); }));  // kill() does not wait
  }
  for (const std::string& h : handles) {
    auto running = WithTimeout([&] { return exec_->IsRunning(h); });
    EXPECT_EQ(running.status().code(), StatusCode::kNotFound) << running.status().ToString();
    auto info = WithTimeout([&] { return exec_->Wait(h); });
    EXPECT_EQ(info.status().code(), StatusCode::kNotFound);
    EXPECT_NE(info.status().message().find("vanished"), std::string::npos);
    // A new executor (and its StreamLogs) does not hang either.
    ProcessExecutor b({state_dir_});
    EXPECT_EQ(WithTimeout([&] { return b.Wait(h); }).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(Logs(h, &b), "");
  }
  // None of that touched the orphaned processes.
  EXPECT_FALSE(ProcessGone(children[0]));
  EXPECT_FALSE(ProcessGone(children[1]));

  // Stop kills the orphan, but cannot say how it ended.
  EXPECT_EQ(WithTimeout([&] { return exec_->Stop(handles[0], 10); }).code(), StatusCode::kNotFound);
  EXPECT_TRUE(Eventually([&] { return ProcessGone(children[0]); }));
  EXPECT_FALSE(ProcessGone(children[1]));
  // Cleanup kills the orphan and removes the folder.
  EXPECT_TRUE(exec_->Cleanup(handles[1]).ok());
  EXPECT_TRUE(Eventually([&] { return ProcessGone(children[1]); }));
  EXPECT_FALSE(fs::exists(NodeDir(handles[1])));
}

TEST_F(ProcessExecutorTest, UnknownHandlesAreNotFound) {
  EXPECT_EQ(exec_->Wait("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(exec_->IsRunning("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(exec_->Stop("nope", 0).code(), StatusCode::kNotFound);
  EXPECT_EQ(exec_->StreamLogs("nope", [](std::string_view) {}).code(), StatusCode::kNotFound);
  EXPECT_EQ(exec_->Wait("../etc").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(exec_->Cleanup("nope").ok());
}

TEST_F(ProcessExecutorTest, ListNodesAndCleanup) {
  auto empty = exec_->ListNodes();  // the state folder does not exist yet
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->empty());

  std::string b = Launch(Sh("b-node", "true"));
  std::string a = Launch(Sh("a-node", "sleep 1000"));
  auto nodes = exec_->ListNodes();
  ASSERT_TRUE(nodes.ok());
  EXPECT_EQ(*nodes, (std::vector<std::string>{"a-node", "b-node"}));
  EXPECT_EQ(WaitCode(b), 0);

  // Cleanup of a running node stops it first.
  ASSERT_TRUE(Eventually([&] { return fs::exists(NodeDir(a) / "child.pid"); }));
  pid_t child = FirstPid(NodeDir(a) / "child.pid");
  EXPECT_TRUE(WithTimeout([&] { return exec_->Cleanup(a); }).ok());
  EXPECT_TRUE(Eventually([&] { return ProcessGone(child); }));
  EXPECT_TRUE(exec_->Cleanup(b).ok());
  EXPECT_TRUE(exec_->Cleanup(b).ok());  // nothing left is fine
  nodes = exec_->ListNodes();
  ASSERT_TRUE(nodes.ok());
  EXPECT_TRUE(nodes->empty());
  EXPECT_EQ(exec_->IsRunning(a).status().code(), StatusCode::kNotFound);
}

TEST_F(ProcessExecutorTest, ManyConcurrentLaunches) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 10;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string name = "c" + std::to_string(t) + "-" + std::to_string(i);
        auto h = exec_->Launch(Sh(name, "echo " + name + "; exit " + std::to_string(i)));
        if (!h.ok()) continue;
        auto info = exec_->Wait(*h);
        std::string out;
        Status s = exec_->StreamLogs(*h, [&](std::string_view d) { out.append(d); });
        if (info.ok() && info->exit_code == i && s.ok() && out == name + "\n" &&
            exec_->Cleanup(*h).ok()) {
          ++ok;
        }
      }
    });
  }
  WithTimeout(
      [&] {
        for (auto& th : threads) th.join();
        return 0;
      },
      seconds(60));
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
}

// Not a test: prints how long Launch+Wait+Cleanup of `true` takes. Run with
// --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'.
TEST_F(ProcessExecutorTest, DISABLED_Throughput) {
  constexpr int kRuns = 200;
  Clock::duration launch{}, wait{}, cleanup{};
  auto started = Clock::now();
  for (int i = 0; i < kRuns; ++i) {
    auto t0 = Clock::now();
    std::string h = Launch(Spec("t" + std::to_string(i), {"true"}));
    auto t1 = Clock::now();
    EXPECT_EQ(exec_->Wait(h)->exit_code, 0);
    auto t2 = Clock::now();
    EXPECT_TRUE(exec_->Cleanup(h).ok());
    auto t3 = Clock::now();
    launch += t1 - t0;
    wait += t2 - t1;
    cleanup += t3 - t2;
  }
  auto ms = [](Clock::duration d) {
    return static_cast<long long>(std::chrono::duration_cast<milliseconds>(d).count());
  };
  long long total = ms(Clock::now() - started);
  std::printf(
      "%d sequential runs of `true`: %lld ms (%.0f/s); Launch %lld ms, Wait %lld ms, "
      "Cleanup %lld ms\n",
      kRuns, total, kRuns * 1000.0 / static_cast<double>(total), ms(launch), ms(wait), ms(cleanup));

  // The same with 8 threads at once, as a scheduler would drive it.
  constexpr int kThreads = 8;
  started = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kRuns; i += kThreads) {
        auto h = exec_->Launch(Spec("p" + std::to_string(i), {"true"}));
        EXPECT_TRUE(h.ok());
        if (!h.ok()) continue;
        EXPECT_EQ(exec_->Wait(*h)->exit_code, 0);
        EXPECT_TRUE(exec_->Cleanup(*h).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  total = ms(Clock::now() - started);
  std::printf("%d runs of `true` from %d threads: %lld ms (%.0f/s)\n", kRuns, kThreads, total,
              kRuns * 1000.0 / static_cast<double>(total));
}

}  // namespace
}  // namespace trainyard::exec

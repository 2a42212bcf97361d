#pragma once

// The real `trainyard server` as a process of its own, for tests that kill it (kill -9) and
// start it again on the same workspace. Its stdout and stderr go to <workspace>/daemon.log.
// Header-only: users link trainyard_http_client, trainyard_common and gtest themselves.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_env.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/workspace.h"

namespace trainyard::testing {

class DaemonProcess {
 public:
  DaemonProcess() = default;
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  ~DaemonProcess() {
    if (pid_ > 0) Kill();
  }

  // Starts `trainyard server --workspace <workspace> --port 0 EXTRA...` and waits (up to 60 s)
  // until it serves: it publishes server.json after recovering the runs of a previous daemon.
  // Fails the test (fatally; wrap in ASSERT_NO_FATAL_FAILURE) when it exits or does not serve in
  // time.
  void Start(const std::filesystem::path& workspace, const std::vector<std::string>& extra = {}) {
    workspace_ = workspace;
    using namespace std::chrono_literals;
    const std::string binary = TrainyardBinary();
    const std::string ws = workspace.string();
    const std::string log = (workspace / "daemon.log").string();
    std::vector<std::string> args = {binary, "server", "--workspace", ws, "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const auto started = std::chrono::steady_clock::now();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    ++starts_;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        pid_ = -1;
        FAIL() << "the daemon exited with status " << st << " before serving";
      }
      auto info = ReadFile(workspace / "server.json");
      if (info.ok()) {
        auto j = nlohmann::json::parse(*info, nullptr, false);
        if (j.is_object() && j.value("pid", 0) == pid) {
          client_ = std::make_unique<HttpClient>(j["url"].get<std::string>(),
                                                 j["token"].get<std::string>());
          token_ = j["token"].get<std::string>();
          public_url_ = j.value("public_url", "");
          tls_pin_ = j.value("tls_pin", "");
          std::fprintf(stderr, "daemon %d serving after %lld ms\n", pid,
                       static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::steady_clock::now() - started)
                                                  .count()));
          return;
        }
      }
      std::this_thread::sleep_for(20ms);
    }
    FAIL() << "the daemon did not publish server.json within 60 s";
  }

  // kill -9, then reaps it. Nothing when none runs.
  void Kill() {
    client_.reset();
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }

  // The run `name` as GET /api/v1/jobs/{name} answers it; an empty object (and a test failure)
  // when it cannot be had.
  nlohmann::json Run(const std::string& name) {
    if (!client_) {
      ADD_FAILURE() << "no daemon serves";
      return nlohmann::json::object();
    }
    auto run = client_->GetJson("/api/v1/jobs/" + name);
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return run.ok() ? *run : nlohmann::json::object();
  }

  // A file of the run's folder in the workspace; "" when it is missing.
  std::string RunFile(const std::string& name, const std::string& rel) const {
    WorkspaceLayout layout;
    layout.root = workspace_;
    auto text = ReadFile(layout.RunDir(name) / rel);
    return text.ok() ? *text : "";
  }

  // Polls the run until `pred(run)` holds, for at most `timeout`. When it does not, fails the
  // test naming the run's status and reason, with the run and its logs.
  template <typename Pred>
  nlohmann::json WaitRun(const std::string& name, Pred pred, const std::string& what,
                         std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    nlohmann::json run;
    while (std::chrono::steady_clock::now() < deadline) {
      run = Run(name);
      if (pred(run)) return run;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "run " << name << " not " << what << " within " << timeout.count()
                  << " s; it is " << run.value("status", "?") << " ("
                  << run.value("failure_reason", "") << ")\n--- run ---\n"
                  << run.dump(1) << "\n--- build log ---\n"
                  << RunFile(name, "logs/image_build.log") << "--- slurm job log ---\n"
                  << RunFile(name, "logs/slurm_job.log") << "--- run log ---\n"
                  << RunFile(name, "user_logs/std_log.txt");
    return run;
  }
  nlohmann::json WaitRunStatus(const std::string& name, const std::string& status,
                               std::chrono::seconds timeout) {
    return WaitRun(
        name, [&](const nlohmann::json& r) { return r.value("status", "") == status; }, status,
        timeout);
  }
  nlohmann::json WaitRunEnd(const std::string& name, std::chrono::seconds timeout) {
    return WaitRun(
        name,
        [](const nlohmann::json& r) {
          const std::string s = r.value("status", "");
          return s == "Completed" || s == "Failed" || s == "Canceled";
        },
        "ended", timeout);
  }

  pid_t pid() const { return pid_; }
  int starts() const { return starts_; }
  // The client of the daemon serving now (on its loopback address); null when none does.
  HttpClient* client() const { return client_.get(); }
  // What server.json says of the daemon serving now: its token, and when it serves beyond
  // loopback its public URL and certificate key pin.
  const std::string& token() const { return token_; }
  const std::string& public_url() const { return public_url_; }
  const std::string& tls_pin() const { return tls_pin_; }

 private:
  pid_t pid_ = -1;
  int starts_ = 0;
  std::filesystem::path workspace_;
  std::unique_ptr<HttpClient> client_;
  std::string token_, public_url_, tls_pin_;
};

}  // namespace trainyard::testing

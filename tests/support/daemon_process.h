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

namespace trainyard::testing {

class DaemonProcess {
 public:
  DaemonProcess() = default;
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  ~DaemonProcess() {
    if (pid_ > 0) Kill();
  }

  // Starts `trainyard server --workspace <workspace> --port 0` and waits (up to 60 s) until it
  // serves: it publishes server.json after recovering the runs of a previous daemon. Fails the
  // test (fatally; wrap in ASSERT_NO_FATAL_FAILURE) when it exits or does not serve in time.
  void Start(const std::filesystem::path& workspace) {
    using namespace std::chrono_literals;
    const std::string binary = TrainyardBinary();
    const std::string ws = workspace.string();
    const std::string log = (workspace / "daemon.log").string();
    std::vector<std::string> args = {binary, "server", "--workspace", ws, "--port", "0"};
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
          std::fprintf(stderr, "daemon %d serving after %lld ms\n", pid,
                       static_cast<long long>(
                           std::chrono::duration_cast<std::chrono::milliseconds>(
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

  pid_t pid() const { return pid_; }
  int starts() const { return starts_; }
  // The client of the daemon serving now; null when none does.
  HttpClient* client() const { return client_.get(); }

 private:
  pid_t pid_ = -1;
  int starts_ = 0;
  std::unique_ptr<HttpClient> client_;
};

}  // namespace trainyard::testing

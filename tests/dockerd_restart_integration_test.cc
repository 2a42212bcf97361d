// dockerd stopping while runs go on (the "dockerd restart"): a running run fails with a
// reason within 30 s, a run submitted while it is down fails clearly, and once dockerd is back
// runs go through again without anything restarted by hand. Stops and restarts the machine's
// dockerd (scripts/dockerd.sh), so CTest runs it alone.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/test_daemon.h"
#include "tests/support/test_env.h"
#include "trainyard/api/daemon.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/docker/http_engine.h"
#include "trainyard/spec/definition.h"

namespace trainyard {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

bool EngineUp() {
  docker::HttpEngine engine;
  return engine.Ping().ok();
}

// Stops dockerd (SIGTERM, as a service manager would) and waits until it is gone.
void StopDockerd() {
  std::ifstream pid_file("/var/run/docker.pid");
  pid_t pid = 0;
  pid_file >> pid;
  ASSERT_GT(pid, 0) << "no /var/run/docker.pid";
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  for (int i = 0; i < 600 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(100ms);
  ASSERT_NE(::kill(pid, 0), 0) << "dockerd did not stop within 60 s";
}

void StartDockerd() {
  const std::string cmd = std::string("bash ") + TRAINYARD_SOURCE_DIR + "/scripts/dockerd.sh";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ASSERT_TRUE(EngineUp());
}

class DockerdRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TY_REQUIRE_SERVICE(testing::DockerAvailable(), "dockerd at /var/run/docker.sock");
    root_ = fs::temp_directory_path() / ("ty-dockerd-" + RandomHex(4));
    api::DaemonOptions opts = testing::TestDaemonOptions(root_);
    auto d = api::Daemon::Start(opts);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    daemon_ = std::move(d).value();
    client_ = std::make_unique<HttpClient>(daemon_->url(), daemon_->token());
  }
  void TearDown() override {
    if (!EngineUp()) StartDockerd();  // never leave the machine without dockerd
    daemon_.reset();
    (void)RemoveTree(root_);
  }

  std::string Submit(const std::string& command) {
    spec::RunRequest r;
    r.experiment_name = "dockerd";
    r.command = command;
    spec::EnvironmentDefinition env;
    env.image = "python:3.11-slim";
    env.user_managed_dependencies = true;
    r.environment = env;
    auto run = client_->PostJson("/api/v1/jobs", r.ToJson(spec::SecretMode::kPlain));
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return run.ok() ? (*run)["name"].get<std::string>() : "";
  }

  json WaitFor(const std::string& name, const std::string& status, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    json run;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = client_->GetJson("/api/v1/jobs/" + name);
      if (r.ok()) run = *r;
      const std::string s = run.value("status", "");
      if (status.empty() ? (s == "Completed" || s == "Failed" || s == "Canceled") : s == status) {
        return run;
      }
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "run " << name << " stuck in " << run.value("status", "?");
    return run;
  }

  fs::path root_;
  std::unique_ptr<api::Daemon> daemon_;
  std::unique_ptr<HttpClient> client_;
};

TEST_F(DockerdRestartTest, RunsFailWithAReasonAndSchedulingResumes) {
  const std::string running = Submit("echo up; sleep 300");
  WaitFor(running, "Running", 120s);

  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(StopDockerd());
  json lost = WaitFor(running, "", 30s);
  EXPECT_EQ(lost["status"], "Failed") << lost.dump();
  const std::string reason = lost.value("failure_reason", "");
  EXPECT_NE(reason.find("compute lost"), std::string::npos) << reason;
  EXPECT_NE(reason.find("Docker engine"), std::string::npos) << reason;
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, 60s) << "stop + failure took too long";

  // Submitted while dockerd is down: refused with the reason, not left queued.
  const std::string meanwhile = Submit("echo never");
  json refused = WaitFor(meanwhile, "", 30s);
  EXPECT_EQ(refused["status"], "Failed") << refused.dump();
  EXPECT_NE(refused.value("failure_reason", "").find("Docker engine"), std::string::npos)
      << refused.dump();

  ASSERT_NO_FATAL_FAILURE(StartDockerd());
  const std::string after = Submit("echo back");
  json done = WaitFor(after, "", 120s);
  EXPECT_EQ(done["status"], "Completed") << done.dump();
  auto compute = client_->GetJson("/api/v1/computes/local");
  ASSERT_TRUE(compute.ok());
  EXPECT_EQ((*compute)["nodes"]["busy"], 0) << compute->dump();
  // The lost run's container, which could not be removed while the engine was gone, is removed
  // once the engine is back and a run starts.
  docker::HttpEngine engine;
  auto left = engine.ListContainers("trainyard.workspace", root_.string());
  ASSERT_TRUE(left.ok()) << left.status().ToString();
  EXPECT_TRUE(left->empty()) << left->size() << " containers left, the first " << left->front().id;
}

}  // namespace
}  // namespace trainyard

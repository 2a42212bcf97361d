// Submissions under load, against an in-process daemon on port 0 with a temp workspace: 20
// clients POST 1000 trivial jobs at once to a `process` compute (no Docker needed); none may be
// lost, none duplicated, and a second submit of a taken name is refused with 409, not run twice.

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_daemon.h"
#include "trainyard/api/daemon.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/definition.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr int kClients = 20;
constexpr int kJobsPerClient = 50;
constexpr int kRuns = kClients * kJobsPerClient;
constexpr int kResubmits = 20;

// `true` on the `load` compute, named `name` (empty: the daemon picks a name). A process
// compute uses no image, but a job still names an environment.
std::string TrivialJob(const std::string& name) {
  spec::RunRequest req;
  req.name = name;
  req.experiment_name = "load";
  req.command = "true";
  req.compute = "load";
  spec::EnvironmentDefinition env;
  env.image = "busybox:latest";
  env.user_managed_dependencies = true;
  req.environment = env;
  return req.ToJson(spec::SecretMode::kPlain).dump();
}

class SubmitLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ty-load-" + RandomHex(4));
    api::DaemonOptions opts = testing::TestDaemonOptions(root_);
    auto daemon = api::Daemon::Start(opts);
    ASSERT_TRUE(daemon.ok()) << daemon.status().ToString();
    daemon_ = std::move(daemon).value();
    http_ = std::make_unique<HttpClient>(daemon_->url(), daemon_->token());
  }

  void TearDown() override {
    http_.reset();
    daemon_.reset();
    (void)RemoveTree(root_);
  }

  // Every run of the experiment, newest first.
  json ListRuns() {
    auto list = http_->GetJson("/api/v1/jobs?experiment=load&limit=10000", 120000);
    EXPECT_TRUE(list.ok()) << list.status().ToString();
    return list.ok() ? *list : json::array();
  }

  fs::path root_;
  std::unique_ptr<api::Daemon> daemon_;
  std::unique_ptr<HttpClient> http_;
};

TEST_F(SubmitLoadTest, ConcurrentSubmissionsAreNeitherLostNorDuplicated) {
  auto compute = http_->PostJson("/api/v1/computes",
                                 json{{"name", "load"}, {"type", "process"}, {"max_nodes", 2}});
  ASSERT_TRUE(compute.ok()) << compute.status().ToString();

  std::mutex mu;
  std::vector<std::string> returned;  // GUARDED_BY(mu): the names the 201 answers gave
  std::vector<std::string> failures;  // GUARDED_BY(mu)
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kJobsPerClient; ++i) {
        const std::string want =
            i % 2 == 0 ? "load-" + std::to_string(c) + "-" + std::to_string(i) : "";
        auto r =
            http_->Request("POST", "/api/v1/jobs", TrivialJob(want), "application/json", 120000);
        std::lock_guard lock(mu);
        if (!r.ok() || r->status != 201) {
          failures.push_back(
              want + ": " +
              (r.ok() ? std::to_string(r->status) + " " + r->body : r.status().ToString()));
          continue;
        }
        json body = json::parse(r->body, nullptr, false);
        const std::string name = body.is_object() ? body.value("name", "") : "";
        if (!want.empty() && name != want) failures.push_back(want + " came back as " + name);
        returned.push_back(name);
      }
    });
  }
  for (auto& t : clients) t.join();
  const double submit_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(failures.empty()) << failures.size() << " submits failed, first: " << failures[0];
  ASSERT_EQ(returned.size(), static_cast<size_t>(kRuns));
  const std::set<std::string> unique_returned(returned.begin(), returned.end());
  EXPECT_EQ(unique_returned.size(), returned.size()) << "two submits got the same name";

  // A taken name is refused, concurrently too, and starts nothing.
  std::vector<std::thread> again;
  std::vector<HttpResult> answers(kResubmits);
  for (int k = 0; k < kResubmits; ++k) {
    again.emplace_back([&, k] {
      const std::string name = "load-" + std::to_string(k) + "-0";
      auto r = http_->Request("POST", "/api/v1/jobs", TrivialJob(name), "application/json", 120000);
      if (r.ok()) answers[k] = *r;
    });
  }
  for (auto& t : again) t.join();
  for (int k = 0; k < kResubmits; ++k) {
    EXPECT_EQ(answers[k].status, 409) << "load-" << k << "-0: " << answers[k].body;
    json body = json::parse(answers[k].body, nullptr, false);
    EXPECT_TRUE(body.is_object() && body["error"].value("code", "") == "ALREADY_EXISTS")
        << answers[k].body;
  }

  // Generous: the test binary runs under ASan, and a process run costs a fork and an exec.
  // The compute's queue is watched (cheap); the runs are listed once it is empty.
  const auto deadline = std::chrono::steady_clock::now() + 300s;
  for (;;) {
    auto c = http_->GetJson("/api/v1/computes/load");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    const json totals = (*c)["totals"];
    if (totals.value("running", -1) == 0 && totals.value("queued", -1) == 0) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "not all runs ended within 300 s: " << totals.dump();
    std::this_thread::sleep_for(100ms);
  }
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const json runs = ListRuns();
  std::printf("submitted %d runs in %.2f s; all ended after %.2f s; listed after %.2f s\n", kRuns,
              submit_s, total_s,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());

  ASSERT_EQ(runs.size(), static_cast<size_t>(kRuns));
  std::set<std::string> listed;
  std::map<std::string, int> not_completed;
  for (const json& r : runs) {
    listed.insert(r.value("name", ""));
    if (r.value("status", "") != "Completed") ++not_completed[r.value("status", "")];
  }
  EXPECT_EQ(listed.size(), static_cast<size_t>(kRuns)) << "a name is listed twice";
  EXPECT_TRUE(not_completed.empty()) << json(not_completed).dump();
  for (const std::string& name : returned) EXPECT_EQ(listed.count(name), 1u) << name;
  // The refused resubmits started nothing: each of those names has one run, with one history.
  for (const json& r : runs) {
    const std::string name = r.value("name", "");
    if (name.ends_with("-0") && name.starts_with("load-")) {
      int queued = 0;
      for (const json& t : r["transitions"]) queued += t.value("status", "") == "Queued";
      EXPECT_EQ(queued, 1) << r.dump();
    }
  }
}

}  // namespace
}  // namespace trainyard

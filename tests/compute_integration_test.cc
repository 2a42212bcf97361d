// `trainyard compute ...` end to end, as a user runs it: the real binary, the daemon it starts,
// a temp workspace. No Docker needed: docker computes are only created, listed and deleted here,
// and the runs that exercise the queue go to a `process` compute (commands on the host).

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "tests/support/test_env.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using testing::CmdResult;

class ComputeCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = fs::temp_directory_path() / ("ty-compute-" + RandomHex(4));
    project_ = home_ / "project";
    ASSERT_TRUE(MakeDirs(project_).ok());
  }

  void TearDown() override {
    testing::StopWorkspaceDaemon(home_ / "ws");  // the daemon the CLI started
    (void)RemoveTree(home_);
  }

  void Write(const std::string& rel, const std::string& text) {
    ASSERT_TRUE(WriteFileAtomic(project_ / rel, text).ok());
  }

  CmdResult Run(const std::string& args) {
    return testing::RunTrainyard(project_.string(), (home_ / "ws").string(), args);
  }

  // The JSON a `-o json` command printed; fails the test when it is not JSON.
  json RunJson(const std::string& args) {
    CmdResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
    json j = json::parse(r.output, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << args << "\n" << r.output;
    return j;
  }

  // The names in `compute list -o json`.
  std::vector<std::string> ComputeNames() {
    std::vector<std::string> names;
    json list = RunJson("compute list -o json");
    if (!list.is_array()) return names;
    for (const auto& c : list) names.push_back(c.value("name", ""));
    return names;
  }

  fs::path home_, project_;
};

bool Contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

TEST_F(ComputeCliTest, CreateAttachUpdateShowDelete) {
  // `local` exists by default: one node sized to the machine.
  EXPECT_TRUE(Contains(ComputeNames(), "local"));
  json local = RunJson("compute show local -o json");
  EXPECT_EQ(local["type"], "docker");
  EXPECT_EQ(local["nodes"]["total"], 1);
  EXPECT_EQ(local["nodes"]["busy"], 0);
  EXPECT_GT(local["node_memory_bytes"].get<std::int64_t>(), 0);
  CmdResult show_local = Run("compute show local");
  ASSERT_EQ(show_local.exit_code, 0) << show_local.output;
  EXPECT_NE(show_local.output.find("0 busy, 1 idle, 1 total"), std::string::npos)
      << show_local.output;

  const std::string flags =
      "compute create --name cpu-cluster --type docker --max-nodes 4 --node-cpus 2 "
      "--node-memory 4g --node-gpus 0 --idle-seconds 120";
  CmdResult created = Run(flags);
  ASSERT_EQ(created.exit_code, 0) << created.output;
  EXPECT_NE(created.output.find("Created compute target cpu-cluster"), std::string::npos)
      << created.output;
  EXPECT_NE(created.output.find("4 nodes of 2 CPUs, 4 GiB"), std::string::npos) << created.output;
  std::vector<std::string> names = ComputeNames();
  EXPECT_TRUE(Contains(names, "cpu-cluster"));
  EXPECT_TRUE(Contains(names, "local"));
  CmdResult table = Run("compute list");
  EXPECT_NE(table.output.find("MAX NODES"), std::string::npos) << table.output;

  // The same settings again: attached, not an error.
  CmdResult again = Run(flags);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("Compute target cpu-cluster exists with the same settings"),
            std::string::npos)
      << again.output;

  // Other settings: refused, naming what differs.
  CmdResult differs =
      Run("compute create --name cpu-cluster --max-nodes 2 --node-cpus 2 --node-memory 4g "
          "--idle-seconds 120");
  EXPECT_NE(differs.exit_code, 0) << differs.output;
  EXPECT_NE(differs.output.find("max_nodes"), std::string::npos) << differs.output;
  EXPECT_NE(differs.output.find("--update"), std::string::npos) << differs.output;
  EXPECT_EQ(RunJson("compute show cpu-cluster -o json")["max_nodes"], 4);

  // --update applies them.
  CmdResult updated =
      Run("compute create --name cpu-cluster --max-nodes 2 --node-cpus 2 --node-memory 4g "
          "--idle-seconds 120 --update");
  ASSERT_EQ(updated.exit_code, 0) << updated.output;
  EXPECT_NE(updated.output.find("Updated compute target cpu-cluster"), std::string::npos)
      << updated.output;
  json status = RunJson("compute show cpu-cluster -o json");
  EXPECT_EQ(status["max_nodes"], 2);
  EXPECT_EQ(status["nodes"]["total"], 2);
  EXPECT_EQ(status["nodes"]["idle"], 2);
  EXPECT_EQ(status["totals"]["queued"], 0);
  EXPECT_EQ(status["idle_seconds"], 120);

  // Delete: gone from the list; deleting again or an unknown name is an error naming it.
  CmdResult deleted = Run("compute delete cpu-cluster");
  ASSERT_EQ(deleted.exit_code, 0) << deleted.output;
  EXPECT_FALSE(Contains(ComputeNames(), "cpu-cluster"));
  CmdResult unknown = Run("compute delete no-such-compute");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.output.find("no-such-compute"), std::string::npos) << unknown.output;
  CmdResult show_unknown = Run("compute show no-such-compute");
  EXPECT_NE(show_unknown.exit_code, 0);
  CmdResult delete_local = Run("compute delete local");
  EXPECT_NE(delete_local.exit_code, 0) << delete_local.output;
}

TEST_F(ComputeCliTest, CreateFromYamlWithFlagOverridesAndBadFiles) {
  Write("compute.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json\n"
        "name: gpu-cluster\n"
        "type: amlcompute\n"
        "min_instances: 0\n"
        "max_instances: 2\n"
        "idle_time_before_scale_down: 300\n"
        "node_cpus: 1.5\n"
        "node_memory: 512m\n");
  CmdResult created = Run("compute create -f compute.yml --max-nodes 3");
  ASSERT_EQ(created.exit_code, 0) << created.output;
  EXPECT_NE(created.output.find("Created compute target gpu-cluster"), std::string::npos);
  json status = RunJson("compute show gpu-cluster -o json");
  EXPECT_EQ(status["type"], "docker");
  EXPECT_EQ(status["max_nodes"], 3) << "the flag overrides the file";
  EXPECT_EQ(status["node_cpus"], 1.5);
  EXPECT_EQ(status["node_memory_bytes"], 512LL << 20);
  EXPECT_EQ(status["idle_seconds"], 300);

  Write("bad.yml", "name: broken\nmax_nodes: 2\nnode_memory: lots\n");
  CmdResult bad = Run("compute create -f bad.yml");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("bad.yml:3:14: 'node_memory'"), std::string::npos) << bad.output;

  Write("unknown.yml", "name: broken\nvm_size: Standard_NC6\n");
  CmdResult unknown = Run("compute create -f unknown.yml");
  EXPECT_EQ(unknown.exit_code, 2) << unknown.output;
  EXPECT_NE(unknown.output.find("unknown.yml:2:1: unknown key 'vm_size'"), std::string::npos)
      << unknown.output;
  EXPECT_FALSE(Contains(ComputeNames(), "broken"));

  CmdResult no_name = Run("compute create --max-nodes 2");
  EXPECT_EQ(no_name.exit_code, 2) << no_name.output;
  EXPECT_NE(no_name.output.find("--name"), std::string::npos) << no_name.output;
}

TEST_F(ComputeCliTest, QueueOnAProcessComputeAndFailFast) {
  ASSERT_EQ(Run("compute create --name host --type process --max-nodes 1").exit_code, 0);
  Write("sleep.yml",
        "command: sleep 60\n"
        "environment: {image: python:3.11-slim}\n"
        "compute: host\n");
  Write("quick.yml",
        "command: echo quick\n"
        "environment: {image: python:3.11-slim}\n"
        "compute: host\n"
        "queue_settings: {priority: high}\n");
  json first = RunJson("job create -f sleep.yml --name sleeper -o json");
  ASSERT_EQ(first.value("name", ""), "sleeper");
  // Wait until the sleeper holds the only node.
  json status;
  for (int i = 0; i < 200; ++i) {
    status = RunJson("compute show host -o json");
    if (status["nodes"]["busy"] == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(status["nodes"]["busy"], 1) << status.dump();
  EXPECT_EQ(status["running"], json::array({"sleeper"}));

  RunJson("job create -f quick.yml --name waiter-low --priority low -o json");
  RunJson("job create -f quick.yml --name waiter-high -o json");
  status = RunJson("compute show host -o json");
  ASSERT_EQ(status["queued"].size(), 2u) << status.dump();
  EXPECT_EQ(status["queued"][0]["name"], "waiter-high") << "higher priority first";
  EXPECT_EQ(status["queued"][0]["priority"], 100);
  EXPECT_EQ(status["queued"][1]["name"], "waiter-low");
  EXPECT_EQ(status["queued"][1]["priority"], -100);
  EXPECT_NE(status["queued"][0]["wait_reason"].get<std::string>().find("node"), std::string::npos)
      << status.dump();
  EXPECT_EQ(status["totals"]["running"], 1);
  EXPECT_EQ(status["totals"]["queued"], 2);
  CmdResult show = Run("compute show host");
  EXPECT_NE(show.output.find("1 busy, 0 idle, 1 total"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("waiter-high"), std::string::npos) << show.output;

  // Runs are active: the compute cannot go.
  CmdResult refused = Run("compute delete host");
  EXPECT_NE(refused.exit_code, 0) << refused.output;
  EXPECT_NE(refused.output.find("active"), std::string::npos) << refused.output;

  // A run that could never fit is refused at submit, saying why.
  Write("wide.yml",
        "command: echo wide\n"
        "environment: {image: python:3.11-slim}\n"
        "compute: host\n"
        "resources: {instance_count: 2}\n");
  CmdResult wide = Run("job create -f wide.yml");
  EXPECT_NE(wide.exit_code, 0) << wide.output;
  EXPECT_NE(wide.output.find("max_nodes"), std::string::npos) << wide.output;
  CmdResult bad_priority = Run("job create -f quick.yml --priority urgent");
  EXPECT_EQ(bad_priority.exit_code, 2) << bad_priority.output;
  EXPECT_NE(bad_priority.output.find("low, medium, high"), std::string::npos);

  for (const char* run : {"sleeper", "waiter-low", "waiter-high"}) {
    (void)Run(std::string("job cancel ") + run);
  }
  // Once the runs have ended the compute can be deleted.
  CmdResult deleted;
  for (int i = 0; i < 200; ++i) {
    deleted = Run("compute delete host");
    if (deleted.exit_code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(deleted.exit_code, 0) << deleted.output;
}

}  // namespace
}  // namespace trainyard

// The Slurm client and the job scripts against the real one-node cluster of scripts/slurm.sh
// (partition "debug") and, for the container case, the real dockerd of scripts/dockerd.sh with
// debian:bookworm-slim (scripts/base-images.sh). A cluster that cannot be reached fails every
// test: this file exists to exercise it. Each test uses its own temp folder and random names,
// and cancels what it submitted.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_env.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/slurm/slurm.h"

namespace trainyard::slurm {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

constexpr char kPartition[] = "debug";
constexpr char kImage[] = "debian:bookworm-slim";

using Cmd = trainyard::testing::CmdResult;
using trainyard::testing::RunShell;

std::string Read(const fs::path& p) {
  auto text = ReadFile(p);
  return text.ok() ? *text : "";
}

class SlurmIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    client_ = MakeCommandClient();
    auto nodes = client_->ListNodes();
    ASSERT_TRUE(nodes.ok()) << "the Slurm cluster cannot be reached (" << nodes.status().ToString()
                            << "); start it with `bash scripts/slurm.sh`";
    tag_ = RandomHex(4);
    std::string tmpl = (fs::temp_directory_path() / "slurm_it.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }

  void TearDown() override {
    for (std::int64_t id : submitted_) (void)client_->Cancel(id);
    if (!dir_.empty()) (void)RemoveTree(dir_);
  }

  // A batch script running `body`, and a request for it.
  JobRequest Request(const std::string& name, const std::string& body) {
    fs::path script = dir_ / (name + ".sh");
    EXPECT_TRUE(WriteFileAtomic(script, "#!/bin/sh\n" + body + "\n", 0700).ok());
    JobRequest req;
    req.name = "ty-it-" + name + "-" + tag_;
    req.comment = "trainyard run=" + name + "-" + tag_;
    req.partition = kPartition;
    req.script = script;
    req.output = dir_ / (name + ".log");
    req.working_dir = dir_;
    req.time_limit_seconds = 300;
    return req;
  }

  // A task of run `<id>_<tag>` in a container of kImage on the node's docker, its containers
  // named trainyard-slurm-<id>-<tag>-<task>.
  TaskSpec ContainerTask(const std::string& id) const {
    TaskSpec task;
    task.run_id = id + "_" + tag_;
    task.image = kImage;
    task.container_prefix = "trainyard-slurm-" + id + "-" + tag_;
    return task;
  }

  // A request for the batch script WriteJobFiles wrote into `files`.
  JobRequest JobFilesRequest(const std::string& name, const JobFiles& files) {
    JobRequest req;
    req.name = "ty-it-" + name + "-" + tag_;
    req.partition = kPartition;
    req.script = files.BatchScript();
    req.output = files.BatchLog();
    req.working_dir = files.dir;
    return req;
  }

  StatusOr<std::int64_t> Submit(const JobRequest& req) {
    auto id = client_->Submit(req);
    if (id.ok()) submitted_.push_back(*id);
    return id;
  }

  // Polls squeue until job `id` is in a state `done` accepts, or `limit` passes.
  template <typename Pred>
  std::optional<JobInfo> WaitFor(std::int64_t id, Pred done, seconds limit = seconds(60)) {
    auto deadline = Clock::now() + limit;
    std::optional<JobInfo> last;
    while (Clock::now() < deadline) {
      auto jobs = client_->ListJobs();
      EXPECT_TRUE(jobs.ok()) << jobs.status().ToString();
      if (jobs.ok()) {
        for (const JobInfo& j : *jobs) {
          if (j.id == id) last = j;
        }
        if (last && done(*last)) return last;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ADD_FAILURE() << "job " << id << " did not get there within " << limit.count()
                  << " s; last state " << (last ? last->state + " " + last->reason : "unknown");
    return last;
  }

  std::optional<JobInfo> WaitFinal(std::int64_t id, seconds limit = seconds(60)) {
    return WaitFor(
        id, [](const JobInfo& j) { return IsFinalState(j.state); }, limit);
  }

  std::unique_ptr<Client> client_;
  std::string tag_;
  fs::path dir_;
  std::vector<std::int64_t> submitted_;
};

TEST_F(SlurmIntegrationTest, TrivialJobCompletes) {
  JobRequest req = Request("ok", "echo hello from \"$SLURM_JOB_ID\"");
  auto id = Submit(req);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto job = WaitFinal(*id);
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, "COMPLETED");
  EXPECT_EQ(job->exit_code, 0);
  EXPECT_FALSE(job->signal.has_value());
  EXPECT_EQ(job->name, req.name);
  EXPECT_EQ(job->comment, req.comment);
  EXPECT_EQ(job->partition, kPartition);
  EXPECT_EQ(job->time_limit_minutes, 5);
  EXPECT_GT(job->submit_time, 0);
  EXPECT_GE(job->end_time, job->start_time);
  EXPECT_EQ(Read(req.output), "hello from " + std::to_string(*id) + "\n");
}

TEST_F(SlurmIntegrationTest, FailingJobReportsItsExitCode) {
  auto id = Submit(Request("fail", "exit 3"));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto job = WaitFinal(*id);
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, "FAILED");
  EXPECT_EQ(job->exit_code, 3);
  EXPECT_FALSE(job->signal.has_value());
  EXPECT_EQ(job->reason, "NonZeroExitCode");
}

TEST_F(SlurmIntegrationTest, NodesOfThePartition) {
  auto nodes = client_->ListNodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status().ToString();
  bool found = false;
  for (const NodeInfo& n : *nodes) {
    bool in_debug =
        std::find(n.partitions.begin(), n.partitions.end(), kPartition) != n.partitions.end();
    if (in_debug && n.cpus > 0 && n.memory_mb > 0 && !n.state.empty()) found = true;
  }
  EXPECT_TRUE(found) << "no node with CPUs in partition " << kPartition;
}

TEST_F(SlurmIntegrationTest, AccountingDisabledGivesNothing) {
  // The test cluster keeps no accounting (AccountingStorageType=accounting_storage/none).
  for (int i = 0; i < 2; ++i) {  // the second call answers from the cached fact
    auto job = client_->AccountedJob(1);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    EXPECT_FALSE(job->has_value());
  }
}

TEST_F(SlurmIntegrationTest, UnknownPartitionIsRefused) {
  JobRequest req = Request("bogus", "true");
  req.partition = "bogus" + tag_;
  auto id = Submit(req);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), StatusCode::kInvalidArgument) << id.status().ToString();
  EXPECT_NE(id.status().message().find("partition"), std::string::npos) << id.status().ToString();
  EXPECT_NE(id.status().message().find(req.partition), std::string::npos) << id.status().ToString();
}

TEST_F(SlurmIntegrationTest, CancelStopsARunningJob) {
  auto id = Submit(Request("sleep", "sleep 100"));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto running = WaitFor(*id, [](const JobInfo& j) { return j.state == "RUNNING"; });
  ASSERT_TRUE(running.has_value() && running->state == "RUNNING");
  auto t0 = Clock::now();
  ASSERT_TRUE(client_->Cancel(*id).ok());
  auto job = WaitFinal(*id, seconds(10));
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, "CANCELLED");
  EXPECT_LT(Clock::now() - t0, seconds(10));
  // Cancelling an ended job, or one Slurm never had, is fine.
  EXPECT_TRUE(client_->Cancel(*id).ok());
  EXPECT_TRUE(client_->Cancel(999'999'999).ok());
}

// The generated scripts for real: two tasks on one node, each in its own container.
TEST_F(SlurmIntegrationTest, ContainerJobWithTwoTasks) {
  Cmd docker = RunShell("docker image inspect " + std::string(kImage) + " >/dev/null");
  ASSERT_EQ(docker.exit_code, 0) << "dockerd or " << kImage << " missing: " << docker.output
                                 << " (run `bash scripts/dockerd.sh` and "
                                    "`bash scripts/base-images.sh`)";
  auto nodes = client_->ListNodes();
  ASSERT_TRUE(nodes.ok() && !nodes->empty());
  const std::string host = (*nodes)[0].name;

  JobFiles files{dir_ / "job"};
  TaskSpec task = ContainerTask("it");
  task.env = {{"GREETING", "it's a \"test\"\n$HOME"}};
  task.command =
      "echo \"$RANK $WORLD_SIZE $MASTER_ADDR $LOCAL_RANK $NODE_RANK\"; "
      "printf '[%s]\\n' \"$GREETING\"";
  task.distribution = "pytorch";
  task.tasks_per_node = 2;
  task.stop_grace_seconds = 2;
  ASSERT_TRUE(WriteJobFiles(task, files).ok());

  JobRequest req = JobFilesRequest("docker", files);
  req.comment = "trainyard run=" + task.run_id;
  req.nodes = 1;
  req.tasks_per_node = 2;
  req.time_limit_seconds = 300;
  auto id = Submit(req);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto job = WaitFinal(*id, seconds(180));
  ASSERT_TRUE(job.has_value());
  std::string log = Read(files.NodeLog(0));
  EXPECT_EQ(job->state, "COMPLETED") << "batch.log:\n"
                                     << Read(files.BatchLog()) << "\nnode-0.log:\n"
                                     << log;
  EXPECT_EQ(job->exit_code, 0);
  EXPECT_NE(log.find("0 2 " + host + " 0 0\n"), std::string::npos) << log;
  EXPECT_NE(log.find("1 2 " + host + " 1 0\n"), std::string::npos) << log;
  // Values reach the container exactly (through env.sh and -e NAME).
  EXPECT_NE(log.find("[it's a \"test\"\n"), std::string::npos) << log;
  EXPECT_NE(log.find("$HOME]\n"), std::string::npos) << log;
  EXPECT_EQ(Read(files.Hostfile()), host + " slots=2\n");
  for (int t = 0; t < 2; ++t) {
    auto exit = ReadTaskExit(files, t);
    ASSERT_TRUE(exit.has_value()) << "task " << t << ": " << Read(files.TaskExitFile(t));
    EXPECT_EQ(exit->exit_code, 0);
    EXPECT_FALSE(exit->oom_killed);
    EXPECT_EQ(exit->node, 0);
  }
  auto job_exit = ReadJobExit(files);
  ASSERT_TRUE(job_exit.has_value()) << Read(files.ExitFile());
  EXPECT_EQ(job_exit->exit_code, 0);
  EXPECT_FALSE(job_exit->pull_failed);
  Cmd left = RunShell("docker ps -aq --filter name=" + task.container_prefix);
  EXPECT_EQ(left.exit_code, 0);
  EXPECT_EQ(left.output, "") << "containers left behind";
}

// A container an earlier attempt left under the task's name (a requeued job) does not stop the
// task: the name is taken back and the command runs once, in a new container.
TEST_F(SlurmIntegrationTest, AContainerLeftUnderTheNameIsReplaced) {
  JobFiles files{dir_ / "job"};
  TaskSpec task = ContainerTask("left");
  task.command = "echo fresh";
  task.stop_grace_seconds = 2;
  ASSERT_TRUE(WriteJobFiles(task, files).ok());
  Cmd stale = RunShell("docker create --name " + task.container_prefix + "-0 " +
                       std::string(kImage) + " echo stale >/dev/null");
  ASSERT_EQ(stale.exit_code, 0) << stale.output;

  JobRequest req = JobFilesRequest("left", files);
  req.comment = "trainyard run=" + task.run_id;
  req.time_limit_seconds = 300;
  auto id = Submit(req);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto job = WaitFinal(*id, seconds(180));
  ASSERT_TRUE(job.has_value());
  const std::string log = Read(files.NodeLog(0));
  EXPECT_EQ(job->state, "COMPLETED") << "batch.log:\n"
                                     << Read(files.BatchLog()) << "\nnode-0.log:\n"
                                     << log;
  EXPECT_NE(log.find("fresh\n"), std::string::npos) << log;
  EXPECT_EQ(log.find("stale"), std::string::npos) << log;
  auto exit = ReadTaskExit(files, 0);
  ASSERT_TRUE(exit.has_value()) << Read(files.TaskExitFile(0));
  EXPECT_EQ(exit->exit_code, 0);
  Cmd left = RunShell("docker ps -aq --filter name=" + task.container_prefix);
  EXPECT_EQ(left.output, "") << "containers left behind";
}

// A pull that fails on the node ends the job before any task, says so in the exit file, and
// leaves no credentials behind.
TEST_F(SlurmIntegrationTest, FailedPullIsRecorded) {
  Cmd docker = RunShell("docker info >/dev/null");
  ASSERT_EQ(docker.exit_code, 0) << "dockerd missing: " << docker.output
                                 << " (run `bash scripts/dockerd.sh`)";
  JobFiles files{dir_ / "job"};
  TaskSpec task = ContainerTask("itp");
  task.image = "127.0.0.1:9/trainyard/none:" + tag_;  // nothing listens on port 9
  task.pull_auth = docker::RegistryAuth{"user", "pass", "127.0.0.1:9"};
  task.command = "true";
  ASSERT_TRUE(WriteJobFiles(task, files).ok());
  ASSERT_TRUE(fs::exists(files.dir / "auth" / "config.json"));
  auto id = Submit(JobFilesRequest("pull", files));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto job = WaitFinal(*id, seconds(120));
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, "FAILED") << Read(files.BatchLog());
  auto exit = ReadJobExit(files);
  ASSERT_TRUE(exit.has_value()) << Read(files.ExitFile()) << Read(files.BatchLog());
  EXPECT_TRUE(exit->pull_failed);
  EXPECT_NE(exit->exit_code, 0);
  EXPECT_EQ(job->exit_code, exit->exit_code);
  EXPECT_FALSE(fs::exists(files.dir / "auth"));
  EXPECT_FALSE(ReadTaskExit(files, 0).has_value());
}

// scancel reaches the containers: they are stopped, each task records its end, and nothing is
// left behind.
TEST_F(SlurmIntegrationTest, CancelStopsTheContainers) {
  Cmd docker = RunShell("docker image inspect " + std::string(kImage) + " >/dev/null");
  ASSERT_EQ(docker.exit_code, 0) << "dockerd or " << kImage << " missing: " << docker.output
                                 << " (run `bash scripts/dockerd.sh` and "
                                    "`bash scripts/base-images.sh`)";
  JobFiles files{dir_ / "job"};
  TaskSpec task = ContainerTask("itc");
  task.command = "echo started; exec sleep 300";
  task.stop_grace_seconds = 1;
  ASSERT_TRUE(WriteJobFiles(task, files).ok());
  auto id = Submit(JobFilesRequest("cancel", files));
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto deadline = Clock::now() + seconds(60);
  while (Read(files.NodeLog(0)).find("started") == std::string::npos && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_NE(Read(files.NodeLog(0)).find("started"), std::string::npos) << Read(files.BatchLog());
  ASSERT_TRUE(client_->Cancel(*id).ok());
  auto job = WaitFinal(*id, seconds(30));
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->state, "CANCELLED");
  // The task script records the container's end before it exits.
  deadline = Clock::now() + seconds(20);
  while (!ReadTaskExit(files, 0) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  auto exit = ReadTaskExit(files, 0);
  ASSERT_TRUE(exit.has_value()) << Read(files.NodeLog(0)) << Read(files.BatchLog());
  EXPECT_NE(exit->exit_code, 0);
  deadline = Clock::now() + seconds(20);
  Cmd left;
  do {
    left = RunShell("docker ps -aq --filter name=" + task.container_prefix);
    if (left.output.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (Clock::now() < deadline);
  EXPECT_EQ(left.output, "") << "containers left behind";
}

}  // namespace
}  // namespace trainyard::slurm

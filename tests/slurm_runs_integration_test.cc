// Runs on a `slurm` compute end to end: the real `trainyard server` process, the one-node Slurm
// cluster of scripts/slurm.sh (partition "debug", node `hostname -s`), the dockerd of
// scripts/dockerd.sh with debian:bookworm-slim (scripts/base-images.sh), and for the registry
// cases the private registry of scripts/registry.sh. A service that cannot be reached fails the
// test, naming the script that starts it: this file exists to exercise them.
//
// The cases occupy the whole one-node cluster (one of them blocks it with an exclusive job), so
// CTest runs them alone (SERIAL). Each case has its own workspace and random run names, and
// cancels in Slurm and removes in Docker whatever it left.

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cctype>
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
#include "trainyard/sched/scheduler.h"
#include "trainyard/spec/definition.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kPartition = "debug";
constexpr const char* kImage = "debian:bookworm-slim";
constexpr const char* kStdLog = "user_logs/std_log.txt";

using testing::RunShell;

std::string ShortHostname() { return std::string(Trim(RunShell("hostname -s").output)); }

// "line 1\n" .. "line n\n".
std::string Lines(int n) {
  std::string out;
  for (int i = 1; i <= n; ++i) out += "line " + std::to_string(i) + "\n";
  return out;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

int NonEmptyLines(const std::string& text) {
  int n = 0;
  for (const auto& l : Split(text, '\n')) n += !l.empty();
  return n;
}

// True when `haystack` holds `needle` as bytes.
bool Holds(const std::string& haystack, const std::string& needle) {
  return !needle.empty() && haystack.find(needle) != std::string::npos;
}

class SlurmRunsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Every service is checked before anything starts; a missing one fails, naming its script.
    testing::CmdResult sinfo = RunShell(std::string("sinfo -h -p ") + kPartition + " -o %N");
    ASSERT_TRUE(sinfo.exit_code == 0 && !Trim(sinfo.output).empty())
        << "the Slurm cluster (partition " << kPartition
        << ") cannot be reached; start it with `bash scripts/slurm.sh`: " << sinfo.output;
    ASSERT_TRUE(testing::DockerAvailable())
        << "dockerd does not answer on /var/run/docker.sock; start it with "
           "`bash scripts/dockerd.sh`";
    ASSERT_EQ(RunShell(std::string("docker image inspect ") + kImage + " >/dev/null").exit_code, 0)
        << kImage << " is not in the local engine; `bash scripts/base-images.sh` makes it";
    host_ = ShortHostname();
    ASSERT_FALSE(host_.empty());
    suffix_ = RandomHex(3);
    root_ = fs::temp_directory_path() / ("ty-slurm-" + suffix_);
    layout_.root = root_ / "ws";
    project_ = root_ / "project";
    ASSERT_TRUE(MakeDirs(layout_.root).ok());
    ASSERT_TRUE(MakeDirs(project_).ok());
    ASSERT_NO_FATAL_FAILURE(daemon_.Start(layout_.root));
  }

  void TearDown() override {
    for (const std::string& id : blockers_) (void)RunShell("scancel " + id);
    const bool failed = HasFailure();
    daemon_.Kill();
    // What a failed case left: its jobs in Slurm (named trainyard-<run>) and their containers.
    for (const std::string& run : runs_) (void)RunShell("scancel --name=trainyard-" + run);
    for (int i = 0; i < 100; ++i) {
      if (Trim(RunShell("squeue -h -o %j | grep -- '" + suffix_ + "'").output).empty()) break;
      std::this_thread::sleep_for(100ms);
    }
    (void)RunShell("docker ps -aq --filter name=" + suffix_ + " | xargs -r docker rm -f");
    if (failed) {
      auto log = ReadFile(layout_.root / "daemon.log");
      std::fprintf(stderr, "--- daemon log ---\n%s\n", log.ok() ? log->c_str() : "(none)");
    }
    if (!root_.empty()) (void)RemoveTree(root_);
  }

  HttpClient& api() { return *daemon_.client(); }

  // The slurm compute `name` on the partition; `registry` as {"address","username","password"}.
  void CreateCompute(const std::string& name, int max_nodes, const json& registry = nullptr) {
    json body = {
        {"name", name}, {"type", "slurm"}, {"partition", kPartition}, {"max_nodes", max_nodes}};
    if (!registry.is_null()) body["registry"] = registry;
    auto c = api().PostJson("/api/v1/computes", body);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
  }

  // `trainyard compute create` of the slurm compute `hpc` with the registry, as a user runs it:
  // the password from the environment, never an argument.
  testing::CmdResult CreateComputeWithCli(const testing::RegistryInfo& reg) {
    EXPECT_EQ(::setenv("TRAINYARD_REGISTRY_PASSWORD", reg.password.c_str(), 1), 0);
    testing::CmdResult created = testing::RunTrainyard(
        project_.string(), layout_.root.string(),
        "compute create --name hpc --type slurm --partition debug --max-nodes 1 --registry " +
            reg.address + " --registry-username " + reg.user);
    ::unsetenv("TRAINYARD_REGISTRY_PASSWORD");
    return created;
  }

  std::string RunName(const std::string& what) {
    const std::string name = "sl-" + what + "-" + suffix_;
    runs_.push_back(name);
    return name;
  }

  static spec::RunRequest Request(const std::string& name, const std::string& command,
                                  const std::string& compute = "hpc") {
    spec::RunRequest r;
    r.name = name;
    r.experiment_name = "slurm-runs";
    r.command = command;
    r.compute = compute;
    spec::EnvironmentDefinition env;
    env.image = kImage;
    env.user_managed_dependencies = true;
    r.environment = env;
    return r;
  }

  std::string Submit(const spec::RunRequest& r) {
    auto run = api().PostJson("/api/v1/jobs", r.ToJson(spec::SecretMode::kPlain));
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return run.ok() ? (*run)["name"].get<std::string>() : "";
  }

  json Get(const std::string& name) { return daemon_.Run(name); }

  std::string RunFile(const std::string& name, const std::string& rel) {
    return daemon_.RunFile(name, rel);
  }

  // Waits until `pred(run)` holds; fails naming the run's status and logs when it does not.
  template <typename Pred>
  json WaitUntil(const std::string& name, Pred pred, const std::string& what,
                 std::chrono::seconds timeout = 90s) {
    return daemon_.WaitRun(name, pred, what, timeout);
  }

  json WaitStatus(const std::string& name, const std::string& status,
                  std::chrono::seconds timeout = 90s) {
    return daemon_.WaitRunStatus(name, status, timeout);
  }

  json WaitEnd(const std::string& name, std::chrono::seconds timeout = 120s) {
    return daemon_.WaitRunEnd(name, timeout);
  }

  // squeue's state of job `id` ("" when squeue no longer lists it).
  static std::string SlurmState(std::int64_t id) {
    return std::string(Trim(RunShell("squeue -h -j " + std::to_string(id) + " -o %T").output));
  }

  // The names of the containers (running or not) whose name holds `fragment`.
  static std::string Containers(const std::string& fragment) {
    return std::string(
        Trim(RunShell("docker ps -a --filter name=" + fragment + " --format '{{.Names}}'").output));
  }

  // The regular files under `dir` whose bytes hold `needle`.
  static std::vector<std::string> FilesHolding(const fs::path& dir, const std::string& needle) {
    std::vector<std::string> hits;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
      auto bytes = ReadFile(it->path());
      if (bytes.ok() && Holds(*bytes, needle)) hits.push_back(it->path().string());
    }
    return hits;
  }

  // Run `name` on a compute whose registry password is `wrong` fails as unauthorized, and
  // neither its reason nor any file of the workspace shows that password.
  void ExpectUnauthorized(const std::string& name, const std::string& wrong) {
    json failed = WaitEnd(name, 180s);
    EXPECT_EQ(failed["status"], "Failed") << failed.dump(1);
    const std::string reason = failed.value("failure_reason", "");
    EXPECT_TRUE(Holds(Lower(reason), "unauthorized"))
        << name << ": " << reason << "\n--- logs/image_build.log ---\n"
        << RunFile(name, "logs/image_build.log") << "--- logs/slurm_job.log ---\n"
        << RunFile(name, "logs/slurm_job.log");
    EXPECT_FALSE(Holds(reason, wrong)) << reason;
    EXPECT_FALSE(Holds(RunFile(name, kStdLog), "should not run"));
    std::vector<std::string> leaks = FilesHolding(layout_.root, wrong);
    EXPECT_TRUE(leaks.empty()) << "the wrong password in plain text in " << leaks.front();
  }

  testing::DaemonProcess daemon_;
  fs::path root_, project_;
  WorkspaceLayout layout_;
  std::string suffix_, host_;
  std::vector<std::string> runs_;      // their Slurm jobs are canceled in TearDown
  std::vector<std::string> blockers_;  // Slurm job ids of plain sbatch jobs, canceled in TearDown
};

// The demo's path on Slurm: code uploaded by the CLI, the image pushed to the private registry
// with the compute's credentials and pulled on the node, outputs recorded; the password never
// shown nor stored in plain text. A wrong password fails the run as unauthorized, both when the
// push is refused and when (the image already pushed) the nodes' pull is.
TEST_F(SlurmRunsTest, DemoStyleJobRunsOnSlurmThroughThePrivateRegistry) {
  std::optional<testing::RegistryInfo> reg = testing::LoadRegistryInfo();
  ASSERT_TRUE(reg.has_value())
      << "no private registry credentials in /var/lib/trainyard-test/registry.env; run "
         "`bash scripts/registry.sh`";
  const testing::CmdResult ping =
      RunShell("curl -s -o /dev/null -w '%{http_code}' http://" + reg->address + "/v2/");
  ASSERT_EQ(Trim(ping.output), "401")
      << "the private registry at " << reg->address
      << " does not answer with its auth; run `bash scripts/registry.sh`: " << ping.output;

  // A compute with a wrong password, first: pushing the image there is refused (this daemon has
  // pushed nothing yet), and the run fails saying so.
  const std::string wrong = "wrong-" + RandomHex(8);
  ASSERT_NO_FATAL_FAILURE(CreateCompute(
      "hpc-bad", 1, {{"address", reg->address}, {"username", reg->user}, {"password", wrong}}));
  const std::string bad_push = RunName("badpush");
  ASSERT_FALSE(Submit(Request(bad_push, "echo should not run", "hpc-bad")).empty());
  ExpectUnauthorized(bad_push, wrong);

  // The compute, through the CLI as a user makes it: the password from the environment.
  testing::CmdResult created = CreateComputeWithCli(*reg);
  ASSERT_EQ(created.exit_code, 0) << created.output;
  EXPECT_FALSE(Holds(created.output, reg->password)) << created.output;

  ASSERT_TRUE(MakeDirs(project_ / "src").ok());
  ASSERT_TRUE(WriteFileAtomic(project_ / "src" / "train.sh",
                              "echo \"training on $(hostname)\"\n"
                              "mkdir -p outputs\n"
                              "echo model-v1 > outputs/model.txt\n"
                              "echo training done\n")
                  .ok());
  const std::string name = RunName("demo");
  ASSERT_TRUE(WriteFileAtomic(project_ / "job.yml",
                              "command: sh train.sh\n"
                              "code: ./src\n"
                              "environment: {image: debian:bookworm-slim}\n"
                              "compute: hpc\n"
                              "experiment_name: slurm-demo\n")
                  .ok());
  testing::CmdResult submitted =
      testing::RunTrainyard(project_.string(), layout_.root.string(),
                            "job create -f job.yml --name " + name + " -o json");
  ASSERT_EQ(submitted.exit_code, 0) << submitted.output;

  json run = WaitEnd(name, 180s);
  ASSERT_EQ(run["status"], "Completed") << run.dump(1);
  EXPECT_EQ(run["exit_code"], 0);
  EXPECT_TRUE(run["slurm_job"].is_number_integer()) << run.dump(1);
  EXPECT_TRUE(StartsWith(run.value("image", ""), reg->address + "/")) << run.dump(1);
  const std::string log = RunFile(name, kStdLog);
  EXPECT_TRUE(Holds(log, "training done\n")) << log;
  EXPECT_TRUE(Holds(log, "training on ")) << log;
  auto served_log = api().Request("GET", "/api/v1/jobs/" + name + "/files/" + kStdLog);
  ASSERT_TRUE(served_log.ok()) << served_log.status().ToString();
  EXPECT_EQ(served_log->status, 200);
  EXPECT_EQ(served_log->body, log);

  auto files = api().GetJson("/api/v1/jobs/" + name + "/files");
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  bool model_listed = false;
  for (const auto& f : *files) {
    if (f.value("path", "") == "outputs/model.txt") {
      model_listed = true;
      EXPECT_TRUE(f.contains("digest")) << "outputs/model.txt is not recorded: " << f.dump();
    }
  }
  EXPECT_TRUE(model_listed) << files->dump(1);
  EXPECT_EQ(RunFile(name, "outputs/model.txt"), "model-v1\n");

  // The password: not in the compute as served, nor in the run, nor in plain text anywhere in
  // the workspace (its database included).
  auto compute = api().Request("GET", "/api/v1/computes/hpc");
  ASSERT_TRUE(compute.ok()) << compute.status().ToString();
  EXPECT_EQ(compute->status, 200) << compute->body;
  EXPECT_TRUE(Holds(compute->body, reg->address)) << compute->body;
  EXPECT_FALSE(Holds(compute->body, reg->password)) << "the compute shows its password";
  auto list = api().Request("GET", "/api/v1/computes");
  ASSERT_TRUE(list.ok());
  EXPECT_FALSE(Holds(list->body, reg->password)) << "the compute list shows a password";
  auto run_raw = api().Request("GET", "/api/v1/jobs/" + name);
  ASSERT_TRUE(run_raw.ok());
  EXPECT_FALSE(Holds(run_raw->body, reg->password)) << "the run shows the password";
  std::vector<std::string> leaks = FilesHolding(layout_.root, reg->password);
  EXPECT_TRUE(leaks.empty()) << "the password in plain text in " << leaks.front();
  // Nor the docker auth file the node pulled with (base64 of user:password): removed after use.
  std::vector<std::string> auth_left =
      FilesHolding(layout_.root, Base64Encode(reg->user + ":" + reg->password));
  EXPECT_TRUE(auth_left.empty()) << "the registry credentials left in " << auth_left.front();

  // The compute with the wrong password again, now that the image is in the registry: the
  // daemon pushed it with other credentials, so it pushes again with these, and is refused.
  const std::string bad_pull = RunName("badpull");
  ASSERT_FALSE(Submit(Request(bad_pull, "echo should not run", "hpc-bad")).empty());
  ExpectUnauthorized(bad_pull, wrong);
}

// The demo job (examples/digits-custom-image: an image built from a Dockerfile, Python,
// scikit-learn) unchanged on the slurm compute, picked on the command line: built here, pushed
// to the private registry, pulled by the node, trained, its outputs collected.
TEST_F(SlurmRunsTest, DemoJobRunsUnchangedOnSlurm) {
  std::optional<testing::RegistryInfo> reg = testing::LoadRegistryInfo();
  ASSERT_TRUE(reg.has_value())
      << "no private registry credentials in /var/lib/trainyard-test/registry.env; run "
         "`bash scripts/registry.sh`";
  testing::CmdResult created = CreateComputeWithCli(*reg);
  ASSERT_EQ(created.exit_code, 0) << created.output;

  const std::string name = RunName("digits");
  testing::CmdResult out = testing::RunTrainyard(
      project_.string(), layout_.root.string(),
      std::string("job create -f ") + TRAINYARD_SOURCE_DIR +
          "/examples/digits-custom-image/job.yml --compute hpc --name " + name + " --stream");
  ASSERT_EQ(out.exit_code, 0) << out.output;
  EXPECT_TRUE(Holds(out.output, "test_accuracy")) << out.output;
  json run = Get(name);
  EXPECT_EQ(run.value("status", ""), "Completed") << run.dump(1);
  EXPECT_EQ(run.value("compute", ""), "hpc");
  EXPECT_TRUE(run["slurm_job"].is_number_integer()) << run.dump(1);
  EXPECT_TRUE(StartsWith(run.value("image", ""), reg->address + "/trainyard/environments:"))
      << run.dump(1);
  auto files = api().GetJson("/api/v1/jobs/" + name + "/files");
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  std::set<std::string> outputs;
  for (const auto& f : *files) {
    if (f.contains("digest")) outputs.insert(f.value("path", ""));
  }
  EXPECT_TRUE(outputs.count("outputs/model.pkl")) << files->dump(1);
  EXPECT_TRUE(outputs.count("outputs/metrics.json")) << files->dump(1);
}

// A daemon serving beyond loopback (--host with an address of this machine): the CLI submits
// through that address over HTTPS, pinning the daemon's self-signed key, and the Slurm node
// reports the run's metrics to that address over HTTPS too, trusting the same certificate (a
// node may be another machine: the daemon's socket is not offered to it).
TEST_F(SlurmRunsTest, CliAndNodesReachADaemonServingHttpsBeyondLoopback) {
  std::optional<testing::RegistryInfo> reg = testing::LoadRegistryInfo();
  ASSERT_TRUE(reg.has_value())
      << "no private registry credentials in /var/lib/trainyard-test/registry.env; run "
         "`bash scripts/registry.sh`";
  const std::string address = testing::NonLoopbackAddress();
  ASSERT_FALSE(address.empty()) << "this machine has no address but loopback";
  daemon_.Kill();
  ASSERT_NO_FATAL_FAILURE(daemon_.Start(layout_.root, {"--host", address}));
  const std::string url = daemon_.public_url();
  ASSERT_TRUE(StartsWith(url, "https://" + address + ":")) << url;
  ASSERT_FALSE(daemon_.tls_pin().empty());
  testing::CmdResult created = CreateComputeWithCli(*reg);
  ASSERT_EQ(created.exit_code, 0) << created.output;

  const fs::path code = project_ / "track";
  ASSERT_TRUE(MakeDirs(code).ok());
  ASSERT_TRUE(WriteFileAtomic(code / "track.py", R"PY(
import os
from trainyard import Run
print("tracking", os.environ.get("TRAINYARD_TRACKING_URL"))
run = Run.get_context()
run.log("via_https", 7.5)
run.flush()
print("read back", run.get_metrics("via_https"))
)PY")
                  .ok());
  ASSERT_TRUE(
      WriteFileAtomic(project_ / "job.yml", std::string("command: python track.py\ncode: ./track\n"
                                                        "environment:\n  build:\n    path: ") +
                                                TRAINYARD_SOURCE_DIR +
                                                "/examples/digits-custom-image/docker-context\n"
                                                "compute: hpc\nexperiment_name: tls\n")
          .ok());
  const std::string name = RunName("tls");
  testing::CmdResult out =
      RunShell("cd '" + project_.string() + "' && TRAINYARD_URL='" + url + "' TRAINYARD_TOKEN='" +
               daemon_.token() + "' TRAINYARD_TLS_PIN='" + daemon_.tls_pin() + "' " +
               testing::TrainyardBinary() + " job create -f job.yml --name " + name + " --stream");
  ASSERT_EQ(out.exit_code, 0) << out.output;
  json run = Get(name);
  EXPECT_EQ(run.value("status", ""), "Completed") << run.dump(1);
  const std::string log = RunFile(name, kStdLog);
  EXPECT_TRUE(Holds(log, "tracking " + url)) << log;
  EXPECT_TRUE(Holds(log, "read back {'via_https': 7.5}")) << log;
  auto metrics = api().GetJson("/api/v1/jobs/" + name + "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status().ToString();
  EXPECT_TRUE(Holds(metrics->dump(), "via_https")) << metrics->dump(1);

  // Without the pin the CLI refuses the daemon's self-signed certificate, naming the remedy.
  testing::CmdResult untrusted =
      RunShell("cd '" + project_.string() + "' && TRAINYARD_URL='" + url + "' TRAINYARD_TOKEN='" +
               daemon_.token() + "' " + testing::TrainyardBinary() + " job list");
  EXPECT_NE(untrusted.exit_code, 0) << untrusted.output;
  EXPECT_TRUE(Holds(untrusted.output, "--pin")) << untrusted.output;
}

// pytorch, two processes on the one node: each task gets its rank, the world size and the
// master (the first host of the job's node list).
TEST_F(SlurmRunsTest, TwoTasksGetRanksAndMaster) {
  ASSERT_NO_FATAL_FAILURE(CreateCompute("hpc", 1));
  const std::string name = RunName("ranks");
  spec::RunRequest r = Request(
      name,
      "echo RANK=$RANK WORLD_SIZE=$WORLD_SIZE MASTER_ADDR=$MASTER_ADDR LOCAL_RANK=$LOCAL_RANK "
      "NODE_RANK=$NODE_RANK MASTER_PORT=$MASTER_PORT");
  r.distribution = spec::DistributionSpec{"pytorch", 2};
  ASSERT_FALSE(Submit(r).empty());
  json run = WaitEnd(name);
  ASSERT_EQ(run["status"], "Completed") << run.dump(1);
  EXPECT_EQ(run["exit_code"], 0);
  const std::string log = RunFile(name, kStdLog);
  for (int rank : {0, 1}) {
    const std::string line = "RANK=" + std::to_string(rank) + " WORLD_SIZE=2 MASTER_ADDR=" + host_ +
                             " LOCAL_RANK=" + std::to_string(rank) +
                             " NODE_RANK=0 MASTER_PORT=6105\n";
    EXPECT_TRUE(Holds(log, line)) << "missing: " << line << "--- log ---\n" << log;
  }
  EXPECT_EQ(NonEmptyLines(log), 2) << "two lines, one per task:\n" << log;
}

// Cancel: scancel, the task's container stopped and removed, the run Canceled by the user.
TEST_F(SlurmRunsTest, CancelStopsTheJobAndItsContainer) {
  ASSERT_NO_FATAL_FAILURE(CreateCompute("hpc", 1));
  const std::string name = RunName("cancel");
  ASSERT_FALSE(Submit(Request(name, "echo sleeping; sleep 300")).empty());
  json running = WaitUntil(
      name,
      [&](const json& r) {
        return r.value("status", "") == "Running" && Holds(RunFile(name, kStdLog), "sleeping\n");
      },
      "running with its container up");
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(running["slurm_job"].is_number_integer()) << running.dump(1);
  const std::int64_t job = running["slurm_job"];
  EXPECT_EQ(SlurmState(job), "RUNNING");
  EXPECT_TRUE(
      Holds(Containers("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + name),
            "trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + name));

  const auto canceled_at = Clock::now();
  auto answer = api().PostJson("/api/v1/jobs/" + name + "/cancel", json::object());
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  json run = WaitEnd(name, 20s);
  std::fprintf(stderr, "canceled after %lld ms\n",
               static_cast<long long>(
                   std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - canceled_at)
                       .count()));
  EXPECT_EQ(run["status"], "Canceled") << run.dump(1);
  EXPECT_EQ(run["failure_reason"], "canceled by user") << run.dump(1);
  EXPECT_NE(SlurmState(job), "RUNNING");
  std::string left =
      Containers("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + name);
  for (int i = 0; i < 100 && !left.empty(); ++i) {
    std::this_thread::sleep_for(100ms);
    left = Containers("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + name);
  }
  EXPECT_EQ(left, "") << "the run's container is still there 10 s after it was canceled";
}

// limits.timeout: trainyard stops the run at its exact limit; Slurm got the limit rounded up to
// whole minutes as a backstop.
TEST_F(SlurmRunsTest, TimeoutFailsTheRunAtItsLimit) {
  ASSERT_NO_FATAL_FAILURE(CreateCompute("hpc", 1));
  const std::string name = RunName("timeout");
  // It stops as soon as it is told to (SIGTERM), so the run ends right at its limit rather than
  // after the stop grace period.
  spec::RunRequest r =
      Request(name, "trap 'echo stopping; exit 143' TERM; echo sleeping; sleep 300 & wait");
  r.timeout_seconds = 3;
  ASSERT_FALSE(Submit(r).empty());
  json running = WaitStatus(name, "Running");
  ASSERT_FALSE(HasFailure());
  const auto running_at = Clock::now();
  ASSERT_TRUE(running["slurm_job"].is_number_integer()) << running.dump(1);
  const std::int64_t job = running["slurm_job"];
  const testing::CmdResult shown = RunShell("scontrol show job " + std::to_string(job));
  EXPECT_TRUE(Holds(shown.output, "TimeLimit=00:01:00")) << shown.output;

  json run = WaitEnd(name, 20s);
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - running_at);
  std::fprintf(stderr, "ended %lld ms after Running was seen\n",
               static_cast<long long>(took.count()));
  EXPECT_EQ(run["status"], "Failed") << run.dump(1);
  EXPECT_EQ(run["failure_reason"], "timed out after 3 s") << run.dump(1);
  // Running is seen a little after the daemon starts the clock: the run cannot end much
  // before 3 s after it, and should end soon after (not at Slurm's 1 min limit).
  EXPECT_GE(took, 2500ms) << "stopped before its 3 s limit";
  EXPECT_LT(took, 8s) << "stopped long after its 3 s limit";
  EXPECT_TRUE(StartsWith(RunFile(name, kStdLog), "sleeping\n")) << RunFile(name, kStdLog);
  EXPECT_EQ(RunFile(name, kStdLog), RunFile(name, "slurm/node-0.log"))
      << "the run's log should hold all its node wrote";
  EXPECT_NE(SlurmState(job), "RUNNING");
}

// A job waiting in Slurm: the run is Queued with Slurm's reason, and the compute shows the job;
// once the node is free it runs to its end.
TEST_F(SlurmRunsTest, PendingReasonIsVisible) {
  ASSERT_NO_FATAL_FAILURE(CreateCompute("hpc", 1));
  const testing::CmdResult blocker = RunShell(std::string("sbatch --parsable -p ") + kPartition +
                                              " --exclusive --job-name=ty-blocker-" + suffix_ +
                                              " --output=/dev/null --time=5 --wrap 'sleep 120'");
  ASSERT_EQ(blocker.exit_code, 0) << blocker.output;
  const std::string blocker_id(Trim(Split(std::string(Trim(blocker.output)), ';')[0]));
  blockers_.push_back(blocker_id);
  const auto blocker_deadline = Clock::now() + 30s;
  while (SlurmState(std::stoll(blocker_id)) != "RUNNING" && Clock::now() < blocker_deadline) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(SlurmState(std::stoll(blocker_id)), "RUNNING") << "the blocker did not start";

  const std::string name = RunName("pending");
  ASSERT_FALSE(Submit(Request(name, "echo ran after the blocker")).empty());
  json queued = WaitUntil(
      name,
      [](const json& r) {
        return r.value("status", "") == "Queued" &&
               Holds(r.value("wait_reason", ""), "Slurm job") && r["slurm_job"].is_number();
      },
      "queued in Slurm", 60s);
  ASSERT_FALSE(HasFailure());
  const std::string why = queued["wait_reason"];
  const std::int64_t job = queued["slurm_job"];
  EXPECT_TRUE(Holds(why, "Slurm job " + std::to_string(job) + " pending")) << why;
  EXPECT_TRUE(Holds(why, "Resources") || Holds(why, "Priority")) << why;

  testing::CmdResult shown =
      testing::RunTrainyard(project_.string(), layout_.root.string(), "compute show hpc -o json");
  ASSERT_EQ(shown.exit_code, 0) << shown.output;
  json compute = json::parse(shown.output, nullptr, false);
  ASSERT_TRUE(compute.is_object()) << shown.output;
  ASSERT_TRUE(compute.contains("slurm")) << compute.dump(1);
  const json& slurm = compute["slurm"];
  EXPECT_EQ(slurm["partition"], kPartition);
  bool node_listed = false;
  for (const auto& n : slurm["nodes"]) node_listed |= n.value("name", "") == host_;
  EXPECT_TRUE(node_listed) << slurm.dump(1);
  bool job_listed = false;
  for (const auto& j : slurm["jobs"]) {
    if (j.value("run", "") == name) {
      job_listed = true;
      EXPECT_EQ(j["job_id"], job);
      EXPECT_EQ(j["state"], "PENDING");
      EXPECT_EQ(j["name"], "trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + name);
    }
  }
  EXPECT_TRUE(job_listed) << slurm.dump(1);

  ASSERT_EQ(RunShell("scancel " + blocker_id).exit_code, 0);
  json run = WaitEnd(name, 60s);
  EXPECT_EQ(run["status"], "Completed") << run.dump(1);
  EXPECT_EQ(run["wait_reason"], "") << run.dump(1);
  EXPECT_EQ(RunFile(name, kStdLog), "ran after the blocker\n");
}

// kill -9 of the daemon while its run runs in Slurm: the new daemon finds the same job again
// and the run completes with every line of its log once.
TEST_F(SlurmRunsTest, DaemonKilledDuringASlurmRunReattaches) {
  ASSERT_NO_FATAL_FAILURE(CreateCompute("hpc", 1));
  const std::string name = RunName("reattach");
  ASSERT_FALSE(
      Submit(Request(name, "for i in $(seq 1 16); do echo line $i; sleep 0.5; done")).empty());
  json running = WaitUntil(
      name,
      [&](const json& r) {
        return r.value("status", "") == "Running" && Holds(RunFile(name, kStdLog), "line 2\n");
      },
      "running and logging");
  ASSERT_FALSE(HasFailure());
  const json job = running["slurm_job"];
  ASSERT_TRUE(job.is_number_integer()) << running.dump(1);

  daemon_.Kill();
  std::this_thread::sleep_for(1s);  // the job goes on without the daemon
  EXPECT_EQ(SlurmState(job.get<std::int64_t>()), "RUNNING") << "the job should outlive the daemon";
  ASSERT_NO_FATAL_FAILURE(daemon_.Start(layout_.root));

  json run = WaitEnd(name, 60s);
  EXPECT_EQ(run["status"], "Completed") << run.dump(1);
  EXPECT_EQ(run["exit_code"], 0);
  EXPECT_EQ(run["slurm_job"], job) << run.dump(1);
  EXPECT_EQ(RunFile(name, kStdLog), Lines(16)) << "every line once, in order";
  int running_transitions = 0;
  for (const auto& t : run.value("transitions", json::array())) {
    running_transitions += t.value("status", "") == "Running";
  }
  EXPECT_EQ(running_transitions, 1) << run.dump(1);
}

// What could never run is refused up front, saying why.
TEST_F(SlurmRunsTest, FailFast) {
  ASSERT_NO_FATAL_FAILURE(CreateCompute("hpc2", 2));
  const std::string name = RunName("wide");
  spec::RunRequest r = Request(name, "echo wide", "hpc2");
  r.instance_count = 2;
  auto wide = api().Request("POST", "/api/v1/jobs", r.ToJson(spec::SecretMode::kPlain).dump());
  ASSERT_TRUE(wide.ok()) << wide.status().ToString();
  EXPECT_EQ(wide->status, 400) << wide->body;
  EXPECT_TRUE(Holds(wide->body, "partition debug")) << wide->body;
  EXPECT_TRUE(Holds(wide->body, "instance_count")) << wide->body;
  auto gone = api().Request("GET", "/api/v1/jobs/" + name);
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->status, 404) << "a refused job should not be recorded: " << gone->body;

  json nope = {{"name", "nope"}, {"type", "slurm"}, {"partition", "nope"}, {"max_nodes", 1}};
  auto refused = api().Request("POST", "/api/v1/computes", nope.dump());
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  EXPECT_EQ(refused->status, 400) << refused->body;
  EXPECT_TRUE(Holds(refused->body, "'nope'")) << refused->body;
  EXPECT_TRUE(Holds(refused->body, "partitions: debug")) << refused->body;
  auto computes = api().GetJson("/api/v1/computes");
  ASSERT_TRUE(computes.ok());
  for (const auto& c : *computes) EXPECT_NE(c.value("name", ""), "nope");
}

}  // namespace
}  // namespace trainyard

// The run lifecycle against the real Docker engine and the private registry: an in-process
// daemon on port 0 with a temp workspace, driven through its REST API.

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/support/counting_engine.h"
#include "tests/support/test_daemon.h"
#include "tests/support/test_env.h"
#include "trainyard/api/daemon.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/docker/http_engine.h"
#include "trainyard/sched/scheduler.h"
#include "trainyard/spec/definition.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

class RunIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TY_REQUIRE_SERVICE(testing::DockerAvailable(), "dockerd at /var/run/docker.sock");
    root_ = fs::temp_directory_path() / ("ty-it-" + RandomHex(4));
    layout_.root = root_;
    api::DaemonOptions opts = testing::TestDaemonOptions(root_);
    opts.engine = &counting_;
    auto d = api::Daemon::Start(opts);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    daemon_ = std::move(d).value();
    client_ = std::make_unique<HttpClient>(daemon_->url(), daemon_->token());
  }

  void TearDown() override {
    daemon_.reset();
    for (const auto& tag : counting_.build_tags()) (void)real_.RemoveImage(tag, true);
    (void)RemoveTree(root_);
  }

  // Writes files into a fresh folder and snapshots it into the workspace.
  std::string Snapshot(const std::map<std::string, std::string>& files) {
    fs::path dir = root_ / ("src-" + RandomHex(4));
    for (const auto& [p, content] : files) {
      EXPECT_TRUE(MakeDirs((dir / p).parent_path()).ok());
      EXPECT_TRUE(WriteFileAtomic(dir / p, content).ok());
    }
    return SnapshotDir(dir);
  }
  std::string SnapshotDir(const fs::path& dir) {
    cas::ObjectStore objects(layout_.ObjectsDir());
    cas::Snapshotter snap(objects, layout_.SnapshotsDir());
    auto r = snap.Snapshot(dir, {});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->id : "";
  }

  static json Job(const std::string& command, const std::string& image = "python:3.11-slim") {
    spec::RunRequest r;
    r.experiment_name = "integration";
    r.command = command;
    spec::EnvironmentDefinition env;
    env.image = image;
    env.user_managed_dependencies = true;
    r.environment = env;
    return r.ToJson(spec::SecretMode::kPlain);
  }

  std::string Submit(const json& job) {
    auto run = client_->PostJson("/api/v1/jobs", job);
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return run.ok() ? (*run)["name"].get<std::string>() : "";
  }

  json Get(const std::string& name) {
    auto run = client_->GetJson("/api/v1/jobs/" + name);
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return run.ok() ? *run : json::object();
  }

  json WaitFor(const std::string& name, const std::string& status = "",
               std::chrono::seconds timeout = 300s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    json run;
    while (std::chrono::steady_clock::now() < deadline) {
      run = Get(name);
      std::string s = run.value("status", "");
      if (status.empty() ? (s == "Completed" || s == "Failed" || s == "Canceled") : s == status) {
        return run;
      }
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "run " << name << " stuck in " << run.value("status", "?");
    return run;
  }

  std::string ReadRunFile(const std::string& name, const std::string& rel) {
    auto r = ReadFile(layout_.RunDir(name) / rel);
    return r.ok() ? *r : "";
  }

  fs::path root_;
  WorkspaceLayout layout_;
  docker::HttpEngine real_;
  testing::CountingEngine counting_{real_};
  std::unique_ptr<api::Daemon> daemon_;
  std::unique_ptr<HttpClient> client_;
};

TEST_F(RunIntegrationTest, RunSucceedsWritesOutputsAndStreamsLogsLive) {
  json job = Job("python train.py --epochs ${{inputs.epochs}}");
  job["snapshot_id"] =
      Snapshot({{"train.py",
                 "import os, sys, time\n"
                 "print('first line', flush=True)\n"
                 "time.sleep(3)\n"
                 "print('run id', os.environ['TRAINYARD_RUN_ID'])\n"
                 "print('azure alias', os.environ['AZUREML_RUN_ID'])\n"
                 "print('epochs', sys.argv[2], os.environ['AZURE_ML_INPUT_epochs'])\n"
                 "print('to stderr', file=sys.stderr)\n"
                 "open('outputs/model.txt', 'w').write('weights')\n"
                 "open('logs/extra.log', 'w').write('x')\n"}});
  job["inputs"] = {{"epochs", {{"kind", "literal"}, {"value", "4"}}}};
  std::string name = Submit(job);
  ASSERT_FALSE(name.empty());

  // The first line arrives through the stream while the run still runs.
  std::uint64_t log_offset = 0;
  std::string status, seen_log;
  auto deadline = std::chrono::steady_clock::now() + 120s;
  while (seen_log.find("first line") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    auto res = client_->GetJson("/api/v1/jobs/" + name + "/stream?log_offset=" +
                                std::to_string(log_offset) + "&status=" + status + "&wait_ms=5000");
    ASSERT_TRUE(res.ok()) << res.status().ToString();
    seen_log += (*res)["log"].get<std::string>();
    log_offset = (*res)["log_offset"].get<std::uint64_t>();
    status = (*res)["status"].get<std::string>();
  }
  EXPECT_NE(seen_log.find("first line"), std::string::npos);
  EXPECT_EQ(status, "Running") << "the first line must stream before the run ends";

  json done = WaitFor(name);
  ASSERT_EQ(done["status"], "Completed") << done.dump(2);
  EXPECT_EQ(done["exit_code"], 0);
  std::string log = ReadRunFile(name, "user_logs/std_log.txt");
  EXPECT_NE(log.find("run id " + name), std::string::npos) << log;
  EXPECT_NE(log.find("azure alias " + name), std::string::npos);
  EXPECT_NE(log.find("epochs 4 4"), std::string::npos);
  EXPECT_NE(log.find("to stderr"), std::string::npos);
  EXPECT_EQ(ReadRunFile(name, "outputs/model.txt"), "weights");

  auto files = client_->GetJson("/api/v1/jobs/" + name + "/files");
  ASSERT_TRUE(files.ok());
  std::vector<std::string> paths;
  for (const auto& f : *files) paths.push_back(f["path"]);
  EXPECT_NE(std::find(paths.begin(), paths.end(), "outputs/model.txt"), paths.end());
  EXPECT_NE(std::find(paths.begin(), paths.end(), "logs/extra.log"), paths.end());
  EXPECT_NE(std::find(paths.begin(), paths.end(), "user_logs/std_log.txt"), paths.end());
  auto body = client_->Request("GET", "/api/v1/jobs/" + name + "/files/outputs/model.txt");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(body->body, "weights");
  auto escape = client_->Request(
      "GET", "/api/v1/jobs/" + name + "/files/outputs/..%2F..%2F..%2Ftrainyard.db");
  ASSERT_TRUE(escape.ok());
  EXPECT_GE(escape->status, 400);
  // The container is gone once the run ended.
  auto gone = real_.InspectContainer("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) +
                                     "-" + name);
  EXPECT_EQ(gone.status().code(), StatusCode::kNotFound);
}

TEST_F(RunIntegrationTest, InputsAreMountedReadOnlyAndNamedOutputsCollected) {
  fs::path data = root_ / "data";
  ASSERT_TRUE(MakeDirs(data).ok());
  ASSERT_TRUE(WriteFileAtomic(data / "train.csv", "a,b\n1,2\n").ok());
  ASSERT_TRUE(WriteFileAtomic(root_ / "labels.txt", "cat\ndog\n").ok());
  json job =
      Job("cat ${{inputs.data}}/train.csv ${{inputs.labels}} && "
          "(touch ${{inputs.data}}/x 2>/dev/null && echo WRITABLE || echo READ-ONLY) && "
          "echo $AZURE_ML_INPUT_data && echo weights > ${{outputs.model}}/w.bin");
  job["inputs"] = {{"data", {{"kind", "uri_folder"}, {"path", data.string()}}},
                   {"labels", {{"kind", "uri_file"}, {"path", (root_ / "labels.txt").string()}}}};
  job["outputs"] = {{"model", {{"type", "uri_folder"}}}};
  std::string name = Submit(job);
  json done = WaitFor(name);
  ASSERT_EQ(done["status"], "Completed") << ReadRunFile(name, "user_logs/std_log.txt");
  std::string log = ReadRunFile(name, "user_logs/std_log.txt");
  EXPECT_NE(log.find("1,2"), std::string::npos) << log;
  EXPECT_NE(log.find("dog"), std::string::npos) << log;
  EXPECT_NE(log.find("READ-ONLY"), std::string::npos) << log;
  EXPECT_NE(log.find("/trainyard/inputs/data"), std::string::npos) << log;
  EXPECT_EQ(ReadRunFile(name, "outputs/model/w.bin"), "weights\n");
  EXPECT_FALSE(fs::exists(data / "x"));
}

TEST_F(RunIntegrationTest, LinksAndPipesPlantedByARunAreNeverFollowed) {
  // The run's ./logs and ./outputs are writable from the container; the daemon serves from
  // them. A run that plants links to host files or a FIFO must get nothing out of it.
  const std::string secret = "TOPSECRET-" + RandomHex(4);
  ASSERT_TRUE(WriteFileAtomic(root_ / "host-secret.txt", secret).ok());
  const std::string target = (root_ / "host-secret.txt").string();
  std::string name = Submit(Job("ln -sf " + target + " logs/image_build.log && ln -s " + target +
                                " outputs/leak.txt && mkfifo logs/pipe && echo planted"));
  json done = WaitFor(name);
  ASSERT_EQ(done["status"], "Completed") << ReadRunFile(name, "user_logs/std_log.txt");
  auto stream = client_->GetJson("/api/v1/jobs/" + name + "/stream?wait_ms=0");
  ASSERT_TRUE(stream.ok()) << stream.status().ToString();
  EXPECT_EQ(stream->dump().find(secret), std::string::npos) << stream->dump();
  EXPECT_TRUE((*stream)["done"].get<bool>());
  auto files = client_->GetJson("/api/v1/jobs/" + name + "/files");
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(files->dump().find("leak.txt"), std::string::npos) << files->dump();
  EXPECT_EQ(files->dump().find("pipe"), std::string::npos) << files->dump();
  auto leak = client_->Request("GET", "/api/v1/jobs/" + name + "/files/outputs/leak.txt");
  ASSERT_TRUE(leak.ok());
  EXPECT_EQ(leak->status, 404);
  EXPECT_EQ(leak->body.find(secret), std::string::npos);
  auto pipe = client_->Request("GET", "/api/v1/jobs/" + name + "/files/logs/pipe", "",
                               "application/json", 5000);
  ASSERT_TRUE(pipe.ok()) << "a FIFO must not hang the server";
  EXPECT_EQ(pipe->status, 404);
}

TEST_F(RunIntegrationTest, NonZeroExitFailsWithItsCode) {
  std::string name = Submit(Job("echo about to fail; exit 3"));
  json done = WaitFor(name);
  EXPECT_EQ(done["status"], "Failed");
  EXPECT_EQ(done["failure_reason"], "script exited with code 3");
  EXPECT_EQ(done["exit_code"], 3);
  EXPECT_NE(ReadRunFile(name, "user_logs/std_log.txt").find("about to fail"), std::string::npos);
}

TEST_F(RunIntegrationTest, TimeoutKillsTheRun) {
  json job = Job("echo started; sleep 300");
  job["timeout_seconds"] = 2;
  auto start = std::chrono::steady_clock::now();
  std::string name = Submit(job);
  json done = WaitFor(name);
  EXPECT_EQ(done["status"], "Failed");
  EXPECT_EQ(done["failure_reason"], "timed out after 2 s");
  // SIGTERM reaches the script (the engine's init forwards it), so the 10 s grace is not used up.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 9s);
}

TEST_F(RunIntegrationTest, CancelStopsTheContainer) {
  std::string name = Submit(Job("echo waiting; sleep 300"));
  WaitFor(name, "Running", 120s);
  auto cancel_start = std::chrono::steady_clock::now();
  auto res = client_->PostJson("/api/v1/jobs/" + name + "/cancel", json::object());
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  json done = WaitFor(name, "", 60s);
  EXPECT_EQ(done["status"], "Canceled");
  EXPECT_LT(std::chrono::steady_clock::now() - cancel_start, 7s) << "SIGTERM must stop the script";
  EXPECT_EQ(done["failure_reason"], "canceled by user");
  bool saw_cancel_requested = false;
  for (const auto& t : done["transitions"])
    saw_cancel_requested |= t["status"] == "CancelRequested";
  EXPECT_TRUE(saw_cancel_requested);
  EXPECT_EQ(
      real_
          .InspectContainer("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + name)
          .status()
          .code(),
      StatusCode::kNotFound);
  auto again = client_->PostJson("/api/v1/jobs/" + name + "/cancel", json::object());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(RunIntegrationTest, UnchangedEnvironmentIsNeverRebuilt) {
  const std::string nonce = RandomHex(8);
  json job = Job("cat /built-by-trainyard");
  job["environment"]["image"] = "";
  job["environment"]["dockerfile"] =
      "FROM debian:bookworm-slim\nRUN echo " + nonce + " > /built-by-trainyard\n";
  std::string first = Submit(job);
  ASSERT_EQ(WaitFor(first)["status"], "Completed");
  EXPECT_EQ(counting_.builds(), 1);
  EXPECT_NE(ReadRunFile(first, "user_logs/std_log.txt").find(nonce), std::string::npos);
  EXPECT_NE(ReadRunFile(first, "logs/image_build.log").find("Building image"), std::string::npos);

  std::string second = Submit(job);
  json done = WaitFor(second);
  ASSERT_EQ(done["status"], "Completed");
  EXPECT_EQ(counting_.builds(), 1) << "a resubmitted unchanged environment made a build call";
  EXPECT_NE(ReadRunFile(second, "logs/image_build.log").find("Using cached image"),
            std::string::npos);
  EXPECT_EQ(done["image"], Get(first)["image"]);
}

TEST_F(RunIntegrationTest, PipChangeRebuildsOnlyTheDependencyLayer) {
  // A base image with a local wheelhouse: pip installs without any index.
  fs::path ctx = root_ / "ctx";
  ASSERT_TRUE(MakeDirs(ctx / "wheels").ok());
  for (const char* pkg : {"tyalpha", "tybeta"}) {
    std::string cmd = "python3 " TRAINYARD_SOURCE_DIR "/tests/fixtures/make_wheel.py " +
                      (ctx / "wheels").string() + " " + pkg + " 1.0 >/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  ASSERT_TRUE(WriteFileAtomic(ctx / "Dockerfile",
                              "FROM python:3.11-slim\nCOPY wheels /wheels\n"
                              "ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels\n# " +
                                  RandomHex(8) + "\n")
                  .ok());
  const std::string context = SnapshotDir(ctx);

  json job = Job("python -c 'import tyalpha; print(tyalpha.VALUE)'");
  job["environment"]["image"] = "";
  job["environment"]["build_context"] = context;
  job["environment"]["user_managed_dependencies"] = false;
  job["environment"]["pip_requirements"] = {"tyalpha"};
  std::string first = Submit(job);
  json done = WaitFor(first);
  ASSERT_EQ(done["status"], "Completed")
      << done.dump(2) << ReadRunFile(first, "logs/image_build.log");
  EXPECT_NE(ReadRunFile(first, "user_logs/std_log.txt").find("tyalpha-1.0"), std::string::npos);
  ASSERT_EQ(counting_.builds(), 2);  // the base, then the dependency layer
  const std::string base_tag = counting_.build_tags()[0];

  job["environment"]["pip_requirements"] = {"tyalpha", "tybeta"};
  job["command"] = "python -c 'import tybeta; print(tybeta.VALUE)'";
  std::string second = Submit(job);
  done = WaitFor(second);
  ASSERT_EQ(done["status"], "Completed") << ReadRunFile(second, "logs/image_build.log");
  EXPECT_NE(ReadRunFile(second, "user_logs/std_log.txt").find("tybeta-1.0"), std::string::npos);
  ASSERT_EQ(counting_.builds(), 3) << "only the dependency layer may be rebuilt";
  EXPECT_NE(counting_.build_tags()[2], base_tag);
  // The new layer is built FROM the unchanged base.
  EXPECT_NE(counting_.build_dockerfiles()[2].find("FROM " + base_tag), std::string::npos);
}

// A compute's node size is enforced by the engine: the container's own cgroup says so (v2 or
// v1 files, whichever the machine has).
TEST_F(RunIntegrationTest, NodeSizeIsTheContainersCgroupLimit) {
  auto compute = client_->PostJson("/api/v1/computes", json{{"name", "small"},
                                                            {"type", "docker"},
                                                            {"max_nodes", 1},
                                                            {"node_cpus", 0.5},
                                                            {"node_memory_bytes", 64 << 20}});
  ASSERT_TRUE(compute.ok()) << compute.status().ToString();
  json job =
      Job("echo mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || "
          "cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
          "echo cpu=$(cut -d' ' -f1 /sys/fs/cgroup/cpu.max 2>/dev/null || "
          "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)");
  job["compute"] = "small";
  std::string name = Submit(job);
  json done = WaitFor(name);
  ASSERT_EQ(done["status"], "Completed") << done.dump();
  const std::string log = ReadRunFile(name, "user_logs/std_log.txt");
  EXPECT_NE(log.find("mem=67108864"), std::string::npos) << log;
  EXPECT_NE(log.find("cpu=50000"), std::string::npos) << log;  // half of a 100 ms period
}

// The issue's multi-node test: a 2-node PyTorch-style job on a 2-node compute whose ranks
// rendezvous over TCP at MASTER_ADDR:MASTER_PORT with only the standard library, on the run's own
// network, and each print their rank.
TEST_F(RunIntegrationTest, TwoNodeRanksRendezvousAtTheMaster) {
  auto compute = client_->PostJson("/api/v1/computes",
                                   json{{"name", "pair"}, {"type", "docker"}, {"max_nodes", 2}});
  ASSERT_TRUE(compute.ok()) << compute.status().ToString();
  const std::string script = R"py(
import os, socket, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
if rank == 0:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(world)
    peers = []
    for _ in range(world - 1):
        c, _ = s.accept()
        peers.append(int(c.recv(16).decode()))
        c.sendall(b"ok")
    print(f"rank 0 of {world}: met ranks {sorted(peers)}", flush=True)
else:
    for _ in range(600):
        try:
            c = socket.create_connection((addr, port), timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    c.sendall(str(rank).encode())
    assert c.recv(2) == b"ok"
    print(f"rank {rank} of {world}: joined {addr}:{port}", flush=True)
)py";
  json job = Job("python rendezvous.py");
  job["snapshot_id"] = Snapshot({{"rendezvous.py", script}});
  job["compute"] = "pair";
  job["instance_count"] = 2;
  job["distribution"] = {{"type", "pytorch"}, {"process_count_per_instance", 1}};
  std::string name = Submit(job);
  json done = WaitFor(name, "", 180s);
  ASSERT_EQ(done["status"], "Completed") << done.dump() << "\n"
                                         << ReadRunFile(name, "user_logs/std_log.txt");
  EXPECT_NE(ReadRunFile(name, "user_logs/std_log_node_0.txt").find("rank 0 of 2: met ranks [1]"),
            std::string::npos)
      << ReadRunFile(name, "user_logs/std_log.txt");
  EXPECT_NE(
      ReadRunFile(name, "user_logs/std_log_node_1.txt").find("rank 1 of 2: joined node-0:6105"),
      std::string::npos)
      << ReadRunFile(name, "user_logs/std_log.txt");
  // Containers and the run's network are gone.
  EXPECT_EQ(real_
                .InspectContainer("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" +
                                  name + "-0")
                .status()
                .code(),
            StatusCode::kNotFound);
  EXPECT_EQ(
      real_.RemoveNetwork("trainyard-" + sched::Scheduler::WorkspaceId(layout_.root) + "-" + name)
          .code(),
      StatusCode::kOk);
}

// A two-worker TensorFlow job as the cloud service writes it: each container gets TF_CONFIG
// naming both workers and its own task, and the workers meet at the addresses it gives.
TEST_F(RunIntegrationTest, TwoTensorFlowWorkersMeetThroughTfConfig) {
  auto compute = client_->PostJson("/api/v1/computes",
                                   json{{"name", "tfpair"}, {"type", "docker"}, {"max_nodes", 2}});
  ASSERT_TRUE(compute.ok()) << compute.status().ToString();
  const std::string script = R"py(
import json, os, socket, time
tf = json.loads(os.environ["TF_CONFIG"])
workers, me = tf["cluster"]["worker"], tf["task"]
print("TF_CONFIG", json.dumps(tf, sort_keys=True), flush=True)
host, port = workers[0].rsplit(":", 1)
if me["index"] == 0:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen(1)
    c, _ = s.accept()
    print("chief met worker", c.recv(8).decode(), flush=True)
else:
    for _ in range(600):
        try:
            c = socket.create_connection((host, int(port)), timeout=2)
            break
        except OSError:
            time.sleep(0.1)
    c.sendall(str(me["index"]).encode())
)py";
  json job = Job("python tf.py");
  job["snapshot_id"] = Snapshot({{"tf.py", script}});
  job["compute"] = "tfpair";
  job["instance_count"] = 2;
  job["distribution"] = {{"type", "tensorflow"}, {"process_count_per_instance", 1}};
  std::string name = Submit(job);
  json done = WaitFor(name, "", 180s);
  ASSERT_EQ(done["status"], "Completed") << done.dump() << "\n"
                                         << ReadRunFile(name, "user_logs/std_log.txt");
  const std::string node0 = ReadRunFile(name, "user_logs/std_log_node_0.txt");
  const std::string node1 = ReadRunFile(name, "user_logs/std_log_node_1.txt");
  const std::string cluster = R"("cluster": {"worker": ["node-0:2222", "node-1:2222"]})";
  EXPECT_NE(node0.find(cluster), std::string::npos) << node0;
  EXPECT_NE(node0.find(R"("task": {"index": 0, "type": "worker"})"), std::string::npos) << node0;
  EXPECT_NE(node1.find(R"("task": {"index": 1, "type": "worker"})"), std::string::npos) << node1;
  EXPECT_NE(node0.find("chief met worker 1"), std::string::npos) << node0;
}

// A datastore input in a container: fetched into the data cache and mounted read-only there.
TEST_F(RunIntegrationTest, DatastoreInputIsMountedReadOnlyInTheContainer) {
  const fs::path blob = layout_.WorkspaceBlobStoreDir() / "sets" / "iris";
  ASSERT_TRUE(MakeDirs(blob).ok());
  ASSERT_TRUE(WriteFileAtomic(blob / "iris.csv", "5.1,1.4\n").ok());
  json job =
      Job("cat ${{inputs.data}}/iris.csv && echo $AZURE_ML_INPUT_data && "
          "(touch ${{inputs.data}}/x 2>/dev/null && echo WRITABLE || echo READ-ONLY)");
  job["inputs"] = {{"data",
                    {{"kind", "uri_folder"},
                     {"path", "azureml://datastores/workspaceblobstore/paths/sets/iris"},
                     {"mode", "download"}}}};
  std::string name = Submit(job);
  json done = WaitFor(name);
  ASSERT_EQ(done["status"], "Completed") << done.dump() << "\n"
                                         << ReadRunFile(name, "logs/image_build.log");
  const std::string log = ReadRunFile(name, "user_logs/std_log.txt");
  EXPECT_NE(log.find("5.1,1.4"), std::string::npos) << log;
  EXPECT_NE(log.find("/trainyard/inputs/data"), std::string::npos) << log;
  EXPECT_NE(log.find("READ-ONLY"), std::string::npos) << log;
  EXPECT_NE(ReadRunFile(name, "logs/image_build.log")
                .find("input 'data': 1 file from datastore workspaceblobstore"),
            std::string::npos);
}

class RegistryIntegrationTest : public RunIntegrationTest {
 protected:
  void SetUp() override {
    RunIntegrationTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto reg = testing::LoadRegistryInfo();
    TY_REQUIRE_SERVICE(reg.has_value(), "private registry (scripts/registry.sh)");
    reg_ = *reg;
    (void)real_.RemoveImage(reg_.image, true);  // the run must pull it
  }

  json RegistryJob(const std::string& password) {
    json job = Job("python3 -c 'print(\"pulled and ran\")'", reg_.image);
    job["environment"]["image_registry"] = {
        {"address", reg_.address}, {"username", reg_.user}, {"password", password}};
    return job;
  }

  testing::RegistryInfo reg_;
};

TEST_F(RegistryIntegrationTest, PullsWithGoodCredentials) {
  std::string name = Submit(RegistryJob(reg_.password));
  json done = WaitFor(name);
  ASSERT_EQ(done["status"], "Completed")
      << done.dump(2) << ReadRunFile(name, "logs/image_build.log");
  EXPECT_EQ(counting_.pulls(), 1);
  EXPECT_NE(ReadRunFile(name, "user_logs/std_log.txt").find("pulled and ran"), std::string::npos);
  EXPECT_EQ(ReadRunFile(name, "logs/image_build.log").find(reg_.password), std::string::npos);
}

TEST_F(RegistryIntegrationTest, HonoursTheUsersDockerLogin) {
  // No credentials in the environment: the user's Docker config (as `docker login` writes it)
  // provides them.
  daemon_.reset();
  fs::path config = root_ / "docker-config" / "config.json";
  ASSERT_TRUE(MakeDirs(config.parent_path()).ok());
  json auths{
      {"auths", {{reg_.address, {{"auth", Base64Encode(reg_.user + ":" + reg_.password)}}}}}};
  ASSERT_TRUE(WriteFileAtomic(config, auths.dump(), 0600).ok());
  api::DaemonOptions opts;
  opts.workspace = root_;
  opts.port = 0;
  opts.engine = &counting_;
  opts.write_server_file = false;
  opts.docker_config = config;
  auto d = api::Daemon::Start(opts);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  daemon_ = std::move(d).value();
  client_ = std::make_unique<HttpClient>(daemon_->url(), daemon_->token());
  std::string name = Submit(Job("python3 -c 'print(\"via docker login\")'", reg_.image));
  json done = WaitFor(name);
  ASSERT_EQ(done["status"], "Completed")
      << done.dump(2) << ReadRunFile(name, "logs/image_build.log");
  EXPECT_EQ(counting_.pulls(), 1);
}

TEST_F(RegistryIntegrationTest, BadCredentialsFailClearlyAndLeakNothing) {
  const std::string wrong = "wrong-" + RandomHex(6);
  std::string name = Submit(RegistryJob(wrong));
  json done = WaitFor(name);
  ASSERT_EQ(done["status"], "Failed");
  const std::string reason = done["failure_reason"];
  EXPECT_TRUE(StartsWith(reason, "unauthorized: pulling " + reg_.image + " from " + reg_.address))
      << reason;
  // The secret appears nowhere: API answers, logs, the database.
  std::vector<std::string> places = {done.dump(), ReadRunFile(name, "logs/image_build.log"),
                                     ReadRunFile(name, "user_logs/std_log.txt")};
  auto envs = client_->GetJson("/api/v1/environments");
  ASSERT_TRUE(envs.ok());
  places.push_back(envs->dump());
  auto list = client_->GetJson("/api/v1/jobs");
  ASSERT_TRUE(list.ok());
  places.push_back(list->dump());
  daemon_.reset();  // closes the database, checkpointing its WAL
  for (const char* f : {"trainyard.db", "trainyard.db-wal"}) {
    auto b = ReadFile(root_ / f);
    if (b.ok()) places.push_back(*b);
  }
  for (const auto& p : places) {
    EXPECT_EQ(p.find(wrong), std::string::npos) << "the password leaked into: " << p.substr(0, 300);
  }
}

}  // namespace
}  // namespace trainyard

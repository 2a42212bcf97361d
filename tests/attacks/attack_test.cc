// What trainyard withstands: each case is an attack from the hardening review (issue 12,
// docs/security.md), carried out for real. Code runs as a plain job in a real container of the
// real Docker engine, next to a real daemon, with only what any run gets: its run token and the
// daemon's socket. Each case fails on a daemon without the defence it names.

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "tests/support/test_daemon.h"
#include "tests/support/test_env.h"
#include "trainyard/api/daemon.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/spec/definition.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// The in-run half every attack shares: HTTP to the daemon over the run's socket with the run's
// token, as any script could do without the SDK. `call(method, tail, body)` answers
// (status, body) for /api/v1/jobs/<this run><tail>.
constexpr const char* kRunHttp = R"PY(
import os, socket, sys
RUN = os.environ["TRAINYARD_RUN_ID"]
TOKEN = os.environ["TRAINYARD_RUN_TOKEN"]
SOCK = os.environ["TRAINYARD_TRACKING_URL"][len("unix://"):]

def call(method, tail, body=b"", token=TOKEN, run=RUN):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(SOCK)
    head = "%s /api/v1/jobs/%s%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" \
           "Content-Length: %d\r\nConnection: close\r\n\r\n" % (method, run, tail, token, len(body))
    s.sendall(head.encode() + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data.partition(b"\r\n\r\n")[2]
)PY";

class AttackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TY_REQUIRE_SERVICE(testing::DockerAvailable(), "dockerd at /var/run/docker.sock");
    root_ = fs::temp_directory_path() / ("ty-attack-" + RandomHex(4));
    layout_.root = root_;
    api::DaemonOptions opts = testing::TestDaemonOptions(root_);
    opts.write_server_file = true;  // as in real use: server.json holds the workspace token
    auto d = api::Daemon::Start(opts);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    daemon_ = std::move(d).value();
    client_ = std::make_unique<HttpClient>(daemon_->url(), daemon_->token());
  }
  void TearDown() override {
    daemon_.reset();
    (void)RemoveTree(root_);
  }

  // Submits `script` (Python, after kRunHttp) as train.py of a plain job and waits for its end.
  json RunScript(const std::string& script, int timeout_s = 240) {
    fs::path dir = root_ / ("src-" + RandomHex(4));
    EXPECT_TRUE(MakeDirs(dir).ok());
    EXPECT_TRUE(WriteFileAtomic(dir / "train.py", std::string(kRunHttp) + script).ok());
    cas::ObjectStore objects(layout_.ObjectsDir());
    cas::Snapshotter snap(objects, layout_.SnapshotsDir());
    auto snapshot = snap.Snapshot(dir, {});
    EXPECT_TRUE(snapshot.ok()) << snapshot.status().ToString();
    spec::RunRequest r;
    r.experiment_name = "attacks";
    r.command = "python3 train.py";
    spec::EnvironmentDefinition env;
    env.image = "python:3.11-slim";
    env.user_managed_dependencies = true;
    r.environment = env;
    json job = r.ToJson(spec::SecretMode::kPlain);
    job["snapshot_id"] = snapshot.ok() ? snapshot->id : "";
    auto run = client_->PostJson("/api/v1/jobs", job);
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    if (!run.ok()) return json::object();
    const std::string name = (*run)["name"];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    json now;
    while (std::chrono::steady_clock::now() < deadline) {
      auto got = client_->GetJson("/api/v1/jobs/" + name);
      if (got.ok()) now = *got;
      const std::string s = now.value("status", "");
      if (s == "Completed" || s == "Failed" || s == "Canceled") return now;
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "run " << name << " did not end: " << now.dump();
    return now;
  }
  std::string Log(const json& run) {
    auto text = ReadFile(layout_.RunDir(run.value("name", "")) / "user_logs/std_log.txt");
    return text.ok() ? *text : "";
  }
  // The value the script printed as "KEY=value" (last one), or "" when it did not.
  static std::string Printed(const std::string& log, const std::string& key) {
    std::string value;
    for (const std::string& line : Split(log, '\n')) {
      if (StartsWith(line, key + "=")) value = line.substr(key.size() + 1);
    }
    return value;
  }

  fs::path root_;
  WorkspaceLayout layout_;
  std::unique_ptr<api::Daemon> daemon_;
  std::unique_ptr<HttpClient> client_;
};

// Finding 1: a run swaps outputs/d with a link to the workspace root while asking for
// outputs/d/<workspace file> with its own token. A daemon that checks the path and opens it
// later by name serves the workspace's secret key, database or admin token.
TEST_F(AttackTest, FilesRouteSymlinkSwapRaceLeaksNothing) {
  json run = RunScript(R"PY(
import ctypes, threading, time
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs("outputs/d", exist_ok=True)
os.symlink("../../..", "outputs/link")   # on the host: runs/<id>/outputs/../../.. = the workspace
stop = False
def swap():
    while not stop:
        libc.renameat2(-100, b"outputs/d", -100, b"outputs/link", 2)   # RENAME_EXCHANGE
t = threading.Thread(target=swap); t.start()
leaks = tries = ok = 0
end = time.time() + 6
while time.time() < end:
    for target in ("secret.key", "server.json", "trainyard.db"):
        status, body = call("GET", "/files/outputs/d/" + target)
        tries += 1
        ok += status == 200
        if status == 200 and len(body) > 0:
            leaks += 1
            print("LEAKED", target, body[:60])
stop = True; t.join()
# The upload route walks the same folders: a PUT must never land outside the run folder.
for i in range(200):
    call("PUT", "/files/outputs/d/planted-%d.txt" % i, b"x")
print("TRIES=%d" % tries); print("LEAKS=%d" % leaks); print("OK=%d" % ok)
)PY");
  ASSERT_EQ(run.value("status", ""), "Completed") << Log(run);
  const std::string log = Log(run);
  EXPECT_GE(std::atoi(Printed(log, "TRIES").c_str()), 100) << "the attack did not run:\n" << log;
  EXPECT_EQ(Printed(log, "LEAKS"), "0") << log;
  EXPECT_EQ(log.find("LEAKED"), std::string::npos) << log;
  for (const auto& e : fs::directory_iterator(root_)) {
    EXPECT_EQ(e.path().filename().string().find("planted-"), std::string::npos) << e.path();
  }
}

// Finding 2: a run token reaches its outputs/, logs/ and tracking data only: not the daemon's
// files of the run (Slurm's env.sh that task.sh sources on the node, the hostfile, user_logs/),
// not another route of the run, not another run.
TEST_F(AttackTest, RunTokenCannotTouchTheDaemonsFilesOfItsRun) {
  json run = RunScript(R"PY(
results = {}
for method, tail in [("PUT", "/files/slurm/env.sh"), ("PUT", "/files/hostfile"),
                     ("PUT", "/files/slurm/task.sh"), ("PUT", "/files/user_logs/std_log.txt"),
                     ("PUT", "/files/model.pt"), ("GET", "/files/user_logs/std_log.txt"),
                     ("GET", "/files/code/train.py"), ("POST", "/cancel"), ("GET", "/stream"),
                     ("GET", ""), ("PUT", "/files/outputs/%2e%2e/slurm/env.sh")]:
    status, _ = call(method, tail, b"echo pwned" if method == "PUT" else b"")
    print("STATUS %s %s=%d" % (method, tail, status))
status, _ = call("GET", "/metrics", run="someone-else")
print("OTHER_RUN=%d" % status)
status, _ = call("PUT", "/files/outputs/fine.txt", b"ok")
print("OUTPUTS=%d" % status)
status, _ = call("PUT", "/files/logs/fine.txt", b"ok")
print("LOGS=%d" % status)
)PY");
  ASSERT_EQ(run.value("status", ""), "Completed") << Log(run);
  const std::string log = Log(run);
  for (const char* probe : {"PUT /files/slurm/env.sh", "PUT /files/hostfile",
                            "PUT /files/slurm/task.sh", "PUT /files/user_logs/std_log.txt",
                            "PUT /files/model.pt", "GET /files/user_logs/std_log.txt",
                            "GET /files/code/train.py", "POST /cancel", "GET /stream", "GET ",
                            "PUT /files/outputs/%2e%2e/slurm/env.sh"}) {
    EXPECT_EQ(Printed(log, std::string("STATUS ") + probe), "403") << probe << "\n" << log;
  }
  EXPECT_EQ(Printed(log, "OTHER_RUN"), "403") << log;
  EXPECT_EQ(Printed(log, "OUTPUTS"), "201") << log;
  EXPECT_EQ(Printed(log, "LOGS"), "201") << log;
  const fs::path dir = layout_.RunDir(run["name"]);
  EXPECT_FALSE(fs::exists(dir / "slurm")) << "nothing planted beside the daemon's files";
  EXPECT_FALSE(fs::exists(dir / "hostfile"));
  EXPECT_FALSE(fs::exists(dir / "model.pt"));
}

// Finding 3: a run token dies with its run. A script that kept its token (here: wrote it to an
// output) cannot replace an output, its recorded digest, its metrics or its verdict once the
// run reached Finalizing; and a token never outlives its expiry.
TEST_F(AttackTest, RunTokenIsRefusedAfterTheRunEnds) {
  json run = RunScript(R"PY(
open("outputs/model.pt", "w").write("real weights")
open("outputs/token", "w").write(TOKEN)
print("TOKEN_SAVED=1")
)PY");
  ASSERT_EQ(run.value("status", ""), "Completed") << Log(run);
  const std::string name = run["name"];
  const std::string token = *ReadFile(layout_.RunDir(name) / "outputs/token");
  auto files = client_->GetJson("/api/v1/jobs/" + name + "/files");
  ASSERT_TRUE(files.ok());
  std::string digest;
  for (const json& f : *files) {
    if (f["path"] == "outputs/model.pt") digest = f.value("digest", "");
  }
  ASSERT_FALSE(digest.empty()) << files->dump();

  HttpClient stolen(daemon_->url(), token);
  const std::string base = "/api/v1/jobs/" + name;
  auto put = stolen.Request("PUT", base + "/files/outputs/model.pt", "poisoned",
                            "application/octet-stream");
  ASSERT_TRUE(put.ok());
  EXPECT_EQ(put->status, 403) << put->body;
  auto metrics = stolen.Request("POST", base + "/metrics", R"({"series":[{"name":"acc","values":[1]}]})");
  ASSERT_TRUE(metrics.ok());
  EXPECT_EQ(metrics->status, 403) << metrics->body;
  auto tags = stolen.Request("PATCH", base + "/tags", R"({"set":{"verified":"yes"}})");
  ASSERT_TRUE(tags.ok());
  EXPECT_EQ(tags->status, 403) << tags->body;
  EXPECT_EQ(*ReadFile(layout_.RunDir(name) / "outputs/model.pt"), "real weights");
  files = client_->GetJson("/api/v1/jobs/" + name + "/files");
  ASSERT_TRUE(files.ok());
  for (const json& f : *files) {
    if (f["path"] == "outputs/model.pt") {
      EXPECT_EQ(f.value("digest", ""), digest);
    }
  }
  // Reading its own outputs stays allowed until the token expires; the token names its expiry
  // under the MAC, so it cannot be stretched.
  auto read = stolen.Request("GET", base + "/files/outputs/model.pt");
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->status, 200);
  const std::size_t dot = token.rfind('.');
  const std::size_t exp_dot = token.rfind('.', dot - 1);
  ASSERT_NE(exp_dot, std::string::npos) << token;
  std::string stretched = token;
  stretched.replace(exp_dot + 1, dot - exp_dot - 1, "99999999999");
  auto refused = HttpClient(daemon_->url(), stretched).Request("GET", base + "/files/outputs/model.pt");
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->status, 401);
}

}  // namespace
}  // namespace trainyard

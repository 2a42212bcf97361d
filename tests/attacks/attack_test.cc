// What trainyard withstands: each case is an attack from the hardening review (issue 12,
// docs/security.md), carried out for real. Code runs as a plain job in a real container of the
// real Docker engine, next to a real daemon, with only what any run gets: its run token and the
// daemon's socket. Each case fails on a daemon without the defence it names.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
// From AddressSanitizer's runtime (sanitizer/allocator_interface.h, not shipped with gcc here).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "tests/support/test_daemon.h"
#include "tests/support/test_env.h"
#include "trainyard/api/daemon.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/tls.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/http/http_server.h"
#include "trainyard/spec/definition.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using testing::CmdResult;
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
    const std::string name = SubmitScript(*client_, layout_, script);
    return name.empty() ? json::object() : WaitEnd(*client_, name, timeout_s);
  }
  // Submits `script` to the daemon of `client` (workspace `layout`) as run `name` (generated
  // when empty); returns the run's name.
  std::string SubmitScript(HttpClient& client, const WorkspaceLayout& layout,
                           const std::string& script, const std::string& run_name = "") {
    fs::path dir = root_ / ("src-" + RandomHex(4));
    EXPECT_TRUE(MakeDirs(dir).ok());
    EXPECT_TRUE(WriteFileAtomic(dir / "train.py", std::string(kRunHttp) + script).ok());
    cas::ObjectStore objects(layout.ObjectsDir());
    cas::Snapshotter snap(objects, layout.SnapshotsDir());
    auto snapshot = snap.Snapshot(dir, {});
    EXPECT_TRUE(snapshot.ok()) << snapshot.status().ToString();
    spec::RunRequest r;
    r.name = run_name;
    r.experiment_name = "attacks";
    r.command = "python3 train.py";
    spec::EnvironmentDefinition env;
    env.image = "python:3.11-slim";
    env.user_managed_dependencies = true;
    r.environment = env;
    json job = r.ToJson(spec::SecretMode::kPlain);
    job["snapshot_id"] = snapshot.ok() ? snapshot->id : "";
    auto run = client.PostJson("/api/v1/jobs", job);
    EXPECT_TRUE(run.ok()) << run.status().ToString();
    return run.ok() ? (*run)["name"].get<std::string>() : "";
  }
  json WaitEnd(HttpClient& client, const std::string& name, int timeout_s = 240) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    json now;
    while (std::chrono::steady_clock::now() < deadline) {
      auto got = client.GetJson("/api/v1/jobs/" + name);
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

  // Restarts the daemon on the workspace with workspace.json set to `config`, serving on `host`
  // (loopback when empty).
  void RestartWith(const json& config, const std::string& host = "") {
    client_.reset();
    daemon_.reset();
    ASSERT_TRUE(WriteFileAtomic(layout_.ConfigFile(), config.dump()).ok());
    api::DaemonOptions opts = testing::TestDaemonOptions(root_);
    opts.write_server_file = true;
    if (!host.empty()) opts.host = host;
    auto d = api::Daemon::Start(opts);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    daemon_ = std::move(d).value();
    client_ = std::make_unique<HttpClient>(daemon_->url(), daemon_->token());
  }

  fs::path root_;
  WorkspaceLayout layout_;
  std::unique_ptr<api::Daemon> daemon_;
  std::unique_ptr<HttpClient> client_;
};

// The peak memory this process (which hosts the daemon) has allocated over a stretch of time,
// sampled every 20 ms by a thread of its own: under AddressSanitizer its count of live
// allocations (resident memory would count the freed blocks it keeps in quarantine), else the
// resident size.
class RssPeak {
 public:
  RssPeak()
      : thread_([this] {
          while (!stop_) {
            peak_ = std::max(peak_.load(), Now());
            std::this_thread::sleep_for(20ms);
          }
        }) {}
  ~RssPeak() { Stop(); }
  std::uint64_t Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return peak_;
  }
  static std::uint64_t Now() {
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#else
    auto status = ReadFile("/proc/self/status");
    if (!status.ok()) return 0;
    for (const std::string& line : Split(*status, '\n')) {
      if (StartsWith(line, "VmRSS:")) return std::stoull(line.substr(6)) * 1024;
    }
    return 0;
#endif
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> peak_{0};
  std::thread thread_;
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
  for (const char* probe :
       {"PUT /files/slurm/env.sh", "PUT /files/hostfile", "PUT /files/slurm/task.sh",
        "PUT /files/user_logs/std_log.txt", "PUT /files/model.pt",
        "GET /files/user_logs/std_log.txt", "GET /files/code/train.py", "POST /cancel",
        "GET /stream", "GET ", "PUT /files/outputs/%2e%2e/slurm/env.sh"}) {
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
  auto metrics =
      stolen.Request("POST", base + "/metrics", R"({"series":[{"name":"acc","values":[1]}]})");
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
  auto refused =
      HttpClient(daemon_->url(), stretched).Request("GET", base + "/files/outputs/model.pt");
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->status, 401);
}

// Finding 4: two workspaces share one Docker engine and both run a job named `baseline`. The
// second must neither remove the first one's container (as a leftover of its own) nor follow
// it; each run completes with its own output.
TEST_F(AttackTest, TwoWorkspacesWithTheSameRunNameLeaveEachOtherAlone) {
  WorkspaceLayout other;
  other.root = root_ / "other-workspace";
  auto second = api::Daemon::Start(testing::TestDaemonOptions(other.root));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  HttpClient other_client((*second)->url(), (*second)->token());

  const std::string first = SubmitScript(*client_, layout_, R"PY(
import time
time.sleep(8)
open("outputs/who", "w").write("first")
)PY",
                                         "baseline");
  ASSERT_EQ(first, "baseline");
  // The second submits once the first one's container runs.
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto got = client_->GetJson("/api/v1/jobs/baseline");
    if (got.ok() && (*got)["status"] == "Running") break;
    std::this_thread::sleep_for(100ms);
  }
  const std::string second_name = SubmitScript(other_client, other, R"PY(
open("outputs/who", "w").write("second")
)PY",
                                               "baseline");
  ASSERT_EQ(second_name, "baseline");
  json b = WaitEnd(other_client, "baseline");
  json a = WaitEnd(*client_, "baseline");
  EXPECT_EQ(a.value("status", ""), "Completed") << a.dump(1);
  EXPECT_EQ(b.value("status", ""), "Completed") << b.dump(1);
  EXPECT_EQ(*ReadFile(layout_.RunDir("baseline") / "outputs/who"), "first");
  EXPECT_EQ(*ReadFile(other.RunDir("baseline") / "outputs/who"), "second");
}

// Finding 5: a cloned repository ships `.trainyard/config.json`. It must not make the CLI use a
// workspace folder shipped beside it (whose database could hold runs that a new daemon would
// start), nor send a token (a file it names, or $TRAINYARD_TOKEN) to a URL it names.
TEST_F(AttackTest, AnUntrustedCheckoutCannotSteerTheCli) {
  const fs::path repo = root_ / "cloned-repo";
  const fs::path shipped = repo / "ws";
  // As a checkout makes them: folders 0755, files 0644.
  ASSERT_TRUE(MakeDirs(shipped / "runs").ok());
  ::chmod(shipped.c_str(), 0755);
  ASSERT_TRUE(WriteFileAtomic(shipped / "trainyard.db", "not a real database", 0644).ok());
  ASSERT_TRUE(MakeDirs(repo / ".trainyard").ok());
  ASSERT_TRUE(
      WriteFileAtomic(repo / ".trainyard/config.json", R"({"workspace_dir": "../ws"})").ok());
  const std::string cli = "env -u TRAINYARD_URL XDG_CONFIG_HOME='" + (root_ / "config").string() +
                          "' " + testing::TrainyardBinary();
  CmdResult r = testing::RunTrainyard(repo.string(), (root_ / "home-ws").string(), "job list", cli);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("is not private to you"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(shipped / "daemon.log")) << "no daemon was started on it";
  EXPECT_FALSE(fs::exists(shipped / "server.json"));
  EXPECT_FALSE(fs::exists(shipped / "secret.key"));

  // A remote URL with a token file the config names (the user's own workspace token), or with
  // $TRAINYARD_TOKEN set: nothing is sent to the URL. A listener stands in for the attacker.
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 8), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  for (const std::string& config :
       {R"({"url": ")" + url + R"(", "token_file": ")" + layout_.ServerFile().string() + R"("})",
        R"({"url": ")" + url + R"("})"}) {
    ASSERT_TRUE(WriteFileAtomic(repo / ".trainyard/config.json", config).ok());
    r = testing::RunTrainyard(repo.string(), (root_ / "home-ws").string(), "job list",
                              "env -u TRAINYARD_URL TRAINYARD_TOKEN=user-secret-token "
                              "XDG_CONFIG_HOME='" +
                                  (root_ / "config").string() + "' " + testing::TrainyardBinary());
    EXPECT_NE(r.exit_code, 0) << config << "\n" << r.output;
    EXPECT_NE(r.output.find("trainyard login"), std::string::npos) << r.output;
    EXPECT_LT(::accept(listener, nullptr, nullptr), 0) << "the CLI connected to " << url;
  }
  ::close(listener);
}

// Finding 6: secrets in the user's shell stay out of the daemon the CLI starts and out of every
// run: a job whose command is `env` (on the host, a process compute) shows none of them.
TEST_F(AttackTest, SecretsInTheUsersShellReachNoDaemonAndNoRun) {
  const fs::path ws = root_ / "cli-ws";
  const fs::path project = root_ / "project";
  ASSERT_TRUE(MakeDirs(project).ok());
  ASSERT_TRUE(WriteFileAtomic(project / "env.yml",
                              "command: env\nenvironment: {image: python:3.11-slim}\n"
                              "compute: host\n")
                  .ok());
  const std::string secrets =
      "env -u TRAINYARD_URL TRAINYARD_REGISTRY_PASSWORD=hunter2-registry "
      "TRAINYARD_TOKEN=tok-user-secret AWS_SECRET_ACCESS_KEY=aws-user-secret " +
      testing::TrainyardBinary();
  CmdResult r =
      testing::RunTrainyard(project.string(), ws.string(),
                            "compute create --name host --type process --max-nodes 1", secrets);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = testing::RunTrainyard(project.string(), ws.string(), "job create -f env.yml --stream",
                            secrets);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("TRAINYARD_RUN_ID="), std::string::npos) << "env did not run:\n"
                                                                   << r.output;
  EXPECT_NE(r.output.find("PATH="), std::string::npos) << r.output;
  for (const char* secret : {"hunter2-registry", "tok-user-secret", "aws-user-secret"}) {
    EXPECT_EQ(r.output.find(secret), std::string::npos) << secret << " reached the run";
  }
  // Nor does the daemon hold them.
  auto info = ReadFile(ws / "server.json");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  const int pid = json::parse(*info).value("pid", 0);
  auto environ_text = ReadFile("/proc/" + std::to_string(pid) + "/environ");
  ASSERT_TRUE(environ_text.ok());
  for (const char* secret : {"hunter2-registry", "tok-user-secret", "aws-user-secret"}) {
    EXPECT_EQ(environ_text->find(secret), std::string::npos) << secret << " reached the daemon";
  }
  testing::StopWorkspaceDaemon(ws);
}

// Finding 7: the API socket's folder, when the workspace path is too long for a socket address,
// lives in a shared place. Another local user who creates it first (a link to a folder of
// theirs, or a folder they own) must not get the daemon to put its socket there.
TEST_F(AttackTest, APreCreatedSocketFolderIsRefused) {
  ASSERT_EQ(::unsetenv("XDG_RUNTIME_DIR"), 0);
  const fs::path ws = root_ / std::string(100, 'w');  // too long for <ws>/sock/api.sock
  const fs::path shared = fs::path("/tmp") / ("trainyard-" + std::to_string(::geteuid()) + "-" +
                                              Sha256Hex(ws.string()).substr(0, 16));
  (void)RemoveTree(shared);
  const fs::path theirs = root_ / "attacker";
  ASSERT_TRUE(MakeDirs(theirs).ok());
  ASSERT_EQ(::symlink(theirs.c_str(), shared.c_str()), 0);
  auto refused = api::Daemon::Start(testing::TestDaemonOptions(ws));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find(shared.string()), std::string::npos)
      << refused.status().ToString();
  EXPECT_FALSE(fs::exists(theirs / "sock")) << "nothing was made in the attacker's folder";
  ::unlink(shared.c_str());
  // A folder someone else owns, open to all.
  ASSERT_EQ(::mkdir(shared.c_str(), 0777), 0);
  ASSERT_EQ(::chown(shared.c_str(), 65534, 65534), 0);
  ::chmod(shared.c_str(), 0777);
  refused = api::Daemon::Start(testing::TestDaemonOptions(ws));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("not private"), std::string::npos)
      << refused.status().ToString();
  ASSERT_TRUE(RemoveTree(shared).ok());
  // Gone: the daemon makes it itself, 0700 and its own.
  auto started = api::Daemon::Start(testing::TestDaemonOptions(ws));
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  struct stat st {};
  ASSERT_EQ(::lstat(shared.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_TRUE(fs::exists(shared / "sock" / "api.sock"));
  started->reset();
  (void)RemoveTree(shared);
}

// Finding 8: a run tries to exhaust the daemon. Each limit holds and answers naming itself:
// too many tags or entries (400), a header trickled byte by byte (408), a flood of connections
// through the runs' socket (429, while the user's own clients are still served), a fork bomb
// (the container's process limit).
TEST_F(AttackTest, ARunCannotExhaustTheDaemon) {
  ASSERT_NO_FATAL_FAILURE(RestartWith({{"max_connections", 20},
                                       {"http_header_timeout_ms", 500},
                                       {"max_tags_per_run", 5},
                                       {"max_entries_per_run", 10},
                                       {"container_pids_limit", 64}}));
  json run = RunScript(R"PY(
import json, subprocess, time
tags = {"set": {"t%d" % i: "v" for i in range(6)}}
print("TAGS=%d %s" % call("PATCH", "/tags", json.dumps(tags).encode()), flush=True)
rows = {"entries": [{"name": "r", "kind": "row", "value": {"a": i}} for i in range(11)]}
print("ENTRIES=%d %s" % call("POST", "/entries", json.dumps(rows).encode()), flush=True)

# Slowloris: a request line, then one header line every 200 ms, never the blank line.
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(SOCK)
start = time.time()
s.sendall(b"GET /api/v1/jobs/%s HTTP/1.1\r\n" % RUN.encode())
answer = b""
try:
    for _ in range(50):
        s.sendall(b"X-Slow: 1\r\n")
        time.sleep(0.2)
        s.setblocking(False)
        try:
            answer += s.recv(65536)
        except BlockingIOError:
            pass
        s.setblocking(True)
        if answer:
            break
except OSError:
    pass
print("SLOW=%.1f %s" % (time.time() - start, answer.split(b"\r\n")[0].decode()), flush=True)
print("SLOW_BODY=" + answer.partition(b"\r\n\r\n")[2].decode(), flush=True)

# A flood of connections: held open, each one idle.
held, refused = [], ""
for _ in range(40):
    c = socket.socket(socket.AF_UNIX); c.connect(SOCK); held.append(c)
time.sleep(0.5)
for c in held:
    c.setblocking(False)
    try:
        got = c.recv(65536)
        if got.startswith(b"HTTP/1.1 429"):
            refused = got.partition(b"\r\n\r\n")[2].decode()
    except BlockingIOError:
        pass
print("FLOOD_REFUSED=" + refused, flush=True)
print("HOLDING", flush=True)
time.sleep(4)
for c in held:
    c.close()

# A fork bomb, stopped by the container's process limit.
procs, failed = [], 0
for _ in range(200):
    try:
        procs.append(subprocess.Popen(["sleep", "5"]))
    except OSError:
        failed += 1
print("SPAWNED=%d FAILED=%d" % (len(procs), failed), flush=True)
for p in procs:
    p.kill()
)PY");
  const std::string log = Log(run);
  EXPECT_EQ(run.value("status", ""), "Completed") << run.dump() << log;
  EXPECT_EQ(Printed(log, "TAGS").rfind("400 ", 0), 0u) << log;
  EXPECT_NE(Printed(log, "TAGS").find("the limit is 5 tags per run"), std::string::npos) << log;
  EXPECT_EQ(Printed(log, "ENTRIES").rfind("400 ", 0), 0u) << log;
  EXPECT_NE(Printed(log, "ENTRIES").find("the limit is 10 entries per run"), std::string::npos)
      << log;
  EXPECT_NE(Printed(log, "SLOW").find("HTTP/1.1 408"), std::string::npos) << log;
  EXPECT_NE(Printed(log, "SLOW_BODY").find("within the limit of 500 ms"), std::string::npos) << log;
  EXPECT_LT(std::stod(Printed(log, "SLOW").empty() ? "99" : Printed(log, "SLOW")), 5.0) << log;
  EXPECT_NE(Printed(log, "FLOOD_REFUSED").find("the limit of 10 the runs' concurrent connections"),
            std::string::npos)
      << log;
  const std::string spawned = Printed(log, "SPAWNED");
  ASSERT_FALSE(spawned.empty()) << log;
  EXPECT_LT(std::stoi(spawned), 64) << log;
  EXPECT_GT(std::stoi(spawned.substr(spawned.find("FAILED=") + 7)), 0) << log;
  auto tags = client_->GetJson("/api/v1/jobs/" + run.value("name", "") + "/tags");
  ASSERT_TRUE(tags.ok()) << tags.status().ToString();
  EXPECT_TRUE((*tags)["tags"].empty()) << "a refused batch is refused whole: " << tags->dump();
}

// Finding 8: while a run holds every connection the runs' socket allows, the user's clients
// are still served.
TEST_F(AttackTest, ARunsConnectionFloodLeavesTheUserServed) {
  ASSERT_NO_FATAL_FAILURE(RestartWith({{"max_connections", 20}}));
  const std::string name = SubmitScript(*client_, layout_, R"PY(
import time
held = []
for _ in range(40):
    c = socket.socket(socket.AF_UNIX); c.connect(SOCK); held.append(c)
print("HOLDING", flush=True)
time.sleep(8)
)PY");
  ASSERT_FALSE(name.empty());
  const auto deadline = std::chrono::steady_clock::now() + 180s;
  bool holding = false;
  while (!holding && std::chrono::steady_clock::now() < deadline) {
    holding = Log(json{{"name", name}}).find("HOLDING") != std::string::npos;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(holding) << "the run never held its connections";
  for (int i = 0; i < 5; ++i) {  // the user, over TCP, while the run holds its share
    HttpClient user(daemon_->url(), daemon_->token());
    auto got = user.GetJson("/api/v1/jobs/" + name, 2000);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
  }
  json run = WaitEnd(*client_, name);
  EXPECT_EQ(run.value("status", ""), "Completed") << run.dump();
}

// Finding 8: a multi-node run whose node writes 200 MB without a newline. The run's log
// prefixes each node's lines, so it holds a node's unfinished line; unbounded, that is the
// daemon's memory.
TEST_F(AttackTest, ALineWithoutEndCostsTheDaemonNoMemory) {
  auto compute = client_->PostJson("/api/v1/computes",
                                   {{"name", "pair"}, {"type", "docker"}, {"max_nodes", 2}});
  ASSERT_TRUE(compute.ok()) << compute.status().ToString();
  fs::path dir = root_ / "src-line";
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir / "train.py", R"PY(
import os, sys
block = b"x" * (1 << 20)
if os.environ.get("TRAINYARD_NODE_RANK", os.environ.get("RANK", "0")) == "0":
    for _ in range(200):
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.write(b"\nEND\n")
else:
    print("other node", flush=True)
)PY")
                  .ok());
  cas::ObjectStore objects(layout_.ObjectsDir());
  cas::Snapshotter snap(objects, layout_.SnapshotsDir());
  auto snapshot = snap.Snapshot(dir, {});
  ASSERT_TRUE(snapshot.ok()) << snapshot.status().ToString();
  spec::RunRequest r;
  r.experiment_name = "attacks";
  r.command = "python3 train.py";
  r.compute = "pair";
  r.instance_count = 2;
  spec::EnvironmentDefinition env;
  env.image = "python:3.11-slim";
  env.user_managed_dependencies = true;
  r.environment = env;
  json job = r.ToJson(spec::SecretMode::kPlain);
  job["snapshot_id"] = snapshot->id;
  const std::uint64_t before = RssPeak::Now();
  RssPeak peak;
  auto submitted = client_->PostJson("/api/v1/jobs", job);
  ASSERT_TRUE(submitted.ok()) << submitted.status().ToString();
  json run = WaitEnd(*client_, (*submitted)["name"].get<std::string>(), 600);
  const std::uint64_t grew = peak.Stop() - std::min(before, peak.Stop());
  auto node0 = ReadFile(layout_.RunDir(run.value("name", "")) / "user_logs/std_log_node_0.txt");
  EXPECT_EQ(run.value("status", ""), "Completed")
      << run.dump() << "\n"
      << (node0.ok() ? node0->substr(0, 2000) : std::string());
  EXPECT_LT(grew, std::uint64_t{120} << 20)
      << "the daemon grew by " << (grew >> 20) << " MiB while a node wrote a 200 MB line";
  std::fprintf(stderr, "memory grew by %llu MiB while a node wrote a 200 MiB line\n",
               static_cast<unsigned long long>(grew >> 20));
  const std::string log = Log(run);
  std::error_code ec;
  for (int i = 0; i < 2; ++i) {
    std::fprintf(stderr, "node %d log: %lld bytes\n", i,
                 static_cast<long long>(
                     fs::file_size(layout_.RunDir(run.value("name", "")) /
                                       ("user_logs/std_log_node_" + std::to_string(i) + ".txt"),
                                   ec)));
  }
  EXPECT_NE(log.find("[node 0] END\n"), std::string::npos);
  EXPECT_NE(log.find("[node 1] other node\n"), std::string::npos);
  EXPECT_GE(log.size(), std::size_t{200} << 20) << "every byte of the line is kept";
}

// Finding 9: requests that take long (a listing of a run folder of 150,000 files, here four at
// once) run off the event loop: /health and other clients are answered meanwhile.
TEST_F(AttackTest, SlowRequestsDoNotStallTheDaemon) {
  json run = RunScript("print('small')\n");
  ASSERT_EQ(run.value("status", ""), "Completed") << run.dump();
  const std::string name = run.value("name", "");
  const fs::path outputs = layout_.RunDir(name) / "outputs" / "many";
  ASSERT_TRUE(MakeDirs(outputs).ok());
  for (int d = 0; d < 150; ++d) {
    const fs::path sub = outputs / std::to_string(d);
    ASSERT_TRUE(MakeDirs(sub).ok());
    for (int f = 0; f < 1000; ++f) {
      const int fd =
          ::open((sub / std::to_string(f)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      ASSERT_GE(fd, 0);
      ::close(fd);
    }
  }
  std::atomic<int> done{0};
  std::vector<std::thread> listings;
  std::vector<std::int64_t> listing_ms(4);
  for (int i = 0; i < 4; ++i) {
    listings.emplace_back([&, i] {
      HttpClient c(daemon_->url(), daemon_->token());
      const auto start = std::chrono::steady_clock::now();
      auto files = c.GetJson("/api/v1/jobs/" + name + "/files", 120'000);
      listing_ms[i] = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - start)
                          .count();
      EXPECT_TRUE(files.ok()) << files.status().ToString();
      ++done;
    });
  }
  std::this_thread::sleep_for(200ms);  // the four are under way
  std::vector<std::int64_t> health_ms, job_ms;
  HttpClient user(daemon_->url(), daemon_->token());
  while (done < 4 && health_ms.size() < 50) {
    auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(user.GetJson("/api/v1/health", 10'000).ok());
    health_ms.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count());
    start = std::chrono::steady_clock::now();
    ASSERT_TRUE(user.GetJson("/api/v1/jobs/" + name, 10'000).ok());
    job_ms.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - start)
                         .count());
    std::this_thread::sleep_for(20ms);
  }
  const bool measured_while_busy = done < 4;
  for (auto& t : listings) t.join();
  ASSERT_TRUE(measured_while_busy) << "the listings ended before /health was measured; make "
                                      "the folder larger";
  std::sort(health_ms.begin(), health_ms.end());
  std::sort(job_ms.begin(), job_ms.end());
  std::fprintf(
      stderr, "listings took %lld ms; /health median %lld ms, max %lld ms; job median %lld ms\n",
      static_cast<long long>(*std::max_element(listing_ms.begin(), listing_ms.end())),
      static_cast<long long>(health_ms[health_ms.size() / 2]),
      static_cast<long long>(health_ms.back()), static_cast<long long>(job_ms[job_ms.size() / 2]));
  EXPECT_LT(health_ms[health_ms.size() / 2], 50);
  EXPECT_LT(job_ms[job_ms.size() / 2], 200);
}

// A TCP relay on 127.0.0.1 that forwards each connection to `address`:`port` and keeps a copy of
// every byte it carries, both ways: what an eavesdropper on the network between a client and
// the daemon sees.
class RecordingRelay {
 public:
  RecordingRelay(std::string address, int port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof local;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
      ADD_FAILURE() << "the relay cannot listen";
      return;
    }
    port_ = ntohs(local.sin_port);
    acceptor_ = std::thread([this, address, port] { Serve(address, port); });
  }
  ~RecordingRelay() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    ::close(listen_fd_);
    std::vector<std::thread> pumps;
    {
      std::lock_guard lock(mu_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
      pumps.swap(pumps_);
    }
    for (std::thread& t : pumps) t.join();
  }
  int port() const { return port_; }
  std::string Seen() {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  void Serve(const std::string& address, int port) {
    for (;;) {
      const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) return;
      const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(static_cast<std::uint16_t>(port));
      ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
      if (::connect(upstream, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
        ::close(client);
        ::close(upstream);
        continue;
      }
      std::lock_guard lock(mu_);
      fds_.push_back(client);
      fds_.push_back(upstream);
      pumps_.emplace_back([this, client, upstream] { Pump(client, upstream); });
    }
  }
  void Pump(int a, int b) {
    pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
    char buf[16384];
    for (bool open = true; open;) {
      if (::poll(fds, 2, 30'000) <= 0) break;
      for (int i = 0; i < 2 && open; ++i) {
        if (fds[i].revents == 0) continue;
        const ssize_t n = ::recv(fds[i].fd, buf, sizeof buf, 0);
        if (n <= 0 || ::send(fds[1 - i].fd, buf, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) {
          open = false;
          break;
        }
        std::lock_guard lock(mu_);
        seen_.append(buf, static_cast<std::size_t>(n));
      }
    }
    ::shutdown(a, SHUT_RDWR);
    ::shutdown(b, SHUT_RDWR);
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> pumps_;  // Guarded by mu_.
  std::vector<int> fds_;            // Guarded by mu_; closed by their pumps' shutdown.
  std::string seen_;                // Guarded by mu_.
};

// 12. The network. A daemon serving beyond loopback speaks HTTPS only there: a client speaking
// plain HTTP gets no answer, clients there that hold connections open without a token cannot
// take this machine's, an eavesdropper between the CLI and the daemon sees neither the token
// nor any request or answer, and a man in the middle with a certificate of its own gets no
// request from a client that pins the daemon's key.
TEST_F(AttackTest, TheNetworkSeesNoTokenAndCannotPoseAsTheDaemon) {
  const std::string address = testing::NonLoopbackAddress();
  ASSERT_FALSE(address.empty()) << "this machine has no address but loopback";
  ASSERT_NO_FATAL_FAILURE(RestartWith(json{{"max_connections", 8}}, address));
  const std::string public_url = daemon_->public_url();
  ASSERT_TRUE(StartsWith(public_url, "https://" + address + ":")) << public_url;
  const int port = std::stoi(public_url.substr(public_url.rfind(':') + 1));
  // A TCP connection to the public address, as any machine on the network can open.
  auto connect_public = [&address, port] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
    return fd;
  };

  // Plain HTTP on the public address: nothing answers it.
  {
    const int fd = connect_public();
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string request = "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_GT(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), 0);
    std::string answer;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, n);
    ::close(fd);
    EXPECT_EQ(answer.find("HTTP/"), std::string::npos) << answer;
  }

  // Connections from the network that never handshake: they fill the network's share of the
  // connections, never this machine's.
  std::vector<int> held;
  for (int i = 0; i < 12; ++i) held.push_back(connect_public());
  std::this_thread::sleep_for(200ms);
  auto served = client_->GetJson("/api/v1/workspace");
  EXPECT_TRUE(served.ok()) << "the network's connections starved this machine's CLI: "
                           << served.status().ToString();
  for (int fd : held) ::close(fd);
  std::this_thread::sleep_for(200ms);

  // The CLI's exchanges through an eavesdropper: they work, and it learns nothing.
  {
    RecordingRelay relay(address, port);
    {
      HttpClient cli("https://127.0.0.1:" + std::to_string(relay.port()), daemon_->token(),
                     TlsTrust{daemon_->tls_pin(), ""});
      auto workspace = cli.GetJson("/api/v1/workspace");
      ASSERT_TRUE(workspace.ok()) << workspace.status().ToString();
      EXPECT_EQ((*workspace)["root"], root_.string());
      ASSERT_TRUE(cli.GetJson("/api/v1/jobs").ok());
    }
    const std::string seen = relay.Seen();
    EXPECT_GT(seen.size(), 1000u) << "the exchanges did not go through the relay";
    EXPECT_EQ(seen.find(daemon_->token()), std::string::npos) << "the token crossed in clear";
    EXPECT_EQ(seen.find("/api/v1/"), std::string::npos) << "a request crossed in clear";
    EXPECT_EQ(seen.find(root_.string()), std::string::npos) << "an answer crossed in clear";
  }

  // A man in the middle with a certificate of its own: a client pinning the daemon's key sends
  // it nothing, neither a request nor the token.
  {
    auto impostor_identity = MakeSelfSignedIdentity({"127.0.0.1", address}, "impostor");
    ASSERT_TRUE(impostor_identity.ok());
    HttpServerOptions options;
    options.tls = std::make_shared<const TlsIdentity>(std::move(impostor_identity).value());
    HttpServer impostor(options);
    std::atomic<int> requests{0};
    impostor.Route("GET", "/api/v1/{rest...}", SyncHandler([&requests](HttpRequest&) {
                     ++requests;
                     return HttpResponse::Json(200, json::object());
                   }));
    ASSERT_TRUE(impostor.Start().ok());
    HttpClient cli("https://127.0.0.1:" + std::to_string(impostor.port()), daemon_->token(),
                   TlsTrust{daemon_->tls_pin(), ""});
    auto workspace = cli.GetJson("/api/v1/workspace");
    EXPECT_EQ(workspace.status().code(), StatusCode::kUnavailable) << workspace.status().ToString();
    EXPECT_EQ(requests.load(), 0);
    impostor.Stop();
  }
}

}  // namespace
}  // namespace trainyard

// Run tracking (docs/tracking.md) against an in-process daemon on port 0 with a temp workspace:
// the REST routes driven over raw HTTP (headers such as Idempotency-Key included), the C++ SDK
// over TCP, and runs in real containers that report through the Python SDK.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "sdk/cpp/trainyard/run.h"
#include "tests/support/test_daemon.h"
#include "tests/support/test_env.h"
#include "trainyard/api/daemon.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/spec/definition.h"
#include "trainyard/store/store.h"
#include "trainyard/tracking/metric_codec.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

struct Reply {
  int status = 0;
  std::string head;  // status line and headers
  std::string body;
  json Json() const { return json::parse(body, nullptr, false); }
};

// One HTTP/1.1 exchange over a fresh TCP connection ("Connection: close"). `send_body` false
// sends only the header (to test early refusals of a declared Content-Length).
Reply Http(int port, const std::string& method, const std::string& path, const std::string& token,
           const std::string& body = "", const std::string& content_type = "application/json",
           const std::map<std::string, std::string>& headers = {},
           std::optional<std::uint64_t> declared_length = std::nullopt) {
  Reply reply;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    ADD_FAILURE() << "cannot connect to port " << port;
    return reply;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n";
  if (!token.empty()) req += "Authorization: Bearer " + token + "\r\n";
  if (!content_type.empty() && (!body.empty() || declared_length)) {
    req += "Content-Type: " + content_type + "\r\n";
  }
  req += "Content-Length: " + std::to_string(declared_length.value_or(body.size())) + "\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  if (!declared_length) req += body;
  for (std::size_t off = 0; off < req.size();) {
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (and close) before the body is sent
    off += static_cast<std::size_t>(n);
  }
  std::string in;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const std::size_t head_end = in.find("\r\n\r\n");
  if (in.size() < 12 || head_end == std::string::npos) {
    ADD_FAILURE() << method << " " << path << ": no HTTP answer";
    return reply;
  }
  reply.status = std::atoi(in.substr(9, 3).c_str());
  std::string head = in.substr(0, head_end);
  reply.head = head;
  reply.body = in.substr(head_end + 4);
  if (head.find("Transfer-Encoding: chunked") != std::string::npos ||
      head.find("transfer-encoding: chunked") != std::string::npos) {
    std::string out;
    std::size_t pos = 0;
    for (;;) {
      std::size_t eol = reply.body.find("\r\n", pos);
      if (eol == std::string::npos) break;
      std::size_t n = std::strtoul(reply.body.substr(pos, eol - pos).c_str(), nullptr, 16);
      if (n == 0) break;
      out += reply.body.substr(eol + 2, n);
      pos = eol + 2 + n + 2;
    }
    reply.body = out;
  }
  return reply;
}

class TrackingIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ty-trk-" + RandomHex(4));
    layout_.root = root_;
    ASSERT_NO_FATAL_FAILURE(StartDaemon());
    auto st = store::OpenSqliteStore(layout_.Database().string());
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    store_ = std::move(st).value();
    auto box = SecretBox::Open(layout_.SecretKey());
    ASSERT_TRUE(box.ok()) << box.status().ToString();
    box_.emplace(std::move(box).value());
  }

  void TearDown() override {
    store_.reset();
    daemon_.reset();
    (void)RemoveTree(root_);
  }

  void StartDaemon() {
    daemon_.reset();
    api::DaemonOptions opts = testing::TestDaemonOptions(root_);
    auto d = api::Daemon::Start(opts);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    daemon_ = std::move(d).value();
  }

  // A run the scheduler never starts (inserted beside the daemon): enough for the tracking API.
  std::string MakeRun(const std::string& id) {
    store::RunRecord r;
    r.id = id;
    r.experiment = "tracking";
    r.compute = "local";
    r.request_json = "{}";
    r.created_at = NowMillis();
    r.status = store::RunStatus::kRunning;
    EXPECT_TRUE(store_->InsertRun(r).ok());
    EXPECT_TRUE(MakeDirs(layout_.RunDir(id)).ok());
    return id;
  }

  std::string Token(const std::string& run) {
    return box_->RunToken(run, NowMillis() / 1000 + 3600);
  }
  int port() const { return daemon_->port(); }
  const std::string& admin() const { return daemon_->token(); }

  Reply Call(const std::string& method, const std::string& run, const std::string& tail,
             const std::string& body = "", const std::string& ctype = "application/json",
             const std::map<std::string, std::string>& headers = {}) {
    return Http(port(), method, "/api/v1/jobs/" + run + tail, Token(run), body, ctype, headers);
  }

  fs::path root_;
  WorkspaceLayout layout_;
  std::unique_ptr<api::Daemon> daemon_;
  std::unique_ptr<store::Store> store_;
  std::optional<SecretBox> box_;
};

std::string Binary(const tracking::MetricBatch& batch) {
  return tracking::EncodeMetricsBinary(batch);
}

TEST_F(TrackingIntegrationTest, BinaryAndJsonMetricsReadBackFaithfully) {
  const std::string run = MakeRun("m1");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  tracking::MetricBatch batch;
  batch.series.push_back({"loss", {0.5, nan, inf, -inf}, {}, {}});
  batch.series.push_back({"acc", {0.1, 0.2}, {10, 20}, {1000, 2000}});
  batch.series.push_back({"loss", {0.25}, {}, {}});  // a name twice in one body: appended
  Reply r = Call("POST", run, "/metrics", Binary(batch), "application/x-trainyard-metrics");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["points"], 7);

  r = Call("POST", run, "/metrics",
           R"({"series": [{"name": "acc", "values": [0.3, "NaN"], "steps": [30, 40]}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["points"], 2);

  r = Call("GET", run, "/metrics");
  ASSERT_EQ(r.status, 200) << r.body;
  json list = r.Json()["metrics"];
  ASSERT_EQ(list.size(), 2u) << r.body;
  EXPECT_EQ(list[0]["name"], "acc");
  EXPECT_EQ(list[0]["count"], 4);
  EXPECT_EQ(list[0]["last_value"], "NaN");
  EXPECT_EQ(list[0]["last_step"], 40);
  EXPECT_EQ(list[1]["name"], "loss");
  EXPECT_EQ(list[1]["count"], 5);

  r = Call("GET", run, "/metrics/loss");
  ASSERT_EQ(r.status, 200) << r.body;
  json loss = r.Json();
  EXPECT_EQ(loss["values"], json::parse(R"([0.5, "NaN", "Infinity", "-Infinity", 0.25])"));
  EXPECT_EQ(loss["steps"], json::parse("[0, 1, 2, 3, 4]"));
  EXPECT_EQ(loss["downsampled"], false);

  r = Call("GET", run, "/metrics/acc");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["timestamps"][1], 2000);
  EXPECT_EQ(r.Json()["values"][3], "NaN");

  r = Call("GET", run, "/metrics/acc?format=csv");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("step,timestamp,value"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("40,"), std::string::npos) << r.body;

  r = Call("GET", run, "/metrics/nope");
  EXPECT_EQ(r.status, 404) << r.body;

  // A name with a slash and a space, URL-encoded as the clients do.
  r = Call("POST", run, "/metrics", R"({"series": [{"name": "train/loss x", "values": [7]}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = Call("GET", run, "/metrics/train%2Floss%20x");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["values"], json::parse("[7]"));
}

TEST_F(TrackingIntegrationTest, DownsampledReadAndBadMaxPoints) {
  const std::string run = MakeRun("m2");
  tracking::MetricBatch batch;
  tracking::MetricSeries s{"wave", {}, {}, {}};
  for (int i = 0; i < 10000; ++i) s.values.push_back(std::sin(i / 100.0) + (i == 5555 ? 50 : 0));
  batch.series.push_back(std::move(s));
  ASSERT_EQ(Call("POST", run, "/metrics", Binary(batch), "application/x-trainyard-metrics").status,
            200);
  Reply r = Call("GET", run, "/metrics/wave?max_points=100");
  ASSERT_EQ(r.status, 200) << r.body;
  json data = r.Json();
  EXPECT_LE(data["values"].size(), 100u);
  EXPECT_GE(data["values"].size(), 50u);
  EXPECT_EQ(data["count"], 10000);
  EXPECT_EQ(data["downsampled"], true);
  double max = -1e9;
  for (const json& v : data["values"]) max = std::max(max, v.get<double>());
  EXPECT_GT(max, 49.0);  // the spike survives downsampling
  for (const char* bad : {"abc", "1", "-5", "", "3x"}) {
    r = Call("GET", run, std::string("/metrics/wave?max_points=") + bad);
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
  }
  EXPECT_EQ(Call("GET", run, "/metrics/wave?format=xml").status, 400);
}

TEST_F(TrackingIntegrationTest, BadBodiesAreRefusedWithTheirIndexAndStoreNothing) {
  const std::string run = MakeRun("m3");
  Reply r = Call("POST", run, "/metrics",
                 R"({"series": [{"name": "a", "values": [1]},
                                {"name": "acc", "values": [1, 2, "oops"]}]})");
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find(R"(series 1 (\"acc\"): point 2)"), std::string::npos) << r.body;
  r = Call("GET", run, "/metrics");
  EXPECT_EQ(r.Json()["metrics"].size(), 0u) << r.body;

  r = Call("POST", run, "/metrics", "{}", "text/plain");
  EXPECT_EQ(r.status, 400) << r.body;

  // 413 from the declared length, before any body is sent.
  r = Http(port(), "POST", "/api/v1/jobs/" + run + "/metrics", Token(run), "",
           "application/x-trainyard-metrics", {}, std::uint64_t{65} << 20);
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_NE(r.body.find("67108864"), std::string::npos) << r.body;
}

TEST_F(TrackingIntegrationTest, UnknownRunIs404NamingIt) {
  Reply r = Http(port(), "GET", "/api/v1/jobs/ghost/metrics", admin());
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_NE(r.body.find("ghost"), std::string::npos) << r.body;
  r = Http(port(), "POST", "/api/v1/jobs/ghost/metrics", admin(),
           R"({"series": [{"name": "a", "values": [1]}]})");
  EXPECT_EQ(r.status, 404) << r.body;
  r = Http(port(), "PUT", "/api/v1/jobs/ghost/files/outputs/x", admin(), "data",
           "application/octet-stream");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(Http(port(), "PATCH", "/api/v1/jobs/ghost/tags", admin(), "{}").status, 404);
  EXPECT_EQ(Http(port(), "GET", "/api/v1/jobs/ghost/properties", admin()).status, 404);
}

TEST_F(TrackingIntegrationTest, RunTokensReachOnlyTheirRun) {
  const std::string a = MakeRun("tok-a");
  const std::string b = MakeRun("tok-b");
  const std::string body = R"({"series": [{"name": "x", "values": [1]}]})";
  EXPECT_EQ(Http(port(), "POST", "/api/v1/jobs/tok-a/metrics", Token(a), body).status, 200);
  EXPECT_EQ(Http(port(), "GET", "/api/v1/jobs/tok-a/metrics", Token(a)).status, 200);
  EXPECT_EQ(Http(port(), "POST", "/api/v1/jobs/tok-b/metrics", Token(a), body).status, 403);
  EXPECT_EQ(Http(port(), "GET", "/api/v1/jobs/tok-b/tags", Token(a)).status, 403);
  EXPECT_EQ(Http(port(), "GET", "/api/v1/jobs", Token(a)).status, 403);
  // Nor make the daemon read a folder of the host into a snapshot.
  EXPECT_EQ(
      Http(port(), "POST", "/api/v1/snapshots/from-folder", Token(a), R"({"path": "/etc"})").status,
      403);
  EXPECT_EQ(Http(port(), "GET", "/api/v1/jobs/tok-a/metrics", "").status, 401);
  EXPECT_EQ(Http(port(), "GET", "/api/v1/jobs/tok-a/metrics", "not-a-token").status, 401);
  // A run token cannot climb into another run's paths.
  for (const char* path :
       {"/api/v1/jobs/tok-a/../tok-b/metrics", "/api/v1/jobs/tok-a/%2e%2e/tok-b/metrics",
        "/api/v1/jobs/tok-a/metrics/../../tok-b/metrics"}) {
    Reply r = Http(port(), "GET", path, Token(a));
    EXPECT_NE(r.status, 200) << path << ": " << r.body;
  }
  // The workspace token reaches every run.
  EXPECT_EQ(Http(port(), "GET", "/api/v1/jobs/tok-b/metrics", admin()).status, 200);
  (void)b;
}

TEST_F(TrackingIntegrationTest, IdempotencyKeyStoresARetriedBatchOnce) {
  const std::string run = MakeRun("idem");
  const std::string body = R"({"series": [{"name": "x", "values": [1, 2, 3]}]})";
  Reply r = Call("POST", run, "/metrics", body, "application/json", {{"Idempotency-Key", "k1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  r = Call("POST", run, "/metrics", body, "application/json", {{"Idempotency-Key", "k1"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["points"], 3);
  EXPECT_EQ(r.Json()["replayed"], true);
  r = Call("GET", run, "/metrics/x");
  EXPECT_EQ(r.Json()["count"], 3) << r.body;
  // Another key, or none, is another batch.
  ASSERT_EQ(
      Call("POST", run, "/metrics", body, "application/json", {{"Idempotency-Key", "k2"}}).status,
      200);
  ASSERT_EQ(Call("POST", run, "/metrics", body).status, 200);
  EXPECT_EQ(Call("GET", run, "/metrics/x").Json()["count"], 9);
  // A refused batch does not burn its key.
  r = Call("POST", run, "/metrics", R"({"series": [{"name": "x", "values": ["bad"]}]})",
           "application/json", {{"Idempotency-Key", "k3"}});
  EXPECT_EQ(r.status, 400);
  r = Call("POST", run, "/metrics", body, "application/json", {{"Idempotency-Key", "k3"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.Json().contains("replayed")) << r.body;
  EXPECT_EQ(Call("GET", run, "/metrics/x").Json()["count"], 12);

  // Two copies of one batch at once: one is stored, both are answered 200.
  std::string big = R"({"series": [{"name": "y", "values": [)";
  for (int i = 0; i < 50000; ++i) big += (i ? ",1" : "1");
  big += "]}]}";
  Reply first, second;
  std::thread t([&] {
    first = Call("POST", run, "/metrics", big, "application/json", {{"Idempotency-Key", "c"}});
  });
  second = Call("POST", run, "/metrics", big, "application/json", {{"Idempotency-Key", "c"}});
  t.join();
  EXPECT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(Call("GET", run, "/metrics/y").Json()["count"], 50000);
}

// A client whose answer was lost because the daemon died resends under the same key after the
// daemon is back: the key was stored with the batch, so the batch is not stored twice.
TEST_F(TrackingIntegrationTest, IdempotencyKeySurvivesADaemonRestart) {
  const std::string run = MakeRun("idem-restart");
  const std::string body = R"({"series": [{"name": "x", "values": [1, 2, 3, 4]}]})";
  ASSERT_EQ(
      Call("POST", run, "/metrics", body, "application/json", {{"Idempotency-Key", "k"}}).status,
      200);
  ASSERT_NO_FATAL_FAILURE(StartDaemon());
  // The new daemon fails the run (no container behind it), so its run token may no longer
  // write: the replay is sent with the workspace token.
  Reply r = Http(port(), "POST", "/api/v1/jobs/" + run + "/metrics", admin(), body,
                 "application/json", {{"Idempotency-Key", "k"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["replayed"], true) << r.body;
  EXPECT_EQ(r.Json()["points"], 4);
  EXPECT_EQ(Call("GET", run, "/metrics/x").Json()["count"], 4);
}

TEST_F(TrackingIntegrationTest, TagsPropertiesAndStatus) {
  const std::string run = MakeRun("meta");
  Reply r = Call("PATCH", run, "/tags", R"({"set": {"k": "v", "gone": "x"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = Call("PATCH", run, "/tags", R"({"set": {"k": "v2"}, "remove": ["gone", "never"]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["tags"], json::parse(R"({"k": "v2"})"));
  EXPECT_EQ(Call("GET", run, "/tags").Json()["tags"], json::parse(R"({"k": "v2"})"));
  EXPECT_EQ(Call("PATCH", run, "/tags", R"({"set": {"k": 1}})").status, 400);
  EXPECT_EQ(Call("PATCH", run, "/tags", R"({"remove": "k"})").status, 400);

  r = Call("POST", run, "/properties", R"({"lr": "0.1", "opt": "adam"})");
  ASSERT_EQ(r.status, 200) << r.body;
  r = Call("POST", run, "/properties", R"({"lr": "0.1"})");  // the same value: fine
  EXPECT_EQ(r.status, 200) << r.body;
  r = Call("POST", run, "/properties", R"({"new": "1", "lr": "0.2"})");
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_NE(r.body.find("'lr'"), std::string::npos) << r.body;
  r = Call("GET", run, "/properties");
  EXPECT_EQ(r.Json()["properties"], json::parse(R"({"lr": "0.1", "opt": "adam"})")) << r.body;
  EXPECT_EQ(Call("POST", run, "/properties", R"(["x"])").status, 400);

  EXPECT_EQ(Call("POST", run, "/status", R"({"status": "Running"})").status, 400);
  r = Call("POST", run, "/status", R"({"status": "Failed", "message": "bad data"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto rec = store_->GetRun(run);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->script_status, store::RunStatus::kFailed);
  EXPECT_EQ(rec->script_message, "bad data");

  // Once the run has ended, its token writes nothing, and its verdict is settled.
  ASSERT_TRUE(store_->TransitionRun(run, store::RunStatus::kCompleted, NowMillis()).ok());
  r = Call("POST", run, "/status", R"({"status": "Completed"})");
  EXPECT_EQ(r.status, 403) << r.body;
  r = Http(port(), "POST", "/api/v1/jobs/" + run + "/status", admin(),
           R"({"status": "Completed"})");
  EXPECT_EQ(r.status, 409) << r.body;
}

TEST_F(TrackingIntegrationTest, EntriesAndFiles) {
  const std::string run = MakeRun("ent");
  Reply r = Call("POST", run, "/entries",
                 R"({"entries": [{"name": "l", "kind": "list", "value": [1, 2, "NaN"]},
                                 {"name": "r", "kind": "row", "value": {"a": 1}, "step": 3},
                                 {"name": "t", "kind": "table", "value": {"a": [1, 2]}}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Json()["entries"], 3);
  const std::string image =
      R"({"entries": [{"name": "img", "kind": "image", "value": {"path": "images/img/0.png"}}]})";
  r = Call("POST", run, "/entries", image);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("entry 0"), std::string::npos) << r.body;

  r = Call("PUT", run, "/files/images/img/0.png", "\x89PNG fake", "image/png");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.Json()["size"], 9);
  EXPECT_EQ(r.Json()["digest"], "sha256:" + Sha256Hex("\x89PNG fake")) << r.body;
  EXPECT_EQ(*ReadFile(layout_.RunDir(run) / "images/img/0.png"), "\x89PNG fake");
  r = Call("PUT", run, "/files/outputs/model.bin", "weights", "application/octet-stream");
  ASSERT_EQ(r.status, 201) << r.body;
  r = Call("PUT", run, "/files/outputs/model.bin", "weights2", "application/octet-stream");
  ASSERT_EQ(r.status, 201) << r.body;  // replaced whole
  EXPECT_EQ(*ReadFile(layout_.RunDir(run) / "outputs/model.bin"), "weights2");
  r = Call("POST", run, "/entries", image);
  ASSERT_EQ(r.status, 200) << r.body;

  // Uploads are listed with the digest of their last version, and served with it.
  json files = Http(port(), "GET", "/api/v1/jobs/" + run + "/files", admin()).Json();
  std::map<std::string, json> by_path;
  for (const json& f : files) by_path[f["path"].get<std::string>()] = f;
  ASSERT_TRUE(by_path.count("outputs/model.bin")) << files.dump();
  EXPECT_EQ(by_path["outputs/model.bin"]["digest"], "sha256:" + Sha256Hex("weights2"));
  EXPECT_EQ(by_path["outputs/model.bin"]["origin"], "upload");
  r = Http(port(), "GET", "/api/v1/jobs/" + run + "/files/outputs/model.bin", admin());
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "weights2");
  EXPECT_NE(r.head.find("ETag: \"sha256:" + Sha256Hex("weights2") + "\""), std::string::npos)
      << r.head;
  EXPECT_NE(r.head.find("Repr-Digest: sha-256=:"), std::string::npos) << r.head;
  // A file changed on disk after it was recorded is no longer vouched for.
  std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(WriteFileAtomic(layout_.RunDir(run) / "images/img/0.png", "rewritten").ok());
  files = Http(port(), "GET", "/api/v1/jobs/" + run + "/files", admin()).Json();
  for (const json& f : files) {
    if (f["path"] == "images/img/0.png") {
      EXPECT_FALSE(f.contains("digest")) << f.dump();
    }
  }
  r = Http(port(), "GET", "/api/v1/jobs/" + run + "/files/images/img/0.png", admin());
  EXPECT_EQ(r.head.find("ETag"), std::string::npos) << r.head;

  r = Call("GET", run, "/entries");
  ASSERT_EQ(r.status, 200) << r.body;
  json all = r.Json()["entries"];
  ASSERT_EQ(all.size(), 4u) << r.body;
  EXPECT_EQ(all[0]["name"], "l");
  EXPECT_EQ(all[0]["value"][2], "NaN");
  EXPECT_EQ(all[1]["step"], 3);
  r = Call("GET", run, "/entries?name=img");
  ASSERT_EQ(r.Json()["entries"].size(), 1u) << r.body;

  // Refused paths: the daemon's folders, climbing out, a folder, symlinks planted by the run.
  // A run token is stopped before its body is read (403); the user's token gets the reason.
  for (const char* bad : {"code/train.py", "user_logs/std_log.txt", "outputs/../../x",
                          "outputs/%2e%2e/code/x", "slurm/env.sh", "hostfile", "x.txt"}) {
    r = Call("PUT", run, std::string("/files/") + bad, "x", "application/octet-stream");
    EXPECT_EQ(r.status, 403) << bad << ": " << r.body;
    r = Http(port(), "PUT", "/api/v1/jobs/" + run + "/files/" + bad, admin(), "x",
             "application/octet-stream");
    EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
  }
  r = Call("PUT", run, "/files/outputs", "x", "application/octet-stream");
  EXPECT_EQ(r.status, 400) << r.body;
  fs::create_directory_symlink(root_, layout_.RunDir(run) / "outputs" / "escape");
  r = Call("PUT", run, "/files/outputs/escape/evil", "x", "application/octet-stream");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_FALSE(fs::exists(root_ / "evil"));
  // No temp files left behind.
  for (const auto& e : fs::recursive_directory_iterator(layout_.RunDir(run))) {
    EXPECT_EQ(e.path().filename().string().find(".upload-"), std::string::npos) << e.path();
  }
}

TEST_F(TrackingIntegrationTest, CppSdkLogs200kPointsOverTcp) {
  const std::string run = MakeRun("cpp");
  {
    sdk::Run r(run, daemon_->url(), Token(run));
    for (int i = 0; i < 200'000; ++i) r.Log("loss", 1.0 / (i + 1));
    r.Log("acc", std::numeric_limits<double>::quiet_NaN());
    r.Tag("lang", "c++");
  }  // the destructor flushes
  Reply rep = Call("GET", run, "/metrics");
  ASSERT_EQ(rep.status, 200) << rep.body;
  json list = rep.Json()["metrics"];
  ASSERT_EQ(list.size(), 2u) << rep.body;
  EXPECT_EQ(list[0]["name"], "acc");
  EXPECT_EQ(list[0]["last_value"], "NaN");
  EXPECT_EQ(list[1]["name"], "loss");
  EXPECT_EQ(list[1]["count"], 200'000);
  EXPECT_EQ(list[1]["last_step"], 199'999);
  EXPECT_EQ(Call("GET", run, "/tags").Json()["tags"]["lang"], "c++");
}

// A backlog bigger than the daemon's 64 MiB body limit (the client logged faster than it sent,
// or the daemon was away) goes out in several bodies, every point stored once, in order.
TEST_F(TrackingIntegrationTest, CppSdkSplitsABacklogLargerThanTheBodyLimit) {
  const std::string run = MakeRun("cpp-backlog");
  constexpr long kPoints = 3'000'000;  // 72 MB of values, steps and timestamps
  {
    sdk::Options options;
    options.flush_interval = std::chrono::hours(1);  // nothing leaves before the flush
    options.batch_points = 100'000'000;
    options.max_buffered_points = 100'000'000;
    sdk::Run r(run, daemon_->url(), Token(run), "", options);
    for (long i = 0; i < kPoints; ++i) r.Log("loss", static_cast<double>(i));
  }
  Reply rep = Call("GET", run, "/metrics");
  ASSERT_EQ(rep.status, 200) << rep.body;
  json loss = rep.Json()["metrics"][0];
  EXPECT_EQ(loss["count"], kPoints) << rep.body;
  EXPECT_EQ(loss["last_step"], kPoints - 1);
  EXPECT_EQ(loss["last_value"], static_cast<double>(kPoints - 1)) << "automatic steps in order";
}

// A body whose answer is lost is resent byte for byte under the same Idempotency-Key. The
// "daemon" here is a socket that reads the first request and hangs up without answering, then
// answers the second.
TEST_F(TrackingIntegrationTest, CppSdkResendsALostBodyUnderItsKey) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  const int lost_port = ntohs(addr.sin_port);

  // Reads one whole request (head + Content-Length body) from `fd`.
  auto read_request = [](int fd) {
    std::string in;
    char buf[65536];
    for (;;) {
      const std::size_t head_end = in.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        const std::size_t cl = in.find("Content-Length: ");
        const std::size_t n = cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 16));
        if (in.size() >= head_end + 4 + n) return in;
      }
      ssize_t got = ::recv(fd, buf, sizeof buf, 0);
      if (got <= 0) return in;
      in.append(buf, static_cast<std::size_t>(got));
    }
  };
  std::vector<std::string> requests;
  std::thread server([&] {
    for (int i = 0; i < 3; ++i) {
      int fd = ::accept(listener, nullptr, nullptr);
      if (fd < 0) return;
      std::string req = read_request(fd);
      requests.push_back(req);
      if (i > 0) {
        const std::string ok = "{\"points\": 3}";
        const std::string answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            "Content-Length: " +
            std::to_string(ok.size()) + "\r\nConnection: close\r\n\r\n" + ok;
        (void)::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
      }
      ::close(fd);  // the first request: hung up on, unanswered
    }
  });
  {
    sdk::Options options;
    options.flush_interval = std::chrono::hours(1);  // only the test's Flush calls send
    options.batch_points = 1'000'000;
    sdk::Run r("lost", "http://127.0.0.1:" + std::to_string(lost_port), "tok", "", options);
    r.Log("x", 1);
    r.Log("x", 2);
    r.Log("x", 3);
    EXPECT_ANY_THROW(r.Flush());  // the answer was lost
    r.Log("y", 9);                // logged meanwhile: must not join the resent body
    EXPECT_NO_THROW(r.Flush()) << "the resend must succeed";
  }
  server.join();
  ::close(listener);
  ASSERT_EQ(requests.size(), 3u);
  auto key_of = [](const std::string& req) {
    const std::size_t at = req.find("Idempotency-Key: ");
    return at == std::string::npos ? std::string()
                                   : req.substr(at + 17, req.find("\r\n", at) - at - 17);
  };
  auto body_of = [](const std::string& req) { return req.substr(req.find("\r\n\r\n") + 4); };
  EXPECT_FALSE(key_of(requests[0]).empty()) << requests[0].substr(0, 300);
  EXPECT_EQ(key_of(requests[0]), key_of(requests[1]));
  EXPECT_EQ(body_of(requests[0]), body_of(requests[1]));
  // What was logged after the failure went in a body of its own, under a new key.
  EXPECT_NE(key_of(requests[2]), key_of(requests[0]));
  EXPECT_NE(body_of(requests[2]), body_of(requests[0]));
}

// --- real containers -------------------------------------------------------------------------

class TrackingContainerTest : public TrackingIntegrationTest {
 protected:
  void SetUp() override {
    TY_REQUIRE_SERVICE(testing::DockerAvailable(), "dockerd at /var/run/docker.sock");
    TrackingIntegrationTest::SetUp();
  }

  std::string Submit(const std::string& script) {
    fs::path dir = root_ / ("src-" + RandomHex(4));
    EXPECT_TRUE(MakeDirs(dir).ok());
    EXPECT_TRUE(WriteFileAtomic(dir / "train.py", script).ok());
    cas::ObjectStore objects(layout_.ObjectsDir());
    cas::Snapshotter snap(objects, layout_.SnapshotsDir());
    auto snapshot = snap.Snapshot(dir, {});
    EXPECT_TRUE(snapshot.ok()) << snapshot.status().ToString();
    spec::RunRequest req;
    req.experiment_name = "tracking";
    req.command = "python train.py";
    spec::EnvironmentDefinition env;
    env.image = "python:3.11-slim";
    env.user_managed_dependencies = true;
    req.environment = env;
    json job = req.ToJson(spec::SecretMode::kPlain);
    job["snapshot_id"] = snapshot.ok() ? snapshot->id : "";
    Reply r = Http(port(), "POST", "/api/v1/jobs", admin(), job.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return r.Json().value("name", "");
  }

  json WaitForEnd(const std::string& name) {
    auto deadline = std::chrono::steady_clock::now() + 300s;
    json run;
    while (std::chrono::steady_clock::now() < deadline) {
      run = Http(port(), "GET", "/api/v1/jobs/" + name, admin()).Json();
      std::string s = run.value("status", "");
      if (s == "Completed" || s == "Failed" || s == "Canceled") return run;
      std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "run " << name << " stuck in " << run.value("status", "?");
    return run;
  }

  std::string Log(const std::string& name) {
    auto r = ReadFile(layout_.RunDir(name) / "user_logs/std_log.txt");
    return r.ok() ? *r : "";
  }
};

TEST_F(TrackingContainerTest, PythonSdkInAContainerReportsThroughTheSocket) {
  const std::string name = Submit(
      "from trainyard import Run\n"
      "run = Run.get_context()\n"
      "assert not run.offline, 'offline'\n"
      "[run.log('loss', 1.0 / (i + 1), step=i) for i in range(1000)]\n"
      "run.log('acc', float('nan'))\n"
      "run.tag('k', 'v')\n"
      "run.log_list('l', [1, 2, 3])\n"
      "print('logged', flush=True)\n");  // exits without flushing: atexit does it
  ASSERT_FALSE(name.empty());
  json run = WaitForEnd(name);
  ASSERT_EQ(run["status"], "Completed") << run.dump() << "\n" << Log(name);
  EXPECT_NE(Log(name).find("logged"), std::string::npos) << Log(name);

  Reply r = Http(port(), "GET", "/api/v1/jobs/" + name + "/metrics", admin());
  ASSERT_EQ(r.status, 200) << r.body;
  json list = r.Json()["metrics"];
  ASSERT_EQ(list.size(), 2u) << r.body << "\n" << Log(name);
  EXPECT_EQ(list[0]["name"], "acc");
  EXPECT_EQ(list[0]["last_value"], "NaN");
  EXPECT_EQ(list[1]["name"], "loss");
  EXPECT_EQ(list[1]["count"], 1000);
  EXPECT_DOUBLE_EQ(list[1]["last_value"].get<double>(), 0.001);
  EXPECT_EQ(list[1]["last_step"], 999);
  EXPECT_EQ(run["tags"]["k"], "v") << run.dump();
  r = Http(port(), "GET", "/api/v1/jobs/" + name + "/entries", admin());
  ASSERT_EQ(r.Json()["entries"].size(), 1u) << r.body;
  EXPECT_EQ(r.Json()["entries"][0]["value"], json::parse("[1, 2, 3]")) << r.body;
}

// ./outputs is hashed at Finalizing: each regular file is listed with its digest, what the run
// planted (a symlink to a host file, a FIFO) is neither listed as an output nor followed.
TEST_F(TrackingContainerTest, OutputsAreRecordedWithTheirDigestsWhenTheRunEnds) {
  const std::string name = Submit(
      "import os\n"
      "os.makedirs('outputs/sub', exist_ok=True)\n"
      "open('outputs/model.bin', 'wb').write(b'weights' * 1000)\n"
      "open('outputs/sub/notes.txt', 'w').write('hello')\n"
      "os.symlink('/etc/passwd', 'outputs/passwd')\n"
      "os.mkfifo('outputs/pipe')\n");
  ASSERT_FALSE(name.empty());
  json run = WaitForEnd(name);
  ASSERT_EQ(run["status"], "Completed") << run.dump() << "\n" << Log(name);
  json files = Http(port(), "GET", "/api/v1/jobs/" + name + "/files", admin()).Json();
  std::map<std::string, json> outputs;
  for (const json& f : files) {
    if (f.value("origin", "") == "output") outputs[f["path"].get<std::string>()] = f;
  }
  std::string weights;
  for (int i = 0; i < 1000; ++i) weights += "weights";
  ASSERT_EQ(outputs.size(), 2u) << files.dump();
  EXPECT_EQ(outputs["outputs/model.bin"]["digest"], "sha256:" + Sha256Hex(weights));
  EXPECT_EQ(outputs["outputs/model.bin"]["size"], 7000);
  EXPECT_EQ(outputs["outputs/sub/notes.txt"]["digest"], "sha256:" + Sha256Hex("hello"));
  for (const json& f : files) EXPECT_NE(f["path"], "outputs/passwd") << files.dump();
}

TEST_F(TrackingContainerTest, ScriptThatCallsFailEndsFailedWhateverItsExitCode) {
  const std::string name = Submit(
      "from trainyard import Run\n"
      "run = Run.get_context()\n"
      "run.log('x', 1.0)\n"
      "run.fail('bad data')\n"
      "print('exiting 0', flush=True)\n");
  ASSERT_FALSE(name.empty());
  json run = WaitForEnd(name);
  EXPECT_EQ(run["status"], "Failed") << run.dump() << "\n" << Log(name);
  EXPECT_EQ(run["failure_reason"], "failed by the script: bad data") << run.dump();
  EXPECT_EQ(run["exit_code"], 0) << run.dump();
  Reply r = Http(port(), "GET", "/api/v1/jobs/" + name + "/metrics/x", admin());
  EXPECT_EQ(r.Json()["count"], 1) << r.body;
}

// The rest of the Python SDK's calls against the real daemon: what its tests check against the
// twin (sdk/python/tests/twin.py) must hold here too.
TEST_F(TrackingContainerTest, PythonSdkReadsBackTagsPropertiesEntriesAndFiles) {
  const std::string name = Submit(
      "import io, math\n"
      "from trainyard import Run, PropertyConflictError\n"
      "run = Run.get_context()\n"
      "run.add_properties({'lr': '0.1'})\n"
      "run.add_properties({'lr': '0.1'})\n"
      "try:\n"
      "    run._backend.add_properties({'lr': '0.2'})\n"
      "    raise SystemExit('no conflict')\n"
      "except PropertyConflictError as e:\n"
      "    assert 'lr' in str(e), e\n"
      "assert run.get_properties() == {'lr': '0.1'}, run.get_properties()\n"
      "run.set_tags({'a': '1', 'b': '2'})\n"
      "run.remove_tags('b')\n"
      "tags = run.get_tags()\n"
      "assert tags.get('a') == '1' and 'b' not in tags, tags\n"
      "run.upload_file('outputs/notes.txt', io.BytesIO(b'hello'))\n"
      "open('/tmp/x.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\nrest')\n"
      "run.log_image('pic', path='/tmp/x.png')\n"
      "run.log_row('r', a=1, b=2.5)\n"
      "run.log_table('t', {'x': [1, 2], 'y': [3, float('inf')]})\n"
      "for i in range(5):\n"
      "    run.log('m', i * 1.0)\n"
      "m = run.get_metrics()\n"
      "assert m['m'] == [0.0, 1.0, 2.0, 3.0, 4.0], m\n"
      "assert m['pic'] == 'images/pic/0.png', m\n"
      "assert m['r'] == {'a': [1.0], 'b': [2.5]}, m\n"
      "assert math.isinf(m['t']['y'][1]), m\n"
      "run.complete()\n"
      "print('SDK OK', flush=True)\n");
  ASSERT_FALSE(name.empty());
  json run = WaitForEnd(name);
  ASSERT_EQ(run["status"], "Completed") << run.dump() << "\n" << Log(name);
  EXPECT_NE(Log(name).find("SDK OK"), std::string::npos) << Log(name);
  EXPECT_EQ(*ReadFile(layout_.RunDir(name) / "outputs/notes.txt"), "hello");
  auto rec = store_->GetRun(name);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->script_status, store::RunStatus::kCompleted);
}

}  // namespace
}  // namespace trainyard

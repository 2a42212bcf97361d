#include "trainyard/http/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/tls.h"
#include "trainyard/common/util.h"

namespace trainyard {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::int64_t MillisSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// What the upload route's sinks saw.
struct UploadLog {
  std::mutex mu;
  std::vector<std::string> pieces;  // GUARDED_BY(mu)
  std::thread::id write_thread;     // GUARDED_BY(mu)
  std::thread::id finish_thread;    // GUARDED_BY(mu)
  std::atomic<int> opened{0};
  std::atomic<int> finished{0};
  std::atomic<int> destroyed{0};
  // When set, Finish waits for it (to show that a blocked Finish holds up no event loop).
  std::shared_future<void> finish_gate;
};

// Counters the test handlers update, to observe what the server did.
struct Observed {
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  UploadLog upload;
  // GET /block waits for it (a sync handler doing blocking work: SQLite, a tree walk, sinfo).
  std::shared_future<void> block_gate;
  std::atomic<int> blocked{0};
};

// Keeps what it is sent; Finish answers 201 {name, size}.
class RecordingSink : public BodySink {
 public:
  RecordingSink(UploadLog* log, std::string name) : log_(log), name_(std::move(name)) {
    ++log_->opened;
  }
  ~RecordingSink() override { ++log_->destroyed; }

  Status Write(std::string_view data) override {
    std::lock_guard<std::mutex> lock(log_->mu);
    log_->pieces.emplace_back(data);
    log_->write_thread = std::this_thread::get_id();
    size_ += data.size();
    if (name_ == "fail-at-100" && size_ >= 100) return InvalidArgument("sink refuses byte 100");
    return Status::Ok();
  }

  HttpResponse Finish() override {
    if (log_->finish_gate.valid()) log_->finish_gate.wait();
    {
      std::lock_guard<std::mutex> lock(log_->mu);
      log_->finish_thread = std::this_thread::get_id();
    }
    ++log_->finished;
    if (name_ == "throw") throw std::runtime_error("finish boom");
    return HttpResponse::Json(201, {{"name", name_}, {"size", size_}});
  }

 private:
  UploadLog* log_;
  std::string name_;
  std::uint64_t size_ = 0;
};

constexpr std::uint64_t kUploadLimit = 1 << 20;

// Registers the routes every test server has. `files_root` is served under /files/.
void AddTestRoutes(HttpServer& server, const fs::path& files_root, Observed* observed) {
  server.RouteOnLoop("GET", "/api/v1/health", SyncHandler([](HttpRequest&) {
                       return HttpResponse::Json(200, {{"ok", true}});
                     }));
  server.Route("GET", "/block", SyncHandler([observed](HttpRequest&) {
                 ++observed->blocked;
                 if (observed->block_gate.valid()) observed->block_gate.wait();
                 --observed->blocked;
                 return HttpResponse::Json(200, {{"blocked", true}});
               }));
  server.Route("GET", "/api/v1/runs/{id}", SyncHandler([](HttpRequest& req) {
                 return HttpResponse::Json(200, {{"id", req.Param("id")}, {"by", req.principal}});
               }));
  server.Route("GET", "/api/v1/runs/search", SyncHandler([](HttpRequest&) {
                 return HttpResponse::Json(200, {{"search", true}});
               }));
  server.Route("GET", "/api/v1/runs/{id}/logs", SyncHandler([](HttpRequest& req) {
                 json out = {{"id", req.Param("id")}, {"tags", req.QueryAll("tag")}};
                 for (const char* name : {"q", "x", "absent"}) {
                   std::optional<std::string> v = req.Query(name);
                   out[name] = v ? json(*v) : json(nullptr);
                 }
                 out["user_agent_seen"] = req.Header("USER-AGENT").has_value();
                 return HttpResponse::Json(200, out);
               }));
  server.Route("POST", "/echo", AsyncHandler([](HttpRequest& req) -> asio::awaitable<HttpResponse> {
                 StatusOr<json> body = req.JsonBody();
                 if (!body.ok()) co_return HttpResponse::FromStatus(body.status());
                 co_return HttpResponse::Json(201, {{"method", req.method}, {"got", *body}});
               }));
  server.Route("PUT", "/echo", SyncHandler([](HttpRequest& req) {
                 StatusOr<json> body = req.JsonBody();
                 if (!body.ok()) return HttpResponse::FromStatus(body.status());
                 return HttpResponse::Json(200, {{"method", req.method}, {"got", *body}});
               }));
  server.Route("DELETE", "/items/{id}", SyncHandler([](HttpRequest& req) {
                 return HttpResponse::Json(200, {{"deleted", req.Param("id")}});
               }));
  server.Route("POST", "/size", SyncHandler([](HttpRequest& req) {
                 return HttpResponse::Json(200, {{"size", req.body.size()}});
               }));
  server.Route("GET", "/missing/{id}", SyncHandler([](HttpRequest& req) {
                 return HttpResponse::FromStatus(NotFound("run " + req.Param("id") + " not found"));
               }));
  server.Route("GET", "/exists", SyncHandler([](HttpRequest&) {
                 return HttpResponse::FromStatus(AlreadyExists("environment e1 exists"));
               }));
  server.Route("GET", "/throw",
               SyncHandler([](HttpRequest&) -> HttpResponse { throw std::runtime_error("boom"); }));
  server.Route(
      "GET", "/throw-async", AsyncHandler([](HttpRequest&) -> asio::awaitable<HttpResponse> {
        asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
        co_await timer.async_wait(asio::use_awaitable);
        throw std::logic_error("async boom");
      }));
  server.Route("GET", "/files/{path...}", SyncHandler([files_root](HttpRequest& req) {
                 auto root = RootedDir::Open(files_root);
                 if (!root.ok()) return HttpResponse::FromStatus(root.status());
                 auto file = root->OpenFile(req.Param("path"));
                 if (!file.ok()) return HttpResponse::FromStatus(file.status());
                 return HttpResponse::File(std::move(file).value());
               }));
  // Long poll: ?since=<sequence>&timeout_ms=<n>. Replies whether the key's sequence moved.
  Notifier* notifier = &server.notifier();
  server.Route("GET", "/wait/{key}",
               AsyncHandler([notifier](HttpRequest& req) -> asio::awaitable<HttpResponse> {
                 const std::uint64_t since = std::stoull(req.Query("since").value_or("0"));
                 const auto timeout =
                     std::chrono::milliseconds(std::stoll(req.Query("timeout_ms").value_or("0")));
                 const std::uint64_t now = co_await notifier->WaitForChange(req.Param("key"), since,
                                                                            Clock::now() + timeout);
                 co_return HttpResponse::Json(200, {{"changed", now != since}, {"sequence", now}});
               }));
  // The usual long-poll loop: re-check after every wake-up until something changed or the
  // deadline. ?changed_after=<sequence> plays the part of the client's cursor.
  server.Route("GET", "/loop/{key}",
               AsyncHandler([notifier](HttpRequest& req) -> asio::awaitable<HttpResponse> {
                 const std::string key = req.Param("key");
                 const std::uint64_t cursor = std::stoull(req.Query("cursor").value_or("0"));
                 const auto deadline =
                     Clock::now() +
                     std::chrono::milliseconds(std::stoll(req.Query("timeout_ms").value_or("0")));
                 for (;;) {
                   const std::uint64_t seen = notifier->Sequence(key);
                   if (seen != cursor || Clock::now() >= deadline) {
                     co_return HttpResponse::Json(200, {{"sequence", seen}});
                   }
                   co_await notifier->WaitForChange(key, seen, deadline);
                 }
               }));
  // Sleeps on a timer (without blocking its thread) and counts overlapping requests.
  server.Route("GET", "/slow/{i}",
               AsyncHandler([observed](HttpRequest& req) -> asio::awaitable<HttpResponse> {
                 const int now = ++observed->in_flight;
                 int seen = observed->max_in_flight.load();
                 while (now > seen && !observed->max_in_flight.compare_exchange_weak(seen, now)) {
                 }
                 asio::steady_timer timer(co_await asio::this_coro::executor,
                                          std::chrono::milliseconds(20));
                 co_await timer.async_wait(asio::use_awaitable);
                 --observed->in_flight;
                 co_return HttpResponse::Text(200, "slow " + req.Param("i"));
               }));
  UploadLog* upload = &observed->upload;
  server.UploadRoute("PUT", "/upload/{name}", kUploadLimit,
                     [upload](HttpRequest& req) -> StatusOr<std::unique_ptr<BodySink>> {
                       if (req.Param("name") == "bad") {
                         return InvalidArgument("upload name 'bad' is refused");
                       }
                       return std::unique_ptr<BodySink>(
                           std::make_unique<RecordingSink>(upload, req.Param("name")));
                     });
}

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("trainyard_http_test_" + RandomHex(6));
    ASSERT_TRUE(MakeDirs(root_ / "files").ok());
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    ASSERT_TRUE(RemoveTree(root_).ok());
  }

  void StartServer(HttpServerOptions options = {}) {
    server_ = std::make_unique<HttpServer>(std::move(options));
    AddTestRoutes(*server_, root_ / "files", &observed_);
    const Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started.ToString();
    ASSERT_GT(server_->port(), 0);
    client_ = std::make_unique<HttpClient>(BaseUrl());
  }

  std::string BaseUrl() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  // A raw HTTP/1.1 connection, for what the client does not expose.
  tcp::socket Connect(asio::io_context& ioc) {
    tcp::socket socket(ioc);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                                 static_cast<unsigned short>(server_->port())));
    return socket;
  }

  fs::path root_;
  Observed observed_;
  std::unique_ptr<HttpServer> server_;
  std::unique_ptr<HttpClient> client_;
};

TEST_F(HttpTest, PathParamsAndPercentDecodedQuery) {
  StartServer();
  StatusOr<json> got =
      client_->GetJson("/api/v1/runs/run%201/logs?q=a%20b+c&x=%2F%3D%26&tag=1&tag=two");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)["id"], "run 1");
  EXPECT_EQ((*got)["q"], "a b c");
  EXPECT_EQ((*got)["x"], "/=&");
  EXPECT_EQ((*got)["tags"], json({"1", "two"}));
  EXPECT_TRUE((*got)["absent"].is_null());
  EXPECT_EQ((*got)["user_agent_seen"], true);  // Header lookup ignores case.

  // An id built with UrlEncode survives the trip unchanged.
  const std::string odd_id = "a b/c%d?e";
  got = client_->GetJson("/api/v1/runs/" + HttpClient::UrlEncode(odd_id) + "/logs");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)["id"], odd_id);
}

TEST_F(HttpTest, LiteralSegmentBeatsCaptureAndTrailingSlashIsIgnored) {
  StartServer();
  StatusOr<json> got = client_->GetJson("/api/v1/runs/search");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["search"], true);
  got = client_->GetJson("/api/v1/runs/abc/");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)["id"], "abc");
}

TEST_F(HttpTest, JsonRoundTrip) {
  StartServer();
  const json payload = {{"name", "résumé ✓"},
                        {"n", 42},
                        {"pi", 3.25},
                        {"list", {1, 2, 3}},
                        {"nested", {{"null", nullptr}, {"flag", false}}}};
  StatusOr<json> posted = client_->PostJson("/echo", payload);
  ASSERT_TRUE(posted.ok()) << posted.status().ToString();
  EXPECT_EQ((*posted)["method"], "POST");
  EXPECT_EQ((*posted)["got"], payload);

  StatusOr<json> put = client_->PutJson("/echo", payload);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ((*put)["method"], "PUT");
  EXPECT_EQ((*put)["got"], payload);

  StatusOr<json> deleted = client_->DeleteJson("/items/it%2F1");
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ((*deleted)["deleted"], "it/1");

  // A large body goes through the 100-continue exchange without the client's 1 s fallback wait.
  const Clock::time_point start = Clock::now();
  StatusOr<HttpResult> size = client_->Request("POST", "/size", std::string(3 << 20, 'z'));
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(json::parse(size->body)["size"], 3 << 20);
  EXPECT_LT(MillisSince(start), 900);

  // A body that is not JSON is the caller's error.
  StatusOr<HttpResult> bad = client_->Request("POST", "/echo", "{not json");
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["code"], "INVALID_ARGUMENT");
}

TEST_F(HttpTest, UnknownRouteIs404Json) {
  StartServer();
  StatusOr<HttpResult> raw = client_->Request("GET", "/no/such/route");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->status, 404);
  EXPECT_EQ(raw->headers["content-type"], "application/json");
  const json body = json::parse(raw->body);
  EXPECT_EQ(body["error"]["code"], "NOT_FOUND");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("/no/such/route"), std::string::npos);

  StatusOr<json> got = client_->GetJson("/no/such/route");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
}

TEST_F(HttpTest, WrongMethodIs405WithAllow) {
  StartServer();
  StatusOr<HttpResult> raw = client_->Request("POST", "/api/v1/runs/abc", "{}");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->status, 405);
  EXPECT_EQ(raw->headers["allow"], "GET");
  EXPECT_EQ(json::parse(raw->body)["error"]["code"], "METHOD_NOT_ALLOWED");

  raw = client_->Request("GET", "/echo");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->status, 405);
  EXPECT_EQ(raw->headers["allow"], "POST, PUT");
}

TEST_F(HttpTest, StatusErrorsKeepCodeAndMessage) {
  StartServer();
  StatusOr<json> got = client_->GetJson("/missing/r42");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(got.status().message(), "run r42 not found");

  // 409 is ambiguous as a number; the error's code name disambiguates.
  got = client_->GetJson("/exists");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(got.status().message(), "environment e1 exists");
}

TEST_F(HttpTest, BearerTokenRequiredExceptForHealth) {
  HttpServerOptions options;
  options.bearer_token = "s3cret-token";
  options.token_scope = [](std::string_view token,
                           const HttpRequest& request) -> StatusOr<std::string> {
    if (token != "run-token") return Unauthenticated("unknown token");
    if (!StartsWith(request.path + "/", "/api/v1/runs/r1/")) {
      return PermissionDenied("outside /api/v1/runs/r1/");
    }
    return std::string("run r1");
  };
  StartServer(std::move(options));

  StatusOr<HttpResult> raw = client_->Request("GET", "/api/v1/runs/r1");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->status, 401);
  EXPECT_EQ(json::parse(raw->body)["error"]["code"], "UNAUTHENTICATED");
  // Unknown routes do not reveal themselves to unauthenticated callers.
  raw = client_->Request("GET", "/no/such/route");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->status, 401);
  // Health is open, but only for GET.
  StatusOr<json> health = client_->GetJson("/api/v1/health");
  ASSERT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ((*health)["ok"], true);
  raw = client_->Request("POST", "/api/v1/health", "{}");
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->status, 401);

  HttpClient wrong(BaseUrl(), "s3cret-tokeN");
  StatusOr<json> denied = wrong.GetJson("/api/v1/runs/r1");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.status().code(), StatusCode::kUnauthenticated);
  HttpClient prefix(BaseUrl(), "s3cret");
  EXPECT_EQ(prefix.GetJson("/api/v1/runs/r1").status().code(), StatusCode::kUnauthenticated);

  HttpClient right(BaseUrl(), "s3cret-token");
  StatusOr<json> allowed = right.GetJson("/api/v1/runs/r1");
  ASSERT_TRUE(allowed.ok()) << allowed.status().ToString();
  EXPECT_EQ((*allowed)["id"], "r1");
  // An unauthenticated POST with a body is refused, and the client can still reuse the server.
  raw = client_->Request("POST", "/echo", std::string(100000, 'x'));
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  EXPECT_EQ(raw->status, 401);

  // The token_scope hook's verdict stands: its tokens are admitted where it says, else 403.
  HttpClient run_client(BaseUrl(), "run-token");
  StatusOr<json> as_run = run_client.GetJson("/api/v1/runs/r1");
  ASSERT_TRUE(as_run.ok()) << as_run.status().ToString();
  EXPECT_EQ((*as_run)["by"], "run r1") << "the handler sees who the token stands for";
  EXPECT_EQ((*allowed)["by"], "") << "the workspace token stands for the user";
  EXPECT_EQ(run_client.GetJson("/api/v1/runs/r2").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(run_client.GetJson("/api/v1/runs/r10").status().code(), StatusCode::kPermissionDenied)
      << "a prefix of another run's name is not that run";
  raw = run_client.Request("GET", "/api/v1/runs/r1/../r2");
  ASSERT_TRUE(raw.ok());
  EXPECT_NE(raw->status, 200) << "dot segments do not leave the scope";
  HttpClient unknown(BaseUrl(), "other-token");
  EXPECT_EQ(unknown.GetJson("/api/v1/runs/r1").status().code(), StatusCode::kUnauthenticated);
}

TEST_F(HttpTest, BodyOverLimitIs413NamingTheLimit) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(std::move(options));

  StatusOr<json> ok = client_->PostJson("/size", json(std::string(1000, 'a')));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ((*ok)["size"], 1002);  // The JSON string with its quotes.

  StatusOr<HttpResult> raw = client_->Request("POST", "/size", std::string(4096, 'a'));
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();
  EXPECT_EQ(raw->status, 413);
  const json body = json::parse(raw->body);
  EXPECT_EQ(body["error"]["code"], "PAYLOAD_TOO_LARGE");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("1024"), std::string::npos);

  // Much larger than socket buffers: the server still gets its answer through.
  StatusOr<HttpResult> huge = client_->Request("POST", "/size", std::string(8 << 20, 'b'));
  ASSERT_TRUE(huge.ok()) << huge.status().ToString();
  EXPECT_EQ(huge->status, 413);

  // The server carries on.
  EXPECT_TRUE(client_->GetJson("/api/v1/health").ok());
}

TEST_F(HttpTest, ChunkedBodyOverLimitIs413) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(std::move(options));
  asio::io_context ioc;
  tcp::socket socket = Connect(ioc);
  std::string request =
      "POST /size HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" +
      std::string(0x800, 'a') + "\r\n0\r\n\r\n";
  asio::write(socket, asio::buffer(request));
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response);
  EXPECT_EQ(response.result_int(), 413);
  EXPECT_EQ(json::parse(response.body())["error"]["code"], "PAYLOAD_TOO_LARGE");
}

TEST_F(HttpTest, HandlerExceptionIs500AndServerCarriesOn) {
  StartServer();
  for (const char* path : {"/throw", "/throw-async"}) {
    StatusOr<HttpResult> raw = client_->Request("GET", path);
    ASSERT_TRUE(raw.ok());
    EXPECT_EQ(raw->status, 500);
    const json body = json::parse(raw->body);
    EXPECT_EQ(body["error"]["code"], "INTERNAL");
    EXPECT_NE(body["error"]["message"].get<std::string>().find("boom"), std::string::npos);
    StatusOr<json> health = client_->GetJson("/api/v1/health");
    EXPECT_TRUE(health.ok()) << health.status().ToString();
  }
}

TEST_F(HttpTest, LongPollWakesWhenNotifiedFromAnotherThread) {
  StartServer();
  Notifier& notifier = server_->notifier();
  const std::uint64_t seq = notifier.Sequence("run-1");
  const Clock::time_point start = Clock::now();
  auto poll = std::async(std::launch::async, [&] {
    return client_->GetJson("/wait/run-1?since=" + std::to_string(seq) + "&timeout_ms=10000",
                            20000);
  });
  // Notify only once the handler is really suspended, so the wake-up path is what is tested.
  while (notifier.WaiterCount("run-1") == 0 && MillisSince(start) < 5000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(notifier.WaiterCount("run-1"), 1u);
  notifier.Notify("run-2");  // Another key wakes no one.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(poll.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  notifier.Notify("run-1");  // From a thread that runs no event loop.
  StatusOr<json> got = poll.get();
  const std::int64_t elapsed = MillisSince(start);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)["changed"], true);
  EXPECT_EQ((*got)["sequence"], notifier.Sequence("run-1"));
  EXPECT_LT(elapsed, 5000);
  EXPECT_EQ(notifier.WaiterCount("run-1"), 0u);
}

TEST_F(HttpTest, LongPollReturnsAtDeadlineWithoutNotify) {
  StartServer();
  const Clock::time_point start = Clock::now();
  StatusOr<json> got = client_->GetJson("/wait/quiet?since=0&timeout_ms=300");
  const std::int64_t elapsed = MillisSince(start);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)["changed"], false);
  EXPECT_GE(elapsed, 300);
  EXPECT_LT(elapsed, 3000);
  EXPECT_EQ(server_->notifier().WaiterCount("quiet"), 0u);
}

TEST_F(HttpTest, NotifyBetweenSequenceAndWaitIsNotLost) {
  StartServer();
  Notifier& notifier = server_->notifier();
  const std::uint64_t seq = notifier.Sequence("run-7");
  notifier.Notify("run-7");  // Lands before the wait begins.
  const Clock::time_point start = Clock::now();
  StatusOr<json> got =
      client_->GetJson("/wait/run-7?since=" + std::to_string(seq) + "&timeout_ms=10000");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)["changed"], true);
  EXPECT_LT(MillisSince(start), 2000);
}

TEST_F(HttpTest, FiftyConcurrentRequestsFromSeveralThreads) {
  HttpServerOptions options;
  options.threads = 2;
  StartServer(std::move(options));
  constexpr int kThreads = 5;
  constexpr int kPerThread = 10;
  std::atomic<int> answered{0};
  std::vector<std::string> failures;
  std::mutex failures_mu;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = std::to_string(t * 100 + i);
        // The client is shared across threads on purpose.
        StatusOr<HttpResult> r = client_->Request("GET", "/slow/" + id);
        if (r.ok() && r->status == 200 && r->body == "slow " + id) {
          ++answered;
        } else {
          std::lock_guard<std::mutex> lock(failures_mu);
          failures.push_back(r.ok() ? r->body : r.status().ToString());
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(answered.load(), kThreads * kPerThread);
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_GT(observed_.max_in_flight.load(), 1);  // Requests did overlap.
}

TEST_F(HttpTest, FileResponseDownloadsIntact) {
  StartServer();
  std::string data(5 * 1000 * 1000 + 17, '\0');
  std::mt19937_64 rng(7);
  for (char& c : data) c = static_cast<char>(rng());
  ASSERT_TRUE(MakeDirs(root_ / "files" / "sub dir").ok());
  ASSERT_TRUE(WriteFileAtomic(root_ / "files" / "sub dir" / "big.bin", data).ok());

  const fs::path dest = root_ / "out" / "nested" / "big.bin";
  const Status s =
      client_->DownloadTo("/files/" + HttpClient::UrlEncodePath("sub dir/big.bin"), dest);
  ASSERT_TRUE(s.ok()) << s.ToString();
  StatusOr<std::string> got = ReadFile(dest);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size(), data.size());
  EXPECT_TRUE(*got == data);
  // Only the final file is left behind.
  int entries = 0;
  for (const auto& entry : fs::directory_iterator(dest.parent_path())) {
    ++entries;
    EXPECT_EQ(entry.path().filename(), "big.bin");
  }
  EXPECT_EQ(entries, 1);

  StatusOr<HttpResult> head = client_->Request("GET", "/files/sub%20dir/big.bin");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->headers["content-length"], std::to_string(data.size()));
  EXPECT_EQ(head->headers["content-type"], "application/octet-stream");

  // A failed download leaves nothing behind and keeps the server's message.
  const fs::path missing_dest = root_ / "out" / "missing.bin";
  const Status missing = client_->DownloadTo("/files/sub%20dir/nope.bin", missing_dest);
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "'sub dir/nope.bin' does not exist");
  EXPECT_FALSE(fs::exists(missing_dest));
  // "{path...}" captures arrive decoded; ".." is refused by RootedDir in the handler.
  EXPECT_EQ(client_->DownloadTo("/files/%2E%2E/secret", missing_dest).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(HttpTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  StartServer();
  asio::io_context ioc;
  tcp::socket socket = Connect(ioc);
  beast::flat_buffer buffer;
  for (const char* id : {"one", "two", "three"}) {
    http::request<http::string_body> request{http::verb::get, std::string("/api/v1/runs/") + id,
                                             11};
    request.set(http::field::host, "127.0.0.1");
    http::write(socket, request);
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    EXPECT_EQ(response.version(), 11u);
    EXPECT_EQ(response.result_int(), 200);
    EXPECT_TRUE(response.keep_alive());
    EXPECT_EQ(json::parse(response.body())["id"], id);
  }
}

TEST_F(HttpTest, ExpectContinueGetsInterimResponse) {
  StartServer();
  asio::io_context ioc;
  tcp::socket socket = Connect(ioc);
  const std::string header =
      "POST /size HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  asio::write(socket, asio::buffer(header));
  beast::flat_buffer buffer;
  http::response<http::empty_body> interim;
  http::read(socket, buffer, interim);
  EXPECT_EQ(interim.result_int(), 100);
  asio::write(socket, asio::buffer(std::string("hello")));
  http::response<http::string_body> response;
  http::read(socket, buffer, response);
  EXPECT_EQ(response.result_int(), 200);
  EXPECT_EQ(json::parse(response.body())["size"], 5);
}

TEST_F(HttpTest, StartFailsWhenPortIsTaken) {
  StartServer();
  HttpServerOptions options;
  options.port = server_->port();
  HttpServer second(std::move(options));
  const Status s = second.Start();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("127.0.0.1:" + std::to_string(server_->port())), std::string::npos)
      << s.message();
}

TEST_F(HttpTest, MalformedRoutePatternFailsStart) {
  HttpServer server(HttpServerOptions{});
  server.Route("GET", "/a/{rest...}/b", SyncHandler([](HttpRequest&) { return HttpResponse(); }));
  const Status s = server.Start();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("/a/{rest...}/b"), std::string::npos) << s.message();
}

TEST_F(HttpTest, StopEndsPendingLongPollPromptly) {
  StartServer();
  auto poll = std::async(std::launch::async, [&] {
    return client_->GetJson("/loop/forever?cursor=0&timeout_ms=60000", 20000);
  });
  const Clock::time_point start = Clock::now();
  while (server_->notifier().WaiterCount("forever") == 0 && MillisSince(start) < 5000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(server_->notifier().WaiterCount("forever"), 1u);
  // A Notify racing with Stop from another thread is safe.
  std::thread racing([&] {
    for (int i = 0; i < 200; ++i) server_->notifier().Notify("forever");
  });
  server_->Stop();
  racing.join();
  EXPECT_LT(MillisSince(start), 5000);
  // The in-flight long poll is dropped: the client sees the connection close.
  ASSERT_EQ(poll.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  StatusOr<json> got = poll.get();
  if (!got.ok()) {
    EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
  }
  // Notify after Stop is harmless.
  server_->notifier().Notify("forever");
}

TEST_F(HttpTest, ClientTransportErrorsAreUnavailableNamingTheUrl) {
  StartServer();
  StatusOr<HttpResult> slow = client_->Request("GET", "/wait/k?since=0&timeout_ms=5000", "",
                                               "application/json", /*timeout_ms=*/200);
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(slow.status().message().find(BaseUrl() + "/wait/k"), std::string::npos)
      << slow.status().message();

  const int port = server_->port();
  server_->Stop();
  HttpClient refused("http://127.0.0.1:" + std::to_string(port) + "/");
  StatusOr<json> got = refused.GetJson("/api/v1/health");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(
      got.status().message().find("http://127.0.0.1:" + std::to_string(port) + "/api/v1/health"),
      std::string::npos)
      << got.status().message();
}

// --- Upload routes ---------------------------------------------------------------------------

std::string RandomBytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

// Waits up to 5 s for `pred`.
template <class Pred>
bool Eventually(Pred pred) {
  const Clock::time_point start = Clock::now();
  while (!pred()) {
    if (MillisSince(start) > 5000) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

TEST_F(HttpTest, UploadPiecesArriveInOrderAndFinishOffTheEventLoop) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;  // Normal routes only: uploads have their own limit.
  StartServer(std::move(options));
  const std::string body = RandomBytes(900 * 1024, 1);
  StatusOr<HttpResult> put = client_->Request("PUT", "/upload/a", body, "application/octet-stream");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  ASSERT_EQ(put->status, 201) << put->body;
  EXPECT_EQ(json::parse(put->body), json({{"name", "a"}, {"size", body.size()}}));

  UploadLog& log = observed_.upload;
  EXPECT_EQ(log.opened, 1);
  EXPECT_EQ(log.finished, 1);
  EXPECT_EQ(log.destroyed, 1);
  std::lock_guard<std::mutex> lock(log.mu);
  EXPECT_GT(log.pieces.size(), 1u);  // Streamed, not buffered whole.
  std::string joined;
  for (const std::string& piece : log.pieces) joined += piece;
  EXPECT_TRUE(joined == body);
  EXPECT_NE(log.write_thread, log.finish_thread);
}

TEST_F(HttpTest, ChunkedUploadWithExpectContinue) {
  StartServer();
  asio::io_context ioc;
  tcp::socket socket = Connect(ioc);
  asio::write(socket, asio::buffer(std::string(
                          "PUT /upload/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          "Expect: 100-continue\r\n\r\n")));
  beast::flat_buffer buffer;
  http::response<http::empty_body> interim;
  http::read(socket, buffer, interim);
  ASSERT_EQ(interim.result_int(), 100);
  asio::write(socket, asio::buffer(std::string("5\r\nhello\r\n")));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  asio::write(socket, asio::buffer(std::string("6\r\n world\r\n0\r\n\r\n")));
  http::response<http::string_body> response;
  http::read(socket, buffer, response);
  EXPECT_EQ(response.result_int(), 201);
  EXPECT_EQ(json::parse(response.body())["size"], 11);
  EXPECT_TRUE(response.keep_alive());
  {
    std::lock_guard<std::mutex> lock(observed_.upload.mu);
    std::string joined;
    for (const std::string& piece : observed_.upload.pieces) joined += piece;
    EXPECT_EQ(joined, "hello world");
  }
  // The connection serves a normal request next.
  http::request<http::empty_body> get{http::verb::get, "/api/v1/runs/r1", 11};
  get.set(http::field::host, "x");
  http::write(socket, get);
  http::response<http::string_body> next;
  http::read(socket, buffer, next);
  EXPECT_EQ(next.result_int(), 200);
  EXPECT_EQ(json::parse(next.body())["id"], "r1");
}

TEST_F(HttpTest, UploadOverLimitIs413BeforeTheBodyIsRead) {
  StartServer();
  asio::io_context ioc;
  tcp::socket socket = Connect(ioc);
  asio::write(socket,
              asio::buffer("PUT /upload/big HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                           std::to_string(kUploadLimit + 1) + "\r\nExpect: 100-continue\r\n\r\n"));
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response);  // The final answer, no 100 Continue first.
  EXPECT_EQ(response.result_int(), 413);
  const json body = json::parse(response.body());
  EXPECT_EQ(body["error"]["code"], "PAYLOAD_TOO_LARGE");
  EXPECT_NE(body["error"]["message"].get<std::string>().find(std::to_string(kUploadLimit)),
            std::string::npos);
  EXPECT_EQ(observed_.upload.opened, 0);  // The handler never ran.

  // Through libcurl, which sends Expect: 100-continue for large bodies: refused up front.
  StatusOr<HttpResult> put = client_->Request(
      "PUT", "/upload/big", std::string(kUploadLimit + 10, 'x'), "application/octet-stream");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->status, 413);
  EXPECT_EQ(observed_.upload.opened, 0);
}

TEST_F(HttpTest, ChunkedUploadOverLimitIs413AndSinkIsDroppedWithoutFinish) {
  StartServer();
  asio::io_context ioc;
  tcp::socket socket = Connect(ioc);
  asio::write(socket,
              asio::buffer(std::string(
                  "PUT /upload/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")));
  const std::string piece(256 * 1024, 'z');
  boost::system::error_code ec;
  for (int i = 0; i < 5 && !ec; ++i) {  // 1.25 MiB > 1 MiB.
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    asio::write(socket, asio::buffer(std::string(size) + piece + "\r\n"), ec);
  }
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(socket, buffer, response, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_EQ(response.result_int(), 413);
  EXPECT_EQ(json::parse(response.body())["error"]["code"], "PAYLOAD_TOO_LARGE");
  EXPECT_TRUE(Eventually([&] { return observed_.upload.destroyed == 1; }));
  EXPECT_EQ(observed_.upload.opened, 1);
  EXPECT_EQ(observed_.upload.finished, 0);
}

TEST_F(HttpTest, UploadRefusedByHandlerOrSinkIsAnswered) {
  StartServer();
  StatusOr<HttpResult> bad = client_->Request("PUT", "/upload/bad", std::string(kUploadLimit, 'x'),
                                              "application/octet-stream");
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("upload name 'bad' is refused"), std::string::npos) << bad->body;
  EXPECT_EQ(observed_.upload.opened, 0);

  StatusOr<HttpResult> refused = client_->Request(
      "PUT", "/upload/fail-at-100", std::string(4096, 'x'), "application/octet-stream");
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  EXPECT_EQ(refused->status, 400);
  EXPECT_NE(refused->body.find("sink refuses byte 100"), std::string::npos) << refused->body;
  EXPECT_TRUE(Eventually([&] { return observed_.upload.destroyed == 1; }));
  EXPECT_EQ(observed_.upload.finished, 0);

  StatusOr<HttpResult> thrown =
      client_->Request("PUT", "/upload/throw", "abc", "application/octet-stream");
  ASSERT_TRUE(thrown.ok()) << thrown.status().ToString();
  EXPECT_EQ(thrown->status, 500);
  EXPECT_NE(thrown->body.find("finish boom"), std::string::npos) << thrown->body;
  EXPECT_TRUE(client_->GetJson("/api/v1/health").ok());
}

TEST_F(HttpTest, ClientDisconnectMidUploadDestroysSinkWithoutFinish) {
  StartServer();
  {
    asio::io_context ioc;
    tcp::socket socket = Connect(ioc);
    asio::write(
        socket,
        asio::buffer(
            std::string("PUT /upload/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n") +
            std::string(1000, 'a')));
    ASSERT_TRUE(Eventually([&] {
      std::lock_guard<std::mutex> lock(observed_.upload.mu);
      return !observed_.upload.pieces.empty();
    }));
  }  // Closes the socket midway.
  EXPECT_TRUE(Eventually([&] { return observed_.upload.destroyed == 1; }));
  EXPECT_EQ(observed_.upload.opened, 1);
  EXPECT_EQ(observed_.upload.finished, 0);
  EXPECT_TRUE(client_->GetJson("/api/v1/health").ok());
}

TEST_F(HttpTest, BlockedFinishDoesNotHoldUpOtherConnections) {
  HttpServerOptions options;
  options.threads = 1;
  std::promise<void> gate;
  observed_.upload.finish_gate = gate.get_future().share();
  StartServer(std::move(options));
  auto put = std::async(std::launch::async, [&] {
    return client_->Request("PUT", "/upload/slow", "data", "application/octet-stream");
  });
  ASSERT_TRUE(Eventually([&] { return observed_.upload.opened == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // The only event-loop thread is free while Finish waits.
  StatusOr<json> health = client_->GetJson("/api/v1/health", 2000);
  EXPECT_TRUE(health.ok()) << health.status().ToString();
  EXPECT_EQ(observed_.upload.finished, 0);
  gate.set_value();
  StatusOr<HttpResult> got = put.get();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->status, 201);
}

// Sync handlers run on the blocking pool: four that block (a slow Slurm, a huge folder) hold up
// neither /health, answered on the event loop, nor other sync requests, which find free pool
// threads.
TEST_F(HttpTest, BlockingSyncHandlersHoldUpNeitherHealthNorOtherClients) {
  HttpServerOptions options;
  options.threads = 1;
  std::promise<void> gate;
  observed_.block_gate = gate.get_future().share();
  StartServer(std::move(options));
  std::vector<std::future<StatusOr<json>>> blocked;
  for (int i = 0; i < 4; ++i) {
    blocked.push_back(std::async(std::launch::async, [&] {
      HttpClient client(BaseUrl());
      return client.GetJson("/block", 30'000);
    }));
  }
  ASSERT_TRUE(Eventually([&] { return observed_.blocked == 4; }));
  std::vector<std::int64_t> health_ms;
  for (int i = 0; i < 5; ++i) {
    const auto start = Clock::now();
    StatusOr<json> health = client_->GetJson("/api/v1/health", 5000);
    health_ms.push_back(MillisSince(start));
    ASSERT_TRUE(health.ok()) << health.status().ToString();
  }
  std::sort(health_ms.begin(), health_ms.end());
  EXPECT_LT(health_ms[2], 50) << "median /health latency while four requests block";
  StatusOr<json> other = client_->GetJson("/api/v1/runs/r7", 5000);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_EQ((*other)["id"], "r7");
  EXPECT_EQ(observed_.blocked, 4);
  gate.set_value();
  for (auto& b : blocked) {
    StatusOr<json> got = b.get();
    ASSERT_TRUE(got.ok()) << got.status().ToString();
  }
}

// A route on a named pool is answered while every thread of the blocking pool is held (chart
// reads while ingest commits), whether it is a plain sync route or a buffered one.
TEST_F(HttpTest, RoutesOnANamedPoolAreAnsweredWhileTheBlockingPoolIsFull) {
  HttpServerOptions options;
  options.blocking_threads = 2;
  options.pools["read"] = 1;
  std::promise<void> gate;
  observed_.block_gate = gate.get_future().share();
  server_ = std::make_unique<HttpServer>(options);
  AddTestRoutes(*server_, root_ / "files", &observed_);
  server_->Route("GET", "/read/{id}", SyncHandler([](HttpRequest& req) {
                   return HttpResponse::Json(200, {{"read", req.Param("id")}});
                 }),
                 "read");
  server_->BufferedRoute("POST", "/read-body", 1024,
                         [](HttpRequest& req) {
                           return HttpResponse::Json(200, {{"body", req.body}});
                         },
                         {.pool = "read"});
  server_->Route("GET", "/same-pool", SyncHandler([](HttpRequest&) {
                   return HttpResponse::Json(200, {{"ok", true}});
                 }));
  ASSERT_TRUE(server_->Start().ok());
  client_ = std::make_unique<HttpClient>(BaseUrl());
  std::vector<std::future<StatusOr<json>>> blocked;
  for (int i = 0; i < 2; ++i) {
    blocked.push_back(std::async(std::launch::async, [&] {
      HttpClient client(BaseUrl());
      return client.GetJson("/block", 30'000);
    }));
  }
  ASSERT_TRUE(Eventually([&] { return observed_.blocked == 2; }));
  StatusOr<json> read = client_->GetJson("/read/r1", 5000);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ((*read)["read"], "r1");
  StatusOr<json> posted = client_->PostJson("/read-body", json{{"x", 1}}, 5000);
  ASSERT_TRUE(posted.ok()) << posted.status().ToString();
  const std::string sent = json{{"x", 1}}.dump();
  EXPECT_EQ((*posted)["body"], sent);
  // A route on the full blocking pool waits for a thread: it has not been answered yet.
  auto waiting = std::async(std::launch::async, [&] {
    HttpClient client(BaseUrl());
    return client.GetJson("/same-pool", 30'000);
  });
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  gate.set_value();
  ASSERT_TRUE(waiting.get().ok());
  for (auto& b : blocked) ASSERT_TRUE(b.get().ok());
}

TEST_F(HttpTest, ARouteOnAnUnknownPoolFailsStart) {
  HttpServer server(HttpServerOptions{});
  server.Route("GET", "/x", SyncHandler([](HttpRequest&) { return HttpResponse::Json(200, {}); }),
               "nope");
  const Status started = server.Start();
  EXPECT_EQ(started.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(started.message().find("pool 'nope'"), std::string::npos) << started.ToString();
}

// Reads what the server sends on `socket` until it closes (or `timeout`).
std::string ReadUntilClosed(tcp::socket& socket, std::chrono::milliseconds timeout) {
  std::string out;
  const auto deadline = Clock::now() + timeout;
  socket.non_blocking(true);
  char buf[4096];
  while (Clock::now() < deadline) {
    boost::system::error_code ec;
    const std::size_t n = socket.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    if (ec) break;
    out.append(buf, n);
  }
  return out;
}

TEST_F(HttpTest, ConnectionsBeyondTheCapAre429NamingTheLimit) {
  HttpServerOptions options;
  options.max_connections = 3;
  StartServer(std::move(options));
  asio::io_context ioc;
  std::vector<tcp::socket> held;
  for (int i = 0; i < 3; ++i) held.push_back(Connect(ioc));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // all three accepted
  tcp::socket extra = Connect(ioc);
  const std::string refused = ReadUntilClosed(extra, std::chrono::milliseconds(5000));
  EXPECT_EQ(refused.rfind("HTTP/1.1 429 ", 0), 0u) << refused;
  EXPECT_NE(refused.find("the limit of 3 the server's concurrent connections is reached"),
            std::string::npos)
      << refused;
  held.pop_back();  // one closes: a new client is served again
  ASSERT_TRUE(Eventually([&] { return client_->GetJson("/api/v1/health", 2000).ok(); }));
}

TEST_F(HttpTest, AHeaderTrickledPastTheHeaderTimeoutIs408) {
  HttpServerOptions options;
  options.header_timeout = std::chrono::milliseconds(300);
  StartServer(std::move(options));
  asio::io_context ioc;
  tcp::socket socket = Connect(ioc);
  const auto start = Clock::now();
  asio::write(socket, asio::buffer(std::string("GET /api/v1/health HTTP/1.1\r\n")));
  std::string answer;
  // One header line every 100 ms: each read makes progress, the whole header never comes.
  for (int i = 0; i < 30 && answer.empty(); ++i) {
    boost::system::error_code ec;
    asio::write(socket, asio::buffer(std::string("X-Slow: 1\r\n")), ec);
    if (ec) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    socket.non_blocking(true);
    char buf[4096];
    const std::size_t n = socket.read_some(asio::buffer(buf), ec);
    if (!ec) answer.append(buf, n);
    socket.non_blocking(false);
  }
  const std::int64_t took = MillisSince(start);
  EXPECT_EQ(answer.rfind("HTTP/1.1 408 ", 0), 0u) << answer;
  EXPECT_NE(answer.find("did not arrive within the limit of 300 ms"), std::string::npos) << answer;
  EXPECT_LT(took, 2500) << "answered long after the limit";
}

TEST_F(HttpTest, ABodySlowerThanTheMinimumRateIs408) {
  HttpServerOptions options;
  options.transfer_grace = std::chrono::milliseconds(200);
  options.min_bytes_per_second = 1000;
  StartServer(std::move(options));
  for (const std::string target : {"/size", "/upload/slow-body"}) {
    asio::io_context ioc;
    tcp::socket socket = Connect(ioc);
    const std::string method = target == "/size" ? "POST" : "PUT";
    asio::write(socket, asio::buffer(method + " " + target +
                                     " HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"));
    // 10 bytes every 50 ms: 200 bytes/s, a fifth of the minimum.
    std::string answer;
    for (int i = 0; i < 60 && answer.empty(); ++i) {
      boost::system::error_code ec;
      asio::write(socket, asio::buffer(std::string(10, 'x')), ec);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      socket.non_blocking(true);
      char buf[4096];
      const std::size_t n = socket.read_some(asio::buffer(buf), ec);
      if (!ec) answer.append(buf, n);
      socket.non_blocking(false);
    }
    EXPECT_EQ(answer.rfind("HTTP/1.1 408 ", 0), 0u) << target << ": " << answer;
    EXPECT_NE(answer.find("slower than the limit of 1000 bytes per second"), std::string::npos)
        << target << ": " << answer;
  }
  // A body that keeps the pace is read whole.
  StatusOr<HttpResult> fast =
      client_->Request("POST", "/size", std::string(50'000, 'y'), "application/octet-stream");
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  EXPECT_EQ(fast->status, 200);
}

TEST_F(HttpTest, AResponseReadSlowerThanTheMinimumRateIsCutOff) {
  HttpServerOptions options;
  options.transfer_grace = std::chrono::milliseconds(200);
  options.min_bytes_per_second = 8 << 20;
  StartServer(std::move(options));
  const std::uint64_t size = 64ull << 20;
  {
    std::ofstream out(root_ / "files" / "big.bin", std::ios::binary);
    const std::string block(1 << 20, 'z');
    for (std::uint64_t i = 0; i < size / block.size(); ++i) out << block;
  }
  asio::io_context ioc;
  tcp::socket socket = Connect(ioc);
  asio::write(socket, asio::buffer(std::string("GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")));
  // About 1 MiB/s, an eighth of the minimum: each read makes progress, yet the server gives up
  // (a per-write timeout would wait on it for the whole minute a 64 MiB file takes).
  std::uint64_t got = 0;
  const auto start = Clock::now();
  std::vector<char> buf(64 << 10);
  while (MillisSince(start) < 30'000) {
    boost::system::error_code ec;
    got += socket.read_some(asio::buffer(buf), ec);
    if (ec) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
  }
  EXPECT_LT(got, size) << "the whole response arrived; the slow reader was not cut off";
  EXPECT_LT(MillisSince(start), 20'000) << "the slow reader was not cut off in time";
}

TEST_F(HttpTest, NormalRoutesKeepTheirLimitBesideUploadRoutes) {
  HttpServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(std::move(options));
  StatusOr<HttpResult> small = client_->Request("POST", "/size", std::string(1000, 'a'));
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->status, 200);
  StatusOr<HttpResult> large = client_->Request("POST", "/size", std::string(2048, 'a'));
  ASSERT_TRUE(large.ok());
  EXPECT_EQ(large->status, 413);
  // A normal route with a body and the wrong method is still answered 405.
  StatusOr<HttpResult> wrong = client_->Request("POST", "/upload/x", "{}");
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->status, 405);
  EXPECT_EQ(observed_.upload.opened, 0);
}

TEST_F(HttpTest, ClientUploadFileStreamsFromDisk) {
  StartServer();
  const std::string content = RandomBytes(700 * 1024, 7);
  const fs::path file = root_ / "upload.bin";
  ASSERT_TRUE(WriteFileAtomic(file, content).ok());
  std::uint64_t sent = 0;
  StatusOr<HttpResult> put =
      client_->UploadFile("PUT", "/upload/f", file, "application/octet-stream", &sent);
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->status, 201) << put->body;
  EXPECT_EQ(json::parse(put->body)["size"], content.size());
  EXPECT_EQ(sent, content.size());
  {
    std::lock_guard<std::mutex> lock(observed_.upload.mu);
    std::string joined;
    for (const std::string& piece : observed_.upload.pieces) joined += piece;
    EXPECT_TRUE(joined == content);
  }

  // Refused before the body (Expect: 100-continue from 1 MiB): nothing sent.
  const fs::path big = root_ / "big.bin";
  ASSERT_TRUE(WriteFileAtomic(big, std::string(kUploadLimit, 'b')).ok());
  sent = 0;
  StatusOr<HttpResult> refused =
      client_->UploadFile("PUT", "/upload/bad", big, "application/octet-stream", &sent);
  ASSERT_TRUE(refused.ok()) << refused.status().ToString();
  EXPECT_EQ(refused->status, 400);
  EXPECT_EQ(sent, 0u);

  StatusOr<HttpResult> missing = client_->UploadFile("PUT", "/upload/f", root_ / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------------------------
// HTTPS listeners

// A self-signed identity for 127.0.0.1, made once.
std::shared_ptr<const TlsIdentity> TestIdentity() {
  static const std::shared_ptr<const TlsIdentity> identity = [] {
    StatusOr<TlsIdentity> made = MakeSelfSignedIdentity({"127.0.0.1"}, "http test");
    if (!made.ok()) std::abort();
    return std::make_shared<const TlsIdentity>(std::move(made).value());
  }();
  return identity;
}

class HttpsTest : public HttpTest {
 protected:
  // The usual plain listener (port 0) and an HTTPS one on 127.0.0.1 (port 1); client_ speaks
  // HTTPS, pinning the identity's key.
  void StartTls(HttpServerOptions options = {}) {
    server_ = std::make_unique<HttpServer>(std::move(options));
    ASSERT_TRUE(server_->AddListener({"127.0.0.1", 0, TestIdentity()}).ok());
    AddTestRoutes(*server_, root_ / "files", &observed_);
    const Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started.ToString();
    ASSERT_GT(server_->port(1), 0);
    ASSERT_NE(server_->port(1), server_->port());
    pin_ = PublicKeyPin(TestIdentity()->certificate_pem).value();
    client_ = std::make_unique<HttpClient>(TlsUrl(), "", TlsTrust{pin_, ""});
  }
  std::string TlsUrl() const { return "https://127.0.0.1:" + std::to_string(server_->port(1)); }
  int ConnectTls() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(server_->port(1)));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return fd;
  }

  std::string pin_;
};

TEST_F(HttpsTest, ServesTheSameRoutesOverTlsAsOnThePlainListener) {
  StartTls();
  auto logs = client_->GetJson("/api/v1/runs/7/logs?q=a%20b");
  ASSERT_TRUE(logs.ok()) << logs.status().ToString();
  EXPECT_EQ((*logs)["id"], "7");
  EXPECT_EQ((*logs)["q"], "a b");
  auto echo = client_->PostJson("/echo", {{"k", "v"}});
  ASSERT_TRUE(echo.ok()) << echo.status().ToString();
  EXPECT_EQ((*echo)["got"]["k"], "v");
  // Streams both ways: a file download of several MB, an upload to a sink of nearly 1 MiB.
  const std::string content = RandomBytes(3 * 1000 * 1000 + 5, 11);
  ASSERT_TRUE(WriteFileAtomic(root_ / "files" / "big.bin", content).ok());
  const Status got = client_->DownloadTo("/files/big.bin", root_ / "down.bin");
  ASSERT_TRUE(got.ok()) << got.ToString();
  EXPECT_TRUE(ReadFile(root_ / "down.bin").value() == content);
  const std::string upload = content.substr(0, kUploadLimit - 1);
  ASSERT_TRUE(WriteFileAtomic(root_ / "up.bin", upload).ok());
  StatusOr<HttpResult> put = client_->UploadFile("PUT", "/upload/f", root_ / "up.bin");
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_EQ(put->status, 201) << put->body;
  EXPECT_EQ(json::parse(put->body)["size"], upload.size());
  // The plain listener serves the same routes.
  HttpClient plain(BaseUrl());
  EXPECT_TRUE(plain.GetJson("/api/v1/runs/7/logs").ok());

  // Trusting the certificate as a CA file checks the name too, and works.
  ASSERT_TRUE(WriteFileAtomic(root_ / "ca.pem", TestIdentity()->certificate_pem).ok());
  HttpClient by_ca(TlsUrl(), "", TlsTrust{"", (root_ / "ca.pem").string()});
  EXPECT_TRUE(by_ca.GetJson("/api/v1/runs/7/logs").ok());
  // Without trust, or with another key's pin, nothing is sent.
  HttpClient untrusting(TlsUrl());
  EXPECT_EQ(untrusting.GetJson("/api/v1/runs/7/logs").status().code(), StatusCode::kUnavailable);
  const std::string other_pin =
      PublicKeyPin(MakeSelfSignedIdentity({"127.0.0.1"}, "other")->certificate_pem).value();
  HttpClient wrong_pin(TlsUrl(), "", TlsTrust{other_pin, ""});
  StatusOr<json> refused = wrong_pin.GetJson("/api/v1/runs/7/logs");
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("pinned"), std::string::npos)
      << refused.status().ToString();
}

TEST_F(HttpsTest, PlainHttpOnTheTlsListenerGetsNoAnswer) {
  StartTls();
  const int fd = ConnectTls();
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string request = "GET /api/v1/runs/7/logs HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, n);
  ::close(fd);
  EXPECT_EQ(answer.find("HTTP/"), std::string::npos) << answer;
  EXPECT_EQ(answer.find("\"id\""), std::string::npos) << answer;
}

TEST_F(HttpsTest, AHandshakeNeverFinishedIsClosedAtTheHeaderTimeout) {
  HttpServerOptions options;
  options.header_timeout = std::chrono::milliseconds(300);
  StartTls(std::move(options));
  const int fd = ConnectTls();
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto start = Clock::now();
  char buf[64];
  const ssize_t n = ::recv(fd, buf, sizeof buf, 0);  // the client never says hello
  const std::int64_t took = MillisSince(start);
  ::close(fd);
  EXPECT_EQ(n, 0) << "the connection was not closed";
  EXPECT_LT(took, 2500) << "a silent TLS client held its connection for " << took << " ms";
}

TEST_F(HttpsTest, AHeaderTrickledOverTlsIs408) {
  HttpServerOptions options;
  options.header_timeout = std::chrono::milliseconds(300);
  StartTls(std::move(options));
  const int fd = ConnectTls();
  SSL_CTX* context = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(context);
  SSL_set_fd(ssl, fd);
  ASSERT_EQ(SSL_connect(ssl), 1);
  const auto start = Clock::now();
  const std::string first = "GET /api/v1/runs/7/logs HTTP/1.1\r\n";
  ASSERT_GT(SSL_write(ssl, first.data(), static_cast<int>(first.size())), 0);
  std::string answer;
  // One header line every 100 ms over TLS: the whole header never comes.
  for (int i = 0; i < 30 && answer.empty(); ++i) {
    const std::string line = "X-Slow: 1\r\n";
    if (SSL_write(ssl, line.data(), static_cast<int>(line.size())) <= 0) break;
    pollfd readable{fd, POLLIN, 0};
    if (::poll(&readable, 1, 100) == 1 || SSL_pending(ssl) > 0) {
      char buf[4096];
      const int n = SSL_read(ssl, buf, sizeof buf);
      if (n > 0) answer.append(buf, static_cast<std::size_t>(n));
    }
  }
  const std::int64_t took = MillisSince(start);
  SSL_free(ssl);
  SSL_CTX_free(context);
  ::close(fd);
  EXPECT_EQ(answer.rfind("HTTP/1.1 408 ", 0), 0u) << answer;
  EXPECT_NE(answer.find("did not arrive within the limit of 300 ms"), std::string::npos) << answer;
  EXPECT_LT(took, 2500) << "answered long after the limit";
}

TEST_F(HttpsTest, AListenerWithACapOfItsOwnLeavesTheOthersServed) {
  HttpServerOptions options;
  options.max_connections = 8;
  server_ = std::make_unique<HttpServer>(std::move(options));
  HttpListener tls{"127.0.0.1", 0, TestIdentity()};
  tls.max_connections = 2;
  ASSERT_TRUE(server_->AddListener(tls).ok());
  AddTestRoutes(*server_, root_ / "files", &observed_);
  ASSERT_TRUE(server_->Start().ok());
  // Listeners are fixed once serving.
  EXPECT_EQ(server_->AddListener({"127.0.0.1", 0, nullptr}).code(),
            StatusCode::kFailedPrecondition);
  // Connections that never handshake fill the TLS listener's cap, and only that.
  std::vector<int> held;
  for (int i = 0; i < 6; ++i) held.push_back(ConnectTls());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  HttpClient plain(BaseUrl());
  EXPECT_TRUE(plain.GetJson("/api/v1/runs/7/logs").ok()) << "the plain listener was starved";
  HttpClient tls_client(TlsUrl(), "",
                        TlsTrust{PublicKeyPin(TestIdentity()->certificate_pem).value(), ""});
  EXPECT_EQ(tls_client.GetJson("/api/v1/runs/7/logs").status().code(), StatusCode::kUnavailable);
  for (int fd : held) ::close(fd);
}

TEST_F(HttpsTest, AnUnusableIdentityFailsStartNamingTheListener) {
  auto other = MakeSelfSignedIdentity({"127.0.0.1"}, "other");
  ASSERT_TRUE(other.ok());
  HttpServer server(HttpServerOptions{});
  ASSERT_TRUE(server
                  .AddListener({"127.0.0.1", 0,
                                std::make_shared<const TlsIdentity>(TlsIdentity{
                                    TestIdentity()->certificate_pem, other->private_key_pem})})
                  .ok());
  const Status started = server.Start();
  EXPECT_EQ(started.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(started.message().find("127.0.0.1:0"), std::string::npos) << started.ToString();
  EXPECT_NE(started.message().find("does not belong"), std::string::npos) << started.ToString();
}

TEST(HttpClientTest, UrlEncode) {
  EXPECT_EQ(HttpClient::UrlEncode("aZ09-._~"), "aZ09-._~");
  EXPECT_EQ(HttpClient::UrlEncode("a b/c?d&e=f%"), "a%20b%2Fc%3Fd%26e%3Df%25");
  EXPECT_EQ(HttpClient::UrlEncode("\xc3\xa9"), "%C3%A9");
  EXPECT_EQ(HttpClient::UrlEncodePath("dir one/file#1"), "dir%20one/file%231");
}

TEST(HttpClientTest, StatusFromHttpResult) {
  EXPECT_TRUE(StatusFromHttpResult({204, "", {}}).ok());
  const Status plain = StatusFromHttpResult({502, "bad gateway", {}});
  EXPECT_EQ(plain.code(), StatusCode::kInternal);
  EXPECT_EQ(plain.message(), "HTTP 502: bad gateway");
  // A code name that contradicts the HTTP status is not trusted.
  const Status odd =
      StatusFromHttpResult({404, R"({"error":{"code":"ALREADY_EXISTS","message":"gone"}})", {}});
  EXPECT_EQ(odd.code(), StatusCode::kNotFound);
  EXPECT_EQ(odd.message(), "gone");
}

// --- Notifier on a bare io_context -----------------------------------------------------------

asio::awaitable<void> WaitInto(Notifier* notifier, std::string key, std::uint64_t seen,
                               Clock::time_point deadline, std::uint64_t* out,
                               Clock::time_point* returned_at) {
  *out = co_await notifier->WaitForChange(std::move(key), seen, deadline);
  *returned_at = Clock::now();
}

TEST(NotifierTest, SequenceMovedBeforeWaitReturnsImmediately) {
  Notifier notifier;
  asio::io_context ioc;
  const std::uint64_t seen = notifier.Sequence("k");
  EXPECT_EQ(seen, 0u);
  notifier.Notify("k");
  std::uint64_t got = 0;
  Clock::time_point returned_at;
  const Clock::time_point start = Clock::now();
  asio::co_spawn(
      ioc, WaitInto(&notifier, "k", seen, start + std::chrono::seconds(10), &got, &returned_at),
      asio::detached);
  ioc.run();
  EXPECT_NE(got, seen);
  EXPECT_EQ(got, notifier.Sequence("k"));
  EXPECT_LT(returned_at - start, std::chrono::seconds(1));
}

TEST(NotifierTest, WakesAllWaitersOfTheKeyOnly) {
  Notifier notifier;
  asio::io_context ioc;
  const Clock::time_point start = Clock::now();
  std::uint64_t got[3] = {};
  Clock::time_point at[3];
  asio::co_spawn(ioc,
                 WaitInto(&notifier, "a", 0, start + std::chrono::seconds(10), &got[0], &at[0]),
                 asio::detached);
  asio::co_spawn(ioc,
                 WaitInto(&notifier, "a", 0, start + std::chrono::seconds(10), &got[1], &at[1]),
                 asio::detached);
  asio::co_spawn(
      ioc, WaitInto(&notifier, "b", 0, start + std::chrono::milliseconds(1000), &got[2], &at[2]),
      asio::detached);
  std::thread notifier_thread([&] {
    while (notifier.WaiterCount("a") < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    notifier.Notify("a");
  });
  ioc.run();
  notifier_thread.join();
  EXPECT_NE(got[0], 0u);
  EXPECT_EQ(got[0], got[1]);
  EXPECT_LT(at[0] - start, std::chrono::milliseconds(900));
  EXPECT_LT(at[1] - start, std::chrono::milliseconds(900));
  EXPECT_EQ(got[2], 0u);  // "b" was not notified: it waited for its deadline.
  EXPECT_GE(at[2] - start, std::chrono::milliseconds(1000));
  EXPECT_EQ(notifier.WaiterCount("a"), 0u);
  EXPECT_EQ(notifier.WaiterCount("b"), 0u);
}

asio::awaitable<void> SimpleWait(Notifier* notifier, Clock::time_point deadline,
                                 Clock::time_point* returned_at) {
  co_await notifier->WaitForChange("k", deadline);
  *returned_at = Clock::now();
}

TEST(NotifierTest, SimpleFormIgnoresEarlierNotifiesAndWakesOnLaterOnes) {
  Notifier notifier;
  notifier.Notify("k");  // Before the wait: not seen.
  asio::io_context ioc;
  const Clock::time_point start = Clock::now();
  Clock::time_point returned_at;
  asio::co_spawn(ioc, SimpleWait(&notifier, start + std::chrono::seconds(10), &returned_at),
                 asio::detached);
  std::thread notifier_thread([&] {
    while (notifier.WaiterCount("k") == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    notifier.Notify("k");
  });
  ioc.run();
  notifier_thread.join();
  EXPECT_GE(returned_at - start, std::chrono::milliseconds(100));
  EXPECT_LT(returned_at - start, std::chrono::seconds(5));
}

TEST(NotifierTest, ForgetWakesWaitersAndResetsTheSequence) {
  Notifier notifier;
  notifier.Notify("gone");
  const std::uint64_t seen = notifier.Sequence("gone");
  EXPECT_NE(seen, 0u);
  asio::io_context ioc;
  const Clock::time_point start = Clock::now();
  std::uint64_t got = 1;
  Clock::time_point at;
  asio::co_spawn(ioc,
                 WaitInto(&notifier, "gone", seen, start + std::chrono::seconds(10), &got, &at),
                 asio::detached);
  std::thread forgetter([&] {
    while (notifier.WaiterCount("gone") == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    notifier.Forget("gone");
  });
  ioc.run();
  forgetter.join();
  EXPECT_EQ(got, 0u);  // The record is gone: back to 0.
  EXPECT_LT(at - start, std::chrono::seconds(5));
  EXPECT_EQ(notifier.Sequence("gone"), 0u);
}

TEST(NotifierTest, AfterShutdownNotifyWakesNoOneAndWaitsRunToTheirDeadline) {
  Notifier notifier;
  asio::io_context ioc;
  const Clock::time_point start = Clock::now();
  std::uint64_t before = 1, after = 1;
  Clock::time_point at_before, at_after;
  // Registered before Shutdown.
  asio::co_spawn(
      ioc, WaitInto(&notifier, "k", 0, start + std::chrono::milliseconds(300), &before, &at_before),
      asio::detached);
  ioc.poll();  // Runs the coroutine up to its wait.
  ASSERT_EQ(notifier.WaiterCount("k"), 1u);
  notifier.Shutdown();
  // Started after Shutdown: it must suspend (not return at once) so "check, wait" loops do not
  // spin.
  asio::co_spawn(
      ioc, WaitInto(&notifier, "j", 0, start + std::chrono::milliseconds(300), &after, &at_after),
      asio::detached);
  ioc.poll();
  EXPECT_EQ(notifier.WaiterCount("j"), 0u);  // Not registered.
  notifier.Notify("k");
  notifier.Notify("j");
  ioc.run();
  EXPECT_GE(at_before - start, std::chrono::milliseconds(300));
  EXPECT_GE(at_after - start, std::chrono::milliseconds(300));
  // They report the moved sequences; the caller sees the change on its next check.
  EXPECT_EQ(before, notifier.Sequence("k"));
  EXPECT_EQ(after, notifier.Sequence("j"));
  EXPECT_EQ(notifier.WaiterCount("k"), 0u);

  // A sequence that already moved still returns at once.
  std::uint64_t got = 0;
  Clock::time_point at;
  const Clock::time_point again = Clock::now();
  asio::io_context ioc2;
  asio::co_spawn(ioc2, WaitInto(&notifier, "k", 0, again + std::chrono::seconds(10), &got, &at),
                 asio::detached);
  ioc2.run();
  EXPECT_LT(at - again, std::chrono::seconds(1));
  EXPECT_EQ(got, notifier.Sequence("k"));
}

}  // namespace
}  // namespace trainyard

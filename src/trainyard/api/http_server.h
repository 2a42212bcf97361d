#pragma once

// clang-format off
#include <utility>  // Before Boost 1.74's awaitable.hpp, which uses std::exchange without it.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
// clang-format on

#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/api/notifier.h"
#include "trainyard/common/status.h"

namespace trainyard {

namespace asio = boost::asio;

struct HttpRequest;

// Configuration of an HttpServer.
struct HttpServerOptions {
  // Address to listen on (IPv4 or IPv6 literal).
  std::string address = "127.0.0.1";
  // TCP port; 0 picks a free one (read it back with HttpServer::port()).
  int port = 0;
  // When non-empty, every request except GET /api/v1/health must carry
  // "Authorization: Bearer <bearer_token>".
  std::string bearer_token;
  // Optional: consulted when a request carries a bearer token that is not `bearer_token`
  // (e.g. run-scoped tokens of the in-run SDK). Return true to let the request through. It runs
  // before the body is read and the route matched: the request has method, target, path, query
  // and headers, but no body or params yet. Runs on an event-loop thread: must be fast and
  // thread-safe. Ignored when bearer_token is empty.
  std::function<bool(std::string_view token, const HttpRequest& request)> accept_token;
  // Largest accepted request body; a larger one is answered 413.
  std::size_t max_body_bytes = 64 << 20;
  // Event-loop threads.
  int threads = 2;
};

// One parsed request, handed to a handler. The handler may move fields out of it.
struct HttpRequest {
  std::string method;  // As sent, e.g. "GET".
  std::string target;  // Raw request target, e.g. "/api/v1/runs?limit=5".
  std::string path;    // Percent-decoded path without the query, e.g. "/api/v1/runs".
  // Percent-decoded query parameters in order ('+' decodes to a space).
  std::vector<std::pair<std::string, std::string>> query;
  // Captures of the matched route pattern, percent-decoded ({id} -> "id", {path...} -> "path").
  std::map<std::string, std::string, std::less<>> params;
  // Header names lower-cased; repeated headers joined with ", ".
  std::map<std::string, std::string, std::less<>> headers;
  std::string body;

  // The first value of query parameter `name`; nullopt when absent.
  std::optional<std::string> Query(std::string_view name) const;
  // Every value of query parameter `name`, in order.
  std::vector<std::string> QueryAll(std::string_view name) const;
  // A path capture; "" when the route has no such capture.
  std::string Param(std::string_view name) const;
  // A header, looked up case-insensitively; nullopt when absent.
  std::optional<std::string> Header(std::string_view name) const;
  // The body parsed as JSON; InvalidArgument naming the parse error when it is not JSON.
  StatusOr<nlohmann::json> JsonBody() const;
};

// A response produced by a handler.
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  // Extra headers (Content-Type and Content-Length are set by the server).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // When set, the body is streamed from this file instead of `body`. If the file cannot be
  // opened when the response is sent, the client gets a 404 JSON error.
  std::optional<std::filesystem::path> file;

  static HttpResponse Json(int status, const nlohmann::json& value);
  static HttpResponse Text(int status, std::string text,
                           std::string content_type = "text/plain; charset=utf-8");
  // 200 {} for OK; otherwise HttpStatusFor(code) with
  // {"error": {"code": "NOT_FOUND", "message": "..."}}.
  static HttpResponse FromStatus(const Status& status);
  // Streams `path` from disk (for large downloads). The caller has already checked that the
  // path is one the client may read (see ResolveUnder in common/fs.h).
  static HttpResponse File(std::filesystem::path path,
                           std::string content_type = "application/octet-stream");
};

// A handler runs on an event-loop thread. Async handlers may co_await (timers, Notifier);
// sync handlers must not block, since they hold up the connections sharing their thread.
// A handler that throws is answered 500 and the server carries on.
using AsyncHandler = std::function<asio::awaitable<HttpResponse>(HttpRequest&)>;
using SyncHandler = std::function<HttpResponse(HttpRequest&)>;

// HTTP/1.1 server on Boost.Beast with C++20 coroutines: keep-alive, bearer-token auth, body
// limit, JSON errors, file streaming, and a Notifier for long-poll handlers.
//
// Routing: patterns are "/"-separated segments; "{name}" captures one segment and a final
// "{name...}" captures the rest of the path (one or more segments, joined with "/"). When
// several routes match, the most specific wins: at the first segment where they differ, a
// literal beats "{name}", which beats "{name...}". A path that matches only routes of other
// methods is answered 405 with an Allow header; no match at all is 404. A trailing "/" in the
// request path is ignored. "{path...}" captures may contain ".." segments: handlers serving
// files must resolve them with ResolveUnder.
//
// Errors are JSON: {"error": {"code": "NOT_FOUND", "message": "..."}}.
//
// Thread-safety: Route() must be called before Start(). Start/Stop/port are not to be called
// concurrently with each other. Handlers run concurrently on up to `threads` threads; requests
// of one connection run one at a time on that connection's strand.
class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  // Stops the server (see Stop).
  ~HttpServer();

  // Registers a handler for `method` (e.g. "GET") and `pattern`
  // (e.g. "/api/v1/runs/{id}/files/{path...}"). A malformed pattern makes Start() fail.
  void Route(std::string method, std::string pattern, AsyncHandler handler);
  void Route(std::string method, std::string pattern, SyncHandler handler);

  // Binds and starts serving on `threads` threads. Unavailable naming address:port when the
  // port cannot be bound (e.g. taken); InvalidArgument for a bad address or route pattern;
  // FailedPrecondition when called twice.
  Status Start();

  // The bound port (useful with port 0); 0 before Start().
  int port() const;

  // Shuts notifier() down, stops the event loop and joins its threads, then closes the listening
  // socket and every connection; in-flight requests (long polls included) are dropped without
  // an answer. Idempotent. Must not be called from a handler.
  void Stop();

  // The event loop's executor, for timers and other I/O objects used by handlers (inside a
  // handler, `co_await asio::this_coro::executor` gives the connection's strand). Valid from
  // construction until Stop().
  asio::any_io_executor executor();

  // A notifier owned by the server, for long-poll handlers. Stop() shuts it down before tearing
  // the event loop down, so Notify from other threads stays safe (it just stops waking anyone).
  // Lives as long as the server.
  Notifier& notifier() { return notifier_; }

 private:
  struct Impl;
  Notifier notifier_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trainyard

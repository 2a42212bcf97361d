#pragma once

// clang-format off
#include <utility>  // Before Boost 1.74's awaitable.hpp, which uses std::exchange without it.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
// clang-format on

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/status.h"
#include "trainyard/common/tls.h"
#include "trainyard/http/notifier.h"

namespace trainyard {

namespace asio = boost::asio;

struct HttpRequest;

// Configuration of an HttpServer.
struct HttpServerOptions {
  // Address to listen on (IPv4 or IPv6 literal).
  std::string address = "127.0.0.1";
  // TCP port; 0 picks a free one (read it back with HttpServer::port()).
  int port = 0;
  // When set, `address` serves HTTPS only (TLS 1.2 or later) with this identity: a client that
  // speaks plain HTTP there, or fails the handshake within header_timeout, is closed unanswered.
  std::shared_ptr<const TlsIdentity> tls;
  // When non-empty, every request except GET /api/v1/health must carry
  // "Authorization: Bearer <bearer_token>".
  std::string bearer_token;
  // Optional: consulted when a request carries a bearer token that is not `bearer_token` (e.g.
  // the run-scoped tokens of the in-run SDK), with the request's method, path, query and headers
  // (not its body). Returns the principal the token stands for (put in HttpRequest::principal)
  // when it may make this request; Unauthenticated for a token it does not know or that expired
  // (answered 401); PermissionDenied for a known token that may not make this request (403).
  // Runs on an event-loop thread before the body is read: must be fast, thread-safe and must
  // not block. Ignored when bearer_token is empty.
  std::function<StatusOr<std::string>(std::string_view token, const HttpRequest& request)>
      token_scope;
  // Largest accepted request body of a normal route (upload routes have their own limit); a
  // larger one is answered 413.
  std::size_t max_body_bytes = 64 << 20;
  // Most connections served at once. A connection beyond it is answered 429 naming the limit and
  // closed, so that descriptors are never exhausted (the daemon raises its descriptor limit at
  // start and derives this from it).
  int max_connections = 1024;
  // Once a request's first byte arrived, its whole header must arrive within this time (a client
  // that trickles a header, "slowloris", is answered 408 naming the limit and closed). Waiting
  // for the first byte of a request is bounded separately (two minutes of keep-alive idleness).
  std::chrono::milliseconds header_timeout{30'000};
  // A request body and a response must each move at least `min_bytes_per_second` on average
  // once `transfer_grace` has passed since they began: a total deadline that grows with the
  // bytes moved, not a per-read timeout a client can renew with one byte at a time. A body too
  // slow is answered 408 naming the limit; a response too slowly read is cut off.
  std::chrono::milliseconds transfer_grace{60'000};
  std::uint64_t min_bytes_per_second = 16 * 1024;
  // Event-loop threads.
  int threads = 2;
  // Threads for blocking work off the event loop: sync handlers (Route with a SyncHandler),
  // BodySink::Finish and HttpServer::Offload. Several, so that a few slow requests (a slow
  // Slurm, a huge folder) leave threads for everyone else.
  int blocking_threads = 8;
  // Named pools of threads for blocking work beside that one (name -> threads), for routes that
  // must not wait behind others: e.g. chart reads beside metric ingest, whose commits fsync. A
  // route names its pool when it is registered; an unknown name makes Start() fail.
  std::map<std::string, int> pools;
};

// How a BufferedRoute runs.
struct BufferedRouteOptions {
  // The pool its handler runs on (HttpServerOptions::pools); "" for the blocking pool.
  std::string pool;
  // Runs on the event loop once the header is read and may refuse the request before its body
  // is read.
  std::function<Status(HttpRequest&)> precheck;
  // Maps the body's size so far to an error (e.g. a per-run quota), which ends the upload.
  std::function<Status(std::size_t)> limit_check;
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
  // Who made the request: "" for the workspace token (or no auth), else what
  // HttpServerOptions::token_scope named (the daemon: the run id of a run token).
  std::string principal;

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
  // When set, the body is streamed from this open regular file (from its start) instead of
  // `body`. Shared so that a response stays copyable; read through a duplicate descriptor.
  std::shared_ptr<const ScopedFd> file;

  static HttpResponse Json(int status, const nlohmann::json& value);
  static HttpResponse Text(int status, std::string text,
                           std::string content_type = "text/plain; charset=utf-8");
  // 200 {} for OK; otherwise HttpStatusFor(code) with
  // {"error": {"code": "NOT_FOUND", "message": "..."}}.
  static HttpResponse FromStatus(const Status& status);
  // Streams the regular file open as `fd` (for large downloads). The caller opened it, through
  // a RootedDir when it lies in a folder others can write, so that what was checked is what is
  // sent: nothing is opened by path later.
  static HttpResponse File(ScopedFd fd, std::string content_type = "application/octet-stream");
};

// An async handler runs on the connection's event-loop strand and may co_await (timers,
// Notifier); it must not block, and hands blocking work (files, databases) to
// HttpServer::Offload. A sync handler runs on a thread of the blocking pool and may block (SQLite,
// a tree walk, a Slurm command); one registered with RouteOnLoop runs on the event loop and must
// not. A handler that throws is answered 500 and the server carries on.
using AsyncHandler = std::function<asio::awaitable<HttpResponse>(HttpRequest&)>;
using SyncHandler = std::function<HttpResponse(HttpRequest&)>;

// Receives the body of one request to an upload route piece by piece as it arrives, so that a
// body is never held in memory whole (see HttpServer::UploadRoute). Made per request by an
// UploadHandler and owned by the server. When the client goes away midway, the body breaks the
// upload limit, or the server stops, the sink is destroyed without Finish: its destructor must
// drop whatever it had started (e.g. a temp file).
class BodySink {
 public:
  virtual ~BodySink() = default;

  // Takes the next piece of the body, in order. Runs on the connection's event-loop thread:
  // cheap work only (appending to a file is fine). A non-OK status ends the upload: the client
  // gets that status as the answer, the connection is closed, and Finish is not called.
  virtual Status Write(std::string_view data) = 0;

  // Called once, after the whole body arrived; returns the answer. Runs on a thread of the
  // blocking pool (HttpServerOptions::blocking_threads), never concurrently with Write: it may
  // block (e.g. fsync). An exception is answered 500.
  virtual HttpResponse Finish() = 0;
};

// Opens a sink for a request to an upload route, once its header has been read, the bearer
// token checked and the route matched (`request` has method, target, path, query, headers and
// params, but no body). Returning an error answers it before the body is read (the connection
// is then closed). Runs on an event-loop thread: must not block.
using UploadHandler = std::function<StatusOr<std::unique_ptr<BodySink>>(HttpRequest& request)>;

// Another address for an HttpServer to serve the same routes on (HttpServer::AddListener).
struct HttpListener {
  std::string address = "127.0.0.1";
  int port = 0;
  std::shared_ptr<const TlsIdentity> tls;  // as HttpServerOptions::tls
  // > 0: this address has a connection cap of its own (answered like max_connections), and its
  // connections do not count against the server's, so that clients there (say, the network)
  // cannot take the connections of the others (this machine's CLI). 0: it shares the server's.
  int max_connections = 0;
};

// The raw HTTP/1.1 answer to a connection refused because `limit` connections are open ("429
// Too Many Requests", the usual JSON error naming the limit and `whose`), then closed.
std::string TooManyConnectionsAnswer(int limit, std::string_view whose);

// HTTP/1.1 server on Boost.Beast with C++20 coroutines: keep-alive, bearer-token auth, body
// limit, JSON errors, file streaming, streamed uploads, and a Notifier for long-poll handlers.
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
  // `handler` runs on the blocking pool (HttpServerOptions::blocking_threads), or on the named
  // `pool` (HttpServerOptions::pools).
  void Route(std::string method, std::string pattern, SyncHandler handler, std::string pool = {});
  // `handler` runs on the event loop: for answers computed in memory in microseconds (health),
  // which must stay fast while the blocking pool is busy.
  void RouteOnLoop(std::string method, std::string pattern, SyncHandler handler);

  // Registers an upload route: its body is not buffered but handed to the BodySink that
  // `handler` opens, piece by piece as it arrives (Content-Length or chunked; "Expect:
  // 100-continue" is answered once the sink is open). A body above `max_body_bytes` is answered
  // 413 naming the limit: before it is read when Content-Length says so, else as soon as the
  // limit is crossed (the sink is then destroyed without Finish). HttpServerOptions::
  // max_body_bytes does not apply. Routing precedence is as for Route. BodySink::Finish runs on
  // the blocking pool, or on the named `pool`.
  void UploadRoute(std::string method, std::string pattern, std::uint64_t max_body_bytes,
                   UploadHandler handler, std::string pool = {});
  // Registers a route whose (small) body, at most `max_body_bytes`, is collected on the event
  // loop and whose `handler` then runs off it with the body in `request.body`: for routes with
  // a limit of their own (BufferedRouteOptions says where it runs and what it checks first).
  void BufferedRoute(std::string method, std::string pattern, std::uint64_t max_body_bytes,
                     SyncHandler handler, BufferedRouteOptions options = {});

  // Serves the same routes on another address too (before Start), e.g. HTTPS on a public
  // address beside plain HTTP on loopback. Its port is port(1) for the first one added, and so
  // on. Its connections count against max_connections unless it has a cap of its own.
  // FailedPrecondition after Start.
  Status AddListener(HttpListener listener);

  // Binds and starts serving on `threads` threads. Unavailable naming address:port when the
  // port cannot be bound (e.g. taken); InvalidArgument for a bad address or route pattern;
  // FailedPrecondition when called twice.
  Status Start();

  // The bound port of listener `listener` (0: the options' address, 1: the first AddListener...),
  // useful with port 0; 0 before Start().
  int port(std::size_t listener = 0) const;

  // Shuts notifier() down, stops the event loop and joins its threads, waits for running
  // BodySink::Finish calls, then closes the listening socket and every connection; in-flight
  // requests (long polls and uploads included) are dropped without an answer. Idempotent. Must
  // not be called from a handler.
  void Stop();

  // Serves one connected stream socket (`fd`, taken over; a socketpair end will do) on the calling
  // thread and returns when the connection ends: the session code of an accepted plain-HTTP
  // connection, without the accept loop, its cap or a thread switch. For the fuzz target, which
  // would otherwise spend most of each input on a TCP handshake. Handlers not registered with
  // RouteOnLoop still run on the blocking pool, which exists only between Start() and Stop().
  void ServeConnectionOnThisThread(int fd);

  // The event loop's executor, for timers and other I/O objects used by handlers (inside a
  // handler, `co_await asio::this_coro::executor` gives the connection's strand). Valid from
  // construction until Stop().
  asio::any_io_executor executor();

  // From an async handler: runs `work` on the blocking pool and resumes the handler on its own
  // strand when it is done (an exception `work` throws is rethrown here). For the file and
  // database work of long-poll handlers. Valid between Start() and Stop().
  asio::awaitable<void> Offload(std::function<void()> work);

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

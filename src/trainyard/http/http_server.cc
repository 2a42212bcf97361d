#include "trainyard/http/http_server.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <exception>
#include <limits>
#include <thread>
#include <type_traits>

#include "trainyard/common/util.h"

namespace trainyard {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
template <class Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

namespace {

// Idle time allowed between keep-alive requests (and before a new connection's first byte).
constexpr auto kIdleTimeout = std::chrono::seconds(120);
// How long a short answer (an error, "100 Continue") may take to write.
constexpr auto kShortWriteTimeout = std::chrono::seconds(10);
// How long to drain an unread request body before closing after an early error response.
constexpr auto kLingerTimeout = std::chrono::seconds(2);
constexpr std::uint32_t kHeaderLimit = 64 * 1024;
// Read size while receiving a body (beast reads only as much as the buffer's capacity, which
// after a header is a few KiB), and chunk size when sending a file.
constexpr std::size_t kBodyReadBuffer = 64 * 1024;
constexpr std::uint64_t kFileChunk = 256 * 1024;
constexpr std::string_view kHealthPath = "/api/v1/health";

const auto kAwaitable = asio::use_awaitable;

std::string_view ToStd(beast::string_view s) { return std::string_view(s.data(), s.size()); }

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Compares a presented token with the secret in time that depends only on the secret's length.
bool ConstantTimeEquals(std::string_view presented, std::string_view secret) {
  unsigned diff = presented.size() == secret.size() ? 0u : 1u;
  for (std::size_t i = 0; i < secret.size(); ++i) {
    const unsigned char a = static_cast<unsigned char>(i < presented.size() ? presented[i] : '\0');
    diff |= a ^ static_cast<unsigned char>(secret[i]);
  }
  return diff == 0;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes (and '+' as a space when `plus_is_space`); nullopt on a malformed escape.
std::optional<std::string> PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = HexValue(s[i + 1]);
      const int lo = HexValue(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

// Splits a raw path ("/a/b%20c/") into decoded segments ({"a", "b c"}); a trailing "/" is
// ignored. nullopt on a malformed escape.
std::optional<std::vector<std::string>> SplitPath(std::string_view raw_path) {
  std::vector<std::string> segments;
  if (raw_path.size() <= 1) return segments;  // "/"
  std::string_view rest = raw_path.substr(1);
  if (rest.back() == '/') rest.remove_suffix(1);
  for (const std::string& raw : Split(rest, '/')) {
    std::optional<std::string> decoded = PercentDecode(raw, /*plus_is_space=*/false);
    if (!decoded) return std::nullopt;
    segments.push_back(std::move(*decoded));
  }
  return segments;
}

bool IsBeastHttpError(const boost::system::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category();
}

using SteadyClock = std::chrono::steady_clock;

// The pace a body or a response must keep (HttpServerOptions::transfer_grace and
// min_bytes_per_second): a deadline that moves later with every byte moved.
struct Pace {
  std::chrono::milliseconds grace;
  std::uint64_t min_bytes_per_second;

  // When a transfer that began at `start` and has moved `bytes` so far must have moved more.
  SteadyClock::time_point Deadline(SteadyClock::time_point start, std::uint64_t bytes) const {
    const std::uint64_t rate = std::max<std::uint64_t>(1, min_bytes_per_second);
    // Saturates far in the future (a day per chunk is plenty) rather than overflowing.
    const std::uint64_t ms = std::min<std::uint64_t>(
        bytes / rate * 1000 + bytes % rate * 1000 / rate, std::uint64_t{1} << 40);
    return start + grace + std::chrono::milliseconds(ms);
  }
};

// Cancels a connection's pending reads when a request overstays its allowance, so that the server
// can still answer 408 naming the limit (beast's own timeout would close the socket first). Runs
// on the connection's strand; owned by the connection and by its pending wait.
class Watchdog : public std::enable_shared_from_this<Watchdog> {
 public:
  Watchdog(const asio::any_io_executor& strand, tcp::socket& socket)
      : timer_(strand), socket_(&socket) {}

  // Cancels the socket's pending operations at `at` unless re-armed or disarmed before, and
  // again every kWatchdogRepeat until disarmed: a cancel that lands while a composed read sits
  // between two of its reads (one just completed, the next not yet started) finds nothing to
  // cancel, and the read that follows must not wait for the client.
  void Arm(SteadyClock::time_point at) {
    fired_ = false;
    Wait(at, ++generation_);
  }
  void Disarm() {
    ++generation_;
    timer_.cancel();
  }
  // Called when the connection ends: the socket is going away.
  void Detach() {
    socket_ = nullptr;
    Disarm();
  }
  // Whether the last Arm cancelled the socket's operations.
  bool fired() const { return fired_; }

 private:
  static constexpr auto kWatchdogRepeat = std::chrono::milliseconds(50);

  void Wait(SteadyClock::time_point at, std::uint64_t generation) {
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this(), generation](boost::system::error_code ec) {
      // A wait cancelled by re-arming may already have been queued as expired: the generation
      // tells it apart.
      if (ec || generation != self->generation_ || self->socket_ == nullptr) return;
      self->fired_ = true;
      boost::system::error_code ignored;
      self->socket_->cancel(ignored);
      self->Wait(SteadyClock::now() + kWatchdogRepeat, generation);
    });
  }

  asio::steady_timer timer_;
  tcp::socket* socket_;
  std::uint64_t generation_ = 0;
  bool fired_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// HttpRequest / HttpResponse

std::optional<std::string> HttpRequest::Query(std::string_view name) const {
  for (const auto& [k, v] : query) {
    if (k == name) return v;
  }
  return std::nullopt;
}

std::vector<std::string> HttpRequest::QueryAll(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [k, v] : query) {
    if (k == name) out.push_back(v);
  }
  return out;
}

std::string HttpRequest::Param(std::string_view name) const {
  auto it = params.find(name);
  return it == params.end() ? std::string() : it->second;
}

std::optional<std::string> HttpRequest::Header(std::string_view name) const {
  auto it = headers.find(ToLower(name));
  if (it == headers.end()) return std::nullopt;
  return it->second;
}

StatusOr<nlohmann::json> HttpRequest::JsonBody() const {
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    return InvalidArgument(std::string("request body is not valid JSON: ") + e.what());
  }
}

HttpResponse HttpResponse::Json(int status, const nlohmann::json& value) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  // Invalid UTF-8 in a string is replaced rather than thrown on.
  r.body = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

HttpResponse HttpResponse::Text(int status, std::string text, std::string content_type) {
  HttpResponse r;
  r.status = status;
  r.content_type = std::move(content_type);
  r.body = std::move(text);
  return r;
}

HttpResponse HttpResponse::FromStatus(const Status& status) {
  if (status.ok()) return Json(200, nlohmann::json::object());
  nlohmann::json error = {
      {"error",
       {{"code", std::string(StatusCodeName(status.code()))}, {"message", status.message()}}}};
  return Json(HttpStatusFor(status.code()), error);
}

HttpResponse HttpResponse::File(ScopedFd fd, std::string content_type) {
  HttpResponse r;
  r.status = 200;
  r.content_type = std::move(content_type);
  r.file = std::make_shared<const ScopedFd>(std::move(fd));
  return r;
}

// ---------------------------------------------------------------------------------------------
// HttpServer

namespace {

struct Segment {
  enum class Kind { kLiteral, kParam, kRest };
  Kind kind;
  std::string text;  // The literal, or the capture name.
};

struct RouteEntry {
  std::string method;
  std::string pattern;
  std::vector<Segment> segments;
  AsyncHandler async_handler;
  SyncHandler sync_handler;
  UploadHandler upload_handler;
  std::uint64_t upload_limit = 0;  // Upload routes: largest accepted body.
  bool on_loop = false;            // Sync handlers: run on the event loop, not the pool.
  std::string pool;                // Off the loop: the named pool it runs on ("" the default).
  asio::thread_pool* runs_on = nullptr;  // That pool, once the server started.
};

// The route chosen for a request: the route and its captures, or the error answer (404, 405).
struct RouteMatch {
  const RouteEntry* route = nullptr;
  std::map<std::string, std::string, std::less<>> params;
  HttpResponse error;  // When route is null.
};

// A beast Body that hands each piece of a request body to a BodySink instead of keeping it.
struct SinkBody {
  struct value_type {
    BodySink* sink = nullptr;  // Borrowed.
    Status status;             // The first failed BodySink::Write.
  };

  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(http::header<isRequest, Fields>&, value_type& body) : body_(body) {}

    void init(const boost::optional<std::uint64_t>&, boost::system::error_code& ec) { ec = {}; }

    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, boost::system::error_code& ec) {
      std::size_t n = 0;
      for (const auto b : beast::buffers_range_ref(buffers)) {
        Status written =
            body_.sink->Write(std::string_view(static_cast<const char*>(b.data()), b.size()));
        if (!written.ok()) {
          body_.status = std::move(written);
          ec = boost::system::errc::make_error_code(boost::system::errc::operation_canceled);
          return n;
        }
        n += b.size();
      }
      ec = {};
      return n;
    }

    void finish(boost::system::error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };
};

StatusOr<std::vector<Segment>> ParsePattern(std::string_view pattern) {
  if (pattern.empty() || pattern[0] != '/') {
    return InvalidArgument("route pattern must start with '/': " + std::string(pattern));
  }
  std::vector<Segment> segments;
  std::string_view rest = pattern.substr(1);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.empty()) return segments;
  const std::vector<std::string> parts = Split(rest, '/');
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const bool open = !part.empty() && part.front() == '{';
    const bool close = !part.empty() && part.back() == '}';
    if (open != close || (!open && part.find_first_of("{}") != std::string::npos)) {
      return InvalidArgument("malformed segment '" + part + "' in route pattern " +
                             std::string(pattern));
    }
    if (!open) {
      segments.push_back({Segment::Kind::kLiteral, part});
      continue;
    }
    std::string name = part.substr(1, part.size() - 2);
    Segment::Kind kind = Segment::Kind::kParam;
    if (EndsWith(name, "...")) {
      name.resize(name.size() - 3);
      kind = Segment::Kind::kRest;
      if (i + 1 != parts.size()) {
        return InvalidArgument("'{" + name + "...}' must be the last segment of route pattern " +
                               std::string(pattern));
      }
    }
    if (name.empty() || name.find_first_of("{}/.") != std::string::npos) {
      return InvalidArgument("bad capture name in route pattern " + std::string(pattern));
    }
    segments.push_back({kind, std::move(name)});
  }
  return segments;
}

// Matches decoded path segments against a pattern. On a match fills `params` and `rank`: one
// character per path segment ('2' literal, '1' capture, '0' rest), so that the
// lexicographically greatest rank is the most specific route.
bool MatchRoute(const std::vector<Segment>& pattern, const std::vector<std::string>& path,
                std::map<std::string, std::string, std::less<>>* params, std::string* rank) {
  params->clear();
  rank->clear();
  std::size_t i = 0;
  for (const Segment& seg : pattern) {
    if (seg.kind == Segment::Kind::kRest) {
      if (i >= path.size()) return false;
      std::string joined;
      for (std::size_t j = i; j < path.size(); ++j) {
        if (j > i) joined.push_back('/');
        joined += path[j];
        rank->push_back('0');
      }
      (*params)[seg.text] = std::move(joined);
      return true;
    }
    if (i >= path.size()) return false;
    if (seg.kind == Segment::Kind::kLiteral) {
      if (path[i] != seg.text) return false;
      rank->push_back('2');
    } else {
      (*params)[seg.text] = path[i];
      rank->push_back('1');
    }
    ++i;
  }
  return i == path.size();
}

}  // namespace

struct HttpServer::Impl {
  explicit Impl(HttpServerOptions opts) : options(std::move(opts)) {
    ioc.emplace(std::max(1, options.threads));
    work.emplace(ioc->get_executor());
    listeners.push_back({HttpListener{options.address, options.port, options.tls}});
  }
  // Binds every listener (and makes the TLS contexts); on failure some may be open.
  Status OpenListeners();

  struct Listener;
  // Serves one connection until it closes.
  // `count` is the connection counter the session holds a unit of (AcceptLoop took it).
  asio::awaitable<void> Session(tcp::socket socket, std::shared_ptr<asio::ssl::context> tls,
                                std::shared_ptr<std::atomic<int>> count);
  template <class Stream>
  asio::awaitable<void> ServeConnection(Stream& stream, Watchdog& watchdog);
  asio::awaitable<void> AcceptLoop(Listener& listener);
  RouteMatch FindRoute(const HttpRequest& request, const std::vector<std::string>& segments) const;
  asio::awaitable<HttpResponse> Dispatch(HttpRequest& request, RouteMatch& match);
  // Serves one request to an upload route after its header; returns whether the connection
  // can serve another request.
  template <class Stream>
  asio::awaitable<bool> ServeUpload(Stream& stream, Watchdog& watchdog, beast::flat_buffer& buffer,
                                    http::request_parser<http::string_body>& header_parser,
                                    HttpRequest& request, const RouteEntry& route, unsigned version,
                                    bool keep_alive);
  // Answers a connection over its listener's cap with 429 (plain HTTP only) and closes it,
  // without waiting.
  void Refuse(tcp::socket& socket, const Listener& listener) const;
  Pace pace() const { return Pace{options.transfer_grace, options.min_bytes_per_second}; }
  // OK, Unauthenticated (no or unknown token) or PermissionDenied (a scoped token outside its
  // scope).
  // Checks the bearer token; for a token_scope token, sets request.principal.
  Status Authorize(HttpRequest& request) const;

  HttpServerOptions options;
  std::vector<RouteEntry> routes;  // Immutable once started.
  std::vector<std::string> route_errors;

  // Declared after `routes`: destroyed first, with the suspended coroutines it owns. Reset by
  // Stop().
  std::optional<asio::io_context> ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  // One per address served: the options' first, then AddListener's. Acceptors are opened by
  // Start and closed by Stop.
  struct Listener {
    HttpListener spec;
    std::shared_ptr<asio::ssl::context> tls;  // null: plain HTTP
    std::optional<tcp::acceptor> acceptor;
    int port = 0;
    // Its connections alive, against `cap`: the server's counter and max_connections, or its
    // own (HttpListener::max_connections).
    std::shared_ptr<std::atomic<int>> count;
    int cap = 0;
  };
  std::vector<Listener> listeners;
  std::vector<std::thread> threads;
  // Runs BodySink::Finish off the event loop. Created by Start, joined by Stop before the
  // event loop (which owns the coroutines waiting on it) is torn down.
  std::optional<asio::thread_pool> blocking;
  // The named pools (HttpServerOptions::pools), made and joined with `blocking`.
  std::map<std::string, std::unique_ptr<asio::thread_pool>> pools;
  bool started = false;
  // Sessions alive on the listeners that share the server's cap.
  std::shared_ptr<std::atomic<int>> connections = std::make_shared<std::atomic<int>>(0);
};

namespace {

// Writes a message at `pace` or better (a client that reads too slowly is cut off). Returns
// false on a write error.
template <class Stream, class Body>
asio::awaitable<bool> WriteMessage(Stream& stream, http::response<Body>& message, Pace pace) {
  http::response_serializer<Body> serializer(message);
  boost::system::error_code ec;
  const SteadyClock::time_point start = SteadyClock::now();
  std::uint64_t sent = 0;
  while (!serializer.is_done()) {
    beast::get_lowest_layer(stream).expires_at(pace.Deadline(start, sent));
    sent +=
        co_await http::async_write_some(stream, serializer, asio::redirect_error(kAwaitable, ec));
    if (ec) co_return false;
  }
  co_return true;
}

template <class Body>
void FillHeaders(const HttpResponse& response, bool keep_alive, http::response<Body>* out) {
  out->result(static_cast<unsigned>(response.status));
  out->set(http::field::server, "trainyard");
  out->set(http::field::content_type, response.content_type);
  for (const auto& [name, value] : response.headers) out->insert(name, value);
  out->keep_alive(keep_alive);
}

// Streams `size` bytes of an open file after the header, kFileChunk at a time (beast's file_body
// reads 4 KiB per write, too small for multi-GB artifacts). A file that shrinks meanwhile ends
// the connection, so the client sees a short body rather than a wrong one.
template <class Stream>
asio::awaitable<bool> WriteFile(Stream& stream, const HttpResponse& response, beast::file& file,
                                std::uint64_t size, unsigned version, bool keep_alive, Pace pace) {
  http::response<http::empty_body> header;
  header.version(version);
  FillHeaders(response, keep_alive, &header);
  header.content_length(size);
  http::response_serializer<http::empty_body> serializer(header);
  boost::system::error_code ec;
  const SteadyClock::time_point start = SteadyClock::now();
  std::uint64_t sent = 0;
  beast::get_lowest_layer(stream).expires_at(pace.Deadline(start, sent));
  co_await http::async_write_header(stream, serializer, asio::redirect_error(kAwaitable, ec));
  if (ec) co_return false;
  std::vector<char> chunk(static_cast<std::size_t>(std::min<std::uint64_t>(size, kFileChunk)));
  for (std::uint64_t left = size; left > 0;) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(left, kFileChunk));
    const std::size_t n = file.read(chunk.data(), want, ec);
    if (ec || n == 0) co_return false;
    beast::get_lowest_layer(stream).expires_at(pace.Deadline(start, sent));
    co_await asio::async_write(stream, asio::buffer(chunk.data(), n),
                               asio::redirect_error(kAwaitable, ec));
    if (ec) co_return false;
    left -= n;
    sent += n;
  }
  co_return true;
}

template <class Stream>
asio::awaitable<bool> WriteResponse(Stream& stream, const HttpResponse& response, unsigned version,
                                    bool keep_alive, Pace pace) {
  if (response.file) {
    beast::file file;
    boost::system::error_code ec;
    // Read from its start through a descriptor of our own (the response may be sent again).
    int fd = ::dup(response.file->get());
    if (fd < 0) {
      ec.assign(errno, boost::system::generic_category());
    } else {
      file.native_handle(fd);  // the file object owns and closes it
      file.seek(0, ec);
    }
    std::uint64_t size = 0;
    if (!ec) size = file.size(ec);
    if (!ec) {
      const bool ok = co_await WriteFile(stream, response, file, size, version, keep_alive, pace);
      co_return ok;
    }
    HttpResponse missing =
        HttpResponse::FromStatus(NotFound("the file cannot be read: " + ec.message()));
    const bool ok = co_await WriteResponse(stream, missing, version, keep_alive, pace);
    co_return ok;
  }
  http::response<http::string_body> message;
  message.version(version);
  FillHeaders(response, keep_alive, &message);
  // 1xx, 204 and 304 responses carry no body.
  const int s = response.status;
  if (!((s >= 100 && s < 200) || s == 204 || s == 304)) message.body() = response.body;
  message.prepare_payload();
  const bool ok = co_await WriteMessage(stream, message, pace);
  co_return ok;
}

// Ends our side of a connection: for TLS a close_notify first (waiting briefly for the client's),
// then the TCP send side.
template <class Stream>
asio::awaitable<void> ShutdownSend(Stream& stream) {
  boost::system::error_code ec;
  if constexpr (kIsTls<Stream>) {
    beast::get_lowest_layer(stream).expires_after(kLingerTimeout);
    co_await stream.async_shutdown(asio::redirect_error(kAwaitable, ec));
  }
  beast::get_lowest_layer(stream).socket().shutdown(tcp::socket::shutdown_send, ec);
}

// After an error answered before the request body was read: stop sending, drain what the client
// is still sending for a short while (so it can read our response instead of a reset), close.
template <class Stream>
asio::awaitable<void> LingeringClose(Stream& stream) {
  co_await ShutdownSend(stream);
  // What the client still sends is read as raw bytes (encrypted, for TLS) and dropped.
  beast::tcp_stream& tcp = beast::get_lowest_layer(stream);
  tcp.expires_after(kLingerTimeout);
  std::vector<char> sink(16 * 1024);
  boost::system::error_code ec;
  while (!ec) {
    co_await tcp.async_read_some(asio::buffer(sink), asio::redirect_error(kAwaitable, ec));
  }
  tcp.close();
}

// Answers `status` before the request body (if any) was read. A connection with an unread body
// is closed after the answer (the body would be taken for the next request). Returns whether
// the connection can serve another request.
// (Arguments by value, results in named variables: GCC 12 mishandles temporaries around
// co_await.)
template <class Stream>
asio::awaitable<bool> AnswerEarly(Stream& stream, HttpResponse response, unsigned version,
                                  bool keep_alive, bool body_unread, Pace pace) {
  if (body_unread) keep_alive = false;
  const bool written = co_await WriteResponse(stream, response, version, keep_alive, pace);
  if (!written) co_return false;
  if (!keep_alive) {
    co_await LingeringClose(stream);
    co_return false;
  }
  co_return true;
}

template <class Stream>
asio::awaitable<bool> AnswerEarly(Stream& stream, Status status, unsigned version, bool keep_alive,
                                  bool body_unread, Pace pace) {
  const bool more = co_await AnswerEarly(stream, HttpResponse::FromStatus(status), version,
                                         keep_alive, body_unread, pace);
  co_return more;
}

// 408 with the usual JSON error.
HttpResponse RequestTimeout(std::string message) {
  return HttpResponse::Json(
      408, {{"error", {{"code", "REQUEST_TIMEOUT"}, {"message", std::move(message)}}}});
}

std::string SlowBodyMessage(Pace pace) {
  return "the request body arrived slower than the limit of " +
         std::to_string(pace.min_bytes_per_second) + " bytes per second (after " +
         std::to_string(pace.grace.count() / 1000) + " s)";
}

// Reads the rest of a request body into `parser` at `pace` or better. The error of the read;
// asio::error::timed_out when the client sent too slowly (the socket is still open, to answer).
template <class Stream, class Body>
asio::awaitable<boost::system::error_code> ReadBody(Stream& stream, Watchdog& watchdog,
                                                    beast::flat_buffer& buffer,
                                                    http::request_parser<Body>& parser, Pace pace) {
  buffer.reserve(kBodyReadBuffer);
  boost::system::error_code ec;
  const SteadyClock::time_point start = SteadyClock::now();
  std::uint64_t received = 0;
  while (!parser.is_done()) {
    const SteadyClock::time_point deadline = pace.Deadline(start, received);
    watchdog.Arm(deadline);
    // Beast's timeout closes the socket: only a backstop behind the watchdog.
    beast::get_lowest_layer(stream).expires_at(deadline + kShortWriteTimeout);
    received += co_await http::async_read_some(stream, buffer, parser,
                                               asio::redirect_error(kAwaitable, ec));
    if (ec) break;
  }
  watchdog.Disarm();
  if (ec && watchdog.fired()) ec = asio::error::timed_out;
  co_return ec;
}

std::string TooLargeMessage(std::uint64_t limit) {
  return "request body exceeds the limit of " + std::to_string(limit) + " bytes";
}

// Sends "100 Continue" when the client waits for it before sending the body.
template <class Stream>
asio::awaitable<bool> MaybeContinue(Stream& stream, const HttpRequest& request, unsigned version) {
  std::optional<std::string> expect = request.Header("expect");
  if (expect && ToLower(Trim(*expect)) == "100-continue") {
    http::response<http::empty_body> proceed{http::status::continue_, version};
    const bool ok = co_await WriteMessage(stream, proceed, Pace{kShortWriteTimeout, 1});
    co_return ok;
  }
  co_return true;
}

// Runs on the blocking pool.
asio::awaitable<HttpResponse> FinishSink(BodySink* sink, std::string what) {
  std::string failure;
  try {
    co_return sink->Finish();
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "unknown exception";
  }
  spdlog::error("upload handler for {} threw: {}", what, failure);
  co_return HttpResponse::FromStatus(
      Internal("upload handler for " + what + " failed: " + failure));
}

}  // namespace

Status HttpServer::Impl::Authorize(HttpRequest& request) const {
  if (options.bearer_token.empty()) return Status::Ok();
  if (request.method == "GET" && request.path == kHealthPath) return Status::Ok();
  Status unauthenticated =
      Unauthenticated("missing or invalid bearer token (Authorization: Bearer ...)");
  std::optional<std::string> header = request.Header("authorization");
  if (!header) return unauthenticated;
  std::string_view value = Trim(*header);
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() < kScheme.size() || ToLower(value.substr(0, kScheme.size())) != kScheme) {
    return unauthenticated;
  }
  const std::string_view token = Trim(value.substr(kScheme.size()));
  if (ConstantTimeEquals(token, options.bearer_token)) return Status::Ok();
  if (!options.token_scope || token.empty()) return unauthenticated;
  StatusOr<std::string> principal = options.token_scope(token, request);
  if (!principal.ok()) {
    if (principal.status().code() == StatusCode::kPermissionDenied) return principal.status();
    return unauthenticated;
  }
  request.principal = std::move(principal).value();
  return Status::Ok();
}

RouteMatch HttpServer::Impl::FindRoute(const HttpRequest& request,
                                       const std::vector<std::string>& segments) const {
  RouteMatch match;
  const RouteEntry* best = nullptr;
  std::string best_rank;
  std::map<std::string, std::string, std::less<>> best_params;
  std::vector<std::string> allowed;
  std::map<std::string, std::string, std::less<>> params;
  std::string rank;
  for (const RouteEntry& route : routes) {
    if (!MatchRoute(route.segments, segments, &params, &rank)) continue;
    if (route.method != request.method) {
      if (std::find(allowed.begin(), allowed.end(), route.method) == allowed.end()) {
        allowed.push_back(route.method);
      }
      continue;
    }
    if (best == nullptr || rank > best_rank) {
      best = &route;
      best_rank = rank;
      best_params = params;
    }
  }
  if (best == nullptr && allowed.empty()) {
    match.error =
        HttpResponse::FromStatus(NotFound("no route for " + request.method + " " + request.path));
    return match;
  }
  if (best == nullptr) {
    std::string allow;
    for (const std::string& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
    nlohmann::json error = {{"error",
                             {{"code", "METHOD_NOT_ALLOWED"},
                              {"message", "method " + request.method + " is not allowed for " +
                                              request.path + "; allowed: " + allow}}}};
    match.error = HttpResponse::Json(405, error);
    match.error.headers.emplace_back("Allow", allow);
    return match;
  }
  match.route = best;
  match.params = std::move(best_params);
  return match;
}

asio::awaitable<HttpResponse> HttpServer::Impl::Dispatch(HttpRequest& request, RouteMatch& match) {
  if (match.route == nullptr) co_return std::move(match.error);
  const RouteEntry* best = match.route;
  request.params = std::move(match.params);

  std::string failure;
  try {
    if (best->sync_handler && best->on_loop) co_return best->sync_handler(request);
    if (best->sync_handler) {
      // On the blocking pool; the connection's strand waits without holding its thread.
      HttpResponse response;
      const SyncHandler& handler = best->sync_handler;
      auto call = [&]() -> asio::awaitable<void> {
        response = handler(request);
        co_return;
      };
      co_await asio::co_spawn(best->runs_on->get_executor(), call(), kAwaitable);
      co_return response;
    }
    HttpResponse response = co_await best->async_handler(request);
    co_return response;
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "unknown exception";
  }
  spdlog::error("handler for {} {} threw: {}", request.method, request.path, failure);
  co_return HttpResponse::FromStatus(
      Internal("handler for " + request.method + " " + best->pattern + " failed: " + failure));
}

template <class Stream>
asio::awaitable<void> HttpServer::Impl::ServeConnection(Stream& stream, Watchdog& watchdog) {
  beast::flat_buffer buffer;
  const Pace short_pace{kShortWriteTimeout, 1};
  for (;;) {
    boost::system::error_code ec;
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimit);
    // The limit depends on the route, known only after the header: checked below. (Not
    // boost::none: Boost 1.74 then refuses every Content-Length.)
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());

    // Idle until the request's first byte; from there the header has header_timeout in all.
    if (buffer.size() == 0) {
      beast::get_lowest_layer(stream).expires_after(kIdleTimeout);
      const std::size_t n = co_await stream.async_read_some(buffer.prepare(4096),
                                                            asio::redirect_error(kAwaitable, ec));
      if (ec == asio::error::eof) {
        co_await ShutdownSend(stream);
        co_return;
      }
      if (ec) co_return;  // Idle too long, reset, or a client that went away.
      buffer.commit(n);
    }
    const SteadyClock::time_point header_deadline = SteadyClock::now() + options.header_timeout;
    watchdog.Arm(header_deadline);
    beast::get_lowest_layer(stream).expires_at(header_deadline +
                                               kShortWriteTimeout);  // backstop behind the watchdog
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(kAwaitable, ec));
    watchdog.Disarm();
    if (ec && watchdog.fired()) {
      const HttpResponse slow =
          RequestTimeout("the request header did not arrive within the limit of " +
                         std::to_string(options.header_timeout.count()) + " ms");
      if (co_await WriteResponse(stream, slow, 11, false, short_pace)) {
        co_await LingeringClose(stream);
      }
      co_return;
    }
    if (ec) {
      if (IsBeastHttpError(ec) && ec != http::error::partial_message) {
        HttpResponse bad =
            HttpResponse::FromStatus(InvalidArgument("malformed HTTP request: " + ec.message()));
        if (co_await WriteResponse(stream, bad, 11, false, short_pace)) {
          co_await LingeringClose(stream);
        }
      }
      co_return;  // Reset, or a client that went away.
    }

    auto& header = parser.get();
    const unsigned version = header.version();
    bool keep_alive = header.keep_alive();
    const bool has_body =
        parser.chunked() || (parser.content_length() && *parser.content_length() > 0);

    HttpRequest request;
    request.method = std::string(ToStd(header.method_string()));
    request.target = std::string(ToStd(header.target()));
    for (const auto& field : header) {
      const std::string_view value = ToStd(field.value());
      auto [it, inserted] =
          request.headers.emplace(ToLower(ToStd(field.name_string())), std::string(value));
      if (!inserted) {
        it->second += ", ";
        it->second += value;
      }
    }

    // Checks that need only the header come before reading the body.
    std::optional<Status> early_error;
    const std::string_view target = request.target;
    const std::size_t q = target.find('?');
    const std::string_view raw_path = target.substr(0, q);
    std::optional<std::string> path = PercentDecode(raw_path, /*plus_is_space=*/false);
    std::optional<std::vector<std::string>> segments;
    if (!raw_path.empty() && raw_path[0] == '/') segments = SplitPath(raw_path);
    if (!path || !segments) {
      early_error = InvalidArgument("malformed request target: " + request.target);
    } else {
      request.path = std::move(*path);
      if (request.path.size() > 1 && request.path.back() == '/') request.path.pop_back();
      if (q != std::string_view::npos) {
        for (const std::string& pair : Split(target.substr(q + 1), '&')) {
          if (pair.empty()) continue;
          const std::size_t eq = pair.find('=');
          std::optional<std::string> name =
              PercentDecode(std::string_view(pair).substr(0, eq), /*plus_is_space=*/true);
          std::optional<std::string> value =
              eq == std::string::npos
                  ? std::optional<std::string>("")
                  : PercentDecode(std::string_view(pair).substr(eq + 1), /*plus_is_space=*/true);
          if (!name || !value) {
            early_error = InvalidArgument("malformed query string: " + request.target);
            break;
          }
          request.query.emplace_back(std::move(*name), std::move(*value));
        }
      }
    }
    if (!early_error) {
      if (Status auth = Authorize(request); !auth.ok()) early_error = auth;
    }
    if (early_error) {
      if (has_body) keep_alive = false;  // The unread body would be taken for the next request.
      const HttpResponse response = HttpResponse::FromStatus(*early_error);
      if (!co_await WriteResponse(stream, response, version, keep_alive, pace())) co_return;
      if (!keep_alive) {
        co_await LingeringClose(stream);
        co_return;
      }
      continue;
    }

    RouteMatch match = FindRoute(request, *segments);
    if (match.route != nullptr && match.route->upload_handler) {
      request.params = std::move(match.params);
      if (!co_await ServeUpload(stream, watchdog, buffer, parser, request, *match.route, version,
                                keep_alive)) {
        co_return;
      }
      continue;
    }

    const auto body_limit = static_cast<std::uint64_t>(options.max_body_bytes);
    if (parser.content_length() && *parser.content_length() > body_limit) {
      const Status too_large = PayloadTooLarge(TooLargeMessage(body_limit));
      co_await AnswerEarly(stream, too_large, version, keep_alive, /*body_unread=*/true, pace());
      co_return;
    }
    parser.body_limit(body_limit);  // For chunked bodies.
    if (!parser.is_done()) {
      if (!co_await MaybeContinue(stream, request, version)) co_return;
      ec = co_await ReadBody(stream, watchdog, buffer, parser, pace());
      if (ec == asio::error::timed_out) {
        co_await AnswerEarly(stream, RequestTimeout(SlowBodyMessage(pace())), version, keep_alive,
                             /*body_unread=*/true, short_pace);
        co_return;
      }
      if (ec == http::error::body_limit) {
        const Status too_large = PayloadTooLarge(TooLargeMessage(body_limit));
        co_await AnswerEarly(stream, too_large, version, keep_alive, /*body_unread=*/true, pace());
        co_return;
      }
      if (ec) co_return;
    }
    request.body = std::move(parser.get().body());
    // Idle keep-alive connections should not pin the large read buffer.
    if (buffer.capacity() > kBodyReadBuffer / 4) buffer.shrink_to_fit();

    beast::get_lowest_layer(stream).expires_never();  // Long-poll handlers may take their time.
    const HttpResponse response = co_await Dispatch(request, match);
    if (!co_await WriteResponse(stream, response, version, keep_alive, pace())) co_return;
    if (!keep_alive) {
      co_await ShutdownSend(stream);
      co_return;
    }
  }
}

template <class Stream>
asio::awaitable<bool> HttpServer::Impl::ServeUpload(
    Stream& stream, Watchdog& watchdog, beast::flat_buffer& buffer,
    http::request_parser<http::string_body>& header_parser, HttpRequest& request,
    const RouteEntry& route, unsigned version, bool keep_alive) {
  const std::uint64_t limit = route.upload_limit;
  const bool body_pending = !header_parser.is_done();
  if (header_parser.content_length() && *header_parser.content_length() > limit) {
    const Status too_large = PayloadTooLarge(TooLargeMessage(limit));
    const bool more =
        co_await AnswerEarly(stream, too_large, version, keep_alive, body_pending, pace());
    co_return more;
  }

  std::unique_ptr<BodySink> sink;
  std::optional<Status> refused;
  try {
    StatusOr<std::unique_ptr<BodySink>> opened = route.upload_handler(request);
    if (!opened.ok()) {
      refused = opened.status();
    } else {
      sink = std::move(opened).value();
      if (sink == nullptr) refused = Internal("upload handler opened no sink");
    }
  } catch (const std::exception& e) {
    refused = Internal("upload handler for " + request.method + " " + route.pattern +
                       " failed: " + e.what());
  } catch (...) {
    refused = Internal("upload handler for " + request.method + " " + route.pattern +
                       " failed: unknown exception");
  }
  if (refused) {
    if (refused->code() == StatusCode::kInternal) spdlog::error("{}", refused->message());
    const Status refusal = *refused;
    const bool more =
        co_await AnswerEarly(stream, refusal, version, keep_alive, body_pending, pace());
    co_return more;
  }

  http::request_parser<SinkBody> parser(std::move(header_parser));
  parser.body_limit(limit);  // For chunked bodies; Content-Length was checked above.
  parser.get().body().sink = sink.get();
  if (!parser.is_done()) {
    if (!co_await MaybeContinue(stream, request, version)) co_return false;
    const boost::system::error_code ec =
        co_await ReadBody(stream, watchdog, buffer, parser, pace());
    if (!parser.get().body().status.ok()) {
      const Status failed = parser.get().body().status;
      sink.reset();
      co_await AnswerEarly(stream, failed, version, keep_alive, /*body_unread=*/true, pace());
      co_return false;
    }
    if (ec == asio::error::timed_out) {
      sink.reset();
      co_await AnswerEarly(stream, RequestTimeout(SlowBodyMessage(pace())), version, keep_alive,
                           /*body_unread=*/true, Pace{kShortWriteTimeout, 1});
      co_return false;
    }
    if (ec == http::error::body_limit) {
      sink.reset();
      const Status too_large = PayloadTooLarge(TooLargeMessage(limit));
      co_await AnswerEarly(stream, too_large, version, keep_alive, /*body_unread=*/true, pace());
      co_return false;
    }
    if (ec) co_return false;  // The client went away: the sink goes without Finish.
  }
  if (buffer.capacity() > kBodyReadBuffer / 4) buffer.shrink_to_fit();

  beast::get_lowest_layer(stream).expires_never();
  const std::string what = request.method + " " + route.pattern;
  const HttpResponse response = co_await asio::co_spawn(route.runs_on->get_executor(),
                                                        FinishSink(sink.get(), what), kAwaitable);
  sink.reset();
  if (!co_await WriteResponse(stream, response, version, keep_alive, pace())) co_return false;
  if (!keep_alive) {
    co_await ShutdownSend(stream);
    co_return false;
  }
  co_return true;
}

asio::awaitable<void> HttpServer::Impl::Session(tcp::socket socket,
                                                std::shared_ptr<asio::ssl::context> tls,
                                                std::shared_ptr<std::atomic<int>> count) {
  struct Release {
    std::atomic<int>& n;
    ~Release() { n.fetch_sub(1); }
  } release{*count};  // Taken by AcceptLoop.
  std::optional<PlainStream> plain;
  std::optional<TlsStream> secure;
  beast::tcp_stream* tcp = nullptr;
  if (tls) {
    tcp = &beast::get_lowest_layer(secure.emplace(std::move(socket), *tls));
  } else {
    tcp = &plain.emplace(std::move(socket));
  }
  const auto watchdog = std::make_shared<Watchdog>(tcp->get_executor(), tcp->socket());
  try {
    if (secure) {
      // The handshake has the time of a request header; a client that speaks plain HTTP here
      // fails it and is closed without an answer.
      boost::system::error_code ec;
      tcp->expires_after(options.header_timeout);
      co_await secure->async_handshake(asio::ssl::stream_base::server,
                                       asio::redirect_error(kAwaitable, ec));
      if (!ec) co_await ServeConnection(*secure, *watchdog);
    } else {
      co_await ServeConnection(*plain, *watchdog);
    }
  } catch (const std::exception& e) {
    spdlog::warn("http connection dropped: {}", e.what());
  }
  watchdog->Detach();
  boost::system::error_code ec;
  tcp->socket().close(ec);
}

std::string TooManyConnectionsAnswer(int limit, std::string_view whose) {
  const std::string body =
      HttpResponse::FromStatus(ResourceExhausted("the limit of " + std::to_string(limit) + " " +
                                                 std::string(whose) +
                                                 " concurrent connections is reached; retry later"))
          .body;
  return "HTTP/1.1 429 Too Many Requests\r\nServer: trainyard\r\n"
         "Content-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
         "Content-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

void HttpServer::Impl::Refuse(tcp::socket& socket, const Listener& listener) const {
  boost::system::error_code ec;
  // Never waits: a client that does not read its refusal just loses it. (A TLS client would need
  // a handshake first, which is what the cap saves: it is just closed.)
  if (!listener.tls) {
    const std::string message = TooManyConnectionsAnswer(
        listener.cap, listener.count == connections ? "the server's" : "this address's");
    socket.non_blocking(true, ec);
    socket.write_some(asio::buffer(message), ec);
    socket.shutdown(tcp::socket::shutdown_send, ec);
  }
  socket.close(ec);
}

asio::awaitable<void> HttpServer::Impl::AcceptLoop(Listener& listener) {
  tcp::acceptor& acceptor = *listener.acceptor;
  for (;;) {
    boost::system::error_code ec;
    tcp::socket socket(asio::make_strand(*ioc));
    co_await acceptor.async_accept(socket, asio::redirect_error(kAwaitable, ec));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // Out of descriptors and the like: back off briefly instead of spinning.
      spdlog::warn("http accept failed: {}", ec.message());
      asio::steady_timer backoff(*ioc, std::chrono::milliseconds(100));
      co_await backoff.async_wait(asio::redirect_error(kAwaitable, ec));
      continue;
    }
    if (listener.count->fetch_add(1) >= listener.cap) {
      listener.count->fetch_sub(1);
      Refuse(socket, listener);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    const asio::any_io_executor strand = socket.get_executor();
    asio::co_spawn(strand, Session(std::move(socket), listener.tls, listener.count),
                   asio::detached);
  }
}

HttpServer::HttpServer(HttpServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Route(std::string method, std::string pattern, AsyncHandler handler) {
  StatusOr<std::vector<Segment>> segments = ParsePattern(pattern);
  if (!segments.ok()) {
    impl_->route_errors.push_back(segments.status().message());
    return;
  }
  impl_->routes.push_back(
      {std::move(method), std::move(pattern), std::move(*segments), std::move(handler), {}});
}

void HttpServer::Route(std::string method, std::string pattern, SyncHandler handler,
                       std::string pool) {
  StatusOr<std::vector<Segment>> segments = ParsePattern(pattern);
  if (!segments.ok()) {
    impl_->route_errors.push_back(segments.status().message());
    return;
  }
  impl_->routes.push_back(
      {std::move(method), std::move(pattern), std::move(*segments), {}, std::move(handler)});
  impl_->routes.back().pool = std::move(pool);
}

void HttpServer::RouteOnLoop(std::string method, std::string pattern, SyncHandler handler) {
  const std::size_t before = impl_->routes.size();
  Route(std::move(method), std::move(pattern), std::move(handler));
  if (impl_->routes.size() > before) impl_->routes.back().on_loop = true;
}

void HttpServer::UploadRoute(std::string method, std::string pattern, std::uint64_t max_body_bytes,
                             UploadHandler handler, std::string pool) {
  StatusOr<std::vector<Segment>> segments = ParsePattern(pattern);
  if (!segments.ok()) {
    impl_->route_errors.push_back(segments.status().message());
    return;
  }
  RouteEntry entry{std::move(method), std::move(pattern), std::move(*segments), {}, {}};
  entry.upload_handler = std::move(handler);
  entry.upload_limit = max_body_bytes;
  entry.pool = std::move(pool);
  impl_->routes.push_back(std::move(entry));
}

namespace {

// Collects a small body and answers it from Finish, on the blocking pool (BufferedRoute).
class BufferingSink : public BodySink {
 public:
  BufferingSink(HttpRequest request, std::function<Status(std::size_t)> limit_check,
                SyncHandler handler)
      : request_(std::move(request)),
        limit_check_(std::move(limit_check)),
        handler_(std::move(handler)) {}

  Status Write(std::string_view data) override {
    request_.body.append(data);
    return limit_check_ ? limit_check_(request_.body.size()) : Status::Ok();
  }
  HttpResponse Finish() override { return handler_(request_); }

 private:
  HttpRequest request_;
  std::function<Status(std::size_t)> limit_check_;
  SyncHandler handler_;
};

}  // namespace

void HttpServer::BufferedRoute(std::string method, std::string pattern,
                               std::uint64_t max_body_bytes, SyncHandler handler,
                               BufferedRouteOptions options) {
  UploadRoute(
      std::move(method), std::move(pattern), max_body_bytes,
      [handler = std::move(handler), precheck = std::move(options.precheck),
       limit_check = std::move(options.limit_check)](
          HttpRequest& request) -> StatusOr<std::unique_ptr<BodySink>> {
        if (precheck) TY_RETURN_IF_ERROR(precheck(request));
        return std::unique_ptr<BodySink>(
            std::make_unique<BufferingSink>(request, limit_check, handler));
      },
      std::move(options.pool));
}

Status HttpServer::AddListener(HttpListener listener) {
  // The running accept loops hold references into `listeners`.
  if (impl_->started || !impl_->ioc) {
    return FailedPrecondition("listeners are added before the HTTP server starts");
  }
  impl_->listeners.push_back({std::move(listener)});
  return Status::Ok();
}

namespace {

// A server context for `identity`: TLS 1.2 or later, the identity's chain and key.
StatusOr<std::shared_ptr<asio::ssl::context>> MakeTlsContext(const TlsIdentity& identity,
                                                             const std::string& where) {
  TY_RETURN_IF_ERROR(CheckIdentity(identity, "the TLS identity for " + where));
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::single_dh_use);
  boost::system::error_code ec;
  context->use_certificate_chain(asio::buffer(identity.certificate_pem), ec);
  if (!ec) {
    context->use_private_key(asio::buffer(identity.private_key_pem), asio::ssl::context::pem, ec);
  }
  if (ec) {
    return InvalidArgument("the TLS identity for " + where + " cannot be used: " + ec.message());
  }
  return context;
}

}  // namespace

Status HttpServer::Start() {
  Impl& impl = *impl_;
  if (impl.started) return FailedPrecondition("HTTP server already started");
  if (!impl.ioc) return FailedPrecondition("HTTP server was stopped; create a new one");
  if (!impl.route_errors.empty()) return InvalidArgument(impl.route_errors.front());
  const HttpServerOptions& o = impl.options;
  for (const RouteEntry& route : impl.routes) {
    if (!route.pool.empty() && !o.pools.count(route.pool)) {
      return InvalidArgument("route " + route.method + " " + route.pattern + " runs on pool '" +
                             route.pool + "', which the server does not have");
    }
  }
  if (Status opened = impl.OpenListeners(); !opened.ok()) {
    for (Impl::Listener& listener : impl.listeners) listener.acceptor.reset();
    return opened;
  }
  impl.started = true;

  impl.blocking.emplace(static_cast<std::size_t>(std::max(1, o.blocking_threads)));
  for (const auto& [name, threads] : o.pools) {
    impl.pools[name] =
        std::make_unique<asio::thread_pool>(static_cast<std::size_t>(std::max(1, threads)));
  }
  for (RouteEntry& route : impl.routes) {
    route.runs_on = route.pool.empty() ? &*impl.blocking : impl.pools.at(route.pool).get();
  }
  for (Impl::Listener& listener : impl.listeners) {
    asio::co_spawn(*impl.ioc, impl.AcceptLoop(listener), asio::detached);
  }
  const int n = std::max(1, o.threads);
  for (int i = 0; i < n; ++i) {
    impl.threads.emplace_back([&impl] { impl.ioc->run(); });
  }
  return Status::Ok();
}

Status HttpServer::Impl::OpenListeners() {
  for (Listener& listener : listeners) {
    const HttpListener& spec = listener.spec;
    const std::string where = spec.address + ":" + std::to_string(spec.port);
    if (spec.port < 0 || spec.port > 65535) return InvalidArgument("bad port in " + where);
    boost::system::error_code ec;
    const asio::ip::address address = asio::ip::make_address(spec.address, ec);
    if (ec) return InvalidArgument("bad listen address '" + spec.address + "': " + ec.message());
    if (spec.tls) {
      TY_ASSIGN_OR_RETURN(listener.tls, MakeTlsContext(*spec.tls, where));
    }
    const tcp::endpoint endpoint(address, static_cast<unsigned short>(spec.port));
    tcp::acceptor acceptor(*ioc);
    if (acceptor.open(endpoint.protocol(), ec); ec) {
      return Unavailable("cannot listen on " + where + ": " + ec.message());
    }
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (acceptor.bind(endpoint, ec); ec) {
      return Unavailable("cannot listen on " + where + ": " + ec.message());
    }
    if (acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) {
      return Unavailable("cannot listen on " + where + ": " + ec.message());
    }
    listener.port = acceptor.local_endpoint(ec).port();
    listener.acceptor.emplace(std::move(acceptor));
    if (spec.max_connections > 0) {
      listener.count = std::make_shared<std::atomic<int>>(0);
      listener.cap = spec.max_connections;
    } else {
      listener.count = connections;
      listener.cap = std::max(1, options.max_connections);
    }
  }
  return Status::Ok();
}

int HttpServer::port(std::size_t listener) const {
  if (!impl_->started || listener >= impl_->listeners.size()) return 0;
  return impl_->listeners[listener].port;
}

void HttpServer::ServeConnectionOnThisThread(int fd) {
  if (!impl_->blocking) {  // before Start or after Stop: no pool for the sync handlers
    ::close(fd);
    return;
  }
  asio::io_context here(1);
  tcp::socket socket(here);
  boost::system::error_code ec;
  socket.assign(tcp::v4(), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  asio::co_spawn(here,
                 impl_->Session(std::move(socket), nullptr, std::make_shared<std::atomic<int>>(1)),
                 asio::detached);
  here.run();
}

asio::any_io_executor HttpServer::executor() { return impl_->ioc->get_executor(); }

asio::awaitable<void> HttpServer::Offload(std::function<void()> work) {
  auto run = [&work]() -> asio::awaitable<void> {
    work();
    co_return;
  };
  co_await asio::co_spawn(impl_->blocking->get_executor(), run(), kAwaitable);
}

void HttpServer::Stop() {
  Impl& impl = *impl_;
  if (!impl.ioc) return;  // Already stopped.
  // Later Notify calls must not post into the loop torn down below.
  notifier_.Shutdown();
  impl.work.reset();
  impl.ioc->stop();
  for (std::thread& t : impl.threads) t.join();
  impl.threads.clear();
  // Running Finish calls end; their answers are queued to the stopped loop and dropped below.
  if (impl.blocking) impl.blocking->join();
  for (auto& [name, pool] : impl.pools) pool->join();
  for (Impl::Listener& listener : impl.listeners) {
    boost::system::error_code ec;
    if (listener.acceptor) listener.acceptor->close(ec);
    listener.acceptor.reset();
  }
  // Destroys the suspended connection coroutines, their sockets and pending handlers, while the
  // routes they may point into are still alive.
  impl.ioc.reset();
  impl.blocking.reset();
  impl.pools.clear();
}

}  // namespace trainyard

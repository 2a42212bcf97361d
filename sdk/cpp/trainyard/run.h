#pragma once

// trainyard run tracking for C++ training programs: a header-only client with the calls of the
// Python package (sdk/python), speaking the protocol of docs/tracking.md to the daemon.
//
//   #include <trainyard/run.h>
//   auto& run = trainyard::sdk::Run::GetContext();
//   for (int epoch = 0; epoch < n; ++epoch) run.Log("loss", loss, epoch);
//   run.Tag("model", "resnet");
//
// Log() only appends to an in-memory buffer; a background thread sends the buffer in batches
// (binary, one request per flush) every `flush_interval` or when `batch_points` are waiting,
// and Flush() / the destructor / Complete() send what is left. While the daemon cannot be
// reached the client retries with back-off and keeps at most `max_buffered_points`, warning
// once on stderr if it has to drop points. Every metric body carries an Idempotency-Key and a
// failed body is resent unchanged under its key, so a body whose answer was lost (the daemon
// restarted, say) is still stored once. Answers 4xx are the caller's mistakes: that batch is
// dropped with a warning naming the daemon's message.
//
// Outside a run (no TRAINYARD_RUN_ID) GetContext() returns an offline run that writes JSON
// lines under ./trainyard-offline/<id>/ and says so once on stderr.
//
// Needs C++17 (C++20 saves a string copy per Log call), POSIX sockets and threads; nothing
// else. Little-endian hosts only (x86-64, aarch64). Thread-safe.

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace trainyard::sdk {

// A call the daemon refused, or could not be asked.
class Error : public std::runtime_error {
 public:
  Error(int http_status, const std::string& message)
      : std::runtime_error(message), http_status_(http_status) {}
  // The HTTP status, or 0 when the daemon could not be reached.
  int http_status() const { return http_status_; }

 private:
  int http_status_;
};

struct Options {
  std::chrono::milliseconds flush_interval{1000};
  std::size_t batch_points = 500000;          // Send as soon as this many points wait.
  std::size_t max_buffered_points = 5000000;  // Beyond this, new points are dropped.
  std::chrono::seconds exit_flush_timeout{30};
};

namespace detail {

inline std::string EnvOr(const char* name, const char* fallback = "") {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string(fallback);
}

inline std::int64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline void CheckName(std::string_view name) {
  if (name.empty() || name.size() > 250) {
    throw std::invalid_argument("trainyard: a metric name must have 1 to 250 characters, got " +
                                std::to_string(name.size()));
  }
}

// JSON string escaping for the few JSON bodies this client writes.
inline std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

inline std::string Number(double v) {
  if (std::isnan(v)) return "\"NaN\"";
  if (std::isinf(v)) return v > 0 ? "\"Infinity\"" : "\"-Infinity\"";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// A JSON array of numbers.
inline std::string NumberArray(const std::vector<double>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? "," : "") + Number(values[i]);
  return out + "]";
}

// A JSON object with a member per (key, value) of `members`, each value written by
// `value_json`.
template <typename Members, typename ValueJson>
std::string JsonObject(const Members& members, ValueJson value_json) {
  std::string out = "{";
  bool first = true;
  for (const auto& [key, value] : members) {
    out += (first ? "" : ",") + Quote(key) + ":" + value_json(value);
    first = false;
  }
  return out + "}";
}

inline std::string UrlEncode(std::string_view s, bool keep_slash = false) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// Pulls one string value out of a flat JSON object ({"error": {"message": "..."}} and the like);
// enough for error messages and tag maps of strings.
inline std::string JsonStringField(const std::string& body, const std::string& key) {
  const std::string needle = "\"" + key + "\"";
  size_t at = body.find(needle);
  if (at == std::string::npos) return "";
  at = body.find(':', at + needle.size());
  if (at == std::string::npos) return "";
  at = body.find('"', at);
  if (at == std::string::npos) return "";
  std::string out;
  for (size_t i = at + 1; i < body.size(); ++i) {
    if (body[i] == '\\' && i + 1 < body.size()) {
      char e = body[++i];
      out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
    } else if (body[i] == '"') {
      return out;
    } else {
      out += body[i];
    }
  }
  return out;
}

struct Response {
  int status = 0;
  std::string body;
};

// One keep-alive HTTP/1.1 connection to the daemon, over a unix socket or TCP.
// 128 random bits in hex: the prefix of a client's Idempotency-Keys.
inline std::string RandomKeyPrefix() {
  std::random_device rd;
  std::string out;
  static const char* kHex = "0123456789abcdef";
  for (int i = 0; i < 8; ++i) {
    const unsigned v = rd();
    for (int j = 0; j < 4; ++j) out.push_back(kHex[(v >> (j * 4)) & 0xf]);
  }
  return out;
}

class Connection {
 public:
  explicit Connection(std::string url) : url_(std::move(url)) {}
  ~Connection() { Close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends one request; throws Error(0, ...) when the daemon cannot be reached.
  // A non-empty `idempotency_key` is sent as Idempotency-Key, so a resend is stored once.
  Response Send(const std::string& method, const std::string& path, const std::string& token,
                const std::string& content_type, std::string_view body,
                const std::string& idempotency_key = {}) {
    for (int attempt = 0;; ++attempt) {
      try {
        if (fd_ < 0) Open();
        std::string head = method + " " + path + " HTTP/1.1\r\nHost: trainyard\r\n";
        if (!token.empty()) head += "Authorization: Bearer " + token + "\r\n";
        if (!content_type.empty()) head += "Content-Type: " + content_type + "\r\n";
        if (!idempotency_key.empty()) head += "Idempotency-Key: " + idempotency_key + "\r\n";
        head += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
        WriteAll(head);
        WriteAll(body);
        return Read();
      } catch (const Error&) {
        Close();
        // A kept-alive connection the daemon closed meanwhile: one fresh try.
        if (attempt > 0 || !reused_) throw;
      }
    }
  }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    reused_ = false;
    buf_.clear();
  }

 private:
  void Open() {
    if (url_.rfind("unix://", 0) == 0) {
      const std::string path = url_.substr(7);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      if (path.size() >= sizeof addr.sun_path) throw Error(0, "socket path too long: " + path);
      std::memcpy(addr.sun_path, path.data(), path.size());
      fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        const int e = errno;
        Close();
        throw Error(0, "cannot connect to " + url_ + ": " + std::strerror(e));
      }
    } else if (url_.rfind("http://", 0) == 0) {
      std::string hostport = url_.substr(7);
      if (size_t slash = hostport.find('/'); slash != std::string::npos) hostport.resize(slash);
      const size_t colon = hostport.rfind(':');
      const std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
      const std::string port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
      addrinfo hints{};
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* res = nullptr;
      if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) {
        throw Error(0, "cannot resolve " + host);
      }
      fd_ = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const bool ok = fd_ >= 0 && ::connect(fd_, res->ai_addr, res->ai_addrlen) == 0;
      const int e = errno;
      ::freeaddrinfo(res);
      if (!ok) {
        Close();
        throw Error(0, "cannot connect to " + url_ + ": " + std::strerror(e));
      }
      int one = 1;
      ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    } else {
      throw Error(0,
                  "TRAINYARD_TRACKING_URL must start with unix:// or http://, got '" + url_ + "'");
    }
    timeval tv{60, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    reused_ = false;
  }

  void WriteAll(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(0, "lost the connection to " + url_ + ": " + std::strerror(errno));
      data.remove_prefix(static_cast<size_t>(n));
    }
  }

  // Reads until `buf_` holds at least `n` bytes.
  void Fill(size_t n) {
    char chunk[65536];
    while (buf_.size() < n) {
      const ssize_t got = ::recv(fd_, chunk, sizeof chunk, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) throw Error(0, "the daemon at " + url_ + " closed the connection");
      buf_.append(chunk, static_cast<size_t>(got));
    }
  }

  std::string ReadLine() {
    for (;;) {
      if (size_t eol = buf_.find("\r\n"); eol != std::string::npos) {
        std::string line = buf_.substr(0, eol);
        buf_.erase(0, eol + 2);
        return line;
      }
      Fill(buf_.size() + 1);
    }
  }

  Response Read() {
    Response r;
    const std::string status = ReadLine();
    if (status.size() < 12 || status.compare(0, 5, "HTTP/") != 0) {
      throw Error(0, "malformed answer from " + url_);
    }
    r.status = std::atoi(status.c_str() + 9);
    size_t length = 0;
    bool chunked = false, close = false;
    for (std::string line = ReadLine(); !line.empty(); line = ReadLine()) {
      std::string lower = line;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (lower.rfind("content-length:", 0) == 0)
        length = std::strtoull(line.c_str() + 15, nullptr, 10);
      if (lower.rfind("transfer-encoding:", 0) == 0 && lower.find("chunked") != std::string::npos)
        chunked = true;
      if (lower.rfind("connection:", 0) == 0 && lower.find("close") != std::string::npos)
        close = true;
    }
    if (chunked) {
      for (;;) {
        const size_t size = std::strtoull(ReadLine().c_str(), nullptr, 16);
        if (size == 0) {
          ReadLine();
          break;
        }
        Fill(size + 2);
        r.body.append(buf_, 0, size);
        buf_.erase(0, size + 2);
      }
    } else {
      Fill(length);
      r.body = buf_.substr(0, length);
      buf_.erase(0, length);
    }
    if (close) {
      Close();
    } else {
      reused_ = true;
    }
    return r;
  }

  std::string url_;
  int fd_ = -1;
  bool reused_ = false;
  std::string buf_;
};

// Points of one series waiting to be sent.
struct Pending {
  std::vector<double> values;
  std::vector<std::int64_t> steps;  // Empty, or one per value.
  std::vector<std::int64_t> timestamps;
};

template <typename T>
void PutLE(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // Little-endian hosts only (x86-64, aarch64).
  out.append(bytes, sizeof(T));
}

// Encodes series in the binary format of docs/tracking.md ("TYM1").
inline std::string EncodeMetrics(const std::vector<std::pair<std::string, Pending>>& series) {
  size_t size = 8;
  for (const auto& [name, p] : series) {
    size +=
        2 + name.size() + 5 + p.values.size() * 8 + p.steps.size() * 8 + p.timestamps.size() * 8;
  }
  std::string out;
  out.reserve(size);
  out += "TYM1";
  PutLE<std::uint32_t>(out, static_cast<std::uint32_t>(series.size()));
  for (const auto& [name, p] : series) {
    PutLE<std::uint16_t>(out, static_cast<std::uint16_t>(name.size()));
    out += name;
    PutLE<std::uint32_t>(out, static_cast<std::uint32_t>(p.values.size()));
    const std::uint8_t flags = (p.steps.empty() ? 0 : 1) | (p.timestamps.empty() ? 0 : 2);
    out += static_cast<char>(flags);
    out.append(reinterpret_cast<const char*>(p.values.data()), p.values.size() * 8);
    out.append(reinterpret_cast<const char*>(p.steps.data()), p.steps.size() * 8);
    out.append(reinterpret_cast<const char*>(p.timestamps.data()), p.timestamps.size() * 8);
  }
  return out;
}

}  // namespace detail

class Run {
 public:
  // The run this process belongs to, from TRAINYARD_RUN_ID, TRAINYARD_TRACKING_URL and
  // TRAINYARD_RUN_TOKEN; an offline run when TRAINYARD_RUN_ID is not set.
  static Run& GetContext() {
    static Run run(detail::EnvOr("TRAINYARD_RUN_ID"), detail::EnvOr("TRAINYARD_TRACKING_URL"),
                   detail::EnvOr("TRAINYARD_RUN_TOKEN"), detail::EnvOr("TRAINYARD_EXPERIMENT"));
    return run;
  }

  // A run reached explicitly (tests, tools). An empty `run_id` makes an offline run.
  Run(std::string run_id, std::string url, std::string token, std::string experiment = "",
      Options options = {})
      : id_(std::move(run_id)),
        experiment_(std::move(experiment)),
        token_(std::move(token)),
        options_(options),
        conn_(std::move(url)) {
    if (id_.empty()) {
      offline_dir_ = "trainyard-offline/offline_" + std::to_string(detail::NowMillis()) + "_" +
                     std::to_string(::getpid());
      std::fprintf(stderr,
                   "trainyard: not inside a run; logging offline to %s/ (submit the script as "
                   "a job to track it)\n",
                   offline_dir_.c_str());
      MakeDirs(offline_dir_);
    }
    sender_ = std::thread([this] { SenderLoop(); });
  }

  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  // Sends what is buffered (waiting up to options.exit_flush_timeout) and stops the sender.
  ~Run() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (sender_.joinable()) sender_.join();
    const auto deadline = std::chrono::steady_clock::now() + options_.exit_flush_timeout;
    while (!SendPending() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (buffered_ > 0) {
      std::fprintf(stderr, "trainyard: %zu metric points could not be sent to the daemon\n",
                   buffered_);
    }
  }

  const std::string& id() const { return id_; }
  const std::string& experiment() const { return experiment_; }
  bool offline() const { return id_.empty(); }

  // A scalar point. Without a step, the daemon numbers the series' points 0, 1, 2, ...
  void Log(std::string_view name, double value) { Append(name, value, nullptr); }
  void Log(std::string_view name, double value, std::int64_t step) { Append(name, value, &step); }

  void LogList(std::string_view name, const std::vector<double>& values,
               std::string_view description = "") {
    PostEntry(name, "list", detail::NumberArray(values), description);
  }
  void LogRow(std::string_view name, const std::vector<std::pair<std::string, double>>& columns,
              std::string_view description = "") {
    PostEntry(name, "row", detail::JsonObject(columns, detail::Number), description);
  }
  void LogTable(std::string_view name, const std::map<std::string, std::vector<double>>& columns,
                std::string_view description = "") {
    PostEntry(name, "table", detail::JsonObject(columns, detail::NumberArray), description);
  }
  // A PNG file, stored as the run file images/NAME/N.png.
  void LogImage(std::string_view name, const std::string& png_path,
                std::string_view description = "") {
    detail::CheckName(name);
    const std::string file =
        "images/" + std::string(name) + "/" + std::to_string(image_count_++) + ".png";
    UploadFile(file, png_path);
    PostEntry(name, "image", "{\"path\":" + detail::Quote(file) + "}", description);
  }

  void Tag(const std::string& key, const std::string& value = "") { SetTags({{key, value}}); }
  void SetTags(const std::map<std::string, std::string>& tags) {
    Call("PATCH", "/tags", "{\"set\":" + detail::JsonObject(tags, detail::Quote) + "}",
         "tags.json");
  }
  // Immutable: a key that exists with another value throws Error (409).
  void AddProperties(const std::map<std::string, std::string>& props) {
    Call("POST", "/properties", detail::JsonObject(props, detail::Quote), "properties.json");
  }
  // Stores the file at `path` as the run file `name` (e.g. "outputs/model.bin").
  void UploadFile(const std::string& name, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::invalid_argument("trainyard: cannot read " + path);
    std::stringstream ss;
    ss << in.rdbuf();
    if (offline()) {
      const std::string dest = offline_dir_ + "/files/" + name;
      MakeDirs(dest.substr(0, dest.rfind('/')));
      std::ofstream(dest, std::ios::binary) << ss.str();
      return;
    }
    Request("PUT", "/files/" + detail::UrlEncode(name, true), "application/octet-stream", ss.str());
  }

  // Sends everything logged so far; returns when it is stored. Throws Error when the daemon
  // cannot be reached.
  void Flush() {
    if (!SendPending()) throw Error(0, "trainyard: could not reach the daemon to flush metrics");
  }
  // Flushes and records the script's own verdict (the run still ends when the process exits).
  void Complete() {
    Flush();
    Call("POST", "/status", "{\"status\":\"Completed\"}", "status.json");
  }
  void Fail(const std::string& message) {
    Flush();
    Call("POST", "/status", "{\"status\":\"Failed\",\"message\":" + detail::Quote(message) + "}",
         "status.json");
  }

  // GET on the run's API (e.g. "/metrics"); returns the JSON body. Throws Error on failure.
  std::string Get(const std::string& path) { return Request("GET", path, "", ""); }

 private:
  void Append(std::string_view name, double value, const std::int64_t* step) {
    detail::CheckName(name);
    const std::int64_t now = detail::NowMillis();
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (buffered_ >= options_.max_buffered_points) {
        if (!warned_drop_) {
          warned_drop_ = true;
          std::fprintf(stderr,
                       "trainyard: %zu metric points are waiting for the daemon; dropping new "
                       "points until it answers\n",
                       buffered_);
        }
        return;
      }
#if __cplusplus >= 202002L
      auto it = pending_.find(name);
#else
      auto it = pending_.find(std::string(name));
#endif
      if (it == pending_.end()) it = pending_.emplace(std::string(name), Series{}).first;
      Series& s = it->second;
      detail::Pending& p = step != nullptr ? s.stepped : s.unstepped;
      p.values.push_back(value);
      if (step != nullptr) p.steps.push_back(*step);
      p.timestamps.push_back(now);
      wake = ++buffered_ >= options_.batch_points;
    }
    if (wake) cv_.notify_one();
  }

  struct Series {
    detail::Pending stepped;
    detail::Pending unstepped;
  };

  // One encoded request body with its Idempotency-Key: a body that failed is resent as it was,
  // under its key, so the daemon stores it once even when only its answer was lost.
  struct Body {
    std::string key;
    std::string bytes;
    size_t points = 0;
  };

  // Sends the buffer; true when nothing is left to send. Only one sender at a time.
  bool SendPending() {
    std::lock_guard<std::mutex> send_lock(send_mu_);
    std::vector<std::pair<std::string, detail::Pending>> batch;
    size_t points = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (unsent_.empty() && buffered_ == unsent_points_) return true;
      for (auto& [name, s] : pending_) {
        if (!s.unstepped.values.empty()) batch.emplace_back(name, std::move(s.unstepped));
        if (!s.stepped.values.empty()) batch.emplace_back(name, std::move(s.stepped));
        s = Series{};
      }
      for (const auto& [name, p] : batch) points += p.values.size();
    }
    if (offline()) {
      std::ofstream out(offline_dir_ + "/metrics.jsonl", std::ios::app);
      for (const auto& [name, p] : batch) {
        for (size_t i = 0; i < p.values.size(); ++i) {
          out << "{\"name\":" << detail::Quote(name) << ",\"value\":" << detail::Number(p.values[i])
              << ",\"step\":"
              << (p.steps.empty() ? std::string("null") : std::to_string(p.steps[i]))
              << ",\"timestamp\":" << p.timestamps[i] << "}\n";
        }
      }
      std::lock_guard<std::mutex> lock(mu_);
      buffered_ -= points;
      return true;
    }
    // Encoded in bodies of at most kBodyPoints points (~24 MB), well under the daemon's body
    // limit however much piled up while it was away; a series is sliced when it is longer.
    // Queued behind the bodies of earlier failed attempts, so points go out oldest first.
    std::reverse(batch.begin(), batch.end());
    while (!batch.empty()) {
      std::vector<std::pair<std::string, detail::Pending>> body;
      size_t body_points = 0;
      while (!batch.empty() && body_points < kBodyPoints) {
        auto& [name, p] = batch.back();
        const size_t take = std::min(p.values.size(), kBodyPoints - body_points);
        if (take == p.values.size()) {
          body.push_back(std::move(batch.back()));
          batch.pop_back();
        } else {
          body.emplace_back(name, Slice(p, take));
        }
        body_points += take;
      }
      Body b{NextKey(), detail::EncodeMetrics(body), body_points};
      std::lock_guard<std::mutex> lock(mu_);
      unsent_points_ += body_points;
      unsent_.push_back(std::move(b));
    }
    while (true) {
      const Body* next = nullptr;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (unsent_.empty()) break;
        next = &unsent_.front();  // only this thread (send_mu_) removes bodies
      }
      try {
        detail::Response r =
            Send("POST", "/metrics", "application/x-trainyard-metrics", next->bytes, next->key);
        if (r.status >= 500) throw Error(r.status, "daemon error");
        std::lock_guard<std::mutex> lock(mu_);
        buffered_ -= next->points;
        unsent_points_ -= next->points;
        warned_drop_ = false;
        if (r.status >= 400) {
          std::fprintf(stderr, "trainyard: the daemon refused %zu metric points: %s\n",
                       next->points, detail::JsonStringField(r.body, "message").c_str());
        }
        unsent_.pop_front();
      } catch (const Error&) {
        return false;  // kept, with its key, for the next attempt
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    return unsent_.empty() && buffered_ == 0;
  }

  // A key no other body of any client shares: this client's random prefix and a counter.
  std::string NextKey() { return key_prefix_ + "-" + std::to_string(++key_counter_); }

  static constexpr size_t kBodyPoints = 1'000'000;

  // Removes the first `n` points of `p` and returns them.
  static detail::Pending Slice(detail::Pending& p, size_t n) {
    detail::Pending head;
    auto cut = [n](auto& from, auto& to) {
      if (from.empty()) return;
      to.assign(from.begin(), from.begin() + static_cast<std::ptrdiff_t>(n));
      from.erase(from.begin(), from.begin() + static_cast<std::ptrdiff_t>(n));
    };
    cut(p.values, head.values);
    cut(p.steps, head.steps);
    cut(p.timestamps, head.timestamps);
    return head;
  }

  void SenderLoop() {
    std::chrono::milliseconds backoff{100};
    std::mt19937 rng(std::random_device{}());
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, options_.flush_interval,
                   [this] { return stopping_ || buffered_ >= options_.batch_points; });
      if (stopping_) break;
      lock.unlock();
      const bool sent = SendPending();
      if (!sent) {
        // Back off (capped, jittered) while the daemon is away.
        std::this_thread::sleep_for(backoff + std::chrono::milliseconds(rng() % 100));
        backoff = std::min(backoff * 2, std::chrono::milliseconds(10000));
      } else {
        backoff = std::chrono::milliseconds(100);
      }
      lock.lock();
    }
  }

  detail::Response Send(const std::string& method, const std::string& path,
                        const std::string& content_type, std::string_view body,
                        const std::string& idempotency_key = {}) {
    std::lock_guard<std::mutex> lock(conn_mu_);
    return conn_.Send(method, "/api/v1/jobs/" + detail::UrlEncode(id_) + path, token_, content_type,
                      body, idempotency_key);
  }

  std::string Request(const std::string& method, const std::string& path,
                      const std::string& content_type, std::string_view body) {
    detail::Response r = Send(method, path, content_type, body);
    if (r.status >= 300) {
      std::string msg = detail::JsonStringField(r.body, "message");
      throw Error(r.status, "trainyard: " + method + " " + path + ": " +
                                (msg.empty() ? "HTTP " + std::to_string(r.status) : msg));
    }
    return r.body;
  }

  // A JSON call, or (offline) a line appended to `offline_file`.
  void Call(const std::string& method, const std::string& path, const std::string& body,
            const std::string& offline_file) {
    if (offline()) {
      std::ofstream(offline_dir_ + "/" + offline_file, std::ios::app) << body << "\n";
      return;
    }
    Request(method, path, "application/json", body);
  }

  void PostEntry(std::string_view name, const char* kind, const std::string& value_json,
                 std::string_view description) {
    detail::CheckName(name);
    const std::string entry = "{\"name\":" + detail::Quote(name) + ",\"kind\":\"" + kind +
                              "\",\"value\":" + value_json +
                              ",\"description\":" + detail::Quote(description) +
                              ",\"timestamp\":" + std::to_string(detail::NowMillis()) + "}";
    if (offline()) {
      std::ofstream(offline_dir_ + "/entries.jsonl", std::ios::app) << entry << "\n";
      return;
    }
    Request("POST", "/entries", "application/json", "{\"entries\":[" + entry + "]}");
  }

  static void MakeDirs(const std::string& path) {
    for (size_t slash = path.find('/');; slash = path.find('/', slash + 1)) {
      ::mkdir(path.substr(0, slash).c_str(), 0755);
      if (slash == std::string::npos) break;
    }
  }

  const std::string id_;
  const std::string experiment_;
  const std::string token_;
  const Options options_;
  std::string offline_dir_;
  std::atomic<int> image_count_{0};

  std::mutex mu_;  // Guards the buffer and the flags below.
  std::condition_variable cv_;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    size_t operator()(const std::string& s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Series, Hash, std::equal_to<>> pending_;
  // Encoded bodies not yet acknowledged, oldest first, and their points. Guarded by mu_; only
  // the sender (send_mu_) removes from the front.
  std::deque<Body> unsent_;
  size_t unsent_points_ = 0;
  std::string key_prefix_ = detail::RandomKeyPrefix();
  std::uint64_t key_counter_ = 0;  // Guarded by send_mu_.
  size_t buffered_ = 0;
  bool warned_drop_ = false;
  bool stopping_ = false;

  std::mutex send_mu_;  // One SendPending at a time.
  std::mutex conn_mu_;  // Guards conn_.
  detail::Connection conn_;
  std::thread sender_;  // Last: started after everything it uses exists.
};

}  // namespace trainyard::sdk

#include "trainyard/docker/http_engine.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string_view>
#include <utility>

#include "trainyard/common/mutex.h"
#include "trainyard/common/util.h"
#include "trainyard/docker/json_messages.h"
#include "trainyard/docker/log_demux.h"

namespace trainyard::docker {

struct HttpEngine::Request {
  const char* method = "GET";
  std::string path;       // after the version prefix: "/containers/json?all=1"
  std::string_view body;  // not owned: the caller keeps it alive during Send (contexts are big)
  std::string content_type;
  std::vector<std::string> headers;  // "Name: value"
  // When set, the body of a 2xx response is handed here as it arrives instead of being kept in
  // Response::body. A non-OK status aborts the transfer and becomes the result of Send.
  std::function<Status(std::string_view)> on_data;
  long timeout_seconds = 0;  // 0: none (waits, log streams, builds, pulls)
};

struct HttpEngine::Response {
  long status = 0;
  std::string body;
};

namespace {

using nlohmann::json;

constexpr size_t kMaxIdleHandles = 8;
constexpr long kConnectTimeoutSeconds = 10;
constexpr long kShortCallTimeoutSeconds = 120;

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool ContainsAny(std::string_view text, std::initializer_list<std::string_view> needles) {
  std::string lower = ToLower(text);
  return std::any_of(needles.begin(), needles.end(),
                     [&](std::string_view n) { return lower.find(n) != std::string::npos; });
}

// Percent-encodes everything but RFC 3986 unreserved characters and those in `keep`.
std::string Escape(std::string_view s, std::string_view keep = "") {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~' ||
        keep.find(c) != std::string_view::npos) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

// An image name or container id as a path segment; image names keep their '/', ':' and '@'.
std::string PathPart(std::string_view s) { return Escape(s, "/:@"); }

// Builds "?a=1&b=2".
class Query {
 public:
  Query& Add(std::string_view key, std::string_view value) {
    out_ += out_.empty() ? "?" : "&";
    out_ += Escape(key);
    out_ += "=";
    out_ += Escape(value);
    return *this;
  }
  const std::string& str() const { return out_; }

 private:
  std::string out_;
};

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Runs `fn`, turning a JSON exception (an engine answer of an unexpected shape) into Internal.
template <typename Fn>
auto ParseResponse(std::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const json::exception& e) {
    return Internal("unexpected answer from the Docker engine to " + std::string(what) + ": " +
                    e.what());
  }
}

std::map<std::string, std::string> StringMap(const json& j, const char* key) {
  std::map<std::string, std::string> out;
  if (!j.is_object()) return out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return out;
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    if (kv->is_string()) out[kv.key()] = kv->get<std::string>();
  }
  return out;
}

// The "message" of an engine error body, or the body itself.
std::string EngineMessage(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::string message = JsonString(j, "message");
  if (message.empty()) message = std::string(Trim(body));
  return message.empty() ? "(no message)" : message;
}

Status StatusFromHttp(long status, const std::string& body, std::string_view what) {
  std::string message = std::string(what) + ": " + EngineMessage(body);
  switch (status) {
    case 400:
      return InvalidArgument(std::move(message));
    case 401:
      return Unauthenticated(std::move(message));
    case 403:
      return PermissionDenied(std::move(message));
    case 404:
      return NotFound(std::move(message));
    case 409:
      return FailedPrecondition(std::move(message));
    case 503:
      return Unavailable(std::move(message));
    default:
      return Internal(message + " (HTTP " + std::to_string(status) + ")");
  }
}

bool IsSuccess(long status) { return status >= 200 && status < 300; }

bool LooksUnauthorized(std::string_view text) {
  return ContainsAny(
      text, {"unauthorized", "authentication required", "no basic auth credentials", "denied"});
}

// Classifies a pull or push failure by the engine's text. `action` names the call and the
// registry: "pulling REF from REGISTRY", "pushing REF to REGISTRY".
Status RegistryError(const std::string& action, long http_status, const std::string& text) {
  std::string message = action + ": " + text;
  if (LooksUnauthorized(text)) return Unauthenticated("unauthorized: " + message);
  // Before the NotFound patterns: "no such host" is an unreachable registry, not a missing image.
  if (ContainsAny(text, {"connection refused", "no such host", "i/o timeout", "dial tcp",
                         "server gave http response to https client"})) {
    return Unavailable(std::move(message));
  }
  if (http_status == 404 ||
      ContainsAny(text, {"not found", "manifest unknown", "no such", "does not exist locally"})) {
    return NotFound(std::move(message));
  }
  if (http_status == 400) return InvalidArgument(std::move(message));
  return Internal(std::move(message));
}

json AuthJson(const RegistryAuth& auth) {
  return json{{"username", auth.username},
              {"password", auth.password},
              {"serveraddress", auth.server_address}};
}

json StringArray(const std::vector<std::string>& v) {
  json out = json::array();
  for (const std::string& s : v) out.push_back(s);
  return out;
}

json ContainerBody(const ContainerConfig& c) {
  json body = {{"Image", c.image},          {"Tty", false},
               {"OpenStdin", false},        {"AttachStdin", false},
               {"AttachStdout", false},     {"AttachStderr", false},
               {"Env", StringArray(c.env)}, {"Labels", json::object()}};
  if (!c.cmd.empty()) body["Cmd"] = StringArray(c.cmd);
  if (c.entrypoint) body["Entrypoint"] = StringArray(*c.entrypoint);
  if (!c.working_dir.empty()) body["WorkingDir"] = c.working_dir;
  if (!c.user.empty()) body["User"] = c.user;
  if (!c.hostname.empty()) body["Hostname"] = c.hostname;
  for (const auto& [k, v] : c.labels) body["Labels"][k] = v;

  json host = json::object();
  if (!c.mounts.empty()) {
    json mounts = json::array();
    for (const Mount& m : c.mounts) {
      mounts.push_back({{"Type", "bind"},
                        {"Source", m.source},
                        {"Target", m.target},
                        {"ReadOnly", m.read_only}});
    }
    host["Mounts"] = std::move(mounts);
  }
  if (c.shm_size_bytes > 0) host["ShmSize"] = c.shm_size_bytes;
  if (c.init) host["Init"] = true;
  if (c.memory_bytes > 0) host["Memory"] = c.memory_bytes;
  if (c.nano_cpus > 0) host["NanoCpus"] = c.nano_cpus;
  if (c.pids_limit > 0) host["PidsLimit"] = c.pids_limit;
  if (c.log_max_bytes > 0) {
    host["LogConfig"] = {{"Type", "json-file"},
                         {"Config",
                          {{"max-size", std::to_string(c.log_max_bytes)},
                           {"max-file", std::to_string(std::max(1, c.log_max_files))}}}};
  }
  if (!c.network_mode.empty()) host["NetworkMode"] = c.network_mode;
  if (c.gpus) {
    json request = {{"Driver", ""}, {"Capabilities", json::array({json::array({"gpu"})})}};
    if (!c.gpus->device_ids.empty()) {
      request["DeviceIDs"] = StringArray(c.gpus->device_ids);
    } else {
      request["Count"] = c.gpus->count;
    }
    host["DeviceRequests"] = json::array({std::move(request)});
  }
  body["HostConfig"] = std::move(host);

  if (!c.network_mode.empty() && !c.network_aliases.empty()) {
    body["NetworkingConfig"] = {
        {"EndpointsConfig", {{c.network_mode, {{"Aliases", StringArray(c.network_aliases)}}}}}};
  }
  return body;
}

size_t WriteCallback(char* data, size_t size, size_t nmemb, void* userp);

// Per-transfer state seen by the write callback.
struct Transfer {
  CURL* curl = nullptr;
  const std::function<Status(std::string_view)>* on_data = nullptr;
  std::string* body = nullptr;
  Status abort_status;
};

size_t WriteCallback(char* data, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  size_t n = size * nmemb;
  long status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  if (*t->on_data && IsSuccess(status)) {
    Status s = (*t->on_data)(std::string_view(data, n));
    if (!s.ok()) {
      t->abort_status = std::move(s);
      return 0;  // makes curl stop with CURLE_WRITE_ERROR
    }
    return n;
  }
  t->body->append(data, n);
  return n;
}

}  // namespace

std::string DefaultDockerSocketPath() {
  const char* host = std::getenv("DOCKER_HOST");
  constexpr std::string_view kUnix = "unix://";
  if (host != nullptr && StartsWith(host, kUnix) && std::string_view(host).size() > kUnix.size()) {
    return std::string(host + kUnix.size());
  }
  return "/var/run/docker.sock";
}

HttpEngine::HttpEngine(std::string socket_path, std::string api_version)
    : socket_path_(std::move(socket_path)), api_version_(std::move(api_version)) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

HttpEngine::~HttpEngine() {
  for (void* h : idle_handles_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* HttpEngine::AcquireHandle() {
  {
    MutexLock lock(pool_mutex_);
    if (!idle_handles_.empty()) {
      void* h = idle_handles_.back();
      idle_handles_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void HttpEngine::ReleaseHandle(void* handle) {
  auto* curl = static_cast<CURL*>(handle);
  curl_easy_reset(curl);  // keeps the connection cache
  {
    MutexLock lock(pool_mutex_);
    if (idle_handles_.size() < kMaxIdleHandles) {
      idle_handles_.push_back(curl);
      return;
    }
  }
  curl_easy_cleanup(curl);
}

StatusOr<HttpEngine::Response> HttpEngine::Send(const Request& request) {
  auto* curl = static_cast<CURL*>(AcquireHandle());
  if (curl == nullptr) return Internal("libcurl: cannot create a handle");

  std::string url = "http://localhost";
  if (!api_version_.empty()) url += "/" + api_version_;
  url += request.path;

  Response response;
  Transfer transfer;
  transfer.curl = curl;
  transfer.on_data = &request.on_data;
  transfer.body = &response.body;

  curl_slist* headers = nullptr;
  // No "Expect: 100-continue" round trip for large bodies (build contexts).
  headers = curl_slist_append(headers, "Expect:");
  if (!request.content_type.empty()) {
    headers = curl_slist_append(headers, ("Content-Type: " + request.content_type).c_str());
  }
  for (const std::string& h : request.headers) headers = curl_slist_append(headers, h.c_str());

  char error_buffer[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket_path_.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, request.timeout_seconds);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &WriteCallback);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  std::string_view method = request.method;
  if (method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    // Never NULL: with NULL, libcurl would read the body from stdin.
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.empty() ? "" : request.body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
  } else if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method);
  }

  CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  long os_errno = 0;
  curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
  curl_slist_free_all(headers);
  ReleaseHandle(curl);

  if (!transfer.abort_status.ok()) return transfer.abort_status;
  if (rc != CURLE_OK) {
    // libcurl's own text names "localhost port 80", which means nothing for a unix socket.
    std::string detail = curl_easy_strerror(rc);
    if (os_errno != 0) {
      detail += std::string(" (") + std::strerror(static_cast<int>(os_errno)) + ")";
    } else if (error_buffer[0] != '\0' && rc != CURLE_COULDNT_CONNECT) {
      detail += std::string(": ") + error_buffer;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return DeadlineExceeded("the Docker engine at " + socket_path_ + " did not answer " +
                              request.method + " " + request.path + " in time: " + detail);
    }
    return Unavailable("cannot reach the Docker engine at " + socket_path_ + ": " + detail);
  }
  return response;
}

Status HttpEngine::Ping() {
  Request req;
  req.path = "/_ping";
  req.timeout_seconds = 10;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (!IsSuccess(resp.status)) {
    return Unavailable("the Docker engine at " + socket_path_ +
                       " is not healthy: " + EngineMessage(resp.body));
  }
  return Status::Ok();
}

StatusOr<std::optional<ImageInfo>> HttpEngine::InspectImage(const std::string& ref) {
  Request req;
  req.path = "/images/" + PathPart(ref) + "/json";
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (resp.status == 404) return std::optional<ImageInfo>();
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "inspect image " + ref);
  }
  return ParseResponse("inspect image", [&]() -> StatusOr<std::optional<ImageInfo>> {
    json j = json::parse(resp.body);
    ImageInfo info;
    info.id = JsonString(j, "Id");
    if (auto tags = j.find("RepoTags"); tags != j.end() && tags->is_array()) {
      for (const json& t : *tags) {
        if (t.is_string()) info.repo_tags.push_back(t.get<std::string>());
      }
    }
    if (auto config = j.find("Config"); config != j.end()) {
      info.labels = StringMap(*config, "Labels");
      if (auto env = config->find("Env"); env != config->end() && env->is_array()) {
        for (const json& e : *env) {
          if (e.is_string()) info.env.push_back(e.get<std::string>());
        }
      }
    }
    return std::optional<ImageInfo>(std::move(info));
  });
}

Status HttpEngine::SendRegistryStream(Request request, const std::optional<RegistryAuth>& auth,
                                      const TextSink& progress, const std::string& action) {
  std::vector<std::string> secrets;
  if (auth) {
    request.headers.push_back("X-Registry-Auth: " + Base64UrlEncode(Dump(AuthJson(*auth))));
    secrets.push_back(auth->password);
  }
  JsonMessageStream stream(progress, secrets);
  request.on_data = [&](std::string_view data) {
    stream.Feed(data);
    return Status::Ok();
  };
  TY_ASSIGN_OR_RETURN(Response resp, Send(request));
  if (!IsSuccess(resp.status)) {
    std::string text = EngineMessage(resp.body);
    for (const std::string& s : secrets) text = Redact(std::move(text), s);
    return RegistryError(action, resp.status, text);
  }
  stream.Finish();
  if (stream.failed()) return RegistryError(action, resp.status, stream.error());
  return Status::Ok();
}

Status HttpEngine::PullImage(const std::string& ref, const std::optional<RegistryAuth>& auth,
                             const TextSink& progress) {
  TY_ASSIGN_OR_RETURN(ImageRef parsed, ParseImageRef(ref));
  Request req;
  req.method = "POST";
  req.path = "/images/create" + Query()
                                    .Add("fromImage", parsed.repository)
                                    .Add("tag", parsed.digest.empty() ? parsed.tag : parsed.digest)
                                    .str();
  return SendRegistryStream(std::move(req), auth, progress,
                            "pulling " + parsed.ToString() + " from " + parsed.registry);
}

Status HttpEngine::PushImage(const std::string& ref, const std::optional<RegistryAuth>& auth,
                             const TextSink& progress) {
  TY_ASSIGN_OR_RETURN(ImageRef parsed, ParseImageRef(ref));
  const std::string action = "pushing " + parsed.ToString() + " to " + parsed.registry;
  if (!parsed.digest.empty()) {
    return InvalidArgument(action + ": a digest cannot be pushed, only a tag");
  }
  Request req;
  req.method = "POST";
  req.path =
      "/images/" + PathPart(parsed.repository) + "/push" + Query().Add("tag", parsed.tag).str();
  // The engine refuses a push without the header ("missing X-Registry-Auth"): send empty
  // credentials instead.
  if (!auth) req.headers.push_back("X-Registry-Auth: " + Base64UrlEncode("{}"));
  return SendRegistryStream(std::move(req), auth, progress, action);
}

Status HttpEngine::BuildImage(const BuildRequest& request, const TextSink& output) {
  json labels = json::object();
  for (const auto& [k, v] : request.labels) labels[k] = v;
  json build_args = json::object();
  for (const auto& [k, v] : request.build_args) build_args[k] = v;
  Query query;
  if (!request.tag.empty()) query.Add("t", request.tag);
  query.Add("dockerfile", request.dockerfile.empty() ? "Dockerfile" : request.dockerfile)
      .Add("labels", Dump(labels))
      .Add("buildargs", Dump(build_args))
      .Add("pull", request.pull ? "1" : "0")
      .Add("rm", "1")
      .Add("forcerm", "1");

  Request req;
  req.method = "POST";
  req.path = "/build" + query.str();
  req.content_type = "application/x-tar";
  req.body = request.context_tar;
  std::vector<std::string> secrets;
  if (!request.registry_auth.empty()) {
    json config = json::object();
    for (const RegistryAuth& a : request.registry_auth) {
      config[a.server_address] = AuthJson(a);
      secrets.push_back(a.password);
    }
    req.headers.push_back("X-Registry-Config: " + Base64UrlEncode(Dump(config)));
  }
  JsonMessageStream stream(output, secrets);
  req.on_data = [&](std::string_view data) {
    stream.Feed(data);
    return Status::Ok();
  };
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  std::string what = "building " + (request.tag.empty() ? std::string("image") : request.tag);
  std::string error;
  if (!IsSuccess(resp.status)) {
    error = EngineMessage(resp.body);
    for (const std::string& s : secrets) error = Redact(std::move(error), s);
    if (resp.status != 400 && resp.status != 404 && resp.status != 500) {
      return StatusFromHttp(resp.status, error, what);
    }
  } else {
    stream.Finish();
    if (!stream.failed()) return Status::Ok();
    error = stream.error();
  }
  if (LooksUnauthorized(error)) return Unauthenticated("unauthorized: " + what + ": " + error);
  return InvalidArgument(what + " failed: " + error);
}

Status HttpEngine::RemoveImage(const std::string& ref, bool force) {
  Request req;
  req.method = "DELETE";
  req.path = "/images/" + PathPart(ref) + Query().Add("force", force ? "1" : "0").str();
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (!IsSuccess(resp.status)) return StatusFromHttp(resp.status, resp.body, "remove image " + ref);
  return Status::Ok();
}

Status HttpEngine::TagImage(const std::string& source, const std::string& target) {
  TY_ASSIGN_OR_RETURN(ImageRef parsed, ParseImageRef(target));
  const std::string what = "tag image " + source + " as " + target;
  if (!parsed.digest.empty()) return InvalidArgument(what + ": a tag cannot be a digest");
  Request req;
  req.method = "POST";
  req.path = "/images/" + PathPart(source) + "/tag" +
             Query().Add("repo", parsed.repository).Add("tag", parsed.tag).str();
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (!IsSuccess(resp.status)) return StatusFromHttp(resp.status, resp.body, what);
  return Status::Ok();
}

StatusOr<std::string> HttpEngine::CreateContainer(const ContainerConfig& config) {
  Request req;
  req.method = "POST";
  req.path = "/containers/create";
  if (!config.name.empty()) req.path += Query().Add("name", config.name).str();
  req.content_type = "application/json";
  const std::string body = Dump(ContainerBody(config));
  req.body = body;
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "create container from " + config.image);
  }
  return ParseResponse("create container", [&]() -> StatusOr<std::string> {
    std::string id = JsonString(json::parse(resp.body), "Id");
    if (id.empty()) return Internal("the Docker engine created a container without an id");
    return id;
  });
}

Status HttpEngine::StartContainer(const std::string& id) {
  Request req;
  req.method = "POST";
  req.path = "/containers/" + PathPart(id) + "/start";
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (resp.status == 304) return Status::Ok();  // already started
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "start container " + id);
  }
  return Status::Ok();
}

Status HttpEngine::FollowLogsFrom(const std::string& id, const LogPosition& from,
                                  const PositionedSink& sink) {
  Query query;
  query.Add("follow", "1").Add("stdout", "1").Add("stderr", "1").Add("timestamps", "1");
  if (!from.time.empty()) {
    // The engine returns messages at or after `since` (seconds.nanoseconds); those at exactly
    // that time that were delivered before are skipped by TimestampedLog.
    const auto t = ParseLogTime(from.time);
    if (!t) return InvalidArgument("bad log position '" + from.ToString() + "'");
    char nanos[16];
    std::snprintf(nanos, sizeof nanos, "%09d", t->second);
    query.Add("since", std::to_string(t->first) + "." + nanos);
  }
  Request req;
  req.path = "/containers/" + PathPart(id) + "/logs" + query.str();
  TimestampedLog messages(from, sink);
  Status malformed;
  LogDemuxer* demuxer_ptr = nullptr;
  LogDemuxer demuxer([&](LogDemuxer::Stream stream, std::string_view payload) {
    if (stream == LogDemuxer::Stream::kStdin || !malformed.ok()) return;
    malformed = messages.Piece(payload, demuxer_ptr->AtFrameBoundary());
  });
  demuxer_ptr = &demuxer;
  req.on_data = [&](std::string_view data) {
    TY_RETURN_IF_ERROR(demuxer.Feed(data));
    return malformed;
  };
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "logs of container " + id);
  }
  return Status::Ok();
}

StatusOr<int> HttpEngine::WaitContainer(const std::string& id) {
  Request req;
  req.method = "POST";
  req.path = "/containers/" + PathPart(id) + "/wait";
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "wait for container " + id);
  }
  return ParseResponse("wait", [&]() -> StatusOr<int> {
    json j = json::parse(resp.body);
    if (auto error = j.find("Error"); error != j.end()) {
      std::string message = JsonString(*error, "Message");
      if (!message.empty()) return Internal("wait for container " + id + ": " + message);
    }
    return j.at("StatusCode").get<int>();
  });
}

Status HttpEngine::StopContainer(const std::string& id, int grace_seconds) {
  grace_seconds = std::max(grace_seconds, 0);
  Request req;
  req.method = "POST";
  req.path = "/containers/" + PathPart(id) + "/stop" +
             Query().Add("t", std::to_string(grace_seconds)).str();
  req.timeout_seconds = kShortCallTimeoutSeconds + grace_seconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (resp.status == 304) return Status::Ok();  // not running
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "stop container " + id);
  }
  return Status::Ok();
}

Status HttpEngine::KillContainer(const std::string& id) {
  Request req;
  req.method = "POST";
  req.path = "/containers/" + PathPart(id) + "/kill";
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (resp.status == 409 && ContainsAny(EngineMessage(resp.body), {"is not running"})) {
    return Status::Ok();
  }
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "kill container " + id);
  }
  return Status::Ok();
}

Status HttpEngine::RemoveContainer(const std::string& id, bool force) {
  Request req;
  req.method = "DELETE";
  req.path =
      "/containers/" + PathPart(id) + Query().Add("force", force ? "1" : "0").Add("v", "1").str();
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (resp.status == 404) return Status::Ok();
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "remove container " + id);
  }
  return Status::Ok();
}

Status HttpEngine::CreateNetwork(const std::string& name,
                                 const std::map<std::string, std::string>& labels) {
  Request req;
  req.method = "POST";
  req.path = "/networks/create";
  req.content_type = "application/json";
  json body = {{"Name", name}, {"Driver", "bridge"}, {"CheckDuplicate", true}};
  body["Labels"] = json::object();
  for (const auto& [k, v] : labels) body["Labels"][k] = v;
  const std::string text = Dump(body);  // the request borrows it
  req.body = text;
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (resp.status == 409) return Status::Ok();  // it exists: a retried start
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "create network " + name);
  }
  return Status::Ok();
}

Status HttpEngine::RemoveNetwork(const std::string& name) {
  Request req;
  req.method = "DELETE";
  req.path = "/networks/" + PathPart(name);
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (resp.status == 404) return Status::Ok();
  if (resp.status == 403 || resp.status == 409) {
    return FailedPrecondition("network " + name + " is in use");
  }
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "remove network " + name);
  }
  return Status::Ok();
}

StatusOr<ContainerState> HttpEngine::InspectContainer(const std::string& id) {
  Request req;
  req.path = "/containers/" + PathPart(id) + "/json";
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (!IsSuccess(resp.status)) {
    return StatusFromHttp(resp.status, resp.body, "inspect container " + id);
  }
  return ParseResponse("inspect container", [&]() -> StatusOr<ContainerState> {
    json j = json::parse(resp.body);
    const json& s = j.at("State");
    ContainerState state;
    state.status = JsonString(s, "Status");
    state.running = s.value("Running", false);
    state.exit_code = s.value("ExitCode", 0);
    state.oom_killed = s.value("OOMKilled", false);
    state.error = JsonString(s, "Error");
    state.started_at = JsonString(s, "StartedAt");
    state.finished_at = JsonString(s, "FinishedAt");
    if (j.contains("Config") && j["Config"].is_object()) {
      state.labels = StringMap(j["Config"], "Labels");
    }
    return state;
  });
}

StatusOr<std::vector<ContainerSummary>> HttpEngine::ListContainers(const std::string& key,
                                                                   const std::string& value) {
  json filters = {{"label", json::array({value.empty() ? key : key + "=" + value})}};
  Request req;
  req.path = "/containers/json" + Query().Add("all", "1").Add("filters", Dump(filters)).str();
  req.timeout_seconds = kShortCallTimeoutSeconds;
  TY_ASSIGN_OR_RETURN(Response resp, Send(req));
  if (!IsSuccess(resp.status)) return StatusFromHttp(resp.status, resp.body, "list containers");
  return ParseResponse("list containers", [&]() -> StatusOr<std::vector<ContainerSummary>> {
    std::vector<ContainerSummary> out;
    for (const json& c : json::parse(resp.body)) {
      ContainerSummary summary;
      summary.id = JsonString(c, "Id");
      summary.image = JsonString(c, "Image");
      summary.state = JsonString(c, "State");
      summary.labels = StringMap(c, "Labels");
      out.push_back(std::move(summary));
    }
    return out;
  });
}

}  // namespace trainyard::docker

#include "trainyard/client/http_client.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <system_error>
#include <utility>

#include "trainyard/common/fs.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/util.h"

namespace trainyard {

namespace {

constexpr long kConnectTimeoutMs = 10000;
constexpr long kStallSeconds = 60;
constexpr std::size_t kMaxErrorBody = 64 * 1024;
constexpr std::size_t kMaxMessageChars = 300;
// Bodies from this size on ask "Expect: 100-continue", so a server that refuses the request
// (401, 413) says so before the upload.
constexpr std::size_t kExpectContinueBytes = 1 << 20;

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

size_t AppendToString(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

// Collects the headers of the last response (a "100 Continue" interim response is discarded
// when the final status line arrives).
size_t CollectHeader(char* data, size_t size, size_t n, void* user) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  const std::string_view line(data, size * n);
  if (StartsWith(line, "HTTP/")) {
    headers->clear();
    return size * n;
  }
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name = ToLower(Trim(line.substr(0, colon)));
  const std::string value(Trim(line.substr(colon + 1)));
  auto [it, inserted] = headers->emplace(std::move(name), value);
  if (!inserted) it->second += ", " + value;
  return size * n;
}

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

void Append(Slist& list, const std::string& line) {
  curl_slist* next = curl_slist_append(list.get(), line.c_str());
  if (next != nullptr) {
    // `next` is the whole list, the old head included: hand it over without freeing that.
    [[maybe_unused]] curl_slist* head = list.release();
    list.reset(next);
  }
}

std::string TransportError(const std::string& method, const std::string& url, CURLcode rc,
                           const char* errbuf) {
  std::string detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
  if (rc == CURLE_PEER_FAILED_VERIFICATION) {
    detail +=
        " (a daemon's self-signed certificate is trusted by its key pin: `trainyard login "
        "URL --pin sha256//...` with the pin `trainyard server` printed)";
  }
  // A query may carry a secret (a SAS token, a signature): it never goes into a message.
  const size_t query = url.find('?');
  const std::string shown = query == std::string::npos ? url : url.substr(0, query) + "?...";
  return method + " " + shown + " failed: " + detail;
}

bool Is2xx(int status) { return status >= 200 && status < 300; }

// The options every exchange sets on a freshly reset handle: the URL, the error buffer, no
// signals, the user agent, the connect timeout and where the response headers go. The caller
// adds the method, the body and where the response body goes.
void SetCommonOptions(CURL* curl, const std::string& url, const TlsTrust& tls, char* errbuf,
                      long connect_timeout_ms,
                      std::map<std::string, std::string>* response_headers) {
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "trainyard-client");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &CollectHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, response_headers);
  if (!tls.pinned_public_key.empty()) {
    // The key is the identity: libcurl checks the pin whatever the verification setting.
    curl_easy_setopt(curl, CURLOPT_PINNEDPUBLICKEY, tls.pinned_public_key.c_str());
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    // TLS 1.3 has no anonymous suites: a server must show a key for the pin to be checked
    // (libcurl skips the check when none is shown).
    curl_easy_setopt(curl, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_3));
  } else if (!tls.ca_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, tls.ca_file.c_str());
  }
}

std::string EncodeImpl(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                            c == '~' || (keep_slash && c == '/');
    if (unreserved) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

}  // namespace

Status StatusFromHttpResult(const HttpResult& result) {
  if (Is2xx(result.status)) return Status::Ok();
  StatusCode code = StatusCodeFromHttp(result.status);
  std::string message;
  const nlohmann::json parsed = nlohmann::json::parse(result.body, nullptr, false);
  if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_object()) {
    const nlohmann::json& error = parsed["error"];
    if (error.contains("message") && error["message"].is_string()) {
      message = error["message"].get<std::string>();
    }
    if (error.contains("code") && error["code"].is_string()) {
      const std::string name = error["code"].get<std::string>();
      for (int i = 0; i <= static_cast<int>(StatusCode::kDeadlineExceeded); ++i) {
        const auto candidate = static_cast<StatusCode>(i);
        // 409 is both ALREADY_EXISTS and FAILED_PRECONDITION: the name tells them apart.
        if (StatusCodeName(candidate) == name && candidate != StatusCode::kOk &&
            HttpStatusFor(candidate) == result.status) {
          code = candidate;
        }
      }
    }
  }
  if (message.empty()) {
    std::string_view body = Trim(result.body);
    message = "HTTP " + std::to_string(result.status);
    if (!body.empty()) {
      message += ": " + std::string(body.substr(0, kMaxMessageChars));
      if (body.size() > kMaxMessageChars) message += "...";
    }
  }
  if (code == StatusCode::kOk) code = StatusCode::kInternal;  // A non-2xx is never OK.
  return Status(code, std::move(message));
}

// Borrows an easy handle from the pool for one call.
class HttpClient::Lease {
 public:
  explicit Lease(HttpClient* client)
      : client_(client), handle_(static_cast<CURL*>(client->AcquireHandle())) {}
  ~Lease() {
    if (handle_ != nullptr) client_->ReleaseHandle(handle_);
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  CURL* get() const { return handle_; }

 private:
  HttpClient* client_;
  CURL* handle_;
};

HttpClient::HttpClient(std::string base_url, std::string bearer_token, TlsTrust tls)
    : base_url_(std::move(base_url)), tls_(std::move(tls)) {
  GlobalInitOnce();
  while (!base_url_.empty() && base_url_.back() == '/') base_url_.pop_back();
  if (!bearer_token.empty()) auth_header_ = "Authorization: Bearer " + bearer_token;
}

HttpClient::~HttpClient() {
  for (void* handle : idle_handles_) curl_easy_cleanup(static_cast<CURL*>(handle));
}

void* HttpClient::AcquireHandle() {
  {
    MutexLock lock(mu_);
    if (!idle_handles_.empty()) {
      void* handle = idle_handles_.back();
      idle_handles_.pop_back();
      return handle;
    }
  }
  return curl_easy_init();
}

void HttpClient::ReleaseHandle(void* handle) {
  MutexLock lock(mu_);
  idle_handles_.push_back(handle);
}

std::string HttpClient::Url(const std::string& path_and_query) const {
  if (path_and_query.empty() || path_and_query.front() != '/') {
    return base_url_ + "/" + path_and_query;
  }
  return base_url_ + path_and_query;
}

StatusOr<HttpResult> HttpClient::Request(const std::string& method,
                                         const std::string& path_and_query, const std::string& body,
                                         const std::string& content_type, long timeout_ms,
                                         const HttpHeaders& extra_headers) {
  const std::string url = Url(path_and_query);
  Lease lease(this);
  CURL* curl = lease.get();
  if (curl == nullptr) return Internal("curl_easy_init failed");
  curl_easy_reset(curl);  // Keeps the connection cache.

  HttpResult result;
  char errbuf[CURL_ERROR_SIZE] = {0};
  Slist headers;
  if (!auth_header_.empty()) Append(headers, auth_header_);
  // Small bodies are sent at once, without the 100-continue round trip.
  Append(headers, body.size() >= kExpectContinueBytes ? "Expect: 100-continue" : "Expect:");
  for (const std::string& h : extra_headers) Append(headers, h);

  SetCommonOptions(curl, url, tls_, errbuf,
                   timeout_ms > 0 ? std::min(timeout_ms, kConnectTimeoutMs) : kConnectTimeoutMs,
                   &result.headers);
  if (timeout_ms > 0) curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);

  const bool sends_body = !body.empty() || method == "POST" || method == "PUT" || method == "PATCH";
  if (method == "GET" && !sends_body) {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  } else if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (sends_body) {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      Append(headers, "Content-Type: " + content_type);
    }
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &AppendToString);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result.body);

  const CURLcode rc = curl_easy_perform(curl);
  // The handle goes back to the pool: it must not point at this frame's buffers.
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  if (rc != CURLE_OK) return Unavailable(TransportError(method, url, rc, errbuf));
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  result.status = static_cast<int>(status);
  return result;
}

StatusOr<nlohmann::json> HttpClient::JsonCall(const std::string& method, const std::string& path,
                                              const nlohmann::json* body, long timeout_ms) {
  const std::string payload = body != nullptr ? body->dump() : std::string();
  TY_ASSIGN_OR_RETURN(HttpResult result,
                      Request(method, path, payload, "application/json", timeout_ms));
  TY_RETURN_IF_ERROR(StatusFromHttpResult(result));
  if (Trim(result.body).empty()) return nlohmann::json();
  nlohmann::json parsed = nlohmann::json::parse(result.body, nullptr, false);
  if (parsed.is_discarded()) {
    return Internal("response to " + method + " " + Url(path) + " is not valid JSON");
  }
  return parsed;
}

StatusOr<nlohmann::json> HttpClient::GetJson(const std::string& path, long timeout_ms) {
  return JsonCall("GET", path, nullptr, timeout_ms);
}

StatusOr<nlohmann::json> HttpClient::PostJson(const std::string& path, const nlohmann::json& body,
                                              long timeout_ms) {
  return JsonCall("POST", path, &body, timeout_ms);
}

StatusOr<nlohmann::json> HttpClient::PutJson(const std::string& path, const nlohmann::json& body,
                                             long timeout_ms) {
  return JsonCall("PUT", path, &body, timeout_ms);
}

StatusOr<nlohmann::json> HttpClient::DeleteJson(const std::string& path, long timeout_ms) {
  return JsonCall("DELETE", path, nullptr, timeout_ms);
}

namespace {

// State of one download: 2xx bodies go to the file, others are kept for the error message.
struct DownloadState {
  CURL* curl = nullptr;
  std::FILE* file = nullptr;
  long status = 0;
  std::string error_body;
  bool write_failed = false;
};

size_t WriteDownload(char* data, size_t size, size_t n, void* user) {
  auto* d = static_cast<DownloadState*>(user);
  if (d->status == 0) curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &d->status);
  const size_t bytes = size * n;
  if (!Is2xx(static_cast<int>(d->status))) {
    if (d->error_body.size() < kMaxErrorBody) d->error_body.append(data, bytes);
    return bytes;
  }
  if (std::fwrite(data, 1, bytes, d->file) != bytes) {
    d->write_failed = true;
    return 0;  // Aborts the transfer.
  }
  return bytes;
}

}  // namespace

Status HttpClient::DownloadTo(const std::string& path, const std::filesystem::path& dest_file) {
  TY_ASSIGN_OR_RETURN(HttpResult result, Download(path, dest_file, {}, /*durable=*/true));
  return StatusFromHttpResult(result);
}

StatusOr<HttpResult> HttpClient::Download(const std::string& path,
                                          const std::filesystem::path& dest_file,
                                          const HttpHeaders& extra_headers, bool durable) {
  const std::string url = Url(path);
  if (dest_file.has_parent_path()) TY_RETURN_IF_ERROR(MakeDirs(dest_file.parent_path()));
  std::filesystem::path temp = dest_file;
  temp += ".part-" + RandomHex(6);

  DownloadState d;
  d.file = std::fopen(temp.c_str(), "wb");
  if (d.file == nullptr) {
    return Internal("cannot create " + temp.string() + ": " +
                    std::error_code(errno, std::generic_category()).message());
  }
  // Removes the temp file on every early return.
  struct TempGuard {
    const std::filesystem::path& path;
    bool keep = false;
    ~TempGuard() {
      if (!keep) {
        std::error_code ec;
        std::filesystem::remove(path, ec);
      }
    }
  } guard{temp};

  CURLcode rc;
  HttpResult result;
  {
    Lease lease(this);
    CURL* curl = lease.get();
    if (curl == nullptr) {
      std::fclose(d.file);
      return Internal("curl_easy_init failed");
    }
    curl_easy_reset(curl);
    d.curl = curl;
    char errbuf[CURL_ERROR_SIZE] = {0};
    Slist headers;
    if (!auth_header_.empty()) Append(headers, auth_header_);
    for (const std::string& h : extra_headers) Append(headers, h);
    SetCommonOptions(curl, url, tls_, errbuf, kConnectTimeoutMs, &result.headers);
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, kStallSeconds);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &WriteDownload);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &d);
    rc = curl_easy_perform(curl);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, nullptr);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
    if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &d.status);
    if (rc != CURLE_OK && !d.write_failed) {
      std::fclose(d.file);
      return Unavailable(TransportError("GET", url, rc, errbuf));
    }
  }

  const bool flushed = std::fflush(d.file) == 0 && (!durable || ::fsync(fileno(d.file)) == 0);
  const int flush_errno = errno;
  const bool closed = std::fclose(d.file) == 0;
  if (d.write_failed || !flushed || !closed) {
    return Internal("cannot write " + temp.string() + ": " +
                    std::error_code(flush_errno, std::generic_category()).message());
  }
  result.status = static_cast<int>(d.status);
  result.body = std::move(d.error_body);
  if (!Is2xx(result.status)) return result;  // the guard removes the temp file

  std::error_code ec;
  std::filesystem::rename(temp, dest_file, ec);
  if (ec) {
    return Internal("cannot rename " + temp.string() + " to " + dest_file.string() + ": " +
                    ec.message());
  }
  guard.keep = true;
  result.body.clear();
  return result;
}

namespace {

// State of one file upload.
struct FileUpload {
  int fd = -1;
  std::uint64_t size = 0;    // Content-Length announced.
  std::uint64_t offset = 0;  // Position in the file of the next read.
  std::uint64_t sent = 0;    // Bytes handed to curl, rewinds included.
  bool shrank = false;
  int read_errno = 0;
};

size_t ReadUpload(char* buffer, size_t size, size_t n, void* user) {
  auto* u = static_cast<FileUpload*>(user);
  const std::uint64_t left = u->size - u->offset;
  if (left == 0) return 0;
  const auto want = static_cast<size_t>(std::min<std::uint64_t>(size * n, left));
  ssize_t got;
  do {
    got = ::pread(u->fd, buffer, want, static_cast<off_t>(u->offset));
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    u->read_errno = errno;
    return CURL_READFUNC_ABORT;
  }
  if (got == 0) {  // End of file before Content-Length.
    u->shrank = true;
    return CURL_READFUNC_ABORT;
  }
  u->offset += static_cast<std::uint64_t>(got);
  u->sent += static_cast<std::uint64_t>(got);
  return static_cast<size_t>(got);
}

// Lets curl start the body over (e.g. when a kept-alive connection turned out closed).
int SeekUpload(void* user, curl_off_t offset, int origin) {
  auto* u = static_cast<FileUpload*>(user);
  if (origin != SEEK_SET || offset < 0 || static_cast<std::uint64_t>(offset) > u->size) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  u->offset = static_cast<std::uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

}  // namespace

StatusOr<HttpResult> HttpClient::UploadFile(
    const std::string& method, const std::string& path_and_query, const std::filesystem::path& file,
    const std::string& content_type, std::uint64_t* bytes_sent, const HttpHeaders& extra_headers) {
  if (bytes_sent != nullptr) *bytes_sent = 0;
  const std::string url = Url(path_and_query);
  FileUpload u;
  u.fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (u.fd < 0) {
    const int err = errno;
    const std::string why = "cannot open " + file.string() + " for upload: " +
                            std::error_code(err, std::generic_category()).message();
    if (err == ENOENT || err == ENOTDIR) return NotFound(why);
    if (err == EACCES || err == EPERM) return PermissionDenied(why);
    return Internal(why);
  }
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } fd_guard{u.fd};
  struct stat st {};
  if (::fstat(u.fd, &st) != 0) {
    return Internal("cannot stat " + file.string() + ": " +
                    std::error_code(errno, std::generic_category()).message());
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument(file.string() + " is not a regular file");
  u.size = static_cast<std::uint64_t>(st.st_size);

  Lease lease(this);
  CURL* curl = lease.get();
  if (curl == nullptr) return Internal("curl_easy_init failed");
  curl_easy_reset(curl);

  HttpResult result;
  char errbuf[CURL_ERROR_SIZE] = {0};
  Slist headers;
  if (!auth_header_.empty()) Append(headers, auth_header_);
  Append(headers, u.size >= kExpectContinueBytes ? "Expect: 100-continue" : "Expect:");
  Append(headers, "Content-Type: " + content_type);
  for (const std::string& h : extra_headers) Append(headers, h);

  SetCommonOptions(curl, url, tls_, errbuf, kConnectTimeoutMs, &result.headers);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, kStallSeconds);
  if (method == "PUT") {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(u.size));
  } else {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(u.size));
    if (method != "POST") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_READFUNCTION, &ReadUpload);
  curl_easy_setopt(curl, CURLOPT_READDATA, &u);
  curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, &SeekUpload);
  curl_easy_setopt(curl, CURLOPT_SEEKDATA, &u);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &AppendToString);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &result.body);

  const CURLcode rc = curl_easy_perform(curl);
  // The handle goes back to the pool: it must not point at this frame's state.
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(curl, CURLOPT_READDATA, nullptr);
  curl_easy_setopt(curl, CURLOPT_SEEKDATA, nullptr);
  if (bytes_sent != nullptr) *bytes_sent = u.sent;
  if (u.shrank) return FailedPrecondition(file.string() + " shrank while it was being uploaded");
  if (u.read_errno != 0) {
    return Internal("cannot read " + file.string() + ": " +
                    std::error_code(u.read_errno, std::generic_category()).message());
  }
  if (rc != CURLE_OK) return Unavailable(TransportError(method, url, rc, errbuf));
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  result.status = static_cast<int>(status);
  return result;
}

std::string HttpClient::UrlEncode(std::string_view text) { return EncodeImpl(text, false); }

std::string HttpClient::UrlEncodePath(std::string_view text) { return EncodeImpl(text, true); }

}  // namespace trainyard

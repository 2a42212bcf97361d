#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/mutex.h"
#include "trainyard/common/status.h"

namespace trainyard {

// The outcome of one HTTP exchange, whatever its status.
struct HttpResult {
  int status = 0;
  std::string body;
  // Response headers, names lower-cased; repeated headers joined with ", ".
  std::map<std::string, std::string> headers;
};

// Extra request headers, each "Name: value".
using HttpHeaders = std::vector<std::string>;

// OK for a 2xx result. Otherwise a Status whose message is the server's
// {"error": {"message": ...}} when present (else the start of the body), and whose code is the
// server's {"error": {"code": ...}} when it names a code consistent with the HTTP status, else
// StatusCodeFromHttp(status).
Status StatusFromHttpResult(const HttpResult& result);

// How a client trusts an https:// server (nothing of it applies to http://). Empty: the
// system's certificate authorities.
struct TlsTrust {
  // "sha256//BASE64" (trainyard's PublicKeyPin): the server's public key must hash to this, and
  // its certificate is not checked against any authority, as an SSH host key. For a daemon's
  // self-signed certificate.
  std::string pinned_public_key;
  // A PEM file of the authorities to verify the server's certificate and name with, instead of
  // the system's.
  std::string ca_file;
};

// A client of the trainyard REST API (or any HTTP/1.1 server) on libcurl.
//
// Thread-safety: all methods may be called concurrently. The client keeps a pool of curl easy
// handles: each call borrows an idle one (or makes one) for its duration and returns it after,
// so concurrent calls run in parallel and sequential calls reuse kept-alive connections.
class HttpClient {
 public:
  // `base_url` like "http://127.0.0.1:8080" (a trailing "/" is ignored). When `bearer_token` is
  // non-empty every request carries "Authorization: Bearer <token>". `tls` is how an https://
  // server is trusted.
  explicit HttpClient(std::string base_url, std::string bearer_token = "", TlsTrust tls = {});
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;
  // Precondition: no call in flight.
  ~HttpClient();

  const std::string& base_url() const { return base_url_; }

  // Sends one request to base_url + path_and_query and returns the response whatever its
  // status. `body` is sent with `content_type` when non-empty, and for POST/PUT/PATCH always;
  // from 1 MiB on with "Expect: 100-continue", so a refusal comes before the upload.
  // `timeout_ms` bounds the whole exchange (<= 0: no bound). Unavailable naming the method and
  // URL when the server cannot be reached, the exchange times out or fails midway.
  StatusOr<HttpResult> Request(const std::string& method, const std::string& path_and_query,
                               const std::string& body = "",
                               const std::string& content_type = "application/json",
                               long timeout_ms = 30000, const HttpHeaders& headers = {});

  // JSON calls: the parsed response body (null for an empty body) on 2xx; otherwise
  // StatusFromHttpResult; Unavailable as for Request; Internal when a 2xx body is not JSON.
  StatusOr<nlohmann::json> GetJson(const std::string& path, long timeout_ms = 30000);
  StatusOr<nlohmann::json> PostJson(const std::string& path, const nlohmann::json& body,
                                    long timeout_ms = 30000);
  StatusOr<nlohmann::json> PutJson(const std::string& path, const nlohmann::json& body,
                                   long timeout_ms = 30000);
  StatusOr<nlohmann::json> DeleteJson(const std::string& path, long timeout_ms = 30000);

  // GETs `path` and streams the body to `dest_file`: written to a temp file beside it, flushed
  // to disk, then renamed over it, so dest_file never holds a partial download. Creates missing
  // parent folders. There is no overall time limit, but a transfer stalled for 60 s fails with
  // Unavailable. Non-2xx as StatusFromHttpResult; Internal on local I/O errors.
  Status DownloadTo(const std::string& path, const std::filesystem::path& dest_file);
  // The same with extra request `headers`; `durable` false leaves out the fsync before the
  // rename (for many files synced together by the caller). Returns the response's status and
  // headers whatever the status: a 2xx body is in `dest_file`; any other status leaves
  // `dest_file` untouched and the start of the body in `body` (a 304 to a conditional request,
  // say). Errors: Unavailable and Internal as DownloadTo's.
  StatusOr<HttpResult> Download(const std::string& path, const std::filesystem::path& dest_file,
                                const HttpHeaders& headers, bool durable);

  // Sends the content of the regular file `file` as the body of a `method` request ("PUT" or
  // "POST") to base_url + path_and_query, streamed from disk a piece at a time (never held in
  // memory whole), with Content-Length set to the file's size when opened and, from 1 MiB on,
  // "Expect: 100-continue" (a refusal then costs no upload). Returns the response whatever its
  // status. `bytes_sent`, when given, receives the body bytes handed to the connection (0 when
  // the server refused before the body), also on error. There is no overall time limit, but a
  // transfer stalled for 60 s fails. Errors: NotFound / PermissionDenied / InvalidArgument (not
  // a regular file) when `file` cannot be opened; FailedPrecondition "<file> shrank while it was
  // being uploaded"; Internal on a read error; Unavailable as for Request.
  StatusOr<HttpResult> UploadFile(const std::string& method, const std::string& path_and_query,
                                  const std::filesystem::path& file,
                                  const std::string& content_type = "application/octet-stream",
                                  std::uint64_t* bytes_sent = nullptr,
                                  const HttpHeaders& headers = {});

  // Percent-encodes everything except RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~);
  // for one path segment or one query value.
  static std::string UrlEncode(std::string_view text);
  // Like UrlEncode but keeps "/": for a relative file path placed in a URL path.
  static std::string UrlEncodePath(std::string_view text);

 private:
  class Lease;
  StatusOr<nlohmann::json> JsonCall(const std::string& method, const std::string& path,
                                    const nlohmann::json* body, long timeout_ms);
  std::string Url(const std::string& path_and_query) const;
  void* AcquireHandle();
  void ReleaseHandle(void* handle);

  std::string base_url_;
  TlsTrust tls_;
  std::string auth_header_;  // "Authorization: Bearer ..." or empty.
  Mutex mu_;
  std::vector<void*> idle_handles_ GUARDED_BY(mu_);  // CURL* easy handles
};

}  // namespace trainyard

#include "trainyard/assets/object_client.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "trainyard/assets/client_internal.h"
#include "trainyard/assets/xml.h"
#include "trainyard/common/util.h"

namespace trainyard::assets {
namespace internal {

StatusOr<SplitUrl> SplitServiceUrl(std::string_view url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string_view::npos)
    return InvalidArgument("not a URL: '" + std::string(url) + "'");
  const size_t slash = url.find('/', scheme + 3);
  SplitUrl out;
  out.origin = std::string(url.substr(0, slash));
  out.host = std::string(url.substr(
      scheme + 3, slash == std::string_view::npos ? std::string_view::npos : slash - scheme - 3));
  if (out.host.empty()) return InvalidArgument("URL '" + std::string(url) + "' has no host");
  if (slash != std::string_view::npos) out.path = std::string(url.substr(slash));
  while (!out.path.empty() && out.path.back() == '/') out.path.pop_back();
  return out;
}

Status ObjectStoreError(const HttpResult& result, std::string_view service, std::string_view what) {
  std::string code, message;
  if (!result.body.empty()) {
    if (auto xml = ParseXmlRecords(result.body, "\x01"); xml.ok()) {
      code = xml->fields["Code"];
      message = xml->fields["Message"];
    }
  }
  if (code.empty()) {
    // HEAD answers have no body; Azure names the error in a header.
    if (auto it = result.headers.find("x-ms-error-code"); it != result.headers.end())
      code = it->second;
  }
  // The first line of the service's message (Azure appends request ids and times).
  if (size_t nl = message.find('\n'); nl != std::string::npos) message.resize(nl);
  std::string detail = "HTTP " + std::to_string(result.status);
  if (!code.empty()) detail += " " + code;
  if (!message.empty()) detail += ": " + message;
  const std::string subject = std::string(service) + " " + std::string(what);
  switch (result.status) {
    case 401:
    case 403:
      return PermissionDenied(subject + ": the service rejected the credentials (" + detail + ")");
    case 404:
      return NotFound(subject + " does not exist (" + detail + ")");
    case 429:
      return Unavailable(subject + ": the service is throttling requests (" + detail + ")");
    default:
      if (result.status >= 500)
        return Unavailable(subject + ": the service failed (" + detail + ")");
      return InvalidArgument(subject + ": the service refused the request (" + detail + ")");
  }
}

std::string Unquote(std::string_view etag) {
  if (StartsWith(etag, "W/")) etag.remove_prefix(2);
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') {
    etag = etag.substr(1, etag.size() - 2);
  }
  return std::string(etag);
}

Status CopyFd(int from, int to, const std::string& what) {
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Internal("cannot read " + what + ": " + std::strerror(errno));
    }
    if (n == 0) return Status::Ok();
    for (ssize_t done = 0; done < n;) {
      const ssize_t w = ::write(to, buf + done, static_cast<size_t>(n - done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return Internal("cannot write a copy of " + what + ": " + std::strerror(errno));
      }
      done += w;
    }
  }
}

ObjectInfo InfoFromHeaders(std::string_view key, const HttpResult& result) {
  ObjectInfo info;
  info.key = std::string(key);
  if (auto it = result.headers.find("content-length"); it != result.headers.end()) {
    if (auto size = ParseWholeInteger<std::uint64_t>(it->second)) info.size = *size;
  }
  if (auto e = result.headers.find("etag"); e != result.headers.end())
    info.etag = Unquote(e->second);
  return info;
}

}  // namespace internal

Status CheckObjectKey(std::string_view key) {
  if (key.empty()) return InvalidArgument("an object path must not be empty");
  if (key.front() == '/')
    return InvalidArgument("object path '" + std::string(key) + "' must be relative");
  for (const char c : key) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return InvalidArgument("object path holds a control character");
    }
  }
  for (const std::string& part : Split(key, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgument("object path '" + std::string(key) +
                             "' has an empty, '.' or '..' component");
    }
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<ObjectClient>> OpenObjectClient(const spec::DatastoreDefinition& def) {
  TY_RETURN_IF_ERROR(def.Validate());
  if (def.type == "azure_blob") return internal::NewAzureBlobClient(def);
  if (def.type == "s3") return internal::NewS3Client(def);
  return internal::NewLocalClient(def);
}

}  // namespace trainyard::assets

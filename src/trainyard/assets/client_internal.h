#pragma once

// Pieces the object clients share (include only from src/trainyard/assets/*_client.cc).

#include <memory>
#include <string>
#include <string_view>

#include "trainyard/assets/object_client.h"
#include "trainyard/client/http_client.h"

namespace trainyard::assets::internal {

// A URL split where object paths are appended: "http://127.0.0.1:10000/devstoreaccount1" ->
// origin "http://127.0.0.1:10000", path "/devstoreaccount1", host "127.0.0.1:10000".
struct SplitUrl {
  std::string origin;
  std::string host;
  std::string path;  // "" or "/..." without a trailing '/'
};
StatusOr<SplitUrl> SplitServiceUrl(std::string_view url);

// The Status for a non-2xx answer of an object store about `what` ("container 'x' of account
// 'y'", "object 'k'"): PermissionDenied for 401/403 (naming the service's error code and saying
// the credentials were rejected), NotFound for 404, Unavailable for 5xx and 429, InvalidArgument
// otherwise. The service's own code and message (XML <Code>, <Message>) are quoted; nothing of the
// request is.
Status ObjectStoreError(const HttpResult& result, std::string_view service, std::string_view what);

// Strips the quotes of an ETag header value.
std::string Unquote(std::string_view etag);

// Copies what is left to read of `from` to `to`; `what` names the source in errors.
Status CopyFd(int from, int to, const std::string& what);

// An object's info from the headers of an answer about it: Content-Length and ETag.
ObjectInfo InfoFromHeaders(std::string_view key, const HttpResult& result);

std::unique_ptr<ObjectClient> NewAzureBlobClient(const spec::DatastoreDefinition& def);
std::unique_ptr<ObjectClient> NewS3Client(const spec::DatastoreDefinition& def);
std::unique_ptr<ObjectClient> NewLocalClient(const spec::DatastoreDefinition& def);

}  // namespace trainyard::assets::internal

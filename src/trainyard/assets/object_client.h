#pragma once

// The objects of one datastore, whatever holds them: a local folder, an Azure Blob container or
// an S3 bucket. Keys are '/'-separated paths relative to the datastore's root, without a leading
// '/'; a "folder" is the set of keys under a prefix.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/spec/datastore.h"

namespace trainyard::assets {

struct ObjectInfo {
  std::string key;  // "images/cat.png"
  std::uint64_t size = 0;
  // The service's entity tag (quotes removed): changes whenever the content does. For a local
  // file: size, modification time and inode, which change with it the same way.
  std::string etag;
};

// Thread-safety: every method may be called concurrently (downloads run in parallel).
class ObjectClient {
 public:
  virtual ~ObjectClient() = default;

  // What it reaches, for messages: "azure_blob container 'data' of account 'acct'".
  virtual std::string Describe() const = 0;

  // Checks, with one small authenticated listing, that the credentials are accepted and that the
  // container, bucket or folder exists. PermissionDenied "... rejected the credentials (HTTP 403
  // CODE)"; NotFound naming the container, bucket or folder; Unavailable when the service cannot
  // be reached. Never contains a secret.
  virtual Status Check() = 0;

  // Every object whose key starts with `prefix`, sorted by key (all pages of the listing).
  virtual StatusOr<std::vector<ObjectInfo>> List(std::string_view prefix) = 0;

  // One object. NotFound "... has no object KEY".
  virtual StatusOr<ObjectInfo> Stat(std::string_view key) = 0;

  // Writes object `key` to `dest` through a temp file beside it, renamed into place only when
  // whole: `dest` never holds a partial object. `durable` fsyncs it before the rename. Returns the
  // object's info as the transfer saw it. NotFound for a missing object; errors name the object.
  virtual StatusOr<ObjectInfo> Download(std::string_view key, const std::filesystem::path& dest,
                                        bool durable) = 0;

  // Stores the regular file `file` as object `key`, replacing it.
  virtual Status Upload(const std::filesystem::path& file, std::string_view key) = 0;
};

// A client for `def`, whose secrets must be unsealed. InvalidArgument for a definition Validate
// refuses.
StatusOr<std::unique_ptr<ObjectClient>> OpenObjectClient(const spec::DatastoreDefinition& def);

// InvalidArgument unless `key` is a clean relative key: no leading '/', no empty, "." or ".."
// component, no NUL or control character.
Status CheckObjectKey(std::string_view key);

}  // namespace trainyard::assets

#pragma once

// The addresses job files give data by (REFERENCE.md, "Asset URIs"), parsed into their parts.
// Parsing is syntax only: whether the datastore, run or account exists is the daemon's to say.

#include <optional>
#include <string>
#include <string_view>

#include "trainyard/common/status.h"

namespace trainyard::spec {

struct DataUri {
  enum class Kind {
    kLocalPath,  // an absolute path on the daemon's machine
    kDatastore,  // azureml://datastores/<datastore>/paths/<path>
    kRunOutput,  // azureml://jobs/<run>/outputs/artifacts/paths/<path>, runs:/<run>/<path>
    kAsset,      // azureml:<name>:<version>, azureml:<name>@<label>: a data asset or model
    kHttp,       // http:// or https://, one file
    kAzureBlob,  // wasbs://<container>@<account>.blob.<suffix>/<path>, and abfss:// (.dfs.)
    kS3,         // s3://<bucket>/<path>
  };
  Kind kind = Kind::kLocalPath;
  std::string text;           // as written
  std::string path;           // the path inside the datastore, container, bucket or run's
                              // outputs, without a leading '/' ("" for the root); kLocalPath: the
                              // path; kHttp: the URL
  std::string datastore;      // kDatastore
  std::string run_id;         // kRunOutput
  std::string account;        // kAzureBlob
  std::string container;      // kAzureBlob (the file system of abfss://)
  std::string suffix;         // kAzureBlob: the storage suffix, e.g. core.windows.net
  std::string bucket;         // kS3
  std::string asset_name;     // kAsset
  std::string asset_version;  // kAsset: the version, or "" when a label names it
  std::string asset_label;    // kAsset: "latest" or a label set on a version
  // kAsset from azureml://registries/<registry>/(models|data)/<name>/(versions/<v>|labels/<l>):
  // the registry, and "model" or "data" (empty for azureml:<name>..., where the input's type
  // tells).
  std::string asset_registry;
  std::string asset_kind;
};

// azureml://registries/<registry>/<collection>/<name>/(versions/<version> | labels/<label>),
// the address of a registry's environment, model or data asset.
struct RegistryRef {
  std::string registry;
  std::string collection;  // "environments" | "models" | "data"
  std::string name;
  std::string version;  // or
  std::string label;
};
// Empty when `text` does not have that shape (each part a valid name).
std::optional<RegistryRef> ParseRegistryRef(std::string_view text);

// Parses an input's or output's `path:`. InvalidArgument saying what is wrong and how to write
// it: a relative path (the spec resolves those first), an unknown scheme, a malformed
// azureml:// address, an asset reference without a version or label, "..".
StatusOr<DataUri> ParseDataUri(std::string_view text);

// True when `text` is a URI rather than a local path (it has a scheme, "azureml:" included).
bool LooksLikeUri(std::string_view text);

}  // namespace trainyard::spec

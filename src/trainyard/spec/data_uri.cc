#include "trainyard/spec/data_uri.h"

#include "trainyard/common/util.h"

namespace trainyard::spec {
namespace {

// The path part after a store's root: no leading '/', no "..", no empty or "." component
// (a trailing '/' is dropped: a folder's prefix).
StatusOr<std::string> CleanPath(std::string_view path, std::string_view text) {
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.empty()) return std::string();
  for (const std::string& part : Split(path, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgument("'" + std::string(text) +
                             "': a path inside a store has no empty, '.' or '..' component");
    }
  }
  for (const char c : path) {
    if (static_cast<unsigned char>(c) < 0x20) {
      return InvalidArgument("'" + std::string(text) + "' holds a control character");
    }
  }
  return std::string(path);
}

}  // namespace

std::optional<RegistryRef> ParseRegistryRef(std::string_view text) {
  constexpr std::string_view kPrefix = "azureml://registries/";
  if (!StartsWith(text, kPrefix)) return std::nullopt;
  const std::vector<std::string> parts = Split(text.substr(kPrefix.size()), '/');
  if (parts.size() != 5 || !IsValidName(parts[0]) || !IsValidName(parts[2]) ||
      !IsValidName(parts[4]) ||
      (parts[1] != "environments" && parts[1] != "models" && parts[1] != "data") ||
      (parts[3] != "versions" && parts[3] != "labels")) {
    return std::nullopt;
  }
  RegistryRef ref{parts[0], parts[1], parts[2], "", ""};
  (parts[3] == "versions" ? ref.version : ref.label) = parts[4];
  return ref;
}

bool LooksLikeUri(std::string_view text) {
  if (StartsWith(text, "azureml:") || StartsWith(text, "runs:/")) return true;
  const size_t colon = text.find("://");
  return colon != std::string_view::npos && colon > 0 &&
         text.substr(0, colon).find('/') == std::string_view::npos;
}

StatusOr<DataUri> ParseDataUri(std::string_view text) {
  DataUri uri;
  uri.text = std::string(text);
  const std::string t(text);
  if (StartsWith(text, "azureml://datastores/")) {
    std::string_view rest = text.substr(21);
    const size_t slash = rest.find('/');
    const std::string_view name = rest.substr(0, slash);
    if (slash == std::string_view::npos || !StartsWith(rest.substr(slash), "/paths/") ||
        !IsValidName(name)) {
      return InvalidArgument("'" + t +
                             "' is not a datastore path; write "
                             "azureml://datastores/<datastore>/paths/<path>");
    }
    uri.kind = DataUri::Kind::kDatastore;
    uri.datastore = std::string(name);
    TY_ASSIGN_OR_RETURN(uri.path, CleanPath(rest.substr(slash + 7), text));
    return uri;
  }
  if (StartsWith(text, "azureml://jobs/")) {
    std::string_view rest = text.substr(15);
    const size_t slash = rest.find('/');
    const std::string_view run = rest.substr(0, slash);
    constexpr std::string_view kTail = "/outputs/artifacts/paths/";
    if (slash == std::string_view::npos || !StartsWith(rest.substr(slash), kTail) ||
        !IsValidName(run)) {
      return InvalidArgument("'" + t +
                             "' is not a run output path; write "
                             "azureml://jobs/<run>/outputs/artifacts/paths/<path>");
    }
    uri.kind = DataUri::Kind::kRunOutput;
    uri.run_id = std::string(run);
    TY_ASSIGN_OR_RETURN(uri.path, CleanPath(rest.substr(slash + kTail.size()), text));
    return uri;
  }
  if (StartsWith(text, "azureml://registries/")) {
    // azureml://registries/<registry>/(models|data)/<name>/(versions/<v> | labels/<label>)
    const std::optional<RegistryRef> ref = ParseRegistryRef(text);
    if (!ref || ref->collection == "environments") {
      return InvalidArgument("'" + t +
                             "' is not a registry asset; write azureml://registries/<registry>/"
                             "(models|data)/<name>/versions/<version> or .../labels/<label>");
    }
    uri.kind = DataUri::Kind::kAsset;
    uri.asset_registry = ref->registry;
    uri.asset_kind = ref->collection == "models" ? "model" : "data";
    uri.asset_name = ref->name;
    uri.asset_version = ref->version;
    uri.asset_label = ref->label;
    return uri;
  }
  if (StartsWith(text, "runs:/")) {
    // MLflow's address of a run's artifact: runs:/<run>/<path>, the run's outputs here.
    std::string_view rest = text.substr(6);
    while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
    const size_t slash = rest.find('/');
    const std::string_view run = rest.substr(0, slash);
    if (!IsValidName(run)) {
      return InvalidArgument("'" + t + "' is not a run's artifact; write runs:/<run>/<path>");
    }
    uri.kind = DataUri::Kind::kRunOutput;
    uri.run_id = std::string(run);
    if (slash != std::string_view::npos) {
      TY_ASSIGN_OR_RETURN(uri.path, CleanPath(rest.substr(slash + 1), text));
    }
    return uri;
  }
  if (StartsWith(text, "azureml:")) {
    // azureml:<name>:<version> | azureml:<name>@<label> (latest: the newest version).
    const std::string_view rest = text.substr(8);
    const size_t at = rest.find('@');
    const size_t colon = rest.find(':');
    const size_t sep = std::min(at, colon);
    const std::string_view name = rest.substr(0, sep);
    const std::string_view tail =
        sep == std::string_view::npos ? std::string_view() : rest.substr(sep + 1);
    if (sep == std::string_view::npos || !IsValidName(name) || !IsValidName(tail)) {
      return InvalidArgument("'" + t +
                             "' names no version of an asset; write azureml:<name>:<version> "
                             "or azureml:<name>@latest");
    }
    uri.kind = DataUri::Kind::kAsset;
    uri.asset_name = std::string(name);
    if (sep == at) {
      uri.asset_label = std::string(tail);
    } else {
      uri.asset_version = std::string(tail);
    }
    return uri;
  }
  if (StartsWith(text, "http://") || StartsWith(text, "https://")) {
    const size_t host = text.find("://") + 3;
    if (text.size() <= host || text[host] == '/') {
      return InvalidArgument("'" + t + "' has no host");
    }
    for (const char c : text) {
      if (static_cast<unsigned char>(c) <= 0x20) {
        return InvalidArgument("'" + t + "' holds a space or control character; encode it (%20)");
      }
    }
    uri.kind = DataUri::Kind::kHttp;
    uri.path = t;
    return uri;
  }
  const bool wasbs = StartsWith(text, "wasbs://") || StartsWith(text, "wasb://");
  const bool abfss = StartsWith(text, "abfss://") || StartsWith(text, "abfs://");
  if (wasbs || abfss) {
    // <container>@<account>.blob.<suffix>/<path>  |  <fs>@<account>.dfs.<suffix>/<path>
    std::string_view rest = text.substr(text.find("://") + 3);
    const size_t at = rest.find('@');
    const size_t slash = rest.find('/');
    const std::string_view host = rest.substr(
        at + 1, slash == std::string_view::npos ? std::string_view::npos : slash - at - 1);
    const std::string_view service = wasbs ? ".blob." : ".dfs.";
    const size_t dot = host.find(service);
    if (at == std::string_view::npos || (slash != std::string_view::npos && slash < at) ||
        at == 0 || dot == std::string_view::npos || dot == 0) {
      return InvalidArgument("'" + t + "' is not a blob address; write " +
                             (wasbs
                                  ? "wasbs://<container>@<account>.blob.core.windows.net/<path>"
                                  : "abfss://<filesystem>@<account>.dfs.core.windows.net/<path>"));
    }
    uri.kind = DataUri::Kind::kAzureBlob;
    uri.container = std::string(rest.substr(0, at));
    uri.account = std::string(host.substr(0, dot));
    uri.suffix = std::string(host.substr(dot + service.size()));
    TY_ASSIGN_OR_RETURN(
        uri.path,
        CleanPath(slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1),
                  text));
    return uri;
  }
  if (StartsWith(text, "s3://")) {
    std::string_view rest = text.substr(5);
    const size_t slash = rest.find('/');
    uri.kind = DataUri::Kind::kS3;
    uri.bucket = std::string(rest.substr(0, slash));
    if (uri.bucket.empty())
      return InvalidArgument("'" + t + "' has no bucket; write s3://<bucket>/<path>");
    TY_ASSIGN_OR_RETURN(
        uri.path,
        CleanPath(slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1),
                  text));
    return uri;
  }
  if (LooksLikeUri(text)) {
    return InvalidArgument("'" + t + "': unsupported scheme '" + t.substr(0, t.find("://")) +
                           "://'; use a local path, azureml://datastores/..., https://, "
                           "wasbs://, abfss:// or s3://");
  }
  if (text.empty() || text.front() != '/') {
    return InvalidArgument("'" + t + "' is not an absolute path");
  }
  uri.kind = DataUri::Kind::kLocalPath;
  uri.path = t;
  return uri;
}

}  // namespace trainyard::spec

// Datastores: the definition's JSON wire form, its checks and datastore YAML files
// (docs/data.md).

#include "trainyard/spec/datastore.h"

#include <algorithm>
#include <array>
#include <filesystem>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/spec_internal.h"

namespace trainyard::spec {
namespace {

using json = nlohmann::json;
using internal::Entry;
using internal::Mapping;
using internal::SourceFile;

// clang-format off
constexpr std::array<std::string_view, 13> kYamlKeys = {
    "$schema", "name", "type", "description", "tags", "path", "account_name", "container_name",
    "endpoint", "protocol", "credentials", "bucket", "region"};
constexpr std::array<std::string_view, 12> kJsonKeys = {
    "name", "type", "description", "tags", "path", "account_name", "container_name", "endpoint",
    "protocol", "credentials", "bucket", "region"};
constexpr std::array<std::string_view, 2> kBlobCredentialKeys = {"account_key", "sas_token"};
constexpr std::array<std::string_view, 2> kS3CredentialKeys = {"access_key_id",
                                                               "secret_access_key"};
// clang-format on

constexpr const char* kTypes = "local, azure_blob or s3";

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// Azure: 3-24 characters, lower-case letters and digits.
bool IsAccountName(std::string_view s) {
  return s.size() >= 3 && s.size() <= 24 && std::all_of(s.begin(), s.end(), IsLowerAlnum);
}

// Azure: 3-63 characters of lower-case letters, digits and '-', starting and ending with a letter
// or digit, no "--". `$root` and `$web` are the account's special containers.
bool IsContainerName(std::string_view s) {
  if (s == "$root" || s == "$web") return true;
  if (s.size() < 3 || s.size() > 63 || !IsLowerAlnum(s.front()) || !IsLowerAlnum(s.back())) {
    return false;
  }
  if (s.find("--") != std::string_view::npos) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsLowerAlnum(c) || c == '-'; });
}

// S3: 3-63 characters of lower-case letters, digits, '.' and '-', starting and ending with a
// letter or digit.
bool IsBucketName(std::string_view s) {
  if (s.size() < 3 || s.size() > 63 || !IsLowerAlnum(s.front()) || !IsLowerAlnum(s.back())) {
    return false;
  }
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return IsLowerAlnum(c) || c == '-' || c == '.'; });
}

bool IsHttpUrl(std::string_view s) {
  return (StartsWith(s, "http://") && s.size() > 7) || (StartsWith(s, "https://") && s.size() > 8);
}

// A storage suffix such as "core.windows.net": a DNS name.
bool IsDnsSuffix(std::string_view s) {
  if (s.empty() || s.size() > 253 || s.front() == '.' || s.back() == '.') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z') || c == '-' || c == '.';
  });
}

// No control characters (they would reach HTTP headers and URLs).
bool Plain(std::string_view s) {
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

std::string TrimSlashes(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

Status ParseCredentials(const SourceFile& file, const Entry& entry, DatastoreDefinition* def) {
  const bool s3 = def->type == "s3";
  if (def->type == "local") {
    return file.ErrorAt(entry.key_node.Mark(),
                        "a local datastore has no credentials; leave 'credentials' out");
  }
  if (entry.value.IsNull()) return Status::Ok();
  TY_ASSIGN_OR_RETURN(Mapping m,
                      Mapping::Read(file, entry.value, "credentials", "credentials",
                                    s3 ? std::span<const std::string_view>(kS3CredentialKeys)
                                       : std::span<const std::string_view>(kBlobCredentialKeys)));
  for (const Entry& e : m.entries()) {
    TY_ASSIGN_OR_RETURN(std::string raw, internal::ReadNonEmptyString(file, e));
    TY_ASSIGN_OR_RETURN(std::string value, internal::ResolveEnvReferences(file, e, raw));
    if (e.key == "account_key") def->account_key = value;
    if (e.key == "sas_token") def->sas_token = value;
    if (e.key == "access_key_id") def->access_key_id = value;
    if (e.key == "secret_access_key") def->secret_access_key = value;
  }
  if (!def->account_key.empty() && !def->sas_token.empty()) {
    return file.ErrorAt(entry.mark(),
                        "give either credentials.account_key or "
                        "credentials.sas_token, not both");
  }
  if (s3 && def->access_key_id.empty() != def->secret_access_key.empty()) {
    return file.ErrorAt(entry.mark(),
                        "an s3 datastore's credentials need both access_key_id and "
                        "secret_access_key (or neither, for a public bucket)");
  }
  return Status::Ok();
}

StatusOr<DatastoreDefinition> ParseDatastore(const SourceFile& file, const YAML::Node& root) {
  TY_ASSIGN_OR_RETURN(Mapping top, Mapping::Read(file, root, "", "datastore", kYamlKeys));
  DatastoreDefinition def;
  if (const Entry* e = top.Find("$schema")) {
    TY_ASSIGN_OR_RETURN(std::string schema, internal::ReadString(file, *e));
    (void)schema;  // informational: editors use it for completion
  }
  const Entry* name = top.Find("name");
  if (name == nullptr) {
    return file.ErrorAt(top.mark(),
                        "missing required key 'name' in datastore (the name paths use in "
                        "azureml://datastores/NAME/paths/...)");
  }
  TY_ASSIGN_OR_RETURN(def.name, internal::ReadNonEmptyString(file, *name));
  if (!IsValidName(def.name)) {
    return file.ErrorAt(name->mark(),
                        "'name' must be a name of letters, digits, '.', '_' and '-' starting "
                        "with a letter or digit, got " +
                            internal::Describe(name->value));
  }
  const Entry* type = top.Find("type");
  if (type == nullptr) {
    return file.ErrorAt(top.mark(),
                        std::string("missing required key 'type' in datastore (") + kTypes + ")");
  }
  TY_ASSIGN_OR_RETURN(def.type, internal::ReadString(file, *type));
  if (def.type == "azure_file" || def.type == "azure_data_lake_gen1" ||
      def.type == "azure_data_lake_gen2" || def.type == "one_lake") {
    return file.ErrorAt(type->mark(), "datastore type '" + def.type +
                                          "' is not supported; use azure_blob (an account with a "
                                          "hierarchical namespace serves the blob API too, and "
                                          "abfss:// paths resolve through it), local or s3");
  }
  if (def.type != "local" && def.type != "azure_blob" && def.type != "s3") {
    return file.ErrorAt(type->mark(), std::string("'type' must be ") + kTypes + ", got " +
                                          internal::Describe(type->value));
  }
  // Which keys each type takes; another type's key is an error at that key.
  auto belongs = [&](std::string_view key) {
    if (key == "path") return def.type == "local";
    if (key == "account_name" || key == "container_name" || key == "protocol") {
      return def.type == "azure_blob";
    }
    if (key == "bucket" || key == "region") return def.type == "s3";
    if (key == "endpoint") return def.type != "local";
    return true;
  };
  for (const Entry& e : top.entries()) {
    if (!belongs(e.key)) {
      return file.ErrorAt(e.key_node.Mark(),
                          "'" + e.key + "' is not a setting of a " + def.type + " datastore");
    }
    if (e.key == "$schema" || e.key == "name" || e.key == "type") continue;
    if (e.key == "tags") {
      TY_ASSIGN_OR_RETURN(def.tags, internal::ReadStringMap(file, e, /*env_names=*/false));
    } else if (e.key == "credentials") {
      TY_RETURN_IF_ERROR(ParseCredentials(file, e, &def));
    } else if (e.key == "path") {
      TY_ASSIGN_OR_RETURN(std::string p, internal::ReadNonEmptyString(file, e));
      def.path = file.Resolve(p).string();
    } else {
      TY_ASSIGN_OR_RETURN(std::string v, internal::ReadString(file, e));
      if (e.key == "description") def.description = v;
      if (e.key == "account_name") def.account_name = v;
      if (e.key == "container_name") def.container_name = v;
      if (e.key == "endpoint") def.endpoint = TrimSlashes(v);
      if (e.key == "protocol") def.protocol = v;
      if (e.key == "bucket") def.bucket = v;
      if (e.key == "region") def.region = v;
    }
  }
  for (std::string_view key : def.type == "local" ? std::vector<std::string_view>{"path"}
                              : def.type == "azure_blob"
                                  ? std::vector<std::string_view>{"account_name", "container_name"}
                                  : std::vector<std::string_view>{"bucket"}) {
    if (top.Find(key) == nullptr) {
      return file.ErrorAt(top.mark(), "missing required key '" + std::string(key) + "' in " +
                                          def.type + " datastore '" + def.name + "'");
    }
  }
  if (Status valid = def.Validate(); !valid.ok()) {
    // Point at the field the check names when it is in the file.
    for (const Entry& e : top.entries()) {
      if (valid.message().find(": " + e.key + " ") != std::string::npos) {
        return file.ErrorAt(e.mark(), valid.message());
      }
    }
    return file.ErrorAt(top.mark(), valid.message());
  }
  return def;
}

}  // namespace

json DatastoreDefinition::ToJson(SecretMode mode) const {
  json j{{"name", name}, {"type", type}, {"description", description}, {"tags", tags}};
  auto secret = [&](const std::string& value) -> json {
    return mode == SecretMode::kRedact ? json("***") : json(value);
  };
  json credentials = json::object();
  if (type == "local") {
    j["path"] = path;
    return j;
  }
  j["endpoint"] = endpoint;
  if (type == "azure_blob") {
    j["account_name"] = account_name;
    j["container_name"] = container_name;
    j["protocol"] = protocol;
    if (!account_key.empty()) credentials["account_key"] = secret(account_key);
    if (!sas_token.empty()) credentials["sas_token"] = secret(sas_token);
  } else {
    j["bucket"] = bucket;
    j["region"] = region;
    if (!access_key_id.empty()) credentials["access_key_id"] = access_key_id;
    if (!secret_access_key.empty()) credentials["secret_access_key"] = secret(secret_access_key);
  }
  j["credentials"] = std::move(credentials);
  return j;
}

StatusOr<DatastoreDefinition> DatastoreDefinition::FromJson(const json& j) {
  if (!j.is_object()) return InvalidArgument("a datastore definition must be a JSON object");
  DatastoreDefinition d;
  for (const auto& [key, value] : j.items()) {
    if (std::find(kJsonKeys.begin(), kJsonKeys.end(), key) == kJsonKeys.end()) {
      return InvalidArgument(
          "unknown field '" + key + "' in datastore; allowed: " +
          Join(std::vector<std::string>(kJsonKeys.begin(), kJsonKeys.end()), ", "));
    }
    if (key == "tags") {
      if (!value.is_object()) return InvalidArgument("datastore.tags must be an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) return InvalidArgument("datastore.tags." + k + " must be a string");
        d.tags[k] = v.get<std::string>();
      }
      continue;
    }
    if (key == "credentials") {
      if (!value.is_object()) return InvalidArgument("datastore.credentials must be an object");
      for (const auto& [k, v] : value.items()) {
        std::string* field = k == "account_key"         ? &d.account_key
                             : k == "sas_token"         ? &d.sas_token
                             : k == "access_key_id"     ? &d.access_key_id
                             : k == "secret_access_key" ? &d.secret_access_key
                                                        : nullptr;
        if (field == nullptr) {
          return InvalidArgument("unknown field '" + k +
                                 "' in datastore.credentials; allowed: account_key, sas_token, "
                                 "access_key_id, secret_access_key");
        }
        if (!v.is_string())
          return InvalidArgument("datastore.credentials." + k + " must be a string");
        *field = v.get<std::string>();
      }
      continue;
    }
    if (!value.is_string()) return InvalidArgument("datastore." + key + " must be a string");
    const std::string v = value.get<std::string>();
    if (key == "name") d.name = v;
    if (key == "type") d.type = v;
    if (key == "description") d.description = v;
    if (key == "path") d.path = v;
    if (key == "account_name") d.account_name = v;
    if (key == "container_name") d.container_name = v;
    if (key == "endpoint") d.endpoint = TrimSlashes(v);
    if (key == "protocol") d.protocol = v;
    if (key == "bucket") d.bucket = v;
    if (key == "region") d.region = v;
  }
  TY_RETURN_IF_ERROR(d.Validate());
  return d;
}

Status DatastoreDefinition::Validate() const {
  if (!IsValidName(name)) {
    return InvalidArgument(
        "datastore name must be letters, digits, '.', '_' and '-' starting "
        "with a letter or digit, got '" +
        name + "'");
  }
  const std::string where = "datastore " + name + ": ";
  if (type != "local" && type != "azure_blob" && type != "s3") {
    return InvalidArgument(where + "type must be " + kTypes + ", got '" + type + "'");
  }
  for (const auto& [field, value] :
       {std::pair{"path", &path}, std::pair{"account_name", &account_name},
        std::pair{"container_name", &container_name}, std::pair{"protocol", &protocol},
        std::pair{"bucket", &bucket}, std::pair{"region", &region},
        std::pair{"endpoint", &endpoint}, std::pair{"credentials.account_key", &account_key},
        std::pair{"credentials.sas_token", &sas_token},
        std::pair{"credentials.access_key_id", &access_key_id},
        std::pair{"credentials.secret_access_key", &secret_access_key}}) {
    if (!Plain(*value)) {
      return InvalidArgument(where + field + " holds a control character");
    }
  }
  // An endpoint is shown in answers and signed as the host: it carries no user, password or
  // query (a SAS token belongs in credentials.sas_token).
  if (endpoint.find_first_of("@?#") != std::string::npos) {
    return InvalidArgument(where +
                           "endpoint must be a plain URL or storage suffix, without a user, a "
                           "query or a fragment (credentials go under credentials:)");
  }
  const bool local = type == "local", blob = type == "azure_blob", s3 = type == "s3";
  if (!local && !path.empty())
    return InvalidArgument(where + "path is a setting of local datastores");
  if (!blob && (!account_name.empty() || !container_name.empty() || !account_key.empty() ||
                !sas_token.empty())) {
    return InvalidArgument(where +
                           "account_name, container_name, account_key and sas_token are settings "
                           "of azure_blob datastores");
  }
  if (!s3 && (!bucket.empty() || !region.empty() || !access_key_id.empty() ||
              !secret_access_key.empty())) {
    return InvalidArgument(where +
                           "bucket, region, access_key_id and secret_access_key are settings of "
                           "s3 datastores");
  }
  if (local) {
    if (!endpoint.empty())
      return InvalidArgument(where + "endpoint is not a setting of local datastores");
    if (path.empty() || !std::filesystem::path(path).is_absolute()) {
      return InvalidArgument(where + "path must be an absolute folder, got '" + path + "'");
    }
    return Status::Ok();
  }
  if (!endpoint.empty() && !IsHttpUrl(endpoint) && !(blob && IsDnsSuffix(endpoint))) {
    return InvalidArgument(where + "endpoint must be " +
                           (blob ? "a storage suffix like core.windows.net or " : "") +
                           "an http:// or https:// URL, got '" + endpoint + "'");
  }
  if (blob) {
    if (!IsAccountName(account_name)) {
      return InvalidArgument(where +
                             "account_name must be 3-24 lower-case letters and digits, got '" +
                             account_name + "'");
    }
    if (!IsContainerName(container_name)) {
      return InvalidArgument(where +
                             "container_name must be 3-63 lower-case letters, digits and single "
                             "hyphens, starting and ending with a letter or digit, got '" +
                             container_name + "'");
    }
    if (protocol != "https" && protocol != "wasbs") {
      return InvalidArgument(where + "protocol must be https or wasbs, got '" + protocol + "'");
    }
    if (!account_key.empty() && !sas_token.empty()) {
      return InvalidArgument(where + "give either an account_key or a sas_token, not both");
    }
    return Status::Ok();
  }
  if (!IsBucketName(bucket)) {
    return InvalidArgument(where +
                           "bucket must be 3-63 lower-case letters, digits, '.' and '-', "
                           "starting and ending with a letter or digit, got '" +
                           bucket + "'");
  }
  if (!region.empty() && !std::all_of(region.begin(), region.end(),
                                      [](char c) { return IsLowerAlnum(c) || c == '-'; })) {
    return InvalidArgument(where + "region must be like us-east-1, got '" + region + "'");
  }
  if (access_key_id.empty() != secret_access_key.empty()) {
    return InvalidArgument(where +
                           "the credentials need both access_key_id and secret_access_key, or "
                           "neither (a public bucket)");
  }
  return Status::Ok();
}

bool DatastoreDefinition::SameSettings(const DatastoreDefinition& o) const {
  return type == o.type && description == o.description && tags == o.tags && path == o.path &&
         account_name == o.account_name && container_name == o.container_name &&
         protocol == o.protocol && bucket == o.bucket && region == o.region &&
         endpoint == o.endpoint && account_key == o.account_key && sas_token == o.sas_token &&
         access_key_id == o.access_key_id && secret_access_key == o.secret_access_key;
}

std::map<std::string, std::string*> DatastoreDefinition::Secrets() {
  std::map<std::string, std::string*> out;
  if (!account_key.empty()) out["account_key"] = &account_key;
  if (!sas_token.empty()) out["sas_token"] = &sas_token;
  if (!secret_access_key.empty()) out["secret_access_key"] = &secret_access_key;
  return out;
}

std::string DatastoreDefinition::BlobServiceUrl() const {
  if (IsHttpUrl(endpoint)) return endpoint;
  return "https://" + account_name + ".blob." + (endpoint.empty() ? "core.windows.net" : endpoint);
}

std::string DatastoreDefinition::S3ServiceUrl() const {
  if (!endpoint.empty()) return endpoint;
  return "https://s3." + (region.empty() ? std::string("us-east-1") : region) + ".amazonaws.com";
}

std::string DatastoreDefinition::Location() const {
  if (type == "local") return path;
  if (type == "azure_blob") return BlobServiceUrl() + "/" + container_name;
  return S3ServiceUrl() + "/" + bucket;
}

DatastoreDefinition WorkspaceBlobStore(const std::string& folder) {
  DatastoreDefinition d;
  d.name = std::string(kWorkspaceBlobStore);
  d.type = "local";
  d.description = "the workspace's own datastore";
  d.path = folder;
  return d;
}

StatusOr<DatastoreDefinition> ParseDatastoreYaml(const std::string& yaml,
                                                 const std::string& file_name,
                                                 const std::string& base_dir,
                                                 const ParseOptions& options) {
  SourceFile file(file_name, base_dir, options);
  try {
    TY_ASSIGN_OR_RETURN(YAML::Node root, internal::LoadMappingDocument(file, yaml, "datastore"));
    return ParseDatastore(file, root);
  } catch (const YAML::Exception& e) {
    return file.ErrorAt(e.mark, "cannot read YAML: " + e.msg);
  }
}

StatusOr<DatastoreDefinition> ParseDatastoreFile(const std::string& path,
                                                 const ParseOptions& options) {
  StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status().WithPrefix("datastore file " + path);
  const std::filesystem::path absolute = std::filesystem::absolute(path);
  return ParseDatastoreYaml(*text, path, absolute.parent_path().string(), options);
}

}  // namespace trainyard::spec

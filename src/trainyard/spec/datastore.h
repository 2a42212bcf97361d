#pragma once

// Datastores: named places where data lives, which jobs read inputs from and write outputs to
// (docs/data.md). `local` is a folder on the daemon's machine (or a shared file system every node
// mounts at the same path); `azure_blob` is a container of an Azure Storage account (or of
// Azurite); `s3` is a bucket of an S3-compatible service (AWS, MinIO, Ceph). Created from YAML
// files in the cloud service's CLI v2 format (`type: azure_blob`, `account_name`,
// `container_name`, `credentials: {account_key | sas_token}`) or its v1 SDK's
// `Datastore.register_azure_blob_container`.

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "trainyard/common/status.h"
#include "trainyard/spec/definition.h"

namespace trainyard::spec {

// The datastore every workspace has: a local folder inside the workspace.
inline constexpr std::string_view kWorkspaceBlobStore = "workspaceblobstore";

struct DatastoreDefinition {
  std::string name;
  std::string type;  // "local" | "azure_blob" | "s3"
  std::string description;
  std::map<std::string, std::string> tags;

  // local: the absolute folder on the daemon's machine.
  std::string path;

  // azure_blob: the account and container, and the blob service's address. `endpoint` is either
  // the storage suffix as the cloud service writes it ("core.windows.net": the service is
  // https://ACCOUNT.blob.core.windows.net) or a whole URL of the blob service, as for Azurite
  // ("http://127.0.0.1:10000/devstoreaccount1").
  std::string account_name;
  std::string container_name;
  std::string protocol = "https";  // "https" | "wasbs" (same transport; kept as written)
  // s3: the bucket, its region and the service's URL (empty: AWS's for the region).
  std::string bucket;
  std::string region;
  std::string endpoint;

  // Credentials. Secrets (account_key, sas_token, secret_access_key) are sealed (SecretBox) once
  // the daemon has them; none is ever in an API answer. Absent credentials mean anonymous access
  // (a public container or bucket).
  std::string account_key;        // azure_blob: the account's base64 key, or
  std::string sas_token;          // azure_blob: a SAS token ("sv=...&sig=...", no leading '?')
  std::string access_key_id;      // s3 (not a secret: shown in answers)
  std::string secret_access_key;  // s3

  // {"name", "type", "description", "tags"} plus the type's fields; the credentials under
  // "credentials" ({account_key} | {sas_token} | {access_key_id, secret_access_key}), secrets as
  // `mode` says ("***" under kRedact).
  nlohmann::json ToJson(SecretMode mode) const;
  // InvalidArgument naming the field for a bad or unknown one; then Validate().
  static StatusOr<DatastoreDefinition> FromJson(const nlohmann::json& j);
  // Checks the fields of the type: a valid name, an absolute path for local; an account name
  // (3-24 lower-case letters and digits), a container name (3-63: lower-case letters, digits and
  // single '-') and at most one of account_key and sas_token for azure_blob; a bucket name
  // (3-63: lower-case letters, digits, '.', '-') and both halves of a key pair or neither for s3;
  // an http(s) URL or a storage suffix as endpoint; no field of another type. InvalidArgument
  // naming the datastore and the field otherwise.
  Status Validate() const;
  // True when every setting but the name is the same (secrets compared as given: callers compare
  // unsealed ones).
  bool SameSettings(const DatastoreDefinition& other) const;

  // The secrets this definition carries, by field name ("account_key", ...), empty ones left out.
  std::map<std::string, std::string*> Secrets();

  // azure_blob: the blob service's URL without a trailing '/' ("https://acc.blob.core.windows.net"
  // or the endpoint URL as given).
  std::string BlobServiceUrl() const;
  // s3: the service's URL without a trailing '/' (the endpoint, or
  // https://s3.REGION.amazonaws.com).
  std::string S3ServiceUrl() const;
  // Where the data is, for people: the folder, the container's URL or the bucket's.
  std::string Location() const;
};

// The workspace's default datastore: `local` at `folder`.
DatastoreDefinition WorkspaceBlobStore(const std::string& folder);

// Parses a datastore YAML file (docs/data.md). Credentials may be `${{env.VAR}}` references.
// Errors are InvalidArgument "FILE:LINE:COL: message".
StatusOr<DatastoreDefinition> ParseDatastoreFile(const std::string& path,
                                                 const ParseOptions& options = {});
StatusOr<DatastoreDefinition> ParseDatastoreYaml(const std::string& yaml,
                                                 const std::string& file_name,
                                                 const std::string& base_dir,
                                                 const ParseOptions& options = {});

}  // namespace trainyard::spec

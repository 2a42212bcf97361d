#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "trainyard/assets/object_client.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/spec/datastore.h"
#include "trainyard/store/store.h"

namespace trainyard::assets {

// The datastores of a workspace: what `datastore create|list|show|delete` and inputs and
// outputs use. `workspaceblobstore` always exists (a local folder of the workspace) and cannot be
// replaced or deleted. Secrets are sealed with the workspace's SecretBox before they are stored
// and unsealed only to open a client.
//
// Thread-safe. Borrows `store` and `secrets`, which must outlive it.
class Datastores {
 public:
  // `workspace_blob_dir` is workspaceblobstore's folder, created when missing.
  Datastores(store::Store& store, const SecretBox& secrets,
             std::filesystem::path workspace_blob_dir);

  // Creates `def` (secrets in plain text), or replaces the datastore of that name. Before
  // anything is stored the definition is checked (Validate) and so is the access it gives, with
  // one authenticated listing (ObjectClient::Check): a wrong key fails here, not in a run.
  // `outcome` receives "created", "updated" or "unchanged". Errors: InvalidArgument for a bad
  // definition or for workspaceblobstore; the Check's PermissionDenied / NotFound / Unavailable.
  // Returns the stored definition (secrets sealed).
  StatusOr<spec::DatastoreDefinition> Put(spec::DatastoreDefinition def, std::string* outcome);

  // The definition with its secrets sealed. NotFound "datastore 'NAME' does not exist; the
  // workspace has: ...".
  StatusOr<spec::DatastoreDefinition> Get(const std::string& name);
  // workspaceblobstore first, then the others by name; secrets sealed.
  StatusOr<std::vector<spec::DatastoreDefinition>> List();
  // NotFound for an unknown name; InvalidArgument for workspaceblobstore.
  Status Delete(const std::string& name);

  // A client of the datastore `name` with its secrets unsealed. Errors as Get; Internal when a
  // stored secret does not unseal (the workspace key changed).
  StatusOr<std::unique_ptr<ObjectClient>> Open(const std::string& name);

  const std::filesystem::path& workspace_blob_dir() const { return workspace_blob_dir_; }

 private:
  StatusOr<spec::DatastoreDefinition> Unseal(spec::DatastoreDefinition def) const;

  store::Store& store_;
  const SecretBox& secrets_;
  const std::filesystem::path workspace_blob_dir_;
};

}  // namespace trainyard::assets

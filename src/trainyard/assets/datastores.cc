#include "trainyard/assets/datastores.h"

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard::assets {

Datastores::Datastores(store::Store& store, const SecretBox& secrets,
                       std::filesystem::path workspace_blob_dir)
    : store_(store), secrets_(secrets), workspace_blob_dir_(std::move(workspace_blob_dir)) {}

StatusOr<spec::DatastoreDefinition> Datastores::Put(spec::DatastoreDefinition def,
                                                    std::string* outcome) {
  TY_RETURN_IF_ERROR(def.Validate());
  if (def.name == spec::kWorkspaceBlobStore) {
    return InvalidArgument(
        "datastore workspaceblobstore is the workspace's own and cannot be "
        "replaced; give yours another name");
  }
  for (auto& [field, value] : def.Secrets()) {
    if (SecretBox::IsSealed(*value)) {
      return InvalidArgument("datastore " + def.name + ": credentials." + field +
                             " is a sealed value; give the secret itself");
    }
  }
  TY_ASSIGN_OR_RETURN(std::unique_ptr<ObjectClient> client, OpenObjectClient(def));
  if (Status st = client->Check(); !st.ok()) {
    return Status(st.code(), "datastore " + def.name + " was not created: " + st.message());
  }
  // Compare with what is stored (unsealed) to tell an update from a repeat.
  auto before = store_.GetDatastore(def.name);
  std::int64_t created_at = NowMillis();
  *outcome = "created";
  if (before.ok()) {
    created_at = before->created_at;
    *outcome = "updated";
    auto parsed = nlohmann::json::parse(before->definition_json, nullptr, false);
    if (auto old = spec::DatastoreDefinition::FromJson(parsed); old.ok()) {
      if (auto plain = Unseal(*old); plain.ok() && plain->SameSettings(def)) *outcome = "unchanged";
    }
  }
  spec::DatastoreDefinition sealed = def;
  for (auto& [field, value] : sealed.Secrets()) *value = secrets_.Seal(*value);
  if (*outcome != "unchanged") {
    store::DatastoreRecord rec{sealed.name, sealed.type,
                               sealed.ToJson(spec::SecretMode::kAsIs).dump(), created_at,
                               NowMillis()};
    TY_RETURN_IF_ERROR(store_.PutDatastore(rec));
  }
  return sealed;
}

StatusOr<spec::DatastoreDefinition> Datastores::Get(const std::string& name) {
  if (name == spec::kWorkspaceBlobStore) {
    TY_RETURN_IF_ERROR(MakeDirs(workspace_blob_dir_));
    return spec::WorkspaceBlobStore(workspace_blob_dir_.string());
  }
  auto rec = store_.GetDatastore(name);
  if (!rec.ok()) {
    if (rec.status().code() != StatusCode::kNotFound) return rec.status();
    std::vector<std::string> names;
    if (auto all = List(); all.ok()) {
      for (const auto& d : *all) names.push_back(d.name);
    }
    return NotFound("datastore '" + name +
                    "' does not exist; the workspace has: " + Join(names, ", "));
  }
  auto parsed = nlohmann::json::parse(rec->definition_json, nullptr, false);
  auto def = spec::DatastoreDefinition::FromJson(parsed);
  if (!def.ok()) return def.status().WithPrefix("stored datastore '" + name + "'");
  return def;
}

StatusOr<std::vector<spec::DatastoreDefinition>> Datastores::List() {
  TY_ASSIGN_OR_RETURN(std::vector<store::DatastoreRecord> recs, store_.ListDatastores());
  std::vector<spec::DatastoreDefinition> out;
  out.push_back(spec::WorkspaceBlobStore(workspace_blob_dir_.string()));
  for (const auto& rec : recs) {
    auto def = spec::DatastoreDefinition::FromJson(
        nlohmann::json::parse(rec.definition_json, nullptr, false));
    if (!def.ok()) return def.status().WithPrefix("stored datastore '" + rec.name + "'");
    out.push_back(std::move(*def));
  }
  return out;
}

Status Datastores::Delete(const std::string& name) {
  if (name == spec::kWorkspaceBlobStore) {
    return InvalidArgument(
        "datastore workspaceblobstore is the workspace's own and cannot be "
        "deleted");
  }
  return store_.DeleteDatastore(name);
}

StatusOr<std::unique_ptr<ObjectClient>> Datastores::Open(const std::string& name) {
  TY_ASSIGN_OR_RETURN(spec::DatastoreDefinition def, Get(name));
  TY_ASSIGN_OR_RETURN(spec::DatastoreDefinition plain, Unseal(std::move(def)));
  return OpenObjectClient(plain);
}

StatusOr<spec::DatastoreDefinition> Datastores::Unseal(spec::DatastoreDefinition def) const {
  for (auto& [field, value] : def.Secrets()) {
    auto plain = secrets_.Unseal(*value);
    if (!plain.ok()) {
      return Internal("datastore " + def.name + ": the stored " + field +
                      " does not unseal with this workspace's key; create the datastore again");
    }
    *value = std::move(*plain);
  }
  return def;
}

}  // namespace trainyard::assets

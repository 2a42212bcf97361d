#include "trainyard/envbuild/environment_registry.h"

#include "trainyard/common/mutex.h"
#include "trainyard/common/util.h"
#include "trainyard/envbuild/image_builder.h"

namespace trainyard::envbuild {
namespace {

// The next integer version after the highest integer version among `records`.
std::string NextVersion(const std::vector<store::EnvironmentRecord>& records) {
  long long max = 0;
  for (const auto& r : records) {
    char* end = nullptr;
    long long v = std::strtoll(r.version.c_str(), &end, 10);
    if (end != nullptr && *end == '\0' && v > max) max = v;
  }
  return std::to_string(max + 1);
}

}  // namespace

StatusOr<store::EnvironmentRecord> EnvironmentRegistry::Register(spec::EnvironmentDefinition def) {
  if (!IsValidName(def.name)) {
    return InvalidArgument("invalid environment name '" + def.name +
                           "': use letters, digits, '.', '_' and '-', starting with a letter "
                           "or digit");
  }
  if (!def.version.empty() && !IsValidName(def.version)) {
    return InvalidArgument("invalid environment version '" + def.version + "'");
  }
  // Round-trip through JSON validation so stored definitions are always loadable.
  TY_ASSIGN_OR_RETURN(def,
                      spec::EnvironmentDefinition::FromJson(def.ToJson(spec::SecretMode::kPlain)));
  MutexLock lock(mu_);
  const std::string hash = def.DefinitionHash();
  TY_ASSIGN_OR_RETURN(auto versions, store_.ListEnvironments(def.name));
  spec::EnvironmentDefinition sealed = def;
  if (sealed.registry && !sealed.registry->password.empty()) {
    sealed.registry->password = secrets_.Seal(sealed.registry->password);
  }
  // The same definition again: the existing version, with its password rotated when the new
  // registration brings a different one (the password is not part of the definition hash). No
  // password keeps the stored one: a client re-registering what it fetched never saw it.
  auto reuse = [&](store::EnvironmentRecord rec) -> StatusOr<store::EnvironmentRecord> {
    if (def.registry && !def.registry->password.empty()) {
      auto stored = ResolveRecord(rec);
      if (stored.ok() && stored->registry && stored->registry->password != def.registry->password) {
        sealed.version = rec.version;
        rec.definition_json = sealed.ToJson(spec::SecretMode::kAsIs).dump();
        TY_RETURN_IF_ERROR(
            store_.UpdateEnvironmentDefinition(rec.name, rec.version, rec.definition_json));
      }
    }
    return rec;
  };
  if (def.version.empty()) {
    if (!versions.empty() && versions.back().definition_hash == hash) return reuse(versions.back());
    def.version = NextVersion(versions);
    sealed.version = def.version;
  } else {
    for (const auto& r : versions) {
      if (r.version != def.version) continue;
      if (r.definition_hash == hash) return reuse(r);
      return AlreadyExists("environment " + def.name + ":" + def.version +
                           " exists with a different definition; leave out the version to "
                           "register it as the next one");
    }
  }
  store::EnvironmentRecord rec;
  rec.name = def.name;
  rec.version = def.version;
  rec.definition_json = sealed.ToJson(spec::SecretMode::kAsIs).dump();
  rec.definition_hash = hash;
  rec.image_hash = envbuild::PlanImage(def).image_hash;
  rec.created_at = NowMillis();
  TY_RETURN_IF_ERROR(store_.InsertEnvironment(rec));
  return rec;
}

StatusOr<spec::EnvironmentDefinition> EnvironmentRegistry::Resolve(const std::string& name,
                                                                   const std::string& version) {
  TY_ASSIGN_OR_RETURN(store::EnvironmentRecord rec, store_.GetEnvironment(name, version));
  return ResolveRecord(rec);
}

StatusOr<spec::EnvironmentDefinition> EnvironmentRegistry::ResolveRecord(
    const store::EnvironmentRecord& rec) {
  const std::string& name = rec.name;
  auto j = nlohmann::json::parse(rec.definition_json, nullptr, false);
  if (j.is_discarded()) return Internal("stored environment " + name + " is not valid JSON");
  TY_ASSIGN_OR_RETURN(spec::EnvironmentDefinition def, spec::EnvironmentDefinition::FromJson(j));
  if (def.registry && SecretBox::IsSealed(def.registry->password)) {
    TY_ASSIGN_OR_RETURN(def.registry->password, secrets_.Unseal(def.registry->password));
  }
  return def;
}

nlohmann::json EnvironmentRegistry::ToApiJson(const store::EnvironmentRecord& rec) {
  nlohmann::json out{{"name", rec.name},
                     {"version", rec.version},
                     {"definition_hash", rec.definition_hash},
                     {"image_hash", rec.image_hash},
                     {"created_at", FormatTimeIso(rec.created_at)}};
  auto j = nlohmann::json::parse(rec.definition_json, nullptr, false);
  if (!j.is_discarded()) {
    auto def = spec::EnvironmentDefinition::FromJson(j);
    if (def.ok()) {
      out["definition"] = def->ToJson(spec::SecretMode::kRedact);
      out["image"] = envbuild::PlanImage(*def).final_image;
    }
  }
  return out;
}

}  // namespace trainyard::envbuild

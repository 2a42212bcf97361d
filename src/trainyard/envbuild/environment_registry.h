#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "trainyard/common/mutex.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/status.h"
#include "trainyard/spec/definition.h"
#include "trainyard/store/store.h"

namespace trainyard::envbuild {

// Registers environments with versions. Same definition under the same name → the existing
// version; a changed one → the next version. Secrets are sealed before they are stored.
class EnvironmentRegistry {
 public:
  EnvironmentRegistry(store::Store& store, const SecretBox& secrets)
      : store_(store), secrets_(secrets) {}

  // `def.version` empty: the latest version when the definition is unchanged, else the next
  // integer version. Given: AlreadyExists when that version holds a different definition.
  StatusOr<store::EnvironmentRecord> Register(spec::EnvironmentDefinition def);
  // The definition of a stored environment with its password unsealed (for building only).
  StatusOr<spec::EnvironmentDefinition> Resolve(const std::string& name,
                                                const std::string& version);
  // Converts a stored record's definition to API JSON (password redacted).
  static nlohmann::json ToApiJson(const store::EnvironmentRecord& rec);

 private:
  StatusOr<spec::EnvironmentDefinition> ResolveRecord(const store::EnvironmentRecord& rec);

  store::Store& store_;
  const SecretBox& secrets_;
  Mutex mu_;  // serialises Register's read-then-insert
};

}  // namespace trainyard::envbuild

#pragma once

// The snapshots the workspace database refers to: the roots of a snapshot garbage collection
// (cas/gc.h) and the counts `snapshot list` shows. Read with a read-only connection of its own,
// so it is safe beside a running daemon and never creates or migrates the database.

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>

#include "trainyard/common/status.h"

namespace trainyard::store {

// Who refers to each snapshot id, and how many times.
struct SnapshotReferences {
  std::map<std::string, std::uint64_t> runs;
  std::map<std::string, std::uint64_t> environments;
  std::map<std::string, std::uint64_t> assets;  // data assets, models, components

  // Every id referred to.
  std::set<std::string> Ids() const;
};

// Reads them from the database at `database`: a run refers to its code snapshot and to any
// snapshot id in its request (an inline environment's build context), an environment to any
// snapshot id in its definition, a data asset, model or component to any in its JSON. A missing
// database, or one whose tables do not exist yet, refers to none. Internal naming the database when
// it cannot be opened or read.
StatusOr<SnapshotReferences> ReadSnapshotReferences(const std::filesystem::path& database);

}  // namespace trainyard::store

#include "trainyard/store/snapshot_references.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <string_view>

#include "trainyard/common/sha256.h"
#include "trainyard/common/sqlite.h"
#include "trainyard/common/util.h"

namespace trainyard::store {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kIdLength = 64;

// Every maximal run of exactly 64 lower-case hex digits in `text` (snapshot ids in JSON).
void CollectIds(std::string_view text, std::set<std::string>* ids) {
  std::size_t i = 0;
  while (i < text.size()) {
    if (!IsLowerHexDigit(text[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < text.size() && IsLowerHexDigit(text[j])) ++j;
    if (j - i == kIdLength) ids->insert(std::string(text.substr(i, kIdLength)));
    i = j;
  }
}

// Runs `sql` on `db`, calling `row` for each result row. A table that does not exist yet (a
// database the daemon has not migrated) gives no rows.
Status QueryRows(sqlite::Connection& db, const char* sql,
                 const std::function<void(const sqlite::Statement&)>& row) {
  sqlite::Statement q = db.Prepare(sql);
  if (!q.ok()) {
    if (StartsWith(sqlite3_errmsg(db.raw()), "no such table")) return Status::Ok();
    return q.Error("read");
  }
  int rc;
  while ((rc = q.Step()) == SQLITE_ROW) row(q);
  if (rc != SQLITE_DONE) return q.Error("read");
  return Status::Ok();
}

}  // namespace

std::set<std::string> SnapshotReferences::Ids() const {
  std::set<std::string> ids;
  for (const auto& [id, n] : runs) ids.insert(id);
  for (const auto& [id, n] : environments) ids.insert(id);
  for (const auto& [id, n] : assets) ids.insert(id);
  return ids;
}

StatusOr<SnapshotReferences> ReadSnapshotReferences(const fs::path& database) {
  SnapshotReferences refs;
  struct stat st {};
  if (::stat(database.c_str(), &st) != 0 && errno == ENOENT) return refs;
  TY_ASSIGN_OR_RETURN(
      std::unique_ptr<sqlite::Connection> db,
      sqlite::Connection::Open(database.string(), SQLITE_OPEN_READONLY, "the workspace database"));
  sqlite3_busy_timeout(db->raw(), 10000);
  TY_RETURN_IF_ERROR(
      QueryRows(*db, "SELECT snapshot_id, request_json FROM runs", [&](const sqlite::Statement& q) {
        std::set<std::string> ids;
        CollectIds(q.TextView(0), &ids);
        CollectIds(q.TextView(1), &ids);
        for (const std::string& id : ids) ++refs.runs[id];
      }));
  TY_RETURN_IF_ERROR(
      QueryRows(*db, "SELECT definition_json FROM environments", [&](const sqlite::Statement& q) {
        std::set<std::string> ids;
        CollectIds(q.TextView(0), &ids);
        for (const std::string& id : ids) ++refs.environments[id];
      }));
  TY_RETURN_IF_ERROR(
      QueryRows(*db, "SELECT asset_json FROM assets", [&](const sqlite::Statement& q) {
        std::set<std::string> ids;
        CollectIds(q.TextView(0), &ids);
        for (const std::string& id : ids) ++refs.assets[id];
      }));
  return refs;
}

}  // namespace trainyard::store

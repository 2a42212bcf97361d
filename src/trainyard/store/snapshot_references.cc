#include "trainyard/store/snapshot_references.h"

#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <functional>
#include <memory>
#include <string_view>

#include "trainyard/common/sha256.h"
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
Status QueryRows(sqlite3* db, const fs::path& path, const char* sql,
                 const std::function<void(sqlite3_stmt*)>& row) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) {
    std::string msg = sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    if (StartsWith(msg, "no such table")) return Status::Ok();
    return Internal("cannot read the workspace database " + path.string() + ": " + msg);
  }
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) row(stmt);
  std::string msg = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) {
    return Internal("cannot read the workspace database " + path.string() + ": " + msg);
  }
  return Status::Ok();
}

std::string_view Column(sqlite3_stmt* stmt, int i) {
  const unsigned char* p = sqlite3_column_text(stmt, i);
  if (p == nullptr) return {};
  return {reinterpret_cast<const char*>(p),
          static_cast<std::size_t>(sqlite3_column_bytes(stmt, i))};
}

}  // namespace

std::set<std::string> SnapshotReferences::Ids() const {
  std::set<std::string> ids;
  for (const auto& [id, n] : runs) ids.insert(id);
  for (const auto& [id, n] : environments) ids.insert(id);
  return ids;
}

StatusOr<SnapshotReferences> ReadSnapshotReferences(const fs::path& database) {
  SnapshotReferences refs;
  struct stat st {};
  if (::stat(database.c_str(), &st) != 0 && errno == ENOENT) return refs;
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(database.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, sqlite3_close_v2);
  if (rc != SQLITE_OK) {
    return Internal("cannot open the workspace database " + database.string() + ": " +
                    (raw ? sqlite3_errmsg(raw) : "out of memory"));
  }
  sqlite3_busy_timeout(db.get(), 10000);
  TY_RETURN_IF_ERROR(QueryRows(db.get(), database, "SELECT snapshot_id, request_json FROM runs",
                               [&](sqlite3_stmt* s) {
                                 std::set<std::string> ids;
                                 CollectIds(Column(s, 0), &ids);
                                 CollectIds(Column(s, 1), &ids);
                                 for (const std::string& id : ids) ++refs.runs[id];
                               }));
  TY_RETURN_IF_ERROR(QueryRows(db.get(), database, "SELECT definition_json FROM environments",
                               [&](sqlite3_stmt* s) {
                                 std::set<std::string> ids;
                                 CollectIds(Column(s, 0), &ids);
                                 for (const std::string& id : ids) ++refs.environments[id];
                               }));
  return refs;
}

}  // namespace trainyard::store

#include "trainyard/common/sqlite.h"

#include <utility>

#include "trainyard/common/util.h"

namespace trainyard::sqlite {

Statement::~Statement() {
  if (stmt_ == nullptr) return;
  if (owned_) {
    sqlite3_finalize(stmt_);
  } else {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

Statement& Statement::Bind(int i, std::string_view v) {
  sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  return *this;
}

Statement& Statement::Bind(int i, std::int64_t v) {
  sqlite3_bind_int64(stmt_, i, v);
  return *this;
}

Statement& Statement::Bind(int i, const std::optional<std::int64_t>& v) {
  return v ? Bind(i, *v) : BindNull(i);
}

Statement& Statement::BindNull(int i) {
  sqlite3_bind_null(stmt_, i);
  return *this;
}

Statement& Statement::BindBlob(int i, std::string_view v) {
  sqlite3_bind_blob64(stmt_, i, v.data(), v.size(), SQLITE_STATIC);
  return *this;
}

int Statement::Step() { return stmt_ == nullptr ? SQLITE_MISUSE : sqlite3_step(stmt_); }

std::string_view Statement::TextView(int col) const {
  const unsigned char* p = sqlite3_column_text(stmt_, col);
  if (p == nullptr) return {};
  return {reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col))};
}

std::string_view Statement::Blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  if (p == nullptr) return {};
  return {static_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt_, col))};
}

Status Statement::Error(std::string_view what) const { return conn_->Error(what); }

StatusOr<std::unique_ptr<Connection>> Connection::Open(const std::string& path, int flags,
                                                       std::string label) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return Unavailable("cannot open " + label + " " + path + ": " + msg);
  }
  return std::unique_ptr<Connection>(new Connection(db, std::move(label)));
}

Connection::~Connection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close_v2(db_);
}

Statement Connection::Prepare(const char* sql) {
  if (auto it = cache_.find(sql); it != cache_.end()) return Statement(this, it->second, false);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return Statement(this, nullptr, false);
  }
  cache_.emplace(sql, stmt);
  return Statement(this, stmt, false);
}

Statement Connection::PrepareOnce(const std::string& sql) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &stmt, nullptr) !=
      SQLITE_OK) {
    sqlite3_finalize(stmt);
    return Statement(this, nullptr, true);
  }
  return Statement(this, stmt, true);
}

Status Connection::Exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    return Internal(label_ + ": " + msg);
  }
  return Status::Ok();
}

Status Connection::Error(std::string_view what) const {
  return Internal(label_ + ": " + std::string(what) + ": " + sqlite3_errmsg(db_));
}

Status Connection::Migrate(std::span<const char* const> migrations) {
  TY_RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
           "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"));
  std::int64_t current = 0;
  {
    Statement q = Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    if (q.Step() != SQLITE_ROW) return q.Error("read the schema version");
    current = q.Int(0);
  }
  const auto known = static_cast<std::int64_t>(migrations.size());
  if (current > known) {
    return FailedPrecondition(label_ + " has schema version " + std::to_string(current) +
                              " but this trainyard knows only up to " + std::to_string(known) +
                              "; upgrade trainyard");
  }
  for (std::int64_t v = current; v < known; ++v) {
    TY_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = Exec(migrations[static_cast<size_t>(v)]);
    if (s.ok()) {
      Statement ins = Prepare("INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)");
      ins.Bind(1, v + 1).Bind(2, NowMillis());
      if (ins.Step() != SQLITE_DONE) s = ins.Error("record migration");
    }
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s.WithPrefix("migration " + std::to_string(v + 1));
    }
    TY_RETURN_IF_ERROR(Exec("COMMIT"));
  }
  return Status::Ok();
}

}  // namespace trainyard::sqlite

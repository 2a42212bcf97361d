#pragma once

// The one SQLite layer of trainyard: a connection with its prepared statements cached, the
// statements' binding and reading, and versioned migrations. The metadata store
// (store/sqlite_store.cc) and the tracking store (tracking/series_store.cc) both use it.
//
// Not thread-safe: a Connection is used by one thread at a time (its owner's mutex).

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "trainyard/common/status.h"

namespace trainyard::sqlite {

class Connection;

// A prepared statement in use. A cached one is reset, its bindings cleared, when this goes; an
// uncached one is finalised.
class Statement {
 public:
  Statement(Connection* conn, sqlite3_stmt* stmt, bool owned)
      : conn_(conn), stmt_(stmt), owned_(owned) {}
  ~Statement();
  Statement(Statement&& other) noexcept
      : conn_(other.conn_), stmt_(other.stmt_), owned_(other.owned_) {
    other.stmt_ = nullptr;
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement& operator=(Statement&&) = delete;

  // False when the SQL did not prepare; Step() then fails and Error() says why.
  bool ok() const { return stmt_ != nullptr; }

  // Text is copied: the value need not outlive the statement.
  Statement& Bind(int i, std::string_view v);
  Statement& Bind(int i, std::int64_t v);
  Statement& Bind(int i, const std::optional<std::int64_t>& v);  // NULL when absent
  Statement& BindNull(int i);
  // Not copied: `v` must stay valid until the last Step().
  Statement& BindBlob(int i, std::string_view v);

  // SQLITE_ROW, SQLITE_DONE or an error code (SQLITE_MISUSE when not prepared).
  int Step();
  std::int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  std::optional<std::int64_t> OptInt(int col) const {
    if (IsNull(col)) return std::nullopt;
    return Int(col);
  }
  std::string Text(int col) const { return std::string(TextView(col)); }
  // Valid until the next Step() or the statement's end.
  std::string_view TextView(int col) const;
  std::string_view Blob(int col) const;

  Status Error(std::string_view what) const;

  sqlite3_stmt* raw() const { return stmt_; }

 private:
  Connection* conn_;
  sqlite3_stmt* stmt_;
  bool owned_;
};

class Connection {
 public:
  // Opens `path` with `flags` (SQLITE_OPEN_*). `label` names the database in every error
  // ("the workspace database", "the tracking database"). Unavailable when it cannot be opened.
  static StatusOr<std::unique_ptr<Connection>> Open(const std::string& path, int flags,
                                                    std::string label);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // A statement of SQL text that lives as long as the program (a string literal): prepared once
  // and cached by the text's address. A statement is in use by one caller at a time.
  Statement Prepare(const char* sql);
  // A statement of SQL made at run time (e.g. a list of placeholders): prepared each time.
  Statement PrepareOnce(const std::string& sql);
  // Runs one or more statements that return no rows.
  Status Exec(const char* sql);
  // Rows changed by the last INSERT, UPDATE or DELETE.
  std::int64_t Changes() const { return sqlite3_changes64(db_); }
  // Internal: "<label>: <what>: <SQLite's message>".
  Status Error(std::string_view what) const;

  // Brings the schema to version migrations.size(): entry i (SQL) takes it from version i to
  // i + 1, each in its own transaction, recorded in a `schema_migrations` table. A database of
  // a later version than this program knows is FailedPrecondition (never downgraded).
  Status Migrate(std::span<const char* const> migrations);

  sqlite3* raw() const { return db_; }

 private:
  Connection(sqlite3* db, std::string label) : db_(db), label_(std::move(label)) {}

  sqlite3* db_;
  std::string label_;
  std::unordered_map<const char*, sqlite3_stmt*> cache_;
};

}  // namespace trainyard::sqlite

#include <sqlite3.h>

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "trainyard/common/json_writer.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/sqlite.h"
#include "trainyard/common/util.h"
#include "trainyard/store/store.h"

namespace trainyard::store {

std::string_view RunStatusName(RunStatus s) {
  switch (s) {
    case RunStatus::kNotStarted:
      return "NotStarted";
    case RunStatus::kQueued:
      return "Queued";
    case RunStatus::kPreparing:
      return "Preparing";
    case RunStatus::kStarting:
      return "Starting";
    case RunStatus::kRunning:
      return "Running";
    case RunStatus::kFinalizing:
      return "Finalizing";
    case RunStatus::kCancelRequested:
      return "CancelRequested";
    case RunStatus::kCompleted:
      return "Completed";
    case RunStatus::kFailed:
      return "Failed";
    case RunStatus::kCanceled:
      return "Canceled";
  }
  return "Unknown";
}

std::optional<RunStatus> ParseRunStatus(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(RunStatus::kCanceled); ++i) {
    auto s = static_cast<RunStatus>(i);
    if (RunStatusName(s) == name) return s;
  }
  return std::nullopt;
}

std::string AssetKindName(std::string_view kind) {
  return kind == "data" ? "data asset" : std::string(kind);
}

bool IsTerminal(RunStatus s) {
  return s == RunStatus::kCompleted || s == RunStatus::kFailed || s == RunStatus::kCanceled;
}

std::int64_t RunRecord::TimeOf(RunStatus s) const {
  for (const auto& t : transitions) {
    if (t.status == s) return t.at;
  }
  return 0;
}

namespace {

// Versioned migrations: entry i brings the schema to version i + 1. Never edit a shipped entry;
// append a new one.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE experiments (
  name        TEXT PRIMARY KEY,
  created_at  INTEGER NOT NULL
);
CREATE TABLE environments (
  name             TEXT NOT NULL,
  version          TEXT NOT NULL,
  definition_json  TEXT NOT NULL,
  definition_hash  TEXT NOT NULL,
  image_hash       TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  seq              INTEGER NOT NULL,
  PRIMARY KEY (name, version)
);
CREATE TABLE runs (
  id                   TEXT PRIMARY KEY,
  experiment           TEXT NOT NULL REFERENCES experiments(name),
  display_name         TEXT NOT NULL DEFAULT '',
  description          TEXT NOT NULL DEFAULT '',
  compute              TEXT NOT NULL,
  status               TEXT NOT NULL,
  request_json         TEXT NOT NULL,
  snapshot_id          TEXT NOT NULL DEFAULT '',
  environment_name     TEXT NOT NULL DEFAULT '',
  environment_version  TEXT NOT NULL DEFAULT '',
  image_hash           TEXT NOT NULL DEFAULT '',
  image                TEXT NOT NULL DEFAULT '',
  exit_code            INTEGER,
  failure_reason       TEXT NOT NULL DEFAULT '',
  container_id         TEXT NOT NULL DEFAULT '',
  created_at           INTEGER NOT NULL,
  updated_at           INTEGER NOT NULL,
  seq                  INTEGER NOT NULL
);
CREATE INDEX runs_by_experiment ON runs(experiment, seq);
CREATE INDEX runs_by_status ON runs(status);
CREATE TABLE run_transitions (
  run_id  TEXT NOT NULL REFERENCES runs(id),
  status  TEXT NOT NULL,
  at      INTEGER NOT NULL
);
CREATE INDEX run_transitions_by_run ON run_transitions(run_id);
CREATE TABLE run_tags (
  run_id  TEXT NOT NULL REFERENCES runs(id),
  key     TEXT NOT NULL,
  value   TEXT NOT NULL,
  PRIMARY KEY (run_id, key)
);
)sql",
    // 2: run properties (immutable) and the script's own verdict.
    R"sql(
CREATE TABLE run_properties (
  run_id  TEXT NOT NULL REFERENCES runs(id),
  key     TEXT NOT NULL,
  value   TEXT NOT NULL,
  PRIMARY KEY (run_id, key)
);
ALTER TABLE runs ADD COLUMN script_status TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN script_message TEXT NOT NULL DEFAULT '';
)sql",
    // 3: compute targets.
    R"sql(
CREATE TABLE computes (
  name             TEXT PRIMARY KEY,
  type             TEXT NOT NULL,
  definition_json  TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);
)sql",
    // 4: the newest runs first (job list) and the next run's number (MAX(seq) on submit) by an
    // index, not a scan of every run: with 100 k runs a page of 50 took 330 ms.
    R"sql(
CREATE INDEX runs_by_seq ON runs(seq);
)sql",
    // 5: the job's command as a column, taken from request_json once when the run is inserted:
    // a page of runs shows it, and reading it from request_json parsed the JSON twice per row.
    R"sql(
ALTER TABLE runs ADD COLUMN command;  -- no type: a non-string command stays non-text
UPDATE runs SET command = CASE WHEN json_valid(request_json)
                               THEN json_extract(request_json, '$.command') END;
)sql",
    // 6: datastores (their secrets sealed inside definition_json).
    R"sql(
CREATE TABLE datastores (
  name             TEXT PRIMARY KEY,
  type             TEXT NOT NULL,
  definition_json  TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);
)sql",
    // 7: the catalog of data assets, models and components, and their labels.
    R"sql(
CREATE TABLE assets (
  kind        TEXT NOT NULL,
  name        TEXT NOT NULL,
  version     TEXT NOT NULL,
  asset_json  TEXT NOT NULL,
  archived    INTEGER NOT NULL DEFAULT 0,
  created_at  INTEGER NOT NULL,
  seq         INTEGER NOT NULL,
  PRIMARY KEY (kind, name, version)
);
CREATE INDEX assets_by_seq ON assets(kind, name, seq);
CREATE TABLE asset_labels (
  kind     TEXT NOT NULL,
  name     TEXT NOT NULL,
  label    TEXT NOT NULL,
  version  TEXT NOT NULL,
  PRIMARY KEY (kind, name, label),
  FOREIGN KEY (kind, name, version) REFERENCES assets(kind, name, version)
);
)sql",
    // 8: the registries a workspace uses (a folder each, shared with other workspaces).
    R"sql(
CREATE TABLE registries (
  name             TEXT PRIMARY KEY,
  type             TEXT NOT NULL,
  definition_json  TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL
);
)sql",
};

// A table of named definitions (DefinitionRecord): how messages call its rows, and its
// statements as literals (Connection::Prepare caches them by address).
struct DefinitionTable {
  const char* what;
  const char* put;
  const char* get;
  const char* list;
  const char* del;
};
#define TY_DEFINITION_TABLE(table, what)                                                           \
  DefinitionTable {                                                                                \
    what,                                                                                          \
        "INSERT INTO " table                                                                       \
        "(name, type, definition_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?) "            \
        "ON CONFLICT(name) DO UPDATE SET type = excluded.type, "                                   \
        "definition_json = excluded.definition_json, updated_at = excluded.updated_at",            \
        "SELECT name, type, definition_json, created_at, updated_at FROM " table                   \
        " WHERE name = ?",                                                                         \
        "SELECT name, type, definition_json, created_at, updated_at FROM " table " ORDER BY name", \
        "DELETE FROM " table " WHERE name = ?"                                                     \
  }
constexpr DefinitionTable kComputes = TY_DEFINITION_TABLE("computes", "compute target");
constexpr DefinitionTable kDatastores = TY_DEFINITION_TABLE("datastores", "datastore");
constexpr DefinitionTable kRegistries = TY_DEFINITION_TABLE("registries", "registry");
#undef TY_DEFINITION_TABLE

using sqlite::Statement;

#define TY_RUN_COLUMNS(request_json)                                                      \
  "id, experiment, display_name, description, compute, status, " request_json             \
  ", snapshot_id, environment_name, environment_version, image_hash, image, exit_code, "  \
  "failure_reason, container_id, created_at, updated_at, script_status, script_message, " \
  "command"
// A run as ReadRun reads it.
constexpr const char* kRunColumns = TY_RUN_COLUMNS("request_json");
// A run in a page of runs (ListRuns): the same columns, with an empty request_json, which a page
// does not show and which can be kilobytes per run.
constexpr const char* kListedRunColumns = TY_RUN_COLUMNS("''");
#undef TY_RUN_COLUMNS

class SqliteStore : public Store {
 public:
  // `reader_path`: the file reads may open their own connections on (opened on first use, so
  // after Init has migrated the schema); empty for none.
  SqliteStore(std::unique_ptr<sqlite::Connection> db, StoreOptions options, std::string reader_path)
      : db_(std::move(db)), options_(options), path_(std::move(reader_path)) {}

  Status Init() {
    MutexLock lock(mu_);
    // WAL with synchronous=NORMAL: a committed transaction survives a crash of the process;
    // the writer never blocks readers.
    TY_RETURN_IF_ERROR(
        Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
             "PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;"));
    return db_->Migrate(kMigrations);
  }

  Status EnsureExperiment(const std::string& name) override {
    if (!IsValidName(name)) return InvalidArgument("invalid experiment name '" + name + "'");
    MutexLock lock(mu_);
    return EnsureExperimentLocked(name);
  }

  StatusOr<std::vector<std::string>> ListExperiments() override {
    MutexLock lock(mu_);
    Statement q = db_->Prepare("SELECT name FROM experiments ORDER BY name");
    std::vector<std::string> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) out.push_back(q.Text(0));
    if (rc != SQLITE_DONE) return q.Error("list experiments");
    return out;
  }

  Status InsertEnvironment(const EnvironmentRecord& env) override {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(
        "INSERT INTO environments(name, version, definition_json, definition_hash, image_hash,"
        " created_at, seq) VALUES (?, ?, ?, ?, ?, ?,"
        " (SELECT COALESCE(MAX(seq), 0) + 1 FROM environments))");
    q.Bind(1, env.name)
        .Bind(2, env.version)
        .Bind(3, env.definition_json)
        .Bind(4, env.definition_hash)
        .Bind(5, env.image_hash)
        .Bind(6, env.created_at);
    int rc = q.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return AlreadyExists("environment " + env.name + ":" + env.version + " already exists");
    }
    if (rc != SQLITE_DONE) return q.Error("insert environment");
    return Status::Ok();
  }

  Status InsertAsset(const AssetRecord& a) override {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(
        "INSERT INTO assets(kind, name, version, asset_json, archived, created_at, seq)"
        " VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM assets))");
    q.Bind(1, a.kind)
        .Bind(2, a.name)
        .Bind(3, a.version)
        .Bind(4, a.asset_json)
        .Bind(5, std::int64_t{a.archived ? 1 : 0})
        .Bind(6, a.created_at);
    const int rc = q.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return AlreadyExists(AssetKindName(a.kind) + " " + a.name + ":" + a.version +
                           " already exists");
    }
    if (rc != SQLITE_DONE) return q.Error("insert " + AssetKindName(a.kind));
    return Status::Ok();
  }

  StatusOr<AssetRecord> GetAsset(const std::string& kind, const std::string& name,
                                 const std::string& version) override {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(
        "SELECT kind, name, version, asset_json, archived, created_at FROM assets"
        " WHERE kind = ? AND name = ? AND version = ?");
    q.Bind(1, kind).Bind(2, name).Bind(3, version);
    const int rc = q.Step();
    if (rc == SQLITE_DONE) {
      return NotFound(AssetKindName(kind) + " " + name + ":" + version + " does not exist");
    }
    if (rc != SQLITE_ROW) return q.Error("get " + AssetKindName(kind));
    AssetRecord a = ReadAsset(q);
    TY_RETURN_IF_ERROR(ReadLabelsLocked(&a));
    return a;
  }

  StatusOr<std::vector<AssetRecord>> ListAssets(const std::string& kind,
                                                const std::string& name) override {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(
        "SELECT kind, name, version, asset_json, archived, created_at FROM assets"
        " WHERE kind = ?1 AND (?2 = '' OR name = ?2) ORDER BY seq");
    q.Bind(1, kind).Bind(2, name);
    std::vector<AssetRecord> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) out.push_back(ReadAsset(q));
    if (rc != SQLITE_DONE) return q.Error("list " + AssetKindName(kind) + "s");
    for (AssetRecord& a : out) TY_RETURN_IF_ERROR(ReadLabelsLocked(&a));
    return out;
  }

  Status SetAssetArchived(const std::string& kind, const std::string& name,
                          const std::string& version, bool archived) override {
    MutexLock lock(mu_);
    Statement q =
        db_->Prepare("UPDATE assets SET archived = ? WHERE kind = ? AND name = ? AND version = ?");
    q.Bind(1, std::int64_t{archived ? 1 : 0}).Bind(2, kind).Bind(3, name).Bind(4, version);
    if (q.Step() != SQLITE_DONE) return q.Error("archive " + AssetKindName(kind));
    if (db_->Changes() == 0) {
      return NotFound(AssetKindName(kind) + " " + name + ":" + version + " does not exist");
    }
    return Status::Ok();
  }

  Status SetAssetLabel(const std::string& kind, const std::string& name, const std::string& label,
                       const std::string& version) override {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(
        "INSERT INTO asset_labels(kind, name, label, version) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(kind, name, label) DO UPDATE SET version = excluded.version");
    q.Bind(1, kind).Bind(2, name).Bind(3, label).Bind(4, version);
    const int rc = q.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return NotFound(AssetKindName(kind) + " " + name + ":" + version + " does not exist");
    }
    if (rc != SQLITE_DONE) return q.Error("label " + AssetKindName(kind));
    return Status::Ok();
  }

  Status PutCompute(const ComputeRecord& c) override { return PutDefinition(kComputes, c); }
  StatusOr<ComputeRecord> GetCompute(const std::string& name) override {
    return GetDefinition(kComputes, name);
  }
  StatusOr<std::vector<ComputeRecord>> ListComputes() override {
    return ListDefinitions(kComputes);
  }
  Status DeleteCompute(const std::string& name) override {
    return DeleteDefinition(kComputes, name);
  }

  Status PutDatastore(const DatastoreRecord& d) override { return PutDefinition(kDatastores, d); }
  StatusOr<DatastoreRecord> GetDatastore(const std::string& name) override {
    return GetDefinition(kDatastores, name);
  }
  StatusOr<std::vector<DatastoreRecord>> ListDatastores() override {
    return ListDefinitions(kDatastores);
  }
  Status DeleteDatastore(const std::string& name) override {
    return DeleteDefinition(kDatastores, name);
  }

  Status PutRegistry(const RegistryRecord& r) override { return PutDefinition(kRegistries, r); }
  StatusOr<RegistryRecord> GetRegistry(const std::string& name) override {
    return GetDefinition(kRegistries, name);
  }
  StatusOr<std::vector<RegistryRecord>> ListRegistries() override {
    return ListDefinitions(kRegistries);
  }
  Status DeleteRegistry(const std::string& name) override {
    return DeleteDefinition(kRegistries, name);
  }

  StatusOr<EnvironmentRecord> GetEnvironment(const std::string& name,
                                             const std::string& version) override {
    MutexLock lock(mu_);
    const char* sql =
        version.empty()
            ? "SELECT name, version, definition_json, definition_hash, image_hash, created_at "
              "FROM environments WHERE name = ? ORDER BY seq DESC LIMIT 1"
            : "SELECT name, version, definition_json, definition_hash, image_hash, created_at "
              "FROM environments WHERE name = ? AND version = ?";
    Statement q = db_->Prepare(sql);
    q.Bind(1, name);
    if (!version.empty()) q.Bind(2, version);
    int rc = q.Step();
    if (rc == SQLITE_DONE) {
      return NotFound("environment " + name + (version.empty() ? "" : ":" + version) +
                      " not found");
    }
    if (rc != SQLITE_ROW) return q.Error("get environment");
    return ReadEnv(q);
  }

  Status UpdateEnvironmentDefinition(const std::string& name, const std::string& version,
                                     const std::string& definition_json) override {
    MutexLock lock(mu_);
    Statement q =
        db_->Prepare("UPDATE environments SET definition_json = ? WHERE name = ? AND version = ?");
    q.Bind(1, definition_json).Bind(2, name).Bind(3, version);
    if (q.Step() != SQLITE_DONE) return q.Error("update environment");
    if (db_->Changes() == 0) {
      return NotFound("environment " + name + ":" + version + " not found");
    }
    return Status::Ok();
  }

  StatusOr<std::vector<EnvironmentRecord>> ListEnvironments(const std::string& name) override {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(
        name.empty()
            ? "SELECT name, version, definition_json, definition_hash, image_hash, created_at "
              "FROM environments ORDER BY seq"
            : "SELECT name, version, definition_json, definition_hash, image_hash, created_at "
              "FROM environments WHERE name = ? ORDER BY seq");
    if (!name.empty()) q.Bind(1, name);
    std::vector<EnvironmentRecord> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) out.push_back(ReadEnv(q));
    if (rc != SQLITE_DONE) return q.Error("list environments");
    return out;
  }

  Status InsertRun(const RunRecord& run) override {
    MutexLock lock(mu_);
    TY_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = InsertRunLocked(run);
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    return Exec("COMMIT");
  }

  StatusOr<RunRecord> GetRun(const std::string& id) override {
    return OnReader([&](sqlite::Connection& c) { return GetRunOn(c, id); });
  }

  StatusOr<std::vector<RunRecord>> ListRuns(const RunFilter& filter) override {
    return OnReader([&](sqlite::Connection& c) -> StatusOr<std::vector<RunRecord>> {
      static const std::string all =
          std::string("SELECT ") + kListedRunColumns + " FROM runs ORDER BY seq DESC LIMIT ?";
      static const std::string of_experiment = std::string("SELECT ") + kListedRunColumns +
                                               " FROM runs WHERE experiment = ?"
                                               " ORDER BY seq DESC LIMIT ?";
      Statement q = c.Prepare(filter.experiment.empty() ? all.c_str() : of_experiment.c_str());
      int i = 1;
      if (!filter.experiment.empty()) q.Bind(i++, filter.experiment);
      q.Bind(i, static_cast<std::int64_t>(filter.limit <= 0 ? 100 : filter.limit));
      return ReadRuns(c, q);
    });
  }

  StatusOr<std::vector<RunRecord>> ListActiveRuns() override {
    MutexLock lock(mu_);
    static const std::string sql =
        std::string("SELECT ") + kRunColumns +
        " FROM runs WHERE status NOT IN ('Completed', 'Failed', 'Canceled') ORDER BY seq";
    Statement q = db_->Prepare(sql.c_str());
    return ReadRuns(*db_, q);
  }

  Status TransitionRun(const std::string& id, RunStatus to, std::int64_t at) override {
    MutexLock lock(mu_);
    // Starting is followed by an external effect (a container, an sbatch) and a final state is
    // what the user is told: those commits reach the disk before this returns (synchronous=FULL
    // fsyncs the WAL, and with it every commit before). The others may be lost to a power cut
    // (not to a crash of the process), which recovery handles (docs/design-notes.md).
    const bool durable =
        options_.durable_transitions && (to == RunStatus::kStarting || IsTerminal(to));
    if (durable) TY_RETURN_IF_ERROR(Exec("PRAGMA synchronous=FULL"));
    Status s = Exec("BEGIN IMMEDIATE");
    if (s.ok()) {
      s = TransitionLocked(id, to, at);
      if (s.ok()) {
        s = Exec("COMMIT");
      } else {
        (void)Exec("ROLLBACK");
      }
    }
    if (durable) (void)Exec("PRAGMA synchronous=NORMAL");
    return s;
  }

  Status UpdateRun(const RunRecord& run) override {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(
        "UPDATE runs SET image_hash = ?, image = ?, exit_code = ?, failure_reason = ?,"
        " container_id = ?, environment_name = ?, environment_version = ?, updated_at = ?"
        " WHERE id = ?");
    q.Bind(1, run.image_hash)
        .Bind(2, run.image)
        .Bind(3, run.exit_code)
        .Bind(4, run.failure_reason)
        .Bind(5, run.container_id)
        .Bind(6, run.environment_name)
        .Bind(7, run.environment_version)
        .Bind(8, NowMillis())
        .Bind(9, run.id);
    if (q.Step() != SQLITE_DONE) return q.Error("update run");
    if (db_->Changes() == 0) return NotFound("run '" + run.id + "' not found");
    return Status::Ok();
  }

  Status SetRunFields(const std::string& id, const RunFields& fields) override {
    std::string sql = "UPDATE runs SET updated_at = ?";
    for (const auto& [given, column] : {std::pair{fields.image_hash.has_value(), "image_hash"},
                                        {fields.image.has_value(), "image"},
                                        {fields.exit_code.has_value(), "exit_code"},
                                        {fields.failure_reason.has_value(), "failure_reason"},
                                        {fields.container_id.has_value(), "container_id"}}) {
      if (given) sql += std::string(", ") + column + " = ?";
    }
    sql += " WHERE id = ?";
    MutexLock lock(mu_);
    Statement q = db_->PrepareOnce(sql);
    int i = 1;
    q.Bind(i++, NowMillis());
    if (fields.image_hash) q.Bind(i++, *fields.image_hash);
    if (fields.image) q.Bind(i++, *fields.image);
    if (fields.exit_code) q.Bind(i++, fields.exit_code);
    if (fields.failure_reason) q.Bind(i++, *fields.failure_reason);
    if (fields.container_id) q.Bind(i++, *fields.container_id);
    q.Bind(i, id);
    if (q.Step() != SQLITE_DONE) return q.Error("update run");
    if (db_->Changes() == 0) return NotFound("run '" + id + "' not found");
    return Status::Ok();
  }

  Status UpdateRunTags(const std::string& id, const std::map<std::string, std::string>& set,
                       const std::vector<std::string>& remove, std::uint64_t max_tags) override {
    MutexLock lock(mu_);
    TY_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = UpdateTagsLocked(id, set, remove, max_tags);
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    return Exec("COMMIT");
  }

  Status AddRunProperties(const std::string& id,
                          const std::map<std::string, std::string>& properties,
                          std::uint64_t max_properties) override {
    MutexLock lock(mu_);
    TY_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    Status s = AddPropertiesLocked(id, properties);
    if (s.ok()) s = CheckCountLocked("run_properties", id, max_properties, "properties");
    if (!s.ok()) {
      (void)Exec("ROLLBACK");
      return s;
    }
    return Exec("COMMIT");
  }

  StatusOr<std::map<std::string, std::string>> GetRunProperties(const std::string& id) override {
    MutexLock lock(mu_);
    TY_RETURN_IF_ERROR(RunExistsLocked(id));
    Statement q =
        db_->Prepare("SELECT key, value FROM run_properties WHERE run_id = ? ORDER BY key");
    q.Bind(1, id);
    std::map<std::string, std::string> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) out[q.Text(0)] = q.Text(1);
    if (rc != SQLITE_DONE) return q.Error("read properties");
    return out;
  }

  Status SetScriptVerdict(const std::string& id, RunStatus status,
                          const std::string& message) override {
    if (status != RunStatus::kCompleted && status != RunStatus::kFailed) {
      return InvalidArgument("a script's verdict is Completed or Failed, not " +
                             std::string(RunStatusName(status)));
    }
    MutexLock lock(mu_);
    Statement q = db_->Prepare(
        "UPDATE runs SET script_status = ?, script_message = ?, updated_at = ? WHERE id = ?");
    q.Bind(1, std::string(RunStatusName(status))).Bind(2, message).Bind(3, NowMillis()).Bind(4, id);
    if (q.Step() != SQLITE_DONE) return q.Error("record the script's verdict");
    if (db_->Changes() == 0) return NotFound("run '" + id + "' not found");
    return Status::Ok();
  }

 private:
  Status PutDefinition(const DefinitionTable& t, const DefinitionRecord& r) {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(t.put);
    q.Bind(1, r.name)
        .Bind(2, r.type)
        .Bind(3, r.definition_json)
        .Bind(4, r.created_at)
        .Bind(5, r.updated_at != 0 ? r.updated_at : r.created_at);
    if (q.Step() != SQLITE_DONE) return q.Error(std::string("put ") + t.what);
    return Status::Ok();
  }

  StatusOr<DefinitionRecord> GetDefinition(const DefinitionTable& t, const std::string& name) {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(t.get);
    q.Bind(1, name);
    const int rc = q.Step();
    if (rc == SQLITE_DONE) return NotFound(std::string(t.what) + " '" + name + "' does not exist");
    if (rc != SQLITE_ROW) return q.Error(std::string("get ") + t.what);
    return DefinitionRecord{q.Text(0), q.Text(1), q.Text(2), q.Int(3), q.Int(4)};
  }

  StatusOr<std::vector<DefinitionRecord>> ListDefinitions(const DefinitionTable& t) {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(t.list);
    std::vector<DefinitionRecord> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      out.push_back(DefinitionRecord{q.Text(0), q.Text(1), q.Text(2), q.Int(3), q.Int(4)});
    }
    if (rc != SQLITE_DONE) return q.Error(std::string("list ") + t.what + "s");
    return out;
  }

  Status DeleteDefinition(const DefinitionTable& t, const std::string& name) {
    MutexLock lock(mu_);
    Statement q = db_->Prepare(t.del);
    q.Bind(1, name);
    if (q.Step() != SQLITE_DONE) return q.Error(std::string("delete ") + t.what);
    if (db_->Changes() == 0)
      return NotFound(std::string(t.what) + " '" + name + "' does not exist");
    return Status::Ok();
  }

  static AssetRecord ReadAsset(const Statement& q) {
    AssetRecord a;
    a.kind = q.Text(0);
    a.name = q.Text(1);
    a.version = q.Text(2);
    a.asset_json = q.Text(3);
    a.archived = q.Int(4) != 0;
    a.created_at = q.Int(5);
    return a;
  }

  Status ReadLabelsLocked(AssetRecord* a) REQUIRES(mu_) {
    Statement q = db_->Prepare(
        "SELECT label FROM asset_labels WHERE kind = ? AND name = ? AND version = ?"
        " ORDER BY label");
    q.Bind(1, a->kind).Bind(2, a->name).Bind(3, a->version);
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) a->labels.push_back(q.Text(0));
    if (rc != SQLITE_DONE) return q.Error("read labels");
    return Status::Ok();
  }

  Status RunExistsLocked(const std::string& id) REQUIRES(mu_) {
    Statement q = db_->Prepare("SELECT 1 FROM runs WHERE id = ?");
    q.Bind(1, id);
    int rc = q.Step();
    if (rc == SQLITE_DONE) return NotFound("run '" + id + "' not found");
    if (rc != SQLITE_ROW) return q.Error("find run");
    return Status::Ok();
  }

  Status UpdateTagsLocked(const std::string& id, const std::map<std::string, std::string>& set,
                          const std::vector<std::string>& remove, std::uint64_t max_tags)
      REQUIRES(mu_) {
    TY_RETURN_IF_ERROR(RunExistsLocked(id));
    for (const auto& [key, value] : set) {
      Statement q = db_->Prepare(
          "INSERT INTO run_tags(run_id, key, value) VALUES (?, ?, ?)"
          " ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value");
      q.Bind(1, id).Bind(2, key).Bind(3, value);
      if (q.Step() != SQLITE_DONE) return q.Error("set tag");
    }
    for (const std::string& key : remove) {
      Statement q = db_->Prepare("DELETE FROM run_tags WHERE run_id = ? AND key = ?");
      q.Bind(1, id).Bind(2, key);
      if (q.Step() != SQLITE_DONE) return q.Error("remove tag");
    }
    return CheckCountLocked("run_tags", id, max_tags, "tags");
  }

  // InvalidArgument naming the limit when the run has more than `max` rows in `table`.
  Status CheckCountLocked(const char* table, const std::string& id, std::uint64_t max,
                          const char* what) REQUIRES(mu_) {
    if (max == UINT64_MAX) return Status::Ok();
    const std::string sql = std::string("SELECT COUNT(*) FROM ") + table + " WHERE run_id = ?";
    Statement q = db_->PrepareOnce(sql);
    q.Bind(1, id);
    if (q.Step() != SQLITE_ROW) return q.Error("count run rows");
    const auto n = static_cast<std::uint64_t>(q.Int(0));
    if (n > max) {
      return InvalidArgument("run '" + id + "' would have " + std::to_string(n) + " " + what +
                             "; the limit is " + std::to_string(max) + " " + what +
                             " per run (workspace.json max_" + what + "_per_run)");
    }
    return Status::Ok();
  }

  Status AddPropertiesLocked(const std::string& id,
                             const std::map<std::string, std::string>& properties) REQUIRES(mu_) {
    TY_RETURN_IF_ERROR(RunExistsLocked(id));
    for (const auto& [key, value] : properties) {
      Statement cur = db_->Prepare("SELECT value FROM run_properties WHERE run_id = ? AND key = ?");
      cur.Bind(1, id).Bind(2, key);
      int rc = cur.Step();
      if (rc == SQLITE_ROW) {
        if (cur.Text(0) != value) {
          return AlreadyExists("property '" + key + "' of run '" + id +
                               "' already has another value ('" + cur.Text(0) +
                               "'); properties are immutable");
        }
        continue;
      }
      if (rc != SQLITE_DONE) return cur.Error("read property");
      Statement ins =
          db_->Prepare("INSERT INTO run_properties(run_id, key, value) VALUES (?, ?, ?)");
      ins.Bind(1, id).Bind(2, key).Bind(3, value);
      if (ins.Step() != SQLITE_DONE) return ins.Error("add property");
    }
    return Status::Ok();
  }

  Status Exec(const char* sql) REQUIRES(mu_) { return db_->Exec(sql); }

  Status EnsureExperimentLocked(const std::string& name) REQUIRES(mu_) {
    Statement q = db_->Prepare("INSERT OR IGNORE INTO experiments(name, created_at) VALUES (?, ?)");
    q.Bind(1, name).Bind(2, NowMillis());
    if (q.Step() != SQLITE_DONE) return q.Error("ensure experiment");
    return Status::Ok();
  }

  Status InsertRunLocked(const RunRecord& run) REQUIRES(mu_) {
    TY_RETURN_IF_ERROR(EnsureExperimentLocked(run.experiment));
    Statement q = db_->Prepare(
        "INSERT INTO runs(id, experiment, display_name, description, compute, status,"
        " request_json, snapshot_id, environment_name, environment_version, image_hash, image,"
        " exit_code, failure_reason, container_id, created_at, updated_at, seq, command)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
        " (SELECT COALESCE(MAX(seq), 0) + 1 FROM runs),"
        " CASE WHEN json_valid(?7) THEN json_extract(?7, '$.command') END)");
    q.Bind(1, run.id)
        .Bind(2, run.experiment)
        .Bind(3, run.display_name)
        .Bind(4, run.description)
        .Bind(5, run.compute)
        .Bind(6, std::string(RunStatusName(run.status)))
        .Bind(7, run.request_json)
        .Bind(8, run.snapshot_id)
        .Bind(9, run.environment_name)
        .Bind(10, run.environment_version)
        .Bind(11, run.image_hash)
        .Bind(12, run.image)
        .Bind(13, run.exit_code)
        .Bind(14, run.failure_reason)
        .Bind(15, run.container_id)
        .Bind(16, run.created_at)
        .Bind(17, run.created_at);
    int rc = q.Step();
    if (rc == SQLITE_CONSTRAINT) return AlreadyExists("a run named '" + run.id + "' exists");
    if (rc != SQLITE_DONE) return q.Error("insert run");
    Statement t = db_->Prepare("INSERT INTO run_transitions(run_id, status, at) VALUES (?, ?, ?)");
    t.Bind(1, run.id).Bind(2, std::string(RunStatusName(run.status))).Bind(3, run.created_at);
    if (t.Step() != SQLITE_DONE) return t.Error("insert transition");
    for (const auto& [k, v] : run.tags) {
      Statement g = db_->Prepare("INSERT INTO run_tags(run_id, key, value) VALUES (?, ?, ?)");
      g.Bind(1, run.id).Bind(2, k).Bind(3, v);
      if (g.Step() != SQLITE_DONE) return g.Error("insert tag");
    }
    return Status::Ok();
  }

  Status TransitionLocked(const std::string& id, RunStatus to, std::int64_t at) REQUIRES(mu_) {
    Statement cur = db_->Prepare("SELECT status FROM runs WHERE id = ?");
    cur.Bind(1, id);
    int rc = cur.Step();
    if (rc == SQLITE_DONE) return NotFound("run '" + id + "' not found");
    if (rc != SQLITE_ROW) return cur.Error("read run status");
    auto from = ParseRunStatus(cur.Text(0));
    if (from && IsTerminal(*from)) {
      return FailedPrecondition("run '" + id + "' already ended as " + cur.Text(0));
    }
    Statement up = db_->Prepare("UPDATE runs SET status = ?, updated_at = ? WHERE id = ?");
    up.Bind(1, std::string(RunStatusName(to))).Bind(2, at).Bind(3, id);
    if (up.Step() != SQLITE_DONE) return up.Error("update status");
    Statement t = db_->Prepare("INSERT INTO run_transitions(run_id, status, at) VALUES (?, ?, ?)");
    t.Bind(1, id).Bind(2, std::string(RunStatusName(to))).Bind(3, at);
    if (t.Step() != SQLITE_DONE) return t.Error("insert transition");
    return Status::Ok();
  }

  static EnvironmentRecord ReadEnv(const Statement& q) {
    EnvironmentRecord e;
    e.name = q.Text(0);
    e.version = q.Text(1);
    e.definition_json = q.Text(2);
    e.definition_hash = q.Text(3);
    e.image_hash = q.Text(4);
    e.created_at = q.Int(5);
    return e;
  }

  static RunRecord ReadRun(const Statement& q) {
    RunRecord r;
    r.id = q.Text(0);
    r.experiment = q.Text(1);
    r.display_name = q.Text(2);
    r.description = q.Text(3);
    r.compute = q.Text(4);
    r.status = ParseRunStatus(q.Text(5)).value_or(RunStatus::kFailed);
    r.request_json = q.Text(6);
    r.snapshot_id = q.Text(7);
    r.environment_name = q.Text(8);
    r.environment_version = q.Text(9);
    r.image_hash = q.Text(10);
    r.image = q.Text(11);
    if (!q.IsNull(12)) r.exit_code = static_cast<int>(q.Int(12));
    r.failure_reason = q.Text(13);
    r.container_id = q.Text(14);
    r.created_at = q.Int(15);
    r.updated_at = q.Int(16);
    if (const std::string verdict = q.Text(17); !verdict.empty()) {
      r.script_status = ParseRunStatus(verdict);
    }
    r.script_message = q.Text(18);
    if (sqlite3_column_type(q.raw(), 19) == SQLITE_TEXT) r.command = q.Text(19);
    return r;
  }

  static StatusOr<RunRecord> GetRunOn(sqlite::Connection& c, const std::string& id) {
    static const std::string sql = std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = ?";
    Statement q = c.Prepare(sql.c_str());
    q.Bind(1, id);
    int rc = q.Step();
    if (rc == SQLITE_DONE) return NotFound("run '" + id + "' not found");
    if (rc != SQLITE_ROW) return q.Error("get run");
    RunRecord r = ReadRun(q);
    TY_RETURN_IF_ERROR(LoadRunDetails(c, &r));
    return r;
  }

  // `q` (on `c`) selects kRunColumns; with each run's transitions and tags.
  static StatusOr<std::vector<RunRecord>> ReadRuns(sqlite::Connection& c, Statement& q) {
    std::vector<RunRecord> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) out.push_back(ReadRun(q));
    if (rc != SQLITE_DONE) return q.Error("list runs");
    if (out.empty()) return out;
    // The transitions and tags of every listed run in two queries, not two per run: the ids go
    // as one JSON array bound to two cached statements (json_each), so no statement with a
    // placeholder per run is prepared each time.
    std::map<std::string, RunRecord*, std::less<>> by_id;
    std::string ids = "[";
    for (RunRecord& r : out) {
      by_id[r.id] = &r;
      if (ids.size() > 1) ids += ',';
      AppendJsonString(ids, r.id);
    }
    ids += ']';
    Statement t = c.Prepare(
        "SELECT run_id, status, at FROM run_transitions"
        " WHERE run_id IN (SELECT value FROM json_each(?)) ORDER BY rowid");
    t.Bind(1, ids);
    while ((rc = t.Step()) == SQLITE_ROW) {
      auto run = by_id.find(t.TextView(0));
      auto status = ParseRunStatus(t.TextView(1));
      if (run != by_id.end() && status) run->second->transitions.push_back({*status, t.Int(2)});
    }
    if (rc != SQLITE_DONE) return t.Error("read transitions");
    Statement g = c.Prepare(
        "SELECT run_id, key, value FROM run_tags WHERE run_id IN (SELECT value FROM json_each(?))");
    g.Bind(1, ids);
    while ((rc = g.Step()) == SQLITE_ROW) {
      if (auto run = by_id.find(g.TextView(0)); run != by_id.end()) {
        run->second->tags[g.Text(1)] = g.Text(2);
      }
    }
    if (rc != SQLITE_DONE) return g.Error("read tags");
    return out;
  }

  static Status LoadRunDetails(sqlite::Connection& c, RunRecord* r) {
    Statement t =
        c.Prepare("SELECT status, at FROM run_transitions WHERE run_id = ? ORDER BY rowid");
    t.Bind(1, r->id);
    int rc;
    while ((rc = t.Step()) == SQLITE_ROW) {
      if (auto s = ParseRunStatus(t.TextView(0))) r->transitions.push_back({*s, t.Int(1)});
    }
    if (rc != SQLITE_DONE) return t.Error("read transitions");
    Statement g = c.Prepare("SELECT key, value FROM run_tags WHERE run_id = ? ORDER BY key");
    g.Bind(1, r->id);
    while ((rc = g.Step()) == SQLITE_ROW) r->tags[g.Text(0)] = g.Text(1);
    if (rc != SQLITE_DONE) return g.Error("read tags");
    return Status::Ok();
  }

  // Runs `read` on a reader connection of its own when the database is a file (WAL lets readers
  // run beside the writer and beside each other, so API reads wait neither for a transition's
  // fsync nor for one another); on the one connection otherwise (":memory:", which is per
  // connection), or when no reader can be opened.
  template <typename F>
  auto OnReader(F read) -> decltype(read(std::declval<sqlite::Connection&>())) {
    std::unique_ptr<sqlite::Connection> reader;
    if (!path_.empty()) {
      {
        MutexLock lock(readers_mu_);
        if (!idle_readers_.empty()) {
          reader = std::move(idle_readers_.back());
          idle_readers_.pop_back();
        }
      }
      if (!reader) {
        auto opened = sqlite::Connection::Open(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                                               "the workspace database");
        if (opened.ok() && (*opened)->Exec("PRAGMA busy_timeout=5000; PRAGMA query_only=1").ok()) {
          reader = std::move(opened).value();
        }
      }
    }
    if (!reader) {
      MutexLock lock(mu_);
      return read(*db_);
    }
    // One read transaction: the run rows, their transitions and their tags are one snapshot,
    // as they are under mu_ on the writer.
    if (Statement begin = reader->Prepare("BEGIN"); begin.Step() != SQLITE_DONE) {
      return begin.Error("begin a read");
    }
    auto result = read(*reader);
    if (Statement commit = reader->Prepare("COMMIT"); commit.Step() != SQLITE_DONE) {
      return commit.Error("end a read");
    }
    MutexLock lock(readers_mu_);
    // A burst of concurrent reads (many runs ending at once) leaves no more than a few
    // connections open (3 descriptors and a page cache each): the rest close here.
    if (idle_readers_.size() < kMaxIdleReaders) idle_readers_.push_back(std::move(reader));
    return result;
  }

  Mutex mu_;
  const std::unique_ptr<sqlite::Connection> db_ GUARDED_BY(mu_);
  const StoreOptions options_;
  static constexpr std::size_t kMaxIdleReaders = 8;
  const std::string path_;  // empty for an in-memory database: no reader connections
  Mutex readers_mu_;
  std::vector<std::unique_ptr<sqlite::Connection>> idle_readers_ GUARDED_BY(readers_mu_);
};

}  // namespace

StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, StoreOptions options) {
  TY_ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Connection> db,
                      sqlite::Connection::Open(
                          path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                          "the workspace database"));
  // An in-memory database exists per connection: it has no readers.
  const bool in_memory =
      path.empty() || path == ":memory:" || path.find("mode=memory") != std::string::npos;
  auto store = std::make_unique<SqliteStore>(std::move(db), options, in_memory ? "" : path);
  TY_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace trainyard::store

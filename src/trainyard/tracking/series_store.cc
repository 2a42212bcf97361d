#include "trainyard/tracking/series_store.h"

#include <sqlite3.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <limits>
#include <list>
#include <nlohmann/json.hpp>
#include <span>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "trainyard/common/mutex.h"
#include "trainyard/common/sqlite.h"
#include "trainyard/common/util.h"
#include "trainyard/tracking/chunk.h"

namespace trainyard::tracking {

namespace {

// Versioned migrations: entry i brings the schema to version i + 1. Never edit a shipped entry;
// append a new one. Doubles are stored as their IEEE 754 bit patterns in INTEGER columns:
// SQLite turns a bound NaN into NULL and may store -0.0 as the integer 0.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE runs (
  run_id        TEXT PRIMARY KEY,
  series_count  INTEGER NOT NULL
);
CREATE TABLE series (
  id                INTEGER PRIMARY KEY,
  run_id            TEXT NOT NULL,
  name              TEXT NOT NULL,
  count             INTEGER NOT NULL,
  max_step          INTEGER NOT NULL,
  last_step         INTEGER NOT NULL,
  last_timestamp    INTEGER NOT NULL,
  last_value        INTEGER NOT NULL,
  min_value         INTEGER,
  max_value         INTEGER,
  last_seq          INTEGER NOT NULL,
  last_chunk_count  INTEGER NOT NULL,
  UNIQUE (run_id, name)
);
CREATE TABLE chunks (
  series_id   INTEGER NOT NULL,
  seq         INTEGER NOT NULL,
  count       INTEGER NOT NULL,
  first_step  INTEGER NOT NULL,
  last_step   INTEGER NOT NULL,
  min_value   INTEGER,
  max_value   INTEGER,
  data        BLOB NOT NULL,
  PRIMARY KEY (series_id, seq)
);
CREATE TABLE entries (
  id           INTEGER PRIMARY KEY,
  run_id       TEXT NOT NULL,
  name         TEXT NOT NULL,
  kind         TEXT NOT NULL,
  value        TEXT NOT NULL,
  step         INTEGER,
  description  TEXT NOT NULL,
  timestamp    INTEGER NOT NULL
);
CREATE INDEX entries_by_run ON entries(run_id, id);
)sql",
    // 2: Idempotency-Key of applied metric batches, so a client's retry after a lost answer is
    // not stored twice, even across a daemon restart; the digests of a run's recorded files.
    R"sql(
CREATE TABLE applied_batches (
  run_id      TEXT NOT NULL,
  key         TEXT NOT NULL,
  points      INTEGER NOT NULL,
  applied_ms  INTEGER NOT NULL,
  PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX applied_batches_by_time ON applied_batches(applied_ms);
CREATE TABLE run_files (
  run_id       TEXT NOT NULL,
  path         TEXT NOT NULL,
  size         INTEGER NOT NULL,
  digest       TEXT NOT NULL,
  origin       TEXT NOT NULL,
  recorded_ms  INTEGER NOT NULL,
  PRIMARY KEY (run_id, path)
) WITHOUT ROWID;
)sql",
};

std::int64_t ToBits(double d) { return std::bit_cast<std::int64_t>(d); }
double FromBits(std::int64_t b) { return std::bit_cast<double>(b); }

using Conn = sqlite::Connection;

// Optional doubles are stored as their bits (an INTEGER column), so that no value is rounded.
std::optional<std::int64_t> Bits(const std::optional<double>& d) {
  if (!d) return std::nullopt;
  return ToBits(*d);
}
std::optional<double> FromBits(const std::optional<std::int64_t>& b) {
  if (!b) return std::nullopt;
  return FromBits(*b);
}

StatusOr<std::unique_ptr<Conn>> OpenConn(const std::string& path, bool durable) {
  TY_ASSIGN_OR_RETURN(
      std::unique_ptr<Conn> conn,
      Conn::Open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                 "the tracking database"));
  // Larger pages keep a chunk (a few KiB to ~40 KiB) on fewer overflow pages. Only takes effect
  // on a new file.
  TY_RETURN_IF_ERROR(conn->Exec("PRAGMA page_size=16384"));
  TY_RETURN_IF_ERROR(conn->Exec("PRAGMA busy_timeout=10000; PRAGMA journal_mode=WAL"));
  TY_RETURN_IF_ERROR(conn->Exec(durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"));
  // 4 MiB of pages per connection: chunks are read once per request, the OS caches the file.
  TY_RETURN_IF_ERROR(conn->Exec("PRAGMA cache_size=-4096"));
  return conn;
}

// The state of a series as its row says, for an append.
struct SeriesRow {
  std::int64_t id = 0;
  std::uint64_t count = 0;
  std::int64_t max_step = 0;
  std::int64_t last_seq = -1;
  std::uint64_t last_chunk_count = 0;
  std::optional<double> min, max;
};

// M4 downsampling over the point order: `buckets` buckets of (almost) equal point counts,
// each contributing its first, last, minimum and maximum point (or only min and max).
class M4 {
 public:
  M4(std::uint64_t count, std::uint64_t buckets, bool only_extremes, SeriesData* out)
      : count_(count), buckets_(buckets), only_extremes_(only_extremes), out_(out) {
    end_ = Boundary(0);
  }

  void Add(std::int64_t step, std::int64_t ts, double v) {
    if (index_ == end_) Flush();
    const P p{index_, step, ts, v};
    if (!have_) {
      first_ = last_ = p;
      have_ = true;
      min_ = max_ = std::isnan(v) ? P{} : p;
    } else {
      last_ = p;
      if (!std::isnan(v)) {
        if (min_.index == kNone || v < min_.v) min_ = p;
        if (max_.index == kNone || v > max_.v) max_ = p;
      }
    }
    ++index_;
  }

  void Finish() { Flush(); }

 private:
  static constexpr std::uint64_t kNone = std::numeric_limits<std::uint64_t>::max();
  struct P {
    std::uint64_t index = kNone;
    std::int64_t step = 0, ts = 0;
    double v = 0;
  };

  std::uint64_t Boundary(std::uint64_t b) const {
    // (b + 1) * count / buckets without overflow.
    const std::uint64_t q = count_ / buckets_, r = count_ % buckets_;
    return (b + 1) * q + (b + 1) * r / buckets_;
  }

  void Flush() {
    if (have_) {
      P pts[4];
      int n = 0;
      if (!only_extremes_) pts[n++] = first_;
      if (min_.index != kNone) pts[n++] = min_;
      if (max_.index != kNone) pts[n++] = max_;
      if (!only_extremes_) pts[n++] = last_;
      if (only_extremes_ && n == 0) pts[n++] = first_;  // All NaN: keep one point.
      // Insertion sort by index (n <= 4; std::sort trips GCC 12's -Warray-bounds here).
      for (int i = 1; i < n; ++i) {
        for (int j = i; j > 0 && pts[j].index < pts[j - 1].index; --j)
          std::swap(pts[j], pts[j - 1]);
      }
      for (int i = 0; i < n; ++i) {
        if (i > 0 && pts[i].index == pts[i - 1].index) continue;
        out_->steps.push_back(pts[i].step);
        out_->timestamps.push_back(pts[i].ts);
        out_->values.push_back(pts[i].v);
      }
    }
    have_ = false;
    ++bucket_;
    end_ = Boundary(bucket_);
  }

  std::uint64_t count_, buckets_;
  bool only_extremes_;
  SeriesData* out_;
  std::uint64_t index_ = 0, bucket_ = 0, end_ = 0;
  bool have_ = false;
  P first_, last_, min_, max_;
};

std::optional<double> MinOpt(std::optional<double> a, std::optional<double> b) {
  if (!a) return b;
  if (!b) return a;
  return *b < *a ? b : a;
}
std::optional<double> MaxOpt(std::optional<double> a, std::optional<double> b) {
  if (!a) return b;
  if (!b) return a;
  return *b > *a ? b : a;
}

}  // namespace

class SeriesStore::Impl {
 public:
  Impl(SeriesStoreOptions options, std::unique_ptr<Conn> writer, std::unique_ptr<Conn> reader)
      : options_(options), writer_(std::move(writer)), reader_(std::move(reader)) {}

  Status Migrate() {
    MutexLock lock(write_mu_);
    return writer_->Migrate(kMigrations);
  }

  // Group commit: appends that arrive while a commit is under way wait, then the first of them
  // commits all of them in one transaction (one fsync), each batch inside its own savepoint so
  // a bad batch is rolled back alone. A single caller pays one transaction as before.
  StatusOr<AppendResult> Append(const std::string& run_id, const MetricBatch& batch,
                                std::int64_t now_ms, std::string_view key) {
    PendingAppend me{&run_id, &batch, now_ms, key};
    MutexLock lk(queue_mu_);
    queue_.push_back(&me);
    while (!me.done) {
      if (leader_active_) {
        lk.Wait(queue_cv_);
        continue;
      }
      leader_active_ = true;
      std::vector<PendingAppend*> group(queue_.begin(), queue_.end());
      queue_.clear();
      lk.Unlock();
      CommitGroup(group);
      lk.Lock();
      for (PendingAppend* p : group) p->done = true;
      leader_active_ = false;
      queue_cv_.notify_all();
    }
    if (!me.result.ok()) return me.result;
    return AppendResult{me.points, me.replayed};
  }

  StatusOr<std::vector<SeriesInfo>> ListSeries(const std::string& run_id) {
    MutexLock lock(read_mu_);
    auto q = reader_->Prepare(
        "SELECT name, count, last_value, last_step, last_timestamp, min_value, max_value "
        "FROM series WHERE run_id = ? ORDER BY name");
    if (!q.ok()) return reader_->Error("prepare list series");
    q.Bind(1, run_id);
    std::vector<SeriesInfo> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      SeriesInfo i;
      i.name = q.Text(0);
      i.count = static_cast<std::uint64_t>(q.Int(1));
      i.last_value = FromBits(q.Int(2));
      i.last_step = q.Int(3);
      i.last_timestamp = q.Int(4);
      i.min = FromBits(q.OptInt(5));
      i.max = FromBits(q.OptInt(6));
      out.push_back(std::move(i));
    }
    if (rc != SQLITE_DONE) return q.Error("list series");
    return out;
  }

  StatusOr<SeriesData> ReadSeries(const std::string& run_id, const std::string& name,
                                  std::optional<std::size_t> max_points) {
    if (max_points && *max_points < 2) {
      return InvalidArgument("max_points must be at least 2, not " + std::to_string(*max_points));
    }
    MutexLock lock(read_mu_);
    // One read transaction: the series row and its chunks from the same snapshot.
    TY_RETURN_IF_ERROR(reader_->Exec("BEGIN"));
    auto result = ReadSeriesLocked(run_id, name, max_points);
    (void)reader_->Exec("COMMIT");
    return result;
  }

  Status DeleteRun(const std::string& run_id) {
    MutexLock lock(write_mu_);
    ClearCache();
    return WriteTransactionLocked([&](Conn& c) -> Status {
      for (const char* sql :
           {"DELETE FROM chunks WHERE series_id IN (SELECT id FROM series WHERE run_id = ?)",
            "DELETE FROM series WHERE run_id = ?", "DELETE FROM entries WHERE run_id = ?",
            "DELETE FROM applied_batches WHERE run_id = ?",
            "DELETE FROM run_files WHERE run_id = ?", "DELETE FROM runs WHERE run_id = ?"}) {
        auto q = c.Prepare(sql);
        if (!q.ok()) return c.Error("prepare delete");
        q.Bind(1, run_id);
        if (q.Step() != SQLITE_DONE) return q.Error("delete run");
      }
      return Status::Ok();
    });
  }

  Status ForgetKeysBefore(std::int64_t cutoff_ms) {
    MutexLock lock(write_mu_);
    auto q = writer_->Prepare("DELETE FROM applied_batches WHERE applied_ms < ?");
    if (!q.ok()) return writer_->Error("prepare forget keys");
    q.Bind(1, cutoff_ms);
    if (q.Step() != SQLITE_DONE) return q.Error("forget keys");
    return Status::Ok();
  }

  Status RecordFiles(const std::string& run_id, const std::vector<RunFile>& files,
                     std::int64_t now_ms) {
    for (const RunFile& f : files) {
      if (f.path.empty() || f.digest.empty() || f.origin.empty()) {
        return InvalidArgument("a recorded file needs a path, a digest and an origin");
      }
    }
    MutexLock lock(write_mu_);
    return WriteTransactionLocked([&](Conn& c) -> Status {
      for (const RunFile& f : files) {
        auto q = c.Prepare(
            "INSERT OR REPLACE INTO run_files(run_id, path, size, digest, origin, recorded_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)");
        if (!q.ok()) return c.Error("prepare record file");
        q.Bind(1, run_id)
            .Bind(2, f.path)
            .Bind(3, static_cast<std::int64_t>(f.size))
            .Bind(4, f.digest)
            .Bind(5, f.origin)
            .Bind(6, f.recorded_ms != 0 ? f.recorded_ms : now_ms);
        if (q.Step() != SQLITE_DONE) return q.Error("record file");
      }
      return Status::Ok();
    });
  }

  StatusOr<std::vector<RunFile>> ListFiles(const std::string& run_id) {
    MutexLock lock(read_mu_);
    auto q = reader_->Prepare(
        "SELECT path, size, digest, origin, recorded_ms FROM run_files WHERE run_id = ? "
        "ORDER BY path");
    if (!q.ok()) return reader_->Error("prepare list files");
    q.Bind(1, run_id);
    std::vector<RunFile> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      out.push_back(
          RunFile{q.Text(0), static_cast<std::uint64_t>(q.Int(1)), q.Text(2), q.Text(3), q.Int(4)});
    }
    if (rc != SQLITE_DONE) return q.Error("list files");
    return out;
  }

  Status AppendEntries(const std::string& run_id, const std::vector<Entry>& entries,
                       std::int64_t now_ms) {
    for (size_t i = 0; i < entries.size(); ++i) {
      if (Status s = ValidateEntry(entries[i]); !s.ok()) {
        return InvalidArgument("entry " + std::to_string(i) + " (" + QuoteName(entries[i].name) +
                               "): " + s.message());
      }
    }
    MutexLock lock(write_mu_);
    return WriteTransactionLocked([&](Conn& c) -> Status {
      auto count = c.Prepare("SELECT COUNT(*) FROM entries WHERE run_id = ?");
      if (!count.ok()) return c.Error("prepare count entries");
      count.Bind(1, run_id);
      if (count.Step() != SQLITE_ROW) return count.Error("count entries");
      const auto have = static_cast<std::uint64_t>(count.Int(0));
      if (have + entries.size() > options_.max_entries_per_run) {
        return InvalidArgument("run '" + run_id + "' has " + std::to_string(have) +
                               " entries and the batch adds " + std::to_string(entries.size()) +
                               "; the limit is " + std::to_string(options_.max_entries_per_run) +
                               " entries per run (workspace.json max_entries_per_run)");
      }
      for (const Entry& e : entries) {
        auto q = c.Prepare(
            "INSERT INTO entries(run_id, name, kind, value, step, description, timestamp) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)");
        if (!q.ok()) return c.Error("prepare insert entry");
        const std::string kind(EntryKindName(e.kind));
        q.Bind(1, run_id)
            .Bind(2, e.name)
            .Bind(3, kind)
            .Bind(4, e.value_json)
            .Bind(5, e.step)
            .Bind(6, e.description)
            .Bind(7, e.timestamp.value_or(now_ms));
        if (q.Step() != SQLITE_DONE) return q.Error("insert entry");
      }
      return Status::Ok();
    });
  }

  StatusOr<std::vector<Entry>> ListEntries(const std::string& run_id,
                                           const std::optional<std::string>& name) {
    MutexLock lock(read_mu_);
    auto q = name ? reader_->Prepare(
                        "SELECT name, kind, value, step, description, timestamp FROM entries "
                        "WHERE run_id = ? AND name = ? ORDER BY id")
                  : reader_->Prepare(
                        "SELECT name, kind, value, step, description, timestamp FROM entries "
                        "WHERE run_id = ? ORDER BY id");
    if (!q.ok()) return reader_->Error("prepare list entries");
    q.Bind(1, run_id);
    if (name) q.Bind(2, *name);
    std::vector<Entry> out;
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      Entry e;
      e.name = q.Text(0);
      auto kind = ParseEntryKind(q.Text(1));
      if (!kind) return Internal("tracking store: unknown entry kind " + q.Text(1));
      e.kind = *kind;
      e.value_json = q.Text(2);
      e.step = q.OptInt(3);
      e.description = q.Text(4);
      e.timestamp = q.Int(5);
      out.push_back(std::move(e));
    }
    if (rc != SQLITE_DONE) return q.Error("list entries");
    return out;
  }

 private:
  // Runs `body` in one write transaction on the writer: committed when it returns OK, rolled
  // back otherwise. Requires write_mu_.
  Status WriteTransactionLocked(const std::function<Status(Conn&)>& body) REQUIRES(write_mu_) {
    Conn& c = *writer_;
    TY_RETURN_IF_ERROR(c.Exec("BEGIN IMMEDIATE"));
    Status s = body(c);
    if (s.ok()) s = c.Exec("COMMIT");
    if (!s.ok()) (void)c.Exec("ROLLBACK");
    return s;
  }

  struct PendingAppend {
    const std::string* run_id;
    const MetricBatch* batch;
    std::int64_t now_ms;
    std::string_view key;  // Idempotency-Key; empty for none
    Status result;
    std::uint64_t points = 0;  // applied (or, when replayed, applied before under `key`)
    bool replayed = false;
    bool done = false;  // Guarded by queue_mu_.
  };

  void CommitGroup(const std::vector<PendingAppend*>& group) {
    MutexLock lock(write_mu_);
    Conn& c = *writer_;
    if (Status s = c.Exec("BEGIN IMMEDIATE"); !s.ok()) {
      for (PendingAppend* p : group) p->result = s;
      return;
    }
    const bool alone = group.size() == 1;
    bool any_ok = false;
    for (PendingAppend* p : group) {
      if (!alone) {
        if (Status s = c.Exec("SAVEPOINT batch"); !s.ok()) {
          p->result = s;
          continue;
        }
      }
      p->result = AppendOnceLocked(*p);
      if (!p->result.ok()) ClearCache();
      if (alone) break;
      if (p->result.ok()) {
        p->result = c.Exec("RELEASE batch");
      } else {
        (void)c.Exec("ROLLBACK TO batch");
        (void)c.Exec("RELEASE batch");
      }
      any_ok = any_ok || p->result.ok();
    }
    if (alone) any_ok = group[0]->result.ok();
    Status commit = any_ok ? c.Exec("COMMIT") : c.Exec("ROLLBACK");
    if (!commit.ok()) {
      ClearCache();
      (void)c.Exec("ROLLBACK");
      for (PendingAppend* p : group) {
        if (p->result.ok()) p->result = commit;
      }
    }
  }

  // Applies one batch unless its key was applied to the run before; records the key with it,
  // in the same transaction, so the batch and its key are durable together.
  Status AppendOnceLocked(PendingAppend& p) REQUIRES(write_mu_) {
    Conn& c = *writer_;
    const std::string key(p.key);  // bound without a copy: must outlive the statements' steps
    if (!key.empty()) {
      auto q = c.Prepare("SELECT points FROM applied_batches WHERE run_id = ? AND key = ?");
      if (!q.ok()) return c.Error("prepare key lookup");
      q.Bind(1, *p.run_id).Bind(2, key);
      const int rc = q.Step();
      if (rc == SQLITE_ROW) {
        p.points = static_cast<std::uint64_t>(q.Int(0));
        p.replayed = true;
        return Status::Ok();
      }
      if (rc != SQLITE_DONE) return q.Error("key lookup");
    }
    TY_RETURN_IF_ERROR(AppendLocked(*p.run_id, *p.batch, p.now_ms));
    p.points = p.batch->PointCount();
    if (key.empty()) return Status::Ok();
    auto ins = c.Prepare(
        "INSERT INTO applied_batches(run_id, key, points, applied_ms) VALUES (?, ?, ?, ?)");
    if (!ins.ok()) return c.Error("prepare key insert");
    ins.Bind(1, *p.run_id)
        .Bind(2, key)
        .Bind(3, static_cast<std::int64_t>(p.points))
        .Bind(4, p.now_ms);
    if (ins.Step() != SQLITE_DONE) return ins.Error("key insert");
    return Status::Ok();
  }

  Status AppendLocked(const std::string& run_id, const MetricBatch& batch, std::int64_t now_ms)
      REQUIRES(write_mu_) {
    Conn& c = *writer_;
    std::optional<std::uint64_t> run_series;  // Loaded on the first new name.
    std::uint64_t new_names = 0;
    for (size_t i = 0; i < batch.series.size(); ++i) {
      const MetricSeries& s = batch.series[i];
      const size_t n = s.values.size();
      if (n == 0) continue;
      if ((s.has_steps() && s.steps.size() != n) ||
          (s.has_timestamps() && s.timestamps.size() != n)) {
        return InvalidArgument(SeriesLabel(i, s.name) +
                               ": steps or timestamps do not match the values in length");
      }
      SeriesRow row;
      bool is_new = false;
      {
        auto q = c.Prepare(
            "SELECT id, count, max_step, last_seq, last_chunk_count, min_value, max_value "
            "FROM series WHERE run_id = ? AND name = ?");
        if (!q.ok()) return c.Error("prepare series lookup");
        q.Bind(1, run_id).Bind(2, s.name);
        int rc = q.Step();
        if (rc == SQLITE_ROW) {
          row.id = q.Int(0);
          row.count = static_cast<std::uint64_t>(q.Int(1));
          row.max_step = q.Int(2);
          row.last_seq = q.Int(3);
          row.last_chunk_count = static_cast<std::uint64_t>(q.Int(4));
          row.min = FromBits(q.OptInt(5));
          row.max = FromBits(q.OptInt(6));
        } else if (rc == SQLITE_DONE) {
          is_new = true;
        } else {
          return q.Error("series lookup");
        }
      }
      if (is_new) {
        if (Status st = ValidateMetricName(s.name); !st.ok()) {
          return InvalidArgument(SeriesLabel(i, s.name) + ": " + st.message());
        }
        if (!run_series) {
          auto q = c.Prepare("SELECT series_count FROM runs WHERE run_id = ?");
          if (!q.ok()) return c.Error("prepare run lookup");
          q.Bind(1, run_id);
          const int rc = q.Step();
          if (rc != SQLITE_ROW && rc != SQLITE_DONE) return q.Error("run lookup");
          run_series = rc == SQLITE_ROW ? static_cast<std::uint64_t>(q.Int(0)) : 0;
        }
        if (*run_series + new_names + 1 > options_.max_names_per_run) {
          return InvalidArgument(SeriesLabel(i, s.name) + ": the run already has " +
                                 std::to_string(*run_series + new_names) +
                                 " metric names; the limit is " +
                                 std::to_string(options_.max_names_per_run) + " names per run");
        }
      }
      if (row.count + n > options_.max_points_per_series) {
        return InvalidArgument(SeriesLabel(i, s.name) + ": the series would have " +
                               std::to_string(row.count + n) + " points; the limit is " +
                               std::to_string(options_.max_points_per_series) +
                               " points per series");
      }
      // Steps and timestamps the batch left out.
      std::span<const std::int64_t> steps = s.steps;
      std::span<const std::int64_t> timestamps = s.timestamps;
      if (!s.has_steps()) {
        const std::int64_t first = is_new ? 0 : row.max_step + 1;
        if (!is_new &&
            (row.max_step == std::numeric_limits<std::int64_t>::max() ||
             first > std::numeric_limits<std::int64_t>::max() - static_cast<std::int64_t>(n - 1))) {
          return InvalidArgument(SeriesLabel(i, s.name) +
                                 ": no steps after the highest step so far");
        }
        auto_steps_.resize(n);
        for (size_t k = 0; k < n; ++k) auto_steps_[k] = first + static_cast<std::int64_t>(k);
        steps = auto_steps_;
      }
      if (!s.has_timestamps()) {
        auto_ts_.assign(n, now_ms);
        timestamps = auto_ts_;
      }
      if (is_new) {
        auto q = c.Prepare(
            "INSERT INTO series(run_id, name, count, max_step, last_step, last_timestamp,"
            " last_value, last_seq, last_chunk_count) VALUES (?, ?, 0, 0, 0, 0, 0, -1, 0)");
        if (!q.ok()) return c.Error("prepare insert series");
        q.Bind(1, run_id).Bind(2, s.name);
        if (q.Step() != SQLITE_DONE) return q.Error("insert series");
        row.id = sqlite3_last_insert_rowid(c.raw());
        ++new_names;
      }
      TY_RETURN_IF_ERROR(AppendPoints(&row, steps, timestamps, s.values));
      // The series summary.
      const ChunkSummary sum = SummarizePoints(steps, timestamps, s.values);
      auto q = c.Prepare(
          "UPDATE series SET count = ?, max_step = ?, last_step = ?, last_timestamp = ?,"
          " last_value = ?, min_value = ?, max_value = ?, last_seq = ?, last_chunk_count = ?"
          " WHERE id = ?");
      if (!q.ok()) return c.Error("prepare update series");
      q.Bind(1, static_cast<std::int64_t>(row.count + n))
          .Bind(2, is_new ? sum.max_step : std::max(row.max_step, sum.max_step))
          .Bind(3, sum.last_step)
          .Bind(4, sum.last_timestamp)
          .Bind(5, ToBits(sum.last_value))
          .Bind(6, Bits(MinOpt(row.min, sum.min)))
          .Bind(7, Bits(MaxOpt(row.max, sum.max)))
          .Bind(8, row.last_seq)
          .Bind(9, static_cast<std::int64_t>(row.last_chunk_count))
          .Bind(10, row.id);
      if (q.Step() != SQLITE_DONE) return q.Error("update series");
    }
    if (new_names > 0) {
      auto q = c.Prepare(
          "INSERT INTO runs(run_id, series_count) VALUES (?, ?) "
          "ON CONFLICT(run_id) DO UPDATE SET series_count = excluded.series_count");
      if (!q.ok()) return c.Error("prepare update run");
      q.Bind(1, run_id).Bind(2, static_cast<std::int64_t>(*run_series + new_names));
      if (q.Step() != SQLITE_DONE) return q.Error("update run");
    }
    return Status::Ok();
  }

  // Writes the points into the series' chunks: first filling its last chunk, then new ones.
  // Updates row->last_seq and row->last_chunk_count.
  Status AppendPoints(SeriesRow* row, std::span<const std::int64_t> steps,
                      std::span<const std::int64_t> timestamps, std::span<const double> values)
      REQUIRES(write_mu_) {
    Conn& c = *writer_;
    const size_t n = values.size();
    const size_t cap = options_.chunk_points;
    size_t pos = 0;
    if (row->last_seq >= 0 && row->last_chunk_count < cap) {
      // Merge into the open chunk: decode it, add points, rewrite it.
      merge_.clear();
      if (!TakeCached(row->id, row->last_seq, row->last_chunk_count, &merge_)) {
        auto q = c.Prepare("SELECT data FROM chunks WHERE series_id = ? AND seq = ?");
        if (!q.ok()) return c.Error("prepare read chunk");
        q.Bind(1, row->id).Bind(2, row->last_seq);
        if (q.Step() != SQLITE_ROW) return q.Error("read last chunk");
        TY_RETURN_IF_ERROR(DecodeChunk(q.Blob(0), &merge_));
      }
      if (merge_.size() != row->last_chunk_count) {
        return Internal("tracking store: chunk " + std::to_string(row->last_seq) + " of series " +
                        std::to_string(row->id) + " has " + std::to_string(merge_.size()) +
                        " points, its series row says " + std::to_string(row->last_chunk_count));
      }
      const size_t k = std::min(n, cap - merge_.size());
      merge_.steps.insert(merge_.steps.end(), steps.begin(), steps.begin() + k);
      merge_.timestamps.insert(merge_.timestamps.end(), timestamps.begin(), timestamps.begin() + k);
      merge_.values.insert(merge_.values.end(), values.begin(), values.begin() + k);
      TY_RETURN_IF_ERROR(WriteChunk(row->id, row->last_seq, merge_.steps, merge_.timestamps,
                                    merge_.values, /*replace=*/true));
      row->last_chunk_count = merge_.size();
      pos = k;
      if (pos == n && merge_.size() < cap) {
        PutCached(row->id, row->last_seq, std::move(merge_));
        merge_ = PointColumns();
      }
    }
    while (pos < n) {
      const size_t k = std::min(n - pos, cap);
      ++row->last_seq;
      TY_RETURN_IF_ERROR(WriteChunk(row->id, row->last_seq, steps.subspan(pos, k),
                                    timestamps.subspan(pos, k), values.subspan(pos, k),
                                    /*replace=*/false));
      row->last_chunk_count = k;
      pos += k;
      if (pos == n && k < cap && options_.open_chunk_cache_points > 0) {
        PointColumns cols;
        cols.steps.assign(steps.end() - k, steps.end());
        cols.timestamps.assign(timestamps.end() - k, timestamps.end());
        cols.values.assign(values.end() - k, values.end());
        PutCached(row->id, row->last_seq, std::move(cols));
      }
    }
    return Status::Ok();
  }

  // The open-chunk cache (see open_).
  bool TakeCached(std::int64_t id, std::int64_t seq, std::uint64_t count, PointColumns* out)
      REQUIRES(write_mu_) {
    auto it = open_.find(id);
    if (it == open_.end()) return false;
    const bool hit = it->second.seq == seq && it->second.cols.size() == count;
    open_points_ -= it->second.cols.size();
    if (hit) std::swap(*out, it->second.cols);
    open_lru_.erase(it->second.lru);
    open_.erase(it);
    return hit;
  }
  void PutCached(std::int64_t id, std::int64_t seq, PointColumns cols) REQUIRES(write_mu_) {
    EraseCached(id);
    if (cols.size() > options_.open_chunk_cache_points) return;
    open_points_ += cols.size();
    open_lru_.push_front(id);
    open_.emplace(id, OpenChunk{seq, std::move(cols), open_lru_.begin()});
    while (open_points_ > options_.open_chunk_cache_points) {
      EraseCached(open_lru_.back());
    }
  }
  void EraseCached(std::int64_t id) REQUIRES(write_mu_) {
    auto it = open_.find(id);
    if (it == open_.end()) return;
    open_points_ -= it->second.cols.size();
    open_lru_.erase(it->second.lru);
    open_.erase(it);
  }
  void ClearCache() REQUIRES(write_mu_) {
    open_.clear();
    open_lru_.clear();
    open_points_ = 0;
  }

  Status WriteChunk(std::int64_t series_id, std::int64_t seq, std::span<const std::int64_t> steps,
                    std::span<const std::int64_t> timestamps, std::span<const double> values,
                    bool replace) REQUIRES(write_mu_) {
    Conn& c = *writer_;
    encoded_.clear();
    EncodeChunk(steps, timestamps, values, &encoded_);
    const ChunkSummary sum = SummarizePoints(steps, timestamps, values);
    auto q = replace ? c.Prepare(
                           "UPDATE chunks SET count = ?3, first_step = ?4, last_step = ?5,"
                           " min_value = ?6, max_value = ?7, data = ?8"
                           " WHERE series_id = ?1 AND seq = ?2")
                     : c.Prepare(
                           "INSERT INTO chunks(series_id, seq, count, first_step, last_step,"
                           " min_value, max_value, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
    if (!q.ok()) return c.Error("prepare write chunk");
    q.Bind(1, series_id)
        .Bind(2, seq)
        .Bind(3, static_cast<std::int64_t>(values.size()))
        .Bind(4, sum.first_step)
        .Bind(5, sum.last_step)
        .Bind(6, Bits(sum.min))
        .Bind(7, Bits(sum.max))
        .BindBlob(8, encoded_);
    if (q.Step() != SQLITE_DONE) return q.Error("write chunk");
    return Status::Ok();
  }

  StatusOr<SeriesData> ReadSeriesLocked(const std::string& run_id, const std::string& name,
                                        std::optional<std::size_t> max_points) REQUIRES(read_mu_) {
    Conn& c = *reader_;
    SeriesData out;
    out.name = name;
    std::int64_t id;
    {
      auto q = c.Prepare("SELECT id, count FROM series WHERE run_id = ? AND name = ?");
      if (!q.ok()) return c.Error("prepare read series");
      q.Bind(1, run_id).Bind(2, name);
      const int rc = q.Step();
      if (rc == SQLITE_DONE) {
        return NotFound("run " + run_id + " has no metric " + QuoteName(name));
      }
      if (rc != SQLITE_ROW) return q.Error("read series");
      id = q.Int(0);
      out.count = static_cast<std::uint64_t>(q.Int(1));
    }
    const bool downsample = max_points && out.count > *max_points;
    std::optional<M4> m4;
    if (downsample) {
      out.downsampled = true;
      const bool only_extremes = *max_points < 4;
      const std::uint64_t buckets = only_extremes ? 1 : *max_points / 4;
      m4.emplace(out.count, buckets, only_extremes, &out);
      out.steps.reserve(*max_points);
      out.timestamps.reserve(*max_points);
      out.values.reserve(*max_points);
    } else {
      out.steps.reserve(out.count);
      out.timestamps.reserve(out.count);
      out.values.reserve(out.count);
    }
    PointColumns buf;
    PointColumns* target = downsample ? &buf : nullptr;
    std::uint64_t seen = 0;
    auto q = c.Prepare("SELECT data FROM chunks WHERE series_id = ? ORDER BY seq");
    if (!q.ok()) return c.Error("prepare read chunks");
    q.Bind(1, id);
    int rc;
    while ((rc = q.Step()) == SQLITE_ROW) {
      if (target) {
        buf.clear();
        TY_RETURN_IF_ERROR(DecodeChunk(q.Blob(0), &buf));
        for (size_t k = 0; k < buf.size() && seen + k < out.count; ++k) {
          m4->Add(buf.steps[k], buf.timestamps[k], buf.values[k]);
        }
        seen += buf.size();
      } else {
        // Decode straight into the answer's columns.
        PointColumns cols;
        cols.steps.swap(out.steps);
        cols.timestamps.swap(out.timestamps);
        cols.values.swap(out.values);
        Status s = DecodeChunk(q.Blob(0), &cols);
        cols.steps.swap(out.steps);
        cols.timestamps.swap(out.timestamps);
        cols.values.swap(out.values);
        TY_RETURN_IF_ERROR(s);
        seen = out.values.size();
      }
    }
    if (rc != SQLITE_DONE) return q.Error("read chunks");
    if (seen != out.count) {
      return Internal("tracking store: series " + std::to_string(id) + " has " +
                      std::to_string(seen) + " points in its chunks, its row says " +
                      std::to_string(out.count));
    }
    if (m4) m4->Finish();
    return out;
  }

  const SeriesStoreOptions options_;
  // The group-commit queue of Append.
  Mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::vector<PendingAppend*> queue_ GUARDED_BY(queue_mu_);
  bool leader_active_ GUARDED_BY(queue_mu_) = false;
  Mutex write_mu_;
  std::unique_ptr<Conn> writer_ GUARDED_BY(write_mu_);
  // Scratch buffers of Append.
  PointColumns merge_ GUARDED_BY(write_mu_);
  std::string encoded_ GUARDED_BY(write_mu_);
  std::vector<std::int64_t> auto_steps_ GUARDED_BY(write_mu_);
  std::vector<std::int64_t> auto_ts_ GUARDED_BY(write_mu_);
  // The decoded open (not full) last chunk of recently appended series, so a small append need
  // not decode it again. Holds only states written by appends that were not rolled back: every
  // rollback and DeleteRun clears it; an entry is used only when its (seq, count) match the
  // series row. At most options_.open_chunk_cache_points points.
  struct OpenChunk {
    std::int64_t seq;
    PointColumns cols;
    std::list<std::int64_t>::iterator lru;
  };
  std::unordered_map<std::int64_t, OpenChunk> open_ GUARDED_BY(write_mu_);
  std::list<std::int64_t> open_lru_ GUARDED_BY(write_mu_);  // series ids, most recent first
  std::size_t open_points_ GUARDED_BY(write_mu_) = 0;
  Mutex read_mu_;
  std::unique_ptr<Conn> reader_ GUARDED_BY(read_mu_);
};

namespace {

void AppendJsonString(std::string* out, const std::string& s) {
  *out += nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

template <typename T>
void AppendNumber(std::string* out, T v) {
  if constexpr (std::is_floating_point_v<T>) {
    AppendJsonDouble(out, v);
  } else {
    char b[24];
    auto r = std::to_chars(b, b + sizeof b, v);
    out->append(b, r.ptr);
  }
}

template <typename T>
void AppendArray(std::string* out, const std::vector<T>& v) {
  out->push_back('[');
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out->push_back(',');
    AppendNumber(out, v[i]);
  }
  out->push_back(']');
}

}  // namespace

std::string SeriesListToJson(const std::vector<SeriesInfo>& series) {
  std::string out = "{\"metrics\":[";
  for (size_t i = 0; i < series.size(); ++i) {
    const SeriesInfo& s = series[i];
    if (i) out += ',';
    out += "{\"name\":";
    AppendJsonString(&out, s.name);
    out += ",\"count\":";
    AppendNumber(&out, s.count);
    out += ",\"last_value\":";
    AppendJsonDouble(&out, s.last_value);
    out += ",\"last_step\":";
    AppendNumber(&out, s.last_step);
    out += ",\"last_timestamp\":";
    AppendNumber(&out, s.last_timestamp);
    out += ",\"min\":";
    if (s.min) {
      AppendJsonDouble(&out, *s.min);
    } else {
      out += "null";
    }
    out += ",\"max\":";
    if (s.max) {
      AppendJsonDouble(&out, *s.max);
    } else {
      out += "null";
    }
    out += '}';
  }
  out += "]}";
  return out;
}

std::string SeriesDataToJson(const SeriesData& data) {
  std::string out;
  out.reserve(64 + data.values.size() * 40);
  out += "{\"name\":";
  AppendJsonString(&out, data.name);
  out += ",\"count\":";
  AppendNumber(&out, data.count);
  out += data.downsampled ? ",\"downsampled\":true" : ",\"downsampled\":false";
  out += ",\"steps\":";
  AppendArray(&out, data.steps);
  out += ",\"timestamps\":";
  AppendArray(&out, data.timestamps);
  out += ",\"values\":";
  AppendArray(&out, data.values);
  out += '}';
  return out;
}

std::string SeriesDataToCsv(const SeriesData& data) {
  std::string out = "step,timestamp,value\n";
  out.reserve(out.size() + data.values.size() * 40);
  for (size_t i = 0; i < data.values.size(); ++i) {
    AppendNumber(&out, data.steps[i]);
    out += ',';
    AppendNumber(&out, data.timestamps[i]);
    out += ',';
    const double v = data.values[i];
    if (std::isnan(v)) {
      out += "NaN";
    } else if (std::isinf(v)) {
      out += v > 0 ? "Infinity" : "-Infinity";
    } else {
      AppendJsonDouble(&out, v);
    }
    out += '\n';
  }
  return out;
}

StatusOr<std::unique_ptr<SeriesStore>> SeriesStore::Open(const std::string& path,
                                                         SeriesStoreOptions options) {
  if (options.chunk_points == 0) return InvalidArgument("chunk_points must be at least 1");
  TY_ASSIGN_OR_RETURN(auto writer, OpenConn(path, options.durable));
  TY_ASSIGN_OR_RETURN(auto reader, OpenConn(path, options.durable));
  auto impl = std::make_unique<Impl>(options, std::move(writer), std::move(reader));
  TY_RETURN_IF_ERROR(impl->Migrate());
  return std::unique_ptr<SeriesStore>(new SeriesStore(std::move(impl), options));
}

SeriesStore::SeriesStore(std::unique_ptr<Impl> impl, SeriesStoreOptions options)
    : impl_(std::move(impl)), options_(options) {}
SeriesStore::~SeriesStore() = default;

Status SeriesStore::Append(const std::string& run_id, const MetricBatch& batch,
                           std::int64_t now_ms) {
  return impl_->Append(run_id, batch, now_ms, {}).status();
}
StatusOr<AppendResult> SeriesStore::AppendOnce(const std::string& run_id, std::string_view key,
                                               const MetricBatch& batch, std::int64_t now_ms) {
  if (key.empty()) return InvalidArgument("an idempotency key must not be empty");
  return impl_->Append(run_id, batch, now_ms, key);
}
Status SeriesStore::ForgetKeysBefore(std::int64_t cutoff_ms) {
  return impl_->ForgetKeysBefore(cutoff_ms);
}
Status SeriesStore::RecordFiles(const std::string& run_id, const std::vector<RunFile>& files,
                                std::int64_t now_ms) {
  return impl_->RecordFiles(run_id, files, now_ms);
}
StatusOr<std::vector<RunFile>> SeriesStore::ListFiles(const std::string& run_id) {
  return impl_->ListFiles(run_id);
}
StatusOr<std::vector<SeriesInfo>> SeriesStore::ListSeries(const std::string& run_id) {
  return impl_->ListSeries(run_id);
}
StatusOr<SeriesData> SeriesStore::ReadSeries(const std::string& run_id, const std::string& name,
                                             std::optional<std::size_t> max_points) {
  return impl_->ReadSeries(run_id, name, max_points);
}
Status SeriesStore::DeleteRun(const std::string& run_id) { return impl_->DeleteRun(run_id); }
Status SeriesStore::AppendEntries(const std::string& run_id, const std::vector<Entry>& entries,
                                  std::int64_t now_ms) {
  return impl_->AppendEntries(run_id, entries, now_ms);
}
StatusOr<std::vector<Entry>> SeriesStore::ListEntries(const std::string& run_id,
                                                      const std::optional<std::string>& name) {
  return impl_->ListEntries(run_id, name);
}

}  // namespace trainyard::tracking

#pragma once

// Durable storage of a workspace's run metrics: scalar series as compressed chunks
// (chunk.h) and non-scalar entries as typed JSON (entries.h), in a SQLite file of its own
// (`<workspace>/tracking.db`), apart from trainyard.db so metric ingest never contends with
// the scheduler's writes.
//
// Layout: one row per (run, name) series with its summary (count, last point, min, max,
// highest step); its points in chunks of up to `chunk_points` points, one row each, keyed
// (series, seq). An append fills the series' last chunk up to `chunk_points` before starting a
// new one, so many small batches do not leave many tiny chunks.
//
// Durability: WAL with synchronous=FULL; when Append returns OK the points are on disk.
//
// Thread-safety: all methods may be called from any thread. Writes are serialised on one
// connection; appends from several threads are group-committed (one transaction and one fsync
// for all the batches waiting, each batch still all or nothing). Reads use a second connection
// and run beside a write (WAL snapshot isolation).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/tracking/entries.h"
#include "trainyard/tracking/metric_codec.h"

namespace trainyard::tracking {

struct SeriesStoreOptions {
  // Distinct metric names a run may have; a batch that would exceed it is refused whole.
  std::size_t max_names_per_run = 100'000;
  // Entries (rows, tables, images, ...) a run may have; a batch that would exceed it is refused
  // whole.
  std::uint64_t max_entries_per_run = 1'000'000;
  // Points a single series may hold (the issue asks for at least 100 M).
  std::uint64_t max_points_per_series = 1'000'000'000;
  // Points per chunk (the unit of compression, of a read and of rewrite on small appends).
  // 1024 measured best (bench/metrics): a small append rewrites the open chunk, ~2.7x cheaper
  // than at 4096, while bulk ingest and 1 M-point reads stay within 10% of 4096.
  std::uint32_t chunk_points = 1024;
  // Points of decoded open chunks kept in memory (24 bytes each; 3 MiB by default) so small
  // appends do not decode the chunk they extend; 0 turns the cache off.
  std::size_t open_chunk_cache_points = 128 * 1024;
  // synchronous=FULL (an acknowledged append survives power loss). Off only in tests/benches
  // that measure something else: synchronous=NORMAL then.
  bool durable = true;
};

// Summary of one series, as `GET /metrics` lists it.
struct SeriesInfo {
  std::string name;
  std::uint64_t count = 0;
  double last_value = 0;
  std::int64_t last_step = 0;
  std::int64_t last_timestamp = 0;
  // Over the non-NaN values; absent when all are NaN.
  std::optional<double> min;
  std::optional<double> max;
};

// Points of one series, in the order they were appended.
struct SeriesData {
  std::string name;
  // Points in the whole series (not in the answer when downsampled).
  std::uint64_t count = 0;
  bool downsampled = false;
  std::vector<std::int64_t> steps;
  std::vector<std::int64_t> timestamps;
  std::vector<double> values;
};

// `{"metrics": [{"name", "count", "last_value", "last_step", "last_timestamp", "min", "max"}]}`
// (GET /metrics); non-finite numbers as "NaN"/"Infinity"/"-Infinity", an absent min/max null.
std::string SeriesListToJson(const std::vector<SeriesInfo>& series);
// `{"name", "count", "downsampled", "steps", "timestamps", "values"}` (GET /metrics/{name}).
std::string SeriesDataToJson(const SeriesData& data);
// `step,timestamp,value` lines with a header line (GET /metrics/{name}?format=csv); non-finite
// values as NaN, Infinity, -Infinity.
std::string SeriesDataToCsv(const SeriesData& data);

// What AppendOnce did.
struct AppendResult {
  std::uint64_t points = 0;  // points of the batch (when replayed: stored the first time)
  bool replayed = false;     // the key had been applied before; nothing was stored now
};

// A file of a run recorded with its digest: a file the run uploaded, or one of ./outputs
// collected when the run ended.
struct RunFile {
  std::string path;  // relative to the run's folder, e.g. "outputs/model.pkl"
  std::uint64_t size = 0;
  std::string digest;            // "sha256:<64 hex>"
  std::string origin;            // "upload" | "output"
  std::int64_t recorded_ms = 0;  // 0 on RecordFiles: the call's now_ms
};

class SeriesStore {
 public:
  // Opens (creating when missing) the store at `path` and applies pending migrations.
  // Unavailable when the file cannot be opened; FailedPrecondition when it was written by a
  // newer trainyard.
  static StatusOr<std::unique_ptr<SeriesStore>> Open(const std::string& path,
                                                     SeriesStoreOptions options = {});
  ~SeriesStore();
  SeriesStore(const SeriesStore&) = delete;
  SeriesStore& operator=(const SeriesStore&) = delete;

  // Appends every series of `batch` to run `run_id` in one transaction: all or nothing, durable
  // when it returns OK. Series without steps continue after the series' highest step so far
  // (0, 1, ... for a new series); without timestamps they get `now_ms`. The batch is trusted
  // to be decoded (metric_codec.h) — names are validated again, cheaply.
  // InvalidArgument naming the limit when the run would exceed max_names_per_run or a series
  // max_points_per_series; Internal on a storage error.
  Status Append(const std::string& run_id, const MetricBatch& batch, std::int64_t now_ms);

  // Append, at most once per (run, key): a batch whose key was applied to the run before is
  // not stored again and answers `replayed` with the points stored the first time. The key is
  // stored in the batch's own transaction, so a crash keeps both or neither. Concurrent calls
  // with one key store the batch once. InvalidArgument for an empty key.
  StatusOr<AppendResult> AppendOnce(const std::string& run_id, std::string_view key,
                                    const MetricBatch& batch, std::int64_t now_ms);
  // Forgets the keys applied before `cutoff_ms` (a retry that late is stored again).
  Status ForgetKeysBefore(std::int64_t cutoff_ms);

  // Records (or replaces, by path) files of a run with their digests, in one transaction.
  Status RecordFiles(const std::string& run_id, const std::vector<RunFile>& files,
                     std::int64_t now_ms);
  // The run's recorded files ordered by path.
  StatusOr<std::vector<RunFile>> ListFiles(const std::string& run_id);

  // The run's series ordered by name; empty when it has none (the store does not know runs).
  StatusOr<std::vector<SeriesInfo>> ListSeries(const std::string& run_id);

  // One series: every point, or with `max_points` set and the series longer than that, at most
  // `max_points` points chosen by M4 buckets over the point order (each bucket keeps its first,
  // last, minimum and maximum point; NaN never counts as an extreme), so the global minimum and
  // maximum are always in the answer. NotFound for an unknown series; InvalidArgument for
  // max_points < 2.
  StatusOr<SeriesData> ReadSeries(const std::string& run_id, const std::string& name,
                                  std::optional<std::size_t> max_points = std::nullopt);

  // Deletes the run's series, entries, idempotency keys and file records. OK when it has none.
  Status DeleteRun(const std::string& run_id);

  // Appends entries, validated per kind (entries.h), in one transaction; a missing timestamp
  // becomes `now_ms`. InvalidArgument `entry 3 ("conf"): ...` and nothing stored on a bad one.
  Status AppendEntries(const std::string& run_id, const std::vector<Entry>& entries,
                       std::int64_t now_ms);

  // The run's entries in the order they were logged; only those named `name` when given.
  StatusOr<std::vector<Entry>> ListEntries(const std::string& run_id,
                                           const std::optional<std::string>& name = std::nullopt);

  const SeriesStoreOptions& options() const { return options_; }

 private:
  class Impl;
  SeriesStore(std::unique_ptr<Impl> impl, SeriesStoreOptions options);

  std::unique_ptr<Impl> impl_;
  SeriesStoreOptions options_;
};

}  // namespace trainyard::tracking

// Metric storage speed (DESIGN.md performance goals), with its anchor measured in the same run:
//
//   ingest:   decode a binary body of 100k points (10 series x 10k, steps and timestamps
//             present, as the C++ client sends) + SeriesStore::Append, durable
//             (WAL, synchronous=FULL): points/s. Goal >= 2 M points/s.
//   baseline: the same points as one INSERT per point in 1000-point transactions, WAL,
//             synchronous=FULL: points/s; the ratio ingest / baseline is printed.
//   read:     ReadSeries of a 1 M-point series downsampled to 2000 points: ms. Goal <= 50 ms.
//
// Also the parts, to show where the time goes: body encode/decode, chunk encode/decode,
// Append without fsync (synchronous=NORMAL), full 1 M-point read.
//
//   metrics_bench [--dir=/var/tmp] [--chunk_points=N] [google benchmark flags]
// Files go to --dir (default /var/tmp: on disk, where a workspace lives; not tmpfs).

#include <benchmark/benchmark.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "trainyard/common/util.h"
#include "trainyard/tracking/chunk.h"
#include "trainyard/tracking/metric_codec.h"
#include "trainyard/tracking/series_store.h"

namespace fs = std::filesystem;
using namespace trainyard;
using namespace trainyard::tracking;

namespace {

std::string g_dir = "/var/tmp";
std::uint32_t g_chunk_points = SeriesStoreOptions{}.chunk_points;
// Figures of the last (final) run of each benchmark, for the summary.
std::map<std::string, double> g_result;

constexpr int kSeries = 10;
constexpr int kPointsPerSeries = 10'000;
constexpr int kBatchPoints = kSeries * kPointsPerSeries;

// Training-like data: a noisy decaying loss, regular steps, a ~100 ms jittery clock.
MetricBatch MakeBatch(std::int64_t first_step, std::mt19937_64* rng) {
  MetricBatch b;
  for (int s = 0; s < kSeries; ++s) {
    MetricSeries m;
    m.name = "train/metric_" + std::to_string(s);
    std::int64_t ts = 1732600000000 + first_step * 100;
    for (int i = 0; i < kPointsPerSeries; ++i) {
      const double x = static_cast<double>(first_step + i);
      m.values.push_back(2.0 * std::exp(-x / 1e5) + static_cast<double>((*rng)() % 10000) / 1e5);
      m.steps.push_back(first_step + i);
      ts += 95 + static_cast<std::int64_t>((*rng)() % 10);
      m.timestamps.push_back(ts);
    }
    b.series.push_back(std::move(m));
  }
  return b;
}

class TempDir {
 public:
  TempDir() : path_(fs::path(g_dir) / ("trainyard-bench-metrics-" + RandomHex(6))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

SeriesStoreOptions Options() {
  SeriesStoreOptions o;
  o.chunk_points = g_chunk_points;
  return o;
}

// CPU time of the calling thread (the append runs on it; SQLite has no threads of its own).
double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

void BM_EncodeBody(benchmark::State& state) {
  std::mt19937_64 rng(1);
  MetricBatch b = MakeBatch(0, &rng);
  for (auto _ : state) {
    std::string body = EncodeMetricsBinary(b);
    benchmark::DoNotOptimize(body.data());
  }
  state.counters["points/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kBatchPoints, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EncodeBody)->Unit(benchmark::kMillisecond);

void BM_DecodeBody(benchmark::State& state) {
  std::mt19937_64 rng(1);
  const std::string body = EncodeMetricsBinary(MakeBatch(0, &rng));
  for (auto _ : state) {
    auto b = DecodeMetricsBinary(body);
    benchmark::DoNotOptimize(b.ok());
  }
  state.counters["points/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kBatchPoints, benchmark::Counter::kIsRate);
  state.counters["body_MB"] = static_cast<double>(body.size()) / 1e6;
}
BENCHMARK(BM_DecodeBody)->Unit(benchmark::kMillisecond);

void BM_DecodeBodyJson(benchmark::State& state) {
  std::mt19937_64 rng(1);
  const std::string body = EncodeMetricsJson(MakeBatch(0, &rng));
  for (auto _ : state) {
    auto b = DecodeMetricsJson(body);
    benchmark::DoNotOptimize(b.ok());
  }
  state.counters["points/s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kBatchPoints, benchmark::Counter::kIsRate);
  state.counters["body_MB"] = static_cast<double>(body.size()) / 1e6;
}
BENCHMARK(BM_DecodeBodyJson)->Unit(benchmark::kMillisecond);

void BM_ChunkEncode(benchmark::State& state) {
  std::mt19937_64 rng(1);
  MetricBatch b = MakeBatch(0, &rng);
  const auto& s = b.series[0];
  const size_t n = std::min<size_t>(g_chunk_points, kPointsPerSeries);
  std::string out;
  for (auto _ : state) {
    out.clear();
    EncodeChunk(std::span(s.steps).first(n), std::span(s.timestamps).first(n),
                std::span(s.values).first(n), &out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["points/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * n, benchmark::Counter::kIsRate);
  state.counters["bytes/point"] = static_cast<double>(out.size()) / n;
  g_result["bytes_per_point"] = static_cast<double>(out.size()) / n;
}
BENCHMARK(BM_ChunkEncode);

void BM_ChunkDecode(benchmark::State& state) {
  std::mt19937_64 rng(1);
  MetricBatch b = MakeBatch(0, &rng);
  const auto& s = b.series[0];
  const size_t n = std::min<size_t>(g_chunk_points, kPointsPerSeries);
  std::string enc;
  EncodeChunk(std::span(s.steps).first(n), std::span(s.timestamps).first(n),
              std::span(s.values).first(n), &enc);
  PointColumns cols;
  for (auto _ : state) {
    cols.clear();
    if (!DecodeChunk(enc, &cols).ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(cols.values.data());
  }
  state.counters["points/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * n, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ChunkDecode);

// Decode + Append of 100k-point bodies into one run, as the daemon does per request.
void Ingest(benchmark::State& state, bool durable, const char* key) {
  TempDir dir;
  SeriesStoreOptions o;
  o.chunk_points = g_chunk_points;
  o.durable = durable;
  auto store = SeriesStore::Open(dir.File("tracking.db"), o);
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return;
  }
  // Bodies prepared up front (the client's work); each iteration continues the series.
  std::mt19937_64 rng(1);
  std::vector<std::string> bodies;
  for (int i = 0; i < 8; ++i) bodies.push_back(EncodeMetricsBinary(MakeBatch(0, &rng)));
  std::int64_t iter = 0;
  double decode_s = 0, append_s = 0, append_cpu_s = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto batch = DecodeMetricsBinary(bodies[static_cast<size_t>(iter) % bodies.size()]);
    if (!batch.ok()) {
      state.SkipWithError(batch.status().ToString().c_str());
      return;
    }
    for (auto& s : batch->series) {  // Continue the steps (the client would send these).
      for (auto& st : s.steps) st += iter * kPointsPerSeries;
    }
    const auto t1 = std::chrono::steady_clock::now();
    const double c1 = ThreadCpuSeconds();
    Status st = (*store)->Append("run_1", *batch, NowMillis());
    append_cpu_s += ThreadCpuSeconds() - c1;
    const auto t2 = std::chrono::steady_clock::now();
    if (!st.ok()) {
      state.SkipWithError(st.ToString().c_str());
      return;
    }
    decode_s += Seconds(t1 - t0);
    append_s += Seconds(t2 - t1);
    ++iter;
  }
  const double points = static_cast<double>(iter) * kBatchPoints;
  state.counters["points/s"] = benchmark::Counter(points, benchmark::Counter::kIsRate);
  state.counters["decode_ms"] = decode_s * 1e3 / static_cast<double>(iter);
  state.counters["append_ms"] = append_s * 1e3 / static_cast<double>(iter);
  g_result[key] = points / (decode_s + append_s);
  g_result[std::string(key) + "_decode_ms"] = decode_s * 1e3 / static_cast<double>(iter);
  g_result[std::string(key) + "_append_ms"] = append_s * 1e3 / static_cast<double>(iter);
  g_result[std::string(key) + "_append_cpu_ms"] = append_cpu_s * 1e3 / static_cast<double>(iter);
}

void BM_IngestDurable(benchmark::State& state) { Ingest(state, true, "ingest"); }
BENCHMARK(BM_IngestDurable)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

void BM_IngestNoFsync(benchmark::State& state) { Ingest(state, false, "ingest_nosync"); }
BENCHMARK(BM_IngestNoFsync)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// Many small requests (what an SDK flushing every few hundred ms sends): 10 series x 10 points
// per Append, each merged into the series' open chunk. Durable.
void BM_IngestSmallBatches(benchmark::State& state) {
  TempDir dir;
  auto store = SeriesStore::Open(dir.File("tracking.db"), Options());
  if (!store.ok()) {
    state.SkipWithError(store.status().ToString().c_str());
    return;
  }
  std::mt19937_64 rng(1);
  MetricBatch full = MakeBatch(0, &rng);
  MetricBatch small;
  for (auto& s : full.series) {
    small.series.push_back(
        {s.name, std::vector<double>(s.values.begin(), s.values.begin() + 10), {}, {}});
  }
  std::int64_t iter = 0;
  for (auto _ : state) {
    Status st = (*store)->Append("run_1", small, NowMillis());
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
    ++iter;
  }
  state.counters["points/s"] =
      benchmark::Counter(static_cast<double>(iter) * 100, benchmark::Counter::kIsRate);
  state.counters["requests/s"] =
      benchmark::Counter(static_cast<double>(iter), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_IngestSmallBatches)->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(2.0);

// The same small requests from 4 threads (4 runs reporting at once): group commit shares fsyncs.
void BM_IngestSmallBatchesConcurrent(benchmark::State& state) {
  static std::unique_ptr<TempDir> dir;
  static std::unique_ptr<SeriesStore> store;
  if (state.thread_index() == 0) {
    dir = std::make_unique<TempDir>();
    store = std::move(SeriesStore::Open(dir->File("tracking.db"), Options())).value();
  }
  MetricBatch small;
  for (int s = 0; s < kSeries; ++s) {
    small.series.push_back(
        {"train/metric_" + std::to_string(s), std::vector<double>(10, 0.5), {}, {}});
  }
  const std::string run = "run_" + std::to_string(state.thread_index());
  for (auto _ : state) {
    Status st = store->Append(run, small, NowMillis());
    if (!st.ok()) state.SkipWithError(st.ToString().c_str());
  }
  state.counters["requests/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  if (state.thread_index() == 0) {
    store.reset();
    dir.reset();
  }
}
BENCHMARK(BM_IngestSmallBatchesConcurrent)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->Threads(4)
    ->MinTime(2.0);

// The anchor: one INSERT per point, 1000-point transactions, WAL, synchronous=FULL.
void BM_BaselineRowPerPoint(benchmark::State& state) {
  TempDir dir;
  sqlite3* db = nullptr;
  sqlite3_open(dir.File("rows.db").c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
               "CREATE TABLE points (series_id INTEGER NOT NULL, step INTEGER NOT NULL,"
               " timestamp INTEGER NOT NULL, value REAL)",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO points VALUES (?, ?, ?, ?)", -1, &ins, nullptr);
  std::mt19937_64 rng(1);
  const MetricBatch batch = MakeBatch(0, &rng);
  std::int64_t iter = 0;
  double total_s = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    int in_txn = 0;
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    for (int s = 0; s < kSeries; ++s) {
      const auto& m = batch.series[static_cast<size_t>(s)];
      for (int i = 0; i < kPointsPerSeries; ++i) {
        sqlite3_bind_int64(ins, 1, s);
        sqlite3_bind_int64(ins, 2, m.steps[static_cast<size_t>(i)] + iter * kPointsPerSeries);
        sqlite3_bind_int64(ins, 3, m.timestamps[static_cast<size_t>(i)]);
        sqlite3_bind_double(ins, 4, m.values[static_cast<size_t>(i)]);
        if (sqlite3_step(ins) != SQLITE_DONE) state.SkipWithError(sqlite3_errmsg(db));
        sqlite3_reset(ins);
        if (++in_txn == 1000) {
          sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
          sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
          in_txn = 0;
        }
      }
    }
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    total_s += Seconds(std::chrono::steady_clock::now() - t0);
    ++iter;
  }
  sqlite3_finalize(ins);
  sqlite3_close(db);
  const double points = static_cast<double>(iter) * kBatchPoints;
  state.counters["points/s"] = benchmark::Counter(points, benchmark::Counter::kIsRate);
  g_result["baseline"] = points / total_s;
}
BENCHMARK(BM_BaselineRowPerPoint)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// A store holding one 1 M-point series, built once.
struct ReadFixture {
  TempDir dir;
  std::unique_ptr<SeriesStore> store;
  ReadFixture() {
    SeriesStoreOptions o;
    o.chunk_points = g_chunk_points;
    o.durable = false;
    store = std::move(SeriesStore::Open(dir.File("tracking.db"), o)).value();
    std::mt19937_64 rng(2);
    for (int b = 0; b < 10; ++b) {  // 10 x 100k points, one series.
      MetricBatch batch = MakeBatch(static_cast<std::int64_t>(b) * kPointsPerSeries, &rng);
      MetricSeries all;
      all.name = "loss";
      for (auto& s : batch.series) {
        all.values.insert(all.values.end(), s.values.begin(), s.values.end());
      }
      MetricBatch one;
      one.series.push_back(std::move(all));
      if (!store->Append("run_1", one, 1732600000000 + b).ok()) std::abort();
    }
  }
};
ReadFixture& Fixture() {
  static ReadFixture f;
  return f;
}

void BM_ReadDownsampled2000(benchmark::State& state) {
  auto& f = Fixture();
  size_t got = 0;
  double total_s = 0;
  std::int64_t iter = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto d = f.store->ReadSeries("run_1", "loss", 2000);
    total_s += Seconds(std::chrono::steady_clock::now() - t0);
    if (!d.ok() || d->count != 1'000'000) state.SkipWithError("read failed");
    got = d->values.size();
    ++iter;
  }
  state.counters["points_out"] = static_cast<double>(got);
  g_result["read_ms"] = total_s * 1e3 / static_cast<double>(iter);
}
BENCHMARK(BM_ReadDownsampled2000)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ReadFull1M(benchmark::State& state) {
  auto& f = Fixture();
  double total_s = 0;
  std::int64_t iter = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto d = f.store->ReadSeries("run_1", "loss");
    total_s += Seconds(std::chrono::steady_clock::now() - t0);
    if (!d.ok() || d->values.size() != 1'000'000) state.SkipWithError("read failed");
    ++iter;
  }
  g_result["read_full_ms"] = total_s * 1e3 / static_cast<double>(iter);
}
BENCHMARK(BM_ReadFull1M)->Unit(benchmark::kMillisecond)->UseRealTime();

const char* Verdict(bool met) { return met ? "met" : "MISSED"; }

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--dir=", 6) == 0) {
      g_dir = argv[i] + 6;
    } else if (std::strncmp(argv[i], "--chunk_points=", 15) == 0) {
      g_chunk_points = static_cast<std::uint32_t>(std::atoi(argv[i] + 15));
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  auto get = [](const char* k) {
    auto it = g_result.find(k);
    return it == g_result.end() ? std::nan("") : it->second;
  };
  const double ingest = get("ingest"), base = get("baseline"), read = get("read_ms");
  std::printf("\n");
  if (!std::isnan(ingest)) {
    std::printf("ingest, decode + Append, durable:   %.2f M points/s  (goal >= 2 M: %s)\n",
                ingest / 1e6, Verdict(ingest >= 2e6));
    std::printf(
        "  per 100k-point body: decode %.2f ms, append+commit+fsync %.2f ms, of which CPU %.2f "
        "ms (chunk encoding, SQLite copying ~0.9 MB of chunks; the rest waits on write+fsync)\n",
        get("ingest_decode_ms"), get("ingest_append_ms"), get("ingest_append_cpu_ms"));
  }
  if (!std::isnan(get("ingest_nosync"))) {
    std::printf("  same without fsync (synchronous=NORMAL): %.2f M points/s, append %.2f ms\n",
                get("ingest_nosync") / 1e6, get("ingest_nosync_append_ms"));
  }
  if (!std::isnan(base)) {
    std::printf("baseline, row per point, 1000/txn, WAL, synchronous=FULL: %.2f M points/s\n",
                base / 1e6);
  }
  if (!std::isnan(ingest) && !std::isnan(base)) {
    std::printf("  ratio ingest / baseline: %.1fx\n", ingest / base);
  }
  if (!std::isnan(get("bytes_per_point"))) {
    std::printf("chunk size: %.2f bytes/point (raw columns: 24)\n", get("bytes_per_point"));
  }
  if (!std::isnan(read)) {
    std::printf("read 1 M points downsampled to 2000: %.2f ms  (goal <= 50 ms: %s)\n", read,
                Verdict(read <= 50));
  }
  if (!std::isnan(get("read_full_ms"))) {
    std::printf("  full read of the 1 M points: %.2f ms\n", get("read_full_ms"));
  }
  return 0;
}

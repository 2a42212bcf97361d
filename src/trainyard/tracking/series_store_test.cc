#include "trainyard/tracking/series_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "trainyard/common/util.h"

namespace trainyard::tracking {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr double kInf = std::numeric_limits<double>::infinity();

class SeriesStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tracking-test-" + RandomHex(6));
    fs::create_directories(dir_);
    path_ = (dir_ / "tracking.db").string();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  SeriesStore& Open(SeriesStoreOptions o = {}) {
    store_.reset();
    auto s = SeriesStore::Open(path_, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    return *store_;
  }
  // Chunks of a series, straight from the file.
  int ChunkCount() {
    sqlite3* db;
    sqlite3_open(path_.c_str(), &db);
    sqlite3_stmt* q;
    sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM chunks", -1, &q, nullptr);
    sqlite3_step(q);
    int n = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
  }

  fs::path dir_;
  std::string path_;
  std::unique_ptr<SeriesStore> store_;
};

MetricBatch One(std::string name, std::vector<double> values, std::vector<std::int64_t> steps = {},
                std::vector<std::int64_t> ts = {}) {
  MetricBatch b;
  b.series.push_back({std::move(name), std::move(values), std::move(steps), std::move(ts)});
  return b;
}

std::uint64_t Bits(double d) { return std::bit_cast<std::uint64_t>(d); }

TEST_F(SeriesStoreTest, AppendListRead) {
  SeriesStore& s = Open();
  ASSERT_TRUE(s.Append("r1", One("loss", {0.9, 0.5}, {0, 1}, {100, 200}), 999).ok());
  ASSERT_TRUE(s.Append("r1", One("acc", {0.1}), 1000).ok());
  ASSERT_TRUE(s.Append("r2", One("loss", {7}), 1000).ok());
  auto list = s.ListSeries("r1");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "acc");
  EXPECT_EQ((*list)[1].name, "loss");
  EXPECT_EQ((*list)[1].count, 2u);
  EXPECT_EQ((*list)[1].last_value, 0.5);
  EXPECT_EQ((*list)[1].last_step, 1);
  EXPECT_EQ((*list)[1].last_timestamp, 200);
  EXPECT_EQ(*(*list)[1].min, 0.5);
  EXPECT_EQ(*(*list)[1].max, 0.9);
  EXPECT_EQ((*list)[0].last_timestamp, 1000);  // Time of arrival.
  auto data = s.ReadSeries("r1", "loss");
  ASSERT_TRUE(data.ok());
  EXPECT_FALSE(data->downsampled);
  EXPECT_EQ(data->values, (std::vector<double>{0.9, 0.5}));
  EXPECT_EQ(data->steps, (std::vector<std::int64_t>{0, 1}));
  EXPECT_EQ(data->timestamps, (std::vector<std::int64_t>{100, 200}));
  EXPECT_EQ(s.ReadSeries("r1", "nope").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(s.ListSeries("r9")->empty());
}

TEST_F(SeriesStoreTest, AutoStepsContinueAfterHighest) {
  SeriesStore& s = Open();
  ASSERT_TRUE(s.Append("r", One("x", {1, 2, 3}), 1).ok());
  ASSERT_TRUE(s.Append("r", One("x", {4}, {100}), 1).ok());
  ASSERT_TRUE(s.Append("r", One("x", {5}, {50}), 1).ok());  // Lower step: allowed, kept.
  ASSERT_TRUE(s.Append("r", One("x", {6, 7}), 1).ok());
  auto d = s.ReadSeries("r", "x");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->steps, (std::vector<std::int64_t>{0, 1, 2, 100, 50, 101, 102}));
  EXPECT_EQ(s.ListSeries("r")->at(0).last_step, 102);
  // The same name twice in one batch continues too.
  MetricBatch b = One("y", {1, 2});
  b.series.push_back({"y", {3}, {}, {}});
  ASSERT_TRUE(s.Append("r", b, 1).ok());
  EXPECT_EQ(s.ReadSeries("r", "y")->steps, (std::vector<std::int64_t>{0, 1, 2}));
}

TEST_F(SeriesStoreTest, NonFiniteValuesAreFaithful) {
  SeriesStore& s = Open();
  const double nan_payload = std::bit_cast<double>(0x7ff8000000abcdefull);
  std::vector<double> v = {nan_payload, kInf, -kInf, -0.0, 0.0, std::nan("")};
  ASSERT_TRUE(s.Append("r", One("v", v), 1).ok());
  auto d = s.ReadSeries("r", "v");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->values.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(Bits(d->values[i]), Bits(v[i])) << i;
  auto info = s.ListSeries("r")->at(0);
  EXPECT_TRUE(std::isnan(info.last_value));
  EXPECT_EQ(*info.min, -kInf);
  EXPECT_EQ(*info.max, kInf);
  ASSERT_TRUE(s.Append("r", One("allnan", {std::nan(""), std::nan("")}), 1).ok());
  info = s.ListSeries("r")->at(0);
  EXPECT_EQ(info.name, "allnan");
  EXPECT_FALSE(info.min.has_value());
  EXPECT_FALSE(info.max.has_value());
}

TEST_F(SeriesStoreTest, SmallBatchesMergeIntoTheOpenChunk) {
  SeriesStoreOptions o;
  o.chunk_points = 100;
  SeriesStore& s = Open(o);
  for (int i = 0; i < 250; ++i) {
    ASSERT_TRUE(s.Append("r", One("x", {static_cast<double>(i)}), i).ok());
  }
  EXPECT_EQ(ChunkCount(), 3);  // 100 + 100 + 50, not 250.
  // A large batch fills the open chunk, then whole chunks.
  std::vector<double> big(275, 1.5);
  ASSERT_TRUE(s.Append("r", One("x", big), 1).ok());
  EXPECT_EQ(ChunkCount(), 6);  // 50 + 50 | 100 | 100 | 25.
  auto d = s.ReadSeries("r", "x");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->values.size(), 525u);
  for (int i = 0; i < 250; ++i) {
    EXPECT_EQ(d->values[i], i);
    EXPECT_EQ(d->steps[i], i);
    EXPECT_EQ(d->timestamps[i], i);
  }
  EXPECT_EQ(d->steps[524], 524);
}

// Random small and large appends over a few series, some batches refused, with a tiny chunk
// size and an open-chunk cache small enough to evict: the store matches a model in memory.
TEST_F(SeriesStoreTest, MatchesModelUnderRandomAppends) {
  for (std::size_t cache : {std::size_t{0}, std::size_t{40}, std::size_t{100000}}) {
    SeriesStoreOptions o;
    o.chunk_points = 16;
    o.durable = false;
    o.max_points_per_series = 600;
    o.open_chunk_cache_points = cache;
    store_.reset();
    fs::remove(path_);
    fs::remove(path_ + "-wal");
    fs::remove(path_ + "-shm");
    SeriesStore& s = Open(o);
    std::map<std::string, std::vector<double>> model;
    std::mt19937_64 rng(cache + 1);
    for (int b = 0; b < 300; ++b) {
      MetricBatch batch;
      const int series = 1 + static_cast<int>(rng() % 3);
      for (int k = 0; k < series; ++k) {
        std::vector<double> v(1 + rng() % (rng() % 8 == 0 ? 40 : 5));
        for (auto& x : v) x = static_cast<double>(rng() % 1000);
        batch.series.push_back({"s" + std::to_string(rng() % 5), std::move(v), {}, {}});
      }
      std::map<std::string, std::vector<double>> next = model;
      bool fits = true;
      for (const auto& m : batch.series) {
        auto& col = next[m.name];
        col.insert(col.end(), m.values.begin(), m.values.end());
        fits = fits && col.size() <= o.max_points_per_series;
      }
      Status st = s.Append("r", batch, 1);
      ASSERT_EQ(st.ok(), fits) << st.ToString();
      if (fits) model = std::move(next);
      if (b % 50 == 49 || b == 299) {
        for (const auto& [name, values] : model) {
          auto d = s.ReadSeries("r", name);
          ASSERT_TRUE(d.ok()) << d.status().ToString();
          ASSERT_EQ(d->values, values) << name << " cache " << cache;
          for (size_t i = 0; i < d->steps.size(); ++i) ASSERT_EQ(d->steps[i], std::int64_t(i));
        }
      }
    }
  }
}

TEST_F(SeriesStoreTest, BatchIsAllOrNothing) {
  SeriesStoreOptions o;
  o.max_points_per_series = 10;
  SeriesStore& s = Open(o);
  ASSERT_TRUE(s.Append("r", One("a", {1, 2, 3}), 1).ok());
  MetricBatch b = One("a", {4});
  b.series.push_back({"new", {1}, {}, {}});
  b.series.push_back({"a", std::vector<double>(7, 0.0), {}, {}});  // 3 + 1 + 7 > 10.
  Status st = s.Append("r", b, 1);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("series 2 (\"a\"): the series would have 11 points; the "
                                      "limit is 10 points per series"));
  auto list = s.ListSeries("r");
  ASSERT_EQ(list->size(), 1u);  // "new" was rolled back.
  EXPECT_EQ(list->at(0).count, 3u);
  EXPECT_EQ(s.ReadSeries("r", "a")->values.size(), 3u);
  // The store still works after the rollback.
  ASSERT_TRUE(s.Append("r", One("a", {4}), 1).ok());
  EXPECT_EQ(s.ReadSeries("r", "a")->steps.back(), 3);
}

TEST_F(SeriesStoreTest, NamesPerRunLimit) {
  SeriesStoreOptions o;
  o.max_names_per_run = 3;
  SeriesStore& s = Open(o);
  MetricBatch b;
  for (const char* n : {"a", "b", "c"}) b.series.push_back({n, {1}, {}, {}});
  ASSERT_TRUE(s.Append("r", b, 1).ok());
  ASSERT_TRUE(s.Append("r", One("a", {2}), 1).ok());  // Existing name: fine.
  Status st = s.Append("r", One("d", {1}), 1);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("the run already has 3 metric names; the limit is 3 names "
                                      "per run"));
  ASSERT_TRUE(s.Append("other", One("d", {1}), 1).ok());  // Per run.
  ASSERT_TRUE(s.DeleteRun("r").ok());
  ASSERT_TRUE(s.Append("r", One("d", {1}), 1).ok());  // Counted again from zero.
}

TEST(SeriesStoreOptionsTest, DefaultsMeetTheIssueLimits) {
  SeriesStoreOptions o;
  EXPECT_GE(o.max_names_per_run, 10'000u);
  EXPECT_GE(o.max_points_per_series, 100'000'000u);
}

TEST_F(SeriesStoreTest, TenThousandNamesInOneRun) {
  SeriesStore& s = Open();
  MetricBatch b;
  for (int i = 0; i < 10000; ++i) {
    b.series.push_back({"metric/" + std::to_string(i), {static_cast<double>(i)}, {}, {}});
  }
  ASSERT_TRUE(s.Append("r", b, 1).ok());
  for (auto& x : b.series) x.values[0] += 0.5;
  ASSERT_TRUE(s.Append("r", b, 2).ok());
  auto list = s.ListSeries("r");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 10000u);
  for (const auto& i : *list) {
    EXPECT_EQ(i.count, 2u);
    EXPECT_EQ(i.last_step, 1);
  }
  auto d = s.ReadSeries("r", "metric/9999");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->values, (std::vector<double>{9999, 9999.5}));
}

TEST_F(SeriesStoreTest, DurableAcrossReopen) {
  {
    SeriesStore& s = Open();
    ASSERT_TRUE(s.Append("r", One("x", {1, 2, 3}), 5).ok());
    ASSERT_TRUE(
        s.AppendEntries("r", {{"l", EntryKind::kList, "[1,2]", 3, "d", std::nullopt}}, 9).ok());
  }
  SeriesStore& s = Open();
  auto d = s.ReadSeries("r", "x");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->values, (std::vector<double>{1, 2, 3}));
  ASSERT_TRUE(s.Append("r", One("x", {4}), 6).ok());
  EXPECT_EQ(s.ReadSeries("r", "x")->steps.back(), 3);
  auto e = s.ListEntries("r");
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->size(), 1u);
  EXPECT_EQ(e->at(0).timestamp, 9);
}

TEST_F(SeriesStoreTest, RefusesNewerSchema) {
  Open();
  store_.reset();
  sqlite3* db;
  sqlite3_open(path_.c_str(), &db);
  sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (99, 0)", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  auto s = SeriesStore::Open(path_);
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(SeriesStoreTest, ConcurrentAppendersAllPointsOnce) {
  SeriesStoreOptions o;
  o.chunk_points = 64;
  o.durable = false;  // This test is about interleaving, not fsync.
  SeriesStore& s = Open(o);
  constexpr int kThreads = 4, kBatches = 50, kPerBatch = 10;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        MetricBatch batch;
        std::vector<double> v;
        for (int k = 0; k < kPerBatch; ++k) v.push_back(t * 1e6 + b * kPerBatch + k);
        batch.series.push_back({"shared", v, {}, {}});
        batch.series.push_back({"own" + std::to_string(t), v, {}, {}});
        if (!s.Append("r", batch, 1).ok()) ++failures;
        if (b % 10 == 0 && !s.ReadSeries("r", "shared", 20).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto d = s.ReadSeries("r", "shared");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->values.size(), static_cast<size_t>(kThreads * kBatches * kPerBatch));
  std::set<double> unique(d->values.begin(), d->values.end());
  EXPECT_EQ(unique.size(), d->values.size());
  // Auto steps are 0..N-1, each once, and each batch's points are contiguous.
  for (size_t i = 0; i < d->steps.size(); ++i) EXPECT_EQ(d->steps[i], static_cast<int>(i));
  for (size_t i = 0; i < d->values.size(); i += kPerBatch) {
    for (int k = 1; k < kPerBatch; ++k) EXPECT_EQ(d->values[i + k], d->values[i] + k);
  }
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(s.ReadSeries("r", "own" + std::to_string(t))->values.size(),
              static_cast<size_t>(kBatches * kPerBatch));
  }
}

// Concurrent appends are committed in groups; a bad batch in a group fails alone.
TEST_F(SeriesStoreTest, GroupCommitIsolatesBadBatches) {
  SeriesStoreOptions o;
  o.max_points_per_series = 1000;
  SeriesStore& s = Open(o);  // Durable: fsync makes appends overlap and group.
  constexpr int kThreads = 4, kBatches = 30;
  std::atomic<int> good_ok{0}, bad_refused{0}, unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int b = 0; b < kBatches; ++b) {
        const bool bad = t == 0 && b % 2 == 1;
        MetricBatch batch = One("good" + std::to_string(t), {1, 2});
        // A bad batch: a valid first series, then one over the points limit.
        if (bad) batch.series.push_back({"huge", std::vector<double>(1001, 0.0), {}, {}});
        Status st = s.Append("r", batch, 1);
        if (bad && st.code() == StatusCode::kInvalidArgument) {
          ++bad_refused;
        } else if (!bad && st.ok()) {
          ++good_ok;
        } else {
          ++unexpected;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(bad_refused.load(), kBatches / 2);
  EXPECT_EQ(good_ok.load(), kThreads * kBatches - kBatches / 2);
  auto list = s.ListSeries("r");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), static_cast<size_t>(kThreads));              // No "huge".
  EXPECT_EQ(list->at(0).count, static_cast<std::uint64_t>(kBatches));  // good0: half its batches.
  for (int t = 1; t < kThreads; ++t) {
    EXPECT_EQ(list->at(static_cast<size_t>(t)).count, static_cast<std::uint64_t>(2 * kBatches));
  }
}

TEST_F(SeriesStoreTest, DownsamplingKeepsExtremesAndBound) {
  SeriesStoreOptions o;
  o.durable = false;
  SeriesStore& s = Open(o);
  std::mt19937_64 rng(3);
  std::vector<double> v(100000);
  for (auto& x : v) x = std::sin(static_cast<double>(&x - v.data()) / 500) + (rng() % 100) / 1e3;
  v[12345] = 50;   // Spike.
  v[77777] = -50;  // Dip.
  v[500] = std::nan("");
  ASSERT_TRUE(s.Append("r", One("x", v), 1).ok());
  for (size_t n : {2, 3, 4, 7, 100, 1000, 2000, 99999}) {
    auto d = s.ReadSeries("r", "x", n);
    ASSERT_TRUE(d.ok()) << n;
    EXPECT_TRUE(d->downsampled);
    EXPECT_EQ(d->count, 100000u);
    EXPECT_LE(d->values.size(), n) << n;
    EXPECT_GE(d->values.size(), std::min<size_t>(n, 2)) << n;
    EXPECT_EQ(d->steps.size(), d->values.size());
    EXPECT_TRUE(std::find(d->values.begin(), d->values.end(), 50.0) != d->values.end()) << n;
    EXPECT_TRUE(std::find(d->values.begin(), d->values.end(), -50.0) != d->values.end()) << n;
    EXPECT_TRUE(std::is_sorted(d->steps.begin(), d->steps.end())) << n;
    if (n >= 4) {
      EXPECT_EQ(d->steps.front(), 0);
      EXPECT_EQ(d->steps.back(), 99999);
    }
  }
  auto full = s.ReadSeries("r", "x", 100000);
  ASSERT_TRUE(full.ok());
  EXPECT_FALSE(full->downsampled);
  EXPECT_EQ(full->values.size(), 100000u);
  EXPECT_EQ(s.ReadSeries("r", "x", 1).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SeriesStoreTest, EntriesInOrderAndByName) {
  SeriesStore& s = Open();
  std::vector<Entry> es = {
      {"conf", EntryKind::kRow, R"({"a":1})", 0, "", 5},
      {"img", EntryKind::kImage, R"({"path":"images/img/0.png"})", 0, "", std::nullopt},
      {"conf", EntryKind::kRow, R"({"a":2})", 1, "second", std::nullopt},
  };
  ASSERT_TRUE(s.AppendEntries("r", es, 42).ok());
  auto all = s.ListEntries("r");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(all->at(1).name, "img");
  EXPECT_EQ(all->at(0).timestamp, 5);
  EXPECT_EQ(all->at(1).timestamp, 42);
  auto conf = s.ListEntries("r", std::string("conf"));
  ASSERT_EQ(conf->size(), 2u);
  EXPECT_EQ(conf->at(1).value_json, R"({"a":2})");
  EXPECT_EQ(conf->at(1).description, "second");
  // A bad entry: nothing stored.
  Status st = s.AppendEntries("r",
                              {{"ok", EntryKind::kList, "[1]", 0, "", 0},
                               {"bad", EntryKind::kTable, R"({"x":[1],"y":[]})", 0, "", 0}},
                              1);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("entry 1 (\"bad\"): value: column"));
  EXPECT_EQ(s.ListEntries("r")->size(), 3u);
  ASSERT_TRUE(s.DeleteRun("r").ok());
  EXPECT_TRUE(s.ListEntries("r")->empty());
}

TEST(SeriesJson, EncodesNonFiniteAsStrings) {
  std::vector<SeriesInfo> list = {{"loss", 3, std::nan(""), 2, 1700, std::nullopt, std::nullopt},
                                  {"acc\"x", 1, 0.5, 0, 1, -kInf, 0.5}};
  EXPECT_EQ(SeriesListToJson(list),
            R"({"metrics":[{"name":"loss","count":3,"last_value":"NaN","last_step":2,)"
            R"("last_timestamp":1700,"min":null,"max":null},{"name":"acc\"x","count":1,)"
            R"("last_value":0.5,"last_step":0,"last_timestamp":1,"min":"-Infinity","max":0.5}]})");
  SeriesData d{"v", 10, true, {0, 9}, {5, 6}, {kInf, 0.1}};
  EXPECT_EQ(SeriesDataToJson(d),
            R"({"name":"v","count":10,"downsampled":true,"steps":[0,9],"timestamps":[5,6],)"
            R"("values":["Infinity",0.1]})");
  EXPECT_EQ(SeriesDataToCsv(d), "step,timestamp,value\n0,5,Infinity\n9,6,0.1\n");
}

TEST_F(SeriesStoreTest, DeleteRun) {
  SeriesStore& s = Open();
  ASSERT_TRUE(s.Append("r", One("x", {1}), 1).ok());
  ASSERT_TRUE(s.Append("keep", One("x", {1}), 1).ok());
  ASSERT_TRUE(s.DeleteRun("r").ok());
  EXPECT_TRUE(s.ListSeries("r")->empty());
  EXPECT_EQ(s.ReadSeries("r", "x").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ListSeries("keep")->size(), 1u);
  EXPECT_EQ(ChunkCount(), 1);
  ASSERT_TRUE(s.DeleteRun("never").ok());
}

// A key is applied once per run: a resend answers "replayed" and stores nothing, also after
// the store was closed and opened again (a daemon restart), while the same key in another run
// or a refused batch's key stays free.
TEST_F(SeriesStoreTest, IdempotencyKeyAppliesOnceAcrossReopen) {
  SeriesStore& s = Open();
  auto first = s.AppendOnce("r", "k1", One("loss", {1, 2, 3}), 5);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_FALSE(first->replayed);
  EXPECT_EQ(first->points, 3u);
  auto again = s.AppendOnce("r", "k1", One("loss", {1, 2, 3}), 6);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->points, 3u);
  EXPECT_EQ(s.ReadSeries("r", "loss")->values.size(), 3u);

  // The same key in another run is another batch.
  ASSERT_FALSE(s.AppendOnce("r2", "k1", One("loss", {9}), 6)->replayed);
  // A refused batch does not use up its key.
  EXPECT_FALSE(s.AppendOnce("r", "bad", One("", {1}), 7).ok());
  ASSERT_FALSE(s.AppendOnce("r", "bad", One("ok", {1}), 7)->replayed);
  EXPECT_EQ(s.AppendOnce("r", "", One("x", {1}), 7).status().code(), StatusCode::kInvalidArgument);

  SeriesStore& reopened = Open();
  auto after = reopened.AppendOnce("r", "k1", One("loss", {1, 2, 3}), 8);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->replayed);
  EXPECT_EQ(reopened.ReadSeries("r", "loss")->values.size(), 3u);

  // Forgotten keys (older than the cutoff) are stored again; newer ones still replay.
  ASSERT_TRUE(reopened.ForgetKeysBefore(6).ok());
  EXPECT_FALSE(reopened.AppendOnce("r", "k1", One("loss", {4}), 9)->replayed);
  EXPECT_TRUE(reopened.AppendOnce("r", "bad", One("ok", {1}), 9)->replayed);
  // DeleteRun drops the run's keys with its series.
  ASSERT_TRUE(reopened.DeleteRun("r").ok());
  EXPECT_FALSE(reopened.AppendOnce("r", "bad", One("ok", {1}), 10)->replayed);
}

// Many threads sending the same keys at once (as retries racing their originals) store each
// batch exactly once, through group commit.
TEST_F(SeriesStoreTest, ConcurrentResendsOfOneKeyStoreOnce) {
  SeriesStoreOptions o;
  o.durable = false;
  SeriesStore& s = Open(o);
  constexpr int kThreads = 6, kKeys = 40;
  std::atomic<int> applied{0}, replayed{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int k = 0; k < kKeys; ++k) {
        auto r = s.AppendOnce("r", "key-" + std::to_string(k), One("x", {double(k), double(k)}), 1);
        if (!r.ok()) {
          ++failures;
        } else {
          ++(r->replayed ? replayed : applied);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(applied.load(), kKeys);
  EXPECT_EQ(replayed.load(), (kThreads - 1) * kKeys);
  EXPECT_EQ(s.ReadSeries("r", "x")->values.size(), static_cast<size_t>(2 * kKeys));
}

TEST_F(SeriesStoreTest, RecordedFilesReplaceByPathAndGoWithTheRun) {
  SeriesStore& s = Open();
  ASSERT_TRUE(s.RecordFiles("r",
                            {{"outputs/b", 2, "sha256:bb", "output", 0},
                             {"images/a.png", 1, "sha256:aa", "upload", 0}},
                            50)
                  .ok());
  ASSERT_TRUE(s.RecordFiles("r", {{"outputs/b", 3, "sha256:b2", "output", 0}}, 60).ok());
  auto files = s.ListFiles("r");
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].path, "images/a.png");
  EXPECT_EQ((*files)[0].recorded_ms, 50);
  EXPECT_EQ((*files)[1].digest, "sha256:b2");
  EXPECT_EQ((*files)[1].size, 3u);
  EXPECT_EQ((*files)[1].recorded_ms, 60);
  EXPECT_EQ(s.RecordFiles("r", {{"x", 1, "", "output", 0}}, 1).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(s.DeleteRun("r").ok());
  EXPECT_TRUE(s.ListFiles("r")->empty());
}

}  // namespace
}  // namespace trainyard::tracking

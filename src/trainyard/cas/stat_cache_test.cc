#include "trainyard/cas/stat_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "trainyard/cas/snapshot.h"
#include "trainyard/cas/test_util.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"

namespace trainyard::cas {
namespace {

namespace fs = std::filesystem;
using internal::FileStat;
using internal::StatCache;
using internal::StatCacheEntry;

constexpr std::int64_t kSecond = 1'000'000'000;
// 2020-01-01: well before any cache file in these tests is written, so entries are not racy.
constexpr std::int64_t kPast = 1'577'836'800 * kSecond;

struct timespec Ts(std::int64_t ns) {
  return {static_cast<time_t>(ns / kSecond), static_cast<long>(ns % kSecond)};
}

// Sets the mtime of `p` (atime untouched). Changes the ctime to now, as any utimensat does.
void SetMtime(const fs::path& p, std::int64_t ns) {
  struct timespec times[2] = {{0, UTIME_OMIT}, Ts(ns)};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << p;
}

FileStat StatOf(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return FileStat::Of(st);
}

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Bytes this process has read through read(2) and friends so far, all threads included
// (`rchar` of /proc/self/io); -1 when the kernel does not report it.
std::int64_t BytesReadByProcess() {
  std::ifstream io("/proc/self/io");
  std::string key;
  std::int64_t value = 0;
  while (io >> key >> value) {
    if (key == "rchar:") return value;
  }
  return -1;
}

// Files of the test tree and their sizes: 8 large ones (256 KiB) and a few small ones.
constexpr size_t kLarge = 256 * 1024;
constexpr size_t kFiles = 12;

class StatCacheSnapshotTest : public ::testing::Test {
 protected:
  StatCacheSnapshotTest()
      : objects_(tmp_ / "objects"), snapshotter_(objects_, tmp_ / "snapshots", tmp_ / "statcache") {
    for (unsigned i = 0; i < 8; ++i) {
      Write("data/big" + std::to_string(i) + ".bin", RandomBytes(kLarge, i));
    }
    Write("train.py", "print('train')\n");
    Write("src/model.py", "class Model: pass\n");
    Write("src/util.py", "def f(): return 1\n");
    Write("README", "readme\n");
    // Old mtimes, so that no entry is racy (the racy case has its own test).
    for (const auto& e : fs::recursive_directory_iterator(Src())) {
      if (e.is_regular_file()) SetMtime(e.path(), kPast);
    }
  }

  fs::path Src(const std::string& rel = "") const { return tmp_ / "src" / rel; }
  void Write(const std::string& rel, const std::string& content) {
    testing::WriteText(Src(rel), content);
  }
  SnapshotResult Take() {
    StatusOr<SnapshotResult> r = snapshotter_.Snapshot(Src(), SnapshotLimits{});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *std::move(r) : SnapshotResult{};
  }
  // The id a snapshotter without a cache gives for the tree as it is now.
  std::string UncachedId() {
    Snapshotter plain(objects_, tmp_ / "snapshots");
    StatusOr<SnapshotResult> r = plain.Snapshot(Src(), SnapshotLimits{});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->files_hashed, kFiles);
    return r.ok() ? r->id : "";
  }
  fs::path CacheFile() const {
    return StatCache::FileFor(tmp_ / "statcache", fs::canonical(Src()));
  }
  std::string DigestOf(const SnapshotResult& r, const std::string& rel) const {
    for (const ManifestEntry& e : r.manifest.entries) {
      if (e.path == rel) return e.digest;
    }
    return "<missing>";
  }

  testing::TempDir tmp_;
  ObjectStore objects_;
  Snapshotter snapshotter_;
};

TEST_F(StatCacheSnapshotTest, UnchangedTreeIsSnapshottedWithoutReadingFiles) {
  const SnapshotResult first = Take();
  EXPECT_EQ(first.files_hashed, kFiles);
  EXPECT_EQ(first.files_from_cache, 0u);
  ASSERT_TRUE(fs::exists(CacheFile()));

  const std::int64_t before = BytesReadByProcess();
  const SnapshotResult second = Take();
  const std::int64_t read = BytesReadByProcess() - before;
  EXPECT_EQ(second.id, first.id);
  EXPECT_EQ(second.files_hashed, 0u);
  EXPECT_EQ(second.files_from_cache, kFiles);
  EXPECT_EQ(second.manifest.entries, first.manifest.entries);
  // Independent of the counters: the kernel's count of bytes read by this process. The tree
  // holds 2 MiB; reading the cache file and the manifest takes a few KiB.
  if (before >= 0) {
    EXPECT_LT(read, static_cast<std::int64_t>(kLarge) / 4) << "bytes read: " << read;
  }
}

TEST_F(StatCacheSnapshotTest, UnchangedSnapshotWritesNothing) {
  const SnapshotResult first = Take();
  const fs::path manifest = tmp_ / "snapshots" / (first.id + ".json");
  SetMtime(manifest, std::int64_t{1'000'000'000} * 1'000'000'000);  // aged to 2001
  const FileStat manifest_before = StatOf(manifest);
  const FileStat cache_before = StatOf(CacheFile());
  const size_t objects_before = testing::CountFiles(tmp_ / "objects");

  const SnapshotResult second = Take();
  EXPECT_EQ(second.files_hashed, 0u);
  // Same inode and bytes: the manifest was not rewritten, only its mtime freshened (so a
  // concurrent `snapshot gc` spares it); the cache file is untouched.
  EXPECT_EQ(StatOf(manifest).ino, manifest_before.ino);
  EXPECT_GT(StatOf(manifest).mtime_ns, std::int64_t{1'000'000'000} * 1'000'000'000)
      << "the aged manifest was not freshened";
  EXPECT_EQ(trainyard::ReadFile(manifest).value(), first.manifest.ToJson());
  EXPECT_EQ(StatOf(CacheFile()), cache_before);
  EXPECT_EQ(testing::CountFiles(tmp_ / "objects"), objects_before);
  EXPECT_EQ(testing::CountFiles(tmp_ / "snapshots"), 1u);
  EXPECT_EQ(testing::CountFiles(tmp_ / "statcache"), 1u);  // No temp files left.
}

TEST_F(StatCacheSnapshotTest, OneChangedFileIsTheOnlyOneRead) {
  const SnapshotResult first = Take();
  std::string changed = RandomBytes(kLarge, 3);
  changed[0] ^= 1;  // Differs from big3.bin, same size.
  Write("data/big3.bin", changed);
  SetMtime(Src("data/big3.bin"), kPast + kSecond);

  const std::int64_t before = BytesReadByProcess();
  const SnapshotResult second = Take();
  const std::int64_t read = BytesReadByProcess() - before;
  EXPECT_EQ(second.files_hashed, 1u);
  EXPECT_EQ(second.files_from_cache, kFiles - 1);
  EXPECT_EQ(DigestOf(second, "data/big3.bin"), Sha256Hex(changed));
  EXPECT_NE(second.id, first.id);
  if (before >= 0) {
    EXPECT_GE(read, static_cast<std::int64_t>(kLarge));
    EXPECT_LT(read, static_cast<std::int64_t>(kLarge) * 2) << "bytes read: " << read;
  }
  EXPECT_EQ(second.id, UncachedId());
  // The cache now holds the new digest: the next run reads nothing.
  EXPECT_EQ(Take().files_hashed, 0u);
}

TEST_F(StatCacheSnapshotTest, TouchedFileKeepsTheSnapshotId) {
  const SnapshotResult first = Take();
  SetMtime(Src("train.py"), kPast + 7 * kSecond);
  const SnapshotResult second = Take();
  EXPECT_EQ(second.files_hashed, 1u);
  EXPECT_EQ(second.id, first.id);
}

TEST_F(StatCacheSnapshotTest, SameSizeAndMtimeButNewContentIsRead) {
  Take();
  // Rewritten in place with the same size and the old mtime restored: only the ctime shows it.
  const FileStat old_stat = StatOf(Src("src/util.py"));
  Write("src/util.py", "def f(): return 2\n");
  SetMtime(Src("src/util.py"), old_stat.mtime_ns);
  FileStat new_stat = StatOf(Src("src/util.py"));
  ASSERT_EQ(new_stat.size, old_stat.size);
  ASSERT_EQ(new_stat.mtime_ns, old_stat.mtime_ns);
  ASSERT_EQ(new_stat.ino, old_stat.ino);
  SnapshotResult r = Take();
  EXPECT_EQ(r.files_hashed, 1u);
  EXPECT_EQ(DigestOf(r, "src/util.py"), Sha256Hex("def f(): return 2\n"));

  // Replaced by another file (new inode) with the same size and mtime.
  Write("other.tmp", "def f(): return 3\n");
  SetMtime(Src("other.tmp"), old_stat.mtime_ns);
  fs::rename(Src("other.tmp"), Src("src/util.py"));
  ASSERT_NE(StatOf(Src("src/util.py")).ino, new_stat.ino);
  r = Take();
  EXPECT_EQ(r.files_hashed, 1u);
  EXPECT_EQ(DigestOf(r, "src/util.py"), Sha256Hex("def f(): return 3\n"));
  EXPECT_EQ(r.id, UncachedId());
}

TEST_F(StatCacheSnapshotTest, RacyEntryIsReadAgainUntilOlderThanTheCache) {
  // An mtime not older than the cache file: a change within the same timestamp tick would not
  // show in the stat, so the entry must not be trusted.
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const std::int64_t future = (now.tv_sec + 3600) * kSecond;
  SetMtime(Src("train.py"), future);
  EXPECT_EQ(Take().files_hashed, kFiles);
  SnapshotResult r = Take();
  EXPECT_EQ(r.files_hashed, 1u);
  EXPECT_EQ(r.files_from_cache, kFiles - 1);
  EXPECT_EQ(Take().files_hashed, 1u);  // Still racy: the cache is still older.

  // Once the file's mtime is older than the cache, it is trusted again.
  SetMtime(Src("train.py"), kPast);
  EXPECT_EQ(Take().files_hashed, 1u);
  EXPECT_EQ(Take().files_hashed, 0u);
}

TEST_F(StatCacheSnapshotTest, CorruptCacheIsIgnoredAndRebuilt) {
  const SnapshotResult first = Take();
  const std::string good = testing::ReadText(CacheFile());
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x20;
  for (const std::string& bad :
       {std::string("garbage\n"), std::string(), good.substr(0, good.size() / 2), flipped}) {
    SCOPED_TRACE(bad.size());
    fs::remove(CacheFile());
    testing::WriteText(CacheFile(), bad);
    SnapshotResult r = Take();
    EXPECT_EQ(r.id, first.id);
    EXPECT_EQ(r.files_hashed, kFiles);
    EXPECT_EQ(Take().files_hashed, 0u);  // Rebuilt.
  }
  // A folder in place of the cache file: unreadable, still no error.
  fs::remove(CacheFile());
  fs::create_directories(CacheFile() / "x");
  SnapshotResult r = Take();
  EXPECT_EQ(r.id, first.id);
  EXPECT_EQ(r.files_hashed, kFiles);
}

TEST_F(StatCacheSnapshotTest, UnwritableCacheFolderDoesNotFailTheSnapshot) {
  testing::WriteText(tmp_ / "statcache", "a file where the cache folder should be");
  const SnapshotResult first = Take();
  EXPECT_FALSE(first.id.empty());
  EXPECT_EQ(Take().files_hashed, kFiles);
  EXPECT_EQ(Take().id, first.id);
}

TEST_F(StatCacheSnapshotTest, CacheNamesItsSnapshotAndThenSkipsTheObjectChecks) {
  const SnapshotResult first = Take();
  EXPECT_EQ(StatCache::Load(tmp_ / "statcache", fs::canonical(Src())).snapshot_id(), first.id);
  // The objects of a snapshot whose manifest exists are taken as present without a look: an
  // object deleted behind the store's back (not by gc, which removes the manifest first) goes
  // unnoticed by Snapshot...
  const std::string digest = DigestOf(first, "README");
  fs::remove(objects_.PathFor(digest));
  EXPECT_EQ(Take().files_hashed, 0u);
  // ...until something needs it: Materialize reports it and drops the stat caches, so the next
  // snapshot reads the tree again and stores it anew.
  Status s = snapshotter_.Materialize(first.id, tmp_ / "out", MaterializeMode::kLink);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  EXPECT_FALSE(fs::exists(CacheFile()));
  const SnapshotResult second = Take();
  EXPECT_EQ(second.files_hashed, kFiles);
  EXPECT_EQ(second.id, first.id);
  EXPECT_TRUE(objects_.Has(digest));
  s = snapshotter_.Materialize(second.id, tmp_ / "out", MaterializeMode::kLink);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(testing::ReadText(tmp_ / "out" / "README"), "readme\n");
}

TEST_F(StatCacheSnapshotTest, EntryWhoseObjectIsGoneIsReadAndStoredAgain) {
  const SnapshotResult first = Take();
  const std::string digest = DigestOf(first, "README");
  ASSERT_TRUE(objects_.Has(digest));
  // As gc does it: the manifest first, then the object. Without the manifest the cache's
  // digests are checked one by one.
  fs::remove(tmp_ / "snapshots" / (first.id + ".json"));
  fs::remove(objects_.PathFor(digest));
  const SnapshotResult second = Take();
  EXPECT_EQ(second.files_hashed, 1u);
  EXPECT_EQ(second.id, first.id);
  EXPECT_TRUE(objects_.Has(digest));
  EXPECT_TRUE(snapshotter_.Materialize(second.id, tmp_ / "out").ok());
  EXPECT_EQ(testing::ReadText(tmp_ / "out" / "README"), "readme\n");
}

TEST_F(StatCacheSnapshotTest, CorruptObjectFoundByLinkModeDropsTheCaches) {
  const SnapshotResult first = Take();
  const std::string digest = DigestOf(first, "src/util.py");
  const fs::path object = objects_.PathFor(digest);
  ASSERT_EQ(::chmod(object.c_str(), 0644), 0);
  testing::WriteText(object, "def f(): return 9\n");  // Same size, other bytes.
  Status s = snapshotter_.Materialize(first.id, tmp_ / "out", MaterializeMode::kLink);
  EXPECT_EQ(s.code(), StatusCode::kInternal) << s.ToString();
  EXPECT_FALSE(fs::exists(CacheFile()));
  EXPECT_FALSE(objects_.Has(digest));
  const SnapshotResult second = Take();
  EXPECT_EQ(second.files_hashed, kFiles);
  EXPECT_TRUE(objects_.Verify(digest).ok());
  EXPECT_TRUE(snapshotter_.Materialize(first.id, tmp_ / "out", MaterializeMode::kLink).ok());
}

TEST_F(StatCacheSnapshotTest, UnchangedFilesWithAChangedSymlinkOrAMissingManifest) {
  fs::create_symlink("train.py", Src("latest"));
  const SnapshotResult first = Take();
  EXPECT_EQ(Take().id, first.id);
  // Only a symlink's target changes: every file comes from the cache, the id still changes.
  fs::remove(Src("latest"));
  fs::create_symlink("README", Src("latest"));
  const SnapshotResult second = Take();
  EXPECT_EQ(second.files_hashed, 0u);
  EXPECT_NE(second.id, first.id);
  // The manifest the cache names is gone (as gc removes it): it is written again.
  fs::remove(tmp_ / "snapshots" / (second.id + ".json"));
  const SnapshotResult third = Take();
  EXPECT_EQ(third.id, second.id);
  EXPECT_TRUE(snapshotter_.Load(third.id).ok());
  fs::remove(Src("latest"));
  const SnapshotResult fourth = Take();
  EXPECT_EQ(fourth.files_hashed, 0u);
  EXPECT_NE(fourth.id, third.id);
  EXPECT_EQ(fourth.id, UncachedId());
}

TEST_F(StatCacheSnapshotTest, RemovedAndAddedFilesAreReflected) {
  Take();
  fs::remove(Src("README"));
  Write("NEW", "new\n");
  SetMtime(Src("NEW"), kPast);
  const SnapshotResult r = Take();
  EXPECT_EQ(r.files_hashed, 1u);
  EXPECT_EQ(r.file_count, kFiles);
  EXPECT_EQ(DigestOf(r, "README"), "<missing>");
  EXPECT_EQ(r.id, UncachedId());
  EXPECT_EQ(Take().files_hashed, 0u);
}

TEST_F(StatCacheSnapshotTest, FoldersHaveSeparateCaches) {
  Take();
  fs::create_directories(tmp_ / "copy");
  fs::copy(Src(), tmp_ / "copy", fs::copy_options::recursive);
  Snapshotter copy_snapshotter(objects_, tmp_ / "snapshots", tmp_ / "statcache");
  StatusOr<SnapshotResult> r = copy_snapshotter.Snapshot(tmp_ / "copy", SnapshotLimits{});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->files_hashed, kFiles);  // Another folder: other inodes, another cache file.
  EXPECT_EQ(testing::CountFiles(tmp_ / "statcache"), 2u);
  EXPECT_EQ(Take().files_hashed, 0u);
}

// The racy boundary on the cache itself: entries strictly older than the cache file's mtime
// are trusted, equal or newer ones are not.
TEST(StatCacheTest, TrustsOnlyEntriesStrictlyOlderThanTheCacheFile) {
  testing::TempDir tmp;
  const fs::path root = "/some/source";
  const std::int64_t written = kPast + 100 * kSecond + 5;
  auto entry = [](std::string rel, std::int64_t mtime) {
    FileStat st;
    st.size = 3;
    st.mtime_ns = mtime;
    st.ctime_ns = mtime;
    st.ino = 42;
    st.dev = 7;
    std::string digest = Sha256Hex(rel);
    return StatCacheEntry{std::move(rel), st, std::move(digest)};
  };
  std::vector<StatCacheEntry> entries = {entry("older", written - 1), entry("same", written),
                                         entry("newer", written + 1)};
  ASSERT_TRUE(StatCache::Save(tmp.path(), root, entries).ok());
  SetMtime(StatCache::FileFor(tmp.path(), root), written);

  bool corrupt = true;
  StatCache cache = StatCache::Load(tmp.path(), root, &corrupt);
  EXPECT_FALSE(corrupt);
  EXPECT_EQ(cache.loaded_entries(), 3u);
  EXPECT_EQ(cache.racy_entries(), 2u);
  std::optional<std::string_view> d = cache.Lookup("older", entries[0].stat);
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, Sha256Hex("older"));
  EXPECT_FALSE(cache.Lookup("same", entries[1].stat));
  EXPECT_FALSE(cache.Lookup("newer", entries[2].stat));
  // Any differing field is a miss.
  FileStat other = entries[0].stat;
  other.ino = 43;
  EXPECT_FALSE(cache.Lookup("older", other));
  other = entries[0].stat;
  other.ctime_ns += 1;
  EXPECT_FALSE(cache.Lookup("older", other));
}

TEST(StatCacheTest, RoundTripsOddNamesAndIgnoresAnotherFoldersCache) {
  testing::TempDir tmp;
  const fs::path root = "/src";
  FileStat st;
  st.size = 1;
  st.mtime_ns = -5;  // Before 1970.
  st.ctime_ns = kPast;
  std::vector<StatCacheEntry> entries = {{"a b\nc\xff", st, Sha256Hex("x")}};
  ASSERT_TRUE(StatCache::Save(tmp.path(), root, entries).ok());
  StatCache cache = StatCache::Load(tmp.path(), root);
  std::optional<std::string_view> d = cache.Lookup("a b\nc\xff", st);
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, Sha256Hex("x"));

  // The file of /src copied to where /other's cache would be: it names /src, so it is ignored.
  fs::copy_file(StatCache::FileFor(tmp.path(), root), StatCache::FileFor(tmp.path(), "/other"));
  bool corrupt = false;
  EXPECT_EQ(StatCache::Load(tmp.path(), "/other", &corrupt).loaded_entries(), 0u);
  EXPECT_TRUE(corrupt);
  // No file at all is not corrupt.
  EXPECT_EQ(StatCache::Load(tmp.path(), "/none", &corrupt).loaded_entries(), 0u);
  EXPECT_FALSE(corrupt);
}

}  // namespace
}  // namespace trainyard::cas

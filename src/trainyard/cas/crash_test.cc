// Crash consistency of the store: snapshots killed (SIGKILL) at random points must leave only
// complete objects under their digests, manifests whose objects are all there, and nothing but
// temp files in tmp/.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/cas/test_util.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cas {
namespace {

namespace fs = std::filesystem;

constexpr size_t kSmallFiles = 300;
constexpr size_t kLargeFiles = 6;
constexpr size_t kSmallChangedPerRound = 40;  // Above PutFiles' fsync-each limit: syncfs path.
constexpr int kKills = 30;

std::string Content(std::mt19937_64& rng, size_t size) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; i += 8) {
    const std::uint64_t v = rng();
    for (size_t k = 0; k < 8 && i + k < size; ++k) s[i + k] = static_cast<char>(v >> (8 * k));
  }
  return s;
}

fs::path SmallFile(const fs::path& src, size_t i) {
  return src / ("d" + std::to_string(i % 10)) / ("f" + std::to_string(i) + ".txt");
}
fs::path LargeFile(const fs::path& src, size_t i) {
  return src / "data" / ("big" + std::to_string(i) + ".bin");
}

// Writes a file in place (as an editor or a training script would).
bool WriteInPlace(const fs::path& path, const std::string& data) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  return std::fclose(f) == 0 && ok;
}

// One round of the child: new content for some files, then a snapshot.
bool ChangeAndSnapshot(const fs::path& src, Snapshotter& snapshotter, std::mt19937_64& rng) {
  for (size_t k = 0; k < kSmallChangedPerRound; ++k) {
    const size_t i = rng() % kSmallFiles;
    if (!WriteInPlace(SmallFile(src, i), Content(rng, 50 + rng() % 4000))) return false;
  }
  const size_t big = rng() % kLargeFiles;
  if (!WriteInPlace(LargeFile(src, big), Content(rng, (2 << 20) + rng() % (2 << 20)))) {
    return false;
  }
  StatusOr<SnapshotResult> r = snapshotter.Snapshot(src, SnapshotLimits{});
  if (!r.ok()) std::fprintf(stderr, "child: %s\n", r.status().ToString().c_str());
  return r.ok();
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Checks the store after a crash. `verified` remembers objects already hashed (objects are
// immutable, so once is enough). Returns the number of manifests.
size_t CheckStore(const fs::path& store_root, const fs::path& snapshots_dir,
                  std::set<std::string>* verified) {
  ObjectStore objects(store_root);
  Snapshotter snapshotter(objects, snapshots_dir);
  // Every object file hashes to its name, read-only and sealed.
  for (const auto& shard : fs::directory_iterator(store_root / "sha256")) {
    EXPECT_TRUE(shard.is_directory()) << shard.path();
    for (const auto& f : fs::directory_iterator(shard.path())) {
      const std::string digest = shard.path().filename().string() + f.path().filename().string();
      EXPECT_TRUE(IsSha256Hex(digest)) << "stray file in the objects folder: " << f.path();
      if (verified->count(digest) > 0) continue;
      EXPECT_TRUE(objects.Verify(digest).ok()) << objects.Verify(digest).ToString();
      struct stat st {};
      EXPECT_EQ(::lstat(f.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 07777, 0444u) << f.path();
      EXPECT_EQ(st.st_mtim.tv_sec, kSealedMtime) << f.path();
      verified->insert(digest);
    }
  }
  // Every manifest loads (hashes to its id) and all its objects are there.
  size_t manifests = 0;
  for (const auto& f : fs::directory_iterator(snapshots_dir)) {
    const std::string name = f.path().filename().string();
    if (name.find(".json.tmp.") != std::string::npos) continue;  // WriteFileAtomic's temp.
    EXPECT_TRUE(EndsWith(name, ".json")) << "stray file among manifests: " << f.path();
    StatusOr<Manifest> m = snapshotter.Load(name.substr(0, name.size() - 5));
    EXPECT_TRUE(m.ok()) << m.status().ToString();
    if (!m.ok()) continue;
    ++manifests;
    for (const ManifestEntry& e : m->entries) {
      if (e.type != ManifestEntry::Type::kFile) continue;
      EXPECT_TRUE(verified->count(e.digest) > 0 || objects.Verify(e.digest).ok())
          << "manifest " << name << " names " << e.digest << " (" << e.path
          << "), which is not a complete object";
    }
  }
  // tmp/ holds nothing but temp files; nothing else appears at the root.
  if (fs::exists(store_root / "tmp")) {
    for (const auto& f : fs::directory_iterator(store_root / "tmp")) {
      EXPECT_TRUE(f.is_regular_file() && EndsWith(f.path().string(), ".part")) << f.path();
    }
  }
  for (const auto& f : fs::directory_iterator(store_root)) {
    const std::string name = f.path().filename().string();
    EXPECT_TRUE(name == "sha256" || name == "tmp") << "unexpected " << f.path();
  }
  return manifests;
}

TEST(SnapshotCrashTest, KilledSnapshotsLeaveAConsistentStore) {
  testing::TempDir tmp(/*prefer_memory=*/true);  // SIGKILL keeps the page cache: no disk needed.
  const fs::path src = tmp / "src";
  const fs::path store_root = tmp / "cas";
  const fs::path snapshots_dir = tmp / "snapshots";
  const fs::path cache_dir = tmp / "statcache";
  std::mt19937_64 rng(20261126);
  for (size_t i = 0; i < kSmallFiles; ++i) {
    testing::WriteText(SmallFile(src, i), Content(rng, 50 + rng() % 4000));
  }
  for (size_t i = 0; i < kLargeFiles; ++i) {
    testing::WriteText(LargeFile(src, i), Content(rng, (2 << 20) + rng() % (2 << 20)));
  }

  // Everything that starts threads runs in children, so that the parent forks while it has a
  // single thread. A first child takes the cold snapshot and times one round.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipe_fds[0]);
    ObjectStore objects(store_root);
    Snapshotter snapshotter(objects, snapshots_dir, cache_dir);
    if (!snapshotter.Snapshot(src, SnapshotLimits{}).ok()) ::_exit(1);
    std::mt19937_64 child_rng(1);
    const auto start = std::chrono::steady_clock::now();
    if (!ChangeAndSnapshot(src, snapshotter, child_rng)) ::_exit(1);
    const double round = Seconds(start);
    ::_exit(::write(pipe_fds[1], &round, sizeof round) == sizeof round ? 0 : 1);
  }
  ::close(pipe_fds[1]);
  double round = 0;
  ASSERT_EQ(::read(pipe_fds[0], &round, sizeof round), static_cast<ssize_t>(sizeof round));
  ::close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  // Kills spread over four rounds (so that some land after one or more complete snapshots).
  std::set<std::string> verified;
  std::uniform_real_distribution<double> delay(0, 4 * round);
  size_t killed_during_work = 0;  // Kills that left new temp files: mid-way through storing.
  size_t temps_before = 0;
  size_t killed_after_a_snapshot = 0;  // Kills after the child had written a new manifest.
  size_t manifests_before = 0;
  for (int k = 0; k < kKills; ++k) {
    const double wait = delay(rng);
    pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ObjectStore objects(store_root);
      Snapshotter snapshotter(objects, snapshots_dir, cache_dir);
      std::mt19937_64 child_rng(1000 + k);
      for (;;) {
        if (!ChangeAndSnapshot(src, snapshotter, child_rng)) ::_exit(1);
      }
    }
    struct timespec ts {};
    ts.tv_sec = static_cast<time_t>(wait);
    ts.tv_nsec = static_cast<long>((wait - static_cast<double>(ts.tv_sec)) * 1e9);
    ::nanosleep(&ts, nullptr);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child failed on its own (exit status "
                                     << (WIFEXITED(status) ? WEXITSTATUS(status) : -1) << ")";
    SCOPED_TRACE("kill " + std::to_string(k) + " after " + std::to_string(wait) + " s");
    const size_t manifests = CheckStore(store_root, snapshots_dir, &verified);
    if (manifests > manifests_before) ++killed_after_a_snapshot;
    manifests_before = manifests;
    const size_t temps = testing::CountFiles(store_root / "tmp");
    if (temps > temps_before) ++killed_during_work;
    temps_before = temps;
    if (::testing::Test::HasFailure()) break;
  }
  std::printf(
      "round %.3f s; %d kills: %zu while storing objects, %zu after a complete snapshot; %zu "
      "objects verified\n",
      round, kKills, killed_during_work, killed_after_a_snapshot, verified.size());

  // After the crashes, a snapshot through the (possibly torn) stat cache agrees with a scan
  // without one, and materialises.
  ObjectStore objects(store_root);
  Snapshotter snapshotter(objects, snapshots_dir, cache_dir);
  StatusOr<SnapshotResult> after = snapshotter.Snapshot(src, SnapshotLimits{});
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  StatusOr<SnapshotResult> scan = ScanTree(src, SnapshotLimits{}, {});
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  EXPECT_EQ(after->id, scan->id);
  Status s = snapshotter.Materialize(after->id, tmp / "out", MaterializeMode::kLink);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(testing::ReadText(tmp / "out" / "data" / "big0.bin"),
            testing::ReadText(LargeFile(src, 0)));
}

}  // namespace
}  // namespace trainyard::cas

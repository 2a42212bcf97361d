#include "trainyard/cas/gc.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/cas/test_util.h"
#include "trainyard/common/sha256.h"

namespace trainyard::cas {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::WriteText;

// A store with two snapshots sharing one file: `kept` (a root) and `dropped` (not).
class GcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteText(dir_ / "a/shared.txt", "in both");
    WriteText(dir_ / "a/only_a.txt", "only in the kept one");
    WriteText(dir_ / "b/shared.txt", "in both");
    WriteText(dir_ / "b/only_b.txt", "only in the dropped one");
    kept_ = Take("a");
    dropped_ = Take("b");
  }

  std::string Take(const std::string& rel) {
    ObjectStore objects(objects_dir());
    Snapshotter snapshots(objects, snapshots_dir());
    auto r = snapshots.Snapshot(dir_ / rel, SnapshotLimits{});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->id : "";
  }
  bool HasObject(const std::string& text) {
    return fs::exists(ObjectStore(objects_dir()).PathFor(Sha256Hex(text)));
  }
  bool HasManifest(const std::string& id) { return fs::exists(snapshots_dir() / (id + ".json")); }
  GcRoots Roots(std::set<std::string> ids) {
    return [ids]() -> StatusOr<std::set<std::string>> { return ids; };
  }
  fs::path objects_dir() const { return dir_ / "ws/cas"; }
  fs::path snapshots_dir() const { return dir_ / "ws/snapshots"; }

  TempDir dir_;
  std::string kept_, dropped_;
};

TEST_F(GcTest, RemovesWhatNoRootReachesAndKeepsSharedObjects) {
  GcOptions options;
  options.keep_newer_than_seconds = 0;
  auto report = CollectGarbage(objects_dir(), snapshots_dir(), Roots({kept_}), options);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->removed_snapshots, std::vector<std::string>{dropped_});
  EXPECT_EQ(report->removed_objects, 1u);
  EXPECT_EQ(report->kept_snapshots, 1u);
  EXPECT_EQ(report->kept_objects, 2u);
  EXPECT_TRUE(HasManifest(kept_));
  EXPECT_FALSE(HasManifest(dropped_));
  EXPECT_TRUE(HasObject("in both"));
  EXPECT_TRUE(HasObject("only in the kept one"));
  EXPECT_FALSE(HasObject("only in the dropped one"));
}

TEST_F(GcTest, DryRunAndGracePeriodRemoveNothing) {
  GcOptions dry;
  dry.dry_run = true;
  dry.keep_newer_than_seconds = 0;
  auto report = CollectGarbage(objects_dir(), snapshots_dir(), Roots({kept_}), dry);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->removed_snapshots, std::vector<std::string>{dropped_});
  EXPECT_EQ(report->removed_objects, 1u);
  EXPECT_TRUE(HasManifest(dropped_));
  EXPECT_TRUE(HasObject("only in the dropped one"));

  GcOptions graceful;  // the default hour: everything here is younger
  report = CollectGarbage(objects_dir(), snapshots_dir(), Roots({}), graceful);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->removed_snapshots.empty());
  EXPECT_EQ(report->kept_young_snapshots, 2u);
  // The young manifests keep their objects live.
  EXPECT_EQ(report->kept_objects, 3u);
  EXPECT_EQ(report->removed_objects, 0u);
  EXPECT_TRUE(HasManifest(dropped_));
}

TEST_F(GcTest, RootsThatCannotBeReadRemoveNothing) {
  GcOptions options;
  options.keep_newer_than_seconds = 0;
  GcRoots failing = []() -> StatusOr<std::set<std::string>> {
    return Internal("cannot read the workspace database");
  };
  auto report = CollectGarbage(objects_dir(), snapshots_dir(), failing, options);
  EXPECT_EQ(report.status().code(), StatusCode::kInternal);
  EXPECT_TRUE(HasManifest(dropped_));
  EXPECT_TRUE(HasObject("only in the dropped one"));

  // A negative grace period is refused before anything is read.
  options.keep_newer_than_seconds = -1;
  EXPECT_EQ(CollectGarbage(objects_dir(), snapshots_dir(), Roots({}), options).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(ListManifestsTest, ListsOnlyManifestNamesAndAMissingFolderIsEmpty) {
  TempDir dir;
  auto none = ListManifests(dir / "missing");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  const std::string id(64, 'a');
  WriteText(dir / (id + ".json"), "{}");
  WriteText(dir / (id + ".json.tmp.1"), "{}");
  WriteText(dir / "notes.json", "{}");
  auto some = ListManifests(dir.path());
  ASSERT_TRUE(some.ok());
  ASSERT_EQ(some->size(), 1u);
  EXPECT_EQ(some->begin()->first, id);
  EXPECT_EQ(some->begin()->second.size, 2u);
}

}  // namespace
}  // namespace trainyard::cas

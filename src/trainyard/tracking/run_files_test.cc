#include "trainyard/tracking/run_files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::tracking {
namespace {

namespace fs = std::filesystem;

class CollectOutputsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("run-files-test-" + RandomHex(6));
    run_dir_ = dir_ / "run";
    fs::create_directories(run_dir_);
    auto s = SeriesStore::Open((dir_ / "tracking.db").string());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(dir_);
  }
  void Write(const fs::path& rel, const std::string& content) {
    fs::create_directories((run_dir_ / rel).parent_path());
    std::ofstream(run_dir_ / rel, std::ios::binary) << content;
  }

  fs::path dir_, run_dir_;
  std::unique_ptr<SeriesStore> store_;
};

TEST_F(CollectOutputsTest, HashesRegularFilesAndSkipsEverythingElse) {
  Write("outputs/model.pkl", "weights");
  Write("outputs/nested/deep/metrics.json", "{}");
  Write("outputs/empty", "");
  Write("logs/not-an-output.txt", "log");
  Write("secret.txt", "host secret");
  // Planted by a run: links to a file and a folder outside, and a FIFO that would block a read.
  fs::create_symlink(run_dir_ / "secret.txt", run_dir_ / "outputs/link-to-secret");
  fs::create_directory_symlink(run_dir_, run_dir_ / "outputs/link-to-run");
  ASSERT_EQ(::mkfifo((run_dir_ / "outputs/fifo").c_str(), 0644), 0);

  auto files = CollectOutputs(*store_, "r1", run_dir_, 1234);
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  ASSERT_EQ(files->size(), 3u);
  EXPECT_EQ((*files)[0].path, "outputs/empty");
  EXPECT_EQ((*files)[0].digest, DigestOfHex(Sha256Hex("")));
  EXPECT_EQ((*files)[1].path, "outputs/model.pkl");
  EXPECT_EQ((*files)[1].size, 7u);
  EXPECT_EQ((*files)[1].digest, "sha256:" + Sha256Hex("weights"));
  EXPECT_EQ((*files)[1].origin, "output");
  EXPECT_EQ((*files)[2].path, "outputs/nested/deep/metrics.json");

  // What was returned is what the store holds.
  auto stored = store_->ListFiles("r1");
  ASSERT_TRUE(stored.ok());
  ASSERT_EQ(stored->size(), 3u);
  EXPECT_EQ((*stored)[1].digest, (*files)[1].digest);
  EXPECT_EQ((*stored)[1].recorded_ms, 1234);
}

TEST_F(CollectOutputsTest, NoOutputsFolderRecordsNothing) {
  auto files = CollectOutputs(*store_, "r1", run_dir_, 1);
  ASSERT_TRUE(files.ok());
  EXPECT_TRUE(files->empty());
  // outputs/ itself a symlink (to a folder with files): never followed.
  Write("elsewhere/x", "x");
  fs::create_directory_symlink(run_dir_ / "elsewhere", run_dir_ / "outputs");
  files = CollectOutputs(*store_, "r1", run_dir_, 1);
  ASSERT_TRUE(files.ok());
  EXPECT_TRUE(files->empty());
  EXPECT_TRUE(store_->ListFiles("r1")->empty());
}

TEST_F(CollectOutputsTest, AnUnreadableFileIsSkippedAndNamedTheOthersAreKept) {
  Write("outputs/a.txt", "a");
  Write("outputs/locked.bin", "secret");
  Write("outputs/z.txt", "z");
  ASSERT_EQ(::chmod((run_dir_ / "outputs/locked.bin").c_str(), 0), 0);
  // Root reads a mode-0 file: collect as an unprivileged user in a child, which reports back
  // through its exit code (0: as expected; 1..: the check that failed).
  store_.reset();
  for (const auto& e : fs::recursive_directory_iterator(dir_)) {
    if (e.path().filename() != "locked.bin") ::chmod(e.path().c_str(), 0777);
  }
  ::chmod(dir_.c_str(), 0777);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::getuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(10);
    auto store = SeriesStore::Open((dir_ / "child.db").string());
    if (!store.ok()) ::_exit(11);
    std::vector<std::string> skipped;
    auto files = CollectOutputs(**store, "r1", run_dir_, 1, &skipped);
    if (!files.ok()) ::_exit(12);
    if (files->size() != 2 || (*files)[0].path != "outputs/a.txt" ||
        (*files)[1].path != "outputs/z.txt") {
      ::_exit(13);
    }
    if (skipped.size() != 1 || skipped[0].find("outputs/locked.bin") == std::string::npos) {
      ::_exit(14);
    }
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setuid, 11: store, 12: collect failed, 13: wrong "
                                       "files recorded, 14: the skipped file not named";
}

}  // namespace
}  // namespace trainyard::tracking

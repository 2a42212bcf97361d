#include "trainyard/common/rooted_dir.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "trainyard/common/util.h"

namespace trainyard {
namespace {

namespace fs = std::filesystem;

class RootedDirTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    top_ = fs::temp_directory_path() / ("rooted-" + RandomHex(6));
    root_ = top_ / "run";
    fs::create_directories(root_ / "outputs/d");
    Write(top_ / "secret.txt", "host secret");
    Write(root_ / "outputs/d/ok.txt", "fine");
  }
  void TearDown() override { fs::remove_all(top_); }
  static void Write(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
  }
  // Opens through the kernel's openat2, or (parameter true) the component walk.
  int Open(const RootedDir& dir, const std::string& rel) {
    return OpenBeneath(dir.fd(), rel, O_RDONLY | O_NONBLOCK, 0, GetParam());
  }

  fs::path top_, root_;
};

TEST_P(RootedDirTest, NoLinkAnywhereOnThePathIsFollowed) {
  auto dir = RootedDir::Open(root_);
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  int fd = Open(*dir, "outputs/d/ok.txt");
  ASSERT_GE(fd, 0);
  ::close(fd);
  // A link as the last component, as a middle component, and one that stays inside the root.
  fs::create_symlink(top_ / "secret.txt", root_ / "outputs/leaf");
  fs::create_directory_symlink("../..", root_ / "outputs/up");
  fs::create_directory_symlink("d", root_ / "outputs/inside");
  for (const char* rel : {"outputs/leaf", "outputs/up/secret.txt", "outputs/inside/ok.txt"}) {
    errno = 0;
    EXPECT_LT(Open(*dir, rel), 0) << rel;
    EXPECT_TRUE(errno == ELOOP || errno == EXDEV || errno == ENOTDIR)
        << rel << ": " << std::strerror(errno);
  }
  EXPECT_LT(Open(*dir, "../secret.txt"), 0);
  EXPECT_LT(Open(*dir, "outputs/../../secret.txt"), 0);
}

TEST_P(RootedDirTest, ASwapRaceNeverReachesOutside) {
  // A run swaps outputs/d and a link to the folder above the root while the daemon opens
  // outputs/d/secret.txt: it must only ever get "no such file" or a link refusal.
  fs::create_directory_symlink("../..", root_ / "outputs/link");
  auto dir = RootedDir::Open(root_);
  ASSERT_TRUE(dir.ok());
  std::atomic<bool> stop{false};
  std::thread swapper([&] {
    const std::string a = (root_ / "outputs/d").string(), b = (root_ / "outputs/link").string();
    while (!stop.load()) {
      ::syscall(SYS_renameat2, AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), 2 /*RENAME_EXCHANGE*/);
    }
  });
  int leaked = 0, opened = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until) {
    int fd = Open(*dir, "outputs/d/secret.txt");
    if (fd >= 0) {
      ++opened;
      char buf[32] = {};
      if (::read(fd, buf, sizeof buf - 1) > 0 && std::string(buf) == "host secret") ++leaked;
      ::close(fd);
    }
  }
  stop = true;
  swapper.join();
  EXPECT_EQ(leaked, 0);
  EXPECT_EQ(opened, 0);
}

INSTANTIATE_TEST_SUITE_P(Openat2AndWalk, RootedDirTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "walk" : "openat2"; });

class RootedDirOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    top_ = fs::temp_directory_path() / ("rooted-ops-" + RandomHex(6));
    root_ = top_ / "run";
    fs::create_directories(root_);
    std::ofstream(top_ / "secret.txt") << "host secret";
    auto dir = RootedDir::Open(root_);
    ASSERT_TRUE(dir.ok());
    dir_.emplace(std::move(dir).value());
  }
  void TearDown() override { fs::remove_all(top_); }
  fs::path top_, root_;
  std::optional<RootedDir> dir_;
};

TEST_F(RootedDirOpsTest, FifosAndLinksNeverBlockOrLeak) {
  fs::create_directories(root_ / "logs");
  ASSERT_EQ(::mkfifo((root_ / "logs/pipe").c_str(), 0644), 0);
  auto read = dir_->OpenFile("logs/pipe");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kInvalidArgument) << read.status().ToString();
  auto write = dir_->OpenForWrite("logs/pipe", false);
  ASSERT_FALSE(write.ok()) << "a FIFO with no reader must not be written (nor block)";
  fs::create_symlink(top_ / "secret.txt", root_ / "logs/link");
  EXPECT_FALSE(dir_->OpenForWrite("logs/link", true).ok());
  EXPECT_EQ(fs::file_size(top_ / "secret.txt"), 11u) << "never truncated through the link";
  EXPECT_FALSE(dir_->ReadFile("logs/link").ok());
  // A folder on the way that is a link is refused when creating too.
  fs::create_directory_symlink(top_, root_ / "outputs");
  auto made = dir_->MakeDirs("outputs/new");
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(top_ / "new"));
  EXPECT_FALSE(dir_->WriteFileAtomic("outputs/x", "data").ok());
  EXPECT_FALSE(fs::exists(top_ / "x"));
}

TEST_F(RootedDirOpsTest, ReadWriteTailRemoveWalkAndCopy) {
  ASSERT_TRUE(dir_->WriteFileAtomic("a/b/c.txt", "hello world", 0600).ok());
  EXPECT_EQ(*dir_->ReadFile("a/b/c.txt"), "hello world");
  EXPECT_EQ(*dir_->ReadTail("a/b/c.txt", 5), "world");
  EXPECT_EQ(dir_->ReadFile("a/b/c.txt", 4).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(fs::status(root_ / "a/b/c.txt").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  auto w = dir_->OpenForWrite("a/log.txt", false);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(::write(w->get(), "x", 1), 1);
  fs::create_directory_symlink(top_, root_ / "a/up");
  std::vector<std::string> seen;
  ASSERT_TRUE(dir_->Walk("",
                         [&](const RootedDir::Entry& e) {
                           seen.push_back(e.rel + (S_ISLNK(e.st.st_mode) ? "@" : ""));
                           return true;
                         })
                  .ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "a/b", "a/b/c.txt", "a/log.txt", "a/up@"}));

  const fs::path other = top_ / "copy";
  auto to = RootedDir::Create(other);
  ASSERT_TRUE(to.ok());
  ASSERT_TRUE(CopyTree(*dir_, *to, "a").ok());
  EXPECT_EQ(*to->ReadFile("a/b/c.txt"), "hello world");
  EXPECT_FALSE(fs::exists(fs::symlink_status(other / "a/up"))) << "links are left behind";

  // Remove deletes the link, never what it points at.
  ASSERT_TRUE(dir_->Remove("a").ok());
  EXPECT_FALSE(fs::exists(root_ / "a"));
  EXPECT_TRUE(fs::exists(top_ / "secret.txt"));
  EXPECT_TRUE(dir_->Remove("a").ok()) << "removing what is gone is fine";
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../../x"}) {
    EXPECT_EQ(SplitRelativePath(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace trainyard

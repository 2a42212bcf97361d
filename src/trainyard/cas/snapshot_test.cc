#include "trainyard/cas/snapshot.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "trainyard/cas/test_util.h"
#include "trainyard/common/sha256.h"

namespace trainyard::cas {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

unsigned ModeOf(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

std::string LinkTarget(const fs::path& p) {
  std::error_code ec;
  fs::path t = fs::read_symlink(p, ec);
  return ec ? "<not a symlink>" : t.string();
}

const ManifestEntry* Find(const Manifest& m, const std::string& path) {
  for (const ManifestEntry& e : m.entries) {
    if (e.path == path) return &e;
  }
  return nullptr;
}

class SnapshotTest : public ::testing::Test {
 protected:
  SnapshotTest() : objects_(tmp_ / "objects"), snapshotter_(objects_, tmp_ / "snapshots") {}

  fs::path Src(const std::string& rel = "") const { return tmp_ / "src" / rel; }
  void Write(const std::string& rel, const std::string& content) {
    testing::WriteText(Src(rel), content);
  }
  StatusOr<SnapshotResult> Take(const SnapshotLimits& limits = {}) {
    return snapshotter_.Snapshot(Src(), limits);
  }

  testing::TempDir tmp_;
  ObjectStore objects_;
  Snapshotter snapshotter_;
};

TEST_F(SnapshotTest, RoundTripKeepsContentModesAndSymlinks) {
  Write("train.py", "print('hi')\n");
  Write("run.sh", "#!/bin/sh\n");
  ASSERT_EQ(::chmod(Src("run.sh").c_str(), 0750), 0);
  Write("data/a.csv", "1,2\n");
  Write("data/deep/b.csv", "3,4\n");
  Write("empty.txt", "");
  fs::create_directories(Src("empty_folder"));
  fs::create_symlink("train.py", Src("latest.py"));
  fs::create_symlink("..", Src("data/deep/up"));

  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->file_count, 7u);
  EXPECT_EQ(r->total_bytes, 12u + 10u + 4u + 4u);
  EXPECT_TRUE(IsSha256Hex(r->id));
  EXPECT_TRUE(fs::exists(tmp_ / "snapshots" / (r->id + ".json")));

  StatusOr<Manifest> m = snapshotter_.Load(r->id);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->entries, r->manifest.entries);
  ASSERT_NE(Find(*m, "run.sh"), nullptr);
  EXPECT_EQ(Find(*m, "run.sh")->mode, 0755u);
  EXPECT_EQ(Find(*m, "train.py")->mode, 0644u);
  EXPECT_EQ(Find(*m, "latest.py")->type, ManifestEntry::Type::kSymlink);
  EXPECT_EQ(Find(*m, "empty_folder"), nullptr);

  const fs::path out = tmp_ / "work" / "run1";
  Status s = snapshotter_.Materialize(r->id, out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(testing::ReadText(out / "train.py"), "print('hi')\n");
  EXPECT_EQ(testing::ReadText(out / "run.sh"), "#!/bin/sh\n");
  EXPECT_EQ(testing::ReadText(out / "data/deep/b.csv"), "3,4\n");
  EXPECT_EQ(testing::ReadText(out / "empty.txt"), "");
  EXPECT_EQ(ModeOf(out / "run.sh"), 0755u);
  EXPECT_EQ(ModeOf(out / "train.py"), 0644u);  // Writable copy, not the 0444 object.
  EXPECT_EQ(LinkTarget(out / "latest.py"), "train.py");
  EXPECT_EQ(LinkTarget(out / "data/deep/up"), "..");
  EXPECT_EQ(testing::ReadText(out / "data/deep/up/a.csv"), "1,2\n");
  EXPECT_FALSE(fs::exists(out / "empty_folder"));
  // Nothing but the destination is left in its parent (no staging folder).
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp_ / "work"), fs::directory_iterator()), 1);
}

TEST_F(SnapshotTest, IdenticalFilesAreStoredOnce) {
  Write("a.bin", std::string(5000, 'x'));
  Write("b/a-copy.bin", std::string(5000, 'x'));
  Write("c.bin", "different");
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->file_count, 3u);
  EXPECT_EQ(testing::CountFiles(tmp_ / "objects" / "sha256"), 2u);
  EXPECT_EQ(Find(r->manifest, "a.bin")->digest, Find(r->manifest, "b/a-copy.bin")->digest);
}

TEST_F(SnapshotTest, UnchangedTreeGivesTheSameId) {
  Write("a.txt", "one");
  Write("sub/b.txt", "two");
  StatusOr<SnapshotResult> first = Take();
  ASSERT_TRUE(first.ok());
  // Touching files (new mtime) does not change the id; a content change does.
  ASSERT_EQ(::utimes(Src("a.txt").c_str(), nullptr), 0);
  StatusOr<SnapshotResult> second = Take();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(first->id, second->id);
  Write("a.txt", "One");
  StatusOr<SnapshotResult> third = Take();
  ASSERT_TRUE(third.ok());
  EXPECT_NE(first->id, third->id);
  // A mode change changes the id too.
  Write("a.txt", "one");
  ASSERT_EQ(::chmod(Src("a.txt").c_str(), 0755), 0);
  StatusOr<SnapshotResult> fourth = Take();
  ASSERT_TRUE(fourth.ok());
  EXPECT_NE(first->id, fourth->id);
}

TEST_F(SnapshotTest, ManyFilesHashInParallelCorrectly) {
  for (int i = 0; i < 300; ++i) {
    Write("d" + std::to_string(i % 7) + "/f" + std::to_string(i), "file " + std::to_string(i));
  }
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->file_count, 300u);
  for (const ManifestEntry& e : r->manifest.entries) {
    EXPECT_EQ(e.digest, Sha256Hex(testing::ReadText(Src(e.path)))) << e.path;
  }
  EXPECT_TRUE(std::is_sorted(r->manifest.entries.begin(), r->manifest.entries.end(),
                             [](const auto& a, const auto& b) { return a.path < b.path; }));
}

TEST_F(SnapshotTest, LimitsErrorNamesTheLargestFoldersAndFiles) {
  Write("train.py", "x");
  Write("data/raw/big.bin", std::string(3000, 'b'));
  Write("data/raw/mid.bin", std::string(1500, 'm'));
  Write("data/other.bin", std::string(200, 'o'));
  Write("ckpt/model.pt", std::string(1000, 'c'));
  Write("huge.ignored", std::string(100000, 'i'));
  Write(".gitignore", "*.ignored\n");

  SnapshotLimits limits;
  limits.max_bytes = 4000;
  StatusOr<SnapshotResult> r = Take(limits);
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  const std::string msg = r.status().message();
  EXPECT_THAT(msg, HasSubstr("snapshot of " + fs::canonical(Src()).string() + " is too large"));
  EXPECT_THAT(msg, HasSubstr("6 files, 5.7 kB (limit 4.0 kB)"));
  // data/ is mostly data/raw/, so data/raw/ is named; ckpt/ comes next.
  EXPECT_THAT(msg,
              HasSubstr("Largest folders: data/raw/ 4.5 kB in 2 files, ckpt/ 1.0 kB in 1 file"));
  EXPECT_THAT(msg, HasSubstr("largest files: data/raw/big.bin 3.0 kB, data/raw/mid.bin 1.5 kB"));
  EXPECT_THAT(msg, HasSubstr("'data/raw/'"));
  EXPECT_THAT(msg, HasSubstr(".gitignore (or in a new"));
  EXPECT_THAT(msg, Not(HasSubstr("huge.ignored")));  // Ignored files do not count.
  EXPECT_EQ(testing::CountFiles(tmp_ / "objects"), 0u) << "nothing is stored over the limit";

  SnapshotLimits few;
  few.max_files = 3;
  StatusOr<SnapshotResult> r2 = Take(few);
  ASSERT_EQ(r2.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r2.status().message(), HasSubstr("6 files (limit 3), 5.7 kB."));

  StatusOr<SnapshotResult> preview = snapshotter_.Preview(Src(), limits);
  ASSERT_TRUE(preview.ok());
  EXPECT_EQ(preview->over_limit, msg);
  EXPECT_TRUE(Take().ok());  // Within the default limits.
}

TEST_F(SnapshotTest, SymlinksLeavingTheFolderAreErrors) {
  Write("a.txt", "a");
  fs::create_directories(Src("d"));
  fs::create_symlink("..", Src("d/up"));  // Points at the root itself: fine.
  ASSERT_TRUE(Take().ok());

  fs::create_symlink("/etc/passwd", Src("abs"));
  StatusOr<SnapshotResult> r = Take();
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("symlink abs points to '/etc/passwd'"));
  fs::remove(Src("abs"));

  fs::create_symlink("../outside.txt", Src("rel"));
  r = Take();
  EXPECT_THAT(r.status().message(), HasSubstr("symlink rel points to '../outside.txt'"));
  fs::remove(Src("rel"));

  // Lexically inside, but d/up is the root, so d/up/.. is its parent.
  fs::create_symlink("d/up/..", Src("sneaky"));
  r = Take();
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("symlink sneaky points to 'd/up/..'"));

  // Excluding the link is the way out.
  Write(".amlignore", "sneaky\n");
  EXPECT_TRUE(Take().ok());
}

TEST_F(SnapshotTest, SpecialFilesAreSkippedAndListed) {
  Write("a.txt", "a");
  ASSERT_EQ(::mkfifo(Src("pipe").c_str(), 0644), 0);
  int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string sock_path = Src("sock").string();
  ASSERT_LT(sock_path.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);

  StatusOr<SnapshotResult> r = Take();  // Must not block on the FIFO.
  ::close(sock);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->file_count, 1u);
  EXPECT_THAT(r->skipped, ::testing::ElementsAre("pipe (named pipe)", "sock (socket)"));
}

TEST_F(SnapshotTest, CorruptObjectIsCaughtOnMaterializeAndRead) {
  Write("good.txt", "good content");
  Write("model/weights.bin", "precious weights");
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok());
  const std::string digest = Sha256Hex("precious weights");
  const fs::path object = objects_.PathFor(digest);
  ASSERT_EQ(::chmod(object.c_str(), 0644), 0);
  testing::WriteText(object, "precious weightz");

  const fs::path out = tmp_ / "work" / "run";
  Status s = snapshotter_.Materialize(r->id, out);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr(digest));
  EXPECT_THAT(s.message(), HasSubstr("model/weights.bin"));
  EXPECT_THAT(s.message(), HasSubstr("corrupt"));
  EXPECT_FALSE(fs::exists(out)) << "a partial or corrupt tree was handed over";
  EXPECT_TRUE(fs::is_empty(tmp_ / "work")) << "the staging folder was left behind";

  StatusOr<std::string> read = objects_.Read(digest);
  EXPECT_EQ(read.status().code(), StatusCode::kInternal);
  EXPECT_THAT(read.status().message(), HasSubstr(digest));
}

TEST_F(SnapshotTest, AmlIgnoreReplacesGitIgnorePerFolder) {
  Write(".gitignore", "*.log\n");
  Write(".amlignore", "*.tmp\n");
  Write("a.log", "kept: .gitignore is not read at the root");
  Write("a.tmp", "ignored by .amlignore");
  Write("sub/.gitignore", "*.bin\n");
  Write("sub/x.bin", "ignored by sub/.gitignore");
  Write("sub/x.log", "kept");
  Write("sub/x.tmp", "ignored by the root .amlignore");
  Write("other/.amlignore", "!*.tmp\n");
  Write("other/.gitignore", "*\n");
  Write("other/y.tmp", "re-included by other/.amlignore");

  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<std::string> paths;
  for (const ManifestEntry& e : r->manifest.entries) paths.push_back(e.path);
  EXPECT_THAT(paths, ::testing::ElementsAre(".amlignore", ".gitignore", "a.log", "other/.amlignore",
                                            "other/.gitignore", "other/y.tmp", "sub/.gitignore",
                                            "sub/x.log"));
  std::vector<std::string> ignored;
  for (const IgnoredPath& p : r->ignored) ignored.push_back(p.path + " <- " + p.rule);
  EXPECT_THAT(ignored, ::testing::ElementsAre("a.tmp <- .amlignore:1: *.tmp",
                                              "sub/x.bin <- sub/.gitignore:1: *.bin",
                                              "sub/x.tmp <- .amlignore:1: *.tmp"));
}

TEST_F(SnapshotTest, IgnoredFoldersAreReportedOnceAndGitIsAlwaysExcluded) {
  Write(".gitignore", "node_modules/\n");
  Write("node_modules/x/index.js", "x");
  Write("node_modules/y.js", "y");
  Write(".git/config", "[core]\n");
  Write("main.py", "m");
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->ignored.size(), 2u);
  EXPECT_EQ(r->ignored[0].path, ".git");
  EXPECT_TRUE(r->ignored[0].is_dir);
  EXPECT_EQ(r->ignored[0].rule, "(built-in): .git");
  EXPECT_EQ(r->ignored[1].path, "node_modules");
  EXPECT_EQ(r->ignored[1].rule, ".gitignore:1: node_modules/");
  EXPECT_EQ(r->file_count, 2u);
}

TEST_F(SnapshotTest, NonUtf8NamesRoundTrip) {
  const std::string name = "caf\xe9.txt";
  Write(name, "latin-1");
  fs::create_symlink(name, Src("link\xff"));
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const std::string json = testing::ReadText(tmp_ / "snapshots" / (r->id + ".json"));
  EXPECT_THAT(json, HasSubstr("path_b64"));
  const fs::path out = tmp_ / "out";
  ASSERT_TRUE(snapshotter_.Materialize(r->id, out).ok());
  EXPECT_EQ(testing::ReadText(out / name), "latin-1");
  EXPECT_EQ(LinkTarget(out / "link\xff"), name);
}

TEST_F(SnapshotTest, PreviewStoresNothing) {
  Write(".gitignore", "*.ckpt\n");
  Write("a.py", "a");
  Write("m.ckpt", "big");
  StatusOr<SnapshotResult> r = snapshotter_.Preview(Src());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->id.empty());
  EXPECT_EQ(r->file_count, 2u);
  ASSERT_EQ(r->ignored.size(), 1u);
  EXPECT_EQ(r->ignored[0].rule, ".gitignore:1: *.ckpt");
  EXPECT_TRUE(r->over_limit.empty());
  EXPECT_FALSE(fs::exists(tmp_ / "objects"));
  EXPECT_FALSE(fs::exists(tmp_ / "snapshots"));
}

TEST_F(SnapshotTest, LoadValidatesIdsAndDetectsTampering) {
  EXPECT_EQ(snapshotter_.Load("../../etc/passwd").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(snapshotter_.Load(std::string(64, 'a')).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(snapshotter_.Materialize("nope", tmp_ / "x").code(), StatusCode::kInvalidArgument);

  Write("a.txt", "a");
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok());
  const fs::path manifest = tmp_ / "snapshots" / (r->id + ".json");
  ASSERT_EQ(::chmod(manifest.c_str(), 0644), 0);
  std::string json = testing::ReadText(manifest);
  json.replace(json.find("a.txt"), 5, "b.txt");
  testing::WriteText(manifest, json);
  StatusOr<Manifest> m = snapshotter_.Load(r->id);
  EXPECT_EQ(m.status().code(), StatusCode::kInternal);
  EXPECT_THAT(m.status().message(), HasSubstr("corrupt"));
}

TEST_F(SnapshotTest, MaterializeDestinationRules) {
  Write("a.txt", "a");
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok());
  fs::create_directories(tmp_ / "empty");
  EXPECT_TRUE(snapshotter_.Materialize(r->id, tmp_ / "empty").ok());
  EXPECT_EQ(testing::ReadText(tmp_ / "empty" / "a.txt"), "a");
  Status again = snapshotter_.Materialize(r->id, tmp_ / "empty");
  EXPECT_EQ(again.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(snapshotter_.Materialize(r->id, tmp_ / "trailing/").ok());
  EXPECT_EQ(testing::ReadText(tmp_ / "trailing" / "a.txt"), "a");
}

TEST_F(SnapshotTest, MissingSourceFolder) {
  StatusOr<SnapshotResult> r = snapshotter_.Snapshot(tmp_ / "nope", {});
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  Write("file", "x");
  r = snapshotter_.Snapshot(Src("file"), {});
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

// Root reads every file whatever its mode, so the check runs in a child that drops to an
// unprivileged user when the tests run as root.
TEST_F(SnapshotTest, UnreadableFileIsAnErrorNamingIt) {
  Write("ok.txt", "fine");
  Write("secret/key.pem", "private");
  ASSERT_EQ(::chmod(Src("secret/key.pem").c_str(), 0000), 0);
  fs::permissions(tmp_.path(), fs::perms::all);  // Let an unprivileged child in.
  fs::create_directories(tmp_ / "objects");
  fs::create_directories(tmp_ / "snapshots");
  fs::permissions(tmp_ / "objects", fs::perms::all);
  fs::permissions(tmp_ / "snapshots", fs::perms::all);

  auto check = [&]() -> int {
    StatusOr<SnapshotResult> r = Take();
    if (r.ok()) return 10;
    if (r.status().code() != StatusCode::kPermissionDenied) return 11;
    if (r.status().message().find("secret/key.pem") == std::string::npos) return 12;
    return 0;
  };
  if (::geteuid() != 0) {
    EXPECT_EQ(check(), 0);
    return;
  }
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(20);
    ::_exit(check());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "10: snapshot succeeded, 11: wrong code, 12: message does not name the file, "
         "20: could not drop privileges";
}

ino_t InodeOf(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return 0;
  return st.st_ino;
}

std::int64_t MtimeSecondsOf(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return -1;
  return st.st_mtim.tv_sec;
}

TEST_F(SnapshotTest, ScanTreeGivesTheSnapshotIdAndStoresNothing) {
  Write("train.py", "print('hi')\n");
  Write("run.sh", "#!/bin/sh\n");
  ASSERT_EQ(::chmod(Src("run.sh").c_str(), 0755), 0);
  Write("data/big.bin", std::string(3 << 20, 'b'));
  Write("data/.gitignore", "*.tmp\n");
  Write("data/x.tmp", "ignored");
  fs::create_symlink("train.py", Src("latest.py"));

  StatusOr<SnapshotResult> scan = ScanTree(Src(), SnapshotLimits{}, tmp_ / "scancache");
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();
  EXPECT_EQ(scan->source_root, fs::canonical(Src()));
  EXPECT_EQ(scan->files_hashed, 4u);
  EXPECT_EQ(scan->file_count, 5u);
  ASSERT_EQ(scan->ignored.size(), 1u);
  EXPECT_EQ(scan->ignored[0].path, "data/x.tmp");
  EXPECT_EQ(scan->id, scan->manifest.Id());
  EXPECT_FALSE(fs::exists(tmp_ / "objects")) << "a scan stores no object";
  EXPECT_FALSE(fs::exists(tmp_ / "snapshots")) << "a scan writes no manifest";
  EXPECT_EQ(testing::CountFiles(tmp_ / "scancache"), 1u);

  // A second scan comes from the cache; both agree with Snapshot.
  StatusOr<SnapshotResult> again = ScanTree(Src(), SnapshotLimits{}, tmp_ / "scancache");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->id, scan->id);
  StatusOr<SnapshotResult> snap = Take();
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EXPECT_EQ(snap->id, scan->id);
  EXPECT_EQ(snap->source_root, scan->source_root);
  EXPECT_EQ(snap->manifest.entries, scan->manifest.entries);

  // Same limits and errors as Snapshot.
  SnapshotLimits tight;
  tight.max_files = 2;
  StatusOr<SnapshotResult> over = ScanTree(Src(), tight, {});
  EXPECT_EQ(over.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(over.status().message(), HasSubstr("too large"));
  EXPECT_EQ(ScanTree(tmp_ / "nope", {}, {}).status().code(), StatusCode::kNotFound);
}

TEST_F(SnapshotTest, AddManifestNeedsEveryObjectAndWritesTheManifest) {
  for (int i = 0; i < 12; ++i) Write("f" + std::to_string(i) + ".txt", "file " + std::to_string(i));
  Write("same.txt", "file 0");  // The same content as f0.txt: one object.
  StatusOr<SnapshotResult> scan = ScanTree(Src(), SnapshotLimits{}, {});
  ASSERT_TRUE(scan.ok()) << scan.status().ToString();

  StatusOr<std::string> id = snapshotter_.AddManifest(scan->manifest);
  ASSERT_EQ(id.status().code(), StatusCode::kNotFound) << id.status().ToString();
  EXPECT_THAT(id.status().message(), HasSubstr("lacks 12 objects"));
  EXPECT_THAT(id.status().message(), HasSubstr(Sha256Hex("file 0") + " (f0.txt)"));
  EXPECT_THAT(id.status().message(), HasSubstr("and 2 more"));
  EXPECT_FALSE(fs::exists(tmp_ / "snapshots" / (scan->id + ".json")));

  // Upload as a server would, all but one object.
  for (const ManifestEntry& e : scan->manifest.entries) {
    if (e.path == "f7.txt") continue;
    StatusOr<ObjectStore::Writer> w = objects_.NewWriter();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Write(testing::ReadText(scan->source_root / e.path)).ok());
    ASSERT_TRUE(w->Commit(e.digest).ok());
  }
  id = snapshotter_.AddManifest(scan->manifest);
  ASSERT_EQ(id.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(id.status().message(), HasSubstr("lacks 1 object in"));
  EXPECT_THAT(id.status().message(), HasSubstr(Sha256Hex("file 7") + " (f7.txt)"));
  ASSERT_TRUE(objects_.PutBytes("file 7").ok());
  id = snapshotter_.AddManifest(scan->manifest);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(*id, scan->id);
  StatusOr<Manifest> loaded = snapshotter_.Load(*id);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->entries, scan->manifest.entries);
  // Again: kept as it is.
  const ino_t ino = InodeOf(tmp_ / "snapshots" / (*id + ".json"));
  ASSERT_TRUE(snapshotter_.AddManifest(scan->manifest).ok());
  EXPECT_EQ(InodeOf(tmp_ / "snapshots" / (*id + ".json")), ino);

  Manifest bad = scan->manifest;
  bad.entries[0].path = "../escape";
  StatusOr<std::string> refused = snapshotter_.AddManifest(bad);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("../escape"));
}

TEST_F(SnapshotTest, LinkModeLinksSealedObjectsAndCopiesExecutables) {
  Write("train.py", "print('hi')\n");
  Write("data/a.csv", "1,2\n");
  Write("run.sh", "#!/bin/sh\n");
  ASSERT_EQ(::chmod(Src("run.sh").c_str(), 0755), 0);
  fs::create_symlink("train.py", Src("latest.py"));
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();

  const fs::path out = tmp_ / "work" / "run";
  Status s = snapshotter_.Materialize(r->id, out, MaterializeMode::kLink);
  ASSERT_TRUE(s.ok()) << s.ToString();
  const fs::path train_object = objects_.PathFor(Sha256Hex("print('hi')\n"));
  EXPECT_EQ(InodeOf(out / "train.py"), InodeOf(train_object));
  EXPECT_EQ(InodeOf(out / "data/a.csv"), InodeOf(objects_.PathFor(Sha256Hex("1,2\n"))));
  EXPECT_EQ(ModeOf(out / "train.py"), 0444u);
  EXPECT_EQ(testing::ReadText(out / "data/a.csv"), "1,2\n");
  // An executable is a copy: a link would share the object's mode.
  EXPECT_NE(InodeOf(out / "run.sh"), InodeOf(objects_.PathFor(Sha256Hex("#!/bin/sh\n"))));
  EXPECT_EQ(ModeOf(out / "run.sh"), 0755u);
  EXPECT_EQ(testing::ReadText(out / "run.sh"), "#!/bin/sh\n");
  EXPECT_EQ(LinkTarget(out / "latest.py"), "train.py");
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp_ / "work"), fs::directory_iterator()), 1);

  // Copy mode is unchanged: writable copies.
  const fs::path copy = tmp_ / "work" / "copy";
  ASSERT_TRUE(snapshotter_.Materialize(r->id, copy, MaterializeMode::kCopy).ok());
  EXPECT_NE(InodeOf(copy / "train.py"), InodeOf(train_object));
  EXPECT_EQ(ModeOf(copy / "train.py"), 0644u);
}

TEST_F(SnapshotTest, LinkModeReverifiesAnUnsealedObjectAndSealsItAgain) {
  Write("train.py", "print('hi')\n");
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok());
  const fs::path object = objects_.PathFor(Sha256Hex("print('hi')\n"));
  ASSERT_EQ(MtimeSecondsOf(object), kSealedMtime);
  ASSERT_EQ(::utimensat(AT_FDCWD, object.c_str(), nullptr, 0), 0);  // touch
  ASSERT_EQ(::chmod(object.c_str(), 0644), 0);
  EXPECT_EQ(objects_.Inspect(Sha256Hex("print('hi')\n"), 12), ObjectStore::ObjectState::kUnsealed);

  Status s = snapshotter_.Materialize(r->id, tmp_ / "out", MaterializeMode::kLink);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(InodeOf(tmp_ / "out" / "train.py"), InodeOf(object));
  EXPECT_EQ(MtimeSecondsOf(object), kSealedMtime);
  EXPECT_EQ(ModeOf(object), 0444u);
  EXPECT_EQ(objects_.Inspect(Sha256Hex("print('hi')\n"), 12), ObjectStore::ObjectState::kSealed);
  // A size other than the manifest's is never trusted.
  EXPECT_EQ(objects_.Inspect(Sha256Hex("print('hi')\n"), 13), ObjectStore::ObjectState::kUnsealed);
}

TEST_F(SnapshotTest, LinkModeQuarantinesACorruptObject) {
  Write("good.txt", "good content");
  Write("model/weights.bin", "precious weights");
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok());
  const std::string digest = Sha256Hex("precious weights");
  const fs::path object = objects_.PathFor(digest);
  // A run wrote through its link: bytes appended (so the mtime changes), mode restored.
  ASSERT_EQ(::chmod(object.c_str(), 0644), 0);
  {
    std::FILE* f = std::fopen(object.c_str(), "ab");
    ASSERT_NE(f, nullptr);
    std::fputc('!', f);
    std::fclose(f);
  }
  ASSERT_EQ(::chmod(object.c_str(), 0444), 0);

  const fs::path out = tmp_ / "work" / "run";
  Status s = snapshotter_.Materialize(r->id, out, MaterializeMode::kLink);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr(digest));
  EXPECT_THAT(s.message(), HasSubstr("model/weights.bin"));
  EXPECT_THAT(s.message(), HasSubstr("corrupt"));
  EXPECT_THAT(s.message(), HasSubstr("resubmit"));
  EXPECT_FALSE(fs::exists(out)) << "a partial or corrupt tree was handed over";
  EXPECT_TRUE(fs::is_empty(tmp_ / "work")) << "the staging folder was left behind";
  EXPECT_FALSE(objects_.Has(digest));
  EXPECT_EQ(testing::ReadText(tmp_ / "objects" / "corrupt" / digest), "precious weights!");

  // Taking the snapshot again stores the object anew; then it materialises.
  StatusOr<SnapshotResult> again = Take();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id, r->id);
  EXPECT_TRUE(objects_.Verify(digest).ok());
  s = snapshotter_.Materialize(r->id, out, MaterializeMode::kLink);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(testing::ReadText(out / "model/weights.bin"), "precious weights");
}

TEST_F(SnapshotTest, LinkModeReportsAMissingObject) {
  Write("a.txt", "a");
  StatusOr<SnapshotResult> r = Take();
  ASSERT_TRUE(r.ok());
  fs::remove(objects_.PathFor(Sha256Hex("a")));
  Status s = snapshotter_.Materialize(r->id, tmp_ / "out", MaterializeMode::kLink);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(Sha256Hex("a")));
  EXPECT_THAT(s.message(), HasSubstr("a.txt"));
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
}

}  // namespace
}  // namespace trainyard::cas

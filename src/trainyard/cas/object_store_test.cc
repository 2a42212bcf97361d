#include "trainyard/cas/object_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "trainyard/cas/test_util.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cas {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Overwrites an object in place (as disk corruption or a meddling user would).
void Corrupt(const fs::path& object, const std::string& bytes) {
  ASSERT_EQ(::chmod(object.c_str(), 0644), 0);
  testing::WriteText(object, bytes);
}

TEST(ObjectStoreTest, PutBytesLayoutModeAndRead) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  StatusOr<std::string> digest = store.PutBytes("hello\n");
  ASSERT_TRUE(digest.ok()) << digest.status().ToString();
  EXPECT_EQ(*digest, Sha256Hex("hello\n"));
  EXPECT_TRUE(store.Has(*digest));

  const fs::path path = store.PathFor(*digest);
  EXPECT_EQ(path, tmp / "objects" / "sha256" / digest->substr(0, 2) / digest->substr(2));
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);

  StatusOr<std::string> data = store.Read(*digest);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(*data, "hello\n");
  EXPECT_TRUE(store.Verify(*digest).ok());
}

TEST(ObjectStoreTest, HasEachAnswersPerDigest) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  const std::string absent = Sha256Hex("absent");
  // No objects folder yet: all absent, no error.
  EXPECT_EQ(store.HasEach({absent}), std::vector<bool>{false});
  StatusOr<std::string> a = store.PutBytes("a");
  StatusOr<std::string> b = store.PutBytes("b");
  ASSERT_TRUE(a.ok() && b.ok());
  const std::vector<bool> want = {true, false, true, false, false};
  EXPECT_EQ(store.HasEach({*a, absent, *b, "not-a-digest", "../../../../etc/passwd"}), want);
  std::filesystem::remove(store.PathFor(*b));
  EXPECT_EQ(store.HasEach({*a, *b}), (std::vector<bool>{true, false}));
  EXPECT_TRUE(store.HasEach({}).empty());
}

TEST(ObjectStoreTest, PutFileDedupesAndLeavesNoTempFiles) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  testing::WriteText(tmp / "a.txt", "same bytes");
  testing::WriteText(tmp / "b.txt", "same bytes");
  testing::WriteText(tmp / "empty", "");

  StatusOr<ObjectStore::PutResult> a = store.Put(tmp / "a.txt");
  StatusOr<ObjectStore::PutResult> b = store.Put(tmp / "b.txt");
  StatusOr<std::string> e = store.PutFile(tmp / "empty");
  ASSERT_TRUE(a.ok() && b.ok() && e.ok());
  EXPECT_EQ(a->digest, b->digest);
  EXPECT_EQ(a->size, 10u);
  EXPECT_TRUE(a->added);
  EXPECT_FALSE(b->added);
  EXPECT_EQ(*e, Sha256Hex(""));
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "sha256"), 2u);
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u);
}

TEST(ObjectStoreTest, PutFileRefusesSymlinksSpecialFilesAndMissingFiles) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  testing::WriteText(tmp / "real", "x");
  fs::create_symlink("real", tmp / "link");
  ASSERT_EQ(::mkfifo((tmp / "fifo").c_str(), 0644), 0);

  StatusOr<std::string> link = store.PutFile(tmp / "link");
  EXPECT_EQ(link.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(link.status().message(), HasSubstr("symlink"));
  StatusOr<std::string> fifo = store.PutFile(tmp / "fifo");  // Must not block.
  EXPECT_EQ(fifo.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(fifo.status().message(), HasSubstr("not a regular file"));
  EXPECT_EQ(store.PutFile(tmp / "missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.PutFile(tmp.path()).status().code(), StatusCode::kInvalidArgument);
}

TEST(ObjectStoreTest, ReadRejectsMalformedAndUnknownDigests) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  EXPECT_EQ(store.Read("../../etc/passwd").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Read(std::string(64, 'A')).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(store.Has("xyz"));
  EXPECT_TRUE(store.PathFor("xyz").empty());
  const std::string unknown = Sha256Hex("never stored");
  EXPECT_EQ(store.Read(unknown).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.Verify(unknown).code(), StatusCode::kNotFound);
}

TEST(ObjectStoreTest, CorruptObjectIsDetectedByReadVerifyAndCopyTo) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  StatusOr<std::string> digest = store.PutBytes("original content");
  ASSERT_TRUE(digest.ok());
  Corrupt(store.PathFor(*digest), "original c0ntent");

  StatusOr<std::string> read = store.Read(*digest);
  EXPECT_EQ(read.status().code(), StatusCode::kInternal);
  EXPECT_THAT(read.status().message(), HasSubstr(*digest));
  EXPECT_THAT(read.status().message(), HasSubstr("corrupt"));
  Status verify = store.Verify(*digest);
  EXPECT_EQ(verify.code(), StatusCode::kInternal);
  EXPECT_THAT(verify.message(), HasSubstr(*digest));

  Status copy = store.CopyTo(*digest, tmp / "out", 0644);
  EXPECT_EQ(copy.code(), StatusCode::kInternal);
  EXPECT_THAT(copy.message(), HasSubstr(*digest));
  EXPECT_FALSE(fs::exists(tmp / "out")) << "a corrupt copy was left behind";
}

TEST(ObjectStoreTest, CopyToWritesModeAndRefusesToOverwrite) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  StatusOr<std::string> digest = store.PutBytes("#!/bin/sh\necho hi\n");
  ASSERT_TRUE(digest.ok());
  std::uint64_t size = 18;
  ASSERT_TRUE(store.CopyTo(*digest, tmp / "run.sh", 0755, &size).ok());
  EXPECT_EQ(testing::ReadText(tmp / "run.sh"), "#!/bin/sh\necho hi\n");
  struct stat st {};
  ASSERT_EQ(::stat((tmp / "run.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(store.CopyTo(*digest, tmp / "run.sh", 0755).code(), StatusCode::kAlreadyExists);
  std::uint64_t wrong = 3;
  EXPECT_EQ(store.CopyTo(*digest, tmp / "other", 0644, &wrong).code(), StatusCode::kInternal);
  EXPECT_FALSE(fs::exists(tmp / "other"));
}

TEST(ObjectStoreTest, PutFilesBatchesDedupesAndNamesTheFailingFile) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  const std::string big(3 << 20, 'B');  // Above the read-whole limit: hashed, then copied.
  testing::WriteText(tmp / "a", "x");
  testing::WriteText(tmp / "b", "x");
  testing::WriteText(tmp / "c", "already there");
  testing::WriteText(tmp / "big", big);
  ASSERT_TRUE(store.PutBytes("already there").ok());

  StatusOr<std::vector<ObjectStore::PutResult>> r =
      store.PutFiles({tmp / "a", tmp / "b", tmp / "c", tmp / "big"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_EQ((*r)[0].digest, Sha256Hex("x"));
  EXPECT_TRUE((*r)[0].added);
  EXPECT_EQ((*r)[1].digest, Sha256Hex("x"));
  EXPECT_FALSE((*r)[1].added);
  EXPECT_FALSE((*r)[2].added);
  EXPECT_EQ((*r)[3].digest, Sha256Hex(big));
  EXPECT_EQ((*r)[3].size, big.size());
  EXPECT_TRUE(store.Verify(Sha256Hex(big)).ok());
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "sha256"), 3u);
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u);

  size_t failed = 99;
  testing::WriteText(tmp / "d", "new content");
  StatusOr<std::vector<ObjectStore::PutResult>> bad =
      store.PutFiles({tmp / "d", tmp / "missing", tmp / "a"}, &failed);
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(bad.status().message(), HasSubstr("missing"));
  EXPECT_EQ(failed, 1u);
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u) << "temp files were left behind";
}

// Beneath a folder, a source is never read through a link, however the tree changed since it
// was walked: a folder swapped for a link to another place leads nowhere.
TEST(ObjectStoreTest, PutFilesBeneathAFolderFollowsNoLink) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  testing::WriteText(tmp / "src" / "sub" / "ok.txt", "kept");
  testing::WriteText(tmp / "private" / "secret", "the daemon's secret");
  StatusOr<RootedDir> root = RootedDir::Open(tmp / "src");
  ASSERT_TRUE(root.ok()) << root.status().ToString();

  StatusOr<std::vector<ObjectStore::PutResult>> good =
      store.PutFiles({"sub/ok.txt"}, nullptr, &*root);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ((*good)[0].digest, Sha256Hex("kept"));

  // As if another user swapped sub/ for a link after the walk listed sub/secret.
  std::filesystem::remove_all(tmp / "src" / "sub");
  std::filesystem::create_directory_symlink(tmp / "private", tmp / "src" / "sub");
  for (const char* rel : {"sub/secret", "../private/secret"}) {
    size_t failed = 9;
    StatusOr<std::vector<ObjectStore::PutResult>> bad = store.PutFiles({rel}, &failed, &*root);
    EXPECT_FALSE(bad.ok()) << rel;
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().ToString();
    EXPECT_EQ(failed, 0u);
  }
  EXPECT_FALSE(store.Has(Sha256Hex("the daemon's secret")));
  // Without `beneath` the same path is read through the link (the walk's own checks guard it).
  EXPECT_TRUE(store.PutFiles({tmp / "src" / "sub" / "secret"}).ok());
}

// Small batches flush object by object, large ones flush the file system twice; both must
// publish every object once and leave no temp files.
TEST(ObjectStoreTest, PutFilesSmallAndLargeBatchesPublishEveryObject) {
  for (size_t count : {2u, 15u, 16u, 17u, 60u}) {
    SCOPED_TRACE(count);
    testing::TempDir tmp;
    ObjectStore store(tmp / "objects");
    std::vector<std::filesystem::path> srcs;
    for (size_t i = 0; i < count; ++i) {
      srcs.push_back(tmp / ("f" + std::to_string(i)));
      testing::WriteText(srcs.back(), "content " + std::to_string(i % (count / 2 + 1)));
    }
    StatusOr<std::vector<ObjectStore::PutResult>> r = store.PutFiles(srcs);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    size_t added = 0;
    for (size_t i = 0; i < count; ++i) {
      const std::string content = "content " + std::to_string(i % (count / 2 + 1));
      EXPECT_EQ((*r)[i].digest, Sha256Hex(content));
      EXPECT_TRUE(store.Verify((*r)[i].digest).ok());
      added += (*r)[i].added ? 1 : 0;
    }
    EXPECT_EQ(added, count / 2 + 1);
    EXPECT_EQ(testing::CountFiles(tmp / "objects" / "sha256"), count / 2 + 1);
    EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u);
  }
}

TEST(ObjectStoreTest, LargeFileAlreadyPresentLeavesNoCopy) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  const std::string big((2 << 20) + 7, 'L');  // Above the read-whole limit: copied while hashed.
  testing::WriteText(tmp / "one", big);
  testing::WriteText(tmp / "two", big);
  StatusOr<ObjectStore::PutResult> first = store.Put(tmp / "one");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->added);
  StatusOr<std::vector<ObjectStore::PutResult>> again = store.PutFiles({tmp / "two"});
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE((*again)[0].added);
  EXPECT_EQ((*again)[0].digest, Sha256Hex(big));
  EXPECT_EQ((*again)[0].size, big.size());
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "sha256"), 1u);
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u);
  EXPECT_TRUE(store.Verify(first->digest).ok());
}

TEST(ObjectStoreTest, ConcurrentPutsOfTheSameContent) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  const std::string content(200'000, 'z');
  testing::WriteText(tmp / "src", content);
  std::vector<std::string> digests(8);
  {
    std::vector<std::jthread> threads;
    for (size_t i = 0; i < digests.size(); ++i) {
      threads.emplace_back([&, i] {
        StatusOr<std::string> d = i % 2 == 0 ? store.PutFile(tmp / "src") : store.PutBytes(content);
        digests[i] = d.ok() ? *d : d.status().ToString();
      });
    }
  }
  for (const std::string& d : digests) EXPECT_EQ(d, Sha256Hex(content));
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "sha256"), 1u);
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u);
  EXPECT_TRUE(store.Verify(Sha256Hex(content)).ok());
}

// The mtime of `path` in whole seconds (and *nsec for the rest).
std::int64_t MtimeOf(const fs::path& path, long* nsec = nullptr) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  if (nsec != nullptr) *nsec = st.st_mtim.tv_nsec;
  return st.st_mtim.tv_sec;
}

TEST(ObjectStoreTest, PublishedObjectsAreSealed) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  StatusOr<std::string> small = store.PutBytes("small");
  testing::WriteText(tmp / "big", std::string(3 << 20, 'b'));
  testing::WriteText(tmp / "medium", std::string(1000, 'm'));
  StatusOr<ObjectStore::PutResult> big = store.Put(tmp / "big");
  StatusOr<std::vector<ObjectStore::PutResult>> many = store.PutFiles({tmp / "medium"});
  ASSERT_TRUE(small.ok() && big.ok() && many.ok());
  for (const std::string& d : {*small, big->digest, (*many)[0].digest}) {
    long nsec = -1;
    EXPECT_EQ(MtimeOf(store.PathFor(d), &nsec), kSealedMtime) << d;
    EXPECT_EQ(nsec, 0);
  }
}

TEST(ObjectStoreTest, WriterStoresVerifiedContent) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  const std::string content = std::string(3 << 20, 'x') + "tail";
  StatusOr<ObjectStore::Writer> w = store.NewWriter();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE(w->Write(std::string_view(content).substr(0, 1000)).ok());
  ASSERT_TRUE(w->Write(std::string_view(content).substr(1000)).ok());
  EXPECT_EQ(w->size(), content.size());
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 1u);
  StatusOr<ObjectStore::PutResult> r = w->Commit(Sha256Hex(content));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->digest, Sha256Hex(content));
  EXPECT_EQ(r->size, content.size());
  EXPECT_TRUE(r->added);
  EXPECT_TRUE(store.Verify(r->digest).ok());
  EXPECT_EQ(MtimeOf(store.PathFor(r->digest)), kSealedMtime);
  struct stat st {};
  ASSERT_EQ(::stat(store.PathFor(r->digest).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u);
  // Finished: further use is refused.
  EXPECT_EQ(w->Write("more").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(w->Commit(Sha256Hex(content)).status().code(), StatusCode::kFailedPrecondition);

  // The same content again: not added, temp dropped.
  StatusOr<ObjectStore::Writer> again = store.NewWriter();
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(again->Write(content).ok());
  StatusOr<ObjectStore::PutResult> r2 = again->Commit(Sha256Hex(content));
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_FALSE(r2->added);
  EXPECT_EQ(r2->size, content.size());
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "sha256"), 1u);
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u);

  // Empty content is an object too.
  StatusOr<ObjectStore::Writer> empty = store.NewWriter();
  ASSERT_TRUE(empty.ok());
  StatusOr<ObjectStore::PutResult> r3 = empty->Commit(Sha256Hex(""));
  ASSERT_TRUE(r3.ok()) << r3.status().ToString();
  EXPECT_TRUE(store.Has(Sha256Hex("")));
}

TEST(ObjectStoreTest, WriterRefusesContentThatDoesNotMatch) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  StatusOr<ObjectStore::Writer> w = store.NewWriter();
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(w->Write("what was sent").ok());
  const std::string claimed = Sha256Hex("what was claimed");
  StatusOr<ObjectStore::PutResult> r = w->Commit(claimed);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "content hashes to " + Sha256Hex("what was sent") + ", not " + claimed);
  EXPECT_FALSE(store.Has(claimed));
  EXPECT_FALSE(store.Has(Sha256Hex("what was sent")));
  EXPECT_EQ(testing::CountFiles(tmp / "objects"), 0u);

  StatusOr<ObjectStore::Writer> bad = store.NewWriter();
  ASSERT_TRUE(bad.ok());
  ASSERT_TRUE(bad->Write("x").ok());
  StatusOr<ObjectStore::PutResult> r2 = bad->Commit("ABC");
  EXPECT_EQ(r2.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(testing::CountFiles(tmp / "objects"), 0u);
}

TEST(ObjectStoreTest, WriterDestroyedWithoutCommitLeavesNoTemp) {
  testing::TempDir tmp;
  ObjectStore store(tmp / "objects");
  {
    StatusOr<ObjectStore::Writer> w = store.NewWriter();
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Write("partial upload").ok());
    // Moving hands the temp file over; the moved-from writer owns nothing.
    ObjectStore::Writer moved = std::move(*w);
    EXPECT_EQ(moved.size(), 14u);
    EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 1u);
    StatusOr<ObjectStore::Writer> other = store.NewWriter();
    ASSERT_TRUE(other.ok());
    EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 2u);
    moved = std::move(*other);  // Drops the first writer's temp.
    EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 1u);
  }
  EXPECT_EQ(testing::CountFiles(tmp / "objects" / "tmp"), 0u);
  EXPECT_EQ(testing::CountFiles(tmp / "objects"), 0u);
}

}  // namespace
}  // namespace trainyard::cas

namespace trainyard::cas {
namespace {

TEST(ObjectStoreAdoptTest, FilesAreMovedInSealedAndDuplicatesDropped) {
  const std::filesystem::path root =
      std::filesystem::path(::testing::TempDir()) / ("adopt-" + RandomHex(4));
  ObjectStore store(root / "store");
  std::filesystem::create_directories(root / "store" / "tmp" / "in");
  std::vector<std::filesystem::path> files;
  for (const char* content : {"alpha", "beta", "alpha"}) {
    files.push_back(root / "store" / "tmp" / "in" / RandomHex(4));
    std::ofstream(files.back()) << content;
  }
  auto got = store.AdoptFiles(files);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[0].digest, Sha256Hex("alpha"));
  EXPECT_EQ((*got)[2].digest, Sha256Hex("alpha"));
  EXPECT_EQ((*got)[1].size, 4u);
  for (const auto& f : files) EXPECT_FALSE(std::filesystem::exists(f)) << f;
  auto read = store.Read(Sha256Hex("beta"));
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, "beta");
  struct stat st {};
  ASSERT_EQ(::stat(store.PathFor(Sha256Hex("beta")).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  EXPECT_TRUE(store.Verify(Sha256Hex("alpha")).ok());
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace trainyard::cas

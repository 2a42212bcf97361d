// Remote submission of a snapshot: an in-process daemon on port 0 with a temp workspace, a
// client that scans a folder (cas::ScanTree) and uploads only the objects the daemon lacks.
// No Docker needed.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "trainyard/api/daemon.h"
#include "trainyard/cas/manifest.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/client/http_client.h"
#include "trainyard/client/snapshot_upload.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"

namespace trainyard {
namespace {

using json = nlohmann::json;
using client::UploadSnapshot;
using client::UploadStats;

std::string RandomBytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

std::string Digest(std::string_view data) { return Sha256Hex(data); }

// Everything a tree holds, for comparison: "path" -> "file 0755 <content>" / "link <target>".
std::map<std::string, std::string> TreeOf(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    const fs::path rel = fs::relative(it->path(), root);
    const auto st = it->symlink_status();
    if (fs::is_symlink(st)) {
      out[rel.string()] = "link " + fs::read_symlink(it->path()).string();
    } else if (fs::is_regular_file(st)) {
      const bool exec = (st.permissions() & fs::perms::owner_exec) != fs::perms::none;
      StatusOr<std::string> content = ReadFile(it->path());
      out[rel.string()] = std::string(exec ? "file x " : "file - ") + content.value();
    }
  }
  return out;
}

// Resident memory of this process, bytes.
std::uint64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  std::uint64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

class RemoteSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ty-remote-" + RandomHex(4));
    layout_.root = root_ / "workspace";
    api::DaemonOptions opts;
    opts.workspace = layout_.root;
    opts.port = 0;
    opts.write_server_file = false;
    opts.docker_socket = (root_ / "no-docker.sock").string();  // Not needed here.
    opts.docker_config = root_ / "no-docker-config.json";
    auto d = api::Daemon::Start(opts);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    daemon_ = std::move(d).value();
    http_ = std::make_unique<HttpClient>(daemon_->url(), daemon_->token());
    src_ = root_ / "src";
    stat_cache_ = root_ / "statcache";
  }

  void TearDown() override {
    http_.reset();
    daemon_.reset();
    (void)RemoveTree(root_);
  }

  void Write(const std::string& rel, std::string_view content, unsigned mode = 0644) {
    ASSERT_TRUE(MakeDirs((src_ / rel).parent_path()).ok());
    ASSERT_TRUE(WriteFileAtomic(src_ / rel, content, mode).ok());
  }

  // A tree with nested folders, duplicate contents, an empty file, an executable and a symlink.
  void MakeTree() {
    for (int i = 0; i < 20; ++i) {
      Write("pkg/mod" + std::to_string(i) + ".py", RandomBytes(1000 + 997 * i, i));
    }
    Write("data/a.bin", RandomBytes(300 * 1024, 100));
    Write("data/copy-of-a.bin", RandomBytes(300 * 1024, 100));  // Same content.
    Write("data/deep/again.bin", RandomBytes(300 * 1024, 100));
    Write("empty.txt", "");
    Write("also-empty.txt", "");
    Write("train.sh", "#!/bin/sh\necho train\n", 0755);
    ASSERT_EQ(::symlink("data/a.bin", (src_ / "latest").c_str()), 0);
  }

  cas::SnapshotResult Scan() {
    StatusOr<cas::SnapshotResult> scan = cas::ScanTree(src_, {}, stat_cache_);
    EXPECT_TRUE(scan.ok()) << scan.status().ToString();
    return scan.ok() ? std::move(scan).value() : cas::SnapshotResult{};
  }

  // Distinct digests of a scan and the sum of their sizes.
  static std::pair<std::uint64_t, std::uint64_t> Distinct(const cas::SnapshotResult& scan) {
    std::map<std::string, std::uint64_t> sizes;
    for (const auto& e : scan.manifest.entries) {
      if (e.type == cas::ManifestEntry::Type::kFile) sizes[e.digest] = e.size;
    }
    std::uint64_t bytes = 0;
    for (const auto& [d, s] : sizes) bytes += s;
    return {sizes.size(), bytes};
  }

  // The server's objects, opened beside the daemon (same folder).
  cas::ObjectStore& Objects() {
    if (!objects_) objects_ = std::make_unique<cas::ObjectStore>(layout_.ObjectsDir());
    return *objects_;
  }

  std::size_t TempFilesOnServer() {
    std::error_code ec;
    std::size_t n = 0;
    for (auto it = fs::directory_iterator(layout_.ObjectsDir() / "tmp", ec);
         !ec && it != fs::directory_iterator(); it.increment(ec)) {
      ++n;
    }
    return n;
  }

  fs::path root_;
  fs::path src_;
  fs::path stat_cache_;
  WorkspaceLayout layout_;
  std::unique_ptr<api::Daemon> daemon_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<cas::ObjectStore> objects_;
};

TEST_F(RemoteSnapshotTest, UploadsOnlyMissingObjectsAndTheSnapshotMaterialisesIdentical) {
  MakeTree();
  const cas::SnapshotResult scan = Scan();
  ASSERT_FALSE(scan.id.empty());
  const auto [distinct, distinct_bytes] = Distinct(scan);
  ASSERT_EQ(distinct, 20u + 1 + 1 + 1);  // Modules, the triplicated blob, empty, train.sh.

  std::vector<UploadStats> seen;
  StatusOr<UploadStats> stats =
      UploadSnapshot(*http_, scan, [&](const UploadStats& s) { seen.push_back(s); });
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->objects, distinct);
  EXPECT_EQ(stats->objects_missing, distinct);
  EXPECT_EQ(stats->objects_uploaded, distinct);
  EXPECT_EQ(stats->bytes_uploaded, distinct_bytes);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().objects_uploaded, distinct);

  // The server has the manifest, byte for byte, and materialises the same tree.
  StatusOr<HttpResult> got = http_->Request("GET", "/api/v1/snapshots/" + scan.id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body, scan.manifest.ToJson());
  cas::Snapshotter server_snapshots(Objects(), layout_.SnapshotsDir());
  const fs::path out = root_ / "materialised";
  Status materialised = server_snapshots.Materialize(scan.id, out);
  ASSERT_TRUE(materialised.ok()) << materialised.ToString();
  EXPECT_EQ(TreeOf(out), TreeOf(src_));
  EXPECT_EQ(TempFilesOnServer(), 0u);

  // Unchanged: nothing is uploaded.
  const cas::SnapshotResult again = Scan();
  EXPECT_EQ(again.id, scan.id);
  StatusOr<UploadStats> resubmit = UploadSnapshot(*http_, again);
  ASSERT_TRUE(resubmit.ok()) << resubmit.status().ToString();
  EXPECT_EQ(resubmit->objects, distinct);
  EXPECT_EQ(resubmit->objects_missing, 0u);
  EXPECT_EQ(resubmit->objects_uploaded, 0u);
  EXPECT_EQ(resubmit->bytes_uploaded, 0u);

  // One file changed: exactly that file is uploaded.
  const std::string changed = RandomBytes(12345, 999);
  Write("pkg/mod7.py", changed);
  const cas::SnapshotResult third = Scan();
  EXPECT_NE(third.id, scan.id);
  StatusOr<UploadStats> one = UploadSnapshot(*http_, third);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->objects_missing, 1u);
  EXPECT_EQ(one->objects_uploaded, 1u);
  EXPECT_EQ(one->bytes_uploaded, changed.size());
  EXPECT_TRUE(Objects().Has(Digest(changed)));
}

TEST_F(RemoteSnapshotTest, FromFolderSnapshotsWithTheLocalCliRulesAndRefusesBadPaths) {
  MakeTree();
  Write(".amlignore", "data/\n");
  Write("notes.md", "kept");
  // What a local CLI stores for this folder (same code, rules and store): the same id.
  StatusOr<cas::SnapshotResult> local =
      cas::Snapshotter(Objects(), layout_.SnapshotsDir()).Snapshot(src_, {});
  ASSERT_TRUE(local.ok()) << local.status().ToString();

  StatusOr<json> made = http_->PostJson("/api/v1/snapshots/from-folder", {{"path", src_.string()}});
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ((*made)["id"], local->id);
  EXPECT_EQ((*made)["files"], local->file_count);
  EXPECT_EQ((*made)["bytes"], local->total_bytes);
  StatusOr<HttpResult> manifest = http_->Request("GET", "/api/v1/snapshots/" + local->id);
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(manifest->status, 200);
  // data/ is ignored by .amlignore (the `latest` link to data/a.bin stays, as a link).
  EXPECT_EQ(manifest->body.find("\"path\":\"data/a.bin\""), std::string::npos) << manifest->body;
  EXPECT_NE(manifest->body.find("\"path\":\"notes.md\""), std::string::npos) << manifest->body;
  // The stat cache of the workspace's CLI serves it: an unchanged folder is not read again.
  EXPECT_TRUE(fs::exists(layout_.ObjectsDir() / "statcache"));

  struct Bad {
    json body;
    int status;
    const char* says;
  };
  for (const Bad& bad : std::vector<Bad>{
           {json{{"path", "relative/src"}}, 400, "absolute folder"},
           {json{{"folder", src_.string()}}, 400, "expected {"},
           {json{{"path", (root_ / "absent").string()}}, 404, "absent"},
           {json{{"path", (src_ / "notes.md").string()}}, 400, "notes.md"},
       }) {
    StatusOr<HttpResult> r = http_->Request("POST", "/api/v1/snapshots/from-folder",
                                            bad.body.dump(), "application/json");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, bad.status) << bad.body << ": " << r->body;
    EXPECT_NE(r->body.find(bad.says), std::string::npos) << r->body;
  }
}

TEST_F(RemoteSnapshotTest, FileChangedAfterScanFailsAndAsksToSubmitAgain) {
  Write("a.txt", "original content");
  Write("b.txt", "other");
  const cas::SnapshotResult scan = Scan();
  Write("a.txt", "ORIGINAL CONTENT");  // Same size, other bytes.
  StatusOr<UploadStats> stats = UploadSnapshot(*http_, scan);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(stats.status().message(), "a.txt changed while it was being uploaded; submit again");
  EXPECT_FALSE(Objects().Has(Digest("original content")));
  EXPECT_FALSE(Objects().Has(Digest("ORIGINAL CONTENT")));
  StatusOr<HttpResult> got = http_->Request("GET", "/api/v1/snapshots/" + scan.id);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->status, 404);

  Write("a.txt", "short");  // Shrank below the scanned size.
  stats = UploadSnapshot(*http_, scan);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.status().message(), "a.txt changed while it was being uploaded; submit again");
  EXPECT_EQ(TempFilesOnServer(), 0u);
}

TEST_F(RemoteSnapshotTest, PutVerifiesTheDigest) {
  const std::string digest = Digest("abc");
  StatusOr<HttpResult> wrong =
      http_->Request("PUT", "/api/v1/objects/" + digest, "abd", "application/octet-stream");
  ASSERT_TRUE(wrong.ok()) << wrong.status().ToString();
  EXPECT_EQ(wrong->status, 400);
  const json error = json::parse(wrong->body)["error"];
  EXPECT_EQ(error["code"], "INVALID_ARGUMENT");
  EXPECT_EQ(error["message"],
            "object " + digest + ": content hashes to " + Digest("abd") + ", not " + digest);
  EXPECT_FALSE(Objects().Has(digest));
  EXPECT_FALSE(Objects().Has(Digest("abd")));
  EXPECT_EQ(TempFilesOnServer(), 0u);

  StatusOr<HttpResult> malformed =
      http_->Request("PUT", "/api/v1/objects/ABC", "abc", "application/octet-stream");
  ASSERT_TRUE(malformed.ok());
  EXPECT_EQ(malformed->status, 400);
  EXPECT_NE(malformed->body.find("'ABC' is not a SHA-256 digest"), std::string::npos)
      << malformed->body;

  StatusOr<HttpResult> stored =
      http_->Request("PUT", "/api/v1/objects/" + digest, "abc", "application/octet-stream");
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->status, 201);
  EXPECT_EQ(json::parse(stored->body), json({{"digest", digest}, {"size", 3}, {"added", true}}));
  EXPECT_TRUE(Objects().Has(digest));
  StatusOr<HttpResult> again =
      http_->Request("PUT", "/api/v1/objects/" + digest, "abc", "application/octet-stream");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(json::parse(again->body)["added"], false);
}

TEST_F(RemoteSnapshotTest, MissingAnswersInRequestOrderWithoutDuplicates) {
  const std::string have = Digest("present");
  ASSERT_TRUE(Objects().PutBytes("present").ok());
  const std::string a = Digest("a"), b = Digest("b");
  StatusOr<json> got =
      http_->PostJson("/api/v1/objects/missing", {{"digests", {b, have, a, b, a}}});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ((*got)["missing"], json({b, a}));

  StatusOr<json> empty = http_->PostJson("/api/v1/objects/missing", {{"digests", json::array()}});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ((*empty)["missing"], json::array());

  StatusOr<json> bad = http_->PostJson("/api/v1/objects/missing", {{"digests", {a, "xyz"}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("digests[1]"), std::string::npos) << bad.status().message();

  json many = json::array();
  for (int i = 0; i < 100001; ++i) many.push_back(a);
  StatusOr<json> too_many = http_->PostJson("/api/v1/objects/missing", {{"digests", many}});
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.status().message().find("100000"), std::string::npos);

  StatusOr<json> not_json = http_->PostJson("/api/v1/objects/missing", json("digests"));
  ASSERT_FALSE(not_json.ok());
  EXPECT_EQ(not_json.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RemoteSnapshotTest, ManifestWithMissingObjectIs409AndInvalidOneIs400) {
  cas::Manifest m;
  ASSERT_TRUE(Objects().PutBytes("here").ok());
  m.entries.push_back({"a.txt", cas::ManifestEntry::Type::kFile, 0644, 4, Digest("here"), ""});
  m.entries.push_back({"b.txt", cas::ManifestEntry::Type::kFile, 0644, 4, Digest("gone"), ""});
  StatusOr<HttpResult> missing =
      http_->Request("POST", "/api/v1/snapshots", m.ToJson(), "application/json");
  ASSERT_TRUE(missing.ok()) << missing.status().ToString();
  EXPECT_EQ(missing->status, 409);
  const json error = json::parse(missing->body)["error"];
  EXPECT_EQ(error["code"], "FAILED_PRECONDITION");
  EXPECT_NE(error["message"].get<std::string>().find(Digest("gone")), std::string::npos)
      << error["message"];
  StatusOr<HttpResult> absent = http_->Request("GET", "/api/v1/snapshots/" + m.Id());
  ASSERT_TRUE(absent.ok());
  EXPECT_EQ(absent->status, 404);

  StatusOr<HttpResult> invalid = http_->Request(
      "POST", "/api/v1/snapshots", R"({"version":1,"entries":[{"path":"../x","type":"file"}]})",
      "application/json");
  ASSERT_TRUE(invalid.ok());
  EXPECT_EQ(invalid->status, 400);

  m.entries.pop_back();
  // A declared size that is not the object's (1 byte, under any limit, for a 4-byte object).
  cas::Manifest lying = m;
  lying.entries[0].size = 1;
  StatusOr<HttpResult> lie =
      http_->Request("POST", "/api/v1/snapshots", lying.ToJson(), "application/json");
  ASSERT_TRUE(lie.ok());
  EXPECT_EQ(lie->status, 400) << lie->body;
  EXPECT_NE(lie->body.find("declares 1 bytes but its object"), std::string::npos) << lie->body;
  StatusOr<json> stored = http_->PostJson("/api/v1/snapshots", json::parse(m.ToJson()));
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  EXPECT_EQ(*stored, json({{"id", m.Id()}, {"files", 1}, {"bytes", 4}}));

  StatusOr<HttpResult> bad_id = http_->Request("GET", "/api/v1/snapshots/nothex");
  ASSERT_TRUE(bad_id.ok());
  EXPECT_EQ(bad_id->status, 400);
}

TEST_F(RemoteSnapshotTest, EveryRouteNeedsTheToken) {
  HttpClient anonymous(daemon_->url());
  HttpClient wrong(daemon_->url(), "not-the-token");
  const std::string digest = Digest("abc");
  for (HttpClient* c : {&anonymous, &wrong}) {
    StatusOr<HttpResult> r1 =
        c->Request("POST", "/api/v1/objects/missing", json({{"digests", {digest}}}).dump());
    StatusOr<HttpResult> r2 =
        c->Request("PUT", "/api/v1/objects/" + digest, "abc", "application/octet-stream");
    StatusOr<HttpResult> r3 = c->Request("POST", "/api/v1/snapshots", "{}");
    StatusOr<HttpResult> r4 = c->Request("GET", "/api/v1/snapshots/" + digest);
    StatusOr<HttpResult> r5 = c->Request("POST", "/api/v1/snapshots/from-folder",
                                         json({{"path", root_.string()}}).dump());
    for (const auto* r : {&r1, &r2, &r3, &r4, &r5}) {
      ASSERT_TRUE(r->ok()) << r->status().ToString();
      EXPECT_EQ((*r)->status, 401) << (*r)->body;
    }
  }
  EXPECT_FALSE(Objects().Has(digest));
}

TEST_F(RemoteSnapshotTest, HundredMegabyteObjectStreamsWithBoundedMemory) {
  // Larger than the daemon's limit for buffered bodies (HttpServerOptions::max_body_bytes,
  // 64 MiB): only a streamed upload gets through.
  constexpr std::size_t kSize = 100'000'000;
  ASSERT_TRUE(MakeDirs(src_).ok());
  {
    std::ofstream out(src_ / "weights.bin", std::ios::binary);
    std::string block = RandomBytes(1 << 20, 5);
    for (std::size_t left = kSize, i = 0; left > 0; ++i) {
      const std::size_t n = std::min(left, block.size());
      std::memcpy(block.data(), &i, sizeof i);  // Keeps blocks distinct.
      out.write(block.data(), static_cast<std::streamsize>(n));
      left -= n;
    }
  }
  ASSERT_EQ(fs::file_size(src_ / "weights.bin"), kSize);
  const cas::SnapshotResult scan = Scan();
  ASSERT_FALSE(scan.id.empty());

  const std::uint64_t before = ResidentBytes();
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> peak{before};
  std::thread sampler([&] {
    while (!done) {
      const std::uint64_t now = ResidentBytes();
      if (now > peak) peak = now;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  StatusOr<UploadStats> stats = UploadSnapshot(*http_, scan);
  done = true;
  sampler.join();
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->objects_uploaded, 1u);
  EXPECT_EQ(stats->bytes_uploaded, kSize);
  EXPECT_TRUE(Objects().Has(scan.manifest.entries[0].digest));
  // Neither side held the object in memory (client and server share this process).
  RecordProperty("resident_growth_bytes", std::to_string(peak - before));
  EXPECT_LT(peak - before, 40u << 20) << "resident memory grew by " << (peak - before) << " bytes";
}

}  // namespace
}  // namespace trainyard

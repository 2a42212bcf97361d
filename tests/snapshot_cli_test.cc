// `trainyard snapshot ...` end to end, as a user runs it: the built binary against a temporary
// workspace ($TRAINYARD_HOME). These commands work on the workspace's files directly, so no daemon
// or Docker is needed; snapshots are taken with the same Snapshotter `job create` uses, and runs
// and environments that refer to them are recorded through the workspace's store.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "tests/support/test_env.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/store/store.h"

namespace trainyard {
namespace {

using json = nlohmann::json;

using testing::CmdResult;

class SnapshotCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = fs::temp_directory_path() / ("ty-snapcli-" + RandomHex(4));
    project_ = home_ / "project";
    layout_.root = home_ / "ws";
    ASSERT_TRUE(MakeDirs(project_).ok());
    ASSERT_TRUE(layout_.Create().ok());
  }

  void TearDown() override { (void)RemoveTree(home_); }

  void Write(const std::string& rel, const std::string& text, unsigned mode = 0644) {
    ASSERT_TRUE(MakeDirs((project_ / rel).parent_path()).ok());
    ASSERT_TRUE(WriteFileAtomic(project_ / rel, text, mode).ok());
  }

  CmdResult Run(const std::string& args) {
    return testing::RunTrainyard(project_.string(), layout_.root.string(), args);
  }

  json RunJson(const std::string& args) {
    CmdResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.output;
    json j = json::parse(r.output, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << args << "\n" << r.output;
    return j;
  }

  // Snapshots project/<rel> into the workspace the way `job create` does.
  std::string TakeSnapshot(const std::string& rel) {
    cas::ObjectStore objects(layout_.ObjectsDir());
    cas::Snapshotter snapshotter(objects, layout_.SnapshotsDir());
    auto r = snapshotter.Snapshot(project_ / rel, cas::SnapshotLimits{});
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? r->id : "";
  }

  cas::Manifest Load(const std::string& id) {
    cas::ObjectStore objects(layout_.ObjectsDir());
    cas::Snapshotter snapshotter(objects, layout_.SnapshotsDir());
    auto m = snapshotter.Load(id);
    EXPECT_TRUE(m.ok()) << m.status().message();
    return m.ok() ? *m : cas::Manifest{};
  }

  fs::path ManifestPath(const std::string& id) { return layout_.SnapshotsDir() / (id + ".json"); }
  fs::path ObjectPath(const std::string& digest) {
    return cas::ObjectStore(layout_.ObjectsDir()).PathFor(digest);
  }

  std::string DigestOf(const std::string& id, const std::string& path) {
    for (const auto& e : Load(id).entries) {
      if (e.path == path) return e.digest;
    }
    ADD_FAILURE() << path << " not in snapshot " << id;
    return "";
  }

  // Records a run of `snapshot_id` in the workspace database, as the daemon does on submission.
  void InsertRun(const std::string& run_id, const std::string& snapshot_id) {
    auto store = store::OpenSqliteStore(layout_.Database().string());
    ASSERT_TRUE(store.ok()) << store.status().message();
    ASSERT_TRUE((*store)->EnsureExperiment("gc-test").ok());
    store::RunRecord run;
    run.id = run_id;
    run.experiment = "gc-test";
    run.compute = "local";
    run.request_json = "{}";
    run.snapshot_id = snapshot_id;
    run.created_at = run.updated_at = NowMillis();
    ASSERT_TRUE((*store)->InsertRun(run).ok());
  }

  // Records an environment whose build context is `snapshot_id`.
  void InsertEnvironment(const std::string& name, const std::string& snapshot_id) {
    auto store = store::OpenSqliteStore(layout_.Database().string());
    ASSERT_TRUE(store.ok()) << store.status().message();
    store::EnvironmentRecord env;
    env.name = name;
    env.version = "1";
    env.definition_json = json{{"name", name}, {"build_context", snapshot_id}}.dump();
    env.definition_hash = Sha("def" + name);
    env.image_hash = Sha("img" + name);
    env.created_at = NowMillis();
    ASSERT_TRUE((*store)->InsertEnvironment(env).ok());
  }

  static std::string Sha(const std::string& s) {
    // Any 64-hex value that is not a snapshot id.
    std::string out;
    for (char c : s) out += "0123456789abcdef"[static_cast<unsigned char>(c) % 16];
    out.resize(64, 'e');
    return out;
  }

  // Sets a file's mtime to `seconds_ago` in the past.
  static void Age(const fs::path& p, int seconds_ago) {
    struct timespec times[2];
    ::clock_gettime(CLOCK_REALTIME, &times[0]);
    times[0].tv_sec -= seconds_ago;
    times[1] = times[0];
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << p;
  }

  // The first line of `text` that contains `needle`, or "".
  static std::string LineWith(const std::string& text, const std::string& needle) {
    size_t at = text.find(needle);
    if (at == std::string::npos) return "";
    size_t begin = text.rfind('\n', at);
    begin = begin == std::string::npos ? 0 : begin + 1;
    return text.substr(begin, text.find('\n', at) - begin);
  }

  // Relative path → (content, owner-executable) of every regular file under `root`.
  static std::map<std::string, std::pair<std::string, bool>> Tree(const fs::path& root) {
    std::map<std::string, std::pair<std::string, bool>> out;
    for (const auto& e : fs::recursive_directory_iterator(root)) {
      if (!e.is_regular_file()) continue;
      bool exec = (e.status().permissions() & fs::perms::owner_exec) != fs::perms::none;
      out[fs::relative(e.path(), root).string()] = {*ReadFile(e.path()), exec};
    }
    return out;
  }

  fs::path home_, project_;
  WorkspaceLayout layout_;
};

TEST_F(SnapshotCliTest, PreviewNamesIgnoredPathsWithTheirRulesAndTheLimits) {
  Write("src/.gitignore", "# checkpoints\n*.ckpt\ndata/\n");
  Write("src/train.py", "print('hi')\n");
  Write("src/big.bin", std::string(5000, 'b'));
  Write("src/model.ckpt", "weights");
  Write("src/data/x.csv", "1,2\n");
  Write("src/sub/.gitignore", "!keep.ckpt\n");
  Write("src/sub/keep.ckpt", "kept");
  ASSERT_TRUE(::mkfifo((project_ / "src" / "pipe").c_str(), 0644) == 0);

  CmdResult r = Run("snapshot preview src");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Would include: 5 files"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("Within the limits"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("2000 files"), std::string::npos) << "default limits are shown";
  // Largest first.
  EXPECT_LT(r.output.find("big.bin"), r.output.find("train.py")) << r.output;
  EXPECT_NE(LineWith(r.output, "model.ckpt").find(".gitignore:2: *.ckpt"), std::string::npos)
      << r.output;
  EXPECT_NE(LineWith(r.output, "data/").find(".gitignore:3: data/"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pipe (named pipe)"), std::string::npos) << r.output;

  json j = RunJson("snapshot preview src --output json");
  EXPECT_EQ(j["file_count"], 5);
  EXPECT_EQ(j["over_limit"], false);
  EXPECT_EQ(j["files"][0]["path"], "big.bin");
  EXPECT_EQ(j["files"][0]["size"], 5000);
  std::map<std::string, std::string> rules;
  for (const auto& i : j["ignored"]) rules[i["path"]] = i["rule"];
  EXPECT_EQ(rules["model.ckpt"], ".gitignore:2: *.ckpt");
  EXPECT_EQ(rules["data"], ".gitignore:3: data/");
  EXPECT_EQ(rules.count("sub/keep.ckpt"), 0u) << "re-included by sub/.gitignore";
  ASSERT_EQ(j["skipped"].size(), 1u);

  // Over the workspace's limit: said so, naming the largest file, and nothing is stored.
  ASSERT_TRUE(WriteFileAtomic(layout_.ConfigFile(), R"({"snapshot_max_bytes": 1000})").ok());
  r = Run("snapshot preview src");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("OVER THE LIMIT"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("big.bin"), std::string::npos);
  j = RunJson("snapshot preview src --output json");
  EXPECT_EQ(j["over_limit"], true);
  EXPECT_EQ(j["limits"]["max_bytes"], 1000);
  EXPECT_NE(j["over_limit_message"].get<std::string>().find("big.bin"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(layout_.SnapshotsDir()));

  // Default folder is the current one; a missing folder is an error.
  EXPECT_EQ(Run("snapshot preview").exit_code, 0);
  EXPECT_NE(Run("snapshot preview nowhere").exit_code, 0);

  // -C DIR: as if started in DIR (the Python SDK starts the CLI this way).
  CmdResult here = Run("snapshot preview --output json");
  CmdResult there = testing::RunTrainyard(home_.string(), layout_.root.string(),
                                          "-C '" + project_.string() +
                                              "' snapshot preview "
                                              "--output json");
  ASSERT_EQ(there.exit_code, 0) << there.output;
  EXPECT_EQ(there.output, here.output);
  CmdResult nowhere = Run("-C '" + (home_ / "nowhere").string() + "' snapshot preview");
  EXPECT_EQ(nowhere.exit_code, 2) << nowhere.output;
  EXPECT_NE(nowhere.output.find("-C " + (home_ / "nowhere").string() + ": No such file"),
            std::string::npos)
      << nowhere.output;
}

TEST_F(SnapshotCliTest, PreviewShowsTheTwentyLargestAndCountsTheRest) {
  for (int i = 1; i <= 25; ++i) Write("many/f" + std::to_string(i), std::string(i * 10, 'x'));
  Write("many/caf\xe9.bin", "not UTF-8 name");
  CmdResult r = Run("snapshot preview many");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LT(r.output.find("f25"), r.output.find("f24")) << r.output;
  EXPECT_NE(r.output.find("f6\n"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("f5\n"), std::string::npos) << "only the 20 largest: " << r.output;
  EXPECT_NE(r.output.find("... and 6 more entries"), std::string::npos) << r.output;
  json j = RunJson("snapshot preview many --output json");
  EXPECT_EQ(j["files"].size(), 26u);
  bool printable = false;
  for (const auto& f : j["files"]) printable |= f["path"] == "caf\\xe9.bin";
  EXPECT_TRUE(printable) << j["files"];
}

TEST_F(SnapshotCliTest, ListShowDownloadRoundTrip) {
  Write("src/train.py", "print('train')\n");
  Write("src/run.sh", "#!/bin/sh\necho run\n", 0755);
  Write("src/pkg/util.py", "X = 1\n");
  Write("src/pkg/data.bin", std::string(3000, 'd'));
  const std::string id = TakeSnapshot("src");
  ASSERT_EQ(id.size(), 64u);
  InsertRun("run-1", id);

  json list = RunJson("snapshot list --output json");
  ASSERT_EQ(list.size(), 1u) << list;
  EXPECT_EQ(list[0]["id"], id);
  EXPECT_EQ(list[0]["file_count"], 4);
  EXPECT_EQ(list[0]["total_bytes"], 15 + 19 + 6 + 3000);
  EXPECT_EQ(list[0]["runs"], 1);
  EXPECT_FALSE(list[0]["created_at"].get<std::string>().empty());
  CmdResult table = Run("snapshot list");
  ASSERT_EQ(table.exit_code, 0);
  EXPECT_NE(table.output.find(id.substr(0, 12)), std::string::npos) << table.output;
  EXPECT_EQ(table.output.find(id.substr(0, 13)), std::string::npos) << "short ids in tables";

  json show = RunJson("snapshot show " + id.substr(0, 8) + " --output json");
  EXPECT_EQ(show["id"], id);
  ASSERT_EQ(show["entries"].size(), 4u);
  EXPECT_EQ(show["entries"][2]["path"], "run.sh");
  EXPECT_EQ(show["entries"][2]["mode"], "0755");
  CmdResult text = Run("snapshot show " + id);
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("pkg/data.bin"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find(DigestOf(id, "pkg/data.bin").substr(0, 12)), std::string::npos);

  CmdResult dl =
      Run("snapshot download " + id.substr(0, 10) + " '" + (home_ / "out").string() + "'");
  ASSERT_EQ(dl.exit_code, 0) << dl.output;
  EXPECT_EQ(Tree(home_ / "out"), Tree(project_ / "src"));
  // Never over an existing folder with files in it.
  CmdResult again = Run("snapshot download " + id + " '" + (home_ / "out").string() + "'");
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.output.find("not an empty folder"), std::string::npos) << again.output;
}

TEST_F(SnapshotCliTest, IdPrefixesResolveOnlyWhenUnique) {
  Write("src/a.txt", "a");
  const std::string id = TakeSnapshot("src");
  // Two manifests sharing a prefix (file names are all resolution looks at).
  const std::string a = "abcdef0" + std::string(57, '1'), b = "abcdef0" + std::string(57, '2');
  ASSERT_TRUE(WriteFileAtomic(ManifestPath(a), "{}").ok());
  ASSERT_TRUE(WriteFileAtomic(ManifestPath(b), "{}").ok());

  json show = RunJson("snapshot show " + id.substr(0, 6) + " --output json");
  EXPECT_EQ(show["id"], id);
  CmdResult upper = Run("snapshot show " + std::string("ABCDEF0") + std::string(57, '1'));
  EXPECT_NE(upper.output.find(a), std::string::npos) << "upper case accepted: " << upper.output;
  EXPECT_EQ(upper.output.find("not a snapshot id"), std::string::npos) << upper.output;

  CmdResult ambiguous = Run("snapshot show abcdef0");
  EXPECT_NE(ambiguous.exit_code, 0);
  EXPECT_NE(ambiguous.output.find("ambiguous"), std::string::npos) << ambiguous.output;
  EXPECT_NE(ambiguous.output.find(a), std::string::npos) << ambiguous.output;
  EXPECT_NE(ambiguous.output.find(b), std::string::npos) << ambiguous.output;

  std::string unknown_prefix = id[0] == '9' ? "8888888" : "9999999";
  CmdResult unknown = Run("snapshot show " + unknown_prefix);
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.output.find("no snapshot matches '" + unknown_prefix + "'"), std::string::npos)
      << unknown.output;

  CmdResult short_prefix = Run("snapshot download abcde '" + (home_ / "x").string() + "'");
  EXPECT_NE(short_prefix.exit_code, 0);
  EXPECT_NE(short_prefix.output.find("at least 6 hex digits"), std::string::npos)
      << short_prefix.output;
  EXPECT_FALSE(fs::exists(home_ / "x"));
}

TEST_F(SnapshotCliTest, GcRemovesUnreferencedSnapshotsButKeepsReferencedOnes) {
  Write("kept/shared.txt", "shared by both");
  Write("kept/only-kept.txt", "only in the referenced snapshot");
  Write("env/Dockerfile", "FROM python:3.11-slim\n");
  Write("dropped/shared.txt", "shared by both");
  Write("dropped/only-dropped.txt", "only in the unreferenced snapshot");
  const std::string kept = TakeSnapshot("kept");
  const std::string env = TakeSnapshot("env");
  const std::string dropped = TakeSnapshot("dropped");
  InsertRun("run-kept", kept);
  InsertEnvironment("ctx", env);
  const fs::path only_dropped = ObjectPath(DigestOf(dropped, "only-dropped.txt"));
  const fs::path shared = ObjectPath(DigestOf(dropped, "shared.txt"));
  ASSERT_TRUE(fs::exists(only_dropped));
  // A temp file a crashed writer left behind.
  ASSERT_TRUE(WriteFileAtomic(layout_.ObjectsDir() / "tmp" / "obj-crashed", "partial").ok());

  // The default grace period keeps everything just written.
  CmdResult r = Run("snapshot gc");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Removed 0 snapshots"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(ManifestPath(dropped)));
  EXPECT_TRUE(fs::exists(only_dropped));
  EXPECT_TRUE(fs::exists(layout_.ObjectsDir() / "tmp" / "obj-crashed"));

  // A dry run reports but removes nothing.
  json dry = RunJson("snapshot gc --dry-run --keep-newer-than 0 --output json");
  EXPECT_EQ(dry["removed_snapshots"], json::array({dropped}));
  EXPECT_EQ(dry["removed_objects"], 1) << dry;
  EXPECT_EQ(dry["removed_temp_files"], 1) << dry;
  r = Run("snapshot gc --dry-run --keep-newer-than 0");
  EXPECT_NE(r.output.find("Would remove 1 snapshot"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(ManifestPath(dropped)));
  EXPECT_TRUE(fs::exists(only_dropped));
  EXPECT_TRUE(fs::exists(layout_.ObjectsDir() / "tmp" / "obj-crashed"));

  r = Run("snapshot gc --keep-newer-than 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Removed 1 snapshot"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("1 object"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(dropped), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(ManifestPath(dropped)));
  EXPECT_FALSE(fs::exists(only_dropped));
  EXPECT_FALSE(fs::exists(layout_.ObjectsDir() / "tmp" / "obj-crashed"));
  EXPECT_TRUE(fs::exists(shared)) << "still used by the referenced snapshot";
  EXPECT_TRUE(fs::exists(ManifestPath(kept)));
  EXPECT_TRUE(fs::exists(ManifestPath(env))) << "an environment's build context is kept";

  // What is kept is whole: both snapshots still download.
  ASSERT_EQ(Run("snapshot download " + kept + " '" + (home_ / "k").string() + "'").exit_code, 0);
  EXPECT_EQ(Tree(home_ / "k"), Tree(project_ / "kept"));
  ASSERT_EQ(Run("snapshot download " + env + " '" + (home_ / "e").string() + "'").exit_code, 0);
  json list = RunJson("snapshot list --output json");
  EXPECT_EQ(list.size(), 2u) << list;
}

TEST_F(SnapshotCliTest, GcWithTheDefaultGraceRemovesOnlyWhatIsOlder) {
  Write("old/a.txt", "old and unreferenced");
  Write("new/b.txt", "new and unreferenced");
  const std::string old_id = TakeSnapshot("old");
  const std::string new_id = TakeSnapshot("new");
  const fs::path old_object = ObjectPath(DigestOf(old_id, "a.txt"));
  const fs::path new_object = ObjectPath(DigestOf(new_id, "b.txt"));
  Age(ManifestPath(old_id), 7200);
  Age(old_object, 7200);
  // An old object whose new manifest is written: live through the manifest, whatever its age.
  Age(new_object, 7200);

  CmdResult r = Run("snapshot gc");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(ManifestPath(old_id)));
  EXPECT_FALSE(fs::exists(old_object));
  EXPECT_TRUE(fs::exists(ManifestPath(new_id)));
  EXPECT_TRUE(fs::exists(new_object));
  EXPECT_NE(r.output.find("newer than 3600 s"), std::string::npos) << r.output;
}

TEST_F(SnapshotCliTest, GcRemovesNothingWhenAManifestCannotBeRead) {
  Write("a/a.txt", "a");
  Write("b/b.txt", "b");
  const std::string a = TakeSnapshot("a");
  const std::string b = TakeSnapshot("b");
  InsertRun("run-a", a);
  const fs::path b_object = ObjectPath(DigestOf(b, "b.txt"));
  // The referenced manifest is corrupt: its objects cannot be told from garbage.
  fs::permissions(ManifestPath(a), fs::perms::owner_write, fs::perm_options::add);
  ASSERT_TRUE(WriteFileAtomic(ManifestPath(a), "{\"version\":1,\"entries\":[]}").ok());
  CmdResult r = Run("snapshot gc --keep-newer-than 0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(a), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(ManifestPath(b)));
  EXPECT_TRUE(fs::exists(b_object));
}

TEST_F(SnapshotCliTest, EmptyWorkspace) {
  CmdResult r = Run("snapshot list");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("No snapshots"), std::string::npos) << r.output;
  EXPECT_EQ(RunJson("snapshot list --output json"), json::array());
  r = Run("snapshot gc --keep-newer-than 0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Removed 0 snapshots"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(layout_.Database())) << "gc never creates the database";
}

TEST_F(SnapshotCliTest, JobCreateRefusesABadRequestBeforeReadingTheCode) {
  // The request's own checks (spec::CheckRunRequest) run in the CLI before the snapshot: a job
  // the daemon would refuse costs neither a scan of its code nor a daemon start.
  Write("src/train.py", "print('hi')\n");
  Write("job.yml",
        "command: python train.py\n"
        "code: ./src\n"
        "environment:\n  image: busybox:latest\n");
  CmdResult r = Run("job create -f job.yml --name ../up");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("invalid run name '../up'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("job.yml"), std::string::npos) << r.output;
  std::error_code ec;
  EXPECT_TRUE(fs::is_empty(layout_.SnapshotsDir(), ec) || !fs::exists(layout_.SnapshotsDir()))
      << "a snapshot was taken for a request that cannot run";
  EXPECT_FALSE(fs::exists(layout_.root / "server.json")) << "a daemon was started for it";
}

}  // namespace
}  // namespace trainyard

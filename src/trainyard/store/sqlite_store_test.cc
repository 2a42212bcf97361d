#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <thread>
#include <vector>

#include "trainyard/common/fs.h"
#include "trainyard/common/sqlite.h"
#include "trainyard/common/util.h"
#include "trainyard/store/snapshot_references.h"
#include "trainyard/store/store.h"

namespace trainyard::store {
namespace {

std::unique_ptr<Store> Open(const std::string& path = ":memory:") {
  auto s = OpenSqliteStore(path);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

RunRecord NewRun(const std::string& id, const std::string& exp = "exp") {
  RunRecord r;
  r.id = id;
  r.experiment = exp;
  r.compute = "local";
  r.request_json = "{}";
  r.created_at = NowMillis();
  r.tags = {{"team", "vision"}};
  return r;
}

TEST(SqliteStoreTest, RunLifecyclePersistsTransitions) {
  auto st = Open();
  ASSERT_TRUE(st->InsertRun(NewRun("r1")).ok());
  ASSERT_TRUE(st->TransitionRun("r1", RunStatus::kQueued, 10).ok());
  ASSERT_TRUE(st->TransitionRun("r1", RunStatus::kRunning, 20).ok());
  ASSERT_TRUE(st->TransitionRun("r1", RunStatus::kCompleted, 30).ok());
  auto r = st->GetRun("r1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, RunStatus::kCompleted);
  ASSERT_EQ(r->transitions.size(), 4u);
  EXPECT_EQ(r->TimeOf(RunStatus::kRunning), 20);
  EXPECT_EQ(r->tags.at("team"), "vision");
  // A terminal state is never left.
  EXPECT_EQ(st->TransitionRun("r1", RunStatus::kRunning, 40).code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(st->GetRun("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(st->InsertRun(NewRun("r1")).code(), StatusCode::kAlreadyExists);
}

// The command a run shows is its request's "command" string; anything else shows none, and a
// malformed request never fails a read.
TEST(SqliteStoreTest, TheCommandIsReadFromTheRequest) {
  auto st = Open();
  const std::pair<const char*, const char*> cases[] = {
      {R"({"command": "python train.py --lr \"0.1\""})", "python train.py --lr \"0.1\""},
      {R"({"command": 42})", ""},
      {R"({"name": "x"})", ""},
      {R"({"command": "tru)", ""},
      {"", ""},
  };
  int i = 0;
  for (const auto& [request, command] : cases) {
    RunRecord r = NewRun("c" + std::to_string(i++));
    r.request_json = request;
    ASSERT_TRUE(st->InsertRun(r).ok());
    auto got = st->GetRun(r.id);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->command, command) << request;
  }
  auto listed = st->ListRuns({});
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 5u);
  EXPECT_EQ(listed->back().command, "python train.py --lr \"0.1\"");
  // A page leaves the request out; the run itself has it.
  EXPECT_EQ(listed->back().request_json, "");
  EXPECT_EQ(st->GetRun(listed->back().id)->request_json, cases[0].first);
}

// A narrow update writes the fields it is given and leaves every other one as it was.
TEST(SqliteStoreTest, SetRunFieldsChangesOnlyTheGivenFields) {
  auto st = Open();
  ASSERT_TRUE(st->InsertRun(NewRun("r")).ok());
  ASSERT_TRUE(
      st->SetRunFields("r", {.image_hash = "h1", .image = "img:1", .container_id = "c1"}).ok());
  ASSERT_TRUE(st->SetRunFields("r", {.exit_code = 0}).ok());
  ASSERT_TRUE(st->SetRunFields("r", {.failure_reason = "why"}).ok());
  auto r = st->GetRun("r");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->image_hash, "h1");
  EXPECT_EQ(r->image, "img:1");
  EXPECT_EQ(r->container_id, "c1");
  EXPECT_EQ(r->exit_code, std::optional<int>(0));
  EXPECT_EQ(r->failure_reason, "why");
  ASSERT_TRUE(st->SetRunFields("r", {.image = "img:2"}).ok());
  r = st->GetRun("r");
  EXPECT_EQ(r->image, "img:2");
  EXPECT_EQ(r->image_hash, "h1");
  EXPECT_EQ(r->container_id, "c1");
  EXPECT_EQ(r->exit_code, std::optional<int>(0));
  EXPECT_EQ(r->failure_reason, "why");
  EXPECT_EQ(st->SetRunFields("nope", {.image = "x"}).code(), StatusCode::kNotFound);
}

// A listed run carries its own transitions and tags (read for the whole page at once), in the
// order they happened, as GetRun gives them.
TEST(SqliteStoreTest, ListedRunsCarryTheirOwnTransitionsAndTags) {
  auto st = Open();
  for (int i = 0; i < 30; ++i) {
    const std::string id = "r" + std::to_string(i);
    ASSERT_TRUE(st->InsertRun(NewRun(id)).ok());
    ASSERT_TRUE(st->TransitionRun(id, RunStatus::kQueued, 100 + i).ok());
    if (i % 2 == 0) {
      ASSERT_TRUE(st->TransitionRun(id, RunStatus::kRunning, 200 + i).ok());
    }
    ASSERT_TRUE(st->UpdateRunTags(id, {{"i", std::to_string(i)}}, {}).ok());
  }
  auto all = st->ListRuns({.limit = 1000});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 30u);
  for (const RunRecord& r : *all) {
    auto one = st->GetRun(r.id);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(r.tags, one->tags) << r.id;
    EXPECT_EQ(r.tags.at("i"), r.id.substr(1));
    ASSERT_EQ(r.transitions.size(), one->transitions.size()) << r.id;
    for (std::size_t k = 0; k < r.transitions.size(); ++k) {
      EXPECT_EQ(r.transitions[k].status, one->transitions[k].status) << r.id;
      EXPECT_EQ(r.transitions[k].at, one->transitions[k].at) << r.id;
    }
  }
}

TEST(SqliteStoreTest, UpdateAndListRuns) {
  auto st = Open();
  ASSERT_TRUE(st->InsertRun(NewRun("a", "e1")).ok());
  ASSERT_TRUE(st->InsertRun(NewRun("b", "e2")).ok());
  ASSERT_TRUE(st->InsertRun(NewRun("c", "e1")).ok());
  auto r = st->GetRun("a");
  ASSERT_TRUE(r.ok());
  r->exit_code = 3;
  r->failure_reason = "script exited with code 3";
  ASSERT_TRUE(st->UpdateRun(*r).ok());
  ASSERT_TRUE(st->TransitionRun("a", RunStatus::kFailed, 5).ok());
  auto all = st->ListRuns({});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].id, "c");  // newest first
  auto e1 = st->ListRuns({.experiment = "e1"});
  ASSERT_TRUE(e1.ok());
  EXPECT_EQ(e1->size(), 2u);
  auto active = st->ListActiveRuns();
  ASSERT_TRUE(active.ok());
  EXPECT_EQ(active->size(), 2u);
  auto a = st->GetRun("a");
  EXPECT_EQ(a->exit_code.value_or(-1), 3);
  EXPECT_EQ(a->failure_reason, "script exited with code 3");
  auto exps = st->ListExperiments();
  ASSERT_TRUE(exps.ok());
  EXPECT_EQ(exps->size(), 2u);
}

// On a file, reads run on connections of their own: each still sees every write that returned
// before it began, and reads on several threads beside the writer see whole runs.
TEST(SqliteStoreTest, ReadersOnAFileSeeEveryCommittedWrite) {
  char tmpl[] = "/tmp/ty-store-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  {
    auto st = Open(dir + "/trainyard.db");
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 3; ++t) {
      readers.emplace_back([&] {
        while (!stop) {
          auto page = st->ListRuns({.limit = 20});
          if (!page.ok()) {
            ++bad;
            continue;
          }
          for (const RunRecord& r : *page) {
            // Every listed run carries its tag and its first transition (written with it), and
            // its status is its last transition.
            if (r.tags.count("team") != 1 || r.transitions.empty() ||
                r.transitions.front().status != RunStatus::kNotStarted ||
                r.transitions.back().status != r.status) {
              ++bad;
            }
          }
        }
      });
    }
    for (int i = 0; i < 200; ++i) {
      const std::string id = "r" + std::to_string(i);
      ASSERT_TRUE(st->InsertRun(NewRun(id)).ok());
      ASSERT_TRUE(st->TransitionRun(id, RunStatus::kQueued, 10).ok());
      auto seen = st->GetRun(id);
      ASSERT_TRUE(seen.ok()) << seen.status().ToString();
      EXPECT_EQ(seen->status, RunStatus::kQueued);  // read after write, on another connection
    }
    stop = true;
    for (auto& t : readers) t.join();
    EXPECT_EQ(bad.load(), 0);
  }
  (void)RemoveTree(dir);
}

TEST(SqliteStoreTest, EnvironmentVersions) {
  auto st = Open();
  EnvironmentRecord e{"fastai", "1", "{}", "d1", "h1", 1};
  ASSERT_TRUE(st->InsertEnvironment(e).ok());
  e.version = "2";
  e.definition_hash = "d2";
  ASSERT_TRUE(st->InsertEnvironment(e).ok());
  EXPECT_EQ(st->InsertEnvironment(e).code(), StatusCode::kAlreadyExists);
  auto latest = st->GetEnvironment("fastai", "");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->version, "2");
  EXPECT_EQ(st->GetEnvironment("fastai", "1")->definition_hash, "d1");
  EXPECT_EQ(st->GetEnvironment("fastai", "9").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(st->ListEnvironments("fastai")->size(), 2u);
}

TEST(SqliteStoreTest, SurvivesReopenAndMigratesOnce) {
  auto dir = fs::temp_directory_path() / ("ty-store-" + RandomHex(4));
  ASSERT_TRUE(MakeDirs(dir).ok());
  std::string path = (dir / "t.db").string();
  {
    auto st = Open(path);
    ASSERT_TRUE(st->InsertRun(NewRun("persist")).ok());
    ASSERT_TRUE(st->TransitionRun("persist", RunStatus::kQueued, 2).ok());
  }
  {
    auto st = Open(path);  // migrations already applied: must not fail or duplicate
    auto r = st->GetRun("persist");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, RunStatus::kQueued);
  }
  ASSERT_TRUE(RemoveTree(dir).ok());
}

// A workspace made before runs had a command column gets it filled from the runs' requests.
TEST(SqliteStoreTest, MigrationFillsTheCommandOfEarlierRuns) {
  auto dir = fs::temp_directory_path() / ("ty-store-" + RandomHex(4));
  ASSERT_TRUE(MakeDirs(dir).ok());
  const std::string path = (dir / "t.db").string();
  {
    auto st = Open(path);
    RunRecord r = NewRun("old");
    r.request_json = R"({"command": "python old.py"})";
    ASSERT_TRUE(st->InsertRun(r).ok());
  }
  {
    // Back to schema version 4, as an earlier trainyard left it (the later migrations undone).
    auto db = sqlite::Connection::Open(path, SQLITE_OPEN_READWRITE, "test");
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)
                    ->Exec("DROP TABLE registries; DROP TABLE asset_labels; DROP TABLE assets;"
                           " DROP TABLE datastores;"
                           " ALTER TABLE runs DROP COLUMN command;"
                           " DELETE FROM schema_migrations WHERE version >= 5")
                    .ok());
  }
  auto st = Open(path);
  auto listed = st->ListRuns({});
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().command, "python old.py");
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(SqliteStoreTest, PropertiesAreImmutableTagsRemovableAndVerdictKept) {
  auto st = Open(":memory:");
  ASSERT_TRUE(st->InsertRun(NewRun("p")).ok());
  ASSERT_TRUE(st->AddRunProperties("p", {{"a", "1"}, {"b", "2"}}).ok());
  ASSERT_TRUE(st->AddRunProperties("p", {{"a", "1"}}).ok());  // the same value again: fine
  Status clash = st->AddRunProperties("p", {{"c", "3"}, {"b", "other"}});
  EXPECT_EQ(clash.code(), StatusCode::kAlreadyExists);
  EXPECT_NE(clash.message().find("'b'"), std::string::npos) << clash.message();
  auto props = st->GetRunProperties("p");
  ASSERT_TRUE(props.ok());
  EXPECT_EQ(*props, (std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}}));  // no "c"
  EXPECT_EQ(st->AddRunProperties("nope", {{"a", "1"}}).code(), StatusCode::kNotFound);
  EXPECT_EQ(st->GetRunProperties("nope").status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(st->UpdateRunTags("p", {{"k", "v"}}, {}).ok());
  ASSERT_TRUE(st->UpdateRunTags("p", {}, {"k", "never"}).ok());
  EXPECT_EQ(st->UpdateRunTags("nope", {}, {"k"}).code(), StatusCode::kNotFound);
  EXPECT_EQ(st->GetRun("p")->tags.count("k"), 0u);

  // Per-run limits: a batch that would cross one is refused whole, naming the limit.
  ASSERT_TRUE(st->UpdateRunTags("p", {}, {"team"}).ok());
  ASSERT_TRUE(st->UpdateRunTags("p", {{"a", "1"}, {"b", "2"}}, {}, 2).ok());
  ASSERT_TRUE(st->UpdateRunTags("p", {{"a", "3"}}, {}, 2).ok());  // a replacement adds none
  Status over = st->UpdateRunTags("p", {{"c", "1"}, {"a", "4"}}, {}, 2);
  EXPECT_EQ(over.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(over.message().find("the limit is 2 tags per run"), std::string::npos)
      << over.message();
  EXPECT_EQ(st->GetRun("p")->tags, (std::map<std::string, std::string>{{"a", "3"}, {"b", "2"}}));
  ASSERT_TRUE(st->UpdateRunTags("p", {{"c", "1"}}, {"a"}, 2).ok());  // removed in the same batch
  Status props_over = st->AddRunProperties("p", {{"x", "1"}}, 2);
  EXPECT_EQ(props_over.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(props_over.message().find("the limit is 2 properties per run"), std::string::npos)
      << props_over.message();
  EXPECT_EQ(st->GetRunProperties("p")->count("x"), 0u);
  ASSERT_TRUE(st->UpdateRunTags("p", {}, {"b", "c"}).ok());

  EXPECT_FALSE(st->GetRun("p")->script_status.has_value());
  ASSERT_TRUE(st->SetScriptVerdict("p", RunStatus::kFailed, "bad data").ok());
  auto r = st->GetRun("p");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->script_status, RunStatus::kFailed);
  EXPECT_EQ(r->script_message, "bad data");
  EXPECT_EQ(st->SetScriptVerdict("p", RunStatus::kRunning, "").code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(st->SetScriptVerdict("nope", RunStatus::kFailed, "").code(), StatusCode::kNotFound);
}

TEST(SnapshotReferencesTest, CountsTheSnapshotsRunsAndEnvironmentsName) {
  const std::string dir = "/tmp/ty-snaprefs-" + RandomHex(4);
  ASSERT_TRUE(MakeDirs(dir).ok());
  const std::string db = dir + "/trainyard.db";
  // No database yet: nothing is referred to (and nothing is created).
  auto none = ReadSnapshotReferences(db);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->Ids().empty());
  EXPECT_FALSE(std::filesystem::exists(db));

  const std::string code(64, 'a'), context(64, 'b'), env_context(64, 'c');
  {
    auto st = Open(db);
    RunRecord run = NewRun("r1");
    run.snapshot_id = code;
    run.request_json = R"({"environment":{"build":{"context_snapshot":")" + context + R"("}}})";
    ASSERT_TRUE(st->InsertRun(run).ok());
    RunRecord again = NewRun("r2");
    again.snapshot_id = code;
    ASSERT_TRUE(st->InsertRun(again).ok());
    EnvironmentRecord env;
    env.name = "e";
    env.version = "1";
    env.definition_json = R"({"build_context":")" + env_context + R"(","not_an_id":")" +
                          std::string(63, 'd') + R"("})";
    env.definition_hash = "h";
    env.image_hash = "i";
    env.created_at = NowMillis();
    ASSERT_TRUE(st->InsertEnvironment(env).ok());
  }
  auto refs = ReadSnapshotReferences(db);
  ASSERT_TRUE(refs.ok()) << refs.status().ToString();
  EXPECT_EQ(refs->runs.at(code), 2u);
  EXPECT_EQ(refs->runs.at(context), 1u);
  EXPECT_EQ(refs->environments.at(env_context), 1u);
  EXPECT_EQ(refs->Ids(), (std::set<std::string>{code, context, env_context}));
  EXPECT_EQ(refs->Ids().count(env_context), 1u);
  EXPECT_EQ(refs->Ids().count(std::string(64, 'd')), 0u);
  (void)RemoveTree(dir);
}

TEST(SqliteStoreTest, DatastoresArePutListedAndDeletedByName) {
  auto st = Open(":memory:");
  ASSERT_TRUE(st->PutDatastore({"zeta", "s3", R"({"a":1})", 10, 10}).ok());
  ASSERT_TRUE(st->PutDatastore({"alpha", "local", R"({"b":2})", 20, 20}).ok());
  // Putting a name again replaces its definition and keeps when it was created.
  ASSERT_TRUE(st->PutDatastore({"zeta", "azure_blob", R"({"c":3})", 30, 30}).ok());
  auto list = st->ListDatastores();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "alpha");
  EXPECT_EQ((*list)[1].type, "azure_blob");
  EXPECT_EQ((*list)[1].definition_json, R"({"c":3})");
  EXPECT_EQ((*list)[1].created_at, 10);
  EXPECT_EQ((*list)[1].updated_at, 30);
  auto missing = st->GetDatastore("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "datastore 'nope' does not exist");
  ASSERT_TRUE(st->DeleteDatastore("alpha").ok());
  EXPECT_EQ(st->DeleteDatastore("alpha").code(), StatusCode::kNotFound);
  // Computes live in their own table.
  EXPECT_EQ(st->GetCompute("zeta").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace trainyard::store

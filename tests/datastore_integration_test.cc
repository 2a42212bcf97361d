// The datastore clients against real object stores: Azurite for azure_blob and the S3 test
// server (s3rver behind a Signature V4 check) for s3, both started by scripts/storage.sh, whose
// storage.env gives their addresses and keys.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/test_env.h"
#include "trainyard/assets/object_client.h"
#include "trainyard/assets/signing.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard {
namespace {

namespace fs = std::filesystem;
using assets::ObjectClient;
using assets::OpenObjectClient;

class DatastoreIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto info = testing::LoadStorageInfo();
    TY_REQUIRE_SERVICE(info.has_value(),
                       "no /var/lib/trainyard-test/storage.env; run scripts/storage.sh");
    info_ = *info;
    dir_ = fs::path(::testing::TempDir()) / ("ds-it-" + RandomHex(4));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (std::getenv("TY_KEEP") == nullptr) fs::remove_all(dir_);
  }

  // Creates a container in Azurite with a signed Create Container request.
  void CreateContainer(const std::string& name) {
    auto url = info_.azurite_url;
    HttpClient http(url.substr(0, url.rfind('/')));
    const std::string path = "/" + info_.azurite_account + "/" + name;
    assets::Params headers = {{"x-ms-date", assets::HttpDate(NowMillis() / 1000)},
                              {"x-ms-version", "2021-08-06"},
                              {"Content-Length", "0"},
                              {"Content-Type", "application/octet-stream"}};
    auto auth = assets::SharedKeyAuthorization(
        {"PUT", info_.azurite_account, path, {{"restype", "container"}}, headers},
        info_.azurite_key);
    ASSERT_TRUE(auth.ok());
    HttpHeaders sent = {"x-ms-date: " + headers[0].second, "x-ms-version: 2021-08-06",
                        "Authorization: " + *auth};
    auto r = http.Request("PUT", path + "?restype=container", "", "application/octet-stream", 10000,
                          sent);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, 201) << r->body;
  }

  spec::DatastoreDefinition Blob(const std::string& container) const {
    spec::DatastoreDefinition d;
    d.name = "blob";
    d.type = "azure_blob";
    d.account_name = info_.azurite_account;
    d.container_name = container;
    d.endpoint = info_.azurite_url;
    d.account_key = info_.azurite_key;
    return d;
  }

  spec::DatastoreDefinition S3() const {
    spec::DatastoreDefinition d;
    d.name = "s3";
    d.type = "s3";
    d.bucket = info_.s3_bucket;
    d.endpoint = info_.s3_url;
    d.access_key_id = info_.s3_access_key_id;
    d.secret_access_key = info_.s3_secret_access_key;
    return d;
  }

  fs::path Write(const std::string& name, const std::string& content) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }

  // Uploads, lists, stats and downloads through `client`, under a fresh prefix.
  void RoundTrip(ObjectClient& client) {
    ASSERT_TRUE(client.Check().ok()) << client.Check().ToString();
    const std::string prefix = "rt-" + RandomHex(4) + "/";
    std::string big(3 << 20, '\0');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7919) >> 3);
    const std::map<std::string, std::string> files = {
        {prefix + "a.csv", "x,y\n1,2\n"},
        {prefix + "sub dir/b ü+&=.txt", "odd name"},
        {prefix + "sub dir/big.bin", big},
        {prefix + "empty", ""},
    };
    for (const auto& [key, content] : files) {
      Status up = client.Upload(Write("up-" + RandomHex(3), content), key);
      ASSERT_TRUE(up.ok()) << key << ": " << up.ToString();
    }
    auto listed = client.List(prefix);
    ASSERT_TRUE(listed.ok()) << listed.status().ToString();
    ASSERT_EQ(listed->size(), files.size());
    auto it = files.begin();
    for (const assets::ObjectInfo& o : *listed) {
      EXPECT_EQ(o.key, it->first);
      EXPECT_EQ(o.size, it->second.size()) << o.key;
      EXPECT_FALSE(o.etag.empty()) << o.key;
      ++it;
    }
    auto sub = client.List(prefix + "sub dir/");
    ASSERT_TRUE(sub.ok());
    EXPECT_EQ(sub->size(), 2u);
    for (const auto& [key, content] : files) {
      const fs::path dest = dir_ / "down" / key;
      auto got = client.Download(key, dest, false);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
      EXPECT_EQ(*ReadFile(dest), content) << key;
      auto stat = client.Stat(key);
      ASSERT_TRUE(stat.ok()) << key << ": " << stat.status().ToString();
      EXPECT_EQ(stat->size, content.size());
      EXPECT_EQ(stat->etag, got->etag) << key;
    }
    auto missing = client.Download(prefix + "nope", dir_ / "nope", false);
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
    EXPECT_FALSE(fs::exists(dir_ / "nope"));
    EXPECT_EQ(client.Stat(prefix + "nope").status().code(), StatusCode::kNotFound);
  }

  testing::StorageInfo info_;
  fs::path dir_;
};

TEST_F(DatastoreIntegrationTest, AzuriteRoundTrip) {
  const std::string container = "rt" + RandomHex(6);
  CreateContainer(container);
  auto client = OpenObjectClient(Blob(container));
  ASSERT_TRUE(client.ok());
  RoundTrip(**client);
}

TEST_F(DatastoreIntegrationTest, AzuriteRefusesAWrongKeyAndNamesAMissingContainer) {
  const std::string container = "wk" + RandomHex(6);
  CreateContainer(container);
  auto def = Blob(container);
  def.account_key = Base64Encode("this is not the account's key, 64 bytes long.................");
  auto client = OpenObjectClient(def);
  ASSERT_TRUE(client.ok());
  Status st = (*client)->Check();
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << st.ToString();
  EXPECT_NE(st.message().find("rejected the credentials (HTTP 403"), std::string::npos)
      << st.message();
  EXPECT_EQ(st.message().find(def.account_key), std::string::npos);

  auto missing = OpenObjectClient(Blob("no-such-" + RandomHex(4)));
  ASSERT_TRUE(missing.ok());
  st = (*missing)->Check();
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();
  EXPECT_NE(st.message().find("ContainerNotFound"), std::string::npos) << st.message();
}

TEST_F(DatastoreIntegrationTest, S3RoundTrip) {
  auto client = OpenObjectClient(S3());
  ASSERT_TRUE(client.ok());
  RoundTrip(**client);
}

TEST_F(DatastoreIntegrationTest, S3RefusesAWrongSecretOrKeyIdAndNamesAMissingBucket) {
  auto def = S3();
  def.secret_access_key = "wrong-secret-" + RandomHex(8);
  Status st = (*OpenObjectClient(def))->Check();
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << st.ToString();
  EXPECT_NE(st.message().find("SignatureDoesNotMatch"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find(def.secret_access_key), std::string::npos);

  def = S3();
  def.access_key_id = "NOSUCHKEY";
  st = (*OpenObjectClient(def))->Check();
  EXPECT_EQ(st.code(), StatusCode::kPermissionDenied) << st.ToString();
  EXPECT_NE(st.message().find("InvalidAccessKeyId"), std::string::npos) << st.message();

  def = S3();
  def.bucket = "no-such-bucket-" + RandomHex(4);
  st = (*OpenObjectClient(def))->Check();
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();
  EXPECT_NE(st.message().find("NoSuchBucket"), std::string::npos) << st.message();
}

// A listing longer than one page (S3 answers 1000 keys per page) comes back whole.
TEST_F(DatastoreIntegrationTest, S3ListingFollowsContinuationTokens) {
  auto client = OpenObjectClient(S3());
  ASSERT_TRUE(client.ok());
  const std::string prefix = "pages-" + RandomHex(4) + "/";
  const fs::path one = Write("one", "1");
  constexpr int kObjects = 1010;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < kObjects; i += 4) {
        char name[16];
        std::snprintf(name, sizeof name, "%05d", i);
        if (!(*client)->Upload(one, prefix + name).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  auto listed = (*client)->List(prefix);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), static_cast<size_t>(kObjects));
  EXPECT_EQ(listed->front().key, prefix + "00000");
  EXPECT_EQ(listed->back().key, prefix + "01009");
}

// `trainyard datastore ...` as a user runs it: the real binary and the daemon it starts. The keys
// reach the YAML through ${{env.VAR}}; they must never appear in an answer, the workspace's
// database files or the daemon's log.
class DatastoreCliTest : public DatastoreIntegrationTest {
 protected:
  void SetUp() override {
    DatastoreIntegrationTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    project_ = dir_ / "project";
    fs::create_directories(project_);
    ::setenv("TY_TEST_AZ_KEY", info_.azurite_key.c_str(), 1);
    ::setenv("TY_TEST_S3_SECRET", info_.s3_secret_access_key.c_str(), 1);
  }
  void TearDown() override {
    testing::StopWorkspaceDaemon(dir_ / "ws");
    ::unsetenv("TY_TEST_AZ_KEY");
    ::unsetenv("TY_TEST_S3_SECRET");
    DatastoreIntegrationTest::TearDown();
  }
  testing::CmdResult Run(const std::string& args) {
    return testing::RunTrainyard(project_.string(), (dir_ / "ws").string(), args);
  }
  void WriteYaml(const std::string& name, const std::string& text) {
    std::ofstream(project_ / name) << text;
  }
  // Every file of the workspace (database, WAL, log) read whole, to look for secrets in.
  std::string WorkspaceBytes() {
    std::string all;
    for (const auto& e : fs::recursive_directory_iterator(dir_ / "ws")) {
      if (!e.is_regular_file()) continue;
      if (auto text = ReadFile(e.path()); text.ok()) all += *text;
    }
    return all;
  }
  fs::path project_;
};

TEST_F(DatastoreCliTest, CreateListShowDeleteWithoutLeakingSecrets) {
  const std::string container = "cli" + RandomHex(6);
  CreateContainer(container);
  WriteYaml("blob.yml",
            "$schema: https://azuremlschemas.azureedge.net/latest/azureBlob.schema.json\n"
            "name: training_data\ntype: azure_blob\naccount_name: " +
                info_.azurite_account + "\ncontainer_name: " + container + "\nendpoint: " +
                info_.azurite_url + "\ncredentials:\n  account_key: ${{env.TY_TEST_AZ_KEY}}\n");
  WriteYaml("s3.yml", "name: minio\ntype: s3\nbucket: " + info_.s3_bucket +
                          "\nendpoint: " + info_.s3_url +
                          "\ncredentials:\n  access_key_id: " + info_.s3_access_key_id +
                          "\n  secret_access_key: ${{env.TY_TEST_S3_SECRET}}\n");
  testing::CmdResult r = Run("datastore create -f blob.yml");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Created datastore training_data (azure_blob, " + info_.azurite_url +
                          "/" + container + "); access checked"),
            std::string::npos)
      << r.output;
  r = Run("datastore create -f blob.yml");
  EXPECT_NE(r.output.find("exists with the same settings"), std::string::npos) << r.output;
  r = Run("datastore create -f s3.yml -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json created = nlohmann::json::parse(r.output, nullptr, false);
  EXPECT_EQ(created["outcome"], "created");
  EXPECT_EQ(created["credentials"]["secret_access_key"], "***");
  EXPECT_EQ(created["credentials"]["access_key_id"], info_.s3_access_key_id);

  r = Run("datastore list");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* want : {"workspaceblobstore", "training_data", "minio", "account key"}) {
    EXPECT_NE(r.output.find(want), std::string::npos) << want << "\n" << r.output;
  }
  r = Run("datastore show training_data -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["credentials"]["account_key"], "***");

  // A wrong key fails at create, naming the service's verdict, and nothing is stored.
  ::setenv("TY_TEST_AZ_KEY", Base64Encode("a wrong key a wrong key a wrong key").c_str(), 1);
  WriteYaml("wrong.yml", "name: wrong\ntype: azure_blob\naccount_name: " + info_.azurite_account +
                             "\ncontainer_name: " + container + "\nendpoint: " + info_.azurite_url +
                             "\ncredentials: {account_key: '${{env.TY_TEST_AZ_KEY}}'}\n");
  r = Run("datastore create -f wrong.yml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("datastore wrong was not created: azure_blob container '" + container +
                          "' of account '" + info_.azurite_account +
                          "': the service rejected the credentials (HTTP 403"),
            std::string::npos)
      << r.output;
  EXPECT_NE(Run("datastore show wrong").exit_code, 0);
  r = Run("datastore show nope");
  EXPECT_NE(r.output.find("datastore 'nope' does not exist; the workspace has: "
                          "workspaceblobstore, minio, training_data"),
            std::string::npos)
      << r.output;

  r = Run("datastore delete workspaceblobstore");
  EXPECT_NE(r.exit_code, 0);
  r = Run("datastore delete minio");
  EXPECT_EQ(r.exit_code, 0) << r.output;

  const std::string bytes = WorkspaceBytes();
  EXPECT_EQ(bytes.find(info_.azurite_key), std::string::npos)
      << "the account key is stored in plain text";
  EXPECT_EQ(bytes.find(info_.s3_secret_access_key), std::string::npos)
      << "the secret access key is stored in plain text";
}

// Jobs that read their inputs from datastores and URLs and write outputs to a datastore, on a
// `process` compute (no Docker needed): the real binary, its daemon, Azurite, the S3 server and a
// local HTTP server (Python's http.server, which answers If-Modified-Since with 304).
class DataCliTest : public DatastoreCliTest {
 protected:
  void SetUp() override {
    DatastoreCliTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    container_ = "data" + RandomHex(6);
    CreateContainer(container_);
    blob_ = std::move(OpenObjectClient(Blob(container_))).value();
    ASSERT_TRUE(blob_->Upload(Write("iris.csv", kIris), "data/iris.csv").ok());
    ASSERT_TRUE(blob_->Upload(Write("more.csv", "x\n1\n"), "data/sub/more.csv").ok());
    WriteYaml("blob.yml", "name: blob\ntype: azure_blob\naccount_name: " + info_.azurite_account +
                              "\ncontainer_name: " + container_ +
                              "\nendpoint: " + info_.azurite_url +
                              "\ncredentials: {account_key: '${{env.TY_TEST_AZ_KEY}}'}\n");
    testing::CmdResult r = Run("datastore create -f blob.yml");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = Run("compute create --name host --type process --max-nodes 2");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  void TearDown() override {
    if (!second_workspace_.empty()) testing::StopWorkspaceDaemon(second_workspace_);
    if (http_pid_ > 0) {
      ::kill(http_pid_, SIGTERM);
      (void)::waitpid(http_pid_, nullptr, 0);
    }
    DatastoreCliTest::TearDown();
  }

  // Serves dir_/www on 127.0.0.1 with Python's http.server; its log goes to dir_/http.log.
  void StartHttpServer() {
    fs::create_directories(dir_ / "www");
    http_port_ = 20000 + static_cast<int>(std::stoul(RandomHex(2), nullptr, 16) % 20000);
    http_pid_ = ::fork();
    if (http_pid_ == 0) {
      const std::string log = (dir_ / "http.log").string();
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      const std::string port = std::to_string(http_port_);
      const std::string www = (dir_ / "www").string();
      ::execlp("python3", "python3", "-m", "http.server", port.c_str(), "--bind", "127.0.0.1",
               "--directory", www.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 100; ++i) {
      HttpClient probe("http://127.0.0.1:" + std::to_string(http_port_));
      auto r = probe.Request("GET", "/", "", "", 1000);
      if (r.ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "python3 -m http.server did not start";
  }
  std::string HttpUrl(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(http_port_) + "/" + path;
  }

  // Submits `yaml` as run `name`, waits for it, and answers `job show -o json`.
  nlohmann::json RunJob(const std::string& name, const std::string& yaml) {
    WriteYaml(name + ".yml", yaml);
    testing::CmdResult r = Run("job create -f " + name + ".yml --name " + name + " --stream");
    last_output_ = r.output;
    testing::CmdResult show = Run("job show " + name + " -o json");
    nlohmann::json j = nlohmann::json::parse(show.output, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << show.output;
    return j;
  }
  std::string RunFile(const std::string& run, const std::string& rel) {
    auto text = ReadFile(dir_ / "ws" / "runs" / run / rel);
    return text.ok() ? *text : "<missing: " + text.status().message() + ">";
  }

  // Where a run's preparation (image build, inputs fetched) is told.
  static constexpr const char* kPrepLog = "logs/image_build.log";
  static constexpr const char* kIris = "sepal,petal\n5.1,1.4\n4.9,1.4\n";
  std::string container_;
  std::unique_ptr<ObjectClient> blob_;
  pid_t http_pid_ = -1;
  int http_port_ = 0;
  fs::path second_workspace_;  // a test's second workspace, whose daemon TearDown stops
  std::string last_output_;
};

TEST_F(DataCliTest, BlobInputsInEveryModeAndAnOutputUploadedToTheDatastore) {
  const std::string ds = "azureml://datastores/blob/paths/";
  nlohmann::json run = RunJob(
      "modes",
      "command: >-\n"
      "  cat ${{inputs.dl}} > outputs/dl.csv &&\n"
      "  cat ${{inputs.mounted}} > outputs/mounted.csv &&\n"
      "  echo ${{inputs.direct}} > outputs/direct.txt &&\n"
      "  (cd ${{inputs.folder}} && find . -type f | sort) > outputs/folder.txt &&\n"
      "  cat $AZURE_ML_INPUT_wasbs > outputs/wasbs.csv &&\n"
      "  mkdir -p ${{outputs.model}}/weights && echo trained > ${{outputs.model}}/weights/w.txt\n"
      "environment: {image: python:3.11-slim}\n"
      "compute: host\n"
      "inputs:\n"
      "  dl: {type: uri_file, path: " +
          ds +
          "data/iris.csv, mode: download}\n"
          "  mounted: {type: uri_file, path: " +
          ds +
          "data/iris.csv, mode: ro_mount}\n"
          "  direct: {type: uri_file, path: " +
          ds +
          "data/iris.csv, mode: direct}\n"
          "  folder: {type: uri_folder, path: " +
          ds +
          "data}\n"
          "  wasbs: {type: uri_file, path: 'wasbs://" +
          container_ + "@" + info_.azurite_account +
          ".blob.core.windows.net/data/iris.csv'}\n"
          "outputs:\n"
          "  model: {type: uri_folder, mode: upload, path: " +
          ds + "models/modes}\n");
  ASSERT_EQ(run["status"], "Completed") << run.dump(2) << "\n" << last_output_;
  EXPECT_EQ(RunFile("modes", "outputs/dl.csv"), kIris);
  EXPECT_EQ(RunFile("modes", "outputs/mounted.csv"), kIris);
  EXPECT_EQ(RunFile("modes", "outputs/direct.txt"), ds + "data/iris.csv\n");
  EXPECT_EQ(RunFile("modes", "outputs/folder.txt"), "./iris.csv\n./sub/more.csv\n");
  EXPECT_EQ(RunFile("modes", "outputs/wasbs.csv"), kIris);
  // The preparation log says what was fetched.
  const std::string prep = RunFile("modes", kPrepLog);
  EXPECT_NE(prep.find("input 'folder': 2 files from datastore blob"), std::string::npos) << prep;
  // The output is in the container now.
  auto models = blob_->List("models/modes/");
  ASSERT_TRUE(models.ok()) << models.status().ToString();
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ((*models)[0].key, "models/modes/weights/w.txt");
  auto got = blob_->Download("models/modes/weights/w.txt", dir_ / "w.txt", false);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*ReadFile(dir_ / "w.txt"), "trained\n");

  // A second run of the same inputs transfers nothing: every file comes from the cache.
  run = RunJob("again",
               "command: cat ${{inputs.folder}}/iris.csv > outputs/again.csv\n"
               "environment: {image: python:3.11-slim}\n"
               "compute: host\n"
               "inputs:\n"
               "  folder: {type: uri_folder, path: " +
                   ds + "data, mode: download}\n");
  ASSERT_EQ(run["status"], "Completed") << run.dump(2);
  EXPECT_EQ(RunFile("again", "outputs/again.csv"), kIris);
  const std::string again = RunFile("again", kPrepLog);
  EXPECT_NE(again.find("0 fetched (0 B), 2 unchanged from the cache"), std::string::npos) << again;

  // A changed blob is fetched again; the unchanged one is not.
  ASSERT_TRUE(blob_->Upload(Write("iris2.csv", "changed\n"), "data/iris.csv").ok());
  run = RunJob("changed",
               "command: cat ${{inputs.folder}}/iris.csv > outputs/changed.csv\n"
               "environment: {image: python:3.11-slim}\n"
               "compute: host\n"
               "inputs:\n"
               "  folder: {type: uri_folder, path: " +
                   ds + "data, mode: download}\n");
  ASSERT_EQ(run["status"], "Completed") << run.dump(2);
  EXPECT_EQ(RunFile("changed", "outputs/changed.csv"), "changed\n");
  EXPECT_NE(RunFile("changed", kPrepLog).find("1 fetched (8 B), 1 unchanged"), std::string::npos)
      << RunFile("changed", kPrepLog);
  // The first run's folder still holds what it read: a cache folder is never changed in place.
  EXPECT_EQ(RunFile("modes", "outputs/dl.csv"), kIris);
}

TEST_F(DataCliTest, S3InputAndMistakesThatFailFastOrInPreparing) {
  auto s3 = OpenObjectClient(S3());
  ASSERT_TRUE(s3.ok());
  const std::string key = "in-" + RandomHex(4) + "/train.csv";
  ASSERT_TRUE((*s3)->Upload(Write("train.csv", "a,b\n"), key).ok());
  // Folder markers as S3 consoles make them ("dir/", empty), and an empty object with objects
  // under it (as accounts with a hierarchical namespace list their directories): not files.
  const std::string folder = key.substr(0, key.find('/'));
  // (Our client refuses such keys; curl signs this one.)
  testing::CmdResult marker = testing::RunShell(
      "printf 'user = \"%s:%s\"\\n' '" + info_.s3_access_key_id +
      "' \"$TY_TEST_S3_SECRET\" | "
      "curl -K - -sf -o /dev/null -X PUT --data-binary '' --aws-sigv4 aws:amz:us-east-1:s3 "
      "-H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' "
      "'" +
      info_.s3_url + "/" + info_.s3_bucket + "/" + folder + "/sub/'");
  ASSERT_EQ(marker.exit_code, 0) << marker.output;
  ASSERT_TRUE((*s3)->Upload(Write("empty", ""), folder + "/dir").ok());
  ASSERT_TRUE((*s3)->Upload(Write("x.txt", "x"), folder + "/dir/x.txt").ok());
  ASSERT_TRUE((*s3)->Upload(Write("x.txt", "x"), folder + "/dir-b").ok());
  WriteYaml("s3.yml", "name: bucket\ntype: s3\nbucket: " + info_.s3_bucket +
                          "\nendpoint: " + info_.s3_url +
                          "\ncredentials: {access_key_id: " + info_.s3_access_key_id +
                          ", secret_access_key: '${{env.TY_TEST_S3_SECRET}}'}\n");
  ASSERT_EQ(Run("datastore create -f s3.yml").exit_code, 0);
  nlohmann::json run = RunJob("s3in",
                              "command: cat ${{inputs.data}} > outputs/got.csv\n"
                              "environment: {image: python:3.11-slim}\n"
                              "compute: host\n"
                              "inputs:\n"
                              "  data: {type: uri_file, path: 's3://" +
                                  info_.s3_bucket + "/" + key + "', mode: download}\n");
  ASSERT_EQ(run["status"], "Completed") << run.dump(2) << last_output_;
  EXPECT_EQ(RunFile("s3in", "outputs/got.csv"), "a,b\n");
  run = RunJob(
      "s3folder",
      "command: (cd ${{inputs.data}} && find . -type f | LC_ALL=C sort) > outputs/files.txt\n"
      "environment: {image: python:3.11-slim}\n"
      "compute: host\n"
      "inputs:\n"
      "  data: {type: uri_folder, path: 's3://" +
          info_.s3_bucket + "/" + folder + "'}\n");
  ASSERT_EQ(run["status"], "Completed") << run.dump(2) << RunFile("s3folder", kPrepLog);
  EXPECT_EQ(RunFile("s3folder", "outputs/files.txt"), "./dir-b\n./dir/x.txt\n./train.csv\n");

  // An unknown datastore fails the submit, naming those that exist.
  WriteYaml("nods.yml",
            "command: cat ${{inputs.data}}\nenvironment: {image: python:3.11-slim}\n"
            "compute: host\ninputs:\n"
            "  data: {type: uri_file, path: azureml://datastores/nope/paths/x.csv}\n");
  testing::CmdResult r = Run("job create -f nods.yml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("input 'data': datastore 'nope' does not exist; the workspace has: "
                          "workspaceblobstore, blob, bucket"),
            std::string::npos)
      << r.output;

  // A missing blob fails the run in Preparing, saying which.
  run = RunJob("missing",
               "command: cat ${{inputs.data}}\nenvironment: {image: python:3.11-slim}\n"
               "compute: host\ninputs:\n"
               "  data: {type: uri_file, path: azureml://datastores/blob/paths/"
               "data/nope.csv}\n");
  EXPECT_EQ(run["status"], "Failed") << run.dump(2);
  const std::string reason = run.value("failure_reason", run.value("reason", ""));
  EXPECT_NE(run.dump().find("input 'data': azure_blob blob 'data/nope.csv' in container '" +
                            container_ + "'"),
            std::string::npos)
      << run.dump(2);
  EXPECT_NE(run.dump().find("does not exist"), std::string::npos) << run.dump(2);
}

TEST_F(DataCliTest, HttpsInputIsCachedAndA404FailsInPreparing) {
  StartHttpServer();
  if (HasFatalFailure()) return;
  std::ofstream(dir_ / "www" / "iris.csv") << kIris;
  const std::string yaml =
      "command: cat ${{inputs.data}} > outputs/got.csv\n"
      "environment: {image: python:3.11-slim}\n"
      "compute: host\n"
      "inputs:\n"
      "  data: {type: uri_file, path: '" +
      HttpUrl("iris.csv") + "'}\n";
  nlohmann::json run = RunJob("web1", yaml);
  ASSERT_EQ(run["status"], "Completed") << run.dump(2) << last_output_;
  EXPECT_EQ(RunFile("web1", "outputs/got.csv"), kIris);
  EXPECT_NE(RunFile("web1", kPrepLog).find("fetched (28 B)"), std::string::npos)
      << RunFile("web1", kPrepLog);
  run = RunJob("web2", yaml);
  ASSERT_EQ(run["status"], "Completed") << run.dump(2);
  EXPECT_EQ(RunFile("web2", "outputs/got.csv"), kIris);
  EXPECT_NE(RunFile("web2", kPrepLog).find("unchanged (HTTP 304), from the cache"),
            std::string::npos)
      << RunFile("web2", kPrepLog);
  // The server sent the body once: its log has one 200 and one 304 for the file.
  const std::string log = *ReadFile(dir_ / "http.log");
  EXPECT_NE(log.find("\"GET /iris.csv HTTP/1.1\" 200"), std::string::npos) << log;
  EXPECT_NE(log.find("\"GET /iris.csv HTTP/1.1\" 304"), std::string::npos) << log;

  run = RunJob("web404",
               "command: cat ${{inputs.data}}\nenvironment: {image: python:3.11-slim}\n"
               "compute: host\ninputs:\n"
               "  data: {type: uri_file, path: '" +
                   HttpUrl("missing.csv?sig=SECRET") + "'}\n");
  EXPECT_EQ(run["status"], "Failed") << run.dump(2);
  EXPECT_NE(
      run.dump().find("input 'data': GET " + HttpUrl("missing.csv") + "?... answered HTTP 404"),
      std::string::npos)
      << run.dump(2);
  EXPECT_EQ(run.dump().find("SECRET"), std::string::npos) << "the URL's query is not shown";
  // It failed before starting: it never ran.
  EXPECT_EQ(run.dump().find("Running"), std::string::npos) << run.dump(2);
}

}  // namespace
// Data assets and models through the CLI, as the how-to's last steps use them: data registered
// from a local file and from a datastore path, a run that reads them by name@latest and
// name:version, a model registered from that run's outputs (twice: the azureml:// address and
// MLflow's runs:/), its lineage, a download checked against the digests, a later run that reads
// the model as an mlflow_model input, and archive.
TEST_F(DataCliTest, DataAssetsAndModelsFromARunThroughTheCli) {
  fs::create_directories(project_ / "data");
  std::ofstream(project_ / "data" / "iris.csv") << kIris;
  testing::CmdResult r = Run("data create --name iris --type uri_file --path data/iris.csv");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Created data asset iris:1 (uri_file, 1 file"), std::string::npos)
      << r.output;
  r = Run("data create --name iris --type uri_file --path data/iris.csv --label production");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("iris:2"), std::string::npos) << r.output;
  r = Run("data create --name iris --version 2 --type uri_file --path data/iris.csv");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("data asset iris:2 already exists; versions are immutable"),
            std::string::npos)
      << r.output;
  r = Run("data create --name blobdata --path azureml://datastores/blob/paths/data");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Run("data show --name iris --label production -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["version"], "2");
  r = Run("data list -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  nlohmann::json listed = nlohmann::json::parse(r.output);
  ASSERT_EQ(listed.size(), 2u) << r.output;
  EXPECT_EQ(listed[0]["name"], "blobdata");
  EXPECT_EQ(listed[1]["name"], "iris");
  EXPECT_EQ(listed[1]["version"], "2");

  nlohmann::json run =
      RunJob("useasset",
             "command: >-\n"
             "  cat ${{inputs.iris}} > outputs/iris.csv &&\n"
             "  (cd ${{inputs.blob}} && find . -type f | sort) > outputs/blob.txt &&\n"
             "  mkdir -p outputs/model && cp ${{inputs.iris}} outputs/model/data.csv &&\n"
             "  echo 'flavors: {}' > outputs/model/MLmodel\n"
             "environment: {image: python:3.11-slim}\n"
             "compute: host\n"
             "inputs:\n"
             "  iris: {type: uri_file, path: 'azureml:iris@latest'}\n"
             "  blob: {type: uri_folder, path: 'azureml:blobdata:1', mode: download}\n");
  ASSERT_EQ(run["status"], "Completed") << run.dump(2) << "\n" << last_output_;
  EXPECT_EQ(RunFile("useasset", "outputs/iris.csv"), kIris);
  EXPECT_EQ(RunFile("useasset", "outputs/blob.txt"), "./iris.csv\n./sub/more.csv\n");
  const std::string prep = RunFile("useasset", kPrepLog);
  EXPECT_NE(prep.find("input 'iris': data asset iris:2, 1 file"), std::string::npos) << prep;
  EXPECT_NE(prep.find("data asset blobdata:1 is azureml://datastores/blob/paths/data"),
            std::string::npos)
      << prep;

  r =
      Run("model create --name digits --type mlflow_model "
          "--path azureml://jobs/useasset/outputs/artifacts/paths/model/");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Created model digits:1 (mlflow_model, 2 files"), std::string::npos)
      << r.output;
  r = Run("model create --name digits --path runs:/useasset/model --tag stage=dev");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("digits:2"), std::string::npos) << r.output;
  r = Run("model show --name digits --version 1 -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json model = nlohmann::json::parse(r.output);
  EXPECT_EQ(model["lineage"]["run"], "useasset");
  EXPECT_EQ(model["lineage"]["experiment"], run["experiment"]);
  EXPECT_EQ(model["lineage"]["inputs"]["iris"]["path"], "azureml:iris:2");  // pinned at submit
  r = Run("model show --name digits");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Model digits:2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("run          useasset (Completed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tags         stage=dev"), std::string::npos) << r.output;

  r = Run("model download --name digits --version 1 --download-path dl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(*ReadFile(project_ / "dl" / "digits" / "data.csv"), kIris);
  EXPECT_EQ(*ReadFile(project_ / "dl" / "digits" / "MLmodel"), "flavors: {}\n");
  // A stored object that no longer matches its digest is caught, and nothing is left half.
  const std::string digest = Sha256Hex(kIris);
  const fs::path object = dir_ / "ws" / "cas" / "sha256" / digest.substr(0, 2) / digest.substr(2);
  ASSERT_TRUE(fs::exists(object));
  fs::permissions(object, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(object, std::ios::trunc) << "tampered,with\n1.0,2.0\n3.0,4.0\n";
  r = Run("model download --name digits --version 1 --download-path dl2");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("data.csv: the bytes received do not match the digest " + digest),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(project_ / "dl2" / "digits" / "data.csv"));
  std::ofstream(object, std::ios::trunc) << kIris;

  run = RunJob("usemodel",
               "command: cat ${{inputs.model}}/data.csv > outputs/from-model.csv\n"
               "environment: {image: python:3.11-slim}\n"
               "compute: host\n"
               "inputs:\n"
               "  model: {type: mlflow_model, path: 'azureml:digits:1'}\n");
  ASSERT_EQ(run["status"], "Completed") << run.dump(2) << "\n" << last_output_;
  EXPECT_EQ(RunFile("usemodel", "outputs/from-model.csv"), kIris);

  // A model where data is expected, and an unknown one, fail the submit naming what exists.
  WriteYaml("wrong.yml",
            "command: ls ${{inputs.x}}\nenvironment: {image: python:3.11-slim}\ncompute: host\n"
            "inputs:\n  x: {type: uri_folder, path: 'azureml:digits:1'}\n");
  r = Run("job create -f wrong.yml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("data asset 'digits' does not exist; the workspace's data assets: "
                          "blobdata, iris"),
            std::string::npos)
      << r.output;

  r = Run("model archive --name digits --version 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = Run("model show --name digits -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["version"], "1");

  // Outputs with a name are registered when the run completes: a model copied from the run, a
  // data asset where the output was written.
  const std::string outputs_yaml =
      "command: >-\n"
      "  echo weights > ${{outputs.m}}/w.txt && echo rows > ${{outputs.d}}/rows.txt\n"
      "environment: {image: python:3.11-slim}\n"
      "compute: host\n"
      "outputs:\n"
      "  m: {type: custom_model, name: out-model}\n"
      "  d: {type: uri_folder, name: out-data, version: '7', mode: upload,\n"
      "      path: 'azureml://datastores/blob/paths/registered/d'}\n";
  run = RunJob("named", outputs_yaml);
  ASSERT_EQ(run["status"], "Completed") << run.dump(2) << "\n" << last_output_;
  r = Run("model show --name out-model -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json out_model = nlohmann::json::parse(r.output);
  EXPECT_EQ(out_model["version"], "1");
  EXPECT_EQ(out_model["lineage"]["run"], "named");
  EXPECT_EQ(out_model["storage"]["files"], 1);
  r = Run("data show --name out-data --version 7 -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["storage"]["uri"],
            "azureml://datastores/blob/paths/registered/d");
  EXPECT_NE(last_output_.find("output 'm': registered as model out-model:1"), std::string::npos)
      << last_output_;
  // The version is taken now: a second run asking for it is refused at submit.
  WriteYaml("named2.yml", outputs_yaml);
  r = Run("job create -f named2.yml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("output 'd': data asset out-data:7 already exists"), std::string::npos)
      << r.output;
}

// A registry shared by two workspaces: the first publishes an environment, a model registered
// from one of its runs and a data asset from a local folder; the second attaches the same
// folder and runs a job that names all three by their azureml://registries/ addresses.
TEST_F(DataCliTest, ARegistrySharedByTwoWorkspaces) {
  const fs::path registry = dir_ / "registry";
  testing::CmdResult r = Run("registry create --name shared --path " + registry.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Created registry shared"), std::string::npos) << r.output;
  WriteYaml("team-env.yml", "name: team-py\nimage: python:3.11-slim\n");
  r = Run("env create -f team-env.yml --registry shared");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("azureml://registries/shared/environments/team-py/versions/1"),
            std::string::npos)
      << r.output;
  nlohmann::json run = RunJob("publisher",
                              "command: mkdir -p outputs/model && echo w1 > outputs/model/w.txt\n"
                              "environment: {image: python:3.11-slim}\n"
                              "compute: host\n");
  ASSERT_EQ(run["status"], "Completed") << run.dump(2) << "\n" << last_output_;
  r = Run("model create --registry shared --name team-model --path runs:/publisher/model");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  fs::create_directories(project_ / "team-data");
  std::ofstream(project_ / "team-data" / "rows.csv") << kIris;
  r = Run("data create --registry shared --name team-data --path team-data");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Published to the registry, not to the workspace.
  r = Run("model list -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).size(), 0u) << r.output;
  r = Run("model show --registry shared --name team-model -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["id"],
            "azureml://registries/shared/models/team-model/versions/1");

  // The second workspace.
  const fs::path project2 = dir_ / "project2";
  fs::create_directories(project2);
  auto run2 = [&](const std::string& args) {
    return testing::RunTrainyard(project2.string(), (dir_ / "ws2").string(), args);
  };
  second_workspace_ = dir_ / "ws2";
  r = run2("registry create --name shared --path " + registry.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Attached registry shared"), std::string::npos) << r.output;
  r = run2("registry create --name other --path " + registry.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("holds registry 'shared', not 'other'"), std::string::npos) << r.output;
  r = run2("registry show shared -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json shown = nlohmann::json::parse(r.output);
  EXPECT_EQ(shown["environments"], 1);
  EXPECT_EQ(shown["models"], 1);
  EXPECT_EQ(shown["data"], 1);
  r = run2("compute create --name host --type process --max-nodes 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ofstream(project2 / "job.yml")
      << "command: >-\n"
         "  cat ${{inputs.model}}/w.txt > outputs/model.txt &&\n"
         "  cat ${{inputs.data}}/rows.csv > outputs/rows.csv\n"
         "environment: azureml://registries/shared/environments/team-py/labels/latest\n"
         "compute: host\n"
         "inputs:\n"
         "  model: {type: custom_model, path: "
         "'azureml://registries/shared/models/team-model/versions/1'}\n"
         "  data: {type: uri_folder, path: "
         "'azureml://registries/shared/data/team-data/labels/latest'}\n";
  r = run2("job create -f job.yml --name consumer --stream");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto read2 = [&](const std::string& rel) {
    auto text = ReadFile(dir_ / "ws2" / "runs" / "consumer" / rel);
    return text.ok() ? *text : "<missing>";
  };
  EXPECT_EQ(read2("outputs/model.txt"), "w1\n");
  EXPECT_EQ(read2("outputs/rows.csv"), kIris);
  r = run2("job show consumer -o json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json consumer = nlohmann::json::parse(r.output);
  EXPECT_EQ(consumer["status"], "Completed") << r.output;
  // Kept under a name of the workspace's own: not a version of a workspace environment team-py.
  EXPECT_EQ(consumer["environment_name"], "shared.team-py") << r.output;
  // A registry model downloads in the second workspace from the registry's content.
  r = run2("model download --registry shared --name team-model --download-path dl");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(*ReadFile(project2 / "dl" / "team-model" / "w.txt"), "w1\n");
  // Unknown registries and assets are named with what exists.
  std::ofstream(project2 / "bad.yml")
      << "command: echo\nenvironment: azureml://registries/nope/environments/x/labels/latest\n"
         "compute: host\n";
  r = run2("job create -f bad.yml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("registry 'nope' does not exist in this workspace; its registries: "
                          "shared"),
            std::string::npos)
      << r.output;
  std::ofstream(project2 / "bad2.yml")
      << "command: echo\nenvironment: azureml://registries/shared/environments/team-r/labels/"
         "latest\ncompute: host\n";
  r = run2("job create -f bad2.yml");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("environment team-r is not in registry shared"), std::string::npos)
      << r.output;
}

}  // namespace trainyard

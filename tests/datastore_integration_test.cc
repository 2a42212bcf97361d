// The datastore clients against real object stores: Azurite for azure_blob and the S3 test
// server (s3rver behind a Signature V4 check) for s3, both started by scripts/storage.sh, whose
// storage.env gives their addresses and keys.

#include <gtest/gtest.h>

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
  void TearDown() override { fs::remove_all(dir_); }

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

}  // namespace
}  // namespace trainyard

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "trainyard/assets/catalog.h"
#include "trainyard/assets/datastores.h"
#include "trainyard/assets/object_client.h"
#include "trainyard/assets/registries.h"
#include "trainyard/assets/run_data.h"
#include "trainyard/assets/signing.h"
#include "trainyard/assets/xml.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/datastore.h"

namespace trainyard::assets {
namespace {

namespace fs = std::filesystem;

// AWS's published example of a signed GET Object request (the S3 API reference, "Signature
// Calculations for the Authorization Header: Transferring Payload in a Single Chunk").
TEST(SigV4Test, MatchesAwsGetObjectExample) {
  SigV4Request req;
  req.method = "GET";
  req.canonical_uri = "/test.txt";
  req.headers = {
      {"Host", "examplebucket.s3.amazonaws.com"},
      {"Range", "bytes=0-9"},
      {"x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"x-amz-date", "20130524T000000Z"}};
  req.payload_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  const std::string auth =
      SigV4Authorization(req, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                         "us-east-1", "s3", "20130524T000000Z");
  EXPECT_EQ(auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

// The same document's GET Bucket (List Objects) example: query parameters are signed sorted
// and encoded.
TEST(SigV4Test, MatchesAwsListObjectsExample) {
  SigV4Request req;
  req.method = "GET";
  req.canonical_uri = "/";
  req.query = {{"prefix", "J"}, {"max-keys", "2"}};
  req.headers = {
      {"host", "examplebucket.s3.amazonaws.com"},
      {"x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"x-amz-date", "20130524T000000Z"}};
  req.payload_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  const std::string auth =
      SigV4Authorization(req, "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                         "us-east-1", "s3", "20130524T000000Z");
  EXPECT_NE(auth.find("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
            std::string::npos)
      << auth;
}

TEST(SigningTest, UriEncodeKeepsOnlyUnreserved) {
  EXPECT_EQ(UriEncode("a b/c~d+é", false), "a%20b%2Fc~d%2B%C3%A9");
  EXPECT_EQ(UriEncode("a b/c", true), "a%20b/c");
}

TEST(SigningTest, Dates) {
  EXPECT_EQ(AmzDate(1369353600), "20130524T000000Z");
  EXPECT_EQ(HttpDate(1369353600), "Fri, 24 May 2013 00:00:00 GMT");
}

TEST(SharedKeyTest, KeyThatIsNotBase64IsRefusedWithoutQuotingIt) {
  SharedKeyRequest req{"GET", "acct", "/c", {}, {}};
  auto auth = SharedKeyAuthorization(req, "not base64 !!secret!!");
  ASSERT_FALSE(auth.ok());
  EXPECT_EQ(auth.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(auth.status().message().find("secret"), std::string::npos);
}

TEST(SharedKeyTest, SignatureDependsOnEverySignedPart) {
  const std::string key = Base64Encode("0123456789abcdef0123456789abcdef");
  SharedKeyRequest base{
      "GET",
      "acct",
      "/c/blob",
      {{"comp", "list"}},
      {{"x-ms-date", "Fri, 24 May 2013 00:00:00 GMT"}, {"x-ms-version", "2021-08-06"}}};
  auto a = SharedKeyAuthorization(base, key);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(StartsWith(*a, "SharedKey acct:"));
  // Header names are case-insensitive and spaces fold; the signature does not change.
  SharedKeyRequest same = base;
  same.headers = {{"X-MS-Version", " 2021-08-06 "},
                  {"x-ms-date", "Fri, 24 May 2013  00:00:00 GMT"}};
  EXPECT_EQ(*SharedKeyAuthorization(same, key), *a);
  for (int i = 0; i < 4; ++i) {
    SharedKeyRequest other = base;
    if (i == 0) other.method = "PUT";
    if (i == 1) other.path = "/c/blob2";
    if (i == 2) other.query = {{"comp", "block"}};
    if (i == 3) other.headers.emplace_back("Range", "bytes=0-1");
    EXPECT_NE(*SharedKeyAuthorization(other, key), *a) << i;
  }
}

TEST(XmlTest, ReadsAnAzureListing) {
  const std::string text = R"(<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://x/" ContainerName="c"><Prefix>d/</Prefix>
<Blobs><Blob><Name>d/a &amp; b.csv</Name><Properties><Content-Length>12</Content-Length>
<Etag>0x8D</Etag></Properties></Blob><Blob><Name>d/c</Name><Properties>
<Content-Length>0</Content-Length><Etag>"0x9"</Etag></Properties></Blob></Blobs>
<NextMarker>m2</NextMarker></EnumerationResults>)";
  auto xml = ParseXmlRecords(text, "Blob");
  ASSERT_TRUE(xml.ok()) << xml.status().ToString();
  ASSERT_EQ(xml->records.size(), 2u);
  EXPECT_EQ(xml->records[0]["Name"], "d/a & b.csv");
  EXPECT_EQ(xml->records[0]["Content-Length"], "12");
  EXPECT_EQ(xml->records[1]["Etag"], "\"0x9\"");
  EXPECT_EQ(xml->fields["NextMarker"], "m2");
  EXPECT_EQ(xml->fields["Prefix"], "d/");
}

TEST(XmlTest, DocumentTypesAreRefused) {
  const std::string text = R"(<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Error><Code>&x;</Code></Error>)";
  auto xml = ParseXmlRecords(text, "none");
  ASSERT_FALSE(xml.ok());
  EXPECT_NE(xml.status().message().find("DOCTYPE"), std::string::npos);
}

TEST(XmlTest, MalformedIsInvalidArgument) {
  auto xml = ParseXmlRecords("<a><b></a>", "b");
  ASSERT_FALSE(xml.ok());
  EXPECT_EQ(xml.status().code(), StatusCode::kInvalidArgument);
}

TEST(ObjectKeyTest, OnlyCleanRelativeKeys) {
  EXPECT_TRUE(CheckObjectKey("a/b.csv").ok());
  for (const char* bad : {"", "/a", "a//b", "a/../b", "./a", "a/\x01"}) {
    EXPECT_FALSE(CheckObjectKey(bad).ok()) << bad;
  }
}

class LocalClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("local-ds-" + RandomHex(4));
    fs::create_directories(root_ / "store" / "d");
    std::ofstream(root_ / "store" / "d" / "a.csv") << "x,y\n1,2\n";
    std::ofstream(root_ / "store" / "top.txt") << "top";
    def_ = spec::WorkspaceBlobStore((root_ / "store").string());
  }
  void TearDown() override { fs::remove_all(root_); }
  fs::path root_;
  spec::DatastoreDefinition def_;
};

TEST_F(LocalClientTest, ListsDownloadsAndUploads) {
  auto client = OpenObjectClient(def_);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Check().ok());
  auto all = (*client)->List("");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].key, "d/a.csv");
  EXPECT_EQ((*all)[0].size, 8u);
  auto under = (*client)->List("d/");
  ASSERT_TRUE(under.ok());
  ASSERT_EQ(under->size(), 1u);

  auto got = (*client)->Download("d/a.csv", root_ / "out" / "a.csv", true);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*ReadFile(root_ / "out" / "a.csv"), "x,y\n1,2\n");
  EXPECT_EQ(got->etag, (*all)[0].etag);

  std::ofstream(root_ / "up.bin") << "payload";
  ASSERT_TRUE((*client)->Upload(root_ / "up.bin", "new/deep/up.bin").ok());
  EXPECT_EQ(*ReadFile(root_ / "store" / "new" / "deep" / "up.bin"), "payload");

  auto missing = (*client)->Stat("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST_F(LocalClientTest, NeverFollowsALinkOutOfTheFolder) {
  fs::create_directories(root_ / "outside");
  std::ofstream(root_ / "outside" / "secret") << "s";
  fs::create_directory_symlink(root_ / "outside", root_ / "store" / "link");
  auto client = OpenObjectClient(def_);
  ASSERT_TRUE(client.ok());
  EXPECT_FALSE((*client)->Download("link/secret", root_ / "got", false).ok());
  std::ofstream(root_ / "up.bin") << "payload";
  EXPECT_FALSE((*client)->Upload(root_ / "up.bin", "link/planted").ok());
  EXPECT_FALSE(fs::exists(root_ / "outside" / "planted"));
  auto all = (*client)->List("");
  ASSERT_TRUE(all.ok());
  for (const auto& o : *all) EXPECT_FALSE(StartsWith(o.key, "link/")) << o.key;
}

TEST(DatastoreSpecTest, ParsesTheCloudServiceBlobFile) {
  const std::string yaml =
      R"($schema: https://azuremlschemas.azureedge.net/latest/azureBlob.schema.json
name: blob_example
type: azure_blob
description: Datastore pointing to a blob container.
account_name: mytestblobstore
container_name: data-container
credentials:
  account_key: ${{env.TEST_KEY}}
)";
  spec::ParseOptions options;
  options.getenv = [](const std::string& n) -> std::optional<std::string> {
    if (n == "TEST_KEY") return "c2VjcmV0";
    return std::nullopt;
  };
  auto def = spec::ParseDatastoreYaml(yaml, "ds.yml", "/tmp", options);
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->type, "azure_blob");
  EXPECT_EQ(def->account_key, "c2VjcmV0");
  EXPECT_EQ(def->BlobServiceUrl(), "https://mytestblobstore.blob.core.windows.net");
  const nlohmann::json redacted = def->ToJson(spec::SecretMode::kRedact);
  EXPECT_EQ(redacted["credentials"]["account_key"], "***");
  auto back = spec::DatastoreDefinition::FromJson(def->ToJson(spec::SecretMode::kPlain));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->SameSettings(*def));
}

TEST(DatastoreSpecTest, ParsesS3AndLocal) {
  auto s3 = spec::ParseDatastoreYaml(
      "name: minio\ntype: s3\nbucket: data.v1\nendpoint: http://127.0.0.1:9000/\n"
      "credentials: {access_key_id: AK, secret_access_key: SK}\n",
      "s3.yml", "/tmp");
  ASSERT_TRUE(s3.ok()) << s3.status().ToString();
  EXPECT_EQ(s3->endpoint, "http://127.0.0.1:9000");
  EXPECT_EQ(s3->ToJson(spec::SecretMode::kRedact)["credentials"]["access_key_id"], "AK");
  auto local = spec::ParseDatastoreYaml("name: shared\ntype: local\npath: data\n", "l.yml", "/srv");
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  EXPECT_EQ(local->path, "/srv/data");
}

TEST(DatastoreSpecTest, BadFilesSayWhatAndWhere) {
  struct Case {
    const char* yaml;
    const char* want;
  } cases[] = {
      {"name: x\ntype: azure_file\n", "ds.yml:2:7: datastore type 'azure_file' is not supported"},
      {"name: x\ntype: gcs\n", "ds.yml:2:7: 'type' must be local, azure_blob or s3"},
      {"name: x\ntype: azure_blob\naccount_name: Bad_Name\ncontainer_name: c1c\n",
       "ds.yml:3:15: datastore x: account_name must be 3-24 lower-case letters and digits"},
      {"name: x\ntype: azure_blob\naccount_name: acct\ncontainer_name: c1c\n"
       "credentials: {account_key: a, sas_token: b}\n",
       "ds.yml:5:14: give either credentials.account_key or credentials.sas_token"},
      {"name: x\ntype: s3\nbucket: b1b\naccount_name: a\n",
       "ds.yml:4:1: 'account_name' is not a setting of a s3 datastore"},
      {"name: x\ntype: s3\nbucket: b1b\ncredentials: {access_key_id: a}\n",
       "ds.yml:4:14: an s3 datastore's credentials need both"},
      {"name: x\ntype: local\n", "missing required key 'path' in local datastore 'x'"},
      {"name: x\ntype: local\npath: /d\ncredentials: {account_key: k}\n",
       "ds.yml:4:1: a local datastore has no credentials"},
      {"name: x\ntype: azure_blob\naccount_name: acct\ncontainer_name: c1c\nendpoint: not a url\n",
       "endpoint must be a storage suffix like core.windows.net or an http:// or https:// URL"},
  };
  for (const Case& c : cases) {
    auto def = spec::ParseDatastoreYaml(c.yaml, "ds.yml", "/tmp");
    ASSERT_FALSE(def.ok()) << c.yaml;
    EXPECT_NE(def.status().message().find(c.want), std::string::npos)
        << def.status().message() << "\nwanted: " << c.want;
  }
}

class DatastoresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("datastores-" + RandomHex(4));
    fs::create_directories(root_ / "shared");
    auto st = store::OpenSqliteStore(":memory:");
    ASSERT_TRUE(st.ok());
    store_ = std::move(*st);
    datastores_ = std::make_unique<Datastores>(*store_, box_, root_ / "ws" / "blob");
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path root_;
  SecretBox box_ = SecretBox::ForTesting("0123456789abcdef0123456789abcdef");
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Datastores> datastores_;
};

TEST_F(DatastoresTest, WorkspaceBlobStoreAlwaysExistsAndIsProtected) {
  auto all = datastores_->List();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].name, "workspaceblobstore");
  EXPECT_EQ((*all)[0].type, "local");
  auto client = datastores_->Open("workspaceblobstore");
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_TRUE((*client)->Check().ok());
  EXPECT_EQ(datastores_->Delete("workspaceblobstore").code(), StatusCode::kInvalidArgument);
  std::string outcome;
  auto replaced = datastores_->Put(spec::WorkspaceBlobStore((root_ / "shared").string()), &outcome);
  EXPECT_EQ(replaced.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(DatastoresTest, CreateUpdateAndUnknownNames) {
  spec::DatastoreDefinition def;
  def.name = "shared";
  def.type = "local";
  def.path = (root_ / "shared").string();
  std::string outcome;
  ASSERT_TRUE(datastores_->Put(def, &outcome).ok());
  EXPECT_EQ(outcome, "created");
  ASSERT_TRUE(datastores_->Put(def, &outcome).ok());
  EXPECT_EQ(outcome, "unchanged");
  def.description = "team data";
  ASSERT_TRUE(datastores_->Put(def, &outcome).ok());
  EXPECT_EQ(outcome, "updated");

  def.name = "missing";
  def.path = (root_ / "nope").string();
  auto bad = datastores_->Put(def, &outcome);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kNotFound);
  EXPECT_NE(bad.status().message().find("datastore missing was not created"), std::string::npos);

  auto unknown = datastores_->Get("nope");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("the workspace has: workspaceblobstore, shared"),
            std::string::npos)
      << unknown.status().message();
  ASSERT_TRUE(datastores_->Delete("shared").ok());
  EXPECT_EQ(datastores_->Delete("shared").code(), StatusCode::kNotFound);
}

TEST_F(DatastoresTest, SecretsAreSealedInTheStore) {
  // A key the check refuses never gets stored, so store the record the way Put would after a
  // successful check, then read it back through the service.
  spec::DatastoreDefinition def;
  def.name = "blob";
  def.type = "azure_blob";
  def.account_name = "acct";
  def.container_name = "data";
  def.endpoint = "http://127.0.0.1:9";  // nothing listens: Put's check fails
  def.account_key = Base64Encode("a very secret account key");
  std::string outcome;
  auto refused = datastores_->Put(def, &outcome);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(refused.status().message().find(def.account_key), std::string::npos);
  EXPECT_EQ(store_->ListDatastores()->size(), 0u);

  spec::DatastoreDefinition sealed = def;
  sealed.account_key = box_.Seal(def.account_key);
  ASSERT_TRUE(store_
                  ->PutDatastore(
                      {"blob", "azure_blob", sealed.ToJson(spec::SecretMode::kAsIs).dump(), 1, 1})
                  .ok());
  auto rec = store_->GetDatastore("blob");
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->definition_json.find(def.account_key), std::string::npos);
  auto got = datastores_->Get("blob");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(SecretBox::IsSealed(got->account_key));
  EXPECT_EQ(got->ToJson(spec::SecretMode::kRedact)["credentials"]["account_key"], "***");
  EXPECT_TRUE(datastores_->Open("blob").ok());
}

class RunDataTest : public DatastoresTest {
 protected:
  void SetUp() override {
    DatastoresTest::SetUp();
    objects_ = std::make_unique<cas::ObjectStore>(root_ / "cas");
    snapshots_ = std::make_unique<cas::Snapshotter>(*objects_, root_ / "snapshots");
    run_data_ = std::make_unique<RunData>(*datastores_, *objects_, *snapshots_, root_ / "datacache",
                                          root_ / "runs");
    fs::create_directories(root_ / "shared" / "imgs" / "sub");
    std::ofstream(root_ / "shared" / "imgs" / "a.png") << "A";
    std::ofstream(root_ / "shared" / "imgs" / "sub" / "b.png") << "BB";
    spec::DatastoreDefinition def;
    def.name = "shared";
    def.type = "local";
    def.path = (root_ / "shared").string();
    std::string outcome;
    ASSERT_TRUE(datastores_->Put(def, &outcome).ok());
  }
  static spec::InputSpec Input(const std::string& path, const std::string& mode,
                               spec::InputSpec::Kind kind = spec::InputSpec::Kind::kUriFolder) {
    spec::InputSpec in;
    in.kind = kind;
    in.path = path;
    in.mode = mode;
    return in;
  }
  std::unique_ptr<cas::ObjectStore> objects_;
  std::unique_ptr<cas::Snapshotter> snapshots_;
  std::unique_ptr<RunData> run_data_;
  std::string log_;
  RunData::Log Log() {
    return [this](std::string_view t) { log_ += t; };
  }
};

TEST_F(RunDataTest, LocalDatastoreMountedAsIsOrDownloadedIntoTheCache) {
  spec::RunRequest req;
  req.inputs["mounted"] = Input("azureml://datastores/shared/paths/imgs", "ro_mount");
  req.inputs["copied"] = Input("azureml://datastores/shared/paths/imgs/", "download");
  req.inputs["one"] = Input("azureml://datastores/shared/paths/imgs/sub/b.png", "download",
                            spec::InputSpec::Kind::kUriFile);
  req.inputs["direct"] = Input("azureml://datastores/shared/paths/imgs", "direct");
  ASSERT_TRUE(run_data_->Check(req).ok());
  auto got = run_data_->ResolveInputs(req, Log());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->at("mounted").path, (root_ / "shared" / "imgs").string());
  const fs::path copied = got->at("copied").path;
  EXPECT_TRUE(StartsWith(copied.string(), (root_ / "datacache" / "folders").string()));
  EXPECT_EQ(*ReadFile(copied / "sub" / "b.png"), "BB");
  EXPECT_EQ(*ReadFile(got->at("one").path), "BB");
  EXPECT_EQ(fs::path(got->at("one").path).filename(), "b.png");
  EXPECT_EQ(got->at("direct").kind, spec::InputSpec::Kind::kLiteral);
  EXPECT_EQ(got->at("direct").value, "azureml://datastores/shared/paths/imgs");
  // Files in the cache are read-only.
  struct stat st {};
  ASSERT_EQ(::stat((copied / "a.png").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0222, 0u);
  // The same input again is the same folder, with nothing fetched.
  log_.clear();
  auto again = run_data_->ResolveInputs(req, Log());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->at("copied").path, copied.string());
  EXPECT_NE(log_.find("input 'copied': 2 files from datastore shared"), std::string::npos) << log_;
  EXPECT_NE(log_.find("0 fetched (0 B), 2 unchanged"), std::string::npos) << log_;
}

TEST_F(RunDataTest, MistakesAreNamed) {
  spec::RunRequest req;
  req.inputs["data"] = Input("azureml://datastores/nope/paths/x", "download");
  Status st = run_data_->Check(req);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("input 'data': datastore 'nope' does not exist"), std::string::npos);
  req.inputs["data"] = Input("azureml://jobs/ghost/outputs/artifacts/paths/model", "download");
  EXPECT_NE(run_data_->Check(req).message().find("run 'ghost' does not exist"), std::string::npos);
  req.inputs["data"] = Input("azureml://datastores/shared/paths/empty", "download");
  auto got = run_data_->ResolveInputs(req, Log());
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("has no objects under 'empty'"), std::string::npos)
      << got.status().message();
  req.inputs["data"] = Input("azureml://datastores/shared/paths/missing", "ro_mount");
  got = run_data_->ResolveInputs(req, Log());
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("cannot be mounted from datastore shared"),
            std::string::npos)
      << got.status().message();
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
  // A link below the datastore's folder is never mounted, whatever it points at.
  fs::create_directory_symlink("/etc", root_ / "shared" / "etc-link");
  req.inputs["data"] = Input("azureml://datastores/shared/paths/etc-link", "ro_mount");
  got = run_data_->ResolveInputs(req, Log());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument) << got.status().ToString();

  spec::RunRequest out;
  out.outputs["model"].path = "azureml://datastores/nope/paths/m";
  EXPECT_NE(run_data_->Check(out).message().find("output 'model': datastore 'nope'"),
            std::string::npos);
}

TEST_F(RunDataTest, RunOutputsAreAnInputAndOutputsGoToTheDatastore) {
  const fs::path run_dir = root_ / "runs" / "r1";
  fs::create_directories(run_dir / "outputs" / "model" / "w");
  std::ofstream(run_dir / "outputs" / "model" / "w" / "weights.bin") << "W";
  fs::create_directories(root_ / "elsewhere");
  std::ofstream(root_ / "elsewhere" / "secret") << "S";
  // A link the run planted is not followed.
  fs::create_symlink(root_ / "elsewhere" / "secret", run_dir / "outputs" / "model" / "leak");
  spec::RunRequest req;
  req.outputs["model"].path = "azureml://datastores/shared/paths/models/r1";
  ASSERT_TRUE(run_data_->Check(req).ok());
  ASSERT_TRUE(run_data_->DeliverOutputs(req, run_dir, Log()).ok());
  EXPECT_EQ(*ReadFile(root_ / "shared" / "models" / "r1" / "w" / "weights.bin"), "W");
  EXPECT_FALSE(fs::exists(root_ / "shared" / "models" / "r1" / "leak"));
  EXPECT_NE(log_.find("output 'model': 1 file (1 B) written to"), std::string::npos) << log_;

  spec::RunRequest next;
  next.inputs["model"] = Input("azureml://jobs/r1/outputs/artifacts/paths/model", "ro_mount");
  ASSERT_TRUE(run_data_->Check(next).ok());
  auto got = run_data_->ResolveInputs(next, Log());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*ReadFile(fs::path(got->at("model").path) / "w" / "weights.bin"), "W");
  EXPECT_FALSE(fs::exists(fs::path(got->at("model").path) / "leak"));
}

class CatalogTest : public RunDataTest {
 protected:
  void SetUp() override {
    RunDataTest::SetUp();
    catalog_ = std::make_unique<Catalog>(*store_, *objects_, *snapshots_, *datastores_, *run_data_,
                                         root_ / "statcache");
    run_data_->UseCatalog(catalog_.get());
    fs::create_directories(root_ / "local" / "cifar");
    std::ofstream(root_ / "local" / "cifar" / "train.bin") << "TRAIN";
    std::ofstream(root_ / "local" / "cifar" / "test.bin") << "TEST";
    std::ofstream(root_ / "local" / "iris.csv") << "a,b\n1,2\n";
  }
  StatusOr<nlohmann::json> Create(const std::string& kind, const std::string& name,
                                  const std::string& path, const std::string& type = "",
                                  const std::string& version = "") {
    AssetRequest r;
    r.kind = kind;
    r.name = name;
    r.path = path;
    r.type = type;
    r.version = version;
    return catalog_->Create(r);
  }
  std::unique_ptr<Catalog> catalog_;
};

TEST_F(CatalogTest, VersionsAreImmutableAndNumberedAndLocalDataIsStoredOnce) {
  auto v1 = Create("data", "cifar", (root_ / "local" / "cifar").string());
  ASSERT_TRUE(v1.ok()) << v1.status().ToString();
  EXPECT_EQ((*v1)["version"], "1");
  EXPECT_EQ((*v1)["type"], "uri_folder");
  EXPECT_EQ((*v1)["id"], "azureml:cifar:1");
  EXPECT_EQ((*v1)["storage"]["files"], 2);
  // The same content again is the next version, stored once (same snapshot).
  auto v2 = Create("data", "cifar", (root_ / "local" / "cifar").string());
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ((*v2)["version"], "2");
  EXPECT_EQ((*v2)["storage"]["snapshot_id"], (*v1)["storage"]["snapshot_id"]);
  // A version given explicitly; taking it again is refused before anything is read.
  ASSERT_TRUE(Create("data", "cifar", (root_ / "local" / "cifar").string(), "", "10").ok());
  auto again = Create("data", "cifar", "/does/not/exist", "", "10");
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(again.status().message().find("versions are immutable"), std::string::npos);
  auto next = Create("data", "cifar", (root_ / "local" / "cifar").string());
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next)["version"], "11");
  // Changing the folder does not change a stored version.
  std::ofstream(root_ / "local" / "cifar" / "train.bin") << "CHANGED";
  auto v1_again = catalog_->Get("data", "cifar", "1");
  ASSERT_TRUE(v1_again.ok());
  EXPECT_EQ((*v1_again)["storage"], (*v1)["storage"]);
}

TEST_F(CatalogTest, LatestSkipsArchivedAndLabelsNameAVersion) {
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Create("data", "iris", (root_ / "local" / "iris.csv").string(), "uri_file").ok());
  }
  EXPECT_EQ((*catalog_->Get("data", "iris", ""))["version"], "3");
  ASSERT_TRUE(catalog_->SetArchived("data", "iris", "3", true).ok());
  EXPECT_EQ((*catalog_->Get("data", "iris", "", "latest"))["version"], "2");
  auto listed = catalog_->List("data", "iris", false);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0]["version"], "2");  // newest first
  EXPECT_EQ(catalog_->List("data", "iris", true)->size(), 3u);
  // An archived version is still usable by name:version.
  EXPECT_TRUE(catalog_->Get("data", "iris", "3").ok());
  ASSERT_TRUE(catalog_->SetLabel("data", "iris", "1", "production").ok());
  EXPECT_EQ((*catalog_->Get("data", "iris", "", "production"))["version"], "1");
  ASSERT_TRUE(catalog_->SetLabel("data", "iris", "2", "production").ok());  // moves
  EXPECT_EQ((*catalog_->Get("data", "iris", "", "production"))["version"], "2");
  EXPECT_EQ(catalog_->SetLabel("data", "iris", "2", "latest").status().code(),
            StatusCode::kInvalidArgument);
  auto missing = catalog_->Get("data", "iris", "", "staging");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("its labels: production (2)"), std::string::npos)
      << missing.status().message();
  auto unknown = catalog_->Get("data", "irs", "");
  EXPECT_NE(unknown.status().message().find("the workspace's data assets: iris"), std::string::npos)
      << unknown.status().message();
  auto bad_version = catalog_->Get("data", "iris", "9");
  EXPECT_NE(bad_version.status().message().find("its versions: 1, 2, 3 (archived)"),
            std::string::npos)
      << bad_version.status().message();
}

TEST_F(CatalogTest, BadRequestsSayWhatIsWrong) {
  struct Case {
    std::string kind, name, path, type, want;
  } cases[] = {
      {"data", "bad name", (root_ / "local" / "iris.csv").string(), "", "invalid data asset name"},
      {"data", "d", (root_ / "local" / "iris.csv").string(), "custom_model",
       "uri_file or uri_folder"},
      {"model", "m", (root_ / "local" / "iris.csv").string(), "uri_file",
       "custom_model or mlflow_model"},
      {"data", "d", (root_ / "local" / "cifar").string(), "uri_file", "is a folder"},
      {"data", "d", (root_ / "local" / "iris.csv").string(), "uri_folder", "is a file"},
      {"data", "d", "/no/such/path", "", "does not exist on the daemon's machine"},
      {"data", "d", "relative/path", "", "is not an absolute path"},
      {"data", "d", "azureml://datastores/nope/paths/x", "", "datastore 'nope' does not exist"},
      {"data", "d", "azureml:other:1", "", "is already an asset"},
      {"model", "m", "runs:/ghost/model", "", "ghost"},
      {"model", "m", (root_ / "local" / "cifar").string(), "mlflow_model", "MLmodel"},
      {"data", "d", "https://example.org/x.csv?sig=abc", "uri_file", "with a query"},
  };
  for (const Case& c : cases) {
    auto got = Create(c.kind, c.name, c.path, c.type);
    ASSERT_FALSE(got.ok()) << c.name << " " << c.path;
    EXPECT_NE(got.status().message().find(c.want), std::string::npos)
        << got.status().message() << "\nwanted: " << c.want;
  }
  AssetRequest both;
  both.kind = "data";
  both.name = "d";
  both.path = "/x";
  both.snapshot_id = std::string(64, 'a');
  EXPECT_EQ(catalog_->Create(both).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(CatalogTest, AModelFromARunIsCopiedWithItsLineageAndReadByALaterRun) {
  const fs::path run_dir = root_ / "runs" / "train_1";
  fs::create_directories(run_dir / "outputs" / "model");
  std::ofstream(run_dir / "outputs" / "model" / "weights.bin") << "W1";
  std::ofstream(run_dir / "outputs" / "model" / "MLmodel") << "flavors: {}";
  store::RunRecord run;
  run.id = "train_1";
  run.experiment = "digits";
  run.snapshot_id = std::string(64, 'c');
  run.environment_name = "sklearn";
  run.environment_version = "2";
  run.request_json = R"({"inputs": {"data": {"kind": "uri_folder", "path": "azureml:cifar:1"}}})";
  run.transitions.push_back({store::RunStatus::kQueued, 1});
  ASSERT_TRUE(store_->EnsureExperiment("digits").ok());
  ASSERT_TRUE(store_->InsertRun(run).ok());

  auto m = Create("model", "digits", "runs:/train_1/model", "mlflow_model");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ((*m)["version"], "1");
  EXPECT_EQ((*m)["lineage"]["run"], "train_1");
  EXPECT_EQ((*m)["lineage"]["environment"], "sklearn:2");
  EXPECT_EQ((*m)["lineage"]["code_snapshot"], std::string(64, 'c'));
  EXPECT_EQ((*m)["lineage"]["inputs"]["data"]["path"], "azureml:cifar:1");
  // The same from the run's azureml:// address is the next version with the same content.
  auto m2 = Create("model", "digits", "azureml://jobs/train_1/outputs/artifacts/paths/model/",
                   "mlflow_model");
  ASSERT_TRUE(m2.ok()) << m2.status().ToString();
  EXPECT_EQ((*m2)["version"], "2");
  EXPECT_EQ((*m2)["storage"]["snapshot_id"], (*m)["storage"]["snapshot_id"]);
  // The run's files may change or go: the model's do not.
  fs::remove_all(run_dir);

  spec::RunRequest req;
  req.inputs["model"] = Input("azureml:digits@latest", "ro_mount");
  req.inputs["model"].type = "mlflow_model";
  Status checked = run_data_->Check(req);
  ASSERT_TRUE(checked.ok()) << checked.ToString();
  EXPECT_EQ(req.inputs["model"].path, "azureml:digits:2");  // pinned at submit
  auto got = run_data_->ResolveInputs(req, Log());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*ReadFile(fs::path(got->at("model").path) / "weights.bin"), "W1");
  EXPECT_NE(log_.find("input 'model': model digits:2, 2 files"), std::string::npos) << log_;
  // A model is not data, and a uri_file asset is not a folder.
  ASSERT_TRUE(Create("data", "iris", (root_ / "local" / "iris.csv").string(), "uri_file").ok());
  spec::RunRequest wrong;
  wrong.inputs["x"] = Input("azureml:iris:1", "ro_mount");
  wrong.inputs["x"].type = "uri_folder";
  Status st = run_data_->Check(wrong);
  EXPECT_NE(st.message().find("azureml:iris:1 is a uri_file data asset; the input is of type "
                              "uri_folder"),
            std::string::npos)
      << st.message();
  wrong.inputs["x"].type = "custom_model";
  EXPECT_EQ(run_data_->Check(wrong).code(), StatusCode::kNotFound);
  // Outputs to register are checked at submit, whoever built the request.
  spec::RunRequest outputs;
  outputs.outputs["m"].name = "bad name";
  EXPECT_EQ(run_data_->Check(outputs).code(), StatusCode::kInvalidArgument);
  outputs.outputs["m"].name = "m";
  outputs.outputs["m"].type = "uri_file";
  EXPECT_EQ(run_data_->Check(outputs).code(), StatusCode::kInvalidArgument);
  outputs.outputs["m"].type = "custom_model";
  outputs.outputs["m"].version = "1";
  EXPECT_TRUE(run_data_->Check(outputs).ok());
  ASSERT_TRUE(Create("model", "m", (root_ / "local" / "cifar").string(), "", "1").ok());
  EXPECT_EQ(run_data_->Check(outputs).code(), StatusCode::kAlreadyExists);
}

TEST_F(CatalogTest, DataFromAnAddressIsReadWhereItIs) {
  auto d = Create("data", "imgs", "azureml://datastores/shared/paths/imgs");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ((*d)["storage"]["uri"], "azureml://datastores/shared/paths/imgs");
  spec::RunRequest req;
  req.inputs["imgs"] = Input("azureml:imgs:1", "download");
  ASSERT_TRUE(run_data_->Check(req).ok());
  auto got = run_data_->ResolveInputs(req, Log());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*ReadFile(fs::path(got->at("imgs").path) / "sub" / "b.png"), "BB");
  EXPECT_NE(log_.find("data asset imgs:1 is azureml://datastores/shared/paths/imgs"),
            std::string::npos)
      << log_;
}

// Two workspaces in one process share a registry folder: what one publishes the other reads,
// with the content copied into its own store.
TEST_F(CatalogTest, ARegistryFolderIsSharedByTwoWorkspaces) {
  Registries first(*store_, *objects_, *snapshots_, *datastores_, *run_data_, root_ / "statcache");
  run_data_->UseCatalog(catalog_.get(), &first);
  const std::string folder = (root_ / "registry").string();
  auto made = first.Attach("team", folder);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ((*made)["outcome"], "created");
  EXPECT_EQ((*first.Attach("team", folder))["outcome"], "unchanged");
  EXPECT_EQ(first.Attach("other", folder).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(first.Attach("team", "relative/dir").status().code(), StatusCode::kInvalidArgument);
  auto reg = first.Open("team");
  ASSERT_TRUE(reg.ok());
  AssetRequest r;
  r.kind = "data";
  r.name = "cifar";
  r.path = (root_ / "local" / "cifar").string();
  auto published = (*reg)->catalog->Create(r);
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  EXPECT_EQ((*published)["id"], "azureml://registries/team/data/cifar/versions/1");
  spec::EnvironmentDefinition env;
  env.name = "team-py";
  env.image = "python:3.11-slim";
  auto env_rec = first.PublishEnvironment("team", env);
  ASSERT_TRUE(env_rec.ok()) << env_rec.status().ToString();
  // Not in the workspace's own catalog.
  EXPECT_EQ(catalog_->Get("data", "cifar", "").status().code(), StatusCode::kNotFound);

  // The second workspace: its own store, objects and catalog.
  auto st2 = store::OpenSqliteStore(":memory:");
  ASSERT_TRUE(st2.ok());
  std::unique_ptr<store::Store> store2 = std::move(*st2);
  Datastores datastores2(*store2, box_, root_ / "ws2" / "blob");
  cas::ObjectStore objects2(root_ / "ws2" / "cas");
  cas::Snapshotter snapshots2(objects2, root_ / "ws2" / "snapshots");
  RunData run_data2(datastores2, objects2, snapshots2, root_ / "ws2" / "datacache",
                    root_ / "ws2" / "runs");
  Catalog catalog2(*store2, objects2, snapshots2, datastores2, run_data2, root_ / "ws2" / "sc");
  Registries second(*store2, objects2, snapshots2, datastores2, run_data2, root_ / "ws2" / "sc");
  run_data2.UseCatalog(&catalog2, &second);
  auto unknown = second.Open("team");
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("its registries: none"), std::string::npos);
  EXPECT_EQ((*second.Attach("team", folder))["outcome"], "attached");

  spec::RunRequest req;
  req.inputs["data"] = Input("azureml://registries/team/data/cifar/labels/latest", "ro_mount");
  Status checked = run_data2.Check(req);
  ASSERT_TRUE(checked.ok()) << checked.ToString();
  EXPECT_EQ(req.inputs["data"].path, "azureml://registries/team/data/cifar/versions/1");
  auto got = run_data2.ResolveInputs(req, Log());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  const fs::path data = got->at("data").path;
  EXPECT_TRUE(StartsWith(data.string(), (root_ / "ws2" / "datacache").string())) << data;
  EXPECT_EQ(*ReadFile(data / "train.bin"), "TRAIN");
  EXPECT_TRUE(objects2.Has(Sha256Hex("TRAIN")));  // copied into the second workspace's store
  // A model path for a data asset is refused.
  req.inputs["data"] = Input("azureml://registries/team/models/cifar/versions/1", "ro_mount");
  req.inputs["data"].type = "uri_folder";
  EXPECT_FALSE(run_data2.Check(req).ok());

  auto imported = second.ImportEnvironment("team", "team-py", "");
  ASSERT_TRUE(imported.ok()) << imported.status().ToString();
  EXPECT_EQ(imported->name, "team.team-py");
  EXPECT_EQ(imported->image, "python:3.11-slim");
  EXPECT_EQ(imported->version, "");
  // A record another writer of the registry's database made up never reaches a run: a path out
  // of its snapshot, or a local path as its address.
  store::AssetRecord evil;
  evil.kind = "data";
  evil.name = "evil";
  evil.version = "1";
  evil.asset_json = nlohmann::json{{"type", "uri_folder"}, {"storage", {{"uri", "/root"}}}}.dump();
  ASSERT_TRUE((*reg)->store->InsertAsset(evil).ok());
  evil.name = "evil2";
  evil.asset_json = nlohmann::json{{"type", "uri_file"},
                                   {"storage",
                                    {{"snapshot_id", (*published)["storage"]["snapshot_id"]},
                                     {"file", "../../../../etc/passwd"}}}}
                        .dump();
  ASSERT_TRUE((*reg)->store->InsertAsset(evil).ok());
  for (const std::string bad : {"azureml://registries/team/data/evil/versions/1",
                                "azureml://registries/team/data/evil2/versions/1"}) {
    spec::RunRequest evil_req;
    evil_req.inputs["x"] = Input(bad, "ro_mount");
    evil_req.inputs["x"].type = bad.find("evil2") != std::string::npos ? "uri_file" : "uri_folder";
    Status refused = run_data2.Check(evil_req);
    EXPECT_EQ(refused.code(), StatusCode::kInternal) << bad << ": " << refused.ToString();
    EXPECT_NE(refused.message().find("has unusable storage"), std::string::npos)
        << refused.message();
  }
  // A folder others may write is not a registry.
  fs::create_directories(root_ / "open");
  fs::permissions(root_ / "open", fs::perms::all);
  EXPECT_EQ(second.Attach("open", (root_ / "open").string()).status().code(),
            StatusCode::kFailedPrecondition);

  auto missing = second.ImportEnvironment("team", "team-r", "");
  EXPECT_NE(missing.status().message().find("environment team-r is not in registry team"),
            std::string::npos)
      << missing.status().message();
}

}  // namespace
}  // namespace trainyard::assets

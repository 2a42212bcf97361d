// An S3 bucket (AWS, MinIO, Ceph, any S3-compatible service) over the S3 REST API, signed with
// Signature Version 4, or anonymous for a public bucket. A service named by `endpoint` is
// addressed path-style (https://host/bucket/key), which every S3-compatible service takes; AWS
// itself virtual-hosted (https://bucket.s3.region.amazonaws.com/key).

#include <algorithm>
#include <memory>
#include <string>

#include "trainyard/assets/client_internal.h"
#include "trainyard/assets/signing.h"
#include "trainyard/assets/xml.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::assets::internal {
namespace {

constexpr const char* kEmptySha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr std::uint64_t kMaxPutObjectBytes = 5ull << 30;  // one PUT takes up to 5 GiB

std::string ServiceUrl(const spec::DatastoreDefinition& def) {
  if (!def.endpoint.empty()) return def.endpoint + "/" + def.bucket;
  return "https://" + def.bucket + ".s3." + (def.region.empty() ? "us-east-1" : def.region) +
         ".amazonaws.com";
}

class S3Client : public ObjectClient {
 public:
  explicit S3Client(const spec::DatastoreDefinition& def)
      : bucket_(def.bucket),
        region_(def.region.empty() ? "us-east-1" : def.region),
        access_key_id_(def.access_key_id),
        secret_access_key_(def.secret_access_key),
        base_url_(ServiceUrl(def)),
        http_(base_url_) {}

  std::string Describe() const override { return "s3 bucket '" + bucket_ + "'"; }

  Status Check() override {
    TY_ASSIGN_OR_RETURN(HttpResult r, Send("GET", "", {{"list-type", "2"}, {"max-keys", "1"}}));
    if (r.status / 100 != 2) return ObjectStoreError(r, "s3", BucketWhat());
    return Status::Ok();
  }

  StatusOr<std::vector<ObjectInfo>> List(std::string_view prefix) override {
    std::vector<ObjectInfo> out;
    std::string token;
    for (int page = 0; page < 100000; ++page) {
      Params query = {{"list-type", "2"}, {"max-keys", "1000"}};
      if (!prefix.empty()) query.emplace_back("prefix", std::string(prefix));
      if (!token.empty()) query.emplace_back("continuation-token", token);
      TY_ASSIGN_OR_RETURN(HttpResult r, Send("GET", "", query));
      if (r.status / 100 != 2) return ObjectStoreError(r, "s3", BucketWhat());
      auto xml = ParseXmlRecords(r.body, "Contents");
      if (!xml.ok()) return xml.status().WithPrefix("the listing of " + Describe());
      for (auto& rec : xml->records) {
        ObjectInfo info;
        info.key = rec["Key"];
        auto size = ParseWholeInteger<std::uint64_t>(rec["Size"]);
        if (info.key.empty() || !size) {
          return Internal("the listing of " + Describe() + " has an object without a key or size");
        }
        info.size = *size;
        info.etag = Unquote(rec["ETag"]);
        out.push_back(std::move(info));
      }
      token = xml->fields["NextContinuationToken"];
      if (xml->fields["IsTruncated"] != "true" || token.empty()) break;
    }
    std::sort(out.begin(), out.end(),
              [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
    return out;
  }

  StatusOr<ObjectInfo> Stat(std::string_view key) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    TY_ASSIGN_OR_RETURN(HttpResult r, Send("HEAD", key, {}));
    if (r.status / 100 != 2) return ObjectStoreError(r, "s3", ObjectWhat(key));
    return InfoFromHeaders(key, r);
  }

  StatusOr<ObjectInfo> Download(std::string_view key, const std::filesystem::path& dest,
                                bool durable) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    TY_ASSIGN_OR_RETURN(Signed s, Sign("GET", key, {}, kEmptySha256));
    auto r = http_.Download(s.path_and_query, dest, s.headers, durable);
    if (!r.ok()) return r.status().WithPrefix("s3 " + ObjectWhat(key));
    if (r->status / 100 != 2) return ObjectStoreError(*r, "s3", ObjectWhat(key));
    return InfoFromHeaders(key, *r);
  }

  Status Upload(const std::filesystem::path& file, std::string_view key) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    std::error_code ec;
    const std::uintmax_t size = std::filesystem::file_size(file, ec);
    if (ec) return NotFound("cannot upload " + file.string() + ": " + ec.message());
    if (size > kMaxPutObjectBytes) {
      return InvalidArgument("cannot upload " + file.string() + " to " + Describe() + ": " +
                             FormatBytes(size) + " is more than one object upload takes (5 GiB)");
    }
    TY_ASSIGN_OR_RETURN(std::string digest, Sha256File(file));
    TY_ASSIGN_OR_RETURN(Signed s, Sign("PUT", key, {}, digest));
    TY_ASSIGN_OR_RETURN(HttpResult r,
                        http_.UploadFile("PUT", s.path_and_query, file, "application/octet-stream",
                                         nullptr, s.headers));
    if (r.status / 100 != 2) return ObjectStoreError(r, "s3", ObjectWhat(key));
    return Status::Ok();
  }

 private:
  struct Signed {
    std::string path_and_query;
    HttpHeaders headers;
  };

  std::string BucketWhat() const { return "bucket '" + bucket_ + "'"; }
  std::string ObjectWhat(std::string_view key) const {
    return "object '" + std::string(key) + "' in bucket '" + bucket_ + "'";
  }

  StatusOr<Signed> Sign(const std::string& method, std::string_view key, const Params& query,
                        const std::string& payload_sha256) {
    TY_ASSIGN_OR_RETURN(SplitUrl url, SplitServiceUrl(base_url_));
    // The bucket's root needs its '/' in a path-style URL ("/bucket/" lists it).
    const std::string rel = "/" + UriEncode(key, /*keep_slash=*/true);
    Signed s;
    std::string q;
    Params sorted = query;
    for (const auto& [k, v] : sorted) {
      q += (q.empty() ? "" : "&") + UriEncode(k, false) + "=" + UriEncode(v, false);
    }
    s.path_and_query = rel + (q.empty() ? "" : "?" + q);
    if (access_key_id_.empty()) return s;  // a public bucket: no signature
    const std::string amz_date = AmzDate(NowMillis() / 1000);
    SigV4Request req;
    req.method = method;
    req.canonical_uri = url.path + rel;
    req.query = query;
    req.headers = {
        {"host", url.host}, {"x-amz-content-sha256", payload_sha256}, {"x-amz-date", amz_date}};
    req.payload_sha256 = payload_sha256;
    const std::string auth =
        SigV4Authorization(req, access_key_id_, secret_access_key_, region_, "s3", amz_date);
    s.headers = {"x-amz-content-sha256: " + payload_sha256, "x-amz-date: " + amz_date,
                 "Authorization: " + auth};
    return s;
  }

  StatusOr<HttpResult> Send(const std::string& method, std::string_view key, const Params& query) {
    TY_ASSIGN_OR_RETURN(Signed s, Sign(method, key, query, kEmptySha256));
    auto r =
        http_.Request(method, s.path_and_query, "", "application/octet-stream", 60000, s.headers);
    if (!r.ok()) return r.status().WithPrefix("s3 " + BucketWhat());
    return r;
  }

  const std::string bucket_;
  const std::string region_;
  const std::string access_key_id_;
  const std::string secret_access_key_;
  const std::string base_url_;
  HttpClient http_;
};

}  // namespace

std::unique_ptr<ObjectClient> NewS3Client(const spec::DatastoreDefinition& def) {
  return std::make_unique<S3Client>(def);
}

}  // namespace trainyard::assets::internal

// An Azure Blob Storage container over the Blob service REST API: Shared Key, SAS or anonymous
// access (the same code talks to Azurite).

#include <algorithm>
#include <memory>
#include <string>

#include "trainyard/assets/client_internal.h"
#include "trainyard/assets/signing.h"
#include "trainyard/assets/xml.h"
#include "trainyard/common/util.h"

namespace trainyard::assets::internal {
namespace {

// The REST API version every request names (Put Blob takes up to 5000 MiB from 2019-12-12 on).
constexpr const char* kApiVersion = "2021-08-06";
constexpr std::uint64_t kMaxPutBlobBytes = 5000ull << 20;

class AzureBlobClient : public ObjectClient {
 public:
  explicit AzureBlobClient(const spec::DatastoreDefinition& def)
      : account_(def.account_name),
        container_(def.container_name),
        account_key_(def.account_key),
        sas_token_(def.sas_token),
        service_url_(def.BlobServiceUrl()),
        http_(service_url_) {
    while (!sas_token_.empty() && sas_token_.front() == '?') sas_token_.erase(0, 1);
  }

  std::string Describe() const override {
    return "azure_blob container '" + container_ + "' of account '" + account_ + "'";
  }

  Status Check() override {
    TY_ASSIGN_OR_RETURN(
        HttpResult r,
        Send("GET", "", {{"restype", "container"}, {"comp", "list"}, {"maxresults", "1"}}));
    if (r.status / 100 != 2) return ObjectStoreError(r, "azure_blob", ContainerWhat());
    return Status::Ok();
  }

  StatusOr<std::vector<ObjectInfo>> List(std::string_view prefix) override {
    std::vector<ObjectInfo> out;
    std::string marker;
    for (int page = 0; page < 100000; ++page) {
      Params query = {{"restype", "container"}, {"comp", "list"}, {"maxresults", "5000"}};
      if (!prefix.empty()) query.emplace_back("prefix", std::string(prefix));
      if (!marker.empty()) query.emplace_back("marker", marker);
      TY_ASSIGN_OR_RETURN(HttpResult r, Send("GET", "", query));
      if (r.status / 100 != 2) return ObjectStoreError(r, "azure_blob", ContainerWhat());
      auto xml = ParseXmlRecords(r.body, "Blob");
      if (!xml.ok()) return xml.status().WithPrefix("the listing of " + Describe());
      for (auto& rec : xml->records) {
        ObjectInfo info;
        info.key = rec["Name"];
        auto size = ParseWholeInteger<std::uint64_t>(rec["Content-Length"]);
        if (info.key.empty() || !size) {
          return Internal("the listing of " + Describe() + " has a blob without a name or size");
        }
        info.size = *size;
        info.etag = Unquote(rec["Etag"]);
        out.push_back(std::move(info));
      }
      marker = xml->fields["NextMarker"];
      if (marker.empty()) break;
    }
    std::sort(out.begin(), out.end(),
              [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
    return out;
  }

  StatusOr<ObjectInfo> Stat(std::string_view key) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    TY_ASSIGN_OR_RETURN(HttpResult r, Send("HEAD", key, {}));
    if (r.status / 100 != 2) return ObjectStoreError(r, "azure_blob", BlobWhat(key));
    return InfoFromHeaders(key, r);
  }

  StatusOr<ObjectInfo> Download(std::string_view key, const std::filesystem::path& dest,
                                bool durable) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    TY_ASSIGN_OR_RETURN(Signed s, Sign("GET", key, {}, {}));
    auto r = http_.Download(s.path_and_query, dest, s.headers, durable);
    if (!r.ok()) return r.status().WithPrefix("azure_blob " + BlobWhat(key));
    if (r->status / 100 != 2) return ObjectStoreError(*r, "azure_blob", BlobWhat(key));
    return InfoFromHeaders(key, *r);
  }

  Status Upload(const std::filesystem::path& file, std::string_view key) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    std::error_code ec;
    const std::uintmax_t size = std::filesystem::file_size(file, ec);
    if (ec) return NotFound("cannot upload " + file.string() + ": " + ec.message());
    if (size > kMaxPutBlobBytes) {
      return InvalidArgument("cannot upload " + file.string() + " to " + Describe() + ": " +
                             FormatBytes(size) + " is more than one blob upload takes (5000 MiB)");
    }
    const std::string type = "application/octet-stream";
    TY_ASSIGN_OR_RETURN(Signed s, Sign("PUT", key, {},
                                       {{"Content-Length", std::to_string(size)},
                                        {"Content-Type", type},
                                        {"x-ms-blob-type", "BlockBlob"}}));
    // Content-Length and Content-Type are set by the upload itself.
    HttpHeaders headers;
    for (const std::string& h : s.headers) {
      if (!StartsWith(h, "Content-Length:") && !StartsWith(h, "Content-Type:"))
        headers.push_back(h);
    }
    TY_ASSIGN_OR_RETURN(HttpResult r,
                        http_.UploadFile("PUT", s.path_and_query, file, type, nullptr, headers));
    if (r.status / 100 != 2) return ObjectStoreError(r, "azure_blob", BlobWhat(key));
    return Status::Ok();
  }

 private:
  struct Signed {
    std::string path_and_query;  // relative to the service URL
    HttpHeaders headers;
  };

  std::string ContainerWhat() const {
    return "container '" + container_ + "' of account '" + account_ + "'";
  }
  std::string BlobWhat(std::string_view key) const {
    return "blob '" + std::string(key) + "' in " + ContainerWhat();
  }

  // The request for `key` ("" for the container itself) with its auth: a Shared Key signature,
  // the SAS token's parameters, or nothing.
  StatusOr<Signed> Sign(const std::string& method, std::string_view key, const Params& query,
                        const Params& headers) {
    TY_ASSIGN_OR_RETURN(SplitUrl url, SplitServiceUrl(service_url_));
    std::string rel = "/" + container_;
    if (!key.empty()) rel += "/" + UriEncode(key, /*keep_slash=*/true);
    Signed s;
    s.path_and_query = rel;
    std::string q;
    for (const auto& [k, v] : query)
      q += (q.empty() ? "" : "&") + UriEncode(k, false) + "=" + UriEncode(v, false);
    if (!sas_token_.empty()) q += (q.empty() ? "" : "&") + sas_token_;
    if (!q.empty()) s.path_and_query += "?" + q;

    Params all = headers;
    all.emplace_back("x-ms-date", HttpDate(NowMillis() / 1000));
    all.emplace_back("x-ms-version", kApiVersion);
    if (!account_key_.empty()) {
      SharedKeyRequest req{method, account_, url.path + rel, query, all};
      TY_ASSIGN_OR_RETURN(std::string auth, SharedKeyAuthorization(req, account_key_));
      all.emplace_back("Authorization", auth);
    }
    for (const auto& [k, v] : all) s.headers.push_back(k + ": " + v);
    return s;
  }

  StatusOr<HttpResult> Send(const std::string& method, std::string_view key, const Params& query) {
    TY_ASSIGN_OR_RETURN(Signed s, Sign(method, key, query, {}));
    auto r =
        http_.Request(method, s.path_and_query, "", "application/octet-stream", 60000, s.headers);
    if (!r.ok()) return r.status().WithPrefix("azure_blob " + ContainerWhat());
    return r;
  }

  const std::string account_;
  const std::string container_;
  const std::string account_key_;
  std::string sas_token_;
  const std::string service_url_;
  HttpClient http_;
};

}  // namespace

std::unique_ptr<ObjectClient> NewAzureBlobClient(const spec::DatastoreDefinition& def) {
  return std::make_unique<AzureBlobClient>(def);
}

}  // namespace trainyard::assets::internal

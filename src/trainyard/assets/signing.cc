#include "trainyard/assets/signing.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>

#include "trainyard/client/http_client.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::assets {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Header values as both schemes sign them: trimmed, inner runs of spaces folded to one.
std::string FoldSpaces(std::string_view value) {
  std::string out;
  bool space = false;
  for (const char c : Trim(value)) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::tm UtcTime(std::int64_t unix_seconds) {
  const auto t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return tm;
}

}  // namespace

std::string UriEncode(std::string_view text, bool keep_slash) {
  // The same percent-encoding the client puts in every URL (upper-case hex, RFC 3986
  // unreserved characters kept), which is what both services sign.
  return keep_slash ? HttpClient::UrlEncodePath(text) : HttpClient::UrlEncode(text);
}

std::string AmzDate(std::int64_t unix_seconds) {
  const std::tm tm = UtcTime(unix_seconds);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string HttpDate(std::int64_t unix_seconds) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::tm tm = UtcTime(unix_seconds);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

std::string SigV4Authorization(const SigV4Request& request, std::string_view access_key_id,
                               std::string_view secret_access_key, std::string_view region,
                               std::string_view service, std::string_view amz_date) {
  // Canonical query: encoded names and values, sorted by name then value.
  std::vector<std::pair<std::string, std::string>> query;
  for (const auto& [k, v] : request.query)
    query.emplace_back(UriEncode(k, false), UriEncode(v, false));
  std::sort(query.begin(), query.end());
  std::string canonical_query;
  for (const auto& [k, v] : query) {
    if (!canonical_query.empty()) canonical_query += '&';
    canonical_query += k + "=" + v;
  }
  // Canonical headers: lower-case names, sorted, repeated names joined with ','.
  std::map<std::string, std::string> headers;
  for (const auto& [k, v] : request.headers) {
    std::string& slot = headers[Lower(k)];
    slot += (slot.empty() ? "" : ",") + FoldSpaces(v);
  }
  std::string canonical_headers, signed_headers;
  for (const auto& [k, v] : headers) {
    canonical_headers += k + ":" + v + "\n";
    signed_headers += (signed_headers.empty() ? "" : ";") + k;
  }
  const std::string canonical_request = request.method + "\n" + request.canonical_uri + "\n" +
                                        canonical_query + "\n" + canonical_headers + "\n" +
                                        signed_headers + "\n" + request.payload_sha256;
  const std::string_view date = amz_date.substr(0, 8);
  const std::string scope =
      std::string(date) + "/" + std::string(region) + "/" + std::string(service) + "/aws4_request";
  const std::string string_to_sign = "AWS4-HMAC-SHA256\n" + std::string(amz_date) + "\n" + scope +
                                     "\n" + Sha256Hex(canonical_request);
  std::string key = HmacSha256("AWS4" + std::string(secret_access_key), date);
  key = HmacSha256(key, region);
  key = HmacSha256(key, service);
  key = HmacSha256(key, "aws4_request");
  const std::string signature = HexEncode(HmacSha256(key, string_to_sign));
  return "AWS4-HMAC-SHA256 Credential=" + std::string(access_key_id) + "/" + scope +
         ", SignedHeaders=" + signed_headers + ", Signature=" + signature;
}

StatusOr<std::string> SharedKeyAuthorization(const SharedKeyRequest& request,
                                             std::string_view account_key_base64) {
  std::string key;
  if (!Base64Decode(account_key_base64, &key) || key.empty()) {
    return InvalidArgument("the account key of storage account '" + request.account +
                           "' is not base64 (copy it from the account's access keys)");
  }
  std::map<std::string, std::string> standard;  // lower-case name -> value
  std::map<std::string, std::string> ms;        // x-ms-* headers
  for (const auto& [k, v] : request.headers) {
    const std::string name = Lower(k);
    (StartsWith(name, "x-ms-") ? ms : standard)[name] = FoldSpaces(v);
  }
  auto header = [&](const char* name) {
    auto it = standard.find(name);
    return it == standard.end() ? std::string() : it->second;
  };
  std::string length = header("content-length");
  if (length == "0") length.clear();  // version 2015-02-21 and later sign an empty length
  std::string to_sign = request.method + "\n" + header("content-encoding") + "\n" +
                        header("content-language") + "\n" + length + "\n" + header("content-md5") +
                        "\n" + header("content-type") + "\n" + header("date") + "\n" +
                        header("if-modified-since") + "\n" + header("if-match") + "\n" +
                        header("if-none-match") + "\n" + header("if-unmodified-since") + "\n" +
                        header("range") + "\n";
  for (const auto& [k, v] : ms) to_sign += k + ":" + v + "\n";
  to_sign += "/" + request.account + request.path;
  std::map<std::string, std::vector<std::string>> query;
  for (const auto& [k, v] : request.query) query[Lower(k)].push_back(v);
  for (auto& [k, values] : query) {
    std::sort(values.begin(), values.end());
    to_sign += "\n" + k + ":" + Join(values, ",");
  }
  return "SharedKey " + request.account + ":" + Base64Encode(HmacSha256(key, to_sign));
}

}  // namespace trainyard::assets

#pragma once

// Request signing for the object stores datastores talk to: AWS Signature Version 4 (S3 and
// every S3-compatible service) and Azure Storage's Shared Key. Pure functions of the request and
// the key, so they are checked against the services' published examples.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::assets {

// Name/value pairs in the order given (query parameters, headers).
using Params = std::vector<std::pair<std::string, std::string>>;

// Percent-encodes every byte but A-Z a-z 0-9 - . _ ~ (and '/' with `keep_slash`), upper-case hex:
// the encoding both services sign.
std::string UriEncode(std::string_view text, bool keep_slash);

// "20130524T000000Z" and "20130524" for a Unix time in seconds (UTC).
std::string AmzDate(std::int64_t unix_seconds);
// "Fri, 24 May 2013 00:00:00 GMT" (RFC 1123) for a Unix time in seconds.
std::string HttpDate(std::int64_t unix_seconds);

// One request as S3 signs it.
struct SigV4Request {
  std::string method;          // "GET", "PUT", ...
  std::string canonical_uri;   // the path as sent, already encoded: "/bucket/a%20b.txt"
  Params query;                // decoded names and values
  Params headers;              // every header to sign (host, x-amz-date, x-amz-content-sha256...)
  std::string payload_sha256;  // hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
};

// The value of the Authorization header for `request` signed with the key pair for `region` and
// `service` ("s3") at `amz_date` ("20130524T000000Z", the request's x-amz-date).
std::string SigV4Authorization(const SigV4Request& request, std::string_view access_key_id,
                               std::string_view secret_access_key, std::string_view region,
                               std::string_view service, std::string_view amz_date);

// One request as Azure Storage signs it (Shared Key, version 2009-09-19 and later).
struct SharedKeyRequest {
  std::string method;
  std::string account;  // the account name the key belongs to
  std::string path;     // the URL path as sent, encoded: "/container/a%20b.txt"
  Params query;         // decoded names and values
  // Headers as sent: the standard ones the scheme signs (Content-Length, Content-Type, Range...)
  // and every x-ms-* header. Names in any case.
  Params headers;
};

// The value of the Authorization header: "SharedKey ACCOUNT:SIGNATURE". InvalidArgument when
// `account_key_base64` is not base64 (the message never contains it).
StatusOr<std::string> SharedKeyAuthorization(const SharedKeyRequest& request,
                                             std::string_view account_key_base64);

}  // namespace trainyard::assets

#pragma once
// The daemon's TLS identity for serving beyond loopback (docs/security.md, "Serving beyond
// loopback"): a certificate chain and its private key, given by the user or self-signed and kept
// in the workspace, and the public-key pin clients check it by.

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard {

struct TlsIdentity {
  std::string certificate_pem;  // the server's certificate first, then any intermediates
  std::string private_key_pem;
};

// A new self-signed certificate (ECDSA P-256, valid ten years) for `names`: each an IP address
// (v4 or v6) or a DNS name, all put in its subjectAltName. It is its own CA, so a client may
// trust it as a CA file as well as by pin.
StatusOr<TlsIdentity> MakeSelfSignedIdentity(const std::vector<std::string>& names,
                                             std::string_view common_name);

// Checks that the key matches the first certificate and that both parse. `where` names the
// source in errors.
Status CheckIdentity(const TlsIdentity& identity, std::string_view where);

// Whether the first certificate of `certificate_pem` names every one of `names` (IP addresses or
// DNS names) and is valid now.
bool CertificateCovers(std::string_view certificate_pem, const std::vector<std::string>& names);

// The pin of the first certificate's public key in libcurl's CURLOPT_PINNEDPUBLICKEY form:
// "sha256//" + base64(SHA-256(DER SubjectPublicKeyInfo)).
StatusOr<std::string> PublicKeyPin(std::string_view certificate_pem);

// Whether `pin` has the form PublicKeyPin returns (what `trainyard login --pin` accepts).
bool IsPublicKeyPin(std::string_view pin);

// The identity in `dir` (server.crt, server.key), made self-signed for `names` when missing or
// when it does not cover them (the pin then changes: `*replaced` says so). The key file is 0600;
// `dir` is created 0700.
StatusOr<TlsIdentity> LoadOrMakeWorkspaceIdentity(const std::filesystem::path& dir,
                                                  const std::vector<std::string>& names,
                                                  std::string_view common_name, bool* replaced);

}  // namespace trainyard

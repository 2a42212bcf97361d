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

// A new self-signed certificate (valid ten years) for `names`: each an IP address (v4 or v6) or
// a DNS name, all put in its subjectAltName. It is its own CA, so a client may trust it as a CA
// file as well as by pin. Its key is `key_pem` (PEM) when given, so that its pin stays that of
// an earlier certificate; else a new ECDSA P-256 key.
StatusOr<TlsIdentity> MakeSelfSignedIdentity(const std::vector<std::string>& names,
                                             std::string_view common_name,
                                             std::string_view key_pem = {});

// Checks that the key matches the first certificate and that both parse. `where` names the
// source in errors.
Status CheckIdentity(const TlsIdentity& identity, std::string_view where);

// Whether the first certificate of `certificate_pem` names every one of `names` (IP addresses or
// DNS names) and is valid now.
bool CertificateCovers(std::string_view certificate_pem, const std::vector<std::string>& names);

// The pin of the first certificate's public key in libcurl's CURLOPT_PINNEDPUBLICKEY form:
// "sha256//" + base64(SHA-256(DER SubjectPublicKeyInfo)).
StatusOr<std::string> PublicKeyPin(std::string_view certificate_pem);

// Whether a certificate can name `name`: an IP address, or a host name of letters, digits, '.'
// and '-' (what MakeSelfSignedIdentity accepts).
bool IsCertificateName(const std::string& name);

// Whether `pin` has the form PublicKeyPin returns (what `trainyard login --pin` accepts).
bool IsPublicKeyPin(std::string_view pin);

// The identity in `dir` (server.crt, server.key). When the certificate is missing or does not
// cover `names`, a new self-signed one is made, with the same key (so the same pin) when the
// key is there; a new key only when there was none, or it did not parse (`*new_key` says so: the
// pin clients hold then changed). The key file must be the user's and 0600
// (FailedPrecondition otherwise, naming it); `dir` is created 0700.
StatusOr<TlsIdentity> LoadOrMakeWorkspaceIdentity(const std::filesystem::path& dir,
                                                  const std::vector<std::string>& names,
                                                  std::string_view common_name, bool* new_key);

}  // namespace trainyard

#include "trainyard/common/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard {

namespace {

template <class T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;

constexpr long kValiditySeconds = 10L * 365 * 24 * 3600;
constexpr std::string_view kPinPrefix = "sha256//";

// The reason of the last OpenSSL failure, and clears the queue.
std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

BioPtr ReadBio(std::string_view data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

CertPtr FirstCertificate(std::string_view pem) {
  BioPtr bio = ReadBio(pem);
  if (!bio) return nullptr;
  return CertPtr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

std::string MemoryText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

bool IsIpAddress(const std::string& name) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, name.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

bool IsDnsName(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.front() == '.' || name.front() == '-') {
    return false;
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status AddExtension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return Internal("cannot add certificate extension " + value + ": " + OpenSslError());
  }
  return Status::Ok();
}

}  // namespace

bool IsCertificateName(const std::string& name) { return IsIpAddress(name) || IsDnsName(name); }

StatusOr<TlsIdentity> MakeSelfSignedIdentity(const std::vector<std::string>& names,
                                             std::string_view common_name,
                                             std::string_view key_pem) {
  if (names.empty()) return InvalidArgument("a certificate needs at least one address or name");
  std::string alt;
  for (const std::string& name : names) {
    if (!alt.empty()) alt += ",";
    if (IsIpAddress(name)) {
      alt += "IP:" + name;
    } else if (IsDnsName(name)) {
      alt += "DNS:" + name;
    } else {
      return InvalidArgument("'" + name + "' is neither an IP address nor a host name");
    }
  }
  KeyPtr key;
  if (!key_pem.empty()) {
    BioPtr bio = ReadBio(key_pem);
    key.reset(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
    if (!key) return InvalidArgument("not a PEM private key: " + OpenSslError());
  } else {
    key.reset(EVP_EC_gen("P-256"));
    if (!key) return Internal("cannot make a P-256 key: " + OpenSslError());
  }
  CertPtr cert(X509_new());
  if (!cert) return Internal("cannot make a certificate: " + OpenSslError());
  BnPtr serial(BN_new());
  // A random positive 127-bit serial (RFC 5280 allows up to 20 octets).
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return Internal("cannot make a certificate serial: " + OpenSslError());
  }
  X509_NAME* subject = X509_get_subject_name(cert.get());
  const std::string cn(common_name.substr(0, 64));  // ub-common-name
  if (X509_set_version(cert.get(), 2) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), kValiditySeconds) == nullptr ||
      X509_set_pubkey(cert.get(), key.get()) != 1 ||
      X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1 ||
      X509_set_issuer_name(cert.get(), subject) != 1) {
    return Internal("cannot fill the certificate: " + OpenSslError());
  }
  // Its own CA, so that it can be trusted as a CA file (Python's ssl, curl --cacert) as well as
  // pinned.
  TY_RETURN_IF_ERROR(AddExtension(cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  TY_RETURN_IF_ERROR(
      AddExtension(cert.get(), NID_key_usage, "critical,digitalSignature,keyCertSign"));
  TY_RETURN_IF_ERROR(AddExtension(cert.get(), NID_ext_key_usage, "serverAuth"));
  TY_RETURN_IF_ERROR(AddExtension(cert.get(), NID_subject_key_identifier, "hash"));
  TY_RETURN_IF_ERROR(AddExtension(cert.get(), NID_authority_key_identifier, "keyid:always"));
  TY_RETURN_IF_ERROR(AddExtension(cert.get(), NID_subject_alt_name, alt));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) {
    return Internal("cannot sign the certificate: " + OpenSslError());
  }

  TlsIdentity out;
  BioPtr cert_bio(BIO_new(BIO_s_mem()));
  BioPtr key_bio(BIO_new(BIO_s_mem()));
  if (!cert_bio || !key_bio || PEM_write_bio_X509(cert_bio.get(), cert.get()) != 1 ||
      PEM_write_bio_PrivateKey(key_bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
          1) {
    return Internal("cannot write the certificate: " + OpenSslError());
  }
  out.certificate_pem = MemoryText(cert_bio.get());
  out.private_key_pem = MemoryText(key_bio.get());
  return out;
}

Status CheckIdentity(const TlsIdentity& identity, std::string_view where) {
  CertPtr cert = FirstCertificate(identity.certificate_pem);
  if (!cert) {
    return InvalidArgument(std::string(where) + ": no PEM certificate (" + OpenSslError() + ")");
  }
  BioPtr bio = ReadBio(identity.private_key_pem);
  KeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    return InvalidArgument(std::string(where) + ": no unencrypted PEM private key (" +
                           OpenSslError() + ")");
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument(std::string(where) +
                           ": the private key does not belong to the certificate");
  }
  return Status::Ok();
}

bool CertificateCovers(std::string_view certificate_pem, const std::vector<std::string>& names) {
  CertPtr cert = FirstCertificate(certificate_pem);
  if (!cert) {
    ERR_clear_error();
    return false;
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) <= 0 ||
      X509_cmp_current_time(X509_get0_notBefore(cert.get())) >= 0) {
    return false;
  }
  for (const std::string& name : names) {
    const bool covered =
        IsIpAddress(name) ? X509_check_ip_asc(cert.get(), name.c_str(), 0) == 1
                          : X509_check_host(cert.get(), name.data(), name.size(), 0, nullptr) == 1;
    if (!covered) return false;
  }
  return true;
}

StatusOr<std::string> PublicKeyPin(std::string_view certificate_pem) {
  CertPtr cert = FirstCertificate(certificate_pem);
  if (!cert) return InvalidArgument("not a PEM certificate: " + OpenSslError());
  unsigned char* der = nullptr;
  const int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
  if (n <= 0) return Internal("cannot encode the public key: " + OpenSslError());
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(der, static_cast<std::size_t>(n), digest);
  OPENSSL_free(der);
  return std::string(kPinPrefix) +
         Base64Encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

bool IsPublicKeyPin(std::string_view pin) {
  if (!StartsWith(pin, kPinPrefix)) return false;
  std::string raw;
  return Base64Decode(pin.substr(kPinPrefix.size()), &raw) && raw.size() == SHA256_DIGEST_LENGTH;
}

StatusOr<TlsIdentity> LoadOrMakeWorkspaceIdentity(const std::filesystem::path& dir,
                                                  const std::vector<std::string>& names,
                                                  std::string_view common_name, bool* new_key) {
  *new_key = false;
  const std::filesystem::path cert_file = dir / "server.crt";
  const std::filesystem::path key_file = dir / "server.key";
  struct stat st {};
  const bool key_exists = ::lstat(key_file.c_str(), &st) == 0;
  if (key_exists && (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)) {
    return FailedPrecondition(key_file.string() +
                              " is not a regular file private to you (mode 0600): it is the "
                              "daemon's TLS key; chmod 600 it, or remove it for a new key");
  }
  StatusOr<std::string> key =
      key_exists ? ReadFile(key_file) : StatusOr<std::string>(NotFound("no key"));
  StatusOr<std::string> cert = ReadFile(cert_file);
  if (cert.ok() && key.ok()) {
    TlsIdentity existing{std::move(cert).value(), *key};
    if (CheckIdentity(existing, cert_file.string()).ok() &&
        CertificateCovers(existing.certificate_pem, names)) {
      return existing;
    }
  }
  // The same key when there is a usable one: the pin clients hold stays valid.
  StatusOr<TlsIdentity> remade = key.ok() ? MakeSelfSignedIdentity(names, common_name, *key)
                                          : StatusOr<TlsIdentity>(NotFound("no key"));
  if (!remade.ok()) {
    *new_key = key_exists;
    remade = MakeSelfSignedIdentity(names, common_name);
  }
  TY_ASSIGN_OR_RETURN(TlsIdentity made, std::move(remade));
  TY_RETURN_IF_ERROR(MakeDirs(dir));
  if (::chmod(dir.c_str(), 0700) != 0) {
    return Internal("cannot make " + dir.string() + " private: " + std::strerror(errno));
  }
  TY_RETURN_IF_ERROR(WriteFileAtomic(key_file, made.private_key_pem, 0600));
  TY_RETURN_IF_ERROR(WriteFileAtomic(cert_file, made.certificate_pem, 0644));
  return made;
}

}  // namespace trainyard

#include "trainyard/common/secret_box.h"

#include <sodium.h>

#include <cstdint>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard {
namespace {
constexpr std::string_view kPrefix = "sbox1:";
}

StatusOr<SecretBox> SecretBox::Open(const std::filesystem::path& key_file) {
  if (sodium_init() < 0) return Internal("libsodium failed to initialise");
  auto existing = ReadFile(key_file);
  if (existing.ok()) {
    if (existing->size() != crypto_secretbox_KEYBYTES) {
      return Internal("secret key file " + key_file.string() + " is damaged (wrong size)");
    }
    return SecretBox(std::move(existing).value());
  }
  if (existing.status().code() != StatusCode::kNotFound) return existing.status();
  std::string key(crypto_secretbox_KEYBYTES, '\0');
  randombytes_buf(key.data(), key.size());
  TY_RETURN_IF_ERROR(WriteFileAtomic(key_file, key, 0600));
  return SecretBox(std::move(key));
}

SecretBox SecretBox::ForTesting(std::string_view key32) {
  if (sodium_init() < 0) std::abort();
  std::string key(key32.substr(0, crypto_secretbox_KEYBYTES));
  key.resize(crypto_secretbox_KEYBYTES, 'k');
  return SecretBox(std::move(key));
}

std::string SecretBox::Seal(std::string_view plaintext) const {
  std::string buf(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plaintext.size(), '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(buf.data());
  randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(nonce + crypto_secretbox_NONCEBYTES,
                        reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
                        nonce, reinterpret_cast<const unsigned char*>(key_.data()));
  return std::string(kPrefix) + Base64Encode(buf);
}

StatusOr<std::string> SecretBox::Unseal(std::string_view sealed) const {
  if (!IsSealed(sealed)) return InvalidArgument("not a sealed secret");
  std::string raw;
  if (!Base64Decode(sealed.substr(kPrefix.size()), &raw) ||
      raw.size() < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) {
    return InvalidArgument("sealed secret is malformed");
  }
  const auto* nonce = reinterpret_cast<const unsigned char*>(raw.data());
  size_t clen = raw.size() - crypto_secretbox_NONCEBYTES;
  std::string plain(clen - crypto_secretbox_MACBYTES, '\0');
  if (crypto_secretbox_open_easy(reinterpret_cast<unsigned char*>(plain.data()),
                                 nonce + crypto_secretbox_NONCEBYTES, clen, nonce,
                                 reinterpret_cast<const unsigned char*>(key_.data())) != 0) {
    return InvalidArgument("sealed secret does not verify with this workspace's key");
  }
  return plain;
}

bool SecretBox::IsSealed(std::string_view text) { return StartsWith(text, kPrefix); }

namespace {

constexpr std::string_view kRunTokenPrefix = "tyr2.";

// MAC of "<run_id>.<expires>" under a subkey of `key` set aside for run tokens (so a token
// reveals nothing about the key that seals secrets).
std::string RunTokenMac(const std::string& key, std::string_view signed_part) {
  unsigned char subkey[crypto_auth_KEYBYTES];
  crypto_kdf_derive_from_key(subkey, sizeof subkey, 2, "runtoken",
                             reinterpret_cast<const unsigned char*>(key.data()));
  unsigned char mac[crypto_auth_BYTES];
  crypto_auth(mac, reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size(),
              subkey);
  sodium_memzero(subkey, sizeof subkey);
  return Base64UrlEncode(std::string_view(reinterpret_cast<const char*>(mac), sizeof mac));
}

}  // namespace

std::string SecretBox::RunToken(std::string_view run_id, std::int64_t expires_unix_s) const {
  const std::string signed_part = std::string(run_id) + "." + std::to_string(expires_unix_s);
  return std::string(kRunTokenPrefix) + signed_part + "." + RunTokenMac(key_, signed_part);
}

std::string SecretBox::RunOfToken(std::string_view token, std::int64_t now_unix_s) const {
  if (!StartsWith(token, kRunTokenPrefix)) return "";
  token.remove_prefix(kRunTokenPrefix.size());
  const size_t dot = token.rfind('.');
  if (dot == std::string_view::npos || dot == 0) return "";
  const std::string_view signed_part = token.substr(0, dot);
  const std::string_view mac = token.substr(dot + 1);
  const std::string expected = RunTokenMac(key_, signed_part);
  if (mac.size() != expected.size() ||
      sodium_memcmp(mac.data(), expected.data(), expected.size()) != 0) {
    return "";
  }
  // Authentic: the expiry after the run id's last '.' is the one the daemon wrote.
  const size_t exp_dot = signed_part.rfind('.');
  if (exp_dot == std::string_view::npos || exp_dot == 0) return "";
  std::int64_t expires = 0;
  for (char c : signed_part.substr(exp_dot + 1)) {
    if (c < '0' || c > '9' || expires > (INT64_MAX - 9) / 10) return "";
    expires = expires * 10 + (c - '0');
  }
  if (now_unix_s >= expires) return "";
  return std::string(signed_part.substr(0, exp_dot));
}

}  // namespace trainyard

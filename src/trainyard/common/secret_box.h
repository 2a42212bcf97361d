#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "trainyard/common/status.h"

namespace trainyard {

// Encrypts secrets at rest (libsodium secretbox, XSalsa20-Poly1305) with a 32-byte key kept in a
// 0600 key file of the workspace. Thread-safe after construction.
class SecretBox {
 public:
  // Loads the key from `key_file`, creating it (mode 0600) with a random key when missing.
  static StatusOr<SecretBox> Open(const std::filesystem::path& key_file);
  // A box with a fixed key, for tests.
  static SecretBox ForTesting(std::string_view key32);

  // Returns "sbox1:" + base64(nonce || ciphertext).
  std::string Seal(std::string_view plaintext) const;
  // Inverse of Seal. InvalidArgument when the text is not a sealed value or fails to verify.
  StatusOr<std::string> Unseal(std::string_view sealed) const;

  static bool IsSealed(std::string_view text);

  // A bearer token that names one run until `expires_unix_s`: "tyr2." + run_id + "." + expiry
  // + "." + base64url(MAC of both under a key derived from this box's key). Verifiable without
  // storing it, and useless for any other run or workspace, or after it expires. Run ids are
  // names ([A-Za-z0-9._-]) so the format is unambiguous.
  std::string RunToken(std::string_view run_id, std::int64_t expires_unix_s) const;
  // The run id a token from RunToken names, or "" when `token` is not one made with this key
  // (checked in constant time) or has expired at `now_unix_s`.
  std::string RunOfToken(std::string_view token, std::int64_t now_unix_s) const;

 private:
  explicit SecretBox(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

}  // namespace trainyard

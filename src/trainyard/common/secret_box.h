#pragma once

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

 private:
  explicit SecretBox(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

}  // namespace trainyard

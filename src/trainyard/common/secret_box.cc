#include "trainyard/common/secret_box.h"

#include <sodium.h>

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

}  // namespace trainyard

#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "trainyard/common/status.h"

namespace trainyard {

// Incremental SHA-256 (OpenSSL EVP; uses SHA-NI where the CPU has it). Not thread-safe.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::string_view data);
  // Lower-case hex digest (64 chars). The object must not be used after.
  std::string FinishHex();

 private:
  void* ctx_;  // EVP_MD_CTX*
};

std::string Sha256Hex(std::string_view data);

// HMAC-SHA256 of `data` under `key`: the 32 raw bytes (request signing for object stores).
std::string HmacSha256(std::string_view key, std::string_view data);
// Lower-case hex of raw bytes.
std::string HexEncode(std::string_view bytes);

// Digest of what is left to read from `fd`, read in large blocks; `what` names it in errors.
StatusOr<std::string> Sha256Fd(int fd, std::string_view what);

// Digest of a file's contents, read in large blocks.
StatusOr<std::string> Sha256File(const std::filesystem::path& path);

// True for a lower-case hex digit (0-9, a-f), as digests and snapshot ids are written.
inline bool IsLowerHexDigit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// True for 64 lower-case hex characters.
bool IsSha256Hex(std::string_view s);

}  // namespace trainyard

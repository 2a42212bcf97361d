#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trainyard {

// Milliseconds since the Unix epoch (wall clock).
std::int64_t NowMillis();
// "2026-11-26T13:04:27.123Z" for a Unix-epoch millisecond time.
std::string FormatTimeIso(std::int64_t unix_millis);
// "1m 05s", "2.3s", "350ms".
std::string FormatDuration(std::int64_t millis);

// `n` random bytes as lower-case hex, from the OS's CSPRNG.
std::string RandomHex(size_t n_bytes);

// A run id: "<experiment>_<unix seconds>_<8 hex>", the experiment part reduced to [A-Za-z0-9_-].
std::string NewRunId(std::string_view experiment);

std::string Base64Encode(std::string_view data);
// URL-safe alphabet, with padding (what Docker's X-Registry-Auth expects).
std::string Base64UrlEncode(std::string_view data);
// Decodes standard or URL-safe base64; returns false on bad input.
bool Base64Decode(std::string_view in, std::string* out);

std::vector<std::string> Split(std::string_view s, char sep);
// The parts with `sep` between them ("a, b, c" for {"a","b","c"} and ", ").
std::string Join(const std::vector<std::string>& parts, std::string_view sep);
std::string_view Trim(std::string_view s);
bool StartsWith(std::string_view s, std::string_view prefix);
bool EndsWith(std::string_view s, std::string_view suffix);

// `text`, all of it, as a decimal integer of type T (digits, and a leading '-' for a signed T;
// no sign '+', no spaces); nullopt for anything else or a value outside T's range.
template <typename T>
std::optional<T> ParseWholeInteger(std::string_view text) {
  T value{};
  const char* end = text.data() + text.size();
  const auto [stop, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || stop != end) return std::nullopt;
  return value;
}

// "1.5 MB" style sizes (powers of 1000, like `du --si`).
std::string FormatBytes(std::uint64_t bytes);

// Quotes a word for a POSIX shell: 'it'\''s' for it's.
std::string ShellQuote(std::string_view word);

// Replaces every occurrence of `secret` (when non-empty) in `text` with "***".
std::string Redact(std::string text, std::string_view secret);

// The entries "NAME=value" of the environment `env` (an environ-style array) whose NAME is one of
// `names`, in `env`'s order: how a child is given an explicit environment of known variables
// instead of everything its parent holds (docs/security.md).
std::vector<std::string> SelectEnvironment(char** env, const std::vector<std::string_view>& names);
// The variables every child the daemon starts may see: PATH, HOME, locale, time zone, user,
// TMPDIR. Never a token or password.
const std::vector<std::string_view>& BaseEnvironmentNames();

// Valid asset names (environments, experiments, runs): [A-Za-z0-9][A-Za-z0-9._-]{0,254}.
bool IsValidName(std::string_view name);

}  // namespace trainyard

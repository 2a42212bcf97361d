// SubstituteCommand, ParseByteSize and ParsePriority: the small grammars of a job file.

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <string_view>

#include "trainyard/common/util.h"
#include "trainyard/spec/spec.h"
#include "trainyard/spec/spec_internal.h"

namespace trainyard::spec {
namespace {

constexpr std::string_view kOpenRef = "${{";
constexpr std::string_view kCloseRef = "}}";
constexpr std::string_view kOpenOptional = "$[[";
constexpr std::string_view kCloseOptional = "]]";

// A short excerpt of `text` from `pos`, for messages about where something went wrong.
std::string Excerpt(std::string_view text, size_t pos) {
  constexpr size_t kMax = 30;
  std::string_view rest = text.substr(pos);
  size_t newline = rest.find('\n');
  if (newline != std::string_view::npos) rest = rest.substr(0, newline);
  if (rest.size() > kMax) return std::string(rest.substr(0, kMax)) + "...";
  return std::string(rest);
}

std::string NamesOf(const std::map<std::string, std::string>& values, std::string_view kind) {
  if (values.empty()) return "no " + std::string(kind) + "s are defined";
  std::string out = "defined " + std::string(kind) + "s: ";
  bool first = true;
  for (const auto& [name, value] : values) {
    if (!first) out += ", ";
    out += name;
    first = false;
  }
  return out;
}

// Expands the `${{...}}` references of `text` (which holds no `$[[`). In an optional part, a
// reference to something not given sets *missing instead of failing.
Status ExpandReferences(std::string_view text, const std::map<std::string, std::string>& inputs,
                        const std::map<std::string, std::string>& outputs, bool optional,
                        std::string* out, bool* missing) {
  size_t pos = 0;
  for (;;) {
    size_t open = text.find(kOpenRef, pos);
    if (open == std::string_view::npos) {
      out->append(text.substr(pos));
      return Status::Ok();
    }
    out->append(text.substr(pos, open - pos));
    size_t close = text.find(kCloseRef, open + kOpenRef.size());
    if (close == std::string_view::npos) {
      return InvalidArgument("unterminated '${{' in command (no closing '}}'): '" +
                             Excerpt(text, open) + "'");
    }
    std::string_view whole = text.substr(open, close + kCloseRef.size() - open);
    std::string_view expression =
        Trim(text.substr(open + kOpenRef.size(), close - open - kOpenRef.size()));
    const std::map<std::string, std::string>* values = nullptr;
    std::string_view kind;
    std::string_view name;
    if (StartsWith(expression, "inputs.")) {
      values = &inputs;
      kind = "input";
      name = expression.substr(7);
    } else if (StartsWith(expression, "outputs.")) {
      values = &outputs;
      kind = "output";
      name = expression.substr(8);
    }
    if (values == nullptr || !internal::IsIdentifier(name)) {
      return InvalidArgument("unsupported expression '" + std::string(whole) +
                             "' in command; only ${{inputs.NAME}} and ${{outputs.NAME}} are "
                             "allowed");
    }
    auto it = values->find(std::string(name));
    if (it == values->end()) {
      if (!optional) {
        return InvalidArgument("undefined " + std::string(kind) + " '" + std::string(name) +
                               "' in " + std::string(whole) + "; " + NamesOf(*values, kind));
      }
      *missing = true;
    } else {
      out->append(it->second);
    }
    pos = close + kCloseRef.size();
  }
}

}  // namespace

StatusOr<std::string> SubstituteCommand(const std::string& command,
                                        const std::map<std::string, std::string>& inputs,
                                        const std::map<std::string, std::string>& outputs) {
  std::string_view text = command;
  std::string out;
  size_t pos = 0;
  for (;;) {
    size_t open = text.find(kOpenOptional, pos);
    std::string_view plain = text.substr(pos, open == std::string_view::npos ? open : open - pos);
    bool unused = false;
    TY_RETURN_IF_ERROR(ExpandReferences(plain, inputs, outputs, /*optional=*/false, &out, &unused));
    if (open == std::string_view::npos) return out;
    size_t body = open + kOpenOptional.size();
    size_t close = text.find(kCloseOptional, body);
    if (close == std::string_view::npos) {
      return InvalidArgument("unterminated '$[[' in command (no closing ']]'): '" +
                             Excerpt(text, open) + "'");
    }
    std::string_view inner = text.substr(body, close - body);
    if (inner.find(kOpenOptional) != std::string_view::npos) {
      return InvalidArgument("nested '$[[' in command: '" + Excerpt(text, open) +
                             "'; optional parts cannot contain optional parts");
    }
    std::string expanded;
    bool missing = false;
    TY_RETURN_IF_ERROR(
        ExpandReferences(inner, inputs, outputs, /*optional=*/true, &expanded, &missing));
    if (!missing) out += expanded;
    pos = close + kCloseOptional.size();
  }
}

StatusOr<std::int64_t> ParseByteSize(const std::string& text) {
  auto bad = [&](std::string_view why) {
    return InvalidArgument("bad size '" + text + "': " + std::string(why) +
                           " (examples: 2g, 512m, 64k, 1.5g, 1073741824)");
  };
  std::string_view s = Trim(text);
  if (s.empty()) return bad("empty");
  size_t i = 0;
  std::uint64_t whole = 0;
  size_t whole_digits = 0;
  constexpr std::uint64_t kMax =
      static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    std::uint64_t digit = static_cast<std::uint64_t>(s[i] - '0');
    if (whole > (kMax - digit) / 10) return bad("too large");
    whole = whole * 10 + digit;
    ++i;
    ++whole_digits;
  }
  if (whole_digits == 0) {
    return bad(s[0] == '-' ? "must not be negative" : "must start with a number");
  }
  std::uint64_t fraction = 0;
  std::uint64_t fraction_scale = 1;
  if (i < s.size() && s[i] == '.') {
    ++i;
    size_t fraction_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (fraction_digits < 9) {  // more precision than a byte count can use is ignored
        fraction = fraction * 10 + static_cast<std::uint64_t>(s[i] - '0');
        fraction_scale *= 10;
      }
      ++i;
      ++fraction_digits;
    }
    if (fraction_digits == 0) return bad("a digit must follow '.'");
  }
  if (i < s.size() && s[i] == ' ') ++i;
  std::string unit;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    unit += c;
  }
  std::uint64_t multiplier = 1;
  std::string_view u = unit;
  if (!u.empty() && u != "b") {
    switch (u[0]) {
      case 'k':
        multiplier = 1ULL << 10;
        break;
      case 'm':
        multiplier = 1ULL << 20;
        break;
      case 'g':
        multiplier = 1ULL << 30;
        break;
      case 't':
        multiplier = 1ULL << 40;
        break;
      case 'p':
        multiplier = 1ULL << 50;
        break;
      default:
        return bad("unknown unit '" + unit + "'; use b, k, m, g, t or p");
    }
    u.remove_prefix(1);
    if (u == "i" || u == "ib" || u == "b") u = {};
    if (!u.empty()) return bad("unknown unit '" + unit + "'; use b, k, m, g, t or p");
  }
  if (fraction != 0 && multiplier == 1) return bad("a number of bytes must be whole");
  if (whole > kMax / multiplier) return bad("too large");
  std::uint64_t bytes = whole * multiplier;
  // The fractional part, rounded down to whole bytes. fraction < fraction_scale <= 1e9 and
  // multiplier <= 2^50, so the long double product is exact enough for a byte count.
  auto extra = static_cast<std::uint64_t>(
      std::floor(static_cast<long double>(fraction) * static_cast<long double>(multiplier) /
                 static_cast<long double>(fraction_scale)));
  if (bytes > kMax - extra) return bad("too large");
  return static_cast<std::int64_t>(bytes + extra);
}

StatusOr<int> ParsePriority(const std::string& text) {
  std::string word(Trim(text));
  for (char& c : word) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (word == "low") return kPriorityLow;
  if (word == "medium") return kPriorityMedium;
  if (word == "high") return kPriorityHigh;
  std::string_view digits = word;
  if (!digits.empty() && digits[0] == '+') digits.remove_prefix(1);
  int value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() ||
      value < kMinPriority || value > kMaxPriority) {
    return InvalidArgument("bad priority '" + text +
                           "': use low, medium, high or an integer from -1000 to 1000");
  }
  return value;
}

}  // namespace trainyard::spec

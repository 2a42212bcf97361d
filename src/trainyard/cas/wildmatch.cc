#include "trainyard/cas/wildmatch.h"

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace trainyard::cas {
namespace {

// Outcomes of one matching attempt. The two "give up" outcomes let an outer `*` stop trying
// further positions when no later position could succeed; git's results depend on them, so
// they are kept exactly.
enum class Outcome {
  kMatch,
  kNoMatch,
  kGiveUpAll,         // the text ran out (or the pattern is malformed): nothing later can match
  kGiveUpToStarStar,  // a single `*` hit a '/': only an enclosing `**` may try further
};

// Reads a byte of `s`, with 0 past the end (the C string terminator git's matcher relies on).
unsigned char ByteAt(std::string_view s, size_t i) {
  return i < s.size() ? static_cast<unsigned char>(s[i]) : 0;
}

bool IsGlobSpecial(unsigned char c) { return c == '*' || c == '?' || c == '[' || c == '\\'; }

// Character classes as git's locale-independent ctype defines them (ASCII only).
bool InClass(std::string_view name, unsigned char c, bool* known) {
  *known = true;
  const bool upper = c >= 'A' && c <= 'Z';
  const bool lower = c >= 'a' && c <= 'z';
  const bool digit = c >= '0' && c <= '9';
  const bool print = c >= 0x20 && c <= 0x7e;
  if (name == "alnum") return upper || lower || digit;
  if (name == "alpha") return upper || lower;
  if (name == "blank") return c == ' ' || c == '\t';
  if (name == "cntrl") return c < 0x20 || c == 0x7f;
  if (name == "digit") return digit;
  if (name == "graph") return print && c != ' ';
  if (name == "lower") return lower;
  if (name == "print") return print;
  if (name == "punct") return print && c != ' ' && !upper && !lower && !digit;
  if (name == "space") return c == ' ' || c == '\t' || c == '\n' || c == '\r';
  if (name == "upper") return upper;
  if (name == "xdigit") return digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  *known = false;
  return false;
}

class Matcher {
 public:
  Matcher(std::string_view pattern, std::string_view text, bool path_mode)
      : pat_(pattern), text_(text), path_mode_(path_mode) {}

  Outcome Run(size_t p, size_t t) const;

 private:
  // Run(p, t) from a star: after kMemoAfter such calls, each position pair's outcome is kept.
  Outcome RunFromStar(size_t p, size_t t) const;
  Outcome Star(size_t& p, size_t& t, bool* advance) const;
  // Matches the bracket expression starting at pat_[p] == '[' against `c`. On return `p` is
  // the index of the closing ']'. Returns kGiveUpAll for an unterminated or malformed class.
  Outcome Bracket(size_t& p, unsigned char c) const;

  std::string_view pat_;
  std::string_view text_;
  bool path_mode_;
  // Most matches try a handful of star positions and never allocate.
  static constexpr std::size_t kMemoAfter = 64;
  // A table while it stays small (every pair), else a map of the pairs tried.
  static constexpr std::size_t kMaxMemoTable = std::size_t{1} << 22;
  mutable std::size_t star_calls_ = 0;
  mutable std::vector<std::uint8_t> memo_table_;  // outcome + 1; 0: not known yet
  mutable std::unordered_map<std::uint64_t, Outcome> memo_map_;
};

Outcome Matcher::RunFromStar(size_t p, size_t t) const {
  if (++star_calls_ <= kMemoAfter) return Run(p, t);
  const std::size_t columns = text_.size() + 1;
  const std::size_t cells = (pat_.size() + 1) * columns;
  if (cells <= kMaxMemoTable) {
    if (memo_table_.empty()) memo_table_.assign(cells, 0);
    std::uint8_t& slot = memo_table_[p * columns + t];
    if (slot == 0) slot = static_cast<std::uint8_t>(static_cast<int>(Run(p, t)) + 1);
    return static_cast<Outcome>(slot - 1);
  }
  const std::uint64_t key = (static_cast<std::uint64_t>(p) << 32) | t;
  if (auto it = memo_map_.find(key); it != memo_map_.end()) return it->second;
  const Outcome o = Run(p, t);
  memo_map_.emplace(key, o);
  return o;
}

Outcome Matcher::Run(size_t p, size_t t) const {
  for (; p < pat_.size(); ++p, ++t) {
    const unsigned char pc = ByteAt(pat_, p);
    const unsigned char tc = ByteAt(text_, t);
    if (tc == 0 && pc != '*') return Outcome::kGiveUpAll;
    switch (pc) {
      case '?':
        if (path_mode_ && tc == '/') return Outcome::kNoMatch;
        break;
      case '[': {
        Outcome o = Bracket(p, tc);
        if (o != Outcome::kMatch) return o;
        break;
      }
      case '*': {
        bool advance = false;
        Outcome o = Star(p, t, &advance);
        if (!advance) return o;
        break;
      }
      case '\\': {
        ++p;  // The escaped byte must equal the text byte; a trailing '\' never matches.
        if (ByteAt(pat_, p) != tc) return Outcome::kNoMatch;
        break;
      }
      default:
        if (pc != tc) return Outcome::kNoMatch;
        break;
    }
  }
  return t < text_.size() ? Outcome::kNoMatch : Outcome::kMatch;
}

// Handles a run of stars at pat_[p]. Either returns a final outcome (`*advance` false) or
// positions p and t on a '/' pair that the caller's loop consumes (`*advance` true).
Outcome Matcher::Star(size_t& p, size_t& t, bool* advance) const {
  const size_t first_star = p;
  ++p;
  bool crosses_slash;
  if (ByteAt(pat_, p) == '*') {
    while (ByteAt(pat_, p) == '*') ++p;
    if (!path_mode_) {
      crosses_slash = true;
    } else {
      const bool starts_segment = first_star == 0 || pat_[first_star - 1] == '/';
      const unsigned char next = ByteAt(pat_, p);
      const bool ends_segment =
          next == 0 || next == '/' || (next == '\\' && ByteAt(pat_, p + 1) == '/');
      if (starts_segment && ends_segment) {
        // "**/" may match no folder at all: try the rest right here first.
        if (next == '/' && RunFromStar(p + 1, t) == Outcome::kMatch) return Outcome::kMatch;
        crosses_slash = true;
      } else {
        crosses_slash = false;  // A "**" inside a name is a plain "*".
      }
    }
  } else {
    crosses_slash = !path_mode_;
  }

  const unsigned char next = ByteAt(pat_, p);
  if (next == 0) {
    // A trailing star: "**" takes the rest; "*" only when no '/' remains.
    if (!crosses_slash && text_.find('/', t) != std::string_view::npos) {
      return Outcome::kNoMatch;
    }
    return Outcome::kMatch;
  }
  if (!crosses_slash && next == '/') {
    // "*/": the star takes the rest of this path segment.
    size_t slash = text_.find('/', t);
    if (slash == std::string_view::npos) return Outcome::kNoMatch;
    t = slash;
    *advance = true;
    return Outcome::kMatch;
  }

  unsigned char tc = ByteAt(text_, t);
  while (tc != 0) {
    if (!IsGlobSpecial(next)) {
      // Skip ahead to the next occurrence of the literal that follows the star.
      while ((tc = ByteAt(text_, t)) != 0 && (crosses_slash || tc != '/')) {
        if (tc == next) break;
        ++t;
      }
      if (tc != next) return Outcome::kNoMatch;
    }
    Outcome o = RunFromStar(p, t);
    if (o != Outcome::kNoMatch) {
      if (!crosses_slash || o != Outcome::kGiveUpToStarStar) return o;
    } else if (!crosses_slash && tc == '/') {
      return Outcome::kGiveUpToStarStar;
    }
    ++t;
    tc = ByteAt(text_, t);
  }
  return Outcome::kGiveUpAll;
}

Outcome Matcher::Bracket(size_t& p, unsigned char c) const {
  ++p;
  unsigned char pc = ByteAt(pat_, p);
  if (pc == '^') pc = '!';
  const bool negated = pc == '!';
  if (negated) {
    ++p;
    pc = ByteAt(pat_, p);
  }
  unsigned char prev = 0;
  bool matched = false;
  // The first byte after '[' (or "[!") is part of the set even when it is ']'.
  do {
    if (pc == 0) return Outcome::kGiveUpAll;
    if (pc == '\\') {
      ++p;
      pc = ByteAt(pat_, p);
      if (pc == 0) return Outcome::kGiveUpAll;
      if (c == pc) matched = true;
    } else if (pc == '-' && prev != 0 && ByteAt(pat_, p + 1) != 0 && ByteAt(pat_, p + 1) != ']') {
      ++p;
      pc = ByteAt(pat_, p);
      if (pc == '\\') {
        ++p;
        pc = ByteAt(pat_, p);
        if (pc == 0) return Outcome::kGiveUpAll;
      }
      if (c >= prev && c <= pc) matched = true;
      pc = 0;  // A range end cannot start another range.
    } else if (pc == '[' && ByteAt(pat_, p + 1) == ':') {
      const size_t name_start = p + 2;
      size_t q = name_start;
      while (ByteAt(pat_, q) != 0 && ByteAt(pat_, q) != ']') ++q;
      if (ByteAt(pat_, q) == 0) return Outcome::kGiveUpAll;
      if (q == name_start || pat_[q - 1] != ':') {
        // Not "[:name:]": the '[' is an ordinary member.
        pc = '[';
        if (c == pc) matched = true;
      } else {
        bool known = false;
        if (InClass(pat_.substr(name_start, q - 1 - name_start), c, &known)) matched = true;
        if (!known) return Outcome::kGiveUpAll;
        p = q;
        pc = 0;
      }
    } else if (c == pc) {
      matched = true;
    }
    prev = pc;
    ++p;
    pc = ByteAt(pat_, p);
  } while (pc != ']');
  if (matched == negated || (path_mode_ && c == '/')) return Outcome::kNoMatch;
  return Outcome::kMatch;
}

}  // namespace

bool WildMatch(std::string_view pattern, std::string_view text, bool path_mode) {
  int star_runs = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '*' && (i == 0 || pattern[i - 1] != '*')) ++star_runs;
  }
  if (star_runs > kMaxStarRuns) return false;
  return Matcher(pattern, text, path_mode).Run(0, 0) == Outcome::kMatch;
}

}  // namespace trainyard::cas

#include "trainyard/cas/wildmatch.h"

#include <cstddef>
#include <cstdint>
#include <optional>
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
  std::size_t steps() const { return steps_; }

 private:
  // Run(p, t) from a star: after kMemoAfter such calls, each position pair's outcome is kept.
  Outcome RunFromStar(size_t p, size_t t) const;
  Outcome Star(size_t& p, size_t& t, bool* advance) const;
  // The scan of a star run whose pattern continues at `p`, from text position `t`: tries the
  // rest of the pattern at t, t + 1, ... as git's matcher does, and returns its outcome.
  Outcome Scan(size_t p, size_t t, bool crosses_slash) const;
  // Matches the bracket expression starting at pat_[p] == '[' against `c`. On return `p` is
  // the index of the closing ']'. Returns kGiveUpAll for an unterminated or malformed class.
  Outcome Bracket(size_t& p, unsigned char c) const;
  // The index of the first '/' at or after `t`, or npos.
  size_t NextSlash(size_t t) const;

  bool Remembering() const { return star_calls_ > kMemoAfter; }
  // What is known of (p, t): `scan` selects the outcome of Scan rather than of Run.
  std::optional<Outcome> Known(size_t p, size_t t, bool scan) const;
  void Remember(size_t p, size_t t, bool scan, Outcome o) const;
  // Outcomes live in memo_table_ (cell Cell(p, t)) while it stays small, else in memo_map_
  // (key MapKey(p, t, scan)).
  bool InTable() const { return (pat_.size() + 1) * (text_.size() + 1) <= kMaxMemoTable; }
  std::size_t Cell(size_t p, size_t t) const { return p * (text_.size() + 1) + t; }
  static std::uint64_t MapKey(size_t p, size_t t, bool scan) {
    return (static_cast<std::uint64_t>(p) << 33) | (static_cast<std::uint64_t>(t) << 1) |
           (scan ? 1 : 0);
  }

  std::string_view pat_;
  std::string_view text_;
  bool path_mode_;
  // Most matches try a handful of star positions and never allocate. Past that, every
  // (pattern, text) position pair is evaluated at most once for Run and once for Scan, and a
  // scan stops at the first position already known, so a match costs O(|pattern| * |text|).
  static constexpr std::size_t kMemoAfter = 64;
  // A table while it stays small (every pair), else a map of the pairs tried.
  static constexpr std::size_t kMaxMemoTable = std::size_t{1} << 22;
  mutable std::size_t star_calls_ = 0;
  mutable std::size_t steps_ = 0;  // pattern bytes and scan positions visited
  // Per cell: Run's outcome + 1 in the low nibble, Scan's in the high one; 0: not known yet.
  mutable std::vector<std::uint8_t> memo_table_;
  mutable std::unordered_map<std::uint64_t, Outcome> memo_map_;
  mutable std::vector<std::uint32_t> next_slash_;  // filled once remembering starts
};

std::optional<Outcome> Matcher::Known(size_t p, size_t t, bool scan) const {
  if (InTable()) {
    if (memo_table_.empty()) return std::nullopt;
    const std::uint8_t cell = memo_table_[Cell(p, t)];
    const int v = scan ? cell >> 4 : cell & 0xf;
    if (v == 0) return std::nullopt;
    return static_cast<Outcome>(v - 1);
  }
  if (auto it = memo_map_.find(MapKey(p, t, scan)); it != memo_map_.end()) return it->second;
  return std::nullopt;
}

void Matcher::Remember(size_t p, size_t t, bool scan, Outcome o) const {
  if (InTable()) {
    if (memo_table_.empty()) memo_table_.assign((pat_.size() + 1) * (text_.size() + 1), 0);
    std::uint8_t& cell = memo_table_[Cell(p, t)];
    const auto v = static_cast<std::uint8_t>(static_cast<int>(o) + 1);
    cell = scan ? static_cast<std::uint8_t>((cell & 0x0f) | (v << 4))
                : static_cast<std::uint8_t>((cell & 0xf0) | v);
    return;
  }
  memo_map_.emplace(MapKey(p, t, scan), o);
}

size_t Matcher::NextSlash(size_t t) const {
  if (!Remembering() || text_.size() >= UINT32_MAX) return text_.find('/', t);
  if (next_slash_.empty()) {
    next_slash_.resize(text_.size() + 1);
    std::uint32_t next = UINT32_MAX;
    for (size_t i = text_.size() + 1; i-- > 0;) {
      if (i < text_.size() && text_[i] == '/') next = static_cast<std::uint32_t>(i);
      next_slash_[i] = next;
    }
  }
  if (t > text_.size()) return std::string_view::npos;
  const std::uint32_t at = next_slash_[t];
  return at == UINT32_MAX ? std::string_view::npos : at;
}

Outcome Matcher::RunFromStar(size_t p, size_t t) const {
  if (++star_calls_ <= kMemoAfter) return Run(p, t);
  if (auto known = Known(p, t, false)) return *known;
  const Outcome o = Run(p, t);
  Remember(p, t, false, o);
  return o;
}

Outcome Matcher::Run(size_t p, size_t t) const {
  for (; p < pat_.size(); ++p, ++t) {
    ++steps_;
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
    if (!crosses_slash && NextSlash(t) != std::string_view::npos) {
      return Outcome::kNoMatch;
    }
    return Outcome::kMatch;
  }
  if (!crosses_slash && next == '/') {
    // "*/": the star takes the rest of this path segment.
    const size_t slash = NextSlash(t);
    if (slash == std::string_view::npos) return Outcome::kNoMatch;
    t = slash;
    *advance = true;
    return Outcome::kMatch;
  }

  return Scan(p, t, crosses_slash);
}

// Git's star loop, position by position. With a literal after the star, positions that are
// not that literal are skipped (a '/' ends the skip for a single `*`); running off the end
// while skipping is kNoMatch, after a failed try it is kGiveUpAll. Every position of one scan
// shares the scan's outcome, so once remembering has started the whole stretch walked is
// recorded and a later scan of the same star stops where it meets it.
Outcome Matcher::Scan(size_t p, size_t t, bool crosses_slash) const {
  if (t >= text_.size()) return Outcome::kGiveUpAll;
  const unsigned char next = ByteAt(pat_, p);
  const bool literal = !IsGlobSpecial(next);
  const size_t first = t;
  size_t end = t;  // the scan's outcome holds for every position in [first, end)
  bool skipped = false;
  Outcome result = Outcome::kGiveUpAll;
  for (;; ++t) {
    if (t >= text_.size()) {
      result = skipped ? Outcome::kNoMatch : Outcome::kGiveUpAll;
      end = t;
      break;
    }
    if (Remembering()) {
      if (auto known = Known(p, t, true)) {
        result = *known;
        end = t;
        break;
      }
    }
    end = t + 1;
    ++steps_;
    const unsigned char tc = ByteAt(text_, t);
    if (literal && tc != next) {
      if (!crosses_slash && tc == '/') {
        result = Outcome::kNoMatch;
        break;
      }
      skipped = true;
      continue;
    }
    skipped = false;
    const Outcome o = RunFromStar(p, t);
    if (o != Outcome::kNoMatch) {
      if (!crosses_slash || o != Outcome::kGiveUpToStarStar) {
        result = o;
        break;
      }
    } else if (!crosses_slash && tc == '/') {
      result = Outcome::kGiveUpToStarStar;
      break;
    }
  }
  // Nothing for this star is known but what this scan recorded: the calls above only ever
  // look at later pattern positions.
  if (Remembering()) {
    for (size_t i = first; i < end; ++i) Remember(p, i, true, result);
  }
  return result;
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

namespace {

bool TooManyStarRuns(std::string_view pattern) {
  int star_runs = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '*' && (i == 0 || pattern[i - 1] != '*')) ++star_runs;
  }
  return star_runs > kMaxStarRuns;
}

}  // namespace

bool WildMatch(std::string_view pattern, std::string_view text, bool path_mode) {
  if (TooManyStarRuns(pattern)) return false;
  return Matcher(pattern, text, path_mode).Run(0, 0) == Outcome::kMatch;
}

std::size_t WildMatchSteps(std::string_view pattern, std::string_view text, bool path_mode) {
  if (TooManyStarRuns(pattern)) return 0;
  Matcher m(pattern, text, path_mode);
  (void)m.Run(0, 0);
  return m.steps();
}

}  // namespace trainyard::cas

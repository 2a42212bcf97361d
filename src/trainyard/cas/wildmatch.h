#pragma once

#include <cstddef>
#include <string_view>

namespace trainyard::cas {

// Git's glob matcher, with the behaviour of git's `wildmatch()` (the matcher behind
// .gitignore): `?` and `*` never match '/' in path mode, `**` between slashes (or at either
// end) matches any number of folders, `[...]` classes with ranges, `!`/`^` negation, escapes
// and POSIX `[:name:]` classes, `\` escapes the next character. Case-sensitive.
//
// `path_mode` selects git's WM_PATHNAME flag: true when matching a pattern that contains a
// slash against a relative path, false when matching a slash-free pattern against a base name
// (then `*` and `**` are the same). Pure function; thread-safe. Neither argument may contain a
// NUL byte (a NUL ends the string for git too).
//
// Time is O(|pattern| * |text|) whatever the input (git's matcher backtracks exponentially on
// patterns such as "*a*a*a*b"): once a match has tried many star positions, the outcome of
// each (pattern, text) position pair is remembered, both for the rest of the pattern and for
// a star's scan along the text, so a hostile .gitignore in a cloned repository cannot stall a
// snapshot. A pattern with more than kMaxStarRuns runs of `*` never matches (recursion depth
// is one level per run; no real ignore rule has so many).
inline constexpr int kMaxStarRuns = 256;
bool WildMatch(std::string_view pattern, std::string_view text, bool path_mode);

// The work one WildMatch call does (pattern bytes and star-scan positions visited), for tests
// that hold the bound above.
std::size_t WildMatchSteps(std::string_view pattern, std::string_view text, bool path_mode);

}  // namespace trainyard::cas

#pragma once

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
bool WildMatch(std::string_view pattern, std::string_view text, bool path_mode);

}  // namespace trainyard::cas

#include "trainyard/cas/wildmatch.h"

#include <gtest/gtest.h>

#include <string>

namespace trainyard::cas {
namespace {

struct WildCase {
  const char* pattern;
  const char* text;
  bool path_mode;
  bool expected;
};

// Each row is a behaviour of git's wildmatch that .gitignore files rely on.
constexpr WildCase kWildCases[] = {
    {"foo", "foo", true, true},
    {"foo", "fo", true, false},
    {"foo", "foobar", true, false},
    // '*' stays inside one path segment in path mode, and crosses '/' otherwise.
    {"*", "foo", true, true},
    {"*", "foo/bar", true, false},
    {"*", "foo/bar", false, true},
    {"*", "", true, true},
    {"f*o", "fo", true, true},
    {"*.txt", "dir/a.txt", true, false},
    {"a/*/b", "a/x/b", true, true},
    {"a/*/b", "a/x/y/b", true, false},
    {"a/*", "a/", true, true},
    // '?' is one byte, never '/' in path mode.
    {"?", "a", true, true},
    {"?", "/", true, false},
    {"?", "/", false, true},
    {"??", "a", true, false},
    // "**" forms.
    {"**", "foo/bar/baz", true, true},
    {"**/foo", "foo", true, true},
    {"**/foo", "a/b/foo", true, true},
    {"**/foo", "afoo", true, false},
    {"foo/**", "foo/a/b", true, true},
    {"foo/**", "foo", true, false},
    {"foo/**/bar", "foo/bar", true, true},
    {"foo/**/bar", "foo/x/y/bar", true, true},
    {"foo/**/bar", "foo/xbar", true, false},
    {"**/*.txt", "dir/sub/a.txt", true, true},
    // "**" not bounded by slashes is a plain '*'.
    {"foo**bar", "fooxbar", true, true},
    {"foo**bar", "foo/bar", true, false},
    {"a/**b", "a/xb", true, true},
    {"a/**b", "a/x/b", true, false},
    // Bracket expressions.
    {"[a-c]x", "bx", true, true},
    {"[a-c]x", "dx", true, false},
    {"[!a-c]x", "dx", true, true},
    {"[^a-c]x", "ax", true, false},
    {"[]]", "]", true, true},
    {"[!]]", "a", true, true},
    {"[!]]", "]", true, false},
    {"[a-]", "-", true, true},
    {"[\\]]", "]", true, true},
    {"[/]", "/", true, false},
    {"[[:digit:]]", "5", true, true},
    {"[[:digit:]]", "a", true, false},
    {"[[:alpha:][:digit:]]x", "7x", true, true},
    {"[[:upper:]]", "a", true, false},
    {"[[:space:]]", "\t", true, true},
    {"[[:punct:]]", "_", true, true},
    {"[[:xdigit:]]", "F", true, true},
    {"[[:bogus:]]", "b", true, false},  // Unknown class: never matches.
    {"[a-", "a", true, false},          // Unterminated: never matches.
    {"[[:x]", "[", true, true},         // Not a class: '[', ':', 'x' are members.
    // Escapes.
    {"\\*", "*", true, true},
    {"\\*", "x", true, false},
    {"\\#x", "#x", true, true},
    {"x\\ y", "x y", true, true},
    {"foo\\", "foo\\", true, false},  // A trailing backslash never matches.
    {"foo\\", "foo", true, false},
    // Bytes are compared as bytes (no case folding).
    {"Foo", "foo", true, false},
    {"caf\xc3\xa9", "caf\xc3\xa9", true, true},
    {"caf?", "caf\xe9", true, true},
};

TEST(WildMatchTest, Table) {
  for (const WildCase& c : kWildCases) {
    EXPECT_EQ(WildMatch(c.pattern, c.text, c.path_mode), c.expected)
        << "pattern '" << c.pattern << "' text '" << c.text << "' path_mode " << c.path_mode;
  }
}

TEST(WildMatchTest, LongStarRunsFinish) {
  // Backtracking stays cheap: the "give up" outcomes stop hopeless searches early.
  std::string pattern;
  for (int i = 0; i < 20; ++i) pattern += "*a";
  pattern += "b";
  std::string text(200, 'a');
  EXPECT_FALSE(WildMatch(pattern, text, true));
  EXPECT_FALSE(WildMatch(pattern, text, false));
}

TEST(WildMatchTest, MismatchesBehindManyStarsStayPolynomial) {
  // A literal that fails before the text's end gives no "give up": git's matcher then tries
  // every combination of star positions (over 100 s for this one before positions were
  // remembered; found by the ignore fuzz target).
  std::string pattern;
  for (int i = 0; i < 12; ++i) pattern += "*a";
  pattern += "'x";
  const std::string text = std::string(400, 'a') + "'y";
  EXPECT_FALSE(WildMatch(pattern, text, true));
  EXPECT_FALSE(WildMatch(pattern, text, false));
  EXPECT_TRUE(WildMatch(pattern, std::string(400, 'a') + "'x", true));
  // Past kMaxStarRuns a pattern never matches, however deep its stars would recurse.
  std::string deep;
  for (int i = 0; i <= kMaxStarRuns; ++i) deep += "*a";
  EXPECT_FALSE(WildMatch(deep, std::string(kMaxStarRuns + 1, 'a'), true));
  deep.resize(deep.size() - 4);
  EXPECT_TRUE(WildMatch(deep, std::string(kMaxStarRuns + 1, 'a'), true));
}

TEST(WildMatchTest, WorkIsBoundedByPatternTimesText) {
  // Remembering only (pattern, text) pairs left each star's scan along the text to be walked
  // again from every position that reached it: O(P * T^2), 1-2 s under the sanitizers for a
  // 256-byte .gitignore line against a 600-byte path. Scans share their outcome now.
  for (const int stars : {12, 100, kMaxStarRuns}) {
    for (const std::size_t len : {400u, 4000u}) {
      std::string pattern;
      for (int i = 0; i < stars; ++i) pattern += "*a";
      pattern += "'x";
      const std::string text = std::string(len, 'a') + "'y";
      const std::size_t bound = 4 * (pattern.size() + 1) * (text.size() + 1);
      for (const bool path_mode : {true, false}) {
        EXPECT_FALSE(WildMatch(pattern, text, path_mode));
        EXPECT_LE(WildMatchSteps(pattern, text, path_mode), bound)
            << stars << " stars, " << len << " bytes, path_mode " << path_mode;
      }
      // The same through "**" runs and folders (path mode lets "**/" cross them).
      std::string deep;
      for (int i = 0; i < stars / 2; ++i) deep += "**/a*";
      deep += "'x";
      std::string path;
      while (path.size() < len) path += "a/";
      path += "'y";
      EXPECT_FALSE(WildMatch(deep, path, true));
      EXPECT_LE(WildMatchSteps(deep, path, true), 4 * (deep.size() + 1) * (path.size() + 1))
          << stars << " stars over folders, " << len << " bytes";
    }
  }
}

}  // namespace
}  // namespace trainyard::cas

#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::cas {

// The per-folder ignore files, in order of preference: in each folder `.amlignore` is used
// when it exists, otherwise `.gitignore`. Only regular files count; a symlinked ignore file is
// not followed (as git does for in-tree ignore files).
inline constexpr std::string_view kAmlIgnoreName = ".amlignore";
inline constexpr std::string_view kGitIgnoreName = ".gitignore";

// Ignore rules with git's gitignore semantics, exactly (checked against `git check-ignore` by
// the tests):
//   - blank lines and lines starting with '#' are skipped; a leading UTF-8 BOM and a CR before
//     the LF are dropped; trailing spaces are trimmed unless escaped ("\ ");
//   - '!' negates; "\!" and "\#" match a literal '!' / '#';
//   - a trailing '/' matches folders only; a pattern with another '/' (leading or in the
//     middle) is anchored to the folder of its ignore file, one without matches a base name
//     at any depth below that folder;
//   - `*`, `?`, `[a-z]`, `[!x]`, `**/`, `/**`, `/**/` as git's wildmatch (see wildmatch.h);
//   - a deeper folder's file wins over a shallower one; within a file the last match wins;
//   - a path inside an excluded folder is excluded whatever later rules say, and the rule that
//     excluded the folder is the one reported;
//   - any entry named `.git` is always excluded (rule "(built-in): .git").
// Paths are relative to the snapshot root, '/'-separated, without a leading or trailing '/',
// and are compared byte for byte (no case folding, no Unicode normalisation).
//
// A value type. Not thread-safe while AddFile runs; the const methods may run concurrently.
class IgnoreRules {
 public:
  // Which rule decided a path.
  struct Match {
    bool ignored = false;
    // The ignore file ("src/.gitignore"), or "(built-in)" for `.git`; empty when no rule
    // matched (then the path is not ignored).
    std::string source;
    int line = 0;         // 1-based line in `source`; 0 for the built-in rule.
    std::string pattern;  // The pattern as written, after trimming (e.g. "!keep.txt").

    bool matched() const { return !source.empty(); }
    // "src/.gitignore:3: *.ckpt", "(built-in): .git", or "" when no rule matched.
    std::string Describe() const;
  };

  IgnoreRules() = default;

  // Adds the rules of one ignore file found in folder `dir_rel` ("" for the root; a trailing
  // '/' is accepted). `source_name` names the file in Match results ("src/.amlignore"). At
  // most one file per folder: a second call for the same folder replaces the first.
  void AddFile(std::string_view dir_rel, std::string_view file_text, std::string source_name);

  // Whether `rel_path` is ignored, with git's full semantics including excluded parent
  // folders. `is_dir` says whether the path itself is a folder (for "x/" patterns).
  Match IsIgnored(std::string_view rel_path, bool is_dir) const;

  // Like IsIgnored, but assumes no parent folder of `rel_path` is excluded. For walkers that
  // do not descend into excluded folders; cheaper.
  Match MatchEntry(std::string_view rel_path, bool is_dir) const;

  // True when no ignore file was added.
  bool empty() const { return lists_.empty(); }

  // Loads the rules of every folder under `root` that is not itself excluded (excluded folders
  // are not entered, as git does). Errors: NotFound when `root` is missing, PermissionDenied
  // or Internal when a folder or ignore file cannot be read.
  static StatusOr<IgnoreRules> FromTree(const std::filesystem::path& root);

 private:
  struct Pattern {
    std::string body;     // After '!' and the trailing '/' are removed.
    std::string written;  // The trimmed line as written.
    int line = 0;
    bool negative = false;
    bool dir_only = false;
    bool base_name_only = false;  // No '/' in body: matched against the base name.
    size_t literal_prefix = 0;    // Length of the wildcard-free prefix of `body`.
  };
  struct PatternList {
    std::string base;  // The folder with a trailing '/', or "" for the root.
    std::string source;
    std::vector<Pattern> patterns;
  };

  // The last pattern of `list` that matches, or nullptr.
  static const Pattern* LastMatch(const PatternList& list, std::string_view path,
                                  std::string_view base_name, bool is_dir);
  // Matches `path` against the lists of its parent folders, deepest first.
  Match MatchAgainstLists(std::string_view path, bool is_dir) const;

  // Keyed by folder without the trailing '/' ("" for the root).
  std::map<std::string, PatternList, std::less<>> lists_;
};

// Reads the ignore file of folder `dir_abs` (relative path `dir_rel`, "" for the root) into
// `rules`: `.amlignore` when it is a regular file, else `.gitignore` when it is one. OK and no
// change when there is neither. Errors: PermissionDenied / Internal naming the file when it
// exists but cannot be read.
Status AddIgnoreFileOf(const std::filesystem::path& dir_abs, std::string_view dir_rel,
                       IgnoreRules& rules);

}  // namespace trainyard::cas

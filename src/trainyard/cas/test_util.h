#pragma once

// Helpers for the cas tests.

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace trainyard::cas::testing {

// A fresh folder under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  // `prefer_memory`: use /dev/shm (tmpfs) when it is usable, for tests that create and delete
  // many small files and do not care about the disk (ten times faster on a busy disk).
  explicit TempDir(bool prefer_memory = false);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  bool in_memory() const { return in_memory_; }
  std::filesystem::path operator/(std::string_view rel) const { return path_ / rel; }

 private:
  std::filesystem::path path_;
  bool in_memory_ = false;
};

// Writes `content` to `path`, creating parent folders; aborts the test binary on failure.
void WriteText(const std::filesystem::path& path, std::string_view content);
// Reads a whole file; returns "<unreadable>" on failure.
std::string ReadText(const std::filesystem::path& path);
// Runs `command` with /bin/sh; returns its exit status (or -1 when it did not exit normally).
int RunShell(const std::string& command);
// Number of regular files below `dir` (recursively).
size_t CountFiles(const std::filesystem::path& dir);

// What `git check-ignore -v -n` reports for one path.
struct GitVerdict {
  std::string source;  // ".gitignore", "sub/.gitignore"; "" when no pattern matched.
  int line = 0;
  std::string pattern;  // As git prints it (with '!' and trailing '/').
  bool ignored() const { return !pattern.empty() && pattern[0] != '!'; }
};

// Runs git with a clean configuration (no system or global config) in
// `repo`. `args` is appended to "git -C <repo>" verbatim (the caller quotes).
// Returns the exit status.
int RunGit(const std::filesystem::path& repo, const std::string& args);
// True when TRAINYARD_REQUIRE_SERVICES=1: a missing tool or service must fail, not skip.
bool ServicesRequired();
// True when a `git` binary can be run.
bool GitAvailable();
// `git init` with no template, in an existing folder.
bool GitInit(const std::filesystem::path& repo);
// Asks `git check-ignore --no-index -v -n -z --stdin` about `paths` (relative to `repo`).
// Returns false and sets *error when git fails.
bool GitCheckIgnore(const std::filesystem::path& repo, const std::vector<std::string>& paths,
                    std::map<std::string, GitVerdict>* out, std::string* error);
// The untracked, not ignored files git sees (`git ls-files -o --exclude-standard -z`).
bool GitListIncluded(const std::filesystem::path& repo, std::set<std::string>* out,
                     std::string* error);

}  // namespace trainyard::cas::testing

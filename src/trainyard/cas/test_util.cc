#include "trainyard/cas/test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "trainyard/common/util.h"

namespace trainyard::cas::testing {

namespace fs = std::filesystem;

TempDir::TempDir(bool prefer_memory) {
  const char* base = std::getenv("TMPDIR");
  std::string dir = base != nullptr && *base != '\0' ? base : "/tmp";
  if (prefer_memory && ::access("/dev/shm", W_OK | X_OK) == 0) {
    dir = "/dev/shm";
    in_memory_ = true;
  }
  std::string templ = dir + "/trainyard_cas_test_XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Objects are read-only files; their folders are writable, so removal works.
  fs::remove_all(path_, ec);
}

void WriteText(const fs::path& path, std::string_view content) {
  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::abort();
  }
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "<unreadable>";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int RunShell(const std::string& command) {
  int rc = std::system(command.c_str());
  if (rc == -1 || !WIFEXITED(rc)) return -1;
  return WEXITSTATUS(rc);
}

size_t CountFiles(const fs::path& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file(ec) && !it->is_symlink(ec)) ++n;
  }
  return n;
}

namespace {

std::vector<std::string> SplitNul(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find('\0', start);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

}  // namespace

int RunGit(const fs::path& repo, const std::string& args) {
  // HOME points at the repo's parent, an empty temp folder: no global excludes file.
  const std::string home = ShellQuote(repo.parent_path().string());
  return RunShell("HOME=" + home + " XDG_CONFIG_HOME=" + home + " GIT_CONFIG_NOSYSTEM=1 git -C " +
                  ShellQuote(repo.string()) + " " + args);
}

bool ServicesRequired() {
  const char* v = std::getenv("TRAINYARD_REQUIRE_SERVICES");
  return v != nullptr && std::string_view(v) == "1";
}

bool GitAvailable() { return RunShell("git --version >/dev/null 2>&1") == 0; }

bool GitInit(const fs::path& repo) {
  std::error_code ec;
  fs::create_directories(repo, ec);
  return RunGit(repo, "init -q --template= . >/dev/null 2>&1") == 0;
}

bool GitCheckIgnore(const fs::path& repo, const std::vector<std::string>& paths,
                    std::map<std::string, GitVerdict>* out, std::string* error) {
  const fs::path in = repo.parent_path() / "check-ignore.in";
  const fs::path result = repo.parent_path() / "check-ignore.out";
  std::string input;
  for (const std::string& p : paths) {
    input += p;
    input += '\0';
  }
  WriteText(in, input);
  int rc = RunGit(repo, "check-ignore --no-index -v -n -z --stdin <" + ShellQuote(in.string()) +
                            " >" + ShellQuote(result.string()) + " 2>&1");
  std::string text = ReadText(result);
  // 0: some path ignored, 1: none ignored.
  if (rc != 0 && rc != 1) {
    *error = "git check-ignore exited with " + std::to_string(rc) + ": " + text;
    return false;
  }
  std::vector<std::string> fields = SplitNul(text);
  if (fields.size() % 4 != 0) {
    *error = "unexpected git check-ignore output: " + text;
    return false;
  }
  for (size_t i = 0; i < fields.size(); i += 4) {
    GitVerdict v;
    v.source = fields[i];
    v.line = fields[i + 1].empty() ? 0 : std::stoi(fields[i + 1]);
    v.pattern = fields[i + 2];
    (*out)[fields[i + 3]] = v;
  }
  return true;
}

bool GitListIncluded(const fs::path& repo, std::set<std::string>* out, std::string* error) {
  const fs::path result = repo.parent_path() / "ls-files.out";
  int rc = RunGit(repo, "ls-files -o --exclude-standard -z >" + ShellQuote(result.string()));
  if (rc != 0) {
    *error = "git ls-files exited with " + std::to_string(rc);
    return false;
  }
  for (std::string& p : SplitNul(ReadText(result))) out->insert(std::move(p));
  return true;
}

}  // namespace trainyard::cas::testing

#include "trainyard/cas/ignore.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "trainyard/cas/io.h"
#include "trainyard/cas/wildmatch.h"
#include "trainyard/common/fs.h"

namespace trainyard::cas {
namespace {

using internal::ErrnoError;

constexpr std::string_view kBuiltInSource = "(built-in)";
constexpr std::string_view kGitDirName = ".git";

// Drops unescaped trailing spaces (only ' ', not tabs). A line ending in a lone '\' is kept
// as is; that pattern can never match.
std::string_view TrimTrailingSpaces(std::string_view line) {
  size_t first_trailing_space = std::string_view::npos;
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == ' ') {
      if (first_trailing_space == std::string_view::npos) first_trailing_space = i;
      continue;
    }
    if (line[i] == '\\') {
      ++i;
      if (i == line.size()) return line;
    }
    first_trailing_space = std::string_view::npos;
  }
  return line.substr(0, first_trailing_space);
}

// Length of the leading part of `s` with no glob character.
size_t LiteralPrefixLength(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '*' || c == '?' || c == '[' || c == '\\') return i;
  }
  return s.size();
}

std::string_view BaseName(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

IgnoreRules::Match BuiltInGitMatch() {
  IgnoreRules::Match m;
  m.ignored = true;
  m.source = std::string(kBuiltInSource);
  m.pattern = std::string(kGitDirName);
  return m;
}

Status LoadTree(const std::filesystem::path& dir_abs, const std::string& dir_rel,
                IgnoreRules& rules) {
  TY_RETURN_IF_ERROR(AddIgnoreFileOf(dir_abs, dir_rel, rules));
  DIR* d = ::opendir(dir_abs.c_str());
  if (d == nullptr) return ErrnoError("cannot open folder", dir_abs, errno);
  std::vector<std::string> subdirs;
  errno = 0;
  while (const dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) subdirs.emplace_back(name);
  }
  ::closedir(d);
  for (const std::string& name : subdirs) {
    std::string rel = dir_rel.empty() ? name : dir_rel + "/" + name;
    if (rules.MatchEntry(rel, /*is_dir=*/true).ignored) continue;
    TY_RETURN_IF_ERROR(LoadTree(dir_abs / name, rel, rules));
  }
  return Status::Ok();
}

}  // namespace

std::string IgnoreRules::Match::Describe() const {
  if (source.empty()) return "";
  if (line == 0) return source + ": " + pattern;
  return source + ":" + std::to_string(line) + ": " + pattern;
}

void IgnoreRules::AddFile(std::string_view dir_rel, std::string_view file_text,
                          std::string source_name) {
  while (!dir_rel.empty() && dir_rel.back() == '/') dir_rel.remove_suffix(1);
  PatternList list;
  list.base = dir_rel.empty() ? "" : std::string(dir_rel) + "/";
  list.source = std::move(source_name);

  std::string_view text = file_text;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  int line_number = 0;
  size_t start = 0;
  while (start < text.size()) {
    ++line_number;
    size_t newline = text.find('\n', start);
    size_t end = newline == std::string_view::npos ? text.size() : newline;
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line[0] == '#') continue;
    if (line.back() == '\r') line.remove_suffix(1);
    line = line.substr(0, line.find('\0'));  // git reads each line as a C string.
    line = TrimTrailingSpaces(line);

    Pattern p;
    p.written = std::string(line);
    p.line = line_number;
    std::string_view body = line;
    if (!body.empty() && body[0] == '!') {
      p.negative = true;
      body.remove_prefix(1);
    }
    if (!body.empty() && body.back() == '/') {
      p.dir_only = true;
      body.remove_suffix(1);
    }
    if (body.empty()) continue;  // "", "!", "/" and the like match nothing.
    p.base_name_only = body.find('/') == std::string_view::npos;
    p.literal_prefix = LiteralPrefixLength(body);
    p.body = std::string(body);
    list.patterns.push_back(std::move(p));
  }
  lists_[std::string(dir_rel)] = std::move(list);
}

const IgnoreRules::Pattern* IgnoreRules::LastMatch(const PatternList& list, std::string_view path,
                                                   std::string_view base_name, bool is_dir) {
  for (auto it = list.patterns.rbegin(); it != list.patterns.rend(); ++it) {
    const Pattern& p = *it;
    if (p.dir_only && !is_dir) continue;
    if (p.base_name_only) {
      if (p.literal_prefix == p.body.size() ? base_name == p.body
                                            : WildMatch(p.body, base_name, false)) {
        return &p;
      }
      continue;
    }
    // Anchored: matched against the path relative to the ignore file's folder.
    std::string_view pattern = p.body;
    size_t prefix = p.literal_prefix;
    if (pattern[0] == '/') {
      pattern.remove_prefix(1);
      --prefix;
    }
    if (path.size() <= list.base.size() || path.substr(0, list.base.size()) != list.base) {
      continue;
    }
    std::string_view name = path.substr(list.base.size());
    if (prefix > 0) {
      // Git compares the wildcard-free prefix literally and hands only the rest to wildmatch;
      // that changes what a "**" right after the prefix means, so do the same.
      if (prefix > name.size() || name.substr(0, prefix) != pattern.substr(0, prefix)) continue;
      pattern.remove_prefix(prefix);
      name.remove_prefix(prefix);
      if (pattern.empty() && name.empty()) return &p;
    }
    if (WildMatch(pattern, name, true)) return &p;
  }
  return nullptr;
}

IgnoreRules::Match IgnoreRules::MatchAgainstLists(std::string_view path, bool is_dir) const {
  if (lists_.empty()) return {};
  const std::string_view base_name = BaseName(path);
  size_t end = path.rfind('/');
  for (;;) {
    std::string_view dir = end == std::string_view::npos ? std::string_view() : path.substr(0, end);
    auto it = lists_.find(dir);
    if (it != lists_.end()) {
      if (const Pattern* p = LastMatch(it->second, path, base_name, is_dir)) {
        Match m;
        m.ignored = !p->negative;
        m.source = it->second.source;
        m.line = p->line;
        m.pattern = p->written;
        return m;
      }
    }
    if (end == std::string_view::npos) break;
    end = end == 0 ? std::string_view::npos : path.rfind('/', end - 1);
  }
  return {};
}

IgnoreRules::Match IgnoreRules::MatchEntry(std::string_view rel_path, bool is_dir) const {
  if (BaseName(rel_path) == kGitDirName) return BuiltInGitMatch();
  return MatchAgainstLists(rel_path, is_dir);
}

IgnoreRules::Match IgnoreRules::IsIgnored(std::string_view rel_path, bool is_dir) const {
  // Parent folders first, outermost first: the first excluded one decides.
  for (size_t slash = rel_path.find('/'); slash != std::string_view::npos;
       slash = rel_path.find('/', slash + 1)) {
    Match m = MatchEntry(rel_path.substr(0, slash), /*is_dir=*/true);
    if (m.ignored) return m;
  }
  return MatchEntry(rel_path, is_dir);
}

StatusOr<IgnoreRules> IgnoreRules::FromTree(const std::filesystem::path& root) {
  IgnoreRules rules;
  TY_RETURN_IF_ERROR(LoadTree(root, "", rules));
  return rules;
}

Status AddIgnoreFileOf(const std::filesystem::path& dir_abs, std::string_view dir_rel,
                       IgnoreRules& rules) {
  for (std::string_view name : {kAmlIgnoreName, kGitIgnoreName}) {
    const std::filesystem::path file = dir_abs / name;
    struct stat st {};
    if (::lstat(file.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      return ErrnoError("cannot inspect ignore file", file, errno);
    }
    if (!S_ISREG(st.st_mode)) continue;
    StatusOr<std::string> text = ReadFile(file);
    if (!text.ok()) return text.status().WithPrefix("cannot read ignore file");
    std::string source =
        dir_rel.empty() ? std::string(name) : std::string(dir_rel) + "/" + std::string(name);
    rules.AddFile(dir_rel, *text, std::move(source));
    return Status::Ok();
  }
  return Status::Ok();
}

}  // namespace trainyard::cas

#include "trainyard/cas/ignore.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "trainyard/cas/test_util.h"

namespace trainyard::cas {
namespace {

struct IgnoreFile {
  const char* dir;  // "" for the root.
  const char* text;
};

struct Probe {
  const char* path;
  bool is_dir;
  bool ignored;
  const char* rule;  // Expected Match::Describe(); "" when no rule matches.
};

struct IgnoreCase {
  const char* name;
  std::vector<IgnoreFile> files;
  std::vector<Probe> probes;
};

// Tricky gitignore cases, each checked by hand against git 2.39's `git check-ignore -v`.
const std::vector<IgnoreCase>& Cases() {
  static const auto* cases = new std::vector<IgnoreCase>{
      {"base name at any depth",
       {{"", "*.log\n"}},
       {{"a/b/x.log", false, true, ".gitignore:1: *.log"}, {"x.txt", false, false, ""}}},
      {"leading slash anchors",
       {{"", "/root.txt\n"}},
       {{"root.txt", false, true, ".gitignore:1: /root.txt"}, {"a/root.txt", false, false, ""}}},
      {"middle slash anchors",
       {{"", "doc/frotz\n"}},
       {{"doc/frotz", false, true, ".gitignore:1: doc/frotz"}, {"a/doc/frotz", false, false, ""}}},
      {"trailing slash: folders only, any depth",
       {{"", "frotz/\n"}},
       {{"frotz", true, true, ".gitignore:1: frotz/"},
        {"frotz", false, false, ""},
        {"a/frotz", true, true, ".gitignore:1: frotz/"},
        {"a/frotz/x", false, true, ".gitignore:1: frotz/"}}},
      {"leading **/",
       {{"", "**/foo\n"}},
       {{"foo", false, true, ".gitignore:1: **/foo"},
        {"a/b/foo", false, true, ".gitignore:1: **/foo"},
        {"a/xfoo", false, false, ""}}},
      {"trailing /** matches inside, not the folder",
       {{"", "abc/**\n"}},
       {{"abc", true, false, ""},
        {"abc/x", false, true, ".gitignore:1: abc/**"},
        {"abc/x/y", false, true, ".gitignore:1: abc/**"}}},
      {"middle /**/ matches zero or more folders",
       {{"", "a/**/b\n"}},
       {{"a/b", false, true, ".gitignore:1: a/**/b"},
        {"a/x/y/b", false, true, ".gitignore:1: a/**/b"},
        {"a/xb", false, false, ""}}},
      {"negation re-includes",
       {{"", "*.txt\n!keep.txt\n"}},
       {{"keep.txt", false, false, ".gitignore:2: !keep.txt"},
        {"x.txt", false, true, ".gitignore:1: *.txt"}}},
      {"no re-include below an excluded folder",
       {{"", "build/\n!build/keep.txt\n"}},
       {{"build/keep.txt", false, true, ".gitignore:1: build/"},
        {"build", true, true, ".gitignore:1: build/"}}},
      {"re-include works when only the contents are excluded",
       {{"", "build/*\n!build/keep.txt\n"}},
       {{"build/keep.txt", false, false, ".gitignore:2: !build/keep.txt"},
        {"build/other", false, true, ".gitignore:1: build/*"},
        {"build", true, false, ""}}},
      {"escaped hash; comments",
       {{"", "\\#file\n#comment\n"}},
       {{"#file", false, true, ".gitignore:1: \\#file"}, {"#comment", false, false, ""}}},
      {"escaped bang",
       {{"", "\\!important\n"}},
       {{"!important", false, true, ".gitignore:1: \\!important"}}},
      {"trailing spaces trimmed",
       {{"", "trailing   \n"}},
       {{"trailing", false, true, ".gitignore:1: trailing"}, {"trailing ", false, false, ""}}},
      {"escaped trailing space kept",
       {{"", "space\\ \n"}},
       {{"space ", false, true, ".gitignore:1: space\\ "}, {"space", false, false, ""}}},
      {"tabs are not trimmed",
       {{"", "tab\t\n"}},
       {{"tab", false, false, ""}, {"tab\t", false, true, ".gitignore:1: tab\t"}}},
      {"character class and negated class",
       {{"", "[a-c].txt\n[!a-c].md\n"}},
       {{"b.txt", false, true, ".gitignore:1: [a-c].txt"},
        {"d.txt", false, false, ""},
        {"d.md", false, true, ".gitignore:2: [!a-c].md"},
        {"a.md", false, false, ""}}},
      {"question mark is one character",
       {{"", "?.txt\n"}},
       {{"a.txt", false, true, ".gitignore:1: ?.txt"}, {"ab.txt", false, false, ""}}},
      {"deeper ignore file wins",
       {{"", "*.txt\n"}, {"sub", "!*.txt\n"}},
       {{"sub/a.txt", false, false, "sub/.gitignore:1: !*.txt"},
        {"sub/deeper/a.txt", false, false, "sub/.gitignore:1: !*.txt"},
        {"a.txt", false, true, ".gitignore:1: *.txt"}}},
      {"later line wins",
       {{"", "!a.txt\na.txt\nb.txt\n!b.txt\n"}},
       {{"a.txt", false, true, ".gitignore:2: a.txt"},
        {"b.txt", false, false, ".gitignore:4: !b.txt"}}},
      {"rules apply only below their folder",
       {{"sub", "foo/\n*.o\n"}},
       {{"sub/x/foo", true, true, "sub/.gitignore:1: foo/"},
        {"foo", true, false, ""},
        {"x.o", false, false, ""},
        {"sub/x.o", false, true, "sub/.gitignore:2: *.o"},
        {"subx/x.o", false, false, ""}}},
      {"anchors are relative to the ignore file's folder",
       {{"sub", "/x\ny/z\n"}},
       {{"sub/x", false, true, "sub/.gitignore:1: /x"},
        {"sub/y/x", false, false, ""},
        {"x", false, false, ""},
        {"sub/y/z", false, true, "sub/.gitignore:2: y/z"},
        {"y/z", false, false, ""},
        {"sub/w/y/z", false, false, ""}}},
      {"CRLF line endings",
       {{"", "a.txt\r\nb.txt\r\n"}},
       {{"b.txt", false, true, ".gitignore:2: b.txt"},
        {"a.txt", false, true, ".gitignore:1: a.txt"}}},
      {"UTF-8 BOM skipped",
       {{"",
         "\xEF\xBB\xBF"
         "a.txt\n"}},
       {{"a.txt", false, true, ".gitignore:1: a.txt"}}},
      {"*/ ignores every folder",
       {{"", "*/\n"}},
       {{"d", true, true, ".gitignore:1: */"},
        {"f", false, false, ""},
        {"d/f", false, true, ".gitignore:1: */"}}},
      {"trailing backslash never matches",
       {{"", "foo\\\n"}},
       {{"foo", false, false, ""}, {"foo\\", false, false, ""}}},
      {".git is always excluded",
       {},
       {{".git", true, true, "(built-in): .git"},
        {"a/.git/config", false, true, "(built-in): .git"},
        {".gitx", false, false, ""}}},
      {"negated folder pattern re-includes the folder",
       {{"", "logs/\n!logs/\n"}},
       {{"logs", true, false, ".gitignore:2: !logs/"}, {"logs/a", false, false, ""}}},
      {"a class never matches '/' in an anchored pattern",
       {{"", "a[/]b\n"}},
       {{"a/b", false, false, ""}}},
      {"**/dir/ at any depth",
       {{"", "**/build/\n"}},
       {{"x/build", true, true, ".gitignore:1: **/build/"},
        {"build", true, true, ".gitignore:1: **/build/"},
        {"build", false, false, ""}}},
      {"ignore files inside an excluded folder have no say",
       {{"", "a/\n"}, {"a", "!x\n"}},
       {{"a/x", false, true, ".gitignore:1: a/"}}},
      {"git's literal-prefix quirk: 'dir/foo**/x' acts as 'dir/foo' + '**/x'",
       {{"", "dir/foo**/x\n"}},
       {{"dir/fooA/b/x", false, true, ".gitignore:1: dir/foo**/x"}, {"dir/fooA", true, false, ""}}},
      {"lines that are only '!', '/' or spaces match nothing",
       {{"", "!\n/\n   \n\n"}},
       {{"a", false, false, ""}, {"a", true, false, ""}}},
      {"case-sensitive",
       {{"", "Makefile\n"}},
       {{"makefile", false, false, ""}, {"Makefile", false, true, ".gitignore:1: Makefile"}}},
  };
  return *cases;
}

IgnoreRules RulesFor(const std::vector<IgnoreFile>& files) {
  IgnoreRules rules;
  for (const IgnoreFile& f : files) {
    std::string dir = f.dir;
    rules.AddFile(dir, f.text, dir.empty() ? ".gitignore" : dir + "/.gitignore");
  }
  return rules;
}

TEST(IgnoreRulesTest, HandWrittenCases) {
  for (const IgnoreCase& c : Cases()) {
    IgnoreRules rules = RulesFor(c.files);
    for (const Probe& p : c.probes) {
      IgnoreRules::Match m = rules.IsIgnored(p.path, p.is_dir);
      EXPECT_EQ(m.ignored, p.ignored)
          << c.name << ": path '" << p.path << "'" << (p.is_dir ? " (folder)" : "");
      EXPECT_EQ(m.Describe(), p.rule)
          << c.name << ": path '" << p.path << "'" << (p.is_dir ? " (folder)" : "");
    }
  }
}

// Whether two paths can exist side by side (a file cannot also be a folder).
bool Compatible(const std::string& a, bool a_dir, const std::string& b, bool b_dir) {
  if (a == b) return a_dir == b_dir;
  if (b.compare(0, a.size() + 1, a + "/") == 0) return a_dir;
  if (a.compare(0, b.size() + 1, b + "/") == 0) return b_dir;
  return true;
}

// The same table, asked of the real git: guards the table itself against wishful thinking.
// Every case gets its own top folder in one repo (anchors are relative to the ignore file, so
// this is the same as a repo root); probes that cannot coexist go to separate top folders.
TEST(IgnoreRulesTest, HandWrittenCasesAgreeWithGit) {
  if (!testing::GitAvailable()) {
    if (testing::ServicesRequired()) GTEST_FAIL() << "git is not installed; it is the reference";
    GTEST_SKIP() << "git is not installed; it is the reference for this test";
  }
  testing::TempDir tmp(/*prefer_memory=*/true);
  const std::filesystem::path repo = tmp / "repo";
  ASSERT_TRUE(testing::GitInit(repo));

  struct Top {
    const IgnoreCase* c;
    std::string name;
    std::vector<std::pair<std::string, bool>> occupied;  // Paths and whether folders.
  };
  struct Asked {
    const IgnoreCase* c;
    const Probe* p;
    std::string full;
  };
  std::vector<Top> tops;
  std::vector<Asked> asked;
  for (const IgnoreCase& c : Cases()) {
    const size_t first_top = tops.size();
    for (const Probe& p : c.probes) {
      const std::string path = p.path;
      if (path == ".git" || path.find(".git/") != std::string::npos) continue;
      Top* top = nullptr;
      for (size_t i = first_top; i < tops.size() && top == nullptr; ++i) {
        bool fits = true;
        for (const auto& [q, q_dir] : tops[i].occupied) {
          fits = fits && Compatible(path, p.is_dir, q, q_dir);
        }
        if (fits) top = &tops[i];
      }
      if (top == nullptr) {
        Top t{&c, "c" + std::to_string(tops.size()), {}};
        for (const IgnoreFile& f : c.files) {
          testing::WriteText(repo / t.name / f.dir / ".gitignore", f.text);
          if (*f.dir != '\0') t.occupied.emplace_back(f.dir, true);
        }
        std::filesystem::create_directories(repo / t.name);
        tops.push_back(std::move(t));
        top = &tops.back();
      }
      top->occupied.emplace_back(path, p.is_dir);
      const std::filesystem::path on_disk = repo / top->name / path;
      if (p.is_dir) {
        std::filesystem::create_directories(on_disk);
      } else {
        testing::WriteText(on_disk, "x");
      }
      asked.push_back({&c, &p, top->name + "/" + path});
    }
  }
  std::vector<std::string> paths;
  for (const Asked& a : asked) paths.push_back(a.full);
  std::map<std::string, testing::GitVerdict> verdicts;
  std::string error;
  ASSERT_TRUE(testing::GitCheckIgnore(repo, paths, &verdicts, &error)) << error;
  for (const Asked& a : asked) {
    ASSERT_EQ(verdicts.count(a.full), 1u) << a.full;
    const testing::GitVerdict& v = verdicts[a.full];
    const std::string top = a.full.substr(0, a.full.find('/') + 1);
    const std::string source =
        v.source.compare(0, top.size(), top) == 0 ? v.source.substr(top.size()) : v.source;
    const std::string git_rule =
        source.empty() ? "" : source + ":" + std::to_string(v.line) + ": " + v.pattern;
    EXPECT_EQ(git_rule, a.p->rule) << a.c->name << ": path '" << a.p->path << "'";
    EXPECT_EQ(v.ignored(), a.p->ignored) << a.c->name << ": path '" << a.p->path << "'";
  }
}

TEST(IgnoreRulesTest, MatchEntryIgnoresParentExclusion) {
  IgnoreRules rules = RulesFor({{"", "build/\n!build/keep.txt\n"}});
  // A walker that never enters build/ never asks; MatchEntry alone sees the negation.
  EXPECT_FALSE(rules.MatchEntry("build/keep.txt", false).ignored);
  EXPECT_TRUE(rules.IsIgnored("build/keep.txt", false).ignored);
}

TEST(IgnoreRulesTest, AddFileAcceptsTrailingSlashAndReplaces) {
  IgnoreRules rules;
  rules.AddFile("sub/", "*.o\n", "sub/.gitignore");
  EXPECT_TRUE(rules.IsIgnored("sub/a.o", false).ignored);
  rules.AddFile("sub", "*.p\n", "sub/.amlignore");
  EXPECT_FALSE(rules.IsIgnored("sub/a.o", false).ignored);
  EXPECT_EQ(rules.IsIgnored("sub/a.p", false).Describe(), "sub/.amlignore:1: *.p");
}

TEST(IgnoreRulesTest, FromTreePrefersAmlIgnoreAndSkipsExcludedFolders) {
  testing::TempDir tmp;
  testing::WriteText(tmp / ".gitignore", "*.log\n");
  testing::WriteText(tmp / ".amlignore", "*.tmp\nskipped/\n");
  testing::WriteText(tmp / "sub/.gitignore", "*.bin\n");
  testing::WriteText(tmp / "skipped/.gitignore", "!*.tmp\n");
  StatusOr<IgnoreRules> rules = IgnoreRules::FromTree(tmp.path());
  ASSERT_TRUE(rules.ok()) << rules.status().ToString();
  EXPECT_FALSE(rules->IsIgnored("a.log", false).ignored);  // .gitignore replaced at the root.
  EXPECT_EQ(rules->IsIgnored("a.tmp", false).Describe(), ".amlignore:1: *.tmp");
  EXPECT_EQ(rules->IsIgnored("sub/a.bin", false).Describe(), "sub/.gitignore:1: *.bin");
  EXPECT_EQ(rules->IsIgnored("skipped/a.tmp", false).Describe(), ".amlignore:2: skipped/");
}

TEST(IgnoreRulesTest, SymlinkedIgnoreFileIsNotFollowed) {
  testing::TempDir tmp;
  testing::WriteText(tmp / "rules.txt", "*.log\n");
  std::filesystem::create_symlink("rules.txt", tmp / ".gitignore");
  StatusOr<IgnoreRules> rules = IgnoreRules::FromTree(tmp.path());
  ASSERT_TRUE(rules.ok()) << rules.status().ToString();
  EXPECT_TRUE(rules->empty());
  EXPECT_FALSE(rules->IsIgnored("a.log", false).ignored);
}

}  // namespace
}  // namespace trainyard::cas

// Differential test: IgnoreRules and the snapshot walker against the real git, on random
// trees with random .gitignore files.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "trainyard/cas/ignore.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/cas/test_util.h"

namespace trainyard::cas {
namespace {

namespace fs = std::filesystem;

// Trees to compare: many on tmpfs, fewer when only a (slow, busy) disk is available, to stay
// within a few seconds either way.
constexpr int kTreesInMemory = 400;
constexpr int kTreesOnDisk = 120;
constexpr int kTreesPerBatch = 50;

const std::vector<std::string> kDirNames = {"a",    "b",   "src", "data", "build",
                                            "logs", "x y", "a.d", "Foo",  "foo"};
const std::vector<std::string> kFileNames = {
    "a",   "b",     "ab", "abc",      "a.txt", "b.log", "c.py",  "x.ckpt",  "foo",
    "Foo", "x y",   "#x", "!y",       "[z]",   "a.d",   "data",  ".hidden", "build",
    "q?",  "star*", "t ", "keep.txt", "b.txt", "fooA",  "ab.log"};
// Pattern atoms: literal names (escaped where git needs it) and globs.
const std::vector<std::string> kAtoms = {"a",         "b",        "ab",           "abc",
                                         "a.txt",     "b.log",    "c.py",         "x.ckpt",
                                         "foo",       "Foo",      "data",         "build",
                                         "logs",      "src",      "x y",          "x\\ y",
                                         "\\#x",      "\\!y",     "\\[z\\]",      "[z]",
                                         "star\\*",   "q\\?",     ".hidden",      "a.d",
                                         "*",         "*.txt",    "*.log",        "a*",
                                         "?",         "?b",       "[ab]*",        "[!a]*",
                                         "[a-c].txt", "*.[lt]*",  "[[:alpha:]]*", "[^a]b",
                                         "*b",        "**",       "a**",          "fo*",
                                         "t\\ ",      "keep.txt", "f?o",          "[[:upper:]]*",
                                         "*.d",       "x*y"};

class TreeGen {
 public:
  explicit TreeGen(unsigned seed) : rng_(seed) {}

  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  const std::string& PickOf(const std::vector<std::string>& v) { return v[Pick(v.size())]; }

  std::string Pattern() {
    const std::string& atom = PickOf(kAtoms);
    const std::string& dir = PickOf(kDirNames);
    const std::string& dir2 = PickOf(kDirNames);
    std::string body;
    switch (Pick(13)) {
      case 0:
      case 1:
      case 2:
        body = atom;
        break;
      case 3:
        body = "/" + atom;
        break;
      case 4:
        body = dir + "/" + atom;
        break;
      case 5:
        body = "/" + dir + "/" + atom;
        break;
      case 6:
        body = "**/" + atom;
        break;
      case 7:
        body = atom + "/**";
        break;
      case 8:
        body = dir + "/**/" + atom;
        break;
      case 9:
        body = dir + "/*";
        break;
      case 10:
        body = "*/" + atom;
        break;
      case 11:
        body = dir + "/" + atom.substr(0, 1) + "**" + (Chance(0.5) ? "/" + atom : "");
        break;
      default:
        body = dir + "/" + dir2 + "/" + atom;
        break;
    }
    std::string line;
    if (Chance(0.3)) line += "!";
    line += body;
    if (Chance(0.25)) line += "/";
    if (Chance(0.08)) line += "  ";
    return line;
  }

  std::string IgnoreFile() {
    std::string text;
    const bool crlf = Chance(0.1);
    const size_t lines = 1 + Pick(6);
    for (size_t i = 0; i < lines; ++i) {
      if (Chance(0.08)) text += "# a comment" + std::string(crlf ? "\r\n" : "\n");
      if (Chance(0.05)) text += crlf ? "\r\n" : "\n";
      text += Pattern();
      text += crlf ? "\r\n" : "\n";
    }
    if (Chance(0.2) && !text.empty()) text.pop_back();  // No final newline.
    return text;
  }

  // Builds a random tree under `root`; returns every created path (files and folders).
  void Tree(const fs::path& root, std::map<std::string, bool>* paths) {
    const size_t files = 8 + Pick(30);
    for (size_t i = 0; i < files; ++i) {
      const size_t depth = Pick(4);
      std::vector<std::string> prefixes;
      std::string rel;
      bool ok = true;
      for (size_t d = 0; d < depth && ok; ++d) {
        rel += (rel.empty() ? "" : "/") + PickOf(kDirNames);
        auto it = paths->find(rel);
        if (it != paths->end() && !it->second) ok = false;  // A file already has this name.
        prefixes.push_back(rel);
      }
      if (!ok) continue;
      std::string file = (rel.empty() ? "" : rel + "/") + PickOf(kFileNames);
      if (paths->count(file) != 0) continue;
      if (Chance(0.1)) {
        fs::create_directories(root / file);  // An empty folder.
        (*paths)[file] = true;
      } else {
        testing::WriteText(root / file, "content of " + file);
        (*paths)[file] = false;
      }
      for (const std::string& p : prefixes) (*paths)[p] = true;
    }
    // Ignore files: almost always at the root, often in folders.
    std::vector<std::string> dirs = {""};
    for (const auto& [p, is_dir] : *paths) {
      if (is_dir) dirs.push_back(p);
    }
    for (const std::string& d : dirs) {
      if (!Chance(d.empty() ? 0.95 : 0.5)) continue;
      const std::string rel = d.empty() ? ".gitignore" : d + "/.gitignore";
      testing::WriteText(root / rel, IgnoreFile());
      (*paths)[rel] = false;
    }
  }

 private:
  std::mt19937 rng_;
};

std::string DescribeTree(const fs::path& root) {
  std::ostringstream out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::end(it); ++it) {
    if (it->path().filename() == ".git") {
      it.disable_recursion_pending();
      continue;
    }
    std::string rel = fs::relative(it->path(), root).string();
    if (it->is_directory()) {
      out << "  " << rel << "/\n";
    } else if (it->path().filename() == ".gitignore") {
      out << "  " << rel << ":\n";
      std::istringstream lines(testing::ReadText(it->path()));
      for (std::string line; std::getline(lines, line);) out << "      | " << line << "\n";
    } else {
      out << "  " << rel << "\n";
    }
  }
  return out.str();
}

// Trees are checked in batches: each tree lives in its own top folder ("t7/") of one repo, so
// one git run answers for many trees. A tree's ignore files behave the same there as at a
// repo root (anchors are relative to the ignore file's folder); the top folder prefix is
// stripped before comparing.
TEST(IgnoreGitDifferentialTest, RandomTreesAgreeWithGitCheckIgnoreAndLsFiles) {
  if (!testing::GitAvailable()) {
    if (testing::ServicesRequired()) GTEST_FAIL() << "git is not installed; it is the reference";
    GTEST_SKIP() << "git is not installed; it is the reference for this test";
  }
  const auto start = std::chrono::steady_clock::now();
  testing::TempDir tmp(/*prefer_memory=*/true);
  const int tree_count = tmp.in_memory() ? kTreesInMemory : kTreesOnDisk;
  const fs::path repo = tmp / "repo";
  ASSERT_TRUE(testing::GitInit(repo));
  ObjectStore unused_store(tmp / "store");
  Snapshotter snapshotter(unused_store, tmp / "snapshots");

  int compared_paths = 0;
  int ignored_paths = 0;
  int failures = 0;
  for (int first = 0; first < tree_count && failures < 3; first += kTreesPerBatch) {
    for (const auto& entry : fs::directory_iterator(repo)) {
      if (entry.path().filename() != ".git") fs::remove_all(entry.path());
    }
    struct Tree {
      unsigned seed;
      std::string top;
      std::map<std::string, bool> paths;  // Relative to the tree; value: is a folder.
    };
    std::vector<Tree> trees;
    std::vector<std::string> all_paths;
    for (int t = first; t < std::min(tree_count, first + kTreesPerBatch); ++t) {
      Tree tree{1000u + static_cast<unsigned>(t), "t" + std::to_string(t), {}};
      fs::create_directories(repo / tree.top);
      TreeGen(tree.seed).Tree(repo / tree.top, &tree.paths);
      for (const auto& [p, is_dir] : tree.paths) all_paths.push_back(tree.top + "/" + p);
      trees.push_back(std::move(tree));
    }
    std::map<std::string, testing::GitVerdict> git;
    std::set<std::string> git_included;
    std::string error;
    ASSERT_TRUE(testing::GitCheckIgnore(repo, all_paths, &git, &error)) << error;
    ASSERT_TRUE(testing::GitListIncluded(repo, &git_included, &error)) << error;

    for (const Tree& tree : trees) {
      const std::string prefix = tree.top + "/";
      std::ostringstream diffs;
      // Verdict and deciding rule for every path, against git check-ignore.
      StatusOr<IgnoreRules> rules = IgnoreRules::FromTree(repo / tree.top);
      ASSERT_TRUE(rules.ok()) << rules.status().ToString();
      for (const auto& [p, is_dir] : tree.paths) {
        auto it = git.find(prefix + p);
        ASSERT_NE(it, git.end()) << "git did not answer for " << prefix + p;
        testing::GitVerdict want = it->second;
        if (want.source.compare(0, prefix.size(), prefix) == 0) {
          want.source.erase(0, prefix.size());
        }
        IgnoreRules::Match got = rules->IsIgnored(p, is_dir);
        ++compared_paths;
        if (want.ignored()) ++ignored_paths;
        if (got.ignored != want.ignored() || got.source != want.source || got.line != want.line ||
            got.pattern != want.pattern) {
          diffs << "  " << p << (is_dir ? "/" : "") << ": git says "
                << (want.ignored() ? "ignored" : "included") << " by '" << want.source << ":"
                << want.line << ": " << want.pattern << "', we say "
                << (got.ignored ? "ignored" : "included") << " by '" << got.Describe() << "'\n";
        }
      }
      // The snapshot walker's included files, against git ls-files --others --exclude-standard.
      std::set<std::string> want_included;
      for (const std::string& p : git_included) {
        if (p.compare(0, prefix.size(), prefix) == 0) want_included.insert(p.substr(prefix.size()));
      }
      StatusOr<SnapshotResult> preview = snapshotter.Preview(repo / tree.top);
      ASSERT_TRUE(preview.ok()) << preview.status().ToString();
      std::set<std::string> ours;
      for (const ManifestEntry& e : preview->manifest.entries) ours.insert(e.path);
      for (const std::string& p : want_included) {
        if (ours.count(p) == 0) diffs << "  " << p << ": git includes it, the walker does not\n";
      }
      for (const std::string& p : ours) {
        if (want_included.count(p) == 0) {
          diffs << "  " << p << ": the walker includes it, git does not\n";
        }
      }
      if (!diffs.str().empty()) {
        ++failures;
        ADD_FAILURE() << "tree seed " << tree.seed << " disagrees with git:\n"
                      << diffs.str() << "tree:\n"
                      << DescribeTree(repo / tree.top);
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("compared %d paths (%d ignored by git) in %d trees in %.1f s\n", compared_paths,
              ignored_paths, tree_count, seconds);
  // The generator must exercise both outcomes substantially.
  EXPECT_GT(ignored_paths, compared_paths / 10);
  EXPECT_LT(ignored_paths, compared_paths * 9 / 10);
}

}  // namespace
}  // namespace trainyard::cas

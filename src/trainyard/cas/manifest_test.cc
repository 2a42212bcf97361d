#include "trainyard/cas/manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "trainyard/common/sha256.h"

namespace trainyard::cas {
namespace {

using ::testing::HasSubstr;

ManifestEntry File(std::string path, std::string content, std::uint32_t mode = 0644) {
  ManifestEntry e;
  e.path = std::move(path);
  e.type = ManifestEntry::Type::kFile;
  e.mode = mode;
  e.size = content.size();
  e.digest = Sha256Hex(content);
  return e;
}

ManifestEntry Link(std::string path, std::string target) {
  ManifestEntry e;
  e.path = std::move(path);
  e.type = ManifestEntry::Type::kSymlink;
  e.mode = 0;
  e.link_target = std::move(target);
  return e;
}

TEST(ManifestTest, CanonicalJsonIsExact) {
  Manifest m;
  m.entries = {File("a.txt", "hi"), Link("l", "a.txt"), File("s/run.sh", "x", 0755)};
  const std::string expected =
      "{\"version\":1,\"entries\":["
      "{\"path\":\"a.txt\",\"type\":\"file\",\"mode\":\"0644\",\"size\":2,\"digest\":\"" +
      Sha256Hex("hi") +
      "\"},"
      "{\"path\":\"l\",\"type\":\"symlink\",\"target\":\"a.txt\"},"
      "{\"path\":\"s/run.sh\",\"type\":\"file\",\"mode\":\"0755\",\"size\":1,\"digest\":\"" +
      Sha256Hex("x") + "\"}]}";
  EXPECT_EQ(m.ToJson(), expected);
  EXPECT_EQ(m.Id(), Sha256Hex(expected));
  EXPECT_EQ(m.TotalBytes(), 3u);
}

TEST(ManifestTest, ToJsonSortsAndIsStable) {
  Manifest sorted;
  sorted.entries = {File("a", "1"), File("a-b", "2"), File("a/b", "3")};
  Manifest shuffled;
  shuffled.entries = {File("a/b", "3"), File("a", "1"), File("a-b", "2")};
  EXPECT_EQ(shuffled.ToJson(), sorted.ToJson());
  // Byte order: '-' (0x2d) sorts before '/' (0x2f).
  EXPECT_LT(sorted.ToJson().find("\"a-b\""), sorted.ToJson().find("\"a/b\""));
}

TEST(ManifestTest, RoundTripWithNonUtf8NamesAndControlCharacters) {
  Manifest m;
  m.entries = {File("caf\xe9.txt", "latin-1 name"), File("line\nbreak \"q\" \\", "odd"),
               File("ok-\xc3\xa9.txt", "utf-8 name"), Link("z\xff", "caf\xe9.txt")};
  const std::string json = m.ToJson();
  EXPECT_THAT(json, HasSubstr("\"path_b64\":"));
  EXPECT_THAT(json, HasSubstr("\"target_b64\":"));
  EXPECT_THAT(json, HasSubstr("\"path\":\"ok-\xc3\xa9.txt\""));
  EXPECT_THAT(json, HasSubstr("line\\u000abreak \\\"q\\\" \\\\"));
  StatusOr<Manifest> back = Manifest::FromJson(json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->entries, m.entries);
  EXPECT_EQ(back->ToJson(), json);
}

TEST(ManifestTest, FromJsonRejectsBadInput) {
  const std::string d = Sha256Hex("x");
  auto file = [&](const std::string& path) {
    return "{\"path\":\"" + path + "\",\"type\":\"file\",\"mode\":\"0644\",\"size\":1," +
           "\"digest\":\"" + d + "\"}";
  };
  auto doc = [](const std::string& entries) {
    return "{\"version\":1,\"entries\":[" + entries + "]}";
  };
  struct Bad {
    std::string json;
    std::string why;
  };
  const Bad cases[] = {
      {"not json", "valid JSON"},
      {"{\"version\":2,\"entries\":[]}", "version"},
      {doc(file("../x")), "clean relative path"},
      {doc(file("/etc/passwd")), "clean relative path"},
      {doc(file("a//b")), "clean relative path"},
      {doc(file("a/./b")), "clean relative path"},
      {doc(file("b") + "," + file("a")), "sorted"},
      {doc(file("a") + "," + file("a")), "sorted"},
      {doc(file("a") + "," + file("a/b")), "both a file"},
      {doc("{\"path\":\"l\",\"type\":\"symlink\",\"target\":\"../../x\"}"), "leaves"},
      {doc("{\"path\":\"l\",\"type\":\"symlink\",\"target\":\"/etc\"}"), "leaves"},
      {doc("{\"path\":\"a\",\"type\":\"file\",\"mode\":\"0644\",\"size\":1,\"digest\":\"zz\"}"),
       "digest"},
      {doc("{\"path\":\"a\",\"type\":\"file\",\"mode\":\"4755\",\"size\":1,\"digest\":\"" + d +
           "\"}"),
       "mode"},
      {doc("{\"path\":\"a\",\"type\":\"file\",\"mode\":\"0644\",\"size\":-1,\"digest\":\"" + d +
           "\"}"),
       "size"},
      {doc("{\"path\":\"a\",\"path_b64\":\"YQ==\",\"type\":\"symlink\",\"target\":\"b\"}"), "both"},
      {doc("{\"path\":\"a\",\"type\":\"fifo\"}"), "type"},
  };
  for (const Bad& c : cases) {
    StatusOr<Manifest> m = Manifest::FromJson(c.json);
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(m.status().message(), HasSubstr(c.why)) << c.json;
  }
}

TEST(ManifestTest, SymlinkStaysInside) {
  EXPECT_TRUE(SymlinkStaysInside("l", "a.txt"));
  EXPECT_TRUE(SymlinkStaysInside("l", "."));
  EXPECT_TRUE(SymlinkStaysInside("d/l", "../a.txt"));
  EXPECT_TRUE(SymlinkStaysInside("d/e/l", "../../a/./b"));
  EXPECT_FALSE(SymlinkStaysInside("l", "../a.txt"));
  EXPECT_FALSE(SymlinkStaysInside("d/l", "../../a.txt"));
  EXPECT_FALSE(SymlinkStaysInside("l", "/etc/passwd"));
  EXPECT_FALSE(SymlinkStaysInside("l", ""));
  // Climbs out and back in by the root's own name: outside once materialised elsewhere.
  EXPECT_FALSE(SymlinkStaysInside("l", "sub/../../src/a.txt"));
}

TEST(ManifestTest, SymlinkChainsAreResolvedAsAWhole) {
  // Each link stays inside on its own; through d/y (the root itself), z climbs above it.
  Manifest escape;
  escape.entries = {Link("d/y", ".."), Link("z", "d/y/..")};
  const Status st = escape.Validate();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("'z'"));
  // Through a link into a deeper folder and back up: inside.
  Manifest fine;
  fine.entries = {File("a/b/f.txt", "x"), Link("a/b/l", "../up/a/b/f.txt"), Link("a/up", ".."),
                  Link("m", "a/b")};
  EXPECT_TRUE(fine.Validate().ok()) << fine.Validate().ToString();
  // A loop never ends inside: refused rather than followed forever.
  Manifest loop;
  loop.entries = {Link("p", "q/x"), Link("q", "p/x")};
  EXPECT_EQ(loop.Validate().code(), StatusCode::kInvalidArgument);
  // The sum of declared sizes saturates instead of wrapping under a limit.
  Manifest huge;
  huge.entries = {File("a", "x"), File("b", "y")};
  huge.entries[0].size = std::numeric_limits<std::uint64_t>::max() - 1;
  huge.entries[1].size = 5;
  EXPECT_EQ(huge.TotalBytes(), std::numeric_limits<std::uint64_t>::max());
}

TEST(ManifestTest, PrintablePath) {
  EXPECT_EQ(PrintablePath("caf\xe9/x\n"), "caf\\xe9/x\\x0a");
  EXPECT_EQ(PrintablePath("ok-\xc3\xa9.txt"), "ok-\xc3\xa9.txt");
  EXPECT_EQ(PrintablePath("\xe2\x82"), "\\xe2\\x82");
  EXPECT_TRUE(IsValidUtf8(PrintablePath("\xff\xfe\xc3")));
}

TEST(ManifestTest, IsValidUtf8) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82"));
  EXPECT_FALSE(IsValidUtf8("caf\xe9"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // Overlong '/'.
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // Surrogate.
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // Beyond U+10FFFF.
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // Truncated.
}

}  // namespace
}  // namespace trainyard::cas

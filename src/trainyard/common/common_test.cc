#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainyard/common/fs.h"
#include "trainyard/common/json_writer.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/status.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"

namespace trainyard {
namespace {

TEST(StatusTest, MapsToHttp) {
  EXPECT_EQ(HttpStatusFor(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(StatusCode::kUnavailable), 503);
  EXPECT_EQ(StatusCodeFromHttp(404), StatusCode::kNotFound);
  EXPECT_EQ(NotFound("x").ToString(), "NOT_FOUND: x");
}

StatusOr<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  TY_ASSIGN_OR_RETURN(*out, Half(x));
  return Status::Ok();
}

TEST(StatusTest, AssignOrReturn) {
  int v = 0;
  EXPECT_TRUE(UseHalf(4, &v).ok());
  EXPECT_EQ(v, 2);
  EXPECT_EQ(UseHalf(3, &v).code(), StatusCode::kInvalidArgument);
}

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(IsSha256Hex(Sha256Hex("x")));
  EXPECT_FALSE(IsSha256Hex("abc"));
}

TEST(UtilTest, Base64RoundTrip) {
  for (std::string s : {"", "a", "ab", "abc", "abcd", "\xff\xfe\x00z"}) {
    std::string d;
    ASSERT_TRUE(Base64Decode(Base64Encode(s), &d));
    EXPECT_EQ(d, s);
    ASSERT_TRUE(Base64Decode(Base64UrlEncode(s), &d));
    EXPECT_EQ(d, s);
  }
  EXPECT_EQ(Base64Encode("abc"), "YWJj");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8=");
}

TEST(UtilTest, FormatTimeIsoAgreesWithGmtime) {
  EXPECT_EQ(FormatTimeIso(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatTimeIso(951'782'400'123), "2000-02-29T00:00:00.123Z");  // a leap day
  EXPECT_EQ(FormatTimeIso(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(FormatTimeIso(253'402'300'800'000), "10000-01-01T00:00:00.000Z");  // five digits
  EXPECT_EQ(FormatTimeIso(-62'167'219'200'001), "-001-12-31T23:59:59.999Z");
  // Every day from 1900 to 2200 at a time of day that moves, against the C library.
  for (std::int64_t day = -25'567; day < 84'000; day += 1) {
    const std::int64_t ms = day * 86'400'000 + (day * 7'919'000 + 123) % 86'400'000;
    const std::time_t secs = static_cast<std::time_t>(ms / 1000 - (ms % 1000 < 0 ? 1 : 0));
    std::tm tm{};
    ASSERT_NE(gmtime_r(&secs, &tm), nullptr);
    char want[64];
    std::snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(((ms % 1000) + 1000) % 1000));
    ASSERT_EQ(FormatTimeIso(ms), want) << ms;
  }
}

TEST(JsonWriterTest, WritesWhatAParserReadsBack) {
  std::string out;
  JsonWriter w(out);
  w.BeginObject()
      .Field("name", "r\"1\\\n\x01")
      .Field("n", std::int64_t{-42})
      .Key("none")
      .Null()
      .Key("list")
      .BeginArray()
      .Int(1)
      .BeginObject()
      .EndObject()
      .String("\xc3\xa9")
      .EndArray()
      .Key("empty")
      .BeginArray()
      .EndArray()
      .EndObject();
  const auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["name"], "r\"1\\\n\x01");
  EXPECT_EQ(j["n"], -42);
  EXPECT_TRUE(j["none"].is_null());
  EXPECT_EQ(j["list"], nlohmann::json::parse(R"([1, {}, "\u00e9"])"));
  EXPECT_TRUE(j["empty"].is_array() && j["empty"].empty());
}

// Any bytes give valid JSON, and the same text nlohmann::json gives with its replacement of
// invalid UTF-8 (which the API used before).
TEST(JsonWriterTest, EscapesAndReplacesLikeNlohmann) {
  std::vector<std::string> cases = {
      "plain",        "\x7f\x1f\"\\/",    "\xed\xa0\x80",  // a surrogate
      "\xe0\x80\xaf", "\xf4\x90\x80\x80", "\xc3",         "a\xe2\x82", "\xf0\x9f\x98\x80",
      "\xff\xfe",     "\xe2\x82\xac\x80x"};
  std::uint32_t seed = 12345;
  for (int n = 0; n < 3000; ++n) {
    std::string s;
    const int len = static_cast<int>(seed % 12);
    for (int k = 0; k < len; ++k) {
      seed = seed * 1103515245u + 12345u;
      const unsigned pick = (seed >> 16) % 6;
      // Mostly the bytes UTF-8 decoding turns on: leads, continuations, and a little ASCII.
      static constexpr unsigned char kBytes[] = {0x80, 0xbf, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xa0,
                                                 0x9f, 0x90, 0x8f, 0x41, 0x22, 0x0a, 0xc0, 0xf5};
      s += static_cast<char>(pick == 0 ? (seed >> 8) & 0xff : kBytes[(seed >> 8) % 16]);
    }
    seed = seed * 1103515245u + 12345u;
    cases.push_back(s);
  }
  for (const std::string& s : cases) {
    std::string mine;
    AppendJsonString(mine, s);
    const std::string theirs =
        nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    ASSERT_EQ(nlohmann::json::parse(mine), nlohmann::json::parse(theirs))
        << "input bytes: "
        << nlohmann::json(s).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  }
}

TEST(UtilTest, ShellQuote) {
  EXPECT_EQ(ShellQuote("plain"), "'plain'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote("$(rm -rf /)"), "'$(rm -rf /)'");
}

TEST(UtilTest, RedactAndNames) {
  EXPECT_EQ(Redact("pw=hunter2 again hunter2", "hunter2"), "pw=*** again ***");
  EXPECT_EQ(Redact("nothing", ""), "nothing");
  EXPECT_TRUE(IsValidName("my-env.v2_x"));
  EXPECT_FALSE(IsValidName("-bad"));
  EXPECT_FALSE(IsValidName("a/b"));
}

TEST(FsTest, ResolveUnderRefusesEscapes) {
  EXPECT_TRUE(ResolveUnder("/tmp/root", "a/b").ok());
  EXPECT_FALSE(ResolveUnder("/tmp/root", "../etc/passwd").ok());
  EXPECT_FALSE(ResolveUnder("/tmp/root", "a/../../x").ok());
  EXPECT_FALSE(ResolveUnder("/tmp/root", "/etc/passwd").ok());
}

TEST(FsTest, AtomicWriteAndRead) {
  auto dir = fs::temp_directory_path() / ("ty-fs-" + RandomHex(4));
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir / "f", "hello").ok());
  auto got = ReadFile(dir / "f");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "hello");
  EXPECT_EQ(ReadFile(dir / "missing").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(RemoveTree(dir).ok());
}

TEST(WorkspaceConfigTest, DefaultsSettingsAndBadKeys) {
  WorkspaceLayout ws{fs::temp_directory_path() / ("ty-wscfg-" + RandomHex(4))};
  ASSERT_TRUE(ws.Create().ok());
  auto defaults = LoadWorkspaceConfig(ws);
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->snapshot_max_files, 2000u);
  EXPECT_EQ(defaults->snapshot_max_bytes, 300'000'000u);
  ASSERT_TRUE(WriteFileAtomic(ws.ConfigFile(), R"({"snapshot_max_files": 10, "port": 8123})").ok());
  auto set = LoadWorkspaceConfig(ws);
  ASSERT_TRUE(set.ok());
  EXPECT_EQ(set->snapshot_max_files, 10u);
  EXPECT_EQ(set->port, 8123);
  ASSERT_TRUE(WriteFileAtomic(ws.ConfigFile(), R"({"snapshot_max_file": 10})").ok());
  auto typo = LoadWorkspaceConfig(ws);
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.status().message().find("unknown key 'snapshot_max_file'"), std::string::npos);
  EXPECT_NE(typo.status().message().find(ws.ConfigFile().string()), std::string::npos);
  ASSERT_TRUE(WriteFileAtomic(ws.ConfigFile(), R"({"port": -1})").ok());
  EXPECT_EQ(LoadWorkspaceConfig(ws).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(RemoveTree(ws.root).ok());
}

TEST(SecretBoxTest, SealUnseal) {
  auto box = SecretBox::ForTesting("0123456789abcdef0123456789abcdef");
  std::string sealed = box.Seal("hunter2");
  EXPECT_EQ(sealed.find("hunter2"), std::string::npos);
  EXPECT_TRUE(SecretBox::IsSealed(sealed));
  auto plain = box.Unseal(sealed);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*plain, "hunter2");
  auto other = SecretBox::ForTesting("ffffffffffffffffffffffffffffffff");
  EXPECT_FALSE(other.Unseal(sealed).ok());
}

}  // namespace
}  // namespace trainyard

namespace trainyard {
namespace {

TEST(SecretBoxTest, RunTokensNameOneRunAndNeedTheKey) {
  SecretBox box = SecretBox::ForTesting("0123456789abcdef0123456789abcdef");
  SecretBox other = SecretBox::ForTesting("fedcba9876543210fedcba9876543210");
  constexpr std::int64_t kNow = 1'800'000'000, kExpires = kNow + 3600;
  const std::string token = box.RunToken("run-1.a_b", kExpires);
  EXPECT_EQ(box.RunOfToken(token, kNow), "run-1.a_b");
  EXPECT_EQ(token.find("0123456789"), std::string::npos) << "the key must not show";
  EXPECT_EQ(other.RunOfToken(token, kNow), "") << "another workspace's key";
  EXPECT_NE(box.RunToken("run-2", kExpires), box.RunToken("run-1.a_b", kExpires));
  // Claiming another run with this run's MAC, or tampering with the MAC, fails.
  std::string forged = token;
  forged.replace(5, 9, "run-2.a_b");
  EXPECT_EQ(box.RunOfToken(forged, kNow), "");
  std::string flipped = token;
  flipped.back() = flipped.back() == 'A' ? 'B' : 'A';
  EXPECT_EQ(box.RunOfToken(flipped, kNow), "");
  for (const char* bad :
       {"", "tyr2.", "tyr2..", "tyr2.run", "Bearer x", "tyr2.run.", "tyr2.run.1."}) {
    EXPECT_EQ(box.RunOfToken(bad, kNow), "") << bad;
  }
}

TEST(SecretBoxTest, RunTokensExpire) {
  SecretBox box = SecretBox::ForTesting("0123456789abcdef0123456789abcdef");
  const std::string token = box.RunToken("run-1", 1000);
  EXPECT_EQ(box.RunOfToken(token, 999), "run-1");
  EXPECT_EQ(box.RunOfToken(token, 1000), "") << "expired at its expiry";
  EXPECT_EQ(box.RunOfToken(token, 5000), "");
  // Moving the expiry forward breaks the MAC.
  std::string later = token;
  later.replace(later.find(".1000.") + 1, 4, "9999");
  EXPECT_EQ(box.RunOfToken(later, 999), "");
}

}  // namespace
}  // namespace trainyard

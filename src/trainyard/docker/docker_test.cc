// Unit tests of the docker module: no dockerd needed. HttpEngine is exercised against a tiny
// scripted HTTP server on a unix socket.

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/docker/docker_config.h"
#include "trainyard/docker/engine.h"
#include "trainyard/docker/fake_engine.h"
#include "trainyard/docker/http_engine.h"
#include "trainyard/docker/log_demux.h"
#include "trainyard/docker/tar.h"

namespace trainyard::docker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A folder under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("trainyard-docker-test-" + RandomHex(8))) {
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// ---------------------------------------------------------------------------------------------
// ParseImageRef

struct RefCase {
  std::string input;
  std::string registry;
  std::string repository;
  std::string tag;
  std::string digest;
  std::string canonical;
};

TEST(ImageRefTest, ParsesValidReferences) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  const std::vector<RefCase> cases = {
      {"python:3.11-slim", "docker.io", "python", "3.11-slim", "", "python:3.11-slim"},
      {"img", "docker.io", "img", "latest", "", "img:latest"},
      {"team/img", "docker.io", "team/img", "latest", "", "team/img:latest"},
      {"fastdotai/fastai2:latest", "docker.io", "fastdotai/fastai2", "latest", "",
       "fastdotai/fastai2:latest"},
      {"127.0.0.1:5000/team/img:tag", "127.0.0.1:5000", "127.0.0.1:5000/team/img", "tag", "",
       "127.0.0.1:5000/team/img:tag"},
      {"localhost:5000/img", "localhost:5000", "localhost:5000/img", "latest", "",
       "localhost:5000/img:latest"},
      {"localhost/img", "localhost", "localhost/img", "latest", "", "localhost/img:latest"},
      {"registry.example.com/img@" + digest, "registry.example.com", "registry.example.com/img", "",
       digest, "registry.example.com/img@" + digest},
      // No '.', ':' or "localhost" in the first part: a Docker Hub namespace, as Docker reads it.
      {"host/img@" + digest, "docker.io", "host/img", "", digest, "host/img@" + digest},
      {"ghcr.io/a/b/c:v1.2_x", "ghcr.io", "ghcr.io/a/b/c", "v1.2_x", "", "ghcr.io/a/b/c:v1.2_x"},
      {"my-reg.io:443/x__y/z-w.v:T", "my-reg.io:443", "my-reg.io:443/x__y/z-w.v", "T", "",
       "my-reg.io:443/x__y/z-w.v:T"},
      {"img:tag@" + digest, "docker.io", "img", "tag", digest, "img:tag@" + digest},
      {"trainyard/env:0123abcd", "docker.io", "trainyard/env", "0123abcd", "",
       "trainyard/env:0123abcd"},
  };
  for (const RefCase& c : cases) {
    SCOPED_TRACE(c.input);
    StatusOr<ImageRef> ref = ParseImageRef(c.input);
    ASSERT_TRUE(ref.ok()) << ref.status().ToString();
    EXPECT_EQ(ref->registry, c.registry);
    EXPECT_EQ(ref->repository, c.repository);
    EXPECT_EQ(ref->tag, c.tag);
    EXPECT_EQ(ref->digest, c.digest);
    EXPECT_EQ(ref->ToString(), c.canonical);
    // The canonical form parses to the same parts.
    StatusOr<ImageRef> again = ParseImageRef(ref->ToString());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->ToString(), c.canonical);
  }
}

TEST(ImageRefTest, RejectsGarbage) {
  const std::vector<std::string> bad = {
      "",
      ":",
      ":tag",
      "img:",
      "img@",
      "Img",
      "UPPER/img",
      "img:tag with",
      "img name",
      "/img",
      "img/",
      "a//b",
      "-img",
      "img-",
      "img:.bad",
      "img@sha256:123",
      "img@sha256:" + std::string(64, 'g'),
      "host:port/img",
      "reg.io:/img",
      "img:" + std::string(129, 'a'),
      "a..b",
      "café",
      "img:tag:tag2",
  };
  for (const std::string& input : bad) {
    SCOPED_TRACE(input);
    StatusOr<ImageRef> ref = ParseImageRef(input);
    ASSERT_FALSE(ref.ok()) << "parsed as " << ref->ToString();
    EXPECT_EQ(ref.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(ref.status().message().find("invalid image reference"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
// Docker config

TEST(DockerConfigTest, AuthFieldAndKeyVariants) {
  TempDir dir;
  fs::path config = dir.path() / "config.json";
  json j;
  j["auths"]["127.0.0.1:5000"]["auth"] = Base64Encode("alice:s3cret:with:colons");
  j["auths"]["https://ghcr.io"]["auth"] = Base64Encode("bob:pw2");
  j["auths"]["http://Registry.Example.com/v2/"]["username"] = "carol";
  j["auths"]["http://Registry.Example.com/v2/"]["password"] = "pw3";
  j["auths"]["https://index.docker.io/v1/"]["auth"] = Base64Encode("dave:hub");
  ASSERT_TRUE(WriteFileAtomic(config, j.dump()).ok());

  auto a = LookupDockerConfigAuth(config, "127.0.0.1:5000");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->username, "alice");
  EXPECT_EQ((*a)->password, "s3cret:with:colons");
  EXPECT_EQ((*a)->server_address, "127.0.0.1:5000");

  auto b = LookupDockerConfigAuth(config, "ghcr.io");
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ((*b)->username, "bob");
  EXPECT_EQ((*b)->password, "pw2");

  auto c = LookupDockerConfigAuth(config, "registry.example.com");
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->username, "carol");
  EXPECT_EQ((*c)->password, "pw3");

  for (const std::string hub : {"docker.io", "index.docker.io", "https://index.docker.io/v1/"}) {
    auto d = LookupDockerConfigAuth(config, hub);
    ASSERT_TRUE(d.ok() && d->has_value()) << hub;
    EXPECT_EQ((*d)->username, "dave");
    EXPECT_EQ((*d)->password, "hub");
    EXPECT_EQ((*d)->server_address, "https://index.docker.io/v1/");
  }

  auto none = LookupDockerConfigAuth(config, "other.io");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(DockerConfigTest, MissingFileAndHelpers) {
  TempDir dir;
  auto missing = LookupDockerConfigAuth(dir.path() / "nope.json", "127.0.0.1:5000");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  fs::path config = dir.path() / "config.json";
  json j;
  j["credsStore"] = "desktop";
  j["auths"]["127.0.0.1:5000"] = json::object();  // what `docker login` writes with a store
  j["credHelpers"]["ghcr.io"] = "gh";
  j["auths"]["ghcr.io"]["auth"] = Base64Encode("x:y");  // the helper wins, as in Docker
  ASSERT_TRUE(WriteFileAtomic(config, j.dump()).ok());
  auto stored = LookupDockerConfigAuth(config, "127.0.0.1:5000");
  ASSERT_TRUE(stored.ok());
  EXPECT_FALSE(stored->has_value());
  auto helper = LookupDockerConfigAuth(config, "ghcr.io");
  ASSERT_TRUE(helper.ok());
  EXPECT_FALSE(helper->has_value());
}

TEST(DockerConfigTest, BadFiles) {
  TempDir dir;
  fs::path config = dir.path() / "config.json";
  ASSERT_TRUE(WriteFileAtomic(config, "{not json").ok());
  auto bad = LookupDockerConfigAuth(config, "x.io");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);

  ASSERT_TRUE(WriteFileAtomic(config, R"({"auths":{"x.io":{"auth":"bm9jb2xvbg=="}}})").ok());
  auto no_colon = LookupDockerConfigAuth(config, "x.io");  // base64 of "nocolon"
  EXPECT_EQ(no_colon.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(no_colon.status().message().find("nocolon"), std::string::npos);
}

TEST(DockerConfigTest, DefaultPathFollowsDockerConfigEnv) {
  const char* old = std::getenv("DOCKER_CONFIG");
  std::string saved = old != nullptr ? old : "";
  setenv("DOCKER_CONFIG", "/tmp/some-docker-config", 1);
  EXPECT_EQ(DefaultDockerConfigPath(), fs::path("/tmp/some-docker-config/config.json"));
  unsetenv("DOCKER_CONFIG");
  EXPECT_EQ(DefaultDockerConfigPath(), HomeDir() / ".docker" / "config.json");
  if (old != nullptr) setenv("DOCKER_CONFIG", saved.c_str(), 1);
}

// ---------------------------------------------------------------------------------------------
// Tar

struct TarEntry {
  std::string path;
  unsigned type = 0;
  unsigned perm = 0;
  std::string contents;
  std::string symlink;
  long long mtime = -1;
  long long uid = -1;
  long long gid = -1;
};

std::vector<TarEntry> ReadTar(const std::string& tar) {
  std::vector<TarEntry> out;
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, tar.data(), tar.size()), ARCHIVE_OK);
  struct archive_entry* e = nullptr;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    TarEntry t;
    t.path = archive_entry_pathname(e);
    t.type = archive_entry_filetype(e);
    t.perm = archive_entry_perm(e);
    t.mtime = archive_entry_mtime(e);
    t.uid = archive_entry_uid(e);
    t.gid = archive_entry_gid(e);
    if (archive_entry_symlink(e) != nullptr) t.symlink = archive_entry_symlink(e);
    char buf[4096];
    la_ssize_t n;
    while ((n = archive_read_data(a, buf, sizeof buf)) > 0) t.contents.append(buf, n);
    out.push_back(std::move(t));
  }
  archive_read_free(a);
  return out;
}

TEST(TarTest, DirectoryIsDeterministicAndComplete) {
  TempDir dir;
  const fs::path& d = dir.path();
  fs::create_directories(d / "src" / "pkg");
  fs::create_directories(d / "empty");
  ASSERT_TRUE(WriteFileAtomic(d / "Dockerfile", "FROM scratch\n").ok());
  ASSERT_TRUE(WriteFileAtomic(d / "run.sh", "#!/bin/sh\necho hi\n", 0755).ok());
  ASSERT_TRUE(WriteFileAtomic(d / "src" / "pkg" / "mod.py", "x = 1\n").ok());
  ASSERT_TRUE(WriteFileAtomic(d / "src-file", "sorted before src/ byte-wise\n").ok());
  std::string big(200000, 'z');
  ASSERT_TRUE(WriteFileAtomic(d / "big.bin", big).ok());
  std::string long_name = "d/" + std::string(120, 'n') + "/" + std::string(120, 'm') + ".txt";
  fs::create_directories((d / long_name).parent_path());
  ASSERT_TRUE(WriteFileAtomic(d / long_name, "long").ok());
  fs::create_symlink("src/pkg/mod.py", d / "link");
  ::chmod((d / "src").c_str(), 0750);

  StatusOr<std::string> first = TarDirectory(d);
  ASSERT_TRUE(first.ok()) << first.status().ToString();

  // Touch everything: new mtimes must not change the bytes.
  auto later = fs::file_time_type::clock::now() + std::chrono::hours(5);
  for (auto& p : fs::recursive_directory_iterator(d)) {
    if (!p.is_symlink()) fs::last_write_time(p.path(), later);
  }
  StatusOr<std::string> second = TarDirectory(d);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);

  std::vector<TarEntry> entries = ReadTar(*first);
  std::vector<std::string> paths;
  for (const TarEntry& e : entries) paths.push_back(e.path);
  std::vector<std::string> expected = {
      "Dockerfile", "big.bin", "d/",       "d/" + std::string(120, 'n') + "/",
      long_name,    "empty/",  "link",     "run.sh",
      "src-file",   "src/",    "src/pkg/", "src/pkg/mod.py"};
  EXPECT_EQ(paths, expected);
  for (const TarEntry& e : entries) {
    SCOPED_TRACE(e.path);
    EXPECT_EQ(e.mtime, 0);
    EXPECT_EQ(e.uid, 0);
    EXPECT_EQ(e.gid, 0);
    if (e.path == "run.sh") {
      EXPECT_EQ(e.type, AE_IFREG);
      EXPECT_EQ(e.perm, 0755u);
      EXPECT_EQ(e.contents, "#!/bin/sh\necho hi\n");
    } else if (e.path == "Dockerfile") {
      EXPECT_EQ(e.perm, 0644u);
      EXPECT_EQ(e.contents, "FROM scratch\n");
    } else if (e.path == "big.bin") {
      EXPECT_EQ(e.contents, big);
    } else if (e.path == "src/") {
      EXPECT_EQ(e.type, AE_IFDIR);
      EXPECT_EQ(e.perm, 0750u);
    } else if (e.path == "link") {
      EXPECT_EQ(e.type, AE_IFLNK);
      EXPECT_EQ(e.symlink, "src/pkg/mod.py");
    } else if (e.path == long_name) {
      EXPECT_EQ(e.contents, "long");
    }
  }

  // A changed file changes the bytes.
  ASSERT_TRUE(WriteFileAtomic(d / "src" / "pkg" / "mod.py", "x = 2\n").ok());
  StatusOr<std::string> third = TarDirectory(d);
  ASSERT_TRUE(third.ok());
  EXPECT_NE(*first, *third);
}

TEST(TarTest, SameTreeElsewhereGivesSameBytes) {
  TempDir a, b;
  for (const fs::path& root : {a.path(), b.path()}) {
    fs::create_directories(root / "x");
    ASSERT_TRUE(WriteFileAtomic(root / "x" / "f", "same").ok());
  }
  // Created in a different order and at different times.
  ASSERT_TRUE(WriteFileAtomic(b.path() / "g", "g").ok());
  ASSERT_TRUE(WriteFileAtomic(a.path() / "g", "g").ok());
  EXPECT_EQ(*TarDirectory(a.path()), *TarDirectory(b.path()));
  EXPECT_EQ(TarDirectory(a.path() / "missing").status().code(), StatusCode::kNotFound);
}

TEST(TarTest, FilesWithImpliedFolders) {
  StatusOr<std::string> tar =
      TarFiles({{"Dockerfile", "FROM x\n"}, {"app/lib/m.py", "m"}, {"app/main.py", "main"}});
  ASSERT_TRUE(tar.ok()) << tar.status().ToString();
  std::vector<TarEntry> entries = ReadTar(*tar);
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[0].path, "Dockerfile");
  EXPECT_EQ(entries[0].contents, "FROM x\n");
  EXPECT_EQ(entries[0].perm, 0644u);
  EXPECT_EQ(entries[1].path, "app/");
  EXPECT_EQ(entries[1].type, AE_IFDIR);
  EXPECT_EQ(entries[1].perm, 0755u);
  EXPECT_EQ(entries[2].path, "app/lib/");
  EXPECT_EQ(entries[3].path, "app/lib/m.py");
  EXPECT_EQ(entries[3].contents, "m");
  EXPECT_EQ(entries[4].path, "app/main.py");
  EXPECT_EQ(*TarFiles({{"a", "1"}, {"b/c", "2"}}), *TarFiles({{"b/c", "2"}, {"a", "1"}}));

  for (const std::string bad : {"", "/abs", "../up", "a/../b", "a//b", "./a", "dir/"}) {
    EXPECT_EQ(TarFiles({{bad, "x"}}).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(TarFiles({{"a", "file"}, {"a/b", "x"}}).status().code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Log demultiplexing

std::string Frame(int stream, std::string_view payload) {
  std::string out(8, '\0');
  out[0] = static_cast<char>(stream);
  auto n = static_cast<std::uint32_t>(payload.size());
  out[4] = static_cast<char>((n >> 24) & 0xff);
  out[5] = static_cast<char>((n >> 16) & 0xff);
  out[6] = static_cast<char>((n >> 8) & 0xff);
  out[7] = static_cast<char>(n & 0xff);
  return out + std::string(payload);
}

struct Demuxed {
  std::string out;
  std::string err;
  std::string all;  // interleaved, in arrival order, tagged
};

Demuxed Demux(const std::string& stream, const std::vector<size_t>& cuts) {
  Demuxed d;
  LogDemuxer demuxer([&](LogDemuxer::Stream s, std::string_view payload) {
    EXPECT_FALSE(payload.empty());
    (s == LogDemuxer::Stream::kStdout ? d.out : d.err).append(payload);
    d.all.append(s == LogDemuxer::Stream::kStdout ? "1" : "2").append(payload);
  });
  size_t pos = 0;
  for (size_t cut : cuts) {
    EXPECT_TRUE(demuxer.Feed(std::string_view(stream).substr(pos, cut - pos)).ok());
    pos = cut;
  }
  EXPECT_TRUE(demuxer.Feed(std::string_view(stream).substr(pos)).ok());
  EXPECT_TRUE(demuxer.AtFrameBoundary());
  return d;
}

TEST(LogDemuxerTest, SplitAtEveryOffset) {
  std::string payload_big(300, 'B');  // size needs two bytes of the length field
  payload_big[0] = '\0';              // payload bytes may be anything, even zero
  payload_big[299] = '\x01';
  const std::string stream = Frame(1, "hello\n") + Frame(2, "oops\n") + Frame(1, "") +
                             Frame(1, payload_big) + Frame(2, std::string(1, '\x02')) +
                             Frame(1, "end");
  const std::string want_out = "hello\n" + payload_big + "end";
  const std::string want_err = "oops\n\x02";
  Demuxed whole = Demux(stream, {});
  EXPECT_EQ(whole.out, want_out);
  EXPECT_EQ(whole.err, want_err);

  for (size_t i = 0; i <= stream.size(); ++i) {
    Demuxed d = Demux(stream, {i});
    ASSERT_EQ(d.out, want_out) << "cut at " << i;
    ASSERT_EQ(d.err, want_err) << "cut at " << i;
  }
  // Two cuts: every header split in every pair of places, with payloads split too.
  for (size_t i = 0; i <= stream.size(); ++i) {
    for (size_t j = i; j <= stream.size(); j += (j < 40 || j > stream.size() - 40) ? 1 : 7) {
      Demuxed d = Demux(stream, {i, j});
      ASSERT_EQ(d.out, want_out) << i << "," << j;
      ASSERT_EQ(d.err, want_err) << i << "," << j;
    }
  }
  // One byte at a time: the order of interleaving is kept.
  std::vector<size_t> every;
  for (size_t i = 1; i < stream.size(); ++i) every.push_back(i);
  Demuxed bytes = Demux(stream, every);
  EXPECT_EQ(bytes.out, want_out);
  EXPECT_EQ(bytes.err, want_err);
  std::string order;
  for (size_t i = 0; i < bytes.all.size(); i += 2) {
    if (order.empty() || order.back() != bytes.all[i]) order.push_back(bytes.all[i]);
  }
  EXPECT_EQ(order, "12121");
}

TEST(LogDemuxerTest, PayloadPassedOnBeforeFrameCompletes) {
  std::string got;
  LogDemuxer demuxer([&](LogDemuxer::Stream, std::string_view p) { got.append(p); });
  std::string frame = Frame(1, "abcdef");
  ASSERT_TRUE(demuxer.Feed(frame.substr(0, 10)).ok());
  EXPECT_EQ(got, "ab");
  EXPECT_FALSE(demuxer.AtFrameBoundary());
  ASSERT_TRUE(demuxer.Feed(frame.substr(10)).ok());
  EXPECT_EQ(got, "abcdef");
}

// What a follower resumes from: each message's timestamp is stripped, and a follow that resumes
// from a position skips exactly the messages delivered before it, also several at one time.
TEST(TimestampedLogTest, StripsTimestampsAndResumesAfterAPosition) {
  const std::vector<std::string> messages = {
      "2026-12-06T18:00:00.000000001Z one\n", "2026-12-06T18:00:00.000000002Z two\n",
      "2026-12-06T18:00:00.000000002Z three\n", "2026-12-06T18:00:01.5Z four\n",
      "2026-12-06T18:00:02.000000000Z \n"};
  auto follow = [&](const LogPosition& from, std::vector<LogPosition>* positions) {
    std::string out;
    TimestampedLog log(from, [&](std::string_view data, const LogPosition& after) {
      out.append(data);
      positions->push_back(after);
    });
    LogDemuxer demuxer([&](LogDemuxer::Stream, std::string_view piece) {
      ASSERT_TRUE(log.Piece(piece, demuxer.AtFrameBoundary()).ok());
    });
    std::string stream;
    for (const std::string& m : messages) stream += Frame(1, m);
    // Cut at every third byte: timestamps and texts arrive in pieces.
    for (std::size_t i = 0; i < stream.size(); i += 3) {
      EXPECT_TRUE(demuxer.Feed(stream.substr(i, 3)).ok());
    }
    return out;
  };
  std::vector<LogPosition> positions;
  EXPECT_EQ(follow({}, &positions), "one\ntwo\nthree\nfour\n\n");
  ASSERT_EQ(positions.size(), 5u);
  EXPECT_EQ(positions[1].ToString(), "2026-12-06T18:00:00.000000002Z 1");
  EXPECT_EQ(positions[2].ToString(), "2026-12-06T18:00:00.000000002Z 2");
  EXPECT_EQ(positions[3].ToString(), "2026-12-06T18:00:01.5Z 1");
  // Resuming after each position delivers exactly the rest.
  const std::vector<std::string> rest = {"two\nthree\nfour\n\n", "three\nfour\n\n", "four\n\n",
                                         "\n", ""};
  for (std::size_t i = 0; i < positions.size(); ++i) {
    const auto parsed = LogPosition::Parse(positions[i].ToString());
    ASSERT_TRUE(parsed.has_value());
    std::vector<LogPosition> more;
    EXPECT_EQ(follow(*parsed, &more), rest[i]) << "after " << positions[i].ToString();
  }
  // stdout and stderr are stamped separately: a message may follow a later one. It is delivered,
  // the position does not move back, and a follow resumed from there repeats nothing.
  {
    std::vector<LogPosition> seen;
    std::string out;
    TimestampedLog log({}, [&](std::string_view data, const LogPosition& after) {
      out.append(data);
      seen.push_back(after);
    });
    ASSERT_TRUE(log.Piece("2026-12-06T18:00:05Z late\n", true).ok());
    ASSERT_TRUE(log.Piece("2026-12-06T18:00:04Z early\n", true).ok());
    EXPECT_EQ(out, "late\nearly\n");
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[1].ToString(), "2026-12-06T18:00:05Z 1");
    std::string again;
    TimestampedLog resumed(seen[1],
                           [&](std::string_view data, const LogPosition&) { again.append(data); });
    ASSERT_TRUE(resumed.Piece("2026-12-06T18:00:05Z late\n", true).ok());
    ASSERT_TRUE(resumed.Piece("2026-12-06T18:00:06Z next\n", true).ok());
    EXPECT_EQ(again, "next\n");
  }
  // The same instant written with an offset is the same position.
  std::vector<LogPosition> more;
  EXPECT_EQ(follow({"2026-12-06T19:00:01.500000000+01:00", 1}, &more), "\n");

  EXPECT_FALSE(LogPosition::Parse("no-count").has_value());
  EXPECT_FALSE(LogPosition::Parse("2026-12-06T18:00:00Z x").has_value());
  EXPECT_FALSE(ParseLogTime("2026-13-06T18:00:00Z").has_value());
  EXPECT_FALSE(ParseLogTime("2026-12-06T18:00:00").has_value());
  EXPECT_EQ(ParseLogTime("1970-01-01T00:00:01.25Z"), std::make_pair(std::int64_t{1}, 250'000'000));
  TimestampedLog bad({}, [](std::string_view, const LogPosition&) {});
  EXPECT_EQ(bad.Piece("no timestamp here\n", true).code(), StatusCode::kInvalidArgument);
}

TEST(LogDemuxerTest, RejectsMalformedHeader) {
  LogDemuxer demuxer([](LogDemuxer::Stream, std::string_view) {});
  Status s = demuxer.Feed("hello world, a TTY stream");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(demuxer.Feed(Frame(1, "x")).ok());
  LogDemuxer padding([](LogDemuxer::Stream, std::string_view) {});
  std::string bad = Frame(1, "x");
  bad[2] = 1;
  EXPECT_FALSE(padding.Feed(bad).ok());
}

// ---------------------------------------------------------------------------------------------
// FakeEngine

TEST(FakeEngineTest, PullWithCredentials) {
  FakeEngine engine;
  const std::string ref = "127.0.0.1:5000/team/py:3.11";
  engine.AddRemoteImage(ref);
  engine.SetRegistryCredentials("127.0.0.1:5000", "alice", "right-pw");

  std::vector<std::string> progress;
  auto collect = [&](std::string_view l) { progress.emplace_back(l); };
  Status wrong =
      engine.PullImage(ref, RegistryAuth{"alice", "wrong-pw-123", "127.0.0.1:5000"}, collect);
  EXPECT_EQ(wrong.code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(StartsWith(wrong.message(), "unauthorized: pulling " + ref + " from 127.0.0.1:5000"))
      << wrong.message();
  EXPECT_EQ(wrong.message().find("wrong-pw-123"), std::string::npos);
  EXPECT_EQ(engine.PullImage(ref, std::nullopt, collect).code(), StatusCode::kUnauthenticated);
  EXPECT_FALSE(engine.HasImage(ref));

  ASSERT_TRUE(
      engine.PullImage(ref, RegistryAuth{"alice", "right-pw", "127.0.0.1:5000"}, collect).ok());
  EXPECT_TRUE(engine.HasImage(ref));
  EXPECT_EQ(engine.pulls(), 3);
  ASSERT_TRUE(engine.last_pull_auth().has_value());
  EXPECT_EQ(engine.last_pull_auth()->username, "alice");
  EXPECT_FALSE(progress.empty());
  for (const std::string& line : progress) EXPECT_EQ(line.find("pw"), std::string::npos);
  auto info = engine.InspectImage(ref);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->repo_tags, std::vector<std::string>{ref});

  engine.AddImage("python:3.11-slim");
  EXPECT_TRUE(engine.HasImage("docker.io/library/python:3.11-slim"));
  EXPECT_TRUE(engine.HasImage("library/python:3.11-slim"));
  EXPECT_FALSE(engine.HasImage("python:3.12-slim"));

  EXPECT_EQ(engine
                .PullImage("127.0.0.1:5000/team/none:1",
                           RegistryAuth{"alice", "right-pw", "127.0.0.1:5000"}, nullptr)
                .code(),
            StatusCode::kNotFound);
  EXPECT_EQ(engine.PullImage("Bad Ref", std::nullopt, nullptr).code(),
            StatusCode::kInvalidArgument);
}

TEST(FakeEngineTest, BuildsAreCountedAndCanFail) {
  FakeEngine engine;
  BuildRequest req;
  req.tag = "trainyard/env:abc";
  req.labels = {{"trainyard.env", "abc"}};
  std::vector<std::string> out;
  ASSERT_TRUE(engine.BuildImage(req, [&](std::string_view l) { out.emplace_back(l); }).ok());
  EXPECT_EQ(engine.builds(), 1);
  EXPECT_EQ(engine.last_build()->tag, "trainyard/env:abc");
  EXPECT_EQ(out.back(), "Successfully tagged trainyard/env:abc");
  auto info = engine.InspectImage("trainyard/env:abc");
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->labels.at("trainyard.env"), "abc");

  engine.SetBuildFailure("The command '/bin/sh -c exit 1' returned a non-zero code: 1");
  req.tag = "trainyard/env:def";
  Status failed = engine.BuildImage(req, nullptr);
  EXPECT_EQ(failed.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(failed.message().find("returned a non-zero code: 1"), std::string::npos);
  EXPECT_FALSE(engine.HasImage("trainyard/env:def"));
  EXPECT_EQ(engine.builds(), 2);

  engine.SetAvailable(false);
  EXPECT_EQ(engine.Ping().code(), StatusCode::kUnavailable);
  EXPECT_EQ(engine.BuildImage(req, nullptr).code(), StatusCode::kUnavailable);
}

TEST(FakeEngineTest, TagAndPushWithCredentials) {
  FakeEngine engine;
  engine.AddImage("python:3.11-slim", {{"a", "b"}});
  engine.SetRegistryCredentials("127.0.0.1:5000", "alice", "right-pw");
  const std::string ref = "127.0.0.1:5000/team/py:v1";
  const RegistryAuth good{"alice", "right-pw", "127.0.0.1:5000"};

  EXPECT_EQ(engine.TagImage("python:3.12-slim", ref).code(), StatusCode::kNotFound);
  EXPECT_EQ(engine.TagImage("python:3.11-slim", "Bad Ref").code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(engine.TagImage("python:3.11-slim", ref).ok());
  auto source = engine.InspectImage("python:3.11-slim");
  auto tagged = engine.InspectImage(ref);
  ASSERT_TRUE(source.ok() && source->has_value() && tagged.ok() && tagged->has_value());
  EXPECT_EQ((*tagged)->id, (*source)->id);
  EXPECT_EQ((*tagged)->labels.at("a"), "b");
  EXPECT_EQ((*tagged)->repo_tags, (std::vector<std::string>{ref, "python:3.11-slim"}));
  // By id, and with no tag meaning "latest".
  ASSERT_TRUE(engine.TagImage((*source)->id, "127.0.0.1:5000/team/py").ok());
  EXPECT_TRUE(engine.HasImage("127.0.0.1:5000/team/py:latest"));

  std::vector<std::string> progress;
  auto collect = [&](std::string_view l) { progress.emplace_back(l); };
  Status wrong =
      engine.PushImage(ref, RegistryAuth{"alice", "wrong-pw-123", "127.0.0.1:5000"}, collect);
  EXPECT_EQ(wrong.code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(StartsWith(wrong.message(), "unauthorized: pushing " + ref + " to 127.0.0.1:5000"))
      << wrong.message();
  EXPECT_EQ(wrong.message().find("wrong-pw-123"), std::string::npos);
  EXPECT_EQ(engine.PushImage(ref, std::nullopt, collect).code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(engine.PushImage("127.0.0.1:5000/team/none:1", good, collect).code(),
            StatusCode::kNotFound);
  EXPECT_TRUE(engine.pushed().empty());
  EXPECT_TRUE(progress.empty());

  ASSERT_TRUE(engine.PushImage(ref, good, collect).ok());
  EXPECT_EQ(engine.pushed(), std::vector<std::string>{ref});
  EXPECT_EQ(engine.pushes(), 4);
  ASSERT_TRUE(engine.last_push_auth().has_value());
  EXPECT_EQ(engine.last_push_auth()->username, "alice");
  EXPECT_FALSE(progress.empty());
  for (const std::string& line : progress) EXPECT_EQ(line.find("pw"), std::string::npos);

  // What was pushed can be pulled back.
  ASSERT_TRUE(engine.RemoveImage(ref, false).ok());
  EXPECT_FALSE(engine.HasImage(ref));
  auto untagged = engine.InspectImage("python:3.11-slim");
  ASSERT_TRUE(untagged.ok() && untagged->has_value());
  EXPECT_EQ((*untagged)->repo_tags,
            (std::vector<std::string>{"127.0.0.1:5000/team/py:latest", "python:3.11-slim"}));
  ASSERT_TRUE(engine.PullImage(ref, good, nullptr).ok());
  EXPECT_TRUE(engine.HasImage(ref));

  engine.SetAvailable(false);
  EXPECT_EQ(engine.TagImage("python:3.11-slim", ref).code(), StatusCode::kUnavailable);
  EXPECT_EQ(engine.PushImage(ref, good, nullptr).code(), StatusCode::kUnavailable);
}

TEST(FakeEngineTest, ContainerRunsLogsAndExitCode) {
  FakeEngine engine;
  engine.AddImage("python:3.11-slim");
  engine.SetRunner([](const ContainerConfig& c, const TextSink& log) {
    log("hello from " + c.cmd.at(0) + "\n");
    log("to stderr\n");
    return 3;
  });
  ContainerConfig config;
  config.image = "python:3.11-slim";
  config.cmd = {"train.py"};
  config.labels = {{"trainyard.run", "r1"}};
  EXPECT_EQ(engine.CreateContainer(ContainerConfig{.image = "nope:1"}).status().code(),
            StatusCode::kNotFound);
  StatusOr<std::string> id = engine.CreateContainer(config);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(engine.creates(), 2);
  EXPECT_EQ(engine.last_container_config()->cmd, config.cmd);
  EXPECT_EQ(engine.InspectContainer(*id)->status, "created");
  ASSERT_TRUE(engine.StartContainer(*id).ok());
  std::string logs;
  ASSERT_TRUE(engine.FollowLogs(*id, [&](std::string_view s) { logs.append(s); }).ok());
  EXPECT_EQ(logs, "hello from train.py\nto stderr\n");
  StatusOr<int> code = engine.WaitContainer(*id);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 3);
  StatusOr<ContainerState> state = engine.InspectContainer(*id);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->status, "exited");
  EXPECT_FALSE(state->running);
  EXPECT_EQ(state->exit_code, 3);

  auto listed = engine.ListContainers("trainyard.run", "r1");
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, *id);
  EXPECT_EQ(engine.ListContainers("trainyard.run", "r2")->size(), 0u);
  EXPECT_EQ(engine.ListContainers("trainyard.run", "")->size(), 1u);

  ASSERT_TRUE(engine.RemoveContainer(*id, false).ok());
  EXPECT_TRUE(engine.RemoveContainer(*id, false).ok());  // gone: still OK
  EXPECT_EQ(engine.InspectContainer(*id).status().code(), StatusCode::kNotFound);
}

TEST(FakeEngineTest, KillEndsABlockingRunnerWith137) {
  FakeEngine engine;
  engine.AddImage("img");
  std::atomic<bool> runner_saw_stop{false};
  engine.SetRunner([&](const ContainerConfig&, const TextSink& log) {
    log("started\n");
    bool stopped = FakeEngine::WaitForStop();
    runner_saw_stop = stopped && FakeEngine::StopRequested();
    log("after kill: must not appear\n");
    return 0;
  });
  StatusOr<std::string> id = engine.CreateContainer({.name = "job-1", .image = "img"});
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(engine.StartContainer("job-1").ok());  // by name
  ASSERT_TRUE(engine.WaitUntilRunning(*id));
  EXPECT_EQ(engine.RemoveContainer(*id, false).code(), StatusCode::kFailedPrecondition);

  std::string logs;
  std::thread follower([&] {
    ASSERT_TRUE(engine.FollowLogs(*id, [&](std::string_view s) { logs.append(s); }).ok());
  });
  StatusOr<int> code = StatusOr<int>(Internal("not waited"));
  std::thread waiter([&] { code = engine.WaitContainer(*id); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(engine.InspectContainer(*id)->running);
  ASSERT_TRUE(engine.KillContainer(*id).ok());
  waiter.join();
  follower.join();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 137);
  EXPECT_EQ(logs, "started\n");
  EXPECT_TRUE(engine.KillContainer(*id).ok());  // not running: OK
  EXPECT_TRUE(engine.StopContainer(*id, 1).ok());

  // Stop works the same, and the destructor kills what still runs.
  StatusOr<std::string> id2 = engine.CreateContainer({.image = "img"});
  ASSERT_TRUE(engine.StartContainer(*id2).ok());
  ASSERT_TRUE(engine.StopContainer(*id2, 10).ok());
  EXPECT_EQ(*engine.WaitContainer(*id2), 137);
  StatusOr<std::string> id3 = engine.CreateContainer({.image = "img"});
  ASSERT_TRUE(engine.StartContainer(*id3).ok());
  ASSERT_TRUE(engine.WaitUntilRunning(*id3));
  EXPECT_EQ(engine.RemoveImage("img", false).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine.RemoveImage("other", false).code(), StatusCode::kNotFound);
}

TEST(FakeEngineTest, RunnersRunConcurrently) {
  FakeEngine engine;
  engine.AddImage("img");
  engine.SetRunner([](const ContainerConfig& c, const TextSink& log) {
    for (int i = 0; i < 50; ++i) log(c.name + " " + std::to_string(i) + "\n");
    return static_cast<int>(c.name.size());
  });
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::string name = "c" + std::string(static_cast<size_t>(t) + 1, 'x');
      StatusOr<std::string> id = engine.CreateContainer({.name = name, .image = "img"});
      if (!id.ok() || !engine.StartContainer(*id).ok()) return;
      std::string logs;
      if (!engine.FollowLogs(*id, [&](std::string_view s) { logs.append(s); }).ok()) return;
      StatusOr<int> code = engine.WaitContainer(*id);
      if (code.ok() && *code == static_cast<int>(name.size()) &&
          logs.find(name + " 49\n") != std::string::npos) {
        ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 8);
}

// ---------------------------------------------------------------------------------------------
// HttpEngine against a scripted server on a unix socket

struct Canned {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::string> chunks;  // when set, sent one by one with a pause (chunked encoding)
};

struct Seen {
  std::string request_line;
  std::string headers;
  std::string body;
};

// Answers each connection's requests with the next canned response; records what it got.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::vector<Canned> script)
      : path_(fs::temp_directory_path() / ("ty-docker-" + RandomHex(6) + ".sock")),
        script_(std::move(script)) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    ::unlink(path_.c_str());
  }
  std::string path() const { return path_.string(); }
  std::vector<Seen> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  void Serve() {
    for (const Canned& c : script_) {
      int conn = ::accept(fd_, nullptr, nullptr);
      if (conn < 0) return;
      Seen s = ReadRequest(conn);
      {
        std::lock_guard<std::mutex> lock(mu_);
        seen_.push_back(s);
      }
      std::string head = "HTTP/1.1 " + std::to_string(c.status) +
                         " X\r\nContent-Type: " + c.content_type + "\r\nConnection: close\r\n";
      if (c.chunks.empty()) {
        head += "Content-Length: " + std::to_string(c.body.size()) + "\r\n\r\n" + c.body;
        WriteAll(conn, head);
      } else {
        WriteAll(conn, head + "Transfer-Encoding: chunked\r\n\r\n");
        for (const std::string& chunk : c.chunks) {
          char size[32];
          std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
          WriteAll(conn, size + chunk + "\r\n");
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        WriteAll(conn, "0\r\n\r\n");
      }
      ::close(conn);
    }
  }
  static void WriteAll(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  static Seen ReadRequest(int fd) {
    std::string data;
    char buf[65536];
    size_t header_end = std::string::npos;
    while (header_end == std::string::npos) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) return {};
      data.append(buf, static_cast<size_t>(n));
      header_end = data.find("\r\n\r\n");
    }
    Seen s;
    s.headers = data.substr(0, header_end);
    s.request_line = s.headers.substr(0, s.headers.find("\r\n"));
    size_t length = 0;
    std::string lower = s.headers;
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (size_t p = lower.find("content-length: "); p != std::string::npos) {
      length = std::stoul(lower.substr(p + 16));
    }
    s.body = data.substr(header_end + 4);
    while (s.body.size() < length) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      s.body.append(buf, static_cast<size_t>(n));
    }
    return s;
  }

  fs::path path_;
  std::vector<Canned> script_;
  int fd_ = -1;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Seen> seen_;
};

std::string HeaderValue(const std::string& headers, const std::string& name) {
  size_t p = headers.find("\r\n" + name + ": ");
  if (p == std::string::npos) return "";
  p += name.size() + 4;
  return headers.substr(p, headers.find("\r\n", p) - p);
}

TEST(HttpEngineTest, UnreachableSocketIsUnavailable) {
  HttpEngine engine("/nonexistent/docker.sock");
  Status s = engine.Ping();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(StartsWith(s.message(), "cannot reach the Docker engine at /nonexistent/docker.sock"))
      << s.message();
  EXPECT_EQ(engine.InspectImage("x").status().code(), StatusCode::kUnavailable);
}

TEST(HttpEngineTest, SocketPathFromDockerHost) {
  const char* old = std::getenv("DOCKER_HOST");
  std::string saved = old != nullptr ? old : "";
  setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock", 1);
  EXPECT_EQ(DefaultDockerSocketPath(), "/run/user/1000/docker.sock");
  setenv("DOCKER_HOST", "tcp://10.0.0.1:2375", 1);
  EXPECT_EQ(DefaultDockerSocketPath(), "/var/run/docker.sock");
  unsetenv("DOCKER_HOST");
  EXPECT_EQ(DefaultDockerSocketPath(), "/var/run/docker.sock");
  if (old != nullptr) setenv("DOCKER_HOST", saved.c_str(), 1);
}

TEST(HttpEngineTest, PullStreamsProgressAndMapsAuthErrors) {
  const std::string password = "Pa55-wrong-secret";
  ScriptedServer server({
      {200,
       "application/json",
       "",
       {"{\"status\":\"Pulling from team/py\",\"id\":\"3.11\"}\r\n{\"status\":\"Downl",
        "oading\",\"progress\":\"[=>  ] 1MB/2MB\",\"id\":\"abc\"}\r\n",
        "{\"status\":\"Status: Downloaded newer image for 127.0.0.1:5000/team/py:3.11\"}\r\n"}},
      {200,
       "application/json",
       "",
       {"{\"status\":\"Pulling from team/py\",\"id\":\"3.11\"}\r\n",
        "{\"errorDetail\":{\"message\":\"Head \\\"http://127.0.0.1:5000/v2/\\\": no basic auth "
        "credentials for " +
            password + "\"},\"error\":\"x\"}\r\n"}},
      {500, "application/json",
       "{\"message\":\"Get \\\"http://127.0.0.1:5000/v2/\\\": unauthorized: authentication "
       "required\"}"},
      {404, "application/json", "{\"message\":\"manifest unknown: manifest unknown\"}"},
  });
  HttpEngine engine(server.path());
  std::vector<std::string> lines;
  auto sink = [&](std::string_view l) { lines.emplace_back(l); };
  RegistryAuth auth{"alice", password, "127.0.0.1:5000"};

  ASSERT_TRUE(engine.PullImage("127.0.0.1:5000/team/py:3.11", auth, sink).ok());
  EXPECT_EQ(lines, (std::vector<std::string>{
                       "3.11: Pulling from team/py", "abc: Downloading [=>  ] 1MB/2MB",
                       "Status: Downloaded newer image for 127.0.0.1:5000/team/py:3.11"}));

  lines.clear();
  Status s = engine.PullImage("127.0.0.1:5000/team/py:3.11", auth, sink);
  EXPECT_EQ(s.code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(StartsWith(s.message(),
                         "unauthorized: pulling 127.0.0.1:5000/team/py:3.11 from 127.0.0.1:5000"))
      << s.message();
  EXPECT_NE(s.message().find("no basic auth credentials"), std::string::npos);
  EXPECT_EQ(s.message().find(password), std::string::npos) << s.message();

  Status s2 = engine.PullImage("127.0.0.1:5000/team/py@sha256:" + std::string(64, 'c'), auth, sink);
  EXPECT_EQ(s2.code(), StatusCode::kUnauthenticated);
  Status s3 = engine.PullImage("127.0.0.1:5000/team/none:1", std::nullopt, sink);
  EXPECT_EQ(s3.code(), StatusCode::kNotFound);
  EXPECT_NE(s3.message().find("manifest unknown"), std::string::npos);
  for (const std::string& l : lines) EXPECT_EQ(l.find(password), std::string::npos);

  std::vector<Seen> seen = server.seen();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0].request_line,
            "POST /v1.41/images/create?fromImage=127.0.0.1%3A5000%2Fteam%2Fpy&tag=3.11 HTTP/1.1");
  EXPECT_NE(seen[2].request_line.find("&tag=sha256%3Accc"), std::string::npos);
  std::string decoded;
  ASSERT_TRUE(Base64Decode(HeaderValue(seen[0].headers, "X-Registry-Auth"), &decoded));
  json auth_json = json::parse(decoded);
  EXPECT_EQ(auth_json["username"], "alice");
  EXPECT_EQ(auth_json["password"], password);
  EXPECT_EQ(auth_json["serveraddress"], "127.0.0.1:5000");
  EXPECT_EQ(HeaderValue(seen[3].headers, "X-Registry-Auth"), "");
}

TEST(HttpEngineTest, BuildStreamsLinesAndReportsFailingStep) {
  ScriptedServer server({
      {200,
       "application/json",
       "",
       {"{\"stream\":\"Step 1/2 : FROM x\\n\"}\r\n{\"stream\":\" ---> abc\\n\"}\r\n{\"str",
        "eam\":\"hello-\"}\r\n{\"stream\":\"from-build\\nnext\"}\r\n{\"stream\":\" line\\n\"}\r\n",
        "{\"aux\":{\"ID\":\"sha256:1\"}}\r\n{\"stream\":\"Successfully tagged t:1\\n\"}\r\n"}},
      {200,
       "application/json",
       "",
       {"{\"stream\":\"Step 2/2 : RUN exit 7\\n\"}\r\n",
        "{\"errorDetail\":{\"code\":7,\"message\":\"The command '/bin/sh -c exit 7' returned a "
        "non-zero code: 7\"},\"error\":\"The command '/bin/sh -c exit 7' returned a non-zero "
        "code: 7\"}\r\n"}},
      {400, "application/json", "{\"message\":\"dockerfile parse error line 1: unknown\"}"},
  });
  HttpEngine engine(server.path());
  BuildRequest req;
  req.context_tar = *TarFiles({{"Dockerfile", "FROM x\n"}});
  req.tag = "t:1";
  req.labels = {{"a", "b"}};
  req.build_args = {{"V", "1 2"}};
  req.registry_auth = {{"u", "build-secret", "127.0.0.1:5000"}};
  std::vector<std::string> lines;
  auto sink = [&](std::string_view l) { lines.emplace_back(l); };
  ASSERT_TRUE(engine.BuildImage(req, sink).ok());
  EXPECT_EQ(lines, (std::vector<std::string>{"Step 1/2 : FROM x", " ---> abc", "hello-from-build",
                                             "next line", "Successfully tagged t:1"}));
  Status failed = engine.BuildImage(req, sink);
  EXPECT_EQ(failed.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(failed.message().find("returned a non-zero code: 7"), std::string::npos);
  EXPECT_EQ(engine.BuildImage(req, sink).code(), StatusCode::kInvalidArgument);

  std::vector<Seen> seen = server.seen();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].body, req.context_tar);
  EXPECT_EQ(HeaderValue(seen[0].headers, "Content-Type"), "application/x-tar");
  const std::string& line = seen[0].request_line;
  EXPECT_NE(line.find("t=t%3A1"), std::string::npos) << line;
  EXPECT_NE(line.find("labels=%7B%22a%22%3A%22b%22%7D"), std::string::npos) << line;
  EXPECT_NE(line.find("buildargs=%7B%22V%22%3A%221%202%22%7D"), std::string::npos) << line;
  EXPECT_NE(line.find("pull=0&rm=1&forcerm=1"), std::string::npos) << line;
  std::string decoded;
  ASSERT_TRUE(Base64Decode(HeaderValue(seen[0].headers, "X-Registry-Config"), &decoded));
  EXPECT_EQ(json::parse(decoded)["127.0.0.1:5000"]["password"], "build-secret");
}

TEST(HttpEngineTest, TagAndPushMapStatusAndStreamErrors) {
  const std::string password = "Pa55-push-secret";
  ScriptedServer server({
      {201, "text/plain", ""},
      {404, "application/json", "{\"message\":\"No such image: nope:1\"}"},
      {200,
       "application/json",
       "",
       {"{\"status\":\"The push refers to repository [127.0.0.1:5000/team/py]\"}\r\n{\"stat",
        "us\":\"Pushing\",\"progressDetail\":{\"current\":512,\"total\":1024},\"progress\":\"[=> "
        " ] 512B/1KB\",\"id\":\"abc\"}\r\n",
        "{\"status\":\"v1: digest: sha256:" + std::string(64, 'd') +
            " size: 528\"}\r\n{\"progressDetail\":{},\"aux\":{\"Tag\":\"v1\"}}\r\n"}},
      {200,
       "application/json",
       "",
       {"{\"status\":\"The push refers to repository [127.0.0.1:5000/team/py]\"}\r\n",
        "{\"errorDetail\":{\"message\":\"unauthorized: authentication required for alice:" +
            password + "\"},\"error\":\"unauthorized: authentication required\"}\r\n"}},
      {200,
       "application/json",
       "",
       {"{\"errorDetail\":{\"message\":\"Get \\\"https://127.0.0.1:5001/v2/\\\": dial tcp "
        "127.0.0.1:5001: connect: connection refused\"},\"error\":\"x\"}\r\n"}},
      {404, "application/json",
       "{\"message\":\"An image does not exist locally with the tag: 127.0.0.1:5000/team/none\"}"},
      {500, "application/json", "{\"message\":\"something broke for " + password + "\"}"},
  });
  HttpEngine engine(server.path());
  std::vector<std::string> lines;
  auto sink = [&](std::string_view l) { lines.emplace_back(l); };
  const RegistryAuth auth{"alice", password, "127.0.0.1:5000"};

  ASSERT_TRUE(engine.TagImage("sha256:abc", "127.0.0.1:5000/team/py:v1").ok());
  Status no_source = engine.TagImage("nope:1", "127.0.0.1:5000/team/py");
  EXPECT_EQ(no_source.code(), StatusCode::kNotFound);
  EXPECT_NE(no_source.message().find("No such image: nope:1"), std::string::npos);
  EXPECT_EQ(engine.TagImage("x", "Bad Ref").code(), StatusCode::kInvalidArgument);

  ASSERT_TRUE(engine.PushImage("127.0.0.1:5000/team/py:v1", auth, sink).ok());
  EXPECT_EQ(lines, (std::vector<std::string>{
                       "The push refers to repository [127.0.0.1:5000/team/py]",
                       "abc: Pushing [=>  ] 512B/1KB",
                       "v1: digest: sha256:" + std::string(64, 'd') + " size: 528"}));

  Status refused = engine.PushImage("127.0.0.1:5000/team/py:v1", auth, sink);
  EXPECT_EQ(refused.code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(StartsWith(refused.message(),
                         "unauthorized: pushing 127.0.0.1:5000/team/py:v1 to 127.0.0.1:5000"))
      << refused.message();
  EXPECT_NE(refused.message().find("authentication required"), std::string::npos);
  EXPECT_EQ(refused.message().find(password), std::string::npos) << refused.message();

  Status unreachable = engine.PushImage("127.0.0.1:5001/team/py", std::nullopt, sink);
  EXPECT_EQ(unreachable.code(), StatusCode::kUnavailable) << unreachable.ToString();
  EXPECT_TRUE(StartsWith(unreachable.message(),
                         "pushing 127.0.0.1:5001/team/py:latest to 127.0.0.1:5001: "))
      << unreachable.message();
  EXPECT_EQ(engine.PushImage("127.0.0.1:5000/team/none", auth, sink).code(), StatusCode::kNotFound);
  Status broken = engine.PushImage("127.0.0.1:5000/team/py:v1", auth, sink);
  EXPECT_EQ(broken.code(), StatusCode::kInternal);
  EXPECT_NE(broken.message().find("something broke for ***"), std::string::npos)
      << broken.message();
  EXPECT_EQ(broken.message().find(password), std::string::npos) << broken.message();
  EXPECT_EQ(
      engine.PushImage("127.0.0.1:5000/team/py@sha256:" + std::string(64, 'c'), auth, sink).code(),
      StatusCode::kInvalidArgument);
  for (const std::string& l : lines) EXPECT_EQ(l.find(password), std::string::npos);

  std::vector<Seen> seen = server.seen();
  ASSERT_EQ(seen.size(), 7u);
  EXPECT_EQ(seen[0].request_line,
            "POST /v1.41/images/sha256:abc/tag?repo=127.0.0.1%3A5000%2Fteam%2Fpy&tag=v1 HTTP/1.1");
  EXPECT_EQ(seen[1].request_line,
            "POST /v1.41/images/nope:1/tag?repo=127.0.0.1%3A5000%2Fteam%2Fpy&tag=latest HTTP/1.1");
  EXPECT_EQ(seen[2].request_line, "POST /v1.41/images/127.0.0.1:5000/team/py/push?tag=v1 HTTP/1.1");
  std::string decoded;
  ASSERT_TRUE(Base64Decode(HeaderValue(seen[2].headers, "X-Registry-Auth"), &decoded));
  json auth_json = json::parse(decoded);
  EXPECT_EQ(auth_json["username"], "alice");
  EXPECT_EQ(auth_json["password"], password);
  EXPECT_EQ(auth_json["serveraddress"], "127.0.0.1:5000");
  // Without credentials the header is still sent (the engine refuses a push without it).
  ASSERT_TRUE(Base64Decode(HeaderValue(seen[4].headers, "X-Registry-Auth"), &decoded));
  EXPECT_EQ(decoded, "{}");
}

TEST(HttpEngineTest, ContainerCallsMapStatusAndBodies) {
  ScriptedServer server({
      {201, "application/json", "{\"Id\":\"c0ffee\",\"Warnings\":[]}"},
      {404, "application/json", "{\"message\":\"No such image: nope:1\"}"},
      {409, "application/json", "{\"message\":\"Conflict. The container name is in use\"}"},
      {200, "application/json", "{\"StatusCode\":3}"},
      {404, "application/json", "{\"message\":\"No such container: gone\"}"},
      {200, "application/json",
       "{\"Id\":\"c0ffee\",\"State\":{\"Status\":\"exited\",\"Running\":false,\"ExitCode\":137,"
       "\"OOMKilled\":true,\"Error\":\"\",\"StartedAt\":\"s\",\"FinishedAt\":\"f\"}}"},
      {200, "application/json",
       "[{\"Id\":\"c0ffee\",\"Image\":\"img\",\"State\":\"running\",\"Labels\":{\"k\":\"v\"}}]"},
      {409, "application/json", "{\"message\":\"Container c0ffee is not running\"}"},
      {304, "application/json", ""},
      {200,
       "application/vnd.docker.raw-stream",
       "",
       {Frame(1, "2026-12-06T18:00:00.1Z out ") +
            Frame(2, "2026-12-06T18:00:00.2Z er").substr(0, 5),
        Frame(2, "2026-12-06T18:00:00.2Z er").substr(5) + Frame(1, "2026-12-06T18:00:00.3Z !")}},
  });
  HttpEngine engine(server.path());
  ContainerConfig config;
  config.name = "run-1";
  config.image = "img";
  config.cmd = {"python", "train.py"};
  config.entrypoint = std::vector<std::string>{};
  config.env = {"A=1"};
  config.labels = {{"trainyard.run", "r1"}};
  config.mounts = {{"/host/data", "/data", true}};
  config.shm_size_bytes = 1 << 30;
  config.nano_cpus = 2'000'000'000;
  config.pids_limit = 4096;
  config.log_max_bytes = 1 << 20;
  config.log_max_files = 2;
  config.network_mode = "trainyard-net";
  config.network_aliases = {"node-0"};
  config.gpus = GpuRequest{.count = -1};
  StatusOr<std::string> id = engine.CreateContainer(config);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(*id, "c0ffee");
  Status not_found = engine.CreateContainer(config).status();
  EXPECT_EQ(not_found.code(), StatusCode::kNotFound);
  EXPECT_NE(not_found.message().find("No such image: nope:1"), std::string::npos);
  EXPECT_EQ(engine.CreateContainer(config).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(*engine.WaitContainer("c0ffee"), 3);
  EXPECT_TRUE(engine.RemoveContainer("gone", true).ok());
  StatusOr<ContainerState> state = engine.InspectContainer("c0ffee");
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_EQ(state->status, "exited");
  EXPECT_EQ(state->exit_code, 137);
  EXPECT_TRUE(state->oom_killed);
  EXPECT_EQ(state->finished_at, "f");
  auto list = engine.ListContainers("k", "v");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].labels.at("k"), "v");
  EXPECT_TRUE(engine.KillContainer("c0ffee").ok());
  EXPECT_TRUE(engine.StopContainer("c0ffee", 1).ok());
  std::string logs;
  ASSERT_TRUE(engine.FollowLogs("c0ffee", [&](std::string_view s) { logs.append(s); }).ok());
  EXPECT_EQ(logs, "out er!");

  std::vector<Seen> seen = server.seen();
  ASSERT_EQ(seen.size(), 10u);
  EXPECT_EQ(seen[0].request_line, "POST /v1.41/containers/create?name=run-1 HTTP/1.1");
  json body = json::parse(seen[0].body);
  EXPECT_EQ(body["Image"], "img");
  EXPECT_EQ(body["Cmd"], json({"python", "train.py"}));
  EXPECT_EQ(body["Entrypoint"], json::array());
  EXPECT_EQ(body["Tty"], false);
  EXPECT_EQ(body["Labels"]["trainyard.run"], "r1");
  EXPECT_EQ(body["HostConfig"]["Mounts"][0]["Type"], "bind");
  EXPECT_EQ(body["HostConfig"]["Mounts"][0]["ReadOnly"], true);
  EXPECT_EQ(body["HostConfig"]["ShmSize"], 1 << 30);
  EXPECT_EQ(body["HostConfig"]["NanoCpus"], 2'000'000'000);
  EXPECT_FALSE(body["HostConfig"].contains("Memory"));
  EXPECT_EQ(body["HostConfig"]["PidsLimit"], 4096);
  EXPECT_EQ(
      body["HostConfig"]["LogConfig"],
      json({{"Type", "json-file"}, {"Config", {{"max-size", "1048576"}, {"max-file", "2"}}}}));
  EXPECT_EQ(body["HostConfig"]["DeviceRequests"][0]["Count"], -1);
  EXPECT_EQ(body["HostConfig"]["DeviceRequests"][0]["Capabilities"], json({{"gpu"}}));
  EXPECT_EQ(body["NetworkingConfig"]["EndpointsConfig"]["trainyard-net"]["Aliases"],
            json({"node-0"}));
  EXPECT_EQ(seen[3].request_line, "POST /v1.41/containers/c0ffee/wait HTTP/1.1");
  EXPECT_EQ(seen[4].request_line, "DELETE /v1.41/containers/gone?force=1&v=1 HTTP/1.1");
  EXPECT_EQ(seen[6].request_line,
            "GET /v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22k%3Dv%22%5D%7D "
            "HTTP/1.1");
  EXPECT_EQ(seen[8].request_line, "POST /v1.41/containers/c0ffee/stop?t=1 HTTP/1.1");
  EXPECT_EQ(seen[9].request_line,
            "GET /v1.41/containers/c0ffee/logs?follow=1&stdout=1&stderr=1&timestamps=1 HTTP/1.1");
}

TEST(HttpEngineTest, ConcurrentCallsAreSafe) {
  std::vector<Canned> script(40, Canned{200, "text/plain", "OK"});
  ScriptedServer server(script);
  HttpEngine engine(server.path());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) ok += engine.Ping().ok() ? 1 : 0;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 40);
}

}  // namespace
}  // namespace trainyard::docker

#include "trainyard/cas/stat_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

#include "trainyard/cas/io.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cas::internal {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kMagic = "trainyard-statcache 2 ";
constexpr std::string_view kSnapshot = "snapshot ";
constexpr std::string_view kNoSnapshot = "-";
constexpr std::string_view kEnd = "end ";
// A cache file larger than this is not ours (or not worth it); it is ignored.
constexpr std::uint64_t kMaxCacheBytes = 512ull << 20;

// A fast 128-bit hash (two 64-bit lanes), as 32 hex digits. Not cryptographic: it names cache
// files and detects torn or damaged ones, and it avoids the first-use cost of the crypto
// library (about 1 ms) on the path of an unchanged re-snapshot. Anyone who can write the cache
// folder can forge a cache whatever the checksum, so strength would buy nothing.
std::string Hash128Hex(std::string_view data) {
  constexpr std::uint64_t kMul1 = 0x9E3779B97F4A7C15ull;
  constexpr std::uint64_t kMul2 = 0xC2B2AE3D27D4EB4Full;
  auto rotl = [](std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); };
  std::uint64_t a = 0x243F6A8885A308D3ull ^ data.size();
  std::uint64_t b = 0x13198A2E03707344ull ^ (data.size() * kMul1);
  size_t i = 0;
  for (; i + 16 <= data.size(); i += 16) {
    std::uint64_t w1 = 0;
    std::uint64_t w2 = 0;
    std::memcpy(&w1, data.data() + i, 8);
    std::memcpy(&w2, data.data() + i + 8, 8);
    a = rotl(a ^ (w1 * kMul2), 31) * kMul1;
    b = rotl(b ^ (w2 * kMul1), 29) * kMul2;
  }
  std::uint64_t tail1 = 0;
  std::uint64_t tail2 = 0;
  const size_t rest = data.size() - i;
  if (rest > 0) std::memcpy(&tail1, data.data() + i, std::min<size_t>(rest, 8));
  if (rest > 8) std::memcpy(&tail2, data.data() + i + 8, rest - 8);
  a = rotl(a ^ (tail1 * kMul2), 31) * kMul1;
  b = rotl(b ^ (tail2 * kMul1), 29) * kMul2;
  // Final mixing (splitmix64's finaliser), each lane folding in the other.
  auto mix = [](std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const std::uint64_t h1 = mix(a ^ rotl(b, 17));
  const std::uint64_t h2 = mix(b ^ rotl(a, 43) ^ kMul1);
  char out[33];
  std::snprintf(out, sizeof out, "%016llx%016llx", static_cast<unsigned long long>(h1),
                static_cast<unsigned long long>(h2));
  return std::string(out, 32);
}
constexpr size_t kSumHex = 32;

std::int64_t Nanos(const struct timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A cursor over the cache file's bytes; every Read* returns false on malformed input.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool Literal(std::string_view s) {
    if (data_.substr(0, s.size()) != s) return false;
    data_.remove_prefix(s.size());
    return true;
  }
  template <typename Int>
  bool Number(Int* out, char sep) {
    const char* end = data_.data() + data_.size();
    auto [ptr, ec] = std::from_chars(data_.data(), end, *out);
    if (ec != std::errc() || ptr == end || *ptr != sep) return false;
    data_.remove_prefix(static_cast<size_t>(ptr - data_.data()) + 1);
    return true;
  }
  // `n` raw bytes followed by '\n'.
  bool Bytes(size_t n, std::string_view* out) {
    if (data_.size() < n + 1 || data_[n] != '\n') return false;
    *out = data_.substr(0, n);
    data_.remove_prefix(n + 1);
    return true;
  }
  bool Word(size_t n, char sep, std::string_view* out) {
    if (data_.size() < n + 1 || data_[n] != sep) return false;
    *out = data_.substr(0, n);
    data_.remove_prefix(n + 1);
    return true;
  }
  bool AtEnd() const { return data_.empty(); }
  std::string_view rest() const { return data_; }

 private:
  std::string_view data_;
};

// Reads the whole file at `path` and its stat; false when it cannot be read.
bool ReadWithStat(const fs::path& path, std::string* data, struct stat* st) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) return false;
  if (::fstat(fd.get(), st) != 0 || !S_ISREG(st->st_mode)) return false;
  const auto size = static_cast<std::uint64_t>(st->st_size);
  if (size > kMaxCacheBytes) return false;
  data->resize(static_cast<size_t>(size));
  size_t used = 0;
  while (used < data->size()) {
    ssize_t n = ReadSome(fd.get(), data->data() + used, data->size() - used);
    if (n <= 0) return false;  // An error, or the file shrank: not a complete cache.
    used += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

FileStat FileStat::Of(const struct stat& st) {
  FileStat f;
  f.size = static_cast<std::uint64_t>(st.st_size);
  f.mtime_ns = Nanos(st.st_mtim);
  f.ctime_ns = Nanos(st.st_ctim);
  f.ino = static_cast<std::uint64_t>(st.st_ino);
  f.dev = static_cast<std::uint64_t>(st.st_dev);
  return f;
}

fs::path StatCache::FileFor(const fs::path& cache_dir, const fs::path& source_root) {
  return cache_dir / Hash128Hex(source_root.native());
}

StatCache StatCache::Load(const fs::path& cache_dir, const fs::path& source_root, bool* corrupt) {
  StatCache cache;
  if (corrupt != nullptr) *corrupt = false;
  // Owned by the cache: its keys and digests are views into these bytes.
  cache.data_ = std::make_unique<std::string>();
  std::string& data = *cache.data_;
  struct stat st {};
  const fs::path path = FileFor(cache_dir, source_root);
  if (!ReadWithStat(path, &data, &st)) {
    if (corrupt != nullptr) *corrupt = ::access(path.c_str(), F_OK) == 0;
    return cache;
  }
  auto reject = [&] {
    if (corrupt != nullptr) *corrupt = true;
    return StatCache();
  };

  // Checksum first: the last line is "end <64 hex>\n" over all bytes before it.
  constexpr size_t kTrailer = kEnd.size() + kSumHex + 1;
  if (data.size() < kTrailer) return reject();
  const std::string_view body(data.data(), data.size() - kTrailer);
  Reader trailer(std::string_view(data).substr(body.size()));
  std::string_view sum;
  if (!trailer.Literal(kEnd) || !trailer.Bytes(kSumHex, &sum) || sum != Hash128Hex(body)) {
    return reject();
  }

  Reader r(body);
  size_t root_len = 0;
  std::string_view root;
  if (!r.Literal(kMagic) || !r.Number(&root_len, ' ') || !r.Bytes(root_len, &root) ||
      root != source_root.native()) {
    return reject();
  }
  // "snapshot <id> <links digest>", each "-" when empty.
  auto optional_digest = [&r](char sep, std::string* out) {
    if (r.Literal(std::string(kNoSnapshot) + sep)) return true;
    std::string_view d;
    if (!r.Word(64, sep, &d) || !IsSha256Hex(d)) return false;
    *out = std::string(d);
    return true;
  };
  if (!r.Literal(kSnapshot) || !optional_digest(' ', &cache.snapshot_id_) ||
      !optional_digest('\n', &cache.links_digest_)) {
    return reject();
  }
  const std::int64_t written_ns = Nanos(st.st_mtim);
  cache.entries_.reserve(data.size() / 128);  // Lines are about 140 bytes.
  while (!r.AtEnd()) {
    std::string_view digest;
    FileStat f;
    size_t len = 0;
    std::string_view rel;
    if (!r.Word(64, ' ', &digest) || !IsSha256Hex(digest) || !r.Number(&f.size, ' ') ||
        !r.Number(&f.mtime_ns, ' ') || !r.Number(&f.ctime_ns, ' ') || !r.Number(&f.ino, ' ') ||
        !r.Number(&f.dev, ' ') || !r.Number(&len, ' ') || len == 0 || !r.Bytes(len, &rel)) {
      return reject();
    }
    ++cache.loaded_entries_;
    if (f.mtime_ns >= written_ns) {  // Racy: a change in the same tick would not show.
      ++cache.racy_entries_;
      continue;
    }
    cache.entries_.push_back({rel, f, digest});
  }
  return cache;
}

Status StatCache::Save(const fs::path& cache_dir, const fs::path& source_root,
                       const std::vector<StatCacheEntry>& entries, const std::string& snapshot_id,
                       const std::string& links_digest) {
  std::string out;
  out.reserve(128 + entries.size() * 140);
  out += kMagic;
  out += std::to_string(source_root.native().size());
  out += ' ';
  out += source_root.native();
  out += '\n';
  out += kSnapshot;
  out += snapshot_id.empty() ? kNoSnapshot : std::string_view(snapshot_id);
  out += ' ';
  out += links_digest.empty() ? kNoSnapshot : std::string_view(links_digest);
  out += '\n';
  for (const StatCacheEntry& e : entries) {
    out += e.digest;
    out += ' ';
    // Timestamps are signed (before 1970 they are negative); from_chars reads them back.
    out += std::to_string(e.stat.size) + ' ' + std::to_string(e.stat.mtime_ns) + ' ' +
           std::to_string(e.stat.ctime_ns) + ' ' + std::to_string(e.stat.ino) + ' ' +
           std::to_string(e.stat.dev) + ' ' + std::to_string(e.rel.size()) + ' ';
    out += e.rel;
    out += '\n';
  }
  const std::string sum = Hash128Hex(out);
  out += kEnd;
  out += sum;
  out += '\n';

  TY_RETURN_IF_ERROR(MakeDirs(cache_dir));
  const fs::path path = FileFor(cache_dir, source_root);
  fs::path tmp = path;
  tmp += ".tmp-" + RandomHex(6);
  ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoError("cannot create", tmp, errno);
  Status s = WriteAll(fd.get(), out, tmp);
  if (s.ok() && fd.Close() != 0) s = ErrnoError("cannot close", tmp, errno);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = ErrnoError("cannot replace", path, errno);
  }
  if (!s.ok()) {
    fd.Reset();
    ::unlink(tmp.c_str());
  }
  return s;
}

Status StatCache::DropAll(const fs::path& cache_dir) {
  std::error_code ec;
  fs::directory_iterator it(cache_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) {
      return Status::Ok();
    }
    return Internal("cannot list stat caches in " + cache_dir.string() + ": " + ec.message());
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    const fs::path& p = it->path();
    // A folder is not ours (and cannot vouch for anything): left alone.
    if (::unlink(p.c_str()) != 0 && errno != ENOENT && errno != EISDIR) {
      return ErrnoError("cannot remove stat cache", p, errno);
    }
  }
  if (ec) {
    return Internal("cannot list stat caches in " + cache_dir.string() + ": " + ec.message());
  }
  return Status::Ok();
}

std::vector<std::string> StatCache::Digests() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) out.emplace_back(e.digest);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::optional<std::string_view> StatCache::Lookup(std::string_view rel, const FileStat& st) const {
  // Callers look files up in walk order, the order they were saved in: the entry after the last
  // one found is tried first, and the index built only when that guess fails.
  size_t at = next_;
  if (at >= entries_.size() || entries_[at].rel != rel) {
    if (index_.empty()) {
      index_.reserve(entries_.size());
      for (size_t i = 0; i < entries_.size(); ++i) index_.insert_or_assign(entries_[i].rel, i);
    }
    auto it = index_.find(rel);
    if (it == index_.end()) return std::nullopt;
    at = it->second;
  }
  next_ = at + 1;
  if (!(entries_[at].stat == st)) return std::nullopt;
  return entries_[at].digest;
}

}  // namespace trainyard::cas::internal

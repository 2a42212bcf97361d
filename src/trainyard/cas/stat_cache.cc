#include "trainyard/cas/stat_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <string_view>
#include <utility>

#include "trainyard/cas/io.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cas::internal {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kMagic = "trainyard-statcache 1 ";
constexpr std::string_view kEnd = "end ";
// A cache file larger than this is not ours (or not worth it); it is ignored.
constexpr std::uint64_t kMaxCacheBytes = 512ull << 20;

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
  return cache_dir / Sha256Hex(source_root.native());
}

StatCache StatCache::Load(const fs::path& cache_dir, const fs::path& source_root, bool* corrupt) {
  StatCache cache;
  if (corrupt != nullptr) *corrupt = false;
  std::string data;
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
  constexpr size_t kTrailer = kEnd.size() + 64 + 1;
  if (data.size() < kTrailer) return reject();
  const std::string_view body(data.data(), data.size() - kTrailer);
  Reader trailer(std::string_view(data).substr(body.size()));
  std::string_view sum;
  if (!trailer.Literal(kEnd) || !trailer.Bytes(64, &sum) || sum != Sha256Hex(body)) {
    return reject();
  }

  Reader r(body);
  size_t root_len = 0;
  std::string_view root;
  if (!r.Literal(kMagic) || !r.Number(&root_len, ' ') || !r.Bytes(root_len, &root) ||
      root != source_root.native()) {
    return reject();
  }
  const std::int64_t written_ns = Nanos(st.st_mtim);
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
    cache.entries_.insert_or_assign(std::string(rel), Value{f, std::string(digest)});
  }
  return cache;
}

Status StatCache::Save(const fs::path& cache_dir, const fs::path& source_root,
                       const std::vector<StatCacheEntry>& entries) {
  std::string out;
  out.reserve(128 + entries.size() * 140);
  out += kMagic;
  out += std::to_string(source_root.native().size());
  out += ' ';
  out += source_root.native();
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
  const std::string sum = Sha256Hex(out);
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

std::vector<std::string> StatCache::Digests() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [rel, value] : entries_) out.push_back(value.digest);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

const std::string* StatCache::Lookup(const std::string& rel, const FileStat& st) const {
  auto it = entries_.find(rel);
  if (it == entries_.end() || !(it->second.stat == st)) return nullptr;
  return &it->second.digest;
}

}  // namespace trainyard::cas::internal

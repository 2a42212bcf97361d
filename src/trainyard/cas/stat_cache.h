#pragma once

// The snapshot stat cache: remembers, per source folder, the digest of each file together with
// the stat fields that change whenever its content can have changed, so an unchanged file is
// not read again. Internal to the cas module (used by Snapshotter); not part of the API.

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::cas::internal {

// The stat fields that key a cached digest. Any write to a file changes its ctime; replacing it
// changes the inode; a copy from elsewhere changes the device.
struct FileStat {
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::uint64_t ino = 0;
  std::uint64_t dev = 0;

  static FileStat Of(const struct stat& st);
  bool operator==(const FileStat&) const = default;
};

// One file of a source folder: its path relative to the folder, its stat and its digest.
struct StatCacheEntry {
  std::string rel;
  FileStat stat;
  std::string digest;  // Lower-case hex SHA-256 of the content.
};

// The cache of one source folder, stored in `<cache_dir>/<128-bit hash of the source path>`.
//
// File format (version 2): a header line naming the source folder, a line "snapshot <id>
// <links>" naming the snapshot the entries were saved with and the LinksDigest of its symlinks
// (each "-" when empty), one line per entry
// "<digest> <size> <mtime_ns> <ctime_ns> <ino> <dev> <path length> <path bytes>", and a last
// line "end <128-bit hash of everything before it>" (a fast non-cryptographic hash). A file that
// does not parse completely, has another version, names another folder or fails its checksum is
// ignored as a whole.
//
// The snapshot id lets Snapshotter skip checking that the cached digests' objects are still
// stored: the cache is saved only after that snapshot's manifest is written, so while the
// manifest exists all the digests of the cache are objects of that snapshot, and these are
// present (gc removes a manifest before its objects, and whoever finds an object missing or
// corrupt deletes all stat caches).
//
// Racy entries (git's "racily clean" problem): a file written in the same timestamp tick as
// its stat was taken keeps its mtime, so its stat cannot show the change. An entry is therefore
// only trusted when its mtime is strictly older than the cache file's own mtime (the time the
// cache was written, from the same file-system clock); other entries are dropped at load, so
// those files are hashed again and then recorded with a newer cache file.
//
// Not thread-safe (not even Lookup); each Snapshot loads its own copy. Concurrent writers of the
// same cache file are harmless (atomic rename; the last one wins).
class StatCache {
 public:
  StatCache() = default;

  // Where the cache of `source_root` (an absolute, canonical path) lives under `cache_dir`.
  static std::filesystem::path FileFor(const std::filesystem::path& cache_dir,
                                       const std::filesystem::path& source_root);

  // Loads the cache of `source_root`. Never fails: a missing, unreadable or corrupt cache file
  // gives an empty cache (and *corrupt, when given, is set for a file that exists but could
  // not be used).
  static StatCache Load(const std::filesystem::path& cache_dir,
                        const std::filesystem::path& source_root, bool* corrupt = nullptr);

  // Writes `entries` as the cache of `source_root`, replacing the file atomically (temp file +
  // rename). Not flushed to disk: a cache lost in a crash is rebuilt, and a torn one fails its
  // checksum. Errors: Internal / PermissionDenied on I/O errors (callers may ignore them).
  // `snapshot_id`: the snapshot whose manifest holds exactly these entries (files) and whose
  // manifest is already written, or "" for none. `links_digest`: the LinksDigest of that
  // snapshot's symlinks.
  static Status Save(const std::filesystem::path& cache_dir,
                     const std::filesystem::path& source_root,
                     const std::vector<StatCacheEntry>& entries,
                     const std::string& snapshot_id = "", const std::string& links_digest = "");

  // Deletes every cache file in `cache_dir` (and stray temp files of Save), so that the next
  // snapshot of any folder reads every file again. For when an object was found missing or
  // corrupt: some cache may vouch for it. Errors: Internal naming the file that could not be
  // removed; a missing folder is not an error.
  static Status DropAll(const std::filesystem::path& cache_dir);

  // The cached digest of `rel` when its entry has exactly the stat `st` and was not racy at
  // load; nullopt otherwise. The view is valid as long as the cache.
  std::optional<std::string_view> Lookup(std::string_view rel, const FileStat& st) const;

  // The distinct digests of the trusted entries, sorted.
  std::vector<std::string> Digests() const;

  // The snapshot id the cache was saved with; "" when none.
  const std::string& snapshot_id() const { return snapshot_id_; }
  // The LinksDigest saved with it; "" when none.
  const std::string& links_digest() const { return links_digest_; }

  // Entries in the file, trusted or not (racy ones included).
  size_t loaded_entries() const { return loaded_entries_; }
  // Entries dropped at load because they were racy.
  size_t racy_entries() const { return racy_entries_; }

 private:
  struct Entry {
    std::string_view rel;
    FileStat stat;
    std::string_view digest;
  };
  // The cache file's bytes (on the heap, so that moving the cache keeps the views valid); the
  // names and digests of `entries_` point into them.
  std::unique_ptr<std::string> data_;
  std::vector<Entry> entries_;  // The trusted entries, in the file's order.
  // Lookup's state: where the next lookup is expected, and an index by name built on the first
  // lookup that is not (the last entry of a name wins).
  mutable size_t next_ = 0;
  mutable std::unordered_map<std::string_view, size_t> index_;
  std::string snapshot_id_;
  std::string links_digest_;
  size_t loaded_entries_ = 0;
  size_t racy_entries_ = 0;
};

}  // namespace trainyard::cas::internal

#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainyard/cas/ignore.h"
#include "trainyard/cas/manifest.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/common/status.h"

namespace trainyard::cas {

// Caps on what one snapshot may hold. Only included (not ignored) entries count.
struct SnapshotLimits {
  std::uint64_t max_bytes = 300'000'000;  // Sum of file sizes.
  std::uint64_t max_files = 2000;         // Files plus symlinks.
};

// A path left out by an ignore rule. A folder is reported once; its contents are not listed.
// Paths here and in SnapshotResult::skipped are raw name bytes (maybe not UTF-8); pass them
// through PrintablePath before putting them in JSON or logs.
struct IgnoredPath {
  std::string path;  // Relative, '/'-separated.
  bool is_dir = false;
  std::string rule;  // The deciding rule: "src/.gitignore:3: *.ckpt", or "(built-in): .git".
};

struct SnapshotResult {
  std::string id;  // Manifest id; empty for Preview.
  // The source folder, absolute and canonical: file `e` of the manifest is at
  // `source_root / e.path` (for an uploader of a ScanTree result).
  std::filesystem::path source_root;
  std::uint64_t file_count = 0;      // Entries in the manifest (files and symlinks).
  std::uint64_t total_bytes = 0;     // Sum of file sizes.
  std::vector<IgnoredPath> ignored;  // In walk order (sorted by path within each folder).
  // Special files left out (sockets, FIFOs, devices): "path (named pipe)".
  std::vector<std::string> skipped;
  // The manifest. For Preview the digests are empty and sizes come from stat.
  Manifest manifest;
  // Preview only: the error Snapshot would return for the given limits, or "" when within.
  std::string over_limit;
  // Snapshot and ScanTree only: regular files whose content was read and hashed, and files whose
  // digest came from the stat cache without reading them. They add up to the number of files.
  std::uint64_t files_hashed = 0;
  std::uint64_t files_from_cache = 0;
};

// How Snapshotter::Materialize writes files.
enum class MaterializeMode {
  // Writable copies, each object's digest checked while it is copied.
  kCopy,
  // Read-only hard links to the objects (mode 0444, shared with the store: a run must not
  // write to them), for a run's code. Files with mode 0755 are copies instead (a hard link
  // shares the object's mode), and so is everything when the destination is on another file
  // system. An object is linked without reading it when it is still sealed (see kSealedMtime)
  // and has the manifest's size; any other object is re-hashed first and re-sealed when intact.
  kLink,
};

// Takes content-addressed snapshots of source folders and materialises them.
//
// Snapshot walks the folder applying the ignore rules (IgnoreRules: `.amlignore`, else
// `.gitignore`, per folder, git's semantics), refuses it when over the limits before reading
// any file, stores every included file in the ObjectStore (hashing on a few threads), then
// writes the canonical manifest to `<snapshots_dir>/<id>.json` atomically, only after all
// objects are durable. Ids are SHA-256 of the manifest, so an unchanged tree gives the same
// id and identical files are stored once.
//
// With a stat cache folder, Snapshot remembers each file's digest per source folder keyed by
// (path, size, mtime, ctime, inode, device) and reads only files whose stat changed, whose
// entry was racy (see StatCache in stat_cache.h) or whose object is no longer in the store. An
// unchanged tree is then re-snapshotted from stat calls alone, with nothing written or flushed.
// A missing, unreadable or corrupt cache is rebuilt; failing to write it never fails Snapshot.
// The cache names the snapshot it was saved with; while that snapshot's manifest exists its
// objects are taken to be present without a look (gc removes a manifest before its objects, and
// Materialize deletes all caches when it finds an object missing or corrupt). Deleting objects
// by hand, behind the store's back, is therefore noticed only by Materialize, not by Snapshot.
//
// Symlinks are kept as symlinks when their target stays inside the folder, and are an error
// otherwise. Sockets, FIFOs and devices are skipped and listed. File names are stored as raw
// bytes (see Manifest for the JSON form of non-UTF-8 names).
//
// Borrows `objects`, which must outlive this object. All methods are thread-safe.
class Snapshotter {
 public:
  // `stat_cache_dir`: where stat caches are kept (one file per source folder, e.g. the
  // workspace's `cas/statcache`), created on first use; empty disables the cache.
  Snapshotter(ObjectStore& objects, std::filesystem::path snapshots_dir,
              std::filesystem::path stat_cache_dir = {});

  // Errors: NotFound / InvalidArgument when `source_dir` is missing or not a folder;
  // InvalidArgument when over the limits (naming the largest folders and files and the ignore
  // file to edit) or when a symlink leaves the folder (naming the link and its target);
  // PermissionDenied naming an unreadable file or folder; Internal on I/O errors.
  StatusOr<SnapshotResult> Snapshot(const std::filesystem::path& source_dir,
                                    const SnapshotLimits& limits);

  // Stores a manifest made elsewhere (by ScanTree on a client, whose objects were uploaded)
  // as `<snapshots_dir>/<id>.json`, with the same rules as Snapshot (written atomically; an
  // intact existing one is kept and freshened). Returns the id. Errors: InvalidArgument when
  // the manifest is not valid (see Manifest::Validate); NotFound when objects are missing from
  // the store, listing up to 10 of their digests with their paths and the number missing;
  // Internal on I/O errors.
  StatusOr<std::string> AddManifest(const Manifest& manifest);

  // What Snapshot would include and ignore, without reading file contents or storing
  // anything. Same errors as Snapshot except the limits, which are reported in `over_limit`.
  StatusOr<SnapshotResult> Preview(const std::filesystem::path& source_dir) const;
  StatusOr<SnapshotResult> Preview(const std::filesystem::path& source_dir,
                                   const SnapshotLimits& limits) const;

  // The manifest of snapshot `id`. Errors: InvalidArgument for an id that is not 64 lower-case
  // hex digits (checked before touching the file system); NotFound for an unknown id; Internal
  // when the stored manifest does not hash to its id or does not parse.
  StatusOr<Manifest> Load(const std::string& id) const;

  // Writes snapshot `id` into `dest`: files with their modes (0644/0755) as `mode` says (see
  // MaterializeMode), symlinks recreated. No unverified content is ever handed over: copies
  // are hashed while copied, links are made to sealed or re-hashed objects. The tree is built
  // in a sibling staging folder and renamed to `dest` only when complete, so on any error
  // (e.g. a corrupt object, reported with the object and the path) `dest` is left untouched.
  // `dest` must not exist or be an empty folder; its parent is created if needed.
  //
  // A missing object, or in link mode a corrupt one, means a stat cache may vouch for content
  // the store lacks: all stat caches are then deleted, so the next Snapshot of the source reads
  // it again and stores the object anew. In link mode a corrupt object is moved out of the way
  // to `<objects root>/corrupt/<digest>` first.
  //
  // Errors: as Load; FailedPrecondition when `dest` exists and is not an empty folder;
  // NotFound when an object is missing; Internal naming object and path for corruption.
  Status Materialize(const std::string& id, const std::filesystem::path& dest,
                     MaterializeMode mode = MaterializeMode::kCopy) const;

  const std::filesystem::path& snapshots_dir() const { return snapshots_dir_; }
  const ObjectStore& objects() const { return objects_; }
  const std::filesystem::path& stat_cache_dir() const { return stat_cache_dir_; }

 private:
  // Writes `json` (the canonical form of `manifest`, whose id is `id`) to `<id>.json` unless an
  // intact copy exists, which is freshened instead. A null `json` says that `manifest` is known
  // to be the one stored under `id` (from the stat cache): an existing file is then freshened
  // without being compared, and the JSON is made only when the file must be written.
  Status WriteManifest(const std::string& id, const Manifest& manifest,
                       const std::string* json) const;
  // Deletes the stat caches after an object was found missing or corrupt (best effort).
  void DropStatCaches() const;

  ObjectStore& objects_;
  std::filesystem::path snapshots_dir_;
  std::filesystem::path stat_cache_dir_;  // Empty: no stat cache.
};

// What Snapshotter::Snapshot would record for `source_dir`, without storing anything: the same
// walk, ignore rules and limits (same errors), with each file's digest taken from the stat cache
// in `stat_cache_dir` (empty: none) or else by hashing the file in place, on a few threads.
// Sets `id` and the manifest; only the stat cache is written. For a client that uploads the
// objects a server lacks (reading `source_root / entry.path`) and then the manifest.
StatusOr<SnapshotResult> ScanTree(const std::filesystem::path& source_dir,
                                  const SnapshotLimits& limits,
                                  const std::filesystem::path& stat_cache_dir);

}  // namespace trainyard::cas

#pragma once

// Garbage collection of a content-addressed store (ObjectStore + Snapshotter folders): mark and
// sweep with a grace period, safe while writers (a daemon, a `job create`) work beside it. What
// is still in use comes from outside the store, through GcRoots (in trainyard: the snapshot ids
// the workspace database's runs and environments name, store/snapshot_references.h).

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::cas {

// The snapshot ids still in use. Called once per collection, before the manifests are listed
// (a manifest written after that is young, so it is kept either way). An error stops the
// collection before anything is removed.
using GcRoots = std::function<StatusOr<std::set<std::string>>()>;

struct GcOptions {
  // Report what would be removed; remove nothing.
  bool dry_run = false;
  // Grace period: an object, manifest or temp file modified less than this many seconds ago is
  // never removed (a concurrent `job create` may be between writing objects and writing the
  // manifest, or between writing the manifest and submitting the run).
  std::int64_t keep_newer_than_seconds = 3600;
};

// What one collection removed (or, for a dry run, would remove) and kept.
struct GcReport {
  std::vector<std::string> removed_snapshots;  // Ids.
  std::uint64_t removed_snapshot_bytes = 0;    // Manifest file sizes.
  std::uint64_t removed_objects = 0;
  std::uint64_t removed_object_bytes = 0;
  std::uint64_t removed_temp_files = 0;  // Stale files in <objects>/tmp and <snapshots>/*.tmp.*.
  std::uint64_t removed_temp_bytes = 0;
  std::uint64_t kept_snapshots = 0;
  std::uint64_t kept_young_snapshots = 0;  // Unreferenced, but within the grace period.
  std::uint64_t kept_objects = 0;
  std::uint64_t kept_young_objects = 0;  // Unreferenced, but within the grace period.
};

// Mark and sweep over the store in `objects_dir` (ObjectStore) and `snapshots_dir`
// (Snapshotter):
//  1. the roots are the manifests `roots` names plus every manifest modified within the grace
//     period; other manifests are removed;
//  2. the manifests present after that (read again, so one written meanwhile counts) mark the
//     live objects; objects neither live nor within the grace period are removed, after one more
//     look for manifests written during the sweep;
//  3. temp files older than the grace period are removed.
// Nothing is removed when `roots` fails or a kept manifest cannot be read: its objects would
// look unreferenced. An object is dated by its ctime when it carries the seal (kSealedMtime),
// else by its mtime. Errors: InvalidArgument for a negative grace period; Internal naming the
// file that cannot be listed, read or removed.
StatusOr<GcReport> CollectGarbage(const std::filesystem::path& objects_dir,
                                  const std::filesystem::path& snapshots_dir, const GcRoots& roots,
                                  const GcOptions& options);

// A manifest file of the snapshots folder.
struct ManifestFile {
  std::string id;
  struct timespec mtime {};
  std::uint64_t size = 0;
};

// The manifests in `snapshots_dir`, by id (files named "<64 hex digits>.json"). A missing
// folder has none. Internal when it cannot be listed.
StatusOr<std::map<std::string, ManifestFile>> ListManifests(
    const std::filesystem::path& snapshots_dir);

}  // namespace trainyard::cas

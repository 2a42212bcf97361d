#pragma once

// `trainyard snapshot ...`: inspect and maintain the snapshots of the local workspace directly on
// disk (no daemon needed). Snapshots live as manifests in `<ws>/snapshots/<id>.json` and
// content-addressed objects in `<ws>/cas/sha256/`; runs and environments refer to them by id in
// the workspace database, which these commands only ever open read-only.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/common/workspace.h"

namespace trainyard::cli {

// Prints what a snapshot of `dir` would include under the workspace's limits (workspace.json),
// whether it is over them, what was ignored by which rule and which special files were skipped.
// `output` is "table" or "json". Reads no file contents and stores nothing.
// Errors: those of Snapshotter::Preview (NotFound / InvalidArgument for a bad folder,
// PermissionDenied, InvalidArgument for a symlink leaving the folder); InvalidArgument for a bad
// workspace.json.
Status SnapshotPreview(const WorkspaceLayout& layout, const std::string& dir,
                       const std::string& output);

// Prints the workspace's snapshots, newest first: id, files, size, creation time (the manifest
// file's mtime) and how many runs and environments refer to each.
// Errors: Internal when the folder or the database cannot be read.
Status SnapshotList(const WorkspaceLayout& layout, const std::string& output);

// Prints one snapshot's manifest (entries and totals). `id_or_prefix` as ResolveSnapshotId.
// Errors: as ResolveSnapshotId; Internal for a manifest that does not hash to its id or parse.
Status SnapshotShow(const WorkspaceLayout& layout, const std::string& id_or_prefix,
                    const std::string& output);

// Writes a snapshot's files into `dest` (which must not exist or be an empty folder).
// Errors: as ResolveSnapshotId; as Snapshotter::Materialize (FailedPrecondition for a non-empty
// `dest`, NotFound for a missing object, Internal for a corrupt one; `dest` is then untouched).
Status SnapshotDownload(const WorkspaceLayout& layout, const std::string& id_or_prefix,
                        const std::string& dest);

// The full id of the one snapshot whose id starts with `id_or_prefix` (at least 6 hex digits;
// upper case is accepted). Errors: InvalidArgument for a prefix that is too short or not hex,
// or that matches several snapshots (naming them); NotFound when none matches.
StatusOr<std::string> ResolveSnapshotId(const WorkspaceLayout& layout,
                                        const std::string& id_or_prefix);

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
  std::uint64_t removed_temp_files = 0;  // Stale files in cas/tmp and snapshots/*.tmp.*.
  std::uint64_t removed_temp_bytes = 0;
  std::uint64_t kept_snapshots = 0;
  std::uint64_t kept_young_snapshots = 0;  // Unreferenced, but within the grace period.
  std::uint64_t kept_objects = 0;
  std::uint64_t kept_young_objects = 0;  // Unreferenced, but within the grace period.
};

// Mark and sweep over the workspace's store, safe while the daemon runs:
//  1. the roots are the manifests referred to by a run (runs.snapshot_id, or any snapshot id in
//     its request) or an environment (its definition, e.g. "build_context"), plus every manifest
//     modified within the grace period; other manifests are removed;
//  2. the manifests present after that (read again, so one written meanwhile counts) mark the
//     live objects; objects neither live nor within the grace period are removed, after one more
//     look for manifests written during the sweep;
//  3. temp files older than the grace period are removed.
// Nothing is removed when the database or a manifest cannot be read: an unreadable reference set
// would make live data look unreferenced. Files that vanish meanwhile (another gc) are skipped.
// Errors: InvalidArgument for a negative grace period; Internal for unreadable folders, database
// or manifests (naming them), or a failed removal.
StatusOr<GcReport> CollectGarbage(const WorkspaceLayout& layout, const GcOptions& options);

// Runs CollectGarbage and prints the report ("Removed ..." or, for a dry run, "Would remove ...").
Status SnapshotGc(const WorkspaceLayout& layout, const GcOptions& options,
                  const std::string& output);

}  // namespace trainyard::cli

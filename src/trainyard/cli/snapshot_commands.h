#pragma once

// `trainyard snapshot ...` (AddSnapshotCommands, command.h): inspect and maintain the snapshots
// of the local workspace directly on disk (no daemon needed; `create` also uploads to a remote
// one). Snapshots live as manifests in `<ws>/snapshots/<id>.json` and
// content-addressed objects in `<ws>/cas/sha256/`; runs and environments refer to them by id in
// the workspace database, which these commands only ever open read-only.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "trainyard/cas/gc.h"
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

// The workspace's snapshot garbage collection (cas::CollectGarbage over its store), with the
// snapshots its database's runs and environments refer to as the roots.
StatusOr<cas::GcReport> CollectGarbage(const WorkspaceLayout& layout,
                                       const cas::GcOptions& options);

// Runs CollectGarbage and prints the report ("Removed ..." or, for a dry run, "Would remove ...").
Status SnapshotGc(const WorkspaceLayout& layout, const cas::GcOptions& options,
                  const std::string& output);

}  // namespace trainyard::cli

#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "trainyard/common/status.h"

namespace trainyard {

// Where a workspace keeps its parts on disk. Plain paths; nothing is created by this struct.
struct WorkspaceLayout {
  std::filesystem::path root;

  std::filesystem::path Database() const { return root / "trainyard.db"; }
  std::filesystem::path ObjectsDir() const { return root / "cas"; }
  std::filesystem::path SnapshotsDir() const { return root / "snapshots"; }
  std::filesystem::path RunsDir() const { return root / "runs"; }
  std::filesystem::path RunDir(const std::string& run_id) const { return RunsDir() / run_id; }
  std::filesystem::path ScratchDir() const { return root / "tmp"; }
  // The folder of the datastore every workspace has (workspaceblobstore).
  std::filesystem::path WorkspaceBlobStoreDir() const {
    return root / "datastores" / "workspaceblobstore";
  }
  std::filesystem::path SecretKey() const { return root / "secret.key"; }
  // Written by the daemon once it listens: {"pid", "port", "token", "url"}; mode 0600.
  std::filesystem::path ServerFile() const { return root / "server.json"; }
  std::filesystem::path DaemonLog() const { return root / "daemon.log"; }
  std::filesystem::path LockFile() const { return root / "daemon.lock"; }
  std::filesystem::path ConfigFile() const { return root / "workspace.json"; }

  // Creates the folders (mode 0700 for the root).
  Status Create() const;
};

// Whether the workspace folder at `layout.root` may be used by this user when something other
// than the user named it (a `.trainyard/config.json` found in the tree, which a cloned
// repository may ship): like git's safe.directory, the folder must be owned by this user with
// no group or other permission bits (trainyard makes its workspaces 0700; a folder checked out
// from a repository or unpacked for someone else is not), and its database, when present,
// owned by this user and not writable by group or others. OK when the folder does not exist
// yet (it is then made 0700). FailedPrecondition naming the folder, its owner and mode, and
// the way out, otherwise.
Status CheckWorkspaceIsPrivate(const WorkspaceLayout& layout);

// Settings of a workspace, from its workspace.json (every field optional).
struct WorkspaceConfig {
  std::uint64_t snapshot_max_bytes = 300'000'000;  // snapshot limit, bytes
  std::uint64_t snapshot_max_files = 2000;         // snapshot limit, files
  int max_concurrent_runs = 0;                     // max_nodes of `local` when first made; 0: 1
  int port = 0;                                    // daemon port; 0: any free port
  int stop_grace_seconds = 10;                     // SIGTERM → SIGKILL on cancel and timeout
  // Limits against exhaustion (docs/security.md). 0 for max_connections: derived from the
  // descriptor limit.
  int max_connections = 0;                       // concurrent HTTP connections
  std::int64_t http_header_timeout_ms = 30'000;  // a request's whole header, from its first byte
  std::uint64_t http_min_bytes_per_second = 16'384;  // bodies and responses, after the grace
  std::int64_t http_transfer_grace_ms = 60'000;
  std::uint64_t max_tags_per_run = 10'000;
  std::uint64_t max_properties_per_run = 10'000;
  std::uint64_t max_entries_per_run = 1'000'000;     // logged rows, tables, images, ...
  std::int64_t container_pids_limit = 32'768;        // processes and threads per container
  std::int64_t container_log_max_bytes = 256 << 20;  // the engine's copy, rotated (4 files)
  // The image of an environment that names none (the Python SDK's Environment default).
  std::string default_image = "python:3.11-slim";
};

// Reads workspace.json; defaults when the file is missing. InvalidArgument naming the file and
// the key for a bad value.
StatusOr<WorkspaceConfig> LoadWorkspaceConfig(const WorkspaceLayout& layout);

}  // namespace trainyard

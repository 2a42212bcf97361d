#pragma once

// Finding the workspace a CLI invocation works on, and reaching (or starting) its daemon.

#include <filesystem>
#include <memory>
#include <string>

#include "trainyard/client/http_client.h"
#include "trainyard/common/status.h"
#include "trainyard/common/workspace.h"

namespace trainyard::client {

struct WorkspaceTarget {
  WorkspaceLayout layout;
  std::string found_by;  // how it was found, for messages: a config path, $TRAINYARD_HOME, ...
};

// The workspace for `cwd`: the first `.trainyard/config.json` found walking up from `cwd`
// ({"workspace_dir": "<path, relative to the config's folder>"}), else $TRAINYARD_HOME, else
// ~/.trainyard. InvalidArgument naming the config file when it is malformed.
StatusOr<WorkspaceTarget> FindWorkspace(const std::filesystem::path& cwd);

// What a running daemon wrote into its workspace.
struct ServerInfo {
  int pid = 0;
  int port = 0;
  std::string token;
  std::string url;  // "http://127.0.0.1:PORT"
  std::string exe;  // the daemon's executable and its modification time, to spot stale daemons
  std::int64_t exe_mtime = 0;
};
StatusOr<ServerInfo> ReadServerInfo(const WorkspaceLayout& layout);

// Returns a client for the workspace's daemon. When none answers, starts `self_exe server
// --workspace ROOT` in the background (its output goes to the workspace's daemon.log) and waits
// until it answers. A daemon started from another build of trainyard (its executable differs
// from `self_exe`) is stopped and replaced; its runs go on and the new daemon re-attaches.
// Unavailable, pointing at daemon.log, when it does not come up.
StatusOr<std::unique_ptr<HttpClient>> ConnectOrStart(const WorkspaceLayout& layout,
                                                     const std::filesystem::path& self_exe);

}  // namespace trainyard::client

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
  WorkspaceLayout layout;  // A local workspace; empty root for a remote one.
  std::string found_by;    // how it was found, for messages: a config path, $TRAINYARD_HOME, ...
  // A daemon on another machine (or reached only by URL): its base URL and bearer token. Code
  // is then snapshotted on this machine and only the objects the daemon lacks are uploaded.
  std::string url;
  std::string token;

  bool remote() const { return !url.empty(); }
};

// The workspace for `cwd`:
//   1. $TRAINYARD_URL (with the token in $TRAINYARD_TOKEN): a remote daemon;
//   2. the first `.trainyard/config.json` found walking up from `cwd`, either
//      {"workspace_dir": "<path, relative to the config's folder>"} for a local workspace, or
//      {"url": "http://HOST:PORT", "token_file": "<path, relative to the config's folder>"}
//      for a remote daemon (the token file holds the daemon's bearer token; $TRAINYARD_TOKEN
//      may give it instead);
//   3. $TRAINYARD_HOME; 4. ~/.trainyard.
// InvalidArgument naming the config file (or variable) when it is malformed, or when a remote
// target has no token.
StatusOr<WorkspaceTarget> FindWorkspace(const std::filesystem::path& cwd);

// Where this machine keeps client-side caches (the stat caches of remote snapshots):
// $XDG_CACHE_HOME/trainyard, else ~/.cache/trainyard.
std::filesystem::path ClientCacheDir();

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

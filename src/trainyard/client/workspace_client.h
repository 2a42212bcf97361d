#pragma once

// Finding the workspace a CLI invocation works on, and reaching (or starting) its daemon.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

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
  TlsTrust tls;  // how an https:// daemon is trusted (its pinned key, or a CA file)

  bool remote() const { return !url.empty(); }
};

// The workspace for `cwd`:
//   1. $TRAINYARD_URL (with the token in $TRAINYARD_TOKEN, and for https:// optionally the
//      daemon's key pin in $TRAINYARD_TLS_PIN or a CA file in $TRAINYARD_CA_FILE): a remote
//      daemon;
//   2. the first `.trainyard/config.json` found walking up from `cwd`, either
//      {"workspace_dir": "<path, relative to the config's folder>"} for a local workspace, or
//      {"url": "http://HOST:PORT"} for a remote daemon.
//   3. $TRAINYARD_HOME; 4. ~/.trainyard.
// A config found in the tree may come from a cloned repository, so it steers nothing the user
// did not set up: its workspace_dir must pass CheckWorkspaceIsPrivate (FailedPrecondition
// otherwise), and a remote daemon's token comes only from the user's own credentials for that
// URL (`trainyard login URL`, see LoadCredential), never from a file the config names or from
// $TRAINYARD_TOKEN. InvalidArgument naming the config file (or variable) when it is
// malformed, or when a remote target has no token.
StatusOr<WorkspaceTarget> FindWorkspace(const std::filesystem::path& cwd);

// The user's own tokens for remote daemons, keyed by URL ("http(s)://HOST:PORT"), in
// $XDG_CONFIG_HOME/trainyard/credentials.json (else ~/.config/trainyard/credentials.json):
// {"<url>": {"token": "...", "pin": "sha256//...", "ca_file": "..."}}, mode 0600 in a 0700
// folder, like a credential store.
std::filesystem::path CredentialsFile();
struct Credential {
  std::string token;
  TlsTrust tls;
};
// Stores (or replaces) the credential for `url`. InvalidArgument for a URL that is not a daemon
// URL, an empty token, a pin not of the form "sha256//BASE64" (of 32 bytes), TLS trust for an
// http:// URL, or a CA file that is not an absolute path.
Status SaveCredential(const std::string& url, const Credential& credential);
// Forgets the credential for `url`; OK when there was none.
Status RemoveCredential(const std::string& url);
// The credential stored for `url`; NotFound when there is none; FailedPrecondition when the file
// is not private to the user (then it is not read).
StatusOr<Credential> LoadCredential(const std::string& url);

// Where this machine keeps client-side caches (the stat caches of remote snapshots):
// $XDG_CACHE_HOME/trainyard, else ~/.cache/trainyard.
std::filesystem::path ClientCacheDir();

// What a running daemon wrote into its workspace.
struct ServerInfo {
  int pid = 0;
  int port = 0;
  std::string token;
  std::string url;  // "http://127.0.0.1:PORT"
  // When the daemon also serves beyond loopback: that address ("https://ADDR:PORT", or http://
  // with --insecure-http) and the pin of its certificate's key ("" for http://).
  std::string public_url;
  std::string tls_pin;
  std::string exe;  // the daemon's executable and its modification time, to spot stale daemons
  std::int64_t exe_mtime = 0;
};
StatusOr<ServerInfo> ReadServerInfo(const WorkspaceLayout& layout);

// The environment a daemon the CLI starts gets, from the CLI's `env`: only the variables a
// daemon uses (PATH, HOME, locale, TMPDIR, XDG_RUNTIME_DIR, DOCKER_HOST, DOCKER_CONFIG,
// SLURM_CONF, TRAINYARD_SDK_DIR, ...), never a password or token the user's shell holds
// (TRAINYARD_REGISTRY_PASSWORD, TRAINYARD_TOKEN, cloud keys). PATH gets a default when absent.
std::vector<std::string> DaemonEnvironment(char** env);

// Returns a client for the workspace's daemon. When none answers, starts `self_exe server
// --workspace ROOT` in the background (its output goes to the workspace's daemon.log) and waits
// until it answers. A daemon started from another build of trainyard (its executable differs
// from `self_exe`) is stopped and replaced; its runs go on and the new daemon re-attaches.
// Unavailable, pointing at daemon.log, when it does not come up.
StatusOr<std::unique_ptr<HttpClient>> ConnectOrStart(const WorkspaceLayout& layout,
                                                     const std::filesystem::path& self_exe);

}  // namespace trainyard::client

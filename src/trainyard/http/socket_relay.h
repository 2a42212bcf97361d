#pragma once

// A unix-socket front door to the daemon's TCP API, for runs in containers: the folder holding
// the socket is bind-mounted into each container, where no TCP port on the host's loopback is
// reachable. Every connection accepted on the socket is relayed byte for byte to the HTTP
// server on 127.0.0.1, which authenticates each request as usual (runs use run-scoped tokens).

#include <filesystem>
#include <memory>

#include "trainyard/common/status.h"

namespace trainyard {

class SocketRelay {
 public:
  // Listens on `socket_path` (a stale socket file there is replaced; the socket is made
  // connectable by any user, since requests are authenticated by token) and relays each
  // connection to 127.0.0.1:`port`, at most `max_connections` at once (so that runs cannot take
  // every connection the server has; one more is answered 429 naming the limit and closed).
  // InvalidArgument when the path is too long for a unix socket; Internal when it cannot be
  // bound.
  static StatusOr<std::unique_ptr<SocketRelay>> Start(const std::filesystem::path& socket_path,
                                                      int port, int max_connections);
  // Stops accepting, closes every relayed connection and removes the socket file.
  ~SocketRelay();
  SocketRelay(const SocketRelay&) = delete;
  SocketRelay& operator=(const SocketRelay&) = delete;

 private:
  struct Impl;
  explicit SocketRelay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The folder of a workspace's API socket (`api.sock`), made when missing: `<root>/sock` when
// that path fits in a unix socket address (the workspace root is 0700, so no other local user
// reaches it); else `<private>/sock`, where <private> is `$XDG_RUNTIME_DIR/trainyard-<hash>`
// or `/tmp/trainyard-<uid>-<hash>`, a 0700 folder of this user, created exclusively and checked
// for owner and mode before use (EnsurePrivateDir). The path is the same for every daemon of
// the workspace, so runs that outlive a daemon reach the next one. FailedPrecondition when the
// private folder is someone else's.
StatusOr<std::filesystem::path> ApiSocketDir(const std::filesystem::path& workspace_root);

}  // namespace trainyard

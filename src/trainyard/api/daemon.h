#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "trainyard/common/status.h"
#include "trainyard/docker/engine.h"
#include "trainyard/slurm/slurm.h"

namespace trainyard::api {

struct DaemonOptions {
  std::filesystem::path workspace;  // the workspace folder (created when missing)
  // The address to serve on. A loopback address serves plain HTTP there. Any other address
  // (including 0.0.0.0 and ::) serves HTTPS only, with `tls_certificate` and `tls_key` (PEM
  // files) or, when both are empty, a self-signed identity kept in the workspace's tls/ folder;
  // plain HTTP there only with `insecure_http`. The CLI on this machine and the runs' socket then
  // use a second, plain listener on 127.0.0.1 (any free port), and Slurm runs report to the
  // public address (docs/security.md, "Serving beyond loopback").
  std::string host = "127.0.0.1";
  int port = -1;  // of `host`; -1: workspace.json's, else any free port
  std::filesystem::path tls_certificate;
  std::filesystem::path tls_key;
  bool insecure_http = false;
  std::string docker_socket = "/var/run/docker.sock";
  std::filesystem::path docker_config;  // empty: $DOCKER_CONFIG or ~/.docker/config.json
  docker::Engine* engine = nullptr;     // borrowed; null: the engine at docker_socket
  slurm::Client* slurm = nullptr;       // borrowed; null: Slurm's commands on PATH
  bool write_server_file = true;        // publish server.json for CLI clients
  // Off only in bench/throughput, to measure what durable transitions cost (StoreOptions).
  bool durable_transitions = true;
};

// The workspace daemon: the store, the scheduler, the image builder and the REST API, wired
// together. One per workspace (held by a lock file). Thread-safe.
class Daemon {
 public:
  // Opens the workspace, takes its lock, recovers runs a previous daemon left, and listens.
  // FailedPrecondition when another daemon holds the workspace; Unavailable when the port is
  // taken.
  static StatusOr<std::unique_ptr<Daemon>> Start(const DaemonOptions& options);
  ~Daemon();

  int port() const;
  const std::string& token() const;
  std::string url() const;  // the plain loopback listener: http://127.0.0.1:PORT
  // When serving beyond loopback: https://ADDR:PORT (http:// with insecure_http) and the pin of
  // the certificate's public key (PublicKeyPin; "" for http://). Else both "".
  std::string public_url() const;
  std::string tls_pin() const;

  // Stops serving HTTP. Run workers keep going until the object is destroyed, which waits for
  // them; a daemon process that must exit while runs go on exits without destroying it.
  void StopServing();

  struct Impl;

 private:
  explicit Daemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `trainyard server`: runs a daemon with `options` until SIGINT/SIGTERM. Returns the exit code.
int RunServer(const DaemonOptions& options);

}  // namespace trainyard::api

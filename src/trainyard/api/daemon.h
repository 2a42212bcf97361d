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
  std::string host = "127.0.0.1";   // bind address; loopback unless asked otherwise
  int port = -1;                    // -1: workspace.json's, else any free port
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
  std::string url() const;

  // Stops serving HTTP. Run workers keep going until the object is destroyed, which waits for
  // them; a daemon process that must exit while runs go on exits without destroying it.
  void StopServing();

  struct Impl;

 private:
  explicit Daemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `trainyard server`: runs a daemon until SIGINT/SIGTERM. Returns the exit code.
int RunServer(const std::string& workspace, int port, const std::string& host);

}  // namespace trainyard::api

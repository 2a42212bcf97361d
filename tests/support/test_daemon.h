#pragma once

// An in-process daemon for integration tests: the options every such test starts from.

#include <filesystem>

#include "trainyard/api/daemon.h"

namespace trainyard::testing {

// A daemon on `workspace` (created when missing) on a free loopback port, writing no
// server.json and reading no docker config (the user's `docker login` stays out of tests that
// do not ask for it). Tests change what they need, e.g. `engine`.
inline api::DaemonOptions TestDaemonOptions(const std::filesystem::path& workspace) {
  api::DaemonOptions opts;
  opts.workspace = workspace;
  opts.port = 0;
  opts.write_server_file = false;
  opts.docker_config = workspace / "no-docker-config.json";
  return opts;
}

}  // namespace trainyard::testing

#pragma once

#include <string>

namespace trainyard::cli {

// Runs the `trainyard` command line. Returns the process exit code: 0 on success, 1 when a
// run failed or an operation was refused, 2 for usage errors, 130 when interrupted.
int Main(int argc, char** argv);

// What `trainyard server` was asked for (see api::DaemonOptions).
struct ServerArgs {
  std::string workspace;
  int port = -1;
  std::string host = "127.0.0.1";
  std::string tls_certificate;
  std::string tls_key;
  bool insecure_http = false;
};

}  // namespace trainyard::cli

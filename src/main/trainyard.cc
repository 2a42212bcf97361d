// The `trainyard` executable: the CLI and, as `trainyard server`, the workspace daemon.
#include <string>

#include "trainyard/api/daemon.h"
#include "trainyard/cli/cli.h"

namespace trainyard::cli {
int ServerMain(const ServerArgs& args) {
  api::DaemonOptions options;
  options.workspace = args.workspace;
  options.port = args.port;
  options.host = args.host;
  options.tls_certificate = args.tls_certificate;
  options.tls_key = args.tls_key;
  options.insecure_http = args.insecure_http;
  return api::RunServer(options);
}
}  // namespace trainyard::cli

int main(int argc, char** argv) { return trainyard::cli::Main(argc, argv); }

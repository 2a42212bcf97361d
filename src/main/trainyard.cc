// The `trainyard` executable: the CLI and, as `trainyard server`, the workspace daemon.
#include <string>

#include "trainyard/api/daemon.h"
#include "trainyard/cli/cli.h"

namespace trainyard::cli {
int ServerMain(const std::string& workspace, int port, const std::string& host) {
  return api::RunServer(workspace, port, host);
}
}  // namespace trainyard::cli

int main(int argc, char** argv) { return trainyard::cli::Main(argc, argv); }

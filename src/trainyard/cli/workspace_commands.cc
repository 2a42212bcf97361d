// `trainyard workspace ...`: the workspace and its daemon.
#include <unistd.h>

#include "trainyard/cli/command.h"

namespace trainyard::cli {
namespace {

// For programs (the Python SDK): how to reach the workspace's daemon, starting it when the
// workspace is local. The answer holds the bearer token, so it is never written to a terminal.
int WorkspaceConnect(Session& s) {
  if (::isatty(1)) {
    return Fail(FailedPrecondition(
        "`trainyard workspace connect` prints the workspace's token for a program to read; it "
        "does not print it to a terminal (pipe its output)"));
  }
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  const client::WorkspaceTarget& target = s.target();
  json out = {{"found_by", target.found_by}, {"remote", target.remote()}};
  if (target.remote()) {
    out["url"] = target.url;
    out["token"] = target.token;
    out["tls_pin"] = target.tls.pinned_public_key;
    out["ca_file"] = target.tls.ca_file;
  } else {
    auto info = client::ReadServerInfo(target.layout);
    if (!info.ok()) return Fail(info.status());
    out["url"] = info->url;
    out["token"] = info->token;
    out["folder"] = target.layout.root.string();
  }
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

void AddWorkspaceCommands(CommandLine& cl) {
  auto* workspace = cl.app.add_subcommand("workspace", "The workspace and its daemon");
  workspace->require_subcommand(1);
  auto* connect = workspace->add_subcommand(
      "connect",
      "For programs: the daemon's URL and token as JSON, starting it when local "
      "(never printed to a terminal)");
  cl.Then(connect, [](Session& s) { return WorkspaceConnect(s); });
}

}  // namespace trainyard::cli

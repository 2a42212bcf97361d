#include "trainyard/cli/cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "trainyard/cli/command.h"
#include "trainyard/client/workspace_client.h"
#include "trainyard/common/util.h"

namespace trainyard::cli {

// The daemon's entry point lives with the server code; the CLI only dispatches to it.
int ServerMain(const ServerArgs& args);

int Main(int argc, char** argv) {
  CLI::App app{"trainyard: train models in custom Docker images, on your own machines"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "trainyard 0.1.0");

  std::string start_dir;
  app.add_option("-C", start_dir,
                 "Run as if trainyard was started in this folder (as git -C): the workspace is "
                 "found from it and relative paths are taken from it");

  // server
  auto* server = app.add_subcommand("server", "Run the workspace daemon (REST API, scheduler)");
  ServerArgs server_args;
  server->add_option("--workspace", server_args.workspace,
                     "Workspace folder (default: the one found from here)");
  server->add_option("--port", server_args.port,
                     "Port to listen on (default: workspace.json, else any)");
  server->add_option("--host", server_args.host,
                     "Address to bind (default 127.0.0.1). Any other than loopback serves HTTPS "
                     "only (and plain HTTP on 127.0.0.1 for this machine)");
  server->add_option("--tls-cert", server_args.tls_certificate,
                     "PEM certificate chain for --host (default: a self-signed one kept in the "
                     "workspace, whose key pin is printed)");
  server->add_option("--tls-key", server_args.tls_key, "PEM private key of --tls-cert");
  server->add_flag("--insecure-http", server_args.insecure_http,
                   "Serve plain HTTP on a --host beyond loopback (tokens cross the network in "
                   "clear)");

  // login / logout: the user's own tokens for remote daemons (client::CredentialsFile).
  std::string login_url;
  client::Credential login_credential;
  auto* login = app.add_subcommand(
      "login", "Store the token of a remote daemon (read from stdin) for its URL");
  login->add_option("url", login_url, "The daemon's URL, http(s)://HOST:PORT")->required();
  login->add_option("--pin", login_credential.tls.pinned_public_key,
                    "The key pin of an https daemon's self-signed certificate (sha256//..., as "
                    "`trainyard server` prints it)");
  login->add_option("--ca-file", login_credential.tls.ca_file,
                    "A PEM file of the authorities that signed an https daemon's certificate");
  auto* logout = app.add_subcommand("logout", "Forget the stored token of a remote daemon");
  logout->add_option("url", login_url, "The daemon's URL")->required();

  // The nouns, each with its subcommands.
  CommandLine cl(app);
  AddJobCommands(cl);
  AddEnvCommands(cl);
  AddComputeCommands(cl);
  AddDatastoreCommands(cl);
  AddAssetCommands(cl);
  AddRegistryCommands(cl);
  AddSnapshotCommands(cl);
  AddWorkspaceCommands(cl);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!start_dir.empty() && ::chdir(start_dir.c_str()) != 0) {
    return Fail(InvalidArgument("-C " + start_dir + ": " + std::strerror(errno)));
  }

  if (login->parsed()) {
    // Never from an argument (process listings show those): stdin, a pipe or the terminal.
    if (::isatty(0)) std::fprintf(stderr, "Token for %s: ", login_url.c_str());
    std::string token;
    std::getline(std::cin, token);
    login_credential.token = std::string(Trim(token));
    if (!login_credential.tls.ca_file.empty()) {
      login_credential.tls.ca_file = fs::absolute(login_credential.tls.ca_file).string();
    }
    if (Status st = client::SaveCredential(login_url, login_credential); !st.ok()) {
      return Fail(st);
    }
    std::fprintf(stderr, "Stored the token for %s in %s\n", login_url.c_str(),
                 client::CredentialsFile().c_str());
    return 0;
  }
  if (logout->parsed()) {
    if (Status st = client::RemoveCredential(login_url); !st.ok()) return Fail(st);
    return 0;
  }
  if (server->parsed()) {
    if (server_args.workspace.empty()) {
      auto target = client::FindWorkspace(fs::current_path());
      if (!target.ok()) return Fail(target.status());
      if (target->remote()) {
        return Fail(FailedPrecondition("the server needs a local workspace folder, but " +
                                       target->found_by + " names the remote daemon " +
                                       target->url + "; pass --workspace DIR"));
      }
      server_args.workspace = target->layout.root.string();
    }
    return ServerMain(server_args);
  }

  Session session;
  if (Status s = session.Init(); !s.ok()) return Fail(s);
  if (!cl.run) return 2;
  return cl.run(session);
}

}  // namespace trainyard::cli

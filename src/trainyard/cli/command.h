#pragma once

// What every `trainyard` subcommand shares: the session (the workspace found from the current
// folder and a lazily connected daemon client), error printing, and the command line each noun
// registers its subcommands on (job_commands.cc, env_commands.cc, compute_commands.cc,
// snapshot_commands.cc, workspace_commands.cc; cli.cc puts them together).

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "trainyard/cas/snapshot.h"
#include "trainyard/cli/format.h"
#include "trainyard/client/http_client.h"
#include "trainyard/client/snapshot_upload.h"
#include "trainyard/client/workspace_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/status.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/definition.h"
#include "trainyard/spec/spec.h"

namespace trainyard::cli {

using json = nlohmann::json;

// Prints "error: MESSAGE" and returns the exit code: 2 for InvalidArgument (a usage error), else 1.
int Fail(const Status& s);
// The path of this executable (to start the daemon with), or "trainyard".
std::filesystem::path SelfExe();
// j[key] when it is a string, else "".
std::string Str(const json& j, const char* key);
// Where the routes of environments, data and models are: the workspace's ("/api/v1"), or
// registry `registry`'s ("/api/v1/registries/<registry>").
std::string ApiBase(const std::string& registry);

// Per-invocation state: the workspace and a lazily connected client.
class Session {
 public:
  Status Init() {
    TY_ASSIGN_OR_RETURN(target_, client::FindWorkspace(fs::current_path()));
    return Status::Ok();
  }
  const WorkspaceLayout& layout() const { return target_.layout; }

  // Drops the connection so the next Client() finds (or starts) the daemon again: after a
  // daemon restart its port and token are new.
  void Reconnect() { client_.reset(); }

  const client::WorkspaceTarget& target() const { return target_; }

  StatusOr<HttpClient*> Client() {
    if (!client_) {
      if (target_.remote()) {
        client_ = std::make_unique<HttpClient>(target_.url, target_.token, target_.tls);
      } else {
        TY_ASSIGN_OR_RETURN(client_, client::ConnectOrStart(target_.layout, SelfExe()));
      }
    }
    return client_.get();
  }

  // GET `path` of the daemon's API as JSON, connecting first.
  StatusOr<json> GetJson(const std::string& path) {
    TY_ASSIGN_OR_RETURN(HttpClient * http, Client());
    return http->GetJson(path);
  }

  // Snapshots a folder for the daemon: into the workspace's content store when it is local;
  // for a remote daemon, hashed here (with a local stat cache) and only the objects the daemon
  // lacks uploaded. `job_limits` override the workspace's limits where set.
  StatusOr<cas::SnapshotResult> Snapshot(const fs::path& dir,
                                         const std::optional<std::uint64_t>& max_files = {},
                                         const std::optional<std::uint64_t>& max_bytes = {}) {
    cas::SnapshotLimits limits;
    if (target_.remote()) {
      TY_ASSIGN_OR_RETURN(HttpClient * http, Client());
      TY_ASSIGN_OR_RETURN(json ws, http->GetJson("/api/v1/workspace"));
      if (ws.contains("snapshot_limits") && ws["snapshot_limits"].is_object()) {
        limits.max_files = ws["snapshot_limits"].value("max_files", limits.max_files);
        limits.max_bytes = ws["snapshot_limits"].value("max_bytes", limits.max_bytes);
      }
    } else {
      TY_ASSIGN_OR_RETURN(WorkspaceConfig cfg, LoadWorkspaceConfig(target_.layout));
      limits.max_bytes = cfg.snapshot_max_bytes;
      limits.max_files = cfg.snapshot_max_files;
    }
    if (max_files) limits.max_files = *max_files;
    if (max_bytes) limits.max_bytes = *max_bytes;

    if (target_.remote()) {
      TY_ASSIGN_OR_RETURN(cas::SnapshotResult scan,
                          cas::ScanTree(dir, limits, client::ClientCacheDir() / "statcache"));
      TY_ASSIGN_OR_RETURN(HttpClient * http, Client());
      TY_ASSIGN_OR_RETURN(client::UploadStats up, client::UploadSnapshot(*http, scan));
      std::cerr << "Uploaded " << up.objects_uploaded << " of " << up.objects
                << (up.objects == 1 ? " object" : " objects") << " ("
                << FormatBytes(up.bytes_uploaded) << ") to " << target_.url << "\n";
      return scan;
    }
    TY_RETURN_IF_ERROR(target_.layout.Create());
    cas::ObjectStore objects(target_.layout.ObjectsDir());
    // The stat cache lets an unchanged tree re-snapshot without reading its files.
    cas::Snapshotter snapshotter(objects, target_.layout.SnapshotsDir(),
                                 target_.layout.ObjectsDir() / "statcache");
    return snapshotter.Snapshot(dir, limits);
  }

  // Converts a parsed environment to the definition the daemon takes.
  StatusOr<spec::EnvironmentDefinition> Definition(const spec::EnvironmentSpec& env) {
    std::string context;
    if (env.build) {
      TY_ASSIGN_OR_RETURN(cas::SnapshotResult snap, Snapshot(env.build->path));
      context = snap.id;
    }
    return spec::DefinitionFromSpec(env, context);
  }

 private:
  client::WorkspaceTarget target_;
  std::unique_ptr<HttpClient> client_;
};

// The command line as the nouns build it. Each Add*Commands function adds its subcommands and,
// with Then, what runs when one of them is the command given; Main parses, then runs `run`.
struct CommandLine {
  explicit CommandLine(CLI::App& app) : app(app) {}

  // Adds -o/--output (table or json) to `cmd`, into `output`.
  void AddOutput(CLI::App* cmd) {
    cmd->add_option("-o,--output", output, "Output format: table or json")
        ->check(CLI::IsMember({"table", "json"}));
  }
  // `fn` runs with the session when `cmd` is the command given.
  void Then(CLI::App* cmd, std::function<int(Session&)> fn) {
    cmd->callback([this, fn = std::move(fn)] { run = fn; });
  }

  CLI::App& app;
  std::string output = "table";
  std::function<int(Session&)> run;
};

void AddJobCommands(CommandLine& cl);
void AddEnvCommands(CommandLine& cl);
void AddComputeCommands(CommandLine& cl);
void AddDatastoreCommands(CommandLine& cl);
void AddAssetCommands(CommandLine& cl);
void AddRegistryCommands(CommandLine& cl);
void AddSnapshotCommands(CommandLine& cl);
void AddWorkspaceCommands(CommandLine& cl);

}  // namespace trainyard::cli

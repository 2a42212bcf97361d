// `trainyard compute ...`: create, inspect and delete compute targets.
#include <unistd.h>

#include "trainyard/cli/command.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/compute.h"

namespace trainyard::cli {
namespace {

// `compute create` flags; each one given overrides the file's value.
struct ComputeFlags {
  std::string file;
  std::optional<std::string> name, type, node_memory;
  std::optional<int> max_nodes, node_gpus;
  std::optional<double> node_cpus;
  std::optional<std::int64_t> idle_seconds;
  // slurm
  std::optional<std::string> partition, account, qos, container_runtime, registry,
      registry_username, shared_dir;
  std::optional<int> gpus_per_node;
  std::vector<std::string> sbatch_args;
  bool registry_password_stdin = false;
  bool update = false;
};

std::string ComputePath(const std::string& name) {
  return "/api/v1/computes/" + HttpClient::UrlEncode(name);
}

// The definition `compute create` sends: the file's (if any) with the flags over it.
StatusOr<spec::ComputeDefinition> ComputeFromFlags(const ComputeFlags& f) {
  spec::ComputeDefinition def;
  if (!f.file.empty()) {
    TY_ASSIGN_OR_RETURN(def, spec::ParseComputeFile(f.file));
  } else if (!f.name) {
    return InvalidArgument("compute create needs --name NAME or -f FILE");
  }
  if (f.name) def.name = *f.name;
  if (f.type) def.type = *f.type == "amlcompute" ? "docker" : *f.type;
  if (f.max_nodes) def.max_nodes = *f.max_nodes;
  if (f.node_cpus) def.node_cpus = *f.node_cpus;
  if (f.node_memory) {
    StatusOr<std::int64_t> bytes = spec::ParseByteSize(*f.node_memory);
    if (!bytes.ok() || (*bytes != 0 && *bytes < (6LL << 20))) {
      return InvalidArgument(
          "--node-memory must be a size like 4g or 512m (at least 6m; 0: the "
          "machine's), got '" +
          *f.node_memory + "'");
    }
    def.node_memory_bytes = *bytes;
  }
  if (f.node_gpus) def.node_gpus = *f.node_gpus;
  if (f.idle_seconds) def.idle_seconds = *f.idle_seconds;
  if (f.partition) def.partition = *f.partition;
  if (f.account) def.account = *f.account;
  if (f.qos) def.qos = *f.qos;
  if (f.container_runtime) def.container_runtime = *f.container_runtime;
  if (f.gpus_per_node) def.gpus_per_node = *f.gpus_per_node;
  if (!f.sbatch_args.empty()) def.sbatch_args = f.sbatch_args;
  if (f.shared_dir) {
    std::error_code ec;
    const fs::path dir = fs::absolute(*f.shared_dir, ec);
    if (ec || !fs::is_directory(dir, ec)) {
      return InvalidArgument("--shared-dir " + *f.shared_dir + " is not a folder");
    }
    def.shared_dir = dir.lexically_normal().string();
  }
  if (f.registry) {
    // The password never goes on a command line: it comes from stdin or the environment.
    spec::RegistryCredentials creds;
    creds.address = *f.registry;
    creds.username = f.registry_username.value_or("");
    if (f.registry_password_stdin) {
      std::getline(std::cin, creds.password);
    } else if (const char* pw = std::getenv("TRAINYARD_REGISTRY_PASSWORD")) {
      creds.password = pw;
    }
    if (creds.username.empty() || creds.password.empty()) {
      return InvalidArgument(
          "--registry needs --registry-username and a password, from "
          "--registry-password-stdin or the TRAINYARD_REGISTRY_PASSWORD variable");
    }
    def.registry = std::move(creds);
  } else if (f.registry_username || f.registry_password_stdin) {
    return InvalidArgument("--registry-username and --registry-password-stdin go with --registry");
  }
  // Checked here too, so a mistake is reported before the daemon is started.
  TY_RETURN_IF_ERROR(def.Validate());
  return def;
}

std::string ComputeSummary(const json& c) {
  const int nodes = c.value("max_nodes", 0);
  std::string out = "  type " + Str(c, "type") + ", up to " + std::to_string(nodes) +
                    (nodes == 1 ? " node" : " nodes");
  if (Str(c, "type") == "slurm") {
    out +=
        " of partition " + Str(c, "partition") + ", containers by " + Str(c, "container_runtime");
    if (c.contains("registry") && c["registry"].is_object()) {
      out += ", images through " + Str(c["registry"], "address");
    }
  } else {
    out += " of " + FormatNodeSize(c);
  }
  if (const std::int64_t idle = c.value("idle_seconds", std::int64_t{0}); idle > 0) {
    out += "; scale-down after " + std::to_string(idle) + " s idle";
  }
  return out + "\n";
}

int ComputeCreate(Session& s, const ComputeFlags& flags, const std::string& output) {
  auto def = ComputeFromFlags(flags);
  if (!def.ok()) return Fail(def.status());
  json body = def->ToJson(spec::SecretMode::kPlain);  // to the daemon over loopback only
  if (flags.update) body["update"] = true;
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto res = (*http)->Request("POST", "/api/v1/computes", body.dump());
  if (!res.ok()) return Fail(res.status());
  if (Status st = StatusFromHttpResult(*res); !st.ok()) return Fail(st);
  auto stored = json::parse(res->body, nullptr, false);
  if (!stored.is_object()) return Fail(Internal("the daemon sent a malformed compute answer"));
  if (output == "json") {
    PrintJson(stored);
    return 0;
  }
  const std::string name = Str(stored, "name");
  const std::string outcome = Str(stored, "outcome");
  if (res->status == 201 || outcome == "created") {
    std::cout << "Created compute target " << name << "\n";
  } else if (outcome == "updated") {
    std::cout << "Updated compute target " << name << "\n";
  } else {
    std::cout << "Compute target " << name << " exists with the same settings\n";
  }
  std::cout << ComputeSummary(stored);
  return 0;
}

int ComputeList(Session& s, const std::string& output) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto computes = (*http)->GetJson("/api/v1/computes");
  if (!computes.ok()) return Fail(computes.status());
  if (output == "json") {
    PrintJson(*computes);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : *computes) {
    std::string busy = "?", queued = "?";
    // A compute deleted between the two calls just shows "?".
    if (auto st = (*http)->GetJson(ComputePath(Str(c, "name"))); st.ok()) {
      busy = std::to_string(st->value("nodes", json::object()).value("busy", 0));
      queued = std::to_string(st->value("queued", json::array()).size());
    }
    rows.push_back({Str(c, "name"), Str(c, "type"), std::to_string(c.value("max_nodes", 0)),
                    FormatNodeSize(c), busy, queued});
  }
  std::cout << RenderTable({"NAME", "TYPE", "MAX NODES", "NODE SIZE", "BUSY", "QUEUED"}, rows);
  return 0;
}

int ComputeShow(Session& s, const std::string& name, const std::string& output) {
  auto status = s.GetJson(ComputePath(name));
  if (!status.ok()) return Fail(status.status());
  if (output == "json") {
    PrintJson(*status);
  } else {
    std::cout << RenderComputeStatus(*status);
  }
  return 0;
}

int ComputeDelete(Session& s, const std::string& name) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto deleted = (*http)->DeleteJson(ComputePath(name));
  if (!deleted.ok()) return Fail(deleted.status());
  std::cout << "Deleted compute target " << name << "\n";
  return 0;
}

}  // namespace

void AddComputeCommands(CommandLine& cl) {
  struct Options {
    ComputeFlags flags;
    std::string name;
  };
  auto* compute = cl.app.add_subcommand("compute", "Create and inspect compute targets");
  compute->require_subcommand(1);
  auto o = std::make_shared<Options>();
  auto* compute_create = compute->add_subcommand(
      "create", "Create a compute target (or attach to an existing one with the same settings)");
  compute_create->add_option("-f,--file", o->flags.file, "Compute YAML file (docs/compute.md)");
  compute_create->add_option("--name", o->flags.name, "Name (required without -f)");
  compute_create
      ->add_option("--type", o->flags.type,
                   "docker (default), process (on the host) or slurm (a Slurm cluster)")
      ->check(CLI::IsMember({"docker", "process", "slurm", "amlcompute"}));
  compute_create->add_option("--max-nodes", o->flags.max_nodes, "Nodes runs may hold at once");
  compute_create->add_option("--node-cpus", o->flags.node_cpus,
                             "CPUs per node, e.g. 2 or 0.5 (0: the machine's)");
  compute_create->add_option("--node-memory", o->flags.node_memory,
                             "Memory per node, e.g. 4g or 512m (0: the machine's)");
  compute_create->add_option("--node-gpus", o->flags.node_gpus, "GPUs per node");
  compute_create->add_option("--idle-seconds", o->flags.idle_seconds,
                             "Idle time before scale-down, in seconds");
  compute_create->add_option("--partition", o->flags.partition, "slurm: the partition jobs go to");
  compute_create->add_option("--account", o->flags.account, "slurm: sbatch --account");
  compute_create->add_option("--qos", o->flags.qos, "slurm: sbatch --qos");
  compute_create->add_option("--gpus-per-node", o->flags.gpus_per_node,
                             "slurm: GPUs each node of a run gets");
  compute_create
      ->add_option("--container-runtime", o->flags.container_runtime,
                   "slurm: the container CLI on the nodes, docker (default) or podman")
      ->check(CLI::IsMember({"docker", "podman"}));
  compute_create
      ->add_option("--sbatch-arg", o->flags.sbatch_args,
                   "slurm: an extra sbatch option, e.g. --sbatch-arg=--exclusive (repeatable)")
      ->allow_extra_args(false);
  compute_create->add_option("--registry", o->flags.registry,
                             "slurm: registry HOST[:PORT] the image is pushed to and nodes pull "
                             "from");
  compute_create->add_option("--registry-username", o->flags.registry_username,
                             "slurm: the registry's user");
  compute_create->add_flag("--registry-password-stdin", o->flags.registry_password_stdin,
                           "slurm: read the registry's password from stdin (else from "
                           "TRAINYARD_REGISTRY_PASSWORD)");
  compute_create->add_option("--shared-dir", o->flags.shared_dir,
                             "slurm: a folder every node sees at the same path (default: the "
                             "workspace)");
  compute_create->add_flag("--update", o->flags.update,
                           "Change an existing compute target's settings (for runs started from "
                           "now on)");
  cl.AddOutput(compute_create);
  cl.Then(compute_create, [o, &cl](Session& s) { return ComputeCreate(s, o->flags, cl.output); });
  auto* compute_list = compute->add_subcommand("list", "List compute targets");
  cl.AddOutput(compute_list);
  cl.Then(compute_list, [&cl](Session& s) { return ComputeList(s, cl.output); });
  auto* compute_show = compute->add_subcommand(
      "show", "Show a compute target: nodes busy and idle, running runs, the queue");
  compute_show->add_option("name", o->name, "Compute name")->required();
  cl.AddOutput(compute_show);
  cl.Then(compute_show, [o, &cl](Session& s) { return ComputeShow(s, o->name, cl.output); });
  auto* compute_delete =
      compute->add_subcommand("delete", "Delete a compute target (refused while runs use it)");
  compute_delete->add_option("name", o->name, "Compute name")->required();
  cl.Then(compute_delete, [o](Session& s) { return ComputeDelete(s, o->name); });
}

}  // namespace trainyard::cli

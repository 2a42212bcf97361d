#include "trainyard/exec/node_launch.h"

#include <map>
#include <nlohmann/json.hpp>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/spec.h"

namespace trainyard::exec {
namespace {

namespace fs = std::filesystem;

// Paths inside a container.
constexpr const char* kCodeDir = "/trainyard/code";
constexpr const char* kSocketDir = "/trainyard/sock";
constexpr const char* kSdkDir = "/trainyard/sdk/python";
constexpr const char* kInputsDir = "/trainyard/inputs";
constexpr const char* kHostfileInContainer = "/trainyard/hostfile";
// Where a multi-node run's hostfile is kept, relative to its folder.
constexpr const char* kHostfile = "hostfile";

constexpr int kDefaultMasterPort = 6105;  // REFERENCE.md
constexpr int kTensorFlowPort = 2222;

// Runs `process_count_per_instance` copies of the command ($TRAINYARD_COMMAND) on one node,
// each with its own rank variables, and exits with the first non-zero exit code among them. A
// TERM reaches every copy.
constexpr const char* kLauncher = R"sh(
pids=""
i=0
while [ "$i" -lt "$TRAINYARD_PROCESSES" ]; do
  rank=$((TRAINYARD_NODE_RANK * TRAINYARD_PROCESSES + i))
  if [ "$TRAINYARD_DISTRIBUTION" = mpi ]; then
    ( export OMPI_COMM_WORLD_RANK=$rank OMPI_COMM_WORLD_LOCAL_RANK=$i
      exec /bin/sh -c "$TRAINYARD_COMMAND" ) &
  else
    ( export RANK=$rank LOCAL_RANK=$i; exec /bin/sh -c "$TRAINYARD_COMMAND" ) &
  fi
  pids="$pids $!"
  i=$((i + 1))
done
trap 'kill -TERM $pids 2>/dev/null' TERM INT
rc=0
for p in $pids; do
  wait "$p"
  c=$?
  if [ "$rc" -eq 0 ] && [ "$c" -ne 0 ]; then rc=$c; fi
done
exit "$rc"
)sh";

}  // namespace

NodeView ContainerView(const RunPlan& plan, const fs::path& work_dir,
                       const ExecutorOptions& options, bool network_tracking) {
  NodeView v;
  v.work_dir = work_dir;
  v.code_dir = kCodeDir;
  v.outputs_dir = std::string(kCodeDir) + "/outputs";
  v.mounts = {{(work_dir / "code").string(), kCodeDir, CodeIsReadOnly(plan.request)},
              {(work_dir / "outputs").string(), v.outputs_dir, false},
              {(work_dir / "logs").string(), std::string(kCodeDir) + "/logs", false}};
  v.mount_inputs = true;
  v.network_tracking = network_tracking && !plan.network_tracking_url.empty();
  if (!v.network_tracking && !options.socket_dir.empty()) {
    v.socket_dir = kSocketDir;
    v.mounts.push_back({options.socket_dir.string(), kSocketDir, true});
  }
  if (!options.sdk_dir.empty()) {
    v.sdk_dir = kSdkDir;
    v.mounts.push_back({options.sdk_dir.string(), kSdkDir, true});
  }
  if (plan.nodes > 1) v.hostfile = kHostfileInContainer;
  return v;
}

NodeView HostView(const RunPlan& plan, const fs::path& work_dir, const ExecutorOptions& options) {
  NodeView v;
  v.work_dir = work_dir;
  v.code_dir = (work_dir / "code").string();
  v.outputs_dir = (work_dir / "outputs").string();
  v.socket_dir = options.socket_dir.string();
  v.sdk_dir = options.sdk_dir.string();
  if (plan.nodes > 1) v.hostfile = HostfilePath(plan).string();
  v.shared_host = true;
  return v;
}

fs::path HostfilePath(const RunPlan& plan) { return plan.run_dir / kHostfile; }

std::string NodeHost(int i) { return "node-" + std::to_string(i); }

std::string NodeName(const RunPlan& plan, int i) {
  const std::string base = ContainerName(plan.workspace_id, plan.run_id);
  return plan.nodes == 1 ? base : base + "-" + std::to_string(i);
}

std::string Hostfile(const RunPlan& plan, const NodeView& view) {
  const int per_node = ProcessesPerNode(plan.request);
  std::string out;
  for (int i = 0; i < plan.nodes; ++i) {
    out += (view.shared_host ? std::string("localhost") : NodeHost(i)) +
           " slots=" + std::to_string(per_node) + "\n";
  }
  return out;
}

StatusOr<LaunchSpec> MakeNodeLaunch(const RunPlan& plan, const NodeView& view, int node,
                                    bool distribution, const ExecutorOptions& options) {
  const spec::RunRequest& req = plan.request;
  LaunchSpec spec;
  spec.run_id = plan.run_id;
  spec.name = NodeName(plan, node);
  spec.image = plan.image;
  spec.working_dir = view.code_dir;
  spec.shm_size_bytes = req.shm_size_bytes.value_or(0);
  spec.mounts = view.mounts;
  const int slot =
      node < static_cast<int>(plan.slots.size()) ? plan.slots[static_cast<std::size_t>(node)] : 0;
  spec.labels = {{"trainyard.run_id", plan.run_id},
                 {"trainyard.node", std::to_string(node)},
                 {"trainyard.compute", plan.compute.name},
                 {"trainyard.workspace", plan.workspace_root.string()}};

  std::map<std::string, std::string> env;
  for (const auto& [k, v] : plan.environment.environment_variables) env[k] = v;
  for (const auto& [k, v] : req.environment_variables) env[k] = v;
  if (!env.count("PYTHONUNBUFFERED")) env["PYTHONUNBUFFERED"] = "1";  // logs stream live

  // The node's size. Containers are held to it; a process is told its GPUs.
  const spec::ComputeDefinition& compute = plan.compute;
  spec.nano_cpus = static_cast<std::int64_t>(compute.node_cpus * 1e9);
  spec.memory_bytes = compute.node_memory_bytes;
  spec.pids_limit = options.container_pids_limit;
  spec.engine_log_max_bytes = options.container_log_max_bytes;
  if (compute.node_gpus > 0) {
    // Node slot k owns GPUs [k*g, (k+1)*g) of the machine.
    std::string host_ids, local_ids;
    for (int g = 0; g < compute.node_gpus; ++g) {
      const std::string id = std::to_string(slot * compute.node_gpus + g);
      spec.gpu_device_ids.push_back(id);
      host_ids += (g ? "," : "") + id;
      local_ids += (g ? "," : "") + std::to_string(g);
    }
    // Inside a container only its own GPUs exist, numbered from 0.
    if (!env.count("CUDA_VISIBLE_DEVICES")) {
      env["CUDA_VISIBLE_DEVICES"] = view.shared_host ? host_ids : local_ids;
    }
  }

  std::map<std::string, std::string> ins, outs;
  for (const auto& [name, in] : req.inputs) {
    std::string value;
    if (in.kind == spec::InputSpec::Kind::kLiteral) {
      value = in.value;
    } else if (!view.mount_inputs) {
      value = in.path;  // the daemon's machine is the host: the path as given
    } else {
      std::string target = std::string(kInputsDir) + "/" + name;
      if (in.kind == spec::InputSpec::Kind::kUriFile) {
        target += "/" + fs::path(in.path).filename().string();
      }
      spec.mounts.push_back({in.path, target, true});
      value = target;
    }
    ins[name] = value;
    env["AZURE_ML_INPUT_" + name] = value;
  }
  for (const auto& [name, out] : req.outputs) {
    TY_RETURN_IF_ERROR(MakeDirs(view.work_dir / "outputs" / name));
    const std::string target = view.outputs_dir + "/" + name;
    outs[name] = target;
    env["AZURE_ML_OUTPUT_" + name] = target;
  }
  if (view.network_tracking) {
    // A node may be another machine: it reports to the daemon's public address, trusting the
    // certificate the daemon serves there (docs/security.md, "Serving beyond loopback").
    env["TRAINYARD_TRACKING_URL"] = plan.network_tracking_url;
    if (!plan.network_tracking_ca.empty()) env["TRAINYARD_TRACKING_CA"] = plan.network_tracking_ca;
    env["TRAINYARD_RUN_TOKEN"] = plan.run_token;
  } else if (!view.socket_dir.empty()) {
    env["TRAINYARD_TRACKING_URL"] = "unix://" + view.socket_dir + "/api.sock";
    env["TRAINYARD_RUN_TOKEN"] = plan.run_token;
  }
  if (!view.sdk_dir.empty()) spec.prepend_paths["PYTHONPATH"] = view.sdk_dir;
  env["TRAINYARD_RUN_ID"] = plan.run_id;
  env["TRAINYARD_EXPERIMENT"] = req.experiment_name;
  env["TRAINYARD_WORKSPACE"] = plan.workspace_root.string();
  env["AZUREML_RUN_ID"] = plan.run_id;
  env["AZUREML_ARM_PROJECT_NAME"] = req.experiment_name;

  TY_ASSIGN_OR_RETURN(std::string command, spec::SubstituteCommand(req.command, ins, outs));
  if (!distribution) {
    // Whatever starts the node derives its place in the run (e.g. a Slurm task from SLURM_*).
    spec.argv = {"/bin/sh", "-c", command};
    for (const auto& [k, v] : env) spec.env.push_back(k + "=" + v);
    return spec;
  }

  // Distributed training (REFERENCE.md): every node learns the run's shape and its place in it.
  const int nodes = plan.nodes;
  const std::string type = req.distribution ? req.distribution->type : "";
  const int per_node = ProcessesPerNode(req);
  const int world = nodes * per_node;
  const std::string master = view.shared_host ? "127.0.0.1" : NodeHost(0);
  // The cloud service's v1 runtime names for the node's index and the head node (a one-node
  // container has no host name of its own: itself).
  env["AZ_BATCHAI_TASK_INDEX"] = std::to_string(node);
  env["AZ_BATCHAI_MPI_MASTER_NODE"] = nodes > 1 ? master : "127.0.0.1";
  if (nodes > 1 && !view.shared_host) {
    spec.network = ContainerName(plan.workspace_id, plan.run_id);
    spec.hostname = NodeHost(node);
    spec.network_aliases = {NodeHost(node)};
    spec.mounts.push_back({HostfilePath(plan).string(), view.hostfile, true});
  }
  if (nodes > 1 || !type.empty()) {
    env["TRAINYARD_NODE_RANK"] = std::to_string(node);
    env["TRAINYARD_NODE_COUNT"] = std::to_string(nodes);
    env["TRAINYARD_PROCESSES"] = std::to_string(per_node);
    env["TRAINYARD_DISTRIBUTION"] = type;
    if (nodes > 1) env["TRAINYARD_HOSTFILE"] = view.hostfile;
  }
  if (type == "mpi") {
    env["OMPI_COMM_WORLD_SIZE"] = std::to_string(world);
    env["OMPI_COMM_WORLD_LOCAL_SIZE"] = std::to_string(per_node);
    env["OMPI_COMM_WORLD_NODE_RANK"] = std::to_string(node);
    if (per_node == 1) {
      env["OMPI_COMM_WORLD_RANK"] = std::to_string(node);
      env["OMPI_COMM_WORLD_LOCAL_RANK"] = "0";
    }
  } else if (type == "tensorflow") {
    // One task per node: the first nodes are workers (worker 0 the chief), the last
    // parameter_server_count ones parameter servers.
    const int servers = req.distribution->parameter_server_count;
    const int workers_n = nodes - servers;
    nlohmann::json workers = nlohmann::json::array();
    nlohmann::json ps = nlohmann::json::array();
    for (int i = 0; i < nodes; ++i) {
      (i < workers_n ? workers : ps)
          .push_back((view.shared_host ? "127.0.0.1" : NodeHost(i)) + ":" +
                     std::to_string(kTensorFlowPort + (view.shared_host ? i : 0)));
    }
    nlohmann::json cluster = {{"worker", workers}};
    if (servers > 0) cluster["ps"] = ps;
    const bool is_worker = node < workers_n;
    env["TF_CONFIG"] = nlohmann::json{
        {"cluster", cluster},
        {"task",
         {{"type", is_worker ? "worker" : "ps"}, {"index", is_worker ? node : node - workers_n}}},
        {"environment",
         "cloud"}}.dump();
  } else if (type == "pytorch" || nodes > 1) {
    env["MASTER_ADDR"] = master;
    if (!env.count("MASTER_PORT")) env["MASTER_PORT"] = std::to_string(kDefaultMasterPort);
    env["WORLD_SIZE"] = std::to_string(world);
    env["NODE_RANK"] = std::to_string(node);
    if (per_node == 1) {
      env["RANK"] = std::to_string(node);
      env["LOCAL_RANK"] = "0";
    }
  }
  if (per_node > 1) {
    // Several processes per node: a launcher starts them, each with its own ranks.
    env["TRAINYARD_COMMAND"] = command;
    spec.argv = {"/bin/sh", "-c", kLauncher};
  } else {
    spec.argv = {"/bin/sh", "-c", command};
  }
  for (const auto& [k, v] : env) spec.env.push_back(k + "=" + v);
  return spec;
}

}  // namespace trainyard::exec

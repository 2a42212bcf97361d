#pragma once

// What each node of a run is started with (its command, variables, mounts and size), the same
// for every executor except for how its nodes see the run: a container sees the run's folders
// where it mounts them (/trainyard/...), a host process sees the host's paths.

#include <filesystem>
#include <string>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/docker/engine.h"
#include "trainyard/exec/node_executor.h"
#include "trainyard/exec/run_executor.h"

namespace trainyard::exec {

// How a run's nodes see its folders, the daemon and each other.
struct NodeView {
  std::filesystem::path work_dir;     // the host folder holding code/, outputs/, logs/
  std::string code_dir;               // where a node sees code/: its working folder
  std::string outputs_dir;            // where it sees outputs/
  std::vector<docker::Mount> mounts;  // what a container mounts for the above
  bool mount_inputs = false;          // inputs are mounted at /trainyard/inputs/<name>
  std::string socket_dir;             // where it sees the daemon's socket folder ("" none)
  std::string sdk_dir;                // where it sees the Python package ("" none)
  std::string hostfile;               // where it sees the hostfile (several nodes)
  // Nodes report to RunPlan::network_tracking_url (they may be other machines) rather than to
  // the daemon's socket.
  bool network_tracking = false;
  // Every node is on this host: they reach each other at 127.0.0.1 (TensorFlow workers on
  // ports of their own), and CUDA_VISIBLE_DEVICES names the machine's GPUs. Otherwise each
  // node is a container with its own host name on the run's network and its GPUs from 0.
  bool shared_host = false;
};

// The view of nodes that are containers: code/ (read-only unless copied), outputs/ and logs/
// mounted at /trainyard/code, ./outputs and ./logs; the socket and Python package mounted
// read-only. With `network_tracking` and RunPlan::network_tracking_url set, nodes report there
// instead of to the socket (which is then not mounted).
NodeView ContainerView(const RunPlan& plan, const std::filesystem::path& work_dir,
                       const ExecutorOptions& options, bool network_tracking = false);
// The view of nodes that are processes on this host: the host's paths.
NodeView HostView(const RunPlan& plan, const std::filesystem::path& work_dir,
                  const ExecutorOptions& options);

// The host name of node `i` on a multi-node run's network.
std::string NodeHost(int i);
// The container (or process) of node `i` of a run; a one-node run's is the run's name.
std::string NodeName(const RunPlan& plan, int i);
// Where a multi-node run's hostfile is kept on the daemon's machine (its folder), and its text:
// one "HOST slots=P" line per node.
std::filesystem::path HostfilePath(const RunPlan& plan);
std::string Hostfile(const RunPlan& plan, const NodeView& view);

// The launch of node `node` (0-based). With `distribution`, the node is told its place in the
// run (ranks, master, TF_CONFIG; several processes started by a launcher); without, the
// command runs as it is and whatever starts it derives that (a Slurm task). Makes the folders
// of the run's named outputs.
StatusOr<LaunchSpec> MakeNodeLaunch(const RunPlan& plan, const NodeView& view, int node,
                                    bool distribution, const ExecutorOptions& options);

}  // namespace trainyard::exec

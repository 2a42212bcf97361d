#pragma once

// The run executor of computes whose runs are nodes started one by one through a NodeExecutor
// on this machine: `docker` (containers) and `process` (host processes). Each node's output is
// followed into the run's logs; cancel, timeout and a failed node stop every node that still
// runs; a later daemon finds the nodes again by name and labels.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trainyard/common/mutex.h"
#include "trainyard/exec/node_executor.h"
#include "trainyard/exec/node_launch.h"
#include "trainyard/exec/run_executor.h"

namespace trainyard::exec {

class NodeRunExecutor : public RunExecutor {
 public:
  // `nodes` is borrowed and must outlive the executor.
  NodeRunExecutor(NodeExecutor& nodes, ExecutorOptions options)
      : nodes_(nodes), options_(std::move(options)) {}

  StatusOr<std::unique_ptr<LaunchedRun>> Launch(const RunPlan& plan, RunHost& host) override;
  StatusOr<std::unique_ptr<LaunchedRun>> Recover(const RunPlan& plan, RunHost& host,
                                                 store::RunStatus status,
                                                 const std::string& handle) override;

 protected:
  // How the run's nodes see it.
  virtual NodeView ViewOf(const RunPlan& plan) const = 0;
  // Whether a node killed by a signal nobody here sent may have been stopped by its engine
  // going away (dockerd stops its containers as it shuts down).
  virtual bool NodesEndWithTheirEngine() const { return false; }

  const ExecutorOptions& options() const { return options_; }

 private:
  class Run;

  // Whether node `handle` is run `run_id`'s of this workspace, by the labels it was launched
  // with: false when it does not exist or belongs to someone else (never to be stopped or
  // removed); an error when the node executor cannot be asked.
  StatusOr<bool> OwnsNode(const RunPlan& plan, const std::string& handle);
  // Removes the nodes of earlier runs whose removal failed (their engine was gone).
  void RemoveLeftovers();

  NodeExecutor& nodes_;
  ExecutorOptions options_;
  Mutex mu_;
  std::vector<std::string> leftovers_ GUARDED_BY(mu_);
};

}  // namespace trainyard::exec

#pragma once

// `docker` computes (the default `local` one among them): each node of a run is a container on
// the daemon's Docker engine, made from the run's image, with the run's folders mounted at
// /trainyard/code (./outputs and ./logs over it), the daemon's socket and the Python package;
// the nodes of a multi-node run share a network of their own, where each is `node-<i>`.

#include "trainyard/exec/docker/docker_executor.h"
#include "trainyard/exec/node_runs.h"

namespace trainyard::exec {

class DockerRunExecutor : public NodeRunExecutor {
 public:
  // `containers` is borrowed and must outlive the executor.
  DockerRunExecutor(DockerExecutor& containers, ExecutorOptions options)
      : NodeRunExecutor(containers, std::move(options)) {}

  // The code is hard links to the snapshot's objects, mounted read-only (a run cannot write
  // through a link into the store), unless the job asks for a copy; ./outputs and ./logs are
  // mount points.
  WorkFolder WorkFolderOf(const RunPlan& plan) const override {
    return {plan.run_dir, plan.request.code_copy, /*link_outputs=*/false};
  }

 protected:
  NodeView ViewOf(const RunPlan& plan) const override {
    return ContainerView(plan, plan.run_dir, options());
  }
  bool NodesEndWithTheirEngine() const override { return true; }
};

}  // namespace trainyard::exec

#pragma once

// `process` computes: each node of a run is a process on the daemon's machine, with the
// daemon's rights, started by ProcessExecutor in the run's code folder; no image is built.

#include "trainyard/exec/node_runs.h"
#include "trainyard/exec/process/process_executor.h"

namespace trainyard::exec {

class ProcessRunExecutor : public NodeRunExecutor {
 public:
  // `processes` is borrowed and must outlive the executor.
  ProcessRunExecutor(ProcessExecutor& processes, ExecutorOptions options)
      : NodeRunExecutor(processes, std::move(options)) {}

  bool NeedsImage() const override { return false; }
  // A process could write through a hard link into the snapshot store: it always gets a copy.
  // With no mounts, ./outputs and ./logs are links to the run's own folders.
  WorkFolder WorkFolderOf(const RunPlan& plan) const override {
    return {plan.run_dir, /*copy_code=*/true, /*link_outputs=*/true};
  }

 protected:
  NodeView ViewOf(const RunPlan& plan) const override {
    return HostView(plan, plan.run_dir, options());
  }
};

}  // namespace trainyard::exec

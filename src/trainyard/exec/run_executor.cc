#include "trainyard/exec/run_executor.h"

#include <algorithm>

#include "trainyard/common/util.h"
#include "trainyard/exec/run_logs.h"

namespace trainyard::exec {

std::string NodeLogName(int i) { return "user_logs/std_log_node_" + std::to_string(i) + ".txt"; }

std::string ContainerName(const std::string& workspace_id, const std::string& run_id) {
  return "trainyard-" + workspace_id + "-" + run_id;
}

int ProcessesPerNode(const spec::RunRequest& req) {
  return req.distribution ? std::max(1, req.distribution->process_count_per_instance) : 1;
}

bool CodeIsReadOnly(const spec::RunRequest& req) {
  return !req.snapshot_id.empty() && !req.code_copy;
}

std::optional<Clock::TimePoint> TimeoutDeadline(const RunPlan& plan, std::int64_t running_since,
                                                Clock& clock) {
  if (!plan.request.timeout_seconds) return std::nullopt;
  const std::int64_t elapsed_ms = std::max<std::int64_t>(0, clock.NowMillis() - running_since);
  return clock.SteadyNow() +
         std::chrono::milliseconds(*plan.request.timeout_seconds * 1000 - elapsed_ms);
}

std::string ReadOnlyCodeHint(const RunPlan& plan) {
  if (!CodeIsReadOnly(plan.request) ||
      !LogTailMentions(plan.run_dir, kStdLog, "Read-only file system")) {
    return "";
  }
  return "; it tried to write into its code folder, which is read-only (the files are the "
         "snapshot's, shared with other runs): write into ./outputs or ./logs, or submit with "
         "--copy (or `snapshot: {copy: true}` in the job file) for a writable copy";
}

}  // namespace trainyard::exec

#pragma once

// What a run request alone decides about whether it can run: the checks that need neither the
// daemon's store nor its compute targets. The CLI makes them before it snapshots the code (a bad
// job fails in milliseconds, not after an upload) and the daemon again at submit (a request may
// come from any client). What depends on the daemon (the compute's size, the snapshot, input
// paths on its machine, the environment) is checked there only.

#include "trainyard/common/status.h"
#include "trainyard/spec/definition.h"

namespace trainyard::spec {

// The longest `limits.timeout` a run may ask for: ten years.
inline constexpr std::int64_t kMaxTimeoutSeconds = 10LL * 366 * 24 * 3600;

// InvalidArgument naming the field and what it must be: the distribution (type pytorch, mpi or
// tensorflow; 1..1024 processes per instance; tensorflow with one per node), the priority
// (within kMaxPriority), the experiment and run names, the timeout (positive, at most
// kMaxTimeoutSeconds), and the command's ${{inputs.*}}/${{outputs.*}} references.
Status CheckRunRequest(const RunRequest& request);

}  // namespace trainyard::spec

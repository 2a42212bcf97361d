#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ThreadSanitizer over the concurrent modules: builds the `tsan` preset's tests of the scheduler
# (and its queue), the executors, the HTTP server and the tracking store, and runs their unit
# tests. Any data race, lock-order inversion or use of a destroyed mutex fails the run
# (halt_on_error). Run by scripts/test.sh after the main test run.
#   scripts/tsan.sh [ctest arguments]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
cd "$here/.."

targets=(sched_test compute_queue_test exec_test http_test tracking_test tsan_canary)
"$here/deps.sh"
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target "${targets[@]}" >/dev/null
# The tests of those binaries: the others, and the fuzz replays, are not built here.
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  ctest --preset tsan -L unit -E '_NOT_BUILT|^fuzz_replay_' --timeout 900 --no-tests=error -j "$(nproc)" "$@"

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The one command that sets everything up and runs every test:
#   deps.sh -> dockerd.sh -> base-images.sh -> registry.sh -> slurm.sh -> storage.sh ->
#   cmake --preset dev ->
#   build -> ctest -> lint.sh (formatting) -> fuzz.sh (every fuzz target for FUZZ_SECONDS,
#   default 15; 0 skips it; its clang build also checks the thread-safety annotations) ->
#   tidy.sh (clang-tidy's curated checks, .clang-tidy) -> tsan.sh (ThreadSanitizer)
# Tests run with TRAINYARD_REQUIRE_SERVICES=1: a missing service is a failure, never a skip.
# Extra arguments go to ctest (e.g. scripts/test.sh -R spec). Works from any folder.
# The last line printed is "N passed, N failed"; a setup or build step that fails counts as one
# failure. Exits non-zero when anything failed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
cd "$here/.."

logdir=$(mktemp -d /tmp/trainyard-test.XXXXXX)
trap 'rm -rf "$logdir"' EXIT

summary() { printf '%s passed, %s failed\n' "$1" "$2"; }
# A step that fails before any test ran: say which, show its output, count it as one failure.
setup_failed() {
  ty_log "$1 failed"
  [ -n "${2:-}" ] && [ -s "$2" ] && grep -vE '^\[[0-9]+/[0-9]+\] ' "$2" | tail -n 200 >&2
  echo
  summary 0 1
  exit 1
}

for s in deps dockerd base-images registry slurm storage; do
  "$here/$s.sh" || setup_failed "scripts/$s.sh"
done
# Integration tests read the private registry's coordinates from
# /var/lib/trainyard-test/registry.env (mode 0600); the password is never put in the environment.

start=$SECONDS
cmake --preset dev >"$logdir/configure.log" 2>&1 || setup_failed "cmake --preset dev" "$logdir/configure.log"
cmake --build --preset dev >"$logdir/build.log" 2>&1 || setup_failed "cmake --build --preset dev" "$logdir/build.log"
ty_log "configured and built build/dev in $((SECONDS - start)) s; running ctest"

set +e
TRAINYARD_REQUIRE_SERVICES=1 ctest --preset dev --timeout 900 --output-on-failure --no-tests=error "$@" \
  2>&1 | tee "$logdir/ctest.log"
rc=${PIPESTATUS[0]}
set -e

# The source guard rails (scripts/lint.sh): counted as one test.
lint_rc=0
if [ $# -eq 0 ]; then
  "$here/lint.sh" || lint_rc=$?
fi

# Every fuzz target for a short budget (scripts/fuzz.sh): counted as one test.
fuzz_seconds="${FUZZ_SECONDS:-15}"
fuzz_rc=0
if [ "$fuzz_seconds" -gt 0 ] && [ $# -eq 0 ]; then
  ty_log "fuzzing every target for ${fuzz_seconds} s"
  "$here/fuzz.sh" "$fuzz_seconds" || fuzz_rc=$?
fi

# clang-tidy's curated checks over every source of the clang build (scripts/tidy.sh): counted as
# one test.
tidy_rc=0
if [ $# -eq 0 ]; then
  ty_log "clang-tidy: the checks of .clang-tidy over the clang build's sources"
  "$here/tidy.sh" || tidy_rc=$?
fi

# ThreadSanitizer over the concurrent modules' unit tests (scripts/tsan.sh): counted as one test.
tsan_rc=0
if [ $# -eq 0 ]; then
  ty_log "ThreadSanitizer: the scheduler, executor, HTTP and tracking tests"
  "$here/tsan.sh" >"$logdir/tsan.log" 2>&1 || tsan_rc=$?
  tail -n 3 "$logdir/tsan.log"
  if [ "$tsan_rc" -ne 0 ]; then
    # The log goes with the temp folder: show what failed and TSan's reports now.
    ty_log "ThreadSanitizer failed; what failed, and the end of its log:"
    grep -E '\*\*\*Failed|Failed +[0-9.]+ sec|WARNING: ThreadSanitizer|SUMMARY: ThreadSanitizer' \
      "$logdir/tsan.log" | head -n 40 >&2 || true
    tail -n 120 "$logdir/tsan.log" >&2
  fi
fi

line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$logdir/ctest.log" | tail -n1 || true)
if [ -n "$line" ]; then
  failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
  passed=$((total - failed))
else
  # ctest did not get as far as a summary (no tests found, bad arguments): count it as failed.
  passed=0 failed=1
fi
[ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
if [ $# -eq 0 ]; then
  if [ "$lint_rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
if [ $# -eq 0 ]; then
  if [ "$tsan_rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  if [ "$tidy_rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
if [ "$fuzz_seconds" -gt 0 ] && [ $# -eq 0 ]; then
  if [ "$fuzz_rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
echo
summary "$passed" "$failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]

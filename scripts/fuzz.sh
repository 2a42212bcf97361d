#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Builds the libFuzzer targets (the `fuzz` preset: clang, ASan + UBSan) and runs each for
# SECONDS (default 60) on its corpus in fuzz/corpus/NAME. New inputs go to a scratch folder,
# not into the repository. Prints one line per target (executions, exec/s, new inputs, crashes)
# and exits non-zero when any target crashed, leaked, or timed out on an input; those inputs
# are kept in build/fuzz/crashes/ (add each to fuzz/corpus/NAME: it is then replayed by the
# normal test run as fuzz_replay_NAME, after the fix).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
cd "$here/.."
seconds="${1:-60}"
shift || true

"$here/deps.sh"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target fuzz_all >/dev/null

bin=build/fuzz/fuzz
crashes=build/fuzz/crashes
mkdir -p "$crashes"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for t in "$bin"/*_fuzz; do targets+=("$(basename "$t" _fuzz)"); done
fi

failed=0
printf '%-14s %12s %10s %8s %8s\n' target executions exec/s new crashes
for t in "${targets[@]}"; do
  work=$(mktemp -d /tmp/trainyard-fuzz-XXXXXX)
  log="$work/log"
  set +e
  "$bin/${t}_fuzz" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2560 \
    -print_final_stats=1 -artifact_prefix="$crashes/$t-" "$work" "fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "$log")
  rate=$(awk '/stat::average_exec_per_sec:/ { print $2 }' "$log")
  new=$(find "$work" -maxdepth 1 -type f ! -name log | wc -l)
  found=$(find "$crashes" -maxdepth 1 -name "$t-*" | wc -l)
  printf '%-14s %12s %10s %8s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$new" "$found"
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    failed=1
    ty_log "$t failed (exit code $rc); its log:"
    grep -E 'ERROR|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -n 20 >&2 || true
  fi
  rm -rf "$work"
done
exit "$failed"

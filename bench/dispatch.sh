#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# Dispatch overhead: a cached-environment trivial job, `trainyard job create --stream` from
# submit to exit, against the anchor `docker run --rm IMAGE true`, both measured by hyperfine in
# the same run (the machine is shared and noisy, so only the ratio means much).
# Goal (DESIGN.md): ratio <= 1.15.
#   bench/dispatch.sh [RUNS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"
runs="${1:-20}"

ty=$(ty_bench_setup)

ty_bench_workspace dispatch

image=python:3.11-slim
cat >"$work/job.yml" <<YAML
command: "true"
environment:
  image: $image
experiment_name: bench-dispatch
YAML

# Warm-up outside the measurement: starts the daemon and registers the environment.
"$ty" job create -f "$work/job.yml" --stream >/dev/null

hyperfine --warmup 3 --runs "$runs" --export-json "$work/result.json" \
  -n trainyard "$ty job create -f $work/job.yml --stream" \
  -n "docker run" "docker run --rm $image true" >&2

jq -r '
  (.results[] | select(.command == "trainyard") | .mean) as $t |
  (.results[] | select(.command == "docker run") | .mean) as $d |
  "dispatch: trainyard \($t * 1000 | floor) ms, docker run --rm \($d * 1000 | floor) ms, ratio \((($t / $d) * 100 | round) / 100) (goal <= 1.15)"
' "$work/result.json"

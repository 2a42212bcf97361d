#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# Scheduler throughput against its anchor (DESIGN.md's performance table):
#   trainyard: RUNS trivial runs (`command: "true"`) on a `process` compute with max_nodes 2,
#              submitted over HTTP by CLIENTS concurrent clients to an in-process daemon whose
#              workspace is on the disk (/var/tmp), every state transition persisted; runs/s
#              from the first submit to the last run Completed (bench/throughput/throughput_tool.cc)
#              — goal >= 200 runs/s
#   anchor:    when a responsive Slurm is here (`sinfo -h` succeeds), SLURM_JOBS
#              `sbatch --wrap=true` jobs, submit of the first -> all ended; the ratio printed
#   and beside it this machine's floor for one process (fork+exec of /bin/sh -c true)
#   bench/throughput.sh [RUNS [CLIENTS [SLURM_JOBS]]]   (defaults: 1000, 20, 100)
#   Environment: BUILD_DIR (default build/release), DIR for the workspace (default /var/tmp).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
runs="${1:-1000}"
clients="${2:-20}"
slurm_jobs="${3:-100}"
build="${BUILD_DIR:-$root/build/release}"
dir="${DIR:-/var/tmp}"

(cd "$root" && cmake --preset release -B "$build" -DTRAINYARD_BUILD_BENCH=ON >/dev/null &&
  cmake --build "$build" --target throughput_tool >/dev/null)

# This machine's floor for one process (fork+exec of `/bin/sh -c true`, what a trivial run's
# command costs at least), measured in this run: it differs a lot from one machine to the next.
. "$root/scripts/lib.sh"
ty_apt_install hyperfine
floor_json=$(mktemp)
hyperfine -N --style none --warmup 20 --runs 300 --export-json "$floor_json" '/bin/sh -c true' >/dev/null
floor_ms=$(python3 -c 'import json, sys; print("%.2f" % (json.load(open(sys.argv[1]))["results"][0]["mean"] * 1000))' "$floor_json")
rm -f "$floor_json"

# What durable transitions cost (Starting and final states fsynced before they return): the
# same runs with them off, measured first, in this run.
fast=$("$build/bench/throughput/throughput_tool" "$dir" "$runs" "$clients" fast)
fast_rate=$(awk '$1 == "runs_per_s" { print $2 }' <<<"$fast")
out=$("$build/bench/throughput/throughput_tool" "$dir" "$runs" "$clients" durable)
get() { awk -v k="$1" '$1 == k { print $2 }' <<<"$out"; }
rate=$(get runs_per_s)
echo "trainyard: $runs trivial runs, $clients clients, process compute with 2 nodes, states persisted:"
echo "  $rate runs/s ($(get seconds) s, submit of the first -> last Completed)" \
  " (goal >= 200 runs/s: $(awk -v r="$rate" 'BEGIN { print (r >= 200 ? "met" : "MISSED") }'))"
echo "  submits: $(get submits_per_s)/s, p50 $(get submit_ms_p50) ms, p99 $(get submit_ms_p99) ms"
echo "  per run on its node: $(get node_ms_mean) ms (Preparing->Running $(get preparing_to_running_ms_mean)," \
  "Running $(get running_ms_mean), Finalizing $(get finalizing_ms_mean))"
echo "  this machine's spawn floor (fork+exec of /bin/sh -c true, hyperfine -N): $floor_ms ms;" \
  "per run on its node / floor: $(awk -v a="$(get node_ms_mean)" -v b="$floor_ms" 'BEGIN { printf "%.1f", a / b }')"
echo "  without durable transitions (not a mode the daemon has; the cost of durability): $fast_rate runs/s;" \
  "durable / not: $(awk -v a="$rate" -v b="$fast_rate" 'BEGIN { printf "%.2f", a / b }')"

# The anchor: the same trivial jobs through Slurm, when a responsive one is here.
if [ "$slurm_jobs" -eq 0 ]; then
  echo "Slurm: not measured (SLURM_JOBS 0)"
  exit 0
fi
if ! command -v sbatch >/dev/null 2>&1 || ! timeout 10 sinfo -h >/dev/null 2>&1; then
  echo "Slurm not available here: ratio not measured (the Slurm issue installs it)"
  exit 0
fi
work=$(mktemp -d "$dir/tput-slurm-XXXXXX")
trap 'rm -rf "$work"' EXIT
name="tput-$$"
start=$(date +%s.%N)
ids=()
for _ in $(seq "$slurm_jobs"); do
  ids+=("$(sbatch --parsable --job-name="$name" --output=/dev/null --chdir="$work" --wrap=true)")
done
joined=$(IFS=,; echo "${ids[*]}")
deadline=$(($(date +%s) + 3600))
# Ended: no longer in the queue (squeue), then checked in the accounting (sacct) when there is one.
while [ -n "$(squeue -h -j "$joined" -o %i 2>/dev/null)" ]; do
  if [ "$(date +%s)" -gt "$deadline" ]; then
    echo "Slurm: $slurm_jobs jobs did not end within an hour" >&2
    scancel --name="$name" || true
    exit 1
  fi
  sleep 0.2
done
end=$(date +%s.%N)
if command -v sacct >/dev/null 2>&1; then
  bad=$(sacct -n -X -P -j "$joined" -o State 2>/dev/null | grep -cv '^COMPLETED' || true)
  [ "$bad" = 0 ] || echo "Slurm: $bad of $slurm_jobs jobs did not end COMPLETED (sacct)" >&2
fi
slurm_rate=$(awk -v n="$slurm_jobs" -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", n / (b - a) }')
echo "Slurm: $slurm_jobs \`sbatch --wrap=true\` jobs: $slurm_rate jobs/s"
echo "trainyard / Slurm: $(awk -v a="$rate" -v b="$slurm_rate" 'BEGIN { printf "%.0fx", a / b }')"

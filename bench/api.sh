#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# REST read throughput of the daemon (release build), by wrk with THREADS threads and CONNS
# connections on the same machine, for DURATION seconds each:
#   one run      GET /api/v1/jobs/{name}            goal >= 30 k req/s, p99 <= 10 ms
#   a page       GET /api/v1/jobs?limit=50           goal >= 10 k req/s
#   the floor    GET /api/v1/health (no token, no store): the same server and wrk on this
#                machine doing the least a request can, printed beside them
# The workspace holds RUNS finished trivial runs on a `process` compute (made through the CLI
# before the measurement). Issue 14's starting point: 9.2 k req/s (p99 4.7 ms) for one run,
# 2.3 k req/s (p99 21 ms) for a page.
#   bench/api.sh [RUNS [DURATION [THREADS [CONNS]]]]   (defaults: 200, 10, 2, 32)
#   Environment: BUILD_DIR, a build folder to take the binary from as it is (default: the
#   release preset's, built first).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"
runs="${1:-200}"
duration="${2:-10}"
threads="${3:-2}"
conns="${4:-32}"

"$root/scripts/deps.sh" >&2
ty_apt_install wrk jq >&2
build="${BUILD_DIR:-$root/build/release}"
if [ -z "${BUILD_DIR:-}" ]; then
  (cd "$root" && cmake --preset release >/dev/null &&
    cmake --build --preset release --target trainyard >/dev/null)
fi
ty="$build/src/main/trainyard"

ty_bench_workspace api

cd "$work"
"$ty" compute create --name bench --type process --max-nodes 2 >/dev/null
for i in $(seq 1 "$runs"); do
  cat >job.yml <<YAML
name: api-$i
command: "true"
compute: azureml:bench
environment: {image: busybox:latest, user_managed_dependencies: true}
experiment_name: bench-api
YAML
  "$ty" job create -f job.yml >/dev/null
done
# Every run finished before measuring: reads only.
for _ in $(seq 1 600); do
  left=$("$ty" job list --output json --limit 10000 |
    jq '[.[] | select(.status != "Completed" and .status != "Failed" and .status != "Canceled")] | length')
  [ "$left" -eq 0 ] && break
  sleep 0.5
done
[ "$left" -eq 0 ] || { ty_log "bench: $left runs did not finish"; exit 1; }

url=$(jq -r .url "$TRAINYARD_HOME/server.json")
# The token goes to wrk in a script file of this user's (never in a process argument).
(
  umask 077
  printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$(jq -r .token "$TRAINYARD_HOME/server.json")" >auth.lua
)

# Prints "<req/s> <p99 ms>" for one wrk run against PATH.
measure() {
  local out rate p99
  out=$(wrk -t "$threads" -c "$conns" -d "${duration}s" --latency -s auth.lua "$url$1")
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    ty_log "bench: $1 answered with errors:"
    printf '%s\n' "$out" >&2
    exit 1
  fi
  rate=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" {
    v = $2; unit = v; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v);
    if (unit == "us") v /= 1000; else if (unit == "s") v *= 1000;
    printf "%.1f", v }' <<<"$out")
  echo "$rate $p99"
}

read -r one one_p99 < <(measure "/api/v1/jobs/api-1")
read -r page page_p99 < <(measure "/api/v1/jobs?limit=50")
read -r floor floor_p99 < <(measure "/api/v1/health")

echo "api: GET /api/v1/jobs/{name}: $one req/s, p99 $one_p99 ms (goal >= 30000 req/s, p99 <= 10 ms; ratio to goal $(awk -v a="$one" 'BEGIN { printf "%.2f", a / 30000 }'))"
echo "api: GET /api/v1/jobs?limit=50: $page req/s, p99 $page_p99 ms (goal >= 10000 req/s; ratio to goal $(awk -v a="$page" 'BEGIN { printf "%.2f", a / 10000 }'))"
echo "api: floor GET /api/v1/health: $floor req/s, p99 $floor_p99 ms (wrk -t $threads -c $conns, same machine; one run at $(awk -v a="$one" -v f="$floor" 'BEGIN { printf "%.2f", a / f }') of the floor)"

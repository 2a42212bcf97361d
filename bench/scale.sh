#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# The daemon with a large store (release build), against issue 14's goals:
#   idle RSS of a new workspace's daemon                        goal <= 30 MiB
#   RSS of the daemon over a store of RUNS finished runs         goal <= 150 MiB
#   `trainyard job list` of the newest 50 runs, whole process    goal <= 20 ms
# and beside the last, this machine's floor for the CLI (`trainyard --version`: exec and exit)
# and the daemon's own time for the page (GET /api/v1/jobs?limit=50, curl's time_total).
# The runs are one real run (submitted through the CLI, run to Completed on a `process`
# compute) and RUNS-1 copies of its record, transitions and tags written through the store's
# API by bench/scale/scale_tool.cc while the daemon is stopped.
#   bench/scale.sh [RUNS]   (default 100000)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"
runs="${1:-100000}"

"$root/scripts/deps.sh" >&2
ty_apt_install hyperfine jq curl >&2
build="$root/build/release"
(cd "$root" && cmake --preset release -DTRAINYARD_BUILD_BENCH=ON >/dev/null &&
  cmake --build --preset release --target trainyard scale_tool >/dev/null)
ty="$build/src/main/trainyard"

ty_bench_workspace scale
cd "$work"

daemon_pid() { jq -r .pid "$TRAINYARD_HOME/server.json"; }
# "<VmRSS MiB> <VmHWM MiB>" of the daemon.
memory() {
  awk '/^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 }
       END { printf "%.1f %.1f\n", rss / 1024, hwm / 1024 }' "/proc/$(daemon_pid)/status"
}
stop_daemon() {
  local pid
  pid=$(daemon_pid)
  kill "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  ty_log "bench: the daemon did not stop"
  exit 1
}

# A new workspace's daemon, idle.
"$ty" compute create --name bench --type process --max-nodes 1 >/dev/null
sleep 1
read -r idle_rss _ < <(memory)

cat >job.yml <<YAML
name: scale
command: "true"
compute: azureml:bench
environment: {image: busybox:latest, user_managed_dependencies: true}
experiment_name: bench-scale
tags: {purpose: scale}
YAML
"$ty" job create -f job.yml >/dev/null
for _ in $(seq 1 600); do
  status=$("$ty" job show scale --output json | jq -r .status)
  [ "$status" = Completed ] && break
  sleep 0.1
done
[ "$status" = Completed ] || { ty_log "bench: the template run ended $status"; exit 1; }

stop_daemon
fill=$("$build/bench/scale/scale_tool" "$TRAINYARD_HOME/trainyard.db" scale "$((runs - 1))")
fill_s=$(awk '$1 == "seconds" { print $2 }' <<<"$fill")

# The daemon over the full store: started by the CLI, as a user would.
listed=$("$ty" job list --limit 50 --output json | jq length)
[ "$listed" -eq 50 ] || { ty_log "bench: job list gave $listed runs, not 50"; exit 1; }
newest=$("$ty" job list --limit 1 --output json | jq -r '.[0].name')
[ "$newest" = "scale-$((runs - 2))" ] || { ty_log "bench: the newest run is $newest"; exit 1; }
read -r start_rss _ < <(memory)

json=$(mktemp)
hyperfine -N --style none --warmup 5 --runs 50 --export-json "$json" \
  "$ty job list --limit 50" "$ty --version" >/dev/null
mean_ms() { jq -r ".results[$1].mean * 1000 | . * 100 | round / 100" "$json"; }
list_ms=$(mean_ms 0)
floor_ms=$(mean_ms 1)
rm -f "$json"

url=$(jq -r .url "$TRAINYARD_HOME/server.json")
(
  umask 077
  printf 'header = "Authorization: Bearer %s"\n' "$(jq -r .token "$TRAINYARD_HOME/server.json")" >curl.cfg
)
server_ms=$(for _ in $(seq 1 50); do
  curl -s -o /dev/null -K curl.cfg -w '%{time_total}\n' "$url/api/v1/jobs?limit=50"
done | sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] * 1000 }')
read -r rss hwm < <(memory)

verdict() { awk -v a="$1" -v g="$2" 'BEGIN { print (a <= g ? "met" : "MISSED") }'; }
echo "scale: idle daemon of a new workspace: RSS $idle_rss MiB (goal <= 30 MiB: $(verdict "$idle_rss" 30))"
echo "scale: $runs finished runs in the store (filled in $fill_s s)"
echo "scale: daemon RSS $rss MiB after the reads below, peak $hwm MiB, $start_rss MiB right after start" \
  "(goal <= 150 MiB: $(verdict "$hwm" 150))"
echo "scale: trainyard job list --limit 50: $list_ms ms, whole process (goal <= 20 ms: $(verdict "$list_ms" 20));" \
  "this machine's floor for the CLI (trainyard --version): $floor_ms ms;" \
  "the daemon's answer (GET /api/v1/jobs?limit=50, median): $server_ms ms"

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# Metric storage against its anchor, measured in the same run (bench/metrics/metrics_bench.cc):
#   ingest: decode binary 100k-point bodies + SeriesStore::Append, durable (WAL,
#           synchronous=FULL), points/s — goal >= 2 M points/s
#   anchor: one INSERT per point in 1000-point transactions, WAL, synchronous=FULL; ratio printed
#   read:   a 1 M-point series downsampled to 2000 points — goal <= 50 ms
#   end to end: the C++ client header into an in-process daemon over the unix socket and TCP
#           (bench/metrics/e2e_tool.cc), and the Python client (bench/metrics/py_ingest.py, run
#           by the tool with a run container's environment: run.log() in a loop, then flush())
#           over the unix socket; ratios to the anchor; the Python client's log() cost
#   chart reads under ingest: a 1 M-point series downsampled to 2000 points over HTTP, alone and
#           while the C++ client ingests into another run as fast as the daemon takes it —
#           goal p99 <= 50 ms under ingest (issue 14)
#   bench/metrics.sh [google benchmark flags, e.g. --benchmark_filter=Ingest]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"

ty_apt_install libbenchmark-dev
(cd "$root" && cmake --preset release -DTRAINYARD_BUILD_BENCH=ON >/dev/null &&
  cmake --build --preset release --target metrics_bench metrics_e2e_tool >/dev/null)
# On the disk (not tmpfs), where a workspace lives: fsync costs what it costs there.
"$root/build/release/bench/metrics/metrics_bench" --dir=/var/tmp "$@"

# End to end: the C++ client header and then the Python client into an in-process daemon,
# through the unix socket a container uses (and C++ over TCP too), every point durable and
# counted; the anchor in the same run.
e2e=$("$root/build/release/bench/metrics/metrics_e2e_tool" /var/tmp 5000000 5000000)
get() { awk -v k="$1" '$1 == k { print $2 }' <<<"$e2e"; }
mps() { awk -v r="$1" 'BEGIN { printf "%.2f M points/s", r / 1e6 }'; }
ratio() { awk -v a="$(get "$1")" -v b="$(get baseline_points_per_s)" 'BEGIN { printf "%.1fx", a / b }'; }
echo
echo "end to end, 5 M points of one series per client, durable (every point counted):"
echo "  C++ client, unix socket: $(mps "$(get cpp_unix_points_per_s)")  $(ratio cpp_unix_points_per_s) the anchor  (goal >= 2 M: $(awk -v r="$(get cpp_unix_points_per_s)" 'BEGIN { print (r >= 2e6 ? "met" : "MISSED") }'))"
echo "  C++ client, tcp:         $(mps "$(get cpp_tcp_points_per_s)")  $(ratio cpp_tcp_points_per_s) the anchor"
echo "  Python client, unix socket, run.log() loop + flush(): $(mps "$(get py_unix_points_per_s)")  $(ratio py_unix_points_per_s) the anchor"
echo "    (log() loop $(get py_loop_s) s, then flush() $(get py_flush_s) s)"
echo "  anchor, row per point (1000/txn, WAL, FULL): $(mps "$(get baseline_points_per_s)")"
echo "Python client, cost of one log() call (sdk/python/bench_log.py):"
python3 "$root/sdk/python/bench_log.py" | tail -n 1
echo "chart reads (1 M points -> 2000, GET over TCP, $(get chart_reads) reads) while the C++ client ingests into another run:"
echo "  p50 $(get chart_read_ingest_ms_p50) ms, p99 $(get chart_read_ingest_ms_p99) ms" \
  "(goal p99 <= 50 ms: $(awk -v v="$(get chart_read_ingest_ms_p99)" 'BEGIN { print (v <= 50 ? "met" : "MISSED") }'));" \
  "ingest meanwhile $(mps "$(get ingest_during_reads_points_per_s)"), every point stored"
echo "  the same reads with nothing else running: p50 $(get chart_read_quiet_ms_p50) ms, p99 $(get chart_read_quiet_ms_p99) ms"

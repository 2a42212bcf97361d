#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# Metric storage against its anchor, measured in the same run (bench/metrics/metrics_bench.cc):
#   ingest: decode binary 100k-point bodies + SeriesStore::Append, durable (WAL,
#           synchronous=FULL), points/s — goal >= 2 M points/s
#   anchor: one INSERT per point in 1000-point transactions, WAL, synchronous=FULL; ratio printed
#   read:   a 1 M-point series downsampled to 2000 points — goal <= 50 ms
# The end-to-end HTTP path (request parsing, socket) is not in this figure; the daemon's
# benchmark adds it.
#   bench/metrics.sh [google benchmark flags, e.g. --benchmark_filter=Ingest]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"

ty_apt_install libbenchmark-dev
(cd "$root" && cmake --preset release -DTRAINYARD_BUILD_BENCH=ON >/dev/null &&
  cmake --build --preset release --target metrics_bench >/dev/null)
# On the disk (not tmpfs), where a workspace lives: fsync costs what it costs there.
exec "$root/build/release/bench/metrics/metrics_bench" --dir=/var/tmp "$@"

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# Downloading a folder input from an Azure Blob datastore (Azurite, scripts/storage.sh), against
# its anchor, in the same run, the two alternating round by round:
#   anchor:    az storage blob download-batch (Debian's azure-cli) of the container, 8
#              connections (--max-connections 8), into a fresh folder
#   trainyard: a job on a `process` compute whose input is the container's folder in `download`
#              mode, in a fresh workspace (cold cache); the figure is the time its Preparing
#              took, less the Preparing of a job without the input in the same workspace
# then a second run of the same input in the same workspace (warm cache): what the input adds
# to Preparing when nothing changed.
# Goals (issue 15): cold <= 0.5 x the anchor's time; warm <= 50 ms added to Preparing.
# Beside the warm figure, the floor it cannot go below: the time the store took to list the
# container (from the run's preparation log, "listed in N ms"): revalidating a folder needs its
# listing. Last, the same files registered as a data asset (`data create` from the cache's
# folder) and read by a run as azureml:benchdata@latest: what that adds to Preparing, with no
# listing to wait for.
#   bench/data.sh [ROUNDS]   (default 3)
#   Environment: FILES (5000), FILE_KB (100): the folder's shape (5000 x 100 KB = 500 MB).
#   BUILD_DIR (default build/release).
set -euo pipefail
shopt -s inherit_errexit
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"
rounds="${1:-3}"
files="${FILES:-5000}"
file_kb="${FILE_KB:-100}"
case "$rounds" in '' | *[!0-9]* | 0) echo "usage: bench/data.sh [ROUNDS >= 1]" >&2; exit 2 ;; esac

"$root/scripts/deps.sh" >&2
"$root/scripts/storage.sh" >&2
ty_apt_install azure-cli jq
build="${BUILD_DIR:-$root/build/release}"
if [ -z "${BUILD_DIR:-}" ]; then
  (cd "$root" && cmake --preset release >/dev/null &&
    cmake --build --preset release --target trainyard >/dev/null)
fi
ty="$build/src/main/trainyard"

# shellcheck disable=SC1091
. /var/lib/trainyard-test/storage.env
# az takes the account key from its environment (never the command line).
export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=$AZURITE_ACCOUNT;AccountKey=$AZURITE_KEY;BlobEndpoint=$AZURITE_URL;"
export AZURE_CORE_COLLECT_TELEMETRY=no AZURE_CORE_ONLY_SHOW_ERRORS=yes
export TY_BENCH_AZ_KEY="$AZURITE_KEY"
container="bench-${files}x${file_kb}k"

work=$(mktemp -d /var/tmp/trainyard-bench-data.XXXXXX)
cleanup() {
  local ws
  for ws in "$work"/ws*; do
    if [ -f "$ws/server.json" ]; then kill "$(jq -r .pid "$ws/server.json")" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT

# --- the folder, uploaded once (kept in Azurite between runs of the bench) -----------------
have=$(az storage blob list -c "$container" --num-results "$((files + 1))" --query 'length(@)' \
         -o tsv 2>/dev/null || echo 0)
if [ "$have" != "$files" ]; then
  ty_log "making $files files of $file_kb KB and uploading them to container $container"
  az storage container create -n "$container" -o none
  mkdir -p "$work/src"
  python3 - "$work/src" "$files" "$file_kb" <<'EOF'
import os, sys
root, n, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, "part%02d" % (i % 50))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f:
        f.write(os.urandom(kb * 1024))
EOF
  az storage blob upload-batch -d "$container" -s "$work/src" --max-connections 8 --no-progress \
    -o none
  rm -rf "$work/src"
fi
bytes=$((files * file_kb * 1024))

# --- trainyard -------------------------------------------------------------------------------
ms() { date +%s%3N; }
# The Preparing time of run $2 in workspace $1, in ms (Starting - Preparing).
prep_ms() {
  TRAINYARD_HOME="$1" "$ty" job show "$2" -o json |
    jq '([.transitions[] | select(.status == "Starting") | .at_ms][0]) -
        ([.transitions[] | select(.status == "Preparing") | .at_ms][0])'
}
# A job in workspace $1 named $2 (with the input when $3 = input); waits; prints Preparing ms.
job() {
  local ws=$1 name=$2 with=$3 yml
  yml="$work/$name.yml"
  {
    echo "command: echo ok"
    echo "environment: {image: python:3.11-slim}"
    echo "compute: host"
    if [ "$with" = input ]; then
      echo "inputs:"
      echo "  data: {type: uri_folder, path: azureml://datastores/bench/paths/, mode: download}"
    elif [ "$with" = asset ]; then
      echo "inputs:"
      echo "  data: {type: uri_folder, path: 'azureml:benchdata@latest', mode: download}"
    fi
  } >"$yml"
  TRAINYARD_HOME="$ws" "$ty" -C "$work" job create -f "$yml" --name "$name" --stream >/dev/null
  prep_ms "$ws" "$name"
}
new_workspace() {
  local ws="$work/ws$1"
  cat >"$work/ds.yml" <<EOF
name: bench
type: azure_blob
account_name: $AZURITE_ACCOUNT
container_name: $container
endpoint: $AZURITE_URL
credentials: {account_key: "\${{env.TY_BENCH_AZ_KEY}}"}
EOF
  TRAINYARD_HOME="$ws" "$ty" -C "$work" datastore create -f "$work/ds.yml" >/dev/null
  TRAINYARD_HOME="$ws" "$ty" -C "$work" compute create --name host --type process >/dev/null
  echo "$ws"
}

printf 'folder: %d files, %s, in Azurite (blob); %d rounds\n' "$files" "$(numfmt --to=si "$bytes")B" "$rounds"
printf '%-6s %12s %14s %9s %12s %14s %12s\n' round "az (ms)" "trainyard (ms)" ratio "warm (ms)" \
  "listing (ms)" "asset (ms)"
ratios=() warms=() azs=() tys=() lists=() assets=()
for r in $(seq 1 "$rounds"); do
  rm -rf "$work/az"
  mkdir -p "$work/az"
  t0=$(ms)
  az storage blob download-batch -s "$container" -d "$work/az" --max-connections 8 --no-progress \
    -o none
  t_az=$(($(ms) - t0))
  got=$(find "$work/az" -type f | wc -l)
  [ "$got" = "$files" ] || { ty_log "az downloaded $got files, not $files"; exit 1; }
  rm -rf "$work/az"

  ws=$(new_workspace "$r")
  base=$(job "$ws" "base$r" none)
  cold=$(job "$ws" "cold$r" input)
  warm=$(job "$ws" "warm$r" input)
  # The same files registered as a data asset (kept content-addressed by the workspace): a run
  # that reads it lists nothing.
  folder=$(find "$ws/datacache/folders" -mindepth 1 -maxdepth 1 -type d | head -n1)
  TRAINYARD_HOME="$ws" "$ty" -C "$work" data create --name benchdata --path "$folder" >/dev/null
  asset=$(job "$ws" "asset$r" asset)
  base2=$(job "$ws" "base2$r" none)
  n=$(find "$ws/datacache/folders" -type f | wc -l)
  [ "$n" = "$files" ] || { ty_log "the data cache holds $n files, not $files"; exit 1; }
  t_ty=$((cold - base))
  added=$((warm - (base + base2) / 2))
  added_asset=$((asset - (base + base2) / 2))
  ratio=$(awk -v a="$t_ty" -v b="$t_az" 'BEGIN { printf "%.2f", a / b }')
  listing=$(sed -n 's/.*listed in \([0-9]*\) ms.*/\1/p' "$ws/runs/warm$r/logs/image_build.log" | head -n1)
  printf '%-6s %12d %14d %9s %12d %14s %12d\n' "$r" "$t_az" "$t_ty" "$ratio" "$added" "$listing" \
    "$added_asset"
  ratios+=("$ratio") warms+=("$added") azs+=("$t_az") tys+=("$t_ty") lists+=("$listing")
  assets+=("$added_asset")
  cp "$ws/runs/cold$r/logs/image_build.log" "$work/last-cold.log"
  kill "$(jq -r .pid "$ws/server.json")" 2>/dev/null || true
  rm -rf "$ws"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo
printf 'median: az %s ms, trainyard %s ms, ratio %s (goal <= 0.5); warm input adds %s ms to Preparing (goal <= 50), of which listing the container %s ms; as a data asset it adds %s ms\n' \
  "$(median "${azs[@]}")" "$(median "${tys[@]}")" "$(median "${ratios[@]}")" "$(median "${warms[@]}")" \
  "$(median "${lists[@]}")" "$(median "${assets[@]}")"
echo "the cold run's preparation log:"
echo "  (see the last round's) $(grep -h "input 'data'" "$work"/last-cold.log 2>/dev/null | sed 's/^\[trainyard\] //')"

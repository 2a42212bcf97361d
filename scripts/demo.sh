#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The one command that sets everything up on a fresh Debian 12 machine and runs the demo job
# end to end: deps.sh -> dockerd.sh -> base-images.sh -> release build of trainyard ->
#   trainyard job create -f examples/digits-custom-image/job.yml --stream
# (image build log, then the training log, then a summary), then downloads the run's outputs
# and logs into build/demo/<run name>/, lists the model file found there and prints the metric
# table the script logged (`trainyard job metrics`).
# Uses the default workspace (~/.trainyard, or $TRAINYARD_HOME). Works from any folder.
# Exits non-zero when a step or the run fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
cd "$here/.."
root=$PWD

job=examples/digits-custom-image/job.yml
experiment=digits-custom-image
ty=$root/build/release/src/main/trainyard

"$here/deps.sh"
"$here/dockerd.sh"
"$here/base-images.sh"

log=$(mktemp /tmp/trainyard-demo-build.XXXXXX)
trap 'rm -f "$log"' EXIT
[ -x "$ty" ] || ty_log "building trainyard (release); the first build takes a few minutes"
if ! { cmake --preset release && cmake --build --preset release --target trainyard; } >"$log" 2>&1; then
  ty_log "building trainyard failed:"
  grep -vE '^\[[0-9]+/[0-9]+\] ' "$log" | tail -n 100 >&2
  exit 1
fi
rm -f "$log"; trap - EXIT

# Runs that exist before this one, so the new run can be told apart afterwards.
before=$("$ty" job list --output json 2>/dev/null || echo '[]')
jq -e 'type == "array"' >/dev/null 2>&1 <<<"$before" || before='[]'

ty_log "submitting $job"
echo
set +e
"$ty" job create -f "$job" --stream
create_rc=$?
set -e
echo

runs=$("$ty" job list --output json)
name=$(jq -r --argjson before "$before" --arg exp "$experiment" '
  ($before | map(.name)) as $old
  | [ .[] | select((.name as $n | $old | index($n)) | not)
          | select((.experiment_name // .experiment // $exp) == $exp) ][0].name // empty' <<<"$runs")
if [ -z "$name" ]; then
  ty_log "job create exited with $create_rc and no new run of experiment $experiment is listed"
  exit 1
fi
status=$(jq -r --arg n "$name" '.[] | select(.name == $n) | .status' <<<"$runs")
ty_log "run $name: $status"

# `job download NAME --output DIR` writes into DIR/NAME.
out=$root/build/demo/$name
rm -rf "$out"
mkdir -p "$root/build/demo"
downloaded=1
"$ty" job download "$name" --output "$root/build/demo" || { downloaded=0; ty_log "job download $name failed"; }

model=$(find "$out" -type f -name model.pkl | head -n1)
if [ -n "$model" ]; then
  ty_log "model file:"
  ls -l "$model"
  metrics=$(find "$out" -type f -name metrics.json | head -n1)
  if [ -n "$metrics" ]; then
    ty_log "metrics: $(jq -c '{epochs, learning_rate, train_loss, test_accuracy}' "$metrics")"
  fi
else
  ty_log "no model.pkl under $out; downloaded files:"
  find "$out" -type f | sed "s|^$root/||" >&2
fi

if [ "$create_rc" -ne 0 ] || [ "$status" != Completed ] || [ "$downloaded" = 0 ] || [ -z "$model" ]; then
  ty_log "demo failed (job create exit $create_rc, run $status); logs are under $out"
  exit 1
fi
# The metrics the script logged through the tracking package, read back from the daemon.
metric_table=$("$ty" job metrics "$name")
if ! grep -q test_accuracy <<<"$metric_table"; then
  ty_log "the run logged no test_accuracy metric; job metrics said:"
  echo "$metric_table" >&2
  exit 1
fi
ty_log "metrics of $name (trainyard job metrics $name):"
echo "$metric_table"
ty_log "demo done: outputs and logs of $name are under ${out#"$root"/}"

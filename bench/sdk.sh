#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# The Python SDK's overhead: `Experiment.submit` + `wait_for_completion(show_output=True)` of a
# cached-environment trivial run, against `trainyard job create --stream` of the same job, both
# measured by hyperfine in the same run (the machine is shared and noisy: the ratio is what
# counts). Then the time of `import trainyard.core` against a bare `python3 -c pass` (the
# machine's floor for starting Python), by hyperfine too.
# Goals (issue 13): ratio <= 1.1; import trainyard.core <= 50 ms over the floor.
#   bench/sdk.sh [RUNS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"
runs="${1:-20}"

ty=$(ty_bench_setup)
py=/usr/bin/python3

ty_bench_workspace sdk
export TRAINYARD_CLI="$ty" PYTHONPATH="$root/sdk/python"

mkdir -p "$work/src"
echo 'print("ok")' >"$work/src/main.py"
image=python:3.11-slim
cat >"$work/job.yml" <<YAML
command: python main.py
code: ./src
environment:
  image: $image
  user_managed_dependencies: true
experiment_name: bench-sdk
YAML
cat >"$work/submit.py" <<PY
from trainyard.core import Environment, Experiment, ScriptRunConfig, Workspace
ws = Workspace.from_config()
env = Environment("bench")
env.docker.base_image = "$image"
env.python.user_managed_dependencies = True
src = ScriptRunConfig(source_directory="$work/src", script="main.py", environment=env)
Experiment(ws, "bench-sdk").submit(src).wait_for_completion(show_output=True)
PY

# Byte-compile the package, as `pip install` does: the machine may set PYTHONDONTWRITEBYTECODE,
# and then every start would compile the SDK from source, which no installed SDK does.
"$py" -m compileall -q "$root/sdk/python/trainyard"

# Warm-up outside the measurement: starts the daemon and registers both environments.
(cd "$work" && "$ty" job create -f job.yml --stream >/dev/null)
(cd "$work" && "$py" submit.py >/dev/null 2>&1)

cd "$work"
hyperfine --warmup 3 --runs "$runs" --export-json "$work/run.json" \
  -n sdk "$py submit.py" \
  -n cli "$ty job create -f job.yml --stream" >&2
hyperfine --warmup 3 --runs "$((runs * 2))" --export-json "$work/import.json" \
  -n import "$py -c 'import trainyard.core'" \
  -n import-line "$py -c 'from trainyard.core import Workspace, Environment, ScriptRunConfig, Experiment'" \
  -n floor "$py -c pass" >&2

jq -r '
  (.results[] | select(.command == "sdk") | .mean) as $s |
  (.results[] | select(.command == "cli") | .mean) as $c |
  "sdk: submit + wait_for_completion \($s * 1000 | floor) ms, trainyard job create --stream \($c * 1000 | floor) ms, ratio \((($s / $c) * 100 | round) / 100) (goal <= 1.1)"
' "$work/run.json"
jq -r '
  (.results[] | select(.command == "floor") | .mean) as $f |
  .results[] | select(.command != "floor") |
  "sdk: \(if .command == "import" then "import trainyard.core" else "the how-to import line" end) \((.mean - $f) * 1000 | floor) ms over the python3 floor of \($f * 1000 | floor) ms (goal <= 50)"
' "$work/import.json"

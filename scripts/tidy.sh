#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The clang-tidy guard rail: every source file the clang build compiles (build/fuzz's
# compile_commands.json: the product's libraries, the program and the fuzz targets) is checked
# with the curated checks of .clang-tidy, each an error. Prints each finding and exits non-zero
# when there is any. Configures the fuzz preset when it has not been (scripts/fuzz.sh builds it).
#   scripts/tidy.sh [FILE...]   only these files (paths from the repository's root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
cd "$here/.."

ty_apt_install clang-tidy clang
[ -f build/fuzz/compile_commands.json ] || cmake --preset fuzz >/dev/null

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  mapfile -t files < <(python3 -c '
import json, os
root = os.getcwd() + "/"
for e in json.load(open("build/fuzz/compile_commands.json")):
    f = os.path.normpath(os.path.join(e["directory"], e["file"]))
    if f.startswith(root) and "/build/" not in f:
        print(f[len(root):])' | sort -u)
fi
[ ${#files[@]} -gt 0 ] || { ty_log "tidy: no files to check"; exit 1; }

jobs=$(nproc)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$SECONDS
# One clang-tidy per file, $jobs at once; each prints only its findings (--quiet).
set +e
printf '%s\n' "${files[@]}" |
  xargs -P "$jobs" -I{} sh -c 'clang-tidy -p build/fuzz --quiet "$1" 2>/dev/null || echo "tidy-failed: $1"' _ {} \
    >"$out"
set -e
if grep -qE ': error: |^tidy-failed: ' "$out"; then
  grep -E -A2 ': error: ' "$out" | head -n 120 >&2
  grep -E '^tidy-failed: ' "$out" >&2 || true
  n=$(grep -cE ': error: ' "$out" || true)
  ty_log "tidy: $n findings in ${#files[@]} files ($((SECONDS - start)) s)"
  exit 1
fi
ty_log "tidy: ${#files[@]} files, no findings ($((SECONDS - start)) s)"

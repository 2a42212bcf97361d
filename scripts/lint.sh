#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The source guard rails that need no build: every tracked C++ file is formatted as
# .clang-format says (clang-format --dry-run -Werror). Prints each file that differs with the
# first differences, and exits non-zero when any does. `scripts/lint.sh --fix` formats them.
# The compiler-side guard rails (clang's -Wthread-safety) run with every clang build (the
# fuzz preset in scripts/test.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
cd "$here/.."

ty_apt_install clang-format git
mapfile -t files < <(git ls-files -- '*.cc' '*.h')
[ ${#files[@]} -gt 0 ] || { ty_log "lint: no C++ files found (not a git checkout?)"; exit 1; }

if [ "${1:-}" = "--fix" ]; then
  clang-format -i -- "${files[@]}"
  exit 0
fi

if ! out=$(clang-format --dry-run -Werror -- "${files[@]}" 2>&1); then
  head -n 60 <<<"$out" >&2
  bad=$(grep -oE '^[^:]+:[0-9]+:[0-9]+: error' <<<"$out" | cut -d: -f1 | sort -u | wc -l)
  ty_log "lint: $bad of ${#files[@]} files are not formatted (scripts/lint.sh --fix formats them)"
  exit 1
fi
ty_log "lint: ${#files[@]} files formatted as .clang-format says"

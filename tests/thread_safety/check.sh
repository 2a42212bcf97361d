#!/usr/bin/env bash
# The compile-time half of common/mutex.h: clang with -Wthread-safety accepts correct locking
# (ok.cc) and refuses each broken case in broken.cc (one per TY_CASE value), naming the
# mutex. Run by CTest as thread_safety_annotations.
#   check.sh SOURCE_DIR [CLANG]
set -euo pipefail
src="$1"
clang="${2:-clang++}"
here="$src/tests/thread_safety"
flags=(-std=c++20 -fsyntax-only -Wthread-safety -Werror=thread-safety -I"$src/src")

"$clang" "${flags[@]}" "$here/ok.cc"
echo "ok.cc: accepted"

cases=$(grep -oE 'TY_CASE == [0-9]+' "$here/broken.cc" | awk '{print $3}')
[ -n "$cases" ] || { echo "broken.cc has no cases" >&2; exit 1; }
for n in $cases; do
  want=$(grep -E "^// case $n: " "$here/broken.cc" | sed -E "s|^// case $n: ||")
  if out=$("$clang" "${flags[@]}" -DTY_CASE="$n" "$here/broken.cc" 2>&1); then
    echo "broken.cc case $n compiled, but must not: $want" >&2
    exit 1
  fi
  if ! grep -qF -- "$want" <<<"$out"; then
    echo "broken.cc case $n failed without the expected diagnostic '$want':" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "broken.cc case $n: refused ($want)"
done

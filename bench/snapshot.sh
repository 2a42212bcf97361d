#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# Snapshot speed against its anchors, all measured by hyperfine in the same run on the same
# tree (5000 files, ~490 MB of random content, mixed sizes), whole-process times:
#   cold snapshot (fresh store)   vs  `git init && git add -A`, and `tar -c | sha256sum`
#   unchanged re-snapshot         vs  `git status --porcelain`
#   one file changed              vs  the unchanged re-snapshot
#   materialise into a new folder: hard links (what a run gets) and verified copies, vs cp -r
# Goals (DESIGN.md): cold <= 1.0 s and <= 1/10 of git add; unchanged <= git status;
# one file <= 2x unchanged; materialise (links) <= 0.2 s.
#   bench/snapshot.sh [RUNS]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"
runs="${1:-10}"

ty_apt_install hyperfine jq git
tool="$root/build/release/bench/snapshot_tool"
(cd "$root" && cmake --preset release -DTRAINYARD_BUILD_BENCH=ON >/dev/null &&
  cmake --build --preset release --target snapshot_tool >/dev/null)

# On the disk (not tmpfs), where a workspace lives.
work=$(mktemp -d /var/tmp/trainyard-bench-snapshot.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
tree="$work/tree"
store="$work/store"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b
git_="git --git-dir=$work/git --work-tree=$tree"

echo "generating 5000 files / ~490 MB in $tree ..." >&2
python3 - "$tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
# Log-normal sizes (many small files, a few large ones) scaled to 490 MB in total.
raw = [rng.lognormvariate(0, 2.0) for _ in range(5000)]
scale = 490e6 / sum(raw)
sizes = [max(1, int(r * scale)) for r in raw]
for i, size in enumerate(sizes):
    d = os.path.join(root, "d%02d" % (i % 50), "s%d" % (i % 7))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%04d.bin" % i), "wb") as f:
        f.write(os.urandom(size))
PY
sync
echo "tree: $(find "$tree" -type f | wc -l) files, $(du -sm "$tree" | cut -f1) MB" >&2

result() {  # result FILE NAME -> mean seconds
  jq -r --arg n "$2" '.results[] | select(.command == $n) | .mean' "$1"
}
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# 1. Cold: a fresh store (and a fresh git folder) in a new folder each run; the tree is in the
# page cache for every contender. Old stores are not deleted between runs: creating thousands
# of files right after deleting thousands makes ext4's inode allocator scan for recently
# deleted inodes, which would measure the benchmark's own cleanup.
mkdir -p "$work/cold"
hyperfine --runs 3 --export-json "$work/cold.json" --prepare "sync" \
  -n snapshot "$tool snapshot \$(mktemp -d -p $work/cold) $tree" \
  -n "git add" "g=\$(mktemp -d -p $work/cold) && git --git-dir=\$g --work-tree=$tree init -q &&
    git --git-dir=\$g --work-tree=$tree add -A" \
  -n "tar|sha256sum" "tar -C $tree -cf - . | sha256sum" >&2
rm -rf "$work/cold"

# 2. Unchanged re-snapshot against git status (both with their caches warm).
rm -rf "$store" "$work/git"
"$tool" snapshot "$store" "$tree" >/dev/null
$git_ init -q && $git_ add -A
sleep 1  # Past the racy window of both caches (git's index and ours), as in normal use.
$git_ status --porcelain >/dev/null
"$tool" snapshot "$store" "$tree" >/dev/null
unchanged_out=$("$tool" snapshot "$store" "$tree")
hyperfine --runs "$((runs * 3))" --warmup 3 -N --export-json "$work/unchanged.json" \
  -n unchanged "$tool snapshot $store $tree" \
  -n "git status" "$git_ status --porcelain" >&2

# 3. One file changed (new content of the same size, so a new object is stored each run).
victim=$(find "$tree" -type f -size +50k -size -500k | LC_ALL=C sort | awk "NR == 1")
hyperfine --runs "$runs" --warmup 2 --export-json "$work/one.json" \
  --prepare "head -c $(stat -c %s "$victim") /dev/urandom > $victim" \
  -n "one file" "$tool snapshot $store $tree" >&2
head -c "$(stat -c %s "$victim")" /dev/urandom >"$victim"
one_out=$("$tool" snapshot "$store" "$tree")

# 4. Materialise into a fresh folder (new folders, none deleted in between; see 1.), with a
# plain `cp -r` of the tree as the floor of writing that many bytes into that many files.
id=${one_out%% *}
mkdir -p "$work/dest"
hyperfine --runs "$runs" --warmup 1 --export-json "$work/mat.json" \
  -n materialize "$tool materialize $store $id \$(mktemp -d -u -p $work/dest)" >&2
hyperfine --runs 3 --warmup 1 --export-json "$work/matcopy.json" \
  -n "materialize --copy" "$tool materialize $store $id \$(mktemp -d -u -p $work/dest) --copy" \
  -n "cp -r" "cp -r $tree \$(mktemp -d -u -p $work/dest)" \
  -n "cp -rl" "cp -rl $tree \$(mktemp -d -u -p $work/dest)" >&2
rm -rf "$work/dest"

sha_core=$("$tool" sha256-speed)
sha_openssl=$(openssl speed -evp sha256 -bytes 16384 -seconds 1 2>/dev/null |
  awk '/^sha256/ { sub("k", "", $NF); printf "%.0f", $NF * 1000 / 1e6 }')

cold=$(result "$work/cold.json" snapshot)
gitadd=$(result "$work/cold.json" "git add")
tarsum=$(result "$work/cold.json" "tar|sha256sum")
unchanged=$(result "$work/unchanged.json" unchanged)
gitstatus=$(result "$work/unchanged.json" "git status")
one=$(result "$work/one.json" "one file")
mat=$(result "$work/mat.json" materialize)
matcopy=$(result "$work/matcopy.json" "materialize --copy")
cpr=$(result "$work/matcopy.json" "cp -r")
cprl=$(result "$work/matcopy.json" "cp -rl")
mb=$(du -sm "$tree" | cut -f1)

verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v <= g ? "met" : "MISSED") }'; }
echo
echo "SHA-256 per core: $sha_core MB/s in-process (64 MiB buffer), $sha_openssl MB/s openssl" \
  "(16 KiB blocks); $(nproc) cores"
echo "cold snapshot:      $(ms "$cold")  (goal <= 1000 ms: $(verdict "$cold" 1.0))"
echo "  vs git add -A:    $(ms "$gitadd"), ratio $(ratio "$cold" "$gitadd")" \
  "(goal <= 0.1: $(verdict "$(ratio "$cold" "$gitadd")" 0.1))"
echo "  vs tar|sha256sum: $(ms "$tarsum"), ratio $(ratio "$cold" "$tarsum")"
echo "unchanged:          $(ms "$unchanged")  [$unchanged_out]"
echo "  vs git status:    $(ms "$gitstatus"), ratio $(ratio "$unchanged" "$gitstatus")" \
  "(goal <= 1: $(verdict "$(ratio "$unchanged" "$gitstatus")" 1))"
echo "one file changed:   $(ms "$one"), ratio to unchanged $(ratio "$one" "$unchanged")" \
  "(goal <= 2: $(verdict "$(ratio "$one" "$unchanged")" 2))  [$one_out]"
echo "materialize, links: $(ms "$mat")  (goal <= 200 ms: $(verdict "$mat" 0.2))"
echo "  vs cp -rl:        $(ms "$cprl"), ratio $(ratio "$mat" "$cprl")"
echo "materialize --copy: $(ms "$matcopy")"
echo "  vs cp -r:         $(ms "$cpr"), ratio $(ratio "$matcopy" "$cpr")"
cpu() { jq -r --arg n "$2" '.results[] | select(.command == $n) |
  "user \(.user * 1000 | round) ms + system \(.system * 1000 | round) ms"' "$1"; }
# Where the time goes, from what this run measured.
if [ "$(verdict "$cold" 1.0)" = MISSED ]; then
  echo "cold: CPU $(cpu "$work/cold.json" snapshot) on $(nproc) cores; writing the same bytes" \
    "into new files alone (cp -r) took $(ms "$cpr"); then one syncfs makes them durable."
fi
if [ "$(verdict "$(ratio "$unchanged" "$gitstatus")" 1)" = MISSED ] && command -v strace >/dev/null; then
  calls() { strace -f -c -o "$work/strace.txt" "$@" >/dev/null 2>&1 || true
    awk '$NF ~ /stat/ { n += $4 } END { print n + 0 }' "$work/strace.txt"; }
  echo "unchanged: CPU $(cpu "$work/unchanged.json" unchanged) vs git status" \
    "$(cpu "$work/unchanged.json" "git status"); stat-family calls:" \
    "snapshot $(calls "$tool" snapshot "$store" "$tree"), git status $(calls $git_ status --porcelain)" \
    "(the snapshot also loads and checks its stat cache)"
fi
if [ "$(verdict "$mat" 0.2)" = MISSED ]; then
  echo "materialize: CPU $(cpu "$work/mat.json" materialize); cp -rl (links alone) of the" \
    "same tree takes $(ms "$cprl") here."
fi
echo "hashing floor for the tree: $(awk -v m="$mb" -v s="$sha_core" -v c="$(nproc)" \
  'BEGIN { printf "%.0f ms", m / (s * c) * 1000 }') on $(nproc) cores"

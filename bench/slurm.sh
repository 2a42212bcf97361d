#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR/../scripts
# Slurm dispatch latency against its anchor, measured in the same run, the two alternating
# round by round so the machine's noise hits both alike (the image already cached on the node):
#   trainyard: `trainyard job create -f job.yml` (returns after the submit) of a job on a
#              `slurm` compute whose command writes `date +%s%N` into outputs/started
#   plain:     `sbatch --wrap "docker run --rm --network host IMAGE date +%s%N > FILE"`
# Latency = the timestamp the container wrote - the time just before the submit command.
# Each round waits until both jobs have ended. Goal (issue 6): median ratio <= 1.2.
# Slurm's main scheduler starts a pending batch job only on its next pass, every ~3 s here
# (batch_sched_delay): back-to-back rounds would lock onto that cadence, each waiting for the
# tick by however long the job before it took to be seen ended, which would favour one side.
# So every submit waits a random 0..JITTER s first (outside the measurement), and the
# medians are also shown without Slurm's scheduler wait (allocated - submitted, from its log).
# Where the time goes comes from the Slurm daemons' logs (ms timestamps) when readable:
# submit -> allocate (Slurm's scheduler) -> batch script launched -> (trainyard, jobs of more
# than one task only: srun step launched) -> container started.
#   bench/slurm.sh [ROUNDS]   (default 10)
#   Environment: BUILD_DIR (default build/release, configured and built; a BUILD_DIR given
#   is used as it is, built only when it has no trainyard binary), IMAGE (debian:bookworm-slim),
#   JITTER (seconds, default 3: the scheduler's cadence; 0 submits back to back).
set -euo pipefail
shopt -s inherit_errexit  # the rounds run in $(...): an error there stops the bench too
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
. "$root/scripts/lib.sh"
rounds="${1:-10}"
image="${IMAGE:-debian:bookworm-slim}"
partition=debug
goal=1.2
jitter="${JITTER:-3}"
case "$rounds" in '' | *[!0-9]* | 0) echo "usage: bench/slurm.sh [ROUNDS >= 1]" >&2; exit 2 ;; esac

ty_apt_install jq curl
"$root/scripts/dockerd.sh"
"$root/scripts/base-images.sh"
"$root/scripts/slurm.sh"

if [ -n "${BUILD_DIR:-}" ]; then
  build="$BUILD_DIR"
  if [ ! -x "$build/src/main/trainyard" ]; then
    (cd "$root" && cmake --preset release -B "$build" >/dev/null &&
      cmake --build "$build" --target trainyard >/dev/null)
  fi
else
  build="$root/build/release"
  (cd "$root" && cmake --preset release >/dev/null &&
    cmake --build --preset release --target trainyard >/dev/null)
fi
ty="$build/src/main/trainyard"
docker image inspect "$image" >/dev/null

# On the disk (where a workspace lives), on this node: the Slurm jobs write into it.
work=$(mktemp -d /var/tmp/trainyard-bench-slurm.XXXXXX)
export TRAINYARD_HOME="$work/ws"
# Every Slurm job of this bench, one id a line, so that an error leaves none of them behind.
ids_file="$work/slurm-jobs"
cleanup() {
  local id pid
  if [ -f "$ids_file" ]; then
    while read -r id; do
      if [ -n "$(squeue -h -j "$id" -o %i 2>/dev/null)" ]; then scancel "$id" 2>/dev/null || true; fi
    done <"$ids_file"
  fi
  if [ -f "$TRAINYARD_HOME/server.json" ]; then
    pid=$(jq -r .pid "$TRAINYARD_HOME/server.json")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -rf "$work"
}
trap cleanup EXIT

now_us() { echo "${EPOCHREALTIME/./}"; }
pause() { sleep "$(awk -v r="$RANDOM" -v j="$jitter" 'BEGIN { printf "%.3f", r / 32768 * j }')"; }
die() { echo "bench/slurm.sh: $*" >&2; exit 1; }

# A Slurm daemon's log line for a job -> epoch microseconds of its [YYYY-MM-DDTHH:MM:SS.mmm]
# stamp (the daemons write local time), or "" when the log is not readable or has no such line.
log_us() {  # log_us FILE EXTENDED-REGEX
  local stamp
  [ -r "$1" ] || return 0
  stamp=$(grep -m1 -E "$2" "$1" 2>/dev/null | sed -n 's/^\[\([0-9T:.-]*\)\].*/\1/p') || true
  [ -n "$stamp" ] || return 0
  echo "$(($(date -d "$stamp" +%s%3N) * 1000))"
}
ctld_log=$(scontrol show config 2>/dev/null | awk '$1 == "SlurmctldLogFile" { print $3 }')
slurmd_log=$(scontrol show config 2>/dev/null | awk '$1 == "SlurmdLogFile" { print $3 }')
ctld_log="${ctld_log:-/var/log/slurm/slurmctld.log}"
slurmd_log="${slurmd_log:-/var/log/slurm/slurmd.log}"
# Milestones of Slurm job $1 relative to $2 (µs) in ms: submitted allocated batch step ("-": unknown).
slurm_marks() {
  local id="$1" t0="$2" v out=""
  for v in "$(log_us "$ctld_log" "_slurm_rpc_submit_batch_job: JobId=$id ")" \
    "$(log_us "$ctld_log" "(sched: Allocate JobId=$id |_start_job: Started JobId=$id |_slurm_rpc_submit_batch_job: JobId=$id .*NodeList=)")" \
    "$(log_us "$slurmd_log" "Launching batch job $id ")" \
    "$(log_us "$slurmd_log" "launch task StepId=$id\.0 ")"; do
    if [ -n "$v" ]; then out+=" $(((v - t0) / 1000))"; else out+=" -"; fi
  done
  echo "${out# }"
}

# Waits until Slurm job $1 has ended; fails unless it ended COMPLETED.
wait_slurm() {
  local id="$1" state deadline=$((SECONDS + 600))
  while :; do
    state=$(scontrol show job -o "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p') || true
    case "$state" in
      COMPLETED) return 0 ;;
      PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | RESIZING | "") ;;
      *) die "Slurm job $id ended $state" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "Slurm job $id did not end within 10 minutes"
    sleep 0.1
  done
}

api() {  # api PATH -> the daemon's JSON answer
  curl -fsS --max-time 10 -H "Authorization: Bearer $(jq -r .token "$TRAINYARD_HOME/server.json")" \
    "$(jq -r .url "$TRAINYARD_HOME/server.json")$1"
}

mkdir -p "$work/job" "$work/plain"
cat >"$work/job/job.yml" <<YAML
command: date +%s%N > outputs/started
environment: {image: $image}
compute: hpc
experiment_name: bench-slurm
YAML
# Starts the workspace daemon (first client call) and the Slurm compute.
"$ty" compute create --name hpc --type slurm --partition "$partition" --max-nodes 1 >/dev/null

# "sched net" of a row: Slurm's scheduler wait (allocated - submitted) and the latency without it.
sched_net() {  # sched_net LATENCY SUBMITTED ALLOCATED
  if [ "$2" = - ] || [ "$3" = - ]; then echo "- -"; else echo "$(($3 - $2)) $(($1 - ($3 - $2)))"; fi
}

# One round of plain sbatch: prints
# "latency_ms sbatch_returned_ms submitted allocated batch - - sched net".
plain_round() {
  local out="$work/plain/$1" t0 t1 id started lat
  pause
  t0=$(now_us)
  id=$(sbatch --parsable -p "$partition" --job-name=bench-slurm-plain --output=/dev/null \
    --chdir="$work/plain" --wrap "docker run --rm --network host $image date +%s%N > $out")
  t1=$(now_us)
  id="${id%%;*}"
  echo "$id" >>"$ids_file"
  wait_slurm "$id"
  started=$(cat "$out") || die "plain sbatch job $id wrote no timestamp"
  read -r sub alloc batch _ <<<"$(slurm_marks "$id" "$t0")"
  lat=$(((started / 1000 - t0) / 1000))
  echo "$lat $(((t1 - t0) / 1000)) $sub $alloc $batch - - $(sched_net "$lat" "$sub" "$alloc")"
}

# One round through trainyard: prints
# "latency_ms cli_returned_ms submitted allocated batch step running_seen_ms sched net".
trainyard_round() {
  local t0 t1 run doc status id="" seen="" started running lat deadline
  pause
  deadline=$((SECONDS + 600))
  t0=$(now_us)
  run=$("$ty" job create -f "$work/job/job.yml" -o json | jq -r .name)
  t1=$(now_us)
  while :; do
    doc=$(api "/api/v1/jobs/$run")
    id=$(jq -r '.slurm_job // empty' <<<"$doc")
    if [ -n "$id" ] && [ "$id" != "$seen" ]; then
      echo "$id" >>"$ids_file"
      seen=$id
    fi
    status=$(jq -r .status <<<"$doc")
    case "$status" in
      Completed) break ;;
      Failed | Canceled) die "run $run ended $status: $(jq -r .failure_reason <<<"$doc")" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "run $run did not end within 10 minutes (status $status)"
    sleep 0.1
  done
  started=$(cat "$TRAINYARD_HOME/runs/$run/outputs/started") || die "run $run wrote no timestamp"
  running=$(jq -r '[.transitions[] | select(.status == "Running") | .at_ms][0] // empty' <<<"$doc")
  [ -n "$id" ] || die "run $run has no Slurm job"
  read -r sub alloc batch step <<<"$(slurm_marks "$id" "$t0")"
  lat=$(((started / 1000 - t0) / 1000))
  echo "$lat $(((t1 - t0) / 1000)) $sub $alloc $batch $step" \
    "$(if [ -n "$running" ]; then echo $((running - t0 / 1000)); else echo -; fi)" \
    "$(sched_net "$lat" "$sub" "$alloc")"
}

echo "warm-up (not counted): one job of each kind ..." >&2
plain_round warmup >/dev/null
trainyard_round >/dev/null

echo "Submit -> container start, $rounds rounds alternating; ms after the submit command started"
fmt='%-5s | %-6s %6s %6s %6s %6s %6s | %-9s %6s %6s %6s %6s %6s %7s %6s\n'
# shellcheck disable=SC2059  # the format is the one above
printf "$fmt" round plain sbatch submit alloc batch sched trainyard cli submit alloc batch step \
  running sched
plain_rows=()
ty_rows=()
for i in $(seq "$rounds"); do
  # Alternate which goes first, so neither always runs right after the other's cleanup.
  if [ $((i % 2)) = 1 ]; then
    p=$(plain_round "$i"); t=$(trainyard_round)
  else
    t=$(trainyard_round); p=$(plain_round "$i")
  fi
  plain_rows+=("$p")
  ty_rows+=("$t")
  read -r pl ps psub pal pba _ _ psch _ <<<"$p"
  read -r tl tc tsub tal tba tst trn tsch _ <<<"$t"
  # shellcheck disable=SC2059
  printf "$fmt" "$i" "$pl" "$ps" "$psub" "$pal" "$pba" "$psch" \
    "$tl" "$tc" "$tsub" "$tal" "$tba" "$tst" "$trn" "$tsch"
done

# Column $1 (1-based) of the rows on stdin -> "median p90" (nearest rank), "-" when unknown.
stats() {
  awk -v c="$1" '$c != "-" { v[n++] = $c }
    END {
      if (n == 0) { print "- -"; exit }
      for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      med = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
      k = int(0.9 * n + 0.999999); if (k < 1) k = 1
      print med, v[k - 1]
    }'
}
col() { printf '%s\n' "${@:2}" | stats "$1"; }
read -r p_med p_p90 <<<"$(col 1 "${plain_rows[@]}")"
read -r t_med t_p90 <<<"$(col 1 "${ty_rows[@]}")"
ratio=$(awk -v a="$t_med" -v b="$p_med" 'BEGIN { printf "%.2f", a / b }')
verdict=$(awk -v r="$ratio" -v g="$goal" 'BEGIN { print (r <= g ? "MET" : "NOT MET") }')
med() { col "$@" | cut -d' ' -f1; }
# Median over the rows of column $1 - column $2 (both known).
dmed() { printf '%s\n' "${@:3}" | awk -v a="$1" -v b="$2" '$a != "-" && $b != "-" { print $a - $b }' | stats 1 | cut -d' ' -f1; }

echo
echo "plain sbatch: median $p_med ms, p90 $p_p90 ms"
echo "trainyard:    median $t_med ms, p90 $t_p90 ms"
echo "  medians, ms after the submit command started (Slurm's log stamps):"
echo "  plain:     sbatch returned $(med 2 "${plain_rows[@]}"), Slurm submit $(med 3 "${plain_rows[@]}")," \
  "allocated $(med 4 "${plain_rows[@]}"), batch script launched $(med 5 "${plain_rows[@]}")," \
  "container started $p_med"
echo "  trainyard: CLI returned $(med 2 "${ty_rows[@]}"), Slurm submit $(med 3 "${ty_rows[@]}")," \
  "allocated $(med 4 "${ty_rows[@]}"), batch script launched $(med 5 "${ty_rows[@]}")," \
  "srun step launched $(med 6 "${ty_rows[@]}"), container started $t_med," \
  "Running seen by the daemon $(med 7 "${ty_rows[@]}")"
read -r pn_med pn_p90 <<<"$(col 9 "${plain_rows[@]}")"
read -r tn_med tn_p90 <<<"$(col 9 "${ty_rows[@]}")"
echo "  stages, median ms: to the Slurm submit: plain $(med 3 "${plain_rows[@]}"), trainyard" \
  "$(med 3 "${ty_rows[@]}") (CLI $(med 2 "${ty_rows[@]}") + daemon to sbatch $(dmed 3 2 "${ty_rows[@]}"));" \
  "allocated -> batch script: plain $(dmed 5 4 "${plain_rows[@]}"), trainyard $(dmed 5 4 "${ty_rows[@]}");" \
  "batch script -> container: plain $(dmed 1 5 "${plain_rows[@]}") (docker run), trainyard" \
  "$(dmed 1 5 "${ty_rows[@]}") (task.sh: docker run; a one-task job has no srun" \
  "step, so that stamp is \"-\")"
echo "  Slurm's scheduler wait (allocated - submitted): median plain $(med 8 "${plain_rows[@]}")," \
  "trainyard $(med 8 "${ty_rows[@]}") ms"
if [ "$pn_med" != - ] && [ "$tn_med" != - ]; then
  echo "  without it: trainyard median $tn_med ms (p90 $tn_p90) vs sbatch $pn_med ms (p90 $pn_p90):" \
    "ratio $(awk -v a="$tn_med" -v b="$pn_med" 'BEGIN { printf "%.2f", a / b }')," \
    "trainyard's own extra $(awk -v a="$tn_med" -v b="$pn_med" 'BEGIN { print a - b }') ms"
fi
echo "trainyard $t_med ms vs sbatch $p_med ms: ratio $ratio (goal ≤ $goal): $verdict"

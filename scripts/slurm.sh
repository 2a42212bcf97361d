#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A one-node Slurm cluster on this machine for the Slurm compute's tests and bench: installs
# slurm-wlm and munge, writes a slurm.conf describing this machine (its real CPU count and
# memory) with one partition `debug`, starts munged, slurmctld and slurmd, and waits until
# `sinfo` shows the node idle. Idempotent: a cluster that already answers is left alone.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ty_apt_install slurm-wlm munge

node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -qx 'idle'; }
if node_idle; then exit 0; fi

host=$(hostname -s)
cpus=$(nproc)
# slurmd refuses a node that claims more memory than it has: leave 5% (at least 256 MiB) spare.
mem_mb=$(awk '/^MemTotal:/ { m = int($2 / 1024); s = int(m / 20); if (s < 256) s = 256; print m - s }' /proc/meminfo)
conf=/etc/slurm/slurm.conf
want=$(cat <<CONF
# Written by trainyard's scripts/slurm.sh: a one-node cluster for tests.
ClusterName=trainyard
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=300
NodeName=${host} CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  printf '%s\n' "$want" >"$conf"
fi
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
chown munge:munge /run/munge

if ! pgrep -x munged >/dev/null; then
  ty_log "starting munged"
  runuser -u munge -- /usr/sbin/munged
fi
if ! pgrep -x slurmctld >/dev/null; then
  ty_log "starting slurmctld"
  /usr/sbin/slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
  ty_log "starting slurmd"
  /usr/sbin/slurmd
fi
for _ in $(seq 1 60); do
  node_idle && break
  # A node left down or drained by an earlier run comes back.
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
if ! node_idle; then
  ty_log "the Slurm node did not become idle; sinfo says:"
  sinfo -N -l >&2 || true
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
fi
ty_log "Slurm is up: node ${host} idle in partition debug"

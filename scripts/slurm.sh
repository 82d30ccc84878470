#!/usr/bin/env bash
# A small Slurm cluster on this one host, for berth's Slurm tests and benchmark: munged, one
# slurmctld and three slurmd (nodes n1..n3, one CPU each, on ports 17001-17003), with the
# cgroup v1 proctrack and task plugins (the job's memory limit in its cgroup). Everything it
# writes — configuration, state, spool, logs, pid files, munge's socket — is in one private
# directory; nothing of the system's Slurm or munge setup is used or changed.
#
#   scripts/slurm.sh start    # idempotent; prints the slurm.conf to export as SLURM_CONF
#   scripts/slurm.sh stop     # idempotent
#   scripts/slurm.sh env      # prints `export SLURM_CONF=…`
#
# BERTH_SLURM_DIR chooses the directory (default /var/tmp/berth-slurm). Needs root, and the
# Debian packages slurmctld, slurmd, slurm-client and munge (scripts/deps.sh).
set -euo pipefail

dir="${BERTH_SLURM_DIR:-/var/tmp/berth-slurm}"
conf="$dir/etc/slurm.conf"
nodes=(n1 n2 n3)
export SLURM_CONF="$conf"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_config() {
  mkdir -p "$dir/etc" "$dir/ctld" "$dir/log"
  chmod 0755 "$dir" "$dir/etc"
  chmod 0700 "$dir/ctld" "$dir/log"
  # The spool holds each job's script, which runs as the job's user.
  for n in "${nodes[@]}"; do mkdir -p "$dir/d-$n"; chmod 0755 "$dir/d-$n"; done
  # munged insists on a socket directory only munge (or root) may write to.
  mkdir -p "$dir/munge"
  chown munge:munge "$dir/munge"
  chmod 0755 "$dir/munge"
  cat > "$conf" <<EOF
ClusterName=berthtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
AuthType=auth/munge
# cred_expire: a requeued job waits this long before it runs again (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=15
CredType=cred/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d-%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdTimeout=10
ReturnToService=2
KillWait=10
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
MaxArraySize=1001
NodeName=n[1-3] NodeHostname=localhost NodeAddr=127.0.0.1 Port=17001-17003 CPUs=1 RealMemory=2000
PartitionName=batch Nodes=n[1-3] Default=YES MaxTime=30 State=UP
EOF
  # Three slurmd on one host would hand out the same cores: constrain memory only.
  cat > "$dir/etc/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainCores=no
ConstrainDevices=no
EOF
  chmod 0644 "$conf" "$dir/etc/cgroup.conf"
}

start() {
  for tool in slurmctld slurmd sinfo munged; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (scripts/deps.sh)" >&2; exit 1; }
  done
  write_config
  if ! running "$dir/munge/munged.pid"; then
    runuser -u munge -- munged --socket="$dir/munge/munge.socket" \
      --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
      --seed-file="$dir/munge/munged.seed" --key-file=/etc/munge/munge.key
  fi
  if ! running "$dir/slurmctld.pid"; then
    slurmctld -c
  fi
  for n in "${nodes[@]}"; do
    running "$dir/slurmd-$n.pid" || slurmd -c -N "$n"
  done
  local deadline=$((SECONDS + 60))
  until [ "$(sinfo -h -t idle -o %D 2>/dev/null)" = "${#nodes[@]}" ]; do
    # A node a killed slurmd left "down" comes back when its slurmd is up again.
    scontrol update nodename=n[1-3] state=resume >/dev/null 2>&1 || true
    if [ $SECONDS -ge $deadline ]; then
      echo "slurm: the nodes did not become idle; see $dir/log" >&2
      sinfo >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  echo "$conf"
}

stop() {
  [ -f "$conf" ] || return 0
  for f in "$dir"/slurmd-*.pid "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$f" ] || continue
    local pid
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  # slurmd leaves its node cgroups (slurm_<node>/…) behind, empty; rmdir fails on any that
  # still holds a process.
  for n in "${nodes[@]}"; do
    for top in /sys/fs/cgroup/*/"slurm_$n"; do
      [ -d "$top" ] && find "$top" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Throughput of many small berth jobs on this machine: one after another, two at a time
# (`xargs -P2`), and as a Slurm job array over the three one-CPU nodes of scripts/slurm.sh.
#
#   scripts/bench-jobs.sh [JOBS]     (default 60)
#
# Each job is the example component (acme/hello: reads its configuration, writes a table
# that berth loads into the store; all jobs share one home, so the embedded SQLite store, as
# the array's tasks on this one host do). Reports the wall time, jobs per minute, and
# Slurm's added cost per job: the node time the array used that berth itself did not
# ((3 nodes x the array's wall time - the sum of berth's own run times) / JOBS: scheduling,
# slurmstepd, the job's cgroups, prolog and epilog, and the idle tail of the last wave).
# Uses ${BERTH:-target/release/berth}; needs root, the local registry with the example
# images (scripts/build-images.sh) and Slurm (scripts/deps.sh); starts the cluster and stops
# it again if it was not running.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs="${1:-60}"
BERTH=$(realpath "${BERTH:-target/release/berth}")
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$BERTH" ] || { echo "no $BERTH (cargo build --release)" >&2; exit 1; }
registry=$(scripts/registry.sh start)

slurm_was_up=0
if [ -f /var/tmp/berth-slurm/slurmctld.pid ] && kill -0 "$(cat /var/tmp/berth-slurm/slurmctld.pid)" 2>/dev/null; then
  slurm_was_up=1
fi
export SLURM_CONF=$(scripts/slurm.sh start)
work=$(mktemp -d /var/tmp/berth-bench-jobs.XXXXXX)
chmod 0755 "$work"
cleanup() {
  rm -rf "$work"
  [ "$slurm_was_up" = 1 ] || scripts/slurm.sh stop
}
trap cleanup EXIT

jq --arg img "$registry/acme/hello:1.0" '.component.image = $img' examples/hello.json > "$work/job.json"
home="$work/home"
b() { "$BERTH" --home "$home" -q "$@"; }
b pull "$registry/acme/hello:1.0" >/dev/null
b run "$work/job.json" >/dev/null || { echo "berth cannot run the example here" >&2; exit 1; }

now() { date +%s.%N; }
# One job, timed: appends "start end status" to $1.
# Any further arguments go to berth before `run` (the shared store's URLs).
cat > "$work/one.sh" <<EOF
#!/bin/sh
s=\$(date +%s.%N)
times=\$1; shift
"$BERTH" --home "$home" -q "\$@" run "$work/job.json" >/dev/null 2>>"$work/errors.log"
rc=\$?
echo "\$s \$(date +%s.%N) \$rc" >> "\$times"
EOF
chmod 0755 "$work/one.sh"

# Sums, failures: sum of (end - start) and the number of non-zero statuses in file $1.
berth_seconds() { awk '{ s += $2 - $1 } END { printf "%.3f", s }' "$1"; }
failures() { awk '$3 != 0 { n++ } END { print n + 0 }' "$1"; }

t0=$(now)
for _ in $(seq "$jobs"); do "$work/one.sh" "$work/seq.times"; done
t1=$(now)
seq_wall=$(echo "$t1 - $t0" | bc -l)

t0=$(now)
seq "$jobs" | xargs -P2 -I{} "$work/one.sh" "$work/xargs.times"
t1=$(now)
xargs_wall=$(echo "$t1 - $t0" | bc -l)

# The array: each task times berth itself; the array's wall time runs from submission to
# the last task's end (sbatch --wait polls too coarsely to time it).
t0=$(now)
id=$(sbatch --parsable --array="1-$jobs" --mem=300M --output=/dev/null \
  --error="$work/slurm-%a.err" --wrap "$work/one.sh $work/array.times")
while [ -n "$(squeue -h -j "$id" 2>/dev/null)" ]; do sleep 0.2; done
array_end=$(awk 'BEGIN { m = 0 } { if ($2 > m) m = $2 } END { printf "%.9f", m }' "$work/array.times")
array_wall=$(echo "$array_end - $t0" | bc -l)
array_berth=$(berth_seconds "$work/array.times")
added=$(echo "(3 * $array_wall - $array_berth) / $jobs" | bc -l)

# The array again, every task committing to the shared store (PostgreSQL + S3 of
# scripts/services.sh, a bucket prefix of its own) instead of the node's SQLite.
eval "$(scripts/services.sh start)"
shared=(--storage "$BERTH_TEST_PG_URL" --files "$BERTH_TEST_S3_URL/bench-jobs-$$")
# One run first, as for the embedded store: it gives the configuration its state, which the
# array's jobs then leave as it is (the first commit of a state, raced by many jobs of one
# configuration, would be a state conflict for all but one).
"$BERTH" --home "$home" -q "${shared[@]}" run "$work/job.json" >/dev/null
t0=$(now)
id=$(sbatch --parsable --array="1-$jobs" --mem=300M --output=/dev/null \
  --error="$work/shared-%a.err" --wrap "$work/one.sh $work/shared.times ${shared[*]}")
while [ -n "$(squeue -h -j "$id" 2>/dev/null)" ]; do sleep 0.2; done
shared_end=$(awk 'BEGIN { m = 0 } { if ($2 > m) m = $2 } END { printf "%.9f", m }' "$work/shared.times")
shared_wall=$(echo "$shared_end - $t0" | bc -l)

echo "Throughput of $jobs small jobs (acme/hello, one shared home; $(nproc) cores, kernel $(uname -r))"
printf '%-22s %10s %10s %14s %9s\n' mode "wall s" "jobs/min" "berth s/job" failures
row() {
  local name=$1 wall=$2 file=$3 count
  count=$(wc -l < "$file")
  printf '%-22s %10.1f %10.1f %14.3f %9s\n' "$name" "$wall" "$(echo "$count * 60 / $wall" | bc -l)" \
    "$(echo "$(berth_seconds "$file") / $count" | bc -l)" "$(failures "$file")"
}
row "sequential" "$seq_wall" "$work/seq.times"
row "xargs -P2" "$xargs_wall" "$work/xargs.times"
row "slurm array, 3 nodes" "$array_wall" "$work/array.times"
row "  same, shared store" "$shared_wall" "$work/shared.times"
printf "Slurm's added cost per job: %.3f s of node time (3 x array wall - sum of berth's run times, / %s)\n" \
  "$added" "$jobs"
if [ -s "$work/errors.log" ]; then
  echo "errors:" >&2
  head -n 20 "$work/errors.log" >&2
fi

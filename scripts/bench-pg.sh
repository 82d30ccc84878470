#!/usr/bin/env bash
# Table import and export through berth's shared store (PostgreSQL), side by side with
# psql's \copy of the same file into and out of a plain table of 10 text columns.
#
#   scripts/bench-pg.sh [ROWS]          (default 1,000,000 rows x 10 columns)
#
# Starts the servers (scripts/services.sh), uses ${BERTH:-target/release/berth} and a
# database of its own (dropped at the end). Runs interleaved (berth, psql, berth, psql, …),
# each import into a new table; reports the median wall time of $RUNS runs, rows/s,
# berth/psql (the goal: at most 1.2) and the peak RSS of each client.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-1000000}
BERTH=${BERTH:-target/release/berth}
RUNS=${RUNS:-3}

for tool in "$BERTH" psql /usr/bin/time awk; do
    command -v "$tool" >/dev/null || { echo "bench-pg: $tool not found" >&2; exit 2; }
done
eval "$(scripts/services.sh start)"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-pg.XXXXXX")
db=bench_$$
base=${BERTH_TEST_PG_URL%/*}
url=$base/$db
cleanup() {
    psql -q "$BERTH_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
psql -q "$BERTH_TEST_PG_URL" -c "CREATE DATABASE $db" >/dev/null

csv=$work/data.csv
scripts/bench-data.sh "$ROWS" >"$csv"
echo "data: $ROWS rows x 10 columns, $(du -m "$csv" | cut -f1) MB"
echo "berth: $BERTH against PostgreSQL $(psql -XAtq "$url" -c 'SHOW server_version'), $url"
echo

berth=("$BERTH" --quiet --home "$work/home" --storage "$url" --files "$work/files")
columns="id text, name text, city text, amount text, qty text, created text, email text,
    active text, note text, code text"

# timed NAME CMD...: runs CMD once under /usr/bin/time; appends its wall time and peak
# RSS (KiB) to $work/NAME.
timed() {
    local name=$1
    shift
    /usr/bin/time -f '%e %M' -o "$work/last" "$@"
    cat "$work/last" >>"$work/$name"
}

for ((i = 1; i <= RUNS; i++)); do
    timed berth-import "${berth[@]}" storage import "in.c-bench.d$i" "$csv" >/dev/null
    psql -q "$url" -c "CREATE TABLE public.t$i ($columns)"
    timed psql-import psql -q "$url" -c "\\copy public.t$i FROM '$csv' WITH (FORMAT csv, HEADER)"
done
for ((i = 1; i <= RUNS; i++)); do
    timed berth-export "${berth[@]}" storage export in.c-bench.d1 -o "$work/berth.csv"
    timed psql-export psql -q "$url" -c "\\copy public.t1 TO '$work/psql.csv' WITH (FORMAT csv, HEADER)"
done
if ! cmp -s "$csv" "$work/berth.csv"; then
    echo "bench-pg: berth's export differs from the imported file" >&2
    exit 1
fi

# median and peak of a NAME file: "wall rss" per line.
stats() { sort -n "$work/$1" | awk '{t[NR] = $1; if ($2 > m) m = $2} END {print t[int((NR + 1) / 2)], m}'; }
for what in import export; do
    read -r bw br <<<"$(stats "berth-$what")"
    read -r pw pr <<<"$(stats "psql-$what")"
    awk -v what="$what" -v n="$ROWS" -v bw="$bw" -v br="$br" -v pw="$pw" -v pr="$pr" 'BEGIN {
        printf "%-7s berth %6.2f s  %9.0f rows/s  peak RSS %5.0f MB\n", what, bw, n / bw, br / 1024
        printf "%-7s psql  %6.2f s  %9.0f rows/s  peak RSS %5.0f MB\n", "", pw, n / pw, pr / 1024
        printf "%-7s berth/psql = %.2f (goal: at most 1.2)\n\n", "", bw / pw
    }'
done

#!/usr/bin/env bash
# CSV import and export speed of berth's embedded storage, side by side with the sqlite3
# command line on the same file: `.import --csv` and `sqlite3 -csv db "select * from t"`.
#
#   scripts/bench-csv.sh [ROWS]          (default 1,000,000 rows x 10 columns)
#
# Uses ${BERTH:-target/release/berth} (build it with `cargo build --release`) and a
# throwaway --home. Reports the median wall time of 3 runs, rows/s, berth/sqlite3 and the
# peak RSS of each run. The CSV is generated once, deterministically, with a quoted field
# (commas, doubled quotes) in every 7th row.
set -euo pipefail

ROWS=${1:-1000000}
BERTH=${BERTH:-target/release/berth}
RUNS=3

for tool in "$BERTH" sqlite3 /usr/bin/time awk; do
    if ! command -v "$tool" >/dev/null; then
        echo "bench-csv: $tool not found" >&2
        exit 2
    fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-csv.XXXXXX")
trap 'rm -rf "$work"' EXIT
csv=$work/data.csv

"$(dirname "$0")/bench-data.sh" "$ROWS" >"$csv"
size=$(du -m "$csv" | cut -f1)
echo "data: $ROWS rows x 10 columns, $size MB ($csv)"
echo "berth: $BERTH; sqlite3 $(sqlite3 --version | cut -d' ' -f1)"
echo

# measure NAME CLEAN CMD...: runs CMD $RUNS times, each after removing CLEAN (if not
# empty), and keeps the median wall time and the largest peak RSS in $wall and $rss.
measure() {
    local name=$1 clean=$2
    shift 2
    local times=() peak=0 i out
    for ((i = 0; i < RUNS; i++)); do
        [[ -z $clean ]] || rm -rf "$clean" "$clean"-*
        out=$work/time.$name.$i
        /usr/bin/time -f '%e %M' -o "$out" "$@"
        read -r t m <"$out"
        times+=("$t")
        ((m > peak)) && peak=$m
    done
    wall=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
    rss=$peak
}

report() {
    local what=$1 berth_wall=$2 berth_rss=$3 sqlite_wall=$4 sqlite_rss=$5
    awk -v what="$what" -v n="$ROWS" -v bw="$berth_wall" -v br="$berth_rss" \
        -v sw="$sqlite_wall" -v sr="$sqlite_rss" 'BEGIN {
        printf "%-7s berth   %6.2f s  %9.0f rows/s  peak RSS %5.0f MB\n", what, bw, n / bw, br / 1024
        printf "%-7s sqlite3 %6.2f s  %9.0f rows/s  peak RSS %5.0f MB\n", "", sw, n / sw, sr / 1024
        printf "%-7s berth/sqlite3 = %.2f (below 1: berth is faster)\n\n", "", bw / sw
    }'
}

home=$work/home
db=$work/sqlite.db

# Import: each run into a fresh store / database.
measure berth-import "$home" \
    sh -c '"$0" --quiet --home "$1" storage import in.c-bench.data "$2" >/dev/null' \
    "$BERTH" "$home" "$csv"
bi_wall=$wall bi_rss=$rss
measure sqlite-import "$db" sqlite3 "$db" ".import --csv $csv t"
si_wall=$wall si_rss=$rss

# Export the tables the last import runs left.
rows=$(sqlite3 "$db" 'select count(*) from t')
[[ $rows == "$ROWS" ]] || { echo "bench-csv: sqlite3 imported $rows rows" >&2; exit 1; }
measure berth-export "" sh -c '"$0" --quiet --home "$1" storage export in.c-bench.data >"$2"' \
    "$BERTH" "$home" "$work/berth.csv"
be_wall=$wall be_rss=$rss
measure sqlite-export "" sh -c 'sqlite3 -csv "$0" "select * from t" >"$1"' "$db" "$work/sqlite.csv"
se_wall=$wall se_rss=$rss

# berth's export must give back the file it imported (sqlite3's differs in quoting style
# and line ends, and has no header).
if ! cmp -s "$csv" "$work/berth.csv"; then
    echo "bench-csv: berth's export differs from the imported file" >&2
    exit 1
fi

report import "$bi_wall" "$bi_rss" "$si_wall" "$si_rss"
report export "$be_wall" "$be_rss" "$se_wall" "$se_rss"

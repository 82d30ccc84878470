#!/usr/bin/env bash
# The CSV the storage benchmarks load: ROWS rows x 10 columns, deterministic, with a
# quoted field (commas, doubled quotes) in every 7th row. Written to stdout.
#
#   scripts/bench-data.sh ROWS > data.csv
set -euo pipefail
ROWS=$1
awk -v n="$ROWS" 'BEGIN {
    print "id,name,city,amount,qty,created,email,active,note,code"
    split("Prague,Brno,Ostrava,Plzen,Liberec,Olomouc", city, ",")
    for (i = 1; i <= n; i++) {
        if (i % 7 == 0) note = "\"says \"\"hi\"\", then leaves\""
        else note = "plain note " (i % 1000)
        printf "%d,customer_%d,%s,%.2f,%d,2024-%02d-%02dT%02d:%02d:%02dZ,user%d@example.com,%s,%s,%d\n",
            i, (i * 7) % 100003, city[i % 6 + 1], (i * 37 % 100000) / 100, i % 50,
            i % 12 + 1, i % 28 + 1, i % 24, i % 60, (i * 7) % 60, i,
            (i % 2 ? "true" : "false"), note, (i * 2654435761) % 4294967296
    }
}'

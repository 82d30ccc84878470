#!/usr/bin/env bash
# Cold pulls: berth beside `podman pull` and `skopeo copy` + `umoci unpack`, in one run,
# interleaved. Needs root.
#
#   scripts/bench-pull.sh [runs]     # default 5; BERTH=path/to/berth skips the build
#
# Each run gives every tool a store of its own, empty, and times
#   1. a cold pull + unpack of the Debian python image (scripts/build-python-image.sh
#      --bench: 5 layers, about 12,000 entries), then
#   2. in the same store, the conformance image: the same base plus one small layer, so a
#      store that shares layers unpacks almost nothing.
# Every store of every tool lies under one parent directory made for this run: on this disk,
# creating an inode costs up to ten times more in a directory with recent deletions, so
# stores in different places would measure the directories, not the tools. Nothing is
# deleted until the end.
#
# Reported: medians, the ratio to podman, the peak RSS of any process of the tool (the
# largest over the runs), and system calls per tar entry of a cold pull (strace -f -c, one
# extra run each, not timed).
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-5}"
warmup=1
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
scripts/deps.sh bench
registry=$(scripts/registry.sh start)
if [ -z "${BERTH:-}" ]; then
  cargo build --release --locked --quiet
  BERTH="$PWD/target/release/berth"
fi
first=$(scripts/build-python-image.sh --bench "$registry" | tail -n 1)
second=$(scripts/build-python-image.sh "$registry" | tail -n 1)

work=$(mktemp -d /var/tmp/berth-bench-pull.XXXXXX)
trap 'rm -rf "$work"' EXIT
tools=(berth podman skopeo+umoci)

# pull TOOL STORE IMAGE: one pull + unpack into STORE, as each tool's users would do it.
pull() {
  local tool=$1 store=$2 image=$3
  case "$tool" in
    berth) "$BERTH" --home "$store/home" --cache "$store/cache" -q pull "$image" ;;
    podman) podman --root "$store/root" --runroot "$store/run" --storage-driver overlay \
      pull -q --tls-verify=false "$image" ;;
    skopeo+umoci)
      local tag=${image##*:}
      skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$store/layout:$tag" &&
        umoci unpack --image "$store/layout:$tag" "$store/bundle-$tag" ;;
  esac
}

# timed TOOL STORE IMAGE: prints "seconds peak-RSS-KB". The RSS is GNU time's, of the
# largest process it waited for (skopeo or umoci, whichever is bigger).
timed() {
  local start end rss
  start=$(date +%s%N)
  /usr/bin/time -f %M -o "$work/rss" bash -c "$(declare -f pull); BERTH='$BERTH'; pull $*" \
    >/dev/null 2>"$work/err" || { echo "$1 failed:" >&2; cat "$work/err" >&2; exit 1; }
  end=$(date +%s%N)
  rss=$(tail -n 1 "$work/rss")
  echo "$(echo "($end - $start) / 1000000000" | bc -l) $rss"
}

results="$work/results"
: > "$results"
for i in $(seq 1 $((warmup + runs))); do
  for tool in "${tools[@]}"; do
    store="$work/$tool-$i"
    mkdir -p "$store"
    read -r t1 m1 < <(timed "$tool" "$store" "$first")
    read -r t2 m2 < <(timed "$tool" "$store" "$second")
    if [ "$i" -gt "$warmup" ]; then
      echo "$tool first $t1 $m1" >> "$results"
      echo "$tool second $t2 $m2" >> "$results"
    fi
    echo "run $i/$((warmup + runs)) $tool: ${t1:0:5} s, then ${t2:0:5} s" >&2
  done
done

# System calls per entry: every entry of every layer of the first image, once.
layout="$work/count"
skopeo copy -q --src-tls-verify=false "docker://$first" "oci:$layout:x"
manifest=$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)
entries=0
for blob in $(jq -r '.layers[].digest' "$layout/blobs/sha256/$manifest" | cut -d: -f2); do
  entries=$((entries + $(tar -tzf "$layout/blobs/sha256/$blob" | wc -l)))
done
compressed=$(jq '[.layers[].size] | add' "$layout/blobs/sha256/$manifest")
syscalls() {
  local store="$work/strace-$1"
  mkdir -p "$store"
  strace -f -c -o "$work/strace-$1.txt" bash -c "$(declare -f pull); BERTH='$BERTH'; pull $1 $store $first" \
    >/dev/null 2>&1
  awk '$NF == "total" { print $(NF-2) }' "$work/strace-$1.txt"
}

python3 - "$results" "$entries" "$compressed" "$runs" \
  "$(for t in "${tools[@]}"; do echo "$t=$(syscalls "$t")"; done)" <<'EOF'
import statistics, sys
results, entries, compressed, runs, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
calls = dict(line.split("=", 1) for line in calls.split())
times, rss = {}, {}
for line in open(results):
    tool, case, secs, kb = line.split()
    times.setdefault((tool, case), []).append(float(secs))
    rss[tool] = max(rss.get(tool, 0), int(kb))
med = {k: statistics.median(v) for k, v in times.items()}
print(f"\nCold pull + unpack ({runs} runs each, interleaved, every store under one new directory)")
print(f"first: the python image, {entries} entries, {compressed / 1e6:.1f} MB compressed;"
      " second: the same base plus one small layer, into the same store")
print(f"{'tool':<14} {'first s':>8} {'x podman':>9} {'second s':>9} {'x podman':>9}"
      f" {'peak RSS MB':>12} {'calls/entry':>12}")
for tool in ["berth", "podman", "skopeo+umoci"]:
    f, s = med[(tool, "first")], med[(tool, "second")]
    c = calls.get(tool, "")
    per = f"{int(c) / entries:.1f}" if c.isdigit() else "-"
    print(f"{tool:<14} {f:8.2f} {f / med[('podman', 'first')]:9.2f} {s:9.3f}"
          f" {s / med[('podman', 'second')]:9.2f} {rss[tool] / 1024:12.1f} {per:>12}")
EOF

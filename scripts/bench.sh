#!/usr/bin/env bash
# berth side by side with its peers, in one run, on this machine. Needs root.
#
#   scripts/bench.sh [runs]        # default 50 runs per command
#
# 1. Warm start: run an image whose command is `true`, image already local:
#      berth run (digest-pinned: no registry request; and by tag: one HEAD request)
#      crun run / runc run on an equivalent bundle (same rootfs, namespaces, limits)
#      podman run --rm --network=none
#    Reports the median wall time (hyperfine, no shell), the ratio to crun, and peak RSS.
#    crun (and podman, which uses it) refuses this host's hybrid cgroup layout, so the
#    script moves the hugetlb controller to a v1 hierarchy for the peers and moves it back
#    at the end. berth needs no such change: it is run once before the move as a check.
# 2. CSV throughput of the storage (scripts/bench-csv.sh), when present.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-50}"
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
scripts/deps.sh
registry=$(scripts/registry.sh start)
scripts/build-images.sh "$registry" >/dev/null
cargo build --release --locked --quiet
berth="$PWD/target/release/berth"

work=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
moved_hugetlb=0
cleanup() {
  if [ "$moved_hugetlb" = 1 ]; then
    umount /sys/fs/cgroup/hugetlb 2>/dev/null && rmdir /sys/fs/cgroup/hugetlb 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

image="$registry/acme/true:1.0"
b() { "$berth" --home "$work/home" --cache "$work/cache" -q "$@"; }
b pull "$image" >/dev/null
digest=$(b images --json | jq -r --arg r "$image" '.[] | select(.reference == $r) | .digest')
pinned="${image%:*}@$digest"
for ref in "$image" "$pinned"; do
  name=$([ "$ref" = "$image" ] && echo tag || echo pinned)
  jq -n --arg img "$ref" '{component: {id: "acme.true", image: $img, memory: "256m", network: "none"},
        config_id: "1", configuration: {parameters: {}}}' > "$work/job-$name.json"
done
b run "$work/job-pinned.json" || { echo "berth cannot run here as the host is" >&2; exit 1; }

# An equivalent bundle for crun and runc: berth's rootfs, berth's namespaces and limits.
rootfs=$(ls -d "$work"/cache/rootfs/*/ | head -n 1)
mkdir -p "$work/bundle/data" "$work/bundle/tmp"
cp -a "$rootfs" "$work/bundle/rootfs"
nofile=$(ulimit -Hn)
runc spec --bundle "$work/bundle"
jq --arg data "$work/bundle/data" --arg tmp "$work/bundle/tmp" --argjson nofile "$nofile" '
  .process.terminal = false | .process.args = ["/bin/true"] | .root.readonly = false
  | .process.rlimits = [{type: "RLIMIT_NOFILE", hard: $nofile, soft: $nofile}]
  | .mounts += [{destination: "/data", type: "bind", source: $data, options: ["rbind","rw","nosuid","nodev"]},
                {destination: "/tmp", type: "bind", source: $tmp, options: ["rbind","rw","nosuid","nodev"]}]
  | .linux.namespaces = [{type:"pid"},{type:"mount"},{type:"ipc"},{type:"uts"},{type:"cgroup"},{type:"network"}]
  | .linux.cgroupsPath = "/berth-bench/peer"
  | .linux.resources.memory = {limit: 256000000, swap: 256000000}
  | .linux.resources.cpu = {quota: 200000, period: 100000}
  | .linux.resources.pids = {limit: 1024}' "$work/bundle/config.json" > "$work/bundle/config.new"
mv "$work/bundle/config.new" "$work/bundle/config.json"

# The peers need hugetlb off cgroup2 (see above). Podman asks for rlimits above what root
# may have here (no CAP_SYS_RESOURCE) unless told otherwise: hence its --ulimit flags.
if ! mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null && grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
  moved_hugetlb=1
fi
podman pull -q --tls-verify=false "$image" >/dev/null

cmds=(
  "berth (pinned)|$berth --home $work/home --cache $work/cache -q run $work/job-pinned.json"
  "berth (tag)|$berth --home $work/home --cache $work/cache -q run $work/job-tag.json"
  "crun run|crun run --bundle $work/bundle berth-bench-crun"
  "runc run|runc run --bundle $work/bundle berth-bench-runc"
  "podman run|podman run --rm --network=none --ulimit nofile=$nofile:$nofile --ulimit nproc=4096:4096 $image"
)
args=()
for c in "${cmds[@]}"; do args+=(--command-name "${c%%|*}" "${c#*|}"); done
hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/warm.json" "${args[@]}" >/dev/null

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }
echo
echo "Warm start of an image running \`true\` ($runs runs each, $(nproc) cores, $(uname -r))"
printf '%-16s %10s %10s %12s %12s\n' command "median ms" "mean ms" "x crun" "peak RSS KB"
crun_median=$(jq '.results[] | select(.command == "crun run") | .median' "$work/warm.json")
for c in "${cmds[@]}"; do
  name="${c%%|*}"
  read -r median mean < <(jq -r --arg n "$name" '.results[] | select(.command == $n) | "\(.median) \(.mean)"' "$work/warm.json")
  # shellcheck disable=SC2086
  peak=$(rss ${c#*|})
  printf '%-16s %10.2f %10.2f %12.2f %12s\n' "$name" "$(echo "$median*1000" | bc -l)" "$(echo "$mean*1000" | bc -l)" \
    "$(echo "$median/$crun_median" | bc -l)" "$peak"
done
podman_median=$(jq '.results[] | select(.command == "podman run") | .median' "$work/warm.json")
berth_median=$(jq '.results[] | select(.command == "berth (pinned)") | .median' "$work/warm.json")
printf 'podman / berth (pinned): %.1fx\n' "$(echo "$podman_median/$berth_median" | bc -l)"

if [ -x scripts/bench-csv.sh ]; then
  echo
  BERTH="$berth" scripts/bench-csv.sh
fi

#!/usr/bin/env bash
# berth side by side with its peers, in one run, on this machine. Needs root.
#
#   scripts/bench.sh [runs] [pull runs]   # default 50 runs per command, 5 per cold pull
#
# 1. Warm start: run an image whose command is `true`, image already local:
#      berth run: digest-pinned (no registry request), by tag (one HEAD request), and with a
#        stored configuration (its state is committed to storage)
#      crun run / runc run on an equivalent bundle (same rootfs, namespaces, limits)
#      podman run --rm --network=none
#    Reports the median wall time (runs interleaved, scripts/interleave.py), the ratio to
#    crun, and peak RSS.
#    The cage: the same berth run with the full cage (its own user namespace, seccomp) and
#    with the component's opt-outs ("user_namespace": "host", "seccomp": "unconfined").
#    Rootless: a user made for the bench (subordinate ids, `berth setup-rootless`) runs a
#    Debian python image (scripts/build-python-image.sh) with berth and with rootless
#    `podman run` (overlay storage); both stores under the run's one parent directory.
#    crun (and podman, which uses it) refuses this host's hybrid cgroup layout, so round 1
#    runs berth and runc on the host as it comes, and round 2 moves the hugetlb controller
#    to a v1 hierarchy and runs crun, podman and berth again (moved back at the end).
# 2. Cold pulls beside podman and skopeo + umoci (scripts/bench-pull.sh).
# 3. CSV throughput of the storage (scripts/bench-csv.sh), when present.
# 4. Throughput of 60 small jobs: sequential, xargs -P2, a Slurm array (scripts/bench-jobs.sh).
# 4. The shared store's table import and export against psql \copy (scripts/bench-pg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-50}"
# Cold pulls take seconds each, not milliseconds: fewer runs.
pull_runs="${2:-5}"
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
scripts/deps.sh bench
registry=$(scripts/registry.sh start)
scripts/build-images.sh "$registry" >/dev/null
cargo build --release --locked --quiet
berth="$PWD/target/release/berth"

work=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
# The rootless round's user must reach its stores below it.
chmod 0711 "$work"
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
# An inline configuration (no config_id) keeps no state, so the run touches no storage; the
# "stored config" job has a config_id, so berth also commits its (cleared) state.
for ref in "$image" "$pinned"; do
  name=$([ "$ref" = "$image" ] && echo tag || echo pinned)
  jq -n --arg img "$ref" '{component: {id: "acme.true", image: $img, memory: "256m", network: "none"},
        configuration: {parameters: {}}}' > "$work/job-$name.json"
done
jq '. + {config_id: "1"}' "$work/job-pinned.json" > "$work/job-state.json"
b run "$work/job-pinned.json" || { echo "berth cannot run here as the host is" >&2; exit 1; }

# An equivalent bundle for crun and runc: the same image (unpacked by umoci, since berth's
# store keeps layers apart), berth's namespaces and limits.
skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$work/layout:true"
umoci unpack --image "$work/layout:true" "$work/umoci" >/dev/null
mkdir -p "$work/bundle/data" "$work/bundle/tmp"
mv "$work/umoci/rootfs" "$work/bundle/rootfs"
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

berth_cmd="$berth --home $work/home --cache $work/cache -q run"
stock=(
  "berth (pinned)|$berth_cmd $work/job-pinned.json"
  "berth (tag)|$berth_cmd $work/job-tag.json"
  "berth (state)|$berth_cmd $work/job-state.json"
  "runc run|runc run --bundle $work/bundle berth-bench-runc"
)
# Interleaved (run 1 of each command, then run 2 of each, ...), so that the machine's
# drift does not favour whichever command would have gone first.
bench() {
  local out=$1; shift
  python3 scripts/interleave.py "$runs" 5 "$@" > "$out"
}
# Round 1: the host as it comes (crun cannot run here).
bench "$work/stock.json" "${stock[@]}"

# The cage's cost: the same job, and the same with the component's two opt-outs.
jq '.component += {user_namespace: "host", seccomp: "unconfined"}' "$work/job-pinned.json" \
  > "$work/job-nocage.json"
b run "$work/job-nocage.json" 2>/dev/null
cage=(
  "berth (cage)|$berth_cmd $work/job-pinned.json"
  "berth (no cage)|$berth_cmd $work/job-nocage.json"
)
bench "$work/cage.json" "${cage[@]}"

# Round 2: hugetlb moved to v1 so crun and podman run. Podman asks for rlimits above what
# root may have here (no CAP_SYS_RESOURCE) unless told otherwise: hence its --ulimit flags.
if ! mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null && grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
  moved_hugetlb=1
fi
podman pull -q --tls-verify=false "$image" >/dev/null
moved=(
  "berth (pinned)*|$berth_cmd $work/job-pinned.json"
  "crun run*|crun run --bundle $work/bundle berth-bench-crun"
)
bench "$work/moved.json" "${moved[@]}"
# podman alone: its conmon keeps cleaning up after `run` returns, which would slow down
# whatever ran next if it were interleaved with the others.
podman=(
  "podman run*|podman run --rm --network=none --ulimit nofile=$nofile:$nofile --ulimit nproc=4096:4096 $image"
)
bench "$work/podman.json" "${podman[@]}"

# Rootless: berth and podman as the same unprivileged user, a Debian python image.
bench_user=berth-bench
id "$bench_user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$bench_user"
"$berth" setup-rootless "$bench_user" >/dev/null 2>&1
rl="$work/rootless"
mkdir -p "$rl/xdg"
chown -R "$bench_user:" "$rl"
chmod 0700 "$rl/xdg"
# The image the conformance suite builds on, running `python3 -c pass`.
py_image=$(scripts/build-python-image.sh --bench "$registry" | tail -n 1)
as_user() {
  echo "setpriv --reuid=$(id -u "$bench_user") --regid=$(id -g "$bench_user") --clear-groups -- \
env HOME=$rl XDG_RUNTIME_DIR=$rl/xdg $*"
}
jq -n --arg img "$py_image" '{component: {id: "acme.py", image: $img, memory: "256m", network: "none"},
      configuration: {parameters: {}}}' > "$rl/job-py.json"
chmod 0644 "$rl/job-py.json"
podman_rl="podman --root $rl/podman/root --runroot $rl/podman/run --storage-driver overlay"
$(as_user "$berth" --home "$rl/berth" -q pull "$py_image") >/dev/null
$(as_user $podman_rl pull -q --tls-verify=false "$py_image") >/dev/null
$(as_user "$berth" --home "$rl/berth" -q run "$rl/job-py.json") \
  || { echo "rootless berth cannot run here" >&2; exit 1; }
rootless=(
  "berth rootless*|$(as_user "$berth" --home "$rl/berth" -q run "$rl/job-py.json")"
  "podman rootless*|$(as_user $podman_rl run --rm --network=none "$py_image")"
)
bench "$work/rootless.json" "${rootless[@]}"

rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }
median() { jq -r --arg n "$2" '.[$n].median' "$1"; }
crun_median=$(median "$work/moved.json" "crun run*")
echo
echo "Warm start of an image running \`true\` ($runs runs each, $(nproc) cores, kernel $(uname -r))"
echo "* = hugetlb moved to a v1 hierarchy (crun and podman refuse the host's layout otherwise)"
printf '%-16s %10s %10s %9s %12s\n' command "median ms" "mean ms" "x crun" "peak RSS KB"
report() {
  local file=$1; shift
  for c in "$@"; do
    local name="${c%%|*}" median mean peak
    read -r median mean < <(jq -r --arg n "$name" '.[$n] | "\(.median) \(.mean)"' "$file")
    # shellcheck disable=SC2086
    peak=$(rss ${c#*|})
    printf '%-16s %10.2f %10.2f %9.2f %12s\n' "$name" "$(echo "$median*1000" | bc -l)" \
      "$(echo "$mean*1000" | bc -l)" "$(echo "$median/$crun_median" | bc -l)" "$peak"
  done
}
report "$work/moved.json" "${moved[@]}"
report "$work/podman.json" "${podman[@]}"
# Peak RSS of the stock round is taken after the move; it does not depend on the layout.
report "$work/stock.json" "${stock[@]}"
report "$work/cage.json" "${cage[@]}"
report "$work/rootless.json" "${rootless[@]}"
printf 'podman / berth (pinned), same layout: %.1fx\n' \
  "$(echo "$(median "$work/podman.json" "podman run*") / $(median "$work/moved.json" "berth (pinned)*")" | bc -l)"
printf 'the cage costs %.1f ms per run (median with it minus median without)\n' \
  "$(echo "($(median "$work/cage.json" "berth (cage)") - $(median "$work/cage.json" "berth (no cage)")) * 1000" | bc -l)"
printf 'rootless podman / rootless berth, python image: %.1fx\n' \
  "$(echo "$(median "$work/rootless.json" "podman rootless*") / $(median "$work/rootless.json" "berth rootless*")" | bc -l)"

echo
BERTH="$berth" scripts/bench-pull.sh "$pull_runs"

if [ -x scripts/bench-csv.sh ]; then
  echo
  BERTH="$berth" scripts/bench-csv.sh
fi

echo
BERTH="$berth" scripts/bench-jobs.sh 60
# 4. The shared store: PostgreSQL import and export beside psql's \copy.
if [ -x scripts/bench-pg.sh ]; then
  echo
  BERTH="$berth" scripts/bench-pg.sh
fi

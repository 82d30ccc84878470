#!/usr/bin/env bash
# Builds the conformance suite's image: Debian bookworm (debootstrap, minbase) with python3
# and Keboola's own component library, `keboola.component`, from PyPI at a pinned version,
# plus the small test components of tests/conformance/ written with it. Built with umoci and
# pushed with skopeo, like scripts/build-images.sh: berth does not build what it runs.
#
#   scripts/build-python-image.sh [REGISTRY]          # default 127.0.0.1:5000
#   scripts/build-python-image.sh --bench [REGISTRY]  # the base running `python3 -c pass`
#
# Prints the pushed reference on its last line. Two images, each built only when the
# registry does not have it yet, so CI pays once (~2 min) and every later run nothing:
#   REGISTRY/conform/python-base:<version>-<hash>   Debian + python3 + keboola.component,
#                                                   in five layers
#   REGISTRY/conform/python:<hash>                  the base plus /code (tests/conformance)
# The tags hash what they are built from, so a change to this script or to a component
# rebuilds what changed and nothing else.
set -euo pipefail

bench=0
if [ "${1:-}" = "--bench" ]; then
  bench=1
  shift
fi
registry="${1:-127.0.0.1:5000}"
kc_version=1.11.0
# Its dependencies, pinned too, so a rebuild installs what was tested.
pins=(deprecated==1.3.1 freezegun==1.5.5 keboola.vcr==0.7.1 pygelf==0.4.3 python-dateutil==4.0.0
  pyyaml==6.0.4 tzdata==2026.6 vcrpy==8.5.0 wrapt==2.5.2)
suite="bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here=$(cd "$(dirname "$0")/.." && pwd)
components="$here/tests/conformance"

for tool in umoci skopeo debootstrap sha256sum python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (apt-get install $tool)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "building the python image needs root (debootstrap)" >&2; exit 1; }

script_hash=$(sha256sum "$0" | cut -c1-12)
code_hash=$( (cat "$0"; find "$components" -type f -name '*.py' | LC_ALL=C sort | xargs cat) \
  | sha256sum | cut -c1-16)
base="$registry/conform/python-base:$kc_version-$script_hash"
app="$registry/conform/python:$code_hash"

exists() { skopeo inspect --raw --tls-verify=false "docker://$1" >/dev/null 2>&1; }

bench_ref="$registry/bench/python:$kc_version-$script_hash"
if [ "$bench" = 1 ] && exists "$bench_ref"; then
  echo "$bench_ref"
  exit 0
fi
if [ "$bench" = 0 ] && exists "$app"; then
  echo "$app"
  exit 0
fi

work=$(mktemp -d /var/tmp/berth-python-image.XXXXXX)
cleanup() {
  # debootstrap may leave /proc mounted inside the target when it fails half-way.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$work/full/$m" 2>/dev/null && umount -l "$work/full/$m" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
layout="$work/layout"
umoci init --layout "$layout"

# The base's tree is cut into layers the way image builds cut theirs (one per step), so that
# pulls of it exercise what multi-layer images need: several blobs, parallel unpacking, and
# files of one directory spread over several layers.
layer_groups=(
  "--exclude=./usr/share --exclude=./usr/lib/x86_64-linux-gnu --exclude=./usr/lib/python3* --exclude=./usr/local ."
  "./usr/lib/x86_64-linux-gnu"
  "./usr/share"
  "./usr/lib/python3 ./usr/lib/python3.11"
  "./usr/local"
)

build_base() {
  local root="$work/full"
  echo "building $base (debootstrap $suite, keboola.component==$kc_version)" >&2
  mkdir -p "$root"
  debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    "$suite" "$root" "$mirror" >&2
  # The wheels are fetched by the host's pip (with the host's proxy and CA settings) for
  # the image's python (3.11, Debian's), then installed offline inside the image.
  local wheels="$root/tmp/wheels"
  mkdir -p "$wheels"
  python3 -m pip download --quiet --dest "$wheels" --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    "keboola.component==$kc_version" "${pins[@]}" >&2
  env -u PIP_FIND_LINKS -u PIP_CERT chroot "$root" /usr/bin/pip3 install --quiet \
    --no-index --find-links /tmp/wheels --break-system-packages --root-user-action=ignore \
    "keboola.component==$kc_version" "${pins[@]}" >&2
  rm -rf "$wheels"
  chroot "$root" /usr/bin/python3 -c 'import keboola.component' >&2
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  for m in proc sys dev/pts dev; do
    mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m" || true
  done
  umoci new --image "$layout:base"
  umoci unpack --image "$layout:base" "$work/base" >/dev/null
  local group
  for group in "${layer_groups[@]}"; do
    # Split into words, never globbed here: the patterns are tar's, relative to the tree.
    set -f
    # shellcheck disable=SC2086
    tar -C "$root" --xattrs --numeric-owner -cf - $group | tar -C "$work/base/rootfs" --xattrs -xpf -
    set +f
    umoci repack --refresh-bundle --image "$layout:base" "$work/base" >/dev/null
  done
  umoci config --image "$layout:base" --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.env PYTHONUNBUFFERED=1 --config.workingdir /code
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:base" "docker://$base" >&2
}

if exists "$base"; then
  skopeo copy --quiet --src-tls-verify=false "docker://$base" "oci:$layout:base" >&2
else
  build_base
fi

if [ "$bench" = 1 ]; then
  umoci config --image "$layout:base" --config.entrypoint /usr/bin/python3 \
    --config.cmd=-c --config.cmd=pass
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:base" "docker://$bench_ref" >&2
  echo "$bench_ref"
  exit 0
fi

echo "building $app" >&2
# The components are one layer on top of the base's.
umoci unpack --image "$layout:base" "$work/app" >/dev/null
install -d -m 0755 "$work/app/rootfs/code"
install -m 0644 "$components"/*.py "$work/app/rootfs/code/"
umoci repack --image "$layout:base" "$work/app" >/dev/null
umoci config --image "$layout:base" --config.entrypoint /usr/bin/python3 \
  --config.cmd /code/main.py
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:base" "docker://$app" >&2
echo "$app"

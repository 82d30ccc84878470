#!/usr/bin/env bash
# Installs berth's Debian package on a fresh Debian 12 — a debootstrap minbase bookworm tree,
# made the root of a mount namespace of its own — and runs the example job there
# against the local registry, as a newcomer with the package would. Needs root.
#
#   scripts/package-test.sh [DEB]    # builds the package (scripts/package.sh) when none is given
#
# The bookworm tree is made once (~1-1.5 min) and kept in /var/tmp/berth-debian/ (as
# scripts/build-python-image.sh keeps its image in the registry), so CI pays once; a run
# after that takes seconds. Each run unpacks a fresh copy and removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap, mounts, pivot_root)" >&2; exit 1; }
for tool in debootstrap unshare pivot_root; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed (scripts/deps.sh tests)" >&2; exit 1; }
done

deb="${1:-}"
if [ -z "$deb" ]; then
  deb=$(scripts/package.sh | tail -1)
fi
deb=$(realpath "$deb")
registry=$(scripts/registry.sh start)
# The example's image, 127.0.0.1:5000/acme/hello:1.0 (the tree shares the host's network).
scripts/build-images.sh "$registry" >/dev/null

mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache=/var/tmp/berth-debian
# Bump the number when the way the tree is made changes.
tree="$cache/bookworm-minbase-1.tar.gz"
if [ ! -f "$tree" ]; then
  echo "making a Debian 12 minbase tree (once)" >&2
  build=$(mktemp -d /var/tmp/berth-debootstrap.XXXXXX)
  trap 'rm -rf --one-file-system "$build"' EXIT
  debootstrap --variant=minbase bookworm "$build/root" "$mirror" >/dev/null
  mkdir -p "$cache"
  rm -f "$cache"/bookworm-minbase-*.tar.gz
  tar -C "$build/root" -czf "$tree.part" . && mv "$tree.part" "$tree"
  rm -rf --one-file-system "$build"
  trap - EXIT
fi

work=$(mktemp -d /var/tmp/berth-package-test.XXXXXX)
# Every mount below is in the namespace of `unshare`, gone with it; --one-file-system all
# the same, so a mount that outlived it could never lead rm into the host's /sys or /dev.
trap 'rm -rf --one-file-system "$work"' EXIT
root="$work/root"
mkdir "$root"
tar -C "$root" -xzf "$tree"
cp "$deb" "$root/tmp/berth.deb"

# The tree becomes the root of a mount namespace (pivot_root, not chroot: the kernel refuses
# the user namespaces of berth's containers to a chrooted process), with the host's /sys
# (cgroups) and /dev; the host's own tree is detached, so only Debian 12 is there.
unshare --mount --propagation private --fork -- bash -euo pipefail -c '
  root=$1
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  cd "$root"
  mkdir -p .host
  pivot_root . .host
  exec /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/bash -euxo pipefail -c "
    umount -l /.host
    dpkg -i /tmp/berth.deb
    berth --version
    test -s /usr/share/man/man1/berth-run.1.gz
    test -s /usr/share/bash-completion/completions/berth
    test -s /usr/share/doc/berth/examples/berth-job@.service
    berth run /usr/share/doc/berth/examples/hello.json
    berth storage export out.c-hello.greeting
  "
' _ "$root"
echo "the package installs on Debian 12 and runs the example"

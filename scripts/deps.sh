#!/usr/bin/env bash
# Installs the Debian packages berth's build, tests, examples and benchmarks need, when any
# is missing. Needs root (it runs apt-get); does nothing when everything is there.
set -euo pipefail

packages=(
  libseccomp-dev pkg-config   # building libcontainer with seccomp support
  docker-registry             # the local registry (CNCF Distribution)
  apache2-utils openssl       # htpasswd -B and certificates for the TLS + auth registry tests
  skopeo umoci                # independent tools that build and push test images
  busybox-static              # the real binaries inside test images
  passt                       # pasta: outbound networking for network mode "bridge"
  uidmap                      # newuidmap/newgidmap: rootless operators' subordinate ids
  util-linux passwd           # setpriv and useradd: tests run berth as unprivileged users
  crun runc podman            # peers for the benchmark
  gcc libc6-dev               # the static C probe the hostile-component tests run inside
  g++                         # libFuzzer (C++), which the fuzz targets' libfuzzer-sys builds
  sqlite3 time jq bc curl procps iproute2 python3
  strace                      # system calls per entry, in the pull benchmark
  debootstrap python3-pip     # the conformance suite's Debian + keboola.component image
  slurmctld slurmd slurm-client munge  # a Slurm cluster on this host (scripts/slurm.sh, tests/slurm.rs)
  postgresql                  # the shared store's tests (scripts/services.sh; S3 is PyPI's weed)
)
# No udev on this host class: /dev/net/tun comes 0600, so no rootless pasta (or slirp4netns)
# can open it. Debian's own permission is 0666 (the kernel lets only a namespace's owner use
# what it opens there).
if [ "$(id -u)" -eq 0 ] && [ -c /dev/net/tun ]; then
  chmod 0666 /dev/net/tun
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

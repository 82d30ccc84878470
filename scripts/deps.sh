#!/usr/bin/env bash
# Installs the Debian packages a group of berth's scripts needs, when any is missing. Needs
# root (it runs apt-get); does nothing when everything is there.
#
#   scripts/deps.sh example   # building berth and running the example (scripts/example.sh)
#   scripts/deps.sh tests     # the example's, plus what the tests need (scripts/test.sh)
#   scripts/deps.sh bench     # the tests', plus the benchmark's peers (scripts/bench.sh)
#   scripts/deps.sh           # all of them
set -euo pipefail

# Building berth, a registry, and the example image.
example=(
  libseccomp-dev pkg-config   # building libcontainer with seccomp support
  gcc libc6-dev               # the C in berth's dependencies (SQLite, ring)
  docker-registry curl        # the local registry (CNCF Distribution), and its readiness check
  skopeo umoci                # independent tools that build and push images
  busybox-static              # the real binaries inside the example and test images
)
# The tests, beside the example's.
tests=(
  apache2-utils openssl       # htpasswd -B and certificates for the TLS + auth registry tests
  passt                       # pasta: outbound networking for network mode "bridge"
  uidmap                      # newuidmap/newgidmap: rootless operators' subordinate ids
  util-linux passwd           # setpriv and useradd: tests run berth as unprivileged users
  sqlite3 time jq bc procps iproute2 python3
  g++                         # libFuzzer (C++), which the fuzz targets' libfuzzer-sys builds
  debootstrap python3-pip     # the conformance suite's image, the package test's Debian 12
  man-db                      # man -l renders the generated man pages
  slurmctld slurmd slurm-client munge  # a Slurm cluster on this host (scripts/slurm.sh, tests/slurm.rs)
  postgresql                  # the shared store's tests (scripts/services.sh; S3 is PyPI's weed)
)
# The benchmark's peers and tools, beside the tests'.
bench=(
  crun runc podman            # peers for the benchmark
  strace                      # system calls per entry, in the pull benchmark
)

packages=()
case "${1:-all}" in
  example) packages=("${example[@]}") ;;
  tests) packages=("${example[@]}" "${tests[@]}") ;;
  bench | all) packages=("${example[@]}" "${tests[@]}" "${bench[@]}") ;;
  *) echo "usage: scripts/deps.sh [example|tests|bench]" >&2; exit 2 ;;
esac
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

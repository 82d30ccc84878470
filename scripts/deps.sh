#!/usr/bin/env bash
# Installs the Debian packages berth's build, tests, examples and benchmarks need, when any
# is missing. Needs root (it runs apt-get); does nothing when everything is there.
set -euo pipefail

packages=(
  libseccomp-dev pkg-config   # building libcontainer with seccomp support
  docker-registry             # the local registry (CNCF Distribution)
  skopeo umoci                # independent tools that build and push test images
  busybox-static              # the real binaries inside test images
  passt                       # pasta: outbound networking for network mode "bridge"
  crun runc podman            # peers for the benchmark
  gcc libc6-dev               # the static C probe the hostile-component tests run inside
  sqlite3 time jq bc curl procps iproute2 python3
  debootstrap python3-pip     # the conformance suite's Debian + keboola.component image
)
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

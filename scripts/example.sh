#!/usr/bin/env bash
# Runs the example job end to end on a fresh machine: installs what it needs, starts a local
# registry, builds the example image from busybox-static (umoci) and pushes it (skopeo),
# builds berth, runs examples/hello.json with the embedded defaults, and shows the table the
# component wrote, now in berth's storage.
#
#   scripts/example.sh          # as root
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh example
registry=$(scripts/registry.sh start)
scripts/build-images.sh "$registry" >/dev/null
cargo build --release --locked --quiet
# The checkout keeps its image cache in rootfs-cache/ (berth's own default is <home>/cache).
export BERTH_CACHE="$PWD/rootfs-cache"
echo "--- berth run examples/hello.json"
./target/release/berth run examples/hello.json
echo "--- berth storage export out.c-hello.greeting"
./target/release/berth storage export out.c-hello.greeting

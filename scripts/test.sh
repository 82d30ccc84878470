#!/usr/bin/env bash
# Runs berth's whole test suite on this machine: installs what the tests need, starts the
# local registry, checks formatting and lints, and runs every unit and integration test.
# The integration tests run real containers: run as root.
#
#   scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh tests
registry=$(scripts/registry.sh start)
# tests/slurm.rs starts the Slurm cluster on this host (scripts/slurm.sh start); stop it after.
trap 'scripts/slurm.sh stop' EXIT
export BERTH_TEST_REGISTRY="$registry"
# PostgreSQL and an S3 server on loopback, for the shared store's conformance suite.
# (Assigned first: a start that fails stops the run here, not at the first test needing it.)
services=$(scripts/services.sh start)
eval "$services"
export BERTH_TEST_REGISTRY_LOG="${BERTH_REGISTRY_DIR:-/var/tmp/berth-registry}/registry.log"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The docs: README within 250 lines, every link resolving; rustdoc without a warning
# (private items included: berth is an application, its docs are for who works on it).
scripts/check-docs.sh
RUSTDOCFLAGS="-D warnings -A rustdoc::private-intra-doc-links" \
  cargo doc --no-deps --document-private-items --locked --quiet
# The dependency graph: licences, no second TLS or HTTP stack, crates.io only.
scripts/deny.sh
cargo test --locked "$@"

# The spine suite once more, as an unprivileged operator: every berth these tests start
# runs as `berth-ci` (its own subordinate ids, a cgroup from `berth setup-rootless`).
if [ "$(id -u)" -eq 0 ] && [ $# -eq 0 ]; then
  id berth-ci >/dev/null 2>&1 || useradd --create-home --shell /bin/sh berth-ci
  cargo run --locked --quiet -- setup-rootless berth-ci
  BERTH_TEST_USER=berth-ci cargo test --locked \
    --test run --test hostile --test storage --test closed_pipes \
    --test processors --test debug --test layer_store --test concurrency --test inherited
fi

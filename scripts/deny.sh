#!/usr/bin/env bash
# cargo deny over berth's dependency graph (deny.toml): licences, banned crates (a second
# TLS or HTTP stack), and sources (crates.io only). Installs cargo-deny from crates.io,
# pinned, when it is missing. Advisories are not checked: their database lives on GitHub,
# out of this project's CI's reach (run `cargo deny check advisories` where it is not).
#
#   scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  echo "deny: installing cargo-deny $version" >&2
  cargo install --locked --quiet cargo-deny --version "$version"
fi
cargo deny --locked check bans licenses sources

#!/usr/bin/env bash
# Builds berth's Debian package with cargo-deb (installed from crates.io at a pinned version
# when missing): the release binary, its man pages and bash/zsh/fish completions (generated
# by that binary from its own command-line definitions), an example systemd unit, the
# example job and the README. Prints the package's path on its last line.
#
#   scripts/package.sh
#   BERTH_PACKAGE_PROFILE=release scripts/package.sh   # CI: the release build it has already
#   dpkg -i target/debian/berth_*.deb       # or: apt-get install ./target/debian/berth_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qF "$cargo_deb_version"; then
  cargo install cargo-deb --version "$cargo_deb_version" --locked --quiet
fi
# The dist profile (the default): the release one with LTO, 13% smaller (see Cargo.toml).
# CI packages the release build scripts/example.sh made: the same code, five minutes less.
profile=${BERTH_PACKAGE_PROFILE:-dist}
cargo build --profile "$profile" --locked --quiet
berth=target/$profile/berth
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$berth" man "$assets/man"
"$berth" completions bash > "$assets/completions/berth"
"$berth" completions zsh > "$assets/completions/_berth"
"$berth" completions fish > "$assets/completions/berth.fish"
# The binary was built above, with the commit it names in --version.
cargo deb --no-build --profile "$profile" --locked --quiet --output target/debian/ >&2
ls -t target/debian/berth_*.deb | head -1

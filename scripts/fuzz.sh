#!/usr/bin/env bash
# Fuzzes berth's parsers of untrusted input (fuzz/, docs/security.md "Fuzzing"): installs
# cargo-fuzz, builds every target once, then runs each for SECONDS (default 60) from its committed
# seeds (fuzz/corpus/<target>) and past crashes (fuzz/regressions/<target>). What the
# fuzzer adds to the corpus is thrown away; a crash, a hang (an input over 10 s) or memory
# growth (over 512 MB) fails the run and is kept in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# BERTH_BUILD_LOCK=FILE builds under `flock FILE` (a machine whose builds take turns).
#
# The toolchain is stable: cargo fuzz builds with `--sanitizer none`, which needs no
# nightly flag (AddressSanitizer needs -Zsanitizer, so nightly or RUSTC_BOOTSTRAP). berth
# is safe Rust, so what a sanitizer would add is little; the targets meter the heap
# themselves (fuzz/src/lib.rs) in place of -malloc_limit_mb, which needs one.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
[ $# -gt 0 ] && shift
CARGO_FUZZ_VERSION=0.13.2

lock=()
if [ -n "${BERTH_BUILD_LOCK:-}" ]; then
  lock=(flock "$BERTH_BUILD_LOCK")
fi

# libFuzzer itself is C++: libfuzzer-sys compiles it (scripts/deps.sh installs g++).
scripts/deps.sh tests
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  "${lock[@]}" cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# The targets (fuzz/Cargo.toml).
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

build_start=$(date +%s)
"${lock[@]}" cargo fuzz build --sanitizer none
echo "fuzz: built ${#targets[@]} targets in $(($(date +%s) - build_start)) s"

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The unpack target's scratch directories (layers, and the canary beside them).
export BERTH_FUZZ_SCRATCH="$work/scratch"
mkdir -p "$BERTH_FUZZ_SCRATCH"

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
  seeds=("fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  # A layer may be a gzip bomb of a few KB: let inputs grow enough to hold one.
  max_len=8192
  [ "$t" = unpack ] && max_len=65536
  log="$work/$t.log"
  echo "fuzz: $t for $seconds s"
  if cargo fuzz run --sanitizer none "$t" "$work/corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=512 -max_len="$max_len" \
    -print_final_stats=1 </dev/null >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed+=("$t")
    sed -n '/ERROR: libFuzzer\|panicked at\|deadly signal\|Test unit written/,+12p' "$log" | head -40
    echo "fuzz: $t failed; reproduce with: cargo fuzz run --sanitizer none $t fuzz/artifacts/$t/<file>"
  fi
  done_line=$(grep -E '^#[0-9]+\s+DONE' "$log" | tail -1 || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$done_line")
  summary+=("$(printf '%-16s %-7s runs %-10s exec/s %-7s cov %-6s peak rss %s MB' \
    "$t" "$result" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${rss:-?}")")
done

echo "fuzz: summary ($seconds s each)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: every target ran $seconds s without a failure"

#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target of a crate's fuzz directory for SECONDS (default 60)
# each and prints the execution counts.
#
#   tests/fuzz/run.sh services/wire/fuzz 60
#
# Works on the stable toolchain via RUSTC_BOOTSTRAP=1 (cargo-fuzz needs -Z flags for the
# sanitizer instrumentation). Needs cargo-fuzz (`cargo install cargo-fuzz --locked`; `just fuzz`
# installs it). AddressSanitizer by default — the targets' dependencies (reed-solomon-simd's
# SIMD, curve25519-dalek, prost, sha2) contain unsafe code; FUZZ_SANITIZER=none runs ~3-4x
# more executions per second.
set -euo pipefail
DIR="${1:?usage: run.sh FUZZ_DIR [SECONDS]}"
SECONDS_PER_TARGET="${2:-60}"
cd "$DIR"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
SAN="${FUZZ_SANITIZER:-address}"
targets=$(cargo fuzz list)
for t in $targets; do
    cargo fuzz build -O -s "$SAN" "$t" >/dev/null
done
summary=""
for t in $targets; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    if ! cargo fuzz run -O -s "$SAN" "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz target $t in $DIR FAILED" >&2
        exit 1
    fi
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    summary+="$DIR $t: ${execs:-?} executions in ${SECONDS_PER_TARGET}s (sanitizer: $SAN)"$'\n'
    rm -f "$log"
done
printf '%s' "$summary"

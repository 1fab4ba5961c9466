#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20): first each input of its
# committed corpus (fuzz/corpus/<target>) and its seeds (fuzz/seeds/<target>)
# is replayed, so a regression the corpus knows fails at once; then
# libFuzzer mutates for the rest of the time. New inputs go to a scratch
# copy, so the checkout stays clean. Exits 1 on the first crash, leak,
# mismatch or input slower than 10 s, after printing libFuzzer's report
# (the input that failed is saved under fuzz/artifacts/<target>/).
#
#   fuzz/run.sh        # 20 s per target
#   fuzz/run.sh 600    # a longer campaign
#
# Needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
cargo +nightly fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
    work="$scratch/$target"
    mkdir -p "$work"
    cp -r "corpus/$target/." "$work/"
    log="$scratch/$target.log"
    if ! cargo +nightly fuzz run -O "$target" "$work" "seeds/$target" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $target failed (report above)" >&2
        exit 1
    fi
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1)"
    echo "fuzz: $target ok: ${execs:-?} executions in ${secs} s, ${cov:-cov: ?}"
done

#!/usr/bin/env bash
# Runs the AdamW benchmarks (optim-dsl's `adamw` and `lowp` benches) and prints the README's
# table of same-run ratios to the bound (scripts/bench-table.py reads criterion's JSON).
#
#   scripts/bench-table.sh                                   # every case, criterion's settings
#   scripts/bench-table.sh --warm-up-time 1 --measurement-time 3
#   BENCH_FILTER=layers_10M scripts/bench-table.sh           # only the groups matching a filter
#
# Arguments go to criterion. Take the numbers on a quiet machine: the ratios are same-run, but
# the `drift` column (bound_again / bound) shows how much the machine moved during a group.
set -euo pipefail
cd "$(dirname "$0")/.."
filter=(${BENCH_FILTER:+"$BENCH_FILTER"})
uptime
cargo bench -p optim-dsl --bench adamw -- ${filter[@]+"${filter[@]}"} "$@"
cargo bench -p optim-dsl --bench lowp -- ${filter[@]+"${filter[@]}"} "$@"
python3 scripts/bench-table.py target/criterion

#!/bin/bash
# The bounded learning-rate sweep of the charlm entries added in issue 15 (second part), one
# 500-step run per (optimizer, peak) in priority order, each into its own directory, then a
# merge with the committed comparison (docs/charlm) into docs/charlm. Resumable: a run whose
# summary.csv exists is skipped; `touch $RUNS/STOP` stops before the next run.
#
# Bound: 3 points per optimizer on the half-decade ladder (the reference's recommended lr, or
# the nearest rung, and its two neighbours), all centres first, then the neighbours; no
# extension past an edge (a best peak at an edge is reported as such). The low-precision-state
# AdamW entries (adamw-bf16, adamw-8bit) are not swept: one run each at AdamW's peak, so that
# their loss differs from AdamW's only by the storage of the moments.
#
#   scripts/charlm-new-entries.sh            # runs, then merges
#   BIN=target/debug/examples/compare scripts/charlm-new-entries.sh   # another build
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/examples/compare}
RUNS=${RUNS:-target/charlm-runs}
mkdir -p "$RUNS"
runs="kfac=3e-3 normuon=3e-2 muon-pe=3e-3 adamuon=3e-3 adam-mini=3e-3 prodigy=1 splus=1e-1 psgd-kron=1e-3
kfac=1e-3 kfac=1e-2 muon-pe=1e-3 muon-pe=1e-2 normuon=1e-2 normuon=1e-1 adamuon=1e-3 adamuon=1e-2
adam-mini=1e-3 adam-mini=1e-2 prodigy=3e-1 prodigy=3 splus=3e-2 splus=3e-1 psgd-kron=3e-4 psgd-kron=3e-3
adamw-bf16=3e-3 adamw-8bit=3e-3"
for r in $runs; do
  name=${r%%=*}; lr=${r#*=}
  out=$RUNS/$name-$lr
  [ -f "$out/summary.csv" ] && continue
  if [ -f "$RUNS/STOP" ]; then echo "stopped before $r"; break; fi
  echo "=== $r $(date +%T)"
  nice -n 10 "$BIN" --task charlm --sweep --sweep-max 1 --optimizers "$name" --lr "$name=$lr" \
    --no-plot --out "$out" > "$out.log" 2>&1 || { echo "failed: see $out.log"; exit 1; }
  tail -3 "$out.log"
done
dirs=docs/charlm
for d in "$RUNS"/*/; do [ -f "$d/summary.csv" ] && dirs="$dirs,${d%/}"; done
"$BIN" --task charlm --merge "$dirs" --out docs/charlm

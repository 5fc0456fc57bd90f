#!/usr/bin/env bash
# PyTorch's fused CPU AdamW as a ratio to the AdamW benches' memory bound, in one window:
# criterion's `bound` (optim-dsl/benches/adamw.rs), then scripts/torch_adamw_bench.py, then the
# bound again; each PyTorch median is divided by the mean of the two bound medians of its layout.
#
#   scripts/torch-vs-bound.sh [python-with-torch]   # default: ~/refgen-venv/bin/python
#   ADAMW_BENCH_BIN=path/to/adamw-bench scripts/torch-vs-bound.sh   # a prebuilt bench binary
#
# Run it on a quiet machine. Not a same-process ratio (the bound runs in the Rust bench), so read
# the `drift` column: the two bound medians must agree for the row to mean anything.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-$HOME/refgen-venv/bin/python}
out=target/torch-vs-bound; mkdir -p "$out"
bound() {
  if [ -n "${ADAMW_BENCH_BIN:-}" ]; then
    "$ADAMW_BENCH_BIN" --bench '/bound$' --warm-up-time 1 --measurement-time 3 >/dev/null
  else
    cargo bench -q -p optim-dsl --bench adamw -- '/bound$' --warm-up-time 1 --measurement-time 3 >/dev/null
  fi
  python3 - "$1" <<'PY'
import json, os, sys
res = {}
for g in ("flat_1M", "layers_1M", "flat_10M", "layers_10M"):
    with open(os.path.join("target/criterion", g, "bound", "new", "estimates.json")) as f:
        res[g] = json.load(f)["median"]["point_estimate"] * 1e-9
json.dump(res, open(sys.argv[1], "w"))
PY
}
uptime
bound "$out/bound1.json"
"$py" scripts/torch_adamw_bench.py > "$out/torch.json"
bound "$out/bound2.json"
python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
b1, b2 = (json.load(open(f"{d}/bound{i}.json")) for i in (1, 2))
t = json.load(open(f"{d}/torch.json"))
print(f"torch {t['torch']}, {t['threads']} threads")
print("| case | bound | PyTorch fused AdamW | PyTorch foreach AdamW | drift |")
print("|---|---:|---:|---:|---:|")
for g, r in t["results"].items():
    b = (b1[g] + b2[g]) / 2
    print(f"| {g} | {b*1e6:.0f} µs | {r['fused']['median']/b:.2f}× | {r['foreach']['median']/b:.2f}× | {b2[g]/b1[g]:.2f} |")
PY

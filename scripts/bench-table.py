#!/usr/bin/env python3
"""Print the README's benchmark table from criterion's JSON estimates: same-run ratios to the bound.

    python3 scripts/bench-table.py [criterion dir]     # default target/criterion

Reads `<dir>/<group>/<function>/new/estimates.json` (the latest run of each benchmark, median
point estimates) of `cargo bench -p optim-dsl --bench adamw` and `--bench lowp` (both name their
groups `flat_1M`, `flat_10M`, ...; their function ids differ). Every ratio divides a variant's
median by its own group's bound, measured in the same run: the mean of `bound` and
`bound_again` (adamw) or of `bound_16` and `bound_16_again` (lowp, 16-bit state), and
`bound_f32` for lowp's `dsl_f32` and `bound_8` (16 B/param with the block scales) for
`dsl_q8`. `drift` is `bound_again / bound`: far from 1.00, the group's
ratios are unreliable (memory bandwidth on a shared machine moves). Run `scripts/bench-table.sh`
to measure and print in one go. No dependencies beyond python3.
"""

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_report", os.path.join(HERE, "bench-report.py"))
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

# (function id, column title, bytes per f32 parameter it moves)
ADAMW = [
    ("dsl_slices", "DSL AdamW, exact (default)", 28),
    ("dsl_slices_recip", "DSL AdamW, `Arithmetic::Reciprocal`", 28),
    ("dsl_dfdx", "DSL AdamW on a dfdx model (default `ParamSync::Master`)", 36),
    ("dsl_dfdx_read", "DSL AdamW on a dfdx model, `ParamSync::Read`", 44),
    ("dfdx_adam", "dfdx's own `Adam` (AdamW)", 28),
    ("dfdx_ops", "AdamW from dfdx tensor ops", None),
]
LOWP = [
    ("dsl_f32", "DSL AdamW, f32 state", 28, "bound_f32"),
    ("dsl_bf16", "bf16 state", 20, "bound_16"),
    ("dsl_bf16_sr", "bf16 state, stochastic rounding", 20, "bound_16"),
    ("dsl_f16", "f16 state", 20, "bound_16"),
    ("dsl_f16_sr", "f16 state, stochastic rounding", 20, "bound_16"),
    ("dsl_q8", "8-bit moments", 16, "bound_8"),
]


def mean_bound(rows, first, again):
    a = rows.get(first, {}).get("median")
    b = rows.get(again, {}).get("median")
    if a and b:
        return (a + b) / 2, b / a
    return a, None


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "criterion")
    groups = report.load(root)
    if not groups:
        sys.exit(f"no criterion results under {root}")
    names = sorted(groups, key=report.group_key)

    adamw = [g for g in names if "bound" in groups[g]]
    if adamw:
        print("AdamW step, × the same-run bound (28 B/param, mean of `bound` and `bound_again`):\n")
        print("| case | bound / step | " + " | ".join(f"{t} ({b or '–'} B/param)" for _, t, b in ADAMW) + " | drift |")
        print("|---|---:|" + "---:|" * len(ADAMW) + "---:|")
        for g in adamw:
            rows = groups[g]
            bound, drift = mean_bound(rows, "bound", "bound_again")
            cells = [f"{rows[f]['median'] / bound:.2f}×" if f in rows and bound else "–" for f, _, _ in ADAMW]
            d = f"{drift:.2f}" if drift else "–"
            print(f"| {g} | {report.fmt_time(bound)} | " + " | ".join(cells) + f" | {d} |")
        print()

    lowp = [g for g in names if "bound_16" in groups[g]]
    if lowp:
        print("AdamW with low-precision state, × the same-run bound of the same byte count:\n")
        print("| case | " + " | ".join(f"{t} ({b} B/param)" for _, t, b, _ in LOWP) + " | drift |")
        print("|---|" + "---:|" * len(LOWP) + "---:|")
        for g in lowp:
            rows = groups[g]
            b16, drift = mean_bound(rows, "bound_16", "bound_16_again")
            other = {b: rows.get(b, {}).get("median") for b in ("bound_f32", "bound_8")}
            cells = []
            for f, _, _, b in LOWP:
                base = other.get(b, b16)
                cells.append(f"{rows[f]['median'] / base:.2f}×" if f in rows and base else "–")
            d = f"{drift:.2f}" if drift else "–"
            print(f"| {g} | " + " | ".join(cells) + f" | {d} |")
        print()


if __name__ == "__main__":
    main()

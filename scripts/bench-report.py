#!/usr/bin/env python3
"""Summarize criterion results as markdown: median time per step, throughput, ratio to `bound`.

Reads every `<criterion dir>/<group>/<function>/new/{estimates,benchmark}.json` (the latest run
of each benchmark) and prints one table per group, e.g. for `cargo bench -p optim-dsl --bench adamw`:

    python3 scripts/bench-report.py                 # target/criterion
    python3 scripts/bench-report.py path/to/criterion

Ratios are `median(variant) / median(bound)` within a group (1.00 = at the bound, higher is
slower). When the group also has `bound_again` (the bound measured last), a second ratio uses the
mean of the two bound medians, and the drift `bound_again / bound` is printed under the table:
memory bandwidth on a shared machine moves, and a drift far from 1 discredits the group. GB/s assumes AdamW's 28 bytes per f32 parameter (read p, g, m, v; write p, m, v), so it
is the effective rate, not what a slower variant actually moved. No dependencies beyond python3.
"""

import json
import os
import re
import sys

ORDER = ["bound", "dsl_slices", "dsl_slices_recip", "dsl_dfdx", "dfdx_adam", "dfdx_ops", "bound_again"]
BYTES_PER_PARAM = 28


def load(root):
    groups = {}
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        meta = {}
        if "benchmark.json" in files:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
        rel = os.path.relpath(os.path.dirname(dirpath), root).split(os.sep)
        group = meta.get("group_id") or rel[0]
        func = meta.get("function_id") or "/".join(rel[1:])
        elems = (meta.get("throughput") or {}).get("Elements")
        med = est["median"]
        groups.setdefault(group, {})[func] = {
            "median": med["point_estimate"],
            "lo": med["confidence_interval"]["lower_bound"],
            "hi": med["confidence_interval"]["upper_bound"],
            "elements": elems,
        }
    return groups


def group_key(name):
    """flat_1M, layers_1M, flat_10M, layers_10M: by size, then layout."""
    m = re.search(r"(\d+)([KMG]?)$", name)
    size = 0
    if m:
        size = int(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[m.group(2)]
    return (size, name)


def fmt_time(ns):
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e3:.1f} µs"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "criterion")
    groups = load(root)
    if not groups:
        sys.exit(f"no criterion results under {root}")
    for group in sorted(groups, key=group_key):
        rows = groups[group]
        funcs = sorted(rows, key=lambda f: (ORDER.index(f) if f in ORDER else len(ORDER), f))
        bound = rows.get("bound", {}).get("median")
        again = rows.get("bound_again", {}).get("median")
        mean_bound = (bound + again) / 2 if bound and again else None
        print(f"### {group}\n")
        head = "| variant | median / step | 95% CI of median | Melem/s | GB/s at 28 B/param | × bound |"
        rule = "|---|---:|---:|---:|---:|---:|"
        if mean_bound:
            head += " × mean bound |"
            rule += "---:|"
        print(head)
        print(rule)
        for f in funcs:
            r = rows[f]
            n = r["elements"]
            rate = f"{n / r['median'] * 1e3:.0f}" if n else "–"
            gbs = f"{n * BYTES_PER_PARAM / r['median']:.1f}" if n else "–"
            ratio = f"{r['median'] / bound:.2f}" if bound else "–"
            ci = f"{fmt_time(r['lo'])} – {fmt_time(r['hi'])}"
            line = f"| {f} | {fmt_time(r['median'])} | {ci} | {rate} | {gbs} | {ratio} |"
            if mean_bound:
                line += f" {r['median'] / mean_bound:.2f} |"
            print(line)
        if mean_bound:
            print(f"\ndrift: bound_again / bound = {again / bound:.2f}")
        print()


if __name__ == "__main__":
    main()

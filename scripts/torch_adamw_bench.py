#!/usr/bin/env python3
"""PyTorch's fused CPU AdamW on the layouts of `optim-dsl/benches/adamw.rs`, for the README's table.

Times `torch.optim.AdamW(params, fused=True)` (and `foreach=True`, PyTorch's default multi-tensor
path) per step on the same four layouts as the criterion groups, with 2 intra-op threads (the
Rust benches use 2 rayon threads on this machine):

- `flat_1M`, `flat_10M`: one rank-1 tensor of 1 000 000 / 10 000 000 float32;
- `layers_1M`, `layers_10M`: the 99 tensors of dfdx's `(Embedding<V, D>,
  Repeated<TransformerEncoderBlock<D, H, 4D>, 6>, LayerNorm1D<D>)` with `D = 100, V = 2720` and
  `D = 320, V = 8130` (6 (12 D^2 + 13 D) + 2 D + V D parameters).

Gradients are fixed non-zero tensors set once; AdamW runs with lr 1e-3, betas (0.9, 0.999), eps
1e-8, weight_decay 1e-2 (the DSL zoo's `AdamW` defaults). Prints one JSON object: per layout and
mode, the median and quartiles of `--samples` timed steps (seconds) after `--warmup` steps.

The ratio to the memory bound needs the criterion `bound` of the same window:
`scripts/torch-vs-bound.sh` runs criterion's bound, this script, and the bound again, and
divides. Requires torch (tests/refgen/README.md's venv has torch 2.15.0).
"""

import argparse
import json
import statistics
import time

import torch


def layers(d, v):
    """The 99 shapes of the dfdx GPT-like model, in dfdx's order."""
    shapes = [(v, d)]
    for _ in range(6):
        # self-attention: w_q, w_k, w_v, w_o (D x D) with biases
        for _ in range(4):
            shapes += [(d, d), (d,)]
        # MLP: D x 4D and 4D x D with biases
        shapes += [(4 * d, d), (4 * d,), (d, 4 * d), (d,)]
        # two layer norms: gamma, beta
        shapes += [(d,), (d,), (d,), (d,)]
    shapes += [(d,), (d,)]
    return shapes


LAYOUTS = {
    "flat_1M": [(1_000_000,)],
    "layers_1M": layers(100, 2720),
    "flat_10M": [(10_000_000,)],
    "layers_10M": layers(320, 8130),
}


def time_steps(shapes, mode, warmup, samples):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    kw = {"fused": True} if mode == "fused" else {"foreach": True}
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, **kw)
    for _ in range(warmup):
        opt.step()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4)
    return {"median": statistics.median(times), "q1": q[0], "q3": q[2], "samples": samples}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "results": {}}
    for name in args.layouts.split(","):
        shapes = LAYOUTS[name]
        assert sum(torch.Size(s).numel() for s in shapes) in (1_000_000, 10_000_000), name
        out["results"][name] = {m: time_steps(shapes, m, args.warmup, args.samples) for m in ("fused", "foreach")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Dion (Ahn, Xu, Abreu & Langford, "Dion: Distributed Orthonormalized Updates", arXiv 2504.05295): a NumPy
implementation of the paper's Algorithm 1 (centralized, single device, no sharding) with the conventions of the official
code (github microsoft/dion, dion/dion_reference.py: wide matrices transposed so that Q spans the shorter side, epsilon
in the column normalisation, the all-zero case, the rank rounding, decay before the update), and torch-AdamW for the
non-matrix parameters (the official `adamw` algorithm). Writes dion.json and dion_full.json.

The reference is this file (written from the paper and read against the official code), run in float32 and float64 on
the same float32 inputs; the f32-vs-f64 spread sizes the tolerance. As a cross-check, the official single-device code
path (microsoft/dion @ 0a059a4542e5aa74b40dcd1dce363836c7afcd48, dion/dion_reference.py, fetched by
fetch_thirdparty.sh, never committed) runs on the same inputs and probes; its distance is `checks.cross_checks`.
"""

import importlib
import math
import os
import platform
import sys
import types

import numpy as np

import common as C

DION_COMMIT = "0a059a4542e5aa74b40dcd1dce363836c7afcd48"

SEMANTICS = """NumPy implementation of Dion, Algorithm 1 of Ahn et al. 2025 (centralized), with the official code's conventions
(microsoft/dion dion_reference.py). Every array op in the run's dtype (float32 or float64); scalars (1 - mu,
1 - lr*wd, lr*sqrt(m/n), bias corrections) computed in float64 and cast to the dtype. Per-parameter step t (1-based).
Matrices X (m x n), state M (m x n, starts 0) and Q (k x r):
  transposed = m < n ; B' below is B^T when transposed (a = max(m, n) rows, k = min(m, n) columns)
  r = rank_fraction * min(m, n); r = rank_multiple_of * ceil(r / rank_multiple_of); r = min(r, m, n)
  Q0 = first k*r values of extra.probes[name] (row-major, k x r; standard normal from numpy PCG64 seed 2468,
       rounded to float32) -- the official code's torch.randn((k, r)); feed these instead of drawing.
  B = M + G
  if all(B == 0):  P = 0 (a x r), R = Q                         # fix_all_zero_or_nan
  else: Qc = Q; repeat power_iters times: P = B' Qc ; P = qr(P).Q (numpy.linalg.qr, reduced, Householder) ; Qc = B'^T P
        R = Qc
  M = B - (1 - mu) * (P R^T)   (transposed back when transposed)        # error feedback
  Q = R / (sqrt(sum_i R_ij^2) + epsilon)                               # column normalisation
  X = X * (1 - lr * weight_decay)
  X = X - lr * sqrt(m / n) * (P Q^T)   (transposed back when transposed)
Other parameters (vectors, scalars): torch AdamW with betas (beta1, beta2), eps = epsilon, the same lr and weight_decay:
  X = X * (1 - lr*wd); m = m + (1-beta1)(g - m); v = beta2 v + (1-beta2) g^2;
  X = X - lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps).
QR column signs are LAPACK's; P Q^T and M do not depend on them (a flipped column of P flips the same column of R and
Q), so the params and momentum are sign-free and final_state Q is defined up to the sign of each column.
final_state: momentum (M) and Q per matrix; exp_avg, exp_avg_sq per vector."""


def dion_rank(m, n, frac, mult):
    r = frac * min(m, n)
    r = mult * math.ceil(r / mult)
    return max(1, min(r, m, n))


def run(hp, names, shapes, init, grads, probes, dt):
    f = lambda x: dt(x)  # noqa: E731  scalar in the run's dtype
    params = {n: np.asarray(init[n], dtype=dt).reshape(shapes[n]).copy() for n in names}
    state = {}
    traj = []
    lr, wd, mu, eps = hp["lr"], hp["weight_decay"], hp["mu"], hp["epsilon"]
    b1, b2 = hp["betas"]
    for t0, g_t in enumerate(grads):
        t = t0 + 1
        for n in names:
            x = params[n]
            g = np.asarray(g_t[n], dtype=dt).reshape(shapes[n])
            if x.ndim == 2:
                m_, n_ = x.shape
                tr = m_ < n_
                a, k = (n_, m_) if tr else (m_, n_)
                r = dion_rank(m_, n_, hp["rank_fraction"], hp["rank_multiple_of"])
                if n not in state:
                    q0 = np.asarray(probes[n], dtype=np.float32).ravel()[: k * r].astype(dt).reshape(k, r)
                    state[n] = {"momentum": np.zeros_like(x), "Q": q0}
                st = state[n]
                b = st["momentum"] + g
                bp = b.T if tr else b
                if np.all(b == 0):
                    p = np.zeros((a, r), dtype=dt)
                    rr = st["Q"]
                else:
                    qc = st["Q"]
                    for _ in range(hp["power_iters"]):
                        p = bp @ qc
                        p, _ = np.linalg.qr(p, mode="reduced")
                        assert p.dtype == dt
                        qc = bp.T @ p
                    rr = qc
                fb = p @ rr.T
                st["momentum"] = b - f(1 - mu) * (fb.T if tr else fb)
                st["Q"] = rr / (np.sqrt((rr * rr).sum(axis=0, keepdims=True)) + f(eps))
                x = x * f(1 - lr * wd)
                u = p @ st["Q"].T
                x = x - f(lr * math.sqrt(m_ / n_)) * (u.T if tr else u)
            else:
                if n not in state:
                    state[n] = {"exp_avg": np.zeros_like(x), "exp_avg_sq": np.zeros_like(x)}
                st = state[n]
                x = x * f(1 - lr * wd)
                st["exp_avg"] = st["exp_avg"] + f(1 - b1) * (g - st["exp_avg"])
                st["exp_avg_sq"] = f(b2) * st["exp_avg_sq"] + f(1 - b2) * g * g
                denom = np.sqrt(st["exp_avg_sq"]) / f(math.sqrt(1 - b2**t)) + f(eps)
                x = x - f(lr / (1 - b1**t)) * st["exp_avg"] / denom
            assert x.dtype == dt
            params[n] = x
        traj.append({n: params[n].copy() for n in names})
    return traj, state


def official(hp, names, shapes, init, grads, probes):
    """The official single-device code path (microsoft/dion dion_reference.Dion, qr_method="qr", float32) on the same
    inputs, with torch.randn (its Q initialisation) replaced by the same probes. A cross-check only: it computes its
    scalars (lr, mu, weight decay, bias corrections) as float32 tensors."""
    import torch

    root = C.thirdparty("microsoft+dion")
    pkg = types.ModuleType("dion")
    pkg.__path__ = [os.path.join(root, "dion")]  # skip dion/__init__.py (it imports the triton kernels)
    sys.modules["dion"] = pkg
    # run eagerly: its @torch.compile(...) decorators (some fullgraph=True) become the identity while it is imported
    orig_compile = torch.compile
    torch.compile = lambda f=None, **kw: f if callable(f) else (lambda g: g)
    try:
        ref = importlib.import_module("dion.dion_reference")
    finally:
        torch.compile = orig_compile
    mats = [n for n in names if len(shapes[n]) == 2]
    queue = []
    for n in mats:
        m_, n_ = shapes[n]
        k, r = min(m_, n_), dion_rank(m_, n_, hp["rank_fraction"], hp["rank_multiple_of"])
        queue.append(torch.tensor(np.asarray(probes[n]).ravel()[: k * r].reshape(k, r)))

    def make(ps, ns):
        by = dict(zip(ns, ps))
        return ref.Dion([{"params": [by[n] for n in mats]},
                         {"params": [by[n] for n in ns if n not in mats], "algorithm": "adamw"}],
                        rank_fraction=hp["rank_fraction"], rank_multiple_of=hp["rank_multiple_of"], lr=hp["lr"],
                        mu=hp["mu"], betas=hp["betas"], weight_decay=hp["weight_decay"], epsilon=hp["epsilon"],
                        power_iters=hp["power_iters"], qr_method="qr")

    orig = torch.randn
    torch.randn = lambda *a, **k: queue.pop(0).to(k.get("dtype") or torch.float32)
    try:
        traj, _, _ = C.run_torch(make, names, init, grads, torch.float32, patch=False)
    finally:
        torch.randn = orig
    assert not queue, "every matrix drew its Q once"
    return traj


def make_case(name, summary, hp, names, shapes, scales, zero_steps=None, notes=None):
    init = C.make_init(shapes)
    grads = C.make_grads(shapes, scales)
    for n, steps in (zero_steps or {}).items():
        for t in steps:
            grads[t][n] = np.zeros(shapes[n], dtype=np.float32)
    rng = np.random.Generator(np.random.PCG64(2468))
    probes = {n: np.float32(rng.standard_normal(shapes[n])) for n in names if len(shapes[n]) == 2}
    t32, s32 = run(hp, names, shapes, init, grads, probes, np.float32)
    t64, _ = run(hp, names, shapes, init, grads, probes, np.float64)
    cross = C.spread(t32, official(hp, names, shapes, init, grads, probes), 1e-4, 1e-5)
    cross["meaning"] = ("this NumPy float32 run against the official microsoft/dion dion_reference.Dion @" + DION_COMMIT
                        + " (qr_method='qr', float32, same probes; it computes scalars as float32 tensors)")
    tolerance = C.tol(1e-4, 1e-5, "rank-r power iteration with a float32 QR and column normalisation each step; the "
                      "f32-vs-f64 check below is the spread of pure float32 rounding on these inputs")
    final_state = {}
    for n in names:
        final_state[n] = {k: C.tensor_json(v) for k, v in s32[n].items()}
    grad_source = {"kind": "synthetic_modified" if zero_steps else "synthetic", "seed": C.GRAD_SEED,
                   "formula": C.GRAD_FORMULA + (" Then zeroed: " + ", ".join(
                       f"{n} at steps {[t + 1 for t in s]}" for n, s in zero_steps.items()) if zero_steps else ""),
                   "scale": {n: scales[n] for n in names}}
    case = C.base_case(
        name, summary,
        {"library": "numpy", "version": np.__version__,
         "api": "tests/refgen/gen_dion.py run() (this repository; Ahn et al. 2025 Algorithm 1 + official conventions)",
         "code_path": "float32 run; float64 re-run for checks"},
        C.jsonable(hp), SEMANTICS, names, shapes, scales, init, grads, [[hp["lr"]]] * C.STEPS, t32, final_state,
        None, tolerance, C.spread(t32, t64, 1e-4, 1e-5), notes=notes,
        extra={"probes": {n: C.flat32(v) for n, v in probes.items()},
               "rank": {n: dion_rank(*shapes[n], hp["rank_fraction"], hp["rank_multiple_of"])
                        for n in names if len(shapes[n]) == 2}},
        versions={"python": platform.python_version(), "numpy": np.__version__},
        grad_source=grad_source)
    case["checks"]["cross_checks"] = {"official_dion_reference_f32": cross}
    C.write_case(case)


def dion():
    shapes = {"w_16x8": [16, 8], "w_8x16": [8, 16], "w_6x6": [6, 6], "z_4x4": [4, 4], "b_8": [8], "s_1": [1]}
    scales = {**C.SCALES, "w_6x6": 0.5, "z_4x4": 2.0}
    hp = dict(lr=0.02, mu=0.95, betas=(0.9, 0.95), weight_decay=0.01, rank_fraction=0.3, rank_multiple_of=2,
              epsilon=1e-8, power_iters=1)
    make_case("dion", "Dion (rank_fraction 0.3 rounded to multiples of 2: r = 4, 4, 2, 2): low-rank power iteration "
              "with QR and error feedback; a wide matrix (transposed); a matrix with zero gradients at steps 1-2 "
              "(all-zero B); AdamW for vectors.", hp, list(shapes), shapes, scales, zero_steps={"z_4x4": [0, 1]},
              notes="z_4x4 has all-zero gradients at steps 1 and 2, so B = 0 there: no update, M stays 0, Q is "
                    "column-normalised; from step 3 on it is a regular parameter.")


def dion_full():
    names = ["w_16x8", "w_8x16", "b_8", "s_1"]
    hp = dict(lr=0.01, mu=0.9, betas=(0.9, 0.95), weight_decay=0.0, rank_fraction=1.0, rank_multiple_of=1,
              epsilon=1e-8, power_iters=2)
    make_case("dion_full", "Dion at full rank (r = min(m, n) = 8) with two power iterations per step and no weight "
              "decay, on the shared four parameters (dfdx CaseModel).", hp, names, C.SHAPES, C.SCALES)


if __name__ == "__main__":
    which = sys.argv[1:] or ["dion", "dion_full"]
    for w in which:
        globals()[w]()

"""Shared helpers for the reference-trajectory generators (format_version 1, see tests/fixtures/README.md).

Inputs are the same as in the shared reference set (shared/refs/cases): parameters
`0.5 * N(0, 1)` from numpy PCG64 seeded with `[1234, crc32(name)]`, gradients
`scale[name] * (0.5 * base + noise_t)` from PCG64 seeded with `[5678, crc32(name)]` (base drawn
first, then one noise draw per step), rounded to float32. `make_init`/`make_grads` reproduce the
existing files bit for bit (checked against adamw.json).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import math
import os
import platform
import sys
import zlib

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")

SHAPES = {"w_16x8": [16, 8], "w_8x16": [8, 16], "b_8": [8], "s_1": [1]}
SCALES = {"w_16x8": 1.0, "w_8x16": 0.3, "b_8": 3.0, "s_1": 0.01}
INIT_SEED = 1234
GRAD_SEED = 5678
STEPS = 20

GRAD_FORMULA = (
    "g_t = scale[name] * (0.5 * base + noise_t), base and noise_t standard normal (numpy PCG64 seeded with "
    "[seed, crc32(name)]; base drawn first, then one noise draw per step), rounded to float32. Stored explicitly "
    "in 'grads'."
)
F64_MEANING = (
    "same reference code run in float64 on the same inputs (grads cast from the f32 values); this is the size of "
    "f32 rounding effects the comparison tolerance has to absorb"
)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def _rng(seed, name):
    return np.random.Generator(np.random.PCG64([seed, zlib.crc32(name.encode())]))


def make_init(shapes, seed=INIT_SEED):
    """Initial parameters: 0.5 * N(0,1), f32, per name."""
    return {n: np.float32(0.5 * _rng(seed, n).standard_normal(s)) for n, s in shapes.items()}


def make_grads(shapes, scales, steps=STEPS, seed=GRAD_SEED):
    """grads[t][name] as float32 arrays."""
    out = [dict() for _ in range(steps)]
    for n, s in shapes.items():
        r = _rng(seed, n)
        base = r.standard_normal(s)
        for t in range(steps):
            out[t][n] = np.float32(scales[n] * (0.5 * base + r.standard_normal(s)))
    return out


# ---------------------------------------------------------------- number formatting

def fnum(x):
    """One float32 value as the exact decimal of its binary value; non-finite as strings."""
    return dnum(np.float32(x))


def dnum(x):
    """One float64 value (shortest repr); non-finite as strings."""
    v = float(x)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def to_np(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().to(torch.float64).numpy() if t.dtype == torch.bfloat16 else t.detach().cpu().numpy()
    return np.asarray(t)


def flat32(a):
    return [fnum(v) for v in np.asarray(to_np(a), dtype=np.float64).ravel().astype(np.float32)]


def flat64(a):
    return [dnum(v) for v in np.asarray(to_np(a), dtype=np.float64).ravel()]


def tensor_json(t, dtype="float32"):
    a = to_np(t)
    data = flat32(a) if dtype == "float32" else flat64(a)
    return {"shape": list(np.shape(a)), "data": data, "dtype": dtype}


def jsonable(v):
    """Hyper-parameter / group values to JSON (tensors -> numbers, tuples -> lists, callables -> repr)."""
    if isinstance(v, torch.Tensor):
        return jsonable(v.item()) if v.numel() == 1 else tensor_json(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, float):
        return dnum(v)
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, (np.floating,)):
        return dnum(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, torch.dtype):
        return str(v)
    return repr(v)


# ---------------------------------------------------------------- JSON writer (style of the shared files)

def _dump(v, ind, lvl):
    pad = " " * (ind * (lvl + 1))
    end = " " * (ind * lvl)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {_dump(x, ind, lvl + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(v, list):
        if all(not isinstance(x, (dict, list)) for x in v):
            return "[" + ",".join(json.dumps(x) for x in v) + "]"
        if not v:
            return "[]"
        items = [f"{pad}{_dump(x, ind, lvl + 1)}" for x in v]
        return "[\n" + ",\n".join(items) + "\n" + end + "]"
    return json.dumps(v)


def write_case(case):
    path = os.path.join(FIXTURES, case["case"] + ".json")
    txt = _dump(case, 1, 0) + "\n"
    json.loads(txt)  # validity
    with open(path, "w") as f:
        f.write(txt)
    print(f"wrote {path} ({len(txt) // 1024} KiB)")
    return path


# ---------------------------------------------------------------- versions

def _ver(pkg):
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def library_versions(**extra):
    out = {"python": platform.python_version()}
    for pkg in ["torch", "numpy", "jax", "jaxlib", "optax", "pytorch_optimizer", "prodigyopt", "adam-mini"]:
        v = _ver(pkg)
        if v is not None:
            out[pkg] = v
    out.update(extra)
    return out


# ---------------------------------------------------------------- running torch optimizers

@contextlib.contextmanager
def precision_patch(dtype):
    """Run third-party code in `dtype` without editing it.

    `Tensor.bfloat16()` (Newton-Schulz casts in Keller-style code) becomes a no-op, so the iteration runs in the
    parameter dtype; in a float64 run `Tensor.float()` also becomes a no-op (code that casts to float32 for
    eigh/solves would otherwise silently run those in float32). Restored on exit.
    """
    orig_bf16, orig_float = torch.Tensor.bfloat16, torch.Tensor.float
    torch.Tensor.bfloat16 = lambda self, *a, **k: self
    if dtype == torch.float64:
        torch.Tensor.float = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.bfloat16, torch.Tensor.float = orig_bf16, orig_float


def run_torch(make_opt, names, init, grads, dtype, steps=STEPS, patch=True, hook=None):
    """Teacher-forced run. make_opt(params: list[Parameter], names) -> optimizer.

    Returns (trajectory: list of {name: np.ndarray}, optimizer, params). `hook(t, opt, params)` runs after step t+1.
    """
    params = [torch.nn.Parameter(torch.tensor(np.asarray(init[n]), dtype=dtype)) for n in names]
    opt = make_opt(params, names)
    traj = []
    ctx = precision_patch(dtype) if patch else contextlib.nullcontext()
    with ctx:
        for t in range(steps):
            for p, n in zip(params, names):
                p.grad = torch.tensor(np.asarray(grads[t][n]), dtype=dtype).reshape(p.shape).clone()
            opt.step()
            traj.append({n: p.detach().clone().numpy().copy() for n, p in zip(names, params)})
            if hook is not None:
                hook(t, opt, params)
    return traj, opt, params


def state_json(opt, params, names, skip=()):
    out = {}
    for p, n in zip(params, names):
        st = {}
        for k, v in opt.state[p].items():
            if k in skip:
                continue
            if isinstance(v, torch.Tensor):
                st[k] = tensor_json(v, "float32" if v.dtype != torch.float64 else "float64")
            elif isinstance(v, (list, tuple)) and v and all(isinstance(x, torch.Tensor) or x is None for x in v):
                st[k] = [None if x is None else tensor_json(x) for x in v]
            elif isinstance(v, (int, float, bool)):
                st[k] = jsonable(v)
        out[n] = st
    return out


def groups_json(opt):
    return [{k: jsonable(v) for k, v in g.items() if k != "params"} for g in opt.param_groups]


def spread(traj32, traj64, rtol, atol, rel_floor=1e-3):
    """f32 vs f64 re-run of the same reference, over all steps and params."""
    max_abs = max_rel = ratio = 0.0
    for a_t, b_t in zip(traj32, traj64):
        for n in a_t:
            a = np.asarray(a_t[n], dtype=np.float64)
            b = np.asarray(b_t[n], dtype=np.float64)
            fin = np.isfinite(a) & np.isfinite(b)
            if not np.array_equal(np.isfinite(a), np.isfinite(b)) or not np.array_equal(a[~fin], b[~fin]):
                raise AssertionError(f"non-finite pattern differs between f32 and f64 for {n}")
            d = np.abs(a[fin] - b[fin])
            if d.size == 0:
                continue
            max_abs = max(max_abs, float(d.max()))
            big = np.abs(b[fin]) > rel_floor
            if big.any():
                max_rel = max(max_rel, float((d[big] / np.abs(b[fin][big])).max()))
            ratio = max(ratio, float((d / (atol + rtol * np.abs(b[fin]))).max()))
    return {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "rel_floor": rel_floor,
        "ratio_to_tolerance": ratio,
        "tolerance_used": {"rtol": rtol, "atol": atol},
        "meaning": F64_MEANING,
    }


def max_change(init, traj):
    m = 0.0
    for t in traj:
        for n, v in t.items():
            a = np.asarray(v, dtype=np.float64)
            b = np.asarray(init[n], dtype=np.float64).reshape(a.shape)
            fin = np.isfinite(a) & np.isfinite(b)
            if fin.any():
                m = max(m, float(np.abs(a[fin] - b[fin]).max()))
    return m


def base_case(name, summary, reference, hyperparameters, semantics, names, shapes, scales, init, grads, lr, traj,
              final_state, final_param_groups, tolerance, check, notes=None, extra=None, versions=None,
              grad_source=None, sanity_extra=None):
    case = {
        "format_version": 1,
        "case": name,
        "summary": summary,
        "reference": reference,
        "hyperparameters": hyperparameters,
        "semantics": semantics,
    }
    if notes:
        case["notes"] = notes
    case.update({
        "dtype": "float32",
        "steps": len(traj),
        "param_order": list(names),
        "params_init": {n: {"shape": list(shapes[n]), "data": flat32(init[n])} for n in names},
        "grad_source": grad_source or {
            "kind": "synthetic",
            "seed": GRAD_SEED,
            "formula": GRAD_FORMULA,
            "scale": {n: scales[n] for n in names},
        },
        "grads": [{n: flat32(g[n]) for n in names} for g in grads[: len(traj)]],
        "lr": lr,
        "params": [{n: flat32(t[n]) for n in names} for t in traj],
        "final_state": final_state,
    })
    if final_param_groups is not None:
        case["final_param_groups"] = final_param_groups
    if extra:
        case["extra"] = extra
    case["tolerance"] = tolerance
    sanity = {"max_abs_param_change": max_change(init, traj)}
    if sanity_extra:
        sanity.update(sanity_extra)
    case["sanity"] = sanity
    case["checks"] = {"f32_vs_f64_same_reference": check}
    case["library_versions"] = versions or library_versions()
    return case


def tol(rtol, atol, why):
    return {
        "rtol": rtol,
        "atol": atol,
        "rule": "|rust - ref| <= atol + rtol * |ref| elementwise, every step's params (and final_state tensors)",
        "why": why,
    }


def thirdparty(repo_dir_name, commit=None):
    """Path of a third-party snapshot exported by tests/refgen/fetch_thirdparty.sh (never committed)."""
    base = os.environ.get("REFGEN_THIRDPARTY", os.path.join(os.path.expanduser("~"), "refgen-thirdparty"))
    path = os.path.join(base, repo_dir_name)
    if not os.path.isdir(path):
        sys.exit(f"missing third-party snapshot {path}: run tests/refgen/fetch_thirdparty.sh (see README)")
    return path

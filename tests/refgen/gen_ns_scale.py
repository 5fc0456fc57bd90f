"""newton_schulz_scale: Newton-Schulz with the scale-invariant normalisation X / ||X||_F (eps = 0) on inputs of
tiny and huge norm (issue 10, item 4).

The reference is Keller Jordan's quintic iteration (github KellerJordan/Muon muon.py @857d1ad,
zeropower_via_newtonschulz5) transcribed in numpy WITHOUT its '+ 1e-7' on the norm, in float64 and in float32; the
float64 transcription is cross-checked against Keller's unmodified function (bfloat16 cast patched out, float64) run on
the input divided by its norm first, where his '+ 1e-7' only shrinks by 1e-7 (checks.keller_f64_on_unit_input_max_abs_diff).
Inputs: tiny_8x4 of newton_schulz.json (entries ~1e-20), g_16x8_tiny_1e-6 of newton_schulz_coeffs.json, and
newton_schulz.json's g_16x8 / g_8x16 scaled by 1e-30, 1e-35 and 1e30 (rounded to float32).
"""

import importlib.util
import json
import os

import numpy as np
import torch

import common as C

COEFFS = (3.4445, -4.7750, 2.0315)
STEPS = 5


def ns_unit(g, dtype):
    """X = G^T if rows > cols; X = X / ||X||_F (norm in float64, scale-safe); 5 quintic steps in `dtype`."""
    g64 = np.asarray(g, dtype=np.float64)
    a = np.abs(g64).max()
    if a == 0.0:
        return np.zeros_like(g64)
    unit = (g64 / a) / np.sqrt(((g64 / a) ** 2).sum())
    x = unit.astype(dtype)
    t = x.shape[0] > x.shape[1]
    if t:
        x = x.T
    ca, cb, cc = (dtype(c) for c in COEFFS)
    for _ in range(STEPS):
        A = x @ x.T
        B = cb * A + cc * (A @ A)
        x = ca * x + B @ x
    return (x.T if t else x).astype(np.float64)


def keller():
    path = os.path.join(C.thirdparty("KellerJordan+Muon"), "muon.py")
    spec = importlib.util.spec_from_file_location("keller_muon", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load(name):
    with open(os.path.join(C.FIXTURES, name + ".json")) as f:
        return json.load(f)


def main():
    ns = load("newton_schulz")["matrices"]
    co = load("newton_schulz_coeffs")["matrices"]

    def arr(m):
        return np.asarray(m["input"]["data"], dtype=np.float32).reshape(m["input"]["shape"])

    inputs = {"tiny_8x4": arr(ns["tiny_8x4"]), "g_16x8_tiny_1e-6": arr(co["g_16x8_tiny_1e-6"])}
    for base in ["g_16x8", "g_8x16"]:
        for tag, s in [("1e-30", 1e-30), ("1e-35", 1e-35), ("1e30", 1e30)]:
            inputs[f"{base}_x{tag}"] = np.float32(arr(ns[base]).astype(np.float64) * s)
    K = keller()
    out, worst, cross = {}, 0.0, 0.0
    for name, g in inputs.items():
        o64 = ns_unit(g, np.float64)
        o32 = ns_unit(g, np.float32)
        g64 = g.astype(np.float64)
        unit = g64 / np.linalg.norm(g64 / np.abs(g64).max()) / np.abs(g64).max()
        with C.precision_patch(torch.float64):
            k64 = K.zeropower_via_newtonschulz5(torch.tensor(unit, dtype=torch.float64), steps=STEPS).numpy()
        d = float(np.abs(o32 - o64).max())
        c = float(np.abs(k64 - o64).max())
        worst, cross = max(worst, d), max(cross, c)
        out[name] = {"input": {"shape": list(g.shape), "data": C.flat32(g)},
                     "frobenius_norm_f64": C.dnum(float(np.abs(g64).max() * np.sqrt(((g64 / np.abs(g64).max()) ** 2).sum()))),
                     "ns_unit_f32": C.flat32(o32), "ns_unit_f64": C.flat32(o64),
                     "f32_vs_f64_max_abs_diff": d, "keller_f64_on_unit_input_max_abs_diff": c}
    case = {
        "format_version": 1,
        "case": "newton_schulz_scale",
        "summary": "Newton-Schulz (Keller's quintic, 5 steps) with the scale-invariant normalisation X / ||X||_F on "
                   "inputs of norm 1e-35 .. 1e31, f32 and f64.",
        "reference": {"library": "numpy transcription of KellerJordan/Muon zeropower_via_newtonschulz5 without '+1e-7'",
                      "version": "muon 857d1ad; numpy " + np.__version__,
                      "api": "gen_ns_scale.ns_unit(G, dtype)"},
        "hyperparameters": {"coefficients": list(COEFFS), "steps": STEPS, "eps": 0.0},
        "semantics": """X = G (float32 input); if rows > cols: X = X^T
X = X / ||X||_F computed in float64 as (X / a) / sqrt(sum((X / a)^2)), a = max|X| (no under/overflow), then cast to the
compute dtype; 5 x { A = X X^T; B = b A + c (A A); X = a X + B X }; transpose back. (a,b,c) = (3.4445, -4.7750, 2.0315).
ns_unit_f32: iteration in float32; ns_unit_f64: in float64 (rounded to f32 for storage). With eps = 0 the result does
not depend on the input's scale: every g_*_x<s> equals the unscaled matrix's result up to rounding, and tiny_8x4
(norm ~6e-20) is orthogonalized instead of mapped to ~0 as Keller's '+1e-7' does (newton_schulz.json).""",
        "dtype": "float32",
        "matrices": out,
        "tolerance": C.tol(1e-4, 1e-5, "compare ns_unit_f32; f32_vs_f64_max_abs_diff shows the attainable accuracy"),
        "checks": {"f32_vs_f64_max_abs_diff_worst": worst, "keller_f64_on_unit_input_max_abs_diff_worst": cross},
        "library_versions": C.library_versions(keller_muon_commit="857d1adc159e098212f828d927460782d3da59e9"),
    }
    C.write_case(case)


if __name__ == "__main__":
    main()

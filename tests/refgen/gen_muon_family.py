"""Muon family: normuon, muon_polar_express, adamuon, newton_schulz_coeffs.

Third-party code (not committed; see fetch_thirdparty.sh):
  zichongli5/NorMuon   @ d45c9a4280d758e2cf0b2b8333765d040e953937  (normuon.py, SingleDeviceNorMuon)
  KellerJordan/Muon    @ 857d1adc159e098212f828d927460782d3da59e9  (muon.py, zeropower_via_newtonschulz5)
PyPI: pytorch_optimizer 4.1.0 (Muon, NorMuon, AdaMuon, zero_power_via_newton_schulz_5).

The authors' files cast to bfloat16 for Newton-Schulz; `common.precision_patch` turns `Tensor.bfloat16()` into a
no-op so the unmodified code runs in the parameter dtype (float32, or float64 for the spread check).
pytorch_optimizer's zero_power_via_newton_schulz_5 takes a `dtype` argument (default bfloat16): we rebind the module
attribute to a wrapper that passes dtype = input dtype.
"""

import importlib.util
import math
import sys

import numpy as np
import torch

import common as C
import pytorch_optimizer.optimizer.muon.adamuon as po_adamuon
import pytorch_optimizer.optimizer.muon.base as po_base
import pytorch_optimizer.optimizer.muon.muon as po_muon
import pytorch_optimizer.optimizer.muon.normuon as po_normuon
import pytorch_optimizer.optimizer.utils.matrix as po_matrix
from pytorch_optimizer import AdaMuon, Muon, NorMuon

NAMES = ["w_16x8", "w_8x16"]
SHAPES = {n: C.SHAPES[n] for n in NAMES}
SCALES = {n: C.SCALES[n] for n in NAMES}
INIT = C.make_init(SHAPES)
GRADS = C.make_grads(SHAPES, SCALES)

_orig_ns = po_matrix.zero_power_via_newton_schulz_5


def _ns_param_dtype(g, *a, **k):
    k["dtype"] = g.dtype
    return _orig_ns(g, *a, **k)


# Muon's per-parameter path calls it from muon/base.py (MuonBase._orthogonalize): without po_base here
# muon_polar_express ran Newton-Schulz in bfloat16 (fixed; the file is regenerated).
for _m in (po_base, po_muon, po_normuon, po_adamuon):
    _m.zero_power_via_newton_schulz_5 = _ns_param_dtype


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NORMUON = load_module("normuon_authors", C.thirdparty("zichongli5+NorMuon") + "/normuon.py")
KELLER = load_module("muon_keller", C.thirdparty("KellerJordan+Muon") + "/muon.py")

VERSIONS = C.library_versions(
    normuon_zichongli5_commit="d45c9a4280d758e2cf0b2b8333765d040e953937",
    muon_kellerjordan_commit="857d1adc159e098212f828d927460782d3da59e9",
)
MUON_TOL = C.tol(1e-4, 1e-5, "Newton-Schulz: 5 rounds of 3 matmuls re-normalised each step; f32 rounding in the "
                 "matmul sums is order dependent and amplified for small singular values. See the f32-vs-f64 check.")


def both(make):
    t32, o32, p32 = C.run_torch(make, NAMES, INIT, GRADS, torch.float32)
    t64, _, _ = C.run_torch(make, NAMES, INIT, GRADS, torch.float64)
    return t32, o32, p32, t64


def muon_case(name, summary, api, code_path, hp, sem, runs, **kw):
    """C.base_case for a case of this file: a torch reference with its api and code path, the shared matrices and
    gradients, a constant lr, MUON_TOL, and the float32 run (with its float64 spread) of `runs = both(make)`."""
    t32, o32, p32, t64 = runs
    return C.base_case(name, summary,
                       {"library": "torch", "version": torch.__version__, "api": api, "code_path": code_path},
                       hp, sem, NAMES, SHAPES, SCALES, INIT, GRADS, [[hp["lr"]]] * C.STEPS, t32,
                       C.state_json(o32, p32, NAMES), C.groups_json(o32), MUON_TOL, C.spread(t32, t64, 1e-4, 1e-5),
                       **kw)


def cross(traj_a, traj_b):
    return max(float(np.abs(a[n].astype(np.float64) - b[n].astype(np.float64)).max())
               for a, b in zip(traj_a, traj_b) for n in a)


# ---------------------------------------------------------------- NorMuon
def normuon():
    hp = dict(lr=0.02, weight_decay=0.01, momentum=0.95, beta2=0.95)
    t32, o32, p32, t64 = both(lambda ps, ns: NORMUON.SingleDeviceNorMuon(ps, **hp))
    # cross-check: pytorch_optimizer.NorMuon, per-parameter path, NS in f32
    tpo, _, _ = C.run_torch(lambda ps, ns: NorMuon([dict(params=ps, use_muon=True, **hp)], foreach=False),
                            NAMES, INIT, GRADS, torch.float32)
    sem = """NorMuon, authors' SingleDeviceNorMuon (github zichongli5/NorMuon normuon.py @d45c9a4), per step, per matrix param p (m x n):
  g = grad
  buf = lerp(buf, g, 1 - momentum)                      # momentum*buf + (1-momentum)*g   (state momentum_buffer, shape of p)
  u = lerp(g, buf, momentum)                            # Nesterov (the only mode); NOTE the code does this IN PLACE on p.grad
  O = NS5(u): X = u; if m > n: X = X^T; X = X / (||X||_F + 1e-7);
        5 x { A = X X^T; B = b*A + c*(A A); X = a*X + B X }, (a,b,c) = (3.4445, -4.7750, 2.0315); if m > n: X = X^T
        (Keller's kernel; the authors cast X to bfloat16 -- this reference runs it in float32, see notes)
  vnorm = ||O||_F
  v_mean = mean(O*O, over the last dim, keepdim)        # one value per ROW of the (m x n) update: shape [m, 1]
  v = lerp(v, v_mean, 1 - beta2)                        # state second_momentum_buffer [m, 1], zeros at init; NO bias correction
  O = O * (1 / (sqrt(v) + 1e-10))                       # row-wise normalisation, eps 1e-10 OUTSIDE the sqrt
  O = O * (vnorm / (||O||_F + 1e-10))                   # restore the Frobenius norm of the orthogonalised update
  O = O * sqrt(max(1, m / n))                           # Keller's shape factor (on the update, not on lr)
  if weight_decay != 0: p = p * (1 - lr * weight_decay) # decoupled, AFTER computing the update, before applying it
  p = p - lr * O
Step 1: v = (1-beta2) * v_mean, so the row scaling is 1/sqrt((1-beta2) v_mean) (no first-step special case).
State: momentum_buffer [m, n], second_momentum_buffer [m, 1]."""
    case = muon_case(
        "normuon", "NorMuon (Muon + row-wise second moment of the orthogonalised update, norm-preserving rescale), "
        "authors' code with Newton-Schulz in float32.",
        "zichongli5/NorMuon SingleDeviceNorMuon(params, lr=0.02, weight_decay=0.01, momentum=0.95, beta2=0.95)",
        "authors' normuon.py @d45c9a4 unmodified, imported from the fetched snapshot; Tensor.bfloat16() "
        "patched to a no-op during step() so Newton-Schulz runs in float32",
        hp, sem, (t32, o32, p32, t64),
        notes="Only matrices (w_16x8, w_8x16). The authors' kernel runs Newton-Schulz in bfloat16; the float32 variant "
              "is the tight conformance target (bf16 would differ by ~1e-2 relative).",
        versions=VERSIONS)
    case["checks"]["cross_checks"] = {
        "pytorch_optimizer_NorMuon_f32": {
            "what": "pytorch_optimizer 4.1.0 NorMuon([dict(params, use_muon=True, lr=0.02, weight_decay=0.01, "
                    "momentum=0.95, beta2=0.95)], foreach=False), update_scale='preserve_norm', eps=1e-10, NS in f32",
            "max_abs_diff_params": cross(t32, tpo),
            "note": "same algorithm; pytorch_optimizer applies the decoupled decay BEFORE the momentum update (same "
                    "result: decay only touches p) and the sqrt(max(1,m/n)) factor through lr, and clamps the NS "
                    "norm (max(||X||,1e-7)) instead of adding 1e-7"}}
    C.write_case(case)


# ---------------------------------------------------------------- Muon + Polar Express + Moonlight scale
PE_PAPER_RAW = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]
PE_PAPER = [(a / 1.01, b / 1.01 ** 3, c / 1.01 ** 5) for (a, b, c) in PE_PAPER_RAW[:-1]] + [PE_PAPER_RAW[-1]]
KELLER_TRIPLE = (3.4445, -4.7750, 2.0315)


def muon_polar_express():
    hp = dict(lr=0.02, momentum=0.95, weight_decay=0.01, nesterov=True, ns_steps=5, ns_coeffs="polar_express",
              use_adjusted_lr=True)
    coeffs = po_matrix.get_newton_schulz_weights("polar_express")
    make = lambda ps, ns: Muon([dict(params=ps, use_muon=True, **hp)], foreach=False)
    t32, o32, p32, t64 = both(make)
    sem = f"""pytorch_optimizer 4.1.0 Muon, per-parameter path (foreach=False), use_muon=True group, per step, per matrix p (m x n):
  g = grad
  p = p * (1 - lr * weight_decay)                       # decoupled decay FIRST, with the UNADJUSTED lr
  buf = lerp(buf, g, 1 - momentum)                      # state momentum_buffer
  u = lerp(g, buf, momentum)   (nesterov=True; in place on p.grad)
  O = NS(u):  X = u (f32 here); if m > n: X = X^T
              X = X / max(||X||_F, 1e-7)                # clamp, NOT '+eps'; no extra safety factor on the norm
              for i in 0..ns_steps-1: (a,b,c) = coeffs[min(i, len(coeffs)-1)]
                  A = X X^T ; B = b*A + c*(A A) ; X = a*X + B X     (torch.addmm(A, A, A, beta=b, alpha=c); addmm(X, B, X, beta=a))
              if m > n: X = X^T
  adjusted_lr = lr * 0.2 * sqrt(max(m, n))              # Moonlight RMS matching (use_adjusted_lr=True): 0.2*sqrt(max(16,8)) = 0.8
  p = p - adjusted_lr * O
coeffs = pytorch_optimizer NS_COEFFICIENTS['polar_express'] (8 tuples, 'safety 1e-2'; only the first ns_steps=5 are used):
  {coeffs}
These are the authors' optimal_composition(l=1e-3, num_iters=8, degree=5, safety_factor_eps=1e-2, cushion=0.02)
output (NoahAmsel/PolarExpress polar_express.py), i.e. the safety factor is already folded into the coefficients.
They differ from the paper's printed Algorithm 1 list (stored in extra.polar_express_paper_algorithm1, which also divides
the input by 1.01*||X||_F + 1e-7); see newton_schulz_coeffs for both variants on fixed matrices.
State: momentum_buffer [m, n]. Group counter 'step' in the param group (unused by the update)."""
    case = muon_case(
        "muon_polar_express", "Muon with Polar Express per-iteration Newton-Schulz coefficients and the Moonlight "
        "0.2*sqrt(max(m,n)) RMS-matching lr scale, Newton-Schulz in float32.",
        "pytorch_optimizer.Muon([dict(params, use_muon=True, lr=0.02, momentum=0.95, weight_decay=0.01, "
        "nesterov=True, ns_steps=5, ns_coeffs='polar_express', use_adjusted_lr=True)], foreach=False)",
        "pytorch_optimizer 4.1.0 per-parameter path; zero_power_via_newton_schulz_5 called with "
        "dtype=param dtype (float32) instead of its bfloat16 default",
        hp, sem, (t32, o32, p32, t64),
        extra={"polar_express_coeffs_used": [list(c) for c in coeffs],
               "polar_express_coeffs_applied_per_iteration": [list(coeffs[min(i, len(coeffs) - 1)]) for i in range(5)],
               "polar_express_paper_algorithm1": {"raw": [list(c) for c in PE_PAPER_RAW],
                                                  "after_safety_1.01": [list(c) for c in PE_PAPER],
                                                  "normalisation": "X / (||X||_F * 1.01 + 1e-7)"},
               "keller_triple": list(KELLER_TRIPLE),
               "moonlight_scale": {n: 0.2 * math.sqrt(max(SHAPES[n])) for n in NAMES}},
        versions=VERSIONS)
    C.write_case(case)


# ---------------------------------------------------------------- AdaMuon
def adamuon():
    hp = dict(lr=0.02, betas=(0.9, 0.95), weight_decay=0.01, ns_steps=5, ns_coeffs="original", use_adjusted_lr=True,
              eps=1e-10)
    make = lambda ps, ns: AdaMuon([dict(params=ps, use_muon=True, **hp)], foreach=False)
    t32, o32, p32, t64 = both(make)
    sem = """pytorch_optimizer 4.1.0 AdaMuon (Si et al. 2025, 'AdaMuon: Adaptive Muon Optimizer'), per-parameter path, per step, per matrix p (m x n):
  g = grad
  p = p * (1 - lr * weight_decay)                       # decoupled decay first, unadjusted lr
  m_ = lerp(m_, g, 1 - beta1)                           # state 'm' [m, n]; NO Nesterov, no bias correction of m
  O = NS5(m_) with Keller's triple (3.4445, -4.7750, 2.0315), 5 steps: X = m_ (transposed if rows > cols),
        X = X / max(||X||_F, 1e-7), 5 x { A = X X^T; X = a*X + (b*A + c*A A) X }, transposed back   (float32 here)
  O = O.flatten()                                       # state 'v' is FLAT [m*n]
  v = beta2 * v + (1 - beta2) * O*O                     # element-wise second moment OF THE ORTHOGONALISED update
  O = O / (sqrt(v / bc2) + eps)                         # bc2 = 1 - beta2**t (python float, t = group step); eps OUTSIDE sqrt
  O = O.reshape(m, n)
  O = O * (sqrt(min(m, n)) / (||O||_F + eps))           # RMS rescale: ||O||_F becomes sqrt(min(m, n)), eps added to the norm
  p = p - lr * 0.2 * sqrt(max(m, n)) * O                # use_adjusted_lr=True (Moonlight factor; AdaMuon's default)
Step 1: v = (1-beta2) O^2 and bc2 = 1-beta2, so O/sqrt(v/bc2) = sign(O) (up to eps) before the rescale.
State: m [m, n], v [m*n]. Counter 'step' in the param group."""
    case = muon_case(
        "adamuon", "AdaMuon: Muon momentum -> Newton-Schulz -> element-wise Adam-style second moment of the "
        "orthogonalised update -> RMS rescale (pytorch_optimizer, NS in float32).",
        "pytorch_optimizer.AdaMuon([dict(params, use_muon=True, lr=0.02, betas=(0.9, 0.95), weight_decay=0.01, "
        "ns_steps=5, ns_coeffs='original', use_adjusted_lr=True, eps=1e-10)], foreach=False)",
        "pytorch_optimizer 4.1.0 per-parameter path; zero_power_via_newton_schulz_5 with dtype=float32",
        {**hp, "betas": list(hp["betas"])}, sem, (t32, o32, p32, t64),
        notes="The AdaMuon authors' code (github Chongjie-Si/AdaMuon) was not available here; pytorch_optimizer's port "
              "is the reference. Its default use_adjusted_lr=True (Moonlight 0.2*sqrt(max(m,n))) is kept.",
        versions=VERSIONS)
    C.write_case(case)


# ---------------------------------------------------------------- standalone NS coefficient vectors
def pe_paper_alg1(G, steps):
    """The paper's Algorithm 1 (Amsel et al. 2025), transcribed from the paper text, in G's dtype."""
    X = G.mT if G.size(-2) > G.size(-1) else G
    X = X / (X.norm() * 1.01 + 1e-7)
    hs = PE_PAPER[:steps] + [PE_PAPER[-1]] * max(0, steps - len(PE_PAPER))
    for a, b, c in hs:
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if G.size(-2) > G.size(-1) else X


def newton_schulz_coeffs():
    rng = np.random.Generator(np.random.PCG64([4321, 11]))
    mats = {
        "g_16x8": rng.standard_normal((16, 8)),
        "g_8x16": rng.standard_normal((8, 16)),
        "g_12x12_illcond": (rng.standard_normal((12, 12)) @ np.diag(np.logspace(0, -3, 12)) @
                            np.linalg.qr(rng.standard_normal((12, 12)))[0]),
        "g_32x4_tall": rng.standard_normal((32, 4)),
        "g_3x20_wide": rng.standard_normal((3, 20)),
        "g_16x8_tiny_1e-6": 1e-6 * rng.standard_normal((16, 8)),
    }
    out = {}
    worst = {}
    pe = po_matrix.get_newton_schulz_weights("polar_express")
    for name, m in mats.items():
        g32 = np.float32(m)
        res = {"input": {"shape": list(g32.shape), "data": C.flat32(g32)}}
        fns = {
            "keller5": lambda G: KELLER.zeropower_via_newtonschulz5(G, steps=5),
            "polar_express_po": lambda G: _orig_ns(G, num_steps=5, weights=pe, dtype=G.dtype),
            "polar_express_paper_alg1": lambda G: pe_paper_alg1(G, 5),
        }
        with C.precision_patch(torch.float64):
            for key, fn in fns.items():
                o32 = fn(torch.tensor(g32, dtype=torch.float32)).numpy()
                o64 = fn(torch.tensor(g32, dtype=torch.float64)).numpy()
                res[key + "_f32"] = C.flat32(o32)
                res[key + "_f64"] = C.flat32(o64)
                res[key + "_f32_vs_f64_max_abs_diff"] = float(np.abs(o32.astype(np.float64) - o64).max())
                res[key + "_singular_values_out_f64"] = [float(s) for s in np.linalg.svd(o64, compute_uv=False)]
                worst[key] = max(worst.get(key, 0.0), res[key + "_f32_vs_f64_max_abs_diff"])
        res["singular_values_in"] = [float(s) for s in np.linalg.svd(g32.astype(np.float64), compute_uv=False)]
        out[name] = res
    case = {
        "format_version": 1,
        "case": "newton_schulz_coeffs",
        "summary": "Newton-Schulz orthogonalisation with Keller's fixed triple vs Polar Express per-iteration "
                   "coefficients (two variants), tall/wide/ill-conditioned/tiny-norm inputs, f32 and f64 results.",
        "reference": {"library": "KellerJordan/Muon + pytorch_optimizer + paper Algorithm 1",
                      "version": "muon 857d1ad; pytorch_optimizer " + C._ver("pytorch_optimizer"),
                      "api": "keller5: muon.zeropower_via_newtonschulz5(G, steps=5) (bf16 cast patched out); "
                             "polar_express_po: pytorch_optimizer zero_power_via_newton_schulz_5(G, num_steps=5, "
                             "weights=NS_COEFFICIENTS['polar_express'], dtype=G.dtype); polar_express_paper_alg1: the "
                             "paper's Algorithm 1 transcribed (gen_muon_family.pe_paper_alg1)"},
        "hyperparameters": {"steps": 5, "keller_triple": list(KELLER_TRIPLE),
                            "polar_express_po_coeffs": [list(c) for c in pe],
                            "polar_express_paper_raw": [list(c) for c in PE_PAPER_RAW],
                            "polar_express_paper_after_safety": [list(c) for c in PE_PAPER]},
        "semantics": """All variants: X = G; if rows > cols: X = X^T (work on the wide orientation); normalise; then per iteration i
  A = X X^T ; B = b_i A + c_i (A A) ; X = a_i X + B X ; finally transpose back if it was transposed.
keller5: normalise X / (||X||_F + 1e-7); (a,b,c) = (3.4445, -4.7750, 2.0315) for all 5 iterations.
polar_express_po: normalise X / max(||X||_F, 1e-7) (clamp); (a_i,b_i,c_i) = polar_express_po_coeffs[min(i, 7)], i = 0..4
  (computed with torch.addmm: B = addmm(A, A, A, beta=b, alpha=c), X = addmm(X, B, X, beta=a, alpha=1)).
polar_express_paper_alg1: normalise X / (||X||_F * 1.01 + 1e-7); (a_i,b_i,c_i) = polar_express_paper_after_safety[i]
  (= raw (a/1.01, b/1.01^3, c/1.01^5) for the first 7, the last (1.875,-1.25,0.375) unchanged).
*_f32: computed in float32; *_f64: same code in float64, rounded to f32 for storage. Singular values of the f64 output
show how close each variant gets to an orthogonal factor. The tiny input (1e-6 scale, ||G||_F ~ 1e-5) separates
'+1e-7' (Keller: ~1% shrink of the normalised matrix) from 'clamp(min=1e-7)' (no effect at this size).""",
        "dtype": "float32",
        "matrices": out,
        "tolerance": C.tol(1e-4, 1e-5, "compare *_f32 outputs; *_f32_vs_f64_max_abs_diff shows attainable accuracy"),
        "checks": {"f32_vs_f64_max_abs_diff_worst": worst},
        "library_versions": VERSIONS,
    }
    C.write_case(case)


if __name__ == "__main__":
    which = sys.argv[1:] or ["normuon", "muon_polar_express", "adamuon", "newton_schulz_coeffs"]
    for w in which:
        globals()[w]()

"""Element-wise / block-wise optimizers: cautious_adamw, cautious_lion, mars_adamw, adan, adopt, adam_mini, laprop,
prodigy.

Third-party code (not committed; see fetch_thirdparty.sh):
  kyleliang919/C-Optim   @ 2c0517c4db2e50b56d389ba4803eab1f4b3b8ae3  (c_adamw.py AdamW, c_lion.py Lion)
  AGI-Arena/MARS         @ 4831e28eba863a4e69d7e9474ff8e73bc1b410fe  (MARS/optimizers/mars.py)
  sail-sg/Adan           @ 2c65beaf400775753b155da4082c3819fea689b9  (adan.py)
  iShohei220/adopt       @ 6468572b4b3688a2f056b796b071da540568520e  (src/adopt/adopt.py)
PyPI: pytorch_optimizer 4.1.0 (cross-checks, LaProp), adam-mini 1.1.1 (Adam_mini), prodigyopt 1.1.2 (Prodigy).
"""

import importlib
import importlib.util
import math
import sys
import types

import numpy as np
import torch

import common as C
import pytorch_optimizer as po

NAMES = ["w_16x8", "w_8x16", "b_8", "s_1"]
SHAPES = dict(C.SHAPES)
SCALES = dict(C.SCALES)
INIT = C.make_init(SHAPES)
GRADS = C.make_grads(SHAPES, SCALES)
EW_TOL = C.tol(1e-5, 1e-6, "element-wise update; see the f32-vs-f64 check for how far pure f32 rounding moves it")

COMMITS = {
    "c_optim_kyleliang919_commit": "2c0517c4db2e50b56d389ba4803eab1f4b3b8ae3",
    "mars_agi_arena_commit": "4831e28eba863a4e69d7e9474ff8e73bc1b410fe",
    "adan_sail_sg_commit": "2c65beaf400775753b155da4082c3819fea689b9",
    "adopt_ishohei220_commit": "6468572b4b3688a2f056b796b071da540568520e",
}
VERSIONS = C.library_versions(**COMMITS)


def load_pkg(pkg, path, sub):
    """Import `pkg.sub` from a directory without __init__.py (relative imports work)."""
    if pkg not in sys.modules:
        m = types.ModuleType(pkg)
        m.__path__ = [path]
        sys.modules[pkg] = m
    return importlib.import_module(f"{pkg}.{sub}")


def both(make, names=NAMES, init=INIT, grads=GRADS, **kw):
    t32, o32, p32 = C.run_torch(make, names, init, grads, torch.float32, **kw)
    t64, _, _ = C.run_torch(make, names, init, grads, torch.float64, **kw)
    return t32, o32, p32, t64


def cross(traj_a, traj_b):
    return max(float(np.abs(a[n].astype(np.float64) - b[n].astype(np.float64)).max())
               for a, b in zip(traj_a, traj_b) for n in a)


def ref(api, code_path):
    return {"library": "torch", "version": torch.__version__, "api": api, "code_path": code_path}


def finish(name, summary, reference, hp, sem, t32, o32, p32, t64, lr, tolerance=EW_TOL, notes=None, cross_checks=None,
           names=NAMES, shapes=SHAPES, scales=SCALES, init=INIT, grads=GRADS, extra=None, groups=True, state=None):
    case = C.base_case(name, summary, reference, hp, sem, names, shapes, scales, init, grads, lr, t32,
                       state if state is not None else C.state_json(o32, p32, names),
                       C.groups_json(o32) if groups else None, tolerance,
                       C.spread(t32, t64, tolerance["rtol"], tolerance["atol"]), notes=notes, extra=extra,
                       versions=VERSIONS)
    if cross_checks:
        case["checks"]["cross_checks"] = cross_checks
    C.write_case(case)


# ---------------------------------------------------------------- Cautious AdamW (authors' C-Optim)
def cautious_adamw():
    c_adamw = load_pkg("coptim", C.thirdparty("kyleliang919+C-Optim"), "c_adamw")
    hp = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1, correct_bias=True)
    make = lambda ps, ns: c_adamw.AdamW(ps, **hp, no_deprecation_warning=True, foreach=False)
    t32, o32, p32, t64 = both(make)
    sem = """Cautious AdamW, authors' code (github kyleliang919/C-Optim c_adamw.py @2c0517c, class AdamW, foreach=False path
= the HF-transformers-style AdamW + cautious mask), per step, per param (state step is a python int t):
  t = t + 1
  if weight_decay > 0: p = p + (-lr * weight_decay) * p            # p.add_(p, alpha=-lr*wd): decoupled decay FIRST
  m = beta1 * m + (1 - beta1) * g                                 # mul_(beta1).add_(g, alpha=1-beta1)
  v = beta2 * v + (1 - beta2) * g * g
  denom = sqrt(v) + eps                                           # eps OUTSIDE sqrt and NOT bias-corrected (HF style)
  step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)            # python float64 scalars (correct_bias=True)
  mask = (m * g > 0) as float                                     # agreement of the Adam direction m with the CURRENT grad
  mask = mask / max(mean(mask), 0.001)                            # mask.div_(mask.mean().clamp_(min=0.001)); mean over the whole tensor
  p = p - step_size * (m * mask / denom)
Note the rescale is 1/mean(mask) clamped at 1e-3 (i.e. numel/count, at most 1000x), NOT numel/(count+1) as in the
authors' Lion and in pytorch_optimizer's apply_cautious. Step 1: m = (1-beta1) g so the mask is all ones (unless g = 0).
State: step (int), exp_avg, exp_avg_sq."""
    finish("cautious_adamw", "Cautious AdamW (Liang et al. 2024): Adam update masked where sign(m) != sign(g), "
           "rescaled by 1/max(mean(mask), 1e-3); authors' C-Optim code.",
           ref("C-Optim c_adamw.AdamW(params, lr=0.01, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1, "
               "correct_bias=True, no_deprecation_warning=True, foreach=False)",
               "authors' c_adamw.py @2c0517c, per-parameter (foreach=False) path, imported from the fetched snapshot"),
           {**hp, "betas": list(hp["betas"])}, sem, t32, o32, p32, t64, [[hp["lr"]]] * C.STEPS)


# ---------------------------------------------------------------- Cautious Lion (authors' C-Optim, po cross-check)
def cautious_lion():
    c_lion = load_pkg("coptim", C.thirdparty("kyleliang919+C-Optim"), "c_lion")
    hp = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)
    make = lambda ps, ns: c_lion.Lion(ps, **hp)
    t32, o32, p32, t64 = both(make)
    tpo, _, _ = C.run_torch(lambda ps, ns: po.Lion(ps, **hp, cautious=True, foreach=False), NAMES, INIT, GRADS,
                            torch.float32)
    sem = """Cautious Lion, authors' code (github kyleliang919/C-Optim c_lion.py @2c0517c, update_fn), per step, per param:
  p = p * (1 - lr * weight_decay)                                 # decoupled decay FIRST
  u = sign(beta1 * m + (1 - beta1) * g)                           # exp_avg.clone().mul_(beta1).add(g, alpha=1-beta1).sign_(); sign(0) = 0
  mask = (u * g > 0) as float
  mask = mask * (numel / (sum(mask) + 1))                         # +1 in the denominator (no eps, no clamp); numel of the whole tensor
  p = p - lr * (u * mask)
  m = beta2 * m + (1 - beta2) * g                                 # momentum update AFTER the step (Lion)
Step 1: m = 0 so u = sign(g) and the mask is all ones except where g == 0: scale numel/(numel+1) (e.g. 0.5 for the
1-element param s_1, 8/9 for b_8, 128/129 for the matrices) -- the '+1' matters for small tensors.
State: exp_avg."""
    finish("cautious_lion", "Cautious Lion (Liang et al. 2024): Lion sign update masked where sign(update) != "
           "sign(g), rescaled by numel/(sum(mask)+1); authors' C-Optim code.",
           ref("C-Optim c_lion.Lion(params, lr=0.01, betas=(0.9, 0.99), weight_decay=0.1)",
               "authors' c_lion.py @2c0517c, imported from the fetched snapshot"),
           {**hp, "betas": list(hp["betas"])}, sem, t32, o32, p32, t64, [[hp["lr"]]] * C.STEPS,
           cross_checks={"pytorch_optimizer_Lion_cautious": {
               "what": "pytorch_optimizer 4.1.0 Lion(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1, cautious=True, "
                       "foreach=False): same rule (apply_cautious: mask*numel/(sum+1))",
               "max_abs_diff_params": cross(t32, tpo)}})


# ---------------------------------------------------------------- MARS-AdamW (authors)
MARS_NAMES = ["w_16x8", "w_8x16", "w_4x4", "b_8", "s_1"]
MARS_SHAPES = {**C.SHAPES, "w_4x4": [4, 4]}
MARS_SCALES = {**C.SCALES, "w_4x4": 0.01}


def mars_adamw():
    mars = load_pkg("mars_authors", C.thirdparty("AGI-Arena+MARS") + "/MARS/optimizers", "mars")
    init = C.make_init({n: MARS_SHAPES[n] for n in MARS_NAMES})
    grads = C.make_grads({n: MARS_SHAPES[n] for n in MARS_NAMES}, MARS_SCALES)
    hp = dict(lr=0.003, betas=(0.95, 0.99), eps=1e-8, weight_decay=0.01, amsgrad=False, gamma=0.025, is_approx=True,
              mars_type="mars-adamw", optimize_1d=False, lr_1d=0.003, betas_1d=(0.9, 0.95), weight_decay_1d=0.1)
    make = lambda ps, ns: mars.MARS(ps, **hp)
    t32, o32, p32, t64 = both(make, MARS_NAMES, init, grads)
    tpo, _, _ = C.run_torch(lambda ps, ns: po.MARS(ps, lr=0.003, betas=(0.95, 0.99), gamma=0.025, mars_type="adamw",
                                                   optimize_1d=False, lr_1d=0.003, betas_1d=(0.9, 0.95),
                                                   weight_decay=0.01, weight_decay_1d=0.1, eps=1e-8),
                            MARS_NAMES, init, grads, torch.float32)
    sem = """MARS-AdamW, authors' code (github AGI-Arena/MARS MARS/optimizers/mars.py @4831e28, is_approx=True, mars_type='mars-adamw'),
per step, per param; t = per-param step counter (1-based); last_grad = the gradient of the PREVIOUS step, zeros
before step 1 (state['last_grad'] = grad at the end of each step, the approximate 'MARS-approx' variant):
 2-D params (optimize_1d=False -> only params with grad.ndim == 2 use MARS):
  c = g + gamma * (beta1 / (1 - beta1)) * (g - last_grad)         # (g - last).mul(gamma*beta1/(1-beta1)).add(g)
  if ||c||_F > 1: c = c / ||c||_F                                 # clip the corrected gradient to unit Frobenius norm (per tensor)
  m = beta1 * m + (1 - beta1) * c
  v = beta2 * v + (1 - beta2) * c * c
  denom = (sqrt(v) * (1 / sqrt(1 - beta2**t)) + eps) * (1 - beta1**t)
  p = p + (-lr) * (weight_decay * p_old + m / denom)              # decoupled decay with the pre-step p, one fused add
 1-D params: plain AdamW with betas_1d, lr_1d (= lr * lr_1d_factor, lr_1d_factor = lr_1d/lr), weight_decay_1d:
  m = b1*m + (1-b1) g ; v = b2*v + (1-b2) g^2 ; denom = (sqrt(v)/sqrt(1-b2**t) + eps) * (1-b1**t)
  p = p + (-lr * lr_1d_factor) * (weight_decay_1d * p_old + m / denom)
  (the 1-D path never uses last_grad)
Step 1: last_grad = 0, so c_1 = g_1 * (1 + gamma*beta1/(1-beta1)) = 1.475 g_1 (then clipped to norm 1 if larger).
With these inputs ||c|| > 1 for w_16x8 and w_8x16 at every step (clip active) and < 1 for w_4x4 (scale 0.01: no clip).
State: step, exp_avg, exp_avg_sq, last_grad (= previous grad)."""
    finish("mars_adamw", "MARS-AdamW (Yuan et al. 2024): variance-reduced corrected gradient c = g + gamma*beta1/(1-beta1)"
           "*(g - g_prev), unit-norm clip, AdamW on c; 1-D params plain AdamW. Authors' code.",
           ref("MARS(params, lr=0.003, betas=(0.95, 0.99), eps=1e-8, weight_decay=0.01, amsgrad=False, gamma=0.025, "
               "is_approx=True, mars_type='mars-adamw', optimize_1d=False, lr_1d=0.003, betas_1d=(0.9, 0.95), "
               "weight_decay_1d=0.1)", "authors' MARS/optimizers/mars.py @4831e28, imported from the fetched snapshot"),
           C.jsonable(hp), sem, t32, o32, p32, t64, [[hp["lr"]]] * C.STEPS, names=MARS_NAMES, shapes=MARS_SHAPES,
           scales=MARS_SCALES, init=init, grads=grads,
           notes="An extra 4x4 matrix with gradient scale 0.01 (||c|| < 1) exercises the no-clip branch.",
           cross_checks={"pytorch_optimizer_MARS_adamw_foreach": {
               "what": "pytorch_optimizer 4.1.0 MARS(mars_type='adamw', same hyper-parameters), default (foreach) path",
               "max_abs_diff_params": cross(t32, tpo),
               "note": "pytorch_optimizer's per-parameter path (foreach=False) never updates last_grad in 4.1.0 "
                       "(c = g*(1+gamma*beta1/(1-beta1)) at every step); its foreach path matches the authors."}})


# ---------------------------------------------------------------- Adan (authors)
def adan():
    mod = importlib.util.spec_from_file_location("adan_authors", C.thirdparty("sail-sg+Adan") + "/adan.py")
    adan_m = importlib.util.module_from_spec(mod)
    mod.loader.exec_module(adan_m)
    hp = dict(lr=0.01, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.02, max_grad_norm=0.0, no_prox=False)
    make = lambda ps, ns: adan_m.Adan(ps, **hp, foreach=False, fused=False)
    t32, o32, p32, t64 = both(make)
    tpo, _, _ = C.run_torch(lambda ps, ns: po.Adan(ps, lr=0.01, betas=(0.98, 0.92, 0.99), weight_decay=0.02,
                                                   weight_decouple=False, eps=1e-8),
                            NAMES, INIT, GRADS, torch.float32)
    sem = """Adan, authors' code (github sail-sg/Adan adan.py @2c65bea, _single_tensor_adan, foreach=False, fused=False),
betas = (beta1, beta2, beta3) in the AUTHORS' convention: beta1 for the gradient EMA, beta2 for the gradient-difference
EMA, beta3 for the second moment -- and the code uses them as 'weight on the OLD value' (mul_(beta)), i.e. the paper's
(1 - beta_k). Group counter t (1-based). max_grad_norm = 0 -> clip factor 1.
  if t == 1: neg_pre_grad = -g                                    # so the 'difference' at step 1 is exactly 0
  d = neg_pre_grad + g                                            # = g_t - g_{t-1}
  m = beta1 * m + (1 - beta1) * g                                 # exp_avg
  dm = beta2 * dm + (1 - beta2) * d                               # exp_avg_diff
  n_in = g + beta2 * d                                            # neg_grad_or_diff.mul_(beta2).add_(g)
  v = beta3 * v + (1 - beta3) * n_in * n_in                       # exp_avg_sq
  denom = sqrt(v) / sqrt(1 - beta3**t) + eps                      # eps OUTSIDE sqrt, after bias correction
  p = p - (lr / (1 - beta1**t)) * m / denom
  p = p - (lr * beta2 / (1 - beta2**t)) * dm / denom
  no_prox=False (this case): p = p / (1 + lr * weight_decay)      # proximal weight decay AFTER the update
  (no_prox=True would instead do p *= 1 - lr*weight_decay BEFORE the two updates)
  neg_pre_grad = -g
Step 1: d = 0, dm = 0, n_in = g; the diff term contributes nothing.
State: exp_avg, exp_avg_sq, exp_avg_diff, neg_pre_grad (= -previous grad)."""
    finish("adan", "Adan (Xie et al. 2022): Nesterov-type gradient-difference momentum, prox weight decay "
           "(no_prox=False); authors' code, single-tensor path.",
           ref("Adan(params, lr=0.01, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.02, max_grad_norm=0.0, "
               "no_prox=False, foreach=False, fused=False)",
               "authors' adan.py @2c65bea, _single_tensor_adan, imported from the fetched snapshot"),
           C.jsonable(hp), sem, t32, o32, p32, t64, [[hp["lr"]]] * C.STEPS,
           cross_checks={"pytorch_optimizer_Adan_foreach": {
               "what": "pytorch_optimizer 4.1.0 Adan(lr=0.01, betas=(0.98,0.92,0.99), weight_decay=0.02, "
                       "weight_decouple=False (= prox), eps=1e-8), default foreach path",
               "max_abs_diff_params": cross(t32, tpo)}})


# ---------------------------------------------------------------- ADOPT (authors)
def adopt():
    sys.path.insert(0, C.thirdparty("iShohei220+adopt") + "/src")
    from adopt import ADOPT
    hp = dict(lr=0.01, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.1, decouple=True)
    make = lambda ps, ns: ADOPT(ps, **hp, foreach=False)
    t32, o32, p32, t64 = both(make)
    tpo, _, _ = C.run_torch(lambda ps, ns: po.ADOPT(ps, lr=0.01, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.1,
                                                    weight_decouple=True, foreach=False),
                            NAMES, INIT, GRADS, torch.float32)
    sem = """ADOPT, authors' code (github iShohei220/adopt src/adopt/adopt.py @6468572, _single_tensor_adopt, foreach=False),
clip_lambda = step -> step**0.25 (default). Per param, s = state step BEFORE this call (0 on the first call):
  if s == 0:                                                      # FIRST STEP: only initialise v, params NOT changed, no decay
      v = v + g * g ; s = 1 ; done
  if weight_decay != 0 and decouple: p = p + (-lr * weight_decay) * p        # decoupled decay (skipped on step 1)
  denom = max(sqrt(v), eps)                                       # clamp, eps NOT added; v is the PREVIOUS second moment
  n = g / denom
  n = clamp(n, -s**0.25, s**0.25)                                 # clip value uses s = number of previous calls: 1, 2**0.25, 3**0.25, ...
  m = lerp(m, n, 1 - beta1)                                       # m starts at 0, NO bias correction
  p = p - lr * m
  v = beta2 * v + (1 - beta2) * g * g                             # second moment updated AFTER the step (decorrelation)
  s = s + 1
So call k (1-based) uses clip (k-1)**0.25. The update of call 2 is lr*(1-beta1)*clip(g_2/|g_1|).
State: step (float32 tensor), exp_avg, exp_avg_sq."""
    finish("adopt", "ADOPT (Taniguchi et al. 2024): normalise g by the PREVIOUS sqrt(v), clip at step**0.25, then "
           "momentum; step 1 only initialises v. Authors' code, decoupled decay.",
           ref("ADOPT(params, lr=0.01, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.1, decouple=True, foreach=False)",
               "authors' src/adopt/adopt.py @6468572, _single_tensor_adopt, imported from the fetched snapshot"),
           C.jsonable(hp), sem, t32, o32, p32, t64, [[hp["lr"]]] * C.STEPS,
           cross_checks={"pytorch_optimizer_ADOPT": {
               "what": "pytorch_optimizer 4.1.0 ADOPT(lr=0.01, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.1, "
                       "weight_decouple=True, foreach=False)",
               "max_abs_diff_params": cross(t32, tpo),
               "note": "DIFFERS on purpose: pytorch_optimizer clips with clip_lambda(group step) = k**0.25 at call k "
                       "(authors: (k-1)**0.25) and applies the decoupled decay also on step 1 (before the first-step "
                       "early return). The authors' rule is the one recorded here."}})


# ---------------------------------------------------------------- Adam-mini (authors' PyPI package)
AM_NAMES = ["w_16x8", "w_8x16", "b_8", "s_1", "mlp_8x16"]
AM_SHAPES = {**C.SHAPES, "mlp_8x16": [8, 16]}
AM_SCALES = {**C.SCALES, "mlp_8x16": 0.3}


def adam_mini():
    from adam_mini import Adam_mini
    init = C.make_init({n: AM_SHAPES[n] for n in AM_NAMES})
    grads = C.make_grads({n: AM_SHAPES[n] for n in AM_NAMES}, AM_SCALES)
    hp = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, dim=16, n_heads=2)
    make = lambda ps, ns: Adam_mini(list(zip(ns, ps)), **hp, verbose=False)
    t32, o32, p32, t64 = both(make, AM_NAMES, init, grads)
    sem = """Adam-mini, authors' package (PyPI adam-mini 1.1.1, Adam_mini(named_parameters, ...)), one param group per parameter.
The partition into blocks is chosen BY PARAMETER NAME (lower-cased substring tests, first match wins):
  'bias' in name                              -> plain Adam (per-element v)
  q/k names ('k_proj','q_proj','wq','wk','query','key') -> one block per head (dim*dim/n_heads elements)
  'embed','embd','wte','lm_head','output','final_layer','v_proj','wv','value','o_proj','wo','attn.proj',
  'feed_forward','linear','mlp'               -> one block per OUTPUT ROW: v has shape [rows, 1], block = row
  anything else (generic names)               -> ONE block for the whole tensor: v is a 0-d scalar
Weight decay: 0 if 'norm', 'ln' or 'bias' in the name, else weight_decay.
In this case: w_16x8, w_8x16, b_8, s_1 are generic -> one scalar v per tensor; mlp_8x16 (contains 'mlp') -> v [8, 1],
one value per row. All five get weight_decay 0.1.
Per step, per param (t = per-param step counter, python int, 1-based; bc1 = 1-beta1**t, bc2 = 1-beta2**t):
 whole-tensor block ('else' branch):
  s = sum(g * g) / numel                                          # f32 sum, divided by numel (a float32 tensor .item())
  if weight_decay > 0: p = p * (1 - lr * weight_decay)            # decoupled decay
  m = lerp(m, g, 1 - beta1)
  v = beta2 * v + (1 - beta2) * s                                 # vmean, 0-d
  h = sqrt(v) / sqrt(bc2) + eps                                   # eps OUTSIDE sqrt, after bias correction
  p = p - lr * (m * (1 / bc1 / h))                                # update = m * stepsize; update *= lr; p += -update
 row blocks (mlp_8x16):
  s_r = mean(g * g, dim=1, keepdim)                               # [rows, 1]
  v = beta2 * v + (1 - beta2) * s_r
  if weight_decay > 0: p = p * (1 - lr * weight_decay)
  m = lerp(m, g, 1 - beta1)
  h = sqrt(v) / sqrt(bc2) + eps ; p = p - lr * (m * (1 / bc1 / h))   # h broadcast along each row
State per param: m (shape of p), vmean (0-d or [rows,1]), step (int), and for the whole-tensor block also
block_numel (float) and reduced (False)."""
    finish("adam_mini", "Adam-mini (Zhang et al. 2024): one second-moment scalar per block; generic names -> whole "
           "tensor is one block, 'mlp' names -> one block per output row. Authors' PyPI package.",
           ref("adam_mini.Adam_mini(named_parameters, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, "
               "dim=16, n_heads=2, verbose=False)", "adam-mini 1.1.1 (PyPI), CPU, model_sharding irrelevant "
               "(world_size = torch.cuda.device_count() = 0)"),
           C.jsonable(hp), sem, t32, o32, p32, t64, [[hp["lr"]]] * C.STEPS, names=AM_NAMES, shapes=AM_SHAPES,
           scales=AM_SCALES, init=init, grads=grads,
           notes="Fifth parameter 'mlp_8x16' (gradient scale 0.3) exercises the per-row partition. dim/n_heads only "
                 "matter for q/k-named params (none here).")


# ---------------------------------------------------------------- LaProp (pytorch_optimizer)
def laprop():
    hp = dict(lr=0.004, betas=(0.9, 0.999), centered=False, weight_decay=0.01, weight_decouple=True,
              fixed_decay=False, ams_bound=False, eps=1e-15)
    make = lambda ps, ns: po.LaProp(ps, **hp, foreach=False)
    t32, o32, p32, t64 = both(make)
    sem = """pytorch_optimizer 4.1.0 LaProp (Ziyin et al. 2020), per-parameter path (foreach=False), per step, per param
(t = group step, 1-based; state exp_avg_lr_1 / exp_avg_lr_2 are python floats starting at 0):
  v = beta2 * v + (1 - beta2) * g * g                             # exp_avg_sq
  L1 = beta1 * L1 + (1 - beta1) * lr                              # exp_avg_lr_1: lr-weighted bias-correction tracker
  L2 = beta2 * L2 + (1 - beta2)                                   # exp_avg_lr_2 (tracked, unused by the update)
  bc1 = L1 / lr                                                   # = 1 - beta1**t for a constant lr
  denom = (sqrt(v + 1e-15) + eps) / sqrt(1 - beta2**t)            # apply_ams_bound: sqrt(v + 1e-15) + eps, THEN divided by sqrt(bc2)
  m = beta1 * m + ((1 - beta1) * lr) * g / denom                  # momentum of the NORMALISED gradient, lr folded in (addcdiv)
  p = p - (1 / bc1) * m                                           # p.add_(m, alpha=-1/bc1)
  p = p * (1 - lr * weight_decay)                                 # decoupled decay AFTER the update (weight_decouple=True)
(centered=False: no mean subtraction; ams_bound=False.)
State: exp_avg (includes the lr factor), exp_avg_sq, exp_avg_lr_1, exp_avg_lr_2."""
    finish("laprop", "LaProp: normalise g by the bias-corrected sqrt(v) first, then momentum (pytorch_optimizer).",
           ref("pytorch_optimizer.LaProp(params, lr=0.004, betas=(0.9, 0.999), centered=False, weight_decay=0.01, "
               "weight_decouple=True, fixed_decay=False, ams_bound=False, eps=1e-15, foreach=False)",
               "pytorch_optimizer 4.1.0 per-parameter path"),
           C.jsonable(hp), sem, t32, o32, p32, t64, [[hp["lr"]]] * C.STEPS)


# ---------------------------------------------------------------- Prodigy (prodigyopt)
def prodigy():
    from prodigyopt import Prodigy
    hp = dict(lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, weight_decay=0.01, decouple=True,
              use_bias_correction=False, safeguard_warmup=False, d0=1e-6, d_coef=1.0, growth_rate=float("inf"))
    ds = {torch.float32: [], torch.float64: []}

    def rec(dt):
        def hook(t, opt, params):
            g = opt.param_groups[0]
            ds[dt].append({k: g[k] for k in ["d", "d_max", "d_hat", "d_numerator", "d_denom"]})
        return hook

    make = lambda ps, ns: Prodigy(ps, **hp)
    t32, o32, p32 = C.run_torch(make, NAMES, INIT, GRADS, torch.float32, hook=rec(torch.float32))
    t64, _, _ = C.run_torch(make, NAMES, INIT, GRADS, torch.float64, hook=rec(torch.float64))
    d_spread = max(abs(a["d"] - b["d"]) / abs(b["d"]) for a, b in zip(ds[torch.float32], ds[torch.float64]))
    # A second, equally valid float32 run: torch.dot accumulated in float64 and rounded to float32 (what a Rust
    # implementation with a different summation order/precision may do). This, not the f64 run, sizes the tolerance:
    # the f64 run also differs because f64 params resolve the tiny early moves (d0 = 1e-6) that f32 params round away.
    orig_dot = torch.dot
    torch.dot = lambda a, b: orig_dot(a.double(), b.double()).to(a.dtype)
    ds_alt = {torch.float32: []}
    try:
        talt, _, _ = C.run_torch(make, NAMES, INIT, GRADS, torch.float32, hook=lambda t, o, p: ds_alt[torch.float32]
                                 .append({"d": o.param_groups[0]["d"]}))
    finally:
        torch.dot = orig_dot
    d_spread_alt = max(abs(a["d"] - b["d"]) / abs(b["d"]) for a, b in zip(ds_alt[torch.float32], ds[torch.float32]))
    sem = """prodigyopt 1.1.2 Prodigy (Mishchenko & Defazio 2023), one param group. d, d_max, d_numerator and the group counter k
live in the PARAM GROUP as python floats (float64); tensor reductions are taken with .item() (float32 sums -> f64).
beta3 = sqrt(beta2) when None. Per step (k = number of previous steps):
  bias_correction = 1 (use_bias_correction=False)
  dlr = d * lr * bias_correction                                  # d of the previous step (d0 = 1e-6 at step 1)
  d_numerator = beta3 * d_numerator                               # group value from the previous step
  delta = 0 ; d_denom = 0
  for each param p (in param_order): (state init on first sight: s = 0, p0 = copy of the initial p, exp_avg = exp_avg_sq = 0)
      delta += (d / d0) * dlr * dot(g.flatten(), (p0 - p).flatten()).item()
      m = beta1 * m + d * (1 - beta1) * g                         # exp_avg scaled by d
      v = beta2 * v + d * d * (1 - beta2) * g * g                 # exp_avg_sq scaled by d^2
      s = beta3 * s + (d / d0) * dlr * g                          # safeguard_warmup=False
      d_denom += sum(|s|).item()
  if d_denom == 0: return (no param change)
  d_numerator = d_numerator + delta
  d_hat = d_coef * d_numerator / d_denom
  if d == d0: d = max(d, d_hat)
  d_max = max(d_max, d_hat)
  d = min(d_max, d * growth_rate)                                 # growth_rate = inf -> d = d_max (monotone)
  then for each param, with the NEW d but the OLD dlr:
      denom = sqrt(v) + d * eps
      if decouple and weight_decay != 0: p = p + (-weight_decay * dlr) * p
      p = p - dlr * m / denom                                     # addcdiv_(m, denom, value=-dlr)
  k = k + 1
Step 1: p = p0 so delta = 0 and d_hat = 0: d stays d0 = 1e-6 and the step is dlr = 1e-6 * lr (tiny). d grows from step 2.
extra.d[t] = the group's d, d_max, d_hat, d_numerator, d_denom after step t+1 (float64, from the f32 run).
Rounding: d is a ratio of accumulated f32 dot products/abs-sums; see checks (d_rel_spread_f32_vs_f64)."""
    case_extra = {"d": [{k: C.dnum(v) for k, v in x.items()} for x in ds[torch.float32]],
                  "d_f64_run": [{k: C.dnum(v) for k, v in x.items()} for x in ds[torch.float64]]}
    tolerance = C.tol(1e-4, 1e-6, "the global d estimate is a ratio of f32 dot products and abs-sums accumulated "
                      "over all params; a float32 run with a differently accumulated dot product "
                      "(checks.f32_alt_dot_same_reference) moves params by up to ratio 'ratio_to_tolerance' of this "
                      "tolerance. The float64 re-run differs MORE (ratio > 1): with d0 = 1e-6 the first steps move "
                      "params by ~1e-6, below f32 resolution of |p| ~ 0.5, so (p0 - p) in the d numerator is "
                      "quantised in any f32 implementation; that part is shared by every f32 implementation that "
                      "stores params in f32, so it is not held against the comparison")
    case = C.base_case("prodigy", "Prodigy: D-Adaptation-style global step-size estimate d (prodigyopt).",
                       ref("prodigyopt.Prodigy(params, lr=1.0, betas=(0.9, 0.999), beta3=None, eps=1e-8, "
                           "weight_decay=0.01, decouple=True, use_bias_correction=False, safeguard_warmup=False, "
                           "d0=1e-6, d_coef=1.0, growth_rate=inf)", "prodigyopt 1.1.2, slice_p=1, no fsdp"),
                       C.jsonable(hp), sem, NAMES, SHAPES, SCALES, INIT, GRADS, [[1.0]] * C.STEPS, t32,
                       C.state_json(o32, p32, NAMES), C.groups_json(o32), tolerance,
                       C.spread(t32, t64, tolerance["rtol"], tolerance["atol"]), extra=case_extra, versions=VERSIONS)
    case["checks"]["d_rel_spread_f32_vs_f64"] = d_spread
    alt = C.spread(t32, talt, tolerance["rtol"], tolerance["atol"])
    alt["meaning"] = ("the same reference run in float32 with torch.dot accumulated in float64 then rounded to "
                      "float32: an equally valid f32 implementation; this sizes the tolerance")
    alt["d_rel_spread"] = d_spread_alt
    case["checks"]["f32_alt_dot_same_reference"] = alt
    C.write_case(case)


if __name__ == "__main__":
    which = sys.argv[1:] or ["cautious_adamw", "cautious_lion", "mars_adamw", "adan", "adopt", "adam_mini", "laprop",
                             "prodigy"]
    for w in which:
        globals()[w]()

"""torch.optim robustness and N-D cases: adamw_inf_param, adam_inf_param, sgd_inf_param, adafactor_nd (PyPI torch)."""

import sys

import numpy as np
import torch

import common as C

NAMES = ["w_16x8", "w_8x16", "b_8", "s_1"]
SHAPES = dict(C.SHAPES)
SCALES = dict(C.SCALES)
GRADS = C.make_grads(SHAPES, SCALES)
VERSIONS = C.library_versions()
EW_TOL = C.tol(1e-5, 1e-6, "element-wise update; non-finite elements must match exactly (inf == inf, same sign)")

INF_INIT = C.make_init(SHAPES)
INF_INIT["w_16x8"] = INF_INIT["w_16x8"].copy()
INF_INIT["w_16x8"].reshape(-1)[0] = np.inf
INF_INIT["b_8"] = INF_INIT["b_8"].copy()
INF_INIT["b_8"][3] = -np.inf
INF_NOTE = ("params_init w_16x8 flat element 0 set to +inf and b_8 element 3 set to -inf; everything else and all "
            "gradients are the standard synthetic inputs (finite). Expected: those two elements stay +inf / -inf at "
            "every step (never NaN), all other elements follow the ordinary trajectory. The NaN trap is "
            "weight_decay * p: 0 * inf = NaN, which torch avoids by skipping the decay term entirely when "
            "weight_decay == 0 (`if weight_decay != 0:`), both for coupled (g + wd*p) and decoupled (p *= 1 - lr*wd) "
            "decay. A Rust implementation must skip it the same way (or compute p * 1.0, which keeps inf), never "
            "p - lr*wd*p.")


def run_case(name, summary, make, hp, api, sem):
    t32, o32, p32 = C.run_torch(make, NAMES, INF_INIT, GRADS, torch.float32)
    t64, _, _ = C.run_torch(make, NAMES, INF_INIT, GRADS, torch.float64)
    for t in t32:
        assert np.isposinf(t["w_16x8"].reshape(-1)[0]) and np.isneginf(t["b_8"][3])
        assert not any(np.isnan(v).any() for v in t.values())
    case = C.base_case(name, summary, {"library": "torch", "version": torch.__version__, "api": api,
                                       "code_path": "single-tensor (foreach=False)"},
                       hp, sem, NAMES, SHAPES, SCALES, INF_INIT, GRADS, [[hp["lr"]]] * C.STEPS, t32,
                       C.state_json(o32, p32, NAMES), C.groups_json(o32), EW_TOL, C.spread(t32, t64, 1e-5, 1e-6),
                       notes=INF_NOTE, versions=VERSIONS,
                       grad_source={"kind": "synthetic_modified", "seed": C.GRAD_SEED, "formula": C.GRAD_FORMULA,
                                    "scale": SCALES, "modification": "params_init only (see notes); grads unmodified"},
                       sanity_extra={"nonfinite_params_at_every_step": {"w_16x8[0]": "inf", "b_8[3]": "-inf"},
                                     "any_nan": False})
    C.write_case(case)


def _adam_inf_param(optimizer, case, description, semantics):
    """`torch.optim.{optimizer}` (Adam or AdamW) with weight_decay = 0.0 on the inf / -inf parameters."""
    hp = dict(lr=0.01, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0)
    cls = getattr(torch.optim, optimizer)
    run_case(case, description,
             lambda ps, ns: cls(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=False), hp,
             f"torch.optim.{optimizer}(params, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=False)",
             semantics)


def adamw_inf_param():
    _adam_inf_param("AdamW", "adamw_inf_param",
                    "AdamW with weight_decay = 0.0 and +inf / -inf parameter elements: inf stays inf, no NaN.",
                    """torch.optim.AdamW single-tensor path, exactly as adamw.json but weight_decay = 0.0:
  if weight_decay != 0: p = p * (1 - lr*weight_decay)   # SKIPPED (wd == 0) -- inf elements are never multiplied
  m = lerp(m, g, 1-beta1) ; v = beta2*v + (1-beta2)*g*g
  denom = sqrt(v)/sqrt(1-beta2**t) + eps ; p = p - (lr/(1-beta1**t)) * m/denom
An inf element receives a finite update: inf - finite = inf. m, v never see p, so state stays finite.""")


def adam_inf_param():
    _adam_inf_param("Adam", "adam_inf_param",
                    "Adam with weight_decay = 0.0 (coupled L2 skipped) and +inf / -inf parameter elements.",
                    """torch.optim.Adam single-tensor path (as adam.json), weight_decay = 0.0:
  if weight_decay != 0: g = g + weight_decay * p        # SKIPPED -- with it, 0 * inf = NaN would poison m, v and p
  m = lerp(m, g, 1-beta1) ; v = beta2*v + (1-beta2)*g*g
  denom = sqrt(v)/sqrt(1-beta2**t) + eps ; p = p - (lr/(1-beta1**t)) * m/denom""")


def sgd_inf_param():
    hp = dict(lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False)
    run_case("sgd_inf_param", "SGD with momentum, weight_decay = 0.0 and +inf / -inf parameter elements.",
             lambda ps, ns: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=0.0, foreach=False), hp,
             "torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=0.0, foreach=False)",
             """torch.optim.SGD single-tensor path, weight_decay = 0.0:
  if weight_decay != 0: g = g + weight_decay * p        # SKIPPED
  step 1: buf = clone(g) ; later: buf = momentum*buf + (1-dampening)*g
  p = p - lr * buf""")


# ---------------------------------------------------------------- Adafactor on N-D params
ND_NAMES = ["w_16x8", "t_2x3x4", "t_2x2x3x4", "b_8"]
ND_SHAPES = {"w_16x8": [16, 8], "t_2x3x4": [2, 3, 4], "t_2x2x3x4": [2, 2, 3, 4], "b_8": [8]}
ND_SCALES = {"w_16x8": 1.0, "t_2x3x4": 0.5, "t_2x2x3x4": 2.0, "b_8": 3.0}


def adafactor_nd():
    init = C.make_init(ND_SHAPES)
    grads = C.make_grads(ND_SHAPES, ND_SCALES)
    hp = dict(lr=0.01, beta2_decay=-0.8, eps=[None, 0.001], d=1.0, weight_decay=0.01)
    make = lambda ps, ns: torch.optim.Adafactor(ps, lr=0.01, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                                                weight_decay=0.01, foreach=False)
    t32, o32, p32 = C.run_torch(make, ND_NAMES, init, grads, torch.float32)
    t64, _, _ = C.run_torch(make, ND_NAMES, init, grads, torch.float64)
    sem = """torch.optim.Adafactor, single-tensor path (foreach=False), verified by reading torch/optim/_adafactor.py
(_single_tensor_adafactor) of the installed torch. Per step t (state step float32 tensor, t from 1);
eps = (eps1, eps2), eps1 = None -> torch.finfo(param dtype).eps (1.1920929e-07 for float32):
  one_minus_beta2_t = t ** beta2_decay                    # python float
  rho_t = min(lr, 1 / sqrt(t))
  alpha = max(eps2, ||p||_2 / sqrt(numel(p))) * rho_t     # RMS over the WHOLE tensor (all axes), BEFORE weight decay, .item()
  if weight_decay != 0: p = p * (1 - lr * weight_decay)   # raw lr
  if p.ndim > 1:  FACTORED OVER THE LAST TWO AXES; all leading axes are batch axes.
      For shape [B..., R, C]: state row_var has shape [B..., R, 1], col_var [B..., 1, C] (zeros at init).
      row_mean = ||g||_2 along axis -1 (keepdim), squared, / C      # = mean(g*g, axis=-1)
      row_var = lerp(row_var, row_mean, one_minus_beta2_t)
      col_mean = ||g||_2 along axis -2 (keepdim), squared, / R      # = mean(g*g, axis=-2)
      col_var = lerp(col_var, col_mean, one_minus_beta2_t)
      var_est = row_var @ col_var                                   # batched matmul -> [B..., R, C]
      var_est = var_est / clamp(mean(row_var, axis=-2, keepdim), min=eps1)   # one normaliser PER BATCH SLICE [B..., 1, 1]
  else (1-D / 0-D):
      variance = lerp(variance, g*g, one_minus_beta2_t) ; var_est = variance
  u = g * rsqrt(clamp(var_est, min=eps1*eps1))
  denom = max(1, ||u||_2 / (sqrt(numel(u)) * d))          # RMS clip over the WHOLE tensor, .item()
  p = p - (alpha / denom) * u
So for t_2x3x4 the 2 slices [3, 4] each get their own row/col factors (row_var [2,3,1], col_var [2,1,4]) but share alpha
and the clipping denominator; t_2x2x3x4 has 4 slices (row_var [2,2,3,1], col_var [2,2,1,4]). No first moment.
State: step, row_var/col_var (ndim > 1) or variance (1-D)."""
    tolerance = C.tol(1e-5, 1e-6, "factored second moment + whole-tensor RMS; see the f32-vs-f64 check")
    case = C.base_case("adafactor_nd", "torch.optim.Adafactor on 2-D, 3-D (2x3x4) and 4-D (2x2x3x4) params: factored "
                       "over the last two axes, leading axes are batch.",
                       {"library": "torch", "version": torch.__version__,
                        "api": "torch.optim.Adafactor(params, lr=0.01, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, "
                               "weight_decay=0.01, foreach=False)", "code_path": "single-tensor (foreach=False)"},
                       hp, sem, ND_NAMES, ND_SHAPES, ND_SCALES, init, grads, [[0.01]] * C.STEPS, t32,
                       C.state_json(o32, p32, ND_NAMES), C.groups_json(o32), tolerance,
                       C.spread(t32, t64, 1e-5, 1e-6), versions=VERSIONS)
    C.write_case(case)


if __name__ == "__main__":
    which = sys.argv[1:] or ["adamw_inf_param", "adam_inf_param", "sgd_inf_param", "adafactor_nd"]
    for w in which:
        globals()[w]()

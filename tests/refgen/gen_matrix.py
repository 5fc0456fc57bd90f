"""Matrix-preconditioned optimizers: splus (pytorch_optimizer 4.1.0 SPlus), psgd_kron (kron_torch Kron with recorded probes).

Third-party code (not committed; see fetch_thirdparty.sh):
  evanatyourservice/kron_torch @ 884427c32bc45e8293e20c26c85e4ccc4f68c9d1  (kron_torch/kron.py)
kron.py decorates helpers with torch.compile; TORCH_COMPILE_DISABLE=1 (set below, before torch is imported) makes them
run eagerly with identical semantics, which lets us replace torch.randn_like (the probe source) by a recorder.
"""

import os

os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

import importlib.util  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import common as C  # noqa: E402
import pytorch_optimizer as po  # noqa: E402

VERSIONS = C.library_versions(kron_torch_evanatyourservice_commit="884427c32bc45e8293e20c26c85e4ccc4f68c9d1")


# ---------------------------------------------------------------- SPlus
SP_NAMES = ["w_16x8", "w_8x8", "b_8", "s_1"]
SP_SHAPES = {**C.SHAPES, "w_8x8": [8, 8]}
SP_SCALES = {**C.SCALES, "w_8x8": 0.5}


def splus():
    init = C.make_init({n: SP_SHAPES[n] for n in SP_NAMES})
    grads = C.make_grads({n: SP_SHAPES[n] for n in SP_NAMES}, SP_SCALES)
    hp = dict(lr=0.1, betas=(0.9, 0.999), weight_decay=0.01, weight_decouple=True, fixed_decay=False, ema_rate=0.999,
              inverse_steps=5, nonstandard_constant=0.001, max_dim=10, eps=1e-30)
    make = lambda ps, ns: po.SPlus(ps, **hp, foreach=False)
    t32, o32, p32 = C.run_torch(make, SP_NAMES, init, grads, torch.float32)
    t64, _, _ = C.run_torch(make, SP_NAMES, init, grads, torch.float64)
    tolerance = C.tol(1e-4, 1e-5, "sign of a matrix rotated into an eigenbasis: an entry of Q_L^T m Q_R close to 0 can "
                      "flip sign under rounding and move that update entry by 2*scaled_lr; the f32-vs-f64 check shows "
                      "whether any flip happened on these inputs (ratio < 1 means none did)")
    sem = """pytorch_optimizer 4.1.0 SPlus (Frans et al. 2025, 'A Stable Whitening Optimizer for Efficient Neural Network Training'),
per-parameter path (foreach=False). Group counter t (1-based). beta1, beta2 = betas.
scaled_lr = lr * (2 / (rows + cols))  for 2-D params with rows, cols both <= max_dim (here w_8x8: 0.1 * 2/16 = 0.0125)
          = lr * nonstandard_constant otherwise (1-D, 0-D, or a 2-D param with a side > max_dim; here w_16x8, b_8, s_1: 1e-4)
State init: momentum = 0, ema = 0; for 2-D: sides[i] = zeros(d_i, d_i) and q_sides[i] = I(d_i) for each side with
d_i < max_dim, else None (that side is never rotated). max_dim = 10 here, so w_16x8 rotates only its 8-side
(columns, sides[1]); w_8x8 rotates both. (Why: with a 16-side the 16x16 statistic has rank 8 after step 1 and its
eigenbasis inside the null space is arbitrary -- implementation dependent, as in SOAP.)
Per step, per param:
  m = lerp(m, g, 1 - beta1)                                        # momentum, stored unrotated
  2-D:
    mr = Q_L^T m (if Q_L) ; mr = mr Q_R (if Q_R)                   # rotate with the CURRENT (previous-step) bases
    sides[0] = lerp(sides[0], g g^T, 1 - beta2)  (if present)     # statistics from the RAW grad (not m)
    sides[1] = lerp(sides[1], g^T g, 1 - beta2)  (if present)
    u = sign(mr) ; u = Q_L u (if Q_L) ; u = u Q_R^T (if Q_R)      # sign(0) = 0
    if t == 1 or t % inverse_steps == 0:                           # basis refresh AFTER computing this step's update
        Q_i = eigh(sides[i] (as float32) + eps * I).eigenvectors  (ascending eigenvalue order, torch.linalg.eigh)
  else: u = sign(m)
  p = p - scaled_lr * u
  ema = lerp(ema, p, 1 - ema_rate)                                 # eval-time EMA of params (not used by the update)
  p = p * (1 - scaled_lr * weight_decay)                           # decoupled decay AFTER the update, with scaled_lr
Step 1: Q = I so u = sign(m) = sign((1-beta1) g); the first eigenbases are computed at the end of step 1 and used from
step 2; refreshed at t = 5, 10, 15, 20 (inverse_steps = 5). eigh runs in float32 (sides.float()); the float64 re-run
patches .float() to a no-op so its eigh is float64. Eigenvector signs are arbitrary; the update is invariant to them.
State: momentum, ema, sides (list), q_sides (list)."""
    case = C.base_case("splus", "SPlus: sign of the momentum rotated into the eigenbases of EMA'd g g^T / g^T g, "
                       "shape-scaled lr, decoupled decay after the step (pytorch_optimizer).",
                       {"library": "torch", "version": torch.__version__,
                        "api": "pytorch_optimizer.SPlus(params, lr=0.1, betas=(0.9, 0.999), weight_decay=0.01, "
                               "weight_decouple=True, fixed_decay=False, ema_rate=0.999, inverse_steps=5, "
                               "nonstandard_constant=0.001, max_dim=10, eps=1e-30, foreach=False)",
                        "code_path": "pytorch_optimizer 4.1.0 per-parameter path"},
                       C.jsonable(hp), sem, SP_NAMES, SP_SHAPES, SP_SCALES, init, grads, [[0.1]] * C.STEPS, t32,
                       C.state_json(o32, p32, SP_NAMES), C.groups_json(o32), tolerance,
                       C.spread(t32, t64, 1e-4, 1e-5),
                       notes="The authors' reference is JAX/optax (github kvfrans/splus); this is pytorch_optimizer's "
                             "port. Parameters: w_16x8 (one rotated side), w_8x8 (gradient scale 0.5, both sides), "
                             "b_8, s_1.", versions=VERSIONS)
    C.write_case(case)


# ---------------------------------------------------------------- PSGD Kron (kron_torch) with recorded probes
KR_NAMES = ["w_16x8", "w_8x16", "b_8", "s_1"]


class Probes:
    """Replacement for torch.randn_like: records (or replays) every probe in call order."""

    def __init__(self, seed=2468, replay=None):
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.replay = list(replay) if replay is not None else None
        self.log = []

    def __call__(self, t, *a, **k):
        dtype = k.get("dtype", t.dtype)
        if self.replay is not None:
            v = self.replay.pop(0)
        else:
            v = np.float32(self.rng.standard_normal(tuple(t.shape)))
        self.log.append(v)
        return torch.tensor(v, dtype=dtype).reshape(t.shape)


class NoBalance:
    def random(self):
        return 1.0


def psgd_kron():
    spec = importlib.util.spec_from_file_location("kron_torch_kron",
                                                  C.thirdparty("evanatyourservice+kron_torch") + "/kron_torch/kron.py")
    kron = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kron)
    init = C.make_init(C.SHAPES)
    grads = C.make_grads(C.SHAPES, C.SCALES)
    hp = dict(lr=0.01, b1=0.9, weight_decay=0.01, preconditioner_update_probability=1.0, max_size_triangular=8192,
              min_ndim_triangular=2, memory_save_mode=None, momentum_into_precond_update=True, precond_lr=0.1,
              precond_init_scale=1.0, merge_dims=True, mu_dtype=None)

    def run(dtype, probes):
        def make(ps, ns):
            o = kron.Kron(ps, **hp, precond_dtype=dtype)
            o.rng = NoBalance()
            return o
        orig = torch.randn_like
        torch.randn_like = probes
        try:
            return C.run_torch(make, KR_NAMES, init, grads, dtype)
        finally:
            torch.randn_like = orig

    rec = Probes()
    t32, o32, p32 = run(torch.float32, rec)
    assert len(rec.log) == C.STEPS * len(KR_NAMES)
    t64, _, _ = run(torch.float64, Probes(replay=rec.log))
    probes = [{n: C.flat32(rec.log[t * len(KR_NAMES) + i]) for i, n in enumerate(KR_NAMES)} for t in range(C.STEPS)]
    tolerance = C.tol(1e-4, 1e-5, "Lie-group preconditioner fit: triangular solves, a power-iteration norm lower bound "
                      "and einsum contractions per step; see the f32-vs-f64 check (same probes)")
    sem = """kron_torch Kron (github evanatyourservice/kron_torch kron_torch/kron.py @884427c; PSGD-Kron of Xi-Lin Li), eager
(torch.compile disabled). Every step updates the preconditioner (preconditioner_update_probability=1.0 ->
update_counter >= 1/1.0 each step); the ~1%-probability Q balancing is DISABLED (opt.rng replaced by an object whose
random() returns 1.0). Probes: kron.py draws V = torch.randn_like(G) once per param per step (only when updating);
here torch.randn_like was replaced by a recorder, and extra.probes[t][name] holds the exact V (float32, shape of the
param) used at step t+1. Feed these instead of drawing random numbers.
Init per param (first step): momentum_buffer = 0; Q: for each dim i of size d_i: if d_i == 1 or d_i > max_size_triangular
or ndim < min_ndim_triangular (=2): Q_i = s * ones(d_i) (DIAGONAL, stored as a vector), else Q_i = s * I(d_i) (dense
upper-triangular), s = precond_init_scale ** (1/ndim) = 1. Matrices: Q = [Q_L (m x m), Q_R (n x n)] both triangular;
b_8: Q = [ones(8)] diagonal; s_1: [ones(1)].
Per step, per param (t = per-param step, 1-based):
  mb = b1 * mb + (1 - b1) * g                                     # mul_(b1).add_(g, alpha=1-b1)
  G = mb / (1 - b1**t)                                            # debiased momentum (precond dtype)
  --- preconditioner update (every step here), with probe V:
  G = G + sqrt(eps32) * mean(|G|) * V                             # eps32 = finfo(float32).eps; IN PLACE on G: the
                                                                  #   damped G is ALSO what gets preconditioned below
  A = Q_L G Q_R^T  (matrix; einsum 'ab,cd,bd->ac' with Q's)  /  Q0 * G (diag)     # A = Q applied to G along each dim
  conjB: start V^T-permuted; for each dim i: divide by Q_i (diag) or right-solve with upper-triangular Q_i
         (solve_triangular(Q_i, X, upper=True, left=False), i.e. X Q_i^{-1}), transposing back ->  conjB = Q^{-T} V
         (for a matrix: conjB = Q_L^{-T} V Q_R^{-1} in the original layout)
  for each dim i, term1 = A_(i) A_(i)^T, term2 = conjB_(i) conjB_(i)^T  (contract all other dims; diag dims keep
       only the diagonal: sum over other dims of A*A),
      upd = precond_lr * (term1 - term2)
      diag Q_i:  Q_i = Q_i - upd * Q_i / max(max|term1 + term2|, tiny)
      dense Q_i: upd = triu(upd); Q_i = Q_i - (upd / max(lb(term1 + term2), tiny)) @ Q_i
        where n = max|term1+term2| (inf-norm of the matrix = max abs entry), and if n > 0: lb = norm lower bound
        _lb(M, n): M' = M / n; j = argmax_j sum_i M'_ij^2 (column with the largest norm); x = M'[:, j];
        x = x^T M' ; x = x / ||x|| ; x = M' x^T ; lb = ||x|| * n      (else lb = n = 0 -> clamped to tiny)
      tiny = finfo(precond dtype).tiny
  --- precondition (with the UPDATED Q and the damped G):
  P = Q^T Q G: for a matrix  P = Q_L^T Q_L G Q_R^T Q_R ; diag: P = Q0*Q0*G
  P = P * min(1, 1.1 / (sqrt(mean(P^2)) + 1e-12))                # clip update RMS to 1.1
  if weight_decay != 0 and p.ndim >= 2: P = P + weight_decay * p  # coupled into the update, matrices only
  p = p - lr * P
State per param: step (int), momentum_buffer, Q (list of tensors), exprs (einsum strings, not stored here)."""
    case = C.base_case("psgd_kron", "PSGD-Kron (Li): Kronecker-factored preconditioner fitted on the Lie group of "
                       "triangular matrices from probes; preconditioner updated every step, probes recorded.",
                       {"library": "torch", "version": torch.__version__,
                        "api": "kron_torch.Kron(params, lr=0.01, b1=0.9, weight_decay=0.01, "
                               "preconditioner_update_probability=1.0, max_size_triangular=8192, min_ndim_triangular=2, "
                               "memory_save_mode=None, momentum_into_precond_update=True, precond_lr=0.1, "
                               "precond_init_scale=1.0, merge_dims=True, mu_dtype=None, precond_dtype=torch.float32)",
                        "code_path": "kron_torch @884427c kron.py imported from the fetched snapshot, "
                                     "TORCH_COMPILE_DISABLE=1 (eager), torch.randn_like replaced by a recorder "
                                     "(numpy PCG64 seed 2468, standard normal rounded to f32), opt.rng patched so the "
                                     "1% Q balancing never fires"},
                       C.jsonable(hp), sem, KR_NAMES, C.SHAPES, C.SCALES, init, grads, [[0.01]] * C.STEPS, t32,
                       C.state_json(o32, p32, KR_NAMES), C.groups_json(o32), tolerance,
                       C.spread(t32, t64, 1e-4, 1e-5),
                       extra={"probes": probes, "precond_updated": [True] * C.STEPS, "q_balanced": [False] * C.STEPS},
                       notes="The float64 re-run replays the same float32 probes (cast to float64) with "
                             "precond_dtype=float64 and .float() casts patched out.",
                       versions=VERSIONS)
    C.write_case(case)


if __name__ == "__main__":
    which = sys.argv[1:] or ["splus", "psgd_kron"]
    for w in which:
        globals()[w]()

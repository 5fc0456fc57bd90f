"""shampoo_edge: Meta's distributed_shampoo (github facebookresearch/optimizers @ f60660661194de26d3ee78bae6d15820ff8e583d,
not on PyPI; see fetch_thirdparty.sh) run on CPU: rank-deficient statistics, (1,n)/(n,1)/(n,) with the same data,
and the eigenvalue perturbation rule. No grafting, no momentum, lr = 1: the per-step parameter change IS the
preconditioned direction.

Modes (argv[1]):
  pinv (default) -> shampoo_edge.json: PseudoInverseConfig, default DistributedConfig (target_parameter_dimensionality
      = 1): merge_small_dims MERGES the 16x8 parameter into one (128,) block (128 <= max_preconditioner_dim = 1024), so
      w_16x8 is preconditioned as a vector by a rank-deficient 128x128 factor (full-matrix Adagrad).
  kron -> shampoo_edge_kron.json: the same with SingleDeviceDistributedConfig(target_parameter_dimensionality=2):
      unit dims are squeezed but a 2-D block is not merged: w_16x8 keeps its two Kronecker factors (16x16 of rank 8
      after step 1, and 8x8). (math.inf would skip the squeezing too: merge_small_dims returns the shape unchanged.)
  perturb -> shampoo_edge_perturb.json: the default PerturbationConfig, epsilon = 1e-12 (rounding-noise dominated).
"""

import sys

import numpy as np
import torch

import common as C

sys.path.insert(0, C.thirdparty("facebookresearch+optimizers"))
from distributed_shampoo import (DistributedShampoo, EigenConfig, PseudoInverseConfig,  # noqa: E402
                                RootInvShampooPreconditionerConfig)
from distributed_shampoo.shampoo_types import SingleDeviceDistributedConfig  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else "pinv"

COMMIT = "f60660661194de26d3ee78bae6d15820ff8e583d"
NAMES = ["w_16x8", "row_1x8", "col_8x1", "vec_8", "s_1"]
SHAPES = {"w_16x8": [16, 8], "row_1x8": [1, 8], "col_8x1": [8, 1], "vec_8": [8], "s_1": [1]}
SCALES = {"w_16x8": 1.0, "row_1x8": 3.0, "col_8x1": 3.0, "vec_8": 3.0, "s_1": 0.01}


def inputs():
    base = {"w_16x8": [16, 8], "vec_8": [8], "s_1": [1]}
    init = C.make_init(base)
    grads = C.make_grads(base, {n: SCALES[n] for n in base})
    init["row_1x8"] = init["vec_8"].reshape(1, 8).copy()
    init["col_8x1"] = init["vec_8"].reshape(8, 1).copy()
    for g in grads:
        g["row_1x8"] = g["vec_8"].reshape(1, 8).copy()
        g["col_8x1"] = g["vec_8"].reshape(8, 1).copy()
    return init, grads


PINV = MODE in ("pinv", "kron")
EPS = 0.0 if PINV else 1e-12
DIST = SingleDeviceDistributedConfig(target_parameter_dimensionality=2 if MODE == "kron" else 1)


def EIGEN():
    if PINV:
        return EigenConfig(rank_deficient_stability_config=PseudoInverseConfig(rank_atol=0.0, rank_rtol=1e-10))
    return EigenConfig()


def main():
    init, grads = inputs()
    hp = dict(lr=1.0, betas=[0.0, 1.0], epsilon=EPS, weight_decay=0.0, max_preconditioner_dim=1024,
              precondition_frequency=1, start_preconditioning_step=1, use_bias_correction=True, grafting_config=None,
              preconditioner_config="RootInvShampooPreconditionerConfig(amortized_computation_config=EigenConfig(" + ("rank_deficient_stability_config=PseudoInverseConfig(rank_atol=0.0, rank_rtol=1e-10)" if PINV else "") + "), "
                                    "factor_matrix_dtype=torch.float64)",
              distributed_config=f"SingleDeviceDistributedConfig(target_parameter_dimensionality={DIST.target_parameter_dimensionality})")

    def make(ps, ns):
        return DistributedShampoo(ps, lr=1.0, betas=(0.0, 1.0), epsilon=EPS, weight_decay=0.0,
                                  max_preconditioner_dim=1024, precondition_frequency=1, start_preconditioning_step=1,
                                  use_bias_correction=True, grafting_config=None, distributed_config=DIST,
                                  preconditioner_config=RootInvShampooPreconditionerConfig(
                                      amortized_computation_config=EIGEN(), factor_matrix_dtype=torch.float64))

    t32, o32, p32 = C.run_torch(make, NAMES, init, grads, torch.float32, patch=False)
    t64, _, _ = C.run_torch(make, NAMES, init, grads, torch.float64, patch=False)
    dirs, prev = [], init
    for t in t32:
        dirs.append({n: C.flat32(np.float32(prev[n]) - t[n]) for n in NAMES})
        prev = t
    same = all(np.array_equal(np.asarray(d["row_1x8"]), np.asarray(d["vec_8"])) and
               np.array_equal(np.asarray(d["col_8x1"]), np.asarray(d["vec_8"])) for d in dirs)
    tolerance = C.tol(1e-3, 2e-3, "LOOSE: pseudo-inverse roots of rank-deficient running sums; the f32-vs-f64 re-run "
                      "differs by up to ~1.2e-3 absolute already at step 1 (checks.f32_vs_f64_per_step_param_max_abs_diff); "
                      "the cause (which f32 cast inside distributed_shampoo's apply path) was not pinned down")
    if MODE == "kron":
        SHAPE_NOTE = "Nothing is merged: w_16x8 stays (16, 8) with a 16x16 and an 8x8 factor."
        K_W = 2
        RANK_NOTE = ("after step 1 the 16x16 left factor of w_16x8 is G1 G1^T (rank 8): its 8 (near-)zero eigenvalues "
                     "are dropped by the pseudo-inverse, so D_1 = U V^T of G1's thin SVD (norm sqrt(8)); from step 2 the "
                     "factor has full rank.")
    else:
        SHAPE_NOTE = ("With target_parameter_dimensionality = 1 the 2-D (16, 8) is MERGED into one (128,) block "
                      "(16 * 8 = 128 <= 1024): w_16x8 is preconditioned like a vector, F_0 = sum g g^T is 128 x 128.")
        K_W = 1
        RANK_NOTE = ("w_16x8's 128x128 factor has rank t after t steps (at most 20 of 128): D_1 = g_1 / ||g_1|| and every "
                     "direction has norm 1 (see Vectors).")
    sem = f"""distributed_shampoo (facebookresearch/optimizers @{COMMIT[:7]}) DistributedShampoo, single device, CPU, configured so
that the update is the bare Shampoo direction: betas = (beta1, beta2) = (0.0, 1.0) (no momentum/filtering; beta2 = 1
-> factor matrices are running SUMS: L = L + G G^T, no (1-beta2) weight, no bias correction since beta2 == 1),
grafting_config=None, weight_decay=0, lr=1, precondition_frequency=1, start_preconditioning_step=1 (preconditioned
from the first step), root-inverse Shampoo with EigenConfig() (torch.linalg.eigh, PerturbationConfig(
perturb_before_computation=True)), factor_matrix_dtype=float64 (statistics and eigh in float64, params f32).
Shape handling (utils/shampoo_utils.merge_small_dims, read and verified here): dimensions of size 1 are REMOVED
(squeezed) before blocking, then adjacent dims are merged (from the last) while their product <= max_preconditioner_dim
(1024) and the tensor has more dims than distributed_config.target_parameter_dimensionality
(= {DIST.target_parameter_dimensionality} here). {SHAPE_NOTE} (1, 8) and (8, 1) both become (8,) and are
preconditioned exactly like the vector (8,): extra.unit_dims_identical_to_vector = {same}. s_1 (1,) stays (1,)
(all-ones shape -> (1,)).
Per step, per block with merged shape of order k (k = {K_W} for w_16x8, 1 for the vectors):
  for each dim i: F_i = F_i + G_(i) G_(i)^T  (float64; F_i starts at 0; G_(i) = G unfolded along dim i)
  THIS FILE (MODE {MODE}): EigenConfig(rank_deficient_stability_config=PseudoInverseConfig(rank_atol=0, rank_rtol=1e-10)),
  epsilon = 0: L, Q = eigh(F_i) (float64); threshold = max(1e-10 * relu(max(L)), 0); inv = 0 where L <= threshold else
  L^(-1/(2k)); F_i^(-1/(2k)) = Q diag(inv) Q^T  (pseudo-inverse root; no perturbation).
  The DEFAULT rule (PerturbationConfig, not used for the stored trajectory, see checks.warning_perturbation_variant):
  root inverse of each F_i with exponent 1/(2k) (matrix: F^(-1/4) per side; vector: F^(-1/2)):
      A = F_i + epsilon * I                                 # perturb BEFORE the eigendecomposition (epsilon = 1e-12)
      L, Q = eigh(A)                                        # float64
      lambda_min = min(L)
      if lambda_min < epsilon: L = L - lambda_min ; L = L + epsilon   # shift the spectrum so its minimum is epsilon
      F_i^(-1/(2k)) = Q diag(L^(-1/(2k))) Q^T
      (absolute epsilon; no relative-to-max rule and no pseudo-inverse in this configuration -- PseudoInverseConfig
       would instead zero eigenvalues <= rank_rtol * max(L) clamped at rank_atol)
  direction D = F_0^(-1/4) G F_1^(-1/4) (matrix) ; D = F_0^(-1/2) g (vector, i.e. g / (|g|^2 + eps)^(1/2) elementwise
      is NOT what happens: F_0 is the full outer-product sum, a dense 8x8 matrix)
  p = p - lr * D        (extra.directions[t] = D of step t+1 = p_before - p_after, float32)
Rank deficiency: {RANK_NOTE}
Vectors: F_0 = g1 g1^T has rank 1 after step 1, rank t after t <= 8 steps; with the pseudo-inverse,
||F_0^(+(-1/2)) g_t|| = 1 while g_1..g_t are independent (leverage of the newest column).
State: block_0 (factor matrices, inverse roots, ...), step."""
    per = [{n: float(np.abs(a[n].astype(np.float64) - b[n].astype(np.float64)).max()) for n in NAMES}
           for a, b in zip(t32, t64)]
    summary = {"pinv": "rank-deficient statistics (16x8 merged into a 128-vector by merge_small_dims), (1,8)/(8,1)/(8,) "
                       "same data, pseudo-inverse roots.",
               "kron": "rank-deficient 16x16 Kronecker factor of a 16x8 gradient (no dim merging), (1,8)/(8,1)/(8,) same "
                       "data, pseudo-inverse roots.",
               "perturb": "rank-deficient statistics, eigenvalue perturbation rule (rounding-noise dominated)."}[MODE]
    case = C.base_case("shampoo_edge" + ("" if MODE == "pinv" else "_" + MODE),
                       "distributed_shampoo preconditioner alone (no grafting/momentum, lr=1): " + summary,
                       {"library": "torch", "version": torch.__version__,
                        "api": "distributed_shampoo.DistributedShampoo(params, " + ", ".join(f"{k}={v}" for k, v in hp.items()) + ")",
                        "code_path": f"facebookresearch/optimizers @{COMMIT} imported from the fetched snapshot, "
                                     "single-device distributor, CPU"},
                       hp, sem, NAMES, SHAPES, SCALES, init, grads, [[1.0]] * C.STEPS, t32, {}, None, tolerance,
                       C.spread(t32, t64, 1e-3, 2e-3),
                       extra={"directions": dirs, "unit_dims_identical_to_vector": same},
                       notes="row_1x8, col_8x1 and vec_8 share the same data (vec_8's init and grads reshaped). "
                             "final_state is not stored (distributed_shampoo keeps it in packed block structures); "
                             "compare params / extra.directions.",
                       versions=C.library_versions(distributed_shampoo_facebookresearch_optimizers_commit=COMMIT))
    case["checks"]["f32_vs_f64_per_step_param_max_abs_diff"] = per
    case["checks"]["warning_perturbation_variant"] = ("With the default PerturbationConfig and epsilon = 1e-12 and rank-deficient sums, the eigenvalues shifted to epsilon "
                                 "give inverse roots of 1e3 (matrix) / 1e6 (vectors) in directions the gradient "
                                 "only reaches through rounding: the trajectory is rounding-noise dominated there "
                                 "(see per-step spread). Use this file for the shape/perturbation semantics and for "
                                 "the steps/params whose spread is below tolerance. Measured (gen_shampoo_edge.py perturb): "
                                 "f32-vs-f64 spread 0.28-1.0 absolute from step 1 -- unusable as a trajectory, which is why "
                                 "this file uses PseudoInverseConfig (epsilon = 0, eigenvalues <= 1e-10 * max(L) -> 0).")
    C.write_case(case)


if __name__ == "__main__":
    main()

"""shampoo_edge: Meta's distributed_shampoo (github facebookresearch/optimizers @ f60660661194de26d3ee78bae6d15820ff8e583d,
not on PyPI; see fetch_thirdparty.sh) run on CPU: rank-deficient 16x8 statistic, (1,n)/(n,1)/(n,) with the same data,
and the eigenvalue perturbation rule. No grafting, no momentum, lr = 1: the per-step parameter change IS the
preconditioned direction."""

import sys

import numpy as np
import torch

import common as C

sys.path.insert(0, C.thirdparty("facebookresearch+optimizers"))
from distributed_shampoo import (DistributedShampoo, EigenConfig, PseudoInverseConfig,  # noqa: E402
                                RootInvShampooPreconditionerConfig)

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


EPS = 0.0 if MODE == "pinv" else 1e-12


def EIGEN():
    if MODE == "pinv":
        return EigenConfig(rank_deficient_stability_config=PseudoInverseConfig(rank_atol=0.0, rank_rtol=1e-10))
    return EigenConfig()


def main():
    init, grads = inputs()
    hp = dict(lr=1.0, betas=[0.0, 1.0], epsilon=EPS, weight_decay=0.0, max_preconditioner_dim=1024,
              precondition_frequency=1, start_preconditioning_step=1, use_bias_correction=True, grafting_config=None,
              preconditioner_config="RootInvShampooPreconditionerConfig(amortized_computation_config=EigenConfig(" + ("rank_deficient_stability_config=PseudoInverseConfig(rank_atol=0.0, rank_rtol=1e-10)" if MODE == "pinv" else "") + "), "
                                    "factor_matrix_dtype=torch.float64)")

    def make(ps, ns):
        return DistributedShampoo(ps, lr=1.0, betas=(0.0, 1.0), epsilon=EPS, weight_decay=0.0,
                                  max_preconditioner_dim=1024, precondition_frequency=1, start_preconditioning_step=1,
                                  use_bias_correction=True, grafting_config=None,
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
    sem = f"""distributed_shampoo (facebookresearch/optimizers @{COMMIT[:7]}) DistributedShampoo, single device, CPU, configured so
that the update is the bare Shampoo direction: betas = (beta1, beta2) = (0.0, 1.0) (no momentum/filtering; beta2 = 1
-> factor matrices are running SUMS: L = L + G G^T, no (1-beta2) weight, no bias correction since beta2 == 1),
grafting_config=None, weight_decay=0, lr=1, precondition_frequency=1, start_preconditioning_step=1 (preconditioned
from the first step), root-inverse Shampoo with EigenConfig() (torch.linalg.eigh, PerturbationConfig(
perturb_before_computation=True)), factor_matrix_dtype=float64 (statistics and eigh in float64, params f32).
Shape handling (utils/shampoo_utils.merge_small_dims, read and verified here): dimensions of size 1 are REMOVED
(squeezed) before blocking, and adjacent dims are merged while their product <= max_preconditioner_dim... but a
plain 2-D (16, 8) stays (16, 8) as both dims are needed to reach target dimensionality; (1, 8) and (8, 1) both become
(8,) and are preconditioned exactly like the vector (8,): extra.unit_dims_identical_to_vector = {same}. s_1 (1,) stays
(1,) (all-ones shape -> (1,)).
Per step, per block with squeezed shape of order k (k = 2 for w_16x8, 1 for the vectors):
  for each dim i: F_i = F_i + G_(i) G_(i)^T  (float64; F_i starts at 0; G_(i) = G unfolded along dim i)
  THIS FILE (MODE pinv): EigenConfig(rank_deficient_stability_config=PseudoInverseConfig(rank_atol=0, rank_rtol=1e-10)),
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
Rank deficiency: after step 1 the 16x16 left factor of w_16x8 is G1 G1^T (rank 8): 8 eigenvalues are ~0 (possibly
slightly negative from rounding) -> shifted to epsilon = 1e-12 -> their inverse 4th root is 1e3. G1 has no component
in that null space, so step 1 is fine; step 2 onward the factor is full rank (rank 16 after two steps).
Similarly for the vectors: F_0 = g1 g1^T has rank 1 after step 1 (7 eigenvalues at epsilon), rank t after t steps.
State: block_0 (factor matrices, inverse roots, ...), step."""
    per = [{n: float(np.abs(a[n].astype(np.float64) - b[n].astype(np.float64)).max()) for n in NAMES}
           for a, b in zip(t32, t64)]
    case = C.base_case("shampoo_edge" + ("" if MODE == "pinv" else "_perturb"), "distributed_shampoo preconditioner alone (no grafting/momentum, lr=1): "
                       "rank-deficient 16x8 statistic, (1,8)/(8,1)/(8,) same data, eigenvalue perturbation rule.",
                       {"library": "torch", "version": torch.__version__,
                        "api": "distributed_shampoo.DistributedShampoo(params, lr=1.0, betas=(0.0, 1.0), epsilon=1e-12, "
                               "weight_decay=0.0, max_preconditioner_dim=1024, precondition_frequency=1, "
                               "start_preconditioning_step=1, use_bias_correction=True, grafting_config=None, "
                               "preconditioner_config=RootInvShampooPreconditionerConfig(amortized_computation_config="
                               "EigenConfig(), factor_matrix_dtype=torch.float64))",
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

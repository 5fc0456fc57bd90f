//! Zoo optimizers of issue 11's Muon family: [`MuonPolarExpress`] (the Polar Express
//! Newton–Schulz schedule) and [`AdaMuon`] (element-wise second moments on the orthogonalized
//! momentum). Re-exported from [`crate::zoo`]; the conventions of the zoo's module
//! documentation apply. Checked against reference trajectories in
//! `tests/tests/it/conformance_muon_mini.rs`.

#[allow(unused_imports)] // named by the docs' links
use super::{AdamW, Muon};
use crate::optimizer;

optimizer! {
    /// Muon with the Polar Express Newton–Schulz schedule and Moonlight's RMS-matching step
    /// scale `0.2 · sqrt(max(rows, cols))`; AdamW for everything else (as [`Muon`]).
    ///
    /// ```text
    /// matrices (rows × cols view):
    ///   p = p * (1 - lr * weight_decay)                         (decoupled, unscaled lr, first)
    ///   buf = buf + (1 - momentum) (grad - buf)
    ///   u = nesterov ? grad + momentum (buf - grad) : buf
    ///   O = orthogonalize(u, coeffs = polar_express, steps = ns_steps)
    ///       (X = u / ‖u‖_F; iteration i: X ← a_i X + (b_i A + c_i A²) X, A = X Xᵀ,
    ///        (a_i, b_i, c_i) = matrix::NS_POLAR_EXPRESS[min(i, 7)])
    ///   p = p - lr * 0.2 * sqrt(max(rows, cols)) * O
    /// others: AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps,
    ///               weight_decay = adam_weight_decay>
    /// ```
    /// Sources: Amsel, Persson, Musco & Gower, "The Polar Express: Optimal Matrix Sign Methods
    /// and Their Application to the Muon Algorithm" (2025) for the schedule; Liu et al., "Muon is
    /// Scalable for LLM Training" (Moonlight, 2025) for the scale, which gives the update the RMS
    /// of AdamW's (about 0.2) so that AdamW's `lr` and `weight_decay` carry over. The reference
    /// is pytorch-optimizer 4.1.0 `Muon(use_muon=True, ns_coeffs='polar_express',
    /// use_adjusted_lr=True, nesterov=True)`, per-parameter path. Differences from the reference:
    /// Newton–Schulz runs in the parameter's type (the reference's default is bfloat16; its
    /// float32 run is the conformance target); the input is normalised by `‖u‖_F` exactly where
    /// the reference divides by `max(‖u‖_F, 1e-7)` (the same above `1e-7`; scale-invariant
    /// below); `maximize` and `weight_decouple = false` are not provided. State: `buf`.
    pub MuonPolarExpress<lr = 0.02, momentum = 0.95, nesterov = true, ns_steps = 5, weight_decay = 0.0,
                         adam_lr = 3e-4, adam_beta1 = 0.9, adam_beta2 = 0.95, adam_eps = 1e-10, adam_weight_decay = 0.0> {
        matrix | tensor if !(name.contains("embed") || name.contains("head")) => {
            let buf = momentum(grad, momentum, nesterov = nesterov);
            let o = orthogonalize(buf, steps = ns_steps, coeffs = polar_express);
            param = decoupled_decay(param, lr, weight_decay) - lr * 0.2 * sqrt(max(rows, cols)) * o;
        }
        _ => AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps, weight_decay = adam_weight_decay>,
    }
}

optimizer! {
    /// AdaMuon: Muon whose orthogonalized momentum is normalised element-wise by a bias-corrected
    /// second moment OF THE ORTHOGONALIZED UPDATE, rescaled to RMS 1 and by Moonlight's
    /// `0.2 · sqrt(max(rows, cols))`; AdamW for everything else (as [`Muon`]).
    ///
    /// ```text
    /// matrices (rows × cols view):
    ///   p = p * (1 - lr * weight_decay)                         (decoupled, unscaled lr, first)
    ///   m = m + (1 - beta1) (grad - m)                          (no Nesterov, no bias correction)
    ///   O = orthogonalize(m, steps = ns_steps)                  (Keller's triple)
    ///   v = beta2 v + (1 - beta2) O²                            (one value per element)
    ///   N = O / (sqrt(v / (1 - beta2^t)) + eps)                 (eps outside the root)
    ///   U = N * sqrt(min(rows, cols)) / (‖N‖_F + eps)          (‖U‖_F = sqrt(min(rows, cols)))
    ///   p = p - lr * 0.2 * sqrt(max(rows, cols)) * U
    /// others: AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps,
    ///               weight_decay = adam_weight_decay>
    /// ```
    /// Source: Si et al., "AdaMuon: Adaptive Muon Optimizer" (2025). The reference is
    /// pytorch-optimizer 4.1.0 `AdaMuon(use_muon=True, ns_coeffs='original',
    /// use_adjusted_lr=True)`, per-parameter path (the authors' code was not available). On the
    /// first step `N = sign(O)` up to `eps`. Differences from the reference: Newton–Schulz in the
    /// parameter's type (its default is bfloat16; its float32 run is the conformance target),
    /// normalised by `‖m‖_F` exactly (the reference: `max(‖m‖_F, 1e-7)`); `‖N‖_F` accumulated in
    /// `f64`; `maximize`, `weight_decouple = false` and `use_adjusted_lr = false` are not
    /// provided. State: `m`, `v` (one value per element each). Two loops per step around the
    /// Newton–Schulz barrier, plus the norm's.
    pub AdaMuon<lr = 0.02, beta1 = 0.9, beta2 = 0.95, eps = 1e-10, weight_decay = 0.0, ns_steps = 5,
                adam_lr = 3e-4, adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-10, adam_weight_decay = 0.0> {
        matrix | tensor if !(name.contains("embed") || name.contains("head")) => {
            let m = momentum(grad, beta1);
            let o = orthogonalize(m, steps = ns_steps);
            let v = second_moment(o, beta2);
            let n = o / (sqrt(v / (1.0 - pow(beta2, step))) + eps);
            let u = n * (sqrt(min(rows, cols)) / (norm(n) + eps));
            param = decoupled_decay(param, lr, weight_decay) - lr * 0.2 * sqrt(max(rows, cols)) * u;
        }
        _ => AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps, weight_decay = adam_weight_decay>,
    }
}

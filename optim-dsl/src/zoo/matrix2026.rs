//! Zoo optimizers built on the randomized and eigenbasis matrix primitives of issue 11:
//! [`Splus`] (`eigen_sign`), [`PsgdKron`] (`psgd_precondition`) and [`Dion`]
//! (`low_rank_orthonormalize`). Re-exported from [`crate::zoo`]; the conventions of the zoo's
//! module documentation apply. Checked against reference trajectories in
//! `tests/tests/it/conformance_matrix2026.rs`.

use super::AdamW;
use crate::optimizer;

optimizer! {
    /// SPlus: the sign of the momentum taken in the eigenbases of the gradient's Gram
    /// statistics, with a shape-scaled step and an evaluation EMA of the parameters.
    ///
    /// ```text
    /// g = maximize ? -grad : grad
    /// m = m + (1 - beta1) (g - m)                                  (kept in the original basis)
    /// matrices:  u = Q_L sign(Q_L^T m Q_R) Q_R^T                   (`eigen_sign`; sign(0) = 0)
    ///              S_L = lerp(S_L, G G^T, 1 - beta2), S_R = lerp(S_R, G^T G, 1 - beta2) from the
    ///              raw grad, for the sides of length < max_dim (the others are never rotated);
    ///              Q = eigenvectors(S + eps I) refreshed AFTER the step at t == 1 and every
    ///              t % inverse_steps == 0 (step 1 uses Q = I)
    ///            scaled_lr = lr * 2 / (rows + cols)      if rows, cols <= max_dim
    ///                        lr * nonstandard_constant   otherwise
    /// others:    u = sign(m), scaled_lr = lr * nonstandard_constant (rank > 2 included)
    /// p = p - scaled_lr * u
    /// ema = ema + (1 - ema_rate) (p - ema)                         (an `output_state`)
    /// p = p * (1 - scaled_lr * weight_decay)                       (decoupled, after the update)
    /// ```
    /// Evaluate with `ema / (1 - ema_rate^t)` (the reference's `eval()`): the raw EMA is the
    /// state buffer `"ema"` (`DslOptimizer::state_buffer`); `swap_state_with_model(model, "ema")`
    /// swaps it in without the bias correction, which is negligible only once
    /// `ema_rate^t ≈ 0`. State: `m`, `ema` (one value per element), and per matrix `u.stats`,
    /// `u.q` (`d × d` per rotated side).
    ///
    /// Source: Frans, Levine & Abbeel, "A Stable Whitening Optimizer for Efficient Neural
    /// Network Training" (2025), as ported by pytorch-optimizer 4.1 (`SPlus`, per-parameter path;
    /// the authors' code is JAX, kvfrans/splus); checked against it on 20 steps
    /// (`tests/fixtures/splus.json`), where its `f32` parameters stay within the spread between
    /// the reference's own `f32` and `f64` runs. Differences: the eigendecomposition is faer's,
    /// in `f64` (the reference's is in the parameter's type; the update does not depend on the
    /// order or signs of the eigenvectors); the Gram statistics are updated after the direction
    /// (the reference updates them just before it, but they only enter the next refresh);
    /// `weight_decouple = False` and `fixed_decay` are not offered.
    pub Splus<lr = 0.1, beta1 = 0.9, beta2 = 0.999, weight_decay = 1e-2, ema_rate: unit = 0.999,
              inverse_steps: count = 100, nonstandard_constant: positive = 1e-3, max_dim: count = 10000,
              eps: nonneg = 1e-30, maximize = false> {
        matrix => {
            let g = select(maximize, -grad, grad);
            let m = momentum(g, beta1);
            let u = eigen_sign(m, grad, beta2, update_freq = inverse_steps, max_dim = max_dim, eps = eps);
            let scaled_lr = lr * select(rows <= max_dim && cols <= max_dim, 2.0 / (rows + cols), nonstandard_constant);
            let p = param - scaled_lr * u;
            let ema = output_state(0.0);
            ema = lerp(ema, p, 1.0 - ema_rate);
            param = decoupled_decay(p, scaled_lr, weight_decay);
        }
        _ => {
            let g = select(maximize, -grad, grad);
            let m = momentum(g, beta1);
            let scaled_lr = lr * nonstandard_constant;
            let p = param - scaled_lr * sign(m);
            let ema = output_state(0.0);
            ema = lerp(ema, p, 1.0 - ema_rate);
            param = decoupled_decay(p, scaled_lr, weight_decay);
        }
    }
}

optimizer! {
    /// PSGD-Kron: momentum preconditioned by Kronecker factors fitted on the Lie group of
    /// triangular matrices from random probes (Xi-Lin Li's PSGD, kron_torch's `Kron`).
    ///
    /// ```text
    /// mb = b1 * mb + (1 - b1) * grad;   G = mb / (1 - b1^t)
    /// prob = clamp(max_prob * exp(-prob_decay * (t - 1 - flat_start)), min_prob, max_prob)
    /// since = since + 1; due = since >= 1 / prob; if due: since = 0        (a scalar state)
    /// P = psgd_precondition(G, update = due)     if due: G += sqrt(eps_f32) mean|G| V (probe V),
    ///     factors Q_i fitted from A = Q G and B = Q^{-T} V; then P = Q^T Q G (damped G)
    ///     (`optim_dsl::matrix::psgd_precondition`; factors triangular, diagonal for sides of
    ///     size 1 or > max_size_triangular and for vectors/scalars)
    /// P = P * min(1, 1.1 / (rms(P) + 1e-12))                               (update RMS clip)
    /// matrices (rank >= 2):  p = p - lr * (P + weight_decay * p)           (coupled decay)
    /// others:                p = p - lr * P                                 (no decay)
    /// ```
    /// The probes are drawn per parameter from `standard_normal_probe(seed, name, t)`
    /// (deterministic, the same after resuming from a checkpoint), or supplied for the next step
    /// with `DslOptimizer::set_probe`. State: `mb` (one value per element), `pg.q` (the
    /// factors: `d × d` per triangular side, `d` per diagonal side) and `since`.
    ///
    /// Source: Li, "Preconditioned Stochastic Gradient Descent" (IEEE TNNLS 2018) and "Stochastic
    /// Hessian Fittings with Lie Groups" (2024); Evan Walters' kron_torch @884427c (`Kron`,
    /// default `preconditioner_update_probability` schedule written with `max_prob`, `min_prob`,
    /// `prob_decay`, `flat_start`), checked against it with its recorded probes on 20 steps
    /// (`tests/fixtures/psgd_kron.json`). Differences: the update counter and its probability
    /// are per parameter and in `f64` (the reference: one `f32` counter for all parameters;
    /// identical when all parameters start together, except at exact `1 / prob` ties); the
    /// ~1%-probability balancing of the factors' norms, `memory_save_mode`,
    /// `momentum_into_precond_update = False` and the dtype options are not offered; a tensor of
    /// rank > 2 uses the matrix view `d0 × (d1·…)` (the reference merges it into whichever of
    /// `(d0·…·d_{k-1}) × d_k` and `d0 × (d1·…)` is squarer).
    pub PsgdKron<lr = 3e-4, b1: unit = 0.9, weight_decay = 0.0, precond_lr = 0.1, precond_init_scale: positive = 1.0,
                 max_size_triangular: count = 8192, min_ndim_triangular: count = 2,
                 max_prob: positive = 1.0, min_prob: positive = 0.03, prob_decay: nonneg = 0.001, flat_start: nonneg = 500.0,
                 seed: nonneg = 0.0> {
        matrix | tensor => {
            let mb = state(0.0);
            mb = b1 * mb + (1.0 - b1) * grad;
            let prob = clamp(max_prob * exp(-prob_decay * (step - 1.0 - flat_start)), min_prob, max_prob);
            let since = scalar_state(0.0);
            let due = since + 1.0 >= 1.0 / prob;
            since = select(due, 0.0, since + 1.0);
            let g = mb / (1.0 - pow(b1, step));
            let pg = psgd_precondition(g, precond_lr = precond_lr, precond_init_scale = precond_init_scale,
                                       max_size_triangular = max_size_triangular, min_ndim_triangular = min_ndim_triangular,
                                       update = due, seed = seed);
            let clipped = pg * min(1.0, 1.1 / (rms(pg) + 1e-12));
            param -= lr * (clipped + l2(weight_decay));
        }
        _ => {
            let mb = state(0.0);
            mb = b1 * mb + (1.0 - b1) * grad;
            let prob = clamp(max_prob * exp(-prob_decay * (step - 1.0 - flat_start)), min_prob, max_prob);
            let since = scalar_state(0.0);
            let due = since + 1.0 >= 1.0 / prob;
            since = select(due, 0.0, since + 1.0);
            let g = mb / (1.0 - pow(b1, step));
            let pg = psgd_precondition(g, precond_lr = precond_lr, precond_init_scale = precond_init_scale,
                                       max_size_triangular = max_size_triangular, min_ndim_triangular = min_ndim_triangular,
                                       update = due, seed = seed);
            param -= lr * pg * min(1.0, 1.1 / (rms(pg) + 1e-12));
        }
    }
}

optimizer! {
    /// Dion: orthonormalized low-rank updates from a rank-r power iteration with error
    /// feedback, for matrices; AdamW (the official code's `adamw` algorithm) for everything
    /// else.
    ///
    /// ```text
    /// matrices (rows × cols):
    ///   B = M + grad
    ///   P = B Q;  P = qr(P).Q;  R = B^T P              (power_iters times; Q = R in between)
    ///   M = B - (1 - mu) P R^T                         (error feedback)
    ///   Q = R / (column norms of R + epsilon)
    ///   p = p * (1 - lr * weight_decay) - lr * sqrt(rows / cols) * P Q^T
    ///   (`optim_dsl::matrix::low_rank_orthonormalize`; rank r = rank_fraction · min(rows, cols)
    ///    rounded up to a multiple of rank_multiple_of; a wide matrix runs on B^T)
    /// others: AdamW<lr = lr, beta1 = beta1, beta2 = beta2, eps = epsilon, weight_decay = weight_decay>
    /// ```
    /// The initial `Q` (`min(rows, cols) × r`, standard normal) comes from
    /// `standard_normal_probe(seed, name, 1)` or from a probe supplied with
    /// `DslOptimizer::set_probe` before the first step. State per matrix: `o.momentum` (one
    /// value per element) and `o.q`.
    ///
    /// Source: Ahn, Xu, Abreu & Langford, "Dion: Distributed Orthonormalized Updates" (2025),
    /// Algorithm 1 (single device, no sharding), with the official code's conventions
    /// (microsoft/dion `dion_reference.py`: transposition of wide matrices, `epsilon`, all-zero
    /// handling, rank rounding, decay before the update). Checked against a NumPy
    /// implementation of that algorithm in float32 and float64 (`tests/refgen/gen_dion.py`,
    /// `tests/fixtures/dion.json`). Differences from the official code: Householder QR only
    /// (its default `qr_method = "rcqr"`, a randomized Cholesky QR, computes the same `P` up to
    /// rounding on well-conditioned inputs), column norms in the parameter's type (the official
    /// code uses float32), and no distributed variants.
    pub Dion<lr = 0.01, mu = 0.95, weight_decay = 0.01, rank_fraction: positive = 1.0, rank_multiple_of: count = 1,
             power_iters: count = 1, epsilon = 1e-8, seed: nonneg = 0.0, beta1 = 0.9, beta2 = 0.95> {
        matrix => {
            let o = low_rank_orthonormalize(grad, mu, rank_fraction = rank_fraction, rank_multiple_of = rank_multiple_of,
                                            power_iters = power_iters, epsilon = epsilon, seed = seed);
            param = decoupled_decay(param, lr, weight_decay) - lr * sqrt(rows / cols) * o;
        }
        _ => AdamW<lr = lr, beta1 = beta1, beta2 = beta2, eps = epsilon, weight_decay = weight_decay>,
    }
}

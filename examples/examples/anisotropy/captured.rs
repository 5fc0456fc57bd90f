//! Part 3's third column: K-FAC whose factors are captured from a dfdx model
//! (`optim_dsl::kfac`), not estimated on the host.
//!
//! The layer is `KfacLinear<20, 4>` in `f64` (`ŷ = W x + b`, `W` initialised as in the other
//! columns, `b = 0`), the loss dfdx's `mse_loss` (mean over the batch and the 4 outputs). Each
//! step runs two backward passes on the same batch, as Martens & Grosse do for the Fisher:
//!
//! 1. a *statistics* pass on targets sampled from the model's predictive distribution,
//!    `ỹ = ŷ + ξ`, `ξ ~ N(0, I)`: the layer records `Σ x xᵀ` and `Σ ĝ ĝᵀ` (`ĝ = (2/4)(ŷ − ỹ)`,
//!    so `E[ĝ ĝᵀ] = I/4`), `KfacStats` folds them into its running factors (decay 0.95, handed
//!    to the optimizer every step) and the weight gradient of this pass is discarded;
//! 2. a *gradient* pass on the real targets through `KfacLinear::linear()` (the same tensors,
//!    no capture), then the zoo's `KFac` step `W −= lr (G + λI)⁻¹ ∇W (A + λI)⁻¹` (`λ = 1e-3`;
//!    the bias takes `KFac`'s SGD fallback).
//!
//! `lr = 0.25` makes the step `0.25 · 4 · (2/4) E[e xᵀ] A⁻¹ = 0.5 E[e xᵀ] A⁻¹`: the
//! host-estimated column's `lr = 0.5` step, with both factors now captured and averaged by EMA
//! instead of a running mean.

use super::{sin_theta, Gauss, Outcome, CAP, LR_BATCH, LR_D, LR_K, SEED, SIN_TARGET};
use dfdx::prelude::*;
use optim_dsl::kfac::{builder::KfacLinear, KfacStats, KfacStatsConfig};
use optim_dsl::zoo::{KFac, KFacConfig};
use optim_dsl::{DfdxUpdate, OptimError};

/// One run of the captured-K-FAC column on inputs with covariance `diag(sigma)`.
pub fn run(sigma: &[f64]) -> Result<Outcome, OptimError> {
    let (d, k, b) = (LR_D, LR_K, LR_BATCH);
    // the same W*, initial W and batches as `representation_run`
    let mut gauss = Gauss::new(SEED ^ 0x5EED_0004);
    let q = super::random_orthogonal(d, &mut gauss);
    let w_star: Vec<f64> = q[..k * d].to_vec();
    let w0: Vec<f64> = gauss
        .vec(k * d)
        .iter()
        .map(|x| x / (d as f64).sqrt())
        .collect();
    let std: Vec<f64> = sigma.iter().map(|s| s.sqrt()).collect();
    let dev = Cpu::seed_from_u64(SEED);
    let mut model = dev.build_module::<KfacLinear<LR_D, LR_K>, f64>();
    model.weight.copy_from(&w0);
    model.bias.copy_from(&[0.0; LR_K]);
    let mut stats = KfacStats::new(KfacStatsConfig {
        update_every: 1,
        ..Default::default()
    })?;
    let mut opt = KFac::<f64>::new(KFacConfig {
        lr: 0.25.into(),
        damping: 1e-3.into(),
        ..Default::default()
    })?;
    let mut grads = model.alloc_grads();
    stats.watch(&model, &mut grads)?;
    let mut data = Gauss::new(SEED ^ 0x5EED_0005);
    let mut probe = Gauss::new(SEED ^ 0x5EED_0006);
    for step in 1..=CAP {
        let xs: Vec<f64> = (0..b * d).map(|i| std[i % d] * data.next()).collect();
        let mut ys = vec![0.0; b * k];
        for (n, x) in xs.chunks_exact(d).enumerate() {
            let _noise = data.vec(k); // keeps the batch stream aligned with the other columns
            for r in 0..k {
                ys[n * k + r] = super::dot(&w_star[r * d..(r + 1) * d], x);
            }
        }
        let x = dev.tensor_from_vec(xs, (b, Const::<LR_D>));
        // 1. statistics pass on sampled targets
        let out = model.forward(x.clone().traced(grads));
        let sampled: Vec<f64> = out.as_vec().iter().map(|v| v + probe.next()).collect();
        let sampled = dev.tensor_from_vec(sampled, (b, Const::<LR_K>));
        grads = mse_loss(out, sampled).backward();
        model.zero_grads(&mut grads); // drop the sampled-target weight gradient
        stats.update(&mut model, &mut grads, &mut opt)?;
        // 2. gradient pass on the real targets, without capture
        let y = dev.tensor_from_vec(ys, (b, Const::<LR_K>));
        let out = model.linear().forward(x.traced(grads));
        grads = mse_loss(out, y).backward();
        opt.update(&mut model, &mut grads)?;
        model.zero_grads(&mut grads);
        let w = model.weight.as_vec();
        if sin_theta(&w, &w_star, k, d) < SIN_TARGET {
            return Ok(Outcome::Reached(step));
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Ok(Outcome::Diverged(step));
        }
    }
    Ok(Outcome::Capped)
}

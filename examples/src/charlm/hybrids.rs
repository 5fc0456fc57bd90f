//! Optimizers declared for the language-model comparison: zoo matrix methods that have no
//! AdamW part of their own, given one with Muon's routing convention, and K-FAC with an AdamW
//! fallback. Each is a few lines of `optimizer!` reusing zoo rules; none changes a zoo rule.
//!
//! Routing (as the zoo's `Muon`): a hidden matrix — rank 2, name containing neither `embed`
//! nor `head` — takes the matrix method; everything else (token and position embeddings, the
//! head, biases, layer-norm gains and shifts) takes AdamW with the `adam_*` settings. The
//! defaults of the `adam_*` fields are the comparison's AdamW settings (betas 0.9/0.99, eps
//! 1e-8, decoupled weight decay 0.1, peak 3e-3); the table schedules `adam_lr` like `lr`.

use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, KFac, PsgdKron, Splus};

optimizer! {
    /// SPlus (`optim_dsl::zoo::Splus`, its defaults except `lr`) on hidden matrices; AdamW on
    /// embeddings, head and vectors.
    ///
    /// ```text
    /// rank 2, name without "embed" / "head":  Splus<lr = lr>
    /// others: AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps,
    ///               weight_decay = adam_weight_decay>
    /// ```
    /// SPlus's evaluation EMA of the parameters (state `ema`) is kept but not used here: the
    /// comparison evaluates the trained parameters themselves, as for every other optimizer.
    pub SplusLm<lr = 0.1, adam_lr = 3e-3, adam_beta1 = 0.9, adam_beta2 = 0.99, adam_eps = 1e-8,
                adam_weight_decay = 0.1> {
        matrix if !(name.contains("embed") || name.contains("head")) => Splus<lr = lr>,
        _ => AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps, weight_decay = adam_weight_decay>,
    }
}

optimizer! {
    /// PSGD-Kron (`optim_dsl::zoo::PsgdKron`, its defaults except `lr`: triangular Kronecker
    /// factors, preconditioner update probability 1 for the first 500 steps) on hidden
    /// matrices; AdamW on embeddings, head and vectors.
    ///
    /// ```text
    /// rank 2, name without "embed" / "head":  PsgdKron<lr = lr>
    /// others: AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps,
    ///               weight_decay = adam_weight_decay>
    /// ```
    pub PsgdKronLm<lr = 1e-3, adam_lr = 3e-3, adam_beta1 = 0.9, adam_beta2 = 0.99, adam_eps = 1e-8,
                   adam_weight_decay = 0.1> {
        matrix if !(name.contains("embed") || name.contains("head")) => PsgdKron<lr = lr>,
        _ => AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps, weight_decay = adam_weight_decay>,
    }
}

optimizer! {
    /// K-FAC on the weights of `KfacLinear` layers (the zoo's `KFac` rule:
    /// `p −= lr (G + λI)⁻¹ ∇W (A + λI)⁻¹`, factors handed over by `optim_dsl::kfac::KfacStats`);
    /// AdamW on everything else (embeddings, head, biases, layer norms).
    ///
    /// ```text
    /// rank 2 in a KfacLinear:  KFac<lr = lr, damping = damping, momentum = momentum>
    /// others: AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps,
    ///               weight_decay = adam_weight_decay>
    /// ```
    /// Until `KfacStats` first hands over factors, a `KfacLinear` weight passes
    /// `kfac_precondition` unchanged (an SGD step); the comparison updates the statistics
    /// before every step, so the first step already has them.
    pub KfacLm<lr = 3e-3, damping: nonneg = 1e-3, momentum = 0.0, adam_lr = 3e-3, adam_beta1 = 0.9,
               adam_beta2 = 0.99, adam_eps = 1e-8, adam_weight_decay = 0.1> {
        matrix if module == "KfacLinear" => KFac<lr = lr, damping = damping, momentum = momentum>,
        _ => AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps, weight_decay = adam_weight_decay>,
    }
}

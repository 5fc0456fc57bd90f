//! AdamW with low-precision optimizer state (issue 16): [`AdamWBf16`] (both moments stored in
//! `bf16`) and [`AdamW8bit`] (8-bit block-wise quantised moments for tensors of at least 4,096
//! elements, Dettmers et al. 2022).
//! Re-exported from [`crate::zoo`]; the conventions of the zoo's module documentation apply.
//! The arithmetic is `f32` (the parameter's type): each moment is decoded when it is read and
//! rounded once when it is written, so the only difference from [`super::AdamW`] is that
//! rounding. There is no PyTorch reference for these exact storages; they are checked against
//! f32-state AdamW within documented bounds over 1,000 steps (`tests/tests/it/lowp_state.rs`,
//! `tests/tests/it/q8_state.rs`). Storage dtypes are described in the guide ("Low-precision
//! optimizer state").

use super::AdamW;
use crate::optimizer;

optimizer! {
    /// AdamW (`torch.optim.AdamW`'s update and defaults) with both moments stored in `bf16`,
    /// rounded to nearest (ties to even), arithmetic in `f32`.
    ///
    /// ```text
    /// m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2      (each stored as bf16)
    /// p = p (1 - lr weight_decay) - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    /// ```
    /// Moves 20 bytes per `f32` parameter per step on the slice path (param and grad 4 + 4, read
    /// and write; each moment 2 + 2) instead of AdamW's 28. No `amsgrad`/`maximize` (use the
    /// DSL directly for those). Differs from PyTorch AdamW (which keeps the moments in the
    /// parameter's dtype) only by the rounding of the stored moments; for stochastic rounding
    /// write `let m: bf16_sr = ...` in a rule of your own. Source: Loshchilov & Hutter
    /// (ICLR 2019), Algorithm 2.
    pub AdamWBf16<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2> {
        let m: bf16 = momentum(grad, beta1);
        let v: bf16 = second_moment(grad, beta2);
        param = decoupled_decay(param, lr, weight_decay)
            - lr / (1.0 - pow(beta1, step)) * m / (sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps);
    }
}

optimizer! {
    /// AdamW with 8-bit block-wise quantised moments (bitsandbytes' `AdamW8bit` storage and its
    /// `min_8bit_size = 4096` default): for tensors of at least 4,096 elements, blocks of 256
    /// elements, one `f32` absmax scale per block, `m` on the signed dynamic map (`q8`), `v` on
    /// the unsigned one (`uq8`), arithmetic in `f32`; smaller tensors (biases, norms, small
    /// heads) keep `f32` moments, exactly [`super::AdamW`].
    ///
    /// ```text
    /// m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2      (8-bit codes if numel >= 4096)
    /// p = p (1 - lr weight_decay) - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    /// ```
    /// Moves about 16 bytes per `f32` parameter per step for the quantised tensors (16.0625
    /// with the block scales), 28 for the others. The 4,096 threshold matters: on the digits
    /// MLP, quantising every tensor (the 10-class output layer and the biases too) doubled the
    /// test loss against f32 state, with the threshold it is within the f32 runs' seed spread
    /// (`examples/tests/it/lowp_digits.rs`). For 8-bit state on every tensor, declare
    /// `let m: q8 = ...; let v: uq8 = ...;` in a rule of your own. Differs from bitsandbytes
    /// in the block decode/encode order inside a fused loop (same maps, same block size).
    /// Source: Dettmers et al., "8-bit Optimizers via Block-wise Quantization" (ICLR 2022);
    /// Loshchilov & Hutter (ICLR 2019) for the update.
    pub AdamW8bit<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2> {
        _ if numel >= 4096 => {
            let m: q8 = momentum(grad, beta1);
            let v: uq8 = second_moment(grad, beta2);
            param = decoupled_decay(param, lr, weight_decay)
                - lr / (1.0 - pow(beta1, step)) * m / (sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps);
        }
        _ => AdamW<lr = lr, beta1 = beta1, beta2 = beta2, eps = eps, weight_decay = weight_decay>,
    }
}

//! Ready-made optimizers, each written in the DSL.

use crate::optimizer;

optimizer! {
    /// AdamW (Loshchilov & Hutter, 2019), PyTorch `torch.optim.AdamW` defaults.
    pub AdamW<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2, amsgrad = false, maximize = false> {
        let g = select(maximize, -grad, grad);
        let m = momentum(g, beta1);
        let v = second_moment(g, beta2);
        let vmax = running_max(v);
        let vh = select(amsgrad, vmax, v);
        param -= lr * (debias(m) / (sqrt(vh) / sqrt(1.0 - pow(beta2, step)) + eps) + weight_decay * param);
    }
}

//! Ready-made optimizers, each written in the DSL (read the source: each `optimizer!` block *is*
//! the implementation). Names, defaults and update rules follow PyTorch 2.x (`torch.optim`)
//! unless a doc says otherwise; they are checked against PyTorch / pytorch-optimizer / Keller
//! Jordan's Muon / schedulefree reference trajectories (`tests/tests/conformance.rs`,
//! `matrix.rs`, `toolkit_dsl.rs`), except `Lamb` and `KFac`, checked against hand-computed
//! steps (`runtime.rs`, `matrix.rs`).
//!
//! Conventions shared by all: `t` is the parameter's own step count (1 on its first update);
//! bias corrections and schedule values are computed in `f64` once per step; `maximize` negates
//! the gradient first; "coupled" weight decay adds `l2(weight_decay) = weight_decay * param` to
//! the gradient (exactly 0 when `weight_decay == 0`, so an infinite parameter element stays
//! infinite, as PyTorch skips the term), "decoupled" multiplies the parameter by
//! `decoupled_decay(param, lr, weight_decay) = param * (1 - lr * weight_decay)` (AdamW).

use crate::optimizer;

optimizer! {
    /// Stochastic gradient descent with heavy-ball or Nesterov momentum (`torch.optim.SGD`).
    ///
    /// ```text
    /// g = (maximize ? -grad : grad) + weight_decay * p                 (coupled L2)
    /// buf = g                                   on the first step       (PyTorch's buffer copy)
    /// buf = momentum * buf + (1 - dampening) * g                later
    /// d = momentum == 0 ? g : (nesterov ? g + momentum * buf : buf)
    /// p = p - lr * d
    /// ```
    /// Source: Polyak (1964); Nesterov (1983) in the form of Sutskever et al. (2013); PyTorch.
    /// Difference from PyTorch: with `momentum == 0` the buffer is still kept (PyTorch keeps
    /// none), so plain SGD touches 20 instead of 12 bytes per `f32` parameter; the values are
    /// identical.
    pub Sgd<lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0, nesterov = false, maximize = false> {
        let g = select(maximize, -grad, grad) + l2(weight_decay);
        let buf = momentum(g, momentum, dampening = dampening, nesterov = nesterov);
        param -= lr * select(momentum == 0.0, g, buf);
    }
}

optimizer! {
    /// Adam with coupled (L2) weight decay and optional AMSGrad (`torch.optim.Adam`).
    ///
    /// ```text
    /// g = (maximize ? -grad : grad) + weight_decay * p
    /// m = m + (1 - beta1) * (g - m)                      (first moment, lerp form)
    /// v = beta2 * v + (1 - beta2) * g^2                  (second moment)
    /// vmax = max(vmax, v)                                (AMSGrad only; max of the raw v)
    /// p = p - lr / (1 - beta1^t) * m / (sqrt(amsgrad ? vmax : v) / sqrt(1 - beta2^t) + eps)
    /// ```
    /// Source: Kingma & Ba (2015), Algorithm 1; AMSGrad: Reddi et al. (2018). `eps` is outside
    /// the square root, as in PyTorch (optax's `eps_root` is the inside form).
    pub Adam<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, amsgrad = false, maximize = false> {
        let g = select(maximize, -grad, grad) + l2(weight_decay);
        let m = momentum(g, beta1);
        let v = second_moment(g, beta2);
        let vmax = running_max(v);
        param -= lr / (1.0 - pow(beta1, step)) * m / (sqrt(select(amsgrad, vmax, v)) / sqrt(1.0 - pow(beta2, step)) + eps);
    }
}

optimizer! {
    /// Adam with decoupled weight decay (`torch.optim.AdamW`).
    ///
    /// ```text
    /// g = maximize ? -grad : grad
    /// m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g^2;  vmax = max(vmax, v)
    /// p = p * (1 - lr * weight_decay) - lr / (1 - beta1^t) * m / (sqrt(amsgrad ? vmax : v) / sqrt(1 - beta2^t) + eps)
    /// ```
    /// Source: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019),
    /// Algorithm 2, with PyTorch's convention that the decay is multiplied by the (scheduled)
    /// `lr`. One fused loop: reads `param, grad, m, v`, writes `param, m, v` (28 bytes per `f32`
    /// parameter on the slice path).
    pub AdamW<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2, amsgrad = false, maximize = false> {
        let g = select(maximize, -grad, grad);
        let m = momentum(g, beta1);
        let v = second_moment(g, beta2);
        let vmax = running_max(v);
        param = decoupled_decay(param, lr, weight_decay)
            - lr / (1.0 - pow(beta1, step)) * m / (sqrt(select(amsgrad, vmax, v)) / sqrt(1.0 - pow(beta2, step)) + eps);
    }
}

optimizer! {
    /// RMSprop, optionally centered and with momentum (`torch.optim.RMSprop`).
    ///
    /// ```text
    /// g = (maximize ? -grad : grad) + weight_decay * p
    /// v = alpha * v + (1 - alpha) * g^2                    (no bias correction)
    /// ga = ga + (1 - alpha) * (g - ga)                     (centered only)
    /// avg = (centered ? sqrt(v - ga^2) : sqrt(v)) + eps    (eps outside the root)
    /// buf = momentum * buf + g / avg
    /// p = p - lr * (momentum > 0 ? buf : g / avg)
    /// ```
    /// Source: Tieleman & Hinton (2012), lecture 6.5; centered form: Graves (2013), eq. 38–45.
    /// Difference from PyTorch: the momentum buffer is kept even when `momentum == 0` (same
    /// values). optax's `rmsprop` puts `eps` inside the root by default.
    pub RMSprop<lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.0, centered = false, maximize = false> {
        let g = select(maximize, -grad, grad) + l2(weight_decay);
        let v = second_moment(g, alpha);
        let ga = ema(g, alpha);
        let avg = select(centered, sqrt(v - ga * ga), sqrt(v)) + eps;
        let buf = state(0.0);
        buf = momentum * buf + g / avg;
        param -= lr * select(momentum > 0.0, buf, g / avg);
    }
}

optimizer! {
    /// AdaGrad (`torch.optim.Adagrad`, dense path).
    ///
    /// ```text
    /// g = (maximize ? -grad : grad) + weight_decay * p
    /// sum = sum + g^2                          (sum starts at initial_accumulator_value)
    /// p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + eps)
    /// ```
    /// Source: Duchi, Hazan & Singer, JMLR 12 (2011), diagonal form; PyTorch's `lr_decay`.
    pub Adagrad<lr = 1e-2, lr_decay: nonneg = 0.0, weight_decay = 0.0, initial_accumulator_value: nonneg = 0.0, eps = 1e-10, maximize = false> {
        let g = select(maximize, -grad, grad) + l2(weight_decay);
        let sum = accumulate(g * g, init = initial_accumulator_value);
        param -= lr / (1.0 + (step - 1.0) * lr_decay) * g / (sqrt(sum) + eps);
    }
}

optimizer! {
    /// Adadelta (`torch.optim.Adadelta`).
    ///
    /// ```text
    /// g = (maximize ? -grad : grad) + weight_decay * p
    /// v = rho * v + (1 - rho) * g^2
    /// delta = sqrt(u + eps) / sqrt(v + eps) * g            (u: the previous acc_delta)
    /// u = rho * u + (1 - rho) * delta^2
    /// p = p - lr * delta
    /// ```
    /// Source: Zeiler, "ADADELTA: an adaptive learning rate method" (2012), Algorithm 1, with
    /// PyTorch's `lr` factor (default 1.0).
    pub Adadelta<lr = 1.0, rho = 0.9, eps = 1e-6, weight_decay = 0.0, maximize = false> {
        let g = select(maximize, -grad, grad) + l2(weight_decay);
        let v = second_moment(g, rho);
        let u = state(0.0);
        let delta = sqrt(u + eps) / sqrt(v + eps) * g;
        u = rho * u + (1.0 - rho) * delta * delta;
        param -= lr * delta;
    }
}

optimizer! {
    /// Adamax, the infinity-norm variant of Adam (`torch.optim.Adamax`).
    ///
    /// ```text
    /// g = (maximize ? -grad : grad) + weight_decay * p
    /// m = m + (1 - beta1) * (g - m)
    /// u = max(beta2 * u, |g| + eps)                         (eps inside the max, as PyTorch)
    /// p = p - lr / (1 - beta1^t) * m / u
    /// ```
    /// Source: Kingma & Ba (2015), Algorithm 2.
    pub Adamax<lr = 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, maximize = false> {
        let g = select(maximize, -grad, grad) + l2(weight_decay);
        let m = momentum(g, beta1);
        let u = running_max(abs(g) + eps, decay = beta2);
        param -= lr / (1.0 - pow(beta1, step)) * m / u;
    }
}

optimizer! {
    /// NAdam with PyTorch's momentum-decay schedule (`torch.optim.NAdam`).
    ///
    /// ```text
    /// g = maximize ? -grad : grad;  decoupled ? p *= 1 - lr * weight_decay : g += weight_decay * p
    /// mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay));  mu_{t+1} likewise with t + 1
    /// mu_product = mu_1 * ... * mu_t                        (a per-parameter scalar state)
    /// m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g^2
    /// denom = sqrt(v / (1 - beta2^t)) + eps
    /// p = p - lr (1 - mu_t) / (1 - mu_product) * g / denom - lr mu_{t+1} / (1 - mu_product mu_{t+1}) * m / denom
    /// ```
    /// Source: Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR 2016 workshop), with
    /// the schedule of PyTorch's implementation. optax's `nadam` is a different formula.
    /// Difference from PyTorch: `mu_product` is kept in `f64` (PyTorch: an `f32` tensor).
    pub NAdam<lr = 2e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, momentum_decay = 4e-3, decoupled_weight_decay = false, maximize = false> {
        let g0 = select(maximize, -grad, grad);
        let g = select(decoupled_weight_decay, g0, g0 + l2(weight_decay));
        let p = select(decoupled_weight_decay, decoupled_decay(param, lr, weight_decay), param);
        let mu = beta1 * (1.0 - 0.5 * pow(0.96, step * momentum_decay));
        let mu_next = beta1 * (1.0 - 0.5 * pow(0.96, (step + 1.0) * momentum_decay));
        let mu_product = cumprod(mu);
        let m = momentum(g, beta1);
        let v = second_moment(g, beta2);
        let denom = sqrt(v / (1.0 - pow(beta2, step))) + eps;
        param = p - lr * (1.0 - mu) / (1.0 - mu_product) * g / denom
            - lr * mu_next / (1.0 - mu_product * mu_next) * m / denom;
    }
}

optimizer! {
    /// Rectified Adam (`torch.optim.RAdam`).
    ///
    /// ```text
    /// g = maximize ? -grad : grad;  decoupled ? p *= 1 - lr * weight_decay : g += weight_decay * p
    /// m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g^2
    /// rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
    /// r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    /// p = p - lr * m / (1 - beta1^t) * (rho_t > 5 ? r * sqrt(1 - beta2^t) / (sqrt(v) + eps) : 1)
    /// ```
    /// Source: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR
    /// 2020), Algorithm 2; `eps` added to the uncorrected `sqrt(v)` as in PyTorch.
    pub RAdam<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, decoupled_weight_decay = false, maximize = false> {
        let g0 = select(maximize, -grad, grad);
        let g = select(decoupled_weight_decay, g0, g0 + l2(weight_decay));
        let p = select(decoupled_weight_decay, decoupled_decay(param, lr, weight_decay), param);
        let m = momentum(g, beta1);
        let v = second_moment(g, beta2);
        let bc2 = 1.0 - pow(beta2, step);
        let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * step * pow(beta2, step) / bc2;
        let rect = sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
        param = p - lr * m / (1.0 - pow(beta1, step)) * select(rho_t > 5.0, rect * sqrt(bc2) / (sqrt(v) + eps), 1.0);
    }
}

optimizer! {
    /// Lion, evolved sign momentum (as pytorch-optimizer's `Lion` with decoupled decay).
    ///
    /// ```text
    /// p = p * (1 - lr * weight_decay)                        (decay first)
    /// p = p - lr * sign(m + (1 - beta1) * (grad - m))        (sign(0) = 0, as torch.sign)
    /// m = m + (1 - beta2) * (grad - m)                       (updated after, with beta2)
    /// ```
    /// Source: Chen et al., "Symbolic Discovery of Optimization Algorithms" (NeurIPS 2023),
    /// Program 1. Defaults are the paper's (`lr = 1e-4`, `beta1 = 0.9`, `beta2 = 0.99`).
    pub Lion<lr = 1e-4, beta1 = 0.9, beta2 = 0.99, weight_decay = 0.0> {
        let m = state(0.0);
        param = decoupled_decay(param, lr, weight_decay) - lr * sign(lerp(m, grad, 1.0 - beta1));
        m = lerp(m, grad, 1.0 - beta2);
    }
}

optimizer! {
    /// AdEMAMix: Adam with a mixture of a fast and a slow EMA (pytorch-optimizer `AdEMAMix`).
    ///
    /// ```text
    /// g = grad + weight_decay * p                      (coupled, as pytorch-optimizer's default)
    /// m1 = m1 + (1 - beta1) * (g - m1);  v = beta2 * v + (1 - beta2) * g^2
    /// m2 = m2 + (1 - beta3) * (g - m2)                 (slow EMA, not bias-corrected)
    /// p = p - lr * (m1 / (1 - beta1^t) + alpha * m2) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    /// ```
    /// Source: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer" (2024), Algorithm 1.
    /// The paper's warm-up of `alpha` and `beta3` is expressed by giving them schedules.
    pub AdEMAMix<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, beta3 = 0.9999, alpha = 5.0, eps = 1e-8, weight_decay = 0.0> {
        let g = grad + l2(weight_decay);
        let m1 = momentum(g, beta1);
        let v = second_moment(g, beta2);
        let m2 = ema(g, beta3);
        param -= lr * (m1 / (1.0 - pow(beta1, step)) + alpha * m2) / (sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps);
    }
}

optimizer! {
    /// Muon: momentum orthogonalized by Newton–Schulz for hidden matrices, AdamW for everything
    /// else (vectors, scalars, and matrices whose name contains `embed` or `head`). Tensors of
    /// rank > 2 (conv kernels `[out, in, kh, kw]`) are orthogonalized as the `out × (in·kh·kw)`
    /// matrix, as Keller's reference flattens them.
    ///
    /// ```text
    /// matrices:  buf = buf + (1 - momentum) * (grad - buf)
    ///            u = nesterov ? grad + momentum * (buf - grad) : buf
    ///            O = NewtonSchulz5(u)                      (see `optim_dsl::matrix::orthogonalize`)
    ///            p = p * (1 - lr * weight_decay) - lr * sqrt(max(1, rows / cols)) * O
    /// others:    AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps,
    ///                  weight_decay = adam_weight_decay>
    /// ```
    /// Source: K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks"
    /// (2024), reference `SingleDeviceMuon` (github.com/KellerJordan/Muon, commit 857d1ad); the
    /// thesis "Towards Guided Descent" (arXiv 2512.18373) treats it as an orthogonalized,
    /// layer-wise update. Difference from the reference: Newton–Schulz runs in the parameter
    /// dtype (the reference uses bfloat16), which is what its float32 variant does.
    pub Muon<lr = 0.02, momentum = 0.95, nesterov = true, ns_steps = 5, weight_decay = 0.0,
             adam_lr = 3e-4, adam_beta1 = 0.9, adam_beta2 = 0.95, adam_eps = 1e-10, adam_weight_decay = 0.0> {
        matrix | tensor if !(name.contains("embed") || name.contains("head")) => {
            let buf = momentum(grad, momentum, nesterov = nesterov);
            let o = orthogonalize(buf, steps = ns_steps);
            param = decoupled_decay(param, lr, weight_decay) - lr * sqrt(max(1.0, rows / cols)) * o;
        }
        _ => AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps, weight_decay = adam_weight_decay>,
    }
}

optimizer! {
    /// Adafactor with factored second moments and relative step sizes (`torch.optim.Adafactor`).
    ///
    /// ```text
    /// g = maximize ? -grad : grad
    /// alpha = max(eps2, rms(p)) * min(lr, 1 / sqrt(t))          (relative step, RMS of p before decay)
    /// V = factored_second_moment(g, beta = 1 - t^beta2_decay)    (row/column statistics for
    ///                                                               matrices, full for vectors)
    /// u = g / sqrt(max(V, eps1^2))
    /// p = p * (1 - lr * weight_decay) - alpha / max(1, rms(u) / d) * u      (update clipping)
    /// ```
    /// Source: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
    /// (ICML 2018), Algorithms 4–5 without first moment, in PyTorch's form (`beta2_decay`,
    /// `eps = (eps1, eps2)`, threshold `d`). `eps1` defaults to `f32::EPSILON` (PyTorch:
    /// `finfo(dtype).eps`, so `f64` users may want `f64::EPSILON`). Memory: `rows + cols` state
    /// elements per matrix instead of `rows × cols`.
    pub Adafactor<lr = 1e-2, beta2_decay: nonpos = -0.8, eps1 = 1.1920928955078125e-7, eps2 = 1e-3, d: positive = 1.0, weight_decay = 0.0, maximize = false> {
        let g = select(maximize, -grad, grad);
        let alpha = max(eps2, rms(param)) * min(lr, 1.0 / sqrt(step));
        let v = factored_second_moment(g, 1.0 - pow(step, beta2_decay), eps = eps1);
        let u = g * rsqrt(max(v, eps1 * eps1));
        param = decoupled_decay(param, lr, weight_decay) - alpha / max(1.0, rms(u) / d) * u;
    }
}

optimizer! {
    /// Shampoo: Kronecker-factored preconditioning, with the step size grafted from Adam.
    ///
    /// ```text
    /// g = grad + weight_decay * p
    /// u = L^{-1/4} G R^{-1/4}      with L += G G^T, R += G^T G from matrix_eps * I   (matrices)
    /// u = H^{-1/2} g               with H += g g^T                                   (vectors)
    ///     inverse roots recomputed every update_freq steps (`optim_dsl::matrix::kron_precondition`)
    /// a = debias(m) / (sqrt(debias(v)) + eps)          Adam direction (m, v of g; graft only)
    /// d = graft ? u * ||a|| / ||u|| : u                  (per-tensor norms)
    /// buf = momentum * buf + d;  p = p - lr * (momentum > 0 ? buf : d)
    /// ```
    /// Source: Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization"
    /// (ICML 2018), Alg. 1–2; grafting: Agarwal et al., "Disentangling Adaptive Gradient
    /// Methods from Learning Rates" (2020); the layer-wise preconditioner of the thesis "Towards
    /// Guided Descent" (arXiv 2512.18373). With `graft = false`, `momentum = 0` it is
    /// pytorch-optimizer's `Shampoo` (its momentum mixes the *previous preconditioned* gradient
    /// into the gradient; ours is heavy-ball on the update).
    pub Shampoo<lr = 1e-3, momentum = 0.0, weight_decay = 0.0, matrix_eps: positive = 1e-6, update_freq: count = 1, max_dim: count = 8192,
                beta1 = 0.9, beta2 = 0.999, eps = 1e-8, graft = true> {
        let g = grad + l2(weight_decay);
        let u = kron_precondition(g, eps = matrix_eps, update_freq = update_freq, max_dim = max_dim);
        let m = momentum(g, beta1);
        let v = second_moment(g, beta2);
        let d = select(graft, graft(u, debias(m) / (sqrt(debias(v)) + eps)), u);
        let buf = state(0.0);
        buf = momentum * buf + d;
        param -= lr * select(momentum > 0.0, buf, d);
    }
}

optimizer! {
    /// LAMB: Adam direction scaled per tensor by the trust ratio `||p|| / ||u||`.
    ///
    /// ```text
    /// m, v: Adam moments of grad;  u = debias(m) / (sqrt(debias(v)) + eps) + weight_decay * p
    /// p = p - lr * (||p|| > 0 and ||u|| > 0 ? ||p|| / ||u|| : 1) * u
    /// ```
    /// Source: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    /// minutes" (ICLR 2020), Algorithm 2 with the identity scaling function φ.
    pub Lamb<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-6, weight_decay = 0.0> {
        let m = momentum(grad, beta1);
        let v = second_moment(grad, beta2);
        let u = debias(m) / (sqrt(debias(v)) + eps) + l2(weight_decay);
        param -= lr * trust_ratio(param, u) * u;
    }
}

optimizer! {
    /// SOAP: Adam in the eigenbasis of Shampoo's preconditioner.
    ///
    /// ```text
    /// Q_L, Q_R = eigenvectors of GG_L, GG_R (EMA of G G^T, G^T G with shampoo_beta; sides
    ///            longer than max_precondition_dim and vectors keep the identity)
    /// step 1:   initialise GG and Q only; the parameter does not move
    /// step t:   s = t - 1
    ///           m = m + (1 - beta1) (g - m)                         (original basis)
    ///           v = v + (1 - beta2) ((Q_L^T G Q_R)^2 - v)           (eigenbasis)
    ///           u = Q_L ((Q_L^T M Q_R) / (sqrt(v) + eps)) Q_R^T
    ///           p = (p - lr sqrt(1 - beta2^s) / (1 - beta1^s) u) (1 - lr weight_decay)
    ///           then GG is updated with g, and every precondition_frequency steps Q is
    ///           refreshed by one power iteration + QR, with v permuted to the new order
    /// ```
    /// Source: Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam" (ICLR 2025),
    /// Algorithm 1, as ported by pytorch-optimizer (first moment kept in the original basis,
    /// decay after the update). `v` lives in the eigenbasis because it is computed from
    /// `rotate(...)`; the planner finds such states and permutes them on refresh.
    pub Soap<lr = 3e-3, beta1 = 0.95, beta2 = 0.95, shampoo_beta = 0.95, eps = 1e-8, weight_decay = 0.01,
             precondition_frequency: count = 10, max_precondition_dim: count = 10000> {
        let q = kron_eigenbasis(grad, shampoo_beta, update_freq = precondition_frequency, max_dim = max_precondition_dim);
        let warm = step > 1.0;
        let s = step - 1.0;
        let m = state(0.0);
        m = select(warm, lerp(m, grad, 1.0 - beta1), m);
        let v = state(0.0);
        let gr = rotate(grad, q);
        v = select(warm, lerp(v, gr * gr, 1.0 - beta2), v);
        let u = unrotate(rotate(m, q) / (sqrt(v) + eps), q);
        let step_size = lr * sqrt(1.0 - pow(beta2, s)) / (1.0 - pow(beta1, s));
        param = select(warm, decoupled_decay(param - step_size * u, lr, weight_decay), param);
    }
}

optimizer! {
    /// Schedule-Free AdamW: no learning-rate schedule; the iterate is an interpolation between
    /// a fast sequence `z` and its weighted average `x`.
    ///
    /// ```text
    /// lr_t = lr * min(1, t / warmup_steps)              (t = the parameter's step, 1-based)
    /// lr_max = max(lr_max, lr_t);  w = t^r * lr_max^weight_lr_power;  w_sum += w;  c = w / w_sum
    /// z = z - lr_t * weight_decay * y - lr_t * g / (sqrt(v / (1 - beta2^t)) + eps)     (y = param)
    /// v = beta2 * v + (1 - beta2) * g^2
    /// x = (1 - c) * x + c * z
    /// y = beta1 * x + (1 - beta1) * z                   (the parameter; gradients are taken at y)
    /// ```
    /// `x` and `z` start as copies of the parameter. **Evaluate with `x`**, not the parameter:
    /// it is the state buffer named `"x"` (`DslOptimizer::state_buffer`); swap it into a model
    /// for evaluation and back with `DslOptimizer::swap_state_with_model(model, "x")`.
    /// Source: Defazio et al., "The Road Less Scheduled" (NeurIPS 2024), Algorithm 1; matches
    /// `schedulefree.AdamWScheduleFreeReference` (decay at `y`). `lr_max` and `w_sum` are
    /// per-parameter scalar states (the reference keeps them per group; identical when all
    /// parameters start together).
    pub ScheduleFreeAdamW<lr = 2.5e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0,
                          warmup_steps: nonneg = 0.0, r = 0.0, weight_lr_power = 2.0> {
        let lr_t = lr * select(warmup_steps > 0.0, min(1.0, step / warmup_steps), 1.0);
        let lr_max = scalar_state(0.0);
        lr_max = max(lr_max, lr_t);
        let weight = pow(step, r) * pow(lr_max, weight_lr_power);
        let weight_sum = scalar_state(0.0);
        weight_sum = weight_sum + weight;
        let c = select(weight_sum > 0.0, weight / weight_sum, 0.0);
        let z = state(param);
        let x = state(param);
        let v = second_moment(grad, beta2);
        z = z - l2(lr_t * weight_decay) - lr_t * grad / (sqrt(v / (1.0 - pow(beta2, step))) + eps);
        x = (1.0 - c) * x + c * z;
        param = beta1 * x + (1.0 - beta1) * z;
    }
}

optimizer! {
    /// A K-FAC-style layer-wise optimizer: matrices are preconditioned by user-supplied
    /// Kronecker factors (`DslOptimizer::set_kron_factors`), everything else takes SGD steps.
    ///
    /// ```text
    /// matrices:  u = (S + damping I)^{-1} (grad + weight_decay p) (A + damping I)^{-1}
    ///            buf = momentum * buf + u;  p = p - lr * (momentum > 0 ? buf : u)
    /// others:    p = p - lr * (grad + weight_decay p)
    /// ```
    /// For a linear layer `y = W x`, `A = E[x x^T]` (input covariance) and `S` the covariance of
    /// the back-propagated output gradients; with `S = I` this is the layer-wise preconditioner
    /// of the thesis "Towards Guided Descent" (arXiv 2512.18373) for linear representation
    /// learning. Source: Martens & Grosse, "Optimizing Neural Networks with Kronecker-factored
    /// Approximate Curvature" (ICML 2015). The factors are inputs: the caller estimates them
    /// (e.g. an EMA of `x x^T` over batches) and passes them in before each step.
    pub KFac<lr = 0.1, damping: nonneg = 1e-3, momentum = 0.0, weight_decay = 0.0> {
        matrix => {
            let u = kfac_precondition(grad + l2(weight_decay), damping = damping);
            let buf = state(0.0);
            buf = momentum * buf + u;
            param -= lr * select(momentum > 0.0, buf, u);
        }
        _ => {
            param -= lr * (grad + l2(weight_decay));
        }
    }
}

optimizer! {
    /// NorMuon: Muon whose orthogonalized update is normalised per row by a row-wise second
    /// moment, then rescaled to the orthogonalized update's Frobenius norm; AdamW for everything
    /// else (as [`Muon`]).
    ///
    /// ```text
    /// matrices (rows × cols view):
    ///   buf = buf + (1 - momentum) (grad - buf);  u = grad + momentum (buf - grad)   (Nesterov)
    ///   O = NewtonSchulz5(u)
    ///   v = v + (1 - beta2) (row_mean(O²) - v)             one value per ROW, no bias correction
    ///   N = O * (1 / (sqrt(v) + eps))                       (eps outside the root)
    ///   U = N * (‖O‖ / (‖N‖ + eps)) * sqrt(max(1, rows / cols))
    ///   p = p * (1 - lr * weight_decay) - lr * U
    /// others: AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps,
    ///               weight_decay = adam_weight_decay>
    /// ```
    /// Source: Li et al., "NorMuon: Making Muon more efficient and scalable" (2025), reference
    /// `SingleDeviceNorMuon` (github.com/zichongli5/NorMuon, commit d45c9a4). State: `buf` (one
    /// value per element) and `v` (one per row). Differences from the reference: Newton–Schulz
    /// in the parameter's type (the reference casts to bfloat16; its float32 run is the
    /// conformance target), and the row means are accumulated in `f64`.
    pub NorMuon<lr = 0.02, momentum = 0.95, beta2 = 0.95, eps = 1e-10, weight_decay = 0.0, ns_steps = 5,
                adam_lr = 3e-4, adam_beta1 = 0.9, adam_beta2 = 0.95, adam_eps = 1e-10, adam_weight_decay = 0.0> {
        matrix | tensor if !(name.contains("embed") || name.contains("head")) => {
            let buf = momentum(grad, momentum, nesterov = true);
            let o = orthogonalize(buf, steps = ns_steps);
            let v = ema(row_mean(o * o), beta2);
            let n = o * (1.0 / (sqrt(v) + eps));
            let u = n * (norm(o) / (norm(n) + eps)) * sqrt(max(1.0, rows / cols));
            param = decoupled_decay(param, lr, weight_decay) - lr * u;
        }
        _ => AdamW<lr = adam_lr, beta1 = adam_beta1, beta2 = adam_beta2, eps = adam_eps, weight_decay = adam_weight_decay>,
    }
}

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
    /// (`tests/fixtures/splus.json`). Differences: the eigendecomposition is faer's (the update
    /// does not depend on the order or signs of the eigenvectors); the Gram statistics are
    /// updated after the direction (the reference updates them just before it, but they only
    /// enter the next refresh); `weight_decouple = False` and `fixed_decay` are not offered.
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

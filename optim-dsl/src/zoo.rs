//! Ready-made optimizers, each written in the DSL (read the source: each `optimizer!` block *is*
//! the implementation). Names, defaults and update rules follow PyTorch 2.x (`torch.optim`)
//! unless a doc says otherwise; they are checked against PyTorch / pytorch-optimizer / Keller
//! Jordan's Muon / schedulefree reference trajectories (`tests/tests/it/conformance.rs`,
//! `matrix.rs`, `toolkit_dsl.rs`), except `Lamb` and `KFac`, checked against hand-computed
//! steps (`runtime.rs`, `matrix.rs`), and `AdamWBf16` / `AdamW8bit` (`zoo/lowp.rs`), checked
//! against f32-state AdamW within documented bounds (`lowp_state.rs`, `q8_state.rs`).
//!
//! Conventions shared by all: `t` is the parameter's own step count (1 on its first update);
//! bias corrections and schedule values are computed in `f64` once per step; `maximize` negates
//! the gradient first; "coupled" weight decay adds `l2(weight_decay) = weight_decay * param` to
//! the gradient (exactly 0 when `weight_decay == 0`, so an infinite parameter element stays
//! infinite, as PyTorch skips the term), "decoupled" multiplies the parameter by
//! `decoupled_decay(param, lr, weight_decay) = param * (1 - lr * weight_decay)` (AdamW). The
//! zoo follows PyTorch's lr-coupled decoupled decay everywhere; the paper's form, whose decay
//! follows the schedule's shape but not its peak, is the word `scheduled_decay` (see the guide).

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
    /// `lr` (the paper multiplies it by the schedule multiplier `eta_t` only: write
    /// `scheduled_decay(param, lr, weight_decay)` for that, see the guide). One fused loop: reads `param, grad, m, v`, writes `param, m, v` (28 bytes per `f32`
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
    /// layer-wise update. Differences from the reference: Newton–Schulz runs in the parameter
    /// dtype (the reference uses bfloat16), which is what its float32 variant does; it
    /// normalises by `‖u‖_F` exactly (scale-invariant: a momentum of norm 1e-20 is
    /// orthogonalized like one of norm 1) where the reference divides by `‖u‖_F + 1e-7`, which
    /// shrinks updates whose momentum norm is not far above 1e-7 (1% at 1e-5) and zeroes them far
    /// below.
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
    /// V = factored_second_moment(g, beta = 1 - t^beta2_decay)    (row/column statistics over
    ///                                  the last two axes, one pair per leading slice; full for vectors)
    /// u = g / sqrt(max(V, eps1^2))
    /// p = p * (1 - lr * weight_decay) - alpha / max(1, rms(u) / d) * u      (update clipping)
    /// ```
    /// Source: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
    /// (ICML 2018), Algorithms 4–5 without first moment, in PyTorch's form (`beta2_decay`,
    /// `eps = (eps1, eps2)`, threshold `d`). `eps1` defaults to `f32::EPSILON` (PyTorch:
    /// `finfo(dtype).eps`, so `f64` users may want `f64::EPSILON`). A tensor `[B…, R, C]` of
    /// rank > 2 is factored over its last two axes with one normaliser per `R × C` slice, as
    /// PyTorch and optax do, while `alpha` and the RMS clipping use the whole tensor. Memory:
    /// `B · (R + C)` state elements instead of `B · R · C`.
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
    ///     unit axes squeezed first: (1, n), (n, 1) and (n,) are the same vector
    ///     roots are pseudo-inverse roots computed in f64: eigenvalues <= d * eps(E) * max
    ///     eigenvalue of a d x d factor are dropped (distributed_shampoo's PseudoInverseConfig)
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
    /// into the gradient; ours is heavy-ball on the update) whenever no eigenvalue falls under
    /// the cutoff (pytorch-optimizer inverts every singular value and keeps every unit axis as a
    /// factor; tensors of rank > 2 are one `shape[0] × rest` matrix here, order-k there). With
    /// `matrix_eps` tiny it is distributed_shampoo's Shampoo with `PseudoInverseConfig(rank_atol
    /// = 0, rank_rtol = d·ε(E))`, `epsilon = 0`, `betas = (0, 1)` and
    /// `target_parameter_dimensionality = 2` (its factors are accumulated in `float64`, ours in
    /// `E`).
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
    /// Cautious AdamW: the Adam update is kept only where it agrees in sign with the current
    /// gradient, and rescaled by the fraction kept (authors' C-Optim `AdamW`, HF-style Adam).
    ///
    /// ```text
    /// p = p * (1 - lr * weight_decay)                            (decoupled decay first)
    /// m = m + (1 - beta1) * (grad - m);  v = beta2 * v + (1 - beta2) * grad^2
    /// step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)         (eps NOT bias-corrected)
    /// mask = (m * grad > 0) ? 1 : 0
    /// mask = mask / max(mean(mask), 1e-3)                        (mean over the whole tensor)
    /// p = p - step_size * m * mask / (sqrt(v) + eps)
    /// ```
    /// Source: Liang et al., "Cautious Optimizers: Improving Training with One Line of Code"
    /// (2024), Algorithm 1; the reference is the authors' `c_adamw.AdamW` (github
    /// kyleliang919/C-Optim `c_adamw.py` @2c0517c, per-parameter path `foreach=False`,
    /// `correct_bias=True`). Its rescale is `1 / max(mean(mask), 1e-3)` (at most 1000x), not the
    /// `numel / (sum(mask) + 1)` of the authors' Lion ([`CautiousLion`]). Differences from the
    /// reference: only `correct_bias=True` (the default) is provided; the `foreach=True` path of
    /// the reference is a different (asynchronous, batched) implementation and is not what is
    /// matched. The mean ends a loop: two loops per step (the mask count, then the update).
    pub CautiousAdamW<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-6, weight_decay = 0.0> {
        let m = momentum(grad, beta1);
        let v = second_moment(grad, beta2);
        let mask = select(m * grad > 0.0, 1.0, 0.0);
        let scale = 1.0 / max(mean(mask), 1e-3);
        let step_size = lr * sqrt(1.0 - pow(beta2, step)) / (1.0 - pow(beta1, step));
        param = decoupled_decay(param, lr, weight_decay) - step_size * (m * (mask * scale)) / (sqrt(v) + eps);
    }
}

optimizer! {
    /// Cautious Lion: the Lion sign update is kept only where it agrees in sign with the current
    /// gradient, and rescaled by `numel / (kept + 1)` (authors' C-Optim `Lion`).
    ///
    /// ```text
    /// p = p * (1 - lr * weight_decay)                            (decoupled decay first)
    /// u = sign(beta1 * m + (1 - beta1) * grad)                   (sign(0) = 0)
    /// mask = (u * grad > 0) ? 1 : 0
    /// p = p - lr * numel / (sum(mask) + 1) * u * mask            (+1: no eps, no clamp)
    /// m = beta2 * m + (1 - beta2) * grad                         (after the update, with beta2)
    /// ```
    /// Source: Liang et al., "Cautious Optimizers: Improving Training with One Line of Code"
    /// (2024); Lion: Chen et al. (NeurIPS 2023). The reference is the authors' `c_lion.Lion`
    /// (github kyleliang919/C-Optim `c_lion.py` @2c0517c), identical to pytorch-optimizer 4.1's
    /// `Lion(cautious=True)`. Defaults are the reference's (`lr = 1e-4`, `betas = (0.95,
    /// 0.98)`, which differ from [`Lion`]'s). On step 1 `u = sign(grad)`, so the scale is
    /// `numel / (numel + 1)`: 0.5 for a one-element parameter. No difference from the reference
    /// beyond rounding; the sum ends a loop (two loops per step).
    pub CautiousLion<lr = 1e-4, beta1 = 0.95, beta2 = 0.98, weight_decay = 0.0> {
        let m = state(0.0);
        let u = sign(beta1 * m + (1.0 - beta1) * grad);
        let mask = select(u * grad > 0.0, 1.0, 0.0);
        param = decoupled_decay(param, lr, weight_decay) - lr * (numel / (sum(mask) + 1.0)) * (u * mask);
        m = beta2 * m + (1.0 - beta2) * grad;
    }
}

optimizer! {
    /// MARS-AdamW: AdamW on a variance-reduced gradient for matrices (the approximate
    /// "MARS-approx" form, with the previous gradient), plain AdamW for everything else.
    ///
    /// ```text
    /// matrices (rank 2):
    ///   c = grad + gamma * beta1 / (1 - beta1) * (grad - last_grad)     (last_grad = 0 at step 1)
    ///   c = ||c||_F > 1 ? c / ||c||_F : c                               (per-tensor clip)
    ///   m = m + (1 - beta1) * (c - m);  v = beta2 * v + (1 - beta2) * c^2
    ///   p = p * (1 - lr * weight_decay) - lr * m / ((sqrt(v) / sqrt(1 - beta2^t) + eps) * (1 - beta1^t))
    ///   last_grad = grad
    /// others (vectors, scalars, tensors of rank > 2):
    ///   m = m + (1 - beta1_1d) * (grad - m);  v = beta2_1d * v + (1 - beta2_1d) * grad^2
    ///   p = p * (1 - lr_1d * weight_decay_1d)
    ///       - lr_1d * m / ((sqrt(v) / sqrt(1 - beta2_1d^t) + eps) * (1 - beta1_1d^t))
    /// ```
    /// Source: Yuan et al., "MARS: Unleashing the Power of Variance Reduction for Training
    /// Large Models" (2024), Algorithm 2 (MARS-AdamW, approximate); the reference is the
    /// authors' `MARS(mars_type="mars-adamw", is_approx=True, optimize_1d=False)` (github
    /// AGI-Arena/MARS `MARS/optimizers/mars.py` @4831e28). As there, only parameters whose
    /// gradient has rank 2 take the MARS path; `eps` is added after bias-correcting `sqrt(v)`.
    /// Differences from the reference: the reference adds `-lr * (weight_decay * p + m / denom)`
    /// in one fused step (so `weight_decay = 0` with an infinite `p` gives NaN there, an
    /// unchanged `p` here); the reference's 1-D learning rate is `lr * (lr_1d / lr_0)` with
    /// `lr_0` the constructor's `lr`, so under a schedule on `lr` give `lr_1d` the proportional
    /// schedule; `amsgrad` and the `mars-lion`/`mars-shampoo` types are not provided. The norm
    /// ends a loop: matrices take two loops per step.
    pub MarsAdamW<lr = 3e-3, beta1 = 0.95, beta2 = 0.99, eps = 1e-8, weight_decay = 0.0, gamma: nonneg = 0.025,
                  lr_1d: nonneg = 3e-3, beta1_1d = 0.9, beta2_1d = 0.95, weight_decay_1d: nonneg = 0.1> {
        matrix => {
            let last_grad = state(0.0);
            let c = (grad - last_grad) * (gamma * (beta1 / (1.0 - beta1))) + grad;
            let c_norm = norm(c);
            let c = select(c_norm > 1.0, c / c_norm, c);
            let m = momentum(c, beta1);
            let v = second_moment(c, beta2);
            let denom = (sqrt(v) * (1.0 / sqrt(1.0 - pow(beta2, step))) + eps) * (1.0 - pow(beta1, step));
            param = decoupled_decay(param, lr, weight_decay) - lr * (m / denom);
            last_grad = grad;
        }
        _ => {
            let m = momentum(grad, beta1_1d);
            let v = second_moment(grad, beta2_1d);
            let denom = (sqrt(v) * (1.0 / sqrt(1.0 - pow(beta2_1d, step))) + eps) * (1.0 - pow(beta1_1d, step));
            param = decoupled_decay(param, lr_1d, weight_decay_1d) - lr_1d * (m / denom);
        }
    }
}

optimizer! {
    /// Adan: adaptive Nesterov momentum from an EMA of gradient differences, with proximal
    /// weight decay (sail-sg `Adan`, `no_prox=False`).
    ///
    /// ```text
    /// d = grad - prev_grad                     (0 at step 1: prev_grad = grad there)
    /// m = m + (1 - beta1) * (grad - m)                         (gradient EMA)
    /// dm = dm + (1 - beta2) * (d - dm)                         (gradient-difference EMA)
    /// n = grad + beta2 * d
    /// v = beta3 * v + (1 - beta3) * n^2
    /// denom = sqrt(v) / sqrt(1 - beta3^t) + eps                (eps outside, after correction)
    /// p = p - lr / (1 - beta1^t) * m / denom - lr * beta2 / (1 - beta2^t) * dm / denom
    /// p = p / (1 + lr * weight_decay)                          (proximal decay after the update)
    /// ```
    /// `beta1, beta2, beta3` follow the authors' code: the weight on the OLD value (the paper's
    /// `1 - beta_k`). The state `neg_grad` keeps `-grad` of the previous step, as the reference's
    /// `neg_pre_grad`. Source: Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for
    /// Faster Optimizing Deep Models" (TPAMI 2024), Algorithm 1; the reference is the authors'
    /// `Adan` (github sail-sg/Adan `adan.py` @2c65bea, `_single_tensor_adan`). Differences from
    /// the reference: `no_prox=True` (decay `p *= 1 - lr * weight_decay` before the update) and
    /// `max_grad_norm > 0` (its own global-norm clip) are not provided (`max_grad_norm = 0`, the
    /// default); the step count is the parameter's own (the reference's is per group, the same
    /// when all parameters start together). One loop per step.
    pub Adan<lr = 1e-3, beta1 = 0.98, beta2 = 0.92, beta3 = 0.99, eps = 1e-8, weight_decay = 0.0> {
        let neg_grad = state(0.0);
        let d = grad + select(step > 1.0, neg_grad, -grad);
        let m = momentum(grad, beta1);
        let dm = momentum(d, beta2);
        let v = second_moment(grad + beta2 * d, beta3);
        let denom = sqrt(v) / sqrt(1.0 - pow(beta3, step)) + eps;
        param = (param - lr / (1.0 - pow(beta1, step)) * (m / denom)
            - lr * beta2 / (1.0 - pow(beta2, step)) * (dm / denom)) / (1.0 + lr * weight_decay);
        neg_grad = -grad;
    }
}

optimizer! {
    /// ADOPT: Adam with the gradient normalised by the PREVIOUS second moment, clipped, before
    /// the momentum (authors' `ADOPT`).
    ///
    /// ```text
    /// g = decoupled_weight_decay ? grad : grad + weight_decay * p        (coupled L2, also at step 1)
    /// step 1:  v = g^2; the parameter does not move (no decay), m stays 0
    /// step t:  p = p * (1 - lr * weight_decay)                            (decoupled only)
    ///          n = clamp(g / max(sqrt(v), eps), -(t - 1)^0.25, (t - 1)^0.25)   (v: previous)
    ///          m = m + (1 - beta1) * (n - m)                               (no bias correction)
    ///          p = p - lr * m
    ///          v = beta2 * v + (1 - beta2) * g^2                           (after the update)
    /// ```
    /// Source: Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β2 with the Optimal
    /// Rate" (NeurIPS 2024), Algorithm 2 with clipping; the reference is the authors' `ADOPT`
    /// (github iShohei220/adopt `src/adopt/adopt.py` @6468572, `_single_tensor_adopt`, default
    /// `clip_lambda = step -> step^0.25` of the number of previous steps). `eps` clamps the
    /// denominator from below (it is not added). `decoupled_weight_decay` is the reference's
    /// `decouple`. Differences from the reference: `clip_lambda` is fixed to its default and
    /// `maximize` is not provided. pytorch-optimizer 4.1's `ADOPT` differs from the authors'
    /// (clip `t^0.25`, decay also on step 1). One loop per step.
    pub Adopt<lr = 1e-3, beta1 = 0.9, beta2 = 0.9999, eps = 1e-6, weight_decay = 0.0, decoupled_weight_decay = false> {
        let g = select(decoupled_weight_decay, grad, grad + l2(weight_decay));
        let warm = step > 1.0;
        let m = state(0.0);
        let v = state(0.0);
        let n = clip_value(g / max(sqrt(v), eps), pow(step - 1.0, 0.25));
        m = select(warm, lerp(m, n, 1.0 - beta1), m);
        let p = select(decoupled_weight_decay, decoupled_decay(param, lr, weight_decay), param);
        param = select(warm, p - lr * m, param);
        v = select(warm, beta2 * v + (1.0 - beta2) * g * g, v + g * g);
    }
}

optimizer! {
    /// LaProp: the gradient is normalised by the bias-corrected `sqrt(v)` first, then averaged
    /// by the momentum (pytorch-optimizer `LaProp`).
    ///
    /// ```text
    /// v = beta2 * v + (1 - beta2) * grad^2
    /// lr_avg = beta1 * lr_avg + (1 - beta1) * lr              (per-parameter scalar, starts at 0;
    ///                                                          = lr (1 - beta1^t) for a constant lr)
    /// denom = (sqrt(v + 1e-15) + eps) / sqrt(1 - beta2^t)
    /// m = beta1 * m + (1 - beta1) * lr * grad / denom         (lr folded into the momentum)
    /// p = p - (lr != 0 ? lr / lr_avg : 1) * m
    /// p = p * (1 - lr * weight_decay)                          (decoupled decay AFTER the update)
    /// ```
    /// Source: Ziyin, Wang & Ueda, "LaProp: Separating Momentum and Adaptivity in Adam" (2020),
    /// Algorithm 1; the reference is pytorch-optimizer 4.1.0 `LaProp` (per-parameter path,
    /// `centered=False`, `ams_bound=False`, `weight_decouple=True`, `fixed_decay=False`). The
    /// `1e-15` inside the root is the reference's `apply_ams_bound` constant. Differences from
    /// the reference: `centered`, `ams_bound`, `fixed_decay` and `maximize` are not provided, nor
    /// `weight_decouple=False` (which in the reference adds the L2 term to the gradient after it
    /// was used, i.e. does nothing). One loop per step.
    pub LaProp<lr = 4e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-15, weight_decay = 0.0> {
        let v = second_moment(grad, beta2);
        let lr_avg = scalar_state(0.0);
        lr_avg = beta1 * lr_avg + (1.0 - beta1) * lr;
        let denom = (sqrt(v + 1e-15) + eps) / sqrt(1.0 - pow(beta2, step));
        let m = state(0.0);
        m = beta1 * m + ((1.0 - beta1) * lr) * (grad / denom);
        param = decoupled_decay(param - select(lr != 0.0, lr / lr_avg, 1.0) * m, lr, weight_decay);
    }
}

mod adam2026;
mod lowp;
mod matrix2026;
mod muon2026;
pub use adam2026::{AdamMini, AdamMiniConfig, Prodigy, ProdigyConfig};
pub use lowp::{AdamW8bit, AdamW8bitConfig, AdamWBf16, AdamWBf16Config};
pub use matrix2026::{Dion, DionConfig, PsgdKron, PsgdKronConfig, Splus, SplusConfig};
pub use muon2026::{AdaMuon, AdaMuonConfig, MuonPolarExpress, MuonPolarExpressConfig};

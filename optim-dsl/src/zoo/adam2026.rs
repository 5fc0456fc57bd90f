//! Zoo optimizers of issue 11's Adam family: [`AdamMini`] (one second moment per block of
//! parameters) and [`Prodigy`] (a step size estimated on line). Re-exported from
//! [`crate::zoo`]; the conventions of the zoo's module documentation apply. Checked against
//! reference trajectories in `tests/tests/it/conformance_muon_mini.rs` (Adam-mini) and
//! `conformance_2026.rs` (Prodigy).

#[allow(unused_imports)] // named by the docs' links
use super::AdamW;
use crate::optimizer;

optimizer! {
    /// Adam-mini: Adam with one second-moment value per block of parameters instead of per
    /// element, blocks chosen by parameter name (first match wins, as the authors' `Adam_mini`),
    /// and no weight decay for parameters whose name contains `norm`, `ln` or `bias`.
    ///
    /// ```text
    /// t = step; bc1 = 1 - beta1^t; bc2 = 1 - beta2^t
    /// wd = ("norm", "ln" or "bias" in name) ? 0 : weight_decay
    /// "bias" in name (any shape):  v = beta2 v + (1 - beta2) grad²       (per element: Adam)
    /// matrices whose name contains "embed", "embd", "wte", "lm_head", "output", "final_layer",
    ///   "v_proj", "wv", "value", "o_proj", "wo", "attn.proj", "feed_forward", "linear", "mlp",
    ///   "q_proj", "k_proj", "wq", "wk", "query" or "key":
    ///     v = beta2 v + (1 - beta2) row_mean(grad²)                      (one value per ROW)
    /// anything else:  v = beta2 v + (1 - beta2) mean(grad²)               (one value per tensor)
    /// then, with v broadcast:
    ///   p = p * (1 - lr * wd)
    ///   m = m + (1 - beta1) (grad - m)
    ///   p = p - lr * m * ((1 / bc1) / (sqrt(v) / sqrt(bc2) + eps))        (eps outside the root)
    /// ```
    /// Source: Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More" (ICLR 2025); the
    /// reference is the authors' package (PyPI `adam-mini` 1.1.1, `Adam_mini(named_parameters,
    /// ...)`, single process). State: `m` per element and `v` per block (a buffer per element or
    /// per row, or a scalar per tensor). Differences from the reference: names are matched as
    /// given (the reference lower-cases them first); query/key weights (`q_proj`, `k_proj`,
    /// `wq`, `wk`, `query`, `key`) get one block per ROW, where the reference uses one per
    /// attention head (`dim · dim / n_heads` elements; `dim` and `n_heads` are not taken): a
    /// finer partition, until head blocks can be declared (issue 11, batched views); names of the
    /// per-row list on a tensor of rank other than 2 get the whole-tensor block (the reference's
    /// row blocks assume a matrix); block means are accumulated in `f64` and a whole-tensor `v`
    /// is an `f64` scalar (the reference: `float32`). One loop per step (per-element blocks),
    /// two otherwise (the block mean ends a loop). The row blocks sum `grad * grad` rounded to
    /// the parameter's type (`row_sum(grad * grad) / cols`) through a scratch buffer, 4 B per
    /// `f32` element more than `row_mean(grad * grad)` would move: that form squares in `f64`
    /// straight from the gradient, but leaves the rule's first loop empty, which the planner does
    /// not skip yet.
    pub AdamMini<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0> {
        _ if name.contains("bias") => {
            let v = second_moment(grad, beta2);
            let m = momentum(grad, beta1);
            let h = sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps;
            param -= lr / (1.0 - pow(beta1, step)) * m / h;
        }
        matrix if (name.contains("norm") || name.contains("ln")) && (name.contains("embed") || name.contains("embd") || name.contains("wte")
                || name.contains("lm_head") || name.contains("output") || name.contains("final_layer")
                || name.contains("v_proj") || name.contains("wv") || name.contains("value")
                || name.contains("o_proj") || name.contains("wo") || name.contains("attn.proj")
                || name.contains("feed_forward") || name.contains("linear") || name.contains("mlp")
                || name.contains("q_proj") || name.contains("k_proj") || name.contains("wq")
                || name.contains("wk") || name.contains("query") || name.contains("key")) => {
            let v = row_state(0.0);
            v = beta2 * v + (1.0 - beta2) * (row_sum(grad * grad) / cols);
            let m = momentum(grad, beta1);
            let h = sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps;
            param -= lr * (m * ((1.0 / (1.0 - pow(beta1, step))) / h));
        }
        matrix if name.contains("embed") || name.contains("embd") || name.contains("wte")
            || name.contains("lm_head") || name.contains("output") || name.contains("final_layer")
            || name.contains("v_proj") || name.contains("wv") || name.contains("value")
            || name.contains("o_proj") || name.contains("wo") || name.contains("attn.proj")
            || name.contains("feed_forward") || name.contains("linear") || name.contains("mlp")
            || name.contains("q_proj") || name.contains("k_proj") || name.contains("wq")
            || name.contains("wk") || name.contains("query") || name.contains("key") => {
            let v = row_state(0.0);
            v = beta2 * v + (1.0 - beta2) * (row_sum(grad * grad) / cols);
            let m = momentum(grad, beta1);
            let h = sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps;
            param = decoupled_decay(param, lr, weight_decay) - lr * (m * ((1.0 / (1.0 - pow(beta1, step))) / h));
        }
        _ if name.contains("norm") || name.contains("ln") => {
            let v = scalar_state(0.0);
            v = beta2 * v + (1.0 - beta2) * mean(grad * grad);
            let m = momentum(grad, beta1);
            let h = sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps;
            param -= lr * (m * ((1.0 / (1.0 - pow(beta1, step))) / h));
        }
        _ => {
            let v = scalar_state(0.0);
            v = beta2 * v + (1.0 - beta2) * mean(grad * grad);
            let m = momentum(grad, beta1);
            let h = sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps;
            param = decoupled_decay(param, lr, weight_decay) - lr * (m * ((1.0 / (1.0 - pow(beta1, step))) / h));
        }
    }
}

optimizer! {
    /// Prodigy: Adam whose step size `d` is estimated on line from the distance travelled from
    /// the initial point (D-Adaptation with Prodigy's weighting).
    ///
    /// ```text
    /// (d, d_num: global scalars, start d0 and 0; beta3 = sqrt(beta2); dlr = d * lr)
    /// per parameter, first step: p0 = p
    /// delta = (d / d0) * dlr * Σ_all params <grad, p0 - p>              (global sum, old d)
    /// m = beta1 m + d (1 - beta1) grad;   v = beta2 v + d² (1 - beta2) grad²
    /// s = beta3 s + (d / d0) * dlr * grad
    /// den = Σ_all params |s|                                             (global sum, new s)
    /// if den == 0: the step changes no parameter and keeps d, d_num (m, v, s move)
    /// num = beta3 d_num + delta;  d_hat = d_coef * num / den
    /// d = max(d, d_hat);  d_num = num
    /// p = p - weight_decay * dlr * p                                     (decoupled, old dlr)
    /// p = p - dlr * m / (sqrt(v) + d * eps)                              (NEW d, old dlr)
    /// ```
    /// Source: Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
    /// Learner" (ICML 2024), Algorithm 4 (Adam form); the reference is the authors' `prodigyopt`
    /// 1.1.2 `Prodigy` (one parameter group, `slice_p = 1`, `decouple = True`,
    /// `use_bias_correction = False`, `safeguard_warmup = False`, `beta3 = None`,
    /// `growth_rate = inf`, `beta1 > 0`); with `growth_rate = inf` the reference's
    /// `d_max = max(d_max, d_hat); d = min(d_max, d * growth_rate)` keeps `d = d_max`, which is
    /// `d = max(d, d_hat)`. `d` and `d_num` are global: every parameter
    /// keeps a copy (`scalar_state`) updated from the same global sums, so the copies stay equal
    /// as long as every parameter is updated at every step (a parameter first seen later would
    /// start from `d0`; the reference would give it the current `d`). Differences from the
    /// reference: the options above are fixed to those values (`beta3 = sqrt(beta2)`, no growth
    /// limit); the sums are accumulated in `f64` (the reference: `float32` dot products
    /// and abs-sums per tensor, added in `f64`); the per-parameter step count still advances on
    /// a `den == 0` step (the reference's does not); `p0` is written back unchanged every step
    /// (4 B per `f32` element; a state must be assigned). State: `p0`, `m`, `v`, `s` per
    /// element, `d_st` (`d`, `0` before the first step) and `d_num` per parameter (scalars 0
    /// and 1). Two loops per step (the global sums end the first).
    pub Prodigy<lr = 1.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, d0: positive = 1e-6,
                d_coef: positive = 1.0> {
        // d >= d0 > 0 once stored: 0 marks "not stored yet" (a scalar state starts at a literal)
        let d_st = scalar_state(0.0);
        let d_num = scalar_state(0.0);
        let d = select(d_st == 0.0, d0, d_st);
        let beta3 = sqrt(beta2);
        let dlr = d * lr;
        let p0 = state(param);
        p0 = p0;
        let delta = (d / d0) * dlr * global_sum(grad * (p0 - param));
        let m = state(0.0);
        let m_new = beta1 * m + (d * (1.0 - beta1)) * grad;
        m = m_new;
        let v = state(0.0);
        let v_new = beta2 * v + (d * d * (1.0 - beta2)) * (grad * grad);
        v = v_new;
        let s = state(0.0);
        let s_new = beta3 * s + ((d / d0) * dlr) * grad;
        s = s_new;
        let den = global_sum(abs(s_new));
        let num = beta3 * d_num + delta;
        let d_hat = d_coef * num / den;
        let d_new = max(d, d_hat);
        let skip = den == 0.0;
        d_st = select(skip, d, d_new);
        d_num = select(skip, d_num, num);
        let decayed = param + (-(weight_decay * dlr)) * param;
        param = select(skip, param, decayed - dlr * (m_new / (sqrt(v_new) + d_new * eps)));
    }
}

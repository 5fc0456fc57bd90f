//! Conformance of the zoo optimizers with the reference trajectories in `tests/fixtures/`.
//!
//! Every case is run teacher-forced through both entry points of an optimizer:
//! - the slice path (`update_slices` on `ParamSlice`s), and
//! - the dfdx path (`update` on a [`CaseModel`] with dfdx `Gradients`),
//!
//! each with a fresh optimizer built from the case's hyper-parameters. Before step `t + 1` the
//! reference gradient `grads[t]` is fed (never our own), the optimizer keeps its own state, and
//! the parameters after the step are compared with `params[t]` element-wise under the case
//! tolerance (`|ours - ref| <= atol + rtol * |ref|`).
//!
//! Hyper-parameters are read from the fixture, not restated here: the explicit constructor
//! kwargs from `hyperparameters` and, for everything torch filled in with its defaults,
//! `final_param_groups[0]` (which torch records in full).
//!
//! After the last step each path's optimizer state is compared with the reference's
//! `final_state`: per-parameter step counts, and every state tensor through a per-case table
//! that maps the reference's state keys (`exp_avg`, `square_avg`, ...) to our state names. Our
//! names are those of the fixtures' `semantics` pseudo-code (`m`, `v`, `vmax`, `buf`, ...), read
//! with `DslOptimizer::state_buffer`.
//!
//! The runner (`run_slices`, `run_dfdx`, `check_final_state`) and the `conformance!` macro live
//! in `optim_tests::runner` (shared with `conformance_2026.rs`).

use optim_dsl::prelude::*;
use optim_tests::fixtures::{self, Case};
use optim_tests::{conformance, torch_config};

/// The case's learning rate ([`Case::constant_lr`]: the same at every step, the
/// constructor's `lr`) as a [`Hyper`].
fn lr(c: &Case) -> Hyper {
    c.constant_lr().into()
}

/// `final_param_groups[0][key]` as a flag.
fn flag(c: &Case, key: &str) -> bool {
    c.group_bool(key)
}

// One module per optimizer family, each importing its zoo types. Configs are built by
// `torch_config!` (each field and flag read from `final_param_groups[0]`, under its own name
// or the key given); cases that share a constructor and a state table are listed together.

/// torch.optim.SGD.
mod sgd {
    use super::*;
    use optim_dsl::zoo::{Sgd, SgdConfig};

    fn torch_sgd(c: &Case) -> Result<Sgd<f32>, OptimError> {
        Sgd::<f32>::new(torch_config! { c.group_f64, lr(c),
        SgdConfig { momentum, dampening, weight_decay }, c.group_bool { nesterov, maximize } })
    }

    conformance! { [sgd_plain, sgd_weight_decay], |c| torch_sgd(c), state {} }
    // sgd_inf_param: ±inf parameter elements with weight_decay = 0 stay infinite (issue 10:
    // `l2` is exactly 0)
    conformance! { [sgd_momentum, sgd_momentum_dampening, sgd_nesterov, sgd_inf_param],
    |c| torch_sgd(c), state { momentum_buffer: "buf" } }
}

/// torch.optim.Adam (coupled L2 weight decay).
mod adam {
    use super::*;
    use optim_dsl::zoo::{Adam, AdamConfig};

    fn torch_adam(c: &Case) -> Result<Adam<f32>, OptimError> {
        assert!(
            !flag(c, "decoupled_weight_decay"),
            "{}: torch Adam with decoupled_weight_decay is AdamW",
            c.case
        );
        Adam::<f32>::new(torch_config! { c.group_f64, lr(c),
        AdamConfig { beta1 = "betas.0", beta2 = "betas.1", eps, weight_decay },
        c.group_bool { amsgrad, maximize } })
    }

    conformance! { [adam, adam_l2, adam_inf_param], |c| torch_adam(c),
    state { exp_avg: "m", exp_avg_sq: "v" } }
    conformance! { adam_amsgrad, |c| torch_adam(c),
    state { exp_avg: "m", exp_avg_sq: "v", max_exp_avg_sq: "vmax" } }
}

/// torch.optim.AdamW, with a constant and with a scheduled learning rate.
mod adamw {
    use super::*;
    use optim_dsl::zoo::AdamW;
    use optim_tests::zoo::torch_adamw_config;

    conformance! { [adamw, adamw_inf_param],
    |c| AdamW::<f32>::new(torch_adamw_config(c, lr(c))),
    state { exp_avg: "m", exp_avg_sq: "v" } }
    conformance! { adamw_warmup_cosine,
    |c| {
        assert_eq!(c.hyper_f64("adamw.lr"), 0.01, "base lr of the schedule");
        assert_eq!(c.group_f64("initial_lr"), 0.01, "base lr of the schedule");
        AdamW::<f32>::new(torch_adamw_config(c, warmup_cosine().into()))
    },
    state { exp_avg: "m", exp_avg_sq: "v" } }

    /// torch `SequentialLR([LinearLR(start_factor=0.1, end_factor=1.0, total_iters=5),
    /// CosineAnnealingLR(T_max=15, eta_min=1e-4)], milestones=[5])` on base lr 0.01, stepped
    /// after every optimizer step: value `i` is the lr of update `i + 1`.
    fn warmup_cosine() -> Schedule {
        Schedule::join(
            vec![
                Schedule::linear(0.001, 0.01, 5).unwrap(),
                Schedule::cosine(0.01, 1e-4, 15).unwrap(),
            ],
            vec![5],
        )
        .unwrap()
    }

    /// The schedule used for `adamw_warmup_cosine` reproduces torch's recorded lr at every step.
    #[test]
    fn adamw_warmup_cosine_schedule_values() {
        let case = fixtures::load("adamw_warmup_cosine");
        let s = warmup_cosine();
        for i in 0..case.steps {
            let want = case.lr_at(i);
            let got: f64 = s.value(i as _);
            assert!(
                (got - want).abs() <= 1e-6 * want.abs(),
                "lr of step {}: schedule gives {got:e}, torch used {want:e}",
                i + 1
            );
        }
    }
}

/// torch.optim.RMSprop (centered, with and without momentum and weight decay).
mod rmsprop {
    use super::*;
    use optim_dsl::zoo::{RMSprop, RMSpropConfig};

    fn torch_rmsprop(c: &Case) -> Result<RMSprop<f32>, OptimError> {
        RMSprop::<f32>::new(torch_config! { c.group_f64, lr(c),
        RMSpropConfig { alpha, eps, weight_decay, momentum },
        c.group_bool { centered, maximize } })
    }

    conformance! { rmsprop_centered, |c| torch_rmsprop(c),
    state { square_avg: "v", grad_avg: "ga" } }
    conformance! { rmsprop_centered_momentum, |c| torch_rmsprop(c),
    state { square_avg: "v", grad_avg: "ga", momentum_buffer: "buf" } }
}

/// torch.optim.Adagrad (with lr_decay and initial_accumulator_value), torch.optim.Adadelta,
/// torch.optim.NAdam (Dozat's NAdam with the momentum-decay schedule), torch.optim.RAdam
/// (un-adapted steps 1..5, rectified from step 6) and torch.optim.Adamax.
mod adaptive {
    use super::*;
    use optim_dsl::zoo::{
        Adadelta, AdadeltaConfig, Adagrad, AdagradConfig, Adamax, AdamaxConfig, NAdam, NAdamConfig,
        RAdam, RAdamConfig,
    };

    conformance! { adagrad, |c| Adagrad::<f32>::new(torch_config! { c.group_f64, lr(c),
    AdagradConfig { lr_decay, weight_decay, initial_accumulator_value, eps },
    c.group_bool { maximize } }),
    state { sum: "sum" } }
    conformance! { adadelta, |c| Adadelta::<f32>::new(torch_config! { c.group_f64, lr(c),
    AdadeltaConfig { rho, eps, weight_decay }, c.group_bool { maximize } }),
    state { square_avg: "v", acc_delta: "u" } }
    conformance! { nadam, |c| NAdam::<f32>::new(torch_config! { c.group_f64, lr(c),
    NAdamConfig { beta1 = "betas.0", beta2 = "betas.1", eps, weight_decay, momentum_decay },
    c.group_bool { decoupled_weight_decay, maximize } }),
    state { exp_avg: "m", exp_avg_sq: "v" } }
    conformance! { radam, |c| RAdam::<f32>::new(torch_config! { c.group_f64, lr(c),
    RAdamConfig { beta1 = "betas.0", beta2 = "betas.1", eps, weight_decay },
    c.group_bool { decoupled_weight_decay, maximize } }),
    state { exp_avg: "m", exp_avg_sq: "v" } }
    conformance! { adamax, |c| Adamax::<f32>::new(torch_config! { c.group_f64, lr(c),
    AdamaxConfig { beta1 = "betas.0", beta2 = "betas.1", eps, weight_decay },
    c.group_bool { maximize } }),
    state { exp_avg: "m", exp_inf: "u" } }
}

/// pytorch_optimizer.Lion (decoupled weight decay) and pytorch_optimizer.AdEMAMix (constant
/// alpha and beta3).
mod pytorch_optimizer {
    use super::*;
    use optim_dsl::zoo::{AdEMAMix, AdEMAMixConfig, Lion, LionConfig};

    conformance! { lion, |c| {
        // pytorch_optimizer Lion with weight_decouple=True, fixed_decay=False multiplies p by
        // (1 - lr * weight_decay) before the update: our Lion's (decoupled) weight decay.
        assert!(flag(c, "weight_decouple"), "Lion: expected decoupled decay");
        assert!(!flag(c, "fixed_decay"), "Lion: fixed_decay not supported");
        Lion::<f32>::new(torch_config! { c.group_f64, lr(c),
            LionConfig { beta1 = "betas.0", beta2 = "betas.1", weight_decay } })
    },
    state { exp_avg: "m" } }

    conformance! { ademamix, |c| {
        // alpha and beta3 are constant when t_alpha_beta3 is None (no warm-up schedules).
        assert!(c.group("t_alpha_beta3").is_null(), "AdEMAMix: t_alpha_beta3");
        // weight_decouple=False: coupled decay (g += wd * p); moot here since weight_decay = 0.
        assert!(!flag(c, "weight_decouple"), "AdEMAMix: expected coupled decay");
        assert_eq!(c.group_f64("weight_decay"), 0.0, "AdEMAMix: weight_decay");
        AdEMAMix::<f32>::new(torch_config! { c.group_f64, lr(c), AdEMAMixConfig {
            beta1 = "betas.0", beta2 = "betas.1", beta3 = "betas.2", alpha, eps, weight_decay
        } })
    },
    state { exp_avg: "m1", exp_avg_sq: "v", exp_avg_slow: "m2" } }
}

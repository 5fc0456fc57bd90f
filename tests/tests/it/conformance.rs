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

// Configs are written out field by field, with `..Default::default()` for any fields the
// reference does not set; for configs whose every field is listed that update is redundant.
#![allow(clippy::needless_update)]

use optim_dsl::prelude::*;
use optim_tests::conformance;
use optim_tests::fixtures::{self, Case};

/// The case's learning rate, after checking that it is the same at every step and equals the
/// constructor's `lr`.
fn constant_lr(c: &Case) -> f64 {
    let lr = c.hyper_f64("lr");
    for t in 0..c.steps {
        assert_eq!(c.lr_at(t), lr, "{}: lr changes at step {}", c.case, t + 1);
    }
    lr
}

/// `final_param_groups[0][key]` as a [`Hyper`].
fn g(c: &Case, key: &str) -> Hyper {
    c.group_f64(key).into()
}

/// `final_param_groups[0][key]` as a flag.
fn flag(c: &Case, key: &str) -> bool {
    c.group_bool(key)
}

// One module per optimizer family, each importing its zoo type.

/// torch.optim.SGD.
mod sgd {
    use super::*;
    use optim_dsl::zoo::{Sgd, SgdConfig};

    fn config(c: &Case) -> SgdConfig {
        SgdConfig {
            lr: constant_lr(c).into(),
            momentum: g(c, "momentum"),
            dampening: g(c, "dampening"),
            weight_decay: g(c, "weight_decay"),
            nesterov: flag(c, "nesterov"),
            maximize: flag(c, "maximize"),
            ..Default::default()
        }
    }

    conformance!(sgd_plain, |c| Sgd::<f32>::new(config(c)), state {});
    conformance!(
        sgd_momentum,
        |c| Sgd::<f32>::new(config(c)),
        state {
            momentum_buffer: "buf"
        }
    );
    conformance!(
        sgd_momentum_dampening,
        |c| Sgd::<f32>::new(config(c)),
        state {
            momentum_buffer: "buf"
        }
    );
    conformance!(
        sgd_nesterov,
        |c| Sgd::<f32>::new(config(c)),
        state {
            momentum_buffer: "buf"
        }
    );
    conformance!(sgd_weight_decay, |c| Sgd::<f32>::new(config(c)), state {});
    // ±inf parameter elements with weight_decay = 0 stay infinite (issue 10: `l2` is exactly 0)
    conformance!(
        sgd_inf_param,
        |c| Sgd::<f32>::new(config(c)),
        state {
            momentum_buffer: "buf"
        }
    );
}

/// torch.optim.Adam (coupled L2 weight decay).
mod adam {
    use super::*;
    use optim_dsl::zoo::{Adam, AdamConfig};

    fn config(c: &Case) -> AdamConfig {
        assert!(
            !flag(c, "decoupled_weight_decay"),
            "{}: torch Adam with decoupled_weight_decay is AdamW",
            c.case
        );
        AdamConfig {
            lr: constant_lr(c).into(),
            beta1: g(c, "betas.0"),
            beta2: g(c, "betas.1"),
            eps: g(c, "eps"),
            weight_decay: g(c, "weight_decay"),
            amsgrad: flag(c, "amsgrad"),
            maximize: flag(c, "maximize"),
            ..Default::default()
        }
    }

    conformance!(
        adam,
        |c| Adam::<f32>::new(config(c)),
        state {
            exp_avg: "m",
            exp_avg_sq: "v"
        }
    );
    conformance!(
        adam_amsgrad,
        |c| Adam::<f32>::new(config(c)),
        state {
            exp_avg: "m",
            exp_avg_sq: "v",
            max_exp_avg_sq: "vmax"
        }
    );
    conformance!(
        adam_l2,
        |c| Adam::<f32>::new(config(c)),
        state {
            exp_avg: "m",
            exp_avg_sq: "v"
        }
    );
    conformance!(
        adam_inf_param,
        |c| Adam::<f32>::new(config(c)),
        state {
            exp_avg: "m",
            exp_avg_sq: "v"
        }
    );
}

/// torch.optim.AdamW, with a constant and with a scheduled learning rate.
mod adamw {
    use super::*;
    use optim_dsl::zoo::AdamW;
    use optim_tests::zoo::torch_adamw_config;

    conformance!(
        adamw,
        |c| AdamW::<f32>::new(torch_adamw_config(c, constant_lr(c).into())),
        state {
            exp_avg: "m",
            exp_avg_sq: "v"
        }
    );
    conformance!(
        adamw_inf_param,
        |c| AdamW::<f32>::new(torch_adamw_config(c, constant_lr(c).into())),
        state {
            exp_avg: "m",
            exp_avg_sq: "v"
        }
    );

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

    conformance!(
        adamw_warmup_cosine,
        |c| {
            assert_eq!(c.hyper_f64("adamw.lr"), 0.01, "base lr of the schedule");
            assert_eq!(c.group_f64("initial_lr"), 0.01, "base lr of the schedule");
            AdamW::<f32>::new(torch_adamw_config(c, warmup_cosine().into()))
        },
        state {
            exp_avg: "m",
            exp_avg_sq: "v"
        }
    );

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

    fn config(c: &Case) -> RMSpropConfig {
        RMSpropConfig {
            lr: constant_lr(c).into(),
            alpha: g(c, "alpha"),
            eps: g(c, "eps"),
            weight_decay: g(c, "weight_decay"),
            momentum: g(c, "momentum"),
            centered: flag(c, "centered"),
            maximize: flag(c, "maximize"),
            ..Default::default()
        }
    }

    conformance!(
        rmsprop_centered,
        |c| RMSprop::<f32>::new(config(c)),
        state {
            square_avg: "v",
            grad_avg: "ga"
        }
    );
    conformance!(
        rmsprop_centered_momentum,
        |c| RMSprop::<f32>::new(config(c)),
        state {
            square_avg: "v",
            grad_avg: "ga",
            momentum_buffer: "buf"
        }
    );
}

/// torch.optim.Adagrad (with lr_decay and initial_accumulator_value).
mod adagrad {
    use super::*;
    use optim_dsl::zoo::{Adagrad, AdagradConfig};

    conformance!(
        adagrad,
        |c| Adagrad::<f32>::new(AdagradConfig {
            lr: constant_lr(c).into(),
            lr_decay: g(c, "lr_decay"),
            weight_decay: g(c, "weight_decay"),
            initial_accumulator_value: g(c, "initial_accumulator_value"),
            eps: g(c, "eps"),
            maximize: flag(c, "maximize"),
            ..Default::default()
        }),
        state { sum: "sum" }
    );
}

/// torch.optim.Adadelta.
mod adadelta {
    use super::*;
    use optim_dsl::zoo::{Adadelta, AdadeltaConfig};

    conformance!(
        adadelta,
        |c| Adadelta::<f32>::new(AdadeltaConfig {
            lr: constant_lr(c).into(),
            rho: g(c, "rho"),
            eps: g(c, "eps"),
            weight_decay: g(c, "weight_decay"),
            maximize: flag(c, "maximize"),
            ..Default::default()
        }),
        state {
            square_avg: "v",
            acc_delta: "u"
        }
    );
}

/// torch.optim.NAdam (Dozat's NAdam with the momentum-decay schedule).
mod nadam {
    use super::*;
    use optim_dsl::zoo::{NAdam, NAdamConfig};

    conformance!(
        nadam,
        |c| NAdam::<f32>::new(NAdamConfig {
            lr: constant_lr(c).into(),
            beta1: g(c, "betas.0"),
            beta2: g(c, "betas.1"),
            eps: g(c, "eps"),
            weight_decay: g(c, "weight_decay"),
            momentum_decay: g(c, "momentum_decay"),
            decoupled_weight_decay: flag(c, "decoupled_weight_decay"),
            maximize: flag(c, "maximize"),
            ..Default::default()
        }),
        state {
            exp_avg: "m",
            exp_avg_sq: "v"
        }
    );
}

/// torch.optim.RAdam (un-adapted steps 1..5, rectified from step 6).
mod radam {
    use super::*;
    use optim_dsl::zoo::{RAdam, RAdamConfig};

    conformance!(
        radam,
        |c| RAdam::<f32>::new(RAdamConfig {
            lr: constant_lr(c).into(),
            beta1: g(c, "betas.0"),
            beta2: g(c, "betas.1"),
            eps: g(c, "eps"),
            weight_decay: g(c, "weight_decay"),
            decoupled_weight_decay: flag(c, "decoupled_weight_decay"),
            maximize: flag(c, "maximize"),
            ..Default::default()
        }),
        state {
            exp_avg: "m",
            exp_avg_sq: "v"
        }
    );
}

/// torch.optim.Adamax.
mod adamax {
    use super::*;
    use optim_dsl::zoo::{Adamax, AdamaxConfig};

    conformance!(
        adamax,
        |c| Adamax::<f32>::new(AdamaxConfig {
            lr: constant_lr(c).into(),
            beta1: g(c, "betas.0"),
            beta2: g(c, "betas.1"),
            eps: g(c, "eps"),
            weight_decay: g(c, "weight_decay"),
            maximize: flag(c, "maximize"),
            ..Default::default()
        }),
        state {
            exp_avg: "m",
            exp_inf: "u"
        }
    );
}

/// pytorch_optimizer.Lion (decoupled weight decay).
mod lion {
    use super::*;
    use optim_dsl::zoo::{Lion, LionConfig};

    conformance!(
        lion,
        |c| {
            // pytorch_optimizer Lion with weight_decouple=True, fixed_decay=False multiplies p by
            // (1 - lr * weight_decay) before the update: our Lion's (decoupled) weight decay.
            assert!(flag(c, "weight_decouple"), "Lion: expected decoupled decay");
            assert!(!flag(c, "fixed_decay"), "Lion: fixed_decay not supported");
            Lion::<f32>::new(LionConfig {
                lr: constant_lr(c).into(),
                beta1: g(c, "betas.0"),
                beta2: g(c, "betas.1"),
                weight_decay: g(c, "weight_decay"),
                ..Default::default()
            })
        },
        state { exp_avg: "m" }
    );
}

/// pytorch_optimizer.AdEMAMix (constant alpha and beta3).
mod ademamix {
    use super::*;
    use optim_dsl::zoo::{AdEMAMix, AdEMAMixConfig};

    conformance!(
        ademamix,
        |c| {
            // alpha and beta3 are constant when t_alpha_beta3 is None (no warm-up schedules).
            assert!(
                c.group("t_alpha_beta3").is_null(),
                "AdEMAMix: t_alpha_beta3"
            );
            // weight_decouple=False: coupled decay (g += wd * p); moot here since weight_decay = 0.
            assert!(
                !flag(c, "weight_decouple"),
                "AdEMAMix: expected coupled decay"
            );
            assert_eq!(c.group_f64("weight_decay"), 0.0, "AdEMAMix: weight_decay");
            AdEMAMix::<f32>::new(AdEMAMixConfig {
                lr: constant_lr(c).into(),
                beta1: g(c, "betas.0"),
                beta2: g(c, "betas.1"),
                beta3: g(c, "betas.2"),
                alpha: g(c, "alpha"),
                eps: g(c, "eps"),
                weight_decay: g(c, "weight_decay"),
                ..Default::default()
            })
        },
        state {
            exp_avg: "m1",
            exp_avg_sq: "v",
            exp_avg_slow: "m2"
        }
    );
}

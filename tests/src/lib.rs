//! Shared helpers for the optim-dsl test suite.
//!
//! - [`fixtures`]: serde types for the reference trajectory cases in `tests/fixtures/`
//!   (see `tests/fixtures/README.md`), a loader and an element-wise tolerance check.
//! - [`model`]: [`model::CaseModel`], a dfdx [`TensorCollection`](dfdx::nn::TensorCollection)
//!   holding the four parameters every optimizer case uses, so the same case can be driven
//!   through the dfdx path of an optimizer ([`model::MarsModel`]: the five of `mars_adamw`).
//! - [`zoo`]: zoo optimizers configured as several tests need them.
//! - [`state`]: optimizer states compared bit for bit.
//! - [`params`]: [`ParamSlice`](optim_dsl::ParamSlice)s from parallel lists.
//! - [`one`]: a one-neuron dfdx model for tests computed by hand.
//! - [`values`]: deterministic pseudo-random values (xorshift64).
//! - [`runner`]: teacher-forced runs of a case through the slice and the dfdx path, the
//!   final-state comparison, and the [`conformance!`] macro that defines one test per case.
//! - [`adamw_stored!`]: AdamW declared with its moments in a chosen storage, for the
//!   low-precision state tests.

/// Invokes `$m!` with the type name of every optimizer of the zoo (`optim_dsl::zoo`), in zoo
/// order, so that the tests that must cover the whole zoo (`zoo_no_panic`, `cuda_source`,
/// `cuda_emulated`) share one list. The caller brings the names into scope
/// (`use optim_dsl::zoo::*;`).
#[macro_export]
macro_rules! for_each_zoo {
    ($m:ident) => {
        $m! {
            Sgd,
            Adam,
            AdamW,
            RMSprop,
            Adagrad,
            Adadelta,
            Adamax,
            NAdam,
            RAdam,
            Lion,
            AdEMAMix,
            Muon,
            Adafactor,
            Shampoo,
            Lamb,
            Soap,
            ScheduleFreeAdamW,
            KFac,
            NorMuon,
            CautiousAdamW,
            CautiousLion,
            MarsAdamW,
            Adan,
            Adopt,
            LaProp,
            Splus,
            PsgdKron,
            Dion,
            MuonPolarExpress,
            AdaMuon,
            AdamMini,
            Prodigy
        }
    };
}

/// Declares `pub $name`, AdamW (`torch.optim.AdamW`'s update, the rule of the zoo's `AdamW`,
/// `AdamWBf16` and `AdamW8bit`) with default `lr = 1e-2`, `beta1 = 0.9`, `beta2 = 0.999`,
/// `eps = 1e-8`, `weight_decay = 1e-2`, and its moments `m`, `v` stored as named
/// (`pub Name: bf16_sr, f16` -> `let m: bf16_sr = ...; let v: f16 = ...`; no types: `f32`
/// state). The low-precision tests (`lowp_state`, `q8_state`) compare storages under one
/// update rule; the storages the zoo has (`bf16`, `q8`/`uq8`) come from the zoo.
#[macro_export]
macro_rules! adamw_stored {
    ($(#[doc = $doc:tt])* pub $name:ident $(: $m:ident, $v:ident)?) => {
        ::optim_dsl::optimizer! {
            $(#[doc = $doc])*
            pub $name<lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2> {
                let m $(: $m)? = momentum(grad, beta1);
                let v $(: $v)? = second_moment(grad, beta2);
                param = decoupled_decay(param, lr, weight_decay)
                    - lr / (1.0 - pow(beta1, step)) * m / (sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps);
            }
        }
    };
}

/// The message of `result`'s error, after asserting that it is an error whose message contains
/// every one of `words` (the message is shown when it does not).
pub fn assert_err_has<T: std::fmt::Debug, E: std::fmt::Display>(
    result: Result<T, E>,
    words: &[&str],
) -> String {
    let err = result.expect_err("an error").to_string();
    for w in words {
        assert!(err.contains(w), "the error does not name {w:?}: {err}");
    }
    err
}

pub mod fixtures;

pub mod model;

pub mod runner;

/// A zoo config read from a reference case `c` (a `&Case`). Written
///
/// ```text
/// torch_config! { c.group_f64, lr, AdamConfig { beta1 = "betas.0", eps }, c.group_bool { amsgrad } }
/// ```
///
/// it is `AdamConfig { lr, beta1: c.group_f64("betas.0").into(), eps: c.group_f64("eps").into(),
/// amsgrad: c.group_bool("amsgrad"), ..Default::default() }`: each field is read with the first
/// reader (`Case::group_f64`: `final_param_groups[0]`, where torch records every value;
/// `Case::hyper_f64`: the constructor's kwargs) under its own name, or under the key given, and
/// converted into the config's type (`Hyper`); each flag likewise with the second reader
/// (`Case::group_bool`, `Case::hyper_bool`). The fields not listed keep their defaults.
#[macro_export]
macro_rules! torch_config {
    (
        $c:ident . $num:ident, $lr:expr,
        $config:ident { $($field:ident $(= $key:literal)?),* $(,)? }
        $(, $cb:ident . $bool:ident { $($flag:ident $(= $fkey:literal)?),* $(,)? })?
        $(,)?
    ) => {{
        // a config whose every field is listed makes the update redundant
        #[allow(clippy::needless_update, clippy::let_and_return)]
        let config = $config {
            lr: $lr,
            $($field: $c.$num($crate::__torch_key!($field $(, $key)?)).into(),)*
            $($($flag: $cb.$bool($crate::__torch_key!($flag $(, $fkey)?)),)*)?
            ..Default::default()
        };
        config
    }};
}

/// The key of a [`torch_config!`] field: its own name unless one is given.
#[doc(hidden)]
#[macro_export]
macro_rules! __torch_key {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $key:literal) => {
        $key
    };
}

/// The model a [`conformance!`] case runs on the dfdx path: [`model::CaseModel`] unless the
/// case names another.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_model {
    () => { $crate::model::CaseModel<f32, $crate::runner::Cpu> };
    ($m:ty) => { $m };
}

/// The `Cuda` leg of [`conformance!`]: with feature `cuda` and `OPTIM_GPU=1` in the
/// environment (set by `scripts/gpu-check.sh`), the case also runs through `opt.update` on a
/// dfdx `Cuda` [`CaseModel`](crate::model::CaseModel) (`runner::run_dfdx_cuda`) and its final
/// state is checked like the other paths'. Cases with a model of their own are skipped there.
#[doc(hidden)]
#[macro_export]
macro_rules! __cuda_case {
    ($case:ident, $make:ident, $map:ident, $model:ty) => {};
    ($case:ident, $make:ident, $map:ident) => {
        #[cfg(feature = "cuda")]
        if std::env::var_os("OPTIM_GPU").is_some() {
            let mut opt = $make(&$case).expect("constructing the optimizer (Cuda path)");
            let cuda = $crate::runner::run_dfdx_cuda(&$case, |model, grads| {
                opt.update(model, grads).expect("update on Cuda");
            });
            $crate::runner::check_final_state(&$case, "dfdx Cuda path", &opt, &$map);
            println!(
                "{}: max |err| / tolerance: dfdx Cuda path {cuda:.4}",
                $case.case
            );
        }
    };
}

/// Defines one `#[test]` per case: loads `tests/fixtures/<name>.json`, builds a fresh optimizer
/// with `$make` (an expression of type `Result<Optimizer, OptimError>` using the bound `&Case`)
/// for each path, runs the slice path and the dfdx path teacher-forced
/// ([`runner::run_slices`], [`runner::run_dfdx`]) and compares each path's final state
/// ([`runner::check_final_state`]). The state table maps reference keys to our buffers
/// (`state { exp_avg: "m", ... }`), optionally to scalar slots (`scalars { key: 0 }`), lists
/// the `(parameter, key)` pairs we do not keep (`not_kept { "b_8": "last_grad" }`), and may name
/// the dfdx model (`model = MarsModel<f32, Cpu>`; default [`model::CaseModel`]). Prints the
/// largest error of each path as a fraction of the tolerance (`cargo test -- --nocapture`).
/// `conformance!([case_a, case_b], |c| ..., state { ... })` defines one such test per case
/// for cases that share the constructor and the state table.
#[macro_export]
macro_rules! conformance {
    ([$($name:ident),+ $(,)?], $($rest:tt)*) => {
        $crate::conformance!(@each [$($name)+] ($($rest)*));
    };
    (@each [$($name:ident)+] $rest:tt) => {
        $($crate::conformance!(@one $name $rest);)+
    };
    (@one $name:ident ($($rest:tt)*)) => {
        $crate::conformance!($name, $($rest)*);
    };
    (
        $name:ident,
        |$c:ident| $make:expr,
        state { $($key:ident: $ours:literal),* $(,)? }
        $(, scalars { $($skey:ident: $slot:literal),* $(,)? })?
        $(, not_kept { $($np:literal: $nk:literal),* $(,)? })?
        $(, model = $model:ty)?
        $(,)?
    ) => {
        #[test]
        fn $name() {
            let case = $crate::fixtures::load(stringify!($name));
            let make = |$c: &$crate::fixtures::Case| $make;
            let map = $crate::runner::StateMap {
                buffers: &[$((stringify!($key), $ours)),*],
                scalars: &[$($((stringify!($skey), $slot)),*)?],
                not_kept: &[$($(($np, $nk)),*)?],
            };

            let mut opt = make(&case).expect("constructing the optimizer (slice path)");
            let slices = $crate::runner::run_slices(&case, |ps| {
                opt.update_slices(ps).expect("update_slices");
            });
            $crate::runner::check_final_state(&case, "slice path", &opt, &map);

            let mut opt = make(&case).expect("constructing the optimizer (dfdx path)");
            let dfdx = $crate::runner::run_dfdx::<$crate::__case_model!($($model)?)>(
                &case,
                |model, grads| {
                    opt.update(model, grads).expect("update");
                },
            );
            $crate::runner::check_final_state(&case, "dfdx path", &opt, &map);
            println!(
                "{}: max |err| / tolerance: slice path {slices:.4}, dfdx path {dfdx:.4}",
                case.case
            );
            $crate::__cuda_case!(case, make, map $(, $model)?);
        }
    };
}

pub mod trajectory;

pub mod zoo;

pub mod state;

pub mod values;

pub mod params;

pub mod one;

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

pub mod fixtures {
    //! Reference trajectory cases (format_version 1 of the project's shared refs).
    //!
    //! Every float in a case file is the exact decimal of a float32 value, so parsing as `f64`
    //! and casting to `f32` is exact. Non-finite values are written as the strings `"nan"`,
    //! `"inf"` and `"-inf"`; the deserializers here map them back to `f64`.

    use serde::{Deserialize, Deserializer};
    use std::collections::BTreeMap;

    /// One reference trajectory: the inputs fed to a trusted implementation and what it did.
    #[derive(Debug, Clone, Deserialize)]
    pub struct Case {
        /// Name of the case (equals the file name without `.json`).
        pub case: String,
        /// One-line purpose of the case.
        #[serde(default)]
        pub summary: String,
        /// Reference library, version, API and code path that produced the trajectory.
        #[serde(default)]
        pub reference: serde_json::Value,
        /// Exact constructor kwargs, with the reference's own names (e.g. torch `betas`).
        pub hyperparameters: serde_json::Value,
        /// Pseudo-code of the exact update rule of the code path that ran.
        #[serde(default)]
        pub semantics: String,
        /// Optional notes on how inputs were modified (edge cases) and caveats.
        #[serde(default)]
        pub notes: Option<String>,
        /// Number of optimizer steps recorded.
        pub steps: usize,
        /// Parameter names in the order they were given to the optimizer.
        pub param_order: Vec<String>,
        /// Initial parameters, keyed by name.
        pub params_init: BTreeMap<String, TensorData>,
        /// `grads[t][name]`: flat row-major gradient fed to step `t + 1`.
        #[serde(deserialize_with = "de_steps")]
        pub grads: Vec<BTreeMap<String, Vec<f64>>>,
        /// `lr[t]`: learning rate in effect at step `t + 1` (torch: `[x]` per param group;
        /// optax: a scalar). Use [`Case::lr_at`].
        pub lr: Vec<serde_json::Value>,
        /// `params[t][name]`: flat row-major parameters after step `t + 1`.
        #[serde(deserialize_with = "de_steps")]
        pub params: Vec<BTreeMap<String, Vec<f64>>>,
        /// Optimizer state after the last step, keyed by parameter name then by the reference's
        /// state key. Use [`Case::final_state_tensor`] to read a tensor out of it.
        pub final_state: serde_json::Value,
        /// torch: all group hyper-parameters including defaults (one object per param group).
        #[serde(default)]
        pub final_param_groups: Vec<serde_json::Value>,
        /// Recommended element-wise comparison tolerance.
        pub tolerance: Tolerance,
    }

    /// A tensor as stored in a case file: shape and flat row-major data.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct TensorData {
        /// Shape (empty for a scalar tensor).
        pub shape: Vec<usize>,
        /// Flat row-major data; non-finite values come from the strings `"nan"`/`"inf"`/`"-inf"`.
        #[serde(deserialize_with = "de_flat")]
        pub data: Vec<f64>,
        /// Element type name (`"float32"`), when the file records it.
        #[serde(default)]
        pub dtype: Option<String>,
    }

    impl TensorData {
        /// Number of elements implied by the shape (1 for a scalar).
        pub fn numel(&self) -> usize {
            self.shape.iter().product()
        }
    }

    /// Element-wise tolerance: `|got - want| <= atol + rtol * |want|`.
    #[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
    pub struct Tolerance {
        /// Relative tolerance.
        pub rtol: f64,
        /// Absolute tolerance.
        pub atol: f64,
    }

    impl Tolerance {
        /// The error allowed for a reference value `want`.
        pub fn allowed(&self, want: f64) -> f64 {
            self.atol + self.rtol * want.abs()
        }
    }

    /// A number that may be written as a JSON number or as `"nan"`, `"inf"`, `"-inf"`.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum RawNum {
        Num(f64),
        Str(String),
    }

    impl RawNum {
        fn into_f64<E: serde::de::Error>(self) -> Result<f64, E> {
            match self {
                RawNum::Num(x) => Ok(x),
                RawNum::Str(s) => match s.as_str() {
                    "nan" | "NaN" => Ok(f64::NAN),
                    "inf" | "Infinity" => Ok(f64::INFINITY),
                    "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
                    other => Err(E::custom(format!(
                        "expected a number, got string {other:?}"
                    ))),
                },
            }
        }
    }

    /// A flat list of numbers, each possibly a non-finite string.
    struct Flat(Vec<f64>);

    impl<'de> Deserialize<'de> for Flat {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let raw = Vec::<RawNum>::deserialize(d)?;
            raw.into_iter()
                .map(RawNum::into_f64)
                .collect::<Result<Vec<_>, _>>()
                .map(Flat)
        }
    }

    fn de_flat<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Flat::deserialize(d).map(|f| f.0)
    }

    fn de_steps<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<BTreeMap<String, Vec<f64>>>, D::Error> {
        let raw = Vec::<BTreeMap<String, Flat>>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect())
            .collect())
    }

    /// The optimizer trajectory cases copied into `tests/fixtures/` (one conformance test each).
    pub const OPTIMIZER_CASES: [&str; 19] = [
        "sgd_plain",
        "sgd_momentum",
        "sgd_momentum_dampening",
        "sgd_nesterov",
        "sgd_weight_decay",
        "adam",
        "adam_amsgrad",
        "adam_l2",
        "adamw",
        "adamw_warmup_cosine",
        "rmsprop_centered",
        "rmsprop_centered_momentum",
        "adagrad",
        "adadelta",
        "nadam",
        "radam",
        "adamax",
        "lion",
        "ademamix",
    ];

    /// Path of the fixture file for case `name`: in `$OPTIM_FIXTURES` when set (binaries
    /// carried to another machine, `scripts/gpu-check.sh`), else in `tests/fixtures` of the
    /// checkout the tests were built from.
    pub fn path(name: &str) -> String {
        match std::env::var("OPTIM_FIXTURES") {
            Ok(dir) => format!("{dir}/{name}.json"),
            Err(_) => format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR")),
        }
    }

    /// `tests/fixtures/<name>.json` as untyped JSON, for fixtures with their own layout
    /// (matrix-primitive outputs, coefficient tables). Panics (with the file name) if the file
    /// is missing or is not JSON.
    pub fn raw(name: &str) -> serde_json::Value {
        let path = path(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse fixture {path}: {e}"))
    }

    /// A JSON array of numbers as `f64`s. Panics if `v` is not one.
    pub fn floats(v: &serde_json::Value) -> Vec<f64> {
        let items = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
        items
            .iter()
            .map(|x| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}")))
            .collect()
    }

    /// Loads and checks `tests/fixtures/<name>.json`.
    ///
    /// Panics (with the file name) if the file is missing or malformed, or if its lengths are
    /// inconsistent (`grads`, `params`, `lr` must have `steps` entries; every tensor must have
    /// as many elements as its shape says).
    pub fn load(name: &str) -> Case {
        let path = path(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"));
        let case: Case = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("cannot parse fixture {path}: {e}"));
        case.validate();
        case
    }

    /// Reads a JSON value as `f64`, accepting the non-finite strings.
    fn value_f64(v: &serde_json::Value) -> Option<f64> {
        match v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => match s.as_str() {
                "nan" => Some(f64::NAN),
                "inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                _ => None,
            },
            _ => None,
        }
    }

    /// Follows a dotted path (`"betas.1"`, `"adamw.lr"`) through objects and arrays.
    fn lookup<'a>(root: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
        key.split('.').try_fold(root, |v, seg| match v {
            serde_json::Value::Object(m) => m.get(seg),
            serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
    }

    impl Case {
        fn validate(&self) {
            let name = &self.case;
            assert_eq!(self.grads.len(), self.steps, "{name}: grads.len() != steps");
            assert_eq!(
                self.params.len(),
                self.steps,
                "{name}: params.len() != steps"
            );
            assert_eq!(self.lr.len(), self.steps, "{name}: lr.len() != steps");
            for p in &self.param_order {
                let init = self
                    .params_init
                    .get(p)
                    .unwrap_or_else(|| panic!("{name}: no params_init for {p}"));
                let n = init.numel();
                assert_eq!(init.data.len(), n, "{name}: params_init[{p}] length");
                for t in 0..self.steps {
                    let g = self.grads[t].get(p).map(Vec::len);
                    assert_eq!(g, Some(n), "{name}: grads[{t}][{p}] length");
                    let q = self.params[t].get(p).map(Vec::len);
                    assert_eq!(q, Some(n), "{name}: params[{t}][{p}] length");
                }
            }
            assert_eq!(
                self.params_init.len(),
                self.param_order.len(),
                "{name}: params_init has names not in param_order"
            );
        }

        /// Learning rate in effect at step `t + 1` (`t` is 0-based). For torch cases with
        /// several param groups this is the first group's value.
        pub fn lr_at(&self, t: usize) -> f64 {
            let v = &self.lr[t];
            let x = match v {
                serde_json::Value::Array(a) => a.first().and_then(value_f64),
                other => value_f64(other),
            };
            x.unwrap_or_else(|| panic!("{}: lr[{t}] is not a number: {v}", self.case))
        }

        /// The constructor's `lr`, after asserting that every step ran with it (no schedule).
        pub fn constant_lr(&self) -> f64 {
            let lr = self.hyper_f64("lr");
            for t in 0..self.steps {
                assert_eq!(
                    self.lr_at(t),
                    lr,
                    "{}: lr changes at step {}",
                    self.case,
                    t + 1
                );
            }
            lr
        }

        /// Hyper-parameter `key` of the reference constructor, as `f64`. `key` may be a dotted
        /// path into nested objects/arrays (`"betas.0"`, `"adamw.weight_decay"`).
        /// Panics if absent or not a number.
        pub fn hyper_f64(&self, key: &str) -> f64 {
            self.hyper_opt_f64(key)
                .unwrap_or_else(|| panic!("{}: no numeric hyperparameter {key:?}", self.case))
        }

        /// Like [`Case::hyper_f64`] but `None` when the key is absent (or null).
        pub fn hyper_opt_f64(&self, key: &str) -> Option<f64> {
            lookup(&self.hyperparameters, key).and_then(value_f64)
        }

        /// Value `key` (dotted path allowed) of the first entry of `final_param_groups`: torch
        /// records every group hyper-parameter there, including the defaults it filled in.
        /// Panics if absent.
        pub fn group(&self, key: &str) -> &serde_json::Value {
            self.final_param_groups
                .first()
                .and_then(|g| lookup(g, key))
                .unwrap_or_else(|| panic!("{}: no final_param_groups[0].{key}", self.case))
        }

        /// [`Case::group`] as `f64`. Panics if absent or not a number.
        pub fn group_f64(&self, key: &str) -> f64 {
            let v = self.group(key);
            value_f64(v).unwrap_or_else(|| {
                panic!(
                    "{}: final_param_groups[0].{key} = {v} is not a number",
                    self.case
                )
            })
        }

        /// [`Case::group`] as `bool`. Panics if absent or not a boolean.
        pub fn group_bool(&self, key: &str) -> bool {
            let v = self.group(key);
            v.as_bool().unwrap_or_else(|| {
                panic!(
                    "{}: final_param_groups[0].{key} = {v} is not a bool",
                    self.case
                )
            })
        }

        /// Hyper-parameter `key` (dotted path allowed) of the reference constructor as `bool`.
        /// Panics if absent or not a boolean.
        pub fn hyper_bool(&self, key: &str) -> bool {
            lookup(&self.hyperparameters, key)
                .and_then(serde_json::Value::as_bool)
                .unwrap_or_else(|| panic!("{}: hyperparameter {key} is not a bool", self.case))
        }

        /// Initial value of parameter `name`, cast to `f32`.
        pub fn init_f32(&self, name: &str) -> Vec<f32> {
            to_f32(&self.params_init[name].data)
        }

        /// Shape of parameter `name`.
        pub fn shape(&self, name: &str) -> &[usize] {
            &self.params_init[name].shape
        }

        /// Gradient of parameter `name` fed to step `t + 1`, cast to `f32`.
        pub fn grad_f32(&self, t: usize, name: &str) -> Vec<f32> {
            to_f32(&self.grads[t][name])
        }

        /// Reference state tensor `key` (e.g. `"exp_avg"`) of parameter `name` after the last
        /// step, or `None` when the reference has no such state.
        pub fn final_state_tensor(&self, name: &str, key: &str) -> Option<TensorData> {
            let v = self.final_state.get(name)?.get(key)?;
            Some(TensorData::deserialize(v).unwrap_or_else(|e| {
                panic!("{}: final_state[{name}][{key}] malformed: {e}", self.case)
            }))
        }

        /// Checks `got` (parameter `name` after step `t + 1`) against `params[t][name]` with the
        /// case tolerance; `what` names the code path in the failure message.
        #[track_caller]
        pub fn assert_params_at(&self, what: &str, t: usize, name: &str, got: &[f32]) {
            assert_close(
                &self.case,
                &format!("{what}: params after step {} [{name}]", t + 1),
                got,
                &self.params[t][name],
                &self.tolerance,
            );
        }
    }

    /// Casts reference values to `f32` (exact: the files hold float32 values).
    pub fn to_f32(xs: &[f64]) -> Vec<f32> {
        xs.iter().map(|&x| x as f32).collect()
    }

    /// Whether `got` matches `want` under `tol`; NaNs match NaNs and infinities match the same
    /// infinity.
    pub fn is_close(got: f64, want: f64, tol: &Tolerance) -> bool {
        if want.is_nan() || got.is_nan() {
            return want.is_nan() && got.is_nan();
        }
        if want.is_infinite() || got.is_infinite() {
            return want == got;
        }
        (got - want).abs() <= tol.allowed(want)
    }

    /// The largest `|got[i] - want[i]| / (atol + rtol * |want[i]|)` over the elements (0 for
    /// matching NaNs and infinities, `inf` for a NaN or infinity that does not match): how much
    /// of the tolerance a comparison used (`<= 1` passes).
    pub fn max_ratio(got: &[f32], want: &[f64], tol: &Tolerance) -> f64 {
        got.iter()
            .zip(want)
            .map(|(&g, &w)| {
                let g = f64::from(g);
                if g.is_finite() && w.is_finite() {
                    (g - w).abs() / tol.allowed(w)
                } else if is_close(g, w, tol) {
                    0.0
                } else {
                    f64::INFINITY
                }
            })
            .fold(0.0, f64::max)
    }

    /// Asserts `|got[i] - want[i]| <= atol + rtol * |want[i]|` for every element (NaN matches
    /// NaN, an infinity matches the same infinity). On failure panics with the case, `what`,
    /// the first offending index, both values, the error, the allowed error and the number of
    /// offending elements.
    #[track_caller]
    pub fn assert_close(case: &str, what: &str, got: &[f32], want: &[f64], tol: &Tolerance) {
        assert_eq!(
            got.len(),
            want.len(),
            "{case}: {what}: length mismatch (got {}, want {})",
            got.len(),
            want.len()
        );
        let bad: Vec<usize> = (0..got.len())
            .filter(|&i| !is_close(f64::from(got[i]), want[i], tol))
            .collect();
        if let Some(&i) = bad.first() {
            let g = f64::from(got[i]);
            let w = want[i];
            panic!(
                "{case}: {what}: element {i} of {}: got {g:e}, want {w:e}, |err| = {:e} > \
                 allowed {:e} (atol {:e} + rtol {:e} * |want|); {} of {} elements out of tolerance",
                got.len(),
                (g - w).abs(),
                tol.allowed(w),
                tol.atol,
                tol.rtol,
                bad.len(),
                got.len(),
            );
        }
    }
}

pub mod model {
    //! [`CaseModel`]: the four parameters shared by all optimizer cases, as a dfdx module.

    use crate::fixtures::Case;
    use dfdx::prelude::*;
    use std::collections::BTreeMap;

    /// Names of the [`CaseModel`] tensors, in field (= walk = `param_order`) order.
    pub const PARAM_NAMES: [&str; 4] = ["w_16x8", "w_8x16", "b_8", "s_1"];

    /// The parameters used by every optimizer conformance case, as a dfdx tensor collection.
    ///
    /// dfdx's walker names the tensors `"w_16x8"`, `"w_8x16"`, `"b_8"`, `"s_1"` (the field
    /// names) and visits them in that order, which is the cases' `param_order`.
    #[derive(Debug, Clone)]
    pub struct CaseModel<E: Dtype, D: Device<E>> {
        /// Matrix parameter of shape `[16, 8]`.
        pub w_16x8: Tensor<Rank2<16, 8>, E, D>,
        /// Matrix parameter of shape `[8, 16]`.
        pub w_8x16: Tensor<Rank2<8, 16>, E, D>,
        /// Vector parameter of shape `[8]`.
        pub b_8: Tensor<Rank1<8>, E, D>,
        /// Single-element parameter of shape `[1]`.
        pub s_1: Tensor<Rank1<1>, E, D>,
    }

    /// [`TensorCollection`] for a struct of tensors: each field is walked under its own name,
    /// in the order listed (which must be the declaration order), and reset to zeros.
    macro_rules! field_tensors {
        ($model:ident { $($field:ident),+ $(,)? }) => {
            impl<E: Dtype, D: Device<E>> TensorCollection<E, D> for $model<E, D> {
                type To<E2: Dtype, D2: Device<E2>> = $model<E2, D2>;

                fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
                    visitor: &mut V,
                ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                    visitor.visit_fields(
                        ($(Self::tensor(
                            stringify!($field),
                            |s| &s.$field,
                            |s| &mut s.$field,
                            TensorOptions::reset_to_zeros(),
                        ),)+),
                        |($($field,)+)| $model { $($field),+ },
                    )
                }
            }
        };
    }

    field_tensors!(CaseModel {
        w_16x8,
        w_8x16,
        b_8,
        s_1
    });

    fn cast<E: Dtype>(xs: &[f64]) -> Vec<E> {
        xs.iter()
            .map(|&x| E::from_f64(x).expect("value not representable in the model dtype"))
            .collect()
    }

    fn check_name(name: &str) {
        assert!(
            PARAM_NAMES.contains(&name),
            "CaseModel has no parameter {name:?} (it has {PARAM_NAMES:?})"
        );
    }

    impl<E: Dtype, D: Device<E>> CaseModel<E, D> {
        /// A model with all parameters zero.
        pub fn zeros(dev: &D) -> Self {
            CaseModel {
                w_16x8: dev.zeros(),
                w_8x16: dev.zeros(),
                b_8: dev.zeros(),
                s_1: dev.zeros(),
            }
        }

        /// A model holding the case's `params_init`. Panics if the case's parameter names or
        /// shapes differ from this model's.
        pub fn from_case(dev: &D, case: &Case) -> Self {
            assert_eq!(
                case.param_order, PARAM_NAMES,
                "{}: param_order differs from CaseModel's",
                case.case
            );
            let mut m = Self::zeros(dev);
            for name in PARAM_NAMES {
                let init = &case.params_init[name];
                assert_eq!(
                    init.shape,
                    Self::shape_of(name),
                    "{}: shape of {name} differs from CaseModel's",
                    case.case
                );
                m.set_from_flat(name, &cast::<E>(&init.data));
            }
            m
        }

        /// Shape of parameter `name`.
        pub fn shape_of(name: &str) -> &'static [usize] {
            match name {
                "w_16x8" => &[16, 8],
                "w_8x16" => &[8, 16],
                "b_8" => &[8],
                "s_1" => &[1],
                _ => {
                    check_name(name);
                    unreachable!()
                }
            }
        }

        /// Flat row-major copy of parameter `name`.
        pub fn params_flat(&self, name: &str) -> Vec<E> {
            match name {
                "w_16x8" => self.w_16x8.as_vec(),
                "w_8x16" => self.w_8x16.as_vec(),
                "b_8" => self.b_8.as_vec(),
                "s_1" => self.s_1.as_vec(),
                _ => {
                    check_name(name);
                    unreachable!()
                }
            }
        }

        /// Overwrites parameter `name` with flat row-major `data` (panics on a length mismatch).
        pub fn set_from_flat(&mut self, name: &str, data: &[E]) {
            let want = Self::shape_of(name).iter().product::<usize>();
            assert_eq!(data.len(), want, "set_from_flat({name}): wrong length");
            match name {
                "w_16x8" => self.w_16x8.copy_from(data),
                "w_8x16" => self.w_8x16.copy_from(data),
                "b_8" => self.b_8.copy_from(data),
                "s_1" => self.s_1.copy_from(data),
                _ => unreachable!(),
            }
        }

        /// All parameters as flat row-major vectors, keyed by name.
        pub fn to_flat(&self) -> BTreeMap<String, Vec<E>> {
            PARAM_NAMES
                .iter()
                .map(|&n| (n.to_string(), self.params_flat(n)))
                .collect()
        }
    }

    /// A dfdx [`TensorVisitor`] that records the walker's name and the shape of every tensor.
    struct NameCollector(Vec<(String, Vec<usize>)>);

    impl<E: Dtype, D: Device<E>> TensorVisitor<E, D> for NameCollector {
        type Viewer = (ViewTensorRef, ViewTensorName);
        type Err = D::Err;
        type E2 = E;
        type D2 = D;

        fn visit<S: Shape>(
            &mut self,
            _opts: TensorOptions<S, E, D>,
            (t, name): (&Tensor<S, E, D>, String),
        ) -> Result<Option<Tensor<S, E, D>>, D::Err> {
            self.0.push((name, t.shape().concrete().into()));
            Ok(None)
        }
    }

    /// The names (as dfdx's [`RecursiveWalker`] with [`ViewTensorName`] reports them, i.e. what
    /// an optimizer walking the module sees) and shapes of every tensor of `model`, in walk
    /// order.
    pub fn walked_tensors<E: Dtype, D: Device<E>, M: TensorCollection<E, D>>(
        model: &M,
    ) -> Vec<(String, Vec<usize>)> {
        let mut names = NameCollector(Vec::new());
        let walked = M::iter_tensors(&mut RecursiveWalker {
            m: (model, String::new()),
            f: &mut names,
        });
        assert!(walked.is_ok(), "walking the model failed");
        names.0
    }

    /// `Gradients` buffers on `Cpu` are only reachable as slices for concrete dtypes, so the
    /// gradient helpers are stamped out per dtype.
    macro_rules! cpu_grad_helpers {
        ($($E:ty),*) => {$(
            impl CaseModel<$E, Cpu> {
                /// Writes `values[name]` (cast to the model dtype) into the gradient buffer of
                /// each named parameter of `grads`, allocating the buffer if needed. Names not
                /// in `values` are left as they are.
                pub fn write_grads(
                    &self,
                    grads: &mut Gradients<$E, Cpu>,
                    values: &BTreeMap<String, Vec<f64>>,
                ) {
                    for (name, vals) in values {
                        check_name(name);
                        let data = cast::<$E>(vals);
                        let buf = match name.as_str() {
                            "w_16x8" => grads.get_or_alloc_mut(&self.w_16x8),
                            "w_8x16" => grads.get_or_alloc_mut(&self.w_8x16),
                            "b_8" => grads.get_or_alloc_mut(&self.b_8),
                            "s_1" => grads.get_or_alloc_mut(&self.s_1),
                            _ => unreachable!(),
                        }
                        .expect("allocating a gradient buffer");
                        assert_eq!(buf.len(), data.len(), "gradient length for {name}");
                        buf.copy_from_slice(&data);
                    }
                }

                /// Fresh gradients (`alloc_grads`) holding `values[name]` for each parameter;
                /// every parameter gets a buffer, zero where `values` has no entry.
                pub fn grads_from(
                    &self,
                    values: &BTreeMap<String, Vec<f64>>,
                ) -> Gradients<$E, Cpu> {
                    let mut grads = self.alloc_grads();
                    self.write_grads(&mut grads, values);
                    grads
                }

                /// Flat row-major copy of the gradient of parameter `name` held by `grads`
                /// (allocating a zero buffer if it has none).
                pub fn grad_flat(&self, grads: &mut Gradients<$E, Cpu>, name: &str) -> Vec<$E> {
                    let buf = match name {
                        "w_16x8" => grads.get_or_alloc_mut(&self.w_16x8),
                        "w_8x16" => grads.get_or_alloc_mut(&self.w_8x16),
                        "b_8" => grads.get_or_alloc_mut(&self.b_8),
                        "s_1" => grads.get_or_alloc_mut(&self.s_1),
                        _ => {
                            check_name(name);
                            unreachable!()
                        }
                    }
                    .expect("allocating a gradient buffer");
                    buf.to_vec()
                }
            }
        )*};
    }

    cpu_grad_helpers!(f32, f64);

    /// A dfdx model that holds the parameters of a reference case, so that the case can be run
    /// through an optimizer's dfdx path ([`crate::runner::run_dfdx`]).
    pub trait DfdxCase: TensorCollection<f32, Cpu> {
        /// A model holding the case's `params_init`; panics if the case's parameter names,
        /// order or shapes differ from the model's.
        fn load(dev: &Cpu, case: &Case) -> Self;
        /// Writes `values[name]` into the gradient buffer of each named parameter of `grads`.
        fn set_grads(&self, grads: &mut Gradients<f32, Cpu>, values: &BTreeMap<String, Vec<f64>>);
        /// Flat row-major copy of parameter `name`.
        fn flat(&self, name: &str) -> Vec<f32>;
    }

    impl DfdxCase for CaseModel<f32, Cpu> {
        fn load(dev: &Cpu, case: &Case) -> Self {
            Self::from_case(dev, case)
        }
        fn set_grads(&self, grads: &mut Gradients<f32, Cpu>, values: &BTreeMap<String, Vec<f64>>) {
            self.write_grads(grads, values)
        }
        fn flat(&self, name: &str) -> Vec<f32> {
            self.params_flat(name)
        }
    }

    /// The five parameters of the `mars_adamw` case (`w_16x8: [16, 8]`, `w_8x16: [8, 16]`,
    /// `w_4x4: [4, 4]`, `b_8: [8]`, `s_1: [1]`, in that walk order), as a dfdx tensor
    /// collection.
    #[derive(Debug, Clone)]
    pub struct MarsModel<E: Dtype, D: Device<E>> {
        /// Matrix parameter of shape `[16, 8]`.
        pub w_16x8: Tensor<Rank2<16, 8>, E, D>,
        /// Matrix parameter of shape `[8, 16]`.
        pub w_8x16: Tensor<Rank2<8, 16>, E, D>,
        /// Matrix parameter of shape `[4, 4]` (small gradients: MARS's no-clip branch).
        pub w_4x4: Tensor<Rank2<4, 4>, E, D>,
        /// Vector parameter of shape `[8]`.
        pub b_8: Tensor<Rank1<8>, E, D>,
        /// Single-element parameter of shape `[1]`.
        pub s_1: Tensor<Rank1<1>, E, D>,
    }

    /// Names of the [`MarsModel`] tensors, in field (= walk = `param_order`) order.
    pub const MARS_PARAM_NAMES: [&str; 5] = ["w_16x8", "w_8x16", "w_4x4", "b_8", "s_1"];

    field_tensors!(MarsModel {
        w_16x8,
        w_8x16,
        w_4x4,
        b_8,
        s_1
    });

    impl DfdxCase for MarsModel<f32, Cpu> {
        fn load(dev: &Cpu, case: &Case) -> Self {
            assert_eq!(
                case.param_order, MARS_PARAM_NAMES,
                "{}: param_order differs from MarsModel's",
                case.case
            );
            let mut m = MarsModel {
                w_16x8: dev.zeros(),
                w_8x16: dev.zeros(),
                w_4x4: dev.zeros(),
                b_8: dev.zeros(),
                s_1: dev.zeros(),
            };
            for name in MARS_PARAM_NAMES {
                let init = &case.params_init[name];
                let data = cast::<f32>(&init.data);
                let shape: &[usize] = match name {
                    "w_16x8" => &[16, 8],
                    "w_8x16" => &[8, 16],
                    "w_4x4" => &[4, 4],
                    "b_8" => &[8],
                    _ => &[1],
                };
                assert_eq!(init.shape, shape, "{}: shape of {name}", case.case);
                match name {
                    "w_16x8" => m.w_16x8.copy_from(&data),
                    "w_8x16" => m.w_8x16.copy_from(&data),
                    "w_4x4" => m.w_4x4.copy_from(&data),
                    "b_8" => m.b_8.copy_from(&data),
                    _ => m.s_1.copy_from(&data),
                }
            }
            m
        }

        fn set_grads(&self, grads: &mut Gradients<f32, Cpu>, values: &BTreeMap<String, Vec<f64>>) {
            for (name, vals) in values {
                let data = cast::<f32>(vals);
                let buf = match name.as_str() {
                    "w_16x8" => grads.get_or_alloc_mut(&self.w_16x8),
                    "w_8x16" => grads.get_or_alloc_mut(&self.w_8x16),
                    "w_4x4" => grads.get_or_alloc_mut(&self.w_4x4),
                    "b_8" => grads.get_or_alloc_mut(&self.b_8),
                    "s_1" => grads.get_or_alloc_mut(&self.s_1),
                    _ => {
                        panic!("MarsModel has no parameter {name:?} (it has {MARS_PARAM_NAMES:?})")
                    }
                }
                .expect("allocating a gradient buffer");
                assert_eq!(buf.len(), data.len(), "gradient length for {name}");
                buf.copy_from_slice(&data);
            }
        }

        fn flat(&self, name: &str) -> Vec<f32> {
            match name {
                "w_16x8" => self.w_16x8.as_vec(),
                "w_8x16" => self.w_8x16.as_vec(),
                "w_4x4" => self.w_4x4.as_vec(),
                "b_8" => self.b_8.as_vec(),
                "s_1" => self.s_1.as_vec(),
                _ => panic!("MarsModel has no parameter {name:?} (it has {MARS_PARAM_NAMES:?})"),
            }
        }
    }
}

pub mod runner {
    //! Teacher-forced conformance runs (see `tests/fixtures/README.md`, "How the tests
    //! compare"): before step `t + 1` the reference gradient `grads[t]` is fed (never our own),
    //! the optimizer keeps its own state, and the parameters after the step are compared with
    //! `params[t]` under the case tolerance; after the last step the optimizer state is
    //! compared with the reference's `final_state`. [`conformance!`](crate::conformance!)
    //! defines one `#[test]` per case from these pieces.

    use crate::fixtures::{assert_close, max_ratio, Case};
    use crate::model::DfdxCase;
    pub use dfdx::tensor::Cpu;
    use dfdx::tensor::Gradients;
    use optim_dsl::{DslOptimizer, ParamSlice};

    /// Teacher-forced run of `case` through the slice path; `step` performs one optimizer
    /// update. Returns the largest error over all steps and elements as a fraction of the
    /// tolerance ([`max_ratio`]); panics at the first step out of tolerance.
    pub fn run_slices(case: &Case, mut step: impl FnMut(&mut Vec<ParamSlice<'_, f32>>)) -> f64 {
        let names = &case.param_order;
        let shapes: Vec<Vec<usize>> = names.iter().map(|n| case.shape(n).to_vec()).collect();
        let mut params: Vec<Vec<f32>> = names.iter().map(|n| case.init_f32(n)).collect();
        let mut worst = 0.0f64;
        for t in 0..case.steps {
            let grads: Vec<Vec<f32>> = names.iter().map(|n| case.grad_f32(t, n)).collect();
            let mut slices = crate::params::slices(names, &shapes, &mut params, &grads);
            step(&mut slices);
            drop(slices);
            for (name, p) in names.iter().zip(&params) {
                case.assert_params_at("slice path", t, name, p);
                worst = worst.max(max_ratio(p, &case.params[t][name], &case.tolerance));
            }
        }
        worst
    }

    /// Teacher-forced run of `case` through the dfdx path on model `M`; `step` performs one
    /// optimizer update. One `Gradients` is allocated up front and overwritten before every
    /// step, as in a training loop that reuses its gradient buffers. Returns the largest error
    /// as a fraction of the tolerance, like [`run_slices`].
    pub fn run_dfdx<M: DfdxCase>(
        case: &Case,
        mut step: impl FnMut(&mut M, &mut Gradients<f32, Cpu>),
    ) -> f64 {
        use dfdx::nn::ZeroGrads;
        let dev = Cpu::default();
        let mut model = M::load(&dev, case);
        let mut grads = model.alloc_grads();
        let mut worst = 0.0f64;
        for t in 0..case.steps {
            model.set_grads(&mut grads, &case.grads[t]);
            step(&mut model, &mut grads);
            worst = worst.max(check_step(case, "dfdx path", t, |name| model.flat(name)));
        }
        worst
    }

    /// Asserts every parameter after step `t + 1` (`read(name)`) against the reference under
    /// the case tolerance (`what` names the path); returns the largest error as a fraction of
    /// the tolerance.
    fn check_step(case: &Case, what: &str, t: usize, read: impl Fn(&str) -> Vec<f32>) -> f64 {
        case.param_order
            .iter()
            .map(|name| {
                let p = read(name);
                case.assert_params_at(what, t, name, &p);
                max_ratio(&p, &case.params[t][name], &case.tolerance)
            })
            .fold(0.0, f64::max)
    }

    /// [`run_dfdx`] on a dfdx `Cuda` device (feature `cuda`; needs a GPU): the case's
    /// [`CaseModel`](crate::model::CaseModel) on GPU 0, the reference gradients uploaded into
    /// its `Gradients` before every step, the parameters read back after it. Cases with a
    /// model of their own (`model = ...`) are not run here.
    #[cfg(feature = "cuda")]
    pub fn run_dfdx_cuda(
        case: &Case,
        mut step: impl FnMut(
            &mut crate::model::CaseModel<f32, dfdx::tensor::Cuda>,
            &mut Gradients<f32, dfdx::tensor::Cuda>,
        ),
    ) -> f64 {
        use dfdx::nn::ZeroGrads;
        use dfdx::tensor::Cuda;
        let dev = Cuda::default();
        let mut model = crate::model::CaseModel::<f32, Cuda>::from_case(&dev, case);
        let mut grads = model.alloc_grads();
        let mut worst = 0.0f64;
        for t in 0..case.steps {
            for name in &case.param_order {
                let data = case.grad_f32(t, name);
                let slot = match name.as_str() {
                    "w_16x8" => grads.get_or_alloc_mut(&model.w_16x8),
                    "w_8x16" => grads.get_or_alloc_mut(&model.w_8x16),
                    "b_8" => grads.get_or_alloc_mut(&model.b_8),
                    "s_1" => grads.get_or_alloc_mut(&model.s_1),
                    other => panic!("CaseModel has no parameter {other:?}"),
                }
                .expect("allocating a gradient buffer");
                let slice: &mut optim_dsl::cuda::device::CudaSlice<f32> = &mut *slot;
                slice
                    .device()
                    .htod_sync_copy_into(&data, slice)
                    .expect("uploading a gradient");
            }
            step(&mut model, &mut grads);
            let read = |name: &str| model.params_flat(name);
            worst = worst.max(check_step(case, "dfdx Cuda path", t, read));
        }
        worst
    }

    /// How the reference's `final_state` corresponds to ours.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct StateMap<'a> {
        /// Reference state key -> our element-wise state buffer (a `let` name of the rule,
        /// read with [`DslOptimizer::state_buffer`]).
        pub buffers: &'a [(&'a str, &'a str)],
        /// Reference state key (a Python float in the reference) -> index of our scalar state
        /// slot ([`optim_dsl::ParamState::scalars`]).
        pub scalars: &'a [(&'a str, usize)],
        /// `(parameter, reference key)` pairs the reference keeps and we do not (e.g. a buffer
        /// that only another rule of ours needs); each test says why.
        pub not_kept: &'a [(&'a str, &'a str)],
    }

    /// Reference entries with no element-wise counterpart: torch's per-tensor `step` (checked
    /// against our per-parameter step count instead) and NAdam's scalar `mu_product`.
    const NOT_ELEMENTWISE: [&str; 2] = ["step", "mu_product"];

    /// Compares the state of `opt` after the last step of `case` with the case's
    /// `final_state`: global and per-parameter step counts (and the reference's `step`, a
    /// number or a 0-d tensor), every mapped buffer element-wise and every mapped scalar under
    /// the case tolerance. Every reference key must be mapped, listed in `not_kept`, or be
    /// `step`/`mu_product`.
    pub fn check_final_state<O: DslOptimizer<f32>>(
        case: &Case,
        what: &str,
        opt: &O,
        map: &StateMap<'_>,
    ) {
        let cname = &case.case;
        let steps = case.steps as u64;
        let state = opt.opt_state();
        assert_eq!(state.step, steps, "{cname}: {what}: global step count");
        if let Some(group_step) = case.final_param_groups.first().and_then(|g| g.get("step")) {
            // pytorch_optimizer keeps its step counter in the param group
            assert_eq!(
                group_step.as_f64(),
                Some(steps as f64),
                "{cname}: group step"
            );
        }
        for p in &case.param_order {
            let ps = state
                .param(p)
                .unwrap_or_else(|| panic!("{cname}: {what}: no optimizer state for {p}"));
            assert_eq!(ps.step, steps, "{cname}: {what}: step count of {p}");
            let reference = case.final_state.get(p).and_then(|v| v.as_object());
            let keys: Vec<&String> = reference.map(|m| m.keys().collect()).unwrap_or_default();
            let kept = |key: &str| !map.not_kept.contains(&(p.as_str(), key));
            for key in map
                .buffers
                .iter()
                .map(|b| b.0)
                .chain(map.scalars.iter().map(|s| s.0))
            {
                assert!(
                    !kept(key) || keys.iter().any(|k| *k == key),
                    "{cname}: mapped state {key} missing from the reference state of {p}"
                );
            }
            for key in keys {
                let value = &case.final_state[p.as_str()][key.as_str()];
                if key == "step" {
                    // a Python int, or a 0-d tensor {"shape": [], "data": [x]}
                    let n = value
                        .as_f64()
                        .or_else(|| value["data"][0].as_f64())
                        .unwrap_or_else(|| panic!("{cname}: reference step of {p}: {value}"));
                    assert_eq!(n, steps as f64, "{cname}: reference step of {p}");
                    continue;
                }
                if !kept(key) {
                    continue;
                }
                if let Some(&(_, ours)) = map.buffers.iter().find(|(k, _)| k == key) {
                    let got = opt.state_buffer(p, ours).unwrap_or_else(|| {
                        panic!("{cname}: {what}: no state buffer {ours} for {p}")
                    });
                    let want = case.final_state_tensor(p, key).expect("present");
                    assert_close(
                        cname,
                        &format!("{what}: final state {p}.{key} (ours: {ours})"),
                        got,
                        &want.data,
                        &case.tolerance,
                    );
                } else if let Some(&(_, slot)) = map.scalars.iter().find(|(k, _)| k == key) {
                    let want = value
                        .as_f64()
                        .unwrap_or_else(|| panic!("{cname}: {p}.{key} = {value} is not a number"));
                    let got = *ps.scalars.get(slot).unwrap_or_else(|| {
                        panic!("{cname}: {what}: {p} has no scalar state {slot}")
                    });
                    assert!(
                        (got - want).abs() <= case.tolerance.allowed(want),
                        "{cname}: {what}: final scalar state {p}.{key} (ours: slot {slot}): got {got:e}, want {want:e}"
                    );
                } else {
                    assert!(
                        NOT_ELEMENTWISE.contains(&key.as_str()),
                        "{cname}: reference state {p}.{key} has no counterpart in the table"
                    );
                }
            }
        }
    }
}

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

pub mod trajectory {
    //! Running an optimizer over a reference case on the slice path.

    use crate::fixtures::Case;
    use optim_dsl::DslOptimizer;

    /// Runs `opt` over `case` teacher-forced (feeding `grads[t]`), asserting the parameters
    /// after every step against `params[t]` within the case's tolerance, and calling
    /// `after(t, opt)` after each step for extra checks. Returns the largest absolute deviation
    /// from the reference parameters ([`max_abs_diff`]) over all steps.
    pub fn run_slices<O: DslOptimizer<f32>>(
        case: &Case,
        opt: &mut O,
        what: &str,
        mut after: impl FnMut(usize, &O),
    ) -> f64 {
        let names = &case.param_order;
        let shapes: Vec<&[usize]> = names.iter().map(|n| case.shape(n)).collect();
        let mut params: Vec<Vec<f32>> = names.iter().map(|n| case.init_f32(n)).collect();
        let mut worst = 0.0f64;
        for t in 0..case.steps {
            let grads: Vec<Vec<f32>> = names.iter().map(|n| case.grad_f32(t, n)).collect();
            let mut slices = crate::params::slices(names, &shapes, &mut params, &grads);
            opt.update_slices(&mut slices).unwrap();
            for (n, p) in names.iter().zip(&params) {
                case.assert_params_at(what, t, n, p);
                worst = worst.max(max_abs_diff(p, &case.params[t][n]));
            }
            after(t, opt);
        }
        worst
    }

    /// Steps a `[rows, cols]` weight `"w"` (initially 0.1) and a `[cols]` bias `"b"` (initially
    /// 0) `steps` times on fixed gradients (`w`: `((7i + 3t) mod 13 - 6) / 5`, `b`:
    /// `(i + t) mod 4 - 1.5` at step `t`), with the optimizer from `make`. With `split = Some(s)`
    /// the optimizer is saved to checkpoint bytes before step `s` and replaced by a fresh one
    /// loaded from them. Returns the bits of the final `w` then `b`, for bit-identity checks of
    /// checkpoint resume and determinism.
    pub fn resume_bits<O: DslOptimizer<f32> + optim_dsl::Checkpoint<f32>>(
        mut make: impl FnMut() -> O,
        (rows, cols): (usize, usize),
        steps: usize,
        split: Option<usize>,
    ) -> Vec<u32> {
        let grads = |t: usize| -> (Vec<f32>, Vec<f32>) {
            let w = (0..rows * cols)
                .map(|i| (((i * 7 + t * 3) % 13) as f32 - 6.0) / 5.0)
                .collect();
            let b = (0..cols).map(|i| ((i + t) % 4) as f32 - 1.5).collect();
            (w, b)
        };
        let mut opt = make();
        let (mut w, mut b) = (vec![0.1f32; rows * cols], vec![0.0f32; cols]);
        for t in 0..steps {
            if Some(t) == split {
                let bytes = opt.to_checkpoint_bytes(None).unwrap();
                opt = make();
                opt.load_checkpoint_bytes(&bytes, None).unwrap();
            }
            let (gw, gb) = grads(t);
            opt.update_slices(&mut [
                crate::params::slice("w", &[rows, cols], &mut w, &gw),
                crate::params::slice("b", &[cols], &mut b, &gb),
            ])
            .unwrap();
        }
        w.iter().chain(&b).map(|x| x.to_bits()).collect()
    }

    /// The largest `|a - b|` over the elements of two parameter sets (tensor by tensor,
    /// element by element), in `f64` (0 for empty sets).
    pub fn max_gap<E: Copy + Into<f64>>(a: &[Vec<E>], b: &[Vec<E>]) -> f64 {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(&x, &y)| (x.into() - y.into()).abs())
            .fold(0.0, f64::max)
    }

    /// The largest `|got[i] - want[i]|`, in `f64` (0 for empty slices).
    pub fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
        got.iter()
            .zip(want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0.0, f64::max)
    }
}

pub mod zoo {
    //! Zoo optimizers as several tests build them.

    use crate::fixtures::Case;
    use optim_dsl::zoo::{
        Adafactor, AdafactorConfig, AdamWBf16, AdamWBf16Config, AdamWConfig, Muon, MuonConfig, Sgd,
        SgdConfig, Shampoo, ShampooConfig,
    };
    use optim_dsl::Hyper;

    /// [`AdamWConfig`] of a `torch.optim.AdamW` case (`betas`, `eps`, `weight_decay`,
    /// `amsgrad`, `maximize` of `final_param_groups[0]`) with learning rate `lr` (constant or
    /// scheduled). Panics unless the case's weight decay is decoupled (torch AdamW).
    pub fn torch_adamw_config(case: &Case, lr: Hyper) -> AdamWConfig {
        assert!(
            case.group_bool("decoupled_weight_decay"),
            "{}: expected torch AdamW (decoupled weight decay)",
            case.case
        );
        let g = |key: &str| Hyper::from(case.group_f64(key));
        AdamWConfig {
            lr,
            beta1: g("betas.0"),
            beta2: g("betas.1"),
            eps: g("eps"),
            weight_decay: g("weight_decay"),
            amsgrad: case.group_bool("amsgrad"),
            maximize: case.group_bool("maximize"),
        }
    }

    /// [`Shampoo`] without grafting, with the hyperparameters of a pytorch-optimizer `Shampoo`
    /// case (`lr`, `weight_decay`, `matrix_eps`, `preconditioning_compute_steps` as
    /// `update_freq`). Panics if the case uses momentum (ours has none).
    pub fn pytorch_optimizer_shampoo(case: &Case) -> Shampoo<f32> {
        assert_eq!(case.hyper_f64("momentum"), 0.0, "{}: momentum", case.case);
        Shampoo::<f32>::new(ShampooConfig {
            lr: case.hyper_f64("lr").into(),
            weight_decay: case.hyper_f64("weight_decay").into(),
            matrix_eps: case.hyper_f64("matrix_eps").into(),
            update_freq: case.hyper_f64("preconditioning_compute_steps").into(),
            graft: false,
            ..Default::default()
        })
        .unwrap()
    }

    /// [`Muon`] with the `lr`, `weight_decay` and `momentum` of a case of Keller Jordan's
    /// single-device Muon (`muon_keller_f32`), the rest at their defaults.
    pub fn keller_muon(case: &Case) -> Muon<f32> {
        let lr = case.hyper_f64("lr").into();
        Muon::<f32>::new(crate::torch_config! {
            case.hyper_f64, lr, MuonConfig { weight_decay, momentum }
        })
        .unwrap()
    }

    /// [`Adafactor`] with the hyperparameters of a `torch.optim.Adafactor` case (`lr`,
    /// `beta2_decay`, `eps[1]` as `eps2`, `d`, `weight_decay`; the rest default).
    pub fn torch_adafactor(case: &Case) -> Adafactor<f32> {
        Adafactor::<f32>::new(AdafactorConfig {
            lr: case.hyper_f64("lr").into(),
            beta2_decay: case.hyper_f64("beta2_decay").into(),
            eps2: case.hyperparameters["eps"][1].as_f64().unwrap().into(),
            d: case.hyper_f64("d").into(),
            weight_decay: case.hyper_f64("weight_decay").into(),
            ..Default::default()
        })
        .unwrap()
    }

    /// The zoo's [`AdamWBf16`] (bf16 moments) with learning rate `lr`, the other
    /// hyperparameters at their defaults.
    pub fn adamw_bf16(lr: f64) -> AdamWBf16<f32> {
        AdamWBf16::<f32>::new(AdamWBf16Config {
            lr: lr.into(),
            ..Default::default()
        })
        .unwrap()
    }

    crate::adamw_stored! {
        /// AdamW with 8-bit block-quantised moments (`q8`/`uq8`) on every tensor: the zoo's
        /// [`optim_dsl::zoo::AdamW8bit`] keeps `f32` moments for tensors under 4,096 elements (bitsandbytes'
        /// `min_8bit_size`), and the 8-bit tests run on smaller ones too.
        pub AdamWQ8: q8, uq8
    }

    /// [`AdamWQ8`] (8-bit block-quantised moments on every tensor, the zoo's
    /// [`optim_dsl::zoo::AdamW8bit`] rule without its 4,096-element minimum) with learning rate `lr`, the other
    /// hyperparameters at their defaults.
    pub fn adamw_8bit(lr: f64) -> AdamWQ8<f32> {
        AdamWQ8::<f32>::new(AdamWQ8Config {
            lr: lr.into(),
            ..Default::default()
        })
        .unwrap()
    }

    /// [`AdamWConfig`] with learning rate `lr` (constant or scheduled) and `weight_decay`, the
    /// other fields at their defaults.
    pub fn adamw_config(lr: impl Into<Hyper>, weight_decay: f64) -> AdamWConfig {
        AdamWConfig {
            lr: lr.into(),
            weight_decay: weight_decay.into(),
            ..Default::default()
        }
    }

    optim_dsl::optimizer! {
        /// SGD on gradients clipped to a global norm of `max_norm` (`clip_grad_norm_` then SGD,
        /// as one optimizer).
        pub ClipSgd<lr = 1.0, max_norm = 1.0> {
            param -= lr * clip_global_norm(grad, max_norm);
        }
    }

    /// Plain SGD (no momentum, no weight decay) with learning rate `lr`.
    pub fn sgd(lr: f64) -> Sgd<f32> {
        Sgd::<f32>::new(SgdConfig {
            lr: lr.into(),
            ..Default::default()
        })
        .unwrap()
    }
}

pub mod state {
    //! Comparing optimizer states exactly.

    use optim_dsl::OptState;

    /// A float's exact bit pattern, widened to `u64`.
    pub trait ExactBits: Copy {
        /// The bits (`to_bits`), zero-extended.
        fn exact_bits(self) -> u64;
    }

    impl ExactBits for f32 {
        fn exact_bits(self) -> u64 {
            u64::from(self.to_bits())
        }
    }

    impl ExactBits for f64 {
        fn exact_bits(self) -> u64 {
            self.to_bits()
        }
    }

    /// Everything a checkpoint must restore of `s` (steps, skip counts, non-finite counts and
    /// every parameter's step, rule, length, buffers, scalars and initial scalars), floats as
    /// their exact bits; temps and scratch are not included.
    pub fn state_bits<E: ExactBits>(s: &OptState<E>) -> impl PartialEq + std::fmt::Debug {
        let bits = |v: &[E]| v.iter().map(|x| x.exact_bits()).collect::<Vec<_>>();
        let params: Vec<_> = s
            .params
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    p.step,
                    p.rule,
                    p.len,
                    p.buffers.iter().map(|b| bits(b)).collect::<Vec<_>>(),
                    p.scalars.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    p.scalars_init.clone(),
                )
            })
            .collect();
        (s.step, s.skipped_steps, s.non_finite, params)
    }
}

pub mod values {
    //! Deterministic pseudo-random test values.

    /// `n` values in `[-1, 1)` from the xorshift64 (13, 7, 17) sequence started at state `s`
    /// (non-zero): after each shift round, the state's top 53 bits as a fraction of `2^52`,
    /// minus 1.
    pub fn xorshift(mut s: u64, n: usize) -> impl Iterator<Item = f64> {
        (0..n).map(move |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
    }

    /// [`xorshift`] from the state `seed · 0x9e3779b97f4a7c15 | 1` (any `seed`).
    pub fn seeded(seed: u64, n: usize) -> impl Iterator<Item = f64> {
        xorshift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, n)
    }
}

pub mod params {
    //! [`ParamSlice`]s built from names, shapes, values and gradients.

    use optim_dsl::ParamSlice;

    /// One [`ParamSlice`].
    pub fn slice<'a, E>(
        name: &'a str,
        shape: &'a [usize],
        param: &'a mut [E],
        grad: &'a [E],
    ) -> ParamSlice<'a, E> {
        ParamSlice {
            name,
            shape,
            param,
            grad,
        }
    }

    /// The [`ParamSlice`]s of parameters given as parallel lists: `names[i]` has shape
    /// `shapes[i]`, values `params[i]` and gradient `grads[i]`.
    pub fn slices<'a, E, N: AsRef<str>, S: AsRef<[usize]>>(
        names: &'a [N],
        shapes: &'a [S],
        params: &'a mut [Vec<E>],
        grads: &'a [Vec<E>],
    ) -> Vec<ParamSlice<'a, E>> {
        names
            .iter()
            .zip(shapes)
            .zip(params.iter_mut())
            .zip(grads)
            .map(|(((n, s), p), g)| slice(n.as_ref(), s.as_ref(), p, g))
            .collect()
    }
}

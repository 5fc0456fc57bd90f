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

fn de_steps<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<BTreeMap<String, Vec<f64>>>, D::Error> {
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
    let case: Case =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse fixture {path}: {e}"));
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
        Some(
            TensorData::deserialize(v).unwrap_or_else(|e| {
                panic!("{}: final_state[{name}][{key}] malformed: {e}", self.case)
            }),
        )
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

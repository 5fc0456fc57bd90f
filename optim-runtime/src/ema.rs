//! [`WeightEma`]: an exponential moving average of the weights (Polyak averaging), kept next to
//! any optimizer, for evaluating with the averaged weights. Its dfdx methods (`update_model`,
//! `copy_to_model`, `swap_with_model`) are in [`crate::dfdx`].

use crate::accumulate::check_each_once;
use crate::error::OptimError;
use crate::float::Float;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// How the first updates of a [`WeightEma`] are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmaCorrection {
    /// PyTorch `AveragedModel(multi_avg_fn = get_ema_multi_avg_fn(decay))`: the first update
    /// copies the weights, every later one is `ema = lerp(ema, p, 1 - decay)`. The default.
    #[default]
    CopyFirst,
    /// As `CopyFirst`, but update `n + 1` (after `n >= 1` earlier ones) uses the decay
    /// `min(decay, (1 + n) / (10 + n))`, so early averages forget the initial weights quickly
    /// (TensorFlow's `ExponentialMovingAverage(num_updates = n)`).
    Warmup,
    /// optax `ema(decay, debias = True)`: the average starts at zero, every update is
    /// `acc = lerp(acc, p, 1 - decay)`, and the averaged weights are `acc / (1 - decay^n)` after
    /// `n` updates (equal to `p` after the first).
    Debias,
}

/// The running average of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EmaParam<E> {
    /// The average (`Debias`: the biased accumulator).
    pub(crate) value: Vec<E>,
    /// Number of updates this parameter has received.
    pub(crate) updates: u64,
}

/// An exponential moving average of the weights (Polyak–Ruppert averaging with exponential
/// weights), usable with any optimizer: call [`update_slices`](Self::update_slices) or
/// [`update_model`](Self::update_model) after every optimizer step, then evaluate with
/// [`copy_to_model`](Self::copy_to_model) or [`swap_with_model`](Self::swap_with_model).
///
/// Update of one parameter `p` (see [`EmaCorrection`]; the default is PyTorch's
/// `AveragedModel` with `get_ema_multi_avg_fn(decay)`):
///
/// ```text
/// first update:  ema = p
/// later:         ema = lerp(ema, p, 1 - decay)          (PyTorch's lerp: ema + w (p - ema) for w < 0.5)
/// ```
///
/// Averages are keyed by parameter name (the dfdx dotted path on the model path) and stored in
/// the parameter's element type; each parameter counts its own updates, so a parameter first
/// seen later starts with a copy. Memory: one copy of the averaged parameters.
///
/// ```
/// use optim_runtime::WeightEma;
/// let mut ema = WeightEma::<f32>::new(0.9).unwrap();
/// ema.update_slices(&[("w", &[1.0, 2.0])]).unwrap(); // first update copies
/// ema.update_slices(&[("w", &[2.0, 2.0])]).unwrap(); // 0.9 * 1 + 0.1 * 2
/// assert!((ema.averaged("w").unwrap()[0] - 1.1).abs() < 1e-6);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WeightEma<E> {
    pub(crate) decay: f64,
    pub(crate) correction: EmaCorrection,
    pub(crate) include_buffers: bool,
    pub(crate) updates: u64,
    pub(crate) params: BTreeMap<String, EmaParam<E>>,
    /// The model's own weights while the averages are swapped in.
    pub(crate) swapped: Option<BTreeMap<String, Vec<E>>>,
}

impl<E: Float> WeightEma<E> {
    /// An empty average with `decay` (the weight kept from the previous average; PyTorch's
    /// `get_ema_multi_avg_fn` default is 0.999) and [`EmaCorrection::CopyFirst`].
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] when `decay` is not in `[0, 1)`.
    pub fn new(decay: f64) -> Result<Self, OptimError> {
        if !(0.0..1.0).contains(&decay) {
            return Err(OptimError::InvalidUse(format!(
                "EMA decay must be in [0, 1), got {decay}"
            )));
        }
        Ok(WeightEma {
            decay,
            correction: EmaCorrection::CopyFirst,
            include_buffers: false,
            updates: 0,
            params: BTreeMap::new(),
            swapped: None,
        })
    }

    /// Sets how the first updates are treated (takes effect for parameters' later updates).
    pub fn with_correction(mut self, correction: EmaCorrection) -> Self {
        self.correction = correction;
        self
    }

    /// On the dfdx path, also average tensors that the optimizer does not update (BatchNorm
    /// running statistics; PyTorch's `AveragedModel(use_buffers = True)`). Default `false`:
    /// only trainable tensors are averaged, and the model keeps its own buffers when the
    /// averages are copied in.
    pub fn with_buffers(mut self, include_buffers: bool) -> Self {
        self.include_buffers = include_buffers;
        self
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// The [`EmaCorrection`].
    pub fn correction(&self) -> EmaCorrection {
        self.correction
    }

    /// Number of `update_*` calls so far (PyTorch's `n_averaged`).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Whether the averages are currently swapped into the model (see
    /// [`swap_with_model`](Self::swap_with_model)).
    pub fn is_swapped(&self) -> bool {
        self.swapped.is_some()
    }

    /// Names of the averaged parameters, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    /// The averaged weights of parameter `name` (flat, row-major), `None` if it was never
    /// updated. With [`EmaCorrection::Debias`] the correction is applied here.
    pub fn averaged(&self, name: &str) -> Option<Vec<E>> {
        self.averaged_cow(name).map(Cow::into_owned)
    }

    /// The averaged weights, borrowed when no correction has to be applied.
    pub(crate) fn averaged_cow(&self, name: &str) -> Option<Cow<'_, [E]>> {
        let p = self.params.get(name)?;
        Some(match self.correction {
            EmaCorrection::Debias => {
                let c = E::of_f64(1.0 - self.decay.powf(p.updates as f64));
                Cow::Owned(p.value.iter().map(|&x| x / c).collect())
            }
            _ => Cow::Borrowed(&p.value),
        })
    }

    /// Every average, for writing into a model (the dfdx methods).
    #[cfg(feature = "dfdx")]
    pub(crate) fn all_averaged(&self) -> BTreeMap<String, Cow<'_, [E]>> {
        self.params
            .keys()
            .filter_map(|k| Some((k.clone(), self.averaged_cow(k)?)))
            .collect()
    }

    /// One update from named flat parameters (after an optimizer step). Parameters not listed
    /// keep their average; a name seen for the first time starts a new average.
    ///
    /// # Errors
    /// [`OptimError::DuplicateParam`], [`OptimError::ShapeMismatch`] (a length that differs
    /// from the stored average) or [`OptimError::InvalidUse`] (averages swapped in). Nothing is
    /// modified on error.
    pub fn update_slices(&mut self, params: &[(&str, &[E])]) -> Result<(), OptimError> {
        self.check_not_swapped()?;
        check_each_once(params, |name, p| self.check_len(name, p.len()))?;
        for (name, p) in params {
            self.update_one(name, p);
        }
        self.updates += 1;
        Ok(())
    }

    /// Writes the averaged weights into named flat parameters (every name must have an
    /// average of the same length).
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] for a name with no average, [`OptimError::ShapeMismatch`] for
    /// a length that differs. Nothing is written on error.
    pub fn copy_to_slices(&self, params: &mut [(&str, &mut [E])]) -> Result<(), OptimError> {
        for (name, p) in params.iter() {
            self.check_has(name, p.len())?;
        }
        for (name, p) in params.iter_mut() {
            if let Some(avg) = self.averaged_cow(name) {
                p.copy_from_slice(&avg);
            }
        }
        Ok(())
    }

    /// Swaps the averaged weights into named flat parameters, keeping the parameters' own
    /// values; the next call puts those back. While swapped, `update_*` is refused.
    ///
    /// # Errors
    /// As [`copy_to_slices`](Self::copy_to_slices); when swapping back, a name or length that
    /// differs from the swapped-out set. Nothing is written on error.
    pub fn swap_with_slices(&mut self, params: &mut [(&str, &mut [E])]) -> Result<(), OptimError> {
        match self.swapped.take() {
            None => {
                for (name, p) in params.iter() {
                    self.check_has(name, p.len())?;
                }
                let mut backup = BTreeMap::new();
                for (name, p) in params.iter_mut() {
                    backup.insert(name.to_string(), p.to_vec());
                    if let Some(avg) = self.averaged_cow(name) {
                        p.copy_from_slice(&avg);
                    }
                }
                self.swapped = Some(backup);
                Ok(())
            }
            Some(backup) => {
                let check = params
                    .iter()
                    .try_for_each(|(name, p)| match backup.get(*name) {
                        Some(b) if b.len() == p.len() => Ok(()),
                        _ => Err(OptimError::InvalidUse(format!(
                        "parameter `{name}` was not swapped out by this EMA (or has another length)"
                    ))),
                    });
                if let Err(e) = check {
                    self.swapped = Some(backup);
                    return Err(e);
                }
                for (name, p) in params.iter_mut() {
                    p.copy_from_slice(&backup[*name]);
                }
                Ok(())
            }
        }
    }

    pub(crate) fn check_not_swapped(&self) -> Result<(), OptimError> {
        if self.swapped.is_some() {
            return Err(OptimError::InvalidUse(
                "the EMA's averages are swapped into the model; swap back before updating".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_len(&self, name: &str, len: usize) -> Result<(), OptimError> {
        match self.params.get(name) {
            Some(p) if p.value.len() != len => Err(OptimError::ShapeMismatch {
                param: name.to_string(),
                detail: format!(
                    "parameter has {len} elements but its EMA has {}",
                    p.value.len()
                ),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn check_has(&self, name: &str, len: usize) -> Result<(), OptimError> {
        if !self.params.contains_key(name) {
            return Err(OptimError::InvalidUse(format!(
                "the EMA has no average for parameter `{name}`"
            )));
        }
        self.check_len(name, len)
    }

    /// Updates (or starts) the average of one parameter; lengths were checked.
    pub(crate) fn update_one(&mut self, name: &str, p: &[E]) {
        let correction = self.correction;
        let decay = self.decay;
        let entry = self
            .params
            .entry(name.to_string())
            .or_insert_with(|| EmaParam {
                value: Vec::new(),
                updates: 0,
            });
        let n = entry.updates;
        match (correction, n) {
            (EmaCorrection::CopyFirst | EmaCorrection::Warmup, 0) => {
                entry.value.clear();
                entry.value.extend_from_slice(p);
            }
            _ => {
                if entry.value.len() != p.len() {
                    entry.value = vec![E::zero(); p.len()];
                }
                let d = match correction {
                    EmaCorrection::Warmup => decay.min((1.0 + n as f64) / (10.0 + n as f64)),
                    _ => decay,
                };
                let w = E::of_f64(1.0 - d);
                let one_minus_w = E::one() - w;
                let small = w.abs() < E::of_f64(0.5);
                for (a, &b) in entry.value.iter_mut().zip(p) {
                    *a = torch_lerp(*a, b, w, one_minus_w, small);
                }
            }
        }
        entry.updates = n + 1;
    }

    /// Replaces every field with `other`'s (checkpoint restore; `other` was validated).
    pub(crate) fn restore(&mut self, other: WeightEma<E>) {
        *self = other;
    }

    /// A fresh EMA with these settings and counts (checkpoint restore).
    pub(crate) fn from_parts(
        decay: f64,
        correction: EmaCorrection,
        include_buffers: bool,
        updates: u64,
        params: BTreeMap<String, EmaParam<E>>,
    ) -> Self {
        WeightEma {
            decay,
            correction,
            include_buffers,
            updates,
            params,
            swapped: None,
        }
    }
}

/// PyTorch's `lerp` (CPU kernel): `a + w (b - a)` when `|w| < 0.5`, else `b - (b - a)(1 - w)`.
#[inline(always)]
fn torch_lerp<E: Float>(a: E, b: E, w: E, one_minus_w: E, small: bool) -> E {
    if small {
        a + w * (b - a)
    } else {
        b - (b - a) * one_minus_w
    }
}

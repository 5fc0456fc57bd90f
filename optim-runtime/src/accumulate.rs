//! [`GradAccumulator`]: gradient accumulation over micro-batches, handed to one optimizer step.
//! Its dfdx methods (`add_model`, `write_mean_to_grads`, `step_model`) are in [`crate::dfdx`].

use crate::error::OptimError;
use crate::float::Float;
use crate::optimizer::DslOptimizer;
use crate::param::ParamSlice;
use std::collections::{BTreeMap, HashSet};

/// Averages the gradients of `k` micro-batches and hands the average to **one** optimizer step,
/// so that everything the optimizer declares on gradients (global-norm clipping, value
/// clipping, the non-finite check) sees the average once, as with one large batch.
///
/// The average of a parameter is `(g_1 + g_2 + … + g_k) / k`, summed in the parameter's element
/// type in the order the micro-batches were added, then divided by `k` (the number of
/// micro-batches added, whether or not they held this parameter: a parameter missing from a
/// micro-batch contributes zero, as in PyTorch where an unused parameter's `.grad` gets nothing).
/// This equals PyTorch's `loss / k` accumulation up to rounding. Memory: one buffer per
/// parameter.
///
/// ```
/// use optim_runtime::GradAccumulator;
/// let mut acc = GradAccumulator::<f32>::new();
/// acc.add_slices(&[("w", &[1.0, 2.0])]).unwrap();
/// acc.add_slices(&[("w", &[3.0, 2.0])]).unwrap();
/// assert_eq!(acc.mean("w").unwrap(), vec![2.0, 2.0]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GradAccumulator<E> {
    pub(crate) sums: BTreeMap<String, Vec<E>>,
    pub(crate) micro_batches: u64,
}

impl<E> Default for GradAccumulator<E> {
    fn default() -> Self {
        GradAccumulator {
            sums: BTreeMap::new(),
            micro_batches: 0,
        }
    }
}

impl<E: Float> GradAccumulator<E> {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of micro-batches added since the last step or [`reset`](Self::reset).
    pub fn micro_batches(&self) -> u64 {
        self.micro_batches
    }

    /// Names of the parameters that received a gradient, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sums.keys().map(String::as_str)
    }

    /// Forgets every accumulated gradient.
    pub fn reset(&mut self) {
        self.sums.clear();
        self.micro_batches = 0;
    }

    /// Adds one micro-batch of named flat gradients.
    ///
    /// # Errors
    /// [`OptimError::DuplicateParam`]; [`OptimError::ShapeMismatch`] when a gradient's length
    /// differs from the one accumulated so far for its name. Nothing is added on error.
    pub fn add_slices(&mut self, grads: &[(&str, &[E])]) -> Result<(), OptimError> {
        check_each_once(grads, |name, g| self.check_len(name, g.len()))?;
        for (name, g) in grads {
            self.add_one(name, g);
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// The average gradient of parameter `name` so far, `None` if it received none (or no
    /// micro-batch was added).
    pub fn mean(&self, name: &str) -> Option<Vec<E>> {
        if self.micro_batches == 0 {
            return None;
        }
        let k = E::of_f64(self.micro_batches as f64);
        self.sums
            .get(name)
            .map(|s| s.iter().map(|&x| x / k).collect())
    }

    /// Every average gradient, by name.
    pub fn means(&self) -> BTreeMap<String, Vec<E>> {
        self.sums
            .keys()
            .filter_map(|k| Some((k.clone(), self.mean(k)?)))
            .collect()
    }

    /// One optimizer step on `params` (`(name, shape, values)`, as in [`ParamSlice`]) with the
    /// averaged gradients, then [`reset`](Self::reset). Accumulated names not in `params` are
    /// dropped with the rest at the reset (a frozen parameter).
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] when no micro-batch was added or a parameter has no
    /// accumulated gradient; any error of [`DslOptimizer::update_slices`]. On error nothing is
    /// modified and the accumulated gradients are kept.
    pub fn step_slices<O: DslOptimizer<E>>(
        &mut self,
        opt: &mut O,
        params: &mut [(&str, &[usize], &mut [E])],
    ) -> Result<(), OptimError> {
        self.check_nonempty()?;
        let mut means = Vec::with_capacity(params.len());
        for (name, _, _) in params.iter() {
            let m = self.mean(name).ok_or_else(|| {
                OptimError::InvalidUse(format!(
                    "no gradient was accumulated for parameter `{name}`"
                ))
            })?;
            means.push(m);
        }
        let mut slices: Vec<ParamSlice<'_, E>> = params
            .iter_mut()
            .zip(&means)
            .map(|((name, shape, param), g)| ParamSlice {
                name,
                shape,
                param,
                grad: g,
            })
            .collect();
        opt.update_slices(&mut slices)?;
        self.reset();
        Ok(())
    }

    pub(crate) fn check_nonempty(&self) -> Result<(), OptimError> {
        if self.micro_batches == 0 {
            return Err(OptimError::InvalidUse(
                "no micro-batch was accumulated before the step".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn check_len(&self, name: &str, len: usize) -> Result<(), OptimError> {
        match self.sums.get(name) {
            Some(s) if s.len() != len => Err(OptimError::ShapeMismatch {
                param: name.to_string(),
                detail: format!(
                    "gradient has {len} elements but the accumulated gradient has {}",
                    s.len()
                ),
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn add_one(&mut self, name: &str, g: &[E]) {
        match self.sums.get_mut(name) {
            Some(s) => {
                for (a, &x) in s.iter_mut().zip(g) {
                    *a += x;
                }
            }
            None => {
                self.sums.insert(name.to_string(), g.to_vec());
            }
        }
    }
}

/// Checks named inputs before any of them is applied: every name appears once (else
/// [`OptimError::DuplicateParam`] naming it) and `check(name, value)` passes for each. Shared
/// by [`GradAccumulator::add_slices`] and [`crate::ema::WeightEma::update_slices`], which apply
/// nothing unless all of this holds.
pub(crate) fn check_each_once<T>(
    named: &[(&str, T)],
    mut check: impl FnMut(&str, &T) -> Result<(), OptimError>,
) -> Result<(), OptimError> {
    let mut seen = HashSet::with_capacity(named.len());
    for (name, value) in named {
        if !seen.insert(*name) {
            return Err(OptimError::DuplicateParam(name.to_string()));
        }
        check(name, value)?;
    }
    Ok(())
}

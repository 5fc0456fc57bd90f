//! The entry points: [`CandleUpdate`] (any DSL optimizer steps named `Var`s) and
//! [`CandleOptimizer`] (a `candle_nn::Optimizer`).

use crate::access::{self, Pending};
use crate::host::{self, Staging};
use crate::names::{varmap_entries, VarNames};
use candle_core::backprop::GradStore;
use candle_core::{Device, Var};
use candle_nn::VarMap;
use optim_runtime::{Checkpoint, DslOptimizer, Field, Float, Hyper, OptimError, OptimizerConfig};
use std::collections::HashSet;
use std::path::Path;

/// Stepping candle `Var`s with any [`DslOptimizer`]: on the CPU, and (feature `candle-cuda`)
/// on a CUDA device (see the README's "CUDA"). Implemented for every optimizer
/// (blanket impl). As a `candle_nn::Optimizer`, use [`CandleOptimizer`], which also keeps the
/// conversion buffers of `bf16`/`f16` parameters between steps.
pub trait CandleUpdate<E: Float>: DslOptimizer<E> {
    /// One step over named `Var`s: each `Var` that has a gradient in `grads` is updated in
    /// place, its state keyed by its name; `Var`s without a gradient are left alone (value,
    /// state and step count, as PyTorch skips a parameter whose `.grad` is `None`).
    ///
    /// The generated fused loops run on the `Var`s' own storage and the gradients' own
    /// storage: no copy for parameters of the optimizer's element type. A gradient with a
    /// strided layout is first made contiguous (one copy). `bf16`/`f16` parameters run on
    /// their own storage too (the loops' 16-bit entry points widen each element exactly to `E`
    /// as they load it, compute in `E` and round the parameter to nearest, ties to even, as
    /// they store it: `optim_runtime::narrow`), unless
    /// their rule reads the raw parameter or gradient as a whole tensor or metrics are on;
    /// those, and `f32` parameters under an `f64` optimizer, are converted to `E` whole,
    /// updated, and rounded back (here the conversion buffers are allocated per call). Both
    /// give the same bits.
    ///
    /// # Errors
    /// As [`DslOptimizer::update_slices`] (names, shapes, hyperparameters, non-finite
    /// gradients); [`OptimError::InvalidUse`] for a `Var` on a device other than the CPU (or
    /// CUDA, with feature `candle-cuda`), `Var`s on two devices, a dtype the optimizer cannot
    /// update (on CUDA: any other than `E`) (an integer, or `f64` under an `f32` optimizer), two
    /// names for one `Var`, or a gradient that shares a `Var`'s storage;
    /// [`OptimError::Device`] for a CUDA driver or NVRTC failure. Nothing is modified on error,
    /// except by a device failure once the CUDA kernels run (the step is then half done).
    fn update_vars<'v>(
        &mut self,
        vars: impl IntoIterator<Item = (&'v str, &'v Var)>,
        grads: &GradStore,
    ) -> Result<(), OptimError> {
        let pending = access::pending(vars, grads)?;
        step_host(self, &pending, &mut Staging::new())
    }

    /// [`update_vars`](Self::update_vars) over every `Var` of `varmap`, named by its keys
    /// (`"layer1.weight"`), in name order.
    ///
    /// # Errors
    /// As [`update_vars`](Self::update_vars).
    fn update_varmap(&mut self, varmap: &VarMap, grads: &GradStore) -> Result<(), OptimError> {
        let named = varmap_entries(varmap)?;
        self.update_vars(named.iter().map(|(n, v)| (n.as_str(), v)), grads)
    }
}

impl<E: Float, O: DslOptimizer<E>> CandleUpdate<E> for O {}

/// One step over `pending` on its device: the CPU path, or (feature `candle-cuda`) the CUDA
/// path. `pending` is on one device ([`access::pending`] checks it).
fn step_host<E: Float, O: DslOptimizer<E>>(
    opt: &mut O,
    pending: &[Pending],
    staging: &mut Staging<E>,
) -> Result<(), OptimError> {
    match pending.first().map(|p| (p, p.var.device())) {
        None | Some((_, Device::Cpu)) => access::with_views(pending, &mut |views| {
            host::step(opt, pending, views, staging)
        }),
        #[cfg(feature = "candle-cuda")]
        Some((_, Device::Cuda(_))) => crate::cuda::step(opt, pending),
        #[cfg(not(feature = "candle-cuda"))]
        Some((p, d @ Device::Cuda(_))) => Err(OptimError::InvalidUse(format!(
            "`{}` is on {d:?}: this build of optim-candle steps CPU Vars only (enable its \
             feature `candle-cuda` to step CUDA Vars)",
            p.name
        ))),
        Some((p, d)) => Err(OptimError::InvalidUse(format!(
            "`{}` is on {d:?}: optim-candle steps CPU and CUDA Vars only",
            p.name
        ))),
    }
}

/// The candle CUDA device `ordinal` (`Device::new_cuda`), with its error as an
/// [`OptimError`]: on a machine with the CUDA libraries but no GPU, an error, not a panic.
/// (With feature `candle-cuda` the program links libcuda, libnvrtc, cuBLAS and cuRAND, as
/// candle-core's `cuda` feature makes cudarc do: it does not start without them.)
///
/// # Errors
/// [`OptimError::Device`] for no GPU or no such ordinal (candle's error).
#[cfg(feature = "candle-cuda")]
pub fn cuda_device(ordinal: usize) -> Result<Device, OptimError> {
    crate::cuda::cuda_device(ordinal)
}

/// The candle CUDA device `ordinal`: without feature `candle-cuda`, always an error.
///
/// # Errors
/// [`OptimError::InvalidUse`]: optim-candle was built without feature `candle-cuda`.
#[cfg(not(feature = "candle-cuda"))]
pub fn cuda_device(ordinal: usize) -> Result<Device, OptimError> {
    Err(OptimError::InvalidUse(format!(
        "CUDA device {ordinal}: optim-candle was built without feature `candle-cuda`"
    )))
}

/// Compiles every CUDA kernel of optimizer `O` for element type `E` with NVRTC now (no GPU
/// needed), so that a missing or broken NVRTC shows at start-up rather than at the first CUDA
/// step; the PTX is cached for the process, so later CUDA steps compile nothing. Returns the
/// number of kernels (one per rule, flag combination and stage: `O::cuda_sources().len()`).
///
/// # Errors
/// [`OptimError::Device`] when a source does not compile or its PTX lacks an entry point; [`OptimError::InvalidUse`] without feature `candle-cuda`.
#[allow(clippy::let_and_return)] // `r` is one of two values, by feature
pub fn compile_cuda_kernels<E: Float, O: DslOptimizer<E>>() -> Result<usize, OptimError> {
    #[cfg(feature = "candle-cuda")]
    let r = crate::cuda::compile_kernels::<E, O>();
    #[cfg(not(feature = "candle-cuda"))]
    let r = Err(OptimError::InvalidUse(format!(
        "compiling the CUDA kernels of {}: optim-candle was built without feature `candle-cuda`",
        O::Config::NAME
    )));
    r
}

/// The config of a [`CandleOptimizer`]: the DSL optimizer itself (built with its own config,
/// policies and, if resuming, a loaded checkpoint) and where the `Var`s' names come from.
#[derive(Debug)]
pub struct CandleConfig<O> {
    /// The optimizer (e.g. `AdamW::<f32>::new(AdamWConfig { lr: 1e-3.into(), ..Default::default() })?`).
    pub optimizer: O,
    /// Names of the `Var`s (default [`VarNames::Positional`]).
    pub names: VarNames,
}

impl<O> CandleConfig<O> {
    /// `optimizer` with positional names (`"var0"`, `"var1"`, …).
    pub fn new(optimizer: O) -> Self {
        CandleConfig {
            optimizer,
            names: VarNames::Positional,
        }
    }

    /// Names each `Var` by its key in `varmap` (which shares its storage: a clone of the map).
    pub fn with_varmap(mut self, varmap: &VarMap) -> Self {
        self.names = VarNames::VarMap(varmap.clone());
        self
    }

    /// Names the `i`-th `Var` `names[i]`.
    pub fn with_names<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.names = VarNames::List(names.into_iter().map(Into::into).collect());
        self
    }
}

/// A DSL optimizer as a `candle_nn::Optimizer`: drops into candle training loops
/// (`opt.backward_step(&loss)?`), updating its `Var`s in place on the CPU, and with feature
/// `candle-cuda` on a CUDA device (without it, CUDA `Var`s are refused with an error).
///
/// `E` is the optimizer's element type (its state and arithmetic): `f32` (the default) updates
/// `f32`, `bf16` and `f16` `Var`s; `f64` updates `f64` and `f32` `Var`s. Parameters of the
/// element type are updated in their own storage; narrower ones are staged through `E` in
/// buffers kept here between steps (per element of a `bf16` parameter under AdamW: 24 more
/// bytes moved and 8 more bytes of memory than a direct update).
///
/// Learning rate: [`learning_rate`](candle_nn::Optimizer::learning_rate) is the value of the
/// optimizer's hyperparameter `lr` for the next step (a schedule evaluated at the current
/// step). [`set_learning_rate`](candle_nn::Optimizer::set_learning_rate)`(x)` sets `lr` to the
/// constant `x`, replacing a schedule: the caller's loop is then in charge of the schedule.
/// Other learning rates of the optimizer (Muon's `adam_lr`) are not changed; set them with
/// [`set_hyper`](Self::set_hyper). An optimizer without a field `lr` has no learning rate
/// for candle: `learning_rate` is NaN and `set_learning_rate` makes the next `step` fail.
pub struct CandleOptimizer<O, E: Float = f32> {
    opt: O,
    vars: Vec<(String, Var)>,
    staging: Staging<E>,
    /// Set by a `set_learning_rate` that could not be applied; returned by the next step.
    lr_error: Option<OptimError>,
}

impl<O: std::fmt::Debug, E: Float> std::fmt::Debug for CandleOptimizer<O, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.vars.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("CandleOptimizer")
            .field("optimizer", &self.opt)
            .field("vars", &names)
            .finish()
    }
}

impl<E: Float, O: DslOptimizer<E>> CandleOptimizer<O, E> {
    /// The optimizer over `vars` named by `names` (what `candle_nn::Optimizer::new` does, with
    /// an error type that says more).
    ///
    /// # Errors
    /// [`OptimError::InvalidUse`] when the names cannot be resolved ([`VarNames::resolve`]),
    /// two `Var`s have one name, or one `Var` is given twice.
    pub fn with_names(optimizer: O, vars: Vec<Var>, names: &VarNames) -> Result<Self, OptimError> {
        let resolved = names.resolve(&vars)?;
        let mut seen = HashSet::new();
        if let Some(dup) = resolved.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(OptimError::DuplicateParam(dup.clone()));
        }
        let mut ids = HashSet::new();
        if let Some((n, _)) = resolved
            .iter()
            .zip(&vars)
            .find(|(_, v)| !ids.insert(v.id()))
        {
            return Err(OptimError::InvalidUse(format!(
                "Var `{n}` is given twice (under two names)"
            )));
        }
        // Name order: a step's parameter order (and so the summation order of global
        // reductions such as a global gradient norm) does not depend on `VarMap::all_vars`'s
        // HashMap order.
        let mut vars: Vec<(String, Var)> = resolved.into_iter().zip(vars).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(CandleOptimizer {
            opt: optimizer,
            vars,
            staging: Staging::new(),
            lr_error: None,
        })
    }

    /// The optimizer over every `Var` of `varmap`, named by its keys.
    ///
    /// # Errors
    /// As [`with_names`](Self::with_names).
    pub fn from_varmap(optimizer: O, varmap: &VarMap) -> Result<Self, OptimError> {
        let vars: Vec<Var> = varmap_entries(varmap)?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        Self::with_names(optimizer, vars, &VarNames::VarMap(varmap.clone()))
    }

    /// One step: every `Var` with a gradient in `grads` is updated in place (see
    /// [`CandleUpdate::update_vars`]; `Var`s without one are left alone).
    ///
    /// # Errors
    /// As [`CandleUpdate::update_vars`], and the error of a `set_learning_rate` that could not
    /// be applied (once). Nothing is modified on error.
    pub fn update(&mut self, grads: &GradStore) -> Result<(), OptimError> {
        if let Some(e) = self.lr_error.take() {
            return Err(e);
        }
        let pending = access::pending(self.vars.iter().map(|(n, v)| (n.as_str(), v)), grads)?;
        step_host(&mut self.opt, &pending, &mut self.staging)
    }

    /// Stage every `bf16`/`f16` parameter whole through `E` (widened copies of the parameter
    /// and gradient, the step on those, the parameter rounded back), as optim-candle did before
    /// 16-bit parameters ran on their own storage: the reference the tests compare against
    /// (bit for bit) and the benchmarks' "staged" case. Default `false`. Not part of the API.
    #[doc(hidden)]
    pub fn set_stage_whole(&mut self, on: bool) {
        self.staging.whole = on;
    }

    /// The DSL optimizer (state, config, `explain()`).
    pub fn inner(&self) -> &O {
        &self.opt
    }

    /// The DSL optimizer, mutable (policies, config).
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.opt
    }

    /// The `Var`s and their names, in step order (sorted by name).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Sets hyperparameter or flag `name` (`"adam_lr"`, `"weight_decay"`) to `value` (a
    /// constant, a [`Schedule`](optim_runtime::Schedule) or a flag). Validated by the next
    /// step, which fails, changing nothing, for a value outside its domain.
    ///
    /// # Errors
    /// [`OptimError::UnknownField`] when the optimizer has no such field or the value has the
    /// wrong kind; [`OptimError::InvalidUse`] when the optimizer does not expose its config
    /// (`config_mut` returns `None`: hand-written optimizers).
    pub fn set_hyper(
        &mut self,
        name: &str,
        value: impl Into<HyperOrFlag>,
    ) -> Result<(), OptimError> {
        let field = match value.into() {
            HyperOrFlag::Hyper(h) => Field::Hyper(h),
            HyperOrFlag::Flag(b) => Field::Flag(b),
        };
        self.opt
            .config_mut()
            .ok_or_else(|| {
                OptimError::InvalidUse(format!(
                    "`{}` does not expose its config (config_mut is None)",
                    O::Config::NAME
                ))
            })?
            .set_field(name, field)
    }

    /// Writes the optimizer's complete state to `path` in the format shared by every path
    /// (slices, dfdx, candle): a checkpoint written here loads into an optimizer stepping the
    /// same names anywhere else, and the reverse. See
    /// [`Checkpoint::save_checkpoint`](optim_runtime::Checkpoint::save_checkpoint).
    ///
    /// # Errors
    /// As `save_checkpoint`.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<(), OptimError> {
        self.opt.save_checkpoint(path)
    }

    /// Loads a checkpoint written by any path (see
    /// [`Checkpoint::load_checkpoint`](optim_runtime::Checkpoint::load_checkpoint)).
    ///
    /// # Errors
    /// As `load_checkpoint`; nothing changes on error.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<(), OptimError> {
        self.opt.load_checkpoint(path)
    }

    /// The value of `lr` for the next step, if the optimizer has that field.
    fn lr(&self) -> Option<f64> {
        let step = self.opt.opt_state().step;
        self.opt
            .config()
            .fields()
            .into_iter()
            .find_map(|(name, f)| match (name, f) {
                ("lr", Field::Hyper(h)) => Some(h.value_at(step)),
                _ => None,
            })
    }
}

/// A value for [`CandleOptimizer::set_hyper`]: a hyperparameter (constant or schedule) or a
/// flag.
#[derive(Debug, Clone)]
pub enum HyperOrFlag {
    /// A constant or scheduled hyperparameter.
    Hyper(Hyper),
    /// A flag.
    Flag(bool),
}

impl From<f64> for HyperOrFlag {
    fn from(v: f64) -> Self {
        HyperOrFlag::Hyper(v.into())
    }
}

impl From<optim_runtime::Schedule> for HyperOrFlag {
    fn from(s: optim_runtime::Schedule) -> Self {
        HyperOrFlag::Hyper(s.into())
    }
}

impl From<Hyper> for HyperOrFlag {
    fn from(h: Hyper) -> Self {
        HyperOrFlag::Hyper(h)
    }
}

impl From<bool> for HyperOrFlag {
    fn from(b: bool) -> Self {
        HyperOrFlag::Flag(b)
    }
}

/// candle errors carry optim-dsl's errors wrapped (`candle_core::Error::Wrapped`), with their
/// message.
fn to_candle(e: OptimError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

impl<E: Float, O: DslOptimizer<E>> candle_nn::Optimizer for CandleOptimizer<O, E> {
    type Config = CandleConfig<O>;

    fn new(vars: Vec<Var>, config: Self::Config) -> candle_core::Result<Self> {
        Self::with_names(config.optimizer, vars, &config.names).map_err(to_candle)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.update(grads).map_err(to_candle)
    }

    fn learning_rate(&self) -> f64 {
        self.lr().unwrap_or(f64::NAN)
    }

    fn set_learning_rate(&mut self, lr: f64) {
        if let Err(e) = self.set_hyper("lr", lr) {
            self.lr_error = Some(OptimError::InvalidUse(format!(
                "set_learning_rate({lr}) could not be applied: {e}"
            )));
        }
    }
}

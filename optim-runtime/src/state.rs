//! Per-parameter optimizer state, keyed by parameter name.

use crate::lowp::q8::{Q8Buf, Q8Map};
use crate::lowp::{LowBuf, StateDtype};
use crate::Float;
use std::collections::BTreeMap;

/// The state of one parameter: its own step count, its element-wise state buffers and its
/// scalar states.
///
/// Buffers are indexed by the slot numbers the macro assigns to a rule's stateful primitives
/// (see the rule's [`crate::plan::RulePlan`] for their names). An empty buffer is not allocated
/// yet: buffers are created the first time a step needs them, so a flag that is off (say
/// `amsgrad = false`) costs no memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamState<E> {
    /// Number of updates this parameter has received (1 during its first update). Bias
    /// corrections use this count, so a parameter first updated at global step 5 is corrected
    /// from its own first step.
    pub step: u64,
    /// Index of the rule that owns this state.
    pub rule: usize,
    /// Number of elements of the parameter.
    pub len: usize,
    /// The parameter's shape when its state was created (empty when unknown: a checkpoint from
    /// before shapes were recorded). A later step with another shape of the same name is an
    /// error (see [`ShapeChange`]).
    pub shape: Vec<usize>,
    /// Whether this step's hoisted scalars are rounded to the parameter's precision (set by the
    /// step from [`OptState::scalar_precision`]; not saved).
    pub round_scalars: bool,
    /// Whether this step's loops divide by a hoisted scalar as a multiplication by its
    /// reciprocal (set by the step from [`OptState::arithmetic`]; not saved).
    pub reciprocals: bool,
    /// Element-wise state buffers, by slot (`len` elements each, or empty when not allocated
    /// or when the slot is stored in 16 or 8 bits, see `low` and `q8`).
    pub buffers: Vec<Vec<E>>,
    /// State buffers a rule stores in `bf16`/`f16` (see [`crate::lowp`]), by slot like
    /// `buffers` (an empty `bits` where the slot is not stored in 16 bits). A slot lives in one
    /// of `buffers`, `low` and `q8`, never two.
    pub low: Vec<LowBuf>,
    /// State buffers a rule stores as 8-bit block-quantised codes (`q8`/`uq8`, see
    /// [`crate::lowp::q8`]), by slot like `buffers` (empty `codes` where the slot is not).
    pub q8: Vec<Q8Buf>,
    /// Scalar states (e.g. NAdam's running product of momentum coefficients), by slot.
    pub scalars: Vec<f64>,
    /// For each scalar slot, whether it has been initialised.
    pub scalars_init: Vec<bool>,
    /// Scratch buffers for values that cross a barrier (not part of the saved state).
    pub temps: Vec<Vec<E>>,
    /// User-supplied inputs of the matrix primitives: Kronecker factor statistics for
    /// `kfac_precondition` ([`crate::DslOptimizer::set_kron_factors`]) and a one-shot random
    /// probe ([`crate::DslOptimizer::set_probe`]); inputs, not saved in checkpoints.
    pub factors: Option<KronFactors<E>>,
    /// Workspace of the matrix primitives (grown once, reused every step; not saved).
    pub work: Vec<E>,
    /// What this parameter's matrix primitives reported so far: skipped inputs, refreshes and
    /// refused refreshes (not saved in checkpoints).
    pub matrix: crate::matrix::MatrixStats,
    /// Set while a device step runs (`crate::cuda::step`): element-wise buffers then live on
    /// the device, and [`ensure_buffer`](Self::ensure_buffer),
    /// [`ensure_elem_temp`](Self::ensure_elem_temp), `matrix::broadcast_temp` and
    /// `matrix::run` act there.
    pub(crate) device: crate::cuda::link::LinkCell<E>,
}

/// Inputs of one parameter's matrix primitives, supplied by the user: Kronecker factor
/// statistics (K-FAC style: for a linear layer `y = W x` with `W` of shape `rows × cols`, `left`
/// is the covariance of the output gradients, `rows × rows`, and `right` the covariance of the
/// inputs `E[x x^T]`, `cols × cols`; both row-major; a missing factor is the identity), and a
/// random probe for the next step of a randomized primitive.
#[derive(Debug, Clone, PartialEq)]
pub struct KronFactors<E> {
    /// `rows × rows` output-side factor, or `None` for the identity.
    pub left: Option<Vec<E>>,
    /// `cols × cols` input-side factor, or `None` for the identity.
    pub right: Option<Vec<E>>,
    /// Set when the factors change; the next step recomputes their damped inverses.
    pub dirty: bool,
    /// A standard normal probe with one value per element of the parameter (row-major), used
    /// once by the next step's `psgd_precondition` (as its `V`) or, when it creates its state,
    /// `low_rank_orthonormalize` (its first values as the initial right factor); `None`: the
    /// primitive draws its probe from [`crate::matrix::standard_normal_probe`]. Set with
    /// [`crate::DslOptimizer::set_probe`].
    pub probe: Option<Vec<E>>,
}

impl<E: Copy + Default> ParamState<E> {
    /// Fresh state for a parameter of `len` elements routed to `rule`.
    pub fn new(rule: usize, len: usize) -> Self {
        ParamState {
            step: 0,
            rule,
            len,
            shape: Vec::new(),
            round_scalars: false,
            reciprocals: false,
            buffers: Vec::new(),
            low: Vec::new(),
            q8: Vec::new(),
            scalars: Vec::new(),
            scalars_init: Vec::new(),
            temps: Vec::new(),
            factors: None,
            work: Vec::new(),
            matrix: crate::matrix::MatrixStats::default(),
            device: Default::default(),
        }
    }

    /// Makes sure buffer `slot` exists with `len` elements (matrix state such as a Kronecker
    /// factor has its own size), filling a new one with `init`. Returns `true` when created.
    /// A slot of `len` elements held in 16 bits (a checkpoint of a rule that stored it so) is
    /// widened exactly into `buffers` instead (not created).
    pub fn ensure_buffer_len(&mut self, slot: usize, len: usize, init: E) -> bool
    where
        E: Float,
    {
        grow(&mut self.buffers, slot, Vec::new);
        if self.buffers[slot].len() == len {
            return false;
        }
        if let Some(low) = self.low.get_mut(slot).filter(|l| l.bits.len() == len) {
            self.buffers[slot] = low.to_values();
            low.bits = Vec::new();
            return false;
        }
        if let Some(values) = self.take_q8(slot, len) {
            self.buffers[slot] = values;
            return false;
        }
        let buf = &mut self.buffers[slot];
        buf.clear();
        buf.resize(len, init);
        true
    }

    /// Makes sure slot `slot` is stored as `dtype` with `len` elements, filling a new buffer
    /// with `init` rounded to nearest. Returns `true` when created. A slot of `len` elements
    /// held in `buffers` or in the other 16-bit type (a checkpoint of a rule that stored it so)
    /// is converted instead, rounding to nearest (ties to even), and is not created.
    pub fn ensure_low(&mut self, slot: usize, len: usize, dtype: StateDtype, init: f64) -> bool
    where
        E: Float,
    {
        grow(&mut self.low, slot, || LowBuf::empty(dtype));
        let low = &mut self.low[slot];
        if low.bits.len() == len && low.dtype == dtype {
            return false;
        }
        if low.bits.len() == len {
            let values: Vec<f64> = low.to_values();
            *low = LowBuf::from_values(dtype, &values);
            return false;
        }
        if let Some(full) = self.buffers.get_mut(slot).filter(|b| b.len() == len) {
            *low = LowBuf::from_values(dtype, full);
            *full = Vec::new();
            return false;
        }
        if let Some(values) = self.take_q8::<f64>(slot, len) {
            self.low[slot] = LowBuf::from_values(dtype, &values);
            return false;
        }
        let low = &mut self.low[slot];
        *low = LowBuf {
            dtype,
            bits: vec![dtype.round_f64(init); len],
        };
        true
    }

    /// Takes slot `slot`'s values out of `q8` when it holds `len` of them there (dequantised).
    fn take_q8<T: Float>(&mut self, slot: usize, len: usize) -> Option<Vec<T>> {
        let q = self
            .q8
            .get_mut(slot)
            .filter(|q| q.codes.len() == len && len > 0)?;
        let values = q.to_values();
        q.codes = Vec::new();
        q.scales = Vec::new();
        Some(values)
    }

    /// Makes sure slot `slot` is stored 8-bit block-quantised under `map` with `len` elements
    /// (`ceil(len / 256)` scales), filling a new buffer with `init` quantised. Returns `true`
    /// when created. A slot of `len` elements held in `buffers`, in 16 bits or under the other
    /// map (a checkpoint of a rule that stored it so) is quantised instead, and is not created.
    pub fn ensure_q8(&mut self, slot: usize, len: usize, map: Q8Map, init: f64) -> bool
    where
        E: Float,
    {
        grow(&mut self.q8, slot, || Q8Buf::empty(map));
        let q = &self.q8[slot];
        if q.codes.len() == len && q.map == map && q.is_consistent() {
            return false;
        }
        if let Some(values) = self.take_q8::<f64>(slot, len) {
            self.q8[slot] = Q8Buf::from_values(map, &values);
            return false;
        }
        if let Some(full) = self.buffers.get_mut(slot).filter(|b| b.len() == len) {
            self.q8[slot] = Q8Buf::from_values(map, full);
            *full = Vec::new();
            return false;
        }
        if let Some(low) = self.low.get_mut(slot).filter(|l| l.bits.len() == len) {
            let values: Vec<f64> = low.to_values();
            low.bits = Vec::new();
            self.q8[slot] = Q8Buf::from_values(map, &values);
            return false;
        }
        self.q8[slot] = Q8Buf::filled(map, len, init);
        true
    }

    /// The values of state slot `slot`, widened to `f64` (exact) from whichever storage holds
    /// them (`q8` dequantised); `None` when not allocated.
    pub fn slot_values(&self, slot: usize) -> Option<Vec<f64>>
    where
        E: Float,
    {
        if let Some(b) = self.buffers.get(slot).filter(|b| !b.is_empty()) {
            return Some(b.iter().map(|x| x.as_f64()).collect());
        }
        if let Some(q) = self.q8.get(slot).filter(|q| !q.codes.is_empty()) {
            return Some(q.to_values());
        }
        self.low
            .get(slot)
            .filter(|l| !l.bits.is_empty())
            .map(LowBuf::to_values)
    }

    /// The map of slot `slot` when it is held 8-bit quantised.
    pub fn slot_q8(&self, slot: usize) -> Option<Q8Map> {
        self.q8
            .get(slot)
            .filter(|q| !q.codes.is_empty())
            .map(|q| q.map)
    }

    /// The storage type of slot `slot` when it is held in 16 bits.
    pub fn slot_dtype(&self, slot: usize) -> Option<StateDtype> {
        self.low
            .get(slot)
            .filter(|l| !l.bits.is_empty())
            .map(|l| l.dtype)
    }

    /// Makes sure element-wise scratch buffer `idx` (`len` elements) exists; during a device
    /// step it is made on the device and the host buffer stays empty.
    pub fn ensure_elem_temp(&mut self, idx: usize) {
        if self.temps.len() <= idx {
            self.temps.resize_with(idx + 1, Vec::new);
        }
        if let Some(link) = self.device.get() {
            link.ensure_temp(idx, self.len);
            return;
        }
        let len = self.len;
        self.ensure_temp(idx, len);
    }

    /// Makes sure scratch buffer `idx` has `len` elements (on the host: per-row and per-column
    /// values; element-wise scratch goes through [`ensure_elem_temp`](Self::ensure_elem_temp)).
    pub fn ensure_temp(&mut self, idx: usize, len: usize) {
        if self.temps.len() <= idx {
            self.temps.resize_with(idx + 1, Vec::new);
        }
        if self.temps[idx].len() != len {
            self.temps[idx].resize(len, E::default());
        }
    }

    /// Makes sure element-wise buffer `slot` (`len` elements) exists, filling a new one with
    /// `init`. Returns `true` when the buffer was created by this call (its first step).
    ///
    /// During a device step the buffer is made on the device instead (a host buffer of the
    /// right length is uploaded and freed; see `crate::cuda::link`), and the host buffer stays
    /// empty.
    ///
    /// A slot held in 16 or 8 bits (a checkpoint of a rule that stored it so) is widened into
    /// `buffers` instead (not created).
    pub fn ensure_buffer(&mut self, slot: usize, init: E) -> bool
    where
        E: Float,
    {
        if self.buffers.len() <= slot {
            self.buffers.resize_with(slot + 1, Vec::new);
        }
        let len = self.len;
        if self.buffers[slot].len() != len && len > 0 {
            if let Some(low) = self.low.get_mut(slot).filter(|l| l.bits.len() == len) {
                self.buffers[slot] = low.to_values();
                low.bits = Vec::new();
            } else if let Some(values) = self.take_q8(slot, len) {
                self.buffers[slot] = values;
            }
        }
        if let Some(link) = self.device.get() {
            return link.ensure_slot(slot, self.len, init, &mut self.buffers[slot]);
        }
        let buf = &mut self.buffers[slot];
        if buf.len() == self.len {
            false
        } else {
            buf.clear();
            buf.resize(self.len, init);
            true
        }
    }

    /// Makes sure scalar slot `slot` exists, with initial value `init`. Returns `true` when it
    /// was created by this call.
    pub fn ensure_scalar(&mut self, slot: usize, init: f64) -> bool {
        if self.scalars.len() <= slot {
            self.scalars.resize(slot + 1, 0.0);
            self.scalars_init.resize(slot + 1, false);
        }
        if self.scalars_init[slot] {
            false
        } else {
            self.scalars[slot] = init;
            self.scalars_init[slot] = true;
            true
        }
    }
}

/// What a step does when a gradient holds a NaN or an infinity (set per optimizer with
/// [`DslOptimizer::set_non_finite_policy`](crate::DslOptimizer::set_non_finite_policy)).
///
/// The check runs after the step's other validation and before anything is written. It reads
/// every gradient element once (an extra pass over the gradients; none with `Propagate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// No check: non-finite gradients flow into the update (and usually into the parameters and
    /// state), as in `torch.optim`. The default.
    #[default]
    Propagate,
    /// Skip the whole step, as PyTorch's `GradScaler.step` does on overflow: every parameter
    /// and every state buffer stays bit-identical, the global step and every per-parameter step
    /// count do **not** advance (so schedules and bias corrections resume where they were), and
    /// [`OptState::skipped_steps`] is incremented. The update call returns `Ok(())`.
    SkipStep,
    /// Return [`OptimError::NonFiniteGradient`](crate::OptimError::NonFiniteGradient) naming the
    /// first parameter (in the order given) whose gradient is not finite; nothing is modified.
    Error,
}

/// What a step does when a parameter it knows arrives with another shape (same name; a
/// transposed matrix, another rank, another size). Set with
/// [`DslOptimizer::set_shape_change`](crate::DslOptimizer::set_shape_change); saved in
/// checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeChange {
    /// Fail with [`OptimError::ShapeMismatch`](crate::OptimError::ShapeMismatch) naming the
    /// parameter; nothing is written. The default.
    #[default]
    Error,
    /// Discard that parameter's state (buffers, step count) and start it afresh with the new
    /// shape. Its old buffers are never reinterpreted.
    Reset,
}

/// The precision of the per-step scalars a rule hoists out of its loops (bias corrections,
/// schedule values, `lr / (1 - beta1^t)`, …). Set with
/// [`DslOptimizer::set_scalar_precision`](crate::DslOptimizer::set_scalar_precision); saved in
/// checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalarPrecision {
    /// `f64`, as PyTorch computes with Python floats. The default.
    #[default]
    F64,
    /// Scalars that depend on the step computed in the parameter's type: their operands and
    /// results are rounded to it (`f32` parameters: `1 - beta2^t` in `f32` arithmetic), as
    /// JAX/optax computes bias corrections with an integer step count in the parameters' dtype,
    /// while arithmetic on constant hyperparameters alone (`1 - beta2`) stays in `f64`, as
    /// Python folds it before JAX sees it. Code ported from optax reproduces its trajectories
    /// more closely (checked against optax's `adam`). Reductions are still accumulated in
    /// `f64`.
    Param,
}

/// The dfdx path's staging buffers ([`crate::dfdx::update::Staging`]); nothing without
/// feature `dfdx`.
#[cfg(feature = "dfdx")]
pub(crate) type Staging<E> = crate::dfdx::update::Staging<E>;
/// See the `dfdx` version.
#[cfg(not(feature = "dfdx"))]
pub(crate) type Staging<E> = std::marker::PhantomData<E>;

/// How the CPU loops of a rule do their arithmetic. Set per optimizer with
/// [`DslOptimizer::set_arithmetic`](crate::DslOptimizer::set_arithmetic); saved in checkpoints.
///
/// Only the generated element-wise loops on the host are affected; hoisted scalars, reductions,
/// matrix primitives and a device step (dfdx `Cuda`) always compute exactly as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arithmetic {
    /// Every operation as written in the rule, in the rule's order: `x / d` is a division. The
    /// zoo's PyTorch twins agree with PyTorch's trajectories (the conformance tests) in this
    /// mode. The default.
    #[default]
    Exact,
    /// Opt-in, cheaper: a division of an element-wise value by a hoisted per-step scalar
    /// (`sqrt(v) / sqrt(1 - beta2^t)` in AdamW, `m / (1 - beta1^t)` in a bias-corrected
    /// moment) becomes a multiplication by the scalar's reciprocal, computed once per step and
    /// parameter in the parameter's type (`x * (1 / d)`). Scalar-only subexpressions such as
    /// `lr / (1 - beta1^t)` are folded into one hoisted scalar in both modes. Each such
    /// operation differs from the exact one by at most about one unit in the last place
    /// (`x * RN(1/d)` against `RN(x / d)`: two roundings instead of one); AdamW stays within a
    /// relative `1e-5` of the exact mode over 1 000 steps in `f32` (checked by
    /// `tests/arithmetic.rs`). On the 2-core benchmark machine it saves one of AdamW's two
    /// per-element divisions (see the README's benchmark table).
    Reciprocal,
}

/// Where a CPU step on a dfdx model ([`DfdxUpdate::update`](crate::DfdxUpdate::update))
/// takes each parameter's current values from. Set per optimizer with
/// [`DslOptimizer::set_param_sync`](crate::DslOptimizer::set_param_sync); not saved in
/// checkpoints.
///
/// dfdx 0.13 has no mutable or borrowed view of a tensor's storage, so the CPU step updates a
/// host copy of each parameter and writes it back into the tensor (`copy_from`). Both modes
/// give bit-identical parameters and state. The slice path
/// ([`update_slices`](crate::DslOptimizer::update_slices)) is not affected; a step on dfdx
/// `Cuda` always keeps a master copy on the device, with its own contract (`docs/gpu.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParamSync {
    /// Every step reads every stepped parameter from the model (`copy_into`, 8 more bytes per
    /// `f32` parameter: 44 for AdamW instead of the slice path's 28). Only needed for code
    /// that writes a tensor's storage behind dfdx's back (`unsafe` code, FFI), which
    /// [`Master`](ParamSync::Master) cannot see.
    Read,
    /// The default: the optimizer keeps its host copy of each parameter between steps as the
    /// **master copy** and skips the read while the model's tensor still holds the storage the
    /// last step wrote (36 bytes per `f32` parameter for AdamW: the copy back remains).
    ///
    /// The check is exact, with nothing for the training loop to call. After writing a
    /// tensor, the step keeps a handle on the tensor's storage (dfdx shares storage by
    /// reference count; nothing is copied), and dfdx 0.13 writes a `Cpu` tensor only through
    /// `Arc::make_mut`, which copies a shared storage before writing. So any write into the
    /// tensor between steps gives it a new storage, and the next step reads it:
    /// - `copy_from`, loading weights into the model (`load_safetensors`), another optimizer
    ///   (dfdx's own, or a second one of this crate) stepping the same tensor;
    /// - [`swap_state_with_model`](crate::DfdxUpdate::swap_state_with_model),
    ///   [`WeightEma::copy_to_model`](crate::WeightEma::copy_to_model) and
    ///   [`WeightEma::swap_with_model`](crate::WeightEma::swap_with_model);
    /// - a tensor replaced by a new one (`model.w = dev.tensor(..)`, `model = backup`, a
    ///   freshly built model).
    ///
    /// The cost of the handle: a write into the tensor between steps (rare: loading weights)
    /// copies its storage first, as writing any shared dfdx tensor does.
    ///
    /// The kept copies and other operations:
    /// - [`update_where`](crate::DfdxUpdate::update_where): a parameter it does not step keeps
    ///   its copy (the step did not write its tensor);
    /// - a failed step (an error from `update`/`update_where`, nothing written into the model)
    ///   drops the copies of the parameters it staged: the next step reads them again;
    /// - loading a checkpoint into the optimizer (`load_checkpoint*`) and
    ///   [`OptState::resync_params`] drop every copy;
    /// - a clone of the state ([`OptState`]'s `clone`, [`OptState::try_clone`]) keeps the
    ///   setting but no copies: the first step of an optimizer holding it reads;
    /// - a copy is trusted only after a `Master` step wrote it into the model: the first step
    ///   after switching from [`ParamSync::Read`] reads every parameter.
    #[default]
    Master,
}

/// The whole state of an optimizer: the global step and one [`ParamState`] per parameter name.
#[derive(Debug, Clone, PartialEq)]
pub struct OptState<E> {
    /// Number of completed `update` calls (the step at which schedules are evaluated). Steps
    /// skipped under [`NonFinitePolicy::SkipStep`] are not counted.
    pub step: u64,
    /// Per-parameter state by name (dfdx path: the dotted module path such as `"0.weight"`).
    pub params: BTreeMap<String, ParamState<E>>,
    /// What a step does with non-finite gradients (default [`NonFinitePolicy::Propagate`]).
    pub non_finite: NonFinitePolicy,
    /// Number of `update` calls skipped under [`NonFinitePolicy::SkipStep`].
    pub skipped_steps: u64,
    /// What a step does with a known parameter of another shape (default [`ShapeChange::Error`]).
    pub shape_change: ShapeChange,
    /// Precision of hoisted per-step scalars (default [`ScalarPrecision::F64`]).
    pub scalar_precision: ScalarPrecision,
    /// How the CPU loops compute (default [`Arithmetic::Exact`]).
    pub arithmetic: Arithmetic,
    /// Whether a CPU step on a dfdx model keeps a master copy of each parameter or reads
    /// every parameter from the model (default [`ParamSync::Master`]; not saved in
    /// checkpoints).
    pub param_sync: ParamSync,
    /// dfdx path only: reusable host copies and spare tensors of each parameter (dfdx 0.13
    /// exposes no mutable view of a tensor's storage, see ARCHITECTURE.md). Not part of the
    /// optimizer's state.
    pub(crate) staging: Staging<E>,
    /// The sorted order of the last step's parameter names, reused while they stay the same
    /// (see `crate::lookup`; a cache, not saved).
    pub(crate) order: crate::lookup::NameOrder,
    /// The memory of the step's per-parameter lists, reused by the next step (see
    /// `crate::scratch`; a cache, not saved).
    pub(crate) scratch: crate::scratch::Scratch,
    /// Opt-in step metrics: whether on, and the last step's (not saved in checkpoints).
    pub(crate) metrics: crate::metrics::MetricsSlot,
    /// Buffers on a device after a device step (dfdx `Cuda`, see `docs/gpu.md`): element-wise
    /// state whose host buffer is then empty, scratch, and the parameter copies.
    pub(crate) device: crate::cuda::store::DeviceState<E>,
}

impl<E> Default for OptState<E> {
    fn default() -> Self {
        OptState {
            step: 0,
            params: BTreeMap::new(),
            non_finite: NonFinitePolicy::Propagate,
            skipped_steps: 0,
            shape_change: ShapeChange::Error,
            scalar_precision: ScalarPrecision::F64,
            arithmetic: Arithmetic::Exact,
            param_sync: ParamSync::Master,
            staging: Default::default(),
            order: Default::default(),
            scratch: Default::default(),
            metrics: crate::metrics::MetricsSlot::default(),
            device: Default::default(),
        }
    }
}

impl<E> OptState<E> {
    /// The state of parameter `name`, if it has been updated at least once.
    pub fn param(&self, name: &str) -> Option<&ParamState<E>> {
        self.params.get(name)
    }

    /// Whether opt-in step metrics are on (`DslOptimizer::set_metrics`): then 16-bit
    /// parameters must be staged whole ([`crate::narrow`]).
    pub fn metrics_on(&self) -> bool {
        self.metrics.enabled
    }

    /// Whether some element-wise state lives on a device (after a step on dfdx `Cuda`): its
    /// host buffers in [`ParamState::buffers`] are then empty. Read it with
    /// [`sync_to_host`](Self::sync_to_host) first; checkpoints and CPU steps do that themselves.
    pub fn on_device(&self) -> bool {
        self.device.0.as_ref().is_some_and(|s| s.holds_state())
    }

    /// Forgets the optimizer's copies of the parameters, so that the next step reads every
    /// parameter from the model: the device master copies that dfdx `Cuda` steps keep
    /// (`docs/gpu.md`; one host round trip per parameter) and the host master copies of a CPU
    /// step in [`ParamSync::Master`] mode (8 bytes per `f32` parameter, once). On `Cuda`, call
    /// it after writing a model's parameters in place between steps (`copy_from`, loading
    /// weights, restoring a clone of the model; a tensor replaced by another one, a new dfdx
    /// id, is detected without it). On `Cpu` such writes are detected without it (see
    /// [`ParamSync::Master`]). State buffers stay where they are. Cheap: nothing is read or
    /// freed here.
    pub fn resync_params(&mut self) {
        if let Some(s) = self.device.0.as_mut() {
            s.drop_masters();
        }
        #[cfg(feature = "dfdx")]
        self.staging.forget_masters();
    }

    /// How many times the CPU steps on dfdx models ([`DfdxUpdate::update`](crate::DfdxUpdate::update))
    /// of the optimizer holding this state read a parameter from the model (`copy_into`, 8
    /// bytes per `f32` element), in total: in [`ParamSync::Master`] mode (the default) each
    /// parameter at its first step and then only after its tensor was written or replaced; in
    /// [`ParamSync::Read`] mode every stepped parameter at every step. A diagnostic (is the
    /// master copy holding?); not saved in checkpoints, and a clone of the state starts at 0.
    /// Always 0 without feature `dfdx`.
    pub fn model_reads(&self) -> u64 {
        #[cfg(feature = "dfdx")]
        return self.staging.reads;
        #[cfg(not(feature = "dfdx"))]
        return 0;
    }

    /// The name of the device the state is on (`None`: the host).
    pub fn device_name(&self) -> Option<String> {
        self.device.0.as_ref().map(|s| s.backend_name())
    }
}

impl<E: Clone> OptState<E> {
    /// Copies every state buffer that lives on a device into [`ParamState::buffers`] and frees
    /// the device buffers and parameter copies: afterwards the whole state is on the host, as
    /// after a CPU step, and a later device step uploads it again. A CPU step (and
    /// [`DslOptimizer::update_slices`](crate::DslOptimizer::update_slices)) calls it first.
    ///
    /// # Errors
    /// [`OptimError::Device`](crate::OptimError::Device) when the device cannot be read; the
    /// state is then unchanged.
    pub fn sync_to_host(&mut self) -> Result<(), crate::OptimError> {
        let Some(store) = &self.device.0 else {
            return Ok(());
        };
        let slots = store.download_slots()?;
        put_slots(&mut self.params, slots);
        self.device.0 = None;
        Ok(())
    }

    /// A copy of the state, device buffers copied on their device. Unlike `clone`, a device
    /// failure is reported here (a clone would carry it to its first use).
    ///
    /// # Errors
    /// [`OptimError::Device`](crate::OptimError::Device) when the device cannot allocate or
    /// copy; `self` is unchanged.
    pub fn try_clone(&self) -> Result<OptState<E>, crate::OptimError> {
        Ok(OptState {
            staging: self.staging.clone(),
            order: self.order.clone(),
            metrics: self.metrics.clone(),
            ..self.copy_with(self.device.try_clone()?)
        })
    }

    /// A copy of the state with every device buffer on the host (for checkpoints).
    ///
    /// # Errors
    /// As [`sync_to_host`](Self::sync_to_host).
    pub(crate) fn to_host(&self) -> Result<OptState<E>, crate::OptimError> {
        let mut host = self.copy_with(Default::default());
        if let Some(store) = &self.device.0 {
            put_slots(&mut host.params, store.download_slots()?);
        }
        Ok(host)
    }

    /// The step count, the parameters' states and the settings, with `device` as the device
    /// state; the reusable scratch (staging buffers, name order) and the metrics slot start
    /// empty.
    fn copy_with(&self, device: crate::cuda::store::DeviceState<E>) -> OptState<E> {
        OptState {
            step: self.step,
            params: self.params.clone(),
            non_finite: self.non_finite,
            skipped_steps: self.skipped_steps,
            shape_change: self.shape_change,
            scalar_precision: self.scalar_precision,
            arithmetic: self.arithmetic,
            param_sync: self.param_sync,
            device,
            ..OptState::default()
        }
    }
}

/// Writes state slots read from a device, `(parameter, slot, values)`, into the host buffers
/// of `params` (a slot a parameter does not have is dropped).
fn put_slots<E>(
    params: &mut BTreeMap<String, ParamState<E>>,
    slots: impl IntoIterator<Item = (String, usize, Vec<E>)>,
) {
    for (name, k, data) in slots {
        if let Some(b) = params.get_mut(&name).and_then(|p| p.buffers.get_mut(k)) {
            *b = data;
        }
    }
}

/// Makes sure `bufs` has slot `slot`: any missing slots up to it are added, each made by
/// `empty` (not allocated).
pub(crate) fn grow<T>(bufs: &mut Vec<T>, slot: usize, empty: impl FnMut() -> T) {
    if bufs.len() <= slot {
        bufs.resize_with(slot + 1, empty);
    }
}

//! Whole-tensor (matrix) primitives: the barriers between a rule's loops. Matrices are the
//! row-major `rows × cols` view of a parameter (see [`crate::ParamInfo`]); linear algebra runs
//! on faer.
//!
//! Each DSL word is one type implementing [`Primitive`]: its configuration (the word's named
//! arguments, with their defaults in the config's `Default` — the only place they live), the
//! names of its state buffers ([`MatrixWord::STATE`]) and what it does. Generated code calls
//! every primitive through one path, [`run`], which lends it the parameter's state and scratch
//! buffers and records its [`Report`] in the parameter's [`MatrixStats`].
//!
//! | word | type | state | file |
//! |---|---|---|---|
//! | `orthogonalize` | [`Orthogonalize`] | — | `newton_schulz.rs` |
//! | `factored_second_moment` | [`Factored`] | `v` (rows + cols) | `factored.rs` |
//! | `kron_precondition` | [`Kron`] | `.stats`, `.roots` | `kron.rs` |
//! | `kfac_precondition` | [`Kfac`] | `.inverses` | `kfac.rs` |
//! | `kron_eigenbasis` | [`Eigenbasis`] | `.stats`, `.q` | `eigenbasis.rs` |
//! | `rotate`, `unrotate` | [`Rotate`], [`Unrotate`] | (the basis's `q`) | `eigenbasis.rs` |
//! | `row_*`, `col_*` | [`RowSum`], [`RowSumSq`], [`RowMax`], [`ColSum`], ... | — | `axis.rs` |
//!
//! The free functions ([`orthogonalize`], [`kron_precondition`], ...) are the same numerics on
//! plain buffers, for direct use.

mod axis;
mod dion;
mod eigenbasis;
mod factored;
mod kfac;
mod kron;
mod linalg;
mod newton_schulz;
mod probe;
mod psgd;
mod splus;

pub use axis::{broadcast, ColMax, ColSum, ColSumSq, RowMax, RowSum, RowSumSq};
pub use dion::{dion_rank, low_rank_orthonormalize, LowRank, LowRankConfig, DION_EPSILON, DION_MU};
pub use eigenbasis::{
    eigenbasis_init, eigenbasis_update, rotate, Eigenbasis, EigenbasisConfig, Rotate, RotateConfig,
    Unrotate, EIGENBASIS_MAX_DIM, EIGENBASIS_UPDATE_FREQ,
};
pub use factored::{factored_second_moment, Factored, FactoredConfig, FACTORED_EPS};
pub use kfac::{kfac_precondition, Kfac, KfacConfig, KFAC_DAMPING};
pub use kron::{kron_precondition, Kron, KronConfig, KRON_DEFAULT};
pub use newton_schulz::{
    orthogonalize, orthogonalize_with, Orthogonalize, OrthogonalizeConfig, NS_COEFFS, NS_EPS,
    NS_STEPS,
};
pub use probe::standard_normal_probe;
pub use psgd::{psgd_precondition, Psgd, PsgdConfig, PSGD_MAX_SIZE_TRIANGULAR, PSGD_PRECOND_LR};
pub use splus::{
    eigen_sign, eigen_sign_update, EigenSign, EigenSignConfig, EIGEN_SIGN_BETA, EIGEN_SIGN_EPS,
    EIGEN_SIGN_MAX_DIM, EIGEN_SIGN_UPDATE_FREQ,
};

use crate::{Float, KronFactors, ParamInfo, ParamState};

/// What the generated code and the runtime agree on about a primitive, independent of the
/// element type: its configuration and the names of its state buffers.
pub trait MatrixWord {
    /// The word's arguments by name; `Default` holds every default.
    type Config: Default + Clone + core::fmt::Debug;
    /// Suffixes of its state buffers as they are named in checkpoints and `explain()`
    /// (`"stats"` → `"<binding>.stats"`; `""` → the binding's own name).
    const STATE: &'static [&'static str];
}

/// A whole-tensor primitive on element type `E`.
pub trait Primitive<E: Float>: MatrixWord {
    /// Runs the primitive on `io` (called through [`run`]).
    fn apply(cfg: &Self::Config, io: Io<'_, E>) -> Report;
}

/// When a primitive runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the first loop of the step (an eigenbasis's initialisation).
    Init,
    /// Between two loops, on an element-wise input, writing an element-wise output.
    Barrier,
    /// After the step (an eigenbasis's statistics and refresh).
    Finish,
}

/// Where a primitive's element-wise input lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// The parameter.
    Param,
    /// The gradient.
    Grad,
    /// State buffer `k` of the parameter.
    Buf(usize),
    /// Scratch buffer `k` of the parameter.
    Temp(usize),
}

/// One call site of a primitive in a generated rule: which of the parameter's buffers it uses.
#[derive(Debug, Clone, Copy)]
pub struct Call<'c> {
    /// The element-wise input.
    pub input: Src,
    /// The scratch buffer receiving the output (`None` for an eigenbasis).
    pub out: Option<usize>,
    /// Its own state buffers, in [`MatrixWord::STATE`] order.
    pub state: &'c [usize],
    /// The `q` buffer of the eigenbasis a rotation uses.
    pub basis_q: Option<usize>,
    /// States that live in an eigenbasis and are permuted with it on a refresh.
    pub rotated: &'c [usize],
}

/// What a primitive works on: buffers lent by [`run`].
pub struct Io<'a, E> {
    /// When it runs.
    pub phase: Phase,
    /// The element-wise input (`rows × cols` row-major).
    pub input: &'a [E],
    /// The output, same size (empty when the call has none).
    pub out: &'a mut [E],
    /// Its state buffers, in [`MatrixWord::STATE`] order (empty until first created).
    pub state: &'a mut [Vec<E>],
    /// The eigenbasis a rotation uses.
    pub basis_q: &'a [E],
    /// States permuted with an eigenbasis.
    pub rotated: &'a mut [Vec<E>],
    /// The parameter: its matrix view (`rows`, `cols`) and rank.
    pub info: ParamInfo<'a>,
    /// The parameter's step count (1 on its first update).
    pub step: u64,
    /// Workspace kept per parameter (grown once, reused).
    pub work: &'a mut Vec<E>,
    /// User-supplied Kronecker factors (`kfac_precondition`).
    pub factors: Option<&'a mut KronFactors<E>>,
}

impl<E> Io<'_, E> {
    /// Rows of the matrix view.
    pub fn rows(&self) -> usize {
        self.info.rows()
    }
    /// Columns of the matrix view.
    pub fn cols(&self) -> usize {
        self.info.cols()
    }
    /// Whether the parameter has rank ≥ 2 (factored primitives use both sides).
    pub fn is_matrix(&self) -> bool {
        self.info.rank() >= 2
    }
}

/// What a primitive did, beyond its output: the one channel for its diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Whether it created its state on this call (an eigenbasis's first step).
    pub initialised: bool,
    /// Inputs it refused to take into its statistics (a non-finite gradient), per side.
    pub skipped_inputs: u32,
    /// Refreshes (inverse roots, eigenbases, damped inverses) it computed.
    pub refreshes: u32,
    /// Refreshes it refused because the result would not be finite or well defined; the
    /// previous value was kept.
    pub failed_refreshes: u32,
}

/// Running totals of the [`Report`]s of one parameter's matrix primitives (not saved in
/// checkpoints).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatrixStats {
    /// Sum of [`Report::skipped_inputs`].
    pub skipped_inputs: u64,
    /// Sum of [`Report::refreshes`].
    pub refreshes: u64,
    /// Sum of [`Report::failed_refreshes`].
    pub failed_refreshes: u64,
}

impl MatrixStats {
    /// Adds one report.
    pub fn record(&mut self, r: &Report) {
        self.skipped_inputs += u64::from(r.skipped_inputs);
        self.refreshes += u64::from(r.refreshes);
        self.failed_refreshes += u64::from(r.failed_refreshes);
    }
}

fn take<E>(v: Option<&mut Vec<E>>) -> Vec<E> {
    v.map(std::mem::take).unwrap_or_default()
}

fn put<E>(v: Option<&mut Vec<E>>, buf: Vec<E>) {
    if let Some(v) = v {
        *v = buf;
    }
}

/// Runs primitive `P` at one call site: lends it the parameter's buffers named by `call`,
/// puts them back, and records its report in `ps.matrix`.
pub fn run<E: Float, P: Primitive<E>>(
    cfg: &P::Config,
    phase: Phase,
    call: Call<'_>,
    ps: &mut ParamState<E>,
    param: &[E],
    grad: &[E],
    info: ParamInfo<'_>,
) -> Report {
    let mut state: Vec<Vec<E>> = call
        .state
        .iter()
        .map(|&k| take(ps.buffers.get_mut(k)))
        .collect();
    let mut rotated: Vec<Vec<E>> = call
        .rotated
        .iter()
        .map(|&k| take(ps.buffers.get_mut(k)))
        .collect();
    let mut out = take(call.out.and_then(|t| ps.temps.get_mut(t)));
    let mut work = std::mem::take(&mut ps.work);
    let mut factors = ps.factors.take();
    let report = {
        let input: &[E] = match call.input {
            Src::Param => param,
            Src::Grad => grad,
            Src::Buf(k) => ps.buffers.get(k).map_or(&[], |b| &b[..]),
            Src::Temp(t) => ps.temps.get(t).map_or(&[], |b| &b[..]),
        };
        let basis_q: &[E] = call
            .basis_q
            .and_then(|k| ps.buffers.get(k))
            .map_or(&[], |b| &b[..]);
        P::apply(
            cfg,
            Io {
                phase,
                input,
                out: &mut out,
                state: &mut state,
                basis_q,
                rotated: &mut rotated,
                info,
                step: ps.step,
                work: &mut work,
                factors: factors.as_mut(),
            },
        )
    };
    ps.factors = factors;
    ps.work = work;
    if let Some(t) = call.out {
        put(ps.temps.get_mut(t), out);
    }
    for (&k, b) in call.rotated.iter().zip(rotated) {
        put(ps.buffers.get_mut(k), b);
    }
    for (&k, b) in call.state.iter().zip(state) {
        put(ps.buffers.get_mut(k), b);
    }
    ps.matrix.record(&report);
    report
}

/// Conversion of a host value (`f64`, as every hoisted scalar is computed) into a config
/// field's type. Counts and sizes are validated whole numbers by then; a negative or NaN value
/// becomes 0.
pub trait FromHost {
    /// Converts `v`.
    fn from_host(v: f64) -> Self;
}

impl FromHost for f64 {
    fn from_host(v: f64) -> Self {
        v
    }
}

impl FromHost for Option<f64> {
    fn from_host(v: f64) -> Self {
        Some(v)
    }
}

impl FromHost for u64 {
    fn from_host(v: f64) -> Self {
        v.max(0.0) as u64
    }
}

impl FromHost for usize {
    fn from_host(v: f64) -> Self {
        v.max(0.0) as usize
    }
}

impl FromHost for bool {
    fn from_host(v: f64) -> Self {
        v != 0.0
    }
}

/// Whether two lists of names are equal (a `const fn`, for the generated assertion that the
/// macro and the runtime agree on a primitive's state buffers).
pub const fn same_names(a: &[&str], b: &[&str]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        let (x, y) = (a[i].as_bytes(), b[i].as_bytes());
        if x.len() != y.len() {
            return false;
        }
        let mut j = 0;
        while j < x.len() {
            if x[j] != y[j] {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

//! Whole-tensor (matrix) primitives: the barriers between a rule's loops. Matrices are row-major
//! views of a parameter's elements (see [`MatView`]); linear algebra runs
//! on faer.
//!
//! Each DSL word is one type implementing [`Primitive`]: its configuration (the word's named
//! arguments, with their defaults in the config's `Default` — the only place they live,
//! declared beside each field by `matrix_config!`), the names of its state buffers
//! ([`MatrixWord::STATE`]), which axes form its matrix
//! ([`MatrixWord::VIEW`], a [`ViewRule`] giving a [`MatView`]), which parameters and
//! configurations it accepts ([`MatrixWord::check`], to be called before a step writes
//! anything) and what it does. Generated code calls every primitive through one path, [`run`],
//! which lends it the parameter's state and scratch buffers and records its [`Report`] in the
//! parameter's [`MatrixStats`]. No primitive panics, whatever its input.
//!
//! | word | type | view | state | file |
//! |---|---|---|---|---|
//! | `orthogonalize` | [`Orthogonalize`] | `Flatten` | — | `newton_schulz.rs` |
//! | `factored_second_moment` | [`Factored`] | `LastTwo` | `v` (per matrix: rows + cols) | `factored.rs` |
//! | `kron_precondition` | [`Kron`] | `Squeeze` | `.stats`, `.roots` | `kron.rs` |
//! | `kfac_precondition` | [`Kfac`] | `Flatten` | `.inverses` | `kfac.rs` |
//! | `kron_eigenbasis` | [`Eigenbasis`] | `Flatten` | `.stats`, `.q` | `eigenbasis.rs` |
//! | `rotate`, `unrotate` | [`Rotate`], [`Unrotate`] | `Flatten` | (the basis's `q`) | `eigenbasis.rs` |
//! | `eigen_sign` | [`EigenSign`] | `Flatten` | `.stats`, `.q` (per side `< max_dim`) | `splus.rs` |
//! | `psgd_precondition` | [`Psgd`] | `Flatten` | `.q` (triangular or diagonal factors) | `psgd.rs` |
//! | `low_rank_orthonormalize` | [`LowRank`] | `Flatten` | `.momentum`, `.q` | `dion.rs` |
//! | `row_*`, `col_*` | [`RowSum`], [`RowSumSq`], [`RowMax`], [`ColSum`], ... | `Flatten` | — | `axis.rs` |
//!
//! The free functions ([`orthogonalize`], [`kron_precondition`], ...) are the same numerics on
//! plain buffers, for direct use. They take their matrices as [`MatIn`] (an input) or
//! [`MatInOut`] (an input and an output of the same shape), whose constructors refuse a buffer
//! that does not hold `rows · cols` elements with [`crate::OptimError::ShapeMismatch`]: past
//! them a length mismatch cannot happen. [`run`] builds these views from the parameter's
//! [`MatView`]; a lent buffer shorter than the view (a broken call site) makes the primitive do
//! nothing.

/// Declares a matrix primitive's configuration: the struct (with `$doc`, deriving `Debug`,
/// `Clone`, `Copy`, `PartialEq`) and its `Default`, each field written once with its default
/// (`pub field: Type = default,`), so the default stands beside the field it belongs to and
/// nowhere else.
macro_rules! matrix_config {
    (
        $(#[$doc:meta])*
        pub struct $name:ident {
            $($(#[$fdoc:meta])* pub $field:ident: $ty:ty = $default:expr,)*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $($field: $default,)*
                }
            }
        }
    };
}

/// Declares a matrix primitive: its unit struct (with `$doc`) and its [`MatrixWord`] impl, the
/// word's configuration plumbing. `pub struct Name("word", Config, state [...], view V,
/// batched b);` gives [`MatrixWord::WORD`], [`MatrixWord::Config`], [`MatrixWord::STATE`] and,
/// when given, [`MatrixWord::VIEW`] and [`MatrixWord::BATCHED`] (else their defaults). With
/// `check [field: Bound, ...] then f;`, [`MatrixWord::check`] is [`check_shape`], then
/// [`require_arg`] on each field in order, then `f` (`fn(&Config, &str, &ParamInfo) ->
/// Result<(), String>`), if given; without `check`, the trait's default.
macro_rules! matrix_word {
    (
        $(#[$doc:meta])*
        pub struct $name:ident($word:literal, $cfg:ty, state [$($state:literal),*]
            $(, view $view:ident)? $(, batched $batched:literal)?);
        $(check [$($field:ident: $bound:ident),*] $(then $extra:path)?;)?
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl $crate::matrix::MatrixWord for $name {
            type Config = $cfg;
            const STATE: &'static [&'static str] = &[$($state),*];
            const WORD: &'static str = $word;
            $(const VIEW: $crate::matrix::ViewRule = $crate::matrix::ViewRule::$view;)?
            $(const BATCHED: bool = $batched;)?
            $(
                #[doc = concat!(
                    "The shape check, then the bounds (`Unit`: in `[0, 1]`; `NonNeg`: finite and ",
                    "`>= 0`; `Positive`: finite and `> 0`; an absent optional argument passes):",
                    $(" `", stringify!($field), "` ", stringify!($bound), ";",)*
                    $(" then `", stringify!($extra), "`.",)?
                )]
                fn check(cfg: &$cfg, info: $crate::ParamInfo<'_>) -> Result<(), String> {
                    let w = <Self as $crate::matrix::MatrixWord>::WORD;
                    $crate::matrix::check_shape(w, info)?;
                    $(
                        let bound = $crate::matrix::Bound::$bound;
                        $crate::matrix::require_arg(cfg.$field, stringify!($field), bound, w, &info)?;
                    )*
                    $($extra(cfg, w, &info)?;)?
                    Ok(())
                }
            )?
        }
    };
}

mod axis;
mod batch;
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
mod view;

pub use axis::{broadcast, ColMax, ColSum, ColSumSq, RowMax, RowSum, RowSumSq};
pub use batch::{check_call, slice_name};
pub use dion::{dion_rank, low_rank_orthonormalize, LowRank, LowRankConfig, DION_EPSILON, DION_MU};
pub use eigenbasis::{
    eigenbasis_init, eigenbasis_update, rotate, Eigenbasis, EigenbasisConfig, Rotate, RotateConfig,
    Unrotate, EIGENBASIS_MAX_DIM, EIGENBASIS_UPDATE_FREQ,
};
pub use factored::{factored_second_moment, Factored, FactoredConfig, FACTORED_EPS};
pub use kfac::{kfac_precondition, Kfac, KfacConfig, KFAC_DAMPING};
pub use kron::{kron_precondition, Kron, KronConfig, KRON_DEFAULT};
pub use newton_schulz::{
    orthogonalize, orthogonalize_with, Orthogonalize, OrthogonalizeConfig, NS_COEFFS, NS_CUBIC,
    NS_EPS, NS_EPS_KELLER, NS_KELLER, NS_POLAR_EXPRESS, NS_STEPS,
};
pub use probe::standard_normal_probe;
pub use psgd::{psgd_precondition, Psgd, PsgdConfig, PSGD_MAX_SIZE_TRIANGULAR, PSGD_PRECOND_LR};
pub use splus::{
    eigen_sign, eigen_sign_update, EigenSign, EigenSignConfig, EIGEN_SIGN_BETA, EIGEN_SIGN_EPS,
    EIGEN_SIGN_MAX_DIM, EIGEN_SIGN_UPDATE_FREQ,
};
pub use view::{MatIn, MatInOut};

use crate::{Float, KronFactors, ParamInfo, ParamState};

/// What the generated code and the runtime agree on about a primitive, independent of the
/// element type: its configuration, the names of its state buffers, how it sees a parameter
/// and which parameters it accepts.
pub trait MatrixWord {
    /// The word's arguments by name; `Default` holds every default.
    type Config: Default + Clone + core::fmt::Debug + 'static;
    /// Suffixes of its state buffers as they are named in checkpoints and `explain()`
    /// (`"stats"` → `"<binding>.stats"`; `""` → the binding's own name).
    const STATE: &'static [&'static str];
    /// The DSL word, as error messages name it (`"kron_precondition"`).
    const WORD: &'static str;
    /// Which axes of a parameter form its matrix (see [`ViewRule`]; default
    /// [`ViewRule::Flatten`]).
    const VIEW: ViewRule = ViewRule::Flatten;
    /// Whether the word accepts batch axes (`batch = k` in the DSL, [`Call::batch`]): then it
    /// runs once per slice `shape[k..]`, with state kept per slice (default `true`; `false` for
    /// `kfac_precondition`, whose factors are supplied per parameter, and the `row_*`/`col_*`
    /// reductions).
    const BATCHED: bool = true;

    /// Whether the primitive can run on parameter `info` with configuration `cfg` (the step's
    /// values, hoisted scalars included): `Err` holds a message naming the word, the
    /// parameter and what is wrong. Call it for every parameter before a step writes anything,
    /// and refuse the step on `Err`; [`Primitive::apply`] itself never panics, but on a shape
    /// or configuration refused here its output is unspecified.
    ///
    /// The default refuses a shape with a dimension of size 0 or more elements than `usize`
    /// holds ([`check_shape`]); words add checks of their configuration.
    fn check(cfg: &Self::Config, info: ParamInfo<'_>) -> Result<(), String> {
        let _ = cfg;
        check_shape(Self::WORD, info)
    }
}

/// The default shape check of [`MatrixWord::check`]: `Err` when a dimension of `info.shape`
/// is 0 or the element count overflows `usize`, with a message naming `word` and the
/// parameter. Rank 0 (a scalar) is accepted.
pub fn check_shape(word: &str, info: ParamInfo<'_>) -> Result<(), String> {
    if info.shape.contains(&0) {
        return Err(format!(
            "`{word}` cannot run on parameter `{}` of shape {:?}: it has a dimension of size 0",
            info.name, info.shape
        ));
    }
    if info
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_none()
    {
        return Err(format!(
            "`{word}` cannot run on parameter `{}` of shape {:?}: too many elements",
            info.name, info.shape
        ));
    }
    Ok(())
}

/// `Err` naming `word`, `info` and `what` unless `ok`.
pub(crate) fn require(
    ok: bool,
    word: &str,
    info: &ParamInfo<'_>,
    what: &str,
) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{word}` on parameter `{}` of shape {:?}: {what}",
            info.name, info.shape
        ))
    }
}

/// What a numeric argument of a matrix word must be ([`require_arg`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// In `[0, 1]`.
    Unit,
    /// Finite and `>= 0`.
    NonNeg,
    /// Finite and `> 0`.
    Positive,
}

/// [`require`] that `v` (argument `what`; `None`, an absent optional argument, passes) is
/// within `bound`.
pub(crate) fn require_arg(
    v: impl Into<Option<f64>>,
    what: &str,
    bound: Bound,
    word: &str,
    info: &ParamInfo<'_>,
) -> Result<(), String> {
    let Some(v) = v.into() else {
        return Ok(());
    };
    let (ok, rule) = match bound {
        Bound::Unit => ((0.0..=1.0).contains(&v), "must be in [0, 1]"),
        Bound::NonNeg => (v.is_finite() && v >= 0.0, "must be finite and >= 0"),
        Bound::Positive => (v.is_finite() && v > 0.0, "must be finite and > 0"),
    };
    if ok {
        return Ok(());
    }
    require(false, word, info, &format!("{what} {rule}"))
}

/// Which axes of a parameter a matrix primitive treats as its matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewRule {
    /// One `shape[0] × (shape[1] · … · shape[r-1])` matrix: a conv weight `[out, in, kh, kw]`
    /// is the `out × (in·kh·kw)` matrix, as Keller Jordan's Muon flattens it. Rank 1 `[n]` is
    /// `n × 1`, rank 0 is `1 × 1`. The view of `orthogonalize`, `kfac_precondition`,
    /// `kron_eigenbasis`, `rotate` and `unrotate`.
    Flatten,
    /// The last two axes are the matrix and the leading axes a batch of independent matrices:
    /// `[b0, …, R, C]` is `b0·…` matrices `R × C` (`torch.optim.Adafactor`,
    /// `optax.adafactor`). Rank < 2 as [`ViewRule::Flatten`]. The view of
    /// `factored_second_moment`.
    LastTwo,
    /// Axes of length 1 removed, then [`ViewRule::Flatten`] of the rest (all removed: `1 × 1`),
    /// as distributed_shampoo squeezes unit dimensions: `[1, n]`, `[n, 1]` and `[n]` are all
    /// the `n × 1` vector, `[1, a, b]` the `a × b` matrix. The view of `kron_precondition`.
    Squeeze,
}

/// A parameter seen as `batch` independent row-major `rows × cols` matrices stored one after
/// another (`batch · rows · cols` elements, the parameter's own row-major layout: no copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatView {
    /// Number of matrices (1 unless [`ViewRule::LastTwo`] on rank > 2).
    pub batch: usize,
    /// Rows of each matrix.
    pub rows: usize,
    /// Columns of each matrix.
    pub cols: usize,
}

fn prod(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

impl MatView {
    /// The view of a parameter of `shape` under `rule` (products saturate at `usize::MAX`;
    /// [`check_shape`] refuses such shapes).
    pub fn of(shape: &[usize], rule: ViewRule) -> MatView {
        let flat = |s: &[usize]| match s {
            [] => MatView {
                batch: 1,
                rows: 1,
                cols: 1,
            },
            [first, rest @ ..] => MatView {
                batch: 1,
                rows: *first,
                cols: prod(rest),
            },
        };
        match rule {
            ViewRule::Flatten => flat(shape),
            ViewRule::LastTwo if shape.len() > 2 => {
                let r = shape.len();
                MatView {
                    batch: prod(&shape[..r - 2]),
                    rows: shape[r - 2],
                    cols: shape[r - 1],
                }
            }
            ViewRule::LastTwo => flat(shape),
            ViewRule::Squeeze => {
                let kept: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
                flat(&kept)
            }
        }
    }

    /// Elements in all (`batch · rows · cols`, saturating).
    pub fn len(&self) -> usize {
        prod(&[self.batch, self.rows, self.cols])
    }

    /// Whether the view has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
    /// Leading batch axes (the DSL's `batch = k`; 0: none). With `k > 0` a parameter of shape
    /// `[b0, …, b(k-1), s…]` is `b0·…·b(k-1)` independent slices of shape `s…`, stored one
    /// after another: the primitive runs on each slice exactly as on a parameter of shape `s…`
    /// (same view rule, same numerics) and its state buffers hold the slices' states one after
    /// another. [`check_call`] refuses `k >= rank`.
    pub batch: usize,
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
    /// The parameter under `rule` (a word passes its [`MatrixWord::VIEW`]).
    pub fn view(&self, rule: ViewRule) -> MatView {
        MatView::of(self.info.shape, rule)
    }
    /// Rows of the [`ViewRule::Flatten`] view.
    pub fn rows(&self) -> usize {
        self.view(ViewRule::Flatten).rows
    }
    /// Columns of the [`ViewRule::Flatten`] view.
    pub fn cols(&self) -> usize {
        self.view(ViewRule::Flatten).cols
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

pub(crate) fn take<E>(v: Option<&mut Vec<E>>) -> Vec<E> {
    v.map(std::mem::take).unwrap_or_default()
}

pub(crate) fn put<E>(v: Option<&mut Vec<E>>, buf: Vec<E>) {
    if let Some(v) = v {
        *v = buf;
    }
}

/// Runs primitive `P` at one call site: lends it the parameter's buffers named by `call`,
/// puts them back, and records its report in `ps.matrix`.
///
/// During a device step (`ps` linked to the device, see `crate::cuda::link`) the element-wise
/// operands live on the device: `orthogonalize` runs there when the backend has GEMMs; any other
/// primitive has its element-wise operands copied to the host, runs on the host, and has what it
/// wrote copied back (`param` and `grad` are then empty and read from the device).
pub fn run<E: Float, P: Primitive<E> + 'static>(
    cfg: &P::Config,
    phase: Phase,
    call: Call<'_>,
    ps: &mut ParamState<E>,
    param: &[E],
    grad: &[E],
    info: ParamInfo<'_>,
) -> Report {
    if let Some(link) = ps.device.get().cloned() {
        return crate::cuda::barrier::run_linked::<E, P>(&*link, cfg, phase, call, ps, info);
    }
    let site = Site {
        phase,
        call,
        param,
        grad,
        info,
    };
    run_host::<E, P>(cfg, site, ps)
}

/// What [`run`] is given of one call of a primitive, but its configuration and the
/// parameter's state.
pub(crate) struct Site<'a, E> {
    /// When it runs.
    pub phase: Phase,
    /// The call site: which buffers it uses.
    pub call: Call<'a>,
    /// The parameter's values (empty when not read).
    pub param: &'a [E],
    /// The gradient (empty when not read).
    pub grad: &'a [E],
    /// The parameter.
    pub info: ParamInfo<'a>,
}

/// [`run`] on host buffers (per slice when [`Call::batch`] is not 0).
pub(crate) fn run_host<E: Float, P: Primitive<E>>(
    cfg: &P::Config,
    site: Site<'_, E>,
    ps: &mut ParamState<E>,
) -> Report {
    let call = site.call;
    if call.batch > 0 {
        return batch::run_batched::<E, P>(cfg, site, ps);
    }
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
        let (input, basis_q) = inputs(&call, ps, site.param, site.grad);
        P::apply(
            cfg,
            Io {
                phase: site.phase,
                input,
                out: &mut out,
                state: &mut state,
                basis_q,
                rotated: &mut rotated,
                info: site.info,
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

/// The element-wise input and the eigenbasis `q` of `call` (empty when absent).
pub(crate) fn inputs<'a, E>(
    call: &Call<'_>,
    ps: &'a ParamState<E>,
    param: &'a [E],
    grad: &'a [E],
) -> (&'a [E], &'a [E]) {
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
    (input, basis_q)
}

/// Broadcasts per-row (`row`) or per-column scratch buffer `line` of `ps` into element-wise
/// scratch buffer `out` (`rows × cols`, row-major), as [`broadcast`]; on the device during a
/// device step. Indices out of range do nothing.
pub fn broadcast_temp<E: Float>(
    ps: &mut ParamState<E>,
    line: usize,
    out: usize,
    row: bool,
    cols: usize,
) {
    if let Some(link) = ps.device.get() {
        let l = ps.temps.get(line).map_or(&[][..], |v| &v[..]);
        link.broadcast(l, out, row, cols);
        return;
    }
    let mut b = take(ps.temps.get_mut(out));
    broadcast(
        ps.temps.get(line).map_or(&[][..], |v| &v[..]),
        &mut b,
        row,
        cols,
    );
    put(ps.temps.get_mut(out), b);
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

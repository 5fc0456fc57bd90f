//! Fused kernels and the staged executor.
//!
//! A rule compiles to one or more *stages*. Each stage is one generated loop over the raw
//! buffers of a parameter: it reads each input stream once, writes each output stream once, and
//! may accumulate per-tensor reductions (in `f64`). Between stages sit *barriers*: matrix work on
//! whole tensors (Newton–Schulz, Kronecker factors, rotations) or the combination of reductions
//! across all parameters (global-norm clipping). A purely element-wise rule such as AdamW is a
//! single stage and a single loop.
//!
//! Loops are `#[inline(always)]` bodies instantiated inside `#[target_feature]` wrappers
//! ([`dispatch`]), so one source is compiled for AVX-512, AVX2+FMA and baseline x86-64 and the
//! best is chosen at run time (`is_x86_feature_detected!`, cached by std) — no build flags.
//!
//! The executor runs stage `k` of every parameter in one dispatch: small steps inline, large
//! ones cut into [`CHUNK`]-element pieces over rayon; then every parameter's barrier `k`
//! (in parallel across parameters); then stage `k + 1`.

use crate::lowp::q8::{self, Q8Mut};
use crate::lowp::Narrow;
use crate::scratch::{List, Scratch};
use crate::Float;
use rayon::prelude::*;
use smallvec::SmallVec;

/// Declares a kind of fused loop from one parameter list: the trait `$tr` that generated code
/// implements (`fn run`, an `#[inline(always)]` loop), the type-erased entry point `$alias`
/// and the dispatcher `$name`, which runs `K: $tr<E>` with the widest SIMD instruction set
/// this CPU supports: `K::run` is instantiated inside one `#[target_feature]` wrapper per
/// instruction set (AVX-512, AVX2+FMA) and the baseline, and the best is chosen at run time
/// (`is_x86_feature_detected!`, cached by std).
macro_rules! fused_loop {
    (
        $(#[$tdoc:meta])*
        pub trait $tr:ident {
            $(#[$rdoc:meta])*
            fn run($($a:ident: $t:ty),* $(,)?);
        }
        $(#[$fdoc:meta])*
        pub type $alias:ident;
        $(#[$ddoc:meta])*
        pub fn $name:ident;
    ) => {
        $(#[$tdoc])*
        pub trait $tr<E: Float> {
            $(#[$rdoc])*
            #[allow(clippy::too_many_arguments)]
            fn run($($a: $t),*);
        }

        $(#[$fdoc])*
        pub type $alias<E> = fn($($t),*);

        $(#[$ddoc])*
        #[inline]
        #[allow(clippy::too_many_arguments)]
        pub fn $name<E: Float, K: $tr<E>>($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512<E: Float, K: $tr<E>>($($a: $t),*) {
                    K::run($($a),*);
                }

                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<E: Float, K: $tr<E>>($($a: $t),*) {
                    K::run($($a),*);
                }

                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked on the line above).
                    return unsafe { avx512::<E, K>($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA (checked on the line above).
                    return unsafe { avx2::<E, K>($($a),*) };
                }
            }
            K::run($($a),*);
        }
    };
}

fused_loop! {
    /// A fused element-wise loop, implemented by code that `optimizer!` generates.
    ///
    /// `s`: hoisted scalars (already converted from `f64`); `p`: the parameter; `g`: the gradient;
    /// `st`: the other streams (state buffers and temporaries) in the order the stage was planned
    /// with; `red`: per-tensor reduction accumulators, added to (not overwritten: each continues
    /// the running sum it holds, element by element, so that a chunk run as several calls sums
    /// in the same order as one call). All slices have the same length (one chunk of one
    /// parameter).
    pub trait Kernel {
        /// Runs the loop. Must be `#[inline(always)]` so that [`dispatch`] can compile it per SIMD
        /// level.
        fn run(s: &[E], p: &mut [E], g: &[E], st: &mut [&mut [E]], red: &mut [f64]);
    }
    /// A type-erased kernel entry point: `dispatch::<E, K>` for some kernel `K`.
    pub type KernelFn;
    /// Runs kernel `K` with the widest SIMD instruction set this CPU supports.
    pub fn dispatch;
}

/// Where a loop over low-precision streams runs: the key of this parameter's step (from
/// [`crate::lowp::param_key`]) and the index, in the whole parameter, of the first element of
/// the slices it is given (the executor cuts tensors into chunks), so that stochastic rounding
/// draws the same number for the same element however the work is split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LowAt {
    /// [`crate::lowp::param_key`] of the parameter's name and step.
    pub key: u64,
    /// Index of the slices' first element in the parameter.
    pub base: u64,
}

fused_loop! {
    /// A fused loop some of whose streams are stored in 16 bits (`bf16`/`f16` state, see
    /// [`crate::lowp`]) or 8 bits (`q8`/`uq8`, see [`crate::lowp::q8`]), implemented by code that
    /// `optimizer!` generates: as [`Kernel`], plus `lo`, the 16-bit streams, and `q`, the 8-bit
    /// ones (their codes and block scales), in the order the stage was planned with, and `at`.
    /// The slices start at a multiple of [`q8::BLOCK`] in the parameter, so the loop quantises
    /// whole blocks (the last one of a parameter may be shorter).
    pub trait LowKernel {
        /// Runs the loop. Must be `#[inline(always)]` (see [`Kernel::run`]).
        fn run(
            s: &[E],
            p: &mut [E],
            g: &[E],
            st: &mut [&mut [E]],
            lo: &mut [&mut [crate::lowp::Bits]],
            q: &mut [Q8Mut<'_>],
            at: LowAt,
            red: &mut [f64],
        );
    }
    /// A type-erased low-precision kernel entry point: `dispatch_low::<E, K>` for some `K`.
    pub type LowKernelFn;
    /// Runs low-precision kernel `K` with the widest SIMD instruction set this CPU supports.
    pub fn dispatch_low;
}

fused_loop! {
    /// A fused loop over a parameter and gradient stored in 16 bits (`bf16` or `f16` bits,
    /// [`crate::narrow`]), implemented by code that `optimizer!` generates for every loop of a
    /// rule that reads the parameter and gradient only inside its loops: as [`LowKernel`], with
    /// `p` and `g` as raw bits. The loop widens them exactly to `E` per staged block of
    /// [`q8::BLOCK`] elements and rounds the parameter's block to nearest, ties to even, after
    /// it ([`crate::lowp::load_half_block`], [`crate::lowp::store_half_block`]), so that the
    /// result is bit for bit the loop on widened copies, rounded once. Which of `bf16` and
    /// `f16` is the implementing type's (one instance per type), see [`NarrowPick`].
    pub trait NarrowKernel {
        /// Runs the loop. Must be `#[inline(always)]` (see [`Kernel::run`]).
        fn run(
            s: &[E],
            p: &mut [crate::lowp::Bits],
            g: &[crate::lowp::Bits],
            st: &mut [&mut [E]],
            lo: &mut [&mut [crate::lowp::Bits]],
            q: &mut [Q8Mut<'_>],
            at: LowAt,
            red: &mut [f64],
        );
    }
    /// A type-erased 16-bit-parameter kernel entry point: `dispatch_narrow::<E, K>` for some `K`.
    pub type NarrowKernelFn;
    /// Runs 16-bit-parameter kernel `K` with the widest SIMD instruction set this CPU supports.
    pub fn dispatch_narrow;
}

/// The 16-bit-parameter entry point of loop `k` of one rule variant, for the parameter's
/// storage type and arithmetic (`reciprocal`: the `R = true` instance); `None` past the
/// variant's loops. Generated per variant (`__narrow_R_V`), reached only through
/// `DslOptimizer::narrow_kernels`, so the instances exist only for optimizers that are
/// stepped with 16-bit parameters.
pub type NarrowPick<E> =
    fn(k: usize, dtype: crate::lowp::StateDtype, reciprocal: bool) -> Option<NarrowKernelFn<E>>;

/// The [`NarrowPick`] of a rule with no 16-bit entry points (always `None`).
pub fn no_narrow<E>(_: usize, _: crate::lowp::StateDtype, _: bool) -> Option<NarrowKernelFn<E>> {
    None
}

/// The 16-bit entry points of one parameter's loops: its variant's [`NarrowPick`] and the
/// parameter's arithmetic (`ParamState::reciprocals` when it was prepared).
pub(crate) struct NarrowKernels<E> {
    /// The variant's entry points.
    pub pick: NarrowPick<E>,
    /// Whether the reciprocal instances run.
    pub reciprocal: bool,
}

impl<E> NarrowKernels<E> {
    /// Loop `k`'s entry point for `dtype` (`None`: the loop is not run on the 16-bit data).
    pub(crate) fn get(
        &self,
        k: usize,
        dtype: crate::lowp::StateDtype,
    ) -> Option<NarrowKernelFn<E>> {
        (self.pick)(k, dtype, self.reciprocal)
    }
}

/// A job's 16-bit parameter and gradient (its job was prepared with empty `E` slices) and the
/// entry points its loops run through.
pub(crate) struct NarrowJob<'a, E> {
    pub bits: Narrow<'a>,
    pub kernels: NarrowKernels<E>,
}

/// The elements of `bufs` at the distinct indices `ks`, in `ks`' order (`None` for an index
/// past the end): several state buffers of one parameter borrowed at once, in a kernel's
/// stream order, without allocating. `O(bufs.len() × N)`.
pub fn pick_mut<T, const N: usize>(bufs: &mut [T], ks: [usize; N]) -> [Option<&mut T>; N] {
    let mut out: [Option<&mut T>; N] = std::array::from_fn(|_| None);
    for (i, b) in bufs.iter_mut().enumerate() {
        if let Some(pos) = ks.iter().position(|&k| k == i) {
            out[pos] = Some(b);
        }
    }
    out
}

/// The `kernel` of a [`KernelCall`] whose loop is its [`LowCall`]: never called.
pub fn no_kernel<E>(_: &[E], _: &mut [E], _: &[E], _: &mut [&mut [E]], _: &mut [f64]) {}

/// A hoisted scalar as generated code stores it: `v` itself, or, when `round` (the optimizer's
/// `ScalarPrecision::Param`), `v` rounded to the parameter's type, so that every host
/// operation behaves as if computed in that type.
#[inline]
pub fn round_scalar<E: Float>(round: bool, v: f64) -> f64 {
    if round {
        E::of_f64(v).as_f64()
    } else {
        v
    }
}

/// Inline capacity for a stage's hoisted scalars.
pub type Scalars<E> = SmallVec<[E; 16]>;

/// The streams of a stage other than the parameter and the gradient.
pub type StateRefs<'a, E> = SmallVec<[&'a mut [E]; 6]>;

/// The low-precision streams of a stage.
pub type LowRefs<'a> = SmallVec<[&'a mut [crate::lowp::Bits]; 4]>;

/// The 8-bit quantised streams of a stage.
pub type Q8Refs<'a> = SmallVec<[Q8Mut<'a>; 2]>;

/// The low-precision half of a [`KernelCall`]: the loop that runs instead of its `kernel`, its
/// 16-bit and 8-bit streams and the key of the parameter's step.
pub struct LowCall<'a, E> {
    /// The loop (a `dispatch_low::<E, K>` instance).
    pub kernel: LowKernelFn<E>,
    /// The 16-bit streams, in the kernel's order.
    pub bufs: LowRefs<'a>,
    /// The 8-bit block-quantised streams (`q8`/`uq8`), in the kernel's order.
    pub q8: Q8Refs<'a>,
    /// [`crate::lowp::param_key`] of the parameter's name and step.
    pub key: u64,
}

/// Most reduction accumulators one stage may have (checked by the macro at compile time).
pub const MAX_REDUCTIONS: usize = optim_abi::MAX_REDUCTIONS;

/// One stage of one parameter, ready to run.
pub struct KernelCall<'a, E> {
    /// The loop (a `dispatch::<E, K>` instance).
    pub kernel: KernelFn<E>,
    /// Hoisted scalars, in the kernel's order.
    pub scalars: Scalars<E>,
    /// The parameter buffer.
    pub param: &'a mut [E],
    /// The gradient buffer.
    pub grad: &'a [E],
    /// Other streams, in the kernel's order.
    pub bufs: StateRefs<'a, E>,
    /// Number of reduction accumulators the kernel adds to.
    pub reductions: usize,
    /// `(local, global)`: reduction `local` of this stage contributes to global total `global`
    /// (summed over all parameters before the next stage).
    pub globals: GlobalMap,
    /// The loop's CUDA twin (`None` for a hand-written kernel or a no-op), which a device step
    /// launches instead of `kernel`.
    pub cuda: Option<&'static crate::cuda::CudaKernelSource>,
    /// When the stage stores state in 16 bits: its loop and streams (`kernel` is then
    /// [`no_kernel`] and is not called).
    pub low: Option<LowCall<'a, E>>,
}

/// One parameter's share of a step under one rule: a sequence of stages with barriers between
/// them. Built by the generated `prepare` function, which has already advanced the parameter's
/// step count and created its state.
pub trait StagedJob<E: Float>: Send {
    /// Number of stages (loops) of this rule.
    fn stages(&self) -> usize;
    /// Stage `k`'s loop. `globals` holds the global reduction totals of earlier stages.
    fn kernel(&mut self, k: usize, globals: &[f64]) -> KernelCall<'_, E>;
    /// Receives this parameter's reduction totals of stage `k`.
    fn reduced(&mut self, k: usize, sums: &[f64]);
    /// Whether [`pre_barrier`](Self::pre_barrier) has work (the default: no).
    fn has_pre_barrier(&self) -> bool {
        false
    }
    /// Whole-tensor work before stage 0, on the raw gradient or parameter (a matrix primitive
    /// whose input no loop computes). The default does nothing.
    fn pre_barrier(&mut self) {}
    /// Whole-tensor work between stage `k` and `k + 1` (matrix primitives).
    fn barrier(&mut self, k: usize);
    /// After the last stage (scalar state writes).
    fn finish(&mut self);
}

/// A boxed job: what a hand-written [`DslOptimizer`](crate::DslOptimizer) may name as its
/// `Job` type (generated optimizers name an enum of their rules' jobs, which a step keeps in
/// a list without allocating per parameter).
pub type Job<'a, E> = Box<dyn StagedJob<E> + 'a>;

impl<E: Float, J: StagedJob<E> + ?Sized> StagedJob<E> for Box<J> {
    fn stages(&self) -> usize {
        (**self).stages()
    }
    fn kernel(&mut self, k: usize, globals: &[f64]) -> KernelCall<'_, E> {
        (**self).kernel(k, globals)
    }
    fn reduced(&mut self, k: usize, sums: &[f64]) {
        (**self).reduced(k, sums);
    }
    fn has_pre_barrier(&self) -> bool {
        (**self).has_pre_barrier()
    }
    fn pre_barrier(&mut self) {
        (**self).pre_barrier();
    }
    fn barrier(&mut self, k: usize) {
        (**self).barrier(k);
    }
    fn finish(&mut self) {
        (**self).finish();
    }
}

/// Global reduction map of a [`KernelCall`].
pub type GlobalMap = SmallVec<[(usize, usize); 2]>;

impl<'a, E: Float> KernelCall<'a, E> {
    /// A call that does nothing (for out-of-range stages).
    pub fn noop(param: &'a mut [E], grad: &'a [E]) -> Self {
        fn nothing<E>(_: &[E], _: &mut [E], _: &[E], _: &mut [&mut [E]], _: &mut [f64]) {}
        KernelCall {
            kernel: nothing::<E>,
            scalars: SmallVec::new(),
            param: &mut param[..0],
            grad: &grad[..0],
            bufs: SmallVec::new(),
            reductions: 0,
            globals: SmallVec::new(),
            cuda: None,
            low: None,
        }
    }
}

/// A job that does nothing (a parameter routed to no rule; cannot happen with a catch-all).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyJob;

impl<E: Float> StagedJob<E> for EmptyJob {
    fn stages(&self) -> usize {
        0
    }
    fn kernel(&mut self, _: usize, _: &[f64]) -> KernelCall<'_, E> {
        KernelCall::noop(&mut [], &[])
    }
    fn reduced(&mut self, _: usize, _: &[f64]) {}
    fn barrier(&mut self, _: usize) {}
    fn finish(&mut self) {}
}

/// Elements per work item when a stage is split over threads: 32 Ki elements keeps every
/// stream of a chunk (128 KiB each in `f32`) resident in L2 while the loop runs. A loop with
/// reductions always runs chunk by chunk and adds the chunks' totals in order, also when it
/// runs on the calling thread, so a reduction's value does not depend on the thread count or
/// on the other parameters of the step.
pub const CHUNK: usize = optim_abi::CHUNK;

// 8-bit state is quantised in blocks; chunks must hold whole blocks
const _: () = assert!(CHUNK.is_multiple_of(q8::BLOCK));

/// Below this many elements in a whole stage, everything runs on the calling thread (waking
/// the pool costs more than the work).
pub const PARALLEL_THRESHOLD: usize = 1 << 16;

/// Most global reductions per rule (checked by the macro at compile time).
pub const MAX_GLOBALS: usize = optim_abi::MAX_GLOBALS;

struct Item<'a, E> {
    call: usize,
    kernel: KernelFn<E>,
    /// The low-precision loop and the parameter's step key, when the stage has one.
    low: Option<(LowKernelFn<E>, u64)>,
    lo: LowRefs<'a>,
    q8: Q8Refs<'a>,
    /// Index of this item's first element in its parameter.
    base: usize,
    scalars: &'a [E],
    param: &'a mut [E],
    grad: &'a [E],
    bufs: StateRefs<'a, E>,
    /// The piece of a 16-bit parameter and its gradient (then `param` and `grad` are empty),
    /// with the loop's 16-bit entry point, which runs instead of `kernel` and `low`.
    narrow: Option<(Narrow<'a>, NarrowKernelFn<E>)>,
    red: [f64; MAX_REDUCTIONS],
    nred: usize,
}

impl<E: Float> Item<'_, E> {
    fn run(&mut self) {
        let red = &mut self.red[..self.nred];
        let at = |key| LowAt {
            key,
            base: self.base as u64,
        };
        if let Some((nw, kernel)) = self.narrow.take() {
            let key = self.low.map_or(0, |(_, key)| key);
            let (s, bufs, lo, q8) = (self.scalars, &mut self.bufs, &mut self.lo, &mut self.q8);
            kernel(s, nw.param, nw.grad, bufs, lo, q8, at(key), red);
            return;
        }
        match self.low {
            Some((kernel, key)) => {
                kernel(
                    self.scalars,
                    self.param,
                    self.grad,
                    &mut self.bufs,
                    &mut self.lo,
                    &mut self.q8,
                    at(key),
                    red,
                );
            }
            None => (self.kernel)(self.scalars, self.param, self.grad, &mut self.bufs, red),
        }
    }
}

/// Each slice of `bufs` cut after `n` elements (or whole, if shorter): the heads and the
/// tails, in order.
fn split_each<'a, T: 'a, A: smallvec::Array<Item = &'a mut [T]>>(
    bufs: SmallVec<A>,
    n: usize,
) -> (SmallVec<A>, SmallVec<A>) {
    let mut heads = SmallVec::new();
    let mut tails = SmallVec::new();
    for b in bufs {
        let (a, rest) = b.split_at_mut(n.min(b.len()));
        heads.push(a);
        tails.push(rest);
    }
    (heads, tails)
}

/// Cuts call `ci` (of the 16-bit parameter `narrow`, if any) into work items of at most
/// `chunk` elements and hands them to `sink`, in order.
fn cut<'a, E: Float>(
    ci: usize,
    c: &'a mut KernelCall<'_, E>,
    mut narrow: Option<(Narrow<'a>, NarrowKernelFn<E>)>,
    chunk: usize,
    sink: &mut impl FnMut(Item<'a, E>),
) {
    let nred = c.reductions.min(MAX_REDUCTIONS);
    let (kernel, scalars) = (c.kernel, &c.scalars[..]);
    let (low, mut lo, mut qs): (_, LowRefs<'a>, Q8Refs<'a>) = match &mut c.low {
        Some(l) => (
            Some((l.kernel, l.key)),
            l.bufs.iter_mut().map(|b| &mut **b).collect(),
            l.q8.iter_mut()
                .map(|b| Q8Mut {
                    map: b.map,
                    codes: &mut *b.codes,
                    scales: &mut *b.scales,
                })
                .collect(),
        ),
        None => (None, LowRefs::new(), Q8Refs::new()),
    };
    let mut param: &mut [E] = &mut *c.param;
    let mut grad: &[E] = c.grad;
    let mut bufs: StateRefs<'_, E> = c.bufs.iter_mut().map(|b| &mut **b).collect();
    let mut base = 0;
    loop {
        let len = narrow.as_ref().map_or(param.len(), |(w, _)| w.param.len());
        let n = len.min(chunk);
        if n == len {
            sink(Item {
                call: ci,
                kernel,
                low,
                lo,
                q8: qs,
                base,
                scalars,
                param,
                grad,
                bufs,
                narrow,
                red: [0.0; MAX_REDUCTIONS],
                nred,
            });
            return;
        }
        let (w0, w1) = match narrow {
            Some((w, f)) => {
                let (a, b) = w.split_at(n);
                (Some((a, f)), Some((b, f)))
            }
            None => (None, None),
        };
        let (p0, p1) = param.split_at_mut(n.min(param.len()));
        let (g0, g1) = grad.split_at(n.min(grad.len()));
        let (heads, tails) = split_each(bufs, n);
        let (lo_heads, lo_tails) = split_each(lo, n);
        // `chunk` is a multiple of the quantisation block, so every head holds whole blocks
        let mut q_heads = Q8Refs::new();
        let mut q_tails = Q8Refs::new();
        for b in qs {
            let (a, rest) = b.codes.split_at_mut(n.min(b.codes.len()));
            let nb = q8::blocks(n).min(b.scales.len());
            let (sa, srest) = b.scales.split_at_mut(nb);
            q_heads.push(Q8Mut {
                map: b.map,
                codes: a,
                scales: sa,
            });
            q_tails.push(Q8Mut {
                map: b.map,
                codes: rest,
                scales: srest,
            });
        }
        sink(Item {
            call: ci,
            kernel,
            low,
            lo: lo_heads,
            q8: q_heads,
            base,
            scalars,
            param: p0,
            grad: g0,
            bufs: heads,
            narrow: w0,
            red: [0.0; MAX_REDUCTIONS],
            nred,
        });
        narrow = w1;
        param = p1;
        grad = g1;
        bufs = tails;
        lo = lo_tails;
        qs = q_tails;
        base += n;
    }
}

/// The global reductions (`global_norm`, `clip_global_norm`) one loop of one parameter
/// contributed to: its partial sums and which ids it produced.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GlobalContribution {
    /// Partial sum per global id (0 where not produced).
    pub sums: [f64; MAX_GLOBALS],
    /// Which global ids this contribution produced.
    pub produced: [bool; MAX_GLOBALS],
}

/// How the executor combines the step's global reductions after each loop: the totals over
/// every contribution (one per parameter, in the step's order), and which ids were produced.
/// The default sums in order; data-parallel training sums over every rank in a canonical
/// order (see `optim_runtime::StepSync`).
pub type GlobalSums<'s> =
    &'s mut dyn FnMut(&[GlobalContribution]) -> Result<GlobalContribution, crate::OptimError>;

/// Sums contributions in order.
pub fn sum_in_order(contributions: &[GlobalContribution]) -> GlobalContribution {
    let mut total = GlobalContribution::default();
    for c in contributions {
        for g in 0..MAX_GLOBALS {
            if c.produced[g] {
                total.sums[g] += c.sums[g];
                total.produced[g] = true;
            }
        }
    }
    total
}

/// The loops a step runs: the most stages of any of `jobs`, and at least `at_least` (the count
/// every process of a data-parallel step agreed on).
pub(crate) fn stage_count<E: Float>(jobs: &[&mut dyn StagedJob<E>], at_least: usize) -> usize {
    jobs.iter()
        .map(|j| j.stages())
        .max()
        .unwrap_or(0)
        .max(at_least)
}

/// Runs one step's jobs: stage by stage across all parameters, with the global totals
/// combined by `global_sums` after each of `stages` loops (at least the jobs' own count; every
/// process of a data-parallel step passes the same number, so that each combines the same
/// number of times, also with no jobs). The step's lists live in `scratch`'s memory: a step
/// like the last one allocates nothing here.
///
/// The jobs are driven as trait objects (a few calls per parameter and loop): this driver and
/// its parallel barrier work are compiled once per element type, not once per optimizer; each
/// loop itself is the job's monomorphic kernel, called through its function pointer as before.
///
/// `narrow[i]`, where present and `Some`, is job `i`'s 16-bit parameter and gradient (its job
/// was prepared with empty `E` slices): its loops run through their 16-bit entry points
/// ([`NarrowKernel`]) on the bits, cut into chunks as any other parameter.
///
/// # Errors
/// What `global_sums` returns; the step is then incomplete (earlier loops have run).
pub(crate) fn execute_with<E: Float, J: StagedJob<E>>(
    jobs: &mut [J],
    narrow: &mut [Option<NarrowJob<'_, E>>],
    stages: usize,
    global_sums: GlobalSums<'_>,
    scratch: &mut Scratch,
) -> Result<(), crate::OptimError> {
    let mut erased: Vec<&mut dyn StagedJob<E>> = scratch.take(List::Erased);
    erased.reserve(jobs.len());
    erased.extend(jobs.iter_mut().map(|j| j as &mut dyn StagedJob<E>));
    let ran = execute_erased(&mut erased, narrow, stages, global_sums, scratch);
    scratch.give(List::Erased, erased);
    ran
}

/// [`execute_with`] on the jobs as trait objects.
fn execute_erased<E: Float>(
    jobs: &mut [&mut dyn StagedJob<E>],
    narrow: &mut [Option<NarrowJob<'_, E>>],
    stages: usize,
    global_sums: GlobalSums<'_>,
    scratch: &mut Scratch,
) -> Result<(), crate::OptimError> {
    let max_stages = stage_count(jobs, stages);
    let mut globals = [0.0f64; MAX_GLOBALS];
    barriers(jobs, None, scratch);
    for k in 0..max_stages {
        // one per job, in the jobs' order (empty for a job with fewer loops), so that the
        // combiner sees every parameter at every loop
        let mut contributions: Vec<GlobalContribution> = scratch.take(List::Contributions);
        contributions.resize(jobs.len(), GlobalContribution::default());
        let mut sums: Vec<[f64; MAX_REDUCTIONS]> = scratch.take(List::Sums);
        sums.resize(jobs.len(), [0.0; MAX_REDUCTIONS]);
        {
            let mut calls: Vec<(usize, KernelCall<'_, E>)> = scratch.take(List::Calls);
            calls.reserve(jobs.len()); // a filtered `extend` would grow it step by step
            calls.extend(
                jobs.iter_mut()
                    .enumerate()
                    .filter(|(_, j)| j.stages() > k)
                    .map(|(i, j)| (i, j.kernel(k, &globals))),
            );
            let mut per_call: Vec<[f64; MAX_REDUCTIONS]> = scratch.take(List::Totals);
            run_calls(k, &mut calls, &mut per_call, narrow, scratch);
            for ((i, call), red) in calls.iter().zip(&per_call) {
                let c = &mut contributions[*i];
                for &(l, g) in &call.globals {
                    if g < MAX_GLOBALS && l < MAX_REDUCTIONS {
                        c.sums[g] += red[l];
                        c.produced[g] = true;
                    }
                }
                sums[*i] = *red;
            }
            scratch.give(List::Totals, per_call);
            scratch.give(List::Calls, calls);
        }
        let total = global_sums(&contributions);
        scratch.give(List::Contributions, contributions);
        let total = total?;
        for (j, s) in jobs.iter_mut().zip(&sums) {
            if j.stages() > k {
                j.reduced(k, s);
            }
        }
        scratch.give(List::Sums, sums);
        for g in 0..MAX_GLOBALS {
            if total.produced[g] {
                globals[g] = total.sums[g];
            }
        }
        if k + 1 < max_stages {
            barriers(jobs, Some(k), scratch);
        }
    }
    for j in jobs.iter_mut() {
        j.finish();
    }
    Ok(())
}

/// The whole-tensor work of every job that has some: before the first loop (`after` is
/// `None`), or after loop `k` for the jobs with a later loop. In parallel across parameters
/// when more than one has work.
fn barriers<'j, E: Float>(
    jobs: &mut [&'j mut (dyn StagedJob<E> + 'j)],
    after: Option<usize>,
    scratch: &mut Scratch,
) {
    let mut pending: Vec<&mut (dyn StagedJob<E> + 'j)> = scratch.take(List::Pending);
    pending.extend(
        jobs.iter_mut()
            .filter(|j| match after {
                None => j.has_pre_barrier(),
                Some(k) => j.stages() > k + 1,
            })
            .map(|j| &mut **j),
    );
    let work = |j: &mut &mut (dyn StagedJob<E> + 'j)| match after {
        None => j.pre_barrier(),
        Some(k) => j.barrier(k),
    };
    if pending.len() > 1 {
        pending.par_iter_mut().for_each(work);
    } else {
        pending.iter_mut().for_each(work);
    }
    scratch.give(List::Pending, pending);
}

/// Runs one call on this thread. A loop with reductions runs in [`CHUNK`]-element pieces whose
/// totals are added in order, exactly as the parallel path adds its work items' totals.
fn run_inline<'a, E: Float>(
    c: &'a mut KernelCall<'_, E>,
    narrow: Option<(Narrow<'a>, NarrowKernelFn<E>)>,
    red: &mut [f64; MAX_REDUCTIONS],
) {
    let n = c.reductions.min(MAX_REDUCTIONS);
    if c.low.is_none() && narrow.is_none() && (n == 0 || c.param.len() <= CHUNK) {
        (c.kernel)(&c.scalars, c.param, c.grad, &mut c.bufs, &mut red[..n]);
        return;
    }
    let chunk = if n == 0 { usize::MAX } else { CHUNK };
    cut(0, c, narrow, chunk, &mut |mut it: Item<'_, E>| {
        it.run();
        for (r, p) in red.iter_mut().zip(&it.red) {
            *r += p;
        }
    });
}

/// Runs stage `k`'s loops for several parameters; `out` gets each call's reduction totals.
fn run_calls<E: Float>(
    k: usize,
    calls: &mut [(usize, KernelCall<'_, E>)],
    out: &mut Vec<[f64; MAX_REDUCTIONS]>,
    narrow: &mut [Option<NarrowJob<'_, E>>],
    scratch: &mut Scratch,
) {
    let len = |i: usize, c: &KernelCall<'_, E>| match narrow.get(i) {
        Some(Some(w)) => w.bits.param.len(),
        _ => c.param.len(),
    };
    let total: usize = calls.iter().map(|(i, c)| len(*i, c)).sum();
    out.clear();
    out.resize(calls.len(), [0.0f64; MAX_REDUCTIONS]);
    // each call's 16-bit parameter and its loop's entry point, lent for this loop (a job's
    // calls are in the jobs' order); without an entry point (the step's checks refuse a rule
    // with none for its first loop) the loop runs on the job's empty `E` slices: not at all
    let mut lent = narrow.iter_mut().enumerate();
    let mut take = |i: usize| {
        let w = lent.by_ref().find(|(j, _)| *j == i)?.1.as_mut()?;
        let f = w.kernels.get(k, w.bits.dtype)?;
        Some((w.bits.reborrow(), f))
    };
    if total < PARALLEL_THRESHOLD || rayon::current_num_threads() <= 1 {
        for ((i, c), red) in calls.iter_mut().zip(out.iter_mut()) {
            run_inline(c, take(*i), red);
        }
        return;
    }
    let mut items: Vec<Item<'_, E>> = scratch.take(List::Items);
    items.reserve(total / CHUNK + calls.len());
    for (ci, (i, c)) in calls.iter_mut().enumerate() {
        cut(ci, c, take(*i), CHUNK, &mut |it| items.push(it));
    }
    items.par_iter_mut().for_each(Item::run);
    for it in &items {
        for (o, r) in out[it.call].iter_mut().zip(&it.red) {
            *o += r;
        }
    }
    scratch.give(List::Items, items);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_mut_lends_the_asked_elements_in_the_asked_order() {
        let mut bufs = [10, 11, 12, 13];
        let [a, b, c] = pick_mut(&mut bufs, [3, 0, 7]);
        assert_eq!((a.copied(), b.copied(), c), (Some(13), Some(10), None));
        for x in pick_mut(&mut bufs, [2, 1]).into_iter().flatten() {
            *x += 100;
        }
        assert_eq!(bufs, [10, 111, 112, 13]);
        assert!(pick_mut::<u8, 0>(&mut [], []).is_empty());
    }
}

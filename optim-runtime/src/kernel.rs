//! Fused element-wise kernels: the trait generated kernels implement, run-time SIMD dispatch, and
//! the executor that runs one step's kernels over all parameters in a single parallel dispatch.
//!
//! A generated kernel is one loop over the raw buffers of one parameter: it reads each input and
//! state element once and writes each output and state element once. Its body is
//! `#[inline(always)]` and is instantiated inside `#[target_feature]` wrappers below, so the same
//! source is compiled for AVX-512, AVX2+FMA and baseline x86-64 and the best one is chosen at run
//! time (`is_x86_feature_detected!`, cached by std) — no build flags needed.

use crate::Float;
use rayon::prelude::*;
use smallvec::SmallVec;

/// A fused element-wise kernel, implemented by code that `optimizer!` generates.
///
/// `s` holds the step's hoisted scalars (already converted from `f64`), `p` the parameter,
/// `g` the gradient and `st` the state buffers in the slot order the kernel was planned with.
/// All slices have the same length (one chunk of one parameter).
pub trait Kernel<E: Float> {
    /// Runs the loop. Must be `#[inline(always)]` so that [`dispatch`] can compile it per SIMD
    /// level.
    fn run(s: &[E], p: &mut [E], g: &[E], st: &mut [&mut [E]]);
}

/// A type-erased kernel entry point: `dispatch::<E, K>` for some kernel `K`.
pub type KernelFn<E> = fn(&[E], &mut [E], &[E], &mut [&mut [E]]);

/// Runs kernel `K` with the widest SIMD instruction set this CPU supports.
#[inline]
pub fn dispatch<E: Float, K: Kernel<E>>(s: &[E], p: &mut [E], g: &[E], st: &mut [&mut [E]]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked on the line above).
            return unsafe { x86::run_avx512::<E, K>(s, p, g, st) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked on the line above).
            return unsafe { x86::run_avx2::<E, K>(s, p, g, st) };
        }
    }
    K::run(s, p, g, st);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Float, Kernel};

    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) unsafe fn run_avx512<E: Float, K: Kernel<E>>(
        s: &[E],
        p: &mut [E],
        g: &[E],
        st: &mut [&mut [E]],
    ) {
        K::run(s, p, g, st);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2<E: Float, K: Kernel<E>>(
        s: &[E],
        p: &mut [E],
        g: &[E],
        st: &mut [&mut [E]],
    ) {
        K::run(s, p, g, st);
    }
}

/// Inline capacity for a job's hoisted scalars.
pub type Scalars<E> = SmallVec<[E; 16]>;

/// One parameter's share of a step: which kernel to run, with which scalars and state buffers.
/// Built by the generated `prepare` function.
pub struct Job<'a, E> {
    /// The kernel (a `dispatch::<E, K>` instance), or `None` when the rule does no element-wise
    /// work for this parameter.
    pub kernel: Option<KernelFn<E>>,
    /// Hoisted scalars, in the kernel's order.
    pub scalars: Scalars<E>,
    /// State buffers, in the kernel's order.
    pub states: SmallVec<[&'a mut [E]; 6]>,
}

impl<E> Job<'_, E> {
    /// A job that does nothing.
    pub fn empty() -> Self {
        Job {
            kernel: None,
            scalars: SmallVec::new(),
            states: SmallVec::new(),
        }
    }
}

/// The state buffers of a [`Job`].
pub type StateRefs<'a, E> = SmallVec<[&'a mut [E]; 6]>;

/// A [`Job`] bound to its parameter and gradient.
pub struct Task<'a, E> {
    /// What to run.
    pub job: Job<'a, E>,
    /// The parameter buffer.
    pub param: &'a mut [E],
    /// The gradient buffer.
    pub grad: &'a [E],
}

/// Elements per work item when a step is split over threads: 32 Ki elements keeps every stream of
/// a chunk (128 KiB each in `f32`) resident in L2 while the kernel runs.
pub const CHUNK: usize = 1 << 15;

/// Below this many elements in a whole step, everything runs on the calling thread (the cost of
/// waking the pool exceeds the work).
pub const PARALLEL_THRESHOLD: usize = 1 << 16;

struct Item<'a, E> {
    kernel: KernelFn<E>,
    scalars: Scalars<E>,
    param: &'a mut [E],
    grad: &'a [E],
    states: SmallVec<[&'a mut [E]; 6]>,
}

/// Runs all tasks of one step: sequentially when the step is small, otherwise as one parallel
/// dispatch over [`CHUNK`]-sized pieces of every parameter (small parameters are one piece each,
/// large ones are split).
pub fn execute<E: Float>(tasks: Vec<Task<'_, E>>) {
    let total: usize = tasks.iter().map(|t| t.param.len()).sum();
    if total < PARALLEL_THRESHOLD || rayon::current_num_threads() <= 1 {
        for mut t in tasks {
            if let Some(k) = t.job.kernel {
                k(&t.job.scalars, t.param, t.grad, &mut t.job.states);
            }
        }
        return;
    }
    let mut items: Vec<Item<'_, E>> = Vec::with_capacity(total / CHUNK + tasks.len());
    for t in tasks {
        let Some(kernel) = t.job.kernel else { continue };
        let (scalars, mut param, mut grad, mut states) =
            (t.job.scalars, t.param, t.grad, t.job.states);
        loop {
            let n = param.len().min(CHUNK);
            if n == param.len() {
                items.push(Item {
                    kernel,
                    scalars,
                    param,
                    grad,
                    states,
                });
                break;
            }
            let (p0, p1) = param.split_at_mut(n);
            let (g0, g1) = grad.split_at(n);
            let mut heads = SmallVec::new();
            let mut tails = SmallVec::new();
            for s in states {
                let (a, b) = s.split_at_mut(n);
                heads.push(a);
                tails.push(b);
            }
            items.push(Item {
                kernel,
                scalars: scalars.clone(),
                param: p0,
                grad: g0,
                states: heads,
            });
            param = p1;
            grad = g1;
            states = tails;
        }
    }
    items.into_par_iter().for_each(|mut it| {
        (it.kernel)(&it.scalars, it.param, it.grad, &mut it.states);
    });
}

//! Allocations of a steady-state step on the slice path, counted by a global allocator that
//! counts the calling thread's allocations (the steps here stay below the executor's parallel
//! threshold, so all their work runs on the calling thread).
//!
//! A step with the same parameter names as the last one allocates nothing at all, whatever
//! the number of parameters: no name is copied, hashed or looked up in a map (the step reuses
//! the last step's sorted name order and finds every state in one ordered walk,
//! `optim_runtime`'s `lookup`), each parameter's staged job is a value in a list, not a box
//! (`DslOptimizer::Job` is the optimizer's enum of its rules' jobs), and every per-parameter
//! list of the step (entries, rules, states, jobs, each loop's calls and totals) reuses the
//! memory the last step left (`optim_runtime`'s `scratch`). Checked for 1 and 99 parameters,
//! for `f32`, `bf16` and 8-bit state, a scheduled learning rate, a reuse rule, per-tensor and
//! global reductions (two loops per step) and matrix work between loops (Muon), and for `bf16`
//! and `f16` parameters (`update_mixed_in_modules`).

use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamW8bit, AdamWBf16, AdamWConfig, Lamb, Muon, Prodigy};
use optim_dsl::{update_mixed_in_modules, MixedSlice, NarrowSlice, StateDtype};

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread's counter may already be gone while the thread exits
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to `System` unchanged; counting touches no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

/// One parameter of `numel` elements per entry of `sizes`, named `layer.{i}.weight`: an
/// `8 × numel/8` matrix when 8 divides `numel`, else a vector.
struct Model {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

impl Model {
    fn new(sizes: &[usize]) -> Self {
        let n = sizes.len();
        Model {
            names: (0..n).map(|i| format!("layer.{i}.weight")).collect(),
            shapes: sizes
                .iter()
                .map(|&s| if s % 8 == 0 { vec![8, s / 8] } else { vec![s] })
                .collect(),
            params: sizes
                .iter()
                .enumerate()
                .map(|(i, &s)| (0..s).map(|j| 0.01 * (i + j % 7) as f32).collect())
                .collect(),
            grads: sizes
                .iter()
                .enumerate()
                .map(|(i, &s)| (0..s).map(|j| 0.1 + 0.001 * (i + j % 5) as f32).collect())
                .collect(),
        }
    }

    /// The model as the slice path's parameters.
    fn slices(&mut self) -> Vec<ParamSlice<'_, f32>> {
        self.params
            .iter_mut()
            .zip(&self.grads)
            .zip(&self.names)
            .zip(&self.shapes)
            .map(|(((p, g), name), shape)| ParamSlice {
                name,
                shape,
                param: p,
                grad: g,
            })
            .collect()
    }
}

/// One step of `opt` over `slices`; returns what it allocated on this thread.
fn counted_step<O: DslOptimizer<f32>>(opt: &mut O, slices: &mut [ParamSlice<'_, f32>]) -> usize {
    let before = allocs();
    opt.update_slices(slices).expect("step");
    allocs() - before
}

/// What `steps` steps of `opt` allocate on this thread: the first step (which creates the
/// state) and each of the 5 steady-state steps after 2 more warm-up steps. Checks that every
/// parameter moved.
fn per_step<O: DslOptimizer<f32>>(mut opt: O, sizes: &[usize]) -> (usize, Vec<usize>) {
    let mut m = Model::new(sizes);
    let start = m.params.clone();
    let mut slices = m.slices();
    let mut step = || counted_step(&mut opt, &mut slices);
    let first = step();
    for _ in 0..2 {
        step();
    }
    let counts: Vec<usize> = (0..5).map(|_| step()).collect();
    assert_eq!(opt.opt_state().step, 8);
    drop(slices);
    // the steps did run: every parameter moved from its start
    for (i, (p, s)) in m.params.iter().zip(&start).enumerate() {
        assert!(
            p.iter().zip(s).any(|(a, b)| a != b),
            "parameter {i} did not move"
        );
        assert!(p.iter().all(|x| x.is_finite()), "parameter {i}");
    }
    (first, counts)
}

/// Asserts that the steady-state steps of `opt` over 1 and 99 parameters (`size(i)` elements
/// each) allocate nothing, and that the first step does (the counter counts).
fn allocates_nothing<O: DslOptimizer<f32>>(make: impl Fn() -> O, size: impl Fn(usize) -> usize) {
    for n in [1usize, 99] {
        let sizes: Vec<usize> = (0..n).map(&size).collect();
        let (first, steady) = per_step(make(), &sizes);
        assert_eq!(steady, [0; 5], "{} with {n} parameters", O::Config::NAME);
        assert!(
            first > 0,
            "{} with {n} parameters: first step",
            O::Config::NAME
        );
        eprintln!(
            "{} with {n} parameters: first step {first} allocations, then {steady:?}",
            O::Config::NAME
        );
    }
}

#[test]
fn an_adamw_step_allocates_nothing() {
    allocates_nothing(AdamW::<f32>::default, |_| 64);
}

#[test]
fn a_scheduled_adamw_step_allocates_nothing() {
    let lr = Schedule::warmup_cosine(1e-3, 1e-2, 2, 10, 1e-4).expect("schedule");
    let config = AdamWConfig {
        lr: lr.into(),
        ..AdamWConfig::default()
    };
    allocates_nothing(
        || AdamW::<f32>::new(config.clone()).expect("config"),
        |_| 64,
    );
}

#[test]
fn a_bf16_state_step_allocates_nothing() {
    allocates_nothing(AdamWBf16::<f32>::default, |i| 64 + i % 3);
}

/// `AdamW8bit` quantises tensors of at least 4,096 elements and hands smaller ones to its
/// reuse rule (`f32` AdamW): both kinds in one step.
#[test]
fn an_8bit_state_step_allocates_nothing_with_its_reuse_rule() {
    allocates_nothing(AdamW8bit::<f32>::default, |i| {
        if i % 20 == 0 {
            4096 + 300
        } else {
            64
        }
    });
}

/// Two loops per step: per-tensor norms (Lamb's trust ratio) and global sums (Prodigy).
#[test]
fn a_step_with_reductions_allocates_nothing() {
    allocates_nothing(Lamb::<f32>::default, |_| 64);
    allocates_nothing(Prodigy::<f32>::default, |_| 64);
}

/// 16-bit parameters (`bf16` and `f16`, beside an `f32` one) on `update_mixed_in_modules`:
/// their loops run through their 16-bit entry points on the bits, and a steady-state step
/// allocates nothing either (the parameters' list and modules are the caller's, built once).
fn mixed_allocates_nothing<O: DslOptimizer<f32>>(mut opt: O) {
    let n = 300;
    let start = |seed: u16| -> Vec<u16> {
        (0..n)
            .map(|j| 0x3c00 + (j as u16 % 97) * 3 + seed)
            .collect()
    };
    let (mut pb, mut ph, mut pf) = (start(0), start(1), vec![0.5f32; n]);
    let (gb, gh, gf) = (start(5), start(9), vec![0.25f32; n]);
    // `0x3c00 + …` is a small positive `bf16` and an `f16` near 1: both finite
    let before = (pb.clone(), ph.clone(), pf.clone());
    let shape = [n];
    let mut params = vec![
        MixedSlice::Narrow(NarrowSlice {
            name: "a.weight",
            shape: &shape,
            dtype: StateDtype::Bf16,
            param: &mut pb,
            grad: &gb,
        }),
        MixedSlice::Narrow(NarrowSlice {
            name: "b.weight",
            shape: &shape,
            dtype: StateDtype::F16,
            param: &mut ph,
            grad: &gh,
        }),
        MixedSlice::Same(ParamSlice {
            name: "c.weight",
            shape: &shape,
            param: &mut pf,
            grad: &gf,
        }),
    ];
    let modules = ["a", "b", "c"];
    let mut counts = Vec::new();
    for t in 0..8 {
        let at = allocs();
        update_mixed_in_modules(&mut opt, &mut params, &modules).expect("step");
        if t >= 3 {
            counts.push(allocs() - at);
        }
    }
    drop(params);
    assert_eq!(counts, [0; 5], "{}", O::Config::NAME);
    assert!(
        pb != before.0 && ph != before.1 && pf != before.2,
        "every parameter moved"
    );
}

#[test]
fn a_16_bit_parameter_step_allocates_nothing() {
    mixed_allocates_nothing(AdamW::<f32>::default());
    mixed_allocates_nothing(Lamb::<f32>::default());
}

/// A barrier between loops: Muon's Newton–Schulz orthogonalisation of each 8 × 8 momentum
/// (its workspace lives in the parameter's state).
#[test]
fn a_step_with_matrix_work_allocates_nothing() {
    allocates_nothing(Muon::<f32>::default, |_| 64);
}

/// Another set of names costs a new order (and state), then the steps are steady again.
#[test]
fn new_names_allocate_once_then_nothing() {
    let mut opt = AdamW::<f32>::default();
    let (a, b) = (Model::new(&[64; 3]), Model::new(&[64; 5]));
    for m in [a, b] {
        let mut m = m;
        let mut slices = m.slices();
        let mut step = || counted_step(&mut opt, &mut slices);
        assert!(step() > 0);
        assert_eq!([step(), step(), step()], [0; 3]);
    }
}

/// The dfdx CPU path allocates per step (dfdx's walk names each tensor, a tensor's id is read
/// through a `Vec`, the staged list), but the master copy (`ParamSync::Master`, the default)
/// adds no allocation to it: its handle on each written tensor's storage replaces the shared
/// read handle that `ParamSync::Read` makes, so a steady step allocates at most what a reading
/// step does, and the same every step. Counted on a one-thread rayon
/// pool, inside it (all of the step's work runs on that thread).
#[test]
fn a_master_copy_dfdx_step_allocates_no_more_than_a_reading_one() {
    use dfdx::prelude::{Cpu, DeviceBuildExt, Linear, ZeroGrads};
    use optim_dsl::ParamSync;
    let counts = |sync: ParamSync| -> Vec<usize> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a rayon pool");
        pool.install(|| {
            let dev: Cpu = Default::default();
            let mut m = dev.build_module::<(Linear<8, 8>, Linear<8, 8>), f32>();
            let mut g = m.alloc_grads();
            g.get_or_alloc_mut(&m.0.weight).unwrap().fill(0.25);
            g.get_or_alloc_mut(&m.1.weight).unwrap().fill(0.25);
            let w0 = m.0.weight.as_vec();
            let mut opt = AdamW::<f32>::default();
            opt.set_param_sync(sync);
            let mut step = || {
                let before = allocs();
                opt.update(&mut m, &mut g).expect("step");
                allocs() - before
            };
            for _ in 0..3 {
                step();
            }
            let steady: Vec<usize> = (0..5).map(|_| step()).collect();
            assert_ne!(m.0.weight.as_vec(), w0, "the steps ran");
            steady
        })
    };
    let (read, master) = (counts(ParamSync::Read), counts(ParamSync::Master));
    eprintln!("dfdx steady steps: read {read:?}, master {master:?}");
    assert!(read.iter().all(|&c| c == read[0]), "{read:?}");
    assert!(master.iter().all(|&c| c == master[0]), "{master:?}");
    assert!(master[0] <= read[0], "master {master:?}, read {read:?}");
}

//! Allocations of a steady-state step on the slice path, counted by a global allocator that
//! counts the calling thread's allocations (the steps here stay below the executor's parallel
//! threshold, so all their work runs on the calling thread).
//!
//! What a step allocates does not depend on how many parameters it has, except for one boxed
//! job per parameter (`DslOptimizer::prepare` returns `Box<dyn StagedJob>`): no name is copied,
//! hashed or looked up in a map per parameter (the step reuses the last step's sorted name
//! order and finds every state in one ordered walk, `optim_runtime`'s `lookup`).

use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;
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

/// Allocations of each of 5 steady-state AdamW steps over `n` parameters of 64 elements.
fn per_step(n: usize) -> Vec<usize> {
    let names: Vec<String> = (0..n).map(|i| format!("layer.{i}.weight")).collect();
    let shape = [8usize, 8];
    let mut params: Vec<Vec<f32>> = (0..n).map(|i| vec![0.01 * i as f32; 64]).collect();
    let grads: Vec<Vec<f32>> = (0..n).map(|i| vec![0.1 + 0.001 * i as f32; 64]).collect();
    let mut slices: Vec<ParamSlice<'_, f32>> = params
        .iter_mut()
        .zip(&grads)
        .zip(&names)
        .map(|((p, g), name)| ParamSlice {
            name,
            shape: &shape,
            param: p,
            grad: g,
        })
        .collect();
    let mut opt = AdamW::<f32>::default();
    for _ in 0..3 {
        opt.update_slices(&mut slices).expect("warm-up step");
    }
    let counts = (0..5)
        .map(|_| {
            let before = allocs();
            opt.update_slices(&mut slices).expect("step");
            allocs() - before
        })
        .collect();
    // the steps did run: every parameter moved from its start, by the same amount
    assert_eq!(opt.opt_state().step, 8);
    let d0 = slices[0].param[0] - 0.0;
    assert!(d0 < -1e-3, "{d0}");
    counts
}

#[test]
fn a_step_allocates_one_job_per_parameter_and_a_constant_rest() {
    let small = per_step(10);
    let large = per_step(200);
    // steady state: every step allocates the same
    assert!(small.windows(2).all(|w| w[0] == w[1]), "{small:?}");
    assert!(large.windows(2).all(|w| w[0] == w[1]), "{large:?}");
    // one allocation per parameter (its boxed job), nothing else per parameter
    assert_eq!(
        large[0] - small[0],
        190,
        "10 params: {small:?}, 200: {large:?}"
    );
    // and a small constant for the step itself (the step's lists, sized once)
    assert!(small[0] - 10 <= 16, "10 params: {small:?}");
    eprintln!(
        "allocations per step: 10 parameters {}, 200 parameters {}",
        small[0], large[0]
    );
}

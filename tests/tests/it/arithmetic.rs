//! The opt-in reciprocal arithmetic (`Arithmetic::Reciprocal`): the zoo's AdamW in that mode
//! against the default, exact mode on a fixed problem (`lr = 1e-3`, parameters of order 1).
//! One step from the same values: only the update term changes, by about one rounding, so every
//! parameter is within 2 ulp of the step's scale (`|update| <= 4 lr`) plus one ulp of the
//! parameter itself (the final subtraction's rounding) of the exact result. 1 000 steps: every
//! parameter within `1e-6` of the exact trajectory (a thousandth of one step's `lr`), the
//! documented bound. The mode is saved in checkpoints; the exact mode is untouched by it (the
//! conformance tests run in it).

use optim_dsl::prelude::*;
use optim_dsl::zoo::AdamW;
use optim_dsl::Arithmetic;

/// Parameter sizes of the fixed problem (one of them above one executor chunk, so that the
/// loop also runs cut in pieces).
const SIZES: [usize; 3] = [7, 1000, 40_000];

/// A deterministic number in [-1, 1) from `(a, b)`.
fn unit(a: u64, b: u64) -> f32 {
    let mut x = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x ^= x >> 31;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 29;
    ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// `f(w) = ½ Σ (w_i - t_i)²` with targets `t_i = unit(t, i)`, plus gradient noise of amplitude
/// 0.1 at each step.
fn grads(params: &[Vec<f32>], step: u64) -> Vec<Vec<f32>> {
    params
        .iter()
        .enumerate()
        .map(|(t, p)| {
            p.iter()
                .enumerate()
                .map(|(i, &w)| {
                    let (t, i) = (t as u64, i as u64);
                    w - unit(t, i) + 0.1 * unit(1000 + step, t * 1_000_000 + i)
                })
                .collect()
        })
        .collect()
}

fn init() -> Vec<Vec<f32>> {
    SIZES
        .iter()
        .enumerate()
        .map(|(t, &n)| {
            (0..n)
                .map(|i| 2.0 * unit(77 + t as u64, i as u64))
                .collect()
        })
        .collect()
}

fn step(opt: &mut AdamW<f32>, params: &mut [Vec<f32>], step: u64) {
    let g = grads(params, step);
    let names = ["a", "b", "c"];
    let shapes: Vec<[usize; 1]> = SIZES.iter().map(|&n| [n]).collect();
    let mut slices = optim_tests::params::slices(&names, &shapes, params, &g);
    opt.update_slices(&mut slices).expect("step");
}

/// AdamW's default learning rate (the zoo's).
const LR: f32 = 1e-3;

fn pair() -> (AdamW<f32>, AdamW<f32>) {
    let exact = AdamW::<f32>::default();
    let mut recip = AdamW::<f32>::default();
    recip.set_arithmetic(Arithmetic::Reciprocal);
    assert_eq!(
        exact.opt_state().arithmetic,
        Arithmetic::Exact,
        "the default"
    );
    (exact, recip)
}

/// Runs the exact and the reciprocal mode from the same start for `steps` steps, calling
/// `after(step, exact, reciprocal)` after each; returns both final parameter sets.
fn run_pair(
    steps: u64,
    mut after: impl FnMut(u64, &[Vec<f32>], &mut [Vec<f32>]),
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let (mut exact, mut recip) = pair();
    let (mut pe, mut pr) = (init(), init());
    for s in 0..steps {
        step(&mut exact, &mut pe, s);
        step(&mut recip, &mut pr, s);
        after(s, &pe, &mut pr);
    }
    (pe, pr)
}

#[test]
fn one_step_is_within_two_ulp_of_exact() {
    run_pair(3, |s, pe, pr| {
        let mut differ = 0;
        for (a, b) in pe.iter().flatten().zip(pr.iter_mut().flatten()) {
            // 2 ulp of 4 lr, and 1 ulp of the parameter
            let tol = f32::EPSILON * (2.0 * 4.0 * LR + a.abs());
            assert!(
                (*a - *b).abs() <= tol,
                "step {s}: exact {a}, reciprocal {b}"
            );
            differ += usize::from(a != b);
            *b = *a; // compare one step at a time
        }
        // the mode is in effect: some results differ by a rounding
        assert!(differ > 0, "step {s}: reciprocal mode changed nothing");
    });
}

#[test]
fn thousand_steps_track_the_exact_trajectory() {
    let (pe, pr) = run_pair(1000, |_, _, _| {});
    let worst = optim_tests::trajectory::max_gap(&pe, &pr);
    eprintln!("largest difference after 1000 steps: {worst:e}");
    assert!(worst <= 1e-6, "largest difference {worst:e}");
    assert!(worst > 0.0, "the two modes never differed");
    // both moved from the start towards the targets (the run is not trivially stuck)
    let start = init();
    let moved = pe.iter().flatten().zip(start.iter().flatten());
    assert!(moved.filter(|(a, b)| (*a - *b).abs() > 0.1).count() > 1000);
}

#[test]
fn the_mode_is_saved_in_checkpoints() {
    let (_, mut recip) = pair();
    let mut p = init();
    step(&mut recip, &mut p, 0);
    let bytes = recip.to_checkpoint_bytes(None).expect("save");
    let mut loaded = AdamW::<f32>::default();
    loaded.load_checkpoint_bytes(&bytes, None).expect("load");
    assert_eq!(loaded.opt_state().arithmetic, Arithmetic::Reciprocal);
    let exact_bytes = AdamW::<f32>::default()
        .to_checkpoint_bytes(None)
        .expect("save");
    let mut back = AdamW::<f32>::default();
    back.set_arithmetic(Arithmetic::Reciprocal);
    back.load_checkpoint_bytes(&exact_bytes, None)
        .expect("load");
    assert_eq!(back.opt_state().arithmetic, Arithmetic::Exact);
}

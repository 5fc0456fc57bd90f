//! The dfdx CPU step's master copies (`ParamSync::Master`, the default): bit-identical to
//! `ParamSync::Read` (which reads every parameter from the model at each step) over AdamW steps
//! on a multi-tensor model, and reading a parameter again exactly when its tensor was written:
//! an in-place write (`copy_from`), a replaced tensor (new id), `swap_state_with_model`,
//! `WeightEma::copy_to_model`, a rollback after a checkpoint load, a failed step, a clone of
//! the optimizer's state and a switch from `Read` make the next step read it; an unchanged
//! tensor and one that `update_where` skips are not read (`OptState::model_reads` counts the
//! reads). Hand-computed values use SGD (lr 0.5, gradient 1: each step subtracts 0.5).

use dfdx::prelude::*;
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, ScheduleFreeAdamW};
use optim_dsl::{Checkpoint, NonFinitePolicy, OptimError, ParamSync, WeightEma};
use optim_tests::one::{filled, one};
use optim_tests::state::state_bits;
use optim_tests::values::seeded;
use optim_tests::zoo::sgd;

type Two = (Linear<3, 4>, Linear<4, 2>);
type TwoModel = <Two as BuildOnDevice<Cpu, f32>>::Built;

/// Every trainable tensor of `m`, in field order.
fn tensors(m: &TwoModel) -> [&dyn ReadValues; 4] {
    [&m.0.weight, &m.0.bias, &m.1.weight, &m.1.bias]
}

/// `as_vec` of a tensor of any shape.
trait ReadValues {
    fn values(&self) -> Vec<f32>;
}

impl<S: Shape> ReadValues for Tensor<S, f32, Cpu> {
    fn values(&self) -> Vec<f32> {
        self.as_vec()
    }
}

/// The exact bits of every trainable tensor of `m`.
fn bits(m: &TwoModel) -> Vec<Vec<u32>> {
    tensors(m)
        .iter()
        .map(|t| t.values().iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// A fresh model (its own tensor ids) with pseudo-random values.
fn model(dev: &Cpu) -> TwoModel {
    let mut m = dev.build_module::<Two, f32>();
    let v = |seed: u64, n: usize| -> Vec<f32> { seeded(seed, n).map(|x| x as f32).collect() };
    m.0.weight.copy_from(&v(1, 12));
    m.0.bias.copy_from(&v(2, 4));
    m.1.weight.copy_from(&v(3, 8));
    m.1.bias.copy_from(&v(4, 2));
    m
}

/// Gradients of step `t` for `m` (pseudo-random, different at every step).
fn grads(m: &TwoModel, t: u64) -> Gradients<f32, Cpu> {
    let mut g = m.alloc_grads();
    let fill = |seed: u64, buf: &mut Vec<f32>| {
        for (x, y) in buf.iter_mut().zip(seeded(seed, 12)) {
            *x = y as f32 * 0.1;
        }
    };
    fill(100 * t + 1, g.get_or_alloc_mut(&m.0.weight).unwrap());
    fill(100 * t + 2, g.get_or_alloc_mut(&m.0.bias).unwrap());
    fill(100 * t + 3, g.get_or_alloc_mut(&m.1.weight).unwrap());
    fill(100 * t + 4, g.get_or_alloc_mut(&m.1.bias).unwrap());
    g
}

/// AdamW (weight decay on) in the given mode.
fn adamw(sync: ParamSync) -> AdamW<f32> {
    let mut o = AdamW::<f32>::default();
    o.set_param_sync(sync);
    o
}

/// The same run in both modes: `(model, optimizer)` in `ParamSync::Read` and in `Master`.
struct Pair<O> {
    read: (TwoModel, O),
    master: (TwoModel, O),
}

impl<O: DslOptimizer<f32> + DfdxUpdate<f32>> Pair<O> {
    fn new(dev: &Cpu, make: impl Fn(ParamSync) -> O) -> Self {
        Pair {
            read: (model(dev), make(ParamSync::Read)),
            master: (model(dev), make(ParamSync::Master)),
        }
    }

    /// One step of both at step index `t` (only the tensors `which` accepts).
    fn step(&mut self, t: u64, which: impl Fn(&str) -> bool + Copy) {
        for (m, o) in [&mut self.read, &mut self.master] {
            let mut g = grads(m, t);
            o.update_where(m, &mut g, which).unwrap();
        }
    }

    /// Steps `ts` of both over every tensor, each followed by [`Pair::assert_same`] (`what`
    /// names the step in a failure).
    fn steps(&mut self, ts: std::ops::RangeInclusive<u64>, what: impl Fn(u64) -> String) {
        for t in ts {
            self.step(t, all);
            self.assert_same(&what(t));
        }
    }

    /// Both runs agree bit for bit: parameters and optimizer state.
    fn assert_same(&self, what: &str) {
        assert_eq!(
            bits(&self.read.0),
            bits(&self.master.0),
            "{what}: parameters"
        );
        assert_eq!(
            state_bits(self.read.1.opt_state()),
            state_bits(self.master.1.opt_state()),
            "{what}: state"
        );
    }

    /// Applies `f` to both models.
    fn both(&mut self, f: impl Fn(&mut TwoModel)) {
        f(&mut self.read.0);
        f(&mut self.master.0);
    }
}

fn all(_: &str) -> bool {
    true
}

#[test]
fn master_mode_is_bit_identical_to_the_default_mode() {
    let dev: Cpu = Default::default();
    let mut p = Pair::new(&dev, adamw);
    let start = bits(&p.read.0);
    p.steps(1..=6, |t| format!("step {t}"));
    assert_ne!(bits(&p.read.0), start, "the steps moved the parameters");
    assert_eq!(p.read.1.opt_state().param_sync, ParamSync::Read);
    assert_eq!(
        AdamW::<f32>::default().opt_state().param_sync,
        ParamSync::Master,
        "the default"
    );
    // 4 tensors: `Read` reads each at each of the 6 steps, `Master` only at the first
    assert_eq!(p.read.1.opt_state().model_reads(), 24);
    assert_eq!(p.master.1.opt_state().model_reads(), 4);
}

/// By hand: an in-place write between steps is read by the next step in both modes, with or
/// without `resync_params`; only the written tensor is read again.
#[test]
fn an_in_place_write_is_seen_without_resync() {
    let dev: Cpu = Default::default();
    let run = |sync: ParamSync, resync: bool| -> (Vec<f32>, Vec<f32>, u64) {
        let mut m = one(&dev, [1.0, 2.0], 0.5);
        let mut opt = sgd(0.5);
        opt.set_param_sync(sync);
        let mut g = filled(&m, 1.0);
        opt.update(&mut m, &mut g).unwrap();
        assert_eq!(m.weight.as_vec(), [0.5, 1.5]);
        m.weight.copy_from(&[10.0, 20.0]);
        if resync {
            opt.opt_state_mut().resync_params();
        }
        opt.update(&mut m, &mut g).unwrap();
        assert_eq!(g.get(&m.weight).as_vec(), [1.0, 1.0], "gradients untouched");
        let reads = opt.opt_state().model_reads();
        (m.weight.as_vec(), m.bias.as_vec(), reads)
    };
    let seen = (vec![9.5, 19.5], vec![-0.5]);
    let with = |(w, b): (Vec<f32>, Vec<f32>), reads| (w, b, reads);
    // master: both at the first step, then the written weight only (resync: both again)
    assert_eq!(run(ParamSync::Master, false), with(seen.clone(), 3));
    assert_eq!(run(ParamSync::Master, true), with(seen.clone(), 4));
    for resync in [false, true] {
        assert_eq!(run(ParamSync::Read, resync), with(seen.clone(), 4));
    }
}

/// Steps in the default mode leave no copy trusted: writes made then are read by the first step
/// after switching to `Master`.
#[test]
fn switching_to_master_reads_first() {
    let dev: Cpu = Default::default();
    let mut p = Pair::new(&dev, adamw);
    p.master.1.set_param_sync(ParamSync::Read);
    p.step(1, all);
    p.step(2, all);
    p.both(|m| m.1.weight.copy_from(&[0.75; 8]));
    p.master.1.set_param_sync(ParamSync::Master);
    p.steps(3..=4, |t| format!("step {t} after the switch"));
}

/// In-place writes into two of the four tensors, with and without `resync_params`: the runs
/// stay identical to `Read`, and without resync only the two written tensors are read.
#[test]
fn an_in_place_write_matches_the_read_mode() {
    let dev: Cpu = Default::default();
    for resync in [false, true] {
        let mut p = Pair::new(&dev, adamw);
        p.step(1, all);
        p.step(2, all);
        p.both(|m| {
            m.0.weight.copy_from(&[0.25; 12]);
            m.1.bias.copy_from(&[-1.0, 2.0]);
        });
        if resync {
            p.master.1.opt_state_mut().resync_params();
        }
        p.steps(3..=5, |t| {
            format!("step {t} after the write (resync {resync})")
        });
        let reads = if resync { 8 } else { 6 };
        assert_eq!(
            p.master.1.opt_state().model_reads(),
            reads,
            "resync {resync}"
        );
    }
}

/// A tensor replaced by a new one has a new dfdx id: read again without `resync_params`.
#[test]
fn a_replaced_tensor_is_read_again() {
    let dev: Cpu = Default::default();
    let mut m = one(&dev, [1.0, 2.0], 0.5);
    let mut opt = sgd(0.5);
    opt.set_param_sync(ParamSync::Master);
    let mut g = filled(&m, 1.0);
    opt.update(&mut m, &mut g).unwrap();
    m.weight = dev.tensor([[4.0f32, 8.0]]);
    let mut g = filled(&m, 1.0);
    opt.update(&mut m, &mut g).unwrap();
    assert_eq!(m.weight.as_vec(), [3.5, 7.5]);
    assert_eq!(m.bias.as_vec(), [-0.5]);

    // and on the larger model against the default mode
    let mut p = Pair::new(&dev, adamw);
    p.step(1, all);
    p.both(|m| m.1.weight = dev.tensor([[0.5f32; 4]; 2]));
    p.steps(2..=4, |t| format!("step {t} after the replacement"));
    assert_eq!(
        p.master.1.opt_state().model_reads(),
        5,
        "4, then the new tensor"
    );
}

/// A tensor that `update_where` skips keeps its copy (its tensor was not written): the run
/// stays identical to the default mode through steps that skip different tensors.
#[test]
fn update_where_keeps_the_copies_of_skipped_tensors() {
    let dev: Cpu = Default::default();
    let mut p = Pair::new(&dev, adamw);
    let plan: [fn(&str) -> bool; 5] = [
        all,
        |n| n.starts_with("0."),
        |n| n.starts_with("1."),
        |n| n.ends_with("weight"),
        all,
    ];
    for (t, which) in (1..).zip(plan) {
        p.step(t, which);
        p.assert_same(&format!("step {t}"));
    }
    assert_eq!(p.master.1.opt_state().param("0.weight").unwrap().step, 4);
    assert_eq!(p.master.1.opt_state().param("1.bias").unwrap().step, 3);
    assert_eq!(
        p.master.1.opt_state().model_reads(),
        4,
        "each at its first step only"
    );
}

/// A failed step drops the copies of the tensors it staged: the next good step reads them (an
/// in-place write made before it is seen, by hand), and the run stays identical to `Read`.
#[test]
fn a_failed_step_drops_the_copies() {
    let dev: Cpu = Default::default();
    let mut m = one(&dev, [1.0, 2.0], 0.5);
    let mut opt = sgd(0.5);
    opt.set_param_sync(ParamSync::Master);
    opt.opt_state_mut().non_finite = NonFinitePolicy::Error;
    let mut g = filled(&m, 1.0);
    opt.update(&mut m, &mut g).unwrap();
    m.weight.copy_from(&[10.0, 20.0]);
    let mut bad = m.alloc_grads();
    bad.get_or_alloc_mut(&m.weight)
        .unwrap()
        .copy_from_slice(&[1.0, f32::NAN]);
    let err = opt.update(&mut m, &mut bad).unwrap_err();
    assert!(
        matches!(err, OptimError::NonFiniteGradient { .. }),
        "{err:?}"
    );
    assert_eq!(m.weight.as_vec(), [10.0, 20.0], "nothing written");
    opt.update(&mut m, &mut g).unwrap();
    assert_eq!(
        m.weight.as_vec(),
        [9.5, 19.5],
        "read again after the failure"
    );
    assert_eq!(m.bias.as_vec(), [-0.5]);
    // 2 at the first step, the written weight at the failed one, both after the failure
    assert_eq!(opt.opt_state().model_reads(), 5);

    let mut p = Pair::new(&dev, adamw);
    for (_, o) in [&mut p.read, &mut p.master] {
        o.opt_state_mut().non_finite = NonFinitePolicy::Error;
    }
    p.step(1, all);
    p.step(2, all);
    for (m, o) in [&mut p.read, &mut p.master] {
        let mut bad = grads(m, 3);
        bad.get_or_alloc_mut(&m.1.bias).unwrap()[1] = f32::INFINITY;
        assert!(o.update(m, &mut bad).is_err());
    }
    p.assert_same("after the failed step");
    let before = p.master.1.opt_state().model_reads();
    p.steps(3..=5, |t| format!("step {t}"));
    assert_eq!(
        p.master.1.opt_state().model_reads() - before,
        4,
        "all read once again"
    );
}

/// `swap_state_with_model` writes the model in place, which the next step sees: a step taken
/// with a state buffer swapped in (no swap back, no resync) starts from it, as in `Read`. AdamW's `m` stands in for Schedule-Free's `x` here: Schedule-Free's update does
/// not read the old parameter values, so it could not tell a stale copy.
#[test]
fn swap_state_with_model_invalidates_the_copies() {
    let dev: Cpu = Default::default();
    let mut p = Pair::new(&dev, adamw);
    for t in 1..=3 {
        p.step(t, all);
    }
    let y = bits(&p.master.0);
    for (m, o) in [&mut p.read, &mut p.master] {
        assert_eq!(o.swap_state_with_model(m, "m").unwrap(), 4);
    }
    assert_ne!(bits(&p.master.0), y, "m is in the model");
    p.step(4, all);
    p.assert_same("a step from the swapped-in buffer");
    assert_eq!(
        p.master.1.opt_state().model_reads(),
        8,
        "all four read again"
    );
    // swapping twice (evaluate, swap back) is a write too, and as exact
    for (m, o) in [&mut p.read, &mut p.master] {
        o.swap_state_with_model(m, "m").unwrap();
        o.swap_state_with_model(m, "m").unwrap();
    }
    p.step(5, all);
    p.assert_same("after a swap and back");

    // Schedule-Free, as documented: evaluate with `x`, swap back, step
    let make = |sync| {
        let mut o = ScheduleFreeAdamW::<f32>::default();
        o.set_param_sync(sync);
        o
    };
    let mut p = Pair::new(&dev, make);
    for t in 1..=3 {
        p.step(t, all);
        for (m, o) in [&mut p.read, &mut p.master] {
            assert_eq!(o.swap_state_with_model(m, "x").unwrap(), 4);
            o.swap_state_with_model(m, "x").unwrap();
        }
        p.assert_same(&format!("Schedule-Free step {t}"));
    }
}

/// `WeightEma::copy_to_model` writes the model in place: the next step reads it (no resync).
#[test]
fn an_ema_copied_into_the_model_is_read_again() {
    let dev: Cpu = Default::default();
    let mut p = Pair::new(&dev, adamw);
    let mut emas = [
        WeightEma::<f32>::new(0.5).unwrap(),
        WeightEma::<f32>::new(0.5).unwrap(),
    ];
    for t in 1..=3 {
        p.step(t, all);
        emas[0].update_model(&p.read.0).unwrap();
        emas[1].update_model(&p.master.0).unwrap();
    }
    emas[0].copy_to_model(&mut p.read.0).unwrap();
    emas[1].copy_to_model(&mut p.master.0).unwrap();
    p.step(4, all);
    p.assert_same("a step from the averaged weights");
    // swap_with_model there and back: the values are the same, the step still exact
    emas[1].swap_with_model(&mut p.master.0).unwrap();
    emas[1].swap_with_model(&mut p.master.0).unwrap();
    p.step(5, all);
    p.assert_same("after an EMA swap and back");
}

/// Loading a checkpoint keeps the copies (the model is not part of it): a rollback that
/// restores the model's weights in place and the optimizer's state continues exactly as in
/// `Read` mode (without resync); a load with the model unchanged reads nothing.
#[test]
fn a_checkpoint_load_keeps_the_copies_and_a_rollback_is_read() {
    let dev: Cpu = Default::default();
    let mut p = Pair::new(&dev, adamw);
    p.step(1, all);
    let saved_model = bits(&p.read.0);
    let weights: Vec<Vec<f32>> = tensors(&p.read.0).iter().map(|t| t.values()).collect();
    let saved: Vec<Vec<u8>> = [&p.read.1, &p.master.1]
        .iter()
        .map(|o| o.to_checkpoint_bytes(None).unwrap())
        .collect();
    p.step(2, all);
    p.step(3, all);
    // roll back: weights in place, then the optimizer
    p.both(|m| {
        m.0.weight.copy_from(&weights[0]);
        m.0.bias.copy_from(&weights[1]);
        m.1.weight.copy_from(&weights[2]);
        m.1.bias.copy_from(&weights[3]);
    });
    assert_eq!(bits(&p.master.0), saved_model);
    p.read.1.load_checkpoint_bytes(&saved[0], None).unwrap();
    p.master.1.load_checkpoint_bytes(&saved[1], None).unwrap();
    assert_eq!(p.master.1.opt_state().param_sync, ParamSync::Master, "kept");
    p.steps(2..=3, |t| format!("step {t} after the rollback"));
    assert_eq!(
        p.master.1.opt_state().model_reads(),
        8,
        "4, then the restored 4"
    );
    let saved = p.master.1.to_checkpoint_bytes(None).unwrap();
    p.master.1.load_checkpoint_bytes(&saved, None).unwrap();
    p.step(4, all);
    assert_eq!(p.master.1.opt_state().model_reads(), 8, "nothing read");
}

/// A clone of the optimizer's state (`OptState::clone`, here moved into another optimizer, as
/// a snapshot is restored) keeps the setting and no copies: its first step reads the model.
#[test]
fn a_clone_of_the_state_reads_the_model_first() {
    let dev: Cpu = Default::default();
    let mut p = Pair::new(&dev, adamw);
    p.step(1, all);
    p.step(2, all);
    p.both(|m| m.0.bias.copy_from(&[3.0, -3.0, 0.5, 0.0]));
    for (_, o) in [&mut p.read, &mut p.master] {
        let mut fresh = adamw(ParamSync::Read);
        *fresh.opt_state_mut() = o.opt_state().clone();
        *o = fresh;
    }
    assert_eq!(p.master.1.opt_state().param_sync, ParamSync::Master);
    let copy = p.master.1.opt_state().try_clone().unwrap();
    assert_eq!(copy.param_sync, ParamSync::Master, "try_clone too");
    p.steps(3..=4, |t| format!("step {t} of the clone"));
    assert_eq!(
        p.master.1.opt_state().model_reads(),
        4,
        "a clone counts from 0"
    );
}

/// A master-mode step on a model with 100 tensors (80 401 elements: above the runtime's
/// `PARALLEL_THRESHOLD`, so the copies run across rayon's threads) agrees with `Read`.
#[test]
fn master_mode_agrees_on_many_tensors_and_threads() {
    type Deep = Repeated<(Linear<40, 40>, ReLU), 49>;
    let dev: Cpu = Default::default();
    let run = |sync: ParamSync| {
        crate::common::on_threads(2, || {
            let mut m = dev.build_module::<(Deep, Linear<40, 1>), f32>();
            let mut k = 0u64;
            let mut fill = |buf: &mut Vec<f32>| {
                k += 1;
                let n = buf.len();
                for (x, y) in buf.iter_mut().zip(seeded(k, n)) {
                    *x = y as f32;
                }
            };
            // every value set here: `build_module` draws from the device's generator
            for l in m.0.modules.iter_mut() {
                let (mut w, mut b) = (vec![0.0; 1600], vec![0.0; 40]);
                fill(&mut w);
                fill(&mut b);
                l.0.weight.copy_from(&w);
                l.0.bias.copy_from(&b);
            }
            let (mut w, mut b) = (vec![0.0; 40], vec![0.0; 1]);
            fill(&mut w);
            fill(&mut b);
            m.1.weight.copy_from(&w);
            m.1.bias.copy_from(&b);
            let mut opt = adamw(sync);
            let mut out = Vec::new();
            for t in 1..=3 {
                let mut g = m.alloc_grads();
                for l in m.0.modules.iter() {
                    fill(g.get_or_alloc_mut(&l.0.weight).unwrap());
                    fill(g.get_or_alloc_mut(&l.0.bias).unwrap());
                }
                fill(g.get_or_alloc_mut(&m.1.weight).unwrap());
                opt.update(&mut m, &mut g).unwrap();
                assert_eq!(opt.opt_state().params.len(), 100, "step {t}");
            }
            for l in m.0.modules.iter() {
                out.extend(l.0.weight.as_vec().iter().map(|x| x.to_bits()));
                out.extend(l.0.bias.as_vec().iter().map(|x| x.to_bits()));
            }
            out.extend(m.1.weight.as_vec().iter().map(|x| x.to_bits()));
            (out, format!("{:?}", state_bits(opt.opt_state())))
        })
    };
    let (read, master) = (run(ParamSync::Read), run(ParamSync::Master));
    assert!(read == master, "the modes differ");
}

/// Writes the user makes through other dfdx paths are seen too: an element written by index
/// (`IndexMut`), and a step of dfdx's own SGD on the same model (as when two optimizers share
/// a model). Each time, only the written tensors are read again, and the run stays identical
/// to `Read`.
#[test]
fn an_index_write_and_another_optimizer_are_seen() {
    let dev: Cpu = Default::default();
    let mut p = Pair::new(&dev, adamw);
    p.step(1, all);
    p.step(2, all);
    p.both(|m| m.1.weight[[1, 2]] = 0.75);
    p.step(3, all);
    p.assert_same("after an index write");
    assert_eq!(
        p.master.1.opt_state().model_reads(),
        5,
        "4, then the indexed tensor"
    );
    for (m, _) in [&mut p.read, &mut p.master] {
        let mut sgd = dfdx::optim::Sgd::new(m, Default::default());
        let g = grads(m, 99);
        dfdx::optim::Optimizer::update(&mut sgd, m, &g).unwrap();
    }
    p.step(4, all);
    p.assert_same("after dfdx's SGD");
    assert_eq!(
        p.master.1.opt_state().model_reads(),
        9,
        "all four written by SGD"
    );
    p.step(5, all);
    assert_eq!(p.master.1.opt_state().model_reads(), 9, "then none");
}

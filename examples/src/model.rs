//! A small multi-layer perceptron on dfdx's CPU device, and training/evaluation loops that take
//! the optimizer step as a closure, so any optimizer (dfdx's own or one declared with
//! `optimizer!`) can be plugged in.
//!
//! ```
//! use dfdx::nn::ZeroGrads;
//! use dfdx::optim::{Adam, AdamConfig, Optimizer};
//! use examples::{data::digits, model::{self, Mlp}};
//!
//! let (train, test) = digits::load().unwrap().split(0.2, 0);
//! let (dev, mut net) = model::build::<Mlp<64, 128, 10>>(0);
//! let mut grads = net.alloc_grads();
//! let mut opt = Adam::new(&net, AdamConfig::default());
//! for epoch in 0..5 {
//!     let stats = model::train_epoch_with::<_, 64, 10, _, _>(
//!         &dev, &mut net, &mut grads, &train, 64, 0, epoch,
//!         |m, g| opt.update(m, g),
//!     ).unwrap();
//!     let acc = model::accuracy::<_, 64, 10>(&dev, &net, &test);
//!     println!("{epoch}: loss {:.4} acc {:.3}", stats.mean_loss, acc);
//! }
//! assert!(model::accuracy::<_, 64, 10>(&dev, &net, &test) > 0.8);
//! ```

use dfdx::nn::builders::{Linear, ReLU};
use dfdx::nn::{BuildOnDevice, DeviceBuildExt, Module, ModuleMut, ZeroGrads};
use dfdx::prelude::{cross_entropy_with_logits_loss, Backward};
use dfdx::shapes::Const;
use dfdx::tensor::{AsArray, Cpu, Gradients, OwnedTape, Tensor, TensorFromVec, Trace};

use crate::data::Dataset;

/// Architecture (dfdx builder type) of a 2-hidden-layer ReLU MLP:
/// `I → H → ReLU → H → ReLU → O` (logits). Build it with [`build`] or
/// `dev.build_module::<Mlp<I, H, O>, f32>()`.
pub type Mlp<const I: usize, const H: usize, const O: usize> =
    (Linear<I, H>, ReLU, Linear<H, H>, ReLU, Linear<H, O>);

/// The built module of [`Mlp`] on the CPU in `f32` (what [`build`] returns).
pub type MlpModel<const I: usize, const H: usize, const O: usize> =
    <Mlp<I, H, O> as BuildOnDevice<Cpu, f32>>::Built;

/// A batch of `n` inputs with `I` features each (`n` known at run time).
pub type Inputs<const I: usize, T = dfdx::tensor::NoneTape> =
    Tensor<(usize, Const<I>), f32, Cpu, T>;

/// A batch of `n` rows of `O` logits (or one-hot targets).
pub type Logits<const O: usize, T = dfdx::tensor::NoneTape> =
    Tensor<(usize, Const<O>), f32, Cpu, T>;

/// Makes a CPU device whose random generator is seeded with `seed`, and builds the
/// architecture `A` (e.g. [`Mlp`]) on it with dfdx's default initialization, so the same seed
/// always gives the same initial weights.
pub fn build<A: BuildOnDevice<Cpu, f32>>(seed: u64) -> (Cpu, A::Built) {
    let dev = Cpu::seed_from_u64(seed);
    let model = dev.build_module::<A, f32>();
    (dev, model)
}

/// Turns a flat row-major feature batch (as yielded by [`Dataset::batches`]) into an input
/// tensor, and its labels into one-hot targets.
///
/// # Panics
/// If `features.len() != labels.len() * I`, or a label is `>= O`.
pub fn batch_tensors<const I: usize, const O: usize>(
    dev: &Cpu,
    features: Vec<f32>,
    labels: &[u8],
) -> (Inputs<I>, Logits<O>) {
    let n = labels.len();
    assert_eq!(features.len(), n * I, "features must be labels.len() × {I}");
    let mut one_hot = vec![0.0f32; n * O];
    for (i, &l) in labels.iter().enumerate() {
        assert!((l as usize) < O, "label {l} out of range for {O} classes");
        one_hot[i * O + l as usize] = 1.0;
    }
    (
        dev.tensor_from_vec(features, (n, Const::<I>)),
        dev.tensor_from_vec(one_hot, (n, Const::<O>)),
    )
}

/// Summary of one training epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// Mean cross-entropy loss per sample over the epoch (measured before each step).
    pub mean_loss: f32,
    /// Number of optimizer steps taken (= mini-batches).
    pub steps: usize,
    /// Number of samples seen.
    pub samples: usize,
}

/// Runs one epoch of mini-batch training with softmax cross-entropy.
///
/// For each shuffled mini-batch of `data` (see [`Dataset::batches`] for how `seed` and
/// `epoch` fix the order): forward with a gradient tape, loss, backward into `grads`, then
/// `step(model, grads)`, then zero `grads`. `step` is the optimizer step, e.g.
/// `|m, g| opt.update(m, g)` for a dfdx optimizer or an `optimizer!`-generated one; its error
/// stops the epoch and is returned.
///
/// `grads` must come from `model.alloc_grads()` and is reused across calls.
///
/// # Panics
/// If `data.d != I` or `data.classes > O`.
pub fn train_epoch_with<M, const I: usize, const O: usize, E, F>(
    dev: &Cpu,
    model: &mut M,
    grads: &mut Gradients<f32, Cpu>,
    data: &Dataset,
    batch: usize,
    seed: u64,
    epoch: u64,
    mut step: F,
) -> Result<EpochStats, E>
where
    M: ModuleMut<Inputs<I, OwnedTape<f32, Cpu>>, Output = Logits<O, OwnedTape<f32, Cpu>>>
        + ZeroGrads<f32, Cpu>,
    F: FnMut(&mut M, &mut Gradients<f32, Cpu>) -> Result<(), E>,
{
    assert_fits::<I, O>(data);
    let mut loss_sum = 0.0f64;
    let mut steps = 0;
    for (features, labels) in data.batches(batch, seed, epoch) {
        let (x, y) = batch_tensors::<I, O>(dev, features, &labels);
        let taken = std::mem::replace(grads, Gradients::leaky());
        let logits = model.forward_mut(x.traced(taken));
        let loss = cross_entropy_with_logits_loss(logits, y);
        loss_sum += f64::from(loss.array()) * labels.len() as f64;
        *grads = loss.backward();
        step(model, grads)?;
        model.zero_grads(grads);
        steps += 1;
    }
    Ok(EpochStats {
        mean_loss: (loss_sum / data.n.max(1) as f64) as f32,
        steps,
        samples: data.n,
    })
}

/// Panics unless `data` fits a model with `I` inputs and `O` outputs (`data.d == I`,
/// `data.classes <= O`).
fn assert_fits<const I: usize, const O: usize>(data: &Dataset) {
    assert_eq!(data.d, I, "data has {} features, model takes {I}", data.d);
    assert!(
        data.classes <= O,
        "data has {} classes, model has {O} outputs",
        data.classes
    );
}

/// Loss and accuracy of a model on a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy loss per sample.
    pub loss: f32,
    /// Fraction of samples whose largest logit is the true class, in `[0, 1]`.
    pub accuracy: f64,
}

/// Evaluates `model` on all of `data` without a gradient tape (in chunks of 512 samples).
///
/// # Panics
/// If `data.d != I` or `data.classes > O`.
pub fn evaluate<M, const I: usize, const O: usize>(
    dev: &Cpu,
    model: &M,
    data: &Dataset,
) -> Evaluation
where
    M: Module<Inputs<I>, Output = Logits<O>>,
{
    assert_fits::<I, O>(data);
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    for (features, labels) in data.chunks(512) {
        let (x, y) = batch_tensors::<I, O>(dev, features, &labels);
        let logits = model.forward(x);
        let values = logits.as_vec();
        for (row, &label) in values.chunks_exact(O).zip(&labels) {
            if argmax(row) == label as usize {
                correct += 1;
            }
        }
        loss_sum +=
            f64::from(cross_entropy_with_logits_loss(logits, y).array()) * labels.len() as f64;
    }
    let n = data.n.max(1) as f64;
    Evaluation {
        loss: (loss_sum / n) as f32,
        accuracy: correct as f64 / n,
    }
}

/// Fraction of `data` that `model` classifies correctly, in `[0, 1]`; see [`evaluate`].
pub fn accuracy<M, const I: usize, const O: usize>(dev: &Cpu, model: &M, data: &Dataset) -> f64
where
    M: Module<Inputs<I>, Output = Logits<O>>,
{
    evaluate::<M, I, O>(dev, model, data).accuracy
}

/// Index of the largest value (the first one on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::optim::{Adam, AdamConfig, Optimizer};

    #[test]
    fn argmax_picks_first_largest() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        assert_eq!(argmax(&[2.0]), 0);
    }

    #[test]
    fn training_reduces_loss_on_a_separable_toy_problem() {
        // Two classes, 4 features: class = whether feature 0 > 0.5.
        let n = 200;
        let mut features = Vec::new();
        let mut labels = Vec::new();
        let mut rng = crate::data::SplitMix64::new(3);
        for _ in 0..n {
            let row: Vec<f32> = (0..4).map(|_| rng.below(1000) as f32 / 1000.0).collect();
            labels.push(u8::from(row[0] > 0.5));
            features.extend(row);
        }
        let data = Dataset {
            features,
            labels,
            n,
            d: 4,
            classes: 2,
        };
        let (dev, mut net) = build::<Mlp<4, 16, 2>>(0);
        let mut grads = net.alloc_grads();
        let mut opt = Adam::new(
            &net,
            AdamConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        let first = train_epoch_with::<_, 4, 2, _, _>(
            &dev,
            &mut net,
            &mut grads,
            &data,
            32,
            0,
            0,
            |m, g| opt.update(m, g),
        )
        .unwrap();
        assert_eq!((first.steps, first.samples), (7, 200));
        let mut last = first;
        for epoch in 1..30 {
            last = train_epoch_with::<_, 4, 2, _, _>(
                &dev,
                &mut net,
                &mut grads,
                &data,
                32,
                0,
                epoch,
                |m, g| opt.update(m, g),
            )
            .unwrap();
        }
        assert!(
            last.mean_loss < first.mean_loss * 0.5,
            "{first:?} -> {last:?}"
        );
        let eval = evaluate::<_, 4, 2>(&dev, &net, &data);
        assert!(eval.accuracy > 0.9, "{eval:?}");
    }

    #[test]
    fn step_errors_propagate() {
        let data = Dataset {
            features: vec![0.0; 8],
            labels: vec![0, 1],
            n: 2,
            d: 4,
            classes: 2,
        };
        let (dev, mut net) = build::<Mlp<4, 8, 2>>(0);
        let mut grads = net.alloc_grads();
        let r = train_epoch_with::<_, 4, 2, _, _>(
            &dev,
            &mut net,
            &mut grads,
            &data,
            1,
            0,
            0,
            |_, _| Err("boom"),
        );
        assert_eq!(r, Err("boom"));
    }
}

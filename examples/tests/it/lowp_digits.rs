//! Low-precision optimizer state at the task level (issue 16): AdamW with `bf16` moments
//! (`zoo::AdamWBf16`) and with 8-bit block-wise moments (`zoo::AdamW8bit`, tensors of at least
//! 4,096 elements; and a variant that quantises every tensor) against f32-state
//! AdamW on the embedded digits, with the comparison's MLP (64-128-128-10, 26,122 parameters),
//! AdamW's digits settings (lr 1e-2 constant, betas 0.9/0.999, decay 1e-2), batch 64, the
//! same batches for all.
//!
//! The bound is not a number picked to pass: a storage dtype must change the trained model
//! less than a different random initialisation of the f32 run does. The test trains f32-state
//! AdamW from three initialisations (seeds 0, 1, 2), takes the largest difference of their
//! test losses from seed 0's as the run-to-run spread, and requires each low-precision run
//! from seed 0 to lie within that spread of f32 seed 0 (test loss) and within 2 percentage
//! points of its test accuracy. It also checks the state's size against the storage formats:
//! 2 bytes per moment element for `bf16`, 1 byte plus an `f32` scale per block of 256 for
//! 8-bit. Measured (one run, this build): f32 0.0962 / 97.21% (seed spread 0.0503), bf16
//! 0.1223 / 96.94%, 8-bit from 4,096 elements 0.1018 / 96.94%, 8-bit on every tensor 0.1938 /
//! 95.26%.

use dfdx::nn::{BuildOnDevice, ZeroGrads};
use dfdx::tensor::Cpu;
use examples::data::{digits, Dataset};
use examples::model::{self, Mlp};
use examples::optimizers::ModelOptimizer;
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamW8bit, AdamW8bitConfig, AdamWBf16, AdamWBf16Config, AdamWConfig};

optimizer! {
    /// `zoo::AdamW8bit` without bitsandbytes' `min_8bit_size`: 8-bit moments on every tensor,
    /// the 10-class output layer and the biases included.
    AdamW8bitAll<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2> {
        let m: q8 = momentum(grad, beta1);
        let v: uq8 = second_moment(grad, beta2);
        param = decoupled_decay(param, lr, weight_decay)
            - lr / (1.0 - pow(beta1, step)) * m / (sqrt(v) / sqrt(1.0 - pow(beta2, step)) + eps);
    }
}

const I: usize = digits::N_FEATURES;
const O: usize = digits::N_CLASSES;
type Arch = Mlp<I, 128, O>;
type Net = <Arch as BuildOnDevice<Cpu, f32>>::Built;

/// Epochs of the 80% training split (1,150 samples: 18 batches of 64 per epoch).
const EPOCHS: u64 = 12;
const LR: f64 = 1e-2;

/// Test loss, test accuracy and the optimizer's state bytes after training from `seed`.
fn train(seed: u64, mut opt: Box<dyn ModelOptimizer<Net>>) -> (f32, f64, usize) {
    let (train, test): (Dataset, Dataset) = digits::load().unwrap().split(0.2, 0);
    let (dev, mut net) = model::build::<Arch>(seed);
    let mut grads = net.alloc_grads();
    for epoch in 0..EPOCHS {
        model::train_epoch_with::<_, I, O, _, _>(
            &dev,
            &mut net,
            &mut grads,
            &train,
            64,
            0,
            epoch,
            |m, g| opt.step(m, g),
        )
        .unwrap();
    }
    let eval = model::evaluate::<_, I, O>(&dev, &net, &test);
    (eval.loss, eval.accuracy, opt.state_bytes())
}

fn f32_state() -> Box<dyn ModelOptimizer<Net>> {
    let cfg = AdamWConfig {
        lr: LR.into(),
        ..Default::default()
    };
    Box::new(AdamW::<f32>::new(cfg).unwrap())
}

/// The element counts of the MLP's six tensors (weights and biases of three layers).
const TENSORS: [usize; 6] = [I * 128, 128, 128 * 128, 128, 128 * O, O];

#[test]
fn low_precision_adamw_state_trains_digits_within_the_seed_spread_of_f32_state() {
    let (l0, a0, bytes0) = train(0, f32_state());
    let spread = [1, 2]
        .map(|s| (train(s, f32_state()).0 - l0).abs())
        .into_iter()
        .fold(0.0f32, f32::max);
    let n: usize = TENSORS.iter().sum();
    assert_eq!(n, 26_122);
    assert_eq!(bytes0, 2 * 4 * n, "f32 state: two moments of 4 bytes");

    let bf16 = AdamWBf16Config {
        lr: LR.into(),
        ..Default::default()
    };
    let (lb, ab, bytes_b) = train(0, Box::new(AdamWBf16::<f32>::new(bf16).unwrap()));
    let q8 = AdamW8bitConfig {
        lr: LR.into(),
        ..Default::default()
    };
    let (lq, aq, bytes_q) = train(0, Box::new(AdamW8bit::<f32>::new(q8).unwrap()));
    let all = AdamW8bitAllConfig {
        lr: LR.into(),
        ..Default::default()
    };
    let (la, aa, _) = train(0, Box::new(AdamW8bitAll::<f32>::new(all).unwrap()));
    eprintln!(
        "digits test loss / accuracy after {} steps: f32 {l0:.4} / {a0:.4} (seed spread \
         {spread:.4}), bf16 {lb:.4} / {ab:.4}, 8-bit (>= 4096 elements) {lq:.4} / {aq:.4}, \
         8-bit (every tensor) {la:.4} / {aa:.4}",
        EPOCHS * 18
    );
    assert!(
        spread > 0.0,
        "three seeds gave the same loss: the spread is no bound"
    );
    for (what, l, a) in [("bf16", lb, ab), ("8-bit", lq, aq)] {
        assert!(l.is_finite(), "{what}: {l}");
        assert!(
            (l - l0).abs() <= spread,
            "{what}: loss {l} vs f32 {l0}, spread {spread}"
        );
        assert!((a - a0).abs() <= 0.02, "{what}: accuracy {a} vs f32 {a0}");
    }
    // Quantising the small tensors too still trains (bitsandbytes' reason for the threshold is
    // the accuracy it costs, reported in the zoo docs, not a failure to train).
    assert!(
        la.is_finite() && aa >= 0.9,
        "8-bit on every tensor: {la} / {aa}"
    );
    assert_eq!(bytes_b, 2 * 2 * n, "bf16 state: two moments of 2 bytes");
    // 8-bit codes plus one f32 scale per block of 256 for the two large weights, f32 moments
    // for the four tensors under 4,096 elements.
    let q8_bytes: usize = TENSORS
        .iter()
        .map(|&len| {
            if len >= 4096 {
                len + 4 * len.div_ceil(256)
            } else {
                4 * len
            }
        })
        .sum();
    assert_eq!(bytes_q, 2 * q8_bytes, "8-bit state");
}

//! K-FAC from activation statistics on the digits MLP, against AdamW.
//!
//! ```text
//! cargo run --release -p examples --example kfac_digits
//! ```
//!
//! The setup of `compare`'s default digits run: the embedded UCI digits (1,438 train / 359
//! test, stratified split by seed 0), the MLP 64-128-128-10 with ReLU, 1,000 steps of batch 64
//! in the same order, a warmup-cosine learning rate (warmup 50 steps, final 0.01 × peak), and
//! the same initial weights (`KfacLinear` draws them exactly as dfdx's `Linear`, same seed).
//!
//! - **AdamW**: the zoo's `AdamW` (betas 0.9/0.999, weight decay 0.01) on the plain MLP, peaks
//!   `1e-2` (compare's tuned digits peak) and `3e-3`.
//! - **K-FAC emp.**: the MLP built from `optim_dsl::kfac::builder::KfacLinear`, whose layers
//!   record `Σ a aᵀ` and `Σ ĝ ĝᵀ` during backward; `KfacStats` (EMA decay 0.95, factors handed
//!   over every 10 steps) feeds the zoo's `KFac` (`u = (G + λI)⁻¹ ∇W (A + λI)⁻¹`, plain
//!   Tikhonov damping `λ`; biases take `KFac`'s SGD fallback). `G` is the empirical Fisher (the
//!   gradients of the real labels, one backward per step).
//! - **K-FAC Fisher**: the same, with `G` from labels sampled from the model's softmax (a second
//!   forward and backward per step, see `kfac_fisher_run`), Martens & Grosse's estimator.
//!
//! Learning-rate peaks `{0.03, 0.1, 0.3}` and dampings `{0.01, 0.1, 1}` (Fisher: `{0.1, 1}`)
//! are a small grid, reported in full, divergent runs included.
//!
//! Reported per run: **steps→0.1**, the first step at which the smoothed training loss
//! (bias-corrected EMA of the mini-batch losses, coefficient 0.9, as in `compare`) is at most
//! 0.1; **s→0.1**, the wall time from the start of training to that step; the final smoothed
//! training loss; test loss and accuracy after 1,000 steps; median ms per step (forward,
//! backward, capture, statistics, update).
//!
//! Wall-clock numbers come from a shared 2-core machine with other builds running; they are
//! noisy (see `docs/kfac.md` for a measured table and how it was taken).

use dfdx::nn::builders::{Linear, ReLU};
use dfdx::nn::{ModuleMut, ZeroGrads};
use dfdx::prelude::{cross_entropy_with_logits_loss, Backward};
use dfdx::tensor::{AsArray, Cpu, Gradients, OwnedTape, Trace};
use examples::data::{digits, Dataset, SplitMix64};
use examples::model::{self, batch_tensors, Inputs, Logits};
use optim_dsl::kfac::{builder::KfacLinear, KfacStats, KfacStatsConfig};
use optim_dsl::zoo::{AdamW, AdamWConfig, KFac, KFacConfig};
use optim_dsl::{DfdxUpdate, OptimError, Schedule};
use std::time::{Duration, Instant};

const STEPS: usize = 1000;
const BATCH: usize = 64;
const WARMUP: u64 = 50;
const FINAL_LR: f64 = 0.01;
const TARGET: f64 = 0.1;
const SMOOTHING: f64 = 0.9;
const SEED: u64 = 0;

type PlainMlp = (
    Linear<64, 128>,
    ReLU,
    Linear<128, 128>,
    ReLU,
    Linear<128, 10>,
);
type KfacMlp = (
    KfacLinear<64, 128>,
    ReLU,
    KfacLinear<128, 128>,
    ReLU,
    KfacLinear<128, 10>,
);

/// What one run measured.
struct Outcome {
    label: String,
    steps_to_target: Option<usize>,
    time_to_target: Option<Duration>,
    final_smoothed: f64,
    test_loss: f32,
    test_acc: f64,
    step_ms: f64,
    total: Duration,
}

/// The training and the test set.
type Data<'a> = (&'a Dataset, &'a Dataset);

/// `STEPS` steps of batch `BATCH` over the training set of `data` (epochs reshuffled as
/// `compare` does), calling `step` after each backward; then the evaluation on its test set.
fn train<M>(
    dev: &Cpu,
    model: &mut M,
    mut grads: Gradients<f32, Cpu>,
    (train, test): Data<'_>,
    label: String,
    mut step: impl FnMut(&mut M, &mut Gradients<f32, Cpu>, &Inputs<64>) -> Result<(), OptimError>,
) -> Result<Outcome, OptimError>
where
    M: ModuleMut<Inputs<64, OwnedTape<f32, Cpu>>, Output = Logits<10, OwnedTape<f32, Cpu>>>
        + ZeroGrads<f32, Cpu>
        + dfdx::nn::Module<Inputs<64>, Output = Logits<10>>,
{
    let start = Instant::now();
    let mut times = Vec::with_capacity(STEPS);
    let (mut ema, mut done, mut epoch) = (0.0f64, 0usize, 0u64);
    let (mut steps_to_target, mut time_to_target) = (None, None);
    while done < STEPS {
        for (features, labels) in train.batches(BATCH, SEED, epoch) {
            if done == STEPS {
                break;
            }
            let t0 = Instant::now();
            let (x, y) = batch_tensors::<64, 10>(dev, features, &labels);
            let logits = model.forward_mut(x.clone().traced(grads));
            let loss = cross_entropy_with_logits_loss(logits, y);
            let value = f64::from(loss.array());
            grads = loss.backward();
            step(model, &mut grads, &x)?;
            model.zero_grads(&mut grads);
            times.push(t0.elapsed());
            done += 1;
            ema = SMOOTHING * ema + (1.0 - SMOOTHING) * value;
            let smoothed = ema / (1.0 - SMOOTHING.powi(done as i32));
            if steps_to_target.is_none() && smoothed <= TARGET {
                steps_to_target = Some(done);
                time_to_target = Some(start.elapsed());
            }
        }
        epoch += 1;
    }
    let total = start.elapsed();
    let eval = model::evaluate::<M, 64, 10>(dev, model, test);
    times.sort();
    Ok(Outcome {
        label,
        steps_to_target,
        time_to_target,
        final_smoothed: ema / (1.0 - SMOOTHING.powi(done as i32)),
        test_loss: eval.loss,
        test_acc: eval.accuracy,
        step_ms: times[times.len() / 2].as_secs_f64() * 1e3,
        total,
    })
}

fn schedule(peak: f64) -> Result<Schedule, OptimError> {
    Schedule::warmup_cosine(0.0, peak, WARMUP, STEPS as u64, peak * FINAL_LR)
}

fn adamw_run(data: Data<'_>, peak: f64) -> Result<Outcome, OptimError> {
    let (dev, mut net) = model::build::<PlainMlp>(SEED);
    let grads = net.alloc_grads();
    let mut opt = AdamW::<f32>::new(AdamWConfig {
        lr: schedule(peak)?.into(),
        ..Default::default()
    })?;
    let label = format!("AdamW lr {peak:e}");
    train(&dev, &mut net, grads, data, label, |m, g, _| {
        opt.update(m, g)
    })
}

/// The zoo's `KFac` with the warmup-cosine schedule to `peak` and Tikhonov `damping`.
fn kfac(peak: f64, damping: f64) -> Result<KFac<f32>, OptimError> {
    KFac::<f32>::new(KFacConfig {
        lr: schedule(peak)?.into(),
        damping: damping.into(),
        ..Default::default()
    })
}

fn kfac_run(data: Data<'_>, peak: f64, damping: f64) -> Result<Outcome, OptimError> {
    let (dev, mut net) = model::build::<KfacMlp>(SEED);
    let mut grads = net.alloc_grads();
    let mut stats = KfacStats::new(KfacStatsConfig::default())?;
    stats.watch(&net, &mut grads)?;
    let mut opt = kfac(peak, damping)?;
    let label = format!("K-FAC emp. lr {peak:e} damp {damping:e}");
    train(&dev, &mut net, grads, data, label, |m, g, _| {
        stats.update(m, g, &mut opt)?;
        opt.update(m, g)
    })
}

/// K-FAC with the Fisher of Martens & Grosse: after the usual backward (real labels: the
/// gradient), a *statistics* pass on the same batch with labels sampled from the model's own
/// softmax, backpropagated into a second `Gradients` that is the only one registered with
/// `KfacStats::watch` (the captures of the real pass are dropped by dfdx at the end of its
/// backward, unused). About twice the forward/backward work of the empirical-Fisher run.
fn kfac_fisher_run(data: Data<'_>, peak: f64, damping: f64) -> Result<Outcome, OptimError> {
    let (dev, mut net) = model::build::<KfacMlp>(SEED);
    let grads = net.alloc_grads();
    let mut stats_grads = net.alloc_grads();
    let mut stats = KfacStats::new(KfacStatsConfig::default())?;
    stats.watch(&net, &mut stats_grads)?;
    let mut opt = kfac(peak, damping)?;
    let mut rng = SplitMix64::new(SEED ^ 0xF15E);
    let sample_dev = dev.clone();
    let label = format!("K-FAC Fisher lr {peak:e} damp {damping:e}");
    train(&dev, &mut net, grads, data, label, |m, g, x| {
        let taken = std::mem::replace(&mut stats_grads, Gradients::leaky());
        let logits = m.forward_mut(x.clone().traced(taken));
        let sampled = sample_labels(&logits.as_vec(), &mut rng);
        let (_, y) = batch_tensors::<64, 10>(&sample_dev, x.as_vec(), &sampled);
        stats_grads = cross_entropy_with_logits_loss(logits, y).backward();
        stats.update(m, &mut stats_grads, &mut opt)?;
        m.zero_grads(&mut stats_grads);
        opt.update(m, g)
    })
}

/// One label per row of `logits` (`rows × 10`), drawn from its softmax.
fn sample_labels(logits: &[f32], rng: &mut SplitMix64) -> Vec<u8> {
    logits
        .chunks_exact(10)
        .map(|row| {
            let m = row.iter().copied().fold(f32::MIN, f32::max);
            let p: Vec<f64> = row.iter().map(|v| f64::from(v - m).exp()).collect();
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * p.iter().sum::<f64>();
            let mut acc = 0.0;
            for (k, pk) in p.iter().enumerate() {
                acc += pk;
                if u < acc {
                    return k as u8;
                }
            }
            9
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (train_set, test) = digits::load()?.split(0.2, SEED);
    println!(
        "digits: {} train / {} test; MLP 64-128-128-10; {STEPS} steps of batch {BATCH}; \
         warmup-cosine lr (warmup {WARMUP}, final {FINAL_LR}×peak); seed {SEED}",
        train_set.n, test.n
    );
    let mut runs = Vec::new();
    for peak in [1e-2, 3e-3] {
        runs.push(adamw_run((&train_set, &test), peak)?);
    }
    for damping in [1e-2, 1e-1, 1.0] {
        for peak in [0.03, 0.1, 0.3] {
            runs.push(kfac_run((&train_set, &test), peak, damping)?);
        }
    }
    for damping in [1e-1, 1.0] {
        for peak in [0.03, 0.1, 0.3] {
            runs.push(kfac_fisher_run((&train_set, &test), peak, damping)?);
        }
    }
    println!(
        "{:<36} {:>9} {:>7} {:>11} {:>9} {:>8} {:>7} {:>7}",
        "run", "steps→0.1", "s→0.1", "final train", "test loss", "test acc", "ms/step", "total s"
    );
    for r in &runs {
        println!(
            "{:<36} {:>9} {:>7} {:>11.4} {:>9.4} {:>8.3} {:>7.2} {:>7.2}",
            r.label,
            r.steps_to_target
                .map_or_else(|| "-".to_string(), |s| s.to_string()),
            r.time_to_target
                .map_or_else(|| "-".to_string(), |t| format!("{:.2}", t.as_secs_f64())),
            r.final_smoothed,
            r.test_loss,
            r.test_acc,
            r.step_ms,
            r.total.as_secs_f64(),
        );
    }
    println!("(wall-clock on a shared, loaded 2-core machine: indicative only)");
    Ok(())
}

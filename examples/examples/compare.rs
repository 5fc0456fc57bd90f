//! Compare the zoo's optimizers on the same model, data, batches and step budget.
//!
//! ```text
//! cargo run --release -p examples --example compare                     # embedded digits
//! cargo run --release -p examples --example compare -- --help
//! cargo run --release -p examples --example compare -- --optimizers adamw,lion --steps 2000
//! cargo run --release -p examples --example compare -- --dataset fashion-mnist [--data DIR]
//! cargo run --release -p examples --example compare -- --dataset fashion-mnist --model cnn
//! cargo run --release -p examples --example compare -- --task charlm    # transformer LM
//! cargo run --release -p examples --example compare -- --task charlm --sweep
//! ```
//!
//! `--task charlm` trains a byte-level decoder-only transformer on embedded Shakespeare with
//! its own optimizer table (`examples::charlm::optimizers`); its set-up, reports, sweep and
//! measured results are in the README ("At a realistic scale") and `compare/charlm.rs`. Everything
//! below is about the default task, image classification (`--task classify`).
//!
//! Every optimizer gets identical conditions: the model is built from the same seed (same
//! initial weights), sees the same mini-batches in the same order for the same number of steps,
//! and its learning rate follows the same warmup-cosine shape (linear warmup from 0 over the
//! first 5% of the steps to the optimizer's peak learning rate, cosine decay to 1% of the peak
//! at the last step), scaled to that optimizer's peak. Reported per optimizer:
//!
//! - **train loss**: mean cross-entropy over the whole training set after the last step;
//! - **test loss / test acc**: on the held-out set (digits: stratified 20% split by `--seed`;
//!   Fashion-MNIST: the official 10,000 test images);
//! - **steps→T**: the first step at which the smoothed training loss (bias-corrected EMA of the
//!   mini-batch losses, coefficient 0.9, about a 10-step window) is at most the target `T`
//!   (`--target-loss`; digits 0.1, Fashion-MNIST 0.4); `-` if never;
//! - **ms/step**: median wall time of a whole step (batch to tensors, forward, backward, the
//!   optimizer's `update`, zeroing the gradients); **update ms**: median time of the `update`
//!   call alone, timed separately; **update %**: total `update` time over total step time
//!   (the CSV also has the means). Medians, because other processes on a small machine inflate
//!   a few steps a lot;
//! - with `--ema DECAY`: the test accuracy of an exponential moving average of the weights
//!   (dfdx's `ModelEMA`, updated after every step, not counted in the step time).
//!
//! Outputs: the table on stdout; `summary.csv` (one row per optimizer), `curves.csv` (per step:
//! learning rate, mini-batch loss, smoothed loss) and `loss_curves.svg` (smoothed training loss
//! against steps, log scale) in `--out` (default `target/compare/`). A progress bar per
//! optimizer is drawn on stderr when it is a terminal; otherwise (output redirected to a file)
//! a plain progress line is printed every tenth of each run.
//!
//! # Optimizers and peak learning rates
//!
//! The list is `examples::optimizers::OPTIMIZERS` (`examples/src/optimizers.rs`; adding an
//! optimizer is one line there; `--list` prints it). `--lr NAME=VALUE` overrides a peak
//! learning rate (repeatable).
//!
//! | name    | peak lr | settings (others at the zoo's PyTorch defaults)              |
//! |---------|---------|--------------------------------------------------------------|
//! | sgd     | 0.1     | Nesterov momentum 0.9, no weight decay                       |
//! | adamw   | 1e-2    | betas (0.9, 0.999), eps 1e-8, decoupled weight decay 0.01    |
//! | lion    | 1e-3    | betas (0.9, 0.99), decoupled weight decay 0.1                |
//! | adam    | 1e-2    | betas (0.9, 0.999), eps 1e-8, no weight decay                |
//! | rmsprop | 1e-2    | alpha 0.99, eps 1e-8, no momentum                            |
//! | adagrad | 0.1     | no lr decay, eps 1e-10                                       |
//! | muon    | 5e-3    | Nesterov 0.95, 5 Newton-Schulz steps; AdamW lr 3e-3 on vectors |
//! | adafactor | 1e-1  | relative step `min(lr, 1/sqrt(t))`, factored second moments  |
//! | shampoo | 1e-2    | Adam grafting, inverse roots every 10 steps                  |
//! | soap    | 3e-3    | betas (0.95, 0.95), eigenbasis refresh every 10 steps        |
//! | lamb    | 3e-3    | betas (0.9, 0.999), per-tensor trust ratio                   |
//!
//! The matrix optimizers (muon … lamb) were swept over {3e-3, 5e-3, 1e-2, 2e-2, 3e-2, 1e-1}
//! around their defaults with the same rule (lowest final test loss).
//!
//! How they were chosen: a sweep over half-decades on the default digits run (below), taking
//! for each optimizer the peak with the lowest final test loss — except Lion, whose lowest test
//! loss (0.143 at 3e-4) comes with the slowest progress of the whole sweep (475 steps to loss
//! 0.1, 96.1% accuracy); it gets 1e-3, a tenth of AdamW's peak as the Lion paper recommends
//! (with weight decay ten times AdamW's): 197 steps to loss 0.1, 97.2% accuracy, but an
//! over-confident end (train loss 1e-4, test loss 0.33). The peaks are tuned on the digits
//! test split (there is no separate validation split), so the digits accuracies are slightly
//! optimistic. Fashion-MNIST with the MLP has its own peaks (`FASHION_MNIST_PEAKS`, below).
//!
//! ```text
//! test loss / steps→0.1 after 1,000 steps (* = chosen; div = diverged; blank = not run)
//! peak lr          sgd        adamw         lion         adam      rmsprop      adagrad
//!    3e-5                               2.002/-
//!    1e-4                               0.667/-                   0.696/-
//!    3e-4                  0.226/-    0.143/475      0.226/-      0.214/-
//!    1e-3                0.130/302    0.333/197*   0.130/302    0.124/265
//!    3e-3                0.114/168    0.497/171    0.117/168    0.116/162      0.303/-
//!    1e-2   0.191/807    0.101/110*   0.512/168    0.098/110*   0.111/140*   0.146/309
//!    3e-2   0.128/252    0.140/141                 0.111/112    0.172/180    0.108/143
//!    1e-1   0.111/127*                                                div    0.089/120*
//!    3e-1   0.114/107                                                        0.129/180
//!       1         div
//! ```
//!
//! # Models
//!
//! - `--model mlp` (default): `d → H → ReLU → H → ReLU → 10` with `--hidden H` in
//!   {32, 64, 128, 256, 512} (default 128); dfdx's layer sizes are compile-time constants, so
//!   the widths are a fixed set.
//! - `--model cnn` (Fashion-MNIST only): one 5×5 stride-2 convolution with 16 channels
//!   (28×28 → 12×12×16), ReLU, then `2304 → H → ReLU → 10`. dfdx 0.13 compiles its
//!   `conv2d`/`Conv2D`/pooling only with its `nightly` feature (generic const expressions, a
//!   nightly compiler), so on stable the convolution is written as what dfdx's CPU kernel does
//!   anyway: im2col then a matrix product. The im2col of the *input* needs no gradient, so it is
//!   done on the host per batch (counted in ms/step); the product is a dfdx `Linear` applied to
//!   every patch (shared weights). A second convolution would need an im2col inside the
//!   autograd graph, which dfdx 0.13 does not offer on stable, so the CNN stops at one.
//!   Measured (otherwise idle 2-core machine, `--release`, batch 128, hidden 128): a CNN step
//!   takes 4.2–6.4 ms (median; the host im2col of the batch included) against 1.2–1.9 ms for the
//!   784-128-128-10 MLP, and the whole 6-optimizer, 3,000-step run 109 s against 35 s, for
//!   about 2 points more test accuracy (≈90.5% vs ≈88.5%) — practical as an option, too slow
//!   for the default.
//!
//! # Measured
//!
//! 2-core machine, `--release`, rustc 1.95, dfdx 0.13, seed 0; single runs (the digits one
//! with a compilation running alongside, the Fashion-MNIST ones on an otherwise idle machine).
//! The default run (`cargo run --release -p examples --example compare`, embedded digits,
//! 64-128-128-10 MLP, 1,000 steps of batch 64, all eleven optimizers) takes **8.0 s** wall time:
//!
//! ```text
//! digits: 1438 train / 359 test samples; MLP 64-128-128-10; 1000 steps of batch 64 (~44.5 epochs); warmup-cosine lr (warmup 50 steps, final 0.01×peak); seed 0
//! model: 26122 trainable parameters
//! optimizer  peak lr  train loss  test loss  test acc  steps→0.1  ms/step  update ms  update %
//! --------------------------------------------------------------------------------------------
//! sgd           1e-1      0.0020     0.1114    97.21%        127    0.374      0.024      7.2%
//! adamw         1e-2      0.0005     0.1005    98.05%        110    0.373      0.032      9.6%
//! lion          1e-3      0.0001     0.3330    97.21%        197    0.360      0.024      7.5%
//! adam          1e-2      0.0004     0.0977    98.05%        110    0.374      0.031      9.6%
//! rmsprop       1e-2      0.0002     0.1112    98.05%        140    0.384      0.030      8.2%
//! adagrad       1e-1      0.0019     0.0887    97.77%        120    0.379      0.028      7.7%
//! muon          5e-3      0.0013     0.0887    98.05%        346    1.802      1.432     78.4%
//! adafactor     1e-1      0.0002     0.1103    98.05%        168    0.557      0.200     37.3%
//! shampoo       1e-2      0.0006     0.0741    97.77%         99    0.820      0.518     75.7%
//! soap          3e-3      0.0000     0.0897    98.33%        225    1.092      0.788     87.2%
//! lamb          3e-3      0.0498     0.1336    96.66%        522    0.540      0.189     36.4%
//! ```
//!
//! `--dataset fashion-mnist` (MLP 784-128-128-10, 3,000 steps of batch 128), all eleven
//! optimizers at their Fashion-MNIST peaks, 1,119 s in total on a machine loaded by other
//! builds (load average 10–14 on 2 cores; the ms columns are inflated 2–4× and not comparable
//! between rows; losses and accuracies are exact):
//!
//! ```text
//! Fashion-MNIST: 60000 train / 10000 test samples; MLP 784-128-128-10; 3000 steps of batch 128 (~6.4 epochs); warmup-cosine lr (warmup 150 steps, final 0.01×peak); seed 0
//! model: 118282 trainable parameters
//!
//! optimizer  peak lr  train loss  test loss  test acc  steps→0.4  ms/step  update ms  update %
//! --------------------------------------------------------------------------------------------
//! sgd           1e-1      0.2370     0.3192    88.57%        443    1.888      0.159      8.7%
//! adamw         3e-3      0.2375     0.3190    88.69%        346    5.202      0.297     12.0%
//! lion          1e-3      0.2323     0.3298    88.51%        439    4.885      0.133      6.2%
//! adam          3e-3      0.2387     0.3177    88.74%        346    5.916      0.294     12.1%
//! rmsprop       3e-3      0.2306     0.3159    88.65%        594    1.935      0.151      7.5%
//! adagrad       1e-1      0.2631     0.3312    88.21%        468    4.692      0.151      8.2%
//! muon          3e-3      0.2171     0.3095    89.02%        589   90.966     65.154     90.6%
//! adafactor     1e-1      0.2281     0.3132    88.71%        617    2.712      0.655     30.1%
//! shampoo       1e-2      0.1378     0.3091    89.54%        283   33.775     24.052     84.5%
//! soap          1e-3      0.1883     0.2995    89.42%        522   18.429     15.470     89.2%
//! lamb          1e-2      0.2304     0.3211    88.76%        469    3.653      1.481     40.3%
//! ```
//!
//! The Fashion-MNIST peaks come from their own sweep: each optimizer at its digits peak's
//! half-decade neighbourhood (three runs), plus one more point past an edge that won, lowest
//! final test loss chosen (so, as for digits, tuned on the test set). Test loss / steps→0.4 /
//! test accuracy after 3,000 steps (* = chosen; div = diverged):
//!
//! ```text
//! peak lr           sgd           adamw            lion            adam         rmsprop         adagrad
//!    3e-4                                  0.338/616/88.2
//!    1e-3                  0.347/469/87.7  0.330/439/88.5* 0.346/468/87.7  0.338/613/87.9
//!    3e-3                  0.319/346/88.7* 0.367/439/87.6  0.318/346/88.7* 0.316/594/88.6*
//!    1e-2                  0.322/458/88.5                  0.324/346/88.5  0.346/896/87.5
//!    3e-2  0.344/589/87.7  0.368/993/86.9                  0.368/991/87.0                  0.340/457/87.9
//!    1e-1  0.319/443/88.6*                                                                 0.331/468/88.2*
//!    3e-1  1.071/-/57.5                                                                    0.396/1084/85.9
//!
//! peak lr          muon       adafactor         shampoo            soap            lamb
//!    3e-4                                                  0.426/1887/85.4
//!    1e-3  0.435/1887/84.3                                 0.299/522/89.4* 0.481/-/83.1
//!    3e-3  0.309/589/89.0*                 0.322/345/88.7  0.321/254/89.9  0.365/905/86.9
//!    1e-2  0.311/276/90.2                  0.309/283/89.5* 0.457/150/89.2  0.321/469/88.8*
//!    3e-2  0.396/189/89.7  0.327/617/88.3  0.323/260/89.7                              div
//!    1e-1                  0.313/617/88.7*
//!    3e-1                  0.317/597/88.6
//! ```
//!
//! With tuned rates every optimizer lands within 88.2–89.5% test accuracy at 3,000 steps; the
//! layer-wise methods (Shampoo, SOAP, Muon) have the lowest test losses (0.300–0.310 against
//! AdamW's 0.319) and Shampoo the lowest training loss by far, but their `update` dominates
//! the step on this small MLP (the 784-column first layer makes `GᵀG` 784 × 784). Muon's
//! best-loss peak (3e-3) trains slowly at first (589 steps to 0.4), its 1e-2 run reaches 0.4
//! in 276 steps and the best accuracy of the sweep (90.2%). Muon's `update` time varied 9×
//! with the learning rate in the sweep (whole runs: 38 s at 3e-2, 234–348 s at 1e-3–1e-2), an
//! anomaly for a cost that should not depend on the values (subnormal floats in the momentum
//! buffers reaching the Newton–Schulz products are one suspect).
//!
//! `--dataset fashion-mnist --model cnn`, 109 s in total:
//!
//! ```text
//! Fashion-MNIST: 60000 train / 10000 test samples; CNN conv5x5/2x16-128-10; 3000 steps of batch 128 (~6.4 epochs); warmup-cosine lr (warmup 150 steps, final 0.01×peak); seed 0
//! model: 296746 trainable parameters
//!
//! optimizer  peak lr  train loss  test loss  test acc  steps→0.4  ms/step  update ms  update %
//! --------------------------------------------------------------------------------------------
//! sgd           1e-1      0.1614     0.2754    90.23%        280    4.214      0.227      5.1%
//! adamw         1e-2      0.1067     0.2849    90.65%        251    6.425      0.352      6.0%
//! lion          1e-3      0.1411     0.2867    90.09%        329    4.688      0.253      5.3%
//! adam          1e-2      0.1029     0.2866    90.70%        189    6.209      0.356      6.3%
//! rmsprop       1e-2      0.0950     0.3440    89.95%        254    6.065      0.305      5.7%
//! adagrad       1e-1      0.1451     0.2681    90.83%        252    4.660      0.297      6.2%
//! ```
//!
//! Losses, accuracies and steps→T repeat exactly from run to run on this machine (everything
//! is seeded; a machine with another core count may split dfdx's matrix products differently
//! and round differently); the times vary by ±30% between runs and with other load. The
//! optimizer's `update` is 5–10% of a step here: these models are small and the
//! forward/backward passes dominate; `update` includes the dfdx path's copies of each
//! parameter in and out of a host buffer (see ARCHITECTURE.md).

use std::error::Error;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use dfdx::losses::cross_entropy_with_logits_loss;
use dfdx::nn::builders::{Linear, ReLU};
use dfdx::nn::ModelEMA;
use dfdx::nn::{
    BuildOnDevice, Module, ModuleMut, NonMutableModule, NumParams, TensorCollection, ZeroGrads,
    ZeroSizedModule,
};
use dfdx::shapes::{Const, Dim, HasShape, Shape};
use dfdx::tensor::{
    AsArray, Cpu, Gradients, NoneTape, OwnedTape, Tape, Tensor, TensorFromVec, Trace,
};
use dfdx::tensor_ops::{Backward, ReshapeTo};
use examples::data::{digits, idx, Dataset};
use examples::model::{self, argmax, Evaluation, Mlp};
use examples::optimizers::{self, OptimizerSpec};
use indicatif::{ProgressBar, ProgressStyle};
use optim_dsl::prelude::*;

#[path = "compare/charlm.rs"]
mod charlm;
#[path = "compare/inputs.rs"]
mod inputs;
#[path = "compare/progress.rs"]
mod progress;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/train.rs"]
mod train;

use inputs::*;
use progress::*;
use report::*;
use train::*;
#[path = "shared/plot.rs"]
mod plot_parts;
#[path = "shared/table.rs"]
mod table;

/// Number of classes of both data sets.
const CLASSES: usize = 10;
/// Smoothing coefficient of the training-loss EMA used for steps→T and the plot.
const SMOOTHING: f64 = 0.9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DatasetArg {
    /// UCI handwritten digits, 8×8, embedded in the binary (1,438 train / 359 test).
    Digits,
    /// Fashion-MNIST, 28×28, read from IDX files (60,000 train / 10,000 test).
    FashionMnist,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TaskArg {
    /// Image classification (--dataset, --model).
    Classify,
    /// Byte-level transformer language model on Shakespeare (examples::charlm).
    Charlm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModelArg {
    /// Two hidden ReLU layers of width --hidden.
    Mlp,
    /// One 5×5 stride-2 convolution (16 channels), then a hidden layer of width --hidden
    /// (Fashion-MNIST only).
    Cnn,
}

/// Train a model with several optimizers from the optim-dsl zoo under identical conditions
/// (seed, initial weights, batches, step budget, warmup-cosine schedule) and compare final
/// loss, test accuracy, steps to a target loss and time per step.
///
/// Writes a table to stdout and summary.csv, curves.csv and loss_curves.svg to --out.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// What to train: image classification on --dataset, or the character-level transformer
    /// language model on the embedded Shakespeare text (`charlm`; its own optimizer table).
    #[arg(long, value_enum, default_value_t = TaskArg::Classify)]
    task: TaskArg,
    /// Data set (classify task).
    #[arg(long, value_enum, default_value_t = DatasetArg::Digits)]
    dataset: DatasetArg,
    /// Directory holding the Fashion-MNIST IDX files (gzipped or not).
    #[arg(long, value_name = "DIR", default_value = idx::DEFAULT_FASHION_MNIST_DIR)]
    data: PathBuf,
    /// Model.
    #[arg(long, value_enum, default_value_t = ModelArg::Mlp)]
    model: ModelArg,
    /// Hidden width (32, 64, 128, 256 or 512).
    #[arg(long, default_value_t = 128, value_parser = parse_width)]
    hidden: usize,
    /// Optimizers to compare, comma-separated (see --list), or `all`.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    optimizers: Vec<String>,
    /// Override a peak learning rate, `NAME=VALUE` (repeatable).
    #[arg(long = "lr", value_name = "NAME=VALUE", value_parser = parse_lr_override)]
    lr: Vec<(String, f64)>,
    /// Optimizer steps per run [default: digits 1000, fashion-mnist 3000].
    #[arg(long)]
    steps: Option<usize>,
    /// Mini-batch size [default: digits 64, fashion-mnist 128, charlm 16 windows].
    #[arg(long)]
    batch: Option<usize>,
    /// Fraction of the steps spent in linear warmup.
    #[arg(long, default_value_t = 0.05)]
    warmup: f64,
    /// Final learning rate as a fraction of the peak (end of the cosine).
    #[arg(long, default_value_t = 0.01)]
    final_lr: f64,
    /// Target training loss for steps→T [default: digits 0.1, fashion-mnist 0.4, charlm 3.0
    /// bits/char].
    #[arg(long)]
    target_loss: Option<f64>,
    /// Seed of the initial weights, the split (digits) and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also evaluate an exponential moving average of the weights with this decay (e.g. 0.99).
    #[arg(long, value_name = "DECAY")]
    ema: Option<f64>,
    /// Output directory for summary.csv, curves.csv and loss_curves.svg.
    /// [default: target/compare, charlm: target/compare-charlm]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// charlm: evaluate on 64 validation windows every this many steps (0: only at the end).
    #[arg(long, default_value_t = 50)]
    eval_every: usize,
    /// charlm: sweep each selected optimizer's peak learning rate on the half-decade ladder
    /// around its table value (3 to 5 runs each) and write sweep.csv instead of comparing.
    #[arg(long)]
    sweep: bool,
    /// charlm --sweep: at most this many runs per optimizer (3: the table's peak and its two
    /// neighbours only). An optimizer given with --lr NAME=VALUE is run once, not swept.
    #[arg(long, default_value_t = charlm::SWEEP_MAX)]
    sweep_max: usize,
    /// charlm: train nothing; combine the runs recorded in these output directories (of
    /// earlier comparisons, sweeps or merges; comma-separated): pool their sweep rows, choose
    /// each optimizer's peak by the lowest final validation loss, and write sweep.csv, the
    /// chosen runs' CSVs and the plots to --out.
    #[arg(long, value_name = "DIR", value_delimiter = ',')]
    merge: Vec<PathBuf>,
    /// Do not write the SVG plot.
    #[arg(long)]
    no_plot: bool,
    /// List the known optimizers with their peak learning rates and exit.
    #[arg(long)]
    list: bool,
}

fn parse_width(s: &str) -> Result<usize, String> {
    let w: usize = s.parse().map_err(|e| format!("{e}"))?;
    if WIDTHS.contains(&w) {
        Ok(w)
    } else {
        Err(format!("supported widths are {WIDTHS:?}"))
    }
}

fn parse_lr_override(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    let value: f64 = value
        .parse()
        .map_err(|e| format!("bad learning rate {value:?}: {e}"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("learning rate must be positive, got {value}"));
    }
    Ok((name.trim().to_lowercase(), value))
}

/// Peak learning rates for `--dataset fashion-mnist --model mlp`, from the sweep in the module
/// docs (lowest final test loss); an optimizer not listed uses its digits peak.
const FASHION_MNIST_PEAKS: &[(&str, f64)] = &[
    ("sgd", 1e-1),
    ("adamw", 3e-3),
    ("lion", 1e-3),
    ("adam", 3e-3),
    ("rmsprop", 3e-3),
    ("adagrad", 1e-1),
    ("muon", 3e-3),
    ("adafactor", 1e-1),
    ("shampoo", 1e-2),
    ("soap", 1e-3),
    ("lamb", 1e-2),
];

/// Hidden widths the binary is compiled for.
const WIDTHS: [usize; 5] = [32, 64, 128, 256, 512];

/// Everything a single run needs besides the model.
struct RunConfig {
    steps: usize,
    batch: usize,
    warmup: u64,
    final_lr: f64,
    target: f64,
    seed: u64,
    ema: Option<f64>,
}

impl RunConfig {
    /// The learning-rate schedule for a given peak.
    ///
    /// # Errors
    /// A warmup longer than the run, or a non-finite peak or final value.
    fn schedule(&self, peak: f64) -> Result<Schedule, OptimError> {
        warmup_cosine_from_zero(peak, self.warmup, self.steps, self.final_lr)
    }
}

/// Linear warmup from 0 to `peak` over `warmup` steps, then cosine decay to `peak * final_lr`
/// at step `steps` (both tasks' learning-rate schedule).
///
/// # Errors
/// A warmup longer than the run, or a non-finite peak or final value.
fn warmup_cosine_from_zero(
    peak: f64,
    warmup: u64,
    steps: usize,
    final_lr: f64,
) -> Result<Schedule, OptimError> {
    Schedule::warmup_cosine(0.0, peak, warmup, steps as u64, peak * final_lr)
}

/// One point of a loss curve.
#[derive(Clone, Copy, Debug)]
struct Point {
    step: usize,
    lr: f64,
    loss: f64,
    smoothed: f64,
}

/// The outcome of training with one optimizer.
struct RunResult {
    name: &'static str,
    type_name: &'static str,
    peak_lr: f64,
    train: Evaluation,
    test: Evaluation,
    ema_test: Option<Evaluation>,
    steps_to_target: Option<usize>,
    /// Wall time of each step (forward, backward, update, zeroing) and of its `update` call.
    step_times: Vec<Duration>,
    update_times: Vec<Duration>,
    steps: usize,
    curve: Vec<Point>,
}

/// Median of `times` in milliseconds (0 for none).
fn median_ms(times: &[Duration]) -> f64 {
    let mut v: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Mean of `times` in milliseconds (0 for none).
fn mean_ms(times: &[Duration]) -> f64 {
    times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / times.len().max(1) as f64
}

impl RunResult {
    /// Median milliseconds per step (robust to other processes on the machine).
    fn ms_per_step(&self) -> f64 {
        median_ms(&self.step_times)
    }
    /// Median milliseconds of the `update` call.
    fn update_ms(&self) -> f64 {
        median_ms(&self.update_times)
    }
    /// Share of the step spent in `update`: total update time over total step time.
    fn update_share(&self) -> f64 {
        mean_ms(&self.update_times) / mean_ms(&self.step_times).max(1e-12)
    }
}

// ---------------------------------------------------------------------------------------------

/// Calls `$body` with `$w` bound to a const generic equal to the run-time width `$width`.
macro_rules! with_width {
    ($width:expr, $w:ident => $body:expr) => {
        with_width!(@arms $width, $w => $body; 32 64 128 256 512)
    };
    (@arms $width:expr, $w:ident => $body:expr; $($n:literal)+) => {
        match $width {
            $($n => {
                const $w: usize = $n;
                $body
            })+
            other => Err(format!("unsupported hidden width {other}; use one of {WIDTHS:?}").into()),
        }
    };
}

/// The closing line of a run: the files written into `out_dir` and the time since `start`.
fn report_written(written: &[&str], out_dir: &Path, start: Instant) {
    println!(
        "\nwrote {} to {}; total {:.1} s",
        written.join(", "),
        out_dir.display(),
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn Error>> {
    if args.task == TaskArg::Charlm {
        return run_charlm(&args);
    }
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/compare"));
    if args.list {
        print_list(optimizers::OPTIMIZERS);
        return Ok(());
    }
    let digits = args.dataset == DatasetArg::Digits;
    let peaks = match (args.dataset, args.model) {
        (DatasetArg::FashionMnist, ModelArg::Mlp) => FASHION_MNIST_PEAKS,
        _ => &[],
    };
    let selected = select(&args, optimizers::OPTIMIZERS, peaks)?;
    if digits && args.model == ModelArg::Cnn {
        return Err("--model cnn is for 28×28 images: use it with --dataset fashion-mnist".into());
    }
    if args.sweep {
        return Err("--sweep is for --task charlm".into());
    }
    validate_common(&args)?;
    if let Some(d) = args.ema {
        if !(0.0..1.0).contains(&d) {
            return Err(format!("--ema must be in [0, 1), got {d}").into());
        }
    }
    let steps = args.steps.unwrap_or(if digits { 1000 } else { 3000 });
    let batch = args.batch.unwrap_or(if digits { 64 } else { 128 });
    if steps == 0 || batch == 0 {
        return Err("--steps and --batch must be positive".into());
    }
    let cfg = RunConfig {
        steps,
        batch,
        warmup: (args.warmup * steps as f64).round() as u64,
        final_lr: args.final_lr,
        target: args.target_loss.unwrap_or(if digits { 0.1 } else { 0.4 }),
        seed: args.seed,
        ema: args.ema,
    };
    // a warmup longer than the run (--warmup > 1) or a bad --final-lr: fail before any work
    cfg.schedule(1.0)
        .map_err(|e| format!("--warmup / --final-lr: {e}"))?;

    let start = Instant::now();
    let (train, test) = if digits {
        digits::load()?.split(0.2, args.seed)
    } else {
        idx::load_fashion_mnist(&args.data).map_err(|e| {
            format!(
                "cannot load Fashion-MNIST from {}:\n  {e}",
                args.data.display()
            )
        })?
    };
    let data_name = match args.dataset {
        DatasetArg::Digits => "digits",
        DatasetArg::FashionMnist => "Fashion-MNIST",
    };
    let model_name = match args.model {
        ModelArg::Mlp => format!("MLP {}-{h}-{h}-{CLASSES}", train.d, h = args.hidden),
        ModelArg::Cnn => format!(
            "CNN conv{KERNEL}x{KERNEL}/{STRIDE}x{CHANNELS}-{}-{CLASSES}",
            args.hidden
        ),
    };
    println!(
        "{data_name}: {} train / {} test samples; {model_name}; {} steps of batch {} (~{:.1} \
         epochs); warmup-cosine lr (warmup {} steps, final {}×peak); seed {}",
        train.n,
        test.n,
        cfg.steps,
        cfg.batch,
        (cfg.steps * cfg.batch) as f64 / train.n as f64,
        cfg.warmup,
        cfg.final_lr,
        cfg.seed
    );

    let results = match (args.dataset, args.model) {
        (DatasetArg::Digits, _) => with_width!(args.hidden, H => run_all::<
            Mlp<{ digits::N_FEATURES }, H, CLASSES>,
            _,
            _,
        >(&cfg, &selected, &train, &test, &Flat::<{ digits::N_FEATURES }>)),
        (DatasetArg::FashionMnist, ModelArg::Mlp) => with_width!(args.hidden, H => run_all::<
            Mlp<{ SIDE * SIDE }, H, CLASSES>,
            _,
            _,
        >(&cfg, &selected, &train, &test, &Flat::<{ SIDE * SIDE }>)),
        (DatasetArg::FashionMnist, ModelArg::Cnn) => with_width!(args.hidden, H => run_all::<
            Cnn<H>,
            _,
            _,
        >(&cfg, &selected, &train, &test, &Patches)),
    }?;

    println!();
    print_table(&results, cfg.target);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    write_csvs(&out_dir, &results, cfg.target)
        .map_err(|e| format!("cannot write to {}: {e}", out_dir.display()))?;
    let mut written = vec!["summary.csv", "curves.csv"];
    if !args.no_plot {
        let title = format!("{data_name}, {model_name}: smoothed training loss");
        plot(&out_dir.join("loss_curves.svg"), &results, &title)?;
        written.push("loss_curves.svg");
    }
    report_written(&written, &out_dir, start);
    Ok(())
}

/// The selected optimizers of `table` with their peak learning rates (after `--lr` overrides).
///
/// The peak is, in order of precedence: `--lr NAME=VALUE`, the entry of `peaks` (a per-data-set
/// table such as [`FASHION_MNIST_PEAKS`]), the table's `peak_lr`.
fn select(
    args: &Args,
    table: &'static [OptimizerSpec],
    peaks: &[(&str, f64)],
) -> Result<Vec<(&'static OptimizerSpec, f64)>, Box<dyn Error>> {
    let find = |name: &str| table.iter().find(|s| s.name == name);
    let known = table.iter().map(|s| s.name).collect::<Vec<_>>().join(", ");
    let names: Vec<String> = if args.optimizers.iter().any(|s| s.trim() == "all") {
        table.iter().map(|s| s.name.to_string()).collect()
    } else {
        args.optimizers
            .iter()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    };
    for (name, _) in &args.lr {
        if find(name).is_none() {
            return Err(format!("--lr {name}=…: unknown optimizer; known: {known}").into());
        }
    }
    let mut out = Vec::new();
    for name in names {
        let spec =
            find(&name).ok_or_else(|| format!("unknown optimizer `{name}`; known: {known}"))?;
        let lr = args
            .lr
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
            .or_else(|| peaks.iter().find(|(n, _)| *n == name).map(|&(_, v)| v))
            .unwrap_or(spec.peak_lr);
        out.push((spec, lr));
    }
    if out.is_empty() {
        return Err("no optimizers selected".into());
    }
    Ok(out)
}

/// Checks the options both tasks share.
fn validate_common(args: &Args) -> Result<(), Box<dyn Error>> {
    if !(0.0..1.0).contains(&args.warmup) {
        return Err(format!("--warmup must be in [0, 1), got {}", args.warmup).into());
    }
    if !(0.0..=1.0).contains(&args.final_lr) {
        return Err(format!("--final-lr must be in [0, 1], got {}", args.final_lr).into());
    }
    if let Some(t) = args.target_loss {
        if !(t.is_finite() && t > 0.0) {
            return Err(format!("--target-loss must be positive, got {t}").into());
        }
    }
    Ok(())
}

/// Prints `table` for `--list`.
fn print_list(table: &[OptimizerSpec]) {
    let w = table.iter().map(|s| s.name.len()).max().unwrap_or(0).max(4);
    println!(
        "{:<w$}  {:>7}  summary [non-default settings]",
        "name", "peak lr"
    );
    for s in table {
        let settings = if s.settings.is_empty() {
            String::new()
        } else {
            format!("  [{}]", s.settings)
        };
        println!("{:<w$}  {:>7e}  {}{settings}", s.name, s.peak_lr, s.summary);
    }
}

/// `--task charlm`: the transformer language model (see `compare/charlm.rs`).
fn run_charlm(args: &Args) -> Result<(), Box<dyn Error>> {
    use examples::charlm::optimizers as lm_optimizers;
    if args.list {
        print_list(lm_optimizers::OPTIMIZERS);
        return Ok(());
    }
    let selected = select(args, lm_optimizers::OPTIMIZERS, &[])?;
    validate_common(args)?;
    if args.ema.is_some() || args.dataset != DatasetArg::Digits || args.model != ModelArg::Mlp {
        return Err("--ema, --dataset and --model are for --task classify".into());
    }
    let steps = args.steps.unwrap_or(500);
    let batch = args.batch.unwrap_or(16);
    if steps == 0 || batch == 0 {
        return Err("--steps and --batch must be positive".into());
    }
    let cfg = charlm::LmConfig {
        steps,
        batch,
        warmup: (args.warmup * steps as f64).round() as u64,
        final_lr: args.final_lr,
        target: args.target_loss.unwrap_or(3.0),
        seed: args.seed,
        eval_every: args.eval_every,
    };
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/compare-charlm"));
    let start = Instant::now();
    let data = charlm::load_data()?;
    println!("{}", charlm::describe(&cfg, &data));
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let io_err = |e: std::io::Error| format!("cannot write to {}: {e}", out_dir.display());
    let mut written = vec!["summary.csv", "curves.csv", "val_curves.csv"];
    if !args.merge.is_empty() {
        let order: Vec<&str> = lm_optimizers::OPTIMIZERS.iter().map(|s| s.name).collect();
        let (sweeps, chosen) = charlm::merge(&args.merge, &order)?;
        charlm::print_sweep(&sweeps, cfg.target);
        println!();
        charlm::print_table(&chosen, cfg.target);
        charlm::write_sweep_csv(&out_dir, &sweeps, cfg.target).map_err(io_err)?;
        written.insert(0, "sweep.csv");
        charlm::write_csvs(&out_dir, &chosen.iter().collect::<Vec<_>>(), cfg.target)
            .map_err(io_err)?;
        if !args.no_plot {
            written.extend(charlm::plot(&out_dir, &chosen, "charlm, Shakespeare")?);
        }
    } else if args.sweep {
        if args.sweep_max == 0 {
            return Err("--sweep-max must be at least 1".into());
        }
        let fixed: Vec<String> = args.lr.iter().map(|(n, _)| n.clone()).collect();
        let mut sweeps = charlm::sweep(&cfg, &selected, &data, args.sweep_max, &fixed)?;
        println!();
        charlm::print_sweep(&sweeps, cfg.target);
        charlm::write_sweep_csv(&out_dir, &sweeps, cfg.target).map_err(io_err)?;
        written.insert(0, "sweep.csv");
        // the comparison at the chosen peaks: each sweep's best run
        let chosen: Vec<charlm::LmRun> = sweeps.iter_mut().map(|s| s.swap_remove(0)).collect();
        println!("\nat the chosen peaks:");
        charlm::print_table(&chosen, cfg.target);
        charlm::write_csvs(&out_dir, &chosen.iter().collect::<Vec<_>>(), cfg.target)
            .map_err(io_err)?;
        if !args.no_plot {
            written.extend(charlm::plot(&out_dir, &chosen, "charlm, Shakespeare")?);
        }
    } else {
        let runs = charlm::run_all(&cfg, &selected, &data)?;
        println!();
        charlm::print_table(&runs, cfg.target);
        charlm::write_csvs(&out_dir, &runs.iter().collect::<Vec<_>>(), cfg.target)
            .map_err(io_err)?;
        if !args.no_plot {
            written.extend(charlm::plot(&out_dir, &runs, "charlm, Shakespeare")?);
        }
    }
    report_written(&written, &out_dir, start);
    Ok(())
}

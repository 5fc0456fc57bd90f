//! `compare --task charlm`: the byte-level transformer on the embedded Shakespeare text.
//!
//! Every optimizer trains the same model (`examples::charlm::CharLm`, built from `--seed`) on
//! the same batches (random windows drawn from `(seed, step)`) for the same number of steps,
//! with its learning rate on the same warmup-cosine shape scaled to its peak. Reported:
//! validation bits/char on the whole validation text after the last step; the smoothed
//! training loss; steps and training wall-clock until the smoothed training loss first reaches
//! `--target-loss` bits/char (the batches are fresh text, so before the first epoch ends this
//! is a held-out estimate); median ms per step and per `update`; the `update` share of the
//! training time; and the bytes of the optimizer's state buffers. Evaluations (every
//! `--eval-every` steps on 64 validation windows, and the final one) are not counted in any
//! time.
//!
//! `--sweep` instead runs each selected optimizer at several peak learning rates on the
//! half-decade ladder (…, 1e-3, 3e-3, 1e-2, …): the table's peak and its two neighbours, then
//! one more step outward while the best value sits at an edge, at most `--sweep-max` runs per
//! optimizer (default [`SWEEP_MAX`]); an optimizer whose peak is given with `--lr NAME=VALUE`
//! is not swept but run once at that peak. The best peak has the lowest final validation loss;
//! a diverged run counts as worst. Writes `sweep.csv` (every run) and prints the sweep table,
//! then prints the comparison table of the chosen runs and writes their `summary.csv`,
//! `curves.csv`, `val_curves.csv` and plots — what the comparison command gives at those peaks
//! (the runs are deterministic), so one invocation tunes and compares.

use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use dfdx::nn::{BuildModule, NumParams, ZeroGrads};
use dfdx::tensor::Cpu;
use examples::charlm::{
    bits, ladder, model, optimizers, CharLm, CharLmOf, Kfac, LinearKind, Plain,
};
use examples::data::text::{self, Corpus};
use examples::optimizers::OptimizerSpec;
use optim_dsl::kfac::KfacStats;
use optim_dsl::prelude::*;
use optim_dsl::OptimError;

use super::{
    mean_ms, median_ms, plot_series, short_number, warmup_cosine_from_zero, Progress, Series,
};

/// Most runs per optimizer in a sweep (default of `--sweep-max`).
pub const SWEEP_MAX: usize = 5;
/// Smoothing coefficient of the training-loss EMA (as the classification task).
const SMOOTHING: f64 = 0.9;
/// Validation windows evaluated every `eval_every` steps (64 × context tokens).
const PERIODIC_WINDOWS: usize = 64;
/// Fraction of the text held out for validation (its tail).
const VAL_FRACTION: f64 = 0.1;

/// The settings of a language-model run (from the command line).
pub struct LmConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Windows per batch.
    pub batch: usize,
    /// Warmup steps (linear from 0).
    pub warmup: u64,
    /// Final learning rate as a fraction of the peak.
    pub final_lr: f64,
    /// Target smoothed training loss, bits/char.
    pub target: f64,
    /// Seed of the weights and the batches.
    pub seed: u64,
    /// Evaluate on the periodic validation windows every this many steps (0: never).
    pub eval_every: usize,
}

impl LmConfig {
    /// Warmup-cosine from 0 to `peak`, ending at `peak * final_lr`.
    ///
    /// # Errors
    /// A warmup longer than the run, or a non-finite peak.
    fn schedule(&self, peak: f64) -> Result<Schedule, OptimError> {
        warmup_cosine_from_zero(peak, self.warmup, self.steps, self.final_lr)
    }
}

/// One point of the training curve.
struct Point {
    step: usize,
    /// Training seconds up to and including this step.
    wall: f64,
    lr: f64,
    bits: f64,
    smoothed: f64,
}

/// The outcome of one optimizer at one peak learning rate.
pub struct LmRun {
    name: String,
    type_name: String,
    peak_lr: f64,
    /// Bits/char on the whole validation text after the last step (`None` if diverged).
    val_bits: Option<f64>,
    /// The step at which the loss became non-finite, if it did.
    diverged_at: Option<usize>,
    steps_to_target: Option<usize>,
    time_to_target: Option<f64>,
    timing: Timing,
    state_bytes: usize,
    curve: Vec<Point>,
    /// `(step, training seconds, bits/char)` on the periodic validation windows.
    val_curve: Vec<(usize, f64, f64)>,
}

/// The time columns of a run (milliseconds unless named otherwise).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    median_step_ms: f64,
    median_update_ms: f64,
    mean_step_ms: f64,
    mean_update_ms: f64,
    train_seconds: f64,
}

impl Timing {
    fn of(step_times: &[Duration], update_times: &[Duration]) -> Timing {
        Timing {
            median_step_ms: median_ms(step_times),
            median_update_ms: median_ms(update_times),
            mean_step_ms: mean_ms(step_times),
            mean_update_ms: mean_ms(update_times),
            train_seconds: step_times.iter().map(Duration::as_secs_f64).sum(),
        }
    }
}

impl LmRun {
    fn final_smoothed(&self) -> f64 {
        self.curve.last().map_or(f64::NAN, |p| p.smoothed)
    }
    /// The `update` share of the training time (mean update over mean step, one run).
    fn update_share(&self) -> f64 {
        self.timing.mean_update_ms / self.timing.mean_step_ms.max(1e-12)
    }
    fn train_seconds(&self) -> f64 {
        self.timing.train_seconds
    }
    /// Sort key: final validation loss, diverged runs last.
    fn score(&self) -> f64 {
        self.val_bits.unwrap_or(f64::INFINITY)
    }
}

/// The data: training text, the periodic validation windows and all validation windows.
pub struct LmData {
    train: Corpus,
    periodic: (Vec<u8>, Vec<u8>),
    full: (Vec<u8>, Vec<u8>),
    val_len: usize,
}

/// Loads and splits the embedded text.
pub fn load_data() -> Result<LmData, Box<dyn Error>> {
    let (train, val) = text::load()?.split(VAL_FRACTION)?;
    let context = CharLm::CONTEXT;
    Ok(LmData {
        periodic: val.windows(context, PERIODIC_WINDOWS),
        full: val.windows(context, usize::MAX),
        val_len: val.len(),
        train,
    })
}

/// A line describing the set-up (printed before the runs).
pub fn describe(cfg: &LmConfig, data: &LmData) -> String {
    let dev = Cpu::seed_from_u64(cfg.seed);
    let params = CharLm::build_on(&dev).num_trainable_params();
    let tokens = cfg.steps * cfg.batch * CharLm::CONTEXT;
    format!(
        "charlm: Shakespeare tragedies, {} train / {} validation characters; transformer \
         width {} ({} heads), MLP {}, {} blocks, context {}, {params} parameters; {} steps of \
         {} windows ({tokens} tokens, {:.2} epochs); warmup-cosine lr (warmup {} steps, final \
         {}×peak); seed {}",
        data.train.len(),
        data.val_len,
        CharLm::WIDTH,
        CharLm::HEADS,
        CharLm::MLP,
        CharLm::LAYERS,
        CharLm::CONTEXT,
        cfg.steps,
        cfg.batch,
        tokens as f64 / data.train.len() as f64,
        cfg.warmup,
        cfg.final_lr,
        cfg.seed
    )
}

/// Trains a fresh `CharLm` with optimizer `spec` at `peak_lr` (the K-FAC entry: a
/// `KfacCharLm`, the same weights with statistic-recording projections, and a `KfacStats`
/// updated before every step).
pub fn train_one(
    cfg: &LmConfig,
    spec: &OptimizerSpec,
    peak_lr: f64,
    data: &LmData,
    progress: &Progress,
) -> Result<LmRun, Box<dyn Error>> {
    if optimizers::uses_kfac(spec.name) {
        let stats = KfacStats::new(optimizers::kfac_stats_config())?;
        train_model::<Kfac>(cfg, spec, peak_lr, data, progress, Some(stats))
    } else {
        train_model::<Plain>(cfg, spec, peak_lr, data, progress, None)
    }
}

/// [`train_one`] on the model with projections of kind `K`; with `kfac`, the statistics are
/// registered after `alloc_grads` and folded in (`ModelOptimizer::kfac_update`) after each
/// backward and before each `step`, inside the timed `update`.
fn train_model<K: LinearKind>(
    cfg: &LmConfig,
    spec: &OptimizerSpec,
    peak_lr: f64,
    data: &LmData,
    progress: &Progress,
    mut kfac: Option<KfacStats>,
) -> Result<LmRun, Box<dyn Error>>
where
    CharLmOf<K>: BuildModule<Cpu, f32> + dfdx::nn::TensorCollection<f32, Cpu>,
{
    let context = CharLm::CONTEXT;
    let dev = Cpu::seed_from_u64(cfg.seed);
    let mut net = CharLmOf::<K>::build_on(&dev);
    let mut grads = net.alloc_grads();
    if let Some(stats) = &kfac {
        stats.watch(&net, &mut grads)?;
    }
    let schedule = cfg.schedule(peak_lr)?;
    // the run's warmup and length are valid (checked above); a non-finite peak becomes a
    // constant the optimizer then refuses, naming it
    let sched = |p: f64| cfg.schedule(p).map_or(Hyper::Const(p), Hyper::from);
    let mut opt = optimizers::build::<CharLmOf<K>>(spec.name, peak_lr, &sched)?;

    let mut run = LmRun {
        name: spec.name.to_string(),
        type_name: opt.name().to_string(),
        peak_lr,
        val_bits: None,
        diverged_at: None,
        steps_to_target: None,
        time_to_target: None,
        timing: Timing::default(),
        state_bytes: 0,
        curve: Vec::with_capacity(cfg.steps),
        val_curve: Vec::new(),
    };
    let (mut ema, mut wall, mut last_val) = (0.0f64, 0.0f64, f64::NAN);
    let mut step_times = Vec::with_capacity(cfg.steps);
    let mut update_times = Vec::with_capacity(cfg.steps);
    for step in 1..=cfg.steps {
        let (x, y) = data.train.batch(cfg.batch, context, cfg.seed, step as u64);
        let t0 = Instant::now();
        let loss = model::loss_and_grads(&dev, &net, &mut grads, &x, &y, cfg.batch);
        let t1 = Instant::now();
        if let Some(stats) = &mut kfac {
            opt.kfac_update(stats, &mut net, &mut grads).map_err(|e| {
                format!(
                    "{} (K-FAC statistics) failed at step {step}: {e}",
                    spec.name
                )
            })?;
        }
        opt.step(&mut net, &mut grads)
            .map_err(|e| format!("{} failed at step {step}: {e}", spec.name))?;
        let t2 = Instant::now();
        net.zero_grads(&mut grads);
        let elapsed = t0.elapsed();
        step_times.push(elapsed);
        update_times.push(t2 - t1);
        wall += elapsed.as_secs_f64();

        let b = bits(f64::from(loss));
        if !b.is_finite() {
            run.diverged_at = Some(step);
            break;
        }
        ema = SMOOTHING * ema + (1.0 - SMOOTHING) * b;
        let smoothed = ema / (1.0 - SMOOTHING.powi(step as i32));
        if run.steps_to_target.is_none() && smoothed <= cfg.target {
            run.steps_to_target = Some(step);
            run.time_to_target = Some(wall);
        }
        run.curve.push(Point {
            step,
            wall,
            lr: schedule.value(step as u64 - 1),
            bits: b,
            smoothed,
        });
        if cfg.eval_every > 0 && (step % cfg.eval_every == 0 || step == cfg.steps) {
            last_val = bits(model::evaluate(&dev, &net, &data.periodic, context, 64));
            run.val_curve.push((step, wall, last_val));
        }
        progress.update(step, || {
            let val = if last_val.is_finite() {
                format!(", val {last_val:.3}")
            } else {
                String::new()
            };
            format!("train {smoothed:.3} bits/char{val}, {wall:.1} s training")
        });
    }
    run.timing = Timing::of(&step_times, &update_times);
    run.state_bytes = opt.state_bytes();
    if run.diverged_at.is_none() {
        let v = bits(model::evaluate(&dev, &net, &data.full, context, 64));
        run.val_bits = v.is_finite().then_some(v);
        if run.val_bits.is_none() {
            run.diverged_at = Some(cfg.steps);
        }
    }
    progress.finish(&match run.val_bits {
        Some(v) => format!("val {v:.3} bits/char, {:.1} s", run.train_seconds()),
        None => format!("diverged at step {}", run.diverged_at.unwrap_or(0)),
    });
    Ok(run)
}

/// Runs every selected optimizer once.
pub fn run_all(
    cfg: &LmConfig,
    selected: &[(&'static OptimizerSpec, f64)],
    data: &LmData,
) -> Result<Vec<LmRun>, Box<dyn Error>> {
    let mut out = Vec::new();
    for &(spec, lr) in selected {
        let progress = Progress::new(spec.name, cfg.steps);
        out.push(train_one(cfg, spec, lr, data, &progress)?);
    }
    Ok(out)
}

/// The sweep: for each selected optimizer, the runs at each peak it tried, best first. At most
/// `max_runs` runs per optimizer (the centre and its two ladder neighbours first, so a
/// `max_runs` below 3 cuts those); an optimizer named in `fixed` runs once, at its given peak.
pub fn sweep(
    cfg: &LmConfig,
    selected: &[(&'static OptimizerSpec, f64)],
    data: &LmData,
    max_runs: usize,
    fixed: &[String],
) -> Result<Vec<Vec<LmRun>>, Box<dyn Error>> {
    let mut all = Vec::new();
    for &(spec, centre) in selected {
        let mut runs: Vec<LmRun> = Vec::new();
        let mut todo = if fixed.iter().any(|f| f == spec.name) {
            vec![centre]
        } else {
            vec![ladder(centre, false), ladder(centre, true), centre]
        };
        while let Some(lr) = todo.pop() {
            if runs.iter().any(|r| r.peak_lr == lr) || runs.len() >= max_runs {
                continue;
            }
            let progress = Progress::new(spec.name, cfg.steps);
            progress.note(&format!("peak lr {}", short_number(lr)));
            runs.push(train_one(cfg, spec, lr, data, &progress)?);
            if todo.is_empty() && runs.len() < max_runs && runs.len() >= 3 {
                let best = runs
                    .iter()
                    .min_by(|a, b| a.score().total_cmp(&b.score()))
                    .map(|r| r.peak_lr);
                let lo = runs.iter().map(|r| r.peak_lr).fold(f64::INFINITY, f64::min);
                let hi = runs.iter().map(|r| r.peak_lr).fold(0.0, f64::max);
                if best == Some(lo) && runs.iter().any(|r| r.val_bits.is_some()) {
                    todo.push(ladder(lo, false));
                } else if best == Some(hi) && runs.iter().any(|r| r.val_bits.is_some()) {
                    todo.push(ladder(hi, true));
                }
            }
        }
        runs.sort_by(|a, b| a.score().total_cmp(&b.score()));
        all.push(runs);
    }
    Ok(all)
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

/// Prints the comparison table.
pub fn print_table(runs: &[LmRun], target: f64) {
    let header = [
        "optimizer".to_string(),
        "peak lr".to_string(),
        "val bits/char".to_string(),
        "train (EMA)".to_string(),
        format!("steps→{target}"),
        format!("s→{target}"),
        "ms/step".to_string(),
        "update ms".to_string(),
        "update %".to_string(),
        "state MB".to_string(),
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{:e}", r.peak_lr),
                r.val_bits.map_or_else(
                    || format!("div@{}", r.diverged_at.unwrap_or(0)),
                    |v| format!("{v:.4}"),
                ),
                format!("{:.4}", r.final_smoothed()),
                r.steps_to_target.map_or("-".to_string(), |s| s.to_string()),
                fmt_opt(r.time_to_target, 1),
                format!("{:.1}", r.timing.median_step_ms),
                format!("{:.1}", r.timing.median_update_ms),
                format!("{:.1}%", 100.0 * r.update_share()),
                format!("{:.2}", r.state_bytes as f64 / 1e6),
            ]
        })
        .collect();
    super::print_rows(&header, &rows);
}

/// Prints the sweep as one row per peak learning rate and one column per optimizer
/// (`val bits/char / steps→target`, `*` = chosen).
pub fn print_sweep(sweeps: &[Vec<LmRun>], target: f64) {
    let mut lrs: Vec<f64> = sweeps.iter().flatten().map(|r| r.peak_lr).collect();
    lrs.sort_by(f64::total_cmp);
    lrs.dedup();
    let mut header = vec!["peak lr".to_string()];
    header.extend(
        sweeps
            .iter()
            .filter_map(|s| s.first())
            .map(|r| r.name.clone()),
    );
    let rows: Vec<Vec<String>> = lrs
        .iter()
        .map(|&lr| {
            let mut row = vec![format!("{lr:e}")];
            for s in sweeps {
                row.push(match s.iter().position(|r| r.peak_lr == lr) {
                    None => String::new(),
                    Some(i) => {
                        let r = &s[i];
                        let star = if i == 0 { "*" } else { "" };
                        match r.val_bits {
                            None => format!("div@{}", r.diverged_at.unwrap_or(0)),
                            Some(v) => format!(
                                "{v:.3}/{}{star}",
                                r.steps_to_target.map_or("-".to_string(), |s| s.to_string())
                            ),
                        }
                    }
                });
            }
            row
        })
        .collect();
    println!("final validation bits/char / steps→{target} (* = lowest validation loss)");
    super::print_rows(&header, &rows);
}

/// Writes `summary.csv`, `curves.csv` and `val_curves.csv` (all runs given) into `dir`.
pub fn write_csvs(dir: &Path, runs: &[&LmRun], target: f64) -> std::io::Result<()> {
    let mut s = String::from(
        "optimizer,type,peak_lr,steps,val_bits_per_char,diverged_at,final_train_bits_smoothed,\
         target_bits,steps_to_target,seconds_to_target,train_seconds,median_ms_per_step,\
         median_update_ms,mean_ms_per_step,mean_update_ms,update_share,state_bytes\n",
    );
    for r in runs {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{:.3},{:.4},{:.4},{:.4},{:.4},{:.5},{}",
            r.name,
            r.type_name,
            r.peak_lr,
            r.curve.len(),
            r.val_bits.map_or(String::new(), |v| v.to_string()),
            r.diverged_at.map_or(String::new(), |v| v.to_string()),
            r.final_smoothed(),
            target,
            r.steps_to_target.map_or(String::new(), |v| v.to_string()),
            r.time_to_target
                .map_or(String::new(), |v| format!("{v:.3}")),
            r.train_seconds(),
            r.timing.median_step_ms,
            r.timing.median_update_ms,
            r.timing.mean_step_ms,
            r.timing.mean_update_ms,
            r.update_share(),
            r.state_bytes,
        );
    }
    std::fs::write(dir.join("summary.csv"), s)?;
    let mut c = String::from("optimizer,peak_lr,step,train_seconds,lr,batch_bits,smoothed_bits\n");
    for r in runs {
        for p in &r.curve {
            let _ = writeln!(
                c,
                "{},{},{},{:.4},{:e},{:.5},{:.5}",
                r.name, r.peak_lr, p.step, p.wall, p.lr, p.bits, p.smoothed
            );
        }
    }
    std::fs::write(dir.join("curves.csv"), c)?;
    let mut v = String::from("optimizer,peak_lr,step,train_seconds,val_bits\n");
    for r in runs {
        for &(step, wall, b) in &r.val_curve {
            let _ = writeln!(v, "{},{},{step},{wall:.4},{b:.5}", r.name, r.peak_lr);
        }
    }
    std::fs::write(dir.join("val_curves.csv"), v)
}

/// Writes `sweep.csv`: one row per run.
pub fn write_sweep_csv(dir: &Path, sweeps: &[Vec<LmRun>], target: f64) -> std::io::Result<()> {
    let mut s = String::from(
        "optimizer,peak_lr,chosen,val_bits_per_char,diverged_at,final_train_bits_smoothed,\
         target_bits,steps_to_target,train_seconds\n",
    );
    for runs in sweeps {
        for (i, r) in runs.iter().enumerate() {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{:.5},{},{},{:.2}",
                r.name,
                r.peak_lr,
                i == 0,
                r.val_bits.map_or(String::new(), |v| format!("{v:.5}")),
                r.diverged_at.map_or(String::new(), |v| v.to_string()),
                r.final_smoothed(),
                target,
                r.steps_to_target.map_or(String::new(), |v| v.to_string()),
                r.train_seconds(),
            );
        }
    }
    std::fs::write(dir.join("sweep.csv"), s)
}

/// Writes `loss_vs_steps.svg` and `loss_vs_time.svg`: the smoothed training loss (bits/char,
/// lines) and the periodic validation loss (circles) against steps and against training
/// wall-clock seconds.
pub fn plot(dir: &Path, runs: &[LmRun], title: &str) -> Result<Vec<&'static str>, Box<dyn Error>> {
    let series = |time: bool| -> Vec<Series> {
        runs.iter()
            .map(|r| Series {
                name: r.name.clone(),
                points: r
                    .curve
                    .iter()
                    .map(|p| (if time { p.wall } else { p.step as f64 }, p.smoothed))
                    .collect(),
                marks: r
                    .val_curve
                    .iter()
                    .map(|&(step, wall, b)| (if time { wall } else { step as f64 }, b))
                    .collect(),
            })
            .collect()
    };
    // Show the interesting part: from the lowest value to where the slowest curve is a tenth
    // of the way in (the first steps, at ~7 bits/char, would flatten everything else).
    let lo = runs
        .iter()
        .flat_map(|r| {
            let val = r.val_curve.iter().map(|v| v.2);
            r.curve.iter().map(|p| p.smoothed).chain(val)
        })
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let hi = runs
        .iter()
        .filter_map(|r| r.curve.get(r.curve.len() / 10).map(|p| p.smoothed))
        .filter(|v| v.is_finite())
        .fold(lo, f64::max);
    let y = (
        (lo * 10.0).floor() / 10.0 - 0.05,
        (hi * 10.0).ceil() / 10.0 + 0.05,
    );
    let y_desc = "bits/char: training (line, EMA of mini-batch loss), validation (circles)";
    plot_series(
        &dir.join("loss_vs_steps.svg"),
        &format!("{title}: loss against steps"),
        "step",
        y_desc,
        &series(false),
        y,
    )?;
    plot_series(
        &dir.join("loss_vs_time.svg"),
        &format!("{title}: loss against training wall-clock"),
        "training time, s (this machine; evaluation not counted)",
        y_desc,
        &series(true),
        y,
    )?;
    Ok(vec!["loss_vs_steps.svg", "loss_vs_time.svg"])
}

/// Splits a CSV file (the simple files written above: no quoting) into its header and rows,
/// each row a map from column name to text.
fn read_csv(path: &Path) -> Result<Vec<std::collections::HashMap<String, String>>, Box<dyn Error>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| format!("{} is empty", path.display()))?
        .split(',')
        .collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let cells: Vec<&str> = l.split(',').collect();
            if cells.len() != header.len() {
                return Err(format!(
                    "{} line {}: {} cells for {} columns",
                    path.display(),
                    i + 2,
                    cells.len(),
                    header.len()
                )
                .into());
            }
            Ok(header
                .iter()
                .zip(cells)
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect())
        })
        .collect()
}

/// The cell `col` of `row` parsed as `T`; an empty cell is `None`.
fn cell<T: std::str::FromStr>(
    row: &std::collections::HashMap<String, String>,
    col: &str,
) -> Result<Option<T>, Box<dyn Error>> {
    let text = row
        .get(col)
        .ok_or_else(|| format!("column `{col}` missing"))?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("column `{col}`: cannot parse `{text}`").into())
}

/// A required cell (see [`cell`]).
fn need<T: std::str::FromStr>(
    row: &std::collections::HashMap<String, String>,
    col: &str,
) -> Result<T, Box<dyn Error>> {
    cell(row, col)?.ok_or_else(|| format!("column `{col}` is empty").into())
}

/// The runs recorded in `dir` by [`write_csvs`] (`summary.csv`, `curves.csv`,
/// `val_curves.csv`), and its sweep rows (`sweep.csv` if present, else the summary's runs) as
/// runs with a one-point curve holding the final smoothed loss.
fn read_dir(dir: &Path) -> Result<(Vec<LmRun>, Vec<LmRun>), Box<dyn Error>> {
    let key =
        |r: &std::collections::HashMap<String, String>| -> Result<(String, f64), Box<dyn Error>> {
            Ok((need::<String>(r, "optimizer")?, need::<f64>(r, "peak_lr")?))
        };
    let curves = read_csv(&dir.join("curves.csv"))?;
    let vals = read_csv(&dir.join("val_curves.csv"))?;
    let mut runs = Vec::new();
    for row in read_csv(&dir.join("summary.csv"))? {
        let (name, peak_lr) = key(&row)?;
        let mut curve = Vec::new();
        for c in &curves {
            if key(c)? == (name.clone(), peak_lr) {
                curve.push(Point {
                    step: need(c, "step")?,
                    wall: need(c, "train_seconds")?,
                    lr: need(c, "lr")?,
                    bits: need(c, "batch_bits")?,
                    smoothed: need(c, "smoothed_bits")?,
                });
            }
        }
        let mut val_curve = Vec::new();
        for v in &vals {
            if key(v)? == (name.clone(), peak_lr) {
                val_curve.push((
                    need(v, "step")?,
                    need(v, "train_seconds")?,
                    need(v, "val_bits")?,
                ));
            }
        }
        runs.push(LmRun {
            type_name: need(&row, "type")?,
            peak_lr,
            val_bits: cell(&row, "val_bits_per_char")?,
            diverged_at: cell(&row, "diverged_at")?,
            steps_to_target: cell(&row, "steps_to_target")?,
            time_to_target: cell(&row, "seconds_to_target")?,
            timing: Timing {
                median_step_ms: need(&row, "median_ms_per_step")?,
                median_update_ms: need(&row, "median_update_ms")?,
                mean_step_ms: need(&row, "mean_ms_per_step")?,
                mean_update_ms: need(&row, "mean_update_ms")?,
                train_seconds: need(&row, "train_seconds")?,
            },
            state_bytes: need(&row, "state_bytes")?,
            curve,
            val_curve,
            name,
        });
    }
    let sweep_path = dir.join("sweep.csv");
    let sweep_rows = if sweep_path.exists() {
        read_csv(&sweep_path)?
            .iter()
            .map(|row| -> Result<LmRun, Box<dyn Error>> {
                let (name, peak_lr) = key(row)?;
                let steps = runs
                    .iter()
                    .find(|r| r.name == name)
                    .map_or(0, |r| r.curve.len());
                Ok(LmRun {
                    type_name: String::new(),
                    peak_lr,
                    val_bits: cell(row, "val_bits_per_char")?,
                    diverged_at: cell(row, "diverged_at")?,
                    steps_to_target: cell(row, "steps_to_target")?,
                    time_to_target: None,
                    timing: Timing {
                        train_seconds: need(row, "train_seconds")?,
                        ..Timing::default()
                    },
                    state_bytes: 0,
                    curve: vec![Point {
                        step: steps,
                        wall: f64::NAN,
                        lr: f64::NAN,
                        bits: f64::NAN,
                        smoothed: need(row, "final_train_bits_smoothed")?,
                    }],
                    val_curve: Vec::new(),
                    name,
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    Ok((runs, sweep_rows))
}

/// What [`merge`] returns: the pooled sweeps (best first) and the chosen runs.
pub type Merged = (Vec<Vec<LmRun>>, Vec<LmRun>);

/// `--merge`: the runs recorded in `dirs` (by the comparison, a sweep or an earlier merge),
/// combined. Sweep rows (each dir's `sweep.csv`, or its summary's runs if it has none) are
/// pooled, one per optimizer and peak (the first dir wins); for each optimizer the chosen peak
/// is the lowest final validation loss among them, and its full run must be in some dir's
/// `summary.csv`. Returns the pooled sweeps (best first, optimizers in `order`, unknown names
/// after) and the chosen runs in the same order.
///
/// # Errors
/// A missing or malformed file, or a chosen peak without a recorded run.
pub fn merge(dirs: &[std::path::PathBuf], order: &[&str]) -> Result<Merged, Box<dyn Error>> {
    let (mut runs, mut rows) = (Vec::new(), Vec::new());
    for dir in dirs {
        let (r, s) = read_dir(dir)?;
        let summary_rows = if s.is_empty() { read_dir(dir)?.0 } else { s };
        runs.extend(r);
        for row in summary_rows {
            if !rows
                .iter()
                .any(|x: &LmRun| x.name == row.name && x.peak_lr == row.peak_lr)
            {
                rows.push(row);
            }
        }
    }
    let mut names: Vec<String> = Vec::new();
    for r in &rows {
        if !names.contains(&r.name) {
            names.push(r.name.clone());
        }
    }
    let rank = |n: &str| order.iter().position(|o| *o == n).unwrap_or(order.len());
    names.sort_by_key(|n| rank(n));
    let mut sweeps = Vec::new();
    let mut chosen = Vec::new();
    for name in names {
        let mut s: Vec<LmRun> = Vec::new();
        for r in std::mem::take(&mut rows) {
            if r.name == name {
                s.push(r);
            } else {
                rows.push(r);
            }
        }
        s.sort_by(|a, b| a.score().total_cmp(&b.score()));
        let best = s[0].peak_lr;
        let i = runs
            .iter()
            .position(|r| r.name == name && r.peak_lr == best)
            .ok_or_else(|| format!("{name}: no recorded run at the chosen peak {best:e}"))?;
        chosen.push(runs.swap_remove(i));
        sweeps.push(s);
    }
    Ok((sweeps, chosen))
}

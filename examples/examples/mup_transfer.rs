//! muP learning-rate transfer on the embedded digits: sweep AdamW's learning rate for the MLP
//! `64 → W → W → 10` at widths 64, 256 and 1024, under the standard parametrisation (SP: the
//! zoo's `AdamW`, default init) and under muP (the `MupAdamW` declared below: Adam learning
//! rate of hidden and output matrices scaled by `base_width / fan_in`, zero-initialised
//! readout), and report which learning rate is best at each width.
//!
//! ```text
//! cargo run --release -p examples --example mup_transfer
//! ```
//!
//! Source: Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
//! Hyperparameter Transfer" (2022), Table 3 (μP for Adam: input weights and biases keep the
//! base learning rate; hidden and output weights get `η / (width ratio)`; readout initialised
//! at zero, their recommended choice). The claim to check: under muP the best learning rate
//! stays put as the width grows; under SP it drifts down.
//!
//! The whole muP rule is the `optimizer!` block below: routing by name and shape scalars.
//! Output: a table of final training loss (mean over the last epoch) per (width, lr), the best
//! lr per width, `target/mup/mup_transfer.csv`, and `target/mup/mup_transfer.svg` (loss
//! against learning rate, one curve per width, SP left and muP right).
//!
//! Measured (2-core machine, `--release`, 8 epochs of the 1,438-sample training split, batch 64):
//!
//! ```text
//! SP: final training loss (mean over epoch 8) by width and learning rate
//!  width      1e-4      3e-4      1e-3      3e-3      1e-2      3e-2      1e-1   best lr
//!     64    2.1743    1.4763    0.3166    0.1199    0.0489    0.0429    0.2845      3e-2
//!    256    1.4079    0.3105    0.0972    0.0430    0.0307    0.0609    0.6005      1e-2
//!   1024    0.2568    0.0816    0.0281    0.0349    0.0784    0.1405    0.6453      1e-3
//!
//! muP: final training loss (mean over epoch 8) by width and learning rate
//!  width      1e-4      3e-4      1e-3      3e-3      1e-2      3e-2      1e-1   best lr
//!     64    2.2236    1.4293    0.3459    0.1407    0.0563    0.0456    0.1587      3e-2
//!    256    2.1985    1.3593    0.3547    0.1404    0.0422    0.1056    0.0755      1e-2
//!   1024    2.1998    1.3333    0.3396    0.1319    0.0397    0.0388    0.0452      3e-2
//! ```
//!
//! Under SP the best learning rate falls by 30× from width 64 to 1024 (and the loss curve over
//! learning rates shifts left); under muP the curves nearly coincide across widths and the best
//! learning rate stays at 1e-2–3e-2 (at width 1024, 1e-2 and 3e-2 are within 0.001).

use std::io::Write;

use dfdx::prelude::*;
use examples::data::{digits, Dataset};
use examples::model::{self, Inputs, Logits, Mlp};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig};

#[path = "shared/plot.rs"]
mod plot_parts;

optimizer! {
    /// AdamW under muP for `(Linear<64, W>, ReLU, Linear<W, W>, ReLU, Linear<W, 10>)`: the input
    /// layer (`0.weight`) and every vector (biases) take AdamW steps with `lr`; the other
    /// matrices (hidden `2.weight`, output `4.weight`, whose fan-in grows with the width) take
    /// AdamW steps with `lr * base_width / fan_in`.
    pub MupAdamW<lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, base_width = 64.0> {
        matrix if name.starts_with("0.") => AdamW<lr = lr, beta1 = beta1, beta2 = beta2, eps = eps, weight_decay = weight_decay>,
        matrix => {
            let m = momentum(grad, beta1);
            let v = second_moment(grad, beta2);
            let scaled_lr = lr * base_width / fan_in;
            param = param * (1.0 - scaled_lr * weight_decay) - scaled_lr * debias(m) / (sqrt(debias(v)) + eps);
        }
        _ => AdamW<lr = lr, beta1 = beta1, beta2 = beta2, eps = eps, weight_decay = weight_decay>,
    }
}

const LRS: [f64; 7] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1];
const EPOCHS: u64 = 8;
const BATCH: usize = 64;
const SEED: u64 = 0;

/// Trains one model; returns the mean training loss over the last epoch.
fn train<const W: usize>(train: &Dataset, lr: f64, mup: bool) -> f64 {
    let (dev, mut net) = model::build::<Mlp<64, W, 10>>(SEED);
    if mup {
        let zeros = vec![0.0f32; 10 * W];
        net.4.weight.copy_from(&zeros);
    }
    let last = if mup {
        let mut opt = MupAdamW::<f32>::new(MupAdamWConfig {
            lr: lr.into(),
            ..Default::default()
        })
        .unwrap();
        last_epoch_loss(&dev, &mut net, train, |m, g| opt.update(m, g))
    } else {
        let mut opt = AdamW::<f32>::new(AdamWConfig {
            lr: lr.into(),
            weight_decay: 0.0.into(),
            ..Default::default()
        })
        .unwrap();
        last_epoch_loss(&dev, &mut net, train, |m, g| opt.update(m, g))
    };
    if last.is_finite() {
        last
    } else {
        f64::INFINITY
    }
}

/// Trains `net` for `EPOCHS` epochs, `update` stepping the optimizer; returns the mean
/// training loss of the last epoch.
fn last_epoch_loss<M>(
    dev: &Cpu,
    net: &mut M,
    train: &Dataset,
    mut update: impl FnMut(&mut M, &mut Gradients<f32, Cpu>) -> Result<(), OptimError>,
) -> f64
where
    M: ModuleMut<Inputs<64, OwnedTape<f32, Cpu>>, Output = Logits<10, OwnedTape<f32, Cpu>>>
        + ZeroGrads<f32, Cpu>,
{
    let mut grads = net.alloc_grads();
    let mut last = f64::NAN;
    for epoch in 0..EPOCHS {
        let stats = model::train_epoch_with::<_, 64, 10, _, _>(
            dev,
            net,
            &mut grads,
            train,
            BATCH,
            SEED,
            epoch,
            &mut update,
        )
        .unwrap();
        last = f64::from(stats.mean_loss);
    }
    last
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let all = digits::load()?;
    let (train_set, _) = all.split(0.2, SEED);
    let out_dir = std::path::Path::new("target/mup");
    std::fs::create_dir_all(out_dir)?;
    let mut csv = std::fs::File::create(out_dir.join("mup_transfer.csv"))?;
    writeln!(csv, "parametrisation,width,lr,final_train_loss")?;
    let mut curves: Vec<(bool, usize, Vec<f64>)> = Vec::new();
    for mup in [false, true] {
        let name = if mup { "muP" } else { "SP" };
        println!(
            "\n{name}: final training loss (mean over epoch {EPOCHS}) by width and learning rate"
        );
        print!("{:>6}", "width");
        for lr in LRS {
            print!("{lr:>10.0e}");
        }
        println!("{:>10}", "best lr");
        for width in [64usize, 256, 1024] {
            let losses: Vec<f64> = LRS
                .iter()
                .map(|&lr| match width {
                    64 => train::<64>(&train_set, lr, mup),
                    256 => train::<256>(&train_set, lr, mup),
                    _ => train::<1024>(&train_set, lr, mup),
                })
                .collect();
            print!("{width:>6}");
            for (lr, l) in LRS.iter().zip(&losses) {
                print!("{l:>10.4}");
                writeln!(csv, "{name},{width},{lr},{l}")?;
            }
            let best = LRS
                .iter()
                .zip(&losses)
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(lr, _)| *lr)
                .unwrap_or(f64::NAN);
            println!("{best:>10.0e}");
            curves.push((mup, width, losses));
        }
    }
    plot(&out_dir.join("mup_transfer.svg"), &curves)?;
    println!(
        "\nwrote {} and {}",
        out_dir.join("mup_transfer.csv").display(),
        out_dir.join("mup_transfer.svg").display()
    );
    Ok(())
}

/// Loss against learning rate (both log scale), one curve per width; SP left, muP right.
fn plot(
    path: &std::path::Path,
    curves: &[(bool, usize, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>> {
    use plot_parts::{draw_legend, legend_line};
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
    ];
    for (panel, mup) in panels.iter().zip([false, true]) {
        let title = if mup {
            "muP (MupAdamW)"
        } else {
            "standard parametrisation (AdamW)"
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(
                (5e-5f64..2e-1f64).log_scale(),
                (1e-2f64..3.0f64).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("peak learning rate")
            .y_desc("final training loss")
            .x_label_formatter(&|v| format!("{v:.0e}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()?;
        for (k, (_, width, losses)) in curves.iter().filter(|c| c.0 == mup).enumerate() {
            let color = colors[k % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    LRS.iter()
                        .zip(losses)
                        .filter(|(_, l)| l.is_finite())
                        .map(|(lr, l)| (*lr, l.max(1e-2))),
                    color.stroke_width(2),
                ))?
                .label(format!("width {width}"))
                .legend(legend_line(color.stroke_width(2)));
        }
        draw_legend(&mut chart)?;
    }
    root.present()?;
    Ok(())
}

//! A candle MLP (64 → 64 → 10, ReLU) trained on the UCI handwritten digits embedded in the
//! `examples` crate, with a DSL optimizer from the zoo (`AdamW`) stepping the candle `Var`s in
//! place through `candle_nn::Optimizer`.
//!
//! Run: `cargo run --release -p optim-candle --example train_digits [epochs]` (default 20).

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, Linear, Optimizer, VarBuilder, VarMap};
use optim_candle::{CandleConfig, CandleOptimizer};
use optim_dsl::zoo::{AdamW, AdamWConfig};

/// The model.
struct Mlp {
    hidden: Linear,
    out: Linear,
}

impl Mlp {
    fn new(vb: VarBuilder<'_>, d: usize, classes: usize) -> candle_core::Result<Self> {
        Ok(Mlp {
            hidden: linear(d, 64, vb.pp("hidden"))?,
            out: linear(64, classes, vb.pp("out"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.out.forward(&self.hidden.forward(x)?.relu()?)
    }
}

/// What a run reports.
#[derive(Debug)]
pub struct Report {
    /// Mean training loss of the first epoch.
    pub first_loss: f32,
    /// Mean training loss of the last epoch.
    pub last_loss: f32,
    /// Accuracy on the held-out 20 % after the last epoch.
    pub test_accuracy: f64,
}

/// Trains for `epochs` epochs (batches of 64, AdamW lr 3e-3, weight decay 1e-4) and evaluates.
///
/// # Errors
/// Data loading, candle and optimizer errors, as a message.
pub fn train(epochs: u64) -> Result<Report, Box<dyn std::error::Error>> {
    let data = examples::data::digits::load()?;
    let (train, test) = data.split(0.2, 7);
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = Mlp::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        data.d,
        data.classes,
    )?;
    let adamw = AdamW::<f32>::new(AdamWConfig {
        lr: 3e-3.into(),
        weight_decay: 1e-4.into(),
        ..Default::default()
    })?;
    // The VarMap names the Vars ("hidden.weight", …): optimizer state and checkpoints use them.
    let mut opt = CandleOptimizer::new(
        varmap.all_vars(),
        CandleConfig::new(adamw).with_varmap(&varmap),
    )?;

    let (mut first_loss, mut last_loss) = (f32::NAN, f32::NAN);
    for epoch in 0..epochs {
        let (mut sum, mut batches) = (0.0f32, 0usize);
        for (x, y) in train.batches(64, 11, epoch) {
            let rows = y.len();
            let x = Tensor::from_vec(x, (rows, train.d), &dev)?;
            let y = Tensor::from_vec(y, rows, &dev)?.to_dtype(DType::U32)?;
            let loss = candle_nn::loss::cross_entropy(&model.forward(&x)?, &y)?;
            opt.backward_step(&loss)?;
            sum += loss.to_scalar::<f32>()?;
            batches += 1;
        }
        let mean = sum / batches as f32;
        if epoch == 0 {
            first_loss = mean;
        }
        last_loss = mean;
    }

    let mut correct = 0usize;
    for (x, y) in test.chunks(256) {
        let rows = y.len();
        let x = Tensor::from_vec(x, (rows, test.d), &dev)?;
        let pred = model.forward(&x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        correct += pred
            .iter()
            .zip(&y)
            .filter(|(p, y)| **p == u32::from(**y))
            .count();
    }
    Ok(Report {
        first_loss,
        last_loss,
        test_accuracy: correct as f64 / test.n as f64,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let epochs = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 20,
    };
    let r = train(epochs)?;
    println!(
        "{epochs} epochs: mean loss {:.4} (first epoch) -> {:.4} (last); test accuracy {:.2} %",
        r.first_loss,
        r.last_loss,
        100.0 * r.test_accuracy
    );
    Ok(())
}

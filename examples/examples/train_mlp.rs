//! Trains a 64-128-128-10 MLP on the embedded UCI handwritten digits and reports the test
//! accuracy.
//!
//! ```text
//! cargo run -p examples --release --example train_mlp
//! ```
//!
//! Setup: stratified 80/20 split (seed 0) → 1,438 train / 359 test samples; batch 64;
//! 30 epochs; the DSL zoo's `AdamW` (lr 1e-3, weight decay 1e-4); weights initialized from seed 0. Everything is seeded,
//! so runs repeat.
//!
//! Measured (2-core machine, `--release`, rustc 1.95, dfdx 0.13, DSL AdamW through the dfdx
//! path): final test accuracy **96.94%** (train loss 0.029, test loss 0.123) in **0.26 s** wall
//! time for the whole run, data decoding included. Everything is seeded; runs repeat exactly.

use std::time::Instant;

use dfdx::nn::ZeroGrads;
use examples::data::digits;
use examples::model::{self, Mlp};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{AdamW, AdamWConfig};

const SEED: u64 = 0;
const EPOCHS: u64 = 30;
const BATCH: usize = 64;
const HIDDEN: usize = 128;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let (train, test) = digits::load()?.split(0.2, SEED);
    println!(
        "digits: {} train / {} test samples, {} features, {} classes",
        train.n, test.n, train.d, train.classes
    );

    let (dev, mut net) =
        model::build::<Mlp<{ digits::N_FEATURES }, HIDDEN, { digits::N_CLASSES }>>(SEED);
    let mut grads = net.alloc_grads();

    // The optimizer: the zoo's AdamW, itself written in the DSL (optim-dsl/src/zoo.rs).
    let mut opt = AdamW::<f32>::new(AdamWConfig {
        lr: 1e-3.into(),
        weight_decay: 1e-4.into(),
        ..Default::default()
    })?;
    let mut step = |m: &mut _, g: &mut _| opt.update(m, g);

    let mut acc = 0.0;
    for epoch in 0..EPOCHS {
        let stats =
            model::train_epoch_with::<_, { digits::N_FEATURES }, { digits::N_CLASSES }, _, _>(
                &dev, &mut net, &mut grads, &train, BATCH, SEED, epoch, &mut step,
            )
            .map_err(|e| format!("optimizer step failed: {e:?}"))?;
        let eval =
            model::evaluate::<_, { digits::N_FEATURES }, { digits::N_CLASSES }>(&dev, &net, &test);
        acc = eval.accuracy;
        println!(
            "epoch {:>2}: train loss {:.4}  test loss {:.4}  test accuracy {:.2}%",
            epoch + 1,
            stats.mean_loss,
            eval.loss,
            100.0 * eval.accuracy
        );
    }
    println!(
        "final test accuracy {:.2}% in {:.2} s",
        100.0 * acc,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

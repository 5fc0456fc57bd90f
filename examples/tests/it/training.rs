//! Integration tests through the public API of `examples`: every optimizer of the comparison
//! table trains (the loss goes down on the embedded digits), and the Fashion-MNIST loader gives
//! clear errors for a truncated or a missing file.
//!
//! Kept small (a 64-32-32-10 MLP, 40 steps per optimizer) so that the whole file runs in a
//! couple of seconds in the dev profile.

use std::path::{Path, PathBuf};

use dfdx::nn::ZeroGrads;
use examples::data::{digits, idx, DataError, Dataset};
use examples::model::{self, Mlp, MlpModel};
use examples::optimizers::{self, ModelOptimizer, OPTIMIZERS};

const I: usize = digits::N_FEATURES;
const O: usize = digits::N_CLASSES;
type Net = MlpModel<I, 32, O>;

/// Mean loss of `net` on `data`.
fn loss(dev: &dfdx::tensor::Cpu, net: &Net, data: &Dataset) -> f32 {
    model::evaluate::<_, I, O>(dev, net, data).loss
}

#[test]
fn every_listed_optimizer_reduces_the_training_loss() {
    let (train, _) = digits::load().unwrap().split(0.2, 0);
    // 640 samples: 10 batches of 64 per epoch, 4 epochs = 40 steps.
    let subset = train.subset(&(0..640).collect::<Vec<_>>());
    assert!(!OPTIMIZERS.is_empty());
    for spec in OPTIMIZERS {
        let (dev, mut net) = model::build::<Mlp<I, 32, O>>(0);
        let mut grads = net.alloc_grads();
        // The peak learning rate throughout (the comparison warms up to it).
        let mut opt: Box<dyn ModelOptimizer<Net>> =
            optimizers::build(spec.name, spec.peak_lr.into()).unwrap();
        let before = loss(&dev, &net, &subset);
        for epoch in 0..4 {
            let stats = model::train_epoch_with::<_, I, O, _, _>(
                &dev,
                &mut net,
                &mut grads,
                &subset,
                64,
                0,
                epoch,
                |m, g| opt.step(m, g),
            )
            .unwrap_or_else(|e| panic!("{}: step failed: {e}", spec.name));
            assert_eq!(stats.steps, 10);
        }
        let after = loss(&dev, &net, &subset);
        eprintln!("{}: {before} -> {after}", spec.name);
        assert!(
            after.is_finite() && after < 0.98 * before,
            "{} ({}, peak lr {}): loss {before} -> {after}",
            spec.name,
            opt.name(),
            spec.peak_lr
        );
        assert!(opt.plan().kernel_count() >= 1, "{}", spec.name);
    }
}

/// A fresh empty directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("examples-it-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the four (uncompressed) Fashion-MNIST files into `dir`, 2 train and 1 test image of
/// 2×2 pixels, but cuts the training images `cut` bytes short.
fn write_fashion(dir: &Path, cut: usize) {
    let train = idx::images_bytes(2, 2, 2, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let files = [
        (
            "train-images-idx3-ubyte",
            train[..train.len() - cut].to_vec(),
        ),
        ("train-labels-idx1-ubyte", idx::labels_bytes(2, &[3, 7])),
        (
            "t10k-images-idx3-ubyte",
            idx::images_bytes(1, 2, 2, &[9; 4]),
        ),
        ("t10k-labels-idx1-ubyte", idx::labels_bytes(1, &[1])),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn fashion_mnist_loader_rejects_a_truncated_file_clearly() {
    let dir = TempDir::new("trunc");
    write_fashion(&dir.0, 0);
    let (train, test) = idx::load_fashion_mnist(&dir.0).unwrap();
    assert_eq!((train.n, train.d, test.n), (2, 4, 1));

    write_fashion(&dir.0, 3);
    let err = idx::load_fashion_mnist(&dir.0).unwrap_err();
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
    assert!(
        msg.contains("truncated: header promises 24 bytes but only 21 are present"),
        "{msg}"
    );
}

#[test]
fn fashion_mnist_loader_explains_a_missing_data_set() {
    let dir = TempDir::new("missing");
    let err = idx::load_fashion_mnist(&dir.0).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("data file not found"), "{msg}");
    assert!(msg.contains("dataset-fashion-mnist"), "{msg}");
    assert!(msg.contains("--data DIR"), "{msg}");
}

//! The checkpoint file format across versions: fixtures written by earlier builds
//! (`fixtures/checkpoint_v<N>_<case>.safetensors`) keep loading with the exact state they
//! recorded.
//!
//! Each fixture is the checkpoint of one of the deterministic runs below (fixed initial values,
//! fixed gradients). A test loads the file into a fresh optimizer and compares every state
//! buffer, scalar state, step count, the config and the EMA, bit for bit, with the same run
//! recomputed by the current build.
//!
//! The fixtures are written by the ignored test `write_checkpoint_fixtures` (see there); a
//! fixture of an older format version is never rewritten.

use optim_dsl::prelude::*;
use optim_dsl::state::NonFinitePolicy;
use optim_dsl::zoo::{AdamW, AdamWConfig, NAdam, NAdamConfig, Shampoo, ShampooConfig};
use optim_dsl::WeightEma;
use optim_tests::params::slice;
use optim_tests::state::{state_bits, ExactBits};

// ---------------------------------------------------------------- the recorded runs

/// `(name, shape, initial values)` of the two parameters every run uses.
fn initial<E: optim_dsl::Float>() -> Vec<(&'static str, Vec<usize>, Vec<E>)> {
    let w = [
        0.5, -0.25, 1.0, 0.0, -1.5, 2.0, 0.75, -0.5, 0.25, 1.25, -1.0, 0.125,
    ];
    let b = [0.1, 0.2, -0.3];
    vec![
        (
            "w",
            vec![4, 3],
            w.iter().map(|&x| E::of_f64(x)).collect::<Vec<E>>(),
        ),
        ("b", vec![3], b.iter().map(|&x| E::of_f64(x)).collect()),
    ]
}

/// The gradient of parameter `k` (0 = `w`, 1 = `b`) at call `t`: small exact binary fractions.
fn gradient<E: optim_dsl::Float>(k: usize, t: usize, len: usize) -> Vec<E> {
    (0..len)
        .map(|i| {
            let x = if k == 0 {
                ((i * 5 + t * 3) % 7) as f64 - 3.0
            } else {
                ((i + 2 * t) % 5) as f64 - 2.0
            };
            E::of_f64(x / 8.0)
        })
        .collect()
}

/// Runs `calls` update calls of `opt` on [`initial`] with [`gradient`]; call `t` in `nan_at`
/// gets a NaN in `b`'s gradient. After each call that stepped, `ema` (when given) is updated
/// with the parameters.
fn run<E: optim_dsl::Float, O: DslOptimizer<E>>(
    opt: &mut O,
    mut ema: Option<&mut WeightEma<E>>,
    calls: usize,
    nan_at: &[usize],
) {
    let mut params = initial::<E>();
    for t in 0..calls {
        let grads: Vec<Vec<E>> = params
            .iter()
            .enumerate()
            .map(|(k, (_, _, v))| {
                let mut g = gradient::<E>(k, t, v.len());
                if k == 1 && nan_at.contains(&t) {
                    g[1] = E::nan();
                }
                g
            })
            .collect();
        let before = opt.opt_state().step;
        let mut slices: Vec<ParamSlice<'_, E>> = params
            .iter_mut()
            .zip(&grads)
            .map(|((name, shape, v), g)| slice(name, shape, v, g))
            .collect();
        opt.update_slices(&mut slices).unwrap();
        if let Some(ema) = ema.as_deref_mut() {
            if opt.opt_state().step > before {
                let named: Vec<(&str, &[E])> =
                    params.iter().map(|(n, _, v)| (*n, v.as_slice())).collect();
                ema.update_slices(&named).unwrap();
            }
        }
    }
}

/// `opt` after [`run`] for 3 steps (no EMA, no bad gradient).
fn three_steps<E: optim_dsl::Float, O: DslOptimizer<E>>(mut opt: O) -> O {
    run(&mut opt, None, 3, &[]);
    opt
}

fn adamw_config() -> AdamWConfig {
    let lr = Schedule::warmup_cosine(1e-3, 1e-2, 2, 10, 1e-4).unwrap();
    optim_tests::zoo::adamw_config(lr, 0.05)
}

/// AdamW (`f32`) with a warmup-cosine `lr`, the `SkipStep` policy and a weight EMA (decay 0.9):
/// 4 calls, the third skipped for a NaN gradient (3 steps, 1 skipped, 3 EMA updates).
fn adamw_run() -> (AdamW<f32>, WeightEma<f32>) {
    let mut opt = AdamW::<f32>::new(adamw_config()).unwrap();
    opt.set_non_finite_policy(NonFinitePolicy::SkipStep);
    let mut ema = WeightEma::<f32>::new(0.9).unwrap();
    run(&mut opt, Some(&mut ema), 4, &[2]);
    (opt, ema)
}

fn shampoo_config() -> ShampooConfig {
    ShampooConfig {
        lr: 0.01.into(),
        momentum: 0.5.into(),
        update_freq: 2.0.into(),
        ..Default::default()
    }
}

/// Shampoo (`f64`, momentum 0.5, inverse roots every 2 steps): 3 steps, Kronecker statistics
/// and inverse roots for `w`, the full-matrix preconditioner for `b`.
fn shampoo_run() -> Shampoo<f64> {
    three_steps(Shampoo::<f64>::new(shampoo_config()).unwrap())
}

fn nadam_config() -> NAdamConfig {
    NAdamConfig {
        lr: 0.01.into(),
        weight_decay: 0.1.into(),
        ..Default::default()
    }
}

/// NAdam (`f32`): 3 steps; its `mu_product` is a per-parameter scalar state.
fn nadam_run() -> NAdam<f32> {
    three_steps(NAdam::<f32>::new(nadam_config()).unwrap())
}

// ---------------------------------------------------------------- comparisons

fn fixture_path(version: u32, case: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(format!("checkpoint_v{version}_{case}.safetensors"))
}

/// Writes the checkpoints of the three runs in the CURRENT format version
/// (`checkpoint_v<FORMAT_VERSION>_<case>.safetensors`), refusing to overwrite an existing file.
/// The `v1` files were written by this test at the commit that added it (format version 1).
/// Run with
/// `cargo test -p optim-tests --test it -- --ignored checkpoint_format::write_checkpoint_fixtures`.
#[test]
#[ignore = "writes fixture files; run by hand when the format version changes"]
fn write_checkpoint_fixtures() {
    let version = optim_dsl::checkpoint::FORMAT_VERSION;
    let (adamw, ema) = adamw_run();
    let files = [
        ("adamw_ema", adamw.to_checkpoint_bytes(Some(&ema)).unwrap()),
        (
            "shampoo_f64",
            shampoo_run().to_checkpoint_bytes(None).unwrap(),
        ),
        ("nadam", nadam_run().to_checkpoint_bytes(None).unwrap()),
    ];
    for (case, bytes) in files {
        let path = fixture_path(version, case);
        assert!(
            !path.exists(),
            "{} exists; fixtures are never rewritten",
            path.display()
        );
        std::fs::write(&path, bytes).unwrap();
    }
}

/// The loaded optimizer holds exactly the state and config of the recomputed run `want`.
fn assert_same<E: optim_dsl::Float + ExactBits, O: DslOptimizer<E>>(loaded: &O, want: &O) {
    assert_eq!(state_bits(loaded.opt_state()), state_bits(want.opt_state()));
    assert_eq!(loaded.config().fields(), want.config().fields());
}

fn read_fixture(version: u32, case: &str) -> Vec<u8> {
    let path = fixture_path(version, case);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Fixture `case` of format `version` loaded into a default `O` (and its EMA into `ema`),
/// after asserting that it holds exactly the state and config of the recomputed run `want`.
fn loads_exactly<E, O>(version: u32, case: &str, want: &O, ema: Option<&mut WeightEma<E>>) -> O
where
    E: optim_dsl::Float + ExactBits,
    O: DslOptimizer<E> + Checkpoint<E> + Default,
{
    let mut opt = O::default();
    opt.load_checkpoint_bytes(&read_fixture(version, case), ema)
        .unwrap();
    assert_same(&opt, want);
    opt
}

/// Format 1: AdamW with a warmup-cosine schedule, a skipped step and an EMA. Loaded into a
/// default optimizer and EMA, everything comes from the file.
#[test]
fn v1_adamw_with_ema_loads_exactly() {
    let (want, want_ema) = adamw_run();
    let mut ema = WeightEma::<f32>::new(0.5).unwrap();
    let opt = loads_exactly(1, "adamw_ema", &want, Some(&mut ema));
    let s = opt.opt_state();
    assert_eq!((s.step, s.skipped_steps), (3, 1));
    assert_eq!(s.non_finite, NonFinitePolicy::SkipStep);
    assert_eq!(s.params["w"].step, 3);
    for slot in ["m", "v"] {
        assert_eq!(
            opt.state_buffer("b", slot).map(<[f32]>::len),
            Some(3),
            "{slot}"
        );
    }
    assert_eq!(opt.config().fields(), adamw_config().fields());
    assert_eq!((ema.decay(), ema.updates()), (0.9, 3));
    for name in ["w", "b"] {
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(ema.averaged(name).unwrap()),
            bits(want_ema.averaged(name).unwrap()),
            "EMA of {name}"
        );
    }
}

/// Format 1: Shampoo in `f64` (Kronecker statistics, inverse roots, momentum).
#[test]
fn v1_shampoo_f64_loads_exactly() {
    let opt = loads_exactly(1, "shampoo_f64", &shampoo_run(), None);
    assert_eq!(opt.opt_state().step, 3);
    assert_eq!(opt.config().fields(), shampoo_config().fields());
}

/// Format 1: NAdam, whose `mu_product` is a scalar state.
#[test]
fn v1_nadam_loads_exactly() {
    let opt = loads_exactly(1, "nadam", &nadam_run(), None);
    assert!(opt.opt_state().params["w"]
        .scalars
        .iter()
        .all(|&x| x != 0.0 && x.is_finite()));
    assert_eq!(opt.config().fields(), nadam_config().fields());
}

// ---------------------------------------------------------------- format 2: the checksum

/// Format 2 fixtures (written by `write_checkpoint_fixtures` when format 2 was introduced) load
/// exactly, like the format 1 ones.
#[test]
fn v2_fixtures_load_exactly() {
    let (want, want_ema) = adamw_run();
    let mut ema = WeightEma::<f32>::new(0.5).unwrap();
    loads_exactly(2, "adamw_ema", &want, Some(&mut ema));
    assert_eq!(ema, want_ema);
    loads_exactly(2, "shampoo_f64", &shampoo_run(), None);
    loads_exactly(2, "nadam", &nadam_run(), None);
}

/// The metadata document of a checkpoint file.
fn metadata(bytes: &[u8]) -> serde_json::Value {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let json = &header.metadata().as_ref().unwrap()["optim_dsl"];
    serde_json::from_str(json).unwrap()
}

/// What a save writes: format 2 with a `sha256:` checksum of the whole file, the checksum's own
/// 64 digits counted as ASCII zeros (recomputed here with `sha2` from the documented rule).
#[test]
fn saved_files_are_format_2_with_the_documented_checksum() {
    use sha2::{Digest, Sha256};
    let (opt, ema) = adamw_run();
    let bytes = opt.to_checkpoint_bytes(Some(&ema)).unwrap();
    let meta = metadata(&bytes);
    assert_eq!(meta["format"], 2);
    assert_eq!(optim_dsl::checkpoint::FORMAT_VERSION, 2);
    let stored = meta["checksum"].as_str().unwrap();
    let hex = stored.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);
    let at = bytes
        .windows(hex.len())
        .position(|w| w == hex.as_bytes())
        .unwrap();
    let mut zeroed = bytes.clone();
    zeroed[at..at + 64].fill(b'0');
    let digest: String = Sha256::digest(&zeroed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, hex);
}

/// Flipping any single bit of any byte of a format-2 file (length prefix, header JSON, padding,
/// tensor data, the checksum itself) is an `OptimError::Checkpoint`, and the optimizer and EMA
/// loaded into are unchanged.
#[test]
fn a_flipped_bit_anywhere_is_an_error_and_changes_nothing() {
    let (opt, ema) = adamw_run();
    let bytes = opt.to_checkpoint_bytes(Some(&ema)).unwrap();
    // a target with state of its own, to see that nothing changes
    let (mut target, mut target_ema) = adamw_run();
    target.set_non_finite_policy(NonFinitePolicy::Propagate);
    let before = state_bits(target.opt_state());
    let before_ema = target_ema.clone();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            match target.load_checkpoint_bytes(&bad, Some(&mut target_ema)) {
                Err(OptimError::Checkpoint(_)) => {}
                Err(other) => panic!("byte {i} bit {bit}: expected Checkpoint, got {other}"),
                Ok(()) => panic!("byte {i} bit {bit}: a corrupt file loaded"),
            }
        }
    }
    assert_eq!(state_bits(target.opt_state()), before);
    assert_eq!(target_ema, before_ema);
    // a flipped byte of the tensor data is named as a checksum mismatch
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = target.load_checkpoint_bytes(&bad, None).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // and the intact file loads
    target
        .load_checkpoint_bytes(&bytes, Some(&mut target_ema))
        .unwrap();
    assert_eq!(state_bits(target.opt_state()), state_bits(opt.opt_state()));
}

/// A format-1 file is migrated: it loads, and saving it again writes format 2 with the same
/// state (the same bytes as a fresh save of the recomputed run).
#[test]
fn format_1_files_migrate_to_format_2() {
    let mut opt = Shampoo::<f64>::default();
    opt.load_checkpoint_bytes(&read_fixture(1, "shampoo_f64"), None)
        .unwrap();
    let resaved = opt.to_checkpoint_bytes(None).unwrap();
    assert_eq!(metadata(&resaved)["format"], 2);
    // a format-1 file records no parameter shapes: the state learns them at its next step
    let mut fresh = shampoo_run();
    for ps in fresh.opt_state_mut().params.values_mut() {
        assert!(!ps.shape.is_empty());
        ps.shape.clear();
    }
    assert_eq!(resaved, fresh.to_checkpoint_bytes(None).unwrap());
}

/// A version this build does not know is refused, naming the version; so is a format-2 file
/// without a checksum and a format-1 file with one.
#[test]
fn unknown_versions_and_missing_checksums_are_refused() {
    let bytes = nadam_run().to_checkpoint_bytes(None).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let rewrite = |edit: &dyn Fn(&mut serde_json::Value)| -> Vec<u8> {
        let mut meta = metadata(&bytes);
        edit(&mut meta);
        let info = std::collections::HashMap::from([(
            "optim_dsl".to_string(),
            serde_json::to_string(&meta).unwrap(),
        )]);
        safetensors::serialize(st.tensors(), Some(info)).unwrap()
    };
    let mut opt = NAdam::<f32>::default();
    type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
    let cases: [(Edit<'_>, &str); 3] = [
        (
            &|m| m["format"] = 5.into(),
            "format version 5 is not supported",
        ),
        (
            &|m| {
                m.as_object_mut().unwrap().remove("checksum");
            },
            "requires a checksum",
        ),
        (&|m| m["format"] = 1.into(), "format 1 has no checksum"),
    ];
    for (edit, want) in cases {
        let err = opt.load_checkpoint_bytes(&rewrite(edit), None).unwrap_err();
        assert!(
            matches!(&err, OptimError::Checkpoint(m) if m.contains(want)),
            "{err}"
        );
        assert_eq!(opt.opt_state().step, 0);
    }
}

//! Smoke tests of the character-level transformer through the public API of `examples`: every
//! optimizer of the language-model table lowers the loss of a tiny transformer in a few steps
//! (K-FAC on the model with `KfacLinear` projections, with its statistics updated every step),
//! Muon (as the comparison configures it) sends the embeddings and the head to AdamW and every
//! hidden matrix to Newton–Schulz, and K-FAC preconditions exactly the six projections.
//!
//! A tiny configuration (`TinyLm`: width 16, one block, context 16) keeps the file to a few
//! seconds in the dev profile.

use dfdx::nn::{BuildModule, TensorCollection, ZeroGrads};
use dfdx::tensor::Cpu;
use examples::charlm::{model, optimizers, CharTransformer, Kfac, LinearKind, Plain, TinyLm};
use examples::data::text::{self, Corpus};
use optim_dsl::kfac::KfacStats;
use optim_dsl::prelude::Hyper;

const BATCH: usize = 8;
const STEPS: u64 = 30;

/// The six projection weights of the tiny transformer's one block: the matrices K-FAC
/// preconditions and Muon orthogonalizes.
const PROJECTIONS: [&str; 6] = [
    "blocks.0.attn.wq.weight",
    "blocks.0.attn.wk.weight",
    "blocks.0.attn.wv.weight",
    "blocks.0.attn.proj.weight",
    "blocks.0.mlp.fc.weight",
    "blocks.0.mlp.proj.weight",
];

/// `TinyLm` with block projections of kind `K`.
type Tiny<K> = CharTransformer<16, 2, 32, 1, 16, f32, Cpu, K>;

/// Trains a fresh tiny transformer (seed 0) with the table entry `name` at a constant `lr` for
/// `STEPS` steps, updating `kfac` (if any) before each step as the comparison does. Returns the
/// mean loss (nats/char) on `probe` before and after, and the trained optimizer.
fn train_tiny<K: LinearKind>(
    train: &Corpus,
    probe: &(Vec<u8>, Vec<u8>),
    name: &str,
    lr: f64,
    mut kfac: Option<KfacStats>,
) -> (f64, f64, Box<dyn optimizers::ModelOptimizer<Tiny<K>>>)
where
    Tiny<K>: BuildModule<Cpu, f32> + TensorCollection<f32, Cpu>,
{
    let dev = Cpu::seed_from_u64(0);
    let mut net = Tiny::<K>::build_on(&dev);
    let mut grads = net.alloc_grads();
    if let Some(stats) = &kfac {
        assert_eq!(stats.watch(&net, &mut grads).unwrap(), 6, "six projections");
    }
    let constant = |p: f64| Hyper::from(p);
    let mut opt = optimizers::build::<Tiny<K>>(name, lr, &constant).unwrap();
    let before = model::evaluate(&dev, &net, probe, TinyLm::CONTEXT, 64);
    for step in 0..STEPS {
        let (x, y) = train.batch(BATCH, TinyLm::CONTEXT, 0, step);
        let l = model::loss_and_grads(&dev, &net, &mut grads, &x, &y, BATCH);
        assert!(l.is_finite(), "{name}: loss {l} at step {step}");
        if let Some(stats) = &mut kfac {
            let report = opt.kfac_update(stats, &mut net, &mut grads).unwrap();
            assert_eq!(report.recorded, 6, "{name}: step {step}: {report:?}");
            assert_eq!(report.refreshed, step % 10 == 0, "{name}: step {step}");
        }
        opt.step(&mut net, &mut grads)
            .unwrap_or_else(|e| panic!("{name}: step {step} failed: {e}"));
        net.zero_grads(&mut grads);
    }
    let after = model::evaluate(&dev, &net, probe, TinyLm::CONTEXT, 64);
    (before, after, opt)
}

#[test]
fn every_listed_optimizer_lowers_the_loss_of_a_tiny_transformer() {
    let (train, _) = text::load().unwrap().split(0.1).unwrap();
    let probe = train.windows(TinyLm::CONTEXT, 64);
    assert!(optimizers::OPTIMIZERS.len() >= 2);
    for spec in optimizers::OPTIMIZERS {
        // A constant learning rate: the table's peak, ×3 for this tiny model and short run.
        let lr = 3.0 * spec.peak_lr;
        let (before, after, state_bytes) = if optimizers::uses_kfac(spec.name) {
            let stats = KfacStats::new(optimizers::kfac_stats_config()).unwrap();
            let (b, a, opt) = train_tiny::<Kfac>(&train, &probe, spec.name, lr, Some(stats));
            (b, a, opt.state_bytes())
        } else {
            let (b, a, opt) = train_tiny::<Plain>(&train, &probe, spec.name, lr, None);
            (b, a, opt.state_bytes())
        };
        // An untrained model is near uniform over the 128 byte values.
        assert!(
            (before - 128f64.ln()).abs() < 0.3,
            "{}: {before}",
            spec.name
        );
        eprintln!("{}: {before:.3} -> {after:.3} nats/char", spec.name);
        assert!(
            after < 0.85 * before,
            "{} (peak lr {}): loss {before} -> {after}",
            spec.name,
            spec.peak_lr
        );
        assert!(state_bytes > 0, "{}", spec.name);
    }
}

#[test]
fn kfac_preconditions_the_projections_and_sends_the_rest_to_adamw() {
    let (train, _) = text::load().unwrap().split(0.1).unwrap();
    let probe = train.windows(TinyLm::CONTEXT, 16);
    let stats = KfacStats::new(optimizers::kfac_stats_config()).unwrap();
    let (_, _, opt) = train_tiny::<Kfac>(&train, &probe, optimizers::KFAC, 0.1, Some(stats));
    let routing = opt.routing();
    // KfacLm's rules: 0 = K-FAC (KfacLinear weights), 1 = the AdamW fallback.
    let kfac: Vec<&str> = routing
        .iter()
        .filter(|r| r.1 == 0)
        .map(|r| r.0.as_str())
        .collect();
    let mut expected = PROJECTIONS;
    let mut kfac = kfac;
    kfac.sort_unstable();
    expected.sort_unstable();
    assert_eq!(kfac, expected);
    for (name, rule, states) in &routing {
        if *rule == 1 {
            assert!(
                states.contains(&"m") && states.contains(&"v"),
                "{name}: {states:?}"
            );
        }
    }
    // the statistic buffers are not trainable: no optimizer state for them
    assert!(
        routing.iter().all(|r| !r.0.contains("kfac_")),
        "{routing:?}"
    );
}

#[test]
fn muon_sends_embeddings_and_head_to_adamw_and_hidden_matrices_to_newton_schulz() {
    let (train, _) = text::load().unwrap().split(0.1).unwrap();
    let dev = Cpu::seed_from_u64(0);
    let mut net = TinyLm::build_on(&dev);
    let mut grads = net.alloc_grads();
    let spec = optimizers::spec("muon").unwrap();
    let constant = |p: f64| Hyper::from(p);
    let mut opt = optimizers::build::<TinyLm>("muon", spec.peak_lr, &constant).unwrap();
    let (x, y) = train.batch(2, TinyLm::CONTEXT, 0, 0);
    model::loss_and_grads(&dev, &net, &mut grads, &x, &y, 2);
    opt.step(&mut net, &mut grads).unwrap();

    let routing = opt.routing();
    let rule_of = |name: &str| {
        routing
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no state for {name}; have {routing:?}"))
    };
    // Muon's rules: 0 = matrices (momentum + orthogonalize), 1 = the AdamW fallback.
    let adamw = [
        "embed.weight",
        "pos_embed.weight",
        "head.weight",
        "head.bias",
        "ln_f.gamma",
        "blocks.0.attn.wq.bias",
        "blocks.0.mlp.fc.bias",
    ];

    for name in adamw {
        let (_, rule, states) = rule_of(name);
        assert_eq!(*rule, 1, "{name} should go to AdamW; states {states:?}");
        assert!(
            states.contains(&"m") || states.contains(&"v"),
            "{name}: {states:?}"
        );
    }
    for name in PROJECTIONS {
        let (_, rule, states) = rule_of(name);
        assert_eq!(
            *rule, 0,
            "{name} should be orthogonalized; states {states:?}"
        );
    }
    // Every parameter was routed: 6 hidden matrices to Newton–Schulz, the rest to AdamW.
    assert_eq!(
        routing.iter().filter(|r| r.1 == 0).count(),
        PROJECTIONS.len()
    );
    // The plan names both rules.
    let plan = opt.plan().to_string();
    assert!(plan.contains("orthogonalize"), "{plan}");
}

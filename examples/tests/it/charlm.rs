//! Smoke tests of the character-level transformer through the public API of `examples`: every
//! optimizer of the language-model table lowers the loss of a tiny transformer in a few steps,
//! and Muon (as the comparison configures it) sends the embeddings and the head to AdamW and
//! every hidden matrix to Newton–Schulz.
//!
//! A tiny configuration (`TinyLm`: width 16, one block, context 16) keeps the file to a few
//! seconds in the dev profile.

use dfdx::nn::ZeroGrads;
use dfdx::tensor::Cpu;
use examples::charlm::{model, optimizers, TinyLm};
use examples::data::text;
use optim_dsl::prelude::Hyper;

const BATCH: usize = 8;
const STEPS: u64 = 30;

/// Mean loss (nats/char) of `net` on fixed training windows.
fn loss(dev: &Cpu, net: &TinyLm, windows: &(Vec<u8>, Vec<u8>)) -> f64 {
    model::evaluate(dev, net, windows, TinyLm::CONTEXT, 64)
}

#[test]
fn every_listed_optimizer_lowers_the_loss_of_a_tiny_transformer() {
    let (train, _) = text::load().unwrap().split(0.1).unwrap();
    let probe = train.windows(TinyLm::CONTEXT, 64);
    assert!(optimizers::OPTIMIZERS.len() >= 2);
    for spec in optimizers::OPTIMIZERS {
        let dev = Cpu::seed_from_u64(0);
        let mut net = TinyLm::build_on(&dev);
        let mut grads = net.alloc_grads();
        // A constant learning rate: the table's peak, ×3 for this tiny model and short run.
        let constant = |p: f64| Hyper::from(3.0 * p);
        let mut opt = optimizers::build::<TinyLm>(spec.name, spec.peak_lr, &constant).unwrap();
        let before = loss(&dev, &net, &probe);
        // An untrained model is near uniform over the 128 byte values.
        assert!(
            (before - 128f64.ln()).abs() < 0.3,
            "{}: {before}",
            spec.name
        );
        for step in 0..STEPS {
            let (x, y) = train.batch(BATCH, TinyLm::CONTEXT, 0, step);
            let l = model::loss_and_grads(&dev, &net, &mut grads, &x, &y, BATCH);
            assert!(l.is_finite(), "{}: loss {l} at step {step}", spec.name);
            opt.step(&mut net, &mut grads)
                .unwrap_or_else(|e| panic!("{}: step {step} failed: {e}", spec.name));
            net.zero_grads(&mut grads);
        }
        let after = loss(&dev, &net, &probe);
        eprintln!("{}: {before:.3} -> {after:.3} nats/char", spec.name);
        assert!(
            after < 0.85 * before,
            "{} (peak lr {}): loss {before} -> {after}",
            spec.name,
            spec.peak_lr
        );
        assert!(opt.state_bytes() > 0, "{}", spec.name);
    }
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
    let newton_schulz = [
        "blocks.0.attn.wq.weight",
        "blocks.0.attn.wk.weight",
        "blocks.0.attn.wv.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.mlp.fc.weight",
        "blocks.0.mlp.proj.weight",
    ];
    for name in adamw {
        let (_, rule, states) = rule_of(name);
        assert_eq!(*rule, 1, "{name} should go to AdamW; states {states:?}");
        assert!(
            states.contains(&"m") || states.contains(&"v"),
            "{name}: {states:?}"
        );
    }
    for name in newton_schulz {
        let (_, rule, states) = rule_of(name);
        assert_eq!(
            *rule, 0,
            "{name} should be orthogonalized; states {states:?}"
        );
    }
    // Every parameter was routed: 6 hidden matrices to Newton–Schulz, the rest to AdamW.
    assert_eq!(
        routing.iter().filter(|r| r.1 == 0).count(),
        newton_schulz.len()
    );
    // The plan names both rules.
    let plan = opt.plan().to_string();
    assert!(plan.contains("orthogonalize"), "{plan}");
}

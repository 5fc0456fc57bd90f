//! The ownership layout: rule classification from real plans, hand-computed costs, and the
//! longest-first placement.

use optim_dist::layout::{cost, rule_work, Layout, RuleWork, ShardOptions, WorkKind};
use optim_dsl::prelude::*;
use optim_dsl::zoo::{Adafactor, AdamW, Lamb, Muon, Shampoo, Soap};

optimizer! {
    /// `clip_grad_norm_` then SGD.
    pub ClippedSgd<lr = 0.05, max_norm = 1.0> {
        let g = clip_global_norm(grad, max_norm);
        param -= lr * g;
    }
}

optimizer! {
    /// An element-wise rule whose step size uses the shape (muP-style): never split.
    pub FanInSgd<lr = 0.1> {
        param -= lr / fan_in * grad;
    }
}

/// The kind of work of rule 0 of `O`'s default plan.
fn first_rule<O: DslOptimizer<f32> + Default>() -> WorkKind {
    rule_work(&O::default().explain(), 0).kind
}

#[test]
fn rules_are_classified_from_their_plans() {
    let kind = |plan: &Plan, rule: usize| rule_work(plan, rule).kind;
    let muon = Muon::<f32>::default().explain();
    assert_eq!(kind(&muon, 0), WorkKind::NewtonSchulz);
    assert!(
        rule_work(&muon, 0).uses_shape,
        "Muon scales by sqrt(max(1, rows / cols))"
    );
    assert_eq!(kind(&muon, 1), WorkKind::ElementWise, "the reused AdamW");
    assert!(!rule_work(&muon, 1).uses_shape);
    assert_eq!(first_rule::<AdamW<f32>>(), WorkKind::ElementWise);
    assert_eq!(first_rule::<Shampoo<f32>>(), WorkKind::Kronecker);
    assert_eq!(first_rule::<Soap<f32>>(), WorkKind::Kronecker);
    assert_eq!(first_rule::<Lamb<f32>>(), WorkKind::WholeTensor);
    assert_eq!(first_rule::<Adafactor<f32>>(), WorkKind::WholeTensor);
    let clip = rule_work(&ClippedSgd::<f32>::default().explain(), 0);
    assert_eq!((clip.kind, clip.global), (WorkKind::Global, true));
    assert!(rule_work(&FanInSgd::<f32>::default().explain(), 0).uses_shape);
}

#[test]
fn costs_match_hand_computed_flops() {
    let w = |kind| RuleWork {
        kind,
        global: false,
        ops_per_elem: 10,
        uses_shape: false,
    };
    // 4 × 8: 32 elements × 10 ops = 320 for the loops.
    assert_eq!(cost(&[4, 8], &w(WorkKind::ElementWise)), 320);
    // Newton–Schulz, m = 4, n = 8: 5 (4·16·8 + 2·64) = 3200.
    assert_eq!(cost(&[4, 8], &w(WorkKind::NewtonSchulz)), 320 + 3200);
    assert_eq!(cost(&[8, 4], &w(WorkKind::NewtonSchulz)), 320 + 3200);
    // Kronecker, r = 4, c = 8: 4 (16·8 + 4·64) + 10 (64 + 512) = 1536 + 5760.
    assert_eq!(cost(&[4, 8], &w(WorkKind::Kronecker)), 320 + 7296);
    // Per-tensor work: 4 more passes.
    assert_eq!(cost(&[4, 8], &w(WorkKind::WholeTensor)), 320 + 128);
    // A conv kernel is its rows × (in·kh·kw) view: 2 × 12, m = 2, n = 12.
    assert_eq!(
        cost(&[2, 3, 2, 2], &w(WorkKind::NewtonSchulz)),
        240 + 5 * (4 * 4 * 12 + 2 * 8)
    );
}

#[test]
fn longest_first_on_the_least_loaded_rank() {
    // AdamW: cost ∝ numel. 100 → r0; 60 → r1; 50 → r1 (110); 40 → r0 (140); 30 → r1 (140);
    // 20 → r0 (tie 140/140 goes to the lower rank).
    let names = ["a", "b", "c", "d", "e", "f"];
    let sizes = [[40], [100], [20], [60], [30], [50]];
    let list: Vec<(&str, &[usize])> = names
        .iter()
        .zip(&sizes)
        .map(|(n, s)| (*n, &s[..]))
        .collect();
    let l = Layout::compute::<f32, AdamW<f32>>(
        &AdamW::<f32>::default().explain(),
        &list,
        2,
        ShardOptions::default(),
    );
    let owners: Vec<usize> = l.pieces.iter().map(|p| p.owner).collect();
    assert_eq!(owners, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(l.counts, vec![160, 140]);
    assert_eq!(l.by_rank, vec![vec![0, 1, 2], vec![3, 4, 5]]);
}

#[test]
fn matrix_rules_and_shape_dependent_rules_are_never_split() {
    let opts = ShardOptions {
        min_split_elems: 1,
        allow_split: true,
    };
    let list: Vec<(&str, &[usize])> = vec![("h.weight", &[256, 256]), ("h.bias", &[4])];
    for (plan, layout) in [
        (
            "Muon",
            Layout::compute::<f32, Muon<f32>>(&Muon::<f32>::default().explain(), &list, 4, opts),
        ),
        (
            "FanInSgd",
            Layout::compute::<f32, FanInSgd<f32>>(
                &FanInSgd::<f32>::default().explain(),
                &list,
                4,
                opts,
            ),
        ),
    ] {
        assert_eq!(layout.pieces.len(), 2, "{plan}: nothing split");
    }
    let adamw =
        Layout::compute::<f32, AdamW<f32>>(&AdamW::<f32>::default().explain(), &list, 4, opts);
    assert_eq!(
        adamw.pieces.iter().filter(|p| p.param == 0).count(),
        4,
        "AdamW splits"
    );
    assert!(adamw.imbalance() < 1.01);
}

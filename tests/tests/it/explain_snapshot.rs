//! `explain()` of every zoo optimizer under every combination of its flags, compared with the
//! committed snapshot `tests/fixtures/explain_zoo.txt`.
//!
//! The snapshot was written by the code before the loop-IR redesign (issue 9) and pins the plans
//! (loops, streams read and written, operation counts, barriers, state buffers, hoisted scalars)
//! so that a refactor of the macro cannot change what runs without this test failing. A
//! deliberate change to the plans rewrites it with `UPDATE_SNAPSHOTS=1 cargo test -p optim-tests
//! --test it explain_snapshot::`, and the diff is reviewed in the commit.

use optim_dsl::zoo::{
    AdEMAMix, Adadelta, Adafactor, Adagrad, Adam, AdamW, Adamax, Adan, Adopt, CautiousAdamW,
    CautiousLion, Dion, KFac, LaProp, Lamb, Lion, MarsAdamW, Muon, NAdam, NorMuon, PsgdKron, RAdam,
    RMSprop, ScheduleFreeAdamW, Sgd, Shampoo, Soap, Splus,
};
// issue 11 (branch ns-coeffs)
use optim_dsl::zoo::{AdaMuon, AdamMini, MuonPolarExpress, Prodigy};
use optim_dsl::{DslOptimizer, Field, OptimizerConfig};
use std::fmt::Write as _;

/// Every plan of optimizer `O`: one block per flag combination, flags in declaration order.
fn plans<O: DslOptimizer<f32>>(name: &str, out: &mut String) {
    let base = O::Config::default();
    let flags: Vec<&'static str> = base
        .fields()
        .into_iter()
        .filter_map(|(n, f)| matches!(f, Field::Flag(_)).then_some(n))
        .collect();
    for mask in 0..1usize << flags.len() {
        let mut cfg = base.clone();
        let mut label = Vec::new();
        for (j, flag) in flags.iter().enumerate() {
            let on = mask >> j & 1 == 1;
            cfg.set_field(flag, Field::Flag(on)).expect("flag exists");
            label.push(format!("{flag}={on}"));
        }
        let plan = cfg.plan();
        let _ = writeln!(out, "=== {name} [{}]", label.join(", "));
        let _ = write!(out, "{plan}");
        let _ = writeln!(out, "{plan:#?}");
    }
}

fn snapshot() -> String {
    let mut s = String::new();
    plans::<Sgd>("Sgd", &mut s);
    plans::<Adam>("Adam", &mut s);
    plans::<AdamW>("AdamW", &mut s);
    plans::<RMSprop>("RMSprop", &mut s);
    plans::<Adagrad>("Adagrad", &mut s);
    plans::<Adadelta>("Adadelta", &mut s);
    plans::<Adamax>("Adamax", &mut s);
    plans::<NAdam>("NAdam", &mut s);
    plans::<RAdam>("RAdam", &mut s);
    plans::<Lion>("Lion", &mut s);
    plans::<AdEMAMix>("AdEMAMix", &mut s);
    plans::<Muon>("Muon", &mut s);
    plans::<Adafactor>("Adafactor", &mut s);
    plans::<Shampoo>("Shampoo", &mut s);
    plans::<Lamb>("Lamb", &mut s);
    plans::<Soap>("Soap", &mut s);
    plans::<ScheduleFreeAdamW>("ScheduleFreeAdamW", &mut s);
    plans::<KFac>("KFac", &mut s);
    plans::<NorMuon>("NorMuon", &mut s);
    plans::<CautiousAdamW>("CautiousAdamW", &mut s);
    plans::<CautiousLion>("CautiousLion", &mut s);
    plans::<MarsAdamW>("MarsAdamW", &mut s);
    plans::<Adan>("Adan", &mut s);
    plans::<Adopt>("Adopt", &mut s);
    plans::<LaProp>("LaProp", &mut s);
    plans::<Splus>("Splus", &mut s);
    plans::<PsgdKron>("PsgdKron", &mut s);
    plans::<Dion>("Dion", &mut s);
    // issue 11 (branch ns-coeffs)
    plans::<MuonPolarExpress>("MuonPolarExpress", &mut s);
    plans::<AdaMuon>("AdaMuon", &mut s);
    plans::<AdamMini>("AdamMini", &mut s);
    plans::<Prodigy>("Prodigy", &mut s);
    s
}

#[test]
fn zoo_explain_matches_the_snapshot() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/explain_zoo.txt");
    let now = snapshot();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &now).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(path).expect("snapshot exists");
    if now != want {
        let line = now
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(now.lines().count().min(want.lines().count()));
        panic!(
            "explain() differs from tests/fixtures/explain_zoo.txt at line {}:\n  now:  {:?}\n  want: {:?}",
            line + 1,
            now.lines().nth(line),
            want.lines().nth(line)
        );
    }
}

//! 8-bit block-quantised optimizer state (`let m: q8 = ...`, `let v: uq8 = ...`,
//! `optim_runtime::lowp::q8`): the maps against the reference table
//! (`tests/refgen/q8_maps.py`), a first AdamW step by hand, tails and empty tensors,
//! checkpoint round trips (format 4: `U8` codes and `F32` block scales), loading checkpoints of
//! other storages, and the bytes `explain()` counts. Accuracy over 1,000 steps and thread-count
//! independence are in `lowp_state.rs`.

use optim_dsl::lowp::q8::{Q8Map, BLOCK};
use optim_dsl::prelude::*;

optim_tests::adamw_stored! {
    /// AdamW with f32 state (for checkpoints of another storage).
    pub AdamWRef
}

/// AdamW with 8-bit moments on every tensor (`optim_tests::zoo::AdamWQ8`, the zoo's
/// `AdamW8bit` rule without its 4,096-element minimum) at the learning rate of [`AdamWRef`]
/// (1e-2).
fn adamw8() -> optim_tests::zoo::AdamWQ8<f32> {
    optim_tests::zoo::adamw_8bit(1e-2)
}

/// The runtime's maps are bit-identical to the table `tests/refgen/q8_maps.py` writes
/// (bitsandbytes' `create_dynamic_map` with its float32 arithmetic emulated).
#[test]
fn maps_match_reference_table() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/q8_maps.txt"))
            .unwrap();
    let mut seen = 0;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let map = match it.next() {
            Some("signed") => Q8Map::Signed,
            Some("unsigned") => Q8Map::Unsigned,
            other => panic!("unexpected line {other:?}"),
        };
        let want: Vec<u32> = it.map(|h| u32::from_str_radix(h, 16).unwrap()).collect();
        let got: Vec<u32> = map.values().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{map:?}");
        seen += 1;
    }
    assert_eq!(seen, 2);
}

fn grads(n: usize, step: u64) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u64 * 7 + step * 13) % 23) as f32 - 11.0) / 8.0)
        .collect()
}

fn step<O: DslOptimizer<f32>>(opt: &mut O, w: &mut [f32], g: &[f32]) {
    opt.update_slices(&mut [ParamSlice {
        name: "w",
        shape: &[w.len()],
        param: w,
        grad: g,
    }])
    .unwrap();
}

/// First step by hand, `g = [1, -0.5, 0.25]`: the update uses the new moments before they are
/// stored (so the parameters equal the f32 run's), then `m = 0.1 g` is stored with absmax 0.1
/// as the signed map's entries nearest `1, -0.5, 0.25`: `1`, `-0.50078125`
/// (`0.1 + 0.9·57/128`) and `0.24765625` (`0.1 + 0.9·21/128`); `v = 0.001 g²` with absmax
/// 0.001 as the unsigned map's nearest to `1, 0.25, 0.0625`: `1`, `0.251171875`
/// (`0.1 + 0.9·43/256`) and `0.062734375` (`0.1·(0.1 + 0.9·75/128)`). The second step loads
/// those values: its update matches AdamW computed in f64 from them.
#[test]
fn first_steps_by_hand() {
    let mut opt = adamw8();
    let mut reference = AdamWRef::<f32>::default();
    let mut w = vec![0.5f32, -1.0, 2.0];
    let mut wr = w.clone();
    let g = [1.0f32, -0.5, 0.25];
    step(&mut opt, &mut w, &g);
    step(&mut reference, &mut wr, &g);
    assert_eq!(w, wr);
    let ps = opt.opt_state().param("w").unwrap();
    let m = ps.slot_values(0).unwrap();
    let v = ps.slot_values(1).unwrap();
    let close = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * y.abs())
    };
    let m_hand = [0.1, -0.050_078_125, 0.024_765_625];
    let v_hand = [0.001, 0.000_251_171_875, 0.000_062_734_375];
    assert!(close(&m, &m_hand), "{m:?}");
    assert!(close(&v, &v_hand), "{v:?}");
    assert_eq!(ps.q8[0].scales, vec![0.1f32]);
    assert_eq!(ps.q8[1].scales, vec![0.001f32]);

    let g2 = [-0.25f32, 0.75, 0.5];
    let w1 = w.clone();
    step(&mut opt, &mut w, &g2);
    for i in 0..3 {
        let gi = f64::from(g2[i]);
        let m2 = 0.9 * m[i] + 0.1 * gi;
        let v2 = 0.999 * v[i] + 0.001 * gi * gi;
        let (c1, c2) = (1.0 - 0.9f64.powi(2), 1.0 - 0.999f64.powi(2));
        let want =
            f64::from(w1[i]) * (1.0 - 1e-4) - 1e-2 / c1 * m2 / ((v2.sqrt() / c2.sqrt()) + 1e-8);
        assert!(
            (f64::from(w[i]) - want).abs() < 2e-6,
            "element {i}: {} vs {want}",
            w[i]
        );
    }
}

/// Tensors whose length is not a multiple of 256 get a short last block with its own scale;
/// empty tensors have no codes and no scales; several tensors in one step stay separate.
#[test]
fn tails_and_empty_tensors() {
    let mut opt = adamw8();
    let mut reference = AdamWRef::<f32>::default();
    let (na, nb) = (2 * BLOCK + 5, 0);
    let mut a = vec![0.0f32; na];
    let mut b: Vec<f32> = vec![0.0; nb];
    let mut ar = a.clone();
    for s in 0..3 {
        let ga = grads(na, s);
        let gb: Vec<f32> = Vec::new();
        for (o, w) in [(true, &mut a), (false, &mut ar)] {
            let mut slices = [
                ParamSlice {
                    name: "a",
                    shape: &[na],
                    param: &mut w[..],
                    grad: &ga,
                },
                ParamSlice {
                    name: "b",
                    shape: &[0],
                    param: &mut b[..],
                    grad: &gb,
                },
            ];
            if o {
                opt.update_slices(&mut slices).unwrap();
            } else {
                reference.update_slices(&mut slices).unwrap();
            }
        }
    }
    let ps = opt.opt_state().param("a").unwrap();
    for (k, q) in ps.q8.iter().enumerate() {
        assert_eq!((q.codes.len(), q.scales.len()), (na, 3), "slot {k}");
        // the tail block's scale is its own absmax (of the dequantised values, up to the map's
        // largest entry 1)
        let vals = ps.slot_values(k).unwrap();
        let tail_max = vals[2 * BLOCK..].iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!((tail_max - f64::from(q.scales[2])).abs() <= 0.0071 * tail_max);
    }
    // the quantised run stays near the f32 one after 3 steps
    let gap = a
        .iter()
        .zip(&ar)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(gap < 5e-3, "{gap}");
    let pb = opt.opt_state().param("b").unwrap();
    assert!(pb
        .q8
        .iter()
        .all(|q| q.codes.is_empty() && q.scales.is_empty()));
    assert_eq!(pb.step, 3);
}

/// Format 4: codes as `U8`, scales as `F32` under `#absmax`, `q8` and `scales` in the
/// metadata; loading gives back the same state bit for bit, and the resumed run is
/// bit-identical to one that never stopped.
#[test]
fn checkpoint_round_trip_q8() {
    let n = 1000;
    let mut a = adamw8();
    let mut wa = vec![0.0f32; n];
    for s in 0..7 {
        step(&mut a, &mut wa, &grads(n, s));
    }
    let bytes = a.to_checkpoint_bytes(None).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for slot in ["m", "v"] {
        let t = st.tensor(&format!("w/{slot}")).unwrap();
        assert_eq!((t.dtype(), t.shape()), (safetensors::Dtype::U8, &[n][..]));
        let t = st.tensor(&format!("w/{slot}#absmax")).unwrap();
        assert_eq!((t.dtype(), t.shape()), (safetensors::Dtype::F32, &[4][..]));
    }
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&header.metadata().as_ref().unwrap()["optim_dsl"]).unwrap();
    assert_eq!(meta["format"], 4);
    let bufs = &meta["params"][0]["buffers"];
    assert_eq!(bufs[0]["q8"], "signed");
    assert_eq!(bufs[1]["q8"], "unsigned");
    assert_eq!(bufs[1]["scales"], "w/v#absmax");

    let mut b = adamw8();
    b.load_checkpoint_bytes(&bytes, None).unwrap();
    assert_eq!(a.opt_state().params, b.opt_state().params);
    let mut wb = wa.clone();
    for s in 7..12 {
        step(&mut a, &mut wa, &grads(n, s));
        step(&mut b, &mut wb, &grads(n, s));
    }
    assert!(wa.iter().zip(&wb).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(a.opt_state().params, b.opt_state().params);
    assert_eq!(
        a.to_checkpoint_bytes(None).unwrap(),
        b.to_checkpoint_bytes(None).unwrap()
    );
}

/// The same optimizer (same name) before and after its moments were declared 8-bit.
mod before {
    optim_tests::adamw_stored! {
        /// AdamW with f32 moments.
        pub AdamWX
    }
}
mod after {
    optim_tests::adamw_stored! {
        /// AdamW with 8-bit moments.
        pub AdamWX: q8, uq8
    }
}

/// An f32 checkpoint (format 2, written before 8-bit state existed) loads into the 8-bit rule:
/// the next step quantises the moments instead of starting them from zero; and an 8-bit
/// checkpoint loads into the f32 rule, dequantised.
#[test]
fn checkpoints_of_other_storages_load() {
    let n = 300;
    let mut f = before::AdamWX::<f32>::default();
    let mut w = vec![0.0f32; n];
    for s in 0..5 {
        step(&mut f, &mut w, &grads(n, s));
    }
    let bytes = f.to_checkpoint_bytes(None).unwrap();
    let mut q = after::AdamWX::<f32>::default();
    q.load_checkpoint_bytes(&bytes, None).unwrap();
    let mut wq = w.clone();
    let mut wf = w.clone();
    step(&mut q, &mut wq, &grads(n, 5));
    step(&mut f, &mut wf, &grads(n, 5));
    let ps = q.opt_state().param("w").unwrap();
    assert_eq!(ps.step, 6);
    assert!(ps.buffers.iter().all(Vec::is_empty));
    assert_eq!(ps.q8[0].codes.len(), n);
    // from zero moments the step would be about lr = 1e-2 per element; continuing gives the f32
    // step up to the quantisation error
    let gap = wq
        .iter()
        .zip(&wf)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(gap < 1e-3, "{gap}");

    let bytes = q.to_checkpoint_bytes(None).unwrap();
    let mut back = before::AdamWX::<f32>::default();
    back.load_checkpoint_bytes(&bytes, None).unwrap();
    step(&mut back, &mut wq.clone(), &grads(n, 6));
    let ps = back.opt_state().param("w").unwrap();
    assert!(ps.q8.iter().all(|b| b.codes.is_empty()));
    assert_eq!(ps.buffers[0].len(), n);
}

/// `explain()`: 1 byte per 8-bit stream, AdamW with q8/uq8 moments 16 B/param, 16.0625 with
/// the block scales (4 accesses of 4/256 bytes).
#[test]
fn explain_counts_8_bit_streams() {
    let plan = adamw8().explain();
    let optim_dsl::RuleBody::Fused { kernels, .. } = &plan.rules[0].body else {
        panic!("fused rule expected");
    };
    assert_eq!(kernels[0].q8, vec!["m", "v"]);
    assert!(kernels[0].low.is_empty());
    assert_eq!(kernels[0].bytes_per_param(4), 16);
    assert_eq!(kernels[0].bytes_per_param_exact(4), 16.0625);
    assert!(plan.to_string().contains("(8-bit: m, v)"), "{plan}");
}

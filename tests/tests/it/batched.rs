//! Batched matrix views (`batch = k` on a matrix word): a `[B, m, n]` parameter with one batch
//! axis is updated exactly — bit for bit — like `B` separate `[m, n]` parameters named
//! `w[0]`, …, `w[B-1]` (the name each slice is handed to its primitive with, so seeded probes
//! agree too). Each optimizer below has a `tensor` rule with `batch = 1` and a `matrix` rule
//! without, and one step updates the batched parameter and its separate twins together.
//! Refused shapes are `Err`s that leave the parameters and state untouched; the per-slice state
//! round-trips through a checkpoint.

use optim_dsl::prelude::*;
use optim_tests::params::slices;

optimizer! {
    /// Muon's direction on momentum, per slice.
    BMuon<lr = 0.02, momentum = 0.9> {
        tensor => {
            let m = momentum(grad, momentum);
            param -= lr * orthogonalize(m, batch = 1);
        }
        matrix => {
            let m = momentum(grad, momentum);
            param -= lr * orthogonalize(m);
        }
        _ => { param -= lr * grad; }
    }
}

optimizer! {
    /// Shampoo's Kronecker preconditioner with an EMA of the statistics, per slice.
    BShampoo<lr = 0.1> {
        tensor => { param -= lr * kron_precondition(grad, beta = 0.9, update_freq = 2, batch = 1); }
        matrix => { param -= lr * kron_precondition(grad, beta = 0.9, update_freq = 2); }
        _ => { param -= lr * grad; }
    }
}

optimizer! {
    /// Adafactor's factored second moment, per slice.
    BAdafactor<lr = 0.1, eps = 1e-30> {
        tensor => {
            let v = factored_second_moment(grad, 0.8, batch = 1);
            param -= lr * grad / sqrt(v + eps);
        }
        _ => {
            let v = factored_second_moment(grad, 0.8);
            param -= lr * grad / sqrt(v + eps);
        }
    }
}

optimizer! {
    /// SOAP's body (as the zoo's `Soap`), with its eigenbasis per slice (refreshed every 2 steps).
    BSoap<lr = 3e-3, beta1 = 0.95, beta2 = 0.95, shampoo_beta = 0.95, eps = 1e-8> {
        tensor => {
            let q = kron_eigenbasis(grad, shampoo_beta, update_freq = 2, batch = 1);
            let warm = step > 1.0;
            let m = state(0.0);
            m = select(warm, lerp(m, grad, 1.0 - beta1), m);
            let v = state(0.0);
            let gr = rotate(grad, q);
            v = select(warm, lerp(v, gr * gr, 1.0 - beta2), v);
            let u = unrotate(rotate(m, q) / (sqrt(v) + eps), q);
            param = select(warm, param - lr * u, param);
        }
        matrix => {
            let q = kron_eigenbasis(grad, shampoo_beta, update_freq = 2);
            let warm = step > 1.0;
            let m = state(0.0);
            m = select(warm, lerp(m, grad, 1.0 - beta1), m);
            let v = state(0.0);
            let gr = rotate(grad, q);
            v = select(warm, lerp(v, gr * gr, 1.0 - beta2), v);
            let u = unrotate(rotate(m, q) / (sqrt(v) + eps), q);
            param = select(warm, param - lr * u, param);
        }
        _ => { param -= lr * grad; }
    }
}

optimizer! {
    /// SPlus's `eigen_sign`, PSGD-Kron's fitted preconditioner (fitted every step, seeded probes)
    /// and Dion's low-rank orthonormalisation, per slice.
    BOthers<lr = 0.01> {
        tensor => {
            let a = eigen_sign(grad, grad, 0.9, update_freq = 2, batch = 1);
            let b = psgd_precondition(grad, update = true, seed = 7.0, batch = 1);
            let c = low_rank_orthonormalize(grad, 0.9, rank_fraction = 0.5, seed = 3.0, batch = 1);
            param -= lr * (a + b + c);
        }
        matrix => {
            let a = eigen_sign(grad, grad, 0.9, update_freq = 2);
            let b = psgd_precondition(grad, update = true, seed = 7.0);
            let c = low_rank_orthonormalize(grad, 0.9, rank_fraction = 0.5, seed = 3.0);
            param -= lr * (a + b + c);
        }
        _ => { param -= lr * grad; }
    }
}

optimizer! {
    /// Two batch axes: a `[2, 3, 4, 5]` tensor is 6 slices `[4, 5]`.
    BMuon2<lr = 0.02> {
        tensor => { param -= lr * orthogonalize(grad, batch = 2); }
        matrix => { param -= lr * orthogonalize(grad); }
        _ => { param -= lr * grad; }
    }
}

optimizer! {
    /// Three batch axes: refused on a rank-3 parameter.
    TooMany<lr = 0.02> {
        tensor => { param -= lr * orthogonalize(grad, batch = 3); }
        _ => { param -= lr * grad; }
    }
}

/// Deterministic gradient for step `t`, element `i` of parameter `k` (varied signs and scales,
/// so the slices differ).
fn grad_value(t: usize, k: usize, i: usize) -> f64 {
    let x = (t * 131 + k * 17 + i * 7 + 3) as f64;
    (x * 0.37).sin() * (1.0 + (i % 5) as f64) + 0.1 * (x * 1.3).cos()
}

/// Runs `steps` steps of `opt` on one batched parameter `w` of `shape` and its `B` separate
/// twins `w[i]` of shape `shape[batch..]`, the twins getting exactly the slices of `w`'s
/// gradient; returns the final parameters (`w`, then the twins).
fn run<O: DslOptimizer<f64>>(
    opt: &mut O,
    shape: &[usize],
    batch: usize,
    steps: usize,
) -> Vec<Vec<f64>> {
    let count: usize = shape[..batch].iter().product();
    let len: usize = shape[batch..].iter().product();
    let mut names = vec!["w".to_string()];
    let mut shapes = vec![shape.to_vec()];
    for i in 0..count {
        names.push(format!("w[{i}]"));
        shapes.push(shape[batch..].to_vec());
    }
    let init: Vec<f64> = (0..count * len).map(|i| 0.1 * (i as f64).cos()).collect();
    let mut params = vec![init.clone()];
    params.extend(init.chunks(len).map(<[f64]>::to_vec));
    for t in 0..steps {
        let g: Vec<f64> = (0..count * len).map(|i| grad_value(t, 0, i)).collect();
        let mut grads = vec![g.clone()];
        grads.extend(g.chunks(len).map(<[f64]>::to_vec));
        opt.update_slices(&mut slices(&names, &shapes, &mut params, &grads))
            .unwrap();
    }
    params
}

/// The batched parameter equals its twins bit for bit, and moved.
fn assert_batched_equals_separate(params: &[Vec<f64>], what: &str) {
    let count = params.len() - 1;
    let len = params[0].len() / count;
    for i in 0..count {
        let batched: Vec<u64> = params[0][i * len..(i + 1) * len]
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let separate: Vec<u64> = params[1 + i].iter().map(|v| v.to_bits()).collect();
        assert_eq!(batched, separate, "{what}: slice {i} differs");
        assert!(params[1 + i].iter().all(|v| v.is_finite()), "{what}");
    }
    let init: Vec<f64> = (0..count * len).map(|i| 0.1 * (i as f64).cos()).collect();
    assert_ne!(params[0], init, "{what}: the parameter did not move");
}

/// `steps` steps of a fresh `O` ([`run`]).
fn run_fresh<O: DslOptimizer<f64> + Default>(
    shape: &[usize],
    batch: usize,
    steps: usize,
) -> Vec<Vec<f64>> {
    run(&mut O::default(), shape, batch, steps)
}

/// Every batched word computes per slice: after `steps` steps the batched parameter equals its
/// separate twins bit for bit ([`assert_batched_equals_separate`]); one row per word and shape.
#[test]
fn batched_words_equal_separate_matrices() {
    type Run = fn(&[usize], usize, usize) -> Vec<Vec<f64>>;
    // one row per word and shape: (what, run, shape, batch axes, steps)
    #[rustfmt::skip]
    let rows: [(&str, Run, &[usize], usize, usize); 7] = [
        ("orthogonalize", run_fresh::<BMuon<f64>>, &[3, 4, 6], 1, 3),
        ("orthogonalize, two batch axes", run_fresh::<BMuon2<f64>>, &[2, 3, 4, 5], 2, 2),
        ("kron_precondition", run_fresh::<BShampoo<f64>>, &[3, 4, 5], 1, 4),
        ("factored_second_moment", run_fresh::<BAdafactor<f64>>, &[3, 4, 5], 1, 3),
        // one batch axis on a rank-4 tensor: each slice [3, 4, 5] is itself factored over its
        // last two axes, as a separate [3, 4, 5] parameter is
        ("factored_second_moment, rank 4", run_fresh::<BAdafactor<f64>>, &[2, 3, 4, 5], 1, 3),
        // 5 steps: the bases are created on step 1 and refreshed (with v permuted) on steps 3
        // and 5
        ("kron_eigenbasis / rotate / unrotate", run_fresh::<BSoap<f64>>, &[3, 4, 5], 1, 5),
        ("eigen_sign + psgd_precondition + low_rank_orthonormalize", run_fresh::<BOthers<f64>>,
            &[2, 6, 4], 1, 3),
    ];
    for (what, run, shape, batch, steps) in rows {
        assert_batched_equals_separate(&run(shape, batch, steps), what);
    }
}

#[test]
fn per_slice_state_holds_each_slice_state_in_turn() {
    // Shampoo on [3, 4, 5]: per slice a 4 x 4 and a 5 x 5 factor, so `.stats` holds
    // 3 · (16 + 25) values, and slice i's part equals the separate twin's `.stats`
    let mut opt = BShampoo::<f64>::default();
    run(&mut opt, &[3, 4, 5], 1, 2);
    let st = opt.opt_state();
    let stats = |name: &str| -> Vec<f64> {
        let ps = st.param(name).expect("parameter state");
        let names = <BShampoo<f64> as DslOptimizer<f64>>::state_names(ps.rule);
        let k = names.iter().position(|n| n.ends_with(".stats")).unwrap();
        ps.buffers[k].clone()
    };
    let whole = stats("w");
    assert_eq!(whole.len(), 3 * (16 + 25));
    for i in 0..3 {
        let twin = stats(&format!("w[{i}]"));
        assert_eq!(&whole[i * 41..(i + 1) * 41], &twin[..], "slice {i}");
    }
}

#[test]
fn batch_axes_leaving_no_matrix_axis_are_an_error_and_write_nothing() {
    let mut opt = TooMany::<f64>::default();
    let names = ["b", "w"];
    let shapes = [vec![4usize], vec![2, 3, 4]];
    let mut params = vec![vec![1.0; 4], vec![1.0; 24]];
    let grads = vec![vec![0.5; 4], vec![0.5; 24]];
    let err = opt
        .update_slices(&mut slices(&names, &shapes, &mut params, &grads))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`orthogonalize`"), "{err}");
    assert!(err.contains("batch = 3"), "{err}");
    assert!(err.contains("batch < rank = 3"), "{err}");
    assert_eq!(params, vec![vec![1.0; 4], vec![1.0; 24]]);
    // a rank-4 parameter is fine: [2, 3, 4, 5] is 24 slices of shape [5]
    let shapes = [vec![4usize], vec![2, 3, 4, 5]];
    let mut params = vec![vec![1.0; 4], vec![1.0; 120]];
    let grads = vec![vec![0.5; 4], (0..120).map(|i| i as f64 - 60.5).collect()];
    opt.update_slices(&mut slices(&names, &shapes, &mut params, &grads))
        .unwrap();
    // orthogonalize of a vector [5] (5 x 1, one singular value) is its normalisation g / |g|
    // times p(p(p(p(p(1))))), Muon's quintic p(s) = a s + b s^3 + c s^5 applied 5 times
    let quintic = |s: f64| 3.4445 * s - 4.7750 * s.powi(3) + 2.0315 * s.powi(5);
    let f = (0..5).fold(1.0, |s, _| quintic(s));
    assert!((0.68..0.72).contains(&f), "{f}");
    for s in 0..24 {
        let g = &grads[1][s * 5..(s + 1) * 5];
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        for j in 0..5 {
            let want = 1.0 - 0.02 * f * g[j] / norm;
            let got = params[1][s * 5 + j];
            assert!((got - want).abs() < 1e-12, "slice {s}: {got} vs {want}");
        }
    }
}

#[test]
fn per_slice_state_round_trips_through_a_checkpoint() {
    // 3 steps straight, or 2 steps, a checkpoint into a fresh optimizer, and 1 more step
    let shape = [3usize, 4, 5];
    let mut straight = BSoap::<f64>::default();
    let want = run(&mut straight, &shape, 1, 3);
    let mut first = BSoap::<f64>::default();
    let mid = run(&mut first, &shape, 1, 2);
    let bytes = first.to_checkpoint_bytes(None).unwrap();
    let mut resumed = BSoap::<f64>::default();
    resumed.load_checkpoint_bytes(&bytes, None).unwrap();
    // the third step, from the checkpointed parameters
    let mut names = vec!["w".to_string()];
    let mut shapes = vec![shape.to_vec()];
    for i in 0..3 {
        names.push(format!("w[{i}]"));
        shapes.push(shape[1..].to_vec());
    }
    let mut params = mid;
    let g: Vec<f64> = (0..60).map(|i| grad_value(2, 0, i)).collect();
    let mut grads = vec![g.clone()];
    grads.extend(g.chunks(20).map(<[f64]>::to_vec));
    resumed
        .update_slices(&mut slices(&names, &shapes, &mut params, &grads))
        .unwrap();
    let bits = |v: &Vec<Vec<f64>>| -> Vec<Vec<u64>> {
        v.iter()
            .map(|p| p.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(&params), bits(&want));
}

mod no_panic {
    //! Batched calls through the generated code's path (`matrix::run`) never panic, whatever
    //! the shape (sides of 0 and 1, rank 0 to 4), the batch axes (also `>= rank`) and the
    //! values (NaN, ±inf, huge); `check_call` refuses `batch >= rank` and zero sides,
    //! and with a finite moderate input an accepted call gives a finite output.
    use optim_dsl::matrix::{
        check_call, run, Call, EigenSign, Eigenbasis, Factored, FactoredConfig, Kron, LowRank,
        Orthogonalize, Phase, Primitive, Psgd, Rotate, Src,
    };
    use optim_dsl::{ParamInfo, ParamState};
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => -3.0f64..3.0,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(1e30),
        ]
    }

    /// Two steps of `P` with `batch` axes on `shape`; the output when `check_call` accepts.
    fn drive<P: Primitive<f64> + 'static>(
        cfg: &P::Config,
        shape: &[usize],
        batch: usize,
        grad: &[f64],
    ) -> Option<Vec<f64>> {
        let info = ParamInfo::new("p", shape);
        let ok = check_call::<P>(cfg, batch, info);
        if batch > 0 && batch >= shape.len() {
            let e = ok.as_ref().unwrap_err();
            assert!(
                e.contains("batch < rank") || e.contains("takes no batch axes"),
                "{e}"
            );
        } else if shape.contains(&0) {
            assert!(ok.is_err(), "{}: a zero side is accepted", P::WORD);
        }
        let slots: Vec<usize> = (0..P::STATE.len()).collect();
        let mut ps = ParamState::<f64>::new(0, grad.len());
        ps.buffers.resize(slots.len() + 1, Vec::new());
        ps.ensure_temp(0, grad.len());
        for step in 1..=2 {
            ps.step = step;
            let call = Call {
                input: Src::Grad,
                out: Some(0),
                state: &slots,
                basis_q: None,
                rotated: &[],
                batch,
            };
            run::<f64, P>(cfg, Phase::Barrier, call, &mut ps, &[], grad, info);
        }
        ok.ok().map(|()| ps.temps[0].clone())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn batched_calls_never_panic(
            shape in proptest::collection::vec(0usize..4, 0..5),
            batch in 0usize..5,
            seed in proptest::collection::vec(value(), 64),
        ) {
            let n: usize = shape.iter().product();
            let grad: Vec<f64> = (0..n).map(|i| seed[i % seed.len()]).collect();
            let moderate = grad.iter().all(|v| v.abs() < 10.0);
            let finite = |o: Option<Vec<f64>>| o.is_none_or(|o| !moderate || o.iter().all(|v| v.is_finite()));
            prop_assert!(finite(drive::<Orthogonalize>(&Default::default(), &shape, batch, &grad)));
            prop_assert!(finite(drive::<Kron>(&Default::default(), &shape, batch, &grad)));
            let fcfg = FactoredConfig { beta: 0.9, ..Default::default() };
            drive::<Factored>(&fcfg, &shape, batch, &grad);
            drive::<Psgd>(&Default::default(), &shape, batch, &grad);
            drive::<LowRank>(&Default::default(), &shape, batch, &grad);
            drive::<EigenSign>(&Default::default(), &shape, batch, &grad);
            drive::<Eigenbasis>(&Default::default(), &shape, batch, &grad);
            drive::<Rotate>(&Default::default(), &shape, batch, &grad);
        }
    }
}

//! K-FAC from activation statistics (`optim_dsl::kfac`): the factors captured from a dfdx
//! forward/backward equal `E[a aᵀ]` and `E[ĝ ĝᵀ]` computed by a plain f64 reference of the same
//! two-layer network, their EMA and damping follow the documented rule, and one step of the
//! zoo's `KFac` fed by them equals `(G + λI)⁻¹ ∇W (A + λI)⁻¹` computed independently.

use dfdx::prelude::*;
use optim_dsl::kfac::{builder::KfacLinear, FactorDamping, KfacStats, KfacStatsConfig};
use optim_dsl::zoo::{KFac, KFacConfig};
use optim_dsl::{DfdxUpdate, DslOptimizer, OptimError};

const N: usize = 5;
const I: usize = 3;
const H: usize = 4;
const O: usize = 2;

type Arch = (KfacLinear<I, H>, ReLU, KfacLinear<H, O>);
type Model = <Arch as BuildOnDevice<Cpu, f64>>::Built;

/// Row-major `r × c` matrix.
#[derive(Debug, Clone, PartialEq)]
struct M {
    r: usize,
    c: usize,
    v: Vec<f64>,
}

impl M {
    fn new(r: usize, c: usize, v: Vec<f64>) -> M {
        assert_eq!(v.len(), r * c);
        M { r, c, v }
    }
    fn at(&self, i: usize, j: usize) -> f64 {
        self.v[i * self.c + j]
    }
    fn mul(&self, o: &M) -> M {
        assert_eq!(self.c, o.r);
        let mut v = vec![0.0; self.r * o.c];
        for i in 0..self.r {
            for j in 0..o.c {
                v[i * o.c + j] = (0..self.c).map(|k| self.at(i, k) * o.at(k, j)).sum();
            }
        }
        M::new(self.r, o.c, v)
    }
    fn t(&self) -> M {
        M::new(
            self.c,
            self.r,
            (0..self.c * self.r)
                .map(|k| self.at(k % self.r, k / self.r))
                .collect(),
        )
    }
    fn scale(&self, s: f64) -> M {
        M::new(self.r, self.c, self.v.iter().map(|x| x * s).collect())
    }
    fn add_diag(&self, s: f64) -> M {
        let mut m = self.clone();
        for i in 0..m.r {
            m.v[i * m.c + i] += s;
        }
        m
    }
    /// Inverse by Gauss–Jordan elimination with partial pivoting.
    fn inv(&self) -> M {
        let n = self.r;
        let mut a = self.clone();
        let mut b = M::new(n, n, vec![0.0; n * n]).add_diag(1.0);
        for col in 0..n {
            let p = (col..n)
                .max_by(|&x, &y| a.at(x, col).abs().total_cmp(&a.at(y, col).abs()))
                .unwrap();
            for k in 0..n {
                a.v.swap(col * n + k, p * n + k);
                b.v.swap(col * n + k, p * n + k);
            }
            let d = a.at(col, col);
            for k in 0..n {
                a.v[col * n + k] /= d;
                b.v[col * n + k] /= d;
            }
            for row in (0..n).filter(|&r| r != col) {
                let f = a.at(row, col);
                for k in 0..n {
                    a.v[row * n + k] -= f * a.at(col, k);
                    b.v[row * n + k] -= f * b.at(col, k);
                }
            }
        }
        b
    }
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{k}]: got {g}, want {w}"
        );
    }
}

/// What the f64 reference computes for one batch: per layer `(E[a aᵀ], E[ĝ ĝᵀ], ∇W, ∇b)`.
struct Reference {
    a: [M; 2],
    g: [M; 2],
    grad_w: [M; 2],
    grad_b: [Vec<f64>; 2],
}

/// Forward and backward of `x → W1 x + b1 → ReLU → W2 · + b2`, loss = dfdx's
/// `cross_entropy_with_logits_loss` (mean over the rows of `−Σ y log softmax`), by hand.
fn reference(model: &Model, x: &M, y: &M) -> Reference {
    let w1 = M::new(H, I, model.0.weight.as_vec());
    let b1 = model.0.bias.as_vec();
    let w2 = M::new(O, H, model.2.weight.as_vec());
    let b2 = model.2.bias.as_vec();
    let n = x.r as f64;
    let mut z1 = x.mul(&w1.t());
    for r in 0..x.r {
        for c in 0..H {
            z1.v[r * H + c] += b1[c];
        }
    }
    let a2 = M::new(x.r, H, z1.v.iter().map(|v| v.max(0.0)).collect());
    let mut z2 = a2.mul(&w2.t());
    for r in 0..x.r {
        for c in 0..O {
            z2.v[r * O + c] += b2[c];
        }
    }
    // per-example output gradient of layer 2: softmax(z) − y (= N ∂L/∂z for the mean loss)
    let mut g2 = M::new(x.r, O, vec![0.0; x.r * O]);
    for r in 0..x.r {
        let m = (0..O).map(|c| z2.at(r, c)).fold(f64::MIN, f64::max);
        let s: f64 = (0..O).map(|c| (z2.at(r, c) - m).exp()).sum();
        for c in 0..O {
            g2.v[r * O + c] = (z2.at(r, c) - m).exp() / s - y.at(r, c);
        }
    }
    // back through W2 and the ReLU
    let mut g1 = g2.mul(&w2);
    for k in 0..g1.v.len() {
        if z1.v[k] <= 0.0 {
            g1.v[k] = 0.0;
        }
    }
    let col_mean = |g: &M| -> Vec<f64> {
        (0..g.c)
            .map(|c| (0..g.r).map(|r| g.at(r, c)).sum::<f64>() / n)
            .collect()
    };
    Reference {
        a: [x.t().mul(x).scale(1.0 / n), a2.t().mul(&a2).scale(1.0 / n)],
        g: [
            g1.t().mul(&g1).scale(1.0 / n),
            g2.t().mul(&g2).scale(1.0 / n),
        ],
        grad_w: [g1.t().mul(x).scale(1.0 / n), g2.t().mul(&a2).scale(1.0 / n)],
        grad_b: [col_mean(&g1), col_mean(&g2)],
    }
}

/// A batch of `N` inputs (deterministic, mixed signs) and one-hot targets.
fn batch(shift: f64) -> (M, M) {
    let x: Vec<f64> = (0..N * I)
        .map(|k| ((k as f64 * 0.73 + shift).sin() * 1.5) + 0.2 * (k % 3) as f64)
        .collect();
    let mut y = vec![0.0; N * O];
    for r in 0..N {
        y[r * O + (r + usize::from(shift > 0.5)) % O] = 1.0;
    }
    (M::new(N, I, x), M::new(N, O, y))
}

/// Forward and backward of one batch through `model`, recording into `grads`.
fn backward(
    dev: &Cpu,
    model: &Model,
    grads: Gradients<f64, Cpu>,
    x: &M,
    y: &M,
) -> Gradients<f64, Cpu> {
    let xt = dev.tensor_from_vec(x.v.clone(), (x.r, Const::<I>));
    let yt = dev.tensor_from_vec(y.v.clone(), (y.r, Const::<O>));
    let out = model.forward(xt.traced(grads));
    cross_entropy_with_logits_loss(out, yt).backward()
}

fn setup(config: KfacStatsConfig) -> (Cpu, Model, Gradients<f64, Cpu>, KfacStats) {
    let dev = Cpu::seed_from_u64(7);
    let model = dev.build_module::<Arch, f64>();
    let kfac = KfacStats::new(config).unwrap();
    let mut grads = model.alloc_grads();
    assert_eq!(kfac.watch(&model, &mut grads).unwrap(), 2);
    (dev, model, grads, kfac)
}

fn factors_of(opt: &KFac<f64>, name: &str) -> (Vec<f64>, Vec<f64>) {
    let f = opt.opt_state().params[name]
        .factors
        .as_ref()
        .unwrap_or_else(|| panic!("{name} has no factors"));
    (f.left.clone().unwrap(), f.right.clone().unwrap())
}

#[test]
fn captured_factors_equal_hand_computed_second_moments() {
    let (dev, mut model, grads, mut kfac) = setup(KfacStatsConfig {
        decay: 0.9,
        ..Default::default()
    });
    let (x, y) = batch(0.0);
    let want = reference(&model, &x, &y);
    let mut grads = backward(&dev, &model, grads, &x, &y);
    let mut opt = KFac::<f64>::new(KFacConfig::default()).unwrap();
    let report = kfac.update(&mut model, &mut grads, &mut opt).unwrap();
    assert_eq!(
        (report.layers, report.recorded, report.refreshed),
        (2, 2, true)
    );
    for (k, layer) in ["0", "2"].iter().enumerate() {
        // the first update is bias-corrected: the factors are the batch's own moments
        let (left, right) = factors_of(&opt, &format!("{layer}.weight"));
        assert_close(&right, &want.a[k].v, 1e-12, &format!("A of layer {layer}"));
        assert_close(&left, &want.g[k].v, 1e-12, &format!("G of layer {layer}"));
        // biases get no factors (they take the rule's fallback)
        assert!(opt
            .opt_state()
            .params
            .get(&format!("{layer}.bias"))
            .is_none_or(|p| p.factors.is_none()));
    }
    // the model's buffers hold the running averages, not bias-corrected: (1 − ρ) · batch
    assert_close(
        &model.0.kfac_a.as_vec(),
        &want.a[0].scale(0.1).v,
        1e-12,
        "kfac_a",
    );
    assert_close(
        &model.2.kfac_g.as_vec(),
        &want.g[1].scale(0.1).v,
        1e-12,
        "kfac_g",
    );
    assert_close(&model.0.kfac_n.as_vec(), &[0.1], 1e-15, "kfac_n");
    // and the slots were consumed: a second update without a backward is refused
    let err = kfac.update(&mut model, &mut grads, &mut opt).unwrap_err();
    assert!(matches!(err, OptimError::InvalidUse(_)), "{err:?}");
}

#[test]
fn running_factors_are_bias_corrected_emas_over_batches() {
    let rho = 0.8;
    let (dev, mut model, grads, mut kfac) = setup(KfacStatsConfig {
        decay: rho,
        update_every: 1,
        ..Default::default()
    });
    let mut opt = KFac::<f64>::new(KFacConfig::default()).unwrap();
    let (x1, y1) = batch(0.0);
    let (x2, y2) = batch(1.0);
    // same weights for both batches (no optimizer step in between)
    let r1 = reference(&model, &x1, &y1);
    let r2 = reference(&model, &x2, &y2);
    let mut grads = backward(&dev, &model, grads, &x1, &y1);
    kfac.update(&mut model, &mut grads, &mut opt).unwrap();
    model.zero_grads(&mut grads);
    let mut grads = backward(&dev, &model, grads, &x2, &y2);
    kfac.update(&mut model, &mut grads, &mut opt).unwrap();
    // (ρ(1 − ρ) X₁ + (1 − ρ) X₂) / (1 − ρ²)
    let c = 1.0 - rho * rho;
    let ema = |a: &M, b: &M| {
        M::new(
            a.r,
            a.c,
            a.v.iter()
                .zip(&b.v)
                .map(|(p, q)| (rho * (1.0 - rho) * p + (1.0 - rho) * q) / c)
                .collect(),
        )
    };
    let (left, right) = factors_of(&opt, "2.weight");
    assert_close(&right, &ema(&r1.a[1], &r2.a[1]).v, 1e-12, "A EMA");
    assert_close(&left, &ema(&r1.g[1], &r2.g[1]).v, 1e-12, "G EMA");
}

#[test]
fn one_kfac_step_is_damped_kronecker_inverse_times_gradient() {
    let (lr, lambda) = (0.3, 0.05);
    let (dev, mut model, grads, mut kfac) = setup(KfacStatsConfig::default());
    let (x, y) = batch(0.0);
    let want = reference(&model, &x, &y);
    let w_before = [model.0.weight.as_vec(), model.2.weight.as_vec()];
    let b_before = [model.0.bias.as_vec(), model.2.bias.as_vec()];
    let mut grads = backward(&dev, &model, grads, &x, &y);
    let mut opt = KFac::<f64>::new(KFacConfig {
        lr: lr.into(),
        damping: lambda.into(),
        ..Default::default()
    })
    .unwrap();
    kfac.update(&mut model, &mut grads, &mut opt).unwrap();
    opt.update(&mut model, &mut grads).unwrap();
    let w_after = [model.0.weight.as_vec(), model.2.weight.as_vec()];
    let b_after = [model.0.bias.as_vec(), model.2.bias.as_vec()];
    for k in 0..2 {
        // u = (G + λI)⁻¹ ∇W (A + λI)⁻¹, from the reference's own moments and gradient
        let u = want.g[k]
            .add_diag(lambda)
            .inv()
            .mul(&want.grad_w[k])
            .mul(&want.a[k].add_diag(lambda).inv());
        let expect: Vec<f64> = w_before[k]
            .iter()
            .zip(&u.v)
            .map(|(w, u)| w - lr * u)
            .collect();
        assert_close(&w_after[k], &expect, 1e-10, &format!("weight {k}"));
        // the bias takes KFac's fallback: SGD
        let expect_b: Vec<f64> = b_before[k]
            .iter()
            .zip(&want.grad_b[k])
            .map(|(b, g)| b - lr * g)
            .collect();
        assert_close(&b_after[k], &expect_b, 1e-12, &format!("bias {k}"));
    }
    // the preconditioned step differs from the plain gradient step (the test can fail)
    let plain: Vec<f64> = w_before[1]
        .iter()
        .zip(&want.grad_w[1].v)
        .map(|(w, g)| w - lr * g)
        .collect();
    assert!(w_after[1]
        .iter()
        .zip(&plain)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn pi_damping_splits_the_damping_by_the_trace_ratio() {
    let gamma = 0.01;
    let (dev, mut model, grads, mut kfac) = setup(KfacStatsConfig {
        damping: FactorDamping::Pi { damping: gamma },
        ..Default::default()
    });
    let (x, y) = batch(0.0);
    let want = reference(&model, &x, &y);
    let mut grads = backward(&dev, &model, grads, &x, &y);
    let mut opt = KFac::<f64>::new(KFacConfig::default()).unwrap();
    kfac.update(&mut model, &mut grads, &mut opt).unwrap();
    let (a, g) = (&want.a[0], &want.g[0]);
    let tr = |m: &M| (0..m.r).map(|i| m.at(i, i)).sum::<f64>() / m.r as f64;
    let pi = (tr(a) / tr(g)).sqrt();
    assert!((pi - 1.0).abs() > 0.1, "π = {pi} would not test the split");
    let (left, right) = factors_of(&opt, "0.weight");
    assert_close(&left, &g.add_diag(gamma.sqrt() / pi).v, 1e-12, "G + √γ/π I");
    assert_close(&right, &a.add_diag(pi * gamma.sqrt()).v, 1e-12, "A + π√γ I");
}

#[test]
fn factors_are_handed_over_every_update_every_updates() {
    let (dev, mut model, mut grads, mut kfac) = setup(KfacStatsConfig {
        decay: 0.5,
        update_every: 3,
        ..Default::default()
    });
    let mut opt = KFac::<f64>::new(KFacConfig::default()).unwrap();
    let mut handed = Vec::new();
    let mut refreshed = Vec::new();
    for step in 0..7 {
        let (x, y) = batch(step as f64 * 0.37);
        grads = backward(&dev, &model, grads, &x, &y);
        let report = kfac.update(&mut model, &mut grads, &mut opt).unwrap();
        refreshed.push(report.refreshed);
        handed.push(factors_of(&opt, "0.weight").1);
        model.zero_grads(&mut grads);
    }
    assert_eq!(refreshed, [true, false, false, true, false, false, true]);
    assert_eq!(handed[0], handed[1]);
    assert_eq!(handed[1], handed[2]);
    assert_ne!(handed[2], handed[3]);
    assert_eq!(kfac.updates(), 7);
}

#[test]
fn bad_settings_and_misuse_are_errors() {
    for config in [
        KfacStatsConfig {
            decay: 1.0,
            ..Default::default()
        },
        KfacStatsConfig {
            update_every: 0,
            ..Default::default()
        },
        KfacStatsConfig {
            damping: FactorDamping::Pi { damping: -1.0 },
            ..Default::default()
        },
        KfacStatsConfig {
            g_scale: f64::NAN,
            ..Default::default()
        },
    ] {
        let err = KfacStats::new(config).unwrap_err();
        assert!(
            matches!(err, OptimError::InvalidHyperparameter { .. }),
            "{err:?}"
        );
    }
    // a model without KfacLinear layers
    let dev = Cpu::default();
    let plain = dev.build_module::<(Linear<2, 2>, ReLU), f64>();
    let mut grads = plain.alloc_grads();
    let kfac = KfacStats::new(KfacStatsConfig::default()).unwrap();
    assert!(matches!(
        kfac.watch(&plain, &mut grads),
        Err(OptimError::InvalidUse(_))
    ));
    // statistics not registered with `watch`: backward drops them, update says so
    let model = dev.build_module::<Arch, f64>();
    let mut model2 = model.clone();
    let grads = model.alloc_grads();
    let (x, y) = batch(0.0);
    let mut grads = backward(&dev, &model, grads, &x, &y);
    let mut kfac = KfacStats::new(KfacStatsConfig::default()).unwrap();
    let mut opt = KFac::<f64>::new(KFacConfig::default()).unwrap();
    let err = kfac.update(&mut model2, &mut grads, &mut opt).unwrap_err();
    assert!(matches!(err, OptimError::InvalidUse(_)), "{err:?}");
    assert_eq!(kfac.updates(), 0);
    assert_eq!(model2.0.kfac_n.as_vec(), [0.0]);
}

#[test]
fn kfac_linear_matches_linear_and_records_nothing_without_a_tape() {
    let dev = Cpu::seed_from_u64(3);
    let plain = dev.build_module::<(Linear<I, H>, ReLU, Linear<H, O>), f64>();
    let dev = Cpu::seed_from_u64(3);
    let model = dev.build_module::<Arch, f64>();
    // same seed, same weights (KfacLinear repeats Linear's initialisation)
    assert_eq!(plain.0.weight.as_vec(), model.0.weight.as_vec());
    assert_eq!(plain.2.bias.as_vec(), model.2.bias.as_vec());
    let (x, _) = batch(0.0);
    let xt = dev.tensor_from_vec(x.v.clone(), (N, Const::<I>));
    assert_eq!(
        plain.forward(xt.clone()).as_vec(),
        model.forward(xt).as_vec()
    );
}

//! Tests of the model, its loss, the buffer and training (tiny networks, a toy task, f64
//! wherever a derivative is checked).

// The derivative checks index Jacobians by (output, input), as the formulas do.
#![allow(clippy::needless_range_loop)]

use crate::loss::PreparedJac;
use crate::testing::{random_inputs, ObservedToy, Toy};
use crate::*;
use diff_core::gradcheck::{fd_gradient, rel_err};
use diff_core::{seeded, SeededRng};
use ndarray::{Array2, ArrayView2};
use rand::Rng;

const FORMS: [SobolevForm; 5] = [
    SobolevForm::None,
    SobolevForm::Full,
    SobolevForm::VjpProj,
    SobolevForm::JvpProj,
    SobolevForm::Bilinear,
];

fn tiny_cfg(form: SobolevForm) -> ModelConfig {
    ModelConfig {
        hidden: vec![7, 6],
        sobolev: SobolevConfig {
            form,
            directions: 3,
            beta_s: 0.7,
            beta_a: 1.6,
            ..SobolevConfig::default()
        },
        ..ModelConfig::default()
    }
}

/// `cfg` with the Sobolev form `form`.
fn with_form(cfg: ModelConfig, form: SobolevForm) -> ModelConfig {
    ModelConfig {
        sobolev: SobolevConfig {
            form,
            ..cfg.sobolev.clone()
        },
        ..cfg
    }
}

fn to64(a: &Array2<f32>) -> Array2<f64> {
    a.mapv(|v| v as f64)
}

/// A model with non-trivial normalisation statistics (from toy transitions) and parameters
/// perturbed away from the initialisation (so LayerNorm gains and biases matter).
fn model64(cfg: &ModelConfig, rng: &mut SeededRng) -> SobolevModel<f64> {
    let mut m = SobolevModel::<f64>::new(3, 2, cfg).unwrap();
    let (s, a) = random_inputs(rng, 64);
    let b = collect(
        &Toy::new(),
        s.view(),
        a.view(),
        &TargetSpec::unit(SobolevForm::None, 1),
        rng,
    )
    .unwrap();
    let target = if m.is_residual() {
        &b.s_next - &b.s
    } else {
        b.s_next.clone()
    };
    m.normalizer.update(b.s.view(), b.a.view(), target.view());
    for p in m.params_mut() {
        *p += rng.gen_range(-0.2..0.2);
    }
    m
}

fn variants() -> Vec<ModelConfig> {
    let base = tiny_cfg(SobolevForm::Full);
    vec![
        base.clone(),
        ModelConfig {
            activation: Activation::Tanh,
            layer_norm: false,
            target: PredictionTarget::NextState,
            ..base.clone()
        },
        ModelConfig {
            normalise: false,
            ..base.clone()
        },
        ModelConfig {
            hidden: vec![],
            ..base
        },
    ]
}

/// FD step for model derivatives. ELU is C¹ but not C² (its second derivative jumps at 0),
/// so a stencil that straddles a kink has an O(h) error; a small step keeps that below the
/// tolerances while the f64 rounding error (≈ 2e-16/h relative) stays ≈ 1e-11.
const FD_STEP: f64 = 1e-5;

/// Derivative of `t ↦ f(t)` at 0 by the fourth-order central difference.
fn fd_dir(f: &mut dyn FnMut(f64) -> Array2<f64>, h: f64) -> Array2<f64> {
    (&f(-2.0 * h) - &(8.0 * &f(-h)) + &(8.0 * &f(h)) - &f(2.0 * h)) / (12.0 * h)
}

fn flat(a: &Array2<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// The model's JVP and full Jacobian (tangent propagation) against finite differences of
/// `predict`, in f64, for several architectures.
#[test]
fn jvp_and_jacobian_match_finite_differences() {
    let mut rng = seeded(1, 0);
    for cfg in variants() {
        let m = model64(&cfg, &mut rng);
        let (s, a) = random_inputs(&mut rng, 5);
        let (s, a) = (to64(&s), to64(&a));
        let ds = Array2::from_shape_fn((5, 3), |_| rng.gen_range(-1.0..1.0));
        let da = Array2::from_shape_fn((5, 2), |_| rng.gen_range(-1.0..1.0));
        let jvp = m.jvp(s.view(), a.view(), ds.view(), da.view()).unwrap();
        let fd = fd_dir(
            &mut |t| {
                m.predict((&s + &(t * &ds)).view(), (&a + &(t * &da)).view())
                    .unwrap()
            },
            FD_STEP,
        );
        let e = rel_err(&flat(&jvp), &flat(&fd), 1e-12);
        assert!(e < 1e-8, "{cfg:?}: jvp vs fd {e:.2e}");

        let jac = m.jacobian(s.view(), a.view()).unwrap();
        for i in 0..5 {
            let mut es = Array2::<f64>::zeros((5, 3));
            let mut ea = Array2::<f64>::zeros((5, 2));
            if i < 3 {
                es.column_mut(i).fill(1.0);
            } else {
                ea.column_mut(i - 3).fill(1.0);
            }
            let col = fd_dir(
                &mut |t| {
                    m.predict((&s + &(t * &es)).view(), (&a + &(t * &ea)).view())
                        .unwrap()
                },
                FD_STEP,
            );
            let ours: Vec<f64> = (0..5)
                .flat_map(|r| (0..3).map(move |o| (r, o)))
                .map(|(r, o)| jac[[r, o, i]])
                .collect();
            let e = rel_err(&ours, &flat(&col), 1e-12);
            assert!(e < 1e-8, "{cfg:?}: jacobian column {i}: {e:.2e}");
        }
    }
}

fn dot(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// ⟨w, J v⟩ by the JVP (tangent propagation) equals ⟨Jᵀw, v⟩ by the VJP (dfdx reverse
/// mode), to rounding in f64; in f32 the model agrees with its f64 twin to f32 rounding.
#[test]
fn vjp_is_the_transpose_of_jvp() {
    let mut rng = seeded(2, 0);
    for cfg in variants() {
        let m = model64(&cfg, &mut rng);
        let (s, a) = random_inputs(&mut rng, 6);
        let (s, a) = (to64(&s), to64(&a));
        let ds = Array2::from_shape_fn((6, 3), |_| rng.gen_range(-1.0..1.0));
        let da = Array2::from_shape_fn((6, 2), |_| rng.gen_range(-1.0..1.0));
        let w = Array2::from_shape_fn((6, 3), |_| rng.gen_range(-1.0..1.0));
        let jv = m.jvp(s.view(), a.view(), ds.view(), da.view()).unwrap();
        let (gs, ga) = m.vjp(s.view(), a.view(), w.view()).unwrap();
        let lhs = dot(&w, &jv);
        let rhs = dot(&gs, &ds) + dot(&ga, &da);
        assert!(
            (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
            "{cfg:?}: {lhs} vs {rhs}"
        );

        // The same network in f32: outputs, JVP and VJP agree with f64 to f32 rounding.
        // Every output is a short chain of f32 ops (≤ 3 layers of width ≤ 7, LayerNorm, ELU)
        // on O(1) values, each rounding with relative error ≤ 6e-8; a few hundred such
        // roundings bound the relative error well below 1e-5.
        let mut m32 = SobolevModel::<f32>::new(3, 2, &cfg).unwrap();
        m32.normalizer = m.normalizer.clone();
        for (p, q) in m32.params_mut().iter_mut().zip(m.params()) {
            *p = *q as f32;
        }
        let f = |x: &Array2<f64>| x.mapv(|v| v as f32);
        let (s32, a32) = (f(&s), f(&a));
        let back = |x: Array2<f32>| x.mapv(|v| v as f64);
        let pairs = [
            (
                back(m32.predict(s32.view(), a32.view()).unwrap()),
                m.predict(s.view(), a.view()).unwrap(),
            ),
            (
                back(
                    m32.jvp(s32.view(), a32.view(), f(&ds).view(), f(&da).view())
                        .unwrap(),
                ),
                jv.clone(),
            ),
            (
                back(m32.vjp(s32.view(), a32.view(), f(&w).view()).unwrap().0),
                gs,
            ),
            (
                back(m32.vjp(s32.view(), a32.view(), f(&w).view()).unwrap().1),
                ga,
            ),
        ];
        for (k, (x32, x64)) in pairs.iter().enumerate() {
            let e = rel_err(&flat(x32), &flat(x64), 1e-6);
            assert!(e < 1e-5, "{cfg:?}: f32 vs f64, output {k}: {e:.2e}");
        }
    }
}

/// Transitions of the toy task for `form`, with the model's direction scales.
fn toy_batch(
    m: &SobolevModel<f64>,
    cfg: &ModelConfig,
    n: usize,
    rng: &mut SeededRng,
) -> Transitions {
    let (s, a) = random_inputs(rng, n);
    collect(
        &Toy::new(),
        s.view(),
        a.view(),
        &m.target_spec(&cfg.sobolev),
        rng,
    )
    .unwrap()
}

/// J_M computed independently of the tangent propagation: the model Jacobian by finite
/// differences of `predict`, the residual and normalisation written out directly (the
/// `[R·I, 0]` parts of model and target cancel in the difference).
fn direct_loss(m: &SobolevModel<f64>, b: &Transitions, beta: (f64, f64)) -> (f64, f64) {
    let l = b.layout;
    let (ds, din, k, n) = (3, 5, l.directions, b.len());
    let (si, so) = (m.normalizer.input().std, m.normalizer.output().std);
    let (s, a) = (to64(&b.s), to64(&b.a));
    let pred = m.predict(s.view(), a.view()).unwrap();
    let mut value = 0.0;
    let mut jac = 0.0;
    for r in 0..n {
        for o in 0..ds {
            value += ((pred[[r, o]] - b.s_next[[r, o]] as f64) / so[o]).powi(2);
        }
        // Model Jacobian of this row by FD, physical.
        let mut jm = [[0.0; 5]; 3];
        for i in 0..din {
            let col = fd_dir(
                &mut |t| {
                    let (mut sp, mut ap) = (s.row(r).to_owned(), a.row(r).to_owned());
                    if i < ds {
                        sp[i] += t;
                    } else {
                        ap[i - ds] += t;
                    }
                    m.predict(
                        sp.insert_axis(ndarray::Axis(0)).view(),
                        ap.insert_axis(ndarray::Axis(0)).view(),
                    )
                    .unwrap()
                },
                FD_STEP,
            );
            for o in 0..ds {
                jm[o][i] = col[[0, o]];
            }
        }
        let tg = |c: usize| b.targets[[r, c]] as f64;
        let w = |i: usize| if i < ds { beta.0 } else { beta.1 };
        let block = l.block();
        jac += match l.form {
            SobolevForm::None => 0.0,
            SobolevForm::Full => (0..ds)
                .flat_map(|o| (0..din).map(move |i| (o, i)))
                .map(|(o, i)| w(i) * ((jm[o][i] - tg(o * din + i)) * si[i] / so[o]).powi(2))
                .sum(),
            SobolevForm::VjpProj => {
                (0..k)
                    .map(|j| {
                        let bb = j * block;
                        (0..din)
                            .map(|i| {
                                let uj: f64 = (0..ds).map(|o| tg(bb + o) * jm[o][i]).sum();
                                w(i) * ((uj - tg(bb + ds + i)) * si[i]).powi(2)
                            })
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    / k as f64
            }
            SobolevForm::JvpProj => {
                (0..k)
                    .map(|j| {
                        let bb = j * block;
                        (0..ds)
                            .map(|o| {
                                let jv: f64 = (0..din).map(|i| jm[o][i] * tg(bb + i)).sum();
                                ((jv - tg(bb + din + o)) / so[o]).powi(2)
                            })
                            .sum::<f64>()
                    })
                    .sum::<f64>()
                    / k as f64
            }
            SobolevForm::Bilinear => {
                (0..k)
                    .map(|j| {
                        let bb = j * block;
                        let ujv: f64 = (0..ds)
                            .flat_map(|o| (0..din).map(move |i| (o, i)))
                            .map(|(o, i)| tg(bb + o) * jm[o][i] * tg(bb + ds + i))
                            .sum();
                        (ujv - tg(bb + ds + din)).powi(2)
                    })
                    .sum::<f64>()
                    / k as f64
            }
        };
    }
    (value / n as f64, jac / n as f64)
}

/// For every form: the loss (value and tangent-propagated Jacobian term) equals the direct
/// formula with finite-difference model Jacobians, and its parameter gradient (one reverse
/// pass through value and tangent graphs) matches finite differences of the loss.
#[test]
fn sobolev_loss_and_gradient_match_finite_differences() {
    let mut rng = seeded(3, 0);
    for form in FORMS {
        check_loss_and_gradient(&tiny_cfg(form), &mut rng);
    }
}

/// The reverse-mode cotangent of `vjp_proj` on every network variant (tanh without
/// LayerNorm, no normalisation, no hidden layer): the loss equals the direct computation
/// from the model's full Jacobian and its parameter gradient matches finite differences.
#[test]
fn vjp_proj_cotangent_on_every_network_variant() {
    let mut rng = seeded(31, 0);
    for base in variants() {
        let cfg = with_form(base, SobolevForm::VjpProj);
        check_loss_and_gradient(&cfg, &mut rng);
    }
}

fn check_loss_and_gradient(cfg: &ModelConfig, rng: &mut SeededRng) {
    let form = cfg.sobolev.form;
    {
        let beta = (cfg.sobolev.beta_s, cfg.sobolev.beta_a);
        let m = model64(cfg, rng);
        let b = toy_batch(&m, cfg, 5, rng);
        let p = m.prepare(&b, beta).unwrap();
        let parts = m.sobolev_loss(&p).unwrap();
        let (value, jac) = direct_loss(&m, &b, beta);
        assert!(
            (parts.value - value).abs() < 1e-10 * value.max(1.0),
            "{form:?} value"
        );
        assert!(
            (parts.jacobian - jac).abs() < 1e-8 * jac.max(1e-3),
            "{form:?} jacobian term {} vs direct {jac}",
            parts.jacobian
        );
        if form != SobolevForm::None {
            assert!(
                jac > 1e-3,
                "{form:?}: a trivial Jacobian term proves little"
            );
        }

        let mut grad = vec![0.0; m.num_params()];
        let again = m.sobolev_loss_grad(&p, &mut grad).unwrap();
        assert_eq!(again, parts);
        let p0 = m.params().to_vec();
        let mut probe = m.clone();
        let fd = fd_gradient(
            &mut |q| {
                probe.params_mut().copy_from_slice(q);
                probe.sobolev_loss(&p).unwrap().total
            },
            &p0,
            1e-4,
        );
        let e = rel_err(&grad, &fd, 1e-10);
        assert!(e < 1e-7, "{form:?}: parameter gradient vs fd {e:.2e}");
    }
}

/// The hand-written passes (`model.network_backend = "fused"`) give the dfdx path's loss
/// and parameter gradient, and the gradient matches finite differences of the loss, on every
/// network variant, for `none` and `vjp_proj` (three directions), with and without the
/// Huber penalty; the other forms are an error.
#[test]
fn fused_loss_gradient_matches_dfdx_and_finite_differences() {
    let mut rng = seeded(57, 0);
    for base in variants() {
        for form in [SobolevForm::None, SobolevForm::VjpProj] {
            for filter in [TargetFilter::DropNonFinite, TargetFilter::Huber(0.05)] {
                let cfg = with_form(base.clone(), form);
                let beta = (cfg.sobolev.beta_s, cfg.sobolev.beta_a);
                let m = model64(&cfg, &mut rng);
                let b = toy_batch(&m, &cfg, 6, &mut rng);
                let p = m.prepare_filtered(&b, beta, filter).unwrap();
                let mut g_dfdx = vec![0.0; m.num_params()];
                let dfdx = m.sobolev_loss_grad(&p, &mut g_dfdx).unwrap();
                let mut g_fused = vec![0.0; m.num_params()];
                let fused = m.sobolev_loss_grad_fused(&p, &mut g_fused).unwrap();
                let case = format!("{form:?} {filter:?} {:?}", cfg.hidden);
                for (a, b) in [
                    (fused.value, dfdx.value),
                    (fused.jacobian, dfdx.jacobian),
                    (fused.total, dfdx.total),
                ] {
                    assert!(
                        (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                        "{case}: {a} vs {b}"
                    );
                }
                if form == SobolevForm::VjpProj {
                    assert!(dfdx.jacobian > 1e-3, "{case}: a trivial Jacobian term");
                }
                let e = rel_err(&g_fused, &g_dfdx, 1e-12);
                assert!(e < 1e-10, "{case}: fused vs dfdx gradient {e:.2e}");
                let mut probe = m.clone();
                let fd = fd_gradient(
                    &mut |q| {
                        probe.params_mut().copy_from_slice(q);
                        probe.sobolev_loss(&p).unwrap().total
                    },
                    m.params(),
                    1e-4,
                );
                let e = rel_err(&g_fused, &fd, 1e-10);
                assert!(e < 1e-7, "{case}: fused gradient vs fd {e:.2e}");
            }
        }
    }
    // f32, the training type: the two paths agree to rounding
    let cfg = tiny_cfg(SobolevForm::VjpProj);
    let m64 = model64(&cfg, &mut rng);
    let b = toy_batch(&m64, &cfg, 32, &mut rng);
    let mut m = SobolevModel::<f32>::new(3, 2, &cfg).unwrap();
    m.normalizer = m64.normalizer.clone();
    for (d, s) in m.params_mut().iter_mut().zip(m64.params()) {
        *d = *s as f32;
    }
    let p = m.prepare(&b, (0.7, 1.6)).unwrap();
    let (mut g1, mut g2) = (vec![0.0f32; m.num_params()], vec![0.0f32; m.num_params()]);
    m.sobolev_loss_grad(&p, &mut g1).unwrap();
    m.sobolev_loss_grad_fused(&p, &mut g2).unwrap();
    let e = rel_err(
        &g2.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        &g1.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        1e-6,
    );
    assert!(e < 1e-4, "f32 fused vs dfdx {e:.2e}");
    // the forms it does not implement
    let cfg = tiny_cfg(SobolevForm::Full);
    let m = model64(&cfg, &mut rng);
    let b = toy_batch(&m, &cfg, 4, &mut rng);
    let p = m.prepare(&b, (1.0, 1.0)).unwrap();
    let err = m
        .sobolev_loss_grad_fused(&p, &mut vec![0.0; m.num_params()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.network_backend"), "{err}");
    let mut c = tiny_cfg(SobolevForm::Bilinear);
    c.network_backend = NetworkBackend::Fused;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("network_backend"), "{err}");
}

/// With `network_backend = "fused"`, `predict`, `vjp` (what a model rollout calls) and
/// `jacobian` (the diagnostics) run the hand-written passes and give the dfdx path's values
/// on every network variant.
#[test]
fn fused_predict_and_vjp_match_dfdx() {
    let mut rng = seeded(61, 0);
    for cfg in variants() {
        let m = model64(&cfg, &mut rng);
        let mut f = m.clone();
        f.backend = NetworkBackend::Fused;
        let (s, a) = random_inputs(&mut rng, 9);
        let (s, a) = (to64(&s), to64(&a));
        let adj = Array2::from_shape_fn((9, 3), |_| rng.gen_range(-1.0..1.0));
        let close = |x: &Array2<f64>, y: &Array2<f64>, what: &str| {
            let e = rel_err(&flat(x), &flat(y), 1e-12);
            assert!(e < 1e-12, "{what} {:?}: {e:.2e}", cfg.hidden);
        };
        close(
            &f.predict(s.view(), a.view()).unwrap(),
            &m.predict(s.view(), a.view()).unwrap(),
            "predict",
        );
        let (fs, fa) = f.vjp(s.view(), a.view(), adj.view()).unwrap();
        let (ds, da) = m.vjp(s.view(), a.view(), adj.view()).unwrap();
        close(&fs, &ds, "vjp state");
        close(&fa, &da, "vjp action");
        let jf = f.jacobian(s.view(), a.view()).unwrap();
        let jd = m.jacobian(s.view(), a.view()).unwrap();
        let e = rel_err(
            &jf.iter().copied().collect::<Vec<_>>(),
            &jd.iter().copied().collect::<Vec<_>>(),
            1e-12,
        );
        assert!(e < 1e-12, "jacobian {:?}: {e:.2e}", cfg.hidden);
    }
}

/// The split fused gradient (`model.grad_clip_per_term`): the value part is the gradient of
/// the value term alone (the MSE loss on the same transitions), and the two parts add up
/// to the whole gradient. A trainer clipping per term trains; asking for it without the
/// fused backend is an error.
#[test]
fn split_fused_gradient_is_the_two_terms() {
    let mut rng = seeded(63, 0);
    for base in variants() {
        let cfg = with_form(base, SobolevForm::VjpProj);
        let m = model64(&cfg, &mut rng);
        let b = toy_batch(&m, &cfg, 6, &mut rng);
        let beta = (cfg.sobolev.beta_s, cfg.sobolev.beta_a);
        let p = m.prepare(&b, beta).unwrap();
        let np = m.num_params();
        let (mut gv, mut gj, mut whole) = (vec![0.0; np], vec![0.0; np], vec![0.0; np]);
        let parts = m
            .sobolev_loss_grad_fused_split(&p, &mut gv, &mut gj)
            .unwrap();
        assert_eq!(parts, m.sobolev_loss_grad_fused(&p, &mut whole).unwrap());
        let sum: Vec<f64> = gv.iter().zip(&gj).map(|(a, b)| a + b).collect();
        let e = rel_err(&sum, &whole, 1e-12);
        assert!(e < 1e-12, "{:?}: parts do not add up: {e:.2e}", cfg.hidden);
        let mse = Transitions::from_parts(
            TargetLayout::new(SobolevForm::None, 3, 2, 1),
            b.s.clone(),
            b.a.clone(),
            b.s_next.clone(),
            Array2::zeros((b.len(), 0)),
        )
        .unwrap();
        let pm = m.prepare(&mse, beta).unwrap();
        let mut g_mse = vec![0.0; np];
        m.sobolev_loss_grad_fused(&pm, &mut g_mse).unwrap();
        let e = rel_err(&gv, &g_mse, 1e-12);
        assert!(
            e < 1e-12,
            "{:?}: value part vs MSE gradient {e:.2e}",
            cfg.hidden
        );
        assert!(gj.iter().any(|x| x.abs() > 1e-6), "a trivial Jacobian part");
    }
    let cfg = ModelConfig {
        grad_clip_per_term: true,
        batch_size: 16,
        iterations: 8,
        minibatches: 2,
        ..tiny_cfg(SobolevForm::VjpProj)
    };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("grad_clip_per_term"), "{err}");
    for (per_term, c) in [(false, 0.5), (true, 0.0), (true, f64::NAN)] {
        let bad = ModelConfig {
            network_backend: NetworkBackend::Fused,
            grad_clip_per_term: per_term,
            grad_clip_jacobian: Some(c),
            ..cfg.clone()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("grad_clip_jacobian"), "{err}");
    }
    let cfg = ModelConfig {
        network_backend: NetworkBackend::Fused,
        ..cfg
    };
    let mut tr = SobolevTrainer::new(cfg.clone(), 3, 2).unwrap();
    let (s, a) = random_inputs(&mut rng, 64);
    let b = collect(&Toy::new(), s.view(), a.view(), &tr.target_spec(), &mut rng).unwrap();
    tr.add(&b).unwrap();
    let first = tr.train_epoch(&mut seeded(64, 0)).unwrap();
    let mut last = first;
    for _ in 0..5 {
        last = tr.train_epoch(&mut seeded(64, 0)).unwrap();
    }
    assert!(last.loss < first.loss, "{} → {}", first.loss, last.loss);

    // `grad_clip_jacobian`: equal to `grad_clip` it is the default; smaller, the
    // Jacobian term's steps shrink and the weights go elsewhere
    let trained = |clip_jac: Option<f64>| {
        let mut tr = SobolevTrainer::new(
            ModelConfig {
                grad_clip_jacobian: clip_jac,
                ..cfg.clone()
            },
            3,
            2,
        )
        .unwrap();
        tr.add(&b).unwrap();
        tr.train_epoch(&mut seeded(64, 0)).unwrap();
        tr.model().params().to_vec()
    };
    let default = trained(None);
    assert_eq!(default, trained(Some(cfg.grad_clip)));
    assert_ne!(default, trained(Some(0.1 * cfg.grad_clip)));
}

/// A trainer with `network_backend = "fused"` takes the dfdx trainer's steps: same data,
/// seed and minibatches, parameters equal to f32 rounding after an epoch.
#[test]
fn fused_trainer_follows_the_dfdx_trainer() {
    let mut rng = seeded(58, 0);
    let base = ModelConfig {
        batch_size: 16,
        iterations: 2,
        minibatches: 2,
        ..tiny_cfg(SobolevForm::VjpProj)
    };
    let (s, a) = random_inputs(&mut rng, 64);
    let mut params = Vec::new();
    for backend in [NetworkBackend::Dfdx, NetworkBackend::Fused] {
        let cfg = ModelConfig {
            network_backend: backend,
            ..base.clone()
        };
        let mut tr = SobolevTrainer::new(cfg, 3, 2).unwrap();
        let b = collect(
            &Toy::new(),
            s.view(),
            a.view(),
            &tr.target_spec(),
            &mut seeded(59, 0),
        )
        .unwrap();
        tr.add(&b).unwrap();
        let st = tr.train_epoch(&mut seeded(60, 0)).unwrap();
        assert_eq!(st.steps, 4);
        params.push(tr.model().params().to_vec());
    }
    let moved: f32 = params[0]
        .iter()
        .zip(
            &SobolevTrainer::new(base, 3, 2)
                .unwrap()
                .model()
                .params()
                .to_vec(),
        )
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(moved > 1e-4, "the epoch moved nothing");
    let diff = params[0]
        .iter()
        .zip(&params[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-5, "fused trainer drifted from dfdx by {diff}");
}

/// Tape discipline (rust-stack.md): with β = 0 the tangent graph is built but weighs
/// nothing, and the gradient must equal the plain MSE model's exactly: no part of the
/// primal tape is dropped.
#[test]
fn zero_beta_gradient_equals_mse_gradient() {
    let mut rng = seeded(4, 0);
    let cfg = tiny_cfg(SobolevForm::Full);
    let m = model64(&cfg, &mut rng);
    let b = toy_batch(&m, &cfg, 6, &mut rng);
    let none = Transitions::from_parts(
        TargetLayout::new(SobolevForm::None, 3, 2, 1),
        b.s.clone(),
        b.a.clone(),
        b.s_next.clone(),
        Array2::zeros((6, 0)),
    )
    .unwrap();
    let (mut g_full, mut g_mse) = (vec![0.0; m.num_params()], vec![0.0; m.num_params()]);
    let pf = m
        .sobolev_loss_grad(&m.prepare(&b, (0.0, 0.0)).unwrap(), &mut g_full)
        .unwrap();
    let pm = m
        .sobolev_loss_grad(&m.prepare(&none, (1.0, 1.0)).unwrap(), &mut g_mse)
        .unwrap();
    assert_eq!(pf.jacobian, 0.0);
    assert!((pf.value - pm.value).abs() < 1e-15);
    assert!(rel_err(&g_full, &g_mse, 1e-12) < 1e-13);
}

/// Averaged over many random directions, each projected penalty equals the full weighted
/// Frobenius penalty (β_s ≠ β_a, non-trivial normalisation).
#[test]
fn projected_estimators_are_unbiased() {
    let mut rng = seeded(5, 0);
    let cfg = tiny_cfg(SobolevForm::Full);
    let beta = (cfg.sobolev.beta_s, cfg.sobolev.beta_a);
    let m = model64(&cfg, &mut rng);
    let (s, a) = random_inputs(&mut rng, 6);
    let toy = Toy::new();
    let full = collect(
        &toy,
        s.view(),
        a.view(),
        &m.target_spec(&cfg.sobolev),
        &mut rng,
    )
    .unwrap();
    let reference = m
        .sobolev_loss(&m.prepare(&full, beta).unwrap())
        .unwrap()
        .jacobian;
    // Per-draw relative standard deviations are at most √2 (vjp/jvp) and 2√2 (bilinear);
    // with 6 × 4000 draws the tolerances below are more than 3 standard errors.
    for (form, tol) in [
        (SobolevForm::VjpProj, 0.03),
        (SobolevForm::JvpProj, 0.03),
        (SobolevForm::Bilinear, 0.06),
    ] {
        let c = SobolevConfig {
            form,
            directions: 4000,
            ..cfg.sobolev.clone()
        };
        let b = collect(&toy, s.view(), a.view(), &m.target_spec(&c), &mut rng).unwrap();
        let est = m
            .sobolev_loss(&m.prepare(&b, beta).unwrap())
            .unwrap()
            .jacobian;
        let rel = (est - reference).abs() / reference;
        assert!(
            rel < tol,
            "{form:?}: {est} vs full {reference} (rel {rel:.3})"
        );
    }
}

/// The collected targets are the task's derivatives: full Jacobians from VJPs, and the
/// projections consistent with their stored directions.
#[test]
fn collected_targets_are_the_task_derivatives() {
    let mut rng = seeded(6, 0);
    let toy = Toy::new();
    let (s, a) = random_inputs(&mut rng, 4);
    for form in FORMS {
        let b = collect(
            &toy,
            s.view(),
            a.view(),
            &TargetSpec::unit(form, 2),
            &mut rng,
        )
        .unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b.targets.ncols(), b.layout.width());
        let block = b.layout.block();
        for r in 0..4 {
            let sr: Vec<f64> = b.s.row(r).iter().map(|&v| v as f64).collect();
            let ar: Vec<f64> = b.a.row(r).iter().map(|&v| v as f64).collect();
            let j = toy.jac64(&sr, &ar);
            let next = toy.step64(&sr, &ar);
            for o in 0..3 {
                assert!((b.s_next[[r, o]] as f64 - next[o]).abs() < 1e-6);
            }
            let tg = |c: usize| b.targets[[r, c]] as f64;
            let close = |x: f64, y: f64| {
                assert!(
                    (x - y).abs() < 1e-5 * y.abs().max(1.0),
                    "{form:?}: {x} vs {y}"
                )
            };
            for d in 0..b.layout.directions {
                let bb = d * block;
                match form {
                    SobolevForm::None => {}
                    SobolevForm::Full => {
                        for o in 0..3 {
                            for i in 0..5 {
                                close(tg(o * 5 + i), j[o][i]);
                                close(b.jacobian(r).unwrap()[[o, i]] as f64, j[o][i]);
                            }
                        }
                    }
                    SobolevForm::VjpProj => {
                        for i in 0..5 {
                            close(tg(bb + 3 + i), (0..3).map(|o| tg(bb + o) * j[o][i]).sum());
                        }
                    }
                    SobolevForm::JvpProj => {
                        for o in 0..3 {
                            close(tg(bb + 5 + o), (0..5).map(|i| j[o][i] * tg(bb + i)).sum());
                        }
                    }
                    SobolevForm::Bilinear => {
                        let ujv: f64 = (0..3)
                            .flat_map(|o| (0..5).map(move |i| (o, i)))
                            .map(|(o, i)| tg(bb + o) * j[o][i] * tg(bb + 3 + i))
                            .sum();
                        close(tg(bb + 8), ujv);
                    }
                }
            }
        }
    }
}

/// Rows with non-finite derivatives (or states) are dropped and counted, per batch and in
/// the buffer; a form without Jacobian targets keeps rows whose step is finite.
#[test]
fn non_finite_targets_are_dropped_and_counted() {
    let mut rng = seeded(7, 0);
    let mut toy = Toy::new();
    toy.nan_above = Some(0.5);
    let (mut s, a) = random_inputs(&mut rng, 40);
    s[[0, 1]] = f32::NAN; // a NaN state is dropped by every form
    let bad = (0..40).filter(|&r| r == 0 || s[[r, 0]] > 0.5).count();
    assert!(
        bad > 3 && bad < 37,
        "the sample should mix good and bad rows"
    );
    for form in FORMS {
        let b = collect(
            &toy,
            s.view(),
            a.view(),
            &TargetSpec::unit(form, 2),
            &mut rng,
        )
        .unwrap();
        let expect = if form == SobolevForm::None { 1 } else { bad };
        assert_eq!(b.dropped, expect, "{form:?}");
        assert_eq!(b.len(), 40 - expect);
        assert!(b
            .targets
            .iter()
            .chain(b.s_next.iter())
            .all(|v| v.is_finite()));
        if form != SobolevForm::None {
            assert!(b.s.column(0).iter().all(|&x| x <= 0.5));
        }
        let mut buf = TransitionBuffer::new(b.layout, 100).unwrap();
        buf.push(&b).unwrap();
        buf.push(&b).unwrap();
        assert_eq!(buf.dropped(), 2 * expect as u64);
        assert_eq!(buf.len(), 2 * (40 - expect));
    }
}

/// FIFO semantics: the oldest transitions are evicted first, logical order is oldest first,
/// and batches of another layout are refused.
#[test]
fn buffer_is_fifo() {
    let layout = TargetLayout::new(SobolevForm::JvpProj, 1, 1, 1);
    let batch = |from: usize, n: usize| {
        let col = |off: f32| Array2::from_shape_fn((n, 1), |(r, _)| (from + r) as f32 + off);
        let t = Array2::from_shape_fn((n, layout.width()), |(r, c)| {
            (from + r) as f32 * 10.0 + c as f32
        });
        Transitions::from_parts(layout, col(0.0), col(0.5), col(0.25), t).unwrap()
    };
    let mut buf = TransitionBuffer::new(layout, 5).unwrap();
    assert!(buf.is_empty());
    buf.push(&batch(0, 3)).unwrap();
    assert_eq!(buf.len(), 3);
    assert_eq!(buf.get(0).unwrap().s, &[0.0]);
    buf.push(&batch(3, 4)).unwrap(); // 0..7 pushed, 2..7 kept
    assert_eq!((buf.len(), buf.pushed()), (5, 7));
    let kept: Vec<f32> = (0..5).map(|i| buf.get(i).unwrap().s[0]).collect();
    assert_eq!(kept, vec![2.0, 3.0, 4.0, 5.0, 6.0]);
    let t = buf.get(4).unwrap();
    assert_eq!((t.a[0], t.s_next[0]), (6.5, 6.25));
    assert_eq!(t.targets, &[60.0, 61.0, 62.0]); // block: v (2) + J·v (1)
    assert!(buf.get(5).is_none());
    buf.push(&batch(7, 6)).unwrap(); // more than the capacity at once
    let all = buf.to_transitions();
    assert_eq!(all.s.column(0).to_vec(), vec![8.0, 9.0, 10.0, 11.0, 12.0]);
    let g = buf.gather(&[4, 0]).unwrap();
    assert_eq!(g.s.column(0).to_vec(), vec![12.0, 8.0]);
    assert!(buf.gather(&[5]).is_err());
    let other = Transitions::from_parts(
        TargetLayout::new(SobolevForm::Full, 1, 1, 1),
        Array2::zeros((1, 1)),
        Array2::zeros((1, 1)),
        Array2::zeros((1, 1)),
        Array2::zeros((1, 2)),
    )
    .unwrap();
    assert!(matches!(buf.push(&other), Err(Error::Incompatible(_))));
    assert!(TransitionBuffer::new(layout, 0).is_err());
}

/// A trainer's buffer restored from its transitions and counters behaves as the original:
/// same content in the same logical order, same eviction, normalisation untouched.
#[test]
fn restored_buffer_continues_like_the_original() {
    let cfg = ModelConfig {
        hidden: vec![4],
        buffer_capacity: 5,
        sobolev: SobolevConfig {
            form: SobolevForm::None,
            ..SobolevConfig::default()
        },
        ..ModelConfig::default()
    };
    let layout = TargetLayout::new(SobolevForm::None, 1, 1, 1);
    let batch = |from: usize, n: usize| {
        let col = |off: f32| Array2::from_shape_fn((n, 1), |(r, _)| (from + r) as f32 + off);
        Transitions::from_parts(layout, col(0.0), col(0.5), col(0.25), Array2::zeros((n, 0)))
            .unwrap()
    };
    let mut a = SobolevTrainer::new(cfg.clone(), 1, 1).unwrap();
    a.add(&batch(0, 4)).unwrap();
    a.add(&batch(4, 3)).unwrap(); // 2..7 kept, wrapped around
    let mut b = SobolevTrainer::new(cfg, 1, 1).unwrap();
    let norm_before = b.model().normalizer.clone();
    b.restore_buffer(&a.buffer().to_transitions(), a.buffer().pushed(), 3)
        .unwrap();
    assert_eq!(b.model().normalizer, norm_before);
    assert_eq!(b.buffer().to_transitions(), a.buffer().to_transitions());
    assert_eq!((b.buffer().pushed(), b.buffer().dropped()), (7, 3));
    for t in [&mut a, &mut b] {
        t.add(&batch(7, 2)).unwrap();
    }
    assert_eq!(b.buffer().to_transitions(), a.buffer().to_transitions());
    let too_many = batch(0, 6);
    assert!(b.restore_buffer(&too_many, 6, 0).is_err());
    let other = Transitions::from_parts(
        TargetLayout::new(SobolevForm::Full, 1, 1, 1),
        Array2::zeros((1, 1)),
        Array2::zeros((1, 1)),
        Array2::zeros((1, 1)),
        Array2::zeros((1, 2)),
    )
    .unwrap();
    assert!(matches!(
        b.restore_buffer(&other, 1, 0),
        Err(Error::Incompatible(_))
    ));
}

#[test]
fn config_defaults_parsing_and_validation() {
    let d = ModelConfig::default();
    assert_eq!(d.hidden, vec![256, 256, 256]);
    assert_eq!(
        (d.activation, d.layer_norm, d.normalise),
        (Activation::Elu, true, true)
    );
    assert_eq!(d.target, PredictionTarget::Residual);
    assert_eq!((d.lr, d.grad_clip, d.buffer_capacity), (1e-3, 1.0, 131_072));
    assert_eq!((d.iterations, d.minibatches), (16, 4));
    assert_eq!(d.sobolev.form, SobolevForm::VjpProj);
    assert_eq!(
        (d.sobolev.directions, d.sobolev.beta_s, d.sobolev.beta_a),
        (1, 1.0, 1.0)
    );
    assert_eq!(d.sobolev.target_filter, TargetFilter::DropNonFinite);
    d.validate().unwrap();

    let parsed: ModelConfig =
        toml::from_str("hidden = [64, 64]\n[sobolev]\nform = \"full\"\nbeta_a = 0.1\n").unwrap();
    assert_eq!(parsed.hidden, vec![64, 64]);
    assert_eq!(
        (parsed.sobolev.form, parsed.sobolev.beta_a),
        (SobolevForm::Full, 0.1)
    );
    assert_eq!(parsed.lr, 1e-3);
    let err = toml::from_str::<ModelConfig>("[sobolev]\nbeta = 1.0\n").unwrap_err();
    assert!(err.to_string().contains("beta"), "{err}");
    let err = toml::from_str::<ModelConfig>("learning_rate = 1.0\n").unwrap_err();
    assert!(err.to_string().contains("learning_rate"), "{err}");
    assert!(toml::from_str::<ModelConfig>("[sobolev]\nform = \"sparse\"\n").is_err());
    assert!(toml::from_str::<ModelConfig>("activation = \"relu\"\n").is_err());
    assert_eq!(
        (d.sobolev.wrt, d.sobolev.model_derivative),
        (
            crate::Wrt::StateAction,
            crate::ModelDerivative::ForwardTangent
        )
    );
    let parsed: ModelConfig =
        toml::from_str("[sobolev]\ntarget_filter = { clip_norm = 10.0 }\n").unwrap();
    assert_eq!(parsed.sobolev.target_filter, TargetFilter::ClipNorm(10.0));
    let parsed: ModelConfig =
        toml::from_str("[sobolev]\ntarget_filter = { huber = 0.5 }\n").unwrap();
    assert_eq!(parsed.sobolev.target_filter, TargetFilter::Huber(0.5));
    for bad in [TargetFilter::ClipNorm(0.0), TargetFilter::Huber(f64::NAN)] {
        let mut c = ModelConfig::default();
        c.sobolev.target_filter = bad;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("sobolev.target_filter"), "{err}");
    }
    let parsed: ModelConfig = toml::from_str("[sobolev]\nwrt = \"action\"\n").unwrap();
    assert_eq!(parsed.sobolev.betas(), (0.0, 1.0));
    let err = toml::from_str::<ModelConfig>("[sobolev]\nmodel_derivative = \"double_backward\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("forward_tangent"), "{err}");

    type Edit = Box<dyn Fn(&mut ModelConfig)>;
    let bad: Vec<(&str, Edit)> = vec![
        ("hidden[1]", Box::new(|c| c.hidden = vec![8, 0])),
        ("lr", Box::new(|c| c.lr = 0.0)),
        ("lr", Box::new(|c| c.lr = f64::NAN)),
        ("betas[1]", Box::new(|c| c.betas = [0.9, 1.0])),
        ("grad_clip", Box::new(|c| c.grad_clip = -1.0)),
        ("batch_size", Box::new(|c| c.batch_size = 0)),
        ("iterations", Box::new(|c| c.iterations = 0)),
        ("minibatches", Box::new(|c| c.minibatches = 0)),
        ("buffer_capacity", Box::new(|c| c.buffer_capacity = 0)),
        ("sobolev.directions", Box::new(|c| c.sobolev.directions = 0)),
        ("sobolev.beta_s", Box::new(|c| c.sobolev.beta_s = -0.5)),
        (
            "sobolev.beta_a",
            Box::new(|c| c.sobolev.beta_a = f64::INFINITY),
        ),
    ];
    for (field, edit) in bad {
        let mut c = ModelConfig::default();
        edit(&mut c);
        match c.validate() {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert!(SobolevTrainer::new(c, 3, 2).is_err());
    }
    let inf_clip = ModelConfig {
        grad_clip: f64::INFINITY,
        ..ModelConfig::default()
    };
    inf_clip.validate().unwrap();
}

#[test]
fn wrong_shapes_are_errors() {
    let m = SobolevModel::<f32>::new(3, 2, &tiny_cfg(SobolevForm::Full)).unwrap();
    let s = Array2::<f32>::zeros((4, 3));
    let a = Array2::<f32>::zeros((4, 1));
    assert!(matches!(
        m.predict(s.view(), a.view()),
        Err(Error::Dimension { .. })
    ));
    let a = Array2::<f32>::zeros((4, 2));
    assert!(m
        .vjp(s.view(), a.view(), Array2::zeros((3, 3)).view())
        .is_err());
    let mut rng = seeded(0, 0);
    let bad_s: ArrayView2<f32> = s.view();
    assert!(collect(
        &Toy::new(),
        bad_s,
        Array2::zeros((4, 3)).view(),
        &TargetSpec::unit(SobolevForm::Full, 1),
        &mut rng
    )
    .is_err());
}

/// Adam against its formula (PyTorch semantics) and gradient clipping.
#[test]
fn adam_and_clipping() {
    let betas = (0.9, 0.999);
    let mut opt = Adam::new(2, 1e-2, betas);
    let mut p = vec![0.5f32, -1.0];
    let (mut m, mut v, mut q) = ([0.0f64; 2], [0.0f64; 2], [0.5f64, -1.0]);
    for (t, g) in [[0.1f32, -0.3], [-0.2, 2.0], [1e-3, 0.5]]
        .iter()
        .enumerate()
    {
        opt.update(&mut p, g);
        let t1 = (t + 1) as i32;
        for i in 0..2 {
            let gi = g[i] as f64;
            m[i] = betas.0 * m[i] + (1.0 - betas.0) * gi;
            v[i] = betas.1 * v[i] + (1.0 - betas.1) * gi * gi;
            let mhat = m[i] / (1.0 - betas.0.powi(t1));
            let vhat = v[i] / (1.0 - betas.1.powi(t1));
            q[i] -= 1e-2 * mhat / (vhat.sqrt() + 1e-8);
            assert!(
                (p[i] as f64 - q[i]).abs() < 1e-6,
                "step {t}: {} vs {}",
                p[i],
                q[i]
            );
        }
    }
    // Its state restores into a fresh optimiser, which then continues identically.
    let (m0, v0) = opt.moments();
    let mut fresh = Adam::new(2, 1e-2, betas);
    fresh
        .set_state(m0.to_vec(), v0.to_vec(), opt.step)
        .expect("same length");
    assert_eq!(fresh, opt);
    assert!(fresh.set_state(vec![0.0; 3], vec![0.0; 2], 1).is_err());
    let mut p2 = p.clone();
    opt.update(&mut p, &[0.2, 0.1]);
    fresh.update(&mut p2, &[0.2, 0.1]);
    assert_eq!(p, p2);
    let mut g = vec![3.0f32, 4.0];
    assert!((clip_grad_norm(&mut g, 1.0) - 5.0).abs() < 1e-12);
    assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
    let mut small = vec![0.3f32, 0.4];
    clip_grad_norm(&mut small, 1.0);
    assert_eq!(small, vec![0.3, 0.4]);
}

/// A few epochs on the toy task: the loss falls and, with equal data and steps, the
/// Sobolev-trained model's held-out Jacobian error is below the MSE-only model's.
#[test]
fn training_learns_the_toy_jacobians() {
    let toy = Toy::new();
    let mut rng = seeded(8, 0);
    let (s, a) = random_inputs(&mut rng, 512);
    let (hs, ha) = random_inputs(&mut rng, 128);
    let held = collect(
        &toy,
        hs.view(),
        ha.view(),
        &TargetSpec::unit(SobolevForm::Full, 1),
        &mut rng,
    )
    .unwrap();
    let mut results = Vec::new();
    let mut trained = Vec::new();
    for form in [SobolevForm::Full, SobolevForm::None] {
        let cfg = ModelConfig {
            hidden: vec![32, 32],
            batch_size: 64,
            iterations: 4,
            minibatches: 4,
            sobolev: SobolevConfig {
                form,
                ..SobolevConfig::default()
            },
            ..ModelConfig::default()
        };
        let mut tr = SobolevTrainer::new(cfg, 3, 2).unwrap();
        assert!(matches!(tr.train_epoch(&mut rng), Err(Error::EmptyBuffer)));
        let mut data_rng = seeded(9, 0);
        assert_eq!(
            tr.collect(&toy, s.view(), a.view(), &mut data_rng).unwrap(),
            512
        );
        let mut train_rng = seeded(10, 0);
        let first = tr.train_epoch(&mut train_rng).unwrap();
        assert_eq!((first.steps, first.skipped, first.buffer_len), (16, 0, 512));
        let mut last = first;
        for _ in 0..14 {
            last = tr.train_epoch(&mut train_rng).unwrap();
        }
        assert!(
            last.loss < 0.5 * first.loss,
            "{form:?}: {first:?} → {last:?}"
        );
        results.push(evaluate(tr.model(), &held).unwrap());
        trained.push(tr);
    }
    let trained_sob = &trained[0];
    let (sob, mse) = (results[0], results[1]);
    assert_eq!(sob.samples, 128);
    assert!(
        sob.jacobian_delta_rel_err < mse.jacobian_delta_rel_err,
        "sobolev {sob:?} vs mse {mse:?}"
    );
    // the per-transition errors: one transition alone gives the aggregate error, and
    // the median and mean of the whole set are those of the single-transition evaluations
    let one = |r: usize| {
        let sel = |x: &ndarray::Array2<f32>| x.slice(ndarray::s![r..r + 1, ..]).to_owned();
        let t = Transitions::from_parts(
            held.layout,
            sel(&held.s),
            sel(&held.a),
            sel(&held.s_next),
            sel(&held.targets),
        )
        .unwrap();
        evaluate(trained_sob.model(), &t).unwrap()
    };
    let e0 = one(0);
    assert!((e0.jacobian_rel_err_median - e0.jacobian_rel_err).abs() < 1e-12);
    assert!((e0.jacobian_rel_err_mean - e0.jacobian_rel_err).abs() < 1e-12);
    let mut each: Vec<f64> = (0..held.len()).map(|r| one(r).jacobian_rel_err).collect();
    let mean = each.iter().sum::<f64>() / each.len() as f64;
    each.sort_by(f64::total_cmp);
    // the model runs in f32, and a batch of one rounds its products differently from a batch
    // of 128: equal up to f32 rounding (the neighbours of the median are much further apart)
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs();
    assert!(close(sob.jacobian_rel_err_mean, mean), "{sob:?} vs {mean}");
    let m = each.len() / 2;
    assert!(
        close(sob.jacobian_rel_err_median, each[m]),
        "{sob:?} vs {:?}",
        &each[m - 1..=m + 1]
    );
    assert!(!close(each[m - 1], each[m]) && !close(each[m + 1], each[m]));
}

/// `sobolev.wrt = action` trains exactly as β_s = 0 (for every form), and differently from
/// the default `state_action`.
#[test]
fn wrt_action_is_beta_s_zero() {
    let toy = Toy::new();
    let mut rng = seeded(12, 0);
    let (s, a) = random_inputs(&mut rng, 128);
    let train = |sobolev: SobolevConfig| {
        let cfg = ModelConfig {
            hidden: vec![8, 8],
            batch_size: 32,
            iterations: 2,
            minibatches: 2,
            sobolev,
            ..ModelConfig::default()
        };
        let mut tr = SobolevTrainer::new(cfg, 3, 2).unwrap();
        tr.collect(&toy, s.view(), a.view(), &mut seeded(13, 0))
            .unwrap();
        tr.train_epoch(&mut seeded(14, 0)).unwrap();
        tr.model().params().to_vec()
    };
    for form in [
        SobolevForm::Full,
        SobolevForm::VjpProj,
        SobolevForm::JvpProj,
        SobolevForm::Bilinear,
    ] {
        let base = SobolevConfig {
            form,
            directions: 2,
            beta_s: 0.7,
            beta_a: 1.6,
            ..SobolevConfig::default()
        };
        let action_only = train(SobolevConfig {
            wrt: crate::Wrt::Action,
            ..base.clone()
        });
        let zero = train(SobolevConfig {
            beta_s: 0.0,
            ..base.clone()
        });
        assert_eq!(action_only, zero, "{form:?}");
        assert_ne!(action_only, train(base), "{form:?}");
    }
}

/// The filtered losses: with `huber` the parameter gradient still matches finite
/// differences (δ inside the residuals' range, so both branches occur) and the penalty is
/// below the squared one; with `clip_norm` every Jacobian target is rescaled to norm ≤ c
/// (direction kept), and a bound above every target changes nothing.
#[test]
fn huber_and_clip_norm_filters() {
    let mut rng = seeded(21, 0);
    for form in [
        SobolevForm::Full,
        SobolevForm::VjpProj,
        SobolevForm::JvpProj,
        SobolevForm::Bilinear,
    ] {
        let cfg = tiny_cfg(form);
        let beta = cfg.sobolev.betas();
        let m = model64(&cfg, &mut rng);
        let b = toy_batch(&m, &cfg, 5, &mut rng);
        let plain = m.prepare(&b, beta).unwrap();
        let sq = m.sobolev_loss(&plain).unwrap();
        // δ small enough that some residual entries are beyond it
        let p = m
            .prepare_filtered(&b, beta, TargetFilter::Huber(0.05))
            .unwrap();
        let hub = m.sobolev_loss(&p).unwrap();
        assert!(hub.jacobian < sq.jacobian && hub.jacobian > 0.0, "{form:?}");
        assert_eq!(hub.value, sq.value);
        let mut grad = vec![0.0; m.num_params()];
        m.sobolev_loss_grad(&p, &mut grad).unwrap();
        let p0 = m.params().to_vec();
        let mut probe = m.clone();
        let fd = fd_gradient(
            &mut |q| {
                probe.params_mut().copy_from_slice(q);
                probe.sobolev_loss(&p).unwrap().total
            },
            &p0,
            1e-4,
        );
        let e = rel_err(&grad, &fd, 1e-10);
        assert!(e < 1e-7, "{form:?}: Huber gradient vs fd {e:.2e}");

        // clipping: per-target norms
        let norms = |p: &Prepared<f64>| -> Vec<f64> {
            let (n, k, ds, din) = (p.n, p.k, 3, 5);
            match &p.jac {
                PreparedJac::Full { t } => (0..n)
                    .map(|r| {
                        t[r * din * ds..(r + 1) * din * ds]
                            .iter()
                            .map(|x| x * x)
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect(),
                PreparedJac::VjpProj { w, .. } => (0..n * k)
                    .map(|rj| {
                        let (r, j) = (rj / k, rj % k);
                        (0..din)
                            .map(|i| w[(r * din + i) * k + j].powi(2))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect(),
                PreparedJac::JvpProj { z, .. } => (0..n * k)
                    .map(|rj| {
                        z[rj * ds..(rj + 1) * ds]
                            .iter()
                            .map(|x| x * x)
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect(),
                PreparedJac::Bilinear { b, .. } => b.iter().map(|x| x.abs()).collect(),
                PreparedJac::None => vec![],
            }
        };
        let before = norms(&plain);
        let c = 0.5 * before.iter().cloned().fold(0.0, f64::max);
        let clipped = m
            .prepare_filtered(&b, beta, TargetFilter::ClipNorm(c))
            .unwrap();
        let after = norms(&clipped);
        assert!(before.iter().any(|&x| x > c), "{form:?}: nothing to clip");
        for (x, y) in before.iter().zip(&after) {
            let want = x.min(c);
            assert!(
                (y - want).abs() <= 1e-12 * want.max(1.0),
                "{form:?}: {x} → {y}"
            );
        }
        let loose = m
            .prepare_filtered(&b, beta, TargetFilter::ClipNorm(1e12))
            .unwrap();
        assert_eq!(loose, plain);
    }
}

/// Given directions replace the first random one of each transition (rescaled to length
/// √ds in normalised output space, direction kept), zero rows keep the random draw, and
/// every other direction is the one `collect` draws.
#[test]
fn given_directions_replace_the_first_random_one() {
    let toy = Toy::new();
    let mut rng = seeded(31, 0);
    let (s, a) = random_inputs(&mut rng, 6);
    for form in [SobolevForm::VjpProj, SobolevForm::Bilinear] {
        let spec = TargetSpec {
            out_std: Some(vec![0.5, 2.0, 1.5]),
            in_std: Some(vec![1.0; 5]),
            ..TargetSpec::unit(form, 2)
        };
        let mut g = Array2::from_shape_fn((6, 3), |(r, o)| (r as f32 + 1.0) * (o as f32 - 0.7));
        g.row_mut(2).fill(0.0);
        let plain = collect(&toy, s.view(), a.view(), &spec, &mut seeded(32, 0)).unwrap();
        let given = collect_with_directions(
            &toy,
            s.view(),
            a.view(),
            None,
            &spec,
            Some(GivenDirections {
                u: g.view(),
                vjp: None,
            }),
            &mut seeded(32, 0),
        )
        .unwrap();
        let block = plain.layout.block();
        let sigma = [0.5f64, 2.0, 1.5];
        for r in 0..6 {
            let u: Vec<f64> = (0..3).map(|o| given.targets[[r, o]] as f64).collect();
            if r == 2 {
                for o in 0..3 {
                    assert_eq!(given.targets[[r, o]], plain.targets[[r, o]]);
                }
            } else {
                // parallel to g, with ‖σ⊙u‖² = ds
                let n2: f64 = (0..3).map(|o| (u[o] * sigma[o]).powi(2)).sum();
                assert!((n2 - 3.0).abs() < 1e-5, "{form:?} row {r}: {n2}");
                let k = u[0] / g[[r, 0]] as f64;
                for o in 0..3 {
                    assert!((u[o] - k * g[[r, o]] as f64).abs() < 1e-5);
                }
            }
            // the second direction is collect's
            for c in block..2 * block {
                assert_eq!(given.targets[[r, c]], plain.targets[[r, c]], "{form:?}");
            }
        }
    }
    // only the projected forms with output directions accept it
    let mut c = ModelConfig::default();
    c.sobolev.direction_source = DirectionSource::PolicyAdjoint;
    c.sobolev.form = SobolevForm::JvpProj;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("sobolev.direction_source"), "{err}");
}

/// Precomputed VJPs of the given directions (the actor's sweep already has them) give the
/// targets that `collect` computes with its own VJP, rows without a given direction
/// included; wrongly shaped VJPs are an error.
#[test]
fn given_direction_vjps_replace_the_simulator_vjp() {
    let toy = Toy::new();
    let mut rng = seeded(33, 0);
    let (s, a) = random_inputs(&mut rng, 7);
    let mut g = Array2::from_shape_fn((7, 3), |(r, o)| (r as f32 + 0.5) * (o as f32 - 1.3));
    g.row_mut(3).fill(0.0);
    g[[5, 1]] = f32::NAN;
    // the sweep's VJP of g
    let mut gs = Array2::<f32>::zeros((7, 3));
    let mut ga = Array2::<f32>::zeros((7, 2));
    diff_core::Task::step_vjp(
        &toy,
        s.view(),
        a.view(),
        g.view(),
        gs.view_mut(),
        ga.view_mut(),
    );
    for form in [SobolevForm::VjpProj, SobolevForm::Bilinear] {
        let spec = TargetSpec {
            out_std: Some(vec![0.5, 2.0, 1.5]),
            in_std: Some(vec![1.0, 0.7, 1.2, 0.9, 1.1]),
            ..TargetSpec::unit(form, 2)
        };
        let run = |vjp| {
            collect_with_directions(
                &toy,
                s.view(),
                a.view(),
                None,
                &spec,
                Some(GivenDirections { u: g.view(), vjp }),
                &mut seeded(34, 0),
            )
            .unwrap()
        };
        let own = run(None);
        let reused = run(Some((gs.view(), ga.view())));
        assert_eq!(own.targets.dim(), reused.targets.dim());
        for ((r, c), x) in own.targets.indexed_iter() {
            let y = reused.targets[[r, c]];
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                "{form:?} row {r} column {c}: {x} against {y}"
            );
        }
    }
    let bad = Array2::<f32>::zeros((7, 1));
    let err = collect_with_directions(
        &toy,
        s.view(),
        a.view(),
        None,
        &TargetSpec::unit(SobolevForm::VjpProj, 1),
        Some(GivenDirections {
            u: g.view(),
            vjp: Some((gs.view(), bad.view())),
        }),
        &mut rng,
    )
    .unwrap_err();
    assert!(err.to_string().contains("direction VJPs"), "{err}");
}

/// Next states handed in (a window's tape) give the same transitions and targets as the
/// states `collect` simulates itself; a wrongly shaped batch of them is an error.
#[test]
fn given_next_states_skip_the_forward_step() {
    let toy = Toy::new();
    let mut rng = seeded(41, 0);
    let (s, a) = random_inputs(&mut rng, 9);
    let mut next = Array2::<f32>::zeros((9, 3));
    diff_core::Task::step(&toy, s.view(), a.view(), next.view_mut());
    for form in FORMS {
        let spec = TargetSpec::unit(form, 2);
        let own = collect(&toy, s.view(), a.view(), &spec, &mut seeded(42, 0)).unwrap();
        let given = collect_with_directions(
            &toy,
            s.view(),
            a.view(),
            Some(next.view()),
            &spec,
            None,
            &mut seeded(42, 0),
        )
        .unwrap();
        assert_eq!(own.s_next, given.s_next, "{form:?}");
        assert_eq!(own.targets, given.targets, "{form:?}");
    }
    let bad = Array2::<f32>::zeros((8, 3));
    let err = collect_with_directions(
        &toy,
        s.view(),
        a.view(),
        Some(bad.view()),
        &TargetSpec::unit(SobolevForm::VjpProj, 1),
        None,
        &mut rng,
    )
    .unwrap_err();
    assert!(err.to_string().contains("next states"), "{err}");
}

/// Observation-space targets (`model.space = "obs"`): the transitions are observations,
/// and the `full` and `vjp_proj` targets are ∂o′/∂a = (∂o/∂s)(s′)·∂F/∂a (its rows projected
/// on u), with zero observation columns.
#[test]
fn observed_targets_are_the_observation_chain() {
    let task = ObservedToy::new();
    let mut rng = seeded(71, 0);
    let (s, a) = random_inputs(&mut rng, 6);
    let (od, da) = (4, 2);
    // the analytic ∂o′/∂a of row r
    let truth = |r: usize| -> Vec<[f64; 2]> {
        let sv: Vec<f64> = s.row(r).iter().map(|&v| v as f64).collect();
        let av: Vec<f64> = a.row(r).iter().map(|&v| v as f64).collect();
        let next = task.toy.step64(&sv, &av);
        let jo = ObservedToy::obs_jac(&next);
        let jf = task.toy.jac64(&sv, &av);
        (0..od)
            .map(|o| {
                let mut row = [0.0; 2];
                for (i, x) in row.iter_mut().enumerate() {
                    *x = (0..3).map(|j| jo[o][j] * jf[j][3 + i]).sum();
                }
                row
            })
            .collect()
    };
    let full = collect_observed(
        &task,
        s.view(),
        a.view(),
        None,
        &TargetSpec::unit(SobolevForm::Full, 1),
        &mut rng,
    )
    .unwrap();
    assert_eq!(full.s.dim(), (6, od));
    let mut o = Array2::<f32>::zeros((6, od));
    diff_core::Task::observe(&task, s.view(), o.view_mut());
    assert_eq!(full.s, o);
    let din = od + da;
    for r in 0..6 {
        let t = truth(r);
        for out in 0..od {
            for c in 0..din {
                let got = full.targets[[r, out * din + c]] as f64;
                let want = if c < od { 0.0 } else { t[out][c - od] };
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "row {r} ({out}, {c}): {got} vs {want}"
                );
            }
        }
    }
    let spec = TargetSpec {
        out_std: Some(vec![0.5, 2.0, 1.5, 0.8]),
        ..TargetSpec::unit(SobolevForm::VjpProj, 2)
    };
    let proj = collect_observed(&task, s.view(), a.view(), None, &spec, &mut rng).unwrap();
    let block = proj.layout.block();
    assert_eq!(block, od + din);
    for r in 0..6 {
        let t = truth(r);
        for j in 0..2 {
            let b = j * block;
            for i in 0..da {
                let want: f64 = (0..od)
                    .map(|o| proj.targets[[r, b + o]] as f64 * t[o][i])
                    .sum();
                let got = proj.targets[[r, b + 2 * od + i]] as f64;
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
            for c in od..2 * od {
                assert_eq!(proj.targets[[r, b + c]], 0.0);
            }
        }
    }
    // only forms with output directions or none; jvp_proj is an error
    assert!(collect_observed(
        &task,
        s.view(),
        a.view(),
        None,
        &TargetSpec::unit(SobolevForm::JvpProj, 1),
        &mut rng
    )
    .is_err());
    // the config's rules for an observation-space model
    let mut c = ModelConfig {
        space: ModelSpace::Obs,
        ..ModelConfig::default()
    };
    let msg = |c: &ModelConfig| c.validate().unwrap_err().to_string();
    assert!(msg(&c).contains("wrt"), "{}", msg(&c));
    c.sobolev.wrt = Wrt::Action;
    assert!(msg(&c).contains("reward"), "{}", msg(&c));
    c.reward = RewardSource::Learned;
    assert!(msg(&c).contains("done"), "{}", msg(&c));
    c.done = ModelDone::None;
    c.validate().unwrap();
    c.sobolev.form = SobolevForm::Bilinear;
    assert!(msg(&c).contains("space"), "{}", msg(&c));
}

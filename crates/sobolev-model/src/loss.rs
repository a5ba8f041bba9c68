//! The Sobolev loss J_M(φ) (algorithms.md §3.5) on a minibatch, in normalised coordinates:
//!
//! ```text
//! J_M = mean_i [ ‖y_i − y*_i‖² + β_s‖(J_y − J*)_s‖_F² + β_a‖(J_y − J*)_a‖_F² ]
//! ```
//!
//! with `y = net(x)`, `y* = (target − μ_out)/σ_out`, `J* = diag(1/σ_out)(J_F − [R·I, 0])diag(σ_in)`
//! (see [`crate::model`]). The Jacobian term is computed from the model's tangent
//! propagation (`full`, `jvp_proj`, `bilinear`) or, for `vjp_proj`, from its reverse-mode
//! cotangent written with the same ordinary ops (`k` rows instead of the identity
//! tangent's `in` rows: on Ant, 1 row instead of 45), so one first-order reverse pass gives
//! ∂J_M/∂φ. Per form (`k` directions, averaged):
//! - `full`: `Σ_i w_i Σ_o (J_y − J*)²_{o,i}`, `w` = β_s on state columns, β_a on action ones;
//! - `vjp_proj`: `Σ_i w_i (u_nᵀJ_y − u_nᵀJ*)_i²` with `u_n = σ_out ⊙ u_phys`;
//! - `jvp_proj`: `‖J_y·v_n − J*·v_n‖²` with `v_n = v_phys / σ_in` (β is inside `v`);
//! - `bilinear`: `(u_nᵀJ_y v_n − u_physᵀ(J_F − [R·I, 0])v_phys)²`;
//! - `none`: the value term only.

use crate::buffer::{TargetLayout, TargetSpec, Transitions};
use crate::config::{SobolevConfig, SobolevForm, TargetFilter};
use crate::error::{Error, Result};
use crate::model::{DfdxLayer, InputTangent, SobolevModel};
use crate::tangent::{Cube, Float, Mat};
use dfdx::prelude::*;

/// The Jacobian residual's penalty, elementwise: `r²`, or with a Huber δ `min(|r|, δ)² +
/// 2δ(|r| − min(|r|, δ))` (`r²` up to δ, `2δ|r| − δ²` beyond, C¹). Tape discipline as in
/// [`crate::tangent`]: the clamp runs on a retaped copy of `|r|`, whose tape stays on the
/// path that reaches the loss.
fn penalty<S: Shape, E: Float, T: Tape<E, Cpu> + Merge<T>>(
    r: Tensor<S, E, Cpu, T>,
    huber: Option<f64>,
) -> Tensor<S, E, Cpu, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    match huber {
        None => r.square(),
        Some(d) => {
            let a = r.abs();
            let m = a.retaped::<T>().clamp(0.0, d);
            let linear = (a - m.retaped::<T>()) * E::from_f64(2.0 * d).unwrap();
            m.square() + linear
        }
    }
}

/// `[n, a, b]` → `[n, b, a]`, row-major.
pub(crate) fn transpose_last<E: Copy>(v: &[E], n: usize, a: usize, b: usize) -> Vec<E> {
    let mut out = Vec::with_capacity(v.len());
    for r in 0..n {
        for j in 0..b {
            for i in 0..a {
                out.push(v[(r * a + i) * b + j]);
            }
        }
    }
    out
}

/// The Jacobian-side data of a prepared minibatch (normalised coordinates).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PreparedJac<E> {
    None,
    /// `J*` as rows `[n, in, out]` (row i = ∂y*/∂x_i).
    Full {
        t: Vec<E>,
    },
    /// `u_n` `[n, out, k]` and `u_nᵀJ*` `[n, in, k]`.
    VjpProj {
        u: Vec<E>,
        w: Vec<E>,
    },
    /// `v_n` `[n, k, in]` and `J*·v_n` `[n, k, out]`.
    JvpProj {
        v: Vec<E>,
        z: Vec<E>,
    },
    /// `u_n` `[n, k, out]`, `v_n` `[n, k, in]` and `u_nᵀJ*v_n` `[n, k]`.
    Bilinear {
        u: Vec<E>,
        v: Vec<E>,
        b: Vec<E>,
    },
}

/// A minibatch converted to the model's normalised coordinates (with the normaliser's
/// statistics at the time of [`SobolevModel::prepare`]) and float type.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared<E> {
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// Inputs `[n, in]`.
    pub(crate) x: Vec<E>,
    /// Value targets `[n, out]`.
    pub(crate) y: Vec<E>,
    /// Column weights `[in]` (β_s / β_a) for `full` and `vjp_proj`.
    pub(crate) weights: Vec<E>,
    pub(crate) jac: PreparedJac<E>,
    /// δ of the Huber penalty on the Jacobian residual (`target_filter = huber`).
    pub(crate) huber: Option<f64>,
}

impl<E> Prepared<E> {
    /// Number of transitions.
    pub fn len(&self) -> usize {
        self.n
    }
    /// Whether the minibatch is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// The value of J_M on a minibatch and its two parts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossParts {
    /// `value + jacobian`.
    pub total: f64,
    /// Mean squared next-state error (normalised, summed over outputs).
    pub value: f64,
    /// The (estimated) weighted Jacobian penalty; 0 for `none`.
    pub jacobian: f64,
}

impl<E: Float> SobolevModel<E>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    /// The target spec for collecting new transitions: the knobs of `cfg` with the model's
    /// current σ_in, σ_out as direction scales.
    pub fn target_spec(&self, cfg: &SobolevConfig) -> TargetSpec {
        TargetSpec {
            out_std: Some(self.normalizer.output().std),
            in_std: Some(self.normalizer.input().std),
            ..TargetSpec::from_config(cfg)
        }
    }

    /// Converts `batch` to normalised coordinates with the current statistics; `beta` =
    /// (β_s, β_a) weights the Jacobian columns of the `full` and `vjp_proj` forms.
    pub fn prepare(&self, batch: &Transitions, beta: (f64, f64)) -> Result<Prepared<E>> {
        self.prepare_filtered(batch, beta, TargetFilter::DropNonFinite)
    }

    /// [`Self::prepare`] with a target filter: `clip_norm` rescales each Jacobian target
    /// (the `full` block of a transition, the projected targets of one direction) to norm
    /// at most its value; `huber` makes the loss penalise the Jacobian residual with the
    /// Huber function.
    pub fn prepare_filtered(
        &self,
        batch: &Transitions,
        beta: (f64, f64),
        filter: TargetFilter,
    ) -> Result<Prepared<E>> {
        let mut p = self.prepare_raw(batch, beta)?;
        match filter {
            TargetFilter::DropNonFinite => {}
            TargetFilter::Huber(d) => p.huber = Some(d),
            TargetFilter::ClipNorm(c) => {
                let (n, k, ds, din) = (p.n, p.k, self.state_dim, self.input_dim());
                // rescales the elements `idx` of `v` to norm ≤ c
                let clip = |v: &mut Vec<E>, idx: &mut dyn Iterator<Item = usize>| {
                    let idx: Vec<usize> = idx.collect();
                    let norm = idx
                        .iter()
                        .map(|&i| v[i].to_f64().unwrap().powi(2))
                        .sum::<f64>()
                        .sqrt();
                    if norm > c {
                        let f = E::from_f64(c / norm).unwrap();
                        for i in idx {
                            v[i] *= f;
                        }
                    }
                };
                match &mut p.jac {
                    PreparedJac::None => {}
                    PreparedJac::Full { t } => {
                        for r in 0..n {
                            clip(t, &mut (r * din * ds..(r + 1) * din * ds));
                        }
                    }
                    PreparedJac::VjpProj { w, .. } => {
                        for r in 0..n {
                            for j in 0..k {
                                clip(w, &mut (0..din).map(|i| (r * din + i) * k + j));
                            }
                        }
                    }
                    PreparedJac::JvpProj { z, .. } => {
                        for rj in 0..n * k {
                            clip(z, &mut (rj * ds..(rj + 1) * ds));
                        }
                    }
                    PreparedJac::Bilinear { b, .. } => {
                        for rj in 0..n * k {
                            clip(b, &mut std::iter::once(rj));
                        }
                    }
                }
            }
        }
        Ok(p)
    }

    fn prepare_raw(&self, batch: &Transitions, beta: (f64, f64)) -> Result<Prepared<E>> {
        let l: TargetLayout = batch.layout;
        if l.state_dim != self.state_dim || l.action_dim != self.action_dim {
            return Err(Error::Incompatible(format!(
                "model has state {} / action {}, transitions {} / {}",
                self.state_dim, self.action_dim, l.state_dim, l.action_dim
            )));
        }
        let (ds, din, k, n) = (self.state_dim, self.input_dim(), l.directions, batch.len());
        let (inp, out) = (self.normalizer.input(), self.normalizer.output());
        let res = if self.is_residual() { 1.0 } else { 0.0 };
        let e = |v: f64| E::from_f64(v).unwrap();
        let mut x = Vec::with_capacity(n * din);
        let mut y = Vec::with_capacity(n * ds);
        for r in 0..n {
            for i in 0..din {
                let v = if i < ds {
                    batch.s[[r, i]]
                } else {
                    batch.a[[r, i - ds]]
                } as f64;
                x.push(e((v - inp.mean[i]) / inp.std[i]));
            }
            for o in 0..ds {
                let t = batch.s_next[[r, o]] as f64 - res * batch.s[[r, o]] as f64;
                y.push(e((t - out.mean[o]) / out.std[o]));
            }
        }
        let weights: Vec<E> = (0..din)
            .map(|i| e(if i < ds { beta.0 } else { beta.1 }))
            .collect();
        let tg = |r: usize, c: usize| batch.targets[[r, c]] as f64;
        let block = l.block();
        let jac = match l.form {
            SobolevForm::None => PreparedJac::None,
            SobolevForm::Full => {
                let mut t = vec![E::zero(); n * din * ds];
                for r in 0..n {
                    for o in 0..ds {
                        for i in 0..din {
                            let eye = if i == o { res } else { 0.0 };
                            let j = (tg(r, o * din + i) - eye) * inp.std[i] / out.std[o];
                            t[(r * din + i) * ds + o] = e(j);
                        }
                    }
                }
                PreparedJac::Full { t }
            }
            SobolevForm::VjpProj => {
                let mut u = vec![E::zero(); n * ds * k];
                let mut w = vec![E::zero(); n * din * k];
                for r in 0..n {
                    for j in 0..k {
                        let b = j * block;
                        for o in 0..ds {
                            u[(r * ds + o) * k + j] = e(out.std[o] * tg(r, b + o));
                        }
                        for i in 0..din {
                            let eye = if i < ds { res * tg(r, b + i) } else { 0.0 };
                            w[(r * din + i) * k + j] = e((tg(r, b + ds + i) - eye) * inp.std[i]);
                        }
                    }
                }
                PreparedJac::VjpProj { u, w }
            }
            SobolevForm::JvpProj => {
                let mut v = vec![E::zero(); n * k * din];
                let mut z = vec![E::zero(); n * k * ds];
                for r in 0..n {
                    for j in 0..k {
                        let b = j * block;
                        for i in 0..din {
                            v[(r * k + j) * din + i] = e(tg(r, b + i) / inp.std[i]);
                        }
                        for o in 0..ds {
                            let jv = tg(r, b + din + o) - res * tg(r, b + o);
                            z[(r * k + j) * ds + o] = e(jv / out.std[o]);
                        }
                    }
                }
                PreparedJac::JvpProj { v, z }
            }
            SobolevForm::Bilinear => {
                let mut u = vec![E::zero(); n * k * ds];
                let mut v = vec![E::zero(); n * k * din];
                let mut bt = vec![E::zero(); n * k];
                for r in 0..n {
                    for j in 0..k {
                        let b = j * block;
                        let mut uv = 0.0;
                        for o in 0..ds {
                            u[(r * k + j) * ds + o] = e(out.std[o] * tg(r, b + o));
                            uv += tg(r, b + o) * tg(r, b + ds + o);
                        }
                        for i in 0..din {
                            v[(r * k + j) * din + i] = e(tg(r, b + ds + i) / inp.std[i]);
                        }
                        bt[r * k + j] = e(tg(r, b + ds + din) - res * uv);
                    }
                }
                PreparedJac::Bilinear { u, v, b: bt }
            }
        };
        Ok(Prepared {
            n,
            k,
            x,
            y,
            weights,
            jac,
            huber: None,
        })
    }

    /// The loss graph on any tape: returns the scalar J_M and its parts' values.
    fn loss_graph<T: Tape<E, Cpu> + Merge<T>>(
        &self,
        layers: &[DfdxLayer<E>],
        x: Mat<E, T>,
        p: &Prepared<E>,
    ) -> (Tensor<(), E, Cpu, T>, LossParts) {
        let dev = Cpu::default();
        let (n, k, ds, din) = (p.n, p.k, self.state_dim, self.input_dim());
        let inv_n = E::from_f64(1.0 / n as f64).unwrap();
        let inv_nk = E::from_f64(1.0 / (n * k) as f64).unwrap();
        let cube = |v: &Vec<E>, shape: (usize, usize, usize)| -> Cube<E, T> {
            dev.tensor_from_vec(v.clone(), shape).retaped::<T>()
        };
        let weights = |shape: (usize, usize, usize)| -> Cube<E, T> {
            dev.tensor_from_vec(p.weights.clone(), (din,))
                .retaped::<T>()
                .broadcast_like::<_, Axes2<0, 2>>(&shape)
        };
        let tangent = match &p.jac {
            PreparedJac::None | PreparedJac::VjpProj { .. } => None,
            PreparedJac::Full { .. } => Some(InputTangent::Identity),
            PreparedJac::JvpProj { v, .. } | PreparedJac::Bilinear { v, .. } => Some(
                InputTangent::Rows(dev.tensor_from_vec(v.clone(), (n, k, din))),
            ),
        };
        // `vjp_proj` runs the reverse-mode cotangent (k rows) instead of the identity
        // tangent (`in` rows); both give `u_nᵀJ_y`.
        let (y, t) = match &p.jac {
            PreparedJac::VjpProj { u, .. } => {
                let rows = transpose_last(u, n, ds, k);
                let (y, c) =
                    self.forward_cotangent(layers, x, dev.tensor_from_vec(rows, (n, k, ds)));
                (y, Some(c))
            }
            _ => self.forward_pair(layers, x, tangent),
        };
        let y_target: Mat<E, T> = dev.tensor_from_vec(p.y.clone(), (n, ds)).retaped::<T>();
        let value = (y - y_target).square().sum::<(), _>() * inv_n;
        let value_f = value.array().to_f64().unwrap();
        let jac = t.map(|t| match &p.jac {
            PreparedJac::None => unreachable!("no tangent without a Jacobian term"),
            PreparedJac::Full { t: target } => {
                let shape = (n, din, ds);
                (penalty(t - cube(target, shape), p.huber) * weights(shape)).sum::<(), _>() * inv_n
            }
            PreparedJac::VjpProj { w, .. } => {
                // `t` holds the rows `u_nᵀJ_y` `[n, k, in]`.
                let shape = (n, k, din);
                let w_rows = dev
                    .tensor_from_vec(transpose_last(w, n, din, k), shape)
                    .retaped::<T>();
                let weights = dev
                    .tensor_from_vec(p.weights.clone(), (din,))
                    .retaped::<T>()
                    .broadcast_like::<_, Axes2<0, 1>>(&shape);
                (penalty(t - w_rows, p.huber) * weights).sum::<(), _>() * inv_nk
            }
            PreparedJac::JvpProj { z, .. } => {
                penalty(t - cube(z, (n, k, ds)), p.huber).sum::<(), _>() * inv_nk
            }
            PreparedJac::Bilinear { u, b, .. } => {
                let ujv = (t * cube(u, (n, k, ds))).sum::<(usize, usize), Axis<2>>();
                let b: Mat<E, T> = dev.tensor_from_vec(b.clone(), (n, k)).retaped::<T>();
                penalty(ujv - b, p.huber).sum::<(), _>() * inv_nk
            }
        });
        match jac {
            None => (
                value,
                LossParts {
                    total: value_f,
                    value: value_f,
                    jacobian: 0.0,
                },
            ),
            Some(j) => {
                let jac_f = j.array().to_f64().unwrap();
                (
                    value + j,
                    LossParts {
                        total: value_f + jac_f,
                        value: value_f,
                        jacobian: jac_f,
                    },
                )
            }
        }
    }

    pub(crate) fn check_prepared(&self, p: &Prepared<E>) -> Result<()> {
        if p.n == 0 {
            return Err(Error::EmptyBuffer);
        }
        if p.x.len() != p.n * self.input_dim() || p.y.len() != p.n * self.state_dim {
            return Err(Error::Incompatible(
                "prepared minibatch of another model size".into(),
            ));
        }
        Ok(())
    }

    /// J_M on a prepared minibatch (no gradient).
    pub fn sobolev_loss(&self, p: &Prepared<E>) -> Result<LossParts> {
        self.check_prepared(p)?;
        let x: Mat<E> = Cpu::default().tensor_from_vec(p.x.clone(), (p.n, self.input_dim()));
        Ok(self.loss_graph(&self.tensors(), x, p).1)
    }

    /// J_M on a prepared minibatch with its parameter gradient **added** into `grad` (flat
    /// layout of [`SobolevModel::params`]), by one first-order reverse pass through the
    /// value and tangent graphs.
    pub fn sobolev_loss_grad(&self, p: &Prepared<E>, grad: &mut [E]) -> Result<LossParts> {
        self.check_prepared(p)?;
        if grad.len() != self.num_params() {
            return Err(Error::dim("gradient", self.num_params(), grad.len()));
        }
        let dev = Cpu::default();
        let layers = self.tensors();
        let x: Mat<E> = dev.tensor_from_vec(p.x.clone(), (p.n, self.input_dim()));
        let (loss, parts) = self.loss_graph(&layers, x.leaky_trace(), p);
        let grads = loss.backward();
        let mut add = |offset: usize, g: Vec<E>| {
            for (d, v) in grad[offset..offset + g.len()].iter_mut().zip(&g) {
                *d += *v;
            }
        };
        for (t, l) in layers.iter().zip(&self.layers) {
            add(l.weight, grads.get(&t.w).as_vec());
            add(l.bias, grads.get(&t.b).as_vec());
            if let (Some((g, b)), Some((g_off, b_off))) = (&t.norm, l.norm) {
                add(g_off, grads.get(g).as_vec());
                add(b_off, grads.get(b).as_vec());
            }
        }
        Ok(parts)
    }
}

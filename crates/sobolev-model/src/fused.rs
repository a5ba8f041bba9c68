//! The Sobolev loss and its parameter gradient written out by hand for the MLP
//! (`model.network_backend = "fused"`): the forms `none` and `vjp_proj`.
//!
//! The dfdx path ([`crate::loss`]) builds the cotangent pass `c_x = J_yᵀu` from ordinary
//! tensor ops and lets one reverse pass differentiate it. Here the same three passes are
//! explicit loops and matrix products (ndarray, i.e. matrixmultiply's GEMM):
//! 1. the forward pass, keeping `z`, `x̂` and `s` of every hidden layer;
//! 2. the cotangent pass: the rows `u` (k per sample) back through the network to `c_x`;
//! 3. the adjoint of the cotangent pass, seeded with `∂J/∂c_x`, which gives the weights'
//!    gradient through the cotangent pass and the adjoints of the primal `z`, `x̂` and `s`
//!    it read; then the primal backward pass seeded with `∂V/∂y`, which adds those. For a
//!    split gradient (`model.grad_clip_per_term`) the primal backward pass runs twice,
//!    once per term.
//!
//! The forward and cotangent passes alone serve `predict`, `vjp` and `jacobian` of a fused
//! model (a model rollout's steps and the diagnostics).
//!
//! Notation for one hidden layer (rows are samples, `W` is `[in, out]`):
//! `z = h·W + b`, `e = σ(z)`, LayerNorm `x̂ = (e − mean e)/s`, `s = sqrt(var e + ε)`,
//! `h′ = g ⊙ x̂ + β`. Its cotangent rule (rows `c` on `h′`): `t = g ⊙ c`,
//! `q = t − mean t − x̂·mean(x̂ ⊙ t)`, `c_e = q/s`, `c_z = c_e ⊙ σ′(z)`, `c_h = c_z·Wᵀ`.
//!
//! It is checked against the dfdx path and against finite differences in f64 (tests).

use crate::config::Activation;
use crate::error::{Error, Result};
use crate::loss::{transpose_last, LossParts, Prepared, PreparedJac};
use crate::model::{LayerSlots, SobolevModel};
use crate::tangent::{Float, LAYER_NORM_EPS};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis};

/// `σ(z)`, `σ′(z)` and `σ″(z)` (ELU with α = 1: `exp(min(z, 0))` and `exp(z)` below 0,
/// one `exp` per element; tanh).
fn activation<E: Float>(z: E, act: Activation) -> (E, E, E) {
    match act {
        Activation::Elu => {
            if z > E::zero() {
                (z, E::one(), E::zero())
            } else {
                let e = z.exp();
                (e - E::one(), e, e)
            }
        }
        Activation::Tanh => {
            let t = z.tanh();
            let d = E::one() - t * t;
            (t, d, -(t + t) * d)
        }
    }
}

/// `c = a·b` (alpha 1, beta 0) or `c += a·b` (`accumulate`).
fn gemm<E: Float>(a: &ArrayView2<E>, b: &ArrayView2<E>, c: &mut Array2<E>, accumulate: bool) {
    let beta = if accumulate { E::one() } else { E::zero() };
    general_mat_mul(E::one(), a, b, beta, c);
}

/// What the forward pass keeps of one hidden layer.
struct Hidden<E> {
    /// The layer's input `[n, in]`.
    input: Array2<E>,
    /// `σ′(z)` and `σ″(z)` `[n, out]`.
    d1: Array2<E>,
    d2: Array2<E>,
    /// LayerNorm's `x̂` `[n, out]` and `s` `[n]`.
    norm: Option<(Array2<E>, Vec<E>)>,
}

/// What the cotangent pass keeps of one hidden layer (rows `[n·k, out]`).
struct HiddenCot<E> {
    /// Rows on the layer's output `h′` (before LayerNorm's rule).
    c_h: Array2<E>,
    /// Rows on `e` (after LayerNorm's rule).
    c_e: Array2<E>,
    /// Rows on `z`.
    c_z: Array2<E>,
}

/// What the adjoint of the cotangent pass leaves on the primal z, x̂ and s, per hidden
/// layer (per sample).
struct JacAdjoints<'a, E> {
    z: &'a [Option<Array2<E>>],
    xhat: &'a [Option<Array2<E>>],
    s: &'a [Option<Vec<E>>],
}

/// Row `i` of a standard-layout matrix as a slice.
fn row<E: Float>(a: &Array2<E>, i: usize) -> &[E] {
    let d = a.ncols();
    &a.as_slice().expect("standard layout")[i * d..(i + 1) * d]
}

fn row_mut<E: Float>(a: &mut Array2<E>, i: usize) -> &mut [E] {
    let d = a.ncols();
    &mut a.as_slice_mut().expect("standard layout")[i * d..(i + 1) * d]
}

fn sum<E: Float>(v: impl Iterator<Item = E>) -> E {
    v.fold(E::zero(), |a, x| a + x)
}

impl<E: Float> SobolevModel<E>
where
    dfdx::tensor::Cpu: dfdx::tensor_ops::Device<E>,
{
    fn weight(&self, l: &LayerSlots) -> ArrayView2<'_, E> {
        ArrayView2::from_shape(
            (l.fan_in, l.fan_out),
            &self.params[l.weight..l.weight + l.fan_in * l.fan_out],
        )
        .expect("weight slot")
    }

    fn slot(&self, off: usize, len: usize) -> &[E] {
        &self.params[off..off + len]
    }

    /// The forward pass on normalised inputs `x` `[n, in]`: what each hidden layer keeps,
    /// the last hidden activations `[n, d_L]` and the outputs `y` `[n, out]`.
    fn forward_pass(&self, x: Array2<E>) -> (Vec<Hidden<E>>, Array2<E>, Array2<E>) {
        let (n, ds) = (x.nrows(), self.state_dim);
        let act = self.activation;
        let (hidden_slots, out_slot) = self.layers.split_at(self.layers.len() - 1);
        let out_slot = &out_slot[0];
        let one = E::one();
        let eps = E::from_f64(LAYER_NORM_EPS).unwrap();
        let mut h = x;
        let mut saved: Vec<Hidden<E>> = Vec::with_capacity(hidden_slots.len());
        for l in hidden_slots {
            let d = l.fan_out;
            let inv_d = one / E::from_usize(d).unwrap();
            let b = self.slot(l.bias, d);
            let mut z = Array2::from_shape_fn((n, d), |(_, o)| b[o]);
            gemm(&h.view(), &self.weight(l), &mut z, true);
            let (mut d1, mut d2) = (Array2::zeros((n, d)), Array2::zeros((n, d)));
            let zs = z.as_slice_mut().expect("standard layout");
            let d1s = d1.as_slice_mut().expect("standard layout");
            let d2s = d2.as_slice_mut().expect("standard layout");
            for ((zv, a), b) in zs.iter_mut().zip(d1s.iter_mut()).zip(d2s.iter_mut()) {
                let (v, p1, p2) = activation(*zv, act);
                (*zv, *a, *b) = (v, p1, p2);
            }
            // z now holds σ(z)
            let norm = l.norm.map(|(g_off, b_off)| {
                let (g, beta) = (self.slot(g_off, d), self.slot(b_off, d));
                let mut s = Vec::with_capacity(n);
                let mut xhat = Array2::zeros((n, d));
                for i in 0..n {
                    let e = row_mut(&mut z, i);
                    let m = sum(e.iter().copied()) * inv_d;
                    let var = sum(e.iter().map(|&v| (v - m) * (v - m))) * inv_d;
                    let sd = (var + eps).sqrt();
                    let xr = row_mut(&mut xhat, i);
                    for o in 0..d {
                        xr[o] = (e[o] - m) / sd;
                        e[o] = g[o] * xr[o] + beta[o];
                    }
                    s.push(sd);
                }
                (xhat, s)
            });
            saved.push(Hidden {
                input: std::mem::replace(&mut h, z),
                d1,
                d2,
                norm,
            });
        }
        let w_out = self.weight(out_slot);
        let b_out = self.slot(out_slot.bias, ds);
        let mut y = Array2::from_shape_fn((n, ds), |(_, o)| b_out[o]);
        gemm(&h.view(), &w_out, &mut y, true);

        (saved, h, y)
    }

    /// The cotangent pass: rows `u` `[n·k, out]` (k per sample) back to the input, `c_x =
    /// J_yᵀu` `[n·k, in]`, with what each hidden layer's rule kept (in layer order).
    fn cotangent_pass(
        &self,
        saved: &[Hidden<E>],
        u_rows: &Array2<E>,
        k: usize,
    ) -> (Array2<E>, Vec<HiddenCot<E>>) {
        let nk = u_rows.nrows();
        let (hidden_slots, out_slot) = self.layers.split_at(self.layers.len() - 1);
        let out_slot = &out_slot[0];
        let w_out = self.weight(out_slot);
        let one = E::one();
        let mut c = Array2::zeros((nk, out_slot.fan_in));
        gemm(&u_rows.view(), &w_out.t(), &mut c, false);
        let mut cots: Vec<HiddenCot<E>> = Vec::with_capacity(saved.len());
        for (l, hs) in hidden_slots.iter().zip(saved).rev() {
            let d = l.fan_out;
            let inv_d = one / E::from_usize(d).unwrap();
            let mut c_e = Array2::zeros((nk, d));
            let mut c_z = Array2::zeros((nk, d));
            for r in 0..nk {
                let i = r / k;
                let (cr, er) = (row(&c, r), row_mut(&mut c_e, r));
                match (&hs.norm, l.norm) {
                    (Some((xhat, s)), Some((g_off, _))) => {
                        let g = self.slot(g_off, d);
                        let xr = row(xhat, i);
                        for o in 0..d {
                            er[o] = g[o] * cr[o];
                        }
                        let mt = sum(er.iter().copied()) * inv_d;
                        let mxt = sum(er.iter().zip(xr).map(|(&t, &x)| t * x)) * inv_d;
                        let inv_s = one / s[i];
                        for o in 0..d {
                            er[o] = (er[o] - mt - xr[o] * mxt) * inv_s;
                        }
                    }
                    _ => er.copy_from_slice(cr),
                }
                let d1 = row(&hs.d1, i);
                let er = row(&c_e, r);
                for ((zv, &ev), &dv) in row_mut(&mut c_z, r).iter_mut().zip(er).zip(d1) {
                    *zv = ev * dv;
                }
            }
            let mut c_in = Array2::zeros((nk, l.fan_in));
            gemm(&c_z.view(), &self.weight(l).t(), &mut c_in, false);
            cots.push(HiddenCot {
                c_h: std::mem::replace(&mut c, c_in),
                c_e,
                c_z,
            });
        }
        cots.reverse();

        (c, cots)
    }

    /// The network's outputs `y` `[n, out]` for normalised inputs `x` (the fused forward).
    pub(crate) fn net_forward_fused(&self, x: Array2<E>) -> Array2<E> {
        self.forward_pass(x).2
    }

    /// The cotangent pass of `k` output rows per sample (`u` `[n·k, out]`) at the normalised
    /// inputs `x` `[n, in]`: the rows `J_yᵀu` `[n·k, in]` (with the unit rows, `J_y` itself).
    pub(crate) fn net_jacobian_rows_fused(
        &self,
        x: Array2<E>,
        u: &Array2<E>,
        k: usize,
    ) -> Array2<E> {
        let (saved, _, _) = self.forward_pass(x);
        self.cotangent_pass(&saved, u, k).0
    }

    /// The network's input VJP `J_yᵀu` `[n, in]` for normalised inputs `x` and output rows
    /// `u` `[n, out]` (the fused forward and cotangent passes).
    pub(crate) fn net_input_vjp_fused(&self, x: Array2<E>, u: &Array2<E>) -> Array2<E> {
        self.net_jacobian_rows_fused(x, u, 1)
    }

    /// The primal backward pass from the outputs' adjoint `y_bar` (the value term) and/or
    /// the adjoints the cotangent pass's adjoint left on z, x̂ and s (the Jacobian term),
    /// adding the parameter gradient into `grad`.
    fn primal_backward(
        &self,
        saved: &[Hidden<E>],
        h: &Array2<E>,
        y_bar: Option<&Array2<E>>,
        j: Option<&JacAdjoints<'_, E>>,
        grad: &mut [E],
    ) {
        let n = h.nrows();
        let ds = self.state_dim;
        let one = E::one();
        let (hidden_slots, out_slot) = self.layers.split_at(self.layers.len() - 1);
        let out_slot = &out_slot[0];
        let w_out = self.weight(out_slot);
        let mut h_bar = Array2::zeros((n, out_slot.fan_in));
        if let Some(y_bar) = y_bar {
            let mut w_bar = Array2::zeros((out_slot.fan_in, ds));
            gemm(&h.t(), &y_bar.view(), &mut w_bar, false);
            add_into(grad, out_slot.weight, w_bar.iter());
            add_into(grad, out_slot.bias, y_bar.sum_axis(Axis(0)).iter());
            gemm(&y_bar.view(), &w_out.t(), &mut h_bar, false);
        }
        for (li, (l, hs)) in hidden_slots.iter().zip(saved).enumerate().rev() {
            let d = l.fan_out;
            let inv_d = one / E::from_usize(d).unwrap();
            let mut z_bar = match (&hs.norm, l.norm) {
                (Some((xhat, s)), Some((g_off, b_off))) => {
                    let g = self.slot(g_off, d);
                    let mut g_bar = vec![E::zero(); d];
                    add_into(grad, b_off, h_bar.sum_axis(Axis(0)).iter());
                    let mut e_bar = Array2::zeros((n, d));
                    let mut xb = vec![E::zero(); d];
                    for i in 0..n {
                        let (xr, hb) = (row(xhat, i), row(&h_bar, i));
                        for o in 0..d {
                            g_bar[o] += hb[o] * xr[o];
                            xb[o] = hb[o] * g[o];
                        }
                        if let Some(x) = j.and_then(|j| j.xhat[li].as_ref()) {
                            for (a, &b) in xb.iter_mut().zip(row(x, i)) {
                                *a += b;
                            }
                        }
                        let mxb = sum(xb.iter().copied()) * inv_d;
                        let mxbx = sum(xb.iter().zip(xr).map(|(&a, &x)| a * x)) * inv_d;
                        let sb =
                            j.and_then(|j| j.s[li].as_ref()).map_or(E::zero(), |v| v[i]) * inv_d;
                        let inv_s = one / s[i];
                        let er = row_mut(&mut e_bar, i);
                        for o in 0..d {
                            er[o] = (xb[o] - mxb - xr[o] * mxbx) * inv_s + sb * xr[o];
                        }
                    }
                    add_into(grad, g_off, g_bar.iter());
                    e_bar
                }
                _ => h_bar,
            };
            // z̄ = ē ⊙ σ′(z) + what the cotangent pass left on z
            for (v, &dv) in z_bar.iter_mut().zip(hs.d1.iter()) {
                *v *= dv;
            }
            if let Some(zb) = j.and_then(|j| j.z[li].as_ref()) {
                z_bar += zb;
            }
            let mut w_bar = Array2::zeros((l.fan_in, d));
            gemm(&hs.input.t(), &z_bar.view(), &mut w_bar, false);
            add_into(grad, l.weight, w_bar.iter());
            add_into(grad, l.bias, z_bar.sum_axis(Axis(0)).iter());
            h_bar = Array2::zeros((n, l.fan_in));
            if li > 0 {
                gemm(&z_bar.view(), &self.weight(l).t(), &mut h_bar, false);
            }
        }
    }

    /// [`SobolevModel::sobolev_loss_grad`] by the hand-written passes of this module: J_M
    /// on a prepared minibatch of the form `none` or `vjp_proj`, with its parameter gradient
    /// **added** into `grad`. The other forms are an error (`model.network_backend`).
    pub fn sobolev_loss_grad_fused(&self, p: &Prepared<E>, grad: &mut [E]) -> Result<LossParts> {
        self.fused_loss_grad(p, grad, None)
    }

    /// [`SobolevModel::sobolev_loss_grad_fused`] with the two terms' gradients apart: the
    /// value term's added into `grad_value`, the Jacobian term's into `grad_jacobian`
    /// (`model.grad_clip_per_term`).
    pub fn sobolev_loss_grad_fused_split(
        &self,
        p: &Prepared<E>,
        grad_value: &mut [E],
        grad_jacobian: &mut [E],
    ) -> Result<LossParts> {
        if grad_jacobian.len() != self.num_params() {
            return Err(Error::dim(
                "gradient",
                self.num_params(),
                grad_jacobian.len(),
            ));
        }
        self.fused_loss_grad(p, grad_value, Some(grad_jacobian))
    }

    fn fused_loss_grad(
        &self,
        p: &Prepared<E>,
        grad: &mut [E],
        mut split: Option<&mut [E]>,
    ) -> Result<LossParts> {
        self.check_prepared(p)?;
        if grad.len() != self.num_params() {
            return Err(Error::dim("gradient", self.num_params(), grad.len()));
        }
        let u_rows = match &p.jac {
            PreparedJac::None => None,
            PreparedJac::VjpProj { u, w } => Some((u, w)),
            _ => {
                return Err(Error::config(
                    "model.network_backend",
                    "\"fused\" supports sobolev.form = \"none\" and \"vjp_proj\"",
                ))
            }
        };
        let (n, k, ds, din) = (p.n, p.k, self.state_dim, self.input_dim());
        let (hidden_slots, out_slot) = self.layers.split_at(self.layers.len() - 1);
        let out_slot = &out_slot[0];
        let one = E::one();
        let two = one + one;

        // 1. Forward.
        let x = Array2::from_shape_vec((n, din), p.x.clone()).expect("prepared inputs");
        let (saved, h, y) = self.forward_pass(x);

        // The value term and its seed ∂V/∂y.
        let inv_n = one / E::from_usize(n).unwrap();
        let mut value = E::zero();
        let mut y_bar = Array2::zeros((n, ds));
        for ((yb, &yv), &yt) in y_bar.iter_mut().zip(y.iter()).zip(&p.y) {
            let r = yv - yt;
            value += r * r;
            *yb = two * r * inv_n;
        }
        value *= inv_n;

        // Adjoints of the primal z, x̂ and s that the cotangent pass reads (per sample).
        let mut z_bar_j: Vec<Option<Array2<E>>> = (0..saved.len()).map(|_| None).collect();
        let mut xhat_bar_j: Vec<Option<Array2<E>>> = (0..saved.len()).map(|_| None).collect();
        let mut s_bar_j: Vec<Option<Vec<E>>> = (0..saved.len()).map(|_| None).collect();
        let mut jac = E::zero();

        if let Some((u, w)) = u_rows {
            // the Jacobian term's own parameter gradient (apart with a split gradient)
            let gj: &mut [E] = match split.as_deref_mut() {
                Some(g) => g,
                None => &mut *grad,
            };
            let nk = n * k;
            let u_rows =
                Array2::from_shape_vec((nk, ds), transpose_last(u, n, ds, k)).expect("directions");
            let w_rows = transpose_last(w, n, din, k);

            // 2. The cotangent pass.
            let (c, cots) = self.cotangent_pass(&saved, &u_rows, k);

            // The Jacobian term and its seed ∂J/∂c_x.
            let inv_nk = one / E::from_usize(nk).unwrap();
            let huber = p.huber.map(|d| E::from_f64(d).unwrap());
            let mut c_bar = Array2::zeros((nk, din));
            let cbs = c_bar.as_slice_mut().expect("standard layout");
            let cs = c.as_slice().expect("standard layout");
            for (r, (cbr, cr)) in cbs
                .chunks_exact_mut(din)
                .zip(cs.chunks_exact(din))
                .enumerate()
            {
                let wr = &w_rows[r * din..(r + 1) * din];
                for col in 0..din {
                    let res = cr[col] - wr[col];
                    let (pen, dpen) = match huber {
                        Some(dl) if res.abs() > dl => (
                            dl * dl + two * dl * (res.abs() - dl),
                            two * dl * res.signum(),
                        ),
                        _ => (res * res, two * res),
                    };
                    jac += p.weights[col] * pen;
                    cbr[col] = p.weights[col] * dpen * inv_nk;
                }
            }
            jac *= inv_nk;

            // 3a. The adjoint of the cotangent pass, from the input layer up.
            for (li, (l, (hs, cot))) in hidden_slots.iter().zip(saved.iter().zip(&cots)).enumerate()
            {
                let d = l.fan_out;
                let inv_d = one / E::from_usize(d).unwrap();
                // c_in = c_z·Wᵀ
                let mut ce_bar = Array2::zeros((nk, d));
                gemm(&c_bar.view(), &self.weight(l), &mut ce_bar, false);
                let mut w_bar = Array2::zeros((l.fan_in, d));
                gemm(&c_bar.t(), &cot.c_z.view(), &mut w_bar, false);
                add_into(gj, l.weight, w_bar.iter());
                // c_z = c_e ⊙ σ′(z): ce_bar holds c̄_z, then c̄_e
                let mut zb = Array2::zeros((n, d));
                for r in 0..nk {
                    let i = r / k;
                    let (d1, d2, er) = (row(&hs.d1, i), row(&hs.d2, i), row(&cot.c_e, r));
                    let zbr = row_mut(&mut zb, i);
                    let cbr = row_mut(&mut ce_bar, r);
                    for o in 0..d {
                        zbr[o] += cbr[o] * er[o] * d2[o];
                        cbr[o] *= d1[o];
                    }
                }
                z_bar_j[li] = Some(zb);
                c_bar = match (&hs.norm, l.norm) {
                    (Some((xhat, s)), Some((g_off, _))) => {
                        let g = self.slot(g_off, d);
                        let mut xb = Array2::zeros((n, d));
                        let mut sb = vec![E::zero(); n];
                        let mut g_bar = vec![E::zero(); d];
                        let mut ch_bar = Array2::zeros((nk, d));
                        let mut t = vec![E::zero(); d];
                        let mut qb = vec![E::zero(); d];
                        for r in 0..nk {
                            let i = r / k;
                            let xr = row(xhat, i);
                            let (ch, ce, ceb) =
                                (row(&cot.c_h, r), row(&cot.c_e, r), row(&ce_bar, r));
                            let inv_s = one / s[i];
                            for o in 0..d {
                                t[o] = g[o] * ch[o];
                                // c_e = q/s
                                qb[o] = ceb[o] * inv_s;
                            }
                            let mxt = sum(t.iter().zip(xr).map(|(&a, &x)| a * x)) * inv_d;
                            sb[i] -= sum(ceb.iter().zip(ce).map(|(&a, &b)| a * b)) * inv_s;
                            let mqb = sum(qb.iter().copied()) * inv_d;
                            let mqx = sum(qb.iter().zip(xr).map(|(&a, &x)| a * x)) * inv_d;
                            let xbr = row_mut(&mut xb, i);
                            for o in 0..d {
                                xbr[o] = xbr[o] - qb[o] * mxt - t[o] * mqx;
                            }
                            let chb = row_mut(&mut ch_bar, r);
                            for o in 0..d {
                                let tb = qb[o] - mqb - xr[o] * mqx;
                                g_bar[o] += tb * ch[o];
                                chb[o] = tb * g[o];
                            }
                        }
                        add_into(gj, g_off, g_bar.iter());
                        xhat_bar_j[li] = Some(xb);
                        s_bar_j[li] = Some(sb);
                        ch_bar
                    }
                    _ => ce_bar,
                };
            }
            // c_h of the last hidden layer = u·W_outᵀ
            let mut w_bar = Array2::zeros((out_slot.fan_in, ds));
            gemm(&c_bar.t(), &u_rows.view(), &mut w_bar, false);
            add_into(gj, out_slot.weight, w_bar.iter());
        }

        // 3b. The primal backward pass, seeded with ∂V/∂y plus what 3a left on z, x̂, s
        // (or twice, once per term, for a split gradient).
        let j_adj = JacAdjoints {
            z: &z_bar_j,
            xhat: &xhat_bar_j,
            s: &s_bar_j,
        };
        match split {
            None => self.primal_backward(&saved, &h, Some(&y_bar), Some(&j_adj), grad),
            Some(g_jac) => {
                self.primal_backward(&saved, &h, Some(&y_bar), None, grad);
                self.primal_backward(&saved, &h, None, Some(&j_adj), g_jac);
            }
        }

        let (value, jac) = (value.to_f64().unwrap(), jac.to_f64().unwrap());
        Ok(LossParts {
            total: value + jac,
            value,
            jacobian: jac,
        })
    }
}

/// `grad[off..] += values` (row-major iteration order = the flat layout).
fn add_into<'a, E: Float>(grad: &mut [E], off: usize, values: impl Iterator<Item = &'a E>) {
    for (g, &v) in grad[off..].iter_mut().zip(values) {
        *g += v;
    }
}

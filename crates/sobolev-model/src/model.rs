//! The dynamics model f_φ: an MLP over `[normalised state, action]` → normalised Δs (or s′),
//! with its JVP, VJP and full Jacobian in physical coordinates.
//!
//! Hidden blocks are Linear → activation (ELU or tanh) → LayerNorm (optional); the output
//! layer is Linear. The weights live in one flat vector (layout of
//! [`SobolevModel::named_params`]; the weight of layer k is stored `[in, out]`, `y = x·W + b`,
//! as mbmix-policy's `Mlp`), initialised as PyTorch's `nn.Linear` (U(±1/√fan_in)), LayerNorm
//! gain 1 and bias 0.
//!
//! Coordinates: with the statistics of [`Normalizer`], `x = ((s − μ_s)/σ_s, (a − μ_a)/σ_a)`,
//! `y = net(x)` and `s′ = R·s + μ_out + σ_out ⊙ y` (R = 1 for a residual model, 0 for a
//! next-state model). Hence the physical Jacobian is
//! `∂s′/∂(s, a) = [R·I, 0] + diag(σ_out)·J_y·diag(1/σ_in)`, and the Sobolev targets are
//! compared with `J_y` in normalised coordinates:
//! `J_norm = diag(1/σ_out)·(J_F − [R·I, 0])·diag(σ_in)` (algorithms.md §3.4).

use crate::config::{Activation, ModelConfig, NetworkBackend, PredictionTarget};
use crate::error::{check_shape, Error, Result};
use crate::normalizer::Normalizer;
use crate::tangent::{
    activate, activate_pair, activation_cotangent, layer_norm_cotangent, layer_norm_pair,
    layer_norm_saving, linear, linear_cotangent, linear_identity_tangent, linear_tangent, Cube,
    Float, LayerNormSaved, Mat, Vector,
};
use dfdx::prelude::*;
use ndarray::{Array2, Array3, ArrayView2};
use rand_distr::{Distribution, Uniform};

/// Where one layer's parameters sit in the flat parameter vector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LayerSlots {
    pub fan_in: usize,
    pub fan_out: usize,
    pub weight: usize,
    pub bias: usize,
    /// Hidden layers have an activation (and LayerNorm when enabled); the last has neither.
    pub hidden: bool,
    /// LayerNorm gain and bias offsets.
    pub norm: Option<(usize, usize)>,
}

/// One layer as dfdx tensors: weight, bias, LayerNorm gain and bias.
pub(crate) struct DfdxLayer<E: Float> {
    pub w: Mat<E>,
    pub b: Vector<E>,
    pub norm: Option<(Vector<E>, Vector<E>)>,
    pub hidden: bool,
}

/// The tangent fed into the network's input.
pub(crate) enum InputTangent<E: Float> {
    /// All `in` unit directions at once: the output tangent is the full input Jacobian,
    /// as rows `[n, in, out]`.
    Identity,
    /// Given tangent rows `[n, c, in]`.
    Rows(Cube<E>),
}

/// The learned dynamics model (see the module docs for its coordinates).
#[derive(Clone, Debug, PartialEq)]
pub struct SobolevModel<E: Float> {
    pub(crate) state_dim: usize,
    pub(crate) action_dim: usize,
    pub(crate) activation: Activation,
    pub(crate) target: PredictionTarget,
    pub(crate) dims: Vec<usize>,
    pub(crate) layers: Vec<LayerSlots>,
    pub(crate) params: Vec<E>,
    /// The running input/output statistics (identity when `normalise` is off).
    pub normalizer: Normalizer,
    /// `model.network_backend`: with `fused`, [`Self::predict`], [`Self::vjp`] (a model
    /// rollout's steps) and [`Self::jacobian`] also run the hand-written passes.
    pub(crate) backend: NetworkBackend,
}

/// The normaliser's means and deviations converted to the model's float type.
pub(crate) struct Coords<E> {
    pub mean_in: Vec<E>,
    pub std_in: Vec<E>,
    pub mean_out: Vec<E>,
    pub std_out: Vec<E>,
}

fn cast<E: Float>(v: &[f64]) -> Vec<E> {
    v.iter().map(|&x| E::from_f64(x).unwrap()).collect()
}

impl<E: Float> SobolevModel<E>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    /// A new model for `state_dim` states and `action_dim` actions with the architecture of
    /// `cfg` (validated), weights drawn from the seed `cfg.seed`.
    pub fn new(state_dim: usize, action_dim: usize, cfg: &ModelConfig) -> Result<Self> {
        cfg.validate()?;
        if state_dim == 0 {
            return Err(Error::dim("SobolevModel state_dim", "≥ 1", 0));
        }
        let mut rng = diff_core::seeded(cfg.seed, 0x50b0);
        let mut dims = vec![state_dim + action_dim];
        dims.extend_from_slice(&cfg.hidden);
        dims.push(state_dim);
        let mut layers = Vec::new();
        let mut params: Vec<E> = Vec::new();
        for k in 0..dims.len() - 1 {
            let (fan_in, fan_out) = (dims[k], dims[k + 1]);
            let hidden = k + 2 < dims.len();
            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
            let u = Uniform::new_inclusive(-bound, bound);
            // Drawn in PyTorch's [out, in] order, stored transposed ([in, out]).
            let w: Vec<f64> = (0..fan_out * fan_in).map(|_| u.sample(&mut rng)).collect();
            let weight = params.len();
            params.resize(weight + fan_in * fan_out, E::zero());
            for o in 0..fan_out {
                for i in 0..fan_in {
                    params[weight + i * fan_out + o] = E::from_f64(w[o * fan_in + i]).unwrap();
                }
            }
            let bias = params.len();
            params.extend((0..fan_out).map(|_| E::from_f64(u.sample(&mut rng)).unwrap()));
            let norm = if hidden && cfg.layer_norm {
                let g = params.len();
                params.extend(std::iter::repeat_n(E::one(), fan_out));
                let b = params.len();
                params.extend(std::iter::repeat_n(E::zero(), fan_out));
                Some((g, b))
            } else {
                None
            };
            layers.push(LayerSlots {
                fan_in,
                fan_out,
                weight,
                bias,
                hidden,
                norm,
            });
        }
        Ok(SobolevModel {
            state_dim,
            action_dim,
            activation: cfg.activation,
            target: cfg.target,
            dims,
            layers,
            params,
            normalizer: Normalizer::new(state_dim, action_dim, cfg.normalise),
            backend: cfg.network_backend,
        })
    }

    /// State width.
    pub fn state_dim(&self) -> usize {
        self.state_dim
    }
    /// Action width.
    pub fn action_dim(&self) -> usize {
        self.action_dim
    }
    /// Network input width (state + action).
    pub fn input_dim(&self) -> usize {
        self.state_dim + self.action_dim
    }
    /// Layer widths `[in, hidden…, out]`.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }
    /// Whether the network predicts the residual Δs.
    pub fn is_residual(&self) -> bool {
        self.target == PredictionTarget::Residual
    }
    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }
    /// The flat parameter vector.
    pub fn params(&self) -> &[E] {
        &self.params
    }
    /// The flat parameter vector, mutable (for the optimiser).
    pub fn params_mut(&mut self) -> &mut [E] {
        &mut self.params
    }

    /// Every parameter tensor with a stable name, in the flat layout order: per layer k
    /// `l{k}.weight` (`[in, out]`), `l{k}.bias` and, for hidden layers with LayerNorm,
    /// `l{k}.ln_gain`, `l{k}.ln_bias`.
    pub fn named_params(&self) -> Vec<(String, Vec<usize>, &[E])> {
        let mut out = Vec::new();
        for (k, l) in self.layers.iter().enumerate() {
            let (i, o) = (l.fan_in, l.fan_out);
            out.push((
                format!("l{k}.weight"),
                vec![i, o],
                &self.params[l.weight..l.weight + i * o],
            ));
            out.push((
                format!("l{k}.bias"),
                vec![o],
                &self.params[l.bias..l.bias + o],
            ));
            if let Some((g, b)) = l.norm {
                out.push((format!("l{k}.ln_gain"), vec![o], &self.params[g..g + o]));
                out.push((format!("l{k}.ln_bias"), vec![o], &self.params[b..b + o]));
            }
        }
        out
    }

    pub(crate) fn coords(&self) -> Coords<E> {
        let (i, o) = (self.normalizer.input(), self.normalizer.output());
        Coords {
            mean_in: cast(&i.mean),
            std_in: cast(&i.std),
            mean_out: cast(&o.mean),
            std_out: cast(&o.std),
        }
    }

    pub(crate) fn tensors(&self) -> Vec<DfdxLayer<E>> {
        let dev = Cpu::default();
        let vec = |off: usize, len: usize| -> Vector<E> {
            dev.tensor_from_vec(self.params[off..off + len].to_vec(), (len,))
        };
        self.layers
            .iter()
            .map(|l| DfdxLayer {
                w: dev.tensor_from_vec(
                    self.params[l.weight..l.weight + l.fan_in * l.fan_out].to_vec(),
                    (l.fan_in, l.fan_out),
                ),
                b: vec(l.bias, l.fan_out),
                norm: l.norm.map(|(g, b)| (vec(g, l.fan_out), vec(b, l.fan_out))),
                hidden: l.hidden,
            })
            .collect()
    }

    /// The network on a (value, tangent) pair: returns `y = net(x)` `[n, out]` and, when a
    /// tangent is given, `J_y·V` as rows `[n, c, out]`.
    pub(crate) fn forward_pair<T: Tape<E, Cpu> + Merge<T>>(
        &self,
        layers: &[DfdxLayer<E>],
        x: Mat<E, T>,
        tangent: Option<InputTangent<E>>,
    ) -> (Mat<E, T>, Option<Cube<E, T>>) {
        let n = x.shape().0;
        let mut h = x;
        let mut first = tangent;
        let mut t: Option<Cube<E, T>> = None;
        for (k, layer) in layers.iter().enumerate() {
            let tz = if k == 0 {
                match first.take() {
                    None => None,
                    Some(InputTangent::Identity) => Some(linear_identity_tangent(n, &layer.w)),
                    Some(InputTangent::Rows(v)) => Some(linear_tangent(v.retaped::<T>(), &layer.w)),
                }
            } else {
                t.take().map(|v| linear_tangent(v, &layer.w))
            };
            let z = linear(h, &layer.w, &layer.b);
            if !layer.hidden {
                return (z, tz);
            }
            let (e, te) = activate_pair(z, tz, self.activation);
            (h, t) = match &layer.norm {
                Some((g, b)) => layer_norm_pair(e, te, g, b),
                None => (e, te),
            };
        }
        unreachable!("the last layer is not hidden and returns above")
    }

    /// The network with a reverse-mode cotangent: returns `y = net(x)` `[n, out]` and, for
    /// cotangent rows `u` `[n, k, out]`, `uᵀJ_y` as rows `[n, k, in]`. Written with ordinary
    /// ops (the reverse pass of [`Self::forward_pair`]'s layers, on tape-free copies of the
    /// primal intermediates), so a loss on `uᵀJ_y` backpropagates to the weights with one
    /// first-order reverse pass, as the tangent does; it costs `k` rows instead of the
    /// identity tangent's `in` rows.
    pub(crate) fn forward_cotangent<T: Tape<E, Cpu> + Merge<T>>(
        &self,
        layers: &[DfdxLayer<E>],
        x: Mat<E, T>,
        u: Cube<E>,
    ) -> (Mat<E, T>, Cube<E, T>) {
        let mut h = x;
        let mut saved: Vec<(Mat<E>, Option<LayerNormSaved<E>>)> = Vec::new();
        let mut y = None;
        for layer in layers {
            let z = linear(h, &layer.w, &layer.b);
            if !layer.hidden {
                y = Some(z);
                break;
            }
            let z_saved = z.retaped::<NoneTape>();
            let e = activate(z, self.activation);
            let (next, ln) = match &layer.norm {
                Some((g, b)) => {
                    let (v, s) = layer_norm_saving(e, g, b);
                    (v, Some(s))
                }
                None => (e, None),
            };
            saved.push((z_saved, ln));
            h = next;
        }
        let y = y.expect("the last layer is not hidden");
        let last = layers.last().expect("a network has layers");
        let mut c = linear_cotangent(u.retaped::<T>(), &last.w);
        for (layer, (z, ln)) in layers.iter().zip(&saved).rev() {
            if let (Some(s), Some((g, _))) = (ln, &layer.norm) {
                c = layer_norm_cotangent(c, s, g);
            }
            c = activation_cotangent(c, z, self.activation);
            c = linear_cotangent(c, &layer.w);
        }
        (y, c)
    }

    fn check_sa(&self, s: &ArrayView2<E>, a: &ArrayView2<E>) -> Result<usize> {
        let n = s.nrows();
        check_shape("model state", s.shape(), n, self.state_dim)?;
        check_shape("model action", a.shape(), n, self.action_dim)?;
        Ok(n)
    }

    /// Normalised network input `[n, in]`, row-major.
    pub(crate) fn normalized_input(
        &self,
        c: &Coords<E>,
        s: &ArrayView2<E>,
        a: &ArrayView2<E>,
    ) -> Vec<E> {
        let mut x = Vec::with_capacity(s.nrows() * self.input_dim());
        for (sr, ar) in s.rows().into_iter().zip(a.rows()) {
            for (i, &v) in sr.iter().chain(ar.iter()).enumerate() {
                x.push((v - c.mean_in[i]) / c.std_in[i]);
            }
        }
        x
    }

    /// Predicted next states `s′ = f_φ(s, a)` for a batch (`s: [n, state]`, `a: [n, action]`).
    pub fn predict(&self, s: ArrayView2<E>, a: ArrayView2<E>) -> Result<Array2<E>> {
        let n = self.check_sa(&s, &a)?;
        let c = self.coords();
        let x = self.normalized_input(&c, &s, &a);
        let y = match self.backend {
            NetworkBackend::Fused => {
                self.net_forward_fused(
                    Array2::from_shape_vec((n, self.input_dim()), x).expect("input"),
                )
                .into_raw_vec_and_offset()
                .0
            }
            NetworkBackend::Dfdx => {
                let dev = Cpu::default();
                let xt: Mat<E> = dev.tensor_from_vec(x, (n, self.input_dim()));
                self.forward_pair(&self.tensors(), xt, None).0.as_vec()
            }
        };
        let ds = self.state_dim;
        let r = if self.is_residual() {
            E::one()
        } else {
            E::zero()
        };
        Ok(Array2::from_shape_fn((n, ds), |(i, o)| {
            r * s[[i, o]] + c.mean_out[o] + c.std_out[o] * y[i * ds + o]
        }))
    }

    /// Jacobian–vector product `ds′ = ∂f/∂s·ds + ∂f/∂a·da` at `(s, a)`, by tangent
    /// propagation (one tangent column per sample).
    pub fn jvp(
        &self,
        s: ArrayView2<E>,
        a: ArrayView2<E>,
        ds: ArrayView2<E>,
        da: ArrayView2<E>,
    ) -> Result<Array2<E>> {
        let n = self.check_sa(&s, &a)?;
        check_shape("model jvp ds", ds.shape(), n, self.state_dim)?;
        check_shape("model jvp da", da.shape(), n, self.action_dim)?;
        let c = self.coords();
        let din = self.input_dim();
        let mut v = Vec::with_capacity(n * din);
        for (sr, ar) in ds.rows().into_iter().zip(da.rows()) {
            for (i, &t) in sr.iter().chain(ar.iter()).enumerate() {
                v.push(t / c.std_in[i]);
            }
        }
        let dev = Cpu::default();
        let x: Mat<E> = dev.tensor_from_vec(self.normalized_input(&c, &s, &a), (n, din));
        let vt: Cube<E> = dev.tensor_from_vec(v, (n, 1, din));
        let (_, t) = self.forward_pair(&self.tensors(), x, Some(InputTangent::Rows(vt)));
        let t = t.expect("a tangent was given").as_vec();
        let dso = self.state_dim;
        let r = if self.is_residual() {
            E::one()
        } else {
            E::zero()
        };
        Ok(Array2::from_shape_fn((n, dso), |(i, o)| {
            r * ds[[i, o]] + c.std_out[o] * t[i * dso + o]
        }))
    }

    /// Vector–Jacobian product at `(s, a)`: returns `((∂f/∂s)ᵀ adj_next, (∂f/∂a)ᵀ adj_next)`,
    /// by dfdx's reverse mode through the network (the transpose of [`Self::jvp`]).
    pub fn vjp(
        &self,
        s: ArrayView2<E>,
        a: ArrayView2<E>,
        adj_next: ArrayView2<E>,
    ) -> Result<(Array2<E>, Array2<E>)> {
        let n = self.check_sa(&s, &a)?;
        check_shape("model vjp adj_next", adj_next.shape(), n, self.state_dim)?;
        let c = self.coords();
        let (ds, din) = (self.state_dim, self.input_dim());
        let x = self.normalized_input(&c, &s, &a);
        let seed: Vec<E> = adj_next
            .indexed_iter()
            .map(|((_, o), &g)| g * c.std_out[o])
            .collect();
        let g = match self.backend {
            NetworkBackend::Fused => {
                let x = Array2::from_shape_vec((n, din), x).expect("input");
                let u = Array2::from_shape_vec((n, ds), seed).expect("seed");
                self.net_input_vjp_fused(x, &u).into_raw_vec_and_offset().0
            }
            NetworkBackend::Dfdx => {
                let dev = Cpu::default();
                let x: Mat<E> = dev.tensor_from_vec(x, (n, din));
                let seed: Mat<E, OwnedTape<E, Cpu>> = dev
                    .tensor_from_vec(seed, (n, ds))
                    .retaped::<OwnedTape<E, Cpu>>();
                let (y, _) = self.forward_pair(&self.tensors(), x.leaky_trace(), None);
                let grads = (y * seed).sum::<(), _>().backward();
                grads.get(&x).as_vec()
            }
        };
        let r = if self.is_residual() {
            E::one()
        } else {
            E::zero()
        };
        let adj_s = Array2::from_shape_fn((n, ds), |(i, j)| {
            r * adj_next[[i, j]] + g[i * din + j] / c.std_in[j]
        });
        let adj_a = Array2::from_shape_fn((n, self.action_dim), |(i, j)| {
            g[i * din + ds + j] / c.std_in[ds + j]
        });
        Ok((adj_s, adj_a))
    }

    /// The full Jacobians `∂s′/∂(s, a)` `[n, state, state + action]` (physical coordinates),
    /// by tangent propagation of all input directions.
    pub fn jacobian(&self, s: ArrayView2<E>, a: ArrayView2<E>) -> Result<Array3<E>> {
        let n = self.check_sa(&s, &a)?;
        let c = self.coords();
        let (ds, din) = (self.state_dim, self.input_dim());
        let x = self.normalized_input(&c, &s, &a);
        // J_y of sample k as `jy(k, o, i)` = ∂y_o/∂x_i
        let jy: Box<dyn Fn(usize, usize, usize) -> E> = match self.backend {
            NetworkBackend::Fused => {
                // the cotangent pass with the unit rows of every output: rows `[n·out, in]`
                let x = Array2::from_shape_vec((n, din), x).expect("input");
                let eye = Array2::from_shape_fn((n * ds, ds), |(r, o)| {
                    if r % ds == o {
                        E::one()
                    } else {
                        E::zero()
                    }
                });
                let rows = self.net_jacobian_rows_fused(x, &eye, ds);
                Box::new(move |k, o, i| rows[[k * ds + o, i]])
            }
            NetworkBackend::Dfdx => {
                let dev = Cpu::default();
                let x: Mat<E> = dev.tensor_from_vec(x, (n, din));
                let (_, t) = self.forward_pair(&self.tensors(), x, Some(InputTangent::Identity));
                let t = t.expect("a tangent was given").as_vec();
                Box::new(move |k, o, i| t[(k * din + i) * ds + o])
            }
        };
        let r = if self.is_residual() {
            E::one()
        } else {
            E::zero()
        };
        Ok(Array3::from_shape_fn((n, ds, din), |(k, o, i)| {
            let eye = if o == i { r } else { E::zero() };
            eye + c.std_out[o] * jy(k, o, i) / c.std_in[i]
        }))
    }
}

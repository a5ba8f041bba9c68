//! Multilayer perceptrons with runtime widths, built from dfdx tensor ops.
//!
//! Each hidden block is Linear → ELU(α = 1) → LayerNorm(ε = 1e-5, learnable gain/bias); the
//! output layer is Linear (identity), as DiffRL's `ActorStochasticMLP` and `CriticMLP`
//! (algorithms.md §1.1). dfdx's `nn` layers need compile-time widths, so the layers here are
//! plain tensors with `(usize, usize)` shapes (rust-stack.md).
//!
//! Gradients: the networks expose parameter gradients **and** the gradient with respect to
//! their input (the reverse sweep needs `∂/∂obs`). Two implementations share one flat
//! parameter vector and are selected per network by [`NetworkBackend`]:
//! - `Dfdx` (default): the network composed from dfdx ops, traced on a **leaky** tape (so the
//!   input gradient is kept, rust-stack.md); [`Mlp::dfdx_grad_of`] backpropagates any scalar
//!   built from the output, e.g. the surrogate `(y · seed).sum()`;
//! - `Fused`: a hand-written forward/backward over ndarray GEMMs with fused element-wise
//!   loops, ≈ 2.5× faster for a whole CartPole run (BENCHMARKS.md).
//!
//! The two are tested against each other (1e-12 in f64) and against finite differences.
//! Parameter gradients are accumulated into a flat vector laid out as [`Mlp::params`].
//!
//! The weight of layer k is stored as `[in_k, out_k]` (so `y = x·W + b`); this is the
//! transpose of PyTorch's `[out, in]`.

use dfdx::prelude::*;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};

/// Floating-point types the networks run in: `f32` for training, `f64` for gradient tests.
pub trait Float:
    Dtype
    + num_traits::Float
    + ndarray::LinalgScalar
    + Default
    + std::fmt::Debug
    + std::iter::Sum
    + Send
    + Sync
    + 'static
{
}
impl Float for f32 {}
impl Float for f64 {}

/// A runtime-shaped matrix on the CPU.
pub type Mat<E, T = NoneTape> = Tensor<(usize, usize), E, Cpu, T>;
/// A runtime-shaped vector on the CPU.
pub type Vector<E, T = NoneTape> = Tensor<(usize,), E, Cpu, T>;
/// The tape used for gradients.
pub type Traced<E> = OwnedTape<E, Cpu>;

/// LayerNorm epsilon (PyTorch default, DiffRL `CriticMLP`).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// How the Linear layers of a new network are initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinearInit {
    /// PyTorch's `nn.Linear` default: weights and biases U(−1/√fan_in, 1/√fan_in)
    /// (kaiming_uniform with a = √5). DiffRL's stochastic actor.
    TorchDefault,
    /// `nn.init.orthogonal_(W, gain)` with zero bias. DiffRL's critic (gain √2).
    Orthogonal { gain: f64 },
}

/// ELU with α = 1, composed from dfdx ops (dfdx has none):
/// `elu(x) = relu(x) + exp(min(x, 0)) − 1`. The clamp keeps `exp` from overflowing and makes
/// the derivative `1` for `x > 0` and `exp(x)` for `x ≤ 0` (continuous at 0).
pub fn elu<S: Shape, E: Float, T: Tape<E, Cpu> + Merge<T>>(
    x: Tensor<S, E, Cpu, T>,
) -> Tensor<S, E, Cpu, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let negative_part = x.retaped::<T>().clamp(f64::NEG_INFINITY, 0.0).exp() - E::one();
    x.relu() + negative_part
}

/// LayerNorm over the feature axis of `[n, d]` with gain `g` and bias `b`:
/// `y = g ⊙ (x − mean x) / sqrt(var x + ε) + b` (population variance, as PyTorch).
pub fn layer_norm<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    x: Mat<E, T>,
    gain: &Vector<E>,
    bias: &Vector<E>,
) -> Mat<E, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let shape = *x.shape();
    let xhat = x.normalize::<Axis<1>>(LAYER_NORM_EPS);
    xhat * gain.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape)
        + bias.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape)
}

/// `y = x·W + b` for `x: [n, in]`, `W: [in, out]`.
pub fn linear<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    x: Mat<E, T>,
    weight: &Mat<E>,
    bias: &Vector<E>,
) -> Mat<E, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let n = x.shape().0;
    let out = weight.shape().1;
    x.matmul(weight.retaped::<T>()) + bias.retaped::<T>().broadcast_like::<_, Axis<0>>(&(n, out))
}

/// Where one layer's parameters sit in the flat parameter vector.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LayerSlots {
    fan_in: usize,
    fan_out: usize,
    weight: usize,
    bias: usize,
    /// LayerNorm gain and bias offsets (hidden layers only).
    norm: Option<(usize, usize)>,
}

/// An MLP `dims[0] → dims[1] → … → dims[last]` with (Linear, ELU, LayerNorm) hidden blocks
/// and a Linear output.
///
/// The parameters live in one flat vector (layout of [`Mlp::named_params`]), which the
/// optimiser updates in place. Two implementations compute the same function and gradients:
/// - the **dfdx path** ([`Mlp::dfdx_forward_t`], [`Mlp::dfdx_grad_of`]): the network
///   composed from dfdx tensor ops and differentiated by dfdx's tape (also usable for losses
///   the fused path does not cover);
/// - the **fused path**: hand-written forward/backward over `ndarray` GEMMs with fused
///   element-wise loops.
///
/// [`Mlp::forward`], [`Mlp::vjp`] and [`Mlp::mse_grad`] run on the network's
/// [`NetworkBackend`]: `Dfdx` (default) or `Fused`. The split is for speed: at the critic's
/// minibatch of 512 × [64, 64] the dfdx tape costs ≈ 6 ms per step (≈ 48 element-wise ops,
/// each with an allocated gradient buffer), the fused path a fraction of that; SHAC takes 64
/// critic steps per epoch (BENCHMARKS.md compares whole training runs on both).
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp<E: Float> {
    dims: Vec<usize>,
    layers: Vec<LayerSlots>,
    params: Vec<E>,
    backend: NetworkBackend,
}

/// Which implementation computes a network's forward pass and gradients. Both compute the
/// same function (tested to 1e-12 in f64); they differ in speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkBackend {
    /// The network composed from dfdx tensor ops, differentiated by dfdx's tape.
    #[default]
    Dfdx,
    /// Hand-written forward/backward over ndarray GEMMs with fused element-wise loops.
    Fused,
}

/// One layer as dfdx tensors: weight, bias and, for hidden layers, LayerNorm gain and bias.
type DfdxLayer<E> = (Mat<E>, Vector<E>, Option<(Vector<E>, Vector<E>)>);

/// Activations of the fast forward pass that the backward pass needs.
struct ForwardCache<E> {
    /// Input of each layer `[n, fan_in]` (layer 0: the network input).
    inputs: Vec<Array2<E>>,
    /// ELU output `e = elu(x·W + b)` of each hidden layer (before LayerNorm).
    pre: Vec<Array2<E>>,
    /// Normalised activation x̂ of each hidden layer.
    xhat: Vec<Array2<E>>,
    /// `1 / sqrt(var + ε)` per row of each hidden layer.
    inv_std: Vec<Vec<E>>,
}

impl<E: Float> Mlp<E>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    /// A new network with hidden widths `hidden` between `input` and `output`, initialised
    /// with `init` from `rng` (LayerNorm gain 1, bias 0).
    pub fn new<R: Rng>(
        input: usize,
        hidden: &[usize],
        output: usize,
        init: LinearInit,
        rng: &mut R,
    ) -> Self {
        let mut dims = vec![input];
        dims.extend_from_slice(hidden);
        dims.push(output);
        let mut layers = Vec::new();
        let mut params: Vec<E> = Vec::new();
        for k in 0..dims.len() - 1 {
            let (fan_in, fan_out) = (dims[k], dims[k + 1]);
            // Generated in PyTorch's [out, in] layout, stored transposed.
            let (w_out_in, b) = match init {
                LinearInit::TorchDefault => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    let u = Uniform::new_inclusive(-bound, bound);
                    let w: Vec<f64> = (0..fan_out * fan_in).map(|_| u.sample(rng)).collect();
                    let b: Vec<f64> = (0..fan_out).map(|_| u.sample(rng)).collect();
                    (w, b)
                }
                LinearInit::Orthogonal { gain } => {
                    (orthogonal(fan_out, fan_in, gain, rng), vec![0.0; fan_out])
                }
            };
            let weight = params.len();
            params.resize(weight + fan_in * fan_out, E::zero());
            for o in 0..fan_out {
                for i in 0..fan_in {
                    params[weight + i * fan_out + o] =
                        E::from_f64(w_out_in[o * fan_in + i]).unwrap();
                }
            }
            let bias = params.len();
            params.extend(b.iter().map(|&x| E::from_f64(x).unwrap()));
            let norm = if k + 2 < dims.len() {
                let g = params.len();
                params.extend(std::iter::repeat_n(E::one(), fan_out));
                let beta = params.len();
                params.extend(std::iter::repeat_n(E::zero(), fan_out));
                Some((g, beta))
            } else {
                None
            };
            layers.push(LayerSlots {
                fan_in,
                fan_out,
                weight,
                bias,
                norm,
            });
        }
        Mlp {
            dims,
            layers,
            params,
            backend: NetworkBackend::default(),
        }
    }

    /// The backend that runs [`Mlp::forward`], [`Mlp::vjp`] and [`Mlp::mse_grad`].
    pub fn backend(&self) -> NetworkBackend {
        self.backend
    }

    /// Selects the backend (the parameters are shared by both).
    pub fn set_backend(&mut self, backend: NetworkBackend) {
        self.backend = backend;
    }

    /// Layer widths `[in, hidden…, out]`.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }
    /// Input width.
    pub fn input_dim(&self) -> usize {
        self.dims[0]
    }
    /// Output width.
    pub fn output_dim(&self) -> usize {
        *self.dims.last().unwrap()
    }
    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }
    /// The flat parameter vector (layout of [`Mlp::named_params`]).
    pub fn params(&self) -> &[E] {
        &self.params
    }
    /// The flat parameter vector, mutable (for optimisers and Polyak averaging).
    pub fn params_mut(&mut self) -> &mut [E] {
        &mut self.params
    }
    /// A copy of the flat parameter vector.
    pub fn params_flat(&self) -> Vec<E> {
        self.params.clone()
    }
    /// Overwrites all parameters from `flat`.
    pub fn set_params_flat(&mut self, flat: &[E]) {
        assert_eq!(
            flat.len(),
            self.params.len(),
            "Mlp::set_params_flat: length"
        );
        self.params.copy_from_slice(flat);
    }

    /// Every parameter tensor with a stable name, in the flat layout order:
    /// per layer k: `l{k}.weight` (`[in, out]`), `l{k}.bias`, and for hidden layers
    /// `l{k}.ln_gain`, `l{k}.ln_bias`.
    pub fn named_params(&self) -> Vec<(String, Vec<usize>, Vec<E>)> {
        let mut out = Vec::new();
        for (k, l) in self.layers.iter().enumerate() {
            let (i, o) = (l.fan_in, l.fan_out);
            out.push((
                format!("l{k}.weight"),
                vec![i, o],
                self.params[l.weight..l.weight + i * o].to_vec(),
            ));
            out.push((
                format!("l{k}.bias"),
                vec![o],
                self.params[l.bias..l.bias + o].to_vec(),
            ));
            if let Some((g, b)) = l.norm {
                out.push((
                    format!("l{k}.ln_gain"),
                    vec![o],
                    self.params[g..g + o].to_vec(),
                ));
                out.push((
                    format!("l{k}.ln_bias"),
                    vec![o],
                    self.params[b..b + o].to_vec(),
                ));
            }
        }
        out
    }

    fn weight(&self, l: &LayerSlots) -> ArrayView2<'_, E> {
        ArrayView2::from_shape(
            (l.fan_in, l.fan_out),
            &self.params[l.weight..l.weight + l.fan_in * l.fan_out],
        )
        .expect("weight slot")
    }

    /// Fast forward pass; with `cache` it keeps what [`Self::backward`] needs.
    fn forward_impl(&self, x: ArrayView2<E>, mut cache: Option<&mut ForwardCache<E>>) -> Array2<E> {
        let n = x.nrows();
        let eps = E::from_f64(LAYER_NORM_EPS).unwrap();
        let mut h = x.to_owned();
        for l in &self.layers {
            let b = &self.params[l.bias..l.bias + l.fan_out];
            let mut z = Array2::<E>::zeros((n, l.fan_out));
            for mut row in z.rows_mut() {
                row.as_slice_mut().expect("row").copy_from_slice(b);
            }
            general_mat_mul(E::one(), &h, &self.weight(l), E::one(), &mut z);
            let Some((g_off, beta_off)) = l.norm else {
                if let Some(c) = cache.as_deref_mut() {
                    c.inputs.push(h);
                }
                return z;
            };
            let gain = &self.params[g_off..g_off + l.fan_out];
            let beta = &self.params[beta_off..beta_off + l.fan_out];
            let d = l.fan_out;
            let inv_d = E::one() / E::from_usize(d).unwrap();
            // In place: z becomes e = ELU(z) (kept for the backward pass: ELU′ = 1 where
            // e > 0, else e + 1).
            let mut xhat = Array2::<E>::zeros((n, d));
            let mut out = Array2::<E>::zeros((n, d));
            let mut inv_std = vec![E::zero(); n];
            let zs = z.as_slice_mut().expect("contiguous");
            let xs_all = xhat.as_slice_mut().expect("contiguous");
            let os_all = out.as_slice_mut().expect("contiguous");
            for r in 0..n {
                let es = &mut zs[r * d..(r + 1) * d];
                let xs = &mut xs_all[r * d..(r + 1) * d];
                let os = &mut os_all[r * d..(r + 1) * d];
                let mut sum = E::zero();
                for e in es.iter_mut() {
                    if *e <= E::zero() {
                        *e = e.exp() - E::one();
                    }
                    sum += *e;
                }
                let mean = sum * inv_d;
                let mut var = E::zero();
                for (x, e) in xs.iter_mut().zip(es.iter()) {
                    *x = *e - mean;
                    var += *x * *x;
                }
                let is = E::one() / (var * inv_d + eps).sqrt();
                inv_std[r] = is;
                for j in 0..d {
                    xs[j] *= is;
                    os[j] = gain[j] * xs[j] + beta[j];
                }
            }
            if let Some(c) = cache.as_deref_mut() {
                c.inputs.push(h);
                c.pre.push(z);
                c.xhat.push(xhat);
                c.inv_std.push(inv_std);
            }
            h = out;
        }
        unreachable!("the last layer has no LayerNorm and returns above")
    }

    /// Fast backward pass from `dy = ∂L/∂y`: adds `∂L/∂θ` into `param_grad` and returns
    /// `∂L/∂x`.
    fn backward(
        &self,
        cache: &ForwardCache<E>,
        dy: Array2<E>,
        param_grad: &mut [E],
        need_input_grad: bool,
    ) -> Option<Array2<E>> {
        let mut dh = dy;
        for (k, l) in self.layers.iter().enumerate().rev() {
            let n = dh.nrows();
            let mut dz = dh;
            if let Some((g_off, beta_off)) = l.norm {
                // h = g ⊙ x̂ + β, x̂ = (e − mean e)·inv_std, e = elu(z).
                let gain = &self.params[g_off..g_off + l.fan_out];
                let d = l.fan_out;
                let inv_d = E::one() / E::from_usize(d).unwrap();
                let xhat = cache.xhat[k].as_slice().expect("contiguous");
                let act = cache.pre[k].as_slice().expect("contiguous");
                let inv_std = &cache.inv_std[k];
                let (head, tail) = param_grad.split_at_mut(beta_off);
                let dgain = &mut head[g_off..g_off + d];
                let dbeta = &mut tail[..d];
                let dz_all = dz.as_slice_mut().expect("contiguous");
                for r in 0..n {
                    let xr = &xhat[r * d..(r + 1) * d];
                    let er = &act[r * d..(r + 1) * d];
                    let dr = &mut dz_all[r * d..(r + 1) * d];
                    let (mut mean_dx, mut mean_dx_x) = (E::zero(), E::zero());
                    for j in 0..d {
                        let go = dr[j];
                        dgain[j] += go * xr[j];
                        dbeta[j] += go;
                        let dx = go * gain[j];
                        dr[j] = dx;
                        mean_dx += dx;
                        mean_dx_x += dx * xr[j];
                    }
                    mean_dx *= inv_d;
                    mean_dx_x *= inv_d;
                    let is = inv_std[r];
                    for j in 0..d {
                        let de = is * (dr[j] - mean_dx - xr[j] * mean_dx_x);
                        let e = er[j];
                        dr[j] = if e > E::zero() {
                            de
                        } else {
                            de * (e + E::one())
                        };
                    }
                }
            }
            // z = x·W + b.
            let x = &cache.inputs[k];
            {
                let mut dw = ArrayViewMut2::from_shape(
                    (l.fan_in, l.fan_out),
                    &mut param_grad[l.weight..l.weight + l.fan_in * l.fan_out],
                )
                .expect("weight slot");
                general_mat_mul(E::one(), &x.t(), &dz, E::one(), &mut dw);
            }
            let db = &mut param_grad[l.bias..l.bias + l.fan_out];
            for row in dz.rows() {
                for (g, v) in db.iter_mut().zip(row.iter()) {
                    *g += *v;
                }
            }
            if k == 0 && !need_input_grad {
                return None;
            }
            let mut dx = Array2::<E>::zeros((n, l.fan_in));
            general_mat_mul(E::one(), &dz, &self.weight(l).t(), E::zero(), &mut dx);
            dh = dx;
        }
        Some(dh)
    }

    fn cache(&self) -> ForwardCache<E> {
        let hidden = self.layers.len() - 1;
        ForwardCache {
            inputs: Vec::with_capacity(self.layers.len()),
            pre: Vec::with_capacity(hidden),
            xhat: Vec::with_capacity(hidden),
            inv_std: Vec::with_capacity(hidden),
        }
    }

    fn input_view<'a>(&self, x: &'a [E], n: usize, what: &str) -> ArrayView2<'a, E> {
        assert_eq!(x.len(), n * self.input_dim(), "{what}: input length");
        ArrayView2::from_shape((n, self.input_dim()), x).expect("input shape")
    }

    /// Forward pass of `n` rows `x` (row-major `[n, in]`); returns `[n, out]` row-major.
    pub fn forward(&self, x: &[E], n: usize) -> Vec<E> {
        if self.backend == NetworkBackend::Dfdx {
            self.input_view(x, n, "Mlp::forward");
            let xt = Cpu::default().tensor_from_vec(x.to_vec(), (n, self.input_dim()));
            return self.dfdx_forward_t(xt).as_vec();
        }
        let y = self.forward_impl(self.input_view(x, n, "Mlp::forward"), None);
        y.into_raw_vec_and_offset().0
    }

    /// Vector–Jacobian product: adds `(∂y/∂θ)ᵀ seed` into `param_grad` (layout of
    /// [`Mlp::params`]) and, if given, `(∂y/∂x)ᵀ seed` into `input_grad` (`[n, in]`).
    pub fn vjp(
        &self,
        x: &[E],
        n: usize,
        seed: &[E],
        param_grad: &mut [E],
        input_grad: Option<&mut [E]>,
    ) {
        assert_eq!(seed.len(), n * self.output_dim(), "Mlp::vjp: seed length");
        assert_eq!(param_grad.len(), self.num_params(), "Mlp::vjp: grad length");
        if self.backend == NetworkBackend::Dfdx {
            let seed_t = Cpu::default().tensor_from_vec(seed.to_vec(), (n, self.output_dim()));
            self.dfdx_grad_of(x, n, |y| (y * seed_t).sum(), param_grad, input_grad);
            return;
        }
        let mut cache = self.cache();
        self.forward_impl(self.input_view(x, n, "Mlp::vjp"), Some(&mut cache));
        let dy = Array2::from_shape_vec((n, self.output_dim()), seed.to_vec()).expect("seed shape");
        let dx = self.backward(&cache, dy, param_grad, input_grad.is_some());
        if let (Some(ig), Some(dx)) = (input_grad, dx) {
            assert_eq!(ig.len(), x.len(), "Mlp::vjp: input grad length");
            for (g, v) in ig.iter_mut().zip(dx.iter()) {
                *g += *v;
            }
        }
    }

    /// Mean squared error `mean((y − target)²)` over all outputs, with its parameter
    /// gradient added into `param_grad`; returns the loss.
    pub fn mse_grad(&self, x: &[E], n: usize, target: &[E], param_grad: &mut [E]) -> E {
        assert_eq!(
            target.len(),
            n * self.output_dim(),
            "Mlp::mse_grad: target length"
        );
        assert_eq!(
            param_grad.len(),
            self.num_params(),
            "Mlp::mse_grad: grad length"
        );
        if self.backend == NetworkBackend::Dfdx {
            let t = Cpu::default().tensor_from_vec(target.to_vec(), (n, self.output_dim()));
            return self.dfdx_grad_of(x, n, |y| dfdx::losses::mse_loss(y, t), param_grad, None);
        }
        let mut cache = self.cache();
        let mut y = self.forward_impl(self.input_view(x, n, "Mlp::mse_grad"), Some(&mut cache));
        let count = E::from_usize(target.len()).unwrap();
        let two = E::one() + E::one();
        let mut loss = E::zero();
        for (v, t) in y.iter_mut().zip(target) {
            let diff = *v - *t;
            loss += diff * diff;
            *v = two * diff / count;
        }
        self.backward(&cache, y, param_grad, false);
        loss / count
    }

    // ---- The dfdx reference path. ----

    fn dfdx_tensors(&self) -> Vec<DfdxLayer<E>> {
        let dev = Cpu::default();
        let vec = |off: usize, len: usize| -> Vector<E> {
            dev.tensor_from_vec(self.params[off..off + len].to_vec(), (len,))
        };
        self.layers
            .iter()
            .map(|l| {
                let w = dev.tensor_from_vec(
                    self.params[l.weight..l.weight + l.fan_in * l.fan_out].to_vec(),
                    (l.fan_in, l.fan_out),
                );
                let norm = l.norm.map(|(g, b)| (vec(g, l.fan_out), vec(b, l.fan_out)));
                (w, vec(l.bias, l.fan_out), norm)
            })
            .collect()
    }

    /// The network composed from dfdx ops, on any tape.
    pub fn dfdx_forward_t<T: Tape<E, Cpu> + Merge<T>>(&self, x: Mat<E, T>) -> Mat<E, T> {
        Self::dfdx_apply(&self.dfdx_tensors(), x)
    }

    fn dfdx_apply<T: Tape<E, Cpu> + Merge<T>>(tensors: &[DfdxLayer<E>], x: Mat<E, T>) -> Mat<E, T> {
        let mut h = x;
        for (w, b, norm) in tensors {
            h = linear(h, w, b);
            if let Some((g, beta)) = norm {
                h = layer_norm(elu(h), g, beta);
            }
        }
        h
    }

    /// dfdx reference: traced forward pass of `n` rows `x` from a leaky tape, then backward
    /// of the scalar `loss_fn(y)`. Adds `∂loss/∂θ` into `param_grad` and, if given,
    /// `∂loss/∂x` into `input_grad`. Returns the loss value.
    pub fn dfdx_grad_of<F>(
        &self,
        x: &[E],
        n: usize,
        loss_fn: F,
        param_grad: &mut [E],
        input_grad: Option<&mut [E]>,
    ) -> E
    where
        F: FnOnce(Mat<E, Traced<E>>) -> Tensor<(), E, Cpu, Traced<E>>,
    {
        self.input_view(x, n, "Mlp::dfdx_grad_of");
        assert_eq!(
            param_grad.len(),
            self.num_params(),
            "Mlp::dfdx_grad_of: grad length"
        );
        let dev = Cpu::default();
        let tensors = self.dfdx_tensors();
        let xt = dev.tensor_from_vec(x.to_vec(), (n, self.input_dim()));
        let y = Self::dfdx_apply(&tensors, xt.leaky_trace());
        let loss = loss_fn(y);
        let loss_value = loss.as_vec()[0];
        let grads = loss.backward();
        let mut add = |offset: usize, g: Vec<E>| {
            for (p, v) in param_grad[offset..offset + g.len()].iter_mut().zip(&g) {
                *p += *v;
            }
        };
        for ((w, b, norm), l) in tensors.iter().zip(&self.layers) {
            add(l.weight, grads.get(w).as_vec());
            add(l.bias, grads.get(b).as_vec());
            if let (Some((g, beta)), Some((g_off, b_off))) = (norm, l.norm) {
                add(g_off, grads.get(g).as_vec());
                add(b_off, grads.get(beta).as_vec());
            }
        }
        if let Some(ig) = input_grad {
            assert_eq!(ig.len(), x.len(), "Mlp::dfdx_grad_of: input grad length");
            for (g, v) in ig.iter_mut().zip(grads.get(&xt).as_vec()) {
                *g += v;
            }
        }
        loss_value
    }
}

/// `torch.nn.init.orthogonal_` for a `[rows, cols]` weight (PyTorch layout): a standard
/// normal matrix, transposed if `rows < cols`, QR-factorised (nalgebra), `Q` multiplied by
/// the signs of `diag(R)` (so the result is uniform over orthogonal matrices), transposed
/// back, times `gain`. Returns row-major `[rows, cols]`.
pub fn orthogonal<R: Rng>(rows: usize, cols: usize, gain: f64, rng: &mut R) -> Vec<f64> {
    let flat: Vec<f64> = (0..rows * cols)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    // `flat` is row-major [rows, cols]; nalgebra is column-major.
    let mut a = nalgebra::DMatrix::from_row_slice(rows, cols, &flat);
    let transposed = rows < cols;
    if transposed {
        a = a.transpose();
    }
    let qr = a.qr();
    let r = qr.r();
    let mut q = qr.q();
    for j in 0..q.ncols() {
        let sign = r[(j, j)].signum();
        q.column_mut(j).scale_mut(sign);
    }
    if transposed {
        q = q.transpose();
    }
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[i * cols + j] = gain * q[(i, j)];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use diff_core::gradcheck::{fd_gradient, rel_err};
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    fn elu_f64(x: f64) -> f64 {
        if x > 0.0 {
            x
        } else {
            x.exp() - 1.0
        }
    }

    #[test]
    fn elu_values_and_derivative() {
        let dev = Cpu::default();
        let xs = vec![-3.0, -1.0, -0.2, 0.0, 0.3, 2.5];
        let x: Vector<f64> = dev.tensor_from_vec(xs.clone(), (xs.len(),));
        let y = elu(x.leaky_trace());
        let values = y.as_vec();
        for (v, &xi) in values.iter().zip(&xs) {
            assert!((v - elu_f64(xi)).abs() < 1e-15, "elu({xi}) = {v}");
        }
        let g = y.sum::<(), _>().backward();
        let dx = g.get(&x).as_vec();
        for (d, &xi) in dx.iter().zip(&xs) {
            let expected = if xi > 0.0 { 1.0 } else { xi.exp() };
            assert!(
                (d - expected).abs() < 1e-15,
                "elu'({xi}) = {d}, want {expected}"
            );
            let fd = fd_gradient(&mut |p| elu_f64(p[0]), &[xi], 1e-4)[0];
            if xi != 0.0 {
                assert!((d - fd).abs() < 1e-8, "elu'({xi}) = {d}, fd {fd}");
            }
        }
        // Large inputs: no overflow of exp in the unused branch.
        let big: Vector<f64> = dev.tensor_from_vec(vec![800.0, -800.0], (2,));
        let v = elu(big).as_vec();
        assert_eq!(v, vec![800.0, -1.0]);
    }

    #[test]
    fn layer_norm_matches_direct_formula_and_fd() {
        let dev = Cpu::default();
        let (n, d) = (3, 5);
        let mut r = rng();
        let xs: Vec<f64> = (0..n * d).map(|_| r.gen_range(-2.0..2.0)).collect();
        let gs: Vec<f64> = (0..d).map(|_| r.gen_range(0.5..1.5)).collect();
        let bs: Vec<f64> = (0..d).map(|_| r.gen_range(-0.5..0.5)).collect();
        let seed: Vec<f64> = (0..n * d).map(|_| r.gen_range(-1.0..1.0)).collect();
        let direct = |x: &[f64]| -> Vec<f64> {
            let mut out = vec![0.0; n * d];
            for i in 0..n {
                let row = &x[i * d..(i + 1) * d];
                let mean = row.iter().sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
                for j in 0..d {
                    out[i * d + j] =
                        gs[j] * (row[j] - mean) / (var + LAYER_NORM_EPS).sqrt() + bs[j];
                }
            }
            out
        };
        let x: Mat<f64> = dev.tensor_from_vec(xs.clone(), (n, d));
        let g: Vector<f64> = dev.tensor_from_vec(gs.clone(), (d,));
        let b: Vector<f64> = dev.tensor_from_vec(bs.clone(), (d,));
        let y = layer_norm(x.leaky_trace(), &g, &b);
        let err = rel_err(&y.as_vec(), &direct(&xs), 1e-12);
        assert!(err < 1e-13, "forward {err}");
        let seed_t: Mat<f64> = dev.tensor_from_vec(seed.clone(), (n, d));
        let grads = (y * seed_t).sum::<(), _>().backward();
        let analytic = grads.get(&x).as_vec();
        let fd = fd_gradient(
            &mut |p| direct(p).iter().zip(&seed).map(|(a, b)| a * b).sum(),
            &xs,
            1e-4,
        );
        let err = rel_err(&analytic, &fd, 1e-12);
        assert!(err < 1e-8, "input gradient {err}: {analytic:?} vs {fd:?}");
        let dg = grads.get(&g).as_vec();
        let fd_g: Vec<f64> = (0..d)
            .map(|j| {
                // ∂/∂g_j Σ seed ⊙ y = Σ_i seed_ij · x̂_ij = Σ_i seed_ij (y_ij − b_j)/g_j
                let y0 = direct(&xs);
                (0..n)
                    .map(|i| seed[i * d + j] * (y0[i * d + j] - bs[j]) / gs[j])
                    .sum()
            })
            .collect();
        assert!(rel_err(&dg, &fd_g, 1e-12) < 1e-10);
    }

    /// Param and input gradients of a whole MLP against fourth-order central differences, in
    /// f64, through both the surrogate VJP and the MSE.
    #[test]
    fn mlp_gradients_match_finite_differences() {
        for init in [
            LinearInit::TorchDefault,
            LinearInit::Orthogonal { gain: 2f64.sqrt() },
        ] {
            let mut r = rng();
            let (n, din, dout) = (4, 3, 2);
            let mut net: Mlp<f64> = Mlp::new(din, &[6, 5], dout, init, &mut r);
            // Non-trivial LayerNorm affine parameters.
            let mut p0 = net.params_flat();
            for v in p0.iter_mut() {
                *v += r.gen_range(-0.1..0.1);
            }
            net.set_params_flat(&p0);
            let x: Vec<f64> = (0..n * din).map(|_| r.gen_range(-1.5..1.5)).collect();
            let seed: Vec<f64> = (0..n * dout).map(|_| r.gen_range(-1.0..1.0)).collect();
            let mut pg = vec![0.0; net.num_params()];
            let mut ig = vec![0.0; n * din];
            net.vjp(&x, n, &seed, &mut pg, Some(&mut ig));
            let dot = |y: Vec<f64>| y.iter().zip(&seed).map(|(a, b)| a * b).sum::<f64>();
            let fd_x = fd_gradient(&mut |xp| dot(net.forward(xp, n)), &x, 1e-4);
            let e = rel_err(&ig, &fd_x, 1e-10);
            assert!(e < 1e-7, "input grad {init:?}: {e}");
            let mut probe = net.clone();
            let fd_p = fd_gradient(
                &mut |pp| {
                    probe.set_params_flat(pp);
                    dot(probe.forward(&x, n))
                },
                &p0,
                1e-4,
            );
            let e = rel_err(&pg, &fd_p, 1e-10);
            assert!(e < 1e-7, "param grad {init:?}: {e}");

            // Accumulation: a second call adds the same amount again.
            let pg_once = pg.clone();
            net.vjp(&x, n, &seed, &mut pg, None);
            for (a, b) in pg.iter().zip(&pg_once) {
                assert!((a - 2.0 * b).abs() < 1e-12);
            }

            // MSE on a single-output head.
            let critic: Mlp<f64> = Mlp::new(din, &[5], 1, init, &mut r);
            let target: Vec<f64> = (0..n).map(|_| r.gen_range(-1.0..1.0)).collect();
            let mut cg = vec![0.0; critic.num_params()];
            let loss = critic.mse_grad(&x, n, &target, &mut cg);
            let mse = |net: &Mlp<f64>| {
                let y = net.forward(&x, n);
                y.iter()
                    .zip(&target)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    / n as f64
            };
            assert!((loss - mse(&critic)).abs() < 1e-14);
            let mut probe = critic.clone();
            let c0 = critic.params_flat();
            let fd_c = fd_gradient(
                &mut |pp| {
                    probe.set_params_flat(pp);
                    mse(&probe)
                },
                &c0,
                1e-4,
            );
            assert!(rel_err(&cg, &fd_c, 1e-10) < 1e-7);
        }
    }

    /// The hand-written fast path and the dfdx-composed reference give the same outputs,
    /// parameter gradients and input gradients (f64, to rounding).
    #[test]
    fn fast_path_matches_dfdx_reference() {
        let mut r = rng();
        for (hidden, dout) in [(vec![7, 5], 3), (vec![9], 1), (vec![], 2)] {
            let (n, din) = (6, 4);
            let mut net: Mlp<f64> = Mlp::new(din, &hidden, dout, LinearInit::TorchDefault, &mut r);
            for p in net.params_mut() {
                *p += r.gen_range(-0.2..0.2);
            }
            let x: Vec<f64> = (0..n * din).map(|_| r.gen_range(-2.0..2.0)).collect();
            let seed: Vec<f64> = (0..n * dout).map(|_| r.gen_range(-1.0..1.0)).collect();
            let y_ref = net
                .dfdx_forward_t(Cpu::default().tensor_from_vec(x.clone(), (n, din)))
                .as_vec();
            assert!(
                rel_err(&net.forward(&x, n), &y_ref, 1e-12) < 1e-13,
                "{hidden:?} forward"
            );

            let (mut pg, mut ig) = (vec![0.0; net.num_params()], vec![0.0; n * din]);
            net.vjp(&x, n, &seed, &mut pg, Some(&mut ig));
            let (mut pg_ref, mut ig_ref) = (vec![0.0; net.num_params()], vec![0.0; n * din]);
            let seed_t: Mat<f64> = Cpu::default().tensor_from_vec(seed.clone(), (n, dout));
            net.dfdx_grad_of(
                &x,
                n,
                |y| (y * seed_t).sum::<(), _>(),
                &mut pg_ref,
                Some(&mut ig_ref),
            );
            assert!(rel_err(&pg, &pg_ref, 1e-12) < 1e-12, "{hidden:?} param vjp");
            assert!(rel_err(&ig, &ig_ref, 1e-12) < 1e-12, "{hidden:?} input vjp");

            let target: Vec<f64> = (0..n * dout).map(|_| r.gen_range(-1.0..1.0)).collect();
            let mut mg = vec![0.0; net.num_params()];
            let loss = net.mse_grad(&x, n, &target, &mut mg);
            let mut mg_ref = vec![0.0; net.num_params()];
            let target_t: Mat<f64> = Cpu::default().tensor_from_vec(target.clone(), (n, dout));
            let loss_ref = net.dfdx_grad_of(
                &x,
                n,
                |y| (y - target_t).square().mean::<(), _>(),
                &mut mg_ref,
                None,
            );
            assert!((loss - loss_ref).abs() < 1e-13);
            assert!(rel_err(&mg, &mg_ref, 1e-12) < 1e-12, "{hidden:?} mse grad");
        }
    }

    #[test]
    fn f32_network_agrees_with_f64() {
        let mut r = rng();
        let net64: Mlp<f64> = Mlp::new(3, &[8, 8], 2, LinearInit::TorchDefault, &mut r);
        let mut net32: Mlp<f32> = Mlp::new(3, &[8, 8], 2, LinearInit::TorchDefault, &mut r);
        let p: Vec<f32> = net64.params_flat().iter().map(|&v| v as f32).collect();
        net32.set_params_flat(&p);
        let x: Vec<f64> = (0..12).map(|_| r.gen_range(-1.0..1.0)).collect();
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let y64 = net64.forward(&x, 4);
        let y32 = net32.forward(&x32, 4);
        for (a, b) in y64.iter().zip(&y32) {
            assert!((a - *b as f64).abs() < 1e-5);
        }
    }

    #[test]
    fn initialisations_follow_pytorch() {
        let mut r = rng();
        // Orthogonal: for W [out, in] with out ≤ in the rows are orthonormal × gain; with
        // out > in the columns are.
        for (rows, cols) in [(4, 9), (9, 4), (6, 6)] {
            let gain = 2f64.sqrt();
            let w = orthogonal(rows, cols, gain, &mut r);
            let m = nalgebra::DMatrix::from_row_slice(rows, cols, &w) / gain;
            let gram = if rows <= cols {
                &m * m.transpose()
            } else {
                m.transpose() * &m
            };
            let eye = nalgebra::DMatrix::<f64>::identity(gram.nrows(), gram.ncols());
            assert!((gram - eye).norm() < 1e-12, "{rows}×{cols}");
        }
        let critic: Mlp<f32> = Mlp::new(
            5,
            &[64, 64],
            1,
            LinearInit::Orthogonal { gain: 2f64.sqrt() },
            &mut r,
        );
        for (name, _, data) in critic.named_params() {
            if name.ends_with(".bias") && !name.contains("ln") {
                assert!(data.iter().all(|&v| v == 0.0), "{name}");
            }
            if name.ends_with("ln_gain") {
                assert!(data.iter().all(|&v| v == 1.0));
            }
        }
        let actor: Mlp<f32> = Mlp::new(5, &[64, 64], 1, LinearInit::TorchDefault, &mut r);
        let params = actor.named_params();
        let (_, shape, w0) = &params[0];
        assert_eq!(shape, &vec![5, 64]);
        let bound = 1.0 / 5f32.sqrt();
        assert!(w0.iter().all(|v| v.abs() <= bound));
        // Roughly uniform: the largest magnitude is close to the bound.
        assert!(w0.iter().fold(0f32, |m, v| m.max(v.abs())) > 0.9 * bound);
        let (_, _, w1) = &params[4];
        let bound1 = 1.0 / 64f32.sqrt();
        assert!(w1.iter().all(|v| v.abs() <= bound1));
        assert_eq!(
            actor.num_params(),
            5 * 64 + 64 + 128 + 64 * 64 + 64 + 128 + 64 + 1
        );
    }
}

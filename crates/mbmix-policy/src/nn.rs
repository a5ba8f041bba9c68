//! Multilayer perceptrons with runtime widths, built from dfdx tensor ops.
//!
//! Each hidden block is Linear → ELU(α = 1) → LayerNorm(ε = 1e-5, learnable gain/bias); the
//! output layer is Linear (identity), as DiffRL's `ActorStochasticMLP` and `CriticMLP`
//! (algorithms.md §1.1). dfdx's `nn` layers need compile-time widths, so the layers here are
//! plain tensors with `(usize, usize)` shapes (rust-stack.md).
//!
//! Gradients: [`Mlp::grad_of`] runs a traced forward pass from a **leaky** tape on the input
//! (so the input gradient is kept, rust-stack.md) and backpropagates a scalar built from the
//! output by the caller: `(y · seed).sum()` for a vector–Jacobian product, an MSE for the
//! critic. Parameter gradients are accumulated into a flat vector laid out as
//! [`Mlp::params_flat`].
//!
//! The weight of layer k is stored as `[in_k, out_k]` (so `y = x·W + b`); this is the
//! transpose of PyTorch's `[out, in]`.

use dfdx::prelude::*;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal, Uniform};

/// Floating-point types the networks run in: `f32` for training, `f64` for gradient tests.
pub trait Float:
    Dtype + num_traits::Float + Default + std::fmt::Debug + std::iter::Sum + Send + Sync + 'static
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

/// An MLP `dims[0] → dims[1] → … → dims[last]` with (Linear, ELU, LayerNorm) hidden blocks
/// and a Linear output.
#[derive(Clone, Debug)]
pub struct Mlp<E: Float> {
    dev: Cpu,
    dims: Vec<usize>,
    weights: Vec<Mat<E>>,
    biases: Vec<Vector<E>>,
    ln_gains: Vec<Vector<E>>,
    ln_biases: Vec<Vector<E>>,
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
        let dev = Cpu::default();
        let mut dims = vec![input];
        dims.extend_from_slice(hidden);
        dims.push(output);
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        let mut ln_gains = Vec::new();
        let mut ln_biases = Vec::new();
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
            let mut w_in_out = vec![E::zero(); fan_in * fan_out];
            for o in 0..fan_out {
                for i in 0..fan_in {
                    w_in_out[i * fan_out + o] = E::from_f64(w_out_in[o * fan_in + i]).unwrap();
                }
            }
            weights.push(dev.tensor_from_vec(w_in_out, (fan_in, fan_out)));
            biases.push(dev.tensor_from_vec(
                b.iter().map(|&x| E::from_f64(x).unwrap()).collect(),
                (fan_out,),
            ));
            if k + 2 < dims.len() {
                ln_gains.push(dev.tensor_from_vec(vec![E::one(); fan_out], (fan_out,)));
                ln_biases.push(dev.tensor_from_vec(vec![E::zero(); fan_out], (fan_out,)));
            }
        }
        Mlp {
            dev,
            dims,
            weights,
            biases,
            ln_gains,
            ln_biases,
        }
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

    /// Forward pass on any tape.
    pub fn forward_t<T: Tape<E, Cpu> + Merge<T>>(&self, x: Mat<E, T>) -> Mat<E, T> {
        let last = self.weights.len() - 1;
        let mut h = x;
        for k in 0..last {
            h = linear(h, &self.weights[k], &self.biases[k]);
            h = elu(h);
            h = layer_norm(h, &self.ln_gains[k], &self.ln_biases[k]);
        }
        linear(h, &self.weights[last], &self.biases[last])
    }

    /// Untraced forward pass of `n` rows `x` (row-major `[n, in]`); returns `[n, out]`.
    pub fn forward(&self, x: &[E], n: usize) -> Vec<E> {
        assert_eq!(x.len(), n * self.input_dim(), "Mlp::forward: input length");
        let xt = self.dev.tensor_from_vec(x.to_vec(), (n, self.input_dim()));
        self.forward_t(xt).as_vec()
    }

    /// Traced forward pass of `n` rows `x`, then backward of the scalar `loss_fn(y)`.
    ///
    /// Adds `∂loss/∂θ` into `param_grad` (layout of [`Mlp::params_flat`]) and, if given, adds
    /// `∂loss/∂x` into `input_grad` (row-major `[n, in]`). Returns the loss value.
    pub fn grad_of<F>(
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
        assert_eq!(x.len(), n * self.input_dim(), "Mlp::grad_of: input length");
        assert_eq!(
            param_grad.len(),
            self.num_params(),
            "Mlp::grad_of: grad length"
        );
        let xt = self.dev.tensor_from_vec(x.to_vec(), (n, self.input_dim()));
        let y = self.forward_t(xt.leaky_trace());
        let loss = loss_fn(y);
        let loss_value = loss.as_vec()[0];
        let grads = loss.backward();
        let mut offset = 0;
        let mut add = |t: Vec<E>| {
            for (g, v) in param_grad[offset..offset + t.len()].iter_mut().zip(&t) {
                *g += *v;
            }
            offset += t.len();
        };
        for k in 0..self.weights.len() {
            add(grads.get(&self.weights[k]).as_vec());
            add(grads.get(&self.biases[k]).as_vec());
            if k < self.ln_gains.len() {
                add(grads.get(&self.ln_gains[k]).as_vec());
                add(grads.get(&self.ln_biases[k]).as_vec());
            }
        }
        if let Some(ig) = input_grad {
            assert_eq!(ig.len(), x.len(), "Mlp::grad_of: input grad length");
            for (g, v) in ig.iter_mut().zip(grads.get(&xt).as_vec()) {
                *g += v;
            }
        }
        loss_value
    }

    /// Vector–Jacobian product: adds `(∂y/∂θ)ᵀ seed` into `param_grad` and, if given,
    /// `(∂y/∂x)ᵀ seed` into `input_grad`, through the surrogate `sum(y ⊙ seed)`.
    pub fn vjp(
        &self,
        x: &[E],
        n: usize,
        seed: &[E],
        param_grad: &mut [E],
        input_grad: Option<&mut [E]>,
    ) {
        assert_eq!(seed.len(), n * self.output_dim(), "Mlp::vjp: seed length");
        let seed_t = self
            .dev
            .tensor_from_vec(seed.to_vec(), (n, self.output_dim()));
        self.grad_of(
            x,
            n,
            |y| (y * seed_t).sum::<(), _>(),
            param_grad,
            input_grad,
        );
    }

    /// Mean squared error `mean((y − target)²)` of a single-output network and its
    /// parameter gradient (added into `param_grad`); returns the loss.
    pub fn mse_grad(&self, x: &[E], n: usize, target: &[E], param_grad: &mut [E]) -> E {
        assert_eq!(
            target.len(),
            n * self.output_dim(),
            "Mlp::mse_grad: target length"
        );
        let target_t = self
            .dev
            .tensor_from_vec(target.to_vec(), (n, self.output_dim()));
        self.grad_of(
            x,
            n,
            |y| (y - target_t).square().mean::<(), _>(),
            param_grad,
            None,
        )
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.tensors().map(|(_, t)| t.len()).sum()
    }

    /// Every parameter tensor with a stable name, in the flat layout order:
    /// per layer k: `l{k}.weight` (`[in, out]`), `l{k}.bias`, and for hidden layers
    /// `l{k}.ln_gain`, `l{k}.ln_bias`.
    pub fn named_params(&self) -> Vec<(String, Vec<usize>, Vec<E>)> {
        self.tensors()
            .map(|(name, t)| (name, t.shape, t.data))
            .collect()
    }

    fn tensors(&self) -> impl Iterator<Item = (String, TensorData<E>)> + '_ {
        (0..self.weights.len()).flat_map(move |k| {
            let w = &self.weights[k];
            let mut v = vec![
                (
                    format!("l{k}.weight"),
                    TensorData {
                        shape: vec![w.shape().0, w.shape().1],
                        data: w.as_vec(),
                    },
                ),
                (format!("l{k}.bias"), TensorData::vector(&self.biases[k])),
            ];
            if k < self.ln_gains.len() {
                v.push((
                    format!("l{k}.ln_gain"),
                    TensorData::vector(&self.ln_gains[k]),
                ));
                v.push((
                    format!("l{k}.ln_bias"),
                    TensorData::vector(&self.ln_biases[k]),
                ));
            }
            v
        })
    }

    /// All parameters concatenated in the layout of [`Mlp::named_params`].
    pub fn params_flat(&self) -> Vec<E> {
        let mut out = Vec::with_capacity(self.num_params());
        self.write_params_into(&mut out);
        out
    }

    /// Appends all parameters to `out` (see [`Mlp::params_flat`]).
    pub fn write_params_into(&self, out: &mut Vec<E>) {
        for k in 0..self.weights.len() {
            out.extend(self.weights[k].as_vec());
            out.extend(self.biases[k].as_vec());
            if k < self.ln_gains.len() {
                out.extend(self.ln_gains[k].as_vec());
                out.extend(self.ln_biases[k].as_vec());
            }
        }
    }

    /// Overwrites all parameters from `flat` (layout of [`Mlp::params_flat`]).
    pub fn set_params_flat(&mut self, flat: &[E]) {
        assert_eq!(
            flat.len(),
            self.num_params(),
            "Mlp::set_params_flat: length"
        );
        let mut offset = 0;
        let mut take = |len: usize| {
            let s = &flat[offset..offset + len];
            offset += len;
            s
        };
        for k in 0..self.weights.len() {
            let len = self.weights[k].shape().num_elements();
            self.weights[k].copy_from(take(len));
            let len = self.biases[k].shape().num_elements();
            self.biases[k].copy_from(take(len));
            if k < self.ln_gains.len() {
                let len = self.ln_gains[k].shape().num_elements();
                self.ln_gains[k].copy_from(take(len));
                let len = self.ln_biases[k].shape().num_elements();
                self.ln_biases[k].copy_from(take(len));
            }
        }
    }
}

struct TensorData<E> {
    shape: Vec<usize>,
    data: Vec<E>,
}

impl<E> TensorData<E> {
    fn len(&self) -> usize {
        self.data.len()
    }
}

impl<E: Float> TensorData<E>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    fn vector(t: &Vector<E>) -> Self {
        TensorData {
            shape: vec![t.shape().0],
            data: t.as_vec(),
        }
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

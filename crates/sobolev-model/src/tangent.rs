//! Network layers on (value, tangent-matrix) pairs, written with ordinary dfdx ops.
//!
//! A value is a batch `[n, d]`; its tangent is a batch of tangent **rows** `[n, c, d]`: row
//! `j` of sample `i` is the directional derivative of the sample's activation along input
//! direction `j`. Every rule below is the layer's JVP (algorithms.md §3.5):
//! - Linear `z = x·W + b` → `ż = ẋ·W`;
//! - activation `e = σ(z)` → `ė = σ′(z) ⊙ ż` (ELU: `σ′(z) = exp(min(z, 0))`; tanh:
//!   `1 − tanh²z`);
//! - LayerNorm `x̂ = (e − mean e)/s`, `s = sqrt(var e + ε)`, `h = g ⊙ x̂ + b` →
//!   `x̂̇ = (ė − mean ė − x̂·mean(x̂ ⊙ ė)) / s`, `ḣ = g ⊙ x̂̇`.
//!
//! Because the tangent is an ordinary traced tensor, a loss on `J_f·V` backpropagates to the
//! weights with one first-order reverse pass (reverse-over-forward, no double backward).
//!
//! **Tape discipline** (rust-stack.md: a traced value that never reaches the loss silently
//! drops the part of the tape that produced it, giving wrong weight gradients): every
//! primal intermediate carries its tape along the primal path only, which always ends in the
//! value term of the loss; the tangent path uses `retaped` copies of primal values (same
//! tensor id, empty tape), so its gradient contributions flow into the primal tape's
//! records. The value term is therefore always part of the loss, even with β = 0.

use crate::config::Activation;
use dfdx::prelude::*;

/// Floating-point types the model runs in: `f32` for training, `f64` for gradient tests.
pub trait Float:
    Dtype
    + num_traits::Float
    + num_traits::FromPrimitive
    + Default
    + std::fmt::Debug
    + std::iter::Sum
    + Send
    + Sync
    + ndarray::LinalgScalar
    + 'static
{
}
impl Float for f32 {}
impl Float for f64 {}

/// A runtime-shaped matrix on the CPU.
pub type Mat<E, T = NoneTape> = Tensor<(usize, usize), E, Cpu, T>;
/// A runtime-shaped vector on the CPU.
pub type Vector<E, T = NoneTape> = Tensor<(usize,), E, Cpu, T>;
/// A runtime-shaped rank-3 tensor `[n, c, d]` (a batch of tangent rows).
pub type Cube<E, T = NoneTape> = Tensor<(usize, usize, usize), E, Cpu, T>;

/// LayerNorm epsilon (PyTorch default, as the actor and critic).
pub const LAYER_NORM_EPS: f64 = 1e-5;

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

/// Tangent of [`linear`]: `ẋ·W` for tangent rows `[n, c, in]`, as one `[n·c, in]` GEMM.
pub fn linear_tangent<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    t: Cube<E, T>,
    weight: &Mat<E>,
) -> Cube<E, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let (n, c, d) = *t.shape();
    let out = weight.shape().1;
    t.reshape_like(&(n * c, d))
        .matmul(weight.retaped::<T>())
        .reshape_like(&(n, c, out))
}

/// The tangent of `linear` applied to the identity: every sample's tangent rows are the rows
/// of `W` (`[in, out]`), i.e. `∂z/∂x` for all input directions at once.
pub fn linear_identity_tangent<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    n: usize,
    weight: &Mat<E>,
) -> Cube<E, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let (i, o) = *weight.shape();
    weight
        .retaped::<T>()
        .broadcast_like::<_, Axis<0>>(&(n, i, o))
}

/// ELU with α = 1 from dfdx ops (dfdx has none): `relu(x) + exp(min(x, 0)) − 1`.
pub fn elu<S: Shape, E: Float, T: Tape<E, Cpu> + Merge<T>>(
    x: Tensor<S, E, Cpu, T>,
) -> Tensor<S, E, Cpu, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let negative_part = x.retaped::<T>().clamp(f64::NEG_INFINITY, 0.0).exp() - E::one();
    x.relu() + negative_part
}

/// The activation.
pub fn activate<S: Shape, E: Float, T: Tape<E, Cpu> + Merge<T>>(
    x: Tensor<S, E, Cpu, T>,
    act: Activation,
) -> Tensor<S, E, Cpu, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    match act {
        Activation::Elu => elu(x),
        Activation::Tanh => x.tanh(),
    }
}

/// The activation's derivative σ′(z), itself differentiable in z (its gradient is what makes
/// the Jacobian term depend on the pre-activations): ELU `exp(min(z, 0))` (1 for z > 0, eˣ
/// below, continuous at 0), tanh `1 − tanh²z`.
pub fn activation_derivative<S: Shape, E: Float, T: Tape<E, Cpu> + Merge<T>>(
    z: Tensor<S, E, Cpu, T>,
    act: Activation,
) -> Tensor<S, E, Cpu, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    match act {
        Activation::Elu => z.clamp(f64::NEG_INFINITY, 0.0).exp(),
        Activation::Tanh => z.tanh().square().negate() + E::one(),
    }
}

/// Activation on a (value, tangent) pair.
pub fn activate_pair<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    z: Mat<E, T>,
    tangent: Option<Cube<E, T>>,
    act: Activation,
) -> (Mat<E, T>, Option<Cube<E, T>>)
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let tangent = tangent.map(|t| {
        let shape = *t.shape();
        let d = activation_derivative(z.retaped::<T>(), act);
        t * d.broadcast_like::<_, Axis<1>>(&shape)
    });
    (activate(z, act), tangent)
}

/// LayerNorm over the features of `[n, d]` with gain `g` and bias `b` (population variance,
/// as PyTorch) on a (value, tangent) pair.
pub fn layer_norm_pair<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    x: Mat<E, T>,
    tangent: Option<Cube<E, T>>,
    gain: &Vector<E>,
    bias: &Vector<E>,
) -> (Mat<E, T>, Option<Cube<E, T>>)
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let shape = *x.shape();
    let mean = x.retaped::<T>().mean::<(usize,), Axis<1>>();
    let centered = x - mean.broadcast_like::<_, Axis<1>>(&shape);
    let var = centered.retaped::<T>().square().mean::<(usize,), Axis<1>>();
    let std = (var + E::from_f64(LAYER_NORM_EPS).unwrap()).sqrt();
    let std_for_tangent = std.retaped::<T>();
    let xhat = centered / std.broadcast_like::<_, Axis<1>>(&shape);
    let xhat_for_tangent = xhat.retaped::<T>();
    let value = xhat * gain.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape)
        + bias.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape);
    let tangent = tangent.map(|t| {
        let ts = *t.shape();
        let mean_t = t
            .retaped::<T>()
            .mean::<(usize, usize), Axis<2>>()
            .broadcast_like::<_, Axis<2>>(&ts);
        let xb = xhat_for_tangent.broadcast_like::<_, Axis<1>>(&ts);
        let mean_xt = (xb.retaped::<T>() * t.retaped::<T>())
            .mean::<(usize, usize), Axis<2>>()
            .broadcast_like::<_, Axis<2>>(&ts);
        let num = t - mean_t - xb * mean_xt;
        let xhat_dot = num / std_for_tangent.broadcast_like::<_, Axes2<1, 2>>(&ts);
        xhat_dot * gain.retaped::<T>().broadcast_like::<_, Axes2<0, 1>>(&ts)
    });
    (value, tangent)
}

/// Cotangent of [`linear`] (reverse mode, written with ordinary ops): `c·Wᵀ` for cotangent
/// rows `[n, c, out]`, as one `[n·c, out]` GEMM.
pub fn linear_cotangent<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    c: Cube<E, T>,
    weight: &Mat<E>,
) -> Cube<E, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let (n, k, out) = *c.shape();
    let fan_in = weight.shape().0;
    c.reshape_like(&(n * k, out))
        .matmul(weight.retaped::<T>().permute::<_, Axes2<1, 0>>())
        .reshape_like(&(n, k, fan_in))
}

/// What [`layer_norm_saving`] keeps for the reverse pass: `x̂` and `s`, as tape-free copies
/// (the tape discipline of this module: their gradient contributions flow into the primal
/// tape's records by tensor id).
pub struct LayerNormSaved<E: Float> {
    /// Normalised activations `[n, d]`.
    pub xhat: Mat<E>,
    /// Standard deviations `[n]`.
    pub std: Vector<E>,
}

/// [`layer_norm_pair`]'s value, also returning `x̂` and `s` for [`layer_norm_cotangent`].
pub fn layer_norm_saving<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    x: Mat<E, T>,
    gain: &Vector<E>,
    bias: &Vector<E>,
) -> (Mat<E, T>, LayerNormSaved<E>)
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let shape = *x.shape();
    let mean = x.retaped::<T>().mean::<(usize,), Axis<1>>();
    let centered = x - mean.broadcast_like::<_, Axis<1>>(&shape);
    let var = centered.retaped::<T>().square().mean::<(usize,), Axis<1>>();
    let std = (var + E::from_f64(LAYER_NORM_EPS).unwrap()).sqrt();
    let saved_std = std.retaped::<NoneTape>();
    let xhat = centered / std.broadcast_like::<_, Axis<1>>(&shape);
    let saved = LayerNormSaved {
        xhat: xhat.retaped::<NoneTape>(),
        std: saved_std,
    };
    let value = xhat * gain.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape)
        + bias.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape);
    (value, saved)
}

/// Cotangent of LayerNorm: from rows `c_h` `[n, k, d]` on `h = g ⊙ x̂ + b` to rows on its
/// input. The Jacobian of `x̂` is symmetric (`(I − 11ᵀ/d − x̂x̂ᵀ/d)/s`), so with
/// `t = g ⊙ c_h` the rule is the tangent's: `(t − mean t − x̂·mean(x̂ ⊙ t)) / s`.
pub fn layer_norm_cotangent<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    c: Cube<E, T>,
    saved: &LayerNormSaved<E>,
    gain: &Vector<E>,
) -> Cube<E, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let ts = *c.shape();
    let t = c * gain.retaped::<T>().broadcast_like::<_, Axes2<0, 1>>(&ts);
    let mean_t = t
        .retaped::<T>()
        .mean::<(usize, usize), Axis<2>>()
        .broadcast_like::<_, Axis<2>>(&ts);
    let xb = saved.xhat.retaped::<T>().broadcast_like::<_, Axis<1>>(&ts);
    let mean_xt = (xb.retaped::<T>() * t.retaped::<T>())
        .mean::<(usize, usize), Axis<2>>()
        .broadcast_like::<_, Axis<2>>(&ts);
    let num = t - mean_t - xb * mean_xt;
    num / saved
        .std
        .retaped::<T>()
        .broadcast_like::<_, Axes2<1, 2>>(&ts)
}

/// Cotangent of the activation: `c ⊙ σ′(z)` for rows `[n, k, d]` and pre-activations `z`
/// `[n, d]` (a tape-free copy; see [`activation_derivative`]).
pub fn activation_cotangent<E: Float, T: Tape<E, Cpu> + Merge<T>>(
    c: Cube<E, T>,
    z: &Mat<E>,
    act: Activation,
) -> Cube<E, T>
where
    Cpu: dfdx::tensor_ops::Device<E>,
{
    let shape = *c.shape();
    let d = activation_derivative(z.retaped::<T>(), act);
    c * d.broadcast_like::<_, Axis<1>>(&shape)
}

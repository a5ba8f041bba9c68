//! A small Adam (PyTorch semantics) over flat parameter vectors, gradient-norm clipping and
//! `nan_to_num`, as SHAC uses them (algorithms.md §1.3–1.4).

use crate::nn::Float;

/// Adam with PyTorch's update (`torch.optim.Adam`, no weight decay, no amsgrad):
///
/// ```text
/// t ← t + 1
/// m ← β1·m + (1 − β1)·g
/// v ← β2·v + (1 − β2)·g²
/// θ ← θ − (lr / (1 − β1ᵗ)) · m / (sqrt(v) / sqrt(1 − β2ᵗ) + ε)
/// ```
///
/// The scalar factors are computed in f64 (Python floats in PyTorch), the element-wise work
/// in the parameter type.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam<E: Float> {
    /// Learning rate (set per epoch by the schedule).
    pub lr: f64,
    /// (β1, β2).
    pub betas: (f64, f64),
    /// Denominator epsilon, 1e-8 (PyTorch default).
    pub eps: f64,
    /// Number of steps taken.
    pub step: u64,
    /// First moment.
    pub m: Vec<E>,
    /// Second moment.
    pub v: Vec<E>,
}

impl<E: Float> Adam<E> {
    /// A fresh optimiser for `n` parameters.
    pub fn new(n: usize, lr: f64, betas: (f64, f64)) -> Self {
        Adam {
            lr,
            betas,
            eps: 1e-8,
            step: 0,
            m: vec![E::zero(); n],
            v: vec![E::zero(); n],
        }
    }

    /// One update of `params` with `grads`.
    pub fn update(&mut self, params: &mut [E], grads: &[E]) {
        assert_eq!(params.len(), self.m.len(), "Adam: parameter count");
        assert_eq!(grads.len(), self.m.len(), "Adam: gradient count");
        self.step += 1;
        let (b1, b2) = self.betas;
        let bias_correction1 = 1.0 - b1.powi(self.step as i32);
        let bias_correction2_sqrt = (1.0 - b2.powi(self.step as i32)).sqrt();
        let step_size = E::from_f64(self.lr / bias_correction1).unwrap();
        let c = |x: f64| E::from_f64(x).unwrap();
        let (b1e, b2e, one_m_b1, one_m_b2) = (c(b1), c(b2), c(1.0 - b1), c(1.0 - b2));
        let bc2 = c(bias_correction2_sqrt);
        let eps = c(self.eps);
        for i in 0..params.len() {
            let g = grads[i];
            self.m[i] = self.m[i] * b1e + g * one_m_b1;
            self.v[i] = self.v[i] * b2e + g * g * one_m_b2;
            let denom = self.v[i].sqrt() / bc2 + eps;
            params[i] -= step_size * self.m[i] / denom;
        }
    }
}

/// Euclidean norm of a gradient vector, accumulated in f64.
pub fn grad_norm<E: Float>(g: &[E]) -> f64 {
    g.iter()
        .map(|v| {
            let x = v.to_f64().unwrap();
            x * x
        })
        .sum::<f64>()
        .sqrt()
}

/// `torch.nn.utils.clip_grad_norm_`: scales `g` by `min(1, max_norm / (norm + 1e-6))`.
/// Returns the norm before clipping.
pub fn clip_grad_norm<E: Float>(g: &mut [E], max_norm: f64) -> f64 {
    let norm = grad_norm(g);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = E::from_f64(coef).unwrap();
        for v in g.iter_mut() {
            *v *= c;
        }
    }
    norm
}

/// `tensor.nan_to_num_(0.0, 0.0, 0.0)`: NaN and ±∞ become 0 (SHAC's critic gradients).
pub fn nan_to_num<E: Float>(g: &mut [E]) {
    for v in g.iter_mut() {
        if !v.is_finite() {
            *v = E::zero();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam against the update formula written out in f64, over several steps with changing
    /// gradients and a learning-rate change between steps.
    #[test]
    fn adam_matches_the_formula() {
        let betas = (0.7, 0.95);
        let mut opt: Adam<f64> = Adam::new(3, 1e-2, betas);
        let mut p = vec![0.5, -1.0, 2.0];
        let (mut m, mut v, mut q) = (vec![0.0; 3], vec![0.0; 3], p.clone());
        let grads = [
            [0.1, -0.3, 2.0],
            [-0.2, 0.0, 1.5],
            [1e-3, 4.0, -0.5],
            [0.3, 0.3, 0.3],
        ];
        for (t, g) in grads.iter().enumerate() {
            let lr = 1e-2 * (1.0 - 0.1 * t as f64);
            opt.lr = lr;
            opt.update(&mut p, g);
            let t1 = (t + 1) as i32;
            for i in 0..3 {
                m[i] = betas.0 * m[i] + (1.0 - betas.0) * g[i];
                v[i] = betas.1 * v[i] + (1.0 - betas.1) * g[i] * g[i];
                let mhat = m[i] / (1.0 - betas.0.powi(t1));
                let vhat = v[i] / (1.0 - betas.1.powi(t1));
                // PyTorch puts ε outside the bias-corrected sqrt: sqrt(v)/sqrt(bc2) + ε.
                q[i] -= lr * mhat / (vhat.sqrt() + 1e-8);
            }
            for i in 0..3 {
                assert!(
                    (p[i] - q[i]).abs() < 1e-14,
                    "step {t} param {i}: {} vs {}",
                    p[i],
                    q[i]
                );
            }
        }
        assert_eq!(opt.step, 4);
        // The first step moves each parameter by ≈ lr·sign(g) (a property of Adam).
        let mut fresh: Adam<f32> = Adam::new(2, 0.1, betas);
        let mut w = vec![1.0f32, 1.0];
        fresh.update(&mut w, &[5.0, -0.01]);
        assert!(
            (w[0] - 0.9).abs() < 1e-5 && (w[1] - 1.1).abs() < 1e-4,
            "{w:?}"
        );
    }

    #[test]
    fn clipping_and_nan_to_num() {
        let mut g = vec![3.0f32, 4.0];
        let n = clip_grad_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-12);
        assert!((grad_norm(&g) - 1.0).abs() < 1e-5);
        assert!((g[0] / g[1] - 0.75).abs() < 1e-6);
        let mut small = vec![0.3f32, 0.4];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small, vec![0.3, 0.4]);
        let mut bad = vec![f32::NAN, f32::INFINITY, -f32::INFINITY, 2.0];
        nan_to_num(&mut bad);
        assert_eq!(bad, vec![0.0, 0.0, 0.0, 2.0]);
    }
}

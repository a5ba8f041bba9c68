//! TD(λ) critic targets over one window (algorithms.md §1.4, DiffRL `compute_target_values`).

use ndarray::{Array2, ArrayView2};

/// Computes `target[i, e]` for a window of `h` steps and `N` envs by the backward recursion
///
/// ```text
/// lam = 1; A = 0; B = 0
/// for i = h-1 .. 0:
///   lam = lam·λ·(1 − d_i) + d_i
///   A   = (1 − d_i)·(λγA + γ·V′_{i+1} + (1 − lam)/(1 − λ)·r_i)
///   B   = γ(V′_{i+1}·d_i + B(1 − d_i)) + r_i
///   target_i = (1 − λ)A + lam·B
/// ```
///
/// `rewards[i]` is the (scaled) reward of step i, `next_values[i]` the target critic's value
/// of the state after step i (0 where no bootstrap applies), `done_mask[i]` is 1 where the
/// episode ended at step i **and at i = h−1** (the caller sets the last row). Done in f32
/// like DiffRL's tensors.
pub fn td_lambda_targets(
    rewards: ArrayView2<f32>,
    next_values: ArrayView2<f32>,
    done_mask: ArrayView2<f32>,
    gamma: f32,
    lambda: f32,
    targets: &mut Array2<f32>,
) {
    let (h, n) = rewards.dim();
    assert_eq!(next_values.dim(), (h, n));
    assert_eq!(done_mask.dim(), (h, n));
    assert_eq!(targets.dim(), (h, n));
    for e in 0..n {
        let (mut lam, mut a, mut b) = (1.0f32, 0.0f32, 0.0f32);
        for i in (0..h).rev() {
            let d = done_mask[[i, e]];
            let r = rewards[[i, e]];
            let v = next_values[[i, e]];
            lam = lam * lambda * (1.0 - d) + d;
            a = (1.0 - d) * (lambda * gamma * a + gamma * v + (1.0 - lam) / (1.0 - lambda) * r);
            b = gamma * (v * d + b * (1.0 - d)) + r;
            targets[[i, e]] = (1.0 - lambda) * a + lam * b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The truncated λ-return written out explicitly (§1.4): with T the end of the segment
    /// that contains step t (the first done at or after t),
    /// `target_t = (1−λ)Σ_{k=1}^{T−t−1} λ^{k−1} G_t^{(k)} + λ^{T−t−1} G_t^{(T−t)}`,
    /// `G_t^{(k)} = Σ_{l<k} γ^l r_{t+l} + γ^k V′_{t+k}` (V′ indexed by the state after step).
    fn explicit(r: &[f64], v: &[f64], d: &[bool], t: usize, gamma: f64, lambda: f64) -> f64 {
        let end = (t..r.len()).find(|&i| d[i]).unwrap() + 1; // T: one past the last step
        let g = |k: usize| -> f64 {
            (0..k).map(|l| gamma.powi(l as i32) * r[t + l]).sum::<f64>()
                + gamma.powi(k as i32) * v[t + k - 1]
        };
        let len = end - t;
        (1..len)
            .map(|k| (1.0 - lambda) * lambda.powi(k as i32 - 1) * g(k))
            .sum::<f64>()
            + lambda.powi(len as i32 - 1) * g(len)
    }

    #[test]
    fn recursion_equals_truncated_lambda_return() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (h, n) = (12, 5);
        let (gamma, lambda) = (0.99f32, 0.95f32);
        for _trial in 0..20 {
            let r = Array2::from_shape_fn((h, n), |_| rng.gen_range(-2.0f32..2.0));
            let v = Array2::from_shape_fn((h, n), |_| rng.gen_range(-5.0f32..5.0));
            let mut d =
                Array2::from_shape_fn((h, n), |_| if rng.gen_bool(0.2) { 1.0f32 } else { 0.0 });
            d.row_mut(h - 1).fill(1.0);
            let mut out = Array2::zeros((h, n));
            td_lambda_targets(r.view(), v.view(), d.view(), gamma, lambda, &mut out);
            for e in 0..n {
                let rc: Vec<f64> = r.column(e).iter().map(|&x| x as f64).collect();
                let vc: Vec<f64> = v.column(e).iter().map(|&x| x as f64).collect();
                let dc: Vec<bool> = d.column(e).iter().map(|&x| x > 0.5).collect();
                for t in 0..h {
                    let want = explicit(&rc, &vc, &dc, t, gamma as f64, lambda as f64);
                    let got = out[[t, e]] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "t={t} e={e}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_step_segment_is_the_one_step_target() {
        // A done at every step: target = r + γ V′.
        let r = Array2::from_shape_vec((2, 1), vec![1.0f32, 2.0]).unwrap();
        let v = Array2::from_shape_vec((2, 1), vec![10.0f32, 20.0]).unwrap();
        let d = Array2::from_elem((2, 1), 1.0f32);
        let mut out = Array2::zeros((2, 1));
        td_lambda_targets(r.view(), v.view(), d.view(), 0.5, 0.9, &mut out);
        assert!((out[[0, 0]] - 6.0).abs() < 1e-6 && (out[[1, 0]] - 12.0).abs() < 1e-6);
    }
}

//! Running input/output statistics of the dynamics model (`model.normalise`, §3.4).
//!
//! mbmix-policy has the same per-feature statistics for observations (`rms.rs`); that crate
//! sits a layer above this one (ARCHITECTURE.md), so it cannot be imported here. The merge
//! below follows the same DiffRL `RunningMeanStd` semantics (count prior 1e-4 at mean 0,
//! variance 1; Chan et al.'s parallel update; population variance).

use ndarray::ArrayView2;

/// The epsilon under the square root of the standard deviation.
pub const STD_EPS: f64 = 1e-5;

/// Per-feature running mean and population variance, kept in f64.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunningStats {
    /// Running mean per feature.
    pub mean: Vec<f64>,
    /// Running population variance per feature.
    pub var: Vec<f64>,
    /// Effective number of samples seen (starts at 1e-4).
    pub count: f64,
}

impl RunningStats {
    /// Fresh statistics for `dim` features (mean 0, variance 1, count 1e-4).
    pub fn new(dim: usize) -> Self {
        RunningStats {
            mean: vec![0.0; dim],
            var: vec![1.0; dim],
            count: 1e-4,
        }
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Merges a batch `[n, dim]` of finite rows.
    pub fn update(&mut self, batch: ArrayView2<f32>) {
        let n = batch.nrows();
        if n == 0 {
            return;
        }
        assert_eq!(batch.ncols(), self.dim(), "RunningStats::update: width");
        let bc = n as f64;
        for j in 0..self.dim() {
            let col = batch.column(j);
            let bm = col.iter().map(|&x| x as f64).sum::<f64>() / bc;
            let bv = col
                .iter()
                .map(|&x| (x as f64 - bm) * (x as f64 - bm))
                .sum::<f64>()
                / bc;
            let delta = bm - self.mean[j];
            let tot = self.count + bc;
            let m2 = self.var[j] * self.count + bv * bc + delta * delta * self.count * bc / tot;
            self.mean[j] += delta * bc / tot;
            self.var[j] = m2 / tot;
        }
        self.count += bc;
    }

    /// `sqrt(var + 1e-5)` per feature.
    pub fn std(&self) -> Vec<f64> {
        self.var.iter().map(|v| (v + STD_EPS).sqrt()).collect()
    }
}

/// The model's coordinate change: inputs `x = ((s − μ_s)/σ_s, (a − μ_a)/σ_a)` and outputs
/// `y = (target − μ_out)/σ_out`, where `target` is Δs or s′ (`model.target`). With
/// normalisation off every mean is 0 and every σ is 1.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalizer {
    /// Whether the statistics are used (`model.normalise`).
    pub enabled: bool,
    /// Statistics of the state input.
    pub state: RunningStats,
    /// Statistics of the action input.
    pub action: RunningStats,
    /// Statistics of the prediction target (Δs or s′).
    pub output: RunningStats,
}

/// Means and standard deviations of one side, as used by the model (identity when off).
#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    /// Means.
    pub mean: Vec<f64>,
    /// Standard deviations (> 0).
    pub std: Vec<f64>,
}

impl Normalizer {
    /// Fresh statistics for a task with these dimensions.
    pub fn new(state_dim: usize, action_dim: usize, enabled: bool) -> Self {
        Normalizer {
            enabled,
            state: RunningStats::new(state_dim),
            action: RunningStats::new(action_dim),
            output: RunningStats::new(state_dim),
        }
    }

    fn affine(&self, stats: &[&RunningStats]) -> Affine {
        if !self.enabled {
            let d = stats.iter().map(|s| s.dim()).sum();
            return Affine {
                mean: vec![0.0; d],
                std: vec![1.0; d],
            };
        }
        Affine {
            mean: stats.iter().flat_map(|s| s.mean.iter().copied()).collect(),
            std: stats.iter().flat_map(|s| s.std()).collect(),
        }
    }

    /// The input side `[state, action]`.
    pub fn input(&self) -> Affine {
        self.affine(&[&self.state, &self.action])
    }

    /// The output side.
    pub fn output(&self) -> Affine {
        self.affine(&[&self.output])
    }

    /// Merges a batch of states, actions and prediction targets (Δs or s′).
    pub fn update(&mut self, s: ArrayView2<f32>, a: ArrayView2<f32>, target: ArrayView2<f32>) {
        self.state.update(s);
        self.action.update(a);
        self.output.update(target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{concatenate, Array2, Axis};
    use rand::{Rng, SeedableRng};

    /// Batches merged one by one equal the direct statistics of all samples plus the prior
    /// pseudo-sample (weight 1e-4 at mean 0 with variance 1).
    #[test]
    fn incremental_equals_direct() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let batches: Vec<Array2<f32>> = (0..4)
            .map(|k| {
                Array2::from_shape_fn((5 + k, 2), |(_, j)| {
                    rng.gen_range(-1.0..1.0) * (j + 1) as f32 + 3.0 * j as f32
                })
            })
            .collect();
        let mut st = RunningStats::new(2);
        for b in &batches {
            st.update(b.view());
        }
        let views: Vec<_> = batches.iter().map(|b| b.view()).collect();
        let all = concatenate(Axis(0), &views).unwrap();
        let (n, c0) = (all.nrows() as f64, 1e-4);
        for j in 0..2 {
            let xs: Vec<f64> = all.column(j).iter().map(|&x| x as f64).collect();
            let tot = n + c0;
            let mean = xs.iter().sum::<f64>() / tot;
            let m2 = c0 * (1.0 + mean * mean) + xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
            assert!((st.mean[j] - mean).abs() < 1e-12);
            assert!((st.var[j] - m2 / tot).abs() < 1e-12);
        }
        let off = Normalizer::new(2, 1, false);
        assert_eq!(off.input().std, vec![1.0; 3]);
        assert_eq!(off.output().mean, vec![0.0; 2]);
    }
}

//! Running observation statistics, as DiffRL's `RunningMeanStd` (algorithms.md §1.2).

use ndarray::{ArrayView2, ArrayViewMut2};

/// Per-feature running mean and (population) variance, merged batch by batch with the
/// parallel-variance formula (Chan et al.), exactly as DiffRL's `utils/running_mean_std.py`:
/// count starts at 1e-4, mean at 0, var at 1. Kept in f64.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunningMeanStd {
    /// Running mean per feature.
    pub mean: Vec<f64>,
    /// Running population variance per feature.
    pub var: Vec<f64>,
    /// Effective number of samples seen (starts at 1e-4).
    pub count: f64,
}

/// The epsilon under the square root in [`RunningMeanStd::normalize`].
pub const NORMALIZE_EPS: f64 = 1e-5;

impl RunningMeanStd {
    /// Fresh statistics for `dim` features.
    pub fn new(dim: usize) -> Self {
        RunningMeanStd {
            mean: vec![0.0; dim],
            var: vec![1.0; dim],
            count: 1e-4,
        }
    }

    /// Number of features.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Merges a batch `[n, dim]`: its mean and population variance (`unbiased=False`).
    pub fn update(&mut self, batch: ArrayView2<f32>) {
        let n = batch.nrows();
        if n == 0 {
            return;
        }
        assert_eq!(batch.ncols(), self.dim(), "RunningMeanStd::update: width");
        let bc = n as f64;
        for j in 0..self.dim() {
            let col = batch.column(j);
            let bm = col.iter().map(|&x| x as f64).sum::<f64>() / bc;
            let bv = col
                .iter()
                .map(|&x| {
                    let d = x as f64 - bm;
                    d * d
                })
                .sum::<f64>()
                / bc;
            let delta = bm - self.mean[j];
            let tot = self.count + bc;
            let m_a = self.var[j] * self.count;
            let m_b = bv * bc;
            let m2 = m_a + m_b + delta * delta * self.count * bc / tot;
            self.mean[j] += delta * bc / tot;
            self.var[j] = m2 / tot;
        }
        self.count += bc;
    }

    /// The factor `1 / sqrt(var + 1e-5)` per feature (also the VJP of [`Self::normalize`]).
    pub fn inv_std(&self) -> Vec<f32> {
        self.var
            .iter()
            .map(|v| (1.0 / (v + NORMALIZE_EPS).sqrt()) as f32)
            .collect()
    }

    /// `(x − mean) / sqrt(var + 1e-5)`, in place, row by row.
    pub fn normalize_in_place(&self, mut x: ArrayViewMut2<f32>) {
        let inv = self.inv_std();
        let mean: Vec<f32> = self.mean.iter().map(|&m| m as f32).collect();
        for mut row in x.rows_mut() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (*v - mean[j]) * inv[j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{concatenate, Array2, Axis};
    use rand::{Rng, SeedableRng};

    /// Several batches merged incrementally equal the direct statistics of all samples plus
    /// the prior pseudo-sample (count 1e-4 at mean 0, var 1).
    #[test]
    fn incremental_equals_direct() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let batches: Vec<Array2<f32>> = (0..4)
            .map(|k| {
                Array2::from_shape_fn((5 + k, 3), |(_, j)| {
                    rng.gen_range(-1.0..1.0) * (j + 1) as f32 + j as f32
                })
            })
            .collect();
        let mut rms = RunningMeanStd::new(3);
        for b in &batches {
            rms.update(b.view());
        }
        let views: Vec<_> = batches.iter().map(|b| b.view()).collect();
        let all = concatenate(Axis(0), &views).unwrap();
        let n = all.nrows() as f64;
        let c0 = 1e-4;
        for j in 0..3 {
            let xs: Vec<f64> = all.column(j).iter().map(|&x| x as f64).collect();
            // The prior is a point mass of weight c0 at 0 with variance 1.
            let tot = n + c0;
            let mean = xs.iter().sum::<f64>() / tot;
            let m2 =
                c0 * (1.0 + mean * mean) + xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>();
            let var = m2 / tot;
            assert!((rms.mean[j] - mean).abs() < 1e-12, "mean {j}");
            assert!(
                (rms.var[j] - var).abs() < 1e-12,
                "var {j}: {} vs {var}",
                rms.var[j]
            );
        }
        assert!((rms.count - (n + c0)).abs() < 1e-12);

        let mut x = all.clone();
        rms.normalize_in_place(x.view_mut());
        for j in 0..3 {
            let expect = ((all[[2, j]] as f64 - rms.mean[j]) / (rms.var[j] + 1e-5).sqrt()) as f32;
            assert!((x[[2, j]] - expect).abs() < 1e-6);
        }
    }
}

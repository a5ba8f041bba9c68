//! A learned reward `r_ψ(s′, a)` for model rollouts (`model.reward = learned`,
//! algorithms.md §3.4 "model.reward"): an MLP (ELU + LayerNorm, `model.reward_hidden`) on
//! the next state and action normalised by running statistics, predicting the reward
//! normalised by its running mean and standard deviation. It is fitted by MSE on the
//! simulator windows' `(s′, a, r)` (a FIFO of `model.buffer_capacity` rows), with the
//! model's minibatch settings and learning rate, right after the dynamics model; the model
//! rollouts then take their rewards, and the reward's VJP, from it instead of the task's
//! reward function. The reward's input is `(s′, a)` because that is the task interface
//! (`Task::reward(s_next, a)`).

use crate::nn::{LinearInit, Mlp};
use crate::optim::Adam;
use crate::rms::RunningMeanStd;
use diff_core::SeededRng;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use rand::Rng;
use std::collections::VecDeque;

/// Rows `[s′ | a]`.
fn join(s_next: ArrayView2<f32>, a: ArrayView2<f32>) -> Array2<f32> {
    let (n, sd, ad) = (s_next.nrows(), s_next.ncols(), a.ncols());
    Array2::from_shape_fn((n, sd + ad), |(i, j)| {
        if j < sd {
            s_next[[i, j]]
        } else {
            a[[i, j - sd]]
        }
    })
}

/// The reward function of a snapshot: network and normalisation statistics.
#[derive(Clone, Debug)]
pub struct RewardFn {
    pub(crate) net: Mlp<f32>,
    /// Statistics of the inputs `(s′, a)`.
    pub(crate) input: RunningMeanStd,
    /// Statistics of the reward (one feature).
    pub(crate) output: RunningMeanStd,
}

impl RewardFn {
    fn inputs(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>) -> Array2<f32> {
        let mut x = join(s_next, a);
        self.input.normalize_in_place(x.view_mut());
        x
    }

    fn out_scale(&self) -> (f32, f32) {
        let std = (self.output.var[0] + crate::rms::NORMALIZE_EPS).sqrt();
        (self.output.mean[0] as f32, std as f32)
    }

    /// Rewards `[N]` of the transitions into `s_next` `[N, S]` under `a` `[N, A]`.
    pub fn predict(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>) -> Vec<f32> {
        let n = s_next.nrows();
        let x = self.inputs(s_next, a);
        let y = self.net.forward(x.as_slice().expect("contiguous"), n);
        let (mean, std) = self.out_scale();
        y.iter().map(|v| v * std + mean).collect()
    }

    /// Adds `(∂r/∂s′)ᵀ adj_r` into `adj_s_next` and `(∂r/∂a)ᵀ adj_r` into `adj_a`.
    pub fn vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        mut adj_s_next: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        let (n, sd) = (s_next.nrows(), s_next.ncols());
        let x = self.inputs(s_next, a);
        let (_, std) = self.out_scale();
        let seed: Vec<f32> = adj_r.iter().map(|g| g * std).collect();
        let mut scratch = vec![0.0f32; self.net.num_params()];
        let mut gx = vec![0.0f32; x.len()];
        self.net.vjp(
            x.as_slice().expect("contiguous"),
            n,
            &seed,
            &mut scratch,
            Some(&mut gx),
        );
        let inv = self.input.inv_std();
        let d = x.ncols();
        for i in 0..n {
            for j in 0..d {
                let g = gx[i * d + j] * inv[j];
                if j < sd {
                    adj_s_next[[i, j]] += g;
                } else {
                    adj_a[[i, j - sd]] += g;
                }
            }
        }
    }
}

/// The learned reward with its optimiser and training rows.
#[derive(Clone, Debug)]
pub struct RewardHead {
    pub(crate) f: RewardFn,
    pub(crate) opt: Adam<f32>,
    /// Rows `(s′, a, r)`, oldest first.
    pub(crate) rows: VecDeque<Vec<f32>>,
    pub(crate) capacity: usize,
}

impl RewardHead {
    /// A fresh head for `state_dim + act_dim` inputs with hidden widths `hidden`.
    pub fn new(
        state_dim: usize,
        act_dim: usize,
        hidden: &[usize],
        capacity: usize,
        betas: [f64; 2],
        rng: &mut SeededRng,
    ) -> Self {
        let net = Mlp::new(
            state_dim + act_dim,
            hidden,
            1,
            LinearInit::TorchDefault,
            rng,
        );
        let n = net.num_params();
        RewardHead {
            f: RewardFn {
                net,
                input: RunningMeanStd::new(state_dim + act_dim),
                output: RunningMeanStd::new(1),
            },
            opt: Adam::new(n, 1e-3, (betas[0], betas[1])),
            rows: VecDeque::new(),
            capacity,
        }
    }

    /// The reward function as it is now.
    pub fn snapshot(&self) -> RewardFn {
        self.f.clone()
    }

    /// Transitions kept for training.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no transition is kept.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds rows `(s′, a, r)` (the statistics move with them; the oldest rows beyond the
    /// capacity are dropped).
    pub fn add(&mut self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, r: &[f32]) {
        if r.is_empty() {
            return;
        }
        let x = join(s_next, a);
        self.f.input.update(x.view());
        let rr = Array2::from_shape_vec((r.len(), 1), r.to_vec()).expect("rewards");
        self.f.output.update(rr.view());
        for (row, &ri) in x.rows().into_iter().zip(r) {
            let mut v = row.to_vec();
            v.push(ri);
            self.rows.push_back(v);
        }
        while self.rows.len() > self.capacity {
            self.rows.pop_front();
        }
    }

    /// `passes × minibatches` Adam steps on minibatches of `batch_size` rows drawn with
    /// replacement; returns the mean normalised MSE of the last pass.
    pub fn train_epoch(
        &mut self,
        passes: usize,
        minibatches: usize,
        batch_size: usize,
        lr: f64,
        rng: &mut SeededRng,
    ) -> f64 {
        if self.rows.is_empty() {
            return 0.0;
        }
        self.opt.lr = lr;
        let d = self.f.input.dim();
        let inv = self.f.input.inv_std();
        let (mean, std) = self.f.out_scale();
        let mut grad = vec![0.0f32; self.f.net.num_params()];
        let mut last = 0.0;
        for _ in 0..passes {
            let mut sum = 0.0;
            for _ in 0..minibatches {
                let b = batch_size.min(self.rows.len());
                let mut x = Vec::with_capacity(b * d);
                let mut y = Vec::with_capacity(b);
                for _ in 0..b {
                    let row = &self.rows[rng.gen_range(0..self.rows.len())];
                    x.extend((0..d).map(|j| (row[j] - self.f.input.mean[j] as f32) * inv[j]));
                    y.push((row[d] - mean) / std);
                }
                grad.fill(0.0);
                let loss = self.f.net.mse_grad(&x, b, &y, &mut grad);
                crate::optim::clip_grad_norm(&mut grad, 1.0);
                self.opt.update(self.f.net.params_mut(), &grad);
                sum += loss as f64;
            }
            last = sum / minibatches as f64;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diff_core::gradcheck::rel_err;
    use diff_core::seeded;

    /// r = s′₀² − 0.5·a₀ + s′₁: the head learns it, and its VJP matches finite differences
    /// of its own prediction.
    #[test]
    fn learns_a_reward_and_its_vjp_matches_finite_differences() {
        let mut rng = seeded(1, 0);
        let mut head = RewardHead::new(2, 1, &[32, 32], 4096, [0.9, 0.999], &mut rng);
        let reward = |s: &[f32], a: &[f32]| s[0] * s[0] - 0.5 * a[0] + s[1];
        let sample = |rng: &mut SeededRng, n: usize| {
            let s = Array2::from_shape_fn((n, 2), |_| rng.gen_range(-1.0f32..1.0));
            let a = Array2::from_shape_fn((n, 1), |_| rng.gen_range(-1.0f32..1.0));
            let r: Vec<f32> = (0..n)
                .map(|i| reward(s.row(i).as_slice().unwrap(), a.row(i).as_slice().unwrap()))
                .collect();
            (s, a, r)
        };
        let (s, a, r) = sample(&mut rng, 2048);
        head.add(s.view(), a.view(), &r);
        let (ts, ta, tr) = sample(&mut rng, 256);
        let err = |h: &RewardHead| {
            let p = h.snapshot().predict(ts.view(), ta.view());
            p.iter().zip(&tr).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / 256.0
        };
        let before = err(&head);
        for _ in 0..30 {
            head.train_epoch(4, 4, 128, 3e-3, &mut rng);
        }
        let after = err(&head);
        assert!(after < 0.05 * before, "{before} → {after}");
        // the VJP against central differences of the prediction (f32: loose but telling)
        let f = head.snapshot();
        let (s1, a1) = (
            ts.slice(ndarray::s![..4, ..]),
            ta.slice(ndarray::s![..4, ..]),
        );
        let w = ndarray::arr1(&[1.0f32, -0.5, 2.0, 0.3]);
        let mut gs = Array2::zeros((4, 2));
        let mut ga = Array2::zeros((4, 1));
        f.vjp(s1, a1, w.view(), gs.view_mut(), ga.view_mut());
        let obj = |s: ArrayView2<f32>, a: ArrayView2<f32>| -> f64 {
            f.predict(s, a)
                .iter()
                .zip(w.iter())
                .map(|(p, w)| (*p as f64) * (*w as f64))
                .sum()
        };
        let h = 1e-2f32;
        let mut fd = Vec::new();
        let mut an = Vec::new();
        for i in 0..4 {
            for j in 0..3 {
                let (mut sp, mut sm) = (s1.to_owned(), s1.to_owned());
                let (mut ap, mut am) = (a1.to_owned(), a1.to_owned());
                if j < 2 {
                    sp[[i, j]] += h;
                    sm[[i, j]] -= h;
                    an.push(gs[[i, j]] as f64);
                } else {
                    ap[[i, 0]] += h;
                    am[[i, 0]] -= h;
                    an.push(ga[[i, 0]] as f64);
                }
                fd.push((obj(sp.view(), ap.view()) - obj(sm.view(), am.view())) / (2.0 * h as f64));
            }
        }
        let e = rel_err(&an, &fd, 1e-3);
        assert!(e < 2e-2, "reward VJP vs fd {e:.2e}: {an:?} vs {fd:?}");
    }

    #[test]
    fn rows_are_a_fifo() {
        let mut rng = seeded(2, 0);
        let mut head = RewardHead::new(1, 1, &[4], 3, [0.9, 0.999], &mut rng);
        for k in 0..5 {
            let s = Array2::from_elem((1, 1), k as f32);
            let a = Array2::zeros((1, 1));
            head.add(s.view(), a.view(), &[k as f32]);
        }
        let kept: Vec<f32> = head.rows.iter().map(|r| r[2]).collect();
        assert_eq!(kept, vec![2.0, 3.0, 4.0]);
    }
}

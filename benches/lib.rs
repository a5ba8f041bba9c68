//! Shared workloads of the criterion benchmarks: a window of `h` simulator steps over `N`
//! envs, forward alone or forward followed by the reverse sweep of the summed reward.

use diff_core::Task;
use ndarray::{s, Array1, Array2, Array3};

/// Buffers for one window, allocated once.
pub struct WindowBench {
    pub states: Array3<f32>,
    pub actions: Array3<f32>,
    rewards: Array1<f32>,
    adj_next: Array2<f32>,
    adj_s: Array2<f32>,
    adj_a: Array2<f32>,
}

impl WindowBench {
    /// A window of `h` steps from the batch `s0` (`[N, state_dim]`) with deterministic
    /// pseudo-random actions in (−1, 1).
    pub fn new(task: &dyn Task, s0: &Array2<f32>, h: usize) -> Self {
        let spec = task.spec();
        let n = s0.nrows();
        let mut states = Array3::zeros((h + 1, n, spec.state_dim));
        states.slice_mut(s![0, .., ..]).assign(s0);
        let actions = Array3::from_shape_fn((h, n, spec.act_dim), |(t, i, j)| {
            (((t * 7919 + i * 104_729 + j * 31) % 2000) as f32 / 1000.0 - 1.0) * 0.9
        });
        WindowBench {
            states,
            actions,
            rewards: Array1::zeros(n),
            adj_next: Array2::zeros((n, spec.state_dim)),
            adj_s: Array2::zeros((n, spec.state_dim)),
            adj_a: Array2::zeros((n, spec.act_dim)),
        }
    }

    /// Forward rollout of the window; returns the summed reward.
    pub fn forward(&mut self, task: &dyn Task) -> f32 {
        let h = self.actions.shape()[0];
        let mut total = 0.0;
        for t in 0..h {
            let (cur, mut next) = self
                .states
                .multi_slice_mut((s![t, .., ..], s![t + 1, .., ..]));
            task.step(
                cur.view(),
                self.actions.slice(s![t, .., ..]),
                next.view_mut(),
            );
            task.reward(
                next.view(),
                self.actions.slice(s![t, .., ..]),
                self.rewards.view_mut(),
            );
            total += self.rewards.sum();
        }
        total
    }

    /// Forward rollout, then the reverse sweep of the summed reward through the reward
    /// and step VJPs; returns the norm of the action gradient of the first step.
    pub fn forward_backward(&mut self, task: &dyn Task) -> f32 {
        self.forward(task);
        let h = self.actions.shape()[0];
        let ones = Array1::<f32>::ones(self.rewards.len());
        self.adj_next.fill(0.0);
        for t in (0..h).rev() {
            let a = self.actions.slice(s![t, .., ..]);
            self.adj_a.fill(0.0);
            task.reward_vjp(
                self.states.slice(s![t + 1, .., ..]),
                a,
                ones.view(),
                self.adj_next.view_mut(),
                self.adj_a.view_mut(),
            );
            self.adj_s.fill(0.0);
            task.step_vjp(
                self.states.slice(s![t, .., ..]),
                a,
                self.adj_next.view(),
                self.adj_s.view_mut(),
                self.adj_a.view_mut(),
            );
            std::mem::swap(&mut self.adj_next, &mut self.adj_s);
        }
        self.adj_a.iter().map(|x| x * x).sum::<f32>().sqrt()
    }
}

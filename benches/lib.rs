//! Shared workloads of the criterion benchmarks: an open-loop window of `h` simulator
//! steps over `N` envs, forward alone or forward followed by the reverse sweep of the
//! summed reward (diff-core's [`open_loop_rollout`] and [`open_loop_vjp`]).

use diff_core::{open_loop_rollout, open_loop_vjp, Task};
use ndarray::{Array2, Array3};

/// The inputs of one window.
pub struct WindowBench {
    /// Initial states `[N, state_dim]`.
    pub s0: Array2<f32>,
    /// Actions `[h, N, act_dim]`, deterministic pseudo-random values in (−0.9, 0.9).
    pub actions: Array3<f32>,
    weights: Array2<f32>,
}

impl WindowBench {
    /// A window of `h` steps from the batch `s0`.
    pub fn new(task: &dyn Task, s0: &Array2<f32>, h: usize) -> Self {
        let n = s0.nrows();
        let actions = Array3::from_shape_fn((h, n, task.spec().act_dim), |(t, i, j)| {
            (((t * 7919 + i * 104_729 + j * 31) % 2000) as f32 / 1000.0 - 1.0) * 0.9
        });
        WindowBench {
            s0: s0.clone(),
            actions,
            weights: Array2::ones((h, n)),
        }
    }

    /// Forward rollout of the window; returns the summed reward.
    pub fn forward(&self, task: &dyn Task) -> f32 {
        open_loop_rollout(task, self.s0.view(), self.actions.view())
            .expect("benchmark shapes are consistent")
            .rewards
            .sum()
    }

    /// Forward rollout, then the reverse sweep of the summed reward; returns the norm of
    /// the action gradient.
    pub fn forward_backward(&self, task: &dyn Task) -> f32 {
        let w = open_loop_rollout(task, self.s0.view(), self.actions.view())
            .expect("benchmark shapes are consistent");
        let (g, _) = open_loop_vjp(
            task,
            w.states.view(),
            self.actions.view(),
            self.weights.view(),
        )
        .expect("benchmark shapes are consistent");
        g.iter().map(|x| x * x).sum::<f32>().sqrt()
    }
}

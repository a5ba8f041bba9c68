//! Open-loop windows: replay an action sequence from a given state (no resets, no time
//! limit) and take the VJP of a weighted sum of its rewards with respect to the actions
//! and the initial state. This is the contract's "VJP of a recorded window" in its plainest
//! form, used by `mbmix rollout --grad`, the benchmarks and the gradient tests; the
//! closed-loop engine with a policy and resets lives in `mbmix-policy::window`.

use crate::error::Result;
use crate::task::{check_batch, Task};
use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, Axis};

/// A recorded open-loop window.
#[derive(Clone, Debug)]
pub struct OpenLoopWindow {
    /// Visited states `[T + 1, N, state_dim]`, the initial state first.
    pub states: Array3<f32>,
    /// Rewards `[T, N]`.
    pub rewards: Array2<f32>,
}

/// Replays `actions` `[T, N, act_dim]` from `s0` `[N, state_dim]` with [`Task::step`] and
/// [`Task::reward`].
pub fn open_loop_rollout(
    task: &dyn Task,
    s0: ArrayView2<f32>,
    actions: ArrayView3<f32>,
) -> Result<OpenLoopWindow> {
    let spec = task.spec();
    let (steps, n, _) = actions.dim();
    check_batch("actions[t]", &actions.shape()[1..], n, spec.act_dim)?;
    check_batch("initial state", s0.shape(), n, spec.state_dim)?;
    let mut states = Array3::zeros((steps + 1, n, spec.state_dim));
    let mut rewards = Array2::zeros((steps, n));
    states.index_axis_mut(Axis(0), 0).assign(&s0);
    for t in 0..steps {
        let (cur, mut next) = states.multi_slice_mut((s![t, .., ..], s![t + 1, .., ..]));
        let a_t = actions.index_axis(Axis(0), t);
        task.step(cur.view(), a_t, next.view_mut());
        task.reward(next.view(), a_t, rewards.row_mut(t));
    }
    Ok(OpenLoopWindow { states, rewards })
}

/// The gradient of `Σ_t Σ_i w[t, i] · r_t,i` over a recorded window (its visited states
/// `[T + 1, N, S]`, as [`OpenLoopWindow::states`]), by the reverse sweep
/// `λ_{t+1} += (∂r_t/∂s_{t+1})ᵀ w_t`, `ḡ_{a_t} = (∂r_t/∂a_t)ᵀ w_t + (∂F/∂a)ᵀ λ_{t+1}`,
/// `λ_t = (∂F/∂s)ᵀ λ_{t+1}`. Returns `(∂/∂actions [T, N, A], ∂/∂s0 [N, S])`.
pub fn open_loop_vjp(
    task: &dyn Task,
    states: ArrayView3<f32>,
    actions: ArrayView3<f32>,
    reward_weights: ArrayView2<f32>,
) -> Result<(Array3<f32>, Array2<f32>)> {
    let (steps, n, act_dim) = actions.dim();
    let state_dim = task.spec().state_dim;
    check_batch("reward weights", reward_weights.shape(), steps, n)?;
    check_batch("window states[t]", &states.shape()[1..], n, state_dim)?;
    if states.len_of(Axis(0)) != steps + 1 {
        return Err(crate::Error::dim(
            "window states",
            steps + 1,
            states.len_of(Axis(0)),
        ));
    }
    let mut grad_actions = Array3::zeros((steps, n, act_dim));
    let mut adj_next = Array2::<f32>::zeros((n, state_dim));
    let mut adj_cur = Array2::<f32>::zeros((n, state_dim));
    for t in (0..steps).rev() {
        let a_t = actions.index_axis(Axis(0), t);
        let mut g_a = grad_actions.index_axis_mut(Axis(0), t);
        task.reward_vjp(
            states.index_axis(Axis(0), t + 1),
            a_t,
            reward_weights.row(t),
            adj_next.view_mut(),
            g_a.view_mut(),
        );
        adj_cur.fill(0.0);
        task.step_vjp(
            states.index_axis(Axis(0), t),
            a_t,
            adj_next.view(),
            adj_cur.view_mut(),
            g_a.view_mut(),
        );
        std::mem::swap(&mut adj_next, &mut adj_cur);
    }
    Ok((grad_actions, adj_next))
}

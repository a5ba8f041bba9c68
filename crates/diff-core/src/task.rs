//! The `DiffEnv` contract: a batched, differentiable task.
//!
//! A task is immutable (its model is shared by all envs); the mutable state lives in
//! struct-of-arrays batches `[N, dim]` of `f32` owned by the caller ([`crate::BatchEnv`],
//! the window engine). Every differentiable function has three faces: the forward map, its
//! vector–Jacobian product (VJP, reverse mode) and its Jacobian–vector product (JVP,
//! forward mode).
//!
//! Conventions shared by all VJPs: adjoint outputs are **accumulated** (`+=`) into the
//! arrays passed in, so that contributions from several consumers of one state (the next
//! step, the observation, the reward) sum without temporaries. JVP outputs are overwritten.
//!
//! The tape of a step is its inputs `(s, a)`: the VJP replays the forward computation
//! internally to recover intermediates (as dflex's generated backward kernels do), so a
//! window's tape is `O(h · N · (state + action))` and is owned by [`crate::WindowTape`].

use crate::rng::SeededRng;
use crate::scene::Scene;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// Static facts about a task.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// Registry name, e.g. `cartpole-swingup`.
    pub name: String,
    /// Width of the full simulator state (what `get/set_state` exchange).
    pub state_dim: usize,
    /// Width of the observation.
    pub obs_dim: usize,
    /// Width of the action; actions are clipped to [−1, 1] by the task.
    pub act_dim: usize,
    /// Episode length in control steps (time limit).
    pub episode_length: usize,
    /// Control timestep in seconds.
    pub dt: f64,
    /// One name per state column, documenting the state layout.
    pub state_names: Vec<String>,
    /// One name per observation column.
    pub obs_names: Vec<String>,
}

/// A batched differentiable task. All batch arrays have `N` rows; the row count of every
/// argument must agree (callers check shapes once at the batch level, see
/// [`check_batch`]), and rows must be contiguous (standard row-major layout, as every
/// array this workspace allocates is).
pub trait Task: Send + Sync {
    /// Static facts: dimensions, names, episode length.
    fn spec(&self) -> &TaskSpec;

    /// Dynamics: `s_next = F(s, a)` for every row (actions are clipped inside).
    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, s_next: ArrayViewMut2<f32>);

    /// Dynamics VJP at `(s, a)`: `adj_s += (∂F/∂s)ᵀ adj_next`, `adj_a += (∂F/∂a)ᵀ adj_next`.
    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    );

    /// Dynamics JVP at `(s, a)`: `ds_next = ∂F/∂s · ds + ∂F/∂a · da`.
    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        ds_next: ArrayViewMut2<f32>,
    );

    /// Observation `o = obs(s)`.
    fn observe(&self, s: ArrayView2<f32>, obs: ArrayViewMut2<f32>);

    /// Observation VJP: `adj_s += (∂obs/∂s)ᵀ adj_obs`.
    fn observe_vjp(&self, s: ArrayView2<f32>, adj_obs: ArrayView2<f32>, adj_s: ArrayViewMut2<f32>);

    /// Reward of the transition into `s_next` under action `a` (DiffRL computes rewards from
    /// the post-step state and the action).
    fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, r: ArrayViewMut1<f32>);

    /// Reward VJP: `adj_s_next += (∂r/∂s_next)ᵀ adj_r`, `adj_a += (∂r/∂a)ᵀ adj_r`.
    fn reward_vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        adj_s_next: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    );

    /// Early termination flags for the states in `s_next` (not the time limit).
    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]);

    /// Writes an initial state into `s`; with `stochastic` the task's reset noise is added.
    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, s: ArrayViewMut1<f32>);

    /// Whether one evaluation episode, given as its visited states `[T, state_dim]`
    /// (start state first), counts as a success; `None` when the task defines no
    /// success criterion.
    fn episode_success(&self, _states: ArrayView2<f32>) -> Option<bool> {
        None
    }

    /// DaXBench's auxiliary training reward (`aux_reward`, tasks.md §7.3): a differentiable
    /// function of the **pre-step** state `s` and the action `a`, written into `out` `[N]`,
    /// that a trainer may add to the actor's objective at each step (BPTT/APG's
    /// `aux_reward` weight). It is not part of the reward, the returns or the evaluation.
    /// Returns false (and leaves `out`) when the task has none.
    fn aux_reward(
        &self,
        _s: ArrayView2<f32>,
        _a: ArrayView2<f32>,
        _out: ArrayViewMut1<f32>,
    ) -> bool {
        false
    }

    /// VJP of [`Task::aux_reward`]: `adj_s += (∂aux/∂s)ᵀ adj`, `adj_a += (∂aux/∂a)ᵀ adj`.
    fn aux_reward_vjp(
        &self,
        _s: ArrayView2<f32>,
        _a: ArrayView2<f32>,
        _adj: ArrayView1<f32>,
        _adj_s: ArrayViewMut2<f32>,
        _adj_a: ArrayViewMut2<f32>,
    ) {
    }

    /// What the full simulator state `state` (one row, `[state_dim]`) looks like, as
    /// renderer-neutral primitives in world coordinates (metres, Y up); `None` when the
    /// task cannot be drawn. Used for visualisation only (`mbmix render`): it is not
    /// differentiated and may allocate.
    fn scene(&self, _state: ArrayView1<f32>) -> Option<Scene> {
        None
    }

    /// A window of `h` steps of `n` envs whose states stay where the simulator runs (the
    /// GPU, or the kernels' host build) for the whole window ([`ResidentWindow`]), when this
    /// task's simulator offers one. Default: none (the window engine keeps the states on the
    /// host and calls [`Task::step`] and the VJPs).
    fn resident_window(
        &self,
        _h: usize,
        _n: usize,
    ) -> Option<crate::Result<Box<dyn ResidentWindow>>> {
        None
    }
}

/// The simulator's side of a window whose batch state stays on the device from the
/// window's start to its end (ARCHITECTURE.md "Backends"; issue 7): only observations,
/// actions, rewards, done flags and their adjoints cross to the host at each step, plus the
/// reset states of the envs whose episode ended (drawn on the host, so that a seed gives the
/// same episodes on every backend). The host keeps the episode bookkeeping
/// ([`crate::BatchEnv::step_external`]) and the networks.
///
/// A window: [`ResidentWindow::begin`] with the start states, then for t = 0..h
/// [`ResidentWindow::step`] and [`ResidentWindow::reset_rows`], then
/// [`ResidentWindow::end`]. Its reverse sweep, for t = h−1 down to 0:
/// [`ResidentWindow::sweep_step`], then [`ResidentWindow::sweep_observe`]. The device keeps
/// every step's start state, action and pre-reset next state until the next `begin`.
pub trait ResidentWindow: Send {
    /// Where it runs, for messages.
    fn describe(&self) -> String;
    /// Uploads the window's start states `[N, S]`.
    fn begin(&mut self, states: ArrayView2<f32>) -> crate::Result<()>;
    /// Raw observations `[N, O]` of the current states (the start of the next step).
    fn observe(&mut self, obs: ArrayViewMut2<f32>) -> crate::Result<()>;
    /// Step `t` with `actions` `[N, A]`: the raw observations of the pre-reset next states
    /// into `next_obs` `[N, O]`, the rewards, the task's termination flags, and whether each
    /// next state is non-finite or beyond [`crate::NONFINITE_LIMIT`]. The next states
    /// become the current states.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        t: usize,
        actions: ArrayView2<f32>,
        next_obs: ArrayViewMut2<f32>,
        reward: ArrayViewMut1<f32>,
        terminated: &mut [bool],
        nonfinite: &mut [bool],
    ) -> crate::Result<()>;
    /// Replaces the current states of `rows` by `states` `[rows.len(), S]` (resets).
    fn reset_rows(&mut self, rows: &[usize], states: ArrayView2<f32>) -> crate::Result<()>;
    /// Downloads the current states `[N, S]` (the window's end).
    fn end(&mut self, states: ArrayViewMut2<f32>) -> crate::Result<()>;
    /// The reverse sweep's step `t` (as the host window engine's): the adjoint of the
    /// pre-reset next state is `observe_vjp(s⁺_t, obs_adj)` (none: zero), plus the adjoint
    /// carried from step t+1 on the rows of `carry`, plus `reward_vjp` with `reward_seed`
    /// `[N]`; rows of `zero` are zeroed; then the step's VJP. The action adjoint (reward and
    /// step parts) is written into `adj_a` `[N, A]`; the start state's adjoint stays on the
    /// device for [`ResidentWindow::sweep_observe`].
    fn sweep_step(
        &mut self,
        t: usize,
        obs_adj: Option<ArrayView2<f32>>,
        carry: &[bool],
        reward_seed: ArrayView1<f32>,
        zero: &[bool],
        adj_a: ArrayViewMut2<f32>,
    ) -> crate::Result<()>;
    /// Adds `observe_vjp(s_t, adj_obs)` (`adj_obs` `[N, O]`, raw observation units) into the
    /// start state's adjoint of step `t`, which becomes the adjoint carried to step t − 1.
    fn sweep_observe(&mut self, t: usize, adj_obs: ArrayView2<f32>) -> crate::Result<()>;
}

/// Checks that a batch array has `rows × cols`, naming it in the error.
pub fn check_batch(what: &str, shape: &[usize], rows: usize, cols: usize) -> crate::Result<()> {
    if shape.len() != 2 || shape[0] != rows || shape[1] != cols {
        return Err(crate::Error::dim(
            what,
            format!("[{rows}, {cols}]"),
            format!("{shape:?}"),
        ));
    }
    Ok(())
}

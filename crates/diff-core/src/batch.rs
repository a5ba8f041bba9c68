//! Batched episodes over a [`Task`]: state, episode counters, resets, and the window tape.

use crate::error::{Error, Result};
use crate::rng::{seeded, SeededRng};
use crate::task::{check_batch, Task};
use ndarray::{s, Array2, Array3, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use std::sync::Arc;

/// Why (or whether) an env's episode ended at a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Done {
    /// The episode continues.
    #[default]
    No = 0,
    /// The task's termination condition fired (bootstrap with 0).
    Terminated = 1,
    /// The time limit was reached (bootstrap with the value of the pre-reset state).
    TimeLimit = 2,
    /// The state became non-finite or exceeded [`NONFINITE_LIMIT`] (dflex's guard): the env
    /// is reset and its reward zeroed; bootstrap with 0.
    NonFinite = 3,
}

impl Done {
    /// True when the episode ended at this step, for any reason.
    pub fn is_done(self) -> bool {
        self != Done::No
    }
    /// True when the ended episode must bootstrap with the critic's value
    /// (time limit only; see algorithms.md §1.3).
    pub fn bootstraps(self) -> bool {
        matches!(self, Done::No | Done::TimeLimit)
    }
}

/// dflex's guard threshold: |q| or |q̇| above this resets the env (tasks.md §1.7).
pub const NONFINITE_LIMIT: f32 = 1e6;

/// The serialisable part of a [`BatchEnv`], for checkpoints.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BatchEnvSnapshot {
    /// Row-major `[N, state_dim]`.
    pub state: Vec<f32>,
    /// Steps taken in the current episode, per env.
    pub progress: Vec<u32>,
    /// Undiscounted return of the current episode so far, per env.
    pub episode_return: Vec<f32>,
    /// The reset RNG.
    pub rng: SeededRng,
}

/// N parallel episodes of one task.
pub struct BatchEnv {
    task: Arc<dyn Task>,
    state: Array2<f32>,
    progress: Vec<u32>,
    episode_return: Vec<f32>,
    finished_returns: Vec<f32>,
    stochastic_init: bool,
    rng: SeededRng,
    scratch_terminated: Vec<bool>,
    scratch_nonfinite: Vec<bool>,
}

impl BatchEnv {
    /// Creates `n` envs and resets them all with the task's reset distribution.
    pub fn new(task: Arc<dyn Task>, n: usize, seed: u64, stochastic_init: bool) -> Result<Self> {
        if n == 0 {
            return Err(Error::InvalidParameter {
                name: "num_envs".into(),
                reason: "must be at least 1".into(),
            });
        }
        let sd = task.spec().state_dim;
        let mut env = BatchEnv {
            task,
            state: Array2::zeros((n, sd)),
            progress: vec![0; n],
            episode_return: vec![0.0; n],
            finished_returns: Vec::new(),
            stochastic_init,
            rng: seeded(seed, 0x7e5e7),
            scratch_terminated: vec![false; n],
            scratch_nonfinite: vec![false; n],
        };
        env.reset_all();
        Ok(env)
    }

    /// The task.
    pub fn task(&self) -> &Arc<dyn Task> {
        &self.task
    }
    /// Number of envs.
    pub fn num_envs(&self) -> usize {
        self.state.nrows()
    }
    /// Current full simulator state `[N, state_dim]`.
    pub fn state(&self) -> ArrayView2<'_, f32> {
        self.state.view()
    }
    /// Steps taken in each env's current episode.
    pub fn progress(&self) -> &[u32] {
        &self.progress
    }

    /// Replaces the simulator state (episode counters are kept).
    pub fn set_state(&mut self, state: ArrayView2<f32>) -> Result<()> {
        check_batch(
            "state",
            state.shape(),
            self.num_envs(),
            self.task.spec().state_dim,
        )?;
        self.state.assign(&state);
        Ok(())
    }

    /// Resets every env (new episodes).
    pub fn reset_all(&mut self) {
        for i in 0..self.num_envs() {
            self.reset_env(i);
        }
    }

    fn reset_env(&mut self, i: usize) {
        let row: ArrayViewMut1<f32> = self.state.row_mut(i);
        self.task
            .reset_state(&mut self.rng, self.stochastic_init, row);
        self.progress[i] = 0;
        self.episode_return[i] = 0.0;
    }

    /// Steps every env with `actions` `[N, act_dim]`.
    ///
    /// Writes the pre-reset next state into `next_state`, the rewards and the done flags,
    /// then resets the envs whose episode ended, so that [`BatchEnv::state`] holds the start
    /// state of the next step.
    pub fn step(
        &mut self,
        actions: ArrayView2<f32>,
        mut next_state: ArrayViewMut2<f32>,
        mut reward: ArrayViewMut1<f32>,
        done: &mut [Done],
    ) -> Result<()> {
        let spec = self.task.spec();
        let n = self.num_envs();
        check_batch("actions", actions.shape(), n, spec.act_dim)?;
        check_batch("next_state", next_state.shape(), n, spec.state_dim)?;
        if reward.len() != n || done.len() != n {
            return Err(Error::dim("reward/done", n, reward.len().min(done.len())));
        }
        self.task
            .step(self.state.view(), actions, next_state.view_mut());
        self.task
            .reward(next_state.view(), actions, reward.view_mut());
        let mut terminated = std::mem::take(&mut self.scratch_terminated);
        let mut nonfinite = std::mem::take(&mut self.scratch_nonfinite);
        self.task.terminated(next_state.view(), &mut terminated);
        for (f, row) in nonfinite.iter_mut().zip(next_state.outer_iter()) {
            *f = !row
                .iter()
                .all(|x| x.is_finite() && x.abs() <= NONFINITE_LIMIT);
        }
        self.book(reward.view_mut(), &terminated, &nonfinite, done);
        self.scratch_terminated = terminated;
        self.scratch_nonfinite = nonfinite;
        self.state.assign(&next_state);
        self.reset_done(done);
        Ok(())
    }

    /// The bookkeeping of [`BatchEnv::step`] for a step simulated elsewhere (a
    /// [`crate::ResidentWindow`], whose states stay on the device): from the step's rewards,
    /// termination flags and non-finite flags, sets the done flags (zeroing the rewards of
    /// non-finite rows), counts the episodes, and resets the envs whose episode ended.
    /// Returns those envs; their reset states are the rows of [`BatchEnv::state`] with these
    /// indices. The other rows of [`BatchEnv::state`] are not updated: the caller sets them
    /// from the device at the window's end ([`BatchEnv::set_state`]).
    pub fn step_external(
        &mut self,
        mut reward: ArrayViewMut1<f32>,
        terminated: &[bool],
        nonfinite: &[bool],
        done: &mut [Done],
    ) -> Result<Vec<usize>> {
        let n = self.num_envs();
        if reward.len() != n || terminated.len() != n || nonfinite.len() != n || done.len() != n {
            return Err(Error::dim(
                "external step outcomes",
                n,
                reward
                    .len()
                    .min(terminated.len())
                    .min(nonfinite.len())
                    .min(done.len()),
            ));
        }
        self.book(reward.view_mut(), terminated, nonfinite, done);
        self.reset_done(done);
        Ok((0..n).filter(|&i| done[i].is_done()).collect())
    }

    /// Episode counters, done flags (rewards of non-finite rows zeroed) and returns.
    fn book(
        &mut self,
        mut reward: ArrayViewMut1<f32>,
        terminated: &[bool],
        nonfinite: &[bool],
        done: &mut [Done],
    ) {
        let episode_length = self.task.spec().episode_length as u32;
        for i in 0..self.num_envs() {
            self.progress[i] += 1;
            done[i] = if nonfinite[i] {
                reward[i] = 0.0;
                Done::NonFinite
            } else if self.progress[i] >= episode_length {
                // DiffRL tells truncation from termination by the episode length alone
                // (`episode_length < max_episode_length` ⇒ early termination), so an
                // episode that terminates on its last step still bootstraps.
                Done::TimeLimit
            } else if terminated[i] {
                Done::Terminated
            } else {
                Done::No
            };
            self.episode_return[i] += reward[i];
        }
    }

    /// Resets the envs whose episode ended, recording their returns.
    fn reset_done(&mut self, done: &[Done]) {
        for (i, d) in done.iter().enumerate() {
            if d.is_done() {
                self.finished_returns.push(self.episode_return[i]);
                self.reset_env(i);
            }
        }
    }

    /// Returns and clears the undiscounted returns of the episodes finished since the
    /// last call.
    pub fn take_finished_returns(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.finished_returns)
    }

    /// The serialisable state, for checkpoints.
    pub fn snapshot(&self) -> BatchEnvSnapshot {
        BatchEnvSnapshot {
            state: self.state.iter().copied().collect(),
            progress: self.progress.clone(),
            episode_return: self.episode_return.clone(),
            rng: self.rng.clone(),
        }
    }

    /// Restores a snapshot taken from a batch of the same task and size.
    pub fn restore(&mut self, snap: &BatchEnvSnapshot) -> Result<()> {
        let n = self.num_envs();
        let sd = self.task.spec().state_dim;
        if snap.state.len() != n * sd || snap.progress.len() != n || snap.episode_return.len() != n
        {
            return Err(Error::dim(
                "batch snapshot",
                format!("{n} envs × {sd} state"),
                format!("{} values, {} envs", snap.state.len(), snap.progress.len()),
            ));
        }
        self.state = Array2::from_shape_vec((n, sd), snap.state.clone())
            .map_err(|e| Error::dim("batch snapshot", n * sd, e))?;
        self.progress = snap.progress.clone();
        self.episode_return = snap.episode_return.clone();
        self.rng = snap.rng.clone();
        self.finished_returns.clear();
        Ok(())
    }
}

/// What the reverse sweep needs for one window of `h` steps over `N` envs: the inputs of
/// every step (the simulator's tape, see [`crate::task`]), the pre-reset outputs, rewards
/// and done flags. Allocated once and reused across windows.
pub struct WindowTape {
    /// Start state of step t (after any reset at t−1): `[h, N, S]`.
    pub states: Array3<f32>,
    /// Action applied at step t (what the task received): `[h, N, A]`.
    pub actions: Array3<f32>,
    /// State after step t, before any reset: `[h, N, S]`.
    pub next_states: Array3<f32>,
    /// Reward of step t: `[h, N]`.
    pub rewards: Array2<f32>,
    /// Done flag of step t: `h` rows of `N`.
    pub done: Vec<Vec<Done>>,
}

impl WindowTape {
    /// Allocates a tape for `h` steps of `n` envs.
    pub fn new(h: usize, n: usize, state_dim: usize, act_dim: usize) -> Self {
        WindowTape {
            states: Array3::zeros((h, n, state_dim)),
            actions: Array3::zeros((h, n, act_dim)),
            next_states: Array3::zeros((h, n, state_dim)),
            rewards: Array2::zeros((h, n)),
            done: vec![vec![Done::No; n]; h],
        }
    }

    /// Window length h.
    pub fn horizon(&self) -> usize {
        self.states.len_of(Axis(0))
    }

    /// Records step `t` of `env`: stores the start state and action, steps the batch, and
    /// stores the outputs.
    pub fn record_step(
        &mut self,
        t: usize,
        env: &mut BatchEnv,
        actions: ArrayView2<f32>,
    ) -> Result<()> {
        self.states.slice_mut(s![t, .., ..]).assign(&env.state());
        self.actions.slice_mut(s![t, .., ..]).assign(&actions);
        let next = self.next_states.slice_mut(s![t, .., ..]);
        let rew = self.rewards.row_mut(t);
        env.step(actions, next, rew, &mut self.done[t])
    }
}

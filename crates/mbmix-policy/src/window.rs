//! The window engine: a forward rollout of `h` steps that records a [`WindowTape`], and the
//! reverse sweep that turns per-step loss seeds into the actor gradient (ARCHITECTURE.md,
//! "The data's path through one training epoch"; algorithms.md §1.3).
//!
//! The objective is not hard-wired. Any window objective that is linear in the rewards and
//! in the terminal values,
//!
//! ```text
//! L = Σ_t Σ_i  reward_seed[t,i] · r_t,i  +  value_seed[t,i] · V′(ô(s⁺_t,i))
//! ```
//!
//! (`s⁺_t` the pre-reset state after step t, `ô` the frozen-normalised observation, V′ a
//! value network whose parameters are not trained by this loss) is described by a
//! [`WindowSeeds`]; SHAC's seeds come from [`shac_seeds`], MB-MIX's λ-mixed objective
//! ([`crate::mix::mix_seeds`]) only changes the weights. The dynamics adjoint is a
//! [`StepAdjoint`]: the simulator's VJP ([`SimulatorAdjoint`]), a learned model's
//! ([`crate::model::ModelAdjoint`], or the simulator adjoint of a
//! [`crate::model::ModelTask`]), or a chain of two ([`HandoverAdjoint`]).
//!
//! Reverse sweep, for t = h−1 down to 0 (adjoints written `ā`):
//! 1. `s̄⁺_t` = value VJP (through V′, the frozen normalisation and `observe_vjp`), batched
//!    over the whole window before the sweep, plus `s̄_{t+1}` carried from step t+1 unless
//!    the env reset at t (resets cut the adjoint; the window start cuts it too);
//! 2. `reward_vjp` adds `∂r/∂s⁺` and `∂r/∂a` weighted by `reward_seed[t]`;
//! 3. `step_vjp` gives `s̄_t` and adds into `ā_t`;
//! 4. `ā_t` goes through tanh, the Gaussian reparameterisation (→ log-std) and μ (the
//!    actor's forward pass at step t is re-run and its VJP taken, [`Mlp::vjp`]) into θ and
//!    into the normalised observation, then through the frozen normalisation and
//!    `observe_vjp` into `s̄_t`.
//!
//! Envs whose step produced a non-finite state (`Done::NonFinite`) contribute nothing: their
//! reward was replaced by a constant 0 and they neither bootstrap nor carry, so their
//! adjoints are exactly zero and are set so explicitly (a NaN state times a zero adjoint
//! would otherwise poison the sum).

use crate::error::Result;
use crate::nn::Mlp;
use crate::policy::StochasticActor;
use crate::rms::RunningMeanStd;
use diff_core::rng::fill_normal;
use diff_core::{BatchEnv, Done, ResidentWindow, SeededRng, Task, WindowTape, NONFINITE_LIMIT};
use ndarray::{s, Array2, Array3, ArrayView2, ArrayViewMut2, Axis};

/// The adjoint of one dynamics step `s_{t+1} = F(s_t, a_t)` of the recorded window:
/// `adj_s += (∂F/∂s)ᵀ adj_next`, `adj_a += (∂F/∂a)ᵀ adj_next` (accumulating, as diff-core's
/// VJPs). `t` lets an implementation use per-step caches of its own.
pub trait StepAdjoint {
    /// VJP of step `t` at `(s, a)`.
    fn step_vjp(
        &self,
        t: usize,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    );
}

/// The tasks whose observation and reward functions a reverse sweep differentiates:
/// `before` at steps t < `at`, `after` from `at` on (the same task for an ordinary window).
#[derive(Clone, Copy)]
pub struct HandoverTasks<'a> {
    /// Steps t < `at`.
    pub before: &'a dyn Task,
    /// Steps t ≥ `at`.
    pub after: &'a dyn Task,
    /// The first step of `after`.
    pub at: usize,
}

impl<'a> HandoverTasks<'a> {
    /// The task of step `t`.
    pub fn at(&self, t: usize) -> &'a dyn Task {
        if t < self.at {
            self.before
        } else {
            self.after
        }
    }
}

/// The simulator's own adjoint ([`Task::step_vjp`]).
pub struct SimulatorAdjoint<'a>(pub &'a dyn Task);

impl StepAdjoint for SimulatorAdjoint<'_> {
    fn step_vjp(
        &self,
        _t: usize,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        self.0.step_vjp(s, a, adj_next, adj_s, adj_a);
    }
}

/// A chain of two step sources (see [`WindowEngine::rollout_handover`]): `before` for the
/// steps t < `at`, `after` from `at` on.
pub struct HandoverAdjoint<'a> {
    /// The first step of `after`.
    pub at: usize,
    /// Adjoint of the steps before the handover.
    pub before: &'a dyn StepAdjoint,
    /// Adjoint of the steps from the handover on.
    pub after: &'a dyn StepAdjoint,
}

impl StepAdjoint for HandoverAdjoint<'_> {
    fn step_vjp(
        &self,
        t: usize,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        let source = if t < self.at { self.before } else { self.after };
        source.step_vjp(t, s, a, adj_next, adj_s, adj_a);
    }
}

/// Loss seeds of a window objective (see the module docs): `∂L/∂r_t,i` and
/// `∂L/∂V′(ô(s⁺_t,i))`, both `[h, N]`.
#[derive(Clone, Debug)]
pub struct WindowSeeds {
    /// Weight of each reward in the loss.
    pub reward: Array2<f32>,
    /// Weight of each terminal value in the loss (0 where no bootstrap).
    pub value: Array2<f32>,
}

impl WindowSeeds {
    /// Zero seeds for `h` steps of `n` envs.
    pub fn zeros(h: usize, n: usize) -> Self {
        WindowSeeds {
            reward: Array2::zeros((h, n)),
            value: Array2::zeros((h, n)),
        }
    }
}

/// SHAC's actor loss (algorithms.md §1.3, DiffRL `compute_actor_loss`): per env a running
/// discount γ^k that restarts after every done; every segment that ends inside the window
/// (done at step t) or at its end (t = h−1) contributes `−(Σ γ^k·rew_scale·r + γ·γ^k·V′)`;
/// the sum is divided by h·N.
///
/// `bootstrap[t,i]` says whether the state after step t may be valued (see
/// [`WindowEngine::bootstrap`]); `next_values[t,i]` must be 0 where it may not. Fills `seeds`
/// and returns the loss value.
pub fn shac_seeds(
    done: &[Vec<Done>],
    bootstrap: ArrayView2<bool>,
    rewards: ArrayView2<f32>,
    next_values: ArrayView2<f32>,
    gamma: f32,
    rew_scale: f32,
    seeds: &mut WindowSeeds,
) -> f32 {
    let (h, n) = rewards.dim();
    let scale = 1.0 / (h * n) as f32;
    let mut discount = vec![1.0f32; n];
    let mut loss = 0.0f64;
    for t in 0..h {
        for i in 0..n {
            let d = done[t][i];
            let r_seed = if d == Done::NonFinite {
                0.0
            } else {
                -discount[i] * rew_scale * scale
            };
            let ends_segment = d.is_done() || t + 1 == h;
            let v_seed = if ends_segment && bootstrap[[t, i]] {
                -gamma * discount[i] * scale
            } else {
                0.0
            };
            seeds.reward[[t, i]] = r_seed;
            seeds.value[[t, i]] = v_seed;
            loss += (r_seed * rewards[[t, i]]) as f64 + (v_seed * next_values[[t, i]]) as f64;
            discount[i] = if d.is_done() {
                1.0
            } else {
                discount[i] * gamma
            };
        }
    }
    loss as f32
}

/// A resident window's failed sweep: reported, and the actor gradient made NaN so that the
/// trainer's non-finite rule (abort or skip) meets it.
fn void_gradient(grads: &mut [&mut [f32]], who: &str, e: diff_core::Error) {
    eprintln!("{who}: reverse sweep failed: {e}");
    for g in grads.iter_mut() {
        g.fill(f32::NAN);
    }
}

/// Forward rollout and reverse sweep over windows of `h` steps of `N` envs. All buffers are
/// allocated once and reused across windows.
pub struct WindowEngine {
    /// The recorded window: start states, env actions, pre-reset next states, rewards, dones.
    pub tape: WindowTape,
    /// Normalised observations of the start states `[h, N, O]` (actor inputs; the critic's
    /// training inputs).
    pub obs: Array3<f32>,
    /// Normalised observations of the pre-reset next states `[h, N, O]`; rows of
    /// non-finite states are zeroed.
    pub next_obs: Array3<f32>,
    /// The exploration noise ε of each step `[h, N, A]`.
    pub noise: Array3<f32>,
    /// Whether the pre-reset state after step t may be valued by the critic `[h, N]`: the
    /// episode continues or hit the time limit ([`Done::bootstraps`]) and its raw observation
    /// is finite with |o| ≤ 1e6 (DiffRL's `obs_before_reset` check).
    pub bootstrap: Array2<bool>,
    /// The last reverse sweep's adjoint of the state after step t, ∂L/∂s_{t+1} `[h, N, S]`
    /// (what the step VJP received; MB-MIX's `sobolev.direction_source = policy_adjoint`).
    pub step_adj: Array3<f32>,
    /// Whether the sweep keeps the simulator step's own VJP of [`Self::step_adj`] in
    /// [`Self::step_vjp_s`] / [`Self::step_vjp_a`] (MB-MIX's `policy_adjoint` targets reuse
    /// them). Off (default): those stay empty.
    pub record_step_vjp: bool,
    /// With [`Self::record_step_vjp`], the last sweep's `(∂F/∂s)ᵀ step_adj` at each step
    /// `[h, N, S]`, before anything else is added into the state adjoint.
    pub step_vjp_s: Array3<f32>,
    /// With [`Self::record_step_vjp`], the last sweep's `(∂F/∂a)ᵀ step_adj` `[h, N, A]`: the
    /// step's part of the action adjoint alone (the reward's is not in it).
    pub step_vjp_a: Array3<f32>,
    /// Weight of the task's auxiliary training reward ([`Task::aux_reward`], BPTT/APG's
    /// `aux_reward`): the sweep adds its VJP at each step with the step's reward seed times
    /// this weight. 0 (default): none.
    pub aux_weight: f32,
    raw_obs: Array2<f32>,
    obs_adj: Array3<f32>,
    next_state_adj: Array3<f32>,
    carry: Array2<f32>,
    adj_next: Array2<f32>,
    adj_s: Array2<f32>,
    adj_a: Array2<f32>,
    adj_obs: Vec<f32>,
    value_param_scratch: Vec<f32>,
    /// The simulator's resident window, when attached ([`WindowEngine::attach_resident`]).
    resident: Option<Box<dyn ResidentWindow>>,
}

impl WindowEngine {
    /// Buffers for windows of `h` steps of `n` envs of `task`.
    pub fn new(task: &dyn Task, h: usize, n: usize) -> Self {
        let spec = task.spec();
        let (sd, od, ad) = (spec.state_dim, spec.obs_dim, spec.act_dim);
        WindowEngine {
            tape: WindowTape::new(h, n, sd, ad),
            obs: Array3::zeros((h, n, od)),
            next_obs: Array3::zeros((h, n, od)),
            noise: Array3::zeros((h, n, ad)),
            bootstrap: Array2::from_elem((h, n), false),
            raw_obs: Array2::zeros((n, od)),
            obs_adj: Array3::zeros((h, n, od)),
            next_state_adj: Array3::zeros((h, n, sd)),
            step_adj: Array3::zeros((h, n, sd)),
            record_step_vjp: false,
            step_vjp_s: Array3::zeros((0, n, sd)),
            step_vjp_a: Array3::zeros((0, n, ad)),
            aux_weight: 0.0,
            carry: Array2::zeros((n, sd)),
            adj_next: Array2::zeros((n, sd)),
            adj_s: Array2::zeros((n, sd)),
            adj_a: Array2::zeros((n, ad)),
            adj_obs: vec![0.0; n * od],
            value_param_scratch: Vec::new(),
            resident: None,
        }
    }

    /// Keeps the window's batch state where `task`'s simulator runs, when it offers a
    /// [`ResidentWindow`] ([`Task::resident_window`]: the CUDA kernels, or their host
    /// build): the rollout then uploads the start states once, sends actions and receives
    /// observations, rewards and done flags at each step, and downloads the end states
    /// into the [`BatchEnv`]; the reverse sweep sends the adjoint seeds and receives the
    /// action adjoints. Returns whether one was attached.
    ///
    /// A resident window serves the plain rollout and the sweeps of a single task
    /// (SHAC, BPTT): the tape's `states` and `next_states` stay on the device (not filled on
    /// the host), and handovers, [`Self::record_step_vjp`] and [`Self::aux_weight`] are
    /// refused (the rollout returns an error, the sweep poisons the gradient with NaN).
    pub fn attach_resident(&mut self, task: &dyn Task) -> Result<bool> {
        match task.resident_window(self.horizon(), self.num_envs()) {
            Some(w) => {
                self.resident = Some(w?);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Goes back to host-side windows (MB-MIX, whose model data needs the states).
    pub fn detach_resident(&mut self) {
        self.resident = None;
    }

    /// Where the resident window runs, if one is attached.
    pub fn resident(&self) -> Option<String> {
        self.resident.as_ref().map(|r| r.describe())
    }

    /// Window length h.
    pub fn horizon(&self) -> usize {
        self.tape.horizon()
    }
    /// Number of envs N.
    pub fn num_envs(&self) -> usize {
        self.obs.len_of(Axis(1))
    }

    /// Observes `state` into `raw_obs`, optionally updates `running` with it, and writes its
    /// `frozen`-normalised version into `out`.
    fn observe_normalised(
        task: &dyn Task,
        state: ArrayView2<f32>,
        raw_obs: &mut Array2<f32>,
        running: Option<&mut RunningMeanStd>,
        frozen: Option<&RunningMeanStd>,
        out: ArrayViewMut2<f32>,
    ) {
        task.observe(state, raw_obs.view_mut());
        Self::normalised(raw_obs, running, frozen, out);
    }

    /// Optionally updates `running` with `raw_obs` and writes its `frozen`-normalised
    /// version into `out`.
    fn normalised(
        raw_obs: &Array2<f32>,
        running: Option<&mut RunningMeanStd>,
        frozen: Option<&RunningMeanStd>,
        mut out: ArrayViewMut2<f32>,
    ) {
        if let Some(r) = running {
            r.update(raw_obs.view());
        }
        out.assign(raw_obs);
        if let Some(f) = frozen {
            f.normalize_in_place(out);
        }
    }

    /// Step t's actions from the observations `obs[t]`: `tanh(μ + σε)` with the noise ε drawn
    /// from `noise_rng` into `noise[t]`, or `tanh(μ)` (and zero noise) without it.
    fn act(
        &mut self,
        t: usize,
        actor: &StochasticActor,
        noise_rng: Option<&mut SeededRng>,
        actions: &mut Array2<f32>,
    ) {
        let n = self.num_envs();
        let sample = noise_rng.is_some();
        let mut eps = self.noise.slice_mut(s![t, .., ..]);
        match noise_rng {
            Some(rng) => fill_normal(rng, eps.as_slice_mut().expect("contiguous noise")),
            None => eps.fill(0.0),
        }
        let obs_t = self.obs.slice(s![t, .., ..]);
        let noise_t = self.noise.slice(s![t, .., ..]);
        actor.act(
            obs_t.as_slice().expect("contiguous obs"),
            n,
            sample.then(|| noise_t.as_slice().expect("contiguous noise")),
            actions.as_slice_mut().expect("contiguous actions"),
        );
    }

    /// `bootstrap[t]` from the done flags and the raw pre-reset observations in `raw_obs`,
    /// and the rows of `next_obs[t]` that may not be valued zeroed.
    fn mark_bootstrap(&mut self, t: usize) {
        for (i, d) in self.tape.done[t].iter().enumerate() {
            let raw_ok = self
                .raw_obs
                .row(i)
                .iter()
                .all(|x| x.is_finite() && x.abs() <= NONFINITE_LIMIT);
            self.bootstrap[[t, i]] = d.bootstraps() && raw_ok;
            let mut row = self.next_obs.slice_mut(s![t, i, ..]);
            if !raw_ok || row.iter().any(|x| !x.is_finite()) {
                row.fill(0.0);
            }
        }
    }

    /// Rolls `actor` out for `h` steps in `env`, recording the tape.
    ///
    /// Observations are normalised with `frozen` (the statistics copied at the window start)
    /// while `running` is updated with every new observation: the window's first one and the
    /// post-reset observation after every step (DiffRL). With `noise_rng` the actions are
    /// sampled (`tanh(μ + σε)`), without it they are `tanh(μ)` and the noise is zero.
    pub fn rollout(
        &mut self,
        env: &mut BatchEnv,
        actor: &StochasticActor,
        frozen: Option<&RunningMeanStd>,
        running: Option<&mut RunningMeanStd>,
        noise_rng: Option<&mut SeededRng>,
    ) -> Result<()> {
        self.rollout_handover(env, None, actor, frozen, running, noise_rng)
    }

    /// [`WindowEngine::rollout`] through two step sources as one chain (MB-MIX reading B):
    /// with `handover = Some((k, next))` the steps t < k run in `env`; at t = k, `next` is
    /// restored from `env`'s snapshot (state, episode counters, reset RNG) and the steps
    /// t ≥ k run in `next` (`env` stays at its state after step k − 1). The two envs must be
    /// batches of the same size over tasks with the same observation function (e.g. a task
    /// and its [`crate::model::ModelTask`]). Reverse-sweep the chain with a
    /// [`HandoverAdjoint`] at the same `k`.
    pub fn rollout_handover(
        &mut self,
        env: &mut BatchEnv,
        mut handover: Option<(usize, &mut BatchEnv)>,
        actor: &StochasticActor,
        frozen: Option<&RunningMeanStd>,
        mut running: Option<&mut RunningMeanStd>,
        mut noise_rng: Option<&mut SeededRng>,
    ) -> Result<()> {
        if let Some(mut r) = self.resident.take() {
            let out = if handover.is_some() {
                Err(crate::Error::config(
                    "resident window",
                    "cannot hand a rollout over to another task (detach it)",
                ))
            } else {
                self.rollout_resident(r.as_mut(), env, actor, frozen, running, noise_rng)
            };
            self.resident = Some(r);
            return out;
        }
        let task = env.task().clone();
        let h = self.horizon();
        let n = self.num_envs();
        let ad = self.noise.len_of(Axis(2));
        let mut actions = Array2::<f32>::zeros((n, ad));
        Self::observe_normalised(
            task.as_ref(),
            env.state(),
            &mut self.raw_obs,
            running.as_deref_mut(),
            frozen,
            self.obs.slice_mut(s![0, .., ..]),
        );
        for t in 0..h {
            self.act(t, actor, noise_rng.as_deref_mut(), &mut actions);
            let cur: &mut BatchEnv = match &mut handover {
                Some((k, next)) if t >= *k => {
                    if t == *k {
                        next.restore(&env.snapshot())?;
                    }
                    next
                }
                _ => env,
            };
            self.tape.record_step(t, cur, actions.view())?;
            // Pre-reset next observation (for the bootstrap value), not counted in the stats.
            Self::observe_normalised(
                task.as_ref(),
                self.tape.next_states.slice(s![t, .., ..]),
                &mut self.raw_obs,
                None,
                frozen,
                self.next_obs.slice_mut(s![t, .., ..]),
            );
            self.mark_bootstrap(t);
            // Post-reset observation: the start of step t+1; updates the running stats.
            if t + 1 < h {
                Self::observe_normalised(
                    task.as_ref(),
                    cur.state(),
                    &mut self.raw_obs,
                    running.as_deref_mut(),
                    frozen,
                    self.obs.slice_mut(s![t + 1, .., ..]),
                );
            } else if let Some(r) = running.as_deref_mut() {
                task.observe(cur.state(), self.raw_obs.view_mut());
                r.update(self.raw_obs.view());
            }
        }
        Ok(())
    }

    /// [`WindowEngine::rollout`] through a resident window `r` (see
    /// [`WindowEngine::attach_resident`]): the same observations, actions, rewards, done
    /// flags and bootstrap flags, with the states kept by `r`.
    fn rollout_resident(
        &mut self,
        r: &mut dyn ResidentWindow,
        env: &mut BatchEnv,
        actor: &StochasticActor,
        frozen: Option<&RunningMeanStd>,
        mut running: Option<&mut RunningMeanStd>,
        mut noise_rng: Option<&mut SeededRng>,
    ) -> Result<()> {
        let h = self.horizon();
        let n = self.num_envs();
        let ad = self.noise.len_of(Axis(2));
        let sd = self.carry.ncols();
        let mut actions = Array2::<f32>::zeros((n, ad));
        let (mut terminated, mut nonfinite) = (vec![false; n], vec![false; n]);
        r.begin(env.state())?;
        r.observe(self.raw_obs.view_mut())?;
        Self::normalised(
            &self.raw_obs,
            running.as_deref_mut(),
            frozen,
            self.obs.slice_mut(s![0, .., ..]),
        );
        for t in 0..h {
            self.act(t, actor, noise_rng.as_deref_mut(), &mut actions);
            self.tape.actions.slice_mut(s![t, .., ..]).assign(&actions);
            r.step(
                t,
                actions.view(),
                self.raw_obs.view_mut(),
                self.tape.rewards.row_mut(t),
                &mut terminated,
                &mut nonfinite,
            )?;
            let resets = env.step_external(
                self.tape.rewards.row_mut(t),
                &terminated,
                &nonfinite,
                &mut self.tape.done[t],
            )?;
            if !resets.is_empty() {
                let rows = env.state().select(Axis(0), &resets);
                r.reset_rows(&resets, rows.view())?;
            }
            // Pre-reset next observation (for the bootstrap value), not counted in the stats.
            Self::normalised(
                &self.raw_obs,
                None,
                frozen,
                self.next_obs.slice_mut(s![t, .., ..]),
            );
            self.mark_bootstrap(t);
            // Post-reset observation: the start of step t+1; updates the running stats.
            if t + 1 < h {
                r.observe(self.raw_obs.view_mut())?;
                Self::normalised(
                    &self.raw_obs,
                    running.as_deref_mut(),
                    frozen,
                    self.obs.slice_mut(s![t + 1, .., ..]),
                );
            } else if let Some(rs) = running.as_deref_mut() {
                r.observe(self.raw_obs.view_mut())?;
                rs.update(self.raw_obs.view());
            }
        }
        let mut end = Array2::<f32>::zeros((n, sd));
        r.end(end.view_mut())?;
        env.set_state(end.view())?;
        Ok(())
    }

    /// V′ of every pre-reset next state of the window into `out` `[h, N]`, set to 0 where the
    /// episode ended without bootstrap (`Terminated`, `NonFinite`): SHAC's `next_values`.
    pub fn terminal_values(&self, value_net: &Mlp<f32>, out: &mut Array2<f32>) {
        let h = self.horizon();
        let n = self.num_envs();
        let values = value_net.forward(
            self.next_obs.as_slice().expect("contiguous next obs"),
            h * n,
        );
        for t in 0..h {
            for i in 0..n {
                out[[t, i]] = if self.bootstrap[[t, i]] {
                    values[t * n + i]
                } else {
                    0.0
                };
            }
        }
    }

    /// The reverse sweep: adds `∂L/∂θ` of the window objective given by `seeds` into
    /// `actor_grad` (layout of [`StochasticActor::params_flat`]).
    ///
    /// `value_net` is V′ (evaluated on `next_obs`), `frozen` the normalisation used by the
    /// rollout, `task` supplies the observation and reward VJPs, `dynamics` the step VJP.
    #[allow(clippy::too_many_arguments)]
    pub fn reverse_sweep(
        &mut self,
        task: &dyn Task,
        dynamics: &dyn StepAdjoint,
        actor: &StochasticActor,
        value_net: &Mlp<f32>,
        frozen: Option<&RunningMeanStd>,
        seeds: &WindowSeeds,
        actor_grad: &mut [f32],
    ) {
        let tasks = HandoverTasks {
            before: task,
            after: task,
            at: 0,
        };
        self.sweep(
            &tasks,
            dynamics,
            actor,
            Some(value_net),
            frozen,
            seeds,
            &mut [actor_grad],
        );
    }

    /// [`WindowEngine::reverse_sweep`] with the actor gradient split by env group: group
    /// k (the rows i with i·G/n = k, G = `group_grads.len()`) adds its rows' contribution
    /// into `group_grads[k]`. Rows are independent through the sweep, so each group's
    /// gradient is the gradient of the objective with the other groups' seeds zeroed, for
    /// the cost of one sweep instead of G (the MB-MIX gradient-variance diagnostic).
    #[allow(clippy::too_many_arguments)]
    pub fn reverse_sweep_grouped(
        &mut self,
        task: &dyn Task,
        dynamics: &dyn StepAdjoint,
        actor: &StochasticActor,
        value_net: &Mlp<f32>,
        frozen: Option<&RunningMeanStd>,
        seeds: &WindowSeeds,
        group_grads: &mut [Vec<f32>],
    ) {
        let tasks = HandoverTasks {
            before: task,
            after: task,
            at: 0,
        };
        let mut grads: Vec<&mut [f32]> = group_grads.iter_mut().map(|g| g.as_mut_slice()).collect();
        self.sweep(
            &tasks,
            dynamics,
            actor,
            Some(value_net),
            frozen,
            seeds,
            &mut grads,
        );
    }

    /// [`WindowEngine::reverse_sweep`] of a rollout that changed task at a step (a
    /// [`WindowEngine::rollout_handover`], or a whole rollout in a model task): the
    /// observation and reward VJPs of step t come from `tasks.at(t)`.
    #[allow(clippy::too_many_arguments)]
    pub fn reverse_sweep_handover(
        &mut self,
        tasks: &HandoverTasks<'_>,
        dynamics: &dyn StepAdjoint,
        actor: &StochasticActor,
        value_net: &Mlp<f32>,
        frozen: Option<&RunningMeanStd>,
        seeds: &WindowSeeds,
        actor_grad: &mut [f32],
    ) {
        self.sweep(
            tasks,
            dynamics,
            actor,
            Some(value_net),
            frozen,
            seeds,
            &mut [actor_grad],
        );
    }

    /// The reverse sweep of an objective without terminal values (BPTT): as
    /// [`WindowEngine::reverse_sweep`] with no value network.
    ///
    /// # Panics
    /// If a value seed is nonzero (a caller bug: there is no network to differentiate).
    pub fn reverse_sweep_rewards_only(
        &mut self,
        task: &dyn Task,
        dynamics: &dyn StepAdjoint,
        actor: &StochasticActor,
        frozen: Option<&RunningMeanStd>,
        seeds: &WindowSeeds,
        actor_grad: &mut [f32],
    ) {
        assert!(
            seeds.value.iter().all(|&v| v == 0.0),
            "reverse_sweep_rewards_only: nonzero value seeds"
        );
        let tasks = HandoverTasks {
            before: task,
            after: task,
            at: 0,
        };
        self.sweep(
            &tasks,
            dynamics,
            actor,
            None,
            frozen,
            seeds,
            &mut [actor_grad],
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn sweep(
        &mut self,
        tasks: &HandoverTasks<'_>,
        dynamics: &dyn StepAdjoint,
        actor: &StochasticActor,
        value_net: Option<&Mlp<f32>>,
        frozen: Option<&RunningMeanStd>,
        seeds: &WindowSeeds,
        grads: &mut [&mut [f32]],
    ) {
        let h = self.horizon();
        let n = self.num_envs();
        let od = self.obs.len_of(Axis(2));
        let groups = grads.len();
        assert!((1..=n.max(1)).contains(&groups), "actor gradient groups");
        for g in grads.iter() {
            assert_eq!(g.len(), actor.num_params(), "actor gradient length");
        }
        // row group k is the rows i with i·G/n = k (contiguous)
        let group_of = |i: usize| i * groups / n;
        assert_eq!(seeds.reward.dim(), (h, n), "seed shape");
        let inv_std: Vec<f32> = match frozen {
            Some(f) => f.inv_std(),
            None => vec![1.0; od],
        };

        // 1. Terminal values: one batched VJP of V′ over every (t, i) with a value seed.
        self.next_state_adj.fill(0.0);
        self.obs_adj.fill(0.0);
        let rows: Vec<(usize, usize)> = (0..h)
            .flat_map(|t| (0..n).map(move |i| (t, i)))
            .filter(|&(t, i)| seeds.value[[t, i]] != 0.0)
            .collect();
        if let (false, Some(value_net)) = (rows.is_empty(), value_net) {
            let k = rows.len();
            let mut x = Vec::with_capacity(k * od);
            let mut seed = Vec::with_capacity(k);
            for &(t, i) in &rows {
                x.extend(self.next_obs.slice(s![t, i, ..]).iter());
                seed.push(seeds.value[[t, i]]);
            }
            let mut in_grad = vec![0.0f32; k * od];
            self.value_param_scratch.clear();
            self.value_param_scratch.resize(value_net.num_params(), 0.0);
            value_net.vjp(
                &x,
                k,
                &seed,
                &mut self.value_param_scratch,
                Some(&mut in_grad),
            );
            for (r, &(t, i)) in rows.iter().enumerate() {
                for o in 0..od {
                    self.obs_adj[[t, i, o]] = in_grad[r * od + o] * inv_std[o];
                }
            }
            let mut t_prev = usize::MAX;
            for &(t, _) in &rows {
                if t != t_prev && self.resident.is_none() {
                    tasks.at(t).observe_vjp(
                        self.tape.next_states.slice(s![t, .., ..]),
                        self.obs_adj.slice(s![t, .., ..]),
                        self.next_state_adj.slice_mut(s![t, .., ..]),
                    );
                    t_prev = t;
                }
            }
        }

        // 2. The sweep.
        let mu_params = actor.mu.num_params();
        let std: Vec<f32> = actor.logstd.iter().map(|l| l.exp()).collect();
        self.carry.fill(0.0);
        let mut resident = self.resident.take();
        if resident.is_some() && (self.record_step_vjp || self.aux_weight != 0.0) {
            eprintln!(
                "window engine: a resident window has no step VJP record and no auxiliary reward; \
                 the actor gradient is void"
            );
            for g in grads.iter_mut() {
                g.fill(f32::NAN);
            }
            self.resident = resident;
            return;
        }
        // the steps t whose next-state adjoint gets a value VJP
        let mut valued = vec![false; h];
        if value_net.is_some() {
            for &(t, _) in &rows {
                valued[t] = true;
            }
        }
        for t in (0..h).rev() {
            if let Some(r) = resident.as_deref_mut() {
                let done = &self.tape.done[t];
                let carry: Vec<bool> = done.iter().map(|d| t + 1 < h && !d.is_done()).collect();
                let zero: Vec<bool> = done.iter().map(|d| *d == Done::NonFinite).collect();
                let obs_adj = valued[t].then(|| self.obs_adj.slice(s![t, .., ..]));
                if let Err(e) = r.sweep_step(
                    t,
                    obs_adj,
                    &carry,
                    seeds.reward.row(t),
                    &zero,
                    self.adj_a.view_mut(),
                ) {
                    void_gradient(grads, &r.describe(), e);
                    break;
                }
            } else {
                self.host_step_adjoint(t, tasks, dynamics, seeds);
            }
            self.actor_adjoint(t, actor, &std, &inv_std, grads, mu_params, group_of);
            let adj_obs = ArrayView2::from_shape((n, od), &self.adj_obs).expect("obs adjoint");
            if let Some(r) = resident.as_deref_mut() {
                if let Err(e) = r.sweep_observe(t, adj_obs) {
                    void_gradient(grads, &r.describe(), e);
                    break;
                }
            } else {
                tasks.at(t).observe_vjp(
                    self.tape.states.slice(s![t, .., ..]),
                    adj_obs,
                    self.adj_s.view_mut(),
                );
                std::mem::swap(&mut self.carry, &mut self.adj_s);
            }
        }
        self.resident = resident;
    }

    /// The host sweep's step t up to the action adjoint: the next-state adjoint (value part,
    /// carry, reward VJP), the step VJP into `adj_s` and `adj_a`, the auxiliary reward, and
    /// the non-finite rows zeroed.
    fn host_step_adjoint(
        &mut self,
        t: usize,
        tasks: &HandoverTasks<'_>,
        dynamics: &dyn StepAdjoint,
        seeds: &WindowSeeds,
    ) {
        let h = self.horizon();
        let n = self.num_envs();
        let ad = self.noise.len_of(Axis(2));
        {
            let done = &self.tape.done[t];
            self.adj_next
                .assign(&self.next_state_adj.slice(s![t, .., ..]));
            if t + 1 < h {
                for (i, d) in done.iter().enumerate() {
                    if !d.is_done() {
                        let mut row = self.adj_next.row_mut(i);
                        row += &self.carry.row(i);
                    }
                }
            }
            self.adj_a.fill(0.0);
            tasks.at(t).reward_vjp(
                self.tape.next_states.slice(s![t, .., ..]),
                self.tape.actions.slice(s![t, .., ..]),
                seeds.reward.row(t),
                self.adj_next.view_mut(),
                self.adj_a.view_mut(),
            );
            for (i, d) in done.iter().enumerate() {
                if *d == Done::NonFinite {
                    self.adj_next.row_mut(i).fill(0.0);
                }
            }
            self.step_adj
                .slice_mut(s![t, .., ..])
                .assign(&self.adj_next);
            self.adj_s.fill(0.0);
            if self.record_step_vjp {
                // the step's own action adjoint apart, then added to the reward's
                if self.step_vjp_s.dim().0 != h {
                    self.step_vjp_s = Array3::zeros((h, n, self.adj_s.ncols()));
                    self.step_vjp_a = Array3::zeros((h, n, ad));
                }
                let mut va = self.step_vjp_a.slice_mut(s![t, .., ..]);
                va.fill(0.0);
                dynamics.step_vjp(
                    t,
                    self.tape.states.slice(s![t, .., ..]),
                    self.tape.actions.slice(s![t, .., ..]),
                    self.adj_next.view(),
                    self.adj_s.view_mut(),
                    va.view_mut(),
                );
                self.adj_a += &va;
                self.step_vjp_s.slice_mut(s![t, .., ..]).assign(&self.adj_s);
            } else {
                dynamics.step_vjp(
                    t,
                    self.tape.states.slice(s![t, .., ..]),
                    self.tape.actions.slice(s![t, .., ..]),
                    self.adj_next.view(),
                    self.adj_s.view_mut(),
                    self.adj_a.view_mut(),
                );
            }
            if self.aux_weight != 0.0 {
                let w = self.aux_weight;
                let seed = seeds.reward.row(t).mapv(|v| v * w);
                tasks.at(t).aux_reward_vjp(
                    self.tape.states.slice(s![t, .., ..]),
                    self.tape.actions.slice(s![t, .., ..]),
                    seed.view(),
                    self.adj_s.view_mut(),
                    self.adj_a.view_mut(),
                );
            }
            for (i, d) in done.iter().enumerate() {
                if *d == Done::NonFinite {
                    self.adj_s.row_mut(i).fill(0.0);
                    self.adj_a.row_mut(i).fill(0.0);
                }
            }
        }
    }

    /// The sweep's step t from the action adjoint `adj_a` on: through tanh and the
    /// Gaussian reparameterisation into the log-std, through μ into θ (by row group) and
    /// into the raw observation adjoint `adj_obs`.
    #[allow(clippy::too_many_arguments)]
    fn actor_adjoint(
        &mut self,
        t: usize,
        actor: &StochasticActor,
        std: &[f32],
        inv_std: &[f32],
        grads: &mut [&mut [f32]],
        mu_params: usize,
        group_of: impl Fn(usize) -> usize,
    ) {
        let n = self.num_envs();
        let od = self.obs.len_of(Axis(2));
        let ad = self.noise.len_of(Axis(2));
        {
            // Through tanh: a = tanh(a_raw) ⇒ ∂a/∂a_raw = 1 − a². Then a_raw = μ + σ ε.
            let actions = self.tape.actions.slice(s![t, .., ..]);
            let noise = self.noise.slice(s![t, .., ..]);
            for i in 0..n {
                for j in 0..ad {
                    let a = actions[[i, j]];
                    let g = self.adj_a[[i, j]] * (1.0 - a * a);
                    self.adj_a[[i, j]] = g;
                    // ∂a_raw/∂logstd = σ ε.
                    grads[group_of(i)][mu_params + j] += g * std[j] * noise[[i, j]];
                }
            }
            self.adj_obs.fill(0.0);
            let obs_t = self.obs.slice(s![t, .., ..]);
            let obs_t = obs_t.as_slice().expect("contiguous obs");
            let adj_a = self.adj_a.as_slice().expect("contiguous adjoint");
            let mut r0 = 0;
            for (k, g) in grads.iter_mut().enumerate() {
                let r1 = (r0..n).find(|&i| group_of(i) != k).unwrap_or(n);
                actor.mu.vjp(
                    &obs_t[r0 * od..r1 * od],
                    r1 - r0,
                    &adj_a[r0 * ad..r1 * ad],
                    &mut g[..mu_params],
                    Some(&mut self.adj_obs[r0 * od..r1 * od]),
                );
                r0 = r1;
            }
            for (k, v) in self.adj_obs.iter_mut().enumerate() {
                *v *= inv_std[k % od];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::MixStarts;
    use crate::nn::LinearInit;
    use crate::testing::PointMass;
    use diff_core::gradcheck::{fd_gradient, rel_err};
    use diff_core::{seeded, BatchEnvSnapshot};
    use std::sync::Arc;

    const H: usize = 4;
    const N: usize = 3;

    struct Setup {
        task: Arc<dyn Task>,
        snap: BatchEnvSnapshot,
        critic: Mlp<f32>,
        frozen: RunningMeanStd,
    }

    /// Three envs over a window of 4 steps (episode length 6):
    /// env 0 has 4 steps done → time-limit reset after step 1 (bootstrap from the pre-reset
    /// state, adjoint cut, new episode for steps 2–3); env 1 starts at x = 3.9 moving right →
    /// early termination at step 0 (no bootstrap); env 2 runs through the window end.
    fn setup() -> Setup {
        let task: Arc<dyn Task> = Arc::new(PointMass::new(6));
        let env = BatchEnv::new(task.clone(), N, 5, false).unwrap();
        let mut snap = env.snapshot();
        snap.state = vec![0.3, 0.5, 3.9, 3.0, -0.5, 0.2];
        snap.progress = vec![4, 0, 0];
        let mut rng = seeded(9, 1);
        let critic = Mlp::new(
            3,
            &[8],
            1,
            LinearInit::Orthogonal { gain: 2f64.sqrt() },
            &mut rng,
        );
        let frozen = RunningMeanStd {
            mean: vec![0.2, -0.1, 0.1],
            var: vec![1.5, 0.8, 0.3],
            count: 10.0,
        };
        Setup {
            task,
            snap,
            critic,
            frozen,
        }
    }

    /// The window objective of a test.
    #[derive(Clone, Copy)]
    enum Objective {
        Shac,
        Mix(f32, MixStarts),
    }

    /// Where the window's steps come from.
    #[derive(Clone)]
    enum Chain {
        Sim,
        /// Every step in this (model) task.
        Model(Arc<dyn Task>),
        /// The simulator before step k, this task from k on.
        Handover(usize, Arc<dyn Task>),
    }

    /// SHAC's loss for `actor` and, if asked, its gradient by the reverse sweep. `drop_values`
    /// zeroes the value seeds in the sweep only (a deliberately wrong gradient).
    fn loss_and_grad(
        s: &Setup,
        actor: &StochasticActor,
        grad: Option<&mut Vec<f32>>,
        drop_values: bool,
    ) -> (f32, Vec<Vec<Done>>) {
        loss_and_grad_of(s, actor, grad, drop_values, Objective::Shac, &Chain::Sim)
    }

    /// The loss of `objective` on a window rolled out along `chain` and, if asked, its
    /// gradient by the reverse sweep.
    fn loss_and_grad_of(
        s: &Setup,
        actor: &StochasticActor,
        grad: Option<&mut Vec<f32>>,
        drop_values: bool,
        objective: Objective,
        chain: &Chain,
    ) -> (f32, Vec<Vec<Done>>) {
        loss_and_grad_with(s, actor, grad, drop_values, objective, chain, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn loss_and_grad_with(
        s: &Setup,
        actor: &StochasticActor,
        grad: Option<&mut Vec<f32>>,
        drop_values: bool,
        objective: Objective,
        chain: &Chain,
        sim_rewards: bool,
    ) -> (f32, Vec<Vec<Done>>) {
        let task = s.task.clone();
        let mut env = BatchEnv::new(task.clone(), N, 5, false).unwrap();
        env.restore(&s.snap).unwrap();
        let mut engine = WindowEngine::new(task.as_ref(), H, N);
        let mut noise_rng = seeded(13, 2);
        let mut running = s.frozen.clone();
        let sim_adj = SimulatorAdjoint(task.as_ref());
        let other = match chain {
            Chain::Sim => None,
            Chain::Model(m) | Chain::Handover(_, m) => {
                Some(BatchEnv::new(m.clone(), N, 5, false).unwrap())
            }
        };
        let mut other = other;
        match (chain, other.as_mut()) {
            (Chain::Model(_), Some(menv)) => {
                menv.restore(&s.snap).unwrap();
                engine.rollout(
                    menv,
                    actor,
                    Some(&s.frozen),
                    Some(&mut running),
                    Some(&mut noise_rng),
                )
            }
            (Chain::Handover(k, _), Some(menv)) => engine.rollout_handover(
                &mut env,
                Some((*k, menv)),
                actor,
                Some(&s.frozen),
                Some(&mut running),
                Some(&mut noise_rng),
            ),
            _ => engine.rollout(
                &mut env,
                actor,
                Some(&s.frozen),
                Some(&mut running),
                Some(&mut noise_rng),
            ),
        }
        .unwrap();
        let mut next_values = Array2::zeros((H, N));
        engine.terminal_values(&s.critic, &mut next_values);
        let mut seeds = WindowSeeds::zeros(H, N);
        let (done, boot, rew, vals) = (
            &engine.tape.done,
            engine.bootstrap.view(),
            engine.tape.rewards.view(),
            next_values.view(),
        );
        let loss = match objective {
            Objective::Shac => shac_seeds(done, boot, rew, vals, 0.99, 1.0, &mut seeds),
            Objective::Mix(lambda, starts) => crate::mix::mix_seeds(
                done,
                boot,
                rew,
                vals,
                0.99,
                lambda,
                1.0,
                starts,
                crate::mix::LossScale::PerStep,
                &mut seeds,
            ),
        };
        if let Some(g) = grad {
            if drop_values {
                seeds.value.fill(0.0);
            }
            g.clear();
            g.resize(actor.num_params(), 0.0);
            let model_adj = match chain {
                Chain::Sim => None,
                Chain::Model(m) | Chain::Handover(_, m) => Some(SimulatorAdjoint(m.as_ref())),
            };
            let handover;
            let dynamics: &dyn StepAdjoint = match (chain, &model_adj) {
                (Chain::Model(_), Some(m)) => m,
                (Chain::Handover(k, _), Some(m)) => {
                    handover = HandoverAdjoint {
                        at: *k,
                        before: &sim_adj,
                        after: m,
                    };
                    &handover
                }
                _ => &sim_adj,
            };
            let tasks = match chain {
                Chain::Sim => HandoverTasks {
                    before: task.as_ref(),
                    after: task.as_ref(),
                    at: 0,
                },
                Chain::Model(m) => HandoverTasks {
                    before: task.as_ref(),
                    after: m.as_ref(),
                    at: 0,
                },
                Chain::Handover(k, m) => HandoverTasks {
                    before: task.as_ref(),
                    after: m.as_ref(),
                    at: *k,
                },
            };
            // `sim_rewards`: the simulator's observation and reward VJPs at every step
            // (the sweep's error before the handover tasks existed)
            let tasks = if sim_rewards {
                HandoverTasks {
                    after: task.as_ref(),
                    ..tasks
                }
            } else {
                tasks
            };
            engine.reverse_sweep_handover(
                &tasks,
                dynamics,
                actor,
                &s.critic,
                Some(&s.frozen),
                &seeds,
                g,
            );
        }
        (loss, engine.tape.done.clone())
    }

    /// The relative error of the sweep's gradient of `objective` along `chain` against
    /// central differences of its loss (the done pattern must not change under the
    /// perturbations), and the done pattern.
    fn fd_error(
        s: &Setup,
        actor: &StochasticActor,
        objective: Objective,
        chain: &Chain,
    ) -> (f64, Vec<f64>, Vec<Vec<Done>>) {
        let mut grad = Vec::new();
        let (_, done) = loss_and_grad_of(s, actor, Some(&mut grad), false, objective, chain);
        let theta0: Vec<f64> = actor.params_flat().iter().map(|&v| v as f64).collect();
        let mut probe = actor.clone();
        let fd = fd_gradient(
            &mut |p| {
                let p32: Vec<f32> = p.iter().map(|&v| v as f32).collect();
                probe.set_params_flat(&p32);
                let (loss, d) = loss_and_grad_of(s, &probe, None, false, objective, chain);
                assert_eq!(d, done, "a perturbation changed the done pattern");
                loss as f64
            },
            &theta0,
            1e-2,
        );
        let analytic: Vec<f64> = grad.iter().map(|&v| v as f64).collect();
        let err = rel_err(&analytic, &fd, 1e-6);
        (err, fd, done)
    }

    /// A small random residual model of the point mass with small steps (σ_out = 0.1).
    fn model_task(s: &Setup) -> Arc<dyn Task> {
        Arc::new(random_model_task(s))
    }

    fn random_model_task(s: &Setup) -> crate::model::ModelTask {
        let cfg = sobolev_model::ModelConfig {
            hidden: vec![8],
            seed: 4,
            ..Default::default()
        };
        let mut model = sobolev_model::SobolevModel::<f32>::new(2, 1, &cfg).unwrap();
        model.normalizer.output.var = vec![0.01; 2];
        crate::model::ModelTask::new(s.task.clone(), model).unwrap()
    }

    /// The same model task with a random learned reward head (`model.reward = learned`).
    fn learned_reward_model_task(s: &Setup) -> Arc<dyn Task> {
        let mut rng = seeded(23, 1);
        let head = crate::reward_head::RewardHead::new(2, 1, &[6], 16, [0.9, 0.999], &mut rng);
        Arc::new(random_model_task(s).with_reward(head.snapshot()))
    }

    #[test]
    fn mixed_objective_gradient_matches_finite_differences() {
        let s = setup();
        let mut rng = seeded(21, 1);
        let actor = StochasticActor::new(3, &[8, 8], 1, -1.0, &mut rng);
        for objective in [
            Objective::Mix(0.7, MixStarts::First),
            Objective::Mix(0.5, MixStarts::All),
        ] {
            let (err, fd, done) = fd_error(&s, &actor, objective, &Chain::Sim);
            println!("mix window gradient: relative error vs FD = {err:.2e}");
            assert_eq!(done[1][0], Done::TimeLimit);
            assert_eq!(done[0][1], Done::Terminated);
            assert!(err < 5e-3, "relative error {err}");
            assert!(fd.iter().any(|g| g.abs() > 1e-3), "trivial gradient");
            // The mixed gradient differs from SHAC's (the test can tell them apart).
            let mut shac = Vec::new();
            loss_and_grad(&s, &actor, Some(&mut shac), false);
            let shac: Vec<f64> = shac.iter().map(|&v| v as f64).collect();
            assert!(rel_err(&shac, &fd, 1e-6) > 20.0 * err.max(1e-4));
        }
    }

    /// The sweep's gradient of the mixed objective through `model` (a whole model rollout,
    /// then a handover at step 2) against finite differences, and the power check: the
    /// gradient `wrong(chain)` of a deliberately wrong sweep is far from them.
    fn check_model_chain(
        s: &Setup,
        model: Arc<dyn Task>,
        seed: u64,
        name: &str,
        wrong: impl Fn(&StochasticActor, &Chain) -> Vec<f32>,
    ) {
        let mut rng = seeded(seed, 1);
        let actor = StochasticActor::new(3, &[8, 8], 1, -1.0, &mut rng);
        for chain in [
            Chain::Model(model.clone()),
            Chain::Handover(2, model.clone()),
        ] {
            let (err, fd, done) =
                fd_error(s, &actor, Objective::Mix(0.8, MixStarts::First), &chain);
            println!("{name} window gradient: relative error vs FD = {err:.2e}");
            assert_eq!(done[1][0], Done::TimeLimit, "{done:?}");
            assert!(err < 5e-3, "relative error {err}");
            assert!(fd.iter().any(|g| g.abs() > 1e-3), "trivial gradient");
            let wrong: Vec<f64> = wrong(&actor, &chain).iter().map(|&v| v as f64).collect();
            assert!(rel_err(&wrong, &fd, 1e-6) > 20.0 * err.max(1e-4));
        }
    }

    #[test]
    fn gradient_through_a_model_task_matches_finite_differences() {
        let s = setup();
        let model = model_task(&s);
        // power: the sweep with the simulator's adjoint in place of the model's is wrong
        check_model_chain(&s, model, 22, "model-chain", |actor, _| {
            let mut wrong = Vec::new();
            let objective = Objective::Mix(0.8, MixStarts::First);
            loss_and_grad_of(&s, actor, Some(&mut wrong), false, objective, &Chain::Sim);
            wrong
        });
    }

    /// With a learned reward in the model task, the sweep differentiates the head's reward
    /// at the model's steps (the reward the rollout recorded), in a whole model rollout and
    /// after a handover; the simulator's reward VJP there gives a wrong gradient.
    #[test]
    fn gradient_through_a_learned_reward_matches_finite_differences() {
        let s = setup();
        let model = learned_reward_model_task(&s);
        check_model_chain(&s, model, 24, "learned-reward", |actor, chain| {
            let mut wrong = Vec::new();
            let objective = Objective::Mix(0.8, MixStarts::First);
            loss_and_grad_with(&s, actor, Some(&mut wrong), false, objective, chain, true);
            wrong
        });
    }

    #[test]
    fn model_adjoint_is_the_model_task_vjp_and_handover_switches_at_k() {
        let s = setup();
        let model = model_task(&s);
        let mt = crate::model::ModelTask::new(
            s.task.clone(),
            sobolev_model::SobolevModel::new(2, 1, &Default::default()).unwrap(),
        )
        .unwrap();
        let m = mt.model();
        let adj = crate::model::ModelAdjoint::new(m, s.task.as_ref()).unwrap();
        let st = Array2::from_shape_vec((2, 2), vec![0.1, -0.2, 1.0, 0.5]).unwrap();
        let a = Array2::from_shape_vec((2, 1), vec![0.3, -0.7]).unwrap();
        let adj_next = Array2::from_shape_vec((2, 2), vec![1.0, 2.0, -0.5, 0.25]).unwrap();
        let run = |f: &dyn StepAdjoint, t: usize| {
            let (mut gs, mut ga) = (Array2::<f32>::ones((2, 2)), Array2::<f32>::ones((2, 1)));
            f.step_vjp(
                t,
                st.view(),
                a.view(),
                adj_next.view(),
                gs.view_mut(),
                ga.view_mut(),
            );
            (gs, ga)
        };
        let (gs, ga) = run(&adj, 0);
        let (ws, wa) = m.vjp(st.view(), a.view(), adj_next.view()).unwrap();
        // Accumulates into what was there (ones).
        assert_eq!(gs, ws.mapv(|v| v + 1.0));
        assert_eq!(ga, wa.mapv(|v| v + 1.0));
        assert_eq!(run(&SimulatorAdjoint(&mt), 3), (gs.clone(), ga.clone()));
        let sim = SimulatorAdjoint(s.task.as_ref());
        let chain = HandoverAdjoint {
            at: 2,
            before: &sim,
            after: &adj,
        };
        assert_eq!(run(&chain, 1), run(&sim, 1));
        assert_eq!(run(&chain, 2), (gs, ga));
        assert_ne!(run(&sim, 1), run(&adj, 1));
        // Widths are checked.
        let wide = sobolev_model::SobolevModel::new(3, 1, &Default::default()).unwrap();
        assert!(crate::model::ModelAdjoint::new(&wide, s.task.as_ref()).is_err());
        assert!(crate::model::ModelTask::new(s.task.clone(), wide).is_err());
        // Everything but the dynamics is the wrapped task's.
        let mut o1 = Array2::zeros((2, 3));
        let mut o2 = Array2::zeros((2, 3));
        model.observe(st.view(), o1.view_mut());
        s.task.observe(st.view(), o2.view_mut());
        assert_eq!(o1, o2);
    }

    #[test]
    fn actor_gradient_matches_finite_differences_of_the_shac_loss() {
        let s = setup();
        let mut rng = seeded(21, 1);
        let actor = StochasticActor::new(3, &[8, 8], 1, -1.0, &mut rng);
        let mut grad = Vec::new();
        let (_, done) = loss_and_grad(&s, &actor, Some(&mut grad), false);
        // The scenario is what the test claims.
        assert_eq!(done[1][0], Done::TimeLimit);
        assert_eq!(done[0][1], Done::Terminated);
        assert!(
            done.iter().flatten().filter(|d| d.is_done()).count() == 2,
            "{done:?}"
        );
        assert!(done.iter().all(|row| row[2] == Done::No));

        let theta0: Vec<f64> = actor.params_flat().iter().map(|&v| v as f64).collect();
        let mut probe = actor.clone();
        let fd = fd_gradient(
            &mut |p| {
                let p32: Vec<f32> = p.iter().map(|&v| v as f32).collect();
                probe.set_params_flat(&p32);
                let (loss, d) = loss_and_grad(&s, &probe, None, false);
                assert_eq!(d, done, "a perturbation changed the done pattern");
                loss as f64
            },
            &theta0,
            1e-2,
        );
        let analytic: Vec<f64> = grad.iter().map(|&v| v as f64).collect();
        let err = rel_err(&analytic, &fd, 1e-6);
        println!(
            "window gradient: |g| = {:.4e}, relative error vs FD = {err:.2e}",
            crate::optim::grad_norm(&grad)
        );
        assert!(
            err < 5e-3,
            "relative error {err}\n analytic {analytic:?}\n fd {fd:?}"
        );
        // The log-std gradient (last entry) is checked too and is not trivially zero.
        let last = analytic.len() - 1;
        assert!(analytic[last].abs() > 1e-4);
        assert!((analytic[last] - fd[last]).abs() < 1e-2 * analytic[last].abs().max(1e-3));

        // Power of the test: dropping the terminal-value adjoint is detected.
        let mut wrong = Vec::new();
        loss_and_grad(&s, &actor, Some(&mut wrong), true);
        let wrong: Vec<f64> = wrong.iter().map(|&v| v as f64).collect();
        let err_wrong = rel_err(&wrong, &fd, 1e-6);
        assert!(
            err_wrong > 20.0 * err.max(1e-4),
            "wrong gradient not detected: {err_wrong}"
        );
    }

    #[test]
    fn shac_seeds_follow_the_running_discount() {
        // One env, h = 4, done (time limit) at step 1: segment [0, 1] then [2, 3].
        let done = vec![
            vec![Done::No],
            vec![Done::TimeLimit],
            vec![Done::No],
            vec![Done::No],
        ];
        let rewards = Array2::from_shape_vec((4, 1), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let values = Array2::from_shape_vec((4, 1), vec![10.0, 20.0, 30.0, 40.0]).unwrap();
        let mut seeds = WindowSeeds::zeros(4, 1);
        let g = 0.5f32;
        let bootstrap_of =
            |done: &[Vec<Done>]| Array2::from_shape_fn((4, 1), |(t, i)| done[t][i].bootstraps());
        let loss = shac_seeds(
            &done,
            bootstrap_of(&done).view(),
            rewards.view(),
            values.view(),
            g,
            2.0,
            &mut seeds,
        );
        // −[2(1 + g·2) + g·g·20] − [2(3 + g·4) + g·g·40], over h·N = 4.
        let want = -((2.0 * (1.0 + g * 2.0) + g * g * 20.0)
            + (2.0 * (3.0 + g * 4.0) + g * g * 40.0))
            / 4.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
        assert_eq!(
            seeds.value.column(0).to_vec(),
            vec![0.0, -g * g / 4.0, 0.0, -g * g / 4.0]
        );
        // Early termination: no bootstrap; the window end still bootstraps the next segment.
        let done_t = vec![
            vec![Done::Terminated],
            vec![Done::No],
            vec![Done::No],
            vec![Done::NonFinite],
        ];
        shac_seeds(
            &done_t,
            bootstrap_of(&done_t).view(),
            rewards.view(),
            values.view(),
            g,
            1.0,
            &mut seeds,
        );
        assert_eq!(seeds.value.column(0).to_vec(), vec![0.0; 4]);
        assert_eq!(seeds.reward[[3, 0]], 0.0);
        assert_eq!(seeds.reward[[2, 0]], -g / 4.0);
        // A time-limit end whose observation is out of bounds does not bootstrap either.
        let mut bad_obs = bootstrap_of(&done);
        bad_obs[[1, 0]] = false;
        shac_seeds(
            &done,
            bad_obs.view(),
            rewards.view(),
            values.view(),
            g,
            1.0,
            &mut seeds,
        );
        assert_eq!(
            seeds.value.column(0).to_vec(),
            vec![0.0, 0.0, 0.0, -g * g / 4.0]
        );
    }

    /// A resident window that fails in the reverse sweep (the device lost, say).
    struct FailingSweep(Box<dyn ResidentWindow>);

    impl ResidentWindow for FailingSweep {
        fn describe(&self) -> String {
            "failing".into()
        }
        fn begin(&mut self, s: ArrayView2<f32>) -> diff_core::Result<()> {
            self.0.begin(s)
        }
        fn observe(&mut self, o: ArrayViewMut2<f32>) -> diff_core::Result<()> {
            self.0.observe(o)
        }
        fn step(
            &mut self,
            t: usize,
            a: ArrayView2<f32>,
            o: ArrayViewMut2<f32>,
            r: ndarray::ArrayViewMut1<f32>,
            term: &mut [bool],
            bad: &mut [bool],
        ) -> diff_core::Result<()> {
            self.0.step(t, a, o, r, term, bad)
        }
        fn reset_rows(&mut self, rows: &[usize], s: ArrayView2<f32>) -> diff_core::Result<()> {
            self.0.reset_rows(rows, s)
        }
        fn end(&mut self, s: ArrayViewMut2<f32>) -> diff_core::Result<()> {
            self.0.end(s)
        }
        fn sweep_step(
            &mut self,
            _t: usize,
            _o: Option<ArrayView2<f32>>,
            _c: &[bool],
            _r: ndarray::ArrayView1<f32>,
            _z: &[bool],
            _a: ArrayViewMut2<f32>,
        ) -> diff_core::Result<()> {
            Err(diff_core::Error::InvalidParameter {
                name: "device".into(),
                reason: "lost".into(),
            })
        }
        fn sweep_observe(&mut self, t: usize, a: ArrayView2<f32>) -> diff_core::Result<()> {
            self.0.sweep_observe(t, a)
        }
    }

    /// A resident window's failures void the gradient (NaN, for the trainer's non-finite
    /// rule) instead of panicking, and what it cannot do is refused.
    #[test]
    fn resident_window_failures_void_the_gradient() {
        use sim_rigid::batch::KernelEnv;
        let task: Arc<dyn Task> =
            Arc::new(KernelEnv::host(sim_rigid::tasks::CartPole::new()).unwrap());
        let mut rng = seeded(2, 2);
        let actor = StochasticActor::new(5, &[8], 1, -1.0, &mut rng);
        let critic = Mlp::new(5, &[8], 1, LinearInit::Orthogonal { gain: 1.0 }, &mut rng);
        let mut seeds = WindowSeeds::zeros(H, N);
        seeds.reward.fill(1.0);
        seeds.value.fill(0.5);
        let sweep = |engine: &mut WindowEngine| {
            let mut env = BatchEnv::new(task.clone(), N, 1, true).unwrap();
            engine
                .rollout(&mut env, &actor, None, None, Some(&mut seeded(3, 3)))
                .unwrap();
            let mut g = vec![0.0f32; actor.num_params()];
            engine.reverse_sweep(
                task.as_ref(),
                &SimulatorAdjoint(task.as_ref()),
                &actor,
                &critic,
                None,
                &seeds,
                &mut g,
            );
            g
        };
        let mut engine = WindowEngine::new(task.as_ref(), H, N);
        assert!(engine.attach_resident(task.as_ref()).unwrap());
        assert!(sweep(&mut engine).iter().all(|g| g.is_finite()));
        // a failing sweep
        let inner = engine.resident.take().unwrap();
        engine.resident = Some(Box::new(FailingSweep(inner)));
        assert!(sweep(&mut engine).iter().all(|g| g.is_nan()));
        assert!(engine.resident().is_some(), "the window stays attached");
        // no step-VJP record in a resident window
        let mut engine = WindowEngine::new(task.as_ref(), H, N);
        engine.attach_resident(task.as_ref()).unwrap();
        engine.record_step_vjp = true;
        assert!(sweep(&mut engine).iter().all(|g| g.is_nan()));
        // no handover
        let mut engine = WindowEngine::new(task.as_ref(), H, N);
        engine.attach_resident(task.as_ref()).unwrap();
        let mut env = BatchEnv::new(task.clone(), N, 1, true).unwrap();
        let mut other = BatchEnv::new(task.clone(), N, 1, true).unwrap();
        let err = engine
            .rollout_handover(&mut env, Some((2, &mut other)), &actor, None, None, None)
            .unwrap_err();
        assert!(err.to_string().contains("resident window"), "{err}");
    }
}

//! The learned dynamics model as a step source of the window engine (algorithms.md §3.7).
//!
//! - [`ModelTask`] is a `diff_core::Task` whose dynamics (`step`, `step_vjp`, `step_jvp`)
//!   are a snapshot of a [`SobolevModel`] and whose observation, reward, termination, reset
//!   and success functions (and their VJPs) are the wrapped task's. A `BatchEnv` over it
//!   rolls out "in the model" with the task's episode rules, and the window engine
//!   reverse-sweeps it unchanged ([`crate::window::SimulatorAdjoint`] of the `ModelTask`
//!   is the model's VJP). Readings A, B and `model_only`.
//! - [`ModelAdjoint`] is the model's VJP as a [`StepAdjoint`] on a tape recorded in the
//!   simulator: forward values from the simulator, gradients from the model (reading C,
//!   the straight-through step `F + f_φ − stopgrad(f_φ)`).
//!
//! The model is f32 and its failures can only be shape mismatches, which the constructors
//! rule out; should one happen anyway, the affected outputs are NaN (the engine then marks
//! the envs `NonFinite`, and a NaN gradient is caught by the trainer's gradient check).

use crate::error::{Error, Result};
use crate::reward_head::RewardFn;
use crate::window::StepAdjoint;
use diff_core::{Scene, SeededRng, Task, TaskSpec};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use sobolev_model::{ModelDone, SobolevModel};
use std::sync::Arc;

fn check_dims(model: &SobolevModel<f32>, spec: &TaskSpec) -> Result<()> {
    if model.state_dim() != spec.state_dim || model.action_dim() != spec.act_dim {
        return Err(Error::dim(
            format!("dynamics model of task {}", spec.name),
            format!("state {} / action {}", spec.state_dim, spec.act_dim),
            format!(
                "state {} / action {}",
                model.state_dim(),
                model.action_dim()
            ),
        ));
    }
    Ok(())
}

/// `adj_s += (∂f/∂s)ᵀ adj_next`, `adj_a += (∂f/∂a)ᵀ adj_next` through the model.
fn model_vjp(
    model: &SobolevModel<f32>,
    s: ArrayView2<f32>,
    a: ArrayView2<f32>,
    adj_next: ArrayView2<f32>,
    mut adj_s: ArrayViewMut2<f32>,
    mut adj_a: ArrayViewMut2<f32>,
) {
    match model.vjp(s, a, adj_next) {
        Ok((gs, ga)) => {
            adj_s += &gs;
            adj_a += &ga;
        }
        Err(_) => {
            adj_s.fill(f32::NAN);
            adj_a.fill(f32::NAN);
        }
    }
}

/// [`model_vjp`] of the members' mean: each member's VJP of `adj_next / K`.
fn ensemble_vjp(
    models: &[&SobolevModel<f32>],
    s: ArrayView2<f32>,
    a: ArrayView2<f32>,
    adj_next: ArrayView2<f32>,
    mut adj_s: ArrayViewMut2<f32>,
    mut adj_a: ArrayViewMut2<f32>,
) {
    if let [m] = models {
        return model_vjp(m, s, a, adj_next, adj_s, adj_a);
    }
    let scaled = adj_next.mapv(|v| v / models.len() as f32);
    for m in models {
        model_vjp(m, s, a, scaled.view(), adj_s.view_mut(), adj_a.view_mut());
    }
}

/// A task whose dynamics are a learned model (see the module docs).
pub struct ModelTask {
    inner: Arc<dyn Task>,
    model: SobolevModel<f32>,
    /// Further ensemble members (`model.ensemble`): the dynamics are the members' mean.
    members: Vec<SobolevModel<f32>>,
    done: ModelDone,
    reward: Option<RewardFn>,
    /// `model.space = "obs"`: the spec of the observation-space task (state = the inner
    /// task's observation; see [`ModelTask::observation_space`]).
    obs_spec: Option<TaskSpec>,
}

impl ModelTask {
    /// A task over the inner task's **observations** (`model.space = "obs"`): its state is
    /// the observation, `model` maps (o, a) → o′, `observe` is the identity, resets draw the
    /// inner task's reset state and observe it, and nothing terminates. The reward must be
    /// a learned head ([`ModelTask::with_reward`]): until one is given, rewards are NaN.
    pub fn observation_space(inner: Arc<dyn Task>, model: SobolevModel<f32>) -> Result<Self> {
        let spec = inner.spec();
        let obs_spec = TaskSpec {
            name: format!("{} (observation-space model)", spec.name),
            state_dim: spec.obs_dim,
            state_names: spec.obs_names.clone(),
            ..spec.clone()
        };
        check_dims(&model, &obs_spec)?;
        Ok(ModelTask {
            inner,
            model,
            members: Vec::new(),
            done: ModelDone::None,
            reward: None,
            obs_spec: Some(obs_spec),
        })
    }

    /// Wraps `inner` with the dynamics `model` (a snapshot: later training of the original
    /// does not change this task). The model's widths must be the task's.
    pub fn new(inner: Arc<dyn Task>, model: SobolevModel<f32>) -> Result<Self> {
        check_dims(&model, inner.spec())?;
        Ok(ModelTask {
            inner,
            model,
            members: Vec::new(),
            done: ModelDone::Analytic,
            reward: None,
            obs_spec: None,
        })
    }

    /// The same task stepping with the mean of `model` and these further ensemble members
    /// (their widths must be the task's).
    pub fn with_members(mut self, members: Vec<SobolevModel<f32>>) -> Result<Self> {
        for m in &members {
            check_dims(m, self.spec())?;
        }
        self.members = members;
        Ok(self)
    }

    fn all(&self) -> impl Iterator<Item = &SobolevModel<f32>> {
        std::iter::once(&self.model).chain(&self.members)
    }

    /// The same task with a learned reward (`model.reward = learned`) in place of the
    /// task's reward function.
    pub fn with_reward(mut self, reward: RewardFn) -> Self {
        self.reward = Some(reward);
        self
    }

    /// The same task with early termination `done` (`model.done`): the task's rule on the
    /// predicted states (`analytic`, the default) or `none`.
    pub fn with_done(mut self, done: ModelDone) -> Self {
        self.done = done;
        self
    }
    /// The wrapped task.
    pub fn inner(&self) -> &Arc<dyn Task> {
        &self.inner
    }
    /// The dynamics model.
    pub fn model(&self) -> &SobolevModel<f32> {
        &self.model
    }
}

impl Task for ModelTask {
    fn spec(&self) -> &TaskSpec {
        self.obs_spec.as_ref().unwrap_or_else(|| self.inner.spec())
    }
    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, mut s_next: ArrayViewMut2<f32>) {
        if self.members.is_empty() {
            match self.model.predict(s, a) {
                Ok(p) => s_next.assign(&p),
                Err(_) => s_next.fill(f32::NAN),
            }
            return;
        }
        s_next.fill(0.0);
        let k = (self.members.len() + 1) as f32;
        for m in self.all() {
            match m.predict(s, a) {
                Ok(p) => s_next.scaled_add(1.0 / k, &p),
                Err(_) => s_next.fill(f32::NAN),
            }
        }
    }
    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        let all: Vec<&SobolevModel<f32>> = self.all().collect();
        ensemble_vjp(&all, s, a, adj_next, adj_s, adj_a);
    }
    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        mut ds_next: ArrayViewMut2<f32>,
    ) {
        if self.members.is_empty() {
            match self.model.jvp(s, a, ds, da) {
                Ok(t) => ds_next.assign(&t),
                Err(_) => ds_next.fill(f32::NAN),
            }
            return;
        }
        ds_next.fill(0.0);
        let k = (self.members.len() + 1) as f32;
        for m in self.all() {
            match m.jvp(s, a, ds, da) {
                Ok(t) => ds_next.scaled_add(1.0 / k, &t),
                Err(_) => ds_next.fill(f32::NAN),
            }
        }
    }
    fn observe(&self, s: ArrayView2<f32>, mut obs: ArrayViewMut2<f32>) {
        if self.obs_spec.is_some() {
            obs.assign(&s);
            return;
        }
        self.inner.observe(s, obs);
    }
    fn observe_vjp(
        &self,
        s: ArrayView2<f32>,
        adj_obs: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
    ) {
        if self.obs_spec.is_some() {
            adj_s += &adj_obs;
            return;
        }
        self.inner.observe_vjp(s, adj_obs, adj_s);
    }
    fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, mut r: ArrayViewMut1<f32>) {
        match &self.reward {
            None if self.obs_spec.is_some() => r.fill(f32::NAN),
            None => self.inner.reward(s_next, a, r),
            Some(f) => {
                for (o, v) in r.iter_mut().zip(f.predict(s_next, a)) {
                    *o = v;
                }
            }
        }
    }
    fn reward_vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        adj_s_next: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        match &self.reward {
            None if self.obs_spec.is_some() => {
                let (mut adj_s_next, mut adj_a) = (adj_s_next, adj_a);
                adj_s_next.fill(f32::NAN);
                adj_a.fill(f32::NAN);
            }
            None => self.inner.reward_vjp(s_next, a, adj_r, adj_s_next, adj_a),
            Some(f) => f.vjp(s_next, a, adj_r, adj_s_next, adj_a),
        }
    }
    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]) {
        match (self.done, &self.obs_spec) {
            (ModelDone::Analytic, None) => self.inner.terminated(s_next, out),
            _ => out.fill(false),
        }
    }
    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, mut s: ArrayViewMut1<f32>) {
        if self.obs_spec.is_some() {
            let mut inner = ndarray::Array2::<f32>::zeros((1, self.inner.spec().state_dim));
            self.inner.reset_state(rng, stochastic, inner.row_mut(0));
            let mut o = ndarray::Array2::<f32>::zeros((1, s.len()));
            self.inner.observe(inner.view(), o.view_mut());
            s.assign(&o.row(0));
            return;
        }
        self.inner.reset_state(rng, stochastic, s);
    }
    fn episode_success(&self, states: ArrayView2<f32>) -> Option<bool> {
        if self.obs_spec.is_some() {
            return None;
        }
        self.inner.episode_success(states)
    }
    fn scene(&self, state: ArrayView1<f32>) -> Option<Scene> {
        if self.obs_spec.is_some() {
            return None;
        }
        self.inner.scene(state)
    }
}

/// The model's VJP on a tape recorded in the simulator (reading C, see the module docs).
pub struct ModelAdjoint<'a>(Vec<&'a SobolevModel<f32>>);

impl<'a> ModelAdjoint<'a> {
    /// The adjoint of `model` for windows of `task`; the widths must agree.
    pub fn new(model: &'a SobolevModel<f32>, task: &dyn Task) -> Result<Self> {
        Self::ensemble(vec![model], task)
    }

    /// The adjoint of the mean of `models` (an ensemble, `model.ensemble`).
    pub fn ensemble(models: Vec<&'a SobolevModel<f32>>, task: &dyn Task) -> Result<Self> {
        for m in &models {
            check_dims(m, task.spec())?;
        }
        Ok(ModelAdjoint(models))
    }
}

impl StepAdjoint for ModelAdjoint<'_> {
    fn step_vjp(
        &self,
        _t: usize,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        ensemble_vjp(&self.0, s, a, adj_next, adj_s, adj_a);
    }
}

//! Pieces shared by the agents (SHAC, BPTT, PPO): the linear learning-rate schedule, the
//! clipped actor step with its non-finite-gradient policy, the training-return meter, and
//! acting / evaluating / rolling out a [`StochasticActor`] behind observation
//! normalisation.

use crate::config::NonFiniteGradPolicy;
use crate::error::{Error, Result};
use crate::optim::{clip_grad_norm, grad_norm, Adam};
use crate::policy::StochasticActor;
use crate::rms::RunningMeanStd;
use crate::window::WindowEngine;
use diff_core::rng::fill_normal;
use diff_core::{BatchEnv, Done, SeededRng, Task};
use ndarray::{Array2, ArrayView2};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// How many finished training episodes the return meter averages.
pub const RETURN_METER_LEN: usize = 100;

/// The actor-gradient norm above which the first-order methods give up (algorithms.md §1.3).
pub const GRAD_NORM_LIMIT: f64 = 1e6;

/// DiffRL's linear schedule (algorithms.md §1.5): `lr0 + (lr_final − lr0)·epoch / max_epochs`.
pub fn linear_lr(lr0: f64, lr_final: f64, epoch: usize, max_epochs: usize) -> f64 {
    lr0 + (lr_final - lr0) * (epoch as f64 / max_epochs as f64)
}

/// One actor update from a full gradient: checks the norm before clipping (NaN or above
/// [`GRAD_NORM_LIMIT`] → `policy`), clips to `clip` if given, and takes an Adam step.
///
/// Returns the norm before clipping. With [`NonFiniteGradPolicy::Abort`] a bad norm is
/// [`Error::NonFiniteGradient`] and nothing changes; with `Skip` the actor is left as it is.
pub fn actor_step(
    actor: &mut StochasticActor,
    opt: &mut Adam<f32>,
    grad: &mut [f32],
    clip: Option<f64>,
    policy: NonFiniteGradPolicy,
    epoch: usize,
) -> Result<f64> {
    let norm = grad_norm(grad);
    if norm.is_nan() || norm > GRAD_NORM_LIMIT {
        return match policy {
            NonFiniteGradPolicy::Abort => Err(Error::NonFiniteGradient {
                epoch,
                norm: norm as f32,
            }),
            NonFiniteGradPolicy::Skip => Ok(norm),
        };
    }
    if let Some(max_norm) = clip {
        clip_grad_norm(grad, max_norm);
    }
    let mut params = actor.params_flat();
    opt.update(&mut params, grad);
    actor.set_params_flat(&params);
    Ok(norm)
}

/// The mean undiscounted return of the last [`RETURN_METER_LEN`] finished training
/// episodes (DiffRL's `AverageMeter(1, 100)`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReturnMeter {
    recent: VecDeque<f32>,
}

impl ReturnMeter {
    /// A meter holding `returns` (oldest first); None when there are more than
    /// [`RETURN_METER_LEN`].
    pub fn from_returns(returns: Vec<f32>) -> Option<Self> {
        (returns.len() <= RETURN_METER_LEN).then(|| ReturnMeter {
            recent: VecDeque::from(returns),
        })
    }
    /// Records finished episodes, dropping the oldest beyond [`RETURN_METER_LEN`].
    pub fn extend(&mut self, returns: impl IntoIterator<Item = f32>) {
        for r in returns {
            if self.recent.len() == RETURN_METER_LEN {
                self.recent.pop_front();
            }
            self.recent.push_back(r);
        }
    }
    /// The mean, or None before the first episode ends.
    pub fn mean(&self) -> Option<f32> {
        if self.recent.is_empty() {
            None
        } else {
            let sum: f64 = self.recent.iter().map(|&r| r as f64).sum();
            Some((sum / self.recent.len() as f64) as f32)
        }
    }
    /// The held returns, oldest first.
    pub fn returns(&self) -> Vec<f32> {
        self.recent.iter().copied().collect()
    }
}

/// Result of a deterministic evaluation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalStats {
    /// Mean undiscounted episode return.
    pub mean_return: f32,
    /// Population standard deviation of the returns.
    pub std_return: f32,
    /// One return per episode.
    pub returns: Vec<f32>,
    /// Fraction of successful episodes; None when the task defines no success.
    pub success_rate: Option<f32>,
}

/// One episode of the deterministic policy ([`PolicyView::rollout_episodes`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalEpisode {
    /// The visited states `[T + 1, state_dim]`, the start state first.
    pub states: Array2<f32>,
    /// The reward of each of the `T` transitions.
    pub rewards: Vec<f32>,
}

impl EvalEpisode {
    /// The undiscounted return (rewards summed in order, in `f32`).
    pub fn total_return(&self) -> f32 {
        self.rewards.iter().fold(0.0f32, |acc, &r| acc + r)
    }
}

/// A tanh-Gaussian actor behind (optional) observation normalisation, on a task: what acting
/// and evaluating need from any of the agents.
pub struct PolicyView<'a> {
    /// The task.
    pub task: &'a Arc<dyn Task>,
    /// The actor.
    pub actor: &'a StochasticActor,
    /// The observation statistics that normalise the actor's inputs.
    pub obs_rms: Option<&'a RunningMeanStd>,
}

impl PolicyView<'_> {
    /// Actions the env would receive (tanh applied) for raw observations `[N, obs_dim]`:
    /// `tanh(μ)` when `deterministic`, else `tanh(μ + σε)` with noise from `rng`.
    pub fn act(
        &self,
        obs: ArrayView2<f32>,
        deterministic: bool,
        rng: &Mutex<SeededRng>,
    ) -> Result<Array2<f32>> {
        let spec = self.task.spec();
        if obs.ncols() != spec.obs_dim {
            return Err(Error::dim(
                "observations",
                format!("[N, {}]", spec.obs_dim),
                format!("{:?}", obs.shape()),
            ));
        }
        let n = obs.nrows();
        // standard (row-major) layout whatever the caller's strides, so the slice below exists
        let mut x = obs.as_standard_layout().into_owned();
        if let Some(r) = self.obs_rms {
            r.normalize_in_place(x.view_mut());
        }
        let mut out = Array2::zeros((n, spec.act_dim));
        let noise = if deterministic {
            None
        } else {
            let mut eps = vec![0.0f32; n * spec.act_dim];
            let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
            fill_normal(&mut rng, &mut eps);
            Some(eps)
        };
        self.actor.act(
            x.as_slice().expect("contiguous obs"),
            n,
            noise.as_deref(),
            out.as_slice_mut().expect("contiguous actions"),
        );
        Ok(out)
    }

    /// Deterministic evaluation: `episodes` envs started from the task's stochastic reset
    /// (`stochastic_init`) or its deterministic initial state (own RNG from `seed`), run with
    /// `tanh(μ)` until each has finished one full episode; undiscounted returns; success via
    /// [`Task::episode_success`] on each episode's states (start state first).
    pub fn evaluate(&self, episodes: usize, seed: u64, stochastic_init: bool) -> Result<EvalStats> {
        let spec = self.task.spec();
        let eps = self.rollout_episodes(episodes, seed, stochastic_init, spec.episode_length)?;
        let returns: Vec<f32> = eps.iter().map(EvalEpisode::total_return).collect();
        let mut successes = Some(0usize);
        for e in &eps {
            successes = match (successes, self.task.episode_success(e.states.view())) {
                (Some(k), Some(ok)) => Some(k + ok as usize),
                _ => None,
            };
        }
        let m = episodes as f64;
        let mean = returns.iter().map(|&r| r as f64).sum::<f64>() / m;
        let var = returns
            .iter()
            .map(|&r| (r as f64 - mean) * (r as f64 - mean))
            .sum::<f64>()
            / m;
        Ok(EvalStats {
            mean_return: mean as f32,
            std_return: var.sqrt() as f32,
            returns,
            success_rate: successes.map(|k| (k as f64 / m) as f32),
        })
    }

    /// The episodes behind [`PolicyView::evaluate`]: `episodes` envs seeded by `seed`, run
    /// with the deterministic policy `tanh(μ)` until each has finished one episode or
    /// `max_steps` steps (whichever comes first), keeping every visited state and reward.
    pub fn rollout_episodes(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
        max_steps: usize,
    ) -> Result<Vec<EvalEpisode>> {
        if episodes == 0 {
            return Err(Error::config("episodes", "must be at least 1"));
        }
        let spec = self.task.spec();
        let (sd, od, ad) = (spec.state_dim, spec.obs_dim, spec.act_dim);
        let mut env = BatchEnv::new(self.task.clone(), episodes, seed, stochastic_init)?;
        let mut rewards = vec![Vec::new(); episodes];
        let mut finished = vec![false; episodes];
        let mut states: Vec<Vec<f32>> =
            env.state().rows().into_iter().map(|r| r.to_vec()).collect();
        let mut obs = Array2::<f32>::zeros((episodes, od));
        let mut actions = Array2::<f32>::zeros((episodes, ad));
        let mut next = Array2::<f32>::zeros((episodes, sd));
        let mut reward = ndarray::Array1::<f32>::zeros(episodes);
        let mut done = vec![Done::No; episodes];
        let mut remaining = episodes;
        // Every episode ends by the time limit at the latest.
        for _ in 0..spec.episode_length.min(max_steps) {
            self.task.observe(env.state(), obs.view_mut());
            if let Some(r) = self.obs_rms {
                r.normalize_in_place(obs.view_mut());
            }
            self.actor.act(
                obs.as_slice().expect("contiguous obs"),
                episodes,
                None,
                actions.as_slice_mut().expect("contiguous actions"),
            );
            env.step(
                actions.view(),
                next.view_mut(),
                reward.view_mut(),
                &mut done,
            )?;
            for i in 0..episodes {
                if finished[i] {
                    continue;
                }
                rewards[i].push(reward[i]);
                states[i].extend(next.row(i).iter());
                if done[i].is_done() {
                    finished[i] = true;
                    remaining -= 1;
                }
            }
            if remaining == 0 {
                break;
            }
        }
        Ok(states
            .into_iter()
            .zip(rewards)
            .map(|(s, rewards)| EvalEpisode {
                states: Array2::from_shape_vec((s.len() / sd, sd), s).expect("episode states"),
                rewards,
            })
            .collect())
    }
}

/// Acting, evaluating and rolling out for an agent that exposes its policy: implement
/// [`PolicyAgent::policy`] and [`PolicyAgent::act_rng`], get the rest.
pub trait PolicyAgent {
    /// The actor behind its observation normalisation.
    fn policy(&self) -> PolicyView<'_>;
    /// The RNG of stochastic [`PolicyAgent::act`] calls (not used by training).
    fn act_rng(&self) -> &Mutex<SeededRng>;

    /// Env actions for raw observations: `tanh(μ)` when `deterministic`, else sampled with
    /// the agent's own act RNG ([`PolicyView::act`]).
    fn act(&self, obs: ArrayView2<f32>, deterministic: bool) -> Result<Array2<f32>> {
        self.policy().act(obs, deterministic, self.act_rng())
    }
    /// Deterministic evaluation ([`PolicyView::evaluate`]).
    fn evaluate(&self, episodes: usize, seed: u64, stochastic_init: bool) -> Result<EvalStats> {
        self.policy().evaluate(episodes, seed, stochastic_init)
    }
    /// The episodes of the deterministic policy ([`PolicyView::rollout_episodes`]).
    fn rollout_episodes(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
        max_steps: usize,
    ) -> Result<Vec<EvalEpisode>> {
        self.policy()
            .rollout_episodes(episodes, seed, stochastic_init, max_steps)
    }
}

/// Rolls out one training window of `engine` with the sampling policy: observations are
/// normalised with a frozen copy of `obs_rms` (returned, for the reverse sweep) while
/// `obs_rms` keeps updating; counts the env-steps and feeds the finished episodes' returns
/// to `meter`.
pub fn training_window(
    engine: &mut WindowEngine,
    env: &mut BatchEnv,
    actor: &StochasticActor,
    obs_rms: &mut Option<RunningMeanStd>,
    noise_rng: &mut SeededRng,
    env_steps: &mut u64,
    meter: &mut ReturnMeter,
) -> Result<Option<RunningMeanStd>> {
    let frozen = obs_rms.clone();
    engine.rollout(
        env,
        actor,
        frozen.as_ref(),
        obs_rms.as_mut(),
        Some(noise_rng),
    )?;
    *env_steps += (engine.horizon() * engine.num_envs()) as u64;
    meter.extend(env.take_finished_returns());
    Ok(frozen)
}

/// Checks that a task's dimensions are usable by an agent.
pub fn check_task_dims(task: &dyn Task) -> Result<()> {
    let spec = task.spec();
    for (name, d) in [
        ("state_dim", spec.state_dim),
        ("obs_dim", spec.obs_dim),
        ("act_dim", spec.act_dim),
        ("episode_length", spec.episode_length),
    ] {
        if d == 0 {
            return Err(diff_core::Error::InvalidParameter {
                name: format!("task {} {name}", spec.name),
                reason: "must be at least 1".into(),
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_meter_keeps_the_last_hundred() {
        let mut m = ReturnMeter::default();
        assert_eq!(m.mean(), None);
        m.extend((0..150).map(|k| k as f32));
        // The last 100: 50..149, mean 99.5.
        assert_eq!(m.mean(), Some(99.5));
        assert_eq!(m.returns().len(), RETURN_METER_LEN);
        assert!(ReturnMeter::from_returns(vec![0.0; RETURN_METER_LEN + 1]).is_none());
        assert_eq!(ReturnMeter::from_returns(m.returns()), Some(m));
    }

    #[test]
    fn linear_lr_endpoints() {
        assert_eq!(linear_lr(1e-2, 1e-5, 0, 500), 1e-2);
        assert!((linear_lr(1e-2, 1e-5, 500, 500) - 1e-5).abs() < 1e-15);
    }
}

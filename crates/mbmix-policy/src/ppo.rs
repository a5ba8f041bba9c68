//! PPO, the model-free reference (algorithms.md §3.12), with the rl_games settings that
//! DiffRL's `examples/cfg/ppo/*.yaml` use: clipped surrogate (e_clip 0.2), clipped value
//! loss with `critic_coef` 4, GAE (γ 0.99, τ 0.95), normalised advantages, observation
//! normalisation, rewards scaled by 0.01, bounds loss on μ (coefficient 1e-4, soft bound
//! 1.1), entropy coefficient 0, one Adam over all parameters with the gradient norm clipped
//! to 1, and rl_games' adaptive learning rate (KL threshold 0.008).
//!
//! One epoch collects `horizon` steps of `num_envs` envs with the [`WindowEngine`]'s
//! rollout (no simulator gradients are used), computes GAE advantages, and runs
//! `mini_epochs` passes of `num_minibatches` shuffled minibatches. Gradients of the loss
//! w.r.t. the networks come from [`Mlp::vjp`] with hand-derived seeds.
//!
//! **Policy.** The project's tanh-Gaussian actor ([`StochasticActor`]: μ network,
//! state-independent log-std, initialised to 0 as rl_games' `const_initializer`): the env
//! receives `tanh(a_raw)` with `a_raw ~ N(μ, σ²)`. Log-probabilities are those of `a_raw`;
//! the tanh Jacobian does not depend on the parameters, so the PPO ratio of the squashed
//! policy equals the Gaussian one. (rl_games clips `a_raw` to [−1, 1] instead; the entropy
//! reported and regularised is the Gaussian's, `Σ (logstd + ½ ln 2πe)`.) Evaluation is
//! deterministic: `tanh(μ)`.
//!
//! **Other deviations from rl_games**, all documented choices: separate actor and critic
//! networks (rl_games' `separate: False` shares the trunk) built from the project's MLP
//! block (Linear → ELU → LayerNorm; rl_games has no LayerNorm); no value normalisation
//! (`normalize_value`); observation statistics updated during the rollout with a frozen copy
//! per window (as SHAC); minibatches drawn by a seeded shuffle each mini-epoch.
//!
//! **Episode ends** ([`diff_core::Done`]): a time-limit reset bootstraps with the critic's
//! value of the pre-reset state, a termination (or a non-finite state) with 0; the
//! advantage recursion is cut at every done. (rl_games' default `value_bootstrap: False`,
//! which DiffRL's configs keep, treats a time limit like a termination; bootstrapping it is
//! the correct treatment of truncation and what SHAC does.)

use crate::checkpoint::{
    add_actor, add_adam, add_env, add_mlp, add_obs_rms, check_env_and_rms, check_same_fields,
    check_task, state_json, write_checkpoint, RawCheckpoint, Tensors,
};
use crate::common::{
    check_task_dims, linear_lr, training_window, PolicyAgent, PolicyView, ReturnMeter,
    GRAD_NORM_LIMIT,
};
use crate::config::{finite, in_range, positive_count, NonFiniteGradPolicy};
use crate::error::{Error, Result};
use crate::nn::{LinearInit, Mlp, NetworkBackend};
use crate::optim::{clip_grad_norm, grad_norm, Adam};
use crate::policy::StochasticActor;
use crate::rms::RunningMeanStd;
use crate::shac::EpochStats;
use crate::window::WindowEngine;
use diff_core::{seeded, BatchEnv, Done, SeededRng, Task};
use ndarray::{Array2, ArrayView2};
use rand::seq::SliceRandom;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// RNG streams derived from the run seed.
mod stream {
    pub const INIT: u64 = 1;
    pub const NOISE: u64 = 2;
    pub const SHUFFLE: u64 = 3;
    pub const ACT: u64 = 4;
}

/// `½ ln 2π`.
const HALF_LN_2PI: f32 = 0.918_938_5;
/// rl_games' soft bound of the bounds loss on μ.
pub const SOFT_BOUND: f32 = 1.1;

/// How the learning rate changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// rl_games' `AdaptiveScheduler` after every minibatch: lr ÷ 1.5 (not below `lr_min`)
    /// when the KL between the new and the old policy exceeds 2·`kl_threshold`, lr × 1.5
    /// (not above `lr_max`) when it is below ½·`kl_threshold`. DiffRL's setting.
    #[default]
    Adaptive,
    /// Linear decay from `lr` to `lr_final` over `max_epochs`.
    Linear,
    /// Constant `lr`.
    Constant,
}

/// PPO hyperparameters. Defaults: DiffRL's `examples/cfg/ppo/cartpole_swing_up.yaml`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Parallel envs (`num_actors`). Default 32.
    pub num_envs: usize,
    /// Steps per env per epoch (`steps_num` / `horizon_length`). Default 240.
    pub horizon: usize,
    /// Training epochs. Default 500.
    pub max_epochs: usize,
    /// Discount γ. Default 0.99.
    pub gamma: f64,
    /// GAE λ (rl_games' `tau`). Default 0.95.
    pub gae_lambda: f64,
    /// Actor (μ network) hidden widths. Default [64, 64].
    pub actor_units: Vec<usize>,
    /// Critic hidden widths. Default [64, 64].
    pub critic_units: Vec<usize>,
    /// Initial learning rate. Default 3e-4.
    pub lr: f64,
    /// Learning-rate schedule. Default adaptive.
    pub lr_schedule: LrSchedule,
    /// KL threshold of the adaptive schedule. Default 0.008.
    pub kl_threshold: f64,
    /// Lower bound of the adaptive schedule. Default 1e-6 (rl_games).
    pub lr_min: f64,
    /// Upper bound of the adaptive schedule. Default 1e-2 (rl_games).
    pub lr_max: f64,
    /// End point of the linear schedule. Default 1e-6.
    pub lr_final: f64,
    /// Passes over each epoch's data. Default 5.
    pub mini_epochs: usize,
    /// Minibatches per pass (rl_games' `minibatch_size` = num_envs·horizon / this; 4 in
    /// every DiffRL config). Default 4.
    pub num_minibatches: usize,
    /// Clip range ε of the ratio (and of the value change). Default 0.2.
    pub e_clip: f64,
    /// Clip the value loss around the old values. Default true.
    pub clip_value: bool,
    /// Weight of the value loss (the loss uses ½·critic_coef·MSE as rl_games). Default 4.
    pub critic_coef: f64,
    /// Weight of the entropy bonus. Default 0.
    pub entropy_coef: f64,
    /// Weight of the bounds loss on |μ| > 1.1. Default 1e-4.
    pub bounds_loss_coef: f64,
    /// Normalise advantages over the epoch's batch. Default true.
    pub normalize_advantage: bool,
    /// Normalise observations with running statistics. Default true.
    pub obs_rms: bool,
    /// Reward scale (rl_games' `reward_shaper.scale_value`). Default 0.01.
    pub rew_scale: f64,
    /// Gradient-norm clip. Default 1.0.
    pub grad_norm: f64,
    /// Whether to clip the gradient norm. Default true.
    pub truncate_grads: bool,
    /// Adam betas. Default [0.9, 0.999] (rl_games uses PyTorch's defaults).
    pub betas: [f64; 2],
    /// Initial log-std. Default 0 (rl_games `sigma_init: const 0`).
    pub actor_logstd_init: f64,
    /// Use the task's reset noise for training episodes. Default true.
    pub stochastic_init: bool,
    /// A minibatch gradient with NaN or > 1e6 norm: `abort` (default) or `skip` that step.
    pub on_nonfinite_grad: NonFiniteGradPolicy,
    /// Network implementation. Default dfdx.
    pub network_backend: NetworkBackend,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            num_envs: 32,
            horizon: 240,
            max_epochs: 500,
            gamma: 0.99,
            gae_lambda: 0.95,
            actor_units: vec![64, 64],
            critic_units: vec![64, 64],
            lr: 3e-4,
            lr_schedule: LrSchedule::Adaptive,
            kl_threshold: 0.008,
            lr_min: 1e-6,
            lr_max: 1e-2,
            lr_final: 1e-6,
            mini_epochs: 5,
            num_minibatches: 4,
            e_clip: 0.2,
            clip_value: true,
            critic_coef: 4.0,
            entropy_coef: 0.0,
            bounds_loss_coef: 1e-4,
            normalize_advantage: true,
            obs_rms: true,
            rew_scale: 0.01,
            grad_norm: 1.0,
            truncate_grads: true,
            betas: [0.9, 0.999],
            actor_logstd_init: 0.0,
            stochastic_init: true,
            on_nonfinite_grad: NonFiniteGradPolicy::Abort,
            network_backend: NetworkBackend::Dfdx,
        }
    }
}

impl PpoConfig {
    /// Checks every field; the error names the first offending field.
    pub fn validate(&self) -> Result<()> {
        positive_count("num_envs", self.num_envs)?;
        positive_count("horizon", self.horizon)?;
        positive_count("max_epochs", self.max_epochs)?;
        in_range("gamma", self.gamma, 0.0, 1.0, true, false)?;
        in_range("gae_lambda", self.gae_lambda, 0.0, 1.0, false, false)?;
        for (field, units) in [
            ("actor_units", &self.actor_units),
            ("critic_units", &self.critic_units),
        ] {
            if units.contains(&0) {
                return Err(Error::config(field, "hidden widths must be at least 1"));
            }
        }
        in_range("lr", self.lr, 0.0, f64::MAX, true, false)?;
        in_range(
            "kl_threshold",
            self.kl_threshold,
            0.0,
            f64::MAX,
            true,
            false,
        )?;
        in_range("lr_min", self.lr_min, 0.0, f64::MAX, true, false)?;
        in_range("lr_max", self.lr_max, self.lr_min, f64::MAX, false, false)?;
        in_range("lr_final", self.lr_final, 0.0, f64::MAX, false, false)?;
        positive_count("mini_epochs", self.mini_epochs)?;
        positive_count("num_minibatches", self.num_minibatches)?;
        if self.num_minibatches > self.num_envs * self.horizon {
            return Err(Error::config(
                "num_minibatches",
                format!(
                    "must not exceed num_envs × horizon = {}",
                    self.num_envs * self.horizon
                ),
            ));
        }
        in_range("e_clip", self.e_clip, 0.0, 1.0, true, true)?;
        in_range("critic_coef", self.critic_coef, 0.0, f64::MAX, false, false)?;
        finite("entropy_coef", self.entropy_coef)?;
        in_range(
            "bounds_loss_coef",
            self.bounds_loss_coef,
            0.0,
            f64::MAX,
            false,
            false,
        )?;
        in_range("rew_scale", self.rew_scale, 0.0, f64::MAX, true, false)?;
        in_range("grad_norm", self.grad_norm, 0.0, f64::MAX, true, false)?;
        in_range("betas[0]", self.betas[0], 0.0, 1.0, false, true)?;
        in_range("betas[1]", self.betas[1], 0.0, 1.0, false, true)?;
        finite("actor_logstd_init", self.actor_logstd_init)?;
        Ok(())
    }
}

/// GAE over one window of `[h, N]` steps:
///
/// ```text
/// δ_t = r_t + γ·V⁺_t − V(s_t)
/// A_t = δ_t + γλ·(1 − done_t)·A_{t+1},   A_h = 0
/// R_t = A_t + V(s_t)
/// ```
///
/// `next_values[t]` (V⁺) is the value of the state after step t: the next step's value if
/// the episode goes on (and at the window end), the pre-reset state's value after a time
/// limit, 0 after a termination ([`WindowEngine::terminal_values`] gives exactly this).
/// `rewards` are already scaled.
#[allow(clippy::too_many_arguments)]
pub fn gae(
    rewards: ArrayView2<f32>,
    values: ArrayView2<f32>,
    next_values: ArrayView2<f32>,
    done: &[Vec<Done>],
    gamma: f32,
    lambda: f32,
    advantages: &mut Array2<f32>,
    returns: &mut Array2<f32>,
) {
    let (h, n) = rewards.dim();
    assert_eq!(values.dim(), (h, n), "gae: values shape");
    assert_eq!(next_values.dim(), (h, n), "gae: next values shape");
    assert_eq!(advantages.dim(), (h, n), "gae: advantages shape");
    assert_eq!(returns.dim(), (h, n), "gae: returns shape");
    for i in 0..n {
        let mut a = 0.0f32;
        for t in (0..h).rev() {
            let delta = rewards[[t, i]] + gamma * next_values[[t, i]] - values[[t, i]];
            let cont = if done[t][i].is_done() { 0.0 } else { 1.0 };
            a = delta + gamma * lambda * cont * a;
            advantages[[t, i]] = a;
            returns[[t, i]] = a + values[[t, i]];
        }
    }
}

/// `log N(a; μ, exp(logstd)²)` summed over the action dimensions.
pub fn gaussian_log_prob(a: &[f32], mu: &[f32], logstd: &[f32]) -> f32 {
    a.iter()
        .zip(mu)
        .zip(logstd)
        .map(|((&a, &m), &l)| {
            let z = (a - m) * (-l).exp();
            -0.5 * z * z - l - HALF_LN_2PI
        })
        .sum()
}

/// Entropy of the diagonal Gaussian: `Σ (logstd + ½ + ½ ln 2π)`.
pub fn gaussian_entropy(logstd: &[f32]) -> f32 {
    logstd.iter().map(|l| l + 0.5 + HALF_LN_2PI).sum()
}

/// One minibatch, gathered from the epoch's samples.
#[derive(Clone, Debug, Default)]
pub struct Minibatch {
    /// Rows.
    pub len: usize,
    /// Normalised observations `[B, obs_dim]`.
    pub obs: Vec<f32>,
    /// Pre-squash actions `a_raw` `[B, act_dim]`.
    pub actions: Vec<f32>,
    /// μ of the behaviour policy `[B, act_dim]`.
    pub old_mu: Vec<f32>,
    /// σ of the behaviour policy `[act_dim]` (state-independent).
    pub old_std: Vec<f32>,
    /// Log-probabilities under the behaviour policy `[B]`.
    pub old_log_prob: Vec<f32>,
    /// Critic values at collection `[B]`.
    pub old_values: Vec<f32>,
    /// (Normalised) advantages `[B]`.
    pub advantages: Vec<f32>,
    /// Value targets `[B]`.
    pub returns: Vec<f32>,
}

/// The parts of the PPO loss on one minibatch (means over its rows).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossParts {
    /// Clipped surrogate `mean(max(−A·ρ, −A·clip(ρ)))`.
    pub actor: f32,
    /// Value loss (clipped or plain squared error).
    pub critic: f32,
    /// Gaussian entropy.
    pub entropy: f32,
    /// Bounds loss on μ.
    pub bounds: f32,
    /// rl_games' KL between the new and the behaviour policy.
    pub kl: f32,
    /// `actor + ½·critic_coef·critic − entropy_coef·entropy + bounds_coef·bounds`.
    pub total: f32,
}

/// A PPO agent training on one task.
pub struct Ppo {
    cfg: PpoConfig,
    task: Arc<dyn Task>,
    env: BatchEnv,
    actor: StochasticActor,
    critic: Mlp<f32>,
    opt: Adam<f32>,
    lr: f64,
    obs_rms: Option<RunningMeanStd>,
    noise_rng: SeededRng,
    shuffle_rng: SeededRng,
    act_rng: Mutex<SeededRng>,
    epoch: usize,
    env_steps: u64,
    recent_returns: ReturnMeter,
    engine: WindowEngine,
}

impl Ppo {
    /// A new agent: validates `cfg`, creates the envs and the networks, seeded from `seed`.
    pub fn new(cfg: PpoConfig, task: Arc<dyn Task>, seed: u64) -> Result<Ppo> {
        cfg.validate()?;
        check_task_dims(task.as_ref())?;
        let spec = task.spec().clone();
        let env = BatchEnv::new(task.clone(), cfg.num_envs, seed, cfg.stochastic_init)?;
        let mut init_rng = seeded(seed, stream::INIT);
        let mut actor = StochasticActor::new(
            spec.obs_dim,
            &cfg.actor_units,
            spec.act_dim,
            cfg.actor_logstd_init as f32,
            &mut init_rng,
        );
        actor.mu.set_backend(cfg.network_backend);
        let mut critic = Mlp::new(
            spec.obs_dim,
            &cfg.critic_units,
            1,
            LinearInit::TorchDefault,
            &mut init_rng,
        );
        critic.set_backend(cfg.network_backend);
        let n_params = actor.num_params() + critic.num_params();
        Ok(Ppo {
            opt: Adam::new(n_params, cfg.lr, (cfg.betas[0], cfg.betas[1])),
            lr: cfg.lr,
            obs_rms: cfg.obs_rms.then(|| RunningMeanStd::new(spec.obs_dim)),
            noise_rng: seeded(seed, stream::NOISE),
            shuffle_rng: seeded(seed, stream::SHUFFLE),
            act_rng: Mutex::new(seeded(seed, stream::ACT)),
            epoch: 0,
            env_steps: 0,
            recent_returns: ReturnMeter::default(),
            engine: {
                // the rollout's states stay with the simulator when it offers that
                let mut engine = WindowEngine::new(task.as_ref(), cfg.horizon, cfg.num_envs);
                engine.attach_resident(task.as_ref())?;
                engine
            },
            cfg,
            task,
            env,
            actor,
            critic,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PpoConfig {
        &self.cfg
    }
    /// Epochs completed so far.
    pub fn epoch(&self) -> usize {
        self.epoch
    }
    /// Env-steps taken in training so far.
    pub fn env_steps(&self) -> u64 {
        self.env_steps
    }
    /// The actor.
    pub fn actor(&self) -> &StochasticActor {
        &self.actor
    }
    /// The critic.
    pub fn critic(&self) -> &Mlp<f32> {
        &self.critic
    }
    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// All parameters: the actor's ([`StochasticActor::params_flat`]) then the critic's.
    fn params_flat(&self) -> Vec<f32> {
        let mut p = self.actor.params_flat();
        p.extend_from_slice(self.critic.params());
        p
    }

    fn set_params_flat(&mut self, p: &[f32]) {
        let k = self.actor.num_params();
        self.actor.set_params_flat(&p[..k]);
        self.critic.set_params_flat(&p[k..]);
    }

    /// The PPO loss on `mb` with the current parameters and, if asked, its gradient w.r.t.
    /// all parameters (layout of `params_flat`) added into `grad`.
    pub fn minibatch_loss(&self, mb: &Minibatch, grad: Option<&mut [f32]>) -> LossParts {
        let cfg = &self.cfg;
        let b = mb.len;
        let ad = self.actor.act_dim();
        let inv_b = 1.0 / b as f32;
        let eps = cfg.e_clip as f32;
        let logstd = &self.actor.logstd;
        let std: Vec<f32> = logstd.iter().map(|l| l.exp()).collect();
        let mu = self.actor.mu.forward(&mb.obs, b);
        let values = self.critic.forward(&mb.obs, b);
        let bounds_coef = cfg.bounds_loss_coef as f32;
        let mut parts = LossParts::default();
        // Seeds: ∂L/∂μ, ∂L/∂logstd, ∂L/∂v.
        let mut d_mu = vec![0.0f32; b * ad];
        let mut d_logstd = vec![0.0f32; ad];
        let mut d_v = vec![0.0f32; b];
        let (mut actor_sum, mut critic_sum, mut bounds_sum, mut kl_sum) = (0.0f64, 0.0, 0.0, 0.0);
        for k in 0..b {
            let row = k * ad..(k + 1) * ad;
            let (a, m, m_old) = (&mb.actions[row.clone()], &mu[row.clone()], &mb.old_mu[row]);
            // Surrogate.
            let log_prob = gaussian_log_prob(a, m, logstd);
            let ratio = (log_prob - mb.old_log_prob[k]).exp();
            let adv = mb.advantages[k];
            let (l1, l2) = (-adv * ratio, -adv * ratio.clamp(1.0 - eps, 1.0 + eps));
            actor_sum += l1.max(l2) as f64;
            // d/dlogp of max(l1, l2): through l1 when it is the max (then the clamp is the
            // identity or l2 < l1), else 0 (the clamp is saturated).
            let g = if l1 >= l2 { -adv * ratio } else { 0.0 };
            // Value loss.
            let (v, v_old, ret) = (values[k], mb.old_values[k], mb.returns[k]);
            let dv = if cfg.clip_value {
                let delta = v - v_old;
                let v_clip = v_old + delta.clamp(-eps, eps);
                let (c1, c2) = ((v - ret) * (v - ret), (v_clip - ret) * (v_clip - ret));
                critic_sum += c1.max(c2) as f64;
                if c1 >= c2 {
                    2.0 * (v - ret)
                } else if delta.abs() < eps {
                    2.0 * (v_clip - ret)
                } else {
                    0.0
                }
            } else {
                critic_sum += ((v - ret) * (v - ret)) as f64;
                2.0 * (v - ret)
            };
            d_v[k] = 0.5 * cfg.critic_coef as f32 * dv * inv_b;
            // Per action dimension: log-prob, bounds loss and KL terms.
            for j in 0..ad {
                let z = (a[j] - m[j]) / std[j];
                let hi = (m[j] - SOFT_BOUND).max(0.0);
                let lo = (m[j] + SOFT_BOUND).min(0.0);
                bounds_sum += (hi * hi + lo * lo) as f64;
                d_mu[k * ad + j] = (g * z / std[j] + bounds_coef * 2.0 * (hi + lo)) * inv_b;
                d_logstd[j] += g * (z * z - 1.0) * inv_b;
                // rl_games' policy_kl(p0 = new, p1 = old).
                let s_old = mb.old_std[j];
                let c1 = (s_old / std[j] + 1e-5).ln();
                let dm = m_old[j] - m[j];
                let c2 = (std[j] * std[j] + dm * dm) / (2.0 * (s_old * s_old + 1e-5));
                kl_sum += (c1 + c2 - 0.5) as f64;
            }
        }
        let entropy = gaussian_entropy(logstd);
        for d in d_logstd.iter_mut() {
            *d -= cfg.entropy_coef as f32;
        }
        parts.actor = (actor_sum / b as f64) as f32;
        parts.critic = (critic_sum / b as f64) as f32;
        parts.bounds = (bounds_sum / b as f64) as f32;
        parts.kl = (kl_sum / b as f64) as f32;
        parts.entropy = entropy;
        parts.total = parts.actor + 0.5 * cfg.critic_coef as f32 * parts.critic
            - cfg.entropy_coef as f32 * entropy
            + bounds_coef * parts.bounds;
        if let Some(grad) = grad {
            let mu_n = self.actor.mu.num_params();
            let actor_n = self.actor.num_params();
            let (actor_g, critic_g) = grad.split_at_mut(actor_n);
            let (mu_g, logstd_g) = actor_g.split_at_mut(mu_n);
            self.actor.mu.vjp(&mb.obs, b, &d_mu, mu_g, None);
            for (g, d) in logstd_g.iter_mut().zip(&d_logstd) {
                *g += d;
            }
            self.critic.vjp(&mb.obs, b, &d_v, critic_g, None);
        }
        parts
    }
}

/// The samples of one epoch, flattened as `k = t·N + i`.
struct Batch {
    obs: Vec<f32>,
    actions: Vec<f32>,
    old_mu: Vec<f32>,
    old_std: Vec<f32>,
    old_log_prob: Vec<f32>,
    old_values: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
}

impl Batch {
    fn gather(&self, idx: &[usize], od: usize, ad: usize, mb: &mut Minibatch) {
        mb.len = idx.len();
        mb.old_std.clone_from(&self.old_std);
        for v in [
            &mut mb.obs,
            &mut mb.actions,
            &mut mb.old_mu,
            &mut mb.old_log_prob,
            &mut mb.old_values,
            &mut mb.advantages,
            &mut mb.returns,
        ] {
            v.clear();
        }
        for &k in idx {
            mb.obs.extend_from_slice(&self.obs[k * od..(k + 1) * od]);
            mb.actions
                .extend_from_slice(&self.actions[k * ad..(k + 1) * ad]);
            mb.old_mu
                .extend_from_slice(&self.old_mu[k * ad..(k + 1) * ad]);
            mb.old_log_prob.push(self.old_log_prob[k]);
            mb.old_values.push(self.old_values[k]);
            mb.advantages.push(self.advantages[k]);
            mb.returns.push(self.returns[k]);
        }
    }
}

impl Ppo {
    /// Rolls out one window with the current policy and computes everything the updates
    /// need: behaviour μ and log-probabilities, values, GAE advantages (normalised if
    /// configured) and returns.
    fn collect(&mut self) -> Result<Batch> {
        let cfg = &self.cfg;
        let (h, n) = (cfg.horizon, cfg.num_envs);
        let ad = self.actor.act_dim();
        training_window(
            &mut self.engine,
            &mut self.env,
            &self.actor,
            &mut self.obs_rms,
            &mut self.noise_rng,
            &mut self.env_steps,
            &mut self.recent_returns,
        )?;
        let total = h * n;
        let obs = self.engine.obs.as_slice().expect("contiguous obs").to_vec();
        let old_mu = self.actor.mu.forward(&obs, total);
        let old_std: Vec<f32> = self.actor.logstd.iter().map(|l| l.exp()).collect();
        let noise = self.engine.noise.as_slice().expect("contiguous noise");
        let actions: Vec<f32> = old_mu
            .iter()
            .zip(noise)
            .enumerate()
            .map(|(k, (m, e))| m + old_std[k % ad] * e)
            .collect();
        let old_log_prob: Vec<f32> = (0..total)
            .map(|k| {
                let row = k * ad..(k + 1) * ad;
                gaussian_log_prob(&actions[row.clone()], &old_mu[row], &self.actor.logstd)
            })
            .collect();
        let old_values = self.critic.forward(&obs, total);
        let mut next_values = Array2::zeros((h, n));
        self.engine.terminal_values(&self.critic, &mut next_values);
        let rewards = self.engine.tape.rewards.mapv(|r| r * cfg.rew_scale as f32);
        let values = ArrayView2::from_shape((h, n), &old_values).expect("values shape");
        let mut advantages = Array2::zeros((h, n));
        let mut returns = Array2::zeros((h, n));
        gae(
            rewards.view(),
            values,
            next_values.view(),
            &self.engine.tape.done,
            cfg.gamma as f32,
            cfg.gae_lambda as f32,
            &mut advantages,
            &mut returns,
        );
        let mut advantages = advantages.into_raw_vec_and_offset().0;
        if cfg.normalize_advantage && total > 1 {
            // torch's `std` (unbiased), as rl_games.
            let mean = advantages.iter().map(|&a| a as f64).sum::<f64>() / total as f64;
            let var = advantages
                .iter()
                .map(|&a| (a as f64 - mean).powi(2))
                .sum::<f64>()
                / (total - 1) as f64;
            let scale = 1.0 / (var.sqrt() + 1e-8);
            for a in advantages.iter_mut() {
                *a = ((*a as f64 - mean) * scale) as f32;
            }
        }
        Ok(Batch {
            obs,
            actions,
            old_mu,
            old_std,
            old_log_prob,
            old_values,
            advantages,
            returns: returns.into_raw_vec_and_offset().0,
        })
    }

    /// One PPO epoch: a rollout of `horizon` steps, GAE, and `mini_epochs` × `num_minibatches`
    /// clipped-gradient Adam steps on the PPO loss.
    ///
    /// The stats report the mean surrogate loss (`actor_loss`), the mean value loss
    /// (`critic_loss`) and the mean gradient norm before clipping (`actor_grad_norm`, of the
    /// joint actor–critic gradient) over the epoch's minibatches, and the learning rate of the
    /// last step (`actor_lr` = `critic_lr`: one optimiser).
    ///
    /// With `on_nonfinite_grad = abort`, a minibatch gradient with NaN or > 1e6 norm returns
    /// [`Error::NonFiniteGradient`] with the networks, the optimiser and the learning rate as
    /// they were before the epoch's updates (the rollout has advanced the envs).
    pub fn train_epoch(&mut self) -> Result<EpochStats> {
        let e = self.epoch;
        match self.cfg.lr_schedule {
            LrSchedule::Adaptive => {}
            LrSchedule::Linear => {
                self.lr = linear_lr(self.cfg.lr, self.cfg.lr_final, e, self.cfg.max_epochs)
            }
            LrSchedule::Constant => self.lr = self.cfg.lr,
        }
        let batch = self.collect()?;
        let cfg = self.cfg.clone();
        let total = cfg.horizon * cfg.num_envs;
        let (od, ad) = (self.actor.obs_dim(), self.actor.act_dim());
        let nb = cfg.num_minibatches;
        let saved = (self.params_flat(), self.opt.clone(), self.lr);
        let mut perm: Vec<usize> = (0..total).collect();
        let mut mb = Minibatch::default();
        let mut grad = vec![0.0f32; self.opt.m.len()];
        let (mut actor_sum, mut critic_sum, mut norm_sum, mut steps) = (0.0f64, 0.0f64, 0.0, 0);
        let mut lr_used = self.lr;
        for _ in 0..cfg.mini_epochs {
            perm.shuffle(&mut self.shuffle_rng);
            for b in 0..nb {
                let idx = &perm[b * total / nb..(b + 1) * total / nb];
                batch.gather(idx, od, ad, &mut mb);
                grad.fill(0.0);
                let parts = self.minibatch_loss(&mb, Some(&mut grad));
                let norm = grad_norm(&grad);
                actor_sum += parts.actor as f64;
                critic_sum += parts.critic as f64;
                if norm.is_nan() || norm > GRAD_NORM_LIMIT {
                    match cfg.on_nonfinite_grad {
                        NonFiniteGradPolicy::Abort => {
                            self.set_params_flat(&saved.0);
                            self.opt = saved.1;
                            self.lr = saved.2;
                            return Err(Error::NonFiniteGradient {
                                epoch: e,
                                norm: norm as f32,
                            });
                        }
                        NonFiniteGradPolicy::Skip => {
                            norm_sum += norm;
                            steps += 1;
                            continue;
                        }
                    }
                }
                norm_sum += norm;
                steps += 1;
                if cfg.truncate_grads {
                    clip_grad_norm(&mut grad, cfg.grad_norm);
                }
                self.opt.lr = self.lr;
                lr_used = self.lr;
                let mut params = self.params_flat();
                self.opt.update(&mut params, &grad);
                self.set_params_flat(&params);
                if cfg.lr_schedule == LrSchedule::Adaptive {
                    let kl = parts.kl as f64;
                    if kl > 2.0 * cfg.kl_threshold {
                        self.lr = (self.lr / 1.5).max(cfg.lr_min);
                    } else if kl < 0.5 * cfg.kl_threshold {
                        self.lr = (self.lr * 1.5).min(cfg.lr_max);
                    }
                }
            }
        }
        self.epoch += 1;
        let steps_f = steps.max(1) as f64;
        Ok(EpochStats {
            epoch: self.epoch,
            env_steps: self.env_steps,
            mean_train_return: self.recent_returns.mean(),
            actor_loss: (actor_sum / steps_f) as f32,
            critic_loss: (critic_sum / steps_f) as f32,
            actor_grad_norm: (norm_sum / steps_f) as f32,
            actor_lr: lr_used as f32,
            critic_lr: lr_used as f32,
            mbmix: None,
        })
    }
}

impl PolicyAgent for Ppo {
    fn policy(&self) -> PolicyView<'_> {
        PolicyView {
            task: &self.task,
            actor: &self.actor,
            obs_rms: self.obs_rms.as_ref(),
        }
    }
    fn act_rng(&self) -> &Mutex<SeededRng> {
        &self.act_rng
    }
}

/// The value of the `format` metadata key of PPO checkpoints.
pub const CHECKPOINT_FORMAT: &str = "mbmix-ppo-checkpoint-v1";

/// The non-tensor state of a PPO agent.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct PpoState {
    config: PpoConfig,
    task: String,
    dims: [usize; 3],
    epoch: usize,
    env_steps: u64,
    adam_step: u64,
    lr: f64,
    obs_rms_count: Option<f64>,
    env_progress: Vec<u32>,
    env_rng: SeededRng,
    noise_rng: SeededRng,
    shuffle_rng: SeededRng,
    act_rng: SeededRng,
    recent_returns: Vec<f32>,
}

impl Ppo {
    fn checkpoint_tensors(&self) -> Tensors {
        let mut t = Tensors::new();
        add_actor(&mut t, "actor", &self.actor);
        add_mlp(&mut t, "critic", &self.critic);
        add_adam(&mut t, "adam", &self.opt);
        add_obs_rms(&mut t, self.obs_rms.as_ref());
        add_env(&mut t, &self.env);
        t
    }

    /// Writes everything needed to resume bit-exactly (networks, Adam, learning rate, obs
    /// statistics, envs, RNGs, counters, return meter) atomically to a safetensors file.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let spec = self.task.spec();
        let snap = self.env.snapshot();
        let state = PpoState {
            config: self.cfg.clone(),
            task: spec.name.clone(),
            dims: [spec.state_dim, spec.obs_dim, spec.act_dim],
            epoch: self.epoch,
            env_steps: self.env_steps,
            adam_step: self.opt.step,
            lr: self.lr,
            obs_rms_count: self.obs_rms.as_ref().map(|r| r.count),
            env_progress: snap.progress,
            env_rng: snap.rng,
            noise_rng: self.noise_rng.clone(),
            shuffle_rng: self.shuffle_rng.clone(),
            act_rng: self
                .act_rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            recent_returns: self.recent_returns.returns(),
        };
        write_checkpoint(
            path,
            CHECKPOINT_FORMAT,
            &state_json(&state)?,
            &self.checkpoint_tensors(),
        )
    }

    /// Loads a checkpoint of [`Ppo::save_checkpoint`], validated fully before anything
    /// changes ([`Error::BadCheckpoint`] otherwise). Structural settings (num_envs, horizon,
    /// network widths, obs_rms) must match; the others are the agent's own.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let raw = RawCheckpoint::open(path, CHECKPOINT_FORMAT)?;
        let state: PpoState = raw.state()?;
        check_task(&raw, &state.task, state.dims, self.task.as_ref())?;
        let (c, mine) = (&state.config, &self.cfg);
        check_same_fields(
            &raw,
            &[
                ("num_envs", c.num_envs == mine.num_envs),
                ("horizon", c.horizon == mine.horizon),
                ("actor_units", c.actor_units == mine.actor_units),
                ("critic_units", c.critic_units == mine.critic_units),
                ("obs_rms", c.obs_rms == mine.obs_rms),
            ],
        )?;
        let loaded = raw.tensors(&self.checkpoint_tensors())?;
        check_env_and_rms(
            &raw,
            state.env_progress.len(),
            self.cfg.num_envs,
            state.obs_rms_count.is_some(),
            self.obs_rms.is_some(),
        )?;
        if !(state.lr.is_finite() && state.lr > 0.0) {
            return Err(raw.bad(format!("learning rate {} is not positive", state.lr)));
        }
        let recent_returns = ReturnMeter::from_returns(state.recent_returns)
            .ok_or_else(|| raw.bad("return meter too long"))?;
        let actor = loaded.actor("actor", &self.actor);
        let mut critic = self.critic.clone();
        critic.set_params_flat(&loaded.mlp("critic", &critic));
        let opt = loaded.adam("adam", &self.opt, state.adam_step);
        let obs_rms = loaded.obs_rms(state.obs_rms_count);
        let snap = loaded.env(state.env_progress, state.env_rng);
        self.env
            .restore(&snap)
            .map_err(|e| raw.bad(e.to_string()))?;
        self.actor = actor;
        self.critic = critic;
        self.opt = opt;
        self.lr = state.lr;
        self.obs_rms = obs_rms;
        self.noise_rng = state.noise_rng;
        self.shuffle_rng = state.shuffle_rng;
        *self.act_rng.lock().unwrap_or_else(|p| p.into_inner()) = state.act_rng;
        self.epoch = state.epoch;
        self.env_steps = state.env_steps;
        self.recent_returns = recent_returns;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PointMass;
    use diff_core::gradcheck::{fd_gradient, rel_err};
    use ndarray::s;

    fn toy_config() -> PpoConfig {
        PpoConfig {
            num_envs: 16,
            horizon: 48,
            max_epochs: 60,
            actor_units: vec![32, 32],
            critic_units: vec![32, 32],
            ..PpoConfig::default()
        }
    }

    fn toy_task() -> Arc<dyn Task> {
        Arc::new(PointMass::new(48))
    }

    #[test]
    fn gae_by_hand_with_a_time_limit_and_a_termination() {
        // One env, h = 4: step 1 hits the time limit (bootstrap from the pre-reset value 10),
        // step 2 terminates (no bootstrap), step 3 ends the window (bootstrap 5).
        let done = vec![
            vec![Done::No],
            vec![Done::TimeLimit],
            vec![Done::Terminated],
            vec![Done::No],
        ];
        let col = |v: [f32; 4]| Array2::from_shape_vec((4, 1), v.to_vec()).unwrap();
        let (r, v, v_next) = (
            col([1.0, 1.0, 1.0, 1.0]),
            col([1.0, 2.0, 3.0, 4.0]),
            col([2.0, 10.0, 0.0, 5.0]),
        );
        let (mut adv, mut ret) = (Array2::zeros((4, 1)), Array2::zeros((4, 1)));
        gae(
            r.view(),
            v.view(),
            v_next.view(),
            &done,
            0.5,
            0.5,
            &mut adv,
            &mut ret,
        );
        // δ = [1 + 1 − 1, 1 + 5 − 2, 1 − 3, 1 + 2.5 − 4] = [1, 4, −2, −0.5];
        // A_3 = −0.5, A_2 = −2 (cut), A_1 = 4 (cut), A_0 = 1 + 0.25·4 = 2.
        assert_eq!(adv.column(0).to_vec(), vec![2.0, 4.0, -2.0, -0.5]);
        assert_eq!(ret.column(0).to_vec(), vec![3.0, 6.0, 1.0, 3.5]);
    }

    /// The point-mass window of window.rs's test: env 0 hits the time limit after step 1,
    /// env 1 terminates at step 0, env 2 runs through.
    fn scenario_agent(cfg: PpoConfig) -> Ppo {
        let task: Arc<dyn Task> = Arc::new(PointMass::new(6));
        let mut agent = Ppo::new(cfg, task, 21).unwrap();
        let mut snap = agent.env.snapshot();
        snap.state = vec![0.3, 0.5, 3.9, 3.0, -0.5, 0.2];
        snap.progress = vec![4, 0, 0];
        agent.env.restore(&snap).unwrap();
        agent
    }

    fn scenario_config() -> PpoConfig {
        PpoConfig {
            num_envs: 3,
            horizon: 4,
            actor_units: vec![8],
            critic_units: vec![8],
            num_minibatches: 2,
            ..PpoConfig::default()
        }
    }

    #[test]
    fn collected_advantages_bootstrap_time_limits_and_cut_terminations() {
        let cfg = PpoConfig {
            normalize_advantage: false,
            ..scenario_config()
        };
        let mut agent = scenario_agent(cfg.clone());
        let batch = agent.collect().unwrap();
        let done = &agent.engine.tape.done;
        assert_eq!(
            (done[1][0], done[0][1]),
            (Done::TimeLimit, Done::Terminated)
        );
        let n = 3;
        let value = |x: ndarray::ArrayView1<f32>| agent.critic.forward(&x.to_vec(), 1)[0];
        let r = |t: usize, i: usize| agent.engine.tape.rewards[[t, i]] * cfg.rew_scale as f32;
        let gamma = cfg.gamma as f32;
        // Termination: the advantage is r − V(s), nothing after it.
        // (t, i) is sample k = t·N + i.
        let want = r(0, 1) - batch.old_values[1];
        assert!((batch.advantages[1] - want).abs() < 1e-6);
        // Time limit: r + γ·V(pre-reset state) − V(s), cut there.
        let v_pre = value(agent.engine.next_obs.slice(s![1, 0, ..]));
        assert!(v_pre.abs() > 1e-4, "a real bootstrap value");
        let want = r(1, 0) + gamma * v_pre - batch.old_values[n];
        assert!((batch.advantages[n] - want).abs() < 1e-6);
        // The old log-probabilities are those of the actions under the old policy: every
        // ratio is 1 and the KL is 0 before the first update.
        let mut mb = Minibatch::default();
        let all: Vec<usize> = (0..4 * n).collect();
        batch.gather(&all, 3, 1, &mut mb);
        let parts = agent.minibatch_loss(&mb, None);
        // rl_games' KL has 1e-5 guards: ln(1 + 1e-5) + σ²/(2(σ² + 1e-5)) − ½ at σ = 1.
        let guard = (1.0f32 + 1e-5).ln() + 1.0 / (2.0 * (1.0 + 1e-5)) - 0.5;
        assert!((parts.kl - guard).abs() < 1e-6, "{parts:?}");
        let mean_adv = mb.advantages.iter().sum::<f32>() / mb.len as f32;
        assert!((parts.actor + mean_adv).abs() < 1e-5, "{parts:?}");
    }

    #[test]
    fn loss_gradient_matches_finite_differences() {
        let cfg = PpoConfig {
            entropy_coef: 0.05,
            bounds_loss_coef: 0.5,
            critic_coef: 2.0,
            ..scenario_config()
        };
        let mut agent = scenario_agent(cfg);
        let batch = agent.collect().unwrap();
        let mut mb = Minibatch::default();
        let all: Vec<usize> = (0..12).collect();
        batch.gather(&all, 3, 1, &mut mb);
        // Push μ past the soft bound in some rows, give the log-std a non-trivial value, and
        // move the behaviour policy and the old values away from the current ones so that
        // some ratios and value changes are clipped and some are not.
        let mut p = agent.params_flat();
        let mu_n = agent.actor.mu.num_params();
        p[mu_n - 1] += 1.2; // the output bias of μ
        p[mu_n] = -0.3; // logstd
        agent.set_params_flat(&p);
        let mu = agent.actor.mu.forward(&mb.obs, mb.len);
        let values = agent.critic.forward(&mb.obs, mb.len);
        let mut rng = seeded(5, 9);
        let mut jitter = |scale: f32| scale * (diff_core::rng::uniform01(&mut rng) as f32 - 0.5);
        for k in 0..mb.len {
            let lp = gaussian_log_prob(&mb.actions[k..k + 1], &mu[k..k + 1], &agent.actor.logstd);
            mb.old_log_prob[k] = lp + jitter(0.8);
            mb.old_values[k] = values[k] + jitter(0.8);
        }
        let eps = agent.cfg.e_clip as f32;
        let ratios: Vec<f32> = (0..mb.len)
            .map(|k| {
                (gaussian_log_prob(&mb.actions[k..k + 1], &mu[k..k + 1], &agent.actor.logstd)
                    - mb.old_log_prob[k])
                    .exp()
            })
            .collect();
        assert!(ratios.iter().any(|r| (r - 1.0).abs() > eps));
        assert!(ratios.iter().any(|r| (r - 1.0).abs() < eps));
        assert!(mu.iter().any(|m| m.abs() > SOFT_BOUND));
        assert!(mu.iter().any(|m| m.abs() < SOFT_BOUND));
        assert!((0..mb.len).any(|k| (values[k] - mb.old_values[k]).abs() > eps));
        assert!((0..mb.len).any(|k| (values[k] - mb.old_values[k]).abs() < eps));

        let mut grad = vec![0.0f32; p.len()];
        let parts = agent.minibatch_loss(&mb, Some(&mut grad));
        assert!(parts.bounds > 0.0 && parts.entropy != 0.0);
        let theta0: Vec<f64> = p.iter().map(|&v| v as f64).collect();
        let fd = fd_gradient(
            &mut |q| {
                let q32: Vec<f32> = q.iter().map(|&v| v as f32).collect();
                agent.set_params_flat(&q32);
                agent.minibatch_loss(&mb, None).total as f64
            },
            &theta0,
            1e-3,
        );
        let analytic: Vec<f64> = grad.iter().map(|&v| v as f64).collect();
        let err = rel_err(&analytic, &fd, 1e-6);
        println!("PPO loss gradient: relative error vs FD = {err:.2e}");
        assert!(err < 5e-3, "relative error {err}\n{analytic:?}\n{fd:?}");
        // Power of the test: the gradient of the unclipped objective (ε = 0.99, nothing
        // clipped here) is far from the finite differences of the clipped one.
        agent.set_params_flat(&p);
        agent.cfg.e_clip = 0.99;
        let mut unclipped = vec![0.0f32; p.len()];
        agent.minibatch_loss(&mb, Some(&mut unclipped));
        let unclipped: Vec<f64> = unclipped.iter().map(|&v| v as f64).collect();
        let err_wrong = rel_err(&unclipped, &fd, 1e-6);
        assert!(
            err_wrong > 20.0 * err.max(1e-4),
            "ignoring the clipping is not detected: {err_wrong}"
        );
        // The log-std entry (surrogate + entropy) on its own.
        assert!(
            (analytic[mu_n] - fd[mu_n]).abs() < 1e-2 * analytic[mu_n].abs().max(1e-3),
            "logstd: {} vs {}",
            analytic[mu_n],
            fd[mu_n]
        );
    }

    #[test]
    fn log_prob_and_entropy_closed_forms() {
        // N(0.3; μ = −0.2, σ = e^0.4) and N(−1; 0.5, e^−1), summed.
        let lp = gaussian_log_prob(&[0.3, -1.0], &[-0.2, 0.5], &[0.4, -1.0]) as f64;
        let one = |a: f64, m: f64, l: f64| {
            let s = l.exp();
            -(a - m).powi(2) / (2.0 * s * s) - s.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
        };
        let want = one(0.3, -0.2, 0.4) + one(-1.0, 0.5, -1.0);
        assert!((lp - want).abs() < 1e-5, "{lp} vs {want}");
        let h = gaussian_entropy(&[0.4, -1.0]) as f64;
        let want_h = 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() * 2.0 - 0.6;
        assert!((h - want_h).abs() < 1e-5, "{h} vs {want_h}");
    }

    #[test]
    fn ppo_improves_the_toy_task() {
        let cfg = PpoConfig {
            max_epochs: 40,
            ..toy_config()
        };
        let mut agent = Ppo::new(cfg, toy_task(), 3).unwrap();
        let before = agent.evaluate(32, 99, true).unwrap();
        let mut last = None;
        for _ in 0..40 {
            last = Some(agent.train_epoch().unwrap());
        }
        let after = agent.evaluate(32, 99, true).unwrap();
        let last = last.unwrap();
        println!(
            "toy PPO: eval return {:.2} → {:.2} (success {:?} → {:?}); last {last:?}",
            before.mean_return, after.mean_return, before.success_rate, after.success_rate
        );
        assert_eq!(agent.env_steps(), 40 * 16 * 48);
        assert!(last.mean_train_return.is_some());
        assert!(
            after.mean_return > 0.5 * before.mean_return
                && after.mean_return - before.mean_return > 5.0,
            "no clear improvement: {} → {}",
            before.mean_return,
            after.mean_return
        );
    }

    #[test]
    fn same_seed_same_run_and_checkpoint_resumes_bit_exactly() {
        let cfg = PpoConfig {
            horizon: 16,
            ..toy_config()
        };
        let bits = |s: &[EpochStats]| serde_json::to_string(s).unwrap();
        let run = |seed| {
            let mut a = Ppo::new(cfg.clone(), toy_task(), seed).unwrap();
            let s: Vec<EpochStats> = (0..3).map(|_| a.train_epoch().unwrap()).collect();
            (bits(&s), a.params_flat())
        };
        let (a, pa) = run(5);
        let (b, pb) = run(5);
        assert_eq!(a, b);
        assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_ne!(a, run(6).0, "the seed matters");

        let dir = std::env::temp_dir().join(format!("mbmix-ppo-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.safetensors");
        let mut x = Ppo::new(cfg.clone(), toy_task(), 7).unwrap();
        x.train_epoch().unwrap();
        x.train_epoch().unwrap();
        x.save_checkpoint(&path).unwrap();
        let cont: Vec<EpochStats> = (0..2).map(|_| x.train_epoch().unwrap()).collect();
        let mut y = Ppo::new(cfg.clone(), toy_task(), 123).unwrap();
        y.load_checkpoint(&path).unwrap();
        assert_eq!(
            (y.epoch(), y.env_steps(), y.lr()),
            (2, 2 * 16 * 16, {
                let mut z = Ppo::new(cfg.clone(), toy_task(), 7).unwrap();
                z.train_epoch().unwrap();
                z.train_epoch().unwrap();
                z.lr()
            })
        );
        let resumed: Vec<EpochStats> = (0..2).map(|_| y.train_epoch().unwrap()).collect();
        assert_eq!(bits(&cont), bits(&resumed));
        assert_eq!(
            x.evaluate(4, 3, true).unwrap(),
            y.evaluate(4, 3, true).unwrap()
        );
        // Another configuration's checkpoint, or a BPTT one, is refused and changes nothing.
        let before = y.params_flat();
        let other = PpoConfig {
            critic_units: vec![8],
            ..cfg.clone()
        };
        Ppo::new(other, toy_task(), 1)
            .unwrap()
            .save_checkpoint(&path)
            .unwrap();
        match y.load_checkpoint(&path) {
            Err(Error::BadCheckpoint { reason, .. }) => {
                assert!(reason.contains("critic_units"), "{reason}")
            }
            other => panic!("expected BadCheckpoint, got {other:?}"),
        }
        crate::Bptt::new(crate::BpttConfig::default(), toy_task(), 1)
            .unwrap()
            .save_checkpoint(&path)
            .unwrap();
        assert!(matches!(
            y.load_checkpoint(&path),
            Err(Error::BadCheckpoint { .. })
        ));
        assert_eq!(y.params_flat(), before);
        assert_eq!(y.epoch(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn schedules_move_the_learning_rate() {
        let cfg = PpoConfig {
            horizon: 16,
            max_epochs: 4,
            ..toy_config()
        };
        let mut lin = Ppo::new(
            PpoConfig {
                lr_schedule: LrSchedule::Linear,
                ..cfg.clone()
            },
            toy_task(),
            1,
        )
        .unwrap();
        let lrs: Vec<f32> = (0..4)
            .map(|_| lin.train_epoch().unwrap().actor_lr)
            .collect();
        let want: Vec<f32> = (0..4).map(|e| linear_lr(3e-4, 1e-6, e, 4) as f32).collect();
        assert_eq!(lrs, want);
        // Adaptive: starts at lr, moves by factors of 1.5 within [lr_min, lr_max].
        let mut ada = Ppo::new(cfg, toy_task(), 1).unwrap();
        ada.train_epoch().unwrap();
        let ratio = (ada.lr() / 3e-4).ln() / 1.5f64.ln();
        assert!((ratio - ratio.round()).abs() < 1e-9, "{}", ada.lr());
        assert_ne!(ada.lr(), 3e-4, "20 minibatch steps moved the rate");
        assert!(ada.lr() >= 1e-6 && ada.lr() <= 1e-2);
    }

    #[test]
    fn nonfinite_gradient_aborts_with_the_networks_restored_or_skips() {
        // A critic with a NaN weight makes every advantage, hence every gradient, NaN.
        let cfg = PpoConfig {
            horizon: 8,
            ..toy_config()
        };
        let poisoned = |cfg: PpoConfig| {
            let mut a = Ppo::new(cfg, toy_task(), 1).unwrap();
            let mut p = a.params_flat();
            let k = a.actor.num_params();
            p[k] = f32::NAN;
            a.set_params_flat(&p);
            a
        };
        let bits = |p: Vec<f32>| p.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut a = poisoned(cfg.clone());
        let (p0, lr0, step0) = (bits(a.params_flat()), a.lr(), a.opt.step);
        match a.train_epoch() {
            Err(Error::NonFiniteGradient { epoch: 0, norm }) => assert!(norm.is_nan()),
            other => panic!("expected NonFiniteGradient, got {other:?}"),
        }
        assert_eq!(bits(a.params_flat()), p0);
        assert_eq!((a.lr(), a.opt.step, a.epoch()), (lr0, step0, 0));
        let mut b = poisoned(PpoConfig {
            on_nonfinite_grad: NonFiniteGradPolicy::Skip,
            ..cfg
        });
        let stats = b.train_epoch().unwrap();
        assert!(stats.actor_grad_norm.is_nan());
        assert_eq!(bits(b.params_flat()), p0, "every step skipped");
        assert_eq!((b.opt.step, b.epoch()), (0, 1));
    }

    #[test]
    fn config_validation_names_the_field() {
        PpoConfig::default().validate().unwrap();
        let cases = [
            (
                PpoConfig {
                    num_minibatches: 0,
                    ..Default::default()
                },
                "num_minibatches",
            ),
            (
                PpoConfig {
                    num_minibatches: 32 * 240 + 1,
                    ..Default::default()
                },
                "num_minibatches",
            ),
            (
                PpoConfig {
                    e_clip: 0.0,
                    ..Default::default()
                },
                "e_clip",
            ),
            (
                PpoConfig {
                    gae_lambda: 1.5,
                    ..Default::default()
                },
                "gae_lambda",
            ),
            (
                PpoConfig {
                    lr_max: 1e-7,
                    ..Default::default()
                },
                "lr_max",
            ),
            (
                PpoConfig {
                    critic_units: vec![4, 0],
                    ..Default::default()
                },
                "critic_units",
            ),
            (
                PpoConfig {
                    entropy_coef: f64::NAN,
                    ..Default::default()
                },
                "entropy_coef",
            ),
        ];
        for (cfg, field) in cases {
            match Ppo::new(cfg, toy_task(), 0) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                Err(other) => panic!("{field}: expected InvalidConfig, got {other:?}"),
                Ok(_) => panic!("{field}: accepted"),
            }
        }
        let parsed: PpoConfig =
            serde_json::from_str(r#"{"lr_schedule": "linear", "num_envs": 4}"#).unwrap();
        assert_eq!(parsed.lr_schedule, LrSchedule::Linear);
        assert_eq!(parsed.horizon, 240);
        assert!(serde_json::from_str::<PpoConfig>(r#"{"tau": 0.9}"#).is_err());
    }

    #[test]
    fn evaluation_is_deterministic_and_acting_checks_shapes() {
        let agent = Ppo::new(toy_config(), toy_task(), 2).unwrap();
        assert_eq!(
            agent.evaluate(3, 4, true).unwrap(),
            agent.evaluate(3, 4, true).unwrap()
        );
        let obs = Array2::from_shape_fn((4, 3), |(i, j)| i as f32 * 0.2 - j as f32 * 0.1);
        let det = agent.act(obs.view(), true).unwrap();
        assert_eq!(det, agent.act(obs.view(), true).unwrap());
        assert_ne!(det, agent.act(obs.view(), false).unwrap());
        assert!(matches!(
            agent.act(Array2::zeros((2, 5)).view(), true),
            Err(Error::Dimension { .. })
        ));
    }
}

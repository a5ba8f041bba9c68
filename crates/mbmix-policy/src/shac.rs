//! SHAC (Xu et al. 2022), exactly as algorithms.md §1 and DiffRL's `algorithms/shac.py`.

use crate::common::{actor_step, check_task_dims, training_window, PolicyView, ReturnMeter};
use crate::config::ShacConfig;
use crate::error::Result;
use crate::nn::{LinearInit, Mlp};
use crate::optim::{clip_grad_norm, nan_to_num, Adam};
use crate::policy::StochasticActor;
use crate::rms::RunningMeanStd;
use crate::td::td_lambda_targets;
use crate::window::{shac_seeds, SimulatorAdjoint, WindowEngine, WindowSeeds};
use diff_core::{seeded, BatchEnv, Done, SeededRng, Task};
use ndarray::{Array2, ArrayView2};
use rand::seq::SliceRandom;
use std::sync::{Arc, Mutex};

/// RNG streams derived from the run seed (diff-core's `seeded(seed, stream)`).
pub(crate) mod stream {
    /// Network initialisation.
    pub const INIT: u64 = 1;
    /// Exploration noise ε of the rollouts.
    pub const NOISE: u64 = 2;
    /// Critic minibatch permutations.
    pub const CRITIC: u64 = 3;
    /// Noise of [`super::Shac::act`] with `deterministic = false`.
    pub const ACT: u64 = 4;
}

pub use crate::common::{EvalEpisode, EvalStats, GRAD_NORM_LIMIT, RETURN_METER_LEN};

/// What one training epoch did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    /// Epochs completed, this one included (1 after the first call).
    pub epoch: usize,
    /// Simulator env-steps taken in training so far.
    pub env_steps: u64,
    /// Mean undiscounted return of the last 100 finished training episodes (None before the
    /// first episode ends).
    pub mean_train_return: Option<f32>,
    /// The actor loss of this window: SHAC's (§1.3), MB-MIX's mixed objective (§3.9 step 5),
    /// BPTT's loss, or PPO's mean clipped surrogate.
    pub actor_loss: f32,
    /// Mean critic MSE over the minibatches of the last critic pass (PPO: mean value loss;
    /// BPTT, which has no critic: 0).
    pub critic_loss: f32,
    /// Actor gradient norm before clipping.
    pub actor_grad_norm: f32,
    /// Actor learning rate used this epoch.
    pub actor_lr: f32,
    /// Critic learning rate used this epoch.
    pub critic_lr: f32,
    /// MB-MIX's own statistics (None for SHAC; left out of the JSON then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbmix: Option<crate::mbmix::MbMixEpochStats>,
}

/// A rollout whose states the critic is fitted on: normalised observations of the start
/// states `[h, N, O]`, rewards `[h, N]`, target-critic values of the next states (0 where
/// no bootstrap applies) and the done flags.
pub(crate) struct CriticRollout<'a> {
    pub obs: &'a ndarray::Array3<f32>,
    pub rewards: &'a Array2<f32>,
    pub next_values: &'a Array2<f32>,
    pub done: &'a [Vec<Done>],
}

impl CriticRollout<'_> {
    /// TD(λ) targets (SHAC §1.4): every episode end and the window's last step cut the
    /// return.
    fn targets(&self, rew_scale: f32, gamma: f32, lambda: f32, out: &mut Array2<f32>) {
        let (h, n) = self.rewards.dim();
        let rewards = self.rewards.mapv(|r| r * rew_scale);
        let mut done_mask = Array2::<f32>::zeros((h, n));
        for t in 0..h {
            for i in 0..n {
                if t + 1 == h || self.done[t][i] != Done::No {
                    done_mask[[t, i]] = 1.0;
                }
            }
        }
        td_lambda_targets(
            rewards.view(),
            self.next_values.view(),
            done_mask.view(),
            gamma,
            lambda,
            out,
        );
    }
}

/// A SHAC agent training on one task.
pub struct Shac {
    pub(crate) cfg: ShacConfig,
    pub(crate) task: Arc<dyn Task>,
    pub(crate) env: BatchEnv,
    pub(crate) actor: StochasticActor,
    pub(crate) critic: Mlp<f32>,
    pub(crate) target_critic: Mlp<f32>,
    pub(crate) actor_opt: Adam<f32>,
    pub(crate) critic_opt: Adam<f32>,
    pub(crate) obs_rms: Option<RunningMeanStd>,
    pub(crate) noise_rng: SeededRng,
    pub(crate) critic_rng: SeededRng,
    pub(crate) act_rng: Mutex<SeededRng>,
    pub(crate) epoch: usize,
    pub(crate) env_steps: u64,
    pub(crate) recent_returns: ReturnMeter,
    pub(crate) engine: WindowEngine,
    pub(crate) seeds: WindowSeeds,
    pub(crate) next_values: Array2<f32>,
    targets: Array2<f32>,
}

impl Shac {
    /// A new agent: validates `cfg`, creates `num_envs` envs of `task` and the networks, all
    /// seeded from `seed`.
    pub fn new(cfg: ShacConfig, task: Arc<dyn Task>, seed: u64) -> Result<Shac> {
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
            LinearInit::Orthogonal {
                gain: std::f64::consts::SQRT_2,
            },
            &mut init_rng,
        );
        critic.set_backend(cfg.network_backend);
        let target_critic = critic.clone();
        let betas = (cfg.betas[0], cfg.betas[1]);
        let (h, n) = (cfg.horizon, cfg.num_envs);
        let mut engine = WindowEngine::new(task.as_ref(), h, n);
        // the window's states stay where the simulator runs, when it offers that
        engine.attach_resident(task.as_ref())?;
        Ok(Shac {
            actor_opt: Adam::new(actor.num_params(), cfg.actor_lr, betas),
            critic_opt: Adam::new(critic.num_params(), cfg.critic_lr, betas),
            obs_rms: cfg.obs_rms.then(|| RunningMeanStd::new(spec.obs_dim)),
            noise_rng: seeded(seed, stream::NOISE),
            critic_rng: seeded(seed, stream::CRITIC),
            act_rng: Mutex::new(seeded(seed, stream::ACT)),
            epoch: 0,
            env_steps: 0,
            recent_returns: ReturnMeter::default(),
            engine,
            seeds: WindowSeeds::zeros(h, n),
            next_values: Array2::zeros((h, n)),
            targets: Array2::zeros((h, n)),
            cfg,
            task,
            env,
            actor,
            critic,
            target_critic,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ShacConfig {
        &self.cfg
    }
    /// Epochs completed so far.
    pub fn epoch(&self) -> usize {
        self.epoch
    }
    /// Simulator env-steps taken in training so far.
    pub fn env_steps(&self) -> u64 {
        self.env_steps
    }
    /// The task.
    pub fn task(&self) -> &Arc<dyn Task> {
        &self.task
    }
    /// The actor.
    pub fn actor(&self) -> &StochasticActor {
        &self.actor
    }
    /// The critic V.
    pub fn critic(&self) -> &Mlp<f32> {
        &self.critic
    }
    /// The target critic V′.
    pub fn target_critic(&self) -> &Mlp<f32> {
        &self.target_critic
    }
    /// The running observation statistics (None with `obs_rms = false`).
    pub fn obs_rms(&self) -> Option<&RunningMeanStd> {
        self.obs_rms.as_ref()
    }
    /// Where the training window's states live when they stay with the simulator
    /// ([`WindowEngine::attach_resident`]); `None`: on the host.
    pub fn resident_window(&self) -> Option<String> {
        self.engine.resident()
    }
    /// The training envs' current states `[N, S]` (between windows).
    pub fn env_state(&self) -> ndarray::ArrayView2<'_, f32> {
        self.env.state()
    }

    /// One SHAC epoch: a window rollout, the actor update (§1.3), critic fitting on TD(λ)
    /// targets (§1.4) and the target-critic update (§1.5).
    ///
    /// With `on_nonfinite_grad = abort`, a NaN or > 1e6 actor gradient returns
    /// [`crate::Error::NonFiniteGradient`]; the window has then already been simulated (env,
    /// stats and RNGs advanced) but no network was changed.
    pub fn train_epoch(&mut self) -> Result<EpochStats> {
        let (actor_lr, critic_lr) = self.start_epoch();
        let frozen = self.simulate_window()?;
        let actor_loss = shac_seeds(
            &self.engine.tape.done,
            self.engine.bootstrap.view(),
            self.engine.tape.rewards.view(),
            self.next_values.view(),
            self.cfg.gamma as f32,
            self.cfg.rew_scale as f32,
            &mut self.seeds,
        );
        let mut grad = vec![0.0f32; self.actor.num_params()];
        let task = self.task.clone();
        self.engine.reverse_sweep(
            task.as_ref(),
            &SimulatorAdjoint(task.as_ref()),
            &self.actor,
            &self.target_critic,
            frozen.as_ref(),
            &self.seeds,
            &mut grad,
        );
        let norm = self.apply_actor_gradient(&mut grad)?;
        let critic_loss = self.fit_critics();
        Ok(EpochStats {
            epoch: self.epoch,
            env_steps: self.env_steps,
            mean_train_return: self.recent_returns.mean(),
            actor_loss,
            critic_loss,
            actor_grad_norm: norm as f32,
            actor_lr: actor_lr as f32,
            critic_lr: critic_lr as f32,
            mbmix: None,
        })
    }

    /// Sets this epoch's actor and critic learning rates (linear schedule, §1.5) and
    /// returns them.
    pub(crate) fn start_epoch(&mut self) -> (f64, f64) {
        let e = self.epoch;
        let actor_lr = self.cfg.scheduled_lr(self.cfg.actor_lr, e);
        let critic_lr = self.cfg.scheduled_lr(self.cfg.critic_lr, e);
        self.actor_opt.lr = actor_lr;
        self.critic_opt.lr = critic_lr;
        (actor_lr, critic_lr)
    }

    /// Rolls the window out in the simulator (§1.3 steps 1–2), counts its env steps and
    /// finished episodes, and computes the terminal values V′ of every step into
    /// `next_values`. Returns the frozen observation statistics the window used.
    pub(crate) fn simulate_window(&mut self) -> Result<Option<RunningMeanStd>> {
        let frozen = training_window(
            &mut self.engine,
            &mut self.env,
            &self.actor,
            &mut self.obs_rms,
            &mut self.noise_rng,
            &mut self.env_steps,
            &mut self.recent_returns,
        )?;
        self.engine
            .terminal_values(&self.target_critic, &mut self.next_values);
        Ok(frozen)
    }

    /// SHAC's actor step with the gradient `grad` of the actor loss ([`actor_step`]): the
    /// NaN / > 1e6 rule (abort with [`crate::Error::NonFiniteGradient`] or skip), norm
    /// clipping, Adam. Returns the norm before clipping.
    pub(crate) fn apply_actor_gradient(&mut self, grad: &mut [f32]) -> Result<f64> {
        let cfg = &self.cfg;
        actor_step(
            &mut self.actor,
            &mut self.actor_opt,
            grad,
            cfg.truncate_grads.then_some(cfg.grad_norm),
            cfg.on_nonfinite_grad,
            self.epoch,
        )
    }

    /// The rest of the epoch after the actor step: critic fitting on the window (§1.4),
    /// the target-critic update ψ′ ← αψ′ + (1 − α)ψ (§1.5), and the epoch count. Returns
    /// the critic loss.
    pub(crate) fn fit_critics(&mut self) -> f32 {
        self.fit_critics_with(&[])
    }

    /// [`Self::fit_critics`] on the simulator window plus the states of the rollouts
    /// `extra` (MB-MIX's `critic.train_on = sim_and_model`).
    pub(crate) fn fit_critics_with(&mut self, extra: &[CriticRollout<'_>]) -> f32 {
        let critic_loss = self.train_critic(extra);
        let alpha = self.cfg.target_critic_alpha as f32;
        for (t, p) in self
            .target_critic
            .params_mut()
            .iter_mut()
            .zip(self.critic.params())
        {
            *t = *t * alpha + (1.0 - alpha) * p;
        }
        self.epoch += 1;
        critic_loss
    }

    /// TD(λ) targets and `critic_iterations` passes of `critic_batches` minibatches over the
    /// window's h·N states (in window order, or a fresh permutation per pass with
    /// `critic_shuffle`), and over the states of the `extra` rollouts after them (rows whose observation
    /// or target is not finite left out). Returns the mean minibatch loss of the last pass.
    fn train_critic(&mut self, extra: &[CriticRollout<'_>]) -> f32 {
        let cfg = &self.cfg;
        let (h, n) = (cfg.horizon, cfg.num_envs);
        let od = self.task.spec().obs_dim;
        let (gamma, lambda) = (cfg.gamma as f32, cfg.lambda_td as f32);
        let rew_scale = cfg.rew_scale as f32;
        let sim = CriticRollout {
            obs: &self.engine.obs,
            rewards: &self.engine.tape.rewards,
            next_values: &self.next_values,
            done: &self.engine.tape.done,
        };
        sim.targets(rew_scale, gamma, lambda, &mut self.targets);
        let mut obs: Vec<f32> = self.engine.obs.as_slice().expect("contiguous obs").to_vec();
        let mut targets: Vec<f32> = self
            .targets
            .as_slice()
            .expect("contiguous targets")
            .to_vec();
        debug_assert_eq!(obs.len(), h * n * od);
        for x in extra {
            let mut t = Array2::zeros(x.rewards.dim());
            x.targets(rew_scale, gamma, lambda, &mut t);
            let xo = x.obs.as_slice().expect("contiguous obs");
            for (k, &y) in t.iter().enumerate() {
                let row = &xo[k * od..(k + 1) * od];
                if y.is_finite() && row.iter().all(|v| v.is_finite()) {
                    obs.extend_from_slice(row);
                    targets.push(y);
                }
            }
        }
        let total = targets.len();
        let batch = (total / cfg.critic_batches).max(1);
        let num_batches = total.div_ceil(batch);
        let mut perm: Vec<usize> = Vec::with_capacity(total);
        let mut x = Vec::with_capacity(batch * od);
        let mut y = Vec::with_capacity(batch);
        let mut grad = vec![0.0f32; self.critic.num_params()];
        let mut last_pass_loss = 0.0f32;
        for _ in 0..cfg.critic_iterations {
            perm.clear();
            perm.extend(0..total);
            if cfg.critic_shuffle {
                perm.shuffle(&mut self.critic_rng);
            }
            let mut sum = 0.0f32;
            for b in 0..num_batches {
                let idx = &perm[b * batch..((b + 1) * batch).min(total)];
                x.clear();
                y.clear();
                for &k in idx {
                    x.extend_from_slice(&obs[k * od..(k + 1) * od]);
                    y.push(targets[k]);
                }
                grad.fill(0.0);
                let loss = self.critic.mse_grad(&x, idx.len(), &y, &mut grad);
                nan_to_num(&mut grad);
                if cfg.truncate_grads {
                    clip_grad_norm(&mut grad, cfg.grad_norm);
                }
                self.critic_opt.update(self.critic.params_mut(), &grad);
                sum += loss;
            }
            last_pass_loss = sum / num_batches as f32;
        }
        last_pass_loss
    }

    /// The actor behind its observation normalisation.
    pub(crate) fn policy(&self) -> PolicyView<'_> {
        PolicyView {
            task: &self.task,
            actor: &self.actor,
            obs_rms: self.obs_rms.as_ref(),
        }
    }

    /// Actions the env would receive (tanh applied) for raw observations `[N, obs_dim]`:
    /// `tanh(μ)` when `deterministic`, else `tanh(μ + σε)` with noise from the agent's own
    /// act RNG (which training does not use).
    pub fn act(&self, obs: ArrayView2<f32>, deterministic: bool) -> Result<Array2<f32>> {
        self.policy().act(obs, deterministic, &self.act_rng)
    }

    /// Deterministic evaluation: `episodes` envs started from the task's stochastic reset
    /// (own RNG from `seed`; training RNGs untouched), run with `tanh(μ)` until each has
    /// finished one full episode; undiscounted returns; success via
    /// [`Task::episode_success`] on each episode's states (start state first).
    pub fn evaluate(&self, episodes: usize, seed: u64) -> Result<EvalStats> {
        self.evaluate_from(episodes, seed, true)
    }

    /// [`Shac::evaluate`] with the choice of initial states: the task's reset noise
    /// (`stochastic_init`, as training uses) or its deterministic initial state.
    pub fn evaluate_from(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
    ) -> Result<EvalStats> {
        self.policy().evaluate(episodes, seed, stochastic_init)
    }

    /// The episodes behind [`Shac::evaluate_from`] ([`PolicyView::rollout_episodes`]).
    pub fn rollout_episodes(
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::PointMass;
    use crate::{Error, NetworkBackend, NonFiniteGradPolicy};

    pub(crate) fn toy_config() -> ShacConfig {
        ShacConfig {
            num_envs: 16,
            horizon: 16,
            max_epochs: 80,
            actor_units: vec![32, 32],
            critic_units: vec![32, 32],
            actor_lr: 5e-3,
            critic_lr: 2e-3,
            critic_iterations: 8,
            ..ShacConfig::default()
        }
    }

    pub(crate) fn toy_task() -> Arc<dyn Task> {
        Arc::new(PointMass::new(48))
    }

    #[test]
    fn shac_improves_the_toy_task() {
        let mut agent = Shac::new(toy_config(), toy_task(), 3).unwrap();
        let before = agent.evaluate(32, 99).unwrap();
        let mut last = None;
        for _ in 0..80 {
            last = Some(agent.train_epoch().unwrap());
        }
        let after = agent.evaluate(32, 99).unwrap();
        let last = last.unwrap();
        println!(
            "toy SHAC: eval return {:.2} → {:.2} (success {:?} → {:?}); last epoch {last:?}",
            before.mean_return, after.mean_return, before.success_rate, after.success_rate
        );
        assert_eq!(agent.epoch(), 80);
        assert_eq!(agent.env_steps(), 80 * 16 * 16);
        assert_eq!(last.epoch, 80);
        assert!(last.mean_train_return.is_some());
        // Returns are negative costs; a clear improvement halves the cost at least.
        assert!(
            after.mean_return > 0.5 * before.mean_return
                && after.mean_return - before.mean_return > 5.0,
            "no clear improvement: {} → {}",
            before.mean_return,
            after.mean_return
        );
        assert!(after.success_rate.unwrap() > before.success_rate.unwrap());
    }

    #[test]
    fn dfdx_backend_trains_like_the_fused_backend() {
        // Same seed, same function, different arithmetic order: after three epochs the
        // losses and parameters agree to f32 rounding, not bitwise.
        let run = |backend| {
            let cfg = ShacConfig {
                network_backend: backend,
                ..toy_config()
            };
            let mut agent = Shac::new(cfg, toy_task(), 11).unwrap();
            assert_eq!(agent.actor.mu.backend(), backend);
            assert_eq!(agent.critic.backend(), backend);
            assert_eq!(agent.target_critic.backend(), backend);
            let stats: Vec<EpochStats> = (0..3).map(|_| agent.train_epoch().unwrap()).collect();
            (stats, agent.actor.params_flat(), agent.critic.params_flat())
        };
        let (sf, af, cf) = run(NetworkBackend::Fused);
        let (sd, ad, cd) = run(NetworkBackend::Dfdx);
        for (f, d) in sf.iter().zip(&sd) {
            for (x, y) in [
                (f.actor_loss, d.actor_loss),
                (f.critic_loss, d.critic_loss),
                (f.actor_grad_norm, d.actor_grad_norm),
            ] {
                assert!(
                    (x - y).abs() <= 1e-3 * (1.0 + x.abs()),
                    "fused {x} vs dfdx {y}"
                );
            }
        }
        let max_diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        assert!(
            max_diff(&af, &ad) < 1e-3,
            "actor params differ by {}",
            max_diff(&af, &ad)
        );
        assert!(
            max_diff(&cf, &cd) < 1e-3,
            "critic params differ by {}",
            max_diff(&cf, &cd)
        );
    }

    #[test]
    fn same_seed_gives_bitwise_identical_runs() {
        let run = |seed| {
            let mut agent = Shac::new(toy_config(), toy_task(), seed).unwrap();
            let stats: Vec<EpochStats> = (0..3).map(|_| agent.train_epoch().unwrap()).collect();
            (
                stats,
                agent.actor.params_flat(),
                agent.evaluate(4, 1).unwrap(),
            )
        };
        let (a, pa, ea) = run(5);
        let (b, pb, eb) = run(5);
        let bits = |s: &[EpochStats]| serde_json::to_string(s).unwrap();
        assert_eq!(bits(&a), bits(&b));
        assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(ea, eb);
        let (c, _, _) = run(6);
        assert_ne!(bits(&a), bits(&c), "a different seed must change the run");
        // Evaluating and acting between epochs does not disturb training.
        let mut agent = Shac::new(toy_config(), toy_task(), 5).unwrap();
        let interleaved: Vec<EpochStats> = (0..3)
            .map(|_| {
                agent.evaluate(3, 42).unwrap();
                agent.act(Array2::zeros((2, 3)).view(), false).unwrap();
                agent.train_epoch().unwrap()
            })
            .collect();
        assert_eq!(bits(&a), bits(&interleaved));
    }

    #[test]
    fn nonfinite_actor_gradient_aborts_or_skips() {
        let task: Arc<dyn Task> = Arc::new(crate::testing::NanAdjoint(PointMass::new(48)));
        let mut a = Shac::new(toy_config(), task.clone(), 1).unwrap();
        let actor0 = a.actor.params_flat();
        match a.train_epoch() {
            Err(Error::NonFiniteGradient { epoch: 0, norm }) => assert!(norm.is_nan()),
            other => panic!("expected NonFiniteGradient, got {other:?}"),
        }
        assert_eq!(a.actor.params_flat(), actor0);
        assert_eq!(a.epoch(), 0);

        let cfg = ShacConfig {
            on_nonfinite_grad: NonFiniteGradPolicy::Skip,
            ..toy_config()
        };
        let mut b = Shac::new(cfg, task, 1).unwrap();
        let critic0 = b.critic.params_flat();
        let stats = b.train_epoch().unwrap();
        assert!(stats.actor_grad_norm.is_nan());
        assert_eq!(
            b.actor.params_flat(),
            actor0,
            "skipped update must not move the actor"
        );
        assert_ne!(b.critic.params_flat(), critic0, "the critic still trains");
        assert!(b.critic.params().iter().all(|p| p.is_finite()));
        assert_eq!(b.epoch(), 1);
    }

    #[test]
    fn act_and_evaluate_shapes_and_errors() {
        let agent = Shac::new(toy_config(), toy_task(), 1).unwrap();
        let obs = Array2::from_shape_fn((5, 3), |(i, j)| (i as f32 - 2.0) * 0.3 + j as f32 * 0.1);
        let det = agent.act(obs.view(), true).unwrap();
        assert_eq!(det.dim(), (5, 1));
        assert!(det.iter().all(|a| a.abs() < 1.0));
        assert_eq!(det, agent.act(obs.view(), true).unwrap());
        // a column-major view of the same observations (e.g. a transpose) acts the same
        let cols = obs.t().as_standard_layout().into_owned();
        assert_eq!(det, agent.act(cols.t(), true).unwrap());
        let sto = agent.act(obs.view(), false).unwrap();
        assert_ne!(det, sto);
        assert!(matches!(
            agent.act(Array2::zeros((2, 4)).view(), true),
            Err(Error::Dimension { .. })
        ));
        assert!(agent.evaluate(0, 1).is_err());
        let ev = agent.evaluate(6, 2).unwrap();
        assert_eq!(ev.returns.len(), 6);
        assert!(ev.success_rate.is_some());
        let bad = ShacConfig {
            horizon: 0,
            ..toy_config()
        };
        assert!(matches!(
            Shac::new(bad, toy_task(), 0),
            Err(Error::InvalidConfig { field, .. }) if field == "horizon"
        ));
    }

    /// Per-epoch cost at the CartPole setting (64 envs, h = 32, [64, 64] networks, critic
    /// 16 × 4 minibatches of 512) on the toy task: printed, not asserted.
    #[test]
    fn epoch_timing_at_cartpole_size() {
        let cfg = ShacConfig::default();
        let mut agent = Shac::new(cfg, toy_task(), 0).unwrap();
        agent.train_epoch().unwrap();
        let t0 = std::time::Instant::now();
        let epochs = 3;
        for _ in 0..epochs {
            agent.train_epoch().unwrap();
        }
        let per_epoch = t0.elapsed().as_secs_f64() / epochs as f64;
        println!(
            "SHAC epoch at CartPole size (toy task): {:.1} ms",
            per_epoch * 1e3
        );
    }
}

//! MB-MIX (algorithms.md §3): SHAC's actor–critic with the λ-mixed window objective
//! (§3.6) on simulator and learned-model rollouts (§3.7), and a dynamics model trained with
//! the Sobolev loss on the simulator's transitions and Jacobians (§3.5).
//!
//! One epoch (§3.9, inferred reconstruction):
//! 1. learning rates of actor, critic and (with `model_lr_decay`) model from SHAC's linear
//!    schedule;
//! 2. the simulator window of h steps (as SHAC: the episodes continue across epochs, the
//!    running observation statistics update);
//! 3. the model rollout(s) of the reading, from the window's start states, with the same
//!    exploration noise ε as the simulator window (common random numbers) and the window's
//!    frozen observation statistics (the running statistics see simulator observations
//!    only);
//! 4. the mixed objective ([`mix_seeds`]) of each rollout;
//! 5. the actor gradient = the sum of the reverse sweeps (linear in the seeds): simulator
//!    adjoints for the simulator window, model VJPs for the model rollout ([`ModelTask`]),
//!    model VJPs on the simulator's tape for reading C ([`ModelAdjoint`]), a
//!    [`HandoverAdjoint`] for B's chain; SHAC's NaN rule, clipping and Adam;
//! 6. the critic as SHAC on the simulator window (`critic.train_on = sim`, default), or on
//!    the simulator window and the model rollout (`sim_and_model`), and the target critic;
//! 7. the newest window's transitions (`Done::NonFinite` rows left out) with their Sobolev
//!    targets into the model's buffer, then one model training epoch. By default
//!    (`model.update_order = after`) the buffer is filled after the actor step so that the
//!    model of steps 3–5 is the one trained until the last epoch (adding data moves the
//!    model's normalisation statistics), and an aborted epoch leaves the model untouched;
//!    with `before`, step 7 runs right after step 2 and the objectives use the model
//!    trained on the newest window too.
//!
//! During the first `rollout.model_warmup_epochs` epochs (and always with `sim_only`) the
//! actor uses the simulator window alone.
//!
//! Diagnostics (every `diagnostics.every` epochs): the model's next-state and Jacobian
//! errors on held-out transitions (a sample of the newest window, before it enters the
//! buffer), and the actor-gradient variance of the mixed and of SHAC's objective on the
//! simulator window, from G disjoint groups of envs (see [`MbMixEpochStats::grad_var_mix`]).

use crate::error::Result;
use crate::mbmix_config::{CriticData, MbMixConfig, ModelGate, Plan};
use crate::mix::{mix_seeds, Bootstrap};
use crate::model::{ModelAdjoint, ModelTask};
use crate::policy::StochasticActor;
use crate::reward_head::RewardHead;
use crate::rms::RunningMeanStd;
use crate::shac::{CriticRollout, EpochStats, EvalEpisode, EvalStats, Shac};
use crate::window::{
    shac_seeds, HandoverAdjoint, HandoverTasks, SimulatorAdjoint, StepAdjoint, WindowEngine,
    WindowSeeds,
};
use diff_core::{seeded, BatchEnv, BatchEnvSnapshot, Done, SeededRng, Task, WindowTape};
use ndarray::{s, Array2, ArrayView2};
use sobolev_model::{
    DirectionSource, GivenDirections, ModelSpace, RewardSource, SobolevForm, SobolevTrainer,
    TargetSpec, UpdateOrder,
};
use std::sync::Arc;

/// RNG stream of the model (projection directions and minibatches), after SHAC's streams.
pub(crate) const MODEL_STREAM: u64 = 5;

/// Multiplier that spreads the ensemble members' weight seeds.
const MEMBER_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// MB-MIX's part of an epoch's statistics (in [`EpochStats::mbmix`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MbMixEpochStats {
    /// Whether the actor used the model this epoch (false during warm-up and for
    /// `sim_only`).
    pub model_used: bool,
    /// The mixed objective's loss on the simulator window (None when the reading does not
    /// use it: B and `model_only` after warm-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_actor_loss: Option<f32>,
    /// The mixed objective's loss on the model rollout (A, `model_only`) or on B's chain,
    /// before the weight c.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_actor_loss: Option<f32>,
    /// Envs whose model rollout produced a non-finite state this epoch.
    pub model_nonfinite: usize,
    /// With `rollout.model_gate` other than `none`: the cosine between the simulator
    /// window's actor gradient and the model objectives' before gating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_grad_cos: Option<f64>,
    /// Mean Sobolev loss J_M of this epoch's model training.
    pub model_loss: f64,
    /// Its value term.
    pub model_value_loss: f64,
    /// Its Jacobian term.
    pub model_jacobian_loss: f64,
    /// Mean model gradient norm before clipping.
    pub model_grad_norm: f64,
    /// Model learning rate used this epoch.
    pub model_lr: f64,
    /// Transitions in the model's buffer.
    pub model_buffer_len: usize,
    /// Wall time of this epoch's simulator Sobolev targets (the window's transitions, plus
    /// the held-out set on diagnostic epochs), seconds. Not deterministic, so not
    /// serialised with the statistics (the run's metrics copy it).
    #[serde(skip)]
    pub model_targets_s: f64,
    /// Wall time of this epoch's model training (every member, and the reward head),
    /// seconds. Not deterministic (as `model_targets_s`).
    #[serde(skip)]
    pub model_train_s: f64,
    /// Mean normalised MSE of the learned reward's last training pass
    /// (`model.reward = learned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_head_loss: Option<f64>,
    /// Held-out next-state error ‖ŝ′ − s′‖/‖s′ − s‖ of the model (diagnostic epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_next_state_err: Option<f64>,
    /// Held-out Jacobian error ‖Ĵ − J_F‖_F/‖J_F‖_F of the model (diagnostic epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_jacobian_err: Option<f64>,
    /// Variance (trace of the covariance) of the mixed objective's actor-gradient
    /// estimator on the simulator window, estimated from G disjoint env groups: with g_k
    /// the gradient of group k's part of the loss (so that Σ_k g_k = g, the full-batch
    /// gradient), `Σ_k ‖G·g_k − g‖² / (G(G − 1))`: the variance of the mean of G
    /// independent group estimates G·g_k, i.e. of the full-batch estimator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_var_mix: Option<f64>,
    /// The same for SHAC's objective on the same window (§3.10 claims
    /// Var(A^MIX) ≤ Var(A^SHAC)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_var_shac: Option<f64>,
}

/// An MB-MIX agent training on one task.
pub struct MbMix {
    pub(crate) cfg: MbMixConfig,
    pub(crate) shac: Shac,
    pub(crate) trainer: SobolevTrainer,
    pub(crate) model_rng: SeededRng,
    /// The actor loss's objectives after the warm-up.
    plans: Vec<Plan>,
    /// One buffer per [`Plan::Rollout`], in order.
    rollouts: Vec<RolloutBuf>,
    /// The online critic's values of the window's next states (`mix.bootstrap = online`).
    online_values: Array2<f32>,
    /// The learned reward of model rollouts (`model.reward = learned`).
    pub(crate) reward_head: Option<RewardHead>,
    /// Ensemble members 2…K (`model.ensemble`), trained like `trainer` on the same data.
    pub(crate) members: Vec<SobolevTrainer>,
}

/// A rollout with model steps (A's and `model_only`'s model rollout, B's chain) and its
/// buffers.
struct RolloutBuf {
    engine: WindowEngine,
    values: Array2<f32>,
    seeds: WindowSeeds,
    /// The simulator envs of a chain's prefix.
    chain_env: Option<BatchEnv>,
}

impl MbMix {
    /// A new agent: validates `cfg`, creates the SHAC part ([`Shac::new`] with `cfg.shac`)
    /// and the dynamics model (weights from `seed` combined with `cfg.model.seed`).
    pub fn new(cfg: MbMixConfig, task: Arc<dyn Task>, seed: u64) -> Result<MbMix> {
        cfg.validate()?;
        let mut shac = Shac::new(cfg.shac.clone(), task.clone(), seed)?;
        // the model's data are the window's states: keep them on the host
        shac.engine.detach_resident();
        // `policy_adjoint` targets reuse the window sweep's simulator VJPs
        shac.engine.record_step_vjp =
            cfg.model.sobolev.direction_source == DirectionSource::PolicyAdjoint;
        let spec = task.spec();
        // the model's state: the simulator state, or the observation (`model.space`)
        let model_dim = match cfg.model.space {
            ModelSpace::SimState => spec.state_dim,
            ModelSpace::Obs => spec.obs_dim,
        };
        let model_cfg = sobolev_model::ModelConfig {
            seed: seed.rotate_left(32) ^ cfg.model.seed,
            ..cfg.model.clone()
        };
        let members = (1..cfg.model.ensemble)
            .map(|k| {
                SobolevTrainer::new(
                    sobolev_model::ModelConfig {
                        seed: model_cfg.seed ^ MEMBER_SEED.wrapping_mul(k as u64),
                        ..model_cfg.clone()
                    },
                    model_dim,
                    spec.act_dim,
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let trainer = SobolevTrainer::new(model_cfg, model_dim, spec.act_dim)?;
        let n = cfg.shac.num_envs;
        let plans = cfg.plans()?;
        // the rollouts' tapes hold the model's states (observations with `model.space = obs`)
        let rollout_task: Arc<dyn Task> = match cfg.model.space {
            ModelSpace::SimState => task.clone(),
            ModelSpace::Obs => Arc::new(ModelTask::observation_space(
                task.clone(),
                trainer.model().clone(),
            )?),
        };
        let mut rollouts = Vec::new();
        for p in &plans {
            if let Plan::Rollout { prefix, len, .. } = *p {
                rollouts.push(RolloutBuf {
                    engine: WindowEngine::new(rollout_task.as_ref(), len, n),
                    values: Array2::zeros((len, n)),
                    seeds: WindowSeeds::zeros(len, n),
                    chain_env: (prefix > 0)
                        .then(|| BatchEnv::new(task.clone(), n, seed, cfg.shac.stochastic_init))
                        .transpose()?,
                });
            }
        }
        let mut model_rng = seeded(seed, MODEL_STREAM);
        let reward_head = (cfg.model.reward == RewardSource::Learned).then(|| {
            RewardHead::new(
                model_dim,
                spec.act_dim,
                &cfg.model.reward_hidden,
                cfg.model.buffer_capacity,
                cfg.model.betas,
                &mut model_rng,
            )
        });
        Ok(MbMix {
            model_rng,
            reward_head,
            members,
            online_values: Array2::zeros((cfg.shac.horizon, n)),
            plans,
            rollouts,
            trainer,
            shac,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MbMixConfig {
        &self.cfg
    }
    /// Epochs completed so far.
    pub fn epoch(&self) -> usize {
        self.shac.epoch()
    }
    /// Simulator env-steps taken in training so far (model steps are not counted).
    pub fn env_steps(&self) -> u64 {
        self.shac.env_steps()
    }
    /// The task.
    pub fn task(&self) -> &Arc<dyn Task> {
        self.shac.task()
    }
    /// The actor.
    pub fn actor(&self) -> &StochasticActor {
        self.shac.actor()
    }
    /// The actor–critic part (networks, optimisers, env batch).
    pub fn shac(&self) -> &Shac {
        &self.shac
    }
    /// The dynamics model with its optimiser and buffer.
    pub fn model_trainer(&self) -> &SobolevTrainer {
        &self.trainer
    }

    /// Deterministic evaluation ([`Shac::evaluate_from`]).
    pub fn evaluate_from(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
    ) -> Result<EvalStats> {
        self.shac.evaluate_from(episodes, seed, stochastic_init)
    }
    /// Deterministic evaluation from the task's stochastic reset ([`Shac::evaluate`]).
    pub fn evaluate(&self, episodes: usize, seed: u64) -> Result<EvalStats> {
        self.shac.evaluate(episodes, seed)
    }
    /// Deterministic episodes ([`Shac::rollout_episodes`]).
    pub fn rollout_episodes(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
        max_steps: usize,
    ) -> Result<Vec<EvalEpisode>> {
        self.shac
            .rollout_episodes(episodes, seed, stochastic_init, max_steps)
    }
    /// Actions for raw observations ([`Shac::act`]).
    pub fn act(&self, obs: ArrayView2<f32>, deterministic: bool) -> Result<Array2<f32>> {
        self.shac.act(obs, deterministic)
    }

    /// One MB-MIX epoch (see the module docs).
    ///
    /// With `shac.on_nonfinite_grad = abort`, a NaN or > 1e6 actor gradient returns
    /// [`crate::Error::NonFiniteGradient`]; the simulator window has then been simulated (env,
    /// statistics and RNGs advanced), but no network, the model and its buffer included,
    /// was changed.
    pub fn train_epoch(&mut self) -> Result<EpochStats> {
        let e = self.shac.epoch();
        let (actor_lr, critic_lr) = self.shac.start_epoch();
        let model_lr = if self.cfg.model_lr_decay {
            self.shac.cfg.scheduled_lr(self.cfg.model.lr, e)
        } else {
            self.cfg.model.lr
        };
        self.trainer.set_lr(model_lr);
        for m in self.members.iter_mut() {
            m.set_lr(model_lr);
        }
        let warm = e < self.cfg.rollout.model_warmup_epochs;
        let plans = if warm {
            vec![Plan::Window {
                model_grad: false,
                weight: 1.0,
            }]
        } else {
            let ramp = self.cfg.rollout.model_ramp_epochs;
            let k = e + 1 - self.cfg.rollout.model_warmup_epochs;
            if ramp > k {
                ramped_plans(&self.plans, k as f64 / ramp as f64)
            } else {
                self.plans.clone()
            }
        };
        let diagnose = (e + 1).is_multiple_of(self.cfg.diagnostics.every);

        // 2. The simulator window, remembering where it started.
        let start = self.shac.env.snapshot();
        let noise_start = self.shac.noise_rng.clone();
        let frozen = self.shac.simulate_window()?;
        if self.online() {
            let sh = &mut self.shac;
            sh.engine
                .terminal_values(&sh.critic, &mut self.online_values);
        }

        // 7 first, with `model.update_order = before`: the objectives use the model trained
        // on the newest window too.
        let model_first = self.cfg.model.update_order == UpdateOrder::Before;
        let mut early = MbMixEpochStats::default();
        if model_first {
            self.update_model(
                &self.shac.task.clone(),
                diagnose,
                model_lr,
                None,
                &mut early,
            )?;
        }

        // 3–5. Objectives and the actor gradient: the window's first, then the rollouts.
        let uses_model = plans.iter().any(|p| match p {
            Plan::Window { model_grad, .. } => *model_grad,
            Plan::Rollout { .. } => true,
        });
        let mut stats = MbMixEpochStats {
            model_used: uses_model,
            ..early
        };
        let mut grad = vec![0.0f32; self.shac.actor.num_params()];
        let task = self.shac.task.clone();
        let model_task: Option<Arc<ModelTask>> = plans
            .iter()
            .any(|p| matches!(p, Plan::Rollout { .. }))
            .then(|| {
                let model = self.trainer.model().clone();
                match self.cfg.model.space {
                    ModelSpace::SimState => ModelTask::new(task.clone(), model),
                    ModelSpace::Obs => ModelTask::observation_space(task.clone(), model),
                }
                .and_then(|m| {
                    m.with_members(self.members.iter().map(|t| t.model().clone()).collect())
                })
                .map(|m| {
                    let m = m.with_done(self.cfg.model.done);
                    Arc::new(match &self.reward_head {
                        Some(h) => m.with_reward(h.snapshot()),
                        None => m,
                    })
                })
            })
            .transpose()?;
        let sim_loss = self.sim_mix_seeds();
        let online = self.online();
        let mut actor_loss = 0.0f32;
        // whether the last window sweep stepped back through the model
        let mut window_through_model = None;
        for p in &plans {
            if let Plan::Window { model_grad, weight } = *p {
                window_through_model = Some(model_grad);
                let dynamics = sim_steps(model_grad, task.as_ref(), &self.trainer, &self.members)?;
                let sh = &mut self.shac;
                // the unweighted seeds stay in SHAC's buffer (the diagnostics read them)
                let scaled;
                let seeds = if weight != 1.0 {
                    let mut c = sh.seeds.clone();
                    c.reward.mapv_inplace(|v| v * weight as f32);
                    c.value.mapv_inplace(|v| v * weight as f32);
                    scaled = c;
                    &scaled
                } else {
                    &sh.seeds
                };
                let value_net = if online {
                    &sh.critic
                } else {
                    &sh.target_critic
                };
                sh.engine.reverse_sweep(
                    task.as_ref(),
                    &dynamics,
                    &sh.actor,
                    value_net,
                    frozen.as_ref(),
                    seeds,
                    &mut grad,
                );
                actor_loss += weight as f32 * sim_loss;
                stats.sim_actor_loss = Some(sim_loss);
            }
        }
        // the window's ∂L/∂s′ (before the diagnostics' sweeps overwrite them), with the
        // simulator's VJP of them when that sweep went through the simulator
        let policy_u = (self.cfg.model.sobolev.direction_source == DirectionSource::PolicyAdjoint)
            .then_some(window_through_model)
            .flatten()
            .map(|through_model| {
                let e = &self.shac.engine;
                PolicyDirections {
                    u: e.step_adj.clone(),
                    vjp: (!through_model && e.record_step_vjp)
                        .then(|| (e.step_vjp_s.clone(), e.step_vjp_a.clone())),
                }
            });
        if let Some(mt) = &model_task {
            // with a gate, the model objectives' gradient apart, then gated into `grad`
            let gate = self.cfg.rollout.model_gate;
            let mut gated = (gate != ModelGate::None).then(|| vec![0.0f32; grad.len()]);
            let mut r = 0;
            let mut model_loss = 0.0f32;
            for p in &plans {
                if let Plan::Rollout {
                    prefix,
                    model_grad,
                    weight,
                    ..
                } = *p
                {
                    let loss = self.model_rollout(
                        r,
                        prefix,
                        model_grad,
                        mt,
                        &start,
                        noise_start.clone(),
                        frozen.as_ref(),
                        weight as f32,
                        gated.as_deref_mut().unwrap_or(&mut grad),
                    )?;
                    model_loss += loss;
                    actor_loss += weight as f32 * loss;
                    stats.model_nonfinite += self.rollouts[r]
                        .engine
                        .tape
                        .done
                        .iter()
                        .flatten()
                        .filter(|d| **d == Done::NonFinite)
                        .count();
                    r += 1;
                }
            }
            stats.model_actor_loss = Some(model_loss);
            if let Some(g) = gated {
                stats.model_grad_cos = gate.combine(&mut grad, &g);
            }
        }

        // Diagnostics that need the pre-update actor.
        if diagnose && self.cfg.diagnostics.grad_variance_groups >= 2 {
            let (mix, shac) = self.gradient_variances(frozen.as_ref());
            stats.grad_var_mix = Some(mix);
            stats.grad_var_shac = Some(shac);
        }
        let norm = self.shac.apply_actor_gradient(&mut grad)?;

        // 6. Critic and target critic, as SHAC, on the simulator window (and with
        // `critic.train_on = sim_and_model` the model rollout's states).
        let critic_loss = match (self.cfg.critic.train_on, model_task.is_some()) {
            (CriticData::SimAndModel, true) => {
                // the critic's TD targets bootstrap from the target critic
                if online {
                    for b in self.rollouts.iter_mut() {
                        b.engine
                            .terminal_values(&self.shac.target_critic, &mut b.values);
                    }
                }
                let extra: Vec<CriticRollout<'_>> = self
                    .rollouts
                    .iter()
                    .map(|b| CriticRollout {
                        obs: &b.engine.obs,
                        rewards: &b.engine.tape.rewards,
                        next_values: &b.values,
                        done: &b.engine.tape.done,
                    })
                    .collect();
                self.shac.fit_critics_with(&extra)
            }
            _ => self.shac.fit_critics(),
        };

        // 7. The model (with `model.update_order = after`, the default).
        if !model_first {
            self.update_model(&task, diagnose, model_lr, policy_u.as_ref(), &mut stats)?;
        }
        stats.model_lr = model_lr;
        stats.model_buffer_len = self.trainer.buffer().len();

        Ok(EpochStats {
            epoch: self.shac.epoch(),
            env_steps: self.shac.env_steps(),
            mean_train_return: self.shac.recent_returns.mean(),
            actor_loss,
            critic_loss,
            actor_grad_norm: norm as f32,
            actor_lr: actor_lr as f32,
            critic_lr: critic_lr as f32,
            mbmix: Some(stats),
        })
    }

    /// Step 7: the model's held-out errors on the newest window (diagnostic epochs), then
    /// the window joins the buffer and the model trains one epoch.
    fn update_model(
        &mut self,
        task: &Arc<dyn Task>,
        diagnose: bool,
        model_lr: f64,
        policy_u: Option<&PolicyDirections>,
        stats: &mut MbMixEpochStats,
    ) -> Result<()> {
        let clock = std::time::Instant::now();
        let tape = &self.shac.engine.tape;
        let (s_rows, a_rows) = window_transitions(tape);
        // the window's own next states: the targets need no second forward step
        let next_rows = kept_rows(tape, &tape.next_states);
        let u_rows = policy_u.map(|p| {
            (
                kept_rows(tape, &p.u),
                p.vjp
                    .as_ref()
                    .map(|(vs, va)| (kept_rows(tape, vs), kept_rows(tape, va))),
            )
        });
        let samples = self.cfg.diagnostics.model_error_samples;
        if diagnose && samples > 0 && s_rows.nrows() > 0 {
            let stride = s_rows.nrows().div_ceil(samples);
            let pick = |m: &Array2<f32>| m.slice(s![..;stride, ..]).to_owned();
            let full = TargetSpec::unit(SobolevForm::Full, 1);
            let (s_pick, a_pick) = (pick(&s_rows), pick(&a_rows));
            let (held_out, first_col) = match self.cfg.model.space {
                ModelSpace::SimState => (
                    sobolev_model::collect(
                        task.as_ref(),
                        s_pick.view(),
                        a_pick.view(),
                        &full,
                        &mut self.model_rng,
                    )?,
                    0,
                ),
                // an observation-space model is scored on its action Jacobian
                ModelSpace::Obs => (
                    sobolev_model::collect_observed(
                        task.as_ref(),
                        s_pick.view(),
                        a_pick.view(),
                        None,
                        &full,
                        &mut self.model_rng,
                    )?,
                    task.spec().obs_dim,
                ),
            };
            if !held_out.is_empty() {
                let ev =
                    sobolev_model::evaluate_columns(self.trainer.model(), &held_out, first_col)?;
                stats.model_next_state_err = Some(ev.next_state_rel_err);
                stats.model_jacobian_err = Some(ev.jacobian_rel_err);
            }
        }
        // the simulator targets once, for every member
        let batch = match self.cfg.model.space {
            ModelSpace::SimState => sobolev_model::collect_with_directions(
                task.as_ref(),
                s_rows.view(),
                a_rows.view(),
                Some(next_rows.view()),
                &self.trainer.target_spec(),
                u_rows.as_ref().map(|(u, vjp)| GivenDirections {
                    u: u.view(),
                    vjp: vjp.as_ref().map(|(vs, va)| (vs.view(), va.view())),
                }),
                &mut self.model_rng,
            )?,
            ModelSpace::Obs => sobolev_model::collect_observed(
                task.as_ref(),
                s_rows.view(),
                a_rows.view(),
                Some(next_rows.view()),
                &self.trainer.target_spec(),
                &mut self.model_rng,
            )?,
        };
        stats.model_targets_s = clock.elapsed().as_secs_f64();
        let clock = std::time::Instant::now();
        self.trainer.add(&batch)?;
        for m in self.members.iter_mut() {
            m.add(&batch)?;
        }
        if !self.trainer.buffer().is_empty() {
            // the losses are the members' means
            let k = (self.members.len() + 1) as f64;
            let ms = self.trainer.train_epoch(&mut self.model_rng)?;
            let (mut loss, mut value, mut jac, mut norm) =
                (ms.loss, ms.value_loss, ms.jacobian_loss, ms.grad_norm);
            for m in self.members.iter_mut() {
                let ms = m.train_epoch(&mut self.model_rng)?;
                loss += ms.loss;
                value += ms.value_loss;
                jac += ms.jacobian_loss;
                norm += ms.grad_norm;
            }
            stats.model_loss = loss / k;
            stats.model_value_loss = value / k;
            stats.model_jacobian_loss = jac / k;
            stats.model_grad_norm = norm / k;
        }
        if let Some(head) = self.reward_head.as_mut() {
            let (sn, a, r) = window_rewards(&self.shac.engine.tape);
            // the head reads the model's state: the observation with `model.space = "obs"`
            let sn = match self.cfg.model.space {
                ModelSpace::SimState => sn,
                ModelSpace::Obs => observe_rows(task.as_ref(), sn.view()),
            };
            head.add(sn.view(), a.view(), &r);
            let m = &self.cfg.model;
            stats.reward_head_loss = Some(head.train_epoch(
                m.iterations,
                m.minibatches,
                m.batch_size,
                model_lr,
                &mut self.model_rng,
            ));
        }
        stats.model_train_s = clock.elapsed().as_secs_f64();
        Ok(())
    }

    /// Whether the objective bootstraps from the online critic.
    fn online(&self) -> bool {
        self.cfg.mix.bootstrap == Bootstrap::Online
    }

    /// The mixed objective's seeds of the simulator window into SHAC's seed buffer;
    /// returns its loss.
    fn sim_mix_seeds(&mut self) -> f32 {
        let online = self.online();
        let sh = &mut self.shac;
        let values = if online {
            self.online_values.view()
        } else {
            sh.next_values.view()
        };
        mix_seeds(
            &sh.engine.tape.done,
            sh.engine.bootstrap.view(),
            sh.engine.tape.rewards.view(),
            values,
            sh.cfg.gamma as f32,
            self.cfg.mix.lambda as f32,
            sh.cfg.rew_scale as f32,
            self.cfg.mix.starts,
            self.cfg.mix.loss_scale,
            &mut sh.seeds,
        )
    }

    /// Rollout `r` (of a [`Plan::Rollout`]): the model from the window's start states
    /// (`prefix = 0`: A, `model_only`), or `prefix` simulator steps then the model (B's
    /// chain; with `model_grad`, the prefix's gradients through the model); its mixed
    /// objective with the seeds scaled by `weight`, and its reverse sweep added into
    /// `grad`. Returns the (unweighted) loss.
    #[allow(clippy::too_many_arguments)]
    fn model_rollout(
        &mut self,
        r: usize,
        prefix: usize,
        model_grad: bool,
        model_task: &Arc<ModelTask>,
        start: &BatchEnvSnapshot,
        mut noise: SeededRng,
        frozen: Option<&RunningMeanStd>,
        weight: f32,
        grad: &mut [f32],
    ) -> Result<f32> {
        let n = self.cfg.shac.num_envs;
        let mt: Arc<dyn Task> = model_task.clone();
        let mut model_env = BatchEnv::new(mt.clone(), n, 0, self.cfg.shac.stochastic_init)?;
        let actor = &self.shac.actor;
        let buf = &mut self.rollouts[r];
        match buf.chain_env.as_mut() {
            Some(chain) => {
                chain.restore(start)?;
                buf.engine.rollout_handover(
                    chain,
                    Some((prefix, &mut model_env)),
                    actor,
                    frozen,
                    None,
                    Some(&mut noise),
                )?;
            }
            None if self.cfg.model.space == ModelSpace::Obs => {
                model_env.restore(&observed_snapshot(self.shac.task.as_ref(), start))?;
                buf.engine
                    .rollout(&mut model_env, actor, frozen, None, Some(&mut noise))?;
            }
            None => {
                model_env.restore(start)?;
                buf.engine
                    .rollout(&mut model_env, actor, frozen, None, Some(&mut noise))?;
            }
        }
        let target = if self.cfg.mix.bootstrap == Bootstrap::Online {
            &self.shac.critic
        } else {
            &self.shac.target_critic
        };
        buf.engine.terminal_values(target, &mut buf.values);
        let sh = &self.shac.cfg;
        let loss = mix_seeds(
            &buf.engine.tape.done,
            buf.engine.bootstrap.view(),
            buf.engine.tape.rewards.view(),
            buf.values.view(),
            sh.gamma as f32,
            self.cfg.mix.lambda as f32,
            sh.rew_scale as f32,
            self.cfg.mix.starts,
            self.cfg.mix.loss_scale,
            &mut buf.seeds,
        );
        if weight == 0.0 {
            return Ok(loss);
        }
        if weight != 1.0 {
            buf.seeds.reward.mapv_inplace(|v| v * weight);
            buf.seeds.value.mapv_inplace(|v| v * weight);
        }
        let task = self.shac.task.clone();
        let model_adj = SimulatorAdjoint(mt.as_ref());
        let before = sim_steps(model_grad, task.as_ref(), &self.trainer, &self.members)?;
        let chain = HandoverAdjoint {
            at: prefix,
            before: &before,
            after: &model_adj,
        };
        let dynamics: &dyn StepAdjoint = if prefix > 0 { &chain } else { &model_adj };
        // the model's steps differentiate the model task's reward (a learned head)
        let tasks = HandoverTasks {
            before: task.as_ref(),
            after: mt.as_ref(),
            at: prefix,
        };
        buf.engine
            .reverse_sweep_handover(&tasks, dynamics, actor, target, frozen, &buf.seeds, grad);
        Ok(loss)
    }

    /// The actor-gradient variances of the mixed and of SHAC's objective on the simulator
    /// window (see [`MbMixEpochStats::grad_var_mix`]), with simulator adjoints. Leaves the
    /// mixed seeds in SHAC's seed buffer.
    fn gradient_variances(&mut self, frozen: Option<&RunningMeanStd>) -> (f64, f64) {
        let groups = self.cfg.diagnostics.grad_variance_groups;
        let sh = &mut self.shac;
        let (h, n) = (sh.cfg.horizon, sh.cfg.num_envs);
        let mut shac = WindowSeeds::zeros(h, n);
        shac_seeds(
            &sh.engine.tape.done,
            sh.engine.bootstrap.view(),
            sh.engine.tape.rewards.view(),
            sh.next_values.view(),
            sh.cfg.gamma as f32,
            sh.cfg.rew_scale as f32,
            &mut shac,
        );
        let mix = sh.seeds.clone();
        let task = sh.task.clone();
        let adj = SimulatorAdjoint(task.as_ref());
        let mix_online = self.cfg.mix.bootstrap == Bootstrap::Online;
        let mut variance = |seeds: &WindowSeeds, online: bool| -> f64 {
            // one sweep, the actor gradient split by env group (rows are independent)
            let mut per_group = vec![vec![0.0f32; sh.actor.num_params()]; groups];
            let value_net = if online {
                &sh.critic
            } else {
                &sh.target_critic
            };
            sh.engine.reverse_sweep_grouped(
                task.as_ref(),
                &adj,
                &sh.actor,
                value_net,
                frozen,
                seeds,
                &mut per_group,
            );
            group_variance(&per_group)
        };
        let v_mix = variance(&mix, mix_online);
        let v_shac = variance(&shac, false);
        (v_mix, v_shac)
    }
}

/// The step adjoint of simulator steps: the simulator's, or with `model_grad` the model's
/// on the simulator's tape (`sim_fwd_model_bwd`, reading C).
enum SimSteps<'a> {
    Sim(SimulatorAdjoint<'a>),
    Model(ModelAdjoint<'a>),
}

impl StepAdjoint for SimSteps<'_> {
    fn step_vjp(
        &self,
        t: usize,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ndarray::ArrayViewMut2<f32>,
        adj_a: ndarray::ArrayViewMut2<f32>,
    ) {
        match self {
            SimSteps::Sim(x) => x.step_vjp(t, s, a, adj_next, adj_s, adj_a),
            SimSteps::Model(x) => x.step_vjp(t, s, a, adj_next, adj_s, adj_a),
        }
    }
}

fn sim_steps<'a>(
    model_grad: bool,
    task: &'a dyn Task,
    trainer: &'a SobolevTrainer,
    members: &'a [SobolevTrainer],
) -> Result<SimSteps<'a>> {
    Ok(if model_grad {
        SimSteps::Model(ModelAdjoint::ensemble(
            ensemble_models(trainer, members),
            task,
        )?)
    } else {
        SimSteps::Sim(SimulatorAdjoint(task))
    })
}

/// The ensemble's models: the trainer's, then the further members'.
fn ensemble_models<'a>(
    trainer: &'a SobolevTrainer,
    members: &'a [SobolevTrainer],
) -> Vec<&'a sobolev_model::SobolevModel<f32>> {
    std::iter::once(trainer.model())
        .chain(members.iter().map(|m| m.model()))
        .collect()
}

/// `Σ_k ‖G·g_k − g‖² / (G(G − 1))` with g = Σ_k g_k (see
/// [`MbMixEpochStats::grad_var_mix`]), in f64.
pub(crate) fn group_variance(per_group: &[Vec<f32>]) -> f64 {
    let g = per_group.len();
    if g < 2 {
        return 0.0;
    }
    let dim = per_group[0].len();
    let mut total = vec![0.0f64; dim];
    for gk in per_group {
        for (t, &v) in total.iter_mut().zip(gk) {
            *t += v as f64;
        }
    }
    let gf = g as f64;
    let mut sum = 0.0f64;
    for gk in per_group {
        for (&v, &t) in gk.iter().zip(&total) {
            let d = gf * v as f64 - t;
            sum += d * d;
        }
    }
    sum / (gf * (gf - 1.0))
}

/// The window's `(s′, a, r)` (next state before any reset) as rows, leaving out the steps
/// that produced a non-finite state.
fn window_rewards(tape: &WindowTape) -> (Array2<f32>, Array2<f32>, Vec<f32>) {
    let (h, n) = (tape.horizon(), tape.rewards.ncols());
    let (sd, ad) = (
        tape.next_states.len_of(ndarray::Axis(2)),
        tape.actions.len_of(ndarray::Axis(2)),
    );
    let keep: Vec<(usize, usize)> = (0..h)
        .flat_map(|t| (0..n).map(move |i| (t, i)))
        .filter(|&(t, i)| tape.done[t][i] != Done::NonFinite)
        .collect();
    let mut sn = Array2::<f32>::zeros((keep.len(), sd));
    let mut a = Array2::<f32>::zeros((keep.len(), ad));
    let mut r = Vec::with_capacity(keep.len());
    for (k, &(t, i)) in keep.iter().enumerate() {
        sn.row_mut(k).assign(&tape.next_states.slice(s![t, i, ..]));
        a.row_mut(k).assign(&tape.actions.slice(s![t, i, ..]));
        r.push(tape.rewards[[t, i]]);
    }
    (sn, a, r)
}

/// `(1 − ρ)·J_sim + ρ·J_plans` as plans (`rollout.model_ramp_epochs`): every weight of
/// `plans` times ρ, and a simulator window of weight 1 − ρ merged into the plans' own
/// simulator window when they have one (so that window is swept once).
fn ramped_plans(plans: &[Plan], rho: f64) -> Vec<Plan> {
    let mut out: Vec<Plan> = plans
        .iter()
        .map(|p| match *p {
            Plan::Window { model_grad, weight } => Plan::Window {
                model_grad,
                weight: weight * rho,
            },
            Plan::Rollout {
                prefix,
                len,
                model_grad,
                weight,
            } => Plan::Rollout {
                prefix,
                len,
                model_grad,
                weight: weight * rho,
            },
        })
        .collect();
    match out.iter_mut().find_map(|p| match p {
        Plan::Window {
            model_grad: false,
            weight,
        } => Some(weight),
        _ => None,
    }) {
        Some(w) => *w += 1.0 - rho,
        None => out.insert(
            0,
            Plan::Window {
                model_grad: false,
                weight: 1.0 - rho,
            },
        ),
    }
    out
}

/// A batch snapshot of `task` with every state replaced by its observation: where an
/// observation-space model's rollout starts (`model.space = "obs"`).
fn observed_snapshot(task: &dyn Task, snap: &BatchEnvSnapshot) -> BatchEnvSnapshot {
    let spec = task.spec();
    let n = snap.progress.len();
    let states = ArrayView2::from_shape((n, spec.state_dim), &snap.state).expect("snapshot");
    BatchEnvSnapshot {
        state: observe_rows(task, states).into_raw_vec_and_offset().0,
        ..snap.clone()
    }
}

/// Observations of state rows `[k, S]` → `[k, O]`.
fn observe_rows(task: &dyn Task, states: ArrayView2<f32>) -> Array2<f32> {
    let mut obs = Array2::<f32>::zeros((states.nrows(), task.spec().obs_dim));
    task.observe(states, obs.view_mut());
    obs
}

/// The window's transitions `(s_t, a_t)` as rows `[k, S]`, `[k, A]`, leaving out the steps
/// that produced a non-finite state.
fn window_transitions(tape: &WindowTape) -> (Array2<f32>, Array2<f32>) {
    (
        kept_rows(tape, &tape.states),
        kept_rows(tape, &tape.actions),
    )
}

/// `sobolev.direction_source = policy_adjoint`: the window sweep's ∂L/∂s′ `[h, N, S]` and,
/// when that sweep stepped back through the simulator, the simulator's VJP of it
/// (`[h, N, S]`, `[h, N, A]`), which the model's targets then reuse.
struct PolicyDirections {
    u: ndarray::Array3<f32>,
    vjp: Option<(ndarray::Array3<f32>, ndarray::Array3<f32>)>,
}

/// The rows `x[t, i, ..]` of the window's steps that did not produce a non-finite state,
/// in (t, i) order.
fn kept_rows(tape: &WindowTape, x: &ndarray::Array3<f32>) -> Array2<f32> {
    let (h, n) = (tape.horizon(), tape.rewards.ncols());
    let keep: Vec<(usize, usize)> = (0..h)
        .flat_map(|t| (0..n).map(move |i| (t, i)))
        .filter(|&(t, i)| tape.done[t][i] != Done::NonFinite)
        .collect();
    let mut rows = Array2::<f32>::zeros((keep.len(), x.len_of(ndarray::Axis(2))));
    for (r, &(t, i)) in keep.iter().enumerate() {
        rows.row_mut(r).assign(&x.slice(s![t, i, ..]));
    }
    rows
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::NonFiniteGradPolicy;
    use crate::mbmix_config::{DiagnosticsConfig, MixConfig, Reading, RolloutConfig};
    use crate::shac::tests::{toy_config, toy_task};
    use crate::testing::PointMass;

    /// Adds the reverse sweep of the simulator window with the seeds in SHAC's seed buffer
    /// and the step adjoint `dynamics` into `grad`.
    fn sweep_sim(
        sh: &mut Shac,
        dynamics: &dyn StepAdjoint,
        frozen: Option<&RunningMeanStd>,
        grad: &mut [f32],
    ) {
        sh.engine.reverse_sweep(
            sh.task.as_ref(),
            dynamics,
            &sh.actor,
            &sh.target_critic,
            frozen,
            &sh.seeds,
            grad,
        );
    }

    /// The toy SHAC setting with a small, cheap model, two warm-up epochs and diagnostics
    /// every second epoch.
    pub(crate) fn toy_mbmix(reading: Reading) -> MbMixConfig {
        MbMixConfig {
            shac: toy_config(),
            rollout: RolloutConfig {
                reading,
                model_warmup_epochs: 2,
                ..Default::default()
            },
            model: sobolev_model::ModelConfig {
                hidden: vec![32, 32],
                iterations: 2,
                minibatches: 2,
                batch_size: 64,
                sobolev: sobolev_model::SobolevConfig {
                    form: SobolevForm::Full,
                    ..Default::default()
                },
                ..Default::default()
            },
            diagnostics: DiagnosticsConfig {
                every: 2,
                grad_variance_groups: 4,
                model_error_samples: 64,
            },
            ..Default::default()
        }
    }

    fn bits(s: &[EpochStats]) -> String {
        serde_json::to_string(s).unwrap()
    }

    #[test]
    fn per_step_source_reproduces_the_readings_and_combines_sources() {
        use crate::mbmix_config::{Objective, Segment, StepSource};
        let seg = |source, steps| Segment { source, steps };
        let obj = |segments: Vec<Segment>, weight| Objective { segments, weight };
        let run = |cfg: MbMixConfig| {
            let mut agent = MbMix::new(cfg, toy_task(), 9).unwrap();
            let stats: Vec<EpochStats> = (0..4).map(|_| agent.train_epoch().unwrap()).collect();
            (bits(&stats), agent.actor().params_flat())
        };
        let with = |reading: Reading, list: Vec<Objective>| {
            let mut c = toy_mbmix(reading);
            c.rollout.per_step_source = Some(list);
            c
        };
        let base = toy_mbmix(Reading::A);
        let (h, k) = (base.shac.horizon, base.sim_prefix());
        let c = 0.7;
        use StepSource::{Model, Sim, SimFwdModelBwd};
        let cases = vec![
            (
                MbMixConfig {
                    rollout: RolloutConfig {
                        model_weight: c,
                        ..toy_mbmix(Reading::A).rollout
                    },
                    ..toy_mbmix(Reading::A)
                },
                // the window split in two segments of one source is the window
                vec![
                    obj(vec![seg(Sim, k), seg(Sim, h - k)], 1.0),
                    obj(vec![seg(Model, h)], c),
                ],
            ),
            (
                toy_mbmix(Reading::B),
                vec![obj(vec![seg(Sim, k), seg(Model, h - k)], 1.0)],
            ),
            (
                toy_mbmix(Reading::C),
                vec![obj(vec![seg(SimFwdModelBwd, h)], 1.0)],
            ),
            (
                toy_mbmix(Reading::ModelOnly),
                vec![obj(vec![seg(Model, h)], 1.0)],
            ),
            (
                toy_mbmix(Reading::SimOnly),
                vec![obj(vec![seg(Sim, h)], 1.0)],
            ),
        ];
        for (preset, list) in cases {
            let reading = preset.rollout.reading;
            // the list decides, whatever `reading` says
            let general = with(Reading::SimOnly, list);
            assert_eq!(run(preset), run(general), "{reading:?}");
        }
        // combinations no reading offers: a chain whose prefix takes the model's gradients,
        // and the window twice (simulator and model gradients) with weights
        let chain_c = with(
            Reading::A,
            vec![obj(vec![seg(SimFwdModelBwd, k), seg(Model, h - k)], 1.0)],
        );
        let chain_b = with(
            Reading::A,
            vec![obj(vec![seg(Sim, k), seg(Model, h - k)], 1.0)],
        );
        assert_ne!(run(chain_c).1, run(chain_b).1);
        let both = with(
            Reading::A,
            vec![
                obj(vec![seg(Sim, h)], 0.5),
                obj(vec![seg(SimFwdModelBwd, h)], 0.5),
            ],
        );
        let (stats, params) = run(both);
        assert!(params.iter().all(|p| p.is_finite()));
        assert!(stats.contains("\"model_used\":true"));
    }

    #[test]
    fn online_bootstrap_uses_the_critic() {
        let cfg = |bootstrap, alpha: f64| {
            let mut c = toy_mbmix(Reading::A);
            c.mix.bootstrap = bootstrap;
            c.shac.target_critic_alpha = alpha;
            c
        };
        let run = |c: MbMixConfig| {
            let mut agent = MbMix::new(c, toy_task(), 4).unwrap();
            let stats: Vec<EpochStats> = (0..4).map(|_| agent.train_epoch().unwrap()).collect();
            (bits(&stats), agent.actor().params_flat())
        };
        // with α = 0 the target critic is the critic after every update: the two agree
        assert_eq!(
            run(cfg(Bootstrap::Online, 0.0)),
            run(cfg(Bootstrap::Target, 0.0))
        );
        // with SHAC's Polyak averaging they do not
        let (stats, params) = run(cfg(Bootstrap::Online, 0.2));
        assert_ne!(params, run(cfg(Bootstrap::Target, 0.2)).1);
        assert!(params.iter().all(|p| p.is_finite()) && !stats.contains("NaN"));
    }

    #[test]
    fn a_learned_reward_drives_the_model_rollouts() {
        let run = |reward| {
            let mut c = toy_mbmix(Reading::A);
            c.model.reward = reward;
            let mut agent = MbMix::new(c, toy_task(), 3).unwrap();
            let stats: Vec<EpochStats> = (0..4).map(|_| agent.train_epoch().unwrap()).collect();
            (stats, agent.actor().params_flat())
        };
        let (sl, pl) = run(RewardSource::Learned);
        let (sa, pa) = run(RewardSource::Analytic);
        let losses: Vec<f64> = sl
            .iter()
            .map(|s| s.mbmix.as_ref().unwrap().reward_head_loss.unwrap())
            .collect();
        assert!(
            losses.iter().all(|l| l.is_finite() && *l > 0.0),
            "{losses:?}"
        );
        assert!(losses[3] < losses[0], "the head learns: {losses:?}");
        assert!(sa
            .iter()
            .all(|s| s.mbmix.as_ref().unwrap().reward_head_loss.is_none()));
        // the model rollout's loss differs once the model is used
        let ml = |s: &[EpochStats]| s[3].mbmix.as_ref().unwrap().model_actor_loss.unwrap();
        assert_ne!(ml(&sl), ml(&sa));
        assert_ne!(pl, pa);
    }

    /// `model.space = "obs"`: the model maps observations (PointMass: 3 observations of 2
    /// states), trains on observation transitions with action Jacobian targets, rolls out
    /// from the observed start states with the learned reward, and reports finite
    /// diagnostics; a seed fixes the run. The combinations it cannot run are rejected.
    #[test]
    fn an_observation_space_model_trains_and_rolls_out() {
        use sobolev_model::{ModelDone, Wrt};
        let mut c = toy_mbmix(Reading::A);
        c.model.space = ModelSpace::Obs;
        c.model.reward = RewardSource::Learned;
        c.model.done = ModelDone::None;
        c.model.sobolev.wrt = Wrt::Action;
        let task = toy_task();
        let (sd, od) = (task.spec().state_dim, task.spec().obs_dim);
        assert_ne!(sd, od);
        let run = |c: MbMixConfig| {
            let mut agent = MbMix::new(c, toy_task(), 5).unwrap();
            let stats: Vec<EpochStats> = (0..6).map(|_| agent.train_epoch().unwrap()).collect();
            (agent, stats)
        };
        let (agent, stats) = run(c.clone());
        assert_eq!(agent.model_trainer().model().state_dim(), od);
        assert_eq!(
            agent.model_trainer().buffer().to_transitions().s.ncols(),
            od
        );
        let last = stats[5].mbmix.as_ref().unwrap();
        assert!(last.model_used);
        assert!(last.model_actor_loss.unwrap().is_finite());
        assert_eq!(last.model_nonfinite, 0);
        let errs: Vec<f64> = stats
            .iter()
            .filter_map(|s| s.mbmix.as_ref().unwrap().model_jacobian_err)
            .collect();
        assert!(
            !errs.is_empty() && errs.iter().all(|e| e.is_finite()),
            "{errs:?}"
        );
        assert!(stats.iter().all(|s| s.actor_grad_norm.is_finite()));
        let (again, _) = run(c.clone());
        assert_eq!(agent.actor().params_flat(), again.actor().params_flat());
        // the sim-state model gives another run
        let mut sim = c.clone();
        sim.model.space = ModelSpace::SimState;
        let (other, _) = run(sim);
        assert_ne!(agent.actor().params_flat(), other.actor().params_flat());
        // what it cannot run
        let err = |c: MbMixConfig| MbMix::new(c, toy_task(), 5).err().unwrap().to_string();
        let mut chained = c.clone();
        chained.rollout.reading = Reading::B;
        assert!(err(chained).contains("model.space"));
        let mut analytic = c;
        analytic.model.reward = RewardSource::Analytic;
        assert!(err(analytic).contains("model.space"));
    }

    /// `rollout.model_ramp_epochs`: in the first epoch after the warm-up of a 4-epoch ramp,
    /// reading A with c = 1 is exactly reading A with c = 1/4 (J_sim + ρ·c·J_model); the
    /// two runs part in the next epoch. A sim-only plan list gains the (1 − ρ) window.
    #[test]
    fn the_model_ramp_fades_the_model_objective_in() {
        let run = |weight: f64, ramp: usize, epochs: usize| {
            let mut c = toy_mbmix(Reading::A);
            c.rollout.model_weight = weight;
            c.rollout.model_ramp_epochs = ramp;
            let mut agent = MbMix::new(c, toy_task(), 6).unwrap();
            for _ in 0..epochs {
                agent.train_epoch().unwrap();
            }
            agent.actor().params_flat()
        };
        // warm-up: 2 epochs; epoch 3 is the first with the model (ρ = 1/4)
        assert_eq!(run(1.0, 4, 3), run(0.25, 0, 3));
        assert_ne!(run(1.0, 4, 4), run(0.25, 0, 4));
        assert_ne!(run(1.0, 4, 3), run(1.0, 0, 3));
        // a reading without a simulator window gets one of weight 1 − ρ
        let model_only = [Plan::Rollout {
            prefix: 0,
            len: 8,
            model_grad: false,
            weight: 1.0,
        }];
        let r = ramped_plans(&model_only, 0.25);
        assert_eq!(r.len(), 2);
        assert!(matches!(
            r[0],
            Plan::Window {
                model_grad: false,
                weight
            } if weight == 0.75
        ));
        assert!(matches!(r[1], Plan::Rollout { weight, .. } if weight == 0.25));
    }

    #[test]
    fn an_ensemble_steps_with_the_members_mean() {
        let task: Arc<dyn Task> = Arc::new(PointMass::new(48));
        let cfg = toy_mbmix(Reading::A).model;
        let m1 = SobolevTrainer::new(cfg.clone(), 2, 1)
            .unwrap()
            .model()
            .clone();
        let m2 = SobolevTrainer::new(sobolev_model::ModelConfig { seed: 99, ..cfg }, 2, 1)
            .unwrap()
            .model()
            .clone();
        let s = ndarray::arr2(&[[0.3f32, -0.2], [1.0, 0.5]]);
        let a = ndarray::arr2(&[[0.4f32], [-0.7]]);
        let step = |t: &ModelTask| {
            let mut out = Array2::zeros((2, 2));
            t.step(s.view(), a.view(), out.view_mut());
            out
        };
        let single = ModelTask::new(task.clone(), m1.clone()).unwrap();
        // the same model twice is the model
        let twice = ModelTask::new(task.clone(), m1.clone())
            .unwrap()
            .with_members(vec![m1.clone()])
            .unwrap();
        assert_eq!(step(&single), step(&twice));
        // two models: the mean of their predictions, and of their VJPs
        let pair = ModelTask::new(task.clone(), m1.clone())
            .unwrap()
            .with_members(vec![m2.clone()])
            .unwrap();
        let other = ModelTask::new(task, m2).unwrap();
        let mean = (step(&single) + step(&other)) * 0.5;
        assert!((step(&pair) - &mean).iter().all(|d| d.abs() < 1e-6));
        let adj = ndarray::arr2(&[[1.0f32, -2.0], [0.5, 0.25]]);
        let vjp = |t: &ModelTask| {
            let (mut gs, mut ga) = (Array2::zeros((2, 2)), Array2::zeros((2, 1)));
            t.step_vjp(s.view(), a.view(), adj.view(), gs.view_mut(), ga.view_mut());
            (gs, ga)
        };
        let ((g1, a1), (g2, a2), (gp, ap)) = (vjp(&single), vjp(&other), vjp(&pair));
        assert!((gp - (g1 + g2) * 0.5).iter().all(|d| d.abs() < 1e-6));
        assert!((ap - (a1 + a2) * 0.5).iter().all(|d| d.abs() < 1e-6));
    }

    #[test]
    fn policy_adjoint_directions_feed_the_model() {
        let cfg = |source| {
            let mut c = toy_mbmix(Reading::A);
            c.model.sobolev.form = SobolevForm::VjpProj;
            c.model.sobolev.direction_source = source;
            c
        };
        let run_with = |c: MbMixConfig, reuse: bool| {
            let mut agent = MbMix::new(c, toy_task(), 2).unwrap();
            agent.shac.engine.record_step_vjp &= reuse;
            for _ in 0..3 {
                agent.train_epoch().unwrap();
            }
            agent.model_trainer().buffer().to_transitions()
        };
        let run = |c| run_with(c, true);
        let random = run(cfg(DirectionSource::Random));
        let adjoint = run(cfg(DirectionSource::PolicyAdjoint));
        // same transitions, other Jacobian targets: the first direction is the actor's
        assert_eq!(random.s, adjoint.s);
        assert_ne!(random.targets, adjoint.targets);
        assert!(adjoint.targets.iter().all(|x| x.is_finite()));
        // the targets reuse the sweep's VJPs: what a second simulator VJP would give
        let fresh = run_with(cfg(DirectionSource::PolicyAdjoint), false);
        assert_eq!(fresh.targets.dim(), adjoint.targets.dim());
        for (x, y) in fresh.targets.iter().zip(&adjoint.targets) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{x} against {y}");
        }
        // it needs the actor's sweep before the model trains
        let mut before = cfg(DirectionSource::PolicyAdjoint);
        before.model.update_order = UpdateOrder::Before;
        let err = MbMix::new(before, toy_task(), 2).err().unwrap().to_string();
        assert!(err.contains("model.sobolev.direction_source"), "{err}");
    }

    #[test]
    fn per_step_source_rejects_unsupported_shapes() {
        use crate::mbmix_config::{Objective, Segment, StepSource};
        let h = toy_mbmix(Reading::A).shac.horizon;
        let check = |list: Vec<Objective>, needle: &str| {
            let mut c = toy_mbmix(Reading::A);
            c.rollout.per_step_source = Some(list);
            let msg = MbMix::new(c, toy_task(), 1)
                .err()
                .expect("invalid")
                .to_string();
            assert!(msg.contains(needle), "{msg}");
        };
        let seg = |source, steps| Segment { source, steps };
        let one = |segments| Objective {
            segments,
            weight: 1.0,
        };
        check(vec![], "rollout.per_step_source");
        check(
            vec![one(vec![seg(StepSource::Sim, h - 1)])],
            "rollout.per_step_source[0]",
        );
        check(
            vec![
                one(vec![seg(StepSource::Sim, h)]),
                one(vec![seg(StepSource::Model, 4), seg(StepSource::Sim, 4)]),
            ],
            "rollout.per_step_source[1]",
        );
        check(vec![one(vec![seg(StepSource::Model, 0)])], "steps");
        check(
            vec![Objective {
                segments: vec![seg(StepSource::Model, 4)],
                weight: -1.0,
            }],
            "weight",
        );
    }

    #[test]
    fn model_done_none_never_terminates_in_the_model() {
        let task: Arc<dyn Task> = Arc::new(PointMass::new(48));
        let trainer = SobolevTrainer::new(toy_mbmix(Reading::A).model, 2, 1).unwrap();
        let s_next = ndarray::arr2(&[[5.0f32, 0.0], [0.5, 0.0], [-4.5, 1.0]]);
        let mut out = [false; 3];
        let analytic = ModelTask::new(task.clone(), trainer.model().clone()).unwrap();
        analytic.terminated(s_next.view(), &mut out);
        assert_eq!(out, [true, false, true]);
        let none = ModelTask::new(task, trainer.model().clone())
            .unwrap()
            .with_done(sobolev_model::ModelDone::None);
        none.terminated(s_next.view(), &mut out);
        assert_eq!(out, [false; 3]);
    }

    #[test]
    fn model_update_before_the_actor_changes_only_model_using_epochs() {
        let run = |order| {
            let mut c = toy_mbmix(Reading::A);
            c.model.update_order = order;
            let mut agent = MbMix::new(c, toy_task(), 6).unwrap();
            let mut actors = Vec::new();
            let mut stats = Vec::new();
            for _ in 0..4 {
                stats.push(agent.train_epoch().unwrap());
                actors.push(agent.actor().params_flat());
            }
            (actors, stats)
        };
        let (after, sa) = run(UpdateOrder::After);
        let (before, sb) = run(UpdateOrder::Before);
        // warm-up (epochs 1–2): the actor never sees the model
        assert_eq!(after[..2], before[..2]);
        // then the objectives use a model trained one more epoch
        assert_ne!(after[2], before[2]);
        for s in sb.iter().chain(&sa) {
            let m = s.mbmix.as_ref().unwrap();
            assert!(m.model_loss > 0.0 && s.actor_grad_norm.is_finite());
        }
        assert_eq!(
            sb[3].mbmix.as_ref().unwrap().model_buffer_len,
            sa[3].mbmix.as_ref().unwrap().model_buffer_len
        );
    }

    #[test]
    fn every_reading_trains_and_reports_its_statistics() {
        for reading in [
            Reading::A,
            Reading::B,
            Reading::C,
            Reading::SimOnly,
            Reading::ModelOnly,
        ] {
            let mut agent = MbMix::new(toy_mbmix(reading), toy_task(), 1).unwrap();
            let stats: Vec<EpochStats> = (0..4).map(|_| agent.train_epoch().unwrap()).collect();
            let m: Vec<&MbMixEpochStats> =
                stats.iter().map(|s| s.mbmix.as_ref().unwrap()).collect();
            // Warm-up: simulator only.
            assert!(!m[0].model_used && !m[1].model_used, "{reading:?}");
            assert_eq!(m[3].model_used, reading != Reading::SimOnly, "{reading:?}");
            let sim_used = matches!(reading, Reading::A | Reading::C | Reading::SimOnly);
            assert_eq!(m[3].sim_actor_loss.is_some(), sim_used, "{reading:?}");
            let model_rolled = matches!(reading, Reading::A | Reading::B | Reading::ModelOnly);
            assert_eq!(m[3].model_actor_loss.is_some(), model_rolled, "{reading:?}");
            // The model trains from the first epoch; the buffer grows by one window.
            assert_eq!(m[0].model_buffer_len, 16 * 16);
            assert_eq!(m[3].model_buffer_len, 4 * 16 * 16);
            assert!(m.iter().all(|s| s.model_loss > 0.0 && s.model_lr > 0.0));
            // Diagnostics on epochs 2 and 4 only.
            for (k, s) in m.iter().enumerate() {
                let on = (k + 1) % 2 == 0;
                assert_eq!(s.grad_var_mix.is_some(), on);
                assert_eq!(s.grad_var_shac.is_some(), on);
                assert_eq!(s.model_jacobian_err.is_some(), on);
                if on {
                    assert!(s.grad_var_mix.unwrap() > 0.0 && s.grad_var_shac.unwrap() > 0.0);
                    assert!(s.model_next_state_err.unwrap().is_finite());
                }
            }
            // The model learns the toy dynamics: the held-out Jacobian error falls.
            assert!(
                m[3].model_jacobian_err.unwrap() < m[1].model_jacobian_err.unwrap(),
                "{reading:?}: {:?} → {:?}",
                m[1].model_jacobian_err,
                m[3].model_jacobian_err
            );
            assert!(stats.iter().all(|s| s.actor_grad_norm.is_finite()));
            assert_eq!(agent.epoch(), 4);
            assert_eq!(agent.env_steps(), 4 * 16 * 16);
        }
    }

    #[test]
    fn critic_fits_the_model_rollout_only_when_asked() {
        let with = |train_on| MbMixConfig {
            critic: crate::mbmix_config::CriticConfig { train_on },
            ..toy_mbmix(Reading::A)
        };
        let mut sim = MbMix::new(with(CriticData::Sim), toy_task(), 5).unwrap();
        let mut both = MbMix::new(with(CriticData::SimAndModel), toy_task(), 5).unwrap();
        // warm-up (2 epochs): no model rollout, so the same critic
        for _ in 0..2 {
            let (a, b) = (sim.train_epoch().unwrap(), both.train_epoch().unwrap());
            assert_eq!(a.critic_loss.to_bits(), b.critic_loss.to_bits());
        }
        assert_eq!(sim.shac().critic().params(), both.shac().critic().params());
        // the first epoch with a model rollout: same actor step, different critic data
        let (a, b) = (sim.train_epoch().unwrap(), both.train_epoch().unwrap());
        assert_eq!(sim.actor().params_flat(), both.actor().params_flat());
        assert_ne!(a.critic_loss.to_bits(), b.critic_loss.to_bits());
        assert_ne!(sim.shac().critic().params(), both.shac().critic().params());
        assert!(b.critic_loss.is_finite());
        // a reading without a model rollout ignores the knob
        let c_cfg = |train_on| MbMixConfig {
            critic: crate::mbmix_config::CriticConfig { train_on },
            ..toy_mbmix(Reading::C)
        };
        let mut c1 = MbMix::new(c_cfg(CriticData::Sim), toy_task(), 5).unwrap();
        let mut c2 = MbMix::new(c_cfg(CriticData::SimAndModel), toy_task(), 5).unwrap();
        for _ in 0..3 {
            c1.train_epoch().unwrap();
            c2.train_epoch().unwrap();
        }
        assert_eq!(c1.shac().critic().params(), c2.shac().critic().params());
    }

    #[test]
    fn sim_only_with_lambda_one_is_shac() {
        let cfg = MbMixConfig {
            mix: MixConfig {
                lambda: 1.0,
                ..Default::default()
            },
            ..toy_mbmix(Reading::SimOnly)
        };
        let mut mb = MbMix::new(cfg, toy_task(), 7).unwrap();
        let mut shac = Shac::new(toy_config(), toy_task(), 7).unwrap();
        for _ in 0..3 {
            let a = mb.train_epoch().unwrap();
            let b = shac.train_epoch().unwrap();
            assert_eq!(a.actor_loss.to_bits(), b.actor_loss.to_bits());
            assert_eq!(a.critic_loss.to_bits(), b.critic_loss.to_bits());
            assert_eq!(a.actor_grad_norm.to_bits(), b.actor_grad_norm.to_bits());
        }
        assert_eq!(mb.actor().params_flat(), shac.actor().params_flat());
        assert_eq!(mb.shac().critic().params(), shac.critic().params());
        // With λ < 1 the objective, and so the actor, differ.
        let mut mixed = MbMix::new(toy_mbmix(Reading::SimOnly), toy_task(), 7).unwrap();
        mixed.train_epoch().unwrap();
        mixed.train_epoch().unwrap();
        let mut shac2 = Shac::new(toy_config(), toy_task(), 7).unwrap();
        shac2.train_epoch().unwrap();
        shac2.train_epoch().unwrap();
        assert_ne!(mixed.actor().params_flat(), shac2.actor().params_flat());
    }

    #[test]
    fn model_gate_reports_the_gradients_cosine_after_the_warm_up() {
        for gate in [
            ModelGate::None,
            ModelGate::Agree,
            ModelGate::Project,
            ModelGate::Scale,
        ] {
            let mut c = toy_mbmix(Reading::A);
            c.rollout.model_gate = gate;
            let mut agent = MbMix::new(c, toy_task(), 1).unwrap();
            for e in 0..4 {
                let st = agent.train_epoch().unwrap();
                let cos = st.mbmix.unwrap().model_grad_cos;
                if gate == ModelGate::None || e < 2 {
                    assert_eq!(cos, None, "{gate:?}, epoch {e}");
                } else {
                    let cos = cos.expect("a cosine once the model is used");
                    assert!((-1.0..=1.0).contains(&cos), "{cos}");
                }
                assert!(st.actor_grad_norm.is_finite());
            }
        }
    }

    #[test]
    fn same_seed_gives_identical_runs() {
        let run = |seed| {
            let mut agent = MbMix::new(toy_mbmix(Reading::B), toy_task(), seed).unwrap();
            let stats: Vec<EpochStats> = (0..4).map(|_| agent.train_epoch().unwrap()).collect();
            (
                bits(&stats),
                agent.actor().params_flat(),
                agent.model_trainer().model().params().to_vec(),
            )
        };
        let (a, pa, ma) = run(3);
        let (b, pb, mb) = run(3);
        assert_eq!(a, b);
        assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(ma.iter().zip(&mb).all(|(x, y)| x.to_bits() == y.to_bits()));
        let (c, _, mc) = run(4);
        assert_ne!(a, c);
        assert_ne!(ma, mc, "the model's initialisation follows the run seed");
    }

    #[test]
    fn nonfinite_gradient_aborts_without_touching_networks_or_model() {
        let task: Arc<dyn Task> = Arc::new(crate::testing::NanAdjoint(PointMass::new(48)));
        let mut a = MbMix::new(toy_mbmix(Reading::A), task.clone(), 1).unwrap();
        let actor0 = a.actor().params_flat();
        let model0 = a.model_trainer().model().params().to_vec();
        match a.train_epoch() {
            Err(crate::Error::NonFiniteGradient { epoch: 0, norm }) => assert!(norm.is_nan()),
            other => panic!("expected NonFiniteGradient, got {other:?}"),
        }
        assert_eq!(a.actor().params_flat(), actor0);
        assert_eq!(a.model_trainer().model().params(), model0.as_slice());
        assert!(a.model_trainer().buffer().is_empty());
        assert_eq!(a.epoch(), 0);
        let skip = MbMixConfig {
            shac: crate::ShacConfig {
                on_nonfinite_grad: NonFiniteGradPolicy::Skip,
                ..toy_config()
            },
            ..toy_mbmix(Reading::A)
        };
        let mut b = MbMix::new(skip, task, 1).unwrap();
        let stats = b.train_epoch().unwrap();
        assert!(stats.actor_grad_norm.is_nan());
        assert_eq!(b.actor().params_flat(), actor0);
        assert_eq!(b.epoch(), 1);
    }

    #[test]
    fn group_variance_is_the_variance_of_the_full_batch_estimator() {
        // Groups g_k with G·g_k = 4·(1, 0), 4·(3, 0), 4·(2, 2), 4·(2, −2) / 4: the full
        // gradient is their sum (2, 0); the G·g_k have deviations (−1, 0), (1, 0), (0, 2),
        // (0, −2) from it, squared norms summing to 10, over G(G − 1) = 12.
        let g = vec![
            vec![0.25, 0.0],
            vec![0.75, 0.0],
            vec![0.5, 0.5],
            vec![0.5, -0.5],
        ];
        assert!((group_variance(&g) - 10.0 / 12.0).abs() < 1e-12);
        assert_eq!(group_variance(&g[..1]), 0.0);
        let same = vec![vec![1.0f32, 2.0]; 3];
        assert_eq!(group_variance(&same), 0.0);
    }

    #[test]
    fn group_gradients_sum_to_the_full_gradient() {
        // The variance diagnostic rests on the sweep being linear in the seeds.
        let mut agent = MbMix::new(toy_mbmix(Reading::SimOnly), toy_task(), 2).unwrap();
        agent.train_epoch().unwrap();
        let frozen = agent.shac.simulate_window().unwrap();
        agent.sim_mix_seeds();
        let task = agent.shac.task.clone();
        let adj = SimulatorAdjoint(task.as_ref());
        let mut full = vec![0.0f32; agent.shac.actor.num_params()];
        sweep_sim(&mut agent.shac, &adj, frozen.as_ref(), &mut full);
        let seeds = agent.shac.seeds.clone();
        // the grouped sweep (what the diagnostic runs): one sweep, gradients split by group
        let mut grouped = vec![vec![0.0f32; full.len()]; 4];
        {
            let sh = &mut agent.shac;
            sh.engine.reverse_sweep_grouped(
                task.as_ref(),
                &adj,
                &sh.actor,
                &sh.target_critic,
                frozen.as_ref(),
                &seeds,
                &mut grouped,
            );
        }
        let mut sum = vec![0.0f64; full.len()];
        for (k, group) in grouped.iter().enumerate() {
            let mut masked = seeds.clone();
            for i in 0..16 {
                if i * 4 / 16 != k {
                    masked.reward.column_mut(i).fill(0.0);
                    masked.value.column_mut(i).fill(0.0);
                }
            }
            agent.shac.seeds = masked;
            let mut g = vec![0.0f32; full.len()];
            sweep_sim(&mut agent.shac, &adj, frozen.as_ref(), &mut g);
            for (a, b) in sum.iter_mut().zip(&g) {
                *a += *b as f64;
            }
            // group k of the grouped sweep is the sweep with the other groups masked
            let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
            let k64: Vec<f64> = group.iter().map(|&v| v as f64).collect();
            let err = diff_core::gradcheck::rel_err(&k64, &g64, 1e-9);
            assert!(err < 1e-5, "group {k}: relative error {err}");
            assert!(g.iter().any(|x| x.abs() > 1e-5), "group {k}: trivial");
        }
        let full64: Vec<f64> = full.iter().map(|&v| v as f64).collect();
        let err = diff_core::gradcheck::rel_err(&sum, &full64, 1e-9);
        assert!(err < 1e-5, "relative error {err}");
        assert!(full.iter().any(|g| g.abs() > 1e-4));
    }

    #[test]
    fn mbmix_improves_the_toy_task() {
        let cfg = MbMixConfig {
            shac: crate::ShacConfig {
                max_epochs: 60,
                ..toy_config()
            },
            ..toy_mbmix(Reading::A)
        };
        let mut agent = MbMix::new(cfg, toy_task(), 3).unwrap();
        let before = agent.evaluate(32, 99).unwrap();
        for _ in 0..60 {
            agent.train_epoch().unwrap();
        }
        let after = agent.evaluate(32, 99).unwrap();
        println!(
            "toy MB-MIX (A): eval return {:.2} → {:.2} (success {:?} → {:?})",
            before.mean_return, after.mean_return, before.success_rate, after.success_rate
        );
        assert!(
            after.mean_return > 0.5 * before.mean_return
                && after.mean_return - before.mean_return > 5.0,
            "no clear improvement: {} → {}",
            before.mean_return,
            after.mean_return
        );
    }
}

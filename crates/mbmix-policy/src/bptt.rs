//! BPTT / analytic policy gradient, as DiffRL's `algorithms/bptt.py` (the baseline of the
//! SHAC paper; algorithms.md §1.6 "BPTT baseline", §3.12).
//!
//! One epoch rolls the stochastic actor out for a long window of `horizon` steps
//! (DiffRL's `steps_num`: the whole episode for CartPole, Ant and Humanoid, 128 steps for
//! Hopper and Cheetah), keeping episodes going across windows, and differentiates
//!
//! ```text
//! L = −(1/(h·N)) Σ_i Σ_segments Σ_k γ^k · rew_scale · r
//! ```
//!
//! (the running discount γ^k restarts after every done; no critic, no terminal value)
//! through the simulator with the [`WindowEngine`]'s reverse sweep. The update is
//! Adam (betas (0.7, 0.95)) on the clipped gradient with DiffRL's linear LR decay to 1e-5.
//!
//! DiffRL zeroes a NaN gradient (after dropping into a debugger) and applies exploding ones
//! clipped; here `on_nonfinite_grad = skip` (the default) skips the update for a NaN or
//! > 1e6 norm and `abort` stops with [`Error::NonFiniteGradient`].

use crate::checkpoint::{
    add_actor, add_adam, add_env, add_obs_rms, check_env_and_rms, check_same_fields, check_task,
    state_json, write_checkpoint, RawCheckpoint, Tensors,
};
use crate::common::{
    actor_step, check_task_dims, training_window, PolicyAgent, PolicyView, ReturnMeter,
};
use crate::config::{finite, in_range, positive_count, NonFiniteGradPolicy};
use crate::error::{Error, Result};
use crate::nn::NetworkBackend;
use crate::optim::Adam;
use crate::policy::StochasticActor;
use crate::rms::RunningMeanStd;
use crate::shac::EpochStats;
use crate::window::{shac_seeds, SimulatorAdjoint, WindowEngine, WindowSeeds};
use diff_core::{seeded, BatchEnv, Done, SeededRng, Task};
use ndarray::{Array2, ArrayView2};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// RNG streams derived from the run seed (the same numbering as SHAC's).
mod stream {
    pub const INIT: u64 = 1;
    pub const NOISE: u64 = 2;
    pub const ACT: u64 = 4;
}

/// BPTT hyperparameters. Defaults: DiffRL's `examples/cfg/bptt/cartpole_swing_up.yaml`
/// (the unset keys take `bptt.py`'s defaults: γ 0.99, obs_rms false, rew_scale 1).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BpttConfig {
    /// Parallel envs N (`num_actors`). Default 64.
    pub num_envs: usize,
    /// Window length in control steps (`steps_num`). Default 240 (the CartPole episode).
    pub horizon: usize,
    /// Training epochs (one window each); sets the LR schedule. Default 500.
    pub max_epochs: usize,
    /// Discount γ in (0, 1]. Default 0.99.
    pub gamma: f64,
    /// Actor hidden widths. Default [64, 64].
    pub actor_units: Vec<usize>,
    /// Initial actor learning rate. Default 1e-2.
    pub actor_lr: f64,
    /// Learning rate reached by the linear schedule at `max_epochs`. Default 1e-5.
    pub lr_final: f64,
    /// Adam betas. Default [0.7, 0.95].
    pub betas: [f64; 2],
    /// Gradient-norm clip. Default 1.0.
    pub grad_norm: f64,
    /// Whether to clip the gradient norm to `grad_norm`. Default true.
    pub truncate_grads: bool,
    /// Initial log-std of the actor. Default −1.0.
    pub actor_logstd_init: f64,
    /// Normalise observations with running statistics. Default false (CartPole's config
    /// does not set it; the locomotion configs set true).
    pub obs_rms: bool,
    /// Reward scale in the loss. Default 1.0.
    pub rew_scale: f64,
    /// Use the task's reset noise for training episodes. Default true.
    pub stochastic_init: bool,
    /// NaN / > 1e6 gradient: `skip` the update (default) or `abort`.
    pub on_nonfinite_grad: NonFiniteGradPolicy,
    /// Network implementation (see [`crate::ShacConfig::network_backend`]). Default dfdx.
    pub network_backend: NetworkBackend,
    /// Weight of the task's auxiliary training reward ([`diff_core::Task::aux_reward`]),
    /// added to each step's reward in the objective (not in the reported returns or the
    /// evaluation); DaXBench's APG trains with it (`aux_reward=True`, weight 1). Tasks
    /// without one ignore it. Default 0.
    #[serde(default)]
    pub aux_reward: f64,
}

impl Default for BpttConfig {
    fn default() -> Self {
        BpttConfig {
            num_envs: 64,
            horizon: 240,
            max_epochs: 500,
            gamma: 0.99,
            actor_units: vec![64, 64],
            actor_lr: 1e-2,
            lr_final: 1e-5,
            betas: [0.7, 0.95],
            grad_norm: 1.0,
            truncate_grads: true,
            actor_logstd_init: -1.0,
            obs_rms: false,
            rew_scale: 1.0,
            stochastic_init: true,
            on_nonfinite_grad: NonFiniteGradPolicy::Skip,
            aux_reward: 0.0,
            network_backend: NetworkBackend::Dfdx,
        }
    }
}

impl BpttConfig {
    /// Checks every field; the error names the first offending field.
    pub fn validate(&self) -> Result<()> {
        positive_count("num_envs", self.num_envs)?;
        positive_count("horizon", self.horizon)?;
        in_range("aux_reward", self.aux_reward, 0.0, f64::MAX, false, false)?;
        positive_count("max_epochs", self.max_epochs)?;
        in_range("gamma", self.gamma, 0.0, 1.0, true, false)?;
        if self.actor_units.contains(&0) {
            return Err(Error::config(
                "actor_units",
                "hidden widths must be at least 1",
            ));
        }
        in_range("actor_lr", self.actor_lr, 0.0, f64::MAX, true, false)?;
        in_range("lr_final", self.lr_final, 0.0, f64::MAX, false, false)?;
        in_range("betas[0]", self.betas[0], 0.0, 1.0, false, true)?;
        in_range("betas[1]", self.betas[1], 0.0, 1.0, false, true)?;
        in_range("grad_norm", self.grad_norm, 0.0, f64::MAX, true, false)?;
        finite("actor_logstd_init", self.actor_logstd_init)?;
        finite("rew_scale", self.rew_scale)?;
        Ok(())
    }

    /// Learning rate of epoch `e` (linear decay to `lr_final`).
    pub fn scheduled_lr(&self, epoch: usize) -> f64 {
        crate::common::linear_lr(self.actor_lr, self.lr_final, epoch, self.max_epochs)
    }
}

/// BPTT's loss seeds (see the module docs): SHAC's seeds with no bootstrap anywhere
/// ([`shac_seeds`] with every value seed zero). Fills `seeds` and returns the loss.
pub fn bptt_seeds(
    done: &[Vec<Done>],
    rewards: ArrayView2<f32>,
    gamma: f32,
    rew_scale: f32,
    seeds: &mut WindowSeeds,
) -> f32 {
    let dim = rewards.dim();
    let no_bootstrap = Array2::from_elem(dim, false);
    let zeros = Array2::zeros(dim);
    shac_seeds(
        done,
        no_bootstrap.view(),
        rewards,
        zeros.view(),
        gamma,
        rew_scale,
        seeds,
    )
}

/// A BPTT agent training on one task.
pub struct Bptt {
    cfg: BpttConfig,
    task: Arc<dyn Task>,
    env: BatchEnv,
    actor: StochasticActor,
    actor_opt: Adam<f32>,
    obs_rms: Option<RunningMeanStd>,
    noise_rng: SeededRng,
    act_rng: Mutex<SeededRng>,
    epoch: usize,
    env_steps: u64,
    recent_returns: ReturnMeter,
    engine: WindowEngine,
    seeds: WindowSeeds,
}

impl Bptt {
    /// A new agent: validates `cfg`, creates the envs and the actor, seeded from `seed`.
    pub fn new(cfg: BpttConfig, task: Arc<dyn Task>, seed: u64) -> Result<Bptt> {
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
        let (h, n) = (cfg.horizon, cfg.num_envs);
        Ok(Bptt {
            actor_opt: Adam::new(
                actor.num_params(),
                cfg.actor_lr,
                (cfg.betas[0], cfg.betas[1]),
            ),
            obs_rms: cfg.obs_rms.then(|| RunningMeanStd::new(spec.obs_dim)),
            noise_rng: seeded(seed, stream::NOISE),
            act_rng: Mutex::new(seeded(seed, stream::ACT)),
            epoch: 0,
            env_steps: 0,
            recent_returns: ReturnMeter::default(),
            engine: {
                let mut engine = WindowEngine::new(task.as_ref(), h, n);
                // the window's states stay with the simulator when it offers that (the
                // auxiliary reward reads them on the host)
                if cfg.aux_reward == 0.0 {
                    engine.attach_resident(task.as_ref())?;
                }
                engine
            },
            seeds: WindowSeeds::zeros(h, n),
            cfg,
            task,
            env,
            actor,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BpttConfig {
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
    /// The actor.
    pub fn actor(&self) -> &StochasticActor {
        &self.actor
    }

    /// Rolls out one window (advancing the envs, the statistics and the noise RNG) and
    /// returns the loss and its gradient w.r.t. the actor's parameters.
    fn window_loss_and_grad(&mut self) -> Result<(f32, Vec<f32>)> {
        let frozen = training_window(
            &mut self.engine,
            &mut self.env,
            &self.actor,
            &mut self.obs_rms,
            &mut self.noise_rng,
            &mut self.env_steps,
            &mut self.recent_returns,
        )?;
        let loss = bptt_seeds(
            &self.engine.tape.done,
            self.engine.tape.rewards.view(),
            self.cfg.gamma as f32,
            self.cfg.rew_scale as f32,
            &mut self.seeds,
        );
        // DaXBench's auxiliary training reward, discounted like the step's reward
        let w = self.cfg.aux_reward as f32;
        let mut loss = loss;
        if w != 0.0 {
            let (h, n) = self.engine.tape.rewards.dim();
            let mut aux = ndarray::Array1::<f32>::zeros(n);
            for t in 0..h {
                let has = self.task.aux_reward(
                    self.engine.tape.states.slice(ndarray::s![t, .., ..]),
                    self.engine.tape.actions.slice(ndarray::s![t, .., ..]),
                    aux.view_mut(),
                );
                if !has {
                    break;
                }
                for i in 0..n {
                    if self.engine.tape.done[t][i] != Done::NonFinite {
                        loss += self.seeds.reward[[t, i]] * w * aux[i];
                    }
                }
            }
        }
        self.engine.aux_weight = w;
        let mut grad = vec![0.0f32; self.actor.num_params()];
        let task = self.task.clone();
        self.engine.reverse_sweep_rewards_only(
            task.as_ref(),
            &SimulatorAdjoint(task.as_ref()),
            &self.actor,
            frozen.as_ref(),
            &self.seeds,
            &mut grad,
        );
        Ok((loss, grad))
    }

    /// One BPTT epoch: a window rollout, the reverse sweep and one clipped Adam step.
    ///
    /// With `on_nonfinite_grad = abort`, a NaN or > 1e6 gradient returns
    /// [`Error::NonFiniteGradient`] after the window was simulated, with the actor unchanged.
    pub fn train_epoch(&mut self) -> Result<EpochStats> {
        let e = self.epoch;
        let lr = self.cfg.scheduled_lr(e);
        self.actor_opt.lr = lr;
        let (loss, mut grad) = self.window_loss_and_grad()?;
        let norm = actor_step(
            &mut self.actor,
            &mut self.actor_opt,
            &mut grad,
            self.cfg.truncate_grads.then_some(self.cfg.grad_norm),
            self.cfg.on_nonfinite_grad,
            e,
        )?;
        self.epoch += 1;
        Ok(EpochStats {
            epoch: self.epoch,
            env_steps: self.env_steps,
            mean_train_return: self.recent_returns.mean(),
            actor_loss: loss,
            critic_loss: 0.0,
            actor_grad_norm: norm as f32,
            actor_lr: lr as f32,
            critic_lr: 0.0,
            mbmix: None,
        })
    }
}

impl PolicyAgent for Bptt {
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

/// The value of the `format` metadata key of BPTT checkpoints.
pub const CHECKPOINT_FORMAT: &str = "mbmix-bptt-checkpoint-v1";

/// The non-tensor state of a BPTT agent.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct BpttState {
    config: BpttConfig,
    task: String,
    dims: [usize; 3],
    epoch: usize,
    env_steps: u64,
    adam_step: u64,
    obs_rms_count: Option<f64>,
    env_progress: Vec<u32>,
    env_rng: SeededRng,
    noise_rng: SeededRng,
    act_rng: SeededRng,
    recent_returns: Vec<f32>,
}

impl Bptt {
    fn checkpoint_tensors(&self) -> Tensors {
        let mut t = Tensors::new();
        add_actor(&mut t, "actor", &self.actor);
        add_adam(&mut t, "actor_adam", &self.actor_opt);
        add_obs_rms(&mut t, self.obs_rms.as_ref());
        add_env(&mut t, &self.env);
        t
    }

    /// Writes everything needed to resume bit-exactly (actor, Adam, obs statistics, envs,
    /// RNGs, counters, return meter) atomically to a safetensors file.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let spec = self.task.spec();
        let snap = self.env.snapshot();
        let state = BpttState {
            config: self.cfg.clone(),
            task: spec.name.clone(),
            dims: [spec.state_dim, spec.obs_dim, spec.act_dim],
            epoch: self.epoch,
            env_steps: self.env_steps,
            adam_step: self.actor_opt.step,
            obs_rms_count: self.obs_rms.as_ref().map(|r| r.count),
            env_progress: snap.progress,
            env_rng: snap.rng,
            noise_rng: self.noise_rng.clone(),
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

    /// Loads a checkpoint of [`Bptt::save_checkpoint`], validated fully before anything
    /// changes ([`Error::BadCheckpoint`] otherwise). Structural settings (num_envs, horizon,
    /// actor_units, obs_rms) must match; the others are the agent's own.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let raw = RawCheckpoint::open(path, CHECKPOINT_FORMAT)?;
        let state: BpttState = raw.state()?;
        check_task(&raw, &state.task, state.dims, self.task.as_ref())?;
        let (c, mine) = (&state.config, &self.cfg);
        check_same_fields(
            &raw,
            &[
                ("num_envs", c.num_envs == mine.num_envs),
                ("horizon", c.horizon == mine.horizon),
                ("actor_units", c.actor_units == mine.actor_units),
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
        let recent_returns = ReturnMeter::from_returns(state.recent_returns)
            .ok_or_else(|| raw.bad("return meter too long"))?;
        let actor = loaded.actor("actor", &self.actor);
        let actor_opt = loaded.adam("actor_adam", &self.actor_opt, state.adam_step);
        let obs_rms = loaded.obs_rms(state.obs_rms_count);
        let snap = loaded.env(state.env_progress, state.env_rng);
        self.env
            .restore(&snap)
            .map_err(|e| raw.bad(e.to_string()))?;
        self.actor = actor;
        self.actor_opt = actor_opt;
        self.obs_rms = obs_rms;
        self.noise_rng = state.noise_rng;
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

    fn toy_config() -> BpttConfig {
        BpttConfig {
            num_envs: 16,
            horizon: 48,
            max_epochs: 60,
            actor_units: vec![32, 32],
            actor_lr: 5e-3,
            obs_rms: true,
            ..BpttConfig::default()
        }
    }

    fn toy_task() -> Arc<dyn Task> {
        Arc::new(PointMass::new(48))
    }

    #[test]
    fn gradient_matches_finite_differences_of_the_bptt_loss() {
        gradient_check(0.0);
    }

    /// The auxiliary training reward (`aux_reward`) enters the loss and its gradient.
    #[test]
    fn gradient_with_the_aux_reward_matches_finite_differences() {
        gradient_check(0.7);
    }

    fn gradient_check(aux_reward: f64) {
        // Three envs, window of 4, episodes of 6: env 0 hits the time limit after step 1,
        // env 1 terminates at step 0, env 2 runs through (as window.rs's test).
        let task: Arc<dyn Task> = Arc::new(PointMass::new(6));
        let cfg = BpttConfig {
            num_envs: 3,
            horizon: 4,
            actor_units: vec![8, 8],
            obs_rms: true,
            aux_reward,
            ..BpttConfig::default()
        };
        let mut agent = Bptt::new(cfg, task, 21).unwrap();
        let mut snap = agent.env.snapshot();
        snap.state = vec![0.3, 0.5, 3.9, 3.0, -0.5, 0.2];
        snap.progress = vec![4, 0, 0];
        agent.env.restore(&snap).unwrap();
        agent.obs_rms = Some(RunningMeanStd {
            mean: vec![0.2, -0.1, 0.1],
            var: vec![1.5, 0.8, 0.3],
            count: 10.0,
        });
        let (rng0, rms0) = (agent.noise_rng.clone(), agent.obs_rms.clone());
        let reset = |a: &mut Bptt| {
            a.env.restore(&snap).unwrap();
            a.noise_rng = rng0.clone();
            a.obs_rms = rms0.clone();
        };
        reset(&mut agent);
        let (_, grad) = agent.window_loss_and_grad().unwrap();
        let done = agent.engine.tape.done.clone();
        assert_eq!(done[1][0], Done::TimeLimit);
        assert_eq!(done[0][1], Done::Terminated);
        assert!(done.iter().all(|row| row[2] == Done::No));

        let theta0: Vec<f64> = agent
            .actor
            .params_flat()
            .iter()
            .map(|&v| v as f64)
            .collect();
        let fd = fd_gradient(
            &mut |p| {
                let p32: Vec<f32> = p.iter().map(|&v| v as f32).collect();
                agent.actor.set_params_flat(&p32);
                reset(&mut agent);
                let (loss, _) = agent.window_loss_and_grad().unwrap();
                assert_eq!(agent.engine.tape.done, done, "done pattern changed");
                loss as f64
            },
            &theta0,
            1e-2,
        );
        let analytic: Vec<f64> = grad.iter().map(|&v| v as f64).collect();
        let err = rel_err(&analytic, &fd, 1e-6);
        println!(
            "BPTT gradient: |g| = {:.4e}, relative error vs FD = {err:.2e}",
            crate::optim::grad_norm(&grad)
        );
        assert!(crate::optim::grad_norm(&grad) > 1e-3);
        assert!(err < 5e-3, "relative error {err}\n{analytic:?}\n{fd:?}");
        // The log-std entry is checked too.
        let last = analytic.len() - 1;
        assert!((analytic[last] - fd[last]).abs() < 1e-2 * analytic[last].abs().max(1e-3));
    }

    #[test]
    fn bptt_seeds_are_the_discounted_segment_rewards() {
        // One env, h = 4, time limit after step 1: segments [0, 1] and [2, 3], no values.
        let done = vec![
            vec![Done::No],
            vec![Done::TimeLimit],
            vec![Done::No],
            vec![Done::NonFinite],
        ];
        let rewards = Array2::from_shape_vec((4, 1), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let mut seeds = WindowSeeds::zeros(4, 1);
        let g = 0.5f32;
        let loss = bptt_seeds(&done, rewards.view(), g, 2.0, &mut seeds);
        // −2[(1 + g·2) + 3] / 4; the non-finite step contributes nothing.
        let want = -2.0 * ((1.0 + g * 2.0) + 3.0) / 4.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
        assert_eq!(
            seeds.reward.column(0).to_vec(),
            vec![-0.5, -0.5 * g, -0.5, 0.0]
        );
        assert!(seeds.value.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn bptt_improves_the_toy_task() {
        let mut agent = Bptt::new(toy_config(), toy_task(), 3).unwrap();
        let before = agent.evaluate(32, 99, true).unwrap();
        let mut last = None;
        for _ in 0..60 {
            last = Some(agent.train_epoch().unwrap());
        }
        let after = agent.evaluate(32, 99, true).unwrap();
        let last = last.unwrap();
        println!(
            "toy BPTT: eval return {:.2} → {:.2} (success {:?} → {:?}); last {last:?}",
            before.mean_return, after.mean_return, before.success_rate, after.success_rate
        );
        assert_eq!(agent.env_steps(), 60 * 16 * 48);
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
        let cfg = BpttConfig {
            horizon: 16,
            ..toy_config()
        };
        let bits = |s: &[EpochStats]| serde_json::to_string(s).unwrap();
        let run = |seed| {
            let mut a = Bptt::new(cfg.clone(), toy_task(), seed).unwrap();
            let s: Vec<EpochStats> = (0..3).map(|_| a.train_epoch().unwrap()).collect();
            (bits(&s), a.actor.params_flat())
        };
        let (a, pa) = run(5);
        let (b, pb) = run(5);
        assert_eq!(a, b);
        assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_ne!(a, run(6).0, "the seed matters");

        let dir = tempdir("bptt-ckpt");
        let path = dir.join("agent.safetensors");
        let mut x = Bptt::new(cfg.clone(), toy_task(), 7).unwrap();
        x.train_epoch().unwrap();
        x.train_epoch().unwrap();
        x.save_checkpoint(&path).unwrap();
        let cont: Vec<EpochStats> = (0..2).map(|_| x.train_epoch().unwrap()).collect();
        let mut y = Bptt::new(cfg.clone(), toy_task(), 123).unwrap();
        y.load_checkpoint(&path).unwrap();
        assert_eq!((y.epoch(), y.env_steps()), (2, 2 * 16 * 16));
        let resumed: Vec<EpochStats> = (0..2).map(|_| y.train_epoch().unwrap()).collect();
        assert_eq!(bits(&cont), bits(&resumed));
        assert_eq!(
            x.evaluate(4, 3, true).unwrap(),
            y.evaluate(4, 3, true).unwrap()
        );
        // A corrupt file or another configuration is refused and changes nothing.
        let before = y.actor.params_flat();
        let mut bytes = std::fs::read(&path).unwrap();
        let k = bytes.len() - 5;
        bytes[k] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            y.load_checkpoint(&path),
            Err(Error::BadCheckpoint { .. })
        ));
        let other = BpttConfig {
            actor_units: vec![8],
            ..cfg
        };
        Bptt::new(other, toy_task(), 1)
            .unwrap()
            .save_checkpoint(&path)
            .unwrap();
        match y.load_checkpoint(&path) {
            Err(Error::BadCheckpoint { reason, .. }) => {
                assert!(reason.contains("actor_units"), "{reason}")
            }
            other => panic!("expected BadCheckpoint, got {other:?}"),
        }
        assert_eq!(y.actor.params_flat(), before);
        assert_eq!(y.epoch(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mbmix-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn config_validation_names_the_field() {
        BpttConfig::default().validate().unwrap();
        let cases = [
            (
                BpttConfig {
                    horizon: 0,
                    ..Default::default()
                },
                "horizon",
            ),
            (
                BpttConfig {
                    gamma: 0.0,
                    ..Default::default()
                },
                "gamma",
            ),
            (
                BpttConfig {
                    actor_units: vec![0],
                    ..Default::default()
                },
                "actor_units",
            ),
            (
                BpttConfig {
                    grad_norm: -1.0,
                    ..Default::default()
                },
                "grad_norm",
            ),
            (
                BpttConfig {
                    rew_scale: f64::INFINITY,
                    ..Default::default()
                },
                "rew_scale",
            ),
        ];
        for (cfg, field) in cases {
            match Bptt::new(cfg, toy_task(), 0) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                Err(other) => panic!("{field}: expected InvalidConfig, got {other:?}"),
                Ok(_) => panic!("{field}: accepted"),
            }
        }
        let parsed: BpttConfig =
            serde_json::from_str(r#"{"horizon": 8, "on_nonfinite_grad": "abort"}"#).unwrap();
        assert_eq!(parsed.horizon, 8);
        assert_eq!(parsed.on_nonfinite_grad, NonFiniteGradPolicy::Abort);
        assert!(serde_json::from_str::<BpttConfig>(r#"{"steps_num": 8}"#).is_err());
    }

    #[test]
    fn nonfinite_gradient_skips_or_aborts() {
        let task: Arc<dyn Task> = Arc::new(crate::testing::NanAdjoint(PointMass::new(48)));
        let cfg = BpttConfig {
            horizon: 8,
            ..toy_config()
        };
        let mut a = Bptt::new(cfg.clone(), task.clone(), 1).unwrap();
        let p0 = a.actor.params_flat();
        let stats = a.train_epoch().unwrap();
        assert!(stats.actor_grad_norm.is_nan());
        assert_eq!(a.actor.params_flat(), p0);
        let mut b = Bptt::new(
            BpttConfig {
                on_nonfinite_grad: NonFiniteGradPolicy::Abort,
                ..cfg
            },
            task,
            1,
        )
        .unwrap();
        assert!(matches!(
            b.train_epoch(),
            Err(Error::NonFiniteGradient { epoch: 0, .. })
        ));
        assert_eq!(b.epoch(), 0);
    }
}

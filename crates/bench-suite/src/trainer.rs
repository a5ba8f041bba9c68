//! One interface over the learning algorithms, so that the run loop, `eval` and the
//! reports do not depend on which algorithm a run uses.

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::registry::{self, Algo};
use mbmix_policy::{Bptt, EpochStats, EvalEpisode, EvalStats, MbMix, PolicyAgent, Ppo, Shac};
use std::path::Path;

/// What the run loop needs from an algorithm.
pub trait Trainer {
    /// Epochs completed so far.
    fn epoch(&self) -> usize;
    /// Environment steps simulated for training so far.
    fn env_steps(&self) -> u64;
    /// Runs one training epoch.
    fn train_epoch(&mut self) -> Result<EpochStats, mbmix_policy::Error>;
    /// Evaluates the deterministic policy over `episodes` episodes seeded by `seed`, from the
    /// task's stochastic reset or (`stochastic_init` false) its deterministic initial state.
    fn evaluate(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
    ) -> Result<EvalStats, mbmix_policy::Error>;
    /// The episodes behind [`Trainer::evaluate`], with every visited state and reward, each
    /// cut after at most `max_steps` steps (what `mbmix render` draws).
    fn rollout(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
        max_steps: usize,
    ) -> Result<Vec<EvalEpisode>, mbmix_policy::Error>;
    /// Writes a checkpoint (atomically).
    fn save_checkpoint(&self, path: &Path) -> Result<(), mbmix_policy::Error>;
    /// Restores a checkpoint; on error the trainer is unchanged.
    fn load_checkpoint(&mut self, path: &Path) -> Result<(), mbmix_policy::Error>;
    /// Whether the algorithm trains a critic (so that [`EpochStats::critic_loss`] and
    /// `critic_lr` mean something); BPTT has none.
    fn has_critic(&self) -> bool {
        true
    }
}

/// Implements [`Trainer`] for an agent type by delegating to its methods of the trainer's
/// names and signatures, inherent or [`PolicyAgent`]'s (`rollout_episodes` for `rollout`).
/// `evaluate` names the function that evaluates with the choice of initial states
/// (`evaluate_from` for SHAC and MB-MIX, whose own `evaluate` always uses the stochastic
/// reset; [`PolicyAgent::evaluate`] for the baselines); `has_critic` is
/// [`Trainer::has_critic`].
macro_rules! trainer_by_delegation {
    ($agent:ty, evaluate: $evaluate:path, has_critic: $critic:expr) => {
        impl Trainer for $agent {
            fn epoch(&self) -> usize {
                <$agent>::epoch(self)
            }
            fn env_steps(&self) -> u64 {
                <$agent>::env_steps(self)
            }
            fn train_epoch(&mut self) -> Result<EpochStats, mbmix_policy::Error> {
                <$agent>::train_epoch(self)
            }
            fn evaluate(
                &self,
                episodes: usize,
                seed: u64,
                stochastic_init: bool,
            ) -> Result<EvalStats, mbmix_policy::Error> {
                $evaluate(self, episodes, seed, stochastic_init)
            }
            fn rollout(
                &self,
                episodes: usize,
                seed: u64,
                stochastic_init: bool,
                max_steps: usize,
            ) -> Result<Vec<EvalEpisode>, mbmix_policy::Error> {
                <$agent>::rollout_episodes(self, episodes, seed, stochastic_init, max_steps)
            }
            fn save_checkpoint(&self, path: &Path) -> Result<(), mbmix_policy::Error> {
                <$agent>::save_checkpoint(self, path)
            }
            fn load_checkpoint(&mut self, path: &Path) -> Result<(), mbmix_policy::Error> {
                <$agent>::load_checkpoint(self, path)
            }
            fn has_critic(&self) -> bool {
                $critic
            }
        }
    };
}

trainer_by_delegation!(Shac, evaluate: Shac::evaluate_from, has_critic: true);
trainer_by_delegation!(MbMix, evaluate: MbMix::evaluate_from, has_critic: true);
trainer_by_delegation!(Bptt, evaluate: PolicyAgent::evaluate, has_critic: false);
trainer_by_delegation!(Ppo, evaluate: PolicyAgent::evaluate, has_critic: true);

/// Builds the trainer a configuration describes, with fresh (untrained) parameters.
pub fn build(cfg: &RunConfig) -> Result<Box<dyn Trainer>> {
    build_on(cfg, diff_core::Device::Cpu)
}

/// [`build`] with the task's simulator on `device` (see [`registry::make_task_on`]).
pub fn build_on(cfg: &RunConfig, device: diff_core::Device) -> Result<Box<dyn Trainer>> {
    let task = registry::make_run_task(cfg, device)?;
    match cfg.algorithm()? {
        Algo::Shac => {
            let shac_cfg = cfg
                .shac
                .clone()
                .ok_or_else(|| Error::Usage("algo `shac` needs a [shac] section".into()))?;
            Ok(Box::new(Shac::new(shac_cfg, task, cfg.seed)?))
        }
        Algo::MbMix(_) => {
            let mbmix_cfg = cfg.mbmix.clone().ok_or_else(|| {
                Error::Usage(format!("algo `{}` needs an [mbmix] section", cfg.algo))
            })?;
            Ok(Box::new(MbMix::new(mbmix_cfg, task, cfg.seed)?))
        }
        Algo::Bptt => {
            let bptt_cfg = cfg
                .bptt
                .clone()
                .ok_or_else(|| Error::Usage("algo `bptt` needs a [bptt] section".into()))?;
            Ok(Box::new(Bptt::new(bptt_cfg, task, cfg.seed)?))
        }
        Algo::Ppo => {
            let ppo_cfg = cfg
                .ppo
                .clone()
                .ok_or_else(|| Error::Usage("algo `ppo` needs a [ppo] section".into()))?;
            Ok(Box::new(Ppo::new(ppo_cfg, task, cfg.seed)?))
        }
    }
}

/// The seed of the evaluation episodes of a run: fixed per run, so that every
/// evaluation of a run (during training, at the end, and `mbmix eval` by default) sees the
/// same start states, and distinct from the training streams.
pub fn eval_seed(run_seed: u64) -> u64 {
    run_seed ^ 0x5EED_E7A1_0000_0000
}

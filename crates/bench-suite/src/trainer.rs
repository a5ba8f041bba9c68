//! One interface over the learning algorithms, so that the run loop, `eval` and the
//! reports do not depend on which algorithm a run uses.

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::registry::{self, Algo};
use mbmix_policy::{Bptt, EpochStats, EvalEpisode, EvalStats, PolicyAgent, Ppo, Shac};
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

impl Trainer for Shac {
    fn epoch(&self) -> usize {
        Shac::epoch(self)
    }
    fn env_steps(&self) -> u64 {
        Shac::env_steps(self)
    }
    fn train_epoch(&mut self) -> Result<EpochStats, mbmix_policy::Error> {
        Shac::train_epoch(self)
    }
    fn evaluate(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
    ) -> Result<EvalStats, mbmix_policy::Error> {
        Shac::evaluate_from(self, episodes, seed, stochastic_init)
    }
    fn rollout(
        &self,
        episodes: usize,
        seed: u64,
        stochastic_init: bool,
        max_steps: usize,
    ) -> Result<Vec<EvalEpisode>, mbmix_policy::Error> {
        Shac::rollout_episodes(self, episodes, seed, stochastic_init, max_steps)
    }
    fn save_checkpoint(&self, path: &Path) -> Result<(), mbmix_policy::Error> {
        Shac::save_checkpoint(self, path)
    }
    fn load_checkpoint(&mut self, path: &Path) -> Result<(), mbmix_policy::Error> {
        Shac::load_checkpoint(self, path)
    }
}

/// `Trainer` for an agent whose methods have the baselines' signatures (`evaluate` with the
/// choice of initial states).
macro_rules! baseline_trainer {
    ($agent:ty, has_critic: $critic:expr) => {
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
                <$agent as PolicyAgent>::evaluate(self, episodes, seed, stochastic_init)
            }
            fn rollout(
                &self,
                episodes: usize,
                seed: u64,
                stochastic_init: bool,
                max_steps: usize,
            ) -> Result<Vec<EvalEpisode>, mbmix_policy::Error> {
                <$agent as PolicyAgent>::rollout_episodes(
                    self,
                    episodes,
                    seed,
                    stochastic_init,
                    max_steps,
                )
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

baseline_trainer!(Bptt, has_critic: false);
baseline_trainer!(Ppo, has_critic: true);

/// Builds the trainer a configuration describes, with fresh (untrained) parameters.
pub fn build(cfg: &RunConfig) -> Result<Box<dyn Trainer>> {
    let task = registry::make_task(&cfg.task)?;
    match cfg.algorithm()? {
        Algo::Shac => {
            let shac_cfg = cfg
                .shac
                .clone()
                .ok_or_else(|| Error::Usage("algo `shac` needs a [shac] section".into()))?;
            Ok(Box::new(Shac::new(shac_cfg, task, cfg.seed)?))
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

//! `mbmix-policy`: actor, critic, observation normalisation, the window engine, SHAC
//! (algorithms.md §1) and MB-MIX (§3) over `diff-core` tasks.
//!
//! - [`nn`]: runtime-width MLPs on dfdx (Linear → ELU → LayerNorm blocks) with parameter and
//!   input gradients;
//! - [`optim`]: Adam (PyTorch semantics), gradient-norm clipping, `nan_to_num`;
//! - [`rms`]: DiffRL's running observation mean/std;
//! - [`policy`]: the stochastic tanh-Gaussian actor;
//! - [`window`]: the forward rollout and reverse sweep shared by all first-order methods;
//! - [`td`]: TD(λ) critic targets;
//! - [`shac`]: the SHAC trainer, evaluation and checkpoints;
//! - [`mix`]: MB-MIX's λ-mixed window objective as loss seeds (algorithms.md §3.6);
//! - [`model`]: the learned dynamics model as a step source of the window engine (§3.7);
//! - [`mbmix`], [`mbmix_config`]: the MB-MIX trainer (§3.9) and its configuration (§3.4);
//! - [`ppo`]: the PPO baseline (rl_games settings of DiffRL's `cfg/ppo`);
//! - [`bptt`]: the BPTT / analytic-policy-gradient baseline (DiffRL's `bptt.py`);
//! - [`common`]: the pieces the agents share (schedules, actor step, evaluation).

pub mod bptt;
pub mod checkpoint;
pub mod common;
pub mod config;
pub mod error;
pub mod mbmix;
pub mod mbmix_checkpoint;
pub mod mbmix_config;
pub mod mix;
pub mod model;
pub mod nn;
pub mod optim;
pub mod policy;
pub mod ppo;
pub mod reward_head;
pub mod rms;
pub mod shac;
pub mod td;
#[cfg(test)]
pub(crate) mod testing;
pub mod window;

pub use bptt::{Bptt, BpttConfig};
pub use common::PolicyAgent;
pub use config::{NonFiniteGradPolicy, ShacConfig};
pub use error::{Error, Result};
pub use mbmix::{MbMix, MbMixEpochStats};
pub use mbmix_config::{
    CriticConfig, CriticData, DiagnosticsConfig, MbMixConfig, MixConfig, ModelGate, Reading,
    RolloutConfig,
};
pub use mix::{mix_seeds, Bootstrap, LossScale, MixStarts};
pub use nn::NetworkBackend;
pub use ppo::{LrSchedule, Ppo, PpoConfig};
pub use shac::{EpochStats, EvalEpisode, EvalStats, Shac};

//! `mbmix-policy`: actor, critic, observation normalisation, the window engine and SHAC
//! (algorithms.md §1) over `diff-core` tasks.
//!
//! - [`nn`]: runtime-width MLPs on dfdx (Linear → ELU → LayerNorm blocks) with parameter and
//!   input gradients;
//! - [`optim`]: Adam (PyTorch semantics), gradient-norm clipping, `nan_to_num`;
//! - [`rms`]: DiffRL's running observation mean/std;
//! - [`policy`]: the stochastic tanh-Gaussian actor;
//! - [`window`]: the forward rollout and reverse sweep shared by all first-order methods;
//! - [`td`]: TD(λ) critic targets;
//! - [`shac`]: the SHAC trainer, evaluation and checkpoints.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod mix;
pub mod model;
pub mod nn;
pub mod optim;
pub mod policy;
pub mod rms;
pub mod shac;
pub mod td;
#[cfg(test)]
pub(crate) mod testing;
pub mod window;

pub use config::{NonFiniteGradPolicy, ShacConfig};
pub use error::{Error, Result};
pub use mix::{mix_seeds, LossScale, MixStarts};
pub use nn::NetworkBackend;
pub use shac::{EpochStats, EvalEpisode, EvalStats, Shac};

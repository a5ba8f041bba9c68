//! `mbmix-policy`: actor, critic, observation normalisation, the window engine and SHAC
//! (algorithms.md §1) over `diff-core` tasks.

pub mod config;
pub mod error;
pub mod nn;
pub mod optim;
pub mod rms;
pub mod td;

pub use config::{NonFiniteGradPolicy, ShacConfig};
pub use error::{Error, Result};

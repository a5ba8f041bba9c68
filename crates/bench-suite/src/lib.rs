//! `bench-suite`: the layer that wires tasks to algorithms.
//!
//! - [`registry`]: tasks and algorithms by name;
//! - [`config`]: the run configuration (presets, TOML overrides, validation);
//! - [`run`]: run directories (training, resume, checkpoints, metrics, summaries,
//!   evaluation);
//! - [`rollout`]: replay of action sequences with reverse-mode gradients;
//! - [`plot`]: learning curves;
//! - [`render`]: pictures of a trained policy's rollout (GIF animation, PNG strip);
//! - [`cli`]: the `mbmix` command line.

pub mod bench;
pub mod cli;
pub mod config;
pub mod error;
pub mod plot;
pub mod registry;
pub mod render;
pub mod rollout;
pub mod run;
pub mod trainer;

pub use config::{Overrides, RunConfig};
pub use error::{Error, Result};

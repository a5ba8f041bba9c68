//! `sobolev-model`: a learned dynamics model f_φ(s, a) ≈ F(s, a) trained with the Sobolev loss
//! (algorithms.md §3.5)
//!
//! ```text
//! J_M(φ) = E[ ‖f_φ(s,a) − F(s,a)‖² + β_s‖∂f/∂s − ∂F/∂s‖_F² + β_a‖∂f/∂a − ∂F/∂a‖_F² ]
//! ```
//!
//! on normalised coordinates, with the simulator's own derivatives as targets. The crate is
//! layer 1 of ARCHITECTURE.md: it sees environments only through `diff_core::Task`.
//!
//! - [`ModelConfig`]: the knobs of §3.4 ("Dynamics model", "Sobolev loss"), with validation;
//! - [`SobolevModel`]: the MLP (Linear → ELU/tanh → LayerNorm blocks, Linear output) over
//!   `[normalised s, a]` → normalised Δs, with `predict`, `jvp`, `vjp` (for the reverse
//!   sweep) and `jacobian`, all in physical coordinates;
//! - [`tangent`]: the layers on (value, tangent) pairs, written with ordinary dfdx ops, so
//!   that J_f·V is an ordinary output and one first-order reverse pass gives ∂J_M/∂φ (no
//!   double backward);
//! - [`collect`], [`Transitions`], [`TransitionBuffer`]: transitions with their Sobolev
//!   targets (full Jacobians from batched VJPs, or the projections uᵀJ_F, J_F·v, uᵀJ_F·v)
//!   in a FIFO; non-finite targets are dropped and counted;
//! - [`SobolevTrainer`]: Adam, gradient clipping and minibatches over the buffer;
//!   [`evaluate`]: held-out next-state and Jacobian errors.
//!
//! `examples/sobolev_vs_mse.rs` compares the Sobolev model with an MSE-only one on
//! a task's transitions (CartPole, Hopper, HalfCheetah, Ant, Humanoid).

pub mod buffer;
pub mod config;
pub mod error;
mod fused;
pub mod loss;
pub mod model;
pub mod normalizer;
pub mod tangent;
#[cfg(test)]
pub(crate) mod testing;
pub mod train;

pub use buffer::{
    collect, collect_observed, collect_with_directions, GivenDirections, TargetLayout, TargetSpec,
    TransitionBuffer, TransitionRef, Transitions,
};
pub use config::{
    Activation, DirectionSource, ModelConfig, ModelDerivative, ModelDone, ModelSpace,
    NetworkBackend, PredictionTarget, RewardSource, SobolevConfig, SobolevForm, TargetFilter,
    UpdateOrder, Wrt,
};
pub use error::{Error, Result};
pub use loss::{LossParts, Prepared};
pub use model::SobolevModel;
pub use normalizer::{Normalizer, RunningStats};
pub use tangent::Float;
pub use train::{
    clip_grad_norm, evaluate, evaluate_columns, Adam, EvalStats, ModelStats, SobolevTrainer,
};
#[cfg(test)]
mod tests;

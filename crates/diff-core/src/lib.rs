//! `diff-core`: the layer-0 crate of the MB-MIX workspace.
//!
//! - [`Task`], the batched differentiable environment contract (forward, VJP, JVP of the
//!   dynamics, observation and reward), and [`BatchEnv`], which runs N episodes of a task;
//! - [`WindowTape`], what a window's reverse sweep needs, and [`openloop`], the replay of an
//!   action sequence with the VJP of its rewards;
//! - [`Real`] and [`Dual`], the scalar abstraction the simulators are generic over;
//! - [`Scene`], the renderer-neutral picture of a state that [`Task::scene`] returns;
//! - seeded RNG ([`rng`]), device selection ([`Device`]) and the shared [`Error`];
//! - [`gradcheck`], the finite-difference and dot-product test helpers with proptest
//!   strategies.

pub mod action_map;
pub mod batch;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod error;
pub mod gradcheck;
pub mod openloop;
pub mod rng;
pub mod scalar;
pub mod scene;
pub mod task;

pub use action_map::LinearAction;
pub use batch::{BatchEnv, BatchEnvSnapshot, Done, WindowTape, NONFINITE_LIMIT};
pub use device::Device;
pub use error::{Error, Result};
pub use openloop::{open_loop_rollout, open_loop_vjp, OpenLoopWindow};
pub use rng::{seeded, SeededRng};
pub use scalar::{Dual, Real};
pub use scene::{Prim, Scene};
pub use task::{check_batch, ResidentWindow, Task, TaskSpec};

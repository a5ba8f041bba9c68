//! `sim-rigid`: differentiable articulated rigid bodies in reduced coordinates, following
//! dflex (NVlabs/DiffRL) as specified in `shared/reference/tasks.md` §1, and the tasks built
//! on it.
//!
//! - [`model`]: the immutable articulation (links, joints, mass from shapes);
//! - [`dynamics`]: the substep pipeline, stage by stage, each with its adjoint;
//! - [`batch`]: the batched driver over N envs (rayon, per-thread workspaces);
//! - [`kernels`]: the CUDA kernels (feature `cuda`) and their host-compiled twins;
//! - [`resident`]: a window whose batch state stays on the device (kernels' host build or GPU);
//! - [`render`]: link world transforms and the [`diff_core::Scene`] of a state;
//! - [`tasks`]: task definitions, one file each.

// Index loops mirror the formulas (H[d][e], S_d, …) and read better than iterator chains.
#![allow(clippy::needless_range_loop)]

pub mod batch;
pub mod contact;
pub mod dynamics;
pub mod kernels;
pub mod loader;
pub mod model;
pub mod render;
pub mod resident;
pub mod spatial;
pub mod tasks;

pub use dynamics::{SimParams, Workspace};
pub use model::{
    Articulation, ArticulationBuilder, ContactMaterial, ContactPoint, EffortSaturation, Geometry,
    InertiaTransform, Inertial, Joint, JointKind, LinkShape, Shape,
};
pub use tasks::CartPoleSwingUp;

//! Differentiable deformable-body simulators (`../shared/reference/tasks.md` §7):
//! - [`mpm`]: 3-D MLS-MPM with quadratic B-splines and APIC, fixed-corotated elasticity,
//!   an elasto-plastic clamp and a weakly compressible liquid, kinematic primitives
//!   (boxes, and bowls that rotate) coupled through their signed distance, ground
//!   friction and box boundaries;
//! - [`mat3`] and [`svd`]: the 3×3 linear algebra under the constitutive model, with the
//!   derivative of the singular-value functions that stays finite for repeated singular
//!   values;
//! - [`cloth`]: DaXBench's mass-spring cloth with ground friction, a suction gripper and
//!   the pick-and-place macro;
//! - [`checkpoint`]: reverse sweeps over thousands of substeps in bounded memory;
//! - [`tasks`]: the DaXBench-like tasks (`push-rope`, `push-rope-hard`, `fold-cloth1`,
//!   `fold-cloth3`, `unfold-cloth1`, `unfold-cloth3`, `fold-tshirt`, `whip-rope`,
//!   `pour-water`, `pour-soup`).
//!
//! As in `sim-rigid`, forward code is generic over [`diff_core::Real`] (`f32` for
//! training, `f64` for the finite-difference oracle, [`diff_core::Dual`] for JVPs) and
//! every stage has a hand-written adjoint checked by the property tests in `tests/`.

// index loops over the 3 axes and 27 stencil nodes read as the formulas they implement
#![allow(clippy::needless_range_loop)]

pub mod checkpoint;
pub mod cloth;
pub mod mat3;
pub mod mpm;
pub mod primitive;
pub mod svd;
pub mod tasks;

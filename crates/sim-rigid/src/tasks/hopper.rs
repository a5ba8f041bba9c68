//! Hopper (`envs/hopper.py`, `envs/assets/hopper.xml`; tasks.md §2.3).
//!
//! - Model: `datasets/robots/hopper.xml` with dflex's conventions: planar joints rootx
//!   (slide), rootz (slide), rooty (hinge), thigh, leg, foot (axis (0, −1, 0)); all capsules;
//!   q and q̇ 6-D; 8 contact points; contact ke 2e4, kd 1e3, kf 1e3, mu 0.9; damping 2.0
//!   (root joints 0 from the XML); limits 1e3/10 on all 6 DOFs, the always-on limit damping
//!   included (trap 6); armature 1.0 on all 6 DOFs, root slides included (trap 5). The
//!   root's joint frame is replaced by a −π/2 rotation about x at the origin.
//! - Simulation: dt 1/60, 16 substeps, mass matrix rebuilt once per step.
//! - Action: 3-D, τ = 200·clip(a) on thigh, leg and foot.
//! - Observation (11) `[q[1..6], q̇]`; reward `ẋ + height + angle − 0.1·Σa²` with the
//!   height term `d = clip(z + 0.3, −1, 0.3)` (`−200 d²` below 0, `d` above) and the angle
//!   term `1 − (θ/(π/6))²`; termination `z < −0.45` (trap 20); episode 1000.
//! - Reset noise: x, z ±0.05, root angle ±0.05, joints ±0.05, q̇ ±0.05.

use super::planar::{HopperTerms, Planar, PlanarConfig};
use crate::batch::RigidEnv;
use crate::dynamics::SimParams;
use crate::loader::{load_mjcf, robot_path, MjcfOptions};

pub const ACTION_STRENGTH: f64 = 200.0;
pub const EPISODE_LENGTH: usize = 1000;

/// The Hopper task as a batched [`diff_core::Task`].
pub type Hopper = RigidEnv<Planar>;

/// The Hopper definition with DiffRL's parameters.
pub fn hopper_def() -> diff_core::Result<Planar> {
    let model = load_mjcf(robot_path("hopper.xml"), &MjcfOptions::diffrl_hopper())?;
    let joint_names = model.joint_names.clone();
    let art = model.build()?;
    Planar::new(PlanarConfig {
        name: "hopper".into(),
        art,
        params: SimParams {
            dt: 1.0 / 60.0,
            substeps: 16,
            mm_freq: 16,
        },
        episode_length: EPISODE_LENGTH,
        start_xz: [0.0, 0.0],
        actuators: (3..6).map(|d| (d, ACTION_STRENGTH)).collect(),
        action_penalty: -0.1,
        hopper: Some(HopperTerms {
            termination_height: -0.45,
            height_tolerance: 0.15,
            height_clip: 0.3,
            height_scale: 1.0,
            termination_angle: std::f64::consts::PI / 6.0,
        }),
        brax: None,
        noise_root: 0.05,
        noise_angle: 0.05,
        noise_joint: 0.05,
        noise_vel: 0.05,
        joint_names,
    })
}

impl RigidEnv<Planar> {
    /// The Hopper task.
    pub fn hopper() -> Self {
        RigidEnv::from_def(hopper_def().expect("datasets/robots/hopper.xml loads"))
    }
}

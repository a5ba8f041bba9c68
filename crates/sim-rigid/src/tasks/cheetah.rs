//! HalfCheetah (`envs/cheetah.py`, `envs/assets/half_cheetah.xml`; tasks.md §2.4).
//!
//! - Model: `datasets/robots/half_cheetah.xml` with dflex's conventions: rootx, rootz,
//!   rooty, then bthigh, bshin, bfoot, fthigh, fshin, ffoot (axis y); q and q̇ 9-D;
//!   stiffness/damping per joint from the XML (240/6, 180/4.5, 120/3, 180/4.5, 120/3,
//!   60/1.5; root 0/0); ffoot's range is [−3.1, −0.3] so its PD target 0 lies outside it
//!   (trap 19); armature 0.1; limits 1e3/10; contact ke 2e4, kd 1e3, kf 1e3, mu 1.0; the
//!   XML's `<inertial mass="10">` and gears are ignored (trap 1). Root joint frame at
//!   (0, 1, 0) rotated −π/2 about x.
//! - Simulation: dt 1/60, 16 substeps, mass matrix rebuilt once per step.
//! - Action: 6-D, τ = 200·clip(a).
//! - Observation (17) `[q[1..9], q̇]`; reward `ẋ − 0.1·Σa²`; no termination; episode 1000.
//! - Start rootz −0.2; reset noise: x, z ±0.1, root angle ±0.1, joints ±0.1, q̇ ±0.25.

use super::planar::{Planar, PlanarConfig};
use crate::batch::RigidEnv;
use crate::dynamics::SimParams;
use crate::loader::{load_mjcf, robot_path, MjcfOptions};

pub const ACTION_STRENGTH: f64 = 200.0;
pub const EPISODE_LENGTH: usize = 1000;

/// The HalfCheetah task as a batched [`diff_core::Task`] (same type as [`super::Hopper`]).
pub type HalfCheetah = RigidEnv<Planar>;

/// The HalfCheetah definition with DiffRL's parameters.
pub fn cheetah_def() -> diff_core::Result<Planar> {
    let model = load_mjcf(
        robot_path("half_cheetah.xml"),
        &MjcfOptions::diffrl_cheetah(),
    )?;
    let joint_names = model.joint_names.clone();
    let art = model.build()?;
    Planar::new(PlanarConfig {
        name: "half-cheetah".into(),
        art,
        params: SimParams {
            dt: 1.0 / 60.0,
            substeps: 16,
            mm_freq: 16,
        },
        episode_length: EPISODE_LENGTH,
        start_xz: [0.0, -0.2],
        actuators: (3..9).map(|d| (d, ACTION_STRENGTH)).collect(),
        action_penalty: -0.1,
        hopper: None,
        brax: None,
        noise_root: 0.1,
        noise_angle: 0.1,
        noise_joint: 0.1,
        noise_vel: 0.25,
        joint_names,
    })
}

impl RigidEnv<Planar> {
    /// The HalfCheetah task.
    pub fn half_cheetah() -> Self {
        RigidEnv::from_def(cheetah_def().expect("datasets/robots/half_cheetah.xml loads"))
    }
}

//! Ant (`envs/ant.py`, `envs/assets/ant.xml`; tasks.md §2.5).
//!
//! - Model: `datasets/robots/ant.xml` loaded with dflex's conventions (masses from geoms at
//!   ρ = 1000, dflex's element-wise inertia transform, fidelity trap 27): free torso
//!   (sphere r 0.25 plus four capsules), 4 legs × (hip, ankle); q 15, q̇ 14; 25 contact
//!   points; contact ke 4e4, kd 1e4, kf 3e3, mu 0.75; hinges stiffness 0, damping 1,
//!   limits 1e3/10 (damping always on, trap 6), armature 0.05.
//! - Simulation: dt 1/60, 16 substeps, mass matrix rebuilt once per step.
//! - Action: 8-D, τ = 200·clip(a) on DOFs 6..13 in XML joint order (trap 16).
//! - Start: torso at (0, 0.75, 0) rotated −π/2 about x; joints at the rest pose
//!   [0, 1, 0, −1, 0, −1, 0, 1] (also the PD targets).
//! - Observation (37), reward, termination (h < 0.27), episode 1000: [`super::locomotion`].
//!   Reward: forward speed + 0.1·up + heading + (h − 0.27), no action penalty.
//! - Reset noise: position ±0.1, rotation ±π/24 about a random axis, joints ±0.2,
//!   q̇ ±0.25, previous action 0.
//!
//! Deviation from DiffRL: the reset noise is drawn from our seeded ChaCha stream, not
//! torch's (same distributions).

use super::locomotion::{HeightReward, Locomotion, LocomotionConfig};
use crate::batch::RigidEnv;
use crate::dynamics::SimParams;
use crate::loader::{load_mjcf, robot_path, MjcfOptions};
use std::f64::consts::PI;

/// τ per unit action.
pub const ACTION_STRENGTH: f64 = 200.0;
pub const TERMINATION_HEIGHT: f64 = 0.27;
pub const EPISODE_LENGTH: usize = 1000;
/// Joint rest pose in DOF order (hip_1, ankle_1, hip_2, ankle_2, …).
pub const REST_POSE: [f64; 8] = [0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0];

/// The Ant task as a batched [`diff_core::Task`].
pub type Ant = RigidEnv<Locomotion>;

/// −π/2 about x: MJCF's z-up model stood up in dflex's Y-up world.
pub(crate) const Z_UP_TO_Y_UP: [f64; 4] = [
    -std::f64::consts::FRAC_1_SQRT_2,
    0.0,
    0.0,
    std::f64::consts::FRAC_1_SQRT_2,
];

/// The Ant definition with DiffRL's parameters.
pub fn ant_def() -> diff_core::Result<Locomotion> {
    let model = load_mjcf(robot_path("ant.xml"), &MjcfOptions::diffrl_ant())?;
    let joint_names: Vec<String> = model.joint_names[1..].to_vec();
    let mut art = model.build()?;
    for (l, &t) in art.links[1..].iter_mut().zip(REST_POSE.iter()) {
        l.joint.target = t;
    }
    let actuators = (6..14).map(|d| (d, ACTION_STRENGTH)).collect();
    Locomotion::new(LocomotionConfig {
        name: "ant".into(),
        art,
        params: SimParams {
            dt: 1.0 / 60.0,
            substeps: 16,
            mm_freq: 16,
        },
        episode_length: EPISODE_LENGTH,
        start_pos: [0.0, 0.75, 0.0],
        start_rot: Z_UP_TO_Y_UP,
        rest_pose: REST_POSE.to_vec(),
        actuators,
        target: [10000.0, 0.0, 0.0],
        termination_height: TERMINATION_HEIGHT,
        height_reward: HeightReward::Linear,
        up_weight: 0.1,
        heading_weight: 1.0,
        action_penalty: 0.0,
        ang_vel_penalty: 0.0,
        noise_pos: 0.1,
        noise_rot: PI / 24.0,
        noise_joint: 0.2,
        noise_vel: 0.25,
        joint_vel_obs_scale: 0.1,
        joint_names,
        brax: None,
    })
}

impl RigidEnv<Locomotion> {
    /// The Ant task (panics only if the shipped model file is broken, which the loader
    /// tests rule out).
    pub fn ant() -> Self {
        RigidEnv::from_def(ant_def().expect("datasets/robots/ant.xml loads"))
    }
}

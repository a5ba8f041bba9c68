//! Humanoid (`envs/humanoid.py`, `envs/assets/humanoid.xml`; tasks.md §2.6).
//!
//! - Model: `datasets/robots/humanoid.xml` (dm_control-style humanoid, two capsules per
//!   foot) with dflex's conventions: free torso + 21 hinges (multi-joint bodies become
//!   chains of massless links, trap 4); q 28, q̇ 27; 35 contact points; contact ke 2e4,
//!   kd 5e3, kf 1e3, mu 0.75; stiffness/armature from the XML (defaults 5 / 0.007), damping
//!   from the XML (default 0.1); limits 1e3/10.
//! - Simulation: dt 1/60, 48 substeps, mass matrix rebuilt once per step.
//! - Action: 21-D, τ = 0.35·strength·clip(a) with the per-DOF strengths below (trap 17).
//! - Start: torso at (0, 1.35, 0) rotated −π/2 about x; joints 0.
//! - Observation (76), termination (h < 0.74), episode 1000: [`super::locomotion`].
//!   Reward: forward speed + 0.1·up + heading + height term − 0.002·Σa², height term
//!   `d = clip(h − 0.84, −1, 0.1)`, `−200 d²` below 0, `10 d` above.
//! - Reset noise as Ant. The NaN/|x| > 1e6 guard (reset, reward 0) is the batch driver's
//!   (`diff_core::BatchEnv`, trap 23).
//!
//! Deviations from DiffRL, and a disagreement with tasks.md: our model has 9 massless chain
//! links of 22 (abdomen_z, hip_x and hip_z on each side, ankle_y on each side, shoulder1 on
//! each side), where tasks.md §8 reports 7 from dflex. With one link per joint and geoms on
//! the last link of each body (trap 4), 13 of the 22 links carry geoms, so 9 follows from
//! the XML's body structure; the torso link's 8.907 kg and the 35 contact points match
//! dflex. The reset noise comes from our seeded ChaCha stream (same distributions).

use super::ant::Z_UP_TO_Y_UP;
use super::locomotion::{HeightReward, Locomotion, LocomotionConfig};
use crate::batch::RigidEnv;
use crate::dynamics::SimParams;
use crate::loader::{load_mjcf, robot_path, MjcfOptions};
use std::f64::consts::PI;

/// Per-DOF motor strengths, in XML joint order.
pub const STRENGTHS: [f64; 21] = [
    200.0, 200.0, 200.0, 200.0, 200.0, 600.0, 400.0, 100.0, 100.0, 200.0, 200.0, 600.0, 400.0,
    100.0, 100.0, 100.0, 100.0, 200.0, 100.0, 100.0, 200.0,
];
/// Global motor scale.
pub const MOTOR_SCALE: f64 = 0.35;
pub const TERMINATION_HEIGHT: f64 = 0.74;
pub const EPISODE_LENGTH: usize = 1000;

/// The Humanoid task as a batched [`diff_core::Task`] (same type as [`super::Ant`]).
pub type Humanoid = RigidEnv<Locomotion>;

/// The Humanoid definition with DiffRL's parameters.
pub fn humanoid_def() -> diff_core::Result<Locomotion> {
    let model = load_mjcf(robot_path("humanoid.xml"), &MjcfOptions::diffrl_humanoid())?;
    let joint_names: Vec<String> = model.joint_names[1..].to_vec();
    let art = model.build()?;
    let actuators = STRENGTHS
        .iter()
        .enumerate()
        .map(|(k, s)| (6 + k, MOTOR_SCALE * s))
        .collect();
    Locomotion::new(LocomotionConfig {
        name: "humanoid".into(),
        art,
        params: SimParams {
            dt: 1.0 / 60.0,
            substeps: 48,
            mm_freq: 48,
        },
        episode_length: EPISODE_LENGTH,
        start_pos: [0.0, 1.35, 0.0],
        start_rot: Z_UP_TO_Y_UP,
        rest_pose: vec![0.0; 21],
        actuators,
        target: [200.0, 0.0, 0.0],
        termination_height: TERMINATION_HEIGHT,
        height_reward: HeightReward::Clipped {
            tolerance: 0.1,
            scale: 10.0,
        },
        up_weight: 0.1,
        heading_weight: 1.0,
        action_penalty: -0.002,
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
    /// The Humanoid task.
    pub fn humanoid() -> Self {
        RigidEnv::from_def(humanoid_def().expect("datasets/robots/humanoid.xml loads"))
    }
}

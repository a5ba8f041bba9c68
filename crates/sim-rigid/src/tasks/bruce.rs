//! Bruce: Westwood Robotics' BRUCE humanoid walking forward (tasks.md §6.3, a proposal:
//! MB-MIX's own Bruce environment is not public). It mirrors DiffRL's Humanoid
//! ([`super::locomotion`]) on the official URDF's kinematics and masses.
//!
//! - Model: `datasets/robots/bruce.urdf` with its `<inertial>` masses and inertias (our
//!   loader keeps them; dflex's would not, fidelity trap 3), a free base and the 10 leg
//!   joints (hip yaw/roll/pitch, knee, ankle per side); the 6 arm joints are welded to
//!   the base unless `arms` is set. Exact inertia rotation (not dflex's element-wise one).
//! - Contact: four points per foot, the sole corners of og_bruce's foot box (toe/heel ×
//!   inner/outer edge), not the box's eight corners; penalty contact as dflex's with
//!   parameters scaled to a 4.6 kg robot (below).
//! - Control: τ = τ_max·clip(a), τ_max = 10.5 N·m (Koala BEAR leg actuators).
//! - Observation (43 legs only, 55 with arms) and reward as Humanoid: forward speed +
//!   0.1·up + heading + height term − 0.002·Σa², with the height term and termination
//!   height scaled from Humanoid's (0.74 of a 1.35 m start) to Bruce's start height.
//! - Episode 1000 steps at dt 1/60 with 32 substeps.
//!
//! Everything is a field of [`BruceConfig`] (documented defaults); the registry uses the
//! defaults. Deviations from DiffRL's Humanoid, all deliberate: exact inertias, URDF
//! masses, explicit foot contact points, the scaled contact, joint and reward constants.

use super::ant::Z_UP_TO_Y_UP;
use super::locomotion::{HeightReward, Locomotion, LocomotionConfig};
use crate::batch::RigidEnv;
use crate::dynamics::SimParams;
use crate::loader::{load_urdf, robot_path, segment_frame, DroppedJoints, UrdfOptions};
use crate::model::{
    ContactMaterial, ContactPoint, EffortSaturation, Geometry, InertiaTransform, Shape,
};
use crate::spatial::Transform;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// The leg joints in DOF order.
pub const LEG_JOINTS: [&str; 10] = [
    "hip_yaw_r",
    "hip_roll_r",
    "hip_pitch_r",
    "knee_pitch_r",
    "ankle_pitch_r",
    "hip_yaw_l",
    "hip_roll_l",
    "hip_pitch_l",
    "knee_pitch_l",
    "ankle_pitch_l",
];

/// Radius of the drawn limbs (m) and height of the drawn torso above the base origin (m):
/// rendering only.
const LIMB_RADIUS: f64 = 0.02;
const TORSO_HEIGHT: f64 = 0.15;

/// The Bruce task's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BruceConfig {
    /// Task name (`bruce`; the presets below name their own).
    pub name: String,
    /// Keep the 6 arm joints (actuated like the legs); default false (welded to the base).
    pub arms: bool,
    /// Torque per unit action, N·m (10.5, the Koala BEAR actuators' limit; in
    /// [`Self::position_targets`] the PD gain times the target range).
    pub torque_limit: f64,
    /// Substeps per 1/60 s control step (32).
    pub substeps: usize,
    /// Substeps between mass-matrix rebuilds (dflex `MM_caching_frequency`). Default 1,
    /// every substep: a deliberate deviation from DiffRL's Humanoid, which rebuilds once per
    /// control step (48). With the mass matrix held for a whole step (32 here), SHAC
    /// learned on `bruce-pos` to swim through the air — the stale matrix does not conserve
    /// momentum while the legs swing fast — and the same policy falls at once when the
    /// matrix is rebuilt every 1 or 8 substeps (returns 3474 → 34 and 44). Costs 1.5× per
    /// step.
    pub mass_matrix_every: usize,
    /// Motor torque limit, N·m, applied to the sum of the policy's torque and the PD terms
    /// (`Joint::effort_limit`; ∞ = none). `bruce` and `bruce-pd` leave it off (their
    /// action alone is already bounded by `torque_limit`); `bruce-pos` clamps at 10.5.
    pub effort_limit: f64,
    /// Shape of that saturation: `clamp` or a smooth `tanh` (`bruce-pos`). With the hard
    /// clamp SHAC did not learn to stay up on `bruce-pos` (evaluation return 54 after 1580
    /// epochs, below zero action's 373): with the exploration noise most motors sat on
    /// the clamp, where the actor's gradient through them is zero.
    pub effort_saturation: EffortSaturation,
    /// Joint stiffness toward the rest pose, N·m/rad (dflex `joint_target_ke`, as DiffRL's
    /// Humanoid has): the hardware runs its joints under a position-mode PD loop (kp 60,
    /// kd 2, `BRUCE_macros.py`); a passive spring stands in for it and the policy's torques
    /// act on top. Default 0 (pure torque control).
    pub stiffness: f64,
    /// Joint damping N·m·s/rad (0.1), armature kg·m² (0.011, og_bruce), limit stiffness
    /// (100) and the always-on limit damping of dflex (0.1, fidelity trap 6).
    pub damping: f64,
    pub armature: f64,
    pub limit_ke: f64,
    pub limit_kd: f64,
    /// Foot contact (ke 2e3, kd 1e3, kf 1e2, mu 1.0): Humanoid's 2e4 / 5e3 / 1e3 / 0.75
    /// scaled to a robot of a tenth of its mass, with og_bruce's higher foot friction.
    pub contact: ContactMaterial,
    /// Termination height as a fraction of the start height (0.55, Humanoid's 0.74/1.35).
    pub termination_fraction: f64,
    /// Height-term tolerance (0.05 m) and positive-side scale (10).
    pub height_tolerance: f64,
    pub height_scale: f64,
    /// Action penalty coefficient (−0.002).
    pub action_penalty: f64,
    /// Coefficient of the torso's squared roll and pitch rates (default 0, as Humanoid;
    /// legged_gym's `ang_vel_xy` weight is −0.05). Tried against the glide of
    /// [`Self::position_targets`]: at −0.05 without the motor clamp SHAC still glided
    /// (3.2 m/s, roll/pitch rate 2.2 rad/s rms); with the clamp it learned to fall
    /// early (evaluation return 50 → 5 over 600 epochs), the penalty outweighing the
    /// 1.6 per step for staying up.
    pub ang_vel_penalty: f64,
    /// Target offset from the start (1000, 0, 0).
    pub target: [f64; 3],
    /// Reset noise: position ± (0.02 m), rotation ± (π/24), joints ± (0.1), q̇ ± (0.1).
    pub noise_pos: f64,
    pub noise_rot: f64,
    pub noise_joint: f64,
    pub noise_vel: f64,
    pub episode_length: usize,
}

impl Default for BruceConfig {
    fn default() -> Self {
        BruceConfig {
            name: "bruce".into(),
            arms: false,
            torque_limit: 10.5,
            substeps: 32,
            mass_matrix_every: 1,
            effort_limit: f64::INFINITY,
            effort_saturation: EffortSaturation::Clamp,
            stiffness: 0.0,
            damping: 0.1,
            armature: 0.011,
            limit_ke: 100.0,
            limit_kd: 0.1,
            contact: ContactMaterial {
                ke: 2e3,
                kd: 1e3,
                kf: 1e2,
                mu: 1.0,
            },
            termination_fraction: 0.55,
            height_tolerance: 0.05,
            height_scale: 10.0,
            action_penalty: -0.002,
            ang_vel_penalty: 0.0,
            target: [1000.0, 0.0, 0.0],
            noise_pos: 0.02,
            noise_rot: PI / 24.0,
            noise_joint: 0.1,
            noise_vel: 0.1,
            episode_length: 1000,
        }
    }
}

impl BruceConfig {
    /// `bruce-pd`: the joints under a PD spring (kp 100 N·m/rad, kd 2 N·m·s/rad) toward the
    /// straight-leg pose, standing in for the hardware's position loop (kp 60, kd 2 in
    /// `BRUCE_macros.py`; in our model kp 60 does not hold the straight-leg stance, kp 100
    /// does), with the policy's torques (±10.5 N·m) on top. Zero action stands still.
    pub fn position_loop() -> Self {
        BruceConfig {
            name: "bruce-pd".into(),
            stiffness: 100.0,
            damping: 2.0,
            ..BruceConfig::default()
        }
    }

    /// `bruce-pos`: position control, the way the hardware is driven. The action sets each
    /// joint's target angle, rest + 0.5 rad · clip(a), tracked by the PD loop kp 100, kd 2
    /// of [`Self::position_loop`], evaluated every substep. With the engine's joint spring
    /// ke·(target₀ − q) toward the rest pose, a target offset δ is the extra torque ke·δ, so
    /// the actuator gain is kp · 0.5 rad = 50 N·m per unit action.
    /// The motor torque, PD and command together, saturates smoothly (10.5·tanh(τ/10.5))
    /// at the actuators' 10.5 N·m (`effort_limit`, `effort_saturation`): without the clamp the loop delivered up to 50 N·m and SHAC used it
    /// to vibrate the feet into a 3–8 m/s glide. In `bruce-pd` the same loop only moves
    /// the targets by ±10.5/100 rad = ±6°, too little for a step.
    pub fn position_targets() -> Self {
        BruceConfig {
            name: "bruce-pos".into(),
            torque_limit: 100.0 * 0.5,
            effort_limit: 10.5,
            effort_saturation: EffortSaturation::Tanh,
            ..BruceConfig::position_loop()
        }
    }
}

/// The Bruce task as a batched [`diff_core::Task`].
pub type Bruce = RigidEnv<Locomotion>;

/// The Bruce definition for `cfg`.
pub fn bruce_def(cfg: &BruceConfig) -> diff_core::Result<Locomotion> {
    let mut opts = UrdfOptions {
        floating: true,
        armature: cfg.armature,
        limit_ke: cfg.limit_ke,
        limit_kd: cfg.limit_kd,
        contact: cfg.contact,
        inertia_transform: InertiaTransform::Exact,
        ..UrdfOptions::default()
    };
    if !cfg.arms {
        opts.keep_joints = Some(LEG_JOINTS.iter().map(|s| s.to_string()).collect());
        opts.dropped_joints = DroppedJoints::Merge;
    }
    let mut model = load_urdf(robot_path("bruce.urdf"), &opts)?;
    let joint_names: Vec<String> = model.joint_names[1..].to_vec();
    // four sole points per foot: the corners of each foot box on its +x (sole) face
    let mut soles = Vec::new();
    for ls in model.builder.shapes() {
        if let Geometry::Box {
            half_extents: [hx, hy, hz],
        } = ls.shape.geometry
        {
            for (sy, sz) in [(-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)] {
                soles.push(ContactPoint {
                    link: ls.link,
                    point: ls.shape.pose.point([hx, sy * hy, sz * hz]),
                    thickness: 0.0,
                    material: cfg.contact,
                });
            }
        }
    }
    if soles.len() != 8 {
        return Err(diff_core::Error::InvalidParameter {
            name: "bruce.urdf".into(),
            reason: format!("expected one foot box per foot, found {}", soles.len() / 4),
        });
    }
    model.builder.set_shape_contacts(false);
    for c in soles {
        model.builder.add_contact_point(c)?;
    }
    // Limbs for the renderer (the URDF's meshes are not loaded): a massless, contactless
    // capsule from each link's origin to each child joint, and a torso above the base.
    let limbs: Vec<(usize, [f64; 3])> = {
        let links = model.builder.links();
        let mut v: Vec<(usize, [f64; 3])> = links
            .iter()
            .filter_map(|l| l.parent.map(|p| (p, l.joint.x_pj.p)))
            .collect();
        v.push((0, [0.0, 0.0, TORSO_HEIGHT]));
        v
    };
    for (link, to) in limbs {
        if let Some((half_width, center, r)) = segment_frame([0.0; 3], to) {
            let pose = Transform { p: center, r };
            let capsule = Geometry::Capsule {
                radius: LIMB_RADIUS,
                half_width,
            };
            model.builder.add_shape(link, Shape::new(capsule, pose))?;
        }
    }
    let mut art = model.build()?;
    for l in art.links.iter_mut().skip(1) {
        l.joint.target_kd = cfg.damping;
        l.joint.target_ke = cfg.stiffness;
        l.joint.effort_limit = cfg.effort_limit;
        l.joint.effort_saturation = cfg.effort_saturation;
    }
    // start height: the soles just touching the ground with the base rotated upright
    let nj = art.n_q - 7;
    let mut q0 = vec![0.0; art.n_q];
    q0[3..7].copy_from_slice(&Z_UP_TO_Y_UP);
    let xs = art.link_transforms(&q0);
    let lowest = art
        .contacts
        .iter()
        .map(|c| xs[c.link].point(c.point)[1])
        .fold(f64::INFINITY, f64::min);
    let h0 = -lowest + 1e-3;
    let n_act = nj;
    Locomotion::new(LocomotionConfig {
        name: cfg.name.clone(),
        art,
        params: SimParams {
            dt: 1.0 / 60.0,
            substeps: cfg.substeps,
            mm_freq: cfg.mass_matrix_every,
        },
        episode_length: cfg.episode_length,
        start_pos: [0.0, h0, 0.0],
        start_rot: Z_UP_TO_Y_UP,
        rest_pose: vec![0.0; nj],
        actuators: (0..n_act).map(|k| (6 + k, cfg.torque_limit)).collect(),
        target: cfg.target,
        termination_height: cfg.termination_fraction * h0,
        height_reward: HeightReward::Clipped {
            tolerance: cfg.height_tolerance,
            scale: cfg.height_scale,
        },
        up_weight: 0.1,
        heading_weight: 1.0,
        action_penalty: cfg.action_penalty,
        ang_vel_penalty: cfg.ang_vel_penalty,
        noise_pos: cfg.noise_pos,
        noise_rot: cfg.noise_rot,
        noise_joint: cfg.noise_joint,
        noise_vel: cfg.noise_vel,
        joint_vel_obs_scale: 0.1,
        joint_names,
        brax: None,
    })
}

impl RigidEnv<Locomotion> {
    /// The Bruce task with the default [`BruceConfig`] (pure torque control).
    pub fn bruce() -> Self {
        Self::bruce_with(&BruceConfig::default())
    }

    /// The Bruce task with `cfg` (panics only if the shipped model file is broken, which
    /// the loader tests rule out).
    pub fn bruce_with(cfg: &BruceConfig) -> Self {
        RigidEnv::from_def(bruce_def(cfg).expect("datasets/robots/bruce.urdf loads"))
    }
}

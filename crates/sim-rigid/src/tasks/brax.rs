//! Brax-like tasks (tasks.md §5; `google/brax@0b96d05:brax/envs/{hopper, half_cheetah, ant,
//! reacher, humanoid}.py`): Brax's observations, rewards, termination, control timestep, gears and
//! reset noise, on **our** simulator.
//!
//! **What is not Brax.** The physics is ours: reduced-coordinate articulations with the
//! dflex spring-damper ground contact (tasks.md §1.5) and dflex's semi-implicit integrator
//! (§1.3), the same as the DiffRL tasks. We do **not** reimplement Brax's `generalized`
//! backend (MuJoCo-style soft constraints solved iteratively for contacts and joint
//! limits, CRBA mass matrix). Consequences, per task:
//! - contact: spring-damper with regularised Coulomb friction and the DiffRL contact
//!   material of each robot; every geom of the model touches the ground (Brax lets only
//!   the feet of ant and hopper collide), except for the humanoid, whose foot spheres
//!   alone touch it, as in Brax;
//! - joint limits: springs of stiffness `limit_ke` (1e3) with **no limit damping**
//!   (`limit_kd` = 0: dflex's always-on limit damping, fidelity trap 6, is a dflex quirk
//!   Brax does not have, and our model has no damping that acts only past a limit);
//! - the robot files are our DiffRL assets (`datasets/robots/*.xml`; the humanoid's is
//!   Brax's own model, `brax_humanoid.xml`), read with the exact
//!   inertia transform (trap 27: `exact` for Brax-like tasks), with Brax's joint
//!   armature/damping, densities and ranges set where they differ (per task below);
//! - timestep: the control step `dt` is Brax's `timestep × n_frames`; it is split into
//!   substeps of at most 1e-3 s (our stiff explicit contact needs them; DiffRL uses
//!   1/960 s), and the mass matrix is rebuilt once per Brax `timestep`;
//! - the forward reward uses the end-of-step velocity (ẋ of the root slide, or the torso
//!   origin's world x velocity `v − p × ω` for ant) where Brax uses the displacement over
//!   the step divided by `dt`;
//! - the action is clipped to [−1, 1] (Brax clips to the actuator's ctrlrange, also
//!   [−1, 1]) and the control cost uses the clipped action (Brax uses the raw one; the
//!   same for SHAC's tanh-squashed actions);
//! - reset noise comes from our seeded ChaCha stream, with Brax's distributions.
//!
//! The world is Y-up (dflex); Brax's is z-up. Observations are expressed in Brax's frame.
//!
//! | task | dt = substeps × h | obs / act / state | reward | termination |
//! |---|---|---|---|---|
//! | brax-hopper | 0.008 = 8 × 1e-3 | 11 / 3 / 12 | ẋ + 1 − 1e-3·Σa² | z ≤ 0.7, \|θ\| ≥ 0.2, \|q[2:]\|, \|q̇\| ≥ 100 |
//! | brax-halfcheetah | 0.05 = 50 × 1e-3 | 17 / 6 / 18 | ẋ − 0.1·Σa² | none |
//! | brax-ant | 0.05 = 50 × 1e-3 | 27 / 8 / 29 | v_x + 1 − 0.5·Σa² | z ∉ [0.2, 1.0] |
//! | brax-reacher | 0.02 = 20 × 1e-3 | 11 / 2 / 6 | −‖tip − target‖ − Σa² | none |
//! | brax-humanoid | 0.015 = 15 × 1e-3 | 244 / 17 / 64 | 1.25·ẋ_COM + 5 − 0.1·Σ(0.4a)² | z ∉ [1.0, 2.0] |
//!
//! `brax-humanoid` has Brax's full 244-D observation (`q[2:]`, `q̇`, the COM-based inertia
//! and velocity of its 11 bodies, the actuator forces); its own deviations (its asset
//! `datasets/robots/brax_humanoid.xml`, contact only at the feet, the previous action kept
//! in the state for the actuator forces) are listed at [`brax_humanoid_def`].
//!
//! Episode length 1000 (Brax's training wrapper) for all.

use super::locomotion::{BraxLocomotionTerms, HeightReward, Locomotion, LocomotionConfig};
use super::planar::{BraxHealthy, BraxPlanarTerms, Planar, PlanarConfig};
use super::{action_penalty, action_penalty_vjp, actuate, actuate_vjp};
use crate::batch::RigidTask;
use crate::dynamics::SimParams;
use crate::loader::{load_mjcf, robot_path, MjcfOptions};
use crate::model::{Articulation, ContactMaterial, ContactPoint, Geometry, InertiaTransform};
use crate::spatial::{axis_angle, Transform};
use diff_core::rng::uniform01;
use diff_core::{Real, SeededRng, TaskSpec};

/// Brax training wrapper's episode length.
pub const EPISODE_LENGTH: usize = 1000;

/// Hopper's gear (Brax `hopper.xml`).
pub const HOPPER_GEAR: f64 = 200.0;
/// HalfCheetah's gears (bthigh, bshin, bfoot, fthigh, fshin, ffoot).
pub const CHEETAH_GEARS: [f64; 6] = [120.0, 90.0, 60.0, 120.0, 60.0, 30.0];
/// Ant's gear.
pub const ANT_GEAR: f64 = 150.0;
/// Reacher's gear.
pub const REACHER_GEAR: f64 = 200.0;

/// `SimParams` for a Brax control step of `n_frames × timestep` split into substeps of
/// `substep` seconds, with the mass matrix rebuilt every Brax timestep.
fn brax_params(timestep: f64, n_frames: usize, per_timestep: usize) -> SimParams {
    SimParams {
        dt: timestep * n_frames as f64,
        substeps: n_frames * per_timestep,
        mm_freq: per_timestep,
    }
}

/// The height of link `link`'s origin (world y) with all coordinates 0.
fn rest_height(art: &Articulation, link: usize) -> f64 {
    art.link_transforms(&vec![0.0; art.n_q])[link].p[1]
}

/// Sets the limits of the named joint (radians).
fn set_range(art: &mut Articulation, name: &str, lo: f64, hi: f64) -> diff_core::Result<()> {
    let l = art
        .links
        .iter_mut()
        .find(|l| l.joint.name == name)
        .ok_or_else(|| diff_core::Error::InvalidParameter {
            name: "brax task".into(),
            reason: format!("no joint `{name}` in the model"),
        })?;
    (l.joint.limit_lower, l.joint.limit_upper) = (lo, hi);
    Ok(())
}

/// Brax hopper (`hopper.py`, `assets/hopper.xml`): our DiffRL hopper model (same geometry
/// as Brax's; masses from the capsules at ρ 1000 as MuJoCo's default density), damping 1
/// and armature 1 on the leg hinges, 0 on the root joints (Brax's XML), contact ke 2e4,
/// kd 1e3, kf 1e3, mu 0.9. dt 0.002 × 4 = 0.008 (8 substeps of 1e-3 s). Action 3, gear
/// 200. Observation `[z_torso, q[2..], clip(q̇, ±10)]` (11), `z_torso` the torso origin's
/// height (1.25 at rootz = 0); reward `ẋ + 1 − 1e-3·Σa²`; terminated when
/// `z_torso ≤ 0.7`, `|θ_root| ≥ 0.2` or any `|q[2..]|`, `|q̇| ≥ 100`; reset noise
/// U(±5e-3) on every q and q̇.
pub fn brax_hopper_def() -> diff_core::Result<Planar> {
    let opts = MjcfOptions {
        damping: 1.0,
        armature: 1.0,
        load_armature: true,
        limit_kd: 0.0,
        inertia_transform: InertiaTransform::Exact,
        ..MjcfOptions::diffrl_hopper()
    };
    let model = load_mjcf(robot_path("hopper.xml"), &opts)?;
    let joint_names = model.joint_names.clone();
    let art = model.build()?;
    let torso_height = rest_height(&art, 2);
    Planar::new(PlanarConfig {
        name: "brax-hopper".into(),
        art,
        params: brax_params(0.002, 4, 2),
        episode_length: EPISODE_LENGTH,
        start_xz: [0.0, 0.0],
        actuators: (3..6).map(|d| (d, HOPPER_GEAR)).collect(),
        action_penalty: -1e-3,
        hopper: None,
        brax: Some(BraxPlanarTerms {
            healthy_reward: 1.0,
            height_offset: torso_height,
            obs_vel_clip: Some(10.0),
            healthy: Some(BraxHealthy {
                z_min: 0.7,
                angle_max: 0.2,
                state_max: 100.0,
            }),
            gaussian_vel_noise: false,
        }),
        noise_root: 5e-3,
        noise_angle: 5e-3,
        noise_joint: 5e-3,
        noise_vel: 5e-3,
        joint_names,
    })
}

/// Brax halfcheetah (`half_cheetah.py`, `assets/half_cheetah.xml`): our DiffRL cheetah
/// model with the per-joint stiffness/damping of the XML (as Brax), armature 0.1, Brax's
/// ranges (fthigh [−1, 0.7], fshin [−1.2, 0.87], ffoot [−0.5, 0.5]; the others agree), the
/// geom density scaled so that the total mass is 14 kg (MuJoCo's `settotalmass`), contact
/// ke 2e4, kd 1e3, kf 1e3, mu 1.0. dt 0.01 × 5 = 0.05 (50 substeps of 1e-3 s). Action 6,
/// gears 120/90/60/120/60/30. Observation `[q[1..], q̇]` (17) with `obs[0]` = rootz
/// measured from Brax's start height (torso at 0.7); reward `ẋ − 0.1·Σa²`; no
/// termination; reset noise q U(±0.1), q̇ 0.1·N(0, 1).
pub fn brax_cheetah_def() -> diff_core::Result<Planar> {
    let mut opts = MjcfOptions {
        limit_kd: 0.0,
        inertia_transform: InertiaTransform::Exact,
        ..MjcfOptions::diffrl_cheetah()
    };
    let path = robot_path("half_cheetah.xml");
    let unit = load_mjcf(&path, &opts)?.build()?;
    let total: f64 = unit.links.iter().map(|l| l.mass).sum();
    opts.density *= 14.0 / total;
    let model = load_mjcf(&path, &opts)?;
    let joint_names = model.joint_names.clone();
    let mut art = model.build()?;
    set_range(&mut art, "fthigh", -1.0, 0.7)?;
    set_range(&mut art, "fshin", -1.2, 0.87)?;
    set_range(&mut art, "ffoot", -0.5, 0.5)?;
    // Brax's torso starts at 0.7 with rootz = 0
    let offset = rest_height(&art, 2) - 0.7;
    Planar::new(PlanarConfig {
        name: "brax-halfcheetah".into(),
        art,
        params: brax_params(0.01, 5, 10),
        episode_length: EPISODE_LENGTH,
        start_xz: [0.0, -offset],
        actuators: (3..9).zip(CHEETAH_GEARS).collect(),
        action_penalty: -0.1,
        hopper: None,
        brax: Some(BraxPlanarTerms {
            healthy_reward: 0.0,
            height_offset: offset,
            obs_vel_clip: None,
            healthy: None,
            gaussian_vel_noise: true,
        }),
        noise_root: 0.1,
        noise_angle: 0.1,
        noise_joint: 0.1,
        noise_vel: 0.1,
        joint_names,
    })
}

/// Brax ant (`ant.py`, `assets/ant.xml`): our DiffRL ant model at Brax's density 5
/// (0.9 kg in all), armature 1 and damping 1 on the hinges, Brax's ranges (hips ±30°,
/// ankles 30°–70° in magnitude), contact ke 1e3, kd 1e2, kf 30, mu 1.0 (inferred: the
/// DiffRL material 4e4/1e4/3e3 would make the explicit friction and damping forces
/// unstable at 1e-3 s on this 200× lighter body: explicit damping needs
/// substep·Σkd/m < 2, and with kd 1e3 on four feet the 0.9 kg root gives 4.4; with kd
/// 1e2 it is 0.44; at zero action it sags from 0.55 to about 0.45 over 60 steps, its
/// hinges having no stiffness). The reset lifts the noisy start clear of the ground
/// (`Locomotion`'s Brax reset), since Brax's U(±0.1) on z and on the quaternion can sink
/// a foot 10 cm deep, which Brax's soft constraints resolve gently and our springs
/// would answer with a launch (measured: 2.6 m high from rest). dt 0.01 × 5 = 0.05 (50 substeps of 1e-3 s). Start:
/// torso at height 0.55, joints [0, 1, 0, −1, 0, −1, 0, 1] (Brax's `init_qpos`). Action 8
/// in Brax's actuator order (hip_4, ankle_4, hip_1, ankle_1, hip_2, ankle_2, hip_3,
/// ankle_3), gear 150. Observation (27), reward `v_x + 1 − 0.5·Σa²` (contact cost 0),
/// termination `z ∉ [0.2, 1.0]`: [`super::locomotion`]'s Brax variant. Reset noise: q
/// U(±0.1) (quaternion components included, then normalised), q̇ 0.1·N(0, 1).
pub fn brax_ant_def() -> diff_core::Result<Locomotion> {
    let opts = MjcfOptions {
        density: 5.0,
        armature: 1.0,
        damping: 1.0,
        limit_kd: 0.0,
        contact: ContactMaterial {
            ke: 1e3,
            kd: 1e2,
            kf: 30.0,
            mu: 1.0,
        },
        inertia_transform: InertiaTransform::Exact,
        // the state's position is the torso's: without this the file's body pos
        // (0, 0, 0.75) stays in the root joint's frame, a sideways offset in our Y-up
        // world, and `v − p × ω` (the reward's v_x) would be off by ω × that offset
        root_x_pj: Some(crate::loader::identity_transform()),
        ..MjcfOptions::diffrl_ant()
    };
    let model = load_mjcf(robot_path("ant.xml"), &opts)?;
    let joint_names: Vec<String> = model.joint_names[1..].to_vec();
    let mut art = model.build()?;
    let deg = std::f64::consts::PI / 180.0;
    for k in 1..=4 {
        set_range(&mut art, &format!("hip_{k}"), -30.0 * deg, 30.0 * deg)?;
        let (lo, hi) = if k == 1 || k == 4 {
            (30.0, 70.0)
        } else {
            (-70.0, -30.0)
        };
        set_range(&mut art, &format!("ankle_{k}"), lo * deg, hi * deg)?;
    }
    let rest = vec![0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0];
    for (l, &t) in art.links[1..].iter_mut().zip(rest.iter()) {
        l.joint.target = t;
    }
    // Brax's actuator order: hip_4, ankle_4, hip_1, ankle_1, …, hip_3, ankle_3
    let actuators = [12, 13, 6, 7, 8, 9, 10, 11]
        .iter()
        .map(|&d| (d, ANT_GEAR))
        .collect();
    Locomotion::new(LocomotionConfig {
        name: "brax-ant".into(),
        art,
        params: brax_params(0.01, 5, 10),
        episode_length: EPISODE_LENGTH,
        start_pos: [0.0, 0.55, 0.0],
        start_rot: super::ant::Z_UP_TO_Y_UP,
        rest_pose: rest,
        actuators,
        target: [0.0; 3],
        termination_height: 0.2,
        height_reward: HeightReward::Linear,
        up_weight: 0.0,
        heading_weight: 0.0,
        action_penalty: -0.5,
        ang_vel_penalty: 0.0,
        noise_pos: 0.1,
        noise_rot: 0.1,
        noise_joint: 0.1,
        noise_vel: 0.1,
        joint_vel_obs_scale: 1.0,
        joint_names,
        brax: Some(BraxLocomotionTerms {
            healthy_reward: 1.0,
            healthy_z: [0.2, 1.0],
            forward_weight: 1.0,
            body_terms: false,
            actuator_obs: false,
            uniform_vel_noise: false,
        }),
    })
}

/// Humanoid's actuators in Brax's order (`assets/humanoid.xml` `<actuator>`): joint, gear.
pub const HUMANOID_ACTUATORS: [(&str, f64); 17] = [
    ("abdomen_y", 100.0),
    ("abdomen_z", 100.0),
    ("abdomen_x", 100.0),
    ("right_hip_x", 100.0),
    ("right_hip_z", 100.0),
    ("right_hip_y", 300.0),
    ("right_knee", 200.0),
    ("left_hip_x", 100.0),
    ("left_hip_z", 100.0),
    ("left_hip_y", 300.0),
    ("left_knee", 200.0),
    ("right_shoulder1", 25.0),
    ("right_shoulder2", 25.0),
    ("right_elbow", 25.0),
    ("left_shoulder1", 25.0),
    ("left_shoulder2", 25.0),
    ("left_elbow", 25.0),
];
/// Humanoid's control range: the action in [−1, 1] maps to ±0.4.
pub const HUMANOID_CTRL: f64 = 0.4;
/// Humanoid's foot spheres (fused into the shins, as Brax does): radius.
pub const HUMANOID_FOOT_RADIUS: f64 = 0.075;

/// Brax humanoid (`humanoid.py`, `assets/humanoid.xml`) on `datasets/robots/
/// brax_humanoid.xml`, Brax's model (11 bodies: the feet fused into the shins; 17 hinges
/// with the file's ranges, armature, damping and stiffness; masses from the geoms at
/// ρ 1000, MuJoCo's `inertiafromgeom`). Only the two foot spheres touch the ground (Brax's
/// contype/conaffinity), with contact ke 2e4, kd 5e3, kf 1e3 (DiffRL's humanoid material)
/// and mu 1.0 (Brax's floor friction). dt 0.003 × 5 = 0.015 (15 substeps of 1e-3 s, the
/// mass matrix rebuilt every 3). Start: torso at height 1.4, identity orientation, joints 0
/// (Brax's `init_q`; the knees start 2° past their upper limit, as in Brax).
///
/// Action 17 in Brax's actuator order, `τ = gear·0.4·clip(a)` (Brax maps [−1, 1] to the
/// ctrlrange ±0.4). Observation (290): [`super::locomotion`]'s Brax variant with its body
/// terms: `[z, quat (w, x, y, z), q_j (17), v (3), ω_local (3), q̇_j (17)]` (45 = Brax's
/// `q[2:]`, `q̇`), every body's COM-based inertia (11 × 10) and COM-based velocity
/// (11 × 6) ([`super::body_terms`]), and the actuator forces `qfrc_actuator` (23: zero on
/// the root DOFs, `gear·0.4·clip(a_prev)` on the hinges; the state keeps the previous
/// clipped action for it). Reward `1.25·ẋ_COM + 5 − 0.1·Σ(0.4·a)²` with `ẋ_COM` the
/// whole-body COM's end-of-step x velocity; termination `z ∉ [1.0, 2.0]`; reset noise
/// U(±0.01) on every q (the quaternion's components, then normalised) and q̇.
///
/// Deviations from Brax besides the module's: the forward reward uses `ẋ_COM` at the end
/// of the step (Brax: the COM displacement over the step / dt); the control cost uses the
/// clipped action; Brax does not normalise the noisy quaternion; the body quats of lwaist
/// and pelvis (0.23°) are dropped (trap 2); joint stiffness is applied as a spring to 0
/// (MuJoCo's `qpos_spring`); the state carries the previous clipped action (17) so that
/// the observation can hold `qfrc_actuator`, which Brax computes from the action of the
/// step just taken (zero after a reset in both). Stability: with the DiffRL humanoid
/// material at 1e-3 s substeps, 300 steps of zero, uniform random and sinusoidal full
/// actions stay finite (joint rates ≤ 32 rad/s; the test
/// `tests/brax.rs::humanoid_rollouts_with_random_actions_stay_finite`); the body falls within
/// about 50 steps at zero action (no balance), which the healthy range `z ≥ 1` ends; below
/// it, only the feet meet the ground, as in Brax.
pub fn brax_humanoid_def() -> diff_core::Result<Locomotion> {
    let material = ContactMaterial {
        ke: 2e4,
        kd: 5e3,
        kf: 1e3,
        mu: 1.0,
    };
    let opts = MjcfOptions {
        damping: 1.0,
        armature: 1.0,
        stiffness: 0.0,
        load_stiffness: true,
        load_armature: true,
        limit_ke: 1e3,
        limit_kd: 0.0,
        contact: material,
        inertia_transform: InertiaTransform::Exact,
        // the state's position is the torso's (no offset from the file's body pos)
        root_x_pj: Some(crate::loader::identity_transform()),
        ..MjcfOptions::default()
    };
    let mut model = load_mjcf(robot_path("brax_humanoid.xml"), &opts)?;
    let bad = |reason: String| diff_core::Error::InvalidParameter {
        name: "brax-humanoid".into(),
        reason,
    };
    // only the feet touch the ground (Brax: contype 1 on the foot spheres alone)
    let feet: Vec<(usize, [f64; 3])> = model
        .builder
        .shapes()
        .iter()
        .filter(|s| {
            matches!(s.shape.geometry, Geometry::Sphere { radius } if radius == HUMANOID_FOOT_RADIUS)
        })
        .map(|s| (s.link, s.shape.pose.p))
        .collect();
    if feet.len() != 2 {
        return Err(bad(format!("{} foot spheres, want 2", feet.len())));
    }
    model.builder.set_shape_contacts(false);
    for (link, point) in feet {
        model.builder.add_contact_point(ContactPoint {
            link,
            point,
            thickness: HUMANOID_FOOT_RADIUS,
            material,
        })?;
    }
    let actuators = HUMANOID_ACTUATORS
        .iter()
        .map(|&(name, gear)| {
            model
                .qd_start(name)
                .map(|d| (d, gear * HUMANOID_CTRL))
                .ok_or_else(|| bad(format!("no joint `{name}`")))
        })
        .collect::<diff_core::Result<Vec<_>>>()?;
    let joint_names: Vec<String> = model.joint_names[1..].to_vec();
    let art = model.build()?;
    Locomotion::new(LocomotionConfig {
        name: "brax-humanoid".into(),
        art,
        params: brax_params(0.003, 5, 3),
        episode_length: EPISODE_LENGTH,
        start_pos: [0.0, 1.4, 0.0],
        start_rot: super::ant::Z_UP_TO_Y_UP,
        rest_pose: vec![0.0; 17],
        actuators,
        target: [0.0; 3],
        termination_height: 1.0,
        height_reward: HeightReward::Linear,
        up_weight: 0.0,
        heading_weight: 0.0,
        action_penalty: -0.1 * HUMANOID_CTRL * HUMANOID_CTRL,
        ang_vel_penalty: 0.0,
        noise_pos: 0.01,
        noise_rot: 0.01,
        noise_joint: 0.01,
        noise_vel: 0.01,
        joint_vel_obs_scale: 1.0,
        joint_names,
        brax: Some(BraxLocomotionTerms {
            healthy_reward: 5.0,
            healthy_z: [1.0, 2.0],
            forward_weight: 1.25,
            body_terms: true,
            actuator_obs: true,
            uniform_vel_noise: true,
        }),
    })
}

/// Link lengths from joint0 to joint1 and from joint1 to the fingertip.
pub const REACHER_LINKS: [f64; 2] = [0.1, 0.11];
/// Radius of the disc the target is drawn in.
pub const REACHER_TARGET_RADIUS: f64 = 0.2;

/// Brax reacher (`reacher.py`, `assets/reacher.xml`) on `datasets/robots/reacher.xml`: a
/// 2-link arm turning about the vertical (gravity does no work), no contact, armature 1
/// and damping 1, joint1 limited to ±3 rad.
///
/// **State** `[θ0, θ1, θ̇0, θ̇1, target_x, target_y]` (6): the target, two slide joints in
/// the original, is kept as two numbers carried over unchanged by every step.
/// **Observation** (11) `[cos θ0, cos θ1, sin θ0, sin θ1, target (2), tip velocity (x, y),
/// tip − target (x, y, 0)]` in the arm's plane (Brax's x, y), with
/// `tip = l0·(cos θ0, sin θ0) + l1·(cos(θ0 + θ1), sin(θ0 + θ1))`.
/// **Reward** `−‖tip − target‖ − Σa²` (the norm's gradient taken as 0 at 0, Brax's
/// `safe_norm`); no termination. dt 0.01 × 2 = 0.02 (20 substeps of 1e-3 s); action 2,
/// gear 200. **Reset**: θ U(±0.1), θ̇ U(±5e-3), target uniform in angle and in radius
/// `0.2·U` (Brax's draw).
pub struct Reacher {
    art: Articulation,
    params: SimParams,
    spec: TaskSpec,
    actuators: Vec<(usize, f64)>,
}

/// The Brax reacher definition.
pub fn brax_reacher_def() -> diff_core::Result<Reacher> {
    let opts = MjcfOptions {
        damping: 1.0,
        armature: 1.0,
        limit_ke: 1e3,
        limit_kd: 0.0,
        radians: true,
        ground: false,
        inertia_transform: InertiaTransform::Exact,
        root_x_pj: Some(Transform {
            p: [0.0, 0.01, 0.0],
            r: axis_angle([1.0, 0.0, 0.0], -std::f64::consts::FRAC_PI_2),
        }),
        ..MjcfOptions::default()
    };
    let art = load_mjcf(robot_path("reacher.xml"), &opts)?.build()?;
    let names = |v: &[&str]| -> Vec<String> { v.iter().map(|s| s.to_string()).collect() };
    let spec = TaskSpec {
        name: "brax-reacher".into(),
        state_dim: 6,
        obs_dim: 11,
        act_dim: 2,
        episode_length: EPISODE_LENGTH,
        dt: 0.02,
        state_names: names(&[
            "joint0",
            "joint1",
            "joint0_vel",
            "joint1_vel",
            "target_x",
            "target_y",
        ]),
        obs_names: names(&[
            "cos_joint0",
            "cos_joint1",
            "sin_joint0",
            "sin_joint1",
            "target_x",
            "target_y",
            "tip_vx",
            "tip_vy",
            "tip_minus_target_x",
            "tip_minus_target_y",
            "tip_minus_target_z",
        ]),
    };
    if art.n_q != 2 || art.n_qd != 2 {
        return Err(diff_core::Error::InvalidParameter {
            name: "brax-reacher".into(),
            reason: format!("reacher.xml must have 2 hinges, has {} DOFs", art.n_qd),
        });
    }
    Ok(Reacher {
        art,
        params: brax_params(0.01, 2, 10),
        spec,
        actuators: vec![(0, REACHER_GEAR), (1, REACHER_GEAR)],
    })
}

impl Reacher {
    /// Fingertip position and velocity in the arm's plane.
    pub fn tip<T: Real>(s: &[T]) -> ([T; 2], [T; 2]) {
        let [l0, l1] = REACHER_LINKS.map(T::cst);
        let (t0, t12) = (s[0], s[0] + s[1]);
        let (w0, w12) = (s[2], s[2] + s[3]);
        let (c0, s0, c12, s12) = (t0.cos(), t0.sin(), t12.cos(), t12.sin());
        (
            [l0 * c0 + l1 * c12, l0 * s0 + l1 * s12],
            [
                -(l0 * s0 * w0 + l1 * s12 * w12),
                l0 * c0 * w0 + l1 * c12 * w12,
            ],
        )
    }

    /// VJP of [`Reacher::tip`]: accumulates into `adj_s`.
    fn tip_vjp<T: Real>(s: &[T], ap: [T; 2], av: [T; 2], adj_s: &mut [T]) {
        let [l0, l1] = REACHER_LINKS.map(T::cst);
        let (t0, t12) = (s[0], s[0] + s[1]);
        let (w0, w12) = (s[2], s[2] + s[3]);
        let (c0, s0, c12, s12) = (t0.cos(), t0.sin(), t12.cos(), t12.sin());
        // ∂/∂θ0 (only link 0) and ∂/∂θ12 (link 1; θ12 = θ0 + θ1)
        let g0 = ap[0] * (-l0 * s0)
            + ap[1] * (l0 * c0)
            + av[0] * (-(l0 * c0 * w0))
            + av[1] * (-(l0 * s0 * w0));
        let g12 = ap[0] * (-l1 * s12)
            + ap[1] * (l1 * c12)
            + av[0] * (-(l1 * c12 * w12))
            + av[1] * (-(l1 * s12 * w12));
        let gw0 = av[0] * (-(l0 * s0)) + av[1] * (l0 * c0);
        let gw12 = av[0] * (-(l1 * s12)) + av[1] * (l1 * c12);
        adj_s[0] += g0 + g12;
        adj_s[1] += g12;
        adj_s[2] += gw0 + gw12;
        adj_s[3] += gw12;
    }
}

impl RigidTask for Reacher {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }
    fn articulation(&self) -> &Articulation {
        &self.art
    }
    fn sim_params(&self) -> &SimParams {
        &self.params
    }

    fn actuation<T: Real>(&self, a: &[T], act: &mut [T]) {
        actuate(&self.actuators, a, act);
    }

    fn actuation_vjp<T: Real>(&self, a: &[T], adj_act: &[T], adj_a: &mut [T]) {
        actuate_vjp(&self.actuators, a, adj_act, adj_a);
    }

    fn extra_step<T: Real>(&self, s: &[T], _a: &[T], extra_next: &mut [T]) {
        extra_next.copy_from_slice(&s[4..6]);
    }

    fn extra_step_state_vjp<T: Real>(&self, _s: &[T], adj_extra_next: &[T], adj_s: &mut [T]) {
        adj_s[4] += adj_extra_next[0];
        adj_s[5] += adj_extra_next[1];
    }

    fn observe<T: Real>(&self, s: &[T], obs: &mut [T]) {
        let (p, v) = Self::tip(s);
        obs[0] = s[0].cos();
        obs[1] = s[1].cos();
        obs[2] = s[0].sin();
        obs[3] = s[1].sin();
        obs[4] = s[4];
        obs[5] = s[5];
        obs[6] = v[0];
        obs[7] = v[1];
        obs[8] = p[0] - s[4];
        obs[9] = p[1] - s[5];
        obs[10] = T::zero();
    }

    fn observe_vjp<T: Real>(&self, s: &[T], ao: &[T], adj_s: &mut [T]) {
        adj_s[0] += ao[2] * s[0].cos() - ao[0] * s[0].sin();
        adj_s[1] += ao[3] * s[1].cos() - ao[1] * s[1].sin();
        adj_s[4] += ao[4] - ao[8];
        adj_s[5] += ao[5] - ao[9];
        Self::tip_vjp(s, [ao[8], ao[9]], [ao[6], ao[7]], adj_s);
    }

    fn reward<T: Real>(&self, s: &[T], a: &[T]) -> T {
        let (p, _) = Self::tip(s);
        let (dx, dy) = (p[0] - s[4], p[1] - s[5]);
        -safe_norm(dx, dy) + action_penalty(-1.0, a)
    }

    fn reward_vjp<T: Real>(&self, s: &[T], a: &[T], g: T, adj_s: &mut [T], adj_a: &mut [T]) {
        let (p, _) = Self::tip(s);
        let (dx, dy) = (p[0] - s[4], p[1] - s[5]);
        let n = safe_norm(dx, dy);
        if n.re() > 0.0 {
            let (gx, gy) = (-g * dx / n, -g * dy / n);
            adj_s[4] -= gx;
            adj_s[5] -= gy;
            Self::tip_vjp(s, [gx, gy], [T::zero(); 2], adj_s);
        }
        action_penalty_vjp(-1.0, a, g, adj_a);
    }

    fn terminated(&self, _s: &[f32]) -> bool {
        false
    }

    fn reset(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]) {
        s.iter_mut().for_each(|x| *x = 0.0);
        if !stochastic {
            return;
        }
        let u = |rng: &mut SeededRng, amp: f64| amp * (uniform01(rng) - 0.5) * 2.0;
        let mut x = [0.0f64; 6];
        x[0] = u(rng, 0.1);
        x[1] = u(rng, 0.1);
        x[2] = u(rng, 5e-3);
        x[3] = u(rng, 5e-3);
        let dist = REACHER_TARGET_RADIUS * uniform01(rng);
        let ang = 2.0 * std::f64::consts::PI * uniform01(rng);
        x[4] = dist * ang.cos();
        x[5] = dist * ang.sin();
        for (o, v) in s.iter_mut().zip(x) {
            *o = v as f32;
        }
    }
}

/// `‖(x, y)‖`, 0 at the origin (Brax's `safe_norm`; its gradient there is taken as 0).
fn safe_norm<T: Real>(x: T, y: T) -> T {
    let n2 = x * x + y * y;
    if n2.re() > 0.0 {
        n2.sqrt()
    } else {
        T::zero()
    }
}

impl crate::batch::RigidEnv<Reacher> {
    /// The Brax reacher task.
    pub fn brax_reacher() -> Self {
        crate::batch::RigidEnv::from_def(
            brax_reacher_def().expect("datasets/robots/reacher.xml loads"),
        )
    }
}

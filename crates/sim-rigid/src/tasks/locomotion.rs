//! The DiffRL locomotion template shared by Ant, Humanoid and Bruce (`envs/ant.py`,
//! `envs/humanoid.py`; tasks.md §2.5–2.6, §6.3): a free-floating torso plus hinge joints.
//! Each task file fills a [`LocomotionConfig`] with its constants; this file holds the
//! observation, reward, termination and reset that the DiffRL envs share, with their VJPs.
//!
//! **State layout** `[q (7 + n_j), q̇ (6 + n_j), previous action (n_a)]`: the articulation's
//! coordinates (torso position, torso quaternion (x, y, z, w), joint angles), its velocities
//! (world twist ω, v, then joint rates), and the clipped action of the previous step, which
//! DiffRL keeps in its observation (`self.actions`). The step writes `clip(a)` there;
//! resets zero it (fidelity trap 22).
//!
//! **Observation** (Ant: 37, Humanoid: 76):
//! `[h, quat (4), v − p × ω (3), ω (3), q_j (n_j), 0.1·q̇_j (n_j), up_y, heading·target_dir,
//! previous action (n_a)]`, with `up = rotate(quat ⊗ start_rot⁻¹, e_y)`,
//! `heading = rotate(quat ⊗ start_rot⁻¹, e_x)` and `target_dir` the unit vector from the
//! torso to `start + target` in the ground plane (fidelity trap 13: the twist's `v` is the
//! velocity of the point at the world origin).
//!
//! **Reward** `obs[5] (forward speed) + 0.1·up_y + heading + height term + c·Σa²` (a
//! clipped), with the height term of [`HeightReward`].
//!
//! **Termination** `h < termination_height`.
//!
//! **Brax variant** ([`BraxLocomotionTerms`], `brax-ant`, tasks.md §5): no previous action
//! in the state; observation `[h, quat (4), q_j (n_j), v (3), ω (3), q̇_j (n_j)]` in Brax's
//! z-up world and conventions: the quaternion `start_rot⁻¹ ⊗ quat` in (w, x, y, z) order
//! (identity at the start pose; `start_rot` must be the z-up → y-up change of frame),
//! `v = start_rot⁻¹·(v − p × ω)` the torso origin's world velocity, and `ω` the angular
//! velocity in the torso frame (MuJoCo's free-joint convention); reward
//! `v_x + healthy reward + c·Σa²`; termination `h ∉ [z_min, z_max]`; reset noise uniform on
//! position, on the z-up quaternion's components (then normalised) and on the joints, and
//! Gaussian on the velocities. The humanoid (`brax-humanoid`) adds, through the flags of
//! [`BraxLocomotionTerms`]: a forward weight (1.25) on the whole-body COM's x velocity in
//! place of the torso's; the COM-based inertia (10) and velocity (6) of every body
//! ([`super::body_terms`]) after the 11 + 2·n_j entries above; the previous clipped action
//! kept in the state and its actuator forces (one per DOF, zero on the root) at the end of
//! the observation; uniform velocity noise.

use super::body_terms::BodyTerms;
use super::{action_penalty, action_penalty_vjp, actuate, actuate_vjp, clip_unit};
use crate::batch::RigidTask;
use crate::dynamics::SimParams;
use crate::model::Articulation;
use crate::spatial::{cross, quat_rot, quat_rot_adjoint};
use diff_core::rng::{fill_normal, uniform01};
use diff_core::{Real, SeededRng, TaskSpec};

/// The height term of the reward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HeightReward {
    /// Ant: `h − h_T`.
    Linear,
    /// Humanoid: `d = clip(h − (h_T + tol), −1, tol)`; `−200·d²` if `d < 0`, else
    /// `scale·d`.
    Clipped { tolerance: f64, scale: f64 },
}

/// Brax's definitions of a free-base task (tasks.md §5) in place of DiffRL's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BraxLocomotionTerms {
    /// Paid every step (Brax pays it always when `terminate_when_unhealthy`).
    pub healthy_reward: f64,
    /// Healthy torso heights `[z_min, z_max]`; outside, the episode terminates.
    pub healthy_z: [f64; 2],
    /// Weight of the forward velocity in the reward (ant 1, humanoid 1.25).
    pub forward_weight: f64,
    /// Humanoid: the forward velocity is the whole-body COM's, and the observation appends
    /// every body's COM-based inertia and velocity ([`super::body_terms`]).
    pub body_terms: bool,
    /// Humanoid: the state keeps the clipped action of the previous step and the
    /// observation appends the actuator forces it produced (`qfrc_actuator`, one per DOF).
    pub actuator_obs: bool,
    /// Reset noise on the velocities uniform in `±noise_vel` (humanoid) instead of
    /// `noise_vel·N(0, 1)` (ant).
    pub uniform_vel_noise: bool,
}

/// Everything that distinguishes one free-base locomotion task from another.
#[derive(Clone, Debug)]
pub struct LocomotionConfig {
    pub name: String,
    pub art: Articulation,
    pub params: SimParams,
    pub episode_length: usize,
    /// Torso start position (DiffRL `start_pos`).
    pub start_pos: [f64; 3],
    /// Torso start rotation (x, y, z, w) (DiffRL `start_rot`: −π/2 about x for z-up MJCF).
    pub start_rot: [f64; 4],
    /// Joint angles at reset (also the PD targets set in the articulation).
    pub rest_pose: Vec<f64>,
    /// For each action entry: the DOF it actuates and its gain (torque per unit action).
    pub actuators: Vec<(usize, f64)>,
    /// Target offset from the start position (Ant: (10000, 0, 0), Humanoid: (200, 0, 0)).
    pub target: [f64; 3],
    pub termination_height: f64,
    pub height_reward: HeightReward,
    /// Weight of the up term (DiffRL 0.1).
    pub up_weight: f64,
    /// Weight of the heading term (DiffRL 1.0).
    pub heading_weight: f64,
    /// Coefficient of Σa² (Ant 0, Humanoid −0.002).
    pub action_penalty: f64,
    /// Coefficient of the torso's squared roll and pitch rates ω_x² + ω_z² (world frame,
    /// y up). 0 in every DiffRL task (they have no such term); Bruce uses it against a
    /// vibrating glide (see `bruce.rs`).
    pub ang_vel_penalty: f64,
    /// Reset noise: position ±, rotation angle ± (about a random axis), joints ±, q̇ ±.
    pub noise_pos: f64,
    pub noise_rot: f64,
    pub noise_joint: f64,
    pub noise_vel: f64,
    /// Scale of joint velocities in the observation (DiffRL 0.1).
    pub joint_vel_obs_scale: f64,
    /// Names of the hinge joints, in DOF order (for the state and observation names).
    pub joint_names: Vec<String>,
    /// Brax's observation, reward, termination and reset (`noise_rot` is then the uniform
    /// noise on each quaternion component and `noise_vel` the velocities' standard
    /// deviation); the DiffRL-only fields (target, weights, height reward) are unused.
    pub brax: Option<BraxLocomotionTerms>,
}

/// A free-base locomotion task built from a [`LocomotionConfig`].
pub struct Locomotion {
    pub cfg: LocomotionConfig,
    spec: TaskSpec,
    /// The COM-based terms (Brax variant with `body_terms`).
    body: Option<BodyTerms>,
    /// start_rot⁻¹ (x, y, z, w).
    inv_start: [f64; 4],
    nj: usize,
}

/// Hamilton product `a ⊗ b` of (x, y, z, w) quaternions, `b` constant.
#[inline(always)]
fn quat_mul_c<T: Real>(a: [T; 4], b: [f64; 4]) -> [T; 4] {
    let [bx, by, bz, bw] = b.map(T::cst);
    let [ax, ay, az, aw] = a;
    [
        aw * bx + bw * ax + (ay * bz - az * by),
        aw * by + bw * ay + (az * bx - ax * bz),
        aw * bz + bw * az + (ax * by - ay * bx),
        aw * bw - (ax * bx + ay * by + az * bz),
    ]
}

/// VJP of [`quat_mul_c`] in `a`.
#[inline(always)]
fn quat_mul_c_vjp<T: Real>(b: [f64; 4], l: [T; 4]) -> [T; 4] {
    let [bx, by, bz, bw] = b.map(T::cst);
    let [lx, ly, lz, lw] = l;
    // λ·(a_v × b_v) = a_v·(b_v × λ_v)
    let c = [by * lz - bz * ly, bz * lx - bx * lz, bx * ly - by * lx];
    [
        bw * lx + c[0] - lw * bx,
        bw * ly + c[1] - lw * by,
        bw * lz + c[2] - lw * bz,
        lx * bx + ly * by + lz * bz + lw * bw,
    ]
}

impl Locomotion {
    /// Builds the task; checks the configuration against the articulation.
    pub fn new(cfg: LocomotionConfig) -> diff_core::Result<Self> {
        let art = &cfg.art;
        let bad = |reason: String| diff_core::Error::InvalidParameter {
            name: format!("task `{}`", cfg.name),
            reason,
        };
        if art.links.first().map(|l| l.joint.kind) != Some(crate::JointKind::Free) {
            return Err(bad("the first link must have a free joint".into()));
        }
        let nj = art.n_q - 7;
        if art.n_qd != 6 + nj
            || art.links[1..]
                .iter()
                .any(|l| !l.joint.kind.is_1dof() && l.joint.kind != crate::JointKind::Fixed)
        {
            return Err(bad(
                "all joints below the torso must be hinges or slides".into()
            ));
        }
        if cfg.rest_pose.len() != nj || cfg.joint_names.len() != nj {
            return Err(bad(format!(
                "rest pose ({}) and joint names ({}) must have one entry per joint ({nj})",
                cfg.rest_pose.len(),
                cfg.joint_names.len()
            )));
        }
        if let Some(&(d, _)) = cfg.actuators.iter().find(|(d, _)| *d < 6 || *d >= art.n_qd) {
            return Err(bad(format!("actuated DOF {d} is not a joint DOF")));
        }
        let na = cfg.actuators.len();
        if cfg.brax.is_some() {
            return Ok(Self::new_brax(cfg, nj));
        }
        let [x, y, z, w] = cfg.start_rot;
        let n2 = x * x + y * y + z * z + w * w;
        let inv_start = [-x / n2, -y / n2, -z / n2, w / n2];
        let mut state_names: Vec<String> = ["x", "y", "z", "qx", "qy", "qz", "qw"]
            .iter()
            .map(|s| format!("torso_{s}"))
            .collect();
        state_names.extend(cfg.joint_names.iter().cloned());
        state_names.extend(
            ["wx", "wy", "wz", "vx", "vy", "vz"]
                .iter()
                .map(|s| format!("torso_{s}")),
        );
        state_names.extend(cfg.joint_names.iter().map(|n| format!("{n}_vel")));
        state_names.extend((0..na).map(|k| format!("prev_action_{k}")));
        let mut obs_names: Vec<String> = [
            "height", "qx", "qy", "qz", "qw", "vx", "vy", "vz", "wx", "wy", "wz",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        obs_names.extend(cfg.joint_names.iter().cloned());
        obs_names.extend(cfg.joint_names.iter().map(|n| format!("{n}_vel_scaled")));
        obs_names.extend(["up_y".to_string(), "heading_to_target".to_string()]);
        obs_names.extend((0..na).map(|k| format!("prev_action_{k}")));
        let spec = TaskSpec {
            name: cfg.name.clone(),
            state_dim: art.n_q + art.n_qd + na,
            obs_dim: 11 + 2 * nj + 2 + na,
            act_dim: na,
            episode_length: cfg.episode_length,
            dt: cfg.params.dt,
            state_names,
            obs_names,
        };
        Ok(Locomotion {
            cfg,
            spec,
            body: None,
            inv_start,
            nj,
        })
    }

    /// The Brax variant's spec (no previous action in the state).
    fn new_brax(cfg: LocomotionConfig, nj: usize) -> Self {
        let [x, y, z, w] = cfg.start_rot;
        let n2 = x * x + y * y + z * z + w * w;
        let inv_start = [-x / n2, -y / n2, -z / n2, w / n2];
        let torso =
            |v: &[&str]| -> Vec<String> { v.iter().map(|s| format!("torso_{s}")).collect() };
        let mut state_names = torso(&["x", "y", "z", "qx", "qy", "qz", "qw"]);
        state_names.extend(cfg.joint_names.iter().cloned());
        state_names.extend(torso(&["wx", "wy", "wz", "vx", "vy", "vz"]));
        state_names.extend(cfg.joint_names.iter().map(|n| format!("{n}_vel")));
        let mut obs_names = torso(&["z", "qw", "qx", "qy", "qz"]);
        obs_names.extend(cfg.joint_names.iter().cloned());
        obs_names.extend(torso(&[
            "vx", "vy", "vz", "wx_local", "wy_local", "wz_local",
        ]));
        obs_names.extend(cfg.joint_names.iter().map(|n| format!("{n}_vel")));
        let b = cfg.brax.expect("Brax variant");
        let na = cfg.actuators.len();
        let body = b
            .body_terms
            .then(|| BodyTerms::new(&cfg.art, quat_rot(inv_start)));
        if let Some(body) = &body {
            // each body named by the joint of its link
            let name = |i: usize| cfg.art.links[i].joint.name.clone();
            for &i in &body.bodies {
                for e in 0..9 {
                    obs_names.push(format!("{}_cinert_{}{}", name(i), e / 3, e % 3));
                }
                obs_names.push(format!("{}_mass", name(i)));
            }
            for &i in &body.bodies {
                for e in ["vx", "vy", "vz", "wx", "wy", "wz"] {
                    obs_names.push(format!("{}_cvel_{e}", name(i)));
                }
            }
        }
        let mut state_dim = cfg.art.n_q + cfg.art.n_qd;
        if b.actuator_obs {
            state_names.extend((0..na).map(|k| format!("prev_action_{k}")));
            obs_names.extend((0..cfg.art.n_qd).map(|d| format!("qfrc_actuator_{d}")));
            state_dim += na;
        }
        let spec = TaskSpec {
            name: cfg.name.clone(),
            state_dim,
            obs_dim: obs_names.len(),
            act_dim: na,
            episode_length: cfg.episode_length,
            dt: cfg.params.dt,
            state_names,
            obs_names,
        };
        Locomotion {
            cfg,
            spec,
            body,
            inv_start,
            nj,
        }
    }

    fn nq(&self) -> usize {
        self.cfg.art.n_q
    }

    /// `start_rot⁻¹ ⊗ a` as a 4 × 4 matrix with rows in Brax's (w, x, y, z) order.
    fn brax_quat_matrix(&self) -> [[f64; 4]; 4] {
        let mut m = [[0.0; 4]; 4];
        let [cx, cy, cz, cw] = self.inv_start;
        for j in 0..4 {
            let mut e = [0.0; 4];
            e[j] = 1.0;
            let [ax, ay, az, aw] = e;
            let p = [
                cw * ax + aw * cx + (cy * az - cz * ay),
                cw * ay + aw * cy + (cz * ax - cx * az),
                cw * az + aw * cz + (cx * ay - cy * ax),
                cw * aw - (cx * ax + cy * ay + cz * az),
            ];
            for (i, &k) in [3usize, 0, 1, 2].iter().enumerate() {
                m[i][j] = p[k];
            }
        }
        m
    }

    /// Brax's observation (see the module docs).
    fn observe_brax<T: Real>(&self, s: &[T], obs: &mut [T]) {
        let (nq, nj) = (self.nq(), self.nj);
        let qd = &s[nq..];
        obs[0] = s[1];
        let m = self.brax_quat_matrix();
        for i in 0..4 {
            obs[1 + i] = (0..4).fold(T::zero(), |acc, j| acc + T::cst(m[i][j]) * s[3 + j]);
        }
        obs[5..5 + nj].copy_from_slice(&s[7..7 + nj]);
        let (w, p) = ([qd[0], qd[1], qd[2]], [s[0], s[1], s[2]]);
        let v = [
            qd[3] - (p[1] * w[2] - p[2] * w[1]),
            qd[4] - (p[2] * w[0] - p[0] * w[2]),
            qd[5] - (p[0] * w[1] - p[1] * w[0]),
        ];
        let c = quat_rot(self.inv_start);
        let r = quat_rot([s[3], s[4], s[5], s[6]]);
        let o = 5 + nj;
        for i in 0..3 {
            obs[o + i] = (0..3).fold(T::zero(), |acc, k| acc + T::cst(c[i][k]) * v[k]);
            obs[o + 3 + i] = (0..3).fold(T::zero(), |acc, k| acc + r[k][i] * w[k]);
        }
        obs[o + 6..o + 6 + nj].copy_from_slice(&qd[6..6 + nj]);
        let mut o = o + 6 + nj;
        if let Some(body) = &self.body {
            body.observe(&self.cfg.art, s, &mut obs[o..o + body.obs_len()]);
            o += body.obs_len();
        }
        if self.brax_actuator_obs() {
            let nd = self.cfg.art.n_qd;
            let prev = &s[nq + nd..];
            obs[o..o + nd].iter_mut().for_each(|x| *x = T::zero());
            for (k, &(d, gain)) in self.cfg.actuators.iter().enumerate() {
                obs[o + d] = T::cst(gain) * prev[k];
            }
        }
    }

    fn brax_actuator_obs(&self) -> bool {
        self.cfg.brax.is_some_and(|b| b.actuator_obs)
    }

    /// VJP of [`Locomotion::observe_brax`].
    fn observe_brax_vjp<T: Real>(&self, s: &[T], ao: &[T], adj_s: &mut [T]) {
        let (nq, nj) = (self.nq(), self.nj);
        adj_s[1] += ao[0];
        let m = self.brax_quat_matrix();
        for j in 0..4 {
            adj_s[3 + j] += (0..4).fold(T::zero(), |acc, i| acc + T::cst(m[i][j]) * ao[1 + i]);
        }
        for k in 0..nj {
            adj_s[7 + k] += ao[5 + k];
        }
        let o = 5 + nj;
        let c = quat_rot(self.inv_start);
        let q = [s[3], s[4], s[5], s[6]];
        let r = quat_rot(q);
        let w = [s[nq], s[nq + 1], s[nq + 2]];
        // λ on v = v_twist − p × ω
        let l: [T; 3] = std::array::from_fn(|k| {
            (0..3).fold(T::zero(), |acc, i| acc + T::cst(c[i][k]) * ao[o + i])
        });
        torso_velocity_vjp(s, nq, l, [T::zero(); 3], adj_s);
        // ω_local = Rᵀ ω
        let mut ar = [[T::zero(); 3]; 3];
        for k in 0..3 {
            for i in 0..3 {
                adj_s[nq + k] += r[k][i] * ao[o + 3 + i];
                ar[k][i] = w[k] * ao[o + 3 + i];
            }
        }
        let aq = quat_rot_adjoint(q, &ar);
        for k in 0..4 {
            adj_s[3 + k] += aq[k];
        }
        for k in 0..nj {
            adj_s[nq + 6 + k] += ao[o + 6 + k];
        }
        let mut o = o + 6 + nj;
        if let Some(body) = &self.body {
            body.observe_vjp(&self.cfg.art, s, &ao[o..o + body.obs_len()], adj_s);
            o += body.obs_len();
        }
        if self.brax_actuator_obs() {
            let nd = self.cfg.art.n_qd;
            for (k, &(d, gain)) in self.cfg.actuators.iter().enumerate() {
                adj_s[nq + nd + k] += T::cst(gain) * ao[o + d];
            }
        }
    }

    /// Brax's reset (see the module docs).
    fn reset_brax(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]) {
        let (nq, nj) = (self.nq(), self.nj);
        let c = &self.cfg;
        s.iter_mut().for_each(|x| *x = 0.0);
        let mut q = vec![0.0f64; nq];
        q[..3].copy_from_slice(&c.start_pos);
        q[3..7].copy_from_slice(&c.start_rot);
        q[7..].copy_from_slice(&c.rest_pose);
        let mut qd = vec![0.0f64; 6 + nj];
        if stochastic {
            let u = |rng: &mut SeededRng, amp: f64| amp * (uniform01(rng) - 0.5) * 2.0;
            for x in q[..3].iter_mut() {
                *x += u(rng, c.noise_pos);
            }
            // Brax adds the noise to the z-up quaternion's components (w, x, y, z)
            let mut qz = [0.0, 0.0, 0.0, 1.0];
            for x in qz.iter_mut() {
                *x += u(rng, c.noise_rot);
            }
            let n = qz.iter().map(|x| x * x).sum::<f64>().sqrt();
            qz.iter_mut().for_each(|x| *x /= n);
            let [sx, sy, sz, sw] = c.start_rot;
            let [ax, ay, az, aw] = qz;
            q[3..7].copy_from_slice(&[
                sw * ax + aw * sx + (sy * az - sz * ay),
                sw * ay + aw * sy + (sz * ax - sx * az),
                sw * az + aw * sz + (sx * ay - sy * ax),
                sw * aw - (sx * ax + sy * ay + sz * az),
            ]);
            for x in q[7..].iter_mut() {
                *x += u(rng, c.noise_joint);
            }
            // Brax's soft constraints push a start that the noise sank into the ground out
            // gently; our spring contact would launch it (10 cm of penetration is ~100 N
            // per point on a 0.9 kg ant): lift the root until no contact point is below.
            self.lift_clear_of_ground(&mut q);
            let mut z = vec![0.0f32; 6 + nj];
            if c.brax.is_some_and(|b| b.uniform_vel_noise) {
                z.iter_mut().for_each(|x| *x = u(rng, 1.0) as f32);
            } else {
                fill_normal(rng, &mut z);
            }
            // z-up world linear and local angular velocity → our world twist
            let rs = quat_rot(c.start_rot);
            let rq = quat_rot([q[3], q[4], q[5], q[6]]);
            let n = c.noise_vel;
            let v: [f64; 3] =
                std::array::from_fn(|i| (0..3).map(|k| rs[i][k] * n * z[k] as f64).sum());
            let w: [f64; 3] =
                std::array::from_fn(|i| (0..3).map(|k| rq[i][k] * n * z[3 + k] as f64).sum());
            let p = [q[0], q[1], q[2]];
            qd[..3].copy_from_slice(&w);
            qd[3] = v[0] + p[1] * w[2] - p[2] * w[1];
            qd[4] = v[1] + p[2] * w[0] - p[0] * w[2];
            qd[5] = v[2] + p[0] * w[1] - p[1] * w[0];
            for (x, zk) in qd[6..].iter_mut().zip(&z[6..]) {
                *x = n * *zk as f64;
            }
        }
        for (o, v) in s.iter_mut().zip(q.iter().chain(qd.iter())) {
            *o = *v as f32;
        }
    }

    /// Raises the root of the coordinates `q` (the y of its position) by the depth of the
    /// lowest contact point below the ground, if any.
    fn lift_clear_of_ground(&self, q: &mut [f64]) {
        let lowest = self.cfg.art.lowest_contact(q);
        if lowest < 0.0 {
            q[1] -= lowest;
        }
    }

    /// `start_rot⁻¹` (x, y, z, w), in f64 (the kernels' task model).
    pub fn inv_start(&self) -> [f64; 4] {
        self.inv_start
    }

    /// Unit direction from the torso to the target in the ground plane, and the length of
    /// the unnormalised vector.
    fn target_dir<T: Real>(&self, s: &[T]) -> ([T; 3], T) {
        let tx = T::cst(self.cfg.start_pos[0] + self.cfg.target[0]) - s[0];
        let tz = T::cst(self.cfg.start_pos[2] + self.cfg.target[2]) - s[2];
        let n = (tx * tx + tz * tz).sqrt().max_r(T::cst(1e-9));
        ([tx / n, T::zero(), tz / n], n)
    }

    fn torso_quat<T: Real>(&self, s: &[T]) -> [T; 4] {
        quat_mul_c([s[3], s[4], s[5], s[6]], self.inv_start)
    }

    /// `(up_y, heading·target_dir)`.
    fn up_heading<T: Real>(&self, s: &[T]) -> (T, T) {
        let r = quat_rot(self.torso_quat(s));
        let (dir, _) = self.target_dir(s);
        (
            r[1][1],
            r[0][0] * dir[0] + r[1][0] * dir[1] + r[2][0] * dir[2],
        )
    }

    /// VJP of [`Locomotion::up_heading`]: accumulates into `adj_s`.
    fn up_heading_vjp<T: Real>(&self, s: &[T], a_up: T, a_hd: T, adj_s: &mut [T]) {
        let tq = self.torso_quat(s);
        let r = quat_rot(tq);
        let (dir, n) = self.target_dir(s);
        let mut ar = [[T::zero(); 3]; 3];
        ar[1][1] = a_up;
        for k in 0..3 {
            ar[k][0] = a_hd * dir[k];
        }
        let atq = quat_rot_adjoint(tq, &ar);
        let aq = quat_mul_c_vjp(self.inv_start, atq);
        for k in 0..4 {
            adj_s[3 + k] += aq[k];
        }
        if n.re() > 1e-9 {
            let adir = [a_hd * r[0][0], a_hd * r[1][0], a_hd * r[2][0]];
            let dd = dir[0] * adir[0] + dir[2] * adir[2];
            adj_s[0] -= (adir[0] - dir[0] * dd) / n;
            adj_s[2] -= (adir[2] - dir[2] * dd) / n;
        }
    }

    fn height_term<T: Real>(&self, h: T) -> T {
        let ht = self.cfg.termination_height;
        match self.cfg.height_reward {
            HeightReward::Linear => h - T::cst(ht),
            HeightReward::Clipped { tolerance, scale } => {
                let d = h - T::cst(ht + tolerance);
                let d = if d.re() < -1.0 {
                    T::cst(-1.0)
                } else if d.re() > tolerance {
                    T::cst(tolerance)
                } else {
                    d
                };
                if d.re() < 0.0 {
                    T::cst(-200.0) * d * d
                } else {
                    T::cst(scale) * d
                }
            }
        }
    }

    fn height_term_derivative<T: Real>(&self, h: T) -> T {
        let ht = self.cfg.termination_height;
        match self.cfg.height_reward {
            HeightReward::Linear => T::one(),
            HeightReward::Clipped { tolerance, scale } => {
                let d = h - T::cst(ht + tolerance);
                if d.re() < -1.0 || d.re() > tolerance {
                    T::zero()
                } else if d.re() < 0.0 {
                    T::cst(-400.0) * d
                } else {
                    T::cst(scale)
                }
            }
        }
    }
}

impl RigidTask for Locomotion {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }
    fn articulation(&self) -> &Articulation {
        &self.cfg.art
    }
    fn sim_params(&self) -> &SimParams {
        &self.cfg.params
    }
    fn kernel_layer(
        &self,
    ) -> Option<diff_core::Result<(crate::kernels::PackedTaskLayer, crate::resident::PackedGlue)>>
    {
        if self.cfg.brax.is_some() {
            return None; // the kernels implement DiffRL's task layer only
        }
        let extra = self.spec.state_dim - self.cfg.art.n_q - self.cfg.art.n_qd;
        Some(
            crate::kernels::PackedTaskLayer::locomotion(self).and_then(|layer| {
                let glue = crate::resident::PackedGlue::new(self, &self.cfg.actuators, extra)?;
                Ok((layer, glue))
            }),
        )
    }

    fn actuation<T: Real>(&self, a: &[T], act: &mut [T]) {
        actuate(&self.cfg.actuators, a, act);
    }

    fn actuation_vjp<T: Real>(&self, a: &[T], adj_act: &[T], adj_a: &mut [T]) {
        actuate_vjp(&self.cfg.actuators, a, adj_act, adj_a);
    }

    fn extra_step<T: Real>(&self, _s: &[T], a: &[T], extra_next: &mut [T]) {
        for (k, x) in extra_next.iter_mut().enumerate() {
            *x = clip_unit(a[k]).0;
        }
    }

    fn extra_step_vjp<T: Real>(&self, a: &[T], adj_extra_next: &[T], adj_a: &mut [T]) {
        for (k, &g) in adj_extra_next.iter().enumerate() {
            if clip_unit(a[k]).1 {
                adj_a[k] += g;
            }
        }
    }

    fn observe<T: Real>(&self, s: &[T], obs: &mut [T]) {
        if self.cfg.brax.is_some() {
            return self.observe_brax(s, obs);
        }
        let (nq, nj) = (self.nq(), self.nj);
        let qd = &s[nq..];
        obs[0] = s[1];
        obs[1..5].copy_from_slice(&s[3..7]);
        let w = [qd[0], qd[1], qd[2]];
        let p = [s[0], s[1], s[2]];
        // v − p × ω
        obs[5] = qd[3] - (p[1] * w[2] - p[2] * w[1]);
        obs[6] = qd[4] - (p[2] * w[0] - p[0] * w[2]);
        obs[7] = qd[5] - (p[0] * w[1] - p[1] * w[0]);
        obs[8..11].copy_from_slice(&w);
        obs[11..11 + nj].copy_from_slice(&s[7..7 + nj]);
        let sc = T::cst(self.cfg.joint_vel_obs_scale);
        for k in 0..nj {
            obs[11 + nj + k] = sc * qd[6 + k];
        }
        let (up, hd) = self.up_heading(s);
        obs[11 + 2 * nj] = up;
        obs[12 + 2 * nj] = hd;
        let na = self.cfg.actuators.len();
        let o = 13 + 2 * nj;
        obs[o..o + na].copy_from_slice(&s[nq + 6 + nj..nq + 6 + nj + na]);
    }

    fn observe_vjp<T: Real>(&self, s: &[T], ao: &[T], adj_s: &mut [T]) {
        if self.cfg.brax.is_some() {
            return self.observe_brax_vjp(s, ao, adj_s);
        }
        let (nq, nj) = (self.nq(), self.nj);
        adj_s[1] += ao[0];
        for k in 0..4 {
            adj_s[3 + k] += ao[1 + k];
        }
        torso_velocity_vjp(s, nq, [ao[5], ao[6], ao[7]], [ao[8], ao[9], ao[10]], adj_s);
        let sc = T::cst(self.cfg.joint_vel_obs_scale);
        for k in 0..nj {
            adj_s[7 + k] += ao[11 + k];
            adj_s[nq + 6 + k] += sc * ao[11 + nj + k];
        }
        self.up_heading_vjp(s, ao[11 + 2 * nj], ao[12 + 2 * nj], adj_s);
        let na = self.cfg.actuators.len();
        let o = 13 + 2 * nj;
        for k in 0..na {
            adj_s[nq + 6 + nj + k] += ao[o + k];
        }
    }

    fn reward<T: Real>(&self, s: &[T], a: &[T]) -> T {
        let nq = self.nq();
        let (w, p) = ([s[nq], s[nq + 1], s[nq + 2]], [s[0], s[1], s[2]]);
        let progress = s[nq + 3] - (p[1] * w[2] - p[2] * w[1]);
        if let Some(b) = &self.cfg.brax {
            let forward = match &self.body {
                Some(body) => body.com_velocity(&self.cfg.art, s)[0],
                None => progress,
            };
            return T::cst(b.forward_weight) * forward
                + T::cst(b.healthy_reward)
                + action_penalty(self.cfg.action_penalty, a);
        }
        let (up, hd) = self.up_heading(s);
        progress
            + T::cst(self.cfg.up_weight) * up
            + T::cst(self.cfg.heading_weight) * hd
            + self.height_term(s[1])
            + action_penalty(self.cfg.action_penalty, a)
            + T::cst(self.cfg.ang_vel_penalty) * (w[0] * w[0] + w[2] * w[2])
    }

    fn reward_vjp<T: Real>(&self, s: &[T], a: &[T], g: T, adj_s: &mut [T], adj_a: &mut [T]) {
        let nq = self.nq();
        let (w, p) = ([s[nq], s[nq + 1], s[nq + 2]], [s[0], s[1], s[2]]);
        if let Some(b) = &self.cfg.brax {
            let gf = g * T::cst(b.forward_weight);
            match &self.body {
                Some(body) => {
                    body.com_velocity_vjp(&self.cfg.art, s, [gf, T::zero(), T::zero()], adj_s)
                }
                None => {
                    adj_s[nq + 3] += gf;
                    adj_s[1] -= gf * w[2];
                    adj_s[2] += gf * w[1];
                    adj_s[nq + 2] -= gf * p[1];
                    adj_s[nq + 1] += gf * p[2];
                }
            }
            action_penalty_vjp(self.cfg.action_penalty, a, g, adj_a);
            return;
        }
        // progress = v_x − (p_y ω_z − p_z ω_y)
        adj_s[nq + 3] += g;
        adj_s[1] -= g * w[2];
        adj_s[2] += g * w[1];
        adj_s[nq + 2] -= g * p[1];
        adj_s[nq + 1] += g * p[2];
        self.up_heading_vjp(
            s,
            g * T::cst(self.cfg.up_weight),
            g * T::cst(self.cfg.heading_weight),
            adj_s,
        );
        adj_s[1] += g * self.height_term_derivative(s[1]);
        action_penalty_vjp(self.cfg.action_penalty, a, g, adj_a);
        let c2 = g * T::cst(2.0 * self.cfg.ang_vel_penalty);
        adj_s[nq] += c2 * w[0];
        adj_s[nq + 2] += c2 * w[2];
    }

    fn terminated(&self, s: &[f32]) -> bool {
        let h = s[1] as f64;
        match &self.cfg.brax {
            Some(b) => h < b.healthy_z[0] || h > b.healthy_z[1],
            None => h < self.cfg.termination_height,
        }
    }

    fn reset(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]) {
        if self.cfg.brax.is_some() {
            return self.reset_brax(rng, stochastic, s);
        }
        let (nq, nj) = (self.nq(), self.nj);
        let c = &self.cfg;
        s.iter_mut().for_each(|x| *x = 0.0);
        let mut q = vec![0.0f64; nq];
        q[..3].copy_from_slice(&c.start_pos);
        q[3..7].copy_from_slice(&c.start_rot);
        q[7..].copy_from_slice(&c.rest_pose);
        let mut qd = vec![0.0f64; 6 + nj];
        if stochastic {
            let mut u = |amp: f64| amp * (uniform01(rng) - 0.5) * 2.0;
            for x in q[..3].iter_mut() {
                *x += u(c.noise_pos);
            }
            // rotation by angle (U − 0.5)·π/12 about a random axis, applied on the right
            let angle = u(c.noise_rot);
            let mut axis = [u(0.5), u(0.5), u(0.5)];
            let n = (axis.iter().map(|x| x * x).sum::<f64>()).sqrt().max(1e-12);
            axis.iter_mut().for_each(|x| *x /= n);
            let (sh, ch) = ((angle * 0.5).sin(), (angle * 0.5).cos());
            let r = [axis[0] * sh, axis[1] * sh, axis[2] * sh, ch];
            let q0 = [q[3], q[4], q[5], q[6]];
            let qn = quat_mul_c(q0, r);
            q[3..7].copy_from_slice(&qn);
            for x in q[7..].iter_mut() {
                *x += u(c.noise_joint);
            }
            for x in qd.iter_mut() {
                *x += u(c.noise_vel);
            }
        }
        for (o, v) in s.iter_mut().zip(q.iter().chain(qd.iter())) {
            *o = *v as f32;
        }
    }
}

/// VJP of the torso origin's world velocity `v − p × ω` (the state's twist `(ω, v)` at
/// `s[nq..nq + 6]`, the torso position `p` at `s[..3]`) for the cotangent `l`:
/// `adj_v += l`, `adj_p −= ω × l`, `adj_ω += a_ω − l × p`, with `a_ω` the observation's
/// own cotangent on ω (added in this order, so that the sum is bit-identical to the
/// kernels' `locomotion.cu`, which a resident-window test checks).
fn torso_velocity_vjp<T: Real>(s: &[T], nq: usize, l: [T; 3], a_w: [T; 3], adj_s: &mut [T]) {
    let w = [s[nq], s[nq + 1], s[nq + 2]];
    let p = [s[0], s[1], s[2]];
    let wl = cross(w, l);
    let lp = cross(l, p);
    for k in 0..3 {
        adj_s[nq + 3 + k] += l[k];
        adj_s[k] -= wl[k];
        adj_s[nq + k] += a_w[k] - lp[k];
    }
}

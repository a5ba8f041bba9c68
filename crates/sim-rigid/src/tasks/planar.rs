//! The DiffRL planar template shared by Hopper and HalfCheetah (`envs/hopper.py`,
//! `envs/cheetah.py`; tasks.md §2.3–2.4): root slides x and z and root hinge, then leg
//! hinges, all in one plane.
//!
//! **State layout** `[q (n), q̇ (n)]` with `q = [rootx, rootz, rooty, joints…]`.
//! **Observation** `[q[1..], q̇]` (Hopper 11, Cheetah 17): `obs[0]` is the rootz
//! displacement from the start, `obs[n − 1]` is ẋ.
//! **Reward** `ẋ + height term + angle term + c·Σa²` (a clipped); the height and angle
//! terms are Hopper's and absent for Cheetah.
//! **Termination** `obs[0] < termination_height` when set (Hopper only, fidelity trap 20).
//!
//! **Brax variants** ([`BraxPlanarTerms`], `brax-hopper` and `brax-halfcheetah`, tasks.md
//! §5): reward `ẋ + healthy reward + c·Σa²`; observation `[q[1..], q̇]` with `obs[0]`
//! rootz plus a height offset and q̇ clipped when set; termination by Brax's healthy ranges; Gaussian velocity noise when set.

use super::{action_penalty, action_penalty_vjp, actuate, actuate_vjp};
use crate::batch::RigidTask;
use crate::dynamics::SimParams;
use crate::model::Articulation;
use diff_core::rng::{fill_normal, uniform01};
use diff_core::{Real, SeededRng, TaskSpec};

/// Hopper's posture terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HopperTerms {
    /// `h_T` (−0.45): termination and the height term's reference.
    pub termination_height: f64,
    /// Tolerance added to `h_T` in the height term (0.15).
    pub height_tolerance: f64,
    /// Upper clip of the height term (0.3) and its positive-side scale (1.0).
    pub height_clip: f64,
    pub height_scale: f64,
    /// `θ_T` (π/6) of the angle term `1 − (θ_root/θ_T)²`.
    pub termination_angle: f64,
}

/// Brax's healthy ranges (hopper): the state is unhealthy (terminated) unless
/// `z > z_min`, `|θ_root| < angle_max` and every `|q[2..]|`, `|q̇|` is `< state_max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BraxHealthy {
    pub z_min: f64,
    pub angle_max: f64,
    pub state_max: f64,
}

/// Brax's definitions of a planar task (tasks.md §5) in place of DiffRL's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BraxPlanarTerms {
    /// Paid every step (Brax pays it always when `terminate_when_unhealthy`).
    pub healthy_reward: f64,
    /// Added to rootz in `obs[0]` and in the healthy-height check: the torso's height at
    /// rootz = 0 for Brax hopper (`obs[0]` is then `x.pos[0, 2]`), the shift between our
    /// start height and Brax's for halfcheetah (whose `obs[0]` is Brax's rootz).
    pub height_offset: f64,
    /// When set, the observed velocities are clipped to `±obs_vel_clip` (Brax hopper: 10).
    pub obs_vel_clip: Option<f64>,
    /// Termination, measured with the torso height as in `obs[0]`.
    pub healthy: Option<BraxHealthy>,
    /// When true the velocity reset noise is `noise_vel·N(0, 1)` (Brax halfcheetah),
    /// otherwise uniform in `±noise_vel`.
    pub gaussian_vel_noise: bool,
}

/// Everything that distinguishes one planar task from another.
#[derive(Clone, Debug)]
pub struct PlanarConfig {
    pub name: String,
    pub art: Articulation,
    pub params: SimParams,
    pub episode_length: usize,
    /// Start (rootx, rootz).
    pub start_xz: [f64; 2],
    /// For each action entry: the DOF it actuates and its gain.
    pub actuators: Vec<(usize, f64)>,
    pub action_penalty: f64,
    pub hopper: Option<HopperTerms>,
    /// Brax's reward, observation, termination and noise (then `hopper` must be `None`).
    pub brax: Option<BraxPlanarTerms>,
    /// Reset noise (±): root slides, root angle, joints, velocities.
    pub noise_root: f64,
    pub noise_angle: f64,
    pub noise_joint: f64,
    pub noise_vel: f64,
    /// Joint names in DOF order (root slides and hinge included).
    pub joint_names: Vec<String>,
}

/// A planar task built from a [`PlanarConfig`].
pub struct Planar {
    pub cfg: PlanarConfig,
    spec: TaskSpec,
}

impl Planar {
    /// Builds the task; checks the configuration against the articulation.
    pub fn new(cfg: PlanarConfig) -> diff_core::Result<Self> {
        let art = &cfg.art;
        let n = art.n_q;
        let bad = |reason: String| diff_core::Error::InvalidParameter {
            name: format!("task `{}`", cfg.name),
            reason,
        };
        if art.n_qd != n
            || n < 3
            || art
                .links
                .iter()
                .any(|l| !l.joint.kind.is_1dof() && l.joint.kind != crate::JointKind::Fixed)
        {
            return Err(bad(
                "a planar model has only 1-DOF joints, the first three the root's".into(),
            ));
        }
        if cfg.joint_names.len() != n {
            return Err(bad(format!(
                "{} joint names for {n} joints",
                cfg.joint_names.len()
            )));
        }
        if cfg.brax.is_some() && cfg.hopper.is_some() {
            return Err(bad("Brax terms replace DiffRL's Hopper terms".into()));
        }
        if let Some(&(d, _)) = cfg.actuators.iter().find(|(d, _)| *d >= n) {
            return Err(bad(format!("actuated DOF {d} does not exist")));
        }
        let mut state_names = cfg.joint_names.clone();
        state_names.extend(cfg.joint_names.iter().map(|j| format!("{j}_vel")));
        let obs_names = state_names[1..].to_vec();
        let spec = TaskSpec {
            name: cfg.name.clone(),
            state_dim: 2 * n,
            obs_dim: 2 * n - 1,
            act_dim: cfg.actuators.len(),
            episode_length: cfg.episode_length,
            dt: cfg.params.dt,
            state_names,
            obs_names,
        };
        Ok(Planar { cfg, spec })
    }
}

impl RigidTask for Planar {
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
        Some(
            crate::kernels::PackedTaskLayer::planar(self).and_then(|layer| {
                let glue = crate::resident::PackedGlue::new(self, &self.cfg.actuators, 0)?;
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

    fn observe<T: Real>(&self, s: &[T], obs: &mut [T]) {
        obs.copy_from_slice(&s[1..]);
        if let Some(b) = &self.cfg.brax {
            let n = self.cfg.art.n_q;
            obs[0] += T::cst(b.height_offset);
            if let Some(c) = b.obs_vel_clip {
                for o in obs[n - 1..].iter_mut() {
                    *o = clip_abs(*o, c).0;
                }
            }
        }
    }

    fn observe_vjp<T: Real>(&self, s: &[T], adj_obs: &[T], adj_s: &mut [T]) {
        let n = self.cfg.art.n_q;
        let clip = self.cfg.brax.and_then(|b| b.obs_vel_clip);
        for (k, (a, g)) in adj_s[1..].iter_mut().zip(adj_obs).enumerate() {
            let inside = match clip {
                Some(c) if k + 1 >= n => clip_abs(s[k + 1], c).1,
                _ => true,
            };
            if inside {
                *a += *g;
            }
        }
    }

    fn reward<T: Real>(&self, s: &[T], a: &[T]) -> T {
        let n = self.cfg.art.n_q;
        let mut r = s[n]; // ẋ
        if let Some(h) = &self.cfg.hopper {
            r += hopper_height(h, s[1]) + hopper_angle(h, s[2]);
        }
        if let Some(b) = &self.cfg.brax {
            r += T::cst(b.healthy_reward);
        }
        r + action_penalty(self.cfg.action_penalty, a)
    }

    fn reward_vjp<T: Real>(&self, s: &[T], a: &[T], g: T, adj_s: &mut [T], adj_a: &mut [T]) {
        let n = self.cfg.art.n_q;
        adj_s[n] += g;
        if let Some(h) = &self.cfg.hopper {
            let d = s[1] - T::cst(h.termination_height + h.height_tolerance);
            if d.re() >= -1.0 && d.re() <= h.height_clip {
                adj_s[1] += g * if d.re() < 0.0 {
                    T::cst(-400.0) * d
                } else {
                    T::cst(h.height_scale)
                };
            }
            adj_s[2] += g * T::cst(-2.0 / (h.termination_angle * h.termination_angle)) * s[2];
        }
        action_penalty_vjp(self.cfg.action_penalty, a, g, adj_a);
    }

    fn terminated(&self, s: &[f32]) -> bool {
        if let Some(BraxPlanarTerms {
            healthy: Some(h),
            height_offset,
            ..
        }) = self.cfg.brax
        {
            let z = s[1] as f64 + height_offset;
            let healthy = z > h.z_min
                && (s[2] as f64).abs() < h.angle_max
                && s[2..].iter().all(|x| (*x as f64).abs() < h.state_max);
            return !healthy;
        }
        self.cfg
            .hopper
            .is_some_and(|h| (s[1] as f64) < h.termination_height)
    }

    fn reset(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]) {
        let n = self.cfg.art.n_q;
        let c = &self.cfg;
        let mut x = vec![0.0f64; 2 * n];
        x[0] = c.start_xz[0];
        x[1] = c.start_xz[1];
        if stochastic {
            let u = |rng: &mut SeededRng, amp: f64| amp * (uniform01(rng) - 0.5) * 2.0;
            x[0] += u(rng, c.noise_root);
            x[1] += u(rng, c.noise_root);
            x[2] += u(rng, c.noise_angle);
            for v in x[3..n].iter_mut() {
                *v += u(rng, c.noise_joint);
            }
            let gaussian = c.brax.is_some_and(|b| b.gaussian_vel_noise);
            for v in x[n..].iter_mut() {
                *v += if gaussian {
                    let mut z = [0.0f32];
                    fill_normal(rng, &mut z);
                    c.noise_vel * z[0] as f64
                } else {
                    u(rng, c.noise_vel)
                };
            }
        }
        for (o, v) in s.iter_mut().zip(x) {
            *o = v as f32;
        }
    }
}

/// `clip(x, −c, c)` and whether `x` is inside (derivative 1).
#[inline(always)]
fn clip_abs<T: Real>(x: T, c: f64) -> (T, bool) {
    if x.re() > c {
        (T::cst(c), false)
    } else if x.re() < -c {
        (T::cst(-c), false)
    } else {
        (x, true)
    }
}

/// Hopper's height term: `d = clip(z − (h_T + tol), −1, clip)`; `−200 d²` below 0, else
/// `scale·d`.
fn hopper_height<T: Real>(h: &HopperTerms, z: T) -> T {
    let d = z - T::cst(h.termination_height + h.height_tolerance);
    let d = if d.re() < -1.0 {
        T::cst(-1.0)
    } else if d.re() > h.height_clip {
        T::cst(h.height_clip)
    } else {
        d
    };
    if d.re() < 0.0 {
        T::cst(-200.0) * d * d
    } else {
        T::cst(h.height_scale) * d
    }
}

/// Hopper's angle term `1 − (θ/θ_T)²`.
fn hopper_angle<T: Real>(h: &HopperTerms, theta: T) -> T {
    T::one() - theta * theta / T::cst(h.termination_angle * h.termination_angle)
}

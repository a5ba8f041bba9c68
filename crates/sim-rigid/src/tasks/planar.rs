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

use super::{action_penalty, action_penalty_vjp, actuate, actuate_vjp};
use crate::batch::RigidTask;
use crate::dynamics::SimParams;
use crate::model::Articulation;
use diff_core::rng::uniform01;
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
    }

    fn observe_vjp<T: Real>(&self, _s: &[T], adj_obs: &[T], adj_s: &mut [T]) {
        for (a, g) in adj_s[1..].iter_mut().zip(adj_obs) {
            *a += *g;
        }
    }

    fn reward<T: Real>(&self, s: &[T], a: &[T]) -> T {
        let n = self.cfg.art.n_q;
        let mut r = s[n]; // ẋ
        if let Some(h) = &self.cfg.hopper {
            r += hopper_height(h, s[1]) + hopper_angle(h, s[2]);
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
            let mut u = |amp: f64| amp * (uniform01(rng) - 0.5) * 2.0;
            x[0] += u(c.noise_root);
            x[1] += u(c.noise_root);
            x[2] += u(c.noise_angle);
            for v in x[3..n].iter_mut() {
                *v += u(c.noise_joint);
            }
            for v in x[n..].iter_mut() {
                *v += u(c.noise_vel);
            }
        }
        for (o, v) in s.iter_mut().zip(x) {
            *o = v as f32;
        }
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

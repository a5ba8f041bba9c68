//! CartPole swing-up (`envs/cartpole_swing_up.py`, `envs/assets/cartpole.urdf`;
//! tasks.md §2.2).
//!
//! - Model: fixed base `slideBar` at (0, 2.5, 0) rotated −π/2 about x (URDF z-up → Y-up);
//!   prismatic cart along x with limits [−4, 4]; continuous pole about y (limits ±1e3).
//!   Masses from the collision boxes at ρ = 1000: cart 0.5×0.5×0.2 m → 50 kg, pole
//!   0.05×0.05×1.0 m → 2.5 kg with its COM 0.5 m up the pole (the URDF's inertial values
//!   are ignored, fidelity trap 3). Armature 0.01, limit_ke 100, limit_kd 1 (always on),
//!   no stiffness or damping. Ground disabled.
//! - Simulation: dt 1/60, 4 substeps, mass matrix rebuilt every 4 substeps.
//! - Action: force 1000·clip(a, −1, 1) on the cart DOF.
//! - State layout: `[x, θ, ẋ, θ̇]`. Observation: `[x, ẋ, sin θ, cos θ, θ̇]`.
//! - Reward: −(θ̃² + 0.1 θ̇² + 0.05 x² + 0.1 ẋ²), θ̃ = θ wrapped to [−π, π) (the wrap has
//!   derivative 1 away from its jumps); the action penalty weight is 0.
//! - Episode: 240 steps, no early termination. Initial state q = (0, −π), q̇ = 0; with
//!   stochastic init q += π(U − 0.5), q̇ += 0.5(U − 0.5) per coordinate.
//! - Success (our evaluation criterion): |θ̃| < 0.2 over the last 60 steps.

use super::clip_unit;
use crate::batch::{RigidEnv, RigidTask};
use crate::dynamics::SimParams;
use crate::model::{
    Articulation, ArticulationBuilder, Geometry, InertiaTransform, Joint, JointKind, Shape,
};
use crate::spatial::{quat_to_matrix, Transform};
use diff_core::rng::uniform01;
use diff_core::{Real, SeededRng, TaskSpec};
use ndarray::ArrayView2;
use std::f64::consts::PI;

/// Reward weights (DiffRL `cartpole_swing_up.py`).
pub const POLE_ANGLE_PENALTY: f64 = 1.0;
pub const POLE_VELOCITY_PENALTY: f64 = 0.1;
pub const CART_POSITION_PENALTY: f64 = 0.05;
pub const CART_VELOCITY_PENALTY: f64 = 0.1;
/// Force per unit action on the cart (`action_strength`).
pub const ACTION_STRENGTH: f64 = 1000.0;
/// Episode length in steps.
pub const EPISODE_LENGTH: usize = 240;
/// Success: the wrapped pole angle stays below this over the last [`SUCCESS_WINDOW`] steps.
pub const SUCCESS_ANGLE: f32 = 0.2;
pub const SUCCESS_WINDOW: usize = 60;

/// The CartPole swing-up task definition.
pub struct CartPole {
    spec: TaskSpec,
    art: Articulation,
    params: SimParams,
}

/// The CartPole swing-up task as a batched [`diff_core::Task`].
pub type CartPoleSwingUp = RigidEnv<CartPole>;

impl RigidEnv<CartPole> {
    /// The task with DiffRL's parameters.
    pub fn new() -> Self {
        RigidEnv::from_def(CartPole::new())
    }
}

impl Default for RigidEnv<CartPole> {
    fn default() -> Self {
        Self::new()
    }
}

impl Default for CartPole {
    fn default() -> Self {
        Self::new()
    }
}

impl CartPole {
    /// Builds the model as dflex's `urdf_load` does for `cartpole.urdf`.
    pub fn new() -> Self {
        // dflex: `model.ground = False` for CartPole
        let mut b = ArticulationBuilder::new(InertiaTransform::Exact).ground(false);
        let root_x = Transform {
            p: [0.0, 2.5, 0.0],
            r: quat_to_matrix([
                -std::f64::consts::FRAC_1_SQRT_2,
                0.0,
                0.0,
                std::f64::consts::FRAC_1_SQRT_2,
            ]),
        };
        let fixed = Joint::new("slideBar", JointKind::Fixed, [0.0, 0.0, 0.0], root_x);
        let root = b.add_link(None, fixed, &[]).expect("static cartpole model");
        let mut slider = Joint::new(
            "slider_to_cart",
            JointKind::Prismatic,
            [1.0, 0.0, 0.0],
            Transform::default(),
        );
        slider.limit_lower = -4.0;
        slider.limit_upper = 4.0;
        slider.limit_kd = 1.0;
        let cart_box = Shape::new(
            Geometry::Box {
                half_extents: [0.25, 0.25, 0.1],
            },
            Transform::default(),
        );
        let cart = b
            .add_link(Some(root), slider, &[cart_box])
            .expect("static cartpole model");
        let mut hinge = Joint::new(
            "cart_to_pole",
            JointKind::Revolute,
            [0.0, 1.0, 0.0],
            Transform::default(),
        );
        hinge.limit_kd = 1.0;
        let pole_box = Shape::new(
            Geometry::Box {
                half_extents: [0.025, 0.025, 0.5],
            },
            Transform {
                p: [0.0, 0.0, 0.5],
                ..Transform::default()
            },
        );
        b.add_link(Some(cart), hinge, &[pole_box])
            .expect("static cartpole model");
        let art = b.build().expect("static cartpole model");
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        CartPole {
            spec: TaskSpec {
                name: "cartpole-swingup".into(),
                state_dim: 4,
                obs_dim: 5,
                act_dim: 1,
                episode_length: EPISODE_LENGTH,
                dt: 1.0 / 60.0,
                state_names: names(&["cart_x", "pole_theta", "cart_xdot", "pole_thetadot"]),
                obs_names: names(&["x", "xdot", "sin_theta", "cos_theta", "thetadot"]),
            },
            art,
            params: SimParams {
                dt: 1.0 / 60.0,
                substeps: 4,
                mm_freq: 4,
            },
        }
    }
}

/// θ wrapped to [−π, π) (`tu.normalize_angle`); derivative 1.
pub fn wrap_angle<T: Real>(theta: T) -> T {
    let two_pi = 2.0 * PI;
    let k = ((theta.re() + PI) / two_pi).floor();
    theta - T::cst(k * two_pi)
}

impl RigidTask for CartPole {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }
    fn articulation(&self) -> &Articulation {
        &self.art
    }
    fn sim_params(&self) -> &SimParams {
        &self.params
    }
    fn kernel_layer(
        &self,
    ) -> Option<diff_core::Result<(crate::kernels::PackedTaskLayer, crate::resident::PackedGlue)>>
    {
        let layer = crate::kernels::PackedTaskLayer::cartpole(self);
        Some(crate::resident::PackedGlue::new(self, &[(0, ACTION_STRENGTH)], 0).map(|g| (layer, g)))
    }

    fn actuation<T: Real>(&self, a: &[T], act: &mut [T]) {
        act[0] = clip_unit(a[0]).0 * T::cst(ACTION_STRENGTH);
        act[1] = T::zero();
    }

    fn actuation_vjp<T: Real>(&self, a: &[T], adj_act: &[T], adj_a: &mut [T]) {
        if clip_unit(a[0]).1 {
            adj_a[0] += adj_act[0] * T::cst(ACTION_STRENGTH);
        }
    }

    fn observe<T: Real>(&self, s: &[T], obs: &mut [T]) {
        obs[0] = s[0];
        obs[1] = s[2];
        obs[2] = s[1].sin();
        obs[3] = s[1].cos();
        obs[4] = s[3];
    }

    fn observe_vjp<T: Real>(&self, s: &[T], adj_obs: &[T], adj_s: &mut [T]) {
        adj_s[0] += adj_obs[0];
        adj_s[2] += adj_obs[1];
        adj_s[1] += adj_obs[2] * s[1].cos() - adj_obs[3] * s[1].sin();
        adj_s[3] += adj_obs[4];
    }

    fn reward<T: Real>(&self, s: &[T], _a: &[T]) -> T {
        let theta = wrap_angle(s[1]);
        -(T::cst(POLE_ANGLE_PENALTY) * theta.sq()
            + T::cst(POLE_VELOCITY_PENALTY) * s[3].sq()
            + T::cst(CART_POSITION_PENALTY) * s[0].sq()
            + T::cst(CART_VELOCITY_PENALTY) * s[2].sq())
    }

    fn reward_vjp<T: Real>(&self, s: &[T], _a: &[T], adj_r: T, adj_s: &mut [T], _adj_a: &mut [T]) {
        let m2 = T::cst(-2.0) * adj_r;
        adj_s[1] += m2 * T::cst(POLE_ANGLE_PENALTY) * wrap_angle(s[1]);
        adj_s[3] += m2 * T::cst(POLE_VELOCITY_PENALTY) * s[3];
        adj_s[0] += m2 * T::cst(CART_POSITION_PENALTY) * s[0];
        adj_s[2] += m2 * T::cst(CART_VELOCITY_PENALTY) * s[2];
    }

    fn terminated(&self, _s: &[f32]) -> bool {
        false
    }

    fn reset(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]) {
        s.copy_from_slice(&[0.0, -PI as f32, 0.0, 0.0]);
        if stochastic {
            // q += π(U − 0.5) for x and θ, then q̇ += 0.5(U − 0.5) (DiffRL draws q first)
            for x in s[..2].iter_mut() {
                *x += (PI * (uniform01(rng) - 0.5)) as f32;
            }
            for x in s[2..].iter_mut() {
                *x += (0.5 * (uniform01(rng) - 0.5)) as f32;
            }
        }
    }

    fn episode_success(&self, states: ArrayView2<f32>) -> Option<bool> {
        let n = states.nrows();
        let start = n.saturating_sub(SUCCESS_WINDOW);
        Some(
            n > 0
                && states
                    .outer_iter()
                    .skip(start)
                    .all(|s| wrap_angle(s[1]).abs() < SUCCESS_ANGLE),
        )
    }
}

//! DaXBench's mass-spring cloth (`engine/cloth_simulator.py:ClothSimulator`,
//! `tasks.md` §7.1 "Cloth" and §7.2), differentiable: the forward substep is generic over
//! [`diff_core::Real`] (so dual numbers give the JVP for free) and every stage has a
//! hand-written `f64` adjoint.
//!
//! - [`ClothParams`]: lattice, mask and physical constants, with the DaXBench presets
//!   ([`ClothParams::fold_cloth`], [`ClothParams::unfold_cloth`],
//!   [`ClothParams::fold_tshirt`]);
//! - [`Cloth`]: the particles and springs (8-neighbour structural and shear springs
//!   between masked sites, rest lengths from the initial lattice), the substep
//!   ([`Cloth::substep`]) split into stages — springs, ground friction, integration,
//!   gripper, clip and advance — each with its adjoint, and [`Cloth::substep_vjp`];
//! - the pick-and-place macro ([`pick_place_sub_actions`]) and [`ClothSim`], the
//!   [`crate::checkpoint::Substepper`] over its 2000 substeps; [`pick_place_vjp`] gives
//!   the adjoint of the initial state and of the 6-D action.
//!
//! **Kinks.** Every discrete decision (contact onset, friction branches, `max(−F_y, 0)`,
//! which particles the gripper holds, the position/velocity/gripper/action clips, the
//! spring-length clamp) is taken on primal values through [`diff_core::Real::re`], so
//! `f32`, `f64` and dual numbers follow the same branch, and the adjoint returns the
//! derivative of the branch taken (one-sided at the switch; zero where a value is
//! clipped). Each stage documents its kinks, and records them ([`Kinks`]) so that tests
//! can stay away from them.
//!
//! **Gradient treatment.** Through a whole pick-and-place the raw gradient explodes;
//! [`GradTreatment`] selects the raw gradient, DaXBench's per-substep normalisation or
//! a per-substep norm clip.
//!
//! **Resolved ambiguities** (DaXBench's code is followed where it is explicit):
//! - gravity is applied twice (velocity kick and force), see [`Cloth::substep`];
//! - the static-friction branch is unreachable in DaXBench (see
//!   [`ClothParams::static_speed`]); it is kept, reachable by raising `static_speed`;
//! - springs clamp neighbour sites to the lattice as DaXBench does (see [`Cloth::new`]);
//! - clip derivatives are 1 on the closed interval (a value exactly on a bound passes
//!   its derivative), 0 strictly outside;
//! - the env hook `collision_func` DaXBench calls before the gripper is the identity in
//!   every cloth env (`basic/cloth_env.py`), so it is omitted;
//! - DaXBench's second gripper (`primitive1`, parked at (1, 1, 1) with zero displacement)
//!   is not modelled: it would only freeze particles within 0.01 of that corner;
//! - the gripper command of a substep is DaXBench's `clip(a, ±2)/50` with the substep
//!   count taken from [`ClothParams::substeps`].

mod model;
mod params;
mod pnp;

pub use model::{
    Cloth, ClothState, ClothTape, GradTreatment, GripperCmd, Kinks, Spring, StateAdj,
    GRIPPER_START, LINKS, MIN_LEN_SQ, V3,
};
pub use params::{rect_mask, ClothParams};
pub use pnp::{
    pick_place, pick_place_sub_actions, pick_place_sub_actions_vjp, pick_place_vjp,
    run_sub_actions, sub_action_cmd, sub_action_cmd_vjp, ClothAdj, ClothSim, SubAction, PNP_DOWN,
    PNP_LIFT, PNP_LIFT_HEIGHT, PNP_MOVE, PNP_RELEASE, PNP_SUB_ACTIONS,
};

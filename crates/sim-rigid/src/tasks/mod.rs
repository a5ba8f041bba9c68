//! Task definitions, one file each (observation layout, reward terms, termination and
//! reset noise as in `shared/reference/tasks.md` §2; the Brax-like tasks of §5 in
//! [`brax`]).

pub mod ant;
pub mod body_terms;
pub mod brax;
pub mod bruce;
pub mod cartpole;
pub mod cheetah;
pub mod hopper;
pub mod humanoid;
pub mod locomotion;
pub mod planar;

pub use ant::Ant;
pub use bruce::Bruce;
pub use cartpole::{CartPole, CartPoleSwingUp};
pub use cheetah::HalfCheetah;
pub use hopper::Hopper;
pub use humanoid::Humanoid;

use diff_core::Real;

/// `clip(a, −1, 1)` (DiffRL envs clip actions, fidelity trap 14) and whether `a` is inside
/// (derivative 1) or outside (derivative 0; at exactly ±1 the inside branch is taken).
#[inline(always)]
pub fn clip_unit<T: Real>(a: T) -> (T, bool) {
    if a.re() > 1.0 {
        (T::one(), false)
    } else if a.re() < -1.0 {
        (-T::one(), false)
    } else {
        (a, true)
    }
}

/// Joint actuation `act[d] = gain·clip(a_k)` for each `(d, gain)` of `actuators`, zero on
/// the other DOFs (held over the substeps, trap 15).
pub fn actuate<T: Real>(actuators: &[(usize, f64)], a: &[T], act: &mut [T]) {
    act.iter_mut().for_each(|x| *x = T::zero());
    for (k, &(d, gain)) in actuators.iter().enumerate() {
        act[d] = clip_unit(a[k]).0 * T::cst(gain);
    }
}

/// VJP of [`actuate`]: accumulates into `adj_a`.
pub fn actuate_vjp<T: Real>(actuators: &[(usize, f64)], a: &[T], adj_act: &[T], adj_a: &mut [T]) {
    for (k, &(d, gain)) in actuators.iter().enumerate() {
        if clip_unit(a[k]).1 {
            adj_a[k] += adj_act[d] * T::cst(gain);
        }
    }
}

/// `c·Σ clip(a)²`, the DiffRL action penalty.
pub fn action_penalty<T: Real>(c: f64, a: &[T]) -> T {
    let mut pen = T::zero();
    for &ak in a {
        pen += clip_unit(ak).0.sq();
    }
    T::cst(c) * pen
}

/// VJP of [`action_penalty`] scaled by `g`: accumulates into `adj_a`.
pub fn action_penalty_vjp<T: Real>(c: f64, a: &[T], g: T, adj_a: &mut [T]) {
    let c2 = T::cst(2.0 * c) * g;
    for (k, &ak) in a.iter().enumerate() {
        let (x, inside) = clip_unit(ak);
        if inside {
            adj_a[k] += c2 * x;
        }
    }
}

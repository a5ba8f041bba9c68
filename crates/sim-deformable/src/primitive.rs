//! Kinematic primitives (DaXBench `engine/primitives`, PlasticineLab's grid coupling):
//! rigid shapes moved by the actions, acting on the MPM grid through their signed distance.
//!
//! Coupling of a grid node at `p` with velocity `v` to a primitive with signed distance
//! `d(p)`, outward normal `n(p)` and velocity `w` (tasks.md §7.1):
//! - influence `ι = min(exp(−d·softness), 1)`; nodes with `ι ≤ 0.1` and `d > 0` are left
//!   alone (a discontinuity at `ι = 0.1`, as in the reference: the derivative returned is
//!   that of the branch taken);
//! - relative velocity `r = v − w`, normal part `r_n = r·n`; `t = r − min(r_n, 0)·n`;
//! - when approaching (`r_n < 0`) and `‖t‖ > 0`, Coulomb friction:
//!   `t ← t/‖t‖ · max(0, ‖t‖ + μ·r_n)`;
//! - `v ← (1 − ι)·v + ι·(w + t)`.
//!
//! In position-control mode (whip rope) nodes within `1.5 ×` the primitive's size take its
//! velocity outright.
//!
//! The coupling is a small map of 9 inputs (node velocity, primitive position and
//! velocity) to 3 outputs. Its adjoint is built from its exact local Jacobian, evaluated by
//! 9 forward-mode (dual-number) passes through the same generic code; the kinks above
//! branch on primal values, so the Jacobian is that of the branch taken.

use crate::mat3::V3;
use diff_core::{Dual, Real};
use serde::{Deserialize, Serialize};

/// A primitive's shape in its own frame (translation only: the box's axes are the world
/// axes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// An axis-aligned box with these half sizes.
    Box { half: [f64; 3] },
}

/// How a primitive acts on the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coupling {
    /// Signed-distance coupling with friction (pushers, bowls).
    Contact,
    /// Nodes within 1.5 × the size take the primitive's velocity (whip-rope gripper).
    PositionControl,
}

/// A kinematic primitive.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Primitive {
    pub shape: Shape,
    /// Coulomb coefficient of the contact (DaXBench: 0.1).
    pub friction: f64,
    /// Softness of the influence (DaXBench: 666).
    pub softness: f64,
    pub coupling: Coupling,
}

/// A primitive's kinematic state during one substep.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PrimitiveState<T> {
    /// Centre, m.
    pub pos: V3<T>,
    /// Velocity, m/s.
    pub vel: V3<T>,
}

impl<T: Real> PrimitiveState<T> {
    /// Zero position and velocity (an adjoint accumulator).
    pub fn zero() -> Self {
        PrimitiveState {
            pos: [T::zero(); 3],
            vel: [T::zero(); 3],
        }
    }
}

impl Primitive {
    /// A box pusher with DaXBench's friction 0.1 and softness 666.
    pub fn pusher(half: [f64; 3]) -> Primitive {
        Primitive {
            shape: Shape::Box { half },
            friction: 0.1,
            softness: 666.0,
            coupling: Coupling::Contact,
        }
    }

    /// Signed distance and outward normal at `p` relative to the centre `c`.
    pub fn sdf<T: Real>(&self, p: &[f64; 3], c: &V3<T>) -> (T, V3<T>) {
        match self.shape {
            Shape::Box { half } => {
                let d: V3<T> = std::array::from_fn(|k| T::cst(p[k]) - c[k]);
                let sgn: [f64; 3] =
                    std::array::from_fn(|k| if d[k].re() < 0.0 { -1.0 } else { 1.0 });
                let q: V3<T> = std::array::from_fn(|k| d[k] * T::cst(sgn[k]) - T::cst(half[k]));
                let outside = q.iter().any(|x| x.re() > 0.0);
                if outside {
                    let o: V3<T> =
                        std::array::from_fn(|k| if q[k].re() > 0.0 { q[k] } else { T::zero() });
                    let len = (o[0] * o[0] + o[1] * o[1] + o[2] * o[2]).sqrt();
                    let n = std::array::from_fn(|k| o[k] / len * T::cst(sgn[k]));
                    (len, n)
                } else {
                    let mut k = 0;
                    for j in 1..3 {
                        if q[j].re() > q[k].re() {
                            k = j;
                        }
                    }
                    let mut n = [T::zero(); 3];
                    n[k] = T::cst(sgn[k]);
                    (q[k], n)
                }
            }
        }
    }

    fn size(&self) -> f64 {
        match self.shape {
            Shape::Box { half } => half.iter().fold(0.0, |a: f64, &b| a.max(b)),
        }
    }

    /// A cheap exclusion test: `p` lies farther from the primitive's bounding box (along
    /// some axis) than the distance ln(10)/softness at which the influence drops to 0.1,
    /// so the coupling leaves the node alone. Exact: such nodes fail the influence test.
    #[inline]
    fn beyond_reach<T: Real>(&self, p: &[f64; 3], s: &PrimitiveState<T>) -> bool {
        let reach = std::f64::consts::LN_10 / self.softness;
        match self.shape {
            Shape::Box { half } => {
                (0..3).any(|k| (p[k] - s.pos[k].re()).abs() - half[k] > reach * 1.000001)
            }
        }
    }

    /// Whether the primitive changes the velocity of a node at `p` (by primal values).
    pub fn acts_on<T: Real>(&self, p: &[f64; 3], s: &PrimitiveState<T>) -> bool {
        match self.coupling {
            Coupling::PositionControl => {
                let d2: f64 = (0..3).map(|k| (p[k] - s.pos[k].re()).powi(2)).sum();
                d2.sqrt() <= 1.5 * self.size()
            }
            Coupling::Contact => {
                if self.beyond_reach(p, s) {
                    return false;
                }
                let c = s.pos.map(|x| x.re());
                let (dist, _) = self.sdf(p, &c);
                let infl = (-dist * self.softness).exp().min(1.0);
                infl > 0.1 || dist <= 0.0
            }
        }
    }

    /// The node velocity after coupling with this primitive (see the module docs).
    pub fn couple<T: Real>(&self, p: &[f64; 3], v: &V3<T>, s: &PrimitiveState<T>) -> V3<T> {
        match self.coupling {
            Coupling::PositionControl => {
                let d2: f64 = (0..3).map(|k| (p[k] - s.pos[k].re()).powi(2)).sum();
                if d2.sqrt() <= 1.5 * self.size() {
                    s.vel
                } else {
                    *v
                }
            }
            Coupling::Contact => {
                if self.beyond_reach(p, s) {
                    return *v;
                }
                let (dist, n) = self.sdf(p, &s.pos);
                let infl = (-dist * T::cst(self.softness)).exp();
                let infl = if infl.re() >= 1.0 { T::one() } else { infl };
                if !(infl.re() > 0.1 || dist.re() <= 0.0) {
                    return *v;
                }
                let r: V3<T> = std::array::from_fn(|k| v[k] - s.vel[k]);
                let rn = r[0] * n[0] + r[1] * n[1] + r[2] * n[2];
                let rn_neg = if rn.re() < 0.0 { rn } else { T::zero() };
                let mut t: V3<T> = std::array::from_fn(|k| r[k] - rn_neg * n[k]);
                let tn = (t[0] * t[0] + t[1] * t[1] + t[2] * t[2]).sqrt();
                if rn.re() < 0.0 && tn.re() > 1e-30 {
                    let m = tn + rn * T::cst(self.friction);
                    let m = if m.re() > 0.0 { m } else { T::zero() };
                    t = t.map(|x| x / tn * m);
                }
                std::array::from_fn(|k| (T::one() - infl) * v[k] + infl * (s.vel[k] + t[k]))
            }
        }
    }

    /// VJP of [`Self::couple`]: returns the adjoint of `v` and accumulates those of the
    /// primitive's position and velocity into `adj_s`.
    pub fn couple_vjp<T: Real>(
        &self,
        p: &[f64; 3],
        v: &V3<T>,
        s: &PrimitiveState<T>,
        a: &V3<T>,
        adj_s: &mut PrimitiveState<T>,
    ) -> V3<T> {
        // nodes the primitive leaves alone: identity in v, nothing to the primitive
        if !self.acts_on(p, s) {
            return *a;
        }
        let x0: [f64; 9] = std::array::from_fn(|i| match i {
            0..=2 => v[i].re(),
            3..=5 => s.pos[i - 3].re(),
            _ => s.vel[i - 6].re(),
        });
        let mut adj_v = [T::zero(); 3];
        for i in 0..9 {
            let x: [Dual<f64>; 9] =
                std::array::from_fn(|j| Dual::new(x0[j], if i == j { 1.0 } else { 0.0 }));
            let ps = PrimitiveState {
                pos: [x[3], x[4], x[5]],
                vel: [x[6], x[7], x[8]],
            };
            let out = self.couple(p, &[x[0], x[1], x[2]], &ps);
            let mut g = T::zero();
            for k in 0..3 {
                g += a[k] * T::cst(out[k].eps);
            }
            match i {
                0..=2 => adj_v[i] += g,
                3..=5 => adj_s.pos[i - 3] += g,
                _ => adj_s.vel[i - 6] += g,
            }
        }
        adj_v
    }
}

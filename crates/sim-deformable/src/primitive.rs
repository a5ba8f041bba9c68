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
//! **Rotating primitives** (the pouring bowl) carry an orientation quaternion `q` and an
//! angular velocity `ω`: the signed distance is the shape's in the body frame,
//! `d(Rᵀ(p − c))`, its normal is rotated back, and the primitive's velocity at the node is
//! the rigid-body field `w(p) = v + ω × (p − c)`. DaXBench differences the finite rotation
//! over the substep instead, `(R(ω·dt)·r − r)/dt`; the two differ by O(|ω|·dt) relative
//! (1e-3 for pour-water's fastest tilt). Non-rotating primitives ignore `q` and `ω`.
//!
//! The coupling is a small map of 9 inputs (node velocity, primitive position and
//! velocity; 16 with orientation and angular velocity) to 3 outputs. Its adjoint is built
//! from its exact local Jacobian, evaluated by one forward-mode (dual-number) pass per
//! input through the same generic code; the kinks above branch on primal values, so the
//! Jacobian is that of the branch taken.

use crate::mat3::V3;
use diff_core::{Dual, Real};
use serde::{Deserialize, Serialize};

/// A primitive's shape in its own frame (for a non-rotating primitive, the world axes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// A box with these half sizes.
    Box { half: [f64; 3] },
    /// DaXBench's container (`primitives/container.py`): a hollow sphere of mid-surface
    /// radius `radius` and half thickness `thickness`, cut by the plane `y = cut` above
    /// which it is open (`cut = 0`: a hemispherical bowl opening upwards).
    Bowl {
        radius: f64,
        cut: f64,
        thickness: f64,
    },
}

impl Shape {
    /// Signed distance and outward normal at `d`, a point in the shape's frame.
    pub fn sdf_local<T: Real>(&self, d: &V3<T>) -> (T, V3<T>) {
        match *self {
            Shape::Box { half } => {
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
            Shape::Bowl {
                radius,
                cut,
                thickness,
            } => {
                // in the (radial, height) half plane: nearest the rim circle above the cone
                // through it, the spherical shell below
                let rim = (radius * radius - cut * cut).max(0.0).sqrt();
                let qx = (d[0] * d[0] + d[2] * d[2]).sqrt();
                let qy = d[1];
                if cut * qx.re() < rim * qy.re() {
                    let ex = qx - T::cst(rim);
                    let ey = qy - T::cst(cut);
                    let len = (ex * ex + ey * ey).sqrt();
                    let n = if qx.re() > 1e-12 {
                        let k = ex / len / qx;
                        [k * d[0], ey / len, k * d[2]]
                    } else {
                        [T::zero(), ey / len, T::zero()]
                    };
                    (len - T::cst(thickness), n)
                } else {
                    let l = (qx * qx + qy * qy).sqrt();
                    if l.re() < 1e-12 {
                        return (
                            T::cst(radius - thickness),
                            [T::zero(), -T::one(), T::zero()],
                        );
                    }
                    let e = l - T::cst(radius);
                    let sg = if e.re() < 0.0 { -T::one() } else { T::one() };
                    let n = std::array::from_fn(|k| d[k] / l * sg);
                    (e * sg - T::cst(thickness), n)
                }
            }
        }
    }
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
    /// Whether the orientation and angular velocity of its state act (see the module
    /// docs); `false`: a translating primitive, as DaXBench's pushers and grippers.
    #[serde(default)]
    pub rotating: bool,
}

/// A primitive's kinematic state during one substep.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PrimitiveState<T> {
    /// Centre, m.
    pub pos: V3<T>,
    /// Velocity, m/s.
    pub vel: V3<T>,
    /// Orientation, a quaternion `(w, x, y, z)` (normalised where used); rotating
    /// primitives only.
    pub rot: [T; 4],
    /// Angular velocity, rad/s; rotating primitives only.
    pub ang: V3<T>,
}

/// Number of scalars in a [`PrimitiveState`] (position, velocity, orientation, angular
/// velocity).
pub const PRIMITIVE_STATE_LEN: usize = 13;

impl<T: Real> PrimitiveState<T> {
    /// All zero (an adjoint accumulator).
    pub fn zero() -> Self {
        PrimitiveState {
            pos: [T::zero(); 3],
            vel: [T::zero(); 3],
            rot: [T::zero(); 4],
            ang: [T::zero(); 3],
        }
    }

    /// A primitive at `pos` moving with `vel`, unrotated and not spinning.
    pub fn translating(pos: V3<T>, vel: V3<T>) -> Self {
        PrimitiveState {
            pos,
            vel,
            rot: [T::one(), T::zero(), T::zero(), T::zero()],
            ang: [T::zero(); 3],
        }
    }

    /// The state as 13 numbers: position, velocity, orientation, angular velocity.
    pub fn to_array(&self) -> [T; PRIMITIVE_STATE_LEN] {
        let mut a = [T::zero(); PRIMITIVE_STATE_LEN];
        a[..3].copy_from_slice(&self.pos);
        a[3..6].copy_from_slice(&self.vel);
        a[6..10].copy_from_slice(&self.rot);
        a[10..].copy_from_slice(&self.ang);
        a
    }

    /// The inverse of [`Self::to_array`].
    pub fn from_array(a: &[T]) -> Self {
        PrimitiveState {
            pos: [a[0], a[1], a[2]],
            vel: [a[3], a[4], a[5]],
            rot: [a[6], a[7], a[8], a[9]],
            ang: [a[10], a[11], a[12]],
        }
    }

    /// The primal values.
    pub fn re(&self) -> PrimitiveState<f64> {
        PrimitiveState::from_array(&self.to_array().map(|x| x.re()))
    }
}

/// `R(q)·v` for the rotation of the quaternion `q = (w, x, y, z)` normalised, or `R(q)ᵀ·v`
/// with `inverse`.
pub fn quat_rotate<T: Real>(q: &[T; 4], v: &V3<T>, inverse: bool) -> V3<T> {
    let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    let w = q[0] / n;
    let s = if inverse { -T::one() } else { T::one() };
    let u = [q[1] / n * s, q[2] / n * s, q[3] / n * s];
    // v + 2w (u × v) + 2 u × (u × v)
    let uv = cross(&u, v);
    let uuv = cross(&u, &uv);
    std::array::from_fn(|k| v[k] + T::cst(2.0) * (w * uv[k] + uuv[k]))
}

/// `a × b`.
pub fn cross<T: Real>(a: &V3<T>, b: &V3<T>) -> V3<T> {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Hamilton product `a ⊗ b` (rotation `b` first, then `a`).
pub fn quat_mul<T: Real>(a: &[T; 4], b: &[T; 4]) -> [T; 4] {
    [
        a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
        a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
        a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
        a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0],
    ]
}

/// The unit quaternion of the rotation vector `phi` (axis × angle), smooth through 0 (a
/// Taylor form below |phi| = 1e-4).
pub fn quat_exp<T: Real>(phi: &V3<T>) -> [T; 4] {
    let n2 = phi[0] * phi[0] + phi[1] * phi[1] + phi[2] * phi[2];
    let (c, k) = if n2.re() < 1e-8 {
        // cos(θ/2) ≈ 1 − θ²/8, sin(θ/2)/θ ≈ 1/2 − θ²/48
        (T::one() - n2 / T::cst(8.0), T::cst(0.5) - n2 / T::cst(48.0))
    } else {
        let th = n2.sqrt();
        let h = th * T::cst(0.5);
        (h.cos(), h.sin() / th)
    };
    [c, phi[0] * k, phi[1] * k, phi[2] * k]
}

impl Primitive {
    /// A box pusher with DaXBench's friction 0.1 and softness 666.
    pub fn pusher(half: [f64; 3]) -> Primitive {
        Primitive {
            shape: Shape::Box { half },
            friction: 0.1,
            softness: 666.0,
            coupling: Coupling::Contact,
            rotating: false,
        }
    }

    /// DaXBench's rotating bowl (friction 0.1, softness 666) of mid-surface radius `radius`,
    /// cut height `cut` and half thickness `thickness`.
    pub fn bowl(radius: f64, cut: f64, thickness: f64) -> Primitive {
        Primitive {
            shape: Shape::Bowl {
                radius,
                cut,
                thickness,
            },
            friction: 0.1,
            softness: 666.0,
            coupling: Coupling::Contact,
            rotating: true,
        }
    }

    /// Signed distance and outward normal (world frame) at the point `p` for the
    /// primitive in state `s`.
    pub fn sdf<T: Real>(&self, p: &[f64; 3], s: &PrimitiveState<T>) -> (T, V3<T>) {
        let d: V3<T> = std::array::from_fn(|k| T::cst(p[k]) - s.pos[k]);
        if !self.rotating {
            return self.shape.sdf_local(&d);
        }
        let local = quat_rotate(&s.rot, &d, true);
        let (dist, n) = self.shape.sdf_local(&local);
        (dist, quat_rotate(&s.rot, &n, false))
    }

    /// The primitive's velocity at the point `p`: `v`, plus `ω × (p − c)` when rotating.
    pub fn velocity_at<T: Real>(&self, p: &[f64; 3], s: &PrimitiveState<T>) -> V3<T> {
        if !self.rotating {
            return s.vel;
        }
        let r: V3<T> = std::array::from_fn(|k| T::cst(p[k]) - s.pos[k]);
        let w = cross(&s.ang, &r);
        std::array::from_fn(|k| s.vel[k] + w[k])
    }

    fn size(&self) -> f64 {
        match self.shape {
            Shape::Box { half } => half.iter().fold(0.0, |a: f64, &b| a.max(b)),
            Shape::Bowl { radius, .. } => radius,
        }
    }

    /// A cheap exclusion test: `p` lies farther from the primitive's bounding box (along
    /// some axis) than the distance ln(10)/softness at which the influence drops to 0.1,
    /// so the coupling leaves the node alone. Exact: such nodes fail the influence test.
    #[inline]
    fn beyond_reach<T: Real>(&self, p: &[f64; 3], s: &PrimitiveState<T>) -> bool {
        let reach = std::f64::consts::LN_10 / self.softness * 1.000001;
        let dist2 = || (0..3).map(|k| (p[k] - s.pos[k].re()).powi(2)).sum::<f64>();
        match self.shape {
            Shape::Box { half } if !self.rotating => {
                (0..3).any(|k| (p[k] - s.pos[k].re()).abs() - half[k] > reach)
            }
            Shape::Box { half } => {
                let r = (half[0] * half[0] + half[1] * half[1] + half[2] * half[2]).sqrt();
                dist2() > (r + reach).powi(2)
            }
            Shape::Bowl {
                radius, thickness, ..
            } => dist2() > (radius + thickness + reach).powi(2),
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
                let (dist, _) = self.sdf(p, &s.re());
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
                let (dist, n) = self.sdf(p, s);
                let infl = (-dist * T::cst(self.softness)).exp();
                let infl = if infl.re() >= 1.0 { T::one() } else { infl };
                if !(infl.re() > 0.1 || dist.re() <= 0.0) {
                    return *v;
                }
                let w = self.velocity_at(p, s);
                let r: V3<T> = std::array::from_fn(|k| v[k] - w[k]);
                let rn = r[0] * n[0] + r[1] * n[1] + r[2] * n[2];
                let rn_neg = if rn.re() < 0.0 { rn } else { T::zero() };
                let mut t: V3<T> = std::array::from_fn(|k| r[k] - rn_neg * n[k]);
                let tn = (t[0] * t[0] + t[1] * t[1] + t[2] * t[2]).sqrt();
                if rn.re() < 0.0 && tn.re() > 1e-30 {
                    let m = tn + rn * T::cst(self.friction);
                    let m = if m.re() > 0.0 { m } else { T::zero() };
                    t = t.map(|x| x / tn * m);
                }
                std::array::from_fn(|k| (T::one() - infl) * v[k] + infl * (w[k] + t[k]))
            }
        }
    }

    /// VJP of [`Self::couple`]: returns the adjoint of `v` and accumulates those of the
    /// primitive's state into `adj_s` (orientation and angular velocity only when
    /// rotating).
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
        let sr = s.re().to_array();
        let x0: [f64; 3 + PRIMITIVE_STATE_LEN] = std::array::from_fn(|i| match i {
            0..=2 => v[i].re(),
            _ => sr[i - 3],
        });
        // a translating primitive ignores its orientation and angular velocity
        let inputs = if self.rotating { x0.len() } else { 9 };
        let mut adj_v = [T::zero(); 3];
        let mut adj_p = [T::zero(); PRIMITIVE_STATE_LEN];
        for i in 0..inputs {
            let x: [Dual<f64>; 3 + PRIMITIVE_STATE_LEN] =
                std::array::from_fn(|j| Dual::new(x0[j], if i == j { 1.0 } else { 0.0 }));
            let ps = PrimitiveState::from_array(&x[3..]);
            let out = self.couple(p, &[x[0], x[1], x[2]], &ps);
            let mut g = T::zero();
            for k in 0..3 {
                g += a[k] * T::cst(out[k].eps);
            }
            if i < 3 {
                adj_v[i] += g;
            } else {
                adj_p[i - 3] += g;
            }
        }
        let mut acc = adj_s.to_array();
        for (o, g) in acc.iter_mut().zip(adj_p) {
            *o += g;
        }
        *adj_s = PrimitiveState::from_array(&acc);
        adj_v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bowl_distance_and_normal() {
        let (r, t) = (0.09, 0.008);
        let bowl = Shape::Bowl {
            radius: r,
            cut: 0.0,
            thickness: t,
        };
        // bottom of the shell, inside the wall
        let (d, n) = bowl.sdf_local::<f64>(&[0.0, -r, 0.0]);
        assert!(
            (d + t).abs() < 1e-15 && (n[1] + 1.0).abs() < 1e-15,
            "{d} {n:?}"
        );
        // above the rim: the distance to the rim circle
        let (d, n) = bowl.sdf_local(&[r, 0.05, 0.0]);
        assert!((d - (0.05 - t)).abs() < 1e-15 && (n[1] - 1.0).abs() < 1e-15);
        // the open top: the centre is far from the shell, the inside of the cup too
        assert!((bowl.sdf_local(&[0.0, 0.0, 0.0]).0 - (r - t)).abs() < 1e-15);
        assert!((bowl.sdf_local(&[0.0, -0.05, 0.0]).0 - (r - 0.05 - t)).abs() < 1e-15);
        // the normal is the distance's gradient (central differences), on both parts
        for p in [
            [0.03, -0.07, 0.04],
            [0.02, -0.095, -0.01],
            [0.08, 0.02, 0.03],
            [-0.05, 0.01, 0.09],
        ] {
            let (_, n) = bowl.sdf_local::<f64>(&p);
            for k in 0..3 {
                let h = 1e-7;
                let (mut a, mut b) = (p, p);
                a[k] += h;
                b[k] -= h;
                let g = (bowl.sdf_local::<f64>(&a).0 - bowl.sdf_local::<f64>(&b).0) / (2.0 * h);
                assert!((g - n[k]).abs() < 1e-6, "{p:?} axis {k}: {g} vs {}", n[k]);
            }
        }
    }

    #[test]
    fn rotation_helpers() {
        // a quarter turn about x takes +y to +z, and quat_exp composes with quat_mul
        let q = quat_exp(&[std::f64::consts::FRAC_PI_2, 0.0, 0.0]);
        let v = quat_rotate(&q, &[0.0, 1.0, 0.0], false);
        assert!((v[2] - 1.0).abs() < 1e-12 && v[1].abs() < 1e-12);
        let back = quat_rotate(&q, &v, true);
        assert!((back[1] - 1.0).abs() < 1e-12);
        let half = quat_exp(&[std::f64::consts::FRAC_PI_4, 0.0, 0.0]);
        let two = quat_mul(&half, &half);
        for k in 0..4 {
            assert!((two[k] - q[k]).abs() < 1e-12);
        }
        // the small-angle branch agrees with the exact one at the switch
        let a: [f64; 4] = quat_exp(&[1.0001e-4, 0.0, 0.0]);
        let b: [f64; 4] = quat_exp(&[0.9999e-4, 0.0, 0.0]);
        assert!((a[1] - b[1] - 1e-8).abs() < 1e-14);
    }
}

//! Brax's centre-of-mass based body terms (`brax/envs/humanoid.py:_com`, `_get_obs`),
//! computed from the articulation's own forward kinematics and velocities
//! ([`Articulation::kinematics`], [`Articulation::velocities`]) and differentiated through
//! their hand-written adjoints.
//!
//! The *bodies* are the links that carry mass: with one link per joint, the massless chain
//! links of a multi-joint MJCF body contribute nothing, and each MJCF body is its last link
//! (Brax's links, after its loader fuses jointless bodies into their parents).
//!
//! With `m_b`, `c_b` (world COM), `R_b`, `I_b` (inertia about the COM in the link frame) and
//! the world twist `(ω_b, v_b)` of body `b` (`v_b` the velocity of the point at the world
//! origin), `M = Σ m_b` and `c = Σ m_b c_b / M`:
//! - COM velocity `ċ = Σ m_b (v_b + ω_b × c_b) / M`;
//! - `cinert_b = C (R_b I_b R_bᵀ + m_b (|d|² E − d dᵀ)) Cᵀ` (row-major, 9) and `m_b`,
//!   `d = c_b − c` (Brax: `x_i.replace(pos = x_i.pos − com).do(inertia)`);
//! - `cvel_b = (m_b / M · C (v_b + ω_b × c_b), C ω_b)` (Brax: the body's motion moved to its
//!   COM, the linear part scaled by `m_b / M`);
//!
//! with `C` the rotation from our Y-up world to Brax's z-up world.

use crate::dynamics::{Substep, SubstepAdj};
use crate::model::Articulation;
use crate::spatial::{add, cross, m3_cst, mm, mmt, mtm, mtv, mv, scale, M3, V3};
use diff_core::Real;

/// Observation entries per body: cinert (10) in one block, cvel (6) in another.
pub const CINERT: usize = 10;
pub const CVEL: usize = 6;

/// The COM-based terms of an articulation.
#[derive(Clone, Debug)]
pub struct BodyTerms {
    /// Links with mass, in link order.
    pub bodies: Vec<usize>,
    /// Total mass.
    pub total_mass: f64,
    /// Rotation from our world to Brax's.
    c: M3<f64>,
}

impl BodyTerms {
    /// The terms of `art`, reported in the frame rotated by `c` (our world → Brax's).
    pub fn new(art: &Articulation, c: M3<f64>) -> Self {
        let bodies: Vec<usize> = (0..art.links.len())
            .filter(|&i| art.links[i].mass > 0.0)
            .collect();
        let total_mass = bodies.iter().map(|&i| art.links[i].mass).sum();
        BodyTerms {
            bodies,
            total_mass,
            c,
        }
    }

    /// Number of bodies.
    pub fn n_bodies(&self) -> usize {
        self.bodies.len()
    }

    /// Observation entries: `n_bodies × (CINERT + CVEL)`.
    pub fn obs_len(&self) -> usize {
        self.n_bodies() * (CINERT + CVEL)
    }

    /// Kinematics and velocities of the state row `s = [q, q̇, …]`.
    fn forward<T: Real>(art: &Articulation, s: &[T]) -> Substep<T> {
        let mut sub = Substep::new(art);
        let (nq, nd) = (art.n_q, art.n_qd);
        sub.q.copy_from_slice(&s[..nq]);
        sub.qd.copy_from_slice(&s[nq..nq + nd]);
        art.kinematics(&mut sub);
        art.velocities(&mut sub);
        sub
    }

    /// Propagates the link adjoints in `adj` back to the state: accumulates into `adj_s`.
    fn backward<T: Real>(
        art: &Articulation,
        sub: &Substep<T>,
        mut adj: SubstepAdj<T>,
        adj_s: &mut [T],
    ) {
        art.velocities_vjp(sub, &mut adj);
        art.kinematics_vjp(sub, &mut adj);
        let nq = art.n_q;
        for (k, g) in adj.q.iter().enumerate() {
            adj_s[k] += *g;
        }
        for (k, g) in adj.qd.iter().enumerate() {
            adj_s[nq + k] += *g;
        }
    }

    /// The world velocity of body `i`'s COM, `v + ω × c`.
    fn com_point_velocity<T: Real>(sub: &Substep<T>, i: usize) -> V3<T> {
        let ls = &sub.links[i];
        let (w, v) = ([ls.v[0], ls.v[1], ls.v[2]], [ls.v[3], ls.v[4], ls.v[5]]);
        add(v, cross(w, ls.com))
    }

    /// Adds the adjoint `g` of `v + ω × c` of body `i` into `adj`.
    fn com_point_velocity_vjp<T: Real>(
        sub: &Substep<T>,
        i: usize,
        g: V3<T>,
        adj: &mut SubstepAdj<T>,
    ) {
        let ls = &sub.links[i];
        let w = [ls.v[0], ls.v[1], ls.v[2]];
        let gw = cross(ls.com, g); // λ·(ω × c) = ω·(c × λ)
        let gc = cross(g, w); // λ·(ω × c) = c·(λ × ω)
        let la = &mut adj.links[i];
        for k in 0..3 {
            la.v[k] += gw[k];
            la.v[3 + k] += g[k];
            la.com[k] += gc[k];
        }
    }

    /// The whole-body COM velocity in Brax's frame.
    pub fn com_velocity<T: Real>(&self, art: &Articulation, s: &[T]) -> V3<T> {
        let sub = Self::forward(art, s);
        let mut v = [T::zero(); 3];
        for &i in &self.bodies {
            let w = T::cst(art.links[i].mass / self.total_mass);
            v = add(v, scale(Self::com_point_velocity(&sub, i), w));
        }
        mv(&m3_cst(self.c), v)
    }

    /// VJP of [`BodyTerms::com_velocity`]: accumulates into `adj_s`.
    pub fn com_velocity_vjp<T: Real>(
        &self,
        art: &Articulation,
        s: &[T],
        g: V3<T>,
        adj_s: &mut [T],
    ) {
        let sub = Self::forward(art, s);
        let mut adj = SubstepAdj::new(art);
        let gw = mtv(&m3_cst(self.c), g);
        for &i in &self.bodies {
            let w = T::cst(art.links[i].mass / self.total_mass);
            Self::com_point_velocity_vjp(&sub, i, scale(gw, w), &mut adj);
        }
        Self::backward(art, &sub, adj, adj_s);
    }

    fn com<T: Real>(&self, art: &Articulation, sub: &Substep<T>) -> V3<T> {
        let mut c = [T::zero(); 3];
        for &i in &self.bodies {
            let w = T::cst(art.links[i].mass / self.total_mass);
            c = add(c, scale(sub.links[i].com, w));
        }
        c
    }

    /// Writes `[cinert (n_bodies × 10), cvel (n_bodies × 6)]` into `out`.
    pub fn observe<T: Real>(&self, art: &Articulation, s: &[T], out: &mut [T]) {
        let sub = Self::forward(art, s);
        let com = self.com(art, &sub);
        let c = m3_cst::<T>(self.c);
        let nb = self.n_bodies();
        for (b, &i) in self.bodies.iter().enumerate() {
            let link = &art.links[i];
            let ls = &sub.links[i];
            let m = T::cst(link.mass);
            let d = sub_v(ls.com, com);
            let d2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            let mut ib = mmt(&mm(&ls.x_sc.r, &m3_cst(link.inertia)), &ls.x_sc.r);
            for r in 0..3 {
                ib[r][r] += m * d2;
                for k in 0..3 {
                    ib[r][k] -= m * d[r] * d[k];
                }
            }
            let ic = mmt(&mm(&c, &ib), &c);
            let o = b * CINERT;
            for r in 0..3 {
                for k in 0..3 {
                    out[o + 3 * r + k] = ic[r][k];
                }
            }
            out[o + 9] = m;
            let vel = mv(&c, Self::com_point_velocity(&sub, i));
            let ang = mv(&c, [ls.v[0], ls.v[1], ls.v[2]]);
            let o = nb * CINERT + b * CVEL;
            let w = T::cst(link.mass / self.total_mass);
            for k in 0..3 {
                out[o + k] = w * vel[k];
                out[o + 3 + k] = ang[k];
            }
        }
    }

    /// VJP of [`BodyTerms::observe`]: accumulates into `adj_s`.
    pub fn observe_vjp<T: Real>(&self, art: &Articulation, s: &[T], ao: &[T], adj_s: &mut [T]) {
        let sub = Self::forward(art, s);
        let com = self.com(art, &sub);
        let c = m3_cst::<T>(self.c);
        let nb = self.n_bodies();
        let mut adj = SubstepAdj::new(art);
        let mut adj_com = [T::zero(); 3];
        for (b, &i) in self.bodies.iter().enumerate() {
            let link = &art.links[i];
            let ls = &sub.links[i];
            let m = T::cst(link.mass);
            // cinert: G on C X Cᵀ → A = Cᵀ G C on X = R I Rᵀ + m(|d|² E − d dᵀ)
            let o = b * CINERT;
            let g: M3<T> = std::array::from_fn(|r| std::array::from_fn(|k| ao[o + 3 * r + k]));
            let a = mtm(&c, &mm(&g, &c));
            let a_sym: M3<T> = std::array::from_fn(|r| std::array::from_fn(|k| a[r][k] + a[k][r]));
            // ∂/∂R of R I Rᵀ: (A + Aᵀ) R I
            let ar = mm(&mm(&a_sym, &ls.x_sc.r), &m3_cst(link.inertia));
            let la = &mut adj.links[i];
            for r in 0..3 {
                for k in 0..3 {
                    la.x_sc_r[r][k] += ar[r][k];
                }
            }
            let d = sub_v(ls.com, com);
            let tr = a[0][0] + a[1][1] + a[2][2];
            let ad = sub_v(scale(d, T::cst(2.0) * tr), mv(&a_sym, d));
            let ad = scale(ad, m);
            for k in 0..3 {
                la.com[k] += ad[k];
                adj_com[k] -= ad[k];
            }
            // cvel
            let o = nb * CINERT + b * CVEL;
            let w = T::cst(link.mass / self.total_mass);
            let gv = mtv(&c, [w * ao[o], w * ao[o + 1], w * ao[o + 2]]);
            let ga = mtv(&c, [ao[o + 3], ao[o + 4], ao[o + 5]]);
            for k in 0..3 {
                adj.links[i].v[k] += ga[k];
            }
            Self::com_point_velocity_vjp(&sub, i, gv, &mut adj);
        }
        for &i in &self.bodies {
            let w = T::cst(art.links[i].mass / self.total_mass);
            let g = scale(adj_com, w);
            for k in 0..3 {
                adj.links[i].com[k] += g[k];
            }
        }
        Self::backward(art, &sub, adj, adj_s);
    }
}

fn sub_v<T: Real>(a: V3<T>, b: V3<T>) -> V3<T> {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

//! Stage 3b: ground contact (dflex `sim.py:eval_rigid_contacts_art`, tasks.md §1.5), with
//! its hand-written adjoint.
//!
//! For every contact point (fixed on its link at model-build time, fidelity trap 10), with
//! the ground normal `n = (0, 1, 0)` and the shape thickness `r`:
//!
//! - `p = X_sc·p_local − r·n`, gap `c = n·p`; no force when `c ≥ 0`;
//! - `ṗ = v + ω × p` from the link's world twist, `v_n = n·ṗ`, `v_t = ṗ − n v_n`;
//! - normal force on the body `F_n = ke·d + kd·d·max(−v_n, 0)` with `d = −c`
//!   (depth-scaled damping, fidelity trap 8);
//! - friction `F_t = −v̂_t·min(kf‖v_t‖, mu·ke·d)` (Coulomb cap on the elastic part only,
//!   fidelity trap 9);
//! - the wrench `(p × F, F)` is **subtracted** from the link's bias force `f` (dflex stores
//!   "required minus external", §1.3).
//!
//! Derivatives at the kinks are one-sided, exactly as the forward branches are taken:
//! - contact onset `c = 0`: no contact (derivative 0), as `c ≥ 0` returns early;
//! - `v_n = 0`: the damping branch is off (`min(v_n, 0)` picks `v_n` only when `v_n < 0`),
//!   so the derivative in `v_n` is that of the undamped side; dflex's `step(c)` factor has
//!   zero derivative (fidelity trap 12);
//! - `kf‖v_t‖ = mu·ke·d`: the Coulomb side (dflex's `min(a, b)` returns `b` on ties);
//! - `‖v_t‖ = 0`: zero friction and zero derivative (dflex's `normalize(0) = 0`).

use crate::dynamics::{Substep, SubstepAdj};
use crate::model::{Articulation, ContactPoint};
use crate::spatial::*;
use diff_core::Real;

/// Branches taken by one contact, recomputed identically by the adjoint.
struct Eval<T> {
    /// World contact point.
    p: V3<T>,
    /// Gap (negative in contact).
    c: T,
    /// Point velocity.
    dpdt: V3<T>,
    /// Force as dflex accumulates it: minus the force on the body.
    f: V3<T>,
    /// `‖v_t‖`.
    vt_len: T,
    damped: bool,
    /// `Some(true)`: viscous friction; `Some(false)`: Coulomb; `None`: no friction.
    viscous: Option<bool>,
}

#[inline(always)]
fn eval<T: Real>(cp: &ContactPoint, x: &Transform<T>, v: &Sv<T>) -> Option<Eval<T>> {
    let m = &cp.material;
    let mut p = x.point(v3_cst(cp.point));
    p[1] -= T::cst(cp.thickness);
    let c = p[1];
    if c.re() >= 0.0 {
        return None;
    }
    let dpdt = add(sv_lin(v), cross(sv_ang(v), p));
    let vn = dpdt[1];
    let (ke, kd, kf, mu) = (T::cst(m.ke), T::cst(m.kd), T::cst(m.kf), T::cst(m.mu));
    // fn + fd = c·ke + min(v_n, 0)·kd·(−c)   (≤ 0: the negated normal force)
    let damped = vn.re() < 0.0;
    let mut fy = c * ke;
    if damped {
        fy -= vn * kd * c;
    }
    let vt = [dpdt[0], dpdt[2]];
    let vt_len = (vt[0] * vt[0] + vt[1] * vt[1]).sqrt();
    let cap = -(mu * c * ke);
    let (ft, viscous) = if vt_len.re() > 0.0 {
        if (kf * vt_len).re() < cap.re() {
            ([kf * vt[0], kf * vt[1]], Some(true))
        } else {
            ([vt[0] / vt_len * cap, vt[1] / vt_len * cap], Some(false))
        }
    } else {
        ([T::zero(), T::zero()], None)
    };
    Some(Eval {
        p,
        c,
        dpdt,
        f: [ft[0], fy, ft[1]],
        vt_len,
        damped,
        viscous,
    })
}

impl Articulation {
    /// Adds every contact's wrench into its link's `f` (call after
    /// [`Articulation::bias_forces`]).
    pub fn contacts<T: Real>(&self, sub: &mut Substep<T>) {
        for cp in &self.contacts {
            let ls = &sub.links[cp.link];
            if let Some(e) = eval(cp, &ls.x_sc, &ls.v) {
                let w = sv_new(cross(e.p, e.f), e.f);
                sv_add_assign(&mut sub.links[cp.link].f, &w);
            }
        }
    }

    /// Adjoint of [`Articulation::contacts`]: reads `adj.links[*].f` (the contact wrench
    /// enters `f` additively), accumulates into `adj.links[*].{x_sc_p, x_sc_r, v}`.
    pub fn contacts_vjp<T: Real>(&self, sub: &Substep<T>, adj: &mut SubstepAdj<T>) {
        for cp in &self.contacts {
            let ls = &sub.links[cp.link];
            let Some(e) = eval(cp, &ls.x_sc, &ls.v) else {
                continue;
            };
            let la = &mut adj.links[cp.link];
            let m = &cp.material;
            let (ke, kd, kf, mu) = (T::cst(m.ke), T::cst(m.kd), T::cst(m.kf), T::cst(m.mu));
            let (lt, lf) = (sv_ang(&la.f), sv_lin(&la.f));
            // w = (p × F, F)
            let mut adj_p = cross(e.f, lt);
            let adj_f = add(lf, cross(lt, e.p));
            let mut adj_c = T::zero();
            let mut adj_dpdt = v3_zero::<T>();
            // F_y = c·ke − [v_n < 0]·v_n·kd·c
            adj_c += adj_f[1] * ke;
            if e.damped {
                let vn = e.dpdt[1];
                adj_c -= adj_f[1] * vn * kd;
                adj_dpdt[1] -= adj_f[1] * kd * e.c;
            }
            // friction
            let vt = [e.dpdt[0], e.dpdt[2]];
            let aft = [adj_f[0], adj_f[2]];
            match e.viscous {
                Some(true) => {
                    adj_dpdt[0] += kf * aft[0];
                    adj_dpdt[2] += kf * aft[1];
                }
                Some(false) => {
                    let cap = -(mu * e.c * ke);
                    let u = [vt[0] / e.vt_len, vt[1] / e.vt_len];
                    let udot = u[0] * aft[0] + u[1] * aft[1];
                    adj_c -= udot * mu * ke;
                    let s = cap / e.vt_len;
                    adj_dpdt[0] += s * (aft[0] - u[0] * udot);
                    adj_dpdt[2] += s * (aft[1] - u[1] * udot);
                }
                None => {}
            }
            // ṗ = v + ω × p
            let w = sv_ang(&ls.v);
            let aw = cross(e.p, adj_dpdt);
            add_assign(&mut adj_p, cross(adj_dpdt, w));
            for k in 0..3 {
                la.v[k] += aw[k];
                la.v[3 + k] += adj_dpdt[k];
            }
            // c = p_y; p = R·p_local + p_sc − r·n
            adj_p[1] += adj_c;
            add_assign(&mut la.x_sc_p, adj_p);
            m3_add_outer(&mut la.x_sc_r, adj_p, v3_cst(cp.point));
        }
    }
}

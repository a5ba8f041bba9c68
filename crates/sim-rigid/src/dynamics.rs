//! One dflex substep as a pipeline of named stages, each with its hand-written adjoint
//! (tasks.md §1.3, `sim.py:SemiImplicitIntegrator._simulate`):
//!
//! 1. [`Articulation::kinematics`]: forward kinematics `X_sc = X_sc(parent)·X_pj·X_j(q)`,
//!    COM positions and world-frame motion subspaces `S`;
//! 2. [`Articulation::velocities`]: `v = v_parent + S q̇`, `a = a_parent + v ×ₘ S q̇`;
//! 3. [`Articulation::bias_forces`]: `f = I_s a + v ×* I_s v − f_gravity`, with `I_s`
//!    applied in compact form; 3b. [`Articulation::contacts`] (`contact.rs`): ground
//!    contact wrenches added into `f`;
//! 4. [`Articulation::joint_torques`]: `f_total` accumulated leaves → root and
//!    `τ = −Sᵀf_total − k_e(q − q_target) − k_d q̇ + act + f_limit − k_limit_d q̇`;
//! 5. [`Articulation::spatial_inertias`] and [`Articulation::mass_matrix`] (every
//!    `mm_freq` substeps): the world spatial inertias `I_s`, then `H = Jᵀ M J`, evaluated as
//!    `H_de = S_dᵀ I^c_(link e) S_e` with subtree-composite inertias `I^c` (the same sum as
//!    the dense product, without the zero blocks), plus the armature on the diagonal, and
//!    its Cholesky factor;
//! 6. [`Articulation::solve`]: `q̈ = (H + diag(armature))⁻¹ τ`;
//! 7. [`Articulation::integrate`]: semi-implicit Euler `q̇' = q̇ + q̈ dt`, `q' = q + q̇' dt`.
//!
//! The adjoint of the linear solve follows dflex (`matnn.h`): `adj_τ = H⁻¹ adj_q̈`,
//! `adj_H −= adj_τ q̈ᵀ`; the Cholesky factorisation itself has no adjoint, the gradient
//! reaches `H` through the solve. With mass-matrix caching, the substeps that reuse a
//! cached `H` send their `adj_H` to the substep that built it, so gradients reach the
//! state only through the configuration at which `H` was built (fidelity trap 11).
//!
//! Ball and free joints rotate by `R_sc = R_sj·R(quat)` with dflex's `quat_rotate` matrix
//! `R(q) = (2w² − 1)I + 2w[v]× + 2vvᵀ`; dflex composes the quaternions instead
//! (`spatial_transform_multiply`). The two agree exactly for unit quaternions, which every
//! state has (the integrator normalises); they differ only in derivatives off the unit
//! sphere, a direction no trajectory moves in.
//!
//! Everything is generic over [`Real`]: `f32` for training, `f64` for the finite-difference
//! oracle, [`diff_core::Dual`] for JVPs.

use crate::model::{Articulation, EffortSaturation, JointKind};
use crate::spatial::*;
use diff_core::Real;

/// Integration parameters of a task.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SimParams {
    /// Control timestep in seconds (DiffRL: 1/60).
    pub dt: f64,
    /// Substeps per control step.
    pub substeps: usize,
    /// Rebuild the mass matrix on substeps `i` with `i % mm_freq == 0`
    /// (`MM_caching_frequency`).
    pub mm_freq: usize,
}

impl SimParams {
    /// Substep length.
    pub fn sub_dt(&self) -> f64 {
        self.dt / self.substeps as f64
    }
}

/// Per-link intermediates of one substep.
#[derive(Clone, Copy, Debug)]
pub struct LinkState<T> {
    /// Joint frame before the joint's own motion: `X_sc(parent)·X_pj`.
    pub x_sj: Transform<T>,
    /// Link frame in the world.
    pub x_sc: Transform<T>,
    /// COM in the world.
    pub com: V3<T>,
    /// Spatial velocity (world twist).
    pub v: Sv<T>,
    /// Velocity-product acceleration (q̈ = 0).
    pub a: Sv<T>,
    /// Rotational inertia about the COM in world axes, `R I_c Rᵀ`.
    pub i_w: M3<T>,
    /// Spatial inertia about the world origin (built only on mass-matrix substeps).
    pub i_s: M6<T>,
    /// Bias force minus external forces (`body_f_s`).
    pub f: Sv<T>,
    /// `f` accumulated over the subtree.
    pub f_tot: Sv<T>,
}

/// Adjoints of [`LinkState`]'s fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkAdj<T> {
    pub x_sj_p: V3<T>,
    pub x_sj_r: M3<T>,
    pub x_sc_p: V3<T>,
    pub x_sc_r: M3<T>,
    pub com: V3<T>,
    pub v: Sv<T>,
    pub a: Sv<T>,
    pub i_s: M6<T>,
    pub f: Sv<T>,
    pub f_tot: Sv<T>,
}

/// Everything one substep computes, kept for its adjoint.
#[derive(Clone, Debug)]
pub struct Substep<T> {
    /// Input coordinates.
    pub q: Vec<T>,
    /// Input velocities.
    pub qd: Vec<T>,
    pub links: Vec<LinkState<T>>,
    /// World-frame motion subspace per DOF.
    pub s: Vec<Sv<T>>,
    pub tau: Vec<T>,
    /// Per DOF: ∂τ_motor/∂(unsaturated motor torque), 1 without saturation, 0 on a hard
    /// clamp, sech² under the smooth tanh saturation.
    pub motor_gain: Vec<T>,
    pub qdd: Vec<T>,
    /// Output coordinates.
    pub q_out: Vec<T>,
    /// Output velocities.
    pub qd_out: Vec<T>,
}

/// Adjoint buffers of one substep.
#[derive(Clone, Debug)]
pub struct SubstepAdj<T> {
    pub q: Vec<T>,
    pub qd: Vec<T>,
    pub links: Vec<LinkAdj<T>>,
    pub s: Vec<Sv<T>>,
    pub tau: Vec<T>,
    pub qdd: Vec<T>,
    pub act: Vec<T>,
}

/// The cached mass matrix: composite inertias, `H + diag(armature)`, its Cholesky factor.
#[derive(Clone, Debug)]
pub struct MassMatrix<T> {
    /// Subtree-composite spatial inertia per link.
    pub ic: Vec<M6<T>>,
    /// `I^c S_e` per DOF.
    pub ics: Vec<Sv<T>>,
    /// `H + diag(armature)`, row-major n×n.
    pub h: Vec<T>,
    /// Lower Cholesky factor, row-major n×n.
    pub l: Vec<T>,
    /// Adjoint of `h` (accumulated by the solves that used it).
    pub adj_h: Vec<T>,
    /// Scratch for the adjoint of `ic`.
    pub adj_ic: Vec<M6<T>>,
}

/// Per-thread working memory for one env: all substeps of a control step and the
/// adjoint buffers. Allocated once and reused; no allocation happens inside a step.
#[derive(Clone, Debug)]
pub struct Workspace<T> {
    pub subs: Vec<Substep<T>>,
    /// One mass matrix per rebuild within a step (substep `k` uses `mm[k / mm_freq]`).
    pub mm: Vec<MassMatrix<T>>,
    pub adj: SubstepAdj<T>,
    /// Adjoint of the coordinates flowing from a substep into the previous one.
    pub carry_q: Vec<T>,
    /// Adjoint of the velocities flowing from a substep into the previous one.
    pub carry_qd: Vec<T>,
}

impl<T: Real> Workspace<T> {
    /// Working memory for `art` integrated with `params`.
    pub fn new(art: &Articulation, params: &SimParams) -> Self {
        let substeps = params.substeps.max(1);
        let builds = substeps.div_ceil(params.mm_freq.max(1));
        let (nl, nq, nd) = (art.links.len(), art.n_q, art.n_qd);
        let z = T::zero();
        Workspace {
            subs: vec![Substep::new(art); substeps],
            mm: vec![
                MassMatrix {
                    ic: vec![m6_zero(); nl],
                    ics: vec![sv_zero(); nd],
                    h: vec![z; nd * nd],
                    l: vec![z; nd * nd],
                    adj_h: vec![z; nd * nd],
                    adj_ic: vec![m6_zero(); nl],
                };
                builds
            ],
            adj: SubstepAdj::new(art),
            carry_q: vec![z; nq],
            carry_qd: vec![z; nd],
        }
    }
}

impl<T: Real> Substep<T> {
    /// A zeroed substep for `art`.
    pub fn new(art: &Articulation) -> Self {
        let (nl, nq, nd) = (art.links.len(), art.n_q, art.n_qd);
        let z = T::zero();
        Substep {
            q: vec![z; nq],
            qd: vec![z; nd],
            links: vec![LinkState::zero(); nl],
            s: vec![sv_zero(); nd],
            tau: vec![z; nd],
            motor_gain: vec![T::one(); nd],
            qdd: vec![z; nd],
            q_out: vec![z; nq],
            qd_out: vec![z; nd],
        }
    }
}

impl<T: Real> SubstepAdj<T> {
    /// Zeroed adjoint buffers for `art`.
    pub fn new(art: &Articulation) -> Self {
        let (nl, nq, nd) = (art.links.len(), art.n_q, art.n_qd);
        let z = T::zero();
        SubstepAdj {
            q: vec![z; nq],
            qd: vec![z; nd],
            links: vec![LinkAdj::default(); nl],
            s: vec![sv_zero(); nd],
            tau: vec![z; nd],
            qdd: vec![z; nd],
            act: vec![z; nd],
        }
    }

    /// Zeroes every buffer except `act` (which accumulates over the substeps of a step).
    fn clear_stages(&mut self) {
        let z = T::zero();
        self.q.iter_mut().for_each(|x| *x = z);
        self.qd.iter_mut().for_each(|x| *x = z);
        self.links.iter_mut().for_each(|l| *l = LinkAdj::default());
        self.s.iter_mut().for_each(|s| *s = sv_zero());
        self.tau.iter_mut().for_each(|x| *x = z);
        self.qdd.iter_mut().for_each(|x| *x = z);
    }
}

impl<T: Real> LinkState<T> {
    fn zero() -> Self {
        LinkState {
            x_sj: Transform::default(),
            x_sc: Transform::default(),
            com: v3_zero(),
            i_w: m3_zero(),
            v: sv_zero(),
            a: sv_zero(),
            i_s: m6_zero(),
            f: sv_zero(),
            f_tot: sv_zero(),
        }
    }
}

impl Articulation {
    // ------------------------------------------------------------------ stage 1
    /// Forward kinematics: `x_sj`, `x_sc`, COM and motion subspaces from `sub.q`.
    pub fn kinematics<T: Real>(&self, sub: &mut Substep<T>) {
        for (i, link) in self.links.iter().enumerate() {
            let x_pj = Transform::<T>::cst(&link.joint.x_pj);
            let x_sj = match link.parent {
                // MJCF joint frames carry no rotation (body `quat` is ignored): skip the
                // 3×3 product then
                Some(p) if is_identity(&link.joint.x_pj.r) => {
                    let xp = &sub.links[p].x_sc;
                    Transform {
                        p: xp.point(x_pj.p),
                        r: xp.r,
                    }
                }
                Some(p) => sub.links[p].x_sc.mul(&x_pj),
                None => x_pj,
            };
            let axis = v3_cst::<T>(link.joint.axis);
            let x_sc = match link.joint.kind {
                JointKind::Fixed => x_sj,
                JointKind::Ball => Transform {
                    p: x_sj.p,
                    r: mm(&x_sj.r, &quat_rot(self.joint_quat(sub, i))),
                },
                JointKind::Free => {
                    let qs = link.q_start;
                    let pq = [sub.q[qs], sub.q[qs + 1], sub.q[qs + 2]];
                    Transform {
                        p: add(x_sj.p, mv(&x_sj.r, pq)),
                        r: mm(&x_sj.r, &quat_rot(self.joint_quat(sub, i))),
                    }
                }
                JointKind::Revolute => {
                    let q = sub.q[link.q_start];
                    Transform {
                        p: x_sj.p,
                        r: mm(&x_sj.r, &axis_angle(axis, q)),
                    }
                }
                JointKind::Prismatic => {
                    let q = sub.q[link.q_start];
                    Transform {
                        p: add(x_sj.p, mv(&x_sj.r, scale(axis, q))),
                        r: x_sj.r,
                    }
                }
            };
            let d = link.qd_start;
            match link.joint.kind {
                JointKind::Fixed => {}
                JointKind::Revolute => {
                    let w = mv(&x_sj.r, axis);
                    sub.s[d] = sv_new(w, cross(x_sj.p, w));
                }
                JointKind::Prismatic => {
                    sub.s[d] = sv_new(v3_zero(), mv(&x_sj.r, axis));
                }
                JointKind::Ball => {
                    // S_k = X_sj·(e_k, 0): the joint-frame axes carried to the world
                    for k in 0..3 {
                        let w = [x_sj.r[0][k], x_sj.r[1][k], x_sj.r[2][k]];
                        sub.s[d + k] = sv_new(w, cross(x_sj.p, w));
                    }
                }
                JointKind::Free => {
                    // the twist is already in world coordinates: S = I₆
                    for k in 0..6 {
                        let mut e = sv_zero::<T>();
                        e[k] = T::one();
                        sub.s[d + k] = e;
                    }
                }
            }
            let ls = &mut sub.links[i];
            ls.com = x_sc.point(v3_cst(link.com));
            ls.x_sj = x_sj;
            ls.x_sc = x_sc;
        }
    }

    /// Adjoint of [`Articulation::kinematics`]: consumes `adj.links[*].{x_sc_*, com}` and
    /// `adj.s`, accumulates into `adj.q`.
    pub fn kinematics_vjp<T: Real>(&self, sub: &Substep<T>, adj: &mut SubstepAdj<T>) {
        for (i, link) in self.links.iter().enumerate().rev() {
            let ls = &sub.links[i];
            let axis = v3_cst::<T>(link.joint.axis);
            let mut la = adj.links[i];
            // com = p_sc + R_sc·com_local
            add_assign(&mut la.x_sc_p, la.com);
            m3_add_outer(&mut la.x_sc_r, la.com, v3_cst(link.com));
            match link.joint.kind {
                JointKind::Fixed => {
                    add_assign(&mut la.x_sj_p, la.x_sc_p);
                    m3_add_assign(&mut la.x_sj_r, &la.x_sc_r);
                }
                JointKind::Revolute => {
                    let qi = link.q_start;
                    let rq = axis_angle(axis, sub.q[qi]);
                    // motion subspace S = (w, p_sj × w), w = R_sj·axis
                    let s = adj.s[link.qd_start];
                    let w = mv(&ls.x_sj.r, axis);
                    let adj_w = add(sv_ang(&s), cross(sv_lin(&s), ls.x_sj.p));
                    add_assign(&mut la.x_sj_p, cross(w, sv_lin(&s)));
                    m3_add_outer(&mut la.x_sj_r, adj_w, axis);
                    // x_sc = (p_sj, R_sj·Rq)
                    add_assign(&mut la.x_sj_p, la.x_sc_p);
                    m3_add_assign(&mut la.x_sj_r, &mmt(&la.x_sc_r, &rq));
                    let adj_rq = mtm(&ls.x_sj.r, &la.x_sc_r);
                    let drq = mm(&skew(axis), &rq); // d Rq / dq = [a]× Rq
                    let mut g = T::zero();
                    for r in 0..3 {
                        for c in 0..3 {
                            g += adj_rq[r][c] * drq[r][c];
                        }
                    }
                    adj.q[qi] += g;
                }
                JointKind::Prismatic => {
                    let qi = link.q_start;
                    let s = adj.s[link.qd_start];
                    m3_add_outer(&mut la.x_sj_r, sv_lin(&s), axis);
                    // x_sc = (p_sj + R_sj·axis·q, R_sj)
                    add_assign(&mut la.x_sj_p, la.x_sc_p);
                    m3_add_outer(&mut la.x_sj_r, la.x_sc_p, scale(axis, sub.q[qi]));
                    adj.q[qi] += dot(mv(&ls.x_sj.r, axis), la.x_sc_p);
                    m3_add_assign(&mut la.x_sj_r, &la.x_sc_r);
                }
                JointKind::Ball => {
                    let d = link.qd_start;
                    for k in 0..3 {
                        let s = adj.s[d + k];
                        let w = [ls.x_sj.r[0][k], ls.x_sj.r[1][k], ls.x_sj.r[2][k]];
                        let adj_w = add(sv_ang(&s), cross(sv_lin(&s), ls.x_sj.p));
                        add_assign(&mut la.x_sj_p, cross(w, sv_lin(&s)));
                        for r in 0..3 {
                            la.x_sj_r[r][k] += adj_w[r];
                        }
                    }
                    add_assign(&mut la.x_sj_p, la.x_sc_p);
                    self.joint_rotation_vjp(sub, i, &ls.x_sj.r, &mut la, adj);
                }
                JointKind::Free => {
                    // S = I₆ is constant; x_sc = (p_sj + R_sj·p_q, R_sj·R(quat))
                    let qs = link.q_start;
                    let pq = [sub.q[qs], sub.q[qs + 1], sub.q[qs + 2]];
                    add_assign(&mut la.x_sj_p, la.x_sc_p);
                    m3_add_outer(&mut la.x_sj_r, la.x_sc_p, pq);
                    let apq = mtv(&ls.x_sj.r, la.x_sc_p);
                    for k in 0..3 {
                        adj.q[qs + k] += apq[k];
                    }
                    self.joint_rotation_vjp(sub, i, &ls.x_sj.r, &mut la, adj);
                }
            }
            // x_sj = X_sc(parent)·X_pj
            if let Some(p) = link.parent {
                let pj = &link.joint.x_pj;
                let pa = &mut adj.links[p];
                add_assign(&mut pa.x_sc_p, la.x_sj_p);
                if is_identity(&pj.r) {
                    m3_add_assign(&mut pa.x_sc_r, &la.x_sj_r);
                } else {
                    m3_add_assign(&mut pa.x_sc_r, &mmt(&la.x_sj_r, &m3_cst(pj.r)));
                }
                m3_add_outer(&mut pa.x_sc_r, la.x_sj_p, v3_cst(pj.p));
            }
            adj.links[i] = la;
        }
    }

    /// The quaternion coordinates of link `i`'s ball or free joint.
    #[inline(always)]
    fn joint_quat<T: Real>(&self, sub: &Substep<T>, i: usize) -> [T; 4] {
        let link = &self.links[i];
        let o = link.q_start
            + if link.joint.kind == JointKind::Free {
                3
            } else {
                0
            };
        [sub.q[o], sub.q[o + 1], sub.q[o + 2], sub.q[o + 3]]
    }

    /// Adjoint of `R_sc = R_sj·R(quat)` for ball and free joints: accumulates into
    /// `la.x_sj_r` and the quaternion's coordinate adjoints.
    fn joint_rotation_vjp<T: Real>(
        &self,
        sub: &Substep<T>,
        i: usize,
        r_sj: &M3<T>,
        la: &mut LinkAdj<T>,
        adj: &mut SubstepAdj<T>,
    ) {
        let link = &self.links[i];
        let quat = self.joint_quat(sub, i);
        let rq = quat_rot(quat);
        m3_add_assign(&mut la.x_sj_r, &mmt(&la.x_sc_r, &rq));
        let aq = quat_rot_adjoint(quat, &mtm(r_sj, &la.x_sc_r));
        let o = link.q_start
            + if link.joint.kind == JointKind::Free {
                3
            } else {
                0
            };
        for k in 0..4 {
            adj.q[o + k] += aq[k];
        }
    }

    // ------------------------------------------------------------------ stage 2
    /// Body velocities and velocity-product accelerations from `sub.qd` and `sub.s`.
    pub fn velocities<T: Real>(&self, sub: &mut Substep<T>) {
        for (i, link) in self.links.iter().enumerate() {
            let vj = self.joint_twist(sub, i);
            let (vp, ap) = match link.parent {
                Some(p) => (sub.links[p].v, sub.links[p].a),
                None => (sv_zero(), sv_zero()),
            };
            let v = sv_add(&vp, &vj);
            let a = sv_add(&ap, &sv_cross_motion(&v, &vj));
            sub.links[i].v = v;
            sub.links[i].a = a;
        }
    }

    /// `S q̇` of link `i`'s joint.
    #[inline(always)]
    fn joint_twist<T: Real>(&self, sub: &Substep<T>, i: usize) -> Sv<T> {
        let link = &self.links[i];
        let mut vj = sv_zero();
        for d in link.qd_start..link.qd_start + link.joint.kind.dof_count() {
            sv_add_assign(&mut vj, &sv_scale(&sub.s[d], sub.qd[d]));
        }
        vj
    }

    /// Adjoint of [`Articulation::velocities`]: consumes `adj.links[*].{v, a}`, accumulates
    /// into `adj.s` and `adj.qd`.
    pub fn velocities_vjp<T: Real>(&self, sub: &Substep<T>, adj: &mut SubstepAdj<T>) {
        for (i, link) in self.links.iter().enumerate().rev() {
            let vj = self.joint_twist(sub, i);
            let (adj_v0, adj_a) = (adj.links[i].v, adj.links[i].a);
            let (av, avj) = sv_cross_motion_adjoint(&sub.links[i].v, &vj, &adj_a);
            let adj_v = sv_add(&adj_v0, &av);
            let adj_vj = sv_add(&adj_v, &avj);
            if let Some(p) = link.parent {
                sv_add_assign(&mut adj.links[p].v, &adj_v);
                sv_add_assign(&mut adj.links[p].a, &adj_a);
            }
            for d in link.qd_start..link.qd_start + link.joint.kind.dof_count() {
                adj.qd[d] += sv_dot(&sub.s[d], &adj_vj);
                sv_add_assign(&mut adj.s[d], &sv_scale(&adj_vj, sub.qd[d]));
            }
        }
    }

    // ------------------------------------------------------------------ stage 3
    /// Bias forces `f = I_s a + v ×* (I_s v) − f_g`, with `I_s` applied in compact form
    /// (mass, world COM, world rotational inertia `i_w = R I_c Rᵀ`, kept in the substep).
    pub fn bias_forces<T: Real>(&self, sub: &mut Substep<T>) {
        let g = v3_cst::<T>(self.gravity);
        for (i, link) in self.links.iter().enumerate() {
            let m = T::cst(link.mass);
            let ls = &mut sub.links[i];
            ls.i_w = mmt(&mm(&ls.x_sc.r, &m3_cst(link.inertia)), &ls.x_sc.r);
            let h = inertia_apply(m, ls.com, &ls.i_w, &ls.v);
            let mg = scale(g, m);
            let f_g = sv_new(cross(ls.com, mg), mg);
            let mut f = sv_add(
                &inertia_apply(m, ls.com, &ls.i_w, &ls.a),
                &sv_cross_force(&ls.v, &h),
            );
            for k in 0..6 {
                f[k] -= f_g[k];
            }
            ls.f = f;
        }
    }

    /// Adjoint of [`Articulation::bias_forces`]: consumes `adj.links[*].f`, accumulates
    /// into `adj.links[*].{v, a, com, x_sc_r}`.
    pub fn bias_forces_vjp<T: Real>(&self, sub: &Substep<T>, adj: &mut SubstepAdj<T>) {
        let g = v3_cst::<T>(self.gravity);
        for (i, link) in self.links.iter().enumerate() {
            let m = T::cst(link.mass);
            let ls = &sub.links[i];
            let la = &mut adj.links[i];
            let adj_f = la.f;
            let mut adj_iw = m3_zero::<T>();
            // I_s a
            inertia_apply_adjoint(
                m,
                ls.com,
                &ls.i_w,
                &ls.a,
                &adj_f,
                &mut la.com,
                &mut adj_iw,
                &mut la.a,
            );
            // v ×* h, h = I_s v
            let h = inertia_apply(m, ls.com, &ls.i_w, &ls.v);
            let (av, ah) = sv_cross_force_adjoint(&ls.v, &h, &adj_f);
            sv_add_assign(&mut la.v, &av);
            inertia_apply_adjoint(
                m,
                ls.com,
                &ls.i_w,
                &ls.v,
                &ah,
                &mut la.com,
                &mut adj_iw,
                &mut la.v,
            );
            // −f_g = −(com × m g, m g): adj_com += λ_ang × m g
            add_assign(&mut la.com, cross(sv_ang(&adj_f), scale(g, m)));
            // i_w = R I_c Rᵀ: adj_R += (A + Aᵀ) R I_c
            let mut a_sym = adj_iw;
            for r in 0..3 {
                for c in 0..3 {
                    a_sym[r][c] = adj_iw[r][c] + adj_iw[c][r];
                }
            }
            m3_add_assign(
                &mut la.x_sc_r,
                &mm(&mm(&a_sym, &ls.x_sc.r), &m3_cst(link.inertia)),
            );
        }
    }

    /// Spatial inertias about the world origin, `I_s(m, com, R_sc)`, for the mass matrix
    /// (only on the substeps that rebuild it).
    pub fn spatial_inertias<T: Real>(&self, sub: &mut Substep<T>) {
        for (i, link) in self.links.iter().enumerate() {
            let ls = &mut sub.links[i];
            ls.i_s = spatial_inertia(T::cst(link.mass), ls.com, &ls.x_sc.r, &m3_cst(link.inertia));
        }
    }

    /// Adjoint of [`Articulation::spatial_inertias`]: consumes `adj.links[*].i_s`,
    /// accumulates into `adj.links[*].{com, x_sc_r}`.
    pub fn spatial_inertias_vjp<T: Real>(&self, sub: &Substep<T>, adj: &mut SubstepAdj<T>) {
        for (i, link) in self.links.iter().enumerate() {
            let ls = &sub.links[i];
            let la = &mut adj.links[i];
            let adj_is = la.i_s;
            spatial_inertia_adjoint(
                T::cst(link.mass),
                ls.com,
                &ls.x_sc.r,
                &m3_cst(link.inertia),
                &adj_is,
                &mut la.com,
                &mut la.x_sc_r,
            );
        }
    }

    // ------------------------------------------------------------------ stage 4
    /// Subtree forces and joint torques from `sub.{links.f, s, q, qd}` and the actuation.
    pub fn joint_torques<T: Real>(&self, sub: &mut Substep<T>, act: &[T]) {
        for ls in sub.links.iter_mut() {
            ls.f_tot = ls.f;
        }
        for (i, link) in self.links.iter().enumerate().rev() {
            if let Some(p) = link.parent {
                let f = sub.links[i].f_tot;
                sv_add_assign(&mut sub.links[p].f_tot, &f);
            }
            let j = &link.joint;
            let (qi, d) = (link.q_start, link.qd_start);
            match j.kind {
                JointKind::Fixed => {}
                JointKind::Prismatic | JointKind::Revolute => {
                    let (q, qd) = (sub.q[qi], sub.qd[d]);
                    let limit_f = limit_force(q, j.limit_lower, j.limit_upper, j.limit_ke);
                    let mut motor = act[d]
                        - T::cst(j.target_ke) * (q - T::cst(j.target))
                        - T::cst(j.target_kd) * qd;
                    let mut gain = T::one();
                    if j.effort_limit.is_finite() {
                        match j.effort_saturation {
                            EffortSaturation::Clamp => {
                                if motor.re().abs() >= j.effort_limit {
                                    motor = T::cst(j.effort_limit.copysign(motor.re()));
                                    gain = T::zero();
                                }
                            }
                            EffortSaturation::Tanh => {
                                let l = T::cst(j.effort_limit);
                                let th = (motor / l).tanh();
                                motor = l * th;
                                gain = T::one() - th * th;
                            }
                        }
                    }
                    sub.motor_gain[d] = gain;
                    sub.tau[d] = -sv_dot(&sub.s[d], &sub.links[i].f_tot) + motor + limit_f
                        - T::cst(j.limit_kd) * qd;
                }
                JointKind::Ball => {
                    // spring on the quaternion's imaginary part, damping on ω; no limits,
                    // no actuation (dflex `jcalc_tau`)
                    for k in 0..3 {
                        sub.tau[d + k] = -sv_dot(&sub.s[d + k], &sub.links[i].f_tot)
                            - sub.qd[d + k] * T::cst(j.target_kd)
                            - sub.q[qi + k] * T::cst(j.target_ke);
                    }
                }
                JointKind::Free => {
                    for k in 0..6 {
                        sub.tau[d + k] = -sv_dot(&sub.s[d + k], &sub.links[i].f_tot);
                    }
                }
            }
        }
    }

    /// Adjoint of [`Articulation::joint_torques`]: consumes `adj.tau`, accumulates into
    /// `adj.{s, q, qd, act}` and `adj.links[*].f`.
    pub fn joint_torques_vjp<T: Real>(&self, sub: &Substep<T>, adj: &mut SubstepAdj<T>) {
        for (i, link) in self.links.iter().enumerate() {
            let j = &link.joint;
            // f_tot(i) also received f_tot(parent)'s adjoint (parents come first)
            if let Some(p) = link.parent {
                let pa = adj.links[p].f_tot;
                sv_add_assign(&mut adj.links[i].f_tot, &pa);
            }
            let (qi, d) = (link.q_start, link.qd_start);
            for k in 0..j.kind.dof_count() {
                let at = adj.tau[d + k];
                sv_add_assign(&mut adj.links[i].f_tot, &sv_scale(&sub.s[d + k], -at));
                sv_add_assign(&mut adj.s[d + k], &sv_scale(&sub.links[i].f_tot, -at));
            }
            match j.kind {
                JointKind::Prismatic | JointKind::Revolute => {
                    let at = adj.tau[d];
                    let dlim =
                        limit_force_derivative(sub.q[qi], j.limit_lower, j.limit_upper, j.limit_ke);
                    adj.q[qi] += at * dlim;
                    adj.qd[d] -= at * T::cst(j.limit_kd);
                    let am = at * sub.motor_gain[d];
                    adj.q[qi] -= am * T::cst(j.target_ke);
                    adj.qd[d] -= am * T::cst(j.target_kd);
                    adj.act[d] += am;
                }
                JointKind::Ball => {
                    for k in 0..3 {
                        let at = adj.tau[d + k];
                        adj.qd[d + k] -= at * T::cst(j.target_kd);
                        adj.q[qi + k] -= at * T::cst(j.target_ke);
                    }
                }
                JointKind::Fixed | JointKind::Free => {}
            }
        }
        for la in adj.links.iter_mut() {
            let ft = la.f_tot;
            sv_add_assign(&mut la.f, &ft);
        }
    }

    // ------------------------------------------------------------------ stage 5
    /// Builds `H + diag(armature)` from the substep's inertias and motion subspaces, and its
    /// Cholesky factor.
    pub fn mass_matrix<T: Real>(&self, sub: &Substep<T>, mmx: &mut MassMatrix<T>) {
        let n = self.n_qd;
        for (i, ls) in sub.links.iter().enumerate() {
            mmx.ic[i] = ls.i_s;
        }
        for (i, link) in self.links.iter().enumerate().rev() {
            if let Some(p) = link.parent {
                let c = mmx.ic[i];
                m6_add_assign(&mut mmx.ic[p], &c);
            }
        }
        mmx.h.iter_mut().for_each(|x| *x = T::zero());
        for e in 0..n {
            let y = m6v(&mmx.ic[self.dof_link[e]], &sub.s[e]);
            mmx.ics[e] = y;
            for &d in &self.dof_support[e] {
                let v = sv_dot(&sub.s[d], &y);
                mmx.h[d * n + e] = v;
                mmx.h[e * n + d] = v;
            }
        }
        for (link, d0) in self.links.iter().map(|l| (l, l.qd_start)) {
            for d in d0..d0 + link.joint.kind.dof_count() {
                mmx.h[d * n + d] += T::cst(link.joint.armature);
            }
        }
        cholesky(n, &mmx.h, &mut mmx.l);
    }

    /// Adjoint of [`Articulation::mass_matrix`]: consumes `mmx.adj_h` (accumulated by every
    /// solve that used this `H`), accumulates into `adj.s` and `adj.links[*].i_s`.
    pub fn mass_matrix_vjp<T: Real>(
        &self,
        sub: &Substep<T>,
        mmx: &mut MassMatrix<T>,
        adj: &mut SubstepAdj<T>,
    ) {
        let n = self.n_qd;
        mmx.adj_ic.iter_mut().for_each(|m| *m = m6_zero());
        for e in 0..n {
            let mut adj_y = sv_zero::<T>();
            let y = mmx.ics[e];
            for &d in &self.dof_support[e] {
                let g = if d == e {
                    mmx.adj_h[d * n + d]
                } else {
                    mmx.adj_h[d * n + e] + mmx.adj_h[e * n + d]
                };
                sv_add_assign(&mut adj.s[d], &sv_scale(&y, g));
                sv_add_assign(&mut adj_y, &sv_scale(&sub.s[d], g));
            }
            let li = self.dof_link[e];
            m6_add_outer(&mut mmx.adj_ic[li], &adj_y, &sub.s[e], T::one());
            sv_add_assign(&mut adj.s[e], &m6tv(&mmx.ic[li], &adj_y));
        }
        // I^c(i) = Σ subtree I_s: each I_s receives the adjoints of all its ancestors' I^c.
        for (i, link) in self.links.iter().enumerate() {
            if let Some(p) = link.parent {
                let pa = mmx.adj_ic[p];
                m6_add_assign(&mut mmx.adj_ic[i], &pa);
            }
            let a = mmx.adj_ic[i];
            m6_add_assign(&mut adj.links[i].i_s, &a);
        }
    }

    // ------------------------------------------------------------------ stage 6
    /// `q̈ = (H + diag(armature))⁻¹ τ` with the cached Cholesky factor.
    pub fn solve<T: Real>(&self, sub: &mut Substep<T>, mmx: &MassMatrix<T>) {
        sub.qdd.copy_from_slice(&sub.tau);
        cholesky_solve(self.n_qd, &mmx.l, &mut sub.qdd);
    }

    /// Adjoint of [`Articulation::solve`]: consumes `adj.qdd`, accumulates into `adj.tau`
    /// and `mmx.adj_h` (dflex `adj_dense_solve`).
    pub fn solve_vjp<T: Real>(
        &self,
        sub: &Substep<T>,
        mmx: &mut MassMatrix<T>,
        adj: &mut SubstepAdj<T>,
    ) {
        let n = self.n_qd;
        let mut adj_b = std::mem::take(&mut adj.qdd);
        cholesky_solve(n, &mmx.l, &mut adj_b);
        for r in 0..n {
            adj.tau[r] += adj_b[r];
            for c in 0..n {
                mmx.adj_h[r * n + c] -= adj_b[r] * sub.qdd[c];
            }
        }
        // keep the buffer (no allocation): it now holds H⁻¹ adj_q̈, cleared before reuse
        adj.qdd = adj_b;
    }

    // ------------------------------------------------------------------ stage 7
    /// Semi-implicit Euler: `q̇' = q̇ + q̈ dt`, `q' = q + q̇' dt`.
    ///
    /// Ball: `ω' = ω + ω̇ dt`, `quat' = normalize(quat + ½(ω', 0) ⊗ quat dt)`. Free: the same
    /// for `ω` and `v`, then `p' = p + (v' + ω' × p) dt` (dflex `jcalc_integrate`).
    pub fn integrate<T: Real>(&self, sub: &mut Substep<T>, dt: T) {
        for (i, link) in self.links.iter().enumerate() {
            let (qi, d) = (link.q_start, link.qd_start);
            let nd = link.joint.kind.dof_count();
            for k in d..d + nd {
                sub.qd_out[k] = sub.qd[k] + sub.qdd[k] * dt;
            }
            match link.joint.kind {
                JointKind::Fixed => {}
                JointKind::Prismatic | JointKind::Revolute => {
                    sub.q_out[qi] = sub.q[qi] + sub.qd_out[d] * dt;
                }
                JointKind::Ball | JointKind::Free => {
                    let w = [sub.qd_out[d], sub.qd_out[d + 1], sub.qd_out[d + 2]];
                    let o = if link.joint.kind == JointKind::Free {
                        let v = [sub.qd_out[d + 3], sub.qd_out[d + 4], sub.qd_out[d + 5]];
                        let p = [sub.q[qi], sub.q[qi + 1], sub.q[qi + 2]];
                        let dp = add(v, cross(w, p));
                        for k in 0..3 {
                            sub.q_out[qi + k] = p[k] + dp[k] * dt;
                        }
                        3
                    } else {
                        0
                    };
                    let quat = self.joint_quat(sub, i);
                    let qn = quat_integrate(quat, w, dt);
                    sub.q_out[qi + o..qi + o + 4].copy_from_slice(&qn);
                }
            }
        }
    }

    /// Adjoint of [`Articulation::integrate`]: given the adjoints of the outputs, writes
    /// `adj.qdd` and accumulates into `adj.{q, qd}`.
    pub fn integrate_vjp<T: Real>(
        &self,
        sub: &Substep<T>,
        adj_q_out: &[T],
        adj_qd_out: &[T],
        dt: T,
        adj: &mut SubstepAdj<T>,
    ) {
        for (i, link) in self.links.iter().enumerate() {
            let (qi, d) = (link.q_start, link.qd_start);
            match link.joint.kind {
                JointKind::Fixed => continue,
                JointKind::Prismatic | JointKind::Revolute => {
                    let adj_qd_new = adj_qd_out[d] + adj_q_out[qi] * dt;
                    adj.q[qi] += adj_q_out[qi];
                    adj.qd[d] += adj_qd_new;
                    adj.qdd[d] = adj_qd_new * dt;
                    continue;
                }
                JointKind::Ball | JointKind::Free => {}
            }
            let nd = link.joint.kind.dof_count();
            // adjoint of the new velocities, starting from the outputs' own
            let mut a_new = [T::zero(); 6];
            a_new[..nd].copy_from_slice(&adj_qd_out[d..d + nd]);
            let w = [sub.qd_out[d], sub.qd_out[d + 1], sub.qd_out[d + 2]];
            let o = if link.joint.kind == JointKind::Free {
                // p' = p + (v' + ω' × p) dt
                let p = [sub.q[qi], sub.q[qi + 1], sub.q[qi + 2]];
                let ap = [adj_q_out[qi], adj_q_out[qi + 1], adj_q_out[qi + 2]];
                let ap_w = cross(ap, w);
                let aw = cross(p, ap);
                for k in 0..3 {
                    adj.q[qi + k] += ap[k] + dt * ap_w[k];
                    a_new[k] += dt * aw[k];
                    a_new[3 + k] += dt * ap[k];
                }
                3
            } else {
                0
            };
            let quat = self.joint_quat(sub, i);
            let aq_out = [
                adj_q_out[qi + o],
                adj_q_out[qi + o + 1],
                adj_q_out[qi + o + 2],
                adj_q_out[qi + o + 3],
            ];
            let mut aq = [T::zero(); 4];
            let mut aw = v3_zero::<T>();
            quat_integrate_adjoint(quat, w, dt, aq_out, &mut aq, &mut aw);
            for k in 0..4 {
                adj.q[qi + o + k] += aq[k];
            }
            for k in 0..3 {
                a_new[k] += aw[k];
            }
            for k in 0..nd {
                adj.qd[d + k] += a_new[k];
                adj.qdd[d + k] = a_new[k] * dt;
            }
        }
    }

    // ------------------------------------------------------------------ step
    /// Runs the substeps of one control step from `(q, qd)`, keeping every substep's
    /// intermediates in `ws`.
    fn run_substeps<T: Real>(
        &self,
        params: &SimParams,
        q: &[T],
        qd: &[T],
        act: &[T],
        ws: &mut Workspace<T>,
    ) {
        let dt = T::cst(params.sub_dt());
        for k in 0..params.substeps {
            let (done, rest) = ws.subs.split_at_mut(k);
            let sub = &mut rest[0];
            match done.last() {
                Some(prev) => {
                    sub.q.copy_from_slice(&prev.q_out);
                    sub.qd.copy_from_slice(&prev.qd_out);
                }
                None => {
                    sub.q.copy_from_slice(q);
                    sub.qd.copy_from_slice(qd);
                }
            }
            self.kinematics(sub);
            self.velocities(sub);
            self.bias_forces(sub);
            self.contacts(sub);
            self.joint_torques(sub, act);
            let b = k / params.mm_freq;
            if k % params.mm_freq == 0 {
                self.spatial_inertias(sub);
                self.mass_matrix(sub, &mut ws.mm[b]);
            }
            self.solve(sub, &ws.mm[b]);
            self.integrate(sub, dt);
        }
    }

    /// One control step of `params.substeps` substeps with actuation `act` (one value per
    /// DOF, held over the substeps, tasks.md §1.6).
    #[allow(clippy::too_many_arguments)]
    pub fn step<T: Real>(
        &self,
        params: &SimParams,
        q: &[T],
        qd: &[T],
        act: &[T],
        q_out: &mut [T],
        qd_out: &mut [T],
        ws: &mut Workspace<T>,
    ) {
        self.run_substeps(params, q, qd, act, ws);
        let last = &ws.subs[params.substeps - 1];
        q_out.copy_from_slice(&last.q_out);
        qd_out.copy_from_slice(&last.qd_out);
    }

    /// VJP of [`Articulation::step`] at `(q, qd, act)`: replays the forward step (as dflex's
    /// backward kernels do), then sweeps the substeps in reverse. Accumulates into `adj_q`,
    /// `adj_qd`, `adj_act`.
    #[allow(clippy::too_many_arguments)]
    pub fn step_vjp<T: Real>(
        &self,
        params: &SimParams,
        q: &[T],
        qd: &[T],
        act: &[T],
        adj_q_out: &[T],
        adj_qd_out: &[T],
        adj_q: &mut [T],
        adj_qd: &mut [T],
        adj_act: &mut [T],
        ws: &mut Workspace<T>,
    ) {
        self.run_substeps(params, q, qd, act, ws);
        let dt = T::cst(params.sub_dt());
        let Workspace {
            subs,
            mm,
            adj,
            carry_q,
            carry_qd,
        } = ws;
        adj.act.iter_mut().for_each(|x| *x = T::zero());
        carry_q.copy_from_slice(adj_q_out);
        carry_qd.copy_from_slice(adj_qd_out);
        for m in mm.iter_mut() {
            m.adj_h.iter_mut().for_each(|x| *x = T::zero());
        }
        for k in (0..params.substeps).rev() {
            let sub = &subs[k];
            adj.clear_stages();
            self.integrate_vjp(sub, carry_q, carry_qd, dt, adj);
            // the solve of substep k used the H built at substep k − k % mm_freq, whose
            // adjoint accumulates until the reverse sweep reaches that substep
            let b = k / params.mm_freq;
            self.solve_vjp(sub, &mut mm[b], adj);
            if k % params.mm_freq == 0 {
                self.mass_matrix_vjp(sub, &mut mm[b], adj);
            }
            self.joint_torques_vjp(sub, adj);
            self.contacts_vjp(sub, adj);
            self.bias_forces_vjp(sub, adj);
            if k % params.mm_freq == 0 {
                self.spatial_inertias_vjp(sub, adj);
            }
            self.velocities_vjp(sub, adj);
            self.kinematics_vjp(sub, adj);
            carry_q.copy_from_slice(&adj.q);
            carry_qd.copy_from_slice(&adj.qd);
        }
        for (a, c) in adj_q.iter_mut().zip(carry_q.iter()) {
            *a += *c;
        }
        for (a, c) in adj_qd.iter_mut().zip(carry_qd.iter()) {
            *a += *c;
        }
        for (a, c) in adj_act.iter_mut().zip(adj.act.iter()) {
            *a += *c;
        }
    }
}

/// Whether a constant rotation is exactly the identity.
#[inline(always)]
pub(crate) fn is_identity(r: &[[f64; 3]; 3]) -> bool {
    *r == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
}

/// dflex's limit force: `k(lower − q)` below, `k(upper − q)` above, 0 inside.
#[inline(always)]
pub fn limit_force<T: Real>(q: T, lower: f64, upper: f64, ke: f64) -> T {
    if q.re() < lower {
        T::cst(ke) * (T::cst(lower) - q)
    } else if q.re() > upper {
        T::cst(ke) * (T::cst(upper) - q)
    } else {
        T::zero()
    }
}

/// Derivative of [`limit_force`] in `q` (one-sided at the limits: 0 exactly at a limit).
#[inline(always)]
pub fn limit_force_derivative<T: Real>(q: T, lower: f64, upper: f64, ke: f64) -> T {
    if q.re() < lower || q.re() > upper {
        T::cst(-ke)
    } else {
        T::zero()
    }
}

/// Dense Cholesky `A = L Lᵀ` (row-major, lower triangle written, upper zeroed).
pub fn cholesky<T: Real>(n: usize, a: &[T], l: &mut [T]) {
    for i in 0..n {
        for j in 0..n {
            if j > i {
                l[i * n + j] = T::zero();
                continue;
            }
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = if i == j { s.sqrt() } else { s / l[j * n + j] };
        }
    }
}

/// Solves `L Lᵀ x = b` in place. Both substitutions read `L` row by row (the backward one
/// as column updates), so the inner loops run over contiguous memory.
pub fn cholesky_solve<T: Real>(n: usize, l: &[T], b: &mut [T]) {
    for i in 0..n {
        let row = &l[i * n..i * n + i];
        let mut s = b[i];
        for (lk, bk) in row.iter().zip(b[..i].iter()) {
            s -= *lk * *bk;
        }
        b[i] = s / l[i * n + i];
    }
    for i in (0..n).rev() {
        let x = b[i] / l[i * n + i];
        b[i] = x;
        let row = &l[i * n..i * n + i];
        for (bk, lk) in b[..i].iter_mut().zip(row.iter()) {
            *bk -= *lk * x;
        }
    }
}

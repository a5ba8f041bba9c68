//! Adjoint tests of every stage of the articulation pipeline, of full substeps and steps,
//! and of a 32-step CartPole window: VJP against fourth-order central differences in f64
//! (relative error ≤ 1e-6) and the VJP/JVP dot-product test with dual numbers (≤ 1e-9),
//! over 256 random cases per property, including states beyond the cart's joint limits.
#![allow(clippy::needless_range_loop)]

use diff_core::gradcheck::{cases, dual_jvp, Stage, StageTol};
use diff_core::Real;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sim_rigid::batch::{step_row, step_row_vjp, RigidTask, RowScratch};
use sim_rigid::dynamics::{Substep, Workspace};
use sim_rigid::tasks::CartPole;
use sim_rigid::{Articulation, SimParams};

const FD_STEP: f64 = 1e-4;
const FD_TOL: f64 = 1e-6;
/// Finite-difference step for multi-substep windows with stiff ground contact.
const FD_STEP_CONTACT: f64 = 1e-5;
/// Finite-difference step for the full Ant and Humanoid steps (16 and 48 stiff substeps
/// with up to 35 contacts): their fifth derivatives are large enough that h = 1e-5 errs
/// by up to 3e-6 on a Humanoid case and 2.5e-4 on an Ant case (measured on failing cases:
/// h = 1e-6 and 1e-7 agree with the VJP within 1e-6 on the Ant case; on the Humanoid
/// case h = 1e-7 is dominated by roundoff at 1.4e-6, so h = 1e-6 leaves both errors
/// ~1e-7).
const FD_STEP_FULL_STEP: f64 = 1e-6;
const DOT_TOL: f64 = 1e-9;

/// Runs both checks of `diff_core::gradcheck::check_stage`; `what` names the stage.
fn check_stage<S: Stage>(s: &S, x: &[f64], u_seed: &[f64], v: &[f64], what: &str) {
    check_stage_h(s, x, u_seed, v, what, FD_STEP)
}

/// [`check_stage`] with finite-difference step `h`.
fn check_stage_h<S: Stage>(s: &S, x: &[f64], u_seed: &[f64], v: &[f64], what: &str, h: f64) {
    let tol = StageTol {
        h,
        fd: FD_TOL,
        dot: DOT_TOL,
    };
    diff_core::gradcheck::check_stage(s, x, u_seed, v, tol, what);
}

fn cartpole() -> CartPole {
    CartPole::new()
}

fn art() -> Articulation {
    cartpole().articulation().clone()
}

fn params(mm_freq: usize) -> SimParams {
    SimParams {
        dt: 1.0 / 60.0,
        substeps: 4,
        mm_freq,
    }
}

fn fresh<T: Real>(a: &Articulation) -> Workspace<T> {
    Workspace::new(a, &params(4))
}

// ---------------------------------------------------------------- stage: kinematics
struct Kinematics(Articulation);
impl Stage for Kinematics {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut ws = fresh::<T>(&self.0);
        let sub = &mut ws.subs[0];
        sub.q.copy_from_slice(x);
        self.0.kinematics(sub);
        let mut out = Vec::new();
        for l in &sub.links {
            out.extend(l.x_sj.p);
            out.extend(l.x_sj.r.iter().flatten());
            out.extend(l.x_sc.p);
            out.extend(l.x_sc.r.iter().flatten());
            out.extend(l.com);
        }
        for s in &sub.s {
            out.extend(s);
        }
        out
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut ws = fresh::<f64>(&self.0);
        ws.subs[0].q.copy_from_slice(x);
        self.0.kinematics(&mut ws.subs[0]);
        let adj = &mut ws.adj;
        let mut k = 0;
        let mut take = |n: usize| {
            let s = &u[k..k + n];
            k += n;
            s.to_vec()
        };
        for la in adj.links.iter_mut() {
            la.x_sj_p.copy_from_slice(&take(3));
            let r = take(9);
            for i in 0..3 {
                la.x_sj_r[i].copy_from_slice(&r[3 * i..3 * i + 3]);
            }
            la.x_sc_p.copy_from_slice(&take(3));
            let r = take(9);
            for i in 0..3 {
                la.x_sc_r[i].copy_from_slice(&r[3 * i..3 * i + 3]);
            }
            la.com.copy_from_slice(&take(3));
        }
        for s in adj.s.iter_mut() {
            s.copy_from_slice(&take(6));
        }
        self.0.kinematics_vjp(&ws.subs[0], adj);
        adj.q.clone()
    }
}

// ---------------------------------------------------------------- stage: velocities
/// Inputs: q̇ (n_qd), S (6·n_qd). Outputs: v, a per link.
struct Velocities(Articulation);
fn unpack_vel<T: Real>(a: &Articulation, x: &[T], sub: &mut Substep<T>) {
    let nd = a.n_qd;
    sub.qd.copy_from_slice(&x[..nd]);
    for d in 0..nd {
        sub.s[d].copy_from_slice(&x[nd + 6 * d..nd + 6 * d + 6]);
    }
}
impl Stage for Velocities {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut ws = fresh::<T>(&self.0);
        let sub = &mut ws.subs[0];
        unpack_vel(&self.0, x, sub);
        self.0.velocities(sub);
        sub.links
            .iter()
            .flat_map(|l| l.v.into_iter().chain(l.a))
            .collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut ws = fresh::<f64>(&self.0);
        unpack_vel(&self.0, x, &mut ws.subs[0]);
        self.0.velocities(&mut ws.subs[0]);
        for (i, la) in ws.adj.links.iter_mut().enumerate() {
            la.v.copy_from_slice(&u[12 * i..12 * i + 6]);
            la.a.copy_from_slice(&u[12 * i + 6..12 * i + 12]);
        }
        self.0.velocities_vjp(&ws.subs[0], &mut ws.adj);
        let mut g = ws.adj.qd.clone();
        g.extend(ws.adj.s.iter().flatten());
        g
    }
}

// ---------------------------------------------------------------- stage: bias forces
/// Inputs per link: com (3), R_sc (9), v (6), a (6). Output per link: f (6).
struct Bias(Articulation);
fn unpack_bias<T: Real>(x: &[T], sub: &mut Substep<T>) {
    for (i, l) in sub.links.iter_mut().enumerate() {
        let o = 24 * i;
        l.com.copy_from_slice(&x[o..o + 3]);
        for r in 0..3 {
            l.x_sc.r[r].copy_from_slice(&x[o + 3 + 3 * r..o + 6 + 3 * r]);
        }
        l.v.copy_from_slice(&x[o + 12..o + 18]);
        l.a.copy_from_slice(&x[o + 18..o + 24]);
    }
}
impl Stage for Bias {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut ws = fresh::<T>(&self.0);
        let sub = &mut ws.subs[0];
        unpack_bias(x, sub);
        self.0.bias_forces(sub);
        sub.links.iter().flat_map(|l| l.f).collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut ws = fresh::<f64>(&self.0);
        unpack_bias(x, &mut ws.subs[0]);
        self.0.bias_forces(&mut ws.subs[0]);
        for (i, la) in ws.adj.links.iter_mut().enumerate() {
            la.f.copy_from_slice(&u[6 * i..6 * i + 6]);
        }
        self.0.bias_forces_vjp(&ws.subs[0], &mut ws.adj);
        ws.adj
            .links
            .iter()
            .flat_map(|l| {
                let mut g = l.com.to_vec();
                g.extend(l.x_sc_r.iter().flatten());
                g.extend(l.v);
                g.extend(l.a);
                g
            })
            .collect()
    }
}

// ---------------------------------------------------------------- stage: spatial inertias
/// Inputs per link: com (3), R_sc (9). Output per link: I_s (36).
struct Inertias(Articulation);
fn unpack_inertias<T: Real>(x: &[T], sub: &mut Substep<T>) {
    for (i, l) in sub.links.iter_mut().enumerate() {
        let o = 12 * i;
        l.com.copy_from_slice(&x[o..o + 3]);
        for r in 0..3 {
            l.x_sc.r[r].copy_from_slice(&x[o + 3 + 3 * r..o + 6 + 3 * r]);
        }
    }
}
impl Stage for Inertias {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut ws = fresh::<T>(&self.0);
        let sub = &mut ws.subs[0];
        unpack_inertias(x, sub);
        self.0.spatial_inertias(sub);
        sub.links
            .iter()
            .flat_map(|l| l.i_s.iter().flatten().copied().collect::<Vec<_>>())
            .collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut ws = fresh::<f64>(&self.0);
        unpack_inertias(x, &mut ws.subs[0]);
        for (i, la) in ws.adj.links.iter_mut().enumerate() {
            for r in 0..6 {
                la.i_s[r].copy_from_slice(&u[36 * i + 6 * r..36 * i + 6 * r + 6]);
            }
        }
        self.0.spatial_inertias_vjp(&ws.subs[0], &mut ws.adj);
        ws.adj
            .links
            .iter()
            .flat_map(|l| {
                let mut g = l.com.to_vec();
                g.extend(l.x_sc_r.iter().flatten());
                g
            })
            .collect()
    }
}

// ---------------------------------------------------------------- stage: joint torques
/// Inputs: q, q̇, act, S (6·n_qd), f (6 per link). Output: τ.
struct Torques(Articulation);
fn unpack_tau<T: Real>(a: &Articulation, x: &[T], sub: &mut Substep<T>) -> Vec<T> {
    let (nq, nd) = (a.n_q, a.n_qd);
    sub.q.copy_from_slice(&x[..nq]);
    sub.qd.copy_from_slice(&x[nq..nq + nd]);
    let act = x[nq + nd..nq + 2 * nd].to_vec();
    let o = nq + 2 * nd;
    for d in 0..nd {
        sub.s[d].copy_from_slice(&x[o + 6 * d..o + 6 * d + 6]);
    }
    let o = o + 6 * nd;
    for (i, l) in sub.links.iter_mut().enumerate() {
        l.f.copy_from_slice(&x[o + 6 * i..o + 6 * i + 6]);
    }
    act
}
impl Stage for Torques {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut ws = fresh::<T>(&self.0);
        let act = unpack_tau(&self.0, x, &mut ws.subs[0]);
        self.0.joint_torques(&mut ws.subs[0], &act);
        ws.subs[0].tau.clone()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut ws = fresh::<f64>(&self.0);
        let act = unpack_tau(&self.0, x, &mut ws.subs[0]);
        self.0.joint_torques(&mut ws.subs[0], &act);
        ws.adj.tau.copy_from_slice(u);
        self.0.joint_torques_vjp(&ws.subs[0], &mut ws.adj);
        let a = &ws.adj;
        let mut g = a.q.clone();
        g.extend(&a.qd);
        g.extend(&a.act);
        g.extend(a.s.iter().flatten());
        g.extend(a.links.iter().flat_map(|l| l.f));
        g
    }
}

// ---------------------------------------------------------------- stage: mass matrix
/// Inputs: I_s (36 per link), S (6·n_qd). Output: H + diag(armature).
struct MassMatrixStage(Articulation);
fn unpack_mm<T: Real>(a: &Articulation, x: &[T], sub: &mut Substep<T>) {
    let nl = a.links.len();
    for (i, l) in sub.links.iter_mut().enumerate() {
        for r in 0..6 {
            l.i_s[r].copy_from_slice(&x[36 * i + 6 * r..36 * i + 6 * r + 6]);
        }
    }
    for d in 0..a.n_qd {
        sub.s[d].copy_from_slice(&x[36 * nl + 6 * d..36 * nl + 6 * d + 6]);
    }
}
impl Stage for MassMatrixStage {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut ws = fresh::<T>(&self.0);
        unpack_mm(&self.0, x, &mut ws.subs[0]);
        self.0.mass_matrix(&ws.subs[0], &mut ws.mm[0]);
        ws.mm[0].h.clone()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut ws = fresh::<f64>(&self.0);
        unpack_mm(&self.0, x, &mut ws.subs[0]);
        self.0.mass_matrix(&ws.subs[0], &mut ws.mm[0]);
        ws.mm[0].adj_h.copy_from_slice(u);
        let Workspace { subs, mm, adj, .. } = &mut ws;
        self.0.mass_matrix_vjp(&subs[0], &mut mm[0], adj);
        let mut g: Vec<f64> = adj
            .links
            .iter()
            .flat_map(|l| l.i_s.iter().flatten().copied().collect::<Vec<_>>())
            .collect();
        g.extend(adj.s.iter().flatten());
        g
    }
}

// ---------------------------------------------------------------- stage: solve
/// Inputs: the lower triangle of a symmetric positive definite `H` (row by row) and τ.
/// Output: q̈ = H⁻¹τ (the Cholesky factor is computed from H inside the stage).
struct Solve(Articulation);
fn unpack_solve<T: Real>(n: usize, x: &[T], ws: &mut Workspace<T>) {
    let mut k = 0;
    for i in 0..n {
        for j in 0..=i {
            ws.mm[0].h[i * n + j] = x[k];
            ws.mm[0].h[j * n + i] = x[k];
            k += 1;
        }
    }
    ws.subs[0].tau.copy_from_slice(&x[k..k + n]);
    let (h, l) = (ws.mm[0].h.clone(), &mut ws.mm[0].l);
    sim_rigid::dynamics::cholesky(n, &h, l);
}
impl Stage for Solve {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut ws = fresh::<T>(&self.0);
        unpack_solve(self.0.n_qd, x, &mut ws);
        self.0.solve(&mut ws.subs[0], &ws.mm[0]);
        ws.subs[0].qdd.clone()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.n_qd;
        let mut ws = fresh::<f64>(&self.0);
        unpack_solve(n, x, &mut ws);
        self.0.solve(&mut ws.subs[0], &ws.mm[0]);
        ws.adj.qdd.copy_from_slice(u);
        let Workspace { subs, mm, adj, .. } = &mut ws;
        self.0.solve_vjp(&subs[0], &mut mm[0], adj);
        let mut g = Vec::new();
        for i in 0..n {
            for j in 0..=i {
                let a = mm[0].adj_h[i * n + j];
                g.push(if i == j {
                    a
                } else {
                    a + mm[0].adj_h[j * n + i]
                });
            }
        }
        g.extend(&adj.tau);
        g
    }
}

// ---------------------------------------------------------------- stage: integrate
/// Inputs: q, q̇, q̈. Outputs: q', q̇'.
struct Integrate(Articulation);
impl Stage for Integrate {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let (nq, nd) = (self.0.n_q, self.0.n_qd);
        let mut ws = fresh::<T>(&self.0);
        let sub = &mut ws.subs[0];
        sub.q.copy_from_slice(&x[..nq]);
        sub.qd.copy_from_slice(&x[nq..nq + nd]);
        sub.qdd.copy_from_slice(&x[nq + nd..]);
        self.0.integrate(sub, T::cst(0.01));
        sub.q_out.iter().chain(&sub.qd_out).copied().collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let (nq, nd) = (self.0.n_q, self.0.n_qd);
        let mut ws = fresh::<f64>(&self.0);
        let sub = &mut ws.subs[0];
        sub.q.copy_from_slice(&x[..nq]);
        sub.qd.copy_from_slice(&x[nq..nq + nd]);
        sub.qdd.copy_from_slice(&x[nq + nd..]);
        self.0.integrate(sub, 0.01);
        self.0
            .integrate_vjp(&ws.subs[0], &u[..nq], &u[nq..], 0.01, &mut ws.adj);
        let a = &ws.adj;
        a.q.iter().chain(&a.qd).chain(&a.qdd).copied().collect()
    }
}

// ---------------------------------------------------------------- full step
/// Inputs: state row and action. Output: next state. `mm_freq` varies the caching.
struct FullStep {
    task: CartPole,
    params: SimParams,
}
impl FullStep {
    fn new(mm_freq: usize, substeps: usize) -> Self {
        FullStep {
            task: cartpole(),
            params: SimParams {
                dt: 1.0 / 60.0,
                substeps,
                mm_freq,
            },
        }
    }
}
impl Stage for FullStep {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let art = self.task.articulation();
        let mut ws = Workspace::<T>::new(art, &self.params);
        let act = [x[4] * T::cst(1000.0), T::zero()];
        let (mut q, mut qd) = (vec![T::zero(); 2], vec![T::zero(); 2]);
        art.step(
            &self.params,
            &x[..2],
            &x[2..4],
            &act,
            &mut q,
            &mut qd,
            &mut ws,
        );
        q.into_iter().chain(qd).collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let art = self.task.articulation();
        let mut ws = Workspace::<f64>::new(art, &self.params);
        let act = [x[4] * 1000.0, 0.0];
        let (mut aq, mut aqd, mut aact) = (vec![0.0; 2], vec![0.0; 2], vec![0.0; 2]);
        art.step_vjp(
            &self.params,
            &x[..2],
            &x[2..4],
            &act,
            &u[..2],
            &u[2..],
            &mut aq,
            &mut aqd,
            &mut aact,
            &mut ws,
        );
        let mut g = aq;
        g.extend(aqd);
        g.push(aact[0] * 1000.0);
        g
    }
}

/// The cart coordinate over all substeps stays away from its limits' kinks, so that the
/// finite differences do not straddle one (the derivative there is one-sided).
fn away_from_limit_kinks(x: &[f64], substeps: usize) -> bool {
    let task = cartpole();
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps,
        mm_freq: substeps,
    };
    let art = task.articulation();
    let mut ws = Workspace::<f64>::new(art, &params);
    let act = [x[4] * 1000.0, 0.0];
    let (mut q, mut qd) = (vec![0.0; 2], vec![0.0; 2]);
    art.step(&params, &x[..2], &x[2..4], &act, &mut q, &mut qd, &mut ws);
    ws.subs
        .iter()
        .all(|s| (s.q[0].abs() - 4.0).abs() > 1e-2 && (s.q_out[0].abs() - 4.0).abs() > 1e-2)
}

/// A random cartpole state and action: cart within and beyond its ±4 limits, any pole
/// angle, velocities up to 5.
fn state_action() -> impl Strategy<Value = Vec<f64>> {
    (
        -5.0..5.0f64,
        -7.0..7.0f64,
        -5.0..5.0f64,
        -5.0..5.0f64,
        -0.99..0.99f64,
    )
        .prop_map(|(a, b, c, d, e)| vec![a, b, c, d, e])
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn kinematics_adjoint(q in diff_core::gradcheck::vec_in(-5.0, 5.0, 2), u in diff_core::gradcheck::direction(8), v in diff_core::gradcheck::direction(2)) {
        check_stage(&Kinematics(art()), &q, &u, &v, "kinematics");
    }

    #[test]
    fn velocities_adjoint(x in diff_core::gradcheck::vec_in(-2.0, 2.0, 14), u in diff_core::gradcheck::direction(8), v in diff_core::gradcheck::direction(14)) {
        check_stage(&Velocities(art()), &x, &u, &v, "velocities");
    }

    #[test]
    fn bias_forces_adjoint(x in diff_core::gradcheck::vec_in(-2.0, 2.0, 72), u in diff_core::gradcheck::direction(8), v in diff_core::gradcheck::direction(72)) {
        check_stage(&Bias(art()), &x, &u, &v, "bias forces");
    }

    #[test]
    fn spatial_inertias_adjoint(x in diff_core::gradcheck::vec_in(-2.0, 2.0, 36), u in diff_core::gradcheck::direction(8), v in diff_core::gradcheck::direction(36)) {
        check_stage(&Inertias(art()), &x, &u, &v, "spatial inertias");
    }

    #[test]
    fn bias_forces_adjoint_3d(x in diff_core::gradcheck::vec_in(-2.0, 2.0, 96), u in diff_core::gradcheck::direction(8), v in diff_core::gradcheck::direction(96)) {
        check_stage(&Bias(tree3d()), &x, &u, &v, "bias forces (4 links)");
    }

    #[test]
    fn joint_torques_adjoint(x in diff_core::gradcheck::vec_in(-6.0, 6.0, 2 + 2 + 2 + 12 + 18), u in diff_core::gradcheck::direction(2), v in diff_core::gradcheck::direction(36)) {
        // cart coordinate away from the limit kinks at ±4 (the derivative is one-sided there)
        prop_assume!((x[0].abs() - 4.0).abs() > 1e-2);
        check_stage(&Torques(art()), &x, &u, &v, "joint torques");
    }

    #[test]
    fn joint_torques_adjoint_with_saturated_motors(x in diff_core::gradcheck::vec_in(-6.0, 6.0, 2 + 2 + 2 + 12 + 18), u in diff_core::gradcheck::direction(2), v in diff_core::gradcheck::direction(36)) {
        // motor torques clamped at ±3 (about half the sampled actuations saturate), away
        // from the clamp's kink and the cart's limit kinks
        let mut a = art();
        for l in a.links.iter_mut() {
            (l.joint.effort_limit, l.joint.target_ke, l.joint.target_kd) = (3.0, 2.0, 0.5);
        }
        let motor = |d: usize| {
            let j = &a.links[d].joint;
            x[4 + d] - j.target_ke * (x[d] - j.target) - j.target_kd * x[2 + d]
        };
        prop_assume!((0..2).all(|d| (motor(d).abs() - 3.0).abs() > 1e-2));
        prop_assume!((x[0].abs() - 4.0).abs() > 1e-2);
        check_stage(&Torques(a), &x, &u, &v, "joint torques, saturated motors");
    }

    #[test]
    fn joint_torques_adjoint_with_tanh_saturated_motors(x in diff_core::gradcheck::vec_in(-6.0, 6.0, 2 + 2 + 2 + 12 + 18), u in diff_core::gradcheck::direction(2), v in diff_core::gradcheck::direction(36)) {
        // motor torques through 3·tanh(τ/3): smooth, so no kink to avoid except the cart's
        // limits; the sampled actuations reach deep into saturation (|τ| up to ~25)
        let mut a = art();
        for l in a.links.iter_mut() {
            (l.joint.effort_limit, l.joint.target_ke, l.joint.target_kd) = (3.0, 2.0, 0.5);
            l.joint.effort_saturation = sim_rigid::EffortSaturation::Tanh;
        }
        prop_assume!((x[0].abs() - 4.0).abs() > 1e-2);
        check_stage(&Torques(a), &x, &u, &v, "joint torques, tanh-saturated motors");
    }

    #[test]
    fn mass_matrix_adjoint(x in diff_core::gradcheck::vec_in(-2.0, 2.0, 3 * 36 + 12), u in diff_core::gradcheck::direction(4), v in diff_core::gradcheck::direction(120)) {
        check_stage(&MassMatrixStage(art()), &x, &u, &v, "mass matrix");
    }

    #[test]
    fn solve_adjoint(l in diff_core::gradcheck::vec_in(-1.0, 1.0, 3), tau in diff_core::gradcheck::vec_in(-5.0, 5.0, 2), u in diff_core::gradcheck::direction(2), v in diff_core::gradcheck::direction(5)) {
        // H = A Aᵀ + 0.5 I is symmetric positive definite; pass its lower triangle
        let a = [[l[0], 0.0], [l[1], l[2]]];
        let h = |i: usize, j: usize| a[i][0] * a[j][0] + a[i][1] * a[j][1] + if i == j { 0.5 } else { 0.0 };
        let x = vec![h(0, 0), h(1, 0), h(1, 1), tau[0], tau[1]];
        check_stage(&Solve(art()), &x, &u, &v, "solve");
    }

    #[test]
    fn integrate_adjoint(x in diff_core::gradcheck::vec_in(-5.0, 5.0, 6), u in diff_core::gradcheck::direction(4), v in diff_core::gradcheck::direction(6)) {
        check_stage(&Integrate(art()), &x, &u, &v, "integrate");
    }

    #[test]
    fn one_substep_adjoint(x in state_action(), u in diff_core::gradcheck::direction(4), v in diff_core::gradcheck::direction(5)) {
        prop_assume!(away_from_limit_kinks(&x, 1));
        check_stage(&FullStep::new(1, 1), &x, &u, &v, "one substep");
    }

    #[test]
    fn full_step_adjoint(x in state_action(), u in diff_core::gradcheck::direction(4), v in diff_core::gradcheck::direction(5)) {
        prop_assume!(away_from_limit_kinks(&x, 4));
        check_stage(&FullStep::new(4, 4), &x, &u, &v, "step, 4 substeps, mass matrix cached over 4");
    }

    #[test]
    fn full_step_adjoint_with_mass_matrix_rebuilds(x in state_action(), u in diff_core::gradcheck::direction(4), v in diff_core::gradcheck::direction(5), freq in prop_oneof![Just(1usize), Just(2usize)]) {
        prop_assume!(away_from_limit_kinks(&x, 4));
        check_stage(&FullStep::new(freq, 4), &x, &u, &v, "step, 4 substeps, mass matrix rebuilt");
    }
}

// ---------------------------------------------------------------- task-level pieces
/// The sum of rewards over a window of `h` steps, as a function of the action sequence
/// (the initial state fixed), or of the initial state and the actions.
struct Window {
    task: CartPole,
    s0: Vec<f64>,
    h: usize,
}
impl Stage for Window {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut sc = RowScratch::<T>::new(&self.task);
        let mut s: Vec<T> = self.s0.iter().map(|&v| T::cst(v)).collect();
        let mut next = s.clone();
        let mut total = T::zero();
        for t in 0..self.h {
            step_row(&self.task, &s, &x[t..t + 1], &mut next, &mut sc);
            total += self.task.reward(&next, &x[t..t + 1]);
            std::mem::swap(&mut s, &mut next);
        }
        vec![total]
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut sc = RowScratch::<f64>::new(&self.task);
        let mut states = vec![self.s0.clone()];
        for t in 0..self.h {
            let mut next = vec![0.0; 4];
            step_row(&self.task, &states[t], &x[t..t + 1], &mut next, &mut sc);
            states.push(next);
        }
        let mut adj_a = vec![0.0; self.h];
        let mut adj_next = vec![0.0; 4];
        for t in (0..self.h).rev() {
            self.task.reward_vjp(
                &states[t + 1],
                &x[t..t + 1],
                u[0],
                &mut adj_next,
                &mut adj_a[t..t + 1],
            );
            let mut adj_s = vec![0.0; 4];
            step_row_vjp(
                &self.task,
                &states[t],
                &x[t..t + 1],
                &adj_next,
                &mut adj_s,
                &mut adj_a[t..t + 1],
                &mut sc,
            );
            adj_next = adj_s;
        }
        adj_a
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn observation_adjoint(x in diff_core::gradcheck::vec_in(-7.0, 7.0, 4), u in diff_core::gradcheck::direction(5), v in diff_core::gradcheck::direction(4)) {
        check_stage(&ObserveOf(cartpole()), &x, &u, &v, "observation");
    }

    #[test]
    fn reward_adjoint(x in diff_core::gradcheck::vec_in(-7.0, 7.0, 5), u in diff_core::gradcheck::direction(1), v in diff_core::gradcheck::direction(5)) {
        // away from the angle wrap's jumps at odd multiples of π
        let k = ((x[1] + std::f64::consts::PI) / (2.0 * std::f64::consts::PI)).fract();
        prop_assume!(k > 1e-3 && k < 1.0 - 1e-3);
        check_stage(&RewardOf(cartpole()), &x, &u, &v, "reward");
    }

    #[test]
    fn task_step_adjoint(x in state_action(), u in diff_core::gradcheck::direction(4), v in diff_core::gradcheck::direction(5)) {
        prop_assume!(away_from_limit_kinks(&x, 4));
        check_stage(&TaskStepOf(cartpole()), &x, &u, &v, "task step (actuation + 4 substeps)");
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A whole 32-step window: the gradient of the summed reward with respect to the action
    /// sequence, against finite differences of the window's return.
    #[test]
    fn window_of_32_steps_adjoint(s0 in (-3.0..3.0f64, -3.5..3.5f64, -1.0..1.0f64, -1.0..1.0f64), a in diff_core::gradcheck::vec_in(-0.3, 0.3, 32), v in diff_core::gradcheck::direction(32)) {
        let w = Window { task: cartpole(), s0: vec![s0.0, s0.1, s0.2, s0.3], h: 32 };
        // skip windows that reach the cart's limit kinks or the reward's angle wrap
        let mut sc = RowScratch::<f64>::new(&w.task);
        let mut s = w.s0.clone();
        let mut next = s.clone();
        let mut clean = true;
        for t in 0..32 {
            let x: Vec<f64> = s.iter().copied().chain([a[t]]).collect();
            clean &= away_from_limit_kinks(&x, 4);
            step_row(&w.task, &s, &a[t..t + 1], &mut next, &mut sc);
            let k = ((next[1] + std::f64::consts::PI) / (2.0 * std::f64::consts::PI)).fract();
            clean &= k > 1e-3 && k < 1.0 - 1e-3;
            std::mem::swap(&mut s, &mut next);
        }
        prop_assume!(clean);
        check_stage(&w, &a, &[1.0], &v, "32-step window return");
    }
}

#[test]
fn adjoint_workspace_is_reusable_across_calls() {
    // the same workspace used twice gives identical gradients (no stale accumulators)
    let task = cartpole();
    let mut sc = RowScratch::<f64>::new(&task);
    let s = [0.3, -2.0, 0.5, 1.0];
    let a = [0.2];
    let u = [0.1, -0.3, 0.7, 0.2];
    let mut g1 = vec![0.0; 5];
    let mut g2 = vec![0.0; 5];
    {
        let (gs, ga) = g1.split_at_mut(4);
        step_row_vjp(&task, &s, &a, &u, gs, ga, &mut sc);
    }
    {
        let (gs, ga) = g2.split_at_mut(4);
        step_row_vjp(&task, &s, &a, &u, gs, ga, &mut sc);
    }
    assert_eq!(g1, g2);
}

/// The batched f32 [`diff_core::Task`] faces (rayon chunks, pooled workspaces) agree with
/// the per-row f64 adjoint and dual-number JVP, row by row, for a batch size that is not a
/// multiple of the chunk size; and the open-loop window VJP of diff-core matches the f64
/// window adjoint.
#[test]
fn batched_f32_faces_match_per_row_f64() {
    use diff_core::{open_loop_rollout, open_loop_vjp, seeded, Task};
    use ndarray::{Array2, Array3};
    let env = sim_rigid::CartPoleSwingUp::new();
    let def = cartpole();
    let n = 37;
    let mut rng = seeded(5, 0);
    let mut s = Array2::<f32>::zeros((n, 4));
    for row in s.rows_mut() {
        env.reset_state(&mut rng, true, row);
    }
    let a = Array2::from_shape_fn((n, 1), |(i, _)| ((i as f32 * 0.37).sin()) * 0.8);
    let u = Array2::from_shape_fn((n, 4), |(i, j)| ((i * 4 + j) as f32 * 0.91).cos());
    let v = Array2::from_shape_fn((n, 5), |(i, j)| ((i * 5 + j) as f32 * 0.53).sin());
    let (mut adj_s, mut adj_a) = (Array2::<f32>::zeros((n, 4)), Array2::<f32>::zeros((n, 1)));
    env.step_vjp(
        s.view(),
        a.view(),
        u.view(),
        adj_s.view_mut(),
        adj_a.view_mut(),
    );
    let mut jv = Array2::<f32>::zeros((n, 4));
    let (vs, va) = (v.slice(ndarray::s![.., ..4]), v.slice(ndarray::s![.., 4..]));
    env.step_jvp(s.view(), a.view(), vs, va, jv.view_mut());
    let stage = TaskStepOf(def);
    for i in 0..n {
        let x: Vec<f64> = s
            .row(i)
            .iter()
            .chain(a.row(i).iter())
            .map(|&z| z as f64)
            .collect();
        let ui: Vec<f64> = u.row(i).iter().map(|&z| z as f64).collect();
        let g64 = stage.vjp(&x, &ui);
        let g32: Vec<f64> = adj_s
            .row(i)
            .iter()
            .chain(adj_a.row(i).iter())
            .map(|&z| z as f64)
            .collect();
        let e = diff_core::gradcheck::rel_err(&g32, &g64, 1e-6);
        assert!(e < 1e-4, "row {i}: batched f32 VJP vs f64: {e:e}");
        let vi: Vec<f64> = v.row(i).iter().map(|&z| z as f64).collect();
        let j64 = dual_jvp(&stage, &x, &vi);
        let j32: Vec<f64> = jv.row(i).iter().map(|&z| z as f64).collect();
        let e = diff_core::gradcheck::rel_err(&j32, &j64, 1e-6);
        assert!(e < 1e-4, "row {i}: batched f32 JVP vs f64 dual: {e:e}");
    }
    // open-loop window of 8 steps, action gradients against the f64 window adjoint
    let h = 8;
    let actions = Array3::from_shape_fn((h, n, 1), |(t, i, _)| {
        ((t * 13 + i) as f32 * 0.29).sin() * 0.5
    });
    let w = open_loop_rollout(&env, s.view(), actions.view()).expect("rollout");
    let (ga, _) = open_loop_vjp(
        &env,
        w.states.view(),
        actions.view(),
        Array2::ones((h, n)).view(),
    )
    .expect("vjp");
    for i in [0, 17, 36] {
        let s0: Vec<f64> = s.row(i).iter().map(|&z| z as f64).collect();
        let win = Window {
            task: cartpole(),
            s0,
            h,
        };
        let ai: Vec<f64> = (0..h).map(|t| actions[[t, i, 0]] as f64).collect();
        let g64 = win.vjp(&ai, &[1.0]);
        let g32: Vec<f64> = (0..h).map(|t| ga[[t, i, 0]] as f64).collect();
        let e = diff_core::gradcheck::rel_err(&g32, &g64, 1e-6);
        assert!(
            e < 1e-3,
            "env {i}: open-loop window VJP (f32) vs f64 adjoint: {e:e}"
        );
    }
}

// ================================================================ 3D: ball, free, contact
//
// A floating box (free joint, 8 contact corners) with a hinged capsule, a ball-jointed
// sphere and, below the ball, another hinge: every joint kind with ground contact. The
// proptest states put the box in penetration with both sliding (Coulomb) and sticking
// (viscous) friction, joints past their limits, and quaternions anywhere on the sphere.

use sim_rigid::spatial::{axis_angle, Transform};
use sim_rigid::{ArticulationBuilder, ContactMaterial, Geometry, Joint, JointKind, Shape};

const MAT: ContactMaterial = ContactMaterial {
    ke: 1e4,
    kd: 1e3,
    kf: 1e2,
    mu: 0.5,
};

fn shape(g: Geometry, p: [f64; 3]) -> Shape {
    let mut s = Shape::new(
        g,
        Transform {
            p,
            ..Transform::default()
        },
    );
    s.material = MAT;
    s
}

/// A 0.4 × 0.2 × 0.3 m box on a free joint (8 contact corners) as the root link.
fn add_free_box(b: &mut ArticulationBuilder) -> usize {
    let root = Joint::new("root", JointKind::Free, [0.0; 3], Transform::default());
    let half_extents = [0.2, 0.1, 0.15];
    b.add_link(
        None,
        root,
        &[shape(Geometry::Box { half_extents }, [0.0; 3])],
    )
    .unwrap()
}

fn tree3d() -> Articulation {
    let mut b = ArticulationBuilder::default();
    let r = add_free_box(&mut b);
    let mut hinge = Joint::new(
        "hinge",
        JointKind::Revolute,
        [0.0, 0.0, 1.0],
        Transform {
            p: [0.25, 0.0, 0.0],
            ..Transform::default()
        },
    );
    (hinge.limit_lower, hinge.limit_upper) = (-1.0, 1.0);
    (hinge.target_ke, hinge.target_kd, hinge.limit_ke) = (5.0, 0.5, 1e3);
    b.add_link(
        Some(r),
        hinge,
        &[shape(
            Geometry::Capsule {
                radius: 0.05,
                half_width: 0.15,
            },
            [0.15, 0.0, 0.0],
        )],
    )
    .unwrap();
    let mut ball = Joint::new(
        "ball",
        JointKind::Ball,
        [0.0; 3],
        Transform {
            p: [-0.25, 0.05, 0.0],
            r: axis_angle([0.0, 0.6, 0.8], 0.7),
        },
    );
    (ball.target_ke, ball.target_kd, ball.armature) = (2.0, 0.3, 0.02);
    let bl = b
        .add_link(
            Some(r),
            ball,
            &[shape(Geometry::Sphere { radius: 0.08 }, [0.0, -0.2, 0.0])],
        )
        .unwrap();
    let mut h2 = Joint::new(
        "hinge2",
        JointKind::Revolute,
        [1.0, 0.0, 0.0],
        Transform {
            p: [0.0, -0.3, 0.0],
            ..Transform::default()
        },
    );
    (h2.limit_lower, h2.limit_upper, h2.limit_ke) = (-0.5, 0.5, 1e3);
    b.add_link(
        Some(bl),
        h2,
        &[shape(
            Geometry::Capsule {
                radius: 0.04,
                half_width: 0.1,
            },
            [0.1, 0.0, 0.0],
        )],
    )
    .unwrap();
    b.build().unwrap()
}

fn unit_quat(g: &[f64]) -> [f64; 4] {
    let n = g.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-3);
    [g[0] / n, g[1] / n, g[2] / n, g[3] / n]
}

// ---------------------------------------------------------------- stage: contacts
/// Inputs per link: x_sc.p (3), x_sc.r (9), v (6). Output per link: f (6), starting at 0.
struct Contacts(Articulation);
fn unpack_contacts<T: Real>(x: &[T], sub: &mut Substep<T>) {
    for (i, l) in sub.links.iter_mut().enumerate() {
        let o = 18 * i;
        l.x_sc.p.copy_from_slice(&x[o..o + 3]);
        for r in 0..3 {
            l.x_sc.r[r].copy_from_slice(&x[o + 3 + 3 * r..o + 6 + 3 * r]);
        }
        l.v.copy_from_slice(&x[o + 12..o + 18]);
        l.f = [T::zero(); 6];
    }
}
impl Stage for Contacts {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut ws = fresh::<T>(&self.0);
        unpack_contacts(x, &mut ws.subs[0]);
        self.0.contacts(&mut ws.subs[0]);
        ws.subs[0].links.iter().flat_map(|l| l.f).collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut ws = fresh::<f64>(&self.0);
        unpack_contacts(x, &mut ws.subs[0]);
        for (i, la) in ws.adj.links.iter_mut().enumerate() {
            la.f.copy_from_slice(&u[6 * i..6 * i + 6]);
        }
        self.0.contacts_vjp(&ws.subs[0], &mut ws.adj);
        ws.adj
            .links
            .iter()
            .flat_map(|l| {
                let mut g = l.x_sc_p.to_vec();
                g.extend(l.x_sc_r.iter().flatten());
                g.extend(l.v);
                g
            })
            .collect()
    }
}

/// Regime of every contact of a substep's links, and whether each stays clear of the
/// model's kinks by margins scaled by `m` (for m = 1: 1 mm from contact onset, 5 mm/s from
/// the damping switch at v_n = 0 and from ‖v_t‖ = 0, 5 N between the viscous force and
/// the Coulomb cap), so that the finite differences (steps up to 2e-4) never straddle a
/// kink. Returns (clear, #penetrating, #sliding, #sticking).
fn contact_regimes(art: &Articulation, sub: &Substep<f64>, m: f64) -> (bool, usize, usize, usize) {
    let (mut clear, mut pen, mut slide, mut stick) = (true, 0, 0, 0);
    for cp in &art.contacts {
        let l = &sub.links[cp.link];
        let mut p = l.x_sc.point(cp.point);
        p[1] -= cp.thickness; // the contact point is on the surface (dflex: p − r·n)
        let c = p[1];
        clear &= c.abs() > 1e-3 * m;
        if c >= 0.0 {
            continue;
        }
        pen += 1;
        let w = [l.v[0], l.v[1], l.v[2]];
        let dp = [
            l.v[3] + w[1] * p[2] - w[2] * p[1],
            l.v[4] + w[2] * p[0] - w[0] * p[2],
            l.v[5] + w[0] * p[1] - w[1] * p[0],
        ];
        let vt = (dp[0] * dp[0] + dp[2] * dp[2]).sqrt();
        let cap = -cp.material.mu * cp.material.ke * c;
        clear &=
            dp[1].abs() > 5e-3 * m && vt > 5e-3 * m && (cp.material.kf * vt - cap).abs() > 5.0 * m;
        if cp.material.kf * vt < cap {
            stick += 1;
        } else {
            slide += 1;
        }
    }
    (clear, pen, slide, stick)
}

/// `x_sc`, `v` inputs for the contact stage: every link somewhere around the ground.
fn contact_inputs() -> impl Strategy<Value = Vec<f64>> {
    diff_core::gradcheck::vec_in(-1.0, 1.0, 18 * 4).prop_map(|mut x| {
        for i in 0..4 {
            x[18 * i + 1] *= 0.2; // p_y within ±0.2 of the ground
            for k in 12..18 {
                x[18 * i + k] *= 3.0; // velocities up to 3
            }
        }
        x
    })
}

// ---------------------------------------------------------------- full step, any model
/// Inputs: q, q̇, act (n_qd). Output: q', q̇'.
struct ArtStep {
    art: Articulation,
    params: SimParams,
}
impl Stage for ArtStep {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let (nq, nd) = (self.art.n_q, self.art.n_qd);
        let mut ws = Workspace::<T>::new(&self.art, &self.params);
        let (mut q, mut qd) = (vec![T::zero(); nq], vec![T::zero(); nd]);
        let act = &x[nq + nd..];
        self.art.step(
            &self.params,
            &x[..nq],
            &x[nq..nq + nd],
            act,
            &mut q,
            &mut qd,
            &mut ws,
        );
        q.into_iter().chain(qd).collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let (nq, nd) = (self.art.n_q, self.art.n_qd);
        let mut ws = Workspace::<f64>::new(&self.art, &self.params);
        let (mut aq, mut aqd, mut aact) = (vec![0.0; nq], vec![0.0; nd], vec![0.0; nd]);
        self.art.step_vjp(
            &self.params,
            &x[..nq],
            &x[nq..nq + nd],
            &x[nq + nd..],
            &u[..nq],
            &u[nq..],
            &mut aq,
            &mut aqd,
            &mut aact,
            &mut ws,
        );
        aq.into_iter().chain(aqd).chain(aact).collect()
    }
}

impl ArtStep {
    /// Whether every substep of the step from `x` stays clear of the contact kinks and the
    /// hinge-limit kinks; also returns the contact regimes seen over the substeps.
    fn clear_of_kinks(&self, x: &[f64]) -> (bool, usize, usize, usize) {
        self.clear_of_kinks_by(x, 2.0)
    }

    /// The workspace of the step from `x = [q, q̇, act]`: every substep's intermediates.
    fn substeps(&self, x: &[f64]) -> Workspace<f64> {
        let (nq, nd) = (self.art.n_q, self.art.n_qd);
        let mut ws = Workspace::<f64>::new(&self.art, &self.params);
        let (mut q, mut qd) = (vec![0.0; nq], vec![0.0; nd]);
        let (s, a) = (&x[..nq + nd], &x[nq + nd..]);
        self.art.step(
            &self.params,
            &s[..nq],
            &s[nq..],
            a,
            &mut q,
            &mut qd,
            &mut ws,
        );
        ws
    }

    /// The deepest penetration of any contact point over the substeps of the step from `x`.
    fn deepest_penetration(&self, x: &[f64]) -> f64 {
        let ws = self.substeps(x);
        let mut deepest = 0.0f64;
        for sub in &ws.subs {
            for cp in &self.art.contacts {
                let p = sub.links[cp.link].x_sc.point(cp.point);
                deepest = deepest.max(cp.thickness - p[1]);
            }
        }
        deepest
    }

    /// [`ArtStep::clear_of_kinks`] with the margins of [`contact_regimes`] scaled by `m`
    /// (hinge limits: 5 mrad × m).
    fn clear_of_kinks_by(&self, x: &[f64], m: f64) -> (bool, usize, usize, usize) {
        let ws = self.substeps(x);
        let mut all = (true, 0, 0, 0);
        for sub in &ws.subs {
            let r = contact_regimes(&self.art, sub, m);
            all = (all.0 && r.0, all.1 + r.1, all.2 + r.2, all.3 + r.3);
            for l in &self.art.links {
                if l.joint.kind.is_1dof() {
                    let qi = sub.q[l.q_start];
                    all.0 &= (qi - l.joint.limit_lower).abs() > 5e-3 * m
                        && (qi - l.joint.limit_upper).abs() > 5e-3 * m;
                }
            }
        }
        all
    }
}

/// A state of `tree3d` near the ground: box height 0.02–0.2 (corners penetrate for tilted
/// boxes), random root and ball orientations, hinges within and past their limits,
/// velocities up to 2, and actuation on the hinges.
fn tree_state() -> impl Strategy<Value = Vec<f64>> {
    (
        diff_core::gradcheck::vec_in(-1.0, 1.0, 8),
        diff_core::gradcheck::vec_in(-1.5, 1.5, 2),
        diff_core::gradcheck::vec_in(-2.0, 2.0, 11),
        diff_core::gradcheck::vec_in(-20.0, 20.0, 2),
        0.02..0.2f64,
    )
        .prop_map(|(quats, hinges, qd, act, h)| {
            let qr = unit_quat(&quats[..4]);
            let qb = unit_quat(&quats[4..]);
            let mut x = vec![0.3, h, -0.2];
            x.extend(qr);
            x.push(hinges[0]);
            x.extend(qb);
            x.push(hinges[1]);
            x.extend(qd);
            // act: zeros on the free and ball DOFs (they are not actuated), hinges actuated
            let mut a = vec![0.0; 11];
            a[6] = act[0];
            a[10] = act[1];
            x.extend(a);
            x
        })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn kinematics_adjoint_3d(q in diff_core::gradcheck::vec_in(-1.5, 1.5, 13), u in diff_core::gradcheck::direction(8), v in diff_core::gradcheck::direction(13)) {
        // quaternions anywhere, including off the unit sphere
        check_stage(&Kinematics(tree3d()), &q, &u, &v, "kinematics (free, ball, hinges)");
    }

    #[test]
    fn velocities_adjoint_3d(x in diff_core::gradcheck::vec_in(-2.0, 2.0, 11 + 66), u in diff_core::gradcheck::direction(8), v in diff_core::gradcheck::direction(77)) {
        check_stage(&Velocities(tree3d()), &x, &u, &v, "velocities (free, ball, hinges)");
    }

    #[test]
    fn contacts_adjoint(x in contact_inputs(), u in diff_core::gradcheck::direction(8), v in diff_core::gradcheck::direction(72)) {
        let art = tree3d();
        let mut ws = fresh::<f64>(&art);
        unpack_contacts(&x, &mut ws.subs[0]);
        let (clear, pen, _, _) = contact_regimes(&art, &ws.subs[0], 1.0);
        prop_assume!(clear && pen > 0);
        check_stage(&Contacts(art), &x, &u, &v, "ground contacts");
    }

    #[test]
    fn joint_torques_adjoint_3d(x in diff_core::gradcheck::vec_in(-1.5, 1.5, 13 + 11 + 11 + 66 + 24), u in diff_core::gradcheck::direction(11), v in diff_core::gradcheck::direction(125)) {
        let art = tree3d();
        // hinge coordinates (7 and 12) away from their limit kinks
        prop_assume!((x[7].abs() - 1.0).abs() > 1e-2 && (x[12].abs() - 0.5).abs() > 1e-2);
        check_stage(&Torques(art), &x, &u, &v, "joint torques (free, ball, hinges)");
    }

    #[test]
    fn mass_matrix_adjoint_3d(x in diff_core::gradcheck::vec_in(-2.0, 2.0, 4 * 36 + 66), u in diff_core::gradcheck::direction(11), v in diff_core::gradcheck::direction(210)) {
        check_stage(&MassMatrixStage(tree3d()), &x, &u, &v, "mass matrix (free, ball, hinges)");
    }

    #[test]
    fn integrate_adjoint_3d(x in diff_core::gradcheck::vec_in(-2.0, 2.0, 13 + 22), u in diff_core::gradcheck::direction(24), v in diff_core::gradcheck::direction(35)) {
        check_stage(&Integrate(tree3d()), &x, &u, &v, "integrate (free, ball, hinges)");
    }

    #[test]
    fn full_step_adjoint_3d_with_contacts(x in tree_state(), u in diff_core::gradcheck::direction(24), v in diff_core::gradcheck::direction(35), freq in prop_oneof![Just(1usize), Just(4usize)]) {
        let st = ArtStep { art: tree3d(), params: SimParams { dt: 1.0 / 60.0, substeps: 4, mm_freq: freq } };
        let (clear, _, _, _) = st.clear_of_kinks(&x);
        prop_assume!(clear);
        // A smaller step than elsewhere: over 4 substeps with contact stiffness 1e4 the
        // higher derivatives are large, and with h = 1e-4 the fourth-order differences
        // themselves err by up to 1e-3 (checked: h = 1e-5 and 1e-6 agree with the VJP to
        // 1e-9 on the case that exposed it). Roundoff at h = 1e-5 is ~1e-11.
        check_stage_h(&st, &x, &u, &v, "step of the 3D tree with ground contact", FD_STEP_CONTACT);
    }
}

/// The 3D step proptest really exercises penetration, sliding and sticking contacts and
/// hinges past their limits (guards against a strategy that never reaches those regimes).
#[test]
fn tree_states_cover_contact_regimes_and_limits() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let st = ArtStep {
        art: tree3d(),
        params: SimParams {
            dt: 1.0 / 60.0,
            substeps: 4,
            mm_freq: 4,
        },
    };
    let mut runner = TestRunner::deterministic();
    let (mut clear, mut pen, mut slide, mut stick, mut past_limit) = (0, 0, 0, 0, 0);
    for _ in 0..256 {
        let x = tree_state().new_tree(&mut runner).unwrap().current();
        let r = st.clear_of_kinks(&x);
        if r.0 {
            clear += 1;
            pen += (r.1 > 0) as usize;
            slide += (r.2 > 0) as usize;
            stick += (r.3 > 0) as usize;
            past_limit += (x[7].abs() > 1.0 || x[12].abs() > 0.5) as usize;
        }
    }
    assert!(clear > 64, "only {clear} of 256 states are clear of kinks");
    assert!(pen > 32 && slide > 16 && stick > 16 && past_limit > 16,
        "regimes among clear states: penetrating {pen}, sliding {slide}, sticking {stick}, past a limit {past_limit}");
}

// ================================================================ locomotion templates
//
// The free-base (Ant/Humanoid/Bruce) and planar (Hopper/Cheetah) task templates on small
// hand-built models: observation, reward and the task step with its extra state (the
// previous action), against finite differences and dual numbers.

use sim_rigid::tasks::locomotion::{HeightReward, Locomotion, LocomotionConfig};
use sim_rigid::tasks::planar::{HopperTerms, Planar, PlanarConfig};

/// A free box with two hinged capsules (q 9, q̇ 8), as a locomotion task with 2 actions.
fn mini_locomotion(height: HeightReward) -> Locomotion {
    let mut b = ArticulationBuilder::default();
    let r = add_free_box(&mut b);
    for (k, x) in [0.25f64, -0.25].iter().enumerate() {
        let mut j = Joint::new(
            &format!("hip{k}"),
            JointKind::Revolute,
            [0.0, 0.6, 0.8],
            Transform {
                p: [*x, 0.0, 0.0],
                ..Transform::default()
            },
        );
        (
            j.limit_lower,
            j.limit_upper,
            j.limit_ke,
            j.limit_kd,
            j.target_kd,
        ) = (-0.7, 0.7, 1e3, 10.0, 1.0);
        b.add_link(
            Some(r),
            j,
            &[shape(
                Geometry::Capsule {
                    radius: 0.05,
                    half_width: 0.15,
                },
                [x.signum() * 0.15, 0.0, 0.0],
            )],
        )
        .unwrap();
    }
    let art = b.build().unwrap();
    Locomotion::new(LocomotionConfig {
        name: "mini".into(),
        art,
        params: SimParams {
            dt: 1.0 / 60.0,
            substeps: 4,
            mm_freq: 4,
        },
        episode_length: 100,
        start_pos: [0.0, 0.3, 0.0],
        start_rot: [
            -std::f64::consts::FRAC_1_SQRT_2,
            0.0,
            0.0,
            std::f64::consts::FRAC_1_SQRT_2,
        ],
        rest_pose: vec![0.2, -0.2],
        actuators: vec![(6, 30.0), (7, 30.0)],
        target: [5.0, 0.0, 1.0],
        termination_height: 0.1,
        height_reward: height,
        up_weight: 0.1,
        heading_weight: 1.0,
        action_penalty: -0.01,
        ang_vel_penalty: -0.05,
        noise_pos: 0.1,
        noise_rot: 0.1,
        noise_joint: 0.1,
        noise_vel: 0.1,
        joint_vel_obs_scale: 0.1,
        joint_names: vec!["hip0".into(), "hip1".into()],
        brax: None,
    })
    .unwrap()
}

/// A random mini-locomotion state `[q 9, q̇ 8, prev a 2]`: torso near the ground with any
/// orientation, hinges within and past their limits.
fn mini_state_action() -> impl Strategy<Value = Vec<f64>> {
    (
        diff_core::gradcheck::vec_in(-1.0, 1.0, 4),
        diff_core::gradcheck::vec_in(-1.0, 1.0, 2),
        diff_core::gradcheck::vec_in(-2.0, 2.0, 8),
        diff_core::gradcheck::vec_in(-1.0, 1.0, 2),
        (0.02..0.4f64, -1.0..1.0f64, -1.0..1.0f64),
    )
        .prop_map(|(quat, hinges, qd, prev_a, (h, x, z))| {
            let mut s = vec![x, h, z];
            s.extend(unit_quat(&quat));
            s.extend(hinges);
            s.extend(qd);
            s.extend(prev_a);
            s
        })
}

/// The task-level step `step_row` (actuation, physics, previous-action state) as a stage.
struct TaskStepOf<D: RigidTask>(D);
impl<D: RigidTask> Stage for TaskStepOf<D> {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.0.spec().state_dim;
        let mut sc = RowScratch::<T>::new(&self.0);
        let mut out = vec![T::zero(); n];
        step_row(&self.0, &x[..n], &x[n..], &mut out, &mut sc);
        out
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.spec().state_dim;
        let mut sc = RowScratch::<f64>::new(&self.0);
        let mut g = vec![0.0; x.len()];
        let (gs, ga) = g.split_at_mut(n);
        step_row_vjp(&self.0, &x[..n], &x[n..], u, gs, ga, &mut sc);
        g
    }
}

struct ObserveOf<D: RigidTask>(D);
impl<D: RigidTask> Stage for ObserveOf<D> {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut o = vec![T::zero(); self.0.spec().obs_dim];
        self.0.observe(x, &mut o);
        o
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut g = vec![0.0; x.len()];
        self.0.observe_vjp(x, u, &mut g);
        g
    }
}

struct RewardOf<D: RigidTask>(D);
impl<D: RigidTask> Stage for RewardOf<D> {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.0.spec().state_dim;
        vec![self.0.reward(&x[..n], &x[n..])]
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.spec().state_dim;
        let mut g = vec![0.0; x.len()];
        let (gs, ga) = g.split_at_mut(n);
        self.0.reward_vjp(&x[..n], &x[n..], u[0], gs, ga);
        g
    }
}

fn mini_planar() -> Planar {
    let mut b = ArticulationBuilder::default();
    let rot = Transform {
        p: [0.0, 0.5, 0.0],
        r: axis_angle([1.0, 0.0, 0.0], -std::f64::consts::FRAC_PI_2),
    };
    let mut rx = Joint::new("rootx", JointKind::Prismatic, [1.0, 0.0, 0.0], rot);
    let mut rz = Joint::new(
        "rootz",
        JointKind::Prismatic,
        [0.0, 0.0, 1.0],
        Transform::default(),
    );
    let mut ry = Joint::new(
        "rooty",
        JointKind::Revolute,
        [0.0, 1.0, 0.0],
        Transform::default(),
    );
    for j in [&mut rx, &mut rz, &mut ry] {
        (j.limit_lower, j.limit_upper, j.armature) = (-1e6, 1e6, 1.0);
    }
    let a = b.add_link(None, rx, &[]).unwrap();
    let z = b.add_link(Some(a), rz, &[]).unwrap();
    let t = b
        .add_link(
            Some(z),
            ry,
            &[shape(
                Geometry::Capsule {
                    radius: 0.05,
                    half_width: 0.2,
                },
                [0.0; 3],
            )],
        )
        .unwrap();
    let mut leg = Joint::new(
        "leg",
        JointKind::Revolute,
        [0.0, -1.0, 0.0],
        Transform {
            p: [0.0, 0.0, -0.2],
            ..Transform::default()
        },
    );
    (leg.limit_lower, leg.limit_upper) = (-1.0, 0.5);
    b.add_link(
        Some(t),
        leg,
        &[shape(
            Geometry::Capsule {
                radius: 0.04,
                half_width: 0.2,
            },
            [0.0, 0.0, -0.2],
        )],
    )
    .unwrap();
    Planar::new(PlanarConfig {
        name: "mini-planar".into(),
        art: b.build().unwrap(),
        params: SimParams {
            dt: 1.0 / 60.0,
            substeps: 4,
            mm_freq: 4,
        },
        episode_length: 100,
        start_xz: [0.0, 0.0],
        actuators: vec![(3, 50.0)],
        action_penalty: -0.1,
        hopper: Some(HopperTerms {
            termination_height: -0.45,
            height_tolerance: 0.15,
            height_clip: 0.3,
            height_scale: 1.0,
            termination_angle: std::f64::consts::PI / 6.0,
        }),
        brax: None,
        noise_root: 0.05,
        noise_angle: 0.05,
        noise_joint: 0.05,
        noise_vel: 0.05,
        joint_names: ["rootx", "rootz", "rooty", "leg"]
            .map(String::from)
            .to_vec(),
    })
    .unwrap()
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn locomotion_observation_adjoint(s in mini_state_action(), u in diff_core::gradcheck::direction(28), v in diff_core::gradcheck::direction(19)) {
        check_stage(&ObserveOf(mini_locomotion(HeightReward::Linear)), &s, &u, &v, "locomotion observation");
    }

    #[test]
    fn locomotion_reward_adjoint(s in mini_state_action(), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 2), clipped in any::<bool>(), v in diff_core::gradcheck::direction(21)) {
        let hr = if clipped { HeightReward::Clipped { tolerance: 0.1, scale: 10.0 } } else { HeightReward::Linear };
        // away from the clip kinks: actions at ±1, height term at d = −1, 0, tol
        prop_assume!(a.iter().all(|x| (x.abs() - 1.0).abs() > 1e-2));
        let d = s[1] - 0.2;
        prop_assume!(!clipped || [-1.0, 0.0, 0.1].iter().all(|k| (d - k).abs() > 1e-2));
        let x: Vec<f64> = s.iter().copied().chain(a).collect();
        check_stage(&RewardOf(mini_locomotion(hr)), &x, &[1.0], &v, "locomotion reward");
    }

    #[test]
    fn locomotion_task_step_adjoint(s in mini_state_action(), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 2), u in diff_core::gradcheck::direction(19), v in diff_core::gradcheck::direction(21)) {
        let task = mini_locomotion(HeightReward::Linear);
        prop_assume!(a.iter().all(|x| (x.abs() - 1.0).abs() > 1e-2));
        let x: Vec<f64> = s.iter().copied().chain(a.iter().copied()).collect();
        let act: Vec<f64> = {
            let mut act = vec![0.0; 8];
            task.actuation(&a, &mut act);
            act
        };
        let st = ArtStep { art: task.articulation().clone(), params: *task.sim_params() };
        let phys: Vec<f64> = s[..17].iter().copied().chain(act).collect();
        prop_assume!(st.clear_of_kinks(&phys).0);
        check_stage_h(&TaskStepOf(task), &x, &u, &v, "locomotion task step (actuation, physics, previous action)", FD_STEP_CONTACT);
    }

    #[test]
    fn planar_reward_and_observation_adjoint(s in diff_core::gradcheck::vec_in(-1.5, 1.5, 8), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 1), u in diff_core::gradcheck::direction(7), v in diff_core::gradcheck::direction(9)) {
        prop_assume!((a[0].abs() - 1.0).abs() > 1e-2);
        let d = s[1] + 0.3;
        prop_assume!([-1.0, 0.0, 0.3].iter().all(|k| (d - k).abs() > 1e-2));
        check_stage(&ObserveOf(mini_planar()), &s, &u, &v[..8], "planar observation");
        let x: Vec<f64> = s.iter().copied().chain(a).collect();
        check_stage(&RewardOf(mini_planar()), &x, &[1.0], &v, "planar reward (hopper terms)");
    }
}

// ================================================================ Ant and Humanoid steps
//
// Full control steps of the shipped tasks (16 and 48 substeps with the mass matrix
// cached over the step, all 25 / 35 contact points active) from states near the ground:
// DiffRL's reset noise widened (feet penetrating, sliding or sticking, joints past their
// limits, the torso tilted far from upright) and random actions.

use sim_rigid::tasks::ant::ant_def;
use sim_rigid::tasks::humanoid::humanoid_def;

/// A task state: orientation `quat` (normalised; anywhere on the sphere), joints at
/// `mid ± spread·half-range` (past their limits when `spread > 1`), velocities, and the
/// torso at the height that puts the lowest contact point `h` below the ground.
fn perturbed_state(
    task: &Locomotion,
    h: f64,
    quat: &[f64],
    joints: &[f64],
    spread: f64,
    vel: &[f64],
) -> Vec<f64> {
    let art = task.articulation();
    let nj = art.n_q - 7;
    let mut s = vec![0.0; task.spec().state_dim];
    s[1] = h;
    let q = unit_quat(quat);
    s[3..7].copy_from_slice(&q);
    for k in 0..nj {
        let l = &art.links[art.dof_link[6 + k]].joint;
        let mid = 0.5 * (l.limit_lower + l.limit_upper);
        let half = 0.5 * (l.limit_upper - l.limit_lower);
        s[7 + k] = mid + spread * half * joints[k % joints.len()];
    }
    for (k, v) in vel.iter().enumerate().take(6 + nj) {
        s[art.n_q + k] = *v;
    }
    // lift or lower the torso so that the lowest contact point is `h` below the ground
    let lowest = art.lowest_contact(&s[..art.n_q]);
    s[1] -= lowest + h;
    s
}

/// The full-step check of a rigid task from `x = [s, a]` (planar or 3-D), when every
/// substep is clear of the contact and limit kinks and some point penetrates.
fn locomotion_step_case<D: RigidTask>(
    task: D,
    x: Vec<f64>,
    u: &[f64],
    v: &[f64],
    what: &str,
    h: f64,
) -> Result<(), TestCaseError> {
    let n = task.spec().state_dim;
    let nphys = task.articulation().n_q + task.articulation().n_qd;
    let mut act = vec![0.0; task.articulation().n_qd];
    task.actuation(&x[n..], &mut act);
    let st = ArtStep {
        art: task.articulation().clone(),
        params: *task.sim_params(),
    };
    let phys: Vec<f64> = x[..nphys].iter().copied().chain(act).collect();
    // margins sized for the finite-difference step 1e-5 (a tenth of the default's reach)
    let (clear, pen, _, _) = st.clear_of_kinks_by(&phys, 0.5);
    prop_assume!(clear && pen > 0);
    // No body deeper than 5 cm in the ground in any substep: far deeper (a torso tilted
    // through the floor) the penalty forces exceed the weight a hundredfold, the step is
    // chaotic to f64 precision and finite differences with steps 1e-5, 1e-7 and 1e-8
    // disagree with one another by 100% (measured), so no oracle can check it.
    prop_assume!(st.deepest_penetration(&phys) < 0.05);
    check_stage_h(&TaskStepOf(task), &x, u, v, what, h);
    Ok(())
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn ant_full_step_adjoint(h in 0.002..0.03f64, quat in diff_core::gradcheck::vec_in(-1.0, 1.0, 4), joints in diff_core::gradcheck::vec_in(-1.0, 1.0, 8), vel in diff_core::gradcheck::vec_in(-1.0, 1.0, 14), a in diff_core::gradcheck::vec_in(-0.95, 0.95, 8), u in diff_core::gradcheck::direction(37), v in diff_core::gradcheck::direction(45)) {
        let task = ant_def().unwrap();
        let mut x = perturbed_state(&task, h, &quat, &joints, 1.2, &vel);
        x.extend(a);
        locomotion_step_case(task, x, &u, &v, "Ant step (16 substeps, 25 contacts)", FD_STEP_FULL_STEP)?;
    }

    #[test]
    fn humanoid_full_step_adjoint(h in 0.002..0.03f64, quat in diff_core::gradcheck::vec_in(-1.0, 1.0, 4), joints in diff_core::gradcheck::vec_in(-1.0, 1.0, 21), vel in diff_core::gradcheck::vec_in(-0.3, 0.3, 27), a in diff_core::gradcheck::vec_in(-0.3, 0.3, 21), u in diff_core::gradcheck::direction(76), v in diff_core::gradcheck::direction(97)) {
        let task = humanoid_def().unwrap();
        // 48 substeps give the hinges time to cross a limit (a kink): keep them inside and
        // the actions moderate so that enough cases are clear of kinks
        let mut x = perturbed_state(&task, h, &quat, &joints, 0.9, &vel);
        x.extend(a);
        locomotion_step_case(task, x, &u, &v, "Humanoid step (48 substeps, 35 contacts)", FD_STEP_FULL_STEP)?;
    }
}

// ================================================================ Brax-like tasks
//
// The Brax variants of the planar and locomotion templates and the reacher task
// (`sim_rigid::tasks::brax`, tasks.md §5): observation, reward and the full control step
// (8 substeps for hopper, 50 for halfcheetah and ant, 20 for reacher, 15 for humanoid) against finite
// differences in f64 and forward-mode dual numbers, from states with ground contact.

use sim_rigid::tasks::brax::{
    brax_ant_def, brax_cheetah_def, brax_hopper_def, brax_humanoid_def, brax_reacher_def,
};

/// A planar state: joints at `mid ± spread·half-range`, root angle `angle`, velocities
/// `vel`, and rootz set so that the lowest contact point is `h` below the ground.
fn planar_contact_state(
    task: &Planar,
    h: f64,
    angle: f64,
    joints: &[f64],
    vel: &[f64],
) -> Vec<f64> {
    let art = task.articulation();
    let n = art.n_q;
    let mut s = vec![0.0; 2 * n];
    s[2] = angle;
    for k in 3..n {
        let l = &art.links[k].joint;
        let mid = 0.5 * (l.limit_lower + l.limit_upper);
        let half = 0.5 * (l.limit_upper - l.limit_lower);
        s[k] = mid + 0.9 * half * joints[k % joints.len()];
    }
    s[n..].copy_from_slice(&vel[..n]);
    let lowest = art.lowest_contact(&s[..n]);
    s[1] -= lowest + h;
    s
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn brax_hopper_observation_and_reward_adjoint(s in diff_core::gradcheck::vec_in(-15.0, 15.0, 12), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 3), u in diff_core::gradcheck::direction(11), v in diff_core::gradcheck::direction(15)) {
        // away from the kinks: velocity clip at ±10, action clip at ±1
        prop_assume!(s[6..].iter().all(|x| (x.abs() - 10.0).abs() > 1e-2));
        prop_assume!(a.iter().all(|x| (x.abs() - 1.0).abs() > 1e-2));
        let task = brax_hopper_def().unwrap();
        check_stage(&ObserveOf(task), &s, &u, &v[..12], "brax-hopper observation (clipped velocities)");
        let x: Vec<f64> = s.iter().copied().chain(a).collect();
        check_stage(&RewardOf(brax_hopper_def().unwrap()), &x, &[1.0], &v, "brax-hopper reward");
    }

    #[test]
    fn brax_cheetah_observation_and_reward_adjoint(s in diff_core::gradcheck::vec_in(-3.0, 3.0, 18), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 6), u in diff_core::gradcheck::direction(17), v in diff_core::gradcheck::direction(24)) {
        prop_assume!(a.iter().all(|x| (x.abs() - 1.0).abs() > 1e-2));
        check_stage(&ObserveOf(brax_cheetah_def().unwrap()), &s, &u, &v[..18], "brax-halfcheetah observation");
        let x: Vec<f64> = s.iter().copied().chain(a).collect();
        check_stage(&RewardOf(brax_cheetah_def().unwrap()), &x, &[1.0], &v, "brax-halfcheetah reward");
    }

    #[test]
    fn brax_ant_observation_and_reward_adjoint(p in diff_core::gradcheck::vec_in(-2.0, 2.0, 3), quat in diff_core::gradcheck::vec_in(-1.0, 1.0, 4), rest in diff_core::gradcheck::vec_in(-2.0, 2.0, 22), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 8), u in diff_core::gradcheck::direction(27), v in diff_core::gradcheck::direction(37)) {
        prop_assume!(a.iter().all(|x| (x.abs() - 1.0).abs() > 1e-2));
        let mut s = p.clone();
        s.extend(unit_quat(&quat));
        s.extend(rest);
        check_stage(&ObserveOf(brax_ant_def().unwrap()), &s, &u, &v[..29], "brax-ant observation (z-up frame, local ω)");
        let x: Vec<f64> = s.iter().copied().chain(a).collect();
        check_stage(&RewardOf(brax_ant_def().unwrap()), &x, &[1.0], &v, "brax-ant reward");
    }

    #[test]
    fn brax_reacher_observation_and_reward_adjoint(s in diff_core::gradcheck::vec_in(-4.0, 4.0, 6), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 2), u in diff_core::gradcheck::direction(11), v in diff_core::gradcheck::direction(8)) {
        prop_assume!(a.iter().all(|x| (x.abs() - 1.0).abs() > 1e-2));
        let task = brax_reacher_def().unwrap();
        let (tip, _) = sim_rigid::tasks::brax::Reacher::tip(&s);
        // away from the norm's kink at tip = target
        prop_assume!((tip[0] - s[4]).hypot(tip[1] - s[5]) > 1e-2);
        check_stage(&ObserveOf(task), &s, &u, &v[..6], "brax-reacher observation");
        let x: Vec<f64> = s.iter().copied().chain(a).collect();
        check_stage(&RewardOf(brax_reacher_def().unwrap()), &x, &[1.0], &v, "brax-reacher reward");
    }

    #[test]
    fn brax_reacher_step_adjoint(s in diff_core::gradcheck::vec_in(-2.0, 2.0, 6), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 2), u in diff_core::gradcheck::direction(6), v in diff_core::gradcheck::direction(8)) {
        // joint1 within and past its ±3 rad limit
        let mut s = s;
        s[1] *= 2.0;
        prop_assume!(a.iter().all(|x| (x.abs() - 1.0).abs() > 1e-2));
        let task = brax_reacher_def().unwrap();
        let mut act = vec![0.0; 2];
        task.actuation(&a, &mut act);
        let st = ArtStep { art: task.articulation().clone(), params: *task.sim_params() };
        let phys: Vec<f64> = s[..4].iter().copied().chain(act).collect();
        prop_assume!(st.clear_of_kinks(&phys).0);
        let x: Vec<f64> = s.iter().copied().chain(a).collect();
        check_stage(&TaskStepOf(task), &x, &u, &v, "brax-reacher step (20 substeps, target carried over)");
    }
}

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn brax_hopper_full_step_adjoint(h in 0.002..0.03f64, angle in -0.5..0.5f64, joints in diff_core::gradcheck::vec_in(-1.0, 1.0, 6), vel in diff_core::gradcheck::vec_in(-1.0, 1.0, 6), a in diff_core::gradcheck::vec_in(-0.95, 0.95, 3), u in diff_core::gradcheck::direction(12), v in diff_core::gradcheck::direction(15)) {
        let task = brax_hopper_def().unwrap();
        let mut x = planar_contact_state(&task, h, angle, &joints, &vel);
        x.extend(a);
        locomotion_step_case(task, x, &u, &v, "brax-hopper step (8 substeps)", FD_STEP_FULL_STEP)?;
    }

    #[test]
    fn brax_cheetah_full_step_adjoint(h in 0.002..0.03f64, angle in -0.3..0.3f64, joints in diff_core::gradcheck::vec_in(-1.0, 1.0, 9), vel in diff_core::gradcheck::vec_in(-0.5, 0.5, 9), a in diff_core::gradcheck::vec_in(-0.5, 0.5, 6), u in diff_core::gradcheck::direction(18), v in diff_core::gradcheck::direction(24)) {
        let task = brax_cheetah_def().unwrap();
        let mut x = planar_contact_state(&task, h, angle, &joints, &vel);
        x.extend(a);
        locomotion_step_case(task, x, &u, &v, "brax-halfcheetah step (50 substeps)", FD_STEP_FULL_STEP)?;
    }

    #[test]
    fn brax_ant_full_step_adjoint(h in 0.002..0.03f64, quat in diff_core::gradcheck::vec_in(-1.0, 1.0, 4), joints in diff_core::gradcheck::vec_in(-1.0, 1.0, 8), vel in diff_core::gradcheck::vec_in(-0.5, 0.5, 14), a in diff_core::gradcheck::vec_in(-0.5, 0.5, 8), u in diff_core::gradcheck::direction(29), v in diff_core::gradcheck::direction(37)) {
        let task = brax_ant_def().unwrap();
        let mut x = perturbed_state(&task, h, &quat, &joints, 0.9, &vel);
        x.extend(a);
        locomotion_step_case(task, x, &u, &v, "brax-ant step (50 substeps, 25 contacts)", FD_STEP_FULL_STEP)?;
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// The humanoid's observation includes the COM-based inertia and velocity of every
    /// body (through the articulation's kinematics and velocities and their adjoints) and
    /// the actuator forces of the previous action; its reward the whole-body COM velocity.
    #[test]
    fn brax_humanoid_observation_and_reward_adjoint(p in diff_core::gradcheck::vec_in(-2.0, 2.0, 3), quat in diff_core::gradcheck::vec_in(-1.0, 1.0, 4), rest in diff_core::gradcheck::vec_in(-2.0, 2.0, 57), a in diff_core::gradcheck::vec_in(-1.3, 1.3, 17), u in diff_core::gradcheck::direction(244), v in diff_core::gradcheck::direction(81)) {
        prop_assume!(a.iter().all(|x| (x.abs() - 1.0).abs() > 1e-2));
        let mut s = p.clone();
        s.extend(unit_quat(&quat));
        s.extend(rest);
        check_stage(&ObserveOf(brax_humanoid_def().unwrap()), &s, &u, &v[..64], "brax-humanoid observation (cinert, cvel, qfrc_actuator)");
        let x: Vec<f64> = s.iter().copied().chain(a).collect();
        check_stage(&RewardOf(brax_humanoid_def().unwrap()), &x, &[1.0], &v, "brax-humanoid reward (COM velocity)");
    }
}

proptest! {
    #![proptest_config(cases(12))]

    #[test]
    fn brax_humanoid_full_step_adjoint(h in 0.002..0.03f64, quat in diff_core::gradcheck::vec_in(-0.3, 0.3, 4), joints in diff_core::gradcheck::vec_in(-1.0, 1.0, 17), vel in diff_core::gradcheck::vec_in(-0.5, 0.5, 23), prev in diff_core::gradcheck::vec_in(-1.0, 1.0, 17), a in diff_core::gradcheck::vec_in(-0.5, 0.5, 17), u in diff_core::gradcheck::direction(64), v in diff_core::gradcheck::direction(81)) {
        let task = brax_humanoid_def().unwrap();
        let mut x = perturbed_state(&task, h, &quat, &joints, 0.9, &vel);
        x[47..].copy_from_slice(&prev);
        x.extend(a);
        locomotion_step_case(task, x, &u, &v, "brax-humanoid step (15 substeps, 2 foot contacts)", FD_STEP_FULL_STEP)?;
    }
}

//! Adjoint tests of every stage of the articulation pipeline, of full substeps and steps,
//! and of a 32-step CartPole window: VJP against fourth-order central differences in f64
//! (relative error ≤ 1e-6) and the VJP/JVP dot-product test with dual numbers (≤ 1e-9),
//! over 256 random cases per property, including states beyond the cart's joint limits.
#![allow(clippy::needless_range_loop)]

use diff_core::gradcheck::{cases, check_vjp_fd, dot_product_test};
use diff_core::{Dual, Real};
use proptest::prelude::*;
use sim_rigid::batch::{step_row, step_row_vjp, RigidTask, RowScratch};
use sim_rigid::dynamics::{Substep, Workspace};
use sim_rigid::tasks::CartPole;
use sim_rigid::{Articulation, SimParams};

const FD_STEP: f64 = 1e-4;
const FD_TOL: f64 = 1e-6;
const DOT_TOL: f64 = 1e-9;

/// A stage under test: a map ℝⁿ → ℝᵐ given by packing `x` into a workspace, running the
/// forward stage, and reading its outputs; and its VJP through the stage's adjoint.
trait Stage {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T>;
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64>;
}

fn dual_jvp<S: Stage>(s: &S, x: &[f64], v: &[f64]) -> Vec<f64> {
    let xd: Vec<Dual<f64>> = x.iter().zip(v).map(|(&a, &b)| Dual::new(a, b)).collect();
    s.forward(&xd).iter().map(|d| d.eps).collect()
}

/// Runs both checks; `what` names the stage in failure messages.
fn check_stage<S: Stage>(s: &S, x: &[f64], u_seed: &[f64], v: &[f64], what: &str) {
    let y = s.forward::<f64>(x);
    let u: Vec<f64> = (0..y.len())
        .map(|i| u_seed[i % u_seed.len()] * (1.0 + 0.1 * i as f64).sin())
        .collect();
    let r = check_vjp_fd(
        &mut |z| s.forward::<f64>(z),
        &mut |z, w| s.vjp(z, w),
        x,
        &u,
        FD_STEP,
    );
    r.assert_within(FD_TOL, &format!("{what}: VJP vs finite differences"));
    let jv = dual_jvp(s, x, v);
    let ju = s.vjp(x, &u);
    let e = dot_product_test(&jv, &u, &ju, v);
    assert!(e <= DOT_TOL, "{what}: dot-product test {e:e} > {DOT_TOL:e}");
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
/// Inputs per link: com (3), R_sc (9), v (6), a (6). Outputs per link: I_s (36), f (6).
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
        sub.links
            .iter()
            .flat_map(|l| {
                l.i_s
                    .iter()
                    .flatten()
                    .copied()
                    .chain(l.f)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut ws = fresh::<f64>(&self.0);
        unpack_bias(x, &mut ws.subs[0]);
        self.0.bias_forces(&mut ws.subs[0]);
        for (i, la) in ws.adj.links.iter_mut().enumerate() {
            for r in 0..6 {
                la.i_s[r].copy_from_slice(&u[42 * i + 6 * r..42 * i + 6 * r + 6]);
            }
            la.f.copy_from_slice(&u[42 * i + 36..42 * i + 42]);
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
    fn vjp(&self, _x: &[f64], u: &[f64]) -> Vec<f64> {
        let nq = self.0.n_q;
        let mut ws = fresh::<f64>(&self.0);
        self.0.integrate_vjp(&u[..nq], &u[nq..], 0.01, &mut ws.adj);
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
    fn joint_torques_adjoint(x in diff_core::gradcheck::vec_in(-6.0, 6.0, 2 + 2 + 2 + 12 + 18), u in diff_core::gradcheck::direction(2), v in diff_core::gradcheck::direction(36)) {
        // cart coordinate away from the limit kinks at ±4 (the derivative is one-sided there)
        prop_assume!((x[0].abs() - 4.0).abs() > 1e-2);
        check_stage(&Torques(art()), &x, &u, &v, "joint torques");
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
/// The task's observation as a stage (state → obs).
struct Observe(CartPole);
impl Stage for Observe {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut o = vec![T::zero(); 5];
        self.0.observe(x, &mut o);
        o
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut g = vec![0.0; 4];
        self.0.observe_vjp(x, u, &mut g);
        g
    }
}

/// The task's reward as a stage ((s', a) → r).
struct Reward(CartPole);
impl Stage for Reward {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        vec![self.0.reward(&x[..4], &x[4..])]
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut g = vec![0.0; 5];
        let (gs, ga) = g.split_at_mut(4);
        self.0.reward_vjp(&x[..4], &x[4..], u[0], gs, ga);
        g
    }
}

/// `step_row` through the task's actuation (clip and scale) as a stage.
struct TaskStep(CartPole);
impl Stage for TaskStep {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut sc = RowScratch::<T>::new(&self.0);
        let mut out = vec![T::zero(); 4];
        step_row(&self.0, &x[..4], &x[4..], &mut out, &mut sc);
        out
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut sc = RowScratch::<f64>::new(&self.0);
        let mut g = vec![0.0; 5];
        let (gs, ga) = g.split_at_mut(4);
        step_row_vjp(&self.0, &x[..4], &x[4..], u, gs, ga, &mut sc);
        g
    }
}

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
        check_stage(&Observe(cartpole()), &x, &u, &v, "observation");
    }

    #[test]
    fn reward_adjoint(x in diff_core::gradcheck::vec_in(-7.0, 7.0, 5), u in diff_core::gradcheck::direction(1), v in diff_core::gradcheck::direction(5)) {
        // away from the angle wrap's jumps at odd multiples of π
        let k = ((x[1] + std::f64::consts::PI) / (2.0 * std::f64::consts::PI)).fract();
        prop_assume!(k > 1e-3 && k < 1.0 - 1e-3);
        check_stage(&Reward(cartpole()), &x, &u, &v, "reward");
    }

    #[test]
    fn task_step_adjoint(x in state_action(), u in diff_core::gradcheck::direction(4), v in diff_core::gradcheck::direction(5)) {
        prop_assume!(away_from_limit_kinks(&x, 4));
        check_stage(&TaskStep(cartpole()), &x, &u, &v, "task step (actuation + 4 substeps)");
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
    let stage = TaskStep(def);
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

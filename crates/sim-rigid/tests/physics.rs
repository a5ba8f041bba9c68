//! Physics checks of the articulation engine on CartPole: the model matches dflex's
//! finalized values, the mass matrix matches the analytic cart–pole matrix, and with the
//! always-on limit damping and armature removed the total energy is conserved to
//! integrator accuracy, converging as the substep shrinks.
#![allow(clippy::needless_range_loop)]

use sim_rigid::batch::RigidTask;
use sim_rigid::dynamics::Workspace;
use sim_rigid::tasks::CartPole;
use sim_rigid::{Articulation, SimParams};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn cartpole_masses_and_inertias_match_dflex() {
    let task = CartPole::new();
    let art = task.articulation();
    assert_eq!((art.n_q, art.n_qd), (2, 2));
    let cart = &art.links[1];
    assert!(close(cart.mass, 50.0, 1e-9));
    let expect = [1.20833, 1.20833, 2.08333];
    for i in 0..3 {
        assert!(
            close(cart.inertia[i][i], expect[i], 1e-5),
            "cart I[{i}] = {}",
            cart.inertia[i][i]
        );
    }
    let pole = &art.links[2];
    assert!(close(pole.mass, 2.5, 1e-9));
    assert_eq!(pole.com, [0.0, 0.0, 0.5]);
    let expect = [0.20885, 0.20885, 0.00104];
    for i in 0..3 {
        assert!(
            close(pole.inertia[i][i], expect[i], 1e-5),
            "pole I[{i}] = {}",
            pole.inertia[i][i]
        );
    }
    for l in &art.links[1..] {
        assert_eq!(l.joint.armature, 0.01);
        assert_eq!((l.joint.limit_ke, l.joint.limit_kd), (100.0, 1.0));
    }
}

fn mass_matrix(art: &Articulation, q: [f64; 2]) -> [[f64; 2]; 2] {
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps: 1,
        mm_freq: 1,
    };
    let mut ws = Workspace::<f64>::new(art, &params);
    let (mut qo, mut qdo) = ([0.0; 2], [0.0; 2]);
    art.step(
        &params,
        &q,
        &[0.0, 0.0],
        &[0.0, 0.0],
        &mut qo,
        &mut qdo,
        &mut ws,
    );
    let h = &ws.mm[0].h;
    [[h[0], h[1]], [h[2], h[3]]]
}

#[test]
fn mass_matrix_is_the_analytic_cart_pole_matrix() {
    let task = CartPole::new();
    let art = task.articulation();
    let (m_cart, m_pole, l, i_pole, arm) =
        (50.0, 2.5, 0.5, 2.5 / 12.0 * (0.05f64.powi(2) + 1.0), 0.01);
    for &theta in &[0.0, 0.4, 1.3, -2.0, std::f64::consts::PI] {
        let h = mass_matrix(art, [0.7, theta]);
        assert!(close(h[0][0], m_cart + m_pole + arm, 1e-9), "{h:?}");
        assert!(close(h[1][1], i_pole + m_pole * l * l + arm, 1e-9), "{h:?}");
        // the off-diagonal couples cart translation and pole rotation: m l cos θ in magnitude
        assert!(
            close(h[0][1].abs(), m_pole * l * theta.cos().abs(), 1e-9),
            "θ {theta}: {h:?}"
        );
        assert_eq!(h[0][1], h[1][0]);
    }
}

/// Total energy ½ q̇ᵀ H q̇ + Σ m g y_com of a conservative cart–pole.
fn energy(art: &Articulation, q: [f64; 2], qd: [f64; 2]) -> f64 {
    let h = mass_matrix(art, q);
    let ke = 0.5
        * (qd[0] * (h[0][0] * qd[0] + h[0][1] * qd[1])
            + qd[1] * (h[1][0] * qd[0] + h[1][1] * qd[1]));
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps: 1,
        mm_freq: 1,
    };
    let mut ws = Workspace::<f64>::new(art, &params);
    let (mut qo, mut qdo) = ([0.0; 2], [0.0; 2]);
    art.step(&params, &q, &qd, &[0.0, 0.0], &mut qo, &mut qdo, &mut ws);
    let pe: f64 = art
        .links
        .iter()
        .zip(&ws.subs[0].links)
        .map(|(l, s)| l.mass * 9.81 * s.com[1])
        .sum();
    ke + pe
}

fn energy_drift(substeps: usize) -> f64 {
    let mut art = CartPole::new().articulation().clone();
    for l in art.links.iter_mut() {
        l.joint.limit_kd = 0.0;
        l.joint.armature = 0.0;
    }
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps,
        mm_freq: 1,
    };
    let mut ws = Workspace::<f64>::new(&art, &params);
    let (mut q, mut qd) = ([0.0, 0.3], [0.5, 0.0]);
    let e0 = energy(&art, q, qd);
    let mut worst: f64 = 0.0;
    for _ in 0..120 {
        let (mut qo, mut qdo) = ([0.0; 2], [0.0; 2]);
        art.step(&params, &q, &qd, &[0.0, 0.0], &mut qo, &mut qdo, &mut ws);
        q = qo;
        qd = qdo;
        worst = worst.max((energy(&art, q, qd) - e0).abs());
    }
    worst / e0.abs()
}

#[test]
fn energy_is_conserved_to_integrator_accuracy() {
    let coarse = energy_drift(4);
    let fine = energy_drift(32);
    assert!(
        fine < 1e-3,
        "relative energy drift {fine:e} over 2 s with 32 substeps"
    );
    assert!(
        fine < coarse / 4.0,
        "drift must shrink with the substep: {coarse:e} → {fine:e}"
    );
}

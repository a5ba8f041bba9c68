//! Physics checks of the 3D engine that would catch a wrong one: a free body in zero
//! gravity conserves its spatial momentum and kinetic energy to integrator accuracy; a
//! frictionless pendulum chain with ball and hinge joints conserves energy, converging as
//! the substep shrinks; a box dropped on the ground settles at the penetration that
//! `Σ ke·d = m·g` predicts.
#![allow(clippy::needless_range_loop)]

use sim_rigid::dynamics::Workspace;
use sim_rigid::spatial::{axis_angle, m6v, Transform};
use sim_rigid::{
    Articulation, ArticulationBuilder, ContactMaterial, Geometry, Joint, JointKind, Shape,
    SimParams,
};

fn shape(g: Geometry, p: [f64; 3]) -> Shape {
    Shape::new(
        g,
        Transform {
            p,
            ..Transform::default()
        },
    )
}

/// A link's world spatial inertia, twist and COM.
type LinkQuantities = ([[f64; 6]; 6], [f64; 6], [f64; 3]);

/// Per-link world spatial inertias and twists at (q, q̇), from the engine's own stages.
fn link_quantities(art: &Articulation, q: &[f64], qd: &[f64]) -> Vec<LinkQuantities> {
    let params = SimParams {
        dt: 1.0,
        substeps: 1,
        mm_freq: 1,
    };
    let mut ws = Workspace::<f64>::new(art, &params);
    let sub = &mut ws.subs[0];
    sub.q.copy_from_slice(q);
    sub.qd.copy_from_slice(qd);
    art.kinematics(sub);
    art.velocities(sub);
    art.spatial_inertias(sub);
    sub.links.iter().map(|l| (l.i_s, l.v, l.com)).collect()
}

fn run(art: &Articulation, params: &SimParams, q: &mut Vec<f64>, qd: &mut Vec<f64>, steps: usize) {
    let mut ws = Workspace::<f64>::new(art, params);
    let act = vec![0.0; art.n_qd];
    let (mut q2, mut qd2) = (q.clone(), qd.clone());
    for _ in 0..steps {
        art.step(params, q, qd, &act, &mut q2, &mut qd2, &mut ws);
        std::mem::swap(q, &mut q2);
        std::mem::swap(qd, &mut qd2);
    }
}

// ---------------------------------------------------------------- free body
fn free_box(gravity: [f64; 3], ground: bool, mat: ContactMaterial) -> Articulation {
    let mut b = ArticulationBuilder::default()
        .gravity(gravity)
        .ground(ground);
    let mut s = shape(
        Geometry::Box {
            half_extents: [0.3, 0.1, 0.2],
        },
        [0.05, 0.0, -0.02], // COM off the link origin
    );
    s.material = mat;
    b.add_link(
        None,
        Joint::new("root", JointKind::Free, [0.0; 3], Transform::default()),
        &[s],
    )
    .unwrap();
    b.build().unwrap()
}

/// Relative drift of (spatial momentum, kinetic energy) of a tumbling free box over 1 s.
fn free_body_drift(substeps: usize) -> (f64, f64) {
    let art = free_box([0.0; 3], false, ContactMaterial::default());
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps,
        mm_freq: 1,
    };
    let quat = {
        let r = [0.3f64, -0.5, 0.8];
        let n = (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt();
        let h = 0.9f64;
        [
            r[0] / n * h.sin(),
            r[1] / n * h.sin(),
            r[2] / n * h.sin(),
            h.cos(),
        ]
    };
    let mut q = vec![0.4, 1.0, -0.3, quat[0], quat[1], quat[2], quat[3]];
    // a fast spin about an axis off the principal axes, plus translation
    let mut qd = vec![2.0, 5.0, -3.0, 0.7, 0.2, -0.4];
    let measure = |q: &[f64], qd: &[f64]| {
        let l = link_quantities(&art, q, qd);
        let h = m6v(&l[0].0, &l[0].1);
        let e = 0.5 * (0..6).map(|k| l[0].1[k] * h[k]).sum::<f64>();
        (h, e)
    };
    let (h0, e0) = measure(&q, &qd);
    run(&art, &params, &mut q, &mut qd, 60);
    let (h1, e1) = measure(&q, &qd);
    let hn = h0.iter().map(|x| x * x).sum::<f64>().sqrt();
    let dh = (0..6).map(|k| (h1[k] - h0[k]).powi(2)).sum::<f64>().sqrt();
    (dh / hn, (e1 - e0).abs() / e0)
}

#[test]
fn free_body_in_zero_gravity_conserves_momentum_and_energy() {
    // a fast tumble (|ω| ≈ 6 rad/s about a non-principal axis) for 1 s
    let d: Vec<(f64, f64)> = [16, 64, 256].iter().map(|&n| free_body_drift(n)).collect();
    println!("free body, 1 s, 16/64/256 substeps: (momentum, energy) drift {d:?}");
    // first-order integrator: 4× smaller substeps → about 4× smaller drift, towards zero
    for k in 0..2 {
        assert!(
            d[k + 1].0 < d[k].0 / 3.0 && d[k + 1].1 < d[k].1 / 3.0,
            "no convergence: {d:?}"
        );
    }
    assert!(
        d[2].0 < 5e-3 && d[2].1 < 5e-3,
        "drift at 256 substeps: {:?}",
        d[2]
    );
}

#[test]
fn free_body_linear_momentum_is_exact_without_rotation() {
    // pure translation: v constant, p advances by v·t exactly (no rotation, no gravity)
    let art = free_box([0.0; 3], false, ContactMaterial::default());
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps: 4,
        mm_freq: 4,
    };
    let mut q = vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
    let mut qd = vec![0.0, 0.0, 0.0, 1.5, -0.5, 2.0];
    run(&art, &params, &mut q, &mut qd, 60);
    for (k, v) in [1.5, -0.5, 2.0].iter().enumerate() {
        assert!((qd[3 + k] - v).abs() < 1e-12);
    }
    assert!((q[0] - 1.5).abs() < 1e-9 && (q[1] - 0.5).abs() < 1e-9 && (q[2] - 2.0).abs() < 1e-9);
}

// ---------------------------------------------------------------- pendulum chain
/// A chain hanging from the world: ball joint, then two hinges; no damping, no limits, no
/// armature, no ground.
fn chain() -> Articulation {
    let mut b = ArticulationBuilder::default().ground(false);
    let caps = |hw: f64| {
        shape(
            Geometry::Capsule {
                radius: 0.05,
                half_width: hw,
            },
            [hw, 0.0, 0.0],
        )
    };
    let mut j0 = Joint::new(
        "ball",
        JointKind::Ball,
        [0.0; 3],
        Transform {
            p: [0.0, 2.0, 0.0],
            ..Transform::default()
        },
    );
    j0.armature = 0.0;
    let l0 = b.add_link(None, j0, &[caps(0.25)]).unwrap();
    let hinge = |name: &str, axis: [f64; 3], x: f64| {
        let mut j = Joint::new(
            name,
            JointKind::Revolute,
            axis,
            Transform {
                p: [x, 0.0, 0.0],
                r: axis_angle([0.0, 1.0, 0.0], 0.3),
            },
        );
        (j.armature, j.limit_kd, j.limit_lower, j.limit_upper) = (0.0, 0.0, -1e6, 1e6);
        j
    };
    let l1 = b
        .add_link(Some(l0), hinge("h1", [0.0, 0.0, 1.0], 0.5), &[caps(0.2)])
        .unwrap();
    b.add_link(Some(l1), hinge("h2", [0.6, 0.0, 0.8], 0.4), &[caps(0.15)])
        .unwrap();
    b.build().unwrap()
}

fn chain_energy(art: &Articulation, q: &[f64], qd: &[f64]) -> f64 {
    let l = link_quantities(art, q, qd);
    let mut e = 0.0;
    for (i, (is, v, com)) in l.iter().enumerate() {
        let h = m6v(is, v);
        e += 0.5 * (0..6).map(|k| v[k] * h[k]).sum::<f64>();
        e += art.links[i].mass * 9.81 * com[1];
    }
    e
}

fn chain_drift(substeps: usize) -> f64 {
    let art = chain();
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps,
        mm_freq: 1,
    };
    let s = (0.4f64).sin();
    let a = [0.3f64, 0.5, -0.9];
    let n = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
    let mut q = vec![
        a[0] / n * s,
        a[1] / n * s,
        a[2] / n * s,
        0.4f64.cos(),
        0.8,
        -0.6,
    ];
    let mut qd = vec![0.5, -1.0, 0.8, 2.0, -1.5];
    let e0 = chain_energy(&art, &q, &qd);
    run(&art, &params, &mut q, &mut qd, 60);
    let e1 = chain_energy(&art, &q, &qd);
    let scale: f64 = art.links.iter().map(|l| l.mass * 9.81 * 1.0).sum();
    (e1 - e0).abs() / scale
}

#[test]
fn pendulum_chain_conserves_energy_as_the_timestep_shrinks() {
    let d = [chain_drift(8), chain_drift(32), chain_drift(128)];
    println!("pendulum chain energy drift over 1 s (relative to m·g·1 m): {d:?}");
    // first order: each 4× smaller substep gives about 4× less drift (measured 4.1×),
    // converging to zero (a modelling error would converge to a non-zero drift)
    assert!(
        d[1] < d[0] / 3.0 && d[2] < d[1] / 3.0,
        "no convergence: {d:?}"
    );
    assert!(d[2] < 5e-3, "drift at 128 substeps: {:e}", d[2]);
}

// ---------------------------------------------------------------- resting box
#[test]
fn box_on_the_ground_settles_at_the_predicted_penetration() {
    let mat = ContactMaterial {
        ke: 2e4,
        kd: 2e5, // heavily damped so it settles within the simulated time
        kf: 1e3,
        mu: 0.9,
    };
    let art = free_box([0.0, -9.81, 0.0], true, mat);
    let m = art.links[0].mass;
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps: 16,
        mm_freq: 16,
    };
    // bottom face (half height 0.1) just touching the ground
    let mut q = vec![0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 1.0];
    let mut qd = vec![0.0; 6];
    run(&art, &params, &mut q, &mut qd, 240);
    // four corners carry the weight: 4·ke·d = m·g
    let d_pred = m * 9.81 / (4.0 * mat.ke);
    let d = 0.1 - q[1];
    println!(
        "box {m} kg: penetration {d:e} m, predicted {d_pred:e} m, residual velocity {:e}",
        qd.iter().map(|x| x.abs()).fold(0.0, f64::max)
    );
    assert!(
        (d - d_pred).abs() < 1e-3 * d_pred,
        "penetration {d:e} vs {d_pred:e}"
    );
    assert!(qd.iter().all(|x| x.abs() < 1e-6), "not at rest: {qd:?}");
    // stays level
    assert!(q[3].abs() < 1e-9 && q[5].abs() < 1e-9);
}

// ---------------------------------------------------------------- sliding box
#[test]
fn sliding_box_decelerates_by_friction_and_stops() {
    // A box resting at its contact equilibrium, pushed to 2 m/s along x: friction
    // min(kf·|v_t|, mu·ke·d) can only remove kinetic energy, so the speed falls
    // monotonically, at about mu·g (the cap, 0.5·9.81 m/s²) while it slides, to rest
    // after about 2 / (mu·g) = 0.41 s.
    let mat = ContactMaterial {
        ke: 2e4,
        kd: 2e5,
        kf: 1e3,
        mu: 0.5,
    };
    let art = free_box([0.0, -9.81, 0.0], true, mat);
    let m = art.links[0].mass;
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps: 16,
        mm_freq: 1,
    };
    let d_eq = m * 9.81 / (4.0 * mat.ke);
    let mut q = vec![0.0, 0.1 - d_eq, 0.0, 0.0, 0.0, 0.0, 1.0];
    // world twist [ω, v]: v is the velocity of the point at the world origin; a pure
    // translation has v = the body's velocity
    let mut qd = vec![0.0, 0.0, 0.0, 2.0, 0.0, 0.0];
    let mut speeds = vec![2.0f64];
    for _ in 0..45 {
        run(&art, &params, &mut q, &mut qd, 1);
        speeds.push(qd[3]);
    }
    println!("speeds every step: {speeds:?}");
    // (once nearly stopped, the pitch the friction gave the box lets v at the origin
    // swing by a few mm/s either way)
    for w in speeds.windows(2).filter(|w| w[0] > 0.01) {
        assert!(w[1] <= w[0] + 1e-9, "friction accelerated the box: {w:?}");
    }
    // sliding phase: the first 0.2 s lose about mu·g·t
    let lost = 2.0 - speeds[12];
    assert!(
        (lost - 0.5 * 9.81 * 0.2).abs() < 0.1,
        "speed lost in 0.2 s {lost}, expected {}",
        0.5 * 9.81 * 0.2
    );
    assert!(speeds[45].abs() < 0.05, "still sliding at {}", speeds[45]);
    assert!(
        q[0] > 0.3 && q[0] < 2.0 * 0.75 / 2.0 + 0.1,
        "slid {} m",
        q[0]
    );
}

//! Physics sanity of the MPM engine: free fall, momentum conservation of the transfers,
//! an elastic block bouncing and settling, a liquid column spreading; and the checks that
//! reject bad scenes before any stepping.

use sim_deformable::mpm::{Material, MpmModel, MpmParams, MpmState, ParticleMaterial};

/// A block of `nx × ny × nz` particles spaced dx/2, lowest corner at `lo`.
fn block(m: &MpmModel, lo: [f64; 3], n: [usize; 3]) -> Vec<[f64; 3]> {
    let h = 0.5 * m.dx();
    let mut x = Vec::new();
    for i in 0..n[0] {
        for j in 0..n[1] {
            for k in 0..n[2] {
                x.push([
                    lo[0] + (i as f64 + 0.5) * h,
                    lo[1] + (j as f64 + 0.5) * h,
                    lo[2] + (k as f64 + 0.5) * h,
                ]);
            }
        }
    }
    x
}

fn scene(
    params: MpmParams,
    material: Material,
    lo: [f64; 3],
    n: [usize; 3],
) -> (MpmModel, MpmState<f64>) {
    let count = n[0] * n[1] * n[2];
    let mats = vec![
        ParticleMaterial {
            material,
            hardness: 1.0
        };
        count
    ];
    let probe = MpmModel::new(params.clone(), mats.clone(), vec![]).unwrap();
    let x = block(&probe, lo, n);
    let s = MpmState::at_rest(x);
    probe.check_particles(&s).unwrap();
    (probe, s)
}

fn com(s: &MpmState<f64>) -> ([f64; 3], [f64; 3]) {
    let n = s.len() as f64;
    let mut x = [0.0; 3];
    let mut v = [0.0; 3];
    for p in 0..s.len() {
        for d in 0..3 {
            x[d] += s.x[p][d] / n;
            v[d] += s.v[p][d] / n;
        }
    }
    (x, v)
}

fn grid32() -> MpmParams {
    MpmParams {
        n_grid: 32,
        res: [32; 3],
        dt: 2e-4,
        youngs_modulus: 1000.0,
        poisson_ratio: 0.2,
        ..MpmParams::default()
    }
}

#[test]
fn free_fall_follows_the_discrete_parabola() {
    let (m, mut s) = scene(grid32(), Material::Elastic, [0.45, 0.5, 0.45], [6, 6, 6]);
    let (x0, _) = com(&s);
    let mut sc = m.scratch();
    let n = 400;
    for _ in 0..n {
        m.substep(&mut s, &[], &mut sc);
    }
    let (x1, v1) = com(&s);
    let (dt, g) = (m.params.dt, 9.8);
    // symplectic Euler on the grid: v_k = k·dt·g exactly, x drops Σ dt·v_k
    let vy = -(n as f64) * dt * g;
    let drop = dt * dt * g * (n * (n + 1)) as f64 / 2.0;
    assert!(
        (v1[1] - vy).abs() < 1e-10 * vy.abs(),
        "v_y {} vs {vy}",
        v1[1]
    );
    assert!(
        ((x0[1] - x1[1]) - drop).abs() < 1e-9 * drop,
        "drop {} vs {drop}",
        x0[1] - x1[1]
    );
    // and g t²/2 up to the integrator's O(dt) offset g·t·dt/2
    let t = n as f64 * dt;
    assert!(((x0[1] - x1[1]) - g * t * t / 2.0).abs() <= g * t * dt / 2.0 + 1e-12);
    assert!(v1[0].abs() < 1e-12 && v1[2].abs() < 1e-12);
}

#[test]
fn transfers_conserve_momentum_without_external_forces() {
    let params = MpmParams {
        gravity: [0.0; 3],
        ..grid32()
    };
    let (m, mut s) = scene(params, Material::Elastic, [0.4, 0.4, 0.4], [8, 8, 8]);
    // a random-looking velocity field, affine velocities and a deformed F
    for p in 0..s.len() {
        let a = p as f64;
        s.v[p] = [(a * 0.37).sin(), (a * 0.71).cos(), (a * 1.3).sin() * 0.5];
        for i in 0..3 {
            for j in 0..3 {
                s.c[p][i][j] = ((a + 3.0 * i as f64 + j as f64) * 0.9).sin();
                s.f[p][i][j] += 0.05 * ((a * 0.2 + i as f64 - j as f64) * 1.7).cos();
            }
        }
    }
    let momentum = |s: &MpmState<f64>| {
        let mut p = [0.0; 3];
        for v in &s.v {
            for d in 0..3 {
                p[d] += m.particle_mass() * v[d];
            }
        }
        p
    };
    let p0 = momentum(&s);
    let scale =
        s.v.iter()
            .map(|v| v.iter().map(|c| c.abs()).sum::<f64>())
            .sum::<f64>()
            * m.particle_mass();
    let mut sc = m.scratch();
    for step in 0..50 {
        m.substep(&mut s, &[], &mut sc);
        let p = momentum(&s);
        for d in 0..3 {
            assert!(
                (p[d] - p0[d]).abs() < 1e-12 * scale,
                "step {step}: {p:?} vs {p0:?}"
            );
        }
    }
}

#[test]
fn elastic_block_bounces_and_settles_without_drift() {
    let (m, mut s) = scene(grid32(), Material::Elastic, [0.4, 0.25, 0.4], [8, 8, 8]);
    let (x0, _) = com(&s);
    let mut sc = m.scratch();
    let dt = m.params.dt;
    let steps = (1.5 / dt) as usize;
    let mut touched = false;
    let mut rebound_vy: f64 = 0.0;
    let mut lowest = f64::INFINITY;
    for _ in 0..steps {
        m.substep(&mut s, &[], &mut sc);
        let (x, v) = com(&s);
        let bottom = s.x.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min);
        lowest = lowest.min(x[1]);
        if bottom < 4.0 * m.dx() {
            touched = true;
        }
        if touched {
            rebound_vy = rebound_vy.max(v[1]);
        }
    }
    let (x1, v1) = com(&s);
    assert!(touched, "the block never reached the ground");
    assert!(
        rebound_vy > 0.05,
        "no bounce: largest upward speed after contact {rebound_vy}"
    );
    let speed = (v1[0] * v1[0] + v1[1] * v1[1] + v1[2] * v1[2]).sqrt();
    assert!(speed < 0.01, "still moving after 1.5 s: {v1:?}");
    assert!(
        (x1[0] - x0[0]).abs() < 1e-3 && (x1[2] - x0[2]).abs() < 1e-3,
        "drift {x0:?} → {x1:?}"
    );
    // resting on the ground: the centre sits about half a block (2 cells) above the
    // boundary layers, not sinking through them
    assert!(
        x1[1] > 3.0 * m.dx() && x1[1] < x0[1],
        "rest height {}",
        x1[1]
    );
    assert!(lowest > 2.0 * m.dx(), "sank to {lowest}");
}

#[test]
fn liquid_column_spreads() {
    let params = MpmParams {
        youngs_modulus: 400.0,
        poisson_ratio: 0.3,
        ground_friction: 0.0,
        ..grid32()
    };
    let (m, mut s) = scene(
        params,
        Material::Liquid,
        [0.45, 3.0 / 32.0, 0.45],
        [6, 16, 6],
    );
    let width = |s: &MpmState<f64>| {
        let xs = s.x.iter().map(|p| p[0]);
        xs.clone().fold(f64::NEG_INFINITY, f64::max) - xs.fold(f64::INFINITY, f64::min)
    };
    let (c0, _) = com(&s);
    let w0 = width(&s);
    let mut sc = m.scratch();
    for _ in 0..(0.4 / m.params.dt) as usize {
        m.substep(&mut s, &[], &mut sc);
    }
    let (c1, _) = com(&s);
    let w1 = width(&s);
    assert!(
        w1 > 2.0 * w0,
        "the column did not spread: width {w0} → {w1}"
    );
    assert!(
        c1[1] < c0[1] - 2.0 * m.dx(),
        "the column did not slump: centre {} → {}",
        c0[1],
        c1[1]
    );
    assert!(s.x.iter().all(|p| p.iter().all(|c| c.is_finite())));
}

#[test]
fn bad_scenes_are_rejected_before_stepping() {
    let mats = vec![
        ParticleMaterial {
            material: Material::Elastic,
            hardness: 1.0
        };
        1
    ];
    // a particle outside the window
    let params = MpmParams {
        n_grid: 32,
        res: [16, 16, 16],
        ..grid32()
    };
    let m = MpmModel::new(params, mats.clone(), vec![]).unwrap();
    let err = m
        .check_particles(&MpmState::at_rest(vec![[0.9, 0.2, 0.2]]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("particle 0") && err.contains("outside the grid window"),
        "{err}"
    );
    // wrong particle count
    let err = m
        .check_particles(&MpmState::<f64>::at_rest(vec![[0.2; 3]; 2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("dimension"), "{err}");
    // a time step beyond the CFL bound
    let err = MpmModel::new(
        MpmParams {
            dt: 1e-2,
            ..grid32()
        },
        mats.clone(),
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`dt`") && err.contains("CFL"), "{err}");
    // Poisson ratio 0.5 (incompressible: λ infinite)
    let err = MpmModel::new(
        MpmParams {
            poisson_ratio: 0.5,
            ..grid32()
        },
        mats.clone(),
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("poisson_ratio"), "{err}");
    // a window thinner than one quadratic stencil
    let err = MpmModel::new(
        MpmParams {
            res: [16, 2, 16],
            ..grid32()
        },
        mats,
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("res"), "{err}");
}

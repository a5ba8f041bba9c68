//! MLS-MPM substeps in f32 on one thread: particle-substeps per second, forward alone and
//! forward + backward (the substep recording its tape, then its adjoint reading it; and,
//! as the baseline, an adjoint that replays the forward pass), for a
//! push-rope-like scene (576 elasto-plastic particles on DaXBench's 128-grid window
//! 64×6×64, a box pusher) and a 3-D elastic block of 32,768 particles on a 64³ grid
//! (the problem of issue 5's speed target), at rest and deformed.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sim_deformable::mpm::{Material, MpmModel, MpmParams, MpmState, MpmTape, ParticleMaterial};
use sim_deformable::primitive::{Primitive, PrimitiveState};

fn lattice(lo: [f64; 3], n: [usize; 3], h: f64) -> Vec<[f32; 3]> {
    let mut x = Vec::new();
    for i in 0..n[0] {
        for j in 0..n[1] {
            for k in 0..n[2] {
                let p = [i, j, k];
                x.push(std::array::from_fn(|d| {
                    (lo[d] + (p[d] as f64 + 0.5) * h) as f32
                }));
            }
        }
    }
    x
}

struct Scene {
    name: &'static str,
    model: MpmModel,
    state: MpmState<f32>,
    prims: Vec<PrimitiveState<f32>>,
}

fn rope() -> Scene {
    let params = MpmParams {
        n_grid: 128,
        origin: [32, 0, 32],
        res: [64, 6, 64],
        dt: 5e-5,
        youngs_modulus: 100.0,
        poisson_ratio: 0.1,
        density: 3.0,
        ground_friction: 0.9,
        ..MpmParams::default()
    };
    let x = lattice([0.375, 0.007, 0.4955], [64, 3, 3], 1.0 / 256.0);
    let mats = vec![
        ParticleMaterial {
            material: Material::Plastic,
            hardness: 1.0
        };
        x.len()
    ];
    let model = MpmModel::new(params, mats, vec![Primitive::pusher([0.015, 0.06, 0.015])]).unwrap();
    let state = MpmState::at_rest(x);
    model.check_particles(&state).unwrap();
    let prims = vec![PrimitiveState::translating(
        [0.5, 0.06, 0.48],
        [0.0, 0.0, 0.3],
    )];
    Scene {
        name: "push_rope_576",
        model,
        state,
        prims,
    }
}

fn block() -> Scene {
    let params = MpmParams {
        n_grid: 64,
        res: [64; 3],
        dt: 1e-4,
        youngs_modulus: 400.0,
        poisson_ratio: 0.2,
        ..MpmParams::default()
    };
    let x = lattice([0.25, 0.25, 0.25], [32, 32, 32], 1.0 / 128.0);
    let mats = vec![
        ParticleMaterial {
            material: Material::Elastic,
            hardness: 1.0
        };
        x.len()
    ];
    let model = MpmModel::new(params, mats, vec![]).unwrap();
    let state = MpmState::at_rest(x);
    model.check_particles(&state).unwrap();
    Scene {
        name: "block_32768_grid64",
        model,
        state,
        prims: vec![],
    }
}

/// The same block with every particle deformed (F = a particle-dependent rotation times a
/// stretch of ±10 %, C of order 1): each SVD then needs its full Jacobi sweeps, as in a
/// block that is bouncing rather than at rest.
fn deformed_block() -> Scene {
    let mut scene = block();
    for (p, (f, c)) in scene
        .state
        .f
        .iter_mut()
        .zip(scene.state.c.iter_mut())
        .enumerate()
    {
        let t = p as f32;
        let (a, b) = ((0.37 * t).sin(), (0.71 * t).cos());
        let (ca, sa, cb, sb) = (a.cos(), a.sin(), b.cos(), b.sin());
        // rotation about z by a, then about x by b
        let r = [
            [ca, -sa * cb, sa * sb],
            [sa, ca * cb, -ca * sb],
            [0.0, sb, cb],
        ];
        let st = [1.1, 0.95, 1.02];
        for i in 0..3 {
            for j in 0..3 {
                f[i][j] = r[i][j] * st[j];
                c[i][j] = ((t + (3 * i + j) as f32) * 0.9).sin();
            }
        }
    }
    scene.name = "block_32768_grid64_deformed";
    scene
}

fn mpm(c: &mut Criterion) {
    for scene in [rope(), block(), deformed_block()] {
        let mut group = c.benchmark_group(format!("mpm_substep_{}", scene.name));
        group.sample_size(10);
        let n = scene.state.len();
        group.throughput(Throughput::Elements(n as u64));
        let m = &scene.model;
        let mut sc = m.scratch::<f32>();
        let mut s = scene.state.clone();
        group.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| m.substep(&mut s, &scene.prims, &mut sc))
        });
        let mut adj = MpmState::<f32>::zeros(n);
        let mut adj_p = vec![PrimitiveState::zero(); scene.prims.len()];
        let s0 = scene.state.clone();
        let mut s = scene.state.clone();
        // the forward pass records its tape; the adjoint reads it (what the checkpointed
        // reverse sweep does within a segment)
        let mut tape = MpmTape::default();
        group.bench_with_input(BenchmarkId::new("forward_backward", n), &n, |b, _| {
            b.iter(|| {
                s.clone_from(&s0);
                m.substep_taped(&mut s, &scene.prims, &mut sc, &mut tape);
                adj.v.iter_mut().for_each(|v| *v = [1.0, 0.5, -0.5]);
                m.substep_vjp_taped(&s0, &tape, &scene.prims, &mut adj, &mut adj_p, &mut sc);
            })
        });
        // the baseline: an adjoint that replays the forward pass
        group.bench_with_input(
            BenchmarkId::new("forward_backward_replay", n),
            &n,
            |b, _| {
                b.iter(|| {
                    s.clone_from(&s0);
                    m.substep(&mut s, &scene.prims, &mut sc);
                    adj.v.iter_mut().for_each(|v| *v = [1.0, 0.5, -0.5]);
                    m.substep_vjp(&s0, &scene.prims, &mut adj, &mut adj_p, &mut sc);
                })
            },
        );
        group.finish();
    }
}

criterion_group!(benches, mpm);
criterion_main!(benches);

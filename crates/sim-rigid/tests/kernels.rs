//! Parity of the CUDA kernels with the CPU path, N = 256 random envs:
//! - the kernel sources compiled as C for the host (`kernels::host`), on every machine;
//! - the same sources on a GPU (`kernels::gpu`, feature `cuda`), run for real when a GPU
//!   is present and skipped with a printed reason otherwise;
//! - every source compiled by NVRTC (feature `cuda`), when NVRTC is installed (CI installs
//!   it from the `nvidia-cuda-nvrtc` wheel), so a syntax or type error fails without a GPU.

// Index loops mirror the adjoint formula.
#![allow(clippy::needless_range_loop)]

use diff_core::{seeded, SeededRng};
use rand::Rng;
use sim_rigid::batch::RigidTask;
use sim_rigid::dynamics::{cholesky, cholesky_solve};
use sim_rigid::kernels::host;
use sim_rigid::kernels::PackedArticulation;
use sim_rigid::spatial::{axis_angle, Transform};
use sim_rigid::tasks::ant::ant_def;
use sim_rigid::tasks::cheetah::cheetah_def;
use sim_rigid::tasks::hopper::hopper_def;
use sim_rigid::tasks::humanoid::humanoid_def;
use sim_rigid::tasks::CartPole;
use sim_rigid::{
    Articulation, ArticulationBuilder, EffortSaturation, Geometry, Joint, JointKind, Shape,
    SimParams, Workspace,
};

const N_ENVS: usize = 256;

/// `n_envs` random symmetric positive definite n×n matrices `M Mᵀ + n·I` (row-major).
fn spd_batch(rng: &mut SeededRng, n_envs: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n_envs * n * n);
    for _ in 0..n_envs {
        let m: Vec<f32> = (0..n * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        for i in 0..n {
            for j in 0..n {
                let mut s: f32 = (0..n).map(|k| m[i * n + k] * m[j * n + k]).sum();
                if i == j {
                    s += n as f32;
                }
                out.push(s);
            }
        }
    }
    out
}

fn random(rng: &mut SeededRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Largest |a − b| relative to max(|b|, 1e-3) over all entries.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
        .fold(0.0, f32::max)
}

/// The CPU path's results for one batch: `L`, `H⁻¹ τ`, and the solve adjoint's three
/// outputs (from `Articulation::solve_vjp` itself, on Ant's 14-DOF articulation when n =
/// 14, else from `cholesky_solve` and the adjoint's formula).
struct Cpu {
    l: Vec<f32>,
    x: Vec<f32>,
    adj_qdd: Vec<f32>,
    adj_tau: Vec<f32>,
    adj_h: Vec<f32>,
}

struct Inputs {
    n: usize,
    a: Vec<f32>,
    tau: Vec<f32>,
    adj_qdd: Vec<f32>,
    adj_tau: Vec<f32>,
    adj_h: Vec<f32>,
}

fn inputs(seed: u64, n: usize) -> Inputs {
    let mut rng = seeded(seed, n as u64);
    Inputs {
        n,
        a: spd_batch(&mut rng, N_ENVS, n),
        tau: random(&mut rng, N_ENVS * n),
        adj_qdd: random(&mut rng, N_ENVS * n),
        adj_tau: random(&mut rng, N_ENVS * n),
        adj_h: random(&mut rng, N_ENVS * n * n),
    }
}

fn cpu(inp: &Inputs) -> Cpu {
    let n = inp.n;
    let (nn, mut out) = (
        n * n,
        Cpu {
            l: vec![0.0; N_ENVS * n * n],
            x: inp.tau.clone(),
            adj_qdd: inp.adj_qdd.clone(),
            adj_tau: inp.adj_tau.clone(),
            adj_h: inp.adj_h.clone(),
        },
    );
    let ant = ant_def().unwrap();
    let art = &ant.cfg.art;
    let params = SimParams {
        dt: 1.0 / 60.0,
        substeps: 1,
        mm_freq: 1,
    };
    for e in 0..N_ENVS {
        let l = &mut out.l[e * nn..(e + 1) * nn];
        cholesky(n, &inp.a[e * nn..(e + 1) * nn], l);
        cholesky_solve(n, l, &mut out.x[e * n..(e + 1) * n]);
        if art.n_qd == n {
            let mut ws = Workspace::<f32>::new(art, &params);
            ws.subs[0].qdd.copy_from_slice(&out.x[e * n..(e + 1) * n]);
            ws.mm[0].l.copy_from_slice(l);
            ws.mm[0]
                .adj_h
                .copy_from_slice(&inp.adj_h[e * nn..(e + 1) * nn]);
            ws.adj.qdd.copy_from_slice(&inp.adj_qdd[e * n..(e + 1) * n]);
            ws.adj.tau.copy_from_slice(&inp.adj_tau[e * n..(e + 1) * n]);
            art.solve_vjp(&ws.subs[0], &mut ws.mm[0], &mut ws.adj);
            out.adj_qdd[e * n..(e + 1) * n].copy_from_slice(&ws.adj.qdd);
            out.adj_tau[e * n..(e + 1) * n].copy_from_slice(&ws.adj.tau);
            out.adj_h[e * nn..(e + 1) * nn].copy_from_slice(&ws.mm[0].adj_h);
        } else {
            let b = &mut out.adj_qdd[e * n..(e + 1) * n];
            cholesky_solve(n, l, b);
            for r in 0..n {
                out.adj_tau[e * n + r] += b[r];
                for c in 0..n {
                    out.adj_h[e * nn + r * n + c] -= b[r] * out.x[e * n + c];
                }
            }
        }
    }
    out
}

/// Sizes: 1 DOF, CartPole's 2, Ant's 14 (through `solve_vjp` itself), Humanoid's 27.
const SIZES: [usize; 4] = [1, 2, 14, 27];

#[test]
fn ant_uses_the_articulation_solve_vjp() {
    assert_eq!(ant_def().unwrap().cfg.art.n_qd, 14);
}

#[test]
fn host_kernels_match_the_cpu_path() {
    for n in SIZES {
        let inp = inputs(1, n);
        let want = cpu(&inp);
        let mut l = vec![0.0; N_ENVS * n * n];
        host::cholesky(N_ENVS, n, &inp.a, &mut l).unwrap();
        let mut x = inp.tau.clone();
        host::cholesky_solve(N_ENVS, n, &l, &mut x).unwrap();
        let (mut aq, mut at, mut ah) =
            (inp.adj_qdd.clone(), inp.adj_tau.clone(), inp.adj_h.clone());
        host::solve_vjp(N_ENVS, n, &l, &x, &mut aq, &mut at, &mut ah).unwrap();
        // same operations in the same order: equal up to the compilers' rounding choices
        for (what, got, exp) in [
            ("L", &l, &want.l),
            ("x", &x, &want.x),
            ("adj_qdd", &aq, &want.adj_qdd),
            ("adj_tau", &at, &want.adj_tau),
            ("adj_h", &ah, &want.adj_h),
        ] {
            let e = rel(got, exp);
            assert!(e <= 1e-5, "n = {n}, {what}: relative error {e:.2e}");
        }
    }
}

#[test]
fn host_kernels_reject_wrong_sizes() {
    let mut l = vec![0.0; 8];
    let err = host::cholesky(2, 2, &[0.0; 7], &mut l).unwrap_err();
    assert!(err.to_string().contains("cholesky a"), "{err}");
    let err = host::cholesky_solve(2, 2, &[0.0; 8], &mut [0.0; 3]).unwrap_err();
    assert!(err.to_string().contains("cholesky_solve b"), "{err}");
}

/// A free box with a hinge (limits, PD), a ball joint (spring, damping, armature, rotated
/// joint frame) carrying a prismatic slider, all touching the ground: the joint kinds and
/// options no task has.
fn ball_tree() -> Articulation {
    let mut b = ArticulationBuilder::default();
    let shape = |g, p| {
        Shape::new(
            g,
            Transform {
                p,
                ..Transform::default()
            },
        )
    };
    let root = Joint::new("root", JointKind::Free, [0.0; 3], Transform::default());
    let r = b
        .add_link(
            None,
            root,
            &[shape(
                Geometry::Box {
                    half_extents: [0.2, 0.1, 0.15],
                },
                [0.0; 3],
            )],
        )
        .unwrap();
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
    (hinge.effort_limit, hinge.effort_saturation) = (1.0, EffortSaturation::Clamp);
    let sphere = Geometry::Sphere { radius: 0.08 };
    b.add_link(Some(r), hinge, &[shape(sphere, [0.15, 0.0, 0.0])])
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
        .add_link(Some(r), ball, &[shape(sphere, [0.0, -0.2, 0.0])])
        .unwrap();
    let mut slider = Joint::new(
        "slider",
        JointKind::Prismatic,
        [0.0, 1.0, 0.0],
        Transform {
            p: [0.0, -0.3, 0.0],
            ..Transform::default()
        },
    );
    (slider.limit_lower, slider.limit_upper, slider.limit_ke) = (-0.1, 0.1, 1e3);
    (slider.effort_limit, slider.effort_saturation) = (2.0, EffortSaturation::Tanh);
    b.add_link(Some(bl), slider, &[shape(sphere, [0.0, -0.05, 0.0])])
        .unwrap();
    b.build().unwrap()
}

/// `n_envs` states of `art` around `q0`: coordinates and velocities perturbed (unit
/// quaternions renormalised), some roots pushed into the ground so that contacts act,
/// and actuations in ±2 (beyond the effort limits).
fn random_batch(
    rng: &mut SeededRng,
    art: &Articulation,
    q0: &[f32],
    n_envs: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (nq, nd) = (art.n_q, art.n_qd);
    let mut q = Vec::with_capacity(n_envs * nq);
    for _ in 0..n_envs {
        let mut row: Vec<f32> = q0.iter().map(|&x| x + rng.gen_range(-0.1..0.1)).collect();
        for link in &art.links {
            let o = match link.joint.kind {
                JointKind::Ball => Some(link.q_start),
                JointKind::Free => {
                    // sink the root by up to 0.2 so that feet and corners touch
                    row[link.q_start + 1] -= rng.gen_range(0.0..0.2);
                    Some(link.q_start + 3)
                }
                _ => None,
            };
            if let Some(o) = o {
                let n = row[o..o + 4].iter().map(|x| x * x).sum::<f32>().sqrt();
                row[o..o + 4].iter_mut().for_each(|x| *x /= n);
            }
        }
        q.extend(row);
    }
    let qd = random(rng, n_envs * nd)
        .into_iter()
        .map(|x| 2.0 * x)
        .collect();
    let act = random(rng, n_envs * nd)
        .into_iter()
        .map(|x| 2.0 * x)
        .collect();
    (q, qd, act)
}

/// The CPU path (`Articulation::step`, f32) on every env of a batch.
fn cpu_step(
    art: &Articulation,
    params: &SimParams,
    q: &[f32],
    qd: &[f32],
    act: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let (nq, nd) = (art.n_q, art.n_qd);
    let n_envs = q.len() / nq;
    let mut ws = Workspace::<f32>::new(art, params);
    let (mut q_out, mut qd_out) = (vec![0.0; q.len()], vec![0.0; qd.len()]);
    for e in 0..n_envs {
        art.step(
            params,
            &q[e * nq..(e + 1) * nq],
            &qd[e * nd..(e + 1) * nd],
            &act[e * nd..(e + 1) * nd],
            &mut q_out[e * nq..(e + 1) * nq],
            &mut qd_out[e * nd..(e + 1) * nd],
            &mut ws,
        );
    }
    (q_out, qd_out)
}

/// Every articulation of the suite (with its parameters and a rest state) and the ball
/// tree.
fn articulations() -> Vec<(&'static str, Articulation, SimParams, Vec<f32>)> {
    fn of<D: RigidTask>(
        name: &'static str,
        d: &D,
    ) -> (&'static str, Articulation, SimParams, Vec<f32>) {
        let mut s = vec![0.0; d.spec().state_dim];
        d.reset(&mut seeded(0, 0), false, &mut s);
        let art = d.articulation().clone();
        s.truncate(art.n_q);
        (name, art, *d.sim_params(), s)
    }
    let tree = ball_tree();
    let mut q0 = vec![0.0; tree.n_q];
    q0[1] = 0.3;
    q0[6] = 1.0; // root quaternion w
    q0[10] = 1.0; // ball quaternion w (after the root's 7 and the hinge's 1)
    vec![
        of("cartpole", &CartPole::new()),
        of("hopper", &hopper_def().unwrap()),
        of("half-cheetah", &cheetah_def().unwrap()),
        of("ant", &ant_def().unwrap()),
        of("humanoid", &humanoid_def().unwrap()),
        (
            "ball-tree",
            tree,
            SimParams {
                dt: 1.0 / 60.0,
                substeps: 8,
                mm_freq: 2,
            },
            q0,
        ),
    ]
}

/// `Articulation::step` by the host-compiled `step.cu` equals the CPU path, on every
/// articulation of the suite and on the ball tree, from random states with contacts.
#[test]
fn host_step_kernel_matches_the_cpu_path() {
    for (name, art, params, q0) in articulations() {
        let packed = PackedArticulation::new(&art, &params).unwrap();
        let n_envs = 64;
        let (q, qd, act) = random_batch(&mut seeded(5, 0), &art, &q0, n_envs);
        let (want_q, want_qd) = cpu_step(&art, &params, &q, &qd, &act);
        let (mut got_q, mut got_qd) = (vec![0.0; q.len()], vec![0.0; qd.len()]);
        host::step(&packed, n_envs, &q, &qd, &act, &mut got_q, &mut got_qd).unwrap();
        let (eq, eqd) = (rel(&got_q, &want_q), rel(&got_qd, &want_qd));
        println!("{name}: q {eq:.1e}, qd {eqd:.1e}");
        assert!(
            eq <= 1e-4 && eqd <= 1e-4,
            "{name}: q {eq:.2e}, qd {eqd:.2e}"
        );
    }
}

/// The CPU path's VJP (`Articulation::step_vjp`, f32) on every env of a batch.
#[allow(clippy::too_many_arguments)]
fn cpu_step_vjp(
    art: &Articulation,
    params: &SimParams,
    q: &[f32],
    qd: &[f32],
    act: &[f32],
    adj_q_out: &[f32],
    adj_qd_out: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (nq, nd) = (art.n_q, art.n_qd);
    let n_envs = q.len() / nq;
    let mut ws = Workspace::<f32>::new(art, params);
    let (mut aq, mut aqd, mut aa) = (vec![0.0; q.len()], vec![0.0; qd.len()], vec![0.0; qd.len()]);
    for e in 0..n_envs {
        let (rq, rd) = (e * nq..(e + 1) * nq, e * nd..(e + 1) * nd);
        art.step_vjp(
            params,
            &q[rq.clone()],
            &qd[rd.clone()],
            &act[rd.clone()],
            &adj_q_out[rq.clone()],
            &adj_qd_out[rd.clone()],
            &mut aq[rq],
            &mut aqd[rd.clone()],
            &mut aa[rd],
            &mut ws,
        );
    }
    (aq, aqd, aa)
}

/// `Articulation::step_vjp` by the host-compiled `step_vjp.cu` equals the CPU path (same
/// articulations and states as the forward test, random cotangents).
#[test]
fn host_step_vjp_kernel_matches_the_cpu_path() {
    for (name, art, params, q0) in articulations() {
        let packed = PackedArticulation::new(&art, &params).unwrap();
        let n_envs = 64;
        let mut rng = seeded(7, 0);
        let (q, qd, act) = random_batch(&mut rng, &art, &q0, n_envs);
        let (uq, uqd) = (random(&mut rng, q.len()), random(&mut rng, qd.len()));
        let want = cpu_step_vjp(&art, &params, &q, &qd, &act, &uq, &uqd);
        let (mut aq, mut aqd, mut aa) =
            (vec![0.0; q.len()], vec![0.0; qd.len()], vec![0.0; qd.len()]);
        host::step_vjp(
            &packed, n_envs, &q, &qd, &act, &uq, &uqd, &mut aq, &mut aqd, &mut aa,
        )
        .unwrap();
        let e = [rel(&aq, &want.0), rel(&aqd, &want.1), rel(&aa, &want.2)];
        println!(
            "{name}: adj q {:.1e}, adj qd {:.1e}, adj act {:.1e}",
            e[0], e[1], e[2]
        );
        assert!(e.iter().all(|&x| x <= 1e-4), "{name}: {e:?}");
    }
}

/// The kernel env (host-compiled kernels behind the `Task` contract) equals the CPU env
/// on every method the trainers call, bit for bit, including actions beyond ±1 (clipped)
/// and Ant's extra state (the previous action).
#[test]
fn kernel_env_equals_the_cpu_env() {
    use diff_core::Task;
    use ndarray::{Array1, Array2};
    use sim_rigid::batch::{KernelEnv, RigidEnv};
    fn check<D: RigidTask>(name: &str, def: impl Fn() -> D) {
        let cpu = RigidEnv::from_def(def());
        let ker = KernelEnv::host(def()).unwrap();
        let spec = cpu.spec().clone();
        let n = 48;
        let mut rng = seeded(9, 0);
        let mut s = Array2::<f32>::zeros((n, spec.state_dim));
        for mut row in s.outer_iter_mut() {
            cpu.reset_state(&mut rng, true, row.view_mut());
        }
        let a = Array2::from_shape_fn((n, spec.act_dim), |_| rng.gen_range(-1.5..1.5));
        let (mut s1, mut s2) = (Array2::zeros(s.raw_dim()), Array2::zeros(s.raw_dim()));
        cpu.step(s.view(), a.view(), s1.view_mut());
        ker.step(s.view(), a.view(), s2.view_mut());
        assert_eq!(s1, s2, "{name}: step");
        let u = Array2::from_shape_fn(s.raw_dim(), |_| rng.gen_range(-1.0..1.0));
        let (mut gs1, mut ga1) = (Array2::zeros(s.raw_dim()), Array2::zeros(a.raw_dim()));
        let (mut gs2, mut ga2) = (gs1.clone(), ga1.clone());
        gs1.fill(0.5);
        gs2.fill(0.5);
        cpu.step_vjp(s.view(), a.view(), u.view(), gs1.view_mut(), ga1.view_mut());
        ker.step_vjp(s.view(), a.view(), u.view(), gs2.view_mut(), ga2.view_mut());
        assert_eq!(gs1, gs2, "{name}: state adjoint");
        assert_eq!(ga1, ga2, "{name}: action adjoint");
        assert!(
            ga1.iter().any(|&x| x != 0.0),
            "{name}: a zero adjoint proves little"
        );
        let (mut r1, mut r2) = (Array1::zeros(n), Array1::zeros(n));
        cpu.reward(s1.view(), a.view(), r1.view_mut());
        ker.reward(s2.view(), a.view(), r2.view_mut());
        assert_eq!(r1, r2, "{name}: reward");
    }
    check("cartpole", CartPole::new);
    check("hopper", || hopper_def().unwrap());
    check("ant", || ant_def().unwrap());
    check("humanoid", || humanoid_def().unwrap());
}

/// The task layers (`locomotion.cu`, `planar.cu`, `cartpole.cu`) compiled for the host equal
/// the CPU task layers bit for bit: observation, its VJP, reward, its VJP and termination,
/// on every DiffRL task and Bruce, over states spread across the height branches
/// (termination, the clipped height terms on both sides) with random orientations, angles
/// beyond ±π and velocities, and actions beyond ±1.
#[test]
fn host_task_layer_kernels_match_the_cpu_task_layers() {
    use diff_core::Task;
    use ndarray::{Array1, Array2};
    use sim_rigid::batch::RigidEnv;
    use sim_rigid::kernels::host::{task_layer, LayerCall};
    use sim_rigid::kernels::PackedTaskLayer;
    use sim_rigid::tasks::bruce::{bruce_def, BruceConfig};
    /// `height`: the state index of the height and its termination threshold (both
    /// branches must occur); `quat`: where a unit quaternion sits in the state.
    fn check<D: RigidTask>(
        name: &str,
        def: D,
        packed: PackedTaskLayer,
        height: Option<(usize, f32)>,
        quat: Option<usize>,
    ) {
        let cpu = RigidEnv::from_def(def);
        let spec = cpu.spec().clone();
        let (sd, od, ad) = (spec.state_dim, spec.obs_dim, spec.act_dim);
        let n = 64;
        let mut rng = seeded(17, 0);
        let mut s = Array2::<f32>::zeros((n, sd));
        for (i, mut row) in s.outer_iter_mut().enumerate() {
            cpu.reset_state(&mut rng, true, row.view_mut());
            for x in row.iter_mut() {
                *x += rng.gen_range(-4.0..4.0);
            }
            if let Some((k, term)) = height {
                row[k] = term + (i as f32 / n as f32) * 2.0 - 0.6;
            }
            if let Some(k) = quat {
                let q: [f32; 4] = std::array::from_fn(|_| rng.gen_range(-1.0..1.0));
                let qn = q.iter().map(|x| x * x).sum::<f32>().sqrt();
                for j in 0..4 {
                    row[k + j] = q[j] / qn;
                }
            }
        }
        let a = Array2::from_shape_fn((n, ad), |_| rng.gen_range(-1.5f32..1.5));
        let flat = |x: &Array2<f32>| x.as_slice().unwrap().to_vec();
        let run = |call: LayerCall<'_>| task_layer(&packed, n, call).unwrap();

        let mut o1 = Array2::<f32>::zeros((n, od));
        cpu.observe(s.view(), o1.view_mut());
        let mut o2 = vec![0.0f32; n * od];
        run(LayerCall::Observe {
            states: &flat(&s),
            obs: &mut o2,
        });
        assert_eq!(flat(&o1), o2, "{name}: observe");

        let ao = Array2::from_shape_fn((n, od), |_| rng.gen_range(-1.0f32..1.0));
        let mut g1 = Array2::<f32>::from_elem((n, sd), 0.5);
        cpu.observe_vjp(s.view(), ao.view(), g1.view_mut());
        let mut g2 = vec![0.5f32; n * sd];
        run(LayerCall::ObserveVjp {
            states: &flat(&s),
            adj_obs: &flat(&ao),
            adj_states: &mut g2,
        });
        assert_eq!(flat(&g1), g2, "{name}: observe VJP");

        let mut r1 = Array1::<f32>::zeros(n);
        cpu.reward(s.view(), a.view(), r1.view_mut());
        let mut r2 = vec![0.0f32; n];
        run(LayerCall::Reward {
            next_states: &flat(&s),
            actions: &flat(&a),
            rewards: &mut r2,
        });
        assert_eq!(r1.to_vec(), r2, "{name}: reward");

        let ar = Array1::from_shape_fn(n, |_| rng.gen_range(-1.0f32..1.0));
        let mut gs1 = Array2::<f32>::from_elem((n, sd), 0.25);
        let mut ga1 = Array2::<f32>::from_elem((n, ad), -0.25);
        cpu.reward_vjp(
            s.view(),
            a.view(),
            ar.view(),
            gs1.view_mut(),
            ga1.view_mut(),
        );
        let (mut gs2, mut ga2) = (vec![0.25f32; n * sd], vec![-0.25f32; n * ad]);
        run(LayerCall::RewardVjp {
            next_states: &flat(&s),
            actions: &flat(&a),
            adj_rewards: ar.as_slice().unwrap(),
            adj_states: &mut gs2,
            adj_actions: &mut ga2,
        });
        assert_eq!(flat(&gs1), gs2, "{name}: reward VJP (state)");
        assert_eq!(flat(&ga1), ga2, "{name}: reward VJP (action)");

        let mut d1 = vec![false; n];
        cpu.terminated(s.view(), &mut d1);
        let mut d2 = vec![true; n];
        run(LayerCall::Terminated {
            next_states: &flat(&s),
            terminated: &mut d2,
        });
        assert_eq!(d1, d2, "{name}: terminated");
        if height.is_some() {
            assert!(
                d1.iter().any(|&d| d) && d1.iter().any(|&d| !d),
                "{name}: both branches"
            );
        }
        // wrong sizes are errors
        let err = task_layer(
            &packed,
            n + 1,
            LayerCall::Observe {
                states: &flat(&s),
                obs: &mut vec![0.0; n * od],
            },
        );
        assert!(err.is_err(), "{name}: size check");
    }
    let loco = |name: &str, def: sim_rigid::tasks::locomotion::Locomotion| {
        let packed = PackedTaskLayer::locomotion(&def).unwrap();
        let term = def.cfg.termination_height as f32;
        check(name, def, packed, Some((1, term)), Some(3));
    };
    loco("ant", ant_def().unwrap());
    loco("humanoid", humanoid_def().unwrap());
    loco("bruce", bruce_def(&BruceConfig::default()).unwrap());
    // every weight in use: the angular-velocity and action penalties
    let mut penalised = ant_def().unwrap();
    penalised.cfg.ang_vel_penalty = -0.05;
    penalised.cfg.action_penalty = -0.01;
    loco("ant with penalties", penalised);
    let hopper = hopper_def().unwrap();
    let term = hopper.cfg.hopper.unwrap().termination_height as f32;
    let packed = PackedTaskLayer::planar(&hopper).unwrap();
    check("hopper", hopper, packed, Some((1, term)), None);
    let cheetah = cheetah_def().unwrap();
    let packed = PackedTaskLayer::planar(&cheetah).unwrap();
    check("half-cheetah", cheetah, packed, None, None);
    let cart = CartPole::new();
    let packed = PackedTaskLayer::cartpole(&cart);
    check("cartpole", cart, packed, None, None);
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use diff_core::cuda;
    use sim_rigid::kernels::gpu::{Dense, RigidStep};
    use sim_rigid::kernels::{module_source, MODULE};

    /// CI sets `MBMIX_REQUIRE_NVRTC=1` after installing NVRTC: there a missing library
    /// fails the test instead of skipping it.
    #[test]
    fn every_kernel_source_compiles_with_nvrtc() {
        if let Err(e) = cuda::check_nvrtc() {
            assert!(
                std::env::var_os("MBMIX_REQUIRE_NVRTC").is_none(),
                "MBMIX_REQUIRE_NVRTC is set but {e}"
            );
            println!("skipped: {e}");
            return;
        }
        let src = module_source();
        // Hopper (H100/H200) and the oldest architecture CUDA 13 supports
        for arch in ["compute_90", "compute_75"] {
            let ptx = cuda::compile_ptx(MODULE, &src, arch).unwrap().to_src();
            for entry in [
                "mbmix_cholesky",
                "mbmix_cholesky_solve",
                "mbmix_solve_vjp",
                "mbmix_rigid_step",
                "mbmix_rigid_step_vjp",
                "mbmix_window_split",
                "mbmix_window_actuate",
                "mbmix_window_join",
                "mbmix_window_step_vjp_finish",
                "mbmix_window_nonfinite",
                "mbmix_window_scatter",
                "mbmix_window_carry",
                "mbmix_window_zero_rows",
            ] {
                assert!(
                    ptx.contains(&format!(".entry {entry}")),
                    "{arch}: no {entry}"
                );
            }
        }
    }

    #[test]
    fn a_broken_source_is_a_clear_error() {
        if cuda::check_nvrtc().is_err() {
            println!("skipped: NVRTC not installed");
            return;
        }
        let err = cuda::compile_ptx("broken.cu", "MBMIX_KERNEL void f( {", "compute_90")
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken.cu"), "{err}");
    }

    #[test]
    fn gpu_kernels_match_the_cpu_path() {
        let dense = match Dense::new() {
            Ok(d) => d,
            Err(e) => {
                println!("skipped: {e}");
                return;
            }
        };
        println!("running on {}", dense.gpu().describe());
        for n in SIZES {
            let inp = inputs(2, n);
            let want = cpu(&inp);
            let a = dense.upload(&inp.a).unwrap();
            let mut l = dense.upload(&vec![0.0; N_ENVS * n * n]).unwrap();
            dense.cholesky(N_ENVS, n, &a, &mut l).unwrap();
            let mut x = dense.upload(&inp.tau).unwrap();
            dense.cholesky_solve(N_ENVS, n, &l, &mut x).unwrap();
            let mut aq = dense.upload(&inp.adj_qdd).unwrap();
            let mut at = dense.upload(&inp.adj_tau).unwrap();
            let mut ah = dense.upload(&inp.adj_h).unwrap();
            dense
                .solve_vjp(N_ENVS, n, &l, &x, &mut aq, &mut at, &mut ah)
                .unwrap();
            for (what, got, exp) in [
                ("L", &l, &want.l),
                ("x", &x, &want.x),
                ("adj_qdd", &aq, &want.adj_qdd),
                ("adj_tau", &at, &want.adj_tau),
                ("adj_h", &ah, &want.adj_h),
            ] {
                let e = rel(&dense.download(got).unwrap(), exp);
                assert!(e <= 1e-4, "n = {n}, {what}: relative error {e:.2e}");
            }
        }
    }

    /// The step kernel on the GPU against the CPU path, N = 256 random envs per
    /// articulation, relative error ≤ 1e-4 (issue 7's parity bound in f32).
    #[test]
    fn gpu_task_layer_kernels_match_the_host_build() {
        use sim_rigid::kernels::gpu::TaskLayer;
        use sim_rigid::kernels::host::{task_layer, LayerCall};
        use sim_rigid::kernels::PackedTaskLayer;
        if let Err(e) = diff_core::cuda::Gpu::get() {
            println!("skipped: {e}");
            return;
        }
        let layers = [
            (
                "ant",
                PackedTaskLayer::locomotion(&ant_def().unwrap()).unwrap(),
            ),
            (
                "humanoid",
                PackedTaskLayer::locomotion(&humanoid_def().unwrap()).unwrap(),
            ),
            (
                "hopper",
                PackedTaskLayer::planar(&hopper_def().unwrap()).unwrap(),
            ),
            (
                "half-cheetah",
                PackedTaskLayer::planar(&cheetah_def().unwrap()).unwrap(),
            ),
            ("cartpole", PackedTaskLayer::cartpole(&CartPole::new())),
        ];
        for (name, p) in layers {
            let layer = TaskLayer::new(p.clone()).unwrap();
            let (sd, od, ad) = (p.state_dim, p.obs_dim, p.act_dim);
            let n = N_ENVS;
            let mut rng = seeded(19, 0);
            let s = random(&mut rng, n * sd);
            let a: Vec<f32> = (0..n * ad).map(|_| rng.gen_range(-1.5..1.5)).collect();
            let (ao, ar) = (random(&mut rng, n * od), random(&mut rng, n));
            // the host build (equal to the CPU task layer, tested above)
            let run = |call: LayerCall<'_>| task_layer(&p, n, call).unwrap();
            let mut obs = vec![0.0; n * od];
            run(LayerCall::Observe {
                states: &s,
                obs: &mut obs,
            });
            let mut gs = vec![0.0; n * sd];
            run(LayerCall::ObserveVjp {
                states: &s,
                adj_obs: &ao,
                adj_states: &mut gs,
            });
            let mut r = vec![0.0; n];
            run(LayerCall::Reward {
                next_states: &s,
                actions: &a,
                rewards: &mut r,
            });
            let (mut rs, mut ra) = (vec![0.0; n * sd], vec![0.0; n * ad]);
            run(LayerCall::RewardVjp {
                next_states: &s,
                actions: &a,
                adj_rewards: &ar,
                adj_states: &mut rs,
                adj_actions: &mut ra,
            });
            let mut d = vec![false; n];
            run(LayerCall::Terminated {
                next_states: &s,
                terminated: &mut d,
            });
            // the device
            let stream = layer.gpu().stream().clone();
            let up = |x: &[f32]| stream.clone_htod(x).unwrap();
            let (ds, da, dao, dar) = (up(&s), up(&a), up(&ao), up(&ar));
            let mut dobs = up(&vec![0.0; n * od]);
            layer.observe(n, &ds, &mut dobs).unwrap();
            let mut dgs = up(&vec![0.0; n * sd]);
            layer.observe_vjp(n, &ds, &dao, &mut dgs).unwrap();
            let mut dr = up(&vec![0.0; n]);
            layer.reward(n, &ds, &da, &mut dr).unwrap();
            let (mut drs, mut dra) = (up(&vec![0.0; n * sd]), up(&vec![0.0; n * ad]));
            layer
                .reward_vjp(n, &ds, &da, &dar, &mut drs, &mut dra)
                .unwrap();
            let mut dd = stream.clone_htod(&vec![0i32; n]).unwrap();
            layer.terminated(n, &ds, &mut dd).unwrap();
            let down = |x: &cudarc::driver::CudaSlice<f32>| stream.clone_dtoh(x).unwrap();
            let e = [
                rel(&down(&dobs), &obs),
                rel(&down(&dgs), &gs),
                rel(&down(&dr), &r),
                rel(&down(&drs), &rs),
                rel(&down(&dra), &ra),
            ];
            println!("{name}: task layer {e:.1?}");
            assert!(e.iter().all(|&x| x <= 1e-4), "{name}: {e:?}");
            let flags: Vec<bool> = stream
                .clone_dtoh(&dd)
                .unwrap()
                .iter()
                .map(|&f| f != 0)
                .collect();
            assert_eq!(flags, d, "{name}: terminated");
        }
    }

    #[test]
    fn gpu_step_kernel_matches_the_cpu_path() {
        if let Err(e) = diff_core::cuda::Gpu::get() {
            println!("skipped: {e}");
            return;
        }
        for (name, art, params, q0) in articulations() {
            let mut k = RigidStep::new(&art, &params).unwrap();
            let (q, qd, act) = random_batch(&mut seeded(6, 0), &art, &q0, N_ENVS);
            let (want_q, want_qd) = cpu_step(&art, &params, &q, &qd, &act);
            let stream = k.gpu().stream().clone();
            let up = |x: &[f32]| stream.clone_htod(x).unwrap();
            let (dq, dqd, dact) = (up(&q), up(&qd), up(&act));
            let (mut oq, mut oqd) = (up(&vec![0.0; q.len()]), up(&vec![0.0; qd.len()]));
            k.step(N_ENVS, &dq, &dqd, &dact, &mut oq, &mut oqd).unwrap();
            let got_q = stream.clone_dtoh(&oq).unwrap();
            let got_qd = stream.clone_dtoh(&oqd).unwrap();
            let (eq, eqd) = (rel(&got_q, &want_q), rel(&got_qd, &want_qd));
            println!("{name}: q {eq:.1e}, qd {eqd:.1e}");
            assert!(
                eq <= 1e-4 && eqd <= 1e-4,
                "{name}: q {eq:.2e}, qd {eqd:.2e}"
            );

            let mut rng = seeded(8, 0);
            let (uq, uqd) = (random(&mut rng, q.len()), random(&mut rng, qd.len()));
            let want = cpu_step_vjp(&art, &params, &q, &qd, &act, &uq, &uqd);
            let (duq, duqd) = (up(&uq), up(&uqd));
            let mut aq = up(&vec![0.0; q.len()]);
            let (mut aqd, mut aa) = (up(&vec![0.0; qd.len()]), up(&vec![0.0; qd.len()]));
            k.step_vjp(
                N_ENVS, &dq, &dqd, &dact, &duq, &duqd, &mut aq, &mut aqd, &mut aa,
            )
            .unwrap();
            let e = [
                rel(&stream.clone_dtoh(&aq).unwrap(), &want.0),
                rel(&stream.clone_dtoh(&aqd).unwrap(), &want.1),
                rel(&stream.clone_dtoh(&aa).unwrap(), &want.2),
            ];
            println!("{name}: adjoints {e:.1?}");
            assert!(e.iter().all(|&x| x <= 1e-4), "{name}: adjoints {e:?}");
        }
    }

    #[test]
    fn without_a_gpu_opening_the_device_is_an_error_not_a_panic() {
        if cuda::driver_present() {
            println!("skipped: this machine has a CUDA driver");
            return;
        }
        let err = Dense::new().unwrap_err().to_string();
        assert!(err.contains("libcuda"), "{err}");
    }
}

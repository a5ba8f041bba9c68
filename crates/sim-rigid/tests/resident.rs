//! The resident window (`resident::ResidentRigid`, the kernels' host build) against the
//! host path through the `Task` API of the same kernels (`KernelEnv`), bit for bit: every
//! step's observations, rewards, termination and non-finite flags, resets, the end states,
//! and every sweep step's action adjoint and carried state adjoint. Actions reach outside
//! [−1, 1] (the clipped branches of the actuation and the extra state) and one env's state
//! is non-finite (the guard and the zeroed rows). The GPU run of the same window is
//! `gpu_resident_window_matches_the_host_build` (feature `cuda`, skipped without a GPU).

// Index loops mirror the host window engine.
#![allow(clippy::needless_range_loop)]

use diff_core::{seeded, ResidentWindow, SeededRng, Task, NONFINITE_LIMIT};
use ndarray::{Array1, Array2};
use rand::Rng;
use sim_rigid::batch::{KernelEnv, RigidTask};

const H: usize = 3;
const N: usize = 6;

fn random(rng: &mut SeededRng, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-scale..scale))
}

fn bits(x: &Array2<f32>) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// What the host window engine computes, step by step, through `task`.
struct HostWindow {
    states: Vec<Array2<f32>>,
    next: Vec<Array2<f32>>,
    actions: Vec<Array2<f32>>,
    carry: Array2<f32>,
}

/// Runs `h` steps and the sweep on `r` and on the host, comparing everything.
fn check(name: &str, task: &dyn Task, mut r: Box<dyn ResidentWindow>) {
    let spec = task.spec().clone();
    let (sd, od, ad) = (spec.state_dim, spec.obs_dim, spec.act_dim);
    let mut rng = seeded(11, 3);
    let mut s0 = Array2::<f32>::zeros((N, sd));
    for row in s0.rows_mut() {
        task.reset_state(&mut rng, true, row);
    }
    s0[[N - 1, 0]] = f32::NAN; // a non-finite env
    let mut host = HostWindow {
        states: vec![s0.clone()],
        next: Vec::new(),
        actions: Vec::new(),
        carry: Array2::zeros((N, sd)),
    };
    r.begin(s0.view()).unwrap();
    let mut nonfinite_rows = Vec::new();
    for t in 0..H {
        let mut obs = Array2::zeros((N, od));
        r.observe(obs.view_mut()).unwrap();
        let mut want = Array2::zeros((N, od));
        task.observe(host.states[t].view(), want.view_mut());
        assert_eq!(bits(&obs), bits(&want), "{name}: observation at step {t}");

        let a = random(&mut rng, N, ad, 1.5);
        let (mut next_obs, mut rew) = (Array2::zeros((N, od)), Array1::zeros(N));
        let (mut term, mut bad) = (vec![false; N], vec![false; N]);
        r.step(
            t,
            a.view(),
            next_obs.view_mut(),
            rew.view_mut(),
            &mut term,
            &mut bad,
        )
        .unwrap();
        let mut next = Array2::zeros((N, sd));
        task.step(host.states[t].view(), a.view(), next.view_mut());
        let mut want_obs = Array2::zeros((N, od));
        task.observe(next.view(), want_obs.view_mut());
        let mut want_rew = Array1::zeros(N);
        task.reward(next.view(), a.view(), want_rew.view_mut());
        let mut want_term = vec![false; N];
        task.terminated(next.view(), &mut want_term);
        let want_bad: Vec<bool> = next
            .outer_iter()
            .map(|row| {
                !row.iter()
                    .all(|x| x.is_finite() && x.abs() <= NONFINITE_LIMIT)
            })
            .collect();
        assert_eq!(bits(&next_obs), bits(&want_obs), "{name}: next obs at {t}");
        let rb = |x: &Array1<f32>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(rb(&rew), rb(&want_rew), "{name}: rewards at {t}");
        assert_eq!(term, want_term, "{name}: termination at {t}");
        assert_eq!(bad, want_bad, "{name}: non-finite flags at {t}");
        assert!(bad[N - 1], "{name}: the NaN env is flagged");
        nonfinite_rows.push(bad.clone());
        // reset the non-finite env and env 0 (host draws, uploaded)
        let rows = vec![0, N - 1];
        let mut fresh = Array2::zeros((rows.len(), sd));
        for row in fresh.rows_mut() {
            task.reset_state(&mut rng, true, row);
        }
        if t + 1 < H {
            fresh[[1, 0]] = f32::NAN; // stays non-finite for the next step too
        }
        r.reset_rows(&rows, fresh.view()).unwrap();
        let mut start = next.clone();
        for (k, &i) in rows.iter().enumerate() {
            start.row_mut(i).assign(&fresh.row(k));
        }
        host.next.push(next);
        host.actions.push(a);
        host.states.push(start);
    }
    let mut end = Array2::zeros((N, sd));
    r.end(end.view_mut()).unwrap();
    assert_eq!(bits(&end), bits(&host.states[H]), "{name}: end states");

    // the sweep
    for t in (0..H).rev() {
        let obs_adj = (t != 1).then(|| random(&mut rng, N, od, 1.0));
        let carry: Vec<bool> = (0..N).map(|i| t + 1 < H && i % 3 != 1).collect();
        let seed = Array1::from_shape_fn(N, |_| rng.gen_range(-1.0f32..1.0));
        let zero = nonfinite_rows[t].clone();
        let mut adj_a = Array2::zeros((N, ad));
        r.sweep_step(
            t,
            obs_adj.as_ref().map(|o| o.view()),
            &carry,
            seed.view(),
            &zero,
            adj_a.view_mut(),
        )
        .unwrap();
        // the host window engine's step (`host_step_adjoint`)
        let mut adj_next = Array2::zeros((N, sd));
        if let Some(o) = &obs_adj {
            task.observe_vjp(host.next[t].view(), o.view(), adj_next.view_mut());
        }
        for i in 0..N {
            if carry[i] {
                let mut row = adj_next.row_mut(i);
                row += &host.carry.row(i);
            }
        }
        let mut want_a = Array2::zeros((N, ad));
        task.reward_vjp(
            host.next[t].view(),
            host.actions[t].view(),
            seed.view(),
            adj_next.view_mut(),
            want_a.view_mut(),
        );
        for i in 0..N {
            if zero[i] {
                adj_next.row_mut(i).fill(0.0);
            }
        }
        let mut adj_s = Array2::zeros((N, sd));
        task.step_vjp(
            host.states[t].view(),
            host.actions[t].view(),
            adj_next.view(),
            adj_s.view_mut(),
            want_a.view_mut(),
        );
        for i in 0..N {
            if zero[i] {
                adj_s.row_mut(i).fill(0.0);
                want_a.row_mut(i).fill(0.0);
            }
        }
        assert_eq!(bits(&adj_a), bits(&want_a), "{name}: action adjoint at {t}");
        let adj_obs = random(&mut rng, N, od, 1.0);
        r.sweep_observe(t, adj_obs.view()).unwrap();
        task.observe_vjp(host.states[t].view(), adj_obs.view(), adj_s.view_mut());
        host.carry = adj_s;
    }
    // (the carried adjoints of steps 2 and 1 entered the action adjoints of steps 1 and 0)
}

fn resident<D: RigidTask>(name: &str, def: D) {
    let env = KernelEnv::host(def).unwrap();
    let r = env
        .resident_window(H, N)
        .expect("the host kernels offer a resident window")
        .unwrap();
    assert!(r.describe().contains("resident"));
    check(name, &env, r);
}

#[test]
fn resident_window_matches_the_host_path_on_every_task_layer() {
    resident("ant", sim_rigid::tasks::ant::ant_def().unwrap());
    resident(
        "humanoid",
        sim_rigid::tasks::humanoid::humanoid_def().unwrap(),
    );
    resident("hopper", sim_rigid::tasks::hopper::hopper_def().unwrap());
    resident(
        "half-cheetah",
        sim_rigid::tasks::cheetah::cheetah_def().unwrap(),
    );
    resident("cartpole", sim_rigid::tasks::CartPole::new());
}

#[test]
fn resident_window_rejects_bad_calls() {
    let env = KernelEnv::host(sim_rigid::tasks::CartPole::new()).unwrap();
    let mut r = env.resident_window(H, N).unwrap().unwrap();
    let (mut o, mut rew) = (Array2::zeros((N, 5)), Array1::zeros(N));
    let (mut t, mut b) = (vec![false; N], vec![false; N]);
    // stepping before `begin`
    let a = Array2::zeros((N, 1));
    let err = r
        .step(0, a.view(), o.view_mut(), rew.view_mut(), &mut t, &mut b)
        .unwrap_err();
    assert!(err.to_string().contains("not begun"), "{err}");
    r.begin(Array2::zeros((N, 4)).view()).unwrap();
    // wrong widths, steps out of order or outside the window, bad reset rows
    assert!(r.begin(Array2::zeros((N, 3)).view()).is_err());
    let wrong = Array2::zeros((N, 2));
    assert!(r
        .step(
            0,
            wrong.view(),
            o.view_mut(),
            rew.view_mut(),
            &mut t,
            &mut b
        )
        .is_err());
    r.begin(Array2::zeros((N, 4)).view()).unwrap();
    assert!(r
        .step(1, a.view(), o.view_mut(), rew.view_mut(), &mut t, &mut b)
        .is_err());
    r.begin(Array2::zeros((N, 4)).view()).unwrap();
    r.step(0, a.view(), o.view_mut(), rew.view_mut(), &mut t, &mut b)
        .unwrap();
    // the sweep may only visit simulated steps
    let mut adj1 = Array2::zeros((N, 1));
    let err = r
        .sweep_step(1, None, &t, Array1::zeros(N).view(), &b, adj1.view_mut())
        .unwrap_err();
    assert!(err.to_string().contains("not simulated"), "{err}");
    assert!(r.reset_rows(&[N], Array2::zeros((1, 4)).view()).is_err());
    assert!(r.reset_rows(&[0, 1], Array2::zeros((1, 4)).view()).is_err());
    let mut adj = Array2::zeros((N, 1));
    let seed = Array1::zeros(N);
    assert!(r
        .sweep_step(H, None, &t, seed.view(), &b, adj.view_mut())
        .is_err());
    assert!(r
        .sweep_step(0, None, &t[..2], seed.view(), &b, adj.view_mut())
        .is_err());
    // a task without a kernel task layer offers no resident window
    assert!(KernelEnv::host(sim_rigid::tasks::CartPole::new())
        .unwrap()
        .with_resident(None)
        .resident_window(H, N)
        .is_none());
}

/// The resident window on the GPU against the host build, in lockstep over a window of
/// N = 256 random envs with random actions and resets (issue 7's parity bound: relative
/// error ≤ 1e-4 in f32). Skipped with a printed reason without a GPU.
#[cfg(feature = "cuda")]
#[test]
fn gpu_resident_window_matches_the_host_build() {
    const NG: usize = 256;
    const HG: usize = 4;
    fn rel(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
            .fold(0.0, f32::max)
    }
    fn lockstep<D: RigidTask>(name: &str, def: impl Fn() -> D) {
        let host = KernelEnv::host(def()).unwrap();
        let gpu = KernelEnv::cuda(def()).unwrap();
        let mut rh = host.resident_window(HG, NG).unwrap().unwrap();
        let mut rg = gpu.resident_window(HG, NG).unwrap().unwrap();
        println!("{name}: {}", rg.describe());
        let spec = host.spec().clone();
        let (sd, od, ad) = (spec.state_dim, spec.obs_dim, spec.act_dim);
        let mut rng = seeded(5, 9);
        let mut s0 = Array2::<f32>::zeros((NG, sd));
        for row in s0.rows_mut() {
            host.reset_state(&mut rng, true, row);
        }
        rh.begin(s0.view()).unwrap();
        rg.begin(s0.view()).unwrap();
        let mut bad_rows = Vec::new();
        for t in 0..HG {
            let a = random(&mut rng, NG, ad, 1.2);
            let mut out = Vec::new();
            for r in [&mut rh, &mut rg] {
                let (mut o, mut rew) = (Array2::zeros((NG, od)), Array1::zeros(NG));
                let (mut term, mut bad) = (vec![false; NG], vec![false; NG]);
                r.step(
                    t,
                    a.view(),
                    o.view_mut(),
                    rew.view_mut(),
                    &mut term,
                    &mut bad,
                )
                .unwrap();
                out.push((o, rew.insert_axis(ndarray::Axis(1)), term, bad));
            }
            let e = rel(&out[1].0, &out[0].0);
            assert!(
                e <= 1e-4,
                "{name} step {t}: observations, relative error {e:.2e}"
            );
            let e = rel(&out[1].1, &out[0].1);
            assert!(
                e <= 1e-4,
                "{name} step {t}: rewards, relative error {e:.2e}"
            );
            assert_eq!(out[1].2, out[0].2, "{name} step {t}: termination flags");
            assert_eq!(out[1].3, out[0].3, "{name} step {t}: non-finite flags");
            bad_rows.push(out[0].3.clone());
            let rows: Vec<usize> = (0..NG).step_by(17).collect();
            let mut fresh = Array2::zeros((rows.len(), sd));
            for row in fresh.rows_mut() {
                host.reset_state(&mut rng, true, row);
            }
            rh.reset_rows(&rows, fresh.view()).unwrap();
            rg.reset_rows(&rows, fresh.view()).unwrap();
        }
        let (mut eh, mut eg) = (Array2::zeros((NG, sd)), Array2::zeros((NG, sd)));
        rh.end(eh.view_mut()).unwrap();
        rg.end(eg.view_mut()).unwrap();
        let e = rel(&eg, &eh);
        assert!(e <= 1e-4, "{name}: end states, relative error {e:.2e}");
        for t in (0..HG).rev() {
            let obs_adj = random(&mut rng, NG, od, 1.0);
            let carry: Vec<bool> = (0..NG).map(|i| t + 1 < HG && i % 5 != 0).collect();
            let seed = Array1::from_shape_fn(NG, |_| rng.gen_range(-1.0f32..1.0));
            let adj_obs = random(&mut rng, NG, od, 1.0);
            let mut got = Vec::new();
            for r in [&mut rh, &mut rg] {
                let mut adj_a = Array2::zeros((NG, ad));
                r.sweep_step(
                    t,
                    Some(obs_adj.view()),
                    &carry,
                    seed.view(),
                    &bad_rows[t],
                    adj_a.view_mut(),
                )
                .unwrap();
                r.sweep_observe(t, adj_obs.view()).unwrap();
                got.push(adj_a);
            }
            let e = rel(&got[1], &got[0]);
            assert!(
                e <= 1e-4,
                "{name} sweep step {t}: action adjoint, relative error {e:.2e}"
            );
        }
    }
    if let Err(e) = diff_core::cuda::Gpu::get() {
        println!("skipped: {e}");
        return;
    }
    lockstep("ant", || sim_rigid::tasks::ant::ant_def().unwrap());
    lockstep("humanoid", || {
        sim_rigid::tasks::humanoid::humanoid_def().unwrap()
    });
    lockstep("hopper", || sim_rigid::tasks::hopper::hopper_def().unwrap());
    lockstep("cartpole", sim_rigid::tasks::CartPole::new);
}

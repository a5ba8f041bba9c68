//! Throughput of a whole training window, CPU against the resident window in the same run:
//! Ant and Humanoid, N envs, h = 32 control steps, in env-steps per second.
//!
//! - **forward**: per step, the actions go in and the observations, rewards, termination
//!   and non-finite flags come out (what a SHAC rollout needs; the networks are not timed);
//! - **forward + backward**: the forward, then the reverse sweep over the window (value and
//!   reward adjoints in, action adjoints out, observation VJP of every start state).
//!
//! Rows: `cpu` is the CPU path of the `Task` contract (`RigidEnv`, rayon over rows) as the
//! host window engine calls it; `resident-host` is the resident window on the kernels'
//! host build (one thread: the GPU's code on the CPU); `resident-cuda` (feature `cuda`) is
//! the resident window on the GPU, whose states stay on the device for the whole window.
//!
//! `cargo run --release -p sim-rigid --features cuda --example window_bench -- [N,N,...]
//! [reps]` (default `4096,16384` and 2). Without the feature, or without a GPU, the CUDA
//! rows are skipped with the reason printed.

use diff_core::{seeded, ResidentWindow, Task};
use ndarray::{Array1, Array2, Array3, Axis};
use rand::Rng;
use sim_rigid::batch::{KernelEnv, RigidEnv, RigidTask};
use std::time::Instant;

const H: usize = 32;

/// Start states and the window's actions and adjoint seeds.
struct Inputs {
    s0: Array2<f32>,
    actions: Array3<f32>,
    obs_adj: Array2<f32>,
    seed: Array1<f32>,
}

fn inputs(task: &dyn Task, n: usize) -> Inputs {
    let spec = task.spec();
    let mut rng = seeded(0, 0);
    let mut s0 = Array2::zeros((n, spec.state_dim));
    for row in s0.rows_mut() {
        task.reset_state(&mut rng, true, row);
    }
    let actions = Array3::from_shape_fn((H, n, spec.act_dim), |_| rng.gen_range(-1.0..1.0));
    let obs_adj = Array2::from_shape_fn((n, spec.obs_dim), |_| rng.gen_range(-1.0..1.0));
    let seed = Array1::from_elem(n, 1.0 / n as f32);
    Inputs {
        s0,
        actions,
        obs_adj,
        seed,
    }
}

/// Seconds per window on the CPU path: forward, and forward + backward.
fn cpu(task: &dyn Task, inp: &Inputs, reps: usize) -> (f64, f64) {
    let spec = task.spec();
    let n = inp.s0.nrows();
    let (sd, od, ad) = (spec.state_dim, spec.obs_dim, spec.act_dim);
    let mut states = Array3::<f32>::zeros((H + 1, n, sd));
    let mut obs = Array2::zeros((n, od));
    let mut rew = Array1::zeros(n);
    let mut term = vec![false; n];
    let mut forward = |states: &mut Array3<f32>| {
        states.index_axis_mut(Axis(0), 0).assign(&inp.s0);
        for t in 0..H {
            let (cur, mut next) =
                states.multi_slice_mut((ndarray::s![t, .., ..], ndarray::s![t + 1, .., ..]));
            let a = inp.actions.index_axis(Axis(0), t);
            task.step(cur.view(), a, next.view_mut());
            task.observe(next.view(), obs.view_mut());
            task.reward(next.view(), a, rew.view_mut());
            task.terminated(next.view(), &mut term);
        }
    };
    let t0 = Instant::now();
    for _ in 0..reps {
        forward(&mut states);
    }
    let fwd = t0.elapsed().as_secs_f64() / reps as f64;
    // the sweep's buffers, allocated once as the window engine does
    let mut carry = Array2::<f32>::zeros((n, sd));
    let mut adj_next = Array2::<f32>::zeros((n, sd));
    let mut adj_s = Array2::<f32>::zeros((n, sd));
    let mut adj_a = Array2::<f32>::zeros((n, ad));
    let t0 = Instant::now();
    for _ in 0..reps {
        forward(&mut states);
        carry.fill(0.0);
        for t in (0..H).rev() {
            let cur = states.index_axis(Axis(0), t);
            let next = states.index_axis(Axis(0), t + 1);
            let a = inp.actions.index_axis(Axis(0), t);
            adj_next.assign(&carry);
            task.observe_vjp(next, inp.obs_adj.view(), adj_next.view_mut());
            adj_a.fill(0.0);
            let seed = inp.seed.view();
            task.reward_vjp(next, a, seed, adj_next.view_mut(), adj_a.view_mut());
            adj_s.fill(0.0);
            task.step_vjp(cur, a, adj_next.view(), adj_s.view_mut(), adj_a.view_mut());
            task.observe_vjp(cur, inp.obs_adj.view(), adj_s.view_mut());
            std::mem::swap(&mut carry, &mut adj_s);
        }
    }
    (fwd, t0.elapsed().as_secs_f64() / reps as f64)
}

/// Seconds per window through a resident window: forward, and forward + backward.
fn resident(r: &mut dyn ResidentWindow, task: &dyn Task, inp: &Inputs, reps: usize) -> (f64, f64) {
    let spec = task.spec();
    let n = inp.s0.nrows();
    let (od, ad) = (spec.obs_dim, spec.act_dim);
    let mut obs = Array2::zeros((n, od));
    let mut rew = Array1::zeros(n);
    let (mut term, mut bad) = (vec![false; n], vec![false; n]);
    let mut forward = |r: &mut dyn ResidentWindow| {
        r.begin(inp.s0.view()).unwrap();
        for t in 0..H {
            let a = inp.actions.index_axis(Axis(0), t);
            r.step(t, a, obs.view_mut(), rew.view_mut(), &mut term, &mut bad)
                .unwrap();
        }
    };
    let t0 = Instant::now();
    for _ in 0..reps {
        forward(r);
    }
    let fwd = t0.elapsed().as_secs_f64() / reps as f64;
    let carry = vec![true; n];
    let zero = vec![false; n];
    let mut adj_a = Array2::zeros((n, ad));
    let t0 = Instant::now();
    for _ in 0..reps {
        forward(r);
        for t in (0..H).rev() {
            r.sweep_step(
                t,
                Some(inp.obs_adj.view()),
                &carry,
                inp.seed.view(),
                &zero,
                adj_a.view_mut(),
            )
            .unwrap();
            r.sweep_observe(t, inp.obs_adj.view()).unwrap();
        }
    }
    (fwd, t0.elapsed().as_secs_f64() / reps as f64)
}

fn row(name: &str, backend: &str, n: usize, (f, fb): (f64, f64)) {
    let steps = (n * H) as f64;
    println!(
        "| {name} | {n} | {backend} | {:.0} | {:.0} |",
        steps / f,
        steps / fb
    );
}

fn run<D: RigidTask>(name: &str, def: impl Fn() -> D, sizes: &[usize], reps: usize) {
    let cpu_task = RigidEnv::from_def(def());
    for &n in sizes {
        let inp = inputs(&cpu_task, n);
        row(name, "cpu", n, cpu(&cpu_task, &inp, reps));
        let host = KernelEnv::host(def()).unwrap();
        let mut r = host.resident_window(H, n).unwrap().unwrap();
        row(
            name,
            "resident-host",
            n,
            resident(r.as_mut(), &host, &inp, reps),
        );
        #[cfg(feature = "cuda")]
        match KernelEnv::cuda(def()).and_then(|g| g.resident_window(H, n).unwrap().map(|r| (g, r)))
        {
            Ok((g, mut r)) => {
                // one untimed window: module load and first launches
                resident(r.as_mut(), &g, &inp, 1);
                row(
                    name,
                    "resident-cuda",
                    n,
                    resident(r.as_mut(), &g, &inp, reps),
                );
            }
            Err(e) => println!("resident-cuda skipped: {e}"),
        }
        #[cfg(not(feature = "cuda"))]
        println!("resident-cuda skipped: built without the `cuda` feature");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|x| x.parse().expect("N")).collect())
        .unwrap_or_else(|| vec![4096, 16384]);
    let reps: usize = args.get(2).map_or(2, |s| s.parse().expect("reps"));
    println!("window of h = {H} control steps; env-steps per second");
    println!("| task | N | path | forward | forward + backward |");
    println!("|---|---|---|---|---|");
    let ant = || sim_rigid::tasks::ant::ant_def().unwrap();
    run("ant", ant, &sizes, reps);
    let humanoid = || sim_rigid::tasks::humanoid::humanoid_def().unwrap();
    run("humanoid", humanoid, &sizes, reps);
}

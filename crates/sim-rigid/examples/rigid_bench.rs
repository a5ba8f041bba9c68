//! Simulator throughput of a control step, CPU against CUDA in the same run: Ant and
//! Humanoid at N envs, forward (`Articulation::step`) and forward + backward (`step` then
//! `step_vjp`, which replays the forward as the training path does), in env-steps per
//! second. The CPU path runs the rows in parallel with rayon (one workspace per thread);
//! the CUDA path (feature `cuda`) keeps the batch on the device and synchronises once per
//! measurement. Physics only: the task layer (actuation, observation, reward) is not timed.
//!
//! `cargo run --release -p sim-rigid --features cuda --example rigid_bench -- [N,N,...]
//! [reps]` (default `4096,16384` and 3). Without the feature, or without a GPU, only the CPU
//! rows are measured and the reason is printed.

use diff_core::seeded;
use rand::Rng;
use rayon::prelude::*;
use sim_rigid::batch::RigidTask;
use sim_rigid::tasks::ant::ant_def;
use sim_rigid::tasks::humanoid::humanoid_def;
use sim_rigid::{Articulation, SimParams, Workspace};
use std::time::Instant;

/// A task's name, batch maker, articulation and integration parameters.
type Entry<'a> = (
    &'a str,
    &'a dyn Fn(usize) -> Batch,
    &'a Articulation,
    &'a SimParams,
);

struct Batch {
    q: Vec<f32>,
    qd: Vec<f32>,
    act: Vec<f32>,
}

fn batch<D: RigidTask>(task: &D, n: usize) -> Batch {
    let art = task.articulation();
    let mut rng = seeded(0, 0);
    let mut s = vec![0.0; task.spec().state_dim];
    let (mut q, mut qd) = (Vec::new(), Vec::new());
    for _ in 0..n {
        task.reset(&mut rng, true, &mut s);
        q.extend_from_slice(&s[..art.n_q]);
        qd.extend_from_slice(&s[art.n_q..art.n_q + art.n_qd]);
    }
    let act = (0..n * art.n_qd)
        .map(|_| rng.gen_range(-50.0..50.0))
        .collect();
    Batch { q, qd, act }
}

/// Seconds per batch step on the CPU: forward, and forward + backward.
fn cpu(art: &Articulation, params: &SimParams, b: &Batch, reps: usize) -> (f64, f64) {
    let (nq, nd) = (art.n_q, art.n_qd);
    let n = b.q.len() / nq;
    let mut q_out = vec![0.0f32; n * nq];
    let mut qd_out = vec![0.0f32; n * nd];
    let forward = |q_out: &mut [f32], qd_out: &mut [f32]| {
        q_out
            .par_chunks_mut(nq)
            .zip(qd_out.par_chunks_mut(nd))
            .enumerate()
            .for_each_init(
                || Workspace::<f32>::new(art, params),
                |ws, (e, (qo, qdo))| {
                    let (rq, rd) = (e * nq..(e + 1) * nq, e * nd..(e + 1) * nd);
                    art.step(params, &b.q[rq], &b.qd[rd.clone()], &b.act[rd], qo, qdo, ws);
                },
            )
    };
    let t = Instant::now();
    for _ in 0..reps {
        forward(&mut q_out, &mut qd_out);
    }
    let fwd = t.elapsed().as_secs_f64() / reps as f64;
    let mut aq = vec![0.0f32; n * nq];
    let mut aqd = vec![0.0f32; n * nd];
    let mut aa = vec![0.0f32; n * nd];
    let t = Instant::now();
    for _ in 0..reps {
        forward(&mut q_out, &mut qd_out);
        aq.par_chunks_mut(nq)
            .zip(aqd.par_chunks_mut(nd))
            .zip(aa.par_chunks_mut(nd))
            .enumerate()
            .for_each_init(
                || Workspace::<f32>::new(art, params),
                |ws, (e, ((gq, gqd), ga))| {
                    let (rq, rd) = (e * nq..(e + 1) * nq, e * nd..(e + 1) * nd);
                    art.step_vjp(
                        params,
                        &b.q[rq.clone()],
                        &b.qd[rd.clone()],
                        &b.act[rd.clone()],
                        &q_out[rq],
                        &qd_out[rd],
                        gq,
                        gqd,
                        ga,
                        ws,
                    );
                },
            );
    }
    (fwd, t.elapsed().as_secs_f64() / reps as f64)
}

#[cfg(feature = "cuda")]
fn gpu(
    art: &Articulation,
    params: &SimParams,
    b: &Batch,
    reps: usize,
) -> diff_core::Result<(String, f64, f64)> {
    use diff_core::cuda::driver_error;
    use sim_rigid::kernels::gpu::RigidStep;
    let n = b.q.len() / art.n_q;
    let mut k = RigidStep::new(art, params)?;
    let stream = k.gpu().stream().clone();
    let up = |x: &[f32]| stream.clone_htod(x).map_err(|e| driver_error("upload", e));
    let (q, qd, act) = (up(&b.q)?, up(&b.qd)?, up(&b.act)?);
    let (mut q_out, mut qd_out) = (up(&b.q)?, up(&b.qd)?);
    let (mut aq, mut aqd, mut aa) = (up(&b.q)?, up(&b.qd)?, up(&b.qd)?);
    let sync = || {
        stream
            .synchronize()
            .map_err(|e| driver_error("synchronize", e))
    };
    // warm-up: compilation, allocation of both scratch sizes
    k.step(n, &q, &qd, &act, &mut q_out, &mut qd_out)?;
    k.step_vjp(
        n, &q, &qd, &act, &q_out, &qd_out, &mut aq, &mut aqd, &mut aa,
    )?;
    sync()?;
    let t = Instant::now();
    for _ in 0..reps {
        k.step(n, &q, &qd, &act, &mut q_out, &mut qd_out)?;
    }
    sync()?;
    let fwd = t.elapsed().as_secs_f64() / reps as f64;
    let t = Instant::now();
    for _ in 0..reps {
        k.step(n, &q, &qd, &act, &mut q_out, &mut qd_out)?;
        k.step_vjp(
            n, &q, &qd, &act, &q_out, &qd_out, &mut aq, &mut aqd, &mut aa,
        )?;
    }
    sync()?;
    Ok((
        k.gpu().describe(),
        fwd,
        t.elapsed().as_secs_f64() / reps as f64,
    ))
}

#[cfg(not(feature = "cuda"))]
fn gpu(_: &Articulation, _: &SimParams, _: &Batch, _: usize) -> Result<(String, f64, f64), String> {
    Err("built without the `cuda` feature".into())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sizes: Vec<usize> = match args.first() {
        Some(s) => s.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![4096, 16384],
    };
    let reps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    println!(
        "| task | N | device | forward env-steps/s | forward + backward env-steps/s |\n|---|---|---|---|---|"
    );
    let ant = ant_def()?;
    let humanoid = humanoid_def()?;
    let tasks: [Entry<'_>; 2] = [
        (
            "ant",
            &|n| batch(&ant, n),
            ant.articulation(),
            ant.sim_params(),
        ),
        (
            "humanoid",
            &|n| batch(&humanoid, n),
            humanoid.articulation(),
            humanoid.sim_params(),
        ),
    ];
    for (name, make, art, params) in tasks {
        for &n in &sizes {
            let b = make(n);
            let (f, fb) = cpu(art, params, &b, reps);
            let threads = rayon::current_num_threads();
            println!(
                "| {name} | {n} | CPU, {threads} threads | {:.0} | {:.0} |",
                n as f64 / f,
                n as f64 / fb
            );
            match gpu(art, params, &b, reps) {
                Ok((dev, f, fb)) => println!(
                    "| {name} | {n} | {dev} | {:.0} | {:.0} |",
                    n as f64 / f,
                    n as f64 / fb
                ),
                Err(e) => println!("| {name} | {n} | CUDA skipped: {e} | – | – |"),
            }
        }
    }
    Ok(())
}

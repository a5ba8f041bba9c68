//! Ant and Humanoid windows of h = 32 steps (16 and 48 substeps per step, the tasks' own)
//! at N = 64 and N = 1024: forward alone and forward + backward, reported as env-steps
//! per second (criterion's element throughput, one element per env-step).
//!
//! `MBMIX_BENCH_N` (comma-separated) overrides the batch sizes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diff_core::{seeded, Task};
use mbmix_benches::WindowBench;
use ndarray::Array2;
use sim_rigid::tasks::{Ant, Humanoid};

const H: usize = 32;

fn initial_states(task: &dyn Task, n: usize) -> Array2<f32> {
    let mut rng = seeded(0, 0);
    let mut s0 = Array2::zeros((n, task.spec().state_dim));
    for row in s0.outer_iter_mut() {
        task.reset_state(&mut rng, true, row);
    }
    s0
}

fn sizes() -> Vec<usize> {
    std::env::var("MBMIX_BENCH_N")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 1024])
}

fn window(c: &mut Criterion, name: &str, task: &dyn Task) {
    let mut group = c.benchmark_group(format!("{name}_window_h32"));
    group.sample_size(10);
    for n in sizes() {
        let s0 = initial_states(task, n);
        let w = WindowBench::new(task, &s0, H);
        group.throughput(Throughput::Elements((n * H) as u64));
        group.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| w.forward(task))
        });
        group.bench_with_input(BenchmarkId::new("forward_backward", n), &n, |b, _| {
            b.iter(|| w.forward_backward(task))
        });
    }
    group.finish();
}

fn locomotion(c: &mut Criterion) {
    window(c, "ant", &Ant::ant());
    window(c, "humanoid", &Humanoid::humanoid());
}

criterion_group!(benches, locomotion);
criterion_main!(benches);

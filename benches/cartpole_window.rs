//! CartPole swing-up windows of h = 32 steps (4 substeps each) at N = 64 and N = 1024:
//! forward alone and forward + backward, reported as env-steps per second
//! (criterion's element throughput, one element per env-step).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diff_core::{seeded, Task};
use mbmix_benches::WindowBench;
use ndarray::Array2;
use sim_rigid::CartPoleSwingUp;

const H: usize = 32;

fn initial_states(task: &dyn Task, n: usize) -> Array2<f32> {
    let mut rng = seeded(0, 0);
    let mut s0 = Array2::zeros((n, task.spec().state_dim));
    for row in s0.outer_iter_mut() {
        task.reset_state(&mut rng, true, row);
    }
    s0
}

fn cartpole_window(c: &mut Criterion) {
    let task = CartPoleSwingUp::new();
    let mut group = c.benchmark_group("cartpole_window_h32");
    for &n in &[64usize, 1024] {
        let s0 = initial_states(&task, n);
        let w = WindowBench::new(&task, &s0, H);
        group.throughput(Throughput::Elements((n * H) as u64));
        group.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| w.forward(&task))
        });
        group.bench_with_input(BenchmarkId::new("forward_backward", n), &n, |b, _| {
            b.iter(|| w.forward_backward(&task))
        });
    }
    group.finish();
}

criterion_group!(benches, cartpole_window);
criterion_main!(benches);

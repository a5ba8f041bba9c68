//! The Sobolev model's training step at MB-MIX's Ant preset (issue 4's cost criterion): a
//! 2 × 128 ELU + LayerNorm MLP, `vjp_proj` with one direction, minibatches of 256 from
//! 2048 Ant transitions with random actions (one window of 64 envs × 32 steps).
//!
//! `step` is one Adam step on one minibatch; `epoch` is the preset's 4 × 4 of them (what
//! MB-MIX runs once per epoch), for both `model.network_backend`s. Steps are measured on
//! rayon's global pool and inside a one-thread pool, since dfdx's matrix products split
//! across rayon's threads.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diff_core::{seeded, Task};
use ndarray::Array2;
use sim_rigid::tasks::Ant;
use sobolev_model::{
    collect, ModelConfig, NetworkBackend, SobolevConfig, SobolevForm, SobolevTrainer, TargetSpec,
    Transitions,
};

const ENVS: usize = 64;
const STEPS: usize = 32;

fn transitions(task: &dyn Task) -> Transitions {
    let spec = task.spec().clone();
    let mut rng = seeded(0, 1);
    let mut s = Array2::<f32>::zeros((ENVS, spec.state_dim));
    for row in s.rows_mut() {
        task.reset_state(&mut rng, true, row);
    }
    let mut all: Option<Transitions> = None;
    let target = TargetSpec::unit(SobolevForm::VjpProj, 1);
    for t in 0..STEPS {
        let a = Array2::from_shape_fn((ENVS, spec.act_dim), |(i, j)| {
            (((t * 7919 + i * 104_729 + j * 31) % 2000) as f32 / 1000.0 - 1.0) * 0.9
        });
        let b = collect(task, s.view(), a.view(), &target, &mut rng).expect("collect");
        let mut next = s.clone();
        task.step(s.view(), a.view(), next.view_mut());
        s = next;
        all = Some(match all {
            None => b,
            Some(acc) => {
                let cat = |x: &Array2<f32>, y: &Array2<f32>| {
                    ndarray::concatenate(ndarray::Axis(0), &[x.view(), y.view()]).unwrap()
                };
                Transitions::from_parts(
                    acc.layout,
                    cat(&acc.s, &b.s),
                    cat(&acc.a, &b.a),
                    cat(&acc.s_next, &b.s_next),
                    cat(&acc.targets, &b.targets),
                )
                .expect("same layout")
            }
        });
    }
    all.expect("at least one step")
}

fn trainer(task: &dyn Task, data: &Transitions, backend: NetworkBackend) -> SobolevTrainer {
    let base = ModelConfig::default();
    let cfg = ModelConfig {
        hidden: vec![128, 128],
        iterations: 4,
        minibatches: 4,
        batch_size: 256,
        sobolev: SobolevConfig {
            form: SobolevForm::VjpProj,
            directions: 1,
            ..base.sobolev.clone()
        },
        network_backend: backend,
        ..base
    };
    let spec = task.spec();
    let mut t = SobolevTrainer::new(cfg, spec.state_dim, spec.act_dim).expect("config");
    t.add(data).expect("layout");
    t
}

fn model_step(c: &mut Criterion) {
    let task = Ant::ant();
    let data = transitions(&task);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut group = c.benchmark_group("sobolev_model_ant_2x128_vjp_proj");
    group.sample_size(20);
    for (name, backend) in [
        ("dfdx", NetworkBackend::Dfdx),
        ("fused", NetworkBackend::Fused),
    ] {
        let mut t = trainer(&task, &data, backend);
        let batch = t
            .buffer()
            .gather(&(0..256).collect::<Vec<_>>())
            .expect("batch");
        group.throughput(Throughput::Elements(256));
        group.bench_function(format!("{name}/step_b256/global_pool"), |b| {
            b.iter(|| t.train_step(&batch).expect("step"))
        });
        group.bench_function(format!("{name}/step_b256/one_thread"), |b| {
            b.iter(|| one.install(|| t.train_step(&batch).expect("step")))
        });
        group.throughput(Throughput::Elements(16 * 256));
        let mut rng = seeded(0, 2);
        group.bench_function(format!("{name}/epoch_4x4/global_pool"), |b| {
            b.iter(|| t.train_epoch(&mut rng).expect("epoch"))
        });
    }
    group.finish();
}

criterion_group!(benches, model_step);
criterion_main!(benches);

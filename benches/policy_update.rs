//! One training epoch of the policy (issue 6's "policy update" micro-benchmark): SHAC's
//! window of 64 envs × 32 steps forward and backward through the simulator, the actor's
//! Adam step, and the critic's TD(λ) regression, on CartPole swing-up and Ant, with the
//! hand-written ("fused") network path and with dfdx's tape. Throughput is env steps.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diff_core::Task;
use mbmix_policy::{NetworkBackend, Shac, ShacConfig};
use std::sync::Arc;

fn shac_epoch(c: &mut Criterion) {
    let tasks: [(&str, Arc<dyn Task>); 2] = [
        (
            "cartpole",
            Arc::new(sim_rigid::tasks::CartPoleSwingUp::new()),
        ),
        ("ant", Arc::new(sim_rigid::tasks::Ant::ant())),
    ];
    let mut group = c.benchmark_group("shac_epoch_n64_h32");
    group.sample_size(10);
    for (name, task) in tasks {
        for backend in [NetworkBackend::Fused, NetworkBackend::Dfdx] {
            let cfg = ShacConfig {
                num_envs: 64,
                horizon: 32,
                network_backend: backend,
                ..ShacConfig::default()
            };
            group.throughput(Throughput::Elements((cfg.num_envs * cfg.horizon) as u64));
            let mut shac = Shac::new(cfg, Arc::clone(&task), 0).expect("SHAC builds");
            let id = format!(
                "{name}/{}",
                match backend {
                    NetworkBackend::Fused => "fused",
                    NetworkBackend::Dfdx => "dfdx",
                }
            );
            group.bench_function(id, |b| {
                b.iter(|| shac.train_epoch().expect("epoch").actor_loss)
            });
        }
    }
    group.finish();
}

criterion_group!(benches, shac_epoch);
criterion_main!(benches);

//! Diagnostic: is a cloth task's gradient a descent direction of its return? Optimises an
//! open-loop action sequence (no policy) from random starting actions with Adam on the
//! task's VJP, under a chosen gradient treatment, and prints the return per iteration.
//! A return that rises says the treatment's gradient carries usable signal; one that stays
//! flat or drifts says it does not.
//!
//! `cargo run --release -p sim-deformable --example cloth_openloop -- [task] [grad] [iters]
//! [starts] [lr] [seed]`, with `grad` one of `raw`, `daxbench`, `clip:C`.

use diff_core::seeded;
use rand::Rng;
use sim_deformable::cloth::GradTreatment;
use sim_deformable::tasks::cloth_tasks::{ClothTask, ClothTaskConfig};
use sim_deformable::tasks::RowTask;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let name = arg(0, "fold-cloth1");
    let grad: GradTreatment = arg(1, "daxbench").parse().map_err(anyhow::Error::msg)?;
    let iters: usize = arg(2, "20").parse()?;
    let starts: usize = arg(3, "2").parse()?;
    let lr: f64 = arg(4, "0.05").parse()?;
    let seed: u64 = arg(5, "0").parse()?;
    let cfg = ClothTaskConfig {
        grad,
        ..ClothTaskConfig::by_name(&name)
            .ok_or_else(|| anyhow::anyhow!("{name:?} is not a cloth task"))?
    };
    let task = ClothTask::with_config(cfg)?;
    let (steps, ad) = (task.config().episode_length, task.spec().act_dim);
    let mut rng = seeded(seed, 0);
    let mut s0 = vec![0.0f32; task.spec().state_dim];
    task.reset_row(&mut rng, false, &mut s0);
    let s0: Vec<f64> = s0.iter().map(|&x| x as f64).collect();
    for start in 0..starts {
        let mut a: Vec<f64> = (0..steps * ad).map(|_| rng.gen_range(-0.8..0.8)).collect();
        let (mut m, mut v) = (vec![0.0; a.len()], vec![0.0; a.len()]);
        for it in 0..=iters {
            let t0 = std::time::Instant::now();
            let mut states = vec![s0.clone()];
            let mut ret = 0.0;
            for t in 0..steps {
                let next = task.step_row(&states[t], &a[t * ad..(t + 1) * ad]);
                ret += task.reward_row(&next, &a[t * ad..(t + 1) * ad]);
                states.push(next);
            }
            if it == iters {
                println!("start {start} final return {ret:.4} actions {a:.3?}");
                break;
            }
            // reverse sweep of the return
            let mut g = vec![0.0; a.len()];
            let mut adj_next = vec![0.0; s0.len()];
            for t in (0..steps).rev() {
                let at = &a[t * ad..(t + 1) * ad];
                task.reward_row_vjp(
                    &states[t + 1],
                    at,
                    1.0,
                    &mut adj_next,
                    &mut g[t * ad..(t + 1) * ad],
                );
                let mut adj_s = vec![0.0; s0.len()];
                task.step_row_vjp(
                    &states[t],
                    at,
                    &adj_next,
                    &mut adj_s,
                    &mut g[t * ad..(t + 1) * ad],
                );
                adj_next = adj_s;
            }
            let gn = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            println!(
                "start {start} iter {it:3} return {ret:.4} |g| {gn:.3e} ({:.1} s)",
                t0.elapsed().as_secs_f64()
            );
            // Adam ascent, actions kept in [-1, 1]
            let k = (it + 1) as i32;
            for i in 0..a.len() {
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(k));
                let vh = v[i] / (1.0 - 0.999f64.powi(k));
                a[i] = (a[i] + lr * mh / (vh.sqrt() + 1e-12)).clamp(-1.0, 1.0);
            }
        }
    }
    Ok(())
}

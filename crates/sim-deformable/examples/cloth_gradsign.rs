//! Diagnostic: does a cloth gradient treatment point the way the return changes? From `n`
//! stochastic resets of a fold task, the first step drags the cloth from its centroid
//! `frac` of the way towards the goal's centroid (pick on the cloth, place shifted; the
//! other steps pick and place at the drag's place, which leaves the cloth as it is). For
//! each env it compares the treatment's derivative of the return with respect to the
//! drag's place z with the central difference of the return over ±`h` (in action units),
//! and prints both and how often their signs agree.
//!
//! `cargo run --release -p sim-deformable --example cloth_gradsign -- [task] [grad] [n]
//! [frac] [h] [seed]`, with `grad` one of `raw`, `daxbench`, `clip:C`.

use diff_core::{open_loop_rollout, open_loop_vjp, seeded, Task};
use ndarray::{Array2, Array3, Axis};
use sim_deformable::cloth::GradTreatment;
use sim_deformable::tasks::cloth_tasks::{ClothTask, ClothTaskConfig};
use sim_deformable::tasks::RowEnv;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let name = arg(0, "fold-cloth1");
    let grad: GradTreatment = arg(1, "daxbench").parse().map_err(anyhow::Error::msg)?;
    let n: usize = arg(2, "16").parse()?;
    let frac: f64 = arg(3, "0.5").parse()?;
    let h: f32 = arg(4, "0.05").parse()?;
    let seed: u64 = arg(5, "0").parse()?;
    let cfg = ClothTaskConfig {
        grad,
        ..ClothTaskConfig::by_name(&name)
            .ok_or_else(|| anyhow::anyhow!("{name:?} is not a cloth task"))?
    };
    let (center, half) = (cfg.action_center, cfg.action_half);
    let inner = ClothTask::with_config(cfg)?;
    let goal = inner.goal().to_vec();
    let particles = goal.len();
    let steps = inner.config().episode_length;
    let task = RowEnv(inner);
    let spec = task.spec().clone();
    let mut rng = seeded(seed, 0);
    let mut s0 = Array2::<f32>::zeros((n, spec.state_dim));
    for mut row in s0.axis_iter_mut(Axis(0)) {
        task.reset_state(&mut rng, true, row.view_mut());
    }
    let centroid =
        |xs: &[f64], d: usize| xs.iter().skip(d).step_by(3).sum::<f64>() / particles as f64;
    let goal_c: Vec<f64> = (0..3)
        .map(|d| goal.iter().map(|g| g[d]).sum::<f64>() / particles as f64)
        .collect();
    let mut actions = Array3::<f32>::zeros((steps, n, spec.act_dim));
    for i in 0..n {
        let x: Vec<f64> = s0
            .row(i)
            .iter()
            .take(3 * particles)
            .map(|&v| v as f64)
            .collect();
        let (cx, cz) = (centroid(&x, 0), centroid(&x, 2));
        let to_action = |w: f64, k: usize| ((w - center[k]) / half[k]) as f32;
        let pick = [to_action(cx, 0), to_action(cz, 1)];
        let place = [
            to_action(cx + frac * (goal_c[0] - cx), 0),
            to_action(cz + frac * (goal_c[2] - cz), 1),
        ];
        for t in 0..steps {
            let (a, b) = if t == 0 {
                (pick, place)
            } else {
                (place, place)
            };
            let row = [a[0], 0.0, a[1], b[0], 0.0, b[1]];
            for (k, v) in row.iter().enumerate() {
                actions[[t, i, k]] = *v;
            }
        }
    }
    let returns = |acts: &Array3<f32>| -> anyhow::Result<Vec<f64>> {
        let w = open_loop_rollout(&task, s0.view(), acts.view())?;
        Ok(w.rewards
            .sum_axis(Axis(0))
            .iter()
            .map(|&r| r as f64)
            .collect())
    };
    let base = open_loop_rollout(&task, s0.view(), actions.view())?;
    let weights = Array2::<f32>::ones((steps, n));
    let (g, _) = open_loop_vjp(&task, base.states.view(), actions.view(), weights.view())?;
    let mut shifted = [actions.clone(), actions.clone()];
    for (k, sign) in [1.0f32, -1.0].iter().enumerate() {
        for i in 0..n {
            shifted[k][[0, i, 5]] += sign * h;
        }
    }
    let (up, down) = (returns(&shifted[0])?, returns(&shifted[1])?);
    let mut agree = 0;
    for i in 0..n {
        let fd = (up[i] - down[i]) / (2.0 * h as f64);
        let adj = g[[0, i, 5]] as f64;
        agree += usize::from((fd > 0.0) == (adj > 0.0) && fd != 0.0);
        println!("env {i:2}: central difference {fd:+.3e}, adjoint {adj:+.3e}");
    }
    println!(
        "{name}, {}: signs agree in {agree} of {n} envs",
        arg(1, "daxbench")
    );
    Ok(())
}

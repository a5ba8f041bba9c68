//! Diagnostic: the gradient of push-rope's reward after one push with respect to the
//! action, by the checkpointed adjoint and by central differences, in f64, and the growth
//! of the state adjoint's norm through the substeps.
//!
//! `cargo run --release -p sim-deformable --example rope_grad -- [moves] [substeps_per_move]`

use diff_core::{seeded, Task};
use ndarray::Array1;
use sim_deformable::tasks::push_rope::{PushRope, PushRopeConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let cfg = PushRopeConfig {
        moves: args.first().copied().unwrap_or(30),
        substeps_per_move: args.get(1).copied().unwrap_or(133),
        ..PushRopeConfig::default()
    };
    let task = PushRope::with_config(cfg)?;
    let mut row = Array1::<f32>::zeros(task.spec().state_dim);
    task.reset_state(&mut seeded(0, 0), false, row.view_mut());
    let s: Vec<f64> = row.iter().map(|&x| x as f64).collect();
    let a = [-0.1, 0.0, 0.4, 0.1, 0.0, -0.3];
    let f = |a: &[f64]| task.reward_row(&task.step_row(&s, a));
    let t = std::time::Instant::now();
    let s1 = task.step_row(&s, &a);
    let r = task.reward_row(&s1);
    let mut adj_next = vec![0.0; s.len()];
    task.reward_row_vjp(&s1, 1.0, &mut adj_next);
    let (mut gs, mut ga) = (vec![0.0; s.len()], vec![0.0; 6]);
    task.step_row_vjp(&s, &a, &adj_next, &mut gs, &mut ga);
    println!("reward {r:.6}, adjoint ∂r/∂a = {ga:?} ({:.1} s)", t.elapsed().as_secs_f64());
    let gsn = gs.iter().map(|x| x * x).sum::<f64>().sqrt();
    println!("|∂r/∂s| = {gsn:.3e}, |∂r/∂s_next| = {:.3e}", adj_next.iter().map(|x| x * x).sum::<f64>().sqrt());
    for h in [1e-3, 1e-4] {
        let fd: Vec<f64> = (0..6)
            .map(|i| {
                let (mut p, mut m) = (a.to_vec(), a.to_vec());
                p[i] += h;
                m[i] -= h;
                (f(&p) - f(&m)) / (2.0 * h)
            })
            .collect();
        println!("central differences h = {h:e}: {fd:?}");
    }
    Ok(())
}

//! Diagnostic: the gradient of push-rope's reward after one push with respect to the
//! action, by the checkpointed adjoint and by central differences, in f64, and the growth
//! of the state adjoint's norm through the substeps.
//!
//! `cargo run --release -p sim-deformable --example rope_grad -- [moves] [substeps_per_move]`

use diff_core::seeded;
use sim_deformable::tasks::push_rope::{PushRope, PushRopeConfig};
use sim_deformable::tasks::RowTask;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let cfg = PushRopeConfig {
        moves: args.first().copied().unwrap_or(30),
        substeps_per_move: args.get(1).copied().unwrap_or(133),
        ..PushRopeConfig::default()
    };
    let task = PushRope::with_config(cfg)?;
    let mut row = vec![0.0f32; task.spec().state_dim];
    task.reset_row(&mut seeded(0, 0), false, &mut row);
    let s: Vec<f64> = row.iter().map(|&x| x as f64).collect();
    let a = [-0.1, 0.0, 0.4, 0.1, 0.0, -0.3];
    let f = |a: &[f64]| task.reward_row(&task.step_row(&s, a), a);
    let t = std::time::Instant::now();
    let s1 = task.step_row(&s, &a);
    let r = task.reward_row(&s1, &a);
    let mut adj_next = vec![0.0; s.len()];
    let (mut gs, mut ga) = (vec![0.0; s.len()], vec![0.0; 6]);
    task.reward_row_vjp(&s1, &a, 1.0, &mut adj_next, &mut ga);
    task.step_row_vjp(&s, &a, &adj_next, &mut gs, &mut ga);
    println!(
        "reward {r:.6}, adjoint ∂r/∂a = {ga:?} ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let gsn = gs.iter().map(|x| x * x).sum::<f64>().sqrt();
    println!(
        "|∂r/∂s| = {gsn:.3e}, |∂r/∂s_next| = {:.3e}",
        adj_next.iter().map(|x| x * x).sum::<f64>().sqrt()
    );
    // the same in f32, as training runs it
    let s32: Vec<f32> = s.iter().map(|&x| x as f32).collect();
    let a32: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let s1 = task.step_row(&s32, &a32);
    let mut adj_next = vec![0.0f32; s.len()];
    let (mut gs, mut ga) = (vec![0.0f32; s.len()], vec![0.0f32; 6]);
    task.reward_row_vjp(&s1, &a32, 1.0, &mut adj_next, &mut ga);
    task.step_row_vjp(&s32, &a32, &adj_next, &mut gs, &mut ga);
    let bad = gs.iter().filter(|x| !x.is_finite()).count();
    println!("f32: ∂r/∂a = {ga:?}, non-finite state adjoints: {bad}");
    if bad > 0 {
        // find the first substep of the reverse sweep that produces a non-finite adjoint
        use sim_deformable::mpm::{MpmRun, MpmState};
        use sim_deformable::primitive::PrimitiveState;
        let n = task.config().n_particles;
        let (st, en) = task.push_of_action(&a32);
        let traj = task.trajectory(&st, &en);
        let run = MpmRun::new(task.model(), traj.clone());
        let mut states = vec![MpmState::from_flat(&s32[..24 * n])];
        let mut sc = task.model().scratch::<f32>();
        for k in 0..task.substeps() {
            let mut x = states[k].clone();
            task.model().substep(&mut x, &traj[k], &mut sc);
            states.push(x);
        }
        let _ = run;
        let mut adj = MpmState::from_flat(&adj_next[..24 * n]);
        for k in (0..task.substeps()).rev() {
            let mut ap = vec![PrimitiveState::zero()];
            task.model()
                .substep_vjp(&states[k], &traj[k], &mut adj, &mut ap, &mut sc);
            let flat = adj.to_flat();
            if let Some(i) = flat.iter().position(|x| !x.is_finite()) {
                let p = i / 24;
                println!("substep {k}: first non-finite adjoint at particle {p} field {} ; x {:?} v {:?} F {:?} C {:?}", i % 24, states[k].x[p], states[k].v[p], states[k].f[p], states[k].c[p]);
                let prev = MpmState::from_flat(&flat);
                println!(
                    "adj x {:?} v {:?} c {:?} f {:?}",
                    prev.x[p], prev.v[p], prev.c[p], prev.f[p]
                );
                break;
            }
        }
    }
    if std::env::var("SKIP_FD").is_ok() {
        return Ok(());
    }
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

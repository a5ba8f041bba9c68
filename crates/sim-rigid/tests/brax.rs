//! The Brax-like tasks (tasks.md §5, `sim_rigid::tasks::brax`): dimensions, reset noise,
//! termination, rewards at known states against the formulas by hand, and rollouts that
//! stay finite. Their gradients are checked in `gradients.rs` (section "Brax-like
//! tasks"), next to the helpers those checks share.
#![allow(clippy::needless_range_loop)]

use diff_core::rng::seeded;
use sim_rigid::batch::{step_row, RigidTask, RowScratch};
use sim_rigid::tasks::brax::{
    brax_ant_def, brax_cheetah_def, brax_hopper_def, brax_reacher_def, Reacher,
};

/// Steps `task` from its deterministic or noisy reset with actions `act(k, t)` for `n`
/// steps; returns the visited states.
fn rollout<D: RigidTask>(
    task: &D,
    n: usize,
    stochastic: bool,
    act: impl Fn(usize, usize) -> f64,
) -> Vec<Vec<f64>> {
    let sd = task.spec().state_dim;
    let mut s32 = vec![0.0f32; sd];
    task.reset(&mut seeded(3, 0), stochastic, &mut s32);
    let mut s: Vec<f64> = s32.iter().map(|x| *x as f64).collect();
    let mut sc = RowScratch::<f64>::new(task);
    let mut out = vec![s.clone()];
    for t in 0..n {
        let a: Vec<f64> = (0..task.spec().act_dim).map(|k| act(k, t)).collect();
        let mut next = vec![0.0; sd];
        step_row(task, &s, &a, &mut next, &mut sc);
        s = next;
        out.push(s.clone());
    }
    out
}

#[test]
fn explore() {
    let h = brax_hopper_def().unwrap();
    let tr = rollout(&h, 200, true, |k, t| ((t as f64 * 0.3 + k as f64).sin()));
    for s in tr.iter().step_by(20) {
        println!("hopper {:?}", &s[..6]);
    }
    let c = brax_cheetah_def().unwrap();
    let tr = rollout(&c, 100, true, |k, t| ((t as f64 * 0.3 + k as f64).sin()));
    for s in tr.iter().step_by(10) {
        println!("cheetah {:?}", &s[..9]);
    }
    let a = brax_ant_def().unwrap();
    let tr = rollout(&a, 100, true, |k, t| ((t as f64 * 0.3 + k as f64).sin()));
    for s in tr.iter().step_by(10) {
        println!("ant {:?}", &s[..3]);
    }
    let tr = rollout(&a, 100, false, |_, _| 0.0);
    for s in tr.iter().step_by(10) {
        println!("ant0 {:?}", &s[..3]);
    }
    let r = brax_reacher_def().unwrap();
    let tr = rollout(&r, 100, true, |k, t| ((t as f64 * 0.3 + k as f64).sin()));
    for s in tr.iter().step_by(10) {
        println!("reacher {:?}", s);
    }
    let _ = Reacher::tip(&[0.0f64; 6]);
}

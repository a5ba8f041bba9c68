//! The whip-rope task: observation and reward adjoints against finite differences, the
//! step's adjoint against its dual-number JVP, checkpointing, the batched f32 contract and
//! bad configs.

use diff_core::gradcheck::{cases, check_stage, direction, vec_in, StageTol};
use diff_core::Task;
use proptest::prelude::*;
use sim_deformable::tasks::testing::{
    batched_contract, clear_of_goal, reset_row64, step_dot_product_error, ObserveStage,
    RewardStage, StepStage,
};
use sim_deformable::tasks::whip_rope::{WhipGoal, WhipRope, WhipRopeConfig};
use sim_deformable::tasks::{RowEnv, RowTask};

const TOL: StageTol = StageTol {
    h: 1e-4,
    fd: 1e-6,
    dot: 1e-9,
};

fn tiny() -> WhipRope {
    WhipRope::with_config(WhipRopeConfig::tiny()).unwrap()
}

/// A state after a random reset and two steps (the rope moving).
fn moving_row(task: &WhipRope, seed: u64) -> Vec<f64> {
    let mut s = reset_row64(task, seed, true);
    for a in [
        [0.8, 0.5, -0.3, 0.0, 0.0, 0.0],
        [-0.4, 0.2, 0.6, 0.0, 0.0, 0.0],
    ] {
        s = task.step_row(&s, &a);
    }
    s
}

proptest! {
    #![proptest_config(cases(32))]

    #[test]
    fn reward_and_observation_adjoints(seed in 0u64..1000, u in direction(64), v in direction(512)) {
        let task = tiny();
        let mut x = moving_row(&task, seed);
        // away from sqrt's kink at a particle sitting on its goal position (the FD error
        // grows as h²/distance²; the particles the reset did not move are exactly there)
        clear_of_goal(&mut x, task.goal(), 0.15);
        let v: Vec<f64> = (0..x.len()).map(|i| v[i % v.len()]).collect();
        check_stage(&RewardStage(tiny()), &x, &u, &v, TOL, "whip-rope reward");
        check_stage(&ObserveStage(task), &x, &u, &v, TOL, "whip-rope observation");
    }

    #[test]
    fn step_adjoint_matches_the_dual_jvp(seed in 0u64..1000, a in vec_in(-1.2, 1.2, 6), u in direction(64), v in direction(512)) {
        let step = StepStage(tiny());
        let mut x = moving_row(&step.0, seed);
        x.extend(&a);
        let e = step_dot_product_error(&step, &x, &u, &v);
        prop_assert!(e <= 1e-9, "dot-product test {e:e}");
    }
}

#[test]
fn the_gripper_drags_the_rope_end() {
    let task = tiny();
    let s0 = task.start_row([0.0, 0.0]);
    let mut s = s0.clone();
    for _ in 0..3 {
        s = task.step_row(&s, &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }
    let n = task.config().n_particles;
    // the gripper moved 3 × 1/50 in x, the held end followed, the far end much less
    assert!((s[24 * n] - s0[24 * n] - 0.06).abs() < 1e-12);
    let near = s[0] - s0[0];
    let far = s[24 * (n - 1)] - s0[24 * (n - 1)];
    assert!(near > 0.02, "held end moved {near}");
    assert!(far < 0.5 * near, "far end {far} vs held end {near}");
}

#[test]
fn checkpointed_step_adjoint_equals_stored_everything() {
    let a = [0.3, -0.2, 0.5, 0.0, 0.0, 0.0];
    let grads = |every: usize| {
        let task = WhipRope::with_config(WhipRopeConfig {
            checkpoint_every: every,
            ..WhipRopeConfig::tiny()
        })
        .unwrap();
        let s = moving_row(&task, 5);
        let u: Vec<f64> = (0..s.len()).map(|i| ((i as f64) * 0.37).sin()).collect();
        let (mut gs, mut ga) = (vec![0.0; s.len()], vec![0.0; 6]);
        task.step_row_vjp(&s, &a, &u, &mut gs, &mut ga);
        gs.extend(ga);
        gs.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(grads(1), grads(4));
    assert_eq!(grads(1), grads(6));
}

#[test]
fn batched_f32_contract() {
    let env = RowEnv(tiny());
    assert_eq!(env.spec().obs_dim, 6 * 12 + 3 * 6);
    let err = batched_contract(&env, 3, 2);
    assert!(err < 1e-3, "f32 vs f64 action gradient: {err:e}");
}

#[test]
fn bad_configs_fail_before_stepping() {
    let err = WhipRope::with_config(WhipRopeConfig {
        rope_from: [0.5, 0.001, 0.4],
        ..WhipRopeConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("outside the grid window"), "{err}");
    let err = WhipRope::with_config(WhipRopeConfig {
        goal: WhipGoal::File("datasets/goals/none.json".into()),
        ..WhipRopeConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("none.json"), "{err}");
    let err = WhipRope::with_config(WhipRopeConfig {
        n_particles: 1,
        ..WhipRopeConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("n_particles"), "{err}");
}

//! The push-rope task: its step's adjoint against its dual-number JVP, the reward,
//! observation and action-map adjoints against finite differences, the checkpointed
//! adjoint against the stored-everything one, the batched f32 contract, and bad configs.

use diff_core::gradcheck::{cases, check_stage, direction, vec_in, Stage, StageTol};
use diff_core::{Dual, Real, Task};
use ndarray::Array2;
use proptest::prelude::*;
use sim_deformable::tasks::push_rope::{GoalSource, PushRope, PushRopeConfig};
use sim_deformable::tasks::testing::{
    batched_contract, clear_of_goal, reset_row64, ObserveStage, RewardStage, StepStage,
};
use sim_deformable::tasks::{RowEnv, RowTask};

const TOL: StageTol = StageTol {
    h: 1e-4,
    fd: 1e-6,
    dot: 1e-9,
};

fn tiny() -> PushRope {
    PushRope::with_config(PushRopeConfig::tiny()).unwrap()
}

proptest! {
    #![proptest_config(cases(32))]

    #[test]
    fn reward_and_observation_adjoints(seed in 0u64..1000, u in direction(64), v in direction(1024)) {
        let task = tiny();
        let mut x = reset_row64(&task, seed, true);
        // away from sqrt's kink at a particle sitting on its goal position (the FD error
        // grows as h²/distance²; the particles the reset did not move are exactly there)
        clear_of_goal(&mut x, task.goal(), 0.15);
        let v: Vec<f64> = (0..x.len()).map(|i| v[i % v.len()]).collect();
        check_stage(&RewardStage(tiny()), &x, &u, &v, TOL, "push-rope reward");
        check_stage(&ObserveStage(task), &x, &u, &v, TOL, "push-rope observation");
    }

    #[test]
    fn step_adjoint_matches_the_dual_jvp(seed in 0u64..1000, a in vec_in(-1.0, 1.0, 6), u in direction(64), v in direction(1024)) {
        // the dot-product test holds exactly whatever branches the step takes (both
        // sides follow the primal's), so no kink needs avoiding
        let step = StepStage(tiny());
        let mut x = reset_row64(&step.0, seed, true);
        x.extend(&a);
        let e = sim_deformable::tasks::testing::step_dot_product_error(&step, &x, &u, &v);
        prop_assert!(e <= 1e-9, "dot-product test {e:e}");
    }
}

#[test]
fn action_map_adjoint_matches_finite_differences() {
    struct Map(PushRope);
    impl Stage for Map {
        fn forward<T: Real>(&self, a: &[T]) -> Vec<T> {
            let (s, e) = self.0.push_of_action(a);
            s.into_iter().chain(e).collect()
        }
        fn vjp(&self, a: &[f64], u: &[f64]) -> Vec<f64> {
            // through step_row_vjp's use: build it from the dual Jacobian independently
            let mut g = vec![0.0; 6];
            for (i, gi) in g.iter_mut().enumerate() {
                let ad: Vec<Dual<f64>> = (0..6)
                    .map(|j| Dual::new(a[j], if i == j { 1.0 } else { 0.0 }))
                    .collect();
                let y = self.forward(&ad);
                *gi = y.iter().zip(u).map(|(yi, ui)| yi.eps * ui).sum();
            }
            g
        }
    }
    let m = Map(PushRope::with_config(PushRopeConfig {
        max_push: 0.3,
        ..PushRopeConfig::tiny()
    })
    .unwrap());
    // inside the clip, and with the push-length clip active (|end − start| > 0.03)
    for a in [
        [0.1, 0.0, -0.2, 0.3, 0.0, 0.1],
        [-0.9, 0.5, 0.8, 0.9, -0.5, -0.7],
    ] {
        check_stage(
            &m,
            &a,
            &[1.0, -0.5, 0.3, 0.7, 0.2, -0.9],
            &[0.3, 0.1, -0.2, 0.5, 0.9, -0.4],
            TOL,
            "action map",
        );
    }
    let clipped = Map(tiny());
    check_stage(
        &clipped,
        &[-0.9, 0.5, 0.8, 0.9, -0.5, -0.7],
        &[1.0, -0.5, 0.3, 0.7, 0.2, -0.9],
        &[0.3, 0.1, -0.2, 0.5, 0.9, -0.4],
        TOL,
        "action map, length clipped",
    );
}

#[test]
fn checkpointed_step_adjoint_equals_stored_everything() {
    let a = [0.3, 0.0, -0.4, -0.2, 0.0, 0.5];
    let grads = |every: usize| {
        let task = PushRope::with_config(PushRopeConfig {
            checkpoint_every: every,
            ..PushRopeConfig::tiny()
        })
        .unwrap();
        let s = reset_row64(&task, 7, true);
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
    let spec = env.spec().clone();
    assert_eq!(spec.state_dim, 24 * 24 + 6);
    assert_eq!(spec.obs_dim, 6 * 24 + 3 * 3);
    let err = batched_contract(&env, 3, 1);
    assert!(err < 1e-3, "f32 vs f64 action gradient: {err:e}");
    let s = Array2::<f32>::zeros((2, spec.state_dim));
    let mut done = vec![true; 2];
    env.terminated(s.view(), &mut done);
    assert!(done.iter().all(|d| !d));
}

#[test]
fn bad_configs_fail_before_stepping() {
    let err = PushRope::with_config(PushRopeConfig {
        rope_center: [0.9, 0.01, 0.5],
        ..PushRopeConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("rope") && err.contains("outside the grid window"),
        "{err}"
    );
    let err = PushRope::with_config(PushRopeConfig {
        goal: GoalSource::File("datasets/goals/nowhere/goal.json".into()),
        ..PushRopeConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("nowhere/goal.json") && err.contains("make_goals"),
        "{err}"
    );
    let err = PushRope::with_config(PushRopeConfig {
        mpm: sim_deformable::mpm::MpmParams {
            dt: 0.05,
            ..PushRopeConfig::tiny().mpm
        },
        ..PushRopeConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("CFL"), "{err}");
}

#[test]
fn gradient_clip_bounds_the_state_cotangent_after_every_substep() {
    let a = [0.3, 0.0, -0.4, -0.2, 0.0, 0.5];
    let grads = |clip: Option<f64>| {
        let task = PushRope::with_config(PushRopeConfig {
            grad_clip: clip,
            ..PushRopeConfig::tiny()
        })
        .unwrap();
        let s = reset_row64(&task, 3, true);
        let u: Vec<f64> = (0..s.len()).map(|i| ((i as f64) * 0.37).sin()).collect();
        let (mut gs, mut ga) = (vec![0.0; s.len()], vec![0.0; 6]);
        task.step_row_vjp(&s, &a, &u, &mut gs, &mut ga);
        gs
    };
    let norm = |g: &[f64]| g.iter().map(|x| x * x).sum::<f64>().sqrt();
    let exact = grads(None);
    assert!(
        norm(&exact) > 1.0,
        "the test needs a cotangent above the clip: {}",
        norm(&exact)
    );
    let clipped = grads(Some(1e-2));
    // the stored push's 6 entries are overwritten by the step: no adjoint there
    assert!(norm(&clipped) <= 1e-2 * (1.0 + 1e-9), "{}", norm(&clipped));
    // a clip above every cotangent's norm changes nothing
    assert_eq!(grads(Some(1e9)), exact);
}

proptest! {
    #![proptest_config(diff_core::gradcheck::cases(32))]

    /// DaXBench's auxiliary reward exp(−contact distance) and its adjoint (to the nearest
    /// particle and through the action mapping) against finite differences.
    #[test]
    fn aux_reward_adjoint(seed in 0u64..1000, a in diff_core::gradcheck::vec_in(-0.9, 0.9, 6), u in diff_core::gradcheck::direction(1), v in diff_core::gradcheck::direction(64)) {
        // the nearest particle must not change inside the finite-difference stencil
        let task = tiny();
        let s = sim_deformable::tasks::testing::reset_row64(&task, seed, true);
        let (start, _) = task.push_of_action(&a);
        let n = task.config().n_particles;
        prop_assume!(sim_deformable::tasks::common::contact_margin(&start, &s, n, 24) > 1e-3);
        // and the distance itself must stay clear of the kink of ‖e‖ at 0
        prop_assume!(sim_deformable::tasks::testing::nearest_distance(&start, &s, n, 24) > 1e-2);
        sim_deformable::tasks::testing::check_aux_adjoint(task, seed, &a, &u, &v, "push-rope aux reward");
    }
}

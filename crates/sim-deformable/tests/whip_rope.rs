//! The whip-rope task: observation and reward adjoints against finite differences, the
//! step's adjoint against its dual-number JVP, checkpointing, the batched f32 contract and
//! bad configs.

use diff_core::gradcheck::{
    cases, check_stage, direction, dot_product_test, vec_in, Stage, StageTol,
};
use diff_core::{seeded, Real, Task};
use ndarray::{Array1, Array2};
use proptest::prelude::*;
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
    let mut row = vec![0.0f32; task.spec().state_dim];
    task.reset_row(&mut seeded(seed, 0), true, &mut row);
    let mut s: Vec<f64> = row.iter().map(|&x| x as f64).collect();
    for a in [
        [0.8, 0.5, -0.3, 0.0, 0.0, 0.0],
        [-0.4, 0.2, 0.6, 0.0, 0.0, 0.0],
    ] {
        s = task.step_row(&s, &a);
    }
    s
}

struct Step(WhipRope);
impl Stage for Step {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.0.spec().state_dim;
        self.0.step_row(&x[..n], &x[n..])
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.spec().state_dim;
        let (mut gs, mut ga) = (vec![0.0; n], vec![0.0; 6]);
        self.0.step_row_vjp(&x[..n], &x[n..], u, &mut gs, &mut ga);
        gs.extend(ga);
        gs
    }
}

struct Reward(WhipRope);
impl Stage for Reward {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        vec![self.0.reward_row(x, &[T::zero(); 6])]
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut g = vec![0.0; x.len()];
        self.0
            .reward_row_vjp(x, &[0.0; 6], u[0], &mut g, &mut [0.0; 6]);
        g
    }
}

struct Observe(WhipRope);
impl Stage for Observe {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut o = vec![T::zero(); self.0.spec().obs_dim];
        self.0.observe_row(x, &mut o);
        o
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut g = vec![0.0; x.len()];
        self.0.observe_row_vjp(x, u, &mut g);
        g
    }
}

proptest! {
    #![proptest_config(cases(32))]

    #[test]
    fn reward_and_observation_adjoints(seed in 0u64..1000, u in direction(64), v in direction(512)) {
        let task = tiny();
        let mut x = moving_row(&task, seed);
        for p in 0..task.config().n_particles {
            x[24 * p] += 0.05 * (1.5 + (p as f64).sin()); // away from sqrt's kink at the goal
        }
        let v: Vec<f64> = (0..x.len()).map(|i| v[i % v.len()]).collect();
        check_stage(&Reward(tiny()), &x, &u, &v, TOL, "whip-rope reward");
        check_stage(&Observe(task), &x, &u, &v, TOL, "whip-rope observation");
    }

    #[test]
    fn step_adjoint_matches_the_dual_jvp(seed in 0u64..1000, a in vec_in(-1.2, 1.2, 6), u in direction(64), v in direction(512)) {
        let step = Step(tiny());
        let mut x = moving_row(&step.0, seed);
        x.extend(&a);
        let v: Vec<f64> = (0..x.len()).map(|i| v[i % v.len()]).collect();
        let y = step.forward::<f64>(&x);
        let u: Vec<f64> = (0..y.len()).map(|i| u[i % u.len()] * (1.0 + 0.1 * i as f64).sin()).collect();
        let jv = diff_core::gradcheck::dual_jvp(&step, &x, &v);
        let ju = step.vjp(&x, &u);
        let e = dot_product_test(&jv, &u, &ju, &v);
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
    let spec = env.spec().clone();
    assert_eq!(spec.obs_dim, 6 * 12 + 3 * 6);
    let n = 3;
    let mut s = Array2::<f32>::zeros((n, spec.state_dim));
    let mut rng = seeded(2, 0);
    for row in s.outer_iter_mut() {
        env.reset_state(&mut rng, true, row);
    }
    assert_ne!(s.row(0), s.row(1));
    let a = Array2::<f32>::from_shape_fn((n, 6), |(i, j)| ((i * 6 + j) as f32 * 0.7).sin());
    let mut s1 = Array2::<f32>::zeros((n, spec.state_dim));
    env.step(s.view(), a.view(), s1.view_mut());
    let mut r = Array1::<f32>::zeros(n);
    env.reward(s1.view(), a.view(), r.view_mut());
    assert!(r.iter().all(|&x| x > 0.0 && x <= 1.0));
    let mut adj_next = Array2::<f32>::zeros((n, spec.state_dim));
    let mut adj_a = Array2::<f32>::zeros((n, 6));
    let mut adj_s = Array2::<f32>::zeros((n, spec.state_dim));
    env.reward_vjp(
        s1.view(),
        a.view(),
        Array1::ones(n).view(),
        adj_next.view_mut(),
        adj_a.view_mut(),
    );
    env.step_vjp(
        s.view(),
        a.view(),
        adj_next.view(),
        adj_s.view_mut(),
        adj_a.view_mut(),
    );
    let row = env.inner();
    let s64: Vec<f64> = s.row(0).iter().map(|&x| x as f64).collect();
    let a64: Vec<f64> = a.row(0).iter().map(|&x| x as f64).collect();
    let s1_64 = row.step_row(&s64, &a64);
    let (mut g1, mut ga) = (vec![0.0; spec.state_dim], vec![0.0; 6]);
    row.reward_row_vjp(&s1_64, &a64, 1.0, &mut g1, &mut ga);
    let mut gs = vec![0.0; spec.state_dim];
    row.step_row_vjp(&s64, &a64, &g1, &mut gs, &mut ga);
    let ga32: Vec<f64> = adj_a.row(0).iter().map(|&x| x as f64).collect();
    let err = diff_core::gradcheck::rel_err(&ga32, &ga, 1e-6);
    assert!(
        err < 1e-3,
        "f32 vs f64 action gradient: {err:e}\n{ga32:?}\n{ga:?}"
    );
    let mut obs = Array2::<f32>::zeros((n, spec.obs_dim));
    env.observe(s1.view(), obs.view_mut());
    assert!(obs.iter().all(|x| x.is_finite()));
    assert!(env.scene(s1.row(0)).is_some());
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

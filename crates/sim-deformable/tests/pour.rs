//! The pouring tasks: observation and reward adjoints against finite differences, the
//! step's adjoint (a tilting, spinning bowl on liquid and elastic particles) against its
//! dual-number JVP and against finite differences, checkpointing, the batched f32
//! contract, the scripted pour, the particle counts and bad configs.

use diff_core::gradcheck::{cases, check_stage, direction, vec_in, Stage, StageTol};
use diff_core::Task;
use proptest::prelude::*;
use sim_deformable::mpm::{Material, MpmParams};
use sim_deformable::tasks::pour::{Pour, PourConfig, PourGoal};
use sim_deformable::tasks::testing::{
    batched_contract, clear_of_goal, reset_row64, step_dot_product_error, ObserveStage,
    RewardStage, StepStage,
};
use sim_deformable::tasks::{RowEnv, RowTask};

const TOL: StageTol = StageTol {
    h: 1e-4,
    fd: 1e-6,
    dot: 1e-9,
};

fn tiny() -> Pour {
    Pour::with_config(PourConfig::tiny()).unwrap()
}

/// A state after a random reset and two steps (the bowl moving and tilting, the
/// particles falling into it).
fn moving_row(task: &Pour, seed: u64) -> Vec<f64> {
    let mut s = reset_row64(task, seed, true);
    for a in [
        [0.8, 0.0, -0.3, -0.6, 0.3, 0.1],
        [-0.4, 0.5, 0.6, 0.2, -0.5, 0.7],
    ] {
        s = task.step_row(&s, &a);
    }
    s
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn reward_and_observation_adjoints(seed in 0u64..1000, u in direction(64), v in direction(512)) {
        let task = tiny();
        let mut x = moving_row(&task, seed);
        // away from sqrt's kink at a particle sitting on its goal position (the FD error
        // grows as h²/distance²; the particles the reset did not move are exactly there)
        clear_of_goal(&mut x, task.goal(), 0.15);
        let v: Vec<f64> = (0..x.len()).map(|i| v[i % v.len()]).collect();
        check_stage(&RewardStage(tiny()), &x, &u, &v, TOL, "pour reward");
        check_stage(&ObserveStage(task), &x, &u, &v, TOL, "pour observation");
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

/// The bowl's own state and the action, through one step, against finite differences:
/// the rotation path (quaternion exponential and product, the rigid velocity field) in
/// isolation, with the particles held fixed at a state away from the bowl.
#[test]
fn bowl_path_adjoint_against_finite_differences() {
    /// Inputs: the bowl's pose (7 numbers) and the action; outputs the next bowl pose and
    /// last displacement.
    struct BowlPath(Pour, Vec<f64>);
    impl Stage for BowlPath {
        fn forward<T: diff_core::Real>(&self, x: &[T]) -> Vec<T> {
            let o = 24 * self.0.n_particles();
            let mut s: Vec<T> = self.1.iter().map(|&c| T::cst(c)).collect();
            s[o..o + 7].copy_from_slice(&x[..7]);
            self.0.step_row(&s, &x[7..])[o..].to_vec()
        }
        fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
            let o = 24 * self.0.n_particles();
            let mut s = self.1.clone();
            s[o..o + 7].copy_from_slice(&x[..7]);
            let mut adj_next = vec![0.0; s.len()];
            adj_next[o..].copy_from_slice(u);
            let (mut gs, mut ga) = (vec![0.0; s.len()], vec![0.0; 6]);
            self.0
                .step_row_vjp(&s, &x[7..], &adj_next, &mut gs, &mut ga);
            let mut out = gs[o..o + 7].to_vec();
            out.extend(ga);
            out
        }
    }
    let task = tiny();
    let s = task.start_row([0.0, 0.0]);
    let o = 24 * task.n_particles();
    let mut x = s[o..o + 7].to_vec();
    x[3..7].copy_from_slice(&[0.9, 0.2, -0.3, 0.1]);
    x.extend([0.7, 0.3, -0.4, 0.5, -0.8, 0.2]);
    let u: Vec<f64> = (0..10).map(|i| (0.7 * i as f64 + 0.3).cos()).collect();
    let v: Vec<f64> = (0..13).map(|i| (1.3 * i as f64 + 0.1).sin()).collect();
    check_stage(&BowlPath(task, s), &x, &u, &v, TOL, "bowl path");
}

#[test]
fn checkpointed_step_adjoint_equals_stored_everything() {
    let a = [0.3, 0.0, 0.5, -0.7, 0.2, 0.1];
    let grads = |every: usize| {
        let task = Pour::with_config(PourConfig {
            checkpoint_every: every,
            ..PourConfig::tiny()
        })
        .unwrap();
        let s = moving_row(&task, 5);
        let u: Vec<f64> = (0..s.len()).map(|i| ((i as f64) * 0.37).sin()).collect();
        let (mut gs, mut ga) = (vec![0.0; s.len()], vec![0.0; 6]);
        task.step_row_vjp(&s, &a, &u, &mut gs, &mut ga);
        gs.extend(ga);
        gs.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    assert_eq!(grads(1), grads(3));
    assert_eq!(grads(1), grads(4));
}

#[test]
fn batched_f32_contract() {
    let env = RowEnv(tiny());
    assert_eq!(env.spec().obs_dim, 6 * 16 + 3 * 4);
    let err = batched_contract(&env, 3, 2);
    assert!(err < 1e-3, "f32 vs f64 action gradient: {err:e}");
}

#[test]
fn daxbench_sizes() {
    let water = PourConfig::water();
    let task = Pour::with_config(PourConfig {
        goal: PourGoal::Actions(vec![]),
        ..water
    })
    .unwrap();
    assert_eq!(task.n_particles(), 702);
    assert_eq!(task.spec().obs_dim, 4281);
    let soup = PourConfig::soup();
    let task = Pour::with_config(PourConfig {
        goal: PourGoal::Actions(vec![]),
        ..soup
    })
    .unwrap();
    assert_eq!(task.n_particles(), 7631);
    assert_eq!(task.spec().obs_dim, 45861);
    let liquid = task
        .materials()
        .iter()
        .filter(|m| m.material == Material::Liquid)
        .count();
    assert_eq!(liquid, 2877);
}

#[test]
fn the_scripted_pour_fills_the_target_and_matches_the_goal_file() {
    let task = Pour::new("pour-water").unwrap();
    let start = task.start_row([0.0, 0.0]);
    let n = task.n_particles();
    let x0: Vec<[f64; 3]> = (0..n)
        .map(|p| [start[24 * p], start[24 * p + 1], start[24 * p + 2]])
        .collect();
    assert_eq!(task.fraction_in_target(&x0), 0.0);
    // the stored goal is the scripted pour's result (rounded to 1e-6)
    let poured = task.particles_after(&task.config().goal_actions());
    let frac = task.fraction_in_target(&poured);
    assert!(frac > 0.9, "{:.1} % poured", 100.0 * frac);
    let worst = poured
        .iter()
        .zip(task.goal())
        .map(|(p, g)| (0..3).map(|d| (p[d] - g[d]).abs()).fold(0.0, f64::max))
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-5,
        "goal file differs from the script by {worst:e}"
    );
    // the goal rewards the poured state far above the start
    let a = [0.0; 6];
    let end_row: Vec<f64> = {
        let mut s = start.clone();
        for a in task.config().goal_actions() {
            s = task.step_row(&s, &a);
        }
        s
    };
    assert!(task.reward_row(&end_row, &a) > 0.9);
    assert!(task.reward_row(&start, &a) < 0.25);
}

#[test]
fn a_held_bowl_keeps_its_water() {
    // no action: the water falls into the bowl and stays there
    let task = Pour::new("pour-water").unwrap();
    let n = task.n_particles();
    let mut s = task.start_row([0.0, 0.0]);
    for _ in 0..40 {
        s = task.step_row(&s, &[0.0; 6]);
    }
    let c = task.config().holder.center;
    let r = task.config().holder.radius;
    for p in 0..n {
        let d2: f64 = (0..3).map(|d| (s[24 * p + d] - c[d]).powi(2)).sum();
        assert!(
            d2.sqrt() < r && s[24 * p + 1] < c[1] + 0.01,
            "particle {p} left the bowl"
        );
    }
}

#[test]
fn bad_configs_fail_before_stepping() {
    // particles outside the grid window
    let err = Pour::with_config(PourConfig {
        mpm: MpmParams {
            res: [12, 14, 24],
            ..PourConfig::tiny().mpm
        },
        ..PourConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("grid window"), "{err}");
    // a time step beyond the CFL bound of the elastic particles
    let err = Pour::with_config(PourConfig {
        mpm: MpmParams {
            dt: 0.05,
            ..PourConfig::tiny().mpm
        },
        ..PourConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("CFL"), "{err}");
    // a degenerate bowl
    let mut cfg = PourConfig::tiny();
    cfg.target.cut = 0.3;
    let err = Pour::with_config(cfg).err().unwrap().to_string();
    assert!(err.contains("target"), "{err}");
    let err = Pour::with_config(PourConfig {
        reset_shift: -0.1,
        ..PourConfig::tiny()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("reset_shift"), "{err}");
    assert!(Pour::new("pour-milk").is_err());
}

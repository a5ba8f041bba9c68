//! The cloth tasks: the Chamfer reward's and the observation's adjoints against finite
//! differences (away from the Chamfer kinks), the step's adjoint against its dual-number
//! JVP, the checkpointed adjoint against the stored-everything one, the batched f32
//! contract, bad configs, resets, and the registered tasks (dimensions, goal files
//! reproduced by the expert, the expert reaching its goal through the task's action map).

use diff_core::gradcheck::{
    cases, check_stage, direction, dot_product_test, rel_err, vec_in, Stage, StageTol,
};
use diff_core::{seeded, Task};
use ndarray::{Array1, Array2};
use proptest::prelude::*;
use sim_deformable::cloth::{ClothParams, GradTreatment};
use sim_deformable::tasks::cloth_tasks::{
    tshirt_mask, ClothGoal, ClothReset, ClothTask, ClothTaskConfig, ExpertFold,
};
use sim_deformable::tasks::testing::{ObserveStage, RewardStage, StepStage};
use sim_deformable::tasks::{RowEnv, RowTask};

const TOL: StageTol = StageTol {
    h: 1e-4,
    fd: 1e-6,
    dot: 1e-9,
};

fn tiny() -> ClothTask {
    ClothTask::with_config(ClothTaskConfig::tiny()).unwrap()
}

/// A state row of the task after a reset, in f64.
fn start_row(task: &ClothTask, seed: u64) -> Vec<f64> {
    let mut row = vec![0.0f32; task.spec().state_dim];
    task.reset_row(&mut seeded(seed, 0), true, &mut row);
    row.iter().map(|&x| x as f64).collect()
}

/// The smallest gap, over every particle and every goal point, between the nearest and
/// the second-nearest distance to the other set, and the smallest nearest distance.
/// [`check_stage`]'s stencil moves one coordinate by at most `2h = 2e-4` (positions are
/// below 1), which changes a distance `d = ‖·‖/√3` by at most 1.2e-4, so a gap above
/// 3e-4 keeps every `min` on the pair it selects (no Chamfer kink inside the stencil);
/// a nearest distance above 3e-3 keeps the stencil off the `√` kink at 0 and its
/// curvature low enough for fourth-order differences to resolve 1e-6.
fn chamfer_margins(task: &ClothTask, s: &[f64]) -> (f64, f64) {
    let n = task.n_particles();
    let x: Vec<[f64; 3]> = (0..n)
        .map(|p| [s[3 * p], s[3 * p + 1], s[3 * p + 2]])
        .collect();
    let d = |a: &[f64; 3], b: &[f64; 3]| -> f64 {
        ((0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f64>() / 3.0).sqrt()
    };
    let (mut gap, mut near) = (f64::MAX, f64::MAX);
    let mut scan = |dists: Vec<f64>| {
        let mut v = dists;
        v.sort_by(f64::total_cmp);
        gap = gap.min(v[1] - v[0]);
        near = near.min(v[0]);
    };
    for xi in &x {
        scan(task.goal().iter().map(|g| d(xi, g)).collect());
    }
    for g in task.goal() {
        scan(x.iter().map(|xi| d(xi, g)).collect());
    }
    (gap, near)
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn reward_and_observation_adjoints(
        seed in 0u64..1000, noise in vec_in(-0.01, 0.01, 72), step in 0.0..4.0f64,
        u in direction(8), v in direction(256),
    ) {
        let task = tiny();
        let mut x = start_row(&task, seed);
        // generic positions and velocities, the counter anywhere
        for (xi, e) in x.iter_mut().zip(&noise) {
            *xi += e;
        }
        let n = task.n_particles();
        for (i, vi) in x[3 * n..6 * n].iter_mut().enumerate() {
            *vi = 0.3 * (i as f64 * 0.7).sin();
        }
        x[6 * n + 3] = step;
        let (gap, near) = chamfer_margins(&task, &x);
        prop_assume!(gap > 3e-4 && near > 3e-3);
        let v: Vec<f64> = (0..x.len()).map(|i| v[i % v.len()]).collect();
        check_stage(&RewardStage(tiny()), &x, &u, &v, TOL, "cloth Chamfer reward");
        check_stage(&ObserveStage(task), &x, &u, &v, TOL, "cloth observation");
    }

    #[test]
    fn step_adjoint_matches_the_dual_jvp(
        seed in 0u64..1000, a in vec_in(-1.1, 1.1, 6), u in direction(64), v in direction(256),
    ) {
        // the dot-product test holds exactly whatever branches the step takes (both
        // sides follow the primal's), so no kink needs avoiding
        let step = StepStage(tiny());
        let mut x = start_row(&step.0, seed);
        x.extend(&a);
        let e = sim_deformable::tasks::testing::step_dot_product_error(&step, &x, &u, &v);
        prop_assert!(e <= 1e-9, "dot-product test {e:e}");
    }
}

/// A pick right on a particle: the gripper grasps it and carries it to the place point,
/// and the step's adjoint agrees with the dual JVP through the grasp.
#[test]
fn step_adjoint_through_a_grasp() {
    let task = tiny();
    let cfg = task.config().clone();
    let s = start_row(&task, 3);
    let p = 7;
    let (c, h) = (cfg.action_center, cfg.action_half);
    let to_a = |w: f64, d: usize| (w - c[d]) / h[d];
    let place = [c[0] + 0.5 * h[0], c[1] - 0.6 * h[1]];
    let a = [
        to_a(s[3 * p], 0),
        0.3,
        to_a(s[3 * p + 2], 1),
        to_a(place[0], 0),
        -0.2,
        to_a(place[1], 1),
    ];
    assert!(a.iter().all(|x| x.abs() <= 1.0), "{a:?}");
    let next = task.step_row(&s, &a);
    let moved = (next[3 * p] - place[0]).hypot(next[3 * p + 2] - place[1]);
    assert!(
        moved < 0.03,
        "the grasped particle is {moved} from the place point"
    );
    assert_eq!(
        next[task.spec().state_dim - 1],
        s[task.spec().state_dim - 1] + 1.0
    );
    let step = StepStage(tiny());
    let mut x = s.clone();
    x.extend(a);
    let v: Vec<f64> = (0..x.len()).map(|i| ((i as f64) * 0.61).sin()).collect();
    let u: Vec<f64> = (0..next.len()).map(|i| ((i as f64) * 0.37).cos()).collect();
    let jv = diff_core::gradcheck::dual_jvp(&step, &x, &v);
    let ju = step.vjp(&x, &u);
    let e = dot_product_test(&jv, &u, &ju, &v);
    assert!(e <= 1e-9, "dot-product test {e:e}");
    // the action's gradient is non-zero in x and z and zero in the ignored y entries
    let n = task.spec().state_dim;
    let ga = &ju[n..];
    assert!(ga[1] == 0.0 && ga[4] == 0.0, "{ga:?}");
    assert!(ga[3] != 0.0 && ga[5] != 0.0, "{ga:?}");
}

#[test]
fn chamfer_reward_matches_its_definition() {
    let task = tiny();
    let mut s = start_row(&task, 11);
    let k = task.spec().state_dim - 1;
    s[k] = 2.0;
    let n = task.n_particles();
    let x: Vec<&[f64]> = (0..n).map(|p| &s[3 * p..3 * p + 3]).collect();
    let d =
        |a: &[f64], b: &[f64; 3]| ((0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>() / 3.0).sqrt();
    let x2g: f64 = x
        .iter()
        .map(|xi| {
            task.goal()
                .iter()
                .map(|g| d(xi, g))
                .fold(f64::MAX, f64::min)
        })
        .sum::<f64>()
        / n as f64;
    let g2x: f64 = task
        .goal()
        .iter()
        .map(|g| x.iter().map(|xi| d(xi, g)).fold(f64::MAX, f64::min))
        .sum::<f64>()
        / task.goal().len() as f64;
    let cd = x2g + g2x;
    assert!((task.chamfer_row(&s) - cd).abs() < 1e-14);
    let r = (-10.0 * cd).exp() * 0.99f64.powi(2);
    assert!((task.reward_row(&s, &[]) - r).abs() < 1e-14);
    // at the goal: CD = 0, the reward is the discount alone, and the (one-sided)
    // gradient w.r.t. the positions vanishes
    let mut at_goal = s.clone();
    for (p, g) in task.goal().iter().enumerate() {
        at_goal[3 * p..3 * p + 3].copy_from_slice(g);
    }
    assert_eq!(task.chamfer_row(&at_goal), 0.0);
    assert!((task.reward_row(&at_goal, &[]) - 0.99f64.powi(2)).abs() < 1e-15);
    let mut g = vec![0.0; s.len()];
    task.reward_row_vjp(&at_goal, &[], 1.0, &mut g, &mut []);
    assert!(g[..3 * n].iter().all(|&x| x == 0.0));
    assert!((g[k] - 0.99f64.powi(2) * 0.99f64.ln()).abs() < 1e-15);
}

#[test]
fn checkpointed_step_adjoint_equals_stored_everything() {
    let a = [0.3, 0.0, -0.4, -0.2, 0.0, 0.5];
    for grad in [GradTreatment::Raw, GradTreatment::DaxbenchNormalize] {
        let grads = |every: usize| {
            let task = ClothTask::with_config(ClothTaskConfig {
                checkpoint_every: every,
                grad,
                ..ClothTaskConfig::tiny()
            })
            .unwrap();
            let s = start_row(&task, 7);
            let u: Vec<f64> = (0..s.len()).map(|i| ((i as f64) * 0.37).sin()).collect();
            let (mut gs, mut ga) = (vec![0.0; s.len()], vec![0.0; 6]);
            task.step_row_vjp(&s, &a, &u, &mut gs, &mut ga);
            gs.extend(ga);
            assert!(gs.iter().all(|g| g.is_finite()));
            gs.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let full = grads(1);
        for every in [7, 50, 80, 1000] {
            assert_eq!(full, grads(every), "{grad:?}, every {every}");
        }
    }
}

#[test]
fn batched_f32_contract() {
    let env = RowEnv(tiny());
    let task = env.inner();
    let spec = task.spec().clone();
    assert_eq!(task.n_particles(), 24);
    assert_eq!(spec.state_dim, 6 * 24 + 4);
    assert_eq!(spec.obs_dim, 3 * 5 + 8);
    assert_eq!(spec.act_dim, 6);
    assert_eq!(spec.state_names.len(), spec.state_dim);
    assert_eq!(spec.obs_names.len(), spec.obs_dim);
    assert_eq!(spec.state_names.last().map(String::as_str), Some("step"));
    let n = 3;
    let mut s = Array2::<f32>::zeros((n, spec.state_dim));
    let mut rng = seeded(1, 0);
    for row in s.outer_iter_mut() {
        env.reset_state(&mut rng, true, row);
    }
    // stochastic resets differ
    assert_ne!(s.row(0), s.row(1));
    let a = Array2::<f32>::from_shape_fn((n, 6), |(i, j)| ((i * 6 + j) as f32 * 0.7).sin());
    let mut s1 = Array2::<f32>::zeros((n, spec.state_dim));
    env.step(s.view(), a.view(), s1.view_mut());
    assert!(s1.iter().all(|x| x.is_finite()));
    assert!(s1.column(spec.state_dim - 1).iter().all(|&c| c == 1.0));
    let mut r = Array1::<f32>::zeros(n);
    env.reward(s1.view(), a.view(), r.view_mut());
    assert!(r.iter().all(|&x| x > 0.0 && x <= 0.99));
    // f32 VJP of the reward through one step agrees with the f64 row VJP
    let mut adj_s = Array2::<f32>::zeros((n, spec.state_dim));
    let mut adj_a = Array2::<f32>::zeros((n, 6));
    let mut adj_next = Array2::<f32>::zeros((n, spec.state_dim));
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
    for i in 0..n {
        let s64: Vec<f64> = s.row(i).iter().map(|&x| x as f64).collect();
        let a64: Vec<f64> = a.row(i).iter().map(|&x| x as f64).collect();
        let s1_64 = task.step_row(&s64, &a64);
        let mut adj_next64 = vec![0.0; spec.state_dim];
        task.reward_row_vjp(&s1_64, &[], 1.0, &mut adj_next64, &mut []);
        let (mut gs, mut ga) = (vec![0.0; spec.state_dim], vec![0.0; 6]);
        task.step_row_vjp(&s64, &a64, &adj_next64, &mut gs, &mut ga);
        let ga32: Vec<f64> = adj_a.row(i).iter().map(|&x| x as f64).collect();
        let err = rel_err(&ga32, &ga, 1e-6);
        assert!(
            err < 1e-3,
            "f32 vs f64 action gradient: {err:e}\n{ga32:?}\n{ga:?}"
        );
        let gs32: Vec<f64> = adj_s.row(i).iter().map(|&x| x as f64).collect();
        let err = rel_err(&gs32, &gs, 1e-6);
        assert!(err < 1e-3, "f32 vs f64 state gradient: {err:e}");
    }
    // batched JVP against the row's dual JVP
    let ds = Array2::<f32>::from_shape_fn((n, spec.state_dim), |(i, j)| {
        ((i * 31 + j) as f32 * 0.13).cos()
    });
    let da = Array2::<f32>::from_shape_fn((n, 6), |(i, j)| ((i * 7 + j) as f32 * 0.29).sin());
    let mut ds1 = Array2::<f32>::zeros((n, spec.state_dim));
    env.step_jvp(s.view(), a.view(), ds.view(), da.view(), ds1.view_mut());
    let step = StepStage(tiny());
    let mut x: Vec<f64> = s.row(2).iter().map(|&x| x as f64).collect();
    x.extend(a.row(2).iter().map(|&x| x as f64));
    let mut v: Vec<f64> = ds.row(2).iter().map(|&x| x as f64).collect();
    v.extend(da.row(2).iter().map(|&x| x as f64));
    let jv = diff_core::gradcheck::dual_jvp(&step, &x, &v);
    let jv32: Vec<f64> = ds1.row(2).iter().map(|&x| x as f64).collect();
    assert!(rel_err(&jv32, &jv, 1e-6) < 1e-5);
    let mut done = vec![true; n];
    env.terminated(s1.view(), &mut done);
    assert!(done.iter().all(|d| !d));
    let mut obs = Array2::<f32>::zeros((n, spec.obs_dim));
    env.observe(s1.view(), obs.view_mut());
    assert!(obs.iter().all(|x| x.is_finite()));
    // observed particles 0, 5, …, 20, then the grippers
    assert_eq!(obs[[0, 3]], s1[[0, 15]]);
    let o = 3 * 5;
    assert_eq!(obs[[1, o]], s1[[1, 6 * 24]]);
    assert_eq!(&obs.row(1).to_vec()[o + 3..], &[0.02, 1.0, 1.0, 1.0, 0.02]);
    let scene = env.scene(s1.row(0)).expect("a scene");
    assert_eq!(scene.prims.len(), 3);
}

#[test]
fn resets_follow_the_table() {
    // fold tasks: one xz shift for the whole cloth, at rest, counter 0
    let task = tiny();
    let rest = task.cloth().initial_state::<f64>();
    let s = start_row(&task, 5);
    let n = task.n_particles();
    let (dx, dz) = (s[0] - rest.x[0][0], s[2] - rest.x[0][2]);
    assert!(dx != 0.0 && dz != 0.0);
    for p in 0..n {
        assert!((s[3 * p] - rest.x[p][0] - dx).abs() < 1e-6);
        assert_eq!(s[3 * p + 1], 0.0);
        assert!((s[3 * p + 2] - rest.x[p][2] - dz).abs() < 1e-6);
    }
    assert!(s[3 * n..6 * n].iter().all(|&v| v == 0.0));
    assert_eq!(s[6 * n + 3], 0.0);
    let mut det = vec![0.0f32; task.spec().state_dim];
    task.reset_row(&mut seeded(5, 0), false, &mut det);
    assert!((det[0] as f64 - rest.x[0][0]).abs() < 1e-7);
    // unfold tasks: noise, then random folds; without noise a fixed folded cloth
    let unfold = |count_steps: bool| {
        ClothTask::with_config(ClothTaskConfig {
            reset: ClothReset::Folds {
                noise: 1e-4,
                folds: 2,
                count_steps,
            },
            goal: ClothGoal::Flat,
            ..ClothTaskConfig::tiny()
        })
        .unwrap()
    };
    let u = unfold(false);
    assert_eq!(u.spec().episode_length, 3);
    let (a, b) = (start_row(&u, 1), start_row(&u, 2));
    assert_ne!(a, b);
    assert!(u.chamfer_row(&a) > 1e-3, "the folds moved the cloth");
    assert_eq!(a[6 * n + 3], 0.0);
    let det = |t: &ClothTask, seed| {
        let mut r = vec![0.0f32; t.spec().state_dim];
        t.reset_row(&mut seeded(seed, 0), false, &mut r);
        Array1::from(r)
    };
    assert_eq!(det(&u, 1), det(&u, 2));
    assert!(u.chamfer_row(&det(&u, 1).mapv(|x| x as f64).to_vec()) > 1e-3);
    let counted = unfold(true);
    assert_eq!(counted.spec().episode_length, 1);
    assert_eq!(start_row(&counted, 1)[6 * n + 3], 2.0);
}

#[test]
fn bad_configs_fail_before_stepping() {
    let err = |cfg: ClothTaskConfig| ClothTask::with_config(cfg).err().unwrap().to_string();
    let t = ClothTaskConfig::tiny;
    let e = err(ClothTaskConfig {
        episode_length: 0,
        ..t()
    });
    assert!(e.contains("episode_length"), "{e}");
    let e = err(ClothTaskConfig {
        obs_stride: 0,
        ..t()
    });
    assert!(e.contains("obs_stride"), "{e}");
    let e = err(ClothTaskConfig {
        checkpoint_every: 0,
        ..t()
    });
    assert!(e.contains("checkpoint_every"), "{e}");
    let e = err(ClothTaskConfig {
        action_half: [0.7, 0.1],
        ..t()
    });
    assert!(e.contains("workspace") && e.contains("unit box"), "{e}");
    let e = err(ClothTaskConfig {
        cloth: ClothParams {
            dt: -1e-3,
            ..t().cloth
        },
        ..t()
    });
    assert!(e.contains("dt"), "{e}");
    let e = err(ClothTaskConfig {
        grad: GradTreatment::ClipNorm(0.0),
        ..t()
    });
    assert!(e.contains("grad"), "{e}");
    let e = err(ClothTaskConfig {
        reset: ClothReset::Folds {
            noise: 0.0,
            folds: 3,
            count_steps: true,
        },
        ..t()
    });
    assert!(
        e.contains("reset.folds") && e.contains("3-step episode"),
        "{e}"
    );
    let e = err(ClothTaskConfig {
        goal: ClothGoal::Folds(vec![ExpertFold {
            site: [0, 0],
            place: [0.5, 0.5],
        }]),
        ..t()
    });
    assert!(e.contains("[0, 0]") && e.contains("no particle"), "{e}");
    let e = err(ClothTaskConfig {
        goal: ClothGoal::File("datasets/goals/nowhere/goal.json".into()),
        ..t()
    });
    assert!(
        e.contains("nowhere/goal.json") && e.contains("make_goals"),
        "{e}"
    );
    let e = err(ClothTaskConfig {
        goal: ClothGoal::File("datasets/goals/fold-cloth1/goal.json".into()),
        ..t()
    });
    assert!(e.contains("512 goal positions for 24 particles"), "{e}");
    let e = ClothTask::named("fold-cloth2").err().unwrap().to_string();
    assert!(
        e.contains("fold-cloth2") && e.contains("fold-cloth1"),
        "{e}"
    );
}

#[test]
fn tshirt_mask_is_a_t_of_body_and_sleeves() {
    let n = 180;
    let m = tshirt_mask(n);
    assert_eq!(m.iter().filter(|&&b| b).count(), 3574);
    let at = |u: usize, w: usize| m[(45 + u) * n + 45 + w];
    // sleeves at the top across the full width, the body below, the neckline notch
    assert!(at(0, 13) && at(89, 28) && !at(0, 29) && !at(89, 12));
    assert!(at(22, 75) && at(67, 75) && !at(21, 75) && !at(68, 75) && !at(45, 76));
    assert!(!at(45, 13) && !at(38, 14) && at(45, 15) && at(37, 13));
    // nothing outside the central block
    for i in 0..n {
        for j in 0..n {
            if !(45..135).contains(&i) || !(45..135).contains(&j) {
                assert!(!m[i * n + j]);
            }
        }
    }
}

/// The registered tasks: dimensions as the table, goal files that the expert of the goal
/// script reproduces, the expert reaching the goal through the task's action map, and a
/// finite normalised gradient through a full 2000-substep step.
#[test]
fn registered_tasks_match_the_table() {
    for (name, particles, obs, steps) in [
        ("fold-cloth1", 512, 1544, 3),
        ("fold-cloth3", 512, 1544, 4),
        ("unfold-cloth1", 512, 1544, 15),
        ("unfold-cloth3", 512, 1544, 15),
        ("fold-tshirt", 3574, 1082, 5),
    ] {
        let task = ClothTask::named(name).unwrap();
        let spec = task.spec();
        assert_eq!(spec.name, name);
        assert_eq!(task.n_particles(), particles, "{name}");
        assert_eq!(spec.obs_dim, obs, "{name}");
        assert_eq!(spec.state_dim, 6 * particles + 4, "{name}");
        assert_eq!(spec.episode_length, steps, "{name}");
        assert_eq!(task.goal().len(), particles, "{name}");
        let cfg = task.config();
        for d in 0..2 {
            assert!(cfg.action_center[d] - cfg.action_half[d] >= 0.0);
            assert!(cfg.action_center[d] + cfg.action_half[d] <= 1.0);
        }
        if let Some(folds) = ClothTaskConfig::expert_folds(name) {
            // the committed goal is the expert's result, rounded to 1e-6
            let made = task.cloth_after(&folds).unwrap();
            let err = made
                .x
                .iter()
                .zip(task.goal())
                .flat_map(|(a, b)| (0..3).map(move |d| (a[d] - b[d]).abs()))
                .fold(0.0, f64::max);
            assert!(
                err <= 5.1e-7,
                "{name}: goal file differs from the expert by {err:e}"
            );
        }
    }
    // the documented workspaces
    let ws = |name: &str| {
        let c = ClothTaskConfig::by_name(name).unwrap();
        [0, 1].map(|d| {
            [
                c.action_center[d] - c.action_half[d],
                c.action_center[d] + c.action_half[d],
            ]
        })
    };
    let close = |a: [[f64; 2]; 2], b: [[f64; 2]; 2]| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() < 1e-4)
    };
    assert!(close(ws("fold-cloth1"), [[0.35, 0.6375], [0.1625, 0.65]]));
    assert!(close(ws("fold-tshirt"), [[0.2, 0.7944], [0.2833, 0.7278]]));
    assert_eq!(
        ClothTask::named("unfold-cloth1").unwrap().goal(),
        &ClothTask::named("unfold-cloth1")
            .unwrap()
            .cloth()
            .initial_state::<f64>()
            .x[..]
    );
}

#[test]
fn the_expert_reaches_the_fold_goal_through_the_action_map() {
    let task = ClothTask::named("fold-cloth1").unwrap();
    let cfg = task.config().clone();
    // the exact rest state, in f64 as the goal script starts from it
    let rest = task.cloth().initial_state::<f64>();
    let mut s: Vec<f64> = rest.x.iter().flatten().copied().collect();
    s.extend(vec![0.0; 3 * task.n_particles()]);
    s.extend(rest.gripper);
    s.push(0.0);
    let r0 = task.reward_row(&s, &[]);
    let mut rewards = vec![];
    for f in ClothTaskConfig::expert_folds("fold-cloth1").unwrap() {
        let p = task.particle_at(f.site).unwrap();
        let to_a = |w: f64, d: usize| (w - cfg.action_center[d]) / cfg.action_half[d];
        let a = [
            to_a(s[3 * p], 0),
            0.0,
            to_a(s[3 * p + 2], 1),
            to_a(f.place[0], 0),
            0.0,
            to_a(f.place[1], 1),
        ];
        assert!(a.iter().all(|x| x.abs() <= 1.0), "{a:?}");
        s = task.step_row(&s, &a);
        rewards.push(task.reward_row(&s, &[]));
    }
    let cd = task.chamfer_row(&s);
    assert!(cd < 1e-4, "the expert ends {cd:e} from its goal");
    assert!(
        rewards[1] > rewards[0] && rewards[0] > r0,
        "{r0} {rewards:?}"
    );
    assert!((rewards[1] - 0.99f64.powi(2) * (-10.0 * cd).exp()).abs() < 1e-12);
    // DaXBench's normalised gradient of the final reward through the last step is finite
    // and reaches the action's x and z entries only
    let mut u = vec![0.0; s.len()];
    task.reward_row_vjp(&s, &[], 1.0, &mut u, &mut []);
    let prev = start_row(&task, 0);
    let a = [0.1, 0.0, -0.8, 0.0, 0.0, 0.5];
    let (mut gs, mut ga) = (vec![0.0; s.len()], vec![0.0; 6]);
    task.step_row_vjp(&prev, &a, &u, &mut gs, &mut ga);
    assert!(gs.iter().chain(&ga).all(|g| g.is_finite()));
    assert!(ga[1] == 0.0 && ga[4] == 0.0);
    assert!(ga[0] != 0.0 || ga[2] != 0.0);
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
        let w = task.world_action(&a);
        let n = task.n_particles();
        prop_assume!(sim_deformable::tasks::common::contact_margin(&[w[0], w[1], w[2]], &s, n, 3) > 1e-3);
        // and the distance itself must stay clear of the kink of ‖e‖ at 0
        prop_assume!(sim_deformable::tasks::testing::nearest_distance(&[w[0], w[1], w[2]], &s, n, 3) > 1e-2);
        sim_deformable::tasks::testing::check_aux_adjoint(task, seed, &a, &u, &v, "cloth aux reward");
    }
}

//! The Brax-like tasks (tasks.md §5, `sim_rigid::tasks::brax`): dimensions, reset noise,
//! termination, rewards at known states against the formulas by hand, and rollouts that
//! stay finite. Their gradients are checked in `gradients.rs` (section "Brax-like
//! tasks"), next to the helpers those checks share.
#![allow(clippy::needless_range_loop)]

use diff_core::rng::seeded;
use sim_rigid::batch::{step_row, RigidTask, RowScratch};
use sim_rigid::tasks::brax::{
    brax_ant_def, brax_cheetah_def, brax_hopper_def, brax_humanoid_def, brax_reacher_def, Reacher,
    HUMANOID_ACTUATORS,
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

fn f64s(s: &[f32]) -> Vec<f64> {
    s.iter().map(|x| *x as f64).collect()
}

#[test]
fn dimensions_and_timesteps_follow_the_brax_table() {
    let h = brax_hopper_def().unwrap();
    let c = brax_cheetah_def().unwrap();
    let a = brax_ant_def().unwrap();
    let r = brax_reacher_def().unwrap();
    // (obs, act, state, dt, substep)
    let rows = [
        (h.spec(), h.sim_params(), 11, 3, 12, 0.008),
        (c.spec(), c.sim_params(), 17, 6, 18, 0.05),
        (a.spec(), a.sim_params(), 27, 8, 29, 0.05),
        (r.spec(), r.sim_params(), 11, 2, 6, 0.02),
    ];
    for (spec, p, obs, act, state, dt) in rows {
        assert_eq!(
            (spec.obs_dim, spec.act_dim, spec.state_dim),
            (obs, act, state),
            "{}",
            spec.name
        );
        assert_eq!(spec.obs_names.len(), obs, "{}", spec.name);
        assert_eq!(spec.state_names.len(), state, "{}", spec.name);
        assert!(
            (spec.dt - dt).abs() < 1e-12 && (p.dt - dt).abs() < 1e-12,
            "{}",
            spec.name
        );
        assert!(
            p.dt / p.substeps as f64 <= 1e-3 + 1e-12,
            "{}: substep",
            spec.name
        );
        assert_eq!(spec.episode_length, 1000);
    }
    // ant: q[2:] (13) + q̇ (14); gears
    assert_eq!(a.articulation().n_q, 15);
    assert_eq!(a.articulation().n_qd, 14);
    let mut act = vec![0.0; 14];
    a.actuation(&[1.0; 8], &mut act);
    assert_eq!(&act[6..], &[150.0; 8]);
    let mut act = vec![0.0; 9];
    c.actuation(&[1.0, -1.0, 1.0, 1.0, 1.0, 2.0], &mut act);
    assert_eq!(&act[3..], &[120.0, -90.0, 60.0, 120.0, 60.0, 30.0]);
    let mut act = vec![0.0; 6];
    h.actuation(&[0.5; 3], &mut act);
    assert_eq!(&act[3..], &[100.0; 3]);
    // hopper's torso starts at 1.25 (Brax's torso body height)
    let mut s = vec![0.0f32; 12];
    h.reset(&mut seeded(0, 0), false, &mut s);
    let mut o = vec![0.0; 11];
    h.observe(&f64s(&s), &mut o);
    assert!((o[0] - 1.25).abs() < 1e-9, "torso height {}", o[0]);
    // halfcheetah's obs[0] is Brax's rootz, 0 at the start
    let mut s = vec![0.0f32; 18];
    c.reset(&mut seeded(0, 0), false, &mut s);
    let mut o = vec![0.0; 17];
    c.observe(&f64s(&s), &mut o);
    assert!(o[0].abs() < 1e-6, "cheetah rootz {}", o[0]);
    let total: f64 = c.articulation().links.iter().map(|l| l.mass).sum();
    assert!((total - 14.0).abs() < 1e-9, "cheetah mass {total}");
    // ant's start observation: z 0.55, identity quaternion (w, x, y, z), rest pose
    let mut s = vec![0.0f32; 29];
    a.reset(&mut seeded(0, 0), false, &mut s);
    let mut o = vec![0.0; 27];
    a.observe(&f64s(&s), &mut o);
    let want = [
        0.55, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0,
    ];
    for k in 0..13 {
        assert!((o[k] - want[k]).abs() < 1e-6, "ant obs[{k}] = {}", o[k]);
    }
}

#[test]
fn reset_noise_ranges() {
    let n = 400;
    // hopper: U(±5e-3) on every q and q̇
    let h = brax_hopper_def().unwrap();
    let mut rng = seeded(1, 0);
    let mut s = vec![0.0f32; 12];
    let mut max = 0.0f32;
    for _ in 0..n {
        h.reset(&mut rng, true, &mut s);
        max = s.iter().fold(max, |m, x| m.max(x.abs()));
    }
    assert!(max <= 5e-3 && max > 4e-3, "hopper noise {max}");
    // cheetah: q U(±0.1) about the start, q̇ 0.1·N(0, 1)
    let c = brax_cheetah_def().unwrap();
    let mut s0 = vec![0.0f32; 18];
    c.reset(&mut rng, false, &mut s0);
    let (mut qmax, mut v2) = (0.0f32, 0.0f64);
    for _ in 0..n {
        s.resize(18, 0.0);
        c.reset(&mut rng, true, &mut s);
        qmax = (0..9).fold(qmax, |m, k| m.max((s[k] - s0[k]).abs()));
        v2 += s[9..].iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
    }
    let std = (v2 / (9 * n) as f64).sqrt();
    assert!(qmax <= 0.1 && qmax > 0.09, "cheetah q noise {qmax}");
    assert!((std - 0.1).abs() < 0.01, "cheetah q̇ noise std {std}");
    // ant: position ±0.1, unit quaternion near the start, joints ±0.1 about the rest pose
    let a = brax_ant_def().unwrap();
    let mut s0 = vec![0.0f32; 29];
    a.reset(&mut rng, false, &mut s0);
    let mut s = vec![0.0f32; 29];
    let mut lifted = 0;
    for _ in 0..n {
        a.reset(&mut rng, true, &mut s);
        let qn: f32 = s[3..7].iter().map(|x| x * x).sum();
        assert!((qn - 1.0).abs() < 1e-5);
        for k in [0, 2].into_iter().chain(7..15) {
            assert!((s[k] - s0[k]).abs() <= 0.1 + 1e-6, "ant q[{k}]");
        }
        // the height: the noise, then lifted until no contact point starts below ground
        assert!(s[1] - s0[1] >= -0.1 - 1e-6, "ant height {}", s[1]);
        let art = a.articulation();
        let q: Vec<f64> = s[..15].iter().map(|&x| f64::from(x)).collect();
        let lowest = art.lowest_contact(&q);
        assert!(lowest > -1e-5, "ant starts {lowest} into the ground");
        lifted += usize::from(s[1] - s0[1] > 0.1 + 1e-6);
        let mut o = vec![0.0; 27];
        a.observe(&f64s(&s), &mut o);
        assert!(o[1] > 0.95, "ant quaternion w {}", o[1]);
    }
    assert!(
        lifted > 0,
        "the noise never sank a foot: the lift is untested"
    );
    // reacher: θ ±0.1, θ̇ ±5e-3, target in the disc of radius 0.2
    let r = brax_reacher_def().unwrap();
    let mut s = vec![0.0f32; 6];
    let mut rmax = 0.0f32;
    for _ in 0..n {
        r.reset(&mut rng, true, &mut s);
        assert!(s[0].abs() <= 0.1 && s[1].abs() <= 0.1);
        assert!(s[2].abs() <= 5e-3 && s[3].abs() <= 5e-3);
        rmax = rmax.max(s[4].hypot(s[5]));
    }
    assert!(rmax <= 0.2 && rmax > 0.18, "reacher target radius {rmax}");
}

#[test]
fn termination_follows_the_healthy_ranges() {
    let h = brax_hopper_def().unwrap();
    let mut s = vec![0.0f32; 12];
    h.reset(&mut seeded(0, 0), false, &mut s);
    assert!(!h.terminated(&s));
    let with = |k: usize, v: f32| {
        let mut t = s.clone();
        t[k] = v;
        h.terminated(&t)
    };
    // torso height = 1.25 + rootz: unhealthy at ≤ 0.7
    assert!(with(1, -0.56) && !with(1, -0.54));
    assert!(with(2, 0.21) && with(2, -0.21) && !with(2, 0.19));
    assert!(with(4, 100.5) && !with(4, 99.0));
    assert!(with(9, -101.0) && !with(9, 99.0));
    // x is not checked; every velocity is
    assert!(!with(0, 500.0) && with(6, 500.0));
    let c = brax_cheetah_def().unwrap();
    assert!(!c.terminated(&[50.0f32; 18]));
    let a = brax_ant_def().unwrap();
    let mut s = vec![0.0f32; 29];
    a.reset(&mut seeded(0, 0), false, &mut s);
    for (z, t) in [
        (0.55, false),
        (0.21, false),
        (0.19, true),
        (0.99, false),
        (1.01, true),
    ] {
        s[1] = z;
        assert_eq!(a.terminated(&s), t, "ant z {z}");
    }
    let r = brax_reacher_def().unwrap();
    assert!(!r.terminated(&[9.0f32; 6]));
}

#[test]
fn rewards_at_known_states_match_the_formulas() {
    // hopper: ẋ + 1 − 1e-3·Σa²
    let h = brax_hopper_def().unwrap();
    let mut s = vec![0.0f64; 12];
    s[6] = 0.7;
    let a = [0.5, -0.2, 1.0];
    let want = 0.7 + 1.0 - 1e-3 * (0.25 + 0.04 + 1.0);
    assert!((h.reward(&s, &a) - want).abs() < 1e-12);
    // observation clips q̇ at ±10
    s[7] = 25.0;
    let mut o = vec![0.0; 11];
    h.observe(&s, &mut o);
    assert_eq!((o[5], o[6]), (0.7, 10.0));
    // halfcheetah: ẋ − 0.1·Σa²
    let c = brax_cheetah_def().unwrap();
    let mut s = vec![0.0f64; 18];
    s[9] = 2.5;
    let a = [0.1, 0.2, -0.3, 0.4, 0.5, -0.6];
    let want = 2.5 - 0.1 * (0.01 + 0.04 + 0.09 + 0.16 + 0.25 + 0.36);
    assert!((c.reward(&s, &a) - want).abs() < 1e-12);
    // ant: torso x velocity (v − p × ω)_x + 1 − 0.5·Σa²
    let an = brax_ant_def().unwrap();
    let mut s = vec![0.0f64; 29];
    (s[0], s[1], s[2]) = (0.3, 0.5, -0.2);
    s[6] = 1.0;
    // ω = (0.1, 0.2, 0.3), v_twist = (1.0, 0, 0)
    (s[15], s[16], s[17], s[18]) = (0.1, 0.2, 0.3, 1.0);
    let a = [0.5; 8];
    let vx = 1.0 - (0.5 * 0.3 - (-0.2) * 0.2);
    let want = vx + 1.0 - 0.5 * 8.0 * 0.25;
    assert!((an.reward(&s, &a) - want).abs() < 1e-12);
    // reacher: −‖tip − target‖ − Σa², tip = (0.1 + 0.11, 0) at θ = 0
    let r = brax_reacher_def().unwrap();
    let s = [0.0, 0.0, 0.0, 0.0, 0.01, 0.04];
    let a = [0.3, -0.4];
    let want = -(0.2f64 * 0.2 + 0.04 * 0.04).sqrt() - 0.25;
    assert!((r.reward(&s, &a) - want).abs() < 1e-12);
    // θ0 = π/2, θ1 = −π/2: tip = (0.11, 0.1); at θ̇ = (1, 0) both links turn at 1 rad/s:
    // tip velocity = 1·ẑ × tip = (−0.1, 0.11)
    let s = [
        std::f64::consts::FRAC_PI_2,
        -std::f64::consts::FRAC_PI_2,
        1.0,
        0.0,
        0.0,
        0.0,
    ];
    let (p, v) = Reacher::tip(&s);
    assert!((p[0] - 0.11).abs() < 1e-12 && (p[1] - 0.1).abs() < 1e-12);
    assert!((v[0] + 0.1).abs() < 1e-12 && (v[1] - 0.11).abs() < 1e-12);
    let mut o = vec![0.0; 11];
    r.observe(&s, &mut o);
    assert!((o[8] - 0.11).abs() < 1e-12 && (o[9] - 0.1).abs() < 1e-12 && o[10] == 0.0);
}

#[test]
fn rollouts_stay_finite_and_the_reacher_target_stays_put() {
    let act = |k: usize, t: usize| (t as f64 * 0.3 + k as f64).sin();
    let check = |name: &str, tr: &[Vec<f64>]| {
        assert!(
            tr.iter().flatten().all(|x| x.is_finite() && x.abs() < 1e4),
            "{name}"
        );
    };
    check(
        "hopper",
        &rollout(&brax_hopper_def().unwrap(), 200, true, act),
    );
    check(
        "cheetah",
        &rollout(&brax_cheetah_def().unwrap(), 40, true, act),
    );
    check("ant", &rollout(&brax_ant_def().unwrap(), 40, true, act));
    let tr = rollout(&brax_reacher_def().unwrap(), 100, true, act);
    check("reacher", &tr);
    assert!(tr.iter().all(|s| s[4] == tr[0][4] && s[5] == tr[0][5]));
    // the arm moves in its plane only: the joints turn, gravity does no work at rest
    let rest = rollout(&brax_reacher_def().unwrap(), 50, false, |_, _| 0.0);
    assert!(rest.last().unwrap()[..4].iter().all(|x| x.abs() < 1e-9));
}

// ---------------------------------------------------------------- brax-humanoid
// Observation layout: [z, quat (4), q_j (17), v (3), ω (3), q̇_j (17)] (0..45), cinert
// (11 × 10, 45..155), cvel (11 × 6, 155..221), qfrc_actuator (23, 221..244).

#[test]
fn humanoid_dimensions_gears_and_bodies() {
    let t = brax_humanoid_def().unwrap();
    let (spec, p, art) = (t.spec(), t.sim_params(), t.articulation());
    assert_eq!((spec.obs_dim, spec.act_dim, spec.state_dim), (244, 17, 64));
    assert_eq!((spec.obs_names.len(), spec.state_names.len()), (244, 64));
    assert!((spec.dt - 0.015).abs() < 1e-12 && (p.dt - 0.015).abs() < 1e-12);
    assert_eq!((p.substeps, p.mm_freq), (15, 3));
    assert_eq!(spec.episode_length, 1000);
    assert_eq!((art.n_q, art.n_qd), (24, 23));
    // 11 bodies with mass (the feet fused into the shins), 2 foot contacts
    assert_eq!(art.links.iter().filter(|l| l.mass > 0.0).count(), 11);
    assert_eq!(art.contacts.len(), 2);
    assert!(art.contacts.iter().all(|c| c.thickness == 0.075));
    // τ = gear·0.4·clip(a), in Brax's actuator order
    let mut act = vec![0.0; 23];
    t.actuation(&[1.5; 17], &mut act);
    assert!(act[..6].iter().all(|x| *x == 0.0));
    for (k, (name, gear)) in HUMANOID_ACTUATORS.iter().enumerate() {
        let link = art.links.iter().find(|l| l.joint.name == *name).unwrap();
        assert!(
            (act[link.qd_start] - 0.4 * gear).abs() < 1e-12,
            "actuator {k} {name}"
        );
    }
    let total: f64 = act.iter().sum();
    assert!((total - 0.4 * 1850.0).abs() < 1e-9);
}

#[test]
fn humanoid_start_observation() {
    let t = brax_humanoid_def().unwrap();
    let art = t.articulation();
    let mut s = vec![0.0f32; 64];
    t.reset(&mut seeded(0, 0), false, &mut s);
    let mut o = vec![0.0; 244];
    t.observe(&f64s(&s), &mut o);
    assert!(
        (o[0] - 1.4).abs() < 1e-6 && (o[1] - 1.0).abs() < 1e-6,
        "z, qw"
    );
    assert!(o[2..45].iter().all(|x| x.abs() < 1e-6), "q_j, q̇ at rest");
    // cinert: body masses in entries 9, symmetric inertias with a positive diagonal
    let masses: Vec<f64> = art
        .links
        .iter()
        .map(|l| l.mass)
        .filter(|m| *m > 0.0)
        .collect();
    for (b, m) in masses.iter().enumerate() {
        let c = &o[45 + 10 * b..55 + 10 * b];
        assert!((c[9] - m).abs() < 1e-9, "body {b} mass");
        for r in 0..3 {
            assert!(c[3 * r + r] > 0.0);
            for k in 0..3 {
                assert!((c[3 * r + k] - c[3 * k + r]).abs() < 1e-9);
            }
        }
    }
    // cvel and qfrc_actuator vanish at rest
    assert!(o[155..244].iter().all(|x| *x == 0.0));
}

#[test]
fn humanoid_reset_noise_and_healthy_range() {
    let t = brax_humanoid_def().unwrap();
    let mut s0 = vec![0.0f32; 64];
    t.reset(&mut seeded(0, 0), false, &mut s0);
    let mut rng = seeded(2, 0);
    let mut s = vec![1.0f32; 64];
    let (mut qmax, mut jvmax) = (0.0f32, 0.0f32);
    for _ in 0..400 {
        t.reset(&mut rng, true, &mut s);
        qmax = (0..3)
            .chain(7..24)
            .fold(qmax, |m, k| m.max((s[k] - s0[k]).abs()));
        jvmax = (30..47).fold(jvmax, |m, k| m.max(s[k].abs()));
        // the previous action starts at 0
        assert!(s[47..].iter().all(|x| *x == 0.0));
        let n: f32 = s[3..7].iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }
    assert!(qmax <= 0.01 + 1e-6 && qmax > 0.009, "q noise {qmax}");
    assert!(jvmax <= 0.01 + 1e-6 && jvmax > 0.009, "q̇ noise {jvmax}");
    for (z, done) in [
        (1.4, false),
        (1.01, false),
        (0.99, true),
        (1.99, false),
        (2.01, true),
    ] {
        s0[1] = z;
        assert_eq!(t.terminated(&s0), done, "humanoid z {z}");
    }
}

#[test]
fn humanoid_reward_and_actuator_forces_by_hand() {
    let t = brax_humanoid_def().unwrap();
    let art = t.articulation().clone();
    let mut s32 = vec![0.0f32; 64];
    t.reset(&mut seeded(0, 0), false, &mut s32);
    let mut s = f64s(&s32);
    let a: Vec<f64> = (0..17).map(|k| 0.1 * k as f64 - 0.8).collect();
    let ctrl = 0.1 * a.iter().map(|x| (0.4 * x) * (0.4 * x)).sum::<f64>();
    // pure translation: every body moves at v, ẋ_COM = v_x
    s[27] = 0.7;
    assert!((t.reward(&s, &a) - (1.25 * 0.7 + 5.0 - ctrl)).abs() < 1e-12);
    // add a spin ω about the world vertical: ẋ_COM = (v + ω × c)_x with c the COM
    (s[24], s[25], s[26]) = (0.0, 0.5, 0.0);
    let xs = art.link_transforms(&s[..24]);
    let mass: f64 = art.links.iter().map(|l| l.mass).sum();
    let c: Vec<f64> = (0..3)
        .map(|k| {
            art.links
                .iter()
                .zip(&xs)
                .map(|(l, x)| l.mass * x.point(l.com)[k])
                .sum::<f64>()
                / mass
        })
        .collect();
    let vx = 0.7 + 0.5 * c[2]; // (ω × c)_x = ω_y c_z − ω_z c_y
    assert!((t.reward(&s, &a) - (1.25 * vx + 5.0 - ctrl)).abs() < 1e-12);
    // qfrc_actuator: gear·0.4·(previous action) on the actuated DOFs
    s[47..].copy_from_slice(&a);
    let mut o = vec![0.0; 244];
    t.observe(&s, &mut o);
    let mut want = vec![0.0; 23];
    t.actuation(&a, &mut want);
    for d in 0..23 {
        assert!((o[221 + d] - want[d]).abs() < 1e-12, "qfrc[{d}]");
    }
    // the step stores the clipped action
    let mut sc = RowScratch::<f64>::new(&t);
    let mut next = vec![0.0; 64];
    let big: Vec<f64> = a.iter().map(|x| 2.0 * x).collect();
    step_row(&t, &s, &big, &mut next, &mut sc);
    for k in 0..17 {
        assert_eq!(next[47 + k], big[k].clamp(-1.0, 1.0));
    }
}

#[test]
fn humanoid_rollouts_with_random_actions_stay_finite() {
    let t = brax_humanoid_def().unwrap();
    let mut seed = 7u64;
    let mut rand = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let acts: Vec<Vec<f64>> = (0..100)
        .map(|_| (0..17).map(|_| rand()).collect())
        .collect();
    let tr = rollout(&t, 100, true, |k, step| acts[step][k]);
    assert!(tr.iter().flatten().all(|x| x.is_finite() && x.abs() < 1e3));
    let tr = rollout(&t, 100, true, |k, step| {
        (step as f64 * 0.3 + k as f64).sin()
    });
    assert!(tr.iter().flatten().all(|x| x.is_finite() && x.abs() < 1e3));
}

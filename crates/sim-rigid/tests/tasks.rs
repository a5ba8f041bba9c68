//! The DiffRL locomotion tasks built from the shipped model files: dimensions, the
//! observation and reward at the start state (values computed by hand from tasks.md), and
//! zero-action rollouts that stay finite and physical.

use diff_core::{seeded, Task};
use ndarray::{Array1, Array2, Axis};
use sim_rigid::tasks::{Ant, HalfCheetah, Hopper, Humanoid};

fn rollout(task: &dyn Task, steps: usize) -> Vec<Array1<f32>> {
    rollout_with(task, steps, &vec![0.0; task.spec().act_dim])
}

/// The deterministic start state stepped `steps` times under the constant `action`.
fn rollout_with(task: &dyn Task, steps: usize, action: &[f32]) -> Vec<Array1<f32>> {
    let spec = task.spec();
    let mut rng = seeded(0, 0);
    let mut s = Array2::<f32>::zeros((1, spec.state_dim));
    task.reset_state(&mut rng, false, s.row_mut(0));
    let a = Array2::from_shape_vec((1, spec.act_dim), action.to_vec()).unwrap();
    let mut out = vec![s.row(0).to_owned()];
    for _ in 0..steps {
        let mut n = Array2::<f32>::zeros((1, spec.state_dim));
        task.step(s.view(), a.view(), n.view_mut());
        s = n;
        out.push(s.row(0).to_owned());
    }
    out
}

fn obs_reward(task: &dyn Task, s: &Array1<f32>) -> (Vec<f32>, f32) {
    let sp = task.spec();
    let mut o = Array2::<f32>::zeros((1, sp.obs_dim));
    task.observe(s.view().insert_axis(Axis(0)), o.view_mut());
    let mut r = Array1::<f32>::zeros(1);
    let a = Array2::<f32>::zeros((1, sp.act_dim));
    task.reward(s.view().insert_axis(Axis(0)), a.view(), r.view_mut());
    (o.row(0).to_vec(), r[0])
}

#[test]
fn dimensions_match_diffrl() {
    let dims = |t: &dyn Task| {
        let s = t.spec();
        (s.state_dim, s.obs_dim, s.act_dim, s.episode_length)
    };
    // state = [q, q̇] (+ previous action for the free-base tasks)
    assert_eq!(dims(&Ant::ant()), (15 + 14 + 8, 37, 8, 1000));
    assert_eq!(dims(&Humanoid::humanoid()), (28 + 27 + 21, 76, 21, 1000));
    assert_eq!(dims(&Hopper::hopper()), (12, 11, 3, 1000));
    assert_eq!(dims(&HalfCheetah::half_cheetah()), (18, 17, 6, 1000));
}

#[test]
fn start_observations_and_rewards() {
    // Ant: h 0.75, upright (up 1), heading along the target (1), reward
    // 0 + 0.1·1 + 1 + (0.75 − 0.27) = 1.58
    let ant = Ant::ant();
    let (o, r) = obs_reward(&ant, &rollout(&ant, 0)[0]);
    assert!((o[0] - 0.75).abs() < 1e-6 && (o[27] - 1.0).abs() < 1e-6 && (o[28] - 1.0).abs() < 1e-6);
    assert_eq!(&o[11..19], &[0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0]);
    assert!((r - 1.58).abs() < 1e-5, "ant start reward {r}");
    // Humanoid: height term clip(1.35 − 0.84, −1, 0.1)·10 = 1, reward 0.1 + 1 + 1 = 2.1
    let hum = Humanoid::humanoid();
    let (o, r) = obs_reward(&hum, &rollout(&hum, 0)[0]);
    assert!((o[0] - 1.35).abs() < 1e-6 && (o[53] - 1.0).abs() < 1e-6);
    assert!((r - 2.1).abs() < 1e-5, "humanoid start reward {r}");
    // Hopper: height term clip(0 + 0.3, −1, 0.3) = 0.3, angle term 1: reward 1.3
    let hop = Hopper::hopper();
    let (_, r) = obs_reward(&hop, &rollout(&hop, 0)[0]);
    assert!((r - 1.3).abs() < 1e-6, "hopper start reward {r}");
    // Cheetah: obs[0] is rootz = −0.2 at the start
    let ch = HalfCheetah::half_cheetah();
    let (o, r) = obs_reward(&ch, &rollout(&ch, 0)[0]);
    assert!((o[0] + 0.2).abs() < 1e-6 && r.abs() < 1e-6);
}

#[test]
fn zero_action_rollouts_stay_physical() {
    // two seconds without actuation: the Ant's legs fold under its weight (no joint
    // stiffness), the Humanoid falls, the Hopper balances on its foot; nothing explodes
    // and nothing sinks through the ground
    for (name, task, min_h) in [
        ("ant", Box::new(Ant::ant()) as Box<dyn Task>, 0.1f32),
        ("humanoid", Box::new(Humanoid::humanoid()), 0.05),
    ] {
        let traj = rollout(task.as_ref(), 120);
        assert!(
            traj.iter()
                .all(|s| s.iter().all(|x| x.is_finite() && x.abs() < 1e3)),
            "{name}"
        );
        let h_end = traj.last().unwrap()[1];
        assert!(
            h_end > min_h && h_end < traj[0][1],
            "{name}: torso height {h_end}"
        );
    }
    let hop = Hopper::hopper();
    let traj = rollout(&hop, 120);
    assert!(traj.iter().all(|s| s[1] > -0.1), "hopper stays up");
    let ch = HalfCheetah::half_cheetah();
    let traj = rollout(&ch, 120);
    let z = traj.last().unwrap()[1];
    assert!(
        z < -0.2 && z > -0.6,
        "cheetah settles on its legs, rootz {z}"
    );
}

#[test]
fn bruce_loads_stands_on_its_soles_and_matches_its_reward() {
    use sim_rigid::tasks::Bruce;
    let t = Bruce::bruce();
    let def = t.def();
    let sp = t.spec();
    // free base + 10 leg joints; 4 sole points per foot; URDF masses (arms welded on)
    assert_eq!(
        (sp.state_dim, sp.obs_dim, sp.act_dim),
        (17 + 16 + 10, 43, 10)
    );
    assert_eq!(def.cfg.art.contacts.len(), 8);
    let mass: f64 = def.cfg.art.links.iter().map(|l| l.mass).sum();
    assert!((mass - 4.6459).abs() < 1e-3, "total mass {mass}");
    // the start height puts the soles 1 mm above the ground: ≈ 0.47 m of leg
    let h0 = def.cfg.start_pos[1];
    assert!(h0 > 0.4 && h0 < 0.55, "start height {h0}");
    // reward at rest: 0.1·up + heading + height term clip(h0 − (0.55 h0 + 0.05), −1, 0.05)·10
    let s0 = &rollout(&t, 0)[0];
    let (o, r) = obs_reward(&t, s0);
    assert!((o[0] as f64 - h0).abs() < 1e-6);
    assert!((r - 1.6).abs() < 1e-5, "start reward {r}");
    // the first steps settle onto the soles without bouncing off or sinking far
    let traj = rollout(&t, 10);
    let h = traj.last().unwrap()[1] as f64;
    assert!(
        h < h0 && h > h0 - 0.02,
        "height after 10 steps {h} (start {h0})"
    );
}
#[test]
fn bruce_with_the_position_loop_spring_stands_without_actions() {
    // `bruce-pd`: joint springs kp 100, kd 2 toward the straight-leg pose hold the robot up
    // with zero torque for 5 s (the standing-still baseline of the walking task); pure
    // torque control (`bruce`) falls within 2 s
    use sim_rigid::batch::RigidEnv;
    use sim_rigid::tasks::bruce::{bruce_def, BruceConfig};
    let pd = RigidEnv::from_def(bruce_def(&BruceConfig::position_loop()).unwrap());
    let traj = rollout(&pd, 300);
    let h0 = traj[0][1];
    assert!(traj.iter().all(|s| s[1] > h0 - 0.02), "bruce-pd fell");
    let free = RigidEnv::from_def(bruce_def(&BruceConfig::default()).unwrap());
    let traj = rollout(&free, 120);
    assert!(
        traj.last().unwrap()[1] < 0.5 * h0,
        "bruce without springs stood up"
    );
}

#[test]
fn bruce_position_control_tracks_joint_targets() {
    // `bruce-pos`: the action is a joint target offset of 0.5 rad per unit, tracked by the
    // kp 100, kd 2 loop; bending both knees by 0.3 rad (a = 0.6) settles within a few
    // hundredths of a radian of 0.3 while the robot stays on its feet
    use sim_rigid::batch::RigidEnv;
    use sim_rigid::tasks::bruce::{bruce_def, BruceConfig, LEG_JOINTS};
    let pos = RigidEnv::from_def(bruce_def(&BruceConfig::position_targets()).unwrap());
    assert_eq!(pos.spec().name, "bruce-pos");
    let knees: Vec<usize> = LEG_JOINTS
        .iter()
        .enumerate()
        .filter(|(_, n)| n.starts_with("knee"))
        .map(|(k, _)| k)
        .collect();
    let mut action = vec![0.0f32; 10];
    for &k in &knees {
        action[k] = 0.6;
    }
    let traj = rollout_with(&pos, 60, &action);
    let last = traj.last().unwrap();
    for &k in &knees {
        let q = last[7 + k];
        assert!((q - 0.3).abs() < 0.05, "knee {k} at {q} rad, target 0.3");
    }
    assert!(
        last[1] > 0.7 * traj[0][1],
        "crouching bruce fell: {}",
        last[1]
    );
}

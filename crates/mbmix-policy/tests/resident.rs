//! A SHAC window whose states stay with the simulator (a `ResidentWindow`, issue 7) trains
//! exactly like the host window engine over the same kernels: the kernels' host build
//! (`KernelEnv::host`) with and without its resident window, bit for bit, on tasks with
//! extra state (Ant's previous action), early termination and resets (Hopper) and angle
//! wrapping (CartPole). On a GPU the same `ResidentRigid` runs with device buffers; its
//! parity with the host build is `sim-rigid`'s GPU test.

use diff_core::Task;
use mbmix_policy::{Shac, ShacConfig};
use sim_rigid::batch::{KernelEnv, RigidTask};
use std::sync::Arc;

fn config() -> ShacConfig {
    ShacConfig {
        num_envs: 8,
        horizon: 16,
        max_epochs: 6,
        actor_units: vec![16, 16],
        critic_units: vec![16, 16],
        critic_iterations: 2,
        ..ShacConfig::default()
    }
}

/// Trains two agents for `epochs` epochs, one with the resident window and one without,
/// and checks every epoch's statistics, the actor, the critic, the observation statistics
/// and the env states for equality. Returns whether an episode ended (a reset).
fn same_training<D: RigidTask>(name: &str, def: impl Fn() -> D, epochs: usize) -> bool {
    let resident: Arc<dyn Task> = Arc::new(KernelEnv::host(def()).unwrap());
    let host: Arc<dyn Task> = Arc::new(KernelEnv::host(def()).unwrap().with_resident(None));
    let mut a = Shac::new(config(), resident, 3).unwrap();
    let mut b = Shac::new(config(), host, 3).unwrap();
    assert!(
        a.resident_window().is_some(),
        "{name}: the host kernels offer a resident window"
    );
    assert!(b.resident_window().is_none());
    let mut ended = false;
    for e in 0..epochs {
        let sa = a.train_epoch().unwrap();
        let sb = b.train_epoch().unwrap();
        let ja = serde_json::to_string(&sa).unwrap();
        let jb = serde_json::to_string(&sb).unwrap();
        assert_eq!(ja, jb, "{name}: epoch {e} statistics differ");
        assert!(sa.actor_grad_norm.is_finite() && sa.actor_grad_norm > 0.0);
        ended |= sa.mean_train_return.is_some();
    }
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(
        bits(a.actor().params_flat()),
        bits(b.actor().params_flat()),
        "{name}: actors differ"
    );
    assert_eq!(
        bits(a.critic().params_flat()),
        bits(b.critic().params_flat()),
        "{name}: critics differ"
    );
    assert_eq!(
        a.obs_rms().map(|r| r.mean.clone()),
        b.obs_rms().map(|r| r.mean.clone())
    );
    let (xa, xb) = (a.env_state(), b.env_state());
    assert_eq!(
        bits(xa.iter().copied().collect()),
        bits(xb.iter().copied().collect()),
        "{name}: the states downloaded at the window's end differ from the host's"
    );
    ended
}

#[test]
fn resident_window_trains_like_the_host_window_on_ant() {
    same_training("ant", || sim_rigid::tasks::ant::ant_def().unwrap(), 2);
}

#[test]
fn resident_window_trains_like_the_host_window_through_resets() {
    let ended = same_training(
        "hopper",
        || sim_rigid::tasks::hopper::hopper_def().unwrap(),
        6,
    );
    assert!(ended, "hopper: no episode ended, so no reset was exercised");
}

#[test]
fn resident_window_trains_like_the_host_window_on_cartpole() {
    same_training("cartpole", sim_rigid::tasks::CartPole::new, 3);
}

#[test]
fn mbmix_keeps_its_window_on_the_host() {
    use mbmix_policy::{MbMix, MbMixConfig};
    let task: Arc<dyn Task> = Arc::new(KernelEnv::host(sim_rigid::tasks::CartPole::new()).unwrap());
    let cfg = MbMixConfig {
        shac: config(),
        ..MbMixConfig::default()
    };
    let agent = MbMix::new(cfg, task, 0).unwrap();
    assert!(agent.shac().resident_window().is_none());
}

/// BPTT and PPO over the resident window train like over the host window.
#[test]
fn bptt_and_ppo_train_like_the_host_window() {
    use mbmix_policy::{Bptt, BpttConfig, Ppo, PpoConfig};
    let def = || sim_rigid::tasks::hopper::hopper_def().unwrap();
    let tasks = || -> (Arc<dyn Task>, Arc<dyn Task>) {
        (
            Arc::new(KernelEnv::host(def()).unwrap()),
            Arc::new(KernelEnv::host(def()).unwrap().with_resident(None)),
        )
    };
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let cfg = BpttConfig {
        num_envs: 8,
        horizon: 24,
        max_epochs: 3,
        actor_units: vec![16, 16],
        ..BpttConfig::default()
    };
    let (ra, rb) = tasks();
    let (mut a, mut b) = (
        Bptt::new(cfg.clone(), ra, 1).unwrap(),
        Bptt::new(cfg, rb, 1).unwrap(),
    );
    for e in 0..3 {
        let (sa, sb) = (a.train_epoch().unwrap(), b.train_epoch().unwrap());
        assert_eq!(
            serde_json::to_string(&sa).unwrap(),
            serde_json::to_string(&sb).unwrap(),
            "bptt epoch {e}"
        );
    }
    assert_eq!(bits(a.actor().params_flat()), bits(b.actor().params_flat()));
    let cfg = PpoConfig {
        num_envs: 8,
        horizon: 16,
        max_epochs: 3,
        ..PpoConfig::default()
    };
    let (ra, rb) = tasks();
    let (mut a, mut b) = (
        Ppo::new(cfg.clone(), ra, 1).unwrap(),
        Ppo::new(cfg, rb, 1).unwrap(),
    );
    for e in 0..3 {
        let (sa, sb) = (a.train_epoch().unwrap(), b.train_epoch().unwrap());
        assert_eq!(
            serde_json::to_string(&sa).unwrap(),
            serde_json::to_string(&sb).unwrap(),
            "ppo epoch {e}"
        );
    }
    assert_eq!(bits(a.actor().params_flat()), bits(b.actor().params_flat()));
}

//! The registries: tasks and algorithms by name.
//!
//! Adding a task is one line in [`TASKS`] (its constructor and its per-algorithm
//! hyperparameter presets); adding an algorithm is one line in [`ALGORITHMS`], one variant
//! of [`Algo`] and its arm in [`crate::trainer::build`].

use diff_core::{Error as CoreError, Task};
use mbmix_policy::{
    BpttConfig, MbMixConfig, MixConfig, PpoConfig, Reading, RolloutConfig, ShacConfig,
};
use std::sync::Arc;

/// A registered task.
pub struct TaskEntry {
    /// Registry name, as given to `--task`.
    pub name: &'static str,
    /// One line for `mbmix list`.
    pub description: &'static str,
    /// Builds the task (its immutable model, shared by all envs); fails with the loader's
    /// error when a robot file is missing or malformed.
    pub build: fn() -> Result<Arc<dyn Task>, CoreError>,
    /// SHAC hyperparameters for this task (algorithms.md §1.6).
    pub shac_preset: fn() -> ShacConfig,
}

/// Every task the CLI knows, in listing order.
pub static TASKS: &[TaskEntry] = &[
    TaskEntry {
        name: "cartpole-swingup",
        description: "CartPole swing-up (DiffRL, tasks.md §2.2)",
        build: || Ok(Arc::new(sim_rigid::tasks::CartPoleSwingUp::new())),
        // `ShacConfig::default()` is the paper's CartPole setting.
        shac_preset: ShacConfig::default,
    },
    TaskEntry {
        name: "hopper",
        description: "Hopper, planar one-legged hopping (DiffRL, tasks.md §2.3)",
        build: || rigid(sim_rigid::tasks::hopper::hopper_def()),
        shac_preset: shac_hopper,
    },
    TaskEntry {
        name: "half-cheetah",
        description: "HalfCheetah, planar running (DiffRL, tasks.md §2.4)",
        build: || rigid(sim_rigid::tasks::cheetah::cheetah_def()),
        shac_preset: shac_cheetah,
    },
    TaskEntry {
        name: "ant",
        description: "Ant, four-legged running (DiffRL, tasks.md §2.5)",
        build: || rigid(sim_rigid::tasks::ant::ant_def()),
        shac_preset: shac_ant,
    },
    TaskEntry {
        name: "humanoid",
        description: "Humanoid, 21-DOF running (DiffRL, tasks.md §2.6)",
        build: || rigid(sim_rigid::tasks::humanoid::humanoid_def()),
        shac_preset: shac_humanoid,
    },
    TaskEntry {
        name: "bruce",
        description: "Bruce humanoid walking, 10 leg joints (tasks.md §6.3, our proposal)",
        build: || rigid(sim_rigid::tasks::bruce::bruce_def(&Default::default())),
        // inferred: the Humanoid preset (MB-MIX's Bruce settings are unknown)
        shac_preset: shac_humanoid,
    },
    TaskEntry {
        name: "bruce-pd",
        description: "Bruce with a PD spring on every joint (the hardware's position loop) and torques on top",
        build: || {
            rigid(sim_rigid::tasks::bruce::bruce_def(
                &sim_rigid::tasks::bruce::BruceConfig::position_loop(),
            ))
        },
        shac_preset: shac_humanoid,
    },
    TaskEntry {
        name: "bruce-pos",
        description: "Bruce under position control: actions set joint targets (±0.5 rad) of a kp 100, kd 2 PD loop",
        build: || {
            rigid(sim_rigid::tasks::bruce::bruce_def(
                &sim_rigid::tasks::bruce::BruceConfig::position_targets(),
            ))
        },
        shac_preset: shac_bruce_pos,
    },
    TaskEntry {
        name: "brax-hopper",
        description: "Hopper with Brax's obs/reward/termination, dt 0.008, gear 200, on our simulator (tasks.md §5)",
        build: || rigid(sim_rigid::tasks::brax::brax_hopper_def()),
        shac_preset: shac_hopper,
    },
    TaskEntry {
        name: "brax-halfcheetah",
        description: "HalfCheetah with Brax's obs/reward, dt 0.05, gears 120/90/60/120/60/30, on our simulator (tasks.md §5)",
        build: || rigid(sim_rigid::tasks::brax::brax_cheetah_def()),
        shac_preset: shac_cheetah,
    },
    TaskEntry {
        name: "brax-ant",
        description: "Ant with Brax's 27-D obs, reward and healthy range, dt 0.05, gear 150, on our simulator (tasks.md §5)",
        build: || rigid(sim_rigid::tasks::brax::brax_ant_def()),
        shac_preset: shac_ant,
    },
    TaskEntry {
        name: "brax-reacher",
        description: "Reacher, 2-link arm to a random target, Brax's obs/reward, dt 0.02, gear 200 (tasks.md §5)",
        build: || rigid(sim_rigid::tasks::brax::brax_reacher_def()),
        shac_preset: shac_reacher,
    },
    TaskEntry {
        name: "brax-humanoid",
        description: "Humanoid (Brax's model, 17 hinges) with Brax's 244-D obs (COM inertia/velocity, actuator forces), COM-velocity reward and healthy range, dt 0.015, gears x 0.4 (tasks.md §5)",
        build: || rigid(sim_rigid::tasks::brax::brax_humanoid_def()),
        shac_preset: shac_humanoid,
    },
    TaskEntry {
        name: "push-rope",
        description: "Push an elasto-plastic rope into an arc with a box pusher, MLS-MPM (DaXBench shape_rope, tasks.md §7.2)",
        build: || Ok(Arc::new(sim_deformable::tasks::RowEnv(sim_deformable::tasks::PushRope::new()?))),
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "push-rope-hard",
        description: "push-rope with 20 pushes and a rope scrambled by 10 random pushes (DaXBench shape_rope_hard)",
        build: || {
            Ok(Arc::new(sim_deformable::tasks::RowEnv(
                sim_deformable::tasks::PushRope::with_config(
                    sim_deformable::tasks::PushRopeConfig::hard(),
                )?,
            )))
        },
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "fold-cloth1",
        description: "Fold a mass-spring cloth in half by pick-and-place, 3 steps (DaXBench fold_cloth1, tasks.md §7.2)",
        build: || cloth("fold-cloth1"),
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "fold-cloth3",
        description: "Fold the cloth in thirds by pick-and-place, 4 steps (DaXBench fold_cloth3)",
        build: || cloth("fold-cloth3"),
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "unfold-cloth1",
        description: "Flatten a cloth folded once at random, μ 3, 15 steps (DaXBench unfold_cloth1)",
        build: || cloth("unfold-cloth1"),
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "unfold-cloth3",
        description: "Flatten a cloth folded three times at random, μ 3, 15 steps (DaXBench unfold_cloth3)",
        build: || cloth("unfold-cloth3"),
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "fold-tshirt",
        description: "Fold a 3574-particle T-shirt (sleeves in, then in half), 5 steps (DaXBench fold_tshirt)",
        build: || cloth("fold-tshirt"),
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "whip-rope",
        description: "Whip an elastic rope into a goal shape with a position-controlled gripper, MLS-MPM (DaXBench whip_rope)",
        build: || {
            Ok(Arc::new(sim_deformable::tasks::RowEnv(
                sim_deformable::tasks::WhipRope::new()?,
            )))
        },
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "pour-water",
        description: "Carry and tilt a bowl to pour 702 liquid particles into a second bowl, MLS-MPM, 100 steps (DaXBench pour_water)",
        build: || pour("pour-water"),
        shac_preset: shac_daxbench,
    },
    TaskEntry {
        name: "pour-soup",
        description: "Pour a soup (liquid, two tofu cubes, a broccoli; 7631 particles) into a second bowl, MLS-MPM, 120 steps (DaXBench pour_soup)",
        build: || pour("pour-soup"),
        shac_preset: shac_daxbench,
    },
];

/// A registered pouring task (`sim_deformable::tasks::pour`) by name.
fn pour(name: &str) -> Result<Arc<dyn Task>, CoreError> {
    Ok(Arc::new(sim_deformable::tasks::RowEnv(
        sim_deformable::tasks::Pour::new(name)?,
    )))
}

/// A registered cloth task (`sim_deformable::tasks::cloth_tasks`) by name.
fn cloth(name: &str) -> Result<Arc<dyn Task>, CoreError> {
    Ok(Arc::new(sim_deformable::tasks::RowEnv(
        sim_deformable::tasks::ClothTask::named(name)?,
    )))
}

/// A rigid task definition (or its loader error) as a batched task.
fn rigid<D: sim_rigid::batch::RigidTask>(
    def: Result<D, CoreError>,
) -> Result<Arc<dyn Task>, CoreError> {
    Ok(Arc::new(sim_rigid::batch::RigidEnv::from_def(def?)))
}

/// The DiffRL SHAC settings shared by the locomotion tasks (tasks.md §3): 2000 epochs,
/// actor [128, 64, 32], critic [64, 64], actor lr 2e-3, α 0.2, 64 envs.
fn shac_locomotion() -> ShacConfig {
    ShacConfig {
        max_epochs: 2000,
        actor_units: vec![128, 64, 32],
        critic_units: vec![64, 64],
        actor_lr: 2e-3,
        critic_lr: 2e-3,
        target_critic_alpha: 0.2,
        num_envs: 64,
        ..ShacConfig::default()
    }
}

/// `examples/cfg/shac/hopper.yaml`: 256 envs, critic lr 2e-4.
fn shac_hopper() -> ShacConfig {
    ShacConfig {
        num_envs: 256,
        critic_lr: 2e-4,
        ..shac_locomotion()
    }
}

/// `examples/cfg/shac/cheetah.yaml`.
fn shac_cheetah() -> ShacConfig {
    shac_locomotion()
}

/// `examples/cfg/shac/ant.yaml`.
fn shac_ant() -> ShacConfig {
    shac_locomotion()
}

/// `examples/cfg/shac/humanoid.yaml`: actor [256, 128], critic [128, 128], critic lr
/// 5e-4, target critic α 0.995.
fn shac_humanoid() -> ShacConfig {
    ShacConfig {
        actor_units: vec![256, 128],
        critic_units: vec![128, 128],
        critic_lr: 5e-4,
        target_critic_alpha: 0.995,
        ..shac_locomotion()
    }
}

/// `brax-reacher` (ours, inferred; DiffRL has no reacher): the CartPole defaults with 64
/// envs.
fn shac_reacher() -> ShacConfig {
    ShacConfig {
        num_envs: 64,
        ..ShacConfig::default()
    }
}

/// `bruce-pos` (ours): Humanoid's settings with 16-step windows, exploration σ = e^−1.6 ≈
/// 0.2, 4000 epochs (two of three seeds only took off after epoch 1200), and non-finite
/// actor gradients skipped. With h = 32 and σ = 0.37 SHAC did not
/// learn to stay up (evaluation return ≈ 100 after 1330 epochs, below zero action's 373);
/// with these it runs (BENCHMARKS.md, "Bruce"). One exploding gradient (norm 3e6) once
/// aborted a Bruce run, hence `skip`.
fn shac_bruce_pos() -> ShacConfig {
    ShacConfig {
        horizon: 16,
        max_epochs: 4000,
        actor_logstd_init: -1.6,
        on_nonfinite_grad: mbmix_policy::NonFiniteGradPolicy::Skip,
        ..shac_humanoid()
    }
}

/// DaXBench's `algorithms/shac/cfg/shac.yaml`: DiffRL's Ant settings with one-step
/// windows (`steps_num 1`) and 3000 epochs.
fn shac_daxbench() -> ShacConfig {
    ShacConfig {
        horizon: 1,
        max_epochs: 3000,
        critic_batches: 4,
        ..shac_locomotion()
    }
}

/// The BPTT hyperparameters for a task (DiffRL `examples/cfg/bptt/<task>.yaml`; the tasks
/// DiffRL has no config for take the Humanoid one, inferred). Unknown names get the
/// CartPole default.
pub fn bptt_preset(task: &str) -> BpttConfig {
    let locomotion = |actor_lr: f64, horizon: usize| BpttConfig {
        num_envs: 32,
        horizon,
        max_epochs: 2000,
        actor_units: vec![128, 64, 32],
        actor_lr,
        obs_rms: true,
        ..BpttConfig::default()
    };
    match task {
        // `bptt/hopper.yaml`, `bptt/cheetah.yaml`: 128-step windows.
        "hopper" | "brax-hopper" => locomotion(1e-3, 128),
        "half-cheetah" | "brax-halfcheetah" => locomotion(2e-3, 128),
        // `bptt/ant.yaml` (algorithms.md §1.6): the full 1000-step episode.
        "ant" | "brax-ant" => locomotion(4e-3, 1000),
        // `bptt/humanoid.yaml`; Bruce inferred.
        "humanoid" | "brax-humanoid" | "bruce" | "bruce-pd" => BpttConfig {
            actor_units: vec![256, 128],
            ..locomotion(2e-3, 1000)
        },
        // DaXBench's APG (`algorithms/apg/apg.py`): 4 envs, lr 1e-4 decayed linearly to
        // 1e-5, gradient norm ≤ 0.3, normalised observations, whole episodes; 2000
        // iterations; training envs with `aux_reward=True` (exp(−contact distance) of the
        // pick / push start, weight 1; the tasks without one ignore it). The policy network is not specified there: DiffRL's [128, 64, 32].
        // The window is the whole episode (the cloth tasks' horizons: 3, 4, 15, 15, 5;
        // whip-rope 70; pour-water 100, pour-soup 120).
        "push-rope" | "push-rope-hard" | "fold-cloth1" | "fold-cloth3" | "unfold-cloth1"
        | "unfold-cloth3" | "fold-tshirt" | "whip-rope" | "pour-water" | "pour-soup" => {
            BpttConfig {
                num_envs: 4,
                horizon: match task {
                    "push-rope" => 6,
                    "push-rope-hard" => 20,
                    "fold-cloth1" => 3,
                    "fold-cloth3" => 4,
                    "fold-tshirt" => 5,
                    "whip-rope" => 70,
                    "pour-water" => 100,
                    "pour-soup" => 120,
                    _ => 15, // unfold-cloth1, unfold-cloth3
                },
                max_epochs: 2000,
                actor_units: vec![128, 64, 32],
                actor_lr: 1e-4,
                lr_final: 1e-5,
                grad_norm: 0.3,
                obs_rms: true,
                aux_reward: 1.0,
                ..BpttConfig::default()
            }
        }
        // `bptt/cartpole_swing_up.yaml` is the default.
        _ => BpttConfig::default(),
    }
}

/// The PPO hyperparameters for a task (DiffRL `examples/cfg/ppo/<task>.yaml`, rl_games;
/// Bruce takes Humanoid's, inferred). The locomotion presets keep DiffRL's 1024–2048
/// envs; scale `num_envs` down in a config file on a small machine.
pub fn ppo_preset(task: &str) -> PpoConfig {
    let locomotion = |num_envs: usize, units: Vec<usize>| PpoConfig {
        num_envs,
        horizon: 32,
        max_epochs: 5000,
        actor_units: units.clone(),
        critic_units: units,
        ..PpoConfig::default()
    };
    match task {
        "hopper" | "half-cheetah" | "brax-hopper" | "brax-halfcheetah" => {
            locomotion(1024, vec![128, 64, 32])
        }
        "ant" | "brax-ant" => locomotion(2048, vec![128, 64, 32]),
        "humanoid" | "brax-humanoid" | "bruce" | "bruce-pd" => locomotion(1024, vec![256, 128, 64]),
        // `ppo/cartpole_swing_up.yaml` is the default.
        _ => PpoConfig::default(),
    }
}

/// A learning algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    /// Short-Horizon Actor-Critic (algorithms.md §1).
    Shac,
    /// MB-MIX (algorithms.md §3) with the preset of one of its variants.
    MbMix(MbMixPreset),
    /// Backpropagation through time / analytic policy gradient (DiffRL `bptt.py`).
    Bptt,
    /// Proximal Policy Optimisation with rl_games' settings (model-free reference).
    Ppo,
}

/// The registered MB-MIX presets: the method and its ablations (algorithms.md §3.12). All
/// share the `[mbmix]` section; each is only a different preset under the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MbMixPreset {
    /// The method: reading A, λ_mix 0.95, Sobolev model.
    Full,
    /// "Without mixing": λ_mix = 1 (SHAC's h-step objective on both rollouts).
    NoMix,
    /// "Without model": reading `sim_only` (SHAC + λ-mix).
    NoModel,
    /// "Without Sobolev": the model trained on next states only (`sobolev.form = none`).
    Mse,
}

/// The MB-MIX configuration of `task` for a preset: the task's SHAC preset (§3.11) plus
/// the MB-MIX defaults of §3.4, with `sobolev.form = full` for CartPole (small state) and
/// `vjp_proj` otherwise, then the preset's change.
///
/// One departure from §3.4's model defaults, for the cost of an epoch on our CPU: the
/// model is 2 × 128 (not 3 × 256) and trains 4 passes × 4 minibatches of 256 transitions
/// per epoch (not 16 × 4 × 512). Where the form is `vjp_proj` (every task but CartPole),
/// the model trains with `model.network_backend = "fused"`. The §3.4 model (3 × 256, full Jacobians, 64 steps of 512)
/// costs about 10 s per CartPole epoch in release builds, against about 0.3 s for a SHAC
/// epoch; set `[mbmix.model]` to it explicitly where that is affordable.
pub fn mbmix_preset(task: &TaskEntry, preset: MbMixPreset) -> MbMixConfig {
    let mut cfg = MbMixConfig {
        shac: (task.shac_preset)(),
        ..MbMixConfig::default()
    };
    cfg.model.hidden = vec![128, 128];
    cfg.model.iterations = 4;
    cfg.model.minibatches = 4;
    cfg.model.batch_size = 256;
    cfg.model.sobolev.form = if task.name == "cartpole-swingup" {
        sobolev_model::SobolevForm::Full
    } else {
        // the hand-written loss gradient (tested equal to dfdx's) where the form has one
        cfg.model.network_backend = sobolev_model::NetworkBackend::Fused;
        sobolev_model::SobolevForm::VjpProj
    };
    match preset {
        MbMixPreset::Full => {}
        MbMixPreset::NoMix => {
            cfg.mix = MixConfig {
                lambda: 1.0,
                ..cfg.mix
            }
        }
        MbMixPreset::NoModel => {
            cfg.rollout = RolloutConfig {
                reading: Reading::SimOnly,
                ..cfg.rollout
            }
        }
        MbMixPreset::Mse => cfg.model.sobolev.form = sobolev_model::SobolevForm::None,
    }
    cfg
}

/// A registered algorithm.
pub struct AlgoEntry {
    /// Registry name, as given to `--algo`.
    pub name: &'static str,
    /// One line for `mbmix list`.
    pub description: &'static str,
    /// Which algorithm.
    pub algo: Algo,
}

/// Every algorithm the CLI knows, in listing order.
pub static ALGORITHMS: &[AlgoEntry] = &[
    AlgoEntry {
        name: "shac",
        description: "Short-Horizon Actor-Critic (Xu et al. 2022), algorithms.md §1",
        algo: Algo::Shac,
    },
    AlgoEntry {
        name: "mbmix",
        description:
            "MB-MIX: λ-mixed windows on simulator and Sobolev-model rollouts, algorithms.md §3",
        algo: Algo::MbMix(MbMixPreset::Full),
    },
    AlgoEntry {
        name: "mbmix-nomix",
        description: "MB-MIX ablation without mixing: [mbmix.mix] lambda = 1",
        algo: Algo::MbMix(MbMixPreset::NoMix),
    },
    AlgoEntry {
        name: "mbmix-nomodel",
        description: "MB-MIX ablation without model: [mbmix.rollout] reading = \"sim_only\"",
        algo: Algo::MbMix(MbMixPreset::NoModel),
    },
    AlgoEntry {
        name: "mbmix-mse",
        description: "MB-MIX ablation without Sobolev: [mbmix.model.sobolev] form = \"none\"",
        algo: Algo::MbMix(MbMixPreset::Mse),
    },
    AlgoEntry {
        name: "bptt",
        description: "BPTT / analytic policy gradient through long windows (DiffRL bptt.py)",
        algo: Algo::Bptt,
    },
    AlgoEntry {
        name: "apg",
        description: "APG, DaXBench's analytic policy gradient: BPTT over whole episodes (the [bptt] section)",
        algo: Algo::Bptt,
    },
    AlgoEntry {
        name: "ppo",
        description: "PPO, model-free reference (rl_games settings of DiffRL cfg/ppo)",
        algo: Algo::Ppo,
    },
];

impl Algo {
    /// The registry name.
    pub fn name(self) -> &'static str {
        ALGORITHMS
            .iter()
            .find(|e| e.algo == self)
            .map_or("?", |e| e.name)
    }
}

fn known<T>(entries: &[T], name: fn(&T) -> &'static str) -> String {
    entries.iter().map(name).collect::<Vec<_>>().join(", ")
}

/// Looks a task up by name.
pub fn task_entry(name: &str) -> Result<&'static TaskEntry, CoreError> {
    TASKS
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| CoreError::UnknownTask {
            name: name.to_string(),
            known: known(TASKS, |e| e.name),
        })
}

/// Builds a task by name.
pub fn make_task(name: &str) -> Result<Arc<dyn Task>, CoreError> {
    task_entry(name).and_then(|e| (e.build)())
}

/// Builds a task by name with its simulator on `device`. On `cuda` (feature `cuda`) the
/// rigid tasks run on the CUDA kernels (`sim_rigid::batch::KernelEnv::cuda`): SHAC's
/// training windows stay on the device for the whole window (physics, task layer, resets;
/// `sim_rigid::resident`), and the other callers of the `Task` contract (evaluation, the
/// other algorithms) run the physics step and its VJP on the device per call; the
/// deformable tasks have no kernels yet, which is an error naming the task.
pub fn make_task_on(name: &str, device: diff_core::Device) -> Result<Arc<dyn Task>, CoreError> {
    match device {
        diff_core::Device::Cpu => make_task(name),
        diff_core::Device::Cuda => cuda_task(name),
    }
}

/// The task a run trains on: [`make_task_on`], behind the run's `[action_map]` if it has
/// one.
pub fn make_run_task(
    cfg: &crate::config::RunConfig,
    device: diff_core::Device,
) -> crate::error::Result<Arc<dyn Task>> {
    let task = make_task_on(&cfg.task, device)?;
    match &cfg.action_map {
        Some(map) => map.wrap(task),
        None => Ok(task),
    }
}

/// The error of `--device cuda` in a build without the `cuda` feature.
pub fn no_cuda_build() -> CoreError {
    CoreError::DeviceUnavailable {
        device: "cuda".into(),
        reason: "this mbmix was built without CUDA support; rebuild it with `cargo build \
                 --release -p bench-suite --features cuda`"
            .into(),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_task(name: &str) -> Result<Arc<dyn Task>, CoreError> {
    task_entry(name)?;
    Err(no_cuda_build())
}

#[cfg(feature = "cuda")]
fn cuda_task(name: &str) -> Result<Arc<dyn Task>, CoreError> {
    use sim_rigid::batch::{KernelEnv, RigidTask};
    use sim_rigid::tasks::bruce::{bruce_def, BruceConfig};
    fn on<D: RigidTask>(def: Result<D, CoreError>) -> Result<Arc<dyn Task>, CoreError> {
        Ok(Arc::new(KernelEnv::cuda(def?)?))
    }
    match name {
        "cartpole-swingup" => on(Ok(sim_rigid::tasks::CartPole::new())),
        "hopper" => on(sim_rigid::tasks::hopper::hopper_def()),
        "half-cheetah" => on(sim_rigid::tasks::cheetah::cheetah_def()),
        "ant" => on(sim_rigid::tasks::ant::ant_def()),
        "humanoid" => on(sim_rigid::tasks::humanoid::humanoid_def()),
        "bruce" => on(bruce_def(&BruceConfig::default())),
        "bruce-pd" => on(bruce_def(&BruceConfig::position_loop())),
        "bruce-pos" => on(bruce_def(&BruceConfig::position_targets())),
        other => {
            task_entry(other)?;
            Err(CoreError::DeviceUnavailable {
                device: "cuda".into(),
                reason: format!(
                    "task `{other}` has no CUDA kernels yet (only the rigid tasks do); \
                     train it with --device cpu"
                ),
            })
        }
    }
}

/// Looks an algorithm up by name.
pub fn algorithm(name: &str) -> Result<Algo, CoreError> {
    ALGORITHMS
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.algo)
        .ok_or_else(|| CoreError::UnknownAlgorithm {
            name: name.to_string(),
            known: known(ALGORITHMS, |e| e.name),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_device_errors_name_the_cause() {
        use diff_core::Device;
        let err = |name| match make_task_on(name, Device::Cuda) {
            Ok(_) => panic!("`{name}` on cuda built"),
            Err(e) => e.to_string(),
        };
        let err = err("pendulum");
        assert!(err.contains("unknown task `pendulum`"), "{err}");
        // no build, no GPU, or no kernels for the deformable tasks: always an error
        let err = match make_task_on("push-rope", Device::Cuda) {
            Ok(_) => panic!("push-rope has no CUDA kernels"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("device `cuda` unavailable"), "{err}");
        assert!(make_task_on("cartpole-swingup", Device::Cpu).is_ok());
    }

    #[test]
    fn unknown_task_lists_the_known_ones() {
        let err = make_task("cartpole").err().map(|e| e.to_string());
        let msg = err.unwrap_or_default();
        assert!(msg.contains("unknown task `cartpole`"), "{msg}");
        assert!(msg.contains("cartpole-swingup"), "{msg}");
    }

    #[test]
    fn unknown_algorithm_lists_the_known_ones() {
        let msg = algorithm("ppo-xl").err().map(|e| e.to_string());
        let msg = msg.unwrap_or_default();
        assert!(msg.contains("unknown algorithm `ppo-xl`"), "{msg}");
        assert!(msg.contains("shac"), "{msg}");
    }

    #[test]
    fn every_registered_task_matches_its_spec() {
        for entry in TASKS {
            let task = make_task(entry.name).expect("registered task builds");
            let spec = task.spec();
            assert_eq!(spec.name, entry.name);
            assert_eq!(spec.state_names.len(), spec.state_dim);
            assert_eq!(spec.obs_names.len(), spec.obs_dim);
        }
        assert_eq!(algorithm("shac").ok(), Some(Algo::Shac));
        assert_eq!(Algo::Shac.name(), "shac");
        for entry in ALGORITHMS {
            assert_eq!(algorithm(entry.name).ok(), Some(entry.algo));
            // aliases (`apg` for `bptt`) resolve to the algorithm's canonical name
            assert_eq!(algorithm(entry.algo.name()).ok(), Some(entry.algo));
        }
        assert_eq!(algorithm("apg").ok(), Some(Algo::Bptt));
        for (name, algo) in [("bptt", Algo::Bptt), ("ppo", Algo::Ppo)] {
            assert_eq!(algorithm(name).ok(), Some(algo));
            assert_eq!(algo.name(), name);
        }
    }

    #[test]
    fn mbmix_presets_are_the_shac_preset_plus_the_variant() {
        let cart = task_entry("cartpole-swingup").expect("cartpole");
        let hop = task_entry("hopper").expect("hopper");
        let full = mbmix_preset(cart, MbMixPreset::Full);
        full.validate().expect("valid preset");
        assert_eq!(full.shac, ShacConfig::default());
        assert_eq!(full.model.sobolev.form, sobolev_model::SobolevForm::Full);
        assert_eq!(full.mix.lambda, 0.95);
        assert_eq!(full.model.hidden, vec![128, 128]);
        assert_eq!(full.rollout.reading, Reading::A);
        let h = mbmix_preset(hop, MbMixPreset::Full);
        assert_eq!(h.shac, (hop.shac_preset)());
        assert_eq!(h.model.sobolev.form, sobolev_model::SobolevForm::VjpProj);
        assert_eq!(
            h.model.network_backend,
            sobolev_model::NetworkBackend::Fused
        );
        assert_eq!(
            full.model.network_backend,
            sobolev_model::NetworkBackend::Dfdx
        );
        assert_eq!(mbmix_preset(cart, MbMixPreset::NoMix).mix.lambda, 1.0);
        assert_eq!(
            mbmix_preset(cart, MbMixPreset::NoModel).rollout.reading,
            Reading::SimOnly
        );
        assert_eq!(
            mbmix_preset(hop, MbMixPreset::Mse).model.sobolev.form,
            sobolev_model::SobolevForm::None
        );
    }

    #[test]
    fn daxbench_apg_windows_are_whole_episodes() {
        for name in [
            "push-rope",
            "push-rope-hard",
            "fold-cloth1",
            "fold-cloth3",
            "unfold-cloth1",
            "unfold-cloth3",
            "fold-tshirt",
        ] {
            let task = make_task(name).expect("registered task builds");
            let apg = bptt_preset(name);
            assert_eq!(apg.horizon, task.spec().episode_length, "{name}");
            assert_eq!((apg.num_envs, apg.actor_lr, apg.grad_norm), (4, 1e-4, 0.3));
            assert_eq!(
                task_entry(name).map(|e| (e.shac_preset)().horizon).ok(),
                Some(1)
            );
        }
    }

    #[test]
    fn every_task_has_valid_baseline_presets() {
        for entry in TASKS {
            bptt_preset(entry.name).validate().expect("bptt preset");
            ppo_preset(entry.name).validate().expect("ppo preset");
        }
        // Spot checks against DiffRL's configs.
        let ant = bptt_preset("ant");
        assert_eq!((ant.horizon, ant.num_envs, ant.actor_lr), (1000, 32, 4e-3));
        assert_eq!(bptt_preset("cartpole-swingup").horizon, 240);
        let ppo_ant = ppo_preset("ant");
        assert_eq!((ppo_ant.num_envs, ppo_ant.horizon), (2048, 32));
        assert_eq!(ppo_preset("cartpole-swingup").num_envs, 32);
    }
}

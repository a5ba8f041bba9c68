//! The DaXBench cloth tasks (`tasks.md` §7.1–7.3; `daxbench/core/envs/basic/cloth_env.py`
//! and its subclasses) on the mass-spring cloth of [`crate::cloth`]: `fold-cloth1`,
//! `fold-cloth3`, `unfold-cloth1`, `unfold-cloth3` and `fold-tshirt`.
//!
//! - **Scene.** `fold-cloth*`: N 80, the 16 × 32 mask rows 32:48 × cols 32:64 (512
//!   particles), stiffness 900, damping 2, dt 2e-3, g 0.5, μ 0.5, max_v 2
//!   ([`ClothParams::fold_cloth`]); `unfold-cloth*`: the same with μ 3; `fold-tshirt`:
//!   N 180, stiffness 5000, dt 5e-4, μ 0.9, with the procedural T-shirt mask of
//!   [`tshirt_mask`] (3574 particles).
//! - **Action** (6-D pick-and-place; DaXBench's action space is 8-D, of which it uses
//!   the first 6): `(pick x, pick y, pick z, place x, place y, place z)`, each clipped to
//!   [−1, 1]; y entries are ignored (DaXBench forces them to 0); x and z are mapped
//!   affinely onto the task's workspace, `x = c_x + h_x·a`, `z = c_z + h_z·a`
//!   ([`ClothTaskConfig::action_center`], [`ClothTaskConfig::action_half`]). Our choice,
//!   since DaXBench takes world coordinates: the workspace is the bounding box of the rest
//!   cloth's xz footprint grown by [`WORKSPACE_MARGIN`] (= the reset shift's σ) on every
//!   side, so every pick in the footprint can grasp (the lattice spacing 1/80 leaves no
//!   point of the footprint farther than 0.0088 from a particle, inside the gripper's
//!   0.01), and places can reach a little beyond the cloth: x ∈ [0.35, 0.6375],
//!   z ∈ [0.1625, 0.65] for the 512-particle cloth, x ∈ [0.2, 0.7944],
//!   z ∈ [0.2833, 0.7278] for the T-shirt. The action then runs
//!   DaXBench's 40-sub-action macro ([`crate::cloth::pick_place_sub_actions`]): 2000
//!   substeps per control step.
//! - **State** (`6n + 4` numbers): particle positions `x` (3n), velocities `v` (3n), the
//!   gripper centre (3) and the step counter (1). The counter is what the reward's
//!   `0.99^step` reads; `step` adds 1 to it, and everything is smooth in it (its adjoint
//!   passes through the step unchanged and the reward's derivative w.r.t. it is
//!   `r·ln 0.99`), so it needs no special case in the adjoints.
//! - **Observation** (DaXBench's `get_obs`, `PARTICLE` mode): the positions of every
//!   `obs_stride`-th particle (1 for the cloths, 10 for the T-shirt, DaXBench's
//!   `x[::10]`), then `gripper0 = (gripper x, y, z, radius)` and `gripper1 = (1, 1, 1,
//!   radius)`: DaXBench's `primitive0` / `primitive1` are `[x, y, z, radius]`, the second
//!   gripper parked at the far corner and never moved, so its 4 entries are constants.
//!   512 particles give 512·3 + 8 = 1544; the T-shirt ⌈3574/10⌉·3 + 8 = 1082.
//! - **Reward** (`step_diff`): `r = exp(−10·CD)·0.99^step`, with `step` the counter after
//!   the increment (the first step is already scaled by 0.99) and CD DaXBench's
//!   bidirectional Chamfer distance (`utils/util.py:calc_chamfer`): with
//!   `d(p, q) = √(mean over xyz of (p − q)²) = ‖p − q‖/√3`,
//!   `CD = mean_i min_j d(x_i, g_j) + mean_j min_i d(g_j, x_i)` over the particles `x`
//!   and the goal points `g`. DaXBench's optional auxiliary term `exp(−contact distance)`
//!   is [`RowTask::aux_row`], which APG adds to its objective during training (`aux_reward`).
//! - **Episode**: 3 / 4 / 15 / 15 / 5 steps, no early termination.
//! - **Reset.** Fold tasks: the rest cloth shifted in x and z by one `N(0, 0.05²)` draw
//!   (DaXBench's `build_reset`); unfold tasks: every coordinate of every particle plus
//!   `N(0, 1e-4²)`, then 1 or 3 random pick-and-places, each from a uniformly drawn
//!   particle's position to another's (DaXBench's `random_fold`). See [`ClothReset`].
//! - **Goals.** Fold tasks load `datasets/goals/<task>/goal.json`, the rest cloth after
//!   the scripted expert folds of [`ClothTaskConfig::expert_folds`], written by
//!   `cargo run --release -p sim-deformable --example make_goals`. Unfold goals are the
//!   flat rest cloth ([`ClothGoal::Flat`]; DaXBench's `unfold_cloth1` has no goal file
//!   and falls back to a single point at the origin, which we do not reproduce).
//!
//! **Gradients.** The step's VJP is the engine's checkpointed reverse sweep
//! ([`pick_place_vjp`], states stored every [`ClothTaskConfig::checkpoint_every`]
//! substeps), under [`ClothTaskConfig::grad`]: the registered tasks use DaXBench's
//! per-substep normalisation ([`GradTreatment::DaxbenchNormalize`]) because the raw
//! gradient through 2000 substeps overflows (`tasks.md` §8, 27b); with it the "VJP" is
//! DaXBench's gradient surrogate, not the transpose of the JVP. [`ClothTaskConfig::tiny`]
//! uses the raw gradient, which the tests check against the dual-number JVP. The
//! forward pass in the batched [`Task::step`] runs in `f64` (rows are stored in `f32`),
//! so the VJP linearises the trajectory the step computed. The Chamfer reward's VJP
//! differentiates the selected pairs: each `min` passes its derivative to the pair it
//! selected (on primal values; the first index on ties), and a pair at distance exactly 0
//! contributes a zero (one-sided) derivative, as the push-rope loss does.

use super::common::{contact_aux, contact_aux_vjp};
use super::row::RowTask;
use crate::cloth::{
    pick_place, pick_place_vjp, Cloth, ClothParams, ClothState, GradTreatment, StateAdj, V3,
};
use diff_core::{Error, Prim, Real, Result, Scene, SeededRng, TaskSpec};
use ndarray::ArrayView1;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Grows the workspace of the action map beyond the rest cloth's footprint on every side
/// (= the σ of the fold tasks' reset shift).
pub const WORKSPACE_MARGIN: f64 = 0.05;

/// DaXBench's parked second gripper (`primitive1`), observed but never moved.
pub const GRIPPER1: V3<f64> = [1.0, 1.0, 1.0];

/// Per-step reward discount (`reward *= 0.99 ** cur_step`).
pub const STEP_DISCOUNT: f64 = 0.99;

/// One scripted pick-and-place: pick the particle at lattice site `site` wherever it is
/// at that moment (the pick point is its x and z), and place it at world `(x, z)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertFold {
    /// Lattice site `(i, j)` of the picked particle (must carry one).
    pub site: [usize; 2],
    /// Place point `(x, z)` in world coordinates.
    pub place: [f64; 2],
}

/// Where the goal shape comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClothGoal {
    /// A JSON array of `[x, y, z]` particle positions, relative to the workspace root.
    File(String),
    /// The flat rest cloth (the unfold tasks).
    Flat,
    /// The rest cloth after these scripted pick-and-places (the goal script and test
    /// configurations).
    Folds(Vec<ExpertFold>),
}

/// How an episode starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ClothReset {
    /// The rest cloth, shifted as a whole in x and z by one `N(0, sigma²)` draw per axis
    /// (the fold tasks). Without reset noise: unshifted.
    Shift { sigma: f64 },
    /// Every coordinate of every particle plus `N(0, noise²)`, then `folds` pick-and-places
    /// from a uniformly drawn particle's position to another's (the unfold tasks).
    /// Without reset noise the noise is skipped and the folds are drawn from a fixed
    /// stream (seed 0), so the start is always the same folded cloth.
    ///
    /// DaXBench runs its reset folds through `step_diff`, which advances `cur_step`: its
    /// unfold episodes end after `max_steps − folds` steps and their first reward is
    /// scaled by `0.99^(folds + 1)`. `count_steps = true` reproduces this (the counter
    /// starts at `folds` and the episode is `episode_length − folds` steps); the default
    /// `false` starts the counter at 0 and gives the full `episode_length` steps.
    Folds {
        noise: f64,
        folds: usize,
        count_steps: bool,
    },
}

/// Parameters of a cloth task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClothTaskConfig {
    /// Registry name.
    pub name: String,
    /// The cloth model.
    pub cloth: ClothParams,
    /// Control steps per episode (DaXBench's `max_steps`).
    pub episode_length: usize,
    /// Every `obs_stride`-th particle's position is observed (particles 0, s, 2s, …).
    pub obs_stride: usize,
    /// Centre `(x, z)` of the action map.
    pub action_center: [f64; 2],
    /// Half range `(x, z)` of the action map: `a = ±1` reaches `centre ± half`.
    pub action_half: [f64; 2],
    /// How an episode starts.
    pub reset: ClothReset,
    /// The step's reverse sweep stores a state every this many substeps (memory
    /// `⌈2000/K⌉ + K` states; the default 50 is one sub-action).
    pub checkpoint_every: usize,
    /// What the reverse sweep does to the state cotangent at every substep.
    pub grad: GradTreatment,
    /// The goal shape.
    pub goal: ClothGoal,
}

/// The bounding box of the rest cloth's xz footprint, grown by `margin`: `(centre,
/// half extents)` in `(x, z)`.
pub fn workspace(params: &ClothParams, margin: f64) -> ([f64; 2], [f64; 2]) {
    let (n, h) = (params.n, params.spacing);
    let mut lo = [f64::MAX; 2];
    let mut hi = [f64::MIN; 2];
    for i in 0..n {
        for j in 0..n {
            if params.mask[i * n + j] {
                let p = [i as f64 * h, (n - j) as f64 * h];
                for d in 0..2 {
                    lo[d] = lo[d].min(p[d]);
                    hi[d] = hi[d].max(p[d]);
                }
            }
        }
    }
    (
        std::array::from_fn(|d| 0.5 * (lo[d] + hi[d])),
        std::array::from_fn(|d| 0.5 * (hi[d] - lo[d]) + margin),
    )
}

/// The T-shirt mask of `fold-tshirt` on an `n×n` lattice (row-major), generated here in
/// place of DaXBench's `others/t-shirt.jpg`. As in DaXBench the shirt fills the central
/// `s×s` block, `s = n/2`, starting at site `(n/4, n/4)`. In block coordinates `(u, w)`
/// (`u` along the lattice rows i, i.e. world x; `w` along the columns j, i.e. towards −z)
/// and in units of `s/90`, it is a T:
/// - the body, `u ∈ [22, 68)`, `w ∈ [13, 76)` (46 × 63);
/// - the sleeves, the full width `u ∈ [0, 90)` over `w ∈ [13, 29)` (two 22 × 16 arms);
/// - minus a neckline notch `u ∈ [38, 52)`, `w ∈ [13, 15)`.
///
/// For `n = 180` that is 2898 + 704 − 28 = **3574** particles (DaXBench's image gives
/// 3573), observation ⌈3574/10⌉·3 + 8 = 1082 as in DaXBench. The collar is at the high-z
/// side, the hem at the low-z side.
pub fn tshirt_mask(n: usize) -> Vec<bool> {
    let s = n / 2;
    let o = n / 2 - s / 2;
    let sc = |x: usize| (x * s + 45) / 90;
    let inside = |u: usize, w: usize| {
        let (u0, u1, w0, w1) = (sc(22), sc(68), sc(13), sc(76));
        let body = (u0..u1).contains(&u) && (w0..w1).contains(&w);
        let sleeves = (w0..sc(29)).contains(&w);
        let neck = (sc(38)..sc(52)).contains(&u) && (w0..sc(15)).contains(&w);
        (body || sleeves) && !neck
    };
    let mut m = vec![false; n * n];
    for u in 0..s {
        for w in 0..s {
            if inside(u, w) {
                m[(o + u) * n + (o + w)] = true;
            }
        }
    }
    m
}

impl ClothTaskConfig {
    /// The shared settings for a cloth model: workspace from the mask, checkpoints every
    /// 50 substeps, DaXBench's gradient normalisation, every particle observed.
    fn daxbench(
        name: &str,
        cloth: ClothParams,
        episode_length: usize,
        reset: ClothReset,
        goal: ClothGoal,
    ) -> Self {
        let (action_center, action_half) = workspace(&cloth, WORKSPACE_MARGIN);
        ClothTaskConfig {
            name: name.into(),
            cloth,
            episode_length,
            obs_stride: 1,
            action_center,
            action_half,
            reset,
            checkpoint_every: 50,
            grad: GradTreatment::DaxbenchNormalize,
            goal,
        }
    }

    fn goal_file(name: &str) -> ClothGoal {
        ClothGoal::File(format!("datasets/goals/{name}/goal.json"))
    }

    /// `fold-cloth1`: fold the 512-particle cloth in half; 3 steps.
    pub fn fold_cloth1() -> Self {
        Self::daxbench(
            "fold-cloth1",
            ClothParams::fold_cloth(),
            3,
            ClothReset::Shift { sigma: 0.05 },
            Self::goal_file("fold-cloth1"),
        )
    }

    /// `fold-cloth3`: the same cloth, folded in thirds; 4 steps.
    pub fn fold_cloth3() -> Self {
        Self {
            name: "fold-cloth3".into(),
            episode_length: 4,
            goal: Self::goal_file("fold-cloth3"),
            ..Self::fold_cloth1()
        }
    }

    /// `unfold-cloth1` / `unfold-cloth3` (`folds` = 1 or 3): flatten a cloth crumpled by
    /// random pick-and-places; μ 3, 15 steps.
    pub fn unfold_cloth(folds: usize) -> Self {
        Self::daxbench(
            &format!("unfold-cloth{folds}"),
            ClothParams::unfold_cloth(),
            15,
            ClothReset::Folds {
                noise: 1e-4,
                folds,
                count_steps: false,
            },
            ClothGoal::Flat,
        )
    }

    /// `fold-tshirt`: N 180, stiffness 5000, dt 5e-4, μ 0.9, the [`tshirt_mask`], every
    /// 10th particle observed; 5 steps.
    pub fn fold_tshirt() -> Self {
        Self {
            obs_stride: 10,
            ..Self::daxbench(
                "fold-tshirt",
                ClothParams::fold_tshirt(tshirt_mask(180)),
                5,
                ClothReset::Shift { sigma: 0.05 },
                Self::goal_file("fold-tshirt"),
            )
        }
    }

    /// The configuration of a registered cloth task by name.
    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "fold-cloth1" => Self::fold_cloth1(),
            "fold-cloth3" => Self::fold_cloth3(),
            "unfold-cloth1" => Self::unfold_cloth(1),
            "unfold-cloth3" => Self::unfold_cloth(3),
            "fold-tshirt" => Self::fold_tshirt(),
            _ => return None,
        })
    }

    /// A small scene for tests: a 4 × 6 cloth (24 particles) on a 40-lattice (spacing
    /// 0.025), gripper radius 0.02, stiffness 300, 2 substeps per sub-action (80 per
    /// step), the raw gradient, checkpoints every 7 substeps, observation stride 5, a
    /// one-fold goal made in code, and the fold tasks' shift reset.
    pub fn tiny() -> Self {
        let n = 40;
        let cloth = ClothParams {
            gripper_radius: 0.02,
            substeps: 2,
            ..ClothParams::daxbench(
                n,
                crate::cloth::rect_mask(n, 18..22, 17..23),
                300.0,
                2e-3,
                0.5,
            )
        };
        ClothTaskConfig {
            obs_stride: 5,
            checkpoint_every: 7,
            grad: GradTreatment::Raw,
            ..Self::daxbench(
                "cloth-tiny",
                cloth,
                3,
                ClothReset::Shift { sigma: 0.01 },
                // the corner at site (18, 22), (0.45, 0.45), onto the opposite short edge
                ClothGoal::Folds(vec![ExpertFold {
                    site: [18, 22],
                    place: [0.45, 0.575],
                }]),
            )
        }
    }

    /// The scripted expert of the goal script for a registered fold task (`None` for
    /// the others). Each pick takes a corner particle wherever it lies at that moment.
    /// The cloth slides as a corner is dragged across it (the gripper lifts only 0.06),
    /// so the place points stop short of the mirror images of the picked corners; they
    /// were chosen by looking at the results (a compact fold, not a dragged cloth).
    ///
    /// - `fold-cloth1` (2 of its 3 steps): fold the 0.19 × 0.39 cloth in half across
    ///   its long (z) axis: the corners of the low-z edge, sites (32, 63) and (47, 63)
    ///   at z = 0.2125, to z = 0.55 (x unchanged: 0.4 and 0.5875). The result lies at
    ///   z ≈ 0.45–0.67.
    /// - `fold-cloth3` (4 of 4 steps): a letter fold in thirds across z: the low-z
    ///   corners to z = 0.44, then the high-z corners, sites (32, 32) and (47, 32), to
    ///   z = 0.37. Three layers at z ≈ 0.33–0.55.
    /// - `fold-tshirt` (4 of 5 steps): fold both sleeves in (their outer top corners,
    ///   sites (45, 58) and (134, 58), to (0.47, 0.66) and (0.52, 0.66)), then fold the
    ///   body in half bottom-up (the hem corners, sites (67, 120) and (112, 120), to
    ///   z = 0.55, x unchanged: 0.372 and 0.622).
    pub fn expert_folds(name: &str) -> Option<Vec<ExpertFold>> {
        let f = |site: [usize; 2], place: [f64; 2]| ExpertFold { site, place };
        Some(match name {
            "fold-cloth1" => vec![f([32, 63], [0.4, 0.55]), f([47, 63], [0.5875, 0.55])],
            "fold-cloth3" => vec![
                f([32, 63], [0.4, 0.44]),
                f([47, 63], [0.5875, 0.44]),
                f([32, 32], [0.4, 0.37]),
                f([47, 32], [0.5875, 0.37]),
            ],
            "fold-tshirt" => vec![
                f([45, 58], [0.47, 0.66]),
                f([134, 58], [0.52, 0.66]),
                f([67, 120], [0.372, 0.55]),
                f([112, 120], [0.622, 0.55]),
            ],
            _ => return None,
        })
    }
}

/// A cloth task.
pub struct ClothTask {
    cfg: ClothTaskConfig,
    cloth: Cloth,
    /// Lattice site → particle index (`usize::MAX` where the mask is empty).
    site_index: Vec<usize>,
    goal: Vec<V3<f64>>,
    /// Observed particles.
    observed: Vec<usize>,
    spec: TaskSpec,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bad(name: &str, reason: impl Into<String>) -> Error {
    Error::InvalidParameter {
        name: name.into(),
        reason: reason.into(),
    }
}

impl ClothTask {
    /// The registered task `name` (`fold-cloth1`, `fold-cloth3`, `unfold-cloth1`,
    /// `unfold-cloth3`, `fold-tshirt`).
    pub fn named(name: &str) -> Result<ClothTask> {
        let cfg = ClothTaskConfig::by_name(name).ok_or_else(|| Error::UnknownTask {
            name: name.into(),
            known: "fold-cloth1, fold-cloth3, unfold-cloth1, unfold-cloth3, fold-tshirt".into(),
        })?;
        ClothTask::with_config(cfg)
    }

    /// The task for `cfg` (checked before anything is simulated).
    pub fn with_config(cfg: ClothTaskConfig) -> Result<ClothTask> {
        let cloth = Cloth::new(cfg.cloth.clone())?;
        if cfg.episode_length == 0 {
            return Err(bad("episode_length", "must be at least 1"));
        }
        if cfg.obs_stride == 0 {
            return Err(bad("obs_stride", "must be at least 1"));
        }
        if cfg.checkpoint_every == 0 {
            return Err(bad("checkpoint_every", "must be at least 1"));
        }
        for d in 0..2 {
            let (c, h) = (cfg.action_center[d], cfg.action_half[d]);
            if !(h.is_finite() && h > 0.0 && c.is_finite()) {
                return Err(bad(
                    "action_center/action_half",
                    format!("the half range must be positive and finite, got {h} (centre {c})"),
                ));
            }
            if c - h < 0.0 || c + h > 1.0 {
                return Err(bad(
                    "action_center/action_half",
                    format!(
                        "the workspace [{}, {}] along {} leaves the unit box the cloth lives in",
                        c - h,
                        c + h,
                        ["x", "z"][d]
                    ),
                ));
            }
        }
        if let GradTreatment::ClipNorm(c) = cfg.grad {
            if !(c.is_finite() && c > 0.0) {
                return Err(bad(
                    "grad",
                    format!("clip-norm bound must be positive, got {c}"),
                ));
            }
        }
        match cfg.reset {
            ClothReset::Shift { sigma } => {
                if !(sigma.is_finite() && sigma >= 0.0) {
                    return Err(bad("reset.sigma", format!("must be ≥ 0, got {sigma}")));
                }
            }
            ClothReset::Folds {
                noise,
                folds,
                count_steps,
            } => {
                if !(noise.is_finite() && noise >= 0.0) {
                    return Err(bad("reset.noise", format!("must be ≥ 0, got {noise}")));
                }
                if count_steps && folds >= cfg.episode_length {
                    return Err(bad(
                        "reset.folds",
                        format!(
                            "with count_steps the {folds} reset folds use up the {}-step episode",
                            cfg.episode_length
                        ),
                    ));
                }
            }
        }
        let np = cloth.n_particles();
        let n = cfg.cloth.n;
        let mut site_index = vec![usize::MAX; n * n];
        for (p, &[i, j]) in cloth.sites().iter().enumerate() {
            site_index[i * n + j] = p;
        }
        let observed: Vec<usize> = (0..np).step_by(cfg.obs_stride).collect();
        let episode_length = match cfg.reset {
            ClothReset::Folds {
                folds,
                count_steps: true,
                ..
            } => cfg.episode_length - folds,
            _ => cfg.episode_length,
        };
        let spec = TaskSpec {
            name: cfg.name.clone(),
            state_dim: 6 * np + 4,
            obs_dim: 3 * observed.len() + 8,
            act_dim: 6,
            episode_length,
            dt: cfg.cloth.dt * (cfg.cloth.substeps * crate::cloth::PNP_SUB_ACTIONS) as f64,
            state_names: state_names(np),
            obs_names: obs_names(&observed),
        };
        let mut task = ClothTask {
            cfg,
            cloth,
            site_index,
            goal: Vec::new(),
            observed,
            spec,
        };
        task.goal = match &task.cfg.goal {
            ClothGoal::File(rel) => load_goal(&workspace_root().join(rel), np)?,
            ClothGoal::Flat => task.cloth.initial_state::<f64>().x,
            ClothGoal::Folds(folds) => task.cloth_after(folds)?.x,
        };
        Ok(task)
    }

    /// The configuration.
    pub fn config(&self) -> &ClothTaskConfig {
        &self.cfg
    }

    /// The cloth model.
    pub fn cloth(&self) -> &Cloth {
        &self.cloth
    }

    /// The goal positions.
    pub fn goal(&self) -> &[V3<f64>] {
        &self.goal
    }

    /// Number of particles.
    pub fn n_particles(&self) -> usize {
        self.cloth.n_particles()
    }

    /// The particle at lattice site `(i, j)`, if the mask carries one.
    pub fn particle_at(&self, site: [usize; 2]) -> Option<usize> {
        let n = self.cfg.cloth.n;
        if site[0] >= n || site[1] >= n {
            return None;
        }
        let p = self.site_index[site[0] * n + site[1]];
        (p != usize::MAX).then_some(p)
    }

    /// The rest cloth after the scripted pick-and-places `folds`, in f64.
    pub fn cloth_after(&self, folds: &[ExpertFold]) -> Result<ClothState<f64>> {
        let mut s = self.cloth.initial_state::<f64>();
        for f in folds {
            let p = self.particle_at(f.site).ok_or_else(|| {
                bad(
                    "goal",
                    format!(
                        "the expert fold picks site {:?}, which carries no particle",
                        f.site
                    ),
                )
            })?;
            let x = s.x[p];
            pick_place(
                &self.cloth,
                &mut s,
                &[x[0], 0.0, x[2], f.place[0], 0.0, f.place[1]],
            );
        }
        Ok(s)
    }

    /// The world pick-and-place `(pick x, 0, pick z, place x, 0, place z)` of action `a`:
    /// each entry clipped to [−1, 1] (derivative 1 on the closed interval, 0 strictly
    /// outside), x and z mapped onto the workspace, y entries ignored.
    pub fn world_action<T: Real>(&self, a: &[T]) -> [T; 6] {
        let clip = |x: T| {
            if x.re() > 1.0 {
                T::one()
            } else if x.re() < -1.0 {
                -T::one()
            } else {
                x
            }
        };
        let (c, h) = (self.cfg.action_center, self.cfg.action_half);
        let m = |k: usize, d: usize| T::cst(c[d]) + T::cst(h[d]) * clip(a[k]);
        [m(0, 0), T::zero(), m(2, 1), m(3, 0), T::zero(), m(5, 1)]
    }

    /// Adjoint of [`Self::world_action`] (accumulates into `adj_a`).
    fn world_action_vjp(&self, a: &[f64], adj_w: &[f64; 6], adj_a: &mut [f64; 6]) {
        let h = self.cfg.action_half;
        for (k, d) in [(0, 0), (2, 1), (3, 0), (5, 1)] {
            if (-1.0..=1.0).contains(&a[k]) {
                adj_a[k] += h[d] * adj_w[k];
            }
        }
    }

    fn unpack<T: Real>(&self, s: &[T]) -> ClothState<T> {
        let n = self.n_particles();
        let v3 = |o: usize| -> Vec<V3<T>> {
            (0..n)
                .map(|p| std::array::from_fn(|d| s[o + 3 * p + d]))
                .collect()
        };
        ClothState {
            x: v3(0),
            v: v3(3 * n),
            gripper: std::array::from_fn(|d| s[6 * n + d]),
        }
    }

    fn pack<T: Real>(&self, st: &ClothState<T>, step: T) -> Vec<T> {
        let mut out = Vec::with_capacity(self.spec.state_dim);
        out.extend(st.x.iter().flatten());
        out.extend(st.v.iter().flatten());
        out.extend(st.gripper);
        out.push(step);
        out
    }

    /// Index of the step counter in a state row.
    fn step_index(&self) -> usize {
        6 * self.n_particles() + 3
    }

    /// For every particle the goal point nearest to it, and for every goal point the
    /// particle nearest to it (on primal values; the first index on ties). One pass over
    /// all pairs.
    pub fn chamfer_pairs<T: Real>(&self, s: &[T]) -> (Vec<usize>, Vec<usize>) {
        let n = self.n_particles();
        let m = self.goal.len();
        let mut to_goal = vec![(f64::INFINITY, 0usize); n];
        let mut to_cloth = vec![(f64::INFINITY, 0usize); m];
        for (i, tg) in to_goal.iter_mut().enumerate() {
            let x = [s[3 * i].re(), s[3 * i + 1].re(), s[3 * i + 2].re()];
            for (j, g) in self.goal.iter().enumerate() {
                let q = (x[0] - g[0]).powi(2) + (x[1] - g[1]).powi(2) + (x[2] - g[2]).powi(2);
                if q < tg.0 {
                    *tg = (q, j);
                }
                if q < to_cloth[j].0 {
                    to_cloth[j] = (q, i);
                }
            }
        }
        (
            to_goal.into_iter().map(|t| t.1).collect(),
            to_cloth.into_iter().map(|t| t.1).collect(),
        )
    }

    /// DaXBench's `d(x_i, g_j) = √(mean over xyz of (x_i − g_j)²)`, 0 (with a zero
    /// derivative) at coincident points.
    fn pair_distance<T: Real>(&self, s: &[T], i: usize, j: usize) -> T {
        let g = &self.goal[j];
        let mut q = T::zero();
        for d in 0..3 {
            let e = s[3 * i + d] - T::cst(g[d]);
            q += e * e;
        }
        if q.re() <= 0.0 {
            T::zero()
        } else {
            (q / T::cst(3.0)).sqrt()
        }
    }

    /// The bidirectional Chamfer distance CD of a state row to the goal.
    pub fn chamfer_row<T: Real>(&self, s: &[T]) -> T {
        let (to_goal, to_cloth) = self.chamfer_pairs(s);
        let mut a = T::zero();
        for (i, &j) in to_goal.iter().enumerate() {
            a += self.pair_distance(s, i, j);
        }
        let mut b = T::zero();
        for (j, &i) in to_cloth.iter().enumerate() {
            b += self.pair_distance(s, i, j);
        }
        a / T::cst(to_goal.len() as f64) + b / T::cst(to_cloth.len() as f64)
    }

    /// The start state of an episode (see [`ClothReset`]) and its step counter.
    pub fn start_state(&self, rng: &mut SeededRng, stochastic: bool) -> (ClothState<f64>, f64) {
        let mut s = self.cloth.initial_state::<f64>();
        match self.cfg.reset {
            ClothReset::Shift { sigma } => {
                if stochastic {
                    let dx: f64 = sigma * normal(rng);
                    let dz: f64 = sigma * normal(rng);
                    for x in s.x.iter_mut() {
                        x[0] += dx;
                        x[2] += dz;
                    }
                }
                (s, 0.0)
            }
            ClothReset::Folds {
                noise,
                folds,
                count_steps,
            } => {
                let mut fixed = SeededRng::seed_from_u64(0);
                let rng = if stochastic { rng } else { &mut fixed };
                if stochastic {
                    for x in s.x.iter_mut().flatten() {
                        *x += noise * normal(rng);
                    }
                }
                let np = self.n_particles();
                for _ in 0..folds {
                    let (a, b) = (rng.gen_range(0..np), rng.gen_range(0..np));
                    let (pa, pb) = (s.x[a], s.x[b]);
                    pick_place(&self.cloth, &mut s, &[pa[0], 0.0, pa[2], pb[0], 0.0, pb[2]]);
                }
                (s, if count_steps { folds as f64 } else { 0.0 })
            }
        }
    }
}

fn normal(rng: &mut SeededRng) -> f64 {
    StandardNormal.sample(rng)
}

fn load_goal(path: &Path, n: usize) -> Result<Vec<V3<f64>>> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::BadFile {
        path: shown.clone(),
        reason: format!("cannot read the goal shape ({e}); make it with `cargo run --release -p sim-deformable --example make_goals`"),
    })?;
    let goal: Vec<V3<f64>> = serde_json::from_str(&text).map_err(|e| Error::BadFile {
        path: shown.clone(),
        reason: format!("not a JSON array of [x, y, z] positions: {e}"),
    })?;
    if goal.len() != n {
        return Err(Error::BadFile {
            path: shown,
            reason: format!("{} goal positions for {n} particles", goal.len()),
        });
    }
    if goal.iter().flatten().any(|x| !x.is_finite()) {
        return Err(Error::BadFile {
            path: shown,
            reason: "non-finite goal position".into(),
        });
    }
    Ok(goal)
}

fn state_names(n: usize) -> Vec<String> {
    let mut v = Vec::with_capacity(6 * n + 4);
    for qs in [["x", "y", "z"], ["vx", "vy", "vz"]] {
        for p in 0..n {
            for q in qs {
                v.push(format!("p{p}.{q}"));
            }
        }
    }
    for q in ["x", "y", "z"] {
        v.push(format!("gripper.{q}"));
    }
    v.push("step".into());
    v
}

fn obs_names(observed: &[usize]) -> Vec<String> {
    let mut v = Vec::with_capacity(3 * observed.len() + 8);
    for p in observed {
        for q in ["x", "y", "z"] {
            v.push(format!("p{p}.{q}"));
        }
    }
    for g in ["gripper0", "gripper1"] {
        for q in ["x", "y", "z", "radius"] {
            v.push(format!("{g}.{q}"));
        }
    }
    v
}

impl RowTask for ClothTask {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    /// The cloth engine's adjoint is `f64`.
    fn step_in_f64(&self) -> bool {
        true
    }

    /// One control step of one env, generic over the scalar: one pick-and-place of action
    /// `a` from the state row `s`; returns the next state row (counter + 1).
    fn step_row<T: Real>(&self, s: &[T], a: &[T]) -> Vec<T> {
        let mut st = self.unpack(s);
        let act = self.world_action(a);
        pick_place(&self.cloth, &mut st, &act);
        self.pack(&st, s[self.step_index()] + T::one())
    }
    /// Adjoint of [`Self::step_row`] through the engine's checkpointed reverse sweep
    /// under [`ClothTaskConfig::grad`] (run in `f64` on the primal values): accumulates
    /// into `adj_s` and `adj_a`.
    fn step_row_vjp<T: Real>(
        &self,
        s: &[T],
        a: &[T],
        adj_next: &[T],
        adj_s: &mut [T],
        adj_a: &mut [T],
    ) {
        let n = self.n_particles();
        let s64: Vec<f64> = s.iter().map(|x| x.re()).collect();
        let a64: Vec<f64> = a.iter().map(|x| x.re()).collect();
        let u: Vec<f64> = adj_next.iter().map(|x| x.re()).collect();
        let st = self.unpack(&s64);
        let act = self.world_action(&a64);
        let ua = self.unpack(&u);
        let mut adj = StateAdj {
            x: ua.x,
            v: ua.v,
            gripper: ua.gripper,
        };
        let (adj_w, _) = pick_place_vjp(
            &self.cloth,
            &st,
            &act,
            self.cfg.checkpoint_every,
            self.cfg.grad,
            &mut adj,
        );
        let flat = adj
            .x
            .iter()
            .flatten()
            .chain(adj.v.iter().flatten())
            .chain(adj.gripper.iter());
        for (o, g) in adj_s[..6 * n + 3].iter_mut().zip(flat) {
            *o += T::cst(*g);
        }
        let k = self.step_index();
        adj_s[k] += adj_next[k];
        let mut ga = [0.0; 6];
        self.world_action_vjp(&a64, &adj_w, &mut ga);
        for (o, g) in adj_a.iter_mut().zip(ga) {
            *o += T::cst(g);
        }
    }
    /// Observation of one state row: the observed particles' positions, `gripper0 =
    /// (gripper, radius)` and `gripper1 = (1, 1, 1, radius)`.
    fn observe_row<T: Real>(&self, s: &[T], obs: &mut [T]) {
        let n = self.n_particles();
        for (k, &p) in self.observed.iter().enumerate() {
            obs[3 * k..3 * k + 3].copy_from_slice(&s[3 * p..3 * p + 3]);
        }
        let o = 3 * self.observed.len();
        let r = T::cst(self.cfg.cloth.gripper_radius);
        obs[o..o + 3].copy_from_slice(&s[6 * n..6 * n + 3]);
        obs[o + 3] = r;
        for d in 0..3 {
            obs[o + 4 + d] = T::cst(GRIPPER1[d]);
        }
        obs[o + 7] = r;
    }
    /// Adjoint of [`Self::observe_row`] (accumulates; the constant entries have none).
    fn observe_row_vjp<T: Real>(&self, _s: &[T], adj_obs: &[T], adj_s: &mut [T]) {
        let n = self.n_particles();
        for (k, &p) in self.observed.iter().enumerate() {
            for d in 0..3 {
                adj_s[3 * p + d] += adj_obs[3 * k + d];
            }
        }
        let o = 3 * self.observed.len();
        for d in 0..3 {
            adj_s[6 * n + d] += adj_obs[o + d];
        }
    }
    /// DaXBench's auxiliary reward `exp(−contact distance)`: from the pick point (the
    /// action's pick xz on the ground) to the nearest particle of the pre-step state.
    fn aux_row<T: Real>(&self, s: &[T], a: &[T]) -> Option<T> {
        let w = self.world_action(a);
        Some(contact_aux(&[w[0], w[1], w[2]], s, self.n_particles(), 3))
    }
    /// Adjoint of [`Self::aux_row`]: to the nearest particle and, through the pick
    /// mapping (not where clipped), to the action.
    fn aux_row_vjp<T: Real>(&self, s: &[T], a: &[T], adj: T, adj_s: &mut [T], adj_a: &mut [T]) {
        let w = self.world_action(a);
        let mut adj_p = [T::zero(); 3];
        contact_aux_vjp(
            &[w[0], w[1], w[2]],
            s,
            self.n_particles(),
            3,
            adj,
            &mut adj_p,
            adj_s,
        );
        let h = self.cfg.action_half;
        for (k, d, c) in [(0, 0, 0), (2, 1, 2)] {
            if a[k].re().abs() <= 1.0 {
                adj_a[k] += adj_p[c] * T::cst(h[d]);
            }
        }
    }
    /// Reward `exp(−10·CD)·0.99^step` of a state row.
    fn reward_row<T: Real>(&self, s: &[T], _a: &[T]) -> T {
        let step = s[self.step_index()];
        (T::cst(-10.0) * self.chamfer_row(s) + step * T::cst(STEP_DISCOUNT.ln())).exp()
    }
    /// Adjoint of [`Self::reward_row`] (accumulates): the derivative of the selected
    /// pairs (see the module documentation) and `r·ln 0.99` for the counter.
    fn reward_row_vjp<T: Real>(
        &self,
        s: &[T],
        _a: &[T],
        adj_r: T,
        adj_s: &mut [T],
        _adj_a: &mut [T],
    ) {
        let s64: Vec<f64> = s.iter().map(|x| x.re()).collect();
        let r = self.reward_row(&s64, &[]);
        let ar = adj_r.re() * r;
        let (to_goal, to_cloth) = self.chamfer_pairs(&s64);
        let mut acc = |i: usize, j: usize, w: f64| {
            let g = &self.goal[j];
            let e: V3<f64> = std::array::from_fn(|d| s64[3 * i + d] - g[d]);
            let q = e[0] * e[0] + e[1] * e[1] + e[2] * e[2];
            if q <= 0.0 {
                return;
            }
            // ∂√(q/3)/∂x = e/(3·√(q/3))
            let dist = (q / 3.0).sqrt();
            for d in 0..3 {
                adj_s[3 * i + d] += T::cst(w * e[d] / (3.0 * dist));
            }
        };
        let wa = -10.0 * ar / to_goal.len() as f64;
        for (i, &j) in to_goal.iter().enumerate() {
            acc(i, j, wa);
        }
        let wb = -10.0 * ar / to_cloth.len() as f64;
        for (j, &i) in to_cloth.iter().enumerate() {
            acc(i, j, wb);
        }
        let k = self.step_index();
        adj_s[k] += T::cst(ar * STEP_DISCOUNT.ln());
    }
    fn reset_row(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]) {
        let (st, step) = self.start_state(rng, stochastic);
        let row = self.pack(&st, step);
        s.iter_mut().zip(row).for_each(|(o, v)| *o = v as f32);
    }

    fn scene_row(&self, state: ArrayView1<f32>) -> Option<Scene> {
        let n = self.n_particles();
        let h = self.cfg.cloth.spacing as f32;
        let positions: Vec<[f32; 3]> = (0..n)
            .map(|p| [state[3 * p], state[3 * p + 1], state[3 * p + 2]])
            .collect();
        let centre = positions.iter().fold([0.0f32; 3], |mut c, p| {
            for d in 0..3 {
                c[d] += p[d] / n as f32;
            }
            c
        });
        Some(Scene {
            prims: vec![
                Prim::Points {
                    positions,
                    radius: 0.4 * h,
                },
                Prim::Sphere {
                    center: [state[6 * n], state[6 * n + 1], state[6 * n + 2]],
                    radius: self.cfg.cloth.gripper_radius as f32,
                },
                Prim::Points {
                    positions: self.goal.iter().map(|g| g.map(|c| c as f32)).collect(),
                    radius: 0.15 * h,
                },
            ],
            ground_y: Some(0.0),
            focus: Some(centre),
        })
    }
}

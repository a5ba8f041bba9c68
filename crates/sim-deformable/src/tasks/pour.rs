//! `pour-water` and `pour-soup` (DaXBench `pour_water_env.py`, `pour_soup_env.py`,
//! tasks.md §7.2): a bowl held by the robot is moved and tilted to pour its contents into a
//! second, static bowl.
//!
//! - **Scene**: MPM with two of DaXBench's containers (cut hollow spheres, friction 0.1,
//!   softness 666): the holding bowl (radius 0.09, cut 0, half thickness 0.008, at
//!   (0.5, 0.2, 0.5)) and the target bowl (radius 0.08 at (0.5, 0.06, 0.3)). Liquid
//!   particles have μ = 0 and DaXBench's hard-coded λ = 1 ([`MpmParams::liquid_lambda`]);
//!   every particle has DaXBench's mass `(dx/2)³` (density factor 1: DaXBench's per-body
//!   "density" sets only the particle count).
//!   - `pour-water`: 80-grid, dt 3e-4, 23 substeps per step, 702 liquid particles uniform
//!     in a 0.07 cube at (0.5, 0.2, 0.5) (int(0.07³·80³·4)); ground friction 0.1.
//!   - `pour-soup`: 128-grid, dt 4e-4, 25 substeps, E 100, ν 0.1: 2877 liquid particles in
//!     the same cube, two elastic "tofu" cubes of 7³ particles (0.03 wide, hardness 0.3)
//!     and a procedural broccoli of 4068 elastic particles (hardness 0.3; DaXBench loads a
//!     scanned point cloud, `models/veg/model.pcd`, which is not ours to ship): 7631
//!     particles, DaXBench's count.
//! - **Grid window** (a documented deviation): DaXBench re-centres a small window on the
//!   particles' mean before every step (pour-water: 26×20×26 cells, which leaves the target
//!   bowl mostly outside it, with walls moving along). Here a fixed window covers the
//!   whole workspace of both bowls (pour-water 64×24×64 cells from cell (8, 0, 8);
//!   pour-soup 96×48×96 from (16, 0, 16)); the engine only visits nodes that particles
//!   touch, so the larger window costs memory, not time.
//! - **Action** (6-D, each clipped to [−1, 1], zero derivative where clipped): the holding
//!   bowl moves by `(a₀, 0, a₂)·translation_scale` (DaXBench zeroes y; 1/500 per unit)
//!   and turns by the rotation vector `(a₃, a₄, a₅)·rotation_scale` in the world frame
//!   about its centre over the step's substeps at constant velocity. DaXBench divides the
//!   rotation by 500 too but its keyboard expert commands 30 units, so a policy limited to
//!   [−1, 1] could not tilt the bowl 11° in an episode; `rotation_scale` defaults to the
//!   expert's 30/500 rad per unit action per step.
//! - **State**: per particle x, v, C, F (24 numbers), then the holding bowl's centre (3),
//!   orientation quaternion (4) and last displacement (3).
//! - **Observation**: x, v of the particles and the holding bowl's centre over the step's
//!   substeps (23×3): 4281 numbers for pour-water and 45861 for pour-soup, DaXBench's
//!   `observation_size`s.
//! - **Reward**: exp(−10·L) to the goal, index-matched (`datasets/goals/<task>/goal.json`,
//!   made by `examples/make_goals.rs` from [`PourConfig::goal_actions`], a scripted pour).
//! - **Episode**: 100 steps (pour-soup 120). Reset: the holding bowl and its contents
//!   shifted together in xz by N(0, 0.02²) (DaXBench shifts only the bowl, so its liquid
//!   starts off-centre by the shift, possibly inside the wall).

use super::common::{
    load_goal, particle_obs_names, particle_path_observe, particle_path_observe_vjp,
    particle_state_names, shape_reward, shape_reward_vjp, xz_shift,
};
use super::row::RowTask;
use crate::checkpoint;
use crate::mat3::V3;
use crate::mpm::{Material, MpmModel, MpmParams, MpmRun, MpmState, ParticleMaterial};
use crate::primitive::{quat_exp, quat_mul, quat_rotate, Primitive, PrimitiveState};
use diff_core::{seeded, Dual, Error, Prim, Real, Result, Scene, SeededRng, TaskSpec};
use ndarray::ArrayView1;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How a body's particles are placed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BodyShape {
    /// `count` particles uniform in the box (DaXBench's `add_box` for liquids).
    RandomBox {
        center: [f64; 3],
        size: [f64; 3],
        count: usize,
    },
    /// `per_axis³` particles at the cell centres of a regular lattice filling the box.
    LatticeBox {
        center: [f64; 3],
        size: [f64; 3],
        per_axis: usize,
    },
    /// A procedural broccoli of `count` particles, `height` tall, its base at
    /// `center − height/2`: a stem and a dome of seven florets.
    Broccoli {
        center: [f64; 3],
        height: f64,
        count: usize,
    },
}

/// A group of particles of one material.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub shape: BodyShape,
    pub material: Material,
    pub hardness: f64,
}

/// A bowl (DaXBench's container) and where it starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BowlConfig {
    pub radius: f64,
    pub cut: f64,
    pub thickness: f64,
    pub center: [f64; 3],
}

impl BowlConfig {
    fn primitive(&self) -> Primitive {
        Primitive::bowl(self.radius, self.cut, self.thickness)
    }
}

/// Where the goal comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PourGoal {
    /// A JSON array of `[x, y, z]` positions, relative to the workspace root.
    File(String),
    /// The particles after these actions from the deterministic start.
    Actions(Vec<[f64; 6]>),
}

/// Parameters of a pouring task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PourConfig {
    pub name: String,
    pub mpm: MpmParams,
    pub bodies: Vec<Body>,
    /// The bowl the actions move.
    pub holder: BowlConfig,
    /// The static bowl to pour into.
    pub target: BowlConfig,
    /// Displacement of the holding bowl per unit action per step, m (DaXBench: 1/500).
    pub translation_scale: f64,
    /// Rotation of the holding bowl per unit action per step, rad (see the module docs).
    pub rotation_scale: f64,
    pub substeps: usize,
    pub episode_length: usize,
    /// Standard deviation of the reset shift in x and z.
    pub reset_shift: f64,
    /// Seed of the particles' placement (fixed: every reset starts from the same cloud).
    pub particle_seed: u64,
    pub checkpoint_every: usize,
    /// DaXBench's per-substep `norm_grad` (see `MpmRun::grad_clip`).
    pub grad_clip: Option<f64>,
    pub goal: PourGoal,
}

fn holder() -> BowlConfig {
    BowlConfig {
        radius: 0.09,
        cut: 0.0,
        thickness: 0.008,
        center: [0.5, 0.2, 0.5],
    }
}

fn target() -> BowlConfig {
    BowlConfig {
        radius: 0.08,
        cut: 0.0,
        thickness: 0.008,
        center: [0.5, 0.06, 0.3],
    }
}

fn water(count: usize) -> Body {
    Body {
        shape: BodyShape::RandomBox {
            center: [0.5, 0.2, 0.5],
            size: [0.07; 3],
            count,
        },
        material: Material::Liquid,
        hardness: 1.0,
    }
}

impl PourConfig {
    /// `pour-water` with DaXBench's parameters.
    pub fn water() -> Self {
        PourConfig {
            name: "pour-water".into(),
            mpm: MpmParams {
                n_grid: 80,
                origin: [8, 0, 8],
                res: [64, 24, 64],
                dt: 3e-4,
                gravity: [0.0, -9.8, 0.0],
                // unused by the liquid (λ = 1 below), as in DaXBench
                youngs_modulus: 5e-5,
                poisson_ratio: 0.4999,
                density: 1.0,
                ground_friction: 0.1,
                liquid_lambda: Some(1.0),
                ..MpmParams::default()
            },
            bodies: vec![water(702)],
            holder: holder(),
            target: target(),
            translation_scale: 1.0 / 500.0,
            rotation_scale: 30.0 / 500.0,
            substeps: 23,
            episode_length: 100,
            reset_shift: 0.02,
            particle_seed: 0,
            checkpoint_every: 23,
            grad_clip: Some(1.0),
            goal: PourGoal::File("datasets/goals/pour-water/goal.json".into()),
        }
    }

    /// `pour-soup` with DaXBench's parameters.
    pub fn soup() -> Self {
        let tofu = |center: [f64; 3]| Body {
            shape: BodyShape::LatticeBox {
                center,
                size: [0.03; 3],
                per_axis: 7,
            },
            material: Material::Elastic,
            hardness: 0.3,
        };
        PourConfig {
            name: "pour-soup".into(),
            mpm: MpmParams {
                n_grid: 128,
                origin: [16, 0, 16],
                res: [96, 48, 96],
                dt: 4e-4,
                gravity: [0.0, -9.8, 0.0],
                youngs_modulus: 100.0,
                poisson_ratio: 0.1,
                density: 1.0,
                ground_friction: 0.1,
                liquid_lambda: Some(1.0),
                ..MpmParams::default()
            },
            bodies: vec![
                water(2877),
                tofu([0.47, 0.2, 0.5]),
                tofu([0.5, 0.2, 0.55]),
                Body {
                    shape: BodyShape::Broccoli {
                        center: [0.55, 0.2, 0.5],
                        height: 0.05,
                        count: 4068,
                    },
                    material: Material::Elastic,
                    hardness: 0.3,
                },
            ],
            substeps: 25,
            episode_length: 120,
            checkpoint_every: 25,
            goal: PourGoal::File("datasets/goals/pour-soup/goal.json".into()),
            ..PourConfig::water()
        }
    }

    /// The configuration of a registered pouring task.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "pour-water" => Some(Self::water()),
            "pour-soup" => Some(Self::soup()),
            _ => None,
        }
    }

    /// The goal script: carry the bowl towards the target (−z) for 60 steps while tilting
    /// it towards the target from step 20 to 44 (1.44 rad), then hold it over the target
    /// until the episode ends.
    pub fn goal_actions(&self) -> Vec<[f64; 6]> {
        (0..self.episode_length)
            .map(|k| {
                let mv = if k < 60 { -1.0 } else { 0.0 };
                let tilt = if (20..44).contains(&k) { -1.0 } else { 0.0 };
                [0.0, 0.0, mv, tilt, 0.0, 0.0]
            })
            .collect()
    }

    /// A small scene for tests: 10 liquid particles and 6 elastic ones at the bottom of
    /// the holding bowl (in its wall's influence), 4 substeps per step, exact gradients.
    pub fn tiny() -> Self {
        PourConfig {
            name: "pour-tiny".into(),
            mpm: MpmParams {
                n_grid: 24,
                origin: [0, 0, 0],
                res: [24, 14, 24],
                dt: 1e-3,
                youngs_modulus: 20.0,
                poisson_ratio: 0.2,
                ..PourConfig::water().mpm
            },
            bodies: vec![
                Body {
                    shape: BodyShape::RandomBox {
                        center: [0.5, 0.15, 0.5],
                        size: [0.06; 3],
                        count: 10,
                    },
                    material: Material::Liquid,
                    hardness: 1.0,
                },
                Body {
                    shape: BodyShape::Broccoli {
                        center: [0.52, 0.16, 0.5],
                        height: 0.04,
                        count: 6,
                    },
                    material: Material::Elastic,
                    hardness: 0.5,
                },
            ],
            holder: BowlConfig {
                radius: 0.2,
                cut: 0.02,
                thickness: 0.03,
                center: [0.5, 0.3, 0.5],
            },
            target: BowlConfig {
                radius: 0.15,
                cut: 0.0,
                thickness: 0.03,
                center: [0.5, 0.1, 0.2],
            },
            translation_scale: 0.02,
            rotation_scale: 0.3,
            substeps: 4,
            episode_length: 5,
            checkpoint_every: 3,
            grad_clip: None,
            goal: PourGoal::Actions(vec![[0.5, 0.0, -0.5, -0.5, 0.2, 0.0]; 2]),
            ..PourConfig::water()
        }
    }
}

/// Samples the bodies' particles (deterministic in `seed`).
fn place_particles(bodies: &[Body], seed: u64) -> Vec<(V3<f64>, ParticleMaterial)> {
    let mut rng = seeded(seed, 0);
    let mut out = Vec::new();
    for b in bodies {
        let mat = ParticleMaterial {
            material: b.material,
            hardness: b.hardness,
        };
        match &b.shape {
            BodyShape::RandomBox {
                center,
                size,
                count,
            } => {
                for _ in 0..*count {
                    let p = std::array::from_fn(|d| center[d] + size[d] * (rng.gen::<f64>() - 0.5));
                    out.push((p, mat.clone()));
                }
            }
            BodyShape::LatticeBox {
                center,
                size,
                per_axis,
            } => {
                let n = *per_axis;
                for i in 0..n * n * n {
                    let idx = [i / (n * n), (i / n) % n, i % n];
                    let p = std::array::from_fn(|d| {
                        center[d] + size[d] * ((idx[d] as f64 + 0.5) / n as f64 - 0.5)
                    });
                    out.push((p, mat.clone()));
                }
            }
            BodyShape::Broccoli {
                center,
                height,
                count,
            } => {
                for p in broccoli(*center, *height, *count, &mut rng) {
                    out.push((p, mat.clone()));
                }
            }
        }
    }
    out
}

/// `count` points uniform (by rejection) in a broccoli: a vertical stem (radius
/// 0.12·height, from the base to 0.55·height) and seven spherical florets (radius
/// 0.22·height) on a dome above it.
fn broccoli(center: [f64; 3], height: f64, count: usize, rng: &mut SeededRng) -> Vec<V3<f64>> {
    let h = height;
    let base = [center[0], center[1] - 0.5 * h, center[2]];
    let stem_r = 0.12 * h;
    let stem_top = 0.55 * h;
    let fr = 0.22 * h;
    let mut florets = vec![[0.0, 0.72 * h, 0.0]];
    for k in 0..6 {
        let a = k as f64 * std::f64::consts::PI / 3.0;
        florets.push([0.27 * h * a.cos(), 0.62 * h, 0.27 * h * a.sin()]);
    }
    let half_w = 0.27 * h + fr;
    let inside = |p: &[f64; 3]| {
        let stem = p[1] >= 0.0 && p[1] <= stem_top && p[0] * p[0] + p[2] * p[2] <= stem_r * stem_r;
        stem || florets
            .iter()
            .any(|f| (0..3).map(|d| (p[d] - f[d]).powi(2)).sum::<f64>() <= fr * fr)
    };
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let p = [
            half_w * (2.0 * rng.gen::<f64>() - 1.0),
            (0.72 * h + fr) * rng.gen::<f64>(),
            half_w * (2.0 * rng.gen::<f64>() - 1.0),
        ];
        if inside(&p) {
            out.push(std::array::from_fn(|d| base[d] + p[d]));
        }
    }
    out
}

/// A pouring task.
pub struct Pour {
    cfg: PourConfig,
    model: MpmModel,
    rest: Vec<V3<f64>>,
    goal: Vec<V3<f64>>,
    spec: TaskSpec,
}

/// Number of numbers after the particles in a state row.
const EXTRA: usize = 10;

impl Pour {
    /// The registered task `name` (`pour-water`, `pour-soup`).
    pub fn new(name: &str) -> Result<Pour> {
        let cfg = PourConfig::by_name(name).ok_or_else(|| Error::InvalidParameter {
            name: "task".into(),
            reason: format!("{name} is not a pouring task"),
        })?;
        Pour::with_config(cfg)
    }

    /// The task for `cfg` (checked before anything is simulated).
    pub fn with_config(cfg: PourConfig) -> Result<Pour> {
        let bad = |name: &str, reason: String| Error::InvalidParameter {
            name: name.into(),
            reason,
        };
        if cfg.substeps == 0 || cfg.episode_length == 0 || cfg.checkpoint_every == 0 {
            return Err(bad(
                "substeps/episode_length/checkpoint_every",
                "must be positive".into(),
            ));
        }
        if !(cfg.translation_scale > 0.0 && cfg.rotation_scale >= 0.0) {
            return Err(bad(
                "translation_scale/rotation_scale",
                "must be positive".into(),
            ));
        }
        if !(cfg.reset_shift.is_finite() && cfg.reset_shift >= 0.0) {
            return Err(bad(
                "reset_shift",
                format!("{} is not a standard deviation", cfg.reset_shift),
            ));
        }
        for (which, b) in [("holder", &cfg.holder), ("target", &cfg.target)] {
            if !(b.radius > 0.0 && b.thickness > 0.0 && b.cut.abs() < b.radius) {
                return Err(bad(
                    which,
                    format!("a bowl needs radius > 0, thickness > 0 and |cut| < radius: {b:?}"),
                ));
            }
        }
        let placed = place_particles(&cfg.bodies, cfg.particle_seed);
        if placed.is_empty() {
            return Err(bad("bodies", "no particles".into()));
        }
        let (rest, mats): (Vec<V3<f64>>, Vec<ParticleMaterial>) = placed.into_iter().unzip();
        let model = MpmModel::new(
            cfg.mpm.clone(),
            mats,
            vec![cfg.holder.primitive(), cfg.target.primitive()],
        )?;
        model
            .check_particles(&MpmState::at_rest(rest.clone()))
            .map_err(|e| {
                bad(
                    "bodies",
                    format!("the particles do not fit the grid window: {e}"),
                )
            })?;
        let n = rest.len();
        let spec = TaskSpec {
            name: cfg.name.clone(),
            state_dim: 24 * n + EXTRA,
            obs_dim: 6 * n + 3 * cfg.substeps,
            act_dim: 6,
            episode_length: cfg.episode_length,
            dt: cfg.mpm.dt * cfg.substeps as f64,
            state_names: particle_state_names(
                n,
                &[
                    "bowl.x", "bowl.y", "bowl.z", "bowl.qw", "bowl.qx", "bowl.qy", "bowl.qz",
                    "last.dx", "last.dy", "last.dz",
                ],
            ),
            obs_names: particle_obs_names(n, "bowl", cfg.substeps),
        };
        let mut task = Pour {
            model,
            rest,
            goal: Vec::new(),
            spec,
            cfg,
        };
        task.goal = match &task.cfg.goal {
            PourGoal::File(rel) => load_goal(rel, n)?,
            PourGoal::Actions(actions) => task.particles_after(actions),
        };
        Ok(task)
    }

    /// The configuration.
    pub fn config(&self) -> &PourConfig {
        &self.cfg
    }

    /// The goal positions.
    pub fn goal(&self) -> &[V3<f64>] {
        &self.goal
    }

    /// Number of particles.
    pub fn n_particles(&self) -> usize {
        self.rest.len()
    }

    /// Material of every particle.
    pub fn materials(&self) -> &[ParticleMaterial] {
        &self.model.particles
    }

    /// The deterministic start shifted by `shift` in xz, as a state row.
    pub fn start_row(&self, shift: [f64; 2]) -> Vec<f64> {
        let sh = [shift[0], 0.0, shift[1]];
        let x: Vec<V3<f64>> = self
            .rest
            .iter()
            .map(|p| std::array::from_fn(|d| p[d] + sh[d]))
            .collect();
        let mut row = MpmState::at_rest(x).to_flat();
        row.extend((0..3).map(|d| self.cfg.holder.center[d] + sh[d]));
        row.extend_from_slice(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        row
    }

    /// The particle positions after `actions` from the deterministic start, in f64.
    pub fn particles_after(&self, actions: &[[f64; 6]]) -> Vec<V3<f64>> {
        let mut s = self.start_row([0.0, 0.0]);
        for a in actions {
            s = self.step_row(&s, a);
        }
        MpmState::from_flat(&s[..24 * self.n_particles()]).x
    }

    /// Fraction of the particles inside the target bowl (within its radius of its centre
    /// and below its rim): how much was poured.
    pub fn fraction_in_target(&self, x: &[V3<f64>]) -> f64 {
        let t = &self.cfg.target;
        let inside = x
            .iter()
            .filter(|p| {
                let r2: f64 = (0..3).map(|d| (p[d] - t.center[d]).powi(2)).sum();
                r2 < t.radius * t.radius && p[1] < t.center[1] + t.cut
            })
            .count();
        inside as f64 / x.len().max(1) as f64
    }

    /// The holding bowl's centre and orientation in a state row.
    pub fn holder_pose<T: Real>(&self, s: &[T]) -> (V3<T>, [T; 4]) {
        let o = 24 * self.n_particles();
        (
            [s[o], s[o + 1], s[o + 2]],
            [s[o + 3], s[o + 4], s[o + 5], s[o + 6]],
        )
    }

    /// The displacement and rotation vector of action `a` (clipped to [−1, 1]; y of the
    /// displacement zeroed).
    fn motion<T: Real>(&self, a: &[T]) -> (V3<T>, V3<T>) {
        let clip = |x: T| {
            if x.re() > 1.0 {
                T::one()
            } else if x.re() < -1.0 {
                -T::one()
            } else {
                x
            }
        };
        let kt = T::cst(self.cfg.translation_scale);
        let kr = T::cst(self.cfg.rotation_scale);
        (
            [clip(a[0]) * kt, T::zero(), clip(a[2]) * kt],
            [clip(a[3]) * kr, clip(a[4]) * kr, clip(a[5]) * kr],
        )
    }

    /// The holding bowl over one step from centre `g` and orientation `q` moved by `disp`
    /// and turned by `turn`: its state at every substep, then its final centre and
    /// orientation.
    fn holder_path<T: Real>(
        &self,
        g: &V3<T>,
        q: &[T; 4],
        disp: &V3<T>,
        turn: &V3<T>,
    ) -> (Vec<PrimitiveState<T>>, V3<T>, [T; 4]) {
        let k_all = self.cfg.substeps;
        let inv = T::cst(1.0 / (k_all as f64 * self.cfg.mpm.dt));
        let vel: V3<T> = std::array::from_fn(|d| disp[d] * inv);
        let ang: V3<T> = std::array::from_fn(|d| turn[d] * inv);
        let states = (0..k_all)
            .map(|k| {
                let f = T::cst(k as f64 / k_all as f64);
                let part: V3<T> = std::array::from_fn(|d| turn[d] * f);
                PrimitiveState {
                    pos: std::array::from_fn(|d| g[d] + disp[d] * f),
                    vel,
                    rot: quat_mul(&quat_exp(&part), q),
                    ang,
                }
            })
            .collect();
        let g_next = std::array::from_fn(|d| g[d] + disp[d]);
        let q_next = quat_mul(&quat_exp(turn), q);
        (states, g_next, q_next)
    }

    fn target_state<T: Real>(&self) -> PrimitiveState<T> {
        PrimitiveState::translating(self.cfg.target.center.map(T::cst), [T::zero(); 3])
    }

    fn run<'a, T: Real>(&'a self, path: &[PrimitiveState<T>]) -> MpmRun<'a, T> {
        let target = self.target_state();
        MpmRun::new(&self.model, path.iter().map(|h| vec![*h, target]).collect())
    }

    /// Points on the shell's mid-surface of a bowl at `c` with orientation `q` (for
    /// drawing).
    fn bowl_points(b: &BowlConfig, c: &V3<f32>, q: &[f32; 4]) -> Vec<[f32; 3]> {
        let mut pts = Vec::new();
        let top = (b.cut / b.radius).asin();
        for i in 0..8 {
            // polar angle from the bottom up to the cut
            let th = (top + std::f64::consts::FRAC_PI_2) * (i as f64 + 0.5) / 8.0;
            let ring = (th.sin() * 24.0).ceil().max(1.0) as usize;
            for j in 0..ring {
                let ph = 2.0 * std::f64::consts::PI * j as f64 / ring as f64;
                let l = [
                    b.radius * th.sin() * ph.cos(),
                    -b.radius * th.cos(),
                    b.radius * th.sin() * ph.sin(),
                ]
                .map(|x| x as f32);
                let w = quat_rotate(q, &l, false);
                pts.push(std::array::from_fn(|d| c[d] + w[d]));
            }
        }
        pts
    }
}

impl RowTask for Pour {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn step_row<T: Real>(&self, s: &[T], a: &[T]) -> Vec<T> {
        let n = self.n_particles();
        let (g, q) = self.holder_pose(s);
        let (disp, turn) = self.motion(a);
        let (path, g_next, q_next) = self.holder_path(&g, &q, &disp, &turn);
        let run = self.run(&path);
        let st = MpmState::from_flat(&s[..24 * n]);
        let mut out = checkpoint::forward(&run, &st, self.cfg.substeps).to_flat();
        out.extend_from_slice(&g_next);
        out.extend_from_slice(&q_next);
        out.extend_from_slice(&disp);
        out
    }

    fn step_row_vjp<T: Real>(
        &self,
        s: &[T],
        a: &[T],
        adj_next: &[T],
        adj_s: &mut [T],
        adj_a: &mut [T],
    ) {
        let n = self.n_particles();
        let o = 24 * n;
        let (g, q) = self.holder_pose(s);
        let (disp, turn) = self.motion(a);
        let (path, _, _) = self.holder_path(&g, &q, &disp, &turn);
        let mut run = self.run(&path);
        run.grad_clip = self.cfg.grad_clip;
        let st = MpmState::from_flat(&s[..o]);
        let mut adj = run.zero_adj();
        adj.state = MpmState::from_flat(&adj_next[..o]);
        checkpoint::vjp_checkpointed(
            &run,
            &st,
            self.cfg.substeps,
            self.cfg.checkpoint_every,
            &mut adj,
        );
        for (x, v) in adj_s[..o].iter_mut().zip(adj.state.to_flat()) {
            *x += v;
        }
        // the bowl's path is a small map of 13 inputs (g, q, disp, turn): its adjoint from
        // the exact Jacobian, one dual-number pass per input through `holder_path`
        let x0: Vec<f64> = g
            .iter()
            .chain(&q)
            .chain(&disp)
            .chain(&turn)
            .map(|x| x.re())
            .collect();
        let mut adj_in = [T::zero(); 13];
        for (i, adj_i) in adj_in.iter_mut().enumerate() {
            let x: Vec<Dual<f64>> = (0..13)
                .map(|j| Dual::new(x0[j], if i == j { 1.0 } else { 0.0 }))
                .collect();
            let (path, g_next, q_next) = self.holder_path(
                &[x[0], x[1], x[2]],
                &[x[3], x[4], x[5], x[6]],
                &[x[7], x[8], x[9]],
                &[x[10], x[11], x[12]],
            );
            let mut acc = T::zero();
            for (k, ps) in path.iter().enumerate() {
                let ap = adj.prims[k][0].to_array();
                for (aj, pj) in ap.iter().zip(ps.to_array()) {
                    acc += *aj * T::cst(pj.eps);
                }
            }
            for d in 0..3 {
                acc += adj_next[o + d] * T::cst(g_next[d].eps);
            }
            for d in 0..4 {
                acc += adj_next[o + 3 + d] * T::cst(q_next[d].eps);
            }
            if (7..10).contains(&i) {
                // last = disp
                acc += adj_next[o + 7 + (i - 7)];
            }
            *adj_i = acc;
        }
        for d in 0..7 {
            adj_s[o + d] += adj_in[d];
        }
        let kt = T::cst(self.cfg.translation_scale);
        let kr = T::cst(self.cfg.rotation_scale);
        for (d, j) in [(0, 0), (2, 2)] {
            if a[j].re().abs() <= 1.0 {
                adj_a[j] += adj_in[7 + d] * kt;
            }
        }
        for d in 0..3 {
            if a[3 + d].re().abs() <= 1.0 {
                adj_a[3 + d] += adj_in[10 + d] * kr;
            }
        }
    }

    fn observe_row<T: Real>(&self, s: &[T], obs: &mut [T]) {
        let n = self.n_particles();
        particle_path_observe(s, n, (24 * n, 24 * n + 7), self.cfg.substeps, obs);
    }

    fn observe_row_vjp<T: Real>(&self, _s: &[T], adj_obs: &[T], adj_s: &mut [T]) {
        let n = self.n_particles();
        particle_path_observe_vjp(n, (24 * n, 24 * n + 7), self.cfg.substeps, adj_obs, adj_s);
    }

    fn reward_row<T: Real>(&self, s: &[T], _a: &[T]) -> T {
        shape_reward(s, &self.goal)
    }

    fn reward_row_vjp<T: Real>(
        &self,
        s: &[T],
        _a: &[T],
        adj_r: T,
        adj_s: &mut [T],
        _adj_a: &mut [T],
    ) {
        shape_reward_vjp(s, &self.goal, adj_r, adj_s);
    }

    fn reset_row(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]) {
        let shift = xz_shift(rng, stochastic, self.cfg.reset_shift);
        for (o, v) in s.iter_mut().zip(self.start_row(shift)) {
            *o = v as f32;
        }
    }

    fn scene_row(&self, state: ArrayView1<f32>) -> Option<Scene> {
        let n = self.n_particles();
        let row = state.as_slice()?;
        let (g, q) = self.holder_pose(row);
        let r = (0.25 * self.model.dx()) as f32;
        let (liquid, solid): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&p| self.model.particles[p].material == Material::Liquid);
        let points = |idx: &[usize]| Prim::Points {
            positions: idx
                .iter()
                .map(|&p| [row[24 * p], row[24 * p + 1], row[24 * p + 2]])
                .collect(),
            radius: r,
        };
        let mut prims = vec![points(&liquid)];
        if !solid.is_empty() {
            prims.push(points(&solid));
        }
        let tc = self.cfg.target.center.map(|c| c as f32);
        for pts in [
            Self::bowl_points(&self.cfg.holder, &g, &q),
            Self::bowl_points(&self.cfg.target, &tc, &[1.0, 0.0, 0.0, 0.0]),
        ] {
            prims.push(Prim::Points {
                positions: pts,
                radius: 0.5 * r,
            });
        }
        prims.push(Prim::Points {
            positions: self.goal.iter().map(|g| g.map(|c| c as f32)).collect(),
            radius: 0.4 * r,
        });
        Some(Scene {
            prims,
            ground_y: Some(0.0),
            focus: Some([0.5, 0.1, 0.4]),
        })
    }
}

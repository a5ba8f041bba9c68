//! `whip-rope` (DaXBench `whip_rope_env.py`, tasks.md §7.2): a gripper holds one end of an
//! elastic rope lying on the ground and whips it, by velocity commands, into a goal shape.
//!
//! - **Scene**: MPM on a 64-grid, window 32×32×32 from cell (16, 0, 16); material 1
//!   (elastic), E 100, ν 0.1, density factor 2.75, ground friction 0.1, dt 1e-4. The rope
//!   (0.38 long, DaXBench's box rotated 90° so it runs along z) is a line of 67 particles
//!   at height 0.012 (the lowest a quadratic stencil allows on this grid is dx/2 = 0.0078;
//!   DaXBench's rope is 0.006 thick).
//! - **Gripper**: a position-controlled cube of half size 0.01 at the rope's first end:
//!   grid nodes within 1.5 × 0.01 of its centre take its velocity.
//! - **Action** (6-D, rotation ignored): the gripper moves by a[0..3]/50 (a clipped to
//!   [−1, 1]) over the step's 70 substeps at constant velocity.
//! - **State**: per particle x, v, C, F (24 numbers), then the gripper position and its
//!   last displacement (6).
//! - **Observation**: x, v of the particles (67×6) and the gripper's positions over the
//!   step's substeps (70×3): 612 numbers, DaXBench's `observation_size`.
//! - **Reward**: exp(−10·L) to the goal (index-matched, `datasets/goals/whip-rope/goal.json`,
//!   made by `examples/make_goals.rs` from [`WhipRopeConfig::goal_actions`]).
//! - **Episode**: 70 steps. Reset: gripper and rope shifted together in xz by
//!   N(0, 0.02²) each (DaXBench shifts both; one shared shift keeps the grasp).

use super::common::{
    load_goal, particle_obs_names, particle_path_observe, particle_path_observe_vjp,
    particle_state_names, shape_reward, shape_reward_vjp, xz_shift,
};
use super::row::RowTask;
use crate::checkpoint;
use crate::mat3::V3;
use crate::mpm::{Material, MpmModel, MpmParams, MpmRun, MpmState, ParticleMaterial};
use crate::primitive::{Coupling, Primitive, PrimitiveState, Shape};
use diff_core::{Error, Prim, Real, Result, Scene, SeededRng, TaskSpec};
use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

/// Where the whip-rope goal comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhipGoal {
    /// A JSON array of `[x, y, z]` positions, relative to the workspace root.
    File(String),
    /// The rest rope after these actions from the deterministic start.
    Actions(Vec<[f64; 3]>),
}

/// Parameters of the whip-rope task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhipRopeConfig {
    pub name: String,
    pub mpm: MpmParams,
    /// First and last particle of the rope line.
    pub rope_from: [f64; 3],
    pub rope_to: [f64; 3],
    pub n_particles: usize,
    pub gripper_half: f64,
    /// Gripper displacement per unit action per step (DaXBench: 1/50).
    pub action_scale: f64,
    pub substeps: usize,
    pub episode_length: usize,
    /// Standard deviation of the reset shift in x and z.
    pub reset_shift: f64,
    pub checkpoint_every: usize,
    /// DaXBench's per-substep `norm_grad` (see `MpmRun::grad_clip`).
    pub grad_clip: Option<f64>,
    pub goal: WhipGoal,
}

impl Default for WhipRopeConfig {
    fn default() -> Self {
        WhipRopeConfig {
            name: "whip-rope".into(),
            mpm: MpmParams {
                n_grid: 64,
                origin: [16, 0, 16],
                res: [32, 32, 32],
                dt: 1e-4,
                gravity: [0.0, -9.8, 0.0],
                youngs_modulus: 100.0,
                poisson_ratio: 0.1,
                density: 2.75,
                ground_friction: 0.1,
                ..MpmParams::default()
            },
            rope_from: [0.5, 0.012, 0.31],
            rope_to: [0.5, 0.012, 0.69],
            n_particles: 67,
            gripper_half: 0.01,
            action_scale: 1.0 / 50.0,
            substeps: 70,
            episode_length: 70,
            reset_shift: 0.02,
            checkpoint_every: 70,
            grad_clip: Some(1.0),
            goal: WhipGoal::File("datasets/goals/whip-rope/goal.json".into()),
        }
    }
}

impl WhipRopeConfig {
    /// The goal script's whip: lift and swing the held end towards +x for 10 steps, bring
    /// it back for 10, then hold still for 50 (the rope lands curved).
    pub fn goal_actions() -> Vec<[f64; 3]> {
        let mut a = vec![[1.0, 0.3, 0.2]; 10];
        a.extend(vec![[-1.0, -0.3, 0.2]; 10]);
        a.extend(vec![[0.0; 3]; 50]);
        a
    }

    /// A small scene for tests: 12 particles, 6 substeps per step, exact gradients.
    pub fn tiny() -> Self {
        WhipRopeConfig {
            name: "whip-rope-tiny".into(),
            mpm: MpmParams {
                n_grid: 32,
                origin: [8, 0, 8],
                res: [16, 16, 16],
                dt: 1e-3,
                ..WhipRopeConfig::default().mpm
            },
            rope_from: [0.5, 0.02, 0.4],
            rope_to: [0.5, 0.02, 0.6],
            n_particles: 12,
            gripper_half: 0.02,
            substeps: 6,
            episode_length: 5,
            checkpoint_every: 4,
            grad_clip: None,
            goal: WhipGoal::Actions(vec![[0.5, 0.2, 0.0], [0.0; 3]]),
            ..WhipRopeConfig::default()
        }
    }
}

/// The whip-rope task.
pub struct WhipRope {
    cfg: WhipRopeConfig,
    model: MpmModel,
    rest: Vec<V3<f64>>,
    goal: Vec<V3<f64>>,
    spec: TaskSpec,
}

impl WhipRope {
    /// `whip-rope` with DaXBench's parameters.
    pub fn new() -> Result<WhipRope> {
        WhipRope::with_config(WhipRopeConfig::default())
    }

    /// The task for `cfg` (checked before anything is simulated).
    pub fn with_config(cfg: WhipRopeConfig) -> Result<WhipRope> {
        let bad = |name: &str, reason: &str| Error::InvalidParameter {
            name: name.into(),
            reason: reason.into(),
        };
        if cfg.n_particles < 2 {
            return Err(bad("n_particles", "a rope needs at least 2 particles"));
        }
        if cfg.substeps == 0 || cfg.episode_length == 0 || cfg.checkpoint_every == 0 {
            return Err(bad(
                "substeps/episode_length/checkpoint_every",
                "must be positive",
            ));
        }
        if !(cfg.gripper_half > 0.0 && cfg.action_scale > 0.0) {
            return Err(bad("gripper_half/action_scale", "must be positive"));
        }
        let mats = vec![
            ParticleMaterial {
                material: Material::Elastic,
                hardness: 1.0
            };
            cfg.n_particles
        ];
        let gripper = Primitive {
            shape: Shape::Box {
                half: [cfg.gripper_half; 3],
            },
            friction: 0.0,
            softness: 0.0,
            coupling: Coupling::PositionControl,
            rotating: false,
        };
        let model = MpmModel::new(cfg.mpm.clone(), mats, vec![gripper])?;
        let n = cfg.n_particles;
        let rest: Vec<V3<f64>> = (0..n)
            .map(|i| {
                let f = i as f64 / (n - 1) as f64;
                std::array::from_fn(|d| cfg.rope_from[d] + (cfg.rope_to[d] - cfg.rope_from[d]) * f)
            })
            .collect();
        model
            .check_particles(&MpmState::at_rest(rest.clone()))
            .map_err(|e| Error::InvalidParameter {
                name: "rope_from/rope_to".into(),
                reason: format!("the rope does not fit the grid window: {e}"),
            })?;
        let spec = TaskSpec {
            name: cfg.name.clone(),
            state_dim: 24 * n + 6,
            obs_dim: 6 * n + 3 * cfg.substeps,
            act_dim: 6,
            episode_length: cfg.episode_length,
            dt: cfg.mpm.dt * cfg.substeps as f64,
            state_names: particle_state_names(
                n,
                &[
                    "gripper.x",
                    "gripper.y",
                    "gripper.z",
                    "last.dx",
                    "last.dy",
                    "last.dz",
                ],
            ),
            obs_names: particle_obs_names(n, "gripper", cfg.substeps),
        };
        let mut task = WhipRope {
            model,
            rest,
            goal: Vec::new(),
            spec,
            cfg,
        };
        task.goal = match &task.cfg.goal {
            WhipGoal::File(rel) => load_goal(rel, n)?,
            WhipGoal::Actions(actions) => task.rope_after(actions),
        };
        Ok(task)
    }

    /// The configuration.
    pub fn config(&self) -> &WhipRopeConfig {
        &self.cfg
    }

    /// The goal positions.
    pub fn goal(&self) -> &[V3<f64>] {
        &self.goal
    }

    /// The deterministic start (rope at rest, gripper at its first particle) as a state row.
    pub fn start_row(&self, shift: [f64; 2]) -> Vec<f64> {
        let x: Vec<V3<f64>> = self
            .rest
            .iter()
            .map(|p| [p[0] + shift[0], p[1], p[2] + shift[1]])
            .collect();
        let mut row = MpmState::at_rest(x).to_flat();
        row.extend_from_slice(&[
            self.rest[0][0] + shift[0],
            self.rest[0][1],
            self.rest[0][2] + shift[1],
        ]);
        row.extend_from_slice(&[0.0; 3]);
        row
    }

    /// The rope's particle positions after `actions` (x, y, z of the action) from the
    /// deterministic start, in f64.
    pub fn rope_after(&self, actions: &[[f64; 3]]) -> Vec<V3<f64>> {
        let mut s = self.start_row([0.0, 0.0]);
        for a in actions {
            s = self.step_row(&s, &[a[0], a[1], a[2], 0.0, 0.0, 0.0]);
        }
        MpmState::from_flat(&s[..24 * self.cfg.n_particles]).x
    }

    /// The gripper displacement of action `a` (clipped to [−1, 1]); zero derivative where
    /// clipped.
    fn displacement<T: Real>(&self, a: &[T]) -> V3<T> {
        let k = T::cst(self.cfg.action_scale);
        std::array::from_fn(|d| {
            let x = a[d];
            let c = if x.re() > 1.0 {
                T::one()
            } else if x.re() < -1.0 {
                -T::one()
            } else {
                x
            };
            c * k
        })
    }

    /// The gripper's state at every substep of a move by `disp` from `g`.
    fn trajectory<T: Real>(&self, g: &V3<T>, disp: &V3<T>) -> Vec<Vec<PrimitiveState<T>>> {
        let k_all = self.cfg.substeps;
        let inv = T::cst(1.0 / (k_all as f64 * self.cfg.mpm.dt));
        let vel: V3<T> = std::array::from_fn(|d| disp[d] * inv);
        (0..k_all)
            .map(|k| {
                let f = T::cst(k as f64 / k_all as f64);
                vec![PrimitiveState::translating(
                    std::array::from_fn(|d| g[d] + disp[d] * f),
                    vel,
                )]
            })
            .collect()
    }
}

impl RowTask for WhipRope {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn step_row<T: Real>(&self, s: &[T], a: &[T]) -> Vec<T> {
        let n = self.cfg.n_particles;
        let g: V3<T> = [s[24 * n], s[24 * n + 1], s[24 * n + 2]];
        let disp = self.displacement(a);
        let run = MpmRun::new(&self.model, self.trajectory(&g, &disp));
        let st = MpmState::from_flat(&s[..24 * n]);
        let mut out = checkpoint::forward(&run, &st, self.cfg.substeps).to_flat();
        out.extend((0..3).map(|d| g[d] + disp[d]));
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
        let n = self.cfg.n_particles;
        let g: V3<T> = [s[24 * n], s[24 * n + 1], s[24 * n + 2]];
        let disp = self.displacement(a);
        let mut run = MpmRun::new(&self.model, self.trajectory(&g, &disp));
        run.grad_clip = self.cfg.grad_clip;
        let st = MpmState::from_flat(&s[..24 * n]);
        let mut adj = run.zero_adj();
        adj.state = MpmState::from_flat(&adj_next[..24 * n]);
        let k_all = self.cfg.substeps;
        checkpoint::vjp_checkpointed(&run, &st, k_all, self.cfg.checkpoint_every, &mut adj);
        for (o, v) in adj_s[..24 * n].iter_mut().zip(adj.state.to_flat()) {
            *o += v;
        }
        // g' = g + disp, last = disp; pos_k = g + disp·k/K, vel = disp/(K·dt)
        let mut adj_g = [T::zero(); 3];
        let mut adj_disp = [T::zero(); 3];
        for d in 0..3 {
            adj_g[d] += adj_next[24 * n + d];
            adj_disp[d] += adj_next[24 * n + d] + adj_next[24 * n + 3 + d];
        }
        let inv = T::cst(1.0 / (k_all as f64 * self.cfg.mpm.dt));
        for (k, ap) in adj.prims.iter().enumerate() {
            let f = T::cst(k as f64 / k_all as f64);
            for d in 0..3 {
                adj_g[d] += ap[0].pos[d];
                adj_disp[d] += ap[0].pos[d] * f + ap[0].vel[d] * inv;
            }
        }
        for d in 0..3 {
            adj_s[24 * n + d] += adj_g[d];
            if a[d].re().abs() <= 1.0 {
                adj_a[d] += adj_disp[d] * T::cst(self.cfg.action_scale);
            }
        }
    }

    fn observe_row<T: Real>(&self, s: &[T], obs: &mut [T]) {
        let n = self.cfg.n_particles;
        particle_path_observe(s, n, (24 * n, 24 * n + 3), self.cfg.substeps, obs);
    }

    fn observe_row_vjp<T: Real>(&self, _s: &[T], adj_obs: &[T], adj_s: &mut [T]) {
        let n = self.cfg.n_particles;
        particle_path_observe_vjp(n, (24 * n, 24 * n + 3), self.cfg.substeps, adj_obs, adj_s);
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
        let n = self.cfg.n_particles;
        let positions = (0..n)
            .map(|p| [state[24 * p], state[24 * p + 1], state[24 * p + 2]])
            .collect();
        let g: [f32; 3] = std::array::from_fn(|d| state[24 * n + d]);
        let h = self.cfg.gripper_half as f32;
        Some(Scene {
            prims: vec![
                Prim::Points {
                    positions,
                    radius: (0.25 * self.model.dx()) as f32,
                },
                Prim::Box {
                    center: g,
                    rot: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                    half_extents: [h; 3],
                },
                Prim::Points {
                    positions: self.goal.iter().map(|g| g.map(|c| c as f32)).collect(),
                    radius: (0.1 * self.model.dx()) as f32,
                },
            ],
            ground_y: Some(0.0),
            focus: Some([0.5, 0.0, 0.5]),
        })
    }
}

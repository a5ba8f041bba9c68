//! `push-rope` and `push-rope-hard` (DaXBench `shape_rope_env.py`, tasks.md §7.2): push an
//! elasto-plastic rope lying on the ground into a goal shape with a box pusher.
//!
//! - **Scene**: MPM on a 128-grid, simulated in the 64×6×64 window whose lowest cell is
//!   (32, 0, 32) (x, z ∈ [0.25, 0.75)); material 2 (elasto-plastic), E 100, ν 0.1,
//!   hardness 1, density factor 3, ground friction 0.9, dt 5e-5. The rope is the box
//!   0.25 × 0.006 × 0.006 centred at (0.5, 0.01, 0.5), filled with 582 particles drawn
//!   uniformly from a fixed seed. The 6-node-high window makes its 3-node boundary layers
//!   cover every layer, which pins vertical motion, as in the reference.
//! - **Action** (6-D push primitive): start (a₀, ·, a₂) and end (a₃, ·, a₅) of a push in
//!   the xz plane, mapped from [−1, 1] to 0.5 ± 0.2 (our choice: the reference takes world
//!   coordinates; this keeps pushes inside the window's interior); a₁ and a₄ are ignored
//!   (y is forced to 0.01); the push length is clipped to 0.3. The push runs as 30 equal
//!   moves of 133 substeps (3990 substeps per control step), the pusher (half extents
//!   0.015 × 0.06 × 0.015, friction 0.1) starting at the push's start.
//! - **State**: per particle x, v, C, F (24 numbers), then the last push's start and end
//!   (6 numbers, for the observation).
//! - **Observation**: x (N×3), v (N×3), and the pusher's positions over the last move
//!   (133×3): 3891 numbers for N = 582.
//! - **Reward**: exp(−10·L), L the mean over particles of sqrt(mean over xyz of
//!   (x_i − g_i)²), index-matched to the goal (`datasets/goals/push-rope/goal.json`, made by
//!   `cargo run --release -p sim-deformable --example make_goals`).
//! - **Episode**: 6 steps (`push-rope-hard`: 20); no early termination. Reset: 2 random
//!   pushes (`push-rope-hard`: 10) from the straight rope, each from a random particle in
//!   a random direction over 0.1, so no two episodes start alike.
//!
//! The step's adjoint replays the push with checkpoints every `checkpoint_every`
//! substeps (default 133, one move): memory ⌈3990/133⌉ + 133 = 163 states per env.

use super::common::{
    contact_aux, contact_aux_vjp, load_goal, particle_obs_names, particle_state_names, shape_loss,
    shape_reward, shape_reward_vjp,
};
use super::row::RowTask;
use crate::checkpoint;
use crate::mat3::V3;
use crate::mpm::{Material, MpmModel, MpmParams, MpmRun, MpmState, ParticleMaterial};
use crate::primitive::{Primitive, PrimitiveState};
use diff_core::{Dual, Error, Prim, Real, Result, Scene, SeededRng, TaskSpec};
use ndarray::ArrayView1;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Where the goal shape comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoalSource {
    /// A JSON array of `[x, y, z]` particle positions, relative to the workspace root.
    File(String),
    /// The rest rope moved by these pushes, each `[start x, start z, end x, end z]` (used by
    /// the goal script and by small test configurations).
    Pushes(Vec<[f64; 4]>),
}

/// Parameters of the push-rope tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRopeConfig {
    pub name: String,
    pub mpm: MpmParams,
    pub rope_center: [f64; 3],
    pub rope_size: [f64; 3],
    pub n_particles: usize,
    /// Seed of the rope's particle sampling (part of the task, not of the run).
    pub particle_seed: u64,
    pub pusher_half: [f64; 3],
    pub pusher_y: f64,
    /// Centre and half range of the action mapping in x and z.
    pub action_center: [f64; 2],
    pub action_range: f64,
    pub max_push: f64,
    pub moves: usize,
    pub substeps_per_move: usize,
    pub episode_length: usize,
    pub reset_pushes: usize,
    pub reset_push_length: f64,
    pub checkpoint_every: usize,
    /// Pusher start and end stored in the state before any push.
    pub parked_pusher: [f64; 3],
    /// DaXBench's `norm_grad` in the step's reverse sweep: after every substep, NaN/∞ → 0
    /// and the state and action cotangents clipped to global norm ≤ this (1 in DaXBench,
    /// the default). `None` gives the exact gradient.
    pub grad_clip: Option<f64>,
    pub goal: GoalSource,
}

impl Default for PushRopeConfig {
    fn default() -> Self {
        PushRopeConfig {
            name: "push-rope".into(),
            mpm: MpmParams {
                n_grid: 128,
                origin: [32, 0, 32],
                res: [64, 6, 64],
                dt: 5e-5,
                gravity: [0.0, -9.8, 0.0],
                youngs_modulus: 100.0,
                poisson_ratio: 0.1,
                density: 3.0,
                ground_friction: 0.9,
                ..MpmParams::default()
            },
            rope_center: [0.5, 0.01, 0.5],
            rope_size: [0.25, 0.006, 0.006],
            n_particles: 582,
            particle_seed: 0,
            pusher_half: [0.015, 0.06, 0.015],
            pusher_y: 0.01,
            action_center: [0.5, 0.5],
            action_range: 0.2,
            max_push: 0.3,
            moves: 30,
            substeps_per_move: 133,
            episode_length: 6,
            reset_pushes: 2,
            reset_push_length: 0.1,
            checkpoint_every: 133,
            parked_pusher: [0.5, 0.01, 0.3],
            grad_clip: Some(1.0),
            goal: GoalSource::File("datasets/goals/push-rope/goal.json".into()),
        }
    }
}

impl PushRopeConfig {
    /// `push-rope-hard`: 20 steps, 10 random pushes at reset.
    pub fn hard() -> Self {
        PushRopeConfig {
            name: "push-rope-hard".into(),
            episode_length: 20,
            reset_pushes: 10,
            ..PushRopeConfig::default()
        }
    }

    /// A small scene for tests: a 32-grid window 16×6×16, 24 particles, 2 moves of 3
    /// substeps, gentle pushes, the goal made in code.
    pub fn tiny() -> Self {
        PushRopeConfig {
            name: "push-rope-tiny".into(),
            mpm: MpmParams {
                n_grid: 32,
                origin: [8, 0, 8],
                res: [16, 6, 16],
                dt: 1e-3,
                ..PushRopeConfig::default().mpm
            },
            // a quadratic stencil needs y ≥ dx/2 = 0.016 on the 32-grid
            rope_center: [0.5, 0.02, 0.5],
            pusher_y: 0.02,
            n_particles: 24,
            pusher_half: [0.02, 0.06, 0.02],
            action_range: 0.04,
            max_push: 0.03,
            moves: 2,
            substeps_per_move: 3,
            reset_pushes: 1,
            reset_push_length: 0.02,
            checkpoint_every: 4,
            grad_clip: None,
            goal: GoalSource::Pushes(vec![[0.5, 0.52, 0.5, 0.505]]),
            ..PushRopeConfig::default()
        }
    }

    /// The pushes of the goal script: bend the straight rope into an arc by pushing its
    /// middle 0.08 towards −z, then push its left end 0.05 towards +z.
    pub fn goal_pushes() -> Vec<[f64; 4]> {
        vec![[0.5, 0.56, 0.5, 0.48], [0.39, 0.44, 0.39, 0.49]]
    }
}

/// The push-rope task.
pub struct PushRope {
    cfg: PushRopeConfig,
    model: MpmModel,
    /// The straight rope's particle positions.
    rest: Vec<V3<f64>>,
    goal: Vec<V3<f64>>,
    spec: TaskSpec,
}

impl PushRope {
    /// `push-rope` with DaXBench's parameters.
    pub fn new() -> Result<PushRope> {
        PushRope::with_config(PushRopeConfig::default())
    }

    /// The task for `cfg` (checked before anything is simulated).
    pub fn with_config(cfg: PushRopeConfig) -> Result<PushRope> {
        let bad = |name: &str, reason: String| Error::InvalidParameter {
            name: name.into(),
            reason,
        };
        if cfg.n_particles == 0 {
            return Err(bad("n_particles", "must be positive".into()));
        }
        if cfg.moves == 0 || cfg.substeps_per_move == 0 || cfg.episode_length == 0 {
            return Err(bad(
                "moves/substeps_per_move/episode_length",
                "must be positive".into(),
            ));
        }
        if cfg.checkpoint_every == 0 {
            return Err(bad("checkpoint_every", "must be at least 1".into()));
        }
        if !(cfg.max_push > 0.0 && cfg.action_range > 0.0) {
            return Err(bad("max_push/action_range", "must be positive".into()));
        }
        let mats = vec![
            ParticleMaterial {
                material: Material::Plastic,
                hardness: 1.0
            };
            cfg.n_particles
        ];
        let pusher = Primitive::pusher(cfg.pusher_half);
        let model = MpmModel::new(cfg.mpm.clone(), mats, vec![pusher])?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.particle_seed);
        let rest: Vec<V3<f64>> = (0..cfg.n_particles)
            .map(|_| {
                std::array::from_fn(|d| {
                    cfg.rope_center[d] + cfg.rope_size[d] * (rng.gen::<f64>() - 0.5)
                })
            })
            .collect();
        model
            .check_particles(&MpmState::at_rest(rest.clone()))
            .map_err(|e| {
                bad(
                    "rope_center/rope_size",
                    format!("the rope does not fit the grid window: {e}"),
                )
            })?;
        let mut task = PushRope {
            model,
            rest,
            goal: Vec::new(),
            spec: TaskSpec {
                name: cfg.name.clone(),
                state_dim: 24 * cfg.n_particles + 6,
                obs_dim: 6 * cfg.n_particles + 3 * cfg.substeps_per_move,
                act_dim: 6,
                episode_length: cfg.episode_length,
                dt: cfg.mpm.dt * (cfg.moves * cfg.substeps_per_move) as f64,
                state_names: particle_state_names(
                    cfg.n_particles,
                    &[
                        "push.start.x",
                        "push.start.y",
                        "push.start.z",
                        "push.end.x",
                        "push.end.y",
                        "push.end.z",
                    ],
                ),
                obs_names: particle_obs_names(cfg.n_particles, "pusher", cfg.substeps_per_move),
            },
            cfg,
        };
        task.goal = match &task.cfg.goal {
            GoalSource::File(rel) => load_goal(rel, task.cfg.n_particles)?,
            GoalSource::Pushes(pushes) => task.rope_after(pushes).x,
        };
        Ok(task)
    }

    /// The configuration.
    pub fn config(&self) -> &PushRopeConfig {
        &self.cfg
    }

    /// The MPM scene.
    pub fn model(&self) -> &MpmModel {
        &self.model
    }

    /// The goal positions.
    pub fn goal(&self) -> &[V3<f64>] {
        &self.goal
    }

    /// Substeps of one control step.
    pub fn substeps(&self) -> usize {
        self.cfg.moves * self.cfg.substeps_per_move
    }

    /// The straight rope after `pushes` (`[start x, start z, end x, end z]` in world
    /// coordinates), in f64.
    pub fn rope_after(&self, pushes: &[[f64; 4]]) -> MpmState<f64> {
        let mut s = MpmState::at_rest(self.rest.clone());
        for p in pushes {
            let y = self.cfg.pusher_y;
            let (start, end) = ([p[0], y, p[1]], [p[2], y, p[3]]);
            let run = MpmRun::new(&self.model, self.trajectory(&start, &end));
            s = checkpoint::forward(&run, &s, self.substeps());
        }
        s
    }

    /// The pusher's state at every substep of a push from `start` to `end`.
    pub fn trajectory<T: Real>(&self, start: &V3<T>, end: &V3<T>) -> Vec<Vec<PrimitiveState<T>>> {
        let k_all = self.substeps();
        let vel_scale = T::cst(1.0 / (k_all as f64 * self.cfg.mpm.dt));
        let vel: V3<T> = std::array::from_fn(|d| (end[d] - start[d]) * vel_scale);
        (0..k_all)
            .map(|k| {
                let f = T::cst(k as f64 / k_all as f64);
                vec![PrimitiveState::translating(
                    std::array::from_fn(|d| start[d] + (end[d] - start[d]) * f),
                    vel,
                )]
            })
            .collect()
    }

    /// The push `(start, end)` of action `a` (clipped to [−1, 1]): the mapping to world
    /// coordinates and the length clip. At a clip's kink the derivative is the clipped
    /// side's.
    pub fn push_of_action<T: Real>(&self, a: &[T]) -> (V3<T>, V3<T>) {
        let clip = |x: T| {
            if x.re() > 1.0 {
                T::one()
            } else if x.re() < -1.0 {
                -T::one()
            } else {
                x
            }
        };
        let (c, r) = (self.cfg.action_center, T::cst(self.cfg.action_range));
        let y = T::cst(self.cfg.pusher_y);
        let start = [
            T::cst(c[0]) + r * clip(a[0]),
            y,
            T::cst(c[1]) + r * clip(a[2]),
        ];
        let mut end = [
            T::cst(c[0]) + r * clip(a[3]),
            y,
            T::cst(c[1]) + r * clip(a[5]),
        ];
        let (dx, dz) = (end[0] - start[0], end[2] - start[2]);
        let len = (dx * dx + dz * dz).sqrt();
        if len.re() > self.cfg.max_push {
            let s = T::cst(self.cfg.max_push) / len;
            end[0] = start[0] + dx * s;
            end[2] = start[2] + dz * s;
        }
        (start, end)
    }

    /// Adjoint of [`Self::push_of_action`]: `(∂(start, end)/∂a)ᵀ·adj`, by the map's exact
    /// 6×6 Jacobian from six dual-number passes (the map is tiny).
    fn push_of_action_vjp(&self, a: &[f64], adj: &[f64; 6]) -> [f64; 6] {
        let mut out = [0.0; 6];
        for (i, o) in out.iter_mut().enumerate() {
            let ad: Vec<Dual<f64>> = (0..6)
                .map(|j| Dual::new(a[j], if i == j { 1.0 } else { 0.0 }))
                .collect();
            let (s, e) = self.push_of_action(&ad);
            *o = (0..3)
                .map(|d| adj[d] * s[d].eps + adj[3 + d] * e[d].eps)
                .sum();
        }
        out
    }

    /// The shape loss L of a state row (0 at the goal).
    pub fn loss_row<T: Real>(&self, s: &[T]) -> T {
        shape_loss(s, &self.goal)
    }

    /// A state row for the particles `ps` and the stored push `(start, end)`.
    fn state_row(&self, ps: &MpmState<f64>, start: &V3<f64>, end: &V3<f64>, out: &mut [f32]) {
        for (o, v) in out.iter_mut().zip(ps.to_flat()) {
            *o = v as f32;
        }
        let n = self.cfg.n_particles;
        for d in 0..3 {
            out[24 * n + d] = start[d] as f32;
            out[24 * n + 3 + d] = end[d] as f32;
        }
    }
}

impl RowTask for PushRope {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    /// One control step of one env, generic over the scalar: `s` is the state row, `a` the
    /// action; returns the next state row.
    fn step_row<T: Real>(&self, s: &[T], a: &[T]) -> Vec<T> {
        let n = self.cfg.n_particles;
        let (start, end) = self.push_of_action(a);
        let run = MpmRun::new(&self.model, self.trajectory(&start, &end));
        let st = MpmState::from_flat(&s[..24 * n]);
        let mut out = checkpoint::forward(&run, &st, self.substeps()).to_flat();
        out.extend_from_slice(&start);
        out.extend_from_slice(&end);
        out
    }

    /// Adjoint of [`Self::step_row`]: accumulates into `adj_s` and `adj_a`.
    fn step_row_vjp<T: Real>(
        &self,
        s: &[T],
        a: &[T],
        adj_next: &[T],
        adj_s: &mut [T],
        adj_a: &mut [T],
    ) {
        let n = self.cfg.n_particles;
        let (start, end) = self.push_of_action(a);
        let mut run = MpmRun::new(&self.model, self.trajectory(&start, &end));
        run.grad_clip = self.cfg.grad_clip;
        let st = MpmState::from_flat(&s[..24 * n]);
        let mut adj = run.zero_adj();
        adj.state = MpmState::from_flat(&adj_next[..24 * n]);
        let k_all = self.substeps();
        checkpoint::vjp_checkpointed(&run, &st, k_all, self.cfg.checkpoint_every, &mut adj);
        for (o, v) in adj_s[..24 * n].iter_mut().zip(adj.state.to_flat()) {
            *o += v;
        }
        // the stored push (the state's last 6 numbers) is overwritten: no adjoint to s
        // trajectory: pos_k = start + (end − start)·k/K, vel = (end − start)/(K·dt)
        let mut adj_push = [T::zero(); 6];
        for d in 0..3 {
            adj_push[d] += adj_next[24 * n + d];
            adj_push[3 + d] += adj_next[24 * n + 3 + d];
        }
        let inv = T::cst(1.0 / (k_all as f64 * self.cfg.mpm.dt));
        for (k, ap) in adj.prims.iter().enumerate() {
            let f = T::cst(k as f64 / k_all as f64);
            for d in 0..3 {
                let (p, v) = (ap[0].pos[d], ap[0].vel[d]);
                adj_push[d] += p * (T::one() - f) - v * inv;
                adj_push[3 + d] += p * f + v * inv;
            }
        }
        // the action map's Jacobian, applied to the primal adjoints (VJPs run on real
        // scalars)
        let a64: Vec<f64> = a.iter().map(|x| x.re()).collect();
        let ap64: [f64; 6] = std::array::from_fn(|i| adj_push[i].re());
        let g = self.push_of_action_vjp(&a64, &ap64);
        for i in 0..6 {
            adj_a[i] += T::cst(g[i]);
        }
    }

    /// Observation of one state row.
    fn observe_row<T: Real>(&self, s: &[T], obs: &mut [T]) {
        let n = self.cfg.n_particles;
        for p in 0..n {
            obs[3 * p..3 * p + 3].copy_from_slice(&s[24 * p..24 * p + 3]);
            obs[3 * n + 3 * p..3 * n + 3 * p + 3].copy_from_slice(&s[24 * p + 3..24 * p + 6]);
        }
        let (start, end) = (&s[24 * n..24 * n + 3], &s[24 * n + 3..24 * n + 6]);
        let k_all = self.substeps();
        let first = k_all - self.cfg.substeps_per_move;
        for j in 0..self.cfg.substeps_per_move {
            let f = T::cst((first + j) as f64 / k_all as f64);
            for d in 0..3 {
                obs[6 * n + 3 * j + d] = start[d] + (end[d] - start[d]) * f;
            }
        }
    }

    /// Adjoint of [`Self::observe_row`] (accumulates).
    fn observe_row_vjp<T: Real>(&self, _s: &[T], adj_obs: &[T], adj_s: &mut [T]) {
        let n = self.cfg.n_particles;
        for p in 0..n {
            for d in 0..3 {
                adj_s[24 * p + d] += adj_obs[3 * p + d];
                adj_s[24 * p + 3 + d] += adj_obs[3 * n + 3 * p + d];
            }
        }
        let k_all = self.substeps();
        let first = k_all - self.cfg.substeps_per_move;
        for j in 0..self.cfg.substeps_per_move {
            let f = T::cst((first + j) as f64 / k_all as f64);
            for d in 0..3 {
                let g = adj_obs[6 * n + 3 * j + d];
                adj_s[24 * n + d] += g * (T::one() - f);
                adj_s[24 * n + 3 + d] += g * f;
            }
        }
    }

    /// Reward `exp(−10·L)` of a state row.
    /// DaXBench's auxiliary reward `exp(−contact distance)`: from the push's start to the
    /// nearest particle of the pre-step state.
    fn aux_row<T: Real>(&self, s: &[T], a: &[T]) -> Option<T> {
        let (start, _) = self.push_of_action(a);
        Some(contact_aux(&start, s, self.cfg.n_particles, 24))
    }
    /// Adjoint of [`Self::aux_row`], through the push mapping.
    fn aux_row_vjp<T: Real>(&self, s: &[T], a: &[T], adj: T, adj_s: &mut [T], adj_a: &mut [T]) {
        let (start, _) = self.push_of_action(a);
        let mut adj_p = [T::zero(); 3];
        contact_aux_vjp(&start, s, self.cfg.n_particles, 24, adj, &mut adj_p, adj_s);
        let a64: Vec<f64> = a.iter().map(|x| x.re()).collect();
        let mut seed = [0.0; 6];
        for d in 0..3 {
            seed[d] = adj_p[d].re();
        }
        for (o, g) in adj_a.iter_mut().zip(self.push_of_action_vjp(&a64, &seed)) {
            *o += T::cst(g);
        }
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
        let pushes = if stochastic { self.cfg.reset_pushes } else { 0 };
        let mut list = Vec::with_capacity(pushes);
        let mut state = MpmState::at_rest(self.rest.clone());
        for _ in 0..pushes {
            // from a random particle of the current rope, in a random direction
            let p = rng.gen_range(0..self.cfg.n_particles);
            let ang = rng.gen_range(0.0..std::f64::consts::TAU);
            let (x, z) = (state.x[p][0], state.x[p][2]);
            let l = self.cfg.reset_push_length;
            let push = [
                x - 0.5 * l * ang.cos(),
                z - 0.5 * l * ang.sin(),
                x + 0.5 * l * ang.cos(),
                z + 0.5 * l * ang.sin(),
            ];
            state = {
                let y = self.cfg.pusher_y;
                let run = MpmRun::new(
                    &self.model,
                    self.trajectory(&[push[0], y, push[1]], &[push[2], y, push[3]]),
                );
                checkpoint::forward(&run, &state, self.substeps())
            };
            list.push(push);
        }
        let y = self.cfg.pusher_y;
        let (start, end) = match list.last() {
            Some(p) => ([p[0], y, p[1]], [p[2], y, p[3]]),
            None => (self.cfg.parked_pusher, self.cfg.parked_pusher),
        };
        // the rest velocities of a settled push are kept (the rope may still be moving)
        self.state_row(&state, &start, &end, s);
    }

    fn scene_row(&self, state: ArrayView1<f32>) -> Option<Scene> {
        let n = self.cfg.n_particles;
        let positions = (0..n)
            .map(|p| [state[24 * p], state[24 * p + 1], state[24 * p + 2]])
            .collect();
        let end: [f32; 3] = std::array::from_fn(|d| state[24 * n + 3 + d]);
        let h = self.cfg.pusher_half.map(|x| x as f32);
        Some(Scene {
            prims: vec![
                Prim::Points {
                    positions,
                    radius: (0.25 * self.model.dx()) as f32,
                },
                Prim::Box {
                    center: end,
                    rot: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                    half_extents: h,
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

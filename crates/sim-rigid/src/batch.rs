//! The batched driver: a rigid-body task definition ([`RigidTask`]) run over N envs as a
//! [`diff_core::Task`], with rayon across envs and pooled per-thread workspaces (no
//! allocation inside a step once the pool is warm).
//!
//! State layout of every rigid task: `[q (n_q), q̇ (n_qd)]`, the articulation's joint
//! coordinates then its joint velocities, in link order.

use crate::dynamics::{SimParams, Workspace};
use crate::model::Articulation;
use diff_core::{Dual, Real, SeededRng, Task, TaskSpec};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;
use std::sync::Mutex;

/// What a task adds to an articulation: actuation, observation, reward, termination and
/// reset. All per-env functions are generic over the scalar so that the same code serves
/// training (`f32`), the finite-difference oracle (`f64`) and JVPs ([`Dual`]).
pub trait RigidTask: Send + Sync + 'static {
    /// The static task facts.
    fn spec(&self) -> &TaskSpec;
    /// The articulation.
    fn articulation(&self) -> &Articulation;
    /// Integration parameters.
    fn sim_params(&self) -> &SimParams;
    /// Maps an action (clipped to [−1, 1] here) to the per-DOF joint actuation `act`.
    fn actuation<T: Real>(&self, a: &[T], act: &mut [T]);
    /// VJP of [`RigidTask::actuation`]: accumulates into `adj_a`.
    fn actuation_vjp<T: Real>(&self, a: &[T], adj_act: &[T], adj_a: &mut [T]);
    /// Observation of a state row.
    fn observe<T: Real>(&self, s: &[T], obs: &mut [T]);
    /// VJP of [`RigidTask::observe`]: accumulates into `adj_s`.
    fn observe_vjp<T: Real>(&self, s: &[T], adj_obs: &[T], adj_s: &mut [T]);
    /// Reward of arriving in `s_next` with action `a`.
    fn reward<T: Real>(&self, s_next: &[T], a: &[T]) -> T;
    /// VJP of [`RigidTask::reward`]: accumulates into `adj_s_next`, `adj_a`.
    fn reward_vjp<T: Real>(
        &self,
        s_next: &[T],
        a: &[T],
        adj_r: T,
        adj_s_next: &mut [T],
        adj_a: &mut [T],
    );
    /// Writes the entries a task keeps after `[q, q̇]` in its state (e.g. the previous
    /// action DiffRL's Ant and Humanoid observe), after the physics step. Default: none.
    fn extra_step<T: Real>(&self, _s: &[T], _a: &[T], _extra_next: &mut [T]) {}
    /// VJP of [`RigidTask::extra_step`] in the action (the extra state never feeds the
    /// physics): accumulates into `adj_a`.
    fn extra_step_vjp<T: Real>(&self, _a: &[T], _adj_extra_next: &[T], _adj_a: &mut [T]) {}
    /// Early termination.
    fn terminated(&self, s_next: &[f32]) -> bool;
    /// Initial state, with the task's reset noise when `stochastic`.
    fn reset(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]);
    /// Success of an evaluation episode from its visited states `[T, state_dim]`.
    fn episode_success(&self, _states: ArrayView2<f32>) -> Option<bool> {
        None
    }
}

/// Per-env working memory: the articulation workspace plus actuation buffers and, for the
/// dual-number JVP, the lifted state, action and next state of one row.
pub struct RowScratch<T> {
    pub ws: Workspace<T>,
    act: Vec<T>,
    adj_act: Vec<T>,
    row_s: Vec<T>,
    row_a: Vec<T>,
    row_next: Vec<T>,
}

impl<T: Real> RowScratch<T> {
    /// Scratch for `task`.
    pub fn new<D: RigidTask>(task: &D) -> Self {
        let art = task.articulation();
        RowScratch {
            ws: Workspace::new(art, task.sim_params()),
            act: vec![T::zero(); art.n_qd],
            adj_act: vec![T::zero(); art.n_qd],
            row_s: vec![T::zero(); task.spec().state_dim],
            row_a: vec![T::zero(); task.spec().act_dim],
            row_next: vec![T::zero(); task.spec().state_dim],
        }
    }
}

/// One control step of one env: `s_next = F(s, a)` (generic over the scalar).
pub fn step_row<D: RigidTask, T: Real>(
    task: &D,
    s: &[T],
    a: &[T],
    s_next: &mut [T],
    sc: &mut RowScratch<T>,
) {
    let art = task.articulation();
    let (nq, nx) = (art.n_q, art.n_q + art.n_qd);
    task.actuation(a, &mut sc.act);
    let (q_out, rest) = s_next.split_at_mut(nq);
    let (qd_out, extra) = rest.split_at_mut(art.n_qd);
    art.step(
        task.sim_params(),
        &s[..nq],
        &s[nq..nx],
        &sc.act,
        q_out,
        qd_out,
        &mut sc.ws,
    );
    task.extra_step(s, a, extra);
}

/// VJP of [`step_row`]: accumulates into `adj_s` and `adj_a`.
pub fn step_row_vjp<D: RigidTask, T: Real>(
    task: &D,
    s: &[T],
    a: &[T],
    adj_next: &[T],
    adj_s: &mut [T],
    adj_a: &mut [T],
    sc: &mut RowScratch<T>,
) {
    let art = task.articulation();
    let (nq, nx) = (art.n_q, art.n_q + art.n_qd);
    task.actuation(a, &mut sc.act);
    sc.adj_act.iter_mut().for_each(|x| *x = T::zero());
    let (adj_q, rest) = adj_s.split_at_mut(nq);
    let adj_qd = &mut rest[..art.n_qd];
    art.step_vjp(
        task.sim_params(),
        &s[..nq],
        &s[nq..nx],
        &sc.act,
        &adj_next[..nq],
        &adj_next[nq..nx],
        adj_q,
        adj_qd,
        &mut sc.adj_act,
        &mut sc.ws,
    );
    task.actuation_vjp(a, &sc.adj_act, adj_a);
    task.extra_step_vjp(a, &adj_next[nx..], adj_a);
}

/// A pool of scratch buffers shared by the rayon workers.
struct Pool<T>(Mutex<Vec<RowScratch<T>>>);

impl<T: Real> Pool<T> {
    fn with<D: RigidTask, R>(&self, task: &D, f: impl FnOnce(&mut RowScratch<T>) -> R) -> R {
        let popped = self.0.lock().map(|mut v| v.pop()).unwrap_or(None);
        let mut sc = popped.unwrap_or_else(|| RowScratch::new(task));
        let r = f(&mut sc);
        if let Ok(mut v) = self.0.lock() {
            v.push(sc);
        }
        r
    }
}

/// A [`RigidTask`] as a batched [`diff_core::Task`].
pub struct RigidEnv<D> {
    task: D,
    pool: Pool<f32>,
    pool_dual: Pool<Dual<f32>>,
}

impl<D: RigidTask> RigidEnv<D> {
    /// Wraps a task definition.
    pub fn from_def(task: D) -> Self {
        RigidEnv {
            task,
            pool: Pool(Mutex::new(Vec::new())),
            pool_dual: Pool(Mutex::new(Vec::new())),
        }
    }
    /// The task definition.
    pub fn def(&self) -> &D {
        &self.task
    }
}

/// Rows per rayon job: a few jobs per thread, at least 8 rows each.
fn chunk_rows(n: usize) -> usize {
    let jobs = rayon::current_num_threads() * 2;
    n.div_ceil(jobs).max(8)
}

impl<D: RigidTask> Task for RigidEnv<D> {
    fn spec(&self) -> &TaskSpec {
        self.task.spec()
    }

    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, mut s_next: ArrayViewMut2<f32>) {
        let c = chunk_rows(s.nrows());
        s_next
            .axis_chunks_iter_mut(Axis(0), c)
            .into_par_iter()
            .enumerate()
            .for_each(|(k, mut out)| {
                self.pool.with(&self.task, |sc| {
                    for (r, mut row) in out.outer_iter_mut().enumerate() {
                        let i = k * c + r;
                        let (si, ai) = (s.row(i), a.row(i));
                        step_row(
                            &self.task,
                            si.as_slice().expect("state rows are contiguous"),
                            ai.as_slice().expect("action rows are contiguous"),
                            row.as_slice_mut().expect("state rows are contiguous"),
                            sc,
                        );
                    }
                })
            });
    }

    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        let c = chunk_rows(s.nrows());
        adj_s
            .axis_chunks_iter_mut(Axis(0), c)
            .into_par_iter()
            .zip(adj_a.axis_chunks_iter_mut(Axis(0), c).into_par_iter())
            .enumerate()
            .for_each(|(k, (mut out_s, mut out_a))| {
                self.pool.with(&self.task, |sc| {
                    for (r, (mut rs, mut ra)) in out_s
                        .outer_iter_mut()
                        .zip(out_a.outer_iter_mut())
                        .enumerate()
                    {
                        let i = k * c + r;
                        step_row_vjp(
                            &self.task,
                            s.row(i).as_slice().expect("contiguous"),
                            a.row(i).as_slice().expect("contiguous"),
                            adj_next.row(i).as_slice().expect("contiguous"),
                            rs.as_slice_mut().expect("contiguous"),
                            ra.as_slice_mut().expect("contiguous"),
                            sc,
                        );
                    }
                })
            });
    }

    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        mut ds_next: ArrayViewMut2<f32>,
    ) {
        let c = chunk_rows(s.nrows());
        let (sd, ad) = (s.ncols(), a.ncols());
        ds_next
            .axis_chunks_iter_mut(Axis(0), c)
            .into_par_iter()
            .enumerate()
            .for_each(|(k, mut out)| {
                self.pool_dual.with(&self.task, |sc| {
                    let (mut sx, mut ax, mut sn) = (
                        std::mem::take(&mut sc.row_s),
                        std::mem::take(&mut sc.row_a),
                        std::mem::take(&mut sc.row_next),
                    );
                    for (r, mut row) in out.outer_iter_mut().enumerate() {
                        let i = k * c + r;
                        for j in 0..sd {
                            sx[j] = Dual::new(s[(i, j)], ds[(i, j)]);
                        }
                        for j in 0..ad {
                            ax[j] = Dual::new(a[(i, j)], da[(i, j)]);
                        }
                        step_row(&self.task, &sx, &ax, &mut sn, sc);
                        for j in 0..sd {
                            row[j] = sn[j].eps;
                        }
                    }
                    (sc.row_s, sc.row_a, sc.row_next) = (sx, ax, sn);
                })
            });
    }

    fn observe(&self, s: ArrayView2<f32>, mut obs: ArrayViewMut2<f32>) {
        for (si, mut oi) in s.outer_iter().zip(obs.outer_iter_mut()) {
            self.task.observe(
                si.as_slice().expect("contiguous"),
                oi.as_slice_mut().expect("contiguous"),
            );
        }
    }

    fn observe_vjp(
        &self,
        s: ArrayView2<f32>,
        adj_obs: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
    ) {
        for ((si, ao), mut asi) in s
            .outer_iter()
            .zip(adj_obs.outer_iter())
            .zip(adj_s.outer_iter_mut())
        {
            self.task.observe_vjp(
                si.as_slice().expect("contiguous"),
                ao.as_slice().expect("contiguous"),
                asi.as_slice_mut().expect("contiguous"),
            );
        }
    }

    fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, mut r: ArrayViewMut1<f32>) {
        for (i, ri) in r.iter_mut().enumerate() {
            *ri = self.task.reward(
                s_next.row(i).as_slice().expect("contiguous"),
                a.row(i).as_slice().expect("contiguous"),
            );
        }
    }

    fn reward_vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        mut adj_s_next: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        for i in 0..adj_r.len() {
            let mut rs = adj_s_next.row_mut(i);
            let mut ra = adj_a.row_mut(i);
            self.task.reward_vjp(
                s_next.row(i).as_slice().expect("contiguous"),
                a.row(i).as_slice().expect("contiguous"),
                adj_r[i],
                rs.as_slice_mut().expect("contiguous"),
                ra.as_slice_mut().expect("contiguous"),
            );
        }
    }

    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]) {
        for (si, o) in s_next.outer_iter().zip(out.iter_mut()) {
            *o = self.task.terminated(si.as_slice().expect("contiguous"));
        }
    }

    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, mut s: ArrayViewMut1<f32>) {
        self.task
            .reset(rng, stochastic, s.as_slice_mut().expect("contiguous"));
    }

    fn episode_success(&self, states: ArrayView2<f32>) -> Option<bool> {
        self.task.episode_success(states)
    }

    fn scene(&self, state: ArrayView1<f32>) -> Option<diff_core::Scene> {
        crate::render::state_scene(self, state)
    }
}

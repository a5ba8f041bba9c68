//! The batched driver: a rigid-body task definition ([`RigidTask`]) run over N envs as a
//! [`diff_core::Task`], with rayon across envs and pooled per-thread workspaces (no
//! allocation inside a step once the pool is warm).
//!
//! State layout of every rigid task: `[q (n_q), q̇ (n_qd)]`, the articulation's joint
//! coordinates then its joint velocities, in link order.

use crate::dynamics::{SimParams, Workspace};
use crate::kernels::{HostPhysics, PackedArticulation, Physics};
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
    /// VJP of [`RigidTask::extra_step`] in the state `s` (e.g. Brax reacher's target,
    /// carried over unchanged): accumulates into `adj_s`. Default: none.
    fn extra_step_state_vjp<T: Real>(&self, _s: &[T], _adj_extra_next: &[T], _adj_s: &mut [T]) {}
    /// Early termination.
    fn terminated(&self, s_next: &[f32]) -> bool;
    /// Initial state, with the task's reset noise when `stochastic`.
    fn reset(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]);
    /// Success of an evaluation episode from its visited states `[T, state_dim]`.
    fn episode_success(&self, _states: ArrayView2<f32>) -> Option<bool> {
        None
    }
    /// The task layer and the window glue as kernels (`locomotion.cu`, `planar.cu`,
    /// `cartpole.cu`, `window.cu`), for a window resident on the device
    /// ([`crate::resident`]). Default: none (such a task's window stays on the host).
    fn kernel_layer(
        &self,
    ) -> Option<diff_core::Result<(crate::kernels::PackedTaskLayer, crate::resident::PackedGlue)>>
    {
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
    task.extra_step_state_vjp(s, &adj_next[nx..], adj_s);
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

/// A [`RigidTask`] whose physics step and its VJP run through a [`Physics`] backend (the
/// CUDA kernels, or their host-compiled twins), while the task layer (actuation, extra
/// state, observation, reward, termination, resets) and the JVP stay on the CPU path of
/// [`RigidEnv`]. A backend failure (a device error) is reported on stderr and turns the
/// affected outputs into NaN, which the trainers' non-finite handling then meets (report,
/// checkpoint, stop or skip, as configured) instead of a panic.
pub struct KernelEnv<D> {
    cpu: RigidEnv<D>,
    physics: Box<dyn Physics>,
    resident: Option<ResidentKind>,
}

/// Where a [`KernelEnv`]'s resident windows ([`Task::resident_window`]) run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidentKind {
    /// The kernels' host build ([`crate::resident::HostBackend`]).
    Host,
    /// The GPU (`crate::resident::gpu::GpuBackend`, feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda,
}

impl<D: RigidTask> KernelEnv<D> {
    /// Wraps a task definition with a physics backend built for its articulation.
    pub fn new(task: D, physics: Box<dyn Physics>) -> Self {
        KernelEnv {
            cpu: RigidEnv::from_def(task),
            physics,
            resident: None,
        }
    }

    /// With the host-compiled kernels, and resident windows on them.
    pub fn host(task: D) -> diff_core::Result<Self> {
        let packed = PackedArticulation::new(task.articulation(), task.sim_params())?;
        Ok(Self::new(task, Box::new(HostPhysics(packed))).with_resident(Some(ResidentKind::Host)))
    }

    /// On the GPU: the physics of [`Task::step`] and [`Task::step_vjp`], and resident
    /// windows.
    #[cfg(feature = "cuda")]
    pub fn cuda(task: D) -> diff_core::Result<Self> {
        let physics =
            crate::kernels::gpu::CudaPhysics::new(task.articulation(), task.sim_params())?;
        Ok(Self::new(task, Box::new(physics)).with_resident(Some(ResidentKind::Cuda)))
    }

    /// Where [`Task::resident_window`] runs (`None`: it offers none, and window engines
    /// keep the states on the host).
    pub fn with_resident(mut self, kind: Option<ResidentKind>) -> Self {
        self.resident = kind;
        self
    }

    /// The task definition.
    pub fn def(&self) -> &D {
        self.cpu.def()
    }

    /// Where the physics runs.
    pub fn describe(&self) -> String {
        self.physics.describe()
    }

    /// `(q, q̇, act)` of every row, contiguous.
    fn split(&self, s: ArrayView2<f32>, a: ArrayView2<f32>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let task = self.cpu.def();
        let art = task.articulation();
        let (nq, nd, n) = (art.n_q, art.n_qd, s.nrows());
        let (mut q, mut qd, mut act) = (
            Vec::with_capacity(n * nq),
            Vec::with_capacity(n * nd),
            vec![0.0f32; n * nd],
        );
        for (i, row) in s.outer_iter().enumerate() {
            let row = row.to_slice().expect("state rows are contiguous");
            q.extend_from_slice(&row[..nq]);
            qd.extend_from_slice(&row[nq..nq + nd]);
            task.actuation(
                a.row(i).to_slice().expect("action rows are contiguous"),
                &mut act[i * nd..(i + 1) * nd],
            );
        }
        (q, qd, act)
    }
}

impl<D: RigidTask> Task for KernelEnv<D> {
    fn spec(&self) -> &TaskSpec {
        self.cpu.spec()
    }

    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, mut s_next: ArrayViewMut2<f32>) {
        let task = self.cpu.def();
        let art = task.articulation();
        let (nq, nd, n) = (art.n_q, art.n_qd, s.nrows());
        let (q, qd, act) = self.split(s, a);
        let (mut q_out, mut qd_out) = (vec![0.0f32; n * nq], vec![0.0f32; n * nd]);
        if let Err(e) = self.physics.step(n, &q, &qd, &act, &mut q_out, &mut qd_out) {
            eprintln!("{}: physics step failed: {e}", self.physics.describe());
            s_next.fill(f32::NAN);
            return;
        }
        for (i, mut row) in s_next.outer_iter_mut().enumerate() {
            let row = row.as_slice_mut().expect("state rows are contiguous");
            row[..nq].copy_from_slice(&q_out[i * nq..(i + 1) * nq]);
            row[nq..nq + nd].copy_from_slice(&qd_out[i * nd..(i + 1) * nd]);
            task.extra_step(
                s.row(i).to_slice().expect("state rows are contiguous"),
                a.row(i).to_slice().expect("action rows are contiguous"),
                &mut row[nq + nd..],
            );
        }
    }

    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        let task = self.cpu.def();
        let art = task.articulation();
        let (nq, nd, n) = (art.n_q, art.n_qd, s.nrows());
        let (q, qd, act) = self.split(s, a);
        let (mut uq, mut uqd) = (Vec::with_capacity(n * nq), Vec::with_capacity(n * nd));
        for row in adj_next.outer_iter() {
            let row = row.to_slice().expect("adjoint rows are contiguous");
            uq.extend_from_slice(&row[..nq]);
            uqd.extend_from_slice(&row[nq..nq + nd]);
        }
        let (mut aq, mut aqd, mut aact) = (
            vec![0.0f32; n * nq],
            vec![0.0f32; n * nd],
            vec![0.0f32; n * nd],
        );
        if let Err(e) = self
            .physics
            .step_vjp(n, &q, &qd, &act, &uq, &uqd, &mut aq, &mut aqd, &mut aact)
        {
            eprintln!("{}: physics step VJP failed: {e}", self.physics.describe());
            adj_s.fill(f32::NAN);
            adj_a.fill(f32::NAN);
            return;
        }
        for i in 0..n {
            let mut rs = adj_s.row_mut(i);
            let rs = rs.as_slice_mut().expect("adjoint rows are contiguous");
            for (x, g) in rs[..nq].iter_mut().zip(&aq[i * nq..(i + 1) * nq]) {
                *x += *g;
            }
            for (x, g) in rs[nq..nq + nd].iter_mut().zip(&aqd[i * nd..(i + 1) * nd]) {
                *x += *g;
            }
            let ai = a.row(i);
            let ai = ai.to_slice().expect("action rows are contiguous");
            let mut ra = adj_a.row_mut(i);
            let ra = ra.as_slice_mut().expect("adjoint rows are contiguous");
            task.actuation_vjp(ai, &aact[i * nd..(i + 1) * nd], ra);
            let un = adj_next.row(i);
            let un = &un.to_slice().expect("contiguous")[nq + nd..];
            task.extra_step_vjp(ai, un, ra);
            let si = s.row(i);
            task.extra_step_state_vjp(si.to_slice().expect("contiguous"), un, rs);
        }
    }

    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        ds_next: ArrayViewMut2<f32>,
    ) {
        self.cpu.step_jvp(s, a, ds, da, ds_next)
    }

    fn observe(&self, s: ArrayView2<f32>, obs: ArrayViewMut2<f32>) {
        self.cpu.observe(s, obs)
    }

    fn observe_vjp(&self, s: ArrayView2<f32>, adj_obs: ArrayView2<f32>, adj_s: ArrayViewMut2<f32>) {
        self.cpu.observe_vjp(s, adj_obs, adj_s)
    }

    fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, r: ArrayViewMut1<f32>) {
        self.cpu.reward(s_next, a, r)
    }

    fn reward_vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        adj_s_next: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        self.cpu.reward_vjp(s_next, a, adj_r, adj_s_next, adj_a)
    }

    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]) {
        self.cpu.terminated(s_next, out)
    }

    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, s: ArrayViewMut1<f32>) {
        self.cpu.reset_state(rng, stochastic, s)
    }

    fn episode_success(&self, states: ArrayView2<f32>) -> Option<bool> {
        self.cpu.episode_success(states)
    }

    fn scene(&self, state: ArrayView1<f32>) -> Option<diff_core::Scene> {
        self.cpu.scene(state)
    }

    fn resident_window(
        &self,
        h: usize,
        n: usize,
    ) -> Option<diff_core::Result<Box<dyn diff_core::ResidentWindow>>> {
        use crate::resident::{HostBackend, ResidentModel, ResidentRigid};
        let kind = self.resident?;
        let model = match ResidentModel::of(self.def())? {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        let boxed = |w: Box<dyn diff_core::ResidentWindow>| w;
        Some(match kind {
            ResidentKind::Host => ResidentRigid::new(HostBackend::new(model.clone()), &model, h, n)
                .map(|w| boxed(Box::new(w))),
            #[cfg(feature = "cuda")]
            ResidentKind::Cuda => {
                let def = self.def();
                crate::resident::gpu::GpuBackend::new(&model, def.articulation(), def.sim_params())
                    .and_then(|b| ResidentRigid::new(b, &model, h, n))
                    .map(|w| boxed(Box::new(w)))
            }
        })
    }
}

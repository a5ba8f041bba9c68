//! A window whose batch state stays on the device ([`diff_core::ResidentWindow`], issue 7):
//! the physics kernels (`step.cu`, `step_vjp.cu`), the task layer (`locomotion.cu`,
//! `planar.cu`, `cartpole.cu`) and the glue between them (`window.cu`: state split,
//! actuation, join with the extra state, their VJPs, the non-finite guard, resets, and the
//! reverse sweep's carry) all run where the states are. Only observations, actions,
//! rewards, done flags and their adjoints cross to the host at each step, plus the reset
//! states of the envs whose episode ended; the window's start states go up once and its
//! end states come down once.
//!
//! [`ResidentRigid`] is written once against a [`ResidentBackend`]: [`HostBackend`] runs the
//! kernels' host build (the GPU's code on the CPU, which the tests check bit for bit
//! against the CPU window engine on every machine) and `gpu::GpuBackend` (feature `cuda`)
//! runs them on the device with every buffer a device slice.

use crate::batch::RigidTask;
use crate::kernels::{PackedArticulation, PackedTaskLayer};
use diff_core::{Error, ResidentWindow, Result, NONFINITE_LIMIT};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// The glue model of `window.cu` for one task: `ints` = [n_q, n_qd, state_dim, act_dim,
/// n_act, n_extra, dof_0, …], `doubles` = [gain_0, …].
#[derive(Clone, Debug, PartialEq)]
pub struct PackedGlue {
    /// `gi`.
    pub ints: Vec<i32>,
    /// `gd`.
    pub doubles: Vec<f64>,
}

fn int32(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::InvalidParameter {
        name: "resident window".into(),
        reason: "a size does not fit the kernels' 32-bit index".into(),
    })
}

impl PackedGlue {
    /// The glue of a task with joint actuation `act[d] = gain·clip(a_k)` for each
    /// `(d, gain)` of `actuators` and `n_extra` extra state entries `clip(a_k)` after
    /// `[q, q̇]` (checked against the task's widths).
    pub fn new<D: RigidTask>(task: &D, actuators: &[(usize, f64)], n_extra: usize) -> Result<Self> {
        let art = task.articulation();
        let spec = task.spec();
        let (nq, nd) = (art.n_q, art.n_qd);
        let bad = |reason: String| Error::InvalidParameter {
            name: format!("task `{}` window glue", spec.name),
            reason,
        };
        if spec.state_dim != nq + nd + n_extra {
            return Err(bad(format!(
                "state width {} is not n_q + n_qd + extra = {nq} + {nd} + {n_extra}",
                spec.state_dim
            )));
        }
        if actuators.len() > spec.act_dim || n_extra > spec.act_dim {
            return Err(bad(format!(
                "{} actuators and {n_extra} extra entries for {} actions",
                actuators.len(),
                spec.act_dim
            )));
        }
        if let Some(&(d, _)) = actuators.iter().find(|(d, _)| *d >= nd) {
            return Err(bad(format!("actuated DOF {d} out of {nd}")));
        }
        let mut ints = vec![
            int32(nq)?,
            int32(nd)?,
            int32(spec.state_dim)?,
            int32(spec.act_dim)?,
            int32(actuators.len())?,
            int32(n_extra)?,
        ];
        for &(d, _) in actuators {
            ints.push(int32(d)?);
        }
        Ok(PackedGlue {
            ints,
            doubles: actuators.iter().map(|&(_, g)| g).collect(),
        })
    }
}

/// What a resident window needs of a task: its articulation and its kernel task layer.
#[derive(Clone, Debug)]
pub struct ResidentModel {
    pub art: PackedArticulation,
    pub layer: PackedTaskLayer,
    pub glue: PackedGlue,
}

impl ResidentModel {
    /// Packs `task`, or `None` when the task has no kernel task layer
    /// ([`RigidTask::kernel_layer`]).
    pub fn of<D: RigidTask>(task: &D) -> Option<Result<Self>> {
        let packed = task.kernel_layer()?;
        Some(packed.and_then(|(layer, glue)| {
            Ok(ResidentModel {
                art: PackedArticulation::new(task.articulation(), task.sim_params())?,
                layer,
                glue,
            })
        }))
    }
}

/// The operations a [`ResidentRigid`] runs where its buffers live (layouts as the kernels':
/// row-major `[n, width]`; every VJP accumulates).
#[allow(clippy::too_many_arguments)]
pub trait ResidentBackend: Send {
    /// A float buffer.
    type F: Send;
    /// An int buffer (row masks, row indices, flags).
    type I: Send;
    /// Where it runs, for messages.
    fn describe(&self) -> String;
    /// A zeroed float buffer of `len`.
    fn zeros(&self, len: usize) -> Result<Self::F>;
    /// A zeroed int buffer of `len`.
    fn izeros(&self, len: usize) -> Result<Self::I>;
    /// `dst[..src.len()] = src`.
    fn upload(&self, src: &[f32], dst: &mut Self::F) -> Result<()>;
    /// `dst[..src.len()] = src`.
    fn upload_i(&self, src: &[i32], dst: &mut Self::I) -> Result<()>;
    /// `dst = src[..dst.len()]`.
    fn download(&self, src: &Self::F, dst: &mut [f32]) -> Result<()>;
    /// `dst = src[..dst.len()]`.
    fn download_i(&self, src: &Self::I, dst: &mut [i32]) -> Result<()>;
    /// `x = 0`.
    fn zero(&self, x: &mut Self::F) -> Result<()>;
    /// `dst = src` (equal lengths).
    fn copy(&self, src: &Self::F, dst: &mut Self::F) -> Result<()>;
    /// `step.cu`.
    fn physics_step(
        &mut self,
        n: usize,
        q: &Self::F,
        qd: &Self::F,
        act: &Self::F,
        q_out: &mut Self::F,
        qd_out: &mut Self::F,
    ) -> Result<()>;
    /// `step_vjp.cu`.
    fn physics_vjp(
        &mut self,
        n: usize,
        q: &Self::F,
        qd: &Self::F,
        act: &Self::F,
        adj_q_out: &Self::F,
        adj_qd_out: &Self::F,
        adj_q: &mut Self::F,
        adj_qd: &mut Self::F,
        adj_act: &mut Self::F,
    ) -> Result<()>;
    /// The task layer's observation.
    fn observe(&self, n: usize, states: &Self::F, obs: &mut Self::F) -> Result<()>;
    /// Its VJP.
    fn observe_vjp(
        &self,
        n: usize,
        states: &Self::F,
        adj_obs: &Self::F,
        adj_states: &mut Self::F,
    ) -> Result<()>;
    /// The task layer's reward.
    fn reward(&self, n: usize, next: &Self::F, actions: &Self::F, r: &mut Self::F) -> Result<()>;
    /// Its VJP.
    fn reward_vjp(
        &self,
        n: usize,
        next: &Self::F,
        actions: &Self::F,
        adj_r: &Self::F,
        adj_states: &mut Self::F,
        adj_actions: &mut Self::F,
    ) -> Result<()>;
    /// The task layer's termination flags.
    fn terminated(&self, n: usize, next: &Self::F, flags: &mut Self::I) -> Result<()>;
    /// `mbmix_window_split`.
    fn split(&self, n: usize, states: &Self::F, q: &mut Self::F, qd: &mut Self::F) -> Result<()>;
    /// `mbmix_window_actuate`.
    fn actuate(&self, n: usize, actions: &Self::F, act: &mut Self::F) -> Result<()>;
    /// `mbmix_window_join`.
    fn join(
        &self,
        n: usize,
        actions: &Self::F,
        q_out: &Self::F,
        qd_out: &Self::F,
        next: &mut Self::F,
    ) -> Result<()>;
    /// `mbmix_window_step_vjp_finish`.
    fn step_vjp_finish(
        &self,
        n: usize,
        actions: &Self::F,
        adj_next: &Self::F,
        adj_q: &Self::F,
        adj_qd: &Self::F,
        adj_act: &Self::F,
        adj_states: &mut Self::F,
        adj_actions: &mut Self::F,
    ) -> Result<()>;
    /// `mbmix_window_nonfinite`.
    fn nonfinite(&self, n: usize, width: usize, x: &Self::F, flags: &mut Self::I) -> Result<()>;
    /// `mbmix_window_scatter`.
    fn scatter(
        &self,
        k: usize,
        width: usize,
        rows: &Self::I,
        src: &Self::F,
        dst: &mut Self::F,
    ) -> Result<()>;
    /// `mbmix_window_carry`.
    fn carry(
        &self,
        n: usize,
        width: usize,
        mask: &Self::I,
        carry: &Self::F,
        adj: &mut Self::F,
    ) -> Result<()>;
    /// `mbmix_window_zero_rows`.
    fn zero_rows(&self, n: usize, width: usize, mask: &Self::I, x: &mut Self::F) -> Result<()>;
}

/// A window of `h` steps of `n` envs of one rigid task, resident on a [`ResidentBackend`].
pub struct ResidentRigid<B: ResidentBackend> {
    b: B,
    h: usize,
    n: usize,
    sd: usize,
    od: usize,
    ad: usize,
    /// Start state of step t, t = 0..=h (the last: the window's end).
    states: Vec<B::F>,
    /// Pre-reset next state of step t.
    next: Vec<B::F>,
    /// Action of step t.
    actions: Vec<B::F>,
    /// The step whose start state is current.
    cur: usize,
    /// Whether `cur` can still step (a failed call leaves the window unusable until the
    /// next `begin`).
    ok: bool,
    q: B::F,
    qd: B::F,
    act: B::F,
    q_out: B::F,
    qd_out: B::F,
    obs: B::F,
    rew: B::F,
    flags: B::I,
    rows: B::I,
    rows_src: B::F,
    adj_next: B::F,
    adj_s: B::F,
    carry: B::F,
    adj_a: B::F,
    seed: B::F,
    mask: B::I,
    aq: B::F,
    aqd: B::F,
    aact: B::F,
    host: Vec<f32>,
    host_i: Vec<i32>,
}

/// `x` as a contiguous slice (copied when its layout is not standard).
fn flat<'a>(x: &'a ArrayView2<f32>, tmp: &'a mut Vec<f32>) -> &'a [f32] {
    match x.as_slice() {
        Some(s) => s,
        None => {
            tmp.clear();
            tmp.extend(x.iter().copied());
            tmp
        }
    }
}

fn mask_of(rows: &[bool], out: &mut Vec<i32>) -> bool {
    out.clear();
    out.extend(rows.iter().map(|&b| i32::from(b)));
    rows.iter().any(|&b| b)
}

impl<B: ResidentBackend> ResidentRigid<B> {
    /// Buffers for windows of `h` steps of `n` envs of the task `model` packs.
    pub fn new(b: B, model: &ResidentModel, h: usize, n: usize) -> Result<Self> {
        if h == 0 || n == 0 {
            return Err(Error::InvalidParameter {
                name: "resident window".into(),
                reason: format!("needs h ≥ 1 and n ≥ 1, got h = {h}, n = {n}"),
            });
        }
        let l = &model.layer;
        let (sd, od, ad) = (l.state_dim, l.obs_dim, l.act_dim);
        let (nq, nd) = (model.art.n_q, model.art.n_qd);
        let z = |len: usize| b.zeros(len);
        let many =
            |count: usize, len: usize| (0..count).map(|_| z(len)).collect::<Result<Vec<_>>>();
        Ok(ResidentRigid {
            states: many(h + 1, n * sd)?,
            next: many(h, n * sd)?,
            actions: many(h, n * ad)?,
            q: z(n * nq)?,
            qd: z(n * nd)?,
            act: z(n * nd)?,
            q_out: z(n * nq)?,
            qd_out: z(n * nd)?,
            obs: z(n * od)?,
            rew: z(n)?,
            flags: b.izeros(n)?,
            rows: b.izeros(n)?,
            rows_src: z(n * sd)?,
            adj_next: z(n * sd)?,
            adj_s: z(n * sd)?,
            carry: z(n * sd)?,
            adj_a: z(n * ad)?,
            seed: z(n)?,
            mask: b.izeros(n)?,
            aq: z(n * nq)?,
            aqd: z(n * nd)?,
            aact: z(n * nd)?,
            host: Vec::new(),
            host_i: Vec::new(),
            cur: 0,
            ok: false,
            b,
            h,
            n,
            sd,
            od,
            ad,
        })
    }

    fn check(&self, what: &str, shape: &[usize], cols: usize) -> Result<()> {
        diff_core::check_batch(what, shape, self.n, cols)
    }

    fn check_t(&self, t: usize, what: &str) -> Result<()> {
        if t >= self.h {
            return Err(Error::InvalidParameter {
                name: format!("resident window {what}"),
                reason: format!("step {t} outside a window of {}", self.h),
            });
        }
        Ok(())
    }

    /// The sweep may only visit steps this window has simulated since its `begin`.
    fn check_stepped(&self, t: usize) -> Result<()> {
        if !self.ok || t >= self.cur {
            return Err(Error::InvalidParameter {
                name: "resident window sweep".into(),
                reason: format!(
                    "step {t} was not simulated in this window (it has {} step(s){})",
                    self.cur,
                    if self.ok { "" } else { " and a failed call" }
                ),
            });
        }
        Ok(())
    }

    /// Downloads `src` into `out` (`[n, width]`).
    fn fetch(b: &B, src: &B::F, host: &mut Vec<f32>, mut out: ArrayViewMut2<f32>) -> Result<()> {
        match out.as_slice_mut() {
            Some(s) => b.download(src, s),
            None => {
                host.resize(out.len(), 0.0);
                b.download(src, host)?;
                for (o, v) in out.iter_mut().zip(host.iter()) {
                    *o = *v;
                }
                Ok(())
            }
        }
    }

    fn step_inner(
        &mut self,
        t: usize,
        actions: ArrayView2<f32>,
        next_obs: ArrayViewMut2<f32>,
        mut reward: ArrayViewMut1<f32>,
        terminated: &mut [bool],
        nonfinite: &mut [bool],
    ) -> Result<()> {
        self.check_t(t, "step")?;
        if !self.ok || t != self.cur {
            return Err(Error::InvalidParameter {
                name: "resident window step".into(),
                reason: format!(
                    "step {t} out of order (the window is at step {}{})",
                    self.cur,
                    if self.ok { "" } else { ", or was not begun" }
                ),
            });
        }
        self.check("actions", actions.shape(), self.ad)?;
        self.check("next observations", next_obs.shape(), self.od)?;
        let n = self.n;
        if reward.len() != n || terminated.len() != n || nonfinite.len() != n {
            return Err(Error::dim("rewards and flags", n, reward.len()));
        }
        let b = &mut self.b;
        let mut tmp = std::mem::take(&mut self.host);
        b.upload(flat(&actions, &mut tmp), &mut self.actions[t])?;
        let (a, s) = (&self.actions[t], &self.states[t]);
        b.split(n, s, &mut self.q, &mut self.qd)?;
        b.actuate(n, a, &mut self.act)?;
        b.physics_step(
            n,
            &self.q,
            &self.qd,
            &self.act,
            &mut self.q_out,
            &mut self.qd_out,
        )?;
        let next = &mut self.next[t];
        b.join(n, a, &self.q_out, &self.qd_out, next)?;
        b.observe(n, next, &mut self.obs)?;
        Self::fetch(b, &self.obs, &mut tmp, next_obs)?;
        b.reward(n, next, a, &mut self.rew)?;
        match reward.as_slice_mut() {
            Some(r) => b.download(&self.rew, r)?,
            None => {
                tmp.resize(n, 0.0);
                b.download(&self.rew, &mut tmp)?;
                reward.iter_mut().zip(&tmp).for_each(|(o, v)| *o = *v);
            }
        }
        self.host = tmp;
        self.host_i.resize(n, 0);
        b.terminated(n, next, &mut self.flags)?;
        b.download_i(&self.flags, &mut self.host_i)?;
        for (o, f) in terminated.iter_mut().zip(&self.host_i) {
            *o = *f != 0;
        }
        b.nonfinite(n, self.sd, next, &mut self.flags)?;
        b.download_i(&self.flags, &mut self.host_i)?;
        for (o, f) in nonfinite.iter_mut().zip(&self.host_i) {
            *o = *f != 0;
        }
        b.copy(&self.next[t], &mut self.states[t + 1])?;
        self.cur = t + 1;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sweep_step_inner(
        &mut self,
        t: usize,
        obs_adj: Option<ArrayView2<f32>>,
        carry: &[bool],
        reward_seed: ArrayView1<f32>,
        zero: &[bool],
        adj_a: ArrayViewMut2<f32>,
    ) -> Result<()> {
        self.check_t(t, "sweep")?;
        self.check_stepped(t)?;
        let n = self.n;
        if carry.len() != n || zero.len() != n || reward_seed.len() != n {
            return Err(Error::dim("sweep masks and seeds", n, carry.len()));
        }
        self.check("action adjoint", adj_a.shape(), self.ad)?;
        if let Some(oa) = &obs_adj {
            self.check("observation adjoint", oa.shape(), self.od)?;
        }
        let b = &mut self.b;
        let mut tmp = std::mem::take(&mut self.host);
        let (s, a, next) = (&self.states[t], &self.actions[t], &self.next[t]);
        // the pre-reset next state's adjoint: value part, carry, reward part
        b.zero(&mut self.adj_next)?;
        if let Some(oa) = obs_adj {
            b.upload(flat(&oa, &mut tmp), &mut self.obs)?;
            b.observe_vjp(n, next, &self.obs, &mut self.adj_next)?;
        }
        if mask_of(carry, &mut self.host_i) {
            b.upload_i(&self.host_i, &mut self.mask)?;
            b.carry(n, self.sd, &self.mask, &self.carry, &mut self.adj_next)?;
        }
        b.zero(&mut self.adj_a)?;
        tmp.clear();
        tmp.extend(reward_seed.iter().copied());
        b.upload(&tmp, &mut self.seed)?;
        b.reward_vjp(n, next, a, &self.seed, &mut self.adj_next, &mut self.adj_a)?;
        let any_zero = mask_of(zero, &mut self.host_i);
        if any_zero {
            b.upload_i(&self.host_i, &mut self.mask)?;
            b.zero_rows(n, self.sd, &self.mask, &mut self.adj_next)?;
        }
        // the step's VJP
        b.zero(&mut self.adj_s)?;
        b.split(n, s, &mut self.q, &mut self.qd)?;
        b.actuate(n, a, &mut self.act)?;
        b.split(n, &self.adj_next, &mut self.q_out, &mut self.qd_out)?;
        b.zero(&mut self.aq)?;
        b.zero(&mut self.aqd)?;
        b.zero(&mut self.aact)?;
        b.physics_vjp(
            n,
            &self.q,
            &self.qd,
            &self.act,
            &self.q_out,
            &self.qd_out,
            &mut self.aq,
            &mut self.aqd,
            &mut self.aact,
        )?;
        b.step_vjp_finish(
            n,
            a,
            &self.adj_next,
            &self.aq,
            &self.aqd,
            &self.aact,
            &mut self.adj_s,
            &mut self.adj_a,
        )?;
        if any_zero {
            b.zero_rows(n, self.sd, &self.mask, &mut self.adj_s)?;
            b.zero_rows(n, self.ad, &self.mask, &mut self.adj_a)?;
        }
        Self::fetch(b, &self.adj_a, &mut tmp, adj_a)?;
        self.host = tmp;
        Ok(())
    }
}

impl<B: ResidentBackend> ResidentWindow for ResidentRigid<B> {
    fn describe(&self) -> String {
        format!("{} (window resident)", self.b.describe())
    }

    fn begin(&mut self, states: ArrayView2<f32>) -> Result<()> {
        self.check("window start states", states.shape(), self.sd)?;
        let mut tmp = std::mem::take(&mut self.host);
        let r = self.b.upload(flat(&states, &mut tmp), &mut self.states[0]);
        self.host = tmp;
        self.ok = r.is_ok();
        self.cur = 0;
        r
    }

    fn observe(&mut self, obs: ArrayViewMut2<f32>) -> Result<()> {
        self.check("observations", obs.shape(), self.od)?;
        if !self.ok {
            return Err(Error::InvalidParameter {
                name: "resident window observe".into(),
                reason: "the window was not begun, or a call failed".into(),
            });
        }
        self.b
            .observe(self.n, &self.states[self.cur], &mut self.obs)?;
        Self::fetch(&self.b, &self.obs, &mut self.host, obs)
    }

    fn step(
        &mut self,
        t: usize,
        actions: ArrayView2<f32>,
        next_obs: ArrayViewMut2<f32>,
        reward: ArrayViewMut1<f32>,
        terminated: &mut [bool],
        nonfinite: &mut [bool],
    ) -> Result<()> {
        let r = self.step_inner(t, actions, next_obs, reward, terminated, nonfinite);
        if r.is_err() {
            self.ok = false;
        }
        r
    }

    fn reset_rows(&mut self, rows: &[usize], states: ArrayView2<f32>) -> Result<()> {
        diff_core::check_batch("reset states", states.shape(), rows.len(), self.sd)?;
        if rows.is_empty() {
            return Ok(());
        }
        if let Some(&r) = rows.iter().find(|&&r| r >= self.n) {
            return Err(Error::dim("reset row", format!("< {}", self.n), r));
        }
        self.host_i.clear();
        for &r in rows {
            self.host_i.push(int32(r)?);
        }
        let b = &self.b;
        b.upload_i(&self.host_i, &mut self.rows)?;
        let mut tmp = std::mem::take(&mut self.host);
        let r = b.upload(flat(&states, &mut tmp), &mut self.rows_src);
        self.host = tmp;
        r?;
        b.scatter(
            rows.len(),
            self.sd,
            &self.rows,
            &self.rows_src,
            &mut self.states[self.cur],
        )
    }

    fn end(&mut self, states: ArrayViewMut2<f32>) -> Result<()> {
        self.check("window end states", states.shape(), self.sd)?;
        Self::fetch(&self.b, &self.states[self.cur], &mut self.host, states)
    }

    fn sweep_step(
        &mut self,
        t: usize,
        obs_adj: Option<ArrayView2<f32>>,
        carry: &[bool],
        reward_seed: ArrayView1<f32>,
        zero: &[bool],
        adj_a: ArrayViewMut2<f32>,
    ) -> Result<()> {
        self.sweep_step_inner(t, obs_adj, carry, reward_seed, zero, adj_a)
    }

    fn sweep_observe(&mut self, t: usize, adj_obs: ArrayView2<f32>) -> Result<()> {
        self.check_t(t, "sweep")?;
        self.check_stepped(t)?;
        self.check("observation adjoint", adj_obs.shape(), self.od)?;
        let mut tmp = std::mem::take(&mut self.host);
        let r = self.b.upload(flat(&adj_obs, &mut tmp), &mut self.obs);
        self.host = tmp;
        r?;
        self.b
            .observe_vjp(self.n, &self.states[t], &self.obs, &mut self.adj_s)?;
        std::mem::swap(&mut self.carry, &mut self.adj_s);
        Ok(())
    }
}

/// The kernels' host build as a [`ResidentBackend`]: buffers are `Vec`s.
pub struct HostBackend {
    model: ResidentModel,
}

impl HostBackend {
    /// For the task `model` packs.
    pub fn new(model: ResidentModel) -> Self {
        HostBackend { model }
    }
}

fn fits(what: &str, len: usize, need: usize) -> Result<()> {
    if len < need {
        return Err(Error::dim(what, format!("≥ {need}"), len));
    }
    Ok(())
}

mod ffi {
    use std::os::raw::c_int;
    extern "C" {
        pub fn mbmix_window_split(
            n: c_int,
            gi: *const c_int,
            s: *const f32,
            q: *mut f32,
            qd: *mut f32,
        );
        pub fn mbmix_window_actuate(
            n: c_int,
            gi: *const c_int,
            gd: *const f64,
            a: *const f32,
            act: *mut f32,
        );
        pub fn mbmix_window_join(
            n: c_int,
            gi: *const c_int,
            a: *const f32,
            q_out: *const f32,
            qd_out: *const f32,
            next: *mut f32,
        );
        pub fn mbmix_window_step_vjp_finish(
            n: c_int,
            gi: *const c_int,
            gd: *const f64,
            a: *const f32,
            adj_next: *const f32,
            adj_q: *const f32,
            adj_qd: *const f32,
            adj_act: *const f32,
            adj_s: *mut f32,
            adj_a: *mut f32,
        );
        pub fn mbmix_window_nonfinite(
            n: c_int,
            width: c_int,
            limit: f32,
            x: *const f32,
            flags: *mut c_int,
        );
        pub fn mbmix_window_scatter(
            k: c_int,
            width: c_int,
            rows: *const c_int,
            src: *const f32,
            dst: *mut f32,
        );
        pub fn mbmix_window_carry(
            n: c_int,
            width: c_int,
            mask: *const c_int,
            carry: *const f32,
            adj: *mut f32,
        );
        pub fn mbmix_window_zero_rows(n: c_int, width: c_int, mask: *const c_int, x: *mut f32);
    }
}

impl HostBackend {
    fn widths(&self) -> (usize, usize, usize, usize) {
        let l = &self.model.layer;
        (
            self.model.art.n_q,
            self.model.art.n_qd,
            l.state_dim,
            l.act_dim,
        )
    }
}

impl ResidentBackend for HostBackend {
    type F = Vec<f32>;
    type I = Vec<i32>;

    fn describe(&self) -> String {
        "host-compiled kernels".into()
    }
    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn izeros(&self, len: usize) -> Result<Vec<i32>> {
        Ok(vec![0; len])
    }
    fn upload(&self, src: &[f32], dst: &mut Vec<f32>) -> Result<()> {
        fits("upload", dst.len(), src.len())?;
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }
    fn upload_i(&self, src: &[i32], dst: &mut Vec<i32>) -> Result<()> {
        fits("upload", dst.len(), src.len())?;
        dst[..src.len()].copy_from_slice(src);
        Ok(())
    }
    fn download(&self, src: &Vec<f32>, dst: &mut [f32]) -> Result<()> {
        fits("download", src.len(), dst.len())?;
        dst.copy_from_slice(&src[..dst.len()]);
        Ok(())
    }
    fn download_i(&self, src: &Vec<i32>, dst: &mut [i32]) -> Result<()> {
        fits("download", src.len(), dst.len())?;
        dst.copy_from_slice(&src[..dst.len()]);
        Ok(())
    }
    fn zero(&self, x: &mut Vec<f32>) -> Result<()> {
        x.fill(0.0);
        Ok(())
    }
    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        if src.len() != dst.len() {
            return Err(Error::dim("copy", src.len(), dst.len()));
        }
        dst.copy_from_slice(src);
        Ok(())
    }
    fn physics_step(
        &mut self,
        n: usize,
        q: &Vec<f32>,
        qd: &Vec<f32>,
        act: &Vec<f32>,
        q_out: &mut Vec<f32>,
        qd_out: &mut Vec<f32>,
    ) -> Result<()> {
        crate::kernels::host::step(&self.model.art, n, q, qd, act, q_out, qd_out)
    }
    fn physics_vjp(
        &mut self,
        n: usize,
        q: &Vec<f32>,
        qd: &Vec<f32>,
        act: &Vec<f32>,
        adj_q_out: &Vec<f32>,
        adj_qd_out: &Vec<f32>,
        adj_q: &mut Vec<f32>,
        adj_qd: &mut Vec<f32>,
        adj_act: &mut Vec<f32>,
    ) -> Result<()> {
        crate::kernels::host::step_vjp(
            &self.model.art,
            n,
            q,
            qd,
            act,
            adj_q_out,
            adj_qd_out,
            adj_q,
            adj_qd,
            adj_act,
        )
    }
    fn observe(&self, n: usize, states: &Vec<f32>, obs: &mut Vec<f32>) -> Result<()> {
        use crate::kernels::host::{task_layer, LayerCall};
        task_layer(&self.model.layer, n, LayerCall::Observe { states, obs })
    }
    fn observe_vjp(
        &self,
        n: usize,
        states: &Vec<f32>,
        adj_obs: &Vec<f32>,
        adj_states: &mut Vec<f32>,
    ) -> Result<()> {
        use crate::kernels::host::{task_layer, LayerCall};
        task_layer(
            &self.model.layer,
            n,
            LayerCall::ObserveVjp {
                states,
                adj_obs,
                adj_states,
            },
        )
    }
    fn reward(
        &self,
        n: usize,
        next: &Vec<f32>,
        actions: &Vec<f32>,
        r: &mut Vec<f32>,
    ) -> Result<()> {
        use crate::kernels::host::{task_layer, LayerCall};
        task_layer(
            &self.model.layer,
            n,
            LayerCall::Reward {
                next_states: next,
                actions,
                rewards: r,
            },
        )
    }
    fn reward_vjp(
        &self,
        n: usize,
        next: &Vec<f32>,
        actions: &Vec<f32>,
        adj_r: &Vec<f32>,
        adj_states: &mut Vec<f32>,
        adj_actions: &mut Vec<f32>,
    ) -> Result<()> {
        use crate::kernels::host::{task_layer, LayerCall};
        task_layer(
            &self.model.layer,
            n,
            LayerCall::RewardVjp {
                next_states: next,
                actions,
                adj_rewards: adj_r,
                adj_states,
                adj_actions,
            },
        )
    }
    fn terminated(&self, n: usize, next: &Vec<f32>, flags: &mut Vec<i32>) -> Result<()> {
        use crate::kernels::host::{task_layer, LayerCall};
        let mut t = vec![false; n];
        task_layer(
            &self.model.layer,
            n,
            LayerCall::Terminated {
                next_states: next,
                terminated: &mut t,
            },
        )?;
        fits("termination flags", flags.len(), n)?;
        for (f, b) in flags.iter_mut().zip(t) {
            *f = i32::from(b);
        }
        Ok(())
    }
    fn split(
        &self,
        n: usize,
        states: &Vec<f32>,
        q: &mut Vec<f32>,
        qd: &mut Vec<f32>,
    ) -> Result<()> {
        let (nq, nd, sd, _) = self.widths();
        fits("split states", states.len(), n * sd)?;
        fits("split q", q.len(), n * nq)?;
        fits("split qd", qd.len(), n * nd)?;
        // SAFETY: every buffer holds what the kernel indexes for n rows (checked above).
        unsafe {
            ffi::mbmix_window_split(
                int32(n)?,
                self.model.glue.ints.as_ptr(),
                states.as_ptr(),
                q.as_mut_ptr(),
                qd.as_mut_ptr(),
            )
        };
        Ok(())
    }
    fn actuate(&self, n: usize, actions: &Vec<f32>, act: &mut Vec<f32>) -> Result<()> {
        let (_, nd, _, ad) = self.widths();
        fits("actions", actions.len(), n * ad)?;
        fits("actuation", act.len(), n * nd)?;
        let g = &self.model.glue;
        // SAFETY: as in `split`; the glue's DOFs were checked against n_qd.
        unsafe {
            ffi::mbmix_window_actuate(
                int32(n)?,
                g.ints.as_ptr(),
                g.doubles.as_ptr(),
                actions.as_ptr(),
                act.as_mut_ptr(),
            )
        };
        Ok(())
    }
    fn join(
        &self,
        n: usize,
        actions: &Vec<f32>,
        q_out: &Vec<f32>,
        qd_out: &Vec<f32>,
        next: &mut Vec<f32>,
    ) -> Result<()> {
        let (nq, nd, sd, ad) = self.widths();
        fits("actions", actions.len(), n * ad)?;
        fits("q", q_out.len(), n * nq)?;
        fits("qd", qd_out.len(), n * nd)?;
        fits("next states", next.len(), n * sd)?;
        // SAFETY: as in `split`.
        unsafe {
            ffi::mbmix_window_join(
                int32(n)?,
                self.model.glue.ints.as_ptr(),
                actions.as_ptr(),
                q_out.as_ptr(),
                qd_out.as_ptr(),
                next.as_mut_ptr(),
            )
        };
        Ok(())
    }
    fn step_vjp_finish(
        &self,
        n: usize,
        actions: &Vec<f32>,
        adj_next: &Vec<f32>,
        adj_q: &Vec<f32>,
        adj_qd: &Vec<f32>,
        adj_act: &Vec<f32>,
        adj_states: &mut Vec<f32>,
        adj_actions: &mut Vec<f32>,
    ) -> Result<()> {
        let (nq, nd, sd, ad) = self.widths();
        fits("actions", actions.len(), n * ad)?;
        fits("next-state adjoint", adj_next.len(), n * sd)?;
        fits("q adjoint", adj_q.len(), n * nq)?;
        fits("qd adjoint", adj_qd.len(), n * nd)?;
        fits("actuation adjoint", adj_act.len(), n * nd)?;
        fits("state adjoint", adj_states.len(), n * sd)?;
        fits("action adjoint", adj_actions.len(), n * ad)?;
        let g = &self.model.glue;
        // SAFETY: as in `split`.
        unsafe {
            ffi::mbmix_window_step_vjp_finish(
                int32(n)?,
                g.ints.as_ptr(),
                g.doubles.as_ptr(),
                actions.as_ptr(),
                adj_next.as_ptr(),
                adj_q.as_ptr(),
                adj_qd.as_ptr(),
                adj_act.as_ptr(),
                adj_states.as_mut_ptr(),
                adj_actions.as_mut_ptr(),
            )
        };
        Ok(())
    }
    fn nonfinite(&self, n: usize, width: usize, x: &Vec<f32>, flags: &mut Vec<i32>) -> Result<()> {
        fits("rows", x.len(), n * width)?;
        fits("flags", flags.len(), n)?;
        // SAFETY: lengths checked above.
        unsafe {
            ffi::mbmix_window_nonfinite(
                int32(n)?,
                int32(width)?,
                NONFINITE_LIMIT,
                x.as_ptr(),
                flags.as_mut_ptr(),
            )
        };
        Ok(())
    }
    fn scatter(
        &self,
        k: usize,
        width: usize,
        rows: &Vec<i32>,
        src: &Vec<f32>,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        fits("rows", rows.len(), k)?;
        fits("source rows", src.len(), k * width)?;
        if let Some(r) = rows[..k]
            .iter()
            .find(|&&r| r < 0 || (r as usize + 1) * width > dst.len())
        {
            return Err(Error::dim("scatter row", dst.len() / width.max(1), *r));
        }
        // SAFETY: lengths and every row index checked above.
        unsafe {
            ffi::mbmix_window_scatter(
                int32(k)?,
                int32(width)?,
                rows.as_ptr(),
                src.as_ptr(),
                dst.as_mut_ptr(),
            )
        };
        Ok(())
    }
    fn carry(
        &self,
        n: usize,
        width: usize,
        mask: &Vec<i32>,
        carry: &Vec<f32>,
        adj: &mut Vec<f32>,
    ) -> Result<()> {
        fits("mask", mask.len(), n)?;
        fits("carry", carry.len(), n * width)?;
        fits("adjoint", adj.len(), n * width)?;
        // SAFETY: lengths checked above.
        unsafe {
            ffi::mbmix_window_carry(
                int32(n)?,
                int32(width)?,
                mask.as_ptr(),
                carry.as_ptr(),
                adj.as_mut_ptr(),
            )
        };
        Ok(())
    }
    fn zero_rows(&self, n: usize, width: usize, mask: &Vec<i32>, x: &mut Vec<f32>) -> Result<()> {
        fits("mask", mask.len(), n)?;
        fits("rows", x.len(), n * width)?;
        // SAFETY: lengths checked above.
        unsafe {
            ffi::mbmix_window_zero_rows(int32(n)?, int32(width)?, mask.as_ptr(), x.as_mut_ptr())
        };
        Ok(())
    }
}

/// The GPU as a [`ResidentBackend`] (feature `cuda`): every buffer is a device slice; the
/// physics and task-layer kernels are [`crate::kernels::gpu::RigidStep`] and
/// [`crate::kernels::gpu::TaskLayer`], the glue is `window.cu`. Launches go on the
/// process's stream in order; a download synchronises.
#[cfg(feature = "cuda")]
pub mod gpu {
    use super::{fits, int32, ResidentBackend, ResidentModel};
    use crate::kernels::gpu::{config, RigidStep, TaskLayer};
    use cudarc::driver::{CudaFunction, CudaSlice, PushKernelArg};
    use diff_core::cuda::{driver_error, Gpu};
    use diff_core::{Result, NONFINITE_LIMIT};
    use std::sync::Arc;

    const GLUE: [&str; 8] = [
        "mbmix_window_split",
        "mbmix_window_actuate",
        "mbmix_window_join",
        "mbmix_window_step_vjp_finish",
        "mbmix_window_nonfinite",
        "mbmix_window_scatter",
        "mbmix_window_carry",
        "mbmix_window_zero_rows",
    ];

    /// The device side of a resident window.
    pub struct GpuBackend {
        gpu: Arc<Gpu>,
        step: RigidStep,
        layer: TaskLayer,
        glue: [CudaFunction; 8],
        gi: CudaSlice<i32>,
        gd: CudaSlice<f64>,
        /// n_q, n_qd, state and action widths.
        widths: [usize; 4],
    }

    impl GpuBackend {
        /// Opens the device, compiles (or reuses) the module and uploads the task.
        pub fn new(
            model: &ResidentModel,
            art: &crate::Articulation,
            params: &crate::SimParams,
        ) -> Result<GpuBackend> {
            let step = RigidStep::new(art, params)?;
            let layer = TaskLayer::new(model.layer.clone())?;
            let gpu = step.gpu().clone();
            let m = gpu.module(crate::kernels::MODULE, &crate::kernels::module_source())?;
            let load = |n: &str| {
                m.load_function(n)
                    .map_err(|e| driver_error(&format!("kernel `{n}`"), e))
            };
            let glue = [
                load(GLUE[0])?,
                load(GLUE[1])?,
                load(GLUE[2])?,
                load(GLUE[3])?,
                load(GLUE[4])?,
                load(GLUE[5])?,
                load(GLUE[6])?,
                load(GLUE[7])?,
            ];
            let stream = gpu.stream();
            let gi = stream
                .clone_htod(&model.glue.ints)
                .map_err(|e| driver_error("upload the window glue", e))?;
            // a kernel argument may not be an empty allocation
            let mut gd_host = model.glue.doubles.clone();
            gd_host.push(0.0);
            let gd = stream
                .clone_htod(&gd_host)
                .map_err(|e| driver_error("upload the window glue", e))?;
            let l = &model.layer;
            Ok(GpuBackend {
                gpu,
                step,
                layer,
                glue,
                gi,
                gd,
                widths: [model.art.n_q, model.art.n_qd, l.state_dim, l.act_dim],
            })
        }

        fn launch<'a>(
            &'a self,
            k: usize,
            rows: usize,
            args: impl FnOnce(&mut cudarc::driver::LaunchArgs<'a>),
        ) -> Result<()> {
            if rows == 0 {
                return Ok(());
            }
            let mut b = self.gpu.stream().launch_builder(&self.glue[k]);
            args(&mut b);
            // SAFETY: every caller checked its buffers against what the kernel indexes for
            // `rows` rows, and the glue model comes from `PackedGlue::new`.
            unsafe { b.launch(config(rows)) }
                .map(|_| ())
                .map_err(|e| driver_error(&format!("launch {}", GLUE[k]), e))
        }
    }

    impl ResidentBackend for GpuBackend {
        type F = CudaSlice<f32>;
        type I = CudaSlice<i32>;

        fn describe(&self) -> String {
            self.gpu.describe()
        }
        fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
            self.gpu
                .stream()
                .alloc_zeros::<f32>(len.max(1))
                .map_err(|e| driver_error("allocate a window buffer", e))
        }
        fn izeros(&self, len: usize) -> Result<CudaSlice<i32>> {
            self.gpu
                .stream()
                .alloc_zeros::<i32>(len.max(1))
                .map_err(|e| driver_error("allocate a window buffer", e))
        }
        fn upload(&self, src: &[f32], dst: &mut CudaSlice<f32>) -> Result<()> {
            fits("upload", dst.len(), src.len())?;
            if src.is_empty() {
                return Ok(());
            }
            self.gpu
                .stream()
                .memcpy_htod(src, &mut dst.slice_mut(..src.len()))
                .map_err(|e| driver_error("upload", e))
        }
        fn upload_i(&self, src: &[i32], dst: &mut CudaSlice<i32>) -> Result<()> {
            fits("upload", dst.len(), src.len())?;
            if src.is_empty() {
                return Ok(());
            }
            self.gpu
                .stream()
                .memcpy_htod(src, &mut dst.slice_mut(..src.len()))
                .map_err(|e| driver_error("upload", e))
        }
        fn download(&self, src: &CudaSlice<f32>, dst: &mut [f32]) -> Result<()> {
            fits("download", src.len(), dst.len())?;
            let s = self.gpu.stream();
            s.memcpy_dtoh(&src.slice(..dst.len()), dst)
                .map_err(|e| driver_error("download", e))?;
            s.synchronize().map_err(|e| driver_error("synchronize", e))
        }
        fn download_i(&self, src: &CudaSlice<i32>, dst: &mut [i32]) -> Result<()> {
            fits("download", src.len(), dst.len())?;
            let s = self.gpu.stream();
            s.memcpy_dtoh(&src.slice(..dst.len()), dst)
                .map_err(|e| driver_error("download", e))?;
            s.synchronize().map_err(|e| driver_error("synchronize", e))
        }
        fn zero(&self, x: &mut CudaSlice<f32>) -> Result<()> {
            self.gpu
                .stream()
                .memset_zeros(x)
                .map_err(|e| driver_error("zero a window buffer", e))
        }
        fn copy(&self, src: &CudaSlice<f32>, dst: &mut CudaSlice<f32>) -> Result<()> {
            if src.len() != dst.len() {
                return Err(diff_core::Error::dim("copy", src.len(), dst.len()));
            }
            self.gpu
                .stream()
                .memcpy_dtod(src, dst)
                .map_err(|e| driver_error("copy a window buffer", e))
        }
        fn physics_step(
            &mut self,
            n: usize,
            q: &CudaSlice<f32>,
            qd: &CudaSlice<f32>,
            act: &CudaSlice<f32>,
            q_out: &mut CudaSlice<f32>,
            qd_out: &mut CudaSlice<f32>,
        ) -> Result<()> {
            self.step.step(n, q, qd, act, q_out, qd_out)
        }
        fn physics_vjp(
            &mut self,
            n: usize,
            q: &CudaSlice<f32>,
            qd: &CudaSlice<f32>,
            act: &CudaSlice<f32>,
            adj_q_out: &CudaSlice<f32>,
            adj_qd_out: &CudaSlice<f32>,
            adj_q: &mut CudaSlice<f32>,
            adj_qd: &mut CudaSlice<f32>,
            adj_act: &mut CudaSlice<f32>,
        ) -> Result<()> {
            self.step
                .step_vjp(n, q, qd, act, adj_q_out, adj_qd_out, adj_q, adj_qd, adj_act)
        }
        fn observe(
            &self,
            n: usize,
            states: &CudaSlice<f32>,
            obs: &mut CudaSlice<f32>,
        ) -> Result<()> {
            self.layer.observe(n, states, obs)
        }
        fn observe_vjp(
            &self,
            n: usize,
            states: &CudaSlice<f32>,
            adj_obs: &CudaSlice<f32>,
            adj_states: &mut CudaSlice<f32>,
        ) -> Result<()> {
            self.layer.observe_vjp(n, states, adj_obs, adj_states)
        }
        fn reward(
            &self,
            n: usize,
            next: &CudaSlice<f32>,
            actions: &CudaSlice<f32>,
            r: &mut CudaSlice<f32>,
        ) -> Result<()> {
            self.layer.reward(n, next, actions, r)
        }
        fn reward_vjp(
            &self,
            n: usize,
            next: &CudaSlice<f32>,
            actions: &CudaSlice<f32>,
            adj_r: &CudaSlice<f32>,
            adj_states: &mut CudaSlice<f32>,
            adj_actions: &mut CudaSlice<f32>,
        ) -> Result<()> {
            self.layer
                .reward_vjp(n, next, actions, adj_r, adj_states, adj_actions)
        }
        fn terminated(
            &self,
            n: usize,
            next: &CudaSlice<f32>,
            flags: &mut CudaSlice<i32>,
        ) -> Result<()> {
            self.layer.terminated(n, next, flags)
        }
        fn split(
            &self,
            n: usize,
            states: &CudaSlice<f32>,
            q: &mut CudaSlice<f32>,
            qd: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let [nq, nd, sd, _] = self.widths;
            fits("split states", states.len(), n * sd)?;
            fits("split q", q.len(), n * nq)?;
            fits("split qd", qd.len(), n * nd)?;
            let ne = int32(n)?;
            self.launch(0, n, |b| {
                b.arg(&ne).arg(&self.gi).arg(states).arg(q).arg(qd);
            })
        }
        fn actuate(
            &self,
            n: usize,
            actions: &CudaSlice<f32>,
            act: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let [_, nd, _, ad] = self.widths;
            fits("actions", actions.len(), n * ad)?;
            fits("actuation", act.len(), n * nd)?;
            let ne = int32(n)?;
            self.launch(1, n, |b| {
                b.arg(&ne).arg(&self.gi).arg(&self.gd).arg(actions).arg(act);
            })
        }
        fn join(
            &self,
            n: usize,
            actions: &CudaSlice<f32>,
            q_out: &CudaSlice<f32>,
            qd_out: &CudaSlice<f32>,
            next: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let [nq, nd, sd, ad] = self.widths;
            fits("actions", actions.len(), n * ad)?;
            fits("q", q_out.len(), n * nq)?;
            fits("qd", qd_out.len(), n * nd)?;
            fits("next states", next.len(), n * sd)?;
            let ne = int32(n)?;
            self.launch(2, n, |b| {
                b.arg(&ne)
                    .arg(&self.gi)
                    .arg(actions)
                    .arg(q_out)
                    .arg(qd_out)
                    .arg(next);
            })
        }
        fn step_vjp_finish(
            &self,
            n: usize,
            actions: &CudaSlice<f32>,
            adj_next: &CudaSlice<f32>,
            adj_q: &CudaSlice<f32>,
            adj_qd: &CudaSlice<f32>,
            adj_act: &CudaSlice<f32>,
            adj_states: &mut CudaSlice<f32>,
            adj_actions: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let [nq, nd, sd, ad] = self.widths;
            fits("actions", actions.len(), n * ad)?;
            fits("next-state adjoint", adj_next.len(), n * sd)?;
            fits("q adjoint", adj_q.len(), n * nq)?;
            fits("qd adjoint", adj_qd.len(), n * nd)?;
            fits("actuation adjoint", adj_act.len(), n * nd)?;
            fits("state adjoint", adj_states.len(), n * sd)?;
            fits("action adjoint", adj_actions.len(), n * ad)?;
            let ne = int32(n)?;
            self.launch(3, n, |b| {
                b.arg(&ne)
                    .arg(&self.gi)
                    .arg(&self.gd)
                    .arg(actions)
                    .arg(adj_next)
                    .arg(adj_q)
                    .arg(adj_qd)
                    .arg(adj_act)
                    .arg(adj_states)
                    .arg(adj_actions);
            })
        }
        fn nonfinite(
            &self,
            n: usize,
            width: usize,
            x: &CudaSlice<f32>,
            flags: &mut CudaSlice<i32>,
        ) -> Result<()> {
            fits("rows", x.len(), n * width)?;
            fits("flags", flags.len(), n)?;
            let (ne, w) = (int32(n)?, int32(width)?);
            self.launch(4, n, |b| {
                b.arg(&ne).arg(&w).arg(&NONFINITE_LIMIT).arg(x).arg(flags);
            })
        }
        fn scatter(
            &self,
            k: usize,
            width: usize,
            rows: &CudaSlice<i32>,
            src: &CudaSlice<f32>,
            dst: &mut CudaSlice<f32>,
        ) -> Result<()> {
            // the row indices were checked on the host by `ResidentRigid::reset_rows`
            fits("rows", rows.len(), k)?;
            fits("source rows", src.len(), k * width)?;
            let (nk, w) = (int32(k)?, int32(width)?);
            self.launch(5, k, |b| {
                b.arg(&nk).arg(&w).arg(rows).arg(src).arg(dst);
            })
        }
        fn carry(
            &self,
            n: usize,
            width: usize,
            mask: &CudaSlice<i32>,
            carry: &CudaSlice<f32>,
            adj: &mut CudaSlice<f32>,
        ) -> Result<()> {
            fits("mask", mask.len(), n)?;
            fits("carry", carry.len(), n * width)?;
            fits("adjoint", adj.len(), n * width)?;
            let (ne, w) = (int32(n)?, int32(width)?);
            self.launch(6, n, |b| {
                b.arg(&ne).arg(&w).arg(mask).arg(carry).arg(adj);
            })
        }
        fn zero_rows(
            &self,
            n: usize,
            width: usize,
            mask: &CudaSlice<i32>,
            x: &mut CudaSlice<f32>,
        ) -> Result<()> {
            fits("mask", mask.len(), n)?;
            fits("rows", x.len(), n * width)?;
            let (ne, w) = (int32(n)?, int32(width)?);
            self.launch(7, n, |b| {
                b.arg(&ne).arg(&w).arg(mask).arg(x);
            })
        }
    }
}

//! The simulator's CUDA kernels (ARCHITECTURE.md "Backends"): CUDA C++ sources beside their
//! CPU twins, written in the common subset of CUDA and C so that one source serves both
//! targets:
//! - [`gpu`] (feature `cuda`): compiled at run time by NVRTC for the device's compute
//!   capability (cached per process) and launched with one thread per env;
//! - [`host`]: the same sources compiled as C by `build.rs` and called on the CPU, so that
//!   the parity tests check the kernel code itself against the Rust CPU path on any
//!   machine, with or without a GPU.
//!
//! Kernels so far:
//! - `step.cu`: the whole forward control step, [`crate::Articulation::step`] (kinematics,
//!   velocities, bias forces, ground contacts, joint torques with limits and motor
//!   saturation, mass matrix with caching, Cholesky, solve, integration) for every joint
//!   kind, one thread per env;
//! - `step_vjp.cu`: its VJP, [`crate::Articulation::step_vjp`] (the forward replayed with
//!   every substep kept, then each stage's hand-written adjoint in reverse);
//! - `cholesky.cu`: the dense Cholesky factorisation, solve and solve adjoint (twins
//!   [`crate::dynamics::cholesky`], [`crate::dynamics::cholesky_solve`],
//!   [`crate::Articulation::solve_vjp`]);
//! - `locomotion.cu`, `planar.cu`, `cartpole.cu`: the task layers of Ant, Humanoid and
//!   Bruce, of Hopper and HalfCheetah, and of CartPole (observation, reward, termination,
//!   and the observation's and reward's VJPs; twins in `tasks/`), one thread per env, with
//!   their constants in [`PackedTaskLayer`].
//!
//! - `window.cu`: the glue of a window resident on the device ([`crate::resident`]): the
//!   state split, the actuation, the join with the extra state and their VJPs, the
//!   non-finite guard, the resets and the reverse sweep's carry.
//!
//! [`crate::batch::KernelEnv`] puts a [`Physics`] backend (the GPU, or the host build)
//! behind the `Task` contract, and offers a resident window
//! ([`diff_core::Task::resident_window`], [`crate::resident::ResidentRigid`]) in which the
//! window's states stay on the device from its start to its end; `mbmix train --device
//! cuda` uses both (SHAC's training windows are resident).

use diff_core::{Error, Result};

/// The kernel files of this crate, in module order (later files use earlier files'
/// helpers; `build.rs` lists the same files for the host build).
pub const KERNEL_FILES: &[(&str, &str)] = &[
    ("cholesky.cu", include_str!("cholesky.cu")),
    ("step.cu", include_str!("step.cu")),
    ("step_vjp.cu", include_str!("step_vjp.cu")),
    ("locomotion.cu", include_str!("locomotion.cu")),
    ("planar.cu", include_str!("planar.cu")),
    ("cartpole.cu", include_str!("cartpole.cu")),
    ("window.cu", include_str!("window.cu")),
];

/// The module's name in the per-process cache.
pub const MODULE: &str = "sim-rigid";

/// The module source NVRTC compiles (diff-core's prelude goes in front): every kernel
/// file, each under a `#line` directive naming it, so compiler messages point at the file.
pub fn module_source() -> String {
    let mut src = String::new();
    for (name, text) in KERNEL_FILES {
        src.push_str(&format!("#line 1 \"{name}\"\n{text}\n"));
    }
    src
}

/// An articulation and its integration parameters packed for `step.cu` (layouts in its
/// header comment): an integer and a float array, uploaded once per task.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedArticulation {
    /// Integer model (`mi`).
    pub ints: Vec<i32>,
    /// Float model (`mf`), in f32 like the CPU training path's constants.
    pub floats: Vec<f32>,
    /// Generalised coordinates per env.
    pub n_q: usize,
    /// DOFs per env.
    pub n_qd: usize,
    /// Scratch floats per env of the step (`step_scratch_len` in `step.cu`).
    pub scratch_len: usize,
    /// Scratch floats per env of the step's VJP (`step_vjp_scratch_len` in
    /// `step_vjp.cu`): every substep's intermediates.
    pub vjp_scratch_len: usize,
}

/// Which task-layer kernel family a [`PackedTaskLayer`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskLayerKind {
    /// `locomotion.cu`: Ant, Humanoid, Bruce.
    Locomotion,
    /// `planar.cu`: Hopper, HalfCheetah.
    Planar,
    /// `cartpole.cu`: CartPole swing-up.
    CartPole,
}

impl TaskLayerKind {
    /// The kernels' name prefix (`mbmix_<prefix>_observe`, …).
    pub fn prefix(self) -> &'static str {
        match self {
            TaskLayerKind::Locomotion => "loco",
            TaskLayerKind::Planar => "planar",
            TaskLayerKind::CartPole => "cartpole",
        }
    }
}

/// A task layer's constants packed for its kernels (layouts in each `.cu` file's header
/// comment): observation, reward, termination and the two VJPs of one rigid task.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedTaskLayer {
    /// The kernel family.
    pub kind: TaskLayerKind,
    /// `ti`.
    pub ints: Vec<i32>,
    /// `td`, in f64 (the kernels cast where the CPU twin casts).
    pub doubles: Vec<f64>,
    /// State, observation and action widths.
    pub state_dim: usize,
    pub obs_dim: usize,
    pub act_dim: usize,
}

fn int32(task: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::InvalidParameter {
        name: format!("task `{task}`"),
        reason: "a size does not fit the kernels' 32-bit index".into(),
    })
}

impl PackedTaskLayer {
    fn with_spec(
        kind: TaskLayerKind,
        spec: &diff_core::TaskSpec,
        ints: Vec<i32>,
        doubles: Vec<f64>,
    ) -> Self {
        PackedTaskLayer {
            kind,
            ints,
            doubles,
            state_dim: spec.state_dim,
            obs_dim: spec.obs_dim,
            act_dim: spec.act_dim,
        }
    }

    /// The task layer of a locomotion task (`locomotion.cu`).
    pub fn locomotion(task: &crate::tasks::locomotion::Locomotion) -> Result<Self> {
        use crate::tasks::locomotion::HeightReward;
        let c = &task.cfg;
        let nq = c.art.n_q;
        let (mode, tol, scale) = match c.height_reward {
            HeightReward::Linear => (0, 0.0, 0.0),
            HeightReward::Clipped { tolerance, scale } => (1, tolerance, scale),
        };
        let inv = task.inv_start();
        Ok(Self::with_spec(
            TaskLayerKind::Locomotion,
            crate::batch::RigidTask::spec(task),
            vec![
                int32(&c.name, nq)?,
                int32(&c.name, nq - 7)?,
                int32(&c.name, c.actuators.len())?,
                mode,
            ],
            vec![
                c.start_pos[0] + c.target[0],
                c.start_pos[2] + c.target[2],
                inv[0],
                inv[1],
                inv[2],
                inv[3],
                c.up_weight,
                c.heading_weight,
                c.joint_vel_obs_scale,
                c.termination_height,
                tol,
                scale,
                c.action_penalty,
                c.ang_vel_penalty,
            ],
        ))
    }

    /// The task layer of a planar task (`planar.cu`).
    pub fn planar(task: &crate::tasks::planar::Planar) -> Result<Self> {
        let c = &task.cfg;
        let h = c.hopper;
        let (th, tol, clip, scale, angle) = h.map_or((0.0, 0.0, 0.0, 0.0, 1.0), |h| {
            (
                h.termination_height,
                h.height_tolerance,
                h.height_clip,
                h.height_scale,
                h.termination_angle,
            )
        });
        Ok(Self::with_spec(
            TaskLayerKind::Planar,
            crate::batch::RigidTask::spec(task),
            vec![
                int32(&c.name, c.art.n_q)?,
                int32(&c.name, c.actuators.len())?,
                i32::from(h.is_some()),
            ],
            vec![
                th,
                th + tol,
                clip,
                scale,
                angle * angle,
                -2.0 / (angle * angle),
                c.action_penalty,
            ],
        ))
    }

    /// The task layer of CartPole swing-up (`cartpole.cu`).
    pub fn cartpole(task: &crate::tasks::CartPole) -> Self {
        use crate::tasks::cartpole::{
            CART_POSITION_PENALTY, CART_VELOCITY_PENALTY, POLE_ANGLE_PENALTY, POLE_VELOCITY_PENALTY,
        };
        Self::with_spec(
            TaskLayerKind::CartPole,
            crate::batch::RigidTask::spec(task),
            vec![0],
            vec![
                POLE_ANGLE_PENALTY,
                POLE_VELOCITY_PENALTY,
                CART_POSITION_PENALTY,
                CART_VELOCITY_PENALTY,
            ],
        )
    }
}

/// Floats per link and per contact, and the header sizes, as in `step.cu`.
const LINK_INTS: usize = 6;
const LINK_FLOATS: usize = 37;
const CONTACT_FLOATS: usize = 8;
const LINK_SCRATCH: usize = 132;
const LINK_ADJOINT: usize = 87;

impl PackedArticulation {
    /// Packs `art` integrated with `params`.
    pub fn new(art: &crate::Articulation, params: &crate::SimParams) -> Result<Self> {
        use crate::model::{EffortSaturation, JointKind};
        let int = |what: &str, v: usize| {
            i32::try_from(v).map_err(|_| Error::InvalidParameter {
                name: what.into(),
                reason: "does not fit the kernels' 32-bit index".into(),
            })
        };
        if params.substeps == 0 || params.mm_freq == 0 {
            return Err(Error::InvalidParameter {
                name: "substeps / mm_freq".into(),
                reason: "must be at least 1".into(),
            });
        }
        let mut ints = vec![
            int("links", art.links.len())?,
            int("n_q", art.n_q)?,
            int("n_qd", art.n_qd)?,
            int("contacts", art.contacts.len())?,
            int("substeps", params.substeps)?,
            int("mm_freq", params.mm_freq)?,
        ];
        let g = art.gravity;
        let mut floats = vec![
            g[0] as f32,
            g[1] as f32,
            g[2] as f32,
            params.sub_dt() as f32,
        ];
        for link in &art.links {
            let j = &link.joint;
            // the CPU kinematics skip the 3×3 product on the same test
            let identity = crate::dynamics::is_identity(&j.x_pj.r);
            ints.extend([
                match link.parent {
                    Some(p) => int("parent", p)?,
                    None => -1,
                },
                match j.kind {
                    JointKind::Prismatic => 0,
                    JointKind::Revolute => 1,
                    JointKind::Ball => 2,
                    JointKind::Fixed => 3,
                    JointKind::Free => 4,
                },
                int("q_start", link.q_start)?,
                int("qd_start", link.qd_start)?,
                i32::from(identity),
                match j.effort_saturation {
                    EffortSaturation::Clamp => 0,
                    EffortSaturation::Tanh => 1,
                },
            ]);
            let mut lf: Vec<f64> = Vec::with_capacity(LINK_FLOATS);
            lf.extend(j.axis);
            lf.extend(j.x_pj.p);
            lf.extend(j.x_pj.r.iter().flatten());
            lf.push(link.mass);
            lf.extend(link.com);
            lf.extend(link.inertia.iter().flatten());
            lf.extend([
                j.target,
                j.target_ke,
                j.target_kd,
                j.limit_lower,
                j.limit_upper,
                j.limit_ke,
                j.limit_kd,
                j.armature,
                j.effort_limit,
            ]);
            debug_assert_eq!(lf.len(), LINK_FLOATS);
            floats.extend(lf.iter().map(|&x| x as f32));
        }
        for &l in &art.dof_link {
            ints.push(int("dof_link", l)?);
        }
        let mut start = 0;
        ints.push(0);
        for row in &art.dof_support {
            start += row.len();
            ints.push(int("dof_support", start)?);
        }
        for row in &art.dof_support {
            for &d in row {
                ints.push(int("dof_support", d)?);
            }
        }
        for c in &art.contacts {
            ints.push(int("contact link", c.link)?);
            let m = &c.material;
            let cf = [
                c.point[0],
                c.point[1],
                c.point[2],
                c.thickness,
                m.ke,
                m.kd,
                m.kf,
                m.mu,
            ];
            debug_assert_eq!(cf.len(), CONTACT_FLOATS);
            floats.extend(cf.iter().map(|&x| x as f32));
        }
        let (nl, nq, nd) = (art.links.len(), art.n_q, art.n_qd);
        debug_assert!(ints.len() >= 6 + nl * LINK_INTS);
        Ok(PackedArticulation {
            ints,
            floats,
            n_q: nq,
            n_qd: nd,
            scratch_len: nl * LINK_SCRATCH
                + 6 * nd
                + 3 * nd
                + 2 * nd * nd
                + 6 * nd
                + 2 * nq
                + 2 * nd,
            vjp_scratch_len: {
                let builds = params.substeps.div_ceil(params.mm_freq);
                params.substeps * (nl * LINK_SCRATCH + 11 * nd + 2 * nq)
                    + builds * (6 * nd + 2 * nd * nd)
                    + nd * nd
                    + nl * LINK_ADJOINT
                    + 6 * nd
                    + 5 * nd
                    + 2 * nq
                    + nd
                    + 36 * nl
            },
        })
    }

    /// Checks a batch's buffers against the articulation's sizes.
    fn check(&self, n_envs: usize, q: usize, qd: usize, act: usize) -> Result<()> {
        check_batch("step q", q, n_envs, self.n_q)?;
        check_batch("step qd", qd, n_envs, self.n_qd)?;
        check_batch("step act", act, n_envs, self.n_qd)
    }
}

/// A batched physics step (`Articulation::step` and its VJP on host slices), as the
/// [`crate::batch::KernelEnv`] uses it: the kernels compiled for the host
/// ([`HostPhysics`]) or on a GPU (`CudaPhysics`, feature `cuda`).
pub trait Physics: Send + Sync {
    /// Where it runs, for messages.
    fn describe(&self) -> String;
    /// One control step of `n_envs` envs (layouts as [`host::step`]).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        n_envs: usize,
        q: &[f32],
        qd: &[f32],
        act: &[f32],
        q_out: &mut [f32],
        qd_out: &mut [f32],
    ) -> Result<()>;
    /// Its VJP, accumulated into `adj_q`, `adj_qd`, `adj_act` (as [`host::step_vjp`]).
    #[allow(clippy::too_many_arguments)]
    fn step_vjp(
        &self,
        n_envs: usize,
        q: &[f32],
        qd: &[f32],
        act: &[f32],
        adj_q_out: &[f32],
        adj_qd_out: &[f32],
        adj_q: &mut [f32],
        adj_qd: &mut [f32],
        adj_act: &mut [f32],
    ) -> Result<()>;
}

/// The kernels compiled for the host: the GPU's code path, run on the CPU (one thread).
#[derive(Clone, Debug)]
pub struct HostPhysics(pub PackedArticulation);

impl Physics for HostPhysics {
    fn describe(&self) -> String {
        "host-compiled kernels".into()
    }
    fn step(
        &self,
        n_envs: usize,
        q: &[f32],
        qd: &[f32],
        act: &[f32],
        q_out: &mut [f32],
        qd_out: &mut [f32],
    ) -> Result<()> {
        host::step(&self.0, n_envs, q, qd, act, q_out, qd_out)
    }
    fn step_vjp(
        &self,
        n_envs: usize,
        q: &[f32],
        qd: &[f32],
        act: &[f32],
        adj_q_out: &[f32],
        adj_qd_out: &[f32],
        adj_q: &mut [f32],
        adj_qd: &mut [f32],
        adj_act: &mut [f32],
    ) -> Result<()> {
        host::step_vjp(
            &self.0, n_envs, q, qd, act, adj_q_out, adj_qd_out, adj_q, adj_qd, adj_act,
        )
    }
}

fn check_batch(what: &str, len: usize, n_envs: usize, per_env: usize) -> Result<()> {
    if len != n_envs * per_env {
        return Err(Error::dim(what, n_envs * per_env, len));
    }
    Ok(())
}

fn dims(n_envs: usize, n: usize) -> Result<(i32, i32)> {
    let too_big = |what: &str| Error::InvalidParameter {
        name: what.into(),
        reason: "does not fit the kernels' 32-bit index".into(),
    };
    Ok((
        i32::try_from(n_envs).map_err(|_| too_big("n_envs"))?,
        i32::try_from(n).map_err(|_| too_big("n"))?,
    ))
}

/// The kernels compiled as C for the host (same source as the GPU's).
pub mod host {
    use super::{check_batch, dims, PackedArticulation, PackedTaskLayer, TaskLayerKind};
    use diff_core::Result;
    use std::os::raw::c_int;

    extern "C" {
        fn mbmix_rigid_step(
            n_envs: c_int,
            mi: *const c_int,
            mf: *const f32,
            q: *const f32,
            qd: *const f32,
            act: *const f32,
            q_out: *mut f32,
            qd_out: *mut f32,
            scratch: *mut f32,
        );
        fn mbmix_rigid_step_vjp(
            n_envs: c_int,
            mi: *const c_int,
            mf: *const f32,
            q: *const f32,
            qd: *const f32,
            act: *const f32,
            adj_q_out: *const f32,
            adj_qd_out: *const f32,
            adj_q: *mut f32,
            adj_qd: *mut f32,
            adj_act: *mut f32,
            scratch: *mut f32,
        );
        fn mbmix_loco_observe(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            o: *mut f32,
        );
        fn mbmix_loco_observe_vjp(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            adj_o: *const f32,
            adj_s: *mut f32,
        );
        fn mbmix_loco_reward(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            a: *const f32,
            r: *mut f32,
        );
        fn mbmix_loco_reward_vjp(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            a: *const f32,
            adj_r: *const f32,
            adj_s: *mut f32,
            adj_a: *mut f32,
        );
        fn mbmix_loco_terminated(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            d: *mut c_int,
        );
        fn mbmix_planar_observe(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            o: *mut f32,
        );
        fn mbmix_planar_observe_vjp(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            adj_o: *const f32,
            adj_s: *mut f32,
        );
        fn mbmix_planar_reward(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            a: *const f32,
            r: *mut f32,
        );
        fn mbmix_planar_reward_vjp(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            a: *const f32,
            adj_r: *const f32,
            adj_s: *mut f32,
            adj_a: *mut f32,
        );
        fn mbmix_planar_terminated(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            d: *mut c_int,
        );
        fn mbmix_cartpole_observe(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            o: *mut f32,
        );
        fn mbmix_cartpole_observe_vjp(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            adj_o: *const f32,
            adj_s: *mut f32,
        );
        fn mbmix_cartpole_reward(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            a: *const f32,
            r: *mut f32,
        );
        fn mbmix_cartpole_reward_vjp(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            a: *const f32,
            adj_r: *const f32,
            adj_s: *mut f32,
            adj_a: *mut f32,
        );
        fn mbmix_cartpole_terminated(
            n: c_int,
            ti: *const c_int,
            td: *const f64,
            s: *const f32,
            d: *mut c_int,
        );
        fn mbmix_cholesky(n_envs: c_int, n: c_int, a: *const f32, l: *mut f32);
        fn mbmix_cholesky_solve(n_envs: c_int, n: c_int, l: *const f32, b: *mut f32);
        fn mbmix_solve_vjp(
            n_envs: c_int,
            n: c_int,
            l: *const f32,
            qdd: *const f32,
            adj_qdd: *mut f32,
            adj_tau: *mut f32,
            adj_h: *mut f32,
        );
    }

    type ObserveFn = unsafe extern "C" fn(c_int, *const c_int, *const f64, *const f32, *mut f32);
    type ObserveVjpFn =
        unsafe extern "C" fn(c_int, *const c_int, *const f64, *const f32, *const f32, *mut f32);
    type RewardFn =
        unsafe extern "C" fn(c_int, *const c_int, *const f64, *const f32, *const f32, *mut f32);
    type RewardVjpFn = unsafe extern "C" fn(
        c_int,
        *const c_int,
        *const f64,
        *const f32,
        *const f32,
        *const f32,
        *mut f32,
        *mut f32,
    );
    type TerminatedFn =
        unsafe extern "C" fn(c_int, *const c_int, *const f64, *const f32, *mut c_int);

    /// The host build's entry points of one task-layer kernel family.
    fn layer_fns(
        kind: TaskLayerKind,
    ) -> (ObserveFn, ObserveVjpFn, RewardFn, RewardVjpFn, TerminatedFn) {
        match kind {
            TaskLayerKind::Locomotion => (
                mbmix_loco_observe,
                mbmix_loco_observe_vjp,
                mbmix_loco_reward,
                mbmix_loco_reward_vjp,
                mbmix_loco_terminated,
            ),
            TaskLayerKind::Planar => (
                mbmix_planar_observe,
                mbmix_planar_observe_vjp,
                mbmix_planar_reward,
                mbmix_planar_reward_vjp,
                mbmix_planar_terminated,
            ),
            TaskLayerKind::CartPole => (
                mbmix_cartpole_observe,
                mbmix_cartpole_observe_vjp,
                mbmix_cartpole_reward,
                mbmix_cartpole_reward_vjp,
                mbmix_cartpole_terminated,
            ),
        }
    }

    /// A task layer's call on `n_envs` rows: which output to compute.
    pub enum LayerCall<'a> {
        /// `Task::observe`: states → observations (overwritten).
        Observe {
            states: &'a [f32],
            obs: &'a mut [f32],
        },
        /// `Task::observe_vjp`: adds into `adj_states`.
        ObserveVjp {
            states: &'a [f32],
            adj_obs: &'a [f32],
            adj_states: &'a mut [f32],
        },
        /// `Task::reward` of the next states and actions (overwritten).
        Reward {
            next_states: &'a [f32],
            actions: &'a [f32],
            rewards: &'a mut [f32],
        },
        /// `Task::reward_vjp`: adds into `adj_states` and `adj_actions`.
        RewardVjp {
            next_states: &'a [f32],
            actions: &'a [f32],
            adj_rewards: &'a [f32],
            adj_states: &'a mut [f32],
            adj_actions: &'a mut [f32],
        },
        /// `Task::terminated` of the next states.
        Terminated {
            next_states: &'a [f32],
            terminated: &'a mut [bool],
        },
    }

    /// Runs one task-layer kernel on the host (lengths checked against `task`'s widths).
    pub fn task_layer(task: &PackedTaskLayer, n_envs: usize, call: LayerCall<'_>) -> Result<()> {
        let (ne, _) = dims(n_envs, 1)?;
        let (sd, od, ad) = (task.state_dim, task.obs_dim, task.act_dim);
        let (ti, td) = (task.ints.as_ptr(), task.doubles.as_ptr());
        let (observe, observe_vjp, reward, reward_vjp, terminated_fn) = layer_fns(task.kind);
        // SAFETY (every arm): the task arrays come from `PackedTaskLayer`'s constructors and every
        // buffer's length is checked against what the kernel indexes first.
        match call {
            LayerCall::Observe { states, obs } => {
                check_batch("locomotion states", states.len(), n_envs, sd)?;
                check_batch("locomotion observations", obs.len(), n_envs, od)?;
                unsafe { observe(ne, ti, td, states.as_ptr(), obs.as_mut_ptr()) };
            }
            LayerCall::ObserveVjp {
                states,
                adj_obs,
                adj_states,
            } => {
                check_batch("locomotion states", states.len(), n_envs, sd)?;
                check_batch("locomotion observation adjoint", adj_obs.len(), n_envs, od)?;
                check_batch("locomotion state adjoint", adj_states.len(), n_envs, sd)?;
                unsafe {
                    observe_vjp(
                        ne,
                        ti,
                        td,
                        states.as_ptr(),
                        adj_obs.as_ptr(),
                        adj_states.as_mut_ptr(),
                    )
                };
            }
            LayerCall::Reward {
                next_states,
                actions,
                rewards,
            } => {
                check_batch("locomotion next states", next_states.len(), n_envs, sd)?;
                check_batch("locomotion actions", actions.len(), n_envs, ad)?;
                check_batch("locomotion rewards", rewards.len(), n_envs, 1)?;
                unsafe {
                    reward(
                        ne,
                        ti,
                        td,
                        next_states.as_ptr(),
                        actions.as_ptr(),
                        rewards.as_mut_ptr(),
                    )
                };
            }
            LayerCall::RewardVjp {
                next_states,
                actions,
                adj_rewards,
                adj_states,
                adj_actions,
            } => {
                check_batch("locomotion next states", next_states.len(), n_envs, sd)?;
                check_batch("locomotion actions", actions.len(), n_envs, ad)?;
                check_batch("locomotion reward adjoint", adj_rewards.len(), n_envs, 1)?;
                check_batch("locomotion state adjoint", adj_states.len(), n_envs, sd)?;
                check_batch("locomotion action adjoint", adj_actions.len(), n_envs, ad)?;
                unsafe {
                    reward_vjp(
                        ne,
                        ti,
                        td,
                        next_states.as_ptr(),
                        actions.as_ptr(),
                        adj_rewards.as_ptr(),
                        adj_states.as_mut_ptr(),
                        adj_actions.as_mut_ptr(),
                    )
                };
            }
            LayerCall::Terminated {
                next_states,
                terminated,
            } => {
                check_batch("locomotion next states", next_states.len(), n_envs, sd)?;
                check_batch("locomotion termination flags", terminated.len(), n_envs, 1)?;
                let mut flags = vec![0 as c_int; n_envs];
                unsafe { terminated_fn(ne, ti, td, next_states.as_ptr(), flags.as_mut_ptr()) };
                for (o, f) in terminated.iter_mut().zip(flags) {
                    *o = f != 0;
                }
            }
        }
        Ok(())
    }

    /// One control step of `n_envs` envs (`Articulation::step` on each row): `q`
    /// `[n_envs, n_q]`, `qd` and `act` `[n_envs, n_qd]`, outputs likewise.
    pub fn step(
        art: &PackedArticulation,
        n_envs: usize,
        q: &[f32],
        qd: &[f32],
        act: &[f32],
        q_out: &mut [f32],
        qd_out: &mut [f32],
    ) -> Result<()> {
        art.check(n_envs, q.len(), qd.len(), act.len())?;
        art.check(n_envs, q_out.len(), qd_out.len(), act.len())?;
        let (ne, _) = dims(n_envs, 1)?;
        let mut scratch = vec![0.0f32; n_envs * art.scratch_len];
        // SAFETY: the model arrays come from `PackedArticulation::new` and every buffer's
        // length was checked against what the kernel indexes.
        unsafe {
            mbmix_rigid_step(
                ne,
                art.ints.as_ptr(),
                art.floats.as_ptr(),
                q.as_ptr(),
                qd.as_ptr(),
                act.as_ptr(),
                q_out.as_mut_ptr(),
                qd_out.as_mut_ptr(),
                scratch.as_mut_ptr(),
            )
        };
        Ok(())
    }

    /// The VJP of [`step`] (`Articulation::step_vjp` on each row): replays the step from
    /// `(q, qd, act)` and accumulates the cotangents `(adj_q_out, adj_qd_out)` pulled back
    /// into `adj_q`, `adj_qd`, `adj_act`.
    #[allow(clippy::too_many_arguments)]
    pub fn step_vjp(
        art: &PackedArticulation,
        n_envs: usize,
        q: &[f32],
        qd: &[f32],
        act: &[f32],
        adj_q_out: &[f32],
        adj_qd_out: &[f32],
        adj_q: &mut [f32],
        adj_qd: &mut [f32],
        adj_act: &mut [f32],
    ) -> Result<()> {
        art.check(n_envs, q.len(), qd.len(), act.len())?;
        art.check(n_envs, adj_q_out.len(), adj_qd_out.len(), adj_act.len())?;
        art.check(n_envs, adj_q.len(), adj_qd.len(), act.len())?;
        let (ne, _) = dims(n_envs, 1)?;
        let mut scratch = vec![0.0f32; n_envs * art.vjp_scratch_len];
        // SAFETY: as in `step`.
        unsafe {
            mbmix_rigid_step_vjp(
                ne,
                art.ints.as_ptr(),
                art.floats.as_ptr(),
                q.as_ptr(),
                qd.as_ptr(),
                act.as_ptr(),
                adj_q_out.as_ptr(),
                adj_qd_out.as_ptr(),
                adj_q.as_mut_ptr(),
                adj_qd.as_mut_ptr(),
                adj_act.as_mut_ptr(),
                scratch.as_mut_ptr(),
            )
        };
        Ok(())
    }

    /// Batched `A = L Lᵀ` (`a`, `l`: `n_envs` row-major n×n matrices).
    pub fn cholesky(n_envs: usize, n: usize, a: &[f32], l: &mut [f32]) -> Result<()> {
        check_batch("cholesky a", a.len(), n_envs, n * n)?;
        check_batch("cholesky l", l.len(), n_envs, n * n)?;
        let (ne, nn) = dims(n_envs, n)?;
        // SAFETY: the lengths were checked against what the kernel indexes.
        unsafe { mbmix_cholesky(ne, nn, a.as_ptr(), l.as_mut_ptr()) };
        Ok(())
    }

    /// Batched solve of `L Lᵀ x = b` in place (`b`: `n_envs` vectors of n).
    pub fn cholesky_solve(n_envs: usize, n: usize, l: &[f32], b: &mut [f32]) -> Result<()> {
        check_batch("cholesky_solve l", l.len(), n_envs, n * n)?;
        check_batch("cholesky_solve b", b.len(), n_envs, n)?;
        let (ne, nn) = dims(n_envs, n)?;
        // SAFETY: as above.
        unsafe { mbmix_cholesky_solve(ne, nn, l.as_ptr(), b.as_mut_ptr()) };
        Ok(())
    }

    /// Batched adjoint of the solve: `adj_qdd` becomes `H⁻¹ adj_qdd`, which is added to
    /// `adj_tau`; `−(H⁻¹ adj_qdd) q̈ᵀ` is added to `adj_h`.
    pub fn solve_vjp(
        n_envs: usize,
        n: usize,
        l: &[f32],
        qdd: &[f32],
        adj_qdd: &mut [f32],
        adj_tau: &mut [f32],
        adj_h: &mut [f32],
    ) -> Result<()> {
        check_batch("solve_vjp l", l.len(), n_envs, n * n)?;
        check_batch("solve_vjp qdd", qdd.len(), n_envs, n)?;
        check_batch("solve_vjp adj_qdd", adj_qdd.len(), n_envs, n)?;
        check_batch("solve_vjp adj_tau", adj_tau.len(), n_envs, n)?;
        check_batch("solve_vjp adj_h", adj_h.len(), n_envs, n * n)?;
        let (ne, nn) = dims(n_envs, n)?;
        // SAFETY: as above.
        unsafe {
            mbmix_solve_vjp(
                ne,
                nn,
                l.as_ptr(),
                qdd.as_ptr(),
                adj_qdd.as_mut_ptr(),
                adj_tau.as_mut_ptr(),
                adj_h.as_mut_ptr(),
            )
        };
        Ok(())
    }
}

/// The kernels on a CUDA device (feature `cuda`).
#[cfg(feature = "cuda")]
pub mod gpu {
    use super::{check_batch, dims, PackedArticulation, PackedTaskLayer};
    use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
    use diff_core::cuda::{driver_error, Gpu};
    use diff_core::Result;
    use std::sync::Arc;

    /// Threads per block: one thread per env.
    const BLOCK: u32 = 128;

    pub(crate) fn config(n_envs: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: ((n_envs as u32).div_ceil(BLOCK).max(1), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// A task layer on the device (`locomotion.cu`, `planar.cu`, `cartpole.cu`; layouts as
    /// [`super::host::task_layer`]): the packed constants live on the device; every buffer
    /// is a device slice, so a window kept on the device calls these without host copies.
    pub struct TaskLayer {
        gpu: Arc<Gpu>,
        /// observe, observe_vjp, reward, reward_vjp, terminated.
        funcs: [CudaFunction; 5],
        packed: PackedTaskLayer,
        ints: CudaSlice<i32>,
        doubles: CudaSlice<f64>,
    }

    impl TaskLayer {
        /// Uploads `packed` and loads its kernels.
        pub fn new(packed: PackedTaskLayer) -> Result<TaskLayer> {
            let gpu = Gpu::get()?;
            let m = gpu.module(super::MODULE, &super::module_source())?;
            let load = |what: &str| {
                let n = format!("mbmix_{}_{what}", packed.kind.prefix());
                m.load_function(&n)
                    .map_err(|e| driver_error(&format!("kernel `{n}`"), e))
            };
            let funcs = [
                load("observe")?,
                load("observe_vjp")?,
                load("reward")?,
                load("reward_vjp")?,
                load("terminated")?,
            ];
            let stream = gpu.stream();
            let ints = stream
                .clone_htod(&packed.ints)
                .map_err(|e| driver_error("upload the task", e))?;
            let doubles = stream
                .clone_htod(&packed.doubles)
                .map_err(|e| driver_error("upload the task", e))?;
            Ok(TaskLayer {
                gpu,
                funcs,
                packed,
                ints,
                doubles,
            })
        }

        /// The device.
        pub fn gpu(&self) -> &Arc<Gpu> {
            &self.gpu
        }

        fn check(&self, n_envs: usize, what: &[(&str, usize, usize)]) -> Result<i32> {
            for &(name, len, per_env) in what {
                check_batch(name, len, n_envs, per_env)?;
            }
            Ok(dims(n_envs, 1)?.0)
        }

        fn launch<'a>(
            &'a self,
            k: usize,
            n_envs: usize,
            ne: &'a i32,
            args: impl FnOnce(&mut cudarc::driver::LaunchArgs<'a>),
        ) -> Result<()> {
            let mut b = self.gpu.stream().launch_builder(&self.funcs[k]);
            b.arg(ne).arg(&self.ints).arg(&self.doubles);
            args(&mut b);
            // SAFETY: the task arrays come from `PackedTaskLayer`'s constructors and every caller
            // checked its buffers' lengths against what the kernel indexes.
            unsafe { b.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch a task-layer kernel", e))
        }

        /// Observations of `states` `[n, S]` into `obs` `[n, O]`.
        pub fn observe(
            &self,
            n_envs: usize,
            states: &CudaSlice<f32>,
            obs: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let p = &self.packed;
            let ne = self.check(
                n_envs,
                &[
                    ("states", states.len(), p.state_dim),
                    ("observations", obs.len(), p.obs_dim),
                ],
            )?;
            self.launch(0, n_envs, &ne, |b| {
                b.arg(states).arg(obs);
            })
        }

        /// Adds the observation's VJP of `adj_obs` into `adj_states`.
        pub fn observe_vjp(
            &self,
            n_envs: usize,
            states: &CudaSlice<f32>,
            adj_obs: &CudaSlice<f32>,
            adj_states: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let p = &self.packed;
            let ne = self.check(
                n_envs,
                &[
                    ("states", states.len(), p.state_dim),
                    ("observation adjoint", adj_obs.len(), p.obs_dim),
                    ("state adjoint", adj_states.len(), p.state_dim),
                ],
            )?;
            self.launch(1, n_envs, &ne, |b| {
                b.arg(states).arg(adj_obs).arg(adj_states);
            })
        }

        /// Rewards of `(next_states, actions)` into `rewards` `[n]`.
        pub fn reward(
            &self,
            n_envs: usize,
            next_states: &CudaSlice<f32>,
            actions: &CudaSlice<f32>,
            rewards: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let p = &self.packed;
            let ne = self.check(
                n_envs,
                &[
                    ("next states", next_states.len(), p.state_dim),
                    ("actions", actions.len(), p.act_dim),
                    ("rewards", rewards.len(), 1),
                ],
            )?;
            self.launch(2, n_envs, &ne, |b| {
                b.arg(next_states).arg(actions).arg(rewards);
            })
        }

        /// Adds the reward's VJP of `adj_rewards` into `adj_states` and `adj_actions`.
        pub fn reward_vjp(
            &self,
            n_envs: usize,
            next_states: &CudaSlice<f32>,
            actions: &CudaSlice<f32>,
            adj_rewards: &CudaSlice<f32>,
            adj_states: &mut CudaSlice<f32>,
            adj_actions: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let p = &self.packed;
            let ne = self.check(
                n_envs,
                &[
                    ("next states", next_states.len(), p.state_dim),
                    ("actions", actions.len(), p.act_dim),
                    ("reward adjoint", adj_rewards.len(), 1),
                    ("state adjoint", adj_states.len(), p.state_dim),
                    ("action adjoint", adj_actions.len(), p.act_dim),
                ],
            )?;
            self.launch(3, n_envs, &ne, |b| {
                b.arg(next_states)
                    .arg(actions)
                    .arg(adj_rewards)
                    .arg(adj_states)
                    .arg(adj_actions);
            })
        }

        /// Termination flags (0 or 1) of `next_states` into `terminated` `[n]`.
        pub fn terminated(
            &self,
            n_envs: usize,
            next_states: &CudaSlice<f32>,
            terminated: &mut CudaSlice<i32>,
        ) -> Result<()> {
            let p = &self.packed;
            let ne = self.check(
                n_envs,
                &[
                    ("next states", next_states.len(), p.state_dim),
                    ("termination flags", terminated.len(), 1),
                ],
            )?;
            self.launch(4, n_envs, &ne, |b| {
                b.arg(next_states).arg(terminated);
            })
        }
    }

    /// `Articulation::step` for a batch on the device (`step.cu`): the packed model lives
    /// on the device, and so does a scratch block per env, grown on demand.
    pub struct RigidStep {
        gpu: Arc<Gpu>,
        func: CudaFunction,
        vjp: CudaFunction,
        packed: PackedArticulation,
        ints: CudaSlice<i32>,
        floats: CudaSlice<f32>,
        scratch: Option<CudaSlice<f32>>,
    }

    impl std::fmt::Debug for RigidStep {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RigidStep")
                .field("gpu", &self.gpu)
                .field("n_q", &self.packed.n_q)
                .field("n_qd", &self.packed.n_qd)
                .finish()
        }
    }

    impl RigidStep {
        /// Uploads `art` (with `params`) and loads the step kernel.
        pub fn new(art: &crate::Articulation, params: &crate::SimParams) -> Result<RigidStep> {
            let packed = PackedArticulation::new(art, params)?;
            let gpu = Gpu::get()?;
            let m = gpu.module(super::MODULE, &super::module_source())?;
            let load = |n: &str| {
                m.load_function(n)
                    .map_err(|e| driver_error(&format!("kernel `{n}`"), e))
            };
            let (func, vjp) = (load("mbmix_rigid_step")?, load("mbmix_rigid_step_vjp")?);
            let stream = gpu.stream();
            let ints = stream
                .clone_htod(&packed.ints)
                .map_err(|e| driver_error("upload the articulation", e))?;
            let floats = stream
                .clone_htod(&packed.floats)
                .map_err(|e| driver_error("upload the articulation", e))?;
            Ok(RigidStep {
                gpu,
                func,
                vjp,
                packed,
                ints,
                floats,
                scratch: None,
            })
        }

        /// The device.
        pub fn gpu(&self) -> &Arc<Gpu> {
            &self.gpu
        }

        /// One control step of `n_envs` envs on the device (layouts as
        /// [`super::host::step`]).
        #[allow(clippy::too_many_arguments)]
        pub fn step(
            &mut self,
            n_envs: usize,
            q: &CudaSlice<f32>,
            qd: &CudaSlice<f32>,
            act: &CudaSlice<f32>,
            q_out: &mut CudaSlice<f32>,
            qd_out: &mut CudaSlice<f32>,
        ) -> Result<()> {
            self.packed.check(n_envs, q.len(), qd.len(), act.len())?;
            self.packed
                .check(n_envs, q_out.len(), qd_out.len(), act.len())?;
            let (ne, _) = dims(n_envs, 1)?;
            let scratch = Self::scratch(
                &self.gpu,
                &mut self.scratch,
                n_envs * self.packed.scratch_len,
            )?;
            let mut b = self.gpu.stream().launch_builder(&self.func);
            b.arg(&ne)
                .arg(&self.ints)
                .arg(&self.floats)
                .arg(q)
                .arg(qd)
                .arg(act)
                .arg(q_out)
                .arg(qd_out)
                .arg(scratch);
            // SAFETY: the model arrays come from `PackedArticulation::new`, every buffer's
            // length was checked, and the scratch holds n_envs blocks.
            unsafe { b.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch mbmix_rigid_step", e))
        }

        /// The scratch buffer, grown to at least `need` floats.
        fn scratch<'a>(
            gpu: &Gpu,
            slot: &'a mut Option<CudaSlice<f32>>,
            need: usize,
        ) -> Result<&'a mut CudaSlice<f32>> {
            if slot.as_ref().is_none_or(|s| s.len() < need) {
                *slot = None;
            }
            match slot {
                Some(s) => Ok(s),
                None => {
                    let s = gpu
                        .stream()
                        .alloc_zeros::<f32>(need)
                        .map_err(|e| driver_error("allocate the step scratch", e))?;
                    Ok(slot.insert(s))
                }
            }
        }

        /// The VJP of [`Self::step`] on the device (layouts as [`super::host::step_vjp`]):
        /// accumulates into `adj_q`, `adj_qd`, `adj_act`.
        #[allow(clippy::too_many_arguments)]
        pub fn step_vjp(
            &mut self,
            n_envs: usize,
            q: &CudaSlice<f32>,
            qd: &CudaSlice<f32>,
            act: &CudaSlice<f32>,
            adj_q_out: &CudaSlice<f32>,
            adj_qd_out: &CudaSlice<f32>,
            adj_q: &mut CudaSlice<f32>,
            adj_qd: &mut CudaSlice<f32>,
            adj_act: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let p = &self.packed;
            p.check(n_envs, q.len(), qd.len(), act.len())?;
            p.check(n_envs, adj_q_out.len(), adj_qd_out.len(), adj_act.len())?;
            p.check(n_envs, adj_q.len(), adj_qd.len(), act.len())?;
            let (ne, _) = dims(n_envs, 1)?;
            let need = n_envs * p.vjp_scratch_len;
            let scratch = Self::scratch(&self.gpu, &mut self.scratch, need)?;
            let mut b = self.gpu.stream().launch_builder(&self.vjp);
            b.arg(&ne)
                .arg(&self.ints)
                .arg(&self.floats)
                .arg(q)
                .arg(qd)
                .arg(act)
                .arg(adj_q_out)
                .arg(adj_qd_out)
                .arg(adj_q)
                .arg(adj_qd)
                .arg(adj_act)
                .arg(scratch);
            // SAFETY: as in `step`, with the VJP's scratch size.
            unsafe { b.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch mbmix_rigid_step_vjp", e))
        }
    }

    /// [`super::Physics`] on the GPU. Each call uploads its inputs and downloads its
    /// outputs (the per-call path of the `Task` contract; a training window whose states
    /// stay on the device is [`crate::resident::ResidentRigid`]).
    pub struct CudaPhysics(std::sync::Mutex<RigidStep>);

    impl CudaPhysics {
        /// Opens the device and uploads `art`.
        pub fn new(art: &crate::Articulation, params: &crate::SimParams) -> Result<Self> {
            Ok(CudaPhysics(std::sync::Mutex::new(RigidStep::new(
                art, params,
            )?)))
        }
    }

    impl super::Physics for CudaPhysics {
        fn describe(&self) -> String {
            match self.0.lock() {
                Ok(k) => k.gpu().describe(),
                Err(_) => "cuda".into(),
            }
        }
        fn step(
            &self,
            n_envs: usize,
            q: &[f32],
            qd: &[f32],
            act: &[f32],
            q_out: &mut [f32],
            qd_out: &mut [f32],
        ) -> Result<()> {
            let mut k = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let stream = k.gpu().stream().clone();
            let up = |x: &[f32]| stream.clone_htod(x).map_err(|e| driver_error("upload", e));
            let (dq, dqd, dact) = (up(q)?, up(qd)?, up(act)?);
            let (mut oq, mut oqd) = (up(q_out)?, up(qd_out)?);
            k.step(n_envs, &dq, &dqd, &dact, &mut oq, &mut oqd)?;
            let down = |x: &CudaSlice<f32>, out: &mut [f32]| {
                stream
                    .memcpy_dtoh(x, out)
                    .map_err(|e| driver_error("download", e))
            };
            down(&oq, q_out)?;
            down(&oqd, qd_out)?;
            stream
                .synchronize()
                .map_err(|e| driver_error("synchronize", e))
        }
        fn step_vjp(
            &self,
            n_envs: usize,
            q: &[f32],
            qd: &[f32],
            act: &[f32],
            adj_q_out: &[f32],
            adj_qd_out: &[f32],
            adj_q: &mut [f32],
            adj_qd: &mut [f32],
            adj_act: &mut [f32],
        ) -> Result<()> {
            let mut k = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let stream = k.gpu().stream().clone();
            let up = |x: &[f32]| stream.clone_htod(x).map_err(|e| driver_error("upload", e));
            let (dq, dqd, dact) = (up(q)?, up(qd)?, up(act)?);
            let (duq, duqd) = (up(adj_q_out)?, up(adj_qd_out)?);
            let (mut aq, mut aqd, mut aa) = (up(adj_q)?, up(adj_qd)?, up(adj_act)?);
            k.step_vjp(
                n_envs, &dq, &dqd, &dact, &duq, &duqd, &mut aq, &mut aqd, &mut aa,
            )?;
            let down = |x: &CudaSlice<f32>, out: &mut [f32]| {
                stream
                    .memcpy_dtoh(x, out)
                    .map_err(|e| driver_error("download", e))
            };
            down(&aq, adj_q)?;
            down(&aqd, adj_qd)?;
            down(&aa, adj_act)?;
            stream
                .synchronize()
                .map_err(|e| driver_error("synchronize", e))
        }
    }

    /// The dense-solve kernels of `cholesky.cu`, loaded on the process's device.
    pub struct Dense {
        gpu: Arc<Gpu>,
        cholesky: CudaFunction,
        solve: CudaFunction,
        solve_vjp: CudaFunction,
    }

    impl std::fmt::Debug for Dense {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Dense").field("gpu", &self.gpu).finish()
        }
    }

    impl Dense {
        /// Opens the device (after checking that the CUDA libraries load) and compiles
        /// `cholesky.cu` with NVRTC, once per process.
        pub fn new() -> Result<Dense> {
            let gpu = Gpu::get()?;
            let m = gpu.module(super::MODULE, &super::module_source())?;
            let f = |n: &str| {
                m.load_function(n)
                    .map_err(|e| driver_error(&format!("kernel `{n}`"), e))
            };
            Ok(Dense {
                cholesky: f("mbmix_cholesky")?,
                solve: f("mbmix_cholesky_solve")?,
                solve_vjp: f("mbmix_solve_vjp")?,
                gpu,
            })
        }

        /// The device.
        pub fn gpu(&self) -> &Arc<Gpu> {
            &self.gpu
        }

        /// Batched `A = L Lᵀ` on the device.
        pub fn cholesky(
            &self,
            n_envs: usize,
            n: usize,
            a: &CudaSlice<f32>,
            l: &mut CudaSlice<f32>,
        ) -> Result<()> {
            check_batch("cholesky a", a.len(), n_envs, n * n)?;
            check_batch("cholesky l", l.len(), n_envs, n * n)?;
            let (ne, nn) = dims(n_envs, n)?;
            let mut b = self.gpu.stream().launch_builder(&self.cholesky);
            b.arg(&ne).arg(&nn).arg(a).arg(l);
            // SAFETY: argument types and lengths match the kernel's signature and indexing.
            unsafe { b.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch mbmix_cholesky", e))
        }

        /// Batched solve of `L Lᵀ x = b` in place on the device.
        pub fn cholesky_solve(
            &self,
            n_envs: usize,
            n: usize,
            l: &CudaSlice<f32>,
            b: &mut CudaSlice<f32>,
        ) -> Result<()> {
            check_batch("cholesky_solve l", l.len(), n_envs, n * n)?;
            check_batch("cholesky_solve b", b.len(), n_envs, n)?;
            let (ne, nn) = dims(n_envs, n)?;
            let mut lb = self.gpu.stream().launch_builder(&self.solve);
            lb.arg(&ne).arg(&nn).arg(l).arg(b);
            // SAFETY: as above.
            unsafe { lb.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch mbmix_cholesky_solve", e))
        }

        /// Batched adjoint of the solve on the device (see [`super::host::solve_vjp`]).
        #[allow(clippy::too_many_arguments)]
        pub fn solve_vjp(
            &self,
            n_envs: usize,
            n: usize,
            l: &CudaSlice<f32>,
            qdd: &CudaSlice<f32>,
            adj_qdd: &mut CudaSlice<f32>,
            adj_tau: &mut CudaSlice<f32>,
            adj_h: &mut CudaSlice<f32>,
        ) -> Result<()> {
            check_batch("solve_vjp l", l.len(), n_envs, n * n)?;
            check_batch("solve_vjp qdd", qdd.len(), n_envs, n)?;
            check_batch("solve_vjp adj_qdd", adj_qdd.len(), n_envs, n)?;
            check_batch("solve_vjp adj_tau", adj_tau.len(), n_envs, n)?;
            check_batch("solve_vjp adj_h", adj_h.len(), n_envs, n * n)?;
            let (ne, nn) = dims(n_envs, n)?;
            let mut b = self.gpu.stream().launch_builder(&self.solve_vjp);
            b.arg(&ne)
                .arg(&nn)
                .arg(l)
                .arg(qdd)
                .arg(adj_qdd)
                .arg(adj_tau)
                .arg(adj_h);
            // SAFETY: as above.
            unsafe { b.launch(config(n_envs)) }
                .map(|_| ())
                .map_err(|e| driver_error("launch mbmix_solve_vjp", e))
        }

        /// Uploads a host slice.
        pub fn upload(&self, x: &[f32]) -> Result<CudaSlice<f32>> {
            self.gpu
                .stream()
                .clone_htod(x)
                .map_err(|e| driver_error("upload", e))
        }

        /// Downloads a device slice (synchronising the stream).
        pub fn download(&self, x: &CudaSlice<f32>) -> Result<Vec<f32>> {
            self.gpu
                .stream()
                .clone_dtoh(x)
                .map_err(|e| driver_error("download", e))
        }
    }
}

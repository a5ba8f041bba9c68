//! The mass-spring cloth: adjoints of every substep stage, of full substeps, of a
//! 20-substep window with actions and of a shortened pick-and-place, checked against
//! fourth-order central differences in f64 (relative error ≤ 1e-6) and by the VJP/JVP
//! dot-product test with dual numbers (≤ 1e-9), over 256 random states per property on
//! a 4×4 lattice with a partial mask: ground contacts (sliding, DaXBench's regularised
//! slow regime, and sticking through the static branch), clipped positions and
//! velocities, grasped particles and a clipped gripper. Cases whose finite-difference
//! stencil would cross a kink (the stages' kink records differ) are rejected.
//! Then the physics: springs at rest, momentum, doubled-gravity free fall, a resting
//! cloth, the pick-and-place macro; checkpointing; gradient treatments; parameters.
#![allow(clippy::needless_range_loop)]

use diff_core::gradcheck::{cases, direction, vec_in, Stage, StageTol};
use diff_core::{Error, Real};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sim_deformable::checkpoint::{forward, vjp_checkpointed, Substepper};
use sim_deformable::cloth::*;

const TOL: StageTol = StageTol {
    h: 1e-4,
    fd: 1e-6,
    dot: 1e-9,
};
/// DaXBench's slow-contact regime regularises the tangential speed at `√1e-8 = 1e-4`, so
/// resolving it by finite differences takes a step well below that scale.
const TOL_SLOW: StageTol = StageTol {
    h: 1e-7,
    fd: 1e-6,
    dot: 1e-9,
};
/// Over many substeps a contact's tangential velocity reacts to positions through the
/// stiff springs (∂v_t/∂x ~ k/L₀·dt per substep, ~100 after 20 substeps), so a step of
/// 1e-4 in x probes the friction direction `v_t/|v_t|` on its own scale: measured on a
/// failing 20-substep case, the finite-difference error falls as h⁴ (1.0, 2.4e-4,
/// 2.3e-8 at h = 1e-3, 1e-4, 1e-5) onto the VJP.
const TOL_WINDOW: StageTol = StageTol {
    h: 1e-5,
    fd: 1e-6,
    dot: 1e-9,
};

// ---------------------------------------------------------------- fixtures

/// 4×4 lattice without the sites (0, 3), (3, 0), (3, 3): 13 particles, 8 of them on the
/// lattice border (so DaXBench's clamped duplicate springs are exercised).
fn small_params(static_speed: f64) -> ClothParams {
    let n = 4;
    let mut mask = vec![true; n * n];
    for (a, b) in [(0, 3), (3, 0), (3, 3)] {
        mask[a * n + b] = false;
    }
    ClothParams {
        static_speed,
        ..ClothParams::daxbench(n, mask, 900.0, 2e-3, 0.5)
    }
}

fn small_cloth(static_speed: f64) -> Cloth {
    Cloth::new(small_params(static_speed)).unwrap()
}

/// A soft, high-friction small cloth whose slow contacts (tangential speed ≤ 0.05)
/// stick: spring forces (~1) are comparable to μ·|F_y| (~1.5), so both static branches
/// (force zeroed, force reduced) occur, and a finite-difference step in x moves the
/// forces far less than their distance to the switch.
fn sticky_cloth() -> Cloth {
    Cloth::new(ClothParams {
        stiffness: 5.0,
        mu: 3.0,
        ..small_params(0.05)
    })
    .unwrap()
}

const NP: usize = 13;

fn pack_v3(a: &[V3<f64>]) -> Vec<f64> {
    a.iter().flatten().copied().collect()
}

fn unpack_v3<T: Real>(z: &[T]) -> Vec<V3<T>> {
    z.chunks(3).map(|c| [c[0], c[1], c[2]]).collect()
}

fn pack_state(s: &ClothState<f64>) -> Vec<f64> {
    let mut z = pack_v3(&s.x);
    z.extend(pack_v3(&s.v));
    z.extend(s.gripper);
    z
}

/// The state in `z[..6n+3]`.
fn unpack_state<T: Real>(z: &[T], n: usize) -> ClothState<T> {
    ClothState {
        x: unpack_v3(&z[..3 * n]),
        v: unpack_v3(&z[3 * n..6 * n]),
        gripper: [z[6 * n], z[6 * n + 1], z[6 * n + 2]],
    }
}

fn state_out<T: Real>(s: &ClothState<T>) -> Vec<T> {
    let mut o: Vec<T> = s.x.iter().flatten().copied().collect();
    o.extend(s.v.iter().flatten().copied());
    o.extend(s.gripper);
    o
}

fn state_adj(u: &[f64], n: usize) -> StateAdj {
    StateAdj {
        x: unpack_v3(&u[..3 * n]),
        v: unpack_v3(&u[3 * n..6 * n]),
        gripper: [u[6 * n], u[6 * n + 1], u[6 * n + 2]],
    }
}

/// A random substep input: the state and the gripper command.
#[derive(Clone, Debug)]
struct Case {
    s: ClothState<f64>,
    cmd: GripperCmd<f64>,
}

impl Case {
    /// `[x, v, gripper, d]`.
    fn input(&self) -> Vec<f64> {
        let mut z = pack_state(&self.s);
        z.extend(self.cmd.d);
        z
    }
}

/// Random states of the small cloth around its lattice (shifted into the box):
/// positions perturbed by up to ±0.04 in xz; each particle either touching the ground
/// (`y ∈ [−0.004, −0.0005]`, below `small_num`, so its position is clipped) or free
/// (`y ∈ [0.0005, 0.2]`); velocities in `[−2.5, 2.5]³` (some clipped at ±2), with
/// the tangential velocity of `slow` contact particles scaled by `slow_scale`; the
/// gripper either centred within 0.005 of a particle (which it then holds when
/// `suction = 0`) or far away, with a per-substep displacement up to ±0.01 (the gripper
/// clip fires when it holds a contact particle and moves down).
fn case(slow_scale: f64) -> impl Strategy<Value = Case> {
    (
        vec_in(-1.0, 1.0, 3 * NP),
        proptest::collection::vec(any::<bool>(), NP),
        proptest::collection::vec(any::<bool>(), NP),
        vec_in(0.0, 1.0, NP),
        vec_in(-2.5, 2.5, 3 * NP),
        (
            0..NP,
            vec_in(-0.005, 0.005, 3),
            any::<bool>(),
            any::<bool>(),
        ),
        vec_in(-0.01, 0.01, 3),
    )
        .prop_map(
            move |(noise, contact, slow, y, v, (held, off, near, grasp), d)| {
                let cloth = small_cloth(0.0);
                let mut x = Vec::with_capacity(NP);
                let mut vel = Vec::with_capacity(NP);
                for (p, &[a, b]) in cloth.sites().iter().enumerate() {
                    let yi = if contact[p] {
                        -0.0005 - 0.0035 * y[p]
                    } else {
                        0.0005 + 0.2 * y[p]
                    };
                    x.push([
                        0.12 + 0.25 * a as f64 + 0.04 * noise[3 * p],
                        yi,
                        0.12 + 0.25 * (3 - b) as f64 + 0.04 * noise[3 * p + 2],
                    ]);
                    let sc = if contact[p] && slow[p] {
                        slow_scale
                    } else {
                        1.0
                    };
                    vel.push([v[3 * p] * sc, v[3 * p + 1], v[3 * p + 2] * sc]);
                }
                let gripper = if near {
                    std::array::from_fn(|c| x[held][c] + off[c])
                } else {
                    [0.5, 0.6, 0.5]
                };
                Case {
                    s: ClothState { x, v: vel, gripper },
                    cmd: GripperCmd {
                        d: [d[0], d[1], d[2]],
                        suction: if grasp { 0.0 } else { 1.0 },
                    },
                }
            },
        )
}

/// The small cloth lying on the ground (`y ∈ [−0.002, −0.0005]`), its lattice perturbed
/// by up to ±0.001, sliding with a common tangential velocity of 0.3–0.8 in a random
/// direction (±0.02 per particle) and `v_y ∈ [−0.5, 0]`; gripper at its start.
fn sliding_case() -> impl Strategy<Value = ClothState<f64>> {
    (
        vec_in(-1.0, 1.0, 3 * NP),
        vec_in(-1.0, 1.0, 3 * NP),
        0.3..0.8f64,
        0.0..std::f64::consts::TAU,
    )
        .prop_map(|(noise, vn, speed, angle)| {
            let cloth = small_cloth(0.0);
            let (mut x, mut v) = (Vec::new(), Vec::new());
            for (p, &[a, b]) in cloth.sites().iter().enumerate() {
                x.push([
                    0.12 + 0.25 * a as f64 + 0.001 * noise[3 * p],
                    -0.00125 + 0.00075 * noise[3 * p + 1],
                    0.12 + 0.25 * (3 - b) as f64 + 0.001 * noise[3 * p + 2],
                ]);
                v.push([
                    speed * angle.cos() + 0.02 * vn[3 * p],
                    -0.25 + 0.25 * vn[3 * p + 1],
                    speed * angle.sin() + 0.02 * vn[3 * p + 2],
                ]);
            }
            ClothState {
                x,
                v,
                gripper: GRIPPER_START,
            }
        })
}

/// Whether every contact particle of `c` slides faster than `min` tangentially.
fn contacts_slide(cloth: &Cloth, c: &Case, min: f64) -> bool {
    c.s.x
        .iter()
        .zip(&c.s.v)
        .all(|(x, v)| x[1] > cloth.params().small_num || v[0].hypot(v[2]) > min)
}

// ---------------------------------------------------------------- the check

/// A stage that also reports the discrete decisions it takes at an input.
trait Kinked: Stage {
    fn kinks(&self, x: &[f64]) -> Vec<u8>;
}

/// Rejects the case when any point of the finite-difference stencil (`x ± h_i`,
/// `x ± 2h_i` along every coordinate) takes another branch than `x`; otherwise runs
/// `diff_core::gradcheck::check_stage`.
fn check<S: Kinked>(
    s: &S,
    x: &[f64],
    u: &[f64],
    v: &[f64],
    tol: StageTol,
    what: &str,
) -> Result<(), TestCaseError> {
    let k0 = s.kinks(x);
    let mut y = x.to_vec();
    for i in 0..x.len() {
        let h = tol.h * x[i].abs().max(1.0);
        for m in [-2.0, -1.0, 1.0, 2.0] {
            y[i] = x[i] + m * h;
            if s.kinks(&y) != k0 {
                return Err(TestCaseError::reject("stencil crosses a kink"));
            }
        }
        y[i] = x[i];
    }
    diff_core::gradcheck::check_stage(s, x, u, v, tol, what);
    Ok(())
}

// ---------------------------------------------------------------- stages

/// Springs: x → F.
struct Springs(Cloth);
impl Stage for Springs {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let xs = unpack_v3(x);
        let mut f = vec![[T::zero(); 3]; xs.len()];
        self.0.spring_forces(&xs, &mut f, None);
        f.into_iter().flatten().collect()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut g = vec![[0.0; 3]; x.len() / 3];
        self.0
            .spring_forces_vjp(&unpack_v3(x), &unpack_v3(u), &mut g);
        pack_v3(&g)
    }
}
impl Kinked for Springs {
    fn kinks(&self, x: &[f64]) -> Vec<u8> {
        let mut k = Vec::new();
        let xs = unpack_v3(x);
        self.0
            .spring_forces(&xs, &mut vec![[0.0; 3]; xs.len()], Some(&mut k));
        k
    }
}

/// Friction: (v, F) → F', at fixed positions (which decide the contacts).
struct Friction(Cloth, Vec<V3<f64>>);
impl Stage for Friction {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let n = self.1.len();
        let x: Vec<V3<T>> = self.1.iter().map(|a| a.map(T::cst)).collect();
        let v = unpack_v3(&z[..3 * n]);
        let mut f = unpack_v3(&z[3 * n..]);
        self.0.friction(&x, &v, &mut f, None);
        f.into_iter().flatten().collect()
    }
    fn vjp(&self, z: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.1.len();
        let v = unpack_v3(&z[..3 * n]);
        let f = unpack_v3(&z[3 * n..]);
        let mut adj_f = unpack_v3(u);
        let mut adj_v = vec![[0.0; 3]; n];
        self.0.friction_vjp(&self.1, &v, &f, &mut adj_f, &mut adj_v);
        let mut g = pack_v3(&adj_v);
        g.extend(pack_v3(&adj_f));
        g
    }
}
impl Kinked for Friction {
    fn kinks(&self, z: &[f64]) -> Vec<u8> {
        let n = self.1.len();
        let mut k = Vec::new();
        let mut f = unpack_v3(&z[3 * n..]);
        self.0
            .friction(&self.1, &unpack_v3(&z[..3 * n]), &mut f, Some(&mut k));
        k
    }
}

/// Integration: (v, F) → v'.
struct Integrate(Cloth);
impl Stage for Integrate {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let n = z.len() / 6;
        let mut v = unpack_v3(&z[..3 * n]);
        self.0.integrate(&mut v, &unpack_v3(&z[3 * n..]));
        v.into_iter().flatten().collect()
    }
    fn vjp(&self, z: &[f64], u: &[f64]) -> Vec<f64> {
        let n = z.len() / 6;
        let mut adj_v = unpack_v3(u);
        let mut adj_f = vec![[0.0; 3]; n];
        self.0.integrate_vjp(&mut adj_v, &mut adj_f);
        let mut g = pack_v3(&adj_v);
        g.extend(pack_v3(&adj_f));
        g
    }
}
impl Kinked for Integrate {
    fn kinks(&self, _: &[f64]) -> Vec<u8> {
        Vec::new()
    }
}

/// Gripper: (x, v, p, d) → (x', v', p') with a fixed suction.
struct Gripper(Cloth, f64);
impl Gripper {
    fn split<T: Real>(&self, z: &[T]) -> (ClothState<T>, GripperCmd<T>) {
        let n = (z.len() - 6) / 6;
        let s = unpack_state(z, n);
        let d = [z[6 * n + 3], z[6 * n + 4], z[6 * n + 5]];
        (s, GripperCmd { d, suction: self.1 })
    }
}
impl Stage for Gripper {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let (mut s, cmd) = self.split(z);
        self.0
            .gripper(&mut s.x, &mut s.v, &mut s.gripper, &cmd, None);
        state_out(&s)
    }
    fn vjp(&self, z: &[f64], u: &[f64]) -> Vec<f64> {
        let (s, cmd) = self.split(z);
        let mut a = state_adj(u, s.x.len());
        let mut adj_d = [0.0; 3];
        self.0.gripper_vjp(
            &s.x,
            &s.gripper,
            &cmd,
            &a.x,
            &mut a.v,
            &mut a.gripper,
            &mut adj_d,
        );
        let mut g = pack_v3(&a.x);
        g.extend(pack_v3(&a.v));
        g.extend(a.gripper);
        g.extend(adj_d);
        g
    }
}
impl Kinked for Gripper {
    fn kinks(&self, z: &[f64]) -> Vec<u8> {
        let (mut s, cmd) = self.split(z);
        let mut k = Vec::new();
        self.0
            .gripper(&mut s.x, &mut s.v, &mut s.gripper, &cmd, Some(&mut k));
        k
    }
}

/// Clip and advance: (x, v) → (x', v').
struct ClipAdvance(Cloth);
impl Stage for ClipAdvance {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let n = z.len() / 6;
        let mut x = unpack_v3(&z[..3 * n]);
        let mut v = unpack_v3(&z[3 * n..]);
        self.0.clip_advance(&mut x, &mut v, None);
        x.into_iter().chain(v).flatten().collect()
    }
    fn vjp(&self, z: &[f64], u: &[f64]) -> Vec<f64> {
        let n = z.len() / 6;
        let mut ax = unpack_v3(&u[..3 * n]);
        let mut av = unpack_v3(&u[3 * n..]);
        self.0.clip_advance_vjp(
            &unpack_v3(&z[..3 * n]),
            &unpack_v3(&z[3 * n..]),
            &mut ax,
            &mut av,
        );
        ax.into_iter().chain(av).flatten().collect()
    }
}
impl Kinked for ClipAdvance {
    fn kinks(&self, z: &[f64]) -> Vec<u8> {
        let n = z.len() / 6;
        let mut k = Vec::new();
        self.0.clip_advance(
            &mut unpack_v3(&z[..3 * n]),
            &mut unpack_v3(&z[3 * n..]),
            Some(&mut k),
        );
        k
    }
}

/// A full substep: (x, v, p, d) → (x', v', p'), with a fixed suction.
struct FullSubstep(Cloth, f64);
impl Stage for FullSubstep {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let g = Gripper(self.0.clone(), self.1);
        let (mut s, cmd) = g.split(z);
        self.0.substep(&mut s, &cmd, None);
        state_out(&s)
    }
    fn vjp(&self, z: &[f64], u: &[f64]) -> Vec<f64> {
        let g = Gripper(self.0.clone(), self.1);
        let (s, cmd) = g.split(z);
        let mut a = state_adj(u, s.x.len());
        let mut adj_d = [0.0; 3];
        self.0
            .substep_vjp(&s, &cmd, &mut a, &mut adj_d, GradTreatment::Raw);
        let mut out = pack_v3(&a.x);
        out.extend(pack_v3(&a.v));
        out.extend(a.gripper);
        out.extend(adj_d);
        out
    }
}
impl Kinked for FullSubstep {
    fn kinks(&self, z: &[f64]) -> Vec<u8> {
        let g = Gripper(self.0.clone(), self.1);
        let (s, cmd) = g.split(z);
        self.0.substep_kinks(&s, &cmd)
    }
}

/// Sub-actions with fixed suctions run through [`ClothSim`]: (x, v, p, a₁…a_m) → final
/// state, the VJP by the checkpointed reverse sweep (states every 3 substeps).
struct Window(Cloth, Vec<f64>);
impl Window {
    fn split<T: Real>(&self, z: &[T]) -> (ClothState<T>, Vec<SubAction<T>>) {
        let n = self.0.n_particles();
        let s = unpack_state(z, n);
        let subs = self
            .1
            .iter()
            .enumerate()
            .map(|(j, &suction)| SubAction {
                a: std::array::from_fn(|c| z[6 * n + 3 + 3 * j + c]),
                suction,
            })
            .collect();
        (s, subs)
    }
}
impl Stage for Window {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let (mut s, subs) = self.split(z);
        run_sub_actions(&self.0, &mut s, &subs);
        state_out(&s)
    }
    fn vjp(&self, z: &[f64], u: &[f64]) -> Vec<f64> {
        let (s, subs) = self.split(z);
        let sim = ClothSim::new(&self.0, subs, GradTreatment::Raw);
        let mut adj = sim.adj(state_adj(u, s.x.len()));
        vjp_checkpointed(&sim, &s, sim.n_substeps(), 3, &mut adj);
        let mut g = pack_v3(&adj.state.x);
        g.extend(pack_v3(&adj.state.v));
        g.extend(adj.state.gripper);
        g.extend(adj.sub_actions.iter().flatten());
        g
    }
}
impl Window {
    /// The slowest tangential speed of a ground contact at the start of any substep:
    /// the friction's scale, which finite differences must resolve.
    fn slowest_contact(&self, z: &[f64]) -> f64 {
        let (mut s, subs) = self.split(z);
        let p = self.0.params();
        let mut slowest = f64::INFINITY;
        for sa in &subs {
            let cmd = sub_action_cmd(p, sa);
            for _ in 0..p.substeps {
                for (x, v) in s.x.iter().zip(&s.v) {
                    if x[1] <= p.small_num {
                        slowest = slowest.min(v[0].hypot(v[2]));
                    }
                }
                self.0.substep(&mut s, &cmd, None);
            }
        }
        slowest
    }
}
impl Window {
    /// The kink records of all substeps (and of the sub-actions' clips); with
    /// `gripper_clip` false, those of the gripper clip are left out.
    fn kinks_of(&self, z: &[f64], gripper_clip: bool) -> Vec<u8> {
        let (mut s, subs) = self.split(z);
        let p = self.0.params();
        let n = self.0.n_particles();
        let mut k = Vec::new();
        for sa in &subs {
            k.extend(sa.a.map(|a| (a.abs() > p.action_clip) as u8));
            let cmd = sub_action_cmd(p, sa);
            for _ in 0..p.substeps {
                let mut ks = self.0.substep_kinks(&s, &cmd);
                if !gripper_clip {
                    // substep record: friction (n), gripper (n, then 3 clips), ...
                    ks.drain(2 * n..2 * n + 3);
                }
                k.extend(ks);
                self.0.substep(&mut s, &cmd, None);
            }
        }
        k
    }
}
impl Kinked for Window {
    fn kinks(&self, z: &[f64]) -> Vec<u8> {
        self.kinks_of(z, true)
    }
}

/// The per-substep command of a sub-action: a → clip(a, ±2)/substeps.
struct Cmd(ClothParams);
impl Stage for Cmd {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let sa = SubAction {
            a: [z[0], z[1], z[2]],
            suction: 0.0,
        };
        sub_action_cmd(&self.0, &sa).d.to_vec()
    }
    fn vjp(&self, z: &[f64], u: &[f64]) -> Vec<f64> {
        let sa = SubAction {
            a: [z[0], z[1], z[2]],
            suction: 0.0,
        };
        sub_action_cmd_vjp(&self.0, &sa, &[u[0], u[1], u[2]]).to_vec()
    }
}
impl Kinked for Cmd {
    fn kinks(&self, z: &[f64]) -> Vec<u8> {
        z.iter()
            .map(|a| (a.abs() > self.0.action_clip) as u8)
            .collect()
    }
}

/// The pick-and-place macro: (action, gripper) → the 40 sub-action displacements.
struct Macro;
impl Stage for Macro {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let act = std::array::from_fn(|c| z[c]);
        pick_place_sub_actions(&act, &[z[6], z[7], z[8]])
            .iter()
            .flat_map(|s| s.a)
            .collect()
    }
    fn vjp(&self, _: &[f64], u: &[f64]) -> Vec<f64> {
        let (a, g) = pick_place_sub_actions_vjp(&unpack_v3(u));
        a.into_iter().chain(g).collect()
    }
}
impl Kinked for Macro {
    fn kinks(&self, _: &[f64]) -> Vec<u8> {
        Vec::new()
    }
}

/// A whole pick-and-place with 2 substeps per sub-action (80 substeps): (x, v, p,
/// action) → final state, the VJP by [`pick_place_vjp`].
struct PickPlace(Cloth);
impl Stage for PickPlace {
    fn forward<T: Real>(&self, z: &[T]) -> Vec<T> {
        let n = self.0.n_particles();
        let mut s = unpack_state(z, n);
        let act = std::array::from_fn(|c| z[6 * n + 3 + c]);
        pick_place(&self.0, &mut s, &act);
        state_out(&s)
    }
    fn vjp(&self, z: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.n_particles();
        let s = unpack_state(z, n);
        let act = std::array::from_fn(|c| z[6 * n + 3 + c]);
        let mut adj = state_adj(u, n);
        let (ga, _) = pick_place_vjp(&self.0, &s, &act, 7, GradTreatment::Raw, &mut adj);
        let mut g = pack_v3(&adj.x);
        g.extend(pack_v3(&adj.v));
        g.extend(adj.gripper);
        g.extend(ga);
        g
    }
}
impl PickPlace {
    /// The same run as a [`Window`] over the macro's sub-actions, and its input.
    fn window(&self, z: &[f64]) -> (Window, Vec<f64>) {
        let n = self.0.n_particles();
        let act: [f64; 6] = std::array::from_fn(|c| z[6 * n + 3 + c]);
        let s = unpack_state(z, n);
        let subs = pick_place_sub_actions(&act, &s.gripper);
        let w = Window(self.0.clone(), subs.iter().map(|s| s.suction).collect());
        let mut zz = pack_state(&s);
        zz.extend(subs.iter().flat_map(|s| s.a));
        (w, zz)
    }
}
impl Kinked for PickPlace {
    /// Without the gripper clip: the macro lands the gripper on `y = 0`, the clip's
    /// bound, up to rounding, so that clip flips with the last bit of the start height;
    /// both sides give the same derivative (the landing height does not depend on the
    /// start: `1 − Σ 1/(3·substeps)` unclipped, 0 clipped), so it is no kink of the macro.
    fn kinks(&self, z: &[f64]) -> Vec<u8> {
        let (w, zz) = self.window(z);
        w.kinks_of(&zz, false)
    }
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn springs_vjp(c in case(1.0), u in direction(8), v in direction(3 * NP)) {
        check(&Springs(small_cloth(0.0)), &pack_v3(&c.s.x), &u, &v, TOL, "springs")?;
    }

    /// Springs shorter than 1e-6, where DaXBench clamps `‖r‖²` at 1e-12: a 2×2 cloth
    /// with one particle within 4e-7 of another (a step of 1e-9 keeps the stencil inside).
    #[test]
    fn springs_vjp_clamped_length(
        off in vec_in(-4e-7, 4e-7, 3), noise in vec_in(-1.0, 1.0, 12), u in direction(8),
        v in direction(12),
    ) {
        let cloth = Cloth::new(ClothParams::daxbench(2, vec![true; 4], 900.0, 2e-3, 0.5)).unwrap();
        let mut x = pack_v3(&cloth.initial_state::<f64>().x);
        for (xi, n) in x.iter_mut().zip(&noise) {
            *xi += 0.01 * n;
        }
        for c in 0..3 {
            x[3 + c] = x[c] + off[c];
        }
        let st = Springs(cloth);
        prop_assert!(st.kinks(&x).contains(&1));
        let tol = StageTol { h: 1e-9, ..TOL };
        check(&st, &x, &u, &v, tol, "springs, clamped length")?;
    }

    #[test]
    fn friction_vjp_sliding(
        c in case(1.0), f in vec_in(-3.0, 3.0, 3 * NP), u in direction(8),
        v in direction(6 * NP),
    ) {
        let cloth = small_cloth(1e-8);
        prop_assume!(contacts_slide(&cloth, &c, 0.05));
        let mut z = pack_v3(&c.s.v);
        z.extend(&f);
        check(&Friction(cloth, c.s.x.clone()), &z, &u, &v, TOL, "friction, sliding")?;
    }

    #[test]
    fn friction_vjp_sticking(
        c in case(0.01), f in vec_in(-3.0, 3.0, 3 * NP), u in direction(8),
        v in direction(6 * NP),
    ) {
        // contacts slower than static_speed take the static branch, whose force is
        // zeroed (μF > sF) or scaled (μF ≤ sF); faster ones slide
        let mut z = pack_v3(&c.s.v);
        z.extend(&f);
        check(&Friction(small_cloth(0.05), c.s.x.clone()), &z, &u, &v, TOL, "friction, sticking")?;
    }

    #[test]
    fn friction_vjp_regularised_slow(
        c in case(1e-4), f in vec_in(-3.0, 3.0, 3 * NP), u in direction(8),
        v in direction(6 * NP),
    ) {
        // DaXBench's own slow contacts (|v_t| ≲ 1e-4): the dynamic branch, where the
        // regularised speed √(v_t² + 1e-8) makes the friction viscous
        let mut z = pack_v3(&c.s.v);
        z.extend(&f);
        check(&Friction(small_cloth(1e-8), c.s.x.clone()), &z, &u, &v, TOL_SLOW, "friction, slow")?;
    }

    #[test]
    fn integrate_vjp(z in vec_in(-3.0, 3.0, 6 * NP), u in direction(8), v in direction(6 * NP)) {
        check(&Integrate(small_cloth(0.0)), &z, &u, &v, TOL, "integrate")?;
    }

    #[test]
    fn gripper_vjp(c in case(1.0), u in direction(8), v in direction(6 * NP + 6)) {
        let st = Gripper(small_cloth(0.0), c.cmd.suction);
        check(&st, &c.input(), &u, &v, TOL, "gripper")?;
    }

    #[test]
    fn clip_advance_vjp(c in case(1.0), u in direction(8), v in direction(6 * NP)) {
        let mut z = pack_v3(&c.s.x);
        z.extend(pack_v3(&c.s.v));
        check(&ClipAdvance(small_cloth(0.0)), &z, &u, &v, TOL, "clip and advance")?;
    }

    #[test]
    fn substep_vjp_sliding(c in case(1.0), u in direction(8), v in direction(6 * NP + 6)) {
        let cloth = small_cloth(1e-8);
        prop_assume!(contacts_slide(&cloth, &c, 0.05));
        check(&FullSubstep(cloth, c.cmd.suction), &c.input(), &u, &v, TOL, "substep")?;
    }

    #[test]
    fn substep_vjp_sticking(c in case(0.01), u in direction(8), v in direction(6 * NP + 6)) {
        let st = FullSubstep(sticky_cloth(), c.cmd.suction);
        check(&st, &c.input(), &u, &v, TOL, "substep, sticking")?;
    }

    #[test]
    fn substep_vjp_regularised_slow(c in case(1e-4), u in direction(8), v in direction(6 * NP + 6)) {
        let st = FullSubstep(small_cloth(1e-8), c.cmd.suction);
        check(&st, &c.input(), &u, &v, TOL_SLOW, "substep, slow")?;
    }

    #[test]
    fn sub_action_cmd_vjp_checks(a in vec_in(-3.0, 3.0, 3), u in direction(3), v in direction(3)) {
        let st = Cmd(small_params(0.0));
        if a.iter().all(|x| x.abs() > st.0.action_clip) {
            // every component clipped: the map is constant and its adjoint exactly zero;
            // a finite difference would only measure the stencil's rounding
            // (−c + 8c − 8c + c ≠ 0 in floating point, ~1e-14 here)
            prop_assert_eq!(st.vjp(&a, &u), vec![0.0; 3]);
            return Ok(());
        }
        check(&st, &a, &u, &v, TOL, "sub-action command")?;
    }

    #[test]
    fn pick_place_macro_vjp(z in vec_in(0.0, 1.0, 9), u in direction(8), v in direction(9)) {
        check(&Macro, &z, &u, &v, TOL, "pick-and-place macro")?;
    }

    /// 20 substeps: 4 sub-actions of 5 substeps (grasp, open, grasp, open), sliding
    /// contacts, with the gripper on a particle.
    #[test]
    fn window_20_substeps_vjp(
        c in case(1.0), a in vec_in(-0.05, 0.05, 12), u in direction(8),
        v in direction(6 * NP + 3 + 12),
    ) {
        let cloth = Cloth::new(ClothParams { substeps: 5, ..small_params(1e-8) }).unwrap();
        let w = Window(cloth, vec![0.0, 1.0, 0.0, 1.0]);
        let mut z = pack_state(&c.s);
        z.extend(&a);
        prop_assume!(w.slowest_contact(&z) > 0.05);
        check(&w, &z, &u, &v, TOL_WINDOW, "20-substep window")?;
    }
}

proptest! {
    // 80 substeps per case, each stencil point re-run for the kink record
    #![proptest_config(cases(64))]

    /// A whole pick-and-place (2 substeps per sub-action, 80 substeps) of a cloth
    /// sliding on the ground: the gripper goes down next to a particle, grasps, lifts and
    /// carries it (dragging the others), and releases.
    #[test]
    fn pick_place_vjp_short(
        c in sliding_case(), held in 0..NP, off in vec_in(-0.003, 0.003, 2),
        place in vec_in(0.2, 0.8, 2), u in direction(8), v in direction(6 * NP + 3 + 6),
    ) {
        // softer springs, so that the dragged particles keep sliding
        let params = ClothParams { substeps: 2, stiffness: 100.0, ..small_params(1e-8) };
        let cloth = Cloth::new(params).unwrap();
        // where the particle is when the gripper arrives (the open gripper acts on none)
        let mut s = c.clone();
        let open = SubAction { a: [0.0; 3], suction: 1.0 };
        run_sub_actions(&cloth, &mut s, &[open; PNP_DOWN]);
        let xh = s.x[held];
        let mut z = pack_state(&c);
        z.extend([xh[0] + off[0], 0.3, xh[2] + off[1], place[0], 0.7, place[1]]);
        // the particle is held through the lift
        let act = std::array::from_fn(|i| z[6 * NP + 3 + i]);
        let subs = pick_place_sub_actions(&act, &c.gripper);
        let mut s = c.clone();
        run_sub_actions(&cloth, &mut s, &subs[..PNP_DOWN + PNP_LIFT]);
        prop_assert!(cloth.in_gripper(&s.x[held], &s.gripper));
        let st = PickPlace(cloth);
        let (w, zz) = st.window(&z);
        prop_assume!(w.slowest_contact(&zz) > 0.05);
        check(&st, &z, &u, &v, TOL_WINDOW, "pick-and-place")?;
    }

    /// Total linear momentum of the spring forces is zero for any configuration.
    #[test]
    fn spring_forces_conserve_momentum(c in case(1.0)) {
        let cloth = small_cloth(0.0);
        let mut f = vec![[0.0; 3]; NP];
        cloth.spring_forces(&c.s.x, &mut f, None);
        let scale: f64 = f.iter().flatten().map(|x| x.abs()).sum();
        for comp in 0..3 {
            let total: f64 = f.iter().map(|fi| fi[comp]).sum();
            prop_assert!(total.abs() <= 1e-12 * scale.max(1.0), "Σ F_{comp} = {total:e}");
        }
    }
}

// ---------------------------------------------------------------- physics

#[test]
fn springs_at_rest_length_give_zero_force() {
    for params in [ClothParams::fold_cloth(), small_params(1e-8)] {
        let cloth = Cloth::new(params).unwrap();
        let s = cloth.initial_state::<f64>();
        let mut f = vec![[1.0; 3]; cloth.n_particles()];
        cloth.spring_forces(&s.x, &mut f, None);
        // the lattice positions are exact up to rounding of i·h
        let k = cloth.params().stiffness;
        for fi in f.iter().flatten() {
            assert!(fi.abs() < 1e-12 * k, "{fi:e}");
        }
        // a uniformly translated cloth too
        let x: Vec<_> =
            s.x.iter()
                .map(|a| [a[0] + 0.1, a[1] + 0.3, a[2] - 0.05])
                .collect();
        cloth.spring_forces(&x, &mut f, None);
        assert!(f.iter().flatten().all(|fi| fi.abs() < 1e-10 * k));
    }
}

#[test]
fn spring_topology_matches_daxbench() {
    let cloth = Cloth::new(ClothParams::fold_cloth()).unwrap();
    assert_eq!(cloth.n_particles(), 512);
    // 16×32 block: structural 2·(15·32 + 16·31), shear 2·2·15·31, each twice (directed)
    let undirected = (15 * 32 + 16 * 31) + 2 * 15 * 31;
    assert_eq!(cloth.springs().len(), 2 * undirected);
    let h = 1.0 / 80.0;
    for s in cloth.springs() {
        let (a, b) = (cloth.sites()[s.i], cloth.sites()[s.j]);
        let d2 = (a[0] as f64 - b[0] as f64).powi(2) + (a[1] as f64 - b[1] as f64).powi(2);
        assert!(d2 == 1.0 || d2 == 2.0);
        assert!((s.rest - h * d2.sqrt()).abs() < 1e-15);
    }
    // first particle is site (32, 32) at (0.4, 0, 0.6)
    assert_eq!(cloth.sites()[0], [32, 32]);
    let s = cloth.initial_state::<f64>();
    assert!((s.x[0][0] - 0.4).abs() < 1e-15 && (s.x[0][2] - 0.6).abs() < 1e-15);
    // border particles of the small lattice get DaXBench's clamped duplicates, in pairs
    let small = small_cloth(0.0);
    let count = |i: usize, j: usize| {
        small
            .springs()
            .iter()
            .filter(|s| s.i == i && s.j == j)
            .count()
    };
    for s in small.springs() {
        assert_eq!(count(s.i, s.j), count(s.j, s.i));
    }
    assert!(small.springs().iter().any(|s| count(s.i, s.j) > 1));
}

#[test]
fn free_cloth_falls_with_doubled_gravity() {
    let cloth = Cloth::new(ClothParams::fold_cloth()).unwrap();
    let p = cloth.params().clone();
    let mut s = cloth.initial_state::<f64>();
    for x in s.x.iter_mut() {
        x[1] = 0.5;
    }
    let cmd = GripperCmd {
        d: [0.0; 3],
        suction: 1.0,
    };
    let e = cloth.damping_factor();
    let (mut v_pred, mut y_pred) = (0.0, 0.5);
    let (mut v_single, mut y_single) = (0.0, 0.5);
    let x0 = s.x.clone();
    for _ in 0..50 {
        cloth.substep(&mut s, &cmd, None);
        // DaXBench: v −= g·dt, then v += F·dt with F_y = −g, then damping
        v_pred = (v_pred - 2.0 * p.gravity * p.dt) * e;
        y_pred += p.dt * v_pred;
        v_single = (v_single - p.gravity * p.dt) * e;
        y_single += p.dt * v_single;
    }
    for (x, (v, xi0)) in s.x.iter().zip(s.v.iter().zip(&x0)) {
        assert!((v[1] - v_pred).abs() < 1e-12, "{} vs {v_pred}", v[1]);
        assert!((x[1] - y_pred).abs() < 1e-12);
        assert!((x[0] - xi0[0]).abs() < 1e-12 && (x[2] - xi0[2]).abs() < 1e-12);
        assert!(v[0].abs() < 1e-9 && v[2].abs() < 1e-9);
    }
    // the acceleration is 2g (up to damping), not g
    assert!((v_pred / v_single - 2.0).abs() < 1e-12);
    assert!((y_pred - 0.5) / (y_single - 0.5) > 1.99);
}

#[test]
fn cloth_resting_on_the_ground_stays_put() {
    let cloth = Cloth::new(ClothParams::fold_cloth()).unwrap();
    let p = cloth.params().clone();
    let s0 = cloth.initial_state::<f64>();
    let mut s = s0.clone();
    let cmd = GripperCmd {
        d: [0.0; 3],
        suction: 1.0,
    };
    for _ in 0..2000 {
        cloth.substep(&mut s, &cmd, None);
        for (x, x0) in s.x.iter().zip(&s0.x) {
            // xz: friction holds the cloth; DaXBench's regularised friction makes the
            // tangential velocity chatter at |v_t| ~ μ·g·dt, moving particles ~1e-6
            assert!((x[0] - x0[0]).abs() < 1e-5 && (x[2] - x0[2]).abs() < 1e-5);
            // y: clipped to the ground, then advanced by dt·v_y ≥ −dt·max_v
            assert!(x[1] <= 0.0 && x[1] >= -p.dt * p.max_v);
        }
    }
    // nothing zeroes v_y on the ground: it settles at −2g·dt·e/(1 − e)
    let e = cloth.damping_factor();
    let v_inf = -2.0 * p.gravity * p.dt * e / (1.0 - e);
    for v in &s.v {
        assert!(
            (v[1] - v_inf).abs() < 0.01 * v_inf.abs(),
            "{} vs {v_inf}",
            v[1]
        );
    }
}

#[test]
fn pick_and_place_moves_the_grasped_corner_to_the_place_point() {
    let cloth = Cloth::new(ClothParams::fold_cloth()).unwrap();
    let s0 = cloth.initial_state::<f64>();
    let corner = 0; // site (32, 32) at (0.4, 0, 0.6)
    let c = s0.x[corner];
    for place in [[0.4, 0.4], [0.55, 0.45]] {
        let action = [c[0], 0.0, c[2], place[0], 0.0, place[1]];
        let subs = pick_place_sub_actions(&action, &s0.gripper);
        assert_eq!(subs.len(), PNP_SUB_ACTIONS);
        let mut s = s0.clone();
        run_sub_actions(&cloth, &mut s, &subs[..PNP_DOWN]);
        assert!(s
            .gripper
            .iter()
            .zip(c)
            .all(|(g, ci)| (g - ci).abs() < 1e-12));
        run_sub_actions(
            &cloth,
            &mut s,
            &subs[PNP_DOWN..PNP_SUB_ACTIONS - PNP_RELEASE],
        );
        // carried: the corner hangs in the gripper, its neighbours are not held
        let g = s.gripper;
        assert!((g[0] - place[0]).abs() < 1e-12 && (g[2] - place[1]).abs() < 1e-12);
        assert!((g[1] - PNP_LIFT_HEIGHT).abs() < 1e-12);
        assert!(cloth.in_gripper(&s.x[corner], &g));
        let held = s.x.iter().filter(|x| cloth.in_gripper(x, &g)).count();
        assert_eq!(held, 1);
        run_sub_actions(&cloth, &mut s, &subs[PNP_SUB_ACTIONS - PNP_RELEASE..]);
        // released: the corner lies on the ground near the place point
        let x = s.x[corner];
        let dist = (x[0] - place[0]).hypot(x[2] - place[1]);
        assert!(dist < 0.02, "corner {x:?} is {dist} from {place:?}");
        assert!(x[1] <= 0.0);
        // the whole macro gives the same state
        let mut s2 = s0.clone();
        pick_place(&cloth, &mut s2, &action);
        assert_eq!(s2, s);
    }
}

// ---------------------------------------------------------------- checkpointing

#[test]
fn checkpointed_sweeps_are_bit_identical() {
    let cloth = Cloth::new(ClothParams::fold_cloth()).unwrap();
    let s0 = cloth.initial_state::<f64>();
    let action = [0.4, 0.0, 0.6, 0.45, 0.0, 0.42];
    let seed = |n: usize| {
        let mut a = StateAdj::zeros(n);
        for (i, x) in a.x.iter_mut().enumerate() {
            *x = [1.0, 0.5 * (i as f64).sin(), -0.25];
        }
        a.gripper = [0.3, -0.2, 0.1];
        a
    };
    for grad in [GradTreatment::Raw, GradTreatment::DaxbenchNormalize] {
        let mut sim = ClothSim::pick_place(&cloth, &action, &s0.gripper, grad);
        let n = sim.n_substeps();
        assert_eq!(n, 2000);
        let mut run = |every: usize, tapes: bool| {
            sim.record_tapes = tapes;
            let mut adj = sim.adj(seed(cloth.n_particles()));
            let st = vjp_checkpointed(&sim, &s0, n, every, &mut adj);
            (adj, st)
        };
        // the adjoints recompute their forward passes, or read the segment's tapes
        let (a1, st1) = run(1, false);
        let (a7, st7) = run(7, false);
        let (t1, _) = run(1, true);
        let (t7, st_t7) = run(7, true);
        assert_eq!((st7.peak_tapes, st_t7.peak_tapes), (0, 7));
        assert!(st_t7.peak_bytes > st7.peak_bytes);
        let bits = |a: &ClothAdj| -> Vec<u64> {
            let mut b: Vec<u64> = a.state.x.iter().flatten().map(|x| x.to_bits()).collect();
            b.extend(a.state.v.iter().flatten().map(|x| x.to_bits()));
            b.extend(a.state.gripper.map(f64::to_bits));
            b.extend(a.sub_actions.iter().flatten().map(|x| x.to_bits()));
            b
        };
        assert_eq!(bits(&a1), bits(&a7), "{grad:?}");
        assert_eq!(bits(&a1), bits(&t1), "{grad:?}, taped");
        assert_eq!(bits(&a1), bits(&t7), "{grad:?}, taped every 7");
        assert!(st7.peak_states < st1.peak_states / 5);
        // the Substepper's forward is the generic forward
        let mut s = s0.clone();
        pick_place(&cloth, &mut s, &action);
        assert_eq!(forward(&sim, &s0, n), s);
        assert!(sim.state_bytes(&s0) >= 2 * 512 * 24);
    }
}

#[test]
fn daxbench_normalisation_keeps_the_pick_and_place_gradient_finite() {
    let cloth = Cloth::new(ClothParams::fold_cloth()).unwrap();
    let s0 = cloth.initial_state::<f64>();
    let action = [0.4, 0.0, 0.6, 0.55, 0.0, 0.45];
    let run = |grad| {
        let mut adj = StateAdj::zeros(cloth.n_particles());
        for x in adj.x.iter_mut() {
            *x = [1.0; 3];
        }
        let (ga, _) = pick_place_vjp(&cloth, &s0, &action, 50, grad, &mut adj);
        let norm = adj.x.iter().flatten().map(|g| g * g).sum::<f64>().sqrt();
        (ga, norm)
    };
    // the raw gradient explodes (tasks.md §8, 27b): ~1e58 here
    let (_, raw) = run(GradTreatment::Raw);
    assert!(raw.is_nan() || raw > 1e20, "{raw:e}");
    let (ga, norm) = run(GradTreatment::DaxbenchNormalize);
    assert!(norm.is_finite() && norm < 10.0, "{norm:e}");
    assert!(ga.iter().all(|g| g.is_finite()));
    assert!(ga[1] == 0.0 && ga[4] == 0.0, "y entries are forced to 0");
    let (ga, _) = run(GradTreatment::ClipNorm(1.0));
    assert!(ga.iter().all(|g| g.is_finite()));
}

/// One substep's VJP under each treatment equals the raw stages composed by hand with
/// the treatment applied where it is documented to act.
#[test]
fn gradient_treatments_act_where_documented() {
    use proptest::strategy::ValueTree;
    let cloth = small_cloth(1e-8);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut grasped = 0;
    for _ in 0..32 {
        let c = case(1.0).new_tree(&mut runner).unwrap().current();
        grasped += c.s.x.iter().any(|x| cloth.in_gripper(x, &c.s.gripper)) as usize;
        treatments_on(&cloth, &c);
    }
    assert!(
        grasped > 4,
        "the cases must exercise the gripper stage: {grasped}"
    );
}

fn treatments_on(cloth: &Cloth, c: &Case) {
    let n = NP;
    let mut u = StateAdj::zeros(n);
    for (i, x) in u.x.iter_mut().enumerate() {
        *x = [(i as f64).sin(), 2.0, -(i as f64).cos()];
    }
    for (i, v) in u.v.iter_mut().enumerate() {
        *v = [0.3, (2.0 * i as f64).sin(), 1.5];
    }
    u.gripper = [3.0, -4.0, 12.0];
    let unit = |g: &mut [f64]| {
        let nn = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        g.iter_mut().for_each(|x| *x /= nn * n as f64);
    };
    let raw_vjp = |a: &mut StateAdj, mid: &dyn Fn(&mut StateAdj)| {
        // the substep's stages, run by hand
        let p = cloth.params();
        let mut v1 = c.s.v.clone();
        v1.iter_mut().for_each(|v| v[1] -= p.gravity * p.dt);
        let mut f0 = vec![[0.0; 3]; n];
        cloth.spring_forces(&c.s.x, &mut f0, None);
        f0.iter_mut().for_each(|f| f[1] -= p.gravity);
        let mut f1 = f0.clone();
        cloth.friction(&c.s.x, &v1, &mut f1, None);
        let mut v2 = v1.clone();
        cloth.integrate(&mut v2, &f1);
        let (mut x3, mut v3, mut p3) = (c.s.x.clone(), v2, c.s.gripper);
        cloth.gripper(&mut x3, &mut v3, &mut p3, &c.cmd, None);
        cloth.clip_advance_vjp(&x3, &v3, &mut a.x, &mut a.v);
        mid(a);
        let mut ad = [0.0; 3];
        cloth.gripper_vjp(
            &c.s.x,
            &c.s.gripper,
            &c.cmd,
            &a.x,
            &mut a.v,
            &mut a.gripper,
            &mut ad,
        );
        let mut af = vec![[0.0; 3]; n];
        cloth.integrate_vjp(&mut a.v, &mut af);
        cloth.friction_vjp(&c.s.x, &v1, &f0, &mut af, &mut a.v);
        cloth.spring_forces_vjp(&c.s.x, &af, &mut a.x);
        ad
    };
    let lib = |grad| {
        let mut a = u.clone();
        let mut ad = [0.0; 3];
        cloth.substep_vjp(&c.s, &c.cmd, &mut a, &mut ad, grad);
        (a, ad)
    };
    let close = |a: &(StateAdj, V3<f64>), b: &(StateAdj, V3<f64>)| {
        let fa: Vec<f64> = pack_state(&ClothState {
            x: a.0.x.clone(),
            v: a.0.v.clone(),
            gripper: a.0.gripper,
        })
        .into_iter()
        .chain(a.1)
        .collect();
        let fb: Vec<f64> = pack_state(&ClothState {
            x: b.0.x.clone(),
            v: b.0.v.clone(),
            gripper: b.0.gripper,
        })
        .into_iter()
        .chain(b.1)
        .collect();
        diff_core::gradcheck::rel_err(&fa, &fb, 1e-300) < 1e-14
    };
    // raw
    let mut a = u.clone();
    let ad = raw_vjp(&mut a, &|_| {});
    assert!(close(&lib(GradTreatment::Raw), &(a, ad)));
    // DaXBench: every leaf at the substep end, x and v again after the gripper stage
    let mut a = u.clone();
    unit(a.x.as_flattened_mut());
    unit(a.v.as_flattened_mut());
    unit(&mut a.gripper);
    let ad = raw_vjp(&mut a, &|a: &mut StateAdj| {
        unit(a.x.as_flattened_mut());
        unit(a.v.as_flattened_mut());
    });
    assert!(close(&lib(GradTreatment::DaxbenchNormalize), &(a, ad)));
    // clip: the whole state cotangent at the substep end
    let mut a = u.clone();
    let total = pack_state(&ClothState {
        x: a.x.clone(),
        v: a.v.clone(),
        gripper: a.gripper,
    })
    .iter()
    .map(|x| x * x)
    .sum::<f64>()
    .sqrt();
    assert!(total > 2.0);
    let sc = 2.0 / total;
    a.x.iter_mut().flatten().for_each(|x| *x *= sc);
    a.v.iter_mut().flatten().for_each(|x| *x *= sc);
    a.gripper.iter_mut().for_each(|x| *x *= sc);
    let ad = raw_vjp(&mut a, &|_| {});
    assert!(close(&lib(GradTreatment::ClipNorm(2.0)), &(a, ad)));
    assert!(close(
        &lib(GradTreatment::ClipNorm(1e9)),
        &lib(GradTreatment::Raw)
    ));
}

// ---------------------------------------------------------------- scalars

/// f32, f64 and dual numbers take the same branches; the dual's primal is the f64 run.
#[test]
fn scalar_types_agree() {
    let cloth = Cloth::new(ClothParams::fold_cloth()).unwrap();
    let s0 = cloth.initial_state::<f64>();
    let action = [0.4, 0.0, 0.6, 0.5, 0.0, 0.5];
    let mut s64 = s0.clone();
    pick_place(&cloth, &mut s64, &action);
    let mut sd = s0.cast::<diff_core::Dual<f64>>();
    pick_place(&cloth, &mut sd, &action.map(diff_core::Dual::cst));
    assert_eq!(sd.cast::<f64>(), s64);
    let mut s32 = s0.cast::<f32>();
    pick_place(&cloth, &mut s32, &action.map(|a| a as f32));
    let err = s32
        .x
        .iter()
        .flatten()
        .zip(s64.x.iter().flatten())
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 1e-3, "f32 vs f64: {err:e}");
}

// ---------------------------------------------------------------- parameters

#[test]
fn presets_match_the_task_table() {
    let f = ClothParams::fold_cloth();
    assert_eq!((f.n, f.n_particles()), (80, 512));
    assert_eq!(
        (f.stiffness, f.damping, f.dt, f.gravity, f.mu, f.max_v),
        (900.0, 2.0, 2e-3, 0.5, 0.5, 2.0)
    );
    assert_eq!(
        (f.gripper_radius, f.substeps, f.action_clip),
        (0.01, 50, 2.0)
    );
    assert_eq!(f.spacing, 1.0 / 80.0);
    for i in 0..80 {
        for j in 0..80 {
            let inside = (32..48).contains(&i) && (32..64).contains(&j);
            assert_eq!(f.mask[i * 80 + j], inside);
        }
    }
    let u = ClothParams::unfold_cloth();
    assert_eq!(u.mu, 3.0);
    assert_eq!(ClothParams { mu: 0.5, ..u }, f);
    let t = ClothParams::fold_tshirt(rect_mask(180, 60..120, 50..130));
    assert_eq!(
        (t.n, t.stiffness, t.dt, t.mu, t.damping),
        (180, 5000.0, 5e-4, 0.9, 2.0)
    );
    assert_eq!(t.spacing, 1.0 / 180.0);
    t.validate().unwrap();
    f.validate().unwrap();
}

#[test]
fn validate_names_the_bad_field() {
    let bad = |p: ClothParams, field: &str| match p.validate() {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, field),
        other => panic!("{field}: expected InvalidParameter, got {other:?}"),
    };
    let ok = small_params(1e-8);
    bad(
        ClothParams {
            dt: 0.0,
            ..ok.clone()
        },
        "dt",
    );
    bad(
        ClothParams {
            dt: -1e-3,
            ..ok.clone()
        },
        "dt",
    );
    bad(
        ClothParams {
            dt: f64::NAN,
            ..ok.clone()
        },
        "dt",
    );
    bad(
        ClothParams {
            mask: vec![false; 16],
            ..ok.clone()
        },
        "mask",
    );
    bad(
        ClothParams {
            mask: vec![true; 15],
            ..ok.clone()
        },
        "mask",
    );
    bad(
        ClothParams {
            n: 1,
            mask: vec![true],
            ..ok.clone()
        },
        "n",
    );
    bad(
        ClothParams {
            spacing: 0.0,
            ..ok.clone()
        },
        "spacing",
    );
    bad(
        ClothParams {
            stiffness: -1.0,
            ..ok.clone()
        },
        "stiffness",
    );
    bad(
        ClothParams {
            damping: -1.0,
            ..ok.clone()
        },
        "damping",
    );
    bad(
        ClothParams {
            mu: f64::INFINITY,
            ..ok.clone()
        },
        "mu",
    );
    bad(
        ClothParams {
            max_v: 0.0,
            ..ok.clone()
        },
        "max_v",
    );
    bad(
        ClothParams {
            gripper_radius: 0.0,
            ..ok.clone()
        },
        "gripper_radius",
    );
    bad(
        ClothParams {
            substeps: 0,
            ..ok.clone()
        },
        "substeps",
    );
    bad(
        ClothParams {
            action_clip: -2.0,
            ..ok.clone()
        },
        "action_clip",
    );
    bad(
        ClothParams {
            gravity: f64::NAN,
            ..ok.clone()
        },
        "gravity",
    );
    bad(
        ClothParams {
            small_num: -1.0,
            ..ok.clone()
        },
        "small_num",
    );
    bad(
        ClothParams {
            static_speed: -1.0,
            ..ok.clone()
        },
        "static_speed",
    );
    assert!(Cloth::new(ClothParams {
        dt: 0.0,
        ..ok.clone()
    })
    .is_err());
    ok.validate().unwrap();
}

#[test]
fn params_round_trip_through_serde() {
    let p = ClothParams::fold_cloth();
    let s = serde_json::to_string(&p).unwrap();
    let q: ClothParams = serde_json::from_str(&s).unwrap();
    assert_eq!(p, q);
    let g: GradTreatment = serde_json::from_str(r#"{"ClipNorm":0.5}"#).unwrap();
    assert_eq!(g, GradTreatment::ClipNorm(0.5));
}

/// The random substep cases of `substep_vjp_sticking` reach every branch: each
/// friction mode with and without `F_y < 0`, held particles, clipped positions,
/// velocities (both signs) and gripper.
#[test]
fn random_cases_cover_every_branch() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let cloth = sticky_cloth();
    let n = NP;
    let mut friction = [0usize; 7];
    let (mut held, mut x_clip, mut v_lo, mut v_hi, mut g_clip) = (0, 0, 0, 0, 0);
    for _ in 0..256 {
        let c = case(0.01).new_tree(&mut runner).unwrap().current();
        let k = cloth.substep_kinks(&c.s, &c.cmd);
        // record: friction (n), gripper (n + 3), clip_advance (3n), springs
        for &f in &k[..n] {
            friction[f as usize] += 1;
        }
        held += k[n..2 * n].iter().filter(|&&b| b == 1).count();
        g_clip += k[2 * n..2 * n + 3].iter().filter(|&&b| b != 0).count();
        for &b in &k[2 * n + 3..5 * n + 3] {
            x_clip += (b & 3 != 0) as usize;
            v_lo += (b >> 2 == 1) as usize;
            v_hi += (b >> 2 == 2) as usize;
        }
    }
    // 0 free; 1 + [F_y < 0] + 2·mode, mode 0 dynamic, 1 static-zero, 2 static-scaled
    // (static-zero needs μF > 0, i.e. F_y < 0, so record 3 cannot occur)
    for (b, &count) in friction.iter().enumerate() {
        if b != 3 {
            assert!(count >= 10, "friction record {b}: {count} {friction:?}");
        }
    }
    assert_eq!(friction[3], 0);
    for (what, count) in [
        ("held", held),
        ("x clip", x_clip),
        ("v clip low", v_lo),
        ("v clip high", v_hi),
        ("gripper clip", g_clip),
    ] {
        assert!(count >= 10, "{what}: {count}");
    }
}

#[test]
fn gradient_treatments_parse_from_their_command_line_spelling() {
    assert_eq!("raw".parse(), Ok(GradTreatment::Raw));
    assert_eq!("daxbench".parse(), Ok(GradTreatment::DaxbenchNormalize));
    assert_eq!("clip:2.5".parse(), Ok(GradTreatment::ClipNorm(2.5)));
    for bad in ["clip:0", "clip:x", "clip", "normalise"] {
        let err = bad.parse::<GradTreatment>().expect_err(bad);
        assert!(err.contains(bad) && err.contains("clip:C"), "{err}");
    }
}

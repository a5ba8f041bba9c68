//! Robot sub-actions, DaXBench's pick-and-place macro, and [`ClothSim`], the
//! [`Substepper`] over the substeps of a sequence of sub-actions.

use super::model::{Cloth, ClothState, ClothTape, GradTreatment, GripperCmd, StateAdj, V3};
use super::params::ClothParams;
use crate::checkpoint::{vjp_checkpointed, Substepper, SweepStats};
use diff_core::Real;

/// Sub-actions moving the open gripper down to the pick point.
pub const PNP_DOWN: usize = 3;
/// Sub-actions lifting the grasping gripper.
pub const PNP_LIFT: usize = 10;
/// Sub-actions carrying the grasping gripper from pick to place.
pub const PNP_MOVE: usize = 20;
/// Sub-actions with the gripper open and still (the cloth settles).
pub const PNP_RELEASE: usize = 7;
/// Sub-actions per pick-and-place (`3 + 10 + 20 + 7`).
pub const PNP_SUB_ACTIONS: usize = PNP_DOWN + PNP_LIFT + PNP_MOVE + PNP_RELEASE;
/// Total lift height over the [`PNP_LIFT`] sub-actions.
pub const PNP_LIFT_HEIGHT: f64 = 0.06;

/// One robot sub-action: the gripper displacement over the whole sub-action (before the
/// `±action_clip` clip) and the suction held during it (0 grasp, 1 open).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SubAction<T> {
    /// Displacement over the sub-action.
    pub a: V3<T>,
    /// Suction (not differentiated).
    pub suction: f64,
}

/// The per-substep gripper command of a sub-action: `d = clip(a, ±action_clip)/substeps`,
/// so an unclipped sub-action moves the gripper by `a` over its substeps.
pub fn sub_action_cmd<T: Real>(p: &ClothParams, sa: &SubAction<T>) -> GripperCmd<T> {
    let s = T::cst(p.substeps as f64);
    GripperCmd {
        d: sa.a.map(|a| {
            let r = a.re();
            let c = if r < -p.action_clip {
                T::cst(-p.action_clip)
            } else if r > p.action_clip {
                T::cst(p.action_clip)
            } else {
                a
            };
            c / s
        }),
        suction: sa.suction,
    }
}

/// Adjoint of [`sub_action_cmd`] w.r.t. `a`: `adj_d/substeps` where `a` is inside
/// `[−action_clip, action_clip]` (bounds included), 0 where it is clipped.
pub fn sub_action_cmd_vjp(p: &ClothParams, sa: &SubAction<f64>, adj_d: &V3<f64>) -> V3<f64> {
    std::array::from_fn(|c| {
        let a = sa.a[c];
        if a < -p.action_clip || a > p.action_clip {
            0.0
        } else {
            adj_d[c] / p.substeps as f64
        }
    })
}

/// DaXBench's pick-and-place macro (`basic/cloth_env.py:get_pnp_actions`): the 6-D
/// action `(pick xyz, place xyz)`, with both y forced to 0, becomes the 40 sub-actions
/// - 3 × `(pick − gripper)/3`, open (the gripper goes down to the pick point on the
///   ground; `gripper` is its position at the start of the pick-and-place);
/// - 10 × `(0, 0.06/10, 0)`, grasping;
/// - 20 × `(place − pick)/20` in xz, grasping;
/// - 7 × `0`, open (release).
pub fn pick_place_sub_actions<T: Real>(action: &[T; 6], gripper: &V3<T>) -> Vec<SubAction<T>> {
    let pick = [action[0], T::zero(), action[2]];
    let place = [action[3], T::zero(), action[5]];
    let mut out = Vec::with_capacity(PNP_SUB_ACTIONS);
    let down = std::array::from_fn(|c| (pick[c] - gripper[c]) / T::cst(PNP_DOWN as f64));
    out.extend(std::iter::repeat_n(
        SubAction {
            a: down,
            suction: 1.0,
        },
        PNP_DOWN,
    ));
    let up = [
        T::zero(),
        T::cst(PNP_LIFT_HEIGHT) / T::cst(PNP_LIFT as f64),
        T::zero(),
    ];
    out.extend(std::iter::repeat_n(
        SubAction {
            a: up,
            suction: 0.0,
        },
        PNP_LIFT,
    ));
    let mv = [
        (place[0] - pick[0]) / T::cst(PNP_MOVE as f64),
        T::zero(),
        (place[2] - pick[2]) / T::cst(PNP_MOVE as f64),
    ];
    out.extend(std::iter::repeat_n(
        SubAction {
            a: mv,
            suction: 0.0,
        },
        PNP_MOVE,
    ));
    out.extend(std::iter::repeat_n(
        SubAction {
            a: [T::zero(); 3],
            suction: 1.0,
        },
        PNP_RELEASE,
    ));
    out
}

/// Adjoint of [`pick_place_sub_actions`] (linear): from the adjoints of the 40
/// sub-action displacements to those of the 6-D action (zero in the y entries, which
/// are forced to 0) and of the starting gripper position.
pub fn pick_place_sub_actions_vjp(adj: &[V3<f64>]) -> ([f64; 6], V3<f64>) {
    assert_eq!(adj.len(), PNP_SUB_ACTIONS, "one adjoint per sub-action");
    let mut act = [0.0; 6];
    let mut grip = [0.0; 3];
    for a in &adj[..PNP_DOWN] {
        let w = 1.0 / PNP_DOWN as f64;
        act[0] += a[0] * w;
        act[2] += a[2] * w;
        for c in 0..3 {
            grip[c] -= a[c] * w;
        }
    }
    for a in &adj[PNP_DOWN + PNP_LIFT..PNP_DOWN + PNP_LIFT + PNP_MOVE] {
        let w = 1.0 / PNP_MOVE as f64;
        act[3] += a[0] * w;
        act[0] -= a[0] * w;
        act[5] += a[2] * w;
        act[2] -= a[2] * w;
    }
    (act, grip)
}

/// Runs `subs` from `s`, each sub-action for `substeps` substeps.
pub fn run_sub_actions<T: Real>(cloth: &Cloth, s: &mut ClothState<T>, subs: &[SubAction<T>]) {
    for sa in subs {
        let cmd = sub_action_cmd(cloth.params(), sa);
        for _ in 0..cloth.params().substeps {
            cloth.substep(s, &cmd, None);
        }
    }
}

/// One pick-and-place from `s` (the macro is expanded from the gripper position at the
/// start): `40·substeps` substeps.
pub fn pick_place<T: Real>(cloth: &Cloth, s: &mut ClothState<T>, action: &[T; 6]) {
    let subs = pick_place_sub_actions(action, &s.gripper);
    run_sub_actions(cloth, s, &subs);
}

/// The adjoint carried by [`ClothSim`]'s reverse sweep: the state's and, accumulated,
/// each sub-action displacement's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClothAdj {
    /// Of the state.
    pub state: StateAdj,
    /// Of each sub-action's `a`.
    pub sub_actions: Vec<V3<f64>>,
}

/// A cloth running a fixed sequence of sub-actions, `substeps` substeps each, as a
/// [`Substepper`] for [`vjp_checkpointed`].
///
/// **The grasp set.** Which particles the gripper holds is a discrete choice made anew
/// at every substep on primal values: particle `i` is inside during substep `k` iff
/// `‖x_i − p‖ ≤ gripper_radius`, with `x_i` and the gripper centre `p` at the start of
/// substep `k` (DaXBench re-evaluates the mask every substep too). A held particle moves
/// with the gripper, so it stays inside while grasping; other particles join if they
/// come within the radius. The choice has no derivative: the gradient flows through the
/// displacement of the held particles and through the gripper's own position, not
/// through which particles are held. In particular the pick point's gradient reaches the
/// cloth only through the sub-actions it sets (down, and `place − pick` for the carry),
/// never by selecting a different particle — as in DaXBench, where the pick point is
/// not snapped to the nearest particle, so a pick farther than the radius from every
/// particle grasps nothing.
#[derive(Clone, Debug)]
pub struct ClothSim<'a> {
    cloth: &'a Cloth,
    sub_actions: Vec<SubAction<f64>>,
    grad: GradTreatment,
    /// Record each substep's intermediates ([`ClothTape`], 1.5 times a state) during
    /// the reverse sweep's recomputation, so that the adjoints do not recompute the
    /// forward pass. Default true; the gradients are the same bit for bit.
    pub record_tapes: bool,
}

impl<'a> ClothSim<'a> {
    /// Runs `sub_actions`, treating cotangents per `grad` in the reverse sweep.
    pub fn new(cloth: &'a Cloth, sub_actions: Vec<SubAction<f64>>, grad: GradTreatment) -> Self {
        Self {
            cloth,
            sub_actions,
            grad,
            record_tapes: true,
        }
    }

    /// One pick-and-place of `action` from a state whose gripper is at `gripper`.
    pub fn pick_place(
        cloth: &'a Cloth,
        action: &[f64; 6],
        gripper: &V3<f64>,
        grad: GradTreatment,
    ) -> Self {
        Self::new(cloth, pick_place_sub_actions(action, gripper), grad)
    }

    /// The sub-actions.
    pub fn sub_actions(&self) -> &[SubAction<f64>] {
        &self.sub_actions
    }

    /// Total substeps (`sub-actions × substeps`).
    pub fn n_substeps(&self) -> usize {
        self.sub_actions.len() * self.cloth.params().substeps
    }

    /// The gripper command of substep `k`.
    pub fn cmd(&self, k: usize) -> GripperCmd<f64> {
        sub_action_cmd(
            self.cloth.params(),
            &self.sub_actions[k / self.cloth.params().substeps],
        )
    }

    /// A reverse-sweep adjoint seeded with the final state's adjoint `state`.
    pub fn adj(&self, state: StateAdj) -> ClothAdj {
        ClothAdj {
            state,
            sub_actions: vec![[0.0; 3]; self.sub_actions.len()],
        }
    }
}

impl Substepper for ClothSim<'_> {
    type State = ClothState<f64>;
    type Adj = ClothAdj;
    type Tape = ClothTape;

    fn substep(&self, k: usize, s: &mut ClothState<f64>) {
        self.cloth.substep(s, &self.cmd(k), None);
    }

    fn substep_vjp(&self, k: usize, s_in: &ClothState<f64>, adj: &mut ClothAdj) {
        let mut adj_d = [0.0; 3];
        self.cloth
            .substep_vjp(s_in, &self.cmd(k), &mut adj.state, &mut adj_d, self.grad);
        self.sub_action_adjoint(k, &adj_d, adj);
    }

    fn records(&self) -> bool {
        self.record_tapes
    }

    fn substep_taped(&self, k: usize, s: &mut ClothState<f64>, tape: &mut ClothTape) {
        self.cloth.substep_taped(s, &self.cmd(k), tape);
    }

    fn substep_vjp_taped(
        &self,
        k: usize,
        s_in: &ClothState<f64>,
        tape: &ClothTape,
        adj: &mut ClothAdj,
    ) {
        let mut adj_d = [0.0; 3];
        self.cloth.substep_vjp_taped(
            s_in,
            tape,
            &self.cmd(k),
            &mut adj.state,
            &mut adj_d,
            self.grad,
        );
        self.sub_action_adjoint(k, &adj_d, adj);
    }

    fn state_bytes(&self, s: &ClothState<f64>) -> usize {
        (s.x.len() + s.v.len() + 1) * std::mem::size_of::<V3<f64>>()
    }

    fn tape_bytes(&self, tape: &ClothTape) -> usize {
        tape.bytes()
    }
}

impl ClothSim<'_> {
    /// Adds substep `k`'s gripper-displacement adjoint `adj_d` to its sub-action's.
    fn sub_action_adjoint(&self, k: usize, adj_d: &V3<f64>, adj: &mut ClothAdj) {
        let p = self.cloth.params();
        let j = k / p.substeps;
        let g = sub_action_cmd_vjp(p, &self.sub_actions[j], adj_d);
        for (a, gc) in adj.sub_actions[j].iter_mut().zip(g) {
            *a += gc;
        }
    }
}

/// The adjoint of one pick-and-place from `s0`: on entry `adj` holds the adjoint of the
/// final state, on return that of `s0` (including the starting gripper position, which
/// the macro's first sub-actions read); returns the adjoint of the 6-D action and the
/// checkpointing statistics (states stored every `every` substeps).
pub fn pick_place_vjp(
    cloth: &Cloth,
    s0: &ClothState<f64>,
    action: &[f64; 6],
    every: usize,
    grad: GradTreatment,
    adj: &mut StateAdj,
) -> ([f64; 6], SweepStats) {
    let sim = ClothSim::pick_place(cloth, action, &s0.gripper, grad);
    let mut cadj = sim.adj(std::mem::take(adj));
    let stats = vjp_checkpointed(&sim, s0, sim.n_substeps(), every, &mut cadj);
    let (adj_action, adj_grip) = pick_place_sub_actions_vjp(&cadj.sub_actions);
    for (a, g) in cadj.state.gripper.iter_mut().zip(adj_grip) {
        *a += g;
    }
    *adj = cadj.state;
    (adj_action, stats)
}

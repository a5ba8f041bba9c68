//! Transitions with their Sobolev targets, computed from any `diff_core::Task`, and the FIFO
//! buffer that keeps them (`model.buffer`, §3.4).
//!
//! Targets are stored in **physical** coordinates together with the physical directions
//! they were taken along, so that they stay valid while the normalisation statistics move;
//! the loss converts them with the current statistics (see [`crate::loss`]).
//!
//! Per transition, the target row holds (`ds` = state width, `din` = state + action width,
//! `k` = directions):
//! - `full`: `J_F = ∂s′/∂(s, a)` row-major `[ds, din]`, from `ds` batched simulator VJPs
//!   (one per output row, with a unit adjoint);
//! - `vjp_proj`: `k` blocks `[u (ds), uᵀJ_F (din)]`, one VJP per direction;
//! - `jvp_proj`: `k` blocks `[v (din), J_F·v (ds)]`, one JVP per direction;
//! - `bilinear`: `k` blocks `[u (ds), v (din), uᵀJ_F·v (1)]`, one VJP and a dot product;
//! - `none`: nothing.
//!
//! Directions are standard normal in the model's **normalised** coordinates at collection
//! time (u_phys = u_n / σ_out, v_phys = σ_in ⊙ v_n, with v_n's state and action parts scaled by
//! √β_s and √β_a), which makes each projected penalty an unbiased estimate of
//! β_s‖M_s‖_F² + β_a‖M_a‖_F² in normalised coordinates.

use crate::config::{SobolevConfig, SobolevForm, TargetFilter};
use crate::error::{check_shape, Error, Result};
use diff_core::rng::fill_normal;
use diff_core::{SeededRng, Task};
use ndarray::{s, Array2, ArrayView2, Axis};

/// The shape of one transition's target row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetLayout {
    /// Estimator form.
    pub form: SobolevForm,
    /// State width.
    pub state_dim: usize,
    /// Action width.
    pub action_dim: usize,
    /// Directions per transition (1 for `full` and `none`).
    pub directions: usize,
}

impl TargetLayout {
    /// A layout; `directions` is forced to 1 for the forms that draw none.
    pub fn new(form: SobolevForm, state_dim: usize, action_dim: usize, directions: usize) -> Self {
        TargetLayout {
            form,
            state_dim,
            action_dim,
            directions: if form.is_projected() { directions } else { 1 },
        }
    }

    /// State + action width.
    pub fn input_dim(&self) -> usize {
        self.state_dim + self.action_dim
    }

    /// Width of one direction's block.
    pub fn block(&self) -> usize {
        let (ds, din) = (self.state_dim, self.input_dim());
        match self.form {
            SobolevForm::None => 0,
            SobolevForm::Full => ds * din,
            SobolevForm::VjpProj | SobolevForm::JvpProj => ds + din,
            SobolevForm::Bilinear => ds + din + 1,
        }
    }

    /// Width of the whole target row.
    pub fn width(&self) -> usize {
        self.block() * self.directions
    }
}

/// How targets are collected: the form, the number of directions, the direction scales and
/// the filter.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    /// Estimator form.
    pub form: SobolevForm,
    /// Directions per transition (projected forms).
    pub directions: usize,
    /// β_s, β_a: the variances of the state and action parts of `v` (`jvp_proj`,
    /// `bilinear`); the other forms apply β in the loss.
    pub beta: (f64, f64),
    /// σ_out of the model at collection time (`None`: 1), `[state]`.
    pub out_std: Option<Vec<f64>>,
    /// σ_in of the model at collection time (`None`: 1), `[state + action]`.
    pub in_std: Option<Vec<f64>>,
    /// Handling of non-finite targets.
    pub filter: TargetFilter,
}

impl TargetSpec {
    /// Unit direction scales (directions standard normal in physical coordinates).
    pub fn unit(form: SobolevForm, directions: usize) -> Self {
        TargetSpec {
            form,
            directions,
            beta: (1.0, 1.0),
            out_std: None,
            in_std: None,
            filter: TargetFilter::DropNonFinite,
        }
    }

    /// The knobs of `cfg` with unit direction scales (see
    /// [`crate::SobolevModel::target_spec`] for the model's current scales).
    pub fn from_config(cfg: &SobolevConfig) -> Self {
        TargetSpec {
            beta: cfg.betas(),
            filter: cfg.target_filter,
            ..TargetSpec::unit(cfg.form, cfg.directions)
        }
    }
}

/// A batch of transitions `(s, a, s′)` with their target rows (layout [`TargetLayout`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Transitions {
    /// Target layout.
    pub layout: TargetLayout,
    /// States `[n, state]`.
    pub s: Array2<f32>,
    /// Actions `[n, action]` (as given; the task clips them inside its step).
    pub a: Array2<f32>,
    /// Next states `[n, state]`.
    pub s_next: Array2<f32>,
    /// Target rows `[n, layout.width()]`.
    pub targets: Array2<f32>,
    /// Transitions dropped by the target filter when this batch was collected.
    pub dropped: usize,
}

impl Transitions {
    /// Number of transitions.
    pub fn len(&self) -> usize {
        self.s.nrows()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds a batch from its parts, checking every shape.
    pub fn from_parts(
        layout: TargetLayout,
        s: Array2<f32>,
        a: Array2<f32>,
        s_next: Array2<f32>,
        targets: Array2<f32>,
    ) -> Result<Self> {
        let n = s.nrows();
        check_shape("transitions s", s.shape(), n, layout.state_dim)?;
        check_shape("transitions a", a.shape(), n, layout.action_dim)?;
        check_shape("transitions s_next", s_next.shape(), n, layout.state_dim)?;
        check_shape("transitions targets", targets.shape(), n, layout.width())?;
        Ok(Transitions {
            layout,
            s,
            a,
            s_next,
            targets,
            dropped: 0,
        })
    }

    /// The simulator Jacobian `[state, state + action]` of transition `i` (`full` only).
    pub fn jacobian(&self, i: usize) -> Option<ArrayView2<'_, f32>> {
        if self.layout.form != SobolevForm::Full {
            return None;
        }
        let (ds, din) = (self.layout.state_dim, self.layout.input_dim());
        Some(
            self.targets
                .row(i)
                .into_shape_with_order((ds, din))
                .expect("full target row"),
        )
    }
}

/// `F(s, a)`: the given next states (checked) or one simulated step.
fn next_states<T: Task + ?Sized>(
    task: &T,
    s: ArrayView2<f32>,
    a: ArrayView2<f32>,
    next: Option<ArrayView2<f32>>,
) -> Result<Array2<f32>> {
    let (n, ds) = s.dim();
    Ok(match next {
        Some(next) => {
            check_shape("collect next states", next.shape(), n, ds)?;
            next.to_owned()
        }
        None => {
            let mut s_next = Array2::<f32>::zeros((n, ds));
            task.step(s, a, s_next.view_mut());
            s_next
        }
    })
}

/// Output directions handed to [`collect_with_directions`] (`sobolev.direction_source =
/// policy_adjoint`): one row per transition, in physical coordinates.
#[derive(Clone, Copy, Debug)]
pub struct GivenDirections<'a> {
    /// The directions `g` (e.g. the actor's ∂L/∂s′).
    pub u: ArrayView2<'a, f32>,
    /// Optionally the simulator's VJP of exactly these rows, `(gᵀ∂F/∂s, gᵀ∂F/∂a)`, already
    /// computed (the reverse sweep that produced `g` did): the targets reuse it.
    pub vjp: Option<(ArrayView2<'a, f32>, ArrayView2<'a, f32>)>,
}

/// Simulates `s′ = F(s, a)` for a batch and computes the Sobolev targets of `spec.form`
/// with the task's batched `step_vjp` / `step_jvp`. Rows whose next state or targets are
/// not finite are dropped (`TargetFilter::DropNonFinite`) and counted in
/// [`Transitions::dropped`].
pub fn collect<T: Task + ?Sized>(
    task: &T,
    states: ArrayView2<f32>,
    actions: ArrayView2<f32>,
    spec: &TargetSpec,
    rng: &mut SeededRng,
) -> Result<Transitions> {
    collect_with_directions(task, states, actions, None, spec, None, rng)
}

/// [`collect`] with given output directions for the projected forms (`vjp_proj`,
/// `bilinear`; `sobolev.direction_source = policy_adjoint`): row r of `given.u`
/// (physical coordinates, e.g. the actor's ∂L/∂s′) replaces the first random direction of
/// transition r, rescaled in normalised output space to length √(state_dim) (a standard
/// normal direction's mean square length); all-zero or non-finite rows keep the random
/// one. The random draws happen as in [`collect`], so the other directions are unchanged.
///
/// `next`, when given, holds the next states `F(s, a)` already simulated for these rows
/// (a window's tape): the forward step is then skipped. They must be what `task.step`
/// gives (rows are independent, so a batched window gives the same values).
///
/// When `given` also carries the simulator's VJP of its directions ([`GivenDirections::vjp`],
/// e.g. what the actor's reverse sweep already computed), the first direction's targets are
/// those VJPs, rescaled like the directions (the VJP is linear in `u`): no simulator VJP runs
/// for the rows that use a given direction, and one batched VJP runs over the rows that fall
/// back to a random one.
pub fn collect_with_directions<T: Task + ?Sized>(
    task: &T,
    states: ArrayView2<f32>,
    actions: ArrayView2<f32>,
    next: Option<ArrayView2<f32>>,
    spec: &TargetSpec,
    given: Option<GivenDirections<'_>>,
    rng: &mut SeededRng,
) -> Result<Transitions> {
    let (ds, da) = (task.spec().state_dim, task.spec().act_dim);
    let din = ds + da;
    let n = states.nrows();
    check_shape("collect states", states.shape(), n, ds)?;
    check_shape("collect actions", actions.shape(), n, da)?;
    if spec.form.is_projected() && spec.directions == 0 {
        return Err(Error::config("sobolev.directions", "must be at least 1"));
    }
    let out_std = spec.out_std.clone().unwrap_or_else(|| vec![1.0; ds]);
    let in_std = spec.in_std.clone().unwrap_or_else(|| vec![1.0; din]);
    if out_std.len() != ds || in_std.len() != din {
        return Err(Error::dim(
            "collect direction scales (out, in)",
            format!("({ds}, {din})"),
            format!("({}, {})", out_std.len(), in_std.len()),
        ));
    }
    if let Some(g) = &given {
        check_shape("collect directions", g.u.shape(), n, ds)?;
        if let Some((vs, va)) = &g.vjp {
            check_shape("collect direction VJPs (state)", vs.shape(), n, ds)?;
            check_shape("collect direction VJPs (action)", va.shape(), n, da)?;
        }
    }
    // replaces rows of a drawn u (physical) by the given directions, rescaled; returns
    // each row's scale k (None: the row keeps its random draw)
    let use_given = |u: &mut Array2<f32>| -> Vec<Option<f64>> {
        let Some(g) = &given else {
            return vec![None; n];
        };
        let mut scales = vec![None; n];
        for ((mut row, grow), scale) in u.rows_mut().into_iter().zip(g.u.rows()).zip(&mut scales) {
            let norm2: f64 = grow
                .iter()
                .enumerate()
                .map(|(o, &x)| (x as f64 * out_std[o]).powi(2))
                .sum();
            if !(norm2.is_finite() && norm2 > 0.0) {
                continue;
            }
            let k = (ds as f64 / norm2).sqrt();
            for (o, x) in row.iter_mut().enumerate() {
                // u_n = k·σ_out⊙g, u_phys = u_n/σ_out = k·g
                *x = (grow[o] as f64 * k) as f32;
            }
            *scale = Some(k);
        }
        scales
    };
    let given_vjp = given.as_ref().and_then(|g| g.vjp);
    let (s, a) = (states.as_standard_layout(), actions.as_standard_layout());
    let s_next = next_states(task, s.view(), a.view(), next)?;

    let layout = TargetLayout::new(spec.form, ds, da, spec.directions);
    let (block, k) = (layout.block(), layout.directions);
    let mut targets = Array2::<f32>::zeros((n, layout.width()));
    let mut adj_next = Array2::<f32>::zeros((n, ds));
    let mut adj_s = Array2::<f32>::zeros((n, ds));
    let mut adj_a = Array2::<f32>::zeros((n, da));
    // One batched VJP with adjoint `adj_next`; leaves (∂F/∂(s,a))ᵀ adj_next in adj_s/adj_a.
    let vjp = |adj_next: &Array2<f32>, adj_s: &mut Array2<f32>, adj_a: &mut Array2<f32>| {
        adj_s.fill(0.0);
        adj_a.fill(0.0);
        task.step_vjp(
            s.view(),
            a.view(),
            adj_next.view(),
            adj_s.view_mut(),
            adj_a.view_mut(),
        );
    };
    // The first direction's VJP: the given rows' precomputed VJPs times their scale, one
    // batched VJP over the rows that fell back to a random direction.
    let first_vjp = |scales: &[Option<f64>],
                     adj_next: &Array2<f32>,
                     adj_s: &mut Array2<f32>,
                     adj_a: &mut Array2<f32>| {
        let Some((gs, ga)) = &given_vjp else {
            return vjp(adj_next, adj_s, adj_a);
        };
        let random: Vec<usize> = (0..n).filter(|&r| scales[r].is_none()).collect();
        for (r, k) in scales.iter().enumerate() {
            if let Some(k) = *k {
                for (x, &g) in adj_s.row_mut(r).iter_mut().zip(gs.row(r)) {
                    *x = (g as f64 * k) as f32;
                }
                for (x, &g) in adj_a.row_mut(r).iter_mut().zip(ga.row(r)) {
                    *x = (g as f64 * k) as f32;
                }
            }
        }
        if random.is_empty() {
            return;
        }
        let sub_s = s.select(Axis(0), &random);
        let sub_a = a.select(Axis(0), &random);
        let sub_u = adj_next.select(Axis(0), &random);
        let mut sub_adj_s = Array2::<f32>::zeros((random.len(), ds));
        let mut sub_adj_a = Array2::<f32>::zeros((random.len(), da));
        task.step_vjp(
            sub_s.view(),
            sub_a.view(),
            sub_u.view(),
            sub_adj_s.view_mut(),
            sub_adj_a.view_mut(),
        );
        for (i, &r) in random.iter().enumerate() {
            adj_s.row_mut(r).assign(&sub_adj_s.row(i));
            adj_a.row_mut(r).assign(&sub_adj_a.row(i));
        }
    };
    // Random directions in normalised coordinates, mapped to physical ones.
    let draw_u = |rng: &mut SeededRng, u: &mut Array2<f32>| {
        fill_normal(rng, u.as_slice_mut().expect("contiguous"));
        for mut row in u.rows_mut() {
            for (o, x) in row.iter_mut().enumerate() {
                *x = (*x as f64 / out_std[o]) as f32;
            }
        }
    };
    let (sb, sa) = (spec.beta.0.sqrt(), spec.beta.1.sqrt());
    let draw_v = |rng: &mut SeededRng, v: &mut Array2<f32>| {
        fill_normal(rng, v.as_slice_mut().expect("contiguous"));
        for mut row in v.rows_mut() {
            for (i, x) in row.iter_mut().enumerate() {
                let b = if i < ds { sb } else { sa };
                *x = (*x as f64 * b * in_std[i]) as f32;
            }
        }
    };
    match spec.form {
        SobolevForm::None => {}
        SobolevForm::Full => {
            for o in 0..ds {
                adj_next.fill(0.0);
                adj_next.column_mut(o).fill(1.0);
                vjp(&adj_next, &mut adj_s, &mut adj_a);
                let base = o * din;
                targets.slice_mut(s![.., base..base + ds]).assign(&adj_s);
                targets
                    .slice_mut(s![.., base + ds..base + din])
                    .assign(&adj_a);
            }
        }
        SobolevForm::VjpProj => {
            for j in 0..k {
                draw_u(rng, &mut adj_next);
                if j == 0 {
                    let scales = use_given(&mut adj_next);
                    first_vjp(&scales, &adj_next, &mut adj_s, &mut adj_a);
                } else {
                    vjp(&adj_next, &mut adj_s, &mut adj_a);
                }
                let b = j * block;
                targets.slice_mut(s![.., b..b + ds]).assign(&adj_next);
                targets.slice_mut(s![.., b + ds..b + 2 * ds]).assign(&adj_s);
                targets
                    .slice_mut(s![.., b + 2 * ds..b + ds + din])
                    .assign(&adj_a);
            }
        }
        SobolevForm::JvpProj => {
            let mut v = Array2::<f32>::zeros((n, din));
            let mut jv = Array2::<f32>::zeros((n, ds));
            for j in 0..k {
                draw_v(rng, &mut v);
                task.step_jvp(
                    s.view(),
                    a.view(),
                    v.slice(s![.., ..ds]),
                    v.slice(s![.., ds..]),
                    jv.view_mut(),
                );
                let b = j * block;
                targets.slice_mut(s![.., b..b + din]).assign(&v);
                targets.slice_mut(s![.., b + din..b + din + ds]).assign(&jv);
            }
        }
        SobolevForm::Bilinear => {
            let mut v = Array2::<f32>::zeros((n, din));
            for j in 0..k {
                draw_u(rng, &mut adj_next);
                let scales = if j == 0 {
                    use_given(&mut adj_next)
                } else {
                    vec![None; n]
                };
                draw_v(rng, &mut v);
                if j == 0 {
                    first_vjp(&scales, &adj_next, &mut adj_s, &mut adj_a);
                } else {
                    vjp(&adj_next, &mut adj_s, &mut adj_a);
                }
                let b = j * block;
                targets.slice_mut(s![.., b..b + ds]).assign(&adj_next);
                targets.slice_mut(s![.., b + ds..b + ds + din]).assign(&v);
                for r in 0..n {
                    let mut acc = 0.0f64;
                    for i in 0..din {
                        let w = if i < ds {
                            adj_s[[r, i]]
                        } else {
                            adj_a[[r, i - ds]]
                        };
                        acc += w as f64 * v[[r, i]] as f64;
                    }
                    targets[[r, b + ds + din]] = acc as f32;
                }
            }
        }
    }

    Ok(finite_transitions(
        layout,
        s.to_owned(),
        a.to_owned(),
        s_next,
        targets,
    ))
}

/// [`collect`] for an observation-space model (`model.space = "obs"`): the transitions
/// `(o, a, o′)` with `o = observe(s)` and `o′ = observe(F(s, a))`, and the Jacobian targets
/// with respect to the action only, `∂o′/∂a`, through the observation's VJP and the
/// simulator's step VJP. The observation columns of the targets are zero (they carry no
/// weight: `sobolev.wrt = "action"`). Forms `none`, `full` (one VJP per observation) and
/// `vjp_proj` (random directions u in normalised observation space, scaled by
/// `spec.out_std`, which is then the observation model's σ_out). `next`, when given, holds
/// the simulated `F(s, a)`.
pub fn collect_observed<T: Task + ?Sized>(
    task: &T,
    states: ArrayView2<f32>,
    actions: ArrayView2<f32>,
    next: Option<ArrayView2<f32>>,
    spec: &TargetSpec,
    rng: &mut SeededRng,
) -> Result<Transitions> {
    let ts = task.spec();
    let (ds, od, da) = (ts.state_dim, ts.obs_dim, ts.act_dim);
    let n = states.nrows();
    check_shape("collect states", states.shape(), n, ds)?;
    check_shape("collect actions", actions.shape(), n, da)?;
    if spec.form.is_projected() && spec.directions == 0 {
        return Err(Error::config("sobolev.directions", "must be at least 1"));
    }
    if !matches!(
        spec.form,
        SobolevForm::None | SobolevForm::Full | SobolevForm::VjpProj
    ) {
        return Err(Error::config(
            "space",
            format!("observation-space targets of form {:?}", spec.form),
        ));
    }
    let out_std = spec.out_std.clone().unwrap_or_else(|| vec![1.0; od]);
    if out_std.len() != od {
        return Err(Error::dim(
            "collect direction scales (out)",
            od,
            out_std.len(),
        ));
    }
    let (s, a) = (states.as_standard_layout(), actions.as_standard_layout());
    let s_next = next_states(task, s.view(), a.view(), next)?;
    let mut o = Array2::<f32>::zeros((n, od));
    let mut o_next = Array2::<f32>::zeros((n, od));
    task.observe(s.view(), o.view_mut());
    task.observe(s_next.view(), o_next.view_mut());

    let layout = TargetLayout::new(spec.form, od, da, spec.directions);
    let (block, k, din) = (layout.block(), layout.directions, od + da);
    let mut targets = Array2::<f32>::zeros((n, layout.width()));
    let mut adj_s_next = Array2::<f32>::zeros((n, ds));
    let mut adj_s = Array2::<f32>::zeros((n, ds));
    let mut adj_a = Array2::<f32>::zeros((n, da));
    // (∂o′/∂a)ᵀ u for a batch of directions u on o′
    let mut vjp = |u: &Array2<f32>, adj_a: &mut Array2<f32>| {
        adj_s_next.fill(0.0);
        task.observe_vjp(s_next.view(), u.view(), adj_s_next.view_mut());
        adj_s.fill(0.0);
        adj_a.fill(0.0);
        task.step_vjp(
            s.view(),
            a.view(),
            adj_s_next.view(),
            adj_s.view_mut(),
            adj_a.view_mut(),
        );
    };
    let mut u = Array2::<f32>::zeros((n, od));
    match spec.form {
        SobolevForm::Full => {
            for out in 0..od {
                u.fill(0.0);
                u.column_mut(out).fill(1.0);
                vjp(&u, &mut adj_a);
                let base = out * din + od;
                targets.slice_mut(s![.., base..base + da]).assign(&adj_a);
            }
        }
        SobolevForm::VjpProj => {
            for j in 0..k {
                fill_normal(rng, u.as_slice_mut().expect("contiguous"));
                for mut row in u.rows_mut() {
                    for (c, x) in row.iter_mut().enumerate() {
                        *x = (*x as f64 / out_std[c]) as f32;
                    }
                }
                vjp(&u, &mut adj_a);
                let b = j * block;
                targets.slice_mut(s![.., b..b + od]).assign(&u);
                targets
                    .slice_mut(s![.., b + 2 * od..b + od + din])
                    .assign(&adj_a);
            }
        }
        _ => {}
    }
    Ok(finite_transitions(layout, o, a.to_owned(), o_next, targets))
}

/// The transitions whose state, action, next state and targets are all finite (every
/// target filter drops the others; clipping and Huber act in the loss), with the count
/// of those dropped.
fn finite_transitions(
    layout: TargetLayout,
    s: Array2<f32>,
    a: Array2<f32>,
    s_next: Array2<f32>,
    targets: Array2<f32>,
) -> Transitions {
    let finite = |row: ndarray::ArrayView1<f32>| row.iter().all(|x| x.is_finite());
    let n = s.nrows();
    let keep: Vec<usize> = (0..n)
        .filter(|&r| {
            finite(s.row(r)) && finite(a.row(r)) && finite(s_next.row(r)) && finite(targets.row(r))
        })
        .collect();
    let dropped = n - keep.len();
    let pick = |m: Array2<f32>| {
        if dropped == 0 {
            m
        } else {
            m.select(Axis(0), &keep)
        }
    };
    Transitions {
        layout,
        s: pick(s),
        a: pick(a),
        s_next: pick(s_next),
        targets: pick(targets),
        dropped,
    }
}

/// A FIFO of transitions with their targets: once `capacity` is reached, each new
/// transition overwrites the oldest. Storage grows with use up to the capacity. Logical
/// index 0 is the oldest transition kept.
#[derive(Clone, Debug)]
pub struct TransitionBuffer {
    layout: TargetLayout,
    capacity: usize,
    s: Vec<f32>,
    a: Vec<f32>,
    s_next: Vec<f32>,
    targets: Vec<f32>,
    len: usize,
    /// Physical index of the oldest transition once full (0 before).
    start: usize,
    pushed: u64,
    dropped: u64,
}

/// One transition of a [`TransitionBuffer`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransitionRef<'a> {
    /// State.
    pub s: &'a [f32],
    /// Action.
    pub a: &'a [f32],
    /// Next state.
    pub s_next: &'a [f32],
    /// Target row.
    pub targets: &'a [f32],
}

impl TransitionBuffer {
    /// An empty buffer for targets of `layout`, holding at most `capacity` transitions.
    pub fn new(layout: TargetLayout, capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::config("buffer_capacity", "must be at least 1"));
        }
        Ok(TransitionBuffer {
            layout,
            capacity,
            s: Vec::new(),
            a: Vec::new(),
            s_next: Vec::new(),
            targets: Vec::new(),
            len: 0,
            start: 0,
            pushed: 0,
            dropped: 0,
        })
    }

    /// The target layout every pushed batch must have.
    pub fn layout(&self) -> TargetLayout {
        self.layout
    }
    /// Maximum number of transitions kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Number of transitions kept.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Transitions pushed since creation (kept or since overwritten).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }
    /// Transitions dropped by the target filter in the batches pushed so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Sets the `pushed` and `dropped` counters (restoring a buffer from a checkpoint).
    pub(crate) fn set_counters(&mut self, pushed: u64, dropped: u64) {
        self.pushed = pushed;
        self.dropped = dropped;
    }

    fn physical(&self, i: usize) -> usize {
        (self.start + i) % self.capacity
    }

    /// Appends a batch (oldest first), evicting the oldest transitions beyond capacity.
    pub fn push(&mut self, batch: &Transitions) -> Result<()> {
        if batch.layout != self.layout {
            return Err(Error::Incompatible(format!(
                "buffer holds {:?}, batch has {:?}",
                self.layout, batch.layout
            )));
        }
        let (ds, da, w) = (
            self.layout.state_dim,
            self.layout.action_dim,
            self.layout.width(),
        );
        for r in 0..batch.len() {
            let rows = [
                (&mut self.s, batch.s.row(r), ds),
                (&mut self.a, batch.a.row(r), da),
                (&mut self.s_next, batch.s_next.row(r), ds),
                (&mut self.targets, batch.targets.row(r), w),
            ];
            if self.len < self.capacity {
                for (store, row, _) in rows {
                    store.extend(row.iter());
                }
                self.len += 1;
            } else {
                let p = self.start;
                for (store, row, width) in rows {
                    for (d, v) in store[p * width..(p + 1) * width].iter_mut().zip(row.iter()) {
                        *d = *v;
                    }
                }
                self.start = (self.start + 1) % self.capacity;
            }
        }
        self.pushed += batch.len() as u64;
        self.dropped += batch.dropped as u64;
        Ok(())
    }

    /// Transition `i` (0 = oldest kept), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<TransitionRef<'_>> {
        if i >= self.len {
            return None;
        }
        let p = self.physical(i);
        let (ds, da, w) = (
            self.layout.state_dim,
            self.layout.action_dim,
            self.layout.width(),
        );
        Some(TransitionRef {
            s: &self.s[p * ds..(p + 1) * ds],
            a: &self.a[p * da..(p + 1) * da],
            s_next: &self.s_next[p * ds..(p + 1) * ds],
            targets: &self.targets[p * w..(p + 1) * w],
        })
    }

    /// Copies the transitions at logical `indices` into a batch.
    pub fn gather(&self, indices: &[usize]) -> Result<Transitions> {
        let (ds, da, w) = (
            self.layout.state_dim,
            self.layout.action_dim,
            self.layout.width(),
        );
        let n = indices.len();
        let mut s = Array2::zeros((n, ds));
        let mut a = Array2::zeros((n, da));
        let mut s_next = Array2::zeros((n, ds));
        let mut targets = Array2::zeros((n, w));
        for (r, &i) in indices.iter().enumerate() {
            let t = self
                .get(i)
                .ok_or_else(|| Error::dim("buffer index", format!("< {}", self.len), i))?;
            for (dst, src) in [
                (&mut s, t.s),
                (&mut a, t.a),
                (&mut s_next, t.s_next),
                (&mut targets, t.targets),
            ] {
                for (d, v) in dst.row_mut(r).iter_mut().zip(src) {
                    *d = *v;
                }
            }
        }
        Transitions::from_parts(self.layout, s, a, s_next, targets)
    }

    /// All transitions kept, oldest first.
    pub fn to_transitions(&self) -> Transitions {
        let all: Vec<usize> = (0..self.len).collect();
        self.gather(&all).expect("indices in range")
    }
}

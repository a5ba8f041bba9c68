//! The cloth model (lattice, springs, state) and one substep: forward over [`Real`], and
//! its hand-written adjoint in `f64`, stage by stage.

use super::params::ClothParams;
use diff_core::{Real, Result};
use serde::{Deserialize, Serialize};

/// A 3-vector.
pub type V3<T> = [T; 3];

/// DaXBench's 8 lattice neighbour offsets `(di, dj)`, in its order: 4 structural, then
/// 4 shear springs (no bending springs).
pub const LINKS: [[isize; 2]; 8] = [
    [-1, 0],
    [1, 0],
    [0, -1],
    [0, 1],
    [-1, -1],
    [1, -1],
    [-1, 1],
    [1, 1],
];

/// Squared spring length below which DaXBench clamps it (`clip(‖r‖², 1e-12, ∞)`), so the
/// length used is at least `1e-6` and `r/‖r‖` never divides by zero.
pub const MIN_LEN_SQ: f64 = 1e-12;

/// Where the gripper starts (DaXBench's `primitive0` at reset).
pub const GRIPPER_START: V3<f64> = [0.5, 0.5, 0.5];

/// Where a stage records the discrete decisions it takes on primal values (one byte per
/// decision, in a fixed order): two inputs with the same record lie in the same smooth
/// piece of the stage. `None` records nothing.
pub type Kinks<'a> = Option<&'a mut Vec<u8>>;

#[inline(always)]
fn rec(k: &mut Kinks<'_>, b: u8) {
    if let Some(k) = k {
        k.push(b);
    }
}

/// `clip(x, lo, hi)` branching on the primal value; the derivative is 1 inside the closed
/// interval `[lo, hi]` and 0 strictly outside (one-sided: a value exactly on a bound
/// passes its derivative through). Returns the clip state: 0 inside, 1 below, 2 above.
#[inline(always)]
fn clip<T: Real>(x: T, lo: f64, hi: f64) -> (T, u8) {
    let r = x.re();
    if r < lo {
        (T::cst(lo), 1)
    } else if r > hi {
        (T::cst(hi), 2)
    } else {
        (x, 0)
    }
}

/// The derivative of [`clip`] at the primal value `x`.
#[inline(always)]
fn clip_d(x: f64, lo: f64, hi: f64) -> f64 {
    if x < lo || x > hi {
        0.0
    } else {
        1.0
    }
}

/// A directed half-spring: the force on particle `i` from its neighbour `j`.
/// Every spring appears twice, once from each end, as in DaXBench (each particle sums
/// its own 8 links), so the two halves are equal and opposite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spring {
    /// The particle the force acts on.
    pub i: usize,
    /// Its neighbour.
    pub j: usize,
    /// Rest length `L₀`.
    pub rest: f64,
}

/// The state between substeps: particle positions and velocities (particles numbered in
/// row-major mask order) and the gripper centre.
#[derive(Clone, Debug, PartialEq)]
pub struct ClothState<T> {
    /// Positions.
    pub x: Vec<V3<T>>,
    /// Velocities.
    pub v: Vec<V3<T>>,
    /// Gripper (suction sphere) centre.
    pub gripper: V3<T>,
}

impl<T: Real> ClothState<T> {
    /// The same state in another scalar type (through the primal values: tangents drop).
    pub fn cast<U: Real>(&self) -> ClothState<U> {
        let c = |a: &V3<T>| a.map(|t| U::cst(t.re()));
        ClothState {
            x: self.x.iter().map(c).collect(),
            v: self.v.iter().map(c).collect(),
            gripper: c(&self.gripper),
        }
    }
}

/// The adjoint (cotangent) of a [`ClothState`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateAdj {
    /// Of the positions.
    pub x: Vec<V3<f64>>,
    /// Of the velocities.
    pub v: Vec<V3<f64>>,
    /// Of the gripper centre.
    pub gripper: V3<f64>,
}

impl StateAdj {
    /// The zero adjoint for `n` particles.
    pub fn zeros(n: usize) -> Self {
        Self {
            x: vec![[0.0; 3]; n],
            v: vec![[0.0; 3]; n],
            gripper: [0.0; 3],
        }
    }
}

/// What the gripper does during one substep: its displacement `d` (already clipped and
/// divided by the substep count) and its suction `s` (DaXBench's `action[3]`): particles
/// within the radius get `v ← s·v` and `x ← x + (1 − s)·d`, so `s = 0` grasps (the
/// particle follows the gripper with zero velocity) and `s = 1` leaves them free.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GripperCmd<T> {
    /// Displacement this substep.
    pub d: V3<T>,
    /// Suction (0: grasp, 1: open). Not differentiated.
    pub suction: f64,
}

/// What the reverse sweep does to the state cotangent at every substep (`tasks.md` §8,
/// item 27b: through a 2000-substep pick-and-place the raw gradient reaches ~1e28).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum GradTreatment {
    /// The exact gradient (tests, short spans).
    #[default]
    Raw,
    /// DaXBench's cloth `norm_grad`: at the end of every substep and again after the
    /// gripper stage, each cotangent leaf (x, v, and at the end the gripper) is divided by
    /// its norm, NaN/∞ set to 0, and divided by the particle count, so each has norm
    /// `1/n_particles`. (DaXBench also normalises after its second, parked gripper,
    /// which touches no particle, so that repeat is a no-op here.)
    DaxbenchNormalize,
    /// At the end of every substep, NaN/∞ are set to 0 and the state cotangent (x, v and
    /// gripper together) is rescaled to global norm `≤ c` when it is larger.
    ClipNorm(f64),
}

impl std::str::FromStr for GradTreatment {
    type Err = String;

    /// `raw`, `daxbench` or `clip:C` (the command-line spelling of the diagnostics).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(GradTreatment::Raw),
            "daxbench" => Ok(GradTreatment::DaxbenchNormalize),
            c => match c.strip_prefix("clip:").map(str::parse::<f64>) {
                Some(Ok(v)) if v > 0.0 => Ok(GradTreatment::ClipNorm(v)),
                _ => Err(format!(
                    "unknown gradient treatment {s:?} (raw, daxbench, clip:C with C > 0)"
                )),
            },
        }
    }
}

/// DaXBench's normalisation of one leaf: `g/‖g‖` with NaN/∞ → 0, then `/count`.
fn normalise_leaf(g: &mut [f64], count: f64) {
    let n = g.iter().map(|x| x * x).sum::<f64>().sqrt();
    for x in g {
        let y = *x / n;
        *x = if y.is_finite() { y / count } else { 0.0 };
    }
}

/// A cloth model: the parameters, the particles' lattice sites and the springs.
#[derive(Clone, Debug)]
pub struct Cloth {
    params: ClothParams,
    sites: Vec<[usize; 2]>,
    springs: Vec<Spring>,
}

impl Cloth {
    /// Validates the parameters and builds the springs.
    ///
    /// Springs follow DaXBench exactly: for every particle and each of the 8 [`LINKS`],
    /// the neighbour site is clamped to the lattice (`clip(j, 0, N−1)`); links that clamp
    /// back onto the particle itself, and links to unmasked sites, are dropped; the rest
    /// length is `spacing·‖Δsite‖` of the clamped sites. Consequently a particle on the
    /// lattice border gets a duplicate of a structural spring (e.g. at row 0 the links
    /// (−1, ±1) clamp onto (0, ±1)); the duplicates come in equal and opposite pairs, so
    /// momentum is still conserved. Masks away from the border (all DaXBench tasks)
    /// have none.
    pub fn new(params: ClothParams) -> Result<Self> {
        params.validate()?;
        let n = params.n;
        let mut index = vec![usize::MAX; n * n];
        let mut sites = Vec::with_capacity(params.n_particles());
        for a in 0..n {
            for b in 0..n {
                if params.mask[a * n + b] {
                    index[a * n + b] = sites.len();
                    sites.push([a, b]);
                }
            }
        }
        let mut springs = Vec::with_capacity(8 * sites.len());
        let hi = (n - 1) as isize;
        for (p, &[a, b]) in sites.iter().enumerate() {
            for [da, db] in LINKS {
                let a2 = (a as isize + da).clamp(0, hi) as usize;
                let b2 = (b as isize + db).clamp(0, hi) as usize;
                if (a2, b2) == (a, b) || index[a2 * n + b2] == usize::MAX {
                    continue;
                }
                let (ea, eb) = (a2 as f64 - a as f64, b2 as f64 - b as f64);
                springs.push(Spring {
                    i: p,
                    j: index[a2 * n + b2],
                    rest: params.spacing * (ea * ea + eb * eb).sqrt(),
                });
            }
        }
        Ok(Self {
            params,
            sites,
            springs,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &ClothParams {
        &self.params
    }

    /// Number of particles.
    pub fn n_particles(&self) -> usize {
        self.sites.len()
    }

    /// Lattice site `(i, j)` of every particle.
    pub fn sites(&self) -> &[[usize; 2]] {
        &self.sites
    }

    /// The directed half-springs, grouped by the particle they act on.
    pub fn springs(&self) -> &[Spring] {
        &self.springs
    }

    /// The rest state: site `(i, j)` at `(i·h, 0, (N − j)·h)` (DaXBench's reset, before
    /// its random xz shift), at rest, flat on the ground; gripper at [`GRIPPER_START`].
    pub fn initial_state<T: Real>(&self) -> ClothState<T> {
        let h = self.params.spacing;
        let n = self.params.n as f64;
        ClothState {
            x: self
                .sites
                .iter()
                .map(|&[a, b]| [T::cst(a as f64 * h), T::zero(), T::cst((n - b as f64) * h)])
                .collect(),
            v: vec![[T::zero(); 3]; self.sites.len()],
            gripper: GRIPPER_START.map(T::cst),
        }
    }

    // ------------------------------------------------------------------ springs

    /// Spring forces: `F_i = Σ_{i→j} k·r/ℓ·(ℓ − L₀)/L₀` with `r = x_j − x_i` and
    /// `ℓ = √max(‖r‖², 1e-12)` (overwrites `f`).
    ///
    /// Kink: below `‖r‖² = 1e-12` the length is the constant 1e-6 and its derivative
    /// is zero (recorded per spring: 1 clamped, 0 not).
    pub fn spring_forces<T: Real>(&self, x: &[V3<T>], f: &mut [V3<T>], mut kinks: Kinks<'_>) {
        let k = self.params.stiffness;
        for fi in f.iter_mut() {
            *fi = [T::zero(); 3];
        }
        for s in &self.springs {
            let r: V3<T> = std::array::from_fn(|c| x[s.j][c] - x[s.i][c]);
            let q = r[0] * r[0] + r[1] * r[1] + r[2] * r[2];
            let len = if q.re() < MIN_LEN_SQ {
                rec(&mut kinks, 1);
                T::cst(MIN_LEN_SQ.sqrt())
            } else {
                rec(&mut kinks, 0);
                q.sqrt()
            };
            let c = T::cst(k) * (len - T::cst(s.rest)) / (len * T::cst(s.rest));
            for (fc, rc) in f[s.i].iter_mut().zip(r) {
                *fc += c * rc;
            }
        }
    }

    /// Adjoint of [`Self::spring_forces`]: adds `(∂F/∂x)ᵀ·adj_f` to `adj_x`.
    pub fn spring_forces_vjp(&self, x: &[V3<f64>], adj_f: &[V3<f64>], adj_x: &mut [V3<f64>]) {
        let k = self.params.stiffness;
        for s in &self.springs {
            let r: V3<f64> = std::array::from_fn(|c| x[s.j][c] - x[s.i][c]);
            let q = dot(&r, &r);
            let a = &adj_f[s.i];
            let (len, clamped) = if q < MIN_LEN_SQ {
                (MIN_LEN_SQ.sqrt(), true)
            } else {
                (q.sqrt(), false)
            };
            // F = c(ℓ)·r with c = k(ℓ − L)/(ℓL); dc/dℓ = k/ℓ², dℓ/dr = r/ℓ
            let c = k * (len - s.rest) / (len * s.rest);
            let w = if clamped {
                0.0
            } else {
                k * dot(a, &r) / (len * len * len)
            };
            for cc in 0..3 {
                let g = c * a[cc] + w * r[cc];
                adj_x[s.j][cc] += g;
                adj_x[s.i][cc] -= g;
            }
        }
    }

    // ------------------------------------------------------------------ friction

    /// Ground friction (in place on the forces `f`, which include gravity), DaXBench's
    /// branch structure, on particles with `x_y ≤ small_num` (the position at the start
    /// of the substep); `v` is the velocity after the gravity kick (only its x, z are
    /// read). With `μF = μ·max(−F_y, 0)` and `sV = √(v_x² + v_z² + small_num)`:
    /// - dynamic (`sV > static_speed`): `F_xz −= μF·v_xz/sV`;
    /// - static, `μF > sF` with `sF = √(F_x² + F_z² + small_num)`: `F_xz = 0`;
    /// - static otherwise: `F_xz ← (1 − μF/sF)·F_xz`.
    ///
    /// Kinks (all on primal values, one record per particle: 0 no contact, else
    /// `1 + [F_y < 0] + 2·mode` with mode 0 dynamic, 1 static-zero, 2 static-scaled):
    /// the contact onset at `y = small_num` (no derivative w.r.t. `y`); `max(−F_y, 0)`,
    /// whose derivative is `−μ` for `F_y < 0` and 0 for `F_y ≥ 0`; the dynamic/static
    /// switch; the static `μF > sF` switch (zero derivative in the zero branch).
    pub fn friction<T: Real>(
        &self,
        x: &[V3<T>],
        v: &[V3<T>],
        f: &mut [V3<T>],
        mut kinks: Kinks<'_>,
    ) {
        let p = &self.params;
        let eps = T::cst(p.small_num);
        for ((xi, vi), fi) in x.iter().zip(v).zip(f.iter_mut()) {
            if xi[1].re() > p.small_num {
                rec(&mut kinks, 0);
                continue;
            }
            let pushed = fi[1].re() < 0.0;
            let muf = if pushed {
                -fi[1] * T::cst(p.mu)
            } else {
                T::zero()
            };
            let sv = (vi[0] * vi[0] + vi[2] * vi[2] + eps).sqrt();
            let mode = if sv.re() > p.static_speed {
                fi[0] -= muf * vi[0] / sv;
                fi[2] -= muf * vi[2] / sv;
                0
            } else {
                let sf = (fi[0] * fi[0] + fi[2] * fi[2] + eps).sqrt();
                if muf.re() > sf.re() {
                    fi[0] = T::zero();
                    fi[2] = T::zero();
                    1
                } else {
                    let r = T::one() - muf / sf;
                    fi[0] *= r;
                    fi[2] *= r;
                    2
                }
            };
            rec(&mut kinks, 1 + pushed as u8 + 2 * mode);
        }
    }

    /// Adjoint of [`Self::friction`]: `f_in` are the forces before friction; on entry
    /// `adj_f` holds the adjoint of the forces after it, on return that of `f_in`;
    /// the adjoint of `v` is added to `adj_v`.
    pub fn friction_vjp(
        &self,
        x: &[V3<f64>],
        v: &[V3<f64>],
        f_in: &[V3<f64>],
        adj_f: &mut [V3<f64>],
        adj_v: &mut [V3<f64>],
    ) {
        let p = &self.params;
        let eps = p.small_num;
        for i in 0..x.len() {
            if x[i][1] > eps {
                continue;
            }
            let (fi, vi) = (&f_in[i], &v[i]);
            let a = adj_f[i];
            let pushed = fi[1] < 0.0;
            let muf = if pushed { -fi[1] * p.mu } else { 0.0 };
            let dmuf = if pushed { -p.mu } else { 0.0 };
            let sv = (vi[0] * vi[0] + vi[2] * vi[2] + eps).sqrt();
            let adj_muf;
            if sv > p.static_speed {
                // F_t = F0_t − μF·u, u = v_t/sV, du = (dv_t − v_t (v_t·dv_t)/sV²)/sV
                let (ux, uz) = (vi[0] / sv, vi[2] / sv);
                adj_muf = -(a[0] * ux + a[2] * uz);
                let vt_a = vi[0] * a[0] + vi[2] * a[2];
                let s = -muf / sv;
                adj_v[i][0] += s * (a[0] - vi[0] * vt_a / (sv * sv));
                adj_v[i][2] += s * (a[2] - vi[2] * vt_a / (sv * sv));
                // F0_x, F0_z pass through unchanged
            } else {
                let sf = (fi[0] * fi[0] + fi[2] * fi[2] + eps).sqrt();
                if muf > sf {
                    adj_muf = 0.0;
                    adj_f[i][0] = 0.0;
                    adj_f[i][2] = 0.0;
                } else {
                    // F_t = R·F0_t, R = 1 − μF/sF, ∂R/∂F0_t = μF·F0_t/sF³
                    let r = 1.0 - muf / sf;
                    let adj_r = a[0] * fi[0] + a[2] * fi[2];
                    adj_muf = -adj_r / sf;
                    let w = adj_r * muf / (sf * sf * sf);
                    adj_f[i][0] = r * a[0] + w * fi[0];
                    adj_f[i][2] = r * a[2] + w * fi[2];
                }
            }
            adj_f[i][1] = a[1] + adj_muf * dmuf;
        }
    }

    // ------------------------------------------------------------------ integration

    /// `v ← (v + F·dt)·exp(−damping·dt)`.
    pub fn integrate<T: Real>(&self, v: &mut [V3<T>], f: &[V3<T>]) {
        let dt = T::cst(self.params.dt);
        let e = T::cst(self.damping_factor());
        for (vi, fi) in v.iter_mut().zip(f) {
            for c in 0..3 {
                vi[c] += fi[c] * dt;
                vi[c] *= e;
            }
        }
    }

    /// Adjoint of [`Self::integrate`] (linear): on entry `adj_v` holds the adjoint of the
    /// new velocities, on return that of the old ones; the forces' adjoint is added to
    /// `adj_f`.
    pub fn integrate_vjp(&self, adj_v: &mut [V3<f64>], adj_f: &mut [V3<f64>]) {
        let dt = self.params.dt;
        let e = self.damping_factor();
        for (av, af) in adj_v.iter_mut().zip(adj_f.iter_mut()) {
            for c in 0..3 {
                av[c] *= e;
                af[c] += av[c] * dt;
            }
        }
    }

    /// `exp(−damping·dt)`.
    pub fn damping_factor(&self) -> f64 {
        (-self.params.damping * self.params.dt).exp()
    }

    // ------------------------------------------------------------------ gripper

    /// Whether the particle at `x` is inside the gripper sphere centred at `p`
    /// (`‖x − p‖ ≤ radius`, on primal values).
    pub fn in_gripper<T: Real>(&self, x: &V3<T>, p: &V3<T>) -> bool {
        let d2: f64 = (0..3).map(|c| (x[c].re() - p[c].re()).powi(2)).sum();
        d2.sqrt() <= self.params.gripper_radius
    }

    /// The suction gripper (DaXBench's `primitive_collision_func`): particles with
    /// `‖x − p‖ ≤ radius` (positions at the start of the substep) get `v ← s·v` and
    /// `x ← x + (1 − s)·d`; then the gripper moves, `p ← clip(p + d, 0, 1)`.
    ///
    /// An open gripper (`s = 1`) leaves every particle as it is, so it is skipped.
    ///
    /// Kinks: which particles are inside is decided on primal values, so the mask has no
    /// derivative (neither w.r.t. `x` nor `p`; recorded per particle, 1 when inside a
    /// gripper that is not open); the gripper clip (recorded per component, 0 inside,
    /// 1 below, 2 above; derivative 1 on the closed interval, 0 strictly outside).
    pub fn gripper<T: Real>(
        &self,
        x: &mut [V3<T>],
        v: &mut [V3<T>],
        p: &mut V3<T>,
        cmd: &GripperCmd<T>,
        mut kinks: Kinks<'_>,
    ) {
        let s = T::cst(cmd.suction);
        let keep = T::cst(1.0 - cmd.suction);
        let acts = cmd.suction != 1.0;
        for (xi, vi) in x.iter_mut().zip(v.iter_mut()) {
            let inside = acts && self.in_gripper(xi, p);
            rec(&mut kinks, inside as u8);
            if inside {
                for c in 0..3 {
                    vi[c] = s * vi[c];
                    xi[c] += cmd.d[c] * keep;
                }
            }
        }
        for (pc, &dc) in p.iter_mut().zip(&cmd.d) {
            let (moved, k) = clip(*pc + dc, 0.0, 1.0);
            rec(&mut kinks, k);
            *pc = moved;
        }
    }

    /// Adjoint of [`Self::gripper`] at the primal inputs `x_in`, `p_in`: `adj_x`, `adj_v`
    /// and `adj_p` go from the outputs' adjoints to the inputs' in place; the
    /// displacement's adjoint is added to `adj_d`.
    #[allow(clippy::too_many_arguments)]
    pub fn gripper_vjp(
        &self,
        x_in: &[V3<f64>],
        p_in: &V3<f64>,
        cmd: &GripperCmd<f64>,
        adj_x: &[V3<f64>],
        adj_v: &mut [V3<f64>],
        adj_p: &mut V3<f64>,
        adj_d: &mut V3<f64>,
    ) {
        let keep = 1.0 - cmd.suction;
        let acts = cmd.suction != 1.0;
        for i in 0..x_in.len() {
            if acts && self.in_gripper(&x_in[i], p_in) {
                for c in 0..3 {
                    adj_d[c] += adj_x[i][c] * keep;
                    adj_v[i][c] *= cmd.suction;
                }
            }
        }
        for c in 0..3 {
            let m = clip_d(p_in[c] + cmd.d[c], 0.0, 1.0);
            adj_d[c] += m * adj_p[c];
            adj_p[c] *= m;
        }
    }

    // ------------------------------------------------------------------ clip, advance

    /// `v ← clip(v, ±max_v)`, `x ← clip(x, 0, 1) + dt·v` (the unit box is the ground).
    ///
    /// Kinks: both clips pass the derivative inside the closed interval and zero it
    /// strictly outside (recorded per particle and component: `cx + 4·cv` with `cx`, `cv`
    /// the position's and velocity's clip states, 0 inside, 1 below, 2 above).
    pub fn clip_advance<T: Real>(&self, x: &mut [V3<T>], v: &mut [V3<T>], mut kinks: Kinks<'_>) {
        let p = &self.params;
        let dt = T::cst(p.dt);
        for (xi, vi) in x.iter_mut().zip(v.iter_mut()) {
            let mut kx = [0u8; 3];
            for c in 0..3 {
                let (xc, k) = clip(xi[c], 0.0, 1.0);
                kx[c] = k;
                let (vc, kv) = clip(vi[c], -p.max_v, p.max_v);
                vi[c] = vc;
                xi[c] = xc + dt * vc;
                kx[c] |= kv << 2;
            }
            for k in kx {
                rec(&mut kinks, k);
            }
        }
    }

    /// Adjoint of [`Self::clip_advance`] at the primal inputs: `adj_x`, `adj_v` go from
    /// the outputs' adjoints to the inputs' in place.
    pub fn clip_advance_vjp(
        &self,
        x_in: &[V3<f64>],
        v_in: &[V3<f64>],
        adj_x: &mut [V3<f64>],
        adj_v: &mut [V3<f64>],
    ) {
        let p = &self.params;
        for i in 0..x_in.len() {
            for c in 0..3 {
                let mv = clip_d(v_in[i][c], -p.max_v, p.max_v);
                let mx = clip_d(x_in[i][c], 0.0, 1.0);
                adj_v[i][c] = mv * (adj_v[i][c] + p.dt * adj_x[i][c]);
                adj_x[i][c] *= mx;
            }
        }
    }

    // ------------------------------------------------------------------ substep

    /// One substep, DaXBench's order:
    /// 1. `v_y −= g·dt`;
    /// 2. `F = spring forces − g·ŷ` ([`Self::spring_forces`]). Gravity thus acts twice:
    ///    once as the velocity kick of step 1 and once more through `F·dt` in step 4, so a
    ///    free particle accelerates at `2g` — a fidelity quirk of DaXBench's
    ///    `ClothSimulator.step` (confirmed by running it: `v_y` after 50 free substeps is
    ///    the `2g` prediction), reproduced deliberately;
    /// 3. ground friction ([`Self::friction`]);
    /// 4. `v ← (v + F·dt)·exp(−damping·dt)` ([`Self::integrate`]);
    /// 5. the gripper ([`Self::gripper`]);
    /// 6. `x ← clip(x, 0, 1)`, `v ← clip(v, ±max_v)`, `x += dt·v`
    ///    ([`Self::clip_advance`]).
    ///
    /// Note the ground is only the position clip: nothing zeroes `v_y` on contact, so a
    /// cloth resting on the ground keeps a downward `v_y` (its steady state is
    /// `−2g·dt·e/(1 − e)`, `e = exp(−damping·dt)`, about −0.5 for fold_cloth) and sits
    /// at `y = dt·v_y < 0` between substeps, as in DaXBench.
    ///
    /// `kinks` receives the records of friction, gripper and clip_advance, then springs.
    pub fn substep<T: Real>(&self, s: &mut ClothState<T>, cmd: &GripperCmd<T>, kinks: Kinks<'_>) {
        self.substep_recording(s, cmd, kinks, None);
    }

    /// [`Self::substep`], also recording into `tape` what [`Self::substep_vjp_taped`]
    /// needs, so that the adjoint does not recompute the forward pass.
    pub fn substep_taped(
        &self,
        s: &mut ClothState<f64>,
        cmd: &GripperCmd<f64>,
        tape: &mut ClothTape,
    ) {
        self.substep_recording(s, cmd, None, Some(tape));
    }

    fn substep_recording<T: Real>(
        &self,
        s: &mut ClothState<T>,
        cmd: &GripperCmd<T>,
        mut kinks: Kinks<'_>,
        tape: Option<&mut ClothTape>,
    ) {
        let p = &self.params;
        let mut f = vec![[T::zero(); 3]; s.x.len()];
        for vi in s.v.iter_mut() {
            vi[1] -= T::cst(p.gravity * p.dt);
        }
        let mut spring_kinks = kinks.as_ref().map(|_| Vec::new());
        self.spring_forces(&s.x, &mut f, spring_kinks.as_mut());
        for fi in f.iter_mut() {
            fi[1] -= T::cst(p.gravity);
        }
        let record = |dst: &mut Vec<V3<f64>>, src: &[V3<T>]| {
            dst.clear();
            dst.extend(src.iter().map(|a| a.map(|c| c.re())));
        };
        let mut tape = tape;
        if let Some(t) = tape.as_deref_mut() {
            record(&mut t.f0, &f);
        }
        self.friction(&s.x, &s.v, &mut f, kinks.as_deref_mut());
        self.integrate(&mut s.v, &f);
        self.gripper(
            &mut s.x,
            &mut s.v,
            &mut s.gripper,
            cmd,
            kinks.as_deref_mut(),
        );
        if let Some(t) = tape {
            record(&mut t.x3, &s.x);
            record(&mut t.v3, &s.v);
        }
        self.clip_advance(&mut s.x, &mut s.v, kinks.as_deref_mut());
        if let (Some(k), Some(sk)) = (kinks, spring_kinks) {
            k.extend(sk);
        }
    }

    /// The kink record of [`Self::substep`] at `s` (every discrete decision it takes).
    pub fn substep_kinks<T: Real>(&self, s: &ClothState<T>, cmd: &GripperCmd<T>) -> Vec<u8> {
        let mut k = Vec::new();
        self.substep(&mut s.clone(), cmd, Some(&mut k));
        k
    }

    /// Adjoint of [`Self::substep`] from the state `s_in` before it: on entry `adj` holds
    /// the adjoint of the state after the substep, on return that of `s_in`; the adjoint
    /// of the gripper displacement `cmd.d` is added to `adj_d`. `grad` says what is done
    /// to the cotangents on the way ([`GradTreatment::Raw`] for the exact gradient).
    pub fn substep_vjp(
        &self,
        s_in: &ClothState<f64>,
        cmd: &GripperCmd<f64>,
        adj: &mut StateAdj,
        adj_d: &mut V3<f64>,
        grad: GradTreatment,
    ) {
        // recompute the forward intermediates
        let mut tape = ClothTape::default();
        self.substep_taped(&mut s_in.clone(), cmd, &mut tape);
        self.substep_vjp_taped(s_in, &tape, cmd, adj, adj_d, grad);
    }

    /// [`Self::substep_vjp`] from the tape that [`Self::substep_taped`] recorded while
    /// advancing `s_in` with `cmd`: the same result bit for bit, without recomputing the
    /// forward pass.
    ///
    /// # Panics
    /// If the tape was not recorded on a cloth of this size.
    pub fn substep_vjp_taped(
        &self,
        s_in: &ClothState<f64>,
        tape: &ClothTape,
        cmd: &GripperCmd<f64>,
        adj: &mut StateAdj,
        adj_d: &mut V3<f64>,
        grad: GradTreatment,
    ) {
        let p = &self.params;
        let n = s_in.x.len();
        assert_eq!(
            tape.f0.len(),
            n,
            "the tape was recorded by substep_taped on a cloth of this size"
        );
        let x0 = &s_in.x;
        let mut v1 = s_in.v.clone();
        for vi in v1.iter_mut() {
            vi[1] -= p.gravity * p.dt;
        }
        let (f0, x3, v3) = (&tape.f0, &tape.x3, &tape.v3);

        // backward
        match grad {
            GradTreatment::Raw => {}
            GradTreatment::DaxbenchNormalize => {
                let cnt = n as f64;
                normalise_leaf(adj.x.as_flattened_mut(), cnt);
                normalise_leaf(adj.v.as_flattened_mut(), cnt);
                normalise_leaf(&mut adj.gripper, cnt);
            }
            GradTreatment::ClipNorm(c) => {
                let mut n2 = 0.0;
                for g in adj_leaves(adj) {
                    if !g.is_finite() {
                        *g = 0.0;
                    }
                    n2 += *g * *g;
                }
                let norm = n2.sqrt();
                if norm > c {
                    let sc = c / norm;
                    for g in adj_leaves(adj) {
                        *g *= sc;
                    }
                }
            }
        }
        self.clip_advance_vjp(x3, v3, &mut adj.x, &mut adj.v);
        if grad == GradTreatment::DaxbenchNormalize {
            let cnt = n as f64;
            normalise_leaf(adj.x.as_flattened_mut(), cnt);
            normalise_leaf(adj.v.as_flattened_mut(), cnt);
        }
        self.gripper_vjp(
            x0,
            &s_in.gripper,
            cmd,
            &adj.x,
            &mut adj.v,
            &mut adj.gripper,
            adj_d,
        );
        let mut adj_f = vec![[0.0; 3]; n];
        self.integrate_vjp(&mut adj.v, &mut adj_f);
        self.friction_vjp(x0, &v1, f0, &mut adj_f, &mut adj.v);
        self.spring_forces_vjp(x0, &adj_f, &mut adj.x);
    }
}

/// What one cloth substep's forward pass leaves for its adjoint
/// ([`Cloth::substep_taped`]): the forces before friction and the state after the
/// gripper, before the clip and advance.
#[derive(Clone, Debug, Default)]
pub struct ClothTape {
    f0: Vec<V3<f64>>,
    x3: Vec<V3<f64>>,
    v3: Vec<V3<f64>>,
}

impl ClothTape {
    /// Heap bytes of the recorded intermediates.
    pub fn bytes(&self) -> usize {
        (self.f0.len() + self.x3.len() + self.v3.len()) * std::mem::size_of::<V3<f64>>()
    }
}

/// Every entry of a state adjoint.
fn adj_leaves(adj: &mut StateAdj) -> impl Iterator<Item = &mut f64> {
    adj.x
        .iter_mut()
        .flatten()
        .chain(adj.v.iter_mut().flatten())
        .chain(adj.gripper.iter_mut())
}

fn dot(a: &V3<f64>, b: &V3<f64>) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

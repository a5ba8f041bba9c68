//! 3-D MLS-MPM (DaXBench's `SimpleMPMSimulator`, `../shared/reference/tasks.md` §7.1) with
//! a hand-written adjoint for every stage.
//!
//! One substep, in DaXBench's order:
//! 1. [`MpmModel::particle_stress`]: `F ← (I + dt·C)·F`; plastic particles project their
//!    singular values onto `[1 − 0.25, 1 + 0.45]`; the fixed-corotated Kirchhoff stress
//!    `τ = 2μ(F − R)Fᵀ + λJ(J − 1)I` gives the APIC-MLS affine momentum
//!    `A = −dt·V_p·(4/dx²)·τ + m·C`.
//! 2. [`MpmModel::p2g`]: quadratic B-spline scatter of mass and momentum `m·v + A·(x_i − x_p)`.
//! 3. [`MpmModel::grid_update`]: `v = mv/m + dt·g`, kinematic primitives (signed-distance
//!    coupling), ground friction on the bottom layers, box boundaries.
//! 4. [`MpmModel::g2p`]: gather of `v` and `C = (4/dx²)·Σ w·v_i·(x_i − x_p)ᵀ`, `x ← x + dt·v`.
//!
//! The grid is a local window of `res` cells whose lowest corner is cell `origin` of the
//! `n_grid`-cell unit cube (DaXBench's focus box), so a rope on a 128-grid needs only
//! 64×6×64 nodes.
//!
//! **Liquid.** DaXBench tracks only `J ← J·(1 + dt·tr C)` for liquid particles. Here a
//! liquid particle's `F` is projected after every update onto the isotropic
//! `J^(1/3)·I` with `J = det((I + dt·C)·F)`, which follows the same update to first order
//! in `dt` (exactly the mapped volume) and keeps the shear that a liquid never resists from
//! accumulating in `F` (unprojected, `F` grows without bound under sustained flow, and
//! `det F` then loses all precision: a pour-soup episode overflowed).

//! Derivatives: forward code is generic over [`Real`]; each stage's VJP replays what it
//! needs from its inputs. Kinks (the clamp of plastic singular values, ground friction
//! onset, boundary walls, the primitive's influence threshold) branch on primal values and
//! return the derivative of the branch taken; they are documented where they occur.

use crate::checkpoint::Substepper;
use crate::mat3::{self, M3, V3};
use crate::primitive::{Primitive, PrimitiveState};
use crate::svd::{svd3_lanes, svd3_tol, SvFn, Svd3, SVD_LANES};
use diff_core::{Error, Real, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// Particle material (DaXBench's material ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Material {
    /// Weakly compressible liquid (id 0): `μ = 0`.
    Liquid,
    /// Elastic "jelly" (id 1).
    Elastic,
    /// Elasto-plastic (id 2): singular values clamped to `[plastic_lo, plastic_hi]`.
    Plastic,
}

/// Engine parameters shared by all particles of a scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpmParams {
    /// Cells per unit length of the full domain (`dx = 1/n_grid`).
    pub n_grid: usize,
    /// Lowest cell of the simulated window.
    pub origin: [i64; 3],
    /// Cells of the simulated window per axis.
    pub res: [usize; 3],
    /// Substep length, s.
    pub dt: f64,
    /// Gravity, m/s² (DaXBench: (0, −9.8, 0)).
    pub gravity: [f64; 3],
    /// Young's modulus.
    pub youngs_modulus: f64,
    /// Poisson's ratio.
    pub poisson_ratio: f64,
    /// Density factor: particle mass = density · particle volume `(dx/2)³`.
    pub density: f64,
    /// Plastic singular-value bounds (DaXBench: 1 − 0.25 and 1 + 0.45).
    pub plastic_lo: f64,
    pub plastic_hi: f64,
    /// Coulomb coefficient of the ground (bottom `ground_layers` node layers).
    pub ground_friction: f64,
    /// Node layers above the window's floor that feel the ground (DaXBench: 3).
    pub ground_layers: usize,
    /// Nodes from each window wall inside which velocity into the wall is zeroed (3).
    pub boundary: usize,
    /// λ of liquid particles, not scaled by hardness (DaXBench hard-codes 1 for its pour
    /// tasks, whose E and ν then go unused); `None`: from E and ν like the other materials.
    #[serde(default)]
    pub liquid_lambda: Option<f64>,
}

impl Default for MpmParams {
    fn default() -> Self {
        MpmParams {
            n_grid: 64,
            origin: [0; 3],
            res: [64; 3],
            dt: 1e-4,
            gravity: [0.0, -9.8, 0.0],
            youngs_modulus: 100.0,
            poisson_ratio: 0.1,
            density: 1.0,
            plastic_lo: 1.0 - 0.25,
            plastic_hi: 1.0 + 0.45,
            ground_friction: 0.9,
            ground_layers: 3,
            boundary: 3,
            liquid_lambda: None,
        }
    }
}

/// Per-particle constants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticleMaterial {
    pub material: Material,
    /// Scales μ and λ (DaXBench's hardness, in [0.1, 5]).
    pub hardness: f64,
}

/// The immutable description of one MPM scene: parameters, materials and primitives.
#[derive(Clone, Debug)]
pub struct MpmModel {
    pub params: MpmParams,
    pub particles: Vec<ParticleMaterial>,
    pub primitives: Vec<Primitive>,
    dx: f64,
    inv_dx: f64,
    p_vol: f64,
    p_mass: f64,
    /// (μ, λ) per particle.
    lame: Vec<(f64, f64)>,
}

/// The mutable state of one scene's particles (struct of arrays).
#[derive(Debug, Default, PartialEq)]
pub struct MpmState<T> {
    pub x: Vec<V3<T>>,
    pub v: Vec<V3<T>>,
    /// APIC affine velocity.
    pub c: Vec<M3<T>>,
    /// Deformation gradient.
    pub f: Vec<M3<T>>,
}

impl<T: Clone> Clone for MpmState<T> {
    fn clone(&self) -> Self {
        MpmState {
            x: self.x.clone(),
            v: self.v.clone(),
            c: self.c.clone(),
            f: self.f.clone(),
        }
    }

    /// Field by field, reusing the allocations (the derived one would not).
    fn clone_from(&mut self, o: &Self) {
        self.x.clone_from(&o.x);
        self.v.clone_from(&o.v);
        self.c.clone_from(&o.c);
        self.f.clone_from(&o.f);
    }
}

/// Adjoints of an [`MpmState`] (same layout).
pub type MpmAdj<T> = MpmState<T>;

impl<T: Real> MpmState<T> {
    /// `n` particles at rest at `x` (`v = 0`, `C = 0`, `F = I`).
    pub fn at_rest(x: Vec<V3<T>>) -> Self {
        let n = x.len();
        MpmState {
            x,
            v: vec![[T::zero(); 3]; n],
            c: vec![mat3::zero(); n],
            f: vec![mat3::eye(); n],
        }
    }

    /// All-zero state of `n` particles (an adjoint accumulator).
    pub fn zeros(n: usize) -> Self {
        MpmState {
            x: vec![[T::zero(); 3]; n],
            v: vec![[T::zero(); 3]; n],
            c: vec![mat3::zero(); n],
            f: vec![mat3::zero(); n],
        }
    }

    /// Number of particles.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// Whether there are no particles.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// Packs the state into 24 numbers per particle: x, v, C (row-major), F (row-major).
    pub fn to_flat(&self) -> Vec<T> {
        let mut out = Vec::with_capacity(24 * self.len());
        for p in 0..self.len() {
            out.extend_from_slice(&self.x[p]);
            out.extend_from_slice(&self.v[p]);
            out.extend_from_slice(&mat3::flat(&self.c[p]));
            out.extend_from_slice(&mat3::flat(&self.f[p]));
        }
        out
    }

    /// Inverse of [`Self::to_flat`].
    pub fn from_flat(a: &[T]) -> Self {
        assert_eq!(
            a.len() % 24,
            0,
            "MpmState::from_flat: length not a multiple of 24"
        );
        let n = a.len() / 24;
        let mut s = MpmState::zeros(n);
        for p in 0..n {
            let r = &a[24 * p..24 * (p + 1)];
            s.x[p] = [r[0], r[1], r[2]];
            s.v[p] = [r[3], r[4], r[5]];
            s.c[p] = mat3::unflat(&r[6..15]);
            s.f[p] = mat3::unflat(&r[15..24]);
        }
        s
    }
}

/// Particles below which a substep runs on one thread (the split and the merge of the
/// per-chunk grids cost more than they save).
pub const PARALLEL_MIN_PARTICLES: usize = 4096;
/// Active nodes below which the grid update runs on one thread.
const PARALLEL_MIN_NODES: usize = 4096;
/// Particle chunks scattered into separate grids by P2G on the parallel path; fixed (not
/// the thread count), and summed in chunk order, so results do not depend on the number
/// of threads.
const CHUNKS: usize = 4;

/// The particle indices of chunk `c` of `n` particles.
fn chunk_range(n: usize, c: usize) -> std::ops::Range<usize> {
    let per = n.div_ceil(CHUNKS);
    (c * per).min(n)..((c + 1) * per).min(n)
}

/// A grid accumulator: node masses and momenta with the list of nodes touched since the
/// last [`GridAcc::clear`] (so clearing costs only what was touched).
#[derive(Clone, Debug)]
pub struct GridAcc<T> {
    /// Node masses.
    pub m: Vec<T>,
    /// Node momenta.
    pub v: Vec<V3<T>>,
    /// Touched nodes, in first-touch order.
    pub active: Vec<usize>,
    touched: Vec<bool>,
}

impl<T: Real> GridAcc<T> {
    fn new(nodes: usize) -> Self {
        GridAcc {
            m: vec![T::zero(); nodes],
            v: vec![[T::zero(); 3]; nodes],
            active: Vec::new(),
            touched: vec![false; nodes],
        }
    }

    fn clear(&mut self) {
        for &n in &self.active {
            self.m[n] = T::zero();
            self.v[n] = [T::zero(); 3];
            self.touched[n] = false;
        }
        self.active.clear();
    }

    #[inline]
    fn touch(&mut self, n: usize) {
        if !self.touched[n] {
            self.touched[n] = true;
            self.active.push(n);
        }
    }

    /// Adds `other` into `self` and clears `other`.
    fn absorb(&mut self, other: &mut GridAcc<T>) {
        for i in 0..other.active.len() {
            let n = other.active[i];
            self.touch(n);
            self.m[n] += other.m[n];
            for d in 0..3 {
                self.v[n][d] += other.v[n][d];
            }
        }
        other.clear();
    }
}

/// Grid arrays of one window and the per-particle intermediates of a substep, reused
/// across substeps (no allocation inside a substep).
#[derive(Clone, Debug)]
pub struct MpmScratch<T> {
    /// Node masses and momenta after P2G.
    pub main: GridAcc<T>,
    /// Node velocities after the grid update (valid on `main.active`).
    pub grid_v: Vec<V3<T>>,
    /// Affine momentum per particle (stage 1's output).
    pub affine: Vec<M3<T>>,
    /// Each particle's trial SVD from stage 1 (reused by its adjoint).
    svds: Vec<Option<Svd3>>,
    chunks: Vec<GridAcc<T>>,
    /// The adjoint's replay of the substep's input state (reused, not reallocated).
    replay: MpmState<T>,
    node_out: Vec<V3<T>>,
    node_adj: Vec<(T, V3<T>)>,
    // adjoint buffers (zero outside the active nodes between substeps)
    adj_grid_v: Vec<V3<T>>,
    adj_m: Vec<T>,
    adj_mv: Vec<V3<T>>,
    adj_affine: Vec<M3<T>>,
}

/// The quadratic B-spline stencil of one particle: base node, fractional position and
/// weights per axis.
#[derive(Clone, Copy, Debug)]
pub struct Stencil<T> {
    pub base: [i64; 3],
    /// Position in cell units relative to the base node, in [0.5, 1.5).
    pub fx: V3<T>,
    /// `w[axis][offset]`.
    pub w: [[T; 3]; 3],
    /// `∂w[axis][offset]/∂fx[axis]`.
    pub dw: [[T; 3]; 3],
}

impl MpmModel {
    /// A scene of `particles.len()` particles with the given materials and primitives.
    pub fn new(
        params: MpmParams,
        particles: Vec<ParticleMaterial>,
        primitives: Vec<Primitive>,
    ) -> Result<MpmModel> {
        let bad = |name: &str, reason: String| Error::InvalidParameter {
            name: name.into(),
            reason,
        };
        let p = &params;
        if p.n_grid < 4 {
            return Err(bad("n_grid", format!("{} < 4 cells", p.n_grid)));
        }
        // DaXBench's push-rope window is only 6 nodes high: its 3-node boundary layers
        // then cover every layer, which pins the rope's vertical motion (as in the
        // reference); only a full quadratic stencil is required
        if p.res.iter().any(|&r| r < 3) {
            return Err(bad(
                "res",
                format!("{:?}: every axis needs at least 3 nodes", p.res),
            ));
        }
        if !(p.dt.is_finite() && p.dt > 0.0) {
            return Err(bad("dt", format!("{} is not a positive time", p.dt)));
        }
        if !(p.youngs_modulus.is_finite() && p.youngs_modulus >= 0.0) {
            return Err(bad("youngs_modulus", format!("{} < 0", p.youngs_modulus)));
        }
        if !(p.poisson_ratio > -1.0 && p.poisson_ratio < 0.5) {
            return Err(bad(
                "poisson_ratio",
                format!("{} outside (−1, 0.5)", p.poisson_ratio),
            ));
        }
        if !(p.density.is_finite() && p.density > 0.0) {
            return Err(bad("density", format!("{} is not positive", p.density)));
        }
        if !(p.plastic_lo > 0.0 && p.plastic_lo <= 1.0 && p.plastic_hi >= 1.0) {
            return Err(bad(
                "plastic_lo/plastic_hi",
                format!(
                    "[{}, {}] must contain 1 and stay positive",
                    p.plastic_lo, p.plastic_hi
                ),
            ));
        }
        if p.ground_friction.is_nan() || p.ground_friction < 0.0 {
            return Err(bad("ground_friction", format!("{} < 0", p.ground_friction)));
        }
        if let Some(l) = p.liquid_lambda {
            if !(l.is_finite() && l > 0.0) {
                return Err(bad("liquid_lambda", format!("{l} is not positive")));
            }
        }
        for (i, m) in particles.iter().enumerate() {
            if !(m.hardness.is_finite() && m.hardness > 0.0) {
                return Err(bad(
                    "hardness",
                    format!("particle {i}: {} is not positive", m.hardness),
                ));
            }
        }
        let dx = 1.0 / p.n_grid as f64;
        let (e, nu) = (p.youngs_modulus, p.poisson_ratio);
        let mu0 = e / (2.0 * (1.0 + nu));
        let la0 = e * nu / ((1.0 + nu) * (1.0 - 2.0 * nu));
        let lame = particles
            .iter()
            .map(|m| match (m.material, p.liquid_lambda) {
                (Material::Liquid, Some(l)) => (0.0, l),
                (Material::Liquid, None) => (0.0, la0 * m.hardness),
                _ => (mu0 * m.hardness, la0 * m.hardness),
            })
            .collect();
        let p_vol = (0.5 * dx).powi(3);
        let model = MpmModel {
            p_mass: p_vol * p.density,
            p_vol,
            dx,
            inv_dx: p.n_grid as f64,
            lame,
            params,
            particles,
            primitives,
        };
        model.check_cfl()?;
        Ok(model)
    }

    /// The CFL bound the engine enforces: an elastic wave must not cross a cell in one
    /// substep, `dt ≤ 0.5·dx / c` with `c = sqrt((λ + 2μ)/ρ)` at the stiffest particle.
    pub fn check_cfl(&self) -> Result<()> {
        let rho = self.params.density;
        let stiff = self
            .lame
            .iter()
            .map(|&(mu, la)| la + 2.0 * mu)
            .fold(0.0, f64::max);
        let c = (stiff / rho).sqrt();
        if c > 0.0 {
            let limit = 0.5 * self.dx / c;
            if self.params.dt > limit {
                return Err(Error::InvalidParameter {
                    name: "dt".into(),
                    reason: format!(
                        "{} s violates the CFL bound {limit:.3e} s (wave speed {c:.3} m/s, dx {:.3e})",
                        self.params.dt, self.dx
                    ),
                });
            }
        }
        Ok(())
    }

    /// Cell size.
    pub fn dx(&self) -> f64 {
        self.dx
    }

    /// Mass of one particle.
    pub fn particle_mass(&self) -> f64 {
        self.p_mass
    }

    /// Number of particles.
    pub fn n_particles(&self) -> usize {
        self.particles.len()
    }

    /// Number of grid nodes of the window.
    pub fn n_nodes(&self) -> usize {
        self.params.res.iter().product()
    }

    /// Fresh scratch for this model.
    pub fn scratch<T: Real>(&self) -> MpmScratch<T> {
        let nn = self.n_nodes();
        let parallel = self.n_particles() >= PARALLEL_MIN_PARTICLES;
        MpmScratch {
            main: GridAcc::new(nn),
            grid_v: vec![[T::zero(); 3]; nn],
            affine: vec![mat3::zero(); self.n_particles()],
            svds: vec![None; self.n_particles()],
            chunks: if parallel {
                (0..CHUNKS).map(|_| GridAcc::new(nn)).collect()
            } else {
                Vec::new()
            },
            replay: MpmState::zeros(self.n_particles()),
            node_out: Vec::new(),
            node_adj: Vec::new(),
            adj_grid_v: vec![[T::zero(); 3]; nn],
            adj_m: vec![T::zero(); nn],
            adj_mv: vec![[T::zero(); 3]; nn],
            adj_affine: vec![mat3::zero(); self.n_particles()],
        }
    }

    /// Checks that every particle's stencil lies inside the window's interior (outside
    /// the boundary layers), naming the first particle that does not.
    pub fn check_particles<T: Real>(&self, s: &MpmState<T>) -> Result<()> {
        if s.len() != self.n_particles() {
            return Err(Error::dim("MPM particles", self.n_particles(), s.len()));
        }
        for (i, x) in s.x.iter().enumerate() {
            if x.iter().any(|c| !c.re().is_finite()) {
                return Err(Error::NonFinite {
                    what: format!("position of particle {i}"),
                });
            }
            let st = self.stencil(x);
            for d in 0..3 {
                if st.base[d] < 0 || st.base[d] + 2 >= self.params.res[d] as i64 {
                    return Err(Error::InvalidParameter {
                        name: "particles".into(),
                        reason: format!(
                            "particle {i} at {:?} is outside the grid window (cells {:?} + {:?} of {})",
                            x.map(|c| c.re()),
                            self.params.origin,
                            self.params.res,
                            self.params.n_grid
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The stencil of a particle at `x`.
    pub fn stencil<T: Real>(&self, x: &V3<T>) -> Stencil<T> {
        let mut st = Stencil {
            base: [0; 3],
            fx: [T::zero(); 3],
            w: [[T::zero(); 3]; 3],
            dw: [[T::zero(); 3]; 3],
        };
        for d in 0..3 {
            let xg = x[d] * T::cst(self.inv_dx) - T::cst(self.params.origin[d] as f64);
            let b = (xg.re() - 0.5).floor();
            st.base[d] = b as i64;
            let f = xg - T::cst(b);
            st.fx[d] = f;
            let (a0, a1, a2) = (T::cst(1.5) - f, f - T::one(), f - T::cst(0.5));
            st.w[d] = [
                T::cst(0.5) * a0 * a0,
                T::cst(0.75) - a1 * a1,
                T::cst(0.5) * a2 * a2,
            ];
            st.dw[d] = [-a0, T::cst(-2.0) * a1, a2];
        }
        st
    }

    /// Calls `f(node, offset, axis weights, x_node − x_p)` for every stencil node of `st`
    /// inside the window.
    #[inline]
    fn visit<T: Real>(&self, st: &Stencil<T>, mut f: impl FnMut(usize, [usize; 3], [T; 3], V3<T>)) {
        let dx = T::cst(self.dx);
        for_stencil(|off| {
            if let Some(n) = self.node(&st.base, off) {
                let w3 = [st.w[0][off[0]], st.w[1][off[1]], st.w[2][off[2]]];
                let dpos = std::array::from_fn(|d| (T::cst(off[d] as f64) - st.fx[d]) * dx);
                f(n, off, w3, dpos);
            }
        });
    }

    /// Node index of `base + off`, or `None` outside the window.
    fn node(&self, base: &[i64; 3], off: [usize; 3]) -> Option<usize> {
        let r = self.params.res;
        let i = base[0] + off[0] as i64;
        let j = base[1] + off[1] as i64;
        let k = base[2] + off[2] as i64;
        if i < 0 || j < 0 || k < 0 || i >= r[0] as i64 || j >= r[1] as i64 || k >= r[2] as i64 {
            return None;
        }
        Some((i as usize * r[1] + j as usize) * r[2] + k as usize)
    }

    fn node_coords(&self, n: usize) -> [usize; 3] {
        let r = self.params.res;
        [n / (r[1] * r[2]), (n / r[2]) % r[1], n % r[2]]
    }

    /// World position of node `n`.
    pub fn node_position(&self, n: usize) -> [f64; 3] {
        let c = self.node_coords(n);
        std::array::from_fn(|d| (c[d] as f64 + self.params.origin[d] as f64) * self.dx)
    }

    // ------------------------------------------------------------------ stage 1
    /// Stage 1 for particle `p`: the updated deformation gradient and the affine momentum.
    pub fn particle_stress<T: Real>(&self, p: usize, f: &M3<T>, c: &M3<T>) -> (M3<T>, M3<T>) {
        let (fnew, a, _) = self.particle_stress_svd(p, f, c);
        (fnew, a)
    }

    /// [`Self::particle_stress`], also returning the SVD of `(I + dt·C)·F` when the
    /// material needs one (for the adjoint to reuse).
    fn particle_stress_svd<T: Real>(
        &self,
        p: usize,
        f: &M3<T>,
        c: &M3<T>,
    ) -> (M3<T>, M3<T>, Option<Svd3>) {
        let fnew = self.trial_f(f, c);
        let trial = self
            .needs_svd(p)
            .then(|| svd3_tol(&mat3::re(&fnew), svd_tol::<T>()));
        let (fnew, a) = self.particle_stress_from(p, fnew, c, trial);
        (fnew, a, trial)
    }

    /// The trial deformation gradient `(I + dt·C)·F`.
    fn trial_f<T: Real>(&self, f: &M3<T>, c: &M3<T>) -> M3<T> {
        mat3::add(f, &mat3::scale(&mat3::mul(c, f), T::cst(self.params.dt)))
    }

    /// Whether particle `p`'s material needs the SVD of its trial F (elastic stress or the
    /// plastic projection).
    fn needs_svd(&self, p: usize) -> bool {
        self.lame[p].0 != 0.0 || self.particles[p].material == Material::Plastic
    }

    /// Stage 1 from the trial F `fnew` and its SVD `trial` (present exactly when
    /// [`Self::needs_svd`]): the projected F and the affine momentum.
    fn particle_stress_from<T: Real>(
        &self,
        p: usize,
        mut fnew: M3<T>,
        c: &M3<T>,
        trial: Option<Svd3>,
    ) -> (M3<T>, M3<T>) {
        // one SVD per particle: the plastic projection keeps U and V, so the rotation of
        // the projected F comes from the same decomposition
        let plastic = self.particles[p].material == Material::Plastic;
        let mut svd = trial;
        if let (true, Some(d)) = (plastic, trial) {
            let g = SvFn::clamp_of(d, self.params.plastic_lo, self.params.plastic_hi);
            fnew = g.apply(&fnew);
            svd = Some(g.value_svd());
        }
        if self.particles[p].material == Material::Liquid {
            fnew = liquid_projection(&fnew);
        }
        let tau = self.kirchhoff(p, &fnew, svd);
        let ks = T::cst(-self.params.dt * self.p_vol * 4.0 * self.inv_dx * self.inv_dx);
        let a = mat3::add(&mat3::scale(&tau, ks), &mat3::scale(c, T::cst(self.p_mass)));
        (fnew, a)
    }

    /// Fixed-corotated Kirchhoff stress `2μ(F − R)Fᵀ + λJ(J − 1)I`; `svd` is F's SVD when
    /// already known.
    fn kirchhoff<T: Real>(&self, p: usize, f: &M3<T>, svd: Option<Svd3>) -> M3<T> {
        let (mu, la) = self.lame[p];
        let j = mat3::det(f);
        let mut tau = mat3::zero::<T>();
        if mu != 0.0 {
            let d = svd.unwrap_or_else(|| svd3_tol(&mat3::re(f), svd_tol::<T>()));
            let r = SvFn::rotation_of(d).apply(f);
            tau = mat3::scale(&mat3::mul_bt(&mat3::sub(f, &r), f), T::cst(2.0 * mu));
        }
        let s = T::cst(la) * j * (j - T::one());
        for (i, row) in tau.iter_mut().enumerate() {
            row[i] += s;
        }
        tau
    }

    /// Adjoint of [`Self::particle_stress`]: from the adjoints of `(F_new, A)` to those of
    /// `(F, C)`, accumulated into `adj_f` and `adj_c`.
    #[allow(clippy::too_many_arguments)]
    pub fn particle_stress_vjp<T: Real>(
        &self,
        p: usize,
        f: &M3<T>,
        c: &M3<T>,
        adj_fnew: &M3<T>,
        adj_a: &M3<T>,
        adj_f: &mut M3<T>,
        adj_c: &mut M3<T>,
    ) {
        let ftmp = self.trial_f(f, c);
        let d = self
            .needs_svd(p)
            .then(|| svd3_tol(&mat3::re(&ftmp), svd_tol::<T>()));
        self.particle_stress_vjp_svd(p, f, c, d, adj_fnew, adj_a, adj_f, adj_c);
    }

    /// [`Self::particle_stress_vjp`] given the SVD of `(I + dt·C)·F` that the forward pass
    /// computed (`None` when the material needs none).
    #[allow(clippy::too_many_arguments)]
    fn particle_stress_vjp_svd<T: Real>(
        &self,
        p: usize,
        f: &M3<T>,
        c: &M3<T>,
        d: Option<Svd3>,
        adj_fnew: &M3<T>,
        adj_a: &M3<T>,
        adj_f: &mut M3<T>,
        adj_c: &mut M3<T>,
    ) {
        let dt = T::cst(self.params.dt);
        let ftmp = self.trial_f(f, c);
        // the same decomposition as the forward pass: one SVD, shared by the projection
        // and the rotation
        let (mu, la) = self.lame[p];
        let plastic = self.particles[p].material == Material::Plastic;
        let clamp = d
            .filter(|_| plastic)
            .map(|d| SvFn::clamp_of(d, self.params.plastic_lo, self.params.plastic_hi));
        let liquid = self.particles[p].material == Material::Liquid;
        let fnew = match &clamp {
            Some(g) => g.apply(&ftmp),
            None if liquid => liquid_projection(&ftmp),
            None => ftmp,
        };
        let d_new = clamp.map(|g| g.value_svd()).or(d);
        let ks = T::cst(-self.params.dt * self.p_vol * 4.0 * self.inv_dx * self.inv_dx);
        mat3::add_assign(adj_c, &mat3::scale(adj_a, T::cst(self.p_mass)));
        let adj_tau = mat3::scale(adj_a, ks);
        // τ = 2μ(F − R)Fᵀ + λJ(J − 1)I at F = F_new
        let mut adj_fn = *adj_fnew;
        if let (true, Some(d)) = (mu != 0.0, d_new) {
            let rot = SvFn::rotation_of(d);
            let r = rot.apply(&fnew);
            let two_mu = T::cst(2.0 * mu);
            // d[(F − R)Fᵀ] = (dF − dR)Fᵀ + (F − R)dFᵀ
            let a_f = mat3::mul(&adj_tau, &fnew); // adj_τ·F
            let a_ft = mat3::mul_at(&adj_tau, &mat3::sub(&fnew, &r)); // adj_τᵀ(F − R)
            mat3::add_assign(&mut adj_fn, &mat3::scale(&mat3::add(&a_f, &a_ft), two_mu));
            let adj_r = mat3::scale(&a_f, -two_mu);
            mat3::add_assign(&mut adj_fn, &rot.linear(&adj_r));
        }
        let j = mat3::det(&fnew);
        let adj_j = T::cst(la) * (T::cst(2.0) * j - T::one()) * mat3::trace(&adj_tau);
        mat3::add_assign(&mut adj_fn, &mat3::scale(&mat3::cofactor(&fnew), adj_j));
        let adj_ftmp = match &clamp {
            Some(g) => g.linear(&adj_fn),
            None if liquid => liquid_projection_vjp(&ftmp, &adj_fn),
            None => adj_fn,
        };
        // F_tmp = F + dt·C·F
        mat3::add_assign(adj_f, &adj_ftmp);
        mat3::add_assign(adj_f, &mat3::scale(&mat3::mul_at(c, &adj_ftmp), dt));
        mat3::add_assign(adj_c, &mat3::scale(&mat3::mul_bt(&adj_ftmp, f), dt));
    }

    // ------------------------------------------------------------------ stage 2
    /// Stage 2: scatters mass and momentum of every particle to the grid (`scratch.affine`
    /// holds stage 1's output). Stencil nodes outside the window are skipped
    /// ([`Self::check_particles`] rejects such states before stepping).
    pub fn p2g<T: Real>(&self, s: &MpmState<T>, scratch: &mut MpmScratch<T>) {
        scratch.main.clear();
        let n = s.len();
        if n < PARALLEL_MIN_PARTICLES {
            for p in 0..n {
                self.p2g_particle(s, &scratch.affine, p, &mut scratch.main);
            }
            return;
        }
        let affine = &scratch.affine;
        scratch
            .chunks
            .par_iter_mut()
            .enumerate()
            .for_each(|(c, g)| {
                for p in chunk_range(n, c) {
                    self.p2g_particle(s, affine, p, g);
                }
            });
        // summed in chunk order: the same bits whatever the thread count
        for g in scratch.chunks.iter_mut() {
            scratch.main.absorb(g);
        }
    }

    fn p2g_particle<T: Real>(
        &self,
        s: &MpmState<T>,
        affine: &[M3<T>],
        p: usize,
        g: &mut GridAcc<T>,
    ) {
        let m = T::cst(self.p_mass);
        let st = self.stencil(&s.x[p]);
        let a = affine[p];
        let mv = s.v[p].map(|c| c * m);
        self.visit(&st, |n, _, w3, dpos| {
            let w = w3[0] * w3[1] * w3[2];
            let ad = mat3::mul_vec(&a, &dpos);
            g.touch(n);
            g.m[n] += w * m;
            for d in 0..3 {
                g.v[n][d] += w * (mv[d] + ad[d]);
            }
        });
    }

    /// Adjoint of [`Self::p2g`]: from the grid adjoints (`adj_m`, `adj_mv`, indexed like the
    /// grid) to `adj.{x, v}` and the affine adjoints `adj_affine` (accumulated).
    pub fn p2g_vjp<T: Real>(
        &self,
        s: &MpmState<T>,
        affine: &[M3<T>],
        adj_m: &[T],
        adj_mv: &[V3<T>],
        adj: &mut MpmAdj<T>,
        adj_affine: &mut [M3<T>],
    ) {
        let body = |p: usize, ax: &mut V3<T>, av: &mut V3<T>, aa: &mut M3<T>| {
            self.p2g_particle_vjp(s, affine, adj_m, adj_mv, p, ax, av, aa)
        };
        if s.len() < PARALLEL_MIN_PARTICLES {
            for p in 0..s.len() {
                body(p, &mut adj.x[p], &mut adj.v[p], &mut adj_affine[p]);
            }
        } else {
            adj.x
                .par_iter_mut()
                .zip(adj.v.par_iter_mut())
                .zip(adj_affine.par_iter_mut())
                .enumerate()
                .for_each(|(p, ((ax, av), aa))| body(p, ax, av, aa));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn p2g_particle_vjp<T: Real>(
        &self,
        s: &MpmState<T>,
        affine: &[M3<T>],
        adj_m: &[T],
        adj_mv: &[V3<T>],
        p: usize,
        adj_x: &mut V3<T>,
        adj_v: &mut V3<T>,
        adj_a: &mut M3<T>,
    ) {
        let m = T::cst(self.p_mass);
        let dx = T::cst(self.dx);
        let st = self.stencil(&s.x[p]);
        let a = affine[p];
        let mv = s.v[p].map(|c| c * m);
        let mut adj_fx = [T::zero(); 3];
        let mut wadj = WeightAdj::<T>::default();
        self.visit(&st, |n, off, w3, dpos| {
            let w = w3[0] * w3[1] * w3[2];
            let ad = mat3::mul_vec(&a, &dpos);
            let g = adj_mv[n];
            // grid_m += w·m; grid_mv += w·(m v + A·dpos)
            let mut adj_w = adj_m[n] * m;
            for d in 0..3 {
                adj_w += g[d] * (mv[d] + ad[d]);
                adj_v[d] += w * m * g[d];
            }
            mat3::add_assign(adj_a, &mat3::scale(&mat3::outer(&g, &dpos), w));
            let adj_dpos = mat3::mul_t_vec(&a, &g);
            for d in 0..3 {
                adj_fx[d] -= w * adj_dpos[d] * dx;
            }
            wadj.add(off, &w3, adj_w);
        });
        wadj.finish(&st, &adj_fx, self.inv_dx, adj_x);
    }

    // ------------------------------------------------------------------ stage 3
    /// Stage 3 on every active node: `grid_v` from `grid_{m, mv}` and the primitives'
    /// states for this substep.
    pub fn grid_update<T: Real>(&self, prims: &[PrimitiveState<T>], scratch: &mut MpmScratch<T>) {
        let g = &scratch.main;
        let update = |&n: &usize| self.node_update(n, g.m[n], &g.v[n], prims);
        if g.active.len() < PARALLEL_MIN_NODES {
            scratch.node_out.clear();
            scratch.node_out.extend(g.active.iter().map(update));
        } else {
            g.active
                .par_iter()
                .map(update)
                .collect_into_vec(&mut scratch.node_out);
        }
        for (i, &n) in scratch.main.active.iter().enumerate() {
            scratch.grid_v[n] = scratch.node_out[i];
        }
    }

    /// Stage 3 for node `n` with mass `m` and momentum `mv`.
    pub fn node_update<T: Real>(
        &self,
        n: usize,
        m: T,
        mv: &V3<T>,
        prims: &[PrimitiveState<T>],
    ) -> V3<T> {
        if m.re() <= 0.0 {
            return [T::zero(); 3];
        }
        let dt = T::cst(self.params.dt);
        let mut v: V3<T> = std::array::from_fn(|d| mv[d] / m + dt * T::cst(self.params.gravity[d]));
        let pos = self.node_position(n);
        for (prim, ps) in self.primitives.iter().zip(prims) {
            v = prim.couple(&pos, &v, ps);
        }
        let c = self.node_coords(n);
        if c[1] < self.params.ground_layers && v[1].re() <= 0.0 {
            v = ground_friction(&v, self.params.ground_friction);
        }
        self.boundary(&c, &mut v);
        v
    }

    /// Zeroes velocity components into a wall within `boundary` nodes of it.
    fn boundary<T: Real>(&self, c: &[usize; 3], v: &mut V3<T>) {
        for d in 0..3 {
            if self.hits_wall(c, d, v[d]) {
                v[d] = T::zero();
            }
        }
    }

    /// Whether velocity component `vd` of the node at `c` moves into a wall along axis `d`
    /// within `boundary` nodes of it (by primal value).
    fn hits_wall<T: Real>(&self, c: &[usize; 3], d: usize, vd: T) -> bool {
        let b = self.params.boundary;
        (c[d] < b && vd.re() < 0.0) || (c[d] + b >= self.params.res[d] && vd.re() > 0.0)
    }

    /// Adjoint of [`Self::node_update`]: from `adj_v` to `(adj_m, adj_mv)` (returned) and the
    /// primitives' adjoints (accumulated).
    pub fn node_update_vjp<T: Real>(
        &self,
        n: usize,
        m: T,
        mv: &V3<T>,
        prims: &[PrimitiveState<T>],
        adj_v: &V3<T>,
        adj_prims: &mut [PrimitiveState<T>],
    ) -> (T, V3<T>) {
        if m.re() <= 0.0 {
            return (T::zero(), [T::zero(); 3]);
        }
        let dt = T::cst(self.params.dt);
        let v0: V3<T> = std::array::from_fn(|d| mv[d] / m + dt * T::cst(self.params.gravity[d]));
        let pos = self.node_position(n);
        // forward replay through the primitives (no allocation: a primitive's input is
        // replayed again in the reverse loop below; scenes have one or two primitives)
        let couple_upto = |k: usize| {
            let mut v = v0;
            for (prim, ps) in self.primitives.iter().zip(prims).take(k) {
                v = prim.couple(&pos, &v, ps);
            }
            v
        };
        let v = couple_upto(self.primitives.len());
        let c = self.node_coords(n);
        let mut a = *adj_v;
        // boundary: zeroed components pass no adjoint
        let mut vb = v;
        let friction = c[1] < self.params.ground_layers && v[1].re() <= 0.0;
        if friction {
            vb = ground_friction(&v, self.params.ground_friction);
        }
        for d in 0..3 {
            if self.hits_wall(&c, d, vb[d]) {
                a[d] = T::zero();
            }
        }
        if friction {
            a = ground_friction_vjp(&v, self.params.ground_friction, &a);
        }
        for (k, (prim, ps)) in self.primitives.iter().zip(prims).enumerate().rev() {
            a = prim.couple_vjp(&pos, &couple_upto(k), ps, &a, &mut adj_prims[k]);
        }
        // v0 = mv/m + dt·g. Written as −(a·(mv/m))/m, never with m²: a node at a
        // stencil's tail carries m ~ 1e-19 in f32 scenes (w ~ 1e-12 times a particle mass
        // of 2e-7), whose square underflows to 0 and turned the adjoint into NaN
        let adj_mv: V3<T> = std::array::from_fn(|d| a[d] / m);
        let mut adj_m = T::zero();
        for d in 0..3 {
            adj_m -= a[d] * (mv[d] / m);
        }
        (adj_m / m, adj_mv)
    }

    // ------------------------------------------------------------------ stage 4
    /// Stage 4: gathers `v`, `C` at every particle from `grid_v` and advects `x`.
    pub fn g2p<T: Real>(&self, s: &mut MpmState<T>, grid_v: &[V3<T>]) {
        let dt = T::cst(self.params.dt);
        let body = |x: &mut V3<T>, v: &mut V3<T>, c: &mut M3<T>| {
            let (nv, nc) = self.g2p_particle(x, grid_v);
            *v = nv;
            *c = nc;
            for d in 0..3 {
                x[d] += dt * nv[d];
            }
        };
        if s.len() < PARALLEL_MIN_PARTICLES {
            for p in 0..s.len() {
                body(&mut s.x[p], &mut s.v[p], &mut s.c[p]);
            }
        } else {
            s.x.par_iter_mut()
                .zip(s.v.par_iter_mut())
                .zip(s.c.par_iter_mut())
                .for_each(|((x, v), c)| body(x, v, c));
        }
    }

    fn g2p_particle<T: Real>(&self, x: &V3<T>, grid_v: &[V3<T>]) -> (V3<T>, M3<T>) {
        let k = T::cst(4.0 * self.inv_dx * self.inv_dx);
        let st = self.stencil(x);
        let mut v = [T::zero(); 3];
        let mut c = mat3::zero::<T>();
        self.visit(&st, |n, _, w3, dpos| {
            let w = w3[0] * w3[1] * w3[2];
            let gv = grid_v[n];
            for d in 0..3 {
                v[d] += w * gv[d];
            }
            mat3::add_assign(&mut c, &mat3::scale(&mat3::outer(&gv, &dpos), w * k));
        });
        (v, c)
    }

    /// Adjoint of [`Self::g2p`] at the input positions `x_in`: consumes `adj.{x, v, c}` (the
    /// adjoints of the outputs), leaves in `adj.x` the adjoint of `x_in`, zeroes `adj.{v, c}`,
    /// and accumulates the grid velocity adjoints into `adj_grid_v`.
    pub fn g2p_vjp<T: Real>(
        &self,
        x_in: &[V3<T>],
        grid_v: &[V3<T>],
        adj: &mut MpmAdj<T>,
        adj_grid_v: &mut [V3<T>],
    ) {
        for p in 0..x_in.len() {
            self.g2p_particle_vjp(
                &x_in[p],
                grid_v,
                &mut adj.x[p],
                &mut adj.v[p],
                &mut adj.c[p],
                |n, g| {
                    for d in 0..3 {
                        adj_grid_v[n][d] += g[d];
                    }
                },
            );
        }
    }

    /// [`Self::g2p_vjp`] on the parallel path when the scene is large: particle chunks
    /// scatter into their own grids (`scratch.chunks`), summed in chunk order.
    fn g2p_vjp_scratch<T: Real>(
        &self,
        x_in: &[V3<T>],
        adj: &mut MpmAdj<T>,
        adj_grid_v: &mut [V3<T>],
        scratch: &mut MpmScratch<T>,
    ) {
        let n = x_in.len();
        if n < PARALLEL_MIN_PARTICLES {
            self.g2p_vjp(x_in, &scratch.grid_v, adj, adj_grid_v);
            return;
        }
        let per = n.div_ceil(CHUNKS);
        let grid_v = &scratch.grid_v;
        adj.x
            .par_chunks_mut(per)
            .zip(adj.v.par_chunks_mut(per))
            .zip(adj.c.par_chunks_mut(per))
            .zip(scratch.chunks.par_iter_mut())
            .enumerate()
            .for_each(|(c, (((ax, av), ac), g))| {
                for (i, p) in chunk_range(n, c).enumerate() {
                    self.g2p_particle_vjp(
                        &x_in[p],
                        grid_v,
                        &mut ax[i],
                        &mut av[i],
                        &mut ac[i],
                        |node, val| {
                            g.touch(node);
                            for d in 0..3 {
                                g.v[node][d] += val[d];
                            }
                        },
                    );
                }
            });
        for g in scratch.chunks.iter_mut() {
            for &node in &g.active {
                for d in 0..3 {
                    adj_grid_v[node][d] += g.v[node][d];
                }
            }
            g.clear();
        }
    }

    /// One particle of [`Self::g2p_vjp`]: consumes its output adjoints, leaves the adjoint
    /// of its input position in `adj_x`, and hands each node's velocity adjoint to `add`.
    fn g2p_particle_vjp<T: Real>(
        &self,
        x: &V3<T>,
        grid_v: &[V3<T>],
        adj_x: &mut V3<T>,
        adj_vp: &mut V3<T>,
        adj_cp: &mut M3<T>,
        mut add: impl FnMut(usize, V3<T>),
    ) {
        let dx = T::cst(self.dx);
        let k = T::cst(4.0 * self.inv_dx * self.inv_dx);
        let dt = T::cst(self.params.dt);
        let st = self.stencil(x);
        let adj_v: V3<T> = std::array::from_fn(|d| adj_vp[d] + dt * adj_x[d]);
        let adj_c = *adj_cp;
        let mut adj_fx = [T::zero(); 3];
        let mut wadj = WeightAdj::<T>::default();
        self.visit(&st, |n, off, w3, dpos| {
            let w = w3[0] * w3[1] * w3[2];
            let gv = grid_v[n];
            // v += w·gv; C += k·w·gv·dposᵀ
            let cd = mat3::mul_vec(&adj_c, &dpos); // adj_C·dpos
            let ctg = mat3::mul_t_vec(&adj_c, &gv); // adj_Cᵀ·gv
            let mut adj_w = T::zero();
            let mut g = [T::zero(); 3];
            for d in 0..3 {
                g[d] = w * adj_v[d] + k * w * cd[d];
                adj_w += gv[d] * adj_v[d] + k * gv[d] * cd[d];
                adj_fx[d] -= k * w * ctg[d] * dx;
            }
            add(n, g);
            wadj.add(off, &w3, adj_w);
        });
        wadj.finish(&st, &adj_fx, self.inv_dx, adj_x);
        *adj_vp = [T::zero(); 3];
        *adj_cp = mat3::zero();
    }

    // ------------------------------------------------------------------ substep
    /// One substep of `s` in place, with the primitives at `prims`.
    pub fn substep<T: Real>(
        &self,
        s: &mut MpmState<T>,
        prims: &[PrimitiveState<T>],
        scratch: &mut MpmScratch<T>,
    ) {
        self.stress_all(s, &mut scratch.affine, &mut scratch.svds);
        self.p2g(s, scratch);
        self.grid_update(prims, scratch);
        self.g2p(s, &scratch.grid_v);
    }

    /// Stage 1 for every particle: `s.f` updated in place, affine momenta into `affine`.
    /// Also records each particle's trial SVD into `svds`.
    fn stress_all<T: Real>(
        &self,
        s: &mut MpmState<T>,
        affine: &mut [M3<T>],
        svds: &mut [Option<Svd3>],
    ) {
        // Particles go in groups of SVD_LANES (by index, on both paths): their trial Fs
        // are decomposed together by `svd3_lanes`, which gives each the bits of
        // `svd3_tol`, so the grouping changes no result.
        let body =
            |p0: usize, f: &mut [M3<T>], c: &[M3<T>], a: &mut [M3<T>], d: &mut [Option<Svd3>]| {
                let k = f.len();
                let trials: [M3<T>; SVD_LANES] = std::array::from_fn(|l| {
                    if l < k {
                        self.trial_f(&f[l], &c[l])
                    } else {
                        mat3::eye::<T>()
                    }
                });
                let need: [bool; SVD_LANES] =
                    std::array::from_fn(|l| l < k && self.needs_svd(p0 + l));
                let svds = need
                    .contains(&true)
                    .then(|| svd3_lanes(&trials.each_ref().map(|m| mat3::re(m)), svd_tol::<T>()));
                for l in 0..k {
                    let sv = svds.as_ref().filter(|_| need[l]).map(|s| s[l]);
                    let (fnew, an) = self.particle_stress_from(p0 + l, trials[l], &c[l], sv);
                    f[l] = fnew;
                    a[l] = an;
                    d[l] = sv;
                }
            };
        if s.len() < PARALLEL_MIN_PARTICLES {
            for (((i, f), c), (a, d)) in
                s.f.chunks_mut(SVD_LANES)
                    .enumerate()
                    .zip(s.c.chunks(SVD_LANES))
                    .zip(affine.chunks_mut(SVD_LANES).zip(svds.chunks_mut(SVD_LANES)))
            {
                body(i * SVD_LANES, f, c, a, d);
            }
        } else {
            s.f.par_chunks_mut(SVD_LANES)
                .zip(s.c.par_chunks(SVD_LANES))
                .zip(affine.par_chunks_mut(SVD_LANES))
                .zip(svds.par_chunks_mut(SVD_LANES))
                .enumerate()
                .for_each(|(i, (((f, c), a), d))| body(i * SVD_LANES, f, c, a, d));
        }
    }

    /// [`Self::substep`], also recording into `tape` what [`Self::substep_vjp_taped`]
    /// needs, so that the adjoint does not replay the forward pass.
    pub fn substep_taped<T: Real>(
        &self,
        s: &mut MpmState<T>,
        prims: &[PrimitiveState<T>],
        scratch: &mut MpmScratch<T>,
        tape: &mut MpmTape<T>,
    ) {
        self.stress_all(s, &mut scratch.affine, &mut scratch.svds);
        self.p2g(s, scratch);
        self.grid_update(prims, scratch);
        tape.record(s, scratch);
        self.g2p(s, &scratch.grid_v);
    }

    /// Adjoint of [`Self::substep`] from the input state `s_in`: `adj` holds the adjoint of
    /// the output state on entry and that of `s_in` on return; the primitives' adjoints
    /// are accumulated into `adj_prims`. It replays the forward pass up to the grid
    /// velocities; [`Self::substep_vjp_taped`] reads them from a tape instead.
    pub fn substep_vjp<T: Real>(
        &self,
        s_in: &MpmState<T>,
        prims: &[PrimitiveState<T>],
        adj: &mut MpmAdj<T>,
        adj_prims: &mut [PrimitiveState<T>],
        scratch: &mut MpmScratch<T>,
    ) {
        let mut s = std::mem::take(&mut scratch.replay);
        s.clone_from(s_in);
        self.stress_all(&mut s, &mut scratch.affine, &mut scratch.svds);
        self.p2g(&s, scratch);
        self.grid_update(prims, scratch);
        self.substep_adjoint(s_in, &s, prims, adj, adj_prims, scratch);
        scratch.replay = s;
    }

    /// [`Self::substep_vjp`] from the tape that [`Self::substep_taped`] recorded while
    /// advancing `s_in` (with the same primitives): the same result bit for bit, without
    /// the replay.
    ///
    /// # Panics
    /// If the tape was not recorded on this scene (its particle count differs).
    pub fn substep_vjp_taped<T: Real>(
        &self,
        s_in: &MpmState<T>,
        tape: &MpmTape<T>,
        prims: &[PrimitiveState<T>],
        adj: &mut MpmAdj<T>,
        adj_prims: &mut [PrimitiveState<T>],
        scratch: &mut MpmScratch<T>,
    ) {
        assert_eq!(
            tape.f_new.len(),
            s_in.len(),
            "the tape was recorded by substep_taped on a scene of this size"
        );
        let mut s = std::mem::take(&mut scratch.replay);
        s.clone_from(s_in);
        s.f.copy_from_slice(&tape.f_new);
        scratch.affine.copy_from_slice(&tape.affine);
        scratch.svds.copy_from_slice(&tape.svds);
        let g = &mut scratch.main;
        g.clear();
        for (i, &n) in tape.nodes.iter().enumerate() {
            g.touch(n);
            g.m[n] = tape.m[i];
            g.v[n] = tape.mv[i];
            scratch.grid_v[n] = tape.grid_v[i];
        }
        self.substep_adjoint(s_in, &s, prims, adj, adj_prims, scratch);
        scratch.replay = s;
    }

    /// Stages 4 to 1 of the adjoint, given the forward pass's intermediates in `scratch`
    /// (affine momenta, SVDs, grid) and the stressed state `s` (`s_in` with stage 1's F).
    fn substep_adjoint<T: Real>(
        &self,
        s_in: &MpmState<T>,
        s: &MpmState<T>,
        prims: &[PrimitiveState<T>],
        adj: &mut MpmAdj<T>,
        adj_prims: &mut [PrimitiveState<T>],
        scratch: &mut MpmScratch<T>,
    ) {
        // stage 4
        let mut adj_grid_v = std::mem::take(&mut scratch.adj_grid_v);
        self.g2p_vjp_scratch(&s.x, adj, &mut adj_grid_v, scratch);
        // stage 3: node by node; with primitives serially, so that their adjoints are
        // summed in node order
        let g = &scratch.main;
        if prims.is_empty() && g.active.len() >= PARALLEL_MIN_NODES {
            let agv = &adj_grid_v;
            g.active
                .par_iter()
                .map(|&n| self.node_update_vjp(n, g.m[n], &g.v[n], &[], &agv[n], &mut []))
                .collect_into_vec(&mut scratch.node_adj);
        } else {
            scratch.node_adj.clear();
            for &n in &g.active {
                let r = self.node_update_vjp(n, g.m[n], &g.v[n], prims, &adj_grid_v[n], adj_prims);
                scratch.node_adj.push(r);
            }
        }
        for (i, &n) in scratch.main.active.iter().enumerate() {
            let (am, amv) = scratch.node_adj[i];
            scratch.adj_m[n] = am;
            scratch.adj_mv[n] = amv;
            adj_grid_v[n] = [T::zero(); 3];
        }
        scratch.adj_grid_v = adj_grid_v;
        // stage 2 (adj.v was consumed by g2p_vjp: v_in enters only here)
        let mut adj_affine = std::mem::take(&mut scratch.adj_affine);
        adj_affine.iter_mut().for_each(|a| *a = mat3::zero());
        self.p2g_vjp(
            s,
            &scratch.affine,
            &scratch.adj_m,
            &scratch.adj_mv,
            adj,
            &mut adj_affine,
        );
        for &n in &scratch.main.active {
            scratch.adj_m[n] = T::zero();
            scratch.adj_mv[n] = [T::zero(); 3];
        }
        // stage 1: F_new was passed through stages 2–4 unchanged
        let svds = &scratch.svds;
        let body = |p: usize, af: &mut M3<T>, ac: &mut M3<T>| {
            let adj_fnew = *af;
            let (mut f_adj, mut c_adj) = (mat3::zero(), mat3::zero());
            self.particle_stress_vjp_svd(
                p,
                &s_in.f[p],
                &s_in.c[p],
                svds[p],
                &adj_fnew,
                &adj_affine[p],
                &mut f_adj,
                &mut c_adj,
            );
            *af = f_adj;
            *ac = c_adj;
        };
        if s.len() < PARALLEL_MIN_PARTICLES {
            for p in 0..s.len() {
                body(p, &mut adj.f[p], &mut adj.c[p]);
            }
        } else {
            adj.f
                .par_iter_mut()
                .zip(adj.c.par_iter_mut())
                .enumerate()
                .for_each(|(p, (af, ac))| body(p, af, ac));
        }
        scratch.adj_affine = adj_affine;
    }
}

/// What one substep's forward pass leaves for its adjoint ([`MpmModel::substep_taped`]):
/// stage 1's deformation gradients, affine momenta and trial SVDs per particle, and the
/// grid's active nodes in first-touch order with their masses, momenta and updated
/// velocities.
#[derive(Clone, Debug, Default)]
pub struct MpmTape<T> {
    f_new: Vec<M3<T>>,
    affine: Vec<M3<T>>,
    svds: Vec<Option<Svd3>>,
    nodes: Vec<usize>,
    m: Vec<T>,
    mv: Vec<V3<T>>,
    grid_v: Vec<V3<T>>,
}

impl<T: Real> MpmTape<T> {
    /// Copies the intermediates of the substep that `scratch` holds, after the grid
    /// update, with `s` the stressed state.
    fn record(&mut self, s: &MpmState<T>, scratch: &MpmScratch<T>) {
        let copy = |dst: &mut Vec<M3<T>>, src: &[M3<T>]| {
            dst.clear();
            dst.extend_from_slice(src);
        };
        copy(&mut self.f_new, &s.f);
        copy(&mut self.affine, &scratch.affine);
        self.svds.clear();
        self.svds.extend_from_slice(&scratch.svds);
        let g = &scratch.main;
        self.nodes.clear();
        self.nodes.extend_from_slice(&g.active);
        self.m.clear();
        self.m.extend(g.active.iter().map(|&n| g.m[n]));
        self.mv.clear();
        self.mv.extend(g.active.iter().map(|&n| g.v[n]));
        self.grid_v.clear();
        self.grid_v
            .extend(g.active.iter().map(|&n| scratch.grid_v[n]));
    }

    /// Heap bytes of the recorded intermediates.
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        (self.f_new.len() + self.affine.len()) * size_of::<M3<T>>()
            + self.svds.len() * size_of::<Option<Svd3>>()
            + self.nodes.len() * (size_of::<usize>() + size_of::<T>() + 2 * size_of::<V3<T>>())
    }
}

/// A run of substeps of one scene with a given primitive trajectory, as a
/// [`Substepper`] for checkpointed reverse sweeps.
pub struct MpmRun<'a, T> {
    pub model: &'a MpmModel,
    /// `prims[k][i]`: primitive `i` during substep `k`.
    pub prims: Vec<Vec<PrimitiveState<T>>>,
    /// DaXBench's `norm_grad` around every substep: after each substep's adjoint, NaN and
    /// ∞ are set to 0 and the state cotangent, and separately that substep's primitive
    /// cotangent, are rescaled to global norm ≤ this value. `None`: the exact gradient.
    pub grad_clip: Option<f64>,
    /// Record each substep's intermediates during the reverse sweep's recomputation
    /// ([`MpmTape`]), so that the adjoints do not replay the forward pass: about a third
    /// less work for a segment's `K` tapes in memory (each about 2.5 times a state, plus
    /// the active grid nodes). Default true; the gradients are the same bit for bit.
    pub record_tapes: bool,
    scratch: RefCell<MpmScratch<T>>,
}

/// Sets NaN/∞ to 0 and rescales the numbers `visit` reaches to Euclidean norm ≤ `c`.
fn clip_norm<T: Real>(mut visit: impl FnMut(&mut dyn FnMut(&mut T)), c: f64) {
    let mut n2 = 0.0;
    visit(&mut |x: &mut T| {
        if !x.re().is_finite() {
            *x = T::zero();
        }
        n2 += x.re() * x.re();
    });
    let n = n2.sqrt();
    if n > c {
        let k = T::cst(c / n);
        visit(&mut |x: &mut T| *x *= k);
    }
}

/// Adjoints of an [`MpmRun`]: of the state, and of every primitive state of every substep.
#[derive(Clone, Debug)]
pub struct MpmRunAdj<T> {
    pub state: MpmAdj<T>,
    pub prims: Vec<Vec<PrimitiveState<T>>>,
}

impl<'a, T: Real> MpmRun<'a, T> {
    /// A run of `prims.len()` substeps.
    pub fn new(model: &'a MpmModel, prims: Vec<Vec<PrimitiveState<T>>>) -> Self {
        MpmRun {
            model,
            prims,
            grad_clip: None,
            record_tapes: true,
            scratch: RefCell::new(model.scratch()),
        }
    }

    /// Zero adjoints shaped for this run.
    pub fn zero_adj(&self) -> MpmRunAdj<T> {
        MpmRunAdj {
            state: MpmState::zeros(self.model.n_particles()),
            prims: self
                .prims
                .iter()
                .map(|p| vec![PrimitiveState::zero(); p.len()])
                .collect(),
        }
    }
}

impl<T: Real> Substepper for MpmRun<'_, T> {
    type State = MpmState<T>;
    type Adj = MpmRunAdj<T>;
    type Tape = MpmTape<T>;

    fn substep(&self, k: usize, s: &mut MpmState<T>) {
        self.model
            .substep(s, &self.prims[k], &mut self.scratch.borrow_mut());
    }

    fn substep_vjp(&self, k: usize, s_in: &MpmState<T>, adj: &mut MpmRunAdj<T>) {
        self.model.substep_vjp(
            s_in,
            &self.prims[k],
            &mut adj.state,
            &mut adj.prims[k],
            &mut self.scratch.borrow_mut(),
        );
        self.clip(k, adj);
    }

    fn records(&self) -> bool {
        self.record_tapes
    }

    fn substep_taped(&self, k: usize, s: &mut MpmState<T>, tape: &mut MpmTape<T>) {
        self.model
            .substep_taped(s, &self.prims[k], &mut self.scratch.borrow_mut(), tape);
    }

    fn substep_vjp_taped(
        &self,
        k: usize,
        s_in: &MpmState<T>,
        tape: &MpmTape<T>,
        adj: &mut MpmRunAdj<T>,
    ) {
        self.model.substep_vjp_taped(
            s_in,
            tape,
            &self.prims[k],
            &mut adj.state,
            &mut adj.prims[k],
            &mut self.scratch.borrow_mut(),
        );
        self.clip(k, adj);
    }

    fn state_bytes(&self, s: &MpmState<T>) -> usize {
        s.len() * 24 * std::mem::size_of::<T>()
    }

    fn tape_bytes(&self, tape: &MpmTape<T>) -> usize {
        tape.bytes()
    }
}

impl<T: Real> MpmRun<'_, T> {
    /// DaXBench's `norm_grad` after substep `k`'s adjoint, when [`Self::grad_clip`] is set.
    fn clip(&self, k: usize, adj: &mut MpmRunAdj<T>) {
        if let Some(c) = self.grad_clip {
            let st = &mut adj.state;
            clip_norm(
                |f| {
                    st.x.iter_mut().flatten().for_each(&mut *f);
                    st.v.iter_mut().flatten().for_each(&mut *f);
                    st.c.iter_mut().flatten().flatten().for_each(&mut *f);
                    st.f.iter_mut().flatten().flatten().for_each(&mut *f);
                },
                c,
            );
            let ap = &mut adj.prims[k];
            clip_norm(
                |f| {
                    for p in ap.iter_mut() {
                        p.pos.iter_mut().chain(p.vel.iter_mut()).for_each(&mut *f);
                    }
                },
                c,
            );
        }
    }
}

/// The SVD's orthogonality tolerance for scalar `T`: its own precision (with a margin),
/// never looser than 1e-15 for `f64` (whose results the gradient tests compare).
fn svd_tol<T: Real>() -> f64 {
    (8.0 * T::epsilon()).max(1e-15)
}

/// Adjoints of a stencil's weights, split by axis: `w = w_x·w_y·w_z`, so the adjoint of
/// `w` at offset `o` reaches `w_x[o_x]` times `w_y·w_z`, and so on.
#[derive(Clone, Copy, Debug, Default)]
struct WeightAdj<T> {
    axis: [[T; 3]; 3],
}

impl<T: Real> WeightAdj<T> {
    #[inline]
    fn add(&mut self, off: [usize; 3], w3: &[T; 3], adj_w: T) {
        self.axis[0][off[0]] += adj_w * w3[1] * w3[2];
        self.axis[1][off[1]] += adj_w * w3[0] * w3[2];
        self.axis[2][off[2]] += adj_w * w3[0] * w3[1];
    }

    /// Adds to `adj_x` the adjoint of the particle position: through the weights'
    /// derivatives and the direct adjoint `adj_fx` of the fractional position (cell units).
    #[inline]
    fn finish(&self, st: &Stencil<T>, adj_fx: &V3<T>, inv_dx: f64, adj_x: &mut V3<T>) {
        for d in 0..3 {
            let mut a = adj_fx[d];
            for o in 0..3 {
                a += self.axis[d][o] * st.dw[d][o];
            }
            adj_x[d] += a * T::cst(inv_dx);
        }
    }
}

/// Calls `f` for the 27 offsets of a quadratic stencil.
#[inline]
fn for_stencil(mut f: impl FnMut([usize; 3])) {
    for i in 0..3 {
        for j in 0..3 {
            for k in 0..3 {
                f([i, j, k]);
            }
        }
    }
}

/// A liquid particle's deformation gradient `F` replaced by the isotropic `J^(1/3)·I` of
/// the same `J = det F` (left unchanged if `J ≤ 0`, an inverted particle).
pub fn liquid_projection<T: Real>(f: &M3<T>) -> M3<T> {
    let j = mat3::det(f);
    if j.re() <= 0.0 {
        return *f;
    }
    let s = (j.ln() / T::cst(3.0)).exp();
    mat3::scale(&mat3::eye(), s)
}

/// VJP of [`liquid_projection`] at `f`: `d(J^(1/3))/dF = J^(1/3)/(3J)·cof F`, so the
/// adjoint is `tr(adj)·J^(1/3)/(3J)·cof F`.
pub fn liquid_projection_vjp<T: Real>(f: &M3<T>, adj: &M3<T>) -> M3<T> {
    let j = mat3::det(f);
    if j.re() <= 0.0 {
        return *adj;
    }
    let s = (j.ln() / T::cst(3.0)).exp();
    mat3::scale(&mat3::cofactor(f), mat3::trace(adj) * s / (T::cst(3.0) * j))
}

/// DaXBench's ground friction on a node moving down (`v_y ≤ 0`): the tangential velocity
/// `v_t = (v_x, v_z)` is scaled by `max(0, 1 + μ·v_y/‖v_t‖)` and `v_y` set to 0. At
/// `‖v_t‖ = 0` the output is 0 with zero derivative; when the max clamps (sticking) the
/// derivative is zero.
pub fn ground_friction<T: Real>(v: &V3<T>, mu: f64) -> V3<T> {
    let n = (v[0] * v[0] + v[2] * v[2]).sqrt();
    if n.re() <= 0.0 {
        return [T::zero(); 3];
    }
    let s = T::one() + T::cst(mu) * v[1] / n;
    if s.re() <= 0.0 {
        return [T::zero(); 3];
    }
    [v[0] * s, T::zero(), v[2] * s]
}

/// VJP of [`ground_friction`] at input `v`.
pub fn ground_friction_vjp<T: Real>(v: &V3<T>, mu: f64, a: &V3<T>) -> V3<T> {
    let n = (v[0] * v[0] + v[2] * v[2]).sqrt();
    if n.re() <= 0.0 {
        return [T::zero(); 3];
    }
    let mu = T::cst(mu);
    let s = T::one() + mu * v[1] / n;
    if s.re() <= 0.0 {
        return [T::zero(); 3];
    }
    // out_t = s·v_t, s = 1 + μ v_y / n, n = |v_t|
    let vta = v[0] * a[0] + v[2] * a[2];
    let ds_dn = -(mu * v[1]) / (n * n);
    let adj_n = vta * ds_dn;
    [
        a[0] * s + adj_n * v[0] / n,
        mu / n * vta,
        a[2] * s + adj_n * v[2] / n,
    ]
}

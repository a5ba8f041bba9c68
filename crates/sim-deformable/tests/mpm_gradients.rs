//! Adjoint tests of every MPM stage and of full substeps: VJP against fourth-order central
//! differences in f64 (relative error ≤ 1e-6) and the VJP/JVP dot-product test with dual
//! numbers (≤ 1e-9), over random states away from the documented kinks.
#![allow(clippy::needless_range_loop)]

use diff_core::gradcheck::{cases, check_stage, direction, vec_in, Stage, StageTol};
use diff_core::{Dual, Real};
use proptest::prelude::*;
use sim_deformable::checkpoint;
use sim_deformable::mat3::{self, M3};
use sim_deformable::mpm::{
    ground_friction, ground_friction_vjp, Material, MpmModel, MpmParams, MpmRun, MpmState, MpmTape,
    ParticleMaterial,
};
use sim_deformable::primitive::{quat_rotate, Primitive, PrimitiveState, Shape};
use sim_deformable::svd::svd3;

const TOL: StageTol = StageTol {
    h: 1e-4,
    fd: 1e-6,
    dot: 1e-9,
};

/// Stages with a primitive (node update, full substeps): its influence exp(−666·d) has a fifth derivative of order
/// 666⁵ ≈ 1.3e14, so the fourth-order difference with h = 1e-4 errs by ~1e-3 absolute
/// (measured: cases with no branch switch inside the stencil fail at h = 1e-4 with
/// relative errors 1.1e-6 – 1e-5, always in one coordinate, and pass at h = 1e-5; the
/// dot-product test passes throughout).
const TOL_PRIMITIVE: StageTol = StageTol { h: 1e-5, ..TOL };

/// A 16-cell test domain (the whole unit cube), particles of unit mass.
fn params() -> MpmParams {
    let n_grid = 16;
    let p_vol = (0.5 / n_grid as f64).powi(3);
    MpmParams {
        n_grid,
        origin: [0; 3],
        res: [16; 3],
        dt: 2e-3,
        youngs_modulus: 50.0,
        poisson_ratio: 0.3,
        density: 1.0 / p_vol,
        ground_friction: 0.5,
        ..MpmParams::default()
    }
}

fn model(materials: &[Material], prims: Vec<Primitive>) -> MpmModel {
    let parts = materials
        .iter()
        .enumerate()
        .map(|(i, &material)| ParticleMaterial {
            material,
            hardness: 1.0 + 0.3 * i as f64,
        })
        .collect();
    MpmModel::new(params(), parts, prims).unwrap()
}

fn rotation(w: &[f64]) -> M3<f64> {
    let th = (w[0] * w[0] + w[1] * w[1] + w[2] * w[2]).sqrt().max(1e-12);
    let n = [w[0] / th, w[1] / th, w[2] / th];
    let (s, c) = th.sin_cos();
    let k = [[0.0, -n[2], n[1]], [n[2], 0.0, -n[0]], [-n[1], n[0], 0.0]];
    let k2 = mat3::mul(&k, &k);
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            (if i == j { 1.0 } else { 0.0 }) + s * k[i][j] + (1.0 - c) * k2[i][j]
        })
    })
}

// ---------------------------------------------------------------- stage 1
struct ParticleStress {
    model: MpmModel,
    /// 1/ks: scales A to O(1) so its errors are not hidden under F's.
    a_scale: f64,
}

impl ParticleStress {
    fn new(material: Material) -> Self {
        let model = model(&[material], vec![]);
        let p = &model.params;
        let ks = p.dt * (0.5 * model.dx()).powi(3) * 4.0 / (model.dx() * model.dx());
        ParticleStress {
            model,
            a_scale: 1.0 / ks,
        }
    }
}

impl Stage for ParticleStress {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let (f, c) = (mat3::unflat(&x[0..9]), mat3::unflat(&x[9..18]));
        let (fnew, a) = self.model.particle_stress(0, &f, &c);
        let mut out = mat3::flat(&fnew).to_vec();
        out.extend(mat3::flat(&a).map(|v| v * T::cst(self.a_scale)));
        out
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let (f, c) = (mat3::unflat(&x[0..9]), mat3::unflat(&x[9..18]));
        let adj_fnew = mat3::unflat(&u[0..9]);
        let adj_a = mat3::scale(&mat3::unflat(&u[9..18]), self.a_scale);
        let (mut af, mut ac) = (mat3::zero(), mat3::zero());
        self.model
            .particle_stress_vjp(0, &f, &c, &adj_fnew, &adj_a, &mut af, &mut ac);
        let mut out = mat3::flat(&af).to_vec();
        out.extend(mat3::flat(&ac));
        out
    }
}

/// `F = R₁·diag(σ)·R₂` and a velocity gradient `C`, as the 18 stage inputs.
fn f_and_c(r1: &[f64], sigma: [f64; 3], r2: &[f64], c: &[f64]) -> Vec<f64> {
    let (a, b) = (rotation(r1), rotation(r2));
    let s: M3<f64> = std::array::from_fn(|i| std::array::from_fn(|j| a[i][j] * sigma[j]));
    let f = mat3::mul(&s, &b);
    let mut x = mat3::flat(&f).to_vec();
    x.extend_from_slice(c);
    x
}

/// The singular values of `(I + dt·C)·F` (the matrix the plastic clamp sees).
fn trial_sigma(m: &MpmModel, x: &[f64]) -> [f64; 3] {
    let (f, c): (M3<f64>, M3<f64>) = (mat3::unflat(&x[0..9]), mat3::unflat(&x[9..18]));
    let ft = mat3::add(&f, &mat3::scale(&mat3::mul(&c, &f), m.params.dt));
    svd3(&ft).sigma
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn particle_stress_adjoint_elastic_and_liquid(r1 in vec_in(-3.0, 3.0, 3), s in vec_in(0.6, 1.6, 3), r2 in vec_in(-3.0, 3.0, 3), c in vec_in(-5.0, 5.0, 9), u in direction(18), v in direction(18), liquid in any::<bool>()) {
        let st = ParticleStress::new(if liquid { Material::Liquid } else { Material::Elastic });
        let x = f_and_c(&r1, [s[0], s[1], s[2]], &r2, &c);
        check_stage(&st, &x, &u, &v, TOL, "particle stress (elastic/liquid)");
    }

    #[test]
    fn particle_stress_adjoint_plastic(r1 in vec_in(-3.0, 3.0, 3), s in vec_in(0.5, 1.8, 3), r2 in vec_in(-3.0, 3.0, 3), c in vec_in(-5.0, 5.0, 9), u in direction(18), v in direction(18)) {
        // about half the sampled singular values are outside [0.75, 1.45] and clamped
        let st = ParticleStress::new(Material::Plastic);
        let x = f_and_c(&r1, [s[0], s[1], s[2]], &r2, &c);
        let p = &st.model.params;
        prop_assume!(trial_sigma(&st.model, &x).iter().all(|s| (s - p.plastic_lo).abs() > 1e-3 && (s - p.plastic_hi).abs() > 1e-3));
        check_stage(&st, &x, &u, &v, TOL, "particle stress (plastic)");
    }

    #[test]
    fn particle_stress_adjoint_near_repeated_singular_values(r1 in vec_in(-3.0, 3.0, 3), s in 0.6f64..1.6, gap in 0.0f64..1e-9, s3 in 0.6f64..1.6, r2 in vec_in(-3.0, 3.0, 3), u in direction(18), v in direction(18), which in 0usize..3) {
        // two equal (to 1e-9) singular values: the SVD's U and V are ill-defined there, the
        // stress and the plastic projection are not; C = 0 keeps them in F_trial
        let material = [Material::Elastic, Material::Plastic, Material::Liquid][which];
        let st = ParticleStress::new(material);
        let x = f_and_c(&r1, [s, s + gap, s3], &r2, &[0.0; 9]);
        let p = &st.model.params;
        prop_assume!(trial_sigma(&st.model, &x).iter().all(|s| (s - p.plastic_lo).abs() > 1e-3 && (s - p.plastic_hi).abs() > 1e-3));
        check_stage(&st, &x, &u, &v, TOL, "particle stress, repeated singular values");
    }
}

// ---------------------------------------------------------------- stage 2 and 4
/// Particles whose stencils stay inside the window and do not switch base cell within the
/// finite-difference steps (the quadratic B-spline is C¹, its second derivative jumps).
fn positions_ok(m: &MpmModel, x: &[f64]) -> bool {
    x.iter().all(|&c| {
        let g = c / m.dx() - 0.5;
        (g - g.round()).abs() > 5e-3 // the 4th-order stencil reaches ±2h = ±3.2e-3 cells
    })
}

struct P2g(MpmModel);

impl Stage for P2g {
    /// inputs: per particle x (3), v (3), A (9); outputs: grid m and mv over the window
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.0.n_particles();
        let mut s = MpmState::<T>::zeros(n);
        let mut sc = self.0.scratch::<T>();
        for p in 0..n {
            let r = &x[15 * p..15 * (p + 1)];
            s.x[p] = [r[0], r[1], r[2]];
            s.v[p] = [r[3], r[4], r[5]];
            sc.affine[p] = mat3::unflat(&r[6..15]);
        }
        self.0.p2g(&s, &mut sc);
        let mut out = Vec::new();
        for k in 0..self.0.n_nodes() {
            out.push(sc.main.m[k]);
            out.extend_from_slice(&sc.main.v[k]);
        }
        out
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.n_particles();
        let mut s = MpmState::<f64>::zeros(n);
        let mut affine = vec![mat3::zero::<f64>(); n];
        for p in 0..n {
            let r = &x[15 * p..15 * (p + 1)];
            s.x[p] = [r[0], r[1], r[2]];
            s.v[p] = [r[3], r[4], r[5]];
            affine[p] = mat3::unflat(&r[6..15]);
        }
        let nn = self.0.n_nodes();
        let adj_m: Vec<f64> = (0..nn).map(|k| u[4 * k]).collect();
        let adj_mv: Vec<[f64; 3]> = (0..nn)
            .map(|k| [u[4 * k + 1], u[4 * k + 2], u[4 * k + 3]])
            .collect();
        let mut adj = MpmState::<f64>::zeros(n);
        let mut adj_aff = vec![mat3::zero::<f64>(); n];
        self.0
            .p2g_vjp(&s, &affine, &adj_m, &adj_mv, &mut adj, &mut adj_aff);
        let mut out = Vec::new();
        for p in 0..n {
            out.extend_from_slice(&adj.x[p]);
            out.extend_from_slice(&adj.v[p]);
            out.extend_from_slice(&mat3::flat(&adj_aff[p]));
        }
        out
    }
}

/// G2P over a block of nodes `[4, 12)³` (the particles' stencils lie inside it).
struct G2p(MpmModel);

const BLOCK: std::ops::Range<usize> = 4..12;

fn block_nodes(m: &MpmModel) -> Vec<usize> {
    let r = m.params.res;
    let mut v = Vec::new();
    for i in BLOCK {
        for j in BLOCK {
            for k in BLOCK {
                v.push((i * r[1] + j) * r[2] + k);
            }
        }
    }
    v
}

impl Stage for G2p {
    /// inputs: per particle x (3), then the block's node velocities; outputs x, v, C
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.0.n_particles();
        let mut s = MpmState::<T>::zeros(n);
        for p in 0..n {
            s.x[p] = [x[3 * p], x[3 * p + 1], x[3 * p + 2]];
        }
        let mut grid_v = vec![[T::zero(); 3]; self.0.n_nodes()];
        for (b, &k) in block_nodes(&self.0).iter().enumerate() {
            let o = 3 * n + 3 * b;
            grid_v[k] = [x[o], x[o + 1], x[o + 2]];
        }
        self.0.g2p(&mut s, &grid_v);
        let mut out = Vec::new();
        for p in 0..n {
            out.extend_from_slice(&s.x[p]);
            out.extend_from_slice(&s.v[p]);
            out.extend_from_slice(&mat3::flat(&s.c[p]));
        }
        out
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.n_particles();
        let xs: Vec<[f64; 3]> = (0..n)
            .map(|p| [x[3 * p], x[3 * p + 1], x[3 * p + 2]])
            .collect();
        let mut grid_v = vec![[0.0; 3]; self.0.n_nodes()];
        let nodes = block_nodes(&self.0);
        for (b, &k) in nodes.iter().enumerate() {
            let o = 3 * n + 3 * b;
            grid_v[k] = [x[o], x[o + 1], x[o + 2]];
        }
        let mut adj = MpmState::<f64>::zeros(n);
        for p in 0..n {
            let r = &u[15 * p..15 * (p + 1)];
            adj.x[p] = [r[0], r[1], r[2]];
            adj.v[p] = [r[3], r[4], r[5]];
            adj.c[p] = mat3::unflat(&r[6..15]);
        }
        let mut adj_grid = vec![[0.0; 3]; self.0.n_nodes()];
        self.0.g2p_vjp(&xs, &grid_v, &mut adj, &mut adj_grid);
        let mut out = Vec::new();
        for p in 0..n {
            out.extend_from_slice(&adj.x[p]);
        }
        for &k in &nodes {
            out.extend_from_slice(&adj_grid[k]);
        }
        out
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn p2g_adjoint(x in vec_in(0.0, 1.0, 45), u in direction(64), v in direction(45)) {
        let m = model(&[Material::Elastic; 3], vec![]);
        // positions in [0.35, 0.65]³, velocities and affine terms O(1)
        let x: Vec<f64> = x.iter().enumerate().map(|(i, &a)| if i % 15 < 3 { 0.35 + 0.3 * a } else { 4.0 * a - 2.0 }).collect();
        let pos: Vec<f64> = (0..3).flat_map(|p| x[15 * p..15 * p + 3].to_vec()).collect();
        prop_assume!(positions_ok(&m, &pos));
        check_stage(&P2g(m), &x, &u, &v, TOL, "P2G");
    }

    #[test]
    fn g2p_adjoint(x in vec_in(0.35, 0.6, 9), gv in vec_in(-2.0, 2.0, 3 * 512), u in direction(45), v in direction(9 + 3 * 512)) {
        let m = model(&[Material::Elastic; 3], vec![]);
        prop_assume!(positions_ok(&m, &x));
        let mut input = x.clone();
        input.extend(gv);
        check_stage(&G2p(m), &input, &u, &v, TOL, "G2P");
    }
}

// ---------------------------------------------------------------- stage 3
/// One node's update: inputs m, mv (3), the pusher's position and velocity (6).
struct NodeUpdate {
    model: MpmModel,
    node: usize,
}

impl Stage for NodeUpdate {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let ps = [PrimitiveState::translating(
            [x[4], x[5], x[6]],
            [x[7], x[8], x[9]],
        )];
        self.model
            .node_update(self.node, x[0], &[x[1], x[2], x[3]], &ps)
            .to_vec()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let ps = [PrimitiveState::translating(
            [x[4], x[5], x[6]],
            [x[7], x[8], x[9]],
        )];
        let mut adj_p = [PrimitiveState::zero()];
        let (am, amv) = self.model.node_update_vjp(
            self.node,
            x[0],
            &[x[1], x[2], x[3]],
            &ps,
            &[u[0], u[1], u[2]],
            &mut adj_p,
        );
        let mut out = vec![am];
        out.extend_from_slice(&amv);
        out.extend_from_slice(&adj_p[0].pos);
        out.extend_from_slice(&adj_p[0].vel);
        out
    }
}

fn pusher_model() -> MpmModel {
    model(
        &[Material::Elastic],
        vec![Primitive::pusher([0.1, 0.1, 0.1])],
    )
}

/// Whether the node update takes the same branches throughout the finite-difference
/// stencil of its inputs `[m, mv, pusher position, pusher velocity]`.
fn node_smooth_within(m: &MpmModel, node: usize, x: &[f64], h: f64) -> bool {
    node_smooth(m, node, x, h, |x| {
        PrimitiveState::translating([x[0], x[1], x[2]], [x[3], x[4], x[5]])
    })
}

/// [`node_smooth_within`] for inputs `[m, mv, primitive]` read by `parse`.
fn node_smooth(
    m: &MpmModel,
    node: usize,
    x: &[f64],
    h: f64,
    parse: impl Fn(&[f64]) -> PrimitiveState<f64>,
) -> bool {
    let br = |x: &[f64]| node_branches(m, node, x[0], &[x[1], x[2], x[3]], &parse(&x[4..]));
    let b0 = br(x);
    let mut y = x.to_vec();
    for i in 0..x.len() {
        for k in [-2.0, -1.0, 1.0, 2.0] {
            y[i] = x[i] + k * h * x[i].abs().max(1.0);
            if br(&y) != b0 {
                return false;
            }
        }
        y[i] = x[i];
    }
    true
}

/// One node's update with a rotating primitive: inputs m, mv (3) and the primitive's 13
/// numbers (position, velocity, orientation, angular velocity).
struct NodeUpdateRotating {
    model: MpmModel,
    node: usize,
}

impl Stage for NodeUpdateRotating {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let ps = [PrimitiveState::from_array(&x[4..])];
        self.model
            .node_update(self.node, x[0], &[x[1], x[2], x[3]], &ps)
            .to_vec()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let ps = [PrimitiveState::from_array(&x[4..])];
        let mut adj_p = [PrimitiveState::zero()];
        let (am, amv) = self.model.node_update_vjp(
            self.node,
            x[0],
            &[x[1], x[2], x[3]],
            &ps,
            &[u[0], u[1], u[2]],
            &mut adj_p,
        );
        let mut out = vec![am];
        out.extend_from_slice(&amv);
        out.extend_from_slice(&adj_p[0].to_array());
        out
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn node_update_adjoint(coords in (0usize..16, 0usize..16, 0usize..16), m in 0.2f64..3.0, mv in vec_in(-3.0, 3.0, 3), c in vec_in(-0.2, 0.2, 3), w in vec_in(-1.0, 1.0, 3), u in direction(3), v in direction(10)) {
        // the pusher is centred within 0.2 of the node: inside, touching or near it
        let model = pusher_model();
        let node = (coords.0 * 16 + coords.1) * 16 + coords.2;
        let pos = model.node_position(node);
        let mut x = vec![m];
        x.extend(&mv);
        x.extend((0..3).map(|k| pos[k] + c[k]));
        x.extend(&w);
        prop_assume!(node_smooth_within(&model, node, &x, TOL_PRIMITIVE.h));
        check_stage(&NodeUpdate { model, node }, &x, &u, &v, TOL_PRIMITIVE, "grid node update");
    }

    #[test]
    fn bowl_node_update_adjoint(coords in (2usize..14, 2usize..14, 2usize..14), m in 0.2f64..3.0, mv in vec_in(-3.0, 3.0, 3), dir in vec_in(-1.0, 1.0, 3), rho in -0.02f64..0.02, q in vec_in(-1.0, 1.0, 4), w in vec_in(-1.0, 1.0, 3), ang in vec_in(-5.0, 5.0, 3), u in direction(3), v in direction(17)) {
        // a tilted, spinning bowl (radius 0.2, half thickness 0.01) whose shell passes
        // within ±0.02 of the node: inside the wall, in its influence band or beyond,
        // on the spherical part or past the rim
        let model = model(&[Material::Liquid], vec![Primitive::bowl(0.2, 0.03, 0.01)]);
        let node = (coords.0 * 16 + coords.1) * 16 + coords.2;
        let pos = model.node_position(node);
        let dn = (dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]).sqrt();
        let qn = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
        prop_assume!(dn > 0.1 && qn > 0.1);
        // q scaled to norm 1.3: the coupling normalises it
        let q: Vec<f64> = q.iter().map(|c| 1.3 * c / qn).collect();
        let local: [f64; 3] = std::array::from_fn(|k| (0.2 + rho) * dir[k] / dn);
        let off = quat_rotate(&[q[0], q[1], q[2], q[3]], &local, false);
        let mut x = vec![m];
        x.extend(&mv);
        x.extend((0..3).map(|k| pos[k] - off[k]));
        x.extend(&w);
        x.extend(&q);
        x.extend(&ang);
        prop_assume!(node_smooth(&model, node, &x, TOL_PRIMITIVE.h, PrimitiveState::from_array));
        check_stage(&NodeUpdateRotating { model, node }, &x, &u, &v, TOL_PRIMITIVE, "bowl node update");
    }

    #[test]
    fn ground_friction_adjoint(vx in -2.0f64..2.0, vy in -2.0f64..0.0, vz in -2.0f64..2.0, u in direction(3), v in direction(3)) {
        let mu = 0.5;
        let n = (vx * vx + vz * vz).sqrt();
        prop_assume!(n > 1e-3 && (n + mu * vy).abs() > 1e-3);
        struct G(f64);
        impl Stage for G {
            fn forward<T: Real>(&self, x: &[T]) -> Vec<T> { ground_friction(&[x[0], x[1], x[2]], self.0).to_vec() }
            fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> { ground_friction_vjp(&[x[0], x[1], x[2]], self.0, &[u[0], u[1], u[2]]).to_vec() }
        }
        check_stage(&G(mu), &[vx, vy, vz], &u, &v, TOL, "ground friction");
    }
}

// ---------------------------------------------------------------- full substeps
/// `n_sub` substeps of 3 particles (elastic, plastic, liquid) and a pusher: inputs the
/// flat state (24 per particle) and the pusher's position and velocity (held for every
/// substep); outputs the final flat state.
struct Substeps {
    model: MpmModel,
    n_sub: usize,
}

fn run_prims<T: Real>(x: &[T], n_sub: usize, n: usize) -> Vec<Vec<PrimitiveState<T>>> {
    let o = 24 * n;
    let ps =
        PrimitiveState::translating([x[o], x[o + 1], x[o + 2]], [x[o + 3], x[o + 4], x[o + 5]]);
    vec![vec![ps]; n_sub]
}

impl Stage for Substeps {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.model.n_particles();
        let s0 = MpmState::from_flat(&x[..24 * n]);
        let run = MpmRun::new(&self.model, run_prims(x, self.n_sub, n));
        checkpoint::forward(&run, &s0, self.n_sub).to_flat()
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.model.n_particles();
        let s0 = MpmState::from_flat(&x[..24 * n]);
        let run = MpmRun::new(&self.model, run_prims(x, self.n_sub, n));
        let mut adj = run.zero_adj();
        adj.state = MpmState::from_flat(u);
        checkpoint::vjp_checkpointed(&run, &s0, self.n_sub, 2, &mut adj);
        let mut out = adj.state.to_flat();
        let mut ap = [0.0; 6];
        for k in 0..self.n_sub {
            for d in 0..3 {
                ap[d] += adj.prims[k][0].pos[d];
                ap[3 + d] += adj.prims[k][0].vel[d];
            }
        }
        out.extend_from_slice(&ap);
        out
    }
}

/// Builds the input vector: particles around `centre` (±0.06), F near I, C and v O(1),
/// the pusher within 0.15 of the centre.
fn substep_input(centre: [f64; 3], r: &[f64], prim: &[f64]) -> Vec<f64> {
    let mut x = Vec::new();
    for p in 0..3 {
        let q = &r[21 * p..21 * (p + 1)];
        for d in 0..3 {
            x.push(centre[d] + 0.06 * q[d]);
        }
        x.extend(q[3..6].iter().map(|a| a * 1.0)); // v
        x.extend(q[6..15].iter().map(|a| 2.0 * a)); // C
        for i in 0..9 {
            let eye = if i % 4 == 0 { 1.0 } else { 0.0 };
            x.push(eye + 0.15 * q[15 + i.min(5)] * if i > 5 { -0.5 } else { 1.0 });
        }
    }
    for d in 0..3 {
        x.push(centre[d] + 0.15 * prim[d]);
    }
    x.extend(&prim[3..6]);
    x
}

/// The branch taken at every kink during a forward replay of the substeps: each
/// particle's stencil base and plastic clamp pattern, and every active node's coupling,
/// friction and boundary branches.
fn branches(m: &MpmModel, x: &[f64], n_sub: usize) -> Vec<i64> {
    let n = m.n_particles();
    let prims = run_prims(x, n_sub, n);
    let mut s = MpmState::<f64>::from_flat(&x[..24 * n]);
    let mut sc = m.scratch::<f64>();
    let mut out = Vec::new();
    for k in 0..n_sub {
        for p in 0..n {
            out.extend(m.stencil(&s.x[p]).base);
            if m.particles[p].material == Material::Plastic {
                let f = s.f[p];
                let ft = mat3::add(&f, &mat3::scale(&mat3::mul(&s.c[p], &f), m.params.dt));
                for sg in svd3(&ft).sigma {
                    out.push(
                        (sg < m.params.plastic_lo) as i64 + 2 * (sg > m.params.plastic_hi) as i64,
                    );
                }
            }
        }
        let mut t = s.clone();
        for p in 0..n {
            let (fnew, a) = m.particle_stress(p, &t.f[p], &t.c[p]);
            t.f[p] = fnew;
            sc.affine[p] = a;
        }
        m.p2g(&t, &mut sc);
        let mut active = sc.main.active.clone();
        active.sort_unstable();
        for &node in &active {
            out.push(node as i64);
            out.extend(node_branches(
                m,
                node,
                sc.main.m[node],
                &sc.main.v[node],
                &prims[k][0],
            ));
        }
        m.substep(&mut s, &prims[k], &mut sc);
    }
    out
}

/// The branches of one node's update (see `MpmModel::node_update`).
fn node_branches(
    m: &MpmModel,
    node: usize,
    mass: f64,
    mv: &[f64; 3],
    ps: &PrimitiveState<f64>,
) -> Vec<i64> {
    let prim = &m.primitives[0];
    let pos = m.node_position(node);
    let (d, nrm) = prim.sdf(&pos, ps);
    let infl = (-d * prim.softness).exp();
    let mut b: Vec<i64> = match prim.shape {
        Shape::Box { half } => {
            let q: Vec<f64> = (0..3)
                .map(|k| (pos[k] - ps.pos[k]).abs() - half[k])
                .collect();
            let mut b: Vec<i64> = q.iter().map(|&a| (a > 0.0) as i64).collect();
            b.extend((0..3).map(|k| (pos[k] < ps.pos[k]) as i64));
            b.push(
                q.iter()
                    .enumerate()
                    .max_by(|a, c| a.1.total_cmp(c.1))
                    .unwrap()
                    .0 as i64,
            );
            b
        }
        Shape::Bowl { radius, cut, .. } => {
            let r: [f64; 3] = std::array::from_fn(|k| pos[k] - ps.pos[k]);
            let l = quat_rotate(&ps.rot, &r, true);
            let rim = (radius * radius - cut * cut).sqrt();
            let qx = (l[0] * l[0] + l[2] * l[2]).sqrt();
            let upper = cut * qx < rim * l[1];
            let norm = (l[0] * l[0] + l[1] * l[1] + l[2] * l[2]).sqrt();
            vec![upper as i64, (norm < radius) as i64]
        }
    };
    b.push((infl >= 1.0) as i64);
    let coupled = infl > 0.1 || d <= 0.0;
    b.push(coupled as i64);
    let dt = m.params.dt;
    let v0: [f64; 3] = std::array::from_fn(|k| mv[k] / mass + dt * m.params.gravity[k]);
    let v = if coupled {
        let w = prim.velocity_at(&pos, ps);
        let r: Vec<f64> = (0..3).map(|k| v0[k] - w[k]).collect();
        let rn: f64 = (0..3).map(|k| r[k] * nrm[k]).sum();
        let t: Vec<f64> = (0..3).map(|k| r[k] - rn.min(0.0) * nrm[k]).collect();
        let tn = (t[0] * t[0] + t[1] * t[1] + t[2] * t[2]).sqrt();
        b.push((rn < 0.0) as i64);
        b.push((tn + rn * prim.friction > 0.0) as i64);
        prim.couple(&pos, &v0, ps)
    } else {
        v0
    };
    let cy = (node / m.params.res[2]) % m.params.res[1];
    let ground = cy < m.params.ground_layers && v[1] <= 0.0;
    b.push(ground as i64);
    let vb = if ground {
        let n = (v[0] * v[0] + v[2] * v[2]).sqrt();
        b.push((n + m.params.ground_friction * v[1] > 0.0) as i64);
        ground_friction(&v, m.params.ground_friction)
    } else {
        v
    };
    b.extend(vb.iter().map(|a| a.signum() as i64));
    b
}

/// Whether no branch switches anywhere in the finite-difference stencil `x ± {1, 2}·h_i`
/// (`h_i = h·max(1, |x_i|)`), so that the function the check differentiates is smooth
/// there.
fn smooth_within(m: &MpmModel, x: &[f64], n_sub: usize, h: f64) -> bool {
    let b0 = branches(m, x, n_sub);
    let mut y = x.to_vec();
    for i in 0..x.len() {
        for k in [-2.0, -1.0, 1.0, 2.0] {
            y[i] = x[i] + k * h * x[i].abs().max(1.0);
            if branches(m, &y, n_sub) != b0 {
                return false;
            }
        }
        y[i] = x[i];
    }
    true
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn substeps_adjoint_in_air_with_pusher(r in vec_in(-1.0, 1.0, 63), prim in vec_in(-1.0, 1.0, 6), n_sub in 1usize..4, u in direction(72), v in direction(78)) {
        let model = model(&[Material::Elastic, Material::Plastic, Material::Liquid], vec![Primitive::pusher([0.05, 0.05, 0.05])]);
        let x = substep_input([0.5, 0.5, 0.5], &r, &prim);
        prop_assume!(smooth_within(&model, &x, n_sub, TOL_PRIMITIVE.h));
        check_stage(&Substeps { model, n_sub }, &x, &u, &v, TOL_PRIMITIVE, "MPM substeps in the air");
    }

    #[test]
    fn substeps_adjoint_on_the_ground(r in vec_in(-1.0, 1.0, 63), prim in vec_in(-1.0, 1.0, 6), n_sub in 1usize..4, u in direction(72), v in direction(78)) {
        // the particles' stencils reach the 3 ground layers (y < 3/16) and the pusher is
        // beside them
        let model = model(&[Material::Plastic, Material::Elastic, Material::Plastic], vec![Primitive::pusher([0.05, 0.05, 0.05])]);
        let mut x = substep_input([0.5, 0.2, 0.5], &r, &prim);
        for p in 0..3 {
            x[24 * p + 1] = 0.17 + 0.03 * (r[21 * p + 1] + 1.0); // y in [0.17, 0.23]
            x[24 * p + 4] = -0.5 - 0.5 * r[21 * p + 4].abs(); // moving down
        }
        prop_assume!(smooth_within(&model, &x, n_sub, TOL_PRIMITIVE.h));
        check_stage(&Substeps { model, n_sub }, &x, &u, &v, TOL_PRIMITIVE, "MPM substeps on the ground");
    }
}

#[test]
fn checkpointed_sweep_equals_stored_everything() {
    let model = model(
        &[Material::Elastic, Material::Plastic, Material::Liquid],
        vec![Primitive::pusher([0.05, 0.05, 0.05])],
    );
    let r: Vec<f64> = (0..63).map(|i| ((i as f64) * 0.77).sin()).collect();
    let x = substep_input([0.5, 0.3, 0.5], &r, &[0.2, -0.3, 0.1, 0.5, -0.2, 0.3]);
    let n_sub = 12;
    let s0 = MpmState::from_flat(&x[..72]);
    let mut run = MpmRun::new(&model, run_prims(&x, n_sub, 3));
    let mut sweep = |every: usize, tapes: bool| {
        run.record_tapes = tapes;
        let mut adj = run.zero_adj();
        adj.state = MpmState::from_flat(
            &(0..72)
                .map(|i| ((i as f64) * 0.31).cos())
                .collect::<Vec<_>>(),
        );
        let st = checkpoint::vjp_checkpointed(&run, &s0, n_sub, every, &mut adj);
        (adj, st)
    };
    // the reference: every state stored, every adjoint replaying its forward pass
    let (full, st_full) = sweep(1, false);
    for (every, tapes) in [
        (3, false),
        (5, false),
        (12, false),
        (1, true),
        (3, true),
        (5, true),
        (12, true),
    ] {
        let (a, st) = sweep(every, tapes);
        assert_eq!(st.peak_tapes, if tapes { every } else { 0 });
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&a.state.to_flat()),
            bits(&full.state.to_flat()),
            "every {every}, tapes {tapes}"
        );
        for k in 0..n_sub {
            assert_eq!(
                a.prims[k][0].pos.map(f64::to_bits),
                full.prims[k][0].pos.map(f64::to_bits)
            );
            assert_eq!(
                a.prims[k][0].vel.map(f64::to_bits),
                full.prims[k][0].vel.map(f64::to_bits)
            );
        }
        if 1 < every && every < n_sub {
            assert!(
                st.peak_states < st_full.peak_states,
                "every {every}: {st:?} vs {st_full:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- the parallel path
/// A scene above `PARALLEL_MIN_PARTICLES`: a 17³ block (4913 particles) with perturbed
/// velocities, affine velocities and deformation gradients, optionally with a pusher.
fn big_scene(pusher: bool) -> (MpmModel, MpmState<f64>) {
    let (model, s) = block_scene(17, pusher);
    assert!(model.n_particles() >= sim_deformable::mpm::PARALLEL_MIN_PARTICLES);
    (model, s)
}

/// [`big_scene`]'s block with `n`³ particles.
fn block_scene(n: usize, pusher: bool) -> (MpmModel, MpmState<f64>) {
    let params = MpmParams {
        n_grid: 32,
        res: [32; 3],
        dt: 2e-4,
        youngs_modulus: 1000.0,
        poisson_ratio: 0.2,
        ..MpmParams::default()
    };
    let mats: Vec<ParticleMaterial> = (0..n * n * n)
        .map(|i| ParticleMaterial {
            material: [Material::Elastic, Material::Plastic, Material::Liquid][i % 3],
            hardness: 1.0,
        })
        .collect();
    let prims = if pusher {
        vec![Primitive::pusher([0.05, 0.05, 0.05])]
    } else {
        vec![]
    };
    let model = MpmModel::new(params, mats, prims).unwrap();
    let h = 0.5 * model.dx();
    let mut x = Vec::new();
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                x.push([
                    0.3 + i as f64 * h + 1e-3 * (k as f64).sin(),
                    0.3 + j as f64 * h,
                    0.3 + k as f64 * h,
                ]);
            }
        }
    }
    let mut s = MpmState::at_rest(x);
    for p in 0..s.len() {
        let a = p as f64;
        s.v[p] = [(a * 0.37).sin(), (a * 0.71).cos(), 0.5 * (a * 1.3).sin()];
        for i in 0..3 {
            for j in 0..3 {
                s.c[p][i][j] = ((a + 3.0 * i as f64 + j as f64) * 0.9).sin();
                s.f[p][i][j] += 0.05 * ((a * 0.2 + i as f64 - j as f64) * 1.7).cos();
            }
        }
    }
    (model, s)
}

/// Stage 1 decomposes the particles' trial F four at a time (`svd3_lanes`); every
/// particle must still get exactly its own stage 1 (`particle_stress`, one SVD), on the
/// serial path and on the parallel one, with a last group that is not full (1331 and 4913
/// particles) and all three materials.
#[test]
fn grouped_stage_one_equals_each_particles_own_bit_for_bit() {
    for n in [11, 17] {
        let (model, s0) = block_scene(n, false);
        assert_ne!(s0.len() % sim_deformable::svd::SVD_LANES, 0);
        let mut s = s0.clone();
        let mut sc = model.scratch::<f64>();
        model.substep(&mut s, &[], &mut sc);
        for p in 0..s0.len() {
            let (f, _) = model.particle_stress(p, &s0.f[p], &s0.c[p]);
            let bits =
                |m: &[[f64; 3]; 3]| m.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&s.f[p]),
                bits(&f),
                "{} particles, particle {p}",
                s0.len()
            );
        }
    }
}

#[test]
fn parallel_path_vjp_matches_dual_jvp() {
    for pusher in [false, true] {
        let (model, s) = big_scene(pusher);
        let n_sub = 2;
        let ps = vec![
            vec![
                PrimitiveState::translating([0.42, 0.42, 0.42], [0.3, -0.2, 0.1]);
                model.primitives.len()
            ];
            n_sub
        ];
        let x = s.to_flat();
        let u: Vec<f64> = (0..x.len()).map(|i| ((i as f64) * 0.61).sin()).collect();
        let v: Vec<f64> = (0..x.len()).map(|i| ((i as f64) * 0.43).cos()).collect();
        // JVP by dual numbers through the (parallel) generic forward
        let xd: Vec<Dual<f64>> = x.iter().zip(&v).map(|(&a, &b)| Dual::new(a, b)).collect();
        let psd: Vec<Vec<PrimitiveState<Dual<f64>>>> = ps
            .iter()
            .map(|row| {
                row.iter()
                    .map(|p| {
                        PrimitiveState::translating(
                            p.pos.map(|c| Dual::new(c, 0.0)),
                            p.vel.map(|c| Dual::new(c, 0.0)),
                        )
                    })
                    .collect()
            })
            .collect();
        let run_d = MpmRun::new(&model, psd);
        let jv: Vec<f64> = checkpoint::forward(&run_d, &MpmState::from_flat(&xd), n_sub)
            .to_flat()
            .iter()
            .map(|d| d.eps)
            .collect();
        // VJP
        let run = MpmRun::new(&model, ps);
        let mut adj = run.zero_adj();
        adj.state = MpmState::from_flat(&u);
        checkpoint::vjp_checkpointed(&run, &s, n_sub, 1, &mut adj);
        let ju = adj.state.to_flat();
        let e = diff_core::gradcheck::dot_product_test(&jv, &u, &ju, &v);
        assert!(e <= 1e-9, "pusher {pusher}: dot-product test {e:e}");
    }
}

/// The taped adjoint of one substep equals the replaying one bit for bit, and the taped
/// forward equals the plain one, on the serial and the parallel path, even when other
/// substeps have run on the scratch between the recording and the adjoint.
#[test]
fn taped_substep_adjoint_equals_the_replay() {
    let r: Vec<f64> = (0..63).map(|i| ((i as f64) * 0.77).sin()).collect();
    let x = substep_input([0.5, 0.3, 0.5], &r, &[0.2, -0.3, 0.1, 0.5, -0.2, 0.3]);
    let small = (
        model(
            &[Material::Elastic, Material::Plastic, Material::Liquid],
            vec![Primitive::pusher([0.05, 0.05, 0.05])],
        ),
        MpmState::from_flat(&x[..72]),
        PrimitiveState::translating([x[72], x[73], x[74]], [x[75], x[76], x[77]]),
    );
    let (big_model, big_state) = big_scene(true);
    let big = (
        big_model,
        big_state,
        PrimitiveState::translating([0.42, 0.42, 0.42], [0.3, -0.2, 0.1]),
    );
    for (model, s0, prim) in [small, big] {
        let ps = vec![prim; model.primitives.len()];
        let n = s0.len();
        let seed: Vec<f64> = (0..24 * n).map(|i| ((i as f64) * 0.3).sin()).collect();
        let bits = |s: &MpmState<f64>, ap: &[PrimitiveState<f64>]| {
            let mut out = s.to_flat();
            for p in ap {
                out.extend(p.pos);
                out.extend(p.vel);
            }
            out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        // replay
        let mut sc = model.scratch::<f64>();
        let mut s1 = s0.clone();
        model.substep(&mut s1, &ps, &mut sc);
        let mut adj = MpmState::from_flat(&seed);
        let mut ap = vec![PrimitiveState::zero(); ps.len()];
        model.substep_vjp(&s0, &ps, &mut adj, &mut ap, &mut sc);
        // taped, with two more substeps on the same scratch before the adjoint
        let mut sc2 = model.scratch::<f64>();
        let mut tape = MpmTape::default();
        let mut t1 = s0.clone();
        model.substep_taped(&mut t1, &ps, &mut sc2, &mut tape);
        assert_eq!(bits(&t1, &[]), bits(&s1, &[]), "taped forward");
        let mut t2 = t1.clone();
        model.substep(&mut t2, &ps, &mut sc2);
        model.substep(&mut t2, &ps, &mut sc2);
        let mut adj2 = MpmState::from_flat(&seed);
        let mut ap2 = vec![PrimitiveState::zero(); ps.len()];
        model.substep_vjp_taped(&s0, &tape, &ps, &mut adj2, &mut ap2, &mut sc2);
        assert_eq!(bits(&adj2, &ap2), bits(&adj, &ap), "{n} particles");
        assert!(tape.bytes() > 0);
    }
}

#[test]
fn parallel_path_does_not_depend_on_the_thread_count() {
    let (model, s) = big_scene(true);
    let ps = vec![PrimitiveState::translating(
        [0.42, 0.42, 0.42],
        [0.3, -0.2, 0.1],
    )];
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut sc = model.scratch::<f64>();
            let mut s1 = s.clone();
            model.substep(&mut s1, &ps, &mut sc);
            let mut adj = MpmState::from_flat(
                &(0..24 * s.len())
                    .map(|i| ((i as f64) * 0.3).sin())
                    .collect::<Vec<_>>(),
            );
            let mut ap = vec![PrimitiveState::zero()];
            model.substep_vjp(&s, &ps, &mut adj, &mut ap, &mut sc);
            let mut out = s1.to_flat();
            out.extend(adj.to_flat());
            out.extend(ap[0].pos);
            out.extend(ap[0].vel);
            out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        })
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(3));
}

#[test]
fn node_adjoint_stays_finite_for_tiny_f32_masses() {
    // a node at a stencil's tail: mass ~1e-23 in f32 (its square underflows to 0)
    let model = pusher_model();
    let node = (8 * 16 + 8) * 16 + 8;
    let m = 1e-23f32;
    let mv = [0.3 * m, -0.2 * m, 0.1 * m];
    let ps = [PrimitiveState::translating([0.9f32, 0.9, 0.9], [0.0; 3])];
    let mut ap = [PrimitiveState::zero()];
    let a = [1e-12f32, -2e-12, 3e-12];
    let (am, amv) = model.node_update_vjp(node, m, &mv, &ps, &a, &mut ap);
    assert!(
        am.is_finite() && amv.iter().all(|x| x.is_finite()),
        "{am} {amv:?}"
    );
    // and it agrees with the f64 adjoint at the same point
    let (am64, _) = model.node_update_vjp(
        node,
        m as f64,
        &mv.map(|x| x as f64),
        &[PrimitiveState::translating([0.9, 0.9, 0.9], [0.0; 3])],
        &a.map(|x| x as f64),
        &mut [PrimitiveState::zero()],
    );
    assert!(
        ((am as f64) - am64).abs() <= 1e-5 * am64.abs(),
        "{am} vs {am64}"
    );
}

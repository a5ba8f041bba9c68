//! The 3×3 signed singular value decomposition and the derivatives of the matrix functions
//! the constitutive models build from it.
//!
//! [`svd3`] computes `A = U·diag(σ)·Vᵀ` in `f64` by one-sided Jacobi rotations, with `U`
//! and `V` proper rotations and `σ` sorted by decreasing magnitude; when `det A < 0` the
//! last singular value is negative (the "signed" SVD of MPM codes, so that `U·Vᵀ` is the
//! polar rotation).
//!
//! The constitutive model needs *singular-value functions* `G(A) = U·diag(f(σ))·Vᵀ`: the
//! polar rotation (`f ≡ 1`) and the plastic projection (`f = clamp`). Their derivative,
//! written in the singular bases (`X = Uᵀ·dA·V`, `Y = Uᵀ·dG·V`), is
//! - on the diagonal: `Y_ii = f'(σ_i)·X_ii`;
//! - on each off-diagonal pair: with `s = (X_ij + X_ji)/2`, `k = (X_ij − X_ji)/2`,
//!   `Y_ij = c_ij·s + d_ij·k` and `Y_ji = c_ij·s − d_ij·k`, where
//!   `c_ij = (f(σ_i) − f(σ_j))/(σ_i − σ_j)` and `d_ij = (f(σ_i) + f(σ_j))/(σ_i + σ_j)`.
//!
//! Unlike the derivatives of `U` and `V` themselves (which carry `1/(σ_i² − σ_j²)`), this
//! stays finite for repeated singular values: `c_ij` is a divided difference, replaced by
//! its limit `(f'(σ_i) + f'(σ_j))/2` when `|σ_i − σ_j|` is below [`DIVIDED_DIFFERENCE_EPS`]
//! (exact for the piecewise-linear clamp away from its kinks, and for `f ≡ 1`). Only
//! `σ_i + σ_j → 0` (an element turned inside out) is singular; the denominator is then
//! kept at ±[`INVERSION_EPS`].
//!
//! The map `X ↦ Y` is symmetric, so the same function gives the JVP and the VJP
//! ([`SvFn::linear`]). For generic scalars [`SvFn::apply`] returns `G(A₀) + G'(A₀)·(A − A₀)`
//! with `A₀` the primal part: exact in `f64`/`f32` (where `A − A₀ = 0`) and exactly the
//! JVP for dual numbers.

use crate::mat3::{self, M3};
use diff_core::Real;

/// Below this gap `|σ_i − σ_j|` the divided difference is replaced by its limit.
pub const DIVIDED_DIFFERENCE_EPS: f64 = 1e-9;
/// Smallest `|σ_i + σ_j|` used as a denominator (inverted elements).
pub const INVERSION_EPS: f64 = 1e-6;

/// A signed SVD `A = U·diag(σ)·Vᵀ` with `U`, `V` rotations.
#[derive(Clone, Copy, Debug)]
pub struct Svd3 {
    pub u: M3<f64>,
    pub sigma: [f64; 3],
    pub v: M3<f64>,
}

fn col(m: &M3<f64>, j: usize) -> [f64; 3] {
    [m[0][j], m[1][j], m[2][j]]
}

fn set_col(m: &mut M3<f64>, j: usize, c: [f64; 3]) {
    for i in 0..3 {
        m[i][j] = c[i];
    }
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: &[f64; 3], b: &[f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn normalized(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(&a, &a).sqrt();
    (n > 1e-300).then(|| a.map(|x| x / n))
}

/// A unit vector orthogonal to the unit vector `a`.
fn any_orthogonal(a: &[f64; 3]) -> [f64; 3] {
    let e = if a[0].abs() < 0.6 {
        [1.0, 0.0, 0.0]
    } else if a[1].abs() < 0.6 {
        [0.0, 1.0, 0.0]
    } else {
        [0.0, 0.0, 1.0]
    };
    normalized(cross(a, &e)).expect("a unit vector and a far axis are not parallel")
}

/// The signed SVD of `a` to full `f64` accuracy (see [`svd3_lanes`]; at most 30 sweeps,
/// 3×3 matrices converge in 4–6).
pub fn svd3(a: &M3<f64>) -> Svd3 {
    svd3_tol(a, 1e-15)
}

/// [`svd3`] stopping once every pair of columns of `A·V` is orthogonal to `tol`
/// (relative): the `f32` path asks for its own precision, which saves about half the
/// sweeps. The same arithmetic as one lane of [`svd3_lanes`], so both give identical bits.
pub fn svd3_tol(a: &M3<f64>, tol: f64) -> Svd3 {
    let [d] = svd3_lanes(&[*a], tol);
    d
}

/// Lanes per call of [`svd3_lanes`] on the MPM's batched path.
pub const SVD_LANES: usize = 4;

/// The signed SVDs of `L` matrices at once, each exactly as [`svd3_tol`] computes it.
///
/// One-sided (Hestenes) Jacobi: rotations `V` orthogonalise the columns of `W = A·V`. The
/// rotation of a column pair needs only their Gram entries, so the sweep rotates the Gram
/// matrix `G = WᵀW = VᵀAᵀA·V` (its pair entry set to 0, the others updated) instead of
/// recomputing three dot products per rotation, and forms `W = A·V` once at the end. The
/// lanes run in lockstep: a lane whose pair is already orthogonal to `tol` is left as it
/// is, and a sweep with no rotation in any lane ends the loop (a lane that converged
/// earlier skips every pair of the extra sweeps), so each lane's result equals the
/// single-matrix computation bit for bit. Interleaving independent lanes keeps the
/// divider and the square root busy, which the serial chain of one rotation cannot.
pub fn svd3_lanes<const L: usize>(a: &[M3<f64>; L], tol: f64) -> [Svd3; L] {
    // g[i][j][lane], v[i][j][lane]
    let mut g = [[[0.0f64; L]; 3]; 3];
    for i in 0..3 {
        for j in i..3 {
            for l in 0..L {
                let m = &a[l];
                let s = m[0][i] * m[0][j] + m[1][i] * m[1][j] + m[2][i] * m[2][j];
                g[i][j][l] = s;
                g[j][i][l] = s;
            }
        }
    }
    let mut v = [[[0.0f64; L]; 3]; 3];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = [1.0; L];
    }
    let tol2 = tol * tol;
    for _sweep in 0..30 {
        let mut rotated = false;
        for (p, q, r) in [(0, 1, 2), (0, 2, 1), (1, 2, 0)] {
            let (mut c, mut s, mut t) = ([1.0f64; L], [0.0f64; L], [0.0f64; L]);
            let mut rot = [false; L];
            for l in 0..L {
                let (alpha, beta, gamma) = (g[p][p][l], g[q][q][l], g[p][q][l]);
                if gamma == 0.0 || gamma * gamma <= tol2 * (alpha * beta) {
                    continue;
                }
                rot[l] = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let tl = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let cl = 1.0 / (1.0 + tl * tl).sqrt();
                t[l] = tl;
                c[l] = cl;
                s[l] = cl * tl;
            }
            if !rot.contains(&true) {
                continue;
            }
            rotated = true;
            for l in 0..L {
                if !rot[l] {
                    continue; // this lane's pair is orthogonal already
                }
                let gamma = g[p][q][l];
                g[p][p][l] -= t[l] * gamma;
                g[q][q][l] += t[l] * gamma;
                g[p][q][l] = 0.0;
                g[q][p][l] = 0.0;
                let (grp, grq) = (g[r][p][l], g[r][q][l]);
                let np = c[l] * grp - s[l] * grq;
                let nq = s[l] * grp + c[l] * grq;
                g[r][p][l] = np;
                g[p][r][l] = np;
                g[r][q][l] = nq;
                g[q][r][l] = nq;
                for row in v.iter_mut() {
                    let (x, y) = (row[p][l], row[q][l]);
                    row[p][l] = c[l] * x - s[l] * y;
                    row[q][l] = s[l] * x + c[l] * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    std::array::from_fn(|l| {
        let vl: M3<f64> = std::array::from_fn(|i| std::array::from_fn(|j| v[i][j][l]));
        finish(mat3::mul(&a[l], &vl), vl)
    })
}

/// Sorts, signs and completes the one-sided result `W = A·V` (orthogonal columns) into
/// the signed SVD.
fn finish(w: M3<f64>, v: M3<f64>) -> Svd3 {
    // sort columns by decreasing norm
    let mut norms = [0.0; 3];
    for (j, n) in norms.iter_mut().enumerate() {
        *n = dot(&col(&w, j), &col(&w, j)).sqrt();
    }
    let mut order = [0usize, 1, 2];
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]));
    let (mut ws, mut vs) = (mat3::zero::<f64>(), mat3::zero::<f64>());
    for (k, &j) in order.iter().enumerate() {
        set_col(&mut ws, k, col(&w, j));
        set_col(&mut vs, k, col(&v, j));
    }
    if mat3::det(&vs) < 0.0 {
        for m in [&mut vs, &mut ws] {
            for row in m.iter_mut() {
                row[2] = -row[2];
            }
        }
    }
    // U by Gram–Schmidt on the (already orthogonal) columns, completed to a rotation
    let b0 = col(&ws, 0);
    let u0 = normalized(b0).unwrap_or([1.0, 0.0, 0.0]);
    let b1 = col(&ws, 1);
    let g = dot(&u0, &b1);
    let u1 = normalized([b1[0] - g * u0[0], b1[1] - g * u0[1], b1[2] - g * u0[2]])
        .unwrap_or_else(|| any_orthogonal(&u0));
    let u2 = cross(&u0, &u1);
    let mut u = mat3::zero::<f64>();
    set_col(&mut u, 0, u0);
    set_col(&mut u, 1, u1);
    set_col(&mut u, 2, u2);
    let sigma = [dot(&u0, &b0), dot(&u1, &b1), dot(&u2, &col(&ws, 2))];
    Svd3 { u, sigma, v: vs }
}

/// A singular-value function `f` evaluated at one SVD: its values and derivatives at the
/// three singular values, and the pair coefficients of its derivative.
#[derive(Clone, Copy, Debug)]
pub struct SvFn {
    pub svd: Svd3,
    /// `f(σ_i)`.
    pub f: [f64; 3],
    /// `f'(σ_i)`.
    pub df: [f64; 3],
    /// `c_ij` for the pairs (0,1), (0,2), (1,2).
    c: [f64; 3],
    /// `d_ij` for the same pairs.
    d: [f64; 3],
}

const PAIRS: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];

impl SvFn {
    /// Evaluates `f` (values `f(σ)`, derivatives `f'(σ)`) at `svd`.
    pub fn new(svd: Svd3, f: [f64; 3], df: [f64; 3]) -> SvFn {
        let s = svd.sigma;
        let mut c = [0.0; 3];
        let mut d = [0.0; 3];
        for (k, &(i, j)) in PAIRS.iter().enumerate() {
            let gap = s[i] - s[j];
            c[k] = if gap.abs() > DIVIDED_DIFFERENCE_EPS {
                (f[i] - f[j]) / gap
            } else {
                0.5 * (df[i] + df[j])
            };
            let sum = s[i] + s[j];
            let sum = if sum.abs() >= INVERSION_EPS {
                sum
            } else {
                INVERSION_EPS.copysign(sum)
            };
            d[k] = (f[i] + f[j]) / sum;
        }
        SvFn { svd, f, df, c, d }
    }

    /// The polar rotation `R = U·Vᵀ` of `A` (`f ≡ 1`).
    pub fn rotation(a: &M3<f64>) -> SvFn {
        SvFn::rotation_of(svd3(a))
    }

    /// The polar rotation of the matrix whose SVD is `svd`.
    pub fn rotation_of(svd: Svd3) -> SvFn {
        SvFn::new(svd, [1.0; 3], [0.0; 3])
    }

    /// The projection of the singular values onto `[lo, hi]` (the elasto-plastic return
    /// map). On a kink (`σ` exactly at a bound) the derivative is the inside one (1).
    pub fn clamp(a: &M3<f64>, lo: f64, hi: f64) -> SvFn {
        SvFn::clamp_of(svd3(a), lo, hi)
    }

    /// [`Self::clamp`] of the matrix whose SVD is `svd`.
    pub fn clamp_of(svd: Svd3, lo: f64, hi: f64) -> SvFn {
        let f = svd.sigma.map(|s| s.clamp(lo, hi));
        let df = svd.sigma.map(|s| if s < lo || s > hi { 0.0 } else { 1.0 });
        SvFn::new(svd, f, df)
    }

    /// The SVD of the value `G` (same bases, singular values `f(σ)`).
    pub fn value_svd(&self) -> Svd3 {
        Svd3 {
            u: self.svd.u,
            sigma: self.f,
            v: self.svd.v,
        }
    }

    /// `G = U·diag(f(σ))·Vᵀ`.
    pub fn value(&self) -> M3<f64> {
        let Svd3 { u, v, .. } = self.svd;
        let us: M3<f64> = std::array::from_fn(|i| std::array::from_fn(|j| u[i][j] * self.f[j]));
        mat3::mul_bt(&us, &v)
    }

    /// The derivative applied to `m` (`G'(A)·m`); it is symmetric, so this is also the
    /// VJP (`G'(A)ᵀ·m`).
    pub fn linear<T: Real>(&self, m: &M3<T>) -> M3<T> {
        let u = mat3::cst::<T>(&self.svd.u);
        let v = mat3::cst::<T>(&self.svd.v);
        let x = mat3::mul(&mat3::mul_at(&u, m), &v);
        let mut y = mat3::zero::<T>();
        for i in 0..3 {
            y[i][i] = x[i][i] * T::cst(self.df[i]);
        }
        let half = T::cst(0.5);
        for (k, &(i, j)) in PAIRS.iter().enumerate() {
            let s = (x[i][j] + x[j][i]) * half;
            let a = (x[i][j] - x[j][i]) * half;
            let (c, d) = (T::cst(self.c[k]), T::cst(self.d[k]));
            y[i][j] = c * s + d * a;
            y[j][i] = c * s - d * a;
        }
        mat3::mul_bt(&mat3::mul(&u, &y), &v)
    }

    /// `G(A₀) + G'(A₀)·(a − A₀)` for `a` whose primal part is `A₀` (the matrix this
    /// function was evaluated at): the value for real scalars, value and JVP for duals.
    pub fn apply<T: Real>(&self, a: &M3<T>) -> M3<T> {
        if !T::has_tangent() {
            return mat3::cst(&self.value());
        }
        let a0 = mat3::cst::<T>(&mat3::re(a));
        let da = mat3::sub(a, &a0);
        mat3::add(&mat3::cst(&self.value()), &self.linear(&da))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &M3<f64>, b: &M3<f64>, tol: f64) -> bool {
        (0..3).all(|i| (0..3).all(|j| (a[i][j] - b[i][j]).abs() <= tol))
    }

    fn rot(axis: [f64; 3], angle: f64) -> M3<f64> {
        let n = normalized(axis).unwrap();
        let (s, c) = angle.sin_cos();
        let k = [[0.0, -n[2], n[1]], [n[2], 0.0, -n[0]], [-n[1], n[0], 0.0]];
        let k2 = mat3::mul(&k, &k);
        std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                (if i == j { 1.0 } else { 0.0 }) + s * k[i][j] + (1.0 - c) * k2[i][j]
            })
        })
    }

    fn compose(u: &M3<f64>, s: [f64; 3], v: &M3<f64>) -> M3<f64> {
        let us: M3<f64> = std::array::from_fn(|i| std::array::from_fn(|j| u[i][j] * s[j]));
        mat3::mul_bt(&us, v)
    }

    /// Random matrices of the kinds the MPM meets (rotations, rotations × stretch,
    /// reflections, near-repeated and tiny singular values, diagonal and identity).
    fn assorted(n: usize, seed: u64) -> Vec<M3<f64>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let axis = |rng: &mut rand_chacha::ChaCha8Rng| -> [f64; 3] {
            std::array::from_fn(|_| rng.gen::<f64>() - 0.5)
        };
        (0..n)
            .map(|i| {
                let r1 = rot(axis(&mut rng), rng.gen::<f64>() * 3.0);
                let r2 = rot(axis(&mut rng), rng.gen::<f64>() * 3.0);
                let s: [f64; 3] = match i % 6 {
                    0 => [1.0; 3],
                    1 => std::array::from_fn(|_| 0.9 + 0.2 * rng.gen::<f64>()),
                    2 => [1.0, 1.0 + 1e-9, 1.0 - 1e-9],
                    3 => [2.0, 0.5, -0.3],
                    4 => [1.0, 0.7, 1e-7],
                    _ => std::array::from_fn(|_| 0.3 + 2.0 * rng.gen::<f64>()),
                };
                match i % 7 {
                    0 => mat3::eye::<f64>(),
                    1 => compose(&mat3::eye::<f64>(), s, &mat3::eye::<f64>()),
                    _ => compose(&r1, s, &r2),
                }
            })
            .collect()
    }

    fn bits(d: &Svd3) -> Vec<u64> {
        d.u.iter()
            .chain(d.v.iter())
            .flatten()
            .chain(d.sigma.iter())
            .map(|x| x.to_bits())
            .collect()
    }

    #[test]
    fn lanes_equal_the_single_matrix_sweep_bit_for_bit() {
        let tol_f32 = 8.0 * f32::EPSILON as f64;
        for tol in [tol_f32, 1e-15] {
            let mats = assorted(4 * 500, 11);
            for chunk in mats.chunks(SVD_LANES) {
                let lanes: [M3<f64>; SVD_LANES] = std::array::from_fn(|l| chunk[l]);
                let many = svd3_lanes(&lanes, tol);
                for (m, d) in lanes.iter().zip(&many) {
                    assert_eq!(bits(d), bits(&svd3_tol(m, tol)), "{m:?}");
                    // and it is an SVD: rotations, sorted magnitudes, reconstruction
                    assert!((mat3::det(&d.u) - 1.0).abs() < 1e-9);
                    assert!((mat3::det(&d.v) - 1.0).abs() < 1e-9);
                    // sorted by the columns' norms, which equal |σ| to the orthogonality
                    // tolerance
                    let slack = 4.0 * tol;
                    assert!(d.sigma[0] >= d.sigma[1].abs() - slack);
                    assert!(d.sigma[1] >= d.sigma[2].abs() - slack);
                    let back = compose(&d.u, d.sigma, &d.v);
                    assert!(close(&back, m, 1e-12 + 4.0 * tol), "{m:?} vs {back:?}");
                }
            }
        }
    }

    #[test]
    fn reconstructs_with_rotations_and_sorted_signed_values() {
        let cases = [
            [[1.0, 0.3, -0.2], [0.1, 0.9, 0.4], [-0.5, 0.2, 1.3]],
            [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], // reflection: det −1
            mat3::eye(),
            [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]], // rank 2
            compose(
                &rot([1.0, 2.0, 3.0], 0.7),
                [1.2, 1.2, 0.8],
                &rot([-1.0, 0.5, 0.2], 2.0),
            ),
        ];
        for a in cases {
            let s = svd3(&a);
            assert!(
                close(&compose(&s.u, s.sigma, &s.v), &a, 1e-13),
                "{a:?}: {s:?}"
            );
            assert!((mat3::det(&s.u) - 1.0).abs() < 1e-13);
            assert!((mat3::det(&s.v) - 1.0).abs() < 1e-13);
            assert!(close(&mat3::mul_at(&s.u, &s.u), &mat3::eye(), 1e-13));
            assert!(s.sigma[0] >= s.sigma[1] && s.sigma[1] >= s.sigma[2].abs());
            assert_eq!(s.sigma[2] < 0.0, mat3::det(&a) < 0.0, "{a:?}");
        }
    }

    #[test]
    fn rotation_of_a_rotation_times_stretch_is_the_rotation() {
        let r = rot([0.3, -1.0, 0.4], 1.1);
        let s = compose(
            &rot([1.0, 0.0, 1.0], 0.4),
            [1.5, 0.9, 0.7],
            &rot([1.0, 0.0, 1.0], 0.4),
        );
        let a = mat3::mul(&r, &s);
        assert!(close(&SvFn::rotation(&a).value(), &r, 1e-13));
    }
}

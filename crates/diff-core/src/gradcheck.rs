//! Reusable gradient checks: central finite differences in f64, VJP-vs-FD and the
//! VJP/JVP dot-product test, plus proptest strategies for random inputs.
//!
//! Every hand-written adjoint in the workspace is tested with these helpers:
//! - [`check_vjp_fd`]: `uᵀJ` from the VJP against `uᵀ(∂f/∂x)` by a fourth-order central
//!   difference of the scalar `uᵀf(x)`, coordinate by coordinate;
//! - [`dot_product_test`]: `⟨u, J v⟩` computed by the JVP equals `⟨Jᵀu, v⟩` computed by the
//!   VJP (exact up to rounding, independent of step sizes).

use proptest::prelude::*;

/// Relative error `‖a − b‖₂ / max(‖a‖₂, ‖b‖₂, floor)`.
pub fn rel_err(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_err: length mismatch");
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    diff / na.max(nb).max(floor)
}

/// Dot product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Gradient of the scalar function `g` at `x` by the fourth-order central difference
/// `(−g(x+2h) + 8g(x+h) − 8g(x−h) + g(x−2h)) / 12h`, with `h = step·max(1, |x_i|)`.
pub fn fd_gradient(g: &mut dyn FnMut(&[f64]) -> f64, x: &[f64], step: f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = step * x[i].abs().max(1.0);
            let mut at = |d: f64| {
                xp[i] = x[i] + d;
                let v = g(&xp);
                xp[i] = x[i];
                v
            };
            (-at(2.0 * h) + 8.0 * at(h) - 8.0 * at(-h) + at(-2.0 * h)) / (12.0 * h)
        })
        .collect()
}

/// The outcome of a gradient check, with enough context to debug a failure.
#[derive(Debug, Clone)]
pub struct GradCheck {
    /// Relative error found.
    pub err: f64,
    /// Gradient from the adjoint.
    pub analytic: Vec<f64>,
    /// Gradient from finite differences (or the JVP side of a dot-product test).
    pub reference: Vec<f64>,
}

impl GradCheck {
    /// Fails with a readable message when `err > tol`.
    pub fn assert_within(&self, tol: f64, what: &str) {
        assert!(
            self.err <= tol,
            "{what}: relative error {:.3e} > {tol:.1e}\n analytic  {:?}\n reference {:?}",
            self.err,
            self.analytic,
            self.reference
        );
    }
}

/// A VJP `(x, u) ↦ Jᵀu`.
pub type VjpFn<'a> = dyn FnMut(&[f64], &[f64]) -> Vec<f64> + 'a;

/// Checks a VJP against finite differences: with `f: ℝⁿ → ℝᵐ` and a cotangent `u ∈ ℝᵐ`,
/// compares `vjp(x, u) = Jᵀu` with the FD gradient of `x ↦ ⟨u, f(x)⟩`.
pub fn check_vjp_fd(
    f: &mut dyn FnMut(&[f64]) -> Vec<f64>,
    vjp: &mut VjpFn<'_>,
    x: &[f64],
    u: &[f64],
    step: f64,
) -> GradCheck {
    let analytic = vjp(x, u);
    let reference = fd_gradient(&mut |y| dot(u, &f(y)), x, step);
    let floor = 1e-8 * (1.0 + dot(u, u).sqrt());
    GradCheck {
        err: rel_err(&analytic, &reference, floor),
        analytic,
        reference,
    }
}

/// The dot-product test: `⟨u, jvp(v)⟩` against `⟨vjp(u), v⟩`; returns the relative
/// difference of the two scalars.
pub fn dot_product_test(jvp_v: &[f64], u: &[f64], vjp_u: &[f64], v: &[f64]) -> f64 {
    let a = dot(u, jvp_v);
    let b = dot(vjp_u, v);
    let scale = (dot(u, u).sqrt() * dot(jvp_v, jvp_v).sqrt())
        .max(dot(vjp_u, vjp_u).sqrt() * dot(v, v).sqrt())
        .max(1e-300);
    (a - b).abs() / scale
}

/// A differentiable stage under test: a map ℝⁿ → ℝᵐ, generic over the scalar so that
/// `f64` gives the finite-difference oracle and [`crate::Dual`] the forward-mode JVP, and
/// its VJP through the hand-written adjoint.
pub trait Stage {
    /// The stage's outputs at `x`.
    fn forward<T: crate::Real>(&self, x: &[T]) -> Vec<T>;
    /// `uᵀ ∂forward/∂x` by the hand-written adjoint.
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64>;
}

/// `∂forward/∂x · v` by dual numbers.
pub fn dual_jvp<S: Stage>(s: &S, x: &[f64], v: &[f64]) -> Vec<f64> {
    let xd: Vec<crate::Dual<f64>> = x
        .iter()
        .zip(v)
        .map(|(&a, &b)| crate::Dual::new(a, b))
        .collect();
    s.forward(&xd).iter().map(|d| d.eps).collect()
}

/// Step and tolerances of [`check_stage`].
#[derive(Clone, Copy, Debug)]
pub struct StageTol {
    /// Finite-difference step (scaled by `max(1, |x_i|)`).
    pub h: f64,
    /// Bound on the relative error of the VJP against finite differences.
    pub fd: f64,
    /// Bound on the relative error of the VJP/JVP dot-product test.
    pub dot: f64,
}

/// Both checks of a [`Stage`]: its VJP against fourth-order finite differences with step
/// `tol.h` (relative error ≤ `tol.fd`), and against its dual-number JVP by the
/// dot-product test (≤ `tol.dot`). The cotangent is `u_seed` cycled to the output width
/// with varying weights; `what` names the stage in failure messages.
pub fn check_stage<S: Stage>(
    s: &S,
    x: &[f64],
    u_seed: &[f64],
    v: &[f64],
    tol: StageTol,
    what: &str,
) {
    let StageTol {
        h,
        fd: fd_tol,
        dot: dot_tol,
    } = tol;
    assert_eq!(
        v.len(),
        x.len(),
        "{what}: tangent and input dimensions differ"
    );
    let y = s.forward::<f64>(x);
    let u: Vec<f64> = (0..y.len())
        .map(|i| u_seed[i % u_seed.len()] * (1.0 + 0.1 * i as f64).sin())
        .collect();
    let r = check_vjp_fd(
        &mut |z| s.forward::<f64>(z),
        &mut |z, w| s.vjp(z, w),
        x,
        &u,
        h,
    );
    r.assert_within(fd_tol, &format!("{what}: VJP vs finite differences"));
    let jv = dual_jvp(s, x, v);
    let ju = s.vjp(x, &u);
    let e = dot_product_test(&jv, &u, &ju, v);
    assert!(e <= dot_tol, "{what}: dot-product test {e:e} > {dot_tol:e}");
}

/// A vector of `n` values uniform in `[lo, hi]`.
pub fn vec_in(lo: f64, hi: f64, n: usize) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(lo..hi, n)
}

/// A vector of `n` standard-ish values in `[−1, 1]` (cotangents and tangents).
pub fn direction(n: usize) -> impl Strategy<Value = Vec<f64>> {
    vec_in(-1.0, 1.0, n)
}

/// A proptest config with `cases` cases (256 is the workspace's floor for adjoint tests).
pub fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_global_rejects: cases * 64,
        ..ProptestConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: &[f64]) -> Vec<f64> {
        vec![x[0].sin() * x[1], x[0] * x[0] + x[1].exp()]
    }
    fn vjp(x: &[f64], u: &[f64]) -> Vec<f64> {
        vec![
            u[0] * x[0].cos() * x[1] + u[1] * 2.0 * x[0],
            u[0] * x[0].sin() + u[1] * x[1].exp(),
        ]
    }
    fn jvp(x: &[f64], v: &[f64]) -> Vec<f64> {
        vec![
            x[0].cos() * x[1] * v[0] + x[0].sin() * v[1],
            2.0 * x[0] * v[0] + x[1].exp() * v[1],
        ]
    }

    #[test]
    fn correct_adjoint_passes_and_wrong_adjoint_fails() {
        let x = [0.3, -0.7];
        let u = [0.5, -1.2];
        let v = [0.9, 0.4];
        let ok = check_vjp_fd(&mut |y| f(y), &mut |y, w| vjp(y, w), &x, &u, 1e-3);
        ok.assert_within(1e-9, "correct vjp");
        let wrong = check_vjp_fd(
            &mut |y| f(y),
            &mut |y, w| {
                let mut g = vjp(y, w);
                g[1] *= 1.001;
                g
            },
            &x,
            &u,
            1e-3,
        );
        assert!(
            wrong.err > 1e-4,
            "a 0.1% error must be detected: {}",
            wrong.err
        );
        let e = dot_product_test(&jvp(&x, &v), &u, &vjp(&x, &u), &v);
        assert!(e < 1e-14, "{e}");
        let e_wrong = dot_product_test(&jvp(&x, &[v[0], 0.0]), &u, &vjp(&x, &u), &v);
        assert!(e_wrong > 1e-3);
    }
}

//! The scalar abstraction the simulators' forward code is generic over.
//!
//! Forward kernels are written once over [`Real`] and instantiated with `f32` (training),
//! `f64` (the finite-difference oracle) and [`Dual`] (forward-mode JVPs). Branches (joint
//! limits, contact onset) compare the primal value only, through [`Real::re`], so every
//! instantiation follows the same branch for the same primal input.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real number type: `f32`, `f64` or a dual number over one of them.
pub trait Real:
    Copy
    + Debug
    + Default
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    /// Converts a constant (a model parameter, a literal) into this type with zero tangent.
    fn cst(x: f64) -> Self;
    /// The primal value, used for branching and for reporting.
    fn re(self) -> f64;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    fn atan2(self, x: Self) -> Self;
    /// Machine epsilon of the underlying floating-point type (for iteration tolerances).
    fn epsilon() -> f64;
    /// Whether values carry a tangent (dual numbers): code that adds a first-order term
    /// which is exactly zero for real scalars may skip it when this is false.
    #[inline(always)]
    fn has_tangent() -> bool {
        false
    }

    #[inline(always)]
    fn zero() -> Self {
        Self::cst(0.0)
    }
    #[inline(always)]
    fn one() -> Self {
        Self::cst(1.0)
    }
    /// `self * self`.
    #[inline(always)]
    fn sq(self) -> Self {
        self * self
    }
    /// The larger of two values by primal value (the derivative follows the chosen branch).
    #[inline(always)]
    fn max_r(self, other: Self) -> Self {
        if self.re() >= other.re() {
            self
        } else {
            other
        }
    }
    /// The smaller of two values by primal value (the derivative follows the chosen branch).
    #[inline(always)]
    fn min_r(self, other: Self) -> Self {
        if self.re() <= other.re() {
            self
        } else {
            other
        }
    }
    /// `|self|`, with derivative sign(self) (and +1 at zero).
    #[inline(always)]
    fn abs_r(self) -> Self {
        if self.re() < 0.0 {
            -self
        } else {
            self
        }
    }
}

macro_rules! impl_real_float {
    ($t:ty) => {
        impl Real for $t {
            #[inline(always)]
            fn cst(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn re(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn epsilon() -> f64 {
                <$t>::EPSILON as f64
            }
            #[inline(always)]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn atan2(self, x: Self) -> Self {
                <$t>::atan2(self, x)
            }
        }
    };
}
impl_real_float!(f32);
impl_real_float!(f64);

/// A dual number `re + eps·ε` with ε² = 0: one forward-mode tangent direction.
///
/// Running a forward kernel on `Dual<f64>` with the input tangents set to `v` yields `J·v`
/// in the output tangents (a JVP). The base type is `f32` for Sobolev targets and `f64` for
/// the gradient checks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dual<F> {
    /// Primal value.
    pub re: F,
    /// Tangent (directional derivative).
    pub eps: F,
}

impl<F: Real> Dual<F> {
    /// A dual number with the given value and tangent.
    pub fn new(re: F, eps: F) -> Self {
        Self { re, eps }
    }
}

impl<F: Real> Add for Dual<F> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.eps + o.eps)
    }
}
impl<F: Real> Sub for Dual<F> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Self::new(self.re - o.re, self.eps - o.eps)
    }
}
impl<F: Real> Mul for Dual<F> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Self::new(self.re * o.re, self.eps * o.re + self.re * o.eps)
    }
}
impl<F: Real> Div for Dual<F> {
    type Output = Self;
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        let q = self.re / o.re;
        Self::new(q, (self.eps - q * o.eps) / o.re)
    }
}
impl<F: Real> Neg for Dual<F> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Self::new(-self.re, -self.eps)
    }
}
impl<F: Real> AddAssign for Dual<F> {
    #[inline(always)]
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}
impl<F: Real> SubAssign for Dual<F> {
    #[inline(always)]
    fn sub_assign(&mut self, o: Self) {
        *self = *self - o;
    }
}
impl<F: Real> MulAssign for Dual<F> {
    #[inline(always)]
    fn mul_assign(&mut self, o: Self) {
        *self = *self * o;
    }
}
impl<F: Real> DivAssign for Dual<F> {
    #[inline(always)]
    fn div_assign(&mut self, o: Self) {
        *self = *self / o;
    }
}

impl<F: Real> Real for Dual<F> {
    #[inline(always)]
    fn cst(x: f64) -> Self {
        Self::new(F::cst(x), F::zero())
    }
    #[inline(always)]
    fn re(self) -> f64 {
        self.re.re()
    }
    #[inline(always)]
    fn epsilon() -> f64 {
        F::epsilon()
    }
    #[inline(always)]
    fn has_tangent() -> bool {
        true
    }
    #[inline(always)]
    fn sin(self) -> Self {
        Self::new(self.re.sin(), self.eps * self.re.cos())
    }
    #[inline(always)]
    fn cos(self) -> Self {
        Self::new(self.re.cos(), -self.eps * self.re.sin())
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        let s = self.re.sqrt();
        Self::new(s, self.eps / (F::cst(2.0) * s))
    }
    #[inline(always)]
    fn exp(self) -> Self {
        let e = self.re.exp();
        Self::new(e, self.eps * e)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        Self::new(self.re.ln(), self.eps / self.re)
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        let t = self.re.tanh();
        Self::new(t, self.eps * (F::one() - t * t))
    }
    #[inline(always)]
    fn atan2(self, x: Self) -> Self {
        // d atan2(y, x) = (x dy − y dx) / (x² + y²)
        let r2 = x.re * x.re + self.re * self.re;
        Self::new(
            self.re.atan2(x.re),
            (x.re * self.eps - self.re * x.eps) / r2,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_derivative(f: impl Fn(Dual<f64>) -> Dual<f64>, g: impl Fn(f64) -> f64, x: f64) {
        let d = f(Dual::new(x, 1.0));
        let h = 1e-6;
        let fd = (g(x + h) - g(x - h)) / (2.0 * h);
        assert!((d.re - g(x)).abs() < 1e-12);
        assert!(
            (d.eps - fd).abs() <= 1e-7 * (1.0 + fd.abs()),
            "dual {} vs fd {}",
            d.eps,
            fd
        );
    }

    #[test]
    fn dual_elementary_functions_match_finite_differences() {
        for &x in &[-1.3, -0.2, 0.4, 2.1] {
            check_derivative(|d| d.sin(), f64::sin, x);
            check_derivative(|d| d.cos(), f64::cos, x);
            check_derivative(|d| d.exp(), f64::exp, x);
            check_derivative(|d| d.tanh(), f64::tanh, x);
            check_derivative(
                |d| (d * d + Dual::cst(1.0)).sqrt(),
                |x| (x * x + 1.0).sqrt(),
                x,
            );
            check_derivative(|d| (d * d + Dual::cst(1.0)).ln(), |x| (x * x + 1.0).ln(), x);
            check_derivative(
                |d| Dual::cst(1.0) / (d * d + Dual::cst(0.5)),
                |x| 1.0 / (x * x + 0.5),
                x,
            );
            check_derivative(|d| d.atan2(Dual::cst(0.7)), |x| x.atan2(0.7), x);
            check_derivative(|d| Dual::cst(0.7).atan2(d), |x| 0.7f64.atan2(x), x);
        }
    }

    #[test]
    fn min_max_abs_follow_primal_branch() {
        let a = Dual::new(1.0, 3.0);
        let b = Dual::new(2.0, 5.0);
        assert_eq!(a.max_r(b), b);
        assert_eq!(a.min_r(b), a);
        assert_eq!(Dual::new(-2.0, 1.0).abs_r(), Dual::new(2.0, -1.0));
    }
}

//! Small 3-vector and 3×3-matrix helpers over [`Real`], row-major `[[T; 3]; 3]`.

use diff_core::Real;

/// A 3-vector.
pub type V3<T> = [T; 3];
/// A 3×3 matrix, `m[row][col]`.
pub type M3<T> = [[T; 3]; 3];

/// The zero matrix.
pub fn zero<T: Real>() -> M3<T> {
    [[T::zero(); 3]; 3]
}

/// The identity matrix.
pub fn eye<T: Real>() -> M3<T> {
    let mut m = zero();
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = T::one();
    }
    m
}

/// Converts an `f64` matrix into `T` constants.
pub fn cst<T: Real>(a: &M3<f64>) -> M3<T> {
    a.map(|r| r.map(T::cst))
}

/// The primal (`f64`) values of a matrix.
pub fn re<T: Real>(a: &M3<T>) -> M3<f64> {
    a.map(|r| r.map(|x| x.re()))
}

/// `a + b`.
pub fn add<T: Real>(a: &M3<T>, b: &M3<T>) -> M3<T> {
    std::array::from_fn(|i| std::array::from_fn(|j| a[i][j] + b[i][j]))
}

/// `a − b`.
pub fn sub<T: Real>(a: &M3<T>, b: &M3<T>) -> M3<T> {
    std::array::from_fn(|i| std::array::from_fn(|j| a[i][j] - b[i][j]))
}

/// `s·a`.
pub fn scale<T: Real>(a: &M3<T>, s: T) -> M3<T> {
    a.map(|r| r.map(|x| x * s))
}

/// `a += b`.
pub fn add_assign<T: Real>(a: &mut M3<T>, b: &M3<T>) {
    for i in 0..3 {
        for j in 0..3 {
            a[i][j] += b[i][j];
        }
    }
}

/// `a·b`.
pub fn mul<T: Real>(a: &M3<T>, b: &M3<T>) -> M3<T> {
    std::array::from_fn(|i| {
        std::array::from_fn(|j| a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j])
    })
}

/// `a·bᵀ`.
pub fn mul_bt<T: Real>(a: &M3<T>, b: &M3<T>) -> M3<T> {
    std::array::from_fn(|i| {
        std::array::from_fn(|j| a[i][0] * b[j][0] + a[i][1] * b[j][1] + a[i][2] * b[j][2])
    })
}

/// `aᵀ·b`.
pub fn mul_at<T: Real>(a: &M3<T>, b: &M3<T>) -> M3<T> {
    std::array::from_fn(|i| {
        std::array::from_fn(|j| a[0][i] * b[0][j] + a[1][i] * b[1][j] + a[2][i] * b[2][j])
    })
}

/// `aᵀ`.
pub fn transpose<T: Real>(a: &M3<T>) -> M3<T> {
    std::array::from_fn(|i| std::array::from_fn(|j| a[j][i]))
}

/// `a·v`.
pub fn mul_vec<T: Real>(a: &M3<T>, v: &V3<T>) -> V3<T> {
    std::array::from_fn(|i| a[i][0] * v[0] + a[i][1] * v[1] + a[i][2] * v[2])
}

/// `aᵀ·v`.
pub fn mul_t_vec<T: Real>(a: &M3<T>, v: &V3<T>) -> V3<T> {
    std::array::from_fn(|i| a[0][i] * v[0] + a[1][i] * v[1] + a[2][i] * v[2])
}

/// The outer product `a·bᵀ`.
pub fn outer<T: Real>(a: &V3<T>, b: &V3<T>) -> M3<T> {
    std::array::from_fn(|i| std::array::from_fn(|j| a[i] * b[j]))
}

/// The trace.
pub fn trace<T: Real>(a: &M3<T>) -> T {
    a[0][0] + a[1][1] + a[2][2]
}

/// The cofactor matrix, `∂det(a)/∂a`.
pub fn cofactor<T: Real>(a: &M3<T>) -> M3<T> {
    [
        [
            a[1][1] * a[2][2] - a[1][2] * a[2][1],
            a[1][2] * a[2][0] - a[1][0] * a[2][2],
            a[1][0] * a[2][1] - a[1][1] * a[2][0],
        ],
        [
            a[0][2] * a[2][1] - a[0][1] * a[2][2],
            a[0][0] * a[2][2] - a[0][2] * a[2][0],
            a[0][1] * a[2][0] - a[0][0] * a[2][1],
        ],
        [
            a[0][1] * a[1][2] - a[0][2] * a[1][1],
            a[0][2] * a[1][0] - a[0][0] * a[1][2],
            a[0][0] * a[1][1] - a[0][1] * a[1][0],
        ],
    ]
}

/// The determinant.
pub fn det<T: Real>(a: &M3<T>) -> T {
    let c = cofactor(a);
    a[0][0] * c[0][0] + a[0][1] * c[0][1] + a[0][2] * c[0][2]
}

/// The Frobenius inner product `Σ a_ij b_ij`.
pub fn ddot<T: Real>(a: &M3<T>, b: &M3<T>) -> T {
    let mut s = T::zero();
    for i in 0..3 {
        for j in 0..3 {
            s += a[i][j] * b[i][j];
        }
    }
    s
}

/// Flattens a matrix row-major.
pub fn flat<T: Copy>(a: &M3<T>) -> [T; 9] {
    std::array::from_fn(|k| a[k / 3][k % 3])
}

/// Builds a matrix from 9 row-major values.
pub fn unflat<T: Copy>(a: &[T]) -> M3<T> {
    std::array::from_fn(|i| std::array::from_fn(|j| a[3 * i + j]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cofactor_is_the_determinant_gradient() {
        let a: M3<f64> = [[1.0, 0.3, -0.2], [0.1, 0.9, 0.4], [-0.5, 0.2, 1.3]];
        let c = cofactor(&a);
        let h = 1e-6;
        for i in 0..3 {
            for j in 0..3 {
                let (mut p, mut m) = (a, a);
                p[i][j] += h;
                m[i][j] -= h;
                let fd = (det(&p) - det(&m)) / (2.0 * h);
                assert!(
                    (fd - c[i][j]).abs() < 1e-8,
                    "({i},{j}): {fd} vs {}",
                    c[i][j]
                );
            }
        }
        // a · cofᵀ = det · I
        let p = mul_bt(&a, &c);
        let d = det(&a);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { d } else { 0.0 };
                assert!((p[i][j] - want).abs() < 1e-12);
            }
        }
    }
}

//! World-frame spatial algebra (dflex conventions, tasks.md §1.1), generic over [`Real`].
//!
//! A spatial vector is `[angular(3), linear(3)]`. A twist `(ω, v)` has `v` the velocity of
//! the body point that coincides with the world origin; a wrench `(τ, f)` has `τ` the
//! moment about the world origin. Each operation used by the dynamics comes with the
//! adjoint formulas its reverse pass needs; they are written inline where used and checked
//! by the stage tests in `dynamics.rs`.

use diff_core::Real;

/// A 3-vector.
pub type V3<T> = [T; 3];
/// A 3×3 matrix, row-major.
pub type M3<T> = [[T; 3]; 3];
/// A spatial vector `[angular, linear]`.
pub type Sv<T> = [T; 6];
/// A 6×6 spatial matrix, row-major.
pub type M6<T> = [[T; 6]; 6];

#[inline(always)]
pub fn v3_zero<T: Real>() -> V3<T> {
    [T::zero(); 3]
}
#[inline(always)]
pub fn v3_cst<T: Real>(v: [f64; 3]) -> V3<T> {
    [T::cst(v[0]), T::cst(v[1]), T::cst(v[2])]
}
#[inline(always)]
pub fn add<T: Real>(a: V3<T>, b: V3<T>) -> V3<T> {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
#[inline(always)]
pub fn scale<T: Real>(a: V3<T>, s: T) -> V3<T> {
    [a[0] * s, a[1] * s, a[2] * s]
}
#[inline(always)]
pub fn dot<T: Real>(a: V3<T>, b: V3<T>) -> T {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
#[inline(always)]
pub fn cross<T: Real>(a: V3<T>, b: V3<T>) -> V3<T> {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
#[inline(always)]
pub fn add_assign<T: Real>(a: &mut V3<T>, b: V3<T>) {
    a[0] += b[0];
    a[1] += b[1];
    a[2] += b[2];
}

#[inline(always)]
pub fn m3_zero<T: Real>() -> M3<T> {
    [[T::zero(); 3]; 3]
}
#[inline(always)]
pub fn m3_identity<T: Real>() -> M3<T> {
    let mut m = m3_zero();
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = T::one();
    }
    m
}
#[inline(always)]
pub fn m3_cst<T: Real>(m: [[f64; 3]; 3]) -> M3<T> {
    [v3_cst(m[0]), v3_cst(m[1]), v3_cst(m[2])]
}
/// `A·x`.
#[inline(always)]
pub fn mv<T: Real>(a: &M3<T>, x: V3<T>) -> V3<T> {
    [dot(a[0], x), dot(a[1], x), dot(a[2], x)]
}
/// `A·B`.
#[inline(always)]
pub fn mm<T: Real>(a: &M3<T>, b: &M3<T>) -> M3<T> {
    let mut c = m3_zero();
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
        }
    }
    c
}
/// `A·Bᵀ`.
#[inline(always)]
pub fn mmt<T: Real>(a: &M3<T>, b: &M3<T>) -> M3<T> {
    let mut c = m3_zero();
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = dot(a[i], b[j]);
        }
    }
    c
}

/// `Aᵀ·x`.
#[inline(always)]
pub fn mtv<T: Real>(a: &M3<T>, x: V3<T>) -> V3<T> {
    [
        a[0][0] * x[0] + a[1][0] * x[1] + a[2][0] * x[2],
        a[0][1] * x[0] + a[1][1] * x[1] + a[2][1] * x[2],
        a[0][2] * x[0] + a[1][2] * x[1] + a[2][2] * x[2],
    ]
}

/// `Aᵀ·B`.
#[inline(always)]
pub fn mtm<T: Real>(a: &M3<T>, b: &M3<T>) -> M3<T> {
    let mut c = m3_zero();
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = a[0][i] * b[0][j] + a[1][i] * b[1][j] + a[2][i] * b[2][j];
        }
    }
    c
}
/// `A += B`.
#[inline(always)]
pub fn m3_add_assign<T: Real>(a: &mut M3<T>, b: &M3<T>) {
    for i in 0..3 {
        for j in 0..3 {
            a[i][j] += b[i][j];
        }
    }
}
/// `A += x·yᵀ`.
#[inline(always)]
pub fn m3_add_outer<T: Real>(a: &mut M3<T>, x: V3<T>, y: V3<T>) {
    for i in 0..3 {
        for j in 0..3 {
            a[i][j] += x[i] * y[j];
        }
    }
}
/// The skew matrix `[c]×` with `[c]×·x = c × x`.
#[inline(always)]
pub fn skew<T: Real>(c: V3<T>) -> M3<T> {
    let z = T::zero();
    [[z, -c[2], c[1]], [c[2], z, -c[0]], [-c[1], c[0], z]]
}
/// Adjoint of `skew`: maps a cotangent `K` of `[c]×` to the cotangent of `c`.
#[inline(always)]
pub fn skew_adjoint<T: Real>(k: &M3<T>) -> V3<T> {
    [k[2][1] - k[1][2], k[0][2] - k[2][0], k[1][0] - k[0][1]]
}

/// Rotation by angle `q` about the unit `axis`: `I + sin q [a]× + (1 − cos q)[a]×²`.
#[inline(always)]
pub fn axis_angle<T: Real>(axis: V3<T>, q: T) -> M3<T> {
    let k = skew(axis);
    let k2 = mm(&k, &k);
    let (s, c) = (q.sin(), q.cos());
    let mut r = m3_identity();
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] += s * k[i][j] + (T::one() - c) * k2[i][j];
        }
    }
    r
}

/// A rigid transform `x ↦ R·x + p`.
#[derive(Clone, Copy, Debug)]
pub struct Transform<T> {
    pub p: V3<T>,
    pub r: M3<T>,
}

impl<T: Real> Default for Transform<T> {
    fn default() -> Self {
        Transform {
            p: v3_zero(),
            r: m3_identity(),
        }
    }
}

impl<T: Real> Transform<T> {
    /// Converts an `f64` transform (a model constant).
    pub fn cst(x: &Transform<f64>) -> Self {
        Transform {
            p: v3_cst(x.p),
            r: m3_cst(x.r),
        }
    }
    /// `self · other`.
    #[inline(always)]
    pub fn mul(&self, other: &Transform<T>) -> Transform<T> {
        Transform {
            p: add(self.p, mv(&self.r, other.p)),
            r: mm(&self.r, &other.r),
        }
    }
    /// `R·x + p`.
    #[inline(always)]
    pub fn point(&self, x: V3<T>) -> V3<T> {
        add(self.p, mv(&self.r, x))
    }
}

/// Rotation matrix of a unit quaternion `(x, y, z, w)`.
pub fn quat_to_matrix(q: [f64; 4]) -> M3<f64> {
    let [x, y, z, w] = q;
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - z * w),
            2.0 * (x * z + y * w),
        ],
        [
            2.0 * (x * y + z * w),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - x * w),
        ],
        [
            2.0 * (x * z - y * w),
            2.0 * (y * z + x * w),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

#[inline(always)]
pub fn sv_zero<T: Real>() -> Sv<T> {
    [T::zero(); 6]
}
#[inline(always)]
pub fn sv_ang<T: Real>(s: &Sv<T>) -> V3<T> {
    [s[0], s[1], s[2]]
}
#[inline(always)]
pub fn sv_lin<T: Real>(s: &Sv<T>) -> V3<T> {
    [s[3], s[4], s[5]]
}
#[inline(always)]
pub fn sv_new<T: Real>(ang: V3<T>, lin: V3<T>) -> Sv<T> {
    [ang[0], ang[1], ang[2], lin[0], lin[1], lin[2]]
}
#[inline(always)]
pub fn sv_add<T: Real>(a: &Sv<T>, b: &Sv<T>) -> Sv<T> {
    let mut c = *a;
    for i in 0..6 {
        c[i] += b[i];
    }
    c
}
#[inline(always)]
pub fn sv_add_assign<T: Real>(a: &mut Sv<T>, b: &Sv<T>) {
    for i in 0..6 {
        a[i] += b[i];
    }
}
#[inline(always)]
pub fn sv_scale<T: Real>(a: &Sv<T>, s: T) -> Sv<T> {
    let mut c = *a;
    for x in c.iter_mut() {
        *x *= s;
    }
    c
}
#[inline(always)]
pub fn sv_dot<T: Real>(a: &Sv<T>, b: &Sv<T>) -> T {
    let mut s = T::zero();
    for i in 0..6 {
        s += a[i] * b[i];
    }
    s
}
/// Motion cross product `x ×ₘ y = (ωx × ωy, ωx × vy + vx × ωy)`.
#[inline(always)]
pub fn sv_cross_motion<T: Real>(x: &Sv<T>, y: &Sv<T>) -> Sv<T> {
    let (wx, vx, wy, vy) = (sv_ang(x), sv_lin(x), sv_ang(y), sv_lin(y));
    sv_new(cross(wx, wy), add(cross(wx, vy), cross(vx, wy)))
}
/// Adjoint of [`sv_cross_motion`]: given `λ` for `x ×ₘ y`, returns `(adj_x, adj_y)`.
#[inline(always)]
pub fn sv_cross_motion_adjoint<T: Real>(x: &Sv<T>, y: &Sv<T>, l: &Sv<T>) -> (Sv<T>, Sv<T>) {
    let (wx, vx, wy, vy) = (sv_ang(x), sv_lin(x), sv_ang(y), sv_lin(y));
    let (la, ll) = (sv_ang(l), sv_lin(l));
    let adj_x = sv_new(add(cross(wy, la), cross(vy, ll)), cross(wy, ll));
    let adj_y = sv_new(add(cross(la, wx), cross(ll, vx)), cross(ll, wx));
    (adj_x, adj_y)
}
/// Force cross product `x ×* f = (ωx × τ + vx × f, ωx × f)`.
#[inline(always)]
pub fn sv_cross_force<T: Real>(x: &Sv<T>, f: &Sv<T>) -> Sv<T> {
    let (wx, vx, tf, ff) = (sv_ang(x), sv_lin(x), sv_ang(f), sv_lin(f));
    sv_new(add(cross(wx, tf), cross(vx, ff)), cross(wx, ff))
}
/// Adjoint of [`sv_cross_force`]: given `λ` for `x ×* f`, returns `(adj_x, adj_f)`.
#[inline(always)]
pub fn sv_cross_force_adjoint<T: Real>(x: &Sv<T>, f: &Sv<T>, l: &Sv<T>) -> (Sv<T>, Sv<T>) {
    let (wx, vx, tf, ff) = (sv_ang(x), sv_lin(x), sv_ang(f), sv_lin(f));
    let (la, ll) = (sv_ang(l), sv_lin(l));
    let adj_x = sv_new(add(cross(tf, la), cross(ff, ll)), cross(ff, la));
    let adj_f = sv_new(cross(la, wx), add(cross(la, vx), cross(ll, wx)));
    (adj_x, adj_f)
}

#[inline(always)]
pub fn m6_zero<T: Real>() -> M6<T> {
    [[T::zero(); 6]; 6]
}
/// `A·x` for a 6×6 matrix.
#[inline(always)]
pub fn m6v<T: Real>(a: &M6<T>, x: &Sv<T>) -> Sv<T> {
    let mut y = sv_zero();
    for i in 0..6 {
        y[i] = sv_dot(&a[i], x);
    }
    y
}

/// `Aᵀ·x`.for a 6×6 matrix.
#[inline(always)]
pub fn m6tv<T: Real>(a: &M6<T>, x: &Sv<T>) -> Sv<T> {
    let mut y = sv_zero();
    for (i, row) in a.iter().enumerate() {
        for j in 0..6 {
            y[j] += row[j] * x[i];
        }
    }
    y
}
/// `A += s·x·yᵀ`.
#[inline(always)]
pub fn m6_add_outer<T: Real>(a: &mut M6<T>, x: &Sv<T>, y: &Sv<T>, s: T) {
    for i in 0..6 {
        let xi = x[i] * s;
        for j in 0..6 {
            a[i][j] += xi * y[j];
        }
    }
}
/// `A += B`.
#[inline(always)]
pub fn m6_add_assign<T: Real>(a: &mut M6<T>, b: &M6<T>) {
    for i in 0..6 {
        for j in 0..6 {
            a[i][j] += b[i][j];
        }
    }
}

/// The world-frame spatial inertia about the origin of a body with mass `m`, COM `c`
/// (world), rotation `R` and COM inertia `I_c` (body frame):
/// `[[R I_c Rᵀ − m[c]×[c]×, m[c]×], [−m[c]×, m·1]]`, dflex's
/// `spatial_transform_inertia(X_sm, I_m)`.
#[inline(always)]
pub fn spatial_inertia<T: Real>(m: T, c: V3<T>, r: &M3<T>, i_c: &M3<T>) -> M6<T> {
    let i_rot = mmt(&mm(r, i_c), r);
    let k = skew(c);
    let kk = mm(&k, &k);
    let mut out = m6_zero();
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = i_rot[i][j] - m * kk[i][j];
            out[i][j + 3] = m * k[i][j];
            out[i + 3][j] = -m * k[i][j];
        }
        out[i + 3][i + 3] = m;
    }
    out
}

/// Adjoint of [`spatial_inertia`] with respect to `c` and `R` (mass and `I_c` are
/// constants): accumulates into `adj_c` and `adj_r`.
#[inline(always)]
pub fn spatial_inertia_adjoint<T: Real>(
    m: T,
    c: V3<T>,
    r: &M3<T>,
    i_c: &M3<T>,
    adj: &M6<T>,
    adj_c: &mut V3<T>,
    adj_r: &mut M3<T>,
) {
    let mut a = m3_zero();
    let mut adj_k = m3_zero();
    for i in 0..3 {
        for j in 0..3 {
            a[i][j] = adj[i][j];
            // blocks m[c]× (top right) and −m[c]× (bottom left)
            adj_k[i][j] = m * (adj[i][j + 3] - adj[i + 3][j]);
        }
    }
    // R I_c Rᵀ: adj_R += (A + Aᵀ) R I_c  (I_c symmetric)
    let mut a_sym = a;
    for i in 0..3 {
        for j in 0..3 {
            a_sym[i][j] = a[i][j] + a[j][i];
        }
    }
    m3_add_assign(adj_r, &mm(&mm(&a_sym, r), i_c));
    // −m K K: adj_K += −m (A Kᵀ + Kᵀ A)
    let k = skew(c);
    let t1 = mmt(&a, &k);
    let t2 = mtm(&k, &a);
    for i in 0..3 {
        for j in 0..3 {
            adj_k[i][j] -= m * (t1[i][j] + t2[i][j]);
        }
    }
    add_assign(adj_c, skew_adjoint(&adj_k));
}

// ---------------------------------------------------------------------- quaternions

/// dflex's rotation of a quaternion `q = (x, y, z, w)` as a function of all four components
/// (`quat_rotate`: `R = (2w² − 1)I + 2w[v]× + 2vvᵀ`, `v = (x, y, z)`). Equal to the usual
/// rotation matrix on the unit sphere; off it, this is the function whose derivatives the
/// adjoints return.
#[inline(always)]
pub fn quat_rot<T: Real>(q: [T; 4]) -> M3<T> {
    let v = [q[0], q[1], q[2]];
    let w = q[3];
    let two = T::cst(2.0);
    let d = two * w * w - T::one();
    let mut r = [[T::zero(); 3]; 3];
    for a in 0..3 {
        for b in 0..3 {
            r[a][b] = two * v[a] * v[b];
        }
        r[a][a] += d;
    }
    let tw = two * w;
    r[0][1] -= tw * v[2];
    r[0][2] += tw * v[1];
    r[1][0] += tw * v[2];
    r[1][2] -= tw * v[0];
    r[2][0] -= tw * v[1];
    r[2][1] += tw * v[0];
    r
}

/// Adjoint of [`quat_rot`]: the gradient of `Σ adj ⊙ R(q)` in `q`.
#[inline(always)]
pub fn quat_rot_adjoint<T: Real>(q: [T; 4], adj: &M3<T>) -> [T; 4] {
    let v = [q[0], q[1], q[2]];
    let w = q[3];
    let two = T::cst(2.0);
    // Σ adj ⊙ [v]× = v · k, k = (A21 − A12, A02 − A20, A10 − A01)
    let k = [
        adj[2][1] - adj[1][2],
        adj[0][2] - adj[2][0],
        adj[1][0] - adj[0][1],
    ];
    let tr = adj[0][0] + adj[1][1] + adj[2][2];
    let mut out = [T::zero(); 4];
    out[3] = T::cst(4.0) * w * tr + two * dot(v, k);
    // d/dv_k: 2w·k_k + 2((A + Aᵀ) v)_k
    for i in 0..3 {
        let mut s = T::zero();
        for j in 0..3 {
            s += (adj[i][j] + adj[j][i]) * v[j];
        }
        out[i] = two * w * k[i] + two * s;
    }
    out
}

/// `normalize(q + ½·(ω, 0) ⊗ q·dt)`: dflex's quaternion update with a world-frame (left)
/// angular velocity (`jcalc_integrate`).
#[inline(always)]
pub fn quat_integrate<T: Real>(q: [T; 4], w: V3<T>, dt: T) -> [T; 4] {
    let u = quat_integrate_raw(q, w, dt);
    let n = (u[0] * u[0] + u[1] * u[1] + u[2] * u[2] + u[3] * u[3]).sqrt();
    [u[0] / n, u[1] / n, u[2] / n, u[3] / n]
}

#[inline(always)]
fn quat_integrate_raw<T: Real>(q: [T; 4], w: V3<T>, dt: T) -> [T; 4] {
    let h = dt * T::cst(0.5);
    let qv = [q[0], q[1], q[2]];
    let c = cross(w, qv);
    [
        q[0] + h * (q[3] * w[0] + c[0]),
        q[1] + h * (q[3] * w[1] + c[1]),
        q[2] + h * (q[3] * w[2] + c[2]),
        q[3] - h * dot(w, qv),
    ]
}

/// Adjoint of [`quat_integrate`]: accumulates into `adj_q` and `adj_w`.
#[inline(always)]
pub fn quat_integrate_adjoint<T: Real>(
    q: [T; 4],
    w: V3<T>,
    dt: T,
    adj_out: [T; 4],
    adj_q: &mut [T; 4],
    adj_w: &mut V3<T>,
) {
    let u = quat_integrate_raw(q, w, dt);
    let n = (u[0] * u[0] + u[1] * u[1] + u[2] * u[2] + u[3] * u[3]).sqrt();
    let o = [u[0] / n, u[1] / n, u[2] / n, u[3] / n];
    let od = o[0] * adj_out[0] + o[1] * adj_out[1] + o[2] * adj_out[2] + o[3] * adj_out[3];
    let mut lu = [T::zero(); 4];
    for k in 0..4 {
        lu[k] = (adj_out[k] - o[k] * od) / n;
    }
    let h = dt * T::cst(0.5);
    let qv = [q[0], q[1], q[2]];
    let lv = [lu[0], lu[1], lu[2]];
    let lw = lu[3];
    // u_v = q_v + h(q_w ω + ω × q_v); u_w = q_w − h ω·q_v
    let a = cross(lv, w); // λ·(ω × q_v) = q_v·(λ × ω)
    let b = cross(qv, lv); // = ω·(q_v × λ)
    for k in 0..3 {
        adj_q[k] += lv[k] + h * a[k] - h * lw * w[k];
        adj_w[k] += h * b[k] + h * q[3] * lv[k] - h * lw * qv[k];
    }
    adj_q[3] += lw + h * dot(lv, w);
}

// ---------------------------------------------------------------------- compact inertia

/// `I_s·x` for a body of mass `m`, world COM `c` and world rotational inertia about the
/// COM `i_w`, without forming the 6×6 `I_s`: with `u = x_lin + x_ang × c`,
/// `I_s x = (i_w x_ang + c × m u, m u)`.
#[inline(always)]
pub fn inertia_apply<T: Real>(m: T, c: V3<T>, i_w: &M3<T>, x: &Sv<T>) -> Sv<T> {
    let (xa, xl) = (sv_ang(x), sv_lin(x));
    let hl = scale(add(xl, cross(xa, c)), m);
    sv_new(add(mv(i_w, xa), cross(c, hl)), hl)
}

#[allow(clippy::too_many_arguments)]
/// Adjoint of [`inertia_apply`] (with `i_w` symmetric): accumulates into `adj_c`, `adj_iw`
/// and `adj_x`.
#[inline(always)]
pub fn inertia_apply_adjoint<T: Real>(
    m: T,
    c: V3<T>,
    i_w: &M3<T>,
    x: &Sv<T>,
    l: &Sv<T>,
    adj_c: &mut V3<T>,
    adj_iw: &mut M3<T>,
    adj_x: &mut Sv<T>,
) {
    let (xa, xl) = (sv_ang(x), sv_lin(x));
    let (la, ll) = (sv_ang(l), sv_lin(l));
    let u = add(xl, cross(xa, c));
    let hl = scale(u, m);
    // h_ang = i_w x_ang + c × h_l
    m3_add_outer(adj_iw, la, xa);
    let aw = mv(i_w, la);
    add_assign(adj_c, cross(hl, la));
    let adj_hl = add(ll, cross(la, c));
    // h_l = m u, u = x_lin + x_ang × c
    let adj_u = scale(adj_hl, m);
    add_assign(adj_c, cross(adj_u, xa));
    let ax = add(aw, cross(c, adj_u));
    for k in 0..3 {
        adj_x[k] += ax[k];
        adj_x[3 + k] += adj_u[k];
    }
}

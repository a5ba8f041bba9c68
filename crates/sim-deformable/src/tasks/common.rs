//! Pieces shared by the particle tasks: goal files, state and observation names, and the
//! index-matched shape reward of DaXBench's MPM tasks (tasks.md §7.3).

use crate::mat3::V3;
use diff_core::{Error, Real, Result};
use std::path::PathBuf;

/// The workspace root (goal files are named relative to it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Loads a goal shape: a JSON array of `n` `[x, y, z]` positions at `rel` under the
/// workspace root.
pub fn load_goal(rel: &str, n: usize) -> Result<Vec<V3<f64>>> {
    let path = workspace_root().join(rel);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| Error::BadFile {
        path: shown.clone(),
        reason: format!("cannot read the goal shape ({e}); make it with `cargo run --release -p sim-deformable --example make_goals`"),
    })?;
    let goal: Vec<V3<f64>> = serde_json::from_str(&text).map_err(|e| Error::BadFile {
        path: shown.clone(),
        reason: format!("not a JSON array of [x, y, z] positions: {e}"),
    })?;
    if goal.len() != n {
        return Err(Error::BadFile {
            path: shown,
            reason: format!("{} goal positions for {n} particles", goal.len()),
        });
    }
    Ok(goal)
}

/// Names of a state made of `n` MPM particles (x, v, C, F each) followed by `extra`.
pub fn particle_state_names(n: usize, extra: &[&str]) -> Vec<String> {
    let mut v = Vec::with_capacity(24 * n + extra.len());
    for p in 0..n {
        for q in ["x", "y", "z", "vx", "vy", "vz"] {
            v.push(format!("p{p}.{q}"));
        }
        for m in ["C", "F"] {
            for i in 0..9 {
                v.push(format!("p{p}.{m}{}{}", i / 3, i % 3));
            }
        }
    }
    v.extend(extra.iter().map(|e| e.to_string()));
    v
}

/// Names of an observation of `n` particle positions, then their velocities, then
/// `steps` positions of the primitive `prim`.
pub fn particle_obs_names(n: usize, prim: &str, steps: usize) -> Vec<String> {
    let mut v = Vec::with_capacity(6 * n + 3 * steps);
    for q in [["x", "y", "z"], ["vx", "vy", "vz"]] {
        for p in 0..n {
            v.extend(q.iter().map(|c| format!("p{p}.{c}")));
        }
    }
    for j in 0..steps {
        v.extend(["x", "y", "z"].iter().map(|c| format!("{prim}{j}.{c}")));
    }
    v
}

/// DaXBench's shape loss L: the mean over particles of sqrt(mean over xyz of
/// (x_i − g_i)²), index-matched; the particles' positions are the first 3 of every 24
/// numbers of `s`.
pub fn shape_loss<T: Real>(s: &[T], goal: &[V3<f64>]) -> T {
    let mut l = T::zero();
    for (p, g) in goal.iter().enumerate() {
        let mut m = T::zero();
        for d in 0..3 {
            let e = s[24 * p + d] - T::cst(g[d]);
            m += e * e;
        }
        l += (m / T::cst(3.0)).sqrt();
    }
    l / T::cst(goal.len() as f64)
}

/// The reward `exp(−10·L)`.
pub fn shape_reward<T: Real>(s: &[T], goal: &[V3<f64>]) -> T {
    (T::cst(-10.0) * shape_loss(s, goal)).exp()
}

/// Adjoint of [`shape_reward`] (accumulates into `adj_s`). A particle exactly at its goal
/// position contributes a zero (one-sided) derivative.
pub fn shape_reward_vjp<T: Real>(s: &[T], goal: &[V3<f64>], adj_r: T, adj_s: &mut [T]) {
    let r = shape_reward(s, goal);
    let adj_l = adj_r * r * T::cst(-10.0) / T::cst(goal.len() as f64);
    for (p, g) in goal.iter().enumerate() {
        let e: V3<T> = std::array::from_fn(|d| s[24 * p + d] - T::cst(g[d]));
        let m = (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]) / T::cst(3.0);
        if m.re() <= 0.0 {
            continue;
        }
        let root = m.sqrt();
        for d in 0..3 {
            adj_s[24 * p + d] += adj_l * e[d] / (T::cst(3.0) * root);
        }
    }
}

/// DaXBench's auxiliary training reward (`aux_reward`, tasks.md §7.3): `exp(−d)` with `d`
/// the distance from the point `p` (the pick, or the push start) to the nearest of the `n`
/// particles whose positions sit at `s[stride·i..stride·i + 3]`. The nearest particle is
/// chosen by primal value (its derivative is that of the branch taken).
pub fn contact_aux<T: Real>(p: &V3<T>, s: &[T], n: usize, stride: usize) -> T {
    let (k, _) = nearest(p, s, n, stride);
    let e: V3<T> = std::array::from_fn(|d| p[d] - s[stride * k + d]);
    let dist = (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]).sqrt();
    (-dist).exp()
}

/// Adjoint of [`contact_aux`]: accumulates into `adj_p` and the nearest particle's
/// position in `adj_s`. At zero distance the derivative is taken as 0.
pub fn contact_aux_vjp<T: Real>(
    p: &V3<T>,
    s: &[T],
    n: usize,
    stride: usize,
    adj: T,
    adj_p: &mut V3<T>,
    adj_s: &mut [T],
) {
    let (k, _) = nearest(p, s, n, stride);
    let e: V3<T> = std::array::from_fn(|d| p[d] - s[stride * k + d]);
    let dist = (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]).sqrt();
    if dist.re() <= 0.0 {
        return;
    }
    // ∂exp(−‖e‖)/∂p = −exp(−‖e‖)·e/‖e‖
    let g = -adj * (-dist).exp() / dist;
    for d in 0..3 {
        adj_p[d] += g * e[d];
        adj_s[stride * k + d] -= g * e[d];
    }
}

/// The particle nearest to `p` and its squared distance (primal values).
fn nearest<T: Real>(p: &V3<T>, s: &[T], n: usize, stride: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for i in 0..n {
        let q: f64 = (0..3)
            .map(|d| (p[d].re() - s[stride * i + d].re()).powi(2))
            .sum();
        if q < best.1 {
            best = (i, q);
        }
    }
    best
}

/// The observation of the primitive-driven MPM tasks (whip-rope, the pouring tasks): x and
/// v of the `n` particles (state rows of 24 per particle), then the primitive's positions
/// over the last step's `steps` substeps, from `g − last` to `g`, with `g` at
/// `s[pos..pos + 3]` and the last displacement at `s[last..last + 3]`.
pub fn particle_path_observe<T: Real>(
    s: &[T],
    n: usize,
    (pos, last): (usize, usize),
    steps: usize,
    obs: &mut [T],
) {
    for p in 0..n {
        obs[3 * p..3 * p + 3].copy_from_slice(&s[24 * p..24 * p + 3]);
        obs[3 * n + 3 * p..3 * n + 3 * p + 3].copy_from_slice(&s[24 * p + 3..24 * p + 6]);
    }
    for j in 0..steps {
        let f = T::cst((steps - j) as f64 / steps as f64);
        for d in 0..3 {
            obs[6 * n + 3 * j + d] = s[pos + d] - s[last + d] * f;
        }
    }
}

/// Adjoint of [`particle_path_observe`] (accumulates into `adj_s`).
pub fn particle_path_observe_vjp<T: Real>(
    n: usize,
    (pos, last): (usize, usize),
    steps: usize,
    adj_obs: &[T],
    adj_s: &mut [T],
) {
    for p in 0..n {
        for d in 0..3 {
            adj_s[24 * p + d] += adj_obs[3 * p + d];
            adj_s[24 * p + 3 + d] += adj_obs[3 * n + 3 * p + d];
        }
    }
    for j in 0..steps {
        let f = T::cst((steps - j) as f64 / steps as f64);
        for d in 0..3 {
            let g = adj_obs[6 * n + 3 * j + d];
            adj_s[pos + d] += g;
            adj_s[last + d] -= g * f;
        }
    }
}

/// A reset shift in x and z, each N(0, σ²) (zero without `stochastic` or with σ = 0).
pub fn xz_shift(rng: &mut diff_core::SeededRng, stochastic: bool, sigma: f64) -> [f64; 2] {
    use rand_distr::{Distribution, Normal};
    if stochastic && sigma > 0.0 {
        let nd = Normal::new(0.0, sigma).expect("positive standard deviation");
        [nd.sample(rng), nd.sample(rng)]
    } else {
        [0.0, 0.0]
    }
}

/// How much farther than the nearest particle the second-nearest lies from `p` (the
/// margin by which [`contact_aux`]'s choice of particle is stable).
pub fn contact_margin(p: &V3<f64>, s: &[f64], n: usize, stride: usize) -> f64 {
    let mut d: Vec<f64> = (0..n)
        .map(|i| {
            (0..3)
                .map(|k| (p[k] - s[stride * i + k]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    d.sort_by(f64::total_cmp);
    if d.len() < 2 {
        return f64::INFINITY;
    }
    d[1] - d[0]
}

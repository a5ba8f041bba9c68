//! Gradient-test harness for [`RowTask`]s, shared by the task tests: the reward,
//! observation and step as [`Stage`]s (`diff_core::gradcheck`), reset rows in `f64`, and
//! the check that the batched `f32` adjoint agrees with the `f64` row adjoint.

use super::row::{RowEnv, RowTask};
use diff_core::gradcheck::{rel_err, Stage};
use diff_core::{seeded, Real, Task};
use ndarray::{Array1, Array2};

/// The reward of a state row (at a zero action) as a stage.
pub struct RewardStage<R>(pub R);

impl<R: RowTask> Stage for RewardStage<R> {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let a = vec![T::zero(); self.0.spec().act_dim];
        vec![self.0.reward_row(x, &a)]
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let a = vec![0.0; self.0.spec().act_dim];
        let (mut g, mut ga) = (vec![0.0; x.len()], vec![0.0; a.len()]);
        self.0.reward_row_vjp(x, &a, u[0], &mut g, &mut ga);
        g
    }
}

/// The observation of a state row as a stage.
pub struct ObserveStage<R>(pub R);

impl<R: RowTask> Stage for ObserveStage<R> {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let mut o = vec![T::zero(); self.0.spec().obs_dim];
        self.0.observe_row(x, &mut o);
        o
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let mut g = vec![0.0; x.len()];
        self.0.observe_row_vjp(x, u, &mut g);
        g
    }
}

/// The step as a function of (state row, action), concatenated.
pub struct StepStage<R>(pub R);

impl<R: RowTask> Stage for StepStage<R> {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.0.spec().state_dim;
        self.0.step_row(&x[..n], &x[n..])
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.spec().state_dim;
        let (mut gs, mut ga) = (vec![0.0; n], vec![0.0; x.len() - n]);
        self.0.step_row_vjp(&x[..n], &x[n..], u, &mut gs, &mut ga);
        gs.extend(ga);
        gs
    }
}

/// The auxiliary training reward as a function of (state row, action), concatenated.
pub struct AuxStage<R>(pub R);

impl<R: RowTask> Stage for AuxStage<R> {
    fn forward<T: Real>(&self, x: &[T]) -> Vec<T> {
        let n = self.0.spec().state_dim;
        vec![self
            .0
            .aux_row(&x[..n], &x[n..])
            .expect("the task has an auxiliary reward")]
    }
    fn vjp(&self, x: &[f64], u: &[f64]) -> Vec<f64> {
        let n = self.0.spec().state_dim;
        let (mut gs, mut ga) = (vec![0.0; n], vec![0.0; x.len() - n]);
        self.0.aux_row_vjp(&x[..n], &x[n..], u[0], &mut gs, &mut ga);
        gs.extend(ga);
        gs
    }
}

/// A reset state row (seeded), in `f64`.
pub fn reset_row64<R: RowTask>(task: &R, seed: u64, stochastic: bool) -> Vec<f64> {
    let mut row = vec![0.0f32; task.spec().state_dim];
    task.reset_row(&mut seeded(seed, 0), stochastic, &mut row);
    row.iter().map(|&x| x as f64).collect()
}

/// The distance from `p` to the nearest of the `n` particles whose positions start every
/// `stride` entries of `s`. The contact auxiliary reward `exp(−‖e‖)` has a kink at
/// `‖e‖ = 0`; its central finite difference of step `h` is accurate to about
/// `h²/‖e‖²`, so the gradient tests keep this distance clear of 0.
pub fn nearest_distance(p: &[f64; 3], s: &[f64], n: usize, stride: usize) -> f64 {
    (0..n)
        .map(|i| {
            (0..3)
                .map(|d| (p[d] - s[stride * i + d]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Moves every particle `p` of a state row (position at `x[24·p..24·p + 3]`) that lies
/// closer than `min` to its goal position `goal[p]` out to distance `min`, along its own
/// offset (along +x when it sits exactly on the goal). The index-matched shape loss has
/// a `sqrt` kink at the goal whose curvature grows as 1/distance, so a central finite
/// difference of step `h` is accurate to about `h²/distance²` only this far from it.
pub fn clear_of_goal(x: &mut [f64], goal: &[[f64; 3]], min: f64) {
    for (p, g) in goal.iter().enumerate() {
        let e: [f64; 3] = std::array::from_fn(|d| x[24 * p + d] - g[d]);
        let r = (e[0] * e[0] + e[1] * e[1] + e[2] * e[2]).sqrt();
        if r >= min {
            continue;
        }
        let dir = if r > 1e-9 {
            e.map(|c| c / r)
        } else {
            [1.0, 0.0, 0.0]
        };
        for d in 0..3 {
            x[24 * p + d] = g[d] + min * dir[d];
        }
    }
}

/// Runs the batched contract on `n` stochastic resets and one step under deterministic
/// pseudo-random actions: finite states, rewards, observations and a scene, distinct
/// resets, and the batched `f32` action gradient of the reward through the step against
/// the `f64` row adjoint for row 0. Returns that relative error.
pub fn batched_contract<R: RowTask>(env: &RowEnv<R>, n: usize, seed: u64) -> f64 {
    let spec = env.spec().clone();
    let mut s = Array2::<f32>::zeros((n, spec.state_dim));
    let mut rng = seeded(seed, 0);
    for row in s.outer_iter_mut() {
        env.reset_state(&mut rng, true, row);
    }
    assert!(
        n < 2 || s.row(0) != s.row(1),
        "stochastic resets should differ"
    );
    let a = Array2::<f32>::from_shape_fn((n, spec.act_dim), |(i, j)| {
        ((i * spec.act_dim + j) as f32 * 0.7).sin()
    });
    let mut s1 = Array2::<f32>::zeros((n, spec.state_dim));
    env.step(s.view(), a.view(), s1.view_mut());
    assert!(s1.iter().all(|x| x.is_finite()), "non-finite next state");
    let mut r = Array1::<f32>::zeros(n);
    env.reward(s1.view(), a.view(), r.view_mut());
    assert!(r.iter().all(|x| x.is_finite()), "non-finite reward");
    let mut obs = Array2::<f32>::zeros((n, spec.obs_dim));
    env.observe(s1.view(), obs.view_mut());
    assert!(obs.iter().all(|x| x.is_finite()), "non-finite observation");
    assert!(env.scene(s1.row(0)).is_some(), "no scene");
    let mut adj_next = Array2::<f32>::zeros((n, spec.state_dim));
    let mut adj_a = Array2::<f32>::zeros((n, spec.act_dim));
    let mut adj_s = Array2::<f32>::zeros((n, spec.state_dim));
    env.reward_vjp(
        s1.view(),
        a.view(),
        Array1::ones(n).view(),
        adj_next.view_mut(),
        adj_a.view_mut(),
    );
    env.step_vjp(
        s.view(),
        a.view(),
        adj_next.view(),
        adj_s.view_mut(),
        adj_a.view_mut(),
    );
    let row = env.inner();
    let s64: Vec<f64> = s.row(0).iter().map(|&x| x as f64).collect();
    let a64: Vec<f64> = a.row(0).iter().map(|&x| x as f64).collect();
    let s1_64 = row.step_row(&s64, &a64);
    let (mut g1, mut ga) = (vec![0.0; spec.state_dim], vec![0.0; spec.act_dim]);
    row.reward_row_vjp(&s1_64, &a64, 1.0, &mut g1, &mut ga);
    let mut gs = vec![0.0; spec.state_dim];
    row.step_row_vjp(&s64, &a64, &g1, &mut gs, &mut ga);
    let ga32: Vec<f64> = adj_a.row(0).iter().map(|&x| x as f64).collect();
    rel_err(&ga32, &ga, 1e-6)
}

/// Checks the auxiliary training reward's adjoint ([`AuxStage`]) against finite
/// differences and the dot-product test, at a seeded stochastic reset state and action `a`
/// (`v` is cycled to the input length); also that the reward lies in (0, 1].
pub fn check_aux_adjoint<R: RowTask>(
    task: R,
    seed: u64,
    a: &[f64],
    u: &[f64],
    v: &[f64],
    name: &str,
) {
    let mut x = reset_row64(&task, seed, true);
    let n = x.len();
    x.extend(a);
    let v: Vec<f64> = (0..x.len()).map(|i| v[i % v.len()]).collect();
    let aux = task
        .aux_row(&x[..n], a)
        .expect("the task has an auxiliary reward");
    assert!(aux > 0.0 && aux <= 1.0, "{name}: aux {aux}");
    let tol = diff_core::gradcheck::StageTol {
        h: 1e-5,
        fd: 1e-6,
        dot: 1e-9,
    };
    diff_core::gradcheck::check_stage(&AuxStage(task), &x, u, &v, tol, name);
}

/// The dot-product test of a task step's VJP against its dual-number JVP at
/// `x = (state row, action)`, with `u` and `v` cycled to the output and input lengths
/// (`u` also modulated so that it is not periodic): returns the relative mismatch.
pub fn step_dot_product_error<R: RowTask>(
    step: &StepStage<R>,
    x: &[f64],
    u: &[f64],
    v: &[f64],
) -> f64 {
    let v: Vec<f64> = (0..x.len()).map(|i| v[i % v.len()]).collect();
    let y = step.forward::<f64>(x);
    let u: Vec<f64> = (0..y.len())
        .map(|i| u[i % u.len()] * (1.0 + 0.1 * i as f64).sin())
        .collect();
    let jv = diff_core::gradcheck::dual_jvp(step, x, &v);
    let ju = step.vjp(x, &u);
    diff_core::gradcheck::dot_product_test(&jv, &u, &ju, &v)
}

//! A small smooth task for the tests, with its analytic Jacobian.
//!
//! State `s ∈ ℝ³`, action `a ∈ ℝ²` (clipped to [−1, 1]), `F(s, a) = s + dt·g(s, a)`:
//! `g0 = s2 + 0.5 a0`, `g1 = sin(s0)(1 + a1) − 0.3 s1`, `g2 = a0 − tanh(s1) s2`.
//! With `nan_above`, the VJP and JVP of rows with `s0 > nan_above` are NaN (a stand-in for
//! a contact blow-up); the step itself stays finite.

use diff_core::{SeededRng, Task, TaskSpec};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use rand::Rng;

pub struct Toy {
    spec: TaskSpec,
    pub dt: f64,
    pub nan_above: Option<f32>,
}

impl Toy {
    pub fn new() -> Self {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Toy {
            spec: TaskSpec {
                name: "toy".into(),
                state_dim: 3,
                obs_dim: 3,
                act_dim: 2,
                episode_length: 10,
                dt: 0.1,
                state_names: names(&["p", "q", "r"]),
                obs_names: names(&["p", "q", "r"]),
            },
            dt: 0.1,
            nan_above: None,
        }
    }

    fn clip(a: f64) -> (f64, f64) {
        if a.abs() <= 1.0 {
            (a, 1.0)
        } else {
            (a.signum(), 0.0)
        }
    }

    /// `F(s, a)` in f64.
    pub fn step64(&self, s: &[f64], a: &[f64]) -> [f64; 3] {
        let (a0, _) = Self::clip(a[0]);
        let (a1, _) = Self::clip(a[1]);
        let g = [
            s[2] + 0.5 * a0,
            s[0].sin() * (1.0 + a1) - 0.3 * s[1],
            a0 - s[1].tanh() * s[2],
        ];
        [
            s[0] + self.dt * g[0],
            s[1] + self.dt * g[1],
            s[2] + self.dt * g[2],
        ]
    }

    /// `∂F/∂(s, a)` `[3][5]` in f64.
    pub fn jac64(&self, s: &[f64], a: &[f64]) -> [[f64; 5]; 3] {
        let (a0, c0) = Self::clip(a[0]);
        let (a1, c1) = Self::clip(a[1]);
        let _ = a0;
        let th = s[1].tanh();
        let dg = [
            [0.0, 0.0, 1.0, 0.5 * c0, 0.0],
            [s[0].cos() * (1.0 + a1), -0.3, 0.0, 0.0, s[0].sin() * c1],
            [0.0, -(1.0 - th * th) * s[2], -th, c0, 0.0],
        ];
        let mut j = [[0.0; 5]; 3];
        for o in 0..3 {
            for i in 0..5 {
                j[o][i] = self.dt * dg[o][i] + if o == i { 1.0 } else { 0.0 };
            }
        }
        j
    }

    fn row_jac(&self, s: ArrayView1<f32>, a: ArrayView1<f32>) -> Option<[[f64; 5]; 3]> {
        if self.nan_above.is_some_and(|t| s[0] > t) {
            return None;
        }
        let s: Vec<f64> = s.iter().map(|&v| v as f64).collect();
        let a: Vec<f64> = a.iter().map(|&v| v as f64).collect();
        Some(self.jac64(&s, &a))
    }
}

impl Task for Toy {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, mut s_next: ArrayViewMut2<f32>) {
        for r in 0..s.nrows() {
            let sr: Vec<f64> = s.row(r).iter().map(|&v| v as f64).collect();
            let ar: Vec<f64> = a.row(r).iter().map(|&v| v as f64).collect();
            for (o, v) in self.step64(&sr, &ar).iter().enumerate() {
                s_next[[r, o]] = *v as f32;
            }
        }
    }

    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        for r in 0..s.nrows() {
            let j = self.row_jac(s.row(r), a.row(r));
            for i in 0..5 {
                let g = match j {
                    None => f64::NAN,
                    Some(j) => (0..3).map(|o| j[o][i] * adj_next[[r, o]] as f64).sum(),
                };
                if i < 3 {
                    adj_s[[r, i]] += g as f32;
                } else {
                    adj_a[[r, i - 3]] += g as f32;
                }
            }
        }
    }

    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        mut ds_next: ArrayViewMut2<f32>,
    ) {
        for r in 0..s.nrows() {
            let j = self.row_jac(s.row(r), a.row(r));
            for o in 0..3 {
                ds_next[[r, o]] = match j {
                    None => f32::NAN,
                    Some(j) => (0..5)
                        .map(|i| {
                            let t = if i < 3 { ds[[r, i]] } else { da[[r, i - 3]] };
                            j[o][i] * t as f64
                        })
                        .sum::<f64>() as f32,
                };
            }
        }
    }

    fn observe(&self, s: ArrayView2<f32>, mut obs: ArrayViewMut2<f32>) {
        obs.assign(&s);
    }
    fn observe_vjp(
        &self,
        _: ArrayView2<f32>,
        adj_obs: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
    ) {
        adj_s += &adj_obs;
    }
    fn reward(&self, _: ArrayView2<f32>, _: ArrayView2<f32>, mut r: ArrayViewMut1<f32>) {
        r.fill(0.0);
    }
    fn reward_vjp(
        &self,
        _: ArrayView2<f32>,
        _: ArrayView2<f32>,
        _: ArrayView1<f32>,
        _: ArrayViewMut2<f32>,
        _: ArrayViewMut2<f32>,
    ) {
    }
    fn terminated(&self, _: ArrayView2<f32>, out: &mut [bool]) {
        out.fill(false);
    }
    fn reset_state(&self, _: &mut SeededRng, _: bool, mut s: ArrayViewMut1<f32>) {
        s.fill(0.0);
    }
}

/// Random states (with distinct scales and offsets per coordinate) and actions in
/// (−0.9, 0.9).
pub fn random_inputs(rng: &mut SeededRng, n: usize) -> (Array2<f32>, Array2<f32>) {
    let scale = [1.5f32, 0.8, 2.0];
    let offset = [0.3f32, -0.5, 1.0];
    let s = Array2::from_shape_fn((n, 3), |(_, j)| {
        offset[j] + scale[j] * rng.gen_range(-1.0..1.0)
    });
    let a = Array2::from_shape_fn((n, 2), |_| rng.gen_range(-0.9..0.9));
    (s, a)
}

/// The toy dynamics seen through a nonlinear observation `o = (p², sin q, r, p·r)`
/// (4 entries from 3 states): the observation-space targets go through its VJP.
pub struct ObservedToy {
    pub toy: Toy,
    spec: TaskSpec,
}

impl ObservedToy {
    pub fn new() -> Self {
        let toy = Toy::new();
        let mut spec = toy.spec.clone();
        spec.obs_dim = 4;
        spec.obs_names = ["p2", "sin_q", "r", "pr"].map(String::from).to_vec();
        ObservedToy { toy, spec }
    }

    /// `∂o/∂s` `[4][3]` at `s`.
    pub fn obs_jac(s: &[f64]) -> [[f64; 3]; 4] {
        [
            [2.0 * s[0], 0.0, 0.0],
            [0.0, s[1].cos(), 0.0],
            [0.0, 0.0, 1.0],
            [s[2], 0.0, s[0]],
        ]
    }
}

impl Task for ObservedToy {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }
    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, s_next: ArrayViewMut2<f32>) {
        self.toy.step(s, a, s_next)
    }
    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        self.toy.step_vjp(s, a, adj_next, adj_s, adj_a)
    }
    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        ds_next: ArrayViewMut2<f32>,
    ) {
        self.toy.step_jvp(s, a, ds, da, ds_next)
    }
    fn observe(&self, s: ArrayView2<f32>, mut obs: ArrayViewMut2<f32>) {
        for (r, row) in s.rows().into_iter().enumerate() {
            let (p, q, rr) = (row[0], row[1], row[2]);
            obs[[r, 0]] = p * p;
            obs[[r, 1]] = q.sin();
            obs[[r, 2]] = rr;
            obs[[r, 3]] = p * rr;
        }
    }
    fn observe_vjp(
        &self,
        s: ArrayView2<f32>,
        adj_obs: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
    ) {
        for (r, row) in s.rows().into_iter().enumerate() {
            let sv: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            let j = Self::obs_jac(&sv);
            for i in 0..3 {
                let g: f64 = (0..4).map(|o| j[o][i] * adj_obs[[r, o]] as f64).sum();
                adj_s[[r, i]] += g as f32;
            }
        }
    }
    fn reward(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, r: ArrayViewMut1<f32>) {
        self.toy.reward(s, a, r)
    }
    fn reward_vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        adj_s_next: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        self.toy.reward_vjp(s_next, a, adj_r, adj_s_next, adj_a)
    }
    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]) {
        self.toy.terminated(s_next, out)
    }
    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, s: ArrayViewMut1<f32>) {
        self.toy.reset_state(rng, stochastic, s)
    }
}

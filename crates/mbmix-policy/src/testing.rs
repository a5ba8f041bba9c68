//! A small smooth task for the crate's tests: a damped point mass on a nonlinear spring,
//! with hand-derived VJP and JVP (checked against finite differences below).
//!
//! State `[x, v]`, action `a` (clipped to [−1, 1]):
//! `v′ = v + dt·(g·a − c·v − k·sin x)`, `x′ = x + dt·v′` (semi-implicit Euler);
//! observation `[x, v, sin x]`; reward `−(x′² + 0.1·v′² + 0.01·a²)`;
//! terminated when `|x′| > x_max`; success when the last state has `|x| < 0.25`.

use diff_core::rng::uniform01;
use diff_core::{SeededRng, Task, TaskSpec};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

/// The damped point mass.
pub struct PointMass {
    spec: TaskSpec,
    /// Time step.
    pub dt: f32,
    /// Force gain g.
    pub gain: f32,
    /// Damping c.
    pub damping: f32,
    /// Spring stiffness k (of the `sin x` spring).
    pub stiffness: f32,
    /// Termination bound on |x|.
    pub x_max: f32,
}

impl PointMass {
    /// A point mass with episodes of `episode_length` steps.
    pub fn new(episode_length: usize) -> Self {
        PointMass {
            spec: TaskSpec {
                name: "point-mass".into(),
                state_dim: 2,
                obs_dim: 3,
                act_dim: 1,
                episode_length,
                dt: 0.05,
                state_names: vec!["x".into(), "v".into()],
                obs_names: vec!["x".into(), "v".into(), "sin_x".into()],
            },
            dt: 0.05,
            gain: 2.0,
            damping: 0.3,
            stiffness: 0.5,
            x_max: 4.0,
        }
    }

    fn clip(a: f32) -> (f32, f32) {
        if a.abs() <= 1.0 {
            (a, 1.0)
        } else {
            (a.signum(), 0.0)
        }
    }
}

impl Task for PointMass {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, mut s_next: ArrayViewMut2<f32>) {
        for i in 0..s.nrows() {
            let (x, v) = (s[[i, 0]], s[[i, 1]]);
            let (ac, _) = Self::clip(a[[i, 0]]);
            let v1 = v + self.dt * (self.gain * ac - self.damping * v - self.stiffness * x.sin());
            s_next[[i, 0]] = x + self.dt * v1;
            s_next[[i, 1]] = v1;
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
        for i in 0..s.nrows() {
            let x = s[[i, 0]];
            let (_, da) = Self::clip(a[[i, 0]]);
            // x′ = x + dt·v′ ⇒ the total adjoint of v′ is adj_v′ + dt·adj_x′.
            let w = adj_next[[i, 1]] + self.dt * adj_next[[i, 0]];
            adj_s[[i, 0]] += adj_next[[i, 0]] - w * self.dt * self.stiffness * x.cos();
            adj_s[[i, 1]] += w * (1.0 - self.dt * self.damping);
            adj_a[[i, 0]] += w * self.dt * self.gain * da;
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
        for i in 0..s.nrows() {
            let x = s[[i, 0]];
            let (_, dclip) = Self::clip(a[[i, 0]]);
            let dv1 = ds[[i, 1]]
                + self.dt
                    * (self.gain * dclip * da[[i, 0]]
                        - self.damping * ds[[i, 1]]
                        - self.stiffness * x.cos() * ds[[i, 0]]);
            ds_next[[i, 0]] = ds[[i, 0]] + self.dt * dv1;
            ds_next[[i, 1]] = dv1;
        }
    }

    fn observe(&self, s: ArrayView2<f32>, mut obs: ArrayViewMut2<f32>) {
        for i in 0..s.nrows() {
            obs[[i, 0]] = s[[i, 0]];
            obs[[i, 1]] = s[[i, 1]];
            obs[[i, 2]] = s[[i, 0]].sin();
        }
    }

    fn observe_vjp(
        &self,
        s: ArrayView2<f32>,
        adj_obs: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
    ) {
        for i in 0..s.nrows() {
            adj_s[[i, 0]] += adj_obs[[i, 0]] + adj_obs[[i, 2]] * s[[i, 0]].cos();
            adj_s[[i, 1]] += adj_obs[[i, 1]];
        }
    }

    fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, mut r: ArrayViewMut1<f32>) {
        for i in 0..s_next.nrows() {
            let (x, v) = (s_next[[i, 0]], s_next[[i, 1]]);
            let (ac, _) = Self::clip(a[[i, 0]]);
            r[i] = -(x * x + 0.1 * v * v + 0.01 * ac * ac);
        }
    }

    fn reward_vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        mut adj_s_next: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        for i in 0..s_next.nrows() {
            let (x, v) = (s_next[[i, 0]], s_next[[i, 1]]);
            let (ac, dclip) = Self::clip(a[[i, 0]]);
            adj_s_next[[i, 0]] += -2.0 * x * adj_r[i];
            adj_s_next[[i, 1]] += -0.2 * v * adj_r[i];
            adj_a[[i, 0]] += -0.02 * ac * dclip * adj_r[i];
        }
    }

    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = s_next[[i, 0]].abs() > self.x_max;
        }
    }

    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, mut s: ArrayViewMut1<f32>) {
        if stochastic {
            s[0] = (4.0 * uniform01(rng) - 2.0) as f32;
            s[1] = (uniform01(rng) - 0.5) as f32;
        } else {
            s[0] = 1.0;
            s[1] = 0.0;
        }
    }

    fn episode_success(&self, states: ArrayView2<f32>) -> Option<bool> {
        let last = states.row(states.nrows() - 1);
        Some(last[0].abs() < 0.25)
    }

    /// An auxiliary reward of the pre-step state and the action, `−(x − 0.5·a)²` (smooth,
    /// for the trainers' `aux_reward` tests).
    fn aux_reward(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        mut out: ArrayViewMut1<f32>,
    ) -> bool {
        for i in 0..s.nrows() {
            let e = s[[i, 0]] - 0.5 * a[[i, 0]];
            out[i] = -e * e;
        }
        true
    }

    fn aux_reward_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj: ArrayView1<f32>,
        mut adj_s: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        for i in 0..s.nrows() {
            let e = s[[i, 0]] - 0.5 * a[[i, 0]];
            adj_s[[i, 0]] += -2.0 * e * adj[i];
            adj_a[[i, 0]] += e * adj[i];
        }
    }
}

/// A point mass whose dynamics VJP returns NaN action adjoints, to exercise SHAC's
/// non-finite-gradient policy.
pub struct NanAdjoint(pub PointMass);

impl Task for NanAdjoint {
    fn spec(&self) -> &TaskSpec {
        self.0.spec()
    }
    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, s_next: ArrayViewMut2<f32>) {
        self.0.step(s, a, s_next)
    }
    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        self.0.step_vjp(s, a, adj_next, adj_s, adj_a.view_mut());
        adj_a.fill(f32::NAN);
    }
    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        ds_next: ArrayViewMut2<f32>,
    ) {
        self.0.step_jvp(s, a, ds, da, ds_next)
    }
    fn observe(&self, s: ArrayView2<f32>, obs: ArrayViewMut2<f32>) {
        self.0.observe(s, obs)
    }
    fn observe_vjp(&self, s: ArrayView2<f32>, adj_obs: ArrayView2<f32>, adj_s: ArrayViewMut2<f32>) {
        self.0.observe_vjp(s, adj_obs, adj_s)
    }
    fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, r: ArrayViewMut1<f32>) {
        self.0.reward(s_next, a, r)
    }
    fn reward_vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        adj_s_next: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        self.0.reward_vjp(s_next, a, adj_r, adj_s_next, adj_a)
    }
    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]) {
        self.0.terminated(s_next, out)
    }
    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, s: ArrayViewMut1<f32>) {
        self.0.reset_state(rng, stochastic, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diff_core::gradcheck::{check_vjp_fd, dot_product_test};
    use ndarray::{Array1, Array2};

    fn to_f32(x: &[f64]) -> Array2<f32> {
        Array2::from_shape_vec((1, x.len()), x.iter().map(|&v| v as f32).collect()).unwrap()
    }

    /// The toy's adjoints are themselves tested: VJPs against finite differences of the
    /// forward maps (f32 forward, so loose tolerances) and the dot-product test against the JVP.
    #[test]
    fn toy_adjoints_match_finite_differences() {
        let task = PointMass::new(10);
        let x0 = [0.7, -0.4, 0.3]; // x, v, a
        let u = [0.8, -1.3];
        let step = |z: &[f64]| {
            let s = to_f32(&z[..2]);
            let a = to_f32(&z[2..]);
            let mut out = Array2::zeros((1, 2));
            task.step(s.view(), a.view(), out.view_mut());
            out.iter().map(|&v| v as f64).collect::<Vec<_>>()
        };
        let vjp = |z: &[f64], w: &[f64]| {
            let s = to_f32(&z[..2]);
            let a = to_f32(&z[2..]);
            let mut adj_s = Array2::zeros((1, 2));
            let mut adj_a = Array2::zeros((1, 1));
            task.step_vjp(
                s.view(),
                a.view(),
                to_f32(w).view(),
                adj_s.view_mut(),
                adj_a.view_mut(),
            );
            adj_s
                .iter()
                .chain(adj_a.iter())
                .map(|&v| v as f64)
                .collect::<Vec<_>>()
        };
        check_vjp_fd(&mut |z| step(z), &mut |z, w| vjp(z, w), &x0, &u, 1e-2)
            .assert_within(1e-4, "point-mass step VJP");
        // Dot-product test VJP vs JVP.
        let v = [0.3, 0.9, -0.5];
        let s = to_f32(&x0[..2]);
        let a = to_f32(&x0[2..]);
        let mut jv = Array2::zeros((1, 2));
        task.step_jvp(
            s.view(),
            a.view(),
            to_f32(&v[..2]).view(),
            to_f32(&v[2..]).view(),
            jv.view_mut(),
        );
        let jv: Vec<f64> = jv.iter().map(|&x| x as f64).collect();
        let e = dot_product_test(&jv, &u, &vjp(&x0, &u), &v);
        assert!(e < 1e-6, "dot product {e}");

        // Observation and reward.
        let uo = [0.5, -0.7, 1.1];
        check_vjp_fd(
            &mut |z| {
                let mut o = Array2::zeros((1, 3));
                task.observe(to_f32(z).view(), o.view_mut());
                o.iter().map(|&v| v as f64).collect()
            },
            &mut |z, w| {
                let mut adj = Array2::zeros((1, 2));
                task.observe_vjp(to_f32(z).view(), to_f32(w).view(), adj.view_mut());
                adj.iter().map(|&v| v as f64).collect()
            },
            &x0[..2],
            &uo,
            1e-2,
        )
        .assert_within(1e-4, "point-mass observe VJP");
        check_vjp_fd(
            &mut |z| {
                let mut r = Array1::zeros(1);
                task.reward(to_f32(&z[..2]).view(), to_f32(&z[2..]).view(), r.view_mut());
                vec![r[0] as f64]
            },
            &mut |z, w| {
                let mut adj_s = Array2::zeros((1, 2));
                let mut adj_a = Array2::zeros((1, 1));
                let adj_r = Array1::from_vec(vec![w[0] as f32]);
                task.reward_vjp(
                    to_f32(&z[..2]).view(),
                    to_f32(&z[2..]).view(),
                    adj_r.view(),
                    adj_s.view_mut(),
                    adj_a.view_mut(),
                );
                adj_s
                    .iter()
                    .chain(adj_a.iter())
                    .map(|&v| v as f64)
                    .collect()
            },
            &x0,
            &[1.7],
            1e-2,
        )
        .assert_within(1e-4, "point-mass reward VJP");
    }
}

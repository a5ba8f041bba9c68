//! A linear change of action coordinates in front of a task: the policy acts in its own
//! coordinates `a_p` (`[N, P]`), and the task receives `a = a_p·Mᵀ` (`[N, A]`, with `M`
//! `[A, P]`), which it clips to [−1, 1] as always. A gym-style action wrapper: the
//! dynamics, rewards, observations, resets and episodes are the task's own, unchanged;
//! only the coordinates the policy's actions are expressed in differ.
//!
//! Its use: a pick-and-place action `(pick, place)` whose place is written relative to its
//! pick, `place = pick + k·offset` (the rows of `M` for the place entries hold 1 at the
//! pick's column and `k` at the offset's). The simulator's gradient with respect to a
//! grasped point's pick is nearly the negative of the one with respect to its place (a
//! grasped particle keeps its offset from the gripper), so in the task's coordinates a
//! gradient step that moves the place also pushes the pick away from the cloth; in the
//! relative coordinates it moves the displacement and leaves the pick where it grasps.
//!
//! Every derivative is the exact transpose of the linear map: the step's and the reward's
//! action adjoints are `adj_a·M`, their JVPs take `da·Mᵀ`.

use crate::{Error, Result, Scene, SeededRng, Task, TaskSpec};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use std::sync::Arc;

/// `inner` behind the linear action map `M` (see the module docs).
pub struct LinearAction {
    inner: Arc<dyn Task>,
    /// `[task act_dim, policy act_dim]`.
    m: Array2<f32>,
    spec: TaskSpec,
}

impl LinearAction {
    /// Wraps `inner`; `m` has one row per task action entry and one column per policy
    /// action entry, all finite.
    pub fn new(inner: Arc<dyn Task>, m: Array2<f32>) -> Result<LinearAction> {
        let task_dim = inner.spec().act_dim;
        if m.nrows() != task_dim {
            return Err(Error::Dimension {
                what: format!(
                    "action map of `{}` (one row per task action entry)",
                    inner.spec().name
                ),
                expected: task_dim.to_string(),
                got: m.nrows().to_string(),
            });
        }
        if m.ncols() == 0 {
            return Err(Error::InvalidParameter {
                name: "action_map.matrix".into(),
                reason: "needs at least one column (policy action entry)".into(),
            });
        }
        if m.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidParameter {
                name: "action_map.matrix".into(),
                reason: "entries must be finite".into(),
            });
        }
        let mut spec = inner.spec().clone();
        spec.act_dim = m.ncols();
        Ok(LinearAction { inner, m, spec })
    }

    /// The relative pick-and-place map for a 6-D `(pick x, y, z, place x, y, z)` action:
    /// `place = pick + scale·offset`, the pick unchanged.
    pub fn relative_place(inner: Arc<dyn Task>, scale: f32) -> Result<LinearAction> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::InvalidParameter {
                name: "action_map.relative_place".into(),
                reason: format!("the offset scale must be positive, got {scale}"),
            });
        }
        let mut m = Array2::<f32>::zeros((6, 6));
        for d in 0..3 {
            m[[d, d]] = 1.0;
            m[[3 + d, d]] = 1.0;
            m[[3 + d, 3 + d]] = scale;
        }
        LinearAction::new(inner, m)
    }

    /// The map `M` (`[task act_dim, policy act_dim]`).
    pub fn matrix(&self) -> &Array2<f32> {
        &self.m
    }

    /// The wrapped task.
    pub fn inner(&self) -> &Arc<dyn Task> {
        &self.inner
    }

    /// The task's actions for the policy's `a_p`: `a_p·Mᵀ`.
    pub fn task_actions(&self, a: ArrayView2<f32>) -> Array2<f32> {
        a.dot(&self.m.t())
    }

    /// Runs an inner adjoint `vjp(task actions, task action adjoint)` for the policy's
    /// actions `a` and pulls its action adjoint back: `adj_a += adj_task·M`.
    fn pulled_back(
        &self,
        a: ArrayView2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
        vjp: impl FnOnce(ArrayView2<f32>, ArrayViewMut2<f32>),
    ) {
        let mut adj_task = Array2::zeros((a.nrows(), self.m.nrows()));
        vjp(self.task_actions(a).view(), adj_task.view_mut());
        adj_a += &adj_task.dot(&self.m);
    }
}

impl Task for LinearAction {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, s_next: ArrayViewMut2<f32>) {
        self.inner.step(s, self.task_actions(a).view(), s_next);
    }

    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        self.pulled_back(a, adj_a, |a_task, adj_task| {
            self.inner.step_vjp(s, a_task, adj_next, adj_s, adj_task)
        });
    }

    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        ds_next: ArrayViewMut2<f32>,
    ) {
        self.inner.step_jvp(
            s,
            self.task_actions(a).view(),
            ds,
            self.task_actions(da).view(),
            ds_next,
        );
    }

    fn observe(&self, s: ArrayView2<f32>, obs: ArrayViewMut2<f32>) {
        self.inner.observe(s, obs);
    }

    fn observe_vjp(&self, s: ArrayView2<f32>, adj_obs: ArrayView2<f32>, adj_s: ArrayViewMut2<f32>) {
        self.inner.observe_vjp(s, adj_obs, adj_s);
    }

    fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, r: ArrayViewMut1<f32>) {
        self.inner.reward(s_next, self.task_actions(a).view(), r);
    }

    fn reward_vjp(
        &self,
        s_next: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_r: ArrayView1<f32>,
        adj_s_next: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        self.pulled_back(a, adj_a, |a_task, adj_task| {
            self.inner
                .reward_vjp(s_next, a_task, adj_r, adj_s_next, adj_task)
        });
    }

    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]) {
        self.inner.terminated(s_next, out);
    }

    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, s: ArrayViewMut1<f32>) {
        self.inner.reset_state(rng, stochastic, s);
    }

    fn episode_success(&self, states: ArrayView2<f32>) -> Option<bool> {
        self.inner.episode_success(states)
    }

    fn aux_reward(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, out: ArrayViewMut1<f32>) -> bool {
        self.inner.aux_reward(s, self.task_actions(a).view(), out)
    }

    fn aux_reward_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj: ArrayView1<f32>,
        adj_s: ArrayViewMut2<f32>,
        adj_a: ArrayViewMut2<f32>,
    ) {
        self.pulled_back(a, adj_a, |a_task, adj_task| {
            self.inner.aux_reward_vjp(s, a_task, adj, adj_s, adj_task)
        });
    }

    fn scene(&self, state: ArrayView1<f32>) -> Option<Scene> {
        self.inner.scene(state)
    }

    // No resident window: the map would have to run on the device. The window engine falls
    // back to the host path, which calls the methods above.
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array1};
    use proptest::prelude::*;

    /// A quadratic toy: state 2, action 2; `s' = s + (a0 + a1², a0·a1)`, reward `s'0·a1`,
    /// aux `s0·a0`. Central differences are exact on it up to rounding.
    struct Toy {
        spec: TaskSpec,
    }

    fn toy() -> Arc<dyn Task> {
        Arc::new(Toy {
            spec: TaskSpec {
                name: "toy".into(),
                state_dim: 2,
                obs_dim: 2,
                act_dim: 2,
                episode_length: 3,
                dt: 0.1,
                state_names: vec!["s0".into(), "s1".into()],
                obs_names: vec!["s0".into(), "s1".into()],
            },
        })
    }

    impl Task for Toy {
        fn spec(&self) -> &TaskSpec {
            &self.spec
        }
        fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, mut s_next: ArrayViewMut2<f32>) {
            for i in 0..s.nrows() {
                s_next[[i, 0]] = s[[i, 0]] + a[[i, 0]] + a[[i, 1]] * a[[i, 1]];
                s_next[[i, 1]] = s[[i, 1]] + a[[i, 0]] * a[[i, 1]];
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
                let (g0, g1) = (adj_next[[i, 0]], adj_next[[i, 1]]);
                adj_s[[i, 0]] += g0;
                adj_s[[i, 1]] += g1;
                adj_a[[i, 0]] += g0 + g1 * a[[i, 1]];
                adj_a[[i, 1]] += 2.0 * a[[i, 1]] * g0 + g1 * a[[i, 0]];
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
                let (a0, a1) = (a[[i, 0]], a[[i, 1]]);
                ds_next[[i, 0]] = ds[[i, 0]] + da[[i, 0]] + 2.0 * a1 * da[[i, 1]];
                ds_next[[i, 1]] = ds[[i, 1]] + a1 * da[[i, 0]] + a0 * da[[i, 1]];
            }
        }
        fn observe(&self, s: ArrayView2<f32>, mut obs: ArrayViewMut2<f32>) {
            obs.assign(&s);
        }
        fn observe_vjp(
            &self,
            _s: ArrayView2<f32>,
            adj_obs: ArrayView2<f32>,
            mut adj_s: ArrayViewMut2<f32>,
        ) {
            adj_s += &adj_obs;
        }
        fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, mut r: ArrayViewMut1<f32>) {
            for i in 0..s_next.nrows() {
                r[i] = s_next[[i, 0]] * a[[i, 1]];
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
                adj_s_next[[i, 0]] += adj_r[i] * a[[i, 1]];
                adj_a[[i, 1]] += adj_r[i] * s_next[[i, 0]];
            }
        }
        fn terminated(&self, _s_next: ArrayView2<f32>, out: &mut [bool]) {
            out.fill(false);
        }
        fn reset_state(&self, _rng: &mut SeededRng, _stochastic: bool, mut s: ArrayViewMut1<f32>) {
            s.fill(0.5);
        }
        fn aux_reward(
            &self,
            s: ArrayView2<f32>,
            a: ArrayView2<f32>,
            mut out: ArrayViewMut1<f32>,
        ) -> bool {
            for i in 0..s.nrows() {
                out[i] = s[[i, 0]] * a[[i, 0]];
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
                adj_s[[i, 0]] += adj[i] * a[[i, 0]];
                adj_a[[i, 0]] += adj[i] * s[[i, 0]];
            }
        }
    }

    /// A 2×3 map: the policy has 3 action entries.
    fn map() -> Array2<f32> {
        array![[1.0, 0.5, 0.0], [1.0, 0.0, 2.0]]
    }

    /// f32 central differences of `f` at `a` (one row), step `h`.
    fn fd(f: &dyn Fn(&Array2<f32>) -> f32, a: &Array2<f32>, h: f32) -> Vec<f32> {
        (0..a.ncols())
            .map(|j| {
                let (mut p, mut m) = (a.clone(), a.clone());
                p[[0, j]] += h;
                m[[0, j]] -= h;
                (f(&p) - f(&m)) / (2.0 * h)
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Step, reward and aux reward VJPs in the policy's coordinates against central
        /// differences of the wrapped task, and the step's JVP against its VJP.
        #[test]
        fn adjoints_are_the_transpose_of_the_map(
            s in proptest::collection::vec(-1.0f32..1.0, 2),
            ap in proptest::collection::vec(-0.5f32..0.5, 3),
            u in proptest::collection::vec(-1.0f32..1.0, 2),
            v in proptest::collection::vec(-1.0f32..1.0, 3),
        ) {
            let w = LinearAction::new(toy(), map()).unwrap();
            prop_assert_eq!(w.spec().act_dim, 3);
            let s = Array2::from_shape_vec((1, 2), s).unwrap();
            let ap = Array2::from_shape_vec((1, 3), ap).unwrap();
            let u = Array2::from_shape_vec((1, 2), u).unwrap();
            // ⟨u, step(s, a_p)⟩
            let step_u = |a: &Array2<f32>| {
                let mut sn = Array2::zeros((1, 2));
                w.step(s.view(), a.view(), sn.view_mut());
                (&sn * &u).sum()
            };
            let (mut adj_s, mut adj_a) = (Array2::zeros((1, 2)), Array2::zeros((1, 3)));
            w.step_vjp(s.view(), ap.view(), u.view(), adj_s.view_mut(), adj_a.view_mut());
            close(adj_a.as_slice().unwrap(), &fd(&step_u, &ap, 1e-2), 1e-4);
            // the JVP along v against the VJP along u
            let v = Array2::from_shape_vec((1, 3), v).unwrap();
            let mut ds_next = Array2::zeros((1, 2));
            w.step_jvp(s.view(), ap.view(), Array2::zeros((1, 2)).view(), v.view(), ds_next.view_mut());
            let (lhs, rhs) = ((&ds_next * &u).sum(), (&adj_a * &v).sum());
            prop_assert!((lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()));
            // reward
            let reward = |a: &Array2<f32>| {
                let mut r = Array1::zeros(1);
                w.reward(s.view(), a.view(), r.view_mut());
                r[0]
            };
            let (mut adj_sn, mut adj_a) = (Array2::zeros((1, 2)), Array2::zeros((1, 3)));
            w.reward_vjp(s.view(), ap.view(), Array1::ones(1).view(), adj_sn.view_mut(), adj_a.view_mut());
            close(adj_a.as_slice().unwrap(), &fd(&reward, &ap, 1e-2), 1e-4);
            // aux reward
            let aux = |a: &Array2<f32>| {
                let mut r = Array1::zeros(1);
                prop_assert!(w.aux_reward(s.view(), a.view(), r.view_mut()));
                Ok(r[0])
            };
            let aux_f = |a: &Array2<f32>| aux(a).unwrap();
            let (mut adj_s, mut adj_a) = (Array2::zeros((1, 2)), Array2::zeros((1, 3)));
            w.aux_reward_vjp(s.view(), ap.view(), Array1::ones(1).view(), adj_s.view_mut(), adj_a.view_mut());
            close(adj_a.as_slice().unwrap(), &fd(&aux_f, &ap, 1e-2), 1e-4);
        }
    }

    #[test]
    fn relative_place_adds_the_scaled_offset_to_the_pick() {
        let six: Arc<dyn Task> = Arc::new(Toy {
            spec: TaskSpec {
                name: "six".into(),
                act_dim: 6,
                ..toy().spec().clone()
            },
        });
        let w = LinearAction::relative_place(six, 2.0).unwrap();
        let a = w.task_actions(array![[0.1, 0.2, -0.3, 0.25, 0.0, -0.1]].view());
        let want = [0.1, 0.2, -0.3, 0.6, 0.2, -0.5];
        close(a.as_slice().unwrap(), &want, 1e-6);
        assert!(
            LinearAction::relative_place(toy(), 2.0).is_err(),
            "a 2-D task is refused"
        );
        assert!(LinearAction::new(toy(), Array2::zeros((3, 3))).is_err());
        let mut bad = map();
        bad[[0, 0]] = f32::NAN;
        assert!(LinearAction::new(toy(), bad).is_err());
        assert!(LinearAction::relative_place(toy(), 0.0).is_err());
    }
}

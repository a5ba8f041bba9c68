//! Tasks written one env (one state row) at a time, generic over the scalar, and the
//! adapter [`RowEnv`] that makes such a task a batched [`Task`] (rows in parallel with
//! rayon, the JVP by dual numbers through the generic step).
//!
//! Writing the row functions generically gives the `f64` finite-difference oracle and the
//! dual-number JVP for the gradient tests from the same code that trains in `f32`.

use diff_core::{Dual, Real, Scene, SeededRng, Task, TaskSpec};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// A task defined row by row. VJPs accumulate (`+=`) into their adjoint outputs.
pub trait RowTask: Send + Sync {
    /// Static facts: dimensions, names, episode length.
    fn spec(&self) -> &TaskSpec;
    /// `s_next = F(s, a)` for one env.
    fn step_row<T: Real>(&self, s: &[T], a: &[T]) -> Vec<T>;
    /// Adjoint of [`Self::step_row`].
    fn step_row_vjp<T: Real>(
        &self,
        s: &[T],
        a: &[T],
        adj_next: &[T],
        adj_s: &mut [T],
        adj_a: &mut [T],
    );
    /// The observation of one state row.
    fn observe_row<T: Real>(&self, s: &[T], obs: &mut [T]);
    /// Adjoint of [`Self::observe_row`].
    fn observe_row_vjp<T: Real>(&self, s: &[T], adj_obs: &[T], adj_s: &mut [T]);
    /// The reward of the transition into `s_next` under `a`.
    fn reward_row<T: Real>(&self, s_next: &[T], a: &[T]) -> T;
    /// Adjoint of [`Self::reward_row`].
    fn reward_row_vjp<T: Real>(
        &self,
        s_next: &[T],
        a: &[T],
        adj_r: T,
        adj_s: &mut [T],
        adj_a: &mut [T],
    );
    /// DaXBench's auxiliary training reward of the pre-step state and the action
    /// ([`Task::aux_reward`]); `None` (default): the task has none.
    fn aux_row<T: Real>(&self, _s: &[T], _a: &[T]) -> Option<T> {
        None
    }
    /// Adjoint of [`Self::aux_row`] (accumulates).
    fn aux_row_vjp<T: Real>(
        &self,
        _s: &[T],
        _a: &[T],
        _adj: T,
        _adj_s: &mut [T],
        _adj_a: &mut [T],
    ) {
    }
    /// Whether the batched adapter runs the step and its VJP/JVP in `f64` (converting the
    /// `f32` rows), for engines whose adjoint is `f64`-only or whose dynamics need it.
    fn step_in_f64(&self) -> bool {
        false
    }
    /// Early termination (default: never; episodes end at the time limit).
    fn terminated_row(&self, _s_next: &[f32]) -> bool {
        false
    }
    /// Writes an initial state (with the task's reset noise when `stochastic`).
    fn reset_row(&self, rng: &mut SeededRng, stochastic: bool, s: &mut [f32]);
    /// What a state looks like (for `mbmix render`).
    fn scene_row(&self, _s: ArrayView1<f32>) -> Option<Scene> {
        None
    }
}

/// A [`RowTask`] as a batched [`Task`].
pub struct RowEnv<R>(pub R);

impl<R> RowEnv<R> {
    /// The row task.
    pub fn inner(&self) -> &R {
        &self.0
    }
}

fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Row `i` of a batch as a slice (the batch contract requires contiguous rows).
fn row<'a>(a: &'a ArrayView2<f32>, i: usize) -> &'a [f32] {
    a.row(i).to_slice().expect("batch rows must be contiguous")
}

impl<R: RowTask> Task for RowEnv<R> {
    fn spec(&self) -> &TaskSpec {
        self.0.spec()
    }

    fn step(&self, s: ArrayView2<f32>, a: ArrayView2<f32>, mut s_next: ArrayViewMut2<f32>) {
        s_next
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut out)| {
                if self.0.step_in_f64() {
                    let next = self.0.step_row(&to64(row(&s, i)), &to64(row(&a, i)));
                    out.iter_mut().zip(next).for_each(|(o, v)| *o = v as f32);
                } else {
                    let next = self.0.step_row(row(&s, i), row(&a, i));
                    out.iter_mut().zip(next).for_each(|(o, v)| *o = v);
                }
            });
    }

    fn step_vjp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        adj_next: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
        mut adj_a: ArrayViewMut2<f32>,
    ) {
        adj_s
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(adj_a.axis_iter_mut(Axis(0)).into_par_iter())
            .enumerate()
            .for_each(|(i, (mut rs, mut ra))| {
                if self.0.step_in_f64() {
                    let (mut gs, mut ga) = (vec![0.0; rs.len()], vec![0.0; ra.len()]);
                    self.0.step_row_vjp(
                        &to64(row(&s, i)),
                        &to64(row(&a, i)),
                        &to64(row(&adj_next, i)),
                        &mut gs,
                        &mut ga,
                    );
                    rs.iter_mut().zip(gs).for_each(|(o, g)| *o += g as f32);
                    ra.iter_mut().zip(ga).for_each(|(o, g)| *o += g as f32);
                } else {
                    self.0.step_row_vjp(
                        row(&s, i),
                        row(&a, i),
                        row(&adj_next, i),
                        rs.as_slice_mut().expect("contiguous rows"),
                        ra.as_slice_mut().expect("contiguous rows"),
                    );
                }
            });
    }

    fn step_jvp(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        ds: ArrayView2<f32>,
        da: ArrayView2<f32>,
        mut ds_next: ArrayViewMut2<f32>,
    ) {
        let dual = |x: &[f32], t: &[f32]| -> Vec<Dual<f32>> {
            x.iter().zip(t).map(|(&x, &t)| Dual::new(x, t)).collect()
        };
        let dual64 = |x: &[f32], t: &[f32]| -> Vec<Dual<f64>> {
            x.iter()
                .zip(t)
                .map(|(&x, &t)| Dual::new(x as f64, t as f64))
                .collect()
        };
        ds_next
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut out)| {
                if self.0.step_in_f64() {
                    let sd = dual64(row(&s, i), row(&ds, i));
                    let ad = dual64(row(&a, i), row(&da, i));
                    let next = self.0.step_row(&sd, &ad);
                    out.iter_mut()
                        .zip(next)
                        .for_each(|(o, v)| *o = v.eps as f32);
                } else {
                    let sd = dual(row(&s, i), row(&ds, i));
                    let ad = dual(row(&a, i), row(&da, i));
                    let next = self.0.step_row(&sd, &ad);
                    out.iter_mut().zip(next).for_each(|(o, v)| *o = v.eps);
                }
            });
    }

    fn observe(&self, s: ArrayView2<f32>, mut obs: ArrayViewMut2<f32>) {
        for (i, mut o) in obs.axis_iter_mut(Axis(0)).enumerate() {
            self.0
                .observe_row(row(&s, i), o.as_slice_mut().expect("contiguous rows"));
        }
    }

    fn observe_vjp(
        &self,
        s: ArrayView2<f32>,
        adj_obs: ArrayView2<f32>,
        mut adj_s: ArrayViewMut2<f32>,
    ) {
        for (i, mut g) in adj_s.axis_iter_mut(Axis(0)).enumerate() {
            self.0.observe_row_vjp(
                row(&s, i),
                row(&adj_obs, i),
                g.as_slice_mut().expect("contiguous rows"),
            );
        }
    }

    fn reward(&self, s_next: ArrayView2<f32>, a: ArrayView2<f32>, mut r: ArrayViewMut1<f32>) {
        for (i, ri) in r.iter_mut().enumerate() {
            *ri = self.0.reward_row(row(&s_next, i), row(&a, i));
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
        for (i, (mut gs, mut ga)) in adj_s_next
            .axis_iter_mut(Axis(0))
            .zip(adj_a.axis_iter_mut(Axis(0)))
            .enumerate()
        {
            self.0.reward_row_vjp(
                row(&s_next, i),
                row(&a, i),
                adj_r[i],
                gs.as_slice_mut().expect("contiguous rows"),
                ga.as_slice_mut().expect("contiguous rows"),
            );
        }
    }

    fn terminated(&self, s_next: ArrayView2<f32>, out: &mut [bool]) {
        for (i, d) in out.iter_mut().enumerate() {
            *d = self.0.terminated_row(row(&s_next, i));
        }
    }

    fn aux_reward(
        &self,
        s: ArrayView2<f32>,
        a: ArrayView2<f32>,
        mut out: ArrayViewMut1<f32>,
    ) -> bool {
        for (i, o) in out.iter_mut().enumerate() {
            match self.0.aux_row(row(&s, i), row(&a, i)) {
                Some(v) => *o = v,
                None => return false,
            }
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
        for (i, (mut gs, mut ga)) in adj_s
            .axis_iter_mut(Axis(0))
            .zip(adj_a.axis_iter_mut(Axis(0)))
            .enumerate()
        {
            self.0.aux_row_vjp(
                row(&s, i),
                row(&a, i),
                adj[i],
                gs.as_slice_mut().expect("contiguous rows"),
                ga.as_slice_mut().expect("contiguous rows"),
            );
        }
    }

    fn reset_state(&self, rng: &mut SeededRng, stochastic: bool, mut s: ArrayViewMut1<f32>) {
        self.0.reset_row(
            rng,
            stochastic,
            s.as_slice_mut().expect("contiguous state row"),
        );
    }

    fn scene(&self, state: ArrayView1<f32>) -> Option<Scene> {
        self.0.scene_row(state)
    }
}

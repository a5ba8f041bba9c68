//! MB-MIX's λ-mixed window objective (algorithms.md §3.6) as loss seeds for the window
//! engine.
//!
//! For a start index t0 the mixed return is the truncated λ-mixture of SHAC's H-step
//! returns,
//!
//! ```text
//! G_t0 = (1 − λ) Σ_{H=1}^{m−1} λ^{H−1} J^H + λ^{m−1} J^m,
//! J^H  = Σ_{k<H} γ^k r_{t0+k} + γ^H V(s⁺_{t0+H−1}),
//! ```
//!
//! `m` the number of steps from t0 to the end of its segment (the window end or the first
//! done), computed by the O(h) recursion `G_t = r_t + γ[(1−λ)V(s_{t+1}) + λG_{t+1}]`,
//! `G_end = r_end + γV(s⁺_end)`. Rules of §3.6:
//! - early termination at the segment end: no value (`G = r`);
//! - time limit: bootstrap from V′ of the pre-reset state (`bootstrap` is true there);
//! - `Done::NonFinite`: reward seed 0 and no value;
//! - resets inside the window start a new segment; with [`MixStarts::First`] the G of the
//!   window start and of every post-reset start are summed (SHAC's sub-trajectories), with
//!   [`MixStarts::All`] the G of every step t is summed;
//! - a value whose `bootstrap` flag is false (out-of-bounds observation) is not used.
//!
//! Unrolled, the objective is linear in the rewards and values: in a segment starting at t0,
//! `r_{t0+k}` has weight `(γλ)^k` and `V(s⁺_{t0+k})` has `γ(1−λ)(γλ)^k` for a non-final k and
//! `γ(γλ)^k` at the segment end. Summing over the start indices of a segment, the weights of
//! step t are `A_t` (reward) and `γ(1−λ)A_t` / `γA_t` (value), where
//! `A_t = γλ·A_{t−1} + [t is a start]` restarts at every segment. The loss is
//! `−scale · Σ_starts G` with `scale` = 1/(h·N) ([`LossScale::PerStep`], SHAC parity; with
//! `starts = all` this is the mean of G over every (t, i)) or 1/N ([`LossScale::PerEnv`]).
//! With λ = 1 and `starts = first` the seeds are SHAC's ([`crate::window::shac_seeds`]),
//! bit for bit.

use crate::window::WindowSeeds;
use diff_core::Done;
use ndarray::ArrayView2;

/// Which start indices of the window contribute their mixed return (`mix.starts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MixStarts {
    /// The window start and every post-reset start (default; mirrors SHAC).
    #[default]
    First,
    /// Every step of the window (Dreamer-style).
    All,
}

/// Which critic values the mixed objective bootstraps from (`mix.bootstrap`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bootstrap {
    /// The target critic V′, as SHAC (default).
    #[default]
    Target,
    /// The online critic V (the critic's own TD targets still use V′).
    Online,
}

/// The normalisation of the actor loss (`mix.loss_scale`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossScale {
    /// 1/(h·N), SHAC's (default).
    #[default]
    PerStep,
    /// 1/N.
    PerEnv,
}

impl LossScale {
    /// The factor for a window of `h` steps of `n` envs.
    pub fn factor(self, h: usize, n: usize) -> f32 {
        match self {
            LossScale::PerStep => 1.0 / (h * n) as f32,
            LossScale::PerEnv => 1.0 / n as f32,
        }
    }
}

/// Fills `seeds` with the λ-mixed objective's loss seeds (see the module docs) and returns
/// the loss value `Σ seed·value` (accumulated in f64).
///
/// `bootstrap[t,i]`: whether V′ of the state after step t may be used (the engine's
/// [`crate::window::WindowEngine::bootstrap`]); `next_values[t,i]` must be 0 where it may
/// not. `lambda` is λ_mix in [0, 1].
#[allow(clippy::too_many_arguments)]
pub fn mix_seeds(
    done: &[Vec<Done>],
    bootstrap: ArrayView2<bool>,
    rewards: ArrayView2<f32>,
    next_values: ArrayView2<f32>,
    gamma: f32,
    lambda: f32,
    rew_scale: f32,
    starts: MixStarts,
    loss_scale: LossScale,
    seeds: &mut WindowSeeds,
) -> f32 {
    let (h, n) = rewards.dim();
    let scale = loss_scale.factor(h, n);
    let decay = gamma * lambda;
    let cont = gamma * (1.0 - lambda);
    // A_t of every env; 0 right after a segment ended, so that a start sets it to 1.
    let mut acc = vec![0.0f32; n];
    let mut loss = 0.0f64;
    for t in 0..h {
        for i in 0..n {
            let d = done[t][i];
            let starts_here = t == 0 || starts == MixStarts::All || done[t - 1][i].is_done();
            if starts_here {
                acc[i] += 1.0;
            }
            let a = acc[i];
            let r_seed = if d == Done::NonFinite {
                0.0
            } else {
                -a * rew_scale * scale
            };
            let ends_segment = d.is_done() || t + 1 == h;
            let v_seed = if !bootstrap[[t, i]] {
                0.0
            } else if ends_segment {
                -gamma * a * scale
            } else if cont != 0.0 {
                -cont * a * scale
            } else {
                0.0
            };
            seeds.reward[[t, i]] = r_seed;
            seeds.value[[t, i]] = v_seed;
            loss += (r_seed * rewards[[t, i]]) as f64 + (v_seed * next_values[[t, i]]) as f64;
            acc[i] = if d.is_done() { 0.0 } else { a * decay };
        }
    }
    loss as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::shac_seeds;
    use ndarray::Array2;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// The objective by brute force over H (module docs, first formula), in f64: for every
    /// start index the truncated mixture of the J^H of its segment.
    #[allow(clippy::too_many_arguments)]
    fn brute_force_loss(
        done: &[Vec<Done>],
        bootstrap: &Array2<bool>,
        rewards: &Array2<f64>,
        values: &Array2<f64>,
        gamma: f64,
        lambda: f64,
        rew_scale: f64,
        starts: MixStarts,
        loss_scale: LossScale,
    ) -> f64 {
        let (h, n) = rewards.dim();
        let scale = match loss_scale {
            LossScale::PerStep => 1.0 / (h * n) as f64,
            LossScale::PerEnv => 1.0 / n as f64,
        };
        let mut total = 0.0;
        for i in 0..n {
            for t0 in 0..h {
                let is_start = t0 == 0 || starts == MixStarts::All || done[t0 - 1][i].is_done();
                if !is_start {
                    continue;
                }
                // Segment end e: the first done at or after t0, else the window end.
                let e = (t0..h).find(|&t| done[t][i].is_done()).unwrap_or(h - 1);
                let m = e - t0 + 1;
                let r = |t: usize| {
                    if done[t][i] == Done::NonFinite {
                        0.0
                    } else {
                        rew_scale * rewards[[t, i]]
                    }
                };
                let v = |t: usize| {
                    if bootstrap[[t, i]] {
                        values[[t, i]]
                    } else {
                        0.0
                    }
                };
                let j = |big_h: usize| {
                    let mut s = 0.0;
                    for k in 0..big_h {
                        s += gamma.powi(k as i32) * r(t0 + k);
                    }
                    s + gamma.powi(big_h as i32) * v(t0 + big_h - 1)
                };
                let mut g = lambda.powi(m as i32 - 1) * j(m);
                for big_h in 1..m {
                    g += (1.0 - lambda) * lambda.powi(big_h as i32 - 1) * j(big_h);
                }
                total += g;
            }
        }
        -scale * total
    }

    /// A random window: done flags drawn from `probs` (No, Terminated, TimeLimit,
    /// NonFinite), bootstrap flags as the engine sets them (with an occasional out-of-bounds
    /// observation), rewards and values in [−2, 2].
    struct Case {
        done: Vec<Vec<Done>>,
        bootstrap: Array2<bool>,
        rewards: Array2<f32>,
        values: Array2<f32>,
    }

    fn random_case(seed: u64, h: usize, n: usize, p_done: f64) -> Case {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let done: Vec<Vec<Done>> = (0..h)
            .map(|_| {
                (0..n)
                    .map(|_| {
                        if rng.gen_bool(p_done) {
                            [Done::Terminated, Done::TimeLimit, Done::NonFinite]
                                [rng.gen_range(0..3)]
                        } else {
                            Done::No
                        }
                    })
                    .collect()
            })
            .collect();
        let bootstrap = Array2::from_shape_fn((h, n), |(t, i)| {
            done[t][i].bootstraps() && rng.gen_bool(0.95)
        });
        let rewards = Array2::from_shape_fn((h, n), |_| rng.gen_range(-2.0f32..2.0));
        let values = Array2::from_shape_fn((h, n), |(t, i)| {
            if bootstrap[[t, i]] {
                rng.gen_range(-2.0f32..2.0)
            } else {
                0.0
            }
        });
        Case {
            done,
            bootstrap,
            rewards,
            values,
        }
    }

    /// Checks the loss and both seed arrays against the brute force (seeds as the
    /// brute-force loss's coefficients: it is linear, so each seed is the loss at a unit
    /// reward or value).
    fn check_against_brute_force(
        c: &Case,
        gamma: f32,
        lambda: f32,
        rew_scale: f32,
        starts: MixStarts,
        loss_scale: LossScale,
    ) {
        let (h, n) = c.rewards.dim();
        let mut seeds = WindowSeeds::zeros(h, n);
        let loss = mix_seeds(
            &c.done,
            c.bootstrap.view(),
            c.rewards.view(),
            c.values.view(),
            gamma,
            lambda,
            rew_scale,
            starts,
            loss_scale,
            &mut seeds,
        );
        let bf = |r: &Array2<f64>, v: &Array2<f64>| {
            brute_force_loss(
                &c.done,
                &c.bootstrap,
                r,
                v,
                gamma as f64,
                lambda as f64,
                rew_scale as f64,
                starts,
                loss_scale,
            )
        };
        let want = bf(&c.rewards.mapv(|x| x as f64), &c.values.mapv(|x| x as f64));
        let tol = 1e-5 * (1.0 + want.abs());
        assert!(
            (loss as f64 - want).abs() < tol,
            "loss {loss} vs brute force {want} (λ {lambda}, {starts:?}, {loss_scale:?})"
        );
        let zero = Array2::<f64>::zeros((h, n));
        for t in 0..h {
            for i in 0..n {
                let mut unit = zero.clone();
                unit[[t, i]] = 1.0;
                let r_want = bf(&unit, &zero);
                let v_want = bf(&zero, &unit);
                assert!(
                    (seeds.reward[[t, i]] as f64 - r_want).abs() < 1e-6,
                    "reward seed [{t},{i}] {} vs {r_want} ({:?})",
                    seeds.reward[[t, i]],
                    c.done
                );
                assert!(
                    (seeds.value[[t, i]] as f64 - v_want).abs() < 1e-6,
                    "value seed [{t},{i}] {} vs {v_want} ({:?})",
                    seeds.value[[t, i]],
                    c.done
                );
            }
        }
    }

    #[test]
    fn seeds_equal_the_brute_force_mixture_with_every_kind_of_done() {
        // Env 0: time-limit reset at 1, env 1: early termination at 2, env 2: NonFinite at
        // 0 and a time limit at 4, env 3: no reset; env 3's value at step 3 is out of bounds.
        let (h, n) = (6, 4);
        let mut done = vec![vec![Done::No; n]; h];
        done[1][0] = Done::TimeLimit;
        done[2][1] = Done::Terminated;
        done[0][2] = Done::NonFinite;
        done[4][2] = Done::TimeLimit;
        let mut bootstrap = Array2::from_shape_fn((h, n), |(t, i)| done[t][i].bootstraps());
        bootstrap[[3, 3]] = false;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let rewards = Array2::from_shape_fn((h, n), |_| rng.gen_range(-2.0f32..2.0));
        let values = Array2::from_shape_fn((h, n), |(t, i)| {
            if bootstrap[[t, i]] {
                rng.gen_range(-2.0f32..2.0)
            } else {
                0.0
            }
        });
        let c = Case {
            done,
            bootstrap,
            rewards,
            values,
        };
        for lambda in [0.0, 0.3, 0.95, 1.0] {
            for starts in [MixStarts::First, MixStarts::All] {
                for scale in [LossScale::PerStep, LossScale::PerEnv] {
                    check_against_brute_force(&c, 0.97, lambda, 1.5, starts, scale);
                }
            }
        }
        // Spot checks of the rules, λ = 0.5, γ = 0.9, first starts, per-env scale (1/4).
        let mut seeds = WindowSeeds::zeros(h, n);
        mix_seeds(
            &c.done,
            c.bootstrap.view(),
            c.rewards.view(),
            c.values.view(),
            0.9,
            0.5,
            1.0,
            MixStarts::First,
            LossScale::PerEnv,
            &mut seeds,
        );
        // Early termination: no value at the terminal step, the next step starts afresh.
        assert_eq!(seeds.value[[2, 1]], 0.0);
        assert_eq!(seeds.reward[[3, 1]], -0.25);
        // Time limit: the pre-reset state bootstraps with γ·(γλ)^1.
        assert!((seeds.value[[1, 0]] - (-0.25 * 0.9 * 0.45)).abs() < 1e-7);
        // NonFinite: no reward and no value.
        assert_eq!((seeds.reward[[0, 2]], seeds.value[[0, 2]]), (0.0, 0.0));
        // An out-of-bounds observation is not valued.
        assert_eq!(seeds.value[[3, 3]], 0.0);
    }

    #[test]
    fn lambda_one_reproduces_shac_seeds_exactly() {
        for seed in 0..20 {
            let c = random_case(seed, 9, 5, 0.2);
            let (mut a, mut b) = (WindowSeeds::zeros(9, 5), WindowSeeds::zeros(9, 5));
            let la = mix_seeds(
                &c.done,
                c.bootstrap.view(),
                c.rewards.view(),
                c.values.view(),
                0.99,
                1.0,
                1.3,
                MixStarts::First,
                LossScale::PerStep,
                &mut a,
            );
            let lb = shac_seeds(
                &c.done,
                c.bootstrap.view(),
                c.rewards.view(),
                c.values.view(),
                0.99,
                1.3,
                &mut b,
            );
            assert_eq!(la.to_bits(), lb.to_bits(), "loss, case {seed}");
            assert_eq!(a.reward, b.reward, "reward seeds, case {seed}");
            assert_eq!(a.value, b.value, "value seeds, case {seed}");
        }
    }

    #[test]
    fn lambda_zero_is_the_one_step_objective() {
        for seed in 0..10 {
            let c = random_case(100 + seed, 7, 3, 0.25);
            let (h, n) = (7, 3);
            let mut seeds = WindowSeeds::zeros(h, n);
            let loss = mix_seeds(
                &c.done,
                c.bootstrap.view(),
                c.rewards.view(),
                c.values.view(),
                0.95,
                0.0,
                1.0,
                MixStarts::All,
                LossScale::PerStep,
                &mut seeds,
            );
            // Σ_t [r_t + γ V(s⁺_t)] with the §3.6 rules, over h·N.
            let mut want = 0.0f64;
            for t in 0..h {
                for i in 0..n {
                    let d = c.done[t][i];
                    let r = if d == Done::NonFinite {
                        0.0
                    } else {
                        c.rewards[[t, i]] as f64
                    };
                    let v = if c.bootstrap[[t, i]] {
                        0.95 * c.values[[t, i]] as f64
                    } else {
                        0.0
                    };
                    want += r + v;
                }
            }
            want /= -((h * n) as f64);
            assert!((loss as f64 - want).abs() < 1e-5, "{loss} vs {want}");
            // Only the one-step terms carry weight.
            for t in 0..h {
                for i in 0..n {
                    let r = if c.done[t][i] == Done::NonFinite {
                        0.0
                    } else {
                        -1.0 / 21.0
                    };
                    assert!((seeds.reward[[t, i]] - r).abs() < 1e-7);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn random_done_patterns_match_the_brute_force(
            seed in 0u64..1_000_000,
            h in 1usize..9,
            n in 1usize..4,
            p_done in 0.0f64..0.6,
            gamma in 0.5f32..1.0,
            lambda in 0.0f32..=1.0,
            all in any::<bool>(),
            per_env in any::<bool>(),
        ) {
            let c = random_case(seed, h, n, p_done);
            let starts = if all { MixStarts::All } else { MixStarts::First };
            let scale = if per_env { LossScale::PerEnv } else { LossScale::PerStep };
            check_against_brute_force(&c, gamma, lambda, 0.7, starts, scale);
        }
    }
}

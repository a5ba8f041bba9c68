//! The stochastic actor (algorithms.md §1.1): a Gaussian policy with a state-dependent mean
//! μ(o) (an [`Mlp`] with PyTorch-default init), a state-independent learnable log-std, and a
//! tanh squashing in front of the env: `a_env = tanh(μ(o) + exp(logstd)·ε)`.

use crate::nn::{LinearInit, Mlp};
use rand::Rng;

/// DiffRL's `ActorStochasticMLP`.
#[derive(Clone, Debug)]
pub struct StochasticActor {
    /// The mean network μ: obs → raw action.
    pub mu: Mlp<f32>,
    /// Log standard deviation per action dimension.
    pub logstd: Vec<f32>,
}

impl StochasticActor {
    /// A fresh actor: μ with hidden widths `units` and PyTorch-default Linear init, log-std
    /// filled with `logstd_init`.
    pub fn new<R: Rng>(
        obs_dim: usize,
        units: &[usize],
        act_dim: usize,
        logstd_init: f32,
        rng: &mut R,
    ) -> Self {
        StochasticActor {
            mu: Mlp::new(obs_dim, units, act_dim, LinearInit::TorchDefault, rng),
            logstd: vec![logstd_init; act_dim],
        }
    }

    /// Observation width.
    pub fn obs_dim(&self) -> usize {
        self.mu.input_dim()
    }
    /// Action width.
    pub fn act_dim(&self) -> usize {
        self.logstd.len()
    }

    /// Parameter count: μ's parameters, then the log-std.
    pub fn num_params(&self) -> usize {
        self.mu.num_params() + self.logstd.len()
    }

    /// All parameters: μ's flat layout followed by the log-std.
    pub fn params_flat(&self) -> Vec<f32> {
        let mut p = self.mu.params_flat();
        p.extend_from_slice(&self.logstd);
        p
    }

    /// Overwrites all parameters (layout of [`Self::params_flat`]).
    pub fn set_params_flat(&mut self, flat: &[f32]) {
        let k = self.mu.num_params();
        self.mu.set_params_flat(&flat[..k]);
        self.logstd.copy_from_slice(&flat[k..]);
    }

    /// Env actions for `n` rows of (normalised) observations: `tanh(μ)` without noise, or
    /// `tanh(μ + exp(logstd)·ε)` with the standard-normal `noise` (`[n, act_dim]`).
    pub fn act(&self, obs: &[f32], n: usize, noise: Option<&[f32]>, out: &mut [f32]) {
        let mu = self.mu.forward(obs, n);
        let a = self.act_dim();
        assert_eq!(out.len(), n * a, "StochasticActor::act: output length");
        match noise {
            None => {
                for (o, m) in out.iter_mut().zip(&mu) {
                    *o = m.tanh();
                }
            }
            Some(eps) => {
                assert_eq!(eps.len(), n * a, "StochasticActor::act: noise length");
                let std: Vec<f32> = self.logstd.iter().map(|l| l.exp()).collect();
                for (k, o) in out.iter_mut().enumerate() {
                    *o = (mu[k] + std[k % a] * eps[k]).tanh();
                }
            }
        }
    }
}

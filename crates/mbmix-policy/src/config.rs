//! SHAC's configuration: one field per hyperparameter, defaults = the CartPoleSwingUp row of
//! `reference/algorithms.md` §1.6 (DiffRL `examples/cfg/shac/cartpole_swing_up.yaml`).

use crate::error::{Error, Result};
use crate::nn::NetworkBackend;

/// What to do when the actor gradient norm before clipping is NaN or above 1e6.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFiniteGradPolicy {
    /// Return [`Error::NonFiniteGradient`] (DiffRL raises `ValueError`).
    #[default]
    Abort,
    /// Skip this epoch's actor update and go on (critic training still runs).
    Skip,
}

/// SHAC hyperparameters (algorithms.md §1).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShacConfig {
    /// Parallel envs N. Default 64 (§1.6, CartPole `num_actors`).
    pub num_envs: usize,
    /// Window length h in control steps. Default 32 (§1.6 `steps_num`).
    pub horizon: usize,
    /// Number of training epochs (one window each); sets the LR schedule. Default 500 (§1.6).
    pub max_epochs: usize,
    /// Discount γ. Default 0.99 (§1.6).
    pub gamma: f64,
    /// Critic TD(λ) parameter λ_TD, in [0, 1). Default 0.95 (§1.4).
    pub lambda_td: f64,
    /// Actor hidden widths. Default [64, 64] (§1.6 CartPole).
    pub actor_units: Vec<usize>,
    /// Critic hidden widths. Default [64, 64] (§1.6 CartPole).
    pub critic_units: Vec<usize>,
    /// Initial actor learning rate. Default 1e-2 (§1.6 CartPole).
    pub actor_lr: f64,
    /// Initial critic learning rate. Default 1e-3 (§1.6 CartPole).
    pub critic_lr: f64,
    /// Learning rate reached by the linear schedule at `max_epochs`. Default 1e-5 (§1.5).
    pub lr_final: f64,
    /// Polyak factor α of the target critic: ψ′ ← αψ′ + (1−α)ψ. Default 0.2 (§1.6 CartPole).
    pub target_critic_alpha: f64,
    /// Passes over the window's data per epoch when fitting the critic. Default 16 (§1.4).
    pub critic_iterations: usize,
    /// Minibatches per critic pass (batch size h·N / critic_batches). Default 4 (§1.4).
    pub critic_batches: usize,
    /// Whether each critic pass draws a fresh random permutation of the window's states
    /// (seeded). DiffRL's `CriticDataset` is built with `shuffle = False`, so its minibatches
    /// are contiguous runs of time steps. Default false (DiffRL).
    pub critic_shuffle: bool,
    /// Adam betas (β1, β2) for actor and critic. Default [0.7, 0.95] (§1.6).
    pub betas: [f64; 2],
    /// Gradient-norm clip for actor and critic. Default 1.0 (§1.6).
    pub grad_norm: f64,
    /// Whether to clip gradient norms to `grad_norm`. Default true (§1.6 `truncate_grads`).
    pub truncate_grads: bool,
    /// Initial value of the actor's state-independent log-std. Default −1.0 (§1.1).
    pub actor_logstd_init: f64,
    /// Normalise observations with running mean/std. Default true (§1.2).
    pub obs_rms: bool,
    /// Reward scale applied in the actor loss and the critic targets. Default 1.0 (§1.2).
    pub rew_scale: f64,
    /// Use the task's reset noise for training episodes. Default true (§1.6 `stochastic_env`).
    pub stochastic_init: bool,
    /// NaN / >1e6 actor gradient: `abort` (default, DiffRL behaviour) or `skip` the update.
    pub on_nonfinite_grad: NonFiniteGradPolicy,
    /// Which implementation runs the actor and critic networks: `dfdx` (default: the networks
    /// composed from dfdx ops and differentiated by dfdx's tape, ARCHITECTURE.md) or `fused`
    /// (a hand-written forward/backward over ndarray GEMMs, ≈ 2.5× faster per CartPole run,
    /// BENCHMARKS.md). Both compute the same function and gradients (tested).
    pub network_backend: NetworkBackend,
}

impl Default for ShacConfig {
    fn default() -> Self {
        ShacConfig {
            num_envs: 64,
            horizon: 32,
            max_epochs: 500,
            gamma: 0.99,
            lambda_td: 0.95,
            actor_units: vec![64, 64],
            critic_units: vec![64, 64],
            actor_lr: 1e-2,
            critic_lr: 1e-3,
            lr_final: 1e-5,
            target_critic_alpha: 0.2,
            critic_iterations: 16,
            critic_batches: 4,
            critic_shuffle: false,
            betas: [0.7, 0.95],
            grad_norm: 1.0,
            truncate_grads: true,
            actor_logstd_init: -1.0,
            obs_rms: true,
            rew_scale: 1.0,
            stochastic_init: true,
            on_nonfinite_grad: NonFiniteGradPolicy::Abort,
            network_backend: NetworkBackend::Dfdx,
        }
    }
}

pub(crate) fn finite(field: &str, x: f64) -> Result<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(Error::config(field, format!("must be finite, got {x}")))
    }
}

pub(crate) fn in_range(
    field: &str,
    x: f64,
    lo: f64,
    hi: f64,
    lo_open: bool,
    hi_open: bool,
) -> Result<()> {
    finite(field, x)?;
    let lo_ok = if lo_open { x > lo } else { x >= lo };
    let hi_ok = if hi_open { x < hi } else { x <= hi };
    if lo_ok && hi_ok {
        Ok(())
    } else {
        let (l, r) = (
            if lo_open { "(" } else { "[" },
            if hi_open { ")" } else { "]" },
        );
        Err(Error::config(
            field,
            format!("must lie in {l}{lo}, {hi}{r}, got {x}"),
        ))
    }
}

pub(crate) fn positive_count(field: &str, n: usize) -> Result<()> {
    if n == 0 {
        Err(Error::config(field, "must be at least 1"))
    } else {
        Ok(())
    }
}

impl ShacConfig {
    /// Checks every field; the error names the first offending field.
    pub fn validate(&self) -> Result<()> {
        positive_count("num_envs", self.num_envs)?;
        positive_count("horizon", self.horizon)?;
        positive_count("max_epochs", self.max_epochs)?;
        in_range("gamma", self.gamma, 0.0, 1.0, true, false)?;
        in_range("lambda_td", self.lambda_td, 0.0, 1.0, false, true)?;
        for (field, units) in [
            ("actor_units", &self.actor_units),
            ("critic_units", &self.critic_units),
        ] {
            if units.contains(&0) {
                return Err(Error::config(field, "hidden widths must be at least 1"));
            }
        }
        in_range("actor_lr", self.actor_lr, 0.0, f64::MAX, true, false)?;
        in_range("critic_lr", self.critic_lr, 0.0, f64::MAX, true, false)?;
        in_range("lr_final", self.lr_final, 0.0, f64::MAX, false, false)?;
        in_range(
            "target_critic_alpha",
            self.target_critic_alpha,
            0.0,
            1.0,
            false,
            false,
        )?;
        positive_count("critic_iterations", self.critic_iterations)?;
        positive_count("critic_batches", self.critic_batches)?;
        if self.critic_batches > self.num_envs * self.horizon {
            return Err(Error::config(
                "critic_batches",
                format!(
                    "must not exceed num_envs × horizon = {}",
                    self.num_envs * self.horizon
                ),
            ));
        }
        in_range("betas[0]", self.betas[0], 0.0, 1.0, false, true)?;
        in_range("betas[1]", self.betas[1], 0.0, 1.0, false, true)?;
        in_range("grad_norm", self.grad_norm, 0.0, f64::MAX, true, false)?;
        finite("actor_logstd_init", self.actor_logstd_init)?;
        finite("rew_scale", self.rew_scale)?;
        Ok(())
    }

    /// Learning rate of epoch `e` under the linear schedule of §1.5:
    /// `lr_e = lr0 + (lr_final − lr0)·e / max_epochs` (DiffRL `lr_schedule: linear`).
    pub fn scheduled_lr(&self, lr0: f64, epoch: usize) -> f64 {
        crate::common::linear_lr(lr0, self.lr_final, epoch, self.max_epochs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_cartpole_row_and_valid() {
        let c = ShacConfig::default();
        c.validate().unwrap();
        assert_eq!((c.num_envs, c.horizon, c.max_epochs), (64, 32, 500));
        assert_eq!(
            (c.actor_lr, c.critic_lr, c.target_critic_alpha),
            (1e-2, 1e-3, 0.2)
        );
        assert_eq!(c.betas, [0.7, 0.95]);
        assert_eq!(c.on_nonfinite_grad, NonFiniteGradPolicy::Abort);
    }

    #[test]
    fn validate_names_the_field() {
        let bad = [
            ShacConfig {
                gamma: 1.5,
                ..Default::default()
            },
            ShacConfig {
                lambda_td: 1.0,
                ..Default::default()
            },
            ShacConfig {
                num_envs: 0,
                ..Default::default()
            },
            ShacConfig {
                critic_units: vec![64, 0],
                ..Default::default()
            },
            ShacConfig {
                betas: [0.7, 1.0],
                ..Default::default()
            },
            ShacConfig {
                actor_lr: f64::NAN,
                ..Default::default()
            },
            ShacConfig {
                critic_batches: 64 * 32 + 1,
                ..Default::default()
            },
        ];
        let fields = [
            "gamma",
            "lambda_td",
            "num_envs",
            "critic_units",
            "betas[1]",
            "actor_lr",
            "critic_batches",
        ];
        for (cfg, field) in bad.iter().zip(fields) {
            match cfg.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidConfig for {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn serde_round_trip_defaults_and_unknown_fields() {
        let c = ShacConfig::default();
        let json = serde_json::to_string(&c).unwrap();
        let back: ShacConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let partial: ShacConfig =
            serde_json::from_str(r#"{"horizon": 8, "on_nonfinite_grad": "skip"}"#).unwrap();
        assert_eq!(partial.horizon, 8);
        assert_eq!(partial.on_nonfinite_grad, NonFiniteGradPolicy::Skip);
        assert_eq!(partial.num_envs, 64);
        assert!(serde_json::from_str::<ShacConfig>(r#"{"horizn": 8}"#).is_err());
    }

    #[test]
    fn linear_schedule_endpoints() {
        let c = ShacConfig::default();
        assert_eq!(c.scheduled_lr(1e-2, 0), 1e-2);
        assert!((c.scheduled_lr(1e-2, 500) - 1e-5).abs() < 1e-15);
        assert!((c.scheduled_lr(1e-2, 250) - (1e-2 + 1e-5) / 2.0).abs() < 1e-12);
    }
}

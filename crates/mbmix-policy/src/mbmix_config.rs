//! MB-MIX's configuration: SHAC's hyperparameters (`shac`) plus the knobs of
//! `reference/algorithms.md` §3.4 (`mix`, `rollout`, `model`, `critic`) and the per-epoch
//! diagnostics. Every default is the table's suggested (inferred) value unless its doc says
//! otherwise; every section rejects unknown keys.

use crate::config::{in_range, positive_count, ShacConfig};
use crate::error::{Error, Result};
use crate::mix::{Bootstrap, LossScale, MixStarts};
use sobolev_model::ModelConfig;

/// The λ-mixed objective (§3.4 "Mixed objective", §3.6).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixConfig {
    /// λ_mix in [0, 1]. Default 0.95 (§3.4; 1 gives SHAC's h-step objective, the
    /// "without mixing" ablation; 0 the one-step objective).
    pub lambda: f64,
    /// Which start indices contribute their mixed return: `first` (default: the window
    /// start and every post-reset start, as SHAC's sub-trajectories) or `all`.
    pub starts: MixStarts,
    /// Loss normalisation: `per_step` 1/(h·N) (default, SHAC parity) or `per_env` 1/N.
    pub loss_scale: LossScale,
    /// The values the objective bootstraps from: `target` critic V′ (default, SHAC) or
    /// `online` critic V.
    pub bootstrap: Bootstrap,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            lambda: 0.95,
            starts: MixStarts::First,
            loss_scale: LossScale::PerStep,
            bootstrap: Bootstrap::Target,
        }
    }
}

/// How simulator and model rollouts combine (§3.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reading {
    /// J^mix on a simulator window plus `model_weight` × J^mix on a model rollout of
    /// `model_horizon` steps from the same start states (default).
    #[default]
    #[serde(rename = "A", alias = "a")]
    A,
    /// One chain: the simulator for `sim_prefix` steps, then the model up to
    /// `model_horizon` steps in all; J^mix on the chain.
    #[serde(rename = "B", alias = "b")]
    B,
    /// The simulator window's J^mix with gradients through the model's Jacobians
    /// (forward values from the simulator).
    #[serde(rename = "C", alias = "c")]
    C,
    /// The simulator window only: SHAC with the λ-mixed objective (the "without model"
    /// ablation).
    #[serde(rename = "sim_only")]
    SimOnly,
    /// The model rollout only (the simulator window still feeds the critic and the
    /// model's buffer).
    #[serde(rename = "model_only")]
    ModelOnly,
}

impl Reading {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Reading::A => "A",
            Reading::B => "B",
            Reading::C => "C",
            Reading::SimOnly => "sim_only",
            Reading::ModelOnly => "model_only",
        }
    }
}

/// Where the steps of a rollout come from (§3.4 `rollout.per_step_source`, §3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepSource {
    /// The simulator: values and gradients.
    Sim,
    /// The learned model: values and gradients.
    Model,
    /// Values from the simulator, gradients through the model's Jacobians (reading C's
    /// straight-through step).
    SimFwdModelBwd,
}

/// Consecutive steps of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub source: StepSource,
    pub steps: usize,
}

/// One term of the actor loss: `weight` × J^mix on a rollout made of `segments` from the
/// window's start states. Supported shapes: the simulator window alone (`sim` or
/// `sim_fwd_model_bwd` for h steps), a model rollout (`model`), or a simulator prefix
/// (`sim` or `sim_fwd_model_bwd`) handing over to the model.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub segments: Vec<Segment>,
    #[serde(default = "unit_weight")]
    pub weight: f64,
}

fn unit_weight() -> f64 {
    1.0
}

/// An objective resolved against the window length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Plan {
    /// The simulator window itself; `model_grad`: its gradients through the model.
    Window { model_grad: bool, weight: f64 },
    /// A rollout of `len` steps from the window's start states: `prefix` simulator steps
    /// (gradients through the model if `model_grad`), then the model.
    Rollout {
        prefix: usize,
        model_grad: bool,
        len: usize,
        weight: f64,
    },
}

/// Rollout sources (§3.4 "Rollout sources").
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// `A` (default), `B`, `C`, `sim_only` or `model_only` (§3.7).
    pub reading: Reading,
    /// Weight c ≥ 0 of J_model in reading A. Default 1.0.
    pub model_weight: f64,
    /// Length of the rollout that contains model steps: the model rollout of A and
    /// `model_only`, the whole sim→model chain of B. Default (absent): the window length h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_horizon: Option<usize>,
    /// Simulator steps k before the model takes over in reading B. Default (absent): h/2
    /// (rounded down), and less than the chain length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_prefix: Option<usize>,
    /// Epochs of simulator-only updates (λ-mixed) before the model's rollouts or gradients
    /// are used; the model is trained from the first epoch on. Default 20.
    pub model_warmup_epochs: usize,
    /// Epochs over which the model's objectives fade in after the warm-up ("ramp c from
    /// 0", §3.4): in the k-th epoch after the warm-up the objective is (1 − ρ)·J_sim +
    /// ρ·J_reading with ρ = min(1, k/ramp), k = 1, 2, …; for reading A that is
    /// J_sim + ρ·c·J_model. Default 0: no ramp (the full objective right after the warm-up).
    pub model_ramp_epochs: usize,
    /// The general mechanism of which the readings are presets: a list of objectives, each
    /// a rollout with its per-step sources and a weight. When present it replaces
    /// `reading`, `model_weight`, `model_horizon` and `sim_prefix`. Default (absent):
    /// derived from `reading` (A: `[{sim h}, c × {model H}]`; B: `[{sim k, model H − k}]`;
    /// C: `[{sim_fwd_model_bwd h}]`; `sim_only`: `[{sim h}]`; `model_only`: `[{model H}]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_step_source: Option<Vec<Objective>>,
    /// How the gradient of the rollouts with model steps joins the simulator window's
    /// (an extension of §3.4, not in the paper): `none` (default) adds it; `agree` adds it
    /// only when it agrees with the window's gradient (positive inner product); `project`
    /// removes its component against the window's gradient when they conflict (PCGrad);
    /// `scale` weighs it by the positive part of the two gradients' cosine.
    /// Only objectives with model steps are gated; a window objective that steps back
    /// through the model (reading C) is part of the window's gradient.
    pub model_gate: ModelGate,
}

/// [`RolloutConfig::model_gate`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelGate {
    /// g = g_sim + g_model (the paper's sum).
    #[default]
    None,
    /// g = g_sim + g_model if ⟨g_sim, g_model⟩ > 0, else g_sim.
    Agree,
    /// g = g_sim + g_model − min(0, ⟨g_model, g_sim⟩)/‖g_sim‖² · g_sim.
    Project,
    /// g = g_sim + max(0, cos)·g_model, cos the cosine of the two (a soft `agree`).
    Scale,
}

impl ModelGate {
    /// Adds the gated `model` gradient into `sim`; returns the cosine of the two before
    /// gating (None when either is zero or non-finite).
    pub fn combine(self, sim: &mut [f32], model: &[f32]) -> Option<f64> {
        let dot: f64 = sim
            .iter()
            .zip(model)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let ns: f64 = sim.iter().map(|a| (*a as f64).powi(2)).sum();
        let nm: f64 = model.iter().map(|b| (*b as f64).powi(2)).sum();
        let cos = (ns > 0.0 && nm > 0.0 && dot.is_finite()).then(|| dot / (ns.sqrt() * nm.sqrt()));
        let (scale, along) = match self {
            ModelGate::None => (1.0, 0.0),
            ModelGate::Agree => (if dot > 0.0 || ns == 0.0 { 1.0 } else { 0.0 }, 0.0),
            ModelGate::Project => (
                1.0,
                if dot < 0.0 && ns > 0.0 {
                    -dot / ns
                } else {
                    0.0
                },
            ),
            ModelGate::Scale => (
                if ns == 0.0 {
                    1.0
                } else {
                    cos.unwrap_or(0.0).max(0.0)
                },
                0.0,
            ),
        };
        if scale == 1.0 && along == 0.0 {
            for (a, b) in sim.iter_mut().zip(model) {
                *a += *b;
            }
        } else if scale != 0.0 {
            for (a, b) in sim.iter_mut().zip(model) {
                *a = (*a as f64 + scale * *b as f64 + along * *a as f64) as f32;
            }
        }
        cos
    }
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            reading: Reading::A,
            model_weight: 1.0,
            model_horizon: None,
            sim_prefix: None,
            model_warmup_epochs: 20,
            model_ramp_epochs: 0,
            per_step_source: None,
            model_gate: ModelGate::None,
        }
    }
}

/// Which states the critic is fitted on (`critic.train_on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriticData {
    /// The simulator window's states with TD(λ) targets, exactly as SHAC (default).
    #[default]
    Sim,
    /// Also the states of the epoch's rollout with model steps (readings A, B and
    /// `model_only` after the warm-up), with TD(λ) targets from the model's rewards and
    /// the target critic's values of its predicted states; rows that are not finite are
    /// left out. Epochs without such a rollout fit the simulator window alone.
    SimAndModel,
}

/// The critic's MB-MIX knobs; everything else about the critic is SHAC's (`shac`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriticConfig {
    /// `sim` (default) or `sim_and_model`.
    pub train_on: CriticData,
}

/// Per-epoch diagnostics written to the epoch statistics.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosticsConfig {
    /// Run the diagnostics on the epochs whose number (1-based) is a multiple of this.
    /// Default 10.
    pub every: usize,
    /// Groups G of envs for the actor-gradient variance of the mixed and the SHAC
    /// objective on the simulator window (2·G extra reverse sweeps); 0 turns it off,
    /// otherwise 2 ≤ G ≤ num_envs. Default 4.
    pub grad_variance_groups: usize,
    /// Transitions of the newest window (evenly spaced, before it enters the buffer) on
    /// which the model's next-state and Jacobian errors are measured, with full simulator
    /// Jacobians (state_dim VJPs each); 0 turns it off. Default 256.
    pub model_error_samples: usize,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        DiagnosticsConfig {
            every: 10,
            grad_variance_groups: 4,
            model_error_samples: 256,
        }
    }
}

/// MB-MIX hyperparameters (algorithms.md §3.4, §3.9).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MbMixConfig {
    /// SHAC's settings: envs, window, networks, optimisers, critic (§3.8: as SHAC) and the
    /// epoch count. Default: [`ShacConfig::default`].
    pub shac: ShacConfig,
    /// The mixed objective.
    pub mix: MixConfig,
    /// Rollout sources.
    pub rollout: RolloutConfig,
    /// The dynamics model and its Sobolev training. Default: [`ModelConfig::default`]; its
    /// `seed` is combined with the run seed for the weight initialisation.
    pub model: ModelConfig,
    /// Decay the model's learning rate linearly to `shac.lr_final` over `shac.max_epochs`,
    /// as SHAC's (§3.9 step 1). Default true.
    pub model_lr_decay: bool,
    /// The critic's data.
    pub critic: CriticConfig,
    /// Per-epoch diagnostics.
    pub diagnostics: DiagnosticsConfig,
    /// Save the model's transition buffer in checkpoints, so that a resumed run
    /// reproduces an uninterrupted one bit for bit. It makes checkpoints large (up to
    /// `model.buffer_capacity` transitions with their Jacobian targets: about 15 MB for
    /// CartPole with `full` targets), hence off by default: a resumed run then starts with
    /// an empty buffer. Default false.
    pub checkpoint_buffer: bool,
}

impl Default for MbMixConfig {
    fn default() -> Self {
        MbMixConfig {
            shac: ShacConfig::default(),
            mix: MixConfig::default(),
            rollout: RolloutConfig::default(),
            model: ModelConfig::default(),
            model_lr_decay: true,
            critic: CriticConfig::default(),
            diagnostics: DiagnosticsConfig::default(),
            checkpoint_buffer: false,
        }
    }
}

impl MbMixConfig {
    /// The length of the rollout with model steps (`rollout.model_horizon`, default h).
    pub fn model_horizon(&self) -> usize {
        self.rollout.model_horizon.unwrap_or(self.shac.horizon)
    }

    /// Reading B's simulator prefix k (`rollout.sim_prefix`, default h/2).
    pub fn sim_prefix(&self) -> usize {
        self.rollout.sim_prefix.unwrap_or(self.shac.horizon / 2)
    }

    /// The actor loss's objectives after the warm-up (see `rollout.per_step_source`).
    pub(crate) fn plans(&self) -> Result<Vec<Plan>> {
        let h = self.shac.horizon;
        let Some(list) = &self.rollout.per_step_source else {
            let (mh, k, c) = (
                self.model_horizon(),
                self.sim_prefix(),
                self.rollout.model_weight,
            );
            let window = |model_grad| Plan::Window {
                model_grad,
                weight: 1.0,
            };
            let rollout = |prefix, weight| Plan::Rollout {
                prefix,
                model_grad: false,
                len: mh,
                weight,
            };
            return Ok(match self.rollout.reading {
                Reading::A => vec![window(false), rollout(0, c)],
                Reading::B => vec![rollout(k, 1.0)],
                Reading::C => vec![window(true)],
                Reading::SimOnly => vec![window(false)],
                Reading::ModelOnly => vec![rollout(0, 1.0)],
            });
        };
        if list.is_empty() {
            return Err(Error::config(
                "rollout.per_step_source",
                "needs at least one objective",
            ));
        }
        list.iter()
            .enumerate()
            .map(|(i, o)| {
                let field = format!("rollout.per_step_source[{i}]");
                in_range(&format!("{field}.weight"), o.weight, 0.0, f64::MAX, false, false)?;
                // consecutive segments of one source merge
                let mut runs: Vec<(StepSource, usize)> = Vec::new();
                for seg in &o.segments {
                    positive_count(&format!("{field}.steps"), seg.steps)?;
                    match runs.last_mut() {
                        Some((src, n)) if *src == seg.source => *n += seg.steps,
                        _ => runs.push((seg.source, seg.steps)),
                    }
                }
                let prefix_grad = |s: StepSource| s == StepSource::SimFwdModelBwd;
                match runs.as_slice() {
                    [(StepSource::Model, len)] => Ok(Plan::Rollout {
                        prefix: 0,
                        model_grad: false,
                        len: *len,
                        weight: o.weight,
                    }),
                    [(src, n)] if *n == h => Ok(Plan::Window {
                        model_grad: prefix_grad(*src),
                        weight: o.weight,
                    }),
                    [(_, n)] => Err(Error::config(
                        field,
                        format!(
                            "a simulator-only objective is the window: {n} steps, the window has shac.horizon = {h}"
                        ),
                    )),
                    [(src, k), (StepSource::Model, m)] => Ok(Plan::Rollout {
                        prefix: *k,
                        model_grad: prefix_grad(*src),
                        len: k + m,
                        weight: o.weight,
                    }),
                    _ => Err(Error::config(
                        field,
                        format!(
                            "unsupported shape {:?}: use the simulator window, a model rollout, or a simulator prefix then the model",
                            runs
                        ),
                    )),
                }
            })
            .collect()
    }

    /// Checks every field; the error names the first offending field with its section
    /// (`shac.horizon`, `mix.lambda`, `model.sobolev.beta_s`, …).
    pub fn validate(&self) -> Result<()> {
        let within = |section: &str, e: Error| match e {
            Error::InvalidConfig { field, reason } => Error::InvalidConfig {
                field: format!("{section}.{field}"),
                reason,
            },
            other => other,
        };
        self.shac.validate().map_err(|e| within("shac", e))?;
        in_range("mix.lambda", self.mix.lambda, 0.0, 1.0, false, false)?;
        in_range(
            "rollout.model_weight",
            self.rollout.model_weight,
            0.0,
            f64::MAX,
            false,
            false,
        )?;
        if let Some(m) = self.rollout.model_horizon {
            positive_count("rollout.model_horizon", m)?;
        }
        if self.rollout.reading == Reading::B && self.sim_prefix() >= self.model_horizon() {
            return Err(Error::config(
                "rollout.sim_prefix",
                format!(
                    "must be less than the chain length rollout.model_horizon = {}, got {}",
                    self.model_horizon(),
                    self.sim_prefix()
                ),
            ));
        }
        let plans = self.plans()?;
        if self.model.space == sobolev_model::ModelSpace::Obs {
            // an observation-space model can neither continue a simulator state (B's chain)
            // nor stand in for the simulator's Jacobian on its tape (C)
            let chained = plans.iter().any(|p| match *p {
                Plan::Window { model_grad, .. } => model_grad,
                Plan::Rollout { prefix, .. } => prefix > 0,
            });
            if chained {
                return Err(Error::config(
                    "model.space",
                    "an observation-space model runs whole model rollouts only: rollout.reading = \"A\", \"model_only\" or \"sim_only\"",
                ));
            }
        }
        if self.model.sobolev.direction_source == sobolev_model::DirectionSource::PolicyAdjoint
            && self.model.update_order == sobolev_model::UpdateOrder::Before
        {
            return Err(Error::config(
                "model.sobolev.direction_source",
                "policy_adjoint needs the actor's sweep before the model trains: model.update_order = \"after\"",
            ));
        }
        self.model.validate().map_err(|e| match e {
            sobolev_model::Error::InvalidConfig { field, reason } => Error::InvalidConfig {
                field: format!("model.{field}"),
                reason,
            },
            other => Error::Model(other),
        })?;
        positive_count("diagnostics.every", self.diagnostics.every)?;
        let g = self.diagnostics.grad_variance_groups;
        if g == 1 || g > self.shac.num_envs {
            return Err(Error::config(
                "diagnostics.grad_variance_groups",
                format!(
                    "must be 0 (off) or between 2 and shac.num_envs = {}, got {g}",
                    self.shac.num_envs
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = MbMixConfig::default();
        c.validate().unwrap();
        assert_eq!(c.mix.lambda, 0.95);
        assert_eq!(c.rollout.reading, Reading::A);
        assert_eq!(c.rollout.model_weight, 1.0);
        assert_eq!(c.rollout.model_warmup_epochs, 20);
        assert_eq!((c.model_horizon(), c.sim_prefix()), (32, 16));
        assert_eq!(c.diagnostics.every, 10);
        assert_eq!(c.diagnostics.grad_variance_groups, 4);
        assert_eq!(c.critic.train_on, CriticData::Sim);
    }

    #[test]
    fn validate_names_the_field_with_its_section() {
        let d = MbMixConfig::default;
        let cases: Vec<(MbMixConfig, &str)> = vec![
            (
                MbMixConfig {
                    mix: MixConfig {
                        lambda: 1.5,
                        ..Default::default()
                    },
                    ..d()
                },
                "mix.lambda",
            ),
            (
                MbMixConfig {
                    shac: ShacConfig {
                        horizon: 0,
                        ..Default::default()
                    },
                    ..d()
                },
                "shac.horizon",
            ),
            (
                MbMixConfig {
                    rollout: RolloutConfig {
                        model_weight: -1.0,
                        ..Default::default()
                    },
                    ..d()
                },
                "rollout.model_weight",
            ),
            (
                MbMixConfig {
                    rollout: RolloutConfig {
                        model_horizon: Some(0),
                        ..Default::default()
                    },
                    ..d()
                },
                "rollout.model_horizon",
            ),
            (
                MbMixConfig {
                    rollout: RolloutConfig {
                        reading: Reading::B,
                        sim_prefix: Some(32),
                        ..Default::default()
                    },
                    ..d()
                },
                "rollout.sim_prefix",
            ),
            (
                MbMixConfig {
                    model: ModelConfig {
                        lr: f64::NAN,
                        ..Default::default()
                    },
                    ..d()
                },
                "model.lr",
            ),
            (
                MbMixConfig {
                    model: ModelConfig {
                        sobolev: sobolev_model::SobolevConfig {
                            beta_s: -1.0,
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                    ..d()
                },
                "model.sobolev.beta_s",
            ),
            (
                MbMixConfig {
                    diagnostics: DiagnosticsConfig {
                        grad_variance_groups: 1,
                        ..Default::default()
                    },
                    ..d()
                },
                "diagnostics.grad_variance_groups",
            ),
            (
                MbMixConfig {
                    diagnostics: DiagnosticsConfig {
                        every: 0,
                        ..Default::default()
                    },
                    ..d()
                },
                "diagnostics.every",
            ),
        ];
        for (cfg, field) in cases {
            match cfg.validate() {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected InvalidConfig for {field}, got {other:?}"),
            }
        }
        // B with the default prefix (h/2 < h) and a longer chain are fine.
        let b = MbMixConfig {
            rollout: RolloutConfig {
                reading: Reading::B,
                model_horizon: Some(48),
                ..Default::default()
            },
            ..d()
        };
        b.validate().unwrap();
    }

    #[test]
    fn serde_spellings_and_unknown_fields() {
        let c: MbMixConfig = serde_json::from_str(
            r#"{"rollout": {"reading": "sim_only"}, "mix": {"starts": "all", "loss_scale": "per_env"},
                "shac": {"horizon": 8}, "model": {"sobolev": {"form": "none"}}}"#,
        )
        .unwrap();
        assert_eq!(c.rollout.reading, Reading::SimOnly);
        assert_eq!(c.mix.starts, MixStarts::All);
        assert_eq!(c.mix.loss_scale, LossScale::PerEnv);
        assert_eq!(c.shac.horizon, 8);
        assert_eq!(c.model.sobolev.form, sobolev_model::SobolevForm::None);
        assert_eq!(c.sim_prefix(), 4);
        for r in ["A", "B", "C", "b"] {
            let c: RolloutConfig =
                serde_json::from_str(&format!(r#"{{"reading": "{r}"}}"#)).unwrap();
            assert_eq!(c.reading.name(), r.to_uppercase());
        }
        assert!(serde_json::from_str::<MbMixConfig>(r#"{"mix": {"lamda": 0.5}}"#).is_err());
        assert!(serde_json::from_str::<RolloutConfig>(r#"{"reading": "D"}"#).is_err());
        let back: MbMixConfig =
            serde_json::from_str(&serde_json::to_string(&MbMixConfig::default()).unwrap()).unwrap();
        assert_eq!(back, MbMixConfig::default());
        for (name, gate) in [
            ("none", ModelGate::None),
            ("agree", ModelGate::Agree),
            ("project", ModelGate::Project),
            ("scale", ModelGate::Scale),
        ] {
            let c: RolloutConfig =
                serde_json::from_str(&format!(r#"{{"model_gate": "{name}"}}"#)).unwrap();
            assert_eq!(c.model_gate, gate);
        }
        let err = serde_json::from_str::<RolloutConfig>(r#"{"model_gate": "pcgrad"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pcgrad") && err.contains("project"), "{err}");
    }

    #[test]
    fn model_gate_combines_as_documented() {
        let sim = [1.0f32, 0.0, 2.0];
        let agree = [0.5f32, 1.0, 0.0];
        let conflict = [-1.0f32, 1.0, -1.0];
        let run = |gate: ModelGate, m: &[f32]| {
            let mut g = sim;
            let cos = gate.combine(&mut g, m);
            (g, cos.unwrap())
        };
        // none: the plain sum, whatever the angle
        assert_eq!(run(ModelGate::None, &conflict).0, [0.0, 1.0, 1.0]);
        // agree: the sum when the inner product is positive, the simulator's gradient else
        let (g, cos) = run(ModelGate::Agree, &agree);
        assert_eq!(g, [1.5, 1.0, 2.0]);
        assert!(cos > 0.0);
        let (g, cos) = run(ModelGate::Agree, &conflict);
        assert_eq!(g, sim);
        assert!((cos + 3.0 / (5f64.sqrt() * 3f64.sqrt())).abs() < 1e-12);
        // project: an agreeing gradient is added whole; a conflicting one loses its
        // component along the simulator's, so what is added is orthogonal to it
        assert_eq!(run(ModelGate::Project, &agree).0, [1.5, 1.0, 2.0]);
        let (g, _) = run(ModelGate::Project, &conflict);
        let added: Vec<f64> = g.iter().zip(&sim).map(|(a, b)| (a - b) as f64).collect();
        let along: f64 = added.iter().zip(&sim).map(|(a, b)| a * *b as f64).sum();
        assert!(along.abs() < 1e-6, "{added:?}");
        assert!(
            (added[1] - 1.0).abs() < 1e-6,
            "the orthogonal part is kept: {added:?}"
        );
        // scale: weighted by the positive part of the cosine
        let (g, cos) = run(ModelGate::Scale, &agree);
        for k in 0..3 {
            assert!((g[k] as f64 - (sim[k] as f64 + cos * agree[k] as f64)).abs() < 1e-6);
        }
        assert_eq!(run(ModelGate::Scale, &conflict).0, sim);
        // a zero simulator gradient (model_only) takes the model's whole
        let mut z = [0.0f32; 3];
        assert_eq!(ModelGate::Agree.combine(&mut z, &conflict), None);
        assert_eq!(z, conflict);
    }
}

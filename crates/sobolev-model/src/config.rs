//! The dynamics model's configuration: one field per knob of the "Dynamics model" and
//! "Sobolev loss" tables of `reference/algorithms.md` §3.4. Every default is the table's
//! suggested (inferred) value unless its doc says otherwise.

use crate::error::{Error, Result};

/// The hidden-layer activation. Both are C¹, so the model's input Jacobian is continuous
/// (§3.4: ReLU would give a piecewise-constant Jacobian).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// ELU with α = 1 (default, as the actor and critic).
    #[default]
    Elu,
    /// tanh.
    Tanh,
}

/// What the network predicts (`model.target`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionTarget {
    /// The residual Δs = s′ − s; the model returns s + Δs (default).
    #[default]
    Residual,
    /// The next state s′ itself.
    NextState,
}

/// Which estimator of the Jacobian penalty the loss uses (`sobolev.form`, §3.5). Every
/// projected form is an unbiased estimate of the `full` penalty
/// β_s‖M_s‖_F² + β_a‖M_a‖_F², M = J_f − J_F (tested).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SobolevForm {
    /// The full Jacobians ∂s′/∂(s, a): `state_dim` simulator VJPs per transition.
    Full,
    /// uᵀJ_f against uᵀJ_F with u ~ N(0, I) in normalised output space, `directions` VJPs
    /// per transition (default, Czarnecki et al.).
    #[default]
    VjpProj,
    /// J_f·v against J_F·v with v ~ N(0, diag(β)) in normalised input space, `directions`
    /// JVPs per transition.
    JvpProj,
    /// uᵀJ_f·v against (uᵀJ_F)·v: one VJP and a dot product per direction.
    Bilinear,
    /// No Jacobian term: the plain MSE model (the ablation / baseline).
    None,
}

impl SobolevForm {
    /// The config spelling of the form.
    pub fn name(self) -> &'static str {
        match self {
            SobolevForm::Full => "full",
            SobolevForm::VjpProj => "vjp_proj",
            SobolevForm::JvpProj => "jvp_proj",
            SobolevForm::Bilinear => "bilinear",
            SobolevForm::None => "none",
        }
    }

    /// Whether the form draws random directions (and so uses `directions`).
    pub fn is_projected(self) -> bool {
        matches!(
            self,
            SobolevForm::VjpProj | SobolevForm::JvpProj | SobolevForm::Bilinear
        )
    }
}

/// What happens to transitions whose simulator targets are unusable or extreme
/// (`sobolev.target_filter`). Contact can make simulator Jacobians huge (penalty stiffness
/// up to 4e4) or non-finite. Every option drops the non-finite transitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetFilter {
    /// Drop a transition whose next state or any Sobolev target is NaN or ±∞, and count it
    /// (default).
    #[default]
    DropNonFinite,
    /// Also rescale each Jacobian target, in normalised coordinates, to Euclidean norm at
    /// most this value: per transition the `full` block, per direction the projected
    /// targets (`u_nᵀJ*`, `J*·v_n`, `u_nᵀJ*v_n`). `{ clip_norm = 10.0 }`.
    ClipNorm(f64),
    /// Also penalise the Jacobian residual r elementwise with the Huber function of this
    /// δ, `r²` for |r| ≤ δ and `2δ|r| − δ²` beyond (quadratic near zero, linear in the
    /// outliers). `{ huber = 1.0 }`.
    Huber(f64),
}

/// Which Jacobian blocks the Sobolev loss matches (`sobolev.wrt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wrt {
    /// ∂f/∂s and ∂f/∂a (default: the policy gradient flows through both).
    #[default]
    StateAction,
    /// ∂f/∂a only (β_s taken as 0).
    Action,
}

/// Where the projected forms' output directions u come from (`sobolev.direction_source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectionSource {
    /// u ~ N(0, I) in normalised output space (default: an unbiased Frobenius estimate).
    #[default]
    Random,
    /// The first direction of each transition is the actor's adjoint ∂L/∂s′ from the
    /// simulator window's reverse sweep (normalised to the length a random direction has
    /// on average), the others random: no extra simulator cost and the directions the
    /// policy gradient uses, but not an unbiased estimate. `vjp_proj` and `bilinear`
    /// only; transitions without an adjoint keep a random direction.
    PolicyAdjoint,
}

/// How the model's own Jacobian products are differentiated
/// (`sobolev.model_derivative`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelDerivative {
    /// Tangents propagated through every layer with ordinary ops, so the loss needs only
    /// first-order reverse mode (default, and the only choice: dfdx has no double backward,
    /// `rust-stack.md`; the alternative `double_backward` computes the same loss).
    #[default]
    ForwardTangent,
}

/// The Sobolev-loss knobs (§3.4 "Sobolev loss").
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SobolevConfig {
    /// Estimator of the Jacobian penalty. Default `vjp_proj` (§3.4; `full` for CartPole,
    /// Hopper and the tests, `none` for the MSE-only model).
    pub form: SobolevForm,
    /// Random directions per transition k for the projected forms. Default 1.
    pub directions: usize,
    /// Weight β_s of the state-Jacobian term, on normalised coordinates. Default 1.0. For
    /// `jvp_proj` and `bilinear` the weights enter through the direction distribution
    /// (v_s ~ N(0, β_s I), v_a ~ N(0, β_a I)) and are fixed when the targets are collected.
    pub beta_s: f64,
    /// Weight β_a of the action-Jacobian term, on normalised coordinates. Default 1.0.
    pub beta_a: f64,
    /// Handling of non-finite targets. Default `drop_non_finite`.
    pub target_filter: TargetFilter,
    /// Jacobian blocks matched: `state_action` (default) or `action`.
    pub wrt: Wrt,
    /// Output directions of the projected forms: `random` (default) or `policy_adjoint`.
    pub direction_source: DirectionSource,
    /// Default (and only) `forward_tangent`.
    pub model_derivative: ModelDerivative,
}

impl SobolevConfig {
    /// The weights (β_s, β_a) in effect: β_s is 0 with `wrt = action`.
    pub fn betas(&self) -> (f64, f64) {
        match self.wrt {
            Wrt::StateAction => (self.beta_s, self.beta_a),
            Wrt::Action => (0.0, self.beta_a),
        }
    }
}

impl Default for SobolevConfig {
    fn default() -> Self {
        SobolevConfig {
            form: SobolevForm::default(),
            directions: 1,
            beta_s: 1.0,
            beta_a: 1.0,
            target_filter: TargetFilter::default(),
            wrt: Wrt::default(),
            direction_source: DirectionSource::default(),
            model_derivative: ModelDerivative::default(),
        }
    }
}

/// Episode ends in model rollouts (`model.done`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelDone {
    /// The task's termination rule on the predicted states (default).
    #[default]
    Analytic,
    /// No early termination in the model (the time limit still applies).
    None,
}

/// Where model rollouts take their rewards from (`model.reward`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardSource {
    /// The task's differentiable reward function on the predicted states (default).
    #[default]
    Analytic,
    /// A learned head r_ψ(s′, a) fitted to the simulator's rewards (MB-MIX's
    /// `reward_head`), of widths `reward_hidden`.
    Learned,
}

/// The coordinates the model maps (`model.space`, algorithms.md §3.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSpace {
    /// The simulator state: (s, a) → s′ (default for every task here).
    #[default]
    SimState,
    /// The observation: (o, a) → o′. The Jacobian targets are `∂o′/∂a` only
    /// (`sobolev.wrt = "action"`): `∂o′/∂o` would need a chart s = h(o), which the tasks do
    /// not provide. Rewards come from the learned head and rollouts do not terminate.
    Obs,
}

/// How the model's training step computes the Sobolev loss and its parameter gradient
/// (`model.network_backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkBackend {
    /// dfdx tensors: the tangent or cotangent pass as ordinary ops, one reverse pass
    /// (default; every form).
    #[default]
    Dfdx,
    /// The passes written out by hand with matrixmultiply's GEMM (`crate::fused`), tested
    /// equal to the dfdx path: forms `none` and `vjp_proj` only.
    Fused,
}

/// When the model trains within an MB-MIX epoch (`model.update_order`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOrder {
    /// On the newest window before the actor's objectives use the model.
    Before,
    /// After the actor and critic steps (default, §3.9).
    #[default]
    After,
}

/// The dynamics model and its training (§3.4 "Dynamics model", §3.5).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Hidden widths of the MLP. Default [256, 256, 256] (`model.arch`).
    pub hidden: Vec<usize>,
    /// Hidden activation. Default `elu` (C¹).
    pub activation: Activation,
    /// LayerNorm after each hidden activation (learnable gain and bias). Default true.
    pub layer_norm: bool,
    /// Predict the residual Δs or the next state. Default `residual` (`model.target`).
    pub target: PredictionTarget,
    /// Normalise inputs and outputs by running mean/std (`model.normalise`); Jacobian
    /// targets are scaled the same way, J_norm = diag(1/σ_out)·J·diag(σ_in). Default true.
    pub normalise: bool,
    /// Adam learning rate. Default 1e-3 (`model.optim`). A schedule (e.g. SHAC's linear
    /// decay) is the caller's: see [`crate::SobolevTrainer::set_lr`].
    pub lr: f64,
    /// Adam (β1, β2). Default [0.9, 0.999] (PyTorch's defaults; the table gives none).
    pub betas: [f64; 2],
    /// Gradient-norm clip (`inf` disables it). Default 1.0.
    pub grad_clip: f64,
    /// Early termination in model rollouts: `analytic` (default) or `none`.
    pub done: ModelDone,
    /// Rewards in model rollouts: `analytic` (default) or `learned`.
    pub reward: RewardSource,
    /// Members K of the model ensemble (`model.ensemble`): each trained on the same
    /// transitions from its own initialisation and minibatches; rollouts step with the
    /// members' mean prediction and its Jacobian. Default 1.
    pub ensemble: usize,
    /// Hidden widths of the learned reward head. Default [64, 64].
    pub reward_hidden: Vec<usize>,
    /// When the model trains in an MB-MIX epoch: `after` the actor and critic (default) or
    /// `before` the actor's objectives.
    pub update_order: UpdateOrder,
    /// Transitions per minibatch. Default 512 (the SHAC critic's minibatch at N = 64,
    /// h = 32, 4 minibatches; the table gives none).
    pub batch_size: usize,
    /// Passes per epoch (`model.steps_per_epoch`). Default 16.
    pub iterations: usize,
    /// Minibatches per pass (`model.steps_per_epoch`). Default 4: 64 steps per epoch.
    pub minibatches: usize,
    /// FIFO capacity in transitions (`model.buffer`). Default 131072 (64 windows at
    /// N = 64, h = 32).
    pub buffer_capacity: usize,
    /// Seed of the weight initialisation. Default 0.
    pub seed: u64,
    /// The Sobolev-loss knobs.
    pub sobolev: SobolevConfig,
    /// `dfdx` (default) or `fused` (forms `none` and `vjp_proj`): how the training step
    /// computes the loss gradient. Both give the same gradient (tested); `fused` is several
    /// times faster at MB-MIX's model sizes.
    pub network_backend: NetworkBackend,
    /// `sim_state` (default) or `obs`: what the model maps (see [`ModelSpace`]).
    pub space: ModelSpace,
    /// Clip the value term's and the Jacobian term's gradients to `grad_clip` each, then
    /// add them, instead of clipping their sum (needs `network_backend = "fused"`). With
    /// contact Jacobians the Jacobian term's gradient is hundreds of times the value
    /// term's, so clipping the sum leaves the value term almost no step. Default false.
    pub grad_clip_per_term: bool,
    /// With `grad_clip_per_term`, the norm the Jacobian term's gradient is clipped to
    /// (the value term's stays `grad_clip`): the two terms' share of each step. `None`
    /// (default) uses `grad_clip` for both. Needs `grad_clip_per_term`; must be > 0.
    pub grad_clip_jacobian: Option<f64>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            hidden: vec![256, 256, 256],
            activation: Activation::default(),
            layer_norm: true,
            target: PredictionTarget::default(),
            normalise: true,
            lr: 1e-3,
            betas: [0.9, 0.999],
            grad_clip: 1.0,
            done: ModelDone::default(),
            reward: RewardSource::default(),
            ensemble: 1,
            reward_hidden: vec![64, 64],
            update_order: UpdateOrder::default(),
            batch_size: 512,
            iterations: 16,
            minibatches: 4,
            buffer_capacity: 131_072,
            seed: 0,
            sobolev: SobolevConfig::default(),
            network_backend: NetworkBackend::default(),
            space: ModelSpace::default(),
            grad_clip_per_term: false,
            grad_clip_jacobian: None,
        }
    }
}

impl ModelConfig {
    /// Checks every value; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        for (k, &w) in self.hidden.iter().enumerate() {
            if w == 0 {
                return Err(Error::config(
                    format!("hidden[{k}]"),
                    "hidden widths must be at least 1",
                ));
            }
        }
        positive_finite("lr", self.lr)?;
        for (k, &b) in self.betas.iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::config(
                    format!("betas[{k}]"),
                    format!("must lie in [0, 1), got {b}"),
                ));
            }
        }
        if self.grad_clip.is_nan() || self.grad_clip <= 0.0 {
            return Err(Error::config(
                "grad_clip",
                format!(
                    "must be > 0 (inf disables clipping), got {}",
                    self.grad_clip
                ),
            ));
        }
        for (k, &w) in self.reward_hidden.iter().enumerate() {
            if w == 0 {
                return Err(Error::config(
                    format!("reward_hidden[{k}]"),
                    "a layer needs at least 1 unit",
                ));
            }
        }
        at_least_one("ensemble", self.ensemble)?;
        at_least_one("batch_size", self.batch_size)?;
        at_least_one("iterations", self.iterations)?;
        at_least_one("minibatches", self.minibatches)?;
        at_least_one("buffer_capacity", self.buffer_capacity)?;
        at_least_one("sobolev.directions", self.sobolev.directions)?;
        if self.sobolev.direction_source == DirectionSource::PolicyAdjoint
            && !matches!(
                self.sobolev.form,
                SobolevForm::VjpProj | SobolevForm::Bilinear
            )
        {
            return Err(Error::config(
                "sobolev.direction_source",
                format!(
                    "policy_adjoint supplies output directions u: it needs form vjp_proj or bilinear, got {:?}",
                    self.sobolev.form
                ),
            ));
        }
        if self.network_backend == NetworkBackend::Fused
            && !matches!(self.sobolev.form, SobolevForm::None | SobolevForm::VjpProj)
        {
            return Err(Error::config(
                "network_backend",
                format!(
                    "\"fused\" supports sobolev.form = \"none\" and \"vjp_proj\", got {:?}: set network_backend = \"dfdx\" for it",
                    self.sobolev.form
                ),
            ));
        }
        if self.grad_clip_per_term && self.network_backend != NetworkBackend::Fused {
            return Err(Error::config(
                "grad_clip_per_term",
                "the per-term gradients come from the fused passes: set network_backend = \"fused\"",
            ));
        }
        if let Some(c) = self.grad_clip_jacobian {
            if !self.grad_clip_per_term {
                return Err(Error::config(
                    "grad_clip_jacobian",
                    "it sets the Jacobian term's own clip norm: set grad_clip_per_term = true",
                ));
            }
            if c.is_nan() || c <= 0.0 {
                return Err(Error::config(
                    "grad_clip_jacobian",
                    format!("must be > 0 (inf: no clip), got {c}"),
                ));
            }
        }
        if self.space == ModelSpace::Obs {
            if self.sobolev.form != SobolevForm::None && self.sobolev.wrt != Wrt::Action {
                return Err(Error::config(
                    "space",
                    "an observation-space model has Jacobian targets with respect to the action only: set sobolev.wrt = \"action\"",
                ));
            }
            if !matches!(
                self.sobolev.form,
                SobolevForm::None | SobolevForm::Full | SobolevForm::VjpProj
            ) {
                return Err(Error::config(
                    "space",
                    format!(
                        "an observation-space model supports sobolev.form = \"none\", \"full\" and \"vjp_proj\", got {:?}",
                        self.sobolev.form
                    ),
                ));
            }
            if self.sobolev.direction_source != DirectionSource::Random {
                return Err(Error::config(
                    "space",
                    "an observation-space model draws its directions: sobolev.direction_source = \"random\"",
                ));
            }
            if self.reward != RewardSource::Learned {
                return Err(Error::config(
                    "space",
                    "an observation-space model needs reward = \"learned\" (the task's reward is a function of the simulator state)",
                ));
            }
            if self.done != ModelDone::None {
                return Err(Error::config(
                    "space",
                    "an observation-space model needs done = \"none\" (the task's termination is a function of the simulator state)",
                ));
            }
        }
        match self.sobolev.target_filter {
            TargetFilter::DropNonFinite => {}
            TargetFilter::ClipNorm(c) => positive_finite("sobolev.target_filter.clip_norm", c)?,
            TargetFilter::Huber(d) => positive_finite("sobolev.target_filter.huber", d)?,
        }
        for (name, b) in [
            ("sobolev.beta_s", self.sobolev.beta_s),
            ("sobolev.beta_a", self.sobolev.beta_a),
        ] {
            if !b.is_finite() || b < 0.0 {
                return Err(Error::config(
                    name,
                    format!("must be finite and ≥ 0, got {b}"),
                ));
            }
        }
        Ok(())
    }
}

fn positive_finite(field: &str, v: f64) -> Result<()> {
    if !v.is_finite() || v <= 0.0 {
        return Err(Error::config(
            field,
            format!("must be finite and > 0, got {v}"),
        ));
    }
    Ok(())
}

fn at_least_one(field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::config(field, "must be at least 1"));
    }
    Ok(())
}

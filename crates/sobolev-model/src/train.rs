//! Training the dynamics model on its buffer (Adam, gradient-norm clipping, minibatches) and
//! evaluating it against held-out simulator transitions.

use crate::buffer::{collect, TargetLayout, TargetSpec, TransitionBuffer, Transitions};
use crate::config::{ModelConfig, NetworkBackend, SobolevForm};
use crate::error::{Error, Result};
use crate::loss::LossParts;
use crate::model::SobolevModel;
use diff_core::{SeededRng, Task};
use ndarray::{s, Array2, ArrayView2};

/// Adam with PyTorch's update (`torch.optim.Adam`, no weight decay):
/// `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
/// `θ ← θ − (lr/(1−β1ᵗ))·m/(sqrt(v)/sqrt(1−β2ᵗ) + ε)`.
///
/// mbmix-policy's `optim::Adam` is the same update, but that crate sits a layer above this one
/// (ARCHITECTURE.md), and dfdx's own `Adam` needs compile-time tensor shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub lr: f64,
    /// (β1, β2).
    pub betas: (f64, f64),
    /// Denominator epsilon (1e-8).
    pub eps: f64,
    /// Steps taken.
    pub step: u64,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    /// A fresh optimiser for `n` parameters.
    pub fn new(n: usize, lr: f64, betas: (f64, f64)) -> Self {
        Adam {
            lr,
            betas,
            eps: 1e-8,
            step: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// The first and second moment estimates (one entry per parameter).
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// Restores the moments and the step count (e.g. from a checkpoint); the lengths must
    /// be the optimiser's parameter count.
    pub fn set_state(&mut self, m: Vec<f32>, v: Vec<f32>, step: u64) -> Result<()> {
        if m.len() != self.m.len() || v.len() != self.v.len() {
            return Err(Error::dim(
                "Adam moments",
                self.m.len(),
                format!("{} / {}", m.len(), v.len()),
            ));
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }

    /// One update of `params` with `grads`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(params.len(), self.m.len(), "Adam: parameter count");
        assert_eq!(grads.len(), self.m.len(), "Adam: gradient count");
        self.step += 1;
        let (b1, b2) = self.betas;
        let t = self.step as i32;
        let step_size = (self.lr / (1.0 - b1.powi(t))) as f32;
        let bc2 = (1.0 - b2.powi(t)).sqrt() as f32;
        let (b1, b2, eps) = (b1 as f32, b2 as f32, self.eps as f32);
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = *m * b1 + g * (1.0 - b1);
            *v = *v * b2 + g * g * (1.0 - b2);
            *p -= step_size * *m / (v.sqrt() / bc2 + eps);
        }
    }
}

/// `torch.nn.utils.clip_grad_norm_`: scales `g` by `min(1, max_norm/(‖g‖ + 1e-6))`; returns
/// the norm before clipping (accumulated in f64).
pub fn clip_grad_norm(g: &mut [f32], max_norm: f64) -> f64 {
    let norm = g
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for v in g.iter_mut() {
            *v = (*v as f64 * coef) as f32;
        }
    }
    norm
}

/// What one training epoch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ModelStats {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Minibatches skipped because their gradient was not finite.
    pub skipped: usize,
    /// Mean J_M over the steps.
    pub loss: f64,
    /// Mean value term.
    pub value_loss: f64,
    /// Mean Jacobian term (0 for `none`).
    pub jacobian_loss: f64,
    /// Mean gradient norm before clipping.
    pub grad_norm: f64,
    /// Transitions in the buffer.
    pub buffer_len: usize,
    /// Transitions dropped by the target filter so far.
    pub dropped: u64,
}

/// Held-out accuracy of a model (physical coordinates, Frobenius norms over the whole set).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct EvalStats {
    /// Transitions evaluated.
    pub samples: usize,
    /// `‖ŝ′ − s′‖ / ‖s′ − s‖`: the next-state error relative to the true state change
    /// (relative to ‖s′‖ every model would look accurate, since s′ ≈ s).
    pub next_state_rel_err: f64,
    /// `‖Ĵ − J_F‖ / ‖J_F‖` over the full Jacobians ∂s′/∂(s, a).
    pub jacobian_rel_err: f64,
    /// `‖Ĵ − J_F‖ / ‖J_F − [I, 0]‖`: the same error relative to the Jacobian of the state
    /// change (stricter: the identity part of J_F is free for a residual model).
    pub jacobian_delta_rel_err: f64,
    /// Median over the transitions r of their own `‖Ĵ_r − J_r‖ / ‖J_r‖`. The aggregate
    /// [`EvalStats::jacobian_rel_err`] weighs transitions by ‖J_r‖², so a few with large
    /// Jacobians (contacts) can dominate it; this weighs every transition alike.
    pub jacobian_rel_err_median: f64,
    /// Mean over the transitions of the same per-transition error.
    pub jacobian_rel_err_mean: f64,
}

/// Evaluates `model` on held-out transitions collected with `full` targets.
pub fn evaluate(model: &SobolevModel<f32>, held_out: &Transitions) -> Result<EvalStats> {
    evaluate_columns(model, held_out, 0)
}

/// [`evaluate`] with the Jacobian error over the input columns from `first` on (the
/// action columns, `first = state_dim`, for an observation-space model, whose targets
/// have no observation columns).
pub fn evaluate_columns(
    model: &SobolevModel<f32>,
    held_out: &Transitions,
    first: usize,
) -> Result<EvalStats> {
    let l = held_out.layout;
    if l.form != SobolevForm::Full {
        return Err(Error::Incompatible(format!(
            "evaluation needs `full` Jacobian targets, got `{}`",
            l.form.name()
        )));
    }
    if l.state_dim != model.state_dim() || l.action_dim != model.action_dim() {
        return Err(Error::Incompatible(
            "held-out transitions of another task".into(),
        ));
    }
    let (ds, din, n) = (l.state_dim, l.input_dim(), held_out.len());
    let (mut e_s, mut d_s, mut e_j, mut d_j, mut d_jd) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    let mut per_row = Vec::with_capacity(n);
    let ratio = |e: f64, d: f64| (e / d.max(1e-30)).sqrt();
    const CHUNK: usize = 1024;
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let (s, a) = (
            held_out.s.slice(s![start..end, ..]),
            held_out.a.slice(s![start..end, ..]),
        );
        let pred = model.predict(s, a)?;
        let jac = model.jacobian(s, a)?;
        for r in 0..end - start {
            let row = start + r;
            let (mut e_r, mut d_r) = (0.0f64, 0.0f64);
            for o in 0..ds {
                let truth = held_out.s_next[[row, o]] as f64;
                e_s += (pred[[r, o]] as f64 - truth).powi(2);
                d_s += (truth - held_out.s[[row, o]] as f64).powi(2);
                for i in first..din {
                    let jf = held_out.targets[[row, o * din + i]] as f64;
                    e_r += (jac[[r, o, i]] as f64 - jf).powi(2);
                    d_r += jf * jf;
                    d_jd += (jf - if i == o { 1.0 } else { 0.0 }).powi(2);
                }
            }
            e_j += e_r;
            d_j += d_r;
            per_row.push(ratio(e_r, d_r));
        }
    }
    let mean = per_row.iter().sum::<f64>() / per_row.len().max(1) as f64;
    per_row.sort_by(f64::total_cmp);
    let median = per_row.get(per_row.len() / 2).copied().unwrap_or(0.0);
    Ok(EvalStats {
        samples: n,
        next_state_rel_err: ratio(e_s, d_s),
        jacobian_rel_err: ratio(e_j, d_j),
        jacobian_delta_rel_err: ratio(e_j, d_jd),
        jacobian_rel_err_median: median,
        jacobian_rel_err_mean: mean,
    })
}

/// The dynamics model with its optimiser and transition buffer.
#[derive(Clone, Debug)]
pub struct SobolevTrainer {
    config: ModelConfig,
    model: SobolevModel<f32>,
    buffer: TransitionBuffer,
    adam: Adam,
}

impl SobolevTrainer {
    /// A fresh model, optimiser and empty buffer for a task with these dimensions.
    pub fn new(config: ModelConfig, state_dim: usize, action_dim: usize) -> Result<Self> {
        let model = SobolevModel::<f32>::new(state_dim, action_dim, &config)?;
        let layout = TargetLayout::new(
            config.sobolev.form,
            state_dim,
            action_dim,
            config.sobolev.directions,
        );
        let buffer = TransitionBuffer::new(layout, config.buffer_capacity)?;
        let adam = Adam::new(
            model.num_params(),
            config.lr,
            (config.betas[0], config.betas[1]),
        );
        Ok(SobolevTrainer {
            config,
            model,
            buffer,
            adam,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    /// The model.
    pub fn model(&self) -> &SobolevModel<f32> {
        &self.model
    }
    /// The model, mutable.
    pub fn model_mut(&mut self) -> &mut SobolevModel<f32> {
        &mut self.model
    }
    /// The model's optimiser.
    pub fn adam(&self) -> &Adam {
        &self.adam
    }
    /// The model's optimiser, mutable (checkpoint restore).
    pub fn adam_mut(&mut self) -> &mut Adam {
        &mut self.adam
    }
    /// The transition buffer.
    pub fn buffer(&self) -> &TransitionBuffer {
        &self.buffer
    }
    /// Replaces the buffer's content by `kept` (oldest first, as
    /// [`TransitionBuffer::to_transitions`] returns it) with the given counters, without
    /// touching the normalisation statistics: restoring a buffer from a checkpoint. The
    /// batch must have the buffer's layout and fit its capacity.
    pub fn restore_buffer(&mut self, kept: &Transitions, pushed: u64, dropped: u64) -> Result<()> {
        let (layout, capacity) = (self.buffer.layout(), self.buffer.capacity());
        if kept.layout != layout {
            return Err(Error::Incompatible(format!(
                "buffer holds {layout:?}, restored transitions have {:?}",
                kept.layout
            )));
        }
        if kept.len() > capacity {
            return Err(Error::dim(
                "restored buffer length",
                format!("≤ {capacity}"),
                kept.len(),
            ));
        }
        let mut buffer = TransitionBuffer::new(layout, capacity)?;
        buffer.push(kept)?;
        buffer.set_counters(pushed, dropped);
        self.buffer = buffer;
        Ok(())
    }
    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.adam.lr
    }
    /// Sets the learning rate (for a schedule such as SHAC's linear decay).
    pub fn set_lr(&mut self, lr: f64) {
        self.adam.lr = lr;
    }

    /// How new transitions' targets are collected: the config's form, directions and β with
    /// the model's current normalisation scales.
    pub fn target_spec(&self) -> TargetSpec {
        self.model.target_spec(&self.config.sobolev)
    }

    /// Merges the batch into the normalisation statistics (when `normalise` is on) and pushes
    /// it into the buffer.
    pub fn add(&mut self, batch: &Transitions) -> Result<()> {
        self.buffer.push(batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let target: Array2<f32> = if self.model.is_residual() {
            &batch.s_next - &batch.s
        } else {
            batch.s_next.clone()
        };
        self.model
            .normalizer
            .update(batch.s.view(), batch.a.view(), target.view());
        Ok(())
    }

    /// Steps the task on `(states, actions)`, computes the Sobolev targets and adds the
    /// transitions ([`Self::add`]); returns the number kept.
    pub fn collect<T: Task + ?Sized>(
        &mut self,
        task: &T,
        states: ArrayView2<f32>,
        actions: ArrayView2<f32>,
        rng: &mut SeededRng,
    ) -> Result<usize> {
        let batch = collect(task, states, actions, &self.target_spec(), rng)?;
        self.add(&batch)?;
        Ok(batch.len())
    }

    /// One optimiser step on a minibatch: returns the loss parts and the gradient norm
    /// before clipping, or `None` for the norm when the gradient was not finite (no update).
    pub fn train_step(&mut self, batch: &Transitions) -> Result<(LossParts, Option<f64>)> {
        let beta = self.config.sobolev.betas();
        let prepared =
            self.model
                .prepare_filtered(batch, beta, self.config.sobolev.target_filter)?;
        let mut grad = vec![0.0f32; self.model.num_params()];
        let (parts, norm) = if self.config.grad_clip_per_term {
            let mut g_jac = vec![0.0f32; self.model.num_params()];
            let parts = self
                .model
                .sobolev_loss_grad_fused_split(&prepared, &mut grad, &mut g_jac)?;
            let clip = self.config.grad_clip;
            let n_value = clip_grad_norm(&mut grad, clip);
            let clip_jac = self.config.grad_clip_jacobian.unwrap_or(clip);
            let n_jac = clip_grad_norm(&mut g_jac, clip_jac);
            for (g, j) in grad.iter_mut().zip(&g_jac) {
                *g += *j;
            }
            // reported: the parts' norms combined (non-finite when either is)
            (parts, (n_value * n_value + n_jac * n_jac).sqrt())
        } else {
            let parts = match self.config.network_backend {
                NetworkBackend::Dfdx => self.model.sobolev_loss_grad(&prepared, &mut grad)?,
                NetworkBackend::Fused => {
                    self.model.sobolev_loss_grad_fused(&prepared, &mut grad)?
                }
            };
            let norm = clip_grad_norm(&mut grad, self.config.grad_clip);
            (parts, norm)
        };
        if !norm.is_finite() {
            return Ok((parts, None));
        }
        self.adam.update(self.model.params_mut(), &grad);
        Ok((parts, Some(norm)))
    }

    /// One epoch: `iterations` passes, each drawing `minibatches × batch_size` distinct
    /// transitions at random (all of them when the buffer holds fewer) and taking one step
    /// per minibatch.
    pub fn train_epoch(&mut self, rng: &mut SeededRng) -> Result<ModelStats> {
        let len = self.buffer.len();
        if len == 0 {
            return Err(Error::EmptyBuffer);
        }
        let c = &self.config;
        let (iterations, minibatches) = (c.iterations, c.minibatches);
        let take = len.min(minibatches * c.batch_size);
        let chunk = take.div_ceil(minibatches);
        let mut stats = ModelStats::default();
        for _ in 0..iterations {
            let idx = rand::seq::index::sample(rng, len, take).into_vec();
            for mb in idx.chunks(chunk) {
                let batch = self.buffer.gather(mb)?;
                let (parts, norm) = self.train_step(&batch)?;
                match norm {
                    None => stats.skipped += 1,
                    Some(g) => {
                        stats.steps += 1;
                        stats.loss += parts.total;
                        stats.value_loss += parts.value;
                        stats.jacobian_loss += parts.jacobian;
                        stats.grad_norm += g;
                    }
                }
            }
        }
        if stats.steps > 0 {
            let k = stats.steps as f64;
            stats.loss /= k;
            stats.value_loss /= k;
            stats.jacobian_loss /= k;
            stats.grad_norm /= k;
        }
        stats.buffer_len = len;
        stats.dropped = self.buffer.dropped();
        Ok(stats)
    }
}

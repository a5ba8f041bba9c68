//! MB-MIX checkpoints: SHAC's checkpoint (every tensor and state of the actor–critic part,
//! see [`crate::checkpoint`]) plus the dynamics model, in one safetensors file written
//! atomically and validated fully on load.
//!
//! Extra tensors: `model.<layer>` (`F32`, names of [`SobolevModel::named_params`]),
//! `model_adam.m`, `model_adam.v` (`F32`), and the model's normalisation statistics
//! `model_norm.{state,action,output}.{mean,var}` and `model_norm.counts` (`F64`; JSON would
//! not round-trip them bit for bit). Extra state (JSON metadata): the MB-MIX configuration,
//! whether the model normalises, its Adam step count, its layer widths and its RNG.
//!
//! The model's transition buffer (up to `model.buffer_capacity` transitions with their
//! Jacobian targets) is saved only with `checkpoint_buffer = true`, as the tensors
//! `model_buffer.{s,a,s_next,targets}` (oldest first) and its counters in the state; a run
//! resumed from such a checkpoint reproduces the uninterrupted run bit for bit. Without
//! it, a resumed run starts with an empty buffer that the next windows refill: the same
//! actor, critic and model, but not the same metrics.
//!
//! [`SobolevModel::named_params`]: sobolev_model::SobolevModel::named_params

use crate::checkpoint::{
    check_same_fields, state_json, write_checkpoint, Blob, CheckpointState, RawCheckpoint, Tensors,
};
use crate::error::Result;
use crate::mbmix::MbMix;
use crate::mbmix_config::MbMixConfig;
use diff_core::SeededRng;
use ndarray::Array2;
use sobolev_model::{Normalizer, RunningStats, SobolevTrainer};
use std::path::Path;

/// The value of the `format` metadata key of MB-MIX checkpoints.
pub const FORMAT: &str = "mbmix-mbmix-checkpoint-v1";

/// The non-tensor state of an MB-MIX agent.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MbMixCheckpointState {
    /// The actor–critic part's state.
    pub shac: CheckpointState,
    /// The configuration the agent was trained with.
    pub config: MbMixConfig,
    /// Layer widths of the model `[in, hidden…, out]`.
    pub model_dims: Vec<usize>,
    /// Whether the model normalises its inputs and outputs (its statistics are tensors).
    pub model_normalise: bool,
    /// The model optimiser's step count.
    pub model_adam_step: u64,
    /// The model's RNG (projection directions, minibatches).
    pub model_rng: SeededRng,
    /// The saved transition buffer's length and counters (`checkpoint_buffer`), if saved.
    pub model_buffer: Option<BufferState>,
    /// The learned reward's optimiser step count (`model.reward = learned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_head_adam_step: Option<u64>,
    /// Rows of the learned reward's training buffer saved (`checkpoint_buffer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_head_rows: Option<usize>,
    /// Optimiser step counts of ensemble members 2…K (`model.ensemble`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_adam_steps: Vec<u64>,
}

/// The non-tensor part of a saved transition buffer.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct BufferState {
    /// Transitions kept.
    pub len: usize,
    /// Transitions pushed since the buffer was created.
    pub pushed: u64,
    /// Transitions dropped by the target filter.
    pub dropped: u64,
}

/// The names of the buffer's tensors with their widths.
fn buffer_tensors(layout: sobolev_model::TargetLayout) -> [(&'static str, usize); 4] {
    [
        ("model_buffer.s", layout.state_dim),
        ("model_buffer.a", layout.action_dim),
        ("model_buffer.s_next", layout.state_dim),
        ("model_buffer.targets", layout.width()),
    ]
}

/// Tensor prefix of ensemble member `k + 2` (the first is the trainer, prefix `model`).
fn member_prefix(k: usize) -> String {
    format!("model_member{}", k + 2)
}

/// A model trainer's weights (`{prefix}.<layer>`), Adam moments (`{prefix}_adam.{m,v}`) and
/// normalisation statistics (`{prefix}_norm.*`).
fn trainer_tensors(prefix: &str, tr: &SobolevTrainer, t: &mut Tensors) {
    for (name, shape, data) in tr.model().named_params() {
        t.insert(format!("{prefix}.{name}"), Blob::f32(shape, data));
    }
    let (m, v) = tr.adam().moments();
    t.insert(format!("{prefix}_adam.m"), Blob::f32(vec![m.len()], m));
    t.insert(format!("{prefix}_adam.v"), Blob::f32(vec![v.len()], v));
    let norm = &tr.model().normalizer;
    for (side, st) in [
        ("state", &norm.state),
        ("action", &norm.action),
        ("output", &norm.output),
    ] {
        t.insert(
            format!("{prefix}_norm.{side}.mean"),
            Blob::f64(vec![st.dim()], &st.mean),
        );
        t.insert(
            format!("{prefix}_norm.{side}.var"),
            Blob::f64(vec![st.dim()], &st.var),
        );
    }
    let counts = [norm.state.count, norm.action.count, norm.output.count];
    t.insert(format!("{prefix}_norm.counts"), Blob::f64(vec![3], &counts));
}

/// A fresh trainer (empty buffer) of `config` holding the model saved under `prefix`
/// (see [`trainer_tensors`]).
#[allow(clippy::too_many_arguments)]
fn restore_trainer(
    prefix: &str,
    config: &sobolev_model::ModelConfig,
    state_dim: usize,
    action_dim: usize,
    normalise: bool,
    adam_step: u64,
    f32s: &std::collections::HashMap<String, Vec<f32>>,
    f64s: &std::collections::HashMap<String, Vec<f64>>,
    bad: &dyn Fn(String) -> crate::Error,
) -> Result<SobolevTrainer> {
    let mut trainer = SobolevTrainer::new(config.clone(), state_dim, action_dim)
        .map_err(|e| bad(e.to_string()))?;
    let params: Vec<f32> = trainer
        .model()
        .named_params()
        .iter()
        .flat_map(|(name, _, _)| f32s[&format!("{prefix}.{name}")].clone())
        .collect();
    trainer.model_mut().params_mut().copy_from_slice(&params);
    let stats = |side: &str, count: f64| RunningStats {
        mean: f64s[&format!("{prefix}_norm.{side}.mean")].clone(),
        var: f64s[&format!("{prefix}_norm.{side}.var")].clone(),
        count,
    };
    let counts = &f64s[&format!("{prefix}_norm.counts")];
    if counts.iter().any(|c| *c <= 0.0)
        || f64s.iter().any(|(k, v)| {
            k.starts_with(&format!("{prefix}_norm."))
                && k.ends_with(".var")
                && v.iter().any(|x| *x < 0.0)
        })
    {
        return Err(bad("negative model normalisation statistics".into()));
    }
    trainer.model_mut().normalizer = Normalizer {
        enabled: normalise,
        state: stats("state", counts[0]),
        action: stats("action", counts[1]),
        output: stats("output", counts[2]),
    };
    trainer
        .adam_mut()
        .set_state(
            f32s[&format!("{prefix}_adam.m")].clone(),
            f32s[&format!("{prefix}_adam.v")].clone(),
            adam_step,
        )
        .map_err(|e| bad(e.to_string()))?;
    Ok(trainer)
}

impl MbMix {
    /// The model's buffer as tensors (oldest first) and its state, when it is saved.
    fn buffer_checkpoint(&self) -> Option<(BufferState, Vec<(String, Blob)>)> {
        let buf = self.trainer.buffer();
        if !self.cfg.checkpoint_buffer {
            return None;
        }
        let state = BufferState {
            len: buf.len(),
            pushed: buf.pushed(),
            dropped: buf.dropped(),
        };
        if buf.is_empty() {
            return Some((state, Vec::new()));
        }
        let all = buf.to_transitions();
        let arrays = [&all.s, &all.a, &all.s_next, &all.targets];
        let tensors = buffer_tensors(buf.layout())
            .iter()
            .zip(arrays)
            .map(|((name, width), x)| {
                let data: Vec<f32> = x.iter().copied().collect();
                (name.to_string(), Blob::f32(vec![buf.len(), *width], &data))
            })
            .collect();
        Some((state, tensors))
    }

    fn checkpoint_tensors(&self) -> Tensors {
        let mut t = self.shac.checkpoint_tensors();
        trainer_tensors("model", &self.trainer, &mut t);
        for (k, m) in self.members.iter().enumerate() {
            trainer_tensors(&member_prefix(k), m, &mut t);
        }
        if let Some(h) = &self.reward_head {
            let p = h.f.net.params();
            t.insert("reward_head.params".into(), Blob::f32(vec![p.len()], p));
            t.insert(
                "reward_head.adam.m".into(),
                Blob::f32(vec![p.len()], &h.opt.m),
            );
            t.insert(
                "reward_head.adam.v".into(),
                Blob::f32(vec![p.len()], &h.opt.v),
            );
            for (side, st) in [("input", &h.f.input), ("output", &h.f.output)] {
                t.insert(
                    format!("reward_head.{side}.mean"),
                    Blob::f64(vec![st.dim()], &st.mean),
                );
                t.insert(
                    format!("reward_head.{side}.var"),
                    Blob::f64(vec![st.dim()], &st.var),
                );
            }
            let counts = [h.f.input.count, h.f.output.count];
            t.insert("reward_head.counts".into(), Blob::f64(vec![2], &counts));
        }
        t
    }

    /// The learned reward's training rows as one tensor `[len, S + A + 1]`, when buffers
    /// are saved.
    fn reward_rows_checkpoint(&self) -> Option<(usize, Blob)> {
        let h = self
            .reward_head
            .as_ref()
            .filter(|_| self.cfg.checkpoint_buffer)?;
        let width = h.f.input.dim() + 1;
        let data: Vec<f32> = h.rows.iter().flatten().copied().collect();
        Some((h.len(), Blob::f32(vec![h.len(), width], &data)))
    }

    /// Writes everything but the model's transition buffer (see the module docs):
    /// the SHAC part as [`crate::Shac::save_checkpoint`], the model's weights, normalisation
    /// statistics, optimiser state and RNG. Atomic.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut tensors = self.checkpoint_tensors();
        let buffer = self.buffer_checkpoint().map(|(state, blobs)| {
            tensors.extend(blobs);
            state
        });
        let reward_rows = self.reward_rows_checkpoint().map(|(len, blob)| {
            if len > 0 {
                tensors.insert("reward_head.rows".into(), blob);
            }
            len
        });
        let state = MbMixCheckpointState {
            shac: self.shac.checkpoint_state(),
            config: self.cfg.clone(),
            model_dims: self.trainer.model().dims().to_vec(),
            model_normalise: self.trainer.model().normalizer.enabled,
            model_adam_step: self.trainer.adam().step,
            model_rng: self.model_rng.clone(),
            model_buffer: buffer,
            reward_head_adam_step: self.reward_head.as_ref().map(|h| h.opt.step),
            reward_head_rows: reward_rows,
            member_adam_steps: self.members.iter().map(|m| m.adam().step).collect(),
        };
        write_checkpoint(path, FORMAT, &state_json(&state)?, &tensors)
    }

    /// Loads a checkpoint written by [`MbMix::save_checkpoint`], validated fully before
    /// anything changes ([`crate::Error::BadCheckpoint`] otherwise, `self` untouched). The SHAC
    /// part's structural settings and the model's architecture must match the agent's;
    /// the model's buffer is empty afterwards.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let raw = RawCheckpoint::open(path, FORMAT)?;
        let bad = |reason: String| raw.bad(reason);
        let state: MbMixCheckpointState = raw.state()?;
        self.shac.check_compatible(&raw, &state.shac)?;
        let model = self.trainer.model();
        let (c, mine) = (&state.config.model, &self.cfg.model);
        check_same_fields(
            &raw,
            &[
                ("model.hidden", c.hidden == mine.hidden),
                ("model.activation", c.activation == mine.activation),
                ("model.layer_norm", c.layer_norm == mine.layer_norm),
                ("model.target", c.target == mine.target),
                ("model.normalise", c.normalise == mine.normalise),
            ],
        )?;
        if state.model_dims != model.dims() || state.model_normalise != model.normalizer.enabled {
            return Err(bad(
                "the model's widths or normalisation setting do not fit the agent".into(),
            ));
        }
        let layout = self.trainer.buffer().layout();
        let mut expected = self.checkpoint_tensors();
        if let Some(b) = state.model_buffer.filter(|b| b.len > 0) {
            if b.len > self.trainer.buffer().capacity() {
                return Err(bad(format!(
                    "saved buffer of {} transitions exceeds model.buffer_capacity",
                    b.len
                )));
            }
            for (name, width) in buffer_tensors(layout) {
                expected.insert(
                    name.to_string(),
                    Blob::expected(safetensors::Dtype::F32, vec![b.len, width]),
                );
            }
        }
        if state.member_adam_steps.len() != self.members.len() {
            return Err(bad(format!(
                "the checkpoint's model ensemble has {} members, the agent's {}",
                state.member_adam_steps.len() + 1,
                self.members.len() + 1
            )));
        }
        if self.reward_head.is_some() != state.reward_head_adam_step.is_some() {
            return Err(bad(
                "model.reward differs between the checkpoint and the agent".into(),
            ));
        }
        let reward_width = self.reward_head.as_ref().map(|h| h.f.input.dim() + 1);
        if let (Some(len), Some(width)) = (state.reward_head_rows.filter(|&l| l > 0), reward_width)
        {
            expected.insert(
                "reward_head.rows".into(),
                Blob::expected(safetensors::Dtype::F32, vec![len, width]),
            );
        }
        let loaded = raw.tensors(&expected)?;
        let restore = self.shac.prepare_restore(&raw, state.shac, &loaded)?;
        let (f32s, f64s) = (&loaded.f32s, &loaded.f64s);
        // Fresh model trainers (empty buffers) holding the checkpoint's models.
        let (sd, ad) = (model.state_dim(), model.action_dim());
        let mut trainer = restore_trainer(
            "model",
            self.trainer.config(),
            sd,
            ad,
            state.model_normalise,
            state.model_adam_step,
            f32s,
            f64s,
            &bad,
        )?;
        let mut members = Vec::with_capacity(self.members.len());
        for (k, (m, &step)) in self
            .members
            .iter()
            .zip(&state.member_adam_steps)
            .enumerate()
        {
            members.push(restore_trainer(
                &member_prefix(k),
                m.config(),
                sd,
                ad,
                state.model_normalise,
                step,
                f32s,
                f64s,
                &bad,
            )?);
        }
        if let Some(b) = state.model_buffer {
            let kept = if b.len == 0 {
                sobolev_model::Transitions::from_parts(
                    layout,
                    Array2::zeros((0, layout.state_dim)),
                    Array2::zeros((0, layout.action_dim)),
                    Array2::zeros((0, layout.state_dim)),
                    Array2::zeros((0, layout.width())),
                )
            } else {
                let mut parts = Vec::with_capacity(4);
                for (name, width) in buffer_tensors(layout) {
                    parts.push(
                        Array2::from_shape_vec((b.len, width), f32s[name].clone())
                            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?,
                    );
                }
                let mut parts = parts.into_iter();
                let mut next = || parts.next().unwrap_or_default();
                let (s, a, sn, t) = (next(), next(), next(), next());
                sobolev_model::Transitions::from_parts(layout, s, a, sn, t)
            }
            .map_err(|e| bad(e.to_string()))?;
            trainer
                .restore_buffer(&kept, b.pushed, b.dropped)
                .map_err(|e| bad(e.to_string()))?;
            for m in members.iter_mut() {
                m.restore_buffer(&kept, b.pushed, b.dropped)
                    .map_err(|e| bad(e.to_string()))?;
            }
        }
        let reward_head = match (&self.reward_head, state.reward_head_adam_step) {
            (Some(h), Some(step)) => {
                let mut h = h.clone();
                h.f.net
                    .params_mut()
                    .copy_from_slice(&f32s["reward_head.params"]);
                h.opt.m = f32s["reward_head.adam.m"].clone();
                h.opt.v = f32s["reward_head.adam.v"].clone();
                h.opt.step = step;
                let counts = &f64s["reward_head.counts"];
                for (k, (side, st)) in [("input", &mut h.f.input), ("output", &mut h.f.output)]
                    .into_iter()
                    .enumerate()
                {
                    st.mean = f64s[&format!("reward_head.{side}.mean")].clone();
                    st.var = f64s[&format!("reward_head.{side}.var")].clone();
                    st.count = counts[k];
                }
                h.rows.clear();
                if let (Some(len), Some(width)) = (state.reward_head_rows, reward_width) {
                    if len > 0 {
                        h.rows
                            .extend(f32s["reward_head.rows"].chunks(width).map(|c| c.to_vec()));
                    }
                }
                Some(h)
            }
            _ => None,
        };
        // Commit.
        self.shac.commit_restore(restore);
        self.trainer = trainer;
        self.members = members;
        self.model_rng = state.model_rng;
        self.reward_head = reward_head;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mbmix::tests::toy_mbmix;
    use crate::mbmix::MbMix;
    use crate::mbmix_config::Reading;
    use crate::shac::tests::toy_task;
    use crate::{Error, Shac};

    #[test]
    fn round_trip_restores_networks_model_and_optimisers() {
        let dir = std::env::temp_dir().join(format!("mbmix-mbckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.safetensors");
        let mut a = MbMix::new(toy_mbmix(Reading::A), toy_task(), 17).unwrap();
        for _ in 0..3 {
            a.train_epoch().unwrap();
        }
        a.save_checkpoint(&path).unwrap();

        let mut b = MbMix::new(toy_mbmix(Reading::A), toy_task(), 999).unwrap();
        b.load_checkpoint(&path).unwrap();
        assert_eq!((b.epoch(), b.env_steps()), (a.epoch(), a.env_steps()));
        assert_eq!(b.actor().params_flat(), a.actor().params_flat());
        assert_eq!(b.shac().critic().params(), a.shac().critic().params());
        let (ma, mb) = (a.model_trainer(), b.model_trainer());
        assert_eq!(
            mb.model(),
            ma.model(),
            "weights and normalisation statistics"
        );
        // The optimiser's state (its learning rate is set at every epoch's start).
        assert_eq!(mb.adam().moments(), ma.adam().moments());
        assert_eq!(mb.adam().step, ma.adam().step);
        assert!(mb.buffer().is_empty(), "the buffer is not saved");
        assert_eq!(b.model_rng, a.model_rng);
        assert_eq!(a.evaluate(4, 3).unwrap(), b.evaluate(4, 3).unwrap());
        // The next window is the same (same env, RNGs and actor); training continues.
        let sa = a.train_epoch().unwrap();
        let sb = b.train_epoch().unwrap();
        assert_eq!(sa.actor_loss.to_bits(), sb.actor_loss.to_bits());
        assert_eq!(sa.mean_train_return, sb.mean_train_return);
        assert_eq!(sb.mbmix.unwrap().model_buffer_len, 16 * 16);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn with_the_buffer_a_resumed_agent_continues_bit_exactly() {
        let dir = std::env::temp_dir().join(format!("mbmix-mbckpt-buf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.safetensors");
        let cfg = crate::MbMixConfig {
            checkpoint_buffer: true,
            ..toy_mbmix(Reading::B)
        };
        let mut a = MbMix::new(cfg.clone(), toy_task(), 8).unwrap();
        for _ in 0..3 {
            a.train_epoch().unwrap();
        }
        a.save_checkpoint(&path).unwrap();
        let mut b = MbMix::new(cfg, toy_task(), 1).unwrap();
        b.load_checkpoint(&path).unwrap();
        assert_eq!(b.model_trainer().buffer().len(), 3 * 16 * 16);
        assert_eq!(
            b.model_trainer().buffer().to_transitions(),
            a.model_trainer().buffer().to_transitions()
        );
        let next = |x: &mut MbMix| -> String {
            let s: Vec<_> = (0..2).map(|_| x.train_epoch().unwrap()).collect();
            serde_json::to_string(&s).unwrap()
        };
        assert_eq!(next(&mut a), next(&mut b));
        assert_eq!(
            a.model_trainer().model().params(),
            b.model_trainer().model().params()
        );
        // Without the buffer, the continuation differs (the model trains on less data).
        let lean = toy_mbmix(Reading::B);
        let mut c = MbMix::new(lean.clone(), toy_task(), 8).unwrap();
        for _ in 0..3 {
            c.train_epoch().unwrap();
        }
        c.save_checkpoint(&path).unwrap();
        let mut d = MbMix::new(lean, toy_task(), 1).unwrap();
        d.load_checkpoint(&path).unwrap();
        assert_ne!(next(&mut c), next(&mut d));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_learned_reward_is_checkpointed() {
        let dir = std::env::temp_dir().join(format!("mbmix-mbckpt-rew-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.safetensors");
        let mut cfg = crate::MbMixConfig {
            checkpoint_buffer: true,
            ..toy_mbmix(Reading::A)
        };
        cfg.model.reward = sobolev_model::RewardSource::Learned;
        let mut a = MbMix::new(cfg.clone(), toy_task(), 8).unwrap();
        for _ in 0..3 {
            a.train_epoch().unwrap();
        }
        a.save_checkpoint(&path).unwrap();
        let mut b = MbMix::new(cfg, toy_task(), 1).unwrap();
        b.load_checkpoint(&path).unwrap();
        let (ha, hb) = (
            a.reward_head.as_ref().unwrap(),
            b.reward_head.as_ref().unwrap(),
        );
        assert_eq!(ha.f.net.params(), hb.f.net.params());
        assert_eq!(ha.rows, hb.rows);
        assert_eq!(ha.len(), 3 * 16 * 16);
        let next = |x: &mut MbMix| -> String {
            let s: Vec<_> = (0..2).map(|_| x.train_epoch().unwrap()).collect();
            serde_json::to_string(&s).unwrap()
        };
        assert_eq!(next(&mut a), next(&mut b));
        // an agent with the analytic reward refuses it, and the reverse
        let mut analytic = MbMix::new(toy_mbmix(Reading::A), toy_task(), 1).unwrap();
        let err = analytic.load_checkpoint(&path).unwrap_err().to_string();
        assert!(err.contains("model.reward"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_ensemble_is_checkpointed_member_by_member() {
        let dir = std::env::temp_dir().join(format!("mbmix-mbckpt-ens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.safetensors");
        let mut cfg = crate::MbMixConfig {
            checkpoint_buffer: true,
            ..toy_mbmix(Reading::C)
        };
        cfg.model.ensemble = 3;
        let mut a = MbMix::new(cfg.clone(), toy_task(), 8).unwrap();
        for _ in 0..3 {
            a.train_epoch().unwrap();
        }
        // the members differ (own initialisation and minibatches) but share the data
        assert_eq!(a.members.len(), 2);
        assert_ne!(a.members[0].model().params(), a.trainer.model().params());
        assert_eq!(
            a.members[1].buffer().to_transitions(),
            a.trainer.buffer().to_transitions()
        );
        a.save_checkpoint(&path).unwrap();
        let mut b = MbMix::new(cfg, toy_task(), 1).unwrap();
        b.load_checkpoint(&path).unwrap();
        for (x, y) in a.members.iter().zip(&b.members) {
            assert_eq!(x.model(), y.model());
            assert_eq!(x.buffer().to_transitions(), y.buffer().to_transitions());
        }
        let next = |x: &mut MbMix| -> String {
            let s: Vec<_> = (0..2).map(|_| x.train_epoch().unwrap()).collect();
            serde_json::to_string(&s).unwrap()
        };
        assert_eq!(next(&mut a), next(&mut b));
        assert_eq!(a.actor().params_flat(), b.actor().params_flat());
        // a single model refuses an ensemble's checkpoint
        let mut single = MbMix::new(toy_mbmix(Reading::C), toy_task(), 1).unwrap();
        let err = single.load_checkpoint(&path).unwrap_err().to_string();
        assert!(err.contains("ensemble"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_checkpoints_are_rejected_and_leave_the_agent_unchanged() {
        let dir = std::env::temp_dir().join(format!("mbmix-mbckpt-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.safetensors");
        let mut a = MbMix::new(toy_mbmix(Reading::A), toy_task(), 4).unwrap();
        a.train_epoch().unwrap();
        a.save_checkpoint(&path).unwrap();
        let good = std::fs::read(&path).unwrap();

        let mut b = MbMix::new(toy_mbmix(Reading::A), toy_task(), 5).unwrap();
        b.train_epoch().unwrap();
        b.train_epoch().unwrap();
        let (actor, model) = (b.actor().params_flat(), b.model_trainer().model().clone());

        let mut flipped = good.clone();
        let k = flipped.len() - 10;
        flipped[k] ^= 0x40;
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() / 2].to_vec()),
            ("flipped byte", flipped),
        ];
        // Another model architecture.
        let other = dir.join("other.safetensors");
        let mut cfg = toy_mbmix(Reading::A);
        cfg.model.hidden = vec![16];
        MbMix::new(cfg, toy_task(), 4)
            .unwrap()
            .save_checkpoint(&other)
            .unwrap();
        cases.push(("other model", std::fs::read(&other).unwrap()));
        // A SHAC checkpoint is not an MB-MIX one.
        Shac::new(crate::shac::tests::toy_config(), toy_task(), 4)
            .unwrap()
            .save_checkpoint(&other)
            .unwrap();
        cases.push(("shac checkpoint", std::fs::read(&other).unwrap()));
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            match b.load_checkpoint(&path) {
                Err(Error::BadCheckpoint { reason, .. }) => assert!(!reason.is_empty()),
                other => panic!("{what}: expected BadCheckpoint, got {other:?}"),
            }
            assert_eq!(b.epoch(), 2, "{what}");
            assert_eq!(b.actor().params_flat(), actor, "{what}");
            assert_eq!(b.model_trainer().model(), &model, "{what}");
            assert_eq!(b.model_trainer().buffer().len(), 2 * 16 * 16, "{what}");
        }
        std::fs::write(&path, &good).unwrap();
        b.load_checkpoint(&path).unwrap();
        assert_eq!(b.epoch(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

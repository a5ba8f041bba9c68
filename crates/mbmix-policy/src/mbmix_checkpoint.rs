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
//! The model's transition buffer is **not** saved (it can hold 10⁵ transitions with their
//! Jacobian targets): a resumed run starts with an empty buffer that the next windows
//! refill, so it continues the same actor, critic and model but does not reproduce the
//! metrics of an uninterrupted run bit for bit.
//!
//! [`SobolevModel::named_params`]: sobolev_model::SobolevModel::named_params

use crate::checkpoint::{bad_checkpoint, read_checkpoint, write_checkpoint, Blob, CheckpointState};
use crate::error::Result;
use crate::mbmix::MbMix;
use crate::mbmix_config::MbMixConfig;
use diff_core::SeededRng;
use sobolev_model::{Normalizer, RunningStats, SobolevTrainer};
use std::collections::BTreeMap;
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
}

impl MbMix {
    fn checkpoint_tensors(&self) -> BTreeMap<String, Blob> {
        let mut t = self.shac.checkpoint_tensors();
        for (name, shape, data) in self.trainer.model().named_params() {
            t.insert(format!("model.{name}"), Blob::f32(shape, data));
        }
        let (m, v) = self.trainer.adam().moments();
        t.insert("model_adam.m".into(), Blob::f32(vec![m.len()], m));
        t.insert("model_adam.v".into(), Blob::f32(vec![v.len()], v));
        let norm = &self.trainer.model().normalizer;
        for (side, st) in [
            ("state", &norm.state),
            ("action", &norm.action),
            ("output", &norm.output),
        ] {
            t.insert(
                format!("model_norm.{side}.mean"),
                Blob::f64(vec![st.dim()], &st.mean),
            );
            t.insert(
                format!("model_norm.{side}.var"),
                Blob::f64(vec![st.dim()], &st.var),
            );
        }
        let counts = [norm.state.count, norm.action.count, norm.output.count];
        t.insert("model_norm.counts".into(), Blob::f64(vec![3], &counts));
        t
    }

    /// Writes everything but the model's transition buffer (see the module docs):
    /// the SHAC part as [`crate::Shac::save_checkpoint`], the model's weights, normalisation
    /// statistics, optimiser state and RNG. Atomic.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let state = MbMixCheckpointState {
            shac: self.shac.checkpoint_state(),
            config: self.cfg.clone(),
            model_dims: self.trainer.model().dims().to_vec(),
            model_normalise: self.trainer.model().normalizer.enabled,
            model_adam_step: self.trainer.adam().step,
            model_rng: self.model_rng.clone(),
        };
        let state_json = serde_json::to_string(&state)
            .map_err(|e| std::io::Error::other(format!("serialising checkpoint state: {e}")))?;
        write_checkpoint(path, FORMAT, &state_json, &self.checkpoint_tensors())
    }

    /// Loads a checkpoint written by [`MbMix::save_checkpoint`], validated fully before
    /// anything changes ([`crate::Error::BadCheckpoint`] otherwise, `self` untouched). The SHAC
    /// part's structural settings and the model's architecture must match the agent's;
    /// the model's buffer is empty afterwards.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let bad = bad_checkpoint(path);
        let file = read_checkpoint(path, FORMAT)?;
        let state: MbMixCheckpointState =
            serde_json::from_str(&file.state_json).map_err(|e| bad(format!("state JSON: {e}")))?;
        self.shac.check_compatible(&state.shac).map_err(&bad)?;
        let model = self.trainer.model();
        let (c, mine) = (&state.config.model, &self.cfg.model);
        for (field, same) in [
            ("model.hidden", c.hidden == mine.hidden),
            ("model.activation", c.activation == mine.activation),
            ("model.layer_norm", c.layer_norm == mine.layer_norm),
            ("model.target", c.target == mine.target),
            ("model.normalise", c.normalise == mine.normalise),
        ] {
            if !same {
                return Err(bad(format!(
                    "config field `{field}` differs from the agent's"
                )));
            }
        }
        if state.model_dims != model.dims() || state.model_normalise != model.normalizer.enabled {
            return Err(bad(
                "the model's widths or normalisation setting do not fit the agent".into(),
            ));
        }
        let (f32s, f64s) = file.decode(&self.checkpoint_tensors()).map_err(&bad)?;
        let restore = self
            .shac
            .prepare_restore(state.shac, &f32s, &f64s)
            .map_err(&bad)?;
        // A fresh model trainer (empty buffer) holding the checkpoint's model.
        let mut trainer = SobolevTrainer::new(
            self.trainer.config().clone(),
            model.state_dim(),
            model.action_dim(),
        )
        .map_err(|e| bad(e.to_string()))?;
        let params: Vec<f32> = trainer
            .model()
            .named_params()
            .iter()
            .flat_map(|(name, _, _)| f32s[&format!("model.{name}")].clone())
            .collect();
        trainer.model_mut().params_mut().copy_from_slice(&params);
        let stats = |side: &str, count: f64| RunningStats {
            mean: f64s[&format!("model_norm.{side}.mean")].clone(),
            var: f64s[&format!("model_norm.{side}.var")].clone(),
            count,
        };
        let counts = &f64s["model_norm.counts"];
        if counts.iter().any(|c| *c <= 0.0)
            || f64s
                .iter()
                .any(|(k, v)| k.ends_with(".var") && v.iter().any(|x| *x < 0.0))
        {
            return Err(bad("negative model normalisation statistics".into()));
        }
        trainer.model_mut().normalizer = Normalizer {
            enabled: state.model_normalise,
            state: stats("state", counts[0]),
            action: stats("action", counts[1]),
            output: stats("output", counts[2]),
        };
        trainer
            .adam_mut()
            .set_state(
                f32s["model_adam.m"].clone(),
                f32s["model_adam.v"].clone(),
                state.model_adam_step,
            )
            .map_err(|e| bad(e.to_string()))?;
        // Commit.
        self.shac.commit_restore(restore);
        self.trainer = trainer;
        self.model_rng = state.model_rng;
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

//! SHAC checkpoints: one safetensors file with every tensor of the agent and the rest of its
//! state as JSON in the safetensors metadata, written atomically, validated fully on load.
//!
//! Tensors (`F32` unless noted): `actor.mu.<layer>`, `actor.logstd`, `critic.<layer>`,
//! `target_critic.<layer>` (layer names of [`crate::nn::Mlp::named_params`]),
//! `actor_adam.m/v`, `critic_adam.m/v`, `obs_rms.mean/var` (`F64`, only with `obs_rms`),
//! `env.state` `[N, state_dim]`, `env.episode_return` `[N]`.
//!
//! Metadata: `format` = [`FORMAT`], `state` = [`CheckpointState`] as JSON, `checksum` = FNV-1a
//! (64 bit) over the state JSON and every tensor's name, shape and bytes, so that a flipped
//! byte anywhere is detected.

use crate::common::ReturnMeter;
use crate::config::ShacConfig;
use crate::error::{Error, Result};
use crate::nn::Mlp;
use crate::optim::Adam;
use crate::policy::StochasticActor;
use crate::rms::RunningMeanStd;
use crate::shac::Shac;
use diff_core::{BatchEnv, BatchEnvSnapshot, SeededRng};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// The value of the `format` metadata key.
pub const FORMAT: &str = "mbmix-shac-checkpoint-v1";

/// The non-tensor state of an agent.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CheckpointState {
    /// The configuration the agent was trained with.
    pub config: ShacConfig,
    /// Task name and widths, to refuse a checkpoint of another task.
    pub task: String,
    /// `[state_dim, obs_dim, act_dim]`.
    pub dims: [usize; 3],
    /// Epochs completed.
    pub epoch: usize,
    /// Env-steps taken.
    pub env_steps: u64,
    /// Adam step counts (actor, critic).
    pub adam_steps: [u64; 2],
    /// Sample count of the observation statistics.
    pub obs_rms_count: Option<f64>,
    /// Steps into the current episode, per env.
    pub env_progress: Vec<u32>,
    /// The envs' reset RNG.
    pub env_rng: SeededRng,
    /// Exploration-noise RNG.
    pub noise_rng: SeededRng,
    /// Critic minibatch RNG.
    pub critic_rng: SeededRng,
    /// RNG of [`Shac::act`].
    pub act_rng: SeededRng,
    /// The return meter (last finished training episodes, oldest first).
    pub recent_returns: Vec<f32>,
}

/// FNV-1a, 64 bit.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// An owned tensor on its way to or from the file.
pub(crate) struct Blob {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Blob {
    pub(crate) fn f32(shape: Vec<usize>, data: &[f32]) -> Self {
        Blob {
            dtype: Dtype::F32,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
    /// A tensor's dtype and shape without data: what [`RawCheckpoint::tensors`] checks a
    /// stored tensor against.
    pub(crate) fn expected(dtype: Dtype, shape: Vec<usize>) -> Self {
        Blob {
            dtype,
            shape,
            bytes: Vec::new(),
        }
    }
    pub(crate) fn f64(shape: Vec<usize>, data: &[f64]) -> Self {
        Blob {
            dtype: Dtype::F64,
            shape,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

fn checksum(state_json: &str, tensors: &BTreeMap<String, (Vec<usize>, &[u8])>) -> String {
    let mut h = Fnv::new();
    h.write(state_json.as_bytes());
    for (name, (shape, bytes)) in tensors {
        h.write(name.as_bytes());
        for d in shape {
            h.write(&(*d as u64).to_le_bytes());
        }
        h.write(bytes);
    }
    format!("{:016x}", h.0)
}

/// The tensors of a checkpoint by name.
pub(crate) type Tensors = BTreeMap<String, Blob>;

pub(crate) fn add_mlp(out: &mut Tensors, prefix: &str, net: &Mlp<f32>) {
    for (name, shape, data) in net.named_params() {
        out.insert(format!("{prefix}.{name}"), Blob::f32(shape, &data));
    }
}

/// `<prefix>.logstd` and `<prefix>.mu.<layer>` of an actor.
pub(crate) fn add_actor(out: &mut Tensors, prefix: &str, actor: &StochasticActor) {
    add_mlp(out, &format!("{prefix}.mu"), &actor.mu);
    out.insert(
        format!("{prefix}.logstd"),
        Blob::f32(vec![actor.logstd.len()], &actor.logstd),
    );
}

/// `<name>.m` and `<name>.v` of an Adam optimiser.
pub(crate) fn add_adam(out: &mut Tensors, name: &str, opt: &Adam<f32>) {
    out.insert(format!("{name}.m"), Blob::f32(vec![opt.m.len()], &opt.m));
    out.insert(format!("{name}.v"), Blob::f32(vec![opt.v.len()], &opt.v));
}

/// `obs_rms.mean/var` (F64) when the statistics exist.
pub(crate) fn add_obs_rms(out: &mut Tensors, rms: Option<&RunningMeanStd>) {
    if let Some(r) = rms {
        out.insert("obs_rms.mean".into(), Blob::f64(vec![r.dim()], &r.mean));
        out.insert("obs_rms.var".into(), Blob::f64(vec![r.dim()], &r.var));
    }
}

/// `env.state` `[N, state_dim]` and `env.episode_return` `[N]`.
pub(crate) fn add_env(out: &mut Tensors, env: &BatchEnv) {
    let snap = env.snapshot();
    let n = env.num_envs();
    let sd = env.task().spec().state_dim;
    out.insert("env.state".into(), Blob::f32(vec![n, sd], &snap.state));
    out.insert(
        "env.episode_return".into(),
        Blob::f32(vec![n], &snap.episode_return),
    );
}

/// Writes `tensors` with `state_json` and `format` in the metadata, atomically (temp file
/// in the same directory, fsync, rename).
pub(crate) fn write_checkpoint(
    path: &Path,
    format: &str,
    state_json: &str,
    tensors: &Tensors,
) -> Result<()> {
    let index: BTreeMap<String, (Vec<usize>, &[u8])> = tensors
        .iter()
        .map(|(k, b)| (k.clone(), (b.shape.clone(), b.bytes.as_slice())))
        .collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), format.to_string());
    meta.insert("checksum".to_string(), checksum(state_json, &index));
    meta.insert("state".to_string(), state_json.to_string());
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, b)| {
            let view = safetensors::tensor::TensorView::new(b.dtype, b.shape.clone(), &b.bytes)
                .expect("tensor view sizes are consistent by construction");
            (k.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, &Some(meta))
        .map_err(|e| std::io::Error::other(format!("serialising checkpoint: {e}")))?;

    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{}: not a file path", path.display())))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename durable; not every platform can sync a directory.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(Error::from)
}

/// Serialises an agent's non-tensor state for [`write_checkpoint`].
pub(crate) fn state_json<S: serde::Serialize>(state: &S) -> Result<String> {
    serde_json::to_string(state)
        .map_err(|e| std::io::Error::other(format!("serialising checkpoint state: {e}")).into())
}

/// A checkpoint file read into memory whose format and checksum have been verified.
pub(crate) struct RawCheckpoint {
    path: String,
    bytes: Vec<u8>,
    /// The non-tensor state as JSON.
    pub state_json: String,
}

/// The numbers of every expected tensor of a [`RawCheckpoint`].
pub(crate) struct LoadedTensors {
    pub f32s: HashMap<String, Vec<f32>>,
    pub f64s: HashMap<String, Vec<f64>>,
}

impl LoadedTensors {
    /// The parameters of `net` stored under `prefix` (layout of [`Mlp::params_flat`]).
    pub fn mlp(&self, prefix: &str, net: &Mlp<f32>) -> Vec<f32> {
        net.named_params()
            .iter()
            .flat_map(|(name, _, _)| self.f32s[&format!("{prefix}.{name}")].clone())
            .collect()
    }
    /// A copy of `like` with the parameters stored by [`add_actor`] under `prefix`.
    pub fn actor(&self, prefix: &str, like: &StochasticActor) -> StochasticActor {
        let mut actor = like.clone();
        let mut params = self.mlp(&format!("{prefix}.mu"), &actor.mu);
        params.extend_from_slice(&self.f32s[&format!("{prefix}.logstd")]);
        actor.set_params_flat(&params);
        actor
    }
    /// A copy of `like` with the moments stored by [`add_adam`] under `name`.
    pub fn adam(&self, name: &str, like: &Adam<f32>, step: u64) -> Adam<f32> {
        Adam {
            m: self.f32s[&format!("{name}.m")].clone(),
            v: self.f32s[&format!("{name}.v")].clone(),
            step,
            ..like.clone()
        }
    }
    /// The statistics stored by [`add_obs_rms`] (None without a count).
    pub fn obs_rms(&self, count: Option<f64>) -> Option<RunningMeanStd> {
        count.map(|count| RunningMeanStd {
            mean: self.f64s["obs_rms.mean"].clone(),
            var: self.f64s["obs_rms.var"].clone(),
            count,
        })
    }
    /// The env snapshot stored by [`add_env`] with its counters and RNG.
    pub fn env(&self, progress: Vec<u32>, rng: SeededRng) -> BatchEnvSnapshot {
        BatchEnvSnapshot {
            state: self.f32s["env.state"].clone(),
            progress,
            episode_return: self.f32s["env.episode_return"].clone(),
            rng,
        }
    }
}

impl RawCheckpoint {
    /// Reads `path` and checks its `format` and checksum.
    pub fn open(path: &Path, format: &str) -> Result<RawCheckpoint> {
        let display = path.display().to_string();
        let bad = |reason: String| Error::BadCheckpoint {
            path: display.clone(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e:?}")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("unreadable header: {e:?}")))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or_else(|| bad("no metadata".into()))?;
        let get = |k: &str| {
            meta.get(k)
                .ok_or_else(|| bad(format!("metadata key `{k}` missing")))
        };
        if get("format")? != format {
            return Err(bad(format!("format is not {format}")));
        }
        let state_json = get("state")?.clone();
        let index: BTreeMap<String, (Vec<usize>, &[u8])> = st
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, (v.shape().to_vec(), v.data())))
            .collect();
        if *get("checksum")? != checksum(&state_json, &index) {
            return Err(bad("checksum mismatch (corrupt file)".into()));
        }
        drop(index);
        Ok(RawCheckpoint {
            path: display.clone(),
            bytes,
            state_json,
        })
    }

    /// An [`Error::BadCheckpoint`] about this file.
    pub fn bad(&self, reason: impl Into<String>) -> Error {
        Error::BadCheckpoint {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The non-tensor state.
    pub fn state<S: serde::de::DeserializeOwned>(&self) -> Result<S> {
        serde_json::from_str(&self.state_json).map_err(|e| self.bad(format!("state JSON: {e}")))
    }

    /// Exactly the tensors of `expected` (names, dtypes, shapes), all finite, as numbers.
    pub fn tensors(&self, expected: &Tensors) -> Result<LoadedTensors> {
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| self.bad(format!("not a safetensors file: {e:?}")))?;
        if st.len() != expected.len() {
            return Err(self.bad(format!("{} tensors, expected {}", st.len(), expected.len())));
        }
        let mut out = LoadedTensors {
            f32s: HashMap::new(),
            f64s: HashMap::new(),
        };
        for (name, want) in expected {
            let view = st
                .tensor(name)
                .map_err(|_| self.bad(format!("tensor `{name}` missing")))?;
            if view.dtype() != want.dtype || view.shape() != want.shape.as_slice() {
                return Err(self.bad(format!(
                    "tensor `{name}`: {:?} {:?}, expected {:?} {:?}",
                    view.dtype(),
                    view.shape(),
                    want.dtype,
                    want.shape
                )));
            }
            let non_finite = || self.bad(format!("tensor `{name}` has non-finite values"));
            match want.dtype {
                Dtype::F32 => {
                    let v: Vec<f32> = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(non_finite());
                    }
                    out.f32s.insert(name.clone(), v);
                }
                _ => {
                    let v: Vec<f64> = view
                        .data()
                        .chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .collect();
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(non_finite());
                    }
                    out.f64s.insert(name.clone(), v);
                }
            }
        }
        Ok(out)
    }
}

impl Shac {
    pub(crate) fn checkpoint_tensors(&self) -> Tensors {
        let mut t = BTreeMap::new();
        add_actor(&mut t, "actor", &self.actor);
        add_mlp(&mut t, "critic", &self.critic);
        add_mlp(&mut t, "target_critic", &self.target_critic);
        add_adam(&mut t, "actor_adam", &self.actor_opt);
        add_adam(&mut t, "critic_adam", &self.critic_opt);
        add_obs_rms(&mut t, self.obs_rms.as_ref());
        add_env(&mut t, &self.env);
        t
    }

    pub(crate) fn checkpoint_state(&self) -> CheckpointState {
        let spec = self.task.spec();
        let snap = self.env.snapshot();
        CheckpointState {
            config: self.cfg.clone(),
            task: spec.name.clone(),
            dims: [spec.state_dim, spec.obs_dim, spec.act_dim],
            epoch: self.epoch,
            env_steps: self.env_steps,
            adam_steps: [self.actor_opt.step, self.critic_opt.step],
            obs_rms_count: self.obs_rms.as_ref().map(|r| r.count),
            env_progress: snap.progress,
            env_rng: snap.rng,
            noise_rng: self.noise_rng.clone(),
            critic_rng: self.critic_rng.clone(),
            act_rng: self
                .act_rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            recent_returns: self.recent_returns.returns(),
        }
    }

    /// Everything needed to resume bit-exactly: networks, target critic, Adam moments and
    /// step counts, obs RMS, the env batch, all RNG states, epoch, env_steps and the return
    /// meter. A safetensors file with the non-tensor state as JSON in its metadata, written
    /// atomically (temp file in the same directory, fsync, rename).
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let state = state_json(&self.checkpoint_state())?;
        write_checkpoint(path, FORMAT, &state, &self.checkpoint_tensors())
    }

    /// Loads a checkpoint written by [`Shac::save_checkpoint`]. The file is validated fully
    /// (format, checksum, task, network shapes, every tensor's dtype and shape, finiteness)
    /// before anything changes: any problem gives [`Error::BadCheckpoint`] and leaves `self`
    /// untouched.
    ///
    /// The structural settings (num_envs, horizon, network widths, obs_rms) must match the
    /// agent's; the other settings (learning rates, max_epochs, …) are the agent's own, so a
    /// run can be resumed with, for example, more epochs.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let raw = RawCheckpoint::open(path, FORMAT)?;
        let state: CheckpointState = raw.state()?;
        self.check_compatible(&raw, &state)?;
        // Every expected tensor, with its shape, as numbers.
        let loaded = raw.tensors(&self.checkpoint_tensors())?;
        let restore = self.prepare_restore(&raw, state, &loaded)?;
        self.commit_restore(restore);
        Ok(())
    }

    /// Whether a checkpoint's state fits this agent: the task and the structural settings
    /// (num_envs, horizon, network widths, obs_rms).
    pub(crate) fn check_compatible(
        &self,
        raw: &RawCheckpoint,
        state: &CheckpointState,
    ) -> Result<()> {
        check_task(raw, &state.task, state.dims, self.task.as_ref())?;
        let (c, mine) = (&state.config, &self.cfg);
        check_same_fields(
            raw,
            &[
                ("num_envs", c.num_envs == mine.num_envs),
                ("horizon", c.horizon == mine.horizon),
                ("actor_units", c.actor_units == mine.actor_units),
                ("critic_units", c.critic_units == mine.critic_units),
                ("obs_rms", c.obs_rms == mine.obs_rms),
            ],
        )
    }

    /// Everything a checked checkpoint restores (its tensors `loaded` by
    /// [`RawCheckpoint::tensors`] against [`Shac::checkpoint_tensors`]), built without
    /// touching `self`.
    pub(crate) fn prepare_restore(
        &self,
        raw: &RawCheckpoint,
        state: CheckpointState,
        loaded: &LoadedTensors,
    ) -> Result<ShacRestore> {
        check_env_and_rms(
            raw,
            state.env_progress.len(),
            self.cfg.num_envs,
            state.obs_rms_count.is_some(),
            self.obs_rms.is_some(),
        )?;
        let recent_returns = ReturnMeter::from_returns(state.recent_returns.clone())
            .ok_or_else(|| raw.bad("return meter too long"))?;
        let actor = loaded.actor("actor", &self.actor);
        let mut critic = self.critic.clone();
        critic.set_params_flat(&loaded.mlp("critic", &critic));
        let mut target_critic = self.target_critic.clone();
        target_critic.set_params_flat(&loaded.mlp("target_critic", &target_critic));
        let actor_opt = loaded.adam("actor_adam", &self.actor_opt, state.adam_steps[0]);
        let critic_opt = loaded.adam("critic_adam", &self.critic_opt, state.adam_steps[1]);
        let obs_rms = loaded.obs_rms(state.obs_rms_count);
        let snap = loaded.env(state.env_progress.clone(), state.env_rng.clone());
        // A batch like the agent's (same task, size and reset noise) holding the snapshot,
        // so that a caller can still refuse the checkpoint after this.
        let mut env = BatchEnv::new(
            self.task.clone(),
            self.cfg.num_envs,
            0,
            self.cfg.stochastic_init,
        )
        .map_err(|e| raw.bad(e.to_string()))?;
        env.restore(&snap).map_err(|e| raw.bad(e.to_string()))?;
        Ok(ShacRestore {
            env,
            actor,
            critic,
            target_critic,
            actor_opt,
            critic_opt,
            obs_rms,
            recent_returns,
            state,
        })
    }

    /// Installs a prepared restore (cannot fail).
    pub(crate) fn commit_restore(&mut self, r: ShacRestore) {
        self.env = r.env;
        self.actor = r.actor;
        self.critic = r.critic;
        self.target_critic = r.target_critic;
        self.actor_opt = r.actor_opt;
        self.critic_opt = r.critic_opt;
        self.obs_rms = r.obs_rms;
        self.noise_rng = r.state.noise_rng;
        self.critic_rng = r.state.critic_rng;
        *self.act_rng.lock().unwrap_or_else(|p| p.into_inner()) = r.state.act_rng;
        self.epoch = r.state.epoch;
        self.env_steps = r.state.env_steps;
        self.recent_returns = r.recent_returns;
    }
}

/// What [`Shac::prepare_restore`] builds.
pub(crate) struct ShacRestore {
    env: BatchEnv,
    actor: StochasticActor,
    critic: Mlp<f32>,
    target_critic: Mlp<f32>,
    actor_opt: Adam<f32>,
    critic_opt: Adam<f32>,
    obs_rms: Option<RunningMeanStd>,
    recent_returns: ReturnMeter,
    state: CheckpointState,
}

/// Refuses a checkpoint of another task (name or `[state_dim, obs_dim, act_dim]`).
pub(crate) fn check_task(
    raw: &RawCheckpoint,
    name: &str,
    dims: [usize; 3],
    task: &dyn diff_core::Task,
) -> Result<()> {
    let spec = task.spec();
    let mine = [spec.state_dim, spec.obs_dim, spec.act_dim];
    if name != spec.name || dims != mine {
        return Err(raw.bad(format!(
            "task {name} {dims:?} does not match {} {mine:?}",
            spec.name
        )));
    }
    Ok(())
}

/// Refuses a checkpoint whose structural config fields differ from the agent's.
pub(crate) fn check_same_fields(raw: &RawCheckpoint, fields: &[(&str, bool)]) -> Result<()> {
    match fields.iter().find(|(_, same)| !same) {
        Some((field, _)) => {
            Err(raw.bad(format!("config field `{field}` differs from the agent's")))
        }
        None => Ok(()),
    }
}

/// Checks the env counters' length and the presence of the observation statistics.
pub(crate) fn check_env_and_rms(
    raw: &RawCheckpoint,
    progress_len: usize,
    num_envs: usize,
    has_count: bool,
    has_rms: bool,
) -> Result<()> {
    if progress_len != num_envs {
        return Err(raw.bad(format!(
            "{progress_len} env progress counters, expected {num_envs}"
        )));
    }
    if has_count != has_rms {
        return Err(raw.bad("obs_rms count does not match obs_rms setting"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::shac::tests::{toy_config, toy_task};
    use crate::shac::{EpochStats, Shac};
    use crate::Error;

    fn bits(s: &[EpochStats]) -> String {
        serde_json::to_string(s).unwrap()
    }

    #[test]
    fn round_trip_resumes_bit_exactly() {
        let dir = std::env::temp_dir().join(format!("mbmix-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.safetensors");
        let mut a = Shac::new(toy_config(), toy_task(), 17).unwrap();
        for _ in 0..2 {
            a.train_epoch().unwrap();
        }
        a.save_checkpoint(&path).unwrap();
        let cont: Vec<EpochStats> = (0..2).map(|_| a.train_epoch().unwrap()).collect();

        let mut b = Shac::new(toy_config(), toy_task(), 999).unwrap();
        b.load_checkpoint(&path).unwrap();
        assert_eq!(b.epoch(), 2);
        assert_eq!(b.env_steps(), 2 * 16 * 16);
        let resumed: Vec<EpochStats> = (0..2).map(|_| b.train_epoch().unwrap()).collect();
        assert_eq!(bits(&cont), bits(&resumed));
        let pa = a.actor().params_flat();
        let pb = b.actor().params_flat();
        assert!(pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(a.evaluate(4, 3).unwrap(), b.evaluate(4, 3).unwrap());
        // No temp file is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_checkpoints_are_rejected_and_leave_the_agent_unchanged() {
        let dir = std::env::temp_dir().join(format!("mbmix-ckpt-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.safetensors");
        let mut a = Shac::new(toy_config(), toy_task(), 4).unwrap();
        a.train_epoch().unwrap();
        a.save_checkpoint(&path).unwrap();
        let good = std::fs::read(&path).unwrap();

        let mut b = Shac::new(toy_config(), toy_task(), 5).unwrap();
        b.train_epoch().unwrap();
        b.train_epoch().unwrap();
        let before = b.actor().params_flat();
        let eval_before = b.evaluate(4, 1).unwrap();

        let mut flipped = good.clone();
        let k = flipped.len() - 10; // inside the tensor data
        flipped[k] ^= 0x40;
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated", good[..good.len() / 2].to_vec()),
            ("flipped byte", flipped),
            ("empty", Vec::new()),
            ("garbage", b"not a checkpoint at all".to_vec()),
        ];
        // A checkpoint of another configuration (different critic widths).
        let other_path = dir.join("other.safetensors");
        let other_cfg = crate::ShacConfig {
            critic_units: vec![16],
            ..toy_config()
        };
        Shac::new(other_cfg, toy_task(), 4)
            .unwrap()
            .save_checkpoint(&other_path)
            .unwrap();
        cases.push(("mismatched config", std::fs::read(&other_path).unwrap()));
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            match b.load_checkpoint(&path) {
                Err(Error::BadCheckpoint { path: p, reason }) => {
                    assert!(p.ends_with("agent.safetensors"));
                    assert!(!reason.is_empty(), "{what}");
                }
                other => panic!("{what}: expected BadCheckpoint, got {other:?}"),
            }
            assert_eq!(b.epoch(), 2, "{what}");
            assert_eq!(b.env_steps(), 2 * 16 * 16, "{what}");
            assert_eq!(b.actor().params_flat(), before, "{what}");
            assert_eq!(b.evaluate(4, 1).unwrap(), eval_before, "{what}");
        }
        assert!(matches!(
            b.load_checkpoint(&dir.join("missing.safetensors")),
            Err(Error::BadCheckpoint { .. })
        ));
        // The good file still loads.
        std::fs::write(&path, &good).unwrap();
        b.load_checkpoint(&path).unwrap();
        assert_eq!(b.epoch(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

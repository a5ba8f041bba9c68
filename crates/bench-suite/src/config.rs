//! The run configuration: what `mbmix train` runs, resolved from the task's preset, an
//! optional TOML file and the command line, and written to the run directory as
//! `config.toml`.
//!
//! Resolution order (later wins): the registry preset for the task and algorithm, the
//! `--config` file, the command-line flags. A key in the file that the configuration
//! does not define, or a value of the wrong type, is an error that names the file and the
//! field's dotted path (e.g. `shac.num_envs`).

use crate::error::{Error, Result};
use crate::registry::{self, Algo};
use mbmix_policy::{BpttConfig, MbMixConfig, PpoConfig, ShacConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default of [`RunConfig::eval_every`].
pub const DEFAULT_EVAL_EVERY: usize = 10;
/// Default of [`RunConfig::eval_episodes`].
pub const DEFAULT_EVAL_EPISODES: usize = 16;
/// Default of [`RunConfig::checkpoint_every`].
pub const DEFAULT_CHECKPOINT_EVERY: usize = 50;

/// Everything that defines a training run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Task registry name (`mbmix list`).
    pub task: String,
    /// Algorithm registry name (`mbmix list`).
    pub algo: String,
    /// Seed of every random stream of the run (resets, exploration, minibatches,
    /// evaluation). Default 0.
    pub seed: u64,
    /// Evaluate the deterministic policy every this many epochs (and after the last
    /// epoch). Default 10.
    pub eval_every: usize,
    /// Episodes per evaluation. Default 16.
    pub eval_episodes: usize,
    /// Write a checkpoint every this many epochs (and after the last epoch, and on
    /// Ctrl-C). Default 50.
    pub checkpoint_every: usize,
    /// SHAC hyperparameters; present exactly when `algo = "shac"`. Default: the task's
    /// preset (algorithms.md §1.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shac: Option<ShacConfig>,
    /// MB-MIX hyperparameters (`[mbmix]`, with the subsections `[mbmix.shac]`,
    /// `[mbmix.mix]`, `[mbmix.rollout]`, `[mbmix.model]`, `[mbmix.model.sobolev]`,
    /// `[mbmix.critic]`, `[mbmix.diagnostics]`); present exactly when `algo` is `mbmix` or
    /// one of its ablations. Default: the preset of the algorithm name for the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbmix: Option<MbMixConfig>,
    /// BPTT hyperparameters; present exactly when `algo = "bptt"`. Default: the task's
    /// preset ([`registry::bptt_preset`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bptt: Option<BpttConfig>,
    /// PPO hyperparameters; present exactly when `algo = "ppo"`. Default: the task's preset
    /// ([`registry::ppo_preset`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppo: Option<PpoConfig>,
    /// A linear change of the policy's action coordinates in front of the task
    /// (`[action_map]`, [`diff_core::LinearAction`]); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_map: Option<ActionMapConfig>,
}

/// `[action_map]`: the task receives `a = M·a_policy` (then clips it to [−1, 1] as always).
/// Give exactly one of the two keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionMapConfig {
    /// For the 6-D pick-and-place actions `(pick xyz, place xyz)`: the policy writes the
    /// place relative to the pick, `place = pick + relative_place·offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_place: Option<f64>,
    /// The matrix `M`, one row per task action entry and one column per policy action
    /// entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Vec<Vec<f64>>>,
}

impl ActionMapConfig {
    /// Wraps `task` in the map.
    pub fn wrap(
        &self,
        task: std::sync::Arc<dyn diff_core::Task>,
    ) -> Result<std::sync::Arc<dyn diff_core::Task>> {
        let wrapped = match (self.relative_place, &self.matrix) {
            (Some(scale), None) => diff_core::LinearAction::relative_place(task, scale as f32)?,
            (None, Some(rows)) => {
                let cols = rows.first().map_or(0, Vec::len);
                if rows.iter().any(|r| r.len() != cols) {
                    return Err(Error::Usage(
                        "[action_map] matrix: every row needs the same number of entries".into(),
                    ));
                }
                let m =
                    ndarray::Array2::from_shape_fn((rows.len(), cols), |(i, j)| rows[i][j] as f32);
                diff_core::LinearAction::new(task, m)?
            }
            _ => {
                return Err(Error::Usage(
                    "[action_map] needs exactly one of `relative_place` and `matrix`".into(),
                ))
            }
        };
        Ok(std::sync::Arc::new(wrapped))
    }
}

/// Command-line values that override the config file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--task`.
    pub task: Option<String>,
    /// `--algo`.
    pub algo: Option<String>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--epochs`: the algorithm's total epoch count (its `max_epochs`, which also sets
    /// the learning-rate schedule).
    pub epochs: Option<usize>,
}

impl RunConfig {
    /// The registry preset for `task` and `algo`.
    pub fn preset(task: &str, algo: &str, seed: u64) -> Result<RunConfig> {
        let task_entry = registry::task_entry(task)?;
        let algo_kind = registry::algorithm(algo)?;
        let shac = (algo_kind == Algo::Shac).then(|| (task_entry.shac_preset)());
        let mbmix = match algo_kind {
            Algo::MbMix(preset) => Some(registry::mbmix_preset(task_entry, preset)),
            _ => None,
        };
        let bptt = (algo_kind == Algo::Bptt).then(|| registry::bptt_preset(task));
        let ppo = (algo_kind == Algo::Ppo).then(|| registry::ppo_preset(task));
        Ok(RunConfig {
            task: task.to_string(),
            algo: algo.to_string(),
            seed,
            eval_every: DEFAULT_EVAL_EVERY,
            eval_episodes: DEFAULT_EVAL_EPISODES,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            shac,
            mbmix,
            bptt,
            ppo,
            action_map: None,
        })
    }

    /// Resolves a configuration from an optional TOML file and the command line, and
    /// validates it.
    pub fn resolve(file: Option<&Path>, overrides: &Overrides) -> Result<RunConfig> {
        let source = ConfigSource::new(file);
        let user = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
                toml::from_str::<toml::Table>(&text).map_err(|e| source.error(e.to_string()))?
            }
            None => toml::Table::new(),
        };
        let name = |key: &str, flag: &Option<String>| -> Result<String> {
            if let Some(v) = flag {
                return Ok(v.clone());
            }
            match user.get(key) {
                Some(toml::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(Error::FieldType {
                    file: source.path(),
                    field: key.to_string(),
                    reason: format!("expected a string, found {}", other.type_str()),
                }),
                None => Err(Error::Usage(format!(
                    "no {key} given: pass --{key} or set `{key}` in the config file"
                ))),
            }
        };
        let task = name("task", &overrides.task)?;
        let algo = name("algo", &overrides.algo)?;
        let preset = RunConfig::preset(&task, &algo, 0)?;
        let mut merged = toml::Table::try_from(&preset).map_err(|e| Error::Serialise {
            path: source.path(),
            reason: e.to_string(),
        })?;
        merge(&mut merged, user);
        // The flags name the task and algorithm whose preset was merged under the file.
        merged.insert("task".into(), toml::Value::String(task));
        merged.insert("algo".into(), toml::Value::String(algo));
        let mut cfg = source.deserialize(merged)?;
        if let Some(seed) = overrides.seed {
            cfg.seed = seed;
        }
        if let Some(epochs) = overrides.epochs {
            cfg.set_max_epochs(epochs);
        }
        cfg.validate().map_err(|e| source.error(e.to_string()))?;
        Ok(cfg)
    }

    /// Reads a resolved configuration back (a run's `config.toml`), strictly: the file
    /// must be complete.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let source = ConfigSource::new(Some(path));
        let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
        let table =
            toml::from_str::<toml::Table>(&text).map_err(|e| source.error(e.to_string()))?;
        let cfg = source.deserialize(table)?;
        cfg.validate().map_err(|e| source.error(e.to_string()))?;
        Ok(cfg)
    }

    /// The resolved configuration as TOML (what `config.toml` holds).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Serialise {
            path: PathBuf::from("config.toml"),
            reason: e.to_string(),
        })
    }

    /// The algorithm, checked against the registry.
    pub fn algorithm(&self) -> Result<Algo> {
        Ok(registry::algorithm(&self.algo)?)
    }

    /// The algorithm's total number of epochs.
    pub fn max_epochs(&self) -> usize {
        self.shac
            .as_ref()
            .map(|c| c.max_epochs)
            .or(self.mbmix.as_ref().map(|m| m.shac.max_epochs))
            .or(self.bptt.as_ref().map(|c| c.max_epochs))
            .or(self.ppo.as_ref().map(|c| c.max_epochs))
            .unwrap_or(0)
    }

    /// Sets the algorithm's total number of epochs.
    pub fn set_max_epochs(&mut self, epochs: usize) {
        if let Some(c) = self.shac.as_mut() {
            c.max_epochs = epochs;
        }
        if let Some(m) = self.mbmix.as_mut() {
            m.shac.max_epochs = epochs;
        }
        if let Some(c) = self.bptt.as_mut() {
            c.max_epochs = epochs;
        }
        if let Some(c) = self.ppo.as_mut() {
            c.max_epochs = epochs;
        }
    }

    /// Checks names, counts and the algorithm's own section.
    pub fn validate(&self) -> Result<()> {
        registry::task_entry(&self.task)?;
        let algo = self.algorithm()?;
        for (field, value) in [
            ("eval_every", self.eval_every),
            ("eval_episodes", self.eval_episodes),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            if value == 0 {
                return Err(Error::Usage(format!("`{field}` must be at least 1")));
            }
        }
        // A section of another algorithm is a mistake (it would be silently ignored).
        for (section, present, applies) in [
            ("shac", self.shac.is_some(), algo == Algo::Shac),
            (
                "mbmix",
                self.mbmix.is_some(),
                matches!(algo, Algo::MbMix(_)),
            ),
            ("bptt", self.bptt.is_some(), algo == Algo::Bptt),
            ("ppo", self.ppo.is_some(), algo == Algo::Ppo),
        ] {
            if present && !applies {
                return Err(Error::Usage(format!(
                    "a [{section}] section does not apply to algo `{}`",
                    self.algo
                )));
            }
        }
        if let Some(map) = &self.action_map {
            // builds the task once to check the map's size against it
            map.wrap(registry::make_task(&self.task)?)?;
        }
        match algo {
            Algo::Shac => {
                let shac = self.shac.as_ref().ok_or_else(|| {
                    Error::Usage("algo `shac` needs a [shac] section".to_string())
                })?;
                shac.validate()?;
            }
            Algo::MbMix(_) => {
                let mbmix = self.mbmix.as_ref().ok_or_else(|| {
                    Error::Usage(format!("algo `{}` needs an [mbmix] section", self.algo))
                })?;
                mbmix.validate()?;
            }
            Algo::Bptt => {
                let bptt = self.bptt.as_ref().ok_or_else(|| {
                    Error::Usage("algo `bptt` needs a [bptt] section".to_string())
                })?;
                bptt.validate()?;
            }
            Algo::Ppo => {
                let ppo = self
                    .ppo
                    .as_ref()
                    .ok_or_else(|| Error::Usage("algo `ppo` needs a [ppo] section".to_string()))?;
                ppo.validate()?;
            }
        }
        Ok(())
    }
}

/// Where a configuration came from, for error messages.
struct ConfigSource<'a>(Option<&'a Path>);

impl<'a> ConfigSource<'a> {
    fn new(path: Option<&'a Path>) -> Self {
        ConfigSource(path)
    }

    fn path(&self) -> PathBuf {
        self.0
            .map_or_else(|| PathBuf::from("<preset>"), Path::to_path_buf)
    }

    fn error(&self, reason: String) -> Error {
        Error::Config {
            file: self.path(),
            reason: reason.trim_end().to_string(),
        }
    }

    /// Deserialises a merged table. Every error comes from a value of the file (the
    /// preset deserialises by construction), and toml reports it with the dotted path of
    /// the offending key as a trailing "in `path`" line, which we lift into the message.
    fn deserialize(&self, table: toml::Table) -> Result<RunConfig> {
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                let msg = e.to_string();
                let msg = msg.trim_end();
                let (reason, within) = match msg.rsplit_once("\nin `") {
                    Some((reason, path)) => (reason.trim(), path.trim_end_matches('`').to_string()),
                    None => (msg, String::new()),
                };
                let join = |name: &str| {
                    if within.is_empty() {
                        name.to_string()
                    } else {
                        format!("{within}.{name}")
                    }
                };
                if let Some(rest) = reason.strip_prefix("unknown field `") {
                    let (name, known) = rest.split_once('`').unwrap_or((rest, ""));
                    let known = known
                        .trim_start_matches(", expected one of ")
                        .trim_start_matches(", expected ")
                        .to_string();
                    Error::UnknownField {
                        file: self.path(),
                        field: join(name),
                        known,
                    }
                } else if !within.is_empty() {
                    Error::FieldType {
                        file: self.path(),
                        field: within.clone(),
                        reason: reason.to_string(),
                    }
                } else if let Some(rest) = reason.strip_prefix("missing field `") {
                    let name = rest.split('`').next().unwrap_or(rest);
                    Error::FieldType {
                        file: self.path(),
                        field: name.to_string(),
                        reason: "missing".to_string(),
                    }
                } else {
                    self.error(reason.to_string())
                }
            })
    }
}

/// Writes the keys of `user` over `base`, recursing into tables present in both.
pub(crate) fn merge(base: &mut toml::Table, user: toml::Table) {
    for (key, value) in user {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => merge(b, u),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("my-config.toml");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        (dir, path)
    }

    fn cartpole_shac() -> Overrides {
        Overrides {
            task: Some("cartpole-swingup".into()),
            algo: Some("shac".into()),
            ..Overrides::default()
        }
    }

    #[test]
    fn file_overrides_preset_and_flags_override_file() {
        let (_dir, path) = write_config("seed = 7\neval_every = 3\n[shac]\nnum_envs = 8\n");
        let mut ov = cartpole_shac();
        let cfg = RunConfig::resolve(Some(&path), &ov).expect("valid config");
        assert_eq!(cfg.seed, 7);
        assert_eq!(cfg.eval_every, 3);
        let shac = cfg.shac.as_ref().expect("shac section");
        assert_eq!(shac.num_envs, 8);
        // Untouched fields keep the preset.
        assert_eq!(shac.horizon, ShacConfig::default().horizon);
        ov.seed = Some(11);
        ov.epochs = Some(4);
        let cfg = RunConfig::resolve(Some(&path), &ov).expect("valid config");
        assert_eq!(cfg.seed, 11);
        assert_eq!(cfg.max_epochs(), 4);
    }

    #[test]
    fn action_map_wraps_the_task_and_bad_maps_are_refused() {
        let apg = |text: &str| {
            let (_dir, path) = write_config(text);
            let ov = Overrides {
                task: Some("fold-cloth1".into()),
                algo: Some("bptt".into()),
                ..Overrides::default()
            };
            RunConfig::resolve(Some(&path), &ov)
        };
        let cfg = apg("[action_map]\nrelative_place = 2.0\n").expect("valid map");
        assert_eq!(cfg.action_map.as_ref().unwrap().relative_place, Some(2.0));
        let task = registry::make_run_task(&cfg, diff_core::Device::Cpu).expect("wrapped");
        assert_eq!(task.spec().act_dim, 6);
        // the resolved config keeps the section
        let back: RunConfig = toml::from_str(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(back.action_map, cfg.action_map);
        // a 2-column matrix: the policy acts in 2 coordinates
        let cfg = apg("[action_map]\nmatrix = [[1,0],[0,0],[0,1],[1,0],[0,0],[0,1]]\n")
            .expect("valid matrix");
        let task = registry::make_run_task(&cfg, diff_core::Device::Cpu).expect("wrapped");
        assert_eq!(task.spec().act_dim, 2);
        for (text, want) in [
            ("[action_map]\n", "exactly one"),
            (
                "[action_map]\nrelative_place = 1.0\nmatrix = [[1.0]]\n",
                "exactly one",
            ),
            ("[action_map]\nrelative_place = -1.0\n", "positive"),
            ("[action_map]\nmatrix = [[1.0, 0.0]]\n", "expected 6, got 1"),
            (
                "[action_map]\nmatrix = [[1.0], [1.0, 2.0]]\n",
                "same number",
            ),
        ] {
            let err = apg(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn task_and_algo_may_come_from_the_file() {
        let (_dir, path) = write_config("task = \"cartpole-swingup\"\nalgo = \"shac\"\n");
        let cfg = RunConfig::resolve(Some(&path), &Overrides::default()).expect("valid");
        assert_eq!(cfg.task, "cartpole-swingup");
        let err = RunConfig::resolve(None, &Overrides::default()).expect_err("no task");
        assert!(err.to_string().contains("--task"), "{err}");
    }

    #[test]
    fn unknown_field_names_field_and_file() {
        let (_dir, path) = write_config("[shac]\nnum_envz = 8\n");
        let err = RunConfig::resolve(Some(&path), &cartpole_shac()).expect_err("unknown field");
        let msg = err.to_string();
        assert!(matches!(err, Error::UnknownField { .. }), "{msg}");
        assert!(msg.contains("`shac.num_envz`"), "{msg}");
        assert!(msg.contains("my-config.toml"), "{msg}");
        assert!(msg.contains("num_envs"), "known fields listed: {msg}");

        let (_dir, path) = write_config("eval_evry = 8\n");
        let msg = RunConfig::resolve(Some(&path), &cartpole_shac())
            .expect_err("unknown top-level field")
            .to_string();
        assert!(
            msg.contains("`eval_evry`") && msg.contains("my-config.toml"),
            "{msg}"
        );
    }

    #[test]
    fn mbmix_critic_and_per_step_source_are_parsed_and_checked() {
        let mbmix = Overrides {
            algo: Some("mbmix".into()),
            ..cartpole_shac()
        };
        let (_dir, path) = write_config("[mbmix.critic]\ntrain_on = \"sim_and_model\"\n");
        let cfg = RunConfig::resolve(Some(&path), &mbmix).expect("valid");
        assert_eq!(
            cfg.mbmix.expect("mbmix section").critic.train_on,
            mbmix_policy::CriticData::SimAndModel
        );
        let (_dir, path) = write_config(
            "[[mbmix.rollout.per_step_source]]\nsegments = [{ source = \"sim_fwd_model_bwd\", steps = 8 }, { source = \"model\", steps = 24 }]\nweight = 0.5\n",
        );
        let cfg = RunConfig::resolve(Some(&path), &mbmix).expect("valid");
        let list = cfg.mbmix.expect("mbmix section").rollout.per_step_source;
        let list = list.expect("per_step_source");
        assert_eq!(list[0].segments[1].steps, 24);
        assert_eq!(list[0].weight, 0.5);
        let (_dir, path) = write_config("[mbmix.critic]\ntrain_on = \"model\"\n");
        let msg = RunConfig::resolve(Some(&path), &mbmix)
            .expect_err("unknown value")
            .to_string();
        assert!(
            msg.contains("train_on") && msg.contains("my-config.toml"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_field_and_file() {
        let (_dir, path) = write_config("[shac]\nnum_envs = \"eight\"\n");
        let err = RunConfig::resolve(Some(&path), &cartpole_shac()).expect_err("wrong type");
        let msg = err.to_string();
        assert!(matches!(err, Error::FieldType { .. }), "{msg}");
        assert!(msg.contains("`shac.num_envs`"), "{msg}");
        assert!(msg.contains("my-config.toml"), "{msg}");
        assert!(msg.contains("string"), "{msg}");

        let (_dir, path) = write_config("seed = 1.5\n");
        let msg = RunConfig::resolve(Some(&path), &cartpole_shac())
            .expect_err("float seed")
            .to_string();
        assert!(
            msg.contains("`seed`") && msg.contains("my-config.toml"),
            "{msg}"
        );
    }

    #[test]
    fn syntax_error_and_invalid_values_name_the_file() {
        let (_dir, path) = write_config("[shac\n");
        let msg = RunConfig::resolve(Some(&path), &cartpole_shac())
            .expect_err("syntax")
            .to_string();
        assert!(msg.contains("my-config.toml"), "{msg}");

        let (_dir, path) = write_config("eval_episodes = 0\n");
        let msg = RunConfig::resolve(Some(&path), &cartpole_shac())
            .expect_err("zero episodes")
            .to_string();
        assert!(
            msg.contains("eval_episodes") && msg.contains("my-config.toml"),
            "{msg}"
        );
    }

    #[test]
    fn baseline_sections_come_from_the_presets_and_are_checked() {
        for (algo, task) in [("bptt", "cartpole-swingup"), ("ppo", "ant")] {
            let ov = Overrides {
                task: Some(task.into()),
                algo: Some(algo.into()),
                epochs: Some(3),
                ..Overrides::default()
            };
            let cfg = RunConfig::resolve(None, &ov).expect("preset");
            assert!(cfg.shac.is_none());
            assert_eq!(cfg.max_epochs(), 3);
            let (_dir, path) = write_config(&cfg.to_toml().expect("toml"));
            let back = RunConfig::load(&path).expect("load");
            assert_eq!(back.to_toml().ok(), cfg.to_toml().ok());
        }
        let ppo = Overrides {
            task: Some("cartpole-swingup".into()),
            algo: Some("ppo".into()),
            ..Overrides::default()
        };
        let (_dir, path) = write_config("[ppo]\nnum_envs = 4\nnum_minibatches = 2\n");
        let cfg = RunConfig::resolve(Some(&path), &ppo).expect("valid");
        assert_eq!(cfg.ppo.as_ref().map(|c| c.num_envs), Some(4));
        let (_dir, path) = write_config("[ppo]\ne_clip = 0.0\n");
        let msg = RunConfig::resolve(Some(&path), &ppo)
            .expect_err("invalid e_clip")
            .to_string();
        assert!(
            msg.contains("e_clip") && msg.contains("my-config.toml"),
            "{msg}"
        );
        let (_dir, path) = write_config("[bptt]\nhorizon = 8\n");
        let msg = RunConfig::resolve(Some(&path), &ppo)
            .expect_err("foreign section")
            .to_string();
        assert!(msg.contains("[bptt]") && msg.contains("`ppo`"), "{msg}");
        let (_dir, path) = write_config("[bptt]\nhorizn = 8\n");
        let bptt = Overrides {
            algo: Some("bptt".into()),
            ..ppo
        };
        let msg = RunConfig::resolve(Some(&path), &bptt)
            .expect_err("unknown field")
            .to_string();
        assert!(msg.contains("`bptt.horizn`"), "{msg}");
    }

    #[test]
    fn resolved_config_round_trips_through_toml() {
        let cfg = RunConfig::resolve(None, &cartpole_shac()).expect("preset");
        let (_dir, path) = write_config(&cfg.to_toml().expect("toml"));
        let back = RunConfig::load(&path).expect("load");
        assert_eq!(back.to_toml().ok(), cfg.to_toml().ok());
    }
}

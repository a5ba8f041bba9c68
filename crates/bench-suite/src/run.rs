//! Run directories: training (fresh or resumed), checkpoints, metrics, summaries and
//! evaluation of a finished run.
//!
//! ```text
//! runs/<task>-<algo>-s<seed>/
//!   config.toml              the resolved configuration
//!   metrics.jsonl            one JSON object per line: epoch 0 (untrained evaluation), then one per epoch
//!   checkpoints/
//!     epoch-000050.safetensors   every `checkpoint_every` epochs, at the end, on Ctrl-C
//!     latest.safetensors         a copy of the newest numbered checkpoint
//!   summary.json             written when the last epoch is done
//!   learning_curve.svg       evaluation and training return against env steps
//! ```

use crate::config::{Overrides, RunConfig};
use crate::error::{Error, Result};
use crate::plot;
use crate::trainer::{self, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use mbmix_policy::EvalStats;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Name of the resolved configuration in a run directory.
pub const CONFIG_FILE: &str = "config.toml";
/// Name of the per-epoch metrics in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Name of the end-of-run summary in a run directory.
pub const SUMMARY_FILE: &str = "summary.json";
/// Name of the learning-curve plot in a run directory.
pub const PLOT_FILE: &str = "learning_curve.svg";
/// Checkpoint folder in a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The newest checkpoint, inside [`CHECKPOINT_DIR`].
pub const LATEST_CHECKPOINT: &str = "latest.safetensors";

/// One line of `metrics.jsonl`. Fields that do not apply to a line are left out (the
/// epoch-0 line has no losses; evaluation fields appear only on evaluated epochs).
///
/// Only `wall_s` and `steps_per_s` depend on the machine's speed; every other field is a
/// function of the configuration and seed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Epochs completed (0: before training).
    pub epoch: usize,
    /// Training env steps simulated so far.
    pub env_steps: u64,
    /// Wall time since the run started, seconds (summed over resumed sessions).
    pub wall_s: f64,
    /// Env steps per second of this epoch's training step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_per_s: Option<f64>,
    /// Mean undiscounted return of the training episodes that ended in this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_train_return: Option<f32>,
    /// Mean return of the deterministic policy over `eval_episodes` episodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_return: Option<f32>,
    /// Standard deviation of the evaluation returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_return_std: Option<f32>,
    /// Fraction of evaluation episodes that the task counts as a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_success_rate: Option<f32>,
    /// Actor loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_loss: Option<f32>,
    /// Critic loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic_loss: Option<f32>,
    /// Actor gradient norm before clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_grad_norm: Option<f32>,
    /// Actor learning rate used in this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_lr: Option<f32>,
    /// Critic learning rate used in this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critic_lr: Option<f32>,
    /// MB-MIX: whether the actor used the model this epoch (false during warm-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_used: Option<bool>,
    /// MB-MIX: the mixed objective's loss on the simulator window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_actor_loss: Option<f32>,
    /// MB-MIX: the mixed objective's loss on the model rollout (or reading B's chain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_actor_loss: Option<f32>,
    /// MB-MIX: envs whose model rollout went non-finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_nonfinite: Option<usize>,
    /// MB-MIX: cosine between the window's and the model objectives' actor gradients
    /// (with `rollout.model_gate` other than `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_grad_cos: Option<f64>,
    /// MB-MIX: mean Sobolev loss of the model's training epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_loss: Option<f64>,
    /// MB-MIX: its Jacobian term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_jacobian_loss: Option<f64>,
    /// MB-MIX: held-out next-state error of the model (diagnostic epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_next_state_err: Option<f64>,
    /// MB-MIX: held-out Jacobian error of the model (diagnostic epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_jacobian_err: Option<f64>,
    /// MB-MIX: actor-gradient variance of the mixed objective (diagnostic epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_var_mix: Option<f64>,
    /// MB-MIX: actor-gradient variance of SHAC's objective on the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_var_shac: Option<f64>,
    /// MB-MIX: wall time of the epoch's simulator Sobolev targets, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_targets_s: Option<f64>,
    /// MB-MIX: wall time of the epoch's model training, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_train_s: Option<f64>,
}

impl MetricsLine {
    /// Copies MB-MIX's statistics of an epoch (nothing for other algorithms).
    fn with_mbmix(mut self, m: Option<&mbmix_policy::MbMixEpochStats>) -> Self {
        if let Some(m) = m {
            self.model_used = Some(m.model_used);
            self.sim_actor_loss = m.sim_actor_loss;
            self.model_actor_loss = m.model_actor_loss;
            self.model_nonfinite = Some(m.model_nonfinite);
            self.model_grad_cos = m.model_grad_cos;
            self.model_loss = Some(m.model_loss);
            self.model_jacobian_loss = Some(m.model_jacobian_loss);
            self.model_next_state_err = m.model_next_state_err;
            self.model_jacobian_err = m.model_jacobian_err;
            self.grad_var_mix = m.grad_var_mix;
            self.grad_var_shac = m.grad_var_shac;
            self.model_targets_s = Some(m.model_targets_s);
            self.model_train_s = Some(m.model_train_s);
        }
        self
    }

    fn with_eval(mut self, eval: Option<&EvalStats>) -> Self {
        if let Some(e) = eval {
            self.eval_return = Some(e.mean_return);
            self.eval_return_std = Some(e.std_return);
            self.eval_success_rate = e.success_rate;
        }
        self
    }
}

/// An evaluation result as reported by `summary.json` and `mbmix eval --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Epochs the evaluated policy was trained for.
    pub epoch: usize,
    /// Episodes evaluated.
    pub episodes: usize,
    /// Seed of the evaluation episodes.
    pub seed: u64,
    /// Mean undiscounted return.
    pub mean_return: f32,
    /// Standard deviation of the returns.
    pub std_return: f32,
    /// Fraction of successful episodes, when the task defines success.
    pub success_rate: Option<f32>,
    /// Every episode's return.
    pub returns: Vec<f32>,
    /// Whether the episodes started from the task's stochastic reset (true) or from its
    /// deterministic initial state.
    #[serde(default = "stochastic_by_default")]
    pub stochastic_init: bool,
}

fn stochastic_by_default() -> bool {
    true
}

impl EvalReport {
    fn new(epoch: usize, episodes: usize, seed: u64, stochastic_init: bool, e: EvalStats) -> Self {
        EvalReport {
            epoch,
            episodes,
            seed,
            stochastic_init,
            mean_return: e.mean_return,
            std_return: e.std_return,
            success_rate: e.success_rate,
            returns: e.returns,
        }
    }
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Task name.
    pub task: String,
    /// Algorithm name.
    pub algo: String,
    /// Run seed.
    pub seed: u64,
    /// Epochs trained.
    pub epochs: usize,
    /// Training env steps.
    pub env_steps: u64,
    /// Wall time of the whole run, seconds (training, evaluations, checkpoints; summed
    /// over resumed sessions).
    pub wall_s: f64,
    /// `env_steps / wall_s`.
    pub env_steps_per_s: f64,
    /// Evaluation return of the untrained policy (epoch 0), when recorded.
    pub initial_eval_return: Option<f32>,
    /// Evaluation of the final policy.
    pub final_eval: EvalReport,
}

/// How `train` ended without an error.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainOutcome {
    /// All epochs done; `summary.json` written.
    Finished(Box<Summary>),
    /// Stopped by the stop flag (Ctrl-C) at an epoch boundary, after writing a checkpoint.
    Interrupted {
        /// Epochs completed and checkpointed.
        epoch: usize,
    },
}

/// What `mbmix train` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--task`, `--algo`, `--seed`, `--epochs`.
    pub overrides: Overrides,
    /// `--out`; default `runs/<task>-<algo>-s<seed>`.
    pub out: Option<PathBuf>,
    /// `--resume`.
    pub resume: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// `--device`: where the simulator runs (not part of the run's configuration: a
    /// resumed run may continue on another device).
    pub device: diff_core::Device,
}

/// The default run directory of a configuration.
pub fn default_run_dir(task: &str, algo: &str, seed: u64) -> PathBuf {
    Path::new("runs").join(format!("{task}-{algo}-s{seed}"))
}

/// Trains a fresh run or resumes one (see the module docs for the directory layout).
///
/// `stop` is polled at every epoch boundary: when set, the run writes a checkpoint and
/// returns [`TrainOutcome::Interrupted`].
pub fn train(opts: &TrainOptions, stop: &AtomicBool) -> Result<(PathBuf, TrainOutcome)> {
    let mut session = if opts.resume {
        Session::resume(opts)?
    } else {
        Session::create(opts)?
    };
    let outcome = session.run(opts.progress, stop)?;
    Ok((session.dir, outcome))
}

/// Evaluates the latest checkpoint of a run directory.
/// `stochastic_init` false starts every episode from the task's deterministic initial state
/// (DiffRL's reset without `stochastic_init`), true from its reset noise as training does.
pub fn evaluate_run(
    dir: &Path,
    episodes: Option<usize>,
    seed: Option<u64>,
    stochastic_init: bool,
) -> Result<EvalReport> {
    let (cfg, trainer) = load_run(dir, None)?;
    let episodes = episodes.unwrap_or(cfg.eval_episodes);
    if episodes == 0 {
        return Err(Error::Usage("--episodes must be at least 1".into()));
    }
    let seed = seed.unwrap_or_else(|| trainer::eval_seed(cfg.seed));
    let stats = trainer.evaluate(episodes, seed, stochastic_init)?;
    Ok(EvalReport::new(
        trainer.epoch(),
        episodes,
        seed,
        stochastic_init,
        stats,
    ))
}

/// Reads a run's `metrics.jsonl`, stopping at the first line that does not parse (a line
/// cut short by a crash).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
    let file = File::open(path).map_err(Error::io("cannot open", path))?;
    let mut lines = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(Error::io("cannot read", path))?;
        match serde_json::from_str::<MetricsLine>(&line) {
            Ok(m) => lines.push(m),
            Err(_) => break,
        }
    }
    Ok(lines)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so that `path` is either the old or the new content, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|cause| {
        let _ = fs::remove_file(&tmp);
        Error::Io {
            action: "cannot write",
            path: path.to_path_buf(),
            cause,
        }
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp"))
}

fn load_run_config(dir: &Path) -> Result<RunConfig> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(Error::BadRunDir {
            dir: dir.to_path_buf(),
            reason: format!("no {CONFIG_FILE} (is this a run directory?)"),
        });
    }
    RunConfig::load(&path)
}

/// Opens a run directory for evaluation: its configuration and a trainer holding the
/// checkpoint `checkpoint` (default `checkpoints/latest.safetensors`).
pub fn load_run(dir: &Path, checkpoint: Option<&Path>) -> Result<(RunConfig, Box<dyn Trainer>)> {
    if !dir.is_dir() {
        return Err(Error::BadRunDir {
            dir: dir.to_path_buf(),
            reason: "no such directory".into(),
        });
    }
    let cfg = load_run_config(dir)?;
    let mut trainer = trainer::build(&cfg)?;
    match checkpoint {
        None => load_latest(trainer.as_mut(), dir)?,
        Some(path) => load_checkpoint_file(trainer.as_mut(), dir, path)?,
    }
    Ok((cfg, trainer))
}

fn load_latest(trainer: &mut dyn Trainer, dir: &Path) -> Result<()> {
    load_checkpoint_file(
        trainer,
        dir,
        &dir.join(CHECKPOINT_DIR).join(LATEST_CHECKPOINT),
    )
}

fn load_checkpoint_file(trainer: &mut dyn Trainer, dir: &Path, path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(Error::BadRunDir {
            dir: dir.to_path_buf(),
            reason: format!("no checkpoint at {}", path.display()),
        });
    }
    trainer.load_checkpoint(path).map_err(|e| Error::BadRunDir {
        dir: dir.to_path_buf(),
        reason: format!("cannot load checkpoint: {e}"),
    })
}

/// An open run: its directory, configuration, trainer and metrics file.
struct Session {
    dir: PathBuf,
    cfg: RunConfig,
    trainer: Box<dyn Trainer>,
    metrics: File,
    history: Vec<MetricsLine>,
    /// Wall time of earlier sessions of this run.
    wall_offset: f64,
    /// Epoch of the newest checkpoint on disk.
    checkpointed_epoch: Option<usize>,
}

impl Session {
    fn create(opts: &TrainOptions) -> Result<Session> {
        let cfg = RunConfig::resolve(opts.config.as_deref(), &opts.overrides)?;
        let dir = opts
            .out
            .clone()
            .unwrap_or_else(|| default_run_dir(&cfg.task, &cfg.algo, cfg.seed));
        if dir.exists() {
            return Err(Error::RunDirExists(dir));
        }
        // Build before creating anything, so that an invalid configuration leaves no
        // directory behind.
        let trainer = trainer::build_on(&cfg, opts.device)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        }
        // `create_dir` fails if the directory appeared meanwhile: we never write into a
        // run we did not create.
        fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::RunDirExists(dir.clone()),
            _ => Error::Io {
                action: "cannot create",
                path: dir.clone(),
                cause: e,
            },
        })?;
        let ckpt = dir.join(CHECKPOINT_DIR);
        fs::create_dir(&ckpt).map_err(Error::io("cannot create", &ckpt))?;
        write_atomic(&dir.join(CONFIG_FILE), cfg.to_toml()?.as_bytes())?;
        let metrics_path = dir.join(METRICS_FILE);
        let metrics =
            File::create(&metrics_path).map_err(Error::io("cannot create", &metrics_path))?;
        Ok(Session {
            dir,
            cfg,
            trainer,
            metrics,
            history: Vec::new(),
            wall_offset: 0.0,
            checkpointed_epoch: None,
        })
    }

    fn resume(opts: &TrainOptions) -> Result<Session> {
        let ov = &opts.overrides;
        if opts.config.is_some() {
            return Err(Error::Usage(
                "--config cannot be combined with --resume: a resumed run uses its own config.toml"
                    .into(),
            ));
        }
        let dir = match &opts.out {
            Some(dir) => dir.clone(),
            None => match (&ov.task, &ov.algo) {
                (Some(task), Some(algo)) => default_run_dir(task, algo, ov.seed.unwrap_or(0)),
                _ => {
                    return Err(Error::Usage(
                        "--resume needs --out DIR, or --task and --algo (and --seed) to find the default run directory"
                            .into(),
                    ))
                }
            },
        };
        let mut cfg = load_run_config(&dir)?;
        for (flag, given, actual) in [
            ("--task", ov.task.clone(), cfg.task.clone()),
            ("--algo", ov.algo.clone(), cfg.algo.clone()),
            (
                "--seed",
                ov.seed.map(|s| s.to_string()),
                cfg.seed.to_string(),
            ),
        ] {
            if let Some(given) = given.filter(|g| *g != actual) {
                return Err(Error::Usage(format!(
                    "{flag} {given} contradicts the run being resumed ({} has {actual})",
                    dir.join(CONFIG_FILE).display()
                )));
            }
        }
        let epochs_changed = ov.epochs.is_some_and(|e| e != cfg.max_epochs());
        if let Some(epochs) = ov.epochs {
            cfg.set_max_epochs(epochs);
            cfg.validate()?;
        }
        let mut trainer = trainer::build_on(&cfg, opts.device)?;
        // Everything that can fail without side effects comes first: a corrupt checkpoint
        // or unreadable metrics leave the directory untouched.
        load_latest(trainer.as_mut(), &dir)?;
        let epoch = trainer.epoch();
        if epoch > cfg.max_epochs() {
            return Err(Error::Usage(format!(
                "--epochs {} is fewer than the {epoch} epochs the run's checkpoint has done",
                cfg.max_epochs()
            )));
        }
        let metrics_path = dir.join(METRICS_FILE);
        let mut history = if metrics_path.is_file() {
            read_metrics(&metrics_path)?
        } else {
            Vec::new()
        };
        history.retain(|m| m.epoch <= epoch);
        let wall_offset = history.last().map_or(0.0, |m| m.wall_s);

        if epochs_changed {
            write_atomic(&dir.join(CONFIG_FILE), cfg.to_toml()?.as_bytes())?;
        }
        let mut kept = String::new();
        for m in &history {
            kept.push_str(&to_json_line(m, &metrics_path)?);
        }
        write_atomic(&metrics_path, kept.as_bytes())?;
        let metrics = OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(Error::io("cannot open", &metrics_path))?;
        Ok(Session {
            dir,
            cfg,
            trainer,
            metrics,
            history,
            wall_offset,
            checkpointed_epoch: Some(epoch),
        })
    }

    fn append_metrics(&mut self, line: MetricsLine) -> Result<()> {
        let path = self.dir.join(METRICS_FILE);
        let text = to_json_line(&line, &path)?;
        self.metrics
            .write_all(text.as_bytes())
            .and_then(|()| self.metrics.flush())
            .map_err(Error::io("cannot write", &path))?;
        self.history.push(line);
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<()> {
        let ckpt = self.dir.join(CHECKPOINT_DIR);
        let numbered = ckpt.join(format!("epoch-{:06}.safetensors", self.trainer.epoch()));
        self.trainer.save_checkpoint(&numbered)?;
        let latest = ckpt.join(LATEST_CHECKPOINT);
        let tmp = tmp_path(&latest);
        fs::copy(&numbered, &tmp)
            .and_then(|_| fs::rename(&tmp, &latest))
            .map_err(Error::io("cannot write", &latest))?;
        self.checkpointed_epoch = Some(self.trainer.epoch());
        Ok(())
    }

    fn evaluate(&self) -> Result<EvalStats> {
        Ok(self.trainer.evaluate(
            self.cfg.eval_episodes,
            trainer::eval_seed(self.cfg.seed),
            true,
        )?)
    }

    fn plot(&self) -> Result<()> {
        let title = format!(
            "{} / {} / seed {}",
            self.cfg.task, self.cfg.algo, self.cfg.seed
        );
        plot::learning_curve(&self.history, &self.dir.join(PLOT_FILE), &title)
    }

    fn run(&mut self, progress: bool, stop: &AtomicBool) -> Result<TrainOutcome> {
        let started = Instant::now();
        let wall_offset = self.wall_offset;
        let wall = || wall_offset + started.elapsed().as_secs_f64();
        let max_epochs = self.cfg.max_epochs();
        if self.history.is_empty() && self.trainer.epoch() == 0 {
            let eval = self.evaluate()?;
            let line = MetricsLine {
                wall_s: wall(),
                ..MetricsLine::default()
            }
            .with_eval(Some(&eval));
            self.append_metrics(line)?;
        }
        let bar = progress_bar(progress, max_epochs, self.trainer.epoch());
        let mut last_eval = self.history.iter().rev().find_map(|m| m.eval_return);
        let mut final_stats = None;
        while self.trainer.epoch() < max_epochs {
            if stop.load(Ordering::SeqCst) {
                let epoch = self.trainer.epoch();
                bar.finish_and_clear();
                if self.checkpointed_epoch != Some(epoch) {
                    self.checkpoint()?;
                }
                self.plot()?;
                return Ok(TrainOutcome::Interrupted { epoch });
            }
            let steps_before = self.trainer.env_steps();
            let t0 = Instant::now();
            let stats = match self.trainer.train_epoch() {
                Ok(stats) => stats,
                Err(cause) => {
                    bar.abandon();
                    let epoch = self.trainer.epoch() + 1;
                    // The metrics so far are flushed and the last good checkpoint stays;
                    // the plot only reads the metrics.
                    let _ = self.plot();
                    return Err(Error::Training {
                        epoch,
                        checkpoint: self.checkpointed_epoch,
                        cause,
                    });
                }
            };
            let train_s = t0.elapsed().as_secs_f64();
            let epoch = self.trainer.epoch();
            let env_steps = self.trainer.env_steps();
            let eval = if epoch.is_multiple_of(self.cfg.eval_every) || epoch == max_epochs {
                Some(self.evaluate()?)
            } else {
                None
            };
            let steps = env_steps.saturating_sub(steps_before) as f64;
            let line = MetricsLine {
                epoch,
                env_steps,
                wall_s: wall(),
                steps_per_s: (train_s > 0.0).then(|| steps / train_s),
                mean_train_return: stats.mean_train_return,
                actor_loss: Some(stats.actor_loss),
                critic_loss: self.trainer.has_critic().then_some(stats.critic_loss),
                actor_grad_norm: Some(stats.actor_grad_norm),
                actor_lr: Some(stats.actor_lr),
                critic_lr: self.trainer.has_critic().then_some(stats.critic_lr),
                ..MetricsLine::default()
            }
            .with_mbmix(stats.mbmix.as_ref())
            .with_eval(eval.as_ref());
            if let Some(e) = &eval {
                last_eval = Some(e.mean_return);
            }
            bar.set_position(epoch as u64);
            bar.set_message(progress_message(&line, last_eval));
            self.append_metrics(line)?;
            if epoch.is_multiple_of(self.cfg.checkpoint_every) || epoch == max_epochs {
                self.checkpoint()?;
            }
            if epoch == max_epochs {
                final_stats = eval;
            }
        }
        bar.finish_and_clear();

        let epoch = self.trainer.epoch();
        // A resumed run that had nothing left to train evaluates its checkpoint again
        // (same seed, same result).
        let final_stats = match final_stats {
            Some(stats) => stats,
            None => self.evaluate()?,
        };
        let final_eval = EvalReport::new(
            epoch,
            self.cfg.eval_episodes,
            trainer::eval_seed(self.cfg.seed),
            true,
            final_stats,
        );
        let wall_s = wall();
        let env_steps = self.trainer.env_steps();
        let summary = Summary {
            task: self.cfg.task.clone(),
            algo: self.cfg.algo.clone(),
            seed: self.cfg.seed,
            epochs: epoch,
            env_steps,
            wall_s,
            env_steps_per_s: if wall_s > 0.0 {
                env_steps as f64 / wall_s
            } else {
                0.0
            },
            initial_eval_return: self
                .history
                .iter()
                .find(|m| m.epoch == 0)
                .and_then(|m| m.eval_return),
            final_eval,
        };
        let path = self.dir.join(SUMMARY_FILE);
        let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::Serialise {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, json.as_bytes())?;
        self.plot()?;
        Ok(TrainOutcome::Finished(Box::new(summary)))
    }
}

fn to_json_line(m: &MetricsLine, path: &Path) -> Result<String> {
    let mut s = serde_json::to_string(m).map_err(|e| Error::Serialise {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    s.push('\n');
    Ok(s)
}

fn progress_bar(show: bool, max_epochs: usize, epoch: usize) -> ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(max_epochs as u64);
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] epoch {pos}/{len} {msg} (eta {eta})",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_position(epoch as u64);
    bar
}

fn progress_message(line: &MetricsLine, last_eval: Option<f32>) -> String {
    let fmt = |v: Option<f32>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    format!(
        "steps {} | train return {} | eval return {} | {:.0} steps/s",
        line.env_steps,
        fmt(line.mean_train_return),
        fmt(last_eval),
        line.steps_per_s.unwrap_or(0.0)
    )
}

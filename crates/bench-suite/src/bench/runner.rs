//! Runs a plan: every job is an `mbmix train` process with its own run directory, up to
//! `jobs` at a time; a job whose run directory holds `summary.json` is finished and
//! skipped, a job with a `config.toml` but no summary resumes from its checkpoint, the
//! others start. Rerunning an interrupted bench (same `--out`) therefore finishes only
//! what is left.
//!
//! The bench directory:
//! - `bench.json`: the manifest, every job ever planned into this directory;
//! - `configs/<suite>/<job>.toml`: each job's full configuration;
//! - `<suite>/<job>/`: run directories (`mbmix train`'s layout);
//! - `logs/<suite>/<job>.log`: each job's output (appended to on resume);
//! - `status/<suite>/<job>.json`: why a job did not finish (failed or interrupted);
//! - `<suite>/report.{md,json}`, `<suite>/curves_*.{svg,png}` and `report.md`: the reports.

use super::JobSpec;
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::run::{
    write_atomic, CHECKPOINT_DIR, CONFIG_FILE, LATEST_CHECKPOINT, METRICS_FILE, SUMMARY_FILE,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "bench.json";

/// `bench.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Every job planned into this directory, in plan order.
    pub jobs: Vec<JobSpec>,
}

impl Manifest {
    /// Reads `dir/bench.json`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(Error::io("cannot read", &path))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::BadInput {
                path,
                reason: format!("not a bench manifest: {e}"),
            })
    }
}

/// Why a job did not finish: `status/<suite>/<job>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    /// `failed` or `interrupted`.
    pub state: String,
    /// The error, as the job's log gives it.
    pub error: String,
    /// The log file, relative to the bench directory.
    pub log: String,
}

/// Path of a job's status file.
pub fn status_path(out: &Path, job: &JobSpec) -> PathBuf {
    out.join("status")
        .join(&job.suite)
        .join(format!("{}.json", job.name))
}

/// Path of a job's log, relative to the bench directory.
pub fn log_rel(job: &JobSpec) -> String {
    format!("logs/{}/{}.log", job.suite, job.name)
}

/// Writes the jobs' configurations and merges them into the manifest of `out`.
///
/// A job already planned into `out` must have the same configuration (a rerun of the same
/// bench, which then resumes); a different one is an error that changes nothing, so that
/// one directory never mixes two configurations under one job name.
pub fn prepare(out: &Path, planned: &[(JobSpec, RunConfig)]) -> Result<Manifest> {
    let mut manifest = Manifest::load(out)?.unwrap_or_default();
    let mut texts = Vec::with_capacity(planned.len());
    for (job, cfg) in planned {
        let text = toml::to_string(cfg).map_err(|e| Error::Serialise {
            path: out.join(&job.config),
            reason: e.to_string(),
        })?;
        let path = out.join(&job.config);
        if path.is_file() {
            let old = std::fs::read_to_string(&path).map_err(Error::io("cannot read", &path))?;
            if old != text {
                return Err(Error::Usage(format!(
                    "{} was planned with another configuration ({}); rerun the bench that made it, \
                     or choose another --out",
                    job.name,
                    path.display()
                )));
            }
        }
        texts.push(text);
    }
    for ((job, _), text) in planned.iter().zip(texts) {
        let path = out.join(&job.config);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        }
        if !path.is_file() {
            write_atomic(&path, text.as_bytes())?;
        }
        if !manifest
            .jobs
            .iter()
            .any(|j| j.suite == job.suite && j.name == job.name)
        {
            manifest.jobs.push(job.clone());
        }
    }
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Serialise {
        path: out.join(MANIFEST_FILE),
        reason: e.to_string(),
    })?;
    write_atomic(&out.join(MANIFEST_FILE), json.as_bytes())?;
    Ok(manifest)
}

/// How to run the jobs.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// The `mbmix` executable the jobs run.
    pub exe: PathBuf,
    /// Jobs at a time.
    pub jobs: usize,
    /// `--device` of every job.
    pub device: String,
    /// Draw progress bars (otherwise one line per job event).
    pub progress: bool,
}

/// How a job ended in this invocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Finished in an earlier invocation.
    Kept,
    /// Finished now.
    Done,
    /// Did not finish; the message says why.
    Failed(String),
    /// Stopped by Ctrl-C (checkpointed when the job got that far).
    Interrupted,
    /// Not started because the bench was stopped.
    NotStarted,
}

/// Runs `jobs` (a subset of the manifest) and returns each one's outcome, in order.
pub fn run(
    out: &Path,
    jobs: &[JobSpec],
    opts: &RunnerOptions,
    stop: &AtomicBool,
) -> Result<Vec<Outcome>> {
    if opts.jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let total = jobs.len();
    let mp = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = mp.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} jobs, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    overall.set_prefix("bench");
    let say = |msg: String| mp.suspend(|| eprintln!("{msg}"));
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(vec![Outcome::NotStarted; total]);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.min(total) {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let tag = format!("[{}/{total}] {}/{}", i + 1, job.suite, job.name);
                let outcome = run_job(out, job, opts, &mp, &tag, &say);
                match &outcome {
                    Outcome::Kept => say(format!("{tag}: finished earlier, kept")),
                    Outcome::Done => {}
                    Outcome::Failed(e) => say(format!("{tag}: FAILED: {e}")),
                    Outcome::Interrupted => say(format!("{tag}: interrupted")),
                    Outcome::NotStarted => {}
                }
                overall.inc(1);
                if let Ok(mut o) = outcomes.lock() {
                    o[i] = outcome;
                }
            });
        }
    });
    overall.finish_and_clear();
    let outcomes = outcomes.into_inner().unwrap_or_default();
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    eprintln!(
        "bench: {} done, {} kept from before, {} failed, {} interrupted, {} not started ({:.1} s)",
        count(|o| *o == Outcome::Done),
        count(|o| *o == Outcome::Kept),
        count(|o| matches!(o, Outcome::Failed(_))),
        count(|o| *o == Outcome::Interrupted),
        count(|o| *o == Outcome::NotStarted),
        started.elapsed().as_secs_f64()
    );
    Ok(outcomes)
}

fn run_job(
    out: &Path,
    job: &JobSpec,
    opts: &RunnerOptions,
    mp: &MultiProgress,
    tag: &str,
    say: &dyn Fn(String),
) -> Outcome {
    let dir = out.join(&job.dir);
    if dir.join(SUMMARY_FILE).is_file() {
        return Outcome::Kept;
    }
    let status = status_path(out, job);
    let _ = std::fs::remove_file(&status);
    let log_path = out.join(log_rel(job));
    let fail = |state: &str, error: String| {
        let s = JobStatus {
            state: state.into(),
            error: error.clone(),
            log: log_rel(job),
        };
        if let Some(parent) = status.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Ok(json) = serde_json::to_string_pretty(&s) {
            let _ = write_atomic(&status, json.as_bytes());
        }
        error
    };
    let resume = dir.join(CHECKPOINT_DIR).join(LATEST_CHECKPOINT).is_file();
    if !resume && dir.join(CONFIG_FILE).is_file() {
        // killed before its first checkpoint: nothing to resume, start it again
        say(format!("{tag}: no checkpoint to resume from, restarting"));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            return Outcome::Failed(fail(
                "failed",
                format!("cannot clear {} to restart it: {e}", dir.display()),
            ));
        }
    }
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("train").arg("--out").arg(&dir);
    if resume {
        cmd.arg("--resume");
    } else {
        cmd.arg("--config").arg(out.join(&job.config));
    }
    cmd.args(["--device", &opts.device, "--quiet"]);
    let log = (|| {
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
    })();
    let log = match log {
        Ok(l) => l,
        Err(e) => {
            return Outcome::Failed(fail(
                "failed",
                format!("cannot open {}: {e}", log_path.display()),
            ))
        }
    };
    let log_err = match log.try_clone() {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(fail("failed", format!("cannot share the log: {e}"))),
    };
    let bar = mp.add(ProgressBar::new(job.epochs as u64));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} epochs {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(job.name.chars().take(40).collect::<String>());
    say(format!(
        "{tag}: {}",
        if resume { "resuming" } else { "started" }
    ));
    let t0 = Instant::now();
    let child = cmd.stdin(Stdio::null()).stdout(log).stderr(log_err).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            bar.finish_and_clear();
            return Outcome::Failed(fail(
                "failed",
                format!("cannot start {}: {e}", opts.exe.display()),
            ));
        }
    };
    let metrics = dir.join(METRICS_FILE);
    let mut last_read: Option<Instant> = None;
    let status_code = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        // the exit is noticed within 250 ms; the epoch count is read once a second
        if last_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            bar.set_position(epochs_done(&metrics));
            last_read = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    bar.finish_and_clear();
    mp.remove(&bar);
    match status_code {
        Ok(s) if s.success() && dir.join(SUMMARY_FILE).is_file() => {
            let ret = super::report::RunData::load(&dir)
                .map(|r| format!(", final eval return {:.1}", r.final_return))
                .unwrap_or_default();
            say(format!(
                "{tag}: done in {:.1} s{ret}",
                t0.elapsed().as_secs_f64()
            ));
            Outcome::Done
        }
        Ok(s) if s.code() == Some(i32::from(crate::cli::EXIT_INTERRUPTED)) => {
            fail(
                "interrupted",
                "stopped by Ctrl-C after a checkpoint; rerun the bench to resume".into(),
            );
            Outcome::Interrupted
        }
        Ok(s) => Outcome::Failed(fail(
            "failed",
            format!(
                "mbmix train exited with {s}: {} (log {})",
                error_line(&log_path),
                log_rel(job)
            ),
        )),
        Err(e) => Outcome::Failed(fail("failed", format!("waiting for the job: {e}"))),
    }
}

/// Epochs a running job has logged: the epoch of the last whole metrics line, read from
/// the file's last 8 KiB (a line is well under that) rather than the whole file.
fn epochs_done(metrics: &Path) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let tail = (|| -> std::io::Result<String> {
        let mut f = std::fs::File::open(metrics)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(8192)))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    })();
    tail.ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        })
        .and_then(|v| v["epoch"].as_u64())
        .unwrap_or(0)
}

/// The log's last `error:` line, or its last non-empty line.
fn error_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error"))
        .or(lines.last())
        .map_or_else(|| "no output".into(), |l| l.trim().to_string())
}

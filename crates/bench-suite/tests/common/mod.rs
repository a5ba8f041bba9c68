//! Helpers shared by the integration tests: driving `mbmix` through
//! `bench_suite::cli::run` and making small CartPole runs.

// Each test crate uses its own subset of the helpers.
#![allow(dead_code)]

use bench_suite::cli::{self, Cli, Exit};
use bench_suite::run::MetricsLine;
use bench_suite::Error;
use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// A small SHAC configuration: each epoch simulates 8 × 8 = 64 env steps.
pub const SMALL: &str = "\
eval_every = 2
eval_episodes = 4
checkpoint_every = 2

[shac]
num_envs = 8
horizon = 8
max_epochs = 4
critic_iterations = 2
";

pub fn mbmix(args: &[&str]) -> (Result<Exit, Error>, String) {
    mbmix_with_stop(args, false)
}

pub fn mbmix_with_stop(args: &[&str], stop: bool) -> (Result<Exit, Error>, String) {
    let cli = Cli::try_parse_from(std::iter::once("mbmix").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("arguments {args:?} do not parse: {e}"));
    let stop = AtomicBool::new(stop);
    let mut out = Vec::new();
    let result = cli::run(cli, &stop, &mut out);
    (result, String::from_utf8_lossy(&out).into_owned())
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test input");
    path
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Trains the small config into `tmp/<name>` and returns the run directory.
pub fn train_small(tmp: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let cfg = write(tmp, "small.toml", SMALL);
    let out = tmp.join(name);
    train_cartpole("shac", &cfg, &out, extra);
    out
}

/// `mbmix train --task cartpole-swingup --algo <algo> --config <cfg> --out <out> --quiet`
/// followed by `extra`; asserts that training succeeds.
pub fn train_cartpole(algo: &str, cfg: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "train",
        "--task",
        "cartpole-swingup",
        "--algo",
        algo,
        "--config",
        s(cfg),
        "--out",
        s(out),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let (result, _) = mbmix(&args);
    assert_eq!(result.expect("training succeeds"), Exit::Success, "{algo}");
}

/// Every file under `dir` with its content.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                files.insert(path, bytes);
            }
        }
    }
    files
}

/// Metrics without the wall-clock fields (the run's, and MB-MIX's model timings, which
/// are present exactly when the run logged them).
pub fn deterministic_part(lines: &[MetricsLine]) -> Vec<MetricsLine> {
    lines
        .iter()
        .map(|m| MetricsLine {
            wall_s: 0.0,
            steps_per_s: None,
            model_targets_s: m.model_targets_s.map(|_| 0.0),
            model_train_s: m.model_train_s.map(|_| 0.0),
            ..m.clone()
        })
        .collect()
}

/// The return of the zero-action policy ("do nothing", the pole stays down) from the
/// start states of a run's evaluation episodes.
pub fn do_nothing_return(episodes: usize, eval_seed: u64) -> f32 {
    let task = bench_suite::registry::make_task("cartpole-swingup").expect("cartpole");
    let env = diff_core::BatchEnv::new(task.clone(), episodes, eval_seed, true).expect("env");
    let steps = task.spec().episode_length;
    let zeros = ndarray::Array3::<f32>::zeros((steps, episodes, 1));
    let traj =
        bench_suite::rollout::replay(task.as_ref(), env.state(), zeros.view()).expect("replay");
    traj.rewards.sum() / episodes as f32
}

//! `cargo xtask`: orchestration only. It builds and runs the `mbmix` binary and the
//! workspace's checks; it contains no algorithm code.
//!
//! - `cargo xtask bench --quick`: CartPole swing-up with SHAC for 3 seeds, then a report;
//! - `cargo xtask bench`: the full suite (every registered task/algorithm pair of the
//!   DiffRL suite, 5 seeds);
//! - `cargo xtask ci`: what `.ci/run` runs (format check, clippy, tests).

mod report;
mod time;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "MB-MIX workspace automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a suite of runs with the release `mbmix` binary and write a report.
    Bench(BenchArgs),
    /// Format check, clippy with warnings denied, and the test suite (as `.ci/run`).
    Ci,
}

#[derive(Args)]
struct BenchArgs {
    /// The quick suite: CartPole swing-up with SHAC, 3 seeds.
    #[arg(long)]
    quick: bool,
    /// Output directory (default `runs/bench-<suite>-<UTC timestamp>`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seeds, comma-separated (default: 0,1,2 for --quick, 0..4 otherwise).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Runs trained at the same time (each `mbmix` process uses the cores it is given).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Override every run's epoch count (`mbmix train --epochs`).
    #[arg(long)]
    epochs: Option<usize>,
    /// A TOML config passed to every run (`mbmix train --config`).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Continue an interrupted bench in --out: finished runs are kept, unfinished runs
    /// resume from their checkpoints, missing runs start.
    #[arg(long, requires = "out")]
    resume: bool,
    /// Where the simulators run (`mbmix train --device`): `cpu` (default) or `cuda`, which
    /// builds `mbmix` with `--features cuda`.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    device: String,
}

/// One (task, algorithm) pair of a suite.
struct SuiteEntry {
    task: &'static str,
    algo: &'static str,
}

/// The quick suite.
const QUICK: &[SuiteEntry] = &[SuiteEntry {
    task: "cartpole-swingup",
    algo: "shac",
}];

/// The full suite: the DiffRL tasks as they are registered in `mbmix list`, each with
/// its DiffRL SHAC preset (2000 epochs for the locomotion tasks).
const FULL: &[SuiteEntry] = &[
    SuiteEntry {
        task: "ant",
        algo: "shac",
    },
    SuiteEntry {
        task: "half-cheetah",
        algo: "shac",
    },
    SuiteEntry {
        task: "hopper",
        algo: "shac",
    },
    SuiteEntry {
        task: "humanoid",
        algo: "shac",
    },
    SuiteEntry {
        task: "cartpole-swingup",
        algo: "shac",
    },
];

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Bench(args) => bench(args),
        Cmd::Ci => ci(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask/Cargo.toml sits one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
    eprintln!("$ {what}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

fn ci() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run_checked(fmt, "cargo fmt --all -- --check")?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run_checked(
        clippy,
        "cargo clippy --workspace --all-targets -- -D warnings",
    )?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run_checked(test, "cargo test --workspace")?;
    // the CUDA path must keep compiling; its kernel tests skip without NVRTC / a GPU
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "-p",
        "diff-core",
        "-p",
        "sim-rigid",
        "-p",
        "bench-suite",
        "--all-targets",
        "--features",
        "cuda",
        "--",
        "-D",
        "warnings",
    ]);
    run_checked(clippy, "cargo clippy ... --features cuda -- -D warnings")?;
    let mut test = cargo();
    test.args([
        "test",
        "-p",
        "sim-rigid",
        "--features",
        "cuda",
        "--test",
        "kernels",
    ]);
    run_checked(
        test,
        "cargo test -p sim-rigid --features cuda --test kernels",
    )
}

/// Builds `mbmix` in release and returns the path of the executable, as cargo reports it.
fn build_mbmix(cuda: bool) -> Result<PathBuf> {
    let features: &[&str] = if cuda { &["--features", "cuda"] } else { &[] };
    eprintln!(
        "$ cargo build --release -p bench-suite --bin mbmix {}",
        features.join(" ")
    );
    let output = cargo()
        .args([
            "build",
            "--release",
            "-p",
            "bench-suite",
            "--bin",
            "mbmix",
            "--message-format=json-render-diagnostics",
        ])
        .args(features)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo build")?;
    if !output.status.success() {
        bail!("building mbmix failed ({})", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "mbmix")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the mbmix executable")
}

/// One training job of a bench.
struct Job {
    task: &'static str,
    algo: &'static str,
    seed: u64,
    dir: PathBuf,
    log: PathBuf,
}

fn bench(args: BenchArgs) -> Result<()> {
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let (suite_name, suite, default_seeds) = if args.quick {
        ("quick", QUICK, vec![0, 1, 2])
    } else {
        ("full", FULL, vec![0, 1, 2, 3, 4])
    };
    let seeds = args.seeds.clone().unwrap_or(default_seeds);
    if seeds.is_empty() {
        bail!("--seeds is empty");
    }
    let root = workspace_root();
    let out = match &args.out {
        Some(dir) => dir.clone(),
        None => root
            .join("runs")
            .join(format!("bench-{suite_name}-{}", time::utc_stamp())),
    };
    if out.exists() && !args.resume {
        bail!(
            "{} already exists; pass --resume to continue that bench or choose another --out",
            out.display()
        );
    }
    let config = match &args.config {
        Some(c) => {
            Some(std::fs::canonicalize(c).with_context(|| format!("config file {}", c.display()))?)
        }
        None => None,
    };
    let mbmix = build_mbmix(args.device == "cuda")?;
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

    let jobs: Vec<Job> = suite
        .iter()
        .flat_map(|e| {
            seeds.iter().map(|&seed| {
                let name = format!("{}-{}-s{seed}", e.task, e.algo);
                Job {
                    task: e.task,
                    algo: e.algo,
                    seed,
                    dir: out.join(&name),
                    log: logs.join(format!("{name}.log")),
                }
            })
        })
        .collect();
    eprintln!(
        "bench {suite_name}: {} runs into {} ({} at a time; logs in {})",
        jobs.len(),
        out.display(),
        args.jobs,
        logs.display()
    );

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.min(jobs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                if let Err(e) = run_job(&mbmix, job, &args, config.as_deref(), i, jobs.len()) {
                    eprintln!("[{}/{}] {}: {e:#}", i + 1, jobs.len(), job.dir.display());
                    if let Ok(mut f) = failures.lock() {
                        f.push(format!("{}: {e:#}", job.dir.display()));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    eprintln!(
        "all runs ended after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let runs: Vec<report::RunResult> = jobs
        .iter()
        .filter_map(|j| report::RunResult::load(j.task, j.algo, j.seed, &j.dir).ok())
        .collect();
    let rep = report::Report::new(suite_name, &root, runs);
    let markdown = rep.markdown();
    println!("{markdown}");
    rep.write(&out)?;
    eprintln!(
        "wrote {}, {} and {}",
        out.join("report.md").display(),
        out.join("report.json").display(),
        out.join("learning_curves.svg").display()
    );
    if !failures.is_empty() {
        bail!(
            "{} run(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

fn run_job(
    mbmix: &Path,
    job: &Job,
    args: &BenchArgs,
    config: Option<&Path>,
    i: usize,
    total: usize,
) -> Result<()> {
    let tag = format!(
        "[{}/{total}] {} {} seed {}",
        i + 1,
        job.task,
        job.algo,
        job.seed
    );
    let resume = job.dir.join("config.toml").is_file();
    if job.dir.join("summary.json").is_file() {
        eprintln!("{tag}: already finished, kept");
        return Ok(());
    }
    let mut cmd = Command::new(mbmix);
    cmd.arg("train")
        .args(["--task", job.task, "--algo", job.algo])
        .arg("--out")
        .arg(&job.dir)
        .args(["--device", &args.device])
        .arg("--quiet");
    if resume {
        cmd.arg("--resume");
    } else {
        cmd.args(["--seed", &job.seed.to_string()]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
    }
    if let Some(e) = args.epochs {
        cmd.args(["--epochs", &e.to_string()]);
    }
    let log = std::fs::File::create(&job.log)
        .with_context(|| format!("cannot create {}", job.log.display()))?;
    let log_err = log.try_clone().context("cannot share the log file")?;
    eprintln!("{tag}: {}", if resume { "resuming" } else { "started" });
    let t0 = Instant::now();
    let status = cmd
        .stdout(log)
        .stderr(log_err)
        .status()
        .with_context(|| format!("cannot start {}", mbmix.display()))?;
    if !status.success() {
        bail!(
            "mbmix train exited with {status}; see {}",
            job.log.display()
        );
    }
    let summary = report::RunResult::load(job.task, job.algo, job.seed, &job.dir)?;
    eprintln!(
        "{tag}: done in {:.1} s, final eval return {:.1}",
        t0.elapsed().as_secs_f64(),
        summary.final_return
    );
    Ok(())
}

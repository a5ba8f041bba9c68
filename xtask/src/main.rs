//! `cargo xtask`: orchestration only. It builds the `mbmix` binary and runs it, the
//! criterion benches and the workspace's checks; it contains no algorithm code.
//!
//! - `cargo xtask bench [ARGS]`: builds `mbmix` in release and runs `mbmix bench ARGS`
//!   (suites, algorithms, seeds, budgets, parallel jobs, resume, reports, Slurm; see
//!   `mbmix bench --help`). `--quick` is short for `--budget quick`.
//! - `cargo xtask bench --micro [FILTER]`: runs the criterion benches and rewrites the
//!   generated table of BENCHMARKS.md;
//! - `cargo xtask ci`: what `.ci/run` runs (format check, clippy, tests).

mod micro;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "MB-MIX workspace automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build `mbmix` (release) and run `mbmix bench` with these arguments; `--quick` means
    /// `--budget quick`, `--micro [FILTER]` runs the criterion benches instead.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Format check, clippy with warnings denied, and the test suite (as `.ci/run`).
    Ci,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Bench { args } => bench(args),
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

/// `cargo xtask bench ARGS`.
fn bench(args: Vec<String>) -> Result<()> {
    if args.iter().any(|a| a == "--micro") {
        let filter: Vec<String> = args.into_iter().filter(|a| a != "--micro").collect();
        return micro::run(&workspace_root(), &filter);
    }
    let args: Vec<String> = args
        .into_iter()
        .flat_map(|a| {
            if a == "--quick" {
                vec!["--budget".to_string(), "quick".to_string()]
            } else {
                vec![a]
            }
        })
        .collect();
    let cuda = args
        .windows(2)
        .any(|w| w[0] == "--device" && w[1] == "cuda")
        || args.iter().any(|a| a == "--device=cuda");
    let mbmix = build_mbmix(cuda)?;
    let mut cmd = Command::new(&mbmix);
    cmd.current_dir(workspace_root()).arg("bench").args(&args);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", mbmix.display()))?;
    if !status.success() {
        bail!("mbmix bench failed ({status})");
    }
    Ok(())
}

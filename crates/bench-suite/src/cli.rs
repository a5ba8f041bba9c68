//! The `mbmix` command line: argument definitions and the commands, kept in the library
//! so that tests drive them directly; `src/main.rs` only parses, installs the Ctrl-C
//! handler and maps the outcome to an exit code.

use crate::config::Overrides;
use crate::error::{Error, Result};
use crate::registry::{ALGORITHMS, TASKS};
use crate::render::{self, RenderOptions, View};
use crate::rollout::{self, RolloutOptions};
use crate::run::{self, TrainOptions, TrainOutcome};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// Exit code of a run stopped by Ctrl-C after writing its checkpoint (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// MB-MIX: model-based RL through differentiable simulators.
#[derive(Debug, Parser)]
#[command(name = "mbmix", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the tasks (with their dimensions) and the algorithms.
    List,
    /// Train a policy into a run directory (or resume one).
    Train(TrainArgs),
    /// Evaluate the latest checkpoint of a run directory with the deterministic policy.
    Eval(EvalArgs),
    /// Replay actions through a task's dynamics, optionally with gradients.
    Rollout(RolloutArgs),
    /// Draw the deterministic policy of a run as an animated GIF or a PNG frame strip.
    Render(RenderArgs),
}

/// `mbmix train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Task name (see `mbmix list`); may also come from the config file.
    #[arg(long)]
    pub task: Option<String>,
    /// Algorithm name (see `mbmix list`); may also come from the config file.
    #[arg(long)]
    pub algo: Option<String>,
    /// TOML file overriding the task's preset (e.g. `[shac]\nnum_envs = 32`; `[bptt]`,
    /// `[ppo]` for the baselines).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Run seed (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Total number of epochs (the algorithm's `max_epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run directory (default `runs/<task>-<algo>-s<seed>`); must not exist unless
    /// --resume.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint and its own config.toml.
    #[arg(long)]
    pub resume: bool,
    /// No progress bar and no final report line.
    #[arg(long)]
    pub quiet: bool,
    /// Where the simulator runs: `cpu` (default) or `cuda` (builds with `--features
    /// cuda`; checked before anything is written).
    #[arg(long, default_value = "cpu")]
    pub device: diff_core::Device,
}

/// `mbmix eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run directory.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Episodes (default: the run's `eval_episodes`).
    #[arg(long)]
    pub episodes: Option<usize>,
    /// Seed of the evaluation episodes (default: the run's evaluation seed, as in
    /// `summary.json`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start every episode from the task's deterministic initial state (e.g. CartPole
    /// hanging straight down at rest) instead of its stochastic reset.
    #[arg(long)]
    pub deterministic_init: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `mbmix rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Task name.
    #[arg(long)]
    pub task: String,
    /// Actions `[steps, N, act_dim]`: a JSON nested array, or `.npy` (f32 or f64).
    #[arg(long, value_name = "FILE")]
    pub actions: PathBuf,
    /// Initial full simulator state `[N, state_dim]` as JSON (default: a seeded
    /// stochastic reset).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Seed of the reset when no --state is given.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the gradient of the summed reward w.r.t. actions and initial state.
    #[arg(long)]
    pub grad: bool,
    /// Output JSON file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `mbmix render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Run directory.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Output file: `.gif` (animation) or `.png` (a grid of frames). Default
    /// `DIR/render.gif`.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Checkpoint to draw (default: `DIR/checkpoints/latest.safetensors`).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Episodes, drawn one after the other.
    #[arg(long, default_value_t = 1)]
    pub episodes: usize,
    /// Steps per episode at most (default: the task's episode length).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Draw every K-th step (default: about 30 frames per simulated second for a GIF, 12
    /// frames for a PNG).
    #[arg(long, value_name = "K")]
    pub every: Option<usize>,
    /// Seed of the initial states (default: the run's evaluation seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start from the task's deterministic initial state instead of its stochastic reset.
    #[arg(long)]
    pub deterministic_init: bool,
    /// Frame width in pixels.
    #[arg(long, default_value_t = 480)]
    pub width: u32,
    /// Frame height in pixels.
    #[arg(long, default_value_t = 300)]
    pub height: u32,
    /// Projection: `side` (x right, y up) or `top` (seen from above).
    #[arg(long, value_enum, default_value_t = View::Side)]
    pub view: View,
    /// Keep the camera still instead of following the root link horizontally.
    #[arg(long)]
    pub fixed_camera: bool,
    /// Also write the drawn episodes' states and rewards (JSON) to this file.
    #[arg(long, value_name = "FILE.json")]
    pub states: Option<PathBuf>,
}

/// How a command ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Success,
    /// Training stopped by Ctrl-C after writing a checkpoint.
    Interrupted,
}

impl Exit {
    /// The process exit code: 0, or [`EXIT_INTERRUPTED`].
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

/// Runs a parsed command line, writing its report to `out`. `stop` is the Ctrl-C flag.
pub fn run(cli: Cli, stop: &AtomicBool, out: &mut dyn Write) -> Result<Exit> {
    let io = |e| Error::Io {
        action: "cannot write to",
        path: PathBuf::from("<stdout>"),
        cause: e,
    };
    match cli.command {
        Command::List => list(out).map_err(io)?,
        Command::Train(args) => return train(args, stop, out),
        Command::Eval(args) => {
            let report = run::evaluate_run(
                &args.run,
                args.episodes,
                args.seed,
                !args.deterministic_init,
            )?;
            if args.json {
                let json = serde_json::to_string_pretty(&report).map_err(|e| Error::Serialise {
                    path: PathBuf::from("<stdout>"),
                    reason: e.to_string(),
                })?;
                writeln!(out, "{json}").map_err(io)?;
            } else {
                writeln!(
                    out,
                    "{}: epoch {}, {} episodes ({}, seed {}): return {:.2} ± {:.2}, success rate {}",
                    args.run.display(),
                    report.epoch,
                    report.episodes,
                    if report.stochastic_init {
                        "stochastic initial states"
                    } else {
                        "deterministic initial state"
                    },
                    report.seed,
                    report.mean_return,
                    report.std_return,
                    fmt_rate(report.success_rate)
                )
                .map_err(io)?;
            }
        }
        Command::Rollout(args) => {
            let opts = RolloutOptions {
                task: args.task,
                actions: args.actions,
                state: args.state,
                seed: args.seed,
                grad: args.grad,
                out: args.out,
            };
            let result = rollout::run(&opts)?;
            let (steps, n) = result.rewards.dim();
            writeln!(
                out,
                "{}: {steps} steps × {n} envs, summed reward {:.4}{}",
                opts.out.display(),
                result.rewards.sum(),
                if opts.grad { ", with gradients" } else { "" }
            )
            .map_err(io)?;
        }
        Command::Render(args) => {
            let opts = RenderOptions {
                out: args.out,
                checkpoint: args.checkpoint,
                episodes: args.episodes,
                steps: args.steps,
                every: args.every,
                seed: args.seed,
                deterministic_init: args.deterministic_init,
                width: args.width,
                height: args.height,
                view: args.view,
                fixed_camera: args.fixed_camera,
                states_out: args.states,
                ..RenderOptions::new(args.run)
            };
            let report = render::render(&opts)?;
            let returns: Vec<String> = report.returns.iter().map(|r| format!("{r:.2}")).collect();
            writeln!(
                out,
                "{}: {} frames ({}×{} px) of {} at epoch {}, return {}",
                report.out.display(),
                report.frames,
                report.size.0,
                report.size.1,
                report.task,
                report.epoch,
                returns.join(", ")
            )
            .map_err(io)?;
        }
    }
    Ok(Exit::Success)
}

/// Checks that the simulators can run on `device`, before anything is created: without
/// the `cuda` feature, or without a usable GPU, `--device cuda` is an error naming why.
/// Which tasks have CUDA kernels is checked when the task is built
/// ([`crate::registry::make_task_on`]).
pub fn check_device(device: diff_core::Device) -> Result<()> {
    match device {
        diff_core::Device::Cpu => Ok(()),
        #[cfg(not(feature = "cuda"))]
        diff_core::Device::Cuda => Err(Error::Core(crate::registry::no_cuda_build())),
        #[cfg(feature = "cuda")]
        diff_core::Device::Cuda => {
            diff_core::cuda::Gpu::get()?;
            Ok(())
        }
    }
}

fn train(args: TrainArgs, stop: &AtomicBool, out: &mut dyn Write) -> Result<Exit> {
    check_device(args.device)?;
    let opts = TrainOptions {
        config: args.config,
        overrides: Overrides {
            task: args.task,
            algo: args.algo,
            seed: args.seed,
            epochs: args.epochs,
        },
        out: args.out,
        resume: args.resume,
        progress: !args.quiet,
        device: args.device,
    };
    let (dir, outcome) = run::train(&opts, stop)?;
    let io = |e| Error::Io {
        action: "cannot write to",
        path: PathBuf::from("<stdout>"),
        cause: e,
    };
    match outcome {
        TrainOutcome::Finished(summary) => {
            if !args.quiet {
                let e = &summary.final_eval;
                writeln!(
                    out,
                    "{}: {} epochs, {} env steps in {:.1} s ({:.0} steps/s); final eval return {:.2} ± {:.2} over {} episodes, success rate {}",
                    dir.display(),
                    summary.epochs,
                    summary.env_steps,
                    summary.wall_s,
                    summary.env_steps_per_s,
                    e.mean_return,
                    e.std_return,
                    e.episodes,
                    fmt_rate(e.success_rate)
                )
                .map_err(io)?;
            }
            Ok(Exit::Success)
        }
        TrainOutcome::Interrupted { epoch } => {
            writeln!(
                out,
                "{}: interrupted after epoch {epoch}; checkpoint written, continue with --resume",
                dir.display()
            )
            .map_err(io)?;
            Ok(Exit::Interrupted)
        }
    }
}

fn fmt_rate(rate: Option<f32>) -> String {
    rate.map_or_else(|| "n/a".to_string(), |r| format!("{:.0}%", 100.0 * r))
}

/// `mbmix list`.
fn list(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "tasks:")?;
    writeln!(
        out,
        "  {:<20} {:>5} {:>5} {:>5} {:>8}  description",
        "name", "state", "obs", "act", "episode"
    )?;
    for entry in TASKS {
        let task = match (entry.build)() {
            Ok(t) => t,
            Err(e) => {
                writeln!(out, "  {:<20} cannot be built: {e}", entry.name)?;
                continue;
            }
        };
        let spec = task.spec();
        writeln!(
            out,
            "  {:<20} {:>5} {:>5} {:>5} {:>8}  {}",
            entry.name,
            spec.state_dim,
            spec.obs_dim,
            spec.act_dim,
            spec.episode_length,
            entry.description
        )?;
    }
    writeln!(out, "algorithms:")?;
    for entry in ALGORITHMS {
        writeln!(out, "  {:<20} {}", entry.name, entry.description)?;
    }
    Ok(())
}

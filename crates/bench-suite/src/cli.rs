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
    /// Run benchmark suites (task × algorithm × seed jobs, in parallel, resumable) and
    /// write their reports; or write them as a Slurm job array.
    Bench(BenchArgs),
    /// Regenerate the reports of a bench directory (or of any directory of runs).
    Report(ReportArgs),
}

/// `mbmix bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Suites to run (repeat or comma-separate): diffrl, humanoid, daxbench.
    #[arg(long = "suite", value_delimiter = ',', default_value = "diffrl")]
    pub suites: Vec<String>,
    /// Only these tasks of the suites.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Algorithms (default: the suite's list for the budget, e.g. shac,mbmix for quick).
    #[arg(long, value_delimiter = ',')]
    pub algos: Vec<String>,
    /// Seeds per task and algorithm: 0..N (default 2 for quick and smoke, 5 for full).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// quick (minutes per job), full (the presets' paper-scale epochs) or smoke (a few
    /// tiny epochs that check the pipeline).
    #[arg(long, value_enum, default_value = "full")]
    pub budget: crate::bench::Budget,
    /// Override every job's epoch count.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// A TOML file merged over every job's configuration; its algorithm sections
    /// (`[shac]`, `[mbmix...]`, `[bptt]`, `[ppo]`) apply to that algorithm's jobs only.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Jobs run at the same time.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Bench directory (default `runs/bench-<budget>`). Rerunning with the same directory
    /// resumes: finished jobs are kept, started ones resume from their checkpoints.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Where the simulators run: cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: diff_core::Device,
    /// Write the jobs as a Slurm job array into DIR (a bench directory on a shared
    /// filesystem) instead of running them; `mbmix report DIR` merges the results.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub emit_slurm: Option<PathBuf>,
    /// CPUs per Slurm array task.
    #[arg(long, default_value_t = 2)]
    pub slurm_cpus: usize,
    /// Slurm array tasks running at once.
    #[arg(long)]
    pub slurm_parallel: Option<usize>,
    /// The mbmix executable of the jobs (default: this one).
    #[arg(long, value_name = "FILE")]
    pub mbmix: Option<PathBuf>,
    /// One line per job event instead of progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// `mbmix report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A bench directory (with `bench.json`), or a directory of run directories.
    pub dir: PathBuf,
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
        Command::Bench(args) => return bench(args, stop, out),
        Command::Report(args) => {
            let md = crate::bench::report::write_bench(&args.dir)?;
            writeln!(out, "{md}").map_err(io)?;
        }
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

/// `mbmix bench`: plans the jobs, then runs them (or writes the Slurm array), then writes
/// the reports. A failed job does not stop the others; it is listed in the report and
/// makes the command fail at the end.
fn bench(args: BenchArgs, stop: &AtomicBool, out: &mut dyn Write) -> Result<Exit> {
    use crate::bench::{self, runner, slurm};
    let io = |e| Error::Io {
        action: "cannot write to",
        path: PathBuf::from("<stdout>"),
        cause: e,
    };
    check_device(args.device)?;
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(Error::io("cannot read", path))?;
            Some(
                toml::from_str::<toml::Table>(&text).map_err(|e| Error::Config {
                    file: path.clone(),
                    reason: e.to_string(),
                })?,
            )
        }
        None => None,
    };
    let planned = bench::plan(&bench::PlanRequest {
        suites: args.suites.clone(),
        tasks: args.tasks.clone(),
        algos: args.algos.clone(),
        seeds: args.seeds,
        budget: args.budget,
        epochs: args.epochs,
        config,
    })?;
    let exe = match &args.mbmix {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(Error::io("cannot locate", std::path::Path::new("mbmix")))?,
    };
    let device = args.device.to_string();
    let dir = args
        .emit_slurm
        .clone()
        .or(args.out.clone())
        .unwrap_or_else(|| PathBuf::from(format!("runs/bench-{}", args.budget.name())));
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    runner::prepare(&dir, &planned)?;
    let jobs: Vec<bench::JobSpec> = planned.into_iter().map(|(j, _)| j).collect();
    if args.emit_slurm.is_some() {
        let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
        slurm::emit(
            &dir,
            &jobs,
            &slurm::SlurmOptions {
                exe: exe.to_string_lossy().into_owned(),
                device,
                cpus_per_task: args.slurm_cpus.max(1),
                max_parallel: args.slurm_parallel,
            },
        )?;
        writeln!(
            out,
            "{} jobs written to {}/slurm/bench.sbatch (table: slurm/jobs.tsv).\n\
             Submit: sbatch {}/slurm/bench.sbatch\nThen:   mbmix report {}",
            jobs.len(),
            dir.display(),
            dir.display(),
            dir.display()
        )
        .map_err(io)?;
        return Ok(Exit::Success);
    }
    eprintln!(
        "bench ({} budget): {} jobs into {}, {} at a time",
        args.budget.name(),
        jobs.len(),
        dir.display(),
        args.jobs
    );
    let outcomes = runner::run(
        &dir,
        &jobs,
        &runner::RunnerOptions {
            exe,
            jobs: args.jobs,
            device,
            progress: !args.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        },
        stop,
    )?;
    let md = bench::report::write_bench(&dir)?;
    writeln!(out, "{md}").map_err(io)?;
    eprintln!("reports written under {}", dir.display());
    let failed: Vec<String> = jobs
        .iter()
        .zip(&outcomes)
        .filter_map(|(j, o)| match o {
            runner::Outcome::Failed(e) => Some(format!("{}/{}: {e}", j.suite, j.name)),
            _ => None,
        })
        .collect();
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Exit::Interrupted);
    }
    if !failed.is_empty() {
        return Err(Error::Usage(format!(
            "{} job(s) failed (listed in the report):\n  {}",
            failed.len(),
            failed.join("\n  ")
        )));
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

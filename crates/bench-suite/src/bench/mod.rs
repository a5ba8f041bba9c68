//! Benchmark suites: which tasks, algorithms and budgets `mbmix bench` (and
//! `cargo xtask bench`) runs, and the plan of jobs they expand to.
//!
//! - A **suite** is a list of tasks with a default algorithm list and a per-task epoch
//!   count for the `quick` budget ([`SUITES`]).
//! - A **budget** turns a task's preset into a job's configuration ([`Budget::apply`]):
//!   `full` keeps the paper-scale preset, `quick` shortens it so that the default quick
//!   bench finishes in under 20 minutes on a 2-core machine, `smoke` is a few tiny epochs
//!   that only check the pipeline.
//! - A **job** is one (suite, task, algorithm, seed): one `mbmix train` run in its own
//!   directory, with its full configuration written to `configs/<job>.toml` beforehand.
//!
//! [`runner`] runs a plan (in parallel, resumable), [`slurm`] writes it as a Slurm job
//! array, and [`report`] turns the run directories into Markdown, JSON and plots.

pub mod report;
pub mod runner;
pub mod slurm;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::registry::{self, Algo};
use mbmix_policy::NetworkBackend;
use serde::{Deserialize, Serialize};

/// One task of a suite.
#[derive(Clone, Copy, Debug)]
pub struct SuiteTask {
    /// Registry name.
    pub task: &'static str,
    /// Epochs under the `quick` budget; `None`: the task is left out of quick benches
    /// (where a quick budget was measured not to show learning).
    pub quick_epochs: Option<usize>,
}

/// A named suite.
#[derive(Clone, Copy, Debug)]
pub struct Suite {
    pub name: &'static str,
    pub description: &'static str,
    pub tasks: &'static [SuiteTask],
    /// Algorithms run when `--algos` is not given, under the `full` budget.
    pub full_algos: &'static [&'static str],
    /// The same under the `quick` and `smoke` budgets.
    pub quick_algos: &'static [&'static str],
}

const fn t(task: &'static str, quick_epochs: Option<usize>) -> SuiteTask {
    SuiteTask { task, quick_epochs }
}

/// Every suite, in the order `--suite` lists them.
pub static SUITES: &[Suite] = &[
    Suite {
        name: "diffrl",
        description: "the DiffRL tasks (tasks.md §2)",
        tasks: &[
            t("cartpole-swingup", Some(150)),
            t("hopper", Some(60)),
            t("half-cheetah", Some(100)),
            t("ant", Some(100)),
            t("humanoid", None),
        ],
        full_algos: &["mbmix", "shac", "bptt", "ppo"],
        quick_algos: &["shac", "mbmix"],
    },
    Suite {
        name: "humanoid",
        description:
            "humanoid locomotion: DiffRL's Humanoid and the Bruce humanoid (tasks.md §2.6, §6)",
        tasks: &[t("humanoid", Some(100)), t("bruce-pos", Some(100))],
        full_algos: &["mbmix", "shac"],
        quick_algos: &["shac", "mbmix"],
    },
    Suite {
        name: "brax",
        description: "Brax-like tasks on sim-rigid with Brax's observations, rewards, termination and timesteps (tasks.md §5)",
        tasks: &[
            // brax-ant, brax-halfcheetah and brax-hopper did not learn in 60 quick epochs
            // (BENCHMARKS.md, "The quick budget on the other suites"): full budget only
            t("brax-ant", None),
            t("brax-halfcheetah", None),
            t("brax-hopper", None),
            t("brax-reacher", Some(60)),
            t("brax-humanoid", None),
        ],
        full_algos: &["mbmix", "shac", "bptt", "ppo"],
        quick_algos: &["shac", "mbmix"],
    },
    Suite {
        name: "daxbench",
        description: "the DaXBench-like deformable tasks (tasks.md §7)",
        tasks: &[
            // APG did not learn fold-cloth1 in 20 iterations (2.0 → 1.6): no quick task
            t("fold-cloth1", None),
            t("fold-cloth3", None),
            t("unfold-cloth1", None),
            t("unfold-cloth3", None),
            t("fold-tshirt", None),
            t("push-rope", None),
            t("whip-rope", None),
            t("pour-water", None),
        ],
        full_algos: &["apg"],
        quick_algos: &["apg"],
    },
];

/// The suite called `name`.
pub fn suite(name: &str) -> Result<&'static Suite> {
    SUITES.iter().find(|s| s.name == name).ok_or_else(|| {
        Error::Usage(format!(
            "unknown suite `{name}` (suites: {})",
            SUITES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// How much training each job gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// A few tiny epochs per job: checks the pipeline, learns nothing.
    Smoke,
    /// Minutes per job: each task's quick epoch count, 8 evaluation episodes.
    Quick,
    /// The presets' paper-scale epoch counts.
    Full,
}

impl Budget {
    pub fn name(self) -> &'static str {
        match self {
            Budget::Smoke => "smoke",
            Budget::Quick => "quick",
            Budget::Full => "full",
        }
    }

    /// Seeds per job when `--seeds` is not given.
    pub fn default_seeds(self) -> u64 {
        match self {
            Budget::Smoke | Budget::Quick => 2,
            Budget::Full => 5,
        }
    }

    /// Whether `task` of a suite runs under this budget.
    pub fn includes(self, task: &SuiteTask) -> bool {
        self != Budget::Quick || task.quick_epochs.is_some()
    }

    /// The configuration of one job: the preset of (task, algorithm), changed by the
    /// budget. Every budget uses the hand-written ("fused") network path, which computes
    /// the same networks as dfdx's tape, about 2.4× faster on CPU.
    pub fn apply(self, task: &SuiteTask, algo: &str, seed: u64) -> Result<RunConfig> {
        let mut cfg = RunConfig::preset(task.task, algo, seed)?;
        let epochs = match self {
            Budget::Full => None,
            Budget::Quick => task.quick_epochs,
            Budget::Smoke => Some(2),
        };
        let small = self == Budget::Smoke;
        if let Some(s) = cfg.shac.as_mut() {
            tune_shac(s, epochs, small);
        }
        if let Some(m) = cfg.mbmix.as_mut() {
            tune_shac(&mut m.shac, epochs, small);
            if small {
                m.rollout.model_warmup_epochs = 1;
                m.diagnostics.every = 1;
                m.diagnostics.model_error_samples = m.diagnostics.model_error_samples.min(8);
            } else if let Some(e) = epochs {
                // keep the model's warm-up a small share of a shortened run
                m.rollout.model_warmup_epochs = m.rollout.model_warmup_epochs.min(e / 5);
            }
        }
        if let Some(b) = cfg.bptt.as_mut() {
            b.network_backend = NetworkBackend::Fused;
            if let Some(e) = epochs {
                b.max_epochs = e;
            }
            if small {
                b.num_envs = b.num_envs.min(4);
                b.horizon = b.horizon.min(8);
            }
        }
        if let Some(p) = cfg.ppo.as_mut() {
            p.network_backend = NetworkBackend::Fused;
            if let Some(e) = epochs {
                p.max_epochs = e;
            }
            if small {
                p.num_envs = p.num_envs.min(8);
                p.horizon = p.horizon.min(8);
                p.num_minibatches = p.num_minibatches.min(2);
            }
        }
        match self {
            Budget::Full => {}
            Budget::Quick => {
                cfg.eval_episodes = 8;
                cfg.checkpoint_every = 20;
            }
            Budget::Smoke => {
                cfg.eval_every = 1;
                cfg.eval_episodes = 2;
                cfg.checkpoint_every = 1;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn tune_shac(s: &mut mbmix_policy::ShacConfig, epochs: Option<usize>, small: bool) {
    s.network_backend = NetworkBackend::Fused;
    if let Some(e) = epochs {
        s.max_epochs = e;
    }
    if small {
        s.num_envs = s.num_envs.min(8);
        s.horizon = s.horizon.min(8);
        s.critic_batches = s.critic_batches.min(2);
    }
}

/// One job of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub suite: String,
    pub task: String,
    pub algo: String,
    pub seed: u64,
    /// `<task>-<algo>-s<seed>`; unique within a suite.
    pub name: String,
    /// Run directory, relative to the bench directory: `<suite>/<name>`.
    pub dir: String,
    /// Configuration file, relative to the bench directory: `configs/<suite>/<name>.toml`.
    pub config: String,
    /// Epochs the job trains (for progress).
    pub epochs: usize,
}

/// What to run: suites, algorithms, seeds and a budget.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    pub suites: Vec<String>,
    /// Only these tasks of the suites (all when empty).
    pub tasks: Vec<String>,
    /// Algorithms (the suites' defaults for the budget when empty).
    pub algos: Vec<String>,
    pub seeds: Option<u64>,
    pub budget: Budget,
    /// Overrides the budget's epoch count of every job.
    pub epochs: Option<usize>,
    /// A TOML table merged over every job's configuration (sections of algorithms other
    /// than the job's are skipped).
    pub config: Option<toml::Table>,
}

/// Expands a request into jobs and their configurations.
pub fn plan(req: &PlanRequest) -> Result<Vec<(JobSpec, RunConfig)>> {
    if req.suites.is_empty() {
        return Err(Error::Usage("no suite given".into()));
    }
    let seeds = req.seeds.unwrap_or(req.budget.default_seeds());
    if seeds == 0 {
        return Err(Error::Usage("--seeds must be at least 1".into()));
    }
    for a in &req.algos {
        registry::algorithm(a)?;
    }
    for task in &req.tasks {
        if !req
            .suites
            .iter()
            .filter_map(|s| suite(s).ok())
            .any(|s| s.tasks.iter().any(|t| t.task == task))
        {
            return Err(Error::Usage(format!(
                "task `{task}` is in none of the suites {}",
                req.suites.join(", ")
            )));
        }
    }
    let mut jobs = Vec::new();
    for name in &req.suites {
        let s = suite(name)?;
        let algos: Vec<String> = if req.algos.is_empty() {
            let d = if req.budget == Budget::Full {
                s.full_algos
            } else {
                s.quick_algos
            };
            d.iter().map(|a| a.to_string()).collect()
        } else {
            req.algos.clone()
        };
        for task in s.tasks {
            if !req.budget.includes(task) && !req.tasks.iter().any(|t| t == task.task) {
                continue;
            }
            if !req.tasks.is_empty() && !req.tasks.iter().any(|t| t == task.task) {
                continue;
            }
            for algo in &algos {
                for seed in 0..seeds {
                    let mut cfg = req.budget.apply(task, algo, seed)?;
                    if let Some(user) = &req.config {
                        cfg = merge_user(cfg, user)?;
                    }
                    if let Some(e) = req.epochs {
                        set_epochs(&mut cfg, e);
                    }
                    cfg.validate()?;
                    let job = format!("{}-{algo}-s{seed}", task.task);
                    jobs.push((
                        JobSpec {
                            suite: s.name.to_string(),
                            task: task.task.to_string(),
                            algo: algo.clone(),
                            seed,
                            dir: format!("{}/{job}", s.name),
                            config: format!("configs/{}/{job}.toml", s.name),
                            epochs: epochs_of(&cfg),
                            name: job,
                        },
                        cfg,
                    ));
                }
            }
        }
    }
    if jobs.is_empty() {
        return Err(Error::Usage(format!(
            "the {} budget runs no task of suite(s) {} with these filters",
            req.budget.name(),
            req.suites.join(", ")
        )));
    }
    Ok(jobs)
}

/// The algorithm's epoch count.
pub fn epochs_of(cfg: &RunConfig) -> usize {
    cfg.shac
        .as_ref()
        .map(|s| s.max_epochs)
        .or(cfg.mbmix.as_ref().map(|m| m.shac.max_epochs))
        .or(cfg.bptt.as_ref().map(|b| b.max_epochs))
        .or(cfg.ppo.as_ref().map(|p| p.max_epochs))
        .unwrap_or(0)
}

fn set_epochs(cfg: &mut RunConfig, e: usize) {
    if let Some(s) = cfg.shac.as_mut() {
        s.max_epochs = e;
    }
    if let Some(m) = cfg.mbmix.as_mut() {
        m.shac.max_epochs = e;
    }
    if let Some(b) = cfg.bptt.as_mut() {
        b.max_epochs = e;
    }
    if let Some(p) = cfg.ppo.as_mut() {
        p.max_epochs = e;
    }
}

/// Merges a user table over a job's configuration. The algorithm sections (`shac`,
/// `mbmix`, `bptt`, `ppo`) apply only to the jobs whose configuration has that section,
/// so one file can tune every algorithm of a bench.
fn merge_user(cfg: RunConfig, user: &toml::Table) -> Result<RunConfig> {
    let bad = |reason: String| Error::Usage(format!("bench --config: {reason}"));
    let mut base = toml::Table::try_from(&cfg).map_err(|e| bad(e.to_string()))?;
    let mut user = user.clone();
    for key in ["task", "algo", "seed"] {
        if user.remove(key).is_some() {
            return Err(bad(format!(
                "`{key}` is set by the bench and cannot come from --config"
            )));
        }
    }
    for section in ["shac", "mbmix", "bptt", "ppo"] {
        if !base.contains_key(section) {
            user.remove(section);
        }
    }
    crate::config::merge(&mut base, user);
    let text = toml::to_string(&base).map_err(|e| bad(e.to_string()))?;
    toml::from_str::<RunConfig>(&text).map_err(|e| bad(e.to_string()))
}

/// Whether the algorithm is one that `Algo` knows (used in messages).
pub fn algo_kind(name: &str) -> Option<Algo> {
    registry::algorithm(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(budget: Budget) -> PlanRequest {
        PlanRequest {
            suites: vec!["diffrl".into()],
            tasks: vec![],
            algos: vec![],
            seeds: None,
            budget,
            epochs: None,
            config: None,
        }
    }

    #[test]
    fn every_suite_task_and_default_algorithm_exists() {
        for s in SUITES {
            for t in s.tasks {
                registry::task_entry(t.task).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            }
            for a in s.full_algos.iter().chain(s.quick_algos) {
                registry::algorithm(a).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            }
        }
    }

    #[test]
    fn quick_plan_uses_the_quick_epochs_and_leaves_out_tasks_without_them() {
        let jobs = plan(&req(Budget::Quick)).expect("plan");
        assert!(jobs.iter().all(|(j, _)| j.task != "humanoid"));
        let (j, c) = jobs
            .iter()
            .find(|(j, _)| j.task == "hopper" && j.algo == "mbmix")
            .expect("hopper mbmix");
        assert_eq!(j.epochs, 60);
        assert_eq!(c.mbmix.as_ref().map(|m| m.shac.max_epochs), Some(60));
        assert_eq!(j.dir, "diffrl/hopper-mbmix-s0");
        assert_eq!(jobs.len(), 4 * 2 * 2);
    }

    #[test]
    fn full_plan_keeps_the_presets() {
        let jobs = plan(&req(Budget::Full)).expect("plan");
        let (_, c) = jobs
            .iter()
            .find(|(j, _)| j.task == "ant" && j.algo == "shac")
            .expect("ant shac");
        let preset = RunConfig::preset("ant", "shac", 0).expect("preset");
        assert_eq!(
            c.shac.as_ref().map(|s| s.max_epochs),
            preset.shac.as_ref().map(|s| s.max_epochs)
        );
        assert_eq!(jobs.len(), 5 * 4 * 5);
    }

    #[test]
    fn user_config_sections_apply_to_their_algorithm_only() {
        let mut r = req(Budget::Smoke);
        r.tasks = vec!["cartpole-swingup".into()];
        r.algos = vec!["shac".into(), "ppo".into()];
        r.config = Some(toml::from_str("eval_episodes = 3\n[shac]\nhorizon = 4\n").unwrap());
        let jobs = plan(&r).expect("plan");
        for (j, c) in &jobs {
            assert_eq!(c.eval_episodes, 3);
            if j.algo == "shac" {
                assert_eq!(c.shac.as_ref().map(|s| s.horizon), Some(4));
            }
        }
        r.config = Some(toml::from_str("seed = 3\n").unwrap());
        assert!(plan(&r).is_err());
    }

    #[test]
    fn bad_requests_are_usage_errors() {
        let mut r = req(Budget::Quick);
        r.suites = vec!["nope".into()];
        assert!(plan(&r).unwrap_err().to_string().contains("unknown suite"));
        let mut r = req(Budget::Quick);
        r.tasks = vec!["push-rope".into()];
        assert!(plan(&r)
            .unwrap_err()
            .to_string()
            .contains("none of the suites"));
        let mut r = req(Budget::Quick);
        r.seeds = Some(0);
        assert!(plan(&r).is_err());
        let mut r = req(Budget::Quick);
        r.algos = vec!["sac".into()];
        assert!(plan(&r).is_err());
    }
}

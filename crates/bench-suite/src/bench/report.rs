//! Bench reports: from run directories to Markdown, JSON and learning-curve plots.
//!
//! For each suite of a bench directory, `<suite>/report.md` and `<suite>/report.json`
//! give per task and algorithm (over seeds): the final and best evaluation returns, the
//! environment steps and wall time each run took to reach SHAC's final return, the
//! gradient-variance diagnostics of MB-MIX runs, and a comparison with the reference
//! numbers of `datasets/reference/results.toml`; every job that did not finish is listed
//! with its error. `<suite>/curves_steps.{svg,png}` and `<suite>/curves_wall.{svg,png}`
//! plot the evaluation return against env steps and wall time, mean ± std over seeds, one
//! panel per task. `report.md` at the top joins the suites' reports.

use super::runner::{log_rel, status_path, JobStatus, Manifest};
use super::JobSpec;
use crate::error::{Error, Result};
use crate::run::{read_metrics, write_atomic, Summary, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The reference numbers shipped with the workspace.
const REFERENCE_TOML: &str = include_str!("../../../../datasets/reference/results.toml");

/// One point of a learning curve.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct CurvePoint {
    pub epoch: usize,
    pub env_steps: u64,
    pub wall_s: f64,
    pub eval_return: f64,
}

/// A finished run.
#[derive(Clone, Debug, Serialize)]
pub struct RunData {
    pub task: String,
    pub algo: String,
    pub seed: u64,
    pub dir: PathBuf,
    pub epochs: usize,
    pub env_steps: u64,
    pub wall_s: f64,
    pub env_steps_per_s: f64,
    pub initial_return: Option<f64>,
    /// The final evaluation's mean return and its spread over episodes.
    pub final_return: f64,
    pub final_return_std: f64,
    pub success_rate: Option<f64>,
    /// The best evaluation return over training (the final evaluation included).
    pub best_return: f64,
    /// Diagnostic epochs with `grad_var_mix ≤ grad_var_shac`, of `var_epochs`.
    pub var_mix_le_shac: usize,
    pub var_epochs: usize,
    /// Median over diagnostic epochs of `grad_var_mix / grad_var_shac`.
    pub var_ratio_median: Option<f64>,
    /// Medians over diagnostic epochs of the model's held-out errors.
    pub model_next_state_err: Option<f64>,
    pub model_jacobian_err: Option<f64>,
    #[serde(skip)]
    pub curve: Vec<CurvePoint>,
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    })
}

impl RunData {
    /// Reads a finished run directory (`summary.json` and `metrics.jsonl`).
    pub fn load(dir: &Path) -> Result<RunData> {
        let path = dir.join(SUMMARY_FILE);
        let text = std::fs::read_to_string(&path).map_err(Error::io("cannot read", &path))?;
        let s: Summary = serde_json::from_str(&text).map_err(|e| Error::BadInput {
            path: path.clone(),
            reason: format!("not a run summary: {e}"),
        })?;
        let metrics = read_metrics(&dir.join(METRICS_FILE))?;
        let curve: Vec<CurvePoint> = metrics
            .iter()
            .filter_map(|m| {
                m.eval_return.map(|r| CurvePoint {
                    epoch: m.epoch,
                    env_steps: m.env_steps,
                    wall_s: m.wall_s,
                    eval_return: f64::from(r),
                })
            })
            .filter(|p| p.eval_return.is_finite())
            .collect();
        let pairs: Vec<(f64, f64)> = metrics
            .iter()
            .filter_map(|m| Some((m.grad_var_mix?, m.grad_var_shac?)))
            .collect();
        let final_return = f64::from(s.final_eval.mean_return);
        let best_return = curve
            .iter()
            .map(|p| p.eval_return)
            .chain(std::iter::once(final_return))
            .fold(f64::NEG_INFINITY, f64::max);
        Ok(RunData {
            task: s.task,
            algo: s.algo,
            seed: s.seed,
            dir: dir.to_path_buf(),
            epochs: s.epochs,
            env_steps: s.env_steps,
            wall_s: s.wall_s,
            env_steps_per_s: s.env_steps_per_s,
            initial_return: s.initial_eval_return.map(f64::from),
            final_return,
            final_return_std: f64::from(s.final_eval.std_return),
            success_rate: s.final_eval.success_rate.map(f64::from),
            best_return,
            var_mix_le_shac: pairs.iter().filter(|(m, s)| m <= s).count(),
            var_epochs: pairs.len(),
            var_ratio_median: median(pairs.iter().map(|(m, s)| m / s).collect()),
            model_next_state_err: median(
                metrics
                    .iter()
                    .filter_map(|m| m.model_next_state_err)
                    .collect(),
            ),
            model_jacobian_err: median(
                metrics
                    .iter()
                    .filter_map(|m| m.model_jacobian_err)
                    .collect(),
            ),
            curve,
        })
    }

    /// The first evaluation at which the run reached `target`: (env steps, wall seconds).
    pub fn reached(&self, target: f64) -> Option<(u64, f64)> {
        self.curve
            .iter()
            .find(|p| p.eval_return >= target)
            .map(|p| (p.env_steps, p.wall_s))
    }
}

/// A job that did not produce a finished run.
#[derive(Clone, Debug, Serialize)]
pub struct FailedJob {
    pub name: String,
    pub task: String,
    pub algo: String,
    pub seed: u64,
    /// `failed`, `interrupted` or `not finished`.
    pub state: String,
    pub error: String,
    pub log: Option<String>,
}

/// One reference number with its source.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub task: String,
    pub algo: String,
    /// `final_eval` or `max_train`.
    pub metric: String,
    pub mean: f64,
    #[serde(default)]
    pub std: Option<f64>,
    pub seeds: usize,
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceFile {
    result: Vec<Reference>,
}

/// The reference numbers of `datasets/reference/results.toml` (compiled in).
pub fn references() -> Result<Vec<Reference>> {
    let file: ReferenceFile = toml::from_str(REFERENCE_TOML).map_err(|e| Error::BadInput {
        path: PathBuf::from("datasets/reference/results.toml"),
        reason: e.to_string(),
    })?;
    for r in &file.result {
        if r.metric != "final_eval" && r.metric != "max_train" {
            return Err(Error::BadInput {
                path: PathBuf::from("datasets/reference/results.toml"),
                reason: format!("{}/{}: unknown metric `{}`", r.task, r.algo, r.metric),
            });
        }
    }
    Ok(file.result)
}

/// Our number against a reference one.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceComparison {
    #[serde(flatten)]
    pub reference: Reference,
    /// Our mean over seeds of the matching metric (final or best evaluation return).
    pub ours: f64,
}

/// Steps and wall time to reach a target return.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ToTarget {
    /// SHAC's mean final evaluation return in this suite.
    pub target: f64,
    /// Seeds that reached it, of `seeds`.
    pub reached: usize,
    pub seeds: usize,
    /// Means over the seeds that reached it.
    pub env_steps_mean: Option<f64>,
    pub wall_s_mean: Option<f64>,
}

/// Aggregate over the seeds of one (task, algorithm).
#[derive(Clone, Debug, Serialize)]
pub struct GroupRow {
    pub task: String,
    pub algo: String,
    pub seeds: Vec<u64>,
    pub final_return_mean: f64,
    /// Population std over seeds.
    pub final_return_std: f64,
    pub best_return_mean: f64,
    pub best_return_std: f64,
    pub initial_return_mean: Option<f64>,
    pub success_rate: Option<f64>,
    pub env_steps_mean: f64,
    pub wall_s_mean: f64,
    pub env_steps_per_s_mean: f64,
    /// Reaching SHAC's final return (absent when the suite has no SHAC run of the task).
    pub to_shac_final: Option<ToTarget>,
    /// Diagnostic epochs with var_mix ≤ var_shac, summed over seeds (MB-MIX only).
    pub var_mix_le_shac: Option<(usize, usize)>,
    pub var_ratio_median: Option<f64>,
    pub model_next_state_err: Option<f64>,
    pub model_jacobian_err: Option<f64>,
    pub references: Vec<ReferenceComparison>,
}

/// Mean and population standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The report of one suite.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteReport {
    pub suite: String,
    pub date_utc: String,
    pub git_commit: Option<String>,
    pub cpus: usize,
    pub os: String,
    pub groups: Vec<GroupRow>,
    pub runs: Vec<RunData>,
    pub failed: Vec<FailedJob>,
}

impl SuiteReport {
    /// Aggregates finished runs (in the order of their first appearance) and lists the
    /// failed jobs.
    pub fn new(suite: &str, runs: Vec<RunData>, failed: Vec<FailedJob>) -> Result<SuiteReport> {
        let refs = references()?;
        let mut keys: Vec<(String, String)> = Vec::new();
        for r in &runs {
            let k = (r.task.clone(), r.algo.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let shac_final = |task: &str| {
            let xs: Vec<f64> = runs
                .iter()
                .filter(|r| r.task == task && r.algo == "shac")
                .map(|r| r.final_return)
                .collect();
            (!xs.is_empty()).then(|| mean_std(&xs).0)
        };
        let mut groups = Vec::new();
        for (task, algo) in keys {
            let same: Vec<&RunData> = runs
                .iter()
                .filter(|r| r.task == task && r.algo == algo)
                .collect();
            let pick = |f: &dyn Fn(&RunData) -> f64| same.iter().map(|r| f(r)).collect::<Vec<_>>();
            let (final_return_mean, final_return_std) = mean_std(&pick(&|r| r.final_return));
            let (best_return_mean, best_return_std) = mean_std(&pick(&|r| r.best_return));
            let initial: Vec<f64> = same.iter().filter_map(|r| r.initial_return).collect();
            let rates: Vec<f64> = same.iter().filter_map(|r| r.success_rate).collect();
            let to_shac_final = shac_final(&task).map(|target| {
                let hits: Vec<(u64, f64)> = same.iter().filter_map(|r| r.reached(target)).collect();
                let steps: Vec<f64> = hits.iter().map(|h| h.0 as f64).collect();
                let wall: Vec<f64> = hits.iter().map(|h| h.1).collect();
                ToTarget {
                    target,
                    reached: hits.len(),
                    seeds: same.len(),
                    env_steps_mean: (!hits.is_empty()).then(|| mean_std(&steps).0),
                    wall_s_mean: (!hits.is_empty()).then(|| mean_std(&wall).0),
                }
            });
            let var_n: usize = same.iter().map(|r| r.var_epochs).sum();
            let var_le: usize = same.iter().map(|r| r.var_mix_le_shac).sum();
            let med = |f: &dyn Fn(&RunData) -> Option<f64>| {
                median(same.iter().filter_map(|r| f(r)).collect())
            };
            let references = refs
                .iter()
                .filter(|x| x.task == task && x.algo == algo)
                .map(|x| ReferenceComparison {
                    reference: x.clone(),
                    ours: if x.metric == "max_train" {
                        best_return_mean
                    } else {
                        final_return_mean
                    },
                })
                .collect();
            groups.push(GroupRow {
                seeds: same.iter().map(|r| r.seed).collect(),
                final_return_mean,
                final_return_std,
                best_return_mean,
                best_return_std,
                initial_return_mean: (initial.len() == same.len()).then(|| mean_std(&initial).0),
                success_rate: (rates.len() == same.len()).then(|| mean_std(&rates).0),
                env_steps_mean: mean_std(&pick(&|r| r.env_steps as f64)).0,
                wall_s_mean: mean_std(&pick(&|r| r.wall_s)).0,
                env_steps_per_s_mean: mean_std(&pick(&|r| r.env_steps_per_s)).0,
                to_shac_final,
                var_mix_le_shac: (var_n > 0).then_some((var_le, var_n)),
                var_ratio_median: med(&|r| r.var_ratio_median),
                model_next_state_err: med(&|r| r.model_next_state_err),
                model_jacobian_err: med(&|r| r.model_jacobian_err),
                references,
                task,
                algo,
            });
        }
        Ok(SuiteReport {
            suite: suite.to_string(),
            date_utc: utc_now(),
            git_commit: git_commit(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            groups,
            runs,
            failed,
        })
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let f1 = |x: f64| format!("{x:.1}");
        let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or_else(|| "–".into(), f);
        let mut s = format!(
            "## Suite `{}` ({}, commit {}, {} CPUs, {})\n\n",
            self.suite,
            self.date_utc,
            self.git_commit.as_deref().unwrap_or("unknown"),
            self.cpus,
            self.os
        );
        s.push_str(
            "Returns are deterministic evaluations of the policy, mean ± std over seeds. \
             \"Best\" is the best evaluation over training; \"to SHAC's final\" is the first \
             evaluation at or above SHAC's mean final return on the task (seeds that reached \
             it, and their mean env steps and wall time).\n\n",
        );
        s.push_str(
            "| task | algo | seeds | initial | final eval return | best eval return | success | env steps | wall per run (s) | env steps/s | to SHAC's final: seeds, steps, wall (s) | var_mix ≤ var_shac (median ratio) |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for g in &self.groups {
            let to = g.to_shac_final.as_ref().map_or_else(
                || "no SHAC run".to_string(),
                |t| {
                    format!(
                        "{}/{}, {}, {}",
                        t.reached,
                        t.seeds,
                        opt(t.env_steps_mean, &|x| format!("{x:.0}")),
                        opt(t.wall_s_mean, &f1)
                    )
                },
            );
            let var = g.var_mix_le_shac.map_or_else(
                || "–".into(),
                |(le, n)| {
                    format!(
                        "{le}/{n} ({})",
                        opt(g.var_ratio_median, &|x| format!("{x:.2}"))
                    )
                },
            );
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} ± {:.1} | {:.1} ± {:.1} | {} | {:.0} | {:.1} | {:.0} | {} | {} |\n",
                g.task,
                g.algo,
                g.seeds.len(),
                opt(g.initial_return_mean, &f1),
                g.final_return_mean,
                g.final_return_std,
                g.best_return_mean,
                g.best_return_std,
                opt(g.success_rate, &|r| format!("{:.0}%", 100.0 * r)),
                g.env_steps_mean,
                g.wall_s_mean,
                g.env_steps_per_s_mean,
                to,
                var
            ));
        }
        let model: Vec<&GroupRow> = self
            .groups
            .iter()
            .filter(|g| g.model_next_state_err.is_some() || g.model_jacobian_err.is_some())
            .collect();
        if !model.is_empty() {
            s.push_str(
                "\nModel diagnostics (medians over diagnostic epochs and seeds of the held-out relative errors):\n\n\
                 | task | algo | next-state error | Jacobian error |\n|---|---|---|---|\n",
            );
            for g in model {
                s.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    g.task,
                    g.algo,
                    opt(g.model_next_state_err, &|x| format!("{x:.3}")),
                    opt(g.model_jacobian_err, &|x| format!("{x:.3}"))
                ));
            }
        }
        s.push_str("\n### Against the reference numbers (`datasets/reference/results.toml`)\n\n");
        let refs: Vec<(&GroupRow, &ReferenceComparison)> = self
            .groups
            .iter()
            .flat_map(|g| g.references.iter().map(move |r| (g, r)))
            .collect();
        if refs.is_empty() {
            s.push_str("No reference number matches a task and algorithm of this suite.\n");
        } else {
            s.push_str(
                "| task | algo | metric | ours | reference | ours − reference | ours / reference | source |\n|---|---|---|---|---|---|---|---|\n",
            );
            for (g, r) in refs {
                let x = &r.reference;
                s.push_str(&format!(
                    "| {} | {} | {} | {:.1} | {:.1}{} ({} seeds) | {:+.1} | {} | {} |\n",
                    g.task,
                    g.algo,
                    if x.metric == "max_train" {
                        "best over training"
                    } else {
                        "final evaluation"
                    },
                    r.ours,
                    x.mean,
                    x.std.map_or_else(String::new, |sd| format!(" ± {sd:.1}")),
                    x.seeds,
                    r.ours - x.mean,
                    // a ratio only means something between positive returns
                    if r.ours > 0.0 && x.mean > 0.0 {
                        format!("{:.2}", r.ours / x.mean)
                    } else {
                        "–".into()
                    },
                    x.source
                ));
            }
        }
        s.push_str("\n### Jobs that did not finish\n\n");
        if self.failed.is_empty() {
            s.push_str("None.\n");
        } else {
            s.push_str("| job | state | error | log |\n|---|---|---|---|\n");
            for f in &self.failed {
                s.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    f.name,
                    f.state,
                    f.error.replace('|', "\\|"),
                    f.log.as_deref().unwrap_or("–")
                ));
            }
        }
        s.push_str(
            "\n### Per run\n\n| task | algo | seed | epochs | env steps | final eval return | best | wall (s) | env steps/s |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.runs {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1} ± {:.1} | {:.1} | {:.1} | {:.0} |\n",
                r.task,
                r.algo,
                r.seed,
                r.epochs,
                r.env_steps,
                r.final_return,
                r.final_return_std,
                r.best_return,
                r.wall_s,
                r.env_steps_per_s
            ));
        }
        s.push_str(
            "\nLearning curves (mean ± std over seeds): `curves_steps.svg` / `.png` against env steps, \
             `curves_wall.svg` / `.png` against wall time.\n\n![against env steps](curves_steps.svg)\n",
        );
        s
    }

    /// Writes `report.md`, `report.json` and the four plot files into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create", dir))?;
        write_atomic(&dir.join("report.md"), self.markdown().as_bytes())?;
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Serialise {
            path: dir.join("report.json"),
            reason: e.to_string(),
        })?;
        write_atomic(&dir.join("report.json"), json.as_bytes())?;
        for axis in [Axis::Steps, Axis::Wall] {
            let svg_path = dir.join(format!("curves_{}.svg", axis.name()));
            let svg = self.plot(axis).map_err(|reason| Error::Plot {
                path: svg_path.clone(),
                reason,
            })?;
            write_atomic(&svg_path, svg.as_bytes())?;
            let png_path = svg_path.with_extension("png");
            let png = svg_to_png(&svg).map_err(|reason| Error::Plot {
                path: png_path.clone(),
                reason,
            })?;
            write_atomic(&png_path, &png)?;
        }
        Ok(())
    }

    /// One panel per task; per algorithm the mean evaluation return over seeds with a
    /// band of ± one std over seeds (curves interpolated on a common grid up to the
    /// shortest seed's end).
    pub fn plot(&self, axis: Axis) -> std::result::Result<String, String> {
        let mut tasks: Vec<&str> = Vec::new();
        for g in &self.groups {
            if !tasks.contains(&g.task.as_str()) {
                tasks.push(&g.task);
            }
        }
        let mut algos: Vec<&str> = Vec::new();
        for g in &self.groups {
            if !algos.contains(&g.algo.as_str()) {
                algos.push(&g.algo);
            }
        }
        let cols = tasks.len().clamp(1, 3);
        let rows = tasks.len().div_ceil(cols).max(1);
        let (w, h) = (520 * cols as u32, 400 * rows as u32);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            let e = |e: &dyn std::fmt::Display| e.to_string();
            root.fill(&WHITE).map_err(|x| e(&x))?;
            let panels = root.split_evenly((rows, cols));
            for (area, task) in panels.iter().zip(&tasks) {
                let bands: Vec<(usize, Band)> = algos
                    .iter()
                    .enumerate()
                    .filter_map(|(i, algo)| {
                        let curves: Vec<Vec<(f64, f64)>> = self
                            .runs
                            .iter()
                            .filter(|r| r.task == *task && r.algo == *algo)
                            .map(|r| r.curve.iter().map(|p| (axis.x(p), p.eval_return)).collect())
                            .collect();
                        band(&curves).map(|b| (i, b))
                    })
                    .collect();
                let (xr, yr) = crate::plot::ranges(bands.iter().flat_map(|(_, b)| {
                    b.iter().flat_map(|&(x, m, sd)| [(x, m - sd), (x, m + sd)])
                }));
                let mut chart = ChartBuilder::on(area)
                    .caption(*task, ("sans-serif", 20))
                    .margin(10)
                    .x_label_area_size(36)
                    .y_label_area_size(60)
                    .build_cartesian_2d(xr, yr)
                    .map_err(|x| e(&x))?;
                chart
                    .configure_mesh()
                    .x_desc(axis.label())
                    .y_desc("eval return")
                    .x_labels(5)
                    .x_label_formatter(&|x| compact(*x))
                    .draw()
                    .map_err(|x| e(&x))?;
                for (i, b) in &bands {
                    let color = Palette99::pick(*i).to_rgba();
                    let poly: Vec<(f64, f64)> = b
                        .iter()
                        .map(|&(x, m, sd)| (x, m + sd))
                        .chain(b.iter().rev().map(|&(x, m, sd)| (x, m - sd)))
                        .collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled())))
                        .map_err(|x| e(&x))?;
                    chart
                        .draw_series(LineSeries::new(
                            b.iter().map(|&(x, m, _)| (x, m)),
                            color.stroke_width(2),
                        ))
                        .map_err(|x| e(&x))?
                        .label(algos[*i])
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                }
                if !bands.is_empty() {
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK)
                        .position(SeriesLabelPosition::LowerRight)
                        .draw()
                        .map_err(|x| e(&x))?;
                }
            }
            root.present().map_err(|x| e(&x))?;
        }
        Ok(svg)
    }
}

/// The x axis of a learning-curve plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    Steps,
    Wall,
}

impl Axis {
    fn name(self) -> &'static str {
        match self {
            Axis::Steps => "steps",
            Axis::Wall => "wall",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Axis::Steps => "env steps",
            Axis::Wall => "wall time (s)",
        }
    }
    fn x(self, p: &CurvePoint) -> f64 {
        match self {
            Axis::Steps => p.env_steps as f64,
            Axis::Wall => p.wall_s,
        }
    }
}

fn compact(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// (x, mean, std) over seeds.
type Band = Vec<(f64, f64, f64)>;

/// Mean ± std over curves, linearly interpolated on 60 points from the largest first x
/// to the smallest last x (the range every curve covers); one curve gives std 0.
pub fn band(curves: &[Vec<(f64, f64)>]) -> Option<Band> {
    let curves: Vec<&Vec<(f64, f64)>> = curves.iter().filter(|c| !c.is_empty()).collect();
    if curves.is_empty() {
        return None;
    }
    let x0 = curves.iter().map(|c| c[0].0).fold(f64::MIN, f64::max);
    let x1 = curves
        .iter()
        .map(|c| c[c.len() - 1].0)
        .fold(f64::MAX, f64::min);
    if x1 < x0 {
        return None;
    }
    let n = if x1 > x0 { 60 } else { 1 };
    Some(
        (0..n)
            .map(|k| {
                let x = if n == 1 {
                    x0
                } else {
                    x0 + (x1 - x0) * k as f64 / (n - 1) as f64
                };
                let ys: Vec<f64> = curves.iter().map(|c| interp(c, x)).collect();
                let (m, sd) = mean_std(&ys);
                (x, m, sd)
            })
            .collect(),
    )
}

fn interp(c: &[(f64, f64)], x: f64) -> f64 {
    let i = c.partition_point(|p| p.0 < x);
    if i == 0 {
        return c[0].1;
    }
    if i >= c.len() {
        return c[c.len() - 1].1;
    }
    let (xa, ya) = c[i - 1];
    let (xb, yb) = c[i];
    if xb <= xa {
        yb
    } else {
        ya + (yb - ya) * (x - xa) / (xb - xa)
    }
}

/// Rasterises an SVG (text with the system's fonts; without any, the PNG has no text).
pub fn svg_to_png(svg: &str) -> std::result::Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    {
        let db = opt.fontdb_mut();
        db.load_system_fonts();
        let family = ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"]
            .into_iter()
            .find(|f| {
                db.faces()
                    .any(|face| face.families.iter().any(|(n, _)| n == f))
            })
            .map(str::to_string)
            .or_else(|| {
                db.faces()
                    .next()
                    .and_then(|f| f.families.first().map(|(n, _)| n.clone()))
            });
        if let Some(f) = family {
            db.set_sans_serif_family(f);
        }
    }
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| "empty picture".to_string())?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

/// Now, as RFC 3339 in UTC to the second (e.g. `2026-11-26T22:45:00Z`).
fn utc_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The workspace's commit (marked `-dirty` with uncommitted changes), when in a git tree.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    git(&["rev-parse", "--short=12", "HEAD"]).map(|c| {
        match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{c}-dirty"),
            _ => c,
        }
    })
}

/// Reads a bench directory: with a manifest, its jobs by suite; without one, every run
/// directory found in `dir` (a suite named after `dir`) or one level below (a suite per
/// subdirectory).
pub fn load_bench(dir: &Path) -> Result<Vec<SuiteReport>> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut suites: Vec<(String, Vec<RunData>, Vec<FailedJob>)> = Vec::new();
    let mut add = |suite: &str, item: std::result::Result<RunData, Box<FailedJob>>| {
        let i = match suites.iter().position(|s| s.0 == suite) {
            Some(i) => i,
            None => {
                suites.push((suite.to_string(), Vec::new(), Vec::new()));
                suites.len() - 1
            }
        };
        match item {
            Ok(r) => suites[i].1.push(r),
            Err(f) => suites[i].2.push(*f),
        }
    };
    match Manifest::load(dir)? {
        Some(m) => {
            for job in &m.jobs {
                add(&job.suite, load_job(dir, job));
            }
        }
        None => {
            let name = dir
                .file_name()
                .map_or_else(|| "runs".into(), |n| n.to_string_lossy().into_owned());
            for (suite, run) in scan(dir, &name)? {
                add(&suite, run);
            }
        }
    }
    if suites.is_empty() {
        return Err(Error::Usage(format!(
            "{} holds no bench manifest and no run directory",
            dir.display()
        )));
    }
    suites
        .into_iter()
        .map(|(s, runs, failed)| SuiteReport::new(&s, runs, failed))
        .collect()
}

fn load_job(out: &Path, job: &JobSpec) -> std::result::Result<RunData, Box<FailedJob>> {
    let dir = out.join(&job.dir);
    let failed = |state: String, error: String, log: Option<String>| {
        Box::new(FailedJob {
            name: job.name.clone(),
            task: job.task.clone(),
            algo: job.algo.clone(),
            seed: job.seed,
            state,
            error,
            log,
        })
    };
    if dir.join(SUMMARY_FILE).is_file() {
        return RunData::load(&dir)
            .map_err(|e| failed("failed".into(), e.to_string(), Some(log_rel(job))));
    }
    let status = status_path(out, job);
    if let Some(s) = std::fs::read_to_string(&status)
        .ok()
        .and_then(|t| serde_json::from_str::<JobStatus>(&t).ok())
    {
        return Err(failed(s.state, s.error, Some(s.log)));
    }
    let what = if dir.join(CONFIG_FILE).is_file() {
        "started but not finished (no summary.json); rerun the bench to resume it"
    } else {
        "not started"
    };
    Err(failed(
        "not finished".into(),
        what.into(),
        out.join(log_rel(job)).is_file().then(|| log_rel(job)),
    ))
}

type Found = Vec<(String, std::result::Result<RunData, Box<FailedJob>>)>;

fn scan(dir: &Path, name: &str) -> Result<Found> {
    let mut found = Found::new();
    let mut visit = |suite: &str, run: &Path| {
        let item = if run.join(SUMMARY_FILE).is_file() {
            RunData::load(run).map_err(|e| e.to_string())
        } else {
            Err("started but not finished (no summary.json)".to_string())
        };
        let item = item.map_err(|error| {
            let cfg = crate::config::RunConfig::resolve(
                Some(&run.join(CONFIG_FILE)),
                &Default::default(),
            );
            let (task, algo, seed) = cfg.map_or((String::new(), String::new(), 0), |c| {
                (c.task, c.algo, c.seed)
            });
            Box::new(FailedJob {
                name: run
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                task,
                algo,
                seed,
                state: "not finished".into(),
                error,
                log: None,
            })
        });
        found.push((suite.to_string(), item));
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(Error::io("cannot list", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();
    if dir.join(CONFIG_FILE).is_file() {
        visit(name, dir);
        return Ok(found);
    }
    for e in entries {
        if e.join(CONFIG_FILE).is_file() {
            visit(name, &e);
        } else {
            let mut subs: Vec<PathBuf> = std::fs::read_dir(&e)
                .map_err(Error::io("cannot list", &e))?
                .filter_map(|x| x.ok().map(|x| x.path()))
                .filter(|p| p.join(CONFIG_FILE).is_file())
                .collect();
            subs.sort();
            let suite = e
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            for s in subs {
                visit(&suite, &s);
            }
        }
    }
    Ok(found)
}

/// Regenerates every suite's report of a bench directory, and `report.md` joining them.
/// Returns the joined Markdown.
pub fn write_bench(dir: &Path) -> Result<String> {
    let reports = load_bench(dir)?;
    let manifest = Manifest::load(dir)?.is_some();
    let mut all = String::from("# Bench report\n\n");
    for r in &reports {
        // with a manifest the suites are subdirectories; otherwise each suite's report
        // goes where its runs are (the directory itself, or the subdirectory)
        let target = if manifest || dir.join(&r.suite).is_dir() {
            dir.join(&r.suite)
        } else {
            dir.to_path_buf()
        };
        r.write(&target)?;
        let md = r.markdown().replace(
            "](curves_steps.svg)",
            &format!(
                "]({}curves_steps.svg)",
                if target == dir {
                    String::new()
                } else {
                    format!("{}/", r.suite)
                }
            ),
        );
        all.push_str(&md);
        all.push('\n');
    }
    write_atomic(&dir.join("report.md"), all.as_bytes())?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_is_mean_and_std_over_seeds_on_the_common_range() {
        let a = vec![(0.0, 0.0), (10.0, 10.0)];
        let b = vec![(0.0, 2.0), (5.0, 4.0), (8.0, 10.0)];
        let bd = band(&[a, b]).expect("band");
        assert_eq!(bd.len(), 60);
        assert_eq!(bd[0], (0.0, 1.0, 1.0));
        let (x, m, sd) = bd[59];
        assert_eq!(x, 8.0);
        assert!((m - 9.0).abs() < 1e-12 && (sd - 1.0).abs() < 1e-12);
        assert!(band(&[]).is_none());
        assert_eq!(band(&[vec![(3.0, 7.0)]]), Some(vec![(3.0, 7.0, 0.0)]));
    }

    #[test]
    fn shipped_references_parse_and_name_registered_tasks_and_algorithms() {
        let refs = references().expect("references");
        assert!(refs.len() >= 5);
        for r in &refs {
            crate::registry::task_entry(&r.task).expect("task");
            crate::registry::algorithm(&r.algo).expect("algo");
            assert!(!r.source.is_empty() && r.seeds > 0);
        }
    }

    #[test]
    fn utc_date_is_well_formed() {
        let d = utc_now();
        assert_eq!(d.len(), "2026-11-26T20:00:00Z".len(), "{d}");
        assert!(d.starts_with("20") && d.ends_with('Z'), "{d}");
        humantime::parse_rfc3339(&d).expect("RFC 3339");
    }

    #[test]
    fn png_has_the_svg_size() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30"><rect width="40" height="30" fill="red"/></svg>"#;
        let png = svg_to_png(svg).expect("png");
        assert_eq!(&png[1..4], b"PNG");
        let dec = png::Decoder::new(&png[..]);
        let reader = dec.read_info().expect("info");
        assert_eq!((reader.info().width, reader.info().height), (40, 30));
    }
}

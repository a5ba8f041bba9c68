//! The bench report: reads each run's `summary.json` and `metrics.jsonl` (written by
//! `mbmix train`) and writes `report.md`, `report.json` and `learning_curves.svg`.

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// One finished run.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub task: String,
    pub algo: String,
    pub seed: u64,
    pub dir: PathBuf,
    pub epochs: u64,
    pub env_steps: u64,
    pub wall_s: f64,
    pub env_steps_per_s: f64,
    /// Mean return of the final deterministic evaluation.
    pub final_return: f64,
    /// Spread of the final evaluation's episode returns.
    pub final_return_std: f64,
    pub success_rate: Option<f64>,
    /// (env steps, eval return, eval return std) of every evaluated epoch.
    #[serde(skip)]
    pub curve: Vec<(f64, f64, f64)>,
}

impl RunResult {
    /// Reads a finished run directory.
    pub fn load(task: &str, algo: &str, seed: u64, dir: &Path) -> Result<RunResult> {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let s: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let num = |v: &serde_json::Value, what: &str| {
            v.as_f64()
                .with_context(|| format!("{}: `{what}` missing or not a number", path.display()))
        };
        let eval = &s["final_eval"];
        let metrics_path = dir.join("metrics.jsonl");
        let file = std::fs::File::open(&metrics_path)
            .with_context(|| format!("cannot open {}", metrics_path.display()))?;
        let mut curve = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("cannot read {}", metrics_path.display()))?;
            let Ok(m) = serde_json::from_str::<serde_json::Value>(&line) else {
                break;
            };
            if let (Some(x), Some(y)) = (m["env_steps"].as_f64(), m["eval_return"].as_f64()) {
                curve.push((x, y, m["eval_return_std"].as_f64().unwrap_or(0.0)));
            }
        }
        Ok(RunResult {
            task: task.to_string(),
            algo: algo.to_string(),
            seed,
            dir: dir.to_path_buf(),
            epochs: s["epochs"].as_u64().unwrap_or(0),
            env_steps: s["env_steps"].as_u64().unwrap_or(0),
            wall_s: num(&s["wall_s"], "wall_s")?,
            env_steps_per_s: num(&s["env_steps_per_s"], "env_steps_per_s")?,
            final_return: num(&eval["mean_return"], "final_eval.mean_return")?,
            final_return_std: num(&eval["std_return"], "final_eval.std_return")?,
            success_rate: eval["success_rate"].as_f64(),
            curve,
        })
    }
}

/// Aggregate over the seeds of one (task, algorithm) pair.
#[derive(Clone, Debug, Serialize)]
pub struct GroupRow {
    pub task: String,
    pub algo: String,
    pub seeds: Vec<u64>,
    /// Mean over seeds of the final evaluation return.
    pub final_return_mean: f64,
    /// Population standard deviation over seeds of the final evaluation return.
    pub final_return_std: f64,
    /// Mean over seeds of the success rate (when the task defines success).
    pub success_rate: Option<f64>,
    /// Mean wall time of one run, seconds.
    pub wall_s_mean: f64,
    /// Mean env steps per second of wall time.
    pub env_steps_per_s_mean: f64,
    pub env_steps: u64,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub suite: String,
    pub date_utc: String,
    pub git_commit: Option<String>,
    pub cpus: usize,
    pub os: String,
    pub groups: Vec<GroupRow>,
    pub runs: Vec<RunResult>,
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

impl Report {
    pub fn new(suite: &str, root: &Path, runs: Vec<RunResult>) -> Report {
        let mut groups: Vec<GroupRow> = Vec::new();
        for r in &runs {
            if groups.iter().any(|g| g.task == r.task && g.algo == r.algo) {
                continue;
            }
            let same: Vec<&RunResult> = runs
                .iter()
                .filter(|o| o.task == r.task && o.algo == r.algo)
                .collect();
            let pick = |f: fn(&RunResult) -> f64| same.iter().map(|r| f(r)).collect::<Vec<_>>();
            let (final_return_mean, final_return_std) = mean_std(&pick(|r| r.final_return));
            let rates: Vec<f64> = same.iter().filter_map(|r| r.success_rate).collect();
            groups.push(GroupRow {
                task: r.task.clone(),
                algo: r.algo.clone(),
                seeds: same.iter().map(|r| r.seed).collect(),
                final_return_mean,
                final_return_std,
                success_rate: (rates.len() == same.len()).then(|| mean_std(&rates).0),
                wall_s_mean: mean_std(&pick(|r| r.wall_s)).0,
                env_steps_per_s_mean: mean_std(&pick(|r| r.env_steps_per_s)).0,
                env_steps: r.env_steps,
            });
        }
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .current_dir(root)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        // A tree with uncommitted changes is marked, so that a number is never attributed
        // to a commit that did not produce it.
        let git_commit = git(&["rev-parse", "--short=12", "HEAD"]).map(|c| {
            match git(&["status", "--porcelain", "--untracked-files=no"]) {
                Some(changes) if !changes.is_empty() => format!("{c}-dirty"),
                _ => c,
            }
        });
        Report {
            suite: suite.to_string(),
            date_utc: crate::time::utc_iso(),
            git_commit,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            groups,
            runs,
        }
    }

    pub fn markdown(&self) -> String {
        let rate =
            |r: Option<f64>| r.map_or_else(|| "n/a".into(), |r| format!("{:.0}%", 100.0 * r));
        let mut s = format!(
            "## Bench `{}` ({}, commit {}, {} CPUs, {})\n\n",
            self.suite,
            self.date_utc,
            self.git_commit.as_deref().unwrap_or("unknown"),
            self.cpus,
            self.os
        );
        s.push_str(
            "| task | algo | seeds | final eval return (mean ± std over seeds) | success rate | wall time per run (s) | env steps/s |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for g in &self.groups {
            s.push_str(&format!(
                "| {} | {} | {} | {:.1} ± {:.1} | {} | {:.1} | {:.0} |\n",
                g.task,
                g.algo,
                g.seeds.len(),
                g.final_return_mean,
                g.final_return_std,
                rate(g.success_rate),
                g.wall_s_mean,
                g.env_steps_per_s_mean
            ));
        }
        s.push_str(
            "\nPer run:\n\n| task | algo | seed | epochs | env steps | final eval return | success rate | wall time (s) | env steps/s |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.runs {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.1} ± {:.1} | {} | {:.1} | {:.0} |\n",
                r.task,
                r.algo,
                r.seed,
                r.epochs,
                r.env_steps,
                r.final_return,
                r.final_return_std,
                rate(r.success_rate),
                r.wall_s,
                r.env_steps_per_s
            ));
        }
        s
    }

    /// Writes `report.md`, `report.json` and `learning_curves.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
        };
        write("report.md", self.markdown().as_bytes())?;
        write(
            "report.json",
            serde_json::to_string_pretty(self)
                .context("cannot serialise the report")?
                .as_bytes(),
        )?;
        let mut svg = String::new();
        self.plot(&mut svg)
            .map_err(|e| anyhow::anyhow!("cannot draw learning_curves.svg: {e}"))?;
        write("learning_curves.svg", svg.as_bytes())
    }

    /// One chart per (task, algorithm): per seed, the evaluation return against env
    /// steps, with a band of ± the standard deviation over that evaluation's episodes.
    fn plot(&self, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
        let rows = self.groups.len().max(1);
        let root = SVGBackend::with_string(svg, (900, 480 * rows as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        for (area, g) in root.split_evenly((rows, 1)).iter().zip(&self.groups) {
            let runs: Vec<&RunResult> = self
                .runs
                .iter()
                .filter(|r| r.task == g.task && r.algo == g.algo)
                .collect();
            let pts = runs.iter().flat_map(|r| r.curve.iter());
            let (mut x1, mut y0, mut y1) = (1.0f64, f64::MAX, f64::MIN);
            for &(x, y, sd) in pts {
                x1 = x1.max(x);
                y0 = y0.min(y - sd);
                y1 = y1.max(y + sd);
            }
            if y0 > y1 {
                (y0, y1) = (0.0, 1.0);
            }
            let pad = ((y1 - y0) * 0.05).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!("{} / {}: deterministic evaluation return", g.task, g.algo),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..x1, (y0 - pad)..(y1 + pad))?;
            chart
                .configure_mesh()
                .x_desc("env steps")
                .y_desc("episode return")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .draw()?;
            for (i, r) in runs.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let band: Vec<(f64, f64)> = r
                    .curve
                    .iter()
                    .map(|&(x, y, sd)| (x, y + sd))
                    .chain(r.curve.iter().rev().map(|&(x, y, sd)| (x, y - sd)))
                    .collect();
                chart.draw_series(std::iter::once(Polygon::new(
                    band,
                    color.mix(0.15).filled(),
                )))?;
                chart
                    .draw_series(LineSeries::new(
                        r.curve.iter().map(|&(x, y, _)| (x, y)),
                        color.stroke_width(2),
                    ))?
                    .label(format!("seed {}", r.seed))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, final_return: f64) -> RunResult {
        RunResult {
            task: "cartpole-swingup".into(),
            algo: "shac".into(),
            seed,
            dir: PathBuf::from("x"),
            epochs: 10,
            env_steps: 1000,
            wall_s: 2.0,
            env_steps_per_s: 500.0,
            final_return,
            final_return_std: 1.0,
            success_rate: Some(0.5),
            curve: vec![(0.0, -10.0, 1.0), (1000.0, final_return, 1.0)],
        }
    }

    #[test]
    fn groups_aggregate_over_seeds() {
        let rep = Report::new(
            "quick",
            Path::new("."),
            vec![run(0, -100.0), run(1, -200.0)],
        );
        assert_eq!(rep.groups.len(), 1);
        let g = &rep.groups[0];
        assert_eq!(g.seeds, vec![0, 1]);
        assert!((g.final_return_mean + 150.0).abs() < 1e-9);
        assert!((g.final_return_std - 50.0).abs() < 1e-9);
        let md = rep.markdown();
        assert!(
            md.contains("| cartpole-swingup | shac | 2 | -150.0 ± 50.0 | 50% | 2.0 | 500 |"),
            "{md}"
        );
        let mut svg = String::new();
        rep.plot(&mut svg).expect("plot");
        assert!(svg.contains("seed 0") && svg.contains("seed 1"));
    }
}

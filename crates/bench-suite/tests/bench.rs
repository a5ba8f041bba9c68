//! End-to-end tests of `mbmix bench` and `mbmix report`, run as processes (the way
//! `cargo xtask bench` runs them): a miniature suite (smoke budget, 2 tasks, 2 algorithms,
//! 2 seeds) through the real runner; killing it mid-way and rerunning it; a failing job;
//! the Slurm array script run locally with bash.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mbmix");

/// The miniature suite's arguments.
const MINI: &[&str] = &[
    "bench",
    "--budget",
    "smoke",
    "--suite",
    "diffrl",
    "--tasks",
    "cartpole-swingup,hopper",
    "--algos",
    "shac,mbmix",
    "--seeds",
    "2",
    "--no-progress",
];

fn mbmix(args: &[&str], out: &Path) -> Output {
    Command::new(EXE)
        .args(args)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("mbmix runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(path: &Path) -> Value {
    let t = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&t).expect("JSON")
}

/// The report's numbers that do not depend on timing: per group and per run.
fn deterministic(report: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for g in report["groups"].as_array().expect("groups") {
        v.push(format!(
            "{} {} {} {} {} {}",
            g["task"],
            g["algo"],
            g["seeds"],
            g["final_return_mean"],
            g["best_return_mean"],
            g["env_steps_mean"]
        ));
    }
    for r in report["runs"].as_array().expect("runs") {
        v.push(format!(
            "{} {} {} {} {} {}",
            r["task"], r["algo"], r["seed"], r["final_return"], r["best_return"], r["env_steps"]
        ));
    }
    v
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn miniature_suite_report_matches_its_run_directories() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("b");
    let o = mbmix(&[MINI, &["--jobs", "2"]].concat(), &out);
    assert!(o.status.success(), "{}", text(&o));
    let suite = out.join("diffrl");
    for f in [
        "report.md",
        "report.json",
        "curves_steps.svg",
        "curves_steps.png",
        "curves_wall.svg",
        "curves_wall.png",
    ] {
        let p = suite.join(f);
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 100)
                .unwrap_or(false),
            "{}",
            p.display()
        );
    }
    assert!(out.join("report.md").is_file() && out.join("bench.json").is_file());
    let rep = json(&suite.join("report.json"));
    assert_eq!(rep["suite"], "diffrl");
    assert_eq!(rep["failed"].as_array().map(Vec::len), Some(0));
    let runs = rep["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 8);
    let groups = rep["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 4);
    let md = std::fs::read_to_string(suite.join("report.md")).expect("md");
    for task in ["cartpole-swingup", "hopper"] {
        for algo in ["shac", "mbmix"] {
            // every number of the group against the run directories themselves
            let finals: Vec<f64> = (0..2)
                .map(|s| {
                    let sum = json(&suite.join(format!("{task}-{algo}-s{s}/summary.json")));
                    assert_eq!(sum["task"], task);
                    assert_eq!(sum["seed"], s);
                    sum["final_eval"]["mean_return"]
                        .as_f64()
                        .expect("mean_return")
                })
                .collect();
            let g = groups
                .iter()
                .find(|g| g["task"] == task && g["algo"] == algo)
                .expect("group");
            assert_eq!(g["seeds"], serde_json::json!([0, 1]));
            // summary.json holds f32 returns, printed shortest: equal to f32 precision
            let m = g["final_return_mean"].as_f64().expect("mean");
            assert!(
                (m - mean(&finals)).abs() < 1e-6 * m.abs().max(1.0),
                "{m} vs {finals:?}"
            );
            let sd = g["final_return_std"].as_f64().expect("std");
            assert!((sd - (finals[0] - finals[1]).abs() / 2.0).abs() < 1e-6 * sd.max(1.0));
            let best = g["best_return_mean"].as_f64().expect("best");
            assert!(best >= m - 1e-9, "best {best} below final {m}");
            // the best over training is the best of the logged evaluations and the final one
            let bests: Vec<f64> = (0..2)
                .map(|s| {
                    let dir = suite.join(format!("{task}-{algo}-s{s}"));
                    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics");
                    text.lines()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .filter_map(|v| v["eval_return"].as_f64())
                        .chain(std::iter::once(finals[s]))
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .collect();
            assert!(
                (best - mean(&bests)).abs() < 1e-4 * best.abs().max(1.0),
                "{best} vs {bests:?}"
            );
            let row = format!("| {task} | {algo} | 2 |");
            assert!(md.contains(&row), "{row} missing from\n{md}");
            // SHAC is in the suite, so every group reports reaching SHAC's final return
            assert_eq!(g["to_shac_final"]["seeds"], 2);
            let target = g["to_shac_final"]["target"].as_f64().expect("target");
            let shac = groups
                .iter()
                .find(|g| g["task"] == task && g["algo"] == "shac")
                .expect("shac");
            assert_eq!(Some(target), shac["final_return_mean"].as_f64());
            // MB-MIX runs carry the gradient-variance diagnostics (every epoch in smoke)
            if algo == "mbmix" {
                let n = g["var_mix_le_shac"][1].as_u64().expect("diagnostics");
                assert!(n >= 2, "{g}");
            } else {
                assert!(g["var_mix_le_shac"].is_null());
            }
        }
    }
    // references: the Hopper SHAC number of datasets/reference is compared
    assert!(md.contains("4800.0 ± 124.5"), "{md}");
    // `mbmix report` regenerates the same numbers from the directories
    let again = Command::new(EXE)
        .arg("report")
        .arg(&out)
        .output()
        .expect("report");
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        deterministic(&json(&suite.join("report.json"))),
        deterministic(&rep)
    );
    // a second identical bench keeps every finished job
    let o = mbmix(MINI, &out);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o).matches("finished earlier, kept").count(),
        8,
        "{}",
        text(&o)
    );
    // the same directory with another configuration of the same jobs is refused
    let o = mbmix(&[MINI, &["--epochs", "3"]].concat(), &out);
    assert!(!o.status.success());
    assert!(text(&o).contains("another configuration"), "{}", text(&o));
}

#[cfg(unix)]
#[test]
fn killed_bench_resumes_only_the_remaining_jobs_and_gives_the_same_report() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let whole = tmp.path().join("whole");
    let o = mbmix(MINI, &whole);
    assert!(o.status.success(), "{}", text(&o));

    let cut = tmp.path().join("cut");
    let mut child = Command::new(EXE)
        .args(MINI)
        .arg("--out")
        .arg(&cut)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("bench starts");
    // kill the bench and its jobs (the whole process group) once two jobs have finished
    let finished = |dir: &Path| {
        walk(dir)
            .into_iter()
            .filter(|p| p.ends_with("summary.json"))
            .count()
    };
    let t0 = Instant::now();
    while finished(&cut) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(300), "bench too slow");
        if let Ok(Some(s)) = child.try_wait() {
            panic!("bench ended before it could be killed: {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pgid = child.id().to_string();
    let kill = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .expect("kill");
    assert!(kill.success());
    let _ = child.wait();
    let done_before = finished(&cut);
    assert!(done_before < 8, "the bench finished before the kill");

    let o = mbmix(MINI, &cut);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert_eq!(
        out.matches("finished earlier, kept").count(),
        done_before,
        "{out}"
    );
    assert_eq!(
        out.matches(": started").count() + out.matches(": resuming").count(),
        8 - done_before,
        "{out}"
    );
    let a = json(&whole.join("diffrl/report.json"));
    let b = json(&cut.join("diffrl/report.json"));
    assert_eq!(deterministic(&a), deterministic(&b));
}

#[cfg(unix)]
#[test]
fn a_failing_job_is_listed_with_its_error_and_the_others_finish() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    // a wrapper that fails the Hopper jobs the way a crashing run would
    let wrapper = tmp.path().join("flaky-mbmix");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *hopper*) echo 'error: simulated crash in hopper' >&2; exit 3;; esac\nexec '{EXE}' \"$@\"\n"
        ),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = tmp.path().join("b");
    let o = mbmix(
        &[
            "bench",
            "--budget",
            "smoke",
            "--suite",
            "diffrl",
            "--tasks",
            "cartpole-swingup,hopper",
            "--algos",
            "shac",
            "--seeds",
            "1",
            "--no-progress",
            "--mbmix",
        ]
        .iter()
        .copied()
        .chain(std::iter::once(wrapper.to_str().expect("utf-8 path")))
        .collect::<Vec<_>>(),
        &out,
    );
    assert!(!o.status.success(), "a failed job fails the bench");
    assert!(text(&o).contains("1 job(s) failed"), "{}", text(&o));
    let rep = json(&out.join("diffrl/report.json"));
    assert_eq!(rep["runs"].as_array().map(Vec::len), Some(1));
    let failed = rep["failed"].as_array().expect("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["name"], "hopper-shac-s0");
    assert_eq!(failed[0]["state"], "failed");
    let err = failed[0]["error"].as_str().expect("error");
    assert!(
        err.contains("simulated crash in hopper") && err.contains("exit status: 3"),
        "{err}"
    );
    let md = std::fs::read_to_string(out.join("diffrl/report.md")).expect("md");
    assert!(md.contains("| hopper-shac-s0 | failed |"), "{md}");
    // `mbmix report` keeps listing it
    let again = Command::new(EXE)
        .arg("report")
        .arg(&out)
        .output()
        .expect("report");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("simulated crash in hopper"));
}

#[cfg(unix)]
#[test]
fn slurm_array_script_runs_every_job_and_report_merges_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shared");
    let o = Command::new(EXE)
        .args([
            "bench",
            "--budget",
            "smoke",
            "--suite",
            "diffrl",
            "--tasks",
            "cartpole-swingup",
            "--algos",
            "shac",
            "--seeds",
            "2",
            "--emit-slurm",
        ])
        .arg(&dir)
        .output()
        .expect("emit");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("sbatch"));
    let script = std::fs::read_to_string(dir.join("slurm/bench.sbatch")).expect("script");
    assert!(script.contains("#SBATCH --array=0-1\n"), "{script}");
    let tsv = std::fs::read_to_string(dir.join("slurm/jobs.tsv")).expect("tsv");
    assert_eq!(tsv.lines().count(), 3);
    assert!(
        !dir.join("diffrl/cartpole-swingup-shac-s0").exists(),
        "nothing ran yet"
    );
    // what each array task would do on a node, here one after the other
    for i in 0..2 {
        let o = Command::new("bash")
            .arg(dir.join("slurm/bench.sbatch"))
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .env("MBMIX", EXE)
            .output()
            .expect("bash");
        assert!(o.status.success(), "array task {i}: {}", text(&o));
    }
    // a resubmitted task skips its finished job
    let o = Command::new("bash")
        .arg(dir.join("slurm/bench.sbatch"))
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("MBMIX", EXE)
        .output()
        .expect("bash");
    assert!(text(&o).contains("finished earlier, kept"), "{}", text(&o));
    let o = Command::new(EXE)
        .arg("report")
        .arg(&dir)
        .output()
        .expect("report");
    assert!(o.status.success(), "{}", text(&o));
    let rep = json(&dir.join("diffrl/report.json"));
    assert_eq!(rep["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(rep["failed"].as_array().map(Vec::len), Some(0));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

//! `cargo xtask bench --micro [FILTER]`: runs the criterion benches of `benches/`
//! (simulator windows forward and forward + backward, MPM substeps, the Sobolev model's
//! training step, the policy update) and rewrites the generated table of BENCHMARKS.md
//! (between `<!-- micro:begin -->` and `<!-- micro:end -->`, appended when absent) with
//! every benchmark this run measured: mean time with criterion's 95% interval, and
//! throughput.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const BEGIN: &str = "<!-- micro:begin -->";
const END: &str = "<!-- micro:end -->";

/// One measured benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub id: String,
    pub mean_ns: f64,
    pub lo_ns: f64,
    pub hi_ns: f64,
    /// Elements (env steps, particles, samples) per iteration, when declared.
    pub elements: Option<f64>,
}

pub fn run(root: &Path, filter: &[String]) -> Result<()> {
    let started = SystemTime::now();
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root)
        .args(["bench", "-p", "mbmix-benches", "--benches", "--"])
        .args(filter);
    eprintln!(
        "$ cargo bench -p mbmix-benches --benches -- {}",
        filter.join(" ")
    );
    let status = cmd.status().context("cannot start cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let mut found = Vec::new();
    collect(&target.join("criterion"), started, &mut found)?;
    if found.is_empty() {
        bail!(
            "criterion wrote no result (filter {:?} matched nothing?)",
            filter
        );
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let path = root.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let command = if filter.is_empty() {
        "cargo xtask bench --micro".to_string()
    } else {
        format!("cargo xtask bench --micro {}", filter.join(" "))
    };
    let new = splice(&old, &table(&found, &command, &machine()));
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    eprintln!("{} benchmarks written to {}", found.len(), path.display());
    Ok(())
}

/// Every `new/benchmark.json` under `dir` written after `since`, with its estimates.
fn collect(dir: &Path, since: SystemTime, out: &mut Vec<Measured>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let bench = p.join("new").join("benchmark.json");
        let est = p.join("new").join("estimates.json");
        let fresh = std::fs::metadata(&est)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if bench.is_file() && fresh {
            out.push(parse(&bench, &est)?);
        }
        collect(&p, since, out)?;
    }
    Ok(())
}

fn parse(bench: &Path, est: &Path) -> Result<Measured> {
    let read = |p: &Path| -> Result<serde_json::Value> {
        let t =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&t).with_context(|| format!("{} is not JSON", p.display()))
    };
    let b = read(bench)?;
    let e = read(est)?;
    let num = |v: &serde_json::Value, what: &str| {
        v.as_f64()
            .with_context(|| format!("{}: `{what}` missing", est.display()))
    };
    let mean = &e["mean"];
    Ok(Measured {
        id: b["full_id"]
            .as_str()
            .with_context(|| format!("{}: no full_id", bench.display()))?
            .to_string(),
        mean_ns: num(&mean["point_estimate"], "mean.point_estimate")?,
        lo_ns: num(
            &mean["confidence_interval"]["lower_bound"],
            "mean lower bound",
        )?,
        hi_ns: num(
            &mean["confidence_interval"]["upper_bound"],
            "mean upper bound",
        )?,
        elements: b["throughput"]["Elements"].as_f64(),
    })
}

fn fmt_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.1} /s")
    }
}

/// The generated section.
pub fn table(found: &[Measured], command: &str, machine: &str) -> String {
    let mut s = format!(
        "{BEGIN}\n## Micro-benchmarks (generated by `{command}`)\n\n\
         Machine: {machine}. Mean time per iteration with criterion's 95% confidence \
         interval; throughput in the benchmark's elements (env steps, particles or samples) \
         per second at the mean.\n\n\
         | benchmark | mean | 95% interval | throughput |\n|---|---|---|---|\n"
    );
    for m in found {
        s.push_str(&format!(
            "| `{}` | {} | {} – {} | {} |\n",
            m.id,
            fmt_time(m.mean_ns),
            fmt_time(m.lo_ns),
            fmt_time(m.hi_ns),
            m.elements
                .map_or_else(|| "–".into(), |e| fmt_rate(e / (m.mean_ns * 1e-9)))
        ));
    }
    s.push_str(END);
    s
}

/// Replaces the generated section of `doc` (or appends it).
pub fn splice(doc: &str, section: &str) -> String {
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &doc[..b], &doc[e + END.len()..])
        }
        _ => format!("{}\n\n{section}\n", doc.trim_end()),
    }
}

/// CPU model, cores, OS, date and commit.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    format!(
        "{cpu}, {cores} cores, {} {}; {}; commit {}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        out("git", &["rev-parse", "--short=12", "HEAD"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_the_section_or_appends_it() {
        let m = Measured {
            id: "g/f/64".into(),
            mean_ns: 2.0e6,
            lo_ns: 1.9e6,
            hi_ns: 2.1e6,
            elements: Some(2048.0),
        };
        let t = table(&[m], "cargo xtask bench --micro", "cpu");
        assert!(
            t.contains("| `g/f/64` | 2.00 ms | 1.90 ms – 2.10 ms | 1.02 M/s |"),
            "{t}"
        );
        let doc = "# B\n\ntext\n";
        let once = splice(doc, &t);
        assert!(once.starts_with("# B\n\ntext\n\n<!-- micro:begin -->"));
        let again = splice(&once, &t.replace("2.00 ms", "3.00 ms"));
        assert_eq!(again.matches(BEGIN).count(), 1);
        assert!(again.contains("3.00 ms") && !again.contains("| 2.00 ms"));
        let mid = format!("# B\n{t}\ntail\n");
        assert!(splice(&mid, "X").ends_with("X\ntail\n"));
    }
}

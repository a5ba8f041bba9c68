//! `mbmix bench --emit-slurm DIR`: the same jobs as a Slurm job array.
//!
//! The bench directory `DIR` must be on a filesystem that every node sees. It gets the
//! manifest and the configurations (as for a local bench), `slurm/jobs.tsv` (one line per
//! job: suite, name, run directory, config) and `slurm/bench.sbatch`, whose array task `i`
//! runs job `i` of the table with `mbmix train` into its run directory, resuming it when it
//! has started before and skipping it when it has finished. `sbatch DIR/slurm/bench.sbatch`
//! submits it; resubmitting finishes what is left; `mbmix report DIR` merges the results.

use super::JobSpec;
use crate::error::{Error, Result};
use crate::run::write_atomic;
use std::path::Path;

/// Options of the generated script.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// The `mbmix` executable the array tasks run (overridable with `$MBMIX`).
    pub exe: String,
    /// `--device` of every job (`cuda` also requests one GPU per array task).
    pub device: String,
    /// CPUs per array task.
    pub cpus_per_task: usize,
    /// Array tasks running at once (`%N`); `None`: as many as Slurm allows.
    pub max_parallel: Option<usize>,
}

/// Quotes `s` for bash.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job table: a header, then one tab-separated line per job.
pub fn jobs_tsv(jobs: &[JobSpec]) -> String {
    let mut s = String::from("suite\tname\tdir\tconfig\n");
    for j in jobs {
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            j.suite, j.name, j.dir, j.config
        ));
    }
    s
}

/// The array script for `jobs.len()` jobs of the bench directory `bench` (absolute).
pub fn script(bench: &str, n_jobs: usize, opts: &SlurmOptions) -> String {
    let array = match opts.max_parallel {
        Some(p) => format!("0-{}%{p}", n_jobs.saturating_sub(1)),
        None => format!("0-{}", n_jobs.saturating_sub(1)),
    };
    let gpu = if opts.device == "cuda" {
        "#SBATCH --gres=gpu:1\n"
    } else {
        ""
    };
    format!(
        r#"#!/bin/bash
# MB-MIX bench as a Slurm job array: array task i runs line i+2 of slurm/jobs.tsv.
# Submit: sbatch {bench_q}/slurm/bench.sbatch    Merge: mbmix report {bench_q}
#SBATCH --job-name=mbmix-bench
#SBATCH --array={array}
#SBATCH --cpus-per-task={cpus}
{gpu}#SBATCH --output={bench}/logs/slurm-%A_%a.out
set -euo pipefail
BENCH={bench_q}
MBMIX="${{MBMIX:-{exe}}}"
LINE=$(sed -n "$((SLURM_ARRAY_TASK_ID + 2))p" "$BENCH/slurm/jobs.tsv")
if [ -z "$LINE" ]; then
  echo "no job $SLURM_ARRAY_TASK_ID in $BENCH/slurm/jobs.tsv" >&2
  exit 1
fi
IFS=$'\t' read -r SUITE NAME RUNDIR CONFIG <<< "$LINE"
mkdir -p "$BENCH/logs/$SUITE" "$BENCH/status/$SUITE"
LOG="$BENCH/logs/$SUITE/$NAME.log"
STATUS="$BENCH/status/$SUITE/$NAME.json"
if [ -f "$BENCH/$RUNDIR/summary.json" ]; then
  echo "$SUITE/$NAME: finished earlier, kept"
  exit 0
fi
rm -f "$STATUS"
if [ -f "$BENCH/$RUNDIR/config.toml" ]; then
  ARGS=(train --out "$BENCH/$RUNDIR" --resume)
else
  ARGS=(train --config "$BENCH/$CONFIG" --out "$BENCH/$RUNDIR")
fi
set +e
OMP_NUM_THREADS={cpus} RAYON_NUM_THREADS={cpus} "$MBMIX" "${{ARGS[@]}}" --device {device} --quiet >> "$LOG" 2>&1
CODE=$?
set -e
if [ "$CODE" -ne 0 ]; then
  ERR=$(grep '^error' "$LOG" | tail -n 1 | tr -d '\t\r' | sed 's/\\/\\\\/g; s/"/\\"/g')
  if [ "$CODE" -eq 130 ]; then STATE=interrupted; else STATE=failed; fi
  printf '{{"state": "%s", "error": "mbmix train exited with %s: %s", "log": "logs/%s/%s.log"}}\n' \
    "$STATE" "$CODE" "$ERR" "$SUITE" "$NAME" > "$STATUS"
fi
exit "$CODE"
"#,
        bench = bench,
        bench_q = sh_quote(bench),
        exe = opts.exe.replace('"', "\\\""),
        cpus = opts.cpus_per_task,
        device = opts.device,
    )
}

/// Writes `slurm/jobs.tsv` and `slurm/bench.sbatch` into the bench directory `out`.
pub fn emit(out: &Path, jobs: &[JobSpec], opts: &SlurmOptions) -> Result<()> {
    let out = std::fs::canonicalize(out).map_err(Error::io("cannot resolve", out))?;
    let dir = out.join("slurm");
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    std::fs::create_dir_all(out.join("logs")).map_err(Error::io("cannot create", &out))?;
    write_atomic(&dir.join("jobs.tsv"), jobs_tsv(jobs).as_bytes())?;
    let bench = out.to_string_lossy();
    let path = dir.join("bench.sbatch");
    write_atomic(&path, script(&bench, jobs.len(), opts).as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(Error::io("cannot make executable", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(i: u64) -> JobSpec {
        JobSpec {
            suite: "diffrl".into(),
            task: "hopper".into(),
            algo: "shac".into(),
            seed: i,
            name: format!("hopper-shac-s{i}"),
            dir: format!("diffrl/hopper-shac-s{i}"),
            config: format!("configs/diffrl/hopper-shac-s{i}.toml"),
            epochs: 10,
        }
    }

    #[test]
    fn one_array_task_per_job_and_a_table_line_each() {
        let jobs: Vec<JobSpec> = (0..3).map(job).collect();
        let tsv = jobs_tsv(&jobs);
        let lines: Vec<&str> = tsv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[2],
            "diffrl\thopper-shac-s1\tdiffrl/hopper-shac-s1\tconfigs/diffrl/hopper-shac-s1.toml"
        );
        let opts = SlurmOptions {
            exe: "/opt/mbmix".into(),
            device: "cpu".into(),
            cpus_per_task: 2,
            max_parallel: Some(8),
        };
        let s = script("/shared/b'ench", 3, &opts);
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("#SBATCH --array=0-2%8\n"), "{s}");
        assert!(s.contains("#SBATCH --cpus-per-task=2\n"));
        assert!(!s.contains("--gres"));
        assert!(s.contains(r"BENCH='/shared/b'\''ench'"), "{s}");
        assert!(s.contains(r#"MBMIX="${MBMIX:-/opt/mbmix}""#), "{s}");
        assert!(s.contains("--resume"));
        assert!(s.contains("$((SLURM_ARRAY_TASK_ID + 2))p"));
        let gpu = script(
            "/b",
            1,
            &SlurmOptions {
                device: "cuda".into(),
                max_parallel: None,
                ..opts
            },
        );
        assert!(gpu.contains("#SBATCH --gres=gpu:1\n") && gpu.contains("--array=0-0\n"));
        assert!(gpu.contains("--device cuda"));
    }
}

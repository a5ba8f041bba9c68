//! Writes the goal shapes of the DaXBench-like tasks under `datasets/goals/`:
//! `push-rope/goal.json` is the straight rope after the scripted expert pushes of
//! [`PushRopeConfig::goal_pushes`] (an arc), as a JSON array of `[x, y, z]` positions.
//!
//! `cargo run --release -p sim-deformable --example make_goals`

use sim_deformable::tasks::push_rope::{GoalSource, PushRope, PushRopeConfig};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cfg = PushRopeConfig {
        goal: GoalSource::Pushes(PushRopeConfig::goal_pushes()),
        ..PushRopeConfig::default()
    };
    let t = std::time::Instant::now();
    let task = PushRope::with_config(cfg)?;
    let goal: Vec<[f64; 3]> = task
        .goal()
        .iter()
        .map(|p| p.map(|c| (c * 1e6).round() / 1e6))
        .collect();
    let dir = root.join("datasets/goals/push-rope");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join("goal.json.tmp");
    std::fs::write(&tmp, serde_json::to_string(&goal)?)?;
    std::fs::rename(&tmp, dir.join("goal.json"))?;
    let (lo, hi) = goal
        .iter()
        .fold(([f64::MAX; 3], [f64::MIN; 3]), |(mut lo, mut hi), p| {
            for d in 0..3 {
                lo[d] = lo[d].min(p[d]);
                hi[d] = hi[d].max(p[d]);
            }
            (lo, hi)
        });
    println!(
        "push-rope goal: {} particles, bounding box {lo:?} – {hi:?}, {:.1} s",
        goal.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

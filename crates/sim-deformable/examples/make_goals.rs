//! Writes the goal shapes of the DaXBench-like tasks under `datasets/goals/`, each as a
//! JSON array of `[x, y, z]` positions rounded to 1e-6:
//! - `push-rope/goal.json`: the straight rope after the scripted expert pushes of
//!   [`PushRopeConfig::goal_pushes`] (an arc);
//! - `fold-cloth1/goal.json`, `fold-cloth3/goal.json`, `fold-tshirt/goal.json`: the rest
//!   cloth after the scripted expert pick-and-places of
//!   [`ClothTaskConfig::expert_folds`] (the unfold tasks' goal is the flat cloth, made
//!   in code);
//! - `whip-rope/goal.json`: the straight rope after the scripted whip of
//!   [`WhipRopeConfig::goal_actions`];
//! - `pour-water/goal.json`, `pour-soup/goal.json`: the particles after the scripted pour
//!   of [`PourConfig::goal_actions`].
//!
//! `cargo run --release -p sim-deformable --example make_goals [task…]` (default: all).

use sim_deformable::tasks::cloth_tasks::{ClothGoal, ClothTask, ClothTaskConfig};
use sim_deformable::tasks::pour::{Pour, PourConfig, PourGoal};
use sim_deformable::tasks::push_rope::{GoalSource, PushRope, PushRopeConfig};
use sim_deformable::tasks::whip_rope::{WhipGoal, WhipRope, WhipRopeConfig};
use std::path::{Path, PathBuf};

const CLOTH_GOALS: [&str; 3] = ["fold-cloth1", "fold-cloth3", "fold-tshirt"];

fn write_goal(root: &Path, task: &str, goal: &[[f64; 3]], secs: f64) -> anyhow::Result<()> {
    let goal: Vec<[f64; 3]> = goal
        .iter()
        .map(|p| p.map(|c| (c * 1e6).round() / 1e6))
        .collect();
    let dir = root.join("datasets/goals").join(task);
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
        "{task} goal: {} particles, bounding box {lo:?} – {hi:?}, {secs:.1} s",
        goal.len()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let want = |t: &str| wanted.is_empty() || wanted.iter().any(|w| w == t);
    if want("push-rope") {
        let t = std::time::Instant::now();
        let task = PushRope::with_config(PushRopeConfig {
            goal: GoalSource::Pushes(PushRopeConfig::goal_pushes()),
            ..PushRopeConfig::default()
        })?;
        write_goal(&root, "push-rope", task.goal(), t.elapsed().as_secs_f64())?;
    }
    if want("whip-rope") {
        let t = std::time::Instant::now();
        let task = WhipRope::with_config(WhipRopeConfig {
            goal: WhipGoal::Actions(WhipRopeConfig::goal_actions()),
            ..WhipRopeConfig::default()
        })?;
        write_goal(&root, "whip-rope", task.goal(), t.elapsed().as_secs_f64())?;
    }
    for name in ["pour-water", "pour-soup"].into_iter().filter(|t| want(t)) {
        let t = std::time::Instant::now();
        let base = PourConfig::by_name(name).expect("a registered pouring task");
        let cfg = PourConfig {
            goal: PourGoal::Actions(base.goal_actions()),
            ..base
        };
        let task = Pour::with_config(cfg)?;
        println!(
            "{name}: {:.1} % of the particles end in the target bowl",
            100.0 * task.fraction_in_target(task.goal())
        );
        write_goal(&root, name, task.goal(), t.elapsed().as_secs_f64())?;
    }
    for name in CLOTH_GOALS.into_iter().filter(|t| want(t)) {
        let t = std::time::Instant::now();
        let folds = ClothTaskConfig::expert_folds(name).expect("a fold task");
        let cfg = ClothTaskConfig {
            goal: ClothGoal::Folds(folds),
            ..ClothTaskConfig::by_name(name).expect("a registered cloth task")
        };
        let task = ClothTask::with_config(cfg)?;
        write_goal(&root, name, task.goal(), t.elapsed().as_secs_f64())?;
    }
    Ok(())
}

//! DaXBench-like tasks (`../shared/reference/tasks.md` §7.2–7.3) as batched
//! [`diff_core::Task`]s: `push-rope`, `push-rope-hard`, `whip-rope`, `fold-cloth1`,
//! `fold-cloth3`, `unfold-cloth1`, `unfold-cloth3`, `fold-tshirt`, `pour-water`, `pour-soup`.

pub mod cloth_tasks;
pub mod common;
pub mod pour;
pub mod push_rope;
pub mod row;
pub mod testing;
pub mod whip_rope;

pub use cloth_tasks::{ClothGoal, ClothReset, ClothTask, ClothTaskConfig, ExpertFold};
pub use pour::{Pour, PourConfig};
pub use push_rope::{PushRope, PushRopeConfig};
pub use row::{RowEnv, RowTask};
pub use whip_rope::{WhipRope, WhipRopeConfig};

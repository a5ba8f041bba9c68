//! DaXBench-like tasks (`../shared/reference/tasks.md` §7.2–7.3) as batched
//! [`diff_core::Task`]s.

pub mod cloth_tasks;
pub mod push_rope;

pub use cloth_tasks::{ClothGoal, ClothReset, ClothTask, ClothTaskConfig, ExpertFold};
pub use push_rope::{PushRope, PushRopeConfig};

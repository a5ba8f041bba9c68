//! DaXBench-like tasks (`../shared/reference/tasks.md` §7.2–7.3) as batched
//! [`diff_core::Task`]s.

pub mod common;
pub mod push_rope;
pub mod row;

pub use push_rope::{PushRope, PushRopeConfig};
pub use row::{RowEnv, RowTask};

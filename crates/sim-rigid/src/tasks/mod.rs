//! Task definitions, one file each (observation layout, reward terms, termination and
//! reset noise as in `shared/reference/tasks.md` §2).

pub mod cartpole;
pub mod locomotion;
pub mod planar;

pub use cartpole::{CartPole, CartPoleSwingUp};

//! Task definitions, one file each (observation layout, reward terms, termination and
//! reset noise as in `shared/reference/tasks.md` §2).

pub mod ant;
pub mod bruce;
pub mod cartpole;
pub mod cheetah;
pub mod hopper;
pub mod humanoid;
pub mod locomotion;
pub mod planar;

pub use ant::Ant;
pub use bruce::Bruce;
pub use cartpole::{CartPole, CartPoleSwingUp};
pub use cheetah::HalfCheetah;
pub use hopper::Hopper;
pub use humanoid::Humanoid;

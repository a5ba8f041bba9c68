//! Device selection: where the simulators run.

use crate::error::Error;
use std::fmt;
use std::str::FromStr;

/// Where a simulator batch runs. The CPU is the default and the reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// Rayon threads over envs.
    #[default]
    Cpu,
    /// A CUDA device by ordinal (feature `cuda` of the simulator crates).
    Cuda,
}

impl FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(Error::InvalidParameter {
                name: "device".into(),
                reason: format!("`{other}` is not a device; use `cpu` or `cuda`"),
            }),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda => write!(f, "cuda"),
        }
    }
}

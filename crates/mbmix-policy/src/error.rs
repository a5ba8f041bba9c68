//! Errors of the policy-learning crate, as values.

/// Everything that can go wrong while building, training, evaluating or checkpointing an agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the environment layer (shapes, parameters, I/O of diff-core).
    #[error(transparent)]
    Core(#[from] diff_core::Error),
    /// An error of the dynamics model (MB-MIX).
    #[error("dynamics model: {0}")]
    Model(#[from] sobolev_model::Error),
    /// A configuration value outside its valid range.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },
    /// The actor gradient norm before clipping was NaN or above 1e6 (SHAC aborts training).
    #[error("non-finite or exploding actor gradient at epoch {epoch}: norm {norm}")]
    NonFiniteGradient { epoch: usize, norm: f32 },
    /// A checkpoint file that cannot be used (corrupt, truncated or from another setup).
    #[error("bad checkpoint {path}: {reason}")]
    BadCheckpoint { path: String, reason: String },
    /// An array argument with the wrong shape.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    Dimension {
        what: String,
        expected: String,
        got: String,
    },
    /// An I/O failure (checkpoint writing).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Builds an [`Error::InvalidConfig`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Dimension`].
    pub fn dim(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Self {
        Error::Dimension {
            what: what.into(),
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

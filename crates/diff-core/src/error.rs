//! The error type shared by every crate of the workspace.

/// Errors that a user can cause (bad input) or meet (non-finite values), as values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A task name that the registry does not know.
    #[error("unknown task `{name}`; known tasks: {known}")]
    UnknownTask { name: String, known: String },
    /// An algorithm name that the registry does not know.
    #[error("unknown algorithm `{name}`; known algorithms: {known}")]
    UnknownAlgorithm { name: String, known: String },
    /// An array with the wrong shape.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    Dimension {
        what: String,
        expected: String,
        got: String,
    },
    /// A parameter outside its valid range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter { name: String, reason: String },
    /// NaN or infinity where a finite value is required.
    #[error("non-finite value in {what}")]
    NonFinite { what: String },
    /// A device that is not available in this build or on this machine.
    #[error("device `{device}` unavailable: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    /// A model or data file that cannot be used.
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
    /// An I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Builds a [`Error::Dimension`] error.
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

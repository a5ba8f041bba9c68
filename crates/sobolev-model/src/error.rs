//! Errors of the dynamics-model crate, as values.

/// Everything that can go wrong while configuring, filling or training a dynamics model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the environment layer (shapes, parameters of diff-core).
    #[error(transparent)]
    Core(#[from] diff_core::Error),
    /// A configuration value outside its valid range; `field` is its dotted name in the
    /// config file (e.g. `sobolev.beta_s`).
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig { field: String, reason: String },
    /// An array argument with the wrong shape.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    Dimension {
        what: String,
        expected: String,
        got: String,
    },
    /// Transitions whose Sobolev targets were built for another form or size than the
    /// buffer or model that receives them.
    #[error("incompatible transitions: {0}")]
    Incompatible(String),
    /// Training was asked for with no transitions to train on.
    #[error("the transition buffer is empty")]
    EmptyBuffer,
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

/// Checks that a 2-D array has `rows × cols`, naming it in the error.
pub(crate) fn check_shape(what: &str, shape: &[usize], rows: usize, cols: usize) -> Result<()> {
    if shape.len() != 2 || shape[0] != rows || shape[1] != cols {
        return Err(Error::dim(
            what,
            format!("[{rows}, {cols}]"),
            format!("{shape:?}"),
        ));
    }
    Ok(())
}

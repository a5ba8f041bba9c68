//! The error type of the bench suite: everything a user can cause through the `mbmix` CLI
//! (bad names, bad config files, bad run directories, bad rollout inputs) as values that
//! name the file, the field or the shape involved.

use std::path::{Path, PathBuf};

/// Errors of the bench suite.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the shared contract (unknown task or algorithm, wrong dimensions, …).
    #[error(transparent)]
    Core(#[from] diff_core::Error),
    /// An error raised by a learning algorithm outside training (construction,
    /// evaluation, checkpoints).
    #[error(transparent)]
    Policy(#[from] mbmix_policy::Error),
    /// Training stopped with an error in the given epoch (1-based). The metrics of the
    /// epochs before it and the checkpoints written so far are kept.
    ///
    /// (Causes are part of the message rather than a `source()`, so that a report of the
    /// error chain does not print them twice.)
    #[error("training failed in epoch {epoch} ({}): {cause}", match .checkpoint {
        Some(e) => format!("last checkpoint: epoch {e}"),
        None => "no checkpoint written".to_string(),
    })]
    Training {
        epoch: usize,
        checkpoint: Option<usize>,
        cause: mbmix_policy::Error,
    },
    /// A file-system operation failed.
    #[error("{action} `{path}`: {cause}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A config file has a key that the run configuration does not define.
    #[error("config file `{file}`: unknown field `{field}` (fields allowed here: {known})")]
    UnknownField {
        file: PathBuf,
        field: String,
        known: String,
    },
    /// A config file gives a field a value of the wrong type (or leaves out a field that
    /// a complete configuration needs).
    #[error("config file `{file}`: field `{field}`: {reason}")]
    FieldType {
        file: PathBuf,
        field: String,
        reason: String,
    },
    /// A config file that cannot be parsed, or a resolved configuration that is invalid.
    #[error("config file `{file}`: {reason}")]
    Config { file: PathBuf, reason: String },
    /// Arguments that contradict each other or the run being resumed.
    #[error("{0}")]
    Usage(String),
    /// `train` without `--resume` was pointed at an existing directory.
    #[error(
        "run directory `{0}` already exists; pass --resume to continue that run, or choose \
         another --out (nothing was written)"
    )]
    RunDirExists(PathBuf),
    /// A run directory that cannot be resumed or evaluated.
    #[error("run directory `{dir}`: {reason}")]
    BadRunDir { dir: PathBuf, reason: String },
    /// An input file (actions, state) with the wrong content.
    #[error("`{path}`: {reason}")]
    BadInput { path: PathBuf, reason: String },
    /// An input array with the wrong shape.
    #[error("`{path}`: {what} must have shape {expected}, got {got}")]
    Shape {
        path: PathBuf,
        what: String,
        expected: String,
        got: String,
    },
    /// Writing a JSON or TOML file failed to serialise.
    #[error("cannot serialise `{path}`: {reason}")]
    Serialise { path: PathBuf, reason: String },
    /// Drawing a plot failed.
    #[error("cannot draw plot `{path}`: {reason}")]
    Plot { path: PathBuf, reason: String },
    /// `mbmix render` on a task that does not describe its states as a scene.
    #[error("task `{0}` cannot be rendered (it describes no scene)")]
    NotRenderable(String),
    /// Drawing or encoding a rendering failed.
    #[error("cannot render `{path}`: {reason}")]
    Render { path: PathBuf, reason: String },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |cause| Error::Io {
            action,
            path: path.to_path_buf(),
            cause,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! One small error type for the whole bootstrap.
//!
//! Every failure must end as a single line on stderr (CloudWatch keeps it) and, under
//! Lambda, as an init error whose type says what went wrong. So an error is a kind,
//! which picks the `Runtime.*` error type, plus one sentence that names the path
//! involved; nothing else is needed, and no error framework earns its size here.

use std::fmt;
use std::io;
use std::path::Path;

/// What went wrong, as the Lambda init-error type reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The executable carries no payload, or it cannot be read.
    PayloadMissing,
    /// The payload does not match its hashes or breaks the format's rules.
    PayloadCorrupt,
    /// The payload was written by a newer or older format version.
    PayloadUnsupported,
    /// The cache directory's filesystem cannot hold the tree.
    NoSpace,
    /// The cache directory is missing, not a directory, not writable, or has a
    /// planted link where coldpack's files belong.
    CacheDir,
    /// Writing the tree failed for another reason.
    Extract,
    /// The deployment lacks the task part the payload keeps its files in.
    TaskPart,
    /// The cache lock was held too long by another start.
    LockTimeout,
    /// The entrypoint could not be exec'd.
    Exec,
    /// The bootstrap itself failed: a bug, reported rather than lost.
    Panic,
    /// A `COLDPACK_*` variable has a value the bootstrap does not understand.
    Config,
}

impl ErrorKind {
    /// The `Category.Reason` string for the Runtime API's init-error endpoint.
    pub fn lambda_type(self) -> &'static str {
        match self {
            ErrorKind::PayloadMissing => "Runtime.PayloadMissing",
            ErrorKind::PayloadCorrupt => "Runtime.PayloadCorrupt",
            ErrorKind::PayloadUnsupported => "Runtime.PayloadUnsupported",
            ErrorKind::NoSpace => "Runtime.NoSpace",
            ErrorKind::CacheDir => "Runtime.CacheDirUnusable",
            ErrorKind::Extract => "Runtime.ExtractFailed",
            ErrorKind::TaskPart => "Runtime.TaskPartMissing",
            ErrorKind::LockTimeout => "Runtime.CacheLockTimeout",
            ErrorKind::Exec => "Runtime.ExecFailed",
            ErrorKind::Panic => "Runtime.BootstrapPanic",
            ErrorKind::Config => "Runtime.InvalidConfig",
        }
    }
}

#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::PayloadCorrupt, message)
    }

    /// An I/O failure while doing `what` to `path`. A full disk is reported as
    /// such whatever the caller was doing, because the remedy is always the same.
    pub fn io(kind: ErrorKind, what: &str, path: &Path, err: io::Error) -> Error {
        Error::io_at(kind, what, &path.display().to_string(), err)
    }

    /// The same, for something named otherwise than by a path of its own (an entry
    /// of the tree, by its path inside it).
    pub fn io_at(kind: ErrorKind, what: &str, name: &str, err: io::Error) -> Error {
        let kind = if err.raw_os_error() == Some(nix::libc::ENOSPC) {
            ErrorKind::NoSpace
        } else {
            kind
        };
        Error::new(kind, format!("{what} {name}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

//! The error type of the runner: every variant names what it is about (a path, a user, a
//! command, a cgroup) so that a caller can print one line a user can act on.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors from setting up, running and cleaning up a container. Each message is whole (it
/// includes its cause), since it may cross from the container's processes as text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation on `path` failed (on the host, or inside the container's root
    /// before it started).
    #[error("{op} {}: {error}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// A system call that is about no particular path failed.
    #[error("{op}: {error}")]
    Sys { op: &'static str, error: io::Error },
    /// The container's command does not exist (exit code 127).
    #[error("{0}: executable file not found in $PATH")]
    CommandNotFound(String),
    /// The container's command exists but cannot be executed (exit code 126).
    #[error("{command}: {reason}")]
    CommandNotExecutable { command: String, reason: String },
    /// The container's user names a user or group that the image's /etc/passwd or
    /// /etc/group lacks.
    #[error("unable to find {kind} {name}: no matching entries in {}", kind.file())]
    UnknownId { kind: IdKind, name: String },
    /// The spec asks for something this host or this sandbox cannot do.
    #[error("{0}")]
    Invalid(String),
    /// Setting up the container failed inside the container's own process; the message names
    /// the step and the path.
    #[error("container setup: {0}")]
    Setup(String),
    /// A cgroup file or directory could not be written.
    #[error("cgroup {}: {error}", path.display())]
    Cgroup { path: PathBuf, error: io::Error },
    /// The overlay mount of the root filesystem failed.
    #[error(transparent)]
    Layer(#[from] layerfs::Error),
}

/// The result type of the runner.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failed filesystem operation `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            error,
        }
    }

    /// A failed system call `op`.
    pub fn sys(op: &'static str, error: impl Into<io::Error>) -> Self {
        Error::Sys {
            op,
            error: error.into(),
        }
    }
}

/// A libpathrs error as the `io::Error` behind it (its errno when it has one).
pub(crate) fn pathrs_io(e: &pathrs::error::Error) -> io::Error {
    match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => io::Error::from_raw_os_error(errno),
        _ => io::Error::other(e.to_string()),
    }
}

/// Adds the operation and path to an error.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T, E: Into<io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e.into()))
    }
}

/// Adds the system call's name to an error.
pub(crate) trait SysContext<T> {
    fn sys(self, op: &'static str) -> Result<T>;
}

impl<T, E: Into<io::Error>> SysContext<T> for std::result::Result<T, E> {
    fn sys(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::sys(op, e))
    }
}

/// A user or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdKind {
    User,
    Group,
}

impl IdKind {
    /// The file the names of this kind are looked up in.
    pub fn file(self) -> &'static str {
        match self {
            IdKind::User => "passwd file",
            IdKind::Group => "group file",
        }
    }
}

impl std::fmt::Display for IdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdKind::User => "user",
            IdKind::Group => "group",
        })
    }
}

/// An error as it crosses from the container's processes to the caller: its kind, so the
/// caller can tell a missing command from a failed mount, and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Remote {
    CommandNotFound(String),
    CommandNotExecutable { command: String, reason: String },
    UnknownId { kind: IdKind, name: String },
    Other(String),
}

impl From<&Error> for Remote {
    fn from(e: &Error) -> Self {
        match e {
            Error::CommandNotFound(c) => Remote::CommandNotFound(c.clone()),
            Error::CommandNotExecutable { command, reason } => Remote::CommandNotExecutable {
                command: command.clone(),
                reason: reason.clone(),
            },
            Error::UnknownId { kind, name } => Remote::UnknownId {
                kind: *kind,
                name: name.clone(),
            },
            other => Remote::Other(other.to_string()),
        }
    }
}

impl From<Remote> for Error {
    fn from(r: Remote) -> Self {
        match r {
            Remote::CommandNotFound(c) => Error::CommandNotFound(c),
            Remote::CommandNotExecutable { command, reason } => {
                Error::CommandNotExecutable { command, reason }
            }
            Remote::UnknownId { kind, name } => Error::UnknownId { kind, name },
            Remote::Other(m) => Error::Setup(m),
        }
    }
}

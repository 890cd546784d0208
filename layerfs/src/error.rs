//! The error type of layerfs: every variant names the thing it is about (a path, a digest, an
//! image, a tar entry) so that the CLI can print one line a user can act on.

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;

use crate::reference::ReferenceError;

/// Errors from the store, the layer code and the mounts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed on `path`.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Content did not hash to the digest it was announced with.
    #[error("{what}: content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    /// Content had another size than announced.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// A layer tar entry that would escape the root or is otherwise refused.
    #[error("layer entry {entry:?}: {reason}")]
    HostileEntry { entry: String, reason: String },
    /// A tar stream that cannot be read.
    #[error("{what}: malformed tar: {source}")]
    Tar {
        what: String,
        #[source]
        source: io::Error,
    },
    /// No image by that name or id in the store.
    #[error("image not found: {0}")]
    ImageNotFound(String),
    /// A name or id prefix that matches more than one image.
    #[error("{0} is ambiguous: it matches more than one image")]
    AmbiguousImage(String),
    /// `rmi` by id of an image named in several repositories, without force (docker's rule).
    #[error(
        "unable to delete {what} (must be forced): the image is referenced in several \
         repositories ({names})"
    )]
    ImageInUse { what: String, names: String },
    /// A blob an image needs is missing from the store.
    #[error("blob {0} is missing from the store")]
    BlobNotFound(Digest),
    /// JSON that does not parse as what it should be.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A malformed image reference.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A format, media type or feature strata does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// A malformed archive or image layout.
    #[error("{path}: {reason}", path = path.display())]
    Archive { path: PathBuf, reason: String },
}

/// The result type of layerfs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path` during `op` (a verb such as "open" or "rename").
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The `io::Error` kind behind this error, when there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::Tar { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Adds the operation and path to an `io::Result`.
pub trait IoContext<T> {
    /// Maps the error to [`Error::Io`] naming `op` and `path`.
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for Result<T, rustix::io::Errno> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e.into()))
    }
}

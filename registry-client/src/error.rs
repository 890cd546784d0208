//! The error type of the registry client: every variant names the registry, the image or the
//! digest it is about, so that the CLI prints one line a user can act on.

use std::io;
use std::path::PathBuf;

use oci_spec::image::Digest;

/// Errors from talking to a registry and from the credential stores.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made (or kept) to the registry.
    #[error("cannot reach {registry}: {detail}")]
    Unreachable { registry: String, detail: String },
    /// The registry (or its token server) refused the credentials, or there were none.
    #[error("unauthorized: {detail} (registry {registry})")]
    Unauthorized { registry: String, detail: String },
    /// The registry has no such manifest or blob.
    #[error("{what} not found in registry {registry}: {detail}")]
    NotFound {
        registry: String,
        what: String,
        detail: String,
    },
    /// Any other answer than the protocol allows at that point.
    #[error("registry {registry} answered {status} to {request}: {detail}")]
    Status {
        registry: String,
        request: String,
        status: u16,
        detail: String,
    },
    /// Something the registry sent that does not follow the protocol.
    #[error("{what} from registry {registry}: {reason}")]
    Protocol {
        registry: String,
        what: String,
        reason: String,
    },
    /// Content that does not hash to the digest it was announced with: nothing was stored.
    #[error(
        "{what}: content does not match its digest {expected} (got {actual}); nothing was stored"
    )]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    /// An index with no manifest for the platform asked for.
    #[error("{reference} has no image for platform {wanted}; it has: {available}")]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    /// Two images for one platform, to go into one index.
    #[error("{first} and {second} are both images for {platform}: an index has one per platform")]
    PlatformClash {
        platform: String,
        first: String,
        second: String,
    },
    /// A malformed `--platform`.
    #[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64")]
    InvalidPlatform(String),
    /// A format or feature strata does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// A credential file that cannot be read or written.
    #[error("{op} {}: {reason}", path.display())]
    CredentialFile {
        op: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// A `docker-credential-NAME` helper that failed.
    #[error("credential helper docker-credential-{helper} {action} for {registry}: {reason}")]
    CredentialHelper {
        helper: String,
        action: &'static str,
        registry: String,
        reason: String,
    },
    /// A local file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The store refused or failed (a missing image, a layer that does not extract, …).
    #[error(transparent)]
    Store(#[from] layerfs::Error),
    /// A malformed image reference.
    #[error(transparent)]
    Reference(#[from] layerfs::reference::ReferenceError),
    /// A layer that could not be pulled or pushed, and why.
    #[error("layer {digest}: {source}")]
    Layer {
        digest: Digest,
        #[source]
        source: Box<Error>,
    },
}

/// The result type of the registry client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error, as the reason `digest` failed.
    pub(crate) fn for_layer(self, digest: &Digest) -> Error {
        match self {
            e @ (Error::Layer { .. } | Error::DigestMismatch { .. }) => e,
            e => Error::Layer {
                digest: digest.clone(),
                source: Box::new(e),
            },
        }
    }
}

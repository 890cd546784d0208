//! What a pull or push reports while it runs. The library never prints: the CLI renders these
//! events as progress bars, plain lines or JSON, and the builder forwards them.

use std::time::Duration;

use oci_spec::image::Digest;

/// What a blob is, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Layer,
    Config,
    Manifest,
}

/// Why a blob was not transferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// Pull: the store had the blob and its extracted layer. Push: the registry had the blob.
    AlreadyExists,
    /// Push: the registry linked it from another repository of its own (`?mount=&from=`).
    Mounted { from: String },
}

/// One thing that happened during a transfer.
#[derive(Debug, Clone)]
pub enum Event {
    /// The manifest to pull was found (after platform selection) or the image to push chosen.
    Resolved {
        reference: String,
        manifest: Digest,
        platform: Option<String>,
    },
    /// A blob transfer starts (`resumed_at` > 0: an earlier partial download continues).
    BlobStarted {
        digest: Digest,
        kind: BlobKind,
        size: u64,
        resumed_at: u64,
    },
    /// Bytes of a blob moved so far.
    BlobProgress {
        digest: Digest,
        done: u64,
        total: u64,
    },
    /// A blob that did not need to move.
    BlobSkipped {
        digest: Digest,
        kind: BlobKind,
        size: u64,
        why: Skipped,
    },
    /// A blob is done (pulled: verified, stored and extracted; pushed: accepted).
    BlobDone {
        digest: Digest,
        kind: BlobKind,
        size: u64,
    },
    /// A request failed in a way that may pass: it is tried again after `delay`.
    Retrying {
        what: String,
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// Something the user should know that does not stop the transfer.
    Warning(String),
}

/// Receives events; called from the transfer's tasks, so it must be shareable.
pub trait Reporter: Sync {
    fn report(&self, event: Event);
}

/// A reporter that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _event: Event) {}
}

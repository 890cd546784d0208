//! Inspect: an image in a registry, without pulling it (skopeo's `inspect docker://`).
//!
//! Only the manifests and the config move: the manifest is resolved exactly as a pull resolves
//! it (an index to the platform asked for), so what this shows is what `pull` would store, and
//! every document is checked against its digest. Nothing is written anywhere.

use oci_spec::image::{Descriptor, Digest, MediaType};

use layerfs::reference::Reference;

use crate::client::{Client, ConnectOptions};
use crate::error::Result;
use crate::events::Reporter;
use crate::pull::{self, PullOptions, download_config, resolve};

/// An image as a registry serves it.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    /// The image manifest (for a multi-platform image, the chosen platform's).
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    /// The config blob; its digest is the image id.
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    /// What the reference names, byte for byte as served: the index of a multi-platform image,
    /// or else the image manifest itself.
    pub raw: Vec<u8>,
    /// The digest of `raw`: the digest to pin the reference by.
    pub raw_digest: Digest,
}

/// Fetches what `reference` names in its registry; `opts.platform` picks from an index
/// (`None`: this host's platform). `max_concurrent_layers` plays no part.
pub async fn inspect_async(
    reference: &Reference,
    opts: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<RemoteImage> {
    let (client, resolved) = resolve(reference, opts, reporter).await?;
    let config = resolved.image.config().clone();
    let config_bytes = download_config(&client, reference.repository(), &config).await?;
    let (raw, raw_digest) = match resolved.index {
        Some(index) => index,
        None => (resolved.bytes.clone(), resolved.digest.clone()),
    };
    Ok(RemoteImage {
        manifest: Descriptor::new(
            MediaType::from(resolved.media_type.as_str()),
            resolved.bytes.len() as u64,
            resolved.digest,
        ),
        manifest_bytes: resolved.bytes,
        config,
        config_bytes,
        raw,
        raw_digest,
    })
}

/// The manifest (or index) `reference` names, byte for byte as served and checked against its
/// digest, with its media type and digest; nothing resolved, nothing else fetched.
pub async fn fetch_manifest_async(
    reference: &Reference,
    opts: &ConnectOptions,
    reporter: &dyn Reporter,
) -> Result<(String, Vec<u8>, Digest)> {
    let repo = reference.repository();
    let scopes = vec![format!("repository:{repo}:pull")];
    let client = Client::connect(reference, scopes, opts, None, reporter).await?;
    pull::fetch_manifest(
        &client,
        repo,
        &reference.tag_or_digest(),
        reference.digest(),
    )
    .await
}

/// Blocking [`fetch_manifest_async`], on a runtime of its own (not to be called from async
/// code).
pub fn fetch_manifest(
    reference: &Reference,
    opts: &ConnectOptions,
    reporter: &dyn Reporter,
) -> Result<(String, Vec<u8>, Digest)> {
    crate::runtime()?.block_on(fetch_manifest_async(reference, opts, reporter))
}

/// Blocking [`inspect_async`], on a runtime of its own (not to be called from async code).
pub fn inspect(
    reference: &Reference,
    opts: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<RemoteImage> {
    crate::runtime()?.block_on(inspect_async(reference, opts, reporter))
}

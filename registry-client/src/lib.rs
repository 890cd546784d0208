//! registry-client: the OCI distribution protocol for strata — pull images from registries
//! into the store (layers extracted as they stream in), push them back, and log in.
//!
//! ```text
//! pull(&store, &reference, &PullOptions, &reporter) -> Pulled      registry → store
//! push(&store, "image", Some(&dest), &PushOptions, &reporter)      store → registry
//! inspect(&reference, &PullOptions, &reporter) -> RemoteImage      manifest + config only
//! copy(&source, dest, spool, &CopyOptions, &reporter) -> Pushed    registry → registry
//! tags(&repository, &ConnectOptions, &reporter) -> Vec<String>     a repository's tags
//! make_index(&sources, …) -> NewIndex; push_index(&index, &target, …)   multi-platform merge
//! login(registry, credential, &ConnectOptions) / CredentialStore   credentials
//! ```
//!
//! The async forms (`pull_async`, `push_async`, `copy_async`, …) run on a multi-threaded tokio
//! runtime; the blocking ones make their own.
//!
//! Why not the `oci-client` crate: it buffers pulled layers in memory, has no retries, no
//! resumption with `Range`, no credential helpers and no cross-repository mounts, and strata
//! wants every network byte to go straight into a verified blob and the layer extraction in one
//! pass. So the protocol is spoken here directly over `reqwest` (rustls with the `ring` provider
//! and the system's roots, from [`http_client`], which the builder's `ADD` of URLs uses too);
//! the parts are small: [`client`] (scheme, auth handshake, retries), [`pull`](mod@pull),
//! [`push`](mod@push), [`copy`](mod@copy), [`merge`], [`inspect`](mod@inspect), [`tags`](mod@tags),
//! [`credentials`], and the pure [`challenge`], [`manifest`] and [`platform`].

pub mod challenge;
pub mod client;
pub mod copy;
pub mod credentials;
pub mod error;
pub mod events;
pub mod inspect;
pub mod manifest;
pub mod merge;
pub mod platform;
pub mod pull;
pub mod push;
pub mod tags;

use layerfs::reference::Reference;

pub use client::{ConnectOptions, RetryPolicy, http_client};
pub use copy::{
    CopyOptions, copy, copy_async, copy_from_layout, copy_from_layout_async, copy_to_layout,
    copy_to_layout_async,
};
pub use credentials::{Credential, CredentialStore};
pub use error::{Error, Result};
pub use events::{BlobKind, Event, Reporter, Silent, Skipped};
pub use inspect::{RemoteImage, fetch_manifest, fetch_manifest_async, inspect, inspect_async};
pub use merge::{
    IndexAnnotations, NewIndex, make_index, make_index_async, push_index, push_index_async,
};
pub use platform::Platform;
pub use pull::{PullOptions, Pulled, pull, pull_async};
pub use push::{PushOptions, Pushed, push, push_async, push_manifest, push_manifest_async};
pub use tags::{tags, tags_async};

/// A runtime for the blocking entry points: two workers (the extraction and hashing run on
/// blocking threads of their own).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            op: "start the async runtime in",
            path: std::path::PathBuf::from("/proc/self"),
            source,
        })
}

/// The registry a user typed (`docker.io`, `https://index.docker.io/v1/`, `localhost:5000`)
/// as the host strata keys credentials by; an error names what is wrong with it.
pub fn parse_registry(input: &str) -> Result<String> {
    let key = credentials::registry_key(input.trim());
    // The reference grammar checks the host; the repository is a placeholder.
    Reference::parse(&format!("{key}/strata-login"))?;
    Ok(key)
}

/// Checks `credential` against `registry` (a `parse_registry` host): the registry, or its token
/// server, must accept it. Nothing is stored.
pub async fn login_async(
    registry: &str,
    credential: Credential,
    opts: &ConnectOptions,
) -> Result<()> {
    let probe = Reference::parse(&format!("{registry}/strata-login"))?;
    let client =
        client::Client::connect(&probe, Vec::new(), opts, Some(credential), &Silent).await?;
    let url = client.url("/v2/");
    let resp = client
        .send(reqwest::Method::GET, &url, true, |rb| rb)
        .await?;
    if !resp.status().is_success() {
        return Err(client.status_error("GET /v2/", resp).await);
    }
    Ok(())
}

/// Blocking [`login_async`].
pub fn login(registry: &str, credential: Credential, opts: &ConnectOptions) -> Result<()> {
    runtime()?.block_on(login_async(registry, credential, opts))
}

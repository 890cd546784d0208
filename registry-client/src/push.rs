//! Push: an image of the store to a registry.
//!
//! Every blob (layers and config, up to [`PushOptions::max_concurrent_blobs`] at once) is first
//! asked for with `HEAD`; a blob the registry has is skipped. A blob that an image of the store
//! names from another repository of the same registry is mounted from there
//! (`POST …/uploads/?mount=&from=`, with a token for both repositories), which costs no upload.
//! Otherwise small blobs go up in one `PUT`, large ones in one streamed `PATCH`; a registry that
//! refuses a style gets the next one (chunked `PATCH`es with `Content-Range`, then a single
//! `PUT`) for the rest of the push. Blobs are streamed from the store (for a `copy`, from the
//! source registry's `GET`, hashed on the way), never held whole. A failed upload starts again
//! with a new session. Manifests go last, children before an index, exactly
//! as stored, so the digest on the registry is the store's.

use std::collections::{HashMap, HashSet};
use std::io::{self, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use layerfs::digest::{Hasher, parse_sha256};
use layerfs::reference::Reference;
use layerfs::store::Store;
use oci_spec::image::{Descriptor, Digest, ImageManifest};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Body, Method, Response, StatusCode};
use tokio::io::AsyncReadExt as _;

use crate::client::{Client, ConnectOptions};
use crate::error::{Error, Result};
use crate::events::{BlobKind, Event, Reporter, Skipped};
use crate::manifest::{self, Manifest};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub connect: ConnectOptions,
    /// How many blobs upload at once.
    pub max_concurrent_blobs: usize,
    /// Blobs up to this size go up in a single `PUT`.
    pub monolithic_limit: u64,
    /// The chunk size of a chunked upload (when a registry refuses a streamed one).
    pub chunk_size: u64,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            connect: ConnectOptions::default(),
            max_concurrent_blobs: 4,
            monolithic_limit: 1 << 20,
            chunk_size: 16 << 20,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Where the image went.
    pub reference: Reference,
    /// The digest of the top manifest on the registry.
    pub digest: Digest,
    /// Blobs uploaded, mounted or found already there.
    pub blobs: usize,
    /// Bytes uploaded.
    pub uploaded: u64,
}

/// How blobs are uploaded; a registry that refuses one style gets the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Style {
    /// One `PATCH` with the whole blob, then `PUT ?digest=`.
    Streamed = 0,
    /// `PATCH`es of `chunk_size` with `Content-Range`, then `PUT ?digest=`.
    Chunked = 1,
    /// One `PUT ?digest=` with the whole blob.
    Monolithic = 2,
}

impl Style {
    fn from_u8(v: u8) -> Style {
        match v {
            0 => Style::Streamed,
            1 => Style::Chunked,
            _ => Style::Monolithic,
        }
    }
}

/// What is to be pushed: the blobs, then the manifests (children first, the top one last).
#[derive(Default)]
pub(crate) struct Plan {
    pub blobs: Vec<(Descriptor, BlobKind)>,
    pub manifests: Vec<(Descriptor, Vec<u8>)>,
}

impl Plan {
    /// Adds an image manifest's config and layers (each blob once) and then the manifest.
    pub fn add_image(&mut self, desc: Descriptor, bytes: Vec<u8>, image: &ImageManifest) {
        for (d, kind) in std::iter::once((image.config(), BlobKind::Config))
            .chain(image.layers().iter().map(|l| (l, BlobKind::Layer)))
        {
            if !self.blobs.iter().any(|(b, _)| b.digest() == d.digest()) {
                self.blobs.push((d.clone(), kind));
            }
        }
        self.manifests.push((desc, bytes));
    }
}

/// Where the bytes of a blob to upload come from.
#[derive(Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// The store has every blob of the plan.
    Store,
    /// A repository of another (or the same) registry. A blob the destination has neither
    /// got nor mounted streams from the source's `GET` into the upload, hashed on the way: a
    /// blob that does not match its digest fails before the upload is completed. A registry
    /// that takes only chunked uploads gets the blob from the store, downloaded into it
    /// (verified) first and dropped once uploaded: the store is a spool.
    Registry {
        client: &'a Client<'a>,
        repository: &'a str,
    },
}

impl Origin<'_> {
    /// Makes sure `store` holds the blob `desc`; returns the bytes downloaded.
    async fn fetch(&self, store: &Store, desc: &Descriptor) -> Result<u64> {
        match self {
            Origin::Store => Ok(0),
            Origin::Registry { client, repository } => {
                crate::pull::download_blob(client, store, repository, desc).await
            }
        }
    }

    /// The blob `desc` as a request body streaming from the source registry; `None` when the
    /// bytes come from the store.
    async fn stream(&self, store: &Store, desc: &Descriptor) -> Result<Option<SourceStream>> {
        match self {
            Origin::Registry { client, repository } if !store.has_blob(desc.digest()) => {
                SourceStream::open(client, repository, desc).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Once `digest` is uploaded: a spooled blob is dropped.
    fn release(&self, store: &Store, digest: &Digest) -> Result<()> {
        match self {
            Origin::Store => Ok(()),
            Origin::Registry { .. } => Ok(store.remove_blob(digest)?),
        }
    }
}

/// Pushes the local image `image` (a name, an id or a digest) to `destination` (default: the
/// name it was given by); see the module doc.
pub async fn push_async(
    store: &Store,
    image: &str,
    destination: Option<&Reference>,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let (name, top) = find_local(store, image)?;
    let dest = match (destination, name) {
        (Some(d), _) => d.clone(),
        (None, Some(n)) => n,
        (None, None) => {
            return Err(Error::Unsupported(format!(
                "image {image} has no name to push it as: give a destination, e.g. strata push {image} REGISTRY/NAME:TAG"
            )));
        }
    };
    push_manifest_async(store, &top, dest, opts, reporter).await
}

/// Pushes the manifest `top` of the store (an image manifest, or an index and the manifests it
/// lists) with every blob they need, to `dest`.
pub async fn push_manifest_async(
    store: &Store,
    top: &Descriptor,
    dest: Reference,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let plan = plan(store, top)?;
    let sources = mount_sources(store, &dest, &plan)?;
    push_plan(store, &plan, &sources, Origin::Store, dest, opts, reporter).await
}

/// Pushes what `plan` lists to `dest`: the blobs (those in `mounts` mounted from the
/// repository named there, when the registry agrees) from `origin`, then the manifests.
pub(crate) async fn push_plan(
    store: &Store,
    plan: &Plan,
    mounts: &HashMap<Digest, String>,
    origin: Origin<'_>,
    dest: Reference,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let (last, children) = plan
        .manifests
        .split_last()
        .expect("a plan has its top manifest");
    let mut scopes = vec![format!("repository:{}:pull,push", dest.repository())];
    let mut seen = HashSet::new();
    for repo in mounts.values() {
        if seen.insert(repo.clone()) {
            scopes.push(format!("repository:{repo}:pull"));
        }
    }
    let client = Client::connect(&dest, scopes, &opts.connect, None, reporter).await?;
    reporter.report(Event::Resolved {
        reference: dest.to_string(),
        manifest: last.0.digest().clone(),
        platform: None,
    });
    let style = AtomicU8::new(Style::Streamed as u8);
    let uploaded: Vec<u64> = futures_util::stream::iter(plan.blobs.iter().map(|(desc, kind)| {
        let mount = mounts.get(desc.digest()).map(String::as_str);
        push_blob(
            &client, store, origin, &dest, desc, *kind, mount, opts, &style,
        )
    }))
    .buffer_unordered(opts.max_concurrent_blobs.max(1))
    .try_collect()
    .await?;

    for (desc, bytes) in children {
        put_manifest(
            &client,
            dest.repository(),
            desc.digest().as_ref(),
            desc,
            bytes,
        )
        .await?;
    }
    if let Some(d) = dest.digest()
        && d != last.0.digest()
    {
        return Err(Error::DigestMismatch {
            what: format!("pushing {} to {dest}", last.0.digest()),
            expected: d.clone(),
            actual: last.0.digest().clone(),
        });
    }
    let target = dest
        .tag()
        .map_or_else(|| last.0.digest().to_string(), str::to_owned);
    put_manifest(&client, dest.repository(), &target, &last.0, &last.1).await?;
    Ok(Pushed {
        reference: dest,
        digest: last.0.digest().clone(),
        blobs: plan.blobs.len(),
        uploaded: uploaded.iter().sum(),
    })
}

/// Blocking [`push_async`], on a runtime of its own (not to be called from async code).
pub fn push(
    store: &Store,
    image: &str,
    destination: Option<&Reference>,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    crate::runtime()?.block_on(push_async(store, image, destination, opts, reporter))
}

/// Blocking [`push_manifest_async`], on a runtime of its own (not to be called from async code).
pub fn push_manifest(
    store: &Store,
    top: &Descriptor,
    dest: Reference,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    crate::runtime()?.block_on(push_manifest_async(store, top, dest, opts, reporter))
}

/// The local image's manifest descriptor, and the name it was asked for by (if it was).
fn find_local(store: &Store, image: &str) -> Result<(Option<Reference>, Descriptor)> {
    if let Ok(name) = Reference::parse(image)
        && name.digest().is_none()
        && let Some(r) = store
            .records()?
            .into_iter()
            .find(|r| r.name.as_ref() == Some(&name))
    {
        return Ok((Some(name), r.manifest));
    }
    let found = store.resolve_image(image)?;
    let size = store
        .open_blob(&found.manifest_digest)?
        .metadata()
        .map(|m| m.len())
        .unwrap_or(0);
    let desc = Descriptor::new(
        found.manifest_media_type.clone(),
        size,
        found.manifest_digest.clone(),
    );
    let name = Reference::parse(image)
        .ok()
        .filter(|r| found.names.contains(r))
        .or_else(|| found.names.first().cloned());
    Ok((name, desc))
}

/// Walks the manifest (and an index's children) in the store: what blobs and manifests to push.
fn plan(store: &Store, top: &Descriptor) -> Result<Plan> {
    let mut plan = Plan::default();
    add_manifest(store, top, &mut plan, 0)?;
    Ok(plan)
}

fn add_manifest(store: &Store, desc: &Descriptor, plan: &mut Plan, depth: u32) -> Result<()> {
    let bytes = store.read_blob(desc.digest())?;
    let (_, parsed) =
        manifest::parse(&bytes, Some(desc.media_type().as_ref())).map_err(|reason| {
            layerfs::Error::Unsupported(format!(
                "manifest {} in the store: {reason}",
                desc.digest()
            ))
        })?;
    match parsed {
        Manifest::Image(m) => {
            if let Some(missing) = std::iter::once(m.config())
                .chain(m.layers())
                .find(|d| !store.has_blob(d.digest()))
            {
                return Err(layerfs::Error::BlobNotFound(missing.digest().clone()).into());
            }
            plan.add_image(desc.clone(), bytes, &m);
        }
        Manifest::Index(index) if depth == 0 => {
            for child in index.manifests() {
                add_manifest(store, child, plan, depth + 1)?;
            }
            plan.manifests.push((desc.clone(), bytes));
        }
        Manifest::Index(_) => {
            return Err(Error::Unsupported(format!(
                "manifest {}: an index inside an index",
                desc.digest()
            )));
        }
    }
    Ok(())
}

/// For each blob to push, another repository of the destination's registry that has it, as far
/// as the store knows: an image there (pulled from it, or pushed to it) lists it.
fn mount_sources(store: &Store, dest: &Reference, plan: &Plan) -> Result<HashMap<Digest, String>> {
    let wanted: HashSet<&Digest> = plan.blobs.iter().map(|(d, _)| d.digest()).collect();
    let mut out = HashMap::new();
    for record in store.records()? {
        let Some(name) = record
            .name
            .filter(|n| n.registry() == dest.registry() && n.repository() != dest.repository())
        else {
            continue;
        };
        let Ok(bytes) = store.read_blob(record.manifest.digest()) else {
            continue;
        };
        if let Ok((_, Manifest::Image(m))) =
            manifest::parse(&bytes, Some(record.manifest.media_type().as_ref()))
        {
            for d in std::iter::once(m.config()).chain(m.layers()) {
                if wanted.contains(d.digest()) {
                    out.entry(d.digest().clone())
                        .or_insert_with(|| name.repository().to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// Pushes one blob (unless the registry has it); returns the bytes uploaded.
#[allow(clippy::too_many_arguments)]
async fn push_blob(
    client: &Client<'_>,
    store: &Store,
    origin: Origin<'_>,
    dest: &Reference,
    desc: &Descriptor,
    kind: BlobKind,
    source: Option<&str>,
    opts: &PushOptions,
    style: &AtomicU8,
) -> Result<u64> {
    let reporter = client.reporter();
    let repo = dest.repository();
    let (digest, size) = (desc.digest().clone(), desc.size());
    let head = client
        .send(
            Method::HEAD,
            &client.url(&format!("/v2/{repo}/blobs/{digest}")),
            true,
            |rb| rb,
        )
        .await
        .map_err(|e| e.for_layer(&digest))?;
    match head.status() {
        s if s.is_success() => {
            reporter.report(Event::BlobSkipped {
                digest,
                kind,
                size,
                why: Skipped::AlreadyExists,
            });
            return Ok(0);
        }
        StatusCode::NOT_FOUND => {}
        _ => {
            return Err(client
                .status_error(&format!("HEAD blob {digest}"), head)
                .await
                .for_layer(&digest));
        }
    }
    let retry = client.retry();
    let mut attempt = 0;
    let mut mount_from = source;
    loop {
        attempt += 1;
        let result = upload_once(
            client, store, origin, repo, desc, kind, mount_from, opts, style,
        )
        .await;
        match result {
            Ok(Some(n)) => {
                origin.release(store, &digest)?;
                reporter.report(Event::BlobDone { digest, kind, size });
                return Ok(n);
            }
            Ok(None) => {
                let from = mount_from.unwrap_or_default().to_owned();
                reporter.report(Event::BlobSkipped {
                    digest,
                    kind,
                    size,
                    why: Skipped::Mounted { from },
                });
                return Ok(0);
            }
            Err(e) if attempt < retry.attempts && worth_retrying(&e) => {
                let delay = retry.delay(attempt);
                reporter.report(Event::Retrying {
                    what: format!("upload of blob {digest}"),
                    attempt,
                    delay,
                    reason: e.to_string(),
                });
                // A mount that failed oddly is not tried again: upload the blob.
                mount_from = None;
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e.for_layer(&digest)),
        }
    }
}

fn worth_retrying(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } => true,
        Error::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        _ => false,
    }
}

/// One upload session: mount, or upload in the current style (falling back on refusal).
/// `Ok(None)`: mounted.
#[allow(clippy::too_many_arguments)]
async fn upload_once(
    client: &Client<'_>,
    store: &Store,
    origin: Origin<'_>,
    repo: &str,
    desc: &Descriptor,
    kind: BlobKind,
    mount_from: Option<&str>,
    opts: &PushOptions,
    style: &AtomicU8,
) -> Result<Option<u64>> {
    let digest = desc.digest();
    let size = desc.size();
    let start_path = match mount_from {
        Some(from) => format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
        None => format!("/v2/{repo}/blobs/uploads/"),
    };
    let mut location = start_upload(client, &start_path, digest).await?;
    let Some(loc) = location.take() else {
        return Ok(None);
    };
    let mut location = loc;
    client.reporter().report(Event::BlobStarted {
        digest: digest.clone(),
        kind,
        size,
        resumed_at: 0,
    });
    loop {
        let current = if size <= opts.monolithic_limit {
            Style::Monolithic
        } else {
            Style::from_u8(style.load(Ordering::Relaxed))
        };
        // Chunks are ranges of a file: a blob from another registry is spooled for them.
        let stream = match current {
            Style::Chunked => {
                origin.fetch(store, desc).await?;
                None
            }
            _ => origin.stream(store, desc).await?,
        };
        let payload = match &stream {
            Some(s) => Payload::Stream(s),
            None => Payload::File(store),
        };
        let attempt = match current {
            Style::Monolithic => put_whole(client, &payload, &location, desc).await,
            Style::Streamed => patch_streamed(client, &payload, &location, desc).await,
            Style::Chunked => patch_chunks(client, store, &location, desc, opts.chunk_size).await,
        };
        if let Some(actual) = stream.as_ref().and_then(SourceStream::mismatch) {
            return Err(Error::DigestMismatch {
                what: format!("blob {digest} from the source registry"),
                expected: digest.clone(),
                actual,
            });
        }
        match attempt {
            Ok(()) => return Ok(Some(size)),
            Err(Refused(why)) if current != Style::Monolithic => {
                let next = if current == Style::Streamed {
                    Style::Chunked
                } else {
                    Style::Monolithic
                };
                style.fetch_max(next as u8, Ordering::Relaxed);
                client.reporter().report(Event::Warning(format!(
                    "registry {} refused a {} upload ({why}); using {} uploads",
                    client.registry(),
                    style_name(current),
                    style_name(next)
                )));
                // The refused session may hold part of the blob: start a clean one.
                location = start_upload(client, &format!("/v2/{repo}/blobs/uploads/"), digest)
                    .await?
                    .ok_or_else(|| {
                        client.protocol(
                            format!("upload of {digest}"),
                            "a plain upload was answered as a mount",
                        )
                    })?;
            }
            Err(Refused(why)) => {
                return Err(client.protocol(format!("upload of blob {digest}"), why));
            }
            Err(Failed(e)) => return Err(e),
        }
    }
}

fn style_name(s: Style) -> &'static str {
    match s {
        Style::Streamed => "streamed",
        Style::Chunked => "chunked",
        Style::Monolithic => "monolithic",
    }
}

/// How one upload style ended when it did not succeed.
enum UploadError {
    /// The registry does not take this style (4xx): try the next.
    Refused(String),
    /// Anything else.
    Failed(Error),
}
use UploadError::{Failed, Refused};

impl From<Error> for UploadError {
    fn from(e: Error) -> Self {
        Failed(e)
    }
}

/// `POST` to start an upload (or mount). `Ok(None)`: the mount worked.
async fn start_upload(client: &Client<'_>, path: &str, digest: &Digest) -> Result<Option<String>> {
    let resp = client
        .send(Method::POST, &client.url(path), true, |rb| {
            rb.header(CONTENT_LENGTH, 0)
        })
        .await?;
    match resp.status() {
        StatusCode::CREATED if path.contains("mount=") => Ok(None),
        StatusCode::ACCEPTED => Ok(Some(location_of(client, &resp, digest)?)),
        _ => Err(client
            .status_error(&format!("POST upload of blob {digest}"), resp)
            .await),
    }
}

fn location_of(client: &Client<'_>, resp: &Response, digest: &Digest) -> Result<String> {
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            client.protocol(
                format!("upload of blob {digest}"),
                "the answer has no Location",
            )
        })?;
    Ok(client.url(loc))
}

/// `location` with `digest=` added to its query.
fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The bytes of an upload request.
enum Payload<'a> {
    /// A range of the blob's file in the store.
    File(&'a Store),
    /// The whole blob, streaming from the source registry.
    Stream(&'a SourceStream),
}

/// A blob streaming from a source registry's `GET`, hashed as it passes, for one upload
/// request. It can be sent once: a request built again (a retried send) gets a body that
/// fails, and the upload starts over with a new `GET`.
struct SourceStream {
    body: std::sync::Mutex<Option<Body>>,
    /// Bytes passed on so far, for the progress display.
    sent: Arc<AtomicU64>,
    /// Set when the whole blob has passed and does not hash to its digest: what it hashed to.
    mismatch: Arc<std::sync::Mutex<Option<Digest>>>,
}

impl SourceStream {
    async fn open(client: &Client<'_>, repo: &str, desc: &Descriptor) -> Result<SourceStream> {
        let (digest, size) = (desc.digest().clone(), desc.size());
        let url = client.url(&format!("/v2/{repo}/blobs/{digest}"));
        let resp = client.send(Method::GET, &url, true, |rb| rb).await?;
        if !resp.status().is_success() {
            return Err(client
                .status_error(&format!("blob {digest} of {repo}"), resp)
                .await);
        }
        let sent = Arc::new(AtomicU64::new(0));
        let mismatch = Arc::new(std::sync::Mutex::new(None));
        let (counted, verdict) = (sent.clone(), mismatch.clone());
        let chunks = futures_util::stream::try_unfold(
            (resp, Hasher::default()),
            move |(mut resp, mut hasher)| {
                let (counted, verdict, digest) = (counted.clone(), verdict.clone(), digest.clone());
                async move {
                    let Some(chunk) = resp.chunk().await.map_err(io::Error::other)? else {
                        let len = hasher.len();
                        let actual = hasher.digest();
                        if actual != digest || len != size {
                            *verdict.lock().expect("not poisoned") = Some(actual);
                            return Err(io::Error::other(format!(
                                "blob {digest} from the source does not match its digest"
                            )));
                        }
                        return Ok(None);
                    };
                    if hasher.len() + chunk.len() as u64 > size {
                        return Err(io::Error::other(format!(
                            "the source sent more than the {size} bytes of blob {digest}"
                        )));
                    }
                    hasher.update(&chunk);
                    counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    Ok(Some((chunk, (resp, hasher))))
                }
            },
        );
        Ok(SourceStream {
            body: std::sync::Mutex::new(Some(Body::wrap_stream(chunks))),
            sent,
            mismatch,
        })
    }

    /// The body, the first time; after that a body that fails at once.
    fn take_body(&self) -> Body {
        self.body
            .lock()
            .expect("not poisoned")
            .take()
            .unwrap_or_else(|| {
                Body::wrap_stream(futures_util::stream::once(async {
                    Err::<bytes::Bytes, _>(io::Error::other("the source stream was sent already"))
                }))
            })
    }

    fn mismatch(&self) -> Option<Digest> {
        self.mismatch.lock().expect("not poisoned").clone()
    }
}

/// A request body streaming `len` bytes of the blob from `offset`, counting them in `sent`.
fn blob_body(
    store: &Store,
    digest: &Digest,
    offset: u64,
    len: u64,
    sent: Arc<AtomicU64>,
) -> Result<Body> {
    let mut file = store.open_blob(digest)?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|source| Error::Io {
            op: "seek in",
            path: store.blob_path(digest),
            source,
        })?;
    let reader = tokio::fs::File::from_std(file).take(len);
    let stream =
        tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).inspect(move |chunk| {
            if let Ok(c) = chunk {
                sent.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
        });
    Ok(Body::wrap_stream(stream))
}

/// Runs an upload request, reporting the bytes sent every 100 ms.
async fn with_progress<T>(
    client: &Client<'_>,
    digest: &Digest,
    base: u64,
    total: u64,
    sent: &AtomicU64,
    fut: impl Future<Output = T>,
) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => {
                let done = (base + sent.load(Ordering::Relaxed)).min(total);
                client.reporter().report(Event::BlobProgress { digest: digest.clone(), done, total });
            }
        }
    }
}

/// What a 4xx answer to an upload request means: refused style, or a real error.
async fn judge(
    client: &Client<'_>,
    what: &str,
    resp: Response,
    ok: StatusCode,
) -> Result<Response, UploadError> {
    let status = resp.status();
    if status == ok || (ok == StatusCode::ACCEPTED && status == StatusCode::NO_CONTENT) {
        return Ok(resp);
    }
    let e = client.status_error(what, resp).await;
    if status.is_client_error()
        && status != StatusCode::NOT_FOUND
        && status != StatusCode::UNAUTHORIZED
        && status != StatusCode::FORBIDDEN
    {
        return Err(Refused(format!("{status}")));
    }
    Err(Failed(e))
}

/// Sends `len` bytes of the blob from `offset` to `url` (a chunk with its `Content-Range`),
/// reporting progress; returns the answer when it is `ok`.
#[allow(clippy::too_many_arguments)]
async fn send_bytes(
    client: &Client<'_>,
    payload: &Payload<'_>,
    method: Method,
    url: &str,
    desc: &Descriptor,
    (offset, len): (u64, u64),
    chunk: bool,
    ok: StatusCode,
) -> Result<Response, UploadError> {
    let digest = desc.digest();
    let sent = match payload {
        Payload::File(store) => {
            // A blob that cannot be opened fails here, not as an empty body in the request
            // builder.
            store.open_blob(digest).map_err(Error::from)?;
            Arc::new(AtomicU64::new(0))
        }
        Payload::Stream(stream) => stream.sent.clone(),
    };
    let send = client.send(method.clone(), url, false, |rb| {
        let mut rb = rb
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, len);
        if chunk {
            rb = rb.header(CONTENT_RANGE, format!("{}-{}", offset, offset + len - 1));
        }
        match payload {
            Payload::File(store) => match blob_body(store, digest, offset, len, sent.clone()) {
                Ok(b) => rb.body(b),
                Err(_) => rb.body(Body::from(Vec::new())),
            },
            Payload::Stream(stream) => rb.body(stream.take_body()),
        }
    });
    let resp = with_progress(client, digest, offset, desc.size(), &sent, send).await?;
    judge(
        client,
        &format!("{method} blob {digest} at {offset}"),
        resp,
        ok,
    )
    .await
}

async fn put_whole(
    client: &Client<'_>,
    payload: &Payload<'_>,
    location: &str,
    desc: &Descriptor,
) -> Result<(), UploadError> {
    let url = with_digest(location, desc.digest());
    let whole = (0, desc.size());
    let resp = send_bytes(
        client,
        payload,
        Method::PUT,
        &url,
        desc,
        whole,
        false,
        StatusCode::CREATED,
    )
    .await?;
    check_digest(client, &resp, desc.digest())?;
    Ok(())
}

async fn patch_streamed(
    client: &Client<'_>,
    payload: &Payload<'_>,
    location: &str,
    desc: &Descriptor,
) -> Result<(), UploadError> {
    let whole = (0, desc.size());
    let resp = send_bytes(
        client,
        payload,
        Method::PATCH,
        location,
        desc,
        whole,
        false,
        StatusCode::ACCEPTED,
    )
    .await?;
    let next = location_of(client, &resp, desc.digest())?;
    finish(client, &next, desc.digest()).await
}

async fn patch_chunks(
    client: &Client<'_>,
    store: &Store,
    location: &str,
    desc: &Descriptor,
    chunk_size: u64,
) -> Result<(), UploadError> {
    let size = desc.size();
    let mut location = location.to_owned();
    let mut offset = 0;
    while offset < size {
        let len = chunk_size.max(1).min(size - offset);
        let part = (offset, len);
        let resp = send_bytes(
            client,
            &Payload::File(store),
            Method::PATCH,
            &location,
            desc,
            part,
            true,
            StatusCode::ACCEPTED,
        )
        .await?;
        location = location_of(client, &resp, desc.digest())?;
        offset += len;
    }
    finish(client, &location, desc.digest()).await
}

/// `PUT ?digest=` closing an upload whose bytes were sent with `PATCH`.
async fn finish(client: &Client<'_>, location: &str, digest: &Digest) -> Result<(), UploadError> {
    let url = with_digest(location, digest);
    let resp = client
        .send(Method::PUT, &url, false, |rb| rb.header(CONTENT_LENGTH, 0))
        .await?;
    let resp = judge(
        client,
        &format!("PUT blob {digest}"),
        resp,
        StatusCode::CREATED,
    )
    .await?;
    check_digest(client, &resp, digest)?;
    Ok(())
}

fn check_digest(client: &Client<'_>, resp: &Response, digest: &Digest) -> Result<()> {
    if let Some(d) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_sha256)
        && &d != digest
    {
        return Err(client.protocol(
            format!("blob {digest}"),
            format!("the registry stored it as {d}"),
        ));
    }
    Ok(())
}

/// `PUT` a manifest, exactly as stored, under `target` (a tag or its digest).
async fn put_manifest(
    client: &Client<'_>,
    repo: &str,
    target: &str,
    desc: &Descriptor,
    bytes: &[u8],
) -> Result<()> {
    let url = client.url(&format!("/v2/{repo}/manifests/{target}"));
    let media_type = desc.media_type().to_string();
    let resp = client
        .send(Method::PUT, &url, true, |rb| {
            rb.header(CONTENT_TYPE, media_type.as_str())
                .body(bytes.to_vec())
        })
        .await?;
    if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
        return Err(client
            .status_error(&format!("PUT manifest {repo}:{target}"), resp)
            .await);
    }
    check_digest(client, &resp, desc.digest())?;
    client.reporter().report(Event::BlobDone {
        digest: desc.digest().clone(),
        kind: BlobKind::Manifest,
        size: bytes.len() as u64,
    });
    Ok(())
}

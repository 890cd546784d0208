//! Pull: a registry's image into the store, layers extracted.
//!
//! The manifest (an index is resolved to the platform asked for) and the config are fetched
//! whole and verified against their digests. Each layer is streamed once: every network byte is
//! written to a resumable blob file under the store's `tmp` (hashed as it goes) and handed to the
//! extraction running beside it, which decompresses, hashes the tar for the diff id and writes
//! the overlay-format layer dir. The blob is made visible only once its digest and size check
//! out, and only then is the extraction let finish; a bad blob leaves neither blob nor layer.
//! A dropped connection resumes with `Range` where it stopped, within this pull or a later one
//! (the partial file is kept under `tmp` by digest). Up to
//! [`PullOptions::max_concurrent_layers`] layers move at once. Blobs the store already has are
//! not downloaded. The manifest is stored last, byte for byte as received, then tagged.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt as _;
use layerfs::config::ImageConfig;
use layerfs::digest::{digest_of, parse_sha256};
use layerfs::layer::commit::{chain_on, extract_stream};
use layerfs::reference::Reference;
use layerfs::store::{BlobWriter, Store, chain_ids};
use oci_spec::image::{Descriptor, Digest, ImageManifest, MediaType};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use tokio::sync::mpsc;

use crate::client::{Client, ConnectOptions, describe_error, read_limited};
use crate::error::{Error, Result};
use crate::events::{BlobKind, Event, Reporter, Skipped};
use crate::manifest::{self, MAX_MANIFEST_SIZE, Manifest};
use crate::platform::{Platform, select};

/// The largest image config strata accepts.
const MAX_CONFIG_SIZE: usize = 16 << 20;
/// Network chunks in flight between a download and its extraction, per layer.
const CHUNKS_IN_FLIGHT: usize = 8;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick from a multi-platform image (`None`: this host's).
    pub platform: Option<Platform>,
    pub connect: ConnectOptions,
    /// How many layers download and extract at once.
    pub max_concurrent_layers: usize,
    /// Name the pulled image in the store by the reference (false: only store it, as a build
    /// cache import does; the cache entry keeps it).
    pub tag: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            connect: ConnectOptions::default(),
            max_concurrent_layers: 4,
            tag: true,
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The name the image is tagged with in the store (the reference pulled).
    pub reference: Reference,
    /// The image manifest (for a multi-platform image, the chosen platform's).
    pub manifest: Descriptor,
    /// The image id: the config's digest.
    pub id: Digest,
    /// The image's platform, from its config.
    pub platform: String,
    pub layers: usize,
    /// Bytes downloaded (blobs the store had are not counted).
    pub downloaded: u64,
}

/// Pulls `reference` into `store`; see the module doc.
pub async fn pull_async(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<Pulled> {
    let repo = reference.repository();
    let (
        client,
        Resolved {
            media_type,
            bytes,
            digest,
            image,
            index,
        },
    ) = resolve(reference, opts, reporter).await?;
    let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
    let from_index = index.is_some();
    for layer in image.layers() {
        if !manifest::is_supported_layer(layer.media_type().as_ref()) {
            return Err(Error::Unsupported(format!(
                "layer {} of {reference} has media type {}, which strata cannot extract",
                layer.digest(),
                layer.media_type()
            )));
        }
    }

    let _content = store.lock_content()?;
    let (config_bytes, config_fetched) = fetch_config(&client, store, repo, image.config()).await?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        client.protocol(
            format!("image config {}", image.config().digest()),
            e.to_string(),
        )
    })?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != image.layers().len() {
        return Err(client.protocol(
            format!("image {reference}"),
            format!(
                "its manifest lists {} layers but its config {} diff ids",
                image.layers().len(),
                diff_ids.len()
            ),
        ));
    }
    let platform = match &config.variant {
        Some(v) => format!("{}/{}/{v}", config.os, config.architecture),
        None => format!("{}/{}", config.os, config.architecture),
    };
    if !from_index && !wanted.matches(&config.os, &config.architecture, config.variant.as_deref()) {
        if opts.platform.is_some() {
            return Err(Error::NoMatchingPlatform {
                reference: reference.familiar(),
                wanted: wanted.to_string(),
                available: platform,
            });
        }
        reporter.report(Event::Warning(format!(
            "the image's platform ({platform}) does not match this host's ({wanted})"
        )));
    }
    reporter.report(Event::Resolved {
        reference: reference.to_string(),
        manifest: digest.clone(),
        platform: Some(platform.clone()),
    });
    reporter.report(Event::BlobDone {
        digest: image.config().digest().clone(),
        kind: BlobKind::Config,
        size: config_bytes.len() as u64,
    });

    let chains = chain_ids(diff_ids);
    // A blob listed twice (identical layers at two places of the stack) is downloaded once:
    // its second place is extracted from the store once the first is in.
    let mut seen = HashSet::new();
    let (first, again): (Vec<usize>, Vec<usize>) =
        (0..image.layers().len()).partition(|&i| seen.insert(image.layers()[i].digest()));
    let mut downloaded = 0;
    for round in [first, again] {
        let layers = round.into_iter().map(|i| {
            let parent = i.checked_sub(1).map(|p| chains[p].clone());
            pull_layer(
                &client,
                store,
                repo,
                &image.layers()[i],
                &diff_ids[i],
                parent,
            )
        });
        let results: Vec<Result<u64>> = futures_util::stream::iter(layers)
            .buffer_unordered(opts.max_concurrent_layers.max(1))
            .collect()
            .await;
        for r in results {
            downloaded += r?;
        }
    }

    // Last: the manifest itself, exactly as received, and the name.
    let stored = store.put_blob(&bytes)?;
    debug_assert_eq!(stored, digest);
    let descriptor = Descriptor::new(
        MediaType::from(media_type.as_str()),
        bytes.len() as u64,
        digest,
    );
    if opts.tag {
        store.tag(reference, &descriptor)?;
    }
    Ok(Pulled {
        reference: reference.clone(),
        manifest: descriptor,
        id: image.config().digest().clone(),
        platform,
        layers: image.layers().len(),
        downloaded: downloaded
            + if config_fetched {
                config_bytes.len() as u64
            } else {
                0
            },
    })
}

/// Blocking [`pull_async`], on a runtime of its own (not to be called from async code).
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    reporter: &dyn Reporter,
) -> Result<Pulled> {
    crate::runtime()?.block_on(pull_async(store, reference, opts, reporter))
}

/// An image manifest as a registry served it, for one platform.
pub(crate) struct Resolved {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub image: Box<ImageManifest>,
    /// The index the manifest was picked from, as served: its bytes and digest.
    pub index: Option<(Vec<u8>, Digest)>,
}

/// Connects to the registry of `reference` to pull from it and fetches the manifest the
/// reference names, verified; an index is resolved to the manifest of `opts.platform` (or
/// else this host's platform).
pub(crate) async fn resolve<'r>(
    reference: &Reference,
    opts: &PullOptions,
    reporter: &'r dyn Reporter,
) -> Result<(Client<'r>, Resolved)> {
    let repo = reference.repository();
    let scopes = vec![format!("repository:{repo}:pull")];
    let client = Client::connect(reference, scopes, &opts.connect, None, reporter).await?;
    let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
    let resolved = resolve_manifest(&client, reference, &wanted).await?;
    Ok((client, resolved))
}

/// The manifest `reference` names, verified; an index resolved to `wanted`'s manifest.
async fn resolve_manifest(
    client: &Client<'_>,
    reference: &Reference,
    wanted: &Platform,
) -> Result<Resolved> {
    let repo = reference.repository();
    let (media_type, bytes, digest) =
        fetch_manifest(client, repo, &reference.tag_or_digest(), reference.digest()).await?;
    let index = match manifest::parse(&bytes, Some(&media_type))
        .map_err(|r| client.protocol(format!("manifest of {reference}"), r))?
    {
        (_, Manifest::Image(image)) => {
            return Ok(Resolved {
                media_type,
                bytes,
                digest,
                image,
                index: None,
            });
        }
        (_, Manifest::Index(index)) => index,
    };
    let chosen = select(index.manifests(), wanted, &reference.familiar())?;
    let (chosen_type, chosen_bytes, chosen_digest) = fetch_manifest(
        client,
        repo,
        chosen.digest().as_ref(),
        Some(chosen.digest()),
    )
    .await?;
    match manifest::parse(&chosen_bytes, Some(&chosen_type))
        .map_err(|r| client.protocol(format!("manifest {}", chosen.digest()), r))?
    {
        (_, Manifest::Image(image)) => Ok(Resolved {
            media_type: chosen_type,
            bytes: chosen_bytes,
            digest: chosen_digest,
            image,
            index: Some((bytes, digest)),
        }),
        (_, Manifest::Index(_)) => Err(client.protocol(
            format!("manifest {}", chosen.digest()),
            "an index inside an index",
        )),
    }
}

/// Fetches a manifest by tag or digest and checks it against `expected` (or else against the
/// `Docker-Content-Digest` the registry sent). Returns its media type, bytes and digest.
pub(crate) async fn fetch_manifest(
    client: &Client<'_>,
    repo: &str,
    tag_or_digest: &str,
    expected: Option<&Digest>,
) -> Result<(String, Vec<u8>, Digest)> {
    let url = client.url(&format!("/v2/{repo}/manifests/{tag_or_digest}"));
    let resp = client
        .send(Method::GET, &url, true, |rb| {
            rb.header(ACCEPT, manifest::ACCEPT)
        })
        .await?;
    let what = format!("manifest {repo}:{tag_or_digest}");
    if !resp.status().is_success() {
        return Err(client.status_error(&what, resp).await);
    }
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let announced = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_sha256);
    let bytes = read_limited(resp, MAX_MANIFEST_SIZE)
        .await
        .map_err(|r| client.protocol(&what, r))?;
    let actual = digest_of(&bytes);
    if let Some(expected) = expected.or(announced.as_ref())
        && &actual != expected
    {
        return Err(Error::DigestMismatch {
            what: format!("{what} from registry {}", client.registry()),
            expected: expected.clone(),
            actual,
        });
    }
    let (media_type, _) =
        manifest::parse(&bytes, Some(&content_type)).map_err(|r| client.protocol(&what, r))?;
    Ok((media_type, bytes, actual))
}

/// The config blob, from the store or else the registry (then stored, verified); and whether
/// it was downloaded.
async fn fetch_config(
    client: &Client<'_>,
    store: &Store,
    repo: &str,
    desc: &Descriptor,
) -> Result<(Vec<u8>, bool)> {
    if store.has_blob(desc.digest()) {
        return Ok((store.read_blob(desc.digest())?, false));
    }
    let bytes = download_config(client, repo, desc).await?;
    store.put_blob(&bytes)?;
    Ok((bytes, true))
}

/// The config blob `desc` from the registry, checked against its digest.
pub(crate) async fn download_config(
    client: &Client<'_>,
    repo: &str,
    desc: &Descriptor,
) -> Result<Vec<u8>> {
    let what = format!("image config {}", desc.digest());
    let url = client.url(&format!("/v2/{repo}/blobs/{}", desc.digest()));
    let resp = client.send(Method::GET, &url, true, |rb| rb).await?;
    if !resp.status().is_success() {
        return Err(client.status_error(&what, resp).await);
    }
    let bytes = read_limited(resp, MAX_CONFIG_SIZE)
        .await
        .map_err(|r| client.protocol(&what, r))?;
    let actual = digest_of(&bytes);
    if &actual != desc.digest() {
        return Err(Error::DigestMismatch {
            what: format!("{what} from registry {}", client.registry()),
            expected: desc.digest().clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// Makes sure the store has the extracted layer of `layer`, whose blob it already has (read
/// back and verified while it is extracted); nothing is downloaded.
async fn layer_from_store(
    client: &Client<'_>,
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    parent: Option<Digest>,
) -> Result<u64> {
    let reporter = client.reporter();
    let digest = layer.digest().clone();
    let size = layer.size();
    let chain = chain_on(parent.as_ref(), diff_id);
    if store.layer_record(&chain).is_some() {
        reporter.report(Event::BlobSkipped {
            digest,
            kind: BlobKind::Layer,
            size,
            why: Skipped::AlreadyExists,
        });
        return Ok(0);
    }
    let (st, diff_id, d) = (store.clone(), diff_id.clone(), digest.clone());
    let (_, read, read_size) = tokio::task::spawn_blocking(move || {
        let blob = st.open_blob(&d)?;
        extract_stream(&st, blob, &diff_id, parent.as_ref(), &d)
    })
    .await
    .expect("extraction does not panic")
    .map_err(|e| Error::from(e).for_layer(&digest))?;
    if read != digest || read_size != size {
        store.remove_layer(&chain)?;
        return Err(Error::DigestMismatch {
            what: format!("layer blob {digest} in the store (run strata fsck)"),
            expected: digest,
            actual: read,
        });
    }
    reporter.report(Event::BlobDone {
        digest,
        kind: BlobKind::Layer,
        size,
    });
    Ok(0)
}

/// Downloads the blob `desc` of `repo` into `store` (verified, then made visible), unless the
/// store has it; returns the bytes downloaded. For blobs in transit (`copy`), not layers.
pub(crate) async fn download_blob(
    client: &Client<'_>,
    store: &Store,
    repo: &str,
    desc: &Descriptor,
) -> Result<u64> {
    let digest = desc.digest();
    if store.has_blob(digest) {
        return Ok(0);
    }
    let mut writer = store.resumable_blob_writer(digest, Some(desc.size()))?;
    // Nothing is extracted: the chunks' receiver is gone from the start.
    let (tx, _) = mpsc::channel(1);
    let downloaded = download(client, repo, desc, &mut writer, &tx, &store.tmp_dir())
        .await
        .map_err(|Stop(e)| e.for_layer(digest))?;
    tokio::task::spawn_blocking(move || writer.commit())
        .await
        .expect("commit does not panic")?;
    Ok(downloaded)
}

/// Why a download stopped before the whole blob was in: the transfer failed (after its retries).
pub(crate) struct Stop(pub Error);

/// Where a download writes: a blob file that knows how much it holds (the offset to resume
/// from).
pub(crate) trait BlobSink: Write {
    fn written(&self) -> u64;
}

impl BlobSink for BlobWriter {
    fn written(&self) -> u64 {
        self.len()
    }
}

impl BlobSink for layerfs::layout::LayoutBlobWriter {
    fn written(&self) -> u64 {
        self.len()
    }
}

/// Makes sure the store has the blob and the extracted layer of `layer`; returns the bytes
/// downloaded.
async fn pull_layer(
    client: &Client<'_>,
    store: &Store,
    repo: &str,
    layer: &Descriptor,
    diff_id: &Digest,
    parent: Option<Digest>,
) -> Result<u64> {
    let reporter = client.reporter();
    let digest = layer.digest().clone();
    let size = layer.size();
    if store.has_blob(&digest) {
        return layer_from_store(client, store, layer, diff_id, parent).await;
    }

    // Waits while another pull downloads the same blob, which may leave it in the store.
    let mut writer = {
        let (st, d) = (store.clone(), digest.clone());
        tokio::task::spawn_blocking(move || st.resumable_blob_writer(&d, Some(size)))
            .await
            .expect("opening a blob writer does not panic")?
    };
    if store.has_blob(&digest) {
        writer.discard();
        return layer_from_store(client, store, layer, diff_id, parent).await;
    }
    if writer.len() > size {
        writer.restart()?;
    }
    let resumed_at = writer.len();
    let replay = if resumed_at > 0 {
        Some(writer.replay()?)
    } else {
        None
    };
    reporter.report(Event::BlobStarted {
        digest: digest.clone(),
        kind: BlobKind::Layer,
        size,
        resumed_at,
    });
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let extraction = {
        let (store, diff_id, d) = (store.clone(), diff_id.clone(), digest.clone());
        tokio::task::spawn_blocking(move || {
            let network = ChannelReader {
                rx,
                chunk: Bytes::new(),
            };
            match replay {
                Some(earlier) => extract_stream(
                    &store,
                    earlier.chain(network),
                    &diff_id,
                    parent.as_ref(),
                    &d,
                ),
                None => extract_stream(&store, network, &diff_id, parent.as_ref(), &d),
            }
        })
    };
    let downloaded = download(client, repo, layer, &mut writer, &tx, &store.tmp_dir()).await;
    // The blob becomes visible (verified) before the extraction sees the end of the stream, so
    // a blob that does not match its digest never leaves an extracted layer behind.
    let outcome = match downloaded {
        Ok(n) => match tokio::task::spawn_blocking(move || writer.commit())
            .await
            .expect("commit does not panic")
        {
            Ok(_) => Ok(n),
            Err(e) => Err(Stop(e.into())),
        },
        Err(stop) => {
            // What came in is kept for a later pull, unless the registry broke the protocol.
            if matches!(stop, Stop(Error::Protocol { .. })) {
                writer.discard();
            }
            Err(stop)
        }
    };
    match &outcome {
        Ok(_) => drop(tx),
        Err(_) => {
            let _ = tx.send(Err(io::Error::other("the download failed"))).await;
            drop(tx);
        }
    }
    let extracted = extraction.await.expect("extraction does not panic");
    match (outcome, extracted) {
        (Err(Stop(e)), _) => Err(e.for_layer(&digest)),
        (_, Err(e)) => Err(Error::from(e).for_layer(&digest)),
        (Ok(n), Ok(_)) => {
            reporter.report(Event::BlobDone {
                digest,
                kind: BlobKind::Layer,
                size,
            });
            Ok(n)
        }
    }
}

/// Streams the blob `layer` into `writer` and `tx` from where `writer` stands, resuming with
/// `Range` after dropped connections (`tmp_dir` names where it writes, for errors). Returns
/// the bytes downloaded.
pub(crate) async fn download(
    client: &Client<'_>,
    repo: &str,
    layer: &Descriptor,
    writer: &mut impl BlobSink,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    tmp_dir: &Path,
) -> Result<u64, Stop> {
    let (digest, size) = (layer.digest(), layer.size());
    let url = client.url(&format!("/v2/{repo}/blobs/{digest}"));
    let retry = client.retry();
    let reporter = client.reporter();
    let mut downloaded = 0u64;
    let mut failures = 0u32;
    let mut extraction_gone = false;
    loop {
        let offset = writer.written();
        if offset == size {
            return Ok(downloaded);
        }
        let resp = client
            .send(Method::GET, &url, true, |rb| {
                if offset > 0 {
                    rb.header(RANGE, format!("bytes={offset}-"))
                } else {
                    rb
                }
            })
            .await
            .map_err(Stop)?;
        let mut skip = match resp.status().as_u16() {
            200 => offset,
            206 => {
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match start {
                    Some(s) if s <= offset => offset - s,
                    _ => {
                        return Err(Stop(client.protocol(
                            format!("blob {digest}"),
                            format!("asked to resume at byte {offset}, the registry answered with another range"),
                        )));
                    }
                }
            }
            _ => {
                return Err(Stop(
                    client
                        .status_error(&format!("blob {digest} of {repo}"), resp)
                        .await,
                ));
            }
        };
        let mut resp = resp;
        let dropped = loop {
            match resp.chunk().await {
                Ok(Some(mut chunk)) => {
                    if skip > 0 {
                        let n = (skip.min(chunk.len() as u64)) as usize;
                        chunk = chunk.slice(n..);
                        skip -= n as u64;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    if writer.written() + chunk.len() as u64 > size {
                        return Err(Stop(client.protocol(
                            format!("blob {digest}"),
                            format!("the registry sent more than the {size} bytes the manifest announced"),
                        )));
                    }
                    writer.write_all(&chunk).map_err(|source| {
                        Stop(Error::Io {
                            op: "write blob to",
                            path: tmp_dir.to_owned(),
                            source,
                        })
                    })?;
                    downloaded += chunk.len() as u64;
                    failures = 0;
                    reporter.report(Event::BlobProgress {
                        digest: digest.clone(),
                        done: writer.written(),
                        total: size,
                    });
                    // An extraction that stopped (a bad tar) says why once the blob is in: a blob
                    // that was damaged on the way is a digest mismatch, not a bad tar.
                    if !extraction_gone && tx.send(Ok(chunk)).await.is_err() {
                        extraction_gone = true;
                    }
                }
                Ok(None) if writer.written() == size => return Ok(downloaded),
                Ok(None) => break format!("the body ended at byte {} of {size}", writer.written()),
                Err(e) => break describe_error(&e),
            }
        };
        failures += 1;
        if failures >= retry.attempts {
            return Err(Stop(client.unreachable(format!(
                "blob {digest}: the connection dropped at byte {} of {size}, {failures} times in a row: {dropped}",
                writer.written()
            ))));
        }
        let delay = retry.delay(failures);
        reporter.report(Event::Retrying {
            what: format!("blob {digest}"),
            attempt: failures,
            delay,
            reason: format!("{dropped}; resuming at byte {}", writer.written()),
        });
        tokio::time::sleep(delay).await;
    }
}

/// The network side of a layer download, as a blocking reader for the extraction.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

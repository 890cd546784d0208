//! Copy: an image from one registry repository to another without the store (skopeo's
//! `copy docker://A docker://B`, crane's `copy`), and between registries and OCI layout
//! directories (`oci:DIR[:NAME]`).
//!
//! The manifests are fetched and verified, then pushed exactly as served, so the copy has the
//! source's digests: with `all`, an index and every manifest it lists (each platform, and
//! attestations); otherwise an index is resolved to one platform, as `pull` resolves it, and
//! that image manifest alone is copied. Each blob is first asked for at the destination
//! (`HEAD`); within one registry it is mounted from the source repository, which moves no
//! data. A blob that still has to move streams from the source's `GET` into the upload,
//! hashed on the way, so a damaged source blob fails before its upload is completed; a
//! registry that takes only chunked uploads gets it from a spool store (downloaded and
//! verified first, dropped once uploaded). Into a layout, blobs are downloaded into the
//! layout's own temporary files and renamed into place once verified.

use std::collections::HashMap;
use std::path::Path;

use futures_util::{StreamExt as _, TryStreamExt as _};
use layerfs::layout::{Layout, layout_form};
use layerfs::reference::Reference;
use layerfs::store::Store;
use oci_spec::image::{Descriptor, Digest, MediaType};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::events::{BlobKind, Event, Reporter, Skipped};
use crate::manifest::{self, Manifest};
use crate::platform::{Platform, select};
use crate::pull::{Stop, download, fetch_manifest};
use crate::push::{Origin, Plan, PushOptions, Pushed, push_plan};

/// How to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Copy an index with every manifest it lists, not one platform's image.
    pub all: bool,
    /// The platform to copy from an index without `all` (`None`: this host's).
    pub platform: Option<Platform>,
    /// How to connect to both registries, and how to upload.
    pub push: PushOptions,
}

/// Copies what `source` names to `dest`; blobs in transit are spooled in a directory made at
/// `spool` (a path that does not exist yet) and removed at the end. Returns what the
/// destination now has.
pub async fn copy_async(
    source: &Reference,
    dest: Reference,
    spool: &Path,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    in_spool(spool, async |store| {
        copy_through(source, dest, store, opts, reporter).await
    })
    .await
}

/// Runs `work` with a spool store made at `spool` (a path that does not exist yet), and
/// removes the spool after, however the work ended.
pub(crate) async fn in_spool<T>(
    spool: &Path,
    work: impl AsyncFnOnce(&Store) -> Result<T>,
) -> Result<T> {
    let done = match Store::open(spool) {
        Ok(store) => work(&store).await,
        Err(e) => Err(e.into()),
    };
    let _ = std::fs::remove_dir_all(spool);
    done
}

/// [`copy_async`] with blobs in transit passing through `spool`.
pub(crate) async fn copy_through(
    source: &Reference,
    dest: Reference,
    spool: &Store,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let repo = source.repository();
    let (client, plan) = connect_and_plan(source, opts, reporter).await?;
    // Within one registry every blob can be mounted from the source repository.
    let mounts: HashMap<_, _> =
        if source.registry() == dest.registry() && source.repository() != dest.repository() {
            plan.blobs
                .iter()
                .map(|(d, _)| (d.digest().clone(), repo.to_owned()))
                .collect()
        } else {
            HashMap::new()
        };
    let origin = Origin::Registry {
        client: &client,
        repository: repo,
    };
    push_plan(spool, &plan, &mounts, origin, dest, &opts.push, reporter).await
}

/// Blocking [`copy_async`], on a runtime of its own (not to be called from async code).
pub fn copy(
    source: &Reference,
    dest: Reference,
    spool: &Path,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    crate::runtime()?.block_on(copy_async(source, dest, spool, opts, reporter))
}

/// Connects to the registry of `source` to pull from it, and plans the copy of what it names.
async fn connect_and_plan<'r>(
    source: &Reference,
    opts: &CopyOptions,
    reporter: &'r dyn Reporter,
) -> Result<(Client<'r>, Plan)> {
    let scopes = vec![format!("repository:{}:pull", source.repository())];
    let client = Client::connect(source, scopes, &opts.push.connect, None, reporter).await?;
    let plan = plan(&client, source, opts).await?;
    Ok((client, plan))
}

/// The manifests to copy, fetched and verified, and the blobs they list.
async fn plan(client: &Client<'_>, source: &Reference, opts: &CopyOptions) -> Result<Plan> {
    let repo = source.repository();
    let (media_type, bytes, digest) =
        fetch_manifest(client, repo, &source.tag_or_digest(), source.digest()).await?;
    let top = Descriptor::new(
        MediaType::from(media_type.as_str()),
        bytes.len() as u64,
        digest,
    );
    plan_from(top, bytes, &source.familiar(), opts, async |child| {
        let digest = child.digest();
        let (_, bytes, _) = fetch_manifest(client, repo, digest.as_ref(), Some(digest)).await?;
        Ok(bytes)
    })
    .await
}

/// The plan for the manifest `top` (its bytes) of `source`: an image manifest with its blobs,
/// or an index resolved as `opts` says; `fetch` gives a listed manifest's bytes, verified.
async fn plan_from(
    top: Descriptor,
    bytes: Vec<u8>,
    source: &str,
    opts: &CopyOptions,
    fetch: impl AsyncFn(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Plan> {
    let unreadable = |digest: &Digest, reason: String| {
        Error::Unsupported(format!("manifest {digest} of {source}: {reason}"))
    };
    let mut plan = Plan::default();
    let index = match manifest::parse(&bytes, Some(top.media_type().as_ref()))
        .map_err(|r| unreadable(top.digest(), r))?
    {
        (_, Manifest::Image(image)) => {
            plan.add_image(top, bytes, &image);
            return Ok(plan);
        }
        (_, Manifest::Index(index)) => index,
    };
    let children = if opts.all {
        index.manifests().iter().collect()
    } else {
        let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
        vec![select(index.manifests(), &wanted, source)?]
    };
    for child in children {
        let child_bytes = fetch(child).await?;
        match manifest::parse(&child_bytes, Some(child.media_type().as_ref()))
            .map_err(|r| unreadable(child.digest(), r))?
        {
            (_, Manifest::Image(image)) => plan.add_image(child.clone(), child_bytes, &image),
            (_, Manifest::Index(_)) => {
                return Err(unreadable(
                    child.digest(),
                    "an index inside an index".to_owned(),
                ));
            }
        }
    }
    if opts.all {
        plan.manifests.push((top, bytes));
    }
    Ok(plan)
}

/// Copies what `source` names into the OCI image layout at `dir` (made if there is none), as
/// `name` (or unnamed): blobs the layout lacks are downloaded into it, verified, resuming
/// after dropped connections; then the manifests (Docker's in their OCI form, as skopeo
/// writes them), then the index entry. Returns the entry.
pub async fn copy_to_layout_async(
    source: &Reference,
    dir: &Path,
    name: Option<&str>,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<Descriptor> {
    let repo = source.repository();
    let (client, plan) = connect_and_plan(source, opts, reporter).await?;
    let (top, _) = plan.manifests.last().expect("a plan has its top manifest");
    reporter.report(Event::Resolved {
        reference: format!("oci:{}", dir.display()),
        manifest: top.digest().clone(),
        platform: None,
    });
    let layout = Layout::create(dir)?;
    futures_util::stream::iter(
        plan.blobs
            .iter()
            .map(|(desc, kind)| download_into_layout(&client, repo, &layout, desc, *kind)),
    )
    .buffer_unordered(opts.push.max_concurrent_blobs.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    // Children before an index: a Docker list's entries then name its children's OCI forms.
    let mut converted = HashMap::new();
    let mut entry = None;
    for (desc, bytes) in &plan.manifests {
        let plain = Descriptor::new(
            desc.media_type().clone(),
            desc.size(),
            desc.digest().clone(),
        );
        let (stored, bytes) = layout_form(plain, bytes.clone(), &converted)?;
        layout.put_blob(&bytes)?;
        reporter.report(Event::BlobDone {
            digest: stored.digest().clone(),
            kind: BlobKind::Manifest,
            size: stored.size(),
        });
        converted.insert(desc.digest().clone(), stored.clone());
        entry = Some(stored);
    }
    let entry = entry.expect("a plan has its top manifest");
    layout.add(&entry, name)?;
    Ok(entry)
}

/// Blocking [`copy_to_layout_async`], on a runtime of its own.
pub fn copy_to_layout(
    source: &Reference,
    dir: &Path,
    name: Option<&str>,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<Descriptor> {
    crate::runtime()?.block_on(copy_to_layout_async(source, dir, name, opts, reporter))
}

async fn download_into_layout(
    client: &Client<'_>,
    repo: &str,
    layout: &Layout,
    desc: &Descriptor,
    kind: BlobKind,
) -> Result<()> {
    let (digest, size) = (desc.digest().clone(), desc.size());
    if layout.has_blob(&digest) {
        client.reporter().report(Event::BlobSkipped {
            digest,
            kind,
            size,
            why: Skipped::AlreadyExists,
        });
        return Ok(());
    }
    client.reporter().report(Event::BlobStarted {
        digest: digest.clone(),
        kind,
        size,
        resumed_at: 0,
    });
    let mut writer = layout.blob_writer(&digest, size)?;
    // Nothing reads the chunks on the side: their receiver is gone from the start.
    let (tx, _) = mpsc::channel(1);
    download(client, repo, desc, &mut writer, &tx, layout.root())
        .await
        .map_err(|Stop(e)| e.for_layer(&digest))?;
    tokio::task::spawn_blocking(move || writer.commit())
        .await
        .expect("commit does not panic")?;
    client
        .reporter()
        .report(Event::BlobDone { digest, kind, size });
    Ok(())
}

/// Copies the image named `name` (or the only one) of the OCI image layout at `dir` to
/// `dest`, as a push from the store does: every blob is read from the layout.
pub async fn copy_from_layout_async(
    dir: &Path,
    name: Option<&str>,
    dest: Reference,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let layout = Layout::open(dir)?;
    let entry = layout.find(name)?;
    let top = Descriptor::new(
        entry.media_type().clone(),
        entry.size(),
        entry.digest().clone(),
    );
    let bytes = layout.read_blob(top.digest())?;
    let source = match name {
        Some(n) => format!("oci:{}:{n}", dir.display()),
        None => format!("oci:{}", dir.display()),
    };
    let plan = plan_from(top, bytes, &source, opts, async |child| {
        Ok(layout.read_blob(child.digest())?)
    })
    .await?;
    if let Some((missing, _)) = plan
        .blobs
        .iter()
        .find(|(d, _)| !layout.has_blob(d.digest()))
    {
        return Err(layerfs::Error::BlobNotFound(missing.digest().clone()).into());
    }
    let blobs = Store::blobs_of(dir);
    let no_mounts = HashMap::new();
    push_plan(
        &blobs,
        &plan,
        &no_mounts,
        Origin::Store,
        dest,
        &opts.push,
        reporter,
    )
    .await
}

/// Blocking [`copy_from_layout_async`], on a runtime of its own.
pub fn copy_from_layout(
    dir: &Path,
    name: Option<&str>,
    dest: Reference,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    crate::runtime()?.block_on(copy_from_layout_async(dir, name, dest, opts, reporter))
}

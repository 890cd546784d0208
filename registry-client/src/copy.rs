//! Copy: an image from one registry repository to another, without the store (skopeo's
//! `copy docker://A docker://B`, crane's `copy`).
//!
//! The manifests are fetched and verified, then pushed exactly as served, so the copy has the
//! source's digests: with `all`, an index and every manifest it lists (each platform, and
//! attestations); otherwise an index is resolved to one platform, as `pull` resolves it, and
//! that image manifest alone is copied. Each blob is first asked for at the destination
//! (`HEAD`); within one registry it is mounted from the source repository, which moves no
//! data. Only a blob that still has to move is downloaded, into a spool store (verified
//! against its digest, so a damaged source blob never reaches the destination), uploaded in
//! the push's styles and with its retries, and dropped from the spool at once.

use std::collections::HashMap;
use std::path::Path;

use layerfs::reference::Reference;
use layerfs::store::Store;
use oci_spec::image::{Descriptor, MediaType};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::events::Reporter;
use crate::manifest::{self, Manifest};
use crate::platform::{Platform, select};
use crate::pull::fetch_manifest;
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
    let scopes = vec![format!("repository:{repo}:pull")];
    let client = Client::connect(source, scopes, &opts.push.connect, None, reporter).await?;
    let plan = plan(&client, source, opts).await?;
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
    let mut plan = Plan::default();
    let index = match manifest::parse(&bytes, Some(&media_type))
        .map_err(|r| client.protocol(format!("manifest of {source}"), r))?
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
        vec![select(index.manifests(), &wanted, &source.familiar())?]
    };
    for child in children {
        let (_, child_bytes, _) =
            fetch_manifest(client, repo, child.digest().as_ref(), Some(child.digest())).await?;
        match manifest::parse(&child_bytes, Some(child.media_type().as_ref()))
            .map_err(|r| client.protocol(format!("manifest {}", child.digest()), r))?
        {
            (_, Manifest::Image(image)) => plan.add_image(child.clone(), child_bytes, &image),
            (_, Manifest::Index(_)) => {
                return Err(Error::Unsupported(format!(
                    "manifest {} of {source}: an index inside an index",
                    child.digest()
                )));
            }
        }
    }
    if opts.all {
        plan.manifests.push((top, bytes));
    }
    Ok(plan)
}

//! Merge: one multi-platform index made of images already in registries (buildx's
//! `imagetools create`), for images built on one machine per platform.
//!
//! Each source is an image manifest, whose platform its config says, or an index, whose
//! entries are taken as listed. The new index lists them in the order given (one image per
//! platform; the same manifest named twice goes in once). Pushing it copies every listed
//! manifest into the target repository by digest first (mounted within one registry, else
//! passed through a verified spool, as `copy` does), then the index under the target's tag,
//! so the index never names a manifest its repository lacks. Annotations go on the index or
//! on each of its entries, as buildx's `--annotation [TYPE:]KEY=VALUE` puts them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use layerfs::config::ImageConfig;
use layerfs::digest::digest_of;
use layerfs::reference::Reference;
use layerfs::store::Store;
use oci_spec::image::{
    Arch, Descriptor, Digest, ImageIndexBuilder, MediaType, Os, PlatformBuilder,
};

use crate::client::{Client, ConnectOptions};
use crate::copy::{CopyOptions, copy_through, in_spool};
use crate::error::{Error, Result};
use crate::events::Reporter;
use crate::manifest::{self, Manifest};
use crate::platform::describe;
use crate::pull::{download_config, fetch_manifest};
use crate::push::{Origin, Plan, PushOptions, Pushed, push_plan};

/// An index made from images in registries, not pushed yet.
#[derive(Debug, Clone)]
pub struct NewIndex {
    /// The index document (an OCI image index).
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// Each manifest it lists, where it is now (pinned by digest).
    pub children: Vec<Reference>,
}

/// Annotations for a new index, as buildx's `imagetools create --annotation` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexAnnotations {
    /// On the index itself (`index:KEY=VALUE`, or no type).
    pub index: BTreeMap<String, String>,
    /// On every entry of the index (`manifest-descriptor:KEY=VALUE`), over what the entry
    /// had in a source index.
    pub entries: BTreeMap<String, String>,
}

impl IndexAnnotations {
    /// Adds `[TYPE:]KEY=VALUE`, TYPE being `index` (the default) or `manifest-descriptor`.
    /// The error says what is wrong with `arg`.
    pub fn add(&mut self, arg: &str) -> std::result::Result<(), String> {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("annotation {arg:?}: expected [TYPE:]KEY=VALUE"))?;
        // buildx's types; a key may hold a `:` of its own.
        const TYPES: [&str; 4] = [
            "index",
            "index-descriptor",
            "manifest",
            "manifest-descriptor",
        ];
        let (kind, key) = match key.split_once(':') {
            Some((kind, key)) if kind.split('[').next().is_some_and(|t| TYPES.contains(&t)) => {
                (kind, key)
            }
            _ => ("index", key),
        };
        let map = match kind {
            "index" => &mut self.index,
            "manifest-descriptor" => &mut self.entries,
            _ if kind.contains('[') => {
                return Err(format!(
                    "annotation {arg:?}: per-platform annotations ({kind}) are not supported"
                ));
            }
            _ => {
                return Err(format!(
                    "annotation {arg:?}: an index made of existing images takes `index` and `manifest-descriptor` annotations, not {kind:?}"
                ));
            }
        };
        if key.is_empty() {
            return Err(format!("annotation {arg:?}: the key is empty"));
        }
        map.insert(key.to_owned(), value.to_owned());
        Ok(())
    }
}

/// Reads each of `sources` and makes the index that lists them all, with `annotations`.
pub async fn make_index_async(
    sources: &[Reference],
    annotations: &IndexAnnotations,
    opts: &ConnectOptions,
    reporter: &dyn Reporter,
) -> Result<NewIndex> {
    // Each entry: the manifest pinned by digest, the source that named it, its descriptor.
    let mut entries: Vec<(Reference, &Reference, Descriptor)> = Vec::new();
    for source in sources {
        for (child, desc) in entries_of(source, opts, reporter).await? {
            if entries.iter().any(|(_, _, d)| d.digest() == desc.digest()) {
                continue;
            }
            let platform = platform_name(&desc);
            let same =
                |d: &Descriptor| platform_name(d).is_some_and(|p| Some(&p) == platform.as_ref());
            if let Some((_, first, first_desc)) = entries.iter().find(|(_, _, d)| same(d)) {
                return Err(Error::PlatformClash {
                    platform: platform.unwrap_or_default(),
                    first: format!("{} (manifest {})", first.familiar(), first_desc.digest()),
                    second: format!("{} (manifest {})", source.familiar(), desc.digest()),
                });
            }
            entries.push((child, source, desc));
        }
    }
    let hash_map = |m: &BTreeMap<String, String>| m.clone().into_iter().collect::<HashMap<_, _>>();
    let manifests = entries
        .iter()
        .map(|(_, _, d)| {
            let mut d = d.clone();
            if !annotations.entries.is_empty() {
                let mut merged = d.annotations().clone().unwrap_or_default();
                merged.extend(hash_map(&annotations.entries));
                d.set_annotations(Some(merged));
            }
            d
        })
        .collect::<Vec<_>>();
    let mut document = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("an index of descriptors builds");
    if !annotations.index.is_empty() {
        document.set_annotations(Some(hash_map(&annotations.index)));
    }
    // Through a `Value` with sorted keys: annotations are hash maps in oci-spec, and the same
    // index must give the same bytes (and digest) every time.
    let mut value = serde_json::to_value(&document).expect("an index serializes");
    value.sort_all_objects();
    let bytes = serde_json::to_vec_pretty(&value).expect("an index serializes");
    Ok(NewIndex {
        digest: digest_of(&bytes),
        bytes,
        children: entries.into_iter().map(|(r, _, _)| r).collect(),
    })
}

/// Blocking [`make_index_async`], on a runtime of its own (not to be called from async code).
pub fn make_index(
    sources: &[Reference],
    annotations: &IndexAnnotations,
    opts: &ConnectOptions,
    reporter: &dyn Reporter,
) -> Result<NewIndex> {
    crate::runtime()?.block_on(make_index_async(sources, annotations, opts, reporter))
}

/// Pushes `index` to `target`: every manifest it lists (with their blobs) by digest, then the
/// index. Blobs in transit pass through a spool made at `spool` (a path that does not exist
/// yet), removed at the end.
pub async fn push_index_async(
    index: &NewIndex,
    target: &Reference,
    spool: &Path,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    in_spool(spool, async |store| {
        push_through(index, target, store, opts, reporter).await
    })
    .await
}

/// Blocking [`push_index_async`], on a runtime of its own (not to be called from async code).
pub fn push_index(
    index: &NewIndex,
    target: &Reference,
    spool: &Path,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    crate::runtime()?.block_on(push_index_async(index, target, spool, opts, reporter))
}

async fn push_through(
    index: &NewIndex,
    target: &Reference,
    spool: &Store,
    opts: &PushOptions,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let copy = CopyOptions {
        all: false,
        platform: None,
        push: opts.clone(),
    };
    let mut blobs = 0;
    let mut uploaded = 0;
    for child in &index.children {
        let digest = child
            .digest()
            .expect("children are pinned by digest")
            .clone();
        let copied =
            copy_through(child, target.with_digest(digest), spool, &copy, reporter).await?;
        blobs += copied.blobs;
        uploaded += copied.uploaded;
    }
    let top = Descriptor::new(
        MediaType::ImageIndex,
        index.bytes.len() as u64,
        index.digest.clone(),
    );
    let plan = Plan {
        blobs: Vec::new(),
        manifests: vec![(top, index.bytes.clone())],
    };
    let mut pushed = push_plan(
        spool,
        &plan,
        &Default::default(),
        Origin::Store,
        target.clone(),
        opts,
        reporter,
    )
    .await?;
    pushed.blobs = blobs;
    pushed.uploaded = uploaded;
    Ok(pushed)
}

/// The manifests `source` contributes: itself, with its config's platform, or an index's
/// entries as listed; each with the reference that pins it.
async fn entries_of(
    source: &Reference,
    opts: &ConnectOptions,
    reporter: &dyn Reporter,
) -> Result<Vec<(Reference, Descriptor)>> {
    let repo = source.repository();
    let scopes = vec![format!("repository:{repo}:pull")];
    let client = Client::connect(source, scopes, opts, None, reporter).await?;
    let (media_type, bytes, digest) =
        fetch_manifest(&client, repo, &source.tag_or_digest(), source.digest()).await?;
    let what = format!("manifest of {source}");
    match manifest::parse(&bytes, Some(&media_type)).map_err(|r| client.protocol(&what, r))? {
        (_, Manifest::Image(image)) => {
            let config = download_config(&client, repo, image.config()).await?;
            let config: ImageConfig = serde_json::from_slice(&config).map_err(|e| {
                client.protocol(
                    format!("image config {}", image.config().digest()),
                    e.to_string(),
                )
            })?;
            let mut platform = PlatformBuilder::default()
                .os(Os::from(config.os.as_str()))
                .architecture(Arch::from(config.architecture.as_str()));
            if let Some(v) = config.variant.filter(|v| !v.is_empty()) {
                platform = platform.variant(v);
            }
            let platform = platform
                .build()
                .map_err(|e| client.protocol(&what, e.to_string()))?;
            let mut desc = Descriptor::new(
                MediaType::from(media_type.as_str()),
                bytes.len() as u64,
                digest.clone(),
            );
            desc.set_platform(Some(platform));
            Ok(vec![(source.with_digest(digest), desc)])
        }
        (_, Manifest::Index(index)) => Ok(index
            .manifests()
            .iter()
            .map(|d| (source.with_digest(d.digest().clone()), d.clone()))
            .collect()),
    }
}

/// `os/arch[/variant]` of an index entry; `None` for an entry without a platform, or an
/// attestation's `unknown/unknown`, which any number of entries may share.
fn platform_name(desc: &Descriptor) -> Option<String> {
    describe(desc).filter(|name| name != "unknown/unknown")
}

#[cfg(test)]
mod tests {
    use super::IndexAnnotations;

    #[test]
    fn annotations_take_buildx_types_and_keys_with_colons() {
        let mut a = IndexAnnotations::default();
        for arg in [
            "org.opencontainers.image.description=two platforms",
            "index:org.example.a=1",
            "manifest-descriptor:org.example.b=x=y",
            "com.example:c=2",
        ] {
            a.add(arg).unwrap();
        }
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pairs(&a.index),
            [
                "com.example:c=2",
                "org.example.a=1",
                "org.opencontainers.image.description=two platforms"
            ]
        );
        assert_eq!(pairs(&a.entries), ["org.example.b=x=y"]);

        for (bad, says) in [
            ("org.example.a", "expected [TYPE:]KEY=VALUE"),
            ("=1", "the key is empty"),
            ("manifest:org.example.a=1", "not \"manifest\""),
            ("index[linux/amd64]:org.example.a=1", "per-platform"),
        ] {
            let err = a.add(bad).unwrap_err();
            assert!(err.contains(bad) && err.contains(says), "{bad}: {err}");
        }
    }
}

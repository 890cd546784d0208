//! Keeping the store small and whole: `prune` drops what nothing needs, `fsck` proves that what
//! is there is what it claims to be.

use std::collections::HashSet;
use std::fs::File;

use oci_spec::image::{Digest, ImageManifest};

use crate::config::ImageConfig;
use crate::digest::HashingReader;
use crate::error::{IoContext, Result};
use crate::layer::OverlayXattrs;
use crate::layer::apply::verify;
use crate::layer::compress::decompress;
use crate::store::{Store, chain_ids};

/// What `prune` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub images: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub layers: usize,
}

/// Blobs and layer dirs that a set of manifests keeps alive.
#[derive(Debug, Default)]
struct Live {
    blobs: HashSet<String>,
    chains: HashSet<String>,
}

impl Live {
    fn add_manifest(&mut self, store: &Store, manifest: &Digest) {
        self.blobs.insert(manifest.to_string());
        let Ok(bytes) = std::fs::read(store.blob_path(manifest)) else {
            return;
        };
        let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) else {
            return;
        };
        self.blobs.insert(m.config().digest().to_string());
        for l in m.layers() {
            self.blobs.insert(l.digest().to_string());
        }
        if let Ok(cbytes) = std::fs::read(store.blob_path(m.config().digest()))
            && let Ok(c) = serde_json::from_slice::<ImageConfig>(&cbytes)
        {
            for chain in chain_ids(&c.rootfs.diff_ids) {
                self.chains.insert(chain.to_string());
            }
        }
    }
}

/// Removes untagged images, then every blob and extracted layer that no image and no build
/// cache entry needs (with `all`, the build cache is emptied first).
pub fn prune(store: &Store, all: bool) -> Result<Pruned> {
    let _lock = store.prune_lock()?;
    let mut pruned = Pruned::default();
    if all {
        store.cache_clear()?;
        store.clear_cache_mounts()?;
    }
    pruned.images = store.update_records(|records| {
        let before = records.len();
        records.retain(|r| r.name.is_some());
        before - records.len()
    })?;
    let mut live = Live::default();
    for r in store.records()? {
        live.add_manifest(store, r.manifest.digest());
    }
    for m in store.cache_manifests()? {
        live.add_manifest(store, &m);
    }
    for blob in store.blobs()? {
        if !live.blobs.contains(&blob.to_string()) {
            pruned.bytes += std::fs::metadata(store.blob_path(&blob)).map_or(0, |m| m.len());
            store.remove_blob(&blob)?;
            pruned.blobs += 1;
        }
    }
    for layer in store.layer_records()? {
        if !live.chains.contains(&layer.chain_id.to_string()) {
            store.remove_layer(&layer.chain_id)?;
            pruned.layers += 1;
        }
    }
    Ok(pruned)
}

/// One problem `fsck` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The blob, layer or image it is about.
    pub subject: String,
    pub what: String,
    /// For a damaged extracted layer: its chain id (removing it repairs the store, since the
    /// layer is extracted again from its verified blob when next needed).
    pub layer: Option<Digest>,
}

/// Verifies every blob against its digest, every extracted layer dir against the blob it came
/// from, and that every image's blobs are present.
pub fn fsck(store: &Store) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let mut good = HashSet::new();
    for blob in store.blobs()? {
        let path = store.blob_path(&blob);
        let f = File::open(&path).at("open", &path)?;
        let (actual, _) = HashingReader::new(f).finish().at("read", &path)?;
        if actual == blob {
            good.insert(blob.to_string());
        } else {
            problems.push(Problem {
                subject: format!("blob {blob}"),
                what: format!("content hashes to {actual}"),
                layer: None,
            });
        }
    }
    for r in store.records()? {
        let name = r
            .name
            .as_ref()
            .map_or_else(|| r.manifest.digest().to_string(), |n| n.familiar());
        let mut need = vec![r.manifest.digest().clone()];
        if let Ok(image) = store.image_for_manifest(&r.manifest) {
            need.push(image.id().clone());
            need.extend(image.manifest.layers().iter().map(|l| l.digest().clone()));
        }
        for d in need {
            if !store.has_blob(&d) {
                problems.push(Problem {
                    subject: format!("image {name}"),
                    what: format!("blob {d} is missing"),
                    layer: None,
                });
            }
        }
    }
    let ns = OverlayXattrs::for_this_process();
    for layer in store.layer_records()? {
        let subject = format!("layer {} (blob {})", layer.chain_id, layer.blob);
        if !good.contains(&layer.blob.to_string()) {
            problems.push(Problem {
                subject,
                what: "its blob is missing or corrupt, so the layer dir cannot be checked".into(),
                layer: None,
            });
            continue;
        }
        let path = store.blob_path(&layer.blob);
        let input = decompress(File::open(&path).at("open", &path)?).at("read", &path)?;
        let dir = store.layer_dir(&layer.chain_id);
        match verify(input, &dir, ns) {
            Ok(mismatches) => problems.extend(mismatches.into_iter().map(|m| Problem {
                subject: subject.clone(),
                what: format!("/{}: {}", m.path.display(), m.what),
                layer: Some(layer.chain_id.clone()),
            })),
            Err(e) => problems.push(Problem {
                subject: subject.clone(),
                what: e.to_string(),
                layer: Some(layer.chain_id.clone()),
            }),
        }
    }
    Ok(problems)
}

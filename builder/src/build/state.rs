//! The image a stage has built so far, and the build cache that maps a step's key to the state
//! it produced.
//!
//! A state's key names how it was made: the key of a base image is its manifest digest, and a
//! step's key is the hash of its parent's key and of everything the step depends on (the
//! instruction after expansion, the build args in effect, a content hash of COPY sources).
//! The cache maps a key to a manifest in the store (config and layers of the resulting state),
//! so a hit costs one small file read, and an unchanged rebuild gives the same image id.

use std::path::PathBuf;

use layerfs::config::{History, ImageConfig};
use layerfs::layer::commit::{CommitOptions, ensure_extracted, squash};
use layerfs::store::{Image, Store, chain_ids};
use oci_spec::image::{Descriptor, Digest, MediaType};
use serde::Serialize;

/// An image state: config and layers, and the key that made it.
#[derive(Debug, Clone)]
pub struct ImageState {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// Hex SHA-256 (see the module docs).
    pub key: String,
}

impl ImageState {
    /// The state of an image in the store.
    pub fn of_image(image: &Image) -> Self {
        ImageState {
            config: image.config.clone(),
            layers: image.manifest.layers().clone(),
            key: hex_sha256(&("image", image.manifest_digest.to_string())),
        }
    }

    /// `FROM scratch`.
    pub fn scratch() -> Self {
        let mut config = ImageConfig::new_for_host();
        config.config.env = Some(vec![DEFAULT_PATH_ENV.to_owned()]);
        ImageState {
            config,
            layers: Vec::new(),
            key: hex_sha256(&"scratch"),
        }
    }

    /// The chain id of the top layer (none for an image without layers).
    pub fn top_chain(&self) -> Option<Digest> {
        chain_ids(&self.config.rootfs.diff_ids).pop()
    }

    /// The extracted layer dirs, bottom first (extracting any that are missing).
    pub fn layer_dirs(&self, store: &Store) -> layerfs::Result<Vec<PathBuf>> {
        ensure_extracted(store, &self.layers, &self.config.rootfs.diff_ids)
    }

    /// Stores this state's config and manifest; returns the manifest's descriptor.
    pub fn save(&self, store: &Store) -> layerfs::Result<Descriptor> {
        store.put_image(&self.config, &self.layers)
    }

    /// This state with its layers above the first `keep` squashed into one (`--squash` keeps
    /// the base image's, `--squash-all` none). The history entries of the squashed layers
    /// become empty ones, followed by one for the new layer. The result is cached under a key
    /// of its own, so an unchanged rebuild does not squash again.
    pub fn squashed(
        &self,
        store: &Store,
        keep: usize,
        opts: CommitOptions,
    ) -> layerfs::Result<ImageState> {
        let squashed = self.layers.len().saturating_sub(keep);
        if squashed < 2 {
            return Ok(self.clone());
        }
        let key = step_key(
            &self.key,
            &serde_json::json!({ "squash": keep, "compression": format!("{:?}", opts.compression) }),
        );
        if let Some(cached) = ImageState::from_cache(store, &key) {
            return Ok(cached);
        }
        let blob = squash(store, &self.layers, keep, opts)?;
        let mut config = self.config.clone();
        config.rootfs.diff_ids.truncate(keep);
        config.rootfs.diff_ids.push(blob.diff_id);
        for (layer, h) in config
            .history
            .iter_mut()
            .filter(|h| !h.empty_layer)
            .enumerate()
        {
            h.empty_layer = layer >= keep;
        }
        config.history.push(History {
            created: config.created.clone(),
            created_by: Some(format!("strata build: {squashed} layers squashed into one")),
            comment: Some("squashed".to_owned()),
            ..History::default()
        });
        let mut layers = self.layers[..keep].to_vec();
        layers.push(blob.descriptor);
        let state = ImageState {
            config,
            layers,
            key,
        };
        state.to_cache(store)?;
        Ok(state)
    }

    /// The state recorded in the cache for `key`, if any.
    pub fn from_cache(store: &Store, key: &str) -> Option<Self> {
        ImageState::from_manifest(store, key, store.cache_get(key)?)
    }

    /// The state with key `key` whose config and layers the store's image manifest `manifest`
    /// holds (`None` if the store does not have it whole).
    pub fn from_manifest(store: &Store, key: &str, manifest: Digest) -> Option<Self> {
        let size = std::fs::metadata(store.blob_path(&manifest)).ok()?.len();
        let image = store
            .image_for_manifest(&Descriptor::new(MediaType::ImageManifest, size, manifest))
            .ok()?;
        Some(ImageState {
            config: image.config,
            layers: image.manifest.layers().clone(),
            key: key.to_owned(),
        })
    }

    /// Records this state as the result of its key.
    pub fn to_cache(&self, store: &Store) -> layerfs::Result<Descriptor> {
        let manifest = self.save(store)?;
        store.cache_put(&self.key, manifest.digest())?;
        Ok(manifest)
    }
}

/// The PATH docker gives an image that sets none.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Hex SHA-256 of a value's canonical JSON.
pub fn hex_sha256(value: &impl Serialize) -> String {
    let bytes = layerfs::config::canonical_json(value);
    layerfs::digest::digest_of(&bytes).digest().to_owned()
}

/// The key of a step over the state with key `parent`.
pub fn step_key(parent: &str, step: &impl Serialize) -> String {
    hex_sha256(&serde_json::json!({ "parent": parent, "step": step }))
}

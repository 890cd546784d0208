//! The build cache outside the store: an OCI image index whose entries are the image manifests
//! of cached build states, each annotated with its step key ([`CACHE_KEY_ANNOTATION`]). Pushed
//! to a registry it is `build --cache-to type=registry`; written as an OCI image layout
//! directory (that index as `index.json`, every manifest, config and layer under `blobs/`) it
//! is `--cache-to type=local`, which CI caches (a directory saved between jobs) carry.
//! Reading a layout back brings in only the states a build asks for, each blob checked
//! against its digest.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};

use crate::config::canonical_json;
use crate::error::{Error, IoContext, Result};
use crate::store::Store;

/// The annotation that names a cache entry's step key.
pub const CACHE_KEY_ANNOTATION: &str = "dev.strata.cache.key";

/// The cache index of `entries` (step key, state manifest digest), each key once, stored as a
/// blob; its descriptor.
pub fn cache_index(store: &Store, entries: &[(String, Digest)]) -> Result<Descriptor> {
    let bytes = index_bytes(store, entries)?;
    let digest = store.put_blob(&bytes)?;
    Ok(Descriptor::new(
        MediaType::ImageIndex,
        bytes.len() as u64,
        digest,
    ))
}

fn index_bytes(store: &Store, entries: &[(String, Digest)]) -> Result<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    let mut manifests = Vec::new();
    for (key, digest) in entries {
        if !seen.insert(key) {
            continue;
        }
        let path = store.blob_path(digest);
        let size = fs::metadata(&path).at("stat", &path)?.len();
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest.to_string(),
            "size": size,
            "annotations": { CACHE_KEY_ANNOTATION: key },
        }));
    }
    Ok(canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    })))
}

/// The entries of a cache index: step key → state manifest digest.
pub fn index_entries(index: &[u8]) -> std::result::Result<HashMap<String, Digest>, String> {
    let index: ImageIndex =
        serde_json::from_slice(index).map_err(|e| format!("not an OCI image index: {e}"))?;
    Ok(index
        .manifests()
        .iter()
        .filter_map(|m| {
            let key = m.annotations().as_ref()?.get(CACHE_KEY_ANNOTATION)?;
            Some((key.clone(), m.digest().clone()))
        })
        .collect())
}

/// Writes `entries` as the cache layout `dir` (made if missing; blobs already there stay, and
/// `index.json` is replaced whole, so a reader never sees half an index).
pub fn export_dir(store: &Store, entries: &[(String, Digest)], dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).at("create directory", &blobs)?;
    for (_, manifest) in entries {
        for digest in state_blobs(store, manifest)? {
            let dest = blobs.join(digest.digest());
            if !dest.exists() {
                let tmp = blobs.join(format!(".{}.tmp", digest.digest()));
                let src = store.blob_path(&digest);
                fs::copy(&src, &tmp).at("copy", &src)?;
                fs::rename(&tmp, &dest).at("rename", &tmp)?;
            }
        }
    }
    write_replacing(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_replacing(&dir.join("index.json"), &index_bytes(store, entries)?)
}

/// The cache entries of the layout `dir`.
pub fn read_dir_entries(dir: &Path) -> Result<HashMap<String, Digest>> {
    let path = dir.join("index.json");
    let bytes = fs::read(&path).at("read", &path)?;
    index_entries(&bytes).map_err(|reason| Error::Archive { path, reason })
}

/// Brings the state `manifest` of the cache layout `dir` into the store: its layers and
/// config, then the manifest, each checked against its digest.
pub fn import_from_dir(store: &Store, dir: &Path, manifest: &Digest) -> Result<()> {
    let blob_in_dir = |d: &Digest| -> PathBuf { dir.join("blobs/sha256").join(d.digest()) };
    let manifest_bytes = fs::read(blob_in_dir(manifest)).at("read", &blob_in_dir(manifest))?;
    let parsed: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|source| Error::Json {
            what: format!("{}: manifest {manifest}", dir.display()),
            source,
        })?;
    let mut wanted: Vec<&Digest> = parsed.layers().iter().map(|l| l.digest()).collect();
    wanted.push(parsed.config().digest());
    for digest in wanted {
        if store.has_blob(digest) {
            continue;
        }
        let path = blob_in_dir(digest);
        let mut file = File::open(&path).at("open", &path)?;
        let size = file.metadata().at("stat", &path)?.len();
        let mut w = store.blob_writer(Some(digest), Some(size))?;
        io::copy(&mut file, &mut w).at("copy", &path)?;
        w.commit()?;
    }
    let stored = store.put_blob(&manifest_bytes)?;
    if &stored != manifest {
        return Err(Error::DigestMismatch {
            what: format!("{}: manifest", dir.display()),
            expected: manifest.clone(),
            actual: stored,
        });
    }
    Ok(())
}

/// The blobs of a state in the store: its layers, its config and its manifest.
fn state_blobs(store: &Store, manifest: &Digest) -> Result<Vec<Digest>> {
    let bytes = store.read_blob(manifest)?;
    let parsed: ImageManifest = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        what: format!("manifest {manifest}"),
        source,
    })?;
    let mut blobs: Vec<Digest> = parsed.layers().iter().map(|l| l.digest().clone()).collect();
    blobs.push(parsed.config().digest().clone());
    blobs.push(manifest.clone());
    Ok(blobs)
}

/// Writes `path` through a temporary file beside it, renamed into place.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).at("create", &tmp)?;
    f.write_all(bytes).at("write", &tmp)?;
    f.sync_all().at("fsync", &tmp)?;
    fs::rename(&tmp, path).at("rename", &tmp)
}

//! Plain OCI image layouts, apart from the store: the `oci:DIR[:NAME]` of skopeo and umoci,
//! which `strata copy` reads and writes.
//!
//! A manifest is found by its `org.opencontainers.image.ref.name` annotation, a name as the
//! layout's writer gave it (skopeo and umoci write a tag such as `v1`, not a full reference).
//! A blob is written to a temporary file in the layout's directory (as skopeo does), checked
//! against its digest and size, fsync'd, then renamed into `blobs/sha256/`: a blob that is
//! visible is whole. `index.json` is replaced by rename too. Docker schema 2 manifests go in
//! in their OCI form ([`oci_form`]), as skopeo writes them: OCI readers take nothing else.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, ImageIndex, MediaType};

use crate::digest::{HashingWriter, copy_in_large_reads, digest_of};
use crate::error::{Error, IoContext as _, Result};
use crate::store::{Image, REF_NAME, Store, blob_path_in};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout at `root`, which must be one (it has an `oci-layout` file).
    pub fn open(root: impl Into<PathBuf>) -> Result<Layout> {
        let root = root.into();
        let marker = root.join("oci-layout");
        if !marker.is_file() {
            return Err(Error::Unsupported(format!(
                "{} is not an OCI image layout (it has no oci-layout file)",
                root.display()
            )));
        }
        Ok(Layout { root })
    }

    /// The layout at `root`, made there (empty) when the directory has none.
    pub fn create(root: impl Into<PathBuf>) -> Result<Layout> {
        let root = root.into();
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).at("create directory", &blobs)?;
        let layout = Layout { root };
        let marker = layout.root.join("oci-layout");
        if !marker.exists() {
            layout.replace_file(&marker, OCI_LAYOUT)?;
        }
        if !layout.index_path().exists() {
            layout.write_index(&[])?;
        }
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path_in(&self.root, digest)
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The blob `digest`, checked against it.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let data = fs::read(&path).at("read", &path)?;
        let actual = digest_of(&data);
        if &actual != digest {
            return Err(Error::Unsupported(format!(
                "blob {} does not match its digest {digest} (it hashes to {actual})",
                path.display()
            )));
        }
        Ok(data)
    }

    /// Stores `data` as a blob (unless the layout has it); returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let digest = digest_of(data);
        if !self.has_blob(&digest) {
            let mut w = self.blob_writer(&digest, data.len() as u64)?;
            w.write_all(data).at("write", &w.tmp)?;
            w.commit()?;
        }
        Ok(digest)
    }

    /// A writer for the blob `digest` of `size` bytes; [`LayoutBlobWriter::commit`] checks it
    /// and makes it visible.
    pub fn blob_writer(&self, digest: &Digest, size: u64) -> Result<LayoutBlobWriter> {
        let tmp = self.temporary(&format!("blob-{}", digest.digest()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at("create", &tmp)?;
        Ok(LayoutBlobWriter {
            out: Some(HashingWriter::new(BufWriter::with_capacity(
                256 << 10,
                file,
            ))),
            dest: self.blob_path(digest),
            tmp,
            digest: digest.clone(),
            size,
        })
    }

    /// Adds the store's `image` as `name` (or unnamed): its layers and config, then its
    /// manifest (in its [OCI form](oci_form) if it is Docker's), then the index entry. Blobs
    /// the layout has are kept; the others are copied and checked against their digests on
    /// the way. Returns the entry.
    pub fn add_image(
        &self,
        store: &Store,
        image: &Image,
        name: Option<&str>,
    ) -> Result<Descriptor> {
        let blobs = image
            .manifest
            .layers()
            .iter()
            .chain([image.manifest.config()])
            .map(|d| (d.digest(), d.size()));
        for (digest, size) in blobs {
            if self.has_blob(digest) {
                continue;
            }
            let mut from = store.open_blob(digest)?;
            let mut to = self.blob_writer(digest, size)?;
            copy_in_large_reads(&mut from, &mut to).at("copy", &store.blob_path(digest))?;
            to.commit()?;
        }
        let (entry, bytes) = manifest_for_layout(store, image)?;
        self.put_blob(&bytes)?;
        self.add(&entry, name)?;
        Ok(entry)
    }

    /// The manifests `index.json` lists, with their annotations.
    pub fn manifests(&self) -> Result<Vec<Descriptor>> {
        let path = self.index_path();
        let data = fs::read(&path).at("read", &path)?;
        let index: ImageIndex = serde_json::from_slice(&data).map_err(|source| Error::Json {
            what: path.display().to_string(),
            source,
        })?;
        Ok(index.manifests().clone())
    }

    /// The manifest named `name`; without a name, the layout's only manifest.
    pub fn find(&self, name: Option<&str>) -> Result<Descriptor> {
        let manifests = self.manifests()?;
        let found: Vec<&Descriptor> = manifests
            .iter()
            .filter(|d| name.is_none_or(|n| ref_name(d) == Some(n)))
            .collect();
        match (&found[..], name) {
            (&[one], _) => Ok(one.clone()),
            (&[], Some(n)) => {
                let names: Vec<&str> = manifests.iter().filter_map(ref_name).collect();
                Err(Error::Unsupported(format!(
                    "no image named {n:?} in the OCI layout {}; it has: {}",
                    self.root.display(),
                    if names.is_empty() {
                        "no named images".to_owned()
                    } else {
                        names.join(", ")
                    }
                )))
            }
            (_, Some(n)) => Err(Error::Unsupported(format!(
                "{} images are named {n:?} in the OCI layout {}",
                found.len(),
                self.root.display()
            ))),
            (_, None) => Err(Error::Unsupported(format!(
                "the OCI layout {} holds {} images: name one, as oci:{}:NAME",
                self.root.display(),
                manifests.len(),
                self.root.display()
            ))),
        }
    }

    /// Lists `manifest` in `index.json` as `name` (replacing what had that name), or unnamed.
    /// Its blobs must be in the layout already.
    pub fn add(&self, manifest: &Descriptor, name: Option<&str>) -> Result<()> {
        let mut manifests = self.manifests()?;
        let mut entry = manifest.clone();
        entry.set_annotations(
            name.map(|n| [(REF_NAME.to_owned(), n.to_owned())].into_iter().collect()),
        );
        match name {
            Some(n) => manifests.retain(|d| ref_name(d) != Some(n)),
            None => manifests.retain(|d| d.digest() != manifest.digest() || ref_name(d).is_some()),
        }
        manifests.push(entry);
        self.write_index(&manifests)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn write_index(&self, manifests: &[Descriptor]) -> Result<()> {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&index).expect("an index serializes");
        self.replace_file(&self.index_path(), &bytes)
    }

    /// Writes `path` whole through a temporary file and a rename.
    fn replace_file(&self, path: &Path, data: &[u8]) -> Result<()> {
        let tmp = self.temporary("file");
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
            .at("write", &tmp);
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, path).at("rename", path)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// A path for a temporary file in the layout's directory, on the blobs' filesystem.
    fn temporary(&self, purpose: &str) -> PathBuf {
        self.root
            .join(format!(".strata-{}-{purpose}.tmp", std::process::id()))
    }
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The OCI form of a Docker schema 2 manifest or manifest list, for an OCI layout: umoci and
/// skopeo take only OCI types from one, and skopeo converts in the same way when it writes one.
/// The document keeps everything but its media types (so it gets a new digest); the config and
/// layer blobs stay as they are. A list's entries named in `converted` (old digest → the OCI
/// form's descriptor) point to those. `None`: the document is not Docker's.
pub fn oci_form(
    media_type: &str,
    bytes: &[u8],
    converted: &HashMap<Digest, Descriptor>,
) -> Result<Option<(Descriptor, Vec<u8>)>> {
    if media_type != DOCKER_MANIFEST && media_type != DOCKER_LIST {
        return Ok(None);
    }
    let what = || format!("manifest {}", digest_of(bytes));
    let mut doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: what(),
            source,
        })?;
    let oci_type = if media_type == DOCKER_LIST {
        for entry in doc["manifests"].as_array_mut().into_iter().flatten() {
            let old = entry["digest"]
                .as_str()
                .and_then(crate::digest::parse_sha256);
            if let Some(new) = old.and_then(|d| converted.get(&d)) {
                entry["mediaType"] = new.media_type().to_string().into();
                entry["digest"] = new.digest().to_string().into();
                entry["size"] = new.size().into();
            }
        }
        MediaType::ImageIndex
    } else {
        doc["config"]["mediaType"] = MediaType::ImageConfig.to_string().into();
        for layer in doc["layers"].as_array_mut().into_iter().flatten() {
            let oci = match layer["mediaType"].as_str() {
                Some("application/vnd.docker.image.rootfs.diff.tar.gzip") => {
                    MediaType::ImageLayerGzip
                }
                Some("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") => {
                    MediaType::ImageLayerNonDistributableGzip
                }
                Some("application/vnd.docker.image.rootfs.diff.tar") => MediaType::ImageLayer,
                _ => continue,
            };
            layer["mediaType"] = oci.to_string().into();
        }
        MediaType::ImageManifest
    };
    doc["mediaType"] = oci_type.to_string().into();
    let out = serde_json::to_vec(&doc).map_err(|source| Error::Json {
        what: what(),
        source,
    })?;
    let desc = Descriptor::new(oci_type, out.len() as u64, digest_of(&out));
    Ok(Some((desc, out)))
}

/// A manifest or index `desc` with its `bytes` as an OCI layout holds it: its
/// [OCI form](oci_form) if it is Docker's (a list's entries pointing as `converted` says),
/// else as it is.
pub fn layout_form(
    desc: Descriptor,
    bytes: Vec<u8>,
    converted: &HashMap<Digest, Descriptor>,
) -> Result<(Descriptor, Vec<u8>)> {
    Ok(oci_form(desc.media_type().as_ref(), &bytes, converted)?.unwrap_or((desc, bytes)))
}

/// The store's `image`'s manifest as an OCI layout holds it ([`layout_form`]).
pub(crate) fn manifest_for_layout(store: &Store, image: &Image) -> Result<(Descriptor, Vec<u8>)> {
    let bytes = store.read_blob(&image.manifest_digest)?;
    let desc = Descriptor::new(
        image.manifest_media_type.clone(),
        bytes.len() as u64,
        image.manifest_digest.clone(),
    );
    layout_form(desc, bytes, &HashMap::new())
}

/// The `org.opencontainers.image.ref.name` of an index entry.
fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// A blob being written into a layout; dropped without [`commit`](Self::commit), it leaves
/// nothing behind.
pub struct LayoutBlobWriter {
    out: Option<HashingWriter<BufWriter<File>>>,
    dest: PathBuf,
    tmp: PathBuf,
    digest: Digest,
    size: u64,
}

impl LayoutBlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.out.as_ref().map_or(0, HashingWriter::len)
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the content against the digest and size, fsyncs it and renames it into place.
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("committed once");
        let (file, actual, len) = out.finish();
        let file = file
            .into_inner()
            .map_err(|e| e.into_error())
            .at("write", &self.tmp)?;
        if actual != self.digest || len != self.size {
            return Err(Error::Unsupported(format!(
                "blob {}: {len} bytes hashing to {actual}, not the {} bytes announced",
                self.digest, self.size
            )));
        }
        file.sync_all().at("sync", &self.tmp)?;
        fs::rename(&self.tmp, &self.dest).at("rename", &self.dest)
    }
}

impl Write for LayoutBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("not committed").flush()
    }
}

impl Drop for LayoutBlobWriter {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use oci_spec::image::MediaType;

    use super::oci_form;
    use crate::digest::{digest_of, parse_sha256};

    const CONFIG: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const LAYER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn docker_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{CONFIG}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{LAYER}"}}]}}"#
        )
    }

    #[test]
    fn docker_manifests_take_oci_media_types_and_keep_their_blobs() {
        let docker = docker_manifest();
        let (desc, bytes) = oci_form(
            "application/vnd.docker.distribution.manifest.v2+json",
            docker.as_bytes(),
            &HashMap::new(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(desc.media_type(), &MediaType::ImageManifest);
        assert_eq!(desc.digest(), &digest_of(&bytes));
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["mediaType"], MediaType::ImageManifest.to_string());
        assert_eq!(
            doc["config"]["mediaType"],
            MediaType::ImageConfig.to_string()
        );
        assert_eq!(doc["config"]["digest"], CONFIG);
        assert_eq!(
            doc["layers"][0]["mediaType"],
            MediaType::ImageLayerGzip.to_string()
        );
        assert_eq!(doc["layers"][0]["digest"], LAYER);
        assert_eq!(doc["layers"][0]["size"], 9);

        // A list's entries point to their children's OCI forms.
        let old = digest_of(docker.as_bytes());
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":{},"digest":"{old}","platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            docker.len()
        );
        let converted = HashMap::from([(old, desc.clone())]);
        let (index, bytes) = oci_form(
            "application/vnd.docker.distribution.manifest.list.v2+json",
            list.as_bytes(),
            &converted,
        )
        .unwrap()
        .unwrap();
        assert_eq!(index.media_type(), &MediaType::ImageIndex);
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let entry = &doc["manifests"][0];
        assert_eq!(
            parse_sha256(entry["digest"].as_str().unwrap()).as_ref(),
            Some(desc.digest())
        );
        assert_eq!(entry["mediaType"], MediaType::ImageManifest.to_string());
        assert_eq!(entry["platform"]["variant"], "v8");

        // OCI documents are left alone.
        assert!(
            oci_form(MediaType::ImageManifest.as_ref(), &bytes, &HashMap::new())
                .unwrap()
                .is_none()
        );
    }
}

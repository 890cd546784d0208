//! Images in and out of the store as files: `docker save` archives, OCI archives (an OCI image
//! layout in a tar) and OCI layout directories, and an image's files as a plain directory.
//!
//! Saving writes to a temporary name beside the destination and renames it when complete, so a
//! failed save leaves no half archive. Loading streams the archive once: every file becomes a
//! staged blob (verified, fsync'd, not yet visible); the manifests are then resolved, every
//! layer is extracted from its staged blob (diff id verified), and only when all of that
//! succeeded are the blobs committed and the names tagged. A truncated or corrupted archive
//! leaves the store as it was.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use crate::config::{ImageConfig, canonical_json, host_architecture};
use crate::digest::{copy_in_large_reads, digest_of, parse_sha256};
use crate::error::{Error, IoContext, Result};
use crate::layer::commit::{chain_on, extract_stream, flatten_into};
use crate::layer::compress::{Detected, decompress, detect};
use crate::layer::diff::write_changes;
use crate::layer::tarball::{EntryKind, EntryMeta, TarWriter};
use crate::reference::Reference;
use crate::store::{Image, StagedBlob, Store};

/// The archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// What `docker save` writes: `manifest.json`, the config, uncompressed layer tars.
    DockerArchive,
    /// An OCI image layout in a tar file.
    OciArchive,
    /// An OCI image layout directory.
    OciDir,
}

const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn archive_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Archive {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

// ------------------------------------------------------------------------------------ save

/// Writes `images` (each tagged as its name, if given; an image may come more than once
/// with different names) to `dest` in `format`, every blob once.
pub fn save(
    store: &Store,
    images: &[(Image, Option<Reference>)],
    format: Format,
    dest: &Path,
) -> Result<()> {
    if format != Format::OciDir {
        return write_file_in_place(dest, |file, tmp| {
            save_stream(store, images, format, file, tmp)
        });
    }
    let tmp = temporary_beside(dest);
    fs::create_dir(&tmp).at("create directory", &tmp)?;
    let done = save_oci(store, images, &mut ArchiveOut::Dir(tmp.clone())).and_then(|()| {
        make_room_for_dir(dest)?;
        fs::rename(&tmp, dest).at("rename", &tmp)
    });
    if done.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    done
}

/// Makes the file `dest` with `write` (given the open file and the path it has meanwhile):
/// beside `dest` first, renamed into place only once `write` succeeds, removed otherwise.
fn write_file_in_place(dest: &Path, write: impl FnOnce(File, &Path) -> Result<()>) -> Result<()> {
    let tmp = temporary_beside(dest);
    let done = File::create(&tmp)
        .at("create", &tmp)
        .and_then(|file| write(file, &tmp))
        .and_then(|()| fs::rename(&tmp, dest).at("rename", &tmp));
    if done.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    done
}

/// Flushes `file` to disk when it is a regular file (not a pipe or a terminal).
fn sync_if_file(file: &File, what: &Path) -> Result<()> {
    if file.metadata().at("stat", what)?.is_file() {
        file.sync_all().at("fsync", what)?;
    }
    Ok(())
}

/// Writes `images` as a tar archive in `format` (not [`Format::OciDir`]) to `out`, an open
/// file or a pipe such as stdout (`docker save > x.tar`, `docker save | gzip`); fsync'd when it
/// is a regular file. `what` names `out` in errors.
pub fn save_stream(
    store: &Store,
    images: &[(Image, Option<Reference>)],
    format: Format,
    out: File,
    what: &Path,
) -> Result<()> {
    let out = BufWriter::with_capacity(1 << 20, out);
    let file = match format {
        Format::DockerArchive => save_docker(store, images, out, what)?,
        Format::OciArchive => {
            let mut archive = ArchiveOut::Tar(TarWriter::new(out, None), Vec::new());
            save_oci(store, images, &mut archive)?;
            let ArchiveOut::Tar(tar, _) = archive else {
                unreachable!("made as a tar above")
            };
            finish_tar(tar, what)?
        }
        Format::OciDir => {
            return Err(archive_err(
                what,
                "an OCI layout directory cannot be written to a stream",
            ));
        }
    };
    sync_if_file(&file, what)
}

/// Ends the archive `tar` and returns its file, flushed.
fn finish_tar(tar: TarWriter<BufWriter<File>>, what: &Path) -> Result<File> {
    let w = tar.finish().at("write", what)?;
    w.into_inner()
        .map_err(|e| Error::io("write", what, e.into_error()))
}

/// Where a file or directory is made before it is renamed to `dest`: beside it.
fn temporary_beside(dest: &Path) -> PathBuf {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(format!(
        ".{}.strata-tmp-{}",
        dest.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ))
}

/// Lets a directory be renamed to `dest`: nothing is there, or an empty directory (removed).
fn make_room_for_dir(dest: &Path) -> Result<()> {
    if !dest.exists() {
        return Ok(());
    }
    let empty = fs::read_dir(dest)
        .at("read directory", dest)?
        .next()
        .is_none();
    if !empty {
        return Err(archive_err(dest, "the directory exists and is not empty"));
    }
    fs::remove_dir(dest).at("remove", dest)
}

/// Writes the files of `image` to the directory `dest` (which must not exist, or be empty):
/// its layers applied in order, whiteouts carried out, with the same in-root path resolution
/// as every extraction. The tree is built beside `dest` and renamed into place, so a failed
/// export leaves nothing.
pub fn export_rootfs(store: &Store, image: &Image, dest: &Path) -> Result<()> {
    let tmp = temporary_beside(dest);
    fs::create_dir(&tmp).at("create directory", &tmp)?;
    let result = (|| {
        flatten_into(store, image.manifest.layers(), &tmp)?;
        make_room_for_dir(dest)?;
        fs::rename(&tmp, dest).at("rename", &tmp)
    })();
    if result.is_err() {
        let _ = crate::store::remove_tree(&tmp);
    }
    result
}

/// Writes the files of `image` as one tar (`buildx -o type=tar`) to the file `dest`, made
/// beside it and renamed into place.
pub fn export_rootfs_tar(store: &Store, image: &Image, dest: &Path) -> Result<()> {
    write_file_in_place(dest, |file, tmp| {
        export_rootfs_tar_stream(store, image, file, tmp)
    })
}

/// Writes the files of `image` as one tar to `out`, an open file or a pipe such as stdout:
/// flattened under the store's tmp first (whiteouts carried out), then archived in order.
/// `what` names `out` in errors.
pub fn export_rootfs_tar_stream(
    store: &Store,
    image: &Image,
    out: File,
    what: &Path,
) -> Result<()> {
    let work = store.tmp_path("export");
    let (empty, rootfs) = (work.join("empty"), work.join("rootfs"));
    let result = (|| {
        for dir in [&empty, &rootfs] {
            fs::create_dir_all(dir).at("create directory", dir)?;
        }
        flatten_into(store, image.manifest.layers(), &rootfs)?;
        let mut tar = TarWriter::new(BufWriter::with_capacity(1 << 20, out), None);
        write_changes(&empty, &rootfs, &mut tar)?;
        sync_if_file(&finish_tar(tar, what)?, what)
    })();
    let _ = crate::store::remove_tree(&work);
    result
}

/// Where the files of an OCI layout go: a tar, or a directory.
enum ArchiveOut {
    /// The tar and the directories already written to it (tools such as oci-image-tool want
    /// the directory entries too).
    Tar(TarWriter<BufWriter<File>>, Vec<String>),
    Dir(PathBuf),
}

impl ArchiveOut {
    fn add(&mut self, name: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        match self {
            ArchiveOut::Tar(t, dirs) => {
                let mut prefix = String::new();
                for component in name
                    .split('/')
                    .rev()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    prefix = if prefix.is_empty() {
                        component.to_owned()
                    } else {
                        format!("{prefix}/{component}")
                    };
                    if !dirs.contains(&prefix) {
                        let mut dir = file_entry(&prefix, 0);
                        dir.kind = EntryKind::Dir;
                        dir.mode = 0o755;
                        t.append(&dir, None)
                            .at("write archive entry", Path::new(&prefix))?;
                        dirs.push(prefix.clone());
                    }
                }
                t.append(&file_entry(name, size), Some(data))
                    .at("write archive entry", Path::new(name))
            }
            ArchiveOut::Dir(root) => {
                let path = root.join(name);
                if let Some(p) = path.parent() {
                    fs::create_dir_all(p).at("create directory", p)?;
                }
                let mut f = File::create(&path).at("create", &path)?;
                io::copy(data, &mut f).at("write", &path)?;
                Ok(())
            }
        }
    }
}

fn file_entry(name: &str, size: u64) -> EntryMeta {
    EntryMeta {
        path: name.as_bytes().to_vec(),
        kind: EntryKind::File { size },
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: Vec::new(),
    }
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.digest())
}

fn save_oci(
    store: &Store,
    images: &[(Image, Option<Reference>)],
    out: &mut ArchiveOut,
) -> Result<()> {
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    out.add("oci-layout", layout.len() as u64, &mut &layout[..])?;
    let mut manifests = Vec::new();
    let mut blobs: Vec<(Digest, u64)> = Vec::new();
    // The manifests, written from memory: a Docker schema 2 one in its OCI form.
    let mut manifest_blobs: Vec<(Digest, Vec<u8>)> = Vec::new();
    let mut seen = HashSet::new();
    for (image, name) in images {
        let (entry, bytes) = crate::layout::manifest_for_layout(store, image)?;
        if seen.insert(entry.digest().clone()) {
            manifest_blobs.push((entry.digest().clone(), bytes));
        }
        let mut desc = serde_json::json!({
            "mediaType": entry.media_type().to_string(),
            "digest": entry.digest().to_string(),
            "size": entry.size(),
        });
        if let Some(n) = name {
            // As docker writes it: the tag as the OCI ref name, the full name for containerd.
            desc["annotations"] = serde_json::json!({
                crate::store::REF_NAME: n.tag().unwrap_or("latest"),
                CONTAINERD_NAME: n.to_string(),
            });
        }
        manifests.push(desc);
        let image_blobs = [(image.id().clone(), image.manifest.config().size())]
            .into_iter()
            .chain(
                image
                    .manifest
                    .layers()
                    .iter()
                    .map(|l| (l.digest().clone(), l.size())),
            );
        for (digest, size) in image_blobs {
            if seen.insert(digest.clone()) {
                blobs.push((digest, size));
            }
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    // index.json before the blobs: some readers (oci-image-tool) look for it first.
    let bytes = canonical_json(&index);
    out.add("index.json", bytes.len() as u64, &mut &bytes[..])?;
    for (digest, size) in &blobs {
        let mut f = store.open_blob(digest)?;
        out.add(&blob_name(digest), *size, &mut f)?;
    }
    for (digest, bytes) in &manifest_blobs {
        out.add(&blob_name(digest), bytes.len() as u64, &mut &bytes[..])?;
    }
    Ok(())
}

fn save_docker(
    store: &Store,
    images: &[(Image, Option<Reference>)],
    out: BufWriter<File>,
    what: &Path,
) -> Result<File> {
    let mut tar = TarWriter::new(out, None);
    // One manifest.json entry per image, with all the names it was asked for by.
    let mut entries: Vec<(&Image, Vec<String>, Vec<String>)> = Vec::new();
    let mut written = HashSet::new();
    for (image, name) in images {
        let tags = name.iter().map(Reference::familiar);
        if let Some(e) = entries.iter_mut().find(|e| e.0.id() == image.id()) {
            e.1.extend(tags);
            continue;
        }
        let config_name = format!("{}.json", image.id().digest());
        if written.insert(config_name.clone()) {
            let config = store.read_blob(image.id())?;
            tar.append(
                &file_entry(&config_name, config.len() as u64),
                Some(&mut &config[..]),
            )
            .at("write archive entry", Path::new(&config_name))?;
        }
        let mut layer_names = Vec::new();
        for (layer, diff_id) in image
            .manifest
            .layers()
            .iter()
            .zip(&image.config.rootfs.diff_ids)
        {
            let entry = format!("{}/layer.tar", diff_id.digest());
            if written.insert(entry.clone()) {
                append_uncompressed_layer(store, &mut tar, layer, &entry)?;
            }
            layer_names.push(entry);
        }
        entries.push((image, tags.collect(), layer_names));
    }
    let manifest: Vec<serde_json::Value> = entries
        .iter()
        .map(|(image, tags, layers)| {
            serde_json::json!({
                "Config": format!("{}.json", image.id().digest()),
                "RepoTags": tags,
                "Layers": layers,
            })
        })
        .collect();
    let bytes = serde_json::to_vec(&manifest).expect("JSON values serialize");
    tar.append(
        &file_entry("manifest.json", bytes.len() as u64),
        Some(&mut &bytes[..]),
    )
    .at("write archive entry", Path::new("manifest.json"))?;
    finish_tar(tar, what)
}

/// Appends `layer` to a docker archive as the uncompressed tar `entry`. The tar entry needs
/// the size up front, so a compressed blob is decompressed to a temporary file first.
fn append_uncompressed_layer(
    store: &Store,
    tar: &mut TarWriter<BufWriter<File>>,
    layer: &Descriptor,
    entry: &str,
) -> Result<()> {
    let mut blob = store.open_blob(layer.digest())?;
    let mut head = [0u8; 6];
    let n = read_head(&mut blob, &mut head).at("read", &store.blob_path(layer.digest()))?;
    if detect(&head[..n]) == Detected::Plain {
        let mut blob = store.open_blob(layer.digest())?;
        return tar
            .append(&file_entry(entry, layer.size()), Some(&mut blob))
            .at("write archive entry", Path::new(entry));
    }
    let tmp = store.tmp_path("save-layer");
    let result = (|| {
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at("create", &tmp)?;
        let mut d = decompress(store.open_blob(layer.digest())?).at("decompress", &tmp)?;
        let size = copy_in_large_reads(&mut d, &mut f).at("decompress layer to", &tmp)?;
        let mut f = File::open(&tmp).at("open", &tmp)?;
        tar.append(&file_entry(entry, size), Some(&mut f))
            .at("write archive entry", Path::new(entry))
    })();
    let _ = fs::remove_file(&tmp);
    result
}

fn read_head(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

// ------------------------------------------------------------------------------------ load

/// What `load` added: the images and the names they were tagged with.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub manifest: Descriptor,
    pub id: Digest,
    pub names: Vec<Reference>,
}

/// The files of an archive: small ones in memory, every one staged as a blob.
struct Staged {
    path: PathBuf,
    files: HashMap<String, StagedBlob>,
}

impl Staged {
    fn blob(&self, name: &str) -> Result<&StagedBlob> {
        self.files
            .get(name)
            .ok_or_else(|| archive_err(&self.path, format!("{name} is missing from the archive")))
    }

    fn by_digest(&self, d: &Digest) -> Result<&StagedBlob> {
        let b = self.blob(&blob_name(d))?;
        if &b.digest != d {
            return Err(Error::DigestMismatch {
                what: format!("{}: {}", self.path.display(), blob_name(d)),
                expected: d.clone(),
                actual: b.digest.clone(),
            });
        }
        Ok(b)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let b = self.blob(name)?;
        fs::read(b.path()).at("read", b.path())
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        serde_json::from_slice(&self.read(name)?).map_err(|source| Error::Json {
            what: format!("{}: {name}", self.path.display()),
            source,
        })
    }
}

/// Loads every image of the archive or layout directory at `path` into the store.
pub fn load(store: &Store, path: &Path) -> Result<Vec<Loaded>> {
    let _content = store.lock_content()?;
    let staged = if path.is_dir() {
        stage_dir(store, path)?
    } else {
        let f = File::open(path).at("open", path)?;
        stage_tar(store, path, f)?
    };
    load_staged(store, staged, path)
}

/// Loads every image of the archive `input` (plain or compressed, read once from start to
/// end, such as stdin); `what` names it in errors.
pub fn load_stream(store: &Store, input: impl Read + Send, what: &Path) -> Result<Vec<Loaded>> {
    let _content = store.lock_content()?;
    let staged = stage_tar(store, what, input)?;
    load_staged(store, staged, what)
}

/// Stores the images of a staged archive (the content lock held).
fn load_staged(store: &Store, staged: Staged, path: &Path) -> Result<Vec<Loaded>> {
    let images = if staged.files.contains_key("index.json") {
        oci_images(&staged)?
    } else if staged.files.contains_key("manifest.json") {
        docker_images(&staged)?
    } else {
        return Err(archive_err(
            path,
            "neither an OCI layout (index.json) nor a docker archive (manifest.json)",
        ));
    };
    if images.is_empty() {
        return Err(archive_err(path, "the archive holds no image"));
    }
    // Extract every layer from its staged blob (verifying diff ids) before anything is visible.
    for img in &images {
        let mut parent: Option<Digest> = None;
        for ((layer, diff_id), file) in img
            .layers
            .iter()
            .zip(&img.config.rootfs.diff_ids)
            .zip(&img.layer_files)
        {
            let blob = staged.blob(file)?;
            let f = File::open(blob.path()).at("open", blob.path())?;
            extract_stream(store, f, diff_id, parent.as_ref(), layer.digest())?;
            parent = Some(chain_on(parent.as_ref(), diff_id));
        }
    }
    let mut staged = staged;
    let mut out = Vec::new();
    for img in images {
        for file in &img.files {
            if let Some(blob) = staged.files.remove(file)
                && !store.has_blob(&blob.digest)
            {
                blob.commit()?;
            }
        }
        for bytes in &img.made {
            store.put_blob(bytes)?;
        }
        if img.names.is_empty() {
            store.add_untagged(&img.manifest)?;
        }
        for n in &img.names {
            store.tag(n, &img.manifest)?;
        }
        out.push(Loaded {
            id: img.config_digest,
            manifest: img.manifest,
            names: img.names,
        });
    }
    Ok(out)
}

fn stage_tar(store: &Store, path: &Path, input: impl Read + Send) -> Result<Staged> {
    let input = decompress(input).at("read", path)?;
    let mut archive = tar::Archive::new(input);
    let mut files = HashMap::new();
    let tar_err = |source| Error::Tar {
        what: path.display().to_string(),
        source,
    };
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let name = entry
            .path()
            .map_err(tar_err)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let expected = name
            .strip_prefix("blobs/sha256/")
            .and_then(|h| parse_sha256(&format!("sha256:{h}")));
        let size = entry.size();
        let truncated = || Error::Tar {
            what: path.display().to_string(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive is truncated in {name}"),
            ),
        };
        let mut w = store.blob_writer(None, None)?;
        let copied = io::copy(&mut entry, &mut w).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => truncated(),
            _ => tar_err(e),
        })?;
        if copied != size {
            return Err(truncated());
        }
        let blob = w.stage()?;
        if let Some(expected) = expected
            && blob.digest != expected
        {
            return Err(Error::DigestMismatch {
                what: format!("{}: {name}", path.display()),
                expected,
                actual: blob.digest.clone(),
            });
        }
        files.insert(name, blob);
    }
    Ok(Staged {
        path: path.to_owned(),
        files,
    })
}

fn stage_dir(store: &Store, path: &Path) -> Result<Staged> {
    let mut files = HashMap::new();
    for name in ["index.json", "oci-layout", "manifest.json"] {
        let p = path.join(name);
        if p.is_file() {
            files.insert(name.to_owned(), stage_file(store, &p, None)?);
        }
    }
    let blobs = path.join("blobs/sha256");
    if blobs.is_dir() {
        for e in fs::read_dir(&blobs).at("read directory", &blobs)? {
            let e = e.at("read directory", &blobs)?;
            let hex = e.file_name().to_string_lossy().into_owned();
            if let Some(d) = parse_sha256(&format!("sha256:{hex}")) {
                files.insert(
                    format!("blobs/sha256/{hex}"),
                    stage_file(store, &e.path(), Some(&d))?,
                );
            }
        }
    }
    Ok(Staged {
        path: path.to_owned(),
        files,
    })
}

fn stage_file(store: &Store, path: &Path, expected: Option<&Digest>) -> Result<StagedBlob> {
    let mut f = File::open(path).at("open", path)?;
    let mut w = store.blob_writer(expected, None)?;
    copy_in_large_reads(&mut f, &mut w).at("read", path)?;
    w.stage().map_err(|e| match e {
        Error::DigestMismatch {
            expected, actual, ..
        } => Error::DigestMismatch {
            what: path.display().to_string(),
            expected,
            actual,
        },
        other => other,
    })
}

/// One image found in an archive, ready to be committed.
struct Found {
    manifest: Descriptor,
    config_digest: Digest,
    config: ImageConfig,
    layers: Vec<Descriptor>,
    /// The staged files holding each layer.
    layer_files: Vec<String>,
    /// Every staged file the image needs (manifest, config, layers).
    files: Vec<String>,
    names: Vec<Reference>,
    /// Blobs made during the load (a docker archive's OCI manifest).
    made: Vec<Vec<u8>>,
}

fn oci_images(staged: &Staged) -> Result<Vec<Found>> {
    let index: ImageIndex = staged.json("index.json")?;
    let mut out = Vec::new();
    for desc in index.manifests() {
        let annotations = desc.annotations().clone().unwrap_or_default();
        let name = annotations
            .get(CONTAINERD_NAME)
            .or_else(|| {
                annotations
                    .get(crate::store::REF_NAME)
                    .filter(|n| n.contains([':', '/']))
            })
            .and_then(|n| Reference::parse(n).ok());
        let manifest_desc = pick_platform(staged, desc)?;
        let mbytes =
            fs::read(staged.by_digest(manifest_desc.digest())?.path()).at("read", &staged.path)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&mbytes).map_err(|source| Error::Json {
                what: format!(
                    "{}: manifest {}",
                    staged.path.display(),
                    manifest_desc.digest()
                ),
                source,
            })?;
        let config_digest = manifest.config().digest().clone();
        let cbytes = fs::read(staged.by_digest(&config_digest)?.path()).at("read", &staged.path)?;
        let config: ImageConfig =
            serde_json::from_slice(&cbytes).map_err(|source| Error::Json {
                what: format!("{}: config {config_digest}", staged.path.display()),
                source,
            })?;
        let mut files = vec![blob_name(manifest_desc.digest()), blob_name(&config_digest)];
        let mut layer_files = Vec::new();
        for l in manifest.layers() {
            staged.by_digest(l.digest())?;
            layer_files.push(blob_name(l.digest()));
        }
        files.extend(layer_files.iter().cloned());
        check_layer_count(staged, manifest.layers().len(), &config)?;
        let mut m = manifest_desc.clone();
        m.set_annotations(None);
        m.set_platform(None);
        out.push(Found {
            manifest: m,
            config_digest,
            config,
            layers: manifest.layers().clone(),
            layer_files,
            files,
            names: name.into_iter().collect(),
            made: Vec::new(),
        });
    }
    Ok(out)
}

/// A manifest descriptor, or for an index the manifest of this host's platform.
fn pick_platform(staged: &Staged, desc: &Descriptor) -> Result<Descriptor> {
    let is_index = matches!(desc.media_type(), MediaType::ImageIndex)
        || desc.media_type().to_string()
            == "application/vnd.docker.distribution.manifest.list.v2+json";
    if !is_index {
        return Ok(desc.clone());
    }
    let bytes = fs::read(staged.by_digest(desc.digest())?.path()).at("read", &staged.path)?;
    let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        what: format!("{}: index {}", staged.path.display(), desc.digest()),
        source,
    })?;
    let arch = host_architecture();
    let found = index.manifests().iter().find(|m| {
        m.platform()
            .as_ref()
            .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
    });
    match found {
        Some(m) if staged.files.contains_key(&blob_name(m.digest())) => pick_platform(staged, m),
        _ => Err(archive_err(
            &staged.path,
            format!(
                "index {} has no linux/{arch} image in the archive",
                desc.digest()
            ),
        )),
    }
}

fn check_layer_count(staged: &Staged, layers: usize, config: &ImageConfig) -> Result<()> {
    if layers != config.rootfs.diff_ids.len() {
        return Err(archive_err(
            &staged.path,
            format!(
                "an image lists {layers} layers but its config {} diff ids",
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn docker_images(staged: &Staged) -> Result<Vec<Found>> {
    let entries: Vec<DockerManifestEntry> = staged.json("manifest.json")?;
    let mut out = Vec::new();
    for e in entries {
        let config_blob = staged.blob(&e.config)?;
        let config_digest = config_blob.digest.clone();
        let config_size = config_blob.size;
        let config: ImageConfig = staged.json(&e.config)?;
        check_layer_count(staged, e.layers.len(), &config)?;
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let blob = staged.blob(path)?;
            let mut head = [0u8; 6];
            let n = read_head(
                &mut File::open(blob.path()).at("open", blob.path())?,
                &mut head,
            )
            .at("read", blob.path())?;
            let media = match detect(&head[..n]) {
                Detected::Plain => {
                    if &blob.digest != diff_id {
                        return Err(Error::DigestMismatch {
                            what: format!("{}: layer {path}", staged.path.display()),
                            expected: diff_id.clone(),
                            actual: blob.digest.clone(),
                        });
                    }
                    "application/vnd.oci.image.layer.v1.tar"
                }
                Detected::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Detected::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                _ => {
                    return Err(archive_err(
                        &staged.path,
                        format!("layer {path} is compressed in a way OCI layers cannot be"),
                    ));
                }
            };
            layers.push(Descriptor::new(
                MediaType::from(media),
                blob.size,
                blob.digest.clone(),
            ));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": Descriptor::new(MediaType::ImageConfig, config_size, config_digest.clone()),
            "layers": layers,
        });
        let bytes = canonical_json(&manifest);
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut files = vec![e.config.clone()];
        files.extend(e.layers.iter().cloned());
        out.push(Found {
            manifest: Descriptor::new(
                MediaType::ImageManifest,
                bytes.len() as u64,
                digest_of(&bytes),
            ),
            config_digest,
            config,
            layers,
            layer_files: e.layers,
            files,
            names,
            made: vec![bytes],
        });
    }
    Ok(out)
}

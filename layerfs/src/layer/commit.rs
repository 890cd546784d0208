//! The streaming pipelines between directories and the store.
//!
//! Committing a dir: one pass walks the tree and writes the tar; a second thread hashes it for
//! the diff id, hands it to the compressor's workers and hashes their output for the blob
//! digest while writing it to the store. Extracting a blob: one thread reads and hashes the
//! blob and decompresses it; the other hashes the tar for the diff id and extracts it. Nothing
//! is held whole in memory, and the two cores overlap compression with the file system work.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use oci_spec::image::{Descriptor, Digest, MediaType};

use super::apply::{ApplyOptions, Target, apply};
use super::compress::{Compression, decompress};
use super::diff::{write_changes, write_layer};
use super::tarball::TarWriter;
use crate::digest::{Hasher, HashingReader, copy_in_large_reads};
use crate::error::{Error, IoContext, Result};
use crate::store::{LayerRecord, Store, chain_ids, remove_tree};

/// The size of a chunk, and of a parallel gzip block, which takes chunks without a copy.
const CHUNK: usize = super::pgzip::BLOCK;
const CHUNKS_IN_FLIGHT: usize = 8;

/// The writing end of a chunk pipe between two threads.
#[derive(Debug)]
pub struct ChunkWriter {
    tx: SyncSender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

/// The reading end of a chunk pipe.
#[derive(Debug)]
pub struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

/// A bounded pipe of 1 MiB chunks.
pub fn chunk_pipe() -> (ChunkWriter, ChunkReader) {
    let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
    (
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        },
        ChunkReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        },
    )
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the other end of the pipeline stopped",
    )
}

impl ChunkWriter {
    /// Passes an error to the reader in place of the rest of the stream.
    pub fn fail(self, e: io::Error) {
        let _ = self.tx.send(Err(e));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx.send(Ok(full)).map_err(|_| closed())?;
        }
        Ok(())
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl ChunkReader {
    /// The rest of the stream as whole chunks, as they arrive (no copy through a buffer).
    pub fn into_chunks(self) -> impl Iterator<Item = io::Result<Vec<u8>>> {
        let rest = (self.pos < self.chunk.len()).then(|| Ok(self.chunk[self.pos..].to_vec()));
        rest.into_iter().chain(self.rx)
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A layer blob that is in the store.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// How to write a layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitOptions {
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: no mtime in the tar is later than this.
    pub clamp_mtime: Option<i64>,
}

/// Streams the tar that `produce` writes into a new layer blob in the store.
pub fn write_blob(
    store: &Store,
    opts: CommitOptions,
    produce: impl FnOnce(&mut TarWriter<ChunkWriter>) -> Result<()>,
) -> Result<LayerBlob> {
    let (tx, rx) = chunk_pipe();
    let blob = store.blob_writer(None, None)?;
    std::thread::scope(|s| {
        // The tar is hashed here rather than where it is written: the walk reading the files
        // is the longer of the two threads.
        let compressor = s.spawn(move || -> Result<(Digest, Digest, u64)> {
            let blob_path = store.tmp_dir();
            let mut enc = opts
                .compression
                .encoder(blob)
                .at("compress layer in", &blob_path)?;
            let mut tar = Hasher::default();
            for chunk in rx.into_chunks() {
                let chunk = chunk.at("compress layer in", &blob_path)?;
                tar.update(&chunk);
                enc.write_owned(chunk).at("compress layer in", &blob_path)?;
            }
            let (digest, size) = enc.finish().at("compress layer in", &blob_path)?.commit()?;
            Ok((tar.digest(), digest, size))
        });
        let mut tar = TarWriter::new(tx, opts.clamp_mtime);
        let produced = match produce(&mut tar) {
            Ok(()) => tar.finish().at("write layer tar to", &store.tmp_dir()),
            Err(e) => {
                // The compressor sees an error in place of the rest, so it does not commit
                // a blob of the truncated tar.
                tar.into_inner()
                    .fail(io::Error::other("the layer tar was not completed"));
                Err(e)
            }
        };
        // Whatever happened, the pipe is closed here, so the compressor ends.
        if let Err(e) = produced.map(drop) {
            let _ = compressor.join();
            return Err(e);
        }
        let (diff_id, digest, size) = compressor
            .join()
            .expect("the compressor thread does not panic")?;
        Ok(LayerBlob {
            descriptor: Descriptor::new(
                MediaType::from(opts.compression.media_type()),
                size,
                digest,
            ),
            diff_id,
        })
    })
}

/// A dir committed as a layer.
#[derive(Debug, Clone)]
pub struct CommittedLayer {
    pub blob: LayerBlob,
    pub chain_id: Digest,
    /// The extracted layer dir (where the committed dir now lives).
    pub dir: PathBuf,
}

/// Commits the overlay-format dir `dir` (an upper dir, or a tree staged under the store's tmp)
/// as a layer over the layer stack `parent` (a chain id): its tar becomes a blob in the store
/// and the dir itself is moved into place as the extracted layer — no re-extraction.
pub fn commit_dir(
    store: &Store,
    dir: &Path,
    parent: Option<&Digest>,
    opts: CommitOptions,
) -> Result<CommittedLayer> {
    let blob = write_blob(store, opts, |tar| write_layer(dir, tar).map(drop))?;
    let chain_id = chain_on(parent, &blob.diff_id);
    let record = LayerRecord {
        chain_id: chain_id.clone(),
        diff_id: blob.diff_id.clone(),
        parent: parent.cloned(),
        blob: blob.descriptor.digest().clone(),
    };
    let dir = store.install_layer(dir, &record)?;
    Ok(CommittedLayer {
        blob,
        chain_id,
        dir,
    })
}

/// The chain id of a layer with diff id `diff_id` over the stack `parent`.
pub fn chain_on(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => chain_ids(&[p.clone(), diff_id.clone()])
            .pop()
            .expect("two ids give two chains"),
    }
}

/// Extracts the layer stream `input` (compressed or not) as the layer `diff_id` over `parent`.
/// Decompression runs beside extraction; the tar must hash to `diff_id` or nothing is kept.
/// Returns the layer dir and the digest and size of the stream as read.
pub fn extract_stream(
    store: &Store,
    input: impl Read + Send,
    diff_id: &Digest,
    parent: Option<&Digest>,
    blob: &Digest,
) -> Result<(PathBuf, Digest, u64)> {
    let chain_id = chain_on(parent, diff_id);
    if store.layer_record(&chain_id).is_some() {
        let (d, n) = HashingReader::new(input)
            .finish()
            .at("read layer", &store.layer_dir(&chain_id))?;
        return Ok((store.layer_dir(&chain_id), d, n));
    }
    let staged = store.tmp_path("layer");
    let diff = staged.join("diff");
    std::fs::create_dir_all(&diff).at("create directory", &diff)?;
    let res = extract_into(input, &diff, diff_id, blob);
    let (read_digest, read_size) = match res {
        Ok(v) => v,
        Err(e) => {
            let _ = remove_tree(&staged);
            return Err(e);
        }
    };
    let record = LayerRecord {
        chain_id,
        diff_id: diff_id.clone(),
        parent: parent.cloned(),
        blob: blob.clone(),
    };
    let result = store.install_layer(&diff, &record);
    let _ = remove_tree(&staged);
    Ok((result?, read_digest, read_size))
}

fn extract_into(
    input: impl Read + Send,
    diff: &Path,
    diff_id: &Digest,
    blob: &Digest,
) -> Result<(Digest, u64)> {
    let (tx, rx) = chunk_pipe();
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> io::Result<(Digest, u64)> {
            let mut hashed = HashingReader::new(input);
            let copied = decompress(&mut hashed).and_then(|mut d| {
                let mut tx = tx;
                match copy_in_large_reads(&mut d, &mut tx) {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let msg = e.to_string();
                        tx.fail(e);
                        Err(io::Error::other(msg))
                    }
                }
            });
            copied?;
            hashed.finish()
        });
        let mut tar = HashingReader::new(rx);
        let applied = apply(
            &mut tar,
            diff,
            &ApplyOptions::for_this_process(Target::LayerDir),
        );
        let tar_hash = applied.and_then(|_| tar.finish().at("read layer", diff));
        let read = reader
            .join()
            .expect("the decompressor thread does not panic");
        let (actual_diff, _) = tar_hash.map_err(|e| match e {
            Error::Tar { source, .. } | Error::Io { source, .. }
                if source.kind() == io::ErrorKind::UnexpectedEof =>
            {
                Error::Tar {
                    what: format!("layer {blob}"),
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "the layer is truncated"),
                }
            }
            other => other,
        })?;
        let (read_digest, read_size) = read.map_err(|source| Error::Tar {
            what: format!("layer {blob}"),
            source,
        })?;
        if &actual_diff != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed layer {blob}"),
                expected: diff_id.clone(),
                actual: actual_diff,
            });
        }
        Ok((read_digest, read_size))
    })
}

/// Applies the layer blobs `layers` of the store, bottom first, to the plain directory `root`:
/// the flattened tree of the stack, whiteouts carried out.
pub fn flatten_into(store: &Store, layers: &[Descriptor], root: &Path) -> Result<()> {
    let opts = ApplyOptions::for_this_process(Target::Rootfs);
    for layer in layers {
        let blob = store.open_blob(layer.digest())?;
        let input = decompress(blob).at("decompress", &store.blob_path(layer.digest()))?;
        apply(input, root, &opts)?;
    }
    Ok(())
}

/// Squashes `layers[keep..]` into one layer over `layers[..keep]` (`docker build --squash`;
/// `keep` 0 squashes the whole stack): both stacks are flattened into plain trees under the
/// store's tmp, and the changes from the lower to the whole become the new layer's blob.
/// Nothing is left under tmp, whatever happens.
pub fn squash(
    store: &Store,
    layers: &[Descriptor],
    keep: usize,
    opts: CommitOptions,
) -> Result<LayerBlob> {
    let work = store.tmp_path("squash");
    let (below, whole) = (work.join("below"), work.join("whole"));
    let result = (|| {
        for dir in [&below, &whole] {
            std::fs::create_dir_all(dir).at("create directory", dir)?;
        }
        flatten_into(store, &layers[..keep], &below)?;
        flatten_into(store, layers, &whole)?;
        write_blob(store, opts, |tar| {
            write_changes(&below, &whole, tar).map(drop)
        })
    })();
    let _ = remove_tree(&work);
    result
}

/// Makes sure every layer of a stack is extracted (from the blobs in the store), bottom first,
/// and returns the layer dirs bottom first.
pub fn ensure_extracted(
    store: &Store,
    layers: &[Descriptor],
    diff_ids: &[Digest],
) -> Result<Vec<PathBuf>> {
    let chains = chain_ids(diff_ids);
    let mut dirs = Vec::with_capacity(layers.len());
    for (i, (desc, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
        if store.layer_record(&chains[i]).is_none() {
            let file = store.open_blob(desc.digest())?;
            let parent = i.checked_sub(1).map(|p| &chains[p]);
            let (dir, digest, size) = extract_stream(store, file, diff_id, parent, desc.digest())?;
            if &digest != desc.digest() || size != desc.size() {
                store.remove_layer(&chains[i])?;
                return Err(Error::DigestMismatch {
                    what: format!("layer blob {}", desc.digest()),
                    expected: desc.digest().clone(),
                    actual: digest,
                });
            }
            dirs.push(dir);
        } else {
            dirs.push(store.layer_dir(&chains[i]));
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tarball::{EntryKind, EntryMeta};

    /// Regression: a tar that failed half-way (a file unreadable in the middle of the walk)
    /// was still compressed to its end and committed as a blob of the truncated tar.
    #[test]
    fn a_commit_whose_tar_fails_half_way_stores_no_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let content = vec![7u8; 3 << 20];
        let failed = write_blob(&store, CommitOptions::default(), |tar| {
            let meta = EntryMeta {
                path: b"big".to_vec(),
                kind: EntryKind::File {
                    size: content.len() as u64,
                },
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                xattrs: vec![],
            };
            tar.append(&meta, Some(&mut &content[..])).unwrap();
            Err(Error::io(
                "read",
                "unreadable",
                io::Error::from_raw_os_error(libc::EIO),
            ))
        });
        assert!(failed.is_err());
        for dir in ["blobs/sha256", "tmp"] {
            let left: Vec<_> = std::fs::read_dir(tmp.path().join("store").join(dir))
                .unwrap()
                .collect();
            assert!(left.is_empty(), "{dir} holds {left:?}");
        }
    }
}

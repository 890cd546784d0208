//! The layer pipelines on their own, for bench/layers.sh:
//!
//! ```text
//! layerbench commit DIR STORE [gzip|zstd|none]   # DIR → layer blob in STORE (diff+tar+compress+hash)
//! layerbench extract BLOB DIFF_ID STORE          # a layer blob → its layer dir in STORE (verified)
//! layerbench sha256 FILE                         # hash throughput
//! ```
//! Each prints one line: what it did, how many bytes, how long.

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::Instant;

use layerfs::digest::HashingReader;
use layerfs::digest::parse_sha256;
use layerfs::layer::commit::{CommitOptions, extract_stream, write_blob};
use layerfs::layer::compress::Compression;
use layerfs::layer::diff::write_layer;
use layerfs::store::Store;

/// The strata binary's allocator, so that the pipelines run as they do there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The strata binary's jemalloc options (see `MALLOC_CONF` in src/main.rs).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: JemallocConf = JemallocConf(c"narenas:1".as_ptr());

#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a string literal, immutable for the life of the program.
unsafe impl Sync for JemallocConf {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["commit", dir, store, ref rest @ ..] => {
            let compression = rest
                .first()
                .map_or(Some(Compression::default()), |c| Compression::parse(c))
                .ok_or("unknown compression")?;
            let store = Store::open(store)?;
            let opts = CommitOptions { compression, clamp_mtime: None };
            let blob = write_blob(&store, opts, |tar| write_layer(Path::new(dir), tar).map(drop))?;
            println!(
                "commit {} bytes → {} ({}) in {:?}",
                blob.descriptor.size(),
                blob.descriptor.digest(),
                blob.diff_id,
                start.elapsed()
            );
        }
        ["extract", blob, diff_id, store] => {
            let store = Store::open(store)?;
            let diff_id = parse_sha256(diff_id).ok_or("DIFF_ID must be sha256:<hex>")?;
            let blob_digest = parse_sha256(&format!(
                "sha256:{}",
                Path::new(blob).file_name().and_then(|n| n.to_str()).unwrap_or_default()
            ))
            .unwrap_or_else(|| diff_id.clone());
            let (dir, digest, size) =
                extract_stream(&store, std::fs::File::open(blob)?, &diff_id, None, &blob_digest)?;
            println!("extract {size} bytes ({digest}) into {} in {:?}", dir.display(), start.elapsed());
        }
        ["sha256", file] => {
            let (d, n) = HashingReader::new(std::fs::File::open(file)?).finish()?;
            let secs = start.elapsed().as_secs_f64();
            println!("sha256 {n} bytes → {d} in {secs:.3}s: {:.2} GB/s", n as f64 / secs / 1e9);
        }
        _ => return Err("usage: layerbench commit DIR STORE [gzip|zstd|none] | extract BLOB DIFF_ID STORE | sha256 FILE".into()),
    }
    Ok(())
}

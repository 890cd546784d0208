//! COPY and ADD steps: their cache keys (content hashes of the sources, downloads of ADD's
//! URLs) and their execution through a union private to one thread.

use std::path::{Path, PathBuf};

use layerfs::config::creation_time;
use layerfs::mount::mount_union_readonly;
use oci_spec::image::Digest;

use super::{BuildError, Builder, StepError, absolute, lowers_or_empty, visit};
use crate::build::copy::{
    self, Content, CopyError, CopyPlan, NamedFile, Placement, Rewrite, SourceRoot,
};
use crate::build::fetch::{self, Downloads, FetchError};
use crate::build::state::ImageState;
use crate::build::userdb;
use crate::dockerfile::{self, Instruction, Source};

impl Builder<'_, '_> {
    /// The content part of a COPY/ADD cache key: the hash of its local sources (the context)
    /// and heredocs, or the key of the stage they come from. URL sources are keyed apart.
    pub(super) fn copy_key(&self, c: &dockerfile::Copy) -> Result<String, StepError> {
        let Some((dir, ignore)) = self.local_source(c.from.as_deref()) else {
            let from = c.from.as_deref().expect("no --from is the build context");
            return Ok(self.source_state(from)?.key);
        };
        let paths = local_sources(c);
        let filter = |p: &Path, d: bool| visit(ignore, p, d);
        let root = SourceRoot {
            root: dir,
            filter: Some(&filter),
            keep_owner: false,
        };
        let items = copy::resolve_sources(&paths, &root, "build context")?;
        let placement = Placement {
            dest: PathBuf::from(&c.dest),
            dest_is_dir: c.dest.ends_with('/'),
        };
        let files = heredoc_files(c);
        let plan = CopyPlan {
            root,
            items: &items,
            files: &files,
            placement,
            rewrite: Rewrite::default(),
            parents: Vec::new(),
        };
        Ok(plan.content_hash()?)
    }

    /// Downloads an ADD's URL sources (checked against `checksum`) under the store's tmp.
    pub(super) fn download(
        &self,
        ins: &Instruction,
        urls: &[String],
        checksum: Option<&Digest>,
    ) -> Result<Downloads, BuildError> {
        Downloads::fetch(
            self.store.tmp_path("add-url"),
            urls,
            checksum,
            self.opts.cancel,
        )
        .map_err(|e| match e {
            FetchError::Interrupted(_) => BuildError::Interrupted,
            e => self.step_err(ins, e),
        })
    }

    /// COPY and ADD (with ADD's URL sources already downloaded).
    pub(super) fn copy(
        &mut self,
        next: &mut ImageState,
        c: &dockerfile::Copy,
        is_add: bool,
        downloads: Option<&Downloads>,
    ) -> Result<bool, StepError> {
        let workdir = next
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let dest_text = c.dest.clone();
        let dest = absolute(&workdir, &dest_text);
        let paths = local_sources(c);
        // Downloads keep their names, 0600 and `Last-Modified`; heredocs follow them.
        let mut files: Vec<NamedFile> = downloads
            .iter()
            .flat_map(|d| &d.files)
            .map(|f| NamedFile {
                name: f.name.clone(),
                content: Content::File(f.path.clone()),
                mode: 0o600,
                mtime: f.mtime,
            })
            .collect();
        files.extend(heredoc_files(c));
        let chmod = c
            .chmod
            .as_deref()
            .map(|m| {
                u32::from_str_radix(m, 8)
                    .map_err(|_| StepError::Other(format!("--chmod={m}: not an octal mode")))
            })
            .transpose()?;
        // The source: the context (or a named one), or a stage's or image's layers mounted
        // read-only.
        let source = match (self.local_source(c.from.as_deref()), &c.from) {
            (Some((dir, ignore)), _) => CopyFrom::Local(dir.to_owned(), ignore.clone()),
            (None, from) => {
                let from = from.as_deref().expect("no --from is the build context");
                CopyFrom::Layers(lowers_or_empty(
                    self.store,
                    self.source_state(from)?.layer_dirs(self.store)?,
                ))
            }
        };
        let many =
            paths.len() + files.len() > 1 || paths.iter().any(|p| p.contains(['*', '?', '[']));
        if many && !dest_text.ends_with('/') {
            return Err(CopyError::DestNotDir(dest_text).into());
        }
        let chown = c.chown.clone();
        let driver = self.opts.storage_driver;
        let (_, changed) = self.with_union(next, move |rootfs| {
            let owner = chown
                .as_deref()
                .map(|spec| userdb::resolve_chown(rootfs, spec).map_err(StepError::Other))
                .transpose()?;
            let src_mount = rootfs.with_file_name("source");
            let run = |root: SourceRoot<'_>, kind: &'static str| -> Result<(), StepError> {
                let items = copy::resolve_sources(&paths, &root, kind)?;
                let dest_is_dir = dest_text.ends_with('/')
                    || dest_text.ends_with("/.")
                    || dest_text == "."
                    || copy::is_dir_in_root(rootfs, &dest);
                if is_add && add_archives(rootfs, &items, files.len(), &dest)? {
                    return Ok(());
                }
                let all_dirs =
                    !items.is_empty() && items.iter().all(|i| i.is_dir) && files.is_empty();
                let placement = Placement {
                    dest: dest.clone(),
                    dest_is_dir: dest_is_dir || all_dirs,
                };
                let parents = copy::missing_parents(rootfs, &dest, owner, placement.dest_is_dir);
                let rewrite = Rewrite {
                    owner,
                    chmod,
                    root_owned: !root.keep_owner,
                };
                let plan = CopyPlan {
                    root,
                    items: &items,
                    files: &files,
                    placement,
                    rewrite,
                    parents,
                };
                Ok(plan.copy_into(rootfs)?)
            };
            match &source {
                CopyFrom::Local(dir, ignore) => {
                    let filter = |p: &Path, d: bool| visit(ignore, p, d);
                    run(
                        SourceRoot {
                            root: dir,
                            filter: Some(&filter),
                            keep_owner: false,
                        },
                        "build context",
                    )
                }
                CopyFrom::Layers(lowers) => {
                    std::fs::create_dir_all(&src_mount)
                        .map_err(|e| layerfs::Error::io("create directory", &src_mount, e))?;
                    let source = mount_union_readonly(driver, lowers, &src_mount)?;
                    let kind = "source stage";
                    let r = run(
                        SourceRoot {
                            root: &src_mount,
                            filter: None,
                            keep_owner: true,
                        },
                        kind,
                    );
                    let unmounted = source.unmount().map_err(StepError::from);
                    r.and(unmounted)
                }
            }
        })?;
        Ok(changed)
    }
}

/// Where a COPY reads: a local directory (the build context or a named one) with its
/// `.dockerignore`, or a stage's or image's layer dirs.
enum CopyFrom {
    Local(PathBuf, crate::dockerignore::Dockerignore),
    Layers(Vec<PathBuf>),
}

/// ADD of local archives: extracts every source into `dest` when they are all tar archives
/// (true), does nothing when none is (false), refuses a mix (with `others` sources that are
/// not local files: heredocs, downloads, which are never extracted).
fn add_archives(
    rootfs: &Path,
    items: &[copy::Item],
    others: usize,
    dest: &Path,
) -> Result<bool, StepError> {
    let archives: Vec<&copy::Item> = items
        .iter()
        .filter(|i| !i.is_dir && is_archive(&i.path))
        .collect();
    if archives.is_empty() {
        return Ok(false);
    }
    if archives.len() != items.len() || others > 0 {
        return Err(StepError::Other(
            "ADD cannot mix archives and other sources in one instruction".into(),
        ));
    }
    copy::create_dirs(rootfs, copy::missing_parents(rootfs, dest, None, true))?;
    for a in archives {
        let f = std::fs::File::open(&a.path).map_err(|e| layerfs::Error::io("open", &a.path, e))?;
        let input = layerfs::layer::compress::decompress(f)
            .map_err(|e| layerfs::Error::io("read", &a.path, e))?;
        let mut opts = layerfs::layer::apply::ApplyOptions::for_this_process(
            layerfs::layer::apply::Target::Rootfs,
        );
        opts.whiteouts = false;
        let target = rootfs.join(dest.strip_prefix("/").unwrap_or(dest));
        layerfs::layer::apply::apply(input, &target, &opts)?;
    }
    Ok(true)
}

/// Whether a file is a tar archive (plain, gzip, zstd or xz), by its content.
fn is_archive(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let Ok(mut r) = layerfs::layer::compress::decompress(f) else {
        return false;
    };
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match std::io::Read::read(&mut r, &mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == 512 && (&head[257..262] == b"ustar" || tar_checksum_ok(&head))
}

fn tar_checksum_ok(h: &[u8]) -> bool {
    let stored = std::str::from_utf8(&h[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    stored == Some(sum) && h[0] != 0
}

/// The path sources of a COPY/ADD (local paths, globs, URLs), in order.
pub(super) fn path_sources(c: &dockerfile::Copy) -> Vec<String> {
    c.sources
        .iter()
        .filter_map(|s| match s {
            Source::Path(p) => Some(p.clone()),
            Source::Heredoc(_) => None,
        })
        .collect()
}

/// The sources of a COPY/ADD in its context, stage or image: its paths but URLs.
fn local_sources(c: &dockerfile::Copy) -> Vec<String> {
    let mut paths = path_sources(c);
    paths.retain(|p| !fetch::is_url(p));
    paths
}

/// The heredoc sources of a COPY/ADD: 0644, dated now (or `SOURCE_DATE_EPOCH`).
fn heredoc_files(c: &dockerfile::Copy) -> Vec<NamedFile> {
    c.sources
        .iter()
        .filter_map(|s| match s {
            Source::Heredoc(doc) => Some(NamedFile {
                name: doc.name.clone(),
                content: Content::Bytes(doc.text().into_owned().into_bytes()),
                mode: 0o644,
                mtime: creation_time(),
            }),
            Source::Path(_) => None,
        })
        .collect()
}

//! COPY and ADD: which files a source list names, what their content hash is (for the cache
//! key), and writing them into a root filesystem with docker's rules.
//!
//! Sources are turned into a tar stream by [`layerfs::layer::diff::TreeWriter`] and written into
//! the destination by [`layerfs::layer::apply`], so COPY shares the hardened, in-root path
//! resolution of layer extraction: a hostile context or stage cannot make COPY write outside the
//! rootfs. The cache key hashes the same stream with every mtime clamped to 0, so it covers
//! names, contents, modes, owners and link targets but not mtimes (a fresh checkout of the same
//! files hits the cache).
//!
//! Docker's rules: a directory source copies its contents; a destination ending in `/` (or an
//! existing directory, or several sources) is a directory and files keep their names in it;
//! files from the context belong to 0:0, files from a stage or image keep their owner,
//! `--chown` and `--chmod` override; a source that is itself a symlink is followed (inside its
//! root), symlinks below it are copied as links; parent directories of the destination are
//! created (owned by the `--chown` owner, if any).

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use layerfs::digest::HashingWriter;
use layerfs::layer::apply::{ApplyOptions, Target, apply};
use layerfs::layer::commit::chunk_pipe;
use layerfs::layer::diff::{TreeWriter, Visit};
use layerfs::layer::tarball::{EntryKind, EntryMeta, TarWriter};

use super::userdb::Owner;

/// Decides, per source path (relative to its root), what a COPY walk does with it.
pub type SourceFilter<'a> = &'a (dyn Fn(&Path, bool) -> Visit + Sync);

/// Where COPY reads from: the build context, a stage or an image (mounted).
#[derive(Clone, Copy)]
pub struct SourceRoot<'a> {
    pub root: &'a Path,
    /// `.dockerignore` (and `--exclude`) for the context; `None` for stages and images.
    pub filter: Option<SourceFilter<'a>>,
    /// Whether files keep their owners (stages and images) or become 0:0 (the context).
    pub keep_owner: bool,
}

impl std::fmt::Debug for SourceRoot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRoot")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// One thing to copy, resolved.
#[derive(Debug, Clone)]
pub struct Item {
    /// The path on disk (a top-level symlink already followed).
    pub path: PathBuf,
    /// Its path relative to the source root, as the filter and messages know it.
    pub name: PathBuf,
    pub is_dir: bool,
    /// The name it gets in the destination (its last component, or the link's name).
    pub base: std::ffi::OsString,
}

/// A file that is not in the source root: a heredoc, or a downloaded URL.
#[derive(Debug, Clone)]
pub struct NamedFile {
    /// The name it gets in a destination directory.
    pub name: String,
    pub content: Content,
    pub mode: u32,
    pub mtime: i64,
}

/// What a [`NamedFile`] holds.
#[derive(Debug, Clone)]
pub enum Content {
    Bytes(Vec<u8>),
    /// A file on disk (it is read when the plan is written).
    File(PathBuf),
}

/// Why sources could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}: forbidden path outside the build context")]
    Outside(String),
    #[error("{0}: no such file or directory in the {1}")]
    NotFound(String, &'static str),
    #[error("{0}: no source files were specified (the pattern matches nothing)")]
    NoMatch(String),
    #[error(
        "when copying more than one source the destination must be a directory ending in /: {0}"
    )]
    DestNotDir(String),
    #[error("{0}")]
    Io(#[from] layerfs::Error),
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Cleans a source path lexically; `None` if it climbs out of the root.
pub fn clean(src: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => {
                return None;
            }
            _ => {}
        }
    }
    Some(out)
}

/// Resolves the source patterns of a COPY/ADD against `root`. `kind` names the root in errors
/// ("build context", "stage build").
pub fn resolve_sources(
    sources: &[String],
    root: &SourceRoot<'_>,
    kind: &'static str,
) -> Result<Vec<Item>, CopyError> {
    let mut out = Vec::new();
    let visible =
        |name: &Path, is_dir: bool| root.filter.is_none_or(|f| f(name, is_dir) != Visit::Skip);
    for src in sources {
        let rel = clean(src).ok_or_else(|| CopyError::Outside(src.clone()))?;
        if has_glob(src) {
            let pattern =
                crate::glob::Glob::path(&rel.to_string_lossy()).map_err(|e| CopyError::Os {
                    what: src.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
            let mut matched = Vec::new();
            for e in walkdir::WalkDir::new(root.root)
                .min_depth(1)
                .sort_by_file_name()
            {
                let e = e.map_err(|e| CopyError::Os {
                    what: src.clone(),
                    source: e.into(),
                })?;
                let name = e
                    .path()
                    .strip_prefix(root.root)
                    .expect("below its root")
                    .to_owned();
                if pattern.matches(&name.to_string_lossy())
                    && visible(&name, e.file_type().is_dir())
                {
                    matched.push(name);
                }
            }
            if matched.is_empty() {
                return Err(CopyError::NoMatch(src.clone()));
            }
            for name in matched {
                out.push(item(root, &name, src, kind)?);
            }
        } else {
            let it = item(root, &rel, src, kind)?;
            if !rel.as_os_str().is_empty() && !visible(&rel, it.is_dir) {
                return Err(CopyError::NotFound(
                    format!("{src} (excluded by .dockerignore)"),
                    kind,
                ));
            }
            out.push(it);
        }
    }
    Ok(out)
}

/// One resolved source: a top-level symlink is followed inside the root.
fn item(
    root: &SourceRoot<'_>,
    rel: &Path,
    src: &str,
    kind: &'static str,
) -> Result<Item, CopyError> {
    let path = root.root.join(rel);
    let md = path
        .symlink_metadata()
        .map_err(|_| CopyError::NotFound(src.to_owned(), kind))?;
    let base = rel.file_name().map(ToOwned::to_owned).unwrap_or_default();
    let (path, is_dir) = if md.file_type().is_symlink() {
        let r = pathrs::Root::open(root.root).map_err(|e| CopyError::Os {
            what: src.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
        let h = r
            .resolve(rel)
            .map_err(|_| CopyError::NotFound(src.to_owned(), kind))?;
        let real = handle_path(&h).map_err(|e| CopyError::Os {
            what: src.to_owned(),
            source: e,
        })?;
        let is_dir = real.is_dir();
        (real, is_dir)
    } else {
        (path, md.is_dir())
    };
    Ok(Item {
        path,
        name: rel.to_owned(),
        is_dir,
        base,
    })
}

/// The owner and mode changes of a COPY.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rewrite {
    pub owner: Option<Owner>,
    pub chmod: Option<u32>,
    /// Context files become 0:0 unless `owner` says otherwise.
    pub root_owned: bool,
}

impl Rewrite {
    fn apply(&self, m: &mut EntryMeta) {
        if let Some(o) = self.owner {
            m.uid = u64::from(o.uid);
            m.gid = u64::from(o.gid);
        } else if self.root_owned {
            m.uid = 0;
            m.gid = 0;
        }
        if let Some(mode) = self.chmod
            && !matches!(m.kind, EntryKind::Symlink { .. })
        {
            m.mode = mode;
        }
    }
}

/// Where each item goes: `dest` is a directory (items keep their names in it) or a file name.
#[derive(Debug, Clone)]
pub struct Placement {
    pub dest: PathBuf,
    pub dest_is_dir: bool,
}

/// One COPY's worth of work: what to write, where, and with which owners and modes.
#[derive(Debug)]
pub struct CopyPlan<'a> {
    pub root: SourceRoot<'a>,
    pub items: &'a [Item],
    pub files: &'a [NamedFile],
    pub placement: Placement,
    pub rewrite: Rewrite,
    /// Directories to create first (the destination's missing parents).
    pub parents: Vec<EntryMeta>,
}

impl CopyPlan<'_> {
    /// Writes the plan's tar stream (`clamp` 0 gives the stream the cache key hashes).
    fn write<W: Write>(&self, tar: &mut TarWriter<W>) -> Result<(), CopyError> {
        let rewrite = self.rewrite;
        let rw = move |m: &mut EntryMeta| rewrite.apply(m);
        let allow_all = |_: &Path, _: bool| Visit::Include;
        let filter: &dyn Fn(&Path, bool) -> Visit = match self.root.filter {
            Some(f) => f,
            None => &allow_all,
        };
        let mut w = TreeWriter::new(tar, Some(&rw));
        for p in &self.parents {
            w.add_entry(p, None)?;
        }
        let dest = &self.placement.dest;
        let rel_dest = dest.strip_prefix("/").unwrap_or(dest).to_owned();
        for it in self.items {
            if it.is_dir {
                w.add_contents(&it.path, &rel_dest, &it.name, filter)?;
            } else {
                let dest = if self.placement.dest_is_dir {
                    rel_dest.join(&it.base)
                } else {
                    rel_dest.clone()
                };
                w.add(&it.path, &dest, &it.name, filter)?;
            }
        }
        for f in self.files {
            let dest = if self.placement.dest_is_dir {
                rel_dest.join(&f.name)
            } else {
                rel_dest.clone()
            };
            let (size, mut data): (u64, Box<dyn io::Read>) = match &f.content {
                Content::Bytes(b) => (b.len() as u64, Box::new(&b[..])),
                Content::File(p) => {
                    let open = || -> io::Result<(u64, std::fs::File)> {
                        let file = std::fs::File::open(p)?;
                        Ok((file.metadata()?.len(), file))
                    };
                    let (size, file) = open().map_err(|e| layerfs::Error::io("open", p, e))?;
                    (size, Box::new(file))
                }
            };
            let mut meta = EntryMeta {
                path: dest.to_string_lossy().into_owned().into_bytes(),
                kind: EntryKind::File { size },
                mode: f.mode,
                uid: 0,
                gid: 0,
                mtime: f.mtime,
                xattrs: Vec::new(),
            };
            rw(&mut meta);
            w.add_entry(&meta, Some(&mut data))?;
        }
        Ok(())
    }

    /// The content hash of what the plan writes, mtimes left out (they are clamped to 0).
    pub fn content_hash(&self) -> Result<String, CopyError> {
        let mut tar = TarWriter::new(HashingWriter::new(io::sink()), Some(0));
        self.write(&mut tar)?;
        let (_, digest, _) = tar
            .finish()
            .map_err(|e| CopyError::Os {
                what: "hashing COPY sources".into(),
                source: e,
            })?
            .finish();
        Ok(digest.digest().to_owned())
    }

    /// Writes the plan into the root filesystem `dest_root` (a mounted union): a second
    /// thread reads the sources while this one extracts.
    pub fn copy_into(&self, dest_root: &Path) -> Result<(), CopyError> {
        let (tx, rx) = chunk_pipe();
        std::thread::scope(|s| {
            let producer = s.spawn(move || {
                let mut tar = TarWriter::new(tx, None);
                self.write(&mut tar)?;
                tar.finish().map(drop).map_err(|e| CopyError::Os {
                    what: "COPY".into(),
                    source: e,
                })
            });
            let mut opts = ApplyOptions::for_this_process(Target::Rootfs);
            opts.whiteouts = false;
            let applied = apply(rx, dest_root, &opts);
            let produced = producer
                .join()
                .expect("the COPY reader thread does not panic");
            produced?;
            applied?;
            Ok(())
        })
    }
}

/// Creates the directories `parents` (from [`missing_parents`]) in `dest_root`.
pub fn create_dirs(dest_root: &Path, parents: Vec<EntryMeta>) -> Result<(), CopyError> {
    CopyPlan {
        root: SourceRoot {
            root: dest_root,
            filter: None,
            keep_owner: true,
        },
        items: &[],
        files: &[],
        placement: Placement {
            dest: PathBuf::from("/"),
            dest_is_dir: true,
        },
        rewrite: Rewrite::default(),
        parents,
    }
    .copy_into(dest_root)
}

/// Directory entries for the parents of `dest` that do not exist yet in `root`, outermost
/// first, owned by `owner` (0:0 by default), mode 0755.
pub fn missing_parents(
    root: &Path,
    dest: &Path,
    owner: Option<Owner>,
    include_self: bool,
) -> Vec<EntryMeta> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let mut out = Vec::new();
    let mut cur = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    let n = if include_self {
        comps.len()
    } else {
        comps.len().saturating_sub(1)
    };
    let resolver = pathrs::Root::open(root).ok();
    for c in &comps[..n] {
        cur.push(c);
        let exists = resolver.as_ref().is_some_and(|r| r.resolve(&cur).is_ok());
        if !exists {
            let o = owner.unwrap_or(Owner { uid: 0, gid: 0 });
            out.push(EntryMeta {
                path: cur.to_string_lossy().into_owned().into_bytes(),
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: u64::from(o.uid),
                gid: u64::from(o.gid),
                mtime: layerfs::config::creation_time(),
                xattrs: Vec::new(),
            });
        }
    }
    out
}

/// Whether `dest` is an existing directory inside `root` (symlinks followed inside it).
pub fn is_dir_in_root(root: &Path, dest: &Path) -> bool {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let Ok(r) = pathrs::Root::open(root) else {
        return false;
    };
    r.resolve(rel)
        .ok()
        .and_then(|h| handle_path(&h).ok())
        .is_some_and(|p| p.is_dir())
}

/// The path a resolved handle stands for now (through its `/proc/self/fd` link).
fn handle_path(h: &pathrs::Handle) -> io::Result<PathBuf> {
    use std::os::fd::{AsFd, AsRawFd};
    std::fs::read_link(format!("/proc/self/fd/{}", h.as_fd().as_raw_fd()))
}

//! From a directory to a layer tar.
//!
//! [`write_layer`] reads an overlay-format dir — an overlayfs upper dir, or an extracted layer —
//! and writes its tar: whiteout devices (or xattr whiteouts) become `.wh.NAME`, opaque dirs get a
//! `.wh..wh..opq` entry, overlayfs's own xattrs are left out. [`write_changes`] compares two
//! plain trees when no upper dir exists and writes what changed from the old to the new one.
//!
//! Entries come in a fixed order (depth first, names sorted bytewise); whiteouts carry fixed
//! metadata; hard links are kept (the first path in that order is the link target). The same
//! tree always gives the same tar.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::tarball::{EntryKind, EntryMeta, TarWriter};
use super::{OPAQUE_MARKER, WHITEOUT_PREFIX, is_host_only_xattr, is_overlay_xattr};
use crate::error::{Error, IoContext, Result};

/// Counts of what a diff wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiffStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub content_bytes: u64,
}

/// Writes the layer tar of the overlay-format directory `dir`.
pub fn write_layer<W: Write>(dir: &Path, tar: &mut TarWriter<W>) -> Result<DiffStats> {
    let mut w = Walker::new(tar);
    w.walk_overlay_dir(dir, Path::new(""))?;
    Ok(w.stats)
}

/// Writes a tar of what changed from the plain tree `old` to the plain tree `new`: new and
/// changed entries (with their parent directories), and a whiteout for each removed one.
pub fn write_changes<W: Write>(
    old: &Path,
    new: &Path,
    tar: &mut TarWriter<W>,
) -> Result<DiffStats> {
    let mut w = Walker::new(tar);
    let mut pending = Vec::new();
    w.compare_dirs(old, new, Path::new(""), &mut pending)?;
    Ok(w.stats)
}

struct Walker<'a, W: Write> {
    tar: &'a mut TarWriter<W>,
    /// Changes each entry's header before it is written (owner and mode for COPY --chown/--chmod).
    rewrite: Option<&'a dyn Fn(&mut EntryMeta)>,
    /// (dev, ino) of multiply-linked files already written → their path in the tar.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: DiffStats,
}

fn sorted_children(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)
        .at("read directory", dir)?
        .collect::<io::Result<_>>()
        .at("read directory", dir)?;
    v.sort_by_key(fs::DirEntry::file_name);
    Ok(v)
}

fn tar_path(rel: &Path) -> Vec<u8> {
    rel.as_os_str().as_bytes().to_vec()
}

fn is_whiteout_device(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

impl<'a, W: Write> Walker<'a, W> {
    fn new(tar: &'a mut TarWriter<W>) -> Self {
        Walker {
            tar,
            rewrite: None,
            links: HashMap::new(),
            stats: DiffStats::default(),
        }
    }

    fn walk_overlay_dir(&mut self, dir: &Path, rel: &Path) -> Result<()> {
        for e in sorted_children(dir)? {
            let path = e.path();
            let rel = rel.join(e.file_name());
            // A regular file (most entries) is opened once and examined through its fd: one
            // path lookup instead of three. Anything else, or a file that cannot be opened
            // (the error is reported when its content is read), goes by path.
            let opened = e
                .file_type()
                .is_ok_and(|t| t.is_file())
                .then(|| open_content(&path, libc::O_NONBLOCK).ok())
                .flatten();
            let (md, xattrs) = match &opened {
                Some(f) => (f.metadata().at("stat", &path)?, read_file_xattrs(f, &path)?),
                None => (
                    fs::symlink_metadata(&path).at("stat", &path)?,
                    read_xattrs(&path)?,
                ),
            };
            if is_whiteout_device(&md)
                || (md.is_file()
                    && md.len() == 0
                    && xattrs.iter().any(|(k, _)| super::is_whiteout_xattr(k)))
            {
                self.whiteout(&rel)?;
                continue;
            }
            let opaque = md.is_dir()
                && xattrs.iter().any(|(k, v)| {
                    (k == b"trusted.overlay.opaque" || k == b"user.overlay.opaque") && v == b"y"
                });
            self.entry(&path, &rel, &md, xattrs, opened)?;
            if md.is_dir() {
                if opaque {
                    self.marker(&rel.join(OPAQUE_MARKER))?;
                }
                self.walk_overlay_dir(&path, &rel)?;
            }
        }
        Ok(())
    }

    /// Writes `path` and, if it is a directory, everything below it, as plain entries.
    fn plain_tree(&mut self, path: &Path, rel: &Path, md: &Metadata) -> Result<()> {
        self.entry(path, rel, md, read_xattrs(path)?, None)?;
        if md.is_dir() {
            for e in sorted_children(path)? {
                let p = e.path();
                let md = fs::symlink_metadata(&p).at("stat", &p)?;
                self.plain_tree(&p, &rel.join(e.file_name()), &md)?;
            }
        }
        Ok(())
    }

    fn compare_dirs(
        &mut self,
        old: &Path,
        new: &Path,
        rel: &Path,
        pending: &mut Vec<(PathBuf, PathBuf, Metadata)>,
    ) -> Result<()> {
        let olds = sorted_children(old)?;
        let news = sorted_children(new)?;
        let (mut i, mut j) = (0, 0);
        while i < olds.len() || j < news.len() {
            let ord = match (olds.get(i), news.get(j)) {
                (Some(o), Some(n)) => o.file_name().cmp(&n.file_name()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    self.flush_pending(pending)?;
                    self.whiteout(&rel.join(olds[i].file_name()))?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.flush_pending(pending)?;
                    let p = news[j].path();
                    let md = fs::symlink_metadata(&p).at("stat", &p)?;
                    self.plain_tree(&p, &rel.join(news[j].file_name()), &md)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (op, np) = (olds[i].path(), news[j].path());
                    let child = rel.join(news[j].file_name());
                    let omd = fs::symlink_metadata(&op).at("stat", &op)?;
                    let nmd = fs::symlink_metadata(&np).at("stat", &np)?;
                    let same = same_inode_metadata(&omd, &nmd)
                        && read_xattrs(&op)? == read_xattrs(&np)?
                        && (!nmd.is_symlink()
                            || fs::read_link(&op).ok() == fs::read_link(&np).ok());
                    if omd.is_dir() && nmd.is_dir() {
                        if same {
                            pending.push((np.clone(), child.clone(), nmd));
                            let depth = pending.len();
                            self.compare_dirs(&op, &np, &child, pending)?;
                            pending.truncate(depth - 1);
                        } else {
                            self.flush_pending(pending)?;
                            self.entry(&np, &child, &nmd, read_xattrs(&np)?, None)?;
                            self.compare_dirs(&op, &np, &child, pending)?;
                        }
                    } else if !same {
                        self.flush_pending(pending)?;
                        self.plain_tree(&np, &child, &nmd)?;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes the unchanged parent directories of an entry about to be written.
    fn flush_pending(&mut self, pending: &mut Vec<(PathBuf, PathBuf, Metadata)>) -> Result<()> {
        for (path, rel, md) in pending.drain(..) {
            self.entry(&path, &rel, &md, read_xattrs(&path)?, None)?;
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> Result<()> {
        let name = rel.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
        let mut wh = WHITEOUT_PREFIX.as_bytes().to_vec();
        wh.extend_from_slice(name);
        self.stats.whiteouts += 1;
        self.marker(&rel.with_file_name(std::ffi::OsStr::from_bytes(&wh)))
    }

    /// An empty file with fixed metadata: a whiteout or the opaque marker.
    fn marker(&mut self, rel: &Path) -> Result<()> {
        let meta = EntryMeta {
            path: tar_path(rel),
            kind: EntryKind::File { size: 0 },
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        };
        self.stats.entries += 1;
        self.tar.append(&meta, None).at("write layer entry", rel)
    }

    /// Writes one entry; a regular file's content comes from `opened` when the caller already
    /// has it open.
    fn entry(
        &mut self,
        path: &Path,
        rel: &Path,
        md: &Metadata,
        mut xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        opened: Option<File>,
    ) -> Result<()> {
        xattrs.retain(|(k, _)| !is_overlay_xattr(k) && !is_host_only_xattr(k));
        let ft = md.file_type();
        let tpath = tar_path(rel);
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(path).at("read link", path)?;
            EntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_file() {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.links.get(&key) {
                    EntryKind::Hardlink {
                        target: first.clone(),
                    }
                } else {
                    self.links.insert(key, tpath.clone());
                    EntryKind::File { size: md.len() }
                }
            } else {
                EntryKind::File { size: md.len() }
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
            if ft.is_char_device() {
                EntryKind::Char { major, minor }
            } else {
                EntryKind::Block { major, minor }
            }
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            // Sockets have no place in an image (docker leaves them out too).
            return Ok(());
        };
        let mut meta = EntryMeta {
            path: tpath,
            kind,
            mode: md.mode() & 0o7777,
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
            mtime: md.mtime(),
            xattrs,
        };
        if let Some(rewrite) = self.rewrite {
            rewrite(&mut meta);
        }
        self.stats.entries += 1;
        if let EntryKind::File { size } = meta.kind {
            self.stats.content_bytes += size;
            let mut f = match opened {
                Some(f) => f,
                None => open_content(path, 0).at("open", path)?,
            };
            self.tar.append(&meta, Some(&mut f)).at("archive", path)
        } else {
            self.tar.append(&meta, None).at("archive", path)
        }
    }
}

/// What a [`TreeWriter`] filter says of a source path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Write it (and, for a directory, look at its children).
    Include,
    /// Leave it out, and everything below it.
    Skip,
    /// Leave the directory's own entry out but look at its children (an exclusion that a later
    /// exception may undo below it).
    Descend,
}

/// Writes chosen files and trees of plain directories under new names into a tar: the source
/// side of COPY and ADD. Hard links among everything written stay hard links; `rewrite` may
/// change each entry's owner and mode; `filter` sees each source path (as the caller names it)
/// before it is written.
pub struct TreeWriter<'a, W: Write> {
    walker: Walker<'a, W>,
}

impl<'a, W: Write> TreeWriter<'a, W> {
    /// A writer into `tar`.
    pub fn new(tar: &'a mut TarWriter<W>, rewrite: Option<&'a dyn Fn(&mut EntryMeta)>) -> Self {
        let mut walker = Walker::new(tar);
        walker.rewrite = rewrite;
        TreeWriter { walker }
    }

    /// Writes `src` (a file, a symlink — not followed — or a directory and all below it) as
    /// `dest`. `name` is the source's path as the filter knows it.
    pub fn add(
        &mut self,
        src: &Path,
        dest: &Path,
        name: &Path,
        filter: &dyn Fn(&Path, bool) -> Visit,
    ) -> Result<()> {
        let md = fs::symlink_metadata(src).at("stat", src)?;
        let visit = filter(name, md.is_dir());
        if visit == Visit::Skip {
            return Ok(());
        }
        if visit == Visit::Include {
            self.walker.entry(src, dest, &md, read_xattrs(src)?, None)?;
        }
        if md.is_dir() {
            self.add_contents(src, dest, name, filter)?;
        }
        Ok(())
    }

    /// Writes what the directory `src` holds (not the directory itself) into `dest`.
    pub fn add_contents(
        &mut self,
        src: &Path,
        dest: &Path,
        name: &Path,
        filter: &dyn Fn(&Path, bool) -> Visit,
    ) -> Result<()> {
        for e in sorted_children(src)? {
            self.add(
                &e.path(),
                &dest.join(e.file_name()),
                &name.join(e.file_name()),
                filter,
            )?;
        }
        Ok(())
    }

    /// Writes an entry that has no source: a directory to create, a heredoc file.
    pub fn add_entry(&mut self, meta: &EntryMeta, data: Option<&mut dyn io::Read>) -> Result<()> {
        self.walker.stats.entries += 1;
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(&meta.path));
        self.walker.tar.append(meta, data).at("write entry", &p)
    }

    /// What was written.
    pub fn stats(&self) -> DiffStats {
        self.walker.stats
    }
}

fn same_inode_metadata(a: &Metadata, b: &Metadata) -> bool {
    a.file_type() == b.file_type()
        && a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && a.rdev() == b.rdev()
        && (a.is_dir()
            || (a.len() == b.len() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()))
}

/// Opens a file to read its content, without following a final symlink and, where the
/// caller may (owner or CAP_FOWNER), without touching its atime; `flags` are added.
fn open_content(path: &Path, flags: i32) -> io::Result<File> {
    let open = |more| {
        File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | flags | more)
            .open(path)
    };
    open(libc::O_NOATIME).or_else(|_| open(0))
}

/// All xattrs of `path` (not following a final symlink), sorted by name.
pub fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_through(
        |names| rustix::fs::llistxattr(path, names),
        |name, value| rustix::fs::lgetxattr(path, name, value),
        path,
    )
}

/// All xattrs of the open file `f` (at `path`), sorted by name.
fn read_file_xattrs(f: &File, path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    xattrs_through(
        |names| rustix::fs::flistxattr(f, names),
        |name, value| rustix::fs::fgetxattr(f, name, value),
        path,
    )
}

/// Lists and reads xattrs with `list` and `get` (by path or by fd).
fn xattrs_through(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&std::ffi::CStr, &mut [u8]) -> rustix::io::Result<usize>,
    path: &Path,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match list(&mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list xattrs of", path, e.into())),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cname = std::ffi::CString::new(name).expect("xattr names have no NUL");
        let mut value = vec![0u8; 256];
        let len = loop {
            match get(cname.as_c_str(), &mut value[..]) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(Error::io("read xattr of", path, e.into())),
            }
        };
        if let Some(len) = len {
            value.truncate(len);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

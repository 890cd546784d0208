//! The layer stack of a union and the small syscall layer over it.
//!
//! Every layer dir is opened once (`O_PATH`) and everything else is done relative to those
//! fds. Lower layers never change while mounted, so they are addressed by relative paths.
//! The upper layer changes under us, so a path into it is resolved with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a symlink raced into place by the container can
//! never lead the daemon, which runs as root, outside the upper dir.
//!
//! Entries are classified as overlayfs reads them: a character device 0/0 or an empty file
//! with the `overlay.whiteout` xattr is a whiteout, a directory with `overlay.opaque` = `y`
//! hides what lies below it. Lower layers may also use the AUFS forms: `.wh.NAME` files and
//! a `.wh..wh..opq` marker.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use crate::layer::{OPAQUE_MARKER, OverlayXattrs, WHITEOUT_PREFIX};

/// Where an entry of the union lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Place {
    Upper,
    /// Index into the lower layers, 0 being the top one.
    Lower(u16),
}

/// One layer dir.
#[derive(Debug)]
pub(crate) struct Layer {
    pub path: PathBuf,
    pub fd: OwnedFd,
    /// Index of the layer's filesystem among the distinct `st_dev`s of the stack.
    pub fs: u16,
}

/// What a name in one layer dir is.
#[derive(Debug)]
pub(crate) enum Entry {
    Missing,
    Whiteout,
    Present(Stat),
}

/// The layers of a union: a writable upper dir (absent for a read-only union), its work dir,
/// and the read-only lower dirs, top first.
#[derive(Debug)]
pub(crate) struct Layers {
    pub upper: Option<Layer>,
    /// Scratch dir on the upper filesystem: things are made here and renamed into place.
    pub work: Option<OwnedFd>,
    pub lowers: Vec<Layer>,
    /// The namespace of the overlay xattrs this union writes.
    pub xattrs: OverlayXattrs,
}

/// The name of the work subdir this union uses inside the work dir it is given.
const WORK_SUBDIR: &str = "strata-unionfs";

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

impl Layers {
    /// Opens the layer dirs. `lowers` are top first, as in overlayfs's `lowerdir=`.
    pub fn open(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
    ) -> Result<Layers, (PathBuf, Errno)> {
        let mut devs: Vec<u64> = Vec::new();
        let mut fs_of = |st: &Stat| -> u16 {
            let dev = st.st_dev;
            match devs.iter().position(|d| *d == dev) {
                Some(i) => i as u16,
                None => {
                    devs.push(dev);
                    (devs.len() - 1) as u16
                }
            }
        };
        let mut open_layer = |path: &Path| -> Result<Layer, (PathBuf, Errno)> {
            let fd = open_dir(path).map_err(|e| (path.to_owned(), e))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| (path.to_owned(), e))?;
            Ok(Layer {
                path: path.to_owned(),
                fs: fs_of(&st),
                fd,
            })
        };
        let (upper, work) = match upper {
            Some((upper, work)) => {
                let upper = open_layer(upper)?;
                let work = prepare_work_dir(work, &upper)?;
                (Some(upper), Some(work))
            }
            None => (None, None),
        };
        let lowers = lowers
            .iter()
            .map(|l| open_layer(l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Layers {
            upper,
            work,
            lowers,
            xattrs: OverlayXattrs::for_this_process(),
        })
    }

    pub fn lower(&self, i: u16) -> &Layer {
        &self.lowers[usize::from(i)]
    }

    /// The upper layer, or `EROFS` for a read-only union.
    pub fn upper(&self) -> Result<&Layer, Errno> {
        self.upper.as_ref().ok_or(Errno::ROFS)
    }

    pub fn work(&self) -> Result<BorrowedFd<'_>, Errno> {
        self.work.as_ref().map(AsFd::as_fd).ok_or(Errno::ROFS)
    }

    pub fn fs_of(&self, place: Place) -> u16 {
        match place {
            Place::Upper => self.upper.as_ref().map_or(0, |u| u.fs),
            Place::Lower(i) => self.lower(i).fs,
        }
    }

    /// The lower layer dir of `i` at `rel`, as an absolute path (lower layers never change).
    pub fn lower_path(&self, i: u16, rel: &Path) -> PathBuf {
        self.lower(i).path.join(rel)
    }

    // ------------------------------------------------------------ upper dir access

    /// Opens the directory `rel` of the upper layer (`O_PATH`), refusing any symlink.
    pub fn upper_dir(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let upper = self.upper()?;
        if rel.as_os_str().is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&upper.fd, 0);
        }
        openat_beneath(&upper.fd, rel, OFlags::PATH | OFlags::DIRECTORY)
    }

    /// Opens `rel` in the upper layer with `flags`, refusing any symlink on the way.
    pub fn upper_open(&self, rel: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        let upper = self.upper()?;
        rustix::fs::openat2(
            &upper.fd,
            dot_if_empty(rel),
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            mode,
            beneath(),
        )
    }

    /// Opens `rel` in lower layer `i` with `flags` (no `O_NOATIME` for others' files).
    pub fn lower_open(&self, i: u16, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        open_lower_file(self.lower(i).fd.as_fd(), dot_if_empty(rel), flags)
    }

    /// Opens `rel` wherever it lives, for reading.
    pub fn open_at(&self, place: Place, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        match place {
            Place::Upper => self.upper_open(rel, flags, Mode::empty()),
            Place::Lower(i) => self.lower_open(i, rel, flags),
        }
    }

    // ------------------------------------------------------------ classification

    /// Stats `rel` in the layer at `place`, not following a final symlink.
    pub fn stat_at(&self, place: Place, rel: &Path) -> Result<Stat, Errno> {
        match place {
            Place::Upper => {
                let (parent, name) = split(rel);
                let dir = self.upper_dir(parent)?;
                rustix::fs::statat(
                    &dir,
                    dot_if_empty(Path::new(name)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
            }
            Place::Lower(i) => rustix::fs::statat(
                &self.lower(i).fd,
                dot_if_empty(rel),
                AtFlags::SYMLINK_NOFOLLOW,
            ),
        }
    }

    /// What `name` is in the directory `dir` of the upper layer (an open `O_PATH` fd).
    pub fn classify_upper(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<Entry, Errno> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                if self.is_whiteout_stat(&st, || XattrTarget::At(dir, name)) {
                    Ok(Entry::Whiteout)
                } else {
                    Ok(Entry::Present(st))
                }
            }
            Err(Errno::NOENT) => Ok(Entry::Missing),
            Err(e) => Err(e),
        }
    }

    /// What `rel` is in lower layer `i`. With `aufs`, a `.wh.NAME` beside it counts as a
    /// whiteout (worth checking only when layers below could hold the name).
    pub fn classify_lower(&self, i: u16, rel: &Path, aufs: bool) -> Result<Entry, Errno> {
        let (parent, name) = split(rel);
        if is_aufs_name(name) {
            return Ok(Entry::Missing);
        }
        let layer = self.lower(i);
        match rustix::fs::statat(&layer.fd, rel, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let full = self.lower_path(i, rel);
                if self.is_whiteout_stat(&st, || XattrTarget::Path(&full)) {
                    Ok(Entry::Whiteout)
                } else {
                    Ok(Entry::Present(st))
                }
            }
            Err(Errno::NOENT | Errno::NOTDIR) => {
                if aufs && self.has_aufs_whiteout(i, parent, name) {
                    Ok(Entry::Whiteout)
                } else {
                    Ok(Entry::Missing)
                }
            }
            Err(e) => Err(e),
        }
    }

    fn has_aufs_whiteout(&self, i: u16, parent: &Path, name: &OsStr) -> bool {
        let mut wh = OsString::from(WHITEOUT_PREFIX);
        wh.push(name);
        rustix::fs::statat(
            &self.lower(i).fd,
            parent.join(wh),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    fn is_whiteout_stat<'a>(&self, st: &Stat, target: impl FnOnce() -> XattrTarget<'a>) -> bool {
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::CharacterDevice {
            return st.st_rdev == 0;
        }
        if ft != FileType::RegularFile || st.st_size != 0 {
            return false;
        }
        let target = target();
        [
            b"trusted.overlay.whiteout".as_slice(),
            b"user.overlay.whiteout",
        ]
        .iter()
        .any(|n| target.size(n).is_ok())
    }

    /// Whether the directory `rel` of lower layer `i` hides what lies below it.
    pub fn lower_is_opaque(&self, i: u16, rel: &Path) -> bool {
        let full = self.lower_path(i, rel);
        is_opaque_value(XattrTarget::Path(&full))
            || rustix::fs::statat(
                &self.lower(i).fd,
                rel.join(OPAQUE_MARKER),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .is_ok()
    }

    /// Whether `name` in the upper directory `dir` is an opaque directory.
    pub fn upper_is_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> bool {
        is_opaque_value(XattrTarget::At(dir, name))
    }
}

/// Whether a lower-layer name is an AUFS whiteout or opaque marker rather than an entry.
pub(crate) fn is_aufs_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())
}

fn is_opaque_value(target: XattrTarget<'_>) -> bool {
    [b"trusted.overlay.opaque".as_slice(), b"user.overlay.opaque"]
        .iter()
        .any(|n| target.get(n).is_ok_and(|v| v == b"y"))
}

/// Sets up `WORK/strata-unionfs`, empty, on the upper filesystem.
fn prepare_work_dir(work: &Path, upper: &Layer) -> Result<OwnedFd, (PathBuf, Errno)> {
    let err = |e| (work.to_owned(), e);
    let wfd = open_dir(work).map_err(err)?;
    if rustix::fs::fstat(&wfd).map_err(err)?.st_dev
        != rustix::fs::fstat(&upper.fd).map_err(err)?.st_dev
    {
        return Err((work.to_owned(), Errno::XDEV));
    }
    let sub = work.join(WORK_SUBDIR);
    match std::fs::remove_dir_all(&sub) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err((sub, Errno::from_io_error(&e).unwrap_or(Errno::IO))),
    }
    rustix::fs::mkdirat(&wfd, WORK_SUBDIR, Mode::from_raw_mode(0o700))
        .map_err(|e| (sub.clone(), e))?;
    openat_beneath(
        &wfd,
        Path::new(WORK_SUBDIR),
        OFlags::PATH | OFlags::DIRECTORY,
    )
    .map_err(|e| (sub, e))
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

fn openat_beneath(dir: &OwnedFd, rel: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        dir,
        rel,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        beneath(),
    )
}

/// Opens `rel` below `dir`, a directory of a lower layer, with `flags`, not following a final
/// symlink, and without updating its atime where the daemon may (`O_NOATIME` is refused for
/// others' files without CAP_FOWNER).
pub(crate) fn open_lower_file(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    match rustix::fs::openat(dir, rel, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(dir, rel, flags, Mode::empty()),
        r => r,
    }
}

/// `rel` itself, or `.` for the root.
pub(crate) fn dot_if_empty(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

/// A relative path split into its parent and final name (`""` and `""` for the root).
pub(crate) fn split(rel: &Path) -> (&Path, &OsStr) {
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => (Path::new(""), OsStr::new("")),
    }
}

/// Xattrs as `(name, value)` pairs.
pub(crate) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// What an xattr call addresses: a path that is never followed at its end, or a name in a
/// directory fd (through `/proc/self/fd`, since the `*xattrat` calls are too new to rely on).
#[derive(Debug, Clone, Copy)]
pub(crate) enum XattrTarget<'a> {
    Path(&'a Path),
    At(BorrowedFd<'a>, &'a OsStr),
}

impl XattrTarget<'_> {
    fn c_path(&self) -> Result<CString, Errno> {
        let bytes = match self {
            XattrTarget::Path(p) => p.as_os_str().as_bytes().to_vec(),
            XattrTarget::At(fd, name) if name.is_empty() => {
                format!("/proc/self/fd/{}/.", fd.as_raw_fd()).into_bytes()
            }
            XattrTarget::At(fd, name) => {
                let mut v = format!("/proc/self/fd/{}/", fd.as_raw_fd()).into_bytes();
                v.extend_from_slice(name.as_bytes());
                v
            }
        };
        CString::new(bytes).map_err(|_| Errno::INVAL)
    }

    /// The value of xattr `name`.
    pub fn get(&self, name: &[u8]) -> Result<Vec<u8>, Errno> {
        let path = self.c_path()?;
        let name = CString::new(name).map_err(|_| Errno::INVAL)?;
        let mut buf = Vec::with_capacity(256);
        loop {
            match rustix::fs::lgetxattr(&path, &name, rustix::buffer::spare_capacity(&mut buf)) {
                Ok(_) => return Ok(buf),
                Err(Errno::RANGE) => {
                    let need = rustix::fs::lgetxattr_query(&path, &name)?;
                    buf = Vec::with_capacity(need.max(buf.capacity() * 2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The size of xattr `name`'s value.
    pub fn size(&self, name: &[u8]) -> Result<usize, Errno> {
        let path = self.c_path()?;
        let name = CString::new(name).map_err(|_| Errno::INVAL)?;
        rustix::fs::lgetxattr_query(&path, &name)
    }

    /// The names of all xattrs, each NUL-terminated.
    pub fn list(&self) -> Result<Vec<u8>, Errno> {
        let path = self.c_path()?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            match rustix::fs::llistxattr(&path, rustix::buffer::spare_capacity(&mut buf)) {
                Ok(_) => return Ok(buf),
                Err(Errno::RANGE) => {
                    let need = rustix::fs::llistxattr_query(&path)?;
                    buf = Vec::with_capacity(need.max(buf.capacity() * 2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn set(
        &self,
        name: &[u8],
        value: &[u8],
        flags: rustix::fs::XattrFlags,
    ) -> Result<(), Errno> {
        let path = self.c_path()?;
        let name = CString::new(name).map_err(|_| Errno::INVAL)?;
        rustix::fs::lsetxattr(&path, &name, value, flags)
    }

    pub fn remove(&self, name: &[u8]) -> Result<(), Errno> {
        let path = self.c_path()?;
        let name = CString::new(name).map_err(|_| Errno::INVAL)?;
        rustix::fs::lremovexattr(&path, &name)
    }

    /// Every xattr as `(name, value)`, in list order.
    pub fn all(&self) -> Result<Xattrs, Errno> {
        let mut out = Vec::new();
        for name in self.list()?.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            match self.get(name) {
                Ok(v) => out.push((name.to_vec(), v)),
                Err(Errno::NODATA) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

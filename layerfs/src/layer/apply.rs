//! From a layer tar to a directory, safely.
//!
//! [`apply`] extracts a layer tar either into an overlay-format layer dir
//! ([`Target::LayerDir`]: `.wh.NAME` becomes a 0/0 character device, `.wh..wh..opq` the opaque
//! xattr) or onto a root filesystem ([`Target::Rootfs`]: whiteouts delete, an opaque marker
//! empties the directory of what earlier layers put there).
//!
//! The tar is untrusted. Every parent directory is resolved inside the root with libpathrs
//! (`openat2(RESOLVE_IN_ROOT)` or its emulation), so a symlink — absolute, relative, or planted
//! by an earlier entry — can never lead out of it; the final component is never followed
//! (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`); `..` components are refused; hard links resolve
//! inside the root; device nodes are created only with CAP_MKNOD; modes, setuid included, are
//! exactly what the tar says; overlayfs's own xattrs in the tar are dropped.
//!
//! [`verify`] reads a layer tar and checks that a layer dir holds exactly what extracting it
//! would give (used by `fsck`).

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::Digest;
use pathrs::Root;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};

use super::{OPAQUE_MARKER, OverlayXattrs, WHITEOUT_PREFIX, is_host_only_xattr, is_overlay_xattr};
use crate::digest::Hasher;
use crate::error::{Error, IoContext, Result};

/// What the tar is extracted into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An overlay-format layer dir (whiteouts kept as whiteouts).
    LayerDir,
    /// A root filesystem (whiteouts applied).
    Rootfs,
}

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    pub target: Target,
    pub xattrs: OverlayXattrs,
    /// Create device nodes (needs CAP_MKNOD); without it they are skipped.
    pub mknod: bool,
    /// Set owners from the tar (needs CAP_CHOWN); without it files belong to the caller.
    pub chown: bool,
    /// Read `.wh.` entries as whiteouts (layers); off, they are plain files (COPY, ADD).
    pub whiteouts: bool,
}

impl ApplyOptions {
    /// Options for this process: devices and owners when running as root.
    pub fn for_this_process(target: Target) -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            target,
            xattrs: OverlayXattrs::for_this_process(),
            mknod: root,
            chown: root,
            whiteouts: true,
        }
    }
}

/// Counts of what an extraction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries: u64,
    pub content_bytes: u64,
    /// Device nodes left out for lack of CAP_MKNOD.
    pub skipped_devices: u64,
}

/// One entry's fields as read from the tar (PAX records applied).
struct TarEntry {
    /// The entry path as written in the tar, for messages.
    raw: String,
    /// Cleaned relative path; `None` for the root directory itself.
    rel: Option<PathBuf>,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    link: Option<PathBuf>,
    dev: (u32, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn hostile(raw: &str, reason: &str) -> Error {
    Error::HostileEntry {
        entry: raw.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Cleans a tar path: leading `/` and `.` components are dropped, `..` is refused.
fn clean_path(raw: &str, path: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(hostile(raw, "a '..' path component would leave the root"));
            }
            Component::Prefix(_) => return Err(hostile(raw, "not a Unix path")),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn read_entry<R: Read>(entry: &mut tar::Entry<'_, R>, what: &str) -> Result<TarEntry> {
    let tar_err = |source: io::Error| Error::Tar {
        what: what.to_owned(),
        source,
    };
    let path = entry.path().map_err(tar_err)?.into_owned();
    let raw = path.to_string_lossy().into_owned();
    let h = entry.header();
    let kind = h.entry_type();
    let mut t = TarEntry {
        rel: clean_path(&raw, &path)?,
        kind,
        mode: h.mode().map_err(tar_err)? & 0o7777,
        uid: h.uid().map_err(tar_err)?,
        gid: h.gid().map_err(tar_err)?,
        mtime: h.mtime().map_err(tar_err)? as i64,
        link: entry.link_name().map_err(tar_err)?.map(|l| l.into_owned()),
        dev: (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        ),
        xattrs: Vec::new(),
        raw,
    };
    if let Some(exts) = entry.pax_extensions().map_err(tar_err)? {
        for ext in exts {
            let ext = ext.map_err(tar_err)?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let num = || std::str::from_utf8(value).ok().map(str::trim);
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                t.xattrs.push((name.to_vec(), value.to_vec()));
            } else if key == b"mtime" {
                // Fractional seconds are dropped: layers keep whole seconds.
                if let Some(v) = num().and_then(|s| s.split('.').next()?.parse::<i64>().ok()) {
                    t.mtime = v;
                }
            } else if key == b"uid" {
                if let Some(v) = num().and_then(|s| s.parse().ok()) {
                    t.uid = v;
                }
            } else if key == b"gid"
                && let Some(v) = num().and_then(|s| s.parse().ok())
            {
                t.gid = v;
            }
        }
    }
    t.xattrs
        .retain(|(k, _)| !is_overlay_xattr(k) && !is_host_only_xattr(k));
    t.xattrs.sort();
    Ok(t)
}

/// What a whiteout-ish entry name means.
enum Special<'a> {
    Opaque,
    Whiteout(&'a OsStr),
    None,
}

fn special<'a>(raw: &str, name: &'a OsStr) -> Result<Special<'a>> {
    let b = name.as_bytes();
    if b == OPAQUE_MARKER.as_bytes() {
        return Ok(Special::Opaque);
    }
    match b.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        Some(target) if target.is_empty() || target == b"." || target == b".." => Err(hostile(
            raw,
            "a whiteout must name an entry of its directory",
        )),
        Some(target) => Ok(Special::Whiteout(OsStr::from_bytes(target))),
        None => Ok(Special::None),
    }
}

fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().expect("a cleaned path ends in a name"),
    )
}

/// Extracts the tar read from `input` into `root` (an existing directory).
pub fn apply(input: impl Read, root: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    let mut a = Applier::new(root, *opts)?;
    let mut archive = tar::Archive::new(input);
    let what = format!("layer extracted into {}", root.display());
    let entries = archive.entries().map_err(|source| Error::Tar {
        what: what.clone(),
        source,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|source| Error::Tar {
            what: what.clone(),
            source,
        })?;
        if matches!(
            entry.header().entry_type(),
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let t = read_entry(&mut entry, &what)?;
        a.entry(&t, &mut entry)?;
    }
    a.finish()?;
    Ok(a.stats)
}

struct Applier {
    root: Root,
    root_path: PathBuf,
    opts: ApplyOptions,
    /// Parent directories resolved so far (O_PATH fds), by relative path.
    dirs: HashMap<PathBuf, OwnedFd>,
    /// Directories whose mtime is set last, once nothing more is created in them.
    dir_times: Vec<(PathBuf, i64)>,
    /// Paths this tar wrote (an opaque marker in a rootfs keeps them).
    written: HashSet<PathBuf>,
    stats: ApplyStats,
    buf: Vec<u8>,
}

fn pathrs_err(op: &'static str, path: &Path, e: &pathrs::error::Error) -> Error {
    let source = match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => io::Error::from_raw_os_error(errno),
        _ => io::Error::other(e.to_string()),
    };
    Error::io(op, path, source)
}

impl Applier {
    fn new(root: &Path, opts: ApplyOptions) -> Result<Self> {
        Ok(Applier {
            root: Root::open(root).map_err(|e| pathrs_err("open root", root, &e))?,
            root_path: root.to_owned(),
            opts,
            dirs: HashMap::new(),
            dir_times: Vec::new(),
            written: HashSet::new(),
            stats: ApplyStats::default(),
            buf: vec![0; 256 << 10],
        })
    }

    /// The directory `rel` inside the root, created (0755) if missing, symlinks on the way
    /// resolved inside the root.
    fn dir(&mut self, rel: &Path) -> Result<&OwnedFd> {
        if !self.dirs.contains_key(rel) {
            let perm = std::fs::Permissions::from_mode(0o755);
            let handle = self
                .root
                .mkdir_all(rel, &perm)
                .map_err(|e| pathrs_err("create directory", &self.root_path.join(rel), &e))?;
            self.dirs.insert(rel.to_owned(), OwnedFd::from(handle));
        }
        Ok(&self.dirs[rel])
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root_path.join(rel)
    }

    /// Removes whatever is at `rel` (not following a final symlink).
    fn remove(&mut self, rel: &Path) -> Result<()> {
        self.dirs.clear();
        match self.root.remove_all(rel) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => Ok(()),
            Err(e) => Err(pathrs_err("remove", &self.full(rel), &e)),
        }
    }

    fn entry<R: Read>(&mut self, t: &TarEntry, data: &mut tar::Entry<'_, R>) -> Result<()> {
        let Some(rel) = &t.rel else {
            // The root directory itself: the target's own root keeps its metadata.
            return Ok(());
        };
        self.stats.entries += 1;
        let (parent, name) = split(rel);
        if self.opts.whiteouts {
            match special(&t.raw, name)? {
                Special::Opaque => return self.opaque(parent),
                Special::Whiteout(target) => return self.whiteout(&parent.join(target)),
                Special::None => {}
            }
        }
        let is_dir = t.kind == tar::EntryType::Directory;
        let pfd = self
            .dir(parent)?
            .try_clone()
            .at("dup", &self.full(parent))?;
        match rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if is_dir && FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Ok(_) => self.remove(rel)?,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(Error::io("stat", self.full(rel), e.into())),
        }
        if self.opts.target == Target::Rootfs {
            self.written.insert(rel.clone());
        }
        let full = self.full(rel);
        match t.kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = rustix::fs::openat(
                    &pfd,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .at("create", &full)?;
                let mut file = File::from(fd);
                self.stats.content_bytes +=
                    copy_with(&mut self.buf, data, &mut file).map_err(|source| Error::Tar {
                        what: format!("layer entry {:?}", t.raw),
                        source,
                    })?;
                self.set_fd_meta(file.as_fd(), t, &full)?;
                rustix::fs::futimens(&file, &times(t.mtime)).at("set times of", &full)?;
            }
            tar::EntryType::Directory => {
                match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(Error::io("create directory", &full, e.into())),
                }
                let fd = rustix::fs::openat(
                    &pfd,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .at("open directory", &full)?;
                self.set_fd_meta(fd.as_fd(), t, &full)?;
                self.dir_times.push((rel.clone(), t.mtime));
            }
            tar::EntryType::Symlink => {
                let target = t
                    .link
                    .as_ref()
                    .ok_or_else(|| hostile(&t.raw, "a symlink without a target"))?;
                rustix::fs::symlinkat(target.as_path(), &pfd, name).at("create symlink", &full)?;
                self.set_at_meta(&pfd, name, t, &full, false)?;
            }
            tar::EntryType::Link => {
                let target = t
                    .link
                    .as_ref()
                    .ok_or_else(|| hostile(&t.raw, "a hard link without a target"))?;
                let target = clean_path(&t.raw, target)?
                    .ok_or_else(|| hostile(&t.raw, "a hard link to the root directory"))?;
                let (tparent, tname) = split(&target);
                let tfd = self
                    .root
                    .resolve(tparent)
                    .map_err(|e| pathrs_err("resolve hard link target", &self.full(&target), &e))?;
                rustix::fs::linkat(&tfd, tname, &pfd, name, AtFlags::empty()).map_err(|e| {
                    if e == rustix::io::Errno::NOENT {
                        hostile(
                            &t.raw,
                            &format!("hard link target {target:?} is not in this layer"),
                        )
                    } else {
                        Error::io("create hard link", &full, e.into())
                    }
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match t.kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if ft != FileType::Fifo && !self.opts.mknod {
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                let dev = rustix::fs::makedev(t.dev.0, t.dev.1);
                rustix::fs::mknodat(&pfd, name, ft, Mode::from_raw_mode(0o600), dev)
                    .at("create device", &full)?;
                self.set_at_meta(&pfd, name, t, &full, true)?;
            }
            other => {
                return Err(hostile(
                    &t.raw,
                    &format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ));
            }
        }
        Ok(())
    }

    /// Owner, then mode (so setuid bits survive the chown), then xattrs, on an open inode.
    fn set_fd_meta(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        t: &TarEntry,
        full: &Path,
    ) -> Result<()> {
        if self.opts.chown {
            rustix::fs::fchown(fd, Some(uid(t.uid)), Some(gid(t.gid)))
                .at("change owner of", full)?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(t.mode)).at("change mode of", full)?;
        for (k, v) in &t.xattrs {
            let name = xattr_name(k, &t.raw)?;
            if let Err(e) = rustix::fs::fsetxattr(fd, name.as_c_str(), v, XattrFlags::empty()) {
                self.xattr_error(e, k, full)?;
            }
        }
        Ok(())
    }

    /// The same for an inode that cannot be opened (a symlink, a device).
    fn set_at_meta(
        &self,
        pfd: &OwnedFd,
        name: &OsStr,
        t: &TarEntry,
        full: &Path,
        chmod: bool,
    ) -> Result<()> {
        if self.opts.chown {
            rustix::fs::chownat(
                pfd,
                name,
                Some(uid(t.uid)),
                Some(gid(t.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .at("change owner of", full)?;
        }
        if chmod {
            rustix::fs::chmodat(pfd, name, Mode::from_raw_mode(t.mode), AtFlags::empty())
                .at("change mode of", full)?;
        }
        if !t.xattrs.is_empty() {
            // lsetxattr through the parent's fd: the final component is not followed.
            let mut p = PathBuf::from(format!("/proc/self/fd/{}", pfd.as_raw_fd()));
            p.push(name);
            for (k, v) in &t.xattrs {
                let cname = xattr_name(k, &t.raw)?;
                if let Err(e) = rustix::fs::lsetxattr(&p, cname.as_c_str(), v, XattrFlags::empty())
                {
                    self.xattr_error(e, k, full)?;
                }
            }
        }
        rustix::fs::utimensat(pfd, name, &times(t.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .at("set times of", full)
    }

    /// Xattrs a filesystem or an unprivileged caller cannot hold are skipped; others fail.
    fn xattr_error(&self, e: rustix::io::Errno, name: &[u8], full: &Path) -> Result<()> {
        let skippable =
            e == rustix::io::Errno::NOTSUP || (e == rustix::io::Errno::PERM && !self.opts.chown);
        if skippable {
            tracing::debug!(
                "{}: xattr {} not set: {e}",
                full.display(),
                String::from_utf8_lossy(name)
            );
            Ok(())
        } else {
            Err(Error::io("set xattr on", full, e.into()))
        }
    }

    fn opaque(&mut self, dir: &Path) -> Result<()> {
        match self.opts.target {
            Target::LayerDir => {
                let fd = self.dir(dir)?.try_clone().at("dup", &self.full(dir))?;
                let d = rustix::fs::openat(
                    &fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .at("open directory", &self.full(dir))?;
                let name = CString::new(self.opts.xattrs.opaque()).expect("static name");
                rustix::fs::fsetxattr(&d, name.as_c_str(), b"y", XattrFlags::empty())
                    .at("mark opaque", &self.full(dir))
            }
            Target::Rootfs => {
                let full = self.full(dir);
                let fd = self.dir(dir)?.try_clone().at("dup", &full)?;
                let d = rustix::fs::openat(
                    &fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .at("open directory", &full)?;
                let mut names = Vec::new();
                for e in rustix::fs::Dir::read_from(&d).at("read directory", &full)? {
                    let e = e.at("read directory", &full)?;
                    let n = OsStr::from_bytes(e.file_name().to_bytes()).to_owned();
                    if n != "." && n != ".." {
                        names.push(n);
                    }
                }
                for n in names {
                    let rel = dir.join(&n);
                    if !self.written.contains(&rel) {
                        self.remove(&rel)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn whiteout(&mut self, rel: &Path) -> Result<()> {
        match self.opts.target {
            Target::Rootfs => self.remove(rel),
            Target::LayerDir => {
                let (parent, name) = split(rel);
                let full = self.full(rel);
                let pfd = self.dir(parent)?.try_clone().at("dup", &full)?;
                if rustix::fs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                    self.remove(rel)?;
                }
                rustix::fs::mknodat(
                    &pfd,
                    name,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .at("create whiteout", &full)
            }
        }
    }

    /// Sets directory mtimes, deepest first, now that nothing more is created in them.
    fn finish(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dir_times);
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, mtime) in dirs {
            let (parent, name) = split(&rel);
            let full = self.full(&rel);
            let pfd = self.dir(parent)?.try_clone().at("dup", &full)?;
            match rustix::fs::utimensat(&pfd, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(Error::io("set times of", full, e.into())),
            }
        }
        Ok(())
    }
}

fn uid(v: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(v as u32)
}

fn gid(v: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(v as u32)
}

fn xattr_name(k: &[u8], raw: &str) -> Result<CString> {
    CString::new(k).map_err(|_| hostile(raw, "an xattr name with a NUL byte"))
}

fn times(mtime: i64) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn copy_with(buf: &mut [u8], from: &mut impl Read, to: &mut impl io::Write) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

// ------------------------------------------------------------------------- verify

/// One difference between a layer dir and its tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The path inside the layer dir.
    pub path: PathBuf,
    pub what: String,
}

#[derive(Debug)]
struct Expected {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    content: Option<(u64, Digest)>,
    link: Option<PathBuf>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    opaque: bool,
}

/// Checks that the overlay-format layer dir `root` holds exactly what extracting the tar read
/// from `input` gives: every entry with its type, mode, owner, mtime, content, link target and
/// xattrs, whiteouts and opaque markers, and nothing else.
pub fn verify(input: impl Read, root: &Path, xattrs_ns: OverlayXattrs) -> Result<Vec<Mismatch>> {
    let what = format!("layer of {}", root.display());
    let mut expected: HashMap<PathBuf, Expected> = HashMap::new();
    let mut archive = tar::Archive::new(input);
    let tar_err = |source| Error::Tar {
        what: what.clone(),
        source,
    };
    let mut buf = vec![0u8; 1 << 20];
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        if matches!(
            entry.header().entry_type(),
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let t = read_entry(&mut entry, &what)?;
        let Some(rel) = t.rel.clone() else { continue };
        let (parent, name) = split(&rel);
        match special(&t.raw, name)? {
            Special::Opaque => {
                if let Some(e) = expected.get_mut(parent) {
                    e.opaque = true;
                }
                continue;
            }
            Special::Whiteout(target) => {
                expected.insert(
                    parent.join(target),
                    Expected {
                        kind: tar::EntryType::Char,
                        mode: 0,
                        uid: 0,
                        gid: 0,
                        mtime: 0,
                        content: None,
                        link: None,
                        xattrs: Vec::new(),
                        opaque: false,
                    },
                );
                continue;
            }
            Special::None => {}
        }
        let content = if matches!(t.kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            let mut h = Hasher::default();
            loop {
                let n = entry.read(&mut buf).map_err(tar_err)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Some((h.len(), h.digest()))
        } else {
            None
        };
        let link = match t.kind {
            tar::EntryType::Link => t
                .link
                .as_ref()
                .and_then(|l| clean_path(&t.raw, l).ok().flatten()),
            _ => t.link.clone(),
        };
        expected.insert(
            rel,
            Expected {
                kind: t.kind,
                mode: t.mode,
                uid: t.uid,
                gid: t.gid,
                mtime: t.mtime,
                content,
                link,
                xattrs: t.xattrs,
                opaque: false,
            },
        );
    }

    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut miss = |path: &Path, what: String| {
        out.push(Mismatch {
            path: path.to_owned(),
            what,
        });
    };
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.map_err(|e| {
            let path = e
                .path()
                .map(Path::to_owned)
                .unwrap_or_else(|| root.to_owned());
            Error::io("walk", path, e.into())
        })?;
        let rel = e
            .path()
            .strip_prefix(root)
            .expect("walkdir stays below its root")
            .to_owned();
        let md = e.path().symlink_metadata().at("stat", e.path())?;
        let Some(exp) = expected.get(&rel) else {
            // Parents the tar did not list were created by the extraction.
            if !(md.is_dir() && expected.keys().any(|k| k.starts_with(&rel))) {
                miss(&rel, "not in the layer tar".into());
            }
            continue;
        };
        seen.insert(rel.clone());
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind_ok = match exp.kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link => {
                ft.is_file()
            }
            tar::EntryType::Directory => ft.is_dir(),
            tar::EntryType::Symlink => ft.is_symlink(),
            tar::EntryType::Char => ft.is_char_device(),
            tar::EntryType::Block => ft.is_block_device(),
            tar::EntryType::Fifo => ft.is_fifo(),
            _ => false,
        };
        if !kind_ok {
            miss(&rel, format!("type differs (tar: {:?})", exp.kind));
            continue;
        }
        if exp.kind == tar::EntryType::Char && exp.mode == 0 && exp.uid == 0 && md.rdev() == 0 {
            continue; // a whiteout
        }
        if exp.kind == tar::EntryType::Link {
            let target = exp
                .link
                .as_ref()
                .and_then(|l| root.join(l).symlink_metadata().ok());
            if target.map(|t| t.ino()) != Some(md.ino()) {
                miss(&rel, "is no longer a hard link to its target".into());
            }
            continue;
        }
        if md.mode() & 0o7777 != exp.mode {
            miss(
                &rel,
                format!("mode {:o}, tar says {:o}", md.mode() & 0o7777, exp.mode),
            );
        }
        if u64::from(md.uid()) != exp.uid || u64::from(md.gid()) != exp.gid {
            miss(
                &rel,
                format!(
                    "owner {}:{}, tar says {}:{}",
                    md.uid(),
                    md.gid(),
                    exp.uid,
                    exp.gid
                ),
            );
        }
        if md.mtime() != exp.mtime {
            miss(
                &rel,
                format!("mtime {}, tar says {}", md.mtime(), exp.mtime),
            );
        }
        if let Some(l) = &exp.link
            && std::fs::read_link(e.path()).ok().as_deref() != Some(l.as_path())
        {
            miss(&rel, "symlink target differs".into());
        }
        if let Some((size, digest)) = &exp.content {
            let actual =
                File::open(e.path()).and_then(|f| crate::digest::HashingReader::new(f).finish());
            match actual {
                Ok((d, n)) if &d == digest && n == *size => {}
                Ok(_) => miss(&rel, "content differs".into()),
                Err(err) => miss(&rel, format!("cannot be read: {err}")),
            }
        }
        let mut have = super::diff::read_xattrs(e.path())?;
        let opaque = have
            .iter()
            .any(|(k, v)| k.as_slice() == xattrs_ns.opaque().as_bytes() && v == b"y");
        have.retain(|(k, _)| !is_overlay_xattr(k) && !is_host_only_xattr(k));
        if have != exp.xattrs {
            miss(&rel, "xattrs differ".into());
        }
        if opaque != exp.opaque {
            miss(
                &rel,
                format!("opaque marker {}", if opaque { "added" } else { "lost" }),
            );
        }
    }
    for k in expected.keys() {
        if !seen.contains(k) {
            out.push(Mismatch {
                path: k.clone(),
                what: "missing".into(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

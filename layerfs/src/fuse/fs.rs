//! The union filesystem itself: FUSE requests in, overlayfs semantics out.
//!
//! Nothing global is locked on the hot path: nodes and open files live in sharded tables,
//! each node has its own locks, and lookups, reads and attribute requests of different
//! inodes proceed in parallel on every session thread (the one shared lock, the queue of
//! parked passthrough backings, is taken only when a large lower file's last open closes).
//! The kernel serializes namespace changes within a directory, so creating, removing and
//! renaming only need per-node locks.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    Notifier, OpenFlags, RenameFlags as FuseRenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat, Timespec, Timestamps};
use rustix::io::Errno;

use super::copyup::AliasIndex;
use super::inode::{Backing, InodeNumbers, Node, NodeState, NodeTable, ParkedBackings, ROOT_ID};
use super::layers::{Entry, Layers, Place, XattrTarget, split};
use super::readahead::{DirReadahead, FileReadahead, head_cached, read_head};
use super::resolve::{DirView, Found, Listed, is_dir};
use crate::layer::OverlayXattrs;

/// How long the kernel may cache entries and attributes. Everything that changes the union
/// goes through this filesystem, so the kernel's caches stay right; nothing expires them.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// The largest write the kernel sends (and so the read buffer the session touches).
const MAX_WRITE: u32 = 1 << 20;
/// Lower files up to this size, opened again, are read through the kernel's page cache,
/// served by the daemon, rather than passed through. A passthrough read makes the kernel
/// forget the file's atime, so the next `stat` of it (a reopening program's `fstat`) asks the
/// daemon, and every open registers a backing file; a cached lower file, once read, costs
/// neither (it never changes). The first open passes through: a file read once then costs no
/// READ request. Larger files always pass through: their data is then neither copied through
/// the daemon nor cached twice.
const CACHED_MAX: u64 = 4 << 20;
/// A lower file up to this size, when it starts to be read through the page cache, is put there
/// whole as it is opened (FUSE_NOTIFY_STORE): its reads then ask the daemon nothing.
const STORE_MAX: u64 = 1 << 20;
/// The xattr the kernel reads before every write, to drop file capabilities
/// ([`CapabilityMemory`](super::inode::CapabilityMemory)).
const CAPABILITY_XATTR: &[u8] = b"security.capability";
/// How long a writer waits for the files reading a node's lower file to be released before
/// the open fails with ETXTBSY: the kernel sends RELEASE after `close` returns, so a program
/// that reads a file, closes it and opens it for writing must not see its own reader.
const WRITER_PATIENCE: Duration = Duration::from_millis(100);

/// How the union filesystem behaves.
#[derive(Debug, Clone, Copy)]
pub struct FsOptions {
    /// Hand open files to the kernel (Linux 6.9+, CAP_SYS_ADMIN) so reads and writes bypass
    /// the daemon. Falls back to the daemon's own I/O when the kernel refuses.
    pub passthrough: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions { passthrough: true }
    }
}

/// An open file.
#[derive(Debug)]
struct Handle {
    /// Shared with the node's passthrough backing when that is a parked lower file.
    fd: Arc<OwnedFd>,
    node: Arc<Node>,
    /// Whether it shares the node's passthrough backing file (else the daemon serves its I/O).
    passthrough: bool,
    /// Whether `fd` is a file of a lower layer.
    lower: bool,
}

/// A directory's merged entries as read at offset 0, so that offsets stay valid for a pass.
#[derive(Debug)]
pub(crate) struct Listing {
    path: PathBuf,
    upper: bool,
    lowers: Vec<u16>,
    parent: u64,
    entries: Vec<Listed>,
}

#[derive(Debug)]
struct Handles {
    shards: Vec<RwLock<HashMap<u64, Arc<Handle>>>>,
    next: AtomicU64,
}

impl Handles {
    fn new() -> Handles {
        Handles {
            shards: (0..32).map(|_| RwLock::new(HashMap::new())).collect(),
            next: AtomicU64::new(1),
        }
    }

    fn shard(&self, fh: u64) -> &RwLock<HashMap<u64, Arc<Handle>>> {
        &self.shards[(fh % self.shards.len() as u64) as usize]
    }

    fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.shard(fh)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(fh, Arc::new(h));
        fh
    }

    fn get(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.shard(fh.0)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::BADF)
    }

    fn remove(&self, fh: FileHandle) -> Option<Arc<Handle>> {
        self.shard(fh.0)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&fh.0)
    }
}

/// The union filesystem served over FUSE.
#[derive(Debug)]
pub struct UnionFs {
    pub(super) layers: Arc<Layers>,
    pub(super) nodes: NodeTable,
    pub(super) numbers: InodeNumbers,
    /// The lower layers merged into the root, top first.
    pub(super) root_lowers: Vec<u16>,
    pub(super) aliases: Mutex<HashMap<u16, Arc<AliasIndex>>>,
    handles: Handles,
    parked: ParkedBackings,
    temps: AtomicU64,
    /// Passthrough asked for, granted by the kernel, and not refused so far.
    passthrough: AtomicBool,
    want_passthrough: bool,
    readahead: DirReadahead,
    files_ahead: FileReadahead,
    /// Set once the session runs: how the daemon writes into the kernel's caches.
    notifier: Arc<OnceLock<Notifier>>,
}

/// Readies the file `fd`, opened with the caller's `flags`, for I/O by the daemon itself
/// (no passthrough): the daemon's buffers are not aligned as an O_DIRECT file demands
/// (EINVAL), and the kernel already keeps an O_DIRECT open out of its page cache, so the
/// daemon's side need not be direct.
fn for_daemon_io(fd: &OwnedFd, flags: i32) -> Result<(), Errno> {
    if flags & libc::O_DIRECT == 0 {
        return Ok(());
    }
    let fl = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, fl - OFlags::DIRECT)
}

/// Calls `f` with up to `len` bytes of `fd` from `offset` (fewer at its end), read into the
/// session thread's buffer: as long as the largest read it served (zeroed once, when it grows,
/// and dropped after one larger than two `MAX_WRITE`s), so serving data costs no allocation.
fn with_file_data<R>(
    fd: &OwnedFd,
    offset: u64,
    len: usize,
    f: impl FnOnce(Result<&[u8], Errno>) -> R,
) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let mut filled = 0;
        let mut failed = None;
        while filled < len {
            match rustix::io::pread(fd, &mut buf[filled..len], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(Errno::INTR) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let result = f(failed.map_or(Ok(&buf[..filled]), Err));
        if buf.len() > 2 * MAX_WRITE as usize {
            *buf = Vec::new();
        }
        result
    })
}

fn fuse_err(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw_os_error())
}

fn system_time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn file_kind(mode: u32) -> fuser::FileType {
    match FileType::from_raw_mode(mode) {
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
        FileType::CharacterDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
        _ => fuser::FileType::RegularFile,
    }
}

fn attr_of(id: u64, st: &Stat, merged_dir: bool) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: system_time(st.st_atime, st.st_atime_nsec as i64),
        mtime: system_time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: system_time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: file_kind(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: if merged_dir { 1 } else { st.st_nlink as u32 },
        uid: st.st_uid,
        gid: st.st_gid,
        // The kernel's encoding of device numbers is the low 32 bits of glibc's.
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// A device number as the kernel sends it (`new_encode_dev`) → `dev_t`.
fn dev_from_kernel(rdev: u32) -> u64 {
    rustix::fs::makedev(
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    )
}

fn timespec(t: TimeOrNow) -> Timespec {
    match t {
        TimeOrNow::Now => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        TimeOrNow::SpecificTime(t) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
                Err(e) => {
                    let d = e.duration();
                    let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
                    if n == 0 {
                        (-s, 0)
                    } else {
                        (-s - 1, 1_000_000_000 - n)
                    }
                }
            };
            Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            }
        }
    }
}

const OMIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: rustix::fs::UTIME_OMIT,
};

/// One slot of a directory listing as the kernel reads it.
enum Slot<'a> {
    Dot,
    DotDot,
    Entry(&'a Listed),
}

/// What a setattr request changes.
#[derive(Clone, Copy)]
struct SetAttr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    fh: Option<FileHandle>,
}

/// What a create request makes.
#[derive(Clone, Copy)]
enum NewEntry<'a> {
    File { mode: u32, flags: i32 },
    Dir { mode: u32 },
    Symlink { target: &'a Path },
    Special { mode: u32, rdev: u64 },
}

impl UnionFs {
    /// A union of `layers`.
    pub(crate) fn new(layers: Layers, opts: FsOptions) -> Result<UnionFs, Errno> {
        let root_lowers: Vec<u16> = (0..layers.lowers.len() as u16).collect();
        let place = if layers.upper.is_some() {
            Place::Upper
        } else if !root_lowers.is_empty() {
            Place::Lower(0)
        } else {
            return Err(Errno::INVAL);
        };
        let lowers = root_lowers.clone();
        let root = Node::new(
            ROOT_ID,
            true,
            NodeState {
                paths: vec![PathBuf::new()],
                parent: ROOT_ID,
                place,
                lowers,
                removed: false,
            },
        );
        let layers = Arc::new(layers);
        Ok(UnionFs {
            readahead: DirReadahead::new(layers.clone()),
            files_ahead: FileReadahead::new(layers.clone()),
            notifier: Arc::default(),
            layers,
            nodes: NodeTable::new(root),
            numbers: InodeNumbers::default(),
            root_lowers,
            aliases: Mutex::new(HashMap::new()),
            handles: Handles::new(),
            parked: ParkedBackings::default(),
            temps: AtomicU64::new(0),
            passthrough: AtomicBool::new(false),
            want_passthrough: opts.passthrough,
        })
    }

    /// Where the session's notifier goes once the session is made (the session owns `self`).
    pub(super) fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    /// The mode of the union's root directory.
    pub(super) fn root_mode(&self) -> Result<u32, Errno> {
        let root = self.nodes.get(ROOT_ID).ok_or(Errno::STALE)?;
        Ok(self.stat_node(&root)?.0.st_mode)
    }

    pub(super) fn next_temp(&self) -> u64 {
        self.temps.fetch_add(1, Ordering::Relaxed)
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.nodes.get(ino.0).ok_or(Errno::STALE)
    }

    fn xattr_ns(&self) -> &'static [u8] {
        match self.layers.xattrs {
            OverlayXattrs::Trusted => b"trusted.overlay.",
            OverlayXattrs::User => b"user.overlay.",
        }
    }

    /// A directory node as resolution sees it (cloned out of its lock).
    fn dir_view(node: &Node) -> (PathBuf, bool, Vec<u16>) {
        let s = node.state();
        (s.path().clone(), s.in_upper(), s.lowers.clone())
    }

    /// The id an entry found in the union has.
    fn id_of(&self, place: Place, st: &Stat) -> u64 {
        let fs = self.layers.fs_of(place);
        match place {
            Place::Upper => self.numbers.id_of_upper(fs, st.st_ino),
            Place::Lower(_) => self.numbers.id(fs, st.st_ino),
        }
    }

    /// Counts a kernel reference to the entry `found` at `rel` in `parent`, and returns its
    /// node and attributes.
    fn register(&self, parent: u64, rel: PathBuf, found: Found) -> (Arc<Node>, FileAttr) {
        let id = self.id_of(found.place, &found.stat);
        let dir = found.is_dir();
        let (node, made) = self.nodes.reference(id, || {
            Node::new(
                id,
                dir,
                NodeState {
                    paths: vec![rel.clone()],
                    parent,
                    place: found.place,
                    lowers: found.lowers.clone(),
                    removed: false,
                },
            )
        });
        let merged = if made {
            node.state().is_merged()
        } else {
            let mut s = node.state_mut();
            if s.removed || dir {
                s.paths = vec![rel];
                s.parent = parent;
                s.removed = false;
            } else if !s.paths.contains(&rel) {
                s.paths.push(rel);
            }
            if dir || !(s.in_upper() && found.place != Place::Upper) {
                s.place = found.place;
                s.lowers = found.lowers;
            }
            s.is_merged()
        };
        let attr = attr_of(id, &found.stat, merged);
        (node, attr)
    }

    fn stat_node(&self, node: &Node) -> Result<(Stat, bool), Errno> {
        let (place, path, merged) = {
            let s = node.state();
            (s.place, s.path().clone(), s.is_merged())
        };
        Ok((self.layers.stat_at(place, &path)?, merged))
    }

    fn getattr_of(&self, node: &Node) -> Result<FileAttr, Errno> {
        let (st, merged) = self.stat_node(node)?;
        Ok(attr_of(node.id, &st, merged))
    }

    // ------------------------------------------------------------ lookups

    fn do_lookup(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<Option<(Arc<Node>, FileAttr)>, Errno> {
        let p = self.node(parent)?;
        let (path, upper, lowers) = Self::dir_view(&p);
        let view = DirView {
            path: &path,
            upper,
            lowers: &lowers,
        };
        match self.layers.lookup(&view, name)? {
            None => Ok(None),
            Some(found) => Ok(Some(self.register(p.id, path.join(name), found))),
        }
    }

    // ------------------------------------------------------------ creating

    /// Makes a new entry `name` in directory `parent`, owned by the caller, and returns its
    /// node, attributes and (for a file) an open fd.
    fn create_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        what: NewEntry<'_>,
    ) -> Result<(Arc<Node>, FileAttr, Option<OwnedFd>), Errno> {
        let p = self.node(parent)?;
        self.copy_up_dir(&p)?;
        let ppath = p.state().path().clone();
        let pdir = self.layers.upper_dir(&ppath)?;
        let over_whiteout = match self.layers.classify_upper(pdir.as_fd(), name)? {
            Entry::Whiteout => true,
            Entry::Missing => false,
            Entry::Present(_) => return Err(Errno::EXIST),
        };
        let pst = rustix::fs::fstat(&pdir)?;
        let uid = req.uid();
        let mut gid = req.gid();
        let setgid_dir = pst.st_mode & 0o2000 != 0;
        if setgid_dir {
            gid = pst.st_gid;
        }
        // Made in the work dir when it must replace a whiteout, in place otherwise.
        let tmp = over_whiteout.then(|| OsString::from(format!("#strata-{:x}", self.next_temp())));
        let work = self.layers.work()?;
        let (at, at_name): (BorrowedFd<'_>, &OsStr) = match &tmp {
            Some(t) => (work, t.as_os_str()),
            None => (pdir.as_fd(), name),
        };
        let chown = |fd_or_at: Option<&OwnedFd>| -> Result<(), Errno> {
            if uid == 0 && gid == 0 {
                return Ok(());
            }
            let (u, g) = (
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            );
            match fd_or_at {
                Some(fd) => rustix::fs::fchown(fd, u, g),
                None => rustix::fs::chownat(at, at_name, u, g, AtFlags::SYMLINK_NOFOLLOW),
            }
        };
        let special = |mode: u32| mode & 0o6000 != 0;
        let mut file = None;
        let is_dir_entry = matches!(what, NewEntry::Dir { .. });
        let made = (|| -> Result<(), Errno> {
            match what {
                NewEntry::File { mode, flags } => {
                    let mut oflags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC;
                    if flags & libc::O_DIRECT != 0 {
                        oflags |= OFlags::DIRECT;
                    }
                    let fd =
                        rustix::fs::openat(at, at_name, oflags, Mode::from_raw_mode(mode & 0o777))?;
                    chown(Some(&fd))?;
                    if special(mode) {
                        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))?;
                    }
                    file = Some(fd);
                }
                NewEntry::Dir { mode } => {
                    let mode = if setgid_dir { mode | 0o2000 } else { mode };
                    rustix::fs::mkdirat(at, at_name, Mode::from_raw_mode(mode & 0o7777))?;
                    chown(None)?;
                    rustix::fs::chmodat(
                        at,
                        at_name,
                        Mode::from_raw_mode(mode & 0o7777),
                        AtFlags::empty(),
                    )?;
                    if over_whiteout {
                        XattrTarget::At(at, at_name).set(
                            self.layers.xattrs.opaque().as_bytes(),
                            b"y",
                            rustix::fs::XattrFlags::empty(),
                        )?;
                    }
                }
                NewEntry::Symlink { target } => {
                    rustix::fs::symlinkat(target, at, at_name)?;
                    chown(None)?;
                }
                NewEntry::Special { mode, rdev } => {
                    rustix::fs::mknodat(
                        at,
                        at_name,
                        FileType::from_raw_mode(mode),
                        Mode::from_raw_mode(mode & 0o7777),
                        rdev,
                    )?;
                    chown(None)?;
                    if special(mode) {
                        rustix::fs::chmodat(
                            at,
                            at_name,
                            Mode::from_raw_mode(mode & 0o7777),
                            AtFlags::empty(),
                        )?;
                    }
                }
            }
            if let Some(t) = &tmp {
                // Directories swap places with the whiteout (a directory cannot replace a
                // file), which is then removed.
                let flags = if is_dir_entry {
                    RenameFlags::EXCHANGE
                } else {
                    RenameFlags::empty()
                };
                rustix::fs::renameat_with(work, t, &pdir, name, flags)?;
                if is_dir_entry {
                    rustix::fs::unlinkat(work, t, AtFlags::empty())?;
                }
            }
            Ok(())
        })();
        if let Err(e) = made {
            if let Some(t) = &tmp {
                self.remove_temp(t);
            }
            return Err(e);
        }
        let st = rustix::fs::statat(&pdir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        // A brand-new inode: forget any earlier use of its number.
        self.numbers.upper_gone(st.st_ino);
        let mut id = self.id_of(Place::Upper, &st);
        if self.nodes.contains(id) {
            id = self.numbers.fresh();
            self.numbers.set_upper_origin(st.st_ino, id);
        }
        let rel = ppath.join(name);
        let (node, _) = self.nodes.reference(id, || {
            Node::new(
                id,
                is_dir(&st),
                NodeState {
                    paths: vec![rel],
                    parent: p.id,
                    place: Place::Upper,
                    lowers: Vec::new(),
                    removed: false,
                },
            )
        });
        Ok((node, attr_of(id, &st, false), file))
    }

    // ------------------------------------------------------------ removing

    /// Puts a whiteout at `name` in the upper dir `pdir`, over whatever is there.
    fn put_whiteout(&self, pdir: &OwnedFd, name: &OsStr, over: Option<bool>) -> Result<(), Errno> {
        let Some(over_dir) = over else {
            return Self::make_whiteout(pdir.as_fd(), name);
        };
        let work = self.layers.work()?;
        let tmp = OsString::from(format!("#strata-{:x}", self.next_temp()));
        Self::make_whiteout(work, &tmp)?;
        let flags = if over_dir {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::empty()
        };
        if let Err(e) = rustix::fs::renameat_with(work, &tmp, pdir, name, flags) {
            self.remove_temp(&tmp);
            return Err(e);
        }
        if over_dir {
            self.remove_temp(&tmp);
        }
        Ok(())
    }

    /// Makes a whiteout, a 0/0 character device (which Linux lets anyone make), at `name`.
    fn make_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
        rustix::fs::mknodat(dir, name, FileType::CharacterDevice, Mode::empty(), 0)
    }

    fn do_unlink(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let p = self.node(parent)?;
        let (ppath, upper, lowers) = Self::dir_view(&p);
        let view = DirView {
            path: &ppath,
            upper,
            lowers: &lowers,
        };
        let rel = ppath.join(name);
        let found = self.layers.lookup(&view, name)?.ok_or(Errno::NOENT)?;
        if dir != found.is_dir() {
            return Err(if dir { Errno::NOTDIR } else { Errno::ISDIR });
        }
        if dir && !self.layers.list(&found.view(&rel))?.is_empty() {
            return Err(Errno::NOTEMPTY);
        }
        let id = self.id_of(found.place, &found.stat);
        self.copy_up_dir(&p)?;
        let positive = self.layers.lower_positive(&view, name)?;
        let pdir = self.layers.upper_dir(&ppath)?;
        if found.place == Place::Upper {
            if positive {
                self.put_whiteout(&pdir, name, Some(dir))?;
            } else if dir {
                match rustix::fs::unlinkat(&pdir, name, AtFlags::REMOVEDIR) {
                    Err(Errno::NOTEMPTY) => {
                        // Only whiteouts of entries that no lower layer shows any more.
                        self.strip_tree(&rel, true)?;
                        rustix::fs::unlinkat(&pdir, name, AtFlags::REMOVEDIR)?;
                    }
                    r => r?,
                }
            } else {
                rustix::fs::unlinkat(&pdir, name, AtFlags::empty())?;
            }
            if dir || found.stat.st_nlink <= 1 {
                self.numbers.upper_gone(found.stat.st_ino);
            }
        } else {
            self.put_whiteout(&pdir, name, None)?;
        }
        if let Some(n) = self.nodes.get(id) {
            let mut s = n.state_mut();
            s.paths.retain(|x| *x != rel);
            if s.paths.is_empty() {
                s.paths.push(rel);
                s.removed = true;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ renaming

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: FuseRenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(FuseRenameFlags::RENAME_WHITEOUT)
            || (flags.contains(FuseRenameFlags::RENAME_EXCHANGE)
                && flags.contains(FuseRenameFlags::RENAME_NOREPLACE))
        {
            return Err(Errno::INVAL);
        }
        let exchange = flags.contains(FuseRenameFlags::RENAME_EXCHANGE);
        let p = self.node(parent)?;
        let q = self.node(newparent)?;
        let (ppath, pup, plowers) = Self::dir_view(&p);
        let (qpath, qup, qlowers) = Self::dir_view(&q);
        let old_rel = ppath.join(name);
        let new_rel = qpath.join(newname);
        let old = self
            .layers
            .lookup(
                &DirView {
                    path: &ppath,
                    upper: pup,
                    lowers: &plowers,
                },
                name,
            )?
            .ok_or(Errno::NOENT)?;
        let new = self.layers.lookup(
            &DirView {
                path: &qpath,
                upper: qup,
                lowers: &qlowers,
            },
            newname,
        )?;
        if exchange && new.is_none() {
            return Err(Errno::NOENT);
        }
        if flags.contains(FuseRenameFlags::RENAME_NOREPLACE) && new.is_some() {
            return Err(Errno::EXIST);
        }
        let old_id = self.id_of(old.place, &old.stat);
        let new_id = new.as_ref().map(|n| self.id_of(n.place, &n.stat));
        if Some(old_id) == new_id {
            return Ok(());
        }
        if let (Some(n), false) = (&new, exchange) {
            match (old.is_dir(), n.is_dir()) {
                (true, false) => return Err(Errno::NOTDIR),
                (false, true) => return Err(Errno::ISDIR),
                (true, true) if !self.layers.list(&n.view(&new_rel))?.is_empty() => {
                    return Err(Errno::NOTEMPTY);
                }
                _ => {}
            }
        }
        self.copy_up_dir(&p)?;
        self.copy_up_dir(&q)?;
        // Bring both sides up. A directory with lower parts is copied up whole (overlayfs with
        // redirect_dir=off says EXDEV here and leaves the copy to `mv`).
        let old_tree = self.bring_up_for_rename(&old, &old_rel, old_id)?;
        let new_tree = match (&new, exchange) {
            (Some(n), true) => self.bring_up_for_rename(n, &new_rel, new_id.unwrap_or_default())?,
            _ => false,
        };
        let pdir = self.layers.upper_dir(&ppath)?;
        let qdir = self.layers.upper_dir(&qpath)?;
        let pview = DirView {
            path: &ppath,
            upper: true,
            lowers: &plowers,
        };
        let new_is_whiteout = matches!(
            self.layers.classify_upper(qdir.as_fd(), newname)?,
            Entry::Whiteout
        );
        let mut rflags = RenameFlags::empty();
        let mut cleanup_whiteout = false;
        if exchange {
            rflags = RenameFlags::EXCHANGE;
        } else if self.layers.lower_positive(&pview, name)? {
            rflags = if new_is_whiteout {
                RenameFlags::EXCHANGE
            } else {
                RenameFlags::WHITEOUT
            };
        } else if old.is_dir() && new_is_whiteout {
            rflags = RenameFlags::EXCHANGE;
            cleanup_whiteout = true;
        }
        // An existing target directory must be empty in the upper layer too.
        if let (Some(n), false) = (&new, exchange)
            && n.is_dir()
            && n.place == Place::Upper
        {
            self.strip_tree(&new_rel, true)?;
        }
        // Which moved directories end up opaque.
        let old_opaque = old.is_dir()
            && self.moved_dir_opaque(
                &pdir,
                name,
                old_tree,
                !qlowers.is_empty(),
                new_is_whiteout || new.is_some(),
            );
        let new_opaque = exchange
            && new.as_ref().is_some_and(Found::is_dir)
            && self.moved_dir_opaque(&qdir, newname, new_tree, !plowers.is_empty(), true);
        if old.is_dir() {
            self.set_opaque(&pdir, name, old_opaque)?;
        }
        if exchange && new.as_ref().is_some_and(Found::is_dir) {
            self.set_opaque(&qdir, newname, new_opaque)?;
        }
        match rustix::fs::renameat_with(&pdir, name, &qdir, newname, rflags) {
            // No RENAME_WHITEOUT on the upper filesystem: rename, then whiteout.
            Err(Errno::INVAL) if rflags == RenameFlags::WHITEOUT => {
                rustix::fs::renameat_with(&pdir, name, &qdir, newname, RenameFlags::empty())?;
                self.put_whiteout(&pdir, name, None)?;
            }
            r => r?,
        }
        if cleanup_whiteout {
            rustix::fs::unlinkat(&pdir, name, AtFlags::empty())?;
        }
        // The replaced target is gone.
        if let (Some(n), false) = (&new, exchange) {
            if n.place == Place::Upper && (n.is_dir() || n.stat.st_nlink <= 1) {
                self.numbers.upper_gone(n.stat.st_ino);
            }
            if let Some(node) = new_id.and_then(|id| self.nodes.get(id)) {
                let mut s = node.state_mut();
                s.paths.retain(|x| *x != new_rel);
                if s.paths.is_empty() {
                    s.paths.push(new_rel.clone());
                    s.removed = true;
                }
            }
        }
        self.moved(
            old_id,
            &old_rel,
            &new_rel,
            q.id,
            exchange.then_some((new_id.unwrap_or_default(), p.id)),
        );
        Ok(())
    }

    /// Copies up what a rename moves: a whole tree for a directory with lower parts (returns
    /// true then), the entry itself otherwise.
    fn bring_up_for_rename(&self, found: &Found, rel: &Path, id: u64) -> Result<bool, Errno> {
        let node = self.nodes.get(id).ok_or(Errno::STALE)?;
        if found.is_dir() {
            if found.place != Place::Upper || !found.lowers.is_empty() {
                self.copy_up_tree(rel, &node)?;
                return Ok(true);
            }
            return Ok(false);
        }
        self.copy_up(&node, true)?;
        Ok(false)
    }

    /// Whether a directory moved from `dir`/`name` must be opaque at its destination, as
    /// overlayfs decides: a pure upper directory moved into a merged one becomes opaque; a
    /// copied-up tree is what `mv` would have made, a new directory, opaque only where a
    /// whiteout or an emptied directory was.
    fn moved_dir_opaque(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        tree: bool,
        dest_merged: bool,
        dest_taken: bool,
    ) -> bool {
        if tree {
            dest_taken
        } else {
            self.layers.upper_is_opaque(dir.as_fd(), name) || dest_merged
        }
    }

    fn set_opaque(&self, dir: &OwnedFd, name: &OsStr, opaque: bool) -> Result<(), Errno> {
        let target = XattrTarget::At(dir.as_fd(), name);
        if opaque {
            target.set(
                self.layers.xattrs.opaque().as_bytes(),
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
        } else {
            super::copyup::remove_opaque(target)
        }
    }

    /// Updates the nodes of a rename: the moved entry, everything below a moved directory,
    /// and for an exchange the other side too.
    fn moved(
        &self,
        id: u64,
        from: &Path,
        to: &Path,
        to_parent: u64,
        exchanged: Option<(u64, u64)>,
    ) {
        let rebase = |rest: &Path, onto: &Path| {
            if rest.as_os_str().is_empty() {
                onto.to_owned()
            } else {
                onto.join(rest)
            }
        };
        let remap = |p: &Path| -> Option<PathBuf> {
            if let Ok(rest) = p.strip_prefix(from) {
                return Some(rebase(rest, to));
            }
            if exchanged.is_some()
                && let Ok(rest) = p.strip_prefix(to)
            {
                return Some(rebase(rest, from));
            }
            None
        };
        for node in self.nodes.all() {
            let mut s = node.state_mut();
            let mut changed = false;
            for p in s.paths.iter_mut() {
                if let Some(n) = remap(p) {
                    *p = n;
                    changed = true;
                }
            }
            if changed && node.is_dir {
                // A moved tree is upper only: its lower parts were copied up (or it had none).
                s.lowers.clear();
                s.place = Place::Upper;
            }
        }
        if let Some(n) = self.nodes.get(id) {
            n.state_mut().parent = to_parent;
        }
        if let Some((other, from_parent)) = exchanged
            && let Some(n) = self.nodes.get(other)
        {
            n.state_mut().parent = from_parent;
        }
    }

    // ------------------------------------------------------------ open files

    /// Opens the file `node` and replies: passthrough when the kernel takes it and the file is
    /// not a small lower one, the daemon's own I/O through the kernel's page cache otherwise.
    fn open_file(&self, node: &Arc<Node>, flags: i32, reply: ReplyOpen) {
        let acc = flags & libc::O_ACCMODE;
        let writes = acc != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let plain_read = !writes && !trunc && flags & (libc::O_DIRECT | libc::O_SYNC) == 0;
        let passthrough = self.passthrough.load(Ordering::Relaxed);
        if plain_read && passthrough {
            let place = node.state().place;
            let mut io = node.io();
            if let Some(b) = io.backing.as_mut()
                && b.place == place
                && let Some(file) = &b.shared_file
            {
                b.opens += 1;
                b.parked = None;
                let fh = self.handles.insert(Handle {
                    fd: file.clone(),
                    node: node.clone(),
                    passthrough: true,
                    lower: true,
                });
                return reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &b.id);
            }
        }
        let opened = (|| -> Result<OwnedFd, Errno> {
            if writes || trunc {
                self.copy_up(node, !trunc)?;
            }
            let (place, path) = {
                let s = node.state();
                (s.place, s.path().clone())
            };
            let mut oflags = if writes { OFlags::RDWR } else { OFlags::RDONLY };
            if trunc {
                oflags |= OFlags::TRUNC;
            }
            if flags & libc::O_DIRECT != 0 {
                oflags |= OFlags::DIRECT;
            }
            if flags & libc::O_SYNC != 0 {
                oflags |= OFlags::SYNC;
            }
            self.layers.open_at(place, &path, oflags)
        })();
        let fd = match opened {
            Ok(fd) => Arc::new(fd),
            Err(e) => return reply.error(fuse_err(e)),
        };
        let (place, lower_path) = {
            let s = node.state();
            let lower_path =
                (plain_read && matches!(s.place, Place::Lower(_))).then(|| s.path().clone());
            (s.place, lower_path)
        };
        let lower = matches!(place, Place::Lower(_));
        // Opens from before a copy-up keep the lower file, so a writer waits for them to close.
        let mut io = if writes {
            match node.io_for_writer(place, WRITER_PATIENCE) {
                Some(io) => io,
                None => return reply.error(fuser::Errno::ETXTBSY),
            }
        } else {
            node.io()
        };
        let lower_size = lower_path
            .is_some()
            .then(|| rustix::fs::fstat(&*fd).ok())
            .flatten()
            .map(|st| st.st_size as u64);
        if let (Some(size), Some(path)) = (lower_size, &lower_path)
            && !io.opened
        {
            // Its head and, if the reader goes on through the directory, the files after it,
            // so that the disk's reads overlap the OPEN's reply and the reader's next opens.
            let cold = !head_cached(&fd);
            if cold {
                read_head(&fd, size);
            }
            self.files_ahead.opened(place, path, cold);
        }
        let small = lower_size.is_some_and(|size| size <= CACHED_MAX);
        let passing = io.backing.as_ref().is_some_and(|b| b.opens > 0);
        let cached = !passing && (io.cached_opens > 0 || (small && io.opened));
        io.opened = true;
        if passthrough && !cached {
            // A parked backing of the lower file the node no longer is (copied up since).
            if io
                .backing
                .as_ref()
                .is_some_and(|b| b.opens == 0 && b.place != place)
            {
                io.backing = None;
            }
            let usable = match io.backing.as_mut() {
                Some(b) => {
                    b.opens += 1;
                    b.parked = None;
                    true
                }
                None => match reply.open_backing(&*fd) {
                    Ok(id) => {
                        // Opening it for passthrough empties the inode's page cache.
                        io.stored = false;
                        io.backing = Some(Backing {
                            id,
                            place,
                            opens: 1,
                            shared_file: (lower && plain_read && !small).then(|| fd.clone()),
                            parked: None,
                        });
                        true
                    }
                    Err(e) => {
                        tracing::debug!(
                            "passthrough refused ({e}): serving file I/O in the daemon"
                        );
                        self.passthrough.store(false, Ordering::Relaxed);
                        false
                    }
                },
            };
            if usable {
                let fh = self.handles.insert(Handle {
                    fd,
                    node: node.clone(),
                    passthrough: true,
                    lower,
                });
                let b = io.backing.as_ref().expect("set above");
                return reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &b.id);
            }
        }
        if let Err(e) = for_daemon_io(&fd, flags) {
            return reply.error(fuse_err(e));
        }
        // Read through passthrough until now, so not in the page cache.
        if passthrough
            && cached
            && !io.stored
            && let Some(size) = lower_size.filter(|size| (1..=STORE_MAX).contains(size))
        {
            io.stored = self.store_in_page_cache(node.id, &fd, size);
        }
        io.cached_opens += 1;
        if lower {
            io.lower_cached_opens += 1;
        }
        drop(io);
        let fh = self.handles.insert(Handle {
            fd,
            node: node.clone(),
            passthrough: false,
            lower,
        });
        reply.opened(
            FileHandle(fh),
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
        );
    }

    /// Puts the whole of the lower file `fd` (`size` bytes) into the kernel's page cache of node
    /// `id`. Whether it did.
    fn store_in_page_cache(&self, id: u64, fd: &OwnedFd, size: u64) -> bool {
        let Some(notifier) = self.notifier.get() else {
            return false;
        };
        with_file_data(fd, 0, size as usize, |data| {
            data.is_ok_and(|data| notifier.store(INodeNo(id), 0, data).is_ok())
        })
    }

    fn release_file(&self, fh: FileHandle) {
        let Some(h) = self.handles.remove(fh) else {
            return;
        };
        let node = &h.node;
        let parked = {
            let mut io = node.io();
            if !h.passthrough {
                io.cached_opens -= 1;
                if h.lower {
                    io.lower_cached_opens -= 1;
                }
                None
            } else {
                match io.backing.as_mut() {
                    Some(b) if b.opens > 1 => {
                        b.opens -= 1;
                        None
                    }
                    Some(b) if b.shared_file.is_some() => {
                        b.opens = 0;
                        Some(self.parked.park(b))
                    }
                    Some(_) => {
                        io.backing = None;
                        None
                    }
                    None => None,
                }
            }
        };
        node.file_released();
        if let Some(stamp) = parked {
            self.parked.queue(node, stamp);
        }
    }

    // ------------------------------------------------------------ directories

    /// The merged listing of directory `ino` that reads from `offset` are served from: read
    /// afresh at offset 0 (an opendir or a rewind), kept until the end is reached so that
    /// offsets stay valid between the calls of one pass.
    fn listing(&self, ino: INodeNo, offset: u64) -> Result<(Arc<Node>, Arc<Listing>), Errno> {
        let node = self.node(ino)?;
        if !node.is_dir {
            return Err(Errno::NOTDIR);
        }
        let mut cur = node
            .listing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let listing = match cur.as_ref() {
            Some(l) if offset != 0 => l.clone(),
            _ => {
                let (path, upper, lowers, parent) = {
                    let s = node.state();
                    (s.path().clone(), s.in_upper(), s.lowers.clone(), s.parent)
                };
                let entries = self.layers.list(&DirView {
                    path: &path,
                    upper,
                    lowers: &lowers,
                })?;
                let places: Vec<Place> = upper
                    .then_some(Place::Upper)
                    .into_iter()
                    .chain(lowers.iter().map(|&i| Place::Lower(i)))
                    .collect();
                self.readahead.subdirs(
                    &path,
                    &places,
                    entries
                        .iter()
                        .filter(|e| is_dir(&e.stat))
                        .map(|e| (e.place, e.name.as_os_str())),
                );
                self.files_ahead.listed(
                    &path,
                    entries
                        .iter()
                        .filter(|e| {
                            matches!(e.place, Place::Lower(_))
                                && FileType::from_raw_mode(e.stat.st_mode) == FileType::RegularFile
                        })
                        .map(|e| e.place),
                );
                let l = Arc::new(Listing {
                    path,
                    upper,
                    lowers,
                    parent,
                    entries,
                });
                *cur = Some(l.clone());
                l
            }
        };
        drop(cur);
        Ok((node, listing))
    }

    /// Hands the slots of directory `ino` from `offset` on to `add` (with the offset of the
    /// next one) until it says the reply is full or the listing ends (which ends the pass).
    fn fill_dir(
        &self,
        ino: INodeNo,
        offset: u64,
        mut add: impl FnMut(Slot<'_>, u64, &Listing) -> bool,
    ) -> Result<(), Errno> {
        let (node, listing) = self.listing(ino, offset)?;
        for i in offset as usize.. {
            let slot = match i {
                0 => Slot::Dot,
                1 => Slot::DotDot,
                _ => match listing.entries.get(i - 2) {
                    Some(e) => Slot::Entry(e),
                    None => {
                        // Only a reply with nothing in it ends the kernel's pass: the request
                        // after the one that reached the end comes for that, and finds the
                        // listing still here instead of reading the directory again.
                        if i == offset as usize {
                            Self::listing_done(&node, &listing);
                        }
                        break;
                    }
                },
            };
            if add(slot, i as u64 + 1, &listing) {
                break;
            }
        }
        Ok(())
    }

    /// A pass over `node`'s listing has ended: the kernel caches it from here on.
    fn listing_done(node: &Node, listing: &Arc<Listing>) {
        let mut cur = node
            .listing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cur.as_ref().is_some_and(|l| Arc::ptr_eq(l, listing)) {
            *cur = None;
        }
    }

    // ------------------------------------------------------------ attributes

    fn do_setattr(&self, ino: INodeNo, change: SetAttr) -> Result<FileAttr, Errno> {
        let SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
        } = change;
        let node = self.node(ino)?;
        self.copy_up(&node, size != Some(0))?;
        let path = node.state().path().clone();
        let (parent, name) = split(&path);
        let dir = self.layers.upper_dir(parent)?;
        let name = if name.is_empty() {
            OsStr::new(".")
        } else {
            name
        };
        if let Some(size) = size {
            let by_handle = fh.and_then(|fh| self.handles.get(fh).ok());
            match by_handle.as_deref() {
                Some(Handle { fd, .. }) if rustix::fs::ftruncate(fd, size).is_ok() => {}
                _ => {
                    let fd = self
                        .layers
                        .upper_open(&path, OFlags::WRONLY, Mode::empty())?;
                    rustix::fs::ftruncate(&fd, size)?;
                }
            }
        }
        if uid.is_some() || gid.is_some() {
            rustix::fs::chownat(
                &dir,
                name,
                uid.map(rustix::fs::Uid::from_raw),
                gid.map(rustix::fs::Gid::from_raw),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(mode) = mode {
            rustix::fs::chmodat(
                &dir,
                name,
                Mode::from_raw_mode(mode & 0o7777),
                AtFlags::empty(),
            )?;
        }
        if atime.is_some() || mtime.is_some() {
            let times = Timestamps {
                last_access: atime.map_or(OMIT, timespec),
                last_modification: mtime.map_or(OMIT, timespec),
            };
            rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        self.getattr_of(&node)
    }

    fn xattr_target_of<'a>(
        &self,
        node: &Node,
        keep: &'a mut Option<OwnedFd>,
        path: &'a mut PathBuf,
    ) -> Result<XattrTarget<'a>, Errno> {
        let s = node.state();
        match s.place {
            Place::Lower(i) => {
                *path = self.layers.lower_path(i, s.path());
                Ok(XattrTarget::Path(path))
            }
            Place::Upper => {
                let (parent, name) = split(s.path());
                *keep = Some(self.layers.upper_dir(parent)?);
                *path = PathBuf::from(name);
                Ok(XattrTarget::At(
                    keep.as_ref().expect("just set").as_fd(),
                    path.as_os_str(),
                ))
            }
        }
    }

    /// The name an xattr the user sees has in the layers. Names in overlayfs's own namespace
    /// are escaped, as overlayfs does (`trusted.overlay.X` is stored as
    /// `trusted.overlay.overlay.X`), so users can neither see nor forge the union's own.
    fn real_xattr_name(&self, name: &OsStr) -> Vec<u8> {
        let ns = self.xattr_ns();
        let name = name.as_bytes();
        match name.strip_prefix(ns) {
            Some(rest) => [ns, b"overlay.", rest].concat(),
            None => name.to_vec(),
        }
    }

    /// The name a user sees for a real xattr name, or `None` for the union's own.
    fn user_xattr_name<'a>(&self, real: &'a [u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
        let ns = self.xattr_ns();
        match real.strip_prefix(ns) {
            Some(rest) => rest
                .strip_prefix(b"overlay.")
                .map(|r| [ns, r].concat().into()),
            None => Some(real.into()),
        }
    }
}

fn reply_empty(reply: ReplyEmpty, res: Result<(), Errno>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(fuse_err(e)),
    }
}

fn reply_attr(reply: ReplyAttr, res: Result<FileAttr, Errno>) {
    match res {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(fuse_err(e)),
    }
}

fn reply_entry(reply: ReplyEntry, res: Result<FileAttr, Errno>) {
    match res {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(fuse_err(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, data: Result<Vec<u8>, Errno>) {
    match data {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(fuse_err(e)),
    }
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for cap in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_ASYNC_DIO,
        ] {
            let _ = config.add_capabilities(cap);
        }
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_background(64);
        if self.want_passthrough && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() {
            // The layers are the backing files: this union then cannot itself be a layer of
            // something stacked above it more than once.
            let _ = config.set_max_stack_depth(1);
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(Some((_, attr))) => reply.entry(&TTL, &attr, Generation(0)),
            // A negative entry the kernel may cache: only this filesystem can create the name.
            Ok(None) => reply.entry(&TTL, &negative_attr(), Generation(0)),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(reply, self.node(ino).and_then(|n| self.getattr_of(&n)));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(
            ino,
            SetAttr {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                fh,
            },
        ) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = self.node(ino).and_then(|n| {
            let (place, path) = {
                let s = n.state();
                (s.place, s.path().clone())
            };
            match place {
                Place::Lower(i) => {
                    rustix::fs::readlinkat(&self.layers.lower(i).fd, &path, Vec::new())
                }
                Place::Upper => {
                    let (parent, name) = split(&path);
                    rustix::fs::readlinkat(&self.layers.upper_dir(parent)?, name, Vec::new())
                }
            }
        });
        match res {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let ft = FileType::from_raw_mode(mode);
        // A whiteout cannot be made through the union, as with overlayfs.
        if ft == FileType::CharacterDevice && rdev == 0 {
            return reply.error(fuser::Errno::EPERM);
        }
        let what = if ft == FileType::RegularFile {
            NewEntry::File { mode, flags: 0 }
        } else {
            NewEntry::Special {
                mode,
                rdev: dev_from_kernel(rdev),
            }
        };
        reply_entry(
            reply,
            self.create_entry(req, parent, name, what)
                .map(|(_, attr, _)| attr),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.create_entry(req, parent, name, NewEntry::Dir { mode }) {
            Ok((_, attr, _)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self.create_entry(req, parent, link_name, NewEntry::Symlink { target }) {
            Ok((_, attr, _)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_unlink(parent, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_unlink(parent, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: FuseRenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.do_rename(parent, name, newparent, newname, flags),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let res = (|| -> Result<FileAttr, Errno> {
            let node = self.node(ino)?;
            if node.is_dir {
                return Err(Errno::PERM);
            }
            self.copy_up(&node, true)?;
            let q = self.node(newparent)?;
            self.copy_up_dir(&q)?;
            let src = node.state().path().clone();
            let qpath = q.state().path().clone();
            let (sp, sname) = split(&src);
            let sdir = self.layers.upper_dir(sp)?;
            let qdir = self.layers.upper_dir(&qpath)?;
            match self.layers.classify_upper(qdir.as_fd(), newname)? {
                Entry::Present(_) => return Err(Errno::EXIST),
                Entry::Missing => {
                    rustix::fs::linkat(&sdir, sname, &qdir, newname, AtFlags::empty())?;
                }
                Entry::Whiteout => {
                    let work = self.layers.work()?;
                    let tmp = OsString::from(format!("#strata-{:x}", self.next_temp()));
                    rustix::fs::linkat(&sdir, sname, work, &tmp, AtFlags::empty())?;
                    if let Err(e) = rustix::fs::renameat(work, &tmp, &qdir, newname) {
                        self.remove_temp(&tmp);
                        return Err(e);
                    }
                }
            }
            let rel = qpath.join(newname);
            self.nodes
                .reference(node.id, || unreachable!("the node is held"));
            node.state_mut().paths.push(rel);
            self.getattr_of(&node)
        })();
        reply_entry(reply, res);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Ok(n) => self.open_file(&n, flags.0, reply),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let h = match self.handles.get(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(fuse_err(e)),
        };
        // Never more than the kernel asked for: it refuses a longer reply (EINVAL to the
        // daemon, EIO to the reader).
        with_file_data(&h.fd, offset, size as usize, |data| match data {
            Ok(data) => reply.data(data),
            Err(e) => reply.error(fuse_err(e)),
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = self.handles.get(fh).and_then(|h| {
            let fd = &h.fd;
            let mut done = 0;
            while done < data.len() {
                match rustix::io::pwrite(fd, &data[done..], offset + done as u64) {
                    Ok(n) => done += n,
                    Err(Errno::INTR) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(done)
        });
        match res {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_file(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let res = self.handles.get(fh).and_then(|h| {
            let fd = &h.fd;
            if datasync {
                rustix::fs::fdatasync(fd)
            } else {
                rustix::fs::fsync(fd)
            }
        });
        reply_empty(reply, res);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // No open directories: the kernel then skips OPENDIR and RELEASEDIR for good and
        // caches every listing it reads (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE), which only this
        // filesystem can change. Listings are kept per directory instead.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = self.fill_dir(ino, offset, |slot, next, listing| match slot {
            Slot::Dot => reply.add(ino, next, fuser::FileType::Directory, "."),
            Slot::DotDot => reply.add(
                INodeNo(listing.parent),
                next,
                fuser::FileType::Directory,
                "..",
            ),
            Slot::Entry(e) => {
                let id = self.id_of(e.place, &e.stat);
                reply.add(INodeNo(id), next, file_kind(e.stat.st_mode), &e.name)
            }
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let res = self.fill_dir(ino, offset, |slot, next, listing| {
            let (id, name, attr) = match slot {
                // `.` and `..` are not looked up by the kernel: no reference is counted.
                Slot::Dot | Slot::DotDot => {
                    let (id, name) = match slot {
                        Slot::Dot => (ino.0, "."),
                        _ => (listing.parent, ".."),
                    };
                    let Some(attr) = self.nodes.get(id).and_then(|n| self.getattr_of(&n).ok())
                    else {
                        return false;
                    };
                    let ttl = Duration::ZERO;
                    return reply.add(INodeNo(id), next, name, &ttl, &attr, Generation(0));
                }
                Slot::Entry(e) => {
                    let view = DirView {
                        path: &listing.path,
                        upper: listing.upper,
                        lowers: &listing.lowers,
                    };
                    // Gone since the listing was read: skipped.
                    let Ok(found) = self.layers.complete(&view, e) else {
                        return false;
                    };
                    let (node, attr) = self.register(ino.0, listing.path.join(&e.name), found);
                    (node.id, &e.name, attr)
                }
            };
            let full = reply.add(INodeNo(id), next, name, &TTL, &attr, Generation(0));
            if full {
                self.nodes.unreference(id);
            }
            full
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let res = self.node(ino).and_then(|n| {
            let (upper, path) = {
                let s = n.state();
                (s.in_upper(), s.path().clone())
            };
            if !upper {
                return Ok(());
            }
            let fd =
                self.layers
                    .upper_open(&path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
            rustix::fs::fsync(&fd)
        });
        reply_empty(reply, res);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let fd = match (&self.layers.upper, self.layers.lowers.first()) {
            (Some(u), _) => &u.fd,
            (None, Some(l)) => &l.fd,
            (None, None) => return reply.error(fuser::Errno::EIO),
        };
        match rustix::fs::fstatvfs(fd) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let real = self.real_xattr_name(name);
        let res = self.node(ino).and_then(|node| {
            let capability = real == CAPABILITY_XATTR;
            if capability {
                node.capability.changing();
            }
            let set = self.copy_up(&node, true).and_then(|()| {
                let (mut keep, mut path) = (None, PathBuf::new());
                self.xattr_target_of(&node, &mut keep, &mut path)?.set(
                    &real,
                    value,
                    rustix::fs::XattrFlags::from_bits_retain(flags as u32),
                )
            });
            if capability {
                node.capability.changing();
            }
            set
        });
        reply_empty(reply, res);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let real = self.real_xattr_name(name);
        let res = self.node(ino).and_then(|node| {
            let capability = real == CAPABILITY_XATTR;
            let (absent, seen) = node.capability.known_absent();
            if capability && absent {
                return Err(Errno::NODATA);
            }
            let (mut keep, mut path) = (None, PathBuf::new());
            let value = self
                .xattr_target_of(&node, &mut keep, &mut path)?
                .get(&real);
            if capability && value == Err(Errno::NODATA) {
                node.capability.found_absent(seen);
            }
            value
        });
        reply_xattr(reply, size, res);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let res = self.node(ino).and_then(|node| {
            let (mut keep, mut path) = (None, PathBuf::new());
            let list = self.xattr_target_of(&node, &mut keep, &mut path)?.list()?;
            let mut out = Vec::with_capacity(list.len());
            for n in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                if let Some(shown) = self.user_xattr_name(n) {
                    out.extend_from_slice(&shown);
                    out.push(0);
                }
            }
            Ok(out)
        });
        reply_xattr(reply, size, res);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let real = self.real_xattr_name(name);
        let res = self.node(ino).and_then(|node| {
            self.copy_up(&node, true)?;
            let (mut keep, mut path) = (None, PathBuf::new());
            self.xattr_target_of(&node, &mut keep, &mut path)?
                .remove(&real)
        });
        reply_empty(reply, res);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let res = self.create_entry(req, parent, name, NewEntry::File { mode, flags });
        let (node, attr, fd) = match res {
            Ok((n, a, Some(fd))) => (n, a, fd),
            Ok(_) => return reply.error(fuser::Errno::EIO),
            Err(e) => return reply.error(fuse_err(e)),
        };
        // A new file (O_EXCL): no capability, and no other open of it can hold its inode's
        // I/O mode.
        node.capability.created();
        let mut io = node.io();
        let mut passthrough = false;
        if self.passthrough.load(Ordering::Relaxed) {
            match reply.open_backing(&fd) {
                Ok(id) => {
                    io.backing = Some(Backing {
                        id,
                        place: Place::Upper,
                        opens: 1,
                        shared_file: None,
                        parked: None,
                    });
                    passthrough = true;
                }
                Err(e) => {
                    tracing::debug!("passthrough refused ({e}): serving file I/O in the daemon");
                    self.passthrough.store(false, Ordering::Relaxed);
                }
            }
        }
        if !passthrough {
            if let Err(e) = for_daemon_io(&fd, flags) {
                return reply.error(fuse_err(e));
            }
            io.cached_opens += 1;
        }
        let fh = self.handles.insert(Handle {
            fd: Arc::new(fd),
            node: node.clone(),
            passthrough,
            lower: false,
        });
        match io.backing.as_ref().filter(|_| passthrough) {
            Some(b) => reply.created_passthrough(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_NOFLUSH,
                &b.id,
            ),
            None => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
            ),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Like overlayfs on most files: no terminal, no special ioctls.
        reply.error(fuser::Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        // Regular files are always ready: the kernel stops asking.
        reply.error(fuser::Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let res = self.handles.get(fh).and_then(|h| {
            let fd = &h.fd;
            rustix::fs::fallocate(
                fd,
                rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
                offset,
                length,
            )
        });
        reply_empty(reply, res);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let res = self.handles.get(fh).and_then(|h| {
            let fd = &h.fd;
            let pos = match whence {
                libc::SEEK_DATA => rustix::fs::SeekFrom::Data(offset as u64),
                libc::SEEK_HOLE => rustix::fs::SeekFrom::Hole(offset as u64),
                libc::SEEK_SET => rustix::fs::SeekFrom::Start(offset as u64),
                libc::SEEK_END => rustix::fs::SeekFrom::End(offset),
                _ => return Err(Errno::INVAL),
            };
            rustix::fs::seek(fd, pos)
        });
        match res {
            Ok(pos) => reply.offset(pos as i64),
            Err(e) => reply.error(fuse_err(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let res = (|| {
            let hin = self.handles.get(fh_in)?;
            let hout = self.handles.get(fh_out)?;
            let (fin, fout) = (&hin.fd, &hout.fd);
            let (mut i, mut o) = (offset_in, offset_out);
            rustix::fs::copy_file_range(fin, Some(&mut i), fout, Some(&mut o), len as usize)
        })();
        match res {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(fuse_err(e)),
        }
    }
}

/// The attributes of a negative entry (node id 0): only their validity matters.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip_through_the_kernel_encoding() {
        for (major, minor) in [(1, 3), (8, 17), (254, 300), (4095, 1_000_000)] {
            let dev = rustix::fs::makedev(major, minor);
            assert_eq!(dev_from_kernel(dev as u32), dev);
        }
    }

    #[test]
    fn times_before_the_epoch() {
        let t = system_time(-2, 500);
        let TimeOrNow::SpecificTime(_) = TimeOrNow::SpecificTime(t) else {
            unreachable!()
        };
        let ts = timespec(TimeOrNow::SpecificTime(t));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (-2, 500));
        let ts = timespec(TimeOrNow::SpecificTime(system_time(5, 7)));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (5, 7));
    }

    #[test]
    fn a_union_of_plain_dirs_resolves_and_lists() {
        let tmp = tempfile::tempdir().unwrap();
        let (l0, l1, up, work) = (
            tmp.path().join("l0"),
            tmp.path().join("l1"),
            tmp.path().join("u"),
            tmp.path().join("w"),
        );
        for d in [&l0, &l1, &up, &work] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(l1.join("a"), "low").unwrap();
        std::fs::write(l0.join("a"), "high").unwrap();
        std::fs::create_dir(l1.join("d")).unwrap();
        std::fs::write(l1.join("d/x"), "").unwrap();
        std::fs::create_dir(l0.join("d")).unwrap();
        std::fs::write(l0.join("d/y"), "").unwrap();
        let layers = Layers::open(&[l0, l1], Some((&up, &work))).unwrap();
        let fs = UnionFs::new(layers, FsOptions::default()).unwrap();
        let (a, _) = fs
            .do_lookup(INodeNo(ROOT_ID), OsStr::new("a"))
            .unwrap()
            .unwrap();
        assert_eq!(a.state().place, Place::Lower(0));
        let (d, attr) = fs
            .do_lookup(INodeNo(ROOT_ID), OsStr::new("d"))
            .unwrap()
            .unwrap();
        assert_eq!(d.state().lowers, vec![0, 1]);
        assert_eq!(
            attr.nlink, 1,
            "a merged directory has one link, as overlayfs says"
        );
        let (path, upper, lowers) = UnionFs::dir_view(&d);
        let mut names: Vec<_> = fs
            .layers
            .list(&DirView {
                path: &path,
                upper,
                lowers: &lowers,
            })
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        assert_eq!(names, ["x", "y"]);
        assert!(
            fs.do_lookup(INodeNo(ROOT_ID), OsStr::new("nope"))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            fs.nodes.all().len(),
            3,
            "the root and the two looked-up entries"
        );
    }
}

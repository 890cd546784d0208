//! The harness of the union semantics suite: overlay-format layer dirs built from a
//! description, the same operations run on a kernel overlay mount and on a FUSE mount of
//! those layers, and what can be compared of the outcome: what each operation returned, the
//! merged view, the upper dir the mount wrote, and the layer that upper dir makes.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use layerfs::digest::{HashingWriter, digest_of};
use layerfs::layer::diff::write_layer;
use layerfs::layer::tarball::TarWriter;
use layerfs::mount::{StorageDriver, UnionSpec, mount_union, mount_union_readonly};
use rustix::fs::{AtFlags, FileType, Mode, RenameFlags, Timespec, Timestamps};

/// Every time the fixture sets: older than anything a test run makes.
pub const OLD: i64 = 978_307_200; // 2001-01-01

/// Builds layer dirs in overlay format; index 0 is the bottom layer.
pub struct Layers {
    pub root: PathBuf,
    pub dirs: Vec<PathBuf>,
}

impl Layers {
    pub fn new(root: &Path, count: usize) -> Layers {
        let dirs: Vec<PathBuf> = (0..count).map(|i| root.join(format!("layer{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        Layers {
            root: root.to_owned(),
            dirs,
        }
    }

    fn at(&self, layer: usize, path: &str) -> PathBuf {
        let p = self.dirs[layer].join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        p
    }

    pub fn file(&self, layer: usize, path: &str, content: &str) -> &Self {
        std::fs::write(self.at(layer, path), content).unwrap();
        self
    }

    pub fn file_mode(
        &self,
        layer: usize,
        path: &str,
        content: &str,
        mode: u32,
        owner: (u32, u32),
    ) -> &Self {
        let p = self.at(layer, path);
        std::fs::write(&p, content).unwrap();
        std::os::unix::fs::chown(&p, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub fn dir(&self, layer: usize, path: &str) -> &Self {
        std::fs::create_dir_all(self.at(layer, path)).unwrap();
        self
    }

    pub fn symlink(&self, layer: usize, path: &str, target: &str) -> &Self {
        std::os::unix::fs::symlink(target, self.at(layer, path)).unwrap();
        self
    }

    pub fn hardlink(&self, layer: usize, existing: &str, path: &str) -> &Self {
        std::fs::hard_link(self.dirs[layer].join(existing), self.at(layer, path)).unwrap();
        self
    }

    fn mknod(&self, layer: usize, path: &str, kind: FileType, mode: u32) -> &Self {
        let p = self.at(layer, path);
        rustix::fs::mknodat(rustix::fs::CWD, &p, kind, Mode::from_raw_mode(mode), 0).unwrap();
        self
    }

    /// A whiteout as overlayfs writes it: a 0/0 character device.
    pub fn whiteout(&self, layer: usize, path: &str) -> &Self {
        self.mknod(layer, path, FileType::CharacterDevice, 0)
    }

    /// A whiteout in the Linux 6.7 form: an empty file with `trusted.overlay.whiteout`, in a
    /// directory marked as holding such whiteouts (`trusted.overlay.opaque` = `x`).
    pub fn xattr_whiteout(&self, layer: usize, path: &str) -> &Self {
        let p = self.at(layer, path);
        std::fs::write(&p, "").unwrap();
        set_xattr(&p, "trusted.overlay.whiteout", b"");
        set_xattr(p.parent().unwrap(), "trusted.overlay.opaque", b"x");
        self
    }

    pub fn opaque(&self, layer: usize, path: &str) -> &Self {
        let p = self.at(layer, path);
        std::fs::create_dir_all(&p).unwrap();
        set_xattr(&p, "trusted.overlay.opaque", b"y");
        self
    }

    pub fn xattr(&self, layer: usize, path: &str, name: &str, value: &[u8]) -> &Self {
        set_xattr(&self.dirs[layer].join(path), name, value);
        self
    }

    pub fn fifo(&self, layer: usize, path: &str) -> &Self {
        self.mknod(layer, path, FileType::Fifo, 0o644)
    }

    /// Sets every time in every layer to [`OLD`], so what a test changes stands out.
    pub fn age(&self) {
        for d in &self.dirs {
            for e in walk(d) {
                set_times(&e, OLD);
            }
            set_times(d, OLD);
        }
    }
}

fn set_times(p: &Path, t: i64) {
    let ts = Timespec {
        tv_sec: t,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(rustix::fs::CWD, p, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(name).unwrap();
    rustix::fs::lsetxattr(p, &c, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// Every path below `root`, depth first, sorted.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

fn xattrs(p: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => n,
        Err(_) => return Vec::new(),
    };
    let mut out: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| keep(s))
        .map(|name| {
            let mut v = vec![0u8; 65536];
            let c = CString::new(name.clone()).unwrap();
            let len = rustix::fs::lgetxattr(p, &c, &mut v[..]).unwrap_or(0);
            format!("{name}={}", String::from_utf8_lossy(&v[..len]))
        })
        .collect();
    out.sort();
    out
}

/// A time as compared: the fixture's, or just "new".
fn when(t: i64) -> String {
    if t <= OLD {
        t.to_string()
    } else {
        "new".to_owned()
    }
}

/// One line per entry below `root`: what a user can see of it, hard links by group.
pub fn snapshot(root: &Path, keep_xattr: impl Fn(&str) -> bool + Copy) -> Vec<String> {
    let mut lines = Vec::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for p in walk(root) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let what = if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("symlink->{}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            format!(
                "file {} {}",
                md.len(),
                digest_of(
                    &std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
                )
            )
        } else if ft.is_char_device() && md.rdev() == 0 {
            "whiteout".to_owned()
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev {:x}", md.rdev())
        } else if ft.is_fifo() {
            "fifo".to_owned()
        } else {
            "socket".to_owned()
        };
        // overlayfs makes its whiteouts links of one inode: that is no hard link of the user's.
        if !ft.is_dir() && what != "whiteout" {
            inodes.entry(md.ino()).or_default().push(rel.clone());
        }
        let mode = if ft.is_symlink() {
            0
        } else {
            md.mode() & 0o7777
        };
        lines.push(format!(
            "{rel}: {what} mode={mode:o} owner={}:{} mtime={} xattrs={:?}",
            md.uid(),
            md.gid(),
            when(md.mtime()),
            xattrs(&p, keep_xattr)
        ));
    }
    for (_, paths) in inodes.into_iter().filter(|(_, p)| p.len() > 1) {
        lines.push(format!("linked: {}", paths.join(" = ")));
    }
    lines
}

/// Xattrs a user sees (everything the union shows).
pub fn any_xattr(_: &str) -> bool {
    true
}

/// Xattrs that matter in an upper dir: all but overlayfs's own bookkeeping (origin, impure,
/// …), which the diff leaves out; the opaque marker stays.
pub fn upper_xattr(name: &str) -> bool {
    !name.starts_with("trusted.overlay.") || name == "trusted.overlay.opaque"
}

/// The diff id of the layer an upper dir makes, mtimes clamped so that runs compare.
pub fn diff_id(upper: &Path) -> String {
    let mut tar = TarWriter::new(HashingWriter::new(std::io::sink()), Some(0));
    write_layer(upper, &mut tar).unwrap();
    let (_, digest, _) = tar.finish().unwrap().finish();
    digest.to_string()
}

/// Operations on a mounted union, each logging what it returned.
pub struct Ops<'a> {
    pub root: &'a Path,
    log: RefCell<Vec<String>>,
}

fn errno(e: &std::io::Error) -> String {
    rustix::io::Errno::from_io_error(e).map_or_else(|| e.to_string(), |e| format!("{e:?}"))
}

impl<'a> Ops<'a> {
    pub fn new(root: &'a Path) -> Self {
        Ops {
            root,
            log: RefCell::new(Vec::new()),
        }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn log(&self, line: String) {
        self.log.borrow_mut().push(line);
    }

    pub fn into_log(self) -> Vec<String> {
        self.log.into_inner()
    }

    fn done<T>(&self, what: &str, r: std::io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.log(format!("{what}: ok"));
                Some(v)
            }
            Err(e) => {
                self.log(format!("{what}: {}", errno(&e)));
                None
            }
        }
    }

    fn done_rx<T>(&self, what: &str, r: rustix::io::Result<T>) -> Option<T> {
        self.done(what, r.map_err(std::io::Error::from))
    }

    pub fn read(&self, rel: &str) {
        match std::fs::read(self.p(rel)) {
            Ok(d) => self.log(format!("read {rel}: {:?}", String::from_utf8_lossy(&d))),
            Err(e) => self.log(format!("read {rel}: {}", errno(&e))),
        }
    }

    pub fn write(&self, rel: &str, data: &str) {
        self.done(&format!("write {rel}"), std::fs::write(self.p(rel), data));
    }

    pub fn append(&self, rel: &str, data: &str) {
        use std::io::Write;
        let r = std::fs::OpenOptions::new()
            .append(true)
            .open(self.p(rel))
            .and_then(|mut f| f.write_all(data.as_bytes()));
        self.done(&format!("append {rel}"), r);
    }

    /// Writes in place at an offset (no truncation): a copy-up with data.
    pub fn write_at(&self, rel: &str, at: u64, data: &str) {
        use std::os::unix::fs::FileExt;
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(self.p(rel))
            .and_then(|f| f.write_all_at(data.as_bytes(), at));
        self.done(&format!("write {rel} at {at}"), r);
    }

    pub fn truncate(&self, rel: &str, len: u64) {
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(self.p(rel))
            .and_then(|f| f.set_len(len));
        self.done(&format!("truncate {rel} {len}"), r);
    }

    pub fn create_excl(&self, rel: &str) {
        let r = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.p(rel));
        self.done(&format!("create-excl {rel}"), r);
    }

    pub fn mkdir(&self, rel: &str, mode: u32) {
        use std::os::unix::fs::DirBuilderExt;
        let r = std::fs::DirBuilder::new().mode(mode).create(self.p(rel));
        self.done(&format!("mkdir {rel}"), r);
    }

    pub fn rmdir(&self, rel: &str) {
        self.done(&format!("rmdir {rel}"), std::fs::remove_dir(self.p(rel)));
    }

    pub fn unlink(&self, rel: &str) {
        self.done(&format!("unlink {rel}"), std::fs::remove_file(self.p(rel)));
    }

    pub fn rename(&self, from: &str, to: &str) {
        self.done(
            &format!("rename {from} {to}"),
            std::fs::rename(self.p(from), self.p(to)),
        );
    }

    pub fn rename2(&self, from: &str, to: &str, flags: RenameFlags) {
        let r = rustix::fs::renameat_with(
            rustix::fs::CWD,
            self.p(from),
            rustix::fs::CWD,
            self.p(to),
            flags,
        );
        self.done_rx(&format!("rename {from} {to} {flags:?}"), r);
    }

    /// `mv`: a rename, or where the union refuses it (`EXDEV`, as overlayfs does for
    /// directories with lower parts) a copy of the tree with everything kept, then a removal.
    pub fn mv(&self, from: &str, to: &str) {
        match std::fs::rename(self.p(from), self.p(to)) {
            Ok(()) => self.log(format!("mv {from} {to}: ok")),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // Like mv: an existing empty directory is replaced, a full one refused.
                if let Ok(mut entries) = std::fs::read_dir(self.p(to)) {
                    if entries.next().is_some() {
                        let e = std::io::Error::from_raw_os_error(libc::ENOTEMPTY);
                        return self.log(format!("mv {from} {to}: {}", errno(&e)));
                    }
                    std::fs::remove_dir(self.p(to)).unwrap();
                }
                copy_tree(&self.p(from), &self.p(to));
                std::fs::remove_dir_all(self.p(from)).unwrap();
                self.log(format!("mv {from} {to}: ok"));
            }
            Err(e) => self.log(format!("mv {from} {to}: {}", errno(&e))),
        }
    }

    pub fn symlink(&self, target: &str, rel: &str) {
        self.done(
            &format!("symlink {rel}"),
            std::os::unix::fs::symlink(target, self.p(rel)),
        );
    }

    pub fn link(&self, from: &str, to: &str) {
        self.done(
            &format!("link {from} {to}"),
            std::fs::hard_link(self.p(from), self.p(to)),
        );
    }

    pub fn chmod(&self, rel: &str, mode: u32) {
        let r = std::fs::set_permissions(self.p(rel), std::fs::Permissions::from_mode(mode));
        self.done(&format!("chmod {rel} {mode:o}"), r);
    }

    pub fn chown(&self, rel: &str, uid: u32, gid: u32) {
        self.done(
            &format!("chown {rel} {uid}:{gid}"),
            std::os::unix::fs::lchown(self.p(rel), Some(uid), Some(gid)),
        );
    }

    pub fn utimes(&self, rel: &str, t: i64) {
        let ts = Timespec {
            tv_sec: t,
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: ts,
            last_modification: ts,
        };
        let r = rustix::fs::utimensat(
            rustix::fs::CWD,
            self.p(rel),
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        );
        self.done_rx(&format!("utimes {rel} {t}"), r);
    }

    pub fn setxattr(&self, rel: &str, name: &str, value: &[u8]) {
        let c = CString::new(name).unwrap();
        let r = rustix::fs::lsetxattr(self.p(rel), &c, value, rustix::fs::XattrFlags::empty());
        self.done_rx(&format!("setxattr {rel} {name}"), r);
    }

    pub fn getxattr(&self, rel: &str, name: &str) {
        let c = CString::new(name).unwrap();
        let mut v = vec![0u8; 4096];
        match rustix::fs::lgetxattr(self.p(rel), &c, &mut v[..]) {
            Ok(n) => self.log(format!(
                "getxattr {rel} {name}: {:?}",
                String::from_utf8_lossy(&v[..n])
            )),
            Err(e) => self.log(format!("getxattr {rel} {name}: {e:?}")),
        }
    }

    pub fn removexattr(&self, rel: &str, name: &str) {
        let c = CString::new(name).unwrap();
        self.done_rx(
            &format!("removexattr {rel} {name}"),
            rustix::fs::lremovexattr(self.p(rel), &c),
        );
    }

    pub fn mkfifo(&self, rel: &str) {
        let r = rustix::fs::mknodat(
            rustix::fs::CWD,
            self.p(rel),
            FileType::Fifo,
            Mode::from_raw_mode(0o640),
            0,
        );
        self.done_rx(&format!("mkfifo {rel}"), r);
    }

    pub fn mknod_whiteout(&self, rel: &str) {
        let r = rustix::fs::mknodat(
            rustix::fs::CWD,
            self.p(rel),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        );
        self.done_rx(&format!("mknod 0/0 {rel}"), r);
    }

    /// The sorted names of a directory.
    pub fn ls(&self, rel: &str) {
        match std::fs::read_dir(self.p(rel)) {
            Ok(it) => {
                let mut names: Vec<String> = it
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                self.log(format!("ls {rel}: {names:?}"));
            }
            Err(e) => self.log(format!("ls {rel}: {}", errno(&e))),
        }
    }

    pub fn exists(&self, rel: &str) {
        let r = std::fs::symlink_metadata(self.p(rel));
        self.log(format!("exists {rel}: {}", r.is_ok()));
    }

    pub fn ino(&self, rel: &str) -> Option<u64> {
        std::fs::symlink_metadata(self.p(rel)).ok().map(|m| m.ino())
    }

    pub fn nlink(&self, rel: &str) {
        let r = std::fs::symlink_metadata(self.p(rel)).map(|m| m.nlink());
        match r {
            Ok(n) => self.log(format!("nlink {rel}: {n}")),
            Err(e) => self.log(format!("nlink {rel}: {}", errno(&e))),
        }
    }

    /// Whether two paths are one inode.
    pub fn same_inode(&self, a: &str, b: &str) {
        self.log(format!(
            "same inode {a} {b}: {}",
            self.ino(a).is_some() && self.ino(a) == self.ino(b)
        ));
    }

    /// Runs the shell `script` as `uid`:`gid` (no supplementary groups, no capabilities: a
    /// non-root writer), with `$F` the path of `rel`.
    pub fn sh_as(&self, uid: u32, gid: u32, rel: &str, script: &str) {
        use std::os::unix::process::CommandExt;
        let r = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("F", self.p(rel))
            .uid(uid)
            .gid(gid)
            .status();
        let what = format!("{script} on {rel} as {uid}");
        match r {
            Ok(s) => self.log(format!("{what}: {s}")),
            Err(e) => self.log(format!("{what}: {}", errno(&e))),
        }
    }

    /// Logs the permission bits of `rel`.
    pub fn mode(&self, rel: &str) {
        match std::fs::symlink_metadata(self.p(rel)) {
            Ok(md) => self.log(format!("mode {rel}: {:o}", md.mode() & 0o7777)),
            Err(e) => self.log(format!("mode {rel}: {}", errno(&e))),
        }
    }

    pub fn fsync(&self, rel: &str) {
        let r = std::fs::OpenOptions::new()
            .write(true)
            .open(self.p(rel))
            .and_then(|f| f.sync_all());
        self.done(&format!("fsync {rel}"), r);
    }
}

/// Copies a tree keeping modes, owners, xattrs, times and hard links (what `mv` does across
/// filesystems).
fn copy_tree(from: &Path, to: &Path) {
    let mut links: BTreeMap<u64, PathBuf> = BTreeMap::new();
    copy_entry(from, to, &mut links);
}

fn copy_entry(from: &Path, to: &Path, links: &mut BTreeMap<u64, PathBuf>) {
    let md = std::fs::symlink_metadata(from).unwrap();
    let ft = md.file_type();
    if !ft.is_dir() && md.nlink() > 1 {
        if let Some(first) = links.get(&md.ino()) {
            std::fs::hard_link(first, to).unwrap();
            return;
        }
        links.insert(md.ino(), to.to_owned());
    }
    if ft.is_dir() {
        std::fs::create_dir(to).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(from)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            copy_entry(&from.join(&n), &to.join(&n), links);
        }
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from).unwrap(), to).unwrap();
    } else if ft.is_file() {
        std::fs::copy(from, to).unwrap();
    } else {
        let kind = FileType::from_raw_mode(md.mode());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            to,
            kind,
            Mode::from_raw_mode(md.mode() & 0o7777),
            md.rdev(),
        )
        .unwrap();
    }
    std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid())).unwrap();
    if !ft.is_symlink() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777)).unwrap();
    }
    for x in xattrs(from, |n| {
        !n.starts_with("trusted.overlay.") && !n.starts_with("security.")
    }) {
        let (name, value) = x.split_once('=').unwrap();
        set_xattr(to, name, value.as_bytes());
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(rustix::fs::CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// What one driver did with one case.
#[derive(Debug)]
pub struct Outcome {
    pub ops: Vec<String>,
    pub merged: Vec<String>,
    pub upper: Vec<String>,
    pub diff_id: String,
}

/// The mounts a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Union {
    /// Kernel overlayfs, as strata mounts it.
    Kernel,
    /// strata's FUSE union as strata mounts it: file data passed through to the layer files
    /// where the kernel allows (Linux 6.9+, root).
    Fuse,
    /// The FUSE union with `passthrough=off`: the daemon serves every read and write, as it
    /// does for users without CAP_SYS_ADMIN and on older kernels.
    FuseDaemonIo,
}

impl Union {
    fn name(self) -> &'static str {
        match self {
            Union::Kernel => "overlay",
            Union::Fuse => "fuse",
            Union::FuseDaemonIo => "fuse-daemon-io",
        }
    }
}

/// A mounted [`Union`], unmounted by [`Mounted::unmount`].
enum Mounted {
    Driver(layerfs::mount::UnionMount),
    Daemon(layerfs::fuse::FuseMount),
}

impl Mounted {
    fn new(union: Union, spec: &UnionSpec, mnt: &Path) -> Mounted {
        let driver = match union {
            Union::Kernel => StorageDriver::Overlay,
            Union::Fuse => StorageDriver::Fuse,
            Union::FuseDaemonIo => {
                let opts = layerfs::fuse::UnionOptions {
                    lowers: spec.lowers.iter().rev().cloned().collect(),
                    upper: Some(spec.upper.clone()),
                    work: Some(spec.work.clone()),
                    threads: 0,
                    passthrough: false,
                };
                let program = layerfs::fuse::daemon_program().unwrap();
                return Mounted::Daemon(
                    layerfs::fuse::spawn(&program, &opts, mnt)
                        .unwrap_or_else(|e| panic!("mount {}: {e}", union.name())),
                );
            }
        };
        let m = mount_union(driver, spec, mnt).unwrap_or_else(|e| panic!("mount {driver}: {e}"));
        assert_eq!(m.driver(), driver, "{driver} was asked for");
        Mounted::Driver(m)
    }

    fn unmount(self) {
        match self {
            Mounted::Driver(m) => m.unmount().unwrap(),
            Mounted::Daemon(m) => m.unmount().unwrap(),
        }
    }
}

/// Mounts `layers` (bottom first) as `union` at a fresh mount point under `work`, runs `ops`,
/// snapshots the merged view, unmounts, and snapshots the upper dir.
pub fn run_on(union: Union, layers: &[PathBuf], work: &Path, ops: &dyn Fn(&Ops<'_>)) -> Outcome {
    let base = work.join(union.name());
    let (upper, wdir, mnt) = (base.join("upper"), base.join("work"), base.join("mnt"));
    for d in [&upper, &wdir, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    let spec = UnionSpec {
        lowers: layers.to_vec(),
        upper: upper.clone(),
        work: wdir,
    };
    let mounted = Mounted::new(union, &spec, &mnt);
    let o = Ops::new(&mnt);
    ops(&o);
    let merged = snapshot(&mnt, any_xattr);
    mounted.unmount();
    Outcome {
        ops: o.into_log(),
        merged,
        upper: snapshot(&upper, upper_xattr),
        diff_id: diff_id(&upper),
    }
}

/// What a case did on a read-only union (no upper dir) of `layers` mounted by `driver`: what
/// each operation returned, whether the mount reports itself read-only (`statvfs`), and the
/// merged view.
pub fn run_read_only(
    driver: StorageDriver,
    layers: &Layers,
    ops: &dyn Fn(&Ops<'_>),
) -> (Vec<String>, bool, Vec<String>) {
    layers.age();
    let mnt = layers.root.join("runs").join(format!("{driver}-ro"));
    std::fs::create_dir_all(&mnt).unwrap();
    let m = mount_union_readonly(driver, &layers.dirs, &mnt)
        .unwrap_or_else(|e| panic!("mount {driver} read-only: {e}"));
    assert_eq!(m.driver(), driver, "{driver} was asked for");
    let o = Ops::new(&mnt);
    ops(&o);
    let read_only = rustix::fs::statvfs(&mnt)
        .unwrap()
        .f_flag
        .contains(rustix::fs::StatVfsMountFlags::RDONLY);
    let merged = snapshot(&mnt, any_xattr);
    m.unmount().unwrap();
    (o.into_log(), read_only, merged)
}

/// Runs a case on kernel overlayfs and on the FUSE union over the same layers, and returns
/// both outcomes. The FUSE run is made twice, with passthrough and with the daemon serving
/// the file data, and the two must agree in every respect.
pub fn both(layers: &Layers, ops: &dyn Fn(&Ops<'_>)) -> (Outcome, Outcome) {
    layers.age();
    let work = layers.root.join("runs");
    let kernel = run_on(Union::Kernel, &layers.dirs, &work, ops);
    let fuse = run_on(Union::Fuse, &layers.dirs, &work, ops);
    let daemon_io = run_on(Union::FuseDaemonIo, &layers.dirs, &work, ops);
    assert_outcomes_equal(("FUSE", &fuse), ("FUSE with passthrough=off", &daemon_io));
    (kernel, fuse)
}

/// Asserts that the two outcomes are the same in every respect.
pub fn assert_same(kernel: &Outcome, fuse: &Outcome) {
    assert_outcomes_equal(("kernel overlayfs", kernel), ("FUSE", fuse));
}

fn assert_outcomes_equal((a_name, a): (&str, &Outcome), (b_name, b): (&str, &Outcome)) {
    let names = (a_name, b_name);
    assert_lines("operations", names, &a.ops, &b.ops);
    assert_lines("merged view", names, &a.merged, &b.merged);
    assert_lines("upper dir", names, &a.upper, &b.upper);
    assert_eq!(
        a.diff_id, b.diff_id,
        "the layers the upper dirs of {a_name} and {b_name} make differ"
    );
}

fn assert_lines(what: &str, (a_name, b_name): (&str, &str), a: &[String], b: &[String]) {
    if a != b {
        let mut report = String::new();
        let n = a.len().max(b.len());
        for i in 0..n {
            let x = a.get(i).map_or("<none>", String::as_str);
            let y = b.get(i).map_or("<none>", String::as_str);
            if x != y {
                report.push_str(&format!("line {i}:\n  {a_name}: {x}\n  {b_name}: {y}\n"));
            }
        }
        panic!("{what} differs between {a_name} and {b_name}:\n{report}");
    }
}

/// Asserts that each of `lines` is in an outcome's operation log.
pub fn assert_logged(outcome: &Outcome, lines: &[&str]) {
    for line in lines {
        assert!(
            outcome.ops.iter().any(|l| l == line),
            "{line:?} is not in the log: {:#?}",
            outcome.ops
        );
    }
}

/// Whether a file's bytes hash to `content`'s (for assertions on single files).
pub fn has_content(p: &Path, content: &str) -> bool {
    std::fs::read(p).is_ok_and(|d| d == content.as_bytes())
}

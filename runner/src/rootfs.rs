//! The container's filesystem, built by its init inside the container's own mount namespace
//! and then made its root with `pivot_root`:
//!
//! - the root: the image layers as an overlay (or a ready directory, bind-mounted), `nodev`;
//! - `/proc` (nosuid, nodev, noexec) for the container's pid namespace, with docker's masked
//!   paths (`/proc/kcore`, `/proc/keys`, … under `/dev/null` or an empty read-only tmpfs)
//!   and read-only paths (`/proc/sys`, `/proc/sysrq-trigger`, …);
//! - `/dev`: a `nodev` tmpfs where only `null zero full random urandom tty` are usable (each
//!   a bind mount of the host's node, so a device node made in the container cannot be
//!   opened: the role docker's device cgroup plays), a private `devpts`, `/dev/shm`,
//!   `/dev/mqueue`;
//! - `/sys` read-only;
//! - with `--privileged` (as docker): every host device node under `/dev` (bound like the
//!   others), `/sys` and `/sys/fs/cgroup` writable, nothing masked or read-only in `/proc`;
//! - the caller's bind mounts (`nodev`) and tmpfs mounts (`noexec`,
//!   `nosuid`, `nodev` unless asked otherwise); `/etc/hosts`, `/etc/hostname`
//!   and `/etc/resolv.conf` bind-mounted from a private tmpfs so they never end up in the
//!   image's layers.
//!
//! Every path inside the root is resolved with `openat2(RESOLVE_IN_ROOT)` (libpathrs) and
//! every mount is attached to a file descriptor (the new mount API), so a hostile image's
//! symlinks cannot point a mount at the host.

use std::fs::Permissions;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use pathrs::Root;
use rustix::fs::{CWD, FileType, Mode, OFlags};
use rustix::mount::MountAttrFlags;

use crate::cgroup::Layout;
use crate::error::{Error, IoContext, Result, SysContext, pathrs_io};
use crate::spec::{BindMount, DeviceMapping, Rootfs, Spec, TmpfsMount};
use crate::sys;

/// docker's masked paths: unreadable in the container.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// docker's read-only paths.
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The device nodes a container may use, bound from the host's.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks every /dev has.
const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
];

/// The files every container gets from the sandbox rather than from its image.
const ETC_FILES: &[&str] = &["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// The container's root, mounted and filled, before `pivot_root`.
pub(crate) struct PreparedRoot {
    /// The root of the root filesystem's mount.
    pub(crate) root: Root,
    /// Paths (in the container) that did not exist in the image and were made as mount
    /// points; the topmost missing component of each.
    pub(crate) created: Vec<String>,
}

impl PreparedRoot {
    /// Makes this root the root of the mount namespace.
    pub(crate) fn pivot(&self) -> Result<()> {
        sys::pivot_root_to(self.root.as_fd()).sys("pivot_root into the container's root")
    }
}

/// Mounts and fills the container's root filesystem. Runs in the container's init, in its
/// new mount namespace, before `pivot_root`. `in_userns`: strata runs unprivileged in a user
/// namespace of its own.
pub(crate) fn prepare(spec: &Spec, in_userns: bool) -> Result<PreparedRoot> {
    sys::make_mounts_private().sys("make the container's mounts private")?;
    let root_mount = mount_root(&spec.rootfs)?;
    let root = Root::from_fd(root_mount);
    let mut fs = Builder {
        root: &root,
        created: Vec::new(),
    };
    fs.mount_proc()?;
    fs.mount_dev(in_userns, spec.privileged, spec.shm_size)?;
    fs.mount_sys(spec.privileged)?;
    fs.mount_cgroups(spec.privileged)?;
    for d in &spec.devices {
        fs.device(d)?;
    }
    for m in &spec.mounts {
        fs.bind(m)?;
    }
    for m in &spec.tmpfs {
        fs.tmpfs(m)?;
    }
    fs.etc_files(spec)?;
    if !spec.privileged {
        fs.mask_paths()?;
        fs.read_only_paths()?;
    }
    fs.working_dir(&spec.cwd)?;
    let created = fs.created;
    if spec.read_only_rootfs {
        sys::set_mount_attrs(root.as_fd(), libc::MOUNT_ATTR_RDONLY, false)
            .sys("make the root filesystem read-only")?;
    }
    Ok(PreparedRoot { root, created })
}

/// The one place the container's root filesystem is mounted (a FUSE union would go here).
fn mount_root(rootfs: &Rootfs) -> Result<OwnedFd> {
    let fd = match rootfs {
        Rootfs::Union { layers, mountpoint } => {
            // Volatile (as every union strata mounts): no sync of the upper dir when the
            // container ends; the caller removes or commits it.
            layerfs::mount::mount_overlay(layers, mountpoint)?;
            rustix::fs::open(
                mountpoint,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .at("open the root filesystem", mountpoint)?
        }
        Rootfs::Dir(dir) => {
            let target = rustix::fs::open(
                dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .at("open the root filesystem", dir)?;
            let tree = sys::clone_mount(target.as_fd(), "", true)
                .at("bind-mount the root filesystem", dir)?;
            sys::attach_mount(tree.as_fd(), target.as_fd())
                .at("bind-mount the root filesystem", dir)?;
            tree
        }
    };
    let path = match rootfs {
        Rootfs::Union { mountpoint, .. } => mountpoint,
        Rootfs::Dir(dir) => dir,
    };
    // Device nodes in the image (or made in the container) cannot be opened.
    sys::set_mount_attrs(fd.as_fd(), libc::MOUNT_ATTR_NODEV, false).at("set nodev on", path)?;
    Ok(fd)
}

/// The attributes of a kernel filesystem mounted in the container: read-only unless
/// `writable`.
fn read_only_unless(writable: bool) -> MountAttrFlags {
    if writable {
        sys::DATA_ONLY
    } else {
        sys::DATA_ONLY | MountAttrFlags::MOUNT_ATTR_RDONLY
    }
}

/// Directories of the host's /dev whose nodes `--privileged` does not take: the container has
/// its own of each (or, for `fd`, a link).
const HOST_DEV_SKIPPED: &[&str] = &["pts", "shm", "mqueue", "fd"];

/// `--privileged`: binds every character and block device of the host's /dev, at the same
/// path, into the fresh /dev tmpfs `dev` (as docker creates them all), except those the
/// container has anyway.
fn bind_host_devices(dev: BorrowedFd<'_>) -> Result<()> {
    let host_dev = Path::new("/dev");
    let walk = walkdir::WalkDir::new(host_dev)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            e.depth() > 1
                || !e
                    .file_name()
                    .to_str()
                    .is_some_and(|n| HOST_DEV_SKIPPED.contains(&n))
        });
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(host_dev).to_owned();
            Error::io("read the host's", path, e.into())
        })?;
        let host = entry.path();
        let (Some(host_str), Ok(relative)) = (host.to_str(), host.strip_prefix(host_dev)) else {
            continue;
        };
        let Some(relative) = relative.to_str() else {
            continue;
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            match rustix::fs::mkdirat(dev, relative, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e).at("create", host),
            }
            continue;
        }
        if !(kind.is_char_device() || kind.is_block_device())
            || DEVICES.contains(&relative)
            || DEV_LINKS.iter().any(|(link, _)| *link == relative)
        {
            continue;
        }
        rustix::fs::openat(
            dev,
            relative,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .at("create", host)?;
        let node = sys::clone_mount(CWD, host_str, false).at("bind the host's", host)?;
        sys::attach_mount_at(node.as_fd(), dev, relative).at("bind the host's", host)?;
    }
    Ok(())
}

/// Mounts into one root, recording the mount points it had to create.
struct Builder<'a> {
    root: &'a Root,
    created: Vec<String>,
}

impl Builder<'_> {
    /// The directory `path`, created (mode `mode`) with its parents if missing.
    fn dir(&mut self, path: &str, mode: u32) -> Result<OwnedFd> {
        if let Some(fd) = self.existing(path)? {
            return Ok(fd);
        }
        self.record_missing(path);
        self.make_dirs(path, mode)
    }

    /// `mkdir -p` inside the root (libpathrs guards every step against symlink races).
    fn make_dirs(&self, path: &str, mode: u32) -> Result<OwnedFd> {
        self.root
            .mkdir_all(path, &Permissions::from_mode(mode))
            .map(OwnedFd::from)
            .map_err(|e| Error::io("create directory in the container", path, pathrs_io(&e)))
    }

    /// The file `path` (anything but a directory), created empty if missing.
    fn file(&mut self, path: &str) -> Result<OwnedFd> {
        if let Some(fd) = self.existing(path)? {
            let st = rustix::fs::fstat(&fd).at("stat in the container", Path::new(path))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                return Err(Error::Invalid(format!(
                    "{path} in the container is a directory, where a file is mounted"
                )));
            }
            return Ok(fd);
        }
        self.record_missing(path);
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = match self.existing(parent)? {
            Some(fd) => fd,
            None => self.make_dirs(parent, 0o755)?,
        };
        // One component, never followed, never an existing file: it stays in the root.
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
        rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(0o644))
            .at("create file in the container", Path::new(path))
    }

    /// `path` in the root (an `O_PATH` descriptor), if it exists.
    fn existing(&self, path: &str) -> Result<Option<OwnedFd>> {
        match sys::open_in_root(self.root.as_fd(), path, OFlags::PATH) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("resolve in the container", path, e)),
        }
    }

    /// Notes the topmost component of `path` that does not exist yet.
    fn record_missing(&mut self, path: &str) {
        let mut prefix = String::new();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            prefix.push('/');
            prefix.push_str(component);
            if matches!(self.existing(&prefix), Ok(None)) {
                self.created.push(prefix);
                return;
            }
        }
    }

    fn mount_proc(&mut self) -> Result<()> {
        let target = self.dir("/proc", 0o555)?;
        let proc = sys::new_mount("proc", &[], sys::DATA_ONLY).sys("mount /proc")?;
        sys::attach_mount(proc.as_fd(), target.as_fd()).sys("mount /proc")
    }

    fn mount_dev(
        &mut self,
        in_userns: bool,
        privileged: bool,
        shm_size: Option<u64>,
    ) -> Result<()> {
        let target = self.dir("/dev", 0o755)?;
        let dev = sys::new_mount(
            "tmpfs",
            &[("mode", Some("755")), ("size", Some("65536k"))],
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        )
        .sys("mount /dev")?;
        sys::attach_mount(dev.as_fd(), target.as_fd()).sys("mount /dev")?;
        let dev = dev.as_fd();
        for name in DEVICES {
            let host = format!("/dev/{name}");
            rustix::fs::openat(
                dev,
                *name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            )
            .at("create", Path::new(&host))?;
            let node =
                sys::clone_mount(CWD, &host, false).at("bind the host's", Path::new(&host))?;
            sys::attach_mount_at(node.as_fd(), dev, name)
                .at("bind the host's", Path::new(&host))?;
        }
        if privileged {
            bind_host_devices(dev)?;
        }
        let mut pts_options = vec![
            ("newinstance", None),
            ("ptmxmode", Some("0666")),
            ("mode", Some("0620")),
        ];
        if !in_userns {
            pts_options.push(("gid", Some("5"))); // the tty group of most images
        }
        self.submount(
            dev,
            "pts",
            0o755,
            "devpts",
            &pts_options,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )?;
        let shm_size = format!("{}k", shm_size.unwrap_or(64 << 20).div_ceil(1024));
        self.submount(
            dev,
            "shm",
            0o1777,
            "tmpfs",
            &[("mode", Some("1777")), ("size", Some(&shm_size))],
            sys::DATA_ONLY,
        )?;
        self.submount(dev, "mqueue", 0o755, "mqueue", &[], sys::DATA_ONLY)?;
        for (name, target) in DEV_LINKS {
            rustix::fs::symlinkat(*target, dev, *name)
                .at("create", Path::new("/dev").join(name).as_path())?;
        }
        Ok(())
    }

    /// Mounts a new `fstype` on directory `name` of the fresh /dev tmpfs `dev`.
    fn submount(
        &self,
        dev: BorrowedFd<'_>,
        name: &str,
        mode: u32,
        fstype: &str,
        options: &[(&str, Option<&str>)],
        attrs: MountAttrFlags,
    ) -> Result<()> {
        let path = Path::new("/dev").join(name);
        rustix::fs::mkdirat(dev, name, Mode::from_raw_mode(mode)).at("create", &path)?;
        let fs = sys::new_mount(fstype, options, attrs).at("mount", &path)?;
        sys::attach_mount_at(fs.as_fd(), dev, name).at("mount", &path)
    }

    fn mount_sys(&mut self, writable: bool) -> Result<()> {
        let target = self.dir("/sys", 0o555)?;
        let attrs = read_only_unless(writable);
        let sysfs = match sys::new_mount("sysfs", &[], attrs) {
            Ok(fs) => fs,
            // In a user namespace sharing the host's network, sysfs cannot be mounted: bind
            // the host's, read-only.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                let tree = sys::clone_mount(CWD, "/sys", true).sys("bind /sys")?;
                let readonly = if writable { 0 } else { libc::MOUNT_ATTR_RDONLY };
                sys::set_mount_attrs(
                    tree.as_fd(),
                    readonly
                        | libc::MOUNT_ATTR_NOSUID
                        | libc::MOUNT_ATTR_NODEV
                        | libc::MOUNT_ATTR_NOEXEC,
                    true,
                )
                .sys("bind /sys")?;
                tree
            }
            Err(e) => return Err(Error::sys("mount /sys", e)),
        };
        sys::attach_mount(sysfs.as_fd(), target.as_fd()).sys("mount /sys")
    }

    /// The host's cgroup hierarchies at /sys/fs/cgroup, read-only, as seen from the
    /// container's cgroup namespace (its own cgroup is their root), as docker mounts them.
    fn mount_cgroups(&mut self, writable: bool) -> Result<()> {
        let Some(target) = self.existing("/sys/fs/cgroup")? else {
            return Ok(());
        };
        let attrs = read_only_unless(writable);
        let path = Path::new("/sys/fs/cgroup");
        let (hierarchies, unified) = match Layout::detect() {
            Ok(Layout::V2(_)) => {
                let fs = sys::new_mount("cgroup2", &[], attrs).at("mount", path)?;
                return sys::attach_mount(fs.as_fd(), target.as_fd()).at("mount", path);
            }
            Ok(Layout::V1 {
                hierarchies,
                unified,
            }) => (hierarchies, unified),
            Err(_) => return Ok(()), // no cgroups on this host
        };
        let dir =
            sys::new_mount("tmpfs", &[("mode", Some("755"))], sys::DATA_ONLY).at("mount", path)?;
        sys::attach_mount(dir.as_fd(), target.as_fd()).at("mount", path)?;
        let mount_one = |name: String, fstype: &str, options: &[(&str, Option<&str>)]| {
            let sub = path.join(&name);
            rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o755))
                .at("create", &sub)?;
            let fs = sys::new_mount(fstype, options, attrs).at("mount", &sub)?;
            sys::attach_mount_at(fs.as_fd(), dir.as_fd(), &name).at("mount", &sub)
        };
        for (mount_point, options) in &hierarchies {
            // The hierarchy's own options: its controllers, `name=…`, `xattr`.
            let options: Vec<(&str, Option<&str>)> = options
                .iter()
                .filter(|o| *o != "rw" && *o != "ro")
                .map(|o| match o.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (o.as_str(), None),
                })
                .collect();
            // A hierarchy that cannot be seen from here is left out, not fatal.
            if let Err(e) = mount_one(file_name(mount_point), "cgroup", &options) {
                tracing::debug!("{e}");
            }
        }
        if let Some(u) = &unified
            && let Err(e) = mount_one(file_name(u), "cgroup2", &[])
        {
            tracing::debug!("{e}");
        }
        sys::set_mount_attrs(dir.as_fd(), libc::MOUNT_ATTR_RDONLY, false).at("mount", path)
    }

    fn bind(&mut self, m: &BindMount) -> Result<()> {
        let source = rustix::fs::open(&m.source, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .at("open bind mount source", &m.source)?;
        let is_dir =
            FileType::from_raw_mode(rustix::fs::fstat(&source).at("stat", &m.source)?.st_mode)
                == FileType::Directory;
        let target = if is_dir {
            self.dir(&m.destination, 0o755)?
        } else {
            self.file(&m.destination)?
        };
        let tree = sys::clone_mount(source.as_fd(), "", true).at("bind-mount", &m.source)?;
        let mut attrs = libc::MOUNT_ATTR_NODEV;
        if m.read_only {
            attrs |= libc::MOUNT_ATTR_RDONLY;
        }
        sys::set_mount_attrs(tree.as_fd(), attrs, true).at("bind-mount", &m.source)?;
        sys::attach_mount(tree.as_fd(), target.as_fd()).at("bind-mount", &m.source)
    }

    fn tmpfs(&mut self, m: &TmpfsMount) -> Result<()> {
        let path = Path::new(&m.destination);
        let target = self.dir(&m.destination, 0o755)?;
        let mut attrs = MountAttrFlags::empty();
        if !m.exec {
            attrs |= MountAttrFlags::MOUNT_ATTR_NOEXEC;
        }
        if !m.suid {
            attrs |= MountAttrFlags::MOUNT_ATTR_NOSUID;
        }
        if !m.dev {
            attrs |= MountAttrFlags::MOUNT_ATTR_NODEV;
        }
        if m.read_only {
            attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
        }
        let data: Vec<(&str, Option<&str>)> = m
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        let fs = sys::new_mount("tmpfs", &data, attrs).at("mount a tmpfs at", path)?;
        sys::attach_mount(fs.as_fd(), target.as_fd()).at("mount a tmpfs at", path)
    }

    /// /etc/hosts, /etc/hostname and /etc/resolv.conf, written into a private tmpfs and bound
    /// over the image's (unless the caller bind-mounts its own).
    fn etc_files(&mut self, spec: &Spec) -> Result<()> {
        let store = sys::new_mount(
            "tmpfs",
            &[("mode", Some("755")), ("size", Some("1m"))],
            sys::DATA_ONLY,
        )
        .sys("mount a tmpfs for /etc files")?;
        for path in ETC_FILES {
            if spec
                .mounts
                .iter()
                .any(|m| m.destination.trim_end_matches('/') == *path)
            {
                continue;
            }
            let name = &path["/etc/".len()..];
            let content = etc_file_content(name, spec);
            let mut file = std::fs::File::from(
                rustix::fs::openat(
                    store.as_fd(),
                    name,
                    OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .at("create", Path::new(path))?,
            );
            file.write_all(content.as_bytes())
                .at("write", Path::new(path))?;
            let target = self.file(path)?;
            let tree =
                sys::clone_mount(store.as_fd(), name, false).at("bind-mount", Path::new(path))?;
            sys::attach_mount(tree.as_fd(), target.as_fd()).at("bind-mount", Path::new(path))?;
        }
        Ok(())
    }

    /// `--device`: the host's node `d.host` bound at `d.container` (a bind mount keeps the
    /// host mount's attributes, so the node works on the `nodev` root and /dev).
    fn device(&mut self, d: &DeviceMapping) -> Result<()> {
        let st = rustix::fs::stat(&d.host).at("stat", &d.host)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if !matches!(kind, FileType::CharacterDevice | FileType::BlockDevice) {
            return Err(Error::Invalid(format!(
                "--device {}: not a character or block device",
                d.host.display()
            )));
        }
        let target = self.file(&d.container)?;
        let node = sys::clone_mount(CWD, &d.host.to_string_lossy(), false)
            .at("bind the host's", &d.host)?;
        sys::attach_mount(node.as_fd(), target.as_fd()).at("bind the host's", &d.host)
    }

    fn mask_paths(&mut self) -> Result<()> {
        for path in MASKED {
            let Some(target) = self.existing(path)? else {
                continue;
            };
            let st = rustix::fs::fstat(&target).at("stat in the container", Path::new(path))?;
            let cover = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                sys::new_mount(
                    "tmpfs",
                    &[("size", Some("0"))],
                    sys::DATA_ONLY | MountAttrFlags::MOUNT_ATTR_RDONLY,
                )
            } else {
                sys::clone_mount(CWD, "/dev/null", false)
            }
            .at("mask", Path::new(path))?;
            sys::attach_mount(cover.as_fd(), target.as_fd()).at("mask", Path::new(path))?;
        }
        Ok(())
    }

    fn read_only_paths(&mut self) -> Result<()> {
        for path in READ_ONLY {
            let Some(target) = self.existing(path)? else {
                continue;
            };
            let tree =
                sys::clone_mount(target.as_fd(), "", true).at("make read-only", Path::new(path))?;
            sys::set_mount_attrs(
                tree.as_fd(),
                libc::MOUNT_ATTR_RDONLY
                    | libc::MOUNT_ATTR_NOSUID
                    | libc::MOUNT_ATTR_NODEV
                    | libc::MOUNT_ATTR_NOEXEC,
                true,
            )
            .at("make read-only", Path::new(path))?;
            sys::attach_mount(tree.as_fd(), target.as_fd())
                .at("make read-only", Path::new(path))?;
        }
        Ok(())
    }

    /// Creates the working directory if missing (owned by root, as docker does).
    fn working_dir(&mut self, cwd: &str) -> Result<()> {
        if self.existing(cwd)?.is_none() {
            self.make_dirs(cwd, 0o755)?;
        }
        Ok(())
    }
}

/// The last component of `path`, as a string.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The content of the sandbox's own `/etc/NAME`.
fn etc_file_content(name: &str, spec: &Spec) -> String {
    match name {
        "hostname" => format!("{}\n", spec.hostname),
        "hosts" => hosts_file(spec),
        // The host's resolver configuration: with the host's network its resolvers (even a
        // loopback one) are reachable; without a network none are, whatever the file says.
        // `--dns` replaces its nameservers and keeps the rest, as docker does.
        _ => resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            &spec.dns,
        ),
    }
}

/// docker's /etc/hosts, with the container's hostname on the loopback address.
fn hosts_file(spec: &Spec) -> String {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    hosts.push_str(&format!("127.0.0.1\t{}\n", spec.hostname));
    for (name, address) in &spec.extra_hosts {
        hosts.push_str(&format!("{address}\t{name}\n"));
    }
    hosts
}

/// The host's `resolv.conf` with its nameservers replaced by `dns` (when any).
fn resolv_conf(host: &str, dns: &[String]) -> String {
    if dns.is_empty() {
        return host.to_owned();
    }
    let mut out: String = host
        .lines()
        .filter(|l| !l.trim_start().starts_with("nameserver"))
        .map(|l| format!("{l}\n"))
        .collect();
    for server in dns {
        out.push_str(&format!("nameserver {server}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_names_the_container() {
        let mut spec = Spec::new(Rootfs::Dir("/".into()), vec!["true".into()]);
        spec.hostname = "box1".into();
        let hosts = etc_file_content("hosts", &spec);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("127.0.0.1\tbox1\n"));
        assert_eq!(etc_file_content("hostname", &spec), "box1\n");
        spec.extra_hosts = vec![("db".into(), "10.0.0.5".into())];
        assert!(etc_file_content("hosts", &spec).ends_with("127.0.0.1\tbox1\n10.0.0.5\tdb\n"));
    }

    #[test]
    fn dns_replaces_the_hosts_nameservers_and_keeps_the_rest() {
        let host = "# generated\nnameserver 127.0.0.53\nsearch example.com\noptions edns0\n";
        assert_eq!(resolv_conf(host, &[]), host);
        assert_eq!(
            resolv_conf(host, &["1.1.1.1".into(), "9.9.9.9".into()]),
            "# generated\nsearch example.com\noptions edns0\nnameserver 1.1.1.1\nnameserver 9.9.9.9\n"
        );
    }
}

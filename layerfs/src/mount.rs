//! Union mounts of extracted layers: kernel overlayfs through the new mount API, so the number
//! of layers is not bounded by the one-page limit of the `lowerdir=` option string, or
//! strata's FUSE union filesystem ([`crate::fuse`]).
//!
//! [`mount_union`] is the one entry point: it mounts with the driver asked for, and when
//! overlayfs refuses (`EPERM`: no privilege; `EINVAL`: an upper filesystem or a layer count it
//! does not take; `ENODEV`: no overlayfs) it falls back to FUSE and says why in
//! [`UnionMount::fallback`] for the caller to print. The [`UnionMount`] it returns unmounts
//! when dropped, and stops the FUSE daemon; [`UnionMount::detach`] leaves it mounted.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::{Error, IoContext, Result};
use crate::layer::OverlayXattrs;

/// The layers of a union mount.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UnionSpec {
    /// Read-only layer dirs, bottom first.
    pub lowers: Vec<PathBuf>,
    /// The writable layer.
    pub upper: PathBuf,
    /// overlayfs's scratch dir, on the same filesystem as `upper`.
    pub work: PathBuf,
}

/// How union mounts are made (`--storage-driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageDriver {
    /// Kernel overlayfs, falling back to FUSE where it cannot be mounted.
    #[default]
    Overlay,
    /// strata's FUSE union filesystem.
    Fuse,
}

impl std::fmt::Display for StorageDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageDriver::Overlay => "overlay",
            StorageDriver::Fuse => "fuse",
        })
    }
}

/// A mounted union; unmounted (and its FUSE daemon stopped) when dropped.
#[derive(Debug)]
pub struct UnionMount {
    target: PathBuf,
    driver: StorageDriver,
    fallback: Option<String>,
    fuse: Option<crate::fuse::FuseMount>,
    mounted: bool,
}

impl UnionMount {
    /// A mount the kernel made at `target` (an overlay or a bind mount), no daemon behind it.
    fn kernel(driver: StorageDriver, target: &Path) -> UnionMount {
        UnionMount {
            target: target.to_owned(),
            driver,
            fallback: None,
            fuse: None,
            mounted: true,
        }
    }

    /// Where it is mounted.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The driver that mounted it.
    pub fn driver(&self) -> StorageDriver {
        self.driver
    }

    /// Why overlayfs was not used although asked for: one line for the user.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The FUSE daemon's pid.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.fuse.as_ref().and_then(crate::fuse::FuseMount::pid)
    }

    /// Leaves the union mounted after this handle and this process are gone (as `strata
    /// mount` does); [`unmount_union`] ends it. Returns the FUSE daemon's pid.
    pub fn detach(mut self) -> Option<u32> {
        self.mounted = false;
        self.fuse.take().and_then(crate::fuse::FuseMount::detach)
    }

    /// Unmounts it now (dropping it does the same, ignoring errors).
    pub fn unmount(mut self) -> Result<()> {
        self.end()
    }

    fn end(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.mounted) {
            return Ok(());
        }
        match self.fuse.take() {
            Some(f) => f.unmount(),
            None => unmount(&self.target),
        }
    }
}

impl Drop for UnionMount {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// Mounts the union `spec` at `target` with `driver`, falling back from overlayfs to FUSE
/// where overlayfs cannot be mounted.
pub fn mount_union(driver: StorageDriver, spec: &UnionSpec, target: &Path) -> Result<UnionMount> {
    mount_with_fallback(
        driver,
        || mount_overlay(spec, target),
        &crate::fuse::UnionOptions {
            lowers: spec.lowers.iter().rev().cloned().collect(),
            upper: Some(spec.upper.clone()),
            work: Some(spec.work.clone()),
            threads: 0,
            passthrough: true,
        },
        target,
    )
}

/// Mounts the layer dirs `lowers` (bottom first) read-only at `target` with `driver` (a
/// stage's files for `COPY --from` or `RUN --mount=from=…`), falling back from overlayfs to
/// FUSE as [`mount_union`] does. A single layer is bind-mounted read-only with either driver.
pub fn mount_union_readonly(
    driver: StorageDriver,
    lowers: &[PathBuf],
    target: &Path,
) -> Result<UnionMount> {
    if lowers.len() == 1 {
        mount_overlay_readonly(lowers, target)?;
        return Ok(UnionMount::kernel(driver, target));
    }
    mount_with_fallback(
        driver,
        || mount_overlay_readonly(lowers, target),
        &crate::fuse::UnionOptions {
            lowers: lowers.iter().rev().cloned().collect(),
            upper: None,
            work: None,
            threads: 0,
            passthrough: true,
        },
        target,
    )
}

/// Mounts with `overlay` when `driver` is overlayfs and it works; else, or when overlayfs
/// refuses the mount (EPERM, EINVAL, ENODEV), the FUSE union `fuse` at `target`.
fn mount_with_fallback(
    driver: StorageDriver,
    overlay: impl FnOnce() -> Result<()>,
    fuse: &crate::fuse::UnionOptions,
    target: &Path,
) -> Result<UnionMount> {
    let mut fallback = None;
    if driver == StorageDriver::Overlay {
        match overlay() {
            Ok(()) => return Ok(UnionMount::kernel(driver, target)),
            Err(Error::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EPERM | libc::EINVAL | libc::ENODEV)
                ) =>
            {
                fallback = Some(format!(
                    "overlayfs cannot be mounted here ({source}): using strata's FUSE union filesystem"
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let fuse = crate::fuse::spawn(&crate::fuse::daemon_program()?, fuse, target)?;
    Ok(UnionMount {
        target: target.to_owned(),
        driver: StorageDriver::Fuse,
        fallback,
        fuse: Some(fuse),
        mounted: true,
    })
}

/// Ends a union mounted earlier and detached (`strata umount`): unmounts it — lazily when it
/// is busy, and also when its FUSE daemon was killed and left it dead (`ENOTCONN`) — and
/// waits a while for the daemon `daemon_pid` to exit. Not mounted any more is not an error.
pub fn unmount_union(target: &Path, daemon_pid: Option<u32>) -> Result<()> {
    match unmount(target) {
        Ok(()) => {}
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::InvalidInput) => {}
        Err(e) => return Err(e),
    }
    if let Some(pid) = daemon_pid {
        let start = std::time::Instant::now();
        while process_runs(pid) && start.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    Ok(())
}

/// Whether process `pid` exists and has not exited (a zombie has).
fn process_runs(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Mounts `spec` at `target` with kernel overlayfs.
pub fn mount_overlay(spec: &UnionSpec, target: &Path) -> Result<()> {
    mount_overlay_layers(&spec.lowers, Some((&spec.upper, &spec.work)), target)
}

/// Mounts an overlay of `lowers` (bottom first) at `target`, writable when `upper_work` gives
/// an upper and a work dir, else read-only.
fn mount_overlay_layers(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<()> {
    match mount_overlay_fsconfig(lowers, upper_work) {
        Ok(mnt) => rustix::mount::move_mount(
            &mnt,
            "",
            CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .at("mount overlay on", target),
        // `lowerdir+` is Linux 6.8+; older kernels get the classic mount(2) with fd paths.
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            mount_overlay_legacy(lowers, upper_work, target)
        }
        Err(e) => Err(Error::io("mount overlay on", target, e.into())),
    }
}

/// A detached overlay mount of the layers, made with the new mount API.
fn mount_overlay_fsconfig(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
) -> rustix::io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_set_string(&fs, "source", "strata")?;
    for lower in lowers.iter().rev() {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower.as_path())?;
    }
    if let Some((upper, work)) = upper_work {
        rustix::mount::fsconfig_set_string(&fs, "upperdir", upper)?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", work)?;
    }
    for (k, v) in overlay_options() {
        rustix::mount::fsconfig_set_string(&fs, k, v)?;
    }
    if OverlayXattrs::for_this_process() == OverlayXattrs::User {
        rustix::mount::fsconfig_set_flag(&fs, "userxattr")?;
    }
    let attrs = if upper_work.is_some() {
        // Every union strata mounts is short-lived scratch (a build step, a container, a
        // mount until `umount`): no fsync per copied-up file. A committed layer is synced as
        // a whole.
        rustix::mount::fsconfig_set_flag(&fs, "volatile")?;
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    rustix::mount::fsconfig_create(&fs)?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
}

/// Features off: the layer dirs must stay plain overlay format that the diff understands, and
/// usable as lower dirs of later mounts.
fn overlay_options() -> [(&'static str, &'static str); 3] {
    [
        ("index", "off"),
        ("redirect_dir", "nofollow"),
        ("metacopy", "off"),
    ]
}

fn mount_overlay_legacy(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<()> {
    // Each lower is passed as /proc/self/fd/N: short, whatever the store's path.
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(lowers.len());
    for lower in lowers {
        let fd = rustix::fs::open(
            lower,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open layer", lower)?;
        fds.push(fd);
    }
    let lowers: Vec<String> = fds
        .iter()
        .rev()
        .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .collect();
    let mut data = format!("lowerdir={}", lowers.join(":"));
    if let Some((upper, work)) = upper_work {
        data.push_str(&format!(
            ",upperdir={},workdir={},volatile",
            upper.display(),
            work.display()
        ));
    }
    for (k, v) in overlay_options() {
        data.push_str(&format!(",{k}={v}"));
    }
    if OverlayXattrs::for_this_process() == OverlayXattrs::User {
        data.push_str(",userxattr");
    }
    let flags = if upper_work.is_some() {
        MountFlags::empty()
    } else {
        MountFlags::RDONLY
    };
    let data = std::ffi::CString::new(data).map_err(|_| {
        Error::Unsupported(format!(
            "{}: a layer path holds a NUL byte",
            target.display()
        ))
    })?;
    rustix::mount::mount("strata", target, "overlay", flags, data.as_c_str())
        .at("mount overlay on", target)
}

/// Mounts the layer dirs `lowers` (bottom first) read-only at `target`: an overlay of them, or
/// a read-only bind mount of the only one.
pub fn mount_overlay_readonly(lowers: &[PathBuf], target: &Path) -> Result<()> {
    match lowers {
        [] => Err(Error::Unsupported(format!(
            "{}: nothing to mount",
            target.display()
        ))),
        [only] => {
            rustix::mount::mount_bind(only.as_path(), target).at("bind-mount", target)?;
            rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                .at("make read-only", target)
        }
        _ => mount_overlay_layers(lowers, None, target),
    }
}

/// Runs `f` on a thread of its own, in a private mount namespace where `spec` is mounted at
/// `target`. Nothing of it is visible to the rest of the system, and the mount goes away with
/// the thread's namespace even if strata is killed before it can unmount.
pub fn with_private_mount<T: Send>(
    spec: &UnionSpec,
    target: &Path,
    f: impl FnOnce(&Path) -> T + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_private_mount_namespace()?;
            mount_overlay(spec, target)?;
            let out = f(target);
            unmount(target)?;
            Ok(out)
        })
        .join()
        .expect("the private-mount thread does not panic")
    })
}

/// Mounts a fresh tmpfs (mode 0700, no devices, no set-id, nothing executable) at the
/// directory `target`, for files that must never reach a disk. Meant for a private mount
/// namespace ([`enter_private_mount_namespace`]): it goes when the namespace does.
pub fn mount_private_tmpfs(target: &Path) -> Result<()> {
    rustix::mount::mount(
        "strata",
        target,
        "tmpfs",
        MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC,
        c"mode=0700",
    )
    .at("mount a tmpfs on", target)
}

/// Moves the calling thread into a mount namespace of its own whose mounts do not propagate
/// back to the host (it still sees the host's later mounts: a slave, not private).
pub fn enter_private_mount_namespace() -> Result<()> {
    // SAFETY: unshare(CLONE_NEWNS) only changes this thread's view of mounts (and its fs
    // struct, which CLONE_NEWNS implies unsharing); no memory is involved.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .at("unshare the mount namespace of", Path::new("/"))?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )
    .at("make mounts private under", Path::new("/"))
}

/// Unmounts `target`; a busy mount is detached (it goes once its last user does).
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::BUSY) => {
            rustix::mount::unmount(target, UnmountFlags::DETACH).at("unmount", target)
        }
        Err(e) => Err(Error::io("unmount", target, e.into())),
    }
}

/// Whether `path` is a mount point (listed in this mount namespace's mountinfo).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}

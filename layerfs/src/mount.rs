//! Union mounts of extracted layers: kernel overlayfs through the new mount API, so the number
//! of layers is not bounded by the one-page limit of the `lowerdir=` option string.

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

/// Mounts `spec` at `target` with kernel overlayfs.
pub fn mount_overlay(spec: &UnionSpec, target: &Path) -> Result<()> {
    match mount_overlay_fsconfig(spec, target) {
        Ok(()) => Ok(()),
        // `lowerdir+` is Linux 6.8+; older kernels get the classic mount(2) with fd paths.
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            mount_overlay_legacy(spec, target)
        }
        Err(e) => Err(Error::io("mount overlay on", target, e.into())),
    }
}

fn mount_overlay_fsconfig(spec: &UnionSpec, target: &Path) -> rustix::io::Result<()> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_set_string(&fs, "source", "strata")?;
    for lower in spec.lowers.iter().rev() {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower.as_path())?;
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", spec.upper.as_path())?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", spec.work.as_path())?;
    for (k, v) in overlay_options() {
        rustix::mount::fsconfig_set_string(&fs, k, v)?;
    }
    if OverlayXattrs::for_this_process() == OverlayXattrs::User {
        rustix::mount::fsconfig_set_flag(&fs, "userxattr")?;
    }
    // Every union strata mounts is short-lived scratch (a build step, a container, a mount
    // until `umount`): no fsync per copied-up file. A committed layer is synced as a whole.
    rustix::mount::fsconfig_set_flag(&fs, "volatile")?;
    rustix::mount::fsconfig_create(&fs)?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    rustix::mount::move_mount(
        &mnt,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
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

fn mount_overlay_legacy(spec: &UnionSpec, target: &Path) -> Result<()> {
    // Each lower is passed as /proc/self/fd/N: short, whatever the store's path.
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(spec.lowers.len());
    for lower in &spec.lowers {
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
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        spec.upper.display(),
        spec.work.display()
    );
    for (k, v) in overlay_options() {
        data.push_str(&format!(",{k}={v}"));
    }
    if OverlayXattrs::for_this_process() == OverlayXattrs::User {
        data.push_str(",userxattr");
    }
    data.push_str(",volatile");
    let data = std::ffi::CString::new(data).map_err(|_| {
        Error::Unsupported(format!(
            "{}: a layer path holds a NUL byte",
            target.display()
        ))
    })?;
    rustix::mount::mount(
        "strata",
        target,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
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
        _ => {
            let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
                .at("mount overlay on", target)?;
            let configure = || -> rustix::io::Result<()> {
                rustix::mount::fsconfig_set_string(&fs, "source", "strata")?;
                for lower in lowers.iter().rev() {
                    rustix::mount::fsconfig_set_string(&fs, "lowerdir+", lower.as_path())?;
                }
                if OverlayXattrs::for_this_process() == OverlayXattrs::User {
                    rustix::mount::fsconfig_set_flag(&fs, "userxattr")?;
                }
                rustix::mount::fsconfig_create(&fs)?;
                let mnt = rustix::mount::fsmount(
                    &fs,
                    FsMountFlags::FSMOUNT_CLOEXEC,
                    MountAttrFlags::MOUNT_ATTR_RDONLY,
                )?;
                rustix::mount::move_mount(
                    &mnt,
                    "",
                    CWD,
                    target,
                    MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
                )
            };
            configure().at("mount overlay on", target)
        }
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

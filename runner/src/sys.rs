//! The system-call layer: small named wrappers over what neither rustix nor nix covers, or
//! covers in a way the sandbox cannot use (new-API mounts onto file descriptors,
//! `clone3` into namespaces, the capability bounding set by number, seccomp without
//! `no_new_privs`). Everything else in the crate calls these by name.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, ResolveFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use crate::spec::TtySize;

/// Where a `fork`-like `clone3` returned.
pub(crate) enum Forked {
    /// In the parent: the child's pid and a pidfd for it.
    Parent { pid: i32, pidfd: OwnedFd },
    /// In the child.
    Child,
}

/// `clone3` with `flags` (namespace flags, `CLONE_PARENT`) and no new stack: the child goes
/// on from here with a copy of the address space, as after `fork`. Its parent gets `SIGCHLD`
/// when it ends, and the caller a pidfd.
///
/// # Safety
/// The calling process must be single-threaded: the child gets a copy of the memory of
/// this one thread only, and locks other threads held would stay locked forever in it.
pub(crate) unsafe fn fork_into(flags: u64) -> io::Result<Forked> {
    let mut pidfd: RawFd = -1;
    // SAFETY: clone_args is a plain C struct; all-zero is its documented default.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags | libc::CLONE_PIDFD as u64;
    args.pidfd = std::ptr::addr_of_mut!(pidfd) as u64;
    // With CLONE_PARENT the child inherits the exit signal of the caller (clone3 insists on 0).
    args.exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 {
        0
    } else {
        libc::SIGCHLD as u64
    };
    // SAFETY: with no stack given, clone3 behaves like fork: both processes return here on
    // their own copy of this stack. The caller guarantees the process is single-threaded.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            size_of::<libc::clone_args>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: pid as i32,
            // SAFETY: CLONE_PIDFD stored a new, owned descriptor in `pidfd`.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// Makes every mount of this (new) mount namespace private, so nothing mounted here
/// propagates back to the host's namespace.
pub(crate) fn make_mounts_private() -> io::Result<()> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(Into::into)
}

/// A new, detached mount of filesystem `fstype` with `options` (`key=value`, or a flag when
/// the value is `None`) and mount attributes `attrs`.
pub(crate) fn new_mount(
    fstype: &str,
    options: &[(&str, Option<&str>)],
    attrs: MountAttrFlags,
) -> io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (key, value) in options {
        match value {
            Some(v) => rustix::mount::fsconfig_set_string(&fs, *key, *v)?,
            None => rustix::mount::fsconfig_set_flag(&fs, *key)?,
        }
    }
    rustix::mount::fsconfig_create(&fs)?;
    Ok(rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        attrs,
    )?)
}

/// A detached copy of the mount tree at `path` relative to `dir` (of `dir` itself when
/// `path` is empty): a bind mount not yet attached anywhere.
pub(crate) fn clone_mount(dir: BorrowedFd<'_>, path: &str, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    if path.is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    Ok(rustix::mount::open_tree(dir, path, flags)?)
}

/// Sets mount attributes (`MOUNT_ATTR_*`) on the mount `mount` (and every mount below it
/// when `recursive`).
pub(crate) fn set_mount_attrs(
    mount: BorrowedFd<'_>,
    attrs: u64,
    recursive: bool,
) -> io::Result<()> {
    // SAFETY: mount_attr is a plain C struct; all-zero means "change nothing".
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = attrs;
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a valid empty C string, `attr` lives across the call and its size
    // is passed with it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags,
            std::ptr::addr_of_mut!(attr),
            size_of::<libc::mount_attr>(),
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the detached mount `mount` on top of `target` (an `O_PATH` handle of a file or
/// directory already resolved inside the container's root).
pub(crate) fn attach_mount(mount: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::mount::move_mount(
        mount,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?)
}

/// Attaches the detached mount `mount` at `path` below the directory `dir` (a directory
/// of a mount this process made, so no untrusted symlink is on the way).
pub(crate) fn attach_mount_at(
    mount: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    path: &str,
) -> io::Result<()> {
    Ok(rustix::mount::move_mount(
        mount,
        "",
        dir,
        path,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?)
}

/// Makes the mount `new_root` (a directory handle) the root of this mount namespace and
/// detaches the old root, the way runc does without a temporary directory.
pub(crate) fn pivot_root_to(new_root: BorrowedFd<'_>) -> io::Result<()> {
    rustix::process::fchdir(new_root)?;
    rustix::process::pivot_root(".", ".")?;
    // The old root is now stacked on "."; detach it, leaving the new root on top.
    rustix::mount::unmount(".", UnmountFlags::DETACH)?;
    rustix::process::chdir("/")?;
    Ok(())
}

/// Drops every capability whose number is not in `keep` from the bounding set, up to the
/// highest the kernel knows (including ones newer than this program).
pub(crate) fn drop_bounding_caps(keep: &[u32]) -> io::Result<()> {
    for cap in 0..64u32 {
        if keep.contains(&cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability of this kernel
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Installs a seccomp BPF program on this thread without setting `no_new_privs` (needs
/// CAP_SYS_ADMIN), as docker does: setuid programs in the container keep working.
pub(crate) fn install_seccomp(program: &[seccompiler::sock_filter]) -> io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const seccompiler::sock_filter,
    }
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            std::ptr::addr_of!(prog),
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor from 3 up except those in `keep`.
pub(crate) fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: RawFd = 3;
    for &k in &keep {
        if k > first {
            close_range(first as u32, (k - 1) as u32)?;
        }
        first = k + 1;
    }
    close_range(first as u32, u32::MAX)
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; no Rust object owns the ones in this range
    // (the caller keeps the ones it still uses out of it).
    let ret = unsafe { libc::close_range(first, last, 0) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `tty` (stdin of a new session leader) the controlling terminal.
pub(crate) fn set_controlling_tty(tty: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::process::ioctl_tiocsctty(tty)?)
}

/// Opens the terminal peer of the pseudo-terminal master `master` without a path lookup.
pub(crate) fn open_pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The window size of terminal `fd`, if it is one.
pub(crate) fn window_size(fd: BorrowedFd<'_>) -> Option<TtySize> {
    let ws = rustix::termios::tcgetwinsize(fd).ok()?;
    Some(TtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Sets the window size of terminal `fd`.
pub(crate) fn set_window_size(fd: BorrowedFd<'_>, size: TtySize) -> io::Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(fd, ws)?)
}

/// Brings the loopback interface of this network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket(2) call; the result is checked and owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is a plain C struct; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into `req`, which lives across the call.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            std::ptr::addr_of_mut!(req),
        )
    } == -1
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads `req`, which lives across the call.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            std::ptr::addr_of_mut!(req),
        )
    } == -1
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Undoes what a parent may have left in signal state: every signal unblocked and at its
/// default action (ignored signals would stay ignored across `exec`: Rust ignores SIGPIPE).
pub(crate) fn reset_signals() -> io::Result<()> {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition; invalid numbers just fail.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )?;
    Ok(())
}

/// Whether this process's working directory is inside its root (a directory reached through
/// a descriptor from outside, CVE-2024-21626 style, reads as unreachable).
pub(crate) fn cwd_is_reachable() -> bool {
    rustix::process::getcwd(Vec::new()).is_ok_and(|p| p.as_bytes().first() == Some(&b'/'))
}

/// `path` as a C string (for `exec`).
pub(crate) fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `path` inside the directory tree `root`, which acts as `/` for it: absolute
/// symlinks and `..` cannot leave it, and /proc magic links are refused
/// (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, Linux 5.6+).
pub(crate) fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// The (device, inode) of the file at `path` relative to `dir`, following symlinks.
pub(crate) fn file_identity(dir: BorrowedFd<'_>, path: &str) -> io::Result<(u64, u64)> {
    let st = rustix::fs::statat(dir, path, AtFlags::empty())?;
    Ok((st.st_dev, st.st_ino))
}

/// The (device, inode) of this process's own executable.
pub(crate) fn own_executable_identity() -> io::Result<(u64, u64)> {
    file_identity(CWD, "/proc/self/exe")
}

/// A descriptor as a borrowed one, for the few raw numbers that cross `exec` boundaries.
///
/// # Safety
/// `fd` must be open for as long as the result is used.
pub(crate) unsafe fn borrow_raw(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: guaranteed by the caller.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Duplicates `fd` onto descriptor number `target`, which then stays open across `exec`.
pub(crate) fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        // dup2 onto itself would keep CLOEXEC; clear it instead.
        let flags = rustix::io::fcntl_getfd(fd)?;
        rustix::io::fcntl_setfd(fd, flags - rustix::io::FdFlags::CLOEXEC)?;
        return Ok(());
    }
    // SAFETY: dup2 onto a fixed number; `target` (one of 0, 1, 2 or a number the caller
    // reserved) is owned by no Rust object.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Names this process `title` in /proc: its `comm`, and its command line, which would
/// otherwise show the caller's arguments to the container. The command line is rewritten in
/// place (as setproctitle does), so no capability is needed.
pub(crate) fn set_process_title(title: &str) -> io::Result<()> {
    rustix::thread::set_name(&cstring(title)?)?;
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields 48 and 49 (arg_start, arg_end) come after the parenthesized command name.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok());
    let (Some(start), Some(end)) = (field(48), field(49)) else {
        return Err(io::Error::from_raw_os_error(libc::ENODATA));
    };
    let len = end.saturating_sub(start);
    if len == 0 {
        return Ok(());
    }
    let title = &title.as_bytes()[..title.len().min(len - 1)];
    // SAFETY: [start, end) is this process's own argument area, on its stack, mapped
    // writable; no Rust reference points into it (std copies the arguments when asked).
    unsafe {
        std::ptr::write_bytes(start as *mut u8, 0, len);
    }
    // SAFETY: as above, and `title` is shorter than the area.
    unsafe {
        std::ptr::copy_nonoverlapping(title.as_ptr(), start as *mut u8, title.len());
    }
    Ok(())
}

/// Sets `CLOEXEC` on `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    Ok(rustix::io::fcntl_setfd(
        fd,
        flags | rustix::io::FdFlags::CLOEXEC,
    )?)
}

/// Sends signal `sig` to the process of `pidfd`.
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with no siginfo and no flags takes only integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new `CLOEXEC` duplicate of `fd` numbered at least `min`.
pub(crate) fn dup_above(fd: impl AsFd, min: RawFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, min)?)
}

/// Sets resource limit `resource` (an `RLIMIT_*`); `None` is unlimited.
pub(crate) fn set_rlimit(resource: i32, soft: Option<u64>, hard: Option<u64>) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: hard.unwrap_or(libc::RLIM_INFINITY),
    };
    // SAFETY: `limit` is a valid rlimit that setrlimit only reads; the resource number is
    // checked by the kernel.
    let r = unsafe { libc::setrlimit(resource as _, &limit) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Mount attributes for a filesystem that holds no programs or devices.
pub(crate) const DATA_ONLY: MountAttrFlags = MountAttrFlags::MOUNT_ATTR_NOSUID
    .union(MountAttrFlags::MOUNT_ATTR_NODEV)
    .union(MountAttrFlags::MOUNT_ATTR_NOEXEC);

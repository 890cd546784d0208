//! Mounting the union and serving it until it is unmounted: the daemon's main loop.
//!
//! As root the daemon opens `/dev/fuse` and mounts `fuse.strata-unionfs` itself, with
//! `allow_other`, `default_permissions`, and setuid files and device nodes working as they do
//! on overlayfs; otherwise `fusermount3` mounts it, which needs `/dev/fuse` open to the user
//! (a host that keeps it to root gets an error that says so). Several session threads each
//! read their own clone of the device fd. A union without an upper dir is mounted read-only,
//! as overlayfs mounts one: the kernel then refuses changes itself (EROFS), and reads and
//! listings do not make it forget atimes (each would cost a GETATTR at the next `stat`).
//!
//! A watcher thread ends the mount on SIGTERM or SIGINT, or when the strata process that
//! started the daemon goes away (its end of the control socket closes) unless it said
//! `detach`: it unmounts lazily, the session threads see the device close and the daemon
//! exits. A daemon killed outright leaves a mount whose accesses fail with `ENOTCONN`
//! (never one that hangs), which `strata umount` or any lazy unmount clears.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fuser::{Config, MountOption, Session, SessionACL};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::fs::{Access, Mode, OFlags};

use super::fs::{FsOptions, UnionFs};
use super::layers::Layers;
use super::options::UnionOptions;
use crate::error::{Error, IoContext, Result};

/// Where a detached daemon logs, in the work dir it is given.
const LOG_NAME: &str = "strata-unionfs.log";

/// The filesystem type a root-mounted union shows in `/proc/self/mountinfo`.
pub const FS_TYPE: &str = "fuse.strata-unionfs";

/// How many session threads serve requests by default.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        * 2
}

/// Mounts the union `opts` at `target` and serves it until it is unmounted. `control`,
/// when given, is told `ready` (or `error: …`) once the mount is up, and its peer closing
/// unmounts the union unless it sent `detach` first.
pub fn serve(opts: &UnionOptions, target: &Path, control: Option<UnixStream>) -> Result<()> {
    let mut control = control;
    let result = mount_and_serve(opts, target, &mut control);
    if let (Err(e), Some(c)) = (&result, control.as_mut()) {
        let _ = writeln!(c, "error: {e}");
    }
    result
}

fn mount_and_serve(
    opts: &UnionOptions,
    target: &Path,
    control: &mut Option<UnixStream>,
) -> Result<()> {
    opts.validate().map_err(|reason| {
        Error::io("mount FUSE union on", target, std::io::Error::other(reason))
    })?;
    let upper = opts.upper.as_deref().zip(opts.work.as_deref());
    let layers = Layers::open(&opts.lowers, upper)
        .map_err(|(path, e)| Error::io("open layer", path, e.into()))?;
    let fs = UnionFs::new(
        layers,
        FsOptions {
            passthrough: opts.passthrough,
        },
    )
    .map_err(|e| Error::io("open union for", target, e.into()))?;
    let notifier = fs.notifier_slot();

    // Every thread started from here on has these blocked: the watcher reads them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .map_err(|e| Error::io("block signals for", target, e.into()))?;
    let mut ignore = SigSet::empty();
    ignore.add(Signal::SIGHUP);
    let _ = ignore.thread_block();

    let mut config = Config::default();
    config.n_threads = Some(if opts.threads > 0 {
        opts.threads
    } else {
        default_threads()
    });
    config.clone_fd = true;
    let root = rustix::process::geteuid().is_root();
    let read_only = opts.upper.is_none();
    let session = if root {
        let dev = mount_as_root(&fs, target, read_only)?;
        config.acl = SessionACL::All;
        Session::from_fd(fs, dev, SessionACL::All, config).inspect_err(|_| {
            let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
        })
    } else {
        // fuser opens the device itself before mounting (through fusermount3 once mount(2) is
        // refused), and fusermount3 too opens it as the user: where only root may (some
        // images make it 0600), say so rather than fail with a bare EACCES.
        if let Err(e) = rustix::fs::access("/dev/fuse", Access::READ_OK | Access::WRITE_OK) {
            return Err(Error::Unsupported(format!(
                "an unprivileged FUSE mount needs read-write access to /dev/fuse, which this \
                 host does not give this user ({e})"
            )));
        }
        config.mount_options = vec![
            MountOption::FSName("strata".to_owned()),
            MountOption::Subtype("strata-unionfs".to_owned()),
            MountOption::DefaultPermissions,
        ];
        if read_only {
            config.mount_options.push(MountOption::RO);
        }
        Session::new(fs, target, &config)
    }
    .at("start FUSE session on", target)?;
    let _ = notifier.set(session.notifier());

    if let Some(c) = control.as_mut() {
        c.write_all(b"ready\n").at("report readiness for", target)?;
    }
    let (stop_tx, stop_rx) = UnixStream::pair().at("create socket for", target)?;
    let watcher = {
        let watched = target.to_owned();
        let log = opts.work.as_ref().map(|w| w.join(LOG_NAME));
        let control = control.take();
        std::thread::Builder::new()
            .name("unionfs-watch".to_owned())
            .spawn(move || watch(&watched, signals, control, &stop_rx, root, log.as_deref()))
            .at("start watcher for", target)?
    };
    let served = session.run().at("serve FUSE union on", target);
    drop(stop_tx);
    let _ = watcher.join();
    served
}

/// Opens `/dev/fuse` and mounts it at `target` (read-only if `read_only`); returns the device
/// fd.
fn mount_as_root(fs: &UnionFs, target: &Path, read_only: bool) -> Result<OwnedFd> {
    let dev = rustix::fs::open("/dev/fuse", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .at("open", Path::new("/dev/fuse"))?;
    let root_mode = fs.root_mode().at("stat the root of", target)?;
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},allow_other,default_permissions",
        dev.as_raw_fd(),
        root_mode,
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let data = std::ffi::CString::new(data).expect("no NUL in numbers");
    let flags = if read_only {
        rustix::mount::MountFlags::RDONLY
    } else {
        rustix::mount::MountFlags::empty()
    };
    rustix::mount::mount("strata", target, FS_TYPE, flags, data.as_c_str())
        .at("mount FUSE union on", target)?;
    Ok(dev)
}

/// Waits for a reason to end the mount, then unmounts it lazily.
fn watch(
    target: &Path,
    signals: SigSet,
    control: Option<UnixStream>,
    stop: &UnixStream,
    root: bool,
    log: Option<&Path>,
) {
    let Ok(sfd) = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC) else {
        return;
    };
    let mut control = control.map(BufReader::new);
    loop {
        let mut fds = vec![
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(c) = &control {
            fds.push(PollFd::new(c.get_ref().as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let fired = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        let (sig, stopped) = (fired(&fds[0]), fired(&fds[1]));
        let peer = fds.get(2).is_some_and(fired);
        drop(fds);
        if stopped {
            return; // the session ended on its own (unmounted from outside)
        }
        if peer {
            let mut line = String::new();
            let c = control.as_mut().expect("polled");
            match c.read_line(&mut line) {
                Ok(n) if n > 0 && line.trim() == "detach" => {
                    control = None;
                    if let Some(log) = log {
                        log_to(log);
                    }
                    continue;
                }
                Ok(n) if n > 0 => continue,
                _ => {} // the peer is gone: end the mount
            }
        } else if !sig {
            continue;
        }
        unmount_lazily(target, root);
        return;
    }
}

/// Sends what the daemon says from now on to `path`.
fn log_to(path: &Path) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(f) = file {
        let _ = rustix::stdio::dup2_stderr(&f);
    }
}

fn unmount_lazily(target: &Path, root: bool) {
    if root {
        let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
    } else {
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg("--")
            .arg(target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The name the daemon runs under (its `argv[0]`): a multi-call `strata` binary serves the
/// union when started under this name.
pub const DAEMON_NAME: &str = "strata-unionfs";

static DAEMON_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Makes `program` the daemon of every FUSE union this process mounts (the `strata` binary
/// names itself: the daemon is strata, re-executed). The first call wins.
pub fn set_daemon_program(program: PathBuf) {
    let _ = DAEMON_PROGRAM.set(program);
}

/// Resolves the daemon binary: `$STRATA_UNIONFS_BIN`, else what [`set_daemon_program`] set,
/// else `strata-unionfs` or `strata` beside the running executable (or one level up, for test
/// binaries under `deps/`), else on `PATH`. It is started as [`DAEMON_NAME`].
pub fn daemon_program() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_UNIONFS_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = DAEMON_PROGRAM.get() {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.iter().flat_map(|e| {
        let dir = e.parent().map(Path::to_owned);
        [
            dir.clone(),
            dir.and_then(|d| d.parent().map(Path::to_owned)),
        ]
    });
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in beside.flatten().chain(on_path) {
        for name in [DAEMON_NAME, "strata"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Error::Unsupported(format!(
        "strata's FUSE union filesystem daemon ({DAEMON_NAME} or strata) is neither beside {} \
         nor on PATH",
        exe.map_or_else(|| "this program".to_owned(), |e| e.display().to_string())
    )))
}

//! Starting the union's daemon (strata itself, re-executed under the name
//! [`DAEMON_NAME`](super::DAEMON_NAME)) and the handle that ends it.
//!
//! The daemon gets one end of a socket pair: it says `ready` once the union is mounted (or
//! why not), and it unmounts when the other end closes, so a strata that dies, however it
//! dies, takes its mounts with it. [`FuseMount::detach`] is for mounts that must outlive the
//! command that made them (`strata mount`).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::options::UnionOptions;
use crate::error::{Error, IoContext, Result};

/// How long a daemon may take to mount.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long ending a mount waits for its daemon to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A union served by a daemon process; unmounted when dropped (unless detached).
#[derive(Debug)]
pub struct FuseMount {
    target: PathBuf,
    child: Option<Child>,
    control: Option<UnixStream>,
}

/// Starts `program` (strata, or a `strata-unionfs`) as [`DAEMON_NAME`](super::DAEMON_NAME)
/// to mount the union `opts` at `target`, and returns once it is mounted.
pub fn spawn(program: &Path, opts: &UnionOptions, target: &Path) -> Result<FuseMount> {
    let (ours, theirs) = UnixStream::pair().at("create control socket for", target)?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.arg0(super::DAEMON_NAME)
        .arg("-f")
        .arg("-o")
        .arg(OsStr::from_bytes(&opts.to_option_string()))
        .arg("--control-fd")
        .arg(fd.to_string())
        .arg(target)
        // Nothing reads the daemon's output: a mount may outlive whoever started it, and an
        // inherited pipe would keep that caller waiting for EOF. Failures to mount come back on
        // the control socket; a detached daemon logs to its work dir.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Runs in the child between fork and exec: only async-signal-safe syscalls.
    let hook = move || -> std::io::Result<()> {
        // A session of its own: the terminal's signals are for strata, not its mounts.
        let _ = rustix::process::setsid();
        // SAFETY: `fd` is the daemon's end of the socket pair, open in the parent (and so in
        // this forked child) until after the spawn.
        let theirs = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(theirs, rustix::io::FdFlags::empty())?;
        Ok(())
    };
    // SAFETY: `hook` makes only async-signal-safe syscalls and allocates nothing.
    unsafe {
        cmd.pre_exec(hook);
    }
    let child = cmd.spawn().at("start", program)?;
    drop(theirs);
    let mut mount = FuseMount {
        target: target.to_owned(),
        child: Some(child),
        control: Some(ours),
    };
    match mount.wait_ready() {
        Ok(()) => Ok(mount),
        Err(e) => {
            mount.control = None;
            mount.reap(EXIT_TIMEOUT);
            Err(e)
        }
    }
}

impl FuseMount {
    fn wait_ready(&mut self) -> Result<()> {
        let control = self.control.as_ref().expect("set at spawn");
        control
            .set_read_timeout(Some(READY_TIMEOUT))
            .at("wait for the daemon of", &self.target)?;
        let mut line = String::new();
        let read = BufReader::new(control).read_line(&mut line);
        match (read, line.trim()) {
            (Ok(_), "ready") => Ok(()),
            (Ok(_), msg) if msg.starts_with("error: ") => Err(Error::io(
                "mount FUSE union on",
                &self.target,
                std::io::Error::other(msg["error: ".len()..].to_owned()),
            )),
            (Err(e), _) => Err(Error::io("wait for the FUSE daemon of", &self.target, e)),
            _ => {
                let status = self.child.as_mut().and_then(|c| c.wait().ok());
                Err(Error::io(
                    "mount FUSE union on",
                    &self.target,
                    std::io::Error::other(format!(
                        "the daemon exited before mounting ({})",
                        status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string())
                    )),
                ))
            }
        }
    }

    /// Where the union is mounted.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Leaves the union mounted when this handle (and this process) is gone; returns the
    /// daemon's pid. `strata umount` (or any unmount) ends it. The daemon then logs to
    /// `WORKDIR/strata-unionfs.log`.
    pub fn detach(mut self) -> Option<u32> {
        if let Some(c) = self.control.as_mut() {
            let _ = c.write_all(b"detach\n");
        }
        self.control = None;
        self.child.take().map(|c| c.id())
    }

    /// Unmounts the union and waits (a while) for the daemon to exit.
    pub fn unmount(mut self) -> Result<()> {
        self.end()
    }

    fn end(&mut self) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        let res = match crate::mount::unmount(&self.target) {
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::InvalidInput) => Ok(()),
            r => r,
        };
        // Closing our end also tells the daemon to go, should the unmount have failed.
        self.control = None;
        self.reap(EXIT_TIMEOUT);
        res
    }

    /// Waits up to `limit` for the daemon to exit. One still serving files that processes
    /// hold open after a lazy unmount exits by itself when they close them.
    fn reap(&mut self, limit: Duration) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let start = Instant::now();
        while start.elapsed() < limit {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    self.child = None;
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        // Still serving: it exits on its own once the last open file closes.
        self.child = None;
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

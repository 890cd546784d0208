//! A running container: [`Child`] is to a container what `std::process::Child` is to a
//! process. Dropping it before it was waited for kills the container (its init, and with it
//! the whole pid namespace), reaps the init and removes the cgroup: no process, mount or
//! cgroup outlives it, also when the caller errors out.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::process::{WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::channel::{Channel, Exit, Message};
use crate::error::{Error, Result, SysContext};
use crate::spec::TtySize;
use crate::sys;
use crate::userns;

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// How its command ended.
    pub exit: Exit,
    /// Whether the kernel's OOM killer killed a process of the container (its memory
    /// limit was reached).
    pub oom_killed: bool,
}

impl ExitStatus {
    /// The shell's view: the exit code, or 128 + the number of the signal that killed it.
    pub fn code(&self) -> i32 {
        match self.exit {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }

    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exit {
            Exit::Code(c) => write!(f, "exit code {c}")?,
            Exit::Signal(s) => write!(f, "killed by signal {s} ({})", signal_name(s))?,
        }
        if self.oom_killed {
            f.write_str(", out of memory")?;
        }
        Ok(())
    }
}

/// The name of signal `sig` (`SIGKILL`), or its number.
fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned())
}

/// A started container.
#[derive(Debug)]
pub struct Child {
    /// The init's pid (in the caller's pid namespace).
    pid: i32,
    pidfd: OwnedFd,
    pub(crate) channel: Channel,
    cgroup: Option<Cgroup>,
    /// The reading end of the command's stdout, with [`crate::Output::Piped`].
    pub stdout: Option<File>,
    /// The reading end of the command's stderr, with [`crate::Output::Piped`].
    pub stderr: Option<File>,
    pub(crate) terminal: Option<File>,
    created: Vec<String>,
    /// The overlay work dir to empty once the container is gone.
    overlay_work: Option<PathBuf>,
    /// How the command ended, as the init reported it.
    pub(crate) exit: Option<Exit>,
    /// The init's own wait status once reaped.
    init_status: Option<Exit>,
    status: Option<ExitStatus>,
}

impl Child {
    pub(crate) fn new(
        pid: i32,
        pidfd: OwnedFd,
        channel: Channel,
        cgroup: Option<Cgroup>,
        stdout: Option<File>,
        stderr: Option<File>,
    ) -> Child {
        Child {
            pid,
            pidfd,
            channel,
            cgroup,
            stdout,
            stderr,
            terminal: None,
            created: Vec::new(),
            overlay_work: None,
            exit: None,
            init_status: None,
            status: None,
        }
    }

    /// Empties `work` (an overlay work dir) once the container is gone.
    pub(crate) fn set_overlay_work(&mut self, work: PathBuf) {
        self.overlay_work = Some(work);
    }

    /// Joins the init to its cgroup and user namespace maps, lets it go on (when it waits
    /// for that: `go`), and waits until the command was executed (or setting up failed).
    pub(crate) fn start(&mut self, in_userns: bool, go: bool) -> Result<()> {
        if let Some(cgroup) = &self.cgroup {
            cgroup.add(self.pid)?;
        }
        if in_userns {
            userns::write_id_maps(self.pid)?;
        }
        if go {
            self.channel.send(&Message::Go, None)?;
        }
        loop {
            match self.channel.recv()? {
                Some((Message::Terminal, Some(master))) => self.terminal = Some(File::from(master)),
                Some((Message::Started { created }, _)) => {
                    self.created = created;
                    return Ok(());
                }
                Some((Message::Failed(remote), _)) => return Err(remote.into()),
                Some((other, _)) => {
                    return Err(Error::Setup(format!(
                        "unexpected control message {other:?}"
                    )));
                }
                None => {
                    let status = self.reap()?;
                    return Err(Error::Setup(format!(
                        "the container's init ended during setup ({})",
                        ExitStatus {
                            exit: status,
                            oom_killed: false
                        }
                    )));
                }
            }
        }
    }

    /// The container init's process id, in the caller's pid namespace.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// The pseudo-terminal master of the command's terminal (with a `tty` spec): what the
    /// command writes can be read from it, and what is written to it is the command's input.
    pub fn terminal(&self) -> Option<&File> {
        self.terminal.as_ref()
    }

    /// Tells the command's terminal its new window size (the command gets SIGWINCH).
    pub fn resize_terminal(&self, size: TtySize) -> Result<()> {
        match &self.terminal {
            Some(t) => sys::set_window_size(t.as_fd(), size).sys("set the window size"),
            None => Ok(()),
        }
    }

    /// The paths (inside the container) that the image lacked and the sandbox created as
    /// mount points, topmost first: a builder removes them from the upper layer.
    pub fn created_mountpoints(&self) -> &[String] {
        &self.created
    }

    /// Sends signal `sig` to the command (the init forwards it). A container that already
    /// ended gets nothing.
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.init_status.is_some() {
            return Ok(());
        }
        match sys::pidfd_signal(self.pidfd.as_fd(), sig) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other.sys("signal the container"),
        }
    }

    /// Kills the whole container at once (SIGKILL to its init: the kernel kills everything
    /// else in its pid namespace).
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Waits for the container to end, then removes its cgroup. Read piped output before
    /// (or beside) waiting, or a command that fills the pipe never ends.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        while !self.on_channel_readable()? {}
        self.finish()
    }

    /// Handles one message from the init; `true` once the channel is closed (the init ended).
    pub(crate) fn on_channel_readable(&mut self) -> Result<bool> {
        match self.channel.recv()? {
            None => Ok(true),
            Some((Message::Exited(exit), _)) => {
                self.exit = Some(exit);
                Ok(false)
            }
            Some(_) => Ok(false),
        }
    }

    /// Reaps the init and works out how the container ended.
    pub(crate) fn finish(&mut self) -> Result<ExitStatus> {
        let init = self.reap()?;
        // No report from the init: it was killed itself (by `kill`, or by the OOM killer).
        let exit = self.exit.unwrap_or(init);
        let oom_killed = self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
        if let Some(mut cgroup) = self.cgroup.take() {
            cgroup.remove()?;
        }
        if let Some(work) = self.overlay_work.take() {
            empty_dir(&work)?;
        }
        let status = ExitStatus { exit, oom_killed };
        self.status = Some(status);
        Ok(status)
    }

    /// Waits for the init itself to exit and reaps it.
    fn reap(&mut self) -> Result<Exit> {
        if let Some(s) = self.init_status {
            return Ok(s);
        }
        let status = loop {
            match rustix::process::waitid(WaitId::PidFd(self.pidfd.as_fd()), WaitIdOptions::EXITED)
            {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other.sys("wait for the container's init")?,
            }
        };
        let exit = match status {
            Some(s) => match (s.exit_status(), s.terminating_signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                _ => Exit::Code(0),
            },
            None => Exit::Code(0),
        };
        self.init_status = Some(exit);
        Ok(exit)
    }

    pub(crate) fn channel_fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }
}

/// Removes everything inside `dir` (overlayfs's work files and its `volatile` marker).
/// overlayfs makes them mode 000: an unprivileged caller (their owner) opens them up first.
fn empty_dir(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io("read directory", dir, e))?
            .path();
        open_up(&path);
        layerfs::store::remove_tree(&path)?;
    }
    Ok(())
}

/// Gives the owner full access to the directories under `path` (best effort).
fn open_up(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|md| md.is_dir());
    if !is_dir {
        return;
    }
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        open_up(&entry.path());
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.init_status.is_none() {
            let _ = self.kill();
            if let Err(e) = self.reap() {
                tracing::warn!("{e}");
            }
        }
        // Only once the container is surely gone: its overlay uses the work dir.
        if let (Some(work), Some(_)) = (self.overlay_work.take(), self.init_status) {
            let _ = empty_dir(&work);
        }
        // The cgroup, if any, removes itself (after killing what is left in it) when dropped.
    }
}

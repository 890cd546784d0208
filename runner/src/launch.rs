//! Starting a container: [`Command`] is to a container what `std::process::Command` is to a
//! process.
//!
//! The container's init is forked straight from the caller when the caller is
//! single-threaded (`strata run`). A multi-threaded caller (the builder, with its progress
//! thread) must not fork into code that allocates: it starts a fresh single-threaded copy of
//! strata instead (the setup helper, on the host side, before any namespace), which forks the
//! init as the caller's own child (`CLONE_PARENT`) and exits. Either way the caller then
//! holds a pidfd of the init and the control channel to it, joins it to its cgroup, writes
//! its user namespace maps, and lets it go on.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::cgroup::Cgroup;
use crate::channel::{Channel, Message};
use crate::child::Child;
use crate::error::{Error, IoContext, Result, SysContext};
use crate::init::{self, InitContext};
use crate::spec::{Network, Spec};
use crate::sys::{self, Forked};
use crate::userns;

/// The `argv[0]` that makes a strata binary act as the setup helper (see
/// [`run_setup_helper_if_requested`]).
const HELPER_ARG0: &str = "strata-runner-setup";

/// The descriptor number the helper finds its control channel at.
const HELPER_CHANNEL_FD: i32 = 3;

/// Where the command's stdin comes from.
#[derive(Debug)]
pub enum Input {
    /// `/dev/null`.
    Null,
    /// The caller's own stdin.
    Inherit,
    /// This descriptor.
    Fd(OwnedFd),
}

/// Where the command's stdout or stderr goes.
#[derive(Debug)]
pub enum Output {
    /// The caller's own stdout or stderr.
    Inherit,
    /// `/dev/null`.
    Null,
    /// A pipe whose reading end is [`Child::stdout`] or [`Child::stderr`].
    Piped,
    /// This descriptor (give both streams one pipe to keep their order).
    Fd(OwnedFd),
}

/// A container to start.
#[derive(Debug)]
pub struct Command {
    spec: Spec,
    stdin: Input,
    stdout: Output,
    stderr: Output,
    helper: PathBuf,
}

impl Command {
    /// A command for `spec`, with stdin from `/dev/null` and the caller's stdout and stderr.
    pub fn new(spec: Spec) -> Command {
        Command {
            spec,
            stdin: Input::Null,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            helper: PathBuf::from("/proc/self/exe"),
        }
    }

    pub fn stdin(&mut self, input: Input) -> &mut Command {
        self.stdin = input;
        self
    }

    pub fn stdout(&mut self, output: Output) -> &mut Command {
        self.stdout = output;
        self
    }

    pub fn stderr(&mut self, output: Output) -> &mut Command {
        self.stderr = output;
        self
    }

    /// The strata binary that acts as setup helper when the caller is multi-threaded
    /// (default: this program, which must call [`run_setup_helper_if_requested`] first thing
    /// in `main`).
    pub fn setup_helper(&mut self, program: impl Into<PathBuf>) -> &mut Command {
        self.helper = program.into();
        self
    }

    /// The spec this command starts.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Starts the container and returns once its command runs: either the command was
    /// executed, or this fails and nothing of the container is left. The stdio settings are
    /// used up (set them again to spawn once more).
    pub fn spawn(&mut self) -> Result<Child> {
        self.spec.validate()?;
        let in_userns = !rustix::process::geteuid().is_root();
        if in_userns && self.spec.limits.any() {
            return Err(Error::Invalid(
                "resource limits (--memory, --cpus, --pids-limit) need root: an unprivileged strata cannot create cgroups".into(),
            ));
        }
        for m in &self.spec.mounts {
            // `docker run -v` makes a missing source directory.
            if std::fs::symlink_metadata(&m.source).is_err() {
                std::fs::create_dir_all(&m.source).at("create bind mount source", &m.source)?;
            }
        }
        let cgroup = if self.spec.limits.any() {
            Some(Cgroup::create(
                &crate::new_container_id(),
                &self.spec.limits,
            )?)
        } else {
            None
        };
        let stdio = Stdio::prepare(
            std::mem::replace(&mut self.stdin, Input::Null),
            std::mem::replace(&mut self.stdout, Output::Inherit),
            std::mem::replace(&mut self.stderr, Output::Inherit),
        )?;
        let (ours, theirs) = Channel::pair()?;
        let flags = clone_flags(&self.spec, in_userns);
        let (pid, pidfd) = if is_single_threaded() {
            fork_init(&self.spec, theirs, &stdio.fds, in_userns, flags)?
        } else {
            start_through_helper(&self.spec, &self.helper, &ours, theirs, &stdio.fds)?
        };
        drop(stdio.fds);
        let mut child = Child::new(pid, pidfd, ours, cgroup, stdio.stdout, stdio.stderr);
        if let crate::spec::Rootfs::Union { layers, .. } = &self.spec.rootfs {
            child.set_overlay_work(layers.work.clone());
        }
        child.start(in_userns, init::needs_go(&self.spec, in_userns))?;
        Ok(child)
    }
}

/// The namespaces of a container (and `CLONE_NEWUSER` when strata is unprivileged). The
/// cgroup namespace is entered later, by the init, once it is in its cgroup.
fn clone_flags(spec: &Spec, in_userns: bool) -> u64 {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    if in_userns {
        flags |= libc::CLONE_NEWUSER;
    }
    flags as u64
}

/// Whether this process runs one thread only (so forking into ordinary code is safe).
fn is_single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .is_some_and(|n| n.trim() == "1")
    })
}

/// Forks the init from this (single-threaded) process.
fn fork_init(
    spec: &Spec,
    channel: Channel,
    fds: &[OwnedFd; 3],
    in_userns: bool,
    flags: u64,
) -> Result<(i32, OwnedFd)> {
    let stdio = [0, 1, 2].map(|i| std::os::fd::AsRawFd::as_raw_fd(&fds[i]));
    // SAFETY: the caller checked that this process is single-threaded.
    match unsafe { sys::fork_into(flags) }.sys("clone the container's init")? {
        Forked::Child => init::run(
            spec,
            &InitContext {
                channel,
                stdio,
                in_userns,
            },
        ),
        Forked::Parent { pid, pidfd } => Ok((pid, pidfd)),
    }
}

/// Starts the setup helper, hands it the spec, and gets the init it forked.
fn start_through_helper(
    spec: &Spec,
    helper: &Path,
    ours: &Channel,
    theirs: Channel,
    fds: &[OwnedFd; 3],
) -> Result<(i32, OwnedFd)> {
    let mut process = spawn_helper(helper, &theirs, Some(fds))?;
    drop(theirs);
    ours.send(&Message::Start(Box::new(spec.clone())), None)?;
    let born = ours.recv();
    let status = process.wait().at("wait for the setup helper", helper)?;
    match born? {
        Some((Message::Born { pid }, Some(pidfd))) => Ok((pid, pidfd)),
        Some((Message::Failed(remote), _)) => Err(remote.into()),
        _ => Err(Error::Setup(format!(
            "the setup helper {} exited ({status}) without starting the container",
            helper.display()
        ))),
    }
}

/// For a strata binary: acts as the setup helper when started as one by a multi-threaded
/// caller (and never returns then); returns at once otherwise. Call it first thing in `main`.
pub fn run_setup_helper_if_requested() {
    if std::env::args_os()
        .next()
        .is_none_or(|arg0| arg0 != HELPER_ARG0)
    {
        return;
    }
    // SAFETY: the caller dup'ed the channel to this number before executing the helper, and
    // nothing else in this fresh process owns it.
    let channel = unsafe { Channel::from_raw_fd(HELPER_CHANNEL_FD) };
    helper(channel)
}

/// The helper's work: receive the spec, fork the init as the caller's child, report it.
fn helper(channel: Channel) -> ! {
    let fail = |channel: &Channel, e: Error| -> ! {
        let _ = channel.send(&Message::Failed((&e).into()), None);
        std::process::exit(1)
    };
    if let Err(e) = sys::set_cloexec(channel.as_fd()) {
        fail(&channel, Error::sys("fcntl", e));
    }
    let spec = match channel.recv() {
        Ok(Some((Message::Start(spec), _))) => spec,
        Ok(Some((Message::RemoveTree(path), _))) => match remove_in_userns(&channel, &path) {
            Ok(()) => std::process::exit(0),
            Err(e) => fail(&channel, e),
        },
        Ok(_) => fail(
            &channel,
            Error::Setup("the setup helper got no container to start".into()),
        ),
        Err(e) => fail(&channel, e),
    };
    let in_userns = !rustix::process::geteuid().is_root();
    let flags = clone_flags(&spec, in_userns) | libc::CLONE_PARENT as u64;
    // SAFETY: the helper is a fresh process that started no thread.
    match unsafe { sys::fork_into(flags) } {
        Ok(Forked::Child) => init::run(
            &spec,
            &InitContext {
                channel,
                stdio: [0, 1, 2],
                in_userns,
            },
        ),
        Ok(Forked::Parent { pid, pidfd }) => {
            match channel.send(&Message::Born { pid }, Some(pidfd.as_fd())) {
                Ok(()) => std::process::exit(0),
                Err(e) => fail(&channel, e),
            }
        }
        Err(e) => fail(&channel, Error::sys("clone the container's init", e)),
    }
}

/// Starts the setup helper with `channel` as its descriptor 3 and `fds` (or /dev/null) as its
/// stdio.
fn spawn_helper(
    helper: &Path,
    channel: &Channel,
    fds: Option<&[OwnedFd; 3]>,
) -> Result<std::process::Child> {
    let stdio = |i: usize| -> Result<std::process::Stdio> {
        Ok(match fds {
            Some(fds) => std::process::Stdio::from(fds[i].try_clone().sys("dup")?),
            None => std::process::Stdio::null(),
        })
    };
    let mut cmd = std::process::Command::new(helper);
    cmd.arg0(HELPER_ARG0)
        .stdin(stdio(0)?)
        .stdout(stdio(1)?)
        .stderr(stdio(2)?);
    let channel_fd = channel.raw_fd();
    let move_channel = move || {
        // SAFETY: dup2 onto a fixed number in the new process, before it executes the helper.
        if unsafe { libc::dup2(channel_fd, HELPER_CHANNEL_FD) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only calls dup2, which is async-signal-safe.
    unsafe { cmd.pre_exec(move_channel) };
    cmd.spawn().at("start the setup helper", helper)
}

/// Removes `path` (a container's writable layer, or anything in it), whatever container user
/// owns what is in it: directly as root; as root of a user namespace mapped like the containers'
/// (in a fresh setup helper, started from `helper`) when strata is unprivileged.
pub fn remove_container_tree(path: &Path, helper: &Path) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        return remove_any(path);
    }
    let (ours, theirs) = Channel::pair()?;
    let mut process = spawn_helper(helper, &theirs, None)?;
    drop(theirs);
    let result = (|| {
        ours.send(&Message::RemoveTree(path.to_owned()), None)?;
        match ours.recv()? {
            Some((Message::Born { pid }, _)) => userns::write_id_maps(pid)?,
            Some((Message::Failed(remote), _)) => return Err(remote.into()),
            _ => return Err(Error::Setup("the setup helper ended unexpectedly".into())),
        }
        ours.send(&Message::Go, None)?;
        match ours.recv()? {
            Some((Message::Removed, _)) => Ok(()),
            Some((Message::Failed(remote), _)) => Err(remote.into()),
            _ => Err(Error::Setup("the setup helper ended unexpectedly".into())),
        }
    })();
    if result.is_err() {
        let _ = process.kill();
    }
    let _ = process.wait();
    result
}

/// The helper's side of [`remove_container_tree`].
fn remove_in_userns(channel: &Channel, path: &Path) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).sys("unshare the user namespace")?;
    channel.send(
        &Message::Born {
            pid: std::process::id() as i32,
        },
        None,
    )?;
    match channel.recv()? {
        Some((Message::Go, _)) => {}
        _ => return Err(Error::Setup("no id maps for the removal".into())),
    }
    remove_any(path)?;
    channel.send(&Message::Removed, None)
}

/// Removes `path`, a directory tree or anything else (nothing when it does not exist).
fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => Ok(layerfs::store::remove_tree(path)?),
        Ok(_) => std::fs::remove_file(path).at("remove", path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// The three descriptors the command gets, and the reading ends of its pipes.
struct Stdio {
    fds: [OwnedFd; 3],
    stdout: Option<File>,
    stderr: Option<File>,
}

impl Stdio {
    fn prepare(stdin: Input, stdout: Output, stderr: Output) -> Result<Stdio> {
        let stdin = match stdin {
            Input::Null => dev_null(OFlags::RDONLY)?,
            Input::Inherit => sys::dup_above(rustix::stdio::stdin(), 3).sys("dup stdin")?,
            Input::Fd(fd) => fd,
        };
        let (stdout, stdout_reader) = output(stdout, 1)?;
        let (stderr, stderr_reader) = output(stderr, 2)?;
        Ok(Stdio {
            fds: [stdin, stdout, stderr],
            stdout: stdout_reader,
            stderr: stderr_reader,
        })
    }
}

fn output(out: Output, inherit: i32) -> Result<(OwnedFd, Option<File>)> {
    Ok(match out {
        Output::Inherit => {
            // SAFETY: 1 and 2 are the caller's stdout and stderr, open for its lifetime.
            (
                sys::dup_above(unsafe { sys::borrow_raw(inherit) }, 3).sys("dup stdout")?,
                None,
            )
        }
        Output::Null => (dev_null(OFlags::WRONLY)?, None),
        Output::Piped => {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).sys("pipe")?;
            (w, Some(File::from(r)))
        }
        Output::Fd(fd) => (fd, None),
    })
}

fn dev_null(mode: OFlags) -> Result<OwnedFd> {
    rustix::fs::open("/dev/null", mode | OFlags::CLOEXEC, Mode::empty())
        .at("open", Path::new("/dev/null"))
}

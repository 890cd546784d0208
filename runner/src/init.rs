//! The container's PID 1: a process forked from strata (never re-executed inside the
//! container) that builds the container's filesystem, starts the command as PID 2, then
//! stays as a minimal init: it forwards every signal it gets to the command, reaps every
//! orphan, and reports the command's end to the caller. When it exits, the kernel kills
//! whatever else still runs in the container's pid namespace.
//!
//! It is not dumpable, so the container cannot reach it through /proc/1 (its executable is
//! strata's), and it keeps only CAP_KILL once the command runs.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use caps::Capability;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::caps::{limit_bounding_set, set_process_caps};
use crate::channel::{Channel, Exit, Message};
use crate::error::{Error, Remote, Result, SysContext};
use crate::process::{Launch, Streams, exec_command};
use crate::rootfs;
use crate::spec::{Network, Spec};
use crate::sys;
use crate::user::{add_groups_in, resolve_user_in};

/// What the init needs besides the spec.
pub(crate) struct InitContext {
    /// The channel to the caller.
    pub(crate) channel: Channel,
    /// The descriptors that become the command's stdin, stdout and stderr.
    pub(crate) stdio: [RawFd; 3],
    /// strata runs unprivileged, in a user namespace of its own.
    pub(crate) in_userns: bool,
}

/// Whether the init must wait for [`Message::Go`] before it sets up: when the caller has to
/// put it in its cgroup (before it enters its cgroup namespace) or write its user namespace
/// maps first. Otherwise it goes on at once (one wake-up less for both).
pub(crate) fn needs_go(spec: &Spec, in_userns: bool) -> bool {
    spec.limits.any() || in_userns
}

/// The init's whole life; never returns.
pub(crate) fn run(spec: &Spec, ctx: &InitContext) -> ! {
    let code = match init(spec, ctx) {
        Ok(code) => code,
        Err(e) => {
            let _ = ctx.channel.send(&Message::Failed(Remote::from(&e)), None);
            1
        }
    };
    // SAFETY: _exit ends this process without running the caller's destructors or atexit
    // handlers, which belong to the process this one was forked from.
    unsafe { libc::_exit(code) }
}

fn init(spec: &Spec, ctx: &InitContext) -> Result<i32> {
    // Signals wait in a signalfd from now on: none may kill the init by surprise.
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None).sys("block signals")?;
    // No parent-death signal: with a multi-threaded caller it would fire when the thread that
    // started the container ends. If strata dies, the channel closes and the init ends
    // (`supervise`), which ends the container.
    // Inside the container, PID 1 reads as what it is, not as strata's command line. Only
    // cosmetic if the kernel refuses (the caller's arguments stay visible as on the host).
    let _ = sys::set_process_title("strata-init");
    // Its own session: the terminal's ^C goes to strata, which forwards it once.
    nix::unistd::setsid().sys("setsid")?;
    let mut keep: Vec<RawFd> = ctx.stdio.to_vec();
    keep.push(ctx.channel.raw_fd());
    sys::close_fds_except(&keep).sys("close inherited descriptors")?;

    if needs_go(spec, ctx.in_userns) {
        match ctx.channel.recv()? {
            Some((Message::Go, _)) => {}
            // The caller is gone, or confused: nothing to do.
            _ => return Ok(1),
        }
    }
    // Not dumpable: the container's processes cannot reach the init through /proc/1. Only
    // now, as an undumpable process's /proc files belong to root, and an unprivileged
    // caller had to write this one's uid_map first.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .sys("make the init undumpable")?;
    let strata_binary = sys::own_executable_identity().sys("stat /proc/self/exe")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .sys("unshare the cgroup namespace")?;
    rustix::process::umask(rustix::fs::Mode::empty());

    let prepared = rootfs::prepare(spec, ctx.in_userns)?;
    let mut user = resolve_user_in(prepared.root.as_fd(), spec.user.as_deref().unwrap_or(""))?;
    add_groups_in(prepared.root.as_fd(), &mut user, &spec.group_add)?;
    nix::unistd::sethostname(&spec.hostname).sys("set the hostname")?;
    if spec.network == Network::None {
        sys::loopback_up().sys("bring up lo")?;
    }
    prepared.pivot()?;

    let streams = match spec.tty {
        Some(size) => {
            let master = nix::pty::posix_openpt(
                nix::fcntl::OFlag::O_RDWR
                    | nix::fcntl::OFlag::O_NOCTTY
                    | nix::fcntl::OFlag::O_CLOEXEC,
            )
            .sys("open /dev/ptmx")?;
            nix::pty::unlockpt(&master).sys("unlock the pseudo-terminal")?;
            let peer = sys::open_pty_peer(master.as_fd()).sys("open the pseudo-terminal")?;
            if size.rows > 0 && size.cols > 0 {
                sys::set_window_size(peer.as_fd(), size).sys("set the window size")?;
            }
            ctx.channel.send(&Message::Terminal, Some(master.as_fd()))?;
            Streams::Terminal(peer)
        }
        None => Streams::Fds(ctx.stdio),
    };

    let signals = SignalFd::with_flags(&SigSet::all(), SfdFlags::SFD_CLOEXEC).sys("signalfd")?;
    let (report_read, report_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).sys("pipe")?;
    let can_setgroups = !ctx.in_userns
        || std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "allow");

    // SAFETY: this process is single-threaded (it was forked from a single-threaded one and
    // started no thread), so the child may run ordinary code.
    let command = match unsafe { nix::unistd::fork() }.sys("fork the command")? {
        ForkResult::Child => {
            drop(report_read);
            let err = exec_command(&Launch {
                spec,
                user: &user,
                streams,
                report: report_write.as_fd(),
                strata_binary,
                can_setgroups,
            });
            let code = exit_code_for(&err);
            let _ = rustix::io::write(
                &report_write,
                &serde_json::to_vec(&Remote::from(&err)).unwrap_or_default(),
            );
            // SAFETY: see `run`.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(report_write);
    drop(streams);
    let mut report = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(report_read), &mut report)
        .sys("read the exec report")?;
    if !report.is_empty() {
        let remote: Remote = serde_json::from_slice(&report)
            .unwrap_or_else(|_| Remote::Other("the command failed to start".to_owned()));
        ctx.channel.send(&Message::Failed(remote), None)?;
        return Ok(1);
    }
    let mut created = prepared.created.clone();
    created.sort();
    ctx.channel.send(&Message::Started { created }, None)?;
    drop(prepared);

    // From here on the init only waits, forwards signals and reaps: it keeps CAP_KILL (to
    // signal a command of another user) and nothing else.
    let keep = [Capability::CAP_KILL];
    limit_bounding_set(&keep)?;
    set_process_caps(&keep)?;
    sys::close_fds_except(&[ctx.channel.raw_fd(), signals.as_fd().as_raw_fd()])
        .sys("close descriptors")?;
    stdio_to_dev_null()?;
    let exit = supervise(command, &signals, &ctx.channel)?;
    ctx.channel.send(&Message::Exited(exit), None)?;
    Ok(0)
}

/// Forwards signals to `command` and reaps children until `command` ends.
fn supervise(command: Pid, signals: &SignalFd, channel: &Channel) -> Result<Exit> {
    loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(channel.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => other.sys("poll")?,
        };
        let channel_event = fds[1].revents().unwrap_or(PollFlags::empty());
        if !channel_event.is_empty() && channel.recv()?.is_none() {
            // The caller is gone: end the container.
            return Err(Error::Setup("strata went away".to_owned()));
        }
        while let Some(info) = signals.read_signal().sys("read a signal")? {
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGCHLD {
                if let Some(exit) = reap(command)? {
                    return Ok(exit);
                }
            } else if let Ok(sig) = Signal::try_from(sig) {
                let _ = nix::sys::signal::kill(command, sig);
            }
        }
    }
}

/// Reaps every child that has exited; returns how `command` ended if it has.
fn reap(command: Pid) -> Result<Option<Exit>> {
    let mut ended = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => ended = Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == command => {
                ended = Some(Exit::Signal(sig as i32));
            }
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return Ok(ended),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("waitpid", e)),
        }
    }
}

/// The init keeps none of the command's streams open (a pipe reader sees the end when the
/// command's processes close theirs).
fn stdio_to_dev_null() -> Result<()> {
    let null: OwnedFd = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .sys("open /dev/null")?;
    for fd in 0..3 {
        if null.as_raw_fd() != fd {
            sys::dup_onto(null.as_fd(), fd).sys("dup2")?;
        }
    }
    Ok(())
}

/// The exit status of a command process that could not start (docker's codes).
fn exit_code_for(e: &Error) -> i32 {
    match e {
        Error::CommandNotFound(_) => 127,
        Error::CommandNotExecutable { .. } => 126,
        _ => 125,
    }
}

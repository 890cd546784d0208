//! Waiting for a container in the foreground, the way `docker run` does: the caller's
//! signals are forwarded to the command (SIGTERM becomes the image's stop signal, and the
//! container is killed if it does not stop in time), and a container with a terminal gets
//! the caller's terminal relayed to it: raw mode, input, output and window size.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::child::{Child, ExitStatus};
use crate::error::{Result, SysContext};
use crate::spec::TtySize;
use crate::sys;

/// The signals a foreground container gets from its caller.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// How [`Child::wait_attached`] behaves. Made before the container is spawned, so that a
/// signal that comes early is held (blocked) and forwarded once the command runs, not lost.
#[derive(Debug)]
pub struct Attach {
    /// What SIGTERM becomes (the image's `StopSignal`).
    pub stop_signal: i32,
    /// How long after the stop signal the container is killed.
    pub stop_timeout: Duration,
    /// With a terminal: relay this process's stdin to it (`-i`); stdin is put in raw mode
    /// while it is a terminal.
    pub relay_stdin: bool,
    signals: Option<BlockedSignals>,
}

impl Attach {
    /// With `forward_signals`, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH
    /// are blocked in this thread from now on (until the `Attach` is dropped) and forwarded
    /// to the command; a multi-threaded caller must block them in its other threads too.
    /// SIGTERM stops the container with docker's defaults until told otherwise.
    pub fn new(forward_signals: bool) -> Result<Attach> {
        Ok(Attach {
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            relay_stdin: false,
            signals: if forward_signals {
                Some(BlockedSignals::new()?)
            } else {
                None
            },
        })
    }
}

impl Child {
    /// Waits for the container in the foreground (see the module docs). What the command
    /// writes to its terminal goes to `output`.
    pub fn wait_attached(
        &mut self,
        opts: &Attach,
        output: &mut dyn FnMut(&[u8]),
    ) -> Result<ExitStatus> {
        let signals = &opts.signals;
        let terminal = self
            .terminal
            .as_ref()
            .map(|t| t.try_clone())
            .transpose()
            .sys("dup the terminal")?;
        let stdin = rustix::stdio::stdin();
        let stdin_is_tty = rustix::termios::isatty(stdin);
        let _raw = match (&terminal, opts.relay_stdin && stdin_is_tty) {
            (Some(_), true) => Some(RawMode::enable(stdin)?),
            _ => None,
        };
        if terminal.is_some() {
            self.sync_window_size()?;
        }
        let mut relay = terminal.map(|t| Relay {
            terminal: t,
            stdin_open: opts.relay_stdin,
            output_open: true,
        });
        let mut stop_deadline: Option<Instant> = None;
        let mut channel_open = true;
        while channel_open {
            let timeout = match stop_deadline {
                Some(d) => PollTimeout::try_from(d.saturating_duration_since(Instant::now()))
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            let mut fds = vec![PollFd::new(self.channel_fd(), PollFlags::POLLIN)];
            if let Some(s) = signals {
                fds.push(PollFd::new(s.fd.as_fd(), PollFlags::POLLIN));
            }
            let flows = relay.as_ref().map(Relay::flows).unwrap_or_default();
            let first_relay = fds.len();
            if let Some(r) = &relay {
                for flow in &flows {
                    let fd = match flow {
                        Flow::Output => r.terminal.as_fd(),
                        Flow::Input => stdin,
                    };
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
            }
            match poll(&mut fds, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => other.sys("poll")?,
            };
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if let Some(r) = relay.as_mut() {
                for (i, flow) in flows.iter().enumerate() {
                    if ready[first_relay + i] {
                        r.pump(*flow, output)?;
                    }
                }
            }
            if let Some(s) = signals
                && ready[1]
            {
                while let Some(info) = s.fd.read_signal().sys("read a signal")? {
                    match info.ssi_signo as i32 {
                        libc::SIGWINCH => self.sync_window_size()?,
                        libc::SIGTERM => {
                            self.signal(opts.stop_signal)?;
                            stop_deadline.get_or_insert(Instant::now() + opts.stop_timeout);
                        }
                        sig => self.signal(sig)?,
                    }
                }
            }
            if stop_deadline.is_some_and(|d| Instant::now() >= d) {
                self.kill()?;
                stop_deadline = None;
            }
            if ready[0] {
                channel_open = !self.on_channel_readable()?;
            }
        }
        if let Some(r) = relay.as_mut() {
            r.drain(output)?;
        }
        self.finish()
    }

    /// Gives the container's terminal the size of the caller's.
    fn sync_window_size(&self) -> Result<()> {
        match caller_terminal_size() {
            Some(size) => self.resize_terminal(size),
            None => Ok(()),
        }
    }
}

/// The size of the terminal this process runs in, if its stdin or stdout is one (for a
/// container's [`crate::Spec::tty`]).
pub fn caller_terminal_size() -> Option<TtySize> {
    [rustix::stdio::stdin(), rustix::stdio::stdout()]
        .into_iter()
        .find_map(sys::window_size)
}

/// Which way a relay descriptor pumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The container's terminal output to this process's stdout.
    Output,
    /// This process's stdin to the container's terminal.
    Input,
}

/// The caller's stdio relayed to and from the container's terminal.
struct Relay {
    terminal: File,
    stdin_open: bool,
    output_open: bool,
}

impl Relay {
    /// The flows still open.
    fn flows(&self) -> Vec<Flow> {
        let mut flows = Vec::new();
        if self.output_open {
            flows.push(Flow::Output);
        }
        if self.stdin_open {
            flows.push(Flow::Input);
        }
        flows
    }

    fn pump(&mut self, flow: Flow, output: &mut dyn FnMut(&[u8])) -> Result<()> {
        let mut buf = [0u8; 16 * 1024];
        match flow {
            Flow::Output => match (&self.terminal).read(&mut buf) {
                Ok(0) => self.output_open = false,
                Ok(n) => output(&buf[..n]),
                // EIO: every process of the container closed the terminal.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => self.output_open = false,
                Err(e)
                    if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(crate::Error::sys("read the container's terminal", e)),
            },
            Flow::Input => match rustix::io::read(rustix::stdio::stdin(), &mut buf) {
                Ok(0) => {
                    self.stdin_open = false;
                    // End of input: the terminal's end-of-file character (^D).
                    let _ = (&self.terminal).write_all(&[4]);
                }
                Ok(n) => (&self.terminal)
                    .write_all(&buf[..n])
                    .sys("write to the container's terminal")?,
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(e) => return Err(crate::Error::sys("read stdin", e)),
            },
        }
        Ok(())
    }

    /// Copies what the container wrote last, once it has ended.
    fn drain(&mut self, output: &mut dyn FnMut(&[u8])) -> Result<()> {
        rustix::fs::fcntl_setfl(&self.terminal, rustix::fs::OFlags::NONBLOCK).sys("fcntl")?;
        while self.output_open {
            self.pump(Flow::Output, output)?;
            let mut probe = [PollFd::new(self.terminal.as_fd(), PollFlags::POLLIN)];
            if poll(&mut probe, PollTimeout::ZERO).unwrap_or(0) == 0 {
                break;
            }
        }
        Ok(())
    }
}

/// The forwarded signals, blocked in this thread and readable from a signalfd; unblocked
/// again when dropped.
#[derive(Debug)]
struct BlockedSignals {
    fd: SignalFd,
    previous: SigSet,
}

impl BlockedSignals {
    fn new() -> Result<BlockedSignals> {
        let mut set = SigSet::empty();
        for s in FORWARDED {
            set.add(*s);
        }
        let mut previous = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut previous)).sys("block signals")?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .sys("signalfd")?;
        Ok(BlockedSignals { fd, previous })
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

/// A terminal in raw mode, restored when dropped.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: rustix::termios::Termios,
}

impl<'a> RawMode<'a> {
    fn enable(fd: BorrowedFd<'a>) -> Result<RawMode<'a>> {
        let saved = rustix::termios::tcgetattr(fd).sys("tcgetattr")?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &raw)
            .sys("tcsetattr")?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ =
            rustix::termios::tcsetattr(self.fd, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

//! The control channel between the caller and a container's init (and the setup helper that
//! starts the init for multi-threaded callers): JSON messages over a `SOCK_SEQPACKET`
//! socket pair, each message whole, with at most one file descriptor attached.
//!
//! The caller learns through it when the command runs, how it exited, and why setup failed;
//! the container never gets a descriptor of it (it is `CLOEXEC` and the command process
//! closes every descriptor it does not need before `exec`).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv,
    recvmsg, sendmsg, socketpair,
};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Remote, Result, SysContext};
use crate::spec::Spec;

/// The messages, in the order they flow.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message {
    /// caller → helper: the container to start.
    Start(Box<Spec>),
    /// caller → helper: remove this tree as root of a user namespace mapped like a
    /// container's (it holds files of the container's users).
    RemoveTree(PathBuf),
    /// helper → caller: the tree is gone.
    Removed,
    /// helper → caller: the init exists (its pidfd attached) and waits for [`Message::Go`].
    Born { pid: i32 },
    /// caller → init: the cgroup is joined and the id maps are written: set up and start
    /// (only when there was any of that to do: `init::needs_go`).
    Go,
    /// init → caller: the pseudo-terminal master (attached) of the command's terminal.
    Terminal,
    /// init → caller: the command was executed; `created` lists the mount points the
    /// sandbox had to create in the root filesystem.
    Started { created: Vec<String> },
    /// init or command → caller: setting up or executing failed.
    Failed(Remote),
    /// init → caller: the command ended.
    Exited(Exit),
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal of this number killed it.
    Signal(i32),
}

/// One end of a control channel.
#[derive(Debug)]
pub(crate) struct Channel {
    socket: OwnedFd,
}

impl Channel {
    /// A connected pair of ends (both `CLOEXEC`).
    pub(crate) fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .sys("socketpair")?;
        Ok((Channel { socket: a }, Channel { socket: b }))
    }

    /// The end whose descriptor is `fd` (one a parent left open across `exec`).
    ///
    /// # Safety
    /// `fd` must be an open socket that nothing else owns.
    pub(crate) unsafe fn from_raw_fd(fd: RawFd) -> Channel {
        Channel {
            // SAFETY: guaranteed by the caller.
            socket: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Sends `msg`, with `fd` attached when given.
    pub(crate) fn send(
        &self,
        msg: &Message,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(msg).expect("control messages always serialize");
        let fds: Vec<RawFd> = fd.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
            Vec::new()
        } else {
            vec![ControlMessage::ScmRights(&fds)]
        };
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .sys("send a control message")?;
        Ok(())
    }

    /// Receives the next message and the descriptor attached to it, if any; `None` once the
    /// other end is closed.
    pub(crate) fn recv(&self) -> Result<Option<(Message, Option<OwnedFd>)>> {
        // A zero-length peek with MSG_TRUNC tells the whole length of the next message.
        let len = loop {
            match recv(
                self.socket.as_raw_fd(),
                &mut [],
                MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.sys("receive a control message")?,
            }
        };
        if len == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        let mut cmsg_space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (n, fd) = {
            let msg = recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .sys("receive a control message")?;
            let mut fd = None;
            for c in msg.cmsgs().sys("receive a control message")? {
                if let ControlMessageOwned::ScmRights(received) = c {
                    for raw in received {
                        // SAFETY: SCM_RIGHTS installed a new descriptor that nothing owns yet.
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        if fd.is_none() {
                            fd = Some(owned);
                        }
                    }
                }
            }
            (msg.bytes, fd)
        };
        let msg = serde_json::from_slice(&buf[..n])
            .map_err(|e| Error::Setup(format!("malformed control message: {e}")))?;
        Ok(Some((msg, fd)))
    }
}

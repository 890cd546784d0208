//! runner: strata's sandbox. It starts a command in a container of its own and reports how
//! it ended; `strata run` and the builder's RUN steps both go through it.
//!
//! ```no_run
//! use runner::{Command, Output, Rootfs, Spec};
//! # fn main() -> runner::Result<()> {
//! let spec = Spec::new(Rootfs::Dir("/var/lib/rootfs".into()), vec!["echo".into(), "hi".into()]);
//! let mut child = Command::new(spec).stdout(Output::Piped).spawn()?;
//! let mut out = String::new();
//! std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
//! let status = child.wait()?;
//! assert_eq!((out.as_str(), status.code()), ("hi\n", 0));
//! # Ok(()) }
//! ```
//!
//! A container has its own mount, pid, uts, ipc and cgroup namespaces (and network, with
//! [`Network::None`]; and user, when strata runs unprivileged). Its PID 1 is a minimal init
//! forked from strata that builds the filesystem ([`rootfs`](crate::spec::Rootfs): the
//! overlay is mounted inside the container's namespace, so a killed strata never leaves it
//! behind), starts the command as PID 2, forwards signals to it and reaps orphans. The
//! command runs with docker's default capabilities (or those [`Spec::capabilities`] names)
//! and a seccomp filter in the spirit of docker's, as the resolved user, with no descriptor but its stdio. Limits go through a
//! cgroup on v2, v1 and hybrid hosts, and an OOM kill is reported as such.
//!
//! Modules: [`spec`] (what to run), [`image`] (docker's rules for image configs),
//! [`user`] (users resolved in the image), and the machinery: `launch` and `child` (the
//! caller's side), `init`, `rootfs` and `process` (the container's side), `channel` (between
//! them), `cgroup`, `caps`, `seccomp`, `userns`, `attach` and the system-call layer `sys`.

mod attach;
mod caps;
mod cgroup;
mod channel;
mod child;
mod error;
pub mod image;
mod init;
mod launch;
mod process;
mod rootfs;
mod seccomp;
pub mod spec;
mod sys;
pub mod user;
mod userns;

pub use attach::{Attach, caller_terminal_size};
pub use caps::{DEFAULT_CAPABILITIES, default_capability_mask};

/// How this host mounts cgroups: `v2`, `v1` or `hybrid`; `None` when it mounts none.
pub fn host_cgroups() -> Option<&'static str> {
    cgroup::Layout::describe_host()
}
pub use channel::Exit;
pub use child::{Child, ExitStatus};
pub use error::{Error, IdKind, Result};
pub use launch::{Command, Input, Output, remove_container_tree, run_setup_helper_if_requested};
pub use spec::{
    BindMount, DEFAULT_PATH, DeviceMapping, Limits, Network, Rootfs, Spec, TmpfsMount, TtySize,
    Ulimit,
};

/// A new random container id: 64 hex digits, as docker's (the first 12 make a short id).
pub fn new_container_id() -> String {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // No getrandom (Linux < 3.17): the time and the pid still make it unique.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let seed = nanos ^ (u128::from(std::process::id()) << 64);
            bytes[..16].copy_from_slice(&seed.to_le_bytes());
            break;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

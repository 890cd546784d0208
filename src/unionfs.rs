//! `strata-unionfs`: strata's FUSE union filesystem, run the way fuse-overlayfs is. It is the
//! `strata` binary started under that name (strata re-executes itself under it for its own mounts;
//! link `strata-unionfs` to `strata` to use it as a program or a mount helper).
//!
//! ```text
//! strata-unionfs [-f] [-d] -o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT
//! mount -t fuse.strata-unionfs none MOUNTPOINT -o lowerdir=A:B,upperdir=U,workdir=W
//! ```
//!
//! The leftmost lower dir is the top one, as with overlayfs. Without `upperdir`/`workdir` the
//! union is read-only. It serves in the foreground until the mount goes away (`umount`,
//! SIGTERM, SIGINT). Called the way `mount(8)` calls its helpers (`SOURCE MOUNTPOINT`, via
//! `mount.fuse3`), it returns once mounted and serves from the background, since `mount`
//! waits for its helper; `-f` keeps it in the foreground there too.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use layerfs::fuse::UnionOptions;

use crate::cli::UnionfsCli;

/// Serves or mounts a union as `strata-unionfs` ARGS…
pub fn main() -> ExitCode {
    let args = UnionfsCli::parse();
    let printer = crate::printer::Printer;
    let level = if args.debug { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            printer.error(&e);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &UnionfsCli) -> anyhow::Result<()> {
    let mut opts = UnionOptions {
        passthrough: true,
        ..Default::default()
    };
    for o in &args.options {
        opts.parse(o.as_bytes())
            .map_err(anyhow::Error::msg)
            .context("in -o")?;
    }
    opts.validate()
        .map_err(anyhow::Error::msg)
        .context("in -o")?;
    let target = args
        .args
        .last()
        .expect("clap requires a mount point")
        .clone();
    let target = std::path::absolute(&target)
        .with_context(|| format!("mount point {}", target.display()))?;
    if args.args.len() == 2 && !args.foreground && args.control_fd.is_none() {
        // mount(8) waits for its helper: mount, then leave the daemon serving.
        let me = std::env::current_exe().context("finding this program")?;
        let mount = layerfs::fuse::spawn(&me, &opts, &target)?;
        mount.detach();
        return Ok(());
    }
    let control = match args.control_fd {
        Some(fd) => {
            rustix::io::fcntl_getfd(
                // SAFETY: only checks that the number names an open fd; nothing is owned yet.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            )
            .with_context(|| format!("--control-fd {fd} is not an open file descriptor"))?;
            // SAFETY: the fd is open (checked above), was handed to this process for it alone,
            // and nothing else in this process owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)?;
            Some(UnixStream::from(owned))
        }
        None => None,
    };
    // Modes of new entries come from the requests, exactly.
    rustix::process::umask(rustix::fs::Mode::empty());
    raise_fd_limit();
    layerfs::fuse::serve(&opts, &target, control)?;
    Ok(())
}

/// Open directories and files cost fds: take all the process may have.
fn raise_fd_limit() {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(max) = lim.maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
}

//! strata's FUSE union filesystem: the layers of an image and a writable upper dir merged
//! with the semantics of kernel overlayfs, for where overlayfs cannot be mounted (an
//! unprivileged user on an older kernel, nested containers, an upper filesystem overlayfs
//! refuses, more layers than it takes).
//!
//! The upper dir it writes is in the format overlayfs writes (whiteouts are 0/0 character
//! devices, opaque directories carry `overlay.opaque` = `y`, nothing else), so
//! [`crate::layer::diff::write_layer`] turns it into the same layer either way. Renaming a
//! directory with lower parts copies its tree up rather than writing a redirect.
//!
//! - [`serve`] mounts and serves a union in this process (the `strata-unionfs` daemon);
//! - [`spawn`] starts that daemon and returns a [`FuseMount`] that unmounts on drop;
//! - [`UnionOptions`] is the overlay-style option string both speak.
//!
//! Inside: [`layers`](self) opens and classifies layer entries, `resolve` merges them,
//! `inode` numbers and tracks the kernel's inodes, `copyup` copies entries up, `fs` answers
//! the FUSE requests, `readahead` warms the caches ahead of a tree walk and of a reader going
//! through a directory's files or a walk's, and `session` runs the mount.

mod copyup;
mod daemon;
mod fs;
mod inode;
mod layers;
mod options;
mod readahead;
mod resolve;
mod session;

pub use daemon::{FuseMount, spawn};
pub use fs::FsOptions;
pub use options::UnionOptions;
pub use session::{DAEMON_NAME, FS_TYPE, daemon_program, serve, set_daemon_program};

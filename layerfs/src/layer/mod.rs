//! Layers: OCI layer tars and the overlay-format directories they are extracted to.
//!
//! - [`diff`] turns an overlay upper dir (or any overlay-format layer dir) into a deterministic
//!   layer tar, and diffs two plain directory trees when there is no upper dir.
//! - [`apply`] extracts a layer tar into an overlay-format layer dir, or flattens it onto a
//!   rootfs, resolving every path inside the root; it also verifies a dir against a tar.
//! - [`tarball`] writes the tar format itself; [`compress`] the gzip/zstd streams;
//!   [`commit`] runs the whole pipeline into the store.
//!
//! Overlay format: a whiteout is a character device 0/0 (or, since Linux 6.7, an empty file
//! with the `overlay.whiteout` xattr); an opaque directory has `overlay.opaque` = `y`. In a
//! layer tar these are `.wh.NAME` and `.wh..wh..opq`.

pub mod apply;
pub mod commit;
pub mod compress;
pub mod diff;
mod igzip;
pub mod pgzip;
pub mod tarball;

/// The prefix of a whiteout entry in a layer tar.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The entry that marks its directory opaque in a layer tar.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Which xattr namespace overlayfs uses for its own attributes: `trusted.overlay.*` when mounted
/// by root, `user.overlay.*` with the `userxattr` option in a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayXattrs {
    Trusted,
    User,
}

impl OverlayXattrs {
    /// The namespace this process should write in: `trusted` needs CAP_SYS_ADMIN in the
    /// initial user namespace (root in a user namespace of its own, such as an unprivileged
    /// strata's container, gets `user`, and overlayfs its `userxattr` option).
    pub fn for_this_process() -> Self {
        if rustix::process::geteuid().is_root() && in_initial_user_namespace() {
            OverlayXattrs::Trusted
        } else {
            OverlayXattrs::User
        }
    }

    /// The name of the opaque-directory xattr.
    pub fn opaque(self) -> &'static str {
        match self {
            OverlayXattrs::Trusted => "trusted.overlay.opaque",
            OverlayXattrs::User => "user.overlay.opaque",
        }
    }
}

/// Whether this process runs in the initial user namespace (its uid map is the identity of
/// every id).
fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").map_or(true, |map| {
        map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
    })
}

/// Whether `name` is one of overlayfs's own xattrs, in either namespace. They never go into a
/// layer tar, and a layer tar that carries them has them dropped: they would change how
/// overlayfs reads the layer (opaque dirs, redirects).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Whether an overlay xattr value of `name` on a file marks it as a whiteout (Linux 6.7+).
pub fn is_whiteout_xattr(name: &[u8]) -> bool {
    name == b"trusted.overlay.whiteout" || name == b"user.overlay.whiteout"
}

/// Xattrs a layer tar does not carry besides overlay's own: SELinux labels belong to the host
/// that wrote the file, not to the image.
pub fn is_host_only_xattr(name: &[u8]) -> bool {
    name == b"security.selinux"
}

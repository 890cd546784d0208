//! `info`: what strata will do on this host, for bug reports and CI logs: the store and what
//! it holds, the storage driver, and the kernel features the sandbox and the mounts use.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use super::{Context, human_size};
use crate::cli::{InfoArgs, ListFormat};

pub fn info(ctx: &Context, args: &InfoArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let images = store.records()?.len();
    let (blobs, blob_bytes) = files_and_bytes(&store.root().join("blobs/sha256"));
    let (layers, _) = files_and_bytes(&store.root().join("layers"));
    let driver = super::mount::storage_driver(ctx).to_string();
    let euid = rustix::process::geteuid().as_raw();
    let kernel = rustix::system::uname();
    let kernel = format!(
        "{} {}",
        kernel.release().to_string_lossy(),
        kernel.machine().to_string_lossy()
    );
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlayfs = filesystems.split_whitespace().any(|f| f == "overlay");
    let dev_fuse = rustix::fs::access(
        "/dev/fuse",
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    )
    .is_ok();
    let daemon = layerfs::fuse::daemon_program()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let cgroups = runner::host_cgroups().unwrap_or("none");
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Seccomp:"));
    match args.format {
        ListFormat::Json => ctx.printer.out(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "root": store.root(),
            "images": images,
            "blobs": blobs,
            "blob_bytes": blob_bytes,
            "layers": layers,
            "storage_driver": driver,
            "euid": euid,
            "kernel": kernel,
            "overlayfs": overlayfs,
            "dev_fuse": dev_fuse,
            "fuse_daemon": daemon,
            "cgroups": cgroups,
            "seccomp": seccomp,
        })),
        ListFormat::Table => {
            let yes = |b: bool| if b { "yes" } else { "no" };
            for (key, value) in [
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("store", store.root().display().to_string()),
                (
                    "contents",
                    format!(
                        "{}, {} ({}), {}",
                        count(images as u64, "image"),
                        count(blobs, "blob"),
                        human_size(blob_bytes),
                        count(layers, "extracted layer")
                    ),
                ),
                (
                    "storage driver",
                    format!("{driver} (--storage-driver or STRATA_STORAGE_DRIVER)"),
                ),
                (
                    "user",
                    if euid == 0 {
                        "root".to_owned()
                    } else {
                        format!("uid {euid}: containers in a user namespace")
                    },
                ),
                ("kernel", kernel),
                ("overlayfs", yes(overlayfs).to_owned()),
                (
                    "FUSE",
                    format!(
                        "/dev/fuse usable: {}; daemon: {}",
                        yes(dev_fuse),
                        if daemon.is_empty() {
                            "not found"
                        } else {
                            &daemon
                        }
                    ),
                ),
                ("cgroups", cgroups.to_owned()),
                ("seccomp", yes(seccomp).to_owned()),
            ] {
                ctx.printer.out(format!("{key:<15} {value}"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `1 image`, `2 images`.
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// How many files are under `dir` and their size in bytes (0, 0 when it is missing).
fn files_and_bytes(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .fold((0, 0), |(n, bytes), m| (n + 1, bytes + m.len()))
}

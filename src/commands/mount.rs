//! `mount IMAGE DIR` and `umount DIR`: an image's layers as a writable union at a directory.
//!
//! A mount lives in `ROOT/containers/mount-<hash of DIR>/`: its `upper/` and `work/` dirs and
//! `mount.json`, which records what `umount` needs (the mount point, the driver, the FUSE
//! daemon's pid) and the layers it uses. `umount` unmounts (lazily if busy, and also a FUSE
//! mount whose daemon was killed) and removes that folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use layerfs::digest::digest_of;
use layerfs::layer::commit::ensure_extracted;
use layerfs::mount::{StorageDriver, UnionSpec, is_mount_point, mount_union, unmount_union};
use layerfs::store::{Store, remove_tree};
use serde::{Deserialize, Serialize};

use super::Context;
use crate::cli::{self, MountArgs, UmountArgs};

/// The driver `--storage-driver` (or `STRATA_STORAGE_DRIVER`) asks for; overlay by default.
pub fn storage_driver(ctx: &Context) -> StorageDriver {
    match ctx.storage_driver {
        Some(cli::StorageDriver::Fuse) => StorageDriver::Fuse,
        Some(cli::StorageDriver::Overlay) | None => StorageDriver::Overlay,
    }
}

/// What `ROOT/containers/mount-*/mount.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct MountRecord {
    target: PathBuf,
    image: String,
    image_id: String,
    driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    daemon_pid: Option<u32>,
    /// The layer dirs, bottom first.
    layers: Vec<PathBuf>,
}

const RECORD: &str = "mount.json";

/// The folder of the mount at `target`.
fn mount_home(store: &Store, target: &Path) -> PathBuf {
    let hash = digest_of(target.as_os_str().as_encoded_bytes());
    store
        .containers_dir()
        .join(format!("mount-{}", &hash.digest()[..16]))
}

pub fn mount(ctx: &Context, args: &MountArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let target = args
        .dir
        .canonicalize()
        .with_context(|| format!("mount point {}", args.dir.display()))?;
    if !target.is_dir() {
        bail!("mount point {} is not a directory", target.display());
    }
    let home = mount_home(&store, &target);
    if home.join(RECORD).exists() {
        bail!(
            "{} is already mounted by strata (strata umount it first)",
            target.display()
        );
    }
    if is_mount_point(&target) {
        bail!("{} is already a mount point", target.display());
    }
    let lock = store.lock_content()?;
    let image = store.resolve_image(&args.image)?;
    let mut lowers = ensure_extracted(
        &store,
        image.manifest.layers(),
        &image.config.rootfs.diff_ids,
    )
    .with_context(|| format!("extracting the layers of {}", args.image))?;
    if lowers.is_empty() {
        lowers.push(store.empty_dir());
    }
    drop(lock);
    let spec = UnionSpec {
        lowers,
        upper: home.join("upper"),
        work: home.join("work"),
    };
    let made = (|| -> anyhow::Result<()> {
        for d in [&spec.upper, &spec.work] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let union = mount_union(storage_driver(ctx), &spec, &target)
            .with_context(|| format!("mounting {} at {}", args.image, target.display()))?;
        if let Some(why) = union.fallback() {
            ctx.printer.note(format!("strata: {why}"));
        }
        let record = MountRecord {
            target: target.clone(),
            image: args.image.clone(),
            image_id: image.id().to_string(),
            driver: union.driver().to_string(),
            daemon_pid: union.daemon_pid(),
            layers: spec.lowers.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).expect("records serialize");
        let tmp = home.join(format!("{RECORD}.tmp"));
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, home.join(RECORD)))
            .with_context(|| format!("recording the mount in {}", home.display()))?;
        // From here on the mount outlives this command.
        union.detach();
        Ok(())
    })();
    if let Err(e) = made {
        let _ = remove_tree(&home);
        return Err(e);
    }
    ctx.printer.out(target.display());
    Ok(ExitCode::SUCCESS)
}

pub fn umount(ctx: &Context, args: &UmountArgs) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    // A mount whose FUSE daemon is dead cannot be stat'ed: fall back to the plain path.
    let target = args
        .dir
        .canonicalize()
        .or_else(|_| std::path::absolute(&args.dir))
        .with_context(|| format!("mount point {}", args.dir.display()))?;
    let (home, record) = find_mount(&store, &target)?
        .with_context(|| format!("{} is not mounted by strata mount", target.display()))?;
    unmount_union(&record.target, record.daemon_pid)
        .with_context(|| format!("unmounting {}", record.target.display()))?;
    remove_tree(&home)
        .with_context(|| format!("removing the writable layer in {}", home.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The folder and record of the mount at `target`.
fn find_mount(store: &Store, target: &Path) -> anyhow::Result<Option<(PathBuf, MountRecord)>> {
    let read = |home: &Path| -> anyhow::Result<Option<MountRecord>> {
        let path = home.join(RECORD);
        match std::fs::read(&path) {
            Ok(data) => Ok(Some(
                serde_json::from_slice(&data)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    };
    let home = mount_home(store, target);
    if let Some(r) = read(&home)? {
        return Ok(Some((home, r)));
    }
    // The same directory by another spelling (a symlink on the way, say).
    let dir = store.containers_dir();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let home = e?.path();
        if !home
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("mount-"))
        {
            continue;
        }
        if let Some(r) = read(&home)?
            && (r.target == target || r.target.canonicalize().is_ok_and(|t| t == target))
        {
            return Ok(Some((home, r)));
        }
    }
    Ok(None)
}

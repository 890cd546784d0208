//! RUN steps in the runner's sandbox: the parent's layers as an overlay mounted inside the
//! container's own mount namespace with the step's fresh upper dir, the command's output
//! streamed back line by line, Ctrl-C honoured, and the mount points the sandbox had to create
//! removed from the upper dir so they never become part of the layer.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use layerfs::mount::{StorageDriver, UnionSpec, mount_union};
use layerfs::store::Store;
use runner::{Command, Exit, Input, Output, Rootfs, Spec};

use super::exec::{Network, StepError};

/// What a RUN step runs.
#[derive(Debug, Clone)]
pub struct RunStep {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: Option<String>,
    pub network: Network,
    /// Files to put in the root for the step only (`RUN <<EOF` scripts): path, content.
    pub files: Vec<(String, String)>,
    /// `RUN --mount`s, as bind mounts of host paths.
    pub binds: Vec<runner::BindMount>,
    /// Extra `/etc/hosts` lines (`build --add-host`): (name, address).
    pub extra_hosts: Vec<(String, String)>,
    /// Resource limits (`build --ulimit`).
    pub ulimits: Vec<runner::Ulimit>,
    /// The size of `/dev/shm` (`build --shm-size`).
    pub shm_size: Option<u64>,
}

/// Runs `step` over `lowers` with writes going to `upper` (and `work`); `mountpoint` is an
/// empty directory for the container's root. Returns when the command exited 0.
pub fn run_step(
    _store: &Store,
    step: &RunStep,
    layers: &UnionSpec,
    mountpoint: &Path,
    driver: StorageDriver,
    cancel: &AtomicBool,
    on_line: &mut dyn FnMut(String),
) -> Result<(), StepError> {
    for (path, content) in &step.files {
        let p = layers.upper.join(path.trim_start_matches('/'));
        std::fs::write(&p, content).map_err(|e| layerfs::Error::io("write", &p, e))?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| layerfs::Error::io("chmod", &p, e))?;
    }
    // A FUSE union is mounted by its daemon before the sandbox starts (it cannot be mounted
    // inside the container's namespaces as overlayfs is) and given to it as a ready root.
    let fuse_root = match driver {
        StorageDriver::Fuse => Some(mount_union(driver, layers, mountpoint)?),
        StorageDriver::Overlay => None,
    };
    let rootfs = match &fuse_root {
        Some(m) => Rootfs::Dir(m.target().to_owned()),
        None => Rootfs::Union {
            layers: layers.clone(),
            mountpoint: mountpoint.to_owned(),
        },
    };
    let mut spec = Spec::new(rootfs, step.argv.clone());
    spec.env = step.env.clone();
    spec.cwd = step.workdir.clone();
    spec.user = step.user.clone();
    spec.hostname = "strata-build".into();
    spec.mounts = step.binds.clone();
    spec.extra_hosts = step.extra_hosts.clone();
    spec.ulimits = step.ulimits.clone();
    spec.shm_size = step.shm_size;
    spec.network = match step.network {
        Network::Host => runner::Network::Host,
        Network::None => runner::Network::None,
    };
    // One pipe for both streams keeps their order.
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| StepError::Other(format!("creating the output pipe: {e}")))?;
    let write2 = write
        .try_clone()
        .map_err(|e| StepError::Other(format!("creating the output pipe: {e}")))?;
    let mut child = Command::new(spec)
        .stdin(Input::Null)
        .stdout(Output::Fd(write))
        .stderr(Output::Fd(write2))
        .spawn()
        .map_err(|e| StepError::Other(e.to_string()))?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(std::fs::File::from(read));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut killed = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => on_line(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if cancel.load(Ordering::Relaxed) && !killed {
            let _ = child.kill();
            killed = true;
        }
    }
    let _ = reader.join();
    let status = child.wait().map_err(|e| StepError::Other(e.to_string()))?;
    if let Some(m) = fuse_root {
        m.unmount()?;
    }
    remove_stubs(layers, child.created_mountpoints(), &step.binds);
    for (path, _) in &step.files {
        let _ = std::fs::remove_file(layers.upper.join(path.trim_start_matches('/')));
    }
    if killed {
        return Err(StepError::Other("interrupted".into()));
    }
    if status.oom_killed {
        return Err(StepError::OutOfMemory);
    }
    match status.exit {
        Exit::Code(0) => Ok(()),
        Exit::Code(c) => Err(StepError::ExitCode(c)),
        Exit::Signal(s) => Err(StepError::Signal(s)),
    }
}

/// Removes the mount points the sandbox created (the image lacked them) from the upper dir:
/// each bind's own stub (an empty file or directory) and the empty directories made to hold
/// it up to the topmost one the image lacked (`created`), and then the directories that were
/// copied up only to hold those. What the command itself wrote there stays.
fn remove_stubs(layers: &UnionSpec, created: &[String], binds: &[runner::BindMount]) {
    for path in created {
        let rel = Path::new(path.trim_start_matches('/'));
        for bind in binds {
            let Ok(below) = Path::new(bind.destination.trim_start_matches('/')).strip_prefix(rel)
            else {
                continue;
            };
            // The stub, then its parents, innermost first, while they are empty.
            for inner in below.ancestors().filter(|a| !a.as_os_str().is_empty()) {
                if !remove_stub(&layers.upper.join(rel).join(inner)) {
                    break;
                }
            }
        }
        if !remove_stub(&layers.upper.join(rel)) {
            continue;
        }
        for parent in rel
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
        {
            if !is_copy_up_artifact(layers, parent) {
                break;
            }
            let _ = std::fs::remove_dir(layers.upper.join(parent));
        }
    }
}

/// Removes an empty directory or an empty file; whether it did.
fn remove_stub(p: &Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::remove_dir(p).is_ok(),
        Ok(md) if md.is_file() && md.len() == 0 => std::fs::remove_file(p).is_ok(),
        _ => false,
    }
}

/// Whether the upper dir's `rel` is an empty directory that only mirrors a lower one (same
/// mode and owner, not opaque): a copy-up the stub caused, not a change of the command's.
fn is_copy_up_artifact(layers: &UnionSpec, rel: &Path) -> bool {
    let up = layers.upper.join(rel);
    let Ok(md) = std::fs::symlink_metadata(&up) else {
        return false;
    };
    let empty = std::fs::read_dir(&up)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !md.is_dir() || !empty {
        return false;
    }
    let opaque = layerfs::layer::diff::read_xattrs(&up)
        .map(|x| x.iter().any(|(k, _)| k.ends_with(b"overlay.opaque")))
        .unwrap_or(true);
    if opaque {
        return false;
    }
    let lower: Option<PathBuf> = layers
        .lowers
        .iter()
        .rev()
        .map(|l| l.join(rel))
        .find(|p| p.symlink_metadata().is_ok());
    lower
        .and_then(|l| std::fs::symlink_metadata(l).ok())
        .is_some_and(|l| {
            l.is_dir() && l.mode() == md.mode() && l.uid() == md.uid() && l.gid() == md.gid()
        })
}

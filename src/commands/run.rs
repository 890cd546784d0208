//! `run`: a command in a new container of an image.
//!
//! The image's layers (extracted if needed) become the lower layers of an overlay whose upper
//! and work dirs live in a reusable container directory, `ROOT/containers/slot-<n>/`; the
//! runner mounts it over that directory, inside the container's own mount namespace.
//! strata keeps no stopped containers: what the container wrote goes when the
//! command ends (`--rm` is accepted for docker compatibility). Exit codes are docker's: the
//! command's own, 128+N when signal N killed it, 125 for strata's own errors, 126 when the
//! command cannot be executed, 127 when it does not exist.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use layerfs::layer::commit::ensure_extracted;
use layerfs::mount::UnionSpec;
use layerfs::reference::Reference;
use layerfs::store::Store;
use registry_client::{ConnectOptions, PullOptions};
use runner::{Attach, BindMount, Command, Input, Limits, Rootfs, Spec};

use super::Context;
use crate::cli::{NetworkMode, ProgressMode, PullPolicy, RunArgs, StorageDriver};

/// Pulls the image as `--pull` says: `missing` (docker's and podman's default) when the store
/// has nothing by that name or id, `always` every time, `never` not at all.
fn pull_as_needed(ctx: &Context, store: &Store, args: &RunArgs) -> anyhow::Result<()> {
    let platform = args
        .platform
        .as_deref()
        .map(registry_client::Platform::parse)
        .transpose()?;
    let wanted = match args.pull {
        PullPolicy::Never => false,
        PullPolicy::Always => true,
        // An image of another platform than `--platform` asks for counts as missing.
        PullPolicy::Missing => match store.resolve_image(&args.image) {
            Err(layerfs::Error::ImageNotFound(_)) => true,
            Ok(image) => platform.as_ref().is_some_and(|p| {
                let c = &image.config;
                !p.matches(&c.os, &c.architecture, c.variant.as_deref())
            }),
            Err(_) => false,
        },
    };
    if !wanted {
        return Ok(());
    }
    let reference = Reference::parse(&args.image)?;
    let opts = PullOptions {
        platform,
        connect: ConnectOptions {
            tls_verify: args.tls_verify,
            ..ConnectOptions::default()
        },
        ..PullOptions::default()
    };
    super::registry::pull_with_progress(ctx, store, &reference, &opts, ProgressMode::Auto)?;
    Ok(())
}

/// The variables of an `--env-file`, as docker reads one: `KEY=VALUE` (the value as written,
/// quotes and all) or `KEY` (taken from this environment, when set) a line; blank lines and
/// lines starting with `#` are skipped.
fn read_env_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--env-file {}", path.display()))?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split_once('=').map_or(line, |(k, _)| k);
        if key.is_empty() || key.contains(char::is_whitespace) {
            bail!(
                "{}:{}: {line:?} is not KEY=VALUE (a variable name has no spaces)",
                path.display(),
                n + 1
            );
        }
        vars.push(line.to_owned());
    }
    Ok(vars)
}

/// The name prefix of the reusable container directories: `slot-<n>`.
const SLOT_PREFIX: &str = "slot-";

/// How long a container gets between its stop signal and SIGKILL (docker's default).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<ExitCode> {
    // Every option is checked before anything is pulled, extracted or mounted.
    let mut env_overrides = Vec::new();
    for file in &args.env_files {
        env_overrides.extend(read_env_file(file)?);
    }
    env_overrides.extend(args.env.iter().cloned());
    let capabilities = if args.privileged {
        runner::image::capabilities(&["ALL".to_owned()], &[])?
    } else {
        runner::image::capabilities(&args.cap_add, &args.cap_drop)?
    };
    let mut mounts: Vec<BindMount> = args
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<anyhow::Result<_>>()?;
    let mut tmpfs: Vec<runner::TmpfsMount> = args
        .tmpfs
        .iter()
        .map(|t| runner::TmpfsMount::parse(t))
        .collect::<Result<_, _>>()?;
    for spec in &args.mounts {
        match parse_mount(spec)? {
            LongMount::Bind(m) => mounts.push(m),
            LongMount::Tmpfs(m) => tmpfs.push(m),
        }
    }
    let ulimits = args
        .ulimit
        .iter()
        .map(|u| runner::Ulimit::parse(u))
        .collect::<Result<_, _>>()?;
    let memory = args.memory.as_deref().map(parse_bytes).transpose()?;

    let store = ctx.store()?;
    pull_as_needed(ctx, &store, &args)?;
    // Shared: `prune` waits until this container is done with its layers.
    let _content = store.lock_content()?;
    let image = store.resolve_image(&args.image)?;
    let lowers = ensure_extracted(
        &store,
        image.manifest.layers(),
        &image.config.rootfs.diff_ids,
    )
    .with_context(|| format!("extracting the layers of {}", args.image))?;
    let config = &image.config.config;

    let id = runner::new_container_id();
    let container = Slot::acquire(&store)?;
    let layers = UnionSpec {
        lowers: if lowers.is_empty() {
            vec![store.empty_dir()]
        } else {
            lowers
        },
        upper: container.path.join("upper"),
        work: container.path.join("work"),
    };
    // FUSE cannot be mounted inside the container's namespaces the way overlayfs is: its
    // daemon mounts the union here first (unmounting it when `fuse_root` goes, or when this
    // process dies), and the container gets that directory as its root.
    let fuse_root = if ctx.storage_driver == Some(StorageDriver::Fuse) {
        let mountpoint = container.path.join("rootfs");
        std::fs::create_dir_all(&mountpoint)
            .with_context(|| format!("creating {}", mountpoint.display()))?;
        Some(layerfs::mount::mount_union(
            layerfs::mount::StorageDriver::Fuse,
            &layers,
            &mountpoint,
        )?)
    } else {
        None
    };
    let rootfs = match &fuse_root {
        Some(m) => Rootfs::Dir(m.target().to_owned()),
        // The overlay covers the container's own directory, in the container's namespace.
        None => Rootfs::Union {
            layers,
            mountpoint: container.path.clone(),
        },
    };
    let mut spec = Spec::new(
        rootfs,
        runner::image::command_line(config, args.entrypoint.as_deref(), &args.command),
    );
    spec.env = runner::image::environment(
        config.env.as_deref().unwrap_or_default(),
        &env_overrides,
        |k| std::env::var(k).ok(),
    );
    spec.capabilities = capabilities;
    spec.privileged = args.privileged;
    spec.devices = args
        .devices
        .iter()
        .map(|d| parse_device(d))
        .collect::<anyhow::Result<_>>()?;
    spec.extra_hosts = args
        .add_hosts
        .iter()
        .map(|h| parse_add_host(h))
        .collect::<anyhow::Result<_>>()?;
    for server in &args.dns {
        anyhow::ensure!(
            server.parse::<std::net::IpAddr>().is_ok(),
            "--dns {server}: not an IP address"
        );
    }
    spec.dns = args.dns.clone();
    spec.shm_size = args.shm_size.as_deref().map(parse_bytes).transpose()?;
    for opt in &args.security_opts {
        match opt.as_str() {
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                spec.no_new_privileges = true;
            }
            "no-new-privileges=false" | "no-new-privileges:false" => {}
            "seccomp=unconfined" | "seccomp:unconfined" => spec.seccomp = false,
            other => bail!(
                "--security-opt {other}: strata knows no-new-privileges and seccomp=unconfined"
            ),
        }
    }
    spec.cwd = args
        .workdir
        .or_else(|| config.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    spec.user = args
        .user
        .or_else(|| config.user.clone())
        .filter(|u| !u.is_empty());
    spec.group_add = args.group_add;
    spec.hostname = args.hostname.unwrap_or_else(|| id[..12].to_owned());
    spec.network = match args.network {
        NetworkMode::Host => runner::Network::Host,
        NetworkMode::None => runner::Network::None,
    };
    spec.mounts = mounts;
    spec.tmpfs = tmpfs;
    spec.ulimits = ulimits;
    spec.read_only_rootfs = args.read_only;
    spec.limits = Limits {
        memory,
        cpus: args.cpus,
        pids: args.pids_limit,
    };
    if args.tty {
        // The caller's terminal size from the start (later changes follow it).
        spec.tty = Some(runner::caller_terminal_size().unwrap_or_default());
    }
    if spec.args.is_empty() {
        bail!(
            "no command specified: {} has no Entrypoint or Cmd",
            args.image
        );
    }
    let stop_signal = match config.stop_signal.as_deref() {
        Some(s) => runner::image::parse_signal(s)
            .with_context(|| format!("{}: invalid StopSignal {s:?}", args.image))?,
        None => libc::SIGTERM,
    };

    // From here on SIGTERM, SIGINT… are held and forwarded to the command once it runs.
    let mut attach = Attach::new(true)?;
    attach.stop_signal = stop_signal;
    attach.stop_timeout = STOP_TIMEOUT;
    attach.relay_stdin = args.interactive;
    let mut command = Command::new(spec);
    // With a terminal, stdin is relayed to it (with -i) rather than handed over.
    command.stdin(if args.interactive && !args.tty {
        Input::Inherit
    } else {
        Input::Null
    });
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let code = match e {
                runner::Error::CommandNotFound(_) => 127,
                runner::Error::CommandNotExecutable { .. } => 126,
                _ => 125,
            };
            ctx.printer.error(&anyhow::Error::new(e));
            return Ok(ExitCode::from(code));
        }
    };
    let printer = ctx.printer;
    let status = child.wait_attached(&attach, &mut |bytes| printer.out_bytes(bytes))?;
    drop(child);
    if let Some(m) = fuse_root {
        m.unmount()?;
    }
    container.release()?;
    if status.oom_killed {
        let limit = args.memory.as_deref().unwrap_or("?");
        let what = if status.exit == runner::Exit::Signal(libc::SIGKILL) {
            "its command"
        } else {
            "a process"
        };
        ctx.printer.note(format!(
            "strata: container {}: {what} was killed: out of memory (--memory {limit})",
            &id[..12]
        ));
    }
    Ok(ExitCode::from(status.code().clamp(0, 255) as u8))
}

/// A container directory, `ROOT/containers/slot-<n>/{upper,work}`, held (`flock`) by one
/// run at a time and reused: the run leaves it empty, and the next one empties it first in
/// case a killed strata could not. Reusing it instead of making and removing directories
/// each time matters: on ext4 without a journal every freed directory block is a
/// synchronous discard, and every new inode a scan past the recently deleted ones.
struct Slot {
    path: PathBuf,
    /// Open while the slot is held; closing it releases the lock.
    lock: Option<std::fs::File>,
}

impl Slot {
    /// The first slot no other run holds (a new one when all are held).
    fn acquire(store: &Store) -> anyhow::Result<Slot> {
        for n in 0.. {
            let path = store.containers_dir().join(format!("{SLOT_PREFIX}{n}"));
            for sub in ["upper", "work"] {
                let dir = path.join(sub);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let lock = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    let slot = Slot {
                        path,
                        lock: Some(lock),
                    };
                    slot.empty()?;
                    return Ok(slot);
                }
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
            }
        }
        unreachable!("a slot is free or made")
    }

    /// Removes what a container left in the slot.
    fn empty(&self) -> anyhow::Result<()> {
        for sub in ["upper", "work"] {
            let dir = self.path.join(sub);
            let entries =
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
                runner::remove_container_tree(&entry.path(), Path::new("/proc/self/exe"))
                    .with_context(|| {
                        format!("emptying the container directory {}", dir.display())
                    })?;
            }
        }
        Ok(())
    }

    /// Empties the slot now, reporting a failure, and releases it.
    fn release(mut self) -> anyhow::Result<()> {
        let result = self.empty();
        self.lock = None;
        result
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = self.empty();
        }
    }
}

/// `-v SRC:DST[:OPTIONS]` (options: `ro`, `rw`, and docker's SELinux and propagation ones,
/// which change nothing here).
fn parse_volume(v: &str) -> anyhow::Result<BindMount> {
    let parts: Vec<&str> = v.split(':').collect();
    let (source, destination, options) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        [_] => bail!("-v {v}: anonymous volumes are not supported; give SRC:DST"),
        _ => bail!("-v {v}: expected SRC:DST[:ro]"),
    };
    if !source.starts_with('/') {
        bail!("-v {v}: named volumes are not supported; the source must be an absolute host path");
    }
    if !destination.starts_with('/') {
        bail!("-v {v}: the destination must be an absolute path in the container");
    }
    let mut read_only = false;
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" | "readonly" => read_only = true,
            "rw" | "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" | "rshared"
            | "shared" | "nocopy" => {}
            other => bail!("-v {v}: unknown option {other:?}"),
        }
    }
    Ok(BindMount {
        source: PathBuf::from(source),
        destination: destination.to_owned(),
        read_only,
    })
}

/// `--device HOST[:CONTAINER[:PERMISSIONS]]` (the permissions, docker's cgroup rule, change
/// nothing here: the node's own modes apply).
fn parse_device(spec: &str) -> anyhow::Result<runner::DeviceMapping> {
    let mut parts = spec.split(':');
    let host = parts.next().unwrap_or_default();
    let container = parts.next().unwrap_or(host);
    anyhow::ensure!(
        host.starts_with('/') && container.starts_with('/'),
        "--device {spec}: expected HOST[:CONTAINER] with absolute paths"
    );
    anyhow::ensure!(
        parts
            .next()
            .is_none_or(|p| !p.is_empty() && p.chars().all(|c| "rwm".contains(c))),
        "--device {spec}: the permissions are a mix of r, w and m"
    );
    Ok(runner::DeviceMapping {
        host: PathBuf::from(host),
        container: container.to_owned(),
    })
}

/// `--add-host NAME:IP` (or `NAME=IP`; an IPv6 address keeps its colons).
pub(super) fn parse_add_host(spec: &str) -> anyhow::Result<(String, String)> {
    let (name, address) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .with_context(|| format!("--add-host {spec}: expected NAME:IP"))?;
    let address = address.trim_start_matches('[').trim_end_matches(']');
    anyhow::ensure!(
        !name.is_empty() && address.parse::<std::net::IpAddr>().is_ok(),
        "--add-host {spec}: expected NAME:IP"
    );
    Ok((name.to_owned(), address.to_owned()))
}

/// A `--mount` (docker's long syntax).
enum LongMount {
    Bind(BindMount),
    Tmpfs(runner::TmpfsMount),
}

/// `--mount type=bind|tmpfs,…` as docker takes it: `source`/`src`, `target`/`destination`/
/// `dst`, `readonly`/`ro` (alone or `=true|false|1|0`), `tmpfs-size`, `tmpfs-mode`; a bind
/// source must exist (unlike `-v`, which makes a missing directory). docker's propagation and
/// consistency fields change nothing here; volumes (the default type) need a daemon.
fn parse_mount(spec: &str) -> anyhow::Result<LongMount> {
    let (mut kind, mut source, mut target) = ("volume", None, None);
    let mut read_only = false;
    let mut tmpfs_data = Vec::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match (key, value) {
            ("type", Some(v)) => kind = v,
            ("source" | "src", Some(v)) => source = Some(v),
            ("target" | "destination" | "dst", Some(v)) => target = Some(v),
            ("readonly" | "ro", None | Some("true" | "1")) => read_only = true,
            ("readonly" | "ro", Some("false" | "0")) => read_only = false,
            ("tmpfs-size", Some(v)) => {
                tmpfs_data.push(("size".to_owned(), parse_bytes(v)?.to_string()));
            }
            ("tmpfs-mode", Some(v)) => {
                u32::from_str_radix(v, 8)
                    .map_err(|_| anyhow::anyhow!("--mount {spec}: tmpfs-mode {v} is not octal"))?;
                tmpfs_data.push(("mode".to_owned(), v.to_owned()));
            }
            ("bind-propagation" | "consistency" | "bind-nonrecursive", Some(_)) => {}
            _ => bail!("--mount {spec}: unknown field {field:?}"),
        }
    }
    let target = target.with_context(|| format!("--mount {spec}: no target=PATH"))?;
    anyhow::ensure!(
        target.starts_with('/'),
        "--mount {spec}: the target must be an absolute path in the container"
    );
    match kind {
        "bind" => {
            let source = source.with_context(|| format!("--mount {spec}: no source=PATH"))?;
            anyhow::ensure!(
                source.starts_with('/'),
                "--mount {spec}: the source must be an absolute host path"
            );
            anyhow::ensure!(
                Path::new(source).exists(),
                "--mount {spec}: bind source path does not exist: {source}"
            );
            Ok(LongMount::Bind(BindMount {
                source: PathBuf::from(source),
                destination: target.to_owned(),
                read_only,
            }))
        }
        "tmpfs" => {
            anyhow::ensure!(source.is_none(), "--mount {spec}: a tmpfs has no source");
            let mut m = runner::TmpfsMount::parse(target)?;
            m.read_only = read_only;
            m.data = tmpfs_data;
            Ok(LongMount::Tmpfs(m))
        }
        "volume" => bail!(
            "--mount {spec}: volumes are not supported (strata has no daemon to keep them); use type=bind"
        ),
        other => bail!("--mount {spec}: type {other} is not one of bind, tmpfs"),
    }
}

/// A size as docker takes it: a number with an optional unit b, k, m, g or t (powers of
/// 1024, case-insensitive, an optional trailing `b`): `32m`, `1g`, `512kb`.
pub(super) fn parse_bytes(s: &str) -> anyhow::Result<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let shift = match unit.strip_suffix('b').unwrap_or(unit) {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => bail!("invalid size {s:?}: expected a number with an optional unit b, k, m, g or t"),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .with_context(|| {
            format!("invalid size {s:?}: expected a number with an optional unit b, k, m, g or t")
        })?;
    Ok((value * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("32m").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 << 29);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("32x").is_err());
    }

    #[test]
    fn volumes_parse_like_docker() {
        let m = parse_volume("/host/dir:/data:ro").unwrap();
        assert_eq!(
            (
                m.source.to_str().unwrap(),
                m.destination.as_str(),
                m.read_only
            ),
            ("/host/dir", "/data", true)
        );
        assert!(!parse_volume("/a:/b").unwrap().read_only);
        assert!(!parse_volume("/a:/b:rw,z").unwrap().read_only);
        assert!(
            parse_volume("data:/b")
                .unwrap_err()
                .to_string()
                .contains("named volumes")
        );
        assert!(
            parse_volume("/b")
                .unwrap_err()
                .to_string()
                .contains("anonymous")
        );
        assert!(parse_volume("/a:rel").is_err());
        assert!(parse_volume("/a:/b:bogus").is_err());
    }
}

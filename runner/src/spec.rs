//! What to run and how: the description of one container that [`crate::Command`] starts.
//!
//! A [`Spec`] is plain data (it crosses to the setup helper as JSON); the docker semantics
//! that turn an image config and `run` flags into one live in [`crate::image`].

use std::path::PathBuf;

use layerfs::mount::UnionSpec;
use serde::{Deserialize, Serialize};

/// The search path a container gets when its environment has none (docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One container: its process, its filesystem, its isolation and its limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The command and its arguments. A first word without `/` is looked up in the
    /// container's `PATH`.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs, in order. `PATH` defaults to [`DEFAULT_PATH`] and `HOME` to the
    /// user's home directory from the image's /etc/passwd; `HOSTNAME` is always set.
    pub env: Vec<String>,
    /// The working directory inside the container; created (owned by root) if missing.
    pub cwd: String,
    /// `name|uid[:group|gid]`, resolved through the image's /etc/passwd and /etc/group;
    /// `None` is root.
    pub user: Option<String>,
    /// More supplementary groups (`--group-add`): names in the image's /etc/group, or gids.
    pub group_add: Vec<String>,
    pub hostname: String,
    pub network: Network,
    pub rootfs: Rootfs,
    /// Host paths bind-mounted into the container, in order.
    pub mounts: Vec<BindMount>,
    /// Fresh tmpfs mounts (`--tmpfs`), after the bind mounts.
    pub tmpfs: Vec<TmpfsMount>,
    /// Resource limits of the command (`--ulimit`); the others are inherited.
    pub ulimits: Vec<Ulimit>,
    /// Mount the root filesystem read-only (the mounts above keep their own mode).
    pub read_only_rootfs: bool,
    pub limits: Limits,
    /// A pseudo-terminal of this size for the command's stdin, stdout and stderr; `None`
    /// for plain file descriptors.
    pub tty: Option<TtySize>,
    /// The capabilities of a root command (docker's default set unless changed; see
    /// [`crate::image::capabilities`]); the bounding set of any other user's. The seccomp
    /// filter allows what these grant, as docker's profile does.
    pub capabilities: Vec<caps::Capability>,
    /// Host device nodes bound into the container (`--device`).
    pub devices: Vec<DeviceMapping>,
    /// Extra `/etc/hosts` lines (`--add-host NAME:IP`): (name, address).
    pub extra_hosts: Vec<(String, String)>,
    /// Nameservers for `/etc/resolv.conf` in place of the host's (`--dns`).
    pub dns: Vec<String>,
    /// The size of `/dev/shm` in bytes (`--shm-size`; 64 MiB when `None`).
    pub shm_size: Option<u64>,
    /// `--security-opt no-new-privileges`: the command cannot gain privileges (setuid bits
    /// and file capabilities stop working).
    pub no_new_privileges: bool,
    /// `--security-opt seccomp=unconfined` sets this false: no seccomp filter.
    pub seccomp: bool,
    /// `--privileged`, as docker has it: no seccomp filter, every host device in `/dev`,
    /// `/sys` and the cgroup hierarchies writable, nothing masked or read-only under `/proc`.
    /// (The capabilities are the caller's to set: docker gives every one.)
    pub privileged: bool,
}

/// The container's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// The host's network namespace.
    Host,
    /// A network namespace of its own with only the loopback interface, up.
    None,
}

/// The container's root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Rootfs {
    /// A ready directory, bind-mounted as the root.
    Dir(PathBuf),
    /// Image layers mounted as an overlay at `mountpoint` (an empty directory) inside the
    /// container's own mount namespace, so that no mount is ever left in the host's: the
    /// container's writes end up in `layers.upper`. The overlay is `volatile` (the upper dir
    /// is not synced when the container ends: the caller removes or commits it), and
    /// `layers.work` is emptied afterwards.
    Union {
        layers: UnionSpec,
        mountpoint: PathBuf,
    },
}

/// A host device node bound into the container (`--device HOST[:CONTAINER]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// A character or block device on the host.
    pub host: PathBuf,
    /// Where it appears in the container (absolute).
    pub container: String,
}

/// A host path bind-mounted (recursively) into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// An absolute host path; a missing one is created as a directory (as `docker run -v`
    /// does).
    pub source: PathBuf,
    /// An absolute path inside the container; created if missing.
    pub destination: String,
    pub read_only: bool,
}

/// A tmpfs mounted into the container (`--tmpfs PATH[:OPTIONS]`), gone with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// An absolute path inside the container; created if missing.
    pub destination: String,
    pub read_only: bool,
    /// `exec`, `suid` and `dev` lift docker's default `noexec`, `nosuid`, `nodev`.
    pub exec: bool,
    pub suid: bool,
    pub dev: bool,
    /// tmpfs's own options: `size`, `mode`, `uid`, `gid`, `nr_inodes`, `nr_blocks`.
    pub data: Vec<(String, String)>,
}

impl TmpfsMount {
    /// `PATH[:OPTIONS]` as `docker run --tmpfs` takes it: comma-separated `ro`/`rw`,
    /// `exec`/`noexec`, `suid`/`nosuid`, `dev`/`nodev` and tmpfs's `KEY=VALUE` options.
    pub fn parse(spec: &str) -> crate::Result<TmpfsMount> {
        let invalid = |why: String| crate::Error::Invalid(format!("--tmpfs {spec}: {why}"));
        let (path, options) = spec.split_once(':').unwrap_or((spec, ""));
        if !path.starts_with('/') {
            return Err(invalid("the path must be absolute".into()));
        }
        let mut m = TmpfsMount {
            destination: path.to_owned(),
            read_only: false,
            exec: false,
            suid: false,
            dev: false,
            data: Vec::new(),
        };
        for option in options.split(',').filter(|o| !o.is_empty()) {
            match option.split_once('=') {
                None => match option {
                    "ro" | "rw" => m.read_only = option == "ro",
                    "exec" | "noexec" => m.exec = option == "exec",
                    "suid" | "nosuid" => m.suid = option == "suid",
                    "dev" | "nodev" => m.dev = option == "dev",
                    _ => return Err(invalid(format!("unknown option {option}"))),
                },
                Some((k @ ("size" | "mode" | "uid" | "gid" | "nr_inodes" | "nr_blocks"), v)) => {
                    m.data.push((k.to_owned(), v.to_owned()));
                }
                Some((k, _)) => return Err(invalid(format!("unknown option {k}"))),
            }
        }
        Ok(m)
    }
}

/// A resource limit of the command (`--ulimit NAME=SOFT[:HARD]`, `-1` for unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// The `RLIMIT_*` number.
    pub resource: i32,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl Ulimit {
    /// The names docker takes, and the limits they are.
    const NAMES: [(&'static str, i32); 15] = [
        ("core", libc::RLIMIT_CORE as i32),
        ("cpu", libc::RLIMIT_CPU as i32),
        ("data", libc::RLIMIT_DATA as i32),
        ("fsize", libc::RLIMIT_FSIZE as i32),
        ("locks", libc::RLIMIT_LOCKS as i32),
        ("memlock", libc::RLIMIT_MEMLOCK as i32),
        ("msgqueue", libc::RLIMIT_MSGQUEUE as i32),
        ("nice", libc::RLIMIT_NICE as i32),
        ("nofile", libc::RLIMIT_NOFILE as i32),
        ("nproc", libc::RLIMIT_NPROC as i32),
        ("rss", libc::RLIMIT_RSS as i32),
        ("rtprio", libc::RLIMIT_RTPRIO as i32),
        ("rttime", libc::RLIMIT_RTTIME as i32),
        ("sigpending", libc::RLIMIT_SIGPENDING as i32),
        ("stack", libc::RLIMIT_STACK as i32),
    ];

    /// The limit's name, as `--ulimit` takes it.
    pub fn name(&self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|&&(_, r)| r == self.resource)
            .map_or("?", |&(n, _)| n)
    }

    /// `NAME=SOFT[:HARD]` as `docker run --ulimit` takes it (HARD defaults to SOFT; `-1` is
    /// unlimited); the soft limit may not be above the hard one.
    pub fn parse(spec: &str) -> crate::Result<Ulimit> {
        let invalid = |why: String| crate::Error::Invalid(format!("--ulimit {spec}: {why}"));
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| invalid("expected NAME=SOFT[:HARD]".into()))?;
        let resource = Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, r)| r)
            .ok_or_else(|| invalid(format!("unknown limit {name}")))?;
        let value = |v: &str| -> crate::Result<Option<u64>> {
            match v {
                "-1" | "unlimited" => Ok(None),
                _ => v
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid(format!("{v} is not a number"))),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (value(s)?, value(h)?),
            None => (value(values)?, value(values)?),
        };
        let above = match (soft, hard) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(s), Some(h)) => s > h,
        };
        if above {
            return Err(invalid("the soft limit is above the hard one".into()));
        }
        Ok(Ulimit {
            resource,
            soft,
            hard,
        })
    }
}

/// Resource limits, applied through a cgroup of the container's own (cgroup v2, v1 or
/// hybrid hosts). No limit, no cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes (swap may add as much again, as docker allows by default).
    pub memory: Option<u64>,
    /// CPU time as a number of CPUs (`0.5` is half of one).
    pub cpus: Option<f64>,
    /// The most processes (and threads) the container may have at once.
    pub pids: Option<i64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some()
    }
}

/// A terminal's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

impl Spec {
    /// A spec that runs `args` as root in `/` of `rootfs`, with the host's network, no
    /// mounts and no limits.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        Spec {
            args,
            env: Vec::new(),
            cwd: "/".to_owned(),
            user: None,
            group_add: Vec::new(),
            hostname: "strata".to_owned(),
            network: Network::Host,
            rootfs,
            mounts: Vec::new(),
            tmpfs: Vec::new(),
            ulimits: Vec::new(),
            read_only_rootfs: false,
            limits: Limits::default(),
            tty: None,
            capabilities: crate::caps::DEFAULT_CAPABILITIES.to_vec(),
            privileged: false,
            devices: Vec::new(),
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            shm_size: None,
            no_new_privileges: false,
            seccomp: true,
        }
    }

    /// Checks what can be checked before anything is started.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let invalid = |m: String| Err(crate::Error::Invalid(m));
        if self.args.is_empty() || self.args[0].is_empty() {
            return invalid(
                "no command to run: the image has no Entrypoint or Cmd and none was given".into(),
            );
        }
        if !self.cwd.starts_with('/') {
            return invalid(format!(
                "the working directory must be an absolute path, not {:?}",
                self.cwd
            ));
        }
        if self.hostname.is_empty()
            || self.hostname.len() > 64
            || self.hostname.contains(['/', '\0'])
        {
            return invalid(format!("invalid hostname {:?}", self.hostname));
        }
        for m in &self.mounts {
            if !m.source.is_absolute() {
                return invalid(format!(
                    "bind mount source {} must be an absolute path (named volumes are not supported)",
                    m.source.display()
                ));
            }
            if !m.destination.starts_with('/') {
                return invalid(format!(
                    "bind mount destination {:?} must be an absolute path",
                    m.destination
                ));
            }
            if m.destination.split('/').any(|c| c == "..") {
                return invalid(format!(
                    "bind mount destination {:?} must not contain ..",
                    m.destination
                ));
            }
        }
        for kv in &self.env {
            if !kv.contains('=') || kv.starts_with('=') || kv.contains('\0') {
                return invalid(format!(
                    "invalid environment entry {kv:?}: expected KEY=VALUE"
                ));
            }
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return invalid("a command argument holds a NUL byte".into());
        }
        if let Some(m) = self.limits.memory
            && m < 6 * 1024 * 1024
        {
            return invalid("the memory limit must be at least 6 MiB".into());
        }
        if let Some(c) = self.limits.cpus
            && !(c > 0.0 && c.is_finite())
        {
            return invalid(format!("invalid CPU limit {c}: expected a positive number"));
        }
        if let Some(p) = self.limits.pids
            && p <= 0
        {
            return invalid(format!(
                "invalid process limit {p}: expected a positive number"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::new(Rootfs::Dir("/tmp".into()), vec!["true".into()])
    }

    #[test]
    fn validation_names_the_bad_field() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.args.clear();
        assert!(s.validate().unwrap_err().to_string().contains("no command"));
        let mut s = spec();
        s.cwd = "rel".into();
        assert!(s.validate().unwrap_err().to_string().contains("\"rel\""));
        let mut s = spec();
        s.mounts.push(BindMount {
            source: "vol".into(),
            destination: "/x".into(),
            read_only: false,
        });
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("named volumes")
        );
        let mut s = spec();
        s.env.push("NOVALUE".into());
        assert!(s.validate().unwrap_err().to_string().contains("NOVALUE"));
        let mut s = spec();
        s.limits.memory = Some(1024);
        assert!(s.validate().is_err());
    }

    #[test]
    fn round_trips_as_json() {
        let mut s = spec();
        s.rootfs = Rootfs::Union {
            layers: UnionSpec {
                lowers: vec!["/a".into(), "/b".into()],
                upper: "/u".into(),
                work: "/w".into(),
            },
            mountpoint: "/m".into(),
        };
        s.limits.memory = Some(1 << 30);
        let back: Spec = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{s:?}"));
    }
}

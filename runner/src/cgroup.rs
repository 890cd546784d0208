//! A container's cgroup: its limits (memory, CPU, processes), its OOM kills, and its
//! removal. Works on cgroup v2 hosts, v1 hosts and hybrid ones (v1 controllers beside an
//! empty v2 hierarchy, where crun gives up): a container gets `strata/<name>` in the
//! unified hierarchy, or in each v1 hierarchy that holds a controller it needs.
//!
//! youki's libcgroups was left aside: it expects a systemd or v2 layout for most of what is
//! needed here and costs far more to build than these few file writes.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::spec::Limits;

/// The directory every container cgroup goes under, in each hierarchy.
const PARENT: &str = "strata";

/// The default CFS period (docker's).
const CPU_PERIOD_US: u64 = 100_000;

/// How long removal waits for the container's last processes to go.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A cgroup controller strata sets limits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Controller::Memory => "--memory",
            Controller::Cpu => "--cpus",
            Controller::Pids => "--pids-limit",
        }
    }
}

/// How this host mounts cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// The unified hierarchy at this mount point.
    V2(PathBuf),
    /// v1 hierarchies: mount point and the controllers (and names) it holds; on hybrid
    /// hosts also the mount point of the (controller-less) unified hierarchy.
    V1 {
        hierarchies: Vec<(PathBuf, Vec<String>)>,
        unified: Option<PathBuf>,
    },
}

impl Layout {
    /// Reads the layout from mountinfo: v2 when `/sys/fs/cgroup` itself is cgroup2.
    fn from_mountinfo(mountinfo: &str) -> Option<Layout> {
        let mut v1 = Vec::new();
        let mut unified_root = None;
        let mut unified = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut r = right.split(' ');
            let (fstype, _source, options) = (r.next(), r.next(), r.next().unwrap_or(""));
            match fstype {
                Some("cgroup2") if mount_point == "/sys/fs/cgroup" => {
                    unified_root = Some(PathBuf::from(mount_point));
                }
                Some("cgroup2") => unified = Some(PathBuf::from(mount_point)),
                Some("cgroup") => {
                    let controllers = options.split(',').map(str::to_owned).collect();
                    v1.push((PathBuf::from(mount_point), controllers));
                }
                _ => {}
            }
        }
        match unified_root {
            Some(root) => Some(Layout::V2(root)),
            None if !v1.is_empty() => Some(Layout::V1 {
                hierarchies: v1,
                unified,
            }),
            None => None,
        }
    }

    /// How this host mounts cgroups, in a word: `v2`, `v1` or `hybrid` (v1 controllers and a
    /// controller-less unified hierarchy); `None` when it mounts none.
    pub(crate) fn describe_host() -> Option<&'static str> {
        match Layout::detect().ok()? {
            Layout::V2(_) => Some("v2"),
            Layout::V1 { unified: None, .. } => Some("v1"),
            Layout::V1 { .. } => Some("hybrid"),
        }
    }

    pub(crate) fn detect() -> Result<Layout> {
        let info = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
        Layout::from_mountinfo(&info).ok_or_else(|| {
            Error::Invalid("resource limits need cgroups, and this host mounts none".into())
        })
    }
}

/// A container's cgroup; removed (after killing what is left in it) when dropped.
#[derive(Debug)]
pub(crate) struct Cgroup {
    /// The container's directory in each hierarchy used.
    dirs: Vec<PathBuf>,
    /// The directory whose files report OOM kills (`memory.events` or `memory.oom_control`).
    oom_file: Option<PathBuf>,
}

impl Cgroup {
    /// Makes the cgroup `strata/<name>` with `limits` set.
    pub(crate) fn create(name: &str, limits: &Limits) -> Result<Cgroup> {
        let mut wanted = Vec::new();
        if limits.memory.is_some() {
            wanted.push(Controller::Memory);
        }
        if limits.cpus.is_some() {
            wanted.push(Controller::Cpu);
        }
        if limits.pids.is_some() {
            wanted.push(Controller::Pids);
        }
        let mut cgroup = Cgroup {
            dirs: Vec::new(),
            oom_file: None,
        };
        // On failure, `cgroup` removes what was made so far when dropped.
        match Layout::detect()? {
            Layout::V2(root) => cgroup.create_v2(&root, name, &wanted, limits)?,
            Layout::V1 { hierarchies, .. } => {
                cgroup.create_v1(&hierarchies, name, &wanted, limits)?;
            }
        }
        Ok(cgroup)
    }

    fn create_v2(
        &mut self,
        root: &Path,
        name: &str,
        wanted: &[Controller],
        limits: &Limits,
    ) -> Result<()> {
        let available = read(&root.join("cgroup.controllers"))?;
        for c in wanted {
            if !available.split_whitespace().any(|a| a == c.name()) {
                return Err(Error::Invalid(format!(
                    "{} needs the {} cgroup controller, which this host does not offer",
                    c.flag(),
                    c.name()
                )));
            }
        }
        let enable: String = wanted.iter().map(|c| format!("+{} ", c.name())).collect();
        let parent = root.join(PARENT);
        make_dir(&parent)?;
        write(&root.join("cgroup.subtree_control"), enable.trim_end())?;
        write(&parent.join("cgroup.subtree_control"), enable.trim_end())?;
        let dir = parent.join(name);
        make_dir(&dir)?;
        self.dirs.push(dir.clone());
        if let Some(m) = limits.memory {
            write(&dir.join("memory.max"), &m.to_string())?;
            write_if_present(&dir.join("memory.swap.max"), &m.to_string())?;
            self.oom_file = Some(dir.join("memory.events"));
        }
        if let Some(c) = limits.cpus {
            write(
                &dir.join("cpu.max"),
                &format!("{} {CPU_PERIOD_US}", cpu_quota(c)),
            )?;
        }
        if let Some(p) = limits.pids {
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }

    fn create_v1(
        &mut self,
        hierarchies: &[(PathBuf, Vec<String>)],
        name: &str,
        wanted: &[Controller],
        limits: &Limits,
    ) -> Result<()> {
        for &c in wanted {
            let Some((mount, _)) = hierarchies
                .iter()
                .find(|(_, opts)| opts.iter().any(|o| o == c.name()))
            else {
                return Err(Error::Invalid(format!(
                    "{} needs the {} cgroup controller, which this host does not mount",
                    c.flag(),
                    c.name()
                )));
            };
            let dir = mount.join(PARENT).join(name);
            if !self.dirs.contains(&dir) {
                make_dir(&mount.join(PARENT))?;
                make_dir(&dir)?;
                self.dirs.push(dir.clone());
            }
            match c {
                Controller::Memory => {
                    let m = limits.memory.unwrap_or_default();
                    write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                    // docker lets a container swap as much again as its memory limit.
                    write_if_present(
                        &dir.join("memory.memsw.limit_in_bytes"),
                        &(m.saturating_mul(2)).to_string(),
                    )?;
                    self.oom_file = Some(dir.join("memory.oom_control"));
                }
                Controller::Cpu => {
                    let cpus = limits.cpus.unwrap_or_default();
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &cpu_quota(cpus).to_string())?;
                }
                Controller::Pids => {
                    write(
                        &dir.join("pids.max"),
                        &limits.pids.unwrap_or_default().to_string(),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Moves process `pid` (and so everything it will start) into the cgroup.
    pub(crate) fn add(&self, pid: i32) -> Result<()> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// How many processes the kernel's OOM killer killed in the cgroup.
    pub(crate) fn oom_kills(&self) -> u64 {
        let Some(file) = &self.oom_file else {
            return 0;
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|text| parse_counter(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// Kills whatever still runs in the cgroup and removes it.
    pub(crate) fn remove(&mut self) -> Result<()> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        while let Some(dir) = self.dirs.last().cloned() {
            loop {
                for pid in read(&dir.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        // SAFETY: kill takes plain integers; a stale pid only gets ESRCH.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(error) => return Err(Error::Cgroup { path: dir, error }),
                }
            }
            self.dirs.pop();
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::warn!("{e}");
        }
    }
}

/// The CFS quota in microseconds per period for `cpus` CPUs.
fn cpu_quota(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

/// `key N` from a flat-keyed cgroup file.
fn parse_counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn make_dir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(Error::Cgroup {
            path: path.to_owned(),
            error,
        }),
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|error| Error::Cgroup {
        path: path.to_owned(),
        error,
    })
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|error| Error::Cgroup {
        path: path.to_owned(),
        error,
    })
}

fn write_if_present(path: &Path, value: &str) -> Result<()> {
    match fs::write(path, value) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other.map_err(|error| Error::Cgroup {
            path: path.to_owned(),
            error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    const V2: &str =
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    const COMOUNTED: &str =
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";

    #[test]
    fn layouts_are_told_apart() {
        let Some(Layout::V1 {
            hierarchies: h,
            unified,
        }) = Layout::from_mountinfo(HYBRID)
        else {
            panic!("hybrid should be v1");
        };
        assert_eq!(
            unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(h.len(), 3);
        assert!(
            h.iter()
                .any(|(p, c)| p == Path::new("/sys/fs/cgroup/memory")
                    && c.contains(&"memory".to_owned()))
        );
        assert_eq!(
            Layout::from_mountinfo(V2),
            Some(Layout::V2("/sys/fs/cgroup".into()))
        );
        let Some(Layout::V1 { hierarchies: h, .. }) = Layout::from_mountinfo(COMOUNTED) else {
            panic!("v1");
        };
        assert!(h[0].1.contains(&"cpuacct".to_owned()) && h[0].1.contains(&"cpu".to_owned()));
        assert_eq!(Layout::from_mountinfo(""), None);
    }

    #[test]
    fn counters_and_quotas() {
        assert_eq!(
            parse_counter("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(
            parse_counter("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(parse_counter("oom 1\n", "oom_kill"), None);
        assert_eq!(cpu_quota(0.5), 50_000);
        assert_eq!(cpu_quota(2.0), 200_000);
        assert_eq!(cpu_quota(0.001), 1000);
    }
}

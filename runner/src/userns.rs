//! The user namespace of an unprivileged strata: the caller's user is root in the container.
//! With `newuidmap`/`newgidmap` and a range for the user in /etc/subuid and /etc/subgid,
//! container ids 1… map to that range (so images with other users work); otherwise the one
//! id is all there is (and setgroups(2) is denied, as the kernel requires).

use std::path::Path;
use std::process::Command;

use crate::error::{Error, IoContext, Result};

/// One range of a subordinate id file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubRange {
    start: u32,
    count: u32,
}

/// Writes the uid and gid maps of process `pid`'s (new) user namespace.
pub(crate) fn write_id_maps(pid: i32) -> Result<()> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name);
    let ranges = (
        sub_range(Path::new("/etc/subuid"), name.as_deref(), uid),
        sub_range(Path::new("/etc/subgid"), name.as_deref(), uid),
    );
    if let (Some(u), Some(g)) = ranges
        && which("newuidmap")
        && which("newgidmap")
    {
        run_mapper("newuidmap", pid, uid, u)?;
        run_mapper("newgidmap", pid, gid, g)?;
        return Ok(());
    }
    let proc = Path::new("/proc").join(pid.to_string());
    std::fs::write(proc.join("setgroups"), "deny").at("write", &proc.join("setgroups"))?;
    std::fs::write(proc.join("uid_map"), format!("0 {uid} 1\n"))
        .at("write", &proc.join("uid_map"))?;
    std::fs::write(proc.join("gid_map"), format!("0 {gid} 1\n"))
        .at("write", &proc.join("gid_map"))?;
    Ok(())
}

/// `newuidmap PID 0 ID 1 1 START COUNT` (and the same for gids).
fn run_mapper(program: &str, pid: i32, id: u32, range: SubRange) -> Result<()> {
    let out = Command::new(program)
        .args([
            pid.to_string(),
            "0".into(),
            id.to_string(),
            "1".into(),
            "1".into(),
        ])
        .args([range.start.to_string(), range.count.to_string()])
        .output()
        .at("run", Path::new(program))?;
    if !out.status.success() {
        return Err(Error::Setup(format!(
            "{program} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// The first range of `file` for the user `name` or `id`.
fn sub_range(file: &Path, name: Option<&str>, id: u32) -> Option<SubRange> {
    parse_sub_ids(&std::fs::read_to_string(file).ok()?, name, id)
}

fn parse_sub_ids(text: &str, name: Option<&str>, id: u32) -> Option<SubRange> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != id && Some(who) != name {
            return None;
        }
        let range = SubRange {
            start: start.parse().ok()?,
            count: count.parse().ok()?,
        };
        (range.count > 0).then_some(range)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let text = "alice:100000:65536\n# x\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(
            parse_sub_ids(text, Some("alice"), 1000),
            Some(SubRange {
                start: 100_000,
                count: 65_536
            })
        );
        assert_eq!(
            parse_sub_ids(text, None, 1001).map(|r| r.start),
            Some(200_000)
        );
        assert_eq!(parse_sub_ids(text, Some("bob"), 1002), None);
        assert_eq!(parse_sub_ids(text, Some("carol"), 1003), None);
    }
}

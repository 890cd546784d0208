//! The container's user: `name|uid[:group|gid]` as docker takes it, resolved through the
//! image's own /etc/passwd and /etc/group. The files are opened inside the root with
//! `openat2(RESOLVE_IN_ROOT)`, so a hostile image's symlinks cannot point the lookup at the
//! host's files.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, IdKind, Result};
use crate::sys;

/// Files larger than this are refused rather than read.
const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// Who the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group among them, as docker passes them).
    pub groups: Vec<u32>,
    /// The home directory from /etc/passwd, `/` without an entry.
    pub home: String,
}

impl User {
    /// root, with home `/root` when /etc/passwd says nothing else.
    fn root() -> User {
        User {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".to_owned(),
        }
    }
}

/// Resolves `spec` (`name|uid[:group|gid]`) through `rootfs`/etc/passwd and
/// `rootfs`/etc/group, both opened inside `rootfs`. An empty spec is root.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<User> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = rustix::fs::open(rootfs, flags, Mode::empty())
        .map_err(|e| Error::io("open root", rootfs, e.into()))?;
    resolve_user_in(root.as_fd(), spec)
}

/// [`resolve_user`] on an open root directory.
pub(crate) fn resolve_user_in(root: BorrowedFd<'_>, spec: &str) -> Result<User> {
    let passwd = read_account_file(root, "/etc/passwd")?;
    let group = read_account_file(root, "/etc/group")?;
    resolve(spec, passwd.as_deref(), group.as_deref())
}

/// Adds the `--group-add` groups `extra` (names, through `root`/etc/group, or gids) to the
/// supplementary groups of `user`.
pub(crate) fn add_groups_in(root: BorrowedFd<'_>, user: &mut User, extra: &[String]) -> Result<()> {
    if extra.is_empty() {
        return Ok(());
    }
    let group = read_account_file(root, "/etc/group")?;
    add_groups(user, extra, group.as_deref().unwrap_or(""))
}

/// The pure part of [`add_groups_in`].
fn add_groups(user: &mut User, extra: &[String], group: &str) -> Result<()> {
    for g in extra {
        let gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| Error::UnknownId {
                    kind: IdKind::Group,
                    name: g.clone(),
                })?,
        };
        if !user.groups.contains(&gid) {
            user.groups.push(gid);
        }
    }
    Ok(())
}

/// Reads an account file inside `root`; `None` when the image has none.
fn read_account_file(root: BorrowedFd<'_>, path: &str) -> Result<Option<String>> {
    let file = match sys::open_in_root(root, path, OFlags::RDONLY) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut data = Vec::new();
    file.take(MAX_ACCOUNT_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io("read", path, e))?;
    if data.len() as u64 > MAX_ACCOUNT_FILE {
        return Err(Error::Invalid(format!(
            "{path} in the image is larger than 16 MiB"
        )));
    }
    Ok(Some(String::from_utf8_lossy(&data).into_owned()))
}

/// One line of /etc/passwd.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// One line of /etc/group.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3],
        })
    })
}

/// The pure part: `spec` against the contents of /etc/passwd and /etc/group.
fn resolve(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<User> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let unknown = |kind, name: &str| Error::UnknownId {
        kind,
        name: name.to_owned(),
    };

    let mut user = User::root();
    let mut name: Option<&str> = None;
    if !user_part.is_empty() {
        let entry = match user_part.parse::<u32>() {
            Ok(uid) => {
                user.uid = uid;
                user.gid = 0;
                user.home = "/".to_owned();
                passwd_entries(passwd).find(|e| e.uid == uid)
            }
            Err(_) => Some(
                passwd_entries(passwd)
                    .find(|e| e.name == user_part)
                    .ok_or_else(|| unknown(IdKind::User, user_part))?,
            ),
        };
        if let Some(e) = entry {
            user.uid = e.uid;
            user.gid = e.gid;
            user.home = if e.home.is_empty() {
                "/".to_owned()
            } else {
                e.home.to_owned()
            };
            name = Some(e.name);
        }
    } else if let Some(e) = passwd_entries(passwd).find(|e| e.uid == 0) {
        user.home = e.home.to_owned();
        name = Some(e.name);
    }

    match group_part.filter(|g| !g.is_empty()) {
        Some(g) => {
            user.gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(group)
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| unknown(IdKind::Group, g))?,
            };
            // An explicit group replaces the supplementary groups, as in docker.
            user.groups = vec![user.gid];
        }
        None => {
            user.groups = vec![user.gid];
            if let Some(n) = name {
                for e in group_entries(group) {
                    if e.members.split(',').any(|m| m.trim() == n) && !user.groups.contains(&e.gid)
                    {
                        user.groups.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        app:x:1000:1000:app:/home/app:/bin/sh\n\
        broken line\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str =
        "root:x:0:\napp:x:1000:\nwheel:x:10:root,app\naudio:x:29:app\nnogroup:x:65534:\n";

    fn r(spec: &str) -> Result<User> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_resolve_with_home_and_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        assert_eq!(u.groups, vec![1000, 10, 29]);
        let root = r("").unwrap();
        assert_eq!(
            (root.uid, root.gid, root.groups.clone()),
            (0, 0, vec![0, 10])
        );
        assert_eq!(root.home, "/root");
    }

    #[test]
    fn numeric_ids_need_no_entry() {
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/app"));
        let u = r("4242:4343").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (4242, 4343, vec![4343]));
    }

    #[test]
    fn added_groups_join_the_supplementary_ones() {
        let mut u = r("root").unwrap();
        assert_eq!(u.groups, vec![0, 10]);
        add_groups(
            &mut u,
            &["4242".to_owned(), "audio".to_owned(), "wheel".to_owned()],
            GROUP,
        )
        .unwrap();
        assert_eq!(u.groups, vec![0, 10, 4242, 29], "no group twice");
        let err = add_groups(&mut u, &["nosuch".to_owned()], GROUP).unwrap_err();
        assert!(err.to_string().contains("nosuch"), "{err}");
    }

    #[test]
    fn explicit_group_replaces_supplementary_groups() {
        let u = r("app:audio").unwrap();
        assert_eq!((u.uid, u.gid, u.groups), (1000, 29, vec![29]));
        let u = r("nobody:0").unwrap();
        assert_eq!((u.uid, u.gid), (65534, 0));
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let e = r("ghost").unwrap_err().to_string();
        assert_eq!(
            e,
            "unable to find user ghost: no matching entries in passwd file"
        );
        let e = r("app:ghosts").unwrap_err().to_string();
        assert_eq!(
            e,
            "unable to find group ghosts: no matching entries in group file"
        );
        let e = resolve("app", None, None).unwrap_err().to_string();
        assert!(e.contains("user app"));
    }

    #[test]
    fn files_are_read_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:7:7::/evil:/bin/sh\n").unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        // An absolute symlink must resolve inside the root, not on the host.
        std::os::unix::fs::symlink(outside.path().join("passwd"), dir.path().join("etc/passwd"))
            .unwrap();
        assert!(matches!(
            resolve_user(dir.path(), "evil"),
            Err(Error::UnknownId {
                kind: IdKind::User,
                ..
            })
        ));
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        assert_eq!(resolve_user(dir.path(), "app").unwrap().uid, 1000);
    }
}

//! Names to ids through a root filesystem's `/etc/passwd` and `/etc/group`, read inside the root
//! (a symlinked `/etc/passwd` in an untrusted image cannot point at the host's).

use std::io::Read;
use std::path::Path;

/// A user and group pair, numeric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Reads `etc/NAME` inside `root`; empty when it does not exist.
fn read_in_root(root: &Path, name: &str) -> String {
    let Ok(r) = pathrs::Root::open(root) else {
        return String::new();
    };
    let Ok(handle) = r.resolve(format!("etc/{name}")) else {
        return String::new();
    };
    let mut s = String::new();
    if let Ok(mut f) = handle.reopen(pathrs::flags::OpenFlags::O_RDONLY) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Finds `name` in a colon-separated database; returns the fields.
fn lookup<'a>(db: &'a str, name: &str) -> Option<Vec<&'a str>> {
    db.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
}

/// Resolves `--chown=USER[:GROUP]` as docker does: names through the image's files, numbers
/// as they are; without a group, the gid is the uid's number.
pub fn resolve_chown(root: &Path, spec: &str) -> Result<Owner, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            let passwd = read_in_root(root, "passwd");
            lookup(&passwd, user)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find user {user}: no matching entries in passwd file")
                })?
        }
    };
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read_in_root(root, "group");
                lookup(&groups, g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?
            }
        },
    };
    Ok(Owner { uid, gid })
}

/// Resolves a `USER` value (`name|uid[:group|gid]`) to the owner of what WORKDIR creates: the
/// user's primary group when no group is given.
pub fn resolve_user(root: &Path, spec: &str) -> Result<Owner, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(root, "passwd");
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[2] == uid.to_string()),
        Err(_) => lookup(&passwd, user),
    };
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| {
                format!("unable to find user {user}: no matching entries in passwd file")
            })?,
    };
    let gid = match group {
        Some(_) => resolve_chown(root, &format!("{uid}:{}", group.unwrap_or_default()))?.gid,
        None => entry
            .and_then(|f| f.get(3).and_then(|g| g.parse().ok()))
            .unwrap_or(0),
    };
    Ok(Owner { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:\napp:x:1001:\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn chown_specs() {
        let r = rootfs();
        assert_eq!(
            resolve_chown(r.path(), "1000:1000").unwrap(),
            Owner {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(
            resolve_chown(r.path(), "app").unwrap(),
            Owner {
                uid: 1000,
                gid: 1000
            }
        );
        assert_eq!(
            resolve_chown(r.path(), "app:staff").unwrap(),
            Owner { uid: 1000, gid: 50 }
        );
        assert_eq!(
            resolve_chown(r.path(), "7").unwrap(),
            Owner { uid: 7, gid: 7 }
        );
        assert!(
            resolve_chown(r.path(), "ghost")
                .unwrap_err()
                .contains("ghost")
        );
        assert!(
            resolve_chown(r.path(), "app:ghosts")
                .unwrap_err()
                .contains("ghosts")
        );
    }

    #[test]
    fn user_specs_take_the_primary_group() {
        let r = rootfs();
        assert_eq!(
            resolve_user(r.path(), "app").unwrap(),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            resolve_user(r.path(), "1000").unwrap(),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            resolve_user(r.path(), "1000:staff").unwrap(),
            Owner { uid: 1000, gid: 50 }
        );
        assert_eq!(
            resolve_user(r.path(), "4242").unwrap(),
            Owner { uid: 4242, gid: 0 }
        );
    }

    #[test]
    fn a_passwd_symlink_out_of_the_root_is_not_followed_out() {
        let r = tempfile::tempdir().unwrap();
        std::fs::create_dir(r.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.path().join("etc/passwd")).unwrap();
        // Resolved inside the root, the link points at itself's target in the root: nothing.
        assert!(resolve_chown(r.path(), "root").is_err());
    }
}

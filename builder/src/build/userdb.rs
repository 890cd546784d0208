//! Owners for COPY `--chown` and WORKDIR, by docker's rules, through the image's own
//! `/etc/passwd` and `/etc/group` — read inside the root by the runner's resolver, so a
//! symlinked `/etc/passwd` in an untrusted image cannot point at the host's.

use std::path::Path;

use runner::user::resolve_user as resolve_in_image;

/// A user and group pair, numeric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
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
        Err(_) => resolve_in_image(root, user).map_err(|e| e.to_string())?.uid,
    };
    let gid = match group {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                resolve_in_image(root, &format!("{uid}:{g}"))
                    .map_err(|e| e.to_string())?
                    .gid
            }
        },
    };
    Ok(Owner { uid, gid })
}

/// Resolves a `USER` value (`name|uid[:group|gid]`) to the owner of what WORKDIR creates: the
/// user's primary group when no group is given.
pub fn resolve_user(root: &Path, spec: &str) -> Result<Owner, String> {
    let u = resolve_in_image(root, spec).map_err(|e| e.to_string())?;
    Ok(Owner {
        uid: u.uid,
        gid: u.gid,
    })
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

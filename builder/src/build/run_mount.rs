//! `RUN --mount=…` specs, parsed (pure). The executor makes the mounts: `bind` (the context or
//! a stage, read-only unless `rw`, whose writes are then thrown away), `cache` (a directory kept
//! in the store across builds, by `id`), `tmpfs` (an empty scratch directory). `secret` and
//! `ssh` need `--secret`/`--ssh`, which strata does not have: they are refused by name.

use serde::Serialize;

/// `type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMount {
    pub kind: MountKind,
    /// Where it appears in the container (absolute, or relative to the working directory).
    pub target: String,
    /// The path in the context, stage or image (`bind`); a subpath of the cache (`cache`).
    pub source: Option<String>,
    /// `from=`: a stage or an image (bind and cache).
    pub from: Option<String>,
    pub read_write: bool,
    /// The cache's identity; defaults to the target.
    pub id: String,
    pub sharing: Sharing,
    /// Mode, owner of a new cache directory.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

fn boolean(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(format!("{key}={v}: not a boolean")),
    }
}

/// Parses the value of one `--mount=`.
pub fn parse(spec: &str) -> Result<RunMount, String> {
    let mut kind = MountKind::Bind;
    let (mut target, mut source, mut from, mut id) = (None, None, None, None);
    let (mut ro, mut rw) = (None, None);
    let mut sharing = Sharing::Shared;
    let (mut mode, mut uid, mut gid) = (None, 0, 0);
    for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let need = || {
            value
                .map(str::to_owned)
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            "type" => {
                kind = match value.unwrap_or_default() {
                    "bind" => MountKind::Bind,
                    "cache" => MountKind::Cache,
                    "tmpfs" => MountKind::Tmpfs,
                    t @ ("secret" | "ssh") => {
                        return Err(format!(
                            "type={t} needs --{t}, which strata does not support"
                        ));
                    }
                    t => return Err(format!("unknown mount type {t:?} (bind, cache, tmpfs)")),
                };
            }
            "target" | "dst" | "destination" => target = Some(need()?),
            "source" | "src" => source = Some(need()?),
            "from" => from = Some(need()?),
            "id" => id = Some(need()?),
            "ro" | "readonly" => ro = Some(boolean(&key, value)?),
            "rw" | "readwrite" => rw = Some(boolean(&key, value)?),
            "sharing" => {
                sharing = match value.unwrap_or_default() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    s => return Err(format!("sharing={s}: use shared, private or locked")),
                };
            }
            "mode" => {
                let v = need()?;
                mode = Some(
                    u32::from_str_radix(&v, 8)
                        .map_err(|_| format!("mode={v}: not an octal mode"))?,
                );
            }
            "uid" => {
                uid = need()?
                    .parse()
                    .map_err(|_| format!("uid={}: not a number", value.unwrap_or_default()))?;
            }
            "gid" => {
                gid = need()?
                    .parse()
                    .map_err(|_| format!("gid={}: not a number", value.unwrap_or_default()))?;
            }
            // tmpfs size and bind-propagation settings change nothing here.
            "size" | "bind-propagation" | "required" | "env" => {}
            other => return Err(format!("unknown --mount option {other:?}")),
        }
    }
    let target = target.ok_or("a mount needs target=")?;
    let read_write = match (kind, ro, rw) {
        (_, _, Some(rw)) => rw,
        (_, Some(ro), None) => !ro,
        (MountKind::Bind, None, None) => false,
        _ => true,
    };
    if kind == MountKind::Tmpfs && (source.is_some() || from.is_some()) {
        return Err("a tmpfs mount takes no source or from".into());
    }
    Ok(RunMount {
        kind,
        id: id.unwrap_or_else(|| target.clone()),
        target,
        source,
        from,
        read_write,
        sharing,
        mode: mode.unwrap_or(0o755),
        uid,
        gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_buildkit() {
        let b = parse("type=bind,target=/src").unwrap();
        assert_eq!(
            (b.kind, b.read_write, b.source.as_deref()),
            (MountKind::Bind, false, None)
        );
        let b = parse("target=/src,source=app,rw").unwrap();
        assert_eq!(
            (b.kind, b.read_write, b.source.as_deref()),
            (MountKind::Bind, true, Some("app"))
        );
        let c = parse("type=cache,target=/root/.cache").unwrap();
        assert_eq!(
            (c.read_write, c.id.as_str(), c.sharing, c.mode),
            (true, "/root/.cache", Sharing::Shared, 0o755)
        );
        let c =
            parse("type=cache,dst=/c,id=x,sharing=locked,mode=0700,uid=1000,gid=1000,ro").unwrap();
        assert_eq!(
            (c.read_write, c.id.as_str(), c.sharing, c.mode, c.uid),
            (false, "x", Sharing::Locked, 0o700, 1000)
        );
        assert_eq!(
            parse("type=tmpfs,target=/t,size=64m").unwrap().kind,
            MountKind::Tmpfs
        );
        assert_eq!(
            parse("type=bind,from=build,src=/out,target=/o")
                .unwrap()
                .from
                .as_deref(),
            Some("build")
        );
    }

    #[test]
    fn bad_specs_are_named() {
        assert!(parse("type=secret,id=x").unwrap_err().contains("--secret"));
        assert!(parse("type=ssh").unwrap_err().contains("--ssh"));
        assert!(parse("type=nfs,target=/x").unwrap_err().contains("nfs"));
        assert!(parse("type=cache").unwrap_err().contains("target"));
        assert!(
            parse("type=cache,target=/c,mode=999")
                .unwrap_err()
                .contains("999")
        );
        assert!(
            parse("type=cache,target=/c,colour=blue")
                .unwrap_err()
                .contains("colour")
        );
        assert!(parse("type=tmpfs,target=/t,from=x").is_err());
    }
}

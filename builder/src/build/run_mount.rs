//! `RUN --mount=…` specs, parsed (pure), with BuildKit's defaults and checks. The executor
//! makes the mounts: `bind` (the context or a stage, read-only unless `rw`, whose writes are
//! then thrown away), `cache` (a directory kept in the store across builds, by `id`, shared as
//! `sharing` says), `tmpfs` (an empty scratch directory), `secret` (a `--secret` of the build,
//! as a read-only file or an environment variable) and `ssh` (a socket that forwards to an
//! `--ssh` agent of the build).

use layerfs::store::CacheSharing;
use serde::Serialize;

/// `sharing=` of a cache mount.
pub type Sharing = CacheSharing;

/// `type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountKind {
    fn name(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        }
    }
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMount {
    pub kind: MountKind,
    /// Where it appears in the container (absolute, or relative to the working directory);
    /// `None` only for a secret that is given as an environment variable alone.
    pub target: Option<String>,
    /// The path in the context, stage or image (`bind`); a subpath of the cache (`cache`).
    pub source: Option<String>,
    /// `from=`: a stage or an image (bind and cache).
    pub from: Option<String>,
    pub read_write: bool,
    /// The cache's identity (defaults to the target), the secret's (defaults to the target's
    /// file name) or the ssh agent's (`default`).
    pub id: String,
    pub sharing: Sharing,
    /// Mode and owner of a new cache directory, of a secret's file or of an ssh socket.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A secret or ssh agent the build lacks is an error, rather than no mount.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// `env=`: the environment variable a secret's value is put in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

fn boolean(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(format!("{key}={v}: not a boolean")),
    }
}

/// Parses the `--mount=` values of one RUN. An ssh mount without a target gets BuildKit's
/// `/run/buildkit/ssh_agent.N`, N counting the step's ssh mounts from 0.
pub fn parse_all(specs: &[String]) -> Result<Vec<RunMount>, (String, String)> {
    let mut ssh = 0;
    specs
        .iter()
        .map(|spec| {
            let m = parse(spec, ssh).map_err(|e| (spec.clone(), e))?;
            if m.kind == MountKind::Ssh {
                ssh += 1;
            }
            Ok(m)
        })
        .collect()
}

/// Parses the value of one `--mount=`; `ssh_index` numbers the default target of an ssh one.
fn parse(spec: &str, ssh_index: usize) -> Result<RunMount, String> {
    let mut kind = MountKind::Bind;
    let (mut target, mut source, mut from, mut id, mut env) = (None, None, None, None, None);
    let (mut ro, mut rw, mut required) = (None, None, None);
    let mut sharing = None;
    let (mut mode, mut uid, mut gid) = (None, None, None);
    let mut size = false;
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
        let number = |radix: u32, what: &str| -> Result<u32, String> {
            let v = need()?;
            u32::from_str_radix(&v, radix).map_err(|_| format!("{key}={v}: not {what}"))
        };
        match key.as_str() {
            "type" => {
                kind = match value.unwrap_or_default() {
                    "bind" => MountKind::Bind,
                    "cache" => MountKind::Cache,
                    "tmpfs" => MountKind::Tmpfs,
                    "secret" => MountKind::Secret,
                    "ssh" => MountKind::Ssh,
                    t => {
                        return Err(format!(
                            "unknown mount type {t:?} (bind, cache, tmpfs, secret, ssh)"
                        ));
                    }
                };
            }
            "target" | "dst" | "destination" => target = Some(need()?),
            "source" | "src" => source = Some(need()?),
            "from" => from = Some(need()?),
            "id" => id = Some(need()?),
            "env" => env = Some(need()?),
            "ro" | "readonly" => ro = Some(boolean(&key, value)?),
            "rw" | "readwrite" => rw = Some(boolean(&key, value)?),
            "required" => required = Some(boolean(&key, value)?),
            "sharing" => {
                sharing = Some(match value.unwrap_or_default() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    s => return Err(format!("sharing={s}: use shared, private or locked")),
                });
            }
            "mode" => mode = Some(number(8, "an octal mode")?),
            "uid" => uid = Some(number(10, "a number")?),
            "gid" => gid = Some(number(10, "a number")?),
            "size" => size = true,
            // Propagation changes nothing for the mounts a step makes.
            "bind-propagation" => {}
            other => return Err(format!("unknown --mount option {other:?}")),
        }
    }
    let name = kind.name();
    let refuse = |what: &str| Err(format!("{what} is not allowed for a {name} mount"));
    if !matches!(kind, MountKind::Cache | MountKind::Secret | MountKind::Ssh) {
        for (set, key) in [(mode, "mode"), (uid, "uid"), (gid, "gid")] {
            if set.is_some() {
                return refuse(key);
            }
        }
    }
    if sharing.is_some() && kind != MountKind::Cache {
        return refuse("sharing");
    }
    if required.is_some() && !matches!(kind, MountKind::Secret | MountKind::Ssh) {
        return refuse("required");
    }
    if env.is_some() && kind != MountKind::Secret {
        return refuse("env");
    }
    if size && kind != MountKind::Tmpfs {
        return refuse("size");
    }
    if from.is_some() && matches!(kind, MountKind::Tmpfs | MountKind::Secret | MountKind::Ssh) {
        return refuse("from");
    }
    if source.is_some() && matches!(kind, MountKind::Tmpfs | MountKind::Ssh) {
        return refuse("source");
    }
    let (id, target, default_mode) = match kind {
        MountKind::Secret => {
            if source.is_some() && id.is_some() {
                return Err("a secret mount takes id or source, not both".into());
            }
            let id = match id.or_else(|| source.take()) {
                Some(id) => id,
                None => base_name(
                    target
                        .as_deref()
                        .ok_or("a secret mount needs id= or target=")?,
                ),
            };
            let target = match (target, &env) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{}", base_name(&id))),
            };
            (id, target, 0o400)
        }
        MountKind::Ssh => {
            let target = target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_index}"));
            (id.unwrap_or_else(|| "default".into()), Some(target), 0o600)
        }
        _ => {
            let target = target.ok_or("a mount needs target=")?;
            (id.unwrap_or_else(|| target.clone()), Some(target), 0o755)
        }
    };
    let read_write = match (kind, ro, rw) {
        (MountKind::Secret | MountKind::Ssh, _, _) => false,
        (_, _, Some(rw)) => rw,
        (_, Some(ro), None) => !ro,
        (MountKind::Bind, None, None) => false,
        _ => true,
    };
    Ok(RunMount {
        kind,
        id,
        target,
        source,
        from,
        read_write,
        sharing: sharing.unwrap_or(Sharing::Shared),
        mode: mode.unwrap_or(default_mode),
        uid: uid.unwrap_or(0),
        gid: gid.unwrap_or(0),
        required: required.unwrap_or(false),
        env,
    })
}

/// The last component of a path (`path.Base` as BuildKit uses it for secret ids and names).
fn base_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|b| !b.is_empty())
        .unwrap_or("/")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> Result<RunMount, String> {
        parse(spec, 0)
    }

    #[test]
    fn defaults_follow_buildkit() {
        let b = one("type=bind,target=/src").unwrap();
        assert_eq!(
            (b.kind, b.read_write, b.source.as_deref()),
            (MountKind::Bind, false, None)
        );
        let b = one("target=/src,source=app,rw").unwrap();
        assert_eq!(
            (b.kind, b.read_write, b.source.as_deref()),
            (MountKind::Bind, true, Some("app"))
        );
        let c = one("type=cache,target=/root/.cache").unwrap();
        assert_eq!(
            (c.read_write, c.id.as_str(), c.sharing, c.mode),
            (true, "/root/.cache", Sharing::Shared, 0o755)
        );
        let c =
            one("type=cache,dst=/c,id=x,sharing=locked,mode=0700,uid=1000,gid=1000,ro").unwrap();
        assert_eq!(
            (c.read_write, c.id.as_str(), c.sharing, c.mode, c.uid),
            (false, "x", Sharing::Locked, 0o700, 1000)
        );
        assert_eq!(
            one("type=tmpfs,target=/t,size=64m").unwrap().kind,
            MountKind::Tmpfs
        );
        assert_eq!(
            one("type=bind,from=build,src=/out,target=/o")
                .unwrap()
                .from
                .as_deref(),
            Some("build")
        );
    }

    #[test]
    fn secrets_default_to_run_secrets_read_only_0400() {
        let s = one("type=secret,id=tok").unwrap();
        assert_eq!(
            (
                s.kind,
                s.id.as_str(),
                s.target.as_deref(),
                s.mode,
                s.read_write,
                s.required
            ),
            (
                MountKind::Secret,
                "tok",
                Some("/run/secrets/tok"),
                0o400,
                false,
                false
            )
        );
        // The id defaults to the target's name; source= is another spelling of id=.
        let s = one("type=secret,target=/etc/app/key.pem,required,mode=0440,uid=7,gid=8").unwrap();
        assert_eq!(
            (s.id.as_str(), s.mode, s.uid, s.gid, s.required),
            ("key.pem", 0o440, 7, 8, true)
        );
        assert_eq!(one("type=secret,src=aws").unwrap().id, "aws");
        // rw is ignored: a secret is always read-only.
        assert!(!one("type=secret,id=a,rw").unwrap().read_write);
        // env= alone gives no file.
        let s = one("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(
            (s.target.as_deref(), s.env.as_deref()),
            (None, Some("TOKEN"))
        );
        let s = one("type=secret,id=tok,env=TOKEN,target=/t").unwrap();
        assert_eq!(s.target.as_deref(), Some("/t"));
    }

    #[test]
    fn ssh_mounts_are_numbered_from_zero() {
        let specs: Vec<String> = [
            "type=ssh",
            "type=cache,target=/c",
            "type=ssh,id=work,required",
            "type=ssh,target=/agent,mode=0666,uid=1000",
        ]
        .map(String::from)
        .to_vec();
        let m = parse_all(&specs).unwrap();
        assert_eq!(
            (m[0].id.as_str(), m[0].target.as_deref(), m[0].mode),
            ("default", Some("/run/buildkit/ssh_agent.0"), 0o600)
        );
        assert_eq!(
            (m[2].id.as_str(), m[2].target.as_deref(), m[2].required),
            ("work", Some("/run/buildkit/ssh_agent.1"), true)
        );
        assert_eq!(
            (m[3].target.as_deref(), m[3].mode, m[3].uid),
            (Some("/agent"), 0o666, 1000)
        );
    }

    #[test]
    fn bad_specs_are_named() {
        for (spec, named) in [
            ("type=nfs,target=/x", "nfs"),
            ("type=cache", "target"),
            ("type=cache,target=/c,mode=999", "999"),
            ("type=cache,target=/c,colour=blue", "colour"),
            ("type=tmpfs,target=/t,from=x", "from"),
            ("type=secret", "id="),
            ("type=secret,id=a,src=b", "both"),
            ("type=secret,id=a,from=x", "from"),
            ("type=ssh,source=x", "source"),
            ("type=bind,target=/b,required", "required"),
            ("type=bind,target=/b,mode=0600", "mode"),
            ("type=secret,id=a,sharing=locked", "sharing"),
            ("type=cache,target=/c,env=X", "env"),
        ] {
            let err = one(spec).unwrap_err();
            assert!(err.contains(named), "{spec}: {err}");
        }
        let err = parse_all(&["type=ssh".into(), "type=ssh,uid=x".into()]).unwrap_err();
        assert_eq!(err.0, "type=ssh,uid=x");
        assert!(err.1.contains("uid=x"), "{}", err.1);
    }
}

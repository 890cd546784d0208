//! docker's rules for turning an image config and `run` options into a container: how
//! Entrypoint and Cmd combine, how `-e` merges into Env, what a stop signal name means, what
//! `--cap-add` and `--cap-drop` leave.
//! Pure functions, shared by `strata run` and the builder's RUN steps.

use caps::Capability;
use layerfs::config::ContainerConfig;

use crate::caps::DEFAULT_CAPABILITIES;

/// The command line of a container: the image's Entrypoint followed by its Cmd, where
/// arguments given to `run` replace Cmd and `--entrypoint` replaces Entrypoint (an empty one
/// removes it) and drops Cmd, as docker does.
pub fn command_line(
    config: &ContainerConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> Vec<String> {
    let (mut line, cmd) = match entrypoint {
        Some("") => (Vec::new(), args.to_vec()),
        Some(e) => (vec![e.to_owned()], args.to_vec()),
        None => {
            let cmd = if args.is_empty() {
                config.cmd.clone().unwrap_or_default()
            } else {
                args.to_vec()
            };
            (config.entrypoint.clone().unwrap_or_default(), cmd)
        }
    };
    line.extend(cmd);
    line
}

/// The container's environment: the image's `Env`, then each override in order
/// (`KEY=VALUE`, or `KEY` alone for the value `lookup` gives, left out when it gives none);
/// a key set again keeps its first position.
pub fn environment(
    image_env: &[String],
    overrides: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::with_capacity(image_env.len() + overrides.len());
    let mut set = |kv: String| {
        let key = kv
            .split_once('=')
            .map_or(kv.as_str(), |(k, _)| k)
            .to_owned();
        match env
            .iter_mut()
            .find(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
        {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    };
    for kv in image_env {
        set(kv.clone());
    }
    for o in overrides {
        if o.contains('=') {
            set(o.clone());
        } else if let Some(v) = lookup(o) {
            set(format!("{o}={v}"));
        }
    }
    env
}

/// A signal by name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or number (`15`), as `StopSignal` and
/// `docker kill -s` take them.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=libc::SIGRTMAX()).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rt) = name.strip_prefix("RTMIN") {
        let offset: i32 = if rt.is_empty() {
            0
        } else {
            rt.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN() + offset;
        return (n <= libc::SIGRTMAX()).then_some(n);
    }
    if let Some(rt) = name.strip_prefix("RTMAX") {
        let offset: i32 = if rt.is_empty() {
            0
        } else {
            rt.strip_prefix('-')?.parse().ok()?
        };
        let n = libc::SIGRTMAX() - offset;
        return (n >= libc::SIGRTMIN()).then_some(n);
    }
    name.parse::<nix::sys::signal::Signal>()
        .or_else(|_| format!("SIG{name}").parse::<nix::sys::signal::Signal>())
        .ok()
        .map(|s| s as i32)
}

/// The capabilities `--cap-add` and `--cap-drop` leave, as docker computes them: names with
/// or without `CAP_`, in any case, or `ALL`. `--cap-add ALL` gives every capability strata
/// itself may hand on (its bounding set) but the dropped ones; `--cap-drop ALL` gives only the
/// added ones; otherwise docker's default set without the dropped ones and with the added ones
/// (an added one wins over its drop).
pub fn capabilities(add: &[String], drop: &[String]) -> crate::Result<Vec<Capability>> {
    let is_all = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case("all"));
    let parse = |names: &[String]| -> crate::Result<Vec<Capability>> {
        names
            .iter()
            .filter(|n| !n.eq_ignore_ascii_case("all"))
            .map(|n| {
                let upper = n.to_ascii_uppercase();
                let full = if upper.starts_with("CAP_") {
                    upper
                } else {
                    format!("CAP_{upper}")
                };
                full.parse::<Capability>()
                    .map_err(|_| crate::Error::Invalid(format!("unknown capability: {n}")))
            })
            .collect()
    };
    let (added, dropped) = (parse(add)?, parse(drop)?);
    let mut set: Vec<Capability> = if is_all(add) {
        let mut all: Vec<Capability> = caps::read(None, caps::CapSet::Bounding)
            .unwrap_or_else(|_| caps::all())
            .into_iter()
            .collect();
        all.sort_by_key(|c| c.index());
        all.retain(|c| !dropped.contains(c));
        return Ok(all);
    } else if is_all(drop) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .copied()
            .filter(|c| !dropped.contains(c))
            .collect()
    };
    for c in added {
        if !set.contains(&c) {
            set.push(c);
        }
    }
    set.sort_by_key(|c| c.index());
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ContainerConfig {
            entrypoint: entrypoint.map(owned),
            cmd: cmd.map(owned),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cap_add_and_cap_drop_follow_docker() {
        use Capability::*;
        assert_eq!(
            capabilities(&[], &[]).unwrap(),
            DEFAULT_CAPABILITIES.to_vec()
        );
        let set = capabilities(&strings(&["net_admin"]), &strings(&["CAP_CHOWN"])).unwrap();
        assert!(set.contains(&CAP_NET_ADMIN) && !set.contains(&CAP_CHOWN));
        assert_eq!(set.len(), DEFAULT_CAPABILITIES.len());
        assert_eq!(
            capabilities(&strings(&["KILL"]), &strings(&["all"])).unwrap(),
            [CAP_KILL]
        );
        assert!(
            capabilities(&strings(&["CHOWN"]), &strings(&["CHOWN"]))
                .unwrap()
                .contains(&CAP_CHOWN),
            "an added capability wins over its drop"
        );
        let all = capabilities(&strings(&["ALL"]), &strings(&["NET_RAW"])).unwrap();
        assert!(all.contains(&CAP_SYS_ADMIN) && !all.contains(&CAP_NET_RAW));
        let err = capabilities(&strings(&["BOGUS"]), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("BOGUS"), "{err}");
    }

    #[test]
    fn entrypoint_and_cmd_combine_like_docker() {
        let c = config(Some(&["/entry", "-x"]), Some(&["default"]));
        assert_eq!(command_line(&c, None, &[]), ["/entry", "-x", "default"]);
        assert_eq!(
            command_line(&c, None, &strings(&["a", "b"])),
            ["/entry", "-x", "a", "b"]
        );
        assert_eq!(command_line(&c, Some("/other"), &[]), ["/other"]);
        assert_eq!(
            command_line(&c, Some("/other"), &strings(&["a"])),
            ["/other", "a"]
        );
        assert_eq!(command_line(&c, Some(""), &strings(&["sh"])), ["sh"]);
        let c = config(None, Some(&["cat", "/hello"]));
        assert_eq!(command_line(&c, None, &[]), ["cat", "/hello"]);
        assert_eq!(
            command_line(&c, None, &strings(&["echo", "other"])),
            ["echo", "other"]
        );
        assert!(command_line(&config(None, None), None, &[]).is_empty());
    }

    #[test]
    fn overrides_replace_in_place_and_copy_from_the_caller() {
        let image = strings(&["PATH=/bin", "A=1", "B=2"]);
        let lookup = |k: &str| (k == "HOSTVAR").then(|| "from host".to_owned());
        let env = environment(
            &image,
            &strings(&["A=x=y", "C=3", "HOSTVAR", "MISSING", "PATH=/usr/bin"]),
            lookup,
        );
        assert_eq!(
            env,
            ["PATH=/usr/bin", "A=x=y", "B=2", "C=3", "HOSTVAR=from host"]
        );
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("RTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }
}

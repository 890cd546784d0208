//! The container's command process: forked by the init after `pivot_root`, it sets up its
//! terminal or stdio, drops to docker's capabilities, installs the seccomp filter, becomes
//! the container's user, closes every descriptor it was not meant to have, enters the
//! working directory and executes the command. It never executes the host's strata binary:
//! a command (or a script interpreter) that turns out to be it is refused.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::unistd::{Gid, Uid};

use crate::caps::{limit_bounding_set, set_process_caps};
use crate::error::{Error, Result, SysContext};
use crate::seccomp;
use crate::spec::{DEFAULT_PATH, Spec};
use crate::sys;
use crate::user::User;

/// How many script interpreters deep the check for strata's binary follows (Linux's limit).
const MAX_INTERPRETER_DEPTH: usize = 5;

/// Where the command's standard streams come from.
pub(crate) enum Streams {
    /// These descriptors become 0, 1 and 2.
    Fds([RawFd; 3]),
    /// This pseudo-terminal peer becomes 0, 1, 2 and the controlling terminal.
    Terminal(OwnedFd),
}

/// Everything the command process needs, prepared by the init.
pub(crate) struct Launch<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) user: &'a User,
    pub(crate) streams: Streams,
    /// The `CLOEXEC` pipe to report an `exec` failure on.
    pub(crate) report: BorrowedFd<'a>,
    /// Device and inode of the host's strata binary, never to be executed.
    pub(crate) strata_binary: (u64, u64),
    /// Whether setgroups(2) is allowed (not after a single-id user namespace map).
    pub(crate) can_setgroups: bool,
}

/// Runs the command in this process. Returns only on failure.
pub(crate) fn exec_command(launch: &Launch<'_>) -> Error {
    match prepare_and_exec(launch) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn prepare_and_exec(l: &Launch<'_>) -> Result<std::convert::Infallible> {
    sys::reset_signals().sys("reset signal handling")?;
    nix::unistd::setsid().sys("setsid")?;
    match &l.streams {
        Streams::Fds(fds) => {
            // Move them out of the way first: one may sit on a number another goes to.
            let high: Vec<OwnedFd> = fds
                .iter()
                .map(|&fd| {
                    // SAFETY: the init keeps these descriptors open until the command runs.
                    sys::dup_above(unsafe { sys::borrow_raw(fd) }, 10)
                })
                .collect::<std::io::Result<_>>()
                .sys("set up stdio")?;
            for (i, fd) in high.iter().enumerate() {
                sys::dup_onto(fd.as_fd(), i as RawFd).sys("set up stdio")?;
            }
        }
        Streams::Terminal(peer) => {
            for i in 0..3 {
                sys::dup_onto(peer.as_fd(), i).sys("set up the terminal")?;
            }
            // SAFETY: descriptor 0 was just made the terminal.
            sys::set_controlling_tty(unsafe { sys::borrow_raw(0) })
                .sys("set the controlling terminal")?;
        }
    }
    // Nothing but stdio and the report pipe (which is CLOEXEC) survives into the command:
    // no host directory can be reached through a leaked descriptor.
    sys::close_fds_except(&[l.report.as_raw_fd()]).sys("close inherited descriptors")?;
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));

    let env = environment(l.spec, l.user);
    let args: Vec<CString> = l
        .spec
        .args
        .iter()
        .map(|a| sys::cstring(a))
        .collect::<std::io::Result<_>>()
        .sys("command line")?;

    for u in &l.spec.ulimits {
        sys::set_rlimit(u.resource, u.soft, u.hard).map_err(|e| {
            Error::Invalid(format!(
                "--ulimit {}: {e} (a hard limit above strata's own needs CAP_SYS_RESOURCE)",
                u.name()
            ))
        })?;
    }
    limit_bounding_set(&l.spec.capabilities)?;
    // Installed while still privileged (so without no_new_privs): it allows what follows.
    // `--privileged` has none, as in docker.
    if !l.spec.privileged && l.spec.seccomp {
        for filter in seccomp::default_filters(&l.spec.capabilities)? {
            sys::install_seccomp(&filter).sys("install the seccomp filter")?;
        }
    }
    if l.can_setgroups {
        let groups: Vec<Gid> = l.user.groups.iter().map(|&g| Gid::from_raw(g)).collect();
        nix::unistd::setgroups(&groups).sys("setgroups")?;
    }
    let (uid, gid) = (Uid::from_raw(l.user.uid), Gid::from_raw(l.user.gid));
    nix::unistd::setresgid(gid, gid, gid).sys("setgid")?;
    nix::unistd::setresuid(uid, uid, uid).sys("setuid")?;
    // root keeps its set (docker's by default); any other user has none left (the kernel
    // cleared them).
    set_process_caps(if l.user.uid == 0 {
        &l.spec.capabilities
    } else {
        &[]
    })?;

    nix::unistd::chdir(l.spec.cwd.as_str())
        .map_err(|e| Error::io("enter the working directory", l.spec.cwd.as_str(), e.into()))?;
    if !sys::cwd_is_reachable() {
        return Err(Error::Invalid(format!(
            "working directory {} is outside the container",
            l.spec.cwd
        )));
    }

    let path_var = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_owned();
    let program = find_program(&l.spec.args[0], &path_var)?;
    refuse_strata_binary(&program, &l.spec.args[0], l.strata_binary)?;
    let program_c = sys::cstring(&program).sys("command line")?;
    let env_c: Vec<CString> = env
        .iter()
        .map(|e| sys::cstring(e))
        .collect::<std::io::Result<_>>()
        .sys("environment")?;
    if l.spec.no_new_privileges {
        rustix::thread::set_no_new_privs(true).sys("set no_new_privs")?;
    }
    let err = nix::unistd::execve(&program_c, &args, &env_c).unwrap_err();
    Err(exec_error(&l.spec.args[0], &err.into()))
}

/// The command's environment: the spec's, with PATH, HOME, HOSTNAME (and TERM on a
/// terminal) filled in as docker does.
fn environment(spec: &Spec, user: &User) -> Vec<String> {
    let mut env = spec.env.clone();
    let has = |env: &[String], key: &str| {
        env.iter()
            .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k == key))
    };
    if !has(&env, "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", spec.hostname));
    }
    if spec.tty.is_some() && !has(&env, "TERM") {
        env.push("TERM=xterm".to_owned());
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    env
}

/// Finds the program to execute: `name` itself when it has a `/`, else the first regular
/// executable file named so in `path_var`'s directories (Go's `exec.LookPath`, as runc).
fn find_program(name: &str, path_var: &str) -> Result<String> {
    use rustix::fs::{Access, FileType};
    let check = |candidate: &str| -> std::result::Result<(), rustix::io::Errno> {
        let st = rustix::fs::stat(candidate)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(rustix::io::Errno::ISDIR);
        }
        rustix::fs::access(candidate, Access::EXEC_OK)
    };
    if name.contains('/') {
        return match check(name) {
            Ok(()) => Ok(name.to_owned()),
            Err(e) => Err(exec_error(name, &e.into())),
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
        if check(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(Error::CommandNotFound(name.to_owned()))
}

/// Refuses `program` when it (or the interpreter of a script, through `#!` chains) is the
/// host's strata binary, e.g. reached through /proc/self/exe (CVE-2019-5736).
fn refuse_strata_binary(program: &str, name: &str, strata: (u64, u64)) -> Result<()> {
    let mut current = program.to_owned();
    for _ in 0..MAX_INTERPRETER_DEPTH {
        let id = sys::file_identity(rustix::fs::CWD, &current);
        if id.as_ref().ok() == Some(&strata) {
            return Err(Error::CommandNotExecutable {
                command: name.to_owned(),
                reason: "refusing to execute the host's strata binary".to_owned(),
            });
        }
        match interpreter(&current) {
            Some(next) => current = next,
            None => return Ok(()),
        }
    }
    Ok(())
}

/// The interpreter of a `#!` script.
fn interpreter(path: &str) -> Option<String> {
    let mut head = [0u8; 256];
    let mut f = std::fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.split_ascii_whitespace().next().map(str::to_owned)
}

/// An `exec` failure as docker reports it: 127 for a missing file, 126 for the rest.
fn exec_error(name: &str, e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Error::CommandNotFound(name.to_owned()),
        Some(libc::EISDIR) => Error::CommandNotExecutable {
            command: name.to_owned(),
            reason: "is a directory".to_owned(),
        },
        Some(errno) => Error::CommandNotExecutable {
            command: name.to_owned(),
            reason: nix::errno::Errno::from_raw(errno).desc().to_lowercase(),
        },
        None => Error::CommandNotExecutable {
            command: name.to_owned(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Rootfs;

    fn user() -> User {
        User {
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: "/home/app".into(),
        }
    }

    #[test]
    fn environment_gets_docker_defaults() {
        let mut spec = Spec::new(Rootfs::Dir("/".into()), vec!["sh".into()]);
        spec.env = vec!["A=1".into()];
        spec.hostname = "box".into();
        let env = environment(&spec, &user());
        assert_eq!(
            env,
            [
                format!("PATH={DEFAULT_PATH}"),
                "A=1".into(),
                "HOSTNAME=box".into(),
                "HOME=/home/app".into()
            ]
        );
        spec.env = vec!["PATH=/x".into(), "HOME=/h".into()];
        spec.tty = Some(Default::default());
        let env = environment(&spec, &user());
        assert_eq!(env, ["PATH=/x", "HOME=/h", "HOSTNAME=box", "TERM=xterm"]);
    }

    #[test]
    fn programs_are_found_like_exec_lookpath() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        std::fs::write(dir.path().join("plain"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let tool = dir.path().join("sub/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!("{d}:{d}/sub");
        assert_eq!(
            find_program("tool", &path).unwrap(),
            format!("{d}/sub/tool")
        );
        assert!(
            matches!(find_program("nothere", &path), Err(Error::CommandNotFound(n)) if n == "nothere")
        );
        // Not executable, or a directory: 126.
        let plain = format!("{d}/plain");
        if !rustix::process::geteuid().is_root() {
            assert!(matches!(
                find_program(&plain, &path),
                Err(Error::CommandNotExecutable { .. })
            ));
        }
        let sub = format!("{d}/sub");
        assert!(
            matches!(find_program(&sub, &path), Err(Error::CommandNotExecutable { reason, .. }) if reason == "is a directory")
        );
        assert!(matches!(
            find_program(&format!("{d}/missing"), &path),
            Err(Error::CommandNotFound(_))
        ));
    }

    #[test]
    fn scripts_that_reach_strata_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/proc/self/exe --flag\necho\n").unwrap();
        let nested = dir.path().join("n");
        std::fs::write(&nested, format!("#! {}\n", script.display())).unwrap();
        let me = sys::own_executable_identity().unwrap();
        for p in [&script, &nested] {
            let e = refuse_strata_binary(p.to_str().unwrap(), "s", me).unwrap_err();
            assert!(
                e.to_string()
                    .contains("refusing to execute the host's strata binary"),
                "{e}"
            );
        }
        assert!(refuse_strata_binary("/bin/sh", "sh", me).is_ok());
        assert_eq!(
            interpreter(script.to_str().unwrap()).as_deref(),
            Some("/proc/self/exe")
        );
    }
}

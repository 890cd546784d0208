//! The build's secrets and ssh agents (`strata build --secret …`, `--ssh …`, with buildx's
//! syntax), and the host side of the `RUN --mount=type=secret|ssh` that use them.
//!
//! A step's secret files and agent sockets live in a tmpfs mounted in the step's own mount
//! namespace (so a secret never touches a disk and nothing is left once the step's processes
//! are gone) and are bound read-only into the container. A secret's value never enters a
//! cache key, a layer or a message. An agent socket is a proxy: each connection to it is
//! forwarded to the agent's socket on the host, so the socket in the container has the mode
//! and owner the mount asks for and the host's socket stays out of the container.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use layerfs::error::IoContext as _;

/// The largest secret (BuildKit's limit).
const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// Why a secret or an ssh agent could not be given to a step.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("--secret {spec}: {reason}")]
    SecretSpec { spec: String, reason: String },
    #[error("--ssh {spec}: {reason}")]
    SshSpec { spec: String, reason: String },
    #[error(
        "secret {id:?} is required but the build has none by that id (--secret id={id},src=FILE)"
    )]
    MissingSecret { id: String },
    #[error("ssh agent {id:?} is required but the build has none by that id (--ssh {id}[=SOCKET])")]
    MissingAgent { id: String },
    #[error("secret {id:?}: reading {}", path.display())]
    Read {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {id:?}: the environment variable {var} is not set")]
    UnsetVariable { id: String, var: String },
    #[error("secret {id:?} is too big: {size} bytes (at most {MAX_SECRET_SIZE})")]
    TooBig { id: String, size: u64 },
    #[error(transparent)]
    Io(#[from] layerfs::Error),
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// One `--secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub id: String,
    pub source: SecretSource,
}

impl Secret {
    /// Parses `id=ID[,src=PATH|,env=VAR][,type=file|env]`. With neither `src` nor `env`, the
    /// variable named ID is used when it is set, the file ID otherwise (as buildx does). A
    /// file must exist.
    pub fn parse(spec: &str) -> Result<Secret, SecretError> {
        let bad = |reason: String| SecretError::SecretSpec {
            spec: spec.to_owned(),
            reason,
        };
        let (mut id, mut src, mut env, mut typ) = (None, None, None, None);
        for field in spec.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| bad(format!("{field:?} is not KEY=VALUE")))?;
            match key.to_ascii_lowercase().as_str() {
                "id" => id = Some(value.to_owned()),
                "src" | "source" => src = Some(value.to_owned()),
                "env" => env = Some(value.to_owned()),
                "type" if value == "file" || value == "env" => typ = Some(value.to_owned()),
                "type" => return Err(bad(format!("type={value}: use file or env"))),
                k => return Err(bad(format!("unknown key {k:?} (id, src, env, type)"))),
            }
        }
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad("id= is missing".into()))?;
        // `type=env,src=VAR` names the variable.
        if typ.as_deref() == Some("env") && env.is_none() {
            env = src.take();
        }
        let source = match (src, env) {
            (Some(_), Some(_)) => return Err(bad("give src= or env=, not both".into())),
            (Some(path), None) => SecretSource::File(path.into()),
            (None, Some(var)) => SecretSource::Env(var),
            (None, None) if typ.as_deref() == Some("env") || std::env::var_os(&id).is_some() => {
                SecretSource::Env(id.clone())
            }
            (None, None) => SecretSource::File(id.clone().into()),
        };
        if let SecretSource::File(path) = &source {
            let md =
                std::fs::metadata(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
            if !md.is_file() {
                return Err(bad(format!("{} is not a file", path.display())));
            }
        }
        Ok(Secret { id, source })
    }

    /// The secret's value.
    pub fn value(&self) -> Result<Vec<u8>, SecretError> {
        let value = match &self.source {
            SecretSource::File(path) => {
                std::fs::read(path).map_err(|source| SecretError::Read {
                    id: self.id.clone(),
                    path: path.clone(),
                    source,
                })?
            }
            SecretSource::Env(var) => std::env::var_os(var)
                .ok_or_else(|| SecretError::UnsetVariable {
                    id: self.id.clone(),
                    var: var.clone(),
                })?
                .into_encoded_bytes(),
        };
        if value.len() as u64 > MAX_SECRET_SIZE {
            return Err(SecretError::TooBig {
                id: self.id.clone(),
                size: value.len() as u64,
            });
        }
        Ok(value)
    }
}

/// One `--ssh`: an agent socket on the host, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshAgent {
    pub id: String,
    pub socket: PathBuf,
}

impl SshAgent {
    /// Parses `ID[=SOCKET]` (`default` for `RUN --mount=type=ssh` without an id); the socket
    /// defaults to `ssh_auth_sock` (`$SSH_AUTH_SOCK`). Key files are not taken: strata
    /// forwards agents only.
    pub fn parse(spec: &str, ssh_auth_sock: Option<&Path>) -> Result<SshAgent, SecretError> {
        let bad = |reason: String| SecretError::SshSpec {
            spec: spec.to_owned(),
            reason,
        };
        let (id, socket) = match spec.split_once('=') {
            Some((id, path)) => (id, Some(Path::new(path))),
            None => (spec, ssh_auth_sock),
        };
        if id.is_empty() {
            return Err(bad("the id is empty".into()));
        }
        let socket = socket
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or_else(|| bad("no agent socket: SSH_AUTH_SOCK is not set".into()))?;
        if socket.to_string_lossy().contains(',') {
            return Err(bad(
                "one agent socket per id (key files are not supported)".into()
            ));
        }
        let md =
            std::fs::metadata(socket).map_err(|e| bad(format!("{}: {e}", socket.display())))?;
        if !md.file_type().is_socket() {
            return Err(bad(format!(
                "{} is not a socket: strata forwards ssh agents, not key files",
                socket.display()
            )));
        }
        Ok(SshAgent {
            id: id.to_owned(),
            socket: socket.to_owned(),
        })
    }
}

/// Mode and owner of a secret's file or an agent's socket in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A secret's value; never shown.
struct Value(Vec<u8>);

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// The secret files and agent sockets of one step, to be made in a tmpfs at `dir`.
#[derive(Debug)]
pub struct StepSecrets {
    dir: PathBuf,
    files: Vec<(String, Value, Access)>,
    agents: Vec<(String, PathBuf, Access)>,
}

impl StepSecrets {
    /// Secrets and agents that will live in `dir` (an empty directory, made by the caller).
    pub fn new(dir: PathBuf) -> StepSecrets {
        StepSecrets {
            dir,
            files: Vec::new(),
            agents: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.agents.is_empty()
    }

    /// Adds a secret's file; returns the path it will have (the source of its bind mount).
    pub fn add_file(&mut self, value: Vec<u8>, access: Access) -> PathBuf {
        let name = format!("secret-{}", self.files.len());
        let path = self.dir.join(&name);
        self.files.push((name, Value(value), access));
        path
    }

    /// Adds a socket forwarding to `agent`; returns the path it will have.
    pub fn add_agent(&mut self, agent: &Path, access: Access) -> PathBuf {
        let name = format!("agent-{}", self.agents.len());
        let path = self.dir.join(&name);
        self.agents.push((name, agent.to_owned(), access));
        path
    }

    /// Makes them, in the calling thread's private mount namespace: mounts the tmpfs, writes
    /// the files, starts the forwarding. The forwarding stops when the result is dropped.
    pub fn materialize(&self) -> Result<Forwarding, SecretError> {
        let mut forwarding = Forwarding::default();
        if self.is_empty() {
            return Ok(forwarding);
        }
        std::fs::create_dir_all(&self.dir).at("create directory", &self.dir)?;
        layerfs::mount::mount_private_tmpfs(&self.dir)?;
        let set_access = |path: &Path, a: Access| -> Result<(), SecretError> {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(a.mode))
                .at("chmod", path)?;
            Ok(std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid)).at("chown", path)?)
        };
        for (name, value, access) in &self.files {
            let path = self.dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .at("create", &path)?;
            f.write_all(&value.0).at("write", &path)?;
            set_access(&path, *access)?;
        }
        for (name, agent, access) in &self.agents {
            let path = self.dir.join(name);
            let listener = UnixListener::bind(&path).at("listen on", &path)?;
            set_access(&path, *access)?;
            forwarding
                .proxies
                .push(Proxy::start(listener, agent.clone())?);
        }
        Ok(forwarding)
    }
}

/// The agent proxies of a step; dropping it stops them.
#[derive(Debug, Default)]
pub struct Forwarding {
    proxies: Vec<Proxy>,
}

/// Accepts connections on a socket and forwards each to an agent's socket.
#[derive(Debug)]
struct Proxy {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(listener: UnixListener, agent: PathBuf) -> Result<Proxy, SecretError> {
        listener.set_nonblocking(true).at("listen on", &agent)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let agent = agent.clone();
                        std::thread::spawn(move || forward(&client, &agent));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        tracing::debug!("ssh agent proxy: {e}");
                        break;
                    }
                }
            }
        });
        Ok(Proxy {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies both ways between a container's connection and the agent until both sides close.
fn forward(client: &UnixStream, agent: &Path) {
    let Ok(upstream) = UnixStream::connect(agent) else {
        tracing::debug!("ssh agent proxy: cannot connect to {}", agent.display());
        return;
    };
    let _ = client.set_nonblocking(false);
    let (Ok(mut from_client), Ok(mut to_agent)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let requests = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_agent);
        let _ = to_agent.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut &upstream, &mut &*client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = requests.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs_follow_buildx() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tok");
        std::fs::write(&file, "s3cr3t").unwrap();
        let f = file.to_str().unwrap();
        let s = Secret::parse(&format!("id=tok,src={f}")).unwrap();
        assert_eq!(s.source, SecretSource::File(file.clone()));
        assert_eq!(s.value().unwrap(), b"s3cr3t");
        let s = Secret::parse(&format!("type=file,id=tok,source={f}")).unwrap();
        assert_eq!(s.source, SecretSource::File(file.clone()));
        assert_eq!(
            Secret::parse("id=k,env=SOME_VAR").unwrap().source,
            SecretSource::Env("SOME_VAR".into())
        );
        assert_eq!(
            Secret::parse("id=k,type=env,src=OTHER").unwrap().source,
            SecretSource::Env("OTHER".into())
        );
        // Neither: the variable named like the id if set (PATH is), else the file.
        assert_eq!(
            Secret::parse("id=PATH").unwrap().source,
            SecretSource::Env("PATH".into())
        );
        let err = Secret::parse("id=/no/such/file").unwrap_err().to_string();
        assert!(err.contains("/no/such/file"), "{err}");
        for bad in [
            "src=x",
            "id=a,colour=red",
            "id=a,type=ssh",
            "id",
            "id=a,src=x,env=Y",
        ] {
            let err = Secret::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--secret {bad}:")), "{err}");
        }
        let unset = Secret {
            id: "k".into(),
            source: SecretSource::Env("STRATA_TEST_UNSET_VARIABLE".into()),
        };
        assert!(unset.value().unwrap_err().to_string().contains("not set"));
    }

    #[test]
    fn ssh_specs_need_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let a = SshAgent::parse("default", Some(&sock)).unwrap();
        assert_eq!(
            (a.id.as_str(), a.socket.as_path()),
            ("default", sock.as_path())
        );
        let a = SshAgent::parse(&format!("work={}", sock.display()), None).unwrap();
        assert_eq!(a.id, "work");
        assert!(
            SshAgent::parse("default", None)
                .unwrap_err()
                .to_string()
                .contains("SSH_AUTH_SOCK")
        );
        let key = dir.path().join("id_ed25519");
        std::fs::write(&key, "key").unwrap();
        let err = SshAgent::parse(&format!("default={}", key.display()), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a socket"), "{err}");
    }

    #[test]
    fn values_are_never_shown() {
        let mut s = StepSecrets::new(PathBuf::from("/x"));
        let access = Access {
            mode: 0o400,
            uid: 0,
            gid: 0,
        };
        assert_eq!(
            s.add_file(b"hunter2".to_vec(), access),
            Path::new("/x/secret-0")
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

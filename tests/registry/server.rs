//! The real CNCF distribution registry (`docker-registry serve CONFIG`) on a free loopback
//! port, anonymous, with htpasswd (bcrypt) basic auth, or with bearer tokens from a
//! [`TokenServer`](super::token::TokenServer). Killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::token::TokenServer;

/// How the registry authenticates.
#[derive(Clone, Copy)]
pub enum RegistryAuth<'a> {
    Anonymous,
    /// htpasswd with a bcrypt hash of `password`.
    Basic {
        user: &'a str,
        password: &'a str,
    },
    /// Bearer tokens signed by `server`'s certificate.
    Token(&'a TokenServer),
}

/// A running registry.
pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    _dir: tempfile::TempDir,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something at `addr` answers HTTP.
pub fn answers_http(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/")
}

impl TestRegistry {
    /// Starts a plain HTTP registry.
    pub fn start(auth: RegistryAuth<'_>) -> TestRegistry {
        Self::start_with(auth, false)
    }

    /// Starts a registry, serving HTTPS with a self-signed certificate when `tls` (a few
    /// tries, in case another process takes the port first).
    pub fn start_with(auth: RegistryAuth<'_>, tls: bool) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir()
            .unwrap();
        let tls_yaml = if tls {
            let (key, cert) =
                super::token::self_signed(dir.path(), "tls", "/CN=127.0.0.1", Some("IP:127.0.0.1"));
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )
        } else {
            String::new()
        };
        let auth_yaml = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic { user, password } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("run htpasswd (apache2-utils)");
                assert!(out.status.success(), "htpasswd failed");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                    file.display()
                )
            }
            RegistryAuth::Token(server) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                server.realm(),
                super::token::SERVICE,
                super::token::ISSUER,
                server.cert_path().display()
            ),
        };
        for _ in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{tls_yaml}{auth_yaml}",
                    dir.path().join("data").display()
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("run docker-registry (Debian package docker-registry)");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if answers_http(&host) {
                    return TestRegistry {
                        child,
                        host,
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "docker-registry did not start; its log:\n{}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

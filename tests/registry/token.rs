//! A token server for the registry's bearer auth: it checks basic credentials and answers with a
//! JWT signed ES256 by a self-signed certificate (made with openssl) that the registry trusts
//! (`rootcertbundle`), carrying the certificate in `x5c` and the requested scopes as `access`
//! claims — what distribution's token auth verifies. It can be told to hand out tokens that
//! the registry will find expired, to check that clients fetch a fresh one.

use crate::listener::LoopbackServer;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

pub const SERVICE: &str = "strata-test-registry";
pub const ISSUER: &str = "strata-test-issuer";

struct Shared {
    user: String,
    password: String,
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    /// Tokens still to be issued already expired.
    expired_to_issue: AtomicUsize,
    issued: AtomicUsize,
    /// The scopes of every token request, in order.
    scopes: Mutex<Vec<Vec<String>>>,
}

/// A running token server.
pub struct TokenServer {
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    server: LoopbackServer,
}

/// A P-256 key and a self-signed certificate for `subject` (and the subjectAltName `san`), made
/// with openssl in `dir` as NAME.key and NAME.crt.
pub fn self_signed(dir: &Path, name: &str, subject: &str, san: Option<&str>) -> (PathBuf, PathBuf) {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    let mut c = Command::new("openssl");
    c.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
    ])
    .args(["-nodes", "-days", "2", "-subj", subject]);
    if let Some(san) = san {
        c.args(["-addext", &format!("subjectAltName={san}")]);
    }
    let out = c
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (key, cert)
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("PEM is base64")
}

impl TokenServer {
    /// Starts a server that accepts `user`/`password`.
    pub fn start(user: &str, password: &str) -> TokenServer {
        let dir = tempfile::Builder::new()
            .prefix("strata-token-")
            .tempdir()
            .unwrap();
        let (key, cert) = self_signed(dir.path(), "token", "/CN=strata-test-token-issuer", None);
        let key_der = pem_body(&std::fs::read_to_string(&key).unwrap());
        let cert_der = pem_body(&std::fs::read_to_string(&cert).unwrap());
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_der,
            &SystemRandom::new(),
        )
        .expect("a P-256 PKCS#8 key");
        let shared = Arc::new(Shared {
            user: user.to_owned(),
            password: password.to_owned(),
            key,
            cert_der,
            expired_to_issue: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
            scopes: Mutex::default(),
        });
        let server = {
            let shared = shared.clone();
            LoopbackServer::start(move |conn| {
                serve(&shared, conn);
            })
        };
        TokenServer {
            shared,
            dir,
            server,
        }
    }

    /// The URL the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.server.port())
    }

    /// The certificate the registry trusts.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("token.crt")
    }

    /// The next `n` tokens are issued with an expiry long past.
    pub fn issue_expired(&self, n: usize) {
        self.shared.expired_to_issue.store(n, Ordering::SeqCst);
    }

    /// How many tokens were issued.
    pub fn issued(&self) -> usize {
        self.shared.issued.load(Ordering::SeqCst)
    }

    /// The scopes of every token request so far.
    pub fn scopes(&self) -> Vec<Vec<String>> {
        self.shared.scopes.lock().unwrap().clone()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(conn: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn serve(shared: &Shared, mut conn: TcpStream) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_owned());
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "scope" {
            scopes.push(percent_decode(v));
        }
    }
    shared.scopes.lock().unwrap().push(scopes.clone());
    let subject = match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
    {
        Some(b64) => {
            let decoded =
                String::from_utf8(STANDARD.decode(b64).unwrap_or_default()).unwrap_or_default();
            if decoded != format!("{}:{}", shared.user, shared.password) {
                respond(
                    &mut conn,
                    "401 Unauthorized",
                    r#"{"details":"incorrect username or password"}"#,
                );
                return;
            }
            Some(decoded.split(':').next().unwrap().to_owned())
        }
        None => None,
    };
    // Anonymous clients get a token that grants nothing: the registry refuses them.
    let access: Vec<serde_json::Value> = if subject.is_some() {
        scopes
            .iter()
            .filter_map(|s| {
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect()
    } else {
        Vec::new()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = shared
        .expired_to_issue
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    // distribution allows 60 s of clock skew: an expired token is well past that.
    let (nbf, exp) = if expired {
        (now - 600, now - 300)
    } else {
        (now - 10, now + 300)
    };
    let jti = shared.issued.fetch_add(1, Ordering::SeqCst);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&shared.cert_der)]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject.unwrap_or_default(), "aud": SERVICE,
        "exp": exp, "nbf": nbf, "iat": nbf, "jti": format!("strata-test-{jti}"), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = shared
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .expect("ECDSA signing");
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    respond(
        &mut conn,
        "200 OK",
        &serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
    );
}

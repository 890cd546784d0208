//! Registry credentials: where they are read from and where `login` keeps them.
//!
//! Read, first match wins: `$REGISTRY_AUTH_FILE`, then `$XDG_RUNTIME_DIR/containers/auth.json`
//! (podman, buildah and skopeo write these), then the docker config
//! (`$DOCKER_CONFIG/config.json`, default `~/.docker/config.json`). In each file a credential
//! helper named for the registry (`credHelpers`) comes first, then the default helper
//! (`credsStore`), then the `auths` entry. A helper is the program `docker-credential-NAME`
//! speaking docker's protocol (`get`, `store`, `erase` with JSON on stdin and stdout).
//!
//! `login` writes to the docker config (through its helper, when it names one) and `logout`
//! removes from there. Secrets are never printed, logged or shown by `Debug`.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// The username credential helpers use for an identity (refresh) token.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// A username and its password, or an identity token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    username: String,
    secret: String,
    identity_token: bool,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// A username and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credential {
            username: username.into(),
            secret: password.into(),
            identity_token: false,
        }
    }

    /// An identity token (an OAuth2 refresh token) that a token server exchanges for tokens.
    pub fn identity_token(username: impl Into<String>, token: impl Into<String>) -> Self {
        Credential {
            username: username.into(),
            secret: token.into(),
            identity_token: true,
        }
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password or token: only for putting on the wire.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether the secret is an identity token rather than a password.
    pub fn is_identity_token(&self) -> bool {
        self.identity_token
    }
}

/// The host a credential file or helper knows a registry by: `docker.io` for Docker Hub
/// (whatever alias), else `host[:port]` without scheme or path.
pub fn registry_key(registry: &str) -> String {
    let s = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        h => h.to_owned(),
    }
}

/// The server URL docker uses for a registry in its config and with helpers.
fn server_url(key: &str) -> String {
    if key == "docker.io" {
        "https://index.docker.io/v1/".to_owned()
    } else {
        key.to_owned()
    }
}

/// The credential files, in the order they are read.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    /// Read-only: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`.
    auth_files: Vec<PathBuf>,
    /// The docker config `login` writes to.
    docker_config: PathBuf,
}

impl CredentialStore {
    /// The files the environment points at.
    pub fn from_env() -> Self {
        let env_path = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let mut auth_files = Vec::new();
        auth_files.extend(env_path("REGISTRY_AUTH_FILE"));
        auth_files.extend(env_path("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
        let docker_dir = env_path("DOCKER_CONFIG")
            .or_else(|| env_path("HOME").map(|h| h.join(".docker")))
            .unwrap_or_else(|| PathBuf::from("/root/.docker"));
        CredentialStore {
            auth_files,
            docker_config: docker_dir.join("config.json"),
        }
    }

    /// Only the docker config at `path` (tests, and tools that want one file).
    pub fn with_docker_config(path: impl Into<PathBuf>) -> Self {
        CredentialStore {
            auth_files: Vec::new(),
            docker_config: path.into(),
        }
    }

    /// The docker config file `login` writes.
    pub fn docker_config(&self) -> &Path {
        &self.docker_config
    }

    /// The credential for `registry`, if any file or helper has one.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>> {
        let key = registry_key(registry);
        for path in self.auth_files.iter().chain([&self.docker_config]) {
            let Some(config) = read_config(path)? else {
                continue;
            };
            if let Some(helper) = helper_for(&config, &key)
                && let Some(c) = helper_get(&helper, &key)?
            {
                tracing::debug!("credentials for {key} from docker-credential-{helper}");
                return Ok(Some(c));
            }
            if let Some(c) = auths_entry(&config, &key, path)? {
                tracing::debug!("credentials for {key} from {}", path.display());
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Keeps `credential` for `registry` in the docker config (or its helper) and says where.
    pub fn save(&self, registry: &str, credential: &Credential) -> Result<String> {
        let key = registry_key(registry);
        let path = &self.docker_config;
        let mut config = read_config(path)?.unwrap_or_else(|| json!({}));
        let helper = helper_for(&config, &key);
        let auths = auths_mut(&mut config, path)?;
        let where_ = match &helper {
            Some(helper) => {
                helper_store(helper, &key, credential)?;
                auths.insert(server_url(&key), json!({}));
                format!("docker-credential-{helper}")
            }
            None => {
                let field = if credential.identity_token {
                    "identitytoken"
                } else {
                    "auth"
                };
                let value = if credential.identity_token {
                    credential.secret.clone()
                } else {
                    BASE64.encode(format!("{}:{}", credential.username, credential.secret))
                };
                auths.retain(|k, _| registry_key(k) != key);
                auths.insert(server_url(&key), json!({ field: value }));
                path.display().to_string()
            }
        };
        write_config(path, &config)?;
        Ok(where_)
    }

    /// Forgets the credential for `registry` (docker config and its helper). Returns whether
    /// there was one.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let key = registry_key(registry);
        let path = &self.docker_config;
        let Some(mut config) = read_config(path)? else {
            return Ok(false);
        };
        let mut removed = false;
        if let Some(helper) = helper_for(&config, &key) {
            removed |= helper_erase(&helper, &key)?;
        }
        let auths = auths_mut(&mut config, path)?;
        let before = auths.len();
        auths.retain(|k, _| registry_key(k) != key);
        if auths.len() != before {
            removed = true;
            write_config(path, &config)?;
        }
        Ok(removed)
    }
}

fn read_config(path: &Path) -> Result<Option<Value>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                op: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(json!({})));
    }
    let value: Value = serde_json::from_slice(&data).map_err(|e| Error::CredentialFile {
        op: "parse",
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(Error::CredentialFile {
            op: "parse",
            path: path.to_owned(),
            reason: "not a JSON object".into(),
        });
    }
    Ok(Some(value))
}

/// Writes the config atomically, readable by its owner only.
fn write_config(path: &Path, config: &Value) -> Result<()> {
    let io_err = |op, source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| io_err("create directory for", e))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    let tmp = dir.join(format!(
        ".{}.strata-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let mut bytes = serde_json::to_vec_pretty(config).expect("JSON values serialize");
    bytes.push(b'\n');
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", e));
    }
    Ok(())
}

fn auths_mut<'a>(config: &'a mut Value, path: &Path) -> Result<&'a mut Map<String, Value>> {
    let obj = config.as_object_mut().expect("read_config returns objects");
    obj.entry("auths")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::CredentialFile {
            op: "parse",
            path: path.to_owned(),
            reason: "\"auths\" is not an object".into(),
        })
}

/// The helper for `key`: its `credHelpers` entry, else `credsStore`.
fn helper_for(config: &Value, key: &str) -> Option<String> {
    let named = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().find(|(k, _)| registry_key(k) == key))
        .and_then(|(_, v)| v.as_str());
    named
        .or_else(|| config.get("credsStore").and_then(Value::as_str))
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

fn auths_entry(config: &Value, key: &str, path: &Path) -> Result<Option<Credential>> {
    let Some(entry) = config
        .get("auths")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().find(|(k, _)| registry_key(k) == key))
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let bad = |reason: &str| Error::CredentialFile {
        op: "parse",
        path: path.to_owned(),
        reason: format!("the entry for {key}: {reason}"),
    };
    if let Some(token) = entry
        .get("identitytoken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        let user = entry
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or(IDENTITY_TOKEN_USER);
        return Ok(Some(Credential::identity_token(user, token)));
    }
    if let Some(auth) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let decoded = BASE64
            .decode(auth.trim())
            .map_err(|_| bad("\"auth\" is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| bad("\"auth\" is not user:password"))?;
        return Ok(Some(Credential::new(user, pass)));
    }
    match (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) => Ok(Some(Credential::new(u, p))),
        _ => Ok(None),
    }
}

/// Runs `docker-credential-HELPER ACTION` with `input` on stdin; returns its exit status
/// success and stdout.
fn run_helper(
    helper: &str,
    action: &'static str,
    key: &str,
    input: &[u8],
) -> Result<(bool, String)> {
    let program = format!("docker-credential-{helper}");
    let err = |reason: String| Error::CredentialHelper {
        helper: helper.to_owned(),
        action,
        registry: key.to_owned(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| err(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for {program}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((out.status.success(), stdout))
}

fn helper_get(helper: &str, key: &str) -> Result<Option<Credential>> {
    let (ok, out) = run_helper(helper, "get", key, server_url(key).as_bytes())?;
    if !ok {
        if out.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(Error::CredentialHelper {
            helper: helper.to_owned(),
            action: "get",
            registry: key.to_owned(),
            reason: "it failed (its output is not shown: it may hold secrets)".into(),
        });
    }
    let parsed: Value = serde_json::from_str(&out).map_err(|_| Error::CredentialHelper {
        helper: helper.to_owned(),
        action: "get",
        registry: key.to_owned(),
        reason: "its output is not the JSON object {\"Username\", \"Secret\"}".into(),
    })?;
    let user = parsed
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = parsed
        .get("Secret")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if user == IDENTITY_TOKEN_USER {
        Credential::identity_token(user, secret)
    } else {
        Credential::new(user, secret)
    }))
}

fn helper_store(helper: &str, key: &str, credential: &Credential) -> Result<()> {
    let user = if credential.identity_token {
        IDENTITY_TOKEN_USER
    } else {
        &credential.username
    };
    let input =
        json!({ "ServerURL": server_url(key), "Username": user, "Secret": credential.secret });
    let (ok, _) = run_helper(helper, "store", key, input.to_string().as_bytes())?;
    if !ok {
        return Err(Error::CredentialHelper {
            helper: helper.to_owned(),
            action: "store",
            registry: key.to_owned(),
            reason: "it failed".into(),
        });
    }
    Ok(())
}

fn helper_erase(helper: &str, key: &str) -> Result<bool> {
    let (ok, out) = run_helper(helper, "erase", key, server_url(key).as_bytes())?;
    if !ok && !out.to_ascii_lowercase().contains("not found") {
        return Err(Error::CredentialHelper {
            helper: helper.to_owned(),
            action: "erase",
            registry: key.to_owned(),
            reason: "it failed".into(),
        });
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalize_docker_hub_aliases_and_urls() {
        assert_eq!(registry_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_key("registry-1.docker.io"), "docker.io");
        assert_eq!(registry_key("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_key("quay.io/v2/"), "quay.io");
    }

    #[test]
    fn save_get_remove_round_trip_keeps_other_fields_and_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker/config.json");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            r#"{"auths":{"other.io":{"auth":"eDp5"}},"psFormat":"table"}"#,
        )
        .unwrap();
        let store = CredentialStore::with_docker_config(&path);
        store
            .save(
                "127.0.0.1:5000",
                &Credential::new("alice", "s3cret:with:colons"),
            )
            .unwrap();
        let got = store.get("http://127.0.0.1:5000/").unwrap().unwrap();
        assert_eq!(got, Credential::new("alice", "s3cret:with:colons"));
        let file: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(file["psFormat"], "table");
        assert_eq!(file["auths"]["other.io"]["auth"], "eDp5");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(store.remove("127.0.0.1:5000").unwrap());
        assert!(store.get("127.0.0.1:5000").unwrap().is_none());
        assert!(!store.remove("127.0.0.1:5000").unwrap());
        assert_eq!(
            store.get("other.io").unwrap().unwrap(),
            Credential::new("x", "y")
        );
    }

    #[test]
    fn docker_hub_is_stored_under_its_v1_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let store = CredentialStore::with_docker_config(&path);
        store.save("docker.io", &Credential::new("u", "p")).unwrap();
        let file: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert!(file["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
        assert!(store.get("registry-1.docker.io").unwrap().is_some());
    }

    #[test]
    fn malformed_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, r#"{"auths":{"r.io":{"auth":"!!!"}}}"#).unwrap();
        let e = CredentialStore::with_docker_config(&path)
            .get("r.io")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("base64"),
            "{e}"
        );
        fs::write(&path, "[1]").unwrap();
        let e = CredentialStore::with_docker_config(&path)
            .get("r.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credential::new("bob", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

//! One registry, spoken to over HTTP: which scheme, the auth handshake, and retries.
//!
//! The first request is `GET /v2/` (docker's ping): it tells whether the registry answers at
//! all (a clear "cannot reach" error otherwise), over HTTPS or plain HTTP, and how it wants
//! requests authenticated. Then every request goes through `Client::send`, which adds the
//! credentials (basic, or a bearer token fetched from the token server for all the scopes the
//! transfer needs at once and fetched again when it expires or is refused), and tries again
//! with backoff on dropped connections, 5xx and 429 (honouring `Retry-After`).

use std::time::{Duration, Instant};

use layerfs::reference::Reference;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use crate::challenge::Challenge;
use crate::credentials::{Credential, CredentialStore};
use crate::error::{Error, Result};
use crate::events::{Event, Reporter};

/// The user agent strata sends.
const USER_AGENT: &str = concat!("strata/", env!("CARGO_PKG_VERSION"));
/// How long a token is assumed to live when the token server does not say (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The longest `Retry-After` strata waits for; a registry asking for more fails the request.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How often and how patiently failed requests are tried again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries of one request, the first included.
    pub attempts: u32,
    /// The wait after the first failure; it doubles with every further one.
    pub base_delay: Duration,
    /// The longest wait between two tries (a `Retry-After` may ask for up to a minute).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1` (attempt counts from 1), with a little jitter so
    /// concurrent transfers do not retry in lockstep.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let jitter = Duration::from_millis(u64::from(std::process::id() ^ attempt) % 50);
        exp.min(self.max_delay) + jitter
    }
}

/// How to connect: TLS verification and retries.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Verify TLS certificates and require HTTPS (loopback registries are trusted as they are,
    /// HTTPS with any certificate or plain HTTP, as docker does).
    pub tls_verify: bool,
    pub retry: RetryPolicy,
    /// Where credentials come from.
    pub credentials: CredentialStore,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            tls_verify: true,
            retry: RetryPolicy::default(),
            credentials: CredentialStore::from_env(),
        }
    }
}

/// What the next request needs for authentication.
#[derive(Debug, Default)]
struct AuthState {
    challenge: Option<Challenge>,
    token: Option<(String, Instant)>,
}

/// A connection to one registry, for the repositories and actions of one transfer.
pub(crate) struct Client<'r> {
    http: reqwest::Client,
    /// The registry as users name it (`docker.io`, `127.0.0.1:5000`), for messages.
    registry: String,
    /// The host the API is spoken to (`registry-1.docker.io` for `docker.io`): what
    /// "cannot reach" names.
    host: String,
    /// `https://host` or `http://host`.
    base: String,
    credential: Option<Credential>,
    /// `repository:NAME:ACTIONS` scopes every token is asked for.
    scopes: Vec<String>,
    auth: tokio::sync::Mutex<AuthState>,
    retry: RetryPolicy,
    reporter: &'r dyn Reporter,
}

/// Whether `host[:port]` is a loopback address, which docker speaks plain HTTP to unasked.
pub fn is_loopback(host: &str) -> bool {
    let h = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The HTTP client strata downloads with (registries, `ADD` of a URL): rustls with the
/// system's roots, strata's user agent, 15 s to connect and 60 s at most between two reads of
/// a response (never a limit on the whole transfer), proxies from `HTTP_PROXY`, `HTTPS_PROXY`
/// and `NO_PROXY`. `accept_invalid_certs` is for registries the user vouches for.
pub fn http_client(accept_invalid_certs: bool) -> reqwest::Result<reqwest::Client> {
    // reqwest is built without a default TLS provider: strata uses ring (smaller and faster
    // to build than aws-lc-rs). Installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(30))
        .tls_danger_accept_invalid_certs(accept_invalid_certs)
        .build()
}

/// An error and its causes, on one line.
pub(crate) fn describe_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// Whether a failed request may pass if tried again: not when the name does not resolve.
fn transient(e: &reqwest::Error) -> bool {
    (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body())
        && !describe_error(e).contains("dns error")
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A registry's JSON error body: `{"errors":[{"code":…,"message":…}]}`.
#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl<'r> Client<'r> {
    /// Connects to the registry of `reference` for a transfer that needs `scopes`.
    /// With `credential`, that one is used instead of the stored ones (`login` checks it).
    pub async fn connect(
        reference: &Reference,
        scopes: Vec<String>,
        opts: &ConnectOptions,
        credential: Option<Credential>,
        reporter: &'r dyn Reporter,
    ) -> Result<Client<'r>> {
        let host = reference.api_host();
        let insecure = !opts.tls_verify || is_loopback(host);
        let http = http_client(insecure).map_err(|e| Error::Unreachable {
            registry: reference.registry().to_owned(),
            detail: describe_error(&e),
        })?;
        // Like docker: a loopback registry, or one the user vouches for, may have a
        // certificate of its own making or speak plain HTTP.
        let schemes: &[&str] = if insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let credential = match credential {
            Some(c) => Some(c),
            None => opts.credentials.get(reference.registry())?,
        };
        let mut client = Client {
            http,
            registry: reference.registry().to_owned(),
            host: host.to_owned(),
            base: String::new(),
            credential,
            scopes,
            auth: tokio::sync::Mutex::default(),
            retry: opts.retry,
            reporter,
        };
        let mut last = None;
        for (i, scheme) in schemes.iter().enumerate() {
            client.base = format!("{scheme}://{host}");
            // Only the last scheme is worth trying again: HTTPS to a plain HTTP server fails
            // at once, and then HTTP is asked.
            let final_scheme = i + 1 == schemes.len();
            let attempts = if final_scheme {
                client.retry.attempts.min(3)
            } else {
                1
            };
            match client.ping(attempts).await {
                Ok(()) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("there is at least one scheme"))
    }

    /// The registry's name, for messages.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `GET /v2/` (tried up to `attempts` times): learns how to authenticate.
    async fn ping(&self, attempts: u32) -> Result<()> {
        let url = self.url("/v2/");
        let peer = &self.host;
        let resp = self
            .with_retries("GET /v2/", true, attempts, peer, || async {
                Ok(self.http.get(&url).send().await)
            })
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let mut auth = self.auth.lock().await;
            auth.challenge = challenge_of(&resp);
        }
        Ok(())
    }

    /// The URL of an API path (`/v2/…`), or of a `Location` the registry sent.
    pub fn url(&self, path_or_location: &str) -> String {
        if path_or_location.starts_with("http://") || path_or_location.starts_with("https://") {
            path_or_location.to_owned()
        } else if path_or_location.starts_with('/') {
            format!("{}{path_or_location}", self.base)
        } else {
            format!("{}/{path_or_location}", self.base)
        }
    }

    /// Runs `try_once` until it gives a response that is not worth another try: transient
    /// failures of `idempotent` requests, 429 and 5xx answers are tried again, up to
    /// `attempts` tries in all, with backoff or the `Retry-After` the registry asked for.
    async fn with_retries<F, Fut>(
        &self,
        what: &str,
        idempotent: bool,
        attempts: u32,
        peer: &str,
        mut try_once: F,
    ) -> Result<Response>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<reqwest::Result<Response>>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (delay, reason) = match try_once().await? {
                Err(e) if transient(&e) && idempotent && attempt < attempts => {
                    (self.retry.delay(attempt), describe_error(&e))
                }
                Err(e) => {
                    return Err(Error::Unreachable {
                        registry: peer.to_owned(),
                        detail: describe_error(&e),
                    });
                }
                Ok(resp)
                    if retryable_status(resp.status())
                        && (idempotent || matches!(resp.status().as_u16(), 429 | 503))
                        && attempt < attempts =>
                {
                    match self.wait_for(&resp, attempt) {
                        Some(d) => (d, resp.status().to_string()),
                        None => return Ok(resp),
                    }
                }
                Ok(resp) => return Ok(resp),
            };
            self.report_retry(what, attempt, delay, reason);
            tokio::time::sleep(delay).await;
        }
    }

    fn report_retry(&self, what: &str, attempt: u32, delay: Duration, reason: String) {
        self.reporter.report(Event::Retrying {
            what: what.to_owned(),
            attempt,
            delay,
            reason,
        });
    }

    /// How long to wait before trying a 429/5xx answer again (`None`: too long, give up).
    fn wait_for(&self, resp: &Response, attempt: u32) -> Option<Duration> {
        let asked = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        match asked {
            Some(d) if d > MAX_RETRY_AFTER => None,
            Some(d) => Some(d),
            None => Some(self.retry.delay(attempt)),
        }
    }

    /// Sends a request built by `build` (called again for every try), with credentials.
    /// `idempotent` requests are tried again on dropped connections, 5xx and 429; others only
    /// when the registry refused them before reading (429, 503) or the token had expired.
    /// Returns the response whatever its status, except 401 after re-authenticating, which is
    /// [`Error::Unauthorized`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        idempotent: bool,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        let what = format!("{method} {}", url_path(url));
        let mut reauthenticated = false;
        loop {
            let resp = self
                .with_retries(
                    &what,
                    idempotent,
                    self.retry.attempts,
                    &self.host,
                    || async {
                        let request = self
                            .authorize(build(self.http.request(method.clone(), url)))
                            .await?;
                        Ok(request.send().await)
                    },
                )
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            // A token that expired or lacks a scope, or a registry that wants credentials
            // only now: authenticate again once, then give up.
            if reauthenticated || !self.reauthenticate(&resp).await? {
                let detail = error_detail(resp).await;
                return Err(self.unauthorized(&detail));
            }
            reauthenticated = true;
        }
    }

    fn unauthorized(&self, detail: &str) -> Error {
        let hint = if self.credential.is_none() {
            format!(
                "; no credentials for {}: run strata login {}",
                self.registry, self.registry
            )
        } else {
            String::new()
        };
        Error::Unauthorized {
            registry: self.registry.clone(),
            detail: format!("{detail}{hint}"),
        }
    }

    /// Adds the `Authorization` header the registry wants, fetching a token if needed.
    async fn authorize(&self, request: RequestBuilder) -> Result<RequestBuilder> {
        let mut auth = self.auth.lock().await;
        match auth.challenge.clone() {
            None => Ok(request),
            Some(Challenge::Basic) => Ok(match &self.credential {
                Some(c) => request.basic_auth(c.username(), Some(c.secret())),
                None => request,
            }),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let fresh = auth
                    .token
                    .as_ref()
                    .is_some_and(|(_, expires)| Instant::now() < *expires);
                if !fresh {
                    auth.token = Some(self.fetch_token(&realm, service.as_deref(), None).await?);
                }
                let (token, _) = auth.token.as_ref().expect("just fetched");
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        Error::Protocol {
                            registry: self.registry.clone(),
                            what: "the token".into(),
                            reason: "it is not a valid header value".into(),
                        }
                    })?;
                value.set_sensitive(true);
                Ok(request.header(AUTHORIZATION, value))
            }
        }
    }

    /// After a 401: takes the challenge it carries and gets a new token. Returns whether there
    /// is anything new to try.
    async fn reauthenticate(&self, resp: &Response) -> Result<bool> {
        let Some(challenge) = challenge_of(resp) else {
            return Ok(false);
        };
        let mut auth = self.auth.lock().await;
        let had_challenge = auth.challenge.is_some();
        auth.token = None;
        auth.challenge = Some(challenge.clone());
        match challenge {
            Challenge::Basic => Ok(!had_challenge && self.credential.is_some()),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                auth.token = Some(
                    self.fetch_token(&realm, service.as_deref(), scope.as_deref())
                        .await?,
                );
                Ok(true)
            }
        }
    }

    /// Asks the token server at `realm` for a token for every scope of this transfer.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        extra_scope: Option<&str>,
    ) -> Result<(String, Instant)> {
        let mut scopes = self.scopes.clone();
        if let Some(s) = extra_scope
            && !scopes.iter().any(|x| x == s)
        {
            scopes.push(s.to_owned());
        }
        let bad_realm = |reason: String| Error::Protocol {
            registry: self.registry.clone(),
            what: format!("the token realm {realm:?}"),
            reason,
        };
        let mut url = Url::parse(realm).map_err(|e| bad_realm(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_realm("it is not an http(s) URL".into()));
        }
        let identity = self.credential.as_ref().filter(|c| c.is_identity_token());
        if identity.is_none() {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in &scopes {
                q.append_pair("scope", s);
            }
            if let Some(c) = &self.credential {
                q.append_pair("account", c.username());
            }
        }
        let request = || -> RequestBuilder {
            match identity {
                Some(c) => {
                    let mut form = Url::parse("http://form/").expect("a constant URL");
                    {
                        let mut q = form.query_pairs_mut();
                        q.append_pair("grant_type", "refresh_token")
                            .append_pair("client_id", "strata")
                            .append_pair("refresh_token", c.secret());
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        q.append_pair("scope", &scopes.join(" "));
                    }
                    self.http
                        .post(url.clone())
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form.query().unwrap_or_default().to_owned())
                }
                None => self.http.get(url.clone()),
            }
        };
        let what = format!("GET token from {}", url_path(realm));
        let peer = format!("{} (token server {})", self.registry, url_path(realm));
        let resp = self
            .with_retries(&what, true, self.retry.attempts, &peer, || async {
                let mut rb = request();
                if let Some(c) = self.credential.as_ref().filter(|c| !c.is_identity_token()) {
                    rb = rb.basic_auth(c.username(), Some(c.secret()));
                }
                Ok(rb.send().await)
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = error_detail(resp).await;
            let who = match &self.credential {
                Some(c) => format!(
                    "the token server refused the credentials of {}: {detail}",
                    c.username()
                ),
                None => format!("the token server refused anonymous access: {detail}"),
            };
            return Err(self.unauthorized(&who));
        }
        if !status.is_success() {
            let detail = error_detail(resp).await;
            return Err(Error::Status {
                registry: self.registry.clone(),
                request: what,
                status: status.as_u16(),
                detail,
            });
        }
        let body = read_limited(resp, 1 << 20)
            .await
            .map_err(|reason| Error::Protocol {
                registry: self.registry.clone(),
                what: "the token response".into(),
                reason,
            })?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            registry: self.registry.clone(),
            what: "the token response".into(),
            reason: e.to_string(),
        })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Protocol {
                registry: self.registry.clone(),
                what: "the token response".into(),
                reason: "it has no token".into(),
            })?;
        let lifetime = parsed
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        // Ask again a little before it runs out, so a long transfer never sends a stale one.
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        tracing::debug!(
            "got a token for {} scopes, valid {lifetime:?}",
            scopes.len()
        );
        Ok((token, Instant::now() + lifetime - margin))
    }

    /// An error for an answer the protocol does not allow at that point.
    pub async fn status_error(&self, request: &str, resp: Response) -> Error {
        let status = resp.status();
        let detail = error_detail(resp).await;
        if status == StatusCode::NOT_FOUND {
            return Error::NotFound {
                registry: self.registry.clone(),
                what: request.to_owned(),
                detail,
            };
        }
        Error::Status {
            registry: self.registry.clone(),
            request: request.to_owned(),
            status: status.as_u16(),
            detail,
        }
    }

    /// A protocol error about `what`.
    pub fn protocol(&self, what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Protocol {
            registry: self.registry.clone(),
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// A connection error that ended a transfer.
    pub fn unreachable(&self, detail: String) -> Error {
        Error::Unreachable {
            registry: self.host.clone(),
            detail,
        }
    }

    /// The reporter of this transfer.
    pub fn reporter(&self) -> &'r dyn Reporter {
        self.reporter
    }

    /// The retry policy of this transfer.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (a date already past means now).
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// 429 and the 5xx answers that mean "not now".
fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn challenge_of(resp: &Response) -> Option<Challenge> {
    resp.headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(Challenge::parse)
}

/// The path of a URL, for messages (never its query: it may carry an account name).
fn url_path(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => format!("{}{}", u.host_str().unwrap_or_default(), u.path()),
        Err(_) => url.split('?').next().unwrap_or(url).to_owned(),
    }
}

/// Reads a body of at most `limit` bytes.
pub(crate) async fn read_limited(mut resp: Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > limit {
                    return Err(format!("it is larger than {limit} bytes"));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(describe_error(&e)),
        }
    }
}

/// What a registry said about an error: its JSON errors, or the start of the body.
pub(crate) async fn error_detail(resp: Response) -> String {
    let status = resp.status();
    let body = read_limited(resp, 64 << 10).await.unwrap_or_default();
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(&body) {
        let items: Vec<String> = parsed
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!(
                    "{}: {}",
                    e.code.to_ascii_lowercase().replace('_', " "),
                    e.message
                ),
                (false, true) => e.code.to_ascii_lowercase().replace('_', " "),
                _ => e.message.clone(),
            })
            .collect();
        if !items.is_empty() {
            return items.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() || text.len() > 200 {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_plain_http() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "registry-1.docker.io",
            "10.0.0.1:5000",
            "quay.io",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let ms = |a| p.delay(a).as_millis() / 50 * 50;
        assert!(
            p.delay(1) >= Duration::from_millis(100) && p.delay(1) < Duration::from_millis(150)
        );
        assert!(ms(2) >= 200 && ms(3) >= 400);
        assert!(p.delay(9) < Duration::from_millis(1050));
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let wait = retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(retry_after("soon"), None);
    }
}

//! A fault-injecting HTTP proxy in front of a test registry, on its own loopback port. Each
//! request is matched against rules that, a given number of times, answer with a status of
//! their own (500, 429 with `Retry-After`, 400), cut the response body after some bytes, flip a
//! byte of it, or trickle it slowly. Everything else is forwarded as is (one request per
//! connection). It logs every request and counts blob downloads in flight.

use crate::listener::LoopbackServer;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status without asking the registry.
    Status { code: u16, retry_after: Option<u32> },
    /// Forward the response but close the connection after this many body bytes.
    DropAfter(usize),
    /// Forward the response with one body byte changed.
    Corrupt,
    /// Forward the response body in pieces of `chunk` bytes with a pause before each.
    Slow { chunk: usize, pause: Duration },
}

/// A fault for requests of `method` whose path contains `path`, `times` times (0: always).
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: &'static str,
    pub path: String,
    /// Only requests without this header match (e.g. a `PATCH` without `Content-Range`).
    pub without_header: Option<&'static str>,
    pub times: usize,
    pub fault: Fault,
}

impl Rule {
    pub fn new(method: &'static str, path: impl Into<String>, times: usize, fault: Fault) -> Rule {
        Rule {
            method,
            path: path.into(),
            without_header: None,
            times,
            fault,
        }
    }
}

struct Shared {
    upstream: String,
    rules: Mutex<Vec<(Rule, usize)>>,
    log: Mutex<Vec<String>>,
    blob_gets_in_flight: AtomicUsize,
    max_blob_gets_in_flight: AtomicUsize,
}

/// A running proxy.
pub struct FaultProxy {
    shared: Arc<Shared>,
    /// `127.0.0.1:PORT`.
    pub host: String,
    _server: LoopbackServer,
}

impl FaultProxy {
    /// A proxy to the registry at `upstream` (`127.0.0.1:PORT`) applying `rules`.
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            rules: Mutex::new(rules.into_iter().map(|r| (r, 0)).collect()),
            log: Mutex::default(),
            blob_gets_in_flight: AtomicUsize::new(0),
            max_blob_gets_in_flight: AtomicUsize::new(0),
        });
        let server = {
            let shared = shared.clone();
            LoopbackServer::start(move |conn| {
                let _ = handle(&shared, conn);
            })
        };
        FaultProxy {
            host: format!("127.0.0.1:{}", server.port()),
            shared,
            _server: server,
        }
    }

    /// Every request seen: `METHOD PATH [Range: …]`.
    pub fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The most blob downloads that were in flight at once.
    pub fn max_blob_gets_in_flight(&self) -> usize {
        self.shared.max_blob_gets_in_flight.load(Ordering::SeqCst)
    }

    /// How many times each rule fired.
    pub fn fired(&self) -> Vec<usize> {
        self.shared
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n)| *n)
            .collect()
    }
}

/// A request or response head: the first line and the header lines.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        Ok(Some(Head {
            first: first.trim_end().to_owned(),
            headers,
        }))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> Option<usize> {
        self.get("content-length").and_then(|v| v.parse().ok())
    }

    /// The head as bytes, with `Connection: close`.
    fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.first);
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("keep-alive") {
                s.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        s.push_str("Connection: close\r\n\r\n");
        s.into_bytes()
    }
}

fn handle(shared: &Shared, client: TcpStream) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let Some(request) = Head::read(&mut from_client)? else {
        return Ok(());
    };
    let mut parts = request.first.split(' ');
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut entry = format!("{method} {path}");
    if let Some(range) = request.get("range") {
        entry.push_str(&format!(" Range: {range}"));
    }
    shared.log.lock().unwrap().push(entry);
    let fault = {
        let mut rules = shared.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|(r, fired)| {
                r.method == method
                    && path.contains(&r.path)
                    && r.without_header.is_none_or(|h| request.get(h).is_none())
                    && (r.times == 0 || *fired < r.times)
            })
            .map(|(r, fired)| {
                *fired += 1;
                r.fault.clone()
            })
    };
    let mut body = vec![0u8; request.content_length().unwrap_or(0)];
    from_client.read_exact(&mut body)?;
    if let Some(Fault::Status { code, retry_after }) = fault {
        let text = format!(
            r#"{{"errors":[{{"code":"INJECTED","message":"injected {code} by the test proxy"}}]}}"#
        );
        let retry = retry_after
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        write!(
            to_client,
            "HTTP/1.1 {code} Injected\r\n{retry}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )?;
        return Ok(());
    }
    let mut upstream = TcpStream::connect(&shared.upstream)?;
    upstream.write_all(&request.to_bytes())?;
    upstream.write_all(&body)?;
    let mut from_upstream = BufReader::new(upstream.try_clone()?);
    let Some(response) = Head::read(&mut from_upstream)? else {
        return Ok(());
    };
    to_client.write_all(&response.to_bytes())?;
    let is_blob_get = method == "GET" && path.contains("/blobs/sha256:");
    if is_blob_get {
        let now = shared.blob_gets_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .max_blob_gets_in_flight
            .fetch_max(now, Ordering::SeqCst);
    }
    // A download stops counting just before its last bytes go out: the client cannot start
    // the next one while this one still counts.
    let mut counted = is_blob_get;
    let mut done = || {
        if std::mem::take(&mut counted) {
            shared.blob_gets_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let length = if method == "HEAD" {
        Some(0)
    } else {
        response.content_length()
    };
    let result = copy_body(
        &mut from_upstream,
        &mut to_client,
        fault.as_ref(),
        length,
        &mut done,
    );
    done();
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    result
}

fn copy_body(
    from: &mut impl Read,
    to: &mut TcpStream,
    fault: Option<&Fault>,
    length: Option<usize>,
    before_last_write: &mut dyn FnMut(),
) -> std::io::Result<()> {
    let mut sent = 0usize;
    let mut corrupted = false;
    let piece = match fault {
        Some(Fault::Slow { chunk, .. }) => *chunk,
        _ => 64 << 10,
    };
    let mut buf = vec![0u8; piece];
    while length.is_none_or(|l| sent < l) {
        if let Some(Fault::Slow { pause, .. }) = fault {
            std::thread::sleep(*pause);
        }
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let data = &mut buf[..n];
        match fault {
            Some(Fault::DropAfter(limit)) if sent + n >= *limit => {
                to.write_all(&data[..limit - sent])?;
                to.flush()?;
                return Ok(());
            }
            Some(Fault::Corrupt) if !corrupted && sent + n > 1000 => {
                data[1000 - sent] ^= 0xff;
                corrupted = true;
            }
            _ => {}
        }
        if length.is_some_and(|l| sent + n >= l) {
            before_last_write();
        }
        to.write_all(data)?;
        sent += n;
    }
    Ok(())
}

//! `ADD` of http(s) URLs, as BuildKit's Dockerfile frontend does it: the file is downloaded and
//! never extracted, even when it is an archive; it is named after the last segment of the URL's
//! path, has mode 0600 and owner 0:0 (until `--chmod`/`--chown`), and is dated by the
//! response's `Last-Modified` (the epoch without one). `--checksum=sha256:…` (a single URL
//! source) is checked against what arrives.
//!
//! Downloads stream to a directory of their own under the store's `tmp`, hashed on the way,
//! and that directory goes when the [`Downloads`] holding it does, whatever happened. The
//! client is [`registry_client::http_client`]: timeouts, the system's roots, and the proxies
//! of `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use layerfs::digest::{Hasher, parse_sha256};
use layerfs::error::IoContext as _;
use layerfs::store::remove_tree;
use oci_spec::image::Digest;

/// Why a URL source could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("source can't be a URL for COPY (use ADD): {0}")]
    UrlInCopy(String),
    #[error("--checksum needs exactly one source, an http(s) URL")]
    ChecksumSource,
    #[error("--checksum={0}: expected sha256:<64 hex digits>")]
    BadChecksum(String),
    #[error("downloading {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("downloading {url}: the server answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("downloading {url}: checksum mismatch: expected {expected}, got {actual}")]
    Checksum {
        url: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Io(#[from] layerfs::Error),
    #[error("downloading {0}: interrupted")]
    Interrupted(String),
}

/// Whether an ADD source is a URL to download.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The name a download gets: the last segment of the URL's path, percent-decoded (query and
/// fragment left out), or `__unnamed__` when the path has none.
pub fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .split_once('/')
        .map_or("", |(_, p)| p);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let name = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    if name.is_empty() || name == "." || name.contains('/') {
        "__unnamed__".to_owned()
    } else {
        name.into_owned()
    }
}

/// Checks what an ADD's sources and `--checksum` allow, and returns its URL sources.
pub fn url_sources(
    paths: &[String],
    is_add: bool,
    checksum: Option<&str>,
) -> Result<(Vec<String>, Option<Digest>), FetchError> {
    let urls: Vec<String> = paths.iter().filter(|p| is_url(p)).cloned().collect();
    if let (false, Some(u)) = (is_add, urls.first()) {
        return Err(FetchError::UrlInCopy(u.clone()));
    }
    let checksum = match checksum {
        None => None,
        Some(_) if paths.len() != 1 || urls.len() != 1 => return Err(FetchError::ChecksumSource),
        Some(c) => Some(parse_sha256(c).ok_or_else(|| FetchError::BadChecksum(c.to_owned()))?),
    };
    Ok((urls, checksum))
}

/// One downloaded URL.
#[derive(Debug)]
pub struct Download {
    pub url: String,
    /// The file name it gets in the destination.
    pub name: String,
    /// Where it is on disk (inside the [`Downloads`] dir).
    pub path: PathBuf,
    /// The sha256 of its content.
    pub digest: Digest,
    /// `Last-Modified`, in seconds since the epoch (0 without one).
    pub mtime: i64,
}

/// Downloaded URLs, in a directory that is removed with everything in it when this is dropped.
#[derive(Debug)]
pub struct Downloads {
    dir: PathBuf,
    pub files: Vec<Download>,
}

impl Drop for Downloads {
    fn drop(&mut self) {
        let _ = remove_tree(&self.dir);
    }
}

impl Downloads {
    /// Downloads `urls` into the new directory `dir`, one after the other; the only URL must
    /// have the content `checksum` when one is given. Stops, leaving nothing, when `cancel`
    /// is set.
    pub fn fetch(
        dir: PathBuf,
        urls: &[String],
        checksum: Option<&Digest>,
        cancel: &AtomicBool,
    ) -> Result<Downloads, FetchError> {
        std::fs::create_dir_all(&dir).at("create directory", &dir)?;
        let mut out = Downloads {
            dir,
            files: Vec::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .at("start the async runtime in", Path::new("/proc/self"))?;
        let Some(first) = urls.first() else {
            return Ok(out);
        };
        let client = registry_client::http_client(false).map_err(|source| FetchError::Request {
            url: first.clone(),
            source,
        })?;
        for (i, url) in urls.iter().enumerate() {
            let path = out.dir.join(format!("{i}"));
            let download = download(&client, url, &path);
            let (digest, mtime) = runtime.block_on(async {
                tokio::select! {
                    r = download => r,
                    () = cancelled(cancel) => Err(FetchError::Interrupted(url.clone())),
                }
            })?;
            if let Some(expected) = checksum
                && *expected != digest
            {
                return Err(FetchError::Checksum {
                    url: url.clone(),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
            out.files.push(Download {
                url: url.clone(),
                name: file_name(url),
                path,
                digest,
                mtime,
            });
        }
        Ok(out)
    }
}

/// Resolves once `cancel` is set.
async fn cancelled(cancel: &AtomicBool) {
    while !cancel.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GETs `url` into the new file `path` (mode 0600); returns its digest and `Last-Modified`.
async fn download(
    client: &reqwest::Client,
    url: &str,
    path: &Path,
) -> Result<(Digest, i64), FetchError> {
    let request = |source| FetchError::Request {
        url: url.to_owned(),
        source,
    };
    let mut response = client.get(url).send().await.map_err(request)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let mtime = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .at("create", path)?;
    let mut hasher = Hasher::default();
    while let Some(chunk) = response.chunk().await.map_err(request)? {
        hasher.update(&chunk);
        file.write_all(&chunk).at("write", path)?;
    }
    Ok((hasher.digest(), mtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_path_segment() {
        assert_eq!(
            file_name("https://example.com/a/b/tool.tar.gz"),
            "tool.tar.gz"
        );
        assert_eq!(
            file_name("http://h:8080/dl/my%20file.txt?x=1#f"),
            "my file.txt"
        );
        assert_eq!(file_name("https://example.com/dir/"), "dir");
        assert_eq!(file_name("https://example.com"), "__unnamed__");
        assert_eq!(file_name("https://example.com/"), "__unnamed__");
        assert_eq!(file_name("https://example.com/a%2Fb"), "__unnamed__");
    }

    #[test]
    fn checksums_need_one_url_and_sha256() {
        let one = ["https://h/f".to_owned()];
        let hex = "a".repeat(64);
        let (urls, sum) = url_sources(&one, true, Some(&format!("sha256:{hex}"))).unwrap();
        assert_eq!((urls.len(), sum.unwrap().digest()), (1, hex.as_str()));
        let two = ["https://h/f".to_owned(), "local".to_owned()];
        assert!(matches!(
            url_sources(&two, true, Some("sha256:00")),
            Err(FetchError::ChecksumSource)
        ));
        assert!(matches!(
            url_sources(&["local".to_owned()], true, Some(&format!("sha256:{hex}"))),
            Err(FetchError::ChecksumSource)
        ));
        assert!(matches!(
            url_sources(&one, true, Some("md5:abc")),
            Err(FetchError::BadChecksum(_))
        ));
        assert!(matches!(
            url_sources(&one, false, None),
            Err(FetchError::UrlInCopy(_))
        ));
        assert_eq!(url_sources(&two, true, None).unwrap().0, ["https://h/f"]);
    }
}

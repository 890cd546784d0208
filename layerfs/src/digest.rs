//! SHA-256 content digests: hashing writers and readers that count bytes as they go, so a single
//! streaming pass yields both the data and its digest.

use std::io::{self, Read, Write};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

/// A running SHA-256 over everything fed to it.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("len", &self.len).finish()
    }
}

impl Hasher {
    /// Feeds `data` into the hash.
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }

    /// How many bytes have been hashed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything hashed so far.
    pub fn digest(self) -> Digest {
        sha256_to_digest(&self.sha.finalize())
    }
}

fn sha256_to_digest(bytes: &[u8]) -> Digest {
    Digest::try_from(format!("sha256:{}", hex::encode(bytes)))
        .expect("a hex sha256 is always a valid digest")
}

/// The `sha256:` digest of `data`.
pub fn digest_of(data: &[u8]) -> Digest {
    sha256_to_digest(&Sha256::digest(data))
}

/// Parses and checks a `sha256:<64 hex>` digest (other algorithms are refused: strata's store is
/// sha256-only, as every registry and tool in use today).
pub fn parse_sha256(s: &str) -> Option<Digest> {
    let d = Digest::try_from(s).ok()?;
    (d.algorithm().as_ref() == "sha256").then_some(d)
}

/// A writer that hashes what passes through it into `inner`.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Wraps `inner`, continuing a hash of content written to it earlier.
    pub fn resume(inner: W, hasher: Hasher) -> Self {
        HashingWriter { inner, hasher }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.digest(), len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `io::copy` with 1 MiB reads instead of its 8 KiB: a stream being hashed spends a sixth of
/// its time in syscalls at 8 KiB (sha256 of a file from the page cache: 0.97 → 1.15 GB/s).
pub fn copy_in_large_reads(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0; 1 << 20];
    let mut copied = 0;
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => {
                to.write_all(&buf[..n])?;
                copied += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A reader that hashes what is read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads `inner` to its end (so trailing bytes are hashed too) and returns the digest and
    /// the byte count.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        copy_in_large_reads(&mut self, &mut io::sink())?;
        let len = self.hasher.len();
        Ok((self.hasher.digest(), len))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_is_the_well_known_value() {
        assert_eq!(
            digest_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn writer_and_reader_agree_with_digest_of() {
        let data = b"strata layers".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (out, d, n) = w.finish();
        assert_eq!(out, data);
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, digest_of(&data));
        let (d2, n2) = HashingReader::new(&data[..]).finish().unwrap();
        assert_eq!((d2, n2), (d, n));
    }

    #[test]
    fn parse_sha256_refuses_other_algorithms_and_bad_hex() {
        assert!(parse_sha256(&format!("sha256:{}", "a".repeat(64))).is_some());
        assert!(parse_sha256(&format!("sha512:{}", "a".repeat(128))).is_none());
        assert!(parse_sha256("sha256:xyz").is_none());
        assert!(parse_sha256(&format!("sha256:{}", "A".repeat(64))).is_none());
    }
}

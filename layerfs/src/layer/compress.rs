//! Layer compression: gzip (flate2 on the zlib-rs backend), zstd (multi-threaded), or none, and
//! decompression that recognizes the stream by its magic bytes whatever the media type says.

use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::bufread::MultiGzDecoder;

use super::pgzip::ParallelGzEncoder;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip { level: 1 }
    }
}

impl Compression {
    /// The OCI media type of a layer blob compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip { .. } => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Parses `gzip`, `gzip:LEVEL`, `zstd`, `zstd:LEVEL`, `none`/`uncompressed`.
    pub fn parse(s: &str) -> Option<Self> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l.parse::<i32>().ok()?)),
            None => (s, None),
        };
        match name {
            "gzip" => Some(Compression::Gzip {
                level: level
                    .map_or(Ok(1), u32::try_from)
                    .ok()
                    .filter(|l| *l <= 9)?,
            }),
            "zstd" => Some(Compression::Zstd {
                level: level.unwrap_or(3),
            }),
            "none" | "uncompressed" => Some(Compression::None),
            _ => None,
        }
    }

    /// Wraps `out` in an encoder.
    pub fn encoder<W: Write>(self, out: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::None(out),
            Compression::Gzip { level } => Encoder::Gzip(ParallelGzEncoder::new(out, level)),
            Compression::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(out, level)?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
                if threads > 1 {
                    e.multithread(threads)?;
                }
                Encoder::Zstd(e)
            }
        })
    }
}

/// A compressing writer; [`Encoder::finish`] writes the trailer.
#[allow(missing_debug_implementations)]
pub enum Encoder<W: Write> {
    None(W),
    Gzip(ParallelGzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Writes `data`, which a parallel gzip takes as its next block without copying it.
    pub fn write_owned(&mut self, data: Vec<u8>) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_owned(data),
            _ => self.write_all(&data),
        }
    }

    /// Ends the stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// The compression a stream starts with, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Plain,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

/// Looks at the first bytes of `head`.
pub fn detect(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1f, 0x8b]) {
        Detected::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Detected::Zstd
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Detected::Xz
    } else if head.starts_with(b"BZh") {
        Detected::Bzip2
    } else {
        Detected::Plain
    }
}

/// A reader of the decompressed stream of `input`, whatever its compression.
pub fn decompress<'a, R: Read + Send + 'a>(input: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut buf = BufReader::with_capacity(256 << 10, input);
    let head = buf.fill_buf()?;
    Ok(match detect(head) {
        Detected::Plain => Box::new(buf),
        Detected::Gzip => Box::new(MultiGzDecoder::new(buf)),
        Detected::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
        Detected::Xz => Box::new(liblzma::bufread::XzDecoder::new(buf)),
        Detected::Bzip2 => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "bzip2-compressed archives are not supported",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_round_trips_through_decompress() {
        let data = b"layer bytes ".repeat(10_000);
        for c in [
            Compression::None,
            Compression::Gzip { level: 1 },
            Compression::Gzip { level: 9 },
            Compression::Zstd { level: 3 },
        ] {
            let mut enc = c.encoder(Vec::new()).unwrap();
            enc.write_all(&data).unwrap();
            let blob = enc.finish().unwrap();
            let mut out = Vec::new();
            decompress(&blob[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{c:?}");
        }
    }

    #[test]
    fn parse_names_and_levels() {
        assert_eq!(
            Compression::parse("gzip"),
            Some(Compression::Gzip { level: 1 })
        );
        assert_eq!(
            Compression::parse("gzip:9"),
            Some(Compression::Gzip { level: 9 })
        );
        assert_eq!(
            Compression::parse("zstd:19"),
            Some(Compression::Zstd { level: 19 })
        );
        assert_eq!(Compression::parse("none"), Some(Compression::None));
        assert_eq!(Compression::parse("gzip:10"), None);
        assert_eq!(Compression::parse("lz4"), None);
    }
}

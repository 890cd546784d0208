//! A deterministic tar writer: USTAR headers with numeric owners and empty user/group names,
//! PAX records (sorted) for what USTAR cannot hold — long paths and link targets, large sizes,
//! ids and times out of range, and xattrs as `SCHILY.xattr.NAME` — and nothing that depends on
//! the machine or the moment. The same entries always give the same bytes.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// The largest value a 12-byte octal field holds (8 GiB - 1 for sizes).
const MAX_OCTAL_12: u64 = 0o777_7777_7777;
/// The largest value an 8-byte octal field holds (uids and gids).
const MAX_OCTAL_8: u64 = 0o777_7777;

/// What kind of inode an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// A hard link to an earlier entry of the same tar.
    Hardlink {
        target: Vec<u8>,
    },
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One entry's header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Relative path with `/` separators, no leading `./`, no trailing `/`.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Writes tar entries to `out`.
#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
    clamp_mtime: Option<i64>,
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    /// A writer that clamps every mtime to `clamp_mtime` when set (`SOURCE_DATE_EPOCH`).
    pub fn new(out: W, clamp_mtime: Option<i64>) -> Self {
        TarWriter {
            out,
            clamp_mtime,
            buf: vec![0; 256 << 10],
        }
    }

    /// Appends an entry; a file's content is read from `data` (exactly `size` bytes).
    pub fn append(&mut self, meta: &EntryMeta, data: Option<&mut dyn Read>) -> io::Result<()> {
        let mtime = match self.clamp_mtime {
            Some(c) => meta.mtime.min(c),
            None => meta.mtime,
        };
        let mut name = meta.path.clone();
        if meta.kind == EntryKind::Dir {
            name.push(b'/');
        }
        let (typeflag, size, link): (u8, u64, &[u8]) = match &meta.kind {
            EntryKind::File { size } => (b'0', *size, b""),
            EntryKind::Dir => (b'5', 0, b""),
            EntryKind::Symlink { target } => (b'2', 0, target),
            EntryKind::Hardlink { target } => (b'1', 0, target),
            EntryKind::Char { .. } => (b'3', 0, b""),
            EntryKind::Block { .. } => (b'4', 0, b""),
            EntryKind::Fifo => (b'6', 0, b""),
        };

        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if name.len() > 100 {
            pax.push((b"path".to_vec(), name.clone()));
        }
        if link.len() > 100 {
            pax.push((b"linkpath".to_vec(), link.to_vec()));
        }
        if size > MAX_OCTAL_12 {
            pax.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        if meta.uid > MAX_OCTAL_8 {
            pax.push((b"uid".to_vec(), meta.uid.to_string().into_bytes()));
        }
        if meta.gid > MAX_OCTAL_8 {
            pax.push((b"gid".to_vec(), meta.gid.to_string().into_bytes()));
        }
        if mtime < 0 || mtime as u64 > MAX_OCTAL_12 {
            pax.push((b"mtime".to_vec(), mtime.to_string().into_bytes()));
        }
        for (k, v) in &meta.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.push((key, v.clone()));
        }
        if !pax.is_empty() {
            pax.sort();
            let body = pax_records(&pax);
            let mut pax_name = b"PaxHeaders/".to_vec();
            let base = name
                .rsplit(|b| *b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b"");
            pax_name.extend_from_slice(&base[..base.len().min(100 - pax_name.len())]);
            let h = header(&HeaderFields {
                name: &pax_name,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: body.len() as u64,
                mtime: 0,
                typeflag: b'x',
                link: b"",
                dev: (0, 0),
            });
            self.out.write_all(&h)?;
            self.out.write_all(&body)?;
            self.pad(body.len() as u64)?;
        }

        let dev = match meta.kind {
            EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => (major, minor),
            _ => (0, 0),
        };
        let h = header(&HeaderFields {
            name: &name[..name.len().min(100)],
            mode: meta.mode & 0o7777,
            uid: meta.uid.min(MAX_OCTAL_8),
            gid: meta.gid.min(MAX_OCTAL_8),
            size: size.min(MAX_OCTAL_12),
            mtime: mtime.clamp(0, MAX_OCTAL_12 as i64) as u64,
            typeflag,
            link: &link[..link.len().min(100)],
            dev,
        });
        self.out.write_all(&h)?;
        if size > 0 {
            let data = data.ok_or_else(|| io::Error::other("a file entry needs its content"))?;
            let mut left = size;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let n = data.read(&mut self.buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: file shrank while it was being archived",
                            String::from_utf8_lossy(&meta.path)
                        ),
                    ));
                }
                self.out.write_all(&self.buf[..n])?;
                left -= n as u64;
            }
            self.pad(size)?;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// The inner writer, for a tar abandoned half-way.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

struct HeaderFields<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    link: &'a [u8],
    dev: (u32, u32),
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

fn header(f: &HeaderFields<'_>) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..f.name.len()].copy_from_slice(f.name);
    octal(&mut h[100..108], u64::from(f.mode));
    octal(&mut h[108..116], f.uid);
    octal(&mut h[116..124], f.gid);
    octal(&mut h[124..136], f.size);
    octal(&mut h[136..148], f.mtime);
    h[156] = f.typeflag;
    h[157..157 + f.link.len()].copy_from_slice(f.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(f.dev.0));
    octal(&mut h[337..345], u64::from(f.dev.1));
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    octal(&mut h[148..155], u64::from(sum));
    h[155] = b' ';
    h
}

/// PAX records: `"%d %s=%s\n"`, the length counting itself.
fn pax_records(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &str, kind: EntryKind) -> EntryMeta {
        EntryMeta {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_000_000_000,
            xattrs: vec![],
        }
    }

    fn write(entries: &[(EntryMeta, &[u8])]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new(), None);
        for (m, data) in entries {
            let mut d: &[u8] = data;
            w.append(m, Some(&mut d)).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let r = pax_records(&[(b"path".to_vec(), b"x".repeat(93))]);
        // "100 path=xxx…\n": 3 + 1 + 4 + 1 + 93 + 1 = 103? no: the length must match exactly.
        let s = String::from_utf8(r.clone()).unwrap();
        let (n, _) = s.split_once(' ').unwrap();
        assert_eq!(n.parse::<usize>().unwrap(), r.len());
        for len in [1usize, 5, 90, 94, 95, 96, 994, 995, 996] {
            let r = pax_records(&[(b"k".to_vec(), vec![b'v'; len])]);
            let s = String::from_utf8(r.clone()).unwrap();
            assert_eq!(
                s.split_once(' ').unwrap().0.parse::<usize>().unwrap(),
                r.len()
            );
        }
    }

    #[test]
    fn size_past_the_ustar_limit_is_a_pax_record() {
        // Header-level check: an entry announced as 9 GiB gets a PAX `size` record and the
        // tar crate reads that size back (the content itself is not written).
        let big = 9 * 1024 * 1024 * 1024u64;
        let mut out = Vec::new();
        let mut w = TarWriter::new(&mut out, None);
        let m = meta("big", EntryKind::File { size: big });
        let err = w.append(&m, Some(&mut &b""[..])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut archive = tar::Archive::new(&out[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.size(), big);
        assert_eq!(entry.path().unwrap().to_str(), Some("big"));
    }

    #[test]
    fn long_names_links_ids_and_xattrs_round_trip_through_the_tar_crate() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        let target = "t".repeat(300);
        let mut f = meta(&long, EntryKind::File { size: 5 });
        f.uid = 5_000_000;
        f.gid = 70_000;
        f.xattrs = vec![
            (b"security.capability".to_vec(), vec![1, 0, 0, 2]),
            (b"user.note".to_vec(), b"hello".to_vec()),
        ];
        let s = meta(
            "link",
            EntryKind::Symlink {
                target: target.clone().into_bytes(),
            },
        );
        let mut old = meta("old", EntryKind::File { size: 0 });
        old.mtime = -5;
        let bytes = write(&[(f, b"hello"), (s, b""), (old, b"")]);
        let mut a = tar::Archive::new(&bytes[..]);
        let mut it = a.entries().unwrap();
        let mut e = it.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), long);
        assert_eq!(e.header().uid().unwrap(), 5_000_000);
        assert_eq!(e.header().gid().unwrap(), 70_000);
        let x: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|p| {
                let p = p.unwrap();
                (p.key().unwrap().to_owned(), p.value_bytes().to_vec())
            })
            .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
            .collect();
        assert_eq!(x.len(), 2);
        assert_eq!(
            x[0],
            ("SCHILY.xattr.security.capability".into(), vec![1, 0, 0, 2])
        );
        let mut content = String::new();
        e.read_to_string(&mut content).unwrap();
        assert_eq!(content, "hello");
        let e = it.next().unwrap().unwrap();
        assert_eq!(e.link_name().unwrap().unwrap().to_str().unwrap(), target);
        let mut e = it.next().unwrap().unwrap();
        let mtime = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .find_map(|p| {
                let p = p.unwrap();
                (p.key().unwrap() == "mtime").then(|| p.value().unwrap().to_owned())
            })
            .unwrap();
        assert_eq!(mtime, "-5");
    }

    #[test]
    fn same_entries_same_bytes_and_clamping() {
        let entries = [
            (meta("a", EntryKind::Dir), &b""[..]),
            (meta("a/f", EntryKind::File { size: 3 }), &b"abc"[..]),
        ];
        assert_eq!(write(&entries), write(&entries));
        let mut w = TarWriter::new(Vec::new(), Some(5));
        w.append(&entries[0].0, None).unwrap();
        let out = w.finish().unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(e.header().mtime().unwrap(), 5);
        assert_eq!(e.path().unwrap().to_str(), Some("a/"));
    }
}

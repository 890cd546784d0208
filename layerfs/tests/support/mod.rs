//! Helpers for layerfs's tests: describing a tree so two trees can be compared, and crafting
//! raw tar entries that well-behaved writers refuse to produce.

#![allow(dead_code, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use layerfs::digest::digest_of;
use layerfs::layer::diff::read_xattrs;

pub fn is_root_or_skip(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("SKIP {test}: needs root (whiteout devices, owners, trusted xattrs)");
    }
    root
}

/// Everything a layer round trip must keep, per path.
pub fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = e.path().symlink_metadata().unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_symlink() {
            format!("symlink->{}", fs::read_link(e.path()).unwrap().display())
        } else if ft.is_file() {
            let data = fs::read(e.path()).unwrap();
            format!("file {} {}", data.len(), digest_of(&data))
        } else if ft.is_char_device() {
            format!("char {}", md.rdev())
        } else if ft.is_block_device() {
            format!("block {}", md.rdev())
        } else if ft.is_fifo() {
            "fifo".to_owned()
        } else {
            "other".to_owned()
        };
        let link = if ft.is_file() && md.nlink() > 1 {
            let first = inodes
                .entry(md.ino())
                .or_insert_with(|| rel.clone())
                .clone();
            format!(" link-group={first}")
        } else {
            String::new()
        };
        let xattrs: Vec<String> = read_xattrs(e.path())
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !k.starts_with(b"security.selinux"))
            .map(|(k, v)| format!("{}={:?}", String::from_utf8_lossy(&k), v))
            .collect();
        // Whiteouts are compared by kind only (their metadata is fixed by the format).
        let meta = if ft.is_char_device() && md.rdev() == 0 {
            String::new()
        } else {
            format!(
                " mode={:o} owner={}:{} mtime={}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                md.mtime()
            )
        };
        out.insert(rel, format!("{kind}{meta}{link} xattrs={xattrs:?}"));
    }
    out
}

/// Asserts two trees are the same, listing the differences.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (da, db) = (describe(a), describe(b));
    if da != db {
        let mut diffs = Vec::new();
        for k in da
            .keys()
            .chain(db.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if da.get(k) != db.get(k) {
                diffs.push(format!("  {k}:\n    {:?}\n    {:?}", da.get(k), db.get(k)));
            }
        }
        panic!("trees differ:\n{}", diffs.join("\n"));
    }
}

/// A raw tar entry: the name is written into the header as is (no `..` checks).
pub struct Raw<'a> {
    pub name: &'a str,
    pub kind: tar::EntryType,
    pub link: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
    pub pax: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Raw<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        Raw {
            name,
            kind: tar::EntryType::Regular,
            link: "",
            mode: 0o644,
            data,
            pax: vec![],
        }
    }
    pub fn dir(name: &'a str) -> Self {
        Raw {
            name,
            kind: tar::EntryType::Directory,
            link: "",
            mode: 0o755,
            data: b"",
            pax: vec![],
        }
    }
    pub fn symlink(name: &'a str, target: &'a str) -> Self {
        Raw {
            name,
            kind: tar::EntryType::Symlink,
            link: target,
            mode: 0o777,
            data: b"",
            pax: vec![],
        }
    }
    pub fn hardlink(name: &'a str, target: &'a str) -> Self {
        Raw {
            name,
            kind: tar::EntryType::Link,
            link: target,
            mode: 0o644,
            data: b"",
            pax: vec![],
        }
    }
}

fn raw_header(name: &[u8], kind: tar::EntryType, link: &[u8], mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_000_000_000);
    h.set_cksum();
    h
}

/// Writes raw entries as a tar.
pub fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if !e.pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &e.pax {
                let rest = k.len() + v.len() + 3;
                let mut len = rest + 1;
                while len.to_string().len() + rest != len {
                    len = len.to_string().len() + rest;
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(v);
                body.push(b'\n');
            }
            let h = raw_header(
                b"pax",
                tar::EntryType::XHeader,
                b"",
                0o644,
                body.len() as u64,
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(&body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        let h = raw_header(
            e.name.as_bytes(),
            e.kind,
            e.link.as_bytes(),
            e.mode,
            e.data.len() as u64,
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

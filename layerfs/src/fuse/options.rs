//! The overlay-style option string: `lowerdir=A:B,upperdir=U,workdir=W`, as kernel overlayfs
//! and fuse-overlayfs take it (leftmost lower is the top; `\` escapes `,`, `:` and itself),
//! plus the generic mount options `mount(8)` and `mount.fuse3` pass along, which are accepted
//! and ignored.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// A union as the option string describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnionOptions {
    /// Read-only layers, top first.
    pub lowers: Vec<PathBuf>,
    /// The writable layer and its work dir (both or neither: without them the union is
    /// read-only).
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Session threads (`threads=N`); 0 picks from the number of CPUs.
    pub threads: usize,
    /// Kernel passthrough of open files (`passthrough=off` disables it).
    pub passthrough: bool,
}

/// Options of `mount(8)`, FUSE and overlayfs that a union accepts without effect.
const IGNORED: &[&str] = &[
    "rw",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "diratime",
    "lazytime",
    "async",
    "sync",
    "dirsync",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "allow_other",
    "allow_root",
    "default_permissions",
    "auto_unmount",
    "userxattr",
    "volatile",
    "silent",
    "loud",
];
const IGNORED_KEYS: &[&str] = &[
    "fsname",
    "subtype",
    "index",
    "redirect_dir",
    "metacopy",
    "xino",
    "nfs_export",
    "uuid",
    "verity",
    "max_read",
    "x-systemd.requires",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
];

/// Splits `s` at `sep` where it is not escaped with `\`, and unescapes the pieces.
fn split_escaped(s: &[u8], sep: u8) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let mut bytes = s.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            if let Some(&next) = bytes.next() {
                out.last_mut().expect("never empty").push(next);
            }
        } else if b == sep {
            out.push(Vec::new());
        } else {
            out.last_mut().expect("never empty").push(b);
        }
    }
    out
}

fn escape(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

impl UnionOptions {
    /// Adds what the option string `opts` (one `-o` argument) says. An option that is
    /// neither a union's nor a generic mount option is an error naming it.
    pub fn parse(&mut self, opts: &[u8]) -> Result<(), String> {
        // Split on commas first, keeping escapes for the lowerdir split.
        let mut raw: Vec<Vec<u8>> = vec![Vec::new()];
        let mut it = opts.iter();
        while let Some(&b) = it.next() {
            match b {
                b'\\' => {
                    let cur = raw.last_mut().expect("never empty");
                    cur.push(b);
                    if let Some(&n) = it.next() {
                        cur.push(n);
                    }
                }
                b',' => raw.push(Vec::new()),
                _ => raw.last_mut().expect("never empty").push(b),
            }
        }
        for opt in raw.into_iter().filter(|o| !o.is_empty()) {
            let (key, value) = match opt.iter().position(|b| *b == b'=') {
                Some(i) => (&opt[..i], Some(&opt[i + 1..])),
                None => (&opt[..], None),
            };
            let key_str = String::from_utf8_lossy(key).into_owned();
            match (key_str.as_str(), value) {
                ("lowerdir", Some(v)) => {
                    self.lowers = split_escaped(v, b':')
                        .into_iter()
                        .filter(|l| !l.is_empty())
                        .map(path)
                        .collect();
                }
                ("upperdir", Some(v)) => self.upper = Some(path(split_escaped(v, 0).concat())),
                ("workdir", Some(v)) => self.work = Some(path(split_escaped(v, 0).concat())),
                ("threads", Some(v)) => {
                    self.threads = String::from_utf8_lossy(v).parse().map_err(|_| {
                        format!("threads={}: not a number", String::from_utf8_lossy(v))
                    })?;
                }
                ("passthrough", Some(v)) => {
                    self.passthrough = match v {
                        b"on" | b"auto" => true,
                        b"off" => false,
                        _ => {
                            return Err(format!(
                                "passthrough={}: on or off",
                                String::from_utf8_lossy(v)
                            ));
                        }
                    }
                }
                ("ro", None) => {
                    self.upper = None;
                    self.work = None;
                }
                (k, None) if IGNORED.contains(&k) => {}
                (k, Some(_)) if IGNORED_KEYS.contains(&k) => {}
                _ => {
                    return Err(format!(
                        "unknown option {:?}",
                        String::from_utf8_lossy(&opt)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that the options make a union.
    pub fn validate(&self) -> Result<(), String> {
        if self.lowers.is_empty() {
            return Err("lowerdir= names no layer".to_owned());
        }
        match (&self.upper, &self.work) {
            (Some(_), None) => Err("upperdir= needs workdir=".to_owned()),
            (None, Some(_)) => Err("workdir= needs upperdir=".to_owned()),
            _ => Ok(()),
        }
    }

    /// The option string for these options (what [`UnionOptions::parse`] reads back).
    pub fn to_option_string(&self) -> Vec<u8> {
        let mut out = b"lowerdir=".to_vec();
        for (i, l) in self.lowers.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            out.extend(escape(l));
        }
        if let (Some(u), Some(w)) = (&self.upper, &self.work) {
            out.extend_from_slice(b",upperdir=");
            out.extend(escape(u));
            out.extend_from_slice(b",workdir=");
            out.extend(escape(w));
        }
        if self.threads > 0 {
            out.extend_from_slice(format!(",threads={}", self.threads).as_bytes());
        }
        if !self.passthrough {
            out.extend_from_slice(b",passthrough=off");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<UnionOptions, String> {
        let mut o = UnionOptions {
            passthrough: true,
            ..Default::default()
        };
        o.parse(s.as_bytes())?;
        Ok(o)
    }

    #[test]
    fn overlay_style_options() {
        let o = parse("rw,lowerdir=/a:/b,upperdir=/u,workdir=/w,nodev,index=off,fsname=x").unwrap();
        assert_eq!(o.lowers, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(o.upper, Some(PathBuf::from("/u")));
        assert_eq!(o.work, Some(PathBuf::from("/w")));
        o.validate().unwrap();
    }

    #[test]
    fn escapes_round_trip() {
        let o = UnionOptions {
            lowers: vec![PathBuf::from("/l:1"), PathBuf::from("/l,2\\x")],
            upper: Some(PathBuf::from("/u,p")),
            work: Some(PathBuf::from("/w")),
            threads: 3,
            passthrough: false,
        };
        let s = o.to_option_string();
        let mut back = UnionOptions::default();
        back.parse(&s).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn bad_options_are_named() {
        assert!(
            parse("lowerdir=/a,frobnicate")
                .unwrap_err()
                .contains("frobnicate")
        );
        assert!(
            parse("lowerdir=/a,upperdir=/u")
                .unwrap()
                .validate()
                .unwrap_err()
                .contains("workdir")
        );
        assert!(
            parse("upperdir=/u,workdir=/w")
                .unwrap()
                .validate()
                .unwrap_err()
                .contains("lowerdir")
        );
        assert!(
            parse("lowerdir=/a,threads=x")
                .unwrap_err()
                .contains("threads")
        );
    }

    #[test]
    fn ro_makes_a_read_only_union() {
        let o = parse("lowerdir=/a,upperdir=/u,workdir=/w,ro").unwrap();
        assert_eq!((o.upper, o.work), (None, None));
    }
}

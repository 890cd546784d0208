//! How a name resolves through the layers, and what a merged directory lists, by the rules
//! of overlayfs: the topmost entry of a name wins; a whiteout hides the name in every layer
//! below; directories merge with the directories of the same path below them until an opaque
//! one, a whiteout or a non-directory stops it.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::layers::{Entry, Layers, Place, XattrTarget, is_aufs_name};
use crate::layer::{OPAQUE_MARKER, WHITEOUT_PREFIX};

/// A directory of the union, as resolution needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirView<'a> {
    pub path: &'a Path,
    /// Whether the directory exists in the upper layer.
    pub upper: bool,
    /// The lower layers merged into it, top first.
    pub lowers: &'a [u16],
}

/// A name that resolved to an entry.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub place: Place,
    pub stat: Stat,
    /// For a directory: the lower layers merged into it, top first.
    pub lowers: Vec<u16>,
}

impl Found {
    pub fn is_dir(&self) -> bool {
        is_dir(&self.stat)
    }

    pub fn view<'a>(&'a self, path: &'a Path) -> DirView<'a> {
        DirView {
            path,
            upper: self.place == Place::Upper,
            lowers: &self.lowers,
        }
    }
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub name: OsString,
    pub place: Place,
    pub stat: Stat,
}

pub(crate) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

impl Layers {
    /// What `name` in `dir` resolves to, or `None` when it does not exist in the union.
    pub fn lookup(&self, dir: &DirView<'_>, name: &OsStr) -> Result<Option<Found>, Errno> {
        let rel = dir.path.join(name);
        if dir.upper {
            let dfd = self.upper_dir(dir.path)?;
            match self.classify_upper(dfd.as_fd(), name)? {
                Entry::Whiteout => return Ok(None),
                Entry::Present(st) => {
                    let lowers = if is_dir(&st) && !self.upper_is_opaque(dfd.as_fd(), name) {
                        self.dir_lowers(dir.lowers, &rel)?
                    } else {
                        Vec::new()
                    };
                    return Ok(Some(Found {
                        place: Place::Upper,
                        stat: st,
                        lowers,
                    }));
                }
                Entry::Missing => {}
            }
        }
        for (k, &i) in dir.lowers.iter().enumerate() {
            let below = &dir.lowers[k + 1..];
            match self.classify_lower(i, &rel, !below.is_empty())? {
                Entry::Missing => continue,
                Entry::Whiteout => return Ok(None),
                Entry::Present(st) => return self.found_in_lower(i, below, &rel, st).map(Some),
            }
        }
        Ok(None)
    }

    /// An entry found in lower layer `i`, with `below` the layers under it.
    fn found_in_lower(&self, i: u16, below: &[u16], rel: &Path, st: Stat) -> Result<Found, Errno> {
        let mut lowers = Vec::new();
        if is_dir(&st) {
            lowers.push(i);
            if !below.is_empty() && !self.lower_is_opaque(i, rel) {
                lowers.extend(self.dir_lowers(below, rel)?);
            }
        }
        Ok(Found {
            place: Place::Lower(i),
            stat: st,
            lowers,
        })
    }

    /// The layers among `candidates` (top first) whose directory `rel` merges into one above.
    fn dir_lowers(&self, candidates: &[u16], rel: &Path) -> Result<Vec<u16>, Errno> {
        let mut out = Vec::new();
        for (k, &j) in candidates.iter().enumerate() {
            let more = k + 1 < candidates.len();
            match self.classify_lower(j, rel, more)? {
                Entry::Missing => continue,
                Entry::Whiteout => break,
                Entry::Present(st) if !is_dir(&st) => break,
                Entry::Present(_) => {
                    out.push(j);
                    if more && self.lower_is_opaque(j, rel) {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether a lower layer of `dir` shows `name` (removing the upper entry would uncover
    /// it, so a whiteout must take its place).
    pub fn lower_positive(&self, dir: &DirView<'_>, name: &OsStr) -> Result<bool, Errno> {
        let rel = dir.path.join(name);
        for (k, &i) in dir.lowers.iter().enumerate() {
            match self.classify_lower(i, &rel, k + 1 < dir.lowers.len())? {
                Entry::Missing => continue,
                Entry::Whiteout => return Ok(false),
                Entry::Present(_) => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Resolves a path from the root, whose merged lower layers are `root_lowers`.
    pub fn resolve_path(&self, rel: &Path, root_lowers: &[u16]) -> Result<Option<Found>, Errno> {
        let root_stat = self.stat_at(
            if self.upper.is_some() {
                Place::Upper
            } else {
                Place::Lower(root_lowers[0])
            },
            Path::new(""),
        )?;
        let mut cur = Found {
            place: if self.upper.is_some() {
                Place::Upper
            } else {
                Place::Lower(root_lowers[0])
            },
            stat: root_stat,
            lowers: root_lowers.to_vec(),
        };
        let mut path = std::path::PathBuf::new();
        for comp in rel.components() {
            if !cur.is_dir() {
                return Err(Errno::NOTDIR);
            }
            let name = comp.as_os_str();
            let next = match self.lookup(&cur.view(&path), name)? {
                Some(f) => f,
                None => return Ok(None),
            };
            path.push(name);
            cur = next;
        }
        Ok(Some(cur))
    }

    /// The merged listing of `dir` (without `.` and `..`).
    pub fn list(&self, dir: &DirView<'_>) -> Result<Vec<Listed>, Errno> {
        let mut seen: HashSet<OsString> = HashSet::new();
        let mut out = Vec::new();
        if dir.upper {
            let fd =
                self.upper_open(dir.path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
            for name in read_names(&fd)? {
                match self.classify_upper(fd.as_fd(), &name)? {
                    Entry::Missing => {}
                    Entry::Whiteout => {
                        seen.insert(name);
                    }
                    Entry::Present(stat) => {
                        seen.insert(name.clone());
                        out.push(Listed {
                            name,
                            place: Place::Upper,
                            stat,
                        });
                    }
                }
            }
        }
        for &i in dir.lowers {
            let fd = self.lower_open(i, dir.path, OFlags::RDONLY | OFlags::DIRECTORY)?;
            let mut hidden = Vec::new();
            for name in read_names(&fd)? {
                if is_aufs_name(&name) {
                    if name.as_bytes() != OPAQUE_MARKER.as_bytes() {
                        hidden.push(
                            OsStr::from_bytes(&name.as_bytes()[WHITEOUT_PREFIX.len()..]).to_owned(),
                        );
                    }
                    continue;
                }
                if seen.contains(&name) {
                    continue;
                }
                let stat =
                    match rustix::fs::statat(&fd, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => st,
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(e),
                    };
                let whiteout = FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice
                    && stat.st_rdev == 0
                    || (FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                        && stat.st_size == 0
                        && [
                            b"trusted.overlay.whiteout".as_slice(),
                            b"user.overlay.whiteout",
                        ]
                        .iter()
                        .any(|n| XattrTarget::At(fd.as_fd(), &name).size(n).is_ok()));
                seen.insert(name.clone());
                if !whiteout {
                    out.push(Listed {
                        name,
                        place: Place::Lower(i),
                        stat,
                    });
                }
            }
            seen.extend(hidden);
        }
        Ok(out)
    }

    /// Completes a listed entry into what a lookup of it gives (the merged lowers of a
    /// directory), so that `readdirplus` can hand it to the kernel as looked up.
    pub fn complete(&self, dir: &DirView<'_>, listed: &Listed) -> Result<Found, Errno> {
        let rel = dir.path.join(&listed.name);
        match listed.place {
            Place::Upper => {
                let lowers = if is_dir(&listed.stat) {
                    let dfd = self.upper_dir(dir.path)?;
                    if self.upper_is_opaque(dfd.as_fd(), &listed.name) {
                        Vec::new()
                    } else {
                        self.dir_lowers(dir.lowers, &rel)?
                    }
                } else {
                    Vec::new()
                };
                Ok(Found {
                    place: Place::Upper,
                    stat: listed.stat,
                    lowers,
                })
            }
            Place::Lower(i) => {
                let k = dir
                    .lowers
                    .iter()
                    .position(|&l| l == i)
                    .unwrap_or(dir.lowers.len());
                let below = dir.lowers.get(k + 1..).unwrap_or(&[]);
                self.found_in_lower(i, below, &rel, listed.stat)
            }
        }
    }
}

/// The names in an open directory, without `.` and `..`.
pub(crate) fn read_names(fd: &std::os::fd::OwnedFd) -> Result<Vec<OsString>, Errno> {
    let mut out = Vec::new();
    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
    let mut dir = rustix::fs::Dir::new(dup)?;
    while let Some(e) = dir.read() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(out)
}

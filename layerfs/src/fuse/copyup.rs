//! Copy-up: bringing a lower entry into the upper layer before it is changed.
//!
//! An entry is made under the work dir with its data (holes kept, `copy_file_range` so the
//! kernel copies or reflinks it), owner, mode, xattrs (overlayfs's own excepted) and times,
//! then renamed into place, so nobody ever sees half an entry. Its node keeps its inode number.
//!
//! A lower file with several links is copied up once and every other link to it that the
//! union shows is linked to the copy: hard links stay one inode. A directory is copied up
//! empty (its lower entries keep showing through); a whole tree is copied up when a lower
//! directory is renamed, so the upper dir stays plain overlay format with no redirects.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, SeekFrom, Stat, Timestamps};
use rustix::io::Errno;

use super::fs::UnionFs;
use super::inode::{Node, NodeState};
use super::layers::{Entry, Place, XattrTarget, split};
use super::resolve::{Found, is_dir, read_names};
use crate::layer::is_overlay_xattr;

/// Hard-linked files of one lower layer: inode → every path of it.
pub(crate) type AliasIndex = HashMap<u64, Vec<PathBuf>>;

/// `Timestamps` for the atime and mtime of `st`.
pub(crate) fn times_of(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn owner(st: &Stat) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )
}

/// Copies the data of `src` into `dst`, keeping holes.
fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64) -> Result<(), Errno> {
    let mut off = 0u64;
    while off < size {
        let (data, hole) = match rustix::fs::seek(src, SeekFrom::Data(off)) {
            Ok(d) => (d, rustix::fs::seek(src, SeekFrom::Hole(d))?.min(size)),
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) => (off, size),
            Err(e) => return Err(e),
        };
        copy_range(src, dst, data, hole - data)?;
        off = hole;
    }
    rustix::fs::ftruncate(dst, size)
}

fn copy_range(src: &OwnedFd, dst: &OwnedFd, mut at: u64, mut len: u64) -> Result<(), Errno> {
    while len > 0 {
        let (mut i, mut o) = (at, at);
        match rustix::fs::copy_file_range(
            src,
            Some(&mut i),
            dst,
            Some(&mut o),
            len.min(1 << 30) as usize,
        ) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                at += n as u64;
                len -= n as u64;
            }
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return copy_range_by_hand(src, dst, at, len);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_range_by_hand(
    src: &OwnedFd,
    dst: &OwnedFd,
    mut at: u64,
    mut len: u64,
) -> Result<(), Errno> {
    let mut buf = vec![0u8; 1 << 20];
    while len > 0 {
        let want = buf.len().min(len as usize);
        let n = rustix::io::pread(src, &mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += rustix::io::pwrite(dst, &buf[done..n], at + done as u64)?;
        }
        at += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Copies every xattr of `from` (overlayfs's own excepted) onto `to`.
pub(crate) fn copy_xattrs(from: XattrTarget<'_>, to: XattrTarget<'_>) -> Result<(), Errno> {
    let list = match from.all() {
        Ok(l) => l,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for (name, value) in list {
        if is_overlay_xattr(&name) {
            continue;
        }
        match to.set(&name, &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            // user.* xattrs cannot live on symlinks and devices; the kernel refuses them the same.
            Err(Errno::PERM | Errno::NOTSUP) if name.starts_with(b"user.") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl UnionFs {
    fn temp_name(&self) -> OsString {
        OsString::from(format!("#strata-{:x}", self.next_temp()))
    }

    /// Makes a copy of `rel` from lower layer `i` (whose stat is `st`) under the work dir and
    /// returns its temp name. Without `data`, a regular file is made empty (it is about to be
    /// truncated anyway).
    pub(super) fn make_copy(
        &self,
        i: u16,
        rel: &Path,
        st: &Stat,
        data: bool,
    ) -> Result<OsString, Errno> {
        let work = self.layers.work()?;
        let tmp = self.temp_name();
        let src_path = self.layers.lower_path(i, rel);
        let src_x = XattrTarget::Path(&src_path);
        let made = (|| -> Result<(), Errno> {
            let ft = FileType::from_raw_mode(st.st_mode);
            let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
            let (uid, gid) = owner(st);
            match ft {
                FileType::RegularFile | FileType::Directory => {
                    let fd = if ft == FileType::RegularFile {
                        let fd = rustix::fs::openat(
                            work,
                            &tmp,
                            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                            Mode::from_raw_mode(0o600),
                        )?;
                        if data && st.st_size > 0 {
                            let src = self.layers.lower_open(i, rel, OFlags::RDONLY)?;
                            copy_data(&src, &fd, st.st_size as u64)?;
                        }
                        fd
                    } else {
                        rustix::fs::mkdirat(work, &tmp, Mode::from_raw_mode(0o700))?;
                        rustix::fs::openat(
                            work,
                            &tmp,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                            Mode::empty(),
                        )?
                    };
                    rustix::fs::fchown(&fd, uid, gid)?;
                    rustix::fs::fchmod(&fd, mode)?;
                    copy_xattrs(src_x, XattrTarget::At(work, &tmp))?;
                    rustix::fs::futimens(&fd, &times_of(st))
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(&self.layers.lower(i).fd, rel, Vec::new())?;
                    rustix::fs::symlinkat(target.as_c_str(), work, &tmp)?;
                    rustix::fs::chownat(work, &tmp, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
                    copy_xattrs(src_x, XattrTarget::At(work, &tmp))?;
                    rustix::fs::utimensat(work, &tmp, &times_of(st), AtFlags::SYMLINK_NOFOLLOW)
                }
                _ => {
                    rustix::fs::mknodat(work, &tmp, ft, Mode::from_raw_mode(0o600), st.st_rdev)?;
                    rustix::fs::chownat(work, &tmp, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
                    rustix::fs::chmodat(work, &tmp, mode, AtFlags::empty())?;
                    copy_xattrs(src_x, XattrTarget::At(work, &tmp))?;
                    rustix::fs::utimensat(work, &tmp, &times_of(st), AtFlags::SYMLINK_NOFOLLOW)
                }
            }
        })();
        match made {
            Ok(()) => Ok(tmp),
            Err(e) => {
                self.remove_temp(&tmp);
                Err(e)
            }
        }
    }

    /// Removes a temp entry of the work dir (a file, an empty dir, or a dir's whole tree).
    pub(super) fn remove_temp(&self, tmp: &OsStr) {
        let Ok(work) = self.layers.work() else { return };
        if rustix::fs::unlinkat(work, tmp, AtFlags::empty()).is_err()
            && rustix::fs::unlinkat(work, tmp, AtFlags::REMOVEDIR) == Err(Errno::NOTEMPTY)
        {
            if let Ok(fd) = rustix::fs::openat(
                work,
                tmp,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                let _ = std::fs::remove_dir_all(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&fd)
                ));
            }
            let _ = rustix::fs::unlinkat(work, tmp, AtFlags::REMOVEDIR);
        }
    }

    /// Moves the temp entry `tmp` to `dest` in the upper layer, where nothing may be.
    /// `EEXIST` means another request put the entry there first; the temp is removed. The
    /// parent keeps its times, as a copy-up changes nothing a user made.
    pub(super) fn install(
        &self,
        tmp: &OsStr,
        dest: &Path,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let (parent, name) = split(dest);
        let res = self.layers.upper_dir(parent).and_then(|dir| {
            let before = rustix::fs::fstat(&dir)?;
            rustix::fs::renameat_with(self.layers.work()?, tmp, &dir, name, flags)?;
            rustix::fs::utimensat(&dir, ".", &times_of(&before), AtFlags::empty())
        });
        if res.is_err() {
            self.remove_temp(tmp);
        }
        res
    }

    // ------------------------------------------------------------ directories

    /// Makes sure the directory node `node` exists in the upper layer.
    pub(super) fn copy_up_dir(&self, node: &Arc<Node>) -> Result<(), Errno> {
        let Some((_guard, st)) = lock_for_copy_up(node) else {
            return Ok(());
        };
        let (parent, path, place) = (st.parent, st.path().clone(), st.place);
        match self.nodes.get(parent) {
            Some(p) if p.id != node.id => self.copy_up_dir(&p)?,
            _ => self.copy_up_dir_path(split(&path).0)?,
        }
        let Place::Lower(i) = place else {
            return Ok(());
        };
        let upper_ino = self.copy_dir_entry(i, &path)?;
        self.numbers.set_upper_origin(upper_ino, node.id);
        node.state_mut().place = Place::Upper;
        Ok(())
    }

    /// Copies the lower directory `rel` (topmost in layer `i`) up, without its entries;
    /// returns the upper inode.
    fn copy_dir_entry(&self, i: u16, rel: &Path) -> Result<u64, Errno> {
        let st = self.layers.stat_at(Place::Lower(i), rel)?;
        let tmp = self.make_copy(i, rel, &st, false)?;
        match self.install(&tmp, rel, RenameFlags::NOREPLACE) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        let up = self.layers.stat_at(Place::Upper, rel)?;
        if !is_dir(&up) {
            return Err(Errno::IO);
        }
        Ok(up.st_ino)
    }

    /// Makes sure every directory of `rel` exists in the upper layer, by path (for entries
    /// whose nodes the kernel may not hold, like other links of a file).
    pub(super) fn copy_up_dir_path(&self, rel: &Path) -> Result<(), Errno> {
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            prefix.push(comp);
            match self.layers.stat_at(Place::Upper, &prefix) {
                Ok(st) if is_dir(&st) => continue,
                Ok(_) => return Err(Errno::NOTDIR),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
            let found = self
                .layers
                .resolve_path(&prefix, &self.root_lowers)?
                .ok_or(Errno::NOENT)?;
            let Place::Lower(i) = found.place else {
                continue;
            };
            let id = self
                .numbers
                .id(self.layers.fs_of(found.place), found.stat.st_ino);
            let upper_ino = self.copy_dir_entry(i, &prefix)?;
            self.numbers.set_upper_origin(upper_ino, id);
            if let Some(n) = self.nodes.get(id) {
                n.state_mut().place = Place::Upper;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ files

    /// Copies the non-directory node `node` up (without its data when `data` is false).
    pub(super) fn copy_up(&self, node: &Arc<Node>, data: bool) -> Result<(), Errno> {
        if node.is_dir {
            return self.copy_up_dir(node);
        }
        let Some((_guard, st)) = lock_for_copy_up(node) else {
            return Ok(());
        };
        let (parent, paths, place) = (st.parent, st.paths, st.place);
        let Place::Lower(i) = place else {
            return Ok(());
        };
        match self.nodes.get(parent) {
            Some(p) => self.copy_up_dir(&p)?,
            None => self.copy_up_dir_path(split(&paths[0]).0)?,
        }
        let st = self.layers.stat_at(place, &paths[0])?;
        let (upper_ino, links) = self.copy_file_entry(i, &paths, &st, data)?;
        self.numbers.set_upper_origin(upper_ino, node.id);
        let mut s = node.state_mut();
        s.place = Place::Upper;
        for l in links {
            if !s.paths.contains(&l) {
                s.paths.push(l);
            }
        }
        Ok(())
    }

    /// Copies the lower file known by `paths` (the first is copied) up, with every other link
    /// to it the union shows; returns the upper inode and the paths now linked to it.
    fn copy_file_entry(
        &self,
        i: u16,
        paths: &[PathBuf],
        st: &Stat,
        data: bool,
    ) -> Result<(u64, Vec<PathBuf>), Errno> {
        let first = &paths[0];
        let tmp = self.make_copy(i, first, st, data)?;
        self.install(&tmp, first, RenameFlags::NOREPLACE)?;
        let upper = self.layers.stat_at(Place::Upper, first)?;
        let mut linked = vec![first.clone()];
        if st.st_nlink > 1 && FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            for other in self.visible_links(i, st, paths)? {
                if other == *first {
                    continue;
                }
                self.copy_up_dir_path(split(&other).0)?;
                let (fp, fname) = split(first);
                let (op, oname) = split(&other);
                let from = self.layers.upper_dir(fp)?;
                let to = self.layers.upper_dir(op)?;
                match rustix::fs::linkat(&from, fname, &to, oname, AtFlags::empty()) {
                    Ok(()) | Err(Errno::EXIST) => linked.push(other),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((upper.st_ino, linked))
    }

    /// The paths of lower file `st` (of layer `i`) that the union shows: the known `paths`
    /// and every other link in the layer that no upper entry, whiteout or opaque dir hides.
    fn visible_links(&self, i: u16, st: &Stat, paths: &[PathBuf]) -> Result<Vec<PathBuf>, Errno> {
        let index = self.alias_index(i)?;
        let mut out: Vec<PathBuf> = paths.to_vec();
        for p in index.get(&st.st_ino).into_iter().flatten() {
            if out.contains(p) {
                continue;
            }
            let found = self.layers.resolve_path(p, &self.root_lowers)?;
            if found.is_some_and(|f| f.place == Place::Lower(i) && f.stat.st_ino == st.st_ino) {
                out.push(p.clone());
            }
        }
        Ok(out)
    }

    /// The hard-link index of lower layer `i`, built on first use (layers never change).
    fn alias_index(&self, i: u16) -> Result<Arc<AliasIndex>, Errno> {
        let mut cache = self
            .aliases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(idx) = cache.get(&i) {
            return Ok(idx.clone());
        }
        let root = &self.layers.lower(i).path;
        let mut index = AliasIndex::new();
        for e in walkdir::WalkDir::new(root).follow_links(false) {
            let e = e.map_err(|e| {
                e.io_error()
                    .and_then(Errno::from_io_error)
                    .unwrap_or(Errno::IO)
            })?;
            if e.file_type().is_dir() {
                continue;
            }
            let md = e.metadata().map_err(|_| Errno::IO)?;
            if std::os::unix::fs::MetadataExt::nlink(&md) > 1 {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .map_err(|_| Errno::IO)?
                    .to_owned();
                index
                    .entry(std::os::unix::fs::MetadataExt::ino(&md))
                    .or_default()
                    .push(rel);
            }
        }
        let index = Arc::new(index);
        cache.insert(i, index.clone());
        Ok(index)
    }

    // ------------------------------------------------------------ whole trees

    /// Copies the directory `rel` (resolved as `found`) and everything the union shows below
    /// it into the upper layer, then makes the upper dir stand alone: opaque, without
    /// whiteouts or opaque markers below it. Nodes below it are updated to match.
    pub(super) fn copy_up_tree(&self, rel: &Path, dir_node: &Arc<Node>) -> Result<(), Errno> {
        self.copy_up_dir(dir_node)?;
        let mut ids = vec![dir_node.id];
        let found = {
            let s = dir_node.state();
            Found {
                place: s.place,
                stat: self.layers.stat_at(Place::Upper, rel)?,
                lowers: s.lowers.clone(),
            }
        };
        self.copy_tree_entries(rel, &found, &mut ids)?;
        // Everything shows from the upper layer now: hide the lower dirs, then drop the
        // whiteouts and markers that hid parts of them.
        let (parent, name) = split(rel);
        let pdir = self.layers.upper_dir(parent)?;
        XattrTarget::At(pdir.as_fd(), name).set(
            self.layers.xattrs.opaque().as_bytes(),
            b"y",
            rustix::fs::XattrFlags::empty(),
        )?;
        for id in ids {
            if let Some(n) = self.nodes.get(id) {
                let mut s = n.state_mut();
                s.place = Place::Upper;
                s.lowers.clear();
            }
        }
        self.strip_tree(rel, true)
    }

    fn copy_tree_entries(&self, rel: &Path, dir: &Found, ids: &mut Vec<u64>) -> Result<(), Errno> {
        for entry in self.layers.list(&dir.view(rel))? {
            let child = rel.join(&entry.name);
            let id = match entry.place {
                Place::Upper => self
                    .numbers
                    .id_of_upper(self.layers.fs_of(Place::Upper), entry.stat.st_ino),
                Place::Lower(_) => self
                    .numbers
                    .id(self.layers.fs_of(entry.place), entry.stat.st_ino),
            };
            ids.push(id);
            let found = self.layers.complete(&dir.view(rel), &entry)?;
            match entry.place {
                Place::Upper if found.is_dir() => self.copy_tree_entries(&child, &found, ids)?,
                Place::Upper => {}
                Place::Lower(i) if found.is_dir() => {
                    let ino = self.copy_dir_entry(i, &child)?;
                    self.numbers.set_upper_origin(ino, id);
                    let up = Found {
                        place: Place::Upper,
                        stat: self.layers.stat_at(Place::Upper, &child)?,
                        lowers: found.lowers.clone(),
                    };
                    self.copy_tree_entries(&child, &up, ids)?;
                }
                Place::Lower(i) => {
                    // Another link of a file already brought it up.
                    if self.layers.stat_at(Place::Upper, &child).is_ok() {
                        continue;
                    }
                    match self.nodes.get(id) {
                        // The kernel holds it: copy it up as the node it is.
                        Some(n) => self.copy_up(&n, true)?,
                        None => {
                            let (ino, _) = self.copy_file_entry(
                                i,
                                std::slice::from_ref(&child),
                                &entry.stat,
                                true,
                            )?;
                            self.numbers.set_upper_origin(ino, id);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes whiteouts and opaque markers below the upper dir `rel` (and `rel`'s own opaque
    /// marker unless `keep_top`), which stand alone once its tree is fully copied up.
    pub(super) fn strip_tree(&self, rel: &Path, keep_top: bool) -> Result<(), Errno> {
        if !keep_top {
            let (parent, name) = split(rel);
            let pdir = self.layers.upper_dir(parent)?;
            remove_opaque(XattrTarget::At(pdir.as_fd(), name))?;
        }
        let dir = self
            .layers
            .upper_open(rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        for name in read_names(&dir)? {
            match self.layers.classify_upper(dir.as_fd(), &name)? {
                Entry::Whiteout => rustix::fs::unlinkat(&dir, &name, AtFlags::empty())?,
                Entry::Present(st) if is_dir(&st) => self.strip_tree(&rel.join(&name), false)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Takes `node`'s copy-up lock and returns what the node is, or `None` when it is in the upper
/// layer already (checked before and after waiting for the lock).
fn lock_for_copy_up(node: &Node) -> Option<(std::sync::MutexGuard<'_, ()>, NodeState)> {
    if node.state().in_upper() {
        return None;
    }
    let guard = node
        .copy_up
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let st = node.state().clone();
    (!st.in_upper()).then_some((guard, st))
}

/// Removes the opaque markers (both namespaces) of a directory.
pub(crate) fn remove_opaque(target: XattrTarget<'_>) -> Result<(), Errno> {
    for name in [b"trusted.overlay.opaque".as_slice(), b"user.overlay.opaque"] {
        match target.remove(name) {
            Ok(()) | Err(Errno::NODATA | Errno::NOTSUP | Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

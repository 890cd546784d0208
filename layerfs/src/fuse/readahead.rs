//! Read-ahead for the two ways builds read a union: walking a tree, and reading the files
//! of a directory one after the other (a program loading its modules, `cat *`, a `COPY` of
//! a directory out of it). Each runs on a background thread of its own and asks the layers'
//! filesystem to read what the reader is about to ask for, so that on a cold cache the disk's
//! reads overlap the reader's round trips to the daemon instead of adding to them, and the
//! disk gets several reads at once instead of one at a time.
//!
//! - [`DirReadahead`]: when the union lists a directory afresh, its subdirectories, and theirs
//!   one level further down, are read in the layers they come from: listed, and each entry
//!   stat'ed. That brings the directory blocks and inodes into the kernel's caches, so a walk
//!   that descends next (`find`, `du`, a build's `COPY` or `chown -R`) finds them there. The
//!   newest directories are read first, since a walk descends into what it listed last.
//! - [`FileReadahead`]: when a second lower file of a directory is opened while its data is
//!   not cached, right after the first in the directory's listing, the files after it are
//!   read ahead (the first 8 MiB of each); as the reader goes on through the listing, the
//!   window moves with it and grows. A reader that opens one file of a directory, or goes
//!   through it another way (sorted, say), has nothing read ahead, and a file opened while its
//!   data is cached costs a lookup. The union's directories are remembered in the order they
//!   were listed, which is the order a walk (`find`, `cp -r`, `tar`) goes through them: a
//!   reader following a listing in one of them has the first files of the next ones read
//!   ahead too, before it gets there.
//!
//! Nothing here changes anything: what is read is dropped and errors are ignored (the reader
//! itself reads again and reports them). Queues and memories are bounded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};

use rustix::fs::{AtFlags, FileType, OFlags};
use rustix::io::ReadWriteFlags;

use super::layers::{Layers, Place, open_lower_file};
use super::resolve::{is_dir, read_names};

/// Jobs waiting for each read-ahead thread, at most; the oldest are dropped beyond it.
const MAX_QUEUED: usize = 4096;
/// How many directories are remembered as queued before the memory is cleared (a few MB
/// of paths at most: the daemon stays small on trees of any size).
const MAX_REMEMBERED: usize = 1 << 14;
/// How many levels below a listed directory are read ahead.
const DEPTH: u8 = 2;
/// How much of a file's head is read ahead: the kernel's default read-ahead window, which the
/// reader's first `read` fetches anyway.
const HEAD: u64 = 128 << 10;
/// How much of each file is read ahead of a reader that follows a listing. Such readers
/// (`cat`, `tar`, `cp -r`, a checksum, a `COPY`) read whole files: this covers whole
/// programs and libraries, and bounds what a window of files asks of the disk.
const FOLLOWED_HEAD: u64 = 8 << 20;
/// How many files are read ahead when a reader is first seen opening a directory's files in
/// the order of its listing.
const FILES_FIRST: usize = 16;
/// How many files ahead of such a reader are read at most (the window doubles up to it).
const FILES_FOLLOWING: usize = 64;
/// How many directories and names file read-ahead remembers (a directory counts one, and
/// each name of a listing it keeps one more) before it forgets them all: a few MB at most.
const MAX_REMEMBERED_NAMES: usize = 1 << 16;
/// How many listed directories the walk remembers, the oldest forgotten first.
const MAX_WALKED: usize = 1 << 14;
/// How many of the walk's next directories are looked at for files to read ahead of a reader
/// following it, at most.
const WALK_LOOKAHEAD: usize = 64;

/// A read-ahead's state behind a lock, and the background thread that works through its
/// queue, started at the first job by a session thread (whose blocked signals it inherits).
/// No thread, no read-ahead: the readers read for themselves.
#[derive(Debug)]
struct Background<S> {
    shared: Arc<Shared<S>>,
    started: Once,
}

#[derive(Debug)]
struct Shared<S> {
    layers: Arc<Layers>,
    state: Mutex<S>,
    wake: Condvar,
    /// Set when the read-ahead is dropped: the thread then ends.
    closed: AtomicBool,
}

/// A read-ahead's state: its queue of jobs and what it remembers.
trait Queue: Default + Send + 'static {
    type Job;
    /// Takes the job to do next.
    fn take(&mut self) -> Option<Self::Job>;
}

impl<S: Queue> Background<S> {
    fn new(layers: Arc<Layers>) -> Self {
        Background {
            shared: Arc::new(Shared {
                layers,
                state: Mutex::default(),
                wake: Condvar::new(),
                closed: AtomicBool::new(false),
            }),
            started: Once::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, S> {
        self.shared.lock()
    }

    /// Wakes the thread for jobs just queued, first starting it, named `name`, to do each job
    /// with `work`.
    fn wake(&self, name: &str, work: fn(&Shared<S>, S::Job)) {
        self.shared.wake.notify_one();
        self.started.call_once(|| {
            let shared = self.shared.clone();
            let _ = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || shared.run(work));
        });
    }
}

impl<S> Drop for Background<S> {
    fn drop(&mut self) {
        // Under the lock, so that the thread cannot miss it between its check and its wait.
        let state = self.shared.lock();
        self.shared.closed.store(true, Ordering::Relaxed);
        drop(state);
        self.shared.wake.notify_all();
    }
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, S> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: Queue> Shared<S> {
    fn run(&self, work: fn(&Self, S::Job)) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if self.closed.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(job) = state.take() {
                        break job;
                    }
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            work(self, job);
        }
    }
}

/// Reads directories ahead of a walk.
#[derive(Debug)]
pub(crate) struct DirReadahead {
    background: Background<DirQueue>,
}

#[derive(Debug, Default)]
struct DirQueue {
    /// Newest last, and taken from the back.
    queue: VecDeque<DirJob>,
    /// Directories queued so far, so that each is read ahead once.
    queued: HashSet<(Place, PathBuf)>,
}

#[derive(Debug)]
struct DirJob {
    place: Place,
    path: PathBuf,
    /// How many more levels below this one to read ahead.
    depth: u8,
}

impl Queue for DirQueue {
    type Job = DirJob;

    fn take(&mut self) -> Option<DirJob> {
        self.queue.pop_back()
    }
}

impl DirQueue {
    /// Queues `jobs` (the one to read first last), skipping directories queued before.
    /// Returns whether any was queued.
    fn push(&mut self, jobs: impl Iterator<Item = DirJob>) -> bool {
        let mut pushed = false;
        for job in jobs {
            if self.queued.len() >= MAX_REMEMBERED {
                self.queued.clear();
            }
            if !self.queued.insert((job.place, job.path.clone())) {
                continue;
            }
            if self.queue.len() == MAX_QUEUED {
                self.queue.pop_front();
            }
            self.queue.push_back(job);
            pushed = true;
        }
        pushed
    }
}

impl DirReadahead {
    pub fn new(layers: Arc<Layers>) -> Self {
        DirReadahead {
            background: Background::new(layers),
        }
    }

    /// Queues the subdirectories `names` of the union directory `dir`, each to be read in
    /// the layers of `places` (top first) from the one it was listed in down.
    pub fn subdirs<'a>(
        &self,
        dir: &Path,
        places: &[Place],
        names: impl DoubleEndedIterator<Item = (Place, &'a OsStr)>,
    ) {
        let jobs = names.rev().flat_map(|(top, name)| {
            let from = places.iter().position(|p| *p == top).unwrap_or(0);
            places[from..].iter().rev().map(move |&place| DirJob {
                place,
                path: dir.join(name),
                depth: DEPTH - 1,
            })
        });
        if self.background.lock().push(jobs) {
            self.background.wake("dir-readahead", read_dir_ahead);
        }
    }
}

/// Lists `job`'s directory and stats every entry in it, then queues its subdirectories if it
/// is not the deepest level.
fn read_dir_ahead(shared: &Shared<DirQueue>, job: DirJob) {
    let DirJob { place, path, depth } = job;
    let dir = shared
        .layers
        .open_at(place, &path, OFlags::RDONLY | OFlags::DIRECTORY);
    let Ok(fd) = dir else { return };
    let Ok(names) = read_names(&fd) else { return };
    let subdirs: Vec<PathBuf> = names
        .into_iter()
        .filter(|name| {
            rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| is_dir(&st))
        })
        .map(|name| path.join(name))
        .collect();
    if let Some(depth) = depth.checked_sub(1) {
        let jobs = subdirs
            .into_iter()
            .rev()
            .map(|path| DirJob { place, path, depth });
        shared.lock().push(jobs);
    }
}

/// Asks the filesystem to start reading the head of `fd` (`size` bytes long) into its cache.
/// Only advice: a filesystem that ignores it is read when the reader reads.
pub(crate) fn read_head(fd: &OwnedFd, size: u64) {
    read_start(fd, size, HEAD);
}

/// Asks the filesystem to start reading the first `len` bytes of `fd` (`size` bytes long).
fn read_start(fd: &OwnedFd, size: u64, len: u64) {
    if let Some(len) = NonZeroU64::new(size.min(len)) {
        let _ = rustix::fs::fadvise(fd, 0, Some(len), rustix::fs::Advice::WillNeed);
    }
}

/// Whether the first byte of `fd` is in the page cache: a read that must not wait for the disk
/// (`RWF_NOWAIT`; where it is not cached, the kernel starts reading it, as for any reader). A
/// filesystem that cannot tell says no.
pub(crate) fn head_cached(fd: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    rustix::io::preadv2(
        fd,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        0,
        ReadWriteFlags::NOWAIT,
    )
    .is_ok()
}

/// Reads ahead the files that follow an opened lower file in its directory.
#[derive(Debug)]
pub(crate) struct FileReadahead {
    background: Background<FileQueue>,
}

#[derive(Debug, Default)]
struct FileQueue {
    /// Jobs in the order they came (taken from the front).
    queue: VecDeque<FileJob>,
    /// Per layer, the directories in which files were opened cold, by path.
    dirs: HashMap<Place, HashMap<PathBuf, DirReading>>,
    /// How many directories and listed names `dirs` holds.
    remembered: usize,
    walk: Walk,
}

/// Work for the background thread, in the directory `dir` of layer `place`.
#[derive(Debug)]
struct FileJob {
    place: Place,
    dir: PathBuf,
    what: FileWork,
}

#[derive(Debug)]
enum FileWork {
    /// Read these files ahead.
    Files(Vec<OsString>),
    /// A second file, `second`, was opened cold after `first`: list the directory, start
    /// following the reader there, and read ahead what that gives.
    List { first: OsString, second: OsString },
    /// A reader following the walk is expected here next: list the directory and read its
    /// first files ahead.
    Expect,
}

/// What is known of a directory in which files were opened cold.
#[derive(Debug)]
enum DirReading {
    /// One file so far, by name: nothing is read ahead, since a program that opens one file
    /// of a directory (a package's only document, a library) may open no other.
    Once(OsString),
    /// The background thread is listing it.
    Listing,
    /// Its files are being read ahead.
    Ahead(Stream),
}

impl DirReading {
    /// What it counts against `MAX_REMEMBERED_NAMES`: one, and one per name of a listing.
    fn weight(&self) -> usize {
        match self {
            DirReading::Ahead(stream) => 1 + stream.names.len(),
            DirReading::Once(_) | DirReading::Listing => 1,
        }
    }
}

/// The files of one directory in one layer, as far as they were read ahead.
#[derive(Debug)]
struct Stream {
    /// The directory's entries in the order the layer lists them, which is the order the
    /// union lists that layer's entries in.
    names: Vec<OsString>,
    /// Where each name is in `names`.
    index: HashMap<OsString, usize>,
    /// The entry opened last, if known; none yet where the reader is expected.
    last: Option<usize>,
    /// Entries before this one were read ahead.
    ahead: usize,
    /// How many entries ahead of the reader the next top-up reads.
    window: usize,
}

impl Stream {
    /// The listing `names` of a directory in which `first` was opened (if any yet).
    fn new(names: Vec<OsString>, first: Option<&OsStr>) -> Self {
        let index: HashMap<OsString, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Stream {
            last: first.and_then(|first| index.get(first)).copied(),
            names,
            index,
            ahead: 0,
            window: FILES_FIRST,
        }
    }

    /// The listing `names` of a directory a reader is expected in next, and the names to read
    /// ahead of it there: the first ones.
    fn expecting(names: Vec<OsString>) -> (Self, Vec<OsString>) {
        let mut stream = Stream::new(names, None);
        stream.ahead = stream.names.len().min(FILES_FIRST);
        let first = stream.names[..stream.ahead].to_vec();
        (stream, first)
    }

    /// The entries to read ahead now that `name` is opened. A reader that opens the entry
    /// after the one it opened last, or one read ahead after it, follows the listing: it is
    /// then kept a window ahead, topped up when half of that is left, the window doubling up
    /// to `FILES_FOLLOWING`. A reader that goes another way (in sorted order, say) has
    /// nothing read ahead, so as not to make the disk wait on files it may never open. Where
    /// the reader was expected, opening any of the files read ahead for it follows.
    fn advance(&mut self, name: &OsStr) -> Step {
        let next = self.last.map_or(0, |last| last + 1);
        let at = match self.names.get(next) {
            Some(n) if n == name => next,
            _ => match self.index.get(name) {
                Some(&at) => at,
                None => return Step::default(),
            },
        };
        let follows = match self.last {
            Some(last) => at == last + 1 || (last < at && at < self.ahead),
            None => at < self.ahead,
        };
        self.last = Some(at);
        if !follows || self.ahead > at + self.window / 2 {
            return Step {
                follows,
                ahead: Vec::new(),
            };
        }
        let start = self.ahead.max(at + 1);
        let end = (at + 1 + self.window).min(self.names.len());
        self.ahead = self.ahead.max(end);
        self.window = (self.window * 2).min(FILES_FOLLOWING);
        Step {
            follows,
            ahead: self.names.get(start..end).unwrap_or_default().to_vec(),
        }
    }
}

/// Where an open leaves a reader in a [`Stream`].
#[derive(Debug, Default)]
struct Step {
    /// Whether the reader follows the listing.
    follows: bool,
    /// The names to read ahead of it now.
    ahead: Vec<OsString>,
}

/// The union's directories that hold lower files, in the order they were listed: the order
/// of a walk, which a reader of its files goes through them in too.
#[derive(Debug, Default)]
struct Walk {
    /// Oldest first; the first has number `first`.
    dirs: VecDeque<Walked>,
    first: u64,
    /// Each directory's number, from the last time it was listed.
    number: HashMap<PathBuf, u64>,
}

#[derive(Debug)]
struct Walked {
    path: PathBuf,
    /// The lower layers that hold its files, each with how many.
    files: Vec<(Place, usize)>,
}

impl Walk {
    fn push(&mut self, walked: Walked) {
        if self.dirs.len() == MAX_WALKED
            && let Some(old) = self.dirs.pop_front()
        {
            if self.number.get(&old.path) == Some(&self.first) {
                self.number.remove(&old.path);
            }
            self.first += 1;
        }
        let number = self.first + self.dirs.len() as u64;
        self.number.insert(walked.path.clone(), number);
        self.dirs.push_back(walked);
    }

    /// The directories listed after `dir`, in order.
    fn after(&self, dir: &Path) -> impl Iterator<Item = &Walked> {
        let skip = self
            .number
            .get(dir)
            .map_or(self.dirs.len(), |&n| (n - self.first) as usize + 1);
        self.dirs.iter().skip(skip)
    }
}

impl FileReadahead {
    pub fn new(layers: Arc<Layers>) -> Self {
        FileReadahead {
            background: Background::new(layers),
        }
    }

    /// Tells that the union listed the directory `dir` afresh, with regular files in the
    /// lower layers `files` (one item per file).
    pub fn listed(&self, dir: &Path, files: impl Iterator<Item = Place>) {
        let mut counted: Vec<(Place, usize)> = Vec::new();
        for place in files {
            match counted.iter_mut().find(|(p, _)| *p == place) {
                Some((_, n)) => *n += 1,
                None => counted.push((place, 1)),
            }
        }
        if !counted.is_empty() {
            self.background.lock().walk.push(Walked {
                path: dir.to_owned(),
                files: counted,
            });
        }
    }

    /// Tells that the lower file `path` of layer `place` is opened for the first time, and
    /// whether its data was cached (`cold`: it was not). The second file opened cold in a
    /// directory has it listed; after that, a reader that follows the listing has files read
    /// ahead of it. Anything else costs a lookup.
    pub fn opened(&self, place: Place, path: &Path, cold: bool) {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        let mut state = self.background.lock();
        let known = state
            .dirs
            .get_mut(&place)
            .and_then(|dirs| dirs.get_mut(dir));
        let jobs: Vec<FileJob> = match known {
            Some(DirReading::Ahead(stream)) => {
                let Step { follows, ahead } = stream.advance(name);
                let files = (!ahead.is_empty()).then(|| FileJob {
                    place,
                    dir: dir.to_owned(),
                    what: FileWork::Files(ahead),
                });
                let expected = if follows {
                    state.expect_after(dir)
                } else {
                    Vec::new()
                };
                files.into_iter().chain(expected).collect()
            }
            Some(reading @ DirReading::Once(_)) if cold => {
                match std::mem::replace(reading, DirReading::Listing) {
                    DirReading::Once(first) => vec![FileJob {
                        place,
                        dir: dir.to_owned(),
                        what: FileWork::List {
                            first,
                            second: name.to_owned(),
                        },
                    }],
                    _ => return,
                }
            }
            None if cold => {
                state.remember(place, dir.to_owned(), DirReading::Once(name.to_owned()));
                return;
            }
            _ => return,
        };
        if jobs.is_empty() {
            return;
        }
        state.queue_all(jobs);
        drop(state);
        self.background.wake("file-readahead", read_files_ahead);
    }
}

impl Queue for FileQueue {
    type Job = FileJob;

    fn take(&mut self) -> Option<FileJob> {
        self.queue.pop_front()
    }
}

impl FileQueue {
    /// Queues `jobs`, dropping the oldest beyond `MAX_QUEUED`.
    fn queue_all(&mut self, jobs: impl IntoIterator<Item = FileJob>) {
        for job in jobs {
            if self.queue.len() == MAX_QUEUED
                && let Some(dropped) = self.queue.pop_front()
            {
                self.forget_listing(&dropped);
            }
            self.queue.push_back(job);
        }
    }

    /// The directory a dropped job was to list is no longer being listed: forgotten, so that
    /// the next files opened there or the walk's next expectation start over.
    fn forget_listing(&mut self, dropped: &FileJob) {
        if matches!(dropped.what, FileWork::Files(_)) {
            return;
        }
        let dirs = self.dirs.get_mut(&dropped.place);
        if let Some(dirs) = dirs
            && matches!(dirs.get(&dropped.dir), Some(DirReading::Listing))
            && let Some(listing) = dirs.remove(&dropped.dir)
        {
            self.remembered -= listing.weight();
        }
    }

    /// The jobs that read ahead the first files of the directories the walk listed after
    /// `dir`, for a reader following it there: enough that `FILES_FIRST` files of the
    /// directories it has yet to enter are read ahead or on their way. Directories it went
    /// through already (it or another reader) are passed over.
    fn expect_after(&mut self, dir: &Path) -> Vec<FileJob> {
        let mut expected: Vec<(Place, PathBuf)> = Vec::new();
        let mut files = 0;
        for walked in self.walk.after(dir).take(WALK_LOOKAHEAD) {
            for &(place, count) in &walked.files {
                let known = self.dirs.get(&place).and_then(|d| d.get(&walked.path));
                match known {
                    None => expected.push((place, walked.path.clone())),
                    Some(DirReading::Listing) => {}
                    Some(DirReading::Ahead(stream)) if stream.last.is_none() => {}
                    Some(_) => continue,
                }
                files += count;
            }
            if files >= FILES_FIRST {
                break;
            }
        }
        expected
            .into_iter()
            .map(|(place, dir)| {
                self.remember(place, dir.clone(), DirReading::Listing);
                FileJob {
                    place,
                    dir,
                    what: FileWork::Expect,
                }
            })
            .collect()
    }

    /// Sets what is known of `dir`, forgetting every directory first if that is too much.
    fn remember(&mut self, place: Place, dir: PathBuf, reading: DirReading) {
        if self.remembered + reading.weight() > MAX_REMEMBERED_NAMES {
            self.dirs.clear();
            self.remembered = 0;
        }
        self.remembered += reading.weight();
        if let Some(old) = self.dirs.entry(place).or_default().insert(dir, reading) {
            self.remembered -= old.weight();
        }
    }
}

/// Reads the files `job` names (up to `FOLLOWED_HEAD` of each), listing the directory first
/// where the reader is to be followed there from now on.
fn read_files_ahead(shared: &Shared<FileQueue>, job: FileJob) {
    let dir = shared
        .layers
        .open_at(job.place, &job.dir, OFlags::RDONLY | OFlags::DIRECTORY);
    let Ok(dir) = dir else { return };
    let names = match job.what {
        FileWork::Files(names) => names,
        // Unlisted, the directory stays `Listing`: nothing more is tried in it.
        FileWork::List { first, second } => {
            let Ok(listing) = read_names(&dir) else {
                return;
            };
            let mut stream = Stream::new(listing, Some(&first));
            let Step { follows, ahead } = stream.advance(&second);
            let mut state = shared.lock();
            state.remember(job.place, job.dir.clone(), DirReading::Ahead(stream));
            // The walk's next directories now, not at the reader's next open here: a reader
            // of a small directory may be through it before it is listed.
            if follows {
                let expected = state.expect_after(&job.dir);
                state.queue_all(expected);
            }
            ahead
        }
        FileWork::Expect => {
            let Ok(listing) = read_names(&dir) else {
                return;
            };
            let (stream, names) = Stream::expecting(listing);
            shared
                .lock()
                .remember(job.place, job.dir, DirReading::Ahead(stream));
            names
        }
    };
    for name in names {
        let Ok(st) = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            continue;
        }
        // Nonblocking and no controlling terminal: a lower layer does not change under a
        // mount, but opening is never to have an effect.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        if let Ok(file) = open_lower_file(dir.as_fd(), Path::new(&name), flags) {
            read_start(&file, st.st_size as u64, FOLLOWED_HEAD);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::ffi::{OsStr, OsString};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{
        DirReadahead, DirReading, FILES_FIRST, FILES_FOLLOWING, FileQueue, MAX_REMEMBERED_NAMES,
        Place, Stream, Walked,
    };
    use crate::fuse::layers::Layers;

    #[test]
    fn reads_two_levels_below_a_listing_in_every_layer_it_merges_and_each_dir_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (l0, l1) = (tmp.path().join("l0"), tmp.path().join("l1"));
        for d in ["a/b/c/d", "a/e", "f"] {
            std::fs::create_dir_all(l0.join(d)).unwrap();
        }
        std::fs::create_dir_all(l1.join("a/g")).unwrap();
        let readahead = DirReadahead::new(Arc::new(Layers::open(&[l0, l1], None).unwrap()));
        let places = [Place::Lower(0), Place::Lower(1)];
        let root_subdirs = || [OsStr::new("a"), OsStr::new("f")].map(|n| (Place::Lower(0), n));
        readahead.subdirs(Path::new(""), &places, root_subdirs().into_iter());
        let expected: HashSet<(Place, PathBuf)> = [
            (0, "a"),
            (0, "f"),
            (0, "a/b"),
            (0, "a/e"),
            (1, "a"),
            (1, "f"),
            (1, "a/g"),
        ]
        .into_iter()
        .map(|(i, p)| (Place::Lower(i), PathBuf::from(p)))
        .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = {
                let state = readahead.background.lock();
                state.queued == expected && state.queue.is_empty()
            };
            if done {
                break;
            }
            assert!(Instant::now() < deadline, "the read-ahead never got there");
            std::thread::sleep(Duration::from_millis(5));
        }
        // a/b/c is three levels down: it is left to the walk.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(readahead.background.lock().queued, expected);
        // Listed again (a rewind), nothing is queued twice.
        readahead.subdirs(Path::new(""), &places, root_subdirs().into_iter());
        assert!(readahead.background.lock().queue.is_empty());
    }

    fn names(n: usize) -> Vec<OsString> {
        (0..n).map(|i| OsString::from(format!("f{i:03}"))).collect()
    }

    #[test]
    fn a_reader_following_the_listing_is_kept_a_window_ahead_and_each_file_is_read_once() {
        let listing = names(300);
        let mut stream = Stream::new(listing.clone(), Some(&listing[0]));
        let mut read: Vec<OsString> = Vec::new();
        for (at, name) in listing.iter().enumerate().skip(1) {
            let batch = stream.advance(name).ahead;
            assert!(
                batch.iter().all(|n| *n > *name),
                "read ahead at {name:?}: {batch:?} is not after it"
            );
            read.extend(batch);
            let ahead = read.len() + 1; // f000 and f001 were opened, not read ahead
            assert!(
                ahead >= (at + FILES_FIRST).min(listing.len() - 1),
                "at {name:?} only {ahead} files are read ahead or opened"
            );
            assert!(
                ahead <= at + 1 + FILES_FOLLOWING,
                "at {name:?}, {ahead} is too far"
            );
        }
        assert_eq!(
            read,
            listing[2..],
            "every file after the second read ahead, once each"
        );
    }

    #[test]
    fn a_reader_going_another_way_than_the_listing_has_nothing_read_ahead() {
        let listing = names(100);
        let mut stream = Stream::new(listing.clone(), Some(&listing[99]));
        for name in listing.iter().rev().skip(1) {
            assert_eq!(
                stream.advance(name).ahead,
                Vec::<OsString>::new(),
                "at {name:?}"
            );
        }
        // Every other file, also not the listing's order.
        let mut stream = Stream::new(listing.clone(), Some(&listing[0]));
        for name in listing.iter().step_by(2).skip(1) {
            assert_eq!(
                stream.advance(name).ahead,
                Vec::<OsString>::new(),
                "at {name:?}"
            );
        }
        // A name the listing lacks (created since) reads nothing and keeps the place.
        let mut stream = Stream::new(listing.clone(), Some(&listing[0]));
        assert!(stream.advance(OsStr::new("new")).ahead.is_empty());
        assert_eq!(stream.advance(&listing[1]).ahead.len(), FILES_FIRST);
    }

    #[test]
    fn a_reader_expected_in_a_directory_follows_from_any_of_the_files_read_ahead_for_it() {
        let listing = names(100);
        let (mut stream, first) = Stream::expecting(listing.clone());
        assert_eq!(first, listing[..FILES_FIRST]);
        // The first entries may be directories or links that a reader of files passes over.
        let step = stream.advance(&listing[3]);
        assert!(step.follows);
        assert!(step.ahead.is_empty(), "still well ahead: {:?}", step.ahead);
        let step = stream.advance(&listing[10]);
        assert!(step.follows);
        assert_eq!(step.ahead.first(), Some(&listing[FILES_FIRST]));
        // Far past what was read ahead, without an expectation: another way through.
        let (mut stream, _) = Stream::expecting(listing.clone());
        let step = stream.advance(&listing[50]);
        assert!(!step.follows && step.ahead.is_empty());
    }

    /// A walk of directories `d00`, `d01`, … with `files` lower files each.
    fn walked(queue: &mut FileQueue, files: &[usize]) {
        for (i, &count) in files.iter().enumerate() {
            queue.walk.push(Walked {
                path: format!("d{i:02}").into(),
                files: vec![(Place::Lower(0), count)],
            });
        }
    }

    /// A reader opened the first two files of `dir` (five files in layer 0), in order.
    fn entered(queue: &mut FileQueue, dir: &str) {
        let mut stream = Stream::new(names(5), Some(OsStr::new("f000")));
        stream.advance(OsStr::new("f001"));
        queue.remember(Place::Lower(0), dir.into(), DirReading::Ahead(stream));
    }

    fn expected_dirs(jobs: &[super::FileJob]) -> Vec<String> {
        jobs.iter()
            .map(|job| {
                assert!(matches!(job.what, super::FileWork::Expect));
                job.dir.display().to_string()
            })
            .collect()
    }

    #[test]
    fn a_reader_following_the_walk_has_the_first_files_of_the_next_directories_read_ahead() {
        let mut queue = FileQueue::default();
        walked(&mut queue, &[5; 12]);
        entered(&mut queue, "d00");
        // 16 files: the next four directories of five.
        let jobs = queue.expect_after(Path::new("d00"));
        assert_eq!(expected_dirs(&jobs), ["d01", "d02", "d03", "d04"]);
        // Asked again from the same place (its every open asks), nothing more.
        assert!(queue.expect_after(Path::new("d00")).is_empty());
        // Once the reader is in d01, one more directory keeps 16 files ahead of it.
        entered(&mut queue, "d01");
        let jobs = queue.expect_after(Path::new("d01"));
        assert_eq!(expected_dirs(&jobs), ["d05"]);
        // A directory the walk did not list, or its last, expects nothing.
        assert!(queue.expect_after(Path::new("elsewhere")).is_empty());
        assert!(queue.expect_after(Path::new("d11")).is_empty());
    }

    #[test]
    fn a_directory_whose_listing_was_dropped_from_a_full_queue_is_expected_again() {
        let mut queue = FileQueue::default();
        walked(&mut queue, &[5; 4]);
        entered(&mut queue, "d00");
        let jobs = queue.expect_after(Path::new("d00"));
        assert_eq!(expected_dirs(&jobs), ["d01", "d02", "d03"]);
        queue.queue_all(jobs);
        // A flood of other work pushes the three listings out of the queue unlisted.
        let flood = (0..super::MAX_QUEUED).map(|i| super::FileJob {
            place: Place::Lower(0),
            dir: format!("other{i}").into(),
            what: super::FileWork::Files(Vec::new()),
        });
        queue.queue_all(flood);
        assert_eq!(queue.queue.len(), super::MAX_QUEUED);
        let known: Vec<_> = queue.dirs[&Place::Lower(0)].keys().collect();
        assert_eq!(
            known,
            [Path::new("d00")],
            "the dropped listings are forgotten"
        );
        assert_eq!(queue.remembered, 1 + 5);
        let jobs = queue.expect_after(Path::new("d00"));
        assert_eq!(expected_dirs(&jobs), ["d01", "d02", "d03"]);
    }

    #[test]
    fn the_walk_forgets_its_oldest_directories_rather_than_grow_past_its_bound() {
        let mut queue = FileQueue::default();
        walked(&mut queue, &[1; 3]);
        for i in 0..super::MAX_WALKED {
            queue.walk.push(Walked {
                path: format!("e{i}").into(),
                files: vec![(Place::Lower(0), 1)],
            });
        }
        let walk = &queue.walk;
        assert_eq!(walk.dirs.len(), super::MAX_WALKED);
        assert_eq!(walk.number.len(), super::MAX_WALKED);
        assert_eq!(walk.after(Path::new("d01")).count(), 0, "d01 is forgotten");
        let last = format!("e{}", super::MAX_WALKED - 2);
        let after: Vec<_> = walk.after(Path::new(&last)).map(|w| &w.path).collect();
        assert_eq!(after, [Path::new(&format!("e{}", super::MAX_WALKED - 1))]);
    }

    #[test]
    fn file_read_ahead_forgets_everything_rather_than_grow_past_its_bound() {
        let mut queue = FileQueue::default();
        let place = Place::Lower(0);
        let half = || {
            let listing = names(MAX_REMEMBERED_NAMES / 2);
            DirReading::Ahead(Stream::new(listing, Some(OsStr::new("f000"))))
        };
        queue.remember(place, "a".into(), half());
        assert_eq!(queue.remembered, 1 + MAX_REMEMBERED_NAMES / 2);
        queue.remember(place, "b".into(), half());
        let dirs = &queue.dirs[&place];
        assert!(!dirs.contains_key(Path::new("a")) && dirs.contains_key(Path::new("b")));
        assert_eq!(queue.remembered, 1 + MAX_REMEMBERED_NAMES / 2);
        // Replacing what is known of a directory counts the new state only.
        queue.remember(place, "b".into(), DirReading::Listing);
        assert_eq!(queue.remembered, 1);
    }
}

//! Directory read-ahead for tree walks. When the union lists a directory afresh, its
//! subdirectories, and theirs one level further down, are read in the background in the
//! layers they come from: listed, and each entry stat'ed. That brings the layer filesystem's
//! directory blocks and inodes into the kernel's caches, so a walk that descends next (`find`,
//! `du`, a build's `COPY` or `chown -R`) finds them there instead of waiting on the disk
//! between its round trips to the daemon; on a cold cache the walk's disk reads and round
//! trips overlap instead of adding up. When the caches are warm it costs a few system calls
//! per directory, on a thread of its own.
//!
//! Nothing here changes anything: what is read is dropped and errors are ignored (the walk
//! itself reads the directory again and reports them). The queue is bounded; the newest
//! entries are read first, since a walk descends into what it listed last.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};

use rustix::fs::{AtFlags, OFlags};

use super::layers::{Layers, Place};
use super::resolve::{is_dir, read_names};

/// Directories waiting to be read ahead, at most; the oldest are dropped beyond it.
const MAX_QUEUED: usize = 4096;
/// How many directories are remembered as queued before the memory is cleared (a few MB
/// of paths at most: the daemon stays small on trees of any size).
const MAX_REMEMBERED: usize = 1 << 14;
/// How many levels below a listed directory are read ahead.
const DEPTH: u8 = 2;

/// Reads directories ahead of a walk, on a background thread started at the first request
/// (by a session thread, whose blocked signals it inherits).
#[derive(Debug)]
pub(crate) struct DirReadahead {
    shared: Arc<Shared>,
    started: Once,
}

#[derive(Debug)]
struct Shared {
    layers: Arc<Layers>,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Newest last, and taken from the back.
    queue: VecDeque<Job>,
    /// Directories queued so far, so that each is read ahead once.
    queued: HashSet<(Place, PathBuf)>,
    closed: bool,
}

#[derive(Debug)]
struct Job {
    place: Place,
    path: PathBuf,
    /// How many more levels below this one to read ahead.
    depth: u8,
}

impl DirReadahead {
    pub fn new(layers: Arc<Layers>) -> Self {
        DirReadahead {
            shared: Arc::new(Shared {
                layers,
                state: Mutex::default(),
                wake: Condvar::new(),
            }),
            started: Once::new(),
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
            places[from..].iter().rev().map(move |&place| Job {
                place,
                path: dir.join(name),
                depth: DEPTH - 1,
            })
        });
        if self.shared.push(jobs) {
            self.started.call_once(|| {
                let shared = self.shared.clone();
                // No thread, no read-ahead: the walk reads the directories itself.
                let _ = std::thread::Builder::new()
                    .name("dir-readahead".into())
                    .spawn(move || shared.run());
            });
        }
    }
}

impl Drop for DirReadahead {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `jobs` (the one to read first last), skipping directories queued before.
    /// Returns whether any was queued.
    fn push(&self, jobs: impl Iterator<Item = Job>) -> bool {
        let mut state = self.lock();
        let mut pushed = false;
        for job in jobs {
            if state.queued.len() >= MAX_REMEMBERED {
                state.queued.clear();
            }
            if !state.queued.insert((job.place, job.path.clone())) {
                continue;
            }
            if state.queue.len() == MAX_QUEUED {
                state.queue.pop_front();
            }
            state.queue.push_back(job);
            pushed = true;
        }
        drop(state);
        if pushed {
            self.wake.notify_one();
        }
        pushed
    }

    fn run(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if state.closed {
                        return;
                    }
                    if let Some(job) = state.queue.pop_back() {
                        break job;
                    }
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let subdirs = self.read(&job);
            if job.depth > 0 {
                self.push(subdirs.into_iter().rev().map(|path| Job {
                    place: job.place,
                    path,
                    depth: job.depth - 1,
                }));
            }
        }
    }

    /// Lists `job`'s directory and stats every entry in it; returns its subdirectories.
    fn read(&self, job: &Job) -> Vec<PathBuf> {
        let dir = self
            .layers
            .open_at(job.place, &job.path, OFlags::RDONLY | OFlags::DIRECTORY);
        let Ok(fd) = dir else { return Vec::new() };
        let Ok(names) = read_names(&fd) else {
            return Vec::new();
        };
        names
            .into_iter()
            .filter(|name| {
                rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| is_dir(&st))
            })
            .map(|name| job.path.join(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::ffi::OsStr;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{DirReadahead, Place};
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
                let state = readahead.shared.lock();
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
        assert_eq!(readahead.shared.lock().queued, expected);
        // Listed again (a rewind), nothing is queued twice.
        readahead.subdirs(Path::new(""), &places, root_subdirs().into_iter());
        assert!(readahead.shared.lock().queue.is_empty());
    }
}

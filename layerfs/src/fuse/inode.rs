//! The inodes the kernel knows, and their numbers.
//!
//! A FUSE node id is also the `st_ino` users see, so it is derived from the real inode:
//! `fs << 48 | ino`, where `fs` numbers the distinct filesystems of the stack (0 when every
//! layer lives on one filesystem, the usual case, which gives exactly the numbers kernel
//! overlayfs shows). Hard links in a layer are therefore one node. An entry keeps its number
//! when it is copied up: the upper inode is mapped back to its origin for as long as it exists.
//! Numbers that do not fit, or that would collide, come from a counter.
//!
//! The table is sharded so that concurrent requests on different inodes do not contend.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use fuser::BackingId;

use super::layers::Place;

/// The root's node id (fixed by the protocol).
pub(crate) const ROOT_ID: u64 = 1;

const SHARDS: usize = 64;
const FS_SHIFT: u32 = 48;
/// Ids from the counter have the top bit set, so they never collide with composed ones.
const SYNTHETIC_BASE: u64 = 1 << 63;

/// What the node is in the union.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    /// The node's paths relative to the root: one for a directory, every known link for a
    /// file. The first is used to reach it.
    pub paths: Vec<PathBuf>,
    /// The directory of `paths[0]`.
    pub parent: u64,
    /// Where the node's topmost entry lives.
    pub place: Place,
    /// For a directory: the lower layers merged into it, top first (empty for an opaque or
    /// pure upper directory).
    pub lowers: Vec<u16>,
    /// Removed from the union (it may still be open).
    pub removed: bool,
}

impl NodeState {
    pub fn path(&self) -> &PathBuf {
        &self.paths[0]
    }

    pub fn in_upper(&self) -> bool {
        self.place == Place::Upper
    }

    /// A directory made of more than one layer dir (`st_nlink` is then 1, as overlayfs says).
    pub fn is_merged(&self) -> bool {
        match self.place {
            Place::Upper => !self.lowers.is_empty(),
            Place::Lower(_) => self.lowers.len() > 1,
        }
    }
}

/// How a node's open files do their I/O. The kernel takes one kind at a time per inode: while
/// a file of it is open for passthrough, every open must pass through the same backing file,
/// and while one is open through its page cache, none may pass through (either mistake fails
/// the `open` with EIO), so one lock decides both.
#[derive(Debug, Default)]
pub(crate) struct FileIo {
    pub backing: Option<Backing>,
    /// Open files whose data the daemon serves, kept in the kernel's page cache.
    pub cached_opens: u32,
    /// Those of them that opened the node's lower file (before a copy-up).
    pub lower_cached_opens: u32,
    /// Whether the node has been opened before (a small lower file is then read through the
    /// page cache).
    pub opened: bool,
    /// Whether the daemon has put the (lower) file's data into the kernel's page cache.
    pub stored: bool,
}

impl FileIo {
    /// Whether a file open since before the node became `place` (a copy-up) still reads the
    /// lower file: the kernel takes one backing file per inode, and the daemon serves a cached
    /// open's reads from the file it opened.
    fn reads_lower_file(&self, place: Place) -> bool {
        self.lower_cached_opens > 0
            || self
                .backing
                .as_ref()
                .is_some_and(|b| b.opens > 0 && b.place != place)
    }
}

/// A passthrough backing file shared by a node's open files (the kernel wants one per inode).
#[derive(Debug)]
pub(crate) struct Backing {
    pub id: BackingId,
    pub place: Place,
    pub opens: u32,
    /// For a lower file read through passthrough, opened plainly (no `O_DIRECT`, no
    /// `O_SYNC`): the file registered as the backing, which later plain reads of the node
    /// share. Lower files never change, so such a backing outlives its opens, parked, and a
    /// reopen costs no `openat` and no registration.
    pub shared_file: Option<Arc<OwnedFd>>,
    /// While parked (no open file uses it): its stamp in [`ParkedBackings`].
    pub parked: Option<u64>,
}

/// The lower-file backings kept after their last file closed, oldest first: a build reopens
/// the same libraries and tools over and over. At most [`ParkedBackings::KEPT`] stay; each
/// holds one open file of a lower layer.
#[derive(Debug, Default)]
pub(crate) struct ParkedBackings {
    next_stamp: AtomicU64,
    queue: Mutex<VecDeque<(Weak<Node>, u64)>>,
}

impl ParkedBackings {
    pub const KEPT: usize = 256;

    /// Parks `backing` (of a node whose `io` lock the caller holds) and returns the stamp
    /// to [`ParkedBackings::queue`] once that lock is released.
    pub fn park(&self, backing: &mut Backing) -> u64 {
        let stamp = self.next_stamp.fetch_add(1, Ordering::Relaxed);
        backing.parked = Some(stamp);
        stamp
    }

    /// Queues `node`'s backing parked with `stamp`, and closes the oldest parked backings
    /// beyond [`ParkedBackings::KEPT`]. The caller holds no node's `io` lock.
    pub fn queue(&self, node: &Arc<Node>, stamp: u64) {
        let evicted: Vec<_> = {
            let mut queue = self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.push_back((Arc::downgrade(node), stamp));
            let excess = queue.len().saturating_sub(Self::KEPT);
            queue.drain(..excess).collect()
        };
        for (node, stamp) in evicted {
            let Some(node) = node.upgrade() else { continue };
            let mut io = node.io();
            // Reopened since (no longer parked, or parked again under a newer stamp): kept.
            if io.backing.as_ref().is_some_and(|b| b.parked == Some(stamp)) {
                io.backing = None;
            }
        }
    }
}

/// One inode the kernel holds.
#[derive(Debug)]
pub(crate) struct Node {
    pub id: u64,
    pub is_dir: bool,
    lookups: AtomicU64,
    state: RwLock<NodeState>,
    /// Serializes copy-ups of this node.
    pub copy_up: Mutex<()>,
    io: Mutex<FileIo>,
    /// Signalled whenever one of the node's open files is released.
    released: Condvar,
    /// A directory's listing while a pass over it is under way.
    pub listing: Mutex<Option<Arc<super::fs::Listing>>>,
    /// Whether the node is known to have no `security.capability` xattr.
    pub capability: CapabilityMemory,
}

impl Node {
    pub fn new(id: u64, is_dir: bool, state: NodeState) -> Node {
        Node {
            id,
            is_dir,
            lookups: AtomicU64::new(0),
            state: RwLock::new(state),
            copy_up: Mutex::new(()),
            io: Mutex::new(FileIo::default()),
            released: Condvar::new(),
            listing: Mutex::new(None),
            capability: CapabilityMemory::default(),
        }
    }

    /// How the node's open files do their I/O.
    pub fn io(&self) -> MutexGuard<'_, FileIo> {
        self.io
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The node's I/O state for a writer of the node, now `place`: once no open file reads its
    /// lower file any more, waiting up to `patience` for files already closed whose RELEASE is
    /// on its way (the kernel sends it after `close` returns). `None` if they stay open.
    pub fn io_for_writer(
        &self,
        place: Place,
        patience: Duration,
    ) -> Option<MutexGuard<'_, FileIo>> {
        let deadline = Instant::now() + patience;
        let mut io = self.io();
        while io.reads_lower_file(place) {
            let left = deadline.checked_duration_since(Instant::now())?;
            io = self
                .released
                .wait_timeout(io, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        Some(io)
    }

    /// Tells writers waiting in [`Node::io_for_writer`] that an open file was released.
    pub fn file_released(&self) {
        self.released.notify_all();
    }

    pub fn state(&self) -> RwLockReadGuard<'_, NodeState> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn state_mut(&self) -> RwLockWriteGuard<'_, NodeState> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a node is known to have no `security.capability` xattr: the kernel asks for it
/// before every write (its check for privileges to drop), and only the union can add one. A
/// generation beside the bit keeps a lookup that raced with a `setxattr` from being
/// remembered.
#[derive(Debug, Default)]
pub(crate) struct CapabilityMemory(AtomicU64);

impl CapabilityMemory {
    const ABSENT: u64 = 1;
    const GENERATION: u64 = 2;

    /// Whether the node is known to have none, and the state to hand to
    /// [`CapabilityMemory::found_absent`] after a lookup.
    pub fn known_absent(&self) -> (bool, u64) {
        let state = self.0.load(Ordering::Acquire);
        (state & Self::ABSENT != 0, state)
    }

    /// A lookup that started at `seen` found none: remembered unless a change came meanwhile.
    pub fn found_absent(&self, seen: u64) {
        let _ = self.0.compare_exchange(
            seen,
            seen | Self::ABSENT,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// The node was created without one.
    pub fn created(&self) {
        self.0.fetch_or(Self::ABSENT, Ordering::AcqRel);
    }

    /// One may be set: called before the change and after it, so that neither a lookup
    /// before it nor one during it is remembered.
    pub fn changing(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                Some(state.wrapping_add(Self::GENERATION) & !Self::ABSENT)
            });
    }
}

/// Every node the kernel holds a reference to, by id.
#[derive(Debug)]
pub(crate) struct NodeTable {
    shards: Vec<RwLock<HashMap<u64, Arc<Node>>>>,
}

fn shard_of(id: u64) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS
}

impl NodeTable {
    pub fn new(root: Node) -> NodeTable {
        let table = NodeTable {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        };
        root.lookups.store(1, Ordering::Relaxed);
        table.write(ROOT_ID).insert(ROOT_ID, Arc::new(root));
        table
    }

    fn read(&self, id: u64) -> RwLockReadGuard<'_, HashMap<u64, Arc<Node>>> {
        self.shards[shard_of(id)]
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, id: u64) -> RwLockWriteGuard<'_, HashMap<u64, Arc<Node>>> {
        self.shards[shard_of(id)]
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Node>> {
        self.read(id).get(&id).cloned()
    }

    /// The node `id`, counting one more kernel reference; `make` builds it when it is new.
    /// Returns whether it was made.
    pub fn reference(&self, id: u64, make: impl FnOnce() -> Node) -> (Arc<Node>, bool) {
        if let Some(n) = self.read(id).get(&id) {
            n.lookups.fetch_add(1, Ordering::Relaxed);
            return (n.clone(), false);
        }
        let mut shard = self.write(id);
        let (node, made) = match shard.get(&id) {
            Some(n) => (n.clone(), false),
            None => {
                let n = Arc::new(make());
                shard.insert(id, n.clone());
                (n, true)
            }
        };
        node.lookups.fetch_add(1, Ordering::Relaxed);
        (node, made)
    }

    /// Whether a node `id` is held.
    pub fn contains(&self, id: u64) -> bool {
        self.read(id).contains_key(&id)
    }

    /// Takes back one reference counted by [`NodeTable::reference`] (a reply that failed).
    pub fn unreference(&self, id: u64) {
        self.forget(id, 1);
    }

    /// The kernel dropped `n` references to `id`.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut shard = self.write(id);
        if let Some(node) = shard.get(&id) {
            let before = node.lookups.fetch_sub(
                n.min(node.lookups.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            if before <= n {
                shard.remove(&id);
            }
        }
    }

    /// Every node (for the rare operations that must visit them all: directory renames).
    pub fn all(&self) -> Vec<Arc<Node>> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Turns real inodes into node ids and remembers where copied-up entries came from.
#[derive(Debug, Default)]
pub(crate) struct InodeNumbers {
    /// `(fs, ino)` that do not compose → their counter id.
    synthetic: Mutex<HashMap<(u16, u64), u64>>,
    next: AtomicU64,
    /// Upper inode → the id it had before it was copied up (or a counter id chosen because
    /// its own id was still taken by a removed node).
    upper_origin: Mutex<HashMap<u64, u64>>,
}

impl InodeNumbers {
    /// The node id of the real inode `ino` on filesystem `fs` (upper inodes: see
    /// [`InodeNumbers::id_of_upper`]).
    pub fn id(&self, fs: u16, ino: u64) -> u64 {
        if ino < (1 << FS_SHIFT) && u64::from(fs) < (1 << (63 - FS_SHIFT)) {
            let id = (u64::from(fs) << FS_SHIFT) | ino;
            if id > ROOT_ID {
                return id;
            }
        }
        let mut map = self
            .synthetic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry((fs, ino))
            .or_insert_with(|| SYNTHETIC_BASE + self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The node id of the upper inode `ino`: its origin's when it was copied up.
    pub fn id_of_upper(&self, fs: u16, ino: u64) -> u64 {
        let origin = self
            .upper_origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&ino)
            .copied();
        origin.unwrap_or_else(|| self.id(fs, ino))
    }

    /// Records that the upper inode `ino` is the node `id`.
    pub fn set_upper_origin(&self, ino: u64, id: u64) {
        self.upper_origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(ino, id);
    }

    /// The upper inode `ino` is gone: its number may be reused by a new file.
    pub fn upper_gone(&self, ino: u64) {
        self.upper_origin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&ino);
    }

    /// A fresh id from the counter.
    pub fn fresh(&self) -> u64 {
        SYNTHETIC_BASE + self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_real_inode_on_one_filesystem() {
        let n = InodeNumbers::default();
        assert_eq!(n.id(0, 1234), 1234);
        assert_eq!(n.id(1, 1234), (1 << 48) | 1234);
        // The root's id is reserved, and inode numbers that do not fit get counter ids.
        let a = n.id(0, 1);
        assert!(a >= SYNTHETIC_BASE);
        assert_eq!(n.id(0, 1), a, "the same inode keeps its id");
        let big = n.id(0, u64::MAX);
        assert!(big >= SYNTHETIC_BASE && big != a);
    }

    #[test]
    fn copied_up_inodes_keep_their_origin() {
        let n = InodeNumbers::default();
        assert_eq!(n.id_of_upper(0, 77), 77);
        n.set_upper_origin(77, 12);
        assert_eq!(n.id_of_upper(0, 77), 12);
        n.upper_gone(77);
        assert_eq!(n.id_of_upper(0, 77), 77);
    }

    fn state() -> NodeState {
        NodeState {
            paths: vec![PathBuf::from("a")],
            parent: ROOT_ID,
            place: Place::Upper,
            lowers: Vec::new(),
            removed: false,
        }
    }

    #[test]
    fn nodes_live_until_the_kernel_forgets_every_reference() {
        let t = NodeTable::new(Node::new(ROOT_ID, true, state()));
        t.reference(5, || Node::new(5, false, state()));
        t.reference(5, || unreachable!("the node exists"));
        t.forget(5, 1);
        assert!(t.get(5).is_some());
        t.forget(5, 1);
        assert!(t.get(5).is_none());
        t.forget(ROOT_ID, 10);
        assert!(t.get(ROOT_ID).is_some(), "the root is never forgotten");
    }

    #[test]
    fn a_known_inode_is_the_same_node() {
        let t = NodeTable::new(Node::new(ROOT_ID, true, state()));
        let (old, made) = t.reference(9, || Node::new(9, false, state()));
        assert!(made);
        old.state_mut().removed = true;
        let (again, made) = t.reference(9, || unreachable!("the node exists"));
        assert!(!made && Arc::ptr_eq(&old, &again));
    }

    #[test]
    fn a_capability_lookup_that_raced_with_a_setxattr_is_not_remembered() {
        let m = CapabilityMemory::default();
        let (absent, seen) = m.known_absent();
        assert!(!absent, "nothing is known at first");
        m.found_absent(seen);
        assert!(m.known_absent().0);

        // A lookup from before a setxattr, done after it.
        m.changing();
        let (_, before) = m.known_absent();
        m.changing();
        m.changing();
        m.found_absent(before);
        assert!(!m.known_absent().0);

        // A lookup that starts and ends while a setxattr is under way.
        m.changing();
        let (_, during) = m.known_absent();
        m.found_absent(during);
        m.changing();
        assert!(!m.known_absent().0);

        m.created();
        assert!(m.known_absent().0, "a file created in the union has none");
    }
}

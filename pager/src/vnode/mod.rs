//! Vnodes: the files in use of a mounted filesystem, each with the VM
//! object of its pages and that object's pager (FreeBSD's `vnode`,
//! `vnode_pager.c`, with one filesystem and no name cache).
//!
//! A [`Mount`] is an ext2 filesystem over a block device behind one
//! sleeping lock, the filesystem lock, which is also the vnode lock: every
//! filesystem call holds it across its I/O. Each file in use has a
//! [`Vnode`] owning one vnode-kind VM object, whose pager
//! ([`pager::VnodePager`]) reads pages from the file with read-behind and
//! read-ahead in clusters; `mmap` maps that object, shared or
//! copy-on-write. Dirty pages go back to the file by [`Vnode::flush`]
//! (msync, fsync, and when an unused vnode is dropped), in runs.
//!
//! A flush takes the filesystem lock first and holds it while it waits for
//! busy pages (FreeBSD's order: vnode lock, then page busy); the page-fault
//! path, which holds busy pages, only *tries* it (rule 8): the pager
//! answers AGAIN, and the fault releases everything, waits a moment and
//! retries.
//!
//! Unlinking a file that is still in use keeps its inode until the vnode
//! goes (ext2's `unlink_keep`, then `release`), as Unix does.
//!
//! What the mount needs from the machine it is given: a block device
//! shared through `&self` ([`crate::block::BlockDevice`]), a clock for the
//! inodes' times, the VM environment its objects allocate pages from (and
//! reach page contents through); its lock sleeps through the VM's sleep
//! hooks. Nothing here is global: the host tests mount as many filesystems
//! as they like, over RAM disks that fail on demand.
//!
//! Locking (the letters of `vm`'s legend): (L) the filesystem lock, a
//! sleeping lock (`vm::witness::order::VNODE`); (V) the vnode table's spin
//! lock, taken after (L) and before any object lock; (A) atomics, each
//! saying what its ordering pairs with; (C) set when made, constant after.

mod pager;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use pager::{AHEAD_INIT, AHEAD_MAX, BEHIND};
use vm::object::{ObjectKind, VmEnv, VmObject};
use vm::page::Page;
use vm::sync::{Mutex, SleepLock};
use vm::witness::order;

use crate::block::BlockDevice;
use crate::ext2::{Ext2, FsError, Ino};

/// A block device a mount can own.
pub type Disk = Box<dyn BlockDevice + Send>;

const PAGE: u64 = vm::PAGE_SIZE as u64;
/// Most pages in one write-back.
pub const PUT_CLUSTER: usize = 32;

/// What the vnode pagers of a mount have done. (A, each a count: Relaxed.)
#[derive(Default)]
pub struct VnodeStats {
    /// Block requests the pagers issued.
    pub reads: AtomicU64,
    /// Page-ins that found the filesystem lock held and answered AGAIN.
    pub again: AtomicU64,
    /// Write-backs: filesystem writes of runs of dirty pages.
    pub writes: AtomicU64,
}

/// A mounted filesystem and its vnodes.
pub struct Mount {
    /// The filesystem. (L: it is its own lock)
    pub fs: SleepLock<Ext2<Disk>>,
    /// Vnodes of the files in use (open or mapped). (V)
    vnodes: Mutex<BTreeMap<Ino, Arc<Vnode>>>,
    /// Where the vnodes' objects get their pages. (C)
    env: VmEnv,
    /// Read-ahead on (a benchmark turns it off to compare). (A, Relaxed: a
    /// setting that guards no other data.)
    read_ahead: AtomicBool,
    pub stats: VnodeStats,
    /// Itself, for the vnodes and pagers it makes. (C)
    this: Weak<Mount>,
}

/// A file in use: its inode, size, and the VM object of its pages.
pub struct Vnode {
    /// (C)
    pub ino: Ino,
    /// The file's size, shared with the pager (which answers BAD past
    /// it). (A: Release when written after a write or truncate, Acquire
    /// when read, so a page-in that sees the new size sees the data.)
    pub size: Arc<AtomicU64>,
    /// (C)
    pub object: Arc<VmObject>,
    /// Unlinked while in use: the inode is freed when the vnode goes. (A:
    /// Release when set under (L), Acquire when read.)
    unlinked: AtomicBool,
    /// The path the file was first opened or run by, for the names of
    /// its mappings (`/proc/PID/maps`). (Its own lock, a leaf.)
    name: Mutex<Option<Vec<u8>>>,
    /// (C)
    mount: Weak<Mount>,
}

impl Mount {
    /// Mounts the ext2 filesystem on `disk`. Its vnodes' objects get pages
    /// from `env`; `clock` gives the time in seconds for inode times.
    pub fn new(disk: Disk, env: VmEnv, clock: fn() -> u32) -> Result<Arc<Mount>, FsError> {
        let mut fs = Ext2::mount(disk)?;
        fs.set_clock(clock);
        // (At boot or in a test: an allocation that may not fail.)
        Ok(Arc::new_cyclic(|this| Mount {
            fs: SleepLock::ranked(fs, &order::VNODE),
            vnodes: Mutex::ranked(BTreeMap::new(), &order::VNODE_TABLE),
            env,
            read_ahead: AtomicBool::new(true),
            stats: VnodeStats::default(),
            this: this.clone(),
        }))
    }

    /// Turns the pagers' read-ahead (and read-behind) on or off.
    pub fn set_read_ahead(&self, on: bool) {
        self.read_ahead.store(on, Ordering::Relaxed);
    }

    pub fn read_ahead(&self) -> bool {
        self.read_ahead.load(Ordering::Relaxed)
    }

    /// The vnode of `ino` (made on first use), whose size the caller knows.
    pub fn vnode(&self, ino: Ino, size: u64) -> Result<Arc<Vnode>, FsError> {
        let mut vnodes = self.vnodes.lock();
        if let Some(v) = vnodes.get(&ino) {
            return Ok(v.clone());
        }
        // The table's nodes cannot be allocated fallibly: ask first.
        if !vm::heap_room(512) {
            return Err(FsError::NoMemory);
        }
        let pages = size.div_ceil(PAGE).max(1);
        let object = VmObject::try_new(ObjectKind::Vnode, pages, self.env).map_err(|_| FsError::NoMemory)?;
        let size = Arc::try_new(AtomicU64::new(size)).map_err(|_| FsError::NoMemory)?;
        let pager = Arc::try_new(pager::VnodePager::new(self.this.clone(), ino, size.clone())).map_err(|_| FsError::NoMemory)?;
        object.lock().set_pager(pager);
        let v = Arc::try_new(Vnode {
            ino,
            size,
            object,
            unlinked: AtomicBool::new(false),
            name: Mutex::new(None),
            mount: self.this.clone(),
        })
        .map_err(|_| FsError::NoMemory)?;
        vnodes.insert(ino, v.clone());
        Ok(v)
    }

    /// The vnode whose object is `object`, if it is one of this mount's.
    pub fn vnode_of(&self, object: &Arc<VmObject>) -> Option<Arc<Vnode>> {
        self.vnodes.lock().values().find(|v| Arc::ptr_eq(&v.object, object)).cloned()
    }

    /// Pages of file data resident in the vnodes' objects (the page
    /// cache's size). Without memory to list the vnodes, 0.
    pub fn cached_pages(&self) -> u64 {
        let mut objects = Vec::new();
        {
            let vnodes = self.vnodes.lock();
            if objects.try_reserve_exact(vnodes.len()).is_err() {
                return 0;
            }
            objects.extend(vnodes.values().map(|v| v.object.clone()));
        }
        objects.iter().map(|o| o.lock().resident() as u64).sum()
    }

    /// How many vnodes are in use.
    pub fn vnodes_in_use(&self) -> usize {
        self.vnodes.lock().len()
    }

    /// Drops the vnodes nobody uses (no open file, no mapping), writing their
    /// dirty pages back first: their pages are freed.
    pub fn drop_unused(&self) {
        // One at a time, taken out under the table's lock: nothing is
        // allocated (this runs at every close, memory short or not).
        let unused = || {
            let mut vnodes = self.vnodes.lock();
            let ino = vnodes.iter().find(|(_, v)| Arc::strong_count(v) == 1 && v.object.ref_count() == 1).map(|(i, _)| *i)?;
            vnodes.remove(&ino)
        };
        while let Some(v) = unused() {
            let unlinked = v.unlinked.load(Ordering::Acquire);
            if !unlinked && let Err(e) = v.flush(0, u64::MAX) {
                log::warn!("vfs: writing back inode {}: {e:?}", v.ino);
            }
            let ino = v.ino;
            let Ok(v) = Arc::try_unwrap(v) else { continue };
            v.object.deallocate();
            if unlinked && let Err(e) = self.fs.lock().release(ino) {
                log::warn!("vfs: freeing unlinked inode {ino}: {e:?}");
            }
        }
    }

    /// Unlinks `name` in `dir`: a file still open or mapped keeps its inode
    /// until the last use.
    pub fn unlink(&self, dir: Ino, name: &[u8]) -> Result<(), FsError> {
        self.drop_unused();
        let mut fs = self.fs.lock();
        let ino = fs.lookup_in(dir, name)?;
        match self.vnodes.lock().get(&ino) {
            Some(v) => v.unlinked.store(true, Ordering::Release),
            None => return fs.unlink(dir, name),
        }
        fs.unlink_keep(dir, name).map(|_| ())
    }

    /// Writes everything back: the dirty pages of every vnode, then the
    /// filesystem's metadata, marking it clean (before power-off).
    pub fn sync(&self) {
        let vnodes: Vec<Arc<Vnode>> = self.vnodes.lock().values().cloned().collect();
        for v in vnodes {
            if !v.unlinked.load(Ordering::Acquire)
                && let Err(e) = v.flush(0, u64::MAX)
            {
                log::warn!("vfs: writing back inode {}: {e:?}", v.ino);
            }
        }
        self.drop_unused();
        if let Err(e) = self.fs.lock().sync() {
            log::warn!("vfs: sync: {e:?}");
        }
    }
}

impl Vnode {
    /// Names the file by `path` (absolute), unless it has a name already.
    /// Without memory for the name, the file stays unnamed.
    pub fn set_name(&self, path: &[u8]) {
        let mut name = self.name.lock();
        let mut n = Vec::new();
        if name.is_none() && n.try_reserve_exact(path.len()).is_ok() {
            n.extend_from_slice(path);
            *name = Some(n);
        }
    }

    /// Calls `f` with the path the file was first opened by, if known.
    pub fn with_name<R>(&self, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        f(self.name.lock().as_deref())
    }

    /// Whether the file was unlinked while in use.
    pub fn is_unlinked(&self) -> bool {
        self.unlinked.load(Ordering::Acquire)
    }

    /// Records a new file size (after a write or a truncate).
    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    fn mount(&self) -> Result<Arc<Mount>, FsError> {
        self.mount.upgrade().ok_or(FsError::NotFound)
    }

    /// Writes the dirty resident pages of byte range `[start, end)` back to
    /// the file: runs of consecutive dirty pages, up to [`PUT_CLUSTER`], go
    /// in one filesystem write, which ext2 turns into one request per run
    /// of contiguous blocks. Each page is busied and write-protected in
    /// every mapping first, so a write through a mapping during the flush
    /// faults and dirties the page again.
    ///
    /// The filesystem lock (our vnode lock) is taken first and held
    /// throughout, while waiting for busy pages too: FreeBSD's order, vnode
    /// lock then page busy. A fault holds a busy page and only *tries* the
    /// lock (rule 8), so the two cannot deadlock. A failed write leaves the
    /// pages dirty, to be written again.
    pub fn flush(&self, start: u64, end: u64) -> Result<(), FsError> {
        let m = self.mount()?;
        let mut fs = m.fs.lock();
        self.put_pages(&m, &mut fs, start, end)
    }

    /// Writes the dirty pages of `[start, end)` back, then frees the clean
    /// ones (every mapping of them goes), all under one hold of the
    /// filesystem lock: the file's cached pages for that range are dropped
    /// without losing a write. Pages dirtied again meanwhile, and wired
    /// pages, stay. Returns the pages freed.
    pub fn flush_and_evict(&self, start: u64, end: u64) -> Result<usize, FsError> {
        let m = self.mount()?;
        let mut fs = m.fs.lock();
        self.put_pages(&m, &mut fs, start, end)?;
        Ok(self.object.remove_clean(start / PAGE, end.div_ceil(PAGE)))
    }

    fn put_pages(&self, m: &Mount, fs: &mut Ext2<Disk>, start: u64, end: u64) -> Result<(), FsError> {
        let env = *self.object.env();
        let (first, last) = (start / PAGE, end.div_ceil(PAGE));
        let is_dirty = |p: &'static Page| p.dirty() != 0 || env.mappings.is_modified(p);
        let mut next = first;
        let mut result = Ok(());
        loop {
            // The first dirty page from `next`, busy and write-protected.
            let page = {
                let l = self.object.lock();
                let Some(p) = l.lookup_ge(next).filter(|p| p.pindex() < last) else { break };
                if !p.try_xbusy() {
                    drop(l);
                    vm::page::busy_wait(p);
                    continue;
                }
                p
            };
            next = page.pindex() + 1;
            env.mappings.write_protect_all(page);
            if !is_dirty(page) {
                page.xunbusy();
                continue;
            }
            // The run of dirty pages that follows it, built as the laundry
            // builds its clusters. Its room is taken first: with the heap
            // short the flush ends with NoMemory, the pages still dirty.
            let mut run: Vec<&'static Page> = Vec::new();
            if run.try_reserve_exact(PUT_CLUSTER).is_err() {
                page.xunbusy();
                result = Err(FsError::NoMemory);
                break;
            }
            run.push(page);
            vm::pageout::dirty_run(env.mappings, &self.object, page, &mut run, page.pindex()..last, PUT_CLUSTER, |_| true);
            next = run[run.len() - 1].pindex() + 1;
            match pager::write_run(m, fs, env.pm, self.ino, self.size.load(Ordering::Acquire), &run) {
                Ok(()) => {
                    for p in &run {
                        p.undirty();
                        env.mappings.clear_modify(p);
                    }
                }
                // The pages stay dirty, to be written again.
                Err(e) => result = Err(e),
            }
            for p in run {
                p.xunbusy();
            }
        }
        result
    }

    /// Drops the resident pages of byte range `[start, end)` (their data on
    /// disk changed): every mapping faults the new data in.
    pub fn invalidate(&self, start: u64, end: u64) {
        self.object.remove_range(start / PAGE, end.div_ceil(PAGE));
    }
}

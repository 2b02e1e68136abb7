//! The vnode pager: the pager of a file's VM object. It reads pages from
//! the file, with read-behind and read-ahead in clusters, and writes runs
//! of dirty pages back (FreeBSD's `vnode_pager.c`).
//!
//! The read-ahead window follows FreeBSD's `vm_fault`: it starts at
//! [`AHEAD_INIT`] pages, doubles while faults come in sequence (each one
//! just past the last cluster read), up to [`AHEAD_MAX`], and falls back
//! when the access jumps; a random access also reads [`BEHIND`] pages
//! behind. A cluster is read with one block request per run of blocks that
//! are contiguous on disk.
//!
//! The pager holds its mount (weakly: the mount holds the vnodes, which
//! hold their objects, which hold their pagers) and reaches page contents
//! through the object's environment, for pages it holds exclusively busy.
//!
//! Locking: the pager is called with busy pages and no lock held. It only
//! *tries* the filesystem lock (L), rule 8: a flush holds that lock while
//! it waits for busy pages, so waiting for it here could deadlock. When
//! the lock is held a page-in answers AGAIN (the fault lets everything go,
//! waits a moment and retries) and a page-out writes nothing (the pages
//! stay dirty for a later pass). (C) set when the pager is made; (A) the
//! read-ahead state, atomics whose stale values cost only a window size.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use vm::object::{Pager, PagerResult, VmObject};
use vm::page::Page;
use vm::phys::PhysMem;

use super::{Disk, Mount, PAGE};
use crate::ext2::{Ext2, FsError, Ino};

/// Pages read ahead at first, and at most once access is sequential.
pub const AHEAD_INIT: u64 = 7;
pub const AHEAD_MAX: u64 = 31;
/// Pages read behind a fault that is not sequential.
pub const BEHIND: u64 = 3;

/// The pager of one vnode's object.
pub(super) struct VnodePager {
    /// (C)
    pub(super) mount: Weak<Mount>,
    /// (C)
    pub(super) ino: Ino,
    /// The file's size, shared with the vnode. (A)
    pub(super) size: Arc<AtomicU64>,
    /// The page after the last cluster read, and the current window. (A)
    pub(super) next_sequential: AtomicU64,
    pub(super) window: AtomicU64,
}

impl VnodePager {
    pub(super) fn new(mount: Weak<Mount>, ino: Ino, size: Arc<AtomicU64>) -> VnodePager {
        VnodePager { mount, ino, size, next_sequential: AtomicU64::new(u64::MAX), window: AtomicU64::new(AHEAD_INIT) }
    }
}

impl Pager for VnodePager {
    /// Every index is held: past the end, get_page answers BAD (SIGBUS),
    /// never zero fill. Before and after: the read-ahead window.
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        let pages = self.size.load(Ordering::Acquire).div_ceil(PAGE);
        let read_ahead = self.mount.upgrade().is_some_and(|m| m.read_ahead());
        if !read_ahead || pindex >= pages {
            return Some((0, 0));
        }
        let sequential = pindex == self.next_sequential.load(Ordering::Relaxed);
        let window = if sequential { (self.window.load(Ordering::Relaxed) * 2 + 1).min(AHEAD_MAX) } else { AHEAD_INIT };
        self.window.store(window, Ordering::Relaxed);
        let ahead = window.min(pages - 1 - pindex);
        self.next_sequential.store(pindex + ahead + 1, Ordering::Relaxed);
        let behind = if sequential { 0 } else { BEHIND.min(pindex) };
        Some((behind, ahead))
    }

    fn get_pages(&self, object: &VmObject, pages: &[&'static Page], req: usize) -> PagerResult {
        let Some(m) = self.mount.upgrade() else { return PagerResult::Error };
        // Rule 8: never wait for the filesystem with busy pages.
        #[cfg(loom)]
        let fs = if vm::sync::model::broken(vm::sync::model::Break::PagerWaitsForFileLock) {
            Some(m.fs.lock())
        } else {
            m.fs.try_lock()
        };
        #[cfg(not(loom))]
        let fs = m.fs.try_lock();
        let Some(mut fs) = fs else {
            m.stats.again.fetch_add(1, Ordering::Relaxed);
            return PagerResult::Again;
        };
        let pm = object.env().pm;
        let bs = fs.block_size() as u64;
        let per_page = PAGE / bs;
        let size = self.size.load(Ordering::Acquire);
        let mut i = 0;
        while i < pages.len() {
            let pindex = pages[i].pindex();
            let run = match fs.bmap_run(self.ino, pindex * per_page, (pages.len() - i) * per_page as usize) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("vnode pager: inode {} page {pindex}: {e:?}", self.ino);
                    break;
                }
            };
            // Whole pages of contiguous blocks go in one request; a hole, or
            // a page whose blocks are not contiguous, is read page by page.
            let n = match run {
                Some((_, blocks)) => blocks as u64 / per_page,
                None => 0,
            };
            if let (Some((block, _)), true) = (run, n > 0) {
                let mut buf = Vec::new();
                if buf.try_reserve_exact((n * PAGE) as usize).is_err() {
                    break;
                }
                buf.resize((n * PAGE) as usize, 0);
                m.stats.reads.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = fs.device().read(block as u64 * bs / 512, &mut buf) {
                    log::warn!("vnode pager: inode {} pages {pindex}+{n}: {e:?}", self.ino);
                    break;
                }
                for (k, chunk) in buf.chunks(PAGE as usize).enumerate() {
                    if !fill_page(pm, pages[i + k], chunk, size) {
                        break;
                    }
                }
                i += n as usize;
            } else {
                m.stats.reads.fetch_add(1, Ordering::Relaxed);
                let read = pm.with_contents_mut(pages[i], |buf| {
                    let got = fs.read(self.ino, pindex * PAGE, buf)?;
                    buf[got..].fill(0);
                    Ok::<(), FsError>(())
                });
                match read {
                    Some(Ok(())) => pages[i].set_all_valid(),
                    Some(Err(e)) => {
                        log::warn!("vnode pager: inode {} page {pindex}: {e:?}", self.ino);
                        break;
                    }
                    None => break,
                }
                i += 1;
            }
        }
        // An error stops the cluster: what was not read stays invalid and
        // is freed by the caller (rule 6).
        if pages[req].all_valid() { PagerResult::Ok } else { PagerResult::Error }
    }

    /// The pageout path's write-back of dirty file pages. Like a fault, it
    /// holds busy pages, so it only tries the filesystem lock (rule 8):
    /// when the lock is held, nothing is written and the pages wait.
    fn put_pages(&self, object: &VmObject, pages: &[&'static Page]) -> usize {
        let Some(m) = self.mount.upgrade() else { return 0 };
        let Some(mut fs) = m.fs.try_lock() else { return 0 };
        match write_run(&m, &mut fs, object.env().pm, self.ino, self.size.load(Ordering::Acquire), pages) {
            Ok(()) => pages.len(),
            Err(e) => {
                log::warn!("vnode pager: writing inode {} pages {}+{}: {e:?}", self.ino, pages[0].pindex(), pages.len());
                0
            }
        }
    }

    fn get_page(&self, object: &VmObject, page: &'static Page) -> PagerResult {
        // Past the end of the file: SIGBUS for the faulting program. (An
        // index whose offset does not fit in 64 bits is past it too.)
        if page.pindex().checked_mul(PAGE).is_none_or(|off| off >= self.size.load(Ordering::Acquire)) {
            return PagerResult::Bad;
        }
        self.get_pages(object, &[page], 0)
    }
}

/// Writes `run` (consecutive pages of file `ino`, exclusively busy) to the
/// file with one filesystem write; the part past the file's `size` is not
/// written.
pub(super) fn write_run(
    m: &Mount,
    fs: &mut Ext2<Disk>,
    pm: &PhysMem,
    ino: Ino,
    size: u64,
    run: &[&'static Page],
) -> Result<(), FsError> {
    let off = run[0].pindex() * PAGE;
    let len = size.saturating_sub(off).min(run.len() as u64 * PAGE) as usize;
    if len == 0 {
        return Ok(());
    }
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(len).map_err(|_| FsError::NoMemory)?;
    for p in run {
        let n = (len - buf.len()).min(PAGE as usize);
        pm.with_contents(p, |src| buf.extend_from_slice(&src[..n])).ok_or(FsError::Corrupt("page not addressable"))?;
    }
    m.stats.writes.fetch_add(1, Ordering::Relaxed);
    fs.write(ino, off, &buf).map(|_| ())
}

/// Copies one page's worth of file data into `page` (zero past the end of
/// the file) and marks it valid; false if the page has no contents to
/// reach (a host model without memory).
fn fill_page(pm: &PhysMem, page: &'static Page, data: &[u8], size: u64) -> bool {
    let off = page.pindex() * PAGE;
    let keep = size.saturating_sub(off).min(PAGE) as usize;
    let filled = pm.with_contents_mut(page, |buf| {
        buf[..keep].copy_from_slice(&data[..keep]);
        buf[keep..].fill(0);
    });
    if filled.is_some() {
        page.set_all_valid();
    }
    filled.is_some()
}

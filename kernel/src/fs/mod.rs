//! The mounted filesystem and open files.
//!
//! One ext2 filesystem is the root, over a block device (the virtio disk),
//! behind one sleeping lock: every filesystem call holds it across its I/O.
//! An open file is an inode and an offset ([`OpenFile`]); processes hold
//! them in their descriptor tables, shared across `fork` as on Linux. The
//! console is an open file too (descriptors 0, 1 and 2).
//!
//! Each file in use has a vnode ([`Vnode`]) owning one vnode-kind VM
//! object, whose pager ([`VnodePager`]) reads pages from the file, with
//! read-behind and read-ahead in clusters: `mmap` maps that object, shared
//! or copy-on-write. Dirty pages go back to the file by [`Vnode::flush`]
//! (msync, fsync, and when an unused vnode is dropped), in clusters.
//! `read` and `write` go through the filesystem and keep the object
//! coherent: resident pages of the range are written back first, and a
//! write drops them afterwards so that every mapping faults the new data in.
//!
//! The filesystem lock is the vnode lock. A flush takes it first and holds
//! it while it waits for busy pages (FreeBSD's order); the page-fault path,
//! which holds busy pages, only *tries* it (rule 8): the pager answers
//! AGAIN, and the fault releases everything, waits a moment and retries.
//!
//! Unlinking a file that is still open keeps its inode until the last close
//! (ext2's `unlink_keep` then `release`), as Unix does.

pub mod console;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pager::block::BlockDevice;
use pager::ext2::{Ext2, FsError, Ino};
use spin::Once;
use vm::object::{ObjectKind, PagerResult, VmObject};
use vm::page::Page;
use vm::sync::Mutex;

use crate::kern::sleeplock::SleepLock;

/// A block device the filesystem can own.
pub type Disk = Box<dyn BlockDevice + Send>;

/// The root filesystem.
pub struct Mount {
    pub fs: SleepLock<Ext2<Disk>>,
    /// Vnodes of files in use (open or mapped).
    vnodes: Mutex<BTreeMap<Ino, Arc<Vnode>>>,
}

const PAGE: u64 = 4096;

/// A file in use: its inode, size, and the VM object of its pages.
pub struct Vnode {
    pub ino: Ino,
    /// The file's size, shared with the pager (which answers BAD past it). (A)
    pub size: Arc<AtomicU64>,
    pub object: Arc<VmObject>,
    /// Unlinked while in use: the inode is freed when the vnode goes.
    unlinked: core::sync::atomic::AtomicBool,
}

/// Block requests the vnode pagers have issued. (A)
pub static PAGER_READS: AtomicU64 = AtomicU64::new(0);
/// Page-ins that found the filesystem lock held and answered AGAIN. (A)
pub static PAGER_AGAIN: AtomicU64 = AtomicU64::new(0);
/// Write-backs (filesystem writes of runs of dirty pages). (A)
pub static PAGER_WRITES: AtomicU64 = AtomicU64::new(0);
/// Most pages in one write-back.
const PUT_CLUSTER: u64 = 32;
/// Read-ahead on (the benchmark turns it off to compare). (A)
pub static READ_AHEAD: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Pages read ahead at first, and at most once access is sequential.
const AHEAD_INIT: u64 = 7;
const AHEAD_MAX: u64 = 31;
/// Pages read behind a fault that is not sequential.
const BEHIND: u64 = 3;

/// The pager of a vnode's object: reads pages from the file, with
/// read-behind and read-ahead in clusters.
///
/// The read-ahead window follows FreeBSD's vm_fault: it starts at
/// [`AHEAD_INIT`] pages, doubles while faults come in sequence (each one
/// just past the last cluster read), up to [`AHEAD_MAX`], and falls back
/// when the access jumps; a random access also reads [`BEHIND`] pages
/// behind. A cluster is read with one block request per run of blocks
/// that are contiguous on disk.
struct VnodePager {
    ino: Ino,
    size: Arc<AtomicU64>,
    /// The page after the last cluster read, and the current window. (A)
    next_sequential: AtomicU64,
    window: AtomicU64,
}

impl vm::object::Pager for VnodePager {
    fn name(&self) -> &'static str {
        "vnode"
    }

    /// Every index is held: past the end, get_page answers BAD (SIGBUS),
    /// never zero fill. Before and after: the read-ahead window.
    fn has_page(&self, pindex: u64) -> Option<(u64, u64)> {
        let pages = self.size.load(Ordering::Acquire).div_ceil(PAGE);
        if !READ_AHEAD.load(Ordering::Relaxed) || pindex >= pages {
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

    fn get_pages(&self, _object: &VmObject, pages: &[&'static Page], req: usize) -> PagerResult {
        let Some(m) = root() else { return PagerResult::Error };
        // Rule 8: never wait for the filesystem with busy pages.
        let Some(mut fs) = m.fs.try_lock() else {
            PAGER_AGAIN.fetch_add(1, Ordering::Relaxed);
            return PagerResult::Again;
        };
        let bs = fs.block_size() as u64;
        let per_page = PAGE / bs;
        let size = self.size.load(Ordering::Acquire);
        let pm = vm::global();
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
                let mut buf = alloc::vec::Vec::new();
                if buf.try_reserve_exact((n * PAGE) as usize).is_err() {
                    break;
                }
                buf.resize((n * PAGE) as usize, 0);
                PAGER_READS.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = fs.device().read(block as u64 * bs / 512, &mut buf) {
                    log::warn!("vnode pager: inode {} pages {pindex}+{n}: {e:?}", self.ino);
                    break;
                }
                for (k, chunk) in buf.chunks(PAGE as usize).enumerate() {
                    fill_page(pages[i + k], chunk, size);
                }
                i += n as usize;
            } else {
                PAGER_READS.fetch_add(1, Ordering::Relaxed);
                let Some(dst) = pm.page_addr(pages[i]) else { break };
                // SAFETY: the page is exclusively busy for this read.
                let buf = unsafe { core::slice::from_raw_parts_mut(dst, PAGE as usize) };
                match fs.read(self.ino, pindex * PAGE, buf) {
                    Ok(got) => {
                        buf[got..].fill(0);
                        pages[i].set_all_valid();
                    }
                    Err(e) => {
                        log::warn!("vnode pager: inode {} page {pindex}: {e:?}", self.ino);
                        break;
                    }
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
    fn put_pages(&self, _object: &VmObject, pages: &[&'static Page]) -> usize {
        let Some(m) = root() else { return 0 };
        let Some(mut fs) = m.fs.try_lock() else { return 0 };
        match write_run(&mut fs, self.ino, self.size.load(Ordering::Acquire), pages) {
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
fn write_run(fs: &mut Ext2<Disk>, ino: Ino, size: u64, run: &[&'static Page]) -> Result<(), FsError> {
    let off = run[0].pindex() * PAGE;
    let len = size.saturating_sub(off).min(run.len() as u64 * PAGE) as usize;
    if len == 0 {
        return Ok(());
    }
    let pm = vm::global();
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(len).map_err(|_| FsError::NoSpace)?;
    for p in run {
        let src = pm.page_addr(p).ok_or(FsError::Corrupt("page not addressable"))?;
        let n = (len - buf.len()).min(PAGE as usize);
        // SAFETY: the page is exclusively busy; n <= PAGE.
        buf.extend_from_slice(unsafe { core::slice::from_raw_parts(src, n) });
    }
    PAGER_WRITES.fetch_add(1, Ordering::Relaxed);
    fs.write(ino, off, &buf).map(|_| ())
}

/// Copies one page's worth of file data into `page` (zero past the end of
/// the file) and marks it valid.
fn fill_page(page: &'static Page, data: &[u8], size: u64) {
    let Some(dst) = vm::global().page_addr(page) else { return };
    let off = page.pindex() * PAGE;
    let keep = size.saturating_sub(off).min(PAGE) as usize;
    // SAFETY: the page is exclusively busy for this read; PAGE bytes.
    let buf = unsafe { core::slice::from_raw_parts_mut(dst, PAGE as usize) };
    buf[..keep].copy_from_slice(&data[..keep]);
    buf[keep..].fill(0);
    page.set_all_valid();
}

static ROOT: Once<Mount> = Once::new();

/// Mounts `disk` as the root filesystem.
pub fn mount_root(disk: Disk) -> Result<(), FsError> {
    let mut fs = Ext2::mount(disk)?;
    fs.set_clock(|| (crate::kern::time::realtime_ns() / 1_000_000_000) as u32);
    log::info!("vfs: root filesystem mounted: ext2, {}-byte blocks", fs.block_size());
    ROOT.call_once(|| Mount { fs: SleepLock::new(fs), vnodes: Mutex::new(BTreeMap::new()) });
    Ok(())
}

/// The root filesystem, if one is mounted.
pub fn root() -> Option<&'static Mount> {
    ROOT.get()
}

/// What an open file is: a regular file is its vnode.
#[derive(Clone)]
pub enum FileKind {
    Console,
    File(Arc<Vnode>),
    Dir(Ino),
    /// A read-only file the kernel wrote when it was opened (`/proc/vmstat`,
    /// see `syscall::file::kernel_file`): its bytes.
    Text(Arc<[u8]>),
}

/// An open file: what it is, how it was opened, and its offset (shared by
/// every descriptor that refers to it).
pub struct OpenFile {
    pub kind: FileKind,
    pub readable: bool,
    pub writable: bool,
    pub append: bool,
    /// Held across the I/O of a read or write (a sleeping lock).
    pub offset: SleepLock<u64>,
}

/// Open files in the system: every [`OpenFile`] counts from when it is made
/// until it is dropped. (A; Relaxed: a count that guards no other data.)
static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// The most open files there may be, as Linux's `fs.file-max`: a tenth of
/// memory in KiB, at least 8192 (13,107 at 128 MiB). Whatever each
/// process's RLIMIT_NOFILE, descriptors then take a bounded part of the
/// kernel heap (Linux lets root past it; here nothing runs as anyone else).
/// A test may lower it ([`FILE_LIMIT`]).
pub fn max_open_files() -> usize {
    match FILE_LIMIT.load(Ordering::Relaxed) {
        0 => {
            let kib = vm::global().pages().len() * (PAGE as usize / 1024);
            (kib / 10).max(8192)
        }
        n => n,
    }
}

/// The open-file limit when not 0, else the one memory gives. (A)
pub static FILE_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Open files in the system.
pub fn open_files() -> usize {
    OPEN_FILES.load(Ordering::Relaxed)
}

/// The most files open at once since [`reset_open_files_peak`] (a count
/// taken where files are opened: a program that reaches the limit and
/// closes everything within one time slice is never seen at it from
/// outside). (A, Relaxed as the count.)
static OPEN_FILES_PEAK: AtomicUsize = AtomicUsize::new(0);

/// The most files open at once since the last reset.
pub fn open_files_peak() -> usize {
    OPEN_FILES_PEAK.load(Ordering::Relaxed)
}

/// Starts the peak again from the files open now.
pub fn reset_open_files_peak() {
    OPEN_FILES_PEAK.store(open_files(), Ordering::Relaxed);
}

impl OpenFile {
    /// The console: made by the kernel for the processes it starts, so
    /// not held to the limit.
    pub fn console() -> Arc<OpenFile> {
        OPEN_FILES.fetch_add(1, Ordering::Relaxed);
        Arc::new(OpenFile { kind: FileKind::Console, readable: true, writable: true, append: false, offset: SleepLock::new(0) })
    }

    /// A new open file, or TooManyOpen past [`max_open_files`], or NoMemory.
    fn new(kind: FileKind, readable: bool, writable: bool, append: bool) -> Result<Arc<OpenFile>, FsError> {
        let before = OPEN_FILES.fetch_add(1, Ordering::Relaxed);
        if before >= max_open_files() {
            OPEN_FILES.fetch_sub(1, Ordering::Relaxed);
            return Err(FsError::TooManyOpen);
        }
        OPEN_FILES_PEAK.fetch_max(before + 1, Ordering::Relaxed);
        // On failure the value is dropped, and with it its count.
        Arc::try_new(OpenFile { kind, readable, writable, append, offset: SleepLock::new(0) }).map_err(|_| FsError::NoMemory)
    }

    /// A read-only file of `bytes`.
    pub fn text(bytes: Arc<[u8]>) -> Result<Arc<OpenFile>, FsError> {
        OpenFile::new(FileKind::Text(bytes), true, false, false)
    }

    /// Opens inode `ino` of the root filesystem (a regular file of `size`
    /// bytes, or a directory).
    pub fn open(ino: Ino, dir: bool, size: u64, readable: bool, writable: bool, append: bool) -> Result<Arc<OpenFile>, FsError> {
        let m = root().ok_or(FsError::NotFound)?;
        let kind = if dir { FileKind::Dir(ino) } else { FileKind::File(m.vnode(ino, size)?) };
        OpenFile::new(kind, readable, writable, append)
    }

    pub fn ino(&self) -> Option<Ino> {
        match &self.kind {
            FileKind::File(v) => Some(v.ino),
            FileKind::Dir(i) => Some(*i),
            FileKind::Console | FileKind::Text(_) => None,
        }
    }

    /// A regular file's vnode.
    pub fn vnode(&self) -> Option<&Arc<Vnode>> {
        match &self.kind {
            FileKind::File(v) => Some(v),
            _ => None,
        }
    }
}

impl Drop for OpenFile {
    /// The last close of a file nobody maps drops its vnode (an unlinked
    /// one's inode is freed then).
    fn drop(&mut self) {
        OPEN_FILES.fetch_sub(1, Ordering::Relaxed);
        if let FileKind::File(v) = core::mem::replace(&mut self.kind, FileKind::Console) {
            drop(v);
            if let Some(m) = root() {
                m.drop_unused();
            }
        }
    }
}

impl Mount {
    /// The vnode of `ino` (made on first use), whose size the caller knows.
    pub fn vnode(&self, ino: Ino, size: u64) -> Result<Arc<Vnode>, FsError> {
        let mut vnodes = self.vnodes.lock();
        if let Some(v) = vnodes.get(&ino) {
            return Ok(v.clone());
        }
        let pages = size.div_ceil(PAGE).max(1);
        let object = VmObject::try_new(ObjectKind::Vnode, pages, vm::kernel_env()).map_err(|_| FsError::NoMemory)?;
        let size = Arc::try_new(AtomicU64::new(size)).map_err(|_| FsError::NoMemory)?;
        let pager = Arc::try_new(VnodePager {
            ino,
            size: size.clone(),
            next_sequential: AtomicU64::new(u64::MAX),
            window: AtomicU64::new(AHEAD_INIT),
        })
        .map_err(|_| FsError::NoMemory)?;
        object.lock().set_pager(pager);
        let v = Arc::try_new(Vnode { ino, size, object, unlinked: core::sync::atomic::AtomicBool::new(false) })
            .map_err(|_| FsError::NoMemory)?;
        vnodes.insert(ino, v.clone());
        Ok(v)
    }

    /// Drops the vnodes nobody uses (no open file, no mapping), writing their
    /// dirty pages back first: their pages are freed.
    pub fn drop_unused(&self) {
        let unused: Vec<Arc<Vnode>> = {
            let mut vnodes = self.vnodes.lock();
            let ids: Vec<Ino> =
                vnodes.iter().filter(|(_, v)| Arc::strong_count(v) == 1 && v.object.ref_count() == 1).map(|(i, _)| *i).collect();
            ids.into_iter().filter_map(|i| vnodes.remove(&i)).collect()
        };
        for v in unused {
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
}

impl Vnode {
    /// Records a new file size (after a write or a truncate).
    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    /// Writes the dirty resident pages of byte range `[start, end)` back to
    /// the file (the vnode pager's put_pages): runs of consecutive dirty
    /// pages, up to [`PUT_CLUSTER`], go in one filesystem write, which ext2
    /// turns into one request per run of contiguous blocks. Each page is
    /// busied and write-protected in every mapping first, so a write through
    /// a mapping during the flush faults and dirties the page again.
    ///
    /// The filesystem lock (our vnode lock) is taken first and held
    /// throughout, while waiting for busy pages too: FreeBSD's order, vnode
    /// lock then page busy. A fault holds a busy page and only *tries* the
    /// lock (rule 8), so the two cannot deadlock. A failed write leaves the
    /// pages dirty, to be written again.
    pub fn flush(&self, start: u64, end: u64) -> Result<(), FsError> {
        let m = root().ok_or(FsError::NotFound)?;
        let mut fs = m.fs.lock();
        self.put_pages(&mut fs, start, end)
    }

    /// Writes the dirty pages of `[start, end)` back, then frees the clean
    /// ones (every mapping of them goes), all under one hold of the
    /// filesystem lock: the file's cached pages for that range are dropped
    /// without losing a write. Pages dirtied again meanwhile, and wired
    /// pages, stay. Returns the pages freed.
    pub fn flush_and_evict(&self, start: u64, end: u64) -> Result<usize, FsError> {
        let m = root().ok_or(FsError::NotFound)?;
        let mut fs = m.fs.lock();
        self.put_pages(&mut fs, start, end)?;
        Ok(self.object.remove_clean(start / PAGE, end.div_ceil(PAGE)))
    }

    fn put_pages(&self, fs: &mut Ext2<Disk>, start: u64, end: u64) -> Result<(), FsError> {
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
            if run.try_reserve_exact(PUT_CLUSTER as usize).is_err() {
                page.xunbusy();
                result = Err(FsError::NoMemory);
                break;
            }
            run.push(page);
            vm::pageout::dirty_run(env.mappings, &self.object, page, &mut run, page.pindex()..last, PUT_CLUSTER as usize, |_| {
                true
            });
            next = run[run.len() - 1].pindex() + 1;
            let written = write_run(fs, self.ino, self.size.load(Ordering::Acquire), &run);
            match written {
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

/// The vnode whose object is `object`, if it is a file's.
pub fn vnode_of(object: &Arc<VmObject>) -> Option<Arc<Vnode>> {
    let m = root()?;
    let vnodes = m.vnodes.lock();
    vnodes.values().find(|v| Arc::ptr_eq(&v.object, object)).cloned()
}

/// Writes everything back: the dirty pages of every vnode, then the
/// filesystem's metadata, marking it clean (before power-off).
pub fn sync_all() {
    let Some(m) = root() else { return };
    let vnodes: Vec<Arc<Vnode>> = m.vnodes.lock().values().cloned().collect();
    for v in vnodes {
        if !v.unlinked.load(Ordering::Acquire)
            && let Err(e) = v.flush(0, u64::MAX)
        {
            log::warn!("vfs: writing back inode {}: {e:?}", v.ino);
        }
    }
    m.drop_unused();
    if let Err(e) = m.fs.lock().sync() {
        log::warn!("vfs: sync: {e:?}");
    }
}

/// Drops unused vnodes and their pages (the test runner calls this before
/// it counts free pages).
pub fn drop_unused() {
    if let Some(m) = root() {
        m.drop_unused();
    }
}

mod tests {
    use ktest::ktest;
    use vm::map::Inherit;
    use vm::pmap::Prot;

    use super::*;

    /// The file the host checks after a boot on a copy of the image
    /// (tests/tests/kernel.rs, fs::kernel_writes_reach_the_image).
    const HOST_CHECKED: &[u8] = b"/tmp/written-by-the-kernel";

    /// Writes a file through the filesystem and then through a shared
    /// mapping of its vnode; power-off (sync_all) must bring both to disk.
    #[ktest]
    fn writes_through_a_mapping_reach_the_disk() {
        let m = root().expect("no root filesystem");
        let (dir, name) = (b"/tmp", b"written-by-the-kernel");
        let ino = {
            let mut fs = m.fs.lock();
            let dir = fs.lookup(dir).unwrap();
            let _ = fs.unlink(dir, name);
            let ino = fs.create(dir, name, 0o644).unwrap();
            let text: Vec<u8> = (0..2 * PAGE).map(|i| b'a' + (i % 26) as u8).collect();
            fs.write(ino, 0, &text).unwrap();
            ino
        };
        assert_eq!(m.fs.lock().lookup(HOST_CHECKED).unwrap(), ino);
        let v = m.vnode(ino, 2 * PAGE).unwrap();
        let space = crate::mm::vmspace::AddressSpace::new().unwrap();
        v.object.reference();
        let a = space
            .map
            .lock()
            .map(None, 2 * PAGE, Prot::RW, Prot::ALL, Inherit::Share, Some((v.object.clone(), 0)), false)
            .unwrap();
        {
            let _on = space.activate();
            // SAFETY: mapped shared read-write in the active space.
            unsafe {
                assert_eq!((a as *const u8).read_volatile(), b'a', "the mapping reads the file");
                (a as *mut u8).write_volatile(b'M');
                ((a + PAGE + 1) as *mut u8).write_volatile(b'N');
            }
        }
        drop(space);
        // Until written back, the file still has the old bytes on disk.
        let mut b = [0u8; 1];
        m.fs.lock().read(ino, 0, &mut b).unwrap();
        assert_eq!(b[0], b'a');
        let writes = PAGER_WRITES.load(Ordering::Relaxed);
        v.flush(0, u64::MAX).unwrap();
        assert_eq!(PAGER_WRITES.load(Ordering::Relaxed) - writes, 1, "two dirty pages in a row: one write");
        m.fs.lock().read(ino, PAGE + 1, &mut b).unwrap();
        assert_eq!(b[0], b'N', "flush wrote the mapped page back");
        drop(v);
        m.drop_unused();
    }

    /// Rule 8: the flush path (holding the filesystem lock, it writes dirty
    /// pages back and then drops the clean ones, waiting for busy pages)
    /// and the fault path (busy pages held, only *trying* the lock) run at
    /// once for 100 rounds without deadlock, and every round's data
    /// arrives. Each round's writes fault the evicted pages back in through
    /// the pager, so faults meet the held lock: some page-ins must have
    /// answered AGAIN and been retried.
    #[ktest(timeout = 180)]
    fn flush_and_faults_race_without_deadlock() {
        use alloc::sync::Arc;
        use core::sync::atomic::{AtomicBool, AtomicU64};

        const PAGES: u64 = 8;
        const ROUNDS: u64 = 100;
        let m = root().expect("no root filesystem");
        let name = b"race";
        let (ino, v) = scratch_file(name, &[0u8; (PAGES * PAGE) as usize]);
        let done = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let again = PAGER_AGAIN.load(Ordering::Relaxed);
        // One page per page-in, so that each page of a round faults on its
        // own (read-ahead would bring them all in with the first).
        READ_AHEAD.store(false, Ordering::Relaxed);
        // The faulting thread: writes the round number through a shared
        // mapping, page by page, and reads it back.
        let faulter = {
            let (v, done, rounds) = (v.clone(), done.clone(), rounds.clone());
            crate::kern::sched::spawn("faulter", move || {
                let (space, a) = map_file_shared(&v, Prot::RW);
                let _on = space.activate();
                for r in 1..=ROUNDS {
                    for i in 0..PAGES {
                        // SAFETY: mapped shared read-write in the active space.
                        unsafe {
                            let p = (a + i * PAGE) as *mut u64;
                            assert_eq!(p.read_volatile(), r - 1, "round {r} page {i}: the last round's data");
                            p.write_volatile(r);
                            assert_eq!(p.read_volatile(), r);
                        }
                        // The flusher runs between pages: while it writes
                        // one back (holding the lock), the next is faulted in.
                        crate::kern::sched::yield_now();
                    }
                    rounds.store(r, Ordering::SeqCst);
                }
                done.store(true, Ordering::SeqCst);
            })
            .unwrap()
        };
        // The flushing thread (this one): writes the pages back and evicts
        // them while the faults go on.
        let (mut flushes, mut evicted) = (0u64, 0usize);
        while !done.load(Ordering::SeqCst) {
            evicted += v.flush_and_evict(0, u64::MAX).unwrap();
            flushes += 1;
            crate::kern::sched::yield_now();
        }
        crate::kern::sched::join(faulter);
        READ_AHEAD.store(true, Ordering::Relaxed);
        assert_eq!(rounds.load(Ordering::SeqCst), ROUNDS);
        v.flush(0, u64::MAX).unwrap();
        let mut b = [0u8; 8];
        for i in 0..PAGES {
            m.fs.lock().read(ino, i * PAGE, &mut b).unwrap();
            assert_eq!(u64::from_le_bytes(b), ROUNDS, "page {i} on disk has the last round");
        }
        let again = PAGER_AGAIN.load(Ordering::Relaxed) - again;
        crate::kprintln!("flush and faults: {flushes} flushes evicted {evicted} pages; {again} page-ins answered AGAIN");
        assert!(evicted > 0, "the flusher never evicted a page");
        assert!(again > 0, "no fault met the held lock: the race was not exercised");
        drop(v);
        remove_scratch(name);
    }

    /// A file page written through a shared mapping reaches the disk even
    /// when writes fail: with every block write failing, a flush reports
    /// the error and the pages stay dirty and resident (nothing on disk
    /// changes, nothing is lost); with writes failing at random, retried
    /// flushes get every round's data to disk; after unmap, eviction and a
    /// new mapping, the data is read back from the disk.
    #[ktest(timeout = 120)]
    fn write_errors_keep_pages_dirty_until_written() {
        use vm::failpoint::{Action, BLK_WRITE};
        const PAGES: u64 = 8;
        let m = root().expect("no root filesystem");
        let name = b"write-errors";
        let (ino, v) = scratch_file(name, &[0u8; (PAGES * PAGE) as usize]);
        let on_disk = |i: u64| {
            let mut b = [0u8; 8];
            m.fs.lock().read(ino, i * PAGE + 8, &mut b).unwrap();
            u64::from_le_bytes(b)
        };
        let (space, a) = map_file_shared(&v, Prot::RW);
        let write_round = |r: u64| {
            let _on = space.activate();
            for i in 0..PAGES {
                // SAFETY: mapped shared read-write in the active space.
                unsafe { ((a + i * PAGE + 8) as *mut u64).write_volatile(r * 100 + i) };
            }
        };

        // Every write fails: the error comes back, the pages stay dirty.
        write_round(1);
        BLK_WRITE.set(Action::Always);
        assert!(v.flush(0, u64::MAX).is_err(), "a flush with every write failing succeeded");
        assert!(v.flush_and_evict(0, u64::MAX).is_err());
        BLK_WRITE.set(Action::Off);
        assert_eq!(v.object.lock().resident() as u64, PAGES, "dirty pages left the object");
        for i in 0..PAGES {
            let p = v.object.lock().lookup(i).unwrap();
            assert!(p.dirty() != 0, "page {i}: clean after a failed write");
            assert_eq!(on_disk(i), 0, "page {i}: reached the disk through a failed write");
        }
        v.flush(0, u64::MAX).unwrap();
        for i in 0..PAGES {
            assert_eq!(on_disk(i), 100 + i, "page {i}: not written once the disk worked");
        }

        // Writes fail at random: each round is flushed until it succeeds.
        BLK_WRITE.set(Action::Probability { ppm: 300_000, seed: 11 });
        let mut failures = 0;
        for r in 2..=41 {
            write_round(r);
            let mut tries = 0;
            while v.flush(0, u64::MAX).is_err() {
                failures += 1;
                tries += 1;
                assert!(tries < 100, "round {r}: a hundred failed flushes");
            }
            BLK_WRITE.set(Action::Off);
            for i in 0..PAGES {
                assert_eq!(on_disk(i), r * 100 + i, "round {r} page {i}");
            }
            BLK_WRITE.set(Action::Probability { ppm: 300_000, seed: 11 + r });
        }
        BLK_WRITE.set(Action::Off);
        assert!(failures > 0, "no write failed at 30 %");

        // Unmapped and evicted, then mapped again: the data is the disk's.
        drop(space);
        v.flush_and_evict(0, u64::MAX).unwrap();
        assert_eq!(v.object.lock().resident(), 0, "clean, unmapped pages stayed");
        let (space, a) = map_file(&v);
        {
            let _on = space.activate();
            for i in 0..PAGES {
                // SAFETY: mapped shared read-only in the active space.
                assert_eq!(unsafe { ((a + i * PAGE + 8) as *const u64).read_volatile() }, 4100 + i);
            }
        }
        crate::kprintln!("write errors: {failures} failed flushes over 40 rounds; nothing lost");
        drop(space);
        drop(v);
        remove_scratch(name);
    }

    /// Reads one byte of every page of `/data/seq32` through a mapping and
    /// returns the block requests the pager issued and the bytes' sum.
    fn read_mapped(path: &[u8]) -> (u64, u64) {
        let m = root().expect("no root filesystem");
        let (ino, size) = {
            let mut fs = m.fs.lock();
            let ino = fs.lookup(path).unwrap();
            (ino, fs.stat(ino).unwrap().size)
        };
        let v = m.vnode(ino, size).unwrap();
        assert_eq!(v.object.lock().resident(), 0, "the file's pages are not cached yet");
        let space = crate::mm::vmspace::AddressSpace::new().unwrap();
        v.object.reference();
        let a =
            space.map.lock().map(None, size, Prot::READ, Prot::READ, Inherit::Share, Some((v.object.clone(), 0)), false).unwrap();
        let before = PAGER_READS.load(Ordering::Relaxed);
        let mut sum = 0u64;
        {
            let _on = space.activate();
            for i in 0..size / PAGE {
                // SAFETY: mapped shared read-only in the active space.
                sum += unsafe { ((a + i * PAGE) as *const u8).read_volatile() } as u64;
            }
        }
        let requests = PAGER_READS.load(Ordering::Relaxed) - before;
        drop(space);
        drop(v);
        m.drop_unused();
        (requests, sum)
    }

    /// Read-ahead: a cold sequential read of a 32 MiB file through a
    /// mapping takes at least 8 times fewer block requests than one page
    /// per fault, and reads the same bytes.
    #[ktest(timeout = 120)]
    fn read_ahead_cuts_block_requests() {
        let (clustered, sum) = read_mapped(b"/data/seq32");
        READ_AHEAD.store(false, Ordering::Relaxed);
        let (single, sum2) = read_mapped(b"/data/seq32");
        READ_AHEAD.store(true, Ordering::Relaxed);
        assert_eq!(sum, sum2, "the same bytes either way");
        assert_eq!(single, (32 << 20) / PAGE, "one request per page without read-ahead");
        assert!(single >= 8 * clustered, "read-ahead: {clustered} requests against {single}");
        crate::kprintln!("read-ahead: {clustered} block requests for 8192 pages (without: {single})");
    }

    /// The vnode of `/data/seq32`.
    fn data_vnode() -> Arc<Vnode> {
        let m = root().expect("no root filesystem");
        let (ino, size) = {
            let mut fs = m.fs.lock();
            let ino = fs.lookup(b"/data/seq32").unwrap();
            (ino, fs.stat(ino).unwrap().size)
        };
        m.vnode(ino, size).unwrap()
    }

    /// Maps the file of `v` shared read-only in a new address space;
    /// returns the space and the mapping's address.
    fn map_file(v: &Vnode) -> (Arc<crate::mm::vmspace::AddressSpace>, u64) {
        map_file_shared(v, Prot::READ)
    }

    /// Maps the whole file of `v` shared with protection `prot` in a new
    /// address space; returns the space and the mapping's address.
    fn map_file_shared(v: &Vnode, prot: Prot) -> (Arc<crate::mm::vmspace::AddressSpace>, u64) {
        let space = crate::mm::vmspace::AddressSpace::new().unwrap();
        let size = v.size.load(Ordering::Acquire);
        v.object.reference();
        let a = space.map.lock().map(None, size, prot, Prot::ALL, Inherit::Share, Some((v.object.clone(), 0)), false).unwrap();
        (space, a)
    }

    /// Makes `/tmp/<name>` afresh with `bytes` in it; returns its inode and
    /// vnode.
    fn scratch_file(name: &[u8], bytes: &[u8]) -> (Ino, Arc<Vnode>) {
        let m = root().expect("no root filesystem");
        let ino = {
            let mut fs = m.fs.lock();
            let dir = fs.lookup(b"/tmp").unwrap();
            let _ = fs.unlink(dir, name);
            let ino = fs.create(dir, name, 0o644).unwrap();
            fs.write(ino, 0, bytes).unwrap();
            ino
        };
        (ino, m.vnode(ino, bytes.len() as u64).unwrap())
    }

    /// Unlinks `/tmp/<name>` and drops the unused vnodes.
    fn remove_scratch(name: &[u8]) {
        let m = root().unwrap();
        let dir = m.fs.lock().lookup(b"/tmp").unwrap();
        m.unlink(dir, name).unwrap();
        m.drop_unused();
    }

    /// A page index whose byte offset does not fit in 64 bits (2^52 and
    /// up; mmap refuses such ranges, but an object may be mapped at any
    /// index) is past the end of the file: the fault is Bad (SIGBUS), not
    /// an overflow in the pager.
    #[ktest]
    fn a_page_index_past_every_offset_is_bad() {
        use vm::fault::{FaultError, fault};
        let v = data_vnode();
        let space = crate::mm::vmspace::AddressSpace::new().unwrap();
        v.object.reference();
        let at = Some((v.object.clone(), (1u64 << 52) - 1));
        let a = space.map.lock().map(None, 2 * PAGE, Prot::READ, Prot::READ, Inherit::Copy, at, true).unwrap();
        assert_eq!(fault(&space.map, a, Prot::READ, false), Err(FaultError::Bad), "index 2^52 - 1");
        assert_eq!(fault(&space.map, a + PAGE, Prot::READ, false), Err(FaultError::Bad), "index 2^52");
        drop(space);
        drop(v);
        root().unwrap().drop_unused();
    }

    /// Rule 6: when the disk fails every read, a fault gets an I/O error,
    /// and the page and every read-ahead page allocated for it are freed:
    /// none is left resident, invalid, unbusied or on no queue.
    #[ktest(timeout = 60)]
    fn read_errors_free_every_read_ahead_page() {
        use vm::failpoint::{Action, BLK_READ};
        let v = data_vnode();
        let (space, a) = map_file(&v);
        BLK_READ.set(Action::Always);
        for i in [0u64, 1, 100, 2047] {
            assert_eq!(vm::fault::fault(&space.map, a + i * PAGE, Prot::READ, false), Err(vm::fault::FaultError::Io));
            assert_eq!(v.object.lock().resident(), 0, "a page of a failed read stayed in the object");
        }
        BLK_READ.set(Action::Off);
        // The disk works again: the same faults succeed.
        assert!(vm::fault::fault(&space.map, a + 100 * PAGE, Prot::READ, false).is_ok());
        assert!(v.object.lock().resident() > 1, "read-ahead came with it");
        let v2 = vm::invariants::check(vm::global());
        assert!(v2.is_empty(), "{v2:?}");
        drop(space);
        drop(v);
        root().unwrap().drop_unused();
    }

    /// With reads failing 5 % of the time, 1,000 rounds of map, read and
    /// unmap: every failure is reported as an I/O error, the rest read the
    /// file's bytes, and no page is leaked (the runner counts them after).
    #[ktest(timeout = 300)]
    fn a_thousand_rounds_with_failing_reads() {
        use vm::failpoint::{Action, BLK_READ};
        let v = data_vnode();
        BLK_READ.set(Action::Probability { ppm: 50_000, seed: 7 });
        let (mut ok, mut failed) = (0u32, 0u32);
        for round in 0..1000u64 {
            let (space, a) = map_file(&v);
            let page = (round * 37) % 8192;
            match vm::fault::fault(&space.map, a + page * PAGE, Prot::READ, false) {
                Ok(_) => {
                    let _on = space.activate();
                    // SAFETY: mapped read-only in the active space, and the
                    // fault above made the page resident and mapped.
                    let b = unsafe { ((a + page * PAGE + 5) as *const u8).read_volatile() };
                    let i = (page * PAGE + 5) as u32;
                    let want = i.wrapping_mul(2_654_435_761).rotate_right(13) as u8 ^ (i >> 12) as u8;
                    assert_eq!(b, want, "round {round}: the file's byte");
                    ok += 1;
                }
                Err(vm::fault::FaultError::Io) => failed += 1,
                Err(e) => panic!("round {round}: {e:?}"),
            }
            drop(space);
            // Cold again for the next round.
            v.invalidate(0, u64::MAX);
            assert_eq!(v.object.lock().resident(), 0);
        }
        BLK_READ.set(Action::Off);
        drop(v);
        root().unwrap().drop_unused();
        assert_eq!(ok + failed, 1000);
        assert!(failed > 10 && ok > 800, "{failed} failures, {ok} reads");
        crate::kprintln!("failing reads: {failed} of 1000 rounds failed with an I/O error, {ok} read the file");
    }
}

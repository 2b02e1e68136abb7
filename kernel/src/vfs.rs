//! The mounted filesystem and open files.
//!
//! One ext2 filesystem is the root, over a block device (the virtio disk),
//! behind one sleeping lock: every filesystem call holds it across its I/O.
//! An open file is an inode and an offset ([`OpenFile`]); processes hold
//! them in their descriptor tables, shared across `fork` as on Linux. The
//! console is an open file too (descriptors 0, 1 and 2).
//!
//! Each file in use has a vnode ([`Vnode`]) owning one vnode-kind VM
//! object, whose pager ([`VnodePager`]) reads pages from the file: `mmap`
//! maps that object, shared or copy-on-write. Dirty pages go back to the
//! file by [`Vnode::flush`] (msync, fsync, and when an unused vnode is
//! dropped). `read` and `write` go through the filesystem and keep the
//! object coherent: resident pages of the range are written back first,
//! and a write drops them afterwards so that every mapping faults the new
//! data in. (Reading and writing through the object's pages, and
//! read-ahead in clusters, come next.)
//!
//! The page fault path only *tries* the filesystem lock (rule 8): a fault
//! holds a busy page, and a flush holds the lock while it waits for busy
//! pages; the pager answers AGAIN and the fault retries.
//!
//! Unlinking a file that is still open keeps its inode until the last close
//! (ext2's `unlink_keep` then `release`), as Unix does.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, Ordering};

use pager::block::BlockDevice;
use pager::ext2::{Ext2, FsError, Ino};
use spin::{Mutex, Once};
use vm::object::{ObjectKind, PagerResult, VmObject};
use vm::page::Page;

use crate::sleeplock::SleepLock;

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

/// The pager of a vnode's object: reads pages from the file.
struct VnodePager {
    ino: Ino,
    size: Arc<AtomicU64>,
}

impl vm::object::Pager for VnodePager {
    fn name(&self) -> &'static str {
        "vnode"
    }

    fn has_page(&self, _pindex: u64) -> bool {
        // Past the end, get_page answers BAD (SIGBUS), never zero fill.
        true
    }

    fn get_page(&self, _object: &VmObject, page: &'static Page) -> PagerResult {
        let off = page.pindex() * PAGE;
        if off >= self.size.load(Ordering::Acquire) {
            return PagerResult::Bad;
        }
        let Some(m) = root() else { return PagerResult::Error };
        // Rule 8: never wait for the filesystem with a busy page.
        let Some(mut fs) = m.fs.try_lock() else { return PagerResult::Again };
        let Some(dst) = vm::global().page_addr(page) else { return PagerResult::Error };
        // SAFETY: the page is exclusively busy for this read; its direct-map
        // address covers PAGE bytes.
        let buf = unsafe { core::slice::from_raw_parts_mut(dst, PAGE as usize) };
        match fs.read(self.ino, off, buf) {
            Ok(n) => {
                // The part of the last page past the end of the file reads zero.
                buf[n..].fill(0);
                page.set_all_valid();
                PagerResult::Ok
            }
            Err(e) => {
                log::warn!("vnode pager: inode {} page {}: {e:?}", self.ino, page.pindex());
                PagerResult::Error
            }
        }
    }
}

static ROOT: Once<Mount> = Once::new();

/// Mounts `disk` as the root filesystem.
pub fn mount_root(disk: Disk) -> Result<(), FsError> {
    let mut fs = Ext2::mount(disk)?;
    fs.set_clock(|| (crate::time::realtime_ns() / 1_000_000_000) as u32);
    log::info!("vfs: root filesystem mounted: ext2, {}-byte blocks", fs.block_size());
    ROOT.call_once(|| Mount {
        fs: SleepLock::new(fs),
        vnodes: Mutex::new(BTreeMap::new()),
    });
    Ok(())
}

/// The root filesystem, if one is mounted.
pub fn root() -> Option<&'static Mount> {
    ROOT.get()
}

/// What an open file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Console,
    File(Ino),
    Dir(Ino),
}

/// An open file: what it is, how it was opened, and its offset (shared by
/// every descriptor that refers to it).
pub struct OpenFile {
    pub kind: FileKind,
    /// A regular file's vnode.
    pub vnode: Option<Arc<Vnode>>,
    pub readable: bool,
    pub writable: bool,
    pub append: bool,
    /// Held across the I/O of a read or write (a sleeping lock).
    pub offset: SleepLock<u64>,
}

impl OpenFile {
    pub fn console() -> Arc<OpenFile> {
        Arc::new(OpenFile {
            kind: FileKind::Console,
            vnode: None,
            readable: true,
            writable: true,
            append: false,
            offset: SleepLock::new(0),
        })
    }

    /// Opens inode `ino` of the root filesystem (a regular file of `size`
    /// bytes, or a directory).
    pub fn open(ino: Ino, dir: bool, size: u64, readable: bool, writable: bool, append: bool) -> Result<Arc<OpenFile>, FsError> {
        let m = root().ok_or(FsError::NotFound)?;
        let vnode = if dir { None } else { Some(m.vnode(ino, size)?) };
        let kind = if dir { FileKind::Dir(ino) } else { FileKind::File(ino) };
        Ok(Arc::new(OpenFile { kind, vnode, readable, writable, append, offset: SleepLock::new(0) }))
    }

    pub fn ino(&self) -> Option<Ino> {
        match self.kind {
            FileKind::File(i) | FileKind::Dir(i) => Some(i),
            FileKind::Console => None,
        }
    }
}

impl Drop for OpenFile {
    /// The last close of a file nobody maps drops its vnode (an unlinked
    /// one's inode is freed then).
    fn drop(&mut self) {
        if self.vnode.take().is_some() {
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
        let object = VmObject::try_new(ObjectKind::Vnode, pages, vm::kernel_env()).map_err(|_| FsError::NoSpace)?;
        let size = Arc::new(AtomicU64::new(size));
        object.lock().set_pager(Arc::new(VnodePager { ino, size: size.clone() }));
        let v = Arc::new(Vnode { ino, size, object, unlinked: core::sync::atomic::AtomicBool::new(false) });
        vnodes.insert(ino, v.clone());
        Ok(v)
    }

    /// Drops the vnodes nobody uses (no open file, no mapping), writing their
    /// dirty pages back first: their pages are freed.
    pub fn drop_unused(&self) {
        let unused: Vec<Arc<Vnode>> = {
            let mut vnodes = self.vnodes.lock();
            let ids: Vec<Ino> = vnodes
                .iter()
                .filter(|(_, v)| Arc::strong_count(v) == 1 && v.object.ref_count() == 1)
                .map(|(i, _)| *i)
                .collect();
            ids.into_iter().filter_map(|i| vnodes.remove(&i)).collect()
        };
        for v in unused {
            let unlinked = v.unlinked.load(Ordering::Acquire);
            if !unlinked {
                if let Err(e) = v.flush(0, u64::MAX) {
                    log::warn!("vfs: writing back inode {}: {e:?}", v.ino);
                }
            }
            let ino = v.ino;
            let Ok(v) = Arc::try_unwrap(v) else { continue };
            v.object.deallocate();
            if unlinked {
                if let Err(e) = self.fs.lock().release(ino) {
                    log::warn!("vfs: freeing unlinked inode {ino}: {e:?}");
                }
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
    /// the file. Each page is busied and write-protected in every mapping
    /// first, so a write through a mapping during the flush faults and
    /// dirties the page again.
    pub fn flush(&self, start: u64, end: u64) -> Result<(), FsError> {
        let m = root().ok_or(FsError::NotFound)?;
        let env = *self.object.env();
        let (first, last) = (start / PAGE, end.div_ceil(PAGE));
        let mut next = first;
        let mut result = Ok(());
        loop {
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
            if page.dirty() != 0 || env.mappings.is_modified(page) {
                let off = page.pindex() * PAGE;
                let size = self.size.load(Ordering::Acquire);
                if off < size {
                    let len = (size - off).min(PAGE) as usize;
                    let src = env.pm.page_addr(page).ok_or(FsError::Corrupt("page not addressable"))?;
                    // SAFETY: the page is exclusively busy; `len` <= PAGE.
                    let bytes = unsafe { core::slice::from_raw_parts(src, len) };
                    match m.fs.lock().write(self.ino, off, bytes) {
                        Ok(_) => {
                            page.undirty();
                            env.mappings.clear_modify(page);
                        }
                        Err(e) => result = Err(e),
                    }
                } else {
                    page.undirty();
                    env.mappings.clear_modify(page);
                }
            }
            page.xunbusy();
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
        if !v.unlinked.load(Ordering::Acquire) {
            if let Err(e) = v.flush(0, u64::MAX) {
                log::warn!("vfs: writing back inode {}: {e:?}", v.ino);
            }
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

/// Reads the whole regular file at `path` (for `execve`).
pub fn read_whole(path: &[u8], limit: usize) -> Result<crate::bytes::AlignedBytes, FsError> {
    let m = root().ok_or(FsError::NotFound)?;
    let mut fs = m.fs.lock();
    let ino = fs.lookup(path)?;
    let st = fs.stat(ino)?;
    if st.mode & 0o170000 != 0o100000 {
        return Err(FsError::IsDir);
    }
    if st.size as usize > limit {
        return Err(FsError::FileTooBig);
    }
    let mut buf = crate::bytes::AlignedBytes::zeroed(st.size as usize).ok_or(FsError::NoSpace)?;
    let n = fs.read(ino, 0, buf.as_mut_slice())?;
    buf.truncate(n);
    Ok(buf)
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
        let space = crate::vmspace::AddressSpace::new().unwrap();
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
        v.flush(0, u64::MAX).unwrap();
        m.fs.lock().read(ino, PAGE + 1, &mut b).unwrap();
        assert_eq!(b[0], b'N', "flush wrote the mapped page back");
        drop(v);
        m.drop_unused();
    }
}

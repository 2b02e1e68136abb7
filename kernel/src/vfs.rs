//! The mounted filesystem and open files.
//!
//! One ext2 filesystem is the root, over a block device (the virtio disk),
//! behind one sleeping lock: every filesystem call holds it across its I/O.
//! An open file is an inode and an offset ([`OpenFile`]); processes hold
//! them in their descriptor tables, shared across `fork` as on Linux. The
//! console is an open file too (descriptors 0, 1 and 2).
//!
//! File data goes straight through the filesystem for now; the vnode pager
//! (a VM object per file, read and written page by page) comes next, and
//! `read`/`write` will then go through the same pages as `mmap`.
//!
//! Unlinking a file that is still open keeps its inode until the last close
//! (ext2's `unlink_keep` then `release`), as Unix does.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;

use pager::block::BlockDevice;
use pager::ext2::{Ext2, FsError, Ino};
use spin::{Mutex, Once};

use crate::sleeplock::SleepLock;

/// A block device the filesystem can own.
pub type Disk = Box<dyn BlockDevice + Send>;

/// The root filesystem.
pub struct Mount {
    pub fs: SleepLock<Ext2<Disk>>,
    /// Open files per inode, and whether the inode was unlinked while open
    /// (then the last close frees it). (fs lock)
    open: Mutex<BTreeMap<Ino, (u32, bool)>>,
}

static ROOT: Once<Mount> = Once::new();

/// Mounts `disk` as the root filesystem.
pub fn mount_root(disk: Disk) -> Result<(), FsError> {
    let mut fs = Ext2::mount(disk)?;
    fs.set_clock(|| (crate::time::realtime_ns() / 1_000_000_000) as u32);
    log::info!("vfs: root filesystem mounted: ext2, {}-byte blocks", fs.block_size());
    ROOT.call_once(|| Mount { fs: SleepLock::new(fs), open: Mutex::new(BTreeMap::new()) });
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
    pub readable: bool,
    pub writable: bool,
    pub append: bool,
    pub offset: Mutex<u64>,
}

impl OpenFile {
    pub fn console() -> Arc<OpenFile> {
        Arc::new(OpenFile { kind: FileKind::Console, readable: true, writable: true, append: false, offset: Mutex::new(0) })
    }

    /// Opens inode `ino` of the root filesystem.
    pub fn open(ino: Ino, dir: bool, readable: bool, writable: bool, append: bool) -> Arc<OpenFile> {
        if let Some(m) = root() {
            x86_64::instructions::interrupts::without_interrupts(|| m.open.lock().entry(ino).or_insert((0, false)).0 += 1);
        }
        let kind = if dir { FileKind::Dir(ino) } else { FileKind::File(ino) };
        Arc::new(OpenFile { kind, readable, writable, append, offset: Mutex::new(0) })
    }

    pub fn ino(&self) -> Option<Ino> {
        match self.kind {
            FileKind::File(i) | FileKind::Dir(i) => Some(i),
            FileKind::Console => None,
        }
    }
}

impl Drop for OpenFile {
    /// The last close of an unlinked file frees its inode.
    fn drop(&mut self) {
        let (Some(ino), Some(m)) = (self.ino(), root()) else { return };
        let free = x86_64::instructions::interrupts::without_interrupts(|| {
            let mut open = m.open.lock();
            let e = open.get_mut(&ino)?;
            e.0 -= 1;
            if e.0 == 0 {
                let unlinked = e.1;
                open.remove(&ino);
                return Some(unlinked);
            }
            None
        });
        if free == Some(true) {
            if let Err(e) = m.fs.lock().release(ino) {
                log::warn!("vfs: freeing unlinked inode {ino}: {e:?}");
            }
        }
    }
}

impl Mount {
    /// Unlinks `name` in `dir`: a file still open keeps its inode until the
    /// last close.
    pub fn unlink(&self, dir: Ino, name: &[u8]) -> Result<(), FsError> {
        let mut fs = self.fs.lock();
        let ino = fs.lookup_in(dir, name)?;
        let is_open = x86_64::instructions::interrupts::without_interrupts(|| {
            let mut open = self.open.lock();
            match open.get_mut(&ino) {
                Some(e) => {
                    e.1 = true;
                    true
                }
                None => false,
            }
        });
        if is_open { fs.unlink_keep(dir, name).map(|_| ()) } else { fs.unlink(dir, name) }
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

//! The mounted filesystem and open files.
//!
//! One ext2 filesystem is the root, over a block device (the virtio disk):
//! a `pager::vnode::Mount`, whose files in use are vnodes, each with the VM
//! object of its pages and that object's vnode pager (`pager/src/vnode`).
//! This module mounts it and keeps the kernel's side of files: an open
//! file is an inode and an offset ([`OpenFile`]); processes hold them in
//! their descriptor tables, shared across `fork` as on Linux. The console
//! is an open file too (descriptors 0, 1 and 2).
//!
//! `read` and `write` go through the filesystem and keep the file's object
//! coherent: resident pages of the range are written back first, and a
//! write drops them afterwards so that every mapping faults the new data
//! in.

pub mod console;
pub mod pipe;
pub mod procfs;

use alloc::sync::Arc;

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pager::ext2::{FsError, Ino};
pub use pager::vnode::{Disk, Mount, Vnode};
use spin::Once;
use vm::object::VmObject;
use vm::sync::SleepLock;
use vm::witness::order;

const PAGE: u64 = vm::PAGE_SIZE as u64;

static ROOT: Once<Arc<Mount>> = Once::new();

/// Mounts `disk` as the root filesystem.
pub fn mount_root(disk: Disk) -> Result<(), FsError> {
    let m = Mount::new(disk, vm::kernel_env(), || (crate::kern::time::realtime_ns() / 1_000_000_000) as u32)?;
    log::info!("vfs: root filesystem mounted: ext2, {}-byte blocks", m.fs.lock().block_size());
    ROOT.call_once(|| m);
    Ok(())
}

/// The root filesystem, if one is mounted.
pub fn root() -> Option<&'static Mount> {
    ROOT.get().map(|m| &**m)
}

/// What an open file is: a regular file is its vnode.
#[derive(Clone)]
pub enum FileKind {
    Console,
    File(Arc<Vnode>),
    Dir(Ino),
    /// A read-only file the kernel wrote when it was opened (`/proc/vmstat`,
    /// see [`procfs`]): its bytes.
    Text(Arc<[u8]>),
    /// A /proc file of 64-bit words read at their offsets: a pagemap, or
    /// `/proc/kpageflags` ([`procfs::Words`]).
    Words(procfs::Words),
    /// `/proc/PID/mem` of the process with this pid ([`procfs::mem`]).
    Mem(u64),
    /// One end of a pipe ([`pipe`]).
    Pipe(Arc<pipe::PipeEnd>),
    /// A process (`pidfd_open`): its `proc::Process`, held as `Any` (the
    /// process table holds open files, not the other way round).
    Pid(Arc<dyn core::any::Any + Send + Sync>),
}

/// An open file: what it is, how it was opened, and its offset (shared by
/// every descriptor that refers to it).
pub struct OpenFile {
    pub kind: FileKind,
    pub readable: bool,
    pub writable: bool,
    pub append: bool,
    /// `O_NONBLOCK`, which `fcntl(F_SETFL)` may change. (A; Relaxed: a
    /// flag read at each call, guarding nothing else.)
    pub nonblock: AtomicBool,
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
        Arc::new(OpenFile {
            kind: FileKind::Console,
            readable: true,
            writable: true,
            append: false,
            nonblock: AtomicBool::new(false),
            offset: SleepLock::ranked(0, &order::FILE_OFFSET),
        })
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
        Arc::try_new(OpenFile {
            kind,
            readable,
            writable,
            append,
            nonblock: AtomicBool::new(false),
            offset: SleepLock::ranked(0, &order::FILE_OFFSET),
        })
        .map_err(|_| FsError::NoMemory)
    }

    /// A read-only file of `bytes`.
    pub fn text(bytes: Arc<[u8]>) -> Result<Arc<OpenFile>, FsError> {
        OpenFile::new(FileKind::Text(bytes), true, false, false)
    }

    /// A /proc file of words (a pagemap, kpageflags), read-only.
    pub fn words(w: procfs::Words) -> Result<Arc<OpenFile>, FsError> {
        OpenFile::new(FileKind::Words(w), true, false, false)
    }

    /// The two ends of a new pipe: its read end and its write end.
    pub fn pipe() -> Result<(Arc<OpenFile>, Arc<OpenFile>), i64> {
        let (r, w) = pipe::new()?;
        let too_many = |e| if e == FsError::TooManyOpen { crate::syscall::errno::ENFILE } else { crate::syscall::errno::ENOMEM };
        let r = OpenFile::new(FileKind::Pipe(Arc::try_new(r).map_err(|_| crate::syscall::errno::ENOMEM)?), true, false, false)
            .map_err(too_many)?;
        let w = OpenFile::new(FileKind::Pipe(Arc::try_new(w).map_err(|_| crate::syscall::errno::ENOMEM)?), false, true, false)
            .map_err(too_many)?;
        Ok((r, w))
    }

    /// A descriptor of a process (`pidfd_open`), read-only.
    pub fn pidfd(p: Arc<dyn core::any::Any + Send + Sync>) -> Result<Arc<OpenFile>, FsError> {
        OpenFile::new(FileKind::Pid(p), true, false, false)
    }

    /// The memory of process `pid`.
    pub fn mem(pid: u64, readable: bool, writable: bool) -> Result<Arc<OpenFile>, FsError> {
        OpenFile::new(FileKind::Mem(pid), readable, writable, false)
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
            FileKind::Console
            | FileKind::Text(_)
            | FileKind::Words(_)
            | FileKind::Mem(_)
            | FileKind::Pipe(_)
            | FileKind::Pid(_) => None,
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

/// The vnode whose object is `object`, if it is a file's.
pub fn vnode_of(object: &Arc<VmObject>) -> Option<Arc<Vnode>> {
    root()?.vnode_of(object)
}

/// Writes everything back: the dirty pages of every vnode, then the
/// filesystem's metadata, marking it clean (before power-off).
pub fn sync_all() {
    if let Some(m) = root() {
        m.sync();
    }
}

/// Names `v` by `path`, as it was opened or run, for the names of its
/// mappings: a relative path is taken from the root, the only working
/// directory there is.
pub fn name_vnode(v: &Vnode, path: &[u8]) {
    if path.first() == Some(&b'/') {
        v.set_name(path);
        return;
    }
    let mut abs = alloc::vec::Vec::new();
    if abs.try_reserve_exact(path.len() + 1).is_ok() {
        abs.push(b'/');
        abs.extend_from_slice(path.strip_prefix(b"./").unwrap_or(path));
        v.set_name(&abs);
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
    use alloc::vec::Vec;

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
        let writes = m.stats.writes.load(Ordering::Relaxed);
        v.flush(0, u64::MAX).unwrap();
        assert_eq!(m.stats.writes.load(Ordering::Relaxed) - writes, 1, "two dirty pages in a row: one write");
        m.fs.lock().read(ino, PAGE + 1, &mut b).unwrap();
        assert_eq!(b[0], b'N', "flush wrote the mapped page back");
        drop(v);
        m.drop_unused();
    }
}

//! Program images: bytes in an 8-byte aligned buffer (the ELF parser reads
//! headers in place), built into the kernel or handed in by the host; or a
//! file, of which only the headers are read and the rest is paged in from
//! its vnode.

use alloc::sync::Arc;
use alloc::vec::Vec;

use pager::ext2::FsError;

use crate::kern::kmem::KBuf;

/// Bytes in an 8-byte aligned buffer: a heap block when small, pages in
/// kernel virtual memory ([`KBuf`]) past [`HEAP_BYTES_MAX`], so that a
/// large file (a program handed in by the host) needs neither a heap block
/// nor physically contiguous memory.
pub struct AlignedBytes {
    store: Store,
    len: usize,
}

enum Store {
    Heap(Vec<u64>),
    Pages(KBuf),
}

/// The largest buffer kept in the heap.
pub const HEAP_BYTES_MAX: usize = 64 << 10;

impl AlignedBytes {
    /// `len` zero bytes; None if memory cannot hold them.
    pub fn zeroed(len: usize) -> Option<AlignedBytes> {
        let store = if len > HEAP_BYTES_MAX {
            Store::Pages(KBuf::zeroed(len).ok()?)
        } else {
            let mut words: Vec<u64> = Vec::new();
            words.try_reserve_exact(len.div_ceil(8)).ok()?;
            words.resize(len.div_ceil(8), 0);
            Store::Heap(words)
        };
        Some(AlignedBytes { store, len })
    }

    pub fn as_slice(&self) -> &[u8] {
        match &self.store {
            // SAFETY: `words` holds at least `len` initialised bytes.
            Store::Heap(words) => unsafe { core::slice::from_raw_parts(words.as_ptr() as *const u8, self.len) },
            Store::Pages(b) => &b.as_slice()[..self.len],
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.store {
            // SAFETY: as in as_slice, exclusively.
            Store::Heap(words) => unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, self.len) },
            Store::Pages(b) => &mut b.as_mut_slice()[..self.len],
        }
    }

    /// Drops bytes past `len`.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keeps the bytes for the rest of the kernel's life.
    pub fn leak(self) -> &'static [u8] {
        let len = self.len;
        match self.store {
            Store::Heap(words) => {
                let words: &'static mut [u64] = words.leak();
                // SAFETY: as in as_slice; the buffer is never freed.
                unsafe { core::slice::from_raw_parts(words.as_ptr() as *const u8, len) }
            }
            Store::Pages(b) => &b.leak()[..len],
        }
    }
}

/// A program: its bytes, built into the kernel, or a file on the root
/// filesystem (with its first bytes, which hold the ELF headers).
#[derive(Clone)]
pub enum Image {
    Static(&'static [u8]),
    File { vnode: Arc<crate::fs::Vnode>, head: Arc<AlignedBytes>, len: u64 },
}

impl Image {
    /// The bytes in memory: all of them, or a file's head.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Image::Static(b) => b,
            Image::File { head, .. } => head.as_slice(),
        }
    }

    /// The program's size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Image::Static(b) => b.len() as u64,
            Image::File { len, .. } => *len,
        }
    }

    /// Copies bytes `[off, off + buf.len())` of the program into `buf`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<(), ()> {
        match self {
            Image::Static(b) => {
                let src = b.get(off as usize..off as usize + buf.len()).ok_or(())?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Image::File { vnode, .. } => {
                let m = crate::fs::root().ok_or(())?;
                let n = m.fs.lock().read(vnode.ino, off, buf).map_err(|_| ())?;
                if n == buf.len() { Ok(()) } else { Err(()) }
            }
        }
    }
}

/// The program at `path` for `execve`: its vnode (the loader maps its
/// pages from the vnode's object, so text is paged in on demand) and its
/// first bytes, which hold the ELF headers.
pub fn program(path: &[u8]) -> Result<Image, FsError> {
    /// Enough for the ELF header and the program headers of any sane binary.
    const HEAD: u64 = 16 * 1024;
    let m = crate::fs::root().ok_or(FsError::NotFound)?;
    let (ino, st) = {
        let mut fs = m.fs.lock();
        let ino = fs.lookup(path)?;
        (ino, fs.stat(ino)?)
    };
    if st.mode & 0o170000 != 0o100000 {
        return Err(FsError::IsDir);
    }
    let vnode = m.vnode(ino, st.size)?;
    crate::fs::name_vnode(&vnode, path);
    // The head through the vnode's own coherence rule: mapped writes first.
    vnode.flush(0, HEAD)?;
    let mut head = AlignedBytes::zeroed(st.size.min(HEAD) as usize).ok_or(FsError::NoSpace)?;
    let n = m.fs.lock().read(ino, 0, head.as_mut_slice())?;
    head.truncate(n);
    Ok(Image::File { vnode, head: Arc::new(head), len: st.size })
}

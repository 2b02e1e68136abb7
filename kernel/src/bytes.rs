//! Program images: bytes in an 8-byte aligned buffer (the ELF parser reads
//! headers in place), either built into the kernel or read at run time.

use alloc::sync::Arc;
use alloc::vec::Vec;

/// Bytes in an 8-byte aligned buffer.
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes; None if the heap cannot hold them.
    pub fn zeroed(len: usize) -> Option<AlignedBytes> {
        let mut words: Vec<u64> = Vec::new();
        words.try_reserve_exact(len.div_ceil(8)).ok()?;
        words.resize(len.div_ceil(8), 0);
        Some(AlignedBytes { words, len })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { core::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, exclusively.
        unsafe { core::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }

    /// Drops bytes past `len`.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keeps the bytes for the rest of the kernel's life.
    pub fn leak(self) -> &'static [u8] {
        let len = self.len;
        let words: &'static mut [u64] = self.words.leak();
        // SAFETY: as in as_slice; the buffer is never freed.
        unsafe { core::slice::from_raw_parts(words.as_ptr() as *const u8, len) }
    }
}

/// A program's bytes: built into the kernel, or read from a file and shared
/// by everything that maps them (freed with the last user).
#[derive(Clone)]
pub enum Image {
    Static(&'static [u8]),
    Shared(Arc<AlignedBytes>),
}

impl Image {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Image::Static(b) => b,
            Image::Shared(b) => b.as_slice(),
        }
    }
}

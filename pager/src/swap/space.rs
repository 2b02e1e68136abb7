//! Swap space: the disk the swap pager pages out to, and the blist that
//! hands out its blocks (FreeBSD's `swdevt` and `swblk_t` allocation, with
//! one device).
//!
//! A swap block is one page: block `b` is the 4 KiB at sector `8 * b`.
//! The swap pager allocates a run of blocks for a cluster of pages, writes
//! the cluster with one request ([`SwapSpace::write_pages`]), and frees
//! blocks one by one as their pages are dirtied again or freed (rule 14:
//! a dirtied swap-backed page gives up its slot). The blist's cursor makes
//! consecutive page-outs land in consecutive blocks.
//!
//! Locking: (C) set at [`SwapSpace::new`], constant after; (K) the
//! swap-space lock, the machine's `L` (the kernel's interrupt-safe spin
//! lock, so that its holder is not preempted), for blist operations only:
//! never held across I/O, never taken in an interrupt handler. (A) atomic.
//! The I/O helpers take no lock: the caller owns the blocks it reads and
//! writes.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::blist::{Blist, BlistError};
use crate::block::{BlockDevice, BlockError, SECTOR_SIZE};
use crate::sync::Lock;

const PAGE_SIZE: u64 = vm::PAGE_SIZE as u64;

/// Sectors per swap block (one page).
pub const SECTORS_PER_PAGE: u64 = PAGE_SIZE / SECTOR_SIZE as u64;

/// Why a swap operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapError {
    /// No memory for the blist of a device this large (at
    /// [`SwapSpace::new`]).
    NoMemory,
    /// The device is larger than a blist manages.
    TooLarge { pages: u64 },
    /// A buffer that is not a whole number of pages.
    BadLength(usize),
    /// Blocks past the end of the swap space.
    OutOfRange { block: u64, count: u64, pages: u64 },
    /// The disk failed the request (EIO to whoever paged).
    Io(BlockError),
}

impl From<BlistError> for SwapError {
    fn from(e: BlistError) -> SwapError {
        match e {
            BlistError::NoMemory => SwapError::NoMemory,
            BlistError::TooLarge(pages) => SwapError::TooLarge { pages },
        }
    }
}

/// What the swap pagers of a swap space have done. (A) every field.
#[derive(Default)]
pub struct SwapStats {
    /// Pages written out and read in, and the requests that carried them.
    pub pages_out: AtomicU64,
    pub pages_in: AtomicU64,
    pub writes: AtomicU64,
    pub reads: AtomicU64,
    /// Page-outs that found no swap block free.
    pub full: AtomicU64,
    /// Page-outs put off because no metadata could be allocated.
    pub no_meta: AtomicU64,
    /// Runs transferred a page at a time for want of a buffer.
    pub unbuffered: AtomicU64,
    /// Metadata blocks in use, all objects together.
    pub swblks: AtomicU64,
}

/// A swap device and the allocation of its blocks; `L` is the lock of the
/// block map (see the module docs).
pub struct SwapSpace<L: Lock<Blist>> {
    /// The disk. (C)
    disk: Box<dyn BlockDevice + Send + Sync>,
    /// Its size in pages (blocks); a partial page at the end is not used. (C)
    pages: u64,
    /// The pagers read ahead and behind a faulting page (a benchmark
    /// turns it off to compare). (A)
    read_ahead: AtomicBool,
    /// What the pagers did. (A)
    pub stats: SwapStats,
    /// Which blocks are free. (K)
    map: L,
}

impl<L: Lock<Blist>> SwapSpace<L> {
    /// Swap space over all of `disk`, every block free.
    pub fn new(disk: Box<dyn BlockDevice + Send + Sync>) -> Result<Self, SwapError> {
        let pages = disk.capacity() / SECTORS_PER_PAGE;
        let map = Blist::new(pages)?;
        Ok(SwapSpace {
            disk,
            pages,
            read_ahead: AtomicBool::new(true),
            stats: SwapStats::default(),
            map: L::new(map, &vm::witness::order::SWAP_SPACE),
        })
    }

    /// The disk.
    pub fn disk(&self) -> &(dyn BlockDevice + Send + Sync) {
        &*self.disk
    }

    /// Size in pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Whether the pagers read ahead (and behind) of a faulting page.
    pub fn read_ahead(&self) -> bool {
        self.read_ahead.load(Ordering::Relaxed)
    }

    /// Turns read-ahead on or off.
    pub fn set_read_ahead(&self, on: bool) {
        self.read_ahead.store(on, Ordering::Relaxed);
    }

    /// Free pages.
    pub fn avail(&self) -> u64 {
        self.map.with(|m| m.avail())
    }

    /// The longest run of free blocks: the largest cluster that fits.
    pub fn largest_free_run(&self) -> u64 {
        self.map.with(|m| m.largest_free_run())
    }

    /// Allocates contiguous blocks, at least `count` and at most `max`:
    /// `(first block, blocks got)`, or None when no `count` free blocks
    /// are contiguous. See [`Blist::alloc`].
    pub fn alloc(&self, count: u64, max: u64) -> Option<(u64, u64)> {
        self.map.with(|m| m.alloc(count, max))
    }

    /// Marks the free blocks of `block..block + count` used (the rest are
    /// used already); returns how many it took. Tests shrink the swap
    /// space with it, and give the blocks back with [`SwapSpace::free`].
    pub fn fill(&self, block: u64, count: u64) -> u64 {
        self.map.with(|m| m.fill(block, count))
    }

    /// Frees blocks `block..block + count`. Panics if one is free already
    /// (swap freed twice: a kernel bug).
    pub fn free(&self, block: u64, count: u64) {
        self.map.with(|m| m.free(block, count))
    }

    /// Reads `buf.len()` bytes, whole pages, from blocks starting at
    /// `block`, in one disk request; sleeps until it is done.
    pub fn read_pages(&self, block: u64, buf: &mut [u8]) -> Result<(), SwapError> {
        let sector = self.sector_of(block, buf.len())?;
        if vm::failpoint::SWAP_READ.should_fail() {
            return Err(SwapError::Io(BlockError::Io));
        }
        self.disk.read(sector, buf).map_err(SwapError::Io)
    }

    /// Writes `buf` (whole pages) to blocks starting at `block`, in one
    /// disk request; sleeps until it is done.
    pub fn write_pages(&self, block: u64, buf: &[u8]) -> Result<(), SwapError> {
        let sector = self.sector_of(block, buf.len())?;
        if vm::failpoint::SWAP_WRITE.should_fail() {
            return Err(SwapError::Io(BlockError::Io));
        }
        self.disk.write(sector, buf).map_err(SwapError::Io)
    }

    /// The first sector of a transfer of `len` bytes at `block`, once the
    /// transfer is known to be whole pages inside the swap space.
    fn sector_of(&self, block: u64, len: usize) -> Result<u64, SwapError> {
        if !len.is_multiple_of(PAGE_SIZE as usize) {
            return Err(SwapError::BadLength(len));
        }
        let count = len as u64 / PAGE_SIZE;
        match block.checked_add(count) {
            Some(end) if end <= self.pages => Ok(block * SECTORS_PER_PAGE),
            _ => Err(SwapError::OutOfRange { block, count, pages: self.pages }),
        }
    }
}

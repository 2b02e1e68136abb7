//! Swap space: the disk the swap pager pages out to, and the blist that
//! hands out its blocks (FreeBSD's `swdevt` and `swblk_t` allocation, with
//! one device).
//!
//! At boot, [`init`] looks for the virtio disk with serial `swap`
//! (run-qemu.sh and the test harness attach a fresh sparse image so) and
//! makes it the [`SwapSpace`]. No such disk means no swap: the kernel runs
//! on what memory it has, as FreeBSD does before `swapon`.
//!
//! A swap block is one page: block `b` is the 4 KiB at sector `8 * b`.
//! The swap pager allocates a run of blocks for a cluster of pages, writes
//! the cluster with one request ([`SwapSpace::write_pages`]), and frees
//! blocks one by one as their pages are dirtied again or freed (rule 14:
//! a dirtied swap-backed page gives up its slot). The blist's cursor makes
//! consecutive page-outs land in consecutive blocks.
//!
//! Locking: (C) set at [`init`], constant after; (K) the swap-space lock,
//! a spin lock taken with interrupts off (so its holder is not preempted)
//! for blist operations only: never held across I/O, never taken in an
//! interrupt handler. The I/O helpers take no lock: the caller owns the
//! blocks it reads and writes.

use pager::blist::{Blist, BlistError};
use pager::block::{BlockError, SECTOR_SIZE};
use spin::Once;

use crate::kern::sync::IrqMutex;
use x86_64::instructions::interrupts::without_interrupts;

use crate::dev::virtio_blk::{self, Disk};
use crate::kern::memory::PAGE_SIZE;

/// Serial number of the swap disk (`-device virtio-blk-pci,serial=swap`).
pub const SWAP_SERIAL: &str = "swap";

/// Sectors per swap block (one page).
const SECTORS_PER_PAGE: u64 = PAGE_SIZE / SECTOR_SIZE as u64;

/// Why a swap operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapError {
    /// No memory for the blist of a device this large (at [`init`]).
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

/// A swap device and the allocation of its blocks.
pub struct SwapSpace {
    /// The disk. (C)
    disk: Disk,
    /// Its size in pages (blocks); a partial page at the end is not used. (C)
    pages: u64,
    /// Which blocks are free. (K)
    map: IrqMutex<Blist>,
}

/// The swap space, if there is a swap disk. (C) set once by [`init`].
static SWAP: Once<SwapSpace> = Once::new();

/// Finds the swap disk and sets up its swap space; logs what it found.
/// Call once, after the drivers have probed the disks.
pub fn init() {
    let Some(disk) = virtio_blk::by_serial(SWAP_SERIAL) else {
        log::info!("swap: no disk with serial {SWAP_SERIAL:?}: no swap");
        return;
    };
    let index = disk.index;
    match SwapSpace::new(disk) {
        Ok(sp) => {
            log::info!("swap: virtio-blk{index}, {} MiB, {} pages", (sp.pages * PAGE_SIZE) >> 20, sp.pages);
            SWAP.call_once(|| sp);
        }
        Err(e) => log::warn!("swap: cannot use virtio-blk{index}: {e:?}; no swap"),
    }
}

/// The swap space, or None when the machine has no swap disk.
pub fn swap() -> Option<&'static SwapSpace> {
    SWAP.get()
}

impl SwapSpace {
    /// Swap space over all of `disk`, every block free.
    pub fn new(disk: Disk) -> Result<SwapSpace, SwapError> {
        let pages = disk.capacity / SECTORS_PER_PAGE;
        let map = Blist::new(pages)?;
        Ok(SwapSpace { disk, pages, map: IrqMutex::ranked(map, &vm::witness::order::SWAP_SPACE) })
    }

    /// Size in pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Free pages.
    pub fn avail(&self) -> u64 {
        without_interrupts(|| self.map.lock().avail())
    }

    /// The longest run of free blocks: the largest cluster that fits.
    pub fn largest_free_run(&self) -> u64 {
        without_interrupts(|| self.map.lock().largest_free_run())
    }

    /// Allocates contiguous blocks, at least `count` and at most `max`:
    /// `(first block, blocks got)`, or None when no `count` free blocks
    /// are contiguous. See [`Blist::alloc`].
    pub fn alloc(&self, count: u64, max: u64) -> Option<(u64, u64)> {
        without_interrupts(|| self.map.lock().alloc(count, max))
    }

    /// Marks the free blocks of `block..block + count` used (the rest are
    /// used already); returns how many it took. Tests shrink the swap
    /// space with it, and give the blocks back with [`SwapSpace::free`].
    pub fn fill(&self, block: u64, count: u64) -> u64 {
        without_interrupts(|| self.map.lock().fill(block, count))
    }

    /// Frees blocks `block..block + count`. Panics if one is free already
    /// (swap freed twice: a kernel bug).
    pub fn free(&self, block: u64, count: u64) {
        without_interrupts(|| self.map.lock().free(block, count))
    }

    /// Reads `buf.len()` bytes, whole pages, from blocks starting at
    /// `block`, in one disk request; sleeps until it is done.
    pub fn read_pages(&self, block: u64, buf: &mut [u8]) -> Result<(), SwapError> {
        let sector = self.sector_of(block, buf.len())?;
        if vm::failpoint::SWAP_READ.should_fail() {
            return Err(SwapError::Io(BlockError::Io));
        }
        self.disk.read_sectors(sector, buf).map_err(SwapError::Io)
    }

    /// Writes `buf` (whole pages) to blocks starting at `block`, in one
    /// disk request; sleeps until it is done.
    pub fn write_pages(&self, block: u64, buf: &[u8]) -> Result<(), SwapError> {
        let sector = self.sector_of(block, buf.len())?;
        if vm::failpoint::SWAP_WRITE.should_fail() {
            return Err(SwapError::Io(BlockError::Io));
        }
        self.disk.write_sectors(sector, buf).map_err(SwapError::Io)
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

mod tests;

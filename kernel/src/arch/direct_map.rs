//! The direct map: all of physical memory (and at least the first 4 GiB,
//! for device registers), mapped by the bootloader at one offset. The
//! kernel reaches any frame's contents at `PHYS_OFFSET + physical address`.

use core::sync::atomic::{AtomicU64, Ordering};

/// Virtual address of physical address 0 in the direct map. (C) set once at
/// boot, before any other processor or thread runs: Relaxed.
pub static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Kernel virtual address of a physical address, through the direct map.
pub fn phys_to_virt(phys: u64) -> u64 {
    PHYS_OFFSET.load(Ordering::Relaxed) + phys
}

//! `/proc/kpageflags`: one 64-bit word per physical page, at byte offset
//! `pfn * 8`, with the bits of Linux's `include/uapi/linux/kernel-page-flags.h`
//! that this kernel's page state has a counterpart for:
//!
//! | bit | Linux's name | here |
//! |-----|--------------|------|
//! | 0 | LOCKED | busy |
//! | 2 | REFERENCED | referenced since the page daemon last looked |
//! | 3 | UPTODATE | all valid |
//! | 4 | DIRTY | dirty |
//! | 5 | LRU | on a paging queue |
//! | 6 | ACTIVE | on the active queue |
//! | 10 | BUDDY | free |
//! | 11 | MMAP | mapped by a process |
//! | 18 | UNEVICTABLE | wired |
//! | 20 | NOPAGE | no memory at this frame |
//! | 32 | RESERVED | the kernel's own (boot memory, page array, heap) |
//! | 33 | MLOCKED | wired (the page daemon passes it over, as an mlocked page) |
//!
//! A page the paging code does not manage (page tables, the kernel heap)
//! shows only RESERVED when it is the kernel's from boot, else nothing.

use crate::syscall::errno::EINVAL;
use vm::page::{PageFlags, Queue};

const PAGE: u64 = vm::PAGE_SIZE as u64;

const LOCKED: u64 = 1 << 0;
const REFERENCED: u64 = 1 << 2;
const UPTODATE: u64 = 1 << 3;
const DIRTY: u64 = 1 << 4;
const LRU: u64 = 1 << 5;
const ACTIVE: u64 = 1 << 6;
const BUDDY: u64 = 1 << 10;
const MMAP: u64 = 1 << 11;
const UNEVICTABLE: u64 = 1 << 18;
const NOPAGE: u64 = 1 << 20;
const RESERVED: u64 = 1 << 32;
const MLOCKED: u64 = 1 << 33;

/// Reads the words of frames `off / 8` on into `buf`, `count / 8` of them
/// (multiples of 8: EINVAL otherwise). The file ends after the highest
/// frame the kernel knows.
pub fn read(off: u64, buf: u64, count: u64) -> Result<u64, i64> {
    if !off.is_multiple_of(8) || !count.is_multiple_of(8) {
        return Err(EINVAL);
    }
    let end = vm::global().segments().iter().map(|s| s.range.end / PAGE).max().unwrap_or(0);
    super::read_words(off / 8, buf, count / 8, end, |first, words| {
        for (i, w) in words.iter_mut().enumerate() {
            *w = word(first + i as u64);
        }
    })
}

/// The word of frame `pfn`: a snapshot, each bit read without a lock (as
/// Linux's, it may be stale by the time it is read).
pub(super) fn word(pfn: u64) -> u64 {
    let Some(page) = vm::global().page_of(pfn * PAGE) else { return NOPAGE };
    let flags = page.flags();
    if flags.contains(PageFlags::FREE) {
        return BUDDY;
    }
    if !page.is_managed() {
        return if flags.contains(PageFlags::RESERVED) { RESERVED } else { 0 };
    }
    let mut w = 0;
    let bit = |on: bool, b: u64| if on { b } else { 0 };
    w |= bit(page.busied(), LOCKED);
    w |= bit(flags.contains(PageFlags::REFERENCED), REFERENCED);
    w |= bit(page.all_valid(), UPTODATE);
    w |= bit(page.dirty() != 0, DIRTY);
    w |= bit(page.queue() != Queue::None, LRU);
    w |= bit(page.queue() == Queue::Active, ACTIVE);
    w |= bit(page.mapping_count() > 0, MMAP);
    w |= bit(page.wired(), UNEVICTABLE | MLOCKED);
    w
}

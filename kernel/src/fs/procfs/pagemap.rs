//! `/proc/PID/pagemap`: one 64-bit word per virtual page, at byte offset
//! `va / 4096 * 8`, in Linux's layout:
//!
//! | bits | meaning |
//! |------|---------|
//! | 0-54 | the page frame number, when present |
//! | 0-4, 5-54 | the swap type (0, the one swap disk) and block, when swapped |
//! | 55 | soft-dirty (never set: not tracked) |
//! | 56 | the page is mapped only here |
//! | 61 | a file page, or shared memory |
//! | 62 | swapped |
//! | 63 | present |
//!
//! Present means mapped in the pmap; for anonymous memory, also a page the
//! entry would find in memory along its shadow chain. This kernel maps
//! such pages lazily, at the first touch after a fork, where Linux copies
//! the page-table entries at the fork: counted this way, the words say
//! what they say on Linux. File pages are mapped lazily on both.

use vm::map::{Inherit, VmMap};
use vm::object::{ObjectKind, chain};

use crate::mm::vmspace::{AddressSpace, TASK_SIZE};
use crate::proc;
use crate::syscall::errno::EINVAL;

const PAGE: u64 = vm::PAGE_SIZE as u64;
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const FILE_OR_SHARED: u64 = 1 << 61;
const EXCLUSIVE: u64 = 1 << 56;
const PFN: u64 = (1 << 55) - 1;
/// Where a swap entry's block starts (below it, the swap type, 0).
const SWAP_OFFSET_SHIFT: u32 = 5;

/// Reads the words of the pages from `off / 8` into `buf`, `count / 8` of
/// them (both multiples of 8, as Linux asks: EINVAL otherwise). Past the
/// last user page, or once the process is gone, there is nothing to read.
pub fn read(pid: u64, off: u64, buf: u64, count: u64) -> Result<u64, i64> {
    if !off.is_multiple_of(8) || !count.is_multiple_of(8) {
        return Err(EINVAL);
    }
    let Some(space) = proc::by_pid(pid).and_then(|p| p.space()) else { return Ok(0) };
    super::read_words(off / 8, buf, count / 8, TASK_SIZE / PAGE, |first, words| {
        let map = space.map.lock();
        for (i, w) in words.iter_mut().enumerate() {
            *w = word(&space, &map, (first + i as u64) * PAGE);
        }
    })
}

/// The word of the page at `va` (the map lock held).
pub(super) fn word(space: &AddressSpace, map: &VmMap, va: u64) -> u64 {
    use vm::pmap::Pmap;
    let Some(e) = map.entry(va) else { return 0 };
    let pm = vm::global();
    let shared = e.inherit == Inherit::Share;
    let file_page = |object: Option<usize>| {
        let Some(o) = object else { return false };
        // The bottom of the chain is the file's object when there is one.
        e.object
            .as_ref()
            .is_some_and(|top| chain(top).last().is_some_and(|(b, _)| b.kind() == ObjectKind::Vnode && b.handle() == o))
    };
    if let Some((phys, _)) = space.pmap.extract(va) {
        let mut w = PRESENT | (phys / PAGE) & PFN;
        if let Some(page) = pm.page_of(phys) {
            if page.mapping_count() <= 1 {
                w |= EXCLUSIVE;
            }
            if shared || file_page(page.object()) {
                w |= FILE_OR_SHARED;
            }
        }
        return w;
    }
    let Some(top) = &e.object else { return 0 };
    let pindex = e.offset + (va - e.start) / PAGE;
    for (o, off) in chain(top) {
        if o.kind() == ObjectKind::Vnode {
            // A file page not mapped here: not present, as on Linux.
            return 0;
        }
        let (page, pager) = {
            let l = o.lock();
            (l.lookup(pindex + off), l.pager())
        };
        if let Some(page) = page {
            let mut w = PRESENT | (page.phys() / PAGE) & PFN;
            if page.mapping_count() == 0 {
                w |= EXCLUSIVE;
            }
            if shared {
                w |= FILE_OR_SHARED;
            }
            return w;
        }
        if let Some(block) = pager.and_then(|p| p.block_of(pindex + off)) {
            let w = SWAPPED | (block << SWAP_OFFSET_SHIFT) & PFN;
            return if shared { w | FILE_OR_SHARED } else { w };
        }
    }
    0
}

//! Walks over an address space's page tables: every present leaf of a
//! range (unlinking the tables it empties), the first used page of a range,
//! and the freeing of unlinked tables once the TLBs no longer reach them;
//! and a leaf entry's physical address, and back, and the address it maps
//! (what a PV entry holds, and what the walks make of it).

use core::sync::atomic::{AtomicU64, Ordering};

use vm::PAGE_SIZE;

use super::{ADDR, P, g, table};

/// Frees the page tables [`walk_range`] (or the kernel's `kmem`) unlinked:
/// a chain through each table's first word (the table is empty, and no
/// longer reachable). Returns how many it freed.
pub fn free_tables(mut chain: u64) -> u64 {
    let pm = g().pm;
    let mut n = 0;
    while chain != 0 {
        let next = table(chain)[0].swap(0, Ordering::Relaxed);
        let page = pm.page_of(chain).expect("page table not in the page array");
        page.set_table_base(0);
        pm.free(page);
        chain = next;
        n += 1;
    }
    n
}

/// The range walk of [`X86Pmap::for_each_leaf`] over the table `t` at `level`
/// that maps addresses from `base`. Returns true if `t` is now empty.
pub(super) fn walk_range(
    t: u64,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
    mut emptied: Option<&mut u64>,
    f: &mut impl FnMut(u64, &'static AtomicU64),
) -> bool {
    let span = 1u64 << (12 + 9 * level);
    let first = if start > base { ((start - base) / span) as usize } else { 0 };
    let last = (((end - 1).saturating_sub(base)) / span).min(511) as usize;
    // The upper half of a PML4 is the kernel's: never walked here.
    let last = if level == 3 { last.min(255) } else { last };
    for i in first..=last {
        let e = &table(t)[i];
        let v = e.load(Ordering::Acquire);
        if v & P == 0 {
            continue;
        }
        let va = base + i as u64 * span;
        if level == 0 {
            f(va, e);
        } else {
            let child = v & ADDR;
            let lo = start.max(va);
            let hi = end.min(va + span);
            if walk_range(child, level - 1, va, lo, hi, emptied.as_deref_mut(), f)
                && let Some(chain) = emptied.as_deref_mut()
            {
                e.store(0, Ordering::Release);
                // Chained through its first word (it is all zeroes now).
                table(child)[0].store(*chain, Ordering::Relaxed);
                *chain = child;
            }
        }
    }
    // Empty: no mapping, and no orphaned wiring either.
    table(t).iter().all(|e| e.load(Ordering::Relaxed) == 0)
}

/// The lowest page address in `[start, end)` whose leaf entry is not empty
/// (a mapping, or an orphaned wiring), descending only into present tables:
/// the cost follows the tables in use, not the length of the range.
pub(super) fn first_used(t: u64, level: u32, base: u64, start: u64, end: u64) -> Option<u64> {
    let span = 1u64 << (12 + 9 * level);
    let first = if start > base { ((start - base) / span) as usize } else { 0 };
    let last = (((end - 1).saturating_sub(base)) / span).min(511) as usize;
    let last = if level == 3 { last.min(255) } else { last };
    for i in first..=last {
        let v = table(t)[i].load(Ordering::Acquire);
        let va = base + i as u64 * span;
        if level == 0 {
            if v != 0 {
                return Some(va);
            }
        } else if v & P != 0
            && let Some(found) = first_used(v & ADDR, level - 1, va, start.max(va), end.min(va + span))
        {
            return Some(found);
        }
    }
    None
}

/// The physical address of leaf entry `e` (in a page table, reached
/// through the direct map).
pub(super) fn leaf_phys(e: &AtomicU64) -> u64 {
    e as *const AtomicU64 as u64 - crate::arch::direct_map::PHYS_OFFSET.load(Ordering::Relaxed)
}

/// The leaf entry at physical address `leaf`.
pub(super) fn leaf_at(leaf: u64) -> &'static AtomicU64 {
    &table(leaf & ADDR)[(leaf & (PAGE_SIZE as u64 - 1)) as usize / 8]
}

/// The virtual address leaf entry `leaf` maps: its table's base plus its
/// index. Exact under the table's pmap lock (a move changes the base).
pub(super) fn leaf_va(leaf: u64) -> u64 {
    let t = g().pm.page_of(leaf & ADDR).expect("page table not in the page array");
    t.table_base() + (leaf & (PAGE_SIZE as u64 - 1)) / 8 * PAGE_SIZE as u64
}

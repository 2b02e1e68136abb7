//! Moving a range's mappings to other addresses (`mremap`): the pages stay
//! where they are, and so do their mapping counts. Where a source and a
//! destination 2 MiB are both aligned and wholly in the ranges, the leaf
//! table itself moves (one page-directory entry): its PV entries name its
//! entries, not their addresses, so none changes, and 64 MiB moves in 32
//! steps (Linux's `move_normal_pmd`). Elsewhere each leaf entry moves, its
//! PV entry renamed.

use core::sync::atomic::Ordering;

use vm::PAGE_SIZE;
use vm::page::Page;
use vm::pmap::{PmapError, TlbFlush};

use super::walk::{first_used, free_tables};
use super::{ADDR, Chunks, LEAF_SPAN, P, SW_MANAGED, USER_END, X86Pmap, g, leaf_phys};

const PAGE: u64 = PAGE_SIZE as u64;

impl X86Pmap {
    /// [`vm::pmap::Pmap::move_range`], with the pmap lock held.
    ///
    /// First what the destination needs, for each 2 MiB of the source
    /// with an entry in use: the tables above its leaf table when the
    /// table moves whole, else the one or two leaf tables its entries land
    /// in. Only then does anything move, so a want of memory changes
    /// nothing. Then each such 2 MiB moves: its table, or each entry in use
    /// (a mapping, or a wiring left by `orphan_wired`). Source tables left
    /// empty are unlinked, and freed once the old range is flushed.
    pub(super) fn move_locked(&self, _chunks: &mut Chunks, from: u64, to: u64, len: u64) -> Result<TlbFlush, PmapError> {
        let end = from.checked_add(len).filter(|e| *e <= USER_END).expect("move_range: source past the user half");
        assert!(to.checked_add(len).is_some_and(|e| e <= USER_END), "move_range: destination past the user half");
        assert!(end <= to || to + len <= from, "move_range: the ranges overlap");
        let dest = |va: u64| va - from + to;
        // Whether the 2 MiB at `block` (a source block with an entry in
        // use) can move as a whole table.
        let whole = |block: u64| (to.wrapping_sub(from)).is_multiple_of(LEAF_SPAN) && block >= from && block + LEAF_SPAN <= end;

        let mut va = from;
        while va < end
            && let Some(used) = first_used(self.pml4, 3, 0, va, end)
        {
            let block = used & !(LEAF_SPAN - 1);
            let block_end = (block + LEAF_SPAN).min(end);
            if whole(block) {
                self.pde(dest(block), true)?;
            } else {
                self.walk(dest(used), true)?;
                self.walk(dest(block_end - PAGE), true)?;
            }
            va = block_end;
        }

        let mut moved = false;
        let mut va = from;
        while va < end
            && let Some(used) = first_used(self.pml4, 3, 0, va, end)
        {
            let block = used & !(LEAF_SPAN - 1);
            let block_end = (block + LEAF_SPAN).min(end);
            va = block_end;
            if whole(block) && self.move_table(block, dest(block)) {
                moved = true;
                continue;
            }
            let mut at = used;
            while at < block_end
                && let Some(used) = first_used(self.pml4, 3, 0, at, block_end)
            {
                moved |= self.move_entry(used, dest(used));
                at = used + PAGE;
            }
        }

        let mut emptied = 0;
        self.for_each_leaf(from, end, Some(&mut emptied), |va, _| unreachable!("{va:#x} is still mapped after its move"));
        if emptied != 0 {
            // Another CPU's walk may still go through a cached pointer to
            // an unlinked table: flush before it is freed.
            self.flush(from, end);
            free_tables(emptied);
            return Ok(TlbFlush::none());
        }
        Ok(if moved { self.owe(from, end) } else { TlbFlush::none() })
    }

    /// Moves the leaf table of the 2 MiB at `block` to `to`, if nothing
    /// is there (an empty table left there takes the entry-by-entry way).
    /// The tables above `to` exist.
    fn move_table(&self, block: u64, to: u64) -> bool {
        let dst = self.pde(to, false).ok().flatten().expect("the destination's tables were made first");
        if dst.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let src = self.pde(block, false).ok().flatten().expect("a block in use has its tables");
        let v = src.swap(0, Ordering::AcqRel);
        let t = g().pm.page_of(v & ADDR).expect("page table not in the page array");
        debug_assert_eq!(t.table_base(), block);
        t.set_table_base(to);
        dst.store(v, Ordering::Release);
        // The hint may name the table under its old address.
        self.leaf_hint.store(0, Ordering::Relaxed);
        true
    }

    /// Moves the leaf entry of `from` to `to` (made, and empty); whether
    /// it was a mapping (a wiring mark moves too, and owes no flush).
    fn move_entry(&self, from: u64, to: u64) -> bool {
        let src = self.walk(from, false).ok().flatten().expect("an entry in use has its tables");
        let dst = self.walk(to, false).ok().flatten().expect("the destination's tables were made first");
        assert!(dst.load(Ordering::Relaxed) == 0, "move_range: {to:#x} is in use");
        // The swap takes the modified and accessed bits the MMU set up to
        // now; a CPU that still caches the old translation and must set
        // one finds the entry gone and faults (as for `remove`).
        let v = src.swap(0, Ordering::AcqRel);
        if v & P != 0 && v & SW_MANAGED != 0 {
            let page = g().pm.page_of(v & ADDR).expect("managed mapping of an unknown frame");
            pv_rename(page, self, leaf_phys(src), leaf_phys(dst));
        }
        dst.store(v, Ordering::Release);
        v & P != 0
    }
}

/// Renames the PV entry of `(pmap, from)` on `page`'s list to `(pmap,
/// to)` (leaf entries), under the page's PV-list lock (the caller holds
/// the pmap lock). The generation is raised: a PV walk that let the list
/// go to wait for this pmap's lock read the old entry, and must read the
/// list again.
fn pv_rename(page: &Page, pmap: &X86Pmap, from: u64, to: u64) {
    let gl = g();
    let i = gl.pm.index_of(page) as usize;
    let b = gl.bucket(i);
    let _list = b.lock.lock();
    let mut cur = gl.heads.at(i).load(Ordering::Relaxed) as *mut super::Pv;
    // SAFETY: the list links are live PV items, followed and changed
    // under the list's lock.
    unsafe {
        while !cur.is_null() {
            if core::ptr::eq((*cur).pmap, pmap) && (*cur).leaf == from {
                (*cur).leaf = to;
                b.generation.fetch_add(1, Ordering::Relaxed);
                return;
            }
            cur = (*cur).next;
        }
    }
    panic!("pmap: no PV entry for page {:#x} at leaf entry {from:#x}", page.phys());
}

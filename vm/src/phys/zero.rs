//! The zero pool (Z): free pages zeroed at idle time, for allocations that
//! want a zeroed page (`AllocFlags::PREFER_ZERO`, `AllocFlags::ZERO`).

use core::sync::atomic::Ordering;

use super::*;

impl PhysMem {
    /// Takes a page from the zero pool, unless that would leave `keep` free
    /// pages or fewer (the pool and the lists, as [`PhysMem::alloc`] counts
    /// them). Sets `low` if it leaves fewer than [`Levels::target`].
    #[inline]
    pub(super) fn zeroed_pop(&self, keep: u64, low: &mut bool) -> Option<PageIndex> {
        // Relaxed: a hint (see the field).
        if self.zeroed_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut z = self.zeroed.lock();
        // The lists' count without their lock (the order is F, then Z): a
        // moment stale at most, as any count of free pages is.
        let free = z.len + self.listed.load(Ordering::Relaxed);
        if z.head == NIL || free <= keep {
            return None;
        }
        *low = free - 1 < self.levels.target.load(Ordering::Relaxed);
        let idx = z.head;
        let p = self.page(idx);
        z.head = p.next.load(Ordering::Relaxed);
        p.next.store(NIL, Ordering::Relaxed);
        z.len -= 1;
        self.zeroed_len.store(z.len, Ordering::Relaxed);
        Some(idx)
    }

    /// Moves every page of the zero pool to the free lists (they keep their
    /// zero flag there). Returns whether there were any.
    pub(super) fn drain_zeroed_locked(&self, fl: &mut FreeLists) -> bool {
        self.empty_zero_pool(fl, true)
    }

    /// Empties the zero pool onto the free lists, the pages' zero flags kept
    /// or cleared. Returns whether there were any.
    pub(super) fn empty_zero_pool(&self, fl: &mut FreeLists, keep_zero: bool) -> bool {
        let mut z = self.zeroed.lock();
        let any = z.len > 0;
        while z.head != NIL {
            let idx = z.head;
            let p = self.page(idx);
            z.head = p.next.load(Ordering::Relaxed);
            p.next.store(NIL, Ordering::Relaxed);
            if !keep_zero {
                p.clear_flags(PageFlags::ZERO);
            }
            z.len -= 1;
            self.free_block_locked(fl, idx, 0);
        }
        self.zeroed_len.store(0, Ordering::Relaxed);
        any
    }

    /// Gives the zero pool back to the free lists as ordinary free pages
    /// (zero flags cleared): memory as a system that had no idle time finds
    /// it. For the benchmarks' cold figures.
    pub fn forget_zeroed(&self) {
        self.empty_zero_pool(&mut self.free.lock(), false);
    }

    /// Debug builds: a free page flagged zero (from the pool, or one given
    /// back from it) must be all zeroes; anything else means that someone
    /// wrote to a free page, which the zeroing at fault time used to hide.
    pub(super) fn check_zero_flag(&self, p: &Page) {
        let Some(a) = self.page_addr(p).filter(|_| p.flags().contains(PageFlags::ZERO)) else { return };
        // SAFETY: the page is free or just taken (nobody else's); the direct
        // map covers it; pages are 8-aligned.
        let words = unsafe { core::slice::from_raw_parts(a as *const u64, PAGE_SIZE / 8) };
        if let Some(i) = words.iter().position(|&w| w != 0) {
            panic!("page {:#x} is flagged zero but word {i} is {:#x}: a write to a free page", p.phys(), words[i]);
        }
    }

    /// Pages in the zero pool.
    pub fn zeroed_count(&self) -> u64 {
        self.zeroed.lock().len
    }

    /// Idle-time work (FreeBSD's `vm_page_zero_idle`): zeroes one free page
    /// into the zero pool, unless the pool already holds its share of the
    /// free pages or page contents are not reachable. Returns whether it did;
    /// the caller calls again while it has nothing better to do.
    ///
    /// While it is zeroed the page is allocated, unmanaged, to nobody, and
    /// counted free all the same (`zeroing`). Several CPUs may zero at
    /// once, each its own page; the page enters the pool, free flag and
    /// all, under the pool's lock, so a check that holds the allocator's
    /// locks never sees it half-way.
    pub fn zero_idle(&self) -> bool {
        if self.direct_map.is_none() || self.zeroed_count() >= self.free_count() / ZERO_POOL_SHARE {
            return false;
        }
        // From the lists, not the cache: the cache's pages are the ones
        // freed last, likeliest to be in the caches and wanted again.
        let idx = {
            let mut fl = self.free.lock();
            let Some(idx) = self.alloc_block_locked(&mut fl, 0) else { return false };
            // Relaxed: read under F or Z, which order it.
            self.zeroing.fetch_add(1, Ordering::Relaxed);
            idx
        };
        let p = self.page(idx);
        p.take_from_free(PageFlags::UNMANAGED);
        if !p.flags().contains(PageFlags::ZERO) {
            self.fill(p, 1, 0);
        }
        let mut z = self.zeroed.lock();
        p.make_free(true);
        p.next.store(z.head, Ordering::Relaxed);
        z.head = idx;
        z.len += 1;
        self.zeroed_len.store(z.len, Ordering::Relaxed);
        self.zeroing.fetch_sub(1, Ordering::Relaxed);
        true
    }
}

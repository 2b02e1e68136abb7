//! The per-CPU order-0 caches in front of the free lists (FreeBSD's per-CPU
//! `vm_page` cache zones, Linux's per-CPU page lists).
//!
//! Each CPU has a stack of up to [`CACHE_SIZE`] free pages under a lock of
//! its own, on its own cache lines. An order-0 allocation pops from the
//! running CPU's stack and a free pushes onto it; only an empty stack
//! (refilled with [`CACHE_BATCH`] pages) or a full one (drained by as many)
//! takes the free-list lock (F). So CPUs allocating and freeing at once
//! meet on F once every [`CACHE_BATCH`] pages instead of at every page.
//!
//! The cache is chosen by the CPU the thread runs on when it looks; the
//! thread may move to another CPU before it takes the lock, and then uses
//! that CPU's cache under its lock: correct, only slower. The lock is
//! what keeps a cache whole, not the CPU.
//!
//! A page in a cache is free ([`PageFlags::FREE`]) and counted free, but
//! only its CPU hands it out. When an allocation finds nothing on the lists
//! it drains every CPU's cache and tries once more
//! ([`PhysMem::reclaim_caches`]), so pages stranded in other CPUs' caches
//! are never the reason an allocation fails.
//!
//! Lock order: a cache lock, then F, then Z. No thread holds two caches'
//! locks at once.
//!
//! [`PageFlags::FREE`]: crate::page::PageFlags::FREE

use core::sync::atomic::{AtomicU32, Ordering};

use super::{CACHE_BATCH, CACHE_SIZE, PhysMem};
use crate::counter::MAX_CPUS;
use crate::page::{NIL, PageIndex};
use crate::sync::Mutex;
use crate::witness::order;

/// One CPU's cache: a stack of free pages. (its lock)
pub(crate) struct Cache {
    pub(crate) pages: [PageIndex; CACHE_SIZE],
    pub(crate) len: usize,
}

/// One CPU's cache and the mirror of its length, alone on their cache
/// lines.
#[repr(align(64))]
pub(crate) struct CpuCache {
    pub(crate) cache: Mutex<Cache>,
    /// `cache.len`, for [`PhysMem::free_count`], which holds F and not the
    /// cache's lock. Written under the cache lock, and under F as well
    /// whenever pages move between the cache and the lists, so that a
    /// reader holding F sees every such move whole: the Relaxed store is
    /// ordered for it by F's release and acquire.
    len: AtomicU32,
}

impl CpuCache {
    pub(crate) fn new() -> CpuCache {
        CpuCache { cache: Mutex::ranked(Cache { pages: [NIL; CACHE_SIZE], len: 0 }, &order::PAGE_CACHE), len: AtomicU32::new(0) }
    }

    #[inline(always)]
    fn publish(&self, cache: &Cache) {
        self.len.store(cache.len as u32, Ordering::Relaxed);
    }

    /// Pages in this cache (see `len`).
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed) as u64
    }
}

/// Every CPU's cache.
pub(crate) fn new_caches() -> [CpuCache; MAX_CPUS] {
    core::array::from_fn(|_| CpuCache::new())
}

impl PhysMem {
    /// The running CPU's cache.
    #[inline(always)]
    pub(crate) fn my_cache(&self) -> &CpuCache {
        &self.caches[crate::sync::this_cpu() as usize % MAX_CPUS]
    }

    /// Pops a page from the running CPU's cache, refilling it from the free
    /// lists if it is empty (leaving `keep` pages free there). Sets `low`
    /// when free memory is below the pageout target.
    #[inline(always)]
    pub(super) fn cache_pop(&self, keep: u64, low: &mut bool) -> Option<PageIndex> {
        let cc = self.my_cache();
        let mut cache = cc.cache.lock();
        if cache.len == 0 {
            *low = self.refill_cache(cc, &mut cache, keep);
        }
        if cache.len == 0 {
            return None;
        }
        cache.len -= 1;
        cc.publish(&cache);
        Some(cache.pages[cache.len])
    }

    /// Fills the empty cache `cc` from the free lists, leaving `keep` pages
    /// free (the zero pool's count among them). Returns whether free memory
    /// is now below the pageout target.
    #[inline(never)]
    fn refill_cache(&self, cc: &CpuCache, cache: &mut Cache, keep: u64) -> bool {
        let mut fl = self.free.lock();
        let pooled = self.zeroed.lock().len;
        while cache.len < CACHE_BATCH && fl.pages + pooled > keep {
            let Some(i) = self.alloc_block_locked(&mut fl, 0) else { break };
            let n = cache.len;
            cache.pages[n] = i;
            cache.len += 1;
        }
        // Under F: see `CpuCache::len`.
        cc.publish(cache);
        fl.pages + pooled < self.levels.target.load(Ordering::Relaxed)
    }

    /// Pushes the free page `idx` onto the running CPU's cache, first
    /// draining [`CACHE_BATCH`] pages to the lists if the cache is full.
    pub(super) fn free_to_cache(&self, idx: PageIndex) {
        let cc = self.my_cache();
        let mut cache = cc.cache.lock();
        if cache.len == CACHE_SIZE {
            let mut fl = self.free.lock();
            for _ in 0..CACHE_BATCH {
                cache.len -= 1;
                let i = cache.pages[cache.len];
                self.free_block_locked(&mut fl, i, 0);
            }
            // Under F: see `CpuCache::len`.
            cc.publish(&cache);
        }
        let n = cache.len;
        cache.pages[n] = idx;
        cache.len += 1;
        cc.publish(&cache);
    }

    /// Moves every page of `cc` to the free lists. Returns how many.
    fn drain_one(&self, cc: &CpuCache) -> usize {
        let mut cache = cc.cache.lock();
        if cache.len == 0 {
            return 0;
        }
        let n = cache.len;
        let mut fl = self.free.lock();
        while cache.len > 0 {
            cache.len -= 1;
            let i = cache.pages[cache.len];
            self.free_block_locked(&mut fl, i, 0);
        }
        // Under F: see `CpuCache::len`.
        cc.publish(&cache);
        n
    }

    /// Moves the pages of every CPU's cache to the free lists, one cache at
    /// a time. Returns how many moved.
    pub fn reclaim_caches(&self) -> usize {
        self.caches.iter().map(|cc| self.drain_one(cc)).sum()
    }

    /// Moves every cached page and the zero pool back to the free lists (so
    /// per-order counts are exact, e.g. before comparing them). Other CPUs
    /// may fill their caches again at once: callers that compare counts run
    /// with the others parked (`crate::run_alone`).
    pub fn drain_cache(&self) {
        self.reclaim_caches();
        self.drain_zeroed_locked(&mut self.free.lock());
    }

    /// Pages in all the caches, for a caller holding F (see
    /// `CpuCache::len`).
    pub(super) fn cached_locked(&self) -> u64 {
        self.caches.iter().map(CpuCache::len).sum()
    }
}

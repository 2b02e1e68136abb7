//! The physical page allocator: a binary buddy system over the page array, in
//! the manner of FreeBSD's `vm_phys`, with a small order-0 cache in front.
//!
//! Physical memory is a set of *segments* (contiguous ranges of frames). Each
//! segment's frames have consecutive records in the page array, so
//! frame → record is a segment lookup (at most [`MAX_SEGMENTS`], a constant)
//! and a subtraction, and record → frame is a field.
//!
//! Free memory is kept as naturally aligned blocks of 2^order pages,
//! order 0 (4 KiB) to [`MAX_ORDER`] (4 MiB), on one doubly linked free list per
//! order, threaded through the records' `next`/`prev` fields. Only the first
//! page of a free block ("the head") carries the order; every page of a free
//! block carries [`PageFlags::FREE`], so a double free is caught on the spot.
//! Allocation takes the smallest block that fits and splits it; freeing merges
//! a block with its buddy (the block at `address ^ size`) while the buddy is a
//! free block of the same order in the same segment.
//!
//! Order-0 requests, by far the most common, go through a per-CPU cache of
//! up to [`CACHE_SIZE`] free pages that is refilled from and drained to the
//! free lists [`CACHE_BATCH`] pages at a time, so most allocate/free pairs
//! never touch the lists, and CPUs allocating at once seldom meet (see
//! [`cache`]). The allocation counters are per CPU too
//! ([`crate::counter`]).
//!
//! Pages can be zeroed ahead of need, at idle time (FreeBSD's historical
//! `vm_page_zero_idle` and `PG_ZERO` pages): [`PhysMem::zero_idle`] takes a
//! free page, zeroes it and keeps it in the *zero pool*, a stack of free pages
//! known to be zero. An allocation that will zero its page anyway (a zero-fill
//! fault, a page table: [`AllocFlags::PREFER_ZERO`], [`AllocFlags::ZERO`])
//! takes from the pool first and skips the zeroing; every other allocation
//! takes from the pool only when nothing else is left. The pool holds at most
//! half the free pages ([`ZERO_POOL_SHARE`]), and is given back to the free
//! lists when a multi-page allocation cannot be met and by
//! [`PhysMem::drain_cache`].
//!
//! Locks, in order: a CPU's cache lock, then the free-list lock (F), then the
//! zero-pool lock (Z); the page-queue lock (Q) is taken alone (see
//! [`crate::queue`]).
//!
//! Rejected: a bitmap allocator (linear scans for large blocks, no cheap
//! contiguous runs) and one list with sorting (no O(1) coalescing).

use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::Mutex;
use crate::witness::order;
use bitflags::bitflags;

use crate::page::{NIL, NOT_FREE_HEAD, Page, PageFlags, PageIndex, Queue};
use crate::queue::Queues;
use crate::{PAGE_SHIFT, PAGE_SIZE};

pub mod cache;
mod lifecycle;
mod zero;

use crate::counter::{MAX_CPUS, PerCpuCounter};
use cache::CpuCache;

/// Largest block order: 2^10 pages = 4 MiB.
pub const MAX_ORDER: u8 = 10;
pub const NUM_ORDERS: usize = MAX_ORDER as usize + 1;
/// Most physical segments the allocator manages.
pub const MAX_SEGMENTS: usize = 16;
/// Capacity of each CPU's order-0 cache.
pub const CACHE_SIZE: usize = 256;
/// Pages moved between the cache and the free lists at a time.
pub const CACHE_BATCH: usize = 64;
/// The zero pool grows, at idle time, to at most 1/`ZERO_POOL_SHARE` of the
/// free pages (FreeBSD's idle zeroing stopped at 4/5; half leaves the rest
/// to merge into large blocks).
pub const ZERO_POOL_SHARE: u64 = 2;

/// A range of physical addresses, `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub fn pages(&self) -> u64 {
        (self.end - self.start) >> PAGE_SHIFT
    }

    pub fn contains(&self, pa: u64) -> bool {
        self.start <= pa && pa < self.end
    }
}

/// One segment: a physically contiguous range with consecutive records.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub range: PhysRange,
    /// Index of the record of `range.start`.
    pub first: PageIndex,
}

bitflags! {
    /// What the caller wants from an allocation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct AllocFlags: u32 {
        /// Contents must be zero (zeroed now unless already known zero).
        const ZERO = 1 << 0;
        /// Do not busy the page (rule 1: the default is exclusively busy).
        const NOBUSY = 1 << 1;
        /// Return the page wired once.
        const WIRED = 1 << 2;
        /// The page belongs to no object and never will: page-table pages,
        /// kernel memory (rule 11). Implies NOBUSY.
        const UNMANAGED = 1 << 3;
        /// The kernel's own memory that freeing memory depends on (trie and
        /// PV nodes, I/O buffers): may take the last free pages, below
        /// [`Levels::reserve`] (FreeBSD's `VM_ALLOC_SYSTEM`).
        const SYSTEM = 1 << 4;
        /// A page from the zero pool if it has one (FreeBSD's
        /// `VM_ALLOC_ZERO`): the caller zeroes the page unless it comes
        /// with [`PageFlags::ZERO`].
        const PREFER_ZERO = 1 << 5;
    }
}

/// Why the allocator could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhysError {
    TooManySegments,
    /// Segment not page aligned, empty, or overlapping another.
    BadSegment(PhysRange),
    /// The record storage is smaller than [`PhysMem::records_needed`].
    StorageTooSmall {
        needed: usize,
        got: usize,
    },
}

/// The free lists. (F)
pub(crate) struct FreeLists {
    pub(crate) heads: [PageIndex; NUM_ORDERS],
    /// Blocks on each list.
    pub(crate) blocks: [u64; NUM_ORDERS],
    /// Pages on all lists.
    pub(crate) pages: u64,
}

/// The zero pool: free pages known to be zero, a stack threaded through the
/// records' `next` fields. (Z)
pub(crate) struct ZeroPool {
    pub(crate) head: PageIndex,
    pub(crate) len: u64,
}

/// Allocation statistics, per CPU ([`crate::counter`]). (A)
#[derive(Debug, Default)]
pub struct Stats {
    pub allocs: PerCpuCounter,
    pub frees: PerCpuCounter,
    pub failures: PerCpuCounter,
}

/// The free-page levels the pageout daemon works to (FreeBSD's
/// `v_free_reserved` and `v_free_target`), in pages. Both start at 0: no
/// reserve, no daemon (the host models of the allocator).
#[derive(Default, Debug)]
pub struct Levels {
    /// Only `SYSTEM` allocations take pages below this: the rest is for the
    /// kernel's own memory that the pageout path needs to free memory (trie
    /// and PV nodes, DMA buffers). (A)
    pub reserve: AtomicU64,
    /// Below this the pageout daemon is woken. (A)
    pub target: AtomicU64,
}

/// Wakes the pageout daemon: installed by the kernel (once, at boot).
static PAGEOUT_WAKEUP: spin::Once<fn()> = spin::Once::new();

/// Installs the pageout daemon's wakeup, called when an allocation finds
/// free pages below [`Levels::target`].
pub fn set_pageout_wakeup(f: fn()) {
    PAGEOUT_WAKEUP.call_once(|| f);
}

/// The page array and the allocator over it.
pub struct PhysMem {
    pub(crate) pages: &'static [Page],
    segments: [Segment; MAX_SEGMENTS],
    nsegments: usize,
    /// Virtual address of physical address 0 (the direct map), or `None` when
    /// page contents are not accessible (host models of the allocator).
    direct_map: Option<usize>,
    pub(crate) free: Mutex<FreeLists>,
    /// Each CPU's order-0 cache ([`cache`]).
    pub(crate) caches: [CpuCache; MAX_CPUS],
    pub(crate) zeroed: Mutex<ZeroPool>,
    /// `ZeroPool::len`, written under Z: an allocation that finds it 0
    /// does not take Z (the pool is empty whenever the idle zeroing falls
    /// behind, as it does while CPUs fault in anonymous memory). A stale 0
    /// only costs zeroing a page that a pooled one could have spared.
    pub(crate) zeroed_len: AtomicU64,
    /// `FreeLists::pages`, for a reader that may not take the free-list
    /// lock. (written under F)
    listed: AtomicU64,
    /// Pages taken from the free lists to be zeroed for the pool, not in it
    /// yet: still free, as [`PhysMem::free_count`] counts them. (Raised
    /// under F, lowered under Z: a reader holding both sees each such page
    /// exactly once.)
    zeroing: AtomicU64,
    pub(crate) queues: Mutex<Queues>,
    /// Each CPU's batch of pages bound for a queue ([`crate::queue::batch`]).
    pub(crate) batches: [crate::queue::batch::CpuBatch; MAX_CPUS],
    pub stats: Stats,
    pub levels: Levels,
}

impl PhysMem {
    /// Records needed for these segments.
    pub fn records_needed(segments: &[PhysRange]) -> usize {
        segments.iter().map(|s| s.pages() as usize).sum()
    }

    /// Builds the page array in `storage` for `segments` (sorted or not) and
    /// an allocator with nothing free: every record starts reserved. Call
    /// [`PhysMem::add_free_range`] for the memory that is really free.
    pub fn new(
        segments: &[PhysRange],
        storage: &'static mut [MaybeUninit<Page>],
        direct_map: Option<usize>,
    ) -> Result<PhysMem, PhysError> {
        if segments.len() > MAX_SEGMENTS {
            return Err(PhysError::TooManySegments);
        }
        let needed = Self::records_needed(segments);
        if storage.len() < needed {
            return Err(PhysError::StorageTooSmall { needed, got: storage.len() });
        }
        let mut sorted: Vec<PhysRange> = segments.to_vec();
        sorted.sort_by_key(|s| s.start);
        for (i, s) in sorted.iter().enumerate() {
            let aligned = s.start % PAGE_SIZE as u64 == 0 && s.end % PAGE_SIZE as u64 == 0;
            let overlaps = i > 0 && sorted[i - 1].end > s.start;
            if !aligned || s.end <= s.start || overlaps {
                return Err(PhysError::BadSegment(*s));
            }
        }
        let mut segs = [Segment { range: PhysRange { start: 0, end: 0 }, first: 0 }; MAX_SEGMENTS];
        let mut next = 0usize;
        for (i, s) in sorted.iter().enumerate() {
            segs[i] = Segment { range: *s, first: next as PageIndex };
            for p in 0..s.pages() {
                storage[next].write(Page::new(s.start + (p << PAGE_SHIFT), i as u8));
                next += 1;
            }
        }
        let storage: &'static mut [MaybeUninit<Page>] = &mut storage[..needed];
        // SAFETY: the first `needed` elements were each initialised by the
        // loop above (one per page of every segment, `next` == `needed`), and
        // MaybeUninit<Page> has the layout of Page.
        let pages: &'static [Page] = unsafe { core::slice::from_raw_parts(storage.as_ptr() as *const Page, needed) };
        Ok(PhysMem {
            pages,
            segments: segs,
            nsegments: sorted.len(),
            direct_map,
            free: Mutex::ranked(FreeLists { heads: [NIL; NUM_ORDERS], blocks: [0; NUM_ORDERS], pages: 0 }, &order::FREE_LISTS),
            caches: cache::new_caches(),
            zeroed: Mutex::ranked(ZeroPool { head: NIL, len: 0 }, &order::ZERO_POOL),
            listed: AtomicU64::new(0),
            zeroing: AtomicU64::new(0),
            zeroed_len: AtomicU64::new(0),
            queues: Mutex::ranked(Queues::new(), &order::PAGE_QUEUES),
            batches: crate::queue::batch::new_batches(),
            stats: Stats::default(),
            levels: Levels::default(),
        })
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.nsegments]
    }

    /// Every record.
    pub fn pages(&self) -> &'static [Page] {
        self.pages
    }

    /// The record at `index`.
    #[inline]
    pub fn page(&self, index: PageIndex) -> &'static Page {
        &self.pages[index as usize]
    }

    /// The index of a record of this array.
    #[inline(always)]
    pub fn index_of(&self, page: &Page) -> PageIndex {
        let base = self.pages.as_ptr() as usize;
        let at = page as *const Page as usize;
        let i = (at - base) / core::mem::size_of::<Page>();
        assert!(at >= base && i < self.pages.len(), "page record not in this page array");
        i as PageIndex
    }

    fn segment_of(&self, pa: u64) -> Option<&Segment> {
        self.segments().iter().find(|s| s.range.contains(pa))
    }

    /// The record of the frame containing `pa`, if the allocator manages it.
    pub fn page_of(&self, pa: u64) -> Option<&'static Page> {
        let s = self.segment_of(pa)?;
        Some(&self.pages[s.first as usize + ((pa - s.range.start) >> PAGE_SHIFT) as usize])
    }

    /// The record of the frame whose contents are at kernel virtual address
    /// `addr` (through the direct map).
    pub fn page_of_addr(&self, addr: *const u8) -> Option<&'static Page> {
        let pa = (addr as usize).checked_sub(self.direct_map?)?;
        self.page_of(pa as u64)
    }

    /// Kernel virtual address of `page`'s contents, if they are accessible.
    #[inline]
    pub fn page_addr(&self, page: &Page) -> Option<*mut u8> {
        self.direct_map.map(|d| (d + page.phys() as usize) as *mut u8)
    }

    /// Fills `pages` pages from `page` with `byte`, with 8-byte stores: under
    /// software emulation `write_bytes` (`memset`, `rep stosb`) is about ten
    /// times slower (`kernel.zero.*`).
    fn fill(&self, page: &Page, pages: usize, byte: u8) {
        if let Some(p) = self.page_addr(page) {
            let word = u64::from_ne_bytes([byte; 8]);
            for i in 0..pages * PAGE_SIZE / 8 {
                // SAFETY: the direct map covers every frame of every segment,
                // the `pages` frames from `page` are in one segment (a block),
                // and the caller owns them (just allocated, or being freed);
                // pages are 8-aligned. Volatile keeps this from becoming
                // `memset` again.
                unsafe { (p as *mut u64).add(i).write_volatile(word) };
            }
        }
    }

    // ---- free lists (F) -------------------------------------------------------

    fn list_push(&self, fl: &mut FreeLists, idx: PageIndex, order: u8) {
        let page = self.page(idx);
        page.order.store(order, Ordering::Relaxed);
        page.prev.store(NIL, Ordering::Relaxed);
        let head = fl.heads[order as usize];
        page.next.store(head, Ordering::Relaxed);
        if head != NIL {
            self.page(head).prev.store(idx, Ordering::Relaxed);
        }
        fl.heads[order as usize] = idx;
        fl.blocks[order as usize] += 1;
        fl.pages += 1 << order;
        self.listed.store(fl.pages, Ordering::Relaxed);
    }

    fn list_remove(&self, fl: &mut FreeLists, idx: PageIndex, order: u8) {
        let page = self.page(idx);
        debug_assert_eq!(page.free_order(), Some(order));
        let (next, prev) = (page.next.load(Ordering::Relaxed), page.prev.load(Ordering::Relaxed));
        if prev == NIL {
            fl.heads[order as usize] = next;
        } else {
            self.page(prev).next.store(next, Ordering::Relaxed);
        }
        if next != NIL {
            self.page(next).prev.store(prev, Ordering::Relaxed);
        }
        page.next.store(NIL, Ordering::Relaxed);
        page.prev.store(NIL, Ordering::Relaxed);
        page.order.store(NOT_FREE_HEAD, Ordering::Relaxed);
        fl.blocks[order as usize] -= 1;
        fl.pages -= 1 << order;
        self.listed.store(fl.pages, Ordering::Relaxed);
    }

    /// Index of the buddy of the order-`order` block at `idx`, if it lies in
    /// the same segment.
    fn buddy(&self, idx: PageIndex, order: u8) -> Option<PageIndex> {
        let page = self.page(idx);
        let seg = &self.segments[page.segment as usize];
        let pa = page.phys() ^ ((PAGE_SIZE as u64) << order);
        if !seg.range.contains(pa) {
            return None;
        }
        Some(seg.first + ((pa - seg.range.start) >> PAGE_SHIFT) as PageIndex)
    }

    /// Puts the block at `idx` on the free lists, merging with its buddies.
    fn free_block_locked(&self, fl: &mut FreeLists, mut idx: PageIndex, mut order: u8) {
        while order < MAX_ORDER {
            let Some(b) = self.buddy(idx, order) else { break };
            if self.page(b).free_order() != Some(order) {
                break;
            }
            self.list_remove(fl, b, order);
            idx = idx.min(b);
            order += 1;
        }
        self.list_push(fl, idx, order);
    }

    /// Takes a block of `order` from the lists, splitting a larger one.
    fn alloc_block_locked(&self, fl: &mut FreeLists, order: u8) -> Option<PageIndex> {
        let mut k = order;
        while fl.heads[k as usize] == NIL {
            k += 1;
            if k > MAX_ORDER {
                return None;
            }
        }
        let idx = fl.heads[k as usize];
        self.list_remove(fl, idx, k);
        while k > order {
            k -= 1;
            self.list_push(fl, idx + (1 << k), k);
        }
        Some(idx)
    }

    /// Releases `range` (page aligned, inside one segment, all reserved) to
    /// the free lists: boot-time setup, and reclaiming boot memory.
    pub fn add_free_range(&self, range: PhysRange) {
        let seg = self.segment_of(range.start).copied();
        let seg = seg.unwrap_or_else(|| panic!("free range {range:?} is in no segment"));
        assert!(range.end <= seg.range.end, "free range {range:?} crosses a segment end");
        let from = seg.first + ((range.start - seg.range.start) >> PAGE_SHIFT) as PageIndex;
        let to = from + range.pages() as PageIndex;
        for i in from..to {
            let p = self.page(i);
            assert!(p.flags().contains(PageFlags::RESERVED), "page {:#x} freed twice at boot", p.phys());
            p.make_free(false);
        }
        self.free_span_locked(&mut self.free.lock(), from, to);
    }

    // ---- allocation -------------------------------------------------------------

    /// Marks the `n` pages from `idx` allocated with `flags`, zeroing if asked.
    fn prepare(&self, idx: PageIndex, n: usize, flags: AllocFlags) -> &'static Page {
        for i in 0..n as u32 {
            self.prepare_one(self.page(idx + i), flags);
        }
        self.stats.allocs.add(n as u64);
        self.page(idx)
    }

    /// Marks one page allocated with `flags`, zeroing it if asked.
    #[inline]
    fn prepare_one(&self, p: &'static Page, flags: AllocFlags) {
        let pf = if flags.contains(AllocFlags::UNMANAGED) { PageFlags::UNMANAGED } else { PageFlags::empty() };
        p.take_from_free(pf);
        if flags.contains(AllocFlags::ZERO) && !p.flags().contains(PageFlags::ZERO) {
            self.fill(p, 1, 0);
            p.set_flags(PageFlags::ZERO);
        }
        if !flags.intersects(AllocFlags::NOBUSY | AllocFlags::UNMANAGED) {
            let ok = p.try_xbusy();
            debug_assert!(ok, "free page {:#x} was busy", p.phys());
        }
        if flags.contains(AllocFlags::WIRED) {
            p.wire();
        }
    }

    /// Allocates one page: exclusively busy unless `NOBUSY`/`UNMANAGED` (rule 1).
    /// `None` when memory is exhausted; nothing panics on shortage. A page
    /// that will be zeroed (`ZERO`, `PREFER_ZERO`) comes from the zero pool
    /// if it has one; any other, only when nothing else is free.
    ///
    /// Only a `SYSTEM` allocation takes from the last [`Levels::reserve`]
    /// free pages (user pages and page tables wait for the pageout daemon);
    /// an allocation that leaves fewer than [`Levels::target`] wakes the
    /// pageout daemon. (The zero pool's pages count as free; the caches'
    /// few do not. An allocation that finds nothing else drains the other
    /// CPUs' caches before it fails.)
    #[track_caller]
    pub fn alloc(&self, flags: AllocFlags) -> Option<&'static Page> {
        self.alloc_inline(flags)
    }

    /// [`PhysMem::alloc`], inlined into the caller: for the page-fault
    /// path's allocation, where the call and return of an ordinary call are
    /// (under emulation) a good part of the cost of taking a page. The
    /// refill of the cache from the free lists stays out of line.
    #[track_caller]
    #[inline(always)]
    pub fn alloc_inline(&self, flags: AllocFlags) -> Option<&'static Page> {
        let keep = if flags.contains(AllocFlags::SYSTEM) { 0 } else { self.levels.reserve.load(Ordering::Relaxed) };
        let mut low = false;
        let zeroed =
            if flags.intersects(AllocFlags::ZERO | AllocFlags::PREFER_ZERO) { self.zeroed_pop(keep, &mut low) } else { None };
        let idx = zeroed.or_else(|| self.cache_pop(keep, &mut low));
        let idx = idx.or_else(|| self.zeroed_pop(keep, &mut low));
        let idx = idx.or_else(|| self.alloc_reclaiming(keep, &mut low));
        if low {
            self.wake_pageout();
        }
        match idx {
            Some(i) => {
                let p = self.page(i);
                if cfg!(debug_assertions) {
                    self.check_zero_flag(p);
                }
                self.prepare_one(p, flags);
                self.stats.allocs.inc();
                Some(p)
            }
            None => {
                self.stats.failures.inc();
                None
            }
        }
    }

    /// The last try of an order-0 allocation that found nothing: the
    /// pages other CPUs' caches hold go back to the lists, and the running
    /// CPU's cache is refilled from there.
    #[cold]
    #[inline(never)]
    fn alloc_reclaiming(&self, keep: u64, low: &mut bool) -> Option<PageIndex> {
        // Whatever this moved: another CPU's drain may have moved the
        // pages to the lists a moment ago.
        self.reclaim_caches();
        self.cache_pop(keep, low)
    }

    /// Wakes the pageout daemon: free memory fell below its target.
    #[inline(never)]
    fn wake_pageout(&self) {
        if let Some(wake) = PAGEOUT_WAKEUP.get() {
            wake();
        }
    }

    /// Allocates a naturally aligned block of 2^`order` pages, unbusied and
    /// unmanaged-or-not per `flags` (every page prepared alike).
    pub fn alloc_order(&self, order: u8, flags: AllocFlags) -> Option<&'static Page> {
        if order == 0 {
            return self.alloc(flags);
        }
        if order > MAX_ORDER {
            return None;
        }
        let idx = {
            let mut fl = self.free.lock();
            self.alloc_block_locked(&mut fl, order).or_else(|| {
                // The zero pool's pages may be what is missing from a block.
                self.drain_zeroed_locked(&mut fl).then(|| self.alloc_block_locked(&mut fl, order)).flatten()
            })
        };
        match idx {
            Some(i) => Some(self.prepare(i, 1 << order, flags)),
            None => {
                self.stats.failures.inc();
                None
            }
        }
    }

    /// Allocates `npages` physically contiguous pages whose first address is
    /// a multiple of `align` bytes, that do not cross a multiple of `boundary`
    /// bytes (0: no limit), and lie inside `[low, high)`. For DMA buffers.
    /// Runs longer than a largest block (4 MiB) are not supported.
    pub fn alloc_contig(
        &self,
        npages: usize,
        align: u64,
        boundary: u64,
        low: u64,
        high: u64,
        flags: AllocFlags,
    ) -> Option<&'static Page> {
        if npages == 0 || !align.is_power_of_two() || (boundary != 0 && !boundary.is_power_of_two()) {
            return None;
        }
        let size = (npages as u64) << PAGE_SHIFT;
        if boundary != 0 && size > boundary {
            return None;
        }
        // A naturally aligned block of `order` satisfies both the alignment
        // and (being no larger than the boundary) the boundary.
        let order = npages.next_power_of_two().trailing_zeros().max((align >> PAGE_SHIFT).trailing_zeros());
        if order > MAX_ORDER as u32 {
            return None;
        }
        let order = order as u8;
        let mut fl = self.free.lock();
        // A second search if the first fails, with the zero pool's pages
        // back on the lists.
        for attempt in 0..2 {
            if attempt == 1 && !self.drain_zeroed_locked(&mut fl) {
                break;
            }
            for k in order..=MAX_ORDER {
                let mut idx = fl.heads[k as usize];
                while idx != NIL {
                    let next = self.page(idx).next.load(Ordering::Relaxed);
                    let start = self.page(idx).phys();
                    let block_end = start + ((PAGE_SIZE as u64) << k);
                    // First sub-block of `order` inside this block and [low, high).
                    let sub = (PAGE_SIZE as u64) << order;
                    let first = low.max(start).next_multiple_of(sub);
                    if first + size <= block_end.min(high) {
                        self.list_remove(&mut fl, idx, k);
                        // Give back what lies before and after the run.
                        let run = idx + ((first - start) >> PAGE_SHIFT) as PageIndex;
                        self.free_span_locked(&mut fl, idx, run);
                        self.free_span_locked(&mut fl, run + npages as PageIndex, idx + (1u32 << k));
                        drop(fl);
                        return Some(self.prepare(run, npages, flags));
                    }
                    idx = next;
                }
            }
        }
        self.stats.failures.inc();
        None
    }

    /// Frees the pages `[from, to)` (indices in one segment, already marked
    /// free or just taken off a list) as maximal aligned blocks.
    fn free_span_locked(&self, fl: &mut FreeLists, from: PageIndex, to: PageIndex) {
        let mut i = from;
        while i < to {
            // The largest block that starts here aligned and fits in the span.
            let pfn = self.page(i).phys() >> PAGE_SHIFT;
            let left = to - i;
            let order = (pfn.trailing_zeros() as u8).min(MAX_ORDER).min(left.ilog2() as u8);
            self.free_block_locked(fl, i, order);
            i += 1 << order;
        }
    }

    // ---- freeing ------------------------------------------------------------

    /// Checks that `page` may be freed (the assertions of FreeBSD's
    /// `vm_page_free_prep`), takes it off its paging queue, and junk-fills it
    /// in debug builds so that a use after free shows.
    fn free_prep(&self, page: &Page, zeroed: bool) {
        let f = page.flags();
        assert!(!f.contains(PageFlags::FREE), "page {:#x}: freed twice", page.phys());
        assert!(!f.contains(PageFlags::RESERVED), "page {:#x}: freeing reserved (kernel) memory", page.phys());
        assert!(!page.wired(), "page {:#x}: freeing a wired page (wire count {})", page.phys(), page.wire_count());
        assert!(page.mapping_count() == 0, "page {:#x}: freeing a mapped page ({} mappings)", page.phys(), page.mapping_count());
        assert!(
            page.object().is_none(),
            "page {:#x}: freeing a page still in object {:#x} at index {}",
            page.phys(),
            page.object().unwrap_or(0),
            page.pindex()
        );
        assert!(
            page.sbusy_count() == 0,
            "page {:#x}: freeing a page shared-busied by {} others",
            page.phys(),
            page.sbusy_count()
        );
        // Under the queue lock, not by a look at the page's queue: a last
        // unwire may be queueing the page this moment (it dropped the
        // wiring, we took the page from its object after: lifecycle.rs).
        if page.is_managed() {
            self.dequeue(page);
        }
        if cfg!(debug_assertions) && !zeroed {
            self.fill(page, 1, 0xDB);
        }
        page.make_free(zeroed);
        self.stats.frees.inc();
    }

    /// Frees one page. The caller may hold its exclusive busy lock (it is
    /// released); anything else that still refers to the page is a bug and
    /// panics: wired, mapped, in an object, shared-busy, already free.
    pub fn free(&self, page: &'static Page) {
        #[cfg(loom)]
        if crate::sync::model::broken(crate::sync::model::Break::CachedBeforeFree) {
            self.free_to_cache(self.index_of(page));
            self.free_prep(page, false);
            return;
        }
        self.free_prep(page, false);
        self.free_to_cache(self.index_of(page));
    }

    /// Frees a page the caller knows is all zeroes.
    pub fn free_zeroed(&self, page: &'static Page) {
        self.free_prep(page, true);
        self.free_to_cache(self.index_of(page));
    }

    /// Frees `npages` contiguous pages from `first` (from `alloc_contig` or
    /// `alloc_order`).
    pub fn free_contig(&self, first: &'static Page, npages: usize) {
        let idx = self.index_of(first);
        for i in 0..npages as u32 {
            self.free_prep(self.page(idx + i), false);
        }
        self.free_span_locked(&mut self.free.lock(), idx, idx + npages as PageIndex);
    }

    /// Free pages, on the lists, in the CPUs' caches and in the zero pool.
    pub fn free_count(&self) -> u64 {
        // F and Z at once: a page moving between a cache, the lists and the
        // zero pool on another CPU is counted once (every such move holds
        // F: `CpuCache::len`), and one being zeroed for the pool too.
        let fl = self.free.lock();
        let z = self.zeroed.lock();
        self.cached_locked() + fl.pages + z.len + self.zeroing.load(Ordering::Relaxed)
    }

    /// Free blocks on each order's list (the caches not included).
    pub fn free_blocks(&self) -> [u64; NUM_ORDERS] {
        self.free.lock().blocks
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod proptests;

#[cfg(target_os = "none")]
mod ktests;

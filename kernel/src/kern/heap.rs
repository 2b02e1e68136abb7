//! The kernel heap: `malloc(9)` over slabs, as FreeBSD's is over UMA.
//!
//! The heap backs `alloc` (Box, Vec, ...) for kernel data structures that
//! are not pages. Where a request goes:
//!
//! | request | from |
//! | --- | --- |
//! | up to [`MAX_SMALL`] bytes | the smallest size class that holds it (16, 32, 48, 64, 96, ... 2048 bytes: powers of two and the halves between them), one [`vm::zone::Keg`] each, in slabs of one to four pages |
//! | larger | a run of whole pages of its own (`alloc_contig`), given back when freed |
//! | anything, before the page allocator exists, or when the page allocator may not be called (interrupts off) and no slab has room, or pages are short | the boot arena ([`HEAP_SIZE`], `linked_list_allocator`), carved from the early frames at boot and kept for good |
//!
//! Every page comes from the page allocator unmanaged ("no object") and is
//! reached through the direct map, so the heap needs no page tables. An
//! item's class is computed again from the `Layout` that `dealloc` is given
//! (the same for a block's allocation and its free), and its slab from its
//! address (slabs are aligned to their size, their header at their end:
//! `vm::zone`); a block in the boot arena is known by its address.
//!
//! Classes whose size is a power of two hand out items aligned to their
//! size, the others (48, 96, ...) to the largest power of two dividing it: a
//! request goes to the first class at least as large and as aligned.
//!
//! **Reclaim.** A slab that empties stays on its class's empty list; each
//! class keeps [`KEEP_EMPTY`] of them and gives the others back to the page
//! allocator as they empty. [`reclaim`] (called by the pageout daemon when
//! free memory is short, as FreeBSD's `uma_reclaim`) gives every empty slab
//! back.
//!
//! **Locking.** One interrupt-safe lock (an `IrqMutex`, H) over the kegs,
//! the boot arena and the counters: the heap is reached from code that runs
//! with interrupts off (the process table, an interrupt handler's console),
//! so a holder must never be interrupted or preempted with it. The page
//! allocator's locks are plain, only ever taken with interrupts on, so the
//! heap takes and gives back pages only after it has let its own lock go,
//! and only when its caller had interrupts on and is not an interrupt
//! handler. With interrupts off a request the slabs cannot serve goes to the
//! boot arena, an emptied slab waits on its empty list, and a freed page run
//! waits on the deferred list for the next call with interrupts on.
//!
//! Allocation failure is reported by `alloc` in the usual way; code on a
//! path a program or memory pressure can reach uses the fallible APIs
//! (`try_reserve`, `Box::try_new`) and treats a failure as memory shortage,
//! never as a bug. Slab and page allocations are ordinary ones (not
//! `SYSTEM`): they leave the pageout daemon's reserve alone, and when they
//! fail the boot arena is the heap's own reserve. That matters: freeing
//! memory allocates (the swap pager's transfer buffers, trie nodes of the
//! swap metadata), at the moment pages are shortest.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use linked_list_allocator::Heap;
use vm::phys::AllocFlags;
use vm::zone::Keg;
use x86_64::instructions::interrupts;

use crate::kern::memory::{EARLY_FRAMES, PAGE_SIZE, PhysRange};
use crate::kern::sync::IrqMutex;

/// Size of the boot arena: what the kernel allocates before the page
/// allocator exists (a few hundred KiB) and the heap's reserve for
/// requests made with interrupts off or while pages are short (the swap
/// pager's transfer buffers are the largest, 160 KiB).
pub const HEAP_SIZE: u64 = 2 << 20;
/// The largest request served from a size class; larger ones get pages.
pub const MAX_SMALL: usize = 2048;
/// Empty slabs a class keeps when they empty (until [`reclaim`]).
pub const KEEP_EMPTY: usize = 1;

const PAGE: usize = PAGE_SIZE as usize;

/// The size classes: (item size, pages per slab). Slabs of the larger
/// classes span several pages so that a slab holds at least 7 items.
const CLASSES: [(usize, usize); NCLASSES] = [
    (16, 1),
    (32, 1),
    (48, 1),
    (64, 1),
    (96, 1),
    (128, 1),
    (192, 1),
    (256, 1),
    (384, 1),
    (512, 1),
    (768, 2),
    (1024, 2),
    (1536, 4),
    (2048, 4),
];
pub const NCLASSES: usize = 14;

/// The smallest class holding each size, by `size.div_ceil(16)`.
const CLASS_BY_SIZE: [u8; MAX_SMALL / 16 + 1] = {
    let mut t = [0u8; MAX_SMALL / 16 + 1];
    let mut i = 0;
    let mut c = 0;
    while i < t.len() {
        while CLASSES[c].0 < i * 16 {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// The alignment a class's items have: the largest power of two dividing
/// its size.
const fn class_align(c: usize) -> usize {
    1 << CLASSES[c].0.trailing_zeros()
}

/// The class serving `layout`, or `None` for a page run.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align());
    if size > MAX_SMALL {
        return None;
    }
    let mut c = CLASS_BY_SIZE[size.div_ceil(16)] as usize;
    // A power-of-two class at least as large as `size` satisfies any
    // alignment up to it, so this stops within the table.
    while class_align(c) < layout.align() {
        c += 1;
    }
    Some(c)
}

/// Pages of a page-run request.
fn run_pages(layout: Layout) -> usize {
    layout.size().div_ceil(PAGE).max(1)
}

/// A page run freed with interrupts off, waiting in its own first bytes for
/// the page allocator. (H)
struct Deferred {
    next: *mut Deferred,
    pages: usize,
}

/// Everything behind the heap's lock. (H, every field.)
/// Everything here is the heap lock's (H).
struct Inner {
    /// One keg of slabs per size class. (H)
    kegs: [Keg; NCLASSES],
    /// Items allocated per class, since boot. (H)
    allocs: [u64; NCLASSES],
    /// The boot arena. (H)
    boot: Heap,
    /// Page runs handed out: how many, their requested bytes, their pages
    /// (the deferred ones' included until they are freed). (H)
    large_blocks: usize,
    large_bytes: usize,
    large_pages: usize,
    /// Frees put off until pages may be released. (H)
    deferred: *mut Deferred,
    /// Allocations served by the boot arena once the page allocator was up. (H)
    fallbacks: u64,
    /// Pages given back by [`reclaim`] and by classes over their keep, since
    /// boot. (H)
    released: u64,
    /// The page runs being watched ([`watch_runs`]): each live one's
    /// address (0: a free slot) and where it was asked for. (H)
    watched: [(usize, [u64; WATCH_FRAMES]); WATCHED],
}

// SAFETY: the raw pointers (in the kegs and the deferred list) name memory
// the heap owns; they are only followed with the lock held.
unsafe impl Send for Inner {}

impl Inner {
    fn boot_alloc(&mut self, layout: Layout) -> *mut u8 {
        self.boot.allocate_first_fit(layout).map_or(ptr::null_mut(), |p| p.as_ptr())
    }
}

/// The kernel's allocator.
struct KernelHeap {
    /// The heap lock (H), interrupt-safe, and what it protects.
    inner: IrqMutex<Inner>,
}

#[global_allocator]
static ALLOCATOR: KernelHeap = KernelHeap {
    inner: IrqMutex::ranked(
        Inner {
            kegs: {
                let mut k = [const { Keg::new(16, PAGE) }; NCLASSES];
                let mut c = 0;
                while c < NCLASSES {
                    k[c] = Keg::new(CLASSES[c].0, CLASSES[c].1 * PAGE);
                    c += 1;
                }
                k
            },
            allocs: [0; NCLASSES],
            boot: Heap::empty(),
            large_blocks: 0,
            large_bytes: 0,
            large_pages: 0,
            deferred: ptr::null_mut(),
            fallbacks: 0,
            released: 0,
            watched: [(0, [0; WATCH_FRAMES]); WATCHED],
        },
        &vm::witness::order::HEAP,
    ),
};

/// The boot arena's range, set once by [`init`]: a block is the arena's
/// when its address is in it. (Written once before any allocation.)
static BOOT_START: AtomicUsize = AtomicUsize::new(0);
static BOOT_END: AtomicUsize = AtomicUsize::new(0);
/// Whether page runs wait on the deferred list. (A; a hint, checked again
/// under the lock.)
static DEFERRED: AtomicBool = AtomicBool::new(false);

fn in_boot_arena(p: *mut u8) -> bool {
    (BOOT_START.load(Ordering::Relaxed)..BOOT_END.load(Ordering::Relaxed)).contains(&(p as usize))
}

/// Debug builds refuse the heap to code under the scheduler lock: the
/// scheduler runs with interrupts off and must never wait for memory or
/// for the heap's lock (it frees and allocates only outside its lock).
#[track_caller]
fn check_context() {
    if cfg!(debug_assertions)
        && let Some(site) = crate::kern::sched::lock_holder()
    {
        panic!("heap used with the scheduler lock held (taken at {site}); the allocation is in the backtrace");
    }
}

/// Whether the heap may call the page allocator now (see the module docs).
fn may_use_pages() -> bool {
    interrupts::are_enabled() && !crate::kern::sync::in_interrupt() && vm::try_global().is_some()
}

/// Debug builds: when set, every allocation calls [`held_point`] with the
/// heap's lock held, for tests that need a trap at that moment. (A)
static HELD_POINT: AtomicBool = AtomicBool::new(false);

/// Called with the heap's lock held while [`HELD_POINT`] is set: a place to
/// put a breakpoint (`break_once_preempting`).
#[inline(never)]
fn held_point() {
    core::hint::black_box(());
}

/// Gives `pages` pages from `addr` (a slab or a page run) back to the page
/// allocator. Interrupts on, the heap's lock not held.
/// How the heap takes pages: as an ordinary allocation, which leaves the
/// reserve alone, except in the threads given the reserve
/// ([`let_use_reserve`]: the pageout threads).
fn page_flags() -> AllocFlags {
    let me = crate::kern::sched::current();
    let reserved = me != 0 && RESERVE_THREADS.iter().any(|t| t.load(Ordering::Relaxed) == me);
    if reserved { AllocFlags::UNMANAGED | AllocFlags::SYSTEM } else { AllocFlags::UNMANAGED }
}

/// The threads whose heap pages may come from the page reserve (0: free
/// slot). (A; Relaxed: filled once at boot, before any allocation of
/// theirs.)
static RESERVE_THREADS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Lets `thread`'s heap allocations take pages from the reserve, as
/// FreeBSD's pagedaemon does: the pageout daemon and the laundry thread,
/// which free memory and must not wait for memory to do it. False when
/// every slot is taken.
pub fn let_use_reserve(thread: crate::kern::sched::ThreadId) -> bool {
    RESERVE_THREADS.iter().any(|t| t.compare_exchange(0, thread, Ordering::Relaxed, Ordering::Relaxed).is_ok())
}

fn release_pages(addr: *mut u8, pages: usize) {
    let pm = vm::global();
    let first = pm.page_of_addr(addr).expect("heap pages outside the direct map");
    pm.free_contig(first, pages);
}

impl KernelHeap {
    /// Gives class `c` a new slab from the page allocator and allocates from
    /// it. Interrupts on, the heap's lock not held.
    #[cold]
    fn grow_class(&self, c: usize) -> Option<NonNull<u8>> {
        let pages = CLASSES[c].1;
        let pm = vm::global();
        let first = pm.alloc_order(pages.trailing_zeros() as u8, page_flags())?;
        let Some(mem) = pm.page_addr(first).and_then(NonNull::new) else {
            pm.free_contig(first, pages);
            return None;
        };
        let mut g = self.inner.lock();
        // SAFETY: a naturally aligned block of `pages` pages just allocated
        // for the heap alone, writable through the direct map: the keg's
        // until it gives it back.
        unsafe { g.kegs[c].add_slab(mem) };
        let item = g.kegs[c].alloc();
        if item.is_some() {
            g.allocs[c] += 1;
        }
        item
    }

    /// A run of whole pages for `layout`. Interrupts on, the heap's lock not
    /// held.
    fn alloc_pages(&self, layout: Layout) -> Option<NonNull<u8>> {
        let pages = run_pages(layout);
        let align = (layout.align() as u64).max(PAGE_SIZE);
        let pm = vm::global();
        let first = if pages == 1 && align == PAGE_SIZE {
            pm.alloc(page_flags())?
        } else {
            pm.alloc_contig(pages, align, 0, 0, u64::MAX, page_flags())?
        };
        let Some(p) = pm.page_addr(first).and_then(NonNull::new) else {
            pm.free_contig(first, pages);
            return None;
        };
        let site = WATCHING.load(Ordering::Relaxed).then(caller_frames);
        let mut g = self.inner.lock();
        g.large_blocks += 1;
        g.large_bytes += layout.size();
        g.large_pages += pages;
        if let Some(frames) = site
            && let Some(slot) = g.watched.iter_mut().find(|w| w.0 == 0)
        {
            *slot = (p.as_ptr() as usize, frames);
        }
        Some(p)
    }

    /// Frees the page runs that were freed with interrupts off.
    /// Interrupts on, the heap's lock not held.
    /// Returns the pages given back.
    fn flush_deferred(&self) -> usize {
        let mut freed = 0;
        let mut list = {
            let mut g = self.inner.lock();
            DEFERRED.store(false, Ordering::Relaxed);
            core::mem::replace(&mut g.deferred, ptr::null_mut())
        };
        while !list.is_null() {
            // SAFETY: each entry was written into the first bytes of a page
            // run of the heap's, freed by its owner, and taken off the list
            // above: nobody else reaches it.
            let Deferred { next, pages } = unsafe { list.read() };
            release_pages(list as *mut u8, pages);
            self.inner.lock().large_pages -= pages;
            freed += pages;
            list = next;
        }
        freed
    }

    /// Gives back the empty slabs of class `c` beyond `keep`; returns the
    /// pages given back. Interrupts on, the heap's lock not held.
    fn trim_class(&self, c: usize, keep: usize) -> usize {
        let mut pages = 0;
        loop {
            let Some(slab) = self.inner.lock().kegs[c].take_empty(keep) else { break };
            release_pages(slab.as_ptr(), CLASSES[c].1);
            pages += CLASSES[c].1;
        }
        if pages > 0 {
            self.inner.lock().released += pages as u64;
        }
        pages
    }
}

// SAFETY: every block is handed out once, from the class, page run or
// arena its layout (or, for the arena, its address) names, and goes back to
// the same place; the lock serialises the bookkeeping.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_context();
        let pages_ok = may_use_pages();
        if pages_ok && DEFERRED.load(Ordering::Relaxed) {
            let _ = self.flush_deferred();
        }
        let class = class_of(layout);
        if let Some(c) = class {
            let mut g = self.inner.lock();
            if cfg!(debug_assertions) && HELD_POINT.load(Ordering::Relaxed) {
                held_point();
            }
            if let Some(p) = g.kegs[c].alloc() {
                g.allocs[c] += 1;
                return p.as_ptr();
            }
        }
        if pages_ok {
            let p = match class {
                Some(c) => self.grow_class(c),
                None => self.alloc_pages(layout),
            };
            if let Some(p) = p {
                return p.as_ptr();
            }
        }
        let mut g = self.inner.lock();
        let p = g.boot_alloc(layout);
        if !p.is_null() && vm::try_global().is_some() {
            g.fallbacks += 1;
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        check_context();
        let Some(nn) = NonNull::new(p) else { return };
        if in_boot_arena(p) {
            // SAFETY: `p` came from `alloc` with `layout` (the caller's
            // contract), and so, by its address, from the boot arena.
            unsafe { self.inner.lock().boot.deallocate(nn, layout) };
            return;
        }
        let pages_ok = may_use_pages();
        match class_of(layout) {
            Some(c) => {
                // SAFETY: `p` came from `alloc` with `layout`, outside the
                // boot arena, so from class `c`'s keg.
                let emptied = unsafe { self.inner.lock().kegs[c].free(nn) };
                if emptied && pages_ok {
                    self.trim_class(c, KEEP_EMPTY);
                }
            }
            None => {
                let pages = run_pages(layout);
                let mut g = self.inner.lock();
                g.large_blocks -= 1;
                g.large_bytes -= layout.size();
                if WATCHING.load(Ordering::Relaxed)
                    && let Some(slot) = g.watched.iter_mut().find(|w| w.0 == p as usize)
                {
                    slot.0 = 0;
                }
                if pages_ok {
                    g.large_pages -= pages;
                    drop(g);
                    release_pages(p, pages);
                } else {
                    let d = p as *mut Deferred;
                    // SAFETY: the run is at least a page, page-aligned, and
                    // the heap's again now that its owner freed it.
                    unsafe { d.write(Deferred { next: g.deferred, pages }) };
                    g.deferred = d;
                    DEFERRED.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Error from [`init`].
#[derive(Debug)]
pub enum HeapError {
    /// No usable region holds `HEAP_SIZE` contiguous bytes.
    NoMemory,
}

/// Takes the boot arena's frames and hands them to the allocator.
pub fn init() -> Result<PhysRange, HeapError> {
    let range = EARLY_FRAMES.lock().alloc_contiguous(HEAP_SIZE / PAGE_SIZE).ok_or(HeapError::NoMemory)?;
    let start = crate::arch::direct_map::phys_to_virt(range.start);
    let len = range.len() as usize;
    let mut g = ALLOCATOR.inner.lock();
    // SAFETY: the frames were just taken from the early allocator, which never
    // hands them out again; the direct map makes them writable at `start`;
    // `init` runs once, before any allocation.
    g.boot = unsafe { Heap::new(start as *mut u8, len) };
    BOOT_START.store(start as usize, Ordering::Relaxed);
    BOOT_END.store(start as usize + len, Ordering::Relaxed);
    drop(g);
    log::info!("heap: boot arena {} KiB at phys {:#x} (virt {:#x})", range.len() / 1024, range.start, start);
    Ok(range)
}

/// Gives every empty slab and every deferred page run back to the page
/// allocator (FreeBSD's `uma_reclaim`): the pageout daemon calls it when
/// free memory is short, and leak checks before they count free pages.
/// Returns the pages given back; 0 where the page allocator may not be
/// called (interrupts off).
pub fn reclaim() -> usize {
    if !may_use_pages() {
        return 0;
    }
    // (Counted by the flush itself: other CPUs allocate and free page runs
    // meanwhile.)
    let mut pages = ALLOCATOR.flush_deferred();
    for c in 0..NCLASSES {
        pages += ALLOCATOR.trim_class(c, 0);
    }
    pages
}

/// One size class's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Item size in bytes.
    pub size: usize,
    /// Pages per slab.
    pub slab_pages: usize,
    /// Items handed out and not freed.
    pub in_use: usize,
    /// Slabs held, the empty ones included.
    pub slabs: usize,
    /// Slabs with no item in use.
    pub empty: usize,
    /// Items allocated since boot.
    pub allocs: u64,
}

/// The heap's figures at one moment ([`stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    pub classes: [ClassStats; NCLASSES],
    /// Page runs handed out, their requested bytes, and the pages the heap
    /// holds for them.
    pub large_blocks: usize,
    pub large_bytes: usize,
    pub large_pages: usize,
    /// The boot arena: bytes in use, and its size.
    pub boot_used: usize,
    pub boot_size: usize,
    /// Allocations the boot arena served once the page allocator was up
    /// (interrupts off with no slab room, or pages short).
    pub fallbacks: u64,
    /// Pages given back to the page allocator since boot (emptied slabs
    /// beyond the keep, and by [`reclaim`]).
    pub released: u64,
}

impl HeapStats {
    /// Bytes handed out and not freed: items at their class's size, page
    /// runs at their requested size, the boot arena's blocks.
    pub fn bytes_in_use(&self) -> usize {
        let items: usize = self.classes.iter().map(|c| c.in_use * c.size).sum();
        items + self.large_bytes + self.boot_used
    }

    /// Pages the heap holds from the page allocator (slabs and page runs;
    /// the boot arena is not the page allocator's).
    pub fn pages(&self) -> usize {
        self.slab_pages() + self.large_pages
    }

    /// Pages held in slabs.
    pub fn slab_pages(&self) -> usize {
        self.classes.iter().map(|c| c.slabs * c.slab_pages).sum()
    }

    /// Bytes free in slabs and the boot arena: what the heap can hand out
    /// without taking pages.
    pub fn bytes_free(&self) -> usize {
        let items: usize = self
            .classes
            .iter()
            .map(|c| (c.slabs * c.slab_pages * PAGE - c.slabs * vm::zone::SLAB_HEADER) / c.size * c.size - c.in_use * c.size)
            .sum();
        items + (self.boot_size - self.boot_used)
    }
}

/// The heap's figures now.
pub fn stats() -> HeapStats {
    let g = ALLOCATOR.inner.lock();
    let mut s = HeapStats {
        large_blocks: g.large_blocks,
        large_bytes: g.large_bytes,
        large_pages: g.large_pages,
        boot_used: g.boot.used(),
        boot_size: g.boot.size(),
        fallbacks: g.fallbacks,
        released: g.released,
        ..HeapStats::default()
    };
    for (c, k) in g.kegs.iter().enumerate() {
        s.classes[c] = ClassStats {
            size: k.item_size(),
            slab_pages: CLASSES[c].1,
            in_use: k.in_use(),
            slabs: k.slabs(),
            empty: k.empty_slabs(),
            allocs: g.allocs[c],
        };
    }
    s
}

/// Prints the heap's figures: the totals on one line, then a line per class
/// in use.
pub fn print_stats() {
    let s = stats();
    crate::kprintln!(
        "heap: {} KiB in use, {} pages held ({} in slabs, {} in {} page runs), boot arena {}/{} KiB, {} fallbacks, {} pages released",
        s.bytes_in_use() / 1024,
        s.pages(),
        s.slab_pages(),
        s.large_pages,
        s.large_blocks,
        s.boot_used / 1024,
        s.boot_size / 1024,
        s.fallbacks,
        s.released
    );
    for c in s.classes.iter().filter(|c| c.slabs > 0 || c.allocs > 0) {
        crate::kprintln!(
            "heap: class {:>4}: {:>6} in use, {:>4} slabs ({} empty) of {} pages, {} allocations",
            c.size,
            c.in_use,
            c.slabs,
            c.empty,
            c.slab_pages,
            c.allocs
        );
    }
}

/// Page runs [`watch_runs`] keeps track of at once, and the frames kept
/// of where each was asked for.
const WATCHED: usize = 16;
const WATCH_FRAMES: usize = 12;

/// Whether page runs handed out are noted with their callers. (A; Relaxed:
/// a run noted or not across the switch is harmless, the slots are H's.)
static WATCHING: AtomicBool = AtomicBool::new(false);

/// The return addresses of the allocation's callers.
#[inline(always)]
fn caller_frames() -> [u64; WATCH_FRAMES] {
    let rbp: u64;
    // SAFETY: reads RBP; no memory is touched.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags)) };
    let mut frames = [0; WATCH_FRAMES];
    crate::kern::backtrace::walk(0, rbp, |n, ret| {
        if (1..=WATCH_FRAMES).contains(&n) {
            frames[n - 1] = ret;
        }
    });
    frames
}

/// Starts (forgetting what was noted before) or stops noting where page
/// runs are asked for, for a test that finds the heap grown to say by whom: the
/// first [`WATCHED`] runs handed out while on are kept until freed.
pub fn watch_runs(on: bool) {
    let mut g = ALLOCATOR.inner.lock();
    if on {
        g.watched = [(0, [0; WATCH_FRAMES]); WATCHED];
    }
    WATCHING.store(on, Ordering::Relaxed);
}

/// Where the watched page runs still in use were asked for, a backtrace
/// each.
pub fn watched_runs() -> alloc::string::String {
    use core::fmt::Write;
    let runs = ALLOCATOR.inner.lock().watched;
    let mut out = alloc::string::String::new();
    for (addr, frames) in runs.iter().filter(|w| w.0 != 0) {
        let _ = write!(out, "page run {addr:#x} from");
        for &ret in frames.iter().take_while(|&&r| r != 0) {
            crate::kern::ksyms::write_symbol(&mut out, ret - 1);
        }
        let _ = writeln!(out);
    }
    out
}

/// Heap usage: (bytes in use, bytes free without taking pages).
pub fn usage() -> (usize, usize) {
    let s = stats();
    (s.bytes_in_use(), s.bytes_free())
}

/// Bytes the heap could still hand out, roughly: what it has free and what
/// free pages it could take.
pub fn available() -> usize {
    let pages = vm::try_global().map_or(0, |pm| pm.free_count() as usize);
    usage().1.saturating_add(pages.saturating_mul(PAGE))
}

mod tests;

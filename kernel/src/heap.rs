//! The kernel heap: `linked_list_allocator` arenas, the first carved at
//! boot, the others taken from the page allocator as the heap grows and given
//! back when they empty.
//!
//! The heap backs `alloc` (Box, Vec, ...) for kernel data structures that are
//! not pages. Each arena is one physically contiguous run of frames reached
//! through the direct map, so it needs no page-table changes; those frames are
//! unmanaged ("no object") as far as the page allocator is concerned. The
//! boot arena ([`HEAP_SIZE`]) serves until the page allocator exists and is
//! kept for good; when no arena can serve a request, an arena of 1 MiB (or
//! the next power of two that holds the request, up to the allocator's
//! largest block, 4 MiB) is taken with an ordinary allocation, which leaves
//! the pageout daemon's reserve alone. An arena other than the boot one
//! that empties goes back to the page allocator.
//!
//! Locking: one interrupt-safe lock (an `IrqMutex`) over the arenas: the heap
//! is reached from code that runs with interrupts off (the process table, an
//! interrupt handler's console), so a holder must never be interrupted or
//! preempted with it. The page allocator's locks are plain, only ever taken
//! with interrupts on, so the heap grows and shrinks only after it has let
//! its own lock go, and only when its caller had interrupts on (not in an
//! interrupt handler): with them off a request the arenas cannot serve
//! fails, and an empty arena waits for the next free with them on.
//!
//! Allocation failure is reported by `alloc` in the usual way; code on a
//! path a program or memory pressure can reach uses the fallible APIs
//! (`try_reserve`, `Box::try_new`) and treats a failure as memory shortage,
//! never as a bug.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use linked_list_allocator::Heap;
use x86_64::instructions::interrupts;

use crate::memory::{self, EARLY_FRAMES, PAGE_SIZE, PhysRange};
use crate::sync::IrqMutex;

/// Size of the boot arena.
pub const HEAP_SIZE: u64 = 8 << 20;
/// Arenas at most, the boot one included.
pub const MAX_ARENAS: usize = 64;
/// Order (log2 pages) of a grown arena at least: 1 MiB.
const MIN_ARENA_ORDER: u32 = 8;

/// One arena: its heap and the range it covers. (H: the heap's lock.)
struct Arena {
    heap: Heap,
    start: usize,
    len: usize,
}

/// The arenas; `arenas[0]` is the boot one. (H)
struct Arenas {
    arenas: [Arena; MAX_ARENAS],
    count: usize,
}

impl Arenas {
    /// The arena holding `p`.
    fn find(&mut self, p: usize) -> Option<&mut Arena> {
        self.arenas[..self.count].iter_mut().find(|a| (a.start..a.start + a.len).contains(&p))
    }

    fn allocate(&mut self, layout: Layout) -> *mut u8 {
        for a in &mut self.arenas[..self.count] {
            if let Ok(p) = a.heap.allocate_first_fit(layout) {
                return p.as_ptr();
            }
        }
        ptr::null_mut()
    }

    /// Takes out an arena other than the boot one that holds nothing;
    /// returns its range for the caller to free.
    fn take_empty(&mut self) -> Option<(usize, usize)> {
        let i = (1..self.count).find(|&i| self.arenas[i].heap.used() == 0)?;
        let range = (self.arenas[i].start, self.arenas[i].len);
        self.count -= 1;
        self.arenas.swap(i, self.count);
        self.arenas[self.count] = Arena { heap: Heap::empty(), start: 0, len: 0 };
        Some(range)
    }
}

/// The kernel's allocator.
struct KernelHeap {
    arenas: IrqMutex<Arenas>,
}

#[global_allocator]
static ALLOCATOR: KernelHeap = KernelHeap {
    arenas: IrqMutex::new(Arenas { arenas: [const { Arena { heap: Heap::empty(), start: 0, len: 0 } }; MAX_ARENAS], count: 0 }),
};

/// Arenas taken from the page allocator and given back, since boot. (A)
pub static GROWN: AtomicU64 = AtomicU64::new(0);
pub static SHRUNK: AtomicU64 = AtomicU64::new(0);

/// Debug builds refuse the heap to code under the scheduler lock: the
/// scheduler runs with interrupts off and must never wait for memory or
/// for the heap's lock (it frees and allocates only outside its lock).
#[track_caller]
fn check_context() {
    if cfg!(debug_assertions) {
        if let Some(site) = crate::sched::lock_holder() {
            panic!("heap used with the scheduler lock held (taken at {site}); the allocation is in the backtrace");
        }
    }
}

/// Whether the heap may call the page allocator now (see the module docs).
fn may_use_pages() -> bool {
    interrupts::are_enabled() && !crate::sync::in_interrupt() && vm::try_global().is_some()
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

impl KernelHeap {
    /// Takes a new arena that can hold `layout` from the page allocator and
    /// allocates from it. Called without the heap's lock, interrupts on.
    #[cold]
    fn grow(&self, layout: Layout) -> *mut u8 {
        // Room for the request, its alignment and the allocator's own
        // bookkeeping.
        let need = layout.size().saturating_add(layout.align()).saturating_add(64);
        let pages = need.div_ceil(PAGE_SIZE as usize).max(1);
        let order = pages.next_power_of_two().trailing_zeros().max(MIN_ARENA_ORDER);
        if order > vm::phys::MAX_ORDER as u32 {
            return ptr::null_mut();
        }
        let pm = vm::global();
        let Some(first) = pm.alloc_order(order as u8, vm::phys::AllocFlags::UNMANAGED) else {
            return ptr::null_mut();
        };
        let Some(start) = pm.page_addr(first) else {
            pm.free_contig(first, 1 << order);
            return ptr::null_mut();
        };
        let len = (PAGE_SIZE as usize) << order;
        let mut g = self.arenas.lock();
        if g.count == MAX_ARENAS {
            drop(g);
            pm.free_contig(first, 1 << order);
            return ptr::null_mut();
        }
        let n = g.count;
        // SAFETY: the run was just allocated for the heap alone and is
        // writable through the direct map at `start` for `len` bytes.
        g.arenas[n] = Arena { heap: unsafe { Heap::new(start, len) }, start: start as usize, len };
        g.count += 1;
        GROWN.fetch_add(1, Ordering::Relaxed);
        g.allocate(layout)
    }

    /// Gives arenas that emptied back to the page allocator. Called without
    /// the heap's lock, interrupts on.
    fn shrink(&self) {
        loop {
            let Some((start, len)) = self.arenas.lock().take_empty() else { return };
            let pm = vm::global();
            let first = pm.page_of_addr(start as *const u8).expect("a heap arena outside the direct map");
            pm.free_contig(first, len / PAGE_SIZE as usize);
            SHRUNK.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: allocation and deallocation are serialised by the lock; each
// block comes from, and goes back to, the arena that covers it.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_context();
        let p = {
            let mut g = self.arenas.lock();
            if cfg!(debug_assertions) && HELD_POINT.load(Ordering::Relaxed) {
                held_point();
            }
            g.allocate(layout)
        };
        if p.is_null() && may_use_pages() {
            return self.grow(layout);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        check_context();
        let Some(nn) = NonNull::new(p) else { return };
        let emptied = {
            let mut g = self.arenas.lock();
            let Some(a) = g.find(p as usize) else {
                drop(g);
                panic!("heap: freeing {p:p}, which no arena holds");
            };
            // SAFETY: `p` came from `alloc` with `layout` (the caller's
            // contract), and so from this arena.
            unsafe { a.heap.deallocate(nn, layout) };
            a.heap.used() == 0 && a.start != g.arenas[0].start
        };
        if emptied && may_use_pages() {
            self.shrink();
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
    let range = EARLY_FRAMES
        .lock()
        .alloc_contiguous(HEAP_SIZE / PAGE_SIZE)
        .ok_or(HeapError::NoMemory)?;
    let start = memory::phys_to_virt(range.start);
    let len = range.len() as usize;
    let mut g = ALLOCATOR.arenas.lock();
    // SAFETY: the frames were just taken from the early allocator, which never
    // hands them out again; the direct map makes them writable at `start`;
    // `init` runs once, before any allocation.
    g.arenas[0] = Arena { heap: unsafe { Heap::new(start as *mut u8, len) }, start: start as usize, len };
    g.count = 1;
    drop(g);
    log::info!("heap: {} KiB at phys {:#x} (virt {:#x})", range.len() / 1024, range.start, start);
    Ok(range)
}

/// Heap usage over every arena: (used bytes, free bytes).
pub fn usage() -> (usize, usize) {
    let g = ALLOCATOR.arenas.lock();
    g.arenas[..g.count].iter().fold((0, 0), |(u, f), a| (u + a.heap.used(), f + a.heap.free()))
}

/// Bytes the heap could still hand out, roughly: what its arenas have free
/// and what free pages it could grow by.
pub fn available() -> usize {
    let pages = vm::try_global().map_or(0, |pm| pm.free_count() as usize);
    usage().1.saturating_add(pages.saturating_mul(PAGE_SIZE as usize))
}

/// Arenas in use, the boot one included.
pub fn arenas() -> usize {
    ALLOCATOR.arenas.lock().count
}

mod tests {
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use core::alloc::Layout;

    use ktest::ktest;

    use super::usage;

    /// Allocates blocks of many sizes and alignments, fills each with a
    /// pattern, checks every pattern, frees them all, and checks that the heap
    /// is back where it started.
    #[ktest]
    fn many_sizes_and_free() {
        let (used_before, _) = usage();
        let mut blocks: Vec<(*mut u8, Layout)> = Vec::with_capacity(512);
        let mut seed = 0x1234_5678u32;
        for i in 0..400 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let size = match i % 4 {
                0 => 1 + (seed as usize % 16),
                1 => 16 + (seed as usize % 512),
                2 => 1 << (seed as usize % 14),
                _ => 4096 * (1 + seed as usize % 8),
            };
            let align = 1usize << (seed as usize >> 8) % 13;
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: layout has non-zero size.
            let p = unsafe { alloc::alloc::alloc(layout) };
            assert!(!p.is_null(), "allocation of {size} bytes (align {align}) failed");
            assert_eq!(p as usize % align, 0, "misaligned allocation");
            // SAFETY: p points to `size` writable bytes just allocated.
            unsafe { core::ptr::write_bytes(p, i as u8, size) };
            blocks.push((p, layout));
        }
        for (i, &(p, layout)) in blocks.iter().enumerate() {
            // SAFETY: p is live with layout.size() initialised bytes.
            let bytes = unsafe { core::slice::from_raw_parts(p, layout.size()) };
            assert!(bytes.iter().all(|&b| b == i as u8), "block {i} was overwritten");
        }
        for (p, layout) in blocks.drain(..).rev() {
            // SAFETY: p was allocated above with this layout and not freed.
            unsafe { alloc::alloc::dealloc(p, layout) };
        }
        drop(blocks);
        let (used_after, _) = usage();
        assert_eq!(used_before, used_after, "heap usage did not return to its start");

        // Box and Vec go through the same allocator.
        let b = Box::new([7u64; 100]);
        assert_eq!(b.iter().sum::<u64>(), 700);
        let v: Vec<u32> = (0..10_000).collect();
        assert_eq!(v[9_999], 9_999);
    }

    /// The hang of a thread preempted inside the heap, replayed: a thread
    /// that allocates with interrupts off (as the scheduler's reaper did,
    /// inside the switch) is made ready, and this thread is preempted, by a
    /// breakpoint that acts as the timer, at the instant it holds the heap's
    /// lock. With a lock that left interrupts on, the preemption happened
    /// and the other thread spun on the lock for ever. The heap's lock
    /// turns interrupts off, so no timer can come there and the breakpoint
    /// does not preempt.
    #[ktest]
    fn no_thread_is_preempted_holding_the_heap() {
        use core::sync::atomic::{AtomicBool, Ordering};

        use crate::arch::trap::{BREAK_ONCE_FRAME, BREAK_ONCE_RFLAGS, BREAK_ONCE_THREAD, break_once_preempting};

        static DONE: AtomicBool = AtomicBool::new(false);
        DONE.store(false, Ordering::SeqCst);
        let other = crate::sched::spawn("irqoff-alloc", || {
            let b = x86_64::instructions::interrupts::without_interrupts(|| Box::new([7u8; 48]));
            core::hint::black_box(&b);
            DONE.store(true, Ordering::SeqCst);
        })
        .unwrap();
        let me = crate::sched::current();
        let mut hit = false;
        for _ in 0..100 {
            super::HELD_POINT.store(true, Ordering::SeqCst);
            break_once_preempting(super::held_point as *const () as u64);
            let b = Box::new(1u64);
            super::HELD_POINT.store(false, Ordering::SeqCst);
            core::hint::black_box(&b);
            drop(b);
            // Another thread may have taken the breakpoint (it is the CPU's):
            // try again until this one did.
            if BREAK_ONCE_FRAME.load(Ordering::SeqCst) != 0 && BREAK_ONCE_THREAD.load(Ordering::SeqCst) == me {
                hit = true;
                break;
            }
        }
        assert!(hit, "the breakpoint in the heap was never taken by this thread");
        assert_eq!(BREAK_ONCE_RFLAGS.load(Ordering::SeqCst) & (1 << 9), 0, "the heap's lock was held with interrupts on");
        crate::sched::join(other);
        assert!(DONE.load(Ordering::SeqCst));
    }

    /// The heap grows past its boot arena with arenas from the page
    /// allocator, and gives them back when they empty: the free-page count
    /// (which the runner checks after the test) comes back.
    #[ktest]
    fn the_heap_grows_and_shrinks_with_the_page_allocator() {
        use core::sync::atomic::Ordering;

        let (used0, _) = usage();
        let grown0 = super::GROWN.load(Ordering::Relaxed);
        let arenas0 = super::arenas();
        // Twice the boot arena in 256 KiB blocks, each with its own pattern.
        let mut blocks: Vec<Vec<u64>> = Vec::new();
        for i in 0..(2 * super::HEAP_SIZE as usize / (256 << 10)) {
            let mut v: Vec<u64> = Vec::new();
            v.try_reserve_exact(32 << 10).expect("the heap did not grow");
            v.resize(32 << 10, i as u64 * 0x0101_0101);
            blocks.push(v);
        }
        assert!(super::GROWN.load(Ordering::Relaxed) > grown0, "no arena was taken");
        assert!(super::arenas() > arenas0);
        for (i, v) in blocks.iter().enumerate() {
            assert!(v.iter().all(|&w| w == i as u64 * 0x0101_0101), "block {i} was overwritten");
        }
        drop(blocks);
        assert_eq!(super::arenas(), arenas0, "the emptied arenas were not given back");
        assert_eq!(usage().0, used0);
    }

    /// A request larger than the heap fails cleanly instead of corrupting it.
    #[ktest]
    fn oversized_allocation_fails_cleanly() {
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve_exact((super::HEAP_SIZE * 2) as usize).is_err());
        let mut w: Vec<u8> = Vec::new();
        assert!(w.try_reserve_exact(1024).is_ok());
    }
}

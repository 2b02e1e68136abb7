//! The kernel heap: a `linked_list_allocator` over frames taken at boot.
//!
//! The heap backs `alloc` (Box, Vec, ...) for kernel data structures that are
//! not pages. It is one physically contiguous run of frames reached through the
//! direct map, so it needs no page-table changes; those frames are unmanaged
//! ("no object") as far as the page allocator is concerned.
//!
//! Allocation failure is reported by `alloc` in the usual way; code on the
//! fault path uses the fallible APIs (`try_reserve`, `Box::try_new`) and treats
//! a failure as memory shortage, never as a bug.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, Ordering};

use linked_list_allocator::Heap;

use crate::memory::{self, EARLY_FRAMES, PAGE_SIZE, PhysRange};
use crate::sync::IrqMutex;

/// Size of the kernel heap.
pub const HEAP_SIZE: u64 = 8 << 20;

/// The kernel's allocator. Its lock is interrupt-safe: the heap is reached
/// from code that runs with interrupts off (the process table, the console
/// of an interrupt handler), so a holder must never be interrupted or
/// preempted with it.
struct KernelHeap {
    heap: IrqMutex<Heap>,
}

#[global_allocator]
static ALLOCATOR: KernelHeap = KernelHeap { heap: IrqMutex::new(Heap::empty()) };

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

/// Debug builds: when set, every allocation calls [`held_point`] with the
/// heap's lock held, for tests that need a trap at that moment. (A)
static HELD_POINT: AtomicBool = AtomicBool::new(false);

/// Called with the heap's lock held while [`HELD_POINT`] is set: a place to
/// put a breakpoint (`break_once_preempting`).
#[inline(never)]
fn held_point() {
    core::hint::black_box(());
}

// SAFETY: allocation and deallocation are serialised by the lock, and
// `Heap` returns blocks that fit the layout.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_context();
        let mut heap = self.heap.lock();
        if cfg!(debug_assertions) && HELD_POINT.load(Ordering::Relaxed) {
            held_point();
        }
        heap.allocate_first_fit(layout).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        check_context();
        if let Some(p) = NonNull::new(p) {
            // SAFETY: `p` came from `alloc` with `layout` (the caller's
            // contract).
            unsafe { self.heap.lock().deallocate(p, layout) }
        }
    }
}

/// Error from [`init`].
#[derive(Debug)]
pub enum HeapError {
    /// No usable region holds `HEAP_SIZE` contiguous bytes.
    NoMemory,
}

/// Takes the heap's frames and hands them to the allocator.
pub fn init() -> Result<PhysRange, HeapError> {
    let range = EARLY_FRAMES
        .lock()
        .alloc_contiguous(HEAP_SIZE / PAGE_SIZE)
        .ok_or(HeapError::NoMemory)?;
    let start = memory::phys_to_virt(range.start);
    // SAFETY: the frames were just taken from the early allocator, which never
    // hands them out again; the direct map makes them writable at `start`;
    // `init` runs once, before any allocation.
    unsafe { ALLOCATOR.heap.lock().init(start as *mut u8, range.len() as usize) };
    log::info!("heap: {} KiB at phys {:#x} (virt {:#x})", range.len() / 1024, range.start, start);
    Ok(range)
}

/// Heap usage: (used bytes, free bytes).
pub fn usage() -> (usize, usize) {
    let heap = ALLOCATOR.heap.lock();
    (heap.used(), heap.free())
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

    /// A request larger than the heap fails cleanly instead of corrupting it.
    #[ktest]
    fn oversized_allocation_fails_cleanly() {
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve_exact((super::HEAP_SIZE * 2) as usize).is_err());
        let mut w: Vec<u8> = Vec::new();
        assert!(w.try_reserve_exact(1024).is_ok());
    }
}

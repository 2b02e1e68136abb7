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
        let align = 1usize << ((seed as usize >> 8) % 13);
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

    use crate::arch::breakpoint::{BREAK_ONCE_FRAME, BREAK_ONCE_RFLAGS, BREAK_ONCE_THREAD, break_once_preempting};

    static DONE: AtomicBool = AtomicBool::new(false);
    DONE.store(false, Ordering::SeqCst);
    let other = crate::kern::sched::spawn("irqoff-alloc", || {
        let b = x86_64::instructions::interrupts::without_interrupts(|| Box::new([7u8; 48]));
        core::hint::black_box(&b);
        DONE.store(true, Ordering::SeqCst);
    })
    .unwrap();
    let me = crate::kern::sched::current();
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
    crate::kern::sched::join(other);
    assert!(DONE.load(Ordering::SeqCst));
}

/// A burst of small allocations grows the heap by slabs taken from the
/// page allocator (per-class figures and the free-page count show it);
/// freeing them leaves the class's empty slabs cached (up to its keep),
/// and `reclaim` gives them back: the free-page count returns exactly.
#[ktest]
fn a_burst_grows_the_heap_by_pages_and_reclaim_returns_them() {
    const N: usize = 6000;
    let pm = vm::global();
    let c = super::class_of(Layout::new::<[u64; 32]>()).unwrap();
    assert_eq!(super::CLASSES[c].0, 256);
    let per_slab = (super::PAGE - vm::zone::SLAB_HEADER) / 256;
    super::reclaim();
    let s0 = super::stats();
    let free0 = pm.free_count();
    let mut boxes: Vec<Box<[u64; 32]>> = Vec::new();
    boxes.try_reserve_exact(N).unwrap();
    for i in 0..N {
        boxes.push(Box::try_new([i as u64; 32]).expect("the heap did not grow"));
    }
    let s1 = super::stats();
    let grown = s1.classes[c].slabs - s0.classes[c].slabs;
    assert_eq!(s1.classes[c].in_use, s0.classes[c].in_use + N);
    assert!(grown >= (N - s0.classes[c].slabs * per_slab) / per_slab, "{grown} slabs for {N} items of 256 bytes");
    assert!(pm.free_count() + grown as u64 <= free0, "the slabs did not come from the page allocator");
    assert_eq!(s1.fallbacks, s0.fallbacks, "an allocation went to the boot arena");
    for (i, b) in boxes.iter().enumerate() {
        assert!(b.iter().all(|&w| w == i as u64), "item {i} was overwritten");
    }
    drop(boxes);
    let s2 = super::stats();
    assert_eq!(s2.classes[c].in_use, s0.classes[c].in_use);
    assert!(s2.classes[c].empty <= super::KEEP_EMPTY, "{} empty slabs kept", s2.classes[c].empty);
    assert!(s2.released > s0.released, "no emptied slab was given back");
    super::reclaim();
    let s3 = super::stats();
    assert_eq!(s3.classes[c].empty, 0);
    assert_eq!(s3.classes[c].slabs, s0.classes[c].slabs);
    assert_eq!(pm.free_count(), free0, "free pages after the burst and reclaim");
    assert_eq!(s3.bytes_in_use(), s0.bytes_in_use());
}

/// Requests above the largest class get page runs of their own (none
/// from the boot arena), aligned as asked, given back when freed.
#[ktest]
fn large_requests_get_page_runs() {
    let pm = vm::global();
    super::reclaim();
    let free0 = pm.free_count();
    let s0 = super::stats();
    let layouts = [
        Layout::from_size_align(2049, 8).unwrap(),
        Layout::from_size_align(40 << 10, 16).unwrap(),
        Layout::from_size_align(8192, 8192).unwrap(),
        Layout::from_size_align(1 << 20, 4096).unwrap(),
    ];
    let mut blocks = Vec::new();
    for (i, &l) in layouts.iter().enumerate() {
        // SAFETY: non-zero size.
        let p = unsafe { alloc::alloc::alloc(l) };
        assert!(!p.is_null());
        assert!(!super::in_boot_arena(p), "{l:?} came from the boot arena");
        assert_eq!(p as usize % l.align().max(4096), 0);
        // SAFETY: `l.size()` writable bytes just allocated.
        unsafe { core::ptr::write_bytes(p, i as u8 + 1, l.size()) };
        blocks.push((p, l));
    }
    let pages: usize = layouts.iter().map(|l| l.size().div_ceil(4096)).sum();
    let s1 = super::stats();
    assert_eq!(s1.large_pages, s0.large_pages + pages);
    assert_eq!(s1.large_blocks, s0.large_blocks + layouts.len());
    for (i, &(p, l)) in blocks.iter().enumerate() {
        // SAFETY: live, initialised above.
        let b = unsafe { core::slice::from_raw_parts(p, l.size()) };
        assert!(b.iter().all(|&x| x == i as u8 + 1));
        // SAFETY: allocated above with `l`, freed once.
        unsafe { alloc::alloc::dealloc(p, l) };
    }
    assert_eq!(super::stats().large_pages, s0.large_pages);
    assert_eq!(pm.free_count(), free0);
}

/// With interrupts off the heap never calls the page allocator (whose
/// locks are only taken with interrupts on): a request no slab can
/// serve goes to the boot arena, and a page run freed then waits on the
/// deferred list until the next allocation with interrupts on.
#[ktest]
fn with_interrupts_off_the_heap_leaves_the_page_allocator_alone() {
    use x86_64::instructions::interrupts::without_interrupts;
    let s0 = super::stats();
    let v: Vec<u8> = without_interrupts(|| Vec::with_capacity(32 << 10));
    assert!(super::in_boot_arena(v.as_ptr() as *mut u8), "a page run was taken with interrupts off");
    assert_eq!(super::stats().fallbacks, s0.fallbacks + 1);
    drop(v);
    let w: Vec<u8> = Vec::with_capacity(32 << 10);
    assert!(!super::in_boot_arena(w.as_ptr() as *mut u8));
    let held = super::stats().large_pages;
    assert_eq!(held, s0.large_pages + 8);
    without_interrupts(|| drop(w));
    assert_eq!(super::stats().large_pages, held, "a page run was freed with interrupts off");
    let b = core::hint::black_box(Box::new(1u64));
    assert_eq!(super::stats().large_pages, held - 8, "the deferred run was not freed by the next allocation");
    drop(b);
}

/// A request larger than the heap fails cleanly instead of corrupting it.
#[ktest]
fn oversized_allocation_fails_cleanly() {
    let mut v: Vec<u8> = Vec::new();
    // Larger than the largest page run and than the boot arena.
    let past = (4096usize << vm::phys::MAX_ORDER) + super::HEAP_SIZE as usize;
    assert!(v.try_reserve_exact(2 * past).is_err());
    let mut w: Vec<u8> = Vec::new();
    assert!(w.try_reserve_exact(1024).is_ok());
}

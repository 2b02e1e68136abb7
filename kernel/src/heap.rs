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

use linked_list_allocator::LockedHeap;

use crate::memory::{self, EARLY_FRAMES, PAGE_SIZE, PhysRange};

/// Size of the kernel heap.
pub const HEAP_SIZE: u64 = 8 << 20;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

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
    unsafe { ALLOCATOR.lock().init(start as *mut u8, range.len() as usize) };
    log::info!("heap: {} KiB at phys {:#x} (virt {:#x})", range.len() / 1024, range.start, start);
    Ok(range)
}

/// Heap usage: (used bytes, free bytes).
pub fn usage() -> (usize, usize) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let heap = ALLOCATOR.lock();
        (heap.used(), heap.free())
    })
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

    /// A request larger than the heap fails cleanly instead of corrupting it.
    #[ktest]
    fn oversized_allocation_fails_cleanly() {
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve_exact((super::HEAP_SIZE * 2) as usize).is_err());
        let mut w: Vec<u8> = Vec::new();
        assert!(w.try_reserve_exact(1024).is_ok());
    }
}

//! In-kernel tests of the allocator over the real memory map (`crate::global()`).

use alloc::vec::Vec;

use ktest::ktest;

use super::*;
use crate::invariants;

/// Every free page can be allocated: managed pages down to the reserve,
/// unmanaged ones (the kernel's own) the rest; freeing them all restores
/// the exact per-order free-block counts.
#[ktest(timeout = 120)]
fn all_free_memory_round_trip() {
    // Alone: other CPUs' idle zeroing and threads would move the counts.
    crate::run_alone(|| {
        let pm = crate::global();
        // The list first: the kernel heap takes its pages from this allocator.
        let mut pages: Vec<&'static Page> = Vec::new();
        pages.try_reserve_exact(pm.pages().len()).expect("heap too small for the page list");
        pm.drain_cache();
        let before = pm.free_blocks();
        let total = pm.free_count();
        let reserve = pm.levels.reserve.load(Ordering::Relaxed);
        while let Some(p) = pm.alloc(AllocFlags::NOBUSY) {
            pages.push(p);
        }
        assert_eq!(pages.len() as u64, total - reserve, "managed pages stop at the reserve");
        while let Some(p) = pm.alloc(AllocFlags::UNMANAGED | AllocFlags::SYSTEM) {
            pages.push(p);
        }
        assert_eq!(pages.len() as u64, total, "could not allocate every free page");
        assert_eq!(pm.free_count(), 0);
        assert!(invariants::check(pm).is_empty());
        for p in pages.drain(..) {
            pm.free(p);
        }
        pm.drain_cache();
        assert_eq!(pm.free_blocks(), before, "per-order counts differ after the round trip");
    })
}

/// Contiguous, aligned, boundary-limited runs for DMA, zeroed on request.
#[ktest]
fn contiguous_aligned_runs() {
    let pm = crate::global();
    let a = pm.alloc_contig(16, 64 << 10, 1 << 20, 16 << 20, 4 << 30, AllocFlags::ZERO).unwrap();
    assert_eq!(a.phys() % (64 << 10), 0);
    assert!(a.phys() >= 16 << 20);
    assert_eq!(a.phys() >> 20, (a.phys() + 16 * PAGE_SIZE as u64 - 1) >> 20);
    for i in 0..16u64 {
        let p = pm.page_of(a.phys() + i * PAGE_SIZE as u64).unwrap();
        assert!(p.flags().contains(PageFlags::ZERO));
        // SAFETY: the run was just allocated; the direct map covers it.
        let bytes = unsafe { core::slice::from_raw_parts(pm.page_addr(p).unwrap(), PAGE_SIZE) };
        assert!(bytes.iter().all(|&b| b == 0), "page {i} of the run is not zeroed");
    }
    let b = pm.alloc_order(9, AllocFlags::UNMANAGED).unwrap();
    assert_eq!(b.phys() % (2 << 20), 0, "an order-9 block is 2 MiB aligned");
    pm.free_contig(a, 16);
    pm.free_contig(b, 512);
}

/// The checker finds the rule-4 limbo state in the real page array.
#[ktest]
fn limbo_is_detected_in_kernel() {
    let pm = crate::global();
    let p = pm.alloc(AllocFlags::empty()).unwrap();
    p.set_owner(0x1234_5000, 9);
    p.xunbusy();
    let v = invariants::check(pm);
    assert_eq!(v, alloc::vec![invariants::Violation::Limbo { page: p.phys() }]);
    p.xbusy();
    p.clear_owner();
    pm.free(p);
    assert!(invariants::check(pm).is_empty());
}

/// Nothing may take the page between the two frees (or the second would
/// free another's page): the other CPUs are parked, and a spin lock held
/// across both keeps this thread from being preempted.
#[ktest(should_panic = "freed twice")]
fn double_free_is_caught() {
    crate::run_alone(|| {
        let pm = crate::global();
        let no_preemption = crate::sync::Mutex::new(());
        let _held = no_preemption.lock();
        let p = pm.alloc(AllocFlags::empty()).unwrap();
        pm.free(p);
        pm.free(p);
    })
}

#[ktest(should_panic = "freeing a wired page")]
fn wired_free_is_caught() {
    let pm = crate::global();
    pm.free(pm.alloc(AllocFlags::WIRED).unwrap());
}

#[ktest(should_panic = "still in object")]
fn owned_free_is_caught() {
    let pm = crate::global();
    let p = pm.alloc(AllocFlags::empty()).unwrap();
    p.set_owner(0x1234_5000, 1);
    pm.free(p);
}

#[ktest(should_panic = "freeing a mapped page")]
fn mapped_free_is_caught() {
    let pm = crate::global();
    let p = pm.alloc(AllocFlags::empty()).unwrap();
    p.set_all_valid();
    p.add_mapping();
    pm.free(p);
}

#[ktest(should_panic = "shared-busied")]
fn shared_busy_free_is_caught() {
    let pm = crate::global();
    let p = pm.alloc(AllocFlags::NOBUSY).unwrap();
    assert!(p.try_sbusy());
    pm.free(p);
}

#[ktest(should_panic = "freeing reserved")]
fn reserved_free_is_caught() {
    let pm = crate::global();
    let reserved = pm.pages().iter().find(|p| p.flags().contains(PageFlags::RESERVED)).unwrap();
    pm.free(reserved);
}

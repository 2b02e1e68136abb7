//! Host tests of the allocator, on a model with real backing memory.

use alloc::boxed::Box;

use super::*;
use crate::invariants;

/// A host allocator over `segments`, with real backing memory so that
/// zeroing and junk-filling run as in the kernel.
pub(crate) fn phys_with_memory(segments: &[PhysRange]) -> PhysMem {
    // Every host test that builds an allocator checks the lock order too.
    crate::witness::tests::check_host_threads();
    let n = PhysMem::records_needed(segments);
    let storage = Box::leak(Box::new_uninit_slice(n));
    let top = segments.iter().map(|s| s.end).max().unwrap_or(0) as usize;
    let memory = host_memory(top);
    let pm = PhysMem::new(segments, storage, Some(memory as usize)).unwrap();
    for s in segments {
        pm.add_free_range(*s);
    }
    pm
}

/// `bytes` of zeroed host memory to stand for physical memory from
/// address 0: page-aligned, as the kernel's direct map is (the allocator
/// fills and zeroes pages a word at a time). Leaked, as the tests' page
/// arrays are.
pub(crate) fn host_memory(bytes: usize) -> *mut u8 {
    extern crate std;
    let layout = std::alloc::Layout::from_size_align(bytes.max(PAGE_SIZE), PAGE_SIZE).unwrap();
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!p.is_null(), "no host memory for the test");
    p
}

pub(crate) fn mib(start: u64, end: u64) -> PhysRange {
    PhysRange { start: start << 20, end: end << 20 }
}

fn clean(pm: &PhysMem) {
    let v = invariants::check(pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
}

#[test]
fn segments_are_carved_into_aligned_blocks() {
    // 1 MiB .. 9 MiB: 256 pages at order 8, then 4 MiB blocks from 4 MiB.
    let pm = phys_with_memory(&[mib(1, 9)]);
    assert_eq!(pm.free_count(), 8 * 256);
    let b = pm.free_blocks();
    assert_eq!(b[8], 2, "1..2 MiB and 8..9 MiB are 256-page blocks");
    assert_eq!(b[9], 1, "2..4 MiB is one 512-page block");
    assert_eq!(b[10], 1, "4..8 MiB is one 1024-page block");
    clean(&pm);
}

#[test]
fn alloc_returns_busy_page_and_free_restores_counts() {
    let pm = phys_with_memory(&[mib(1, 3)]);
    let before = pm.free_blocks();
    let p = pm.alloc(AllocFlags::ZERO).unwrap();
    assert!(p.xbusied(), "rule 1: allocation returns an exclusively busy page");
    assert!(p.flags().contains(PageFlags::ZERO));
    // SAFETY: the page was just allocated and the host model maps it.
    let bytes = unsafe { core::slice::from_raw_parts(pm.page_addr(p).unwrap(), PAGE_SIZE) };
    assert!(bytes.iter().all(|&b| b == 0));
    pm.free(p);
    pm.drain_cache();
    assert_eq!(pm.free_blocks(), before);
    clean(&pm);
}

#[test]
fn all_memory_can_be_allocated_and_given_back() {
    let pm = phys_with_memory(&[mib(1, 5), mib(8, 11)]);
    let total = pm.free_count();
    let before = pm.free_blocks();
    let mut got = Vec::new();
    while let Some(p) = pm.alloc(AllocFlags::NOBUSY) {
        got.push(p);
    }
    assert_eq!(got.len() as u64, total);
    assert_eq!(pm.free_count(), 0);
    assert!(pm.alloc(AllocFlags::empty()).is_none(), "exhaustion returns None");
    clean(&pm);
    for p in got {
        pm.free(p);
    }
    pm.drain_cache();
    assert_eq!(pm.free_blocks(), before);
    clean(&pm);
}

#[test]
fn contiguous_runs_respect_alignment_boundary_and_range() {
    let pm = phys_with_memory(&[mib(1, 16)]);
    let p = pm.alloc_contig(3, 64 << 10, 0, 0, u64::MAX, AllocFlags::NOBUSY).unwrap();
    assert_eq!(p.phys() % (64 << 10), 0);
    let p2 = pm.alloc_contig(5, PAGE_SIZE as u64, 32 << 10, 6 << 20, 7 << 20, AllocFlags::NOBUSY).unwrap();
    assert!(p2.phys() >= 6 << 20 && p2.phys() + 5 * 4096 <= 7 << 20);
    assert_eq!(p2.phys() / (32 << 10), (p2.phys() + 5 * 4096 - 1) / (32 << 10), "crosses the boundary");
    assert!(pm.alloc_contig(2000, PAGE_SIZE as u64, 0, 0, u64::MAX, AllocFlags::NOBUSY).is_none());
    assert!(
        pm.alloc_contig(8, PAGE_SIZE as u64, 16 << 10, 0, u64::MAX, AllocFlags::NOBUSY).is_none(),
        "larger than the boundary"
    );
    clean(&pm);
    pm.free_contig(p, 3);
    pm.free_contig(p2, 5);
    pm.drain_cache();
    assert_eq!(pm.free_count(), 15 * 256);
    clean(&pm);
}

#[test]
#[should_panic(expected = "freed twice")]
fn double_free_is_caught() {
    let pm = phys_with_memory(&[mib(1, 2)]);
    let p = pm.alloc(AllocFlags::empty()).unwrap();
    pm.free(p);
    pm.free(p);
}

#[test]
#[should_panic(expected = "freeing a wired page")]
fn freeing_wired_is_caught() {
    let pm = phys_with_memory(&[mib(1, 2)]);
    let p = pm.alloc(AllocFlags::WIRED).unwrap();
    pm.free(p);
}

#[test]
#[should_panic(expected = "still in object")]
fn freeing_owned_is_caught() {
    let pm = phys_with_memory(&[mib(1, 2)]);
    let p = pm.alloc(AllocFlags::empty()).unwrap();
    p.set_owner(0x1000, 3);
    pm.free(p);
}

#[test]
#[should_panic(expected = "shared-busied")]
fn freeing_sbusy_is_caught() {
    let pm = phys_with_memory(&[mib(1, 2)]);
    let p = pm.alloc(AllocFlags::NOBUSY).unwrap();
    assert!(p.try_sbusy());
    pm.free(p);
}

#[test]
fn readahead_finish_queues_a_page_read() {
    let pm = phys_with_memory(&[mib(1, 2)]);
    let start = pm.free_count();
    let good = pm.alloc(AllocFlags::empty()).unwrap();
    good.set_owner(0x2000, 0);
    good.set_all_valid();
    pm.readahead_finish(good);
    assert_eq!(good.queue(), Queue::Inactive);
    assert!(!good.busied());
    clean(&pm);
    // Tidy up: take the page out of its (pretend) object and free it.
    good.xbusy();
    good.clear_owner();
    pm.free(good);
    assert_eq!(pm.free_count(), start);
    clean(&pm);
}

#[test]
#[should_panic(expected = "nothing in it is valid")]
fn readahead_finish_refuses_a_page_not_read() {
    let pm = phys_with_memory(&[mib(1, 2)]);
    let bad = pm.alloc(AllocFlags::empty()).unwrap();
    bad.set_owner(0x2000, 1);
    pm.readahead_finish(bad);
}

/// Idle zeroing fills the zero pool up to its share of the free pages with
/// pages that are all zeroes; allocations that will zero their page take
/// them, others only when nothing else is left; the free count never moves.
#[test]
fn zero_pool_fills_at_idle_and_serves_zeroing_allocations() {
    let pm = phys_with_memory(&[mib(1, 3)]);
    let total = pm.free_count();
    // Dirty every page first, so that zeros in the pool are the pool's work.
    let mut got = Vec::new();
    while let Some(p) = pm.alloc(AllocFlags::NOBUSY) {
        pm.fill(p, 1, 0xAA);
        got.push(p);
    }
    for p in got {
        pm.free(p);
    }
    let mut zeroed = 0;
    while pm.zero_idle() {
        zeroed += 1;
        assert_eq!(pm.free_count(), total, "zeroing keeps every page counted free");
    }
    assert_eq!(zeroed, total / ZERO_POOL_SHARE, "the pool stops at its share");
    assert_eq!(pm.zeroed_count(), zeroed);
    clean(&pm);

    let p = pm.alloc(AllocFlags::PREFER_ZERO).unwrap();
    assert!(p.flags().contains(PageFlags::ZERO), "a pool page comes with the zero flag");
    // SAFETY: the page was just allocated and the host model maps it.
    let bytes = unsafe { core::slice::from_raw_parts(pm.page_addr(p).unwrap(), PAGE_SIZE) };
    assert!(bytes.iter().all(|&b| b == 0), "a pool page is all zeroes");
    assert_eq!(pm.zeroed_count(), zeroed - 1);
    let q = pm.alloc(AllocFlags::empty()).unwrap();
    assert_eq!(pm.zeroed_count(), zeroed - 1, "an ordinary allocation leaves the pool alone");
    pm.free(p);
    pm.free(q);
    clean(&pm);

    // With the lists and the cache empty, ordinary allocations drain the pool.
    let mut got = Vec::new();
    while let Some(p) = pm.alloc(AllocFlags::NOBUSY) {
        got.push(p);
    }
    assert_eq!(got.len() as u64, total, "every free page, pool included, can be had");
    assert_eq!(pm.zeroed_count(), 0);
    for p in got {
        pm.free(p);
    }
    clean(&pm);
}

/// Pool pages scattered over memory do not make a large block impossible:
/// a multi-page allocation that fails gives the pool back to the lists and
/// tries again; `forget_zeroed` empties it with the zero flags cleared.
#[test]
fn zero_pool_gives_way_to_large_blocks() {
    // 2 MiB .. 6 MiB: two order-9 blocks.
    let pm = phys_with_memory(&[mib(2, 6)]);
    let before = {
        pm.drain_cache();
        pm.free_blocks()
    };
    while pm.zero_idle() {}
    assert!(pm.zeroed_count() > 0);
    // Both blocks: the second only with the pool back on the lists.
    let a = pm.alloc_order(9, AllocFlags::UNMANAGED).expect("the first 2 MiB block");
    let b = pm.alloc_order(9, AllocFlags::UNMANAGED).expect("order 9 found once the pool is drained");
    assert_eq!(pm.zeroed_count(), 0);
    pm.free_contig(a, 512);
    pm.free_contig(b, 512);
    clean(&pm);
    while pm.zero_idle() {}
    let runs = [(); 2].map(|_| pm.alloc_contig(512, PAGE_SIZE as u64, 0, 0, u64::MAX, AllocFlags::UNMANAGED));
    assert!(runs.iter().all(|r| r.is_some()), "contiguous runs found once the pool is drained");
    for r in runs {
        pm.free_contig(r.unwrap(), 512);
    }
    while pm.zero_idle() {}
    pm.forget_zeroed();
    assert_eq!(pm.zeroed_count(), 0);
    assert!(
        pm.pages.iter().all(|p| !p.flags().contains(PageFlags::FREE) || !p.flags().contains(PageFlags::ZERO)),
        "forgotten pages are not known zero"
    );
    pm.drain_cache();
    assert_eq!(pm.free_blocks(), before, "the blocks merge back");
    clean(&pm);
}

/// Debug builds check that a page from the zero pool is all zeroes: a write
/// to a free page after it was zeroed is caught when the page is taken.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "flagged zero")]
fn a_write_to_a_pooled_page_is_caught() {
    let pm = phys_with_memory(&[mib(1, 2)]);
    assert!(pm.zero_idle());
    let idx = pm.zeroed.lock().head;
    let p = pm.page(idx);
    // SAFETY: the host model maps the page; it is free (the write is the bug
    // this test plants).
    unsafe { (pm.page_addr(p).unwrap() as *mut u64).add(17).write(0xBAD) };
    pm.alloc(AllocFlags::PREFER_ZERO);
}

/// The reserve holds with pages in the zero pool: they count as free, an
/// ordinary allocation (zeroing or not) stops when the lists and the pool
/// hold the reserve and no more, and a `SYSTEM` allocation takes what is
/// left, the pool's pages too.
#[test]
fn reserve_counts_the_zero_pool() {
    let pm = phys_with_memory(&[mib(1, 3)]);
    let total = pm.free_count();
    while pm.zero_idle() {}
    let pooled = pm.zeroed_count();
    assert!(pooled > 0);
    let reserve = pooled + 8;
    pm.levels.reserve.store(reserve, Ordering::Relaxed);
    let mut got = Vec::new();
    // Alternate zeroing and plain requests: both stop at the reserve.
    for i in 0.. {
        let flags = if i % 2 == 0 { AllocFlags::NOBUSY | AllocFlags::PREFER_ZERO } else { AllocFlags::NOBUSY };
        match pm.alloc(flags) {
            Some(p) => got.push(p),
            None => break,
        }
    }
    // (Pages the cache took from the lists before the reserve was reached
    // are handed out too: at most a batch below it.)
    let left = total - got.len() as u64;
    assert!(left <= reserve && left + CACHE_BATCH as u64 > reserve, "{left} pages left for a reserve of {reserve}");
    assert!(pm.alloc(AllocFlags::PREFER_ZERO).is_none(), "a zeroing allocation does not take the reserve from the pool");
    assert!(pm.zeroed_count() > 0, "the reserve is partly in the pool");
    while let Some(p) = pm.alloc(AllocFlags::NOBUSY | AllocFlags::SYSTEM) {
        got.push(p);
    }
    assert_eq!(got.len() as u64, total, "SYSTEM allocations take the reserve, pool included");
    assert_eq!(pm.zeroed_count(), 0);
    for p in got {
        pm.free(p);
    }
    pm.levels.reserve.store(0, Ordering::Relaxed);
    clean(&pm);
}

//! The pmap's locks across CPUs: a PV walk that meets a pmap whose lock
//! another CPU holds waits for it with the page's list let go, and starts
//! over when the list changed meanwhile; PV entries come from their pmap's
//! own pages, and go back to the allocator with the last mapping.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use ktest::ktest;
use vm::PAGE_SIZE;
use vm::page::Page;
use vm::phys::AllocFlags;
use vm::pmap::{PageMappings, Pmap, Prot};

use super::pv_walk::{RESTARTED, WAITED};
use super::{MAPPINGS, X86Pmap};
use crate::kern::{sched, time};

const VA: u64 = 0x5000_0000;
const PAGE: u64 = PAGE_SIZE as u64;

/// A managed page that may be mapped (valid), not in any object.
fn mappable_page() -> &'static Page {
    let p = vm::global().alloc(AllocFlags::NOBUSY).expect("a page");
    p.xbusy();
    p.set_all_valid();
    p.xunbusy();
    p
}

fn free_page(p: &'static Page) {
    assert_eq!(p.mapping_count(), 0);
    p.xbusy();
    p.invalidate();
    p.xunbusy();
    vm::global().free(p);
}

/// Spins for `us` microseconds (a spin lock is held: no sleeping).
fn spin_for(us: u64) {
    let t0 = time::rdtsc();
    while time::tsc_to_us(time::rdtsc() - t0) < us {
        core::hint::spin_loop();
    }
}

/// `remove_all` of a page mapped in two pmaps, on another CPU, while this
/// CPU holds the first pmap's lock: the walk waits (it cannot finish while
/// the lock is held), and with `change` this CPU also maps the page once
/// more meanwhile (its list changes, so the walk starts over). Once the
/// lock is let go the walk ends with every mapping gone.
fn walk_meets_held_pmap(change: bool) {
    let a = X86Pmap::new().unwrap();
    let b = X86Pmap::new().unwrap();
    let p = mappable_page();
    a.enter(VA, p, Prot::RW, false).unwrap().skip_not_loaded();
    b.enter(VA + PAGE, p, Prot::READ, false).unwrap().skip_not_loaded();
    assert_eq!(MAPPINGS.mappings_of(p).len(), 2);
    let (waited, restarted) = (WAITED.load(Ordering::Relaxed), RESTARTED.load(Ordering::Relaxed));
    let me = sched::current_cpu();
    sched::pin_to(Some(me));
    let other = (me + 1) % crate::arch::percpu::online();
    let go = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (g, d) = (go.clone(), done.clone());
    let walker = sched::spawn("pv-walker", move || {
        sched::pin_to(Some(other));
        while !g.load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        MAPPINGS.remove_all(p);
        d.store(true, Ordering::SeqCst);
    })
    .expect("a thread");
    {
        // The most recent mapping comes first in the list: b's, whose lock
        // is free, then a's, held here.
        let held = a.lock.lock();
        go.store(true, Ordering::SeqCst);
        // Until the walk reaches a's entry and waits (two seconds at most:
        // the host may be slow to run the other vCPU), and a moment more.
        let t0 = time::rdtsc();
        while WAITED.load(Ordering::Relaxed) == waited && time::tsc_to_us(time::rdtsc() - t0) < 2_000_000 {
            core::hint::spin_loop();
        }
        spin_for(1000);
        assert!(!done.load(Ordering::SeqCst), "the walk ended while a mapping's pmap lock was held");
        if change {
            b.enter(VA + 2 * PAGE, p, Prot::READ, false).unwrap().skip_not_loaded();
        }
        drop(held);
    }
    sched::join(walker);
    sched::pin_to(None);
    assert!(done.load(Ordering::SeqCst));
    assert!(WAITED.load(Ordering::Relaxed) > waited, "the walk never waited for the held pmap lock");
    if change {
        assert!(RESTARTED.load(Ordering::Relaxed) > restarted, "the walk went on over a list that changed");
    }
    assert!(MAPPINGS.mappings_of(p).is_empty(), "mappings left: {:?}", MAPPINGS.mappings_of(p));
    assert_eq!(p.mapping_count(), 0);
    for (pmap, va) in [(&a, VA), (&b, VA + PAGE), (&b, VA + 2 * PAGE)] {
        assert!(pmap.extract(va).is_none(), "{va:#x} still mapped");
    }
    // Every PV entry went back: no pages of entries are left.
    assert_eq!(a.lock.lock().count(), 0);
    assert_eq!(b.lock.lock().count(), 0);
    drop((a, b));
    free_page(p);
}

/// The walk waits for a pmap lock held on another CPU, then goes on.
#[ktest]
fn a_pv_walk_waits_for_a_held_pmap_lock() {
    if crate::arch::percpu::online() < 2 {
        return;
    }
    walk_meets_held_pmap(false);
}

/// The list changes while the walk waits: it starts over, and no mapping
/// (the new one included) is left.
#[ktest]
fn a_pv_walk_starts_over_when_the_list_changed() {
    if crate::arch::percpu::online() < 2 {
        return;
    }
    walk_meets_held_pmap(true);
}

/// PV entries come from pages of the pmap's own: a chunk is taken with
/// the first mapping and given back with the last; more mappings than a
/// chunk holds take more, and all are given back.
#[ktest]
fn pv_entries_come_from_the_pmaps_own_pages() {
    let free0 = crate::devtools::ktest_runner::free_pages();
    let pmap = X86Pmap::new().unwrap();
    let p = mappable_page();
    // 400 mappings of one page: more than two chunks' worth.
    const N: u64 = 400;
    for i in 0..N {
        pmap.enter(VA + i * PAGE, p, Prot::READ, false).unwrap().skip_not_loaded();
    }
    assert_eq!(p.mapping_count() as u64, N);
    let chunks = pmap.lock.lock().count();
    assert!(chunks >= 3, "{N} entries in {chunks} chunks");
    // Half removed: the chunks stay as long as an entry of theirs is used.
    pmap.remove(VA, VA + N / 2 * PAGE).skip_not_loaded();
    assert_eq!(p.mapping_count() as u64, N / 2);
    assert_eq!(MAPPINGS.mappings_of(p).len() as u64, N / 2);
    assert!(pmap.lock.lock().count() >= 2);
    pmap.remove(VA, VA + N * PAGE).skip_not_loaded();
    assert_eq!(pmap.lock.lock().count(), 0, "pages of PV entries kept after the last mapping");
    drop(pmap);
    free_page(p);
    assert_eq!(crate::devtools::ktest_runner::free_pages(), free0, "pages lost");
}

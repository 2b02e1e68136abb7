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

/// `move_range` moves the leaf entries, not the pages: each page is
/// mapped at its new address with its access and wired mark, its PV
/// entry renamed, its mapping count unchanged; an orphaned wiring moves
/// too; the source's emptied tables go back to the allocator; the
/// destination may straddle leaf tables the source does not.
#[ktest]
fn move_range_moves_entries_and_pv_entries() {
    let free0 = crate::devtools::ktest_runner::free_pages();
    let pmap = X86Pmap::new().unwrap();
    let other = X86Pmap::new().unwrap();
    // 600 pages from just below a 2 MiB boundary, every third mapped, to a
    // destination 5 pages off the source's alignment.
    const N: u64 = 600;
    let from = VA + (1 << 21) - 8 * PAGE;
    let to = VA + (64 << 21) + 5 * PAGE;
    let pages: alloc::vec::Vec<_> = (0..N / 3).map(|_| mappable_page()).collect();
    for (i, p) in pages.iter().enumerate() {
        let va = from + 3 * i as u64 * PAGE;
        let prot = if i % 2 == 0 { Prot::RW } else { Prot::READ };
        pmap.enter(va, p, prot, i % 5 == 0).unwrap().skip_not_loaded();
        // A second mapping elsewhere keeps its PV entry as it was.
        other.enter(va, p, Prot::READ, false).unwrap().skip_not_loaded();
    }
    let wired = pmap.wired_count();
    pmap.move_range(from, to, N * PAGE).unwrap().skip_not_loaded();
    for (i, p) in pages.iter().enumerate() {
        let (old, new) = (from + 3 * i as u64 * PAGE, to + 3 * i as u64 * PAGE);
        assert!(pmap.extract(old).is_none(), "{old:#x} still mapped");
        let (pa, prot) = pmap.extract(new).expect("mapped at the new address");
        assert_eq!(pa, p.phys());
        assert_eq!(prot.contains(Prot::WRITE), i % 2 == 0);
        assert_eq!(pmap.wired_at(new), i % 5 == 0);
        assert_eq!(p.mapping_count(), 2);
        let mut seen = MAPPINGS.mappings_of(p);
        seen.sort();
        let mut want = alloc::vec![(&*pmap as *const X86Pmap as usize, new), (&*other as *const X86Pmap as usize, old)];
        want.sort();
        assert_eq!(seen, want, "PV entries of page {i}");
    }
    assert_eq!(pmap.wired_count(), wired);
    assert_eq!(pmap.next_used(from, from + N * PAGE), None, "entries left in the source");
    // An orphaned wiring (a wired page that left its object) moves too.
    let w = mappable_page();
    pmap.enter(from, w, Prot::RW, true).unwrap().skip_not_loaded();
    MAPPINGS.orphan_wired(w);
    assert_eq!(pmap.next_used(from, from + PAGE), Some(from));
    pmap.move_range(from, to - PAGE, PAGE).unwrap().skip_not_loaded();
    assert_eq!(pmap.take_orphan(from), None);
    assert_eq!(pmap.take_orphan(to - PAGE), Some(w.phys()));
    pmap.remove(0, super::USER_END).skip_not_loaded();
    other.remove(0, super::USER_END).skip_not_loaded();
    drop((pmap, other));
    for p in pages.into_iter().chain([w]) {
        free_page(p);
    }
    assert_eq!(crate::devtools::ktest_runner::free_pages(), free0, "pages lost (page tables or PV entries)");
}

/// Between 2 MiB-aligned places, `move_range` moves each leaf table whole:
/// the destination's page-directory entry names the source's table, the
/// PV entries give the new addresses, and no table is made or lost.
#[ktest]
fn move_range_moves_aligned_tables_whole() {
    let free0 = crate::devtools::ktest_runner::free_pages();
    let pmap = X86Pmap::new().unwrap();
    const SPAN: u64 = 1 << 21;
    let from = VA + 8 * SPAN;
    let to = VA + 64 * SPAN;
    // Three tables' worth, a page in every seven mapped, and a partial
    // block after them (its entries move one by one).
    let len = 3 * SPAN + 16 * PAGE;
    let pages: alloc::vec::Vec<_> = (0..len / PAGE / 7 + 1).map(|_| mappable_page()).collect();
    for (i, p) in pages.iter().enumerate() {
        pmap.enter(from + 7 * i as u64 * PAGE, p, Prot::RW, false).unwrap().skip_not_loaded();
    }
    let tables: alloc::vec::Vec<u64> = (0..3).map(|b| pmap.walk_entries(from + b * SPAN)[2]).collect();
    pmap.enter(to + 3 * SPAN + 512 * PAGE, mappable_page(), Prot::READ, false).unwrap().skip_not_loaded();
    let before = crate::devtools::ktest_runner::free_pages();
    pmap.move_range(from, to, len).unwrap().skip_not_loaded();
    for b in 0..3 {
        assert_eq!(pmap.walk_entries(to + b * SPAN)[2], tables[b as usize], "table {b} moved whole");
        assert_eq!(pmap.walk_entries(from + b * SPAN).len(), 3, "no table left at the old place of {b}");
    }
    for (i, p) in pages.iter().enumerate() {
        let (old, new) = (from + 7 * i as u64 * PAGE, to + 7 * i as u64 * PAGE);
        assert!(pmap.extract(old).is_none());
        assert_eq!(pmap.extract(new).map(|(pa, _)| pa), Some(p.phys()));
        assert_eq!(MAPPINGS.mappings_of(p), alloc::vec![(&*pmap as *const X86Pmap as usize, new)]);
    }
    // The partial block's one new leaf table came from the allocator; the
    // old one and the emptied directory levels went back.
    assert!(crate::devtools::ktest_runner::free_pages() + 1 >= before, "tables made for whole moves");
    // A page-out walk after the move finds each page at its new address.
    MAPPINGS.remove_all(pages[5]);
    assert!(pmap.extract(to + 35 * PAGE).is_none());
    let last = pmap.extract(to + 3 * SPAN + 512 * PAGE).map(|(pa, _)| pa).unwrap();
    pmap.remove(0, super::USER_END).skip_not_loaded();
    drop(pmap);
    for p in pages {
        free_page(p);
    }
    free_page(vm::global().page_of(last).unwrap());
    assert_eq!(crate::devtools::ktest_runner::free_pages(), free0, "pages lost (page tables or PV entries)");
}

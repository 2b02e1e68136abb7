//! Host tests of the map's own logic: the entry limit, entry allocation that
//! fails, and the free-space search with its hint. (Faults through maps are
//! tested in `fault/tests.rs`.)

extern crate std;

use alloc::boxed::Box;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::failpoint::{Action, FailPoint};
use crate::page::Page;
use crate::phys::PhysMem;
use crate::phys::tests::{mib, phys_with_memory};
use crate::pmap::soft::SoftMachine;
use crate::radix::Radix;
use crate::zone::NodeZone;
use crate::zone::tests::HOST_PAGES;

const LOW: u64 = 0x1_0000;
const HIGH: u64 = 1 << 47;

/// An empty map of `[LOW, HIGH)` over a software pmap, with a fail point of
/// its own for entry allocation.
fn new_map() -> (VmMap, &'static FailPoint) {
    let pm: &'static PhysMem = Box::leak(Box::new(phys_with_memory(&[mib(1, 2)])));
    let node_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("radix.node_alloc")));
    let page_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("page.alloc")));
    let zone = Box::leak(Box::new(NodeZone::new(Radix::<&'static Page>::NODE_SIZE, &HOST_PAGES, node_fail)));
    let machine: &'static SoftMachine = Box::leak(Box::new(SoftMachine::new()));
    let env = VmEnv { pm, zone, page_alloc: page_fail, mappings: machine };
    let entry_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("map.entry_alloc")));
    let mut map = VmMap::new(LOW, HIGH, machine.new_pmap(), env);
    map.set_entry_fail_point(entry_fail);
    (map, entry_fail)
}

fn anon(map: &mut VmMap, at: u64, pages: u64) -> Result<u64, MapError> {
    map.map(Some(at), pages * PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false)
}

fn ranges(map: &VmMap) -> Vec<(u64, u64)> {
    map.entries().map(|e| (e.start, e.end)).collect()
}

/// At the limit, every operation that needs another entry fails with
/// `TooManyEntries` and changes nothing; those that need none still work.
#[test]
fn the_entry_limit_refuses_maps_and_splits() {
    let (mut map, _) = new_map();
    map.set_max_entries(4);
    for i in 0..3 {
        anon(&mut map, LOW + i * 0x10_0000, 1).unwrap();
    }
    let big = anon(&mut map, 0x1000_0000, 3).unwrap();
    assert_eq!(map.entry_count(), 4);
    let before = ranges(&map);
    let size = map.size();

    assert_eq!(anon(&mut map, 0x2000_0000, 1), Err(MapError::TooManyEntries), "a fifth entry");
    assert_eq!(map.map(None, PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false), Err(MapError::TooManyEntries));
    assert_eq!(map.protect(big + PAGE, big + 2 * PAGE, Prot::READ), Err(MapError::TooManyEntries), "a split in the middle");
    assert_eq!(map.protect(big, big + PAGE, Prot::READ), Err(MapError::TooManyEntries), "a split at one end");
    assert_eq!(map.unmap(big + PAGE, big + 2 * PAGE), Err(MapError::TooManyEntries), "a hole in the middle");
    assert_eq!(map.lock_entries(big + PAGE, big + 3 * PAGE, false), Err(MapError::TooManyEntries));
    assert_eq!(ranges(&map), before, "nothing changed");
    assert_eq!(map.size(), size);
    assert!(map.entries().all(|e| e.prot == Prot::RW && e.wired_count == 0));

    // Whole entries, and an end of one (one split, one entry fewer), need
    // nothing more.
    map.protect(big, big + 3 * PAGE, Prot::READ).unwrap();
    map.unmap(big + 2 * PAGE, big + 3 * PAGE).unwrap();
    assert_eq!(map.entry_count(), 4);
    map.unmap(LOW, LOW + PAGE).unwrap();
    assert_eq!(map.entry_count(), 3);
    map.protect(big, big + PAGE, Prot::RW).unwrap();
    assert_eq!(map.entry_count(), 4);
    assert_eq!(map.size(), 2 * PAGE + 2 * PAGE);
}

/// A fork copies the limit and fails, cleanly, when its entries cannot be
/// allocated.
#[test]
fn entry_allocation_that_fails_is_an_error() {
    let (mut map, fp) = new_map();
    let a = anon(&mut map, LOW, 4).unwrap();
    fp.set(Action::Always);
    assert_eq!(anon(&mut map, 0x100_0000, 1), Err(MapError::TooManyEntries));
    assert_eq!(map.protect(a + PAGE, a + 2 * PAGE, Prot::READ), Err(MapError::TooManyEntries));
    assert!(map.fork(map.pmap().clone()).is_err());
    // What needs no new entry goes on.
    map.protect(a, a + 4 * PAGE, Prot::READ).unwrap();
    assert_eq!(ranges(&map), [(a, a + 4 * PAGE)]);
    fp.set(Action::Off);
    map.set_max_entries(7);
    let child = map.fork(map.pmap().clone()).unwrap();
    assert_eq!(child.max_entries(), 7);
    assert_eq!(child.size(), 4 * PAGE);
    map.unmap(a, a + 4 * PAGE).unwrap();
    assert_eq!(map.size(), 0);
}

/// A range query answers whether a range is free, whatever its length: a
/// 1 TiB range over a map of a few entries.
#[test]
fn a_free_range_is_found_by_entries_not_pages() {
    let (mut map, _) = new_map();
    let a = anon(&mut map, 0x4000_0000, 2).unwrap();
    assert!(map.is_free(LOW, a));
    assert!(!map.is_free(LOW, a + PAGE));
    assert!(!map.is_free(a + PAGE, HIGH));
    assert!(map.is_free(a + 2 * PAGE, HIGH));
    assert!(!map.is_free(LOW, LOW + (1 << 40)));
    assert_eq!(map.mapped_in(LOW, LOW + (1 << 40)), 2 * PAGE);
    assert_eq!(map.mapped_in(a + PAGE, HIGH), PAGE);
}

/// Twenty thousand mappings with no address, each placed after the last:
/// the search starts at the end of the hint every time, so it looks at a
/// few entries per call, not at all of them. An unmap below makes a hole
/// that the next search finds.
#[test]
fn searches_without_an_address_visit_few_entries() {
    let (mut map, _) = new_map();
    const N: u64 = 20_000;
    const BASE: u64 = 0x7000_0000_0000;
    for i in 0..N {
        let at = map.find_space_from(BASE, PAGE, PAGE).unwrap();
        assert_eq!(at, BASE + i * PAGE);
        // Alternating protections, so no two could ever be one entry.
        let prot = if i % 2 == 0 { Prot::RW } else { Prot::READ };
        map.map(Some(at), PAGE, prot, Prot::ALL, Inherit::Copy, None, false).unwrap();
    }
    let visits = map.search_visits();
    assert!(visits <= 2 * N, "{visits} entries visited for {N} searches");

    map.unmap(BASE + 100 * PAGE, BASE + 101 * PAGE).unwrap();
    assert_eq!(map.find_space_from(BASE, PAGE, PAGE), Some(BASE + 100 * PAGE), "the hole");
    assert_eq!(map.find_space_from(BASE, 2 * PAGE, PAGE), Some(BASE + N * PAGE), "too small a hole");
    map.map(Some(BASE + 100 * PAGE), PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
    let before = map.search_visits();
    for _ in 0..100 {
        let at = map.find_space_from(BASE, PAGE, PAGE).unwrap();
        map.map(Some(at), PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
    }
    let visits = map.search_visits() - before;
    assert!(visits <= 200 + N, "{visits} entries visited for 100 searches after the hole was filled");

    // A one-page hole low down, then requests for two pages, too long for
    // it: the first passes over it, the rest start above.
    map.unmap(BASE + 10 * PAGE, BASE + 11 * PAGE).unwrap();
    let before = map.search_visits();
    for _ in 0..100 {
        let at = map.find_space_from(BASE, 2 * PAGE, PAGE).unwrap();
        assert!(at > BASE + N * PAGE);
        map.map(Some(at), 2 * PAGE, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
    }
    let visits = map.search_visits() - before;
    assert!(visits <= 200 + N, "{visits} entries visited for 100 searches over a short hole");
    assert_eq!(map.find_space_from(BASE, PAGE, PAGE), Some(BASE + 10 * PAGE), "the hole is still found");
}

/// The lowest fit at or above `from`, the slow way: every entry, in order.
fn model_find(entries: &[(u64, u64)], from: u64, len: u64, align: u64) -> Option<u64> {
    let mut cur = from.max(LOW).next_multiple_of(align);
    for &(s, e) in entries {
        if e <= cur {
            continue;
        }
        if cur + len <= s {
            return Some(cur);
        }
        cur = cur.max(e.next_multiple_of(align));
    }
    (cur + len <= HIGH).then_some(cur)
}

#[derive(Clone, Debug)]
enum Op {
    /// Map `pages` at the lowest fit from `from` (one of a few bases) with
    /// alignment `1 << align_shift` pages.
    Map { base: u8, pages: u64, align_shift: u32 },
    /// Unmap `pages` from page `page` of the region the bases are in.
    Unmap { page: u64, pages: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 1u64..6, 0u32..3).prop_map(|(base, pages, align_shift)| Op::Map { base, pages, align_shift }),
        2 => (0u64..256, 1u64..12).prop_map(|(page, pages)| Op::Unmap { page, pages }),
    ]
}

const REGION: u64 = 0x10_0000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random maps and unmaps: every range found is free, aligned, at or
    /// above where the search began, and the lowest such (the model's).
    #[test]
    fn found_space_is_free_aligned_and_lowest(ops in proptest::collection::vec(op(), 1..200)) {
        let (mut map, _) = new_map();
        let bases = [REGION, REGION + 17 * PAGE, REGION + 64 * PAGE];
        for op in ops {
            match op {
                Op::Map { base, pages, align_shift } => {
                    let (from, len, align) = (bases[base as usize], pages * PAGE, PAGE << align_shift);
                    let want = model_find(&ranges(&map), from, len, align);
                    let got = map.find_space_from(from, len, align);
                    prop_assert_eq!(got, want);
                    let at = got.unwrap();
                    prop_assert!(at % align == 0 && at >= from);
                    prop_assert!(map.is_free(at, at + len));
                    map.map(Some(at), len, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
                }
                Op::Unmap { page, pages } => {
                    let start = REGION + page * PAGE;
                    map.unmap(start, start + pages * PAGE).unwrap();
                }
            }
            let total: u64 = ranges(&map).iter().map(|(s, e)| e - s).sum();
            prop_assert_eq!(map.size(), total);
        }
    }
}

/// Protecting pages one at a time splits the entry; giving them all the
/// same protection again joins it back into one.
#[test]
fn entries_left_alike_are_joined_again() {
    let (mut map, _) = new_map();
    let a = anon(&mut map, 0x10_0000, 8).unwrap();
    let before = map.entry_count();
    for i in 0..8 {
        map.protect(a + i * PAGE, a + (i + 1) * PAGE, if i % 2 == 0 { Prot::READ } else { Prot::RW }).unwrap();
    }
    assert_eq!(map.entry_count(), before + 7, "one entry per page");
    map.protect(a, a + 8 * PAGE, Prot::READ).unwrap();
    assert_eq!(map.entry_count(), before, "one entry again");
    assert_eq!(ranges(&map), [(a, a + 8 * PAGE)]);
}

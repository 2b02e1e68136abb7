//! Host tests of `mremap` on a map ([`VmMap::remap`]) with faults through
//! the software pmap: what moves is the page-table entries, never the
//! pages; what grows shows no stale data; Linux's errors.

extern crate std;

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::tests::{T, setup};
use super::*;
use crate::map::{Inherit, LockRange, MapLock, Remap, RemapError, Remapped};
use crate::object::tests::make_resident;
use crate::object::{ObjectKind, VmObject};
use crate::pmap::Pmap;
use crate::pmap::soft::SoftPmap;

const P: u64 = PAGE_SIZE as u64;

/// A plain move or resize: no flags but `may_move`, no limits.
fn req(old: u64, old_len: u64, new_len: u64, may_move: bool) -> Remap {
    Remap {
        old,
        old_len,
        new_len,
        may_move,
        fixed: None,
        dont_unmap: false,
        new_addr: 0,
        search_from: 0,
        size_limit: u64::MAX,
        wired_limit: u64::MAX,
    }
}

/// Writes `tag + i` at a few places of page `i` of `[a, a + pages)`.
fn fill(t: &T, map: &MapLock, pmap: &SoftPmap, a: u64, pages: u64, tag: u8) {
    for i in 0..pages {
        for off in [0, 1234, P - 1] {
            t.write(map, pmap, a + i * P + off, tag.wrapping_add(i as u8)).unwrap();
        }
    }
}

fn check(t: &T, map: &MapLock, pmap: &SoftPmap, a: u64, pages: u64, tag: u8) {
    for i in 0..pages {
        for off in [0, 1234, P - 1] {
            assert_eq!(t.read(map, pmap, a + i * P + off).unwrap(), tag.wrapping_add(i as u8), "page {i} at {:#x}", a + i * P);
        }
    }
}

fn frames(pmap: &SoftPmap, a: u64, pages: u64) -> Vec<Option<u64>> {
    (0..pages).map(|i| pmap.extract(a + i * P).map(|(pa, _)| pa)).collect()
}

/// A move takes the page-table entries along: the same frames at the new
/// addresses, nothing left at the old ones, and a fault there finds no
/// entry.
#[test]
fn a_move_takes_the_mappings_not_copies() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 8 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        // Something just after, so that growing must move.
        map.lock().map(Some(a + 8 * P), P, Prot::READ, Prot::ALL, Inherit::Copy, None, false).unwrap();
        fill(&t, &map, &pmap, a, 8, 10);
        let before = frames(&pmap, a, 8);
        assert!(before.iter().all(Option::is_some));
        let done = map.lock().remap(&req(a, 8 * P, 12 * P, true)).unwrap();
        let b = done.addr;
        assert!(b != a && done.wire.is_none());
        assert_eq!(frames(&pmap, b, 8), before, "the frames moved with their entries");
        assert!(frames(&pmap, a, 8).iter().all(Option::is_none), "nothing is left mapped at the old place");
        assert_eq!(fault(&map, a, Prot::READ, false), Err(FaultError::NoEntry));
        check(&t, &map, &pmap, b, 8, 10);
        for i in 8..12 {
            assert_eq!(t.read(&map, &pmap, b + i * P).unwrap(), 0, "the grown part is new memory");
        }
        assert_eq!(map.lock().overlapping(b, b + 12 * P).count(), 1, "one entry, its object grown with it");
        for pa in before.into_iter().flatten() {
            assert_eq!(t.env.pm.page_of(pa).unwrap().mapping_count(), 1);
        }
        t.clean();
    }
    t.done();
}

/// Growing in place when the addresses after are free keeps the address;
/// shrinking gives up the tail; growing again shows none of what the tail
/// held.
#[test]
fn grow_in_place_shrink_and_grow_again() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        fill(&t, &map, &pmap, a, 4, 1);
        assert_eq!(map.lock().remap(&req(a, 4 * P, 8 * P, false)).unwrap(), Remapped { addr: a, wire: None });
        check(&t, &map, &pmap, a, 4, 1);
        fill(&t, &map, &pmap, a + 4 * P, 4, 50);
        assert_eq!(map.lock().overlapping(a, a + 8 * P).count(), 1);
        assert_eq!(map.lock().remap(&req(a, 8 * P, 2 * P, false)).unwrap().addr, a);
        assert!(map.lock().is_free(a + 2 * P, a + 8 * P));
        assert_eq!(fault(&map, a + 2 * P, Prot::READ, false), Err(FaultError::NoEntry));
        assert_eq!(map.lock().remap(&req(a, 2 * P, 8 * P, false)).unwrap().addr, a);
        check(&t, &map, &pmap, a, 2, 1);
        for i in 2..8 {
            assert_eq!(t.read(&map, &pmap, a + i * P + 1234).unwrap(), 0, "page {i}: what the tail held is gone");
        }
        t.clean();
    }
    t.done();
}

/// A private file mapping written to (a shadow over the file) grows over
/// the file's next pages, copy-on-write as the rest.
#[test]
fn a_private_file_mapping_grows_over_the_files_next_pages() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let obj = VmObject::new(ObjectKind::Vnode, 16, t.env);
        let pages: Vec<_> = (0..16).map(|i| make_resident(&obj, i, 100 + i as u8)).collect();
        obj.reference();
        let a = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, Some((obj.clone(), 2)), true).unwrap();
        t.write(&map, &pmap, a, 7).unwrap();
        map.lock().remap(&req(a, 4 * P, 8 * P, false)).unwrap();
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 7);
        for i in 1..8 {
            assert_eq!(t.read(&map, &pmap, a + i * P).unwrap(), 100 + 2 + i as u8, "page {i} is the file's");
        }
        t.write(&map, &pmap, a + 6 * P, 9).unwrap();
        // SAFETY: a resident page of the host model.
        assert_eq!(unsafe { *t.env.pm.page_addr(pages[8]).unwrap() }, 108, "the write stayed private");
        map.lock().unmap(a, a + 8 * P).unwrap();
        obj.deallocate();
    }
    t.done();
}

/// `MREMAP_DONTUNMAP`: the pages go with the move; the old range stays
/// mapped and reads as new memory.
#[test]
fn dont_unmap_leaves_the_old_range_empty() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        fill(&t, &map, &pmap, a, 4, 30);
        let before = frames(&pmap, a, 4);
        let r = Remap { dont_unmap: true, new_addr: 1 << 40, ..req(a, 4 * P, 4 * P, true) };
        let b = map.lock().remap(&r).unwrap().addr;
        assert_ne!(a, b);
        assert_eq!(frames(&pmap, b, 4), before);
        check(&t, &map, &pmap, b, 4, 30);
        for i in 0..4 {
            assert_eq!(t.read(&map, &pmap, a + i * P + 1).unwrap(), 0, "the old range is mapped and empty");
        }
        assert_eq!(map.lock().size(), 8 * P);
        t.clean();
    }
    t.done();
}

/// An old length of 0 maps shared memory a second time: both see one
/// object. Private memory is refused.
#[test]
fn shared_memory_mapped_again() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 2 * P, Prot::RW, Prot::ALL, Inherit::Share, None, false).unwrap();
        let r = map.lock().remap(&req(a, 0, 2 * P, true)).unwrap();
        t.write(&map, &pmap, a + P, 5).unwrap();
        assert_eq!(t.read(&map, &pmap, r.addr + P).unwrap(), 5);
        t.write(&map, &pmap, r.addr, 6).unwrap();
        assert_eq!(t.read(&map, &pmap, a).unwrap(), 6);
        let private = map.lock().map(None, P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        assert_eq!(map.lock().remap(&req(private, 0, P, true)), Err(RemapError::Invalid));
        t.clean();
    }
    t.done();
}

/// A wired range moves with its wirings; what it grows by is wired by the
/// caller and joins it; unwiring gives every page back.
#[test]
fn a_wired_range_moves_with_its_wirings() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        map.lock().map(Some(a + 4 * P), P, Prot::READ, Prot::ALL, Inherit::Copy, None, false).unwrap();
        wire(&map, a, a + 4 * P).unwrap();
        fill(&t, &map, &pmap, a, 4, 70);
        let limited = Remap { wired_limit: 5 * P, ..req(a, 4 * P, 6 * P, true) };
        assert_eq!(map.lock().remap(&limited), Err(RemapError::WiredLimit));
        let done = map.lock().remap(&req(a, 4 * P, 6 * P, true)).unwrap();
        let b = done.addr;
        assert_eq!(done.wire, Some(LockRange { start: b + 4 * P, end: b + 6 * P, on_fault: false }));
        wire(&map, b + 4 * P, b + 6 * P).unwrap();
        map.lock().join(b, b + 6 * P).unwrap();
        assert_eq!(map.lock().overlapping(b, b + 6 * P).count(), 1);
        assert_eq!(pmap.wired_count(), 6);
        for pa in frames(&pmap, b, 6) {
            assert!(t.env.pm.page_of(pa.unwrap()).unwrap().wired());
        }
        check(&t, &map, &pmap, b, 4, 70);
        map.lock().unwire(b, b + 6 * P).unwrap();
        assert_eq!(pmap.wired_count(), 0);
        t.clean();
    }
    t.done();
}

/// Linux's errors, and a want of page tables that changes nothing.
#[test]
fn errors_change_nothing() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 4 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        map.lock().map(Some(a + 4 * P), P, Prot::READ, Prot::ALL, Inherit::Copy, None, false).unwrap();
        fill(&t, &map, &pmap, a, 4, 90);
        let mut m = map.lock();
        assert_eq!(m.remap(&req(a + 5 * P, P, 2 * P, true)), Err(RemapError::Fault), "nothing mapped");
        assert_eq!(m.remap(&req(a, 6 * P, 8 * P, true)), Err(RemapError::Fault), "past the entry");
        let huge = !(P - 1);
        assert_eq!(m.remap(&req(a, huge - P, huge, true)), Err(RemapError::Fault), "an end that wraps");
        assert_eq!(m.remap(&req(a, huge, P, false)), Err(RemapError::Invalid), "a shrink whose end wraps");
        assert_eq!(m.remap(&req(a, 4 * P, 8 * P, false)), Err(RemapError::NoMemory), "no room and no leave to move");
        let overlap = Remap { fixed: Some(a + 2 * P), ..req(a, 4 * P, 4 * P, true) };
        assert_eq!(m.remap(&overlap), Err(RemapError::Invalid));
        let limited = Remap { size_limit: 6 * P, ..req(a, 4 * P, 8 * P, true) };
        assert_eq!(m.remap(&limited), Err(RemapError::NoMemory));
        t.machine.fail_enter.store(true, Ordering::Relaxed);
        assert_eq!(m.remap(&req(a, 4 * P, 8 * P, true)), Err(RemapError::NoMemory), "no page tables");
        t.machine.fail_enter.store(false, Ordering::Relaxed);
        drop(m);
        assert!(frames(&pmap, a, 4).iter().all(Option::is_some));
        check(&t, &map, &pmap, a, 4, 90);
        // MREMAP_FIXED over a mapping replaces it.
        let far = a + 64 * P;
        map.lock().map(Some(far), 8 * P, Prot::READ, Prot::ALL, Inherit::Copy, None, false).unwrap();
        let fixed = Remap { fixed: Some(far), ..req(a, 4 * P, 4 * P, true) };
        assert_eq!(map.lock().remap(&fixed).unwrap().addr, far);
        check(&t, &map, &pmap, far, 4, 90);
        assert_eq!(t.read(&map, &pmap, far + 4 * P).unwrap(), 0, "the rest of what was there stays");
        t.clean();
    }
    t.done();
}

fn free_pages(t: &T) -> u64 {
    t.env.pm.drain_cache();
    t.env.pm.free_count()
}

/// Unmapping part of private memory that one entry maps frees its pages
/// at once (FreeBSD's one-mapping objects), so that the range can grow
/// back over the same object; after a fork the child's copy keeps them.
#[test]
fn unmapping_part_of_private_memory_frees_its_pages() {
    let t = setup();
    {
        let (map, pmap) = t.map();
        let a = map.lock().map(None, 8 * P, Prot::RW, Prot::ALL, Inherit::Copy, None, false).unwrap();
        fill(&t, &map, &pmap, a, 8, 1);
        let free = free_pages(&t);
        map.lock().unmap(a + 2 * P, a + 6 * P).unwrap();
        assert!(free_pages(&t) >= free + 4, "the unmapped pages are free");
        check(&t, &map, &pmap, a, 2, 1);
        check(&t, &map, &pmap, a + 6 * P, 2, 7);
        // The head grows back in place over its own object: one entry.
        map.lock().remap(&req(a, 2 * P, 4 * P, false)).unwrap();
        assert_eq!(map.lock().overlapping(a, a + 4 * P).count(), 1);
        assert_eq!(t.read(&map, &pmap, a + 3 * P).unwrap(), 0);

        let child_pmap = t.machine.new_pmap();
        let child = MapLock::new(map.lock().fork(child_pmap.clone()).unwrap());
        let free = free_pages(&t);
        map.lock().unmap(a + 6 * P, a + 8 * P).unwrap();
        assert_eq!(free_pages(&t), free, "the child still maps them");
        check(&t, &child, &child_pmap, a + 6 * P, 2, 7);
        drop(child);
        t.clean();
    }
    t.done();
}

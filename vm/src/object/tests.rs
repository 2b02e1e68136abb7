//! Host tests of objects: page operations, shadow chains, collapse,
//! truncation, termination, and the seed-001 scenario.

extern crate std;

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::*;
use crate::failpoint::Action;
use crate::invariants;
use crate::page::{PageFlags, Queue};
use crate::phys::tests::{mib, phys_with_memory};
use crate::zone::tests::HOST_PAGES;

pub(crate) struct TestEnv {
    pub(crate) env: VmEnv,
    node_fail: &'static FailPoint,
    page_fail: &'static FailPoint,
}

pub(crate) fn test_env() -> TestEnv {
    let pm: &'static PhysMem = Box::leak(Box::new(phys_with_memory(&[mib(1, 3)])));
    let node_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("radix.node_alloc")));
    let page_fail: &'static FailPoint = Box::leak(Box::new(FailPoint::new("page.alloc")));
    let zone = Box::leak(Box::new(NodeZone::new(Radix::<&'static Page>::NODE_SIZE, &HOST_PAGES, node_fail)));
    TestEnv { env: VmEnv { pm, zone, page_alloc: page_fail, mappings: &crate::pmap::NO_MAPPINGS }, node_fail, page_fail }
}

fn clean(t: &TestEnv) {
    let v = invariants::check(t.env.pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
}

/// A valid page at `pindex` filled with `fill`, unbusied and on the
/// inactive queue: a resident page as a read would leave it.
pub(crate) fn make_resident(obj: &Arc<VmObject>, pindex: u64, fill: u8) -> &'static Page {
    let pm = obj.env().pm;
    let mut l = obj.lock();
    let p = l.alloc_page(pindex, AllocFlags::empty()).unwrap();
    // SAFETY: the page was just allocated; the host model maps it.
    unsafe { core::ptr::write_bytes(pm.page_addr(p).unwrap(), fill, crate::PAGE_SIZE) };
    p.set_all_valid();
    drop(l);
    pm.deactivate(p);
    p.xunbusy();
    p
}

fn byte(t: &TestEnv, p: &Page) -> u8 {
    // SAFETY: the page is allocated; the host model maps it.
    unsafe { *t.env.pm.page_addr(p).unwrap() }
}

#[test]
fn insert_lookup_remove() {
    let t = test_env();
    let start = t.env.pm.free_count();
    let obj = VmObject::new(ObjectKind::Anonymous, 100, t.env);
    let a = make_resident(&obj, 3, 1);
    let b = make_resident(&obj, 70, 2);
    {
        let l = obj.lock();
        assert!(core::ptr::eq(l.lookup(3).unwrap(), a));
        assert!(core::ptr::eq(l.lookup_ge(4).unwrap(), b));
        assert_eq!(l.resident(), 2);
        assert_eq!(l.pages_in(0, 100).len(), 2);
        l.check().unwrap();
    }
    clean(&t);
    a.xbusy();
    let mut l = obj.lock();
    assert!(l.remove(a));
    drop(l);
    a.invalidate();
    t.env.pm.free(a);
    obj.clone().deallocate();
    assert_eq!(t.env.pm.free_count(), start);
    assert_eq!(t.env.zone.in_use(), 0);
    clean(&t);
}

/// Rule 5: an invalid page freed from its object goes back to the
/// allocator at once, or, wired by someone else, at its last unwire (which
/// finds it in no object).
#[test]
fn free_invalid_follows_rule_5() {
    let t = test_env();
    let start = t.env.pm.free_count();
    let obj = VmObject::new(ObjectKind::Anonymous, 4, t.env);
    let a = obj.lock().alloc_page(0, AllocFlags::empty()).unwrap();
    obj.lock().free_invalid(a);
    assert!(a.flags().contains(PageFlags::FREE) && obj.lock().lookup(0).is_none());
    let b = obj.lock().alloc_page(1, AllocFlags::empty()).unwrap();
    b.wire();
    obj.lock().free_invalid(b);
    assert!(!b.flags().contains(PageFlags::FREE) && b.object().is_none() && !b.busied());
    assert!(obj.lock().lookup(1).is_none());
    clean(&t);
    t.env.pm.unwire(b, Queue::Active);
    assert!(b.flags().contains(PageFlags::FREE), "the last unwire frees a page in no object");
    obj.deallocate();
    t.env.pm.drain_cache();
    assert_eq!(t.env.pm.free_count(), start);
    clean(&t);
}

#[test]
#[should_panic(expected = "double insertion at index 5")]
fn double_insertion_is_caught() {
    let t = test_env();
    let obj = VmObject::new(ObjectKind::Anonymous, 10, t.env);
    let mut l = obj.lock();
    l.alloc_page(5, AllocFlags::empty()).unwrap();
    let p = t.env.pm.alloc(AllocFlags::empty()).unwrap();
    let _ = l.insert(p, 5);
}

/// Rule 15 on the other way in: a page moved (as a collapse or a
/// copy-on-write move does) onto an index that holds a page is caught
/// before anything changes in either object.
#[test]
#[should_panic(expected = "rename: double insertion at index 3")]
fn a_rename_onto_a_resident_index_is_caught() {
    let t = test_env();
    let from = VmObject::new(ObjectKind::Anonymous, 10, t.env);
    let to = VmObject::new(ObjectKind::Anonymous, 10, t.env);
    to.lock().alloc_page(3, AllocFlags::empty()).unwrap();
    let mut src = from.lock();
    let p = src.alloc_page(7, AllocFlags::empty()).unwrap();
    let _ = src.rename(p, &mut to.lock(), 3);
}

#[test]
fn failed_allocations_change_nothing() {
    let t = test_env();
    let start = t.env.pm.free_count();
    let obj = VmObject::new(ObjectKind::Anonymous, 1 << 30, t.env);
    t.page_fail.set(Action::Always);
    assert_eq!(obj.lock().alloc_page(1, AllocFlags::empty()).err(), Some(ObjectError::NoMemory));
    t.page_fail.set(Action::Off);
    make_resident(&obj, 0, 0);
    t.node_fail.set(Action::Always);
    // Index 1 << 20 diverges from 0 above the root: it needs a node.
    assert_eq!(obj.lock().alloc_page(1 << 20, AllocFlags::empty()).err(), Some(ObjectError::NoMemory));
    t.node_fail.set(Action::Off);
    assert_eq!(obj.lock().resident(), 1);
    clean(&t);
    obj.deallocate();
    assert_eq!(t.env.pm.free_count(), start);
}

/// Seed 001: a copy-on-write fault moves the backing object's page M into
/// the first object, where the fault holds a busy placeholder P at the same
/// index. Done as "remove P, rename M in, free P", the rename can fail for
/// want of a trie node: that must leave no page freed twice, no lock held and
/// nothing in limbo. Done with `replace` it cannot fail, even with every node
/// allocation failing.
#[test]
fn seed_001_cow_move_with_node_allocation_failing() {
    const X: u64 = 0x4_0000;
    let t = test_env();
    let pm = t.env.pm;
    let start = pm.free_count();
    let backing = VmObject::new(ObjectKind::Anonymous, 1 << 20, t.env);
    let m = make_resident(&backing, X, 0xAA);
    let first = VmObject::shadow(backing.clone(), 0, 1 << 20);
    make_resident(&first, 0, 0x22);

    // The fault: P is busy in the first object at X; M is busied to move it.
    let p = first.lock().alloc_page(X, AllocFlags::empty()).unwrap();
    m.xbusy();
    t.node_fail.set(Action::Always);
    {
        let mut f = first.lock();
        let mut b = backing.lock();
        assert!(f.remove(p));
        // Index X diverges from index 0 above the root: once P is out, putting
        // a page back at X needs a node, and none can be had.
        assert_eq!(b.rename(m, &mut f, X), Err(ObjectError::NoMemory));
    }
    // Unwind: P is freed once; M is still the backing object's page.
    pm.free(p);
    assert_eq!(m.object(), Some(backing.handle()));
    assert!(core::ptr::eq(backing.lock().lookup(X).unwrap(), m));
    m.xunbusy();
    assert!(!first.is_locked() && !backing.is_locked(), "a lock was left held");
    clean(&t);

    // The restarted fault, with replace: P2 is busy at X again (nodes work
    // for that), then every node allocation fails and the move still works.
    t.node_fail.set(Action::Off);
    let p2 = first.lock().alloc_page(X, AllocFlags::empty()).unwrap();
    t.node_fail.set(Action::Always);
    m.xbusy();
    assert!(backing.lock().remove(m), "removal never allocates");
    let old = first.lock().replace(m, p2);
    assert!(core::ptr::eq(old, p2));
    m.set_all_dirty();
    pm.free(old);
    m.xunbusy();
    pm.activate(m);
    t.node_fail.set(Action::Off);
    {
        let l = first.lock();
        assert!(core::ptr::eq(l.lookup(X).unwrap(), m));
        assert_eq!(byte(&t, m), 0xAA);
        l.check().unwrap();
    }
    clean(&t);

    first.deallocate();
    assert_eq!(pm.free_count(), start, "pages leaked");
    assert_eq!(t.env.zone.in_use(), 0, "trie nodes leaked");
    clean(&t);
}

#[test]
fn shadow_chain_lookup_follows_offsets() {
    let t = test_env();
    let start = t.env.pm.free_count();
    let bottom = VmObject::new(ObjectKind::Anonymous, 64, t.env);
    make_resident(&bottom, 10, 0xB0);
    make_resident(&bottom, 20, 0xB1);
    let middle = VmObject::shadow(bottom, 5, 32); // middle[i] = bottom[i + 5]
    make_resident(&middle, 15, 0x30); // shadows bottom[20]
    let top = VmObject::shadow(middle.clone(), 2, 16); // top[i] = middle[i + 2]
    middle.reference();
    let (_, p, depth) = lookup_chain(&top, 3).unwrap(); // middle 5 -> bottom 10
    assert_eq!((byte(&t, p), depth), (0xB0, 2));
    let (_, p, depth) = lookup_chain(&top, 13).unwrap(); // middle 15
    assert_eq!((byte(&t, p), depth), (0x30, 1));
    assert!(lookup_chain(&top, 0).is_none());
    top.deallocate();
    assert_eq!(middle.ref_count(), 1);
    middle.deallocate();
    assert_eq!(t.env.pm.free_count(), start);
    assert_eq!(t.env.zone.in_use(), 0);
}

/// A shadow chain as long as a process that forked a hundred thousand
/// times is torn down from its top without recursing (a kernel stack is
/// 64 KiB; this host thread's, the default 2 MiB, would overflow too).
#[test]
fn a_long_shadow_chain_is_torn_down_iteratively() {
    let t = test_env();
    let start = t.env.pm.free_count();
    let mut top = VmObject::new(ObjectKind::Anonymous, 4, t.env);
    make_resident(&top, 1, 0x11);
    for _ in 0..100_000 {
        top = VmObject::shadow(top, 0, 4);
    }
    make_resident(&top, 2, 0x22);
    top.deallocate();
    assert_eq!(t.env.pm.free_count(), start);
    assert_eq!(t.env.zone.in_use(), 0);
}

#[test]
fn collapse_moves_visible_pages_and_frees_the_rest() {
    let t = test_env();
    let start = t.env.pm.free_count();
    let bottom = VmObject::new(ObjectKind::Anonymous, 64, t.env);
    let base = VmObject::new(ObjectKind::Anonymous, 64, t.env);
    make_resident(&base, 1, 0xC0);
    let backing = VmObject::shadow(base, 0, 64);
    for (i, fill) in [(2, 1), (3, 2), (9, 3), (40, 4)] {
        make_resident(&backing, i, fill);
    }
    let shadow = VmObject::shadow(backing.clone(), 2, 8); // sees backing[2..10]
    make_resident(&shadow, 1, 0x55); // shadows backing[3]
    backing.reference(); // a second user (another map entry, say)
    assert_eq!(collapse(&shadow), Err(ObjectError::NotCollapsible), "the backing object is shared");
    backing.clone().deallocate();
    drop(backing);
    collapse(&shadow).unwrap();
    let l = shadow.lock();
    assert_eq!(l.resident(), 3);
    assert_eq!(byte(&t, l.lookup(0).unwrap()), 1); // backing[2]
    assert_eq!(byte(&t, l.lookup(1).unwrap()), 0x55); // its own
    assert_eq!(byte(&t, l.lookup(7).unwrap()), 3); // backing[9]
    let (next, off) = l.backing().unwrap();
    assert_eq!(off, 2);
    l.check().unwrap();
    drop(l);
    assert_eq!(next.lock().lookup(1).map(|p| byte(&t, p)), Some(0xC0));
    drop(next);
    // backing[3] (shadowed) and backing[40] (out of view) were freed.
    clean(&t);
    shadow.deallocate();
    bottom.deallocate();
    assert_eq!(t.env.pm.free_count(), start);
    assert_eq!(t.env.zone.in_use(), 0);
}

#[test]
fn collapse_stops_cleanly_when_nodes_run_out() {
    let t = test_env();
    let start = t.env.pm.free_count();
    let backing = VmObject::new(ObjectKind::Anonymous, 1 << 30, t.env);
    for i in [0u64, 1 << 12, 1 << 20, 1 << 28] {
        make_resident(&backing, i, 7);
    }
    let shadow = VmObject::shadow(backing, 0, 1 << 30);
    make_resident(&shadow, 5, 9);
    t.node_fail.set(Action::Always);
    assert_eq!(collapse(&shadow), Err(ObjectError::NoMemory));
    clean(&t);
    assert!(!shadow.is_locked());
    t.node_fail.set(Action::Off);
    collapse(&shadow).unwrap();
    assert_eq!(shadow.lock().resident(), 5);
    assert!(shadow.lock().backing().is_none());
    shadow.deallocate();
    assert_eq!(t.env.pm.free_count(), start);
    assert_eq!(t.env.zone.in_use(), 0);
}

#[test]
fn truncation_waits_for_busy_pages_and_spares_wired_ones() {
    let t = test_env();
    let pm = t.env.pm;
    let start = pm.free_count();
    let obj = VmObject::new(ObjectKind::Vnode, 64, t.env);
    let pages: Vec<&'static Page> = (0..8).map(|i| make_resident(&obj, i * 4, i as u8)).collect();
    let wired = pages[2];
    // Wired as a wiring fault does it, under the busy lock (rule 3).
    wired.xbusy();
    wired.wire();
    wired.xunbusy();
    let busy = pages[5];
    assert!(busy.try_sbusy());
    // Another thread holds the busy page for a while (I/O in flight).
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        busy.sunbusy();
    });
    obj.remove_range(4, 64);
    releaser.join().unwrap();
    let l = obj.lock();
    assert_eq!(l.resident(), 1, "only index 0 remains");
    drop(l);
    assert!(busy.flags().contains(PageFlags::FREE), "the busy page was freed once it was released");
    assert!(wired.object().is_none() && !wired.flags().contains(PageFlags::FREE), "the wired page left the object but lives");
    clean(&t);
    pm.unwire(wired, Queue::Active);
    assert!(wired.flags().contains(PageFlags::FREE), "its last unwire freed it (rule 5)");
    obj.deallocate();
    assert_eq!(pm.free_count(), start);
    clean(&t);
}

#[test]
fn debug_constants_name_every_flag() {
    crate::tests::assert_names_every_flag::<ObjectFlags>("ObjectFlags", &DEBUG_CONSTANTS);
}

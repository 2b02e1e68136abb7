//! The pageout daemon against the users of a page (rules 3, 4, 5): its
//! `try_xbusy` and wire check against a fault that wires the page, and a
//! last unwire against its lazy dequeue of wired pages. Whatever the
//! order, a wired page stays in its object, and at the end the page is
//! free or in its object on a queue: never in limbo.

extern crate std;

use loom::thread;

use super::{Kept, check_clean, env, wire_resident};
use crate::object::{ObjectKind, VmObject};
use crate::page::{Page, Queue};
use crate::pageout::scan_inactive;
use crate::phys::AllocFlags;
use crate::pmap::NO_MAPPINGS;
use crate::sync::model::{Break, DEFAULT_PREEMPTIONS, check_with};

/// A clean, valid page of a file's object at index 0, unbusied on the
/// inactive queue, wired `wired` times: a reclaim candidate.
fn candidate_page(obj: &VmObject, wired: u32) -> &'static Page {
    let mut l = obj.lock();
    let p = l.alloc_page(0, AllocFlags::empty()).unwrap();
    drop(l);
    p.set_all_valid();
    for _ in 0..wired {
        p.wire();
    }
    obj.env().pm.deactivate(p);
    p.xunbusy();
    p
}

/// The daemon's inactive pass against a thread that wires the page, uses
/// it, and unwires it.
fn pageout_against_wiring() {
    let env = env(2);
    let free = env.pm.free_count();
    let kept = Kept::new(VmObject::new(ObjectKind::Vnode, 4, env));
    let obj: &VmObject = &kept;
    candidate_page(obj, 0);
    let daemon = thread::spawn(move || {
        scan_inactive(env.pm, &NO_MAPPINGS, 1);
    });
    let mut in_object_while_wired = true;
    if let Some(p) = wire_resident(obj, 0) {
        // The wiring is used for a while (an I/O, an mlock): the daemon
        // may run meanwhile.
        thread::yield_now();
        in_object_while_wired = p.object() == Some(obj.handle());
        env.pm.unwire(p, Queue::Active);
    }
    daemon.join().unwrap();
    assert!(in_object_while_wired, "rule 3: the daemon took a wired page out of its object");
    let v = crate::invariants::check(env.pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
    kept.release().deallocate();
    env.pm.drain_cache();
    check_clean(env.pm, free);
}

/// The daemon's inactive pass against the last unwire of a page it finds
/// wired on its queue (wired while queued, as a fault wires).
fn pageout_against_unwire() {
    let env = env(2);
    let free = env.pm.free_count();
    let kept = Kept::new(VmObject::new(ObjectKind::Vnode, 4, env));
    let obj: &VmObject = &kept;
    let page = candidate_page(obj, 1);
    let daemon = thread::spawn(move || {
        scan_inactive(env.pm, &NO_MAPPINGS, 1);
    });
    env.pm.unwire(page, Queue::Active);
    daemon.join().unwrap();
    let v = crate::invariants::check(env.pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
    kept.release().deallocate();
    env.pm.drain_cache();
    check_clean(env.pm, free);
}

#[test]
fn pageout_trybusy_and_wire_check_against_a_wiring_fault() {
    check_with("pageout_trybusy_and_wire_check_against_a_wiring_fault", DEFAULT_PREEMPTIONS, &[], pageout_against_wiring);
}

#[test]
fn pageout_dequeue_of_wired_pages_against_the_last_unwire() {
    check_with("pageout_dequeue_of_wired_pages_against_the_last_unwire", DEFAULT_PREEMPTIONS, &[], pageout_against_unwire);
}

/// Broken: the daemon does not ask whether the page it busied is wired,
/// and reclaims a page a fault has wired.
#[test]
#[should_panic(expected = "rule 3: the daemon took a wired page out of its object")]
fn broken_pageout_ignores_wiring() {
    check_with("broken_pageout_ignores_wiring", DEFAULT_PREEMPTIONS, &[Break::PageoutIgnoresWiring], pageout_against_wiring);
}

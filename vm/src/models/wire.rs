//! Wiring against freeing (rules 3 and 5): a page of an object, wired by
//! one thread, is found invalid by another (a truncation, a failed read),
//! which takes it out of its object and frees it unless it is wired. The
//! last unwire of a page in no object frees it. Whatever the order,
//! exactly one of the two frees the page, and it is on no queue then.

use loom::thread;

use super::{check_clean, env, wire_resident};
use crate::object::{ObjectKind, VmObject};
use crate::page::{Page, PageFlags, Queue};
use crate::phys::AllocFlags;
use crate::phys::PhysMem;
use crate::sync::model::check;

/// An invalid page at index 0 of `obj`, wired once by its busy holder
/// (rule 3), as the fault path wires it, and unbusied.
fn wired_page(obj: &VmObject) -> &'static Page {
    let mut l = obj.lock();
    let p = l.alloc_page(0, AllocFlags::empty()).unwrap();
    p.wire();
    p.xunbusy();
    p
}

/// The end of every execution: the page was freed, once, and nothing else
/// is out of place.
fn assert_freed_once(pm: &PhysMem, page: &Page) {
    let v = crate::invariants::check(pm);
    assert!(
        page.flags().contains(PageFlags::FREE) && v.is_empty(),
        "rule 5 broken: the page is not freed exactly once (flags {:?}, wired {}, object {:?}, queue {:?}; {v:?})",
        page.flags(),
        page.wire_count(),
        page.object(),
        page.queue()
    );
}

/// One thread drops the last wiring of an invalid page while another
/// removes it from its object under the exclusive busy lock
/// (`Locked::free_invalid`).
fn unwire_against_free_invalid() {
    let env = env(2);
    let pm = env.pm;
    let free = pm.free_count();
    let obj = VmObject::new(ObjectKind::Anonymous, 4, env);
    let page = wired_page(&obj);
    let unwirer = thread::spawn(move || pm.unwire(page, Queue::Active));
    page.xbusy();
    obj.lock().free_invalid(page);
    unwirer.join().unwrap();
    assert_freed_once(pm, page);
    obj.deallocate();
    check_clean(pm, free);
}

/// Three threads: the first wiring's holder unwires, a fault wires the
/// page again (under its busy lock, rule 3) and unwires it after a while,
/// and a truncation takes it out of its object. Whichever wiring goes
/// last frees the page, or the truncation does, once.
fn two_wirings_against_free_invalid() {
    let env = env(2);
    let pm = env.pm;
    let free = pm.free_count();
    let obj = VmObject::new(ObjectKind::Anonymous, 4, env);
    let page = wired_page(&obj);
    let unwirer = thread::spawn(move || pm.unwire(page, Queue::Active));
    let fault = {
        let obj = obj.clone();
        thread::spawn(move || {
            if let Some(p) = wire_resident(&obj, 0) {
                thread::yield_now();
                pm.unwire(p, Queue::Active);
            }
        })
    };
    page.xbusy();
    obj.lock().free_invalid(page);
    unwirer.join().unwrap();
    fault.join().unwrap();
    assert_freed_once(pm, page);
    obj.deallocate();
    check_clean(pm, free);
}

#[test]
fn wire_two_wirings_against_free_invalid() {
    check("wire_two_wirings_against_free_invalid", two_wirings_against_free_invalid);
}

#[test]
fn wire_unwire_against_free_invalid() {
    check("wire_unwire_against_free_invalid", unwire_against_free_invalid);
}

/// Broken: the owner and the count on two words, the remover and the
/// unwirer each reading the other's after changing its own (the code
/// before the wire word had the object bit): each can miss the other's
/// change and leave the page to it, in no object, on a queue, for ever.
#[test]
#[should_panic(expected = "rule 5 broken")]
fn broken_wire_owner_and_count_apart() {
    crate::sync::model::check_with(
        "broken_wire_owner_and_count_apart",
        crate::sync::model::DEFAULT_PREEMPTIONS,
        &[crate::sync::model::Break::OwnerAndWiringApart],
        unwire_against_free_invalid,
    );
}

/// Broken: as above, with a second wiring in the race.
#[test]
#[should_panic(expected = "rule 5 broken")]
fn broken_wire_two_wirings_owner_and_count_apart() {
    crate::sync::model::check_with(
        "broken_wire_two_wirings_owner_and_count_apart",
        crate::sync::model::DEFAULT_PREEMPTIONS,
        &[crate::sync::model::Break::OwnerAndWiringApart],
        two_wirings_against_free_invalid,
    );
}

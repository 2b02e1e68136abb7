//! Copy-on-write's `replace` against a lookup of the same index (rule 7):
//! one thread puts a new page in the old one's slot (the old exclusively
//! busy, the new in no object) and frees the old; another looks the index
//! up, finds the old page busy and sleeps on it. The free wakes the
//! sleeper (FreeBSD's `vm_page_busy_free`), which looks again and finds
//! the new page, valid.

extern crate std;

use loom::thread;

use super::{Kept, check_clean, env};
use crate::object::{ObjectKind, VmObject};
use crate::page::{Page, busy_wait};
use crate::phys::AllocFlags;
use crate::sync::model::{Break, DEFAULT_PREEMPTIONS, check_with};

/// The page at `pindex`, exclusively busy (sleeping on it while another
/// holds it, and looking again after each wait), or `None`.
fn busy_lookup(obj: &VmObject, pindex: u64) -> Option<&'static Page> {
    loop {
        let l = obj.lock();
        let p = l.lookup(pindex)?;
        if p.try_xbusy() {
            return Some(p);
        }
        drop(l);
        busy_wait(p);
    }
}

fn replace_against_lookup() {
    let env = env(4);
    let pm = env.pm;
    let free = pm.free_count();
    let kept = Kept::new(VmObject::new(ObjectKind::Anonymous, 4, env));
    let obj = kept.clone();
    let old = {
        let mut l = obj.lock();
        let p = l.alloc_page(0, AllocFlags::empty()).unwrap();
        p.set_all_valid();
        drop(l);
        pm.deactivate(p);
        p.xunbusy();
        p
    };
    let cow = thread::spawn(move || {
        let old = busy_lookup(&obj, 0).expect("the old page is there until replaced");
        let new = pm.alloc(AllocFlags::empty()).unwrap();
        new.set_all_valid();
        let gone = obj.lock().replace(new, old);
        pm.free(gone);
        new.set_all_dirty();
        pm.activate(new);
        new.xunbusy();
    });
    let found = busy_lookup(&kept, 0).expect("index 0 is never empty");
    let valid = found.all_valid();
    found.xunbusy();
    cow.join().unwrap();
    assert!(valid, "the lookup found an invalid page");
    let now = kept.lock().lookup(0).map(|p| p as *const Page);
    assert!(now.is_some_and(|p| !core::ptr::eq(p, old)), "the old page is still in its slot");
    let v = crate::invariants::check(pm);
    assert!(v.is_empty(), "invariant violations: {v:?}");
    kept.release().deallocate();
    pm.drain_cache();
    check_clean(pm, free);
}

#[test]
fn cow_replace_against_a_lookup() {
    check_with("cow_replace_against_a_lookup", DEFAULT_PREEMPTIONS, &[], replace_against_lookup);
}

/// Broken: freeing a busy page does not wake its sleepers; the lookup that
/// slept on the old page sleeps on a free page for ever.
#[test]
#[should_panic(expected = "deadlock")]
fn broken_cow_free_without_wakeup() {
    check_with("broken_cow_free_without_wakeup", DEFAULT_PREEMPTIONS, &[Break::FreeWithoutWakeup], replace_against_lookup);
}

//! The page allocator's per-CPU order-0 caches: threads on two CPUs
//! allocating and freeing while a third drains every cache to the free
//! lists, one thread moving to the other's CPU halfway (a migration
//! between two allocations), an allocation that finds its own cache and
//! the lists empty and takes back the pages another CPU's cache holds, and
//! the refills that follow. No page is handed out twice, none is lost, and
//! the free lists, the caches and the pages' free flags agree at the end
//! (the invariant checker's free-list checks).

extern crate std;

use alloc::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use loom::thread;

use super::{check_clean, env};
use crate::page::Page;
use crate::phys::{AllocFlags, PhysMem};
use crate::sync::model::{Break, DEFAULT_PREEMPTIONS, check_with, set_cpu};

/// Pages handed out and not yet freed, across the model's threads (a host
/// lock: held for no loom operation, so never across a switch).
type Held = Arc<Mutex<BTreeSet<u64>>>;

fn take(pm: &PhysMem, held: &Held) -> &'static Page {
    let p = pm.alloc(AllocFlags::NOBUSY).expect("the model has pages enough");
    assert!(held.lock().unwrap().insert(p.phys()), "page {:#x} handed out twice", p.phys());
    p
}

fn give(pm: &PhysMem, held: &Held, p: &'static Page) {
    held.lock().unwrap().remove(&p.phys());
    pm.free(p);
}

fn alloc_free_and_drain() {
    let env = env(4);
    let pm = env.pm;
    let free = pm.free_count();
    let held: Held = Arc::default();
    let one = {
        let held = held.clone();
        thread::spawn(move || {
            set_cpu(1);
            let p = take(pm, &held);
            give(pm, &held, p);
        })
    };
    let two = {
        let held = held.clone();
        thread::spawn(move || {
            set_cpu(2);
            let p = take(pm, &held);
            // Moved to the first thread's CPU: its cache is shared now.
            set_cpu(1);
            let q = take(pm, &held);
            give(pm, &held, p);
            give(pm, &held, q);
        })
    };
    pm.drain_cache();
    one.join().unwrap();
    two.join().unwrap();
    check_clean(pm, free);
}

#[test]
fn alloc_cache_refill_and_drain_against_frees() {
    check_with("alloc_cache_refill_and_drain_against_frees", DEFAULT_PREEMPTIONS, &[], alloc_free_and_drain);
}

/// Broken: a freed page is put in the cache before it is made free, and
/// another thread can take it from there while it is still in use.
#[test]
#[should_panic(expected = "allocated but not free")]
fn broken_alloc_cached_before_free() {
    check_with("broken_alloc_cached_before_free", DEFAULT_PREEMPTIONS, &[Break::CachedBeforeFree], alloc_free_and_drain);
}

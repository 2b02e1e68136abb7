//! The per-CPU batches of queue insertions (`queue::batch`): a page put on
//! the active queue through CPU 1's batch is freed on CPU 2 before that
//! batch is flushed, allocated again and queued through CPU 2's batch,
//! while the pageout daemon on CPU 0 flushes every batch. The page ends on
//! the active queue exactly once, never while free, and the lists, their
//! counts and the pages' queue fields agree (the invariant checker).

extern crate std;

use loom::thread;

use super::{check_clean, env};
use crate::page::{Page, Queue};
use crate::phys::{AllocFlags, PhysMem};
use crate::sync::model::{Break, DEFAULT_PREEMPTIONS, check_with, set_cpu};

/// A page of a made-up object at `pindex`, as a fault leaves it before it
/// queues it: exclusively busy, owned.
fn owned(pm: &PhysMem, pindex: u64) -> &'static Page {
    let p = pm.alloc(AllocFlags::empty()).expect("the model has pages enough");
    p.set_owner(0x5000, pindex);
    p
}

fn freed_while_pending() {
    let env = env(2);
    let pm = env.pm;
    let free = pm.free_count();
    set_cpu(1);
    let p = owned(pm, 0);
    pm.activate(p);
    p.xunbusy();
    let daemon = thread::spawn(move || {
        set_cpu(0);
        pm.flush_queue_batches();
    });
    let other = thread::spawn(move || {
        set_cpu(2);
        // Truncation: the page leaves its object and is freed.
        p.xbusy();
        let _ = p.clear_owner();
        pm.free(p);
        // A new fault on this CPU takes a page (perhaps the same one) and
        // queues it through this CPU's batch.
        let q = owned(pm, 1);
        pm.activate(q);
        q.xunbusy();
        q
    });
    daemon.join().unwrap();
    let q = other.join().unwrap();
    assert_eq!(pm.queue_count(Queue::Active), 1, "the live page is on the active queue, once");
    assert_eq!(q.queue(), Queue::Active);
    q.xbusy();
    let _ = q.clear_owner();
    pm.free(q);
    check_clean(pm, free);
}

#[test]
fn batch_flush_against_a_free_and_a_new_queueing() {
    check_with("batch_flush_against_a_free_and_a_new_queueing", DEFAULT_PREEMPTIONS, &[], freed_while_pending);
}

/// Broken: the flush links whatever its batch names, and the freed page
/// goes on the active queue.
#[test]
#[should_panic(expected = "a batch linked a page that was not waiting in it")]
fn broken_batch_links_without_the_mark() {
    check_with("broken_batch_links_without_the_mark", DEFAULT_PREEMPTIONS, &[Break::BatchIgnoresMark], freed_while_pending);
}

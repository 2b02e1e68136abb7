//! The busy lock with sleepers: exclusive and shared holders, upgrade and
//! downgrade, waiters that sleep on the page and the releases that wake
//! them. The page's contents are a loom cell: loom reports a write that is
//! not alone (two exclusive holders, a writer beside a reader) as a
//! causality violation, and a sleeper nobody wakes as a deadlock.

extern crate std;

use alloc::vec::Vec;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;
use std::sync::Arc;

use super::pages;
use crate::sync::model::{Break, check, check_with};

/// A page and what its busy lock guards.
struct Guarded {
    pages: Arc<Vec<crate::page::Page>>,
    contents: UnsafeCell<u32>,
    /// Exclusive holders at this moment: never more than one.
    inside: AtomicU32,
}

// SAFETY: `contents` is reached only under the page's busy lock, which is
// what the model checks (loom's cell reports any access that is not).
unsafe impl Sync for Guarded {}

impl Guarded {
    fn new() -> Arc<Guarded> {
        Arc::new(Guarded { pages: pages(1), contents: UnsafeCell::new(0), inside: AtomicU32::new(0) })
    }

    fn page(&self) -> &crate::page::Page {
        &self.pages[0]
    }

    /// Adds one to the contents: exclusive busy held.
    fn write(&self) {
        assert!(self.page().xbusied());
        assert_eq!(self.inside.fetch_add(1, Ordering::Relaxed), 0, "two exclusive busy holders");
        // SAFETY: the exclusive busy lock is held (loom checks it).
        self.contents.with_mut(|c| unsafe { *c += 1 });
        self.inside.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reads the contents: some busy lock held.
    fn read(&self) -> u32 {
        assert!(self.page().busied());
        // SAFETY: a busy lock is held (loom checks it).
        self.contents.with(|c| unsafe { *c })
    }

    /// The end of every execution: nobody holds the page, nobody waits.
    fn check_idle(&self) {
        assert_eq!(self.page().busy_word(), 0, "the page is left busy, or with its waiters bit set");
    }
}

/// Three threads take the page exclusively busy in turn: the two that
/// find it taken sleep on it, and every release wakes them. At the end the
/// three writes are in, the page is unbusied, and nobody is left asleep
/// (loom would report the sleeper as a deadlock).
fn exclusive_with_sleepers() {
    let g = Guarded::new();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let g = g.clone();
            thread::spawn(move || {
                g.page().xbusy();
                g.write();
                g.page().xunbusy();
            })
        })
        .collect();
    g.page().xbusy();
    g.write();
    g.page().xunbusy();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(g.read_unlocked(), 3);
    g.check_idle();
}

impl Guarded {
    /// The contents once every thread is joined.
    fn read_unlocked(&self) -> u32 {
        // SAFETY: every other thread has been joined.
        self.contents.with(|c| unsafe { *c })
    }
}

/// Shared holders beside an exclusive one that downgrades, and a sharer
/// that upgrades when it is alone: never a writer beside a reader, and
/// whoever waits is woken.
fn shared_upgrade_downgrade() {
    let g = Guarded::new();
    let upgrader = {
        let g = g.clone();
        thread::spawn(move || {
            g.page().sbusy();
            g.read();
            if g.page().try_upgrade() {
                g.write();
                g.page().xunbusy();
                1
            } else {
                g.page().sunbusy();
                0
            }
        })
    };
    let downgrader = {
        let g = g.clone();
        thread::spawn(move || {
            g.page().xbusy();
            g.write();
            g.page().xbusy_downgrade();
            let seen = g.read();
            g.page().sunbusy();
            seen
        })
    };
    g.page().sbusy();
    g.read();
    g.page().sunbusy();
    let upgraded = upgrader.join().unwrap();
    assert!(downgrader.join().unwrap() >= 1, "the downgrade kept the writer's data");
    assert_eq!(g.read_unlocked(), 1 + upgraded);
    g.check_idle();
}

#[test]
fn busy_exclusive_with_sleepers() {
    check("busy_exclusive_with_sleepers", exclusive_with_sleepers);
}

#[test]
fn busy_shared_upgrade_downgrade() {
    check("busy_shared_upgrade_downgrade", shared_upgrade_downgrade);
}

/// Broken: the release forgets the wakeup. A waiter that slept is never
/// woken.
#[test]
#[should_panic(expected = "deadlock")]
fn broken_busy_release_without_wakeup() {
    check_with("broken_busy_release_without_wakeup", 3, &[Break::ReleaseWithoutWakeup], exclusive_with_sleepers);
}

/// Broken: the waiter sleeps without setting the waiters bit, so the
/// releaser does not know to wake it.
#[test]
#[should_panic(expected = "deadlock")]
fn broken_busy_sleep_without_waiters_bit() {
    check_with("broken_busy_sleep_without_waiters_bit", 3, &[Break::SleepWithoutWaitersBit], exclusive_with_sleepers);
}

/// Broken: the downgrade's wakeup is lost too (the same release path),
/// seen by the shared model.
#[test]
#[should_panic(expected = "deadlock")]
fn broken_busy_downgrade_without_wakeup() {
    check_with("broken_busy_downgrade_without_wakeup", 3, &[Break::ReleaseWithoutWakeup], shared_upgrade_downgrade);
}

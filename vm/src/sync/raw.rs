//! The lock under the VM's [`Mutex`](super::Mutex): a test-and-set lock
//! that queues the waiters it has kept waiting too long.
//!
//! **Why not plain test-and-set.** Whoever tries first after an unlock has
//! the lock, and under load some CPU always tries first: a holder that lets
//! go and takes the lock again a moment later (a thread unmapping its
//! siblings' stacks one after another), or the CPUs that were not busy
//! answering the holder's shootdown when it let go. A CPU can lose that
//! race for as long as the load lasts: on a map lock with hundreds of
//! threads ending at once, one lost it for over a second.
//!
//! **Why not tickets.** A ticket lock serves its waiters in order, so each
//! waits for the holders ahead of it and no more. But it hands the lock to
//! the next waiter whether that one runs or not: under emulation, with more
//! virtual CPUs than host cores, the next in line is often a virtual CPU
//! the host has descheduled, and the lock stays idle until it runs again
//! (a program of many threads ran 2.5 times slower at four virtual CPUs on
//! two cores). Linux pays this too, and gives guests a paravirtual lock.
//!
//! **So: test-and-set, and a queue for the patient.** A waiter spins as on
//! a plain lock for [`PATIENCE`] turns. Past that it draws a ticket and
//! waits for its turn; meanwhile nobody outside the queue takes the lock
//! (a `try_lock` fails, a new waiter waits too), so the head of the queue
//! has it at the next unlock. Having it, the head leaves the queue. While
//! nobody has waited long the lock costs what test-and-set costs (one more
//! load, on the same line); once someone has, waits are bounded by the
//! holds ahead, which is what the spin limit
//! ([`super::SpinHooks::spinning`]) is measured against.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Turns a waiter spins as on a plain lock before it queues: milliseconds
/// under emulation, far above any common wait (even one behind a
/// shootdown's round trips), so the queue, and its handing of the lock to
/// a waiter that may not be running, is for starvation alone; far below the
/// spin limit's second.
pub(super) const PATIENCE: u64 = 1 << 20;

pub(super) struct RawLock<T: ?Sized> {
    /// Held. (A: set by a compare-exchange that acquires, cleared by a
    /// store that releases; the pair orders one holder's use of `data`
    /// before the next's.)
    locked: AtomicBool,
    /// The queue of waiters that ran out of patience: the next ticket to
    /// draw, and the ticket whose turn it is. Equal: nobody queued. (A:
    /// `next` moved by fetch-add; `serving` only by the head of the queue,
    /// once it holds the lock. Relaxed throughout: the lock's data is
    /// ordered by `locked`; the queue only says who may try.)
    next: AtomicU32,
    serving: AtomicU32,
    /// (this lock)
    data: UnsafeCell<T>,
}

// SAFETY: `locked` hands out one guard at a time, so `T` is reached from
// one thread at a time.
unsafe impl<T: ?Sized + Send> Sync for RawLock<T> {}
// SAFETY: moving the lock moves the `T` it owns.
unsafe impl<T: ?Sized + Send> Send for RawLock<T> {}

/// The held lock: lets it go when dropped.
pub(super) struct RawGuard<'a, T: ?Sized> {
    lock: &'a RawLock<T>,
}

impl<T> RawLock<T> {
    pub(super) const fn new(value: T) -> RawLock<T> {
        RawLock {
            locked: AtomicBool::new(false),
            next: AtomicU32::new(0),
            serving: AtomicU32::new(0),
            data: UnsafeCell::new(value),
        }
    }

    pub(super) fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> RawLock<T> {
    /// Whether someone waits in the queue.
    #[inline(always)]
    fn queued(&self) -> bool {
        self.next.load(Ordering::Relaxed) != self.serving.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn grab(&self) -> bool {
        // Acquire pairs with the Release store in the guard's drop: the last
        // holder's writes to the data are seen.
        self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Takes the lock if it is free and nobody has queued for it.
    #[inline(always)]
    pub(super) fn try_lock(&self) -> Option<RawGuard<'_, T>> {
        // (`then`, not `then_some`: a guard made and dropped unlocks.)
        (!self.queued() && self.grab()).then(|| RawGuard { lock: self })
    }

    /// Takes the lock, queueing after `patience` turns ([`PATIENCE`] but in
    /// tests), and calling `wait` at each turn of its spin (with the count
    /// of turns so far, for the spin limit's check and the contention
    /// counters).
    pub(super) fn lock_with(&self, patience: u64, mut wait: impl FnMut(u64)) -> RawGuard<'_, T> {
        let mut turns = 0u64;
        // As a plain lock, while patience lasts.
        while turns < patience {
            if !self.locked.load(Ordering::Relaxed) && !self.queued() && self.grab() {
                return RawGuard { lock: self };
            }
            turns += 1;
            wait(turns);
        }
        // Queued: wait for the turn, then for the lock, which nobody outside
        // the queue takes meanwhile (but one that saw the queue empty just
        // before may still get in once).
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        loop {
            if self.serving.load(Ordering::Relaxed) == ticket && !self.locked.load(Ordering::Relaxed) && self.grab() {
                break;
            }
            turns += 1;
            wait(turns);
        }
        // Out of the queue: the next in it may try. Only the head moves
        // `serving`, so a load and a store do.
        self.serving.store(ticket.wrapping_add(1), Ordering::Relaxed);
        RawGuard { lock: self }
    }

    /// Whether someone holds it (a snapshot: for reports and waits).
    pub(super) fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }

    pub(super) fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: ?Sized> Drop for RawGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        // Release pairs with the Acquire in `grab`.
        self.lock.locked.store(false, Ordering::Release);
    }
}

impl<T: ?Sized> Deref for RawGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard is the holder's, and the only way to the data.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RawGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; the guard is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::RawLock;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::vec::Vec;

    /// A patience short enough for Miri, which runs a turn in microseconds.
    const PATIENCE: u64 = 16;

    #[test]
    fn try_lock_fails_while_held() {
        let l = RawLock::new(0u32);
        let g = l.try_lock().expect("a free lock is taken");
        assert!(l.is_locked());
        assert!(l.try_lock().is_none());
        assert!(l.is_locked(), "a failed try let the lock go");
        drop(g);
        assert!(!l.is_locked());
        assert!(l.try_lock().is_some());
    }

    /// A waiter past its patience is queued: from then on the lock is
    /// its at the next unlock, not a `try_lock`'s, and it leaves the queue
    /// empty behind it.
    #[test]
    fn a_queued_waiter_has_the_lock_next() {
        let l = Arc::new(RawLock::new(0u32));
        let held = l.try_lock().unwrap();
        let queued = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (l, queued) = (l.clone(), queued.clone());
            std::thread::spawn(move || {
                let mut g = l.lock_with(PATIENCE, |turns| {
                    if turns > PATIENCE {
                        queued.store(true, Ordering::SeqCst);
                    }
                    std::thread::yield_now();
                });
                *g += 1;
            })
        };
        while !queued.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert!(l.queued());
        drop(held);
        // Tries fail until the queued waiter has been through.
        loop {
            if let Some(g) = l.try_lock() {
                assert_eq!(*g, 1, "a try got in ahead of the queued waiter");
                break;
            }
            std::thread::yield_now();
        }
        waiter.join().unwrap();
        assert!(!l.queued());
    }

    /// Counts from several threads add up, with some waits long enough to
    /// queue (a holder that yields a while) and tries mixed in.
    #[test]
    fn counts_from_several_threads_add_up() {
        const THREADS: usize = 4;
        const ROUNDS: u64 = if cfg!(miri) { 100 } else { 2_000 };
        let l = Arc::new(RawLock::new(0u64));
        let queued = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = (0..THREADS)
            .map(|i| {
                let (l, queued) = (l.clone(), queued.clone());
                std::thread::spawn(move || {
                    for n in 0..ROUNDS {
                        let mut g = if (n + i as u64).is_multiple_of(3) {
                            loop {
                                if let Some(g) = l.try_lock() {
                                    break g;
                                }
                                std::thread::yield_now();
                            }
                        } else {
                            let mut counted = false;
                            l.lock_with(PATIENCE, |turns| {
                                if turns > PATIENCE && !counted {
                                    counted = true;
                                    queued.fetch_add(1, Ordering::Relaxed);
                                }
                                core::hint::spin_loop();
                            })
                        };
                        *g += 1;
                        if n.is_multiple_of(25) {
                            for _ in 0..4 * PATIENCE {
                                std::thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*l.try_lock().expect("free, nobody queued, at the end"), THREADS as u64 * ROUNDS);
        assert!(queued.load(Ordering::Relaxed) > 0, "no wait was long enough to queue: the test tests less");
    }

    #[test]
    fn tickets_wrap_around() {
        let l = RawLock::new(());
        l.next.store(u32::MAX, Ordering::Relaxed);
        l.serving.store(u32::MAX, Ordering::Relaxed);
        let held = l.try_lock().unwrap();
        std::thread::scope(|s| {
            let w = s.spawn(|| drop(l.lock_with(PATIENCE, |_| std::thread::yield_now())));
            while !l.queued() {
                std::thread::yield_now();
            }
            drop(held);
            w.join().unwrap();
        });
        assert_eq!(l.serving.load(Ordering::Relaxed), 0);
        assert!(!l.queued() && !l.is_locked());
    }
}

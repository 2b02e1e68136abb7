//! A sleeping lock: a mutex whose waiters sleep instead of spinning (BSD's
//! `sx` and `lockmgr` in miniature), for what is held across I/O: the
//! filesystem and its vnodes, an open file's offset. Built on the VM's
//! sleep and wakeup hooks ([`crate::sleep_on`], [`crate::wakeup`]): in the
//! kernel its waiters sleep in the scheduler; on the host, with no hook,
//! they spin, which std threads survive.
//!
//! It may not be taken in an interrupt handler, nor while a spin lock is
//! held (the lock order puts every sleeping lock below every spin lock,
//! [`crate::witness::FIRST_SPIN_RANK`], and debug builds check it). A
//! thread may sleep holding one.
//!
//! `try_lock` is what the page-fault path uses on a vnode (rule 8): a fault
//! holds busy pages, so it must not wait for a lock whose holder may be
//! waiting for those pages; it gives up and retries instead.

use super::atomic::{AtomicBool, Ordering};
use super::model_const_fn;
use crate::witness::{self, LockClass};
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::panic::Location;

pub struct SleepLock<T> {
    /// Its place in the lock order (None: not checked). (C)
    class: Option<&'static LockClass>,
    /// Held. (A: taken by a compare-exchange that acquires, let go by a
    /// store that releases; the pair orders one holder's use of `data`
    /// before the next's.)
    locked: AtomicBool,
    /// (this lock)
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out one guard at a time (the compare-exchange in
// `try_lock`), so `T` is reached from one thread at a time.
unsafe impl<T: Send> Sync for SleepLock<T> {}
// SAFETY: moving the lock moves the `T` it owns.
unsafe impl<T: Send> Send for SleepLock<T> {}

/// What [`SleepLock::lock`] returns: unlocks, and wakes the waiters, when
/// dropped.
pub struct SleepGuard<'a, T> {
    lock: &'a SleepLock<T>,
}

impl<T> SleepLock<T> {
    model_const_fn! {
        /// A lock the lock-order check does not know.
        pub fn new(data: T) -> Self {
            SleepLock { class: None, locked: AtomicBool::new(false), data: UnsafeCell::new(data) }
        }
    }

    model_const_fn! {
        /// A lock of `class` (a sleeping class of [`crate::witness::order`]).
        pub fn ranked(data: T, class: &'static LockClass) -> Self {
            assert!(class.sleeps, "a sleeping lock needs a sleeping lock class");
            SleepLock { class: Some(class), locked: AtomicBool::new(false), data: UnsafeCell::new(data) }
        }
    }

    /// The lock's address: its sleep channel, and its name to the witness.
    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    /// Takes the lock if it is free (never checked against the lock
    /// order: a try cannot deadlock).
    #[track_caller]
    pub fn try_lock(&self) -> Option<SleepGuard<'_, T>> {
        let site = Location::caller();
        self.try_take(site)
    }

    fn try_take(&self, site: &'static Location<'static>) -> Option<SleepGuard<'_, T>> {
        if self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return None;
        }
        witness::took(self.class, self.addr(), site);
        Some(SleepGuard { lock: self })
    }

    /// Takes the lock, sleeping while another thread holds it.
    #[track_caller]
    pub fn lock(&self) -> SleepGuard<'_, T> {
        let site = Location::caller();
        witness::will_take(self.class, self.addr(), site);
        loop {
            if let Some(g) = self.try_take(site) {
                return g;
            }
            // The kernel's sleep checks the condition under the
            // scheduler's lock, which the holder's wakeup takes too: no
            // wakeup is missed. (Relaxed: the load only decides whether to
            // sleep; the compare-exchange above is what acquires.)
            crate::sleep_on(self.addr(), &|| self.locked.load(Ordering::Relaxed));
        }
    }

    /// Whether some thread holds the lock (a hint: it may change at once).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

impl<T> Deref for SleepGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard is the lock's only holder.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SleepGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, exclusively.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SleepGuard<'_, T> {
    fn drop(&mut self) {
        #[cfg(loom)]
        if super::model::unwinding() {
            return;
        }
        witness::released(self.lock.class, self.lock.addr());
        // Release: pairs with the Acquire of the next holder's
        // compare-exchange.
        self.lock.locked.store(false, Ordering::Release);
        crate::wakeup(self.lock.addr());
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::sync::atomic::AtomicU64;

    use super::*;
    use crate::sync::Mutex;
    use crate::witness::order;

    /// Threads that wait for the lock each get it in turn, one at a time;
    /// `try_lock` fails while it is held.
    #[test]
    fn waiters_take_turns() {
        let lock = Arc::new(SleepLock::new(0u64));
        let inside = Arc::new(AtomicU64::new(0));
        let g = lock.lock();
        assert!(lock.try_lock().is_none());
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (l, inside) = (lock.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let mut g = l.lock();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                        *g += 1;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        std::thread::yield_now();
        drop(g);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 3000);
    }

    /// Waiting for a sleeping lock while a spin lock is held breaks the
    /// order (the holder could be asleep for I/O, the spinners stuck).
    #[test]
    #[should_panic(expected = "lock order reversal: vnode (rank 50) taken at")]
    fn a_sleeping_lock_under_a_spin_lock_is_caught() {
        crate::witness::tests::check_host_threads();
        let spin = Mutex::ranked((), &order::OBJECT);
        let vnode = SleepLock::ranked((), &order::VNODE);
        let _o = spin.lock();
        let _v = vnode.lock();
    }

    /// A thread holding a sleeping lock may take spin locks, and may sleep.
    #[test]
    fn spin_locks_under_a_sleeping_lock_pass() {
        crate::witness::tests::check_host_threads();
        let vnode = SleepLock::ranked((), &order::VNODE);
        let spin = Mutex::ranked((), &order::OBJECT);
        let v = vnode.lock();
        drop(spin.lock());
        crate::witness::may_sleep(Location::caller());
        drop(v);
        assert_eq!(crate::witness::held_count(), Some(0));
    }
}

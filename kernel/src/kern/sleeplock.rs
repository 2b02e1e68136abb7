//! A sleeping lock: a mutex whose waiters sleep (BSD's `sx` / `lockmgr` in
//! miniature) instead of spinning, for what is held across I/O: the
//! filesystem, a vnode. It may not be taken in an interrupt handler.
//!
//! `try_lock` is what the page-fault path uses on a vnode (rule 8): a fault
//! holds busy pages, so it must not wait for a lock whose holder may be
//! waiting for those pages; it gives up and retries instead.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

pub struct SleepLock<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out one guard at a time (the compare-exchange in
// try_lock), so `T` is reached from one thread at a time.
unsafe impl<T: Send> Sync for SleepLock<T> {}
// SAFETY: moving the lock moves the `T` it owns.
unsafe impl<T: Send> Send for SleepLock<T> {}

pub struct SleepGuard<'a, T> {
    lock: &'a SleepLock<T>,
}

impl<T> SleepLock<T> {
    pub const fn new(data: T) -> Self {
        SleepLock { locked: AtomicBool::new(false), data: UnsafeCell::new(data) }
    }

    fn chan(&self) -> usize {
        self as *const Self as usize
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> Option<SleepGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // Lazily: a guard made and dropped on failure would unlock.
            .then(|| SleepGuard { lock: self })
    }

    /// Takes the lock, sleeping while another thread holds it.
    pub fn lock(&self) -> SleepGuard<'_, T> {
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            // The condition is checked under the scheduler's lock, and the
            // holder's wakeup takes that lock too: no wakeup is missed.
            crate::kern::sched::sleep_if(self.chan(), || self.locked.load(Ordering::Acquire));
        }
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
        self.lock.locked.store(false, Ordering::Release);
        crate::kern::sched::wakeup(self.lock.chan());
    }
}

mod tests {
    use alloc::sync::Arc;
    use core::sync::atomic::AtomicU64;

    use ktest::ktest;

    use super::*;

    /// Threads that sleep on the lock each get it in turn; try_lock fails
    /// while it is held.
    #[ktest]
    fn sleepers_take_turns() {
        let lock = Arc::new(SleepLock::new(0u64));
        let inside = Arc::new(AtomicU64::new(0));
        let g = lock.lock();
        assert!(lock.try_lock().is_none());
        let ids: alloc::vec::Vec<_> = (0..3)
            .map(|_| {
                let (l, inside) = (lock.clone(), inside.clone());
                crate::kern::sched::spawn("locker", move || {
                    for _ in 0..20 {
                        let mut g = l.lock();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                        *g += 1;
                        crate::kern::sched::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
                .unwrap()
            })
            .collect();
        crate::kern::sched::yield_now();
        drop(g);
        for id in ids {
            crate::kern::sched::join(id);
        }
        assert_eq!(*lock.lock(), 60);
    }
}

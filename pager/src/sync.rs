//! The locks a pager takes from its machine.
//!
//! A pager's short-held data (the swap space's block map) is behind a lock
//! the kernel chooses: its interrupt-safe spin lock, so that a holder is
//! never preempted in the middle of a blist operation. The host tests use
//! the VM's plain lock. [`Lock`] is what both give.

/// A lock around a `T`, held for the length of a closure.
pub trait Lock<T>: Send + Sync {
    /// A lock around `value`, of `class` in the lock order
    /// (`vm::witness::order`).
    fn new(value: T, class: &'static vm::witness::LockClass) -> Self;
    /// Runs `f` with the lock held.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
}

/// The VM's spin lock (only ever taken with interrupts on).
impl<T: Send> Lock<T> for vm::sync::Mutex<T> {
    fn new(value: T, class: &'static vm::witness::LockClass) -> Self {
        vm::sync::Mutex::ranked(value, class)
    }

    #[track_caller]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }
}

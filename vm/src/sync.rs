//! The spin lock of the VM (and of the kernel's plain locks), with the rule
//! that keeps it from hanging the kernel checked in debug builds.
//!
//! On one CPU a spin lock is only safe if no holder can be stopped by the
//! code that then wants the lock. A thread that holds a lock with
//! interrupts on can be preempted, or interrupted; if the code that runs
//! next takes the same lock with interrupts off (an interrupt handler, the
//! scheduler, code inside an interrupt-safe lock), it spins for ever: with
//! interrupts off nothing can give the CPU back to the holder. Code that
//! spins with interrupts on is preempted in its turn, and the holder goes
//! on. So the rule for this lock, the plain kind, is: **it is only ever
//! taken with interrupts on.** Data that code with interrupts off must
//! reach is behind the kernel's interrupt-safe `IrqMutex` instead, which
//! turns interrupts off while held so that no holder can be stopped.
//!
//! Debug builds check the rule at every `lock`, once the kernel installs
//! its probe ([`set_irq_probe`]): before, during bring-up, everything runs
//! with interrupts off legitimately, and on the host there are none. The
//! panic names the place. A lock may also have a class in the lock order
//! ([`Mutex::ranked`], [`crate::witness`]), checked in debug builds too.
//! Release builds are spin's lock and nothing else.

mod sleep;

use core::ops::{Deref, DerefMut};
use core::panic::Location;

pub use sleep::{SleepGuard, SleepLock};

use crate::witness::{self, LockClass};

/// Tells whether the CPU may take a plain lock now (interrupts on, not in an
/// interrupt handler), or `None` while the check is off. Installed by the
/// kernel.
static IRQ_PROBE: spin::Once<fn() -> Option<bool>> = spin::Once::new();

/// Installs the kernel's probe (once, when interrupts start running). From
/// then on debug builds check every [`Mutex`].
pub fn set_irq_probe(probe: fn() -> Option<bool>) {
    IRQ_PROBE.call_once(|| probe);
}

/// A spin lock only ever taken with interrupts on (see the module docs).
pub struct Mutex<T: ?Sized> {
    /// Its place in the lock order (None: not checked).
    class: Option<&'static LockClass>,
    inner: spin::Mutex<T>,
}

/// What [`Mutex::lock`] returns: unlocks when dropped.
pub struct MutexGuard<'a, T: ?Sized> {
    class: Option<&'static LockClass>,
    /// The lock's address, as the witness knows it.
    lock: usize,
    inner: spin::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Mutex<T> {
        Mutex { class: None, inner: spin::Mutex::new(value) }
    }

    /// A lock of `class` in the lock order ([`crate::witness::order`]).
    pub const fn ranked(value: T, class: &'static LockClass) -> Mutex<T> {
        Mutex { class: Some(class), inner: spin::Mutex::new(value) }
    }

    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Takes the lock, spinning while another holds it.
    #[inline(always)]
    #[track_caller]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let site = Location::caller();
        self.check(site);
        witness::will_take(self.class, self.addr(), site);
        let inner = self.inner.lock();
        witness::took(self.class, self.addr(), site);
        MutexGuard { class: self.class, lock: self.addr(), inner }
    }

    /// Takes the lock if it is free.
    #[inline(always)]
    #[track_caller]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let site = Location::caller();
        self.check(site);
        let inner = self.inner.try_lock()?;
        witness::took(self.class, self.addr(), site);
        Some(MutexGuard { class: self.class, lock: self.addr(), inner })
    }

    fn addr(&self) -> usize {
        self as *const Self as *const () as usize
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }

    /// Whether the current thread holds this (ranked) lock, where the
    /// lock-order check knows it: `None` for an unranked lock, in release
    /// builds, or before the check runs.
    pub fn held_by_me(&self) -> Option<bool> {
        self.class?;
        witness::holds(self.addr())
    }

    #[inline(always)]
    fn check(&self, _site: &'static Location<'static>) {
        #[cfg(debug_assertions)]
        if let Some(probe) = IRQ_PROBE.get()
            && probe() == Some(false)
        {
            taken_with_interrupts_off(self as *const Self as *const () as usize, _site);
        }
    }
}

#[cfg(debug_assertions)]
#[cold]
#[inline(never)]
fn taken_with_interrupts_off(lock: usize, site: &'static Location<'static>) -> ! {
    panic!(
        "spin lock {lock:#x} taken with interrupts off at {site}: a thread preempted while it holds \
         the lock would keep this CPU spinning for ever (use an interrupt-safe lock)"
    )
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // (The spin lock itself is let go just after, as `inner` drops.)
        witness::released(self.class, self.lock);
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized + core::fmt::Debug> core::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.inner.fmt(f)
    }
}

//! The spin lock of the VM (and of the kernel's plain locks), with the rule
//! that keeps it from hanging the kernel checked in debug builds.
//!
//! A spin lock is only safe if no holder can be stopped by the code that
//! then wants the lock. A thread that holds a lock with interrupts on can be
//! interrupted; if the handler takes the same lock (or code with interrupts
//! off does: the scheduler, code inside an interrupt-safe lock), it spins
//! for ever: with interrupts off nothing gives the CPU back to the holder.
//! So the rule for this lock, the plain kind, is: **it is only ever taken
//! with interrupts on.** Data that code with interrupts off must reach is
//! behind the kernel's interrupt-safe `IrqMutex` instead, which turns
//! interrupts off while held so that no holder can be stopped.
//!
//! And no holder is preempted: the kernel's hooks ([`SpinHooks`]) turn
//! preemption off from before the lock is taken until after it is let go,
//! so other CPUs spinning for it wait for a running holder, never for one
//! switched out. The hooks also record the holder's CPU, and report a spin
//! that lasts too long.
//!
//! Debug builds check the rule at every `lock`, once the kernel installs
//! its probe ([`set_irq_probe`]): before, during bring-up, everything runs
//! with interrupts off legitimately, and on the host there are none. The
//! panic names the place. A lock may also have a class in the lock order
//! ([`Mutex::ranked`], [`crate::witness`]), checked in debug builds too.
//! Release builds are the raw lock ([`raw`]), the hooks and nothing else.
//!
//! ## The model-checking facade
//!
//! This module is also where the page protocol gets its atomics
//! ([`atomic`]), its spin lock ([`Mutex`]), its sleeping lock
//! ([`SleepLock`]) and, through [`crate::sleep_on`] and [`crate::wakeup`],
//! its sleep and wakeup. In the kernel and the host tests they are
//! `core`'s atomics and the raw lock. Built with `--cfg loom` they are
//! loom's, and the models in [`model`] run the protocol's real code under
//! loom, which tries every interleaving of a few threads (`vm/MODELS.md`).
//! Nothing the kernel compiles changes: the switch is this module's.

#[cfg(not(loom))]
mod raw;
mod sleep;

#[cfg(loom)]
pub mod model;

use core::ops::{Deref, DerefMut};
use core::panic::Location;

pub use sleep::{SleepGuard, SleepLock};

/// The atomics of the page protocol: `core`'s, or loom's in model builds.
/// (Counters that only report, and statics, use `core`'s directly: loom
/// cannot make a static, and needs no statistics.)
pub mod atomic {
    #[cfg(not(loom))]
    pub use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
    #[cfg(loom)]
    pub use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
}

/// A constructor that is a `const fn` in the kernel (for statics) and a
/// plain one in model builds, where loom's atomics and locks cannot be
/// made in a constant.
macro_rules! model_const_fn {
    ($(#[$m:meta])* $v:vis fn $name:ident $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$m])* $v const fn $name $($rest)*
        #[cfg(loom)]
        $(#[$m])* $v fn $name $($rest)*
    };
}
pub(crate) use model_const_fn;

/// Waits a moment in a loop that retries (a spin lock, a busy page with no
/// sleep installed): a pause for the CPU, or a yield to loom's scheduler,
/// which would otherwise spin in one interleaving for ever.
#[inline(always)]
pub fn spin_hint() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// The lock under [`Mutex`]: test-and-set with a queue for long waits
/// (see [`raw`]), or loom's (which a model's threads wait for by yielding,
/// as spinning would never let the holder on).
#[cfg(not(loom))]
type RawMutex<T> = raw::RawLock<T>;
#[cfg(not(loom))]
type RawGuard<'a, T> = raw::RawGuard<'a, T>;
#[cfg(loom)]
type RawMutex<T> = loom::sync::Mutex<T>;
#[cfg(loom)]
type RawGuard<'a, T> = model::Guard<'a, T>;

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

/// What the kernel does around the VM's spin locks ([`Mutex`]). Nothing
/// on the host, or before the kernel installs them.
pub struct SpinHooks {
    /// Turn preemption off before the lock is taken, and back on after it
    /// is let go, so that no holder is preempted while other CPUs spin for
    /// its lock (`kern::sched`).
    pub preempt_off: fn(),
    pub preempt_on: fn(),
    /// The running CPU's number: recorded as the holder's, for reports.
    pub cpu: fn() -> u32,
    /// Called every [`SPIN_CHECK`] turns of a spin: `since` is 0 at the
    /// first call of a spin, for the hook to set to a timestamp; the hook
    /// panics (naming the lock and its holder's CPU) when the spin has
    /// lasted too long.
    pub spinning: fn(lock: usize, class: Option<&'static LockClass>, holder_cpu: u32, since: &mut u64),
}

/// Spin turns between two looks at the clock.
pub const SPIN_CHECK: u32 = 1 << 14;

/// No CPU: the holder number of a free lock.
pub const NO_CPU: u32 = u32::MAX;

static HOOKS: spin::Once<SpinHooks> = spin::Once::new();

/// Installs the kernel's hooks (once, before a second CPU or a
/// preemptible thread runs).
pub fn set_spin_hooks(hooks: SpinHooks) {
    HOOKS.call_once(|| hooks);
}

#[inline(always)]
fn preempt_off() {
    if let Some(h) = HOOKS.get() {
        (h.preempt_off)()
    }
}

#[inline(always)]
fn preempt_on() {
    if let Some(h) = HOOKS.get() {
        (h.preempt_on)()
    }
}

/// The running CPU's number, from the kernel's hooks: 0 on the host and
/// before the hooks are in; a model thread's own under loom
/// ([`model::set_cpu`]). Per-CPU state is indexed by it; the thread may
/// have moved by the time the answer is used, so that state is locked or
/// atomic all the same.
#[inline(always)]
pub fn this_cpu() -> u32 {
    #[cfg(loom)]
    return model::cpu();
    #[cfg(not(loom))]
    HOOKS.get().map_or(0, |h| (h.cpu)())
}

/// A spin lock only ever taken with interrupts on (see the module docs).
pub struct Mutex<T: ?Sized> {
    /// Its place in the lock order (None: not checked).
    class: Option<&'static LockClass>,
    /// The holder's CPU ([`NO_CPU`] when free), for the report of a spin
    /// that lasts too long. Relaxed: written by the holder, read for
    /// reports only. (`core`'s atomic even under loom: no model reads it.)
    holder_cpu: core::sync::atomic::AtomicU32,
    inner: RawMutex<T>,
}

/// What [`Mutex::lock`] returns: unlocks when dropped.
pub struct MutexGuard<'a, T: ?Sized> {
    class: Option<&'static LockClass>,
    holder_cpu: &'a core::sync::atomic::AtomicU32,
    /// The lock's address, as the witness knows it.
    lock: usize,
    /// Dropped by hand, before preemption is turned back on.
    inner: core::mem::ManuallyDrop<RawGuard<'a, T>>,
}

impl<T> Mutex<T> {
    model_const_fn! {
        pub fn new(value: T) -> Mutex<T> {
            Mutex { class: None, holder_cpu: core::sync::atomic::AtomicU32::new(NO_CPU), inner: RawMutex::new(value) }
        }
    }

    model_const_fn! {
        /// A lock of `class` in the lock order ([`crate::witness::order`]).
        pub fn ranked(value: T, class: &'static LockClass) -> Mutex<T> {
            Mutex { class: Some(class), holder_cpu: core::sync::atomic::AtomicU32::new(NO_CPU), inner: RawMutex::new(value) }
        }
    }

    pub fn into_inner(self) -> T {
        #[cfg(not(loom))]
        return self.inner.into_inner();
        #[cfg(loom)]
        return self.inner.into_inner().unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(not(loom))]
impl<T: ?Sized> Mutex<T> {
    #[inline(always)]
    fn raw_lock(&self) -> RawGuard<'_, T> {
        match self.inner.try_lock() {
            Some(g) => g,
            None => self.spin(),
        }
    }

    /// Spins for the lock, looking at the clock now and then
    /// ([`SpinHooks::spinning`]). A long wait is queued ([`raw`]), so it
    /// lasts for the holds ahead of it: one that passes the limit means a
    /// holder is stuck.
    #[cold]
    #[inline(never)]
    fn spin(&self) -> RawGuard<'_, T> {
        let mut since = 0;
        let mut waited = 0;
        let g = self.inner.lock_with(raw::PATIENCE, |turns| {
            core::hint::spin_loop();
            waited = turns;
            if turns.is_multiple_of(u64::from(SPIN_CHECK))
                && let Some(h) = HOOKS.get()
            {
                let holder = self.holder_cpu.load(core::sync::atomic::Ordering::Relaxed);
                (h.spinning)(self.addr(), self.class, holder, &mut since);
            }
        });
        if let Some(c) = self.class {
            crate::witness::waited(c, waited);
        }
        g
    }

    #[inline(always)]
    fn raw_try_lock(&self) -> Option<RawGuard<'_, T>> {
        self.inner.try_lock()
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}

/// loom's lock: poisoning (a model thread that panicked) is not this
/// lock's business, the model fails anyway.
#[cfg(loom)]
impl<T: ?Sized> Mutex<T> {
    fn raw_lock(&self) -> RawGuard<'_, T> {
        model::Guard::new(self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn raw_try_lock(&self) -> Option<RawGuard<'_, T>> {
        self.inner.try_lock().ok().map(model::Guard::new)
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another holds it: loom's lock cannot be asked without
    /// trying it (true also when the caller holds it).
    pub fn is_locked(&self) -> bool {
        self.inner.try_lock().is_err()
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
        preempt_off();
        let inner = self.raw_lock();
        self.holder_cpu.store(this_cpu(), core::sync::atomic::Ordering::Relaxed);
        witness::took(self.class, self.addr(), site);
        MutexGuard {
            class: self.class,
            holder_cpu: &self.holder_cpu,
            lock: self.addr(),
            inner: core::mem::ManuallyDrop::new(inner),
        }
    }

    /// Takes the lock if it is free.
    #[inline(always)]
    #[track_caller]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let site = Location::caller();
        self.check(site);
        preempt_off();
        let Some(inner) = self.raw_try_lock() else {
            preempt_on();
            return None;
        };
        self.holder_cpu.store(this_cpu(), core::sync::atomic::Ordering::Relaxed);
        witness::took(self.class, self.addr(), site);
        Some(MutexGuard {
            class: self.class,
            holder_cpu: &self.holder_cpu,
            lock: self.addr(),
            inner: core::mem::ManuallyDrop::new(inner),
        })
    }

    fn addr(&self) -> usize {
        self as *const Self as *const () as usize
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
        witness::released(self.class, self.lock);
        self.holder_cpu.store(NO_CPU, core::sync::atomic::Ordering::Relaxed);
        // SAFETY: dropped once, here; `inner` is not used again.
        unsafe { core::mem::ManuallyDrop::drop(&mut self.inner) };
        preempt_on();
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
        #[cfg(not(loom))]
        return match self.inner.try_lock() {
            Some(g) => f.debug_struct("Mutex").field("data", &&*g).finish(),
            None => f.write_str("Mutex { <locked> }"),
        };
        #[cfg(loom)]
        return f.write_str("Mutex { .. }");
    }
}

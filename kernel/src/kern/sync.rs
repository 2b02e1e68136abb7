//! The kernel's spin locks and the rule that keeps them from hanging it.
//!
//! **The rule.** A spin lock hangs one CPU for ever when its holder cannot
//! run again until the spinner stops: a holder preempted by the scheduler
//! or interrupted by the handler that now spins, while the spinner has
//! interrupts off. So a spin lock that is ever taken where interrupts are
//! off (an interrupt handler, the scheduler, anything `schedule` reaches,
//! the heap, device completion, the console) is always taken with
//! interrupts off, and every other spin lock is only ever taken with them
//! on. Three types carry the rule, so that it is in the type and not in
//! each caller:
//!
//! | type | interrupts while held | for |
//! | --- | --- | --- |
//! | `vm::sync::Mutex` | on (checked) | the VM's locks, maps, file and process data |
//! | [`IrqMutex`] | off: turned off by the lock, restored at unlock | anything an interrupt handler, the scheduler or the heap reaches |
//! | [`IrqOffMutex`] | off already (checked) | the scheduler's lock, held into `schedule`, which keeps them off across the switch |
//!
//! Debug builds check each kind once interrupts run ([`start_checks`]),
//! with the places from `#[track_caller]`: a plain lock taken with
//! interrupts off, or in an interrupt handler ([`in_interrupt`]), panics;
//! an [`IrqOffMutex`] taken with interrupts on panics; the heap entered with
//! the scheduler lock held panics (`heap`).
//!
//! **What a stuck CPU says.** While a lock of the two kinds here spins, the
//! lock's address and its holder's site are in the CPU's block
//! (`PerCpu::spinning_lock`), so the watchdog
//! (`arch::watchdog`) can name them when a CPU has been stuck with interrupts
//! off for a second.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use vm::witness::{self, LockClass};
use x86_64::instructions::interrupts;

use crate::arch::percpu;

/// Whether the CPU is in an interrupt handler (not an exception: a page
/// fault runs for its thread and may sleep). The count is the CPU's own
/// (`PerCpu::in_interrupt`), changed with interrupts off, and read in one
/// GS-relative load: a preemptible caller (every plain lock's check) moved
/// to another CPU half-way through a two-step read would see the count of
/// the CPU it left, in a handler a moment later, and report a lock taken
/// in an interrupt that never was.
pub fn in_interrupt() -> bool {
    percpu::own_in_interrupt() != 0
}

/// Brackets a device or timer interrupt handler's own work; the
/// preemption at its end and signal delivery to user mode run outside it,
/// as the interrupted thread's.
pub fn interrupt_enter() {
    percpu::this().in_interrupt.fetch_add(1, Ordering::Relaxed);
}

/// See [`interrupt_enter`].
pub fn interrupt_exit() {
    percpu::this().in_interrupt.fetch_sub(1, Ordering::Relaxed);
}

/// Turns on the checks of debug builds that need a running kernel: called
/// once interrupts run.
pub fn start_checks() {
    vm::sync::set_irq_probe(|| Some(interrupts::are_enabled() && !in_interrupt()));
    CHECKS.store(true, Ordering::Relaxed);
}

/// Whether [`start_checks`] has run. Relaxed: a flag read for diagnostics.
static CHECKS: AtomicBool = AtomicBool::new(false);

/// No CPU: the holder number of a free lock.
pub const NO_CPU: u32 = vm::sync::NO_CPU;

fn site_ptr(site: &'static Location<'static>) -> *mut Location<'static> {
    site as *const Location<'static> as *mut Location<'static>
}

/// The spin lock under the two interrupt-safe types: a flag and the site of
/// its holder.
struct RawSpin {
    locked: AtomicBool,
    /// Where the holder took the lock (null when free). Written by the
    /// holder only; read for reports.
    holder: AtomicPtr<Location<'static>>,
    /// The holder's CPU number ([`NO_CPU`] when free). Written by the
    /// holder only; read for reports and by [`RawSpin::held_here`].
    holder_cpu: AtomicU32,
}

impl RawSpin {
    const fn new() -> RawSpin {
        RawSpin { locked: AtomicBool::new(false), holder: AtomicPtr::new(ptr::null_mut()), holder_cpu: AtomicU32::new(NO_CPU) }
    }

    fn try_acquire(&self, site: &'static Location<'static>) -> bool {
        // Acquire pairs with the Release store in `release`: the previous
        // holder's writes to the data are seen.
        let got = self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok();
        if got {
            self.holder.store(site_ptr(site), Ordering::Relaxed);
            self.holder_cpu.store(percpu::this().id, Ordering::Relaxed);
        }
        got
    }

    /// The holder's site, if the lock is held by this CPU. (Another CPU's
    /// hold is not this code's: only this CPU stores its own number, and
    /// clears it before it lets go, so a match is never stale.)
    fn held_here(&self) -> Option<&'static Location<'static>> {
        if self.holder_cpu.load(Ordering::Relaxed) == percpu::this().id { self.holder() } else { None }
    }

    fn acquire(&self, site: &'static Location<'static>, class: Option<&'static LockClass>) {
        if self.try_acquire(site) {
            return;
        }
        let mut turns = 0u64;
        // The lock this CPU spins on, and its holder's site, for the
        // watchdog's report (`PerCpu::spinning_lock`).
        let cpu = percpu::this();
        cpu.spinning_lock.store(self as *const RawSpin as usize, Ordering::Relaxed);
        cpu.spinning_holder.store(self.holder.load(Ordering::Relaxed), Ordering::Relaxed);
        cpu.spinning_holder_cpu.store(self.holder_cpu.load(Ordering::Relaxed), Ordering::Relaxed);
        loop {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
                turns += 1;
            }
            if self.try_acquire(site) {
                break;
            }
        }
        cpu.spinning_lock.store(0, Ordering::Relaxed);
        if let Some(c) = class {
            witness::waited(c, turns);
        }
    }

    fn release(&self) {
        self.holder.store(ptr::null_mut(), Ordering::Relaxed);
        self.holder_cpu.store(NO_CPU, Ordering::Relaxed);
        // Release pairs with the Acquire in `try_acquire`.
        self.locked.store(false, Ordering::Release);
    }

    fn holder(&self) -> Option<&'static Location<'static>> {
        let p = self.holder.load(Ordering::Relaxed);
        // SAFETY: only `&'static Location`s are stored.
        (!p.is_null()).then(|| unsafe { &*p })
    }
}

/// A spin lock that turns interrupts off while it is held and restores
/// them at unlock: for data an interrupt handler, the scheduler or the heap
/// may reach.
pub struct IrqMutex<T: ?Sized> {
    /// Its place in the lock order (None: not checked).
    class: Option<&'static LockClass>,
    raw: RawSpin,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one holder at a time access to `data`.
unsafe impl<T: ?Sized + Send> Sync for IrqMutex<T> {}
// SAFETY: as above; the data moves with the lock.
unsafe impl<T: ?Sized + Send> Send for IrqMutex<T> {}

/// What [`IrqMutex::lock`] returns: unlocks, then restores the interrupt
/// flag, when dropped.
pub struct IrqGuard<'a, T: ?Sized> {
    lock: &'a IrqMutex<T>,
    enable: bool,
}

impl<T> IrqMutex<T> {
    pub const fn new(value: T) -> IrqMutex<T> {
        IrqMutex { class: None, raw: RawSpin::new(), data: UnsafeCell::new(value) }
    }

    /// A lock of `class` in the lock order (`vm::witness::order`).
    pub const fn ranked(value: T, class: &'static LockClass) -> IrqMutex<T> {
        IrqMutex { class: Some(class), raw: RawSpin::new(), data: UnsafeCell::new(value) }
    }
}

impl<T: ?Sized> IrqMutex<T> {
    /// Turns interrupts off, then takes the lock.
    #[track_caller]
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let site = Location::caller();
        let enable = interrupts::are_enabled();
        interrupts::disable();
        witness::will_take(self.class, self.addr(), site);
        self.raw.acquire(site, self.class);
        witness::took(self.class, self.addr(), site);
        IrqGuard { lock: self, enable }
    }

    fn addr(&self) -> usize {
        self as *const Self as *const () as usize
    }

    /// Takes the lock if it is free (interrupts off while held).
    #[track_caller]
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let enable = interrupts::are_enabled();
        interrupts::disable();
        if self.raw.try_acquire(Location::caller()) {
            witness::took(self.class, self.addr(), Location::caller());
            Some(IrqGuard { lock: self, enable })
        } else {
            if enable {
                interrupts::enable();
            }
            None
        }
    }

    /// Where the holder took the lock, if it is held.
    pub fn holder(&self) -> Option<&'static Location<'static>> {
        self.raw.holder()
    }

    /// Lets the lock go whoever holds it.
    ///
    /// # Safety
    /// The holder never touches the data again: for the panic path, whose
    /// holder is the context that failed and never resumes.
    pub unsafe fn force_unlock(&self) {
        self.raw.release();
    }
}

impl<T: ?Sized> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` is unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for IrqGuard<'_, T> {
    fn drop(&mut self) {
        witness::released(self.lock.class, self.lock.addr());
        self.lock.raw.release();
        if self.enable {
            interrupts::enable();
        }
    }
}

/// A spin lock taken only where interrupts are already off, and left with
/// them off: the scheduler's, whose holder switches threads with it (the
/// lock is dropped just before the switch, interrupts stay off across it).
/// Taking it with interrupts on panics in debug builds once checks run.
pub struct IrqOffMutex<T: ?Sized> {
    /// Its place in the lock order (None: not checked).
    class: Option<&'static LockClass>,
    raw: RawSpin,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one holder at a time access to `data`.
unsafe impl<T: ?Sized + Send> Sync for IrqOffMutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for IrqOffMutex<T> {}

/// What [`IrqOffMutex::lock`] returns; unlocks when dropped, and leaves the
/// interrupt flag alone.
pub struct IrqOffGuard<'a, T: ?Sized> {
    lock: &'a IrqOffMutex<T>,
}

impl<T> IrqOffMutex<T> {
    pub const fn new(value: T) -> IrqOffMutex<T> {
        IrqOffMutex { class: None, raw: RawSpin::new(), data: UnsafeCell::new(value) }
    }

    /// A lock of `class` in the lock order (`vm::witness::order`).
    pub const fn ranked(value: T, class: &'static LockClass) -> IrqOffMutex<T> {
        IrqOffMutex { class: Some(class), raw: RawSpin::new(), data: UnsafeCell::new(value) }
    }
}

impl<T: ?Sized> IrqOffMutex<T> {
    /// Takes the lock; interrupts must be off.
    #[track_caller]
    pub fn lock(&self) -> IrqOffGuard<'_, T> {
        let site = Location::caller();
        if cfg!(debug_assertions) && CHECKS.load(Ordering::Relaxed) && interrupts::are_enabled() {
            match self.raw.holder() {
                Some(last) => {
                    panic!("lock taken with interrupts on at {site} (held from {last}); it must be taken with them off")
                }
                None => panic!("lock taken with interrupts on at {site}; it must be taken with them off"),
            }
        }
        witness::will_take(self.class, self.addr(), site);
        self.raw.acquire(site, self.class);
        witness::took(self.class, self.addr(), site);
        IrqOffGuard { lock: self }
    }

    fn addr(&self) -> usize {
        self as *const Self as *const () as usize
    }

    /// Where the holder took the lock, if it is held.
    pub fn holder(&self) -> Option<&'static Location<'static>> {
        self.raw.holder()
    }

    /// Where this CPU took the lock, if this CPU holds it.
    pub fn held_here(&self) -> Option<&'static Location<'static>> {
        self.raw.held_here()
    }

    /// Lets go of a lock handed over across a stack switch, for a thread
    /// that has no guard of its own to drop. The scheduler's lock is taken
    /// by the thread that switches away and let go by the one switched to,
    /// on the same CPU: each resumed thread drops the guard it took before
    /// it switched away, so acquisitions and releases pair up, except for
    /// a thread's first run, which comes here.
    ///
    /// # Safety
    /// The caller is a new thread's first code after the switch into it,
    /// the lock taken (by the thread that switched to it) and held across
    /// the switch. (The lock-order check's record is not touched: the
    /// taker's record keeps the lock until the taker resumes and drops its
    /// guard.)
    pub unsafe fn unlock_handed_over(&self) {
        debug_assert!(self.raw.held_here().is_some(), "a handed-over lock that this CPU does not hold");
        self.raw.release();
    }
}

impl<T: ?Sized> Deref for IrqOffGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for IrqOffGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` is unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for IrqOffGuard<'_, T> {
    fn drop(&mut self) {
        witness::released(self.lock.class, self.lock.addr());
        self.lock.raw.release();
    }
}

mod tests;

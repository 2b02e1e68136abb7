//! What the models of the page protocol run on (`--cfg loom` builds only):
//! a scheduler's sleep and wakeup made of loom's lock and condition
//! variable, the switches that break the protocol on purpose, and the
//! runner that counts what loom explored. The models are in `crate::models`;
//! `vm/MODELS.md` says how to run and read them.

extern crate std;

use core::cell::Cell;
use std::time::Instant;
use std::vec::Vec;

use loom::sync::{Condvar, Mutex};

/// The sleepers of one model execution, as the kernel's scheduler keeps
/// them: each asleep on a channel until a wakeup on that channel.
struct Sched {
    /// The scheduler lock, and who sleeps on what: (channel, ticket).
    asleep: Mutex<(Vec<(usize, u64)>, u64)>,
    /// Where the sleepers wait for their ticket to be taken off the list.
    woken: Condvar,
}

loom::lazy_static! {
    static ref SCHED: Sched = Sched { asleep: Mutex::new((Vec::new(), 0)), woken: Condvar::new() };
}

/// Whether this thread is unwinding from a failed check (or from loom's
/// report of a deadlock). Its locks' releases and its wakeups are then
/// skipped: the execution is over, and loom, asked to schedule a step of
/// it, would panic again and abort the test instead of reporting it.
pub fn unwinding() -> bool {
    std::thread::panicking()
}

/// A loom lock's guard that lets go of nothing while its thread unwinds
/// (see [`unwinding`]).
pub struct Guard<'a, T: ?Sized>(core::mem::ManuallyDrop<loom::sync::MutexGuard<'a, T>>);

impl<'a, T: ?Sized> Guard<'a, T> {
    pub fn new(g: loom::sync::MutexGuard<'a, T>) -> Self {
        Guard(core::mem::ManuallyDrop::new(g))
    }
}

impl<T: ?Sized> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        if !unwinding() {
            // SAFETY: dropped once, here.
            unsafe { core::mem::ManuallyDrop::drop(&mut self.0) }
        }
    }
}

impl<T: ?Sized> core::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> core::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The kernel's `sleep_if`: under the scheduler lock, if `cond` holds,
/// sleep on `chan` until a [`wakeup`] of it. A sleeper nobody wakes stays
/// asleep, and loom reports the execution as a deadlock.
pub fn sleep_on(chan: usize, cond: &dyn Fn() -> bool) {
    if unwinding() {
        return;
    }
    let mut g = SCHED.asleep.lock().unwrap();
    if !cond() {
        return;
    }
    let ticket = g.1;
    g.1 += 1;
    g.0.push((chan, ticket));
    while g.0.contains(&(chan, ticket)) {
        g = SCHED.woken.wait(g).unwrap();
    }
}

/// The kernel's `wakeup`: every sleeper on `chan` is made runnable.
pub fn wakeup(chan: usize) {
    if unwinding() {
        return;
    }
    let mut g = SCHED.asleep.lock().unwrap();
    g.0.retain(|&(c, _)| c != chan);
    SCHED.woken.notify_all();
}

/// A deliberate break in the protocol, to show that a model can fail: each
/// is one line of the real code skipped or changed, under
/// `cfg(loom)`, and only while a test has switched it on ([`broken`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Break {
    /// The release of a busy page does not wake its sleepers.
    ReleaseWithoutWakeup = 1 << 0,
    /// A busy waiter sleeps without setting the waiters bit.
    SleepWithoutWaitersBit = 1 << 1,
    /// Object membership and the wire count are decided on two words:
    /// the remover stores "no object" and then reads the count, the last
    /// unwirer drops the count and then reads the owner.
    OwnerAndWiringApart = 1 << 2,
    /// A fault that finds its page busy uses it without the busy lock.
    FaultTakesBusyPage = 1 << 3,
    /// A failed read unbusies its read-ahead pages instead of freeing them.
    ReadAheadLeftInLimbo = 1 << 4,
    /// The pageout daemon takes a page it finds on a queue for reclaim
    /// without asking whether it is wired.
    PageoutIgnoresWiring = 1 << 5,
    /// Freeing a busy page does not wake those asleep on it.
    FreeWithoutWakeup = 1 << 6,
    /// A freed page goes into the allocator's cache before it is made free.
    CachedBeforeFree = 1 << 7,
    /// The laundry writes a page without write-protecting its mappings.
    LaunderWithoutWriteProtect = 1 << 8,
    /// The vnode pager waits for the file's lock on a fault's behalf.
    PagerWaitsForFileLock = 1 << 9,
    /// A CPU's batch links its pages onto their queue without asking
    /// whether they still carry the pending mark.
    BatchIgnoresMark = 1 << 10,
}

std::thread_local! {
    /// The breaks switched on. loom runs a model's threads as coroutines
    /// on the thread that calls [`check`], so they all see the test's own
    /// switches, and tests running beside it on other threads do not.
    static BROKEN: Cell<u32> = const { Cell::new(0) };
}

loom::thread_local! {
    /// The CPU a model thread runs on, as the kernel's spin hooks would
    /// tell it (`crate::sync::this_cpu`): 0 until the thread says
    /// otherwise with [`set_cpu`]. Per-CPU state (the allocator's caches,
    /// the counters) is indexed by it.
    static CPU: Cell<u32> = Cell::new(0);
}

/// Puts the calling model thread on CPU `n` (a later call moves it, as a
/// migration would).
pub fn set_cpu(n: u32) {
    CPU.with(|c| c.set(n));
}

/// The model thread's CPU (see [`set_cpu`]).
pub fn cpu() -> u32 {
    CPU.with(|c| c.get())
}

/// Whether the model running on this thread has switched `b` on.
pub fn broken(b: Break) -> bool {
    BROKEN.with(|s| s.get() & b as u32 != 0)
}

/// What [`check`] explored.
#[derive(Debug, Clone, Copy)]
pub struct Explored {
    pub interleavings: u64,
    pub seconds: f64,
}

/// Runs `model` under loom, through every interleaving within the
/// preemption bound (`LOOM_MAX_PREEMPTIONS`, or `preemptions`), with `breaks`
/// switched on; prints and returns what it explored. A failing
/// interleaving panics here, with loom's report.
pub fn check_with(name: &str, preemptions: usize, breaks: &[Break], model: impl Fn() + Sync + Send + 'static) -> Explored {
    let runs = std::sync::Arc::new(core::sync::atomic::AtomicU64::new(0));
    let counter = runs.clone();
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    // Loom's default of 1,000 branch points an execution is too few for a
    // model that ends with the invariant checker (a few loads of every
    // page record), unless LOOM_MAX_BRANCHES says otherwise.
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = MAX_BRANCHES;
    }
    let bits = breaks.iter().fold(0, |a, &b| a | b as u32);
    BROKEN.with(|s| s.set(bits));
    struct Unbreak;
    impl Drop for Unbreak {
        fn drop(&mut self) {
            BROKEN.with(|s| s.set(0));
        }
    }
    let _unbreak = Unbreak;
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        model();
    });
    let explored =
        Explored { interleavings: runs.load(core::sync::atomic::Ordering::Relaxed), seconds: start.elapsed().as_secs_f64() };
    std::println!(
        "model: {name}: {} interleavings in {:.2} s (preemption bound {})",
        explored.interleavings,
        explored.seconds,
        builder.preemption_bound.unwrap_or(0)
    );
    explored
}

/// [`check_with`] the protocol whole, at the default bound.
pub fn check(name: &str, model: impl Fn() + Sync + Send + 'static) -> Explored {
    check_with(name, DEFAULT_PREEMPTIONS, &[], model)
}

/// Branch points an execution may have when `LOOM_MAX_BRANCHES` is not
/// set: room for the invariant checker's pass over the page records.
pub const MAX_BRANCHES: usize = 20_000;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set: the
/// protocol's bugs need one or two preemptions to show (a release between
/// a waiter's check and its sleep), and three keeps every model within
/// seconds.
pub const DEFAULT_PREEMPTIONS: usize = 3;

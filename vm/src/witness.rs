//! The lock order, written once, and its check in debug builds: a small
//! version of FreeBSD's WITNESS.
//!
//! Every lock that takes part has a *class* ([`LockClass`]): a name and a
//! rank in [`order`]. The rule is that a thread takes locks in rising rank:
//! while it holds a lock of rank r, it may take only locks of rank r or
//! above. Two threads that follow the rule cannot deadlock on two locks of
//! different classes, whatever they do in between; a thread that breaks it
//! can, the first time another thread takes the same two the right way
//! round. The check finds a break the first time it *happens* rather than
//! the first time it deadlocks: taking a lock of lower rank while holding
//! one of higher rank panics, naming both locks and where each was taken.
//!
//! Locks of one class (two objects of a shadow chain, two vnodes) are
//! ordered by the code that takes them, not by rank: equal ranks pass.
//! Locks with no class are not checked.
//!
//! Each thread's held locks are a small stack ([`Held`]) that the kernel
//! keeps in the thread's record and hands to the check with interrupts off
//! ([`set_held`]); interrupt handlers push onto the interrupted thread's
//! stack and pop before they return. Until the kernel installs its hook,
//! and on the host unless a test installs one, nothing is checked. Release
//! builds check nothing and keep no stack.

use core::panic::Location;
// `core`'s atomics even under loom: the counters are statistics no model
// reads.
use core::sync::atomic::{AtomicU64, Ordering};

/// A kind of lock, with its place in the lock order.
#[derive(Debug)]
pub struct LockClass {
    pub name: &'static str,
    /// Locks are taken in rising rank.
    pub rank: u16,
    /// A sleeping lock (held across I/O and sleeps): it ranks below every
    /// spin lock, and a thread may sleep holding it.
    pub sleeps: bool,
}

/// How often the spin locks of a class were waited for, and how long: a
/// small FreeBSD LOCK_PROFILING, kept in every build (the counts are
/// touched only on the contended path, which spins anyway). Which lock
/// stops a workload from scaling is read here, at the end of a run
/// (`run.report=on`). Kept beside the classes ([`CONTENTION`], in the
/// order of [`order::ALL`]) rather than in them, so that a class stays
/// free of interior mutability and a `const` lock can name it. Relaxed,
/// both: counters.
#[derive(Debug)]
pub struct Contention {
    /// Acquisitions that found the lock held and spun.
    pub waits: AtomicU64,
    /// Turns of those spins' loops (one `pause` each): the time waited,
    /// in a unit that depends on the machine.
    pub spins: AtomicU64,
}

impl Contention {
    const fn new() -> Contention {
        Contention { waits: AtomicU64::new(0), spins: AtomicU64::new(0) }
    }
}

/// The contention of each class of [`order::ALL`], in its order.
pub static CONTENTION: [Contention; order::ALL.len()] = [const { Contention::new() }; order::ALL.len()];

/// Counts one wait of `turns` spin turns for a lock of `class` (a class
/// not in [`order::ALL`] is not counted). On the contended path only.
#[cold]
pub fn waited(class: &'static LockClass, turns: u64) {
    if let Some(i) = order::ALL.iter().position(|c| core::ptr::eq(*c, class)) {
        CONTENTION[i].waits.fetch_add(1, Ordering::Relaxed);
        CONTENTION[i].spins.fetch_add(turns, Ordering::Relaxed);
    }
}

impl LockClass {
    /// The class of a spin lock (never held across a sleep).
    pub const fn spin(name: &'static str, rank: u16) -> LockClass {
        assert!(rank >= FIRST_SPIN_RANK, "a spin lock ranks above every sleeping lock");
        LockClass { name, rank, sleeps: false }
    }

    /// The class of a sleeping lock.
    pub const fn sleeping(name: &'static str, rank: u16) -> LockClass {
        assert!(rank < FIRST_SPIN_RANK, "a sleeping lock ranks below every spin lock");
        LockClass { name, rank, sleeps: true }
    }
}

/// Writes one line per lock class whose locks were waited for: the waits
/// and the spin turns, most turns first.
pub fn write_contention(w: &mut dyn core::fmt::Write) -> core::fmt::Result {
    let mut rows: [(u64, u64, &str); order::ALL.len()] = [(0, 0, ""); order::ALL.len()];
    for (row, (class, c)) in rows.iter_mut().zip(order::ALL.iter().zip(&CONTENTION)) {
        *row = (c.spins.load(Ordering::Relaxed), c.waits.load(Ordering::Relaxed), class.name);
    }
    rows.sort_unstable_by_key(|r| core::cmp::Reverse(r.0));
    for (spins, waits, name) in rows {
        if waits != 0 {
            writeln!(w, "lock contention: {name:<20} {waits:>10} waits {spins:>14} spin turns")?;
        }
    }
    Ok(())
}

/// Forgets the contention counted so far (before a measurement).
pub fn reset_contention() {
    for c in &CONTENTION {
        c.waits.store(0, Ordering::Relaxed);
        c.spins.store(0, Ordering::Relaxed);
    }
}

/// Sleeping locks rank below this, spin locks from it: a thread that holds
/// a spin lock may not sleep, so it may not wait for a sleeping lock
/// either (FreeBSD's rule: sleepable locks come before spin locks).
pub const FIRST_SPIN_RANK: u16 = 100;

/// The lock order of the whole kernel, lowest rank first: a thread holding
/// a lock may take those below it in this list, never those above. (The
/// ranks leave room between them for classes to come.)
pub mod order {
    use super::LockClass;

    /// An open file's offset: held across a `read` or `write`, before the
    /// filesystem is taken. (A sleeping lock.)
    pub static FILE_OFFSET: LockClass = LockClass::sleeping("open file offset", 20);
    /// A pipe's ring: held across a read's or write's copies to or from
    /// the user, which may fault. (A sleeping lock.)
    pub static PIPE: LockClass = LockClass::sleeping("pipe", 25);
    /// A futex hash bucket: held while the futex word is read (which may
    /// fault, and page in from a file or swap) and the waiter queued.
    /// Two at once for a requeue, the lower-addressed first. (A sleeping
    /// lock.)
    pub static FUTEX: LockClass = LockClass::sleeping("futex bucket", 30);
    /// The filesystem, which is the vnode lock (one lock for the mount):
    /// held across block I/O and while a flush waits for busy pages; the
    /// fault path only tries it (rule 8). (A sleeping lock.)
    pub static VNODE: LockClass = LockClass::sleeping("vnode", 50);

    /// A process's address space map (`VmMap`): a fault, mmap, fork.
    pub static MAP: LockClass = LockClass::spin("vm map", 100);
    /// A mount's table of vnodes in use.
    pub static VNODE_TABLE: LockClass = LockClass::spin("vnode table", 150);
    /// A vm_object's state: its pages, its shadow links, its pager.
    pub static OBJECT: LockClass = LockClass::spin("vm object", 200);
    /// A swap pager's metadata (the trie of swap blocks).
    pub static SWAP_META: LockClass = LockClass::spin("swap metadata", 300);
    /// A pmap: its page tables. (A PV walk, holding a PV-list lock, only
    /// tries it.)
    pub static PMAP: LockClass = LockClass::spin("pmap", 390);
    /// A bucket of PV lists (the mappings of each page).
    pub static PV: LockClass = LockClass::spin("pmap pv lists", 400);
    /// A CPU's batch of pages on their way to a paging queue.
    pub static PAGE_QUEUE_BATCH: LockClass = LockClass::spin("page queue batch", 490);
    /// The paging queues.
    pub static PAGE_QUEUES: LockClass = LockClass::spin("page queues", 500);
    /// Kernel virtual memory: stacks and large buffers.
    pub static KMEM: LockClass = LockClass::spin("kmem", 550);
    /// The kernel heap.
    pub static HEAP: LockClass = LockClass::spin("kernel heap", 600);
    /// A zone's keg: slabs of trie nodes, of the heap's size classes.
    pub static KEG: LockClass = LockClass::spin("zone keg", 700);
    /// The page allocator: the per-CPU cache, the free lists, the pool of
    /// zeroed pages.
    pub static PAGE_CACHE: LockClass = LockClass::spin("page cache", 800);
    pub static FREE_LISTS: LockClass = LockClass::spin("page free lists", 810);
    pub static ZERO_POOL: LockClass = LockClass::spin("zeroed-page pool", 820);
    /// The swap space's block allocator.
    pub static SWAP_SPACE: LockClass = LockClass::spin("swap space", 900);
    /// A device's registers and request slots.
    pub static DEVICE: LockClass = LockClass::spin("device", 1000);
    /// The console.
    pub static CONSOLE: LockClass = LockClass::spin("console", 1100);
    /// The scheduler: run queue, sleep channels. Last of all: wakeups come
    /// from everywhere.
    pub static SCHED: LockClass = LockClass::spin("scheduler", 1200);

    /// Every class above, for the contention report.
    pub static ALL: [&LockClass; 21] = [
        &FILE_OFFSET,
        &FUTEX,
        &VNODE,
        &MAP,
        &VNODE_TABLE,
        &OBJECT,
        &SWAP_META,
        &PMAP,
        &PV,
        &PAGE_QUEUE_BATCH,
        &PAGE_QUEUES,
        &KMEM,
        &HEAP,
        &KEG,
        &PAGE_CACHE,
        &FREE_LISTS,
        &ZERO_POOL,
        &SWAP_SPACE,
        &DEVICE,
        &CONSOLE,
        &SCHED,
    ];
}

/// Most locks one thread holds at once that are tracked; more is a bug in
/// itself (and reported).
pub const MAX_HELD: usize = 16;

/// One held lock: its class, its address (to find it at release), and
/// where it was taken.
// Release builds keep the records (their size is part of each CPU's
// block) but never fill them.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
#[derive(Clone, Copy)]
struct Entry {
    class: &'static LockClass,
    lock: usize,
    site: &'static Location<'static>,
}

/// The locks one thread holds, in the order taken.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
pub struct Held {
    entries: [Option<Entry>; MAX_HELD],
    len: usize,
}

#[cfg_attr(not(debug_assertions), allow(dead_code))]
impl Held {
    pub const fn new() -> Held {
        Held { entries: [None; MAX_HELD], len: 0 }
    }

    /// How many tracked locks are held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks that a lock of `class` may be taken now, at `site`.
    fn check(&self, class: &'static LockClass, lock: usize, site: &'static Location<'static>) {
        for e in self.entries[..self.len].iter().flatten() {
            if e.lock == lock {
                panic!("lock {lock:#x} ({}) taken again at {site}: it is held, taken at {}", class.name, e.site);
            }
            if e.class.rank > class.rank {
                panic!(
                    "lock order reversal: {} (rank {}) taken at {site} while {} (rank {}) is held, taken at {}",
                    class.name, class.rank, e.class.name, e.class.rank, e.site
                );
            }
        }
    }

    fn push(&mut self, class: &'static LockClass, lock: usize, site: &'static Location<'static>) {
        assert!(self.len < MAX_HELD, "more than {MAX_HELD} tracked locks held at once (taking {} at {site})", class.name);
        self.entries[self.len] = Some(Entry { class, lock, site });
        self.len += 1;
    }

    /// Forgets `lock` (the latest entry for it: locks may be released out
    /// of order).
    fn pop(&mut self, lock: usize) {
        let Some(i) = self.entries[..self.len].iter().rposition(|e| e.is_some_and(|e| e.lock == lock)) else {
            return;
        };
        self.entries.copy_within(i + 1..self.len, i);
        self.len -= 1;
        self.entries[self.len] = None;
    }
}

impl Default for Held {
    fn default() -> Held {
        Held::new()
    }
}

/// Runs a function on the current thread's [`Held`] with interrupts off (or
/// does nothing where there is none yet).
type HeldHook = fn(&mut dyn FnMut(&mut Held));

static HELD: spin::Once<HeldHook> = spin::Once::new();

/// Set by [`stop`]: no more checks. (A; Relaxed: a flag that only turns
/// checks off.)
static STOPPED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Stops the checks for good: a panic report takes the locks it must in
/// whatever order, and must not panic again for it.
pub fn stop() {
    STOPPED.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// (Off in model builds: loom's threads share one host thread, and with
/// it the host's per-thread record.)
#[cfg(debug_assertions)]
fn hook() -> Option<&'static HeldHook> {
    if cfg!(loom) || STOPPED.load(core::sync::atomic::Ordering::Relaxed) { None } else { HELD.get() }
}

/// Installs the kernel's hook (once, when threads run): from then on debug
/// builds check every ranked lock.
pub fn set_held(hook: HeldHook) {
    HELD.call_once(|| hook);
}

/// Before a sleep at `site`: a thread that sleeps holding a spin lock keeps
/// every other taker spinning until it wakes (and its waker may need the
/// lock). Debug builds panic, naming the lock and where it was taken.
#[inline(always)]
pub fn may_sleep(site: &'static Location<'static>) {
    #[cfg(debug_assertions)]
    if let Some(hook) = hook() {
        hook(&mut |h| {
            if let Some(e) = h.entries[..h.len].iter().flatten().find(|e| !e.class.sleeps) {
                panic!("sleep at {site} with {} (a spin lock) held, taken at {}", e.class.name, e.site);
            }
        });
    }
    #[cfg(not(debug_assertions))]
    let _ = site;
}

/// Whether the current thread holds the ranked lock at `lock`, where that
/// is known (debug builds, once the kernel's hook is in).
pub fn holds(lock: usize) -> Option<bool> {
    #[cfg(debug_assertions)]
    if let Some(hook) = hook() {
        let mut held = None;
        hook(&mut |h| held = Some(h.entries[..h.len].iter().flatten().any(|e| e.lock == lock)));
        return held;
    }
    let _ = lock;
    None
}

/// How many ranked locks the current thread holds, where that is known
/// (debug builds, once the kernel's hook is in).
pub fn held_count() -> Option<usize> {
    #[cfg(debug_assertions)]
    if let Some(hook) = hook() {
        let mut n = None;
        hook(&mut |h| n = Some(h.len()));
        return n;
    }
    None
}

/// Before taking `lock` (of `class`) at `site`, and spinning for it: panics
/// on a reversal of the order (a try-lock cannot deadlock, and is not
/// checked).
#[inline(always)]
pub fn will_take(class: Option<&'static LockClass>, lock: usize, site: &'static Location<'static>) {
    #[cfg(debug_assertions)]
    if let (Some(class), Some(hook)) = (class, hook()) {
        hook(&mut |h| h.check(class, lock, site));
    }
    #[cfg(not(debug_assertions))]
    let _ = (class, lock, site);
}

/// After taking `lock` (of `class`) at `site`.
#[inline(always)]
pub fn took(class: Option<&'static LockClass>, lock: usize, site: &'static Location<'static>) {
    #[cfg(debug_assertions)]
    if let (Some(class), Some(hook)) = (class, hook()) {
        hook(&mut |h| h.push(class, lock, site));
    }
    #[cfg(not(debug_assertions))]
    let _ = (class, lock, site);
}

/// After letting `lock` (of `class`) go.
#[inline(always)]
pub fn released(class: Option<&'static LockClass>, lock: usize) {
    #[cfg(debug_assertions)]
    if let (Some(_), Some(hook)) = (class, hook()) {
        hook(&mut |h| h.pop(lock));
    }
    #[cfg(not(debug_assertions))]
    let _ = (class, lock);
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;

    use alloc::string::String;
    use core::cell::RefCell;

    use super::*;

    std::thread_local! {
        static HOST_HELD: RefCell<Held> = const { RefCell::new(Held::new()) };
    }

    /// Makes the host tests check the lock order: each std thread keeps
    /// its own held locks.
    pub(crate) fn check_host_threads() {
        set_held(|f| HOST_HELD.with(|h| f(&mut h.borrow_mut())));
    }

    static LOW: LockClass = LockClass::sleeping("low", 1);
    static HIGH: LockClass = LockClass::sleeping("high", 2);

    #[track_caller]
    fn here() -> &'static Location<'static> {
        Location::caller()
    }

    #[test]
    fn rising_ranks_pass_and_release_in_any_order() {
        let mut h = Held::new();
        h.check(&LOW, 1, here());
        h.push(&LOW, 1, here());
        h.check(&HIGH, 2, here());
        h.push(&HIGH, 2, here());
        // Same class, another lock: passes.
        h.check(&HIGH, 3, here());
        h.push(&HIGH, 3, here());
        h.pop(1);
        assert_eq!(h.len(), 2);
        h.pop(3);
        h.pop(2);
        assert!(h.is_empty());
    }

    #[test]
    #[should_panic(expected = "lock order reversal: low (rank 1) taken at")]
    fn a_reversal_is_caught_naming_both() {
        let mut h = Held::new();
        h.push(&HIGH, 2, here());
        h.check(&LOW, 1, here());
    }

    #[test]
    #[should_panic(expected = "taken again")]
    fn taking_a_held_lock_is_caught() {
        let mut h = Held::new();
        h.push(&LOW, 1, here());
        h.check(&LOW, 1, here());
    }

    #[test]
    fn the_reversal_report_names_both_sites() {
        let r = std::panic::catch_unwind(|| {
            let mut h = Held::new();
            h.push(&HIGH, 2, here());
            h.check(&LOW, 1, here());
        });
        let msg = r.err().and_then(|e| e.downcast::<String>().ok()).expect("no panic");
        assert_eq!(msg.matches("vm/src/witness.rs").count(), 2, "{msg}");
        assert!(msg.contains("high (rank 2) is held"), "{msg}");
    }
}

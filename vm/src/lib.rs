//! The virtual-memory subsystem, in the manner of FreeBSD's `sys/vm`.
//!
//! `no_std` + `alloc`: built into the kernel and unit-tested on the host. It
//! knows nothing of x86_64 or devices; the kernel gives it the memory map, a
//! direct map of physical memory, and (later) a `Pmap`.
//!
//! | module | BSD concept |
//! | --- | --- |
//! | [`contents`] | page contents through the direct map, for a busy page |
//! | [`counter`] | `counter(9)`: statistics kept per CPU, summed on read |
//! | [`page`] | `vm_page`: the per-frame record and its busy/wire/valid/dirty/queue state |
//! | [`phys`] | `vm_phys`: the buddy allocator over the page array |
//! | [`pmap`] | the machine-dependent interface (`pmap_*`), and a software pmap |
//! | [`queue`] | `vm_pagequeue`: active, inactive, laundry |
//! | [`map`] | `vm_map`: address ranges, protection, wiring, fork |
//! | [`fault`] | `vm_fault`: the page-fault state machine |
//! | [`object`] | `vm_object`: pages of a file or of anonymous memory; shadow chains |
//! | [`radix`] | `vm_radix`: the per-object trie of resident pages |
//! | [`zone`] | a UMA-like zone of fixed-size items (trie nodes) |
//! | [`sync`] | the spin lock, only ever taken with interrupts on (checked) |
//! | [`witness`] | the lock order, checked in debug builds (`WITNESS`) |
//! | [`failpoint`] | `fail(9)`: named places that can be told to fail |
//! | [`invariants`] | what must always hold, checked |
//!
//! ## The page protocol
//!
//! The rules every user of a [`page::Page`] keeps are in `vm/RULES.md`,
//! numbered; "rule N" in the code means rule N there, and each rule names
//! the assertions, invariant checks and tests that enforce it.
//!
//! ## Lock legend
//!
//! One legend for the whole tree (`vm`, `pager` and the kernel): each field
//! of a shared structure says, in parentheses, what protects it.
//!
//! | tag | protected by |
//! | --- | --- |
//! | (A) | nothing but atomic operations (each says what its ordering pairs with) |
//! | (C) | nothing: constant once built (at boot, or when the structure is made) |
//! | (T) | nothing: the running thread's own |
//! | (B) | the page's busy lock (its holder) |
//! | (M) | the map lock (`VmMap`, in its address space) |
//! | (O) | the object lock (`VmObject`'s state) |
//! | (P) | the pmap's PV-list lock |
//! | (Q) | the page-queue lock |
//! | (F) | the page allocator's locks (free lists, cache, zero pool) |
//! | (Z) | a zone's keg lock |
//! | (W) | a swap pager's metadata lock |
//! | (K) | the swap space's block-map lock |
//! | (V) | the vnode table's lock; (L) a sleeping lock (a filesystem, which is its vnodes' lock; a file offset) |
//! | (H) | the kernel heap's lock |
//! | (D) | a device's lock (interrupt-safe: PCI, I/O APIC, virtio-blk) |
//! | (S) | the scheduler lock |
//! | (R) | the process table's lock, or a process's own field locks |
//!
//! ## Lock order
//!
//! Written once, in [`witness::order`], lowest rank first; a thread holding
//! a lock takes only locks of the same or a higher rank. Debug builds check
//! it at every ranked lock (kernel and host tests alike) and panic on a
//! reversal, naming both locks and where each was taken. In short:
//!
//! ```text
//! map ⇒ object ⇒ swap metadata ⇒ PV lists ⇒ page queues ⇒ kmem ⇒ heap
//!     ⇒ zone keg ⇒ page cache ⇒ free lists ⇒ zero pool ⇒ swap space
//!     ⇒ device ⇒ console ⇒ scheduler
//! ```
//!
//! The page busy lock is not a spin lock: it is taken (by try, or by
//! sleeping with nothing else held) under the object lock, and held across
//! I/O with no spin lock held. Every lock of this crate is a
//! [`sync::Mutex`], only ever taken with interrupts on (so a preempted
//! holder is waited for by spinners that are preempted in their turn),
//! never in an interrupt handler.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Fallible Arc allocation (`Arc::try_new`): the fault path never panics on a
// short heap.
#![feature(allocator_api)]

extern crate alloc;

pub mod contents;
pub mod counter;
pub mod failpoint;
pub mod fault;
pub mod invariants;
pub mod map;
#[cfg(all(test, loom))]
mod models;
pub mod object;
pub mod page;
pub mod pageout;
pub mod phys;
pub mod pmap;
pub mod queue;
pub mod radix;
pub mod sync;
pub mod witness;
pub mod zone;

/// Bytes in a page.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A named constant for debuggers. Rust constants leave nothing in the
/// debug information, so each module whose records a debugger decodes (the
/// bits of a word, the end of a list) lists what it needs in a
/// `DEBUG_CONSTANTS` static, which the gdb commands (`tools/gdb/`) read by
/// name. The values are the code's own, so they cannot drift from it.
/// `#[used]` keeps the statics in the kernel although no code reads them.
pub type DebugConstant = (&'static str, u64);

/// The page size, for debuggers.
#[used]
pub static DEBUG_CONSTANTS: [DebugConstant; 2] = [("PAGE_SIZE", PAGE_SIZE as u64), ("PAGE_SHIFT", PAGE_SHIFT as u64)];

/// The kernel's allocator, once the kernel has built it ([`phys::PhysMem`]).
static GLOBAL: spin::Once<phys::PhysMem> = spin::Once::new();

/// Installs the kernel's page allocator (once, at boot).
pub fn set_global(pm: phys::PhysMem) -> &'static phys::PhysMem {
    GLOBAL.call_once(|| pm)
}

/// The kernel's page allocator. Panics before [`set_global`].
pub fn global() -> &'static phys::PhysMem {
    GLOBAL.get().expect("the page allocator is not initialised")
}

/// The kernel's page allocator, if it exists yet.
pub fn try_global() -> Option<&'static phys::PhysMem> {
    GLOBAL.get()
}

/// The kernel's zone of radix-trie nodes (pages from [`global`]).
pub fn node_zone() -> &'static zone::NodeZone {
    static ZONE: spin::Once<zone::NodeZone> = spin::Once::new();
    ZONE.call_once(|| {
        zone::NodeZone::new(radix::Radix::<&'static page::Page>::NODE_SIZE, &zone::KernelPages, &failpoint::RADIX_NODE_ALLOC)
    })
}

/// The machine's mappings view, installed by the kernel's pmap.
static MAPPINGS: spin::Once<&'static dyn pmap::PageMappings> = spin::Once::new();

/// Installs the machine's [`pmap::PageMappings`] (once, at boot).
pub fn set_mappings(m: &'static dyn pmap::PageMappings) {
    MAPPINGS.call_once(|| m);
}

/// What the kernel's objects use: the global allocator, the kernel node zone,
/// the `page.alloc` fail point and the machine's mappings.
pub fn kernel_env() -> object::VmEnv {
    object::VmEnv {
        pm: global(),
        zone: node_zone(),
        page_alloc: &failpoint::PAGE_ALLOC,
        mappings: *MAPPINGS.get().unwrap_or(&(&pmap::NO_MAPPINGS as &'static dyn pmap::PageMappings)),
    }
}

/// Gives back what the allocator's order-0 cache and the node zone hold in
/// reserve, so that free-page counts compare exactly (tests, leak checks).
pub fn drain_caches() {
    if let Some(pm) = try_global() {
        pm.flush_queue_batches();
        pm.drain_cache();
        node_zone().drain();
        pm.drain_cache();
    }
}

/// Whether the kernel heap can hand out so many more bytes: installed by
/// the kernel (its heap grows from the page allocator); the host's heap
/// always can. Asked before allocations that cannot fail by themselves
/// (the nodes of a map's entry tree), which are refused instead.
static HEAP_ROOM: spin::Once<fn(usize) -> bool> = spin::Once::new();

/// Installs the kernel heap's [`heap_room`] (once, at boot).
pub fn set_heap_room(f: fn(usize) -> bool) {
    HEAP_ROOM.call_once(|| f);
}

/// True if the heap can hand out `bytes` more (see [`set_heap_room`]).
pub fn heap_room(bytes: usize) -> bool {
    HEAP_ROOM.get().is_none_or(|f| f(bytes))
}

/// Runs its argument with every other CPU parked (the kernel's
/// `with_other_cpus_parked`), or just runs it where there is no such thing.
static RUN_ALONE: spin::Once<fn(&mut dyn FnMut())> = spin::Once::new();

/// Installs the kernel's way to run code alone (once, at boot).
pub fn set_run_alone(f: fn(&mut dyn FnMut())) {
    RUN_ALONE.call_once(|| f);
}

/// Runs `f` while no other CPU runs a thread: for the in-kernel tests
/// that count the allocator's pages exactly, which other CPUs' idle
/// zeroing and background threads would otherwise change under them.
pub fn run_alone<R>(f: impl FnOnce() -> R) -> R {
    let mut f = Some(f);
    let mut r = None;
    let mut call = || r = f.take().map(|f| f());
    match RUN_ALONE.get() {
        Some(run) => run(&mut call),
        None => call(),
    }
    r.expect("run_alone: the function ran")
}

/// How the VM sleeps on a channel (an address) while a condition holds,
/// and wakes its sleepers: installed by the kernel (`tsleep`/`wakeup`);
/// the host tests spin.
static SLEEP: spin::Once<(SleepFn, fn(usize))> = spin::Once::new();

/// Sleeps on a channel while a condition holds.
type SleepFn = fn(usize, &dyn Fn() -> bool);

/// Installs the kernel's sleep and wakeup (once, at boot).
pub fn set_sleep(sleep: fn(usize, &dyn Fn() -> bool), wakeup: fn(usize)) {
    SLEEP.call_once(|| (sleep, wakeup));
}

/// Sleeps on `chan` if `cond` holds (checked so that a wakeup between
/// the check and the sleep is not lost); returns when woken or at once.
/// Callers loop on their own condition.
pub fn sleep_on(chan: usize, cond: &dyn Fn() -> bool) {
    #[cfg(loom)]
    return sync::model::sleep_on(chan, cond);
    #[cfg(not(loom))]
    match SLEEP.get() {
        Some((sleep, _)) => sleep(chan, cond),
        None => sync::spin_hint(),
    }
}

/// Whether [`sleep_on`] really sleeps (the kernel's, or a model's), or
/// returns at once for its caller to spin (host tests).
pub fn sleep_installed() -> bool {
    cfg!(loom) || SLEEP.get().is_some()
}

/// Wakes every sleeper on `chan`.
pub fn wakeup(chan: usize) {
    #[cfg(loom)]
    return sync::model::wakeup(chan);
    #[cfg(not(loom))]
    if let Some((_, wake)) = SLEEP.get() {
        wake(chan);
    }
}

/// How the VM waits for memory or for a pager to retry: installed by the
/// kernel (wake the pageout daemon, sleep until pages are freed or a few
/// milliseconds pass). Returns false when the waiter should give up (its
/// process is being killed).
static VM_WAIT: spin::Once<fn() -> bool> = spin::Once::new();

/// Installs the kernel's wait for [`vm_wait`] (once, at boot).
pub fn set_vm_wait(f: fn() -> bool) {
    VM_WAIT.call_once(|| f);
}

/// Waits briefly for memory to be freed (FreeBSD's `vm_wait`), or for a
/// pager's resource to come free: milliseconds, not seconds (rule 8).
/// Returns false if the caller should stop waiting and fail.
pub fn vm_wait() -> bool {
    match VM_WAIT.get() {
        Some(f) => f(),
        None => {
            sync::spin_hint();
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DebugConstant;

    /// `n` steps in the ordinary host tests, `miri` under Miri, which runs
    /// code some thousand times slower: the same kinds of step, checked
    /// for undefined behaviour, in fewer rounds.
    pub(crate) const fn scaled(n: usize, miri: usize) -> usize {
        if cfg!(miri) { miri } else { n }
    }

    /// The property tests' configuration: `cases` random cases, or a few
    /// under Miri, where failures are not written to files either (Miri
    /// keeps the program from the host's files).
    pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
        let mut c = proptest::test_runner::Config { cases: scaled(cases as usize, 4) as u32, ..Default::default() };
        if cfg!(miri) {
            c.failure_persistence = None;
        }
        c
    }

    /// A debugger's table names every flag of `F` as `ty::NAME`, with its
    /// bits: a flag added later cannot be missed.
    pub(crate) fn assert_names_every_flag<F: bitflags::Flags>(ty: &str, table: &[DebugConstant])
    where
        F::Bits: Into<u64>,
    {
        for f in F::FLAGS {
            let name = alloc::format!("{ty}::{}", f.name());
            assert!(table.contains(&(name.as_str(), f.value().bits().into())), "{name} is missing from the debugger's constants");
        }
    }
}

//! The pageout daemon and the laundry thread (FreeBSD's `vm_pageout` and
//! its laundry worker), over the page protocol of `vm::pageout`.
//!
//! Two free-page levels drive them (set by [`init`] from the memory size):
//!
//! - below the *target*, an allocation wakes the daemon, which frees clean
//!   inactive pages, refills the inactive queue from the active one, and
//!   hands dirty pages to the laundry thread;
//! - below the *reserve*, pages for objects are not handed out at all (the
//!   rest is for the kernel's page tables, trie nodes and I/O buffers, which
//!   the pageout path itself needs): a fault waits in [`vm_wait`] for the
//!   daemon instead of failing.
//!
//! The laundry thread writes dirty pages out in clusters: anonymous memory
//! to swap through the swap pager, file pages to their file through the
//! vnode pager. The daemon never waits for those writes (they are the
//! laundry thread's), so it keeps freeing clean pages meanwhile.
//!
//! When memory stays short and nothing can be freed or written (no swap,
//! or swap full), the daemon kills the process with the largest resident
//! set, with a message saying so; the kernel and the other processes run on.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vm::page::Queue;
use vm::pageout::{self, PassStats};

use crate::kern::{sched, time};

/// Someone needs pages: set by allocations below the target. (A)
static NEEDED: AtomicBool = AtomicBool::new(false);
/// Sleep channels: the daemon, the laundry thread, and waiters for free pages.
static DAEMON_CHAN: u8 = 0;
static LAUNDRY_CHAN: u8 = 0;
static FREE_CHAN: u8 = 0;
static NAP_CHAN: u8 = 0;

fn chan(c: &'static u8) -> usize {
    c as *const u8 as usize
}

/// What the daemon and the laundry have done, for the benchmark, the tests
/// and the debugger. (A)
pub struct Counters {
    pub passes: AtomicU64,
    pub freed: AtomicU64,
    pub reactivated: AtomicU64,
    pub deactivated: AtomicU64,
    pub laundered: AtomicU64,
    pub written: AtomicU64,
    pub writes: AtomicU64,
    pub write_failed: AtomicU64,
    pub oom_kills: AtomicU64,
    /// Pages the kernel heap gave back at the daemon's request.
    pub heap_reclaimed: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    passes: AtomicU64::new(0),
    freed: AtomicU64::new(0),
    reactivated: AtomicU64::new(0),
    deactivated: AtomicU64::new(0),
    laundered: AtomicU64::new(0),
    written: AtomicU64::new(0),
    writes: AtomicU64::new(0),
    write_failed: AtomicU64::new(0),
    oom_kills: AtomicU64::new(0),
    heap_reclaimed: AtomicU64::new(0),
};

fn count(st: &PassStats) {
    let c = &COUNTERS;
    c.freed.fetch_add(st.freed, Ordering::Relaxed);
    c.reactivated.fetch_add(st.reactivated, Ordering::Relaxed);
    c.deactivated.fetch_add(st.deactivated, Ordering::Relaxed);
    c.laundered.fetch_add(st.to_laundry, Ordering::Relaxed);
    c.written.fetch_add(st.written, Ordering::Relaxed);
    c.writes.fetch_add(st.writes, Ordering::Relaxed);
    c.write_failed.fetch_add(st.write_failed, Ordering::Relaxed);
}

/// How long the daemon sleeps when nobody asks for pages, in ticks.
const IDLE_TICKS: u64 = 100;
/// How long memory may stay below the reserve with nothing freed or
/// written before the out-of-memory kill, in ticks: with swap full (or
/// none), and whatever the swap (everything wired, every write failing).
const OOM_TICKS: u64 = time::HZ / 2;
const STUCK_TICKS: u64 = 10 * time::HZ;
/// Swap with fewer free blocks than this counts as full.
const SWAP_LOW: u64 = 4 * vm::pageout::CLUSTER as u64;

/// What the pageout threads need of processes, which are above them:
/// given by [`init`].
pub struct ProcessOps {
    /// Whether the current thread's process has a signal to act on (a
    /// wait for memory then ends, so that a killed process can go).
    pub signal_pending: fn() -> bool,
    /// Kills the process with the largest resident set, saying why (the
    /// memory situation, given); false when there is none to kill.
    pub kill_largest: fn(core::fmt::Arguments) -> bool,
}

static OPS: spin::Once<ProcessOps> = spin::Once::new();

fn ops() -> &'static ProcessOps {
    OPS.get().expect("pageout used before init")
}

/// Sets the free-page levels, installs the allocator's wakeup and the
/// fault path's wait, and starts the two threads.
pub fn init(ops: ProcessOps) {
    OPS.call_once(|| ops);
    let pm = vm::global();
    let pages = pm.free_count();
    let reserve = (pages / 128).max(64);
    pm.levels.reserve.store(reserve, Ordering::Relaxed);
    pm.levels.target.store(reserve * 4, Ordering::Relaxed);
    vm::phys::set_pageout_wakeup(|| NEEDED.store(true, Ordering::Release));
    vm::set_vm_wait(vm_wait);
    match (sched::spawn_detached("pagedaemon", daemon), sched::spawn_detached("laundry", laundry)) {
        // Their heap allocations may take the reserve (as FreeBSD's
        // pagedaemon's do): they free memory, and what they need to do it
        // (a swap block record, a slab of the heap for one) must not wait
        // for memory to be freed by themselves.
        (Some(d), Some(l)) => assert!(crate::kern::heap::let_use_reserve(d) && crate::kern::heap::let_use_reserve(l)),
        _ => panic!("cannot start the pageout threads"),
    }
    log::info!(
        "pageout: {} pages free; reserve {reserve}, target {}; swap {}",
        pages,
        reserve * 4,
        crate::mm::swap::swap().map_or(0, |s| s.pages())
    );
}

fn levels() -> (u64, u64, u64) {
    let pm = vm::global();
    (pm.free_count(), pm.levels.reserve.load(Ordering::Relaxed), pm.levels.target.load(Ordering::Relaxed))
}

/// The fault path's wait for memory (and for a pager to come free): wakes
/// the daemon and sleeps until pages are freed, at most a tenth of a
/// second; without a shortage, just a moment. False when the waiting
/// process is being killed.
fn vm_wait() -> bool {
    if (ops().signal_pending)() {
        return false;
    }
    let (free, reserve, target) = levels();
    if free >= target {
        // Not a shortage (a fail point, or a pager's lock): a moment.
        sched::yield_now();
        time::wait_a_moment();
    } else {
        // Until free pages are comfortably above the reserve again (each
        // daemon pass wakes us to look), a tenth of a second at most.
        let enough = comfortable(reserve, target);
        let deadline = time::ticks() + IDLE_TICKS;
        while levels().0 < enough && time::ticks() < deadline && !(ops().signal_pending)() {
            NEEDED.store(true, Ordering::Release);
            sched::wakeup(chan(&DAEMON_CHAN));
            // (The condition runs under the scheduler's lock with
            // interrupts off: it may take no other lock. A wakeup missed
            // before the sleep costs one daemon pass, which wakes us too.)
            sched::sleep_until(chan(&FREE_CHAN), deadline, || true);
        }
    }
    !(ops().signal_pending)()
}

/// Free pages comfortably above the reserve: what a waiting fault waits
/// for, and what counts as the daemon getting somewhere.
fn comfortable(reserve: u64, target: u64) -> u64 {
    reserve + (target - reserve) / 4
}

/// How long a shortage has gone without progress: the daemon's out-of-memory
/// clock. It runs only while memory is short. A shortage starts the clock
/// afresh, however long the daemon slept before it; were the clock kept
/// from the last progress of the previous shortage, the first pass after a
/// quiet spell (before the laundry thread has even been woken) would find
/// the limit long passed and kill a process with swap to spare.
struct Watch {
    /// Whether a shortage is being timed.
    short: bool,
    /// When the current shortage last saw progress, or began.
    progress_at: u64,
}

/// What the daemon does after a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Keep going.
    Wait,
    /// Out of memory and swap (or no swap): kill.
    Kill,
    /// Nothing written for this many ticks with swap free: report, kill.
    Stuck(u64),
}

impl Watch {
    fn new() -> Watch {
        Watch { short: false, progress_at: 0 }
    }

    /// Memory is not short: no shortage is being timed.
    fn no_shortage(&mut self) {
        self.short = false;
    }

    /// A pass begins at `now`, memory being short: the clock starts if the
    /// shortage is new.
    fn begin(&mut self, now: u64) {
        if !self.short {
            self.short = true;
            self.progress_at = now;
        }
    }

    /// The verdict on a pass at `now` during a shortage.
    fn pass(&mut self, now: u64, progress: bool, swap_full: bool) -> Verdict {
        if progress {
            self.progress_at = now;
            return Verdict::Wait;
        }
        let waited = now.saturating_sub(self.progress_at);
        let verdict = if swap_full && waited >= OOM_TICKS {
            Verdict::Kill
        } else if waited >= STUCK_TICKS {
            if swap_full { Verdict::Kill } else { Verdict::Stuck(waited) }
        } else {
            return Verdict::Wait;
        };
        // The victim's pages take a moment to come free: time afresh.
        self.progress_at = now;
        verdict
    }
}

/// The pageout daemon's loop.
fn daemon() {
    let pm = vm::global();
    let mappings = vm::kernel_env().mappings;
    let mut watch = Watch::new();
    // Pages written by the time of the last pass.
    let mut last_written = 0;
    loop {
        let (free, _, target) = levels();
        if free >= target && !NEEDED.load(Ordering::Acquire) {
            sched::sleep_until(chan(&DAEMON_CHAN), time::ticks() + IDLE_TICKS, || !NEEDED.load(Ordering::Acquire));
        }
        NEEDED.store(false, Ordering::Release);
        let (free, reserve, target) = levels();
        if free >= target {
            watch.no_shortage();
            sched::wakeup(chan(&FREE_CHAN));
            continue;
        }
        COUNTERS.passes.fetch_add(1, Ordering::Relaxed);
        watch.begin(time::ticks());
        // The kernel heap's empty slabs first (FreeBSD's uma_reclaim in
        // vm_pageout_lowmem): free pages that cost nothing to give back.
        let reclaimed = crate::kern::heap::reclaim() as u64;
        COUNTERS.heap_reclaimed.fetch_add(reclaimed, Ordering::Relaxed);
        let free = free + reclaimed;
        if free >= target {
            watch.no_shortage();
            sched::wakeup(chan(&FREE_CHAN));
            continue;
        }
        let shortage = target - free + vm::pageout::CLUSTER as u64;
        // Keep the inactive queue long enough to choose from: age the
        // active queue into it.
        let inactive = pm.queue_count(Queue::Inactive);
        if inactive < 2 * shortage {
            count(&pageout::scan_active(pm, mappings, 2 * shortage));
        }
        let st = pageout::scan_inactive(pm, mappings, shortage);
        count(&st);
        if pm.queue_count(Queue::Laundry) > 0 {
            sched::wakeup(chan(&LAUNDRY_CHAN));
        }
        sched::wakeup(chan(&FREE_CHAN));
        let (free, ..) = levels();
        // Progress: memory comfortably above the reserve again, or pages
        // written out. Freeing clean pages that are faulted back at once (a
        // program's text, thrashing) is not.
        let written = COUNTERS.written.load(Ordering::Relaxed);
        let progress = free >= comfortable(reserve, target) || written != last_written;
        last_written = written;
        let now = time::ticks();
        let swap_full = crate::mm::swap::swap().is_none_or(|s| s.avail() < SWAP_LOW);
        match watch.pass(now, progress, swap_full) {
            Verdict::Wait => {}
            Verdict::Kill => oom_kill(),
            Verdict::Stuck(waited) => {
                // Nothing written for that long with swap to spare: the
                // laundry is stuck somewhere. Where, is worth a report.
                crate::kprintln!("pageout: nothing written for {} ms with swap free; the threads:", waited * 1000 / time::HZ);
                sched::write_threads(&mut crate::kern::serial::panic_writer());
                oom_kill();
            }
        }
        // Let the laundry and the waiters run before the next pass; after a
        // pass that freed nothing, a nap that new requests do not cut short.
        if progress {
            sched::sleep_until(chan(&DAEMON_CHAN), now + 1, || !NEEDED.load(Ordering::Acquire));
        } else {
            sched::sleep_until(chan(&NAP_CHAN), now + 2, || true);
        }
    }
}

/// Holds on the laundry thread ([`hold_laundry`]), and whether it is
/// writing now. A test of the swap space that counts its blocks and the
/// disk's requests holds it, so that no page-out comes in between on
/// another CPU. (A; SeqCst, both: the holder raises HOLDS then reads
/// LAUNDERING, the laundry raises LAUNDERING then reads HOLDS, and
/// of two such store-load pairs at least one must see the other's store.)
static HOLDS: AtomicU64 = AtomicU64::new(0);
static LAUNDERING: AtomicBool = AtomicBool::new(false);

/// The laundry thread held off while this lives: see [`hold_laundry`].
pub struct LaundryHold(());

/// Keeps the laundry thread from writing until the value is dropped, once
/// the write under way (if one is) has ended. Memory short meanwhile is
/// left to the daemon's clean pages; it is for tests, which hold it for
/// a moment.
pub fn hold_laundry() -> LaundryHold {
    HOLDS.fetch_add(1, Ordering::SeqCst);
    while LAUNDERING.load(Ordering::SeqCst) {
        sched::yield_now();
    }
    LaundryHold(())
}

impl Drop for LaundryHold {
    fn drop(&mut self) {
        HOLDS.fetch_sub(1, Ordering::SeqCst);
        sched::wakeup(chan(&LAUNDRY_CHAN));
    }
}

/// The laundry thread's loop: writes dirty pages out while memory is short.
fn laundry() {
    let pm = vm::global();
    let mappings = vm::kernel_env().mappings;
    loop {
        // Woken by the daemon when there is laundry; the condition may take
        // no lock (see vm_wait), so it is checked below instead.
        sched::sleep_until(chan(&LAUNDRY_CHAN), time::ticks() + IDLE_TICKS, || true);
        loop {
            let (free, _, target) = levels();
            if free >= target || pm.queue_count(Queue::Laundry) == 0 {
                break;
            }
            LAUNDERING.store(true, Ordering::SeqCst);
            if HOLDS.load(Ordering::SeqCst) != 0 {
                LAUNDERING.store(false, Ordering::SeqCst);
                break;
            }
            let want = (target - free).max(vm::pageout::CLUSTER as u64);
            let st = pageout::scan_laundry(pm, mappings, want, &crate::mm::swap::new_pager);
            LAUNDERING.store(false, Ordering::SeqCst);
            count(&st);
            sched::wakeup(chan(&FREE_CHAN));
            if st.written == 0 {
                break;
            }
        }
    }
}

/// Logs the memory situation when a fault gives up for want of memory.
pub fn report_shortage() {
    let (free, reserve, target) = levels();
    let (used, size) = crate::kern::heap::usage();
    log::warn!(
        "pageout: a fault ran out of memory: {free} pages free (reserve {reserve}, target {target}); heap {used} bytes used, {size} free; swap {} blocks free",
        crate::mm::swap::swap().map_or(0, |s| s.avail())
    );
}

/// Out of memory with nothing to free: kills the process with the largest
/// resident set.
fn oom_kill() {
    let (free, reserve, _) = levels();
    let (avail, pages) = crate::mm::swap::swap().map_or((0, 0), |s| (s.avail(), s.pages()));
    let why = format_args!("{free} free, reserve {reserve}; swap {avail} of {pages} pages free");
    if (ops().kill_largest)(why) {
        COUNTERS.oom_kills.fetch_add(1, Ordering::Relaxed);
    } else {
        log::warn!("pageout: out of memory, and no process to kill");
    }
}

mod tests;

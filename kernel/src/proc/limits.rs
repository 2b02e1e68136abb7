//! Resource limits (`getrlimit`, `setrlimit`, `prlimit64`) with Linux's
//! numbers and defaults, and the system-wide bound on processes.

use crate::kern::sched;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering;

use super::layout::{PAGE, STACK_LIMIT};

/// Resource numbers (`RLIMIT_*`), indices into [`Process::limits`].
pub const RLIMIT_STACK: usize = 3;
pub const RLIMIT_NPROC: usize = 6;
pub const RLIMIT_NOFILE: usize = 7;
pub const RLIMIT_MEMLOCK: usize = 8;
pub const RLIMIT_AS: usize = 9;
pub const RLIMIT_SIGPENDING: usize = 11;
pub const RLIMIT_MSGQUEUE: usize = 12;
pub const RLIM_NLIMITS: usize = 16;
pub const RLIM_INFINITY: u64 = u64::MAX;
/// The most descriptors `RLIMIT_NOFILE` may allow (Linux's `fs.nr_open`).
pub const NR_OPEN: u64 = 1 << 20;

/// One resource limit: the soft limit, enforced, and the hard one, the
/// most the soft may be raised to (`cur <= max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub cur: u64,
    pub max: u64,
}

/// Linux's limits for init (`INIT_RLIMITS`, and `fork_init`'s process
/// count, which follows memory: half the threads whose kernel stacks would
/// take an eighth of it).
pub fn default_limits() -> [Rlimit; RLIM_NLIMITS] {
    let inf = Rlimit { cur: RLIM_INFINITY, max: RLIM_INFINITY };
    let mut l = [inf; RLIM_NLIMITS];
    // Linux's count of threads: what `max_processes` allows.
    let memory = vm::try_global().map_or(0, |pm| pm.pages().len() as u64 * PAGE);
    let threads = (memory / (8 * sched::STACK_SIZE as u64)).max(20);
    l[RLIMIT_STACK] = Rlimit { cur: STACK_LIMIT, max: RLIM_INFINITY };
    l[4 /* RLIMIT_CORE */] = Rlimit { cur: 0, max: RLIM_INFINITY };
    l[RLIMIT_NPROC] = Rlimit { cur: threads / 2, max: threads / 2 };
    l[RLIMIT_NOFILE] = Rlimit { cur: 1024, max: 4096 };
    l[RLIMIT_MEMLOCK] = Rlimit { cur: 8 << 20, max: 8 << 20 };
    l[RLIMIT_SIGPENDING] = Rlimit { cur: threads / 2, max: threads / 2 };
    l[RLIMIT_MSGQUEUE] = Rlimit { cur: 819_200, max: 819_200 };
    l[13 /* RLIMIT_NICE */] = Rlimit { cur: 0, max: 0 };
    l[14 /* RLIMIT_RTPRIO */] = Rlimit { cur: 0, max: 0 };
    l
}

/// Processes in existence, ended ones not yet waited for included. (A)
pub(super) static PROCESS_COUNT: AtomicUsize = AtomicUsize::new(0);

/// A process's place in [`PROCESS_COUNT`], given back when its record is
/// freed: once its parent has waited for it.
pub(super) struct Slot;

impl Slot {
    /// A place, or None if `limit` processes exist already. Taken by one
    /// compare-and-swap, so that two forks at once cannot both take the
    /// last place, and the count is never seen above the limit (not even
    /// for a moment, by a CPU that reads it meanwhile). Relaxed: the count
    /// guards no other data.
    pub(super) fn take(limit: usize) -> Option<Slot> {
        let n = PROCESS_COUNT.try_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).ok()?;
        PROCESS_PEAK.fetch_max(n + 1, Ordering::Relaxed);
        Some(Slot)
    }

    /// A place whatever the count: for the processes the kernel starts.
    pub(super) fn always() -> Slot {
        let n = PROCESS_COUNT.fetch_add(1, Ordering::Relaxed);
        PROCESS_PEAK.fetch_max(n + 1, Ordering::Relaxed);
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        PROCESS_COUNT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many processes fork makes at most: as Linux bounds its threads
/// (`kernel.threads-max`), so that kernel stacks take at most an eighth of
/// memory. A fork bomb then gets EAGAIN while the machine still has memory
/// for everything else (at 128 MiB, 512 processes; Linux allows about 530).
/// A test may lower it ([`PROCESS_LIMIT`]).
pub fn max_processes() -> usize {
    match PROCESS_LIMIT.load(Ordering::Relaxed) {
        0 => {
            let memory = vm::global().pages().len() * PAGE as usize;
            (memory / (8 * sched::STACK_SIZE)).max(20)
        }
        n => n,
    }
}

/// The process limit when not 0, else the one memory gives. (A)
pub(super) static PROCESS_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Processes in existence (ended ones not yet waited for included).
pub fn process_count() -> usize {
    PROCESS_COUNT.load(Ordering::Relaxed)
}

/// The most processes that existed at once since the last
/// [`reset_process_peak`]: kept where the count changes, since a reader
/// polling the count from another CPU can miss the moment. (A; Relaxed
/// as the count.)
static PROCESS_PEAK: AtomicUsize = AtomicUsize::new(0);

/// See [`PROCESS_PEAK`].
pub fn process_peak() -> usize {
    PROCESS_PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak from the count now.
pub fn reset_process_peak() {
    PROCESS_PEAK.store(process_count(), Ordering::Relaxed);
}

/// Heap a fork or a new thread leaves free at least: a kernel stack and a margin for the
/// allocations that cannot fail (entry-tree nodes).
pub(super) const FORK_HEAP_RESERVE: usize = crate::kern::sched::STACK_SIZE + 128 * 1024;

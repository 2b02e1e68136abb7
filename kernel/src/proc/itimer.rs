//! The real-time interval timer (`setitimer(ITIMER_REAL)`, `getitimer`,
//! `alarm`): SIGALRM when a process's timer runs out, and again every
//! interval if it has one. One kernel thread keeps every process's timer:
//! it sleeps until the earliest deadline, signals the processes whose
//! timers have run out, and sets each again by its interval.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use alloc::sync::Arc;
use x86_64::instructions::interrupts::without_interrupts;

use super::sigframe::{SI_KERNEL, SigInfo};
use super::signal::{SIGALRM, send_signal_info};
use super::{Process, TABLE};
use crate::kern::{sched, time};

/// A process's real-time timer. (A: `deadline` and `interval` are set by
/// the process's `setitimer` and read and moved on by the timer thread;
/// each is a whole value on its own, and a deadline moved on by the
/// thread is a compare-exchange against the one it read, so a
/// `setitimer` meanwhile wins.)
#[derive(Default)]
pub struct RealTimer {
    /// When it runs out, on the monotonic clock in ns; 0 when off.
    deadline: AtomicU64,
    /// Set again by this much each time it runs out; 0: once.
    interval: AtomicU64,
}

impl RealTimer {
    /// What is left and the interval, in ns (0 left: off).
    pub fn get(&self) -> (u64, u64) {
        let d = self.deadline.load(Ordering::Acquire);
        let left = if d == 0 { 0 } else { d.saturating_sub(time::monotonic_ns()).max(1) };
        (left, self.interval.load(Ordering::Acquire))
    }

    /// Arms it to run out in `value` ns (0: disarms) and then every
    /// `interval` ns; returns what `get` said before.
    pub fn set(&self, value: u64, interval: u64) -> (u64, u64) {
        let old = self.get();
        self.interval.store(interval, Ordering::Release);
        let deadline = if value == 0 { 0 } else { time::monotonic_ns().saturating_add(value) };
        // Release: pairs with the thread's Acquire of the deadline, which
        // then sees the interval stored above.
        self.deadline.store(deadline, Ordering::Release);
        kick();
        old
    }
}

/// Where the timer thread sleeps.
static CHAN: u8 = 0;
/// Set when a timer changed: the thread looks again before it sleeps. (A;
/// SeqCst: the thread's sleep condition reads it under the scheduler's
/// lock, which the wakeup after the store takes too.)
static KICKED: AtomicBool = AtomicBool::new(false);

fn chan() -> usize {
    &CHAN as *const u8 as usize
}

fn kick() {
    KICKED.store(true, Ordering::SeqCst);
    sched::wakeup(chan());
}

/// Starts the timer thread (at boot).
pub fn start() {
    if sched::spawn("itimer", run).is_none() {
        log::warn!("itimer: no thread: interval timers will not run out");
    }
}

/// Most processes signalled in one pass (more wait for the next, at once).
const BATCH: usize = 32;

fn run() {
    loop {
        KICKED.store(false, Ordering::SeqCst);
        let now = time::monotonic_ns();
        let mut due: [Option<Arc<Process>>; BATCH] = [const { None }; BATCH];
        let mut n = 0;
        let mut next = u64::MAX;
        without_interrupts(|| {
            for p in TABLE.lock().processes.values() {
                let d = p.itimer.deadline.load(Ordering::Acquire);
                if d != 0 && d <= now && n < BATCH {
                    due[n] = Some(p.clone());
                    n += 1;
                } else if d != 0 {
                    next = next.min(d);
                }
            }
        });
        for p in due.iter().flatten() {
            let t = &p.itimer;
            let d = t.deadline.load(Ordering::Acquire);
            if d == 0 || d > now {
                continue;
            }
            let interval = t.interval.load(Ordering::Acquire);
            // Runs that were missed are not made up: the next one is the
            // first still ahead.
            let again = if interval == 0 { 0 } else { d + interval * ((now - d) / interval + 1) };
            if t.deadline.compare_exchange(d, again, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                send_signal_info(p, SIGALRM, SigInfo { code: SI_KERNEL, ..SigInfo::default() });
                if again != 0 {
                    next = next.min(again);
                }
            }
        }
        drop(due);
        if n == BATCH {
            continue;
        }
        let wake = if next == u64::MAX { u64::MAX } else { time::ticks() + (next - now).div_ceil(1_000_000) };
        sched::sleep_until(chan(), wake, || !KICKED.load(Ordering::SeqCst));
    }
}

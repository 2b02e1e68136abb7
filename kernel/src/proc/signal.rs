//! Signals: sending, what is pending and deliverable, acting on it on the
//! way back to user mode (a handler's frame is `sigframe.rs`), faults as
//! signals, and the out-of-memory kill.

use crate::kern::sched;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

pub use super::sigframe::SigAction;
use super::sigframe::{SI_KERNEL, SigInfo};
use super::{INIT, PENDING_ANY, Process, Thread, all, current, current_thread};

pub const SIGILL: u8 = 4;
pub const SIGTRAP: u8 = 5;
pub const SIGBUS: u8 = 7;
pub const SIGFPE: u8 = 8;
pub const SIGKILL: u8 = 9;
pub const SIGSEGV: u8 = 11;
pub const SIGALRM: u8 = 14;
pub const SIGCHLD: u8 = 17;
pub const SIGCONT: u8 = 18;
pub const SIGSTOP: u8 = 19;
pub const SIGTSTP: u8 = 20;
pub const SIGTTIN: u8 = 21;
pub const SIGTTOU: u8 = 22;
pub const SIGURG: u8 = 23;
pub const SIGWINCH: u8 = 28;
/// Signals are 1..=NSIG.
pub const NSIG: u8 = 64;

/// `SIG_DFL` and `SIG_IGN` as handler values.
pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

// ---- signals ---------------------------------------------------------------

/// What a signal does to a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Disposition {
    Ignore,
    Terminate,
    /// Its handler runs.
    Handle,
}

pub(super) fn disposition(p: &Process, sig: u8) -> Disposition {
    if sig == SIGKILL {
        return Disposition::Terminate;
    }
    let handler = p.actions.lock()[sig as usize - 1].handler;
    if handler == SIG_IGN {
        return Disposition::Ignore;
    }
    if handler != SIG_DFL && sig != SIGSTOP {
        return Disposition::Handle;
    }
    match sig {
        SIGCHLD | SIGCONT | SIGURG | SIGWINCH => Disposition::Ignore,
        // No job control: stopping is not supported, so the stop signals are
        // dropped (SIGSTOP too, which cannot be caught or ignored).
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => {
            log::warn!("pid {}: stop signal {sig} dropped: no job control", p.pid);
            Disposition::Ignore
        }
        // No core dumps: the default action of every other signal ends
        // the process.
        _ => Disposition::Terminate,
    }
}

/// Whether `p` has a handler for `sig`.
pub fn handles(p: &Process, sig: u8) -> bool {
    (1..=NSIG).contains(&sig) && disposition(p, sig) == Disposition::Handle
}

/// True if `p` is init. A program's signals to init are dropped unless init
/// has a handler for them (Linux's SIGNAL_UNKILLABLE): init ends only by
/// itself.
pub fn is_init(p: &Arc<Process>) -> bool {
    INIT.lock().upgrade().is_some_and(|i| Arc::ptr_eq(&i, p))
}

/// Sends signal `sig` (1..=64) to `p`, from the kernel.
pub fn send_signal(p: &Arc<Process>, sig: u8) {
    send_signal_info(p, sig, SigInfo { code: SI_KERNEL, ..SigInfo::default() });
}

/// Sets `sig` in the pending set `word`, whose infos are `infos`, with
/// `info` unless it was pending already (a standard signal does not
/// queue). Both under the infos' lock, so that a taker finds the info of
/// the bit it clears.
fn mark(word: &AtomicU64, infos: &Mutex<[SigInfo; NSIG as usize]>, sig: u8, info: SigInfo) {
    let bit = 1u64 << (sig - 1);
    let mut infos = infos.lock();
    if word.load(Ordering::SeqCst) & bit == 0 {
        infos[sig as usize - 1] = info;
    }
    if word.fetch_or(bit, Ordering::SeqCst) == 0 {
        PENDING_ANY.fetch_add(1, Ordering::SeqCst);
    }
}

/// Clears `sig` in the pending set `word`.
fn unmark(word: &AtomicU64, sig: u8) {
    let bit = 1u64 << (sig - 1);
    if word.fetch_and(!bit, Ordering::SeqCst) == bit {
        PENDING_ANY.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Empties the pending set `word` (a thread's or a process's, at its end).
pub(super) fn clear_pending(word: &AtomicU64) {
    if word.swap(0, Ordering::SeqCst) != 0 {
        PENDING_ANY.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends signal `sig` (1..=64) to `p`, its handler to be told `info`: any
/// of its threads that does not block it may take it, and one that can is
/// woken.
pub fn send_signal_info(p: &Arc<Process>, sig: u8, info: SigInfo) {
    if sig == 0 || sig > NSIG || p.status().is_some() || disposition(p, sig) == Disposition::Ignore {
        return;
    }
    mark(&p.pending, &p.sig_info, sig, info);
    wake_taker(p, 1 << (sig - 1));
}

/// Sends signal `sig` to thread `t` alone (`tkill`, `tgkill`).
pub fn send_thread_signal(t: &Arc<Thread>, sig: u8, info: SigInfo) {
    let p = &t.process;
    if sig == 0 || sig > NSIG || p.status().is_some() || disposition(p, sig) == Disposition::Ignore {
        return;
    }
    mark(&t.pending, &t.sig_info, sig, info);
    sched::wake_thread(t.sched_id());
}

/// Wakes a thread of `p` that may take one of the signals `bits`: the
/// current thread if it is one of `p`'s and may (it acts on it on its way
/// out), else the first that does not block one. The others sleep on.
pub(super) fn wake_taker(p: &Process, bits: u64) {
    let me = sched::current();
    without_interrupts(|| {
        let threads = p.threads.lock();
        let takes = |t: &&Arc<Thread>| bits & (!t.blocked.load(Ordering::SeqCst) | UNBLOCKABLE) != 0;
        if threads.iter().any(|t| t.sched_id() == me && takes(&t)) {
            return;
        }
        if let Some(t) = threads.iter().find(takes) {
            sched::wake_thread(t.sched_id());
        }
    });
}

/// Ends every thread of `t`'s process but `t`: each gets a SIGKILL of its
/// own, acted on at its next return to user mode (or at once from an
/// interruptible sleep). No info is recorded: a kill has no handler.
pub(super) fn kill_siblings(t: &Thread) {
    let bit = 1u64 << (SIGKILL - 1);
    without_interrupts(|| {
        for s in t.process.threads.lock().iter().filter(|s| !core::ptr::eq(&***s, t)) {
            if s.pending.fetch_or(bit, Ordering::SeqCst) == 0 {
                PENDING_ANY.fetch_add(1, Ordering::SeqCst);
            }
            sched::wake_thread(s.sched_id());
        }
    });
}

impl Process {
    /// Signals sent to the process and not yet acted on (bit n - 1 for
    /// signal n).
    pub fn pending_signals(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }
}

impl Thread {
    /// Signals pending for the thread: its own and its process's.
    pub fn pending_signals(&self) -> u64 {
        self.pending.load(Ordering::SeqCst) | self.process.pending.load(Ordering::SeqCst)
    }

    /// Sets the signal mask to `mask` (SIGKILL and SIGSTOP stay
    /// unblocked); a process-wide signal it now blocks is handed to a
    /// thread that does not (Linux's retarget).
    pub fn set_blocked(&self, mask: u64) {
        let mask = mask & !UNBLOCKABLE;
        let old = self.blocked.swap(mask, Ordering::SeqCst);
        let newly = mask & !old & self.process.pending.load(Ordering::SeqCst);
        if newly != 0 {
            wake_taker(&self.process, newly);
        }
    }
}

/// Takes signal `sig` off `t`'s pending sets (its own first, as Linux
/// dequeues) and returns what its handler is told.
pub(super) fn take_pending(t: &Thread, sig: u8) -> SigInfo {
    let bit = 1u64 << (sig - 1);
    let (word, infos) = if t.pending.load(Ordering::SeqCst) & bit != 0 {
        (&t.pending, &t.sig_info)
    } else {
        (&t.process.pending, &t.process.sig_info)
    };
    let infos = infos.lock();
    let info = infos[sig as usize - 1];
    unmark(word, sig);
    info
}

/// Whether `p` is on its way out: a SIGKILL pending, or its threads told
/// to end (`exit_group`, a fatal signal, an execve ending the others is
/// not one). Linux's `task_will_free_mem`, for `process_mrelease`.
pub fn dying(p: &Process) -> bool {
    p.pending.load(Ordering::SeqCst) & (1 << (SIGKILL - 1)) != 0 || p.group_exit.load(Ordering::SeqCst) != 0
}

/// SIGKILL and SIGSTOP, which no mask blocks.
pub const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

/// Signals `t` may act on now: pending for it or its process and not
/// blocked (SIGKILL never is).
pub(super) fn deliverable(t: &Thread) -> u64 {
    let kill = 1u64 << (SIGKILL - 1);
    t.pending_signals() & (!t.blocked.load(Ordering::SeqCst) | kill)
}

/// Whether `t` has a signal to act on (reads atomics only: usable in a
/// sleep's condition, under the scheduler's lock).
pub fn signal_pending_in(t: &Thread) -> bool {
    PENDING_ANY.load(Ordering::Relaxed) != 0 && deliverable(t) != 0
}

/// True if the current thread has a signal to act on (a sleeping system
/// call then returns EINTR).
pub fn signal_pending() -> bool {
    PENDING_ANY.load(Ordering::Relaxed) != 0 && current_thread().is_some_and(|t| deliverable(&t) != 0)
}

/// Why [`wait_for_signals`] returned without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigWait {
    /// The deadline passed.
    TimedOut,
    /// A signal outside the set is to be acted on.
    Interrupted,
}

/// `rt_sigtimedwait`: waits until one of the signals `set` is pending for
/// the current thread or its process, takes it (no handler runs) and
/// returns it with its info; or until the monotonic clock reads `deadline`
/// ns. While it waits, the set is unblocked, so that a signal sent to the
/// process picks this thread; the mask is put back before it returns.
pub fn wait_for_signals(set: u64, deadline: Option<u64>) -> Result<(u8, SigInfo), SigWait> {
    let set = set & !UNBLOCKABLE;
    let Some(t) = current_thread() else { return Err(SigWait::Interrupted) };
    let mask = t.blocked.load(Ordering::SeqCst);
    t.set_blocked(mask & !set);
    let r = loop {
        let ready = t.pending_signals() & set;
        if ready != 0 {
            let sig = ready.trailing_zeros() as u8 + 1;
            break Ok((sig, take_pending(&t, sig)));
        }
        if deliverable(&t) & !set != 0 {
            break Err(SigWait::Interrupted);
        }
        let now = crate::kern::time::monotonic_ns();
        let ticks = match deadline {
            Some(d) if d <= now => break Err(SigWait::TimedOut),
            Some(d) => crate::kern::time::ticks() + (d - now).div_ceil(1_000_000),
            None => u64::MAX,
        };
        let chan = &*t as *const Thread as usize;
        sched::sleep_until(chan, ticks, || !signal_pending_in(&t));
    };
    t.set_blocked(mask);
    r
}

/// Drops pending signals that `p` now ignores (after `rt_sigaction`), its
/// threads' as well as its own.
pub fn discard_ignored(p: &Process) {
    let mut pending = p.pending.load(Ordering::SeqCst);
    p.each_thread(|t| pending |= t.pending.load(Ordering::SeqCst));
    for sig in 1..=NSIG {
        if pending & 1 << (sig - 1) == 0 || disposition(p, sig) != Disposition::Ignore {
            continue;
        }
        unmark(&p.pending, sig);
        p.each_thread(|t| unmark(&t.pending, sig));
    }
}

/// The current process's zombie child with `pid`, if any (kill on a zombie
/// succeeds and does nothing).
pub fn is_zombie_child(pid: u64) -> bool {
    current().is_some_and(|me| me.children.lock().iter().any(|c| c.pid == pid && c.status().is_some()))
}

/// Out of memory: kills the process with the largest resident set (init,
/// when it is init, last of all), saying so with `why`. False when there
/// is no process. (The pageout daemon's choice, given to it at boot.)
pub fn kill_largest(why: core::fmt::Arguments) -> bool {
    let is_init = |p: &Process| p.pid == 1 && p.name.lock().as_str() == "init";
    let Some(p) = all().into_iter().max_by_key(|p| (!is_init(p), p.resident_pages())) else { return false };
    crate::kprintln!(
        "pid {} ({}): killed: out of memory ({} resident pages; {why})",
        p.pid,
        p.name.lock().as_str(),
        p.resident_pages()
    );
    send_signal(&p, SIGKILL);
    true
}

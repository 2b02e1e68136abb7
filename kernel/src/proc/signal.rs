//! Signals: sending, what is pending and deliverable, acting on it on the
//! way back to user mode (a handler's frame is `sigframe.rs`), faults as
//! signals, and the out-of-memory kill.

use crate::kern::sched;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;

pub use super::sigframe::SigAction;
use super::sigframe::{SI_KERNEL, SigInfo};
use super::{INIT, PENDING_ANY, Process, all, current};

pub const SIGILL: u8 = 4;
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

/// Sends signal `sig` (1..=64) to `p`, its handler to be told `info`.
pub fn send_signal_info(p: &Arc<Process>, sig: u8, info: SigInfo) {
    if sig == 0 || sig > NSIG || p.status().is_some() || disposition(p, sig) == Disposition::Ignore {
        return;
    }
    {
        // The info is recorded before the bit is set: whoever sees the bit
        // finds it (both under this lock or after it).
        let mut infos = p.sig_info.lock();
        if p.pending.load(Ordering::SeqCst) & (1 << (sig - 1)) == 0 {
            infos[sig as usize - 1] = info;
        }
    }
    if p.pending.fetch_or(1 << (sig - 1), Ordering::SeqCst) == 0 {
        PENDING_ANY.fetch_add(1, Ordering::SeqCst);
    }
    sched::wake_thread(p.tid.load(Ordering::SeqCst));
}

impl Process {
    /// Signals sent and not yet acted on (bit n - 1 for signal n).
    pub fn pending_signals(&self) -> u64 {
        self.pending.load(Ordering::SeqCst)
    }
}

/// Takes signal `sig` off `p`'s pending set.
pub(super) fn take_pending(p: &Process, sig: u8) {
    let bit = 1u64 << (sig - 1);
    if p.pending.fetch_and(!bit, Ordering::SeqCst) == bit {
        PENDING_ANY.fetch_sub(1, Ordering::SeqCst);
    }
}

/// SIGKILL and SIGSTOP, which no mask blocks.
pub const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

pub(super) fn deliverable(p: &Process) -> u64 {
    let kill = 1u64 << (SIGKILL - 1);
    p.pending.load(Ordering::SeqCst) & (!p.blocked.load(Ordering::SeqCst) | kill)
}

pub(super) fn signal_pending_in(p: &Process) -> bool {
    PENDING_ANY.load(Ordering::Relaxed) != 0 && deliverable(p) != 0
}

/// True if the current process has a signal to act on (a sleeping system
/// call then returns EINTR).
pub fn signal_pending() -> bool {
    PENDING_ANY.load(Ordering::Relaxed) != 0 && current().is_some_and(|p| deliverable(&p) != 0)
}

/// Drops pending signals that `p` now ignores (after `rt_sigaction`).
pub fn discard_ignored(p: &Process) {
    for sig in 1..=NSIG {
        let bit = 1u64 << (sig - 1);
        if p.pending.load(Ordering::SeqCst) & bit != 0
            && disposition(p, sig) == Disposition::Ignore
            && p.pending.fetch_and(!bit, Ordering::SeqCst) == bit
        {
            PENDING_ANY.fetch_sub(1, Ordering::SeqCst);
        }
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

//! Acting on a signal: its handler run on the way back to user mode (the
//! frame is `sigframe.rs`), its default action, a fault turned into a
//! signal, and `rt_sigreturn`.

use core::sync::atomic::Ordering;

use x86_64::instructions::interrupts;

use super::exit::{exit_current, exit_thread, kill_current};
use super::sigframe::{SA_NODEFER, SA_RESETHAND, SA_RESTART, SI_KERNEL, SigAction, SigInfo, pop_frame, push_frame};
use super::signal::{Disposition, SIGSEGV, deliverable, disposition, take_pending};
use super::{PENDING_ANY, Status, Thread, current_pid, current_thread};
use crate::arch::trapframe::TrapFrame;
use crate::kern::sched;

/// Runs the handler for `sig` of `t` (the running thread): its frame on
/// the user stack, the registers of `tf` pointed at the handler, the mask
/// widened as the action says. A frame that cannot be written kills the
/// process with SIGSEGV, as on Linux. Runs with interrupts on: the frame's
/// pages may have to be faulted in (or read from swap).
fn run_handler(tf: &mut TrapFrame, t: &Thread, sig: u8, info: &SigInfo) {
    let p = &t.process;
    let act = p.actions.lock()[sig as usize - 1];
    // After rt_sigsuspend the frame saves the mask it replaced.
    let old = t.saved_mask.lock().take().unwrap_or_else(|| t.blocked.load(Ordering::SeqCst));
    let alt = *t.altstack.lock();
    let pushed = push_frame(tf, sig, &act, info, old, &alt);
    if pushed.is_err() {
        // Linux's force_sigsegv: SIGSEGV instead, unblocked, whose own
        // handler may still run (on its alternate stack, say) unless it
        // is the one whose frame failed.
        if sig == SIGSEGV {
            p.actions.lock()[SIGSEGV as usize - 1] = SigAction::default();
        }
        t.blocked.fetch_and(!(1 << (SIGSEGV - 1)), Ordering::SeqCst);
        if disposition(p, SIGSEGV) == Disposition::Handle {
            return run_handler(tf, t, SIGSEGV, &SigInfo { code: SI_KERNEL, ..SigInfo::default() });
        }
        kill_current(SIGSEGV, format_args!("signal {sig}'s frame could not be written"), tf.rsp, tf.rip)
    }
    let mut mask = old | act.mask;
    if act.flags & SA_NODEFER == 0 {
        mask |= 1 << (sig - 1);
    }
    t.set_blocked(mask);
    if act.flags & SA_RESETHAND != 0 {
        p.actions.lock()[sig as usize - 1] = SigAction::default();
    }
}

/// Acts on the current thread's pending signals, on its way back to user
/// mode with `tf`: runs the handler of the first one that has one (the
/// others wait for the next return), or ends the process by it. May be
/// called with interrupts off (at the end of an interrupt): they are on
/// while it acts, since the locks it takes are taken with them on
/// elsewhere, and are off again when it returns.
pub fn check_signals(tf: &mut TrapFrame) {
    if PENDING_ANY.load(Ordering::Relaxed) == 0 {
        return;
    }
    let were_on = interrupts::are_enabled();
    // The table's lock is taken with interrupts off in any case.
    let Some(t) = current_thread() else { return };
    let bits = deliverable(&t);
    if bits == 0 {
        return;
    }
    if !were_on {
        interrupts::enable();
    }
    let sig = bits.trailing_zeros() as u8 + 1;
    match disposition(&t.process, sig) {
        Disposition::Handle => {
            let info = take_pending(&t, sig);
            run_handler(tf, &t, sig, &info);
        }
        Disposition::Ignore => {
            take_pending(&t, sig);
        }
        Disposition::Terminate => {
            // A sibling's execve ends this thread alone; anything else
            // ends the process.
            let exec_by = t.process.exec_by.load(Ordering::SeqCst);
            drop(t);
            // The parent learns it from wait4; the console only in the
            // kernel's log (a fault's kill is reported on the console as
            // a crash).
            if exec_by != 0 && exec_by != sched::current() {
                exit_thread(Status::Signaled(sig))
            }
            log::info!("pid {}: killed by signal {sig}", current_pid());
            exit_current(Status::Signaled(sig))
        }
    }
    if !were_on {
        interrupts::disable();
    }
}

/// After `rt_sigsuspend`'s return to user mode is settled: puts back the
/// mask it replaced if no handler's frame took it.
pub fn restore_suspended_mask() {
    if let Some(t) = current_thread()
        && let Some(mask) = t.saved_mask.lock().take()
    {
        t.set_blocked(mask);
    }
}

/// Whether the system call interrupted now should be restarted: the signal
/// about to be acted on has a handler installed with `SA_RESTART`.
pub fn restart_after_handler() -> bool {
    let Some(t) = current_thread() else { return false };
    let bits = deliverable(&t);
    if bits == 0 {
        return false;
    }
    let sig = bits.trailing_zeros() as u8 + 1;
    let p = &t.process;
    disposition(p, sig) == Disposition::Handle && p.actions.lock()[sig as usize - 1].flags & SA_RESTART != 0
}

/// A fault in user mode the VM could not resolve, as signal `sig` with
/// `code` and the faulting address: the process's handler runs if it has
/// one and does not block the signal; otherwise the process is killed,
/// with `what` said on the console (Linux's force_sig_fault).
pub fn fault_signal(tf: &mut TrapFrame, sig: u8, code: i32, addr: u64, what: core::fmt::Arguments<'_>) {
    // The trap came from user mode, where interrupts were on; they are on
    // before any of the process's locks is taken (a sibling thread may hold
    // one, preempted: waiting for it with interrupts off would never end).
    let were_on = interrupts::are_enabled();
    interrupts::enable();
    if let Some(t) = current_thread()
        && t.blocked.load(Ordering::SeqCst) & (1 << (sig - 1)) == 0
        && disposition(&t.process, sig) == Disposition::Handle
    {
        let info = SigInfo { code, value: addr, value2: 0, fault: Some((addr, tf.error, tf.vector)) };
        run_handler(tf, &t, sig, &info);
        if !were_on {
            interrupts::disable();
        }
        return;
    }
    kill_current(sig, what, addr, tf.rip)
}

/// `rt_sigreturn`: back from a handler to what its frame saved. A frame
/// that cannot be read kills the process with SIGSEGV.
pub fn sigreturn(tf: &mut TrapFrame) {
    let Some(t) = current_thread() else { return };
    match pop_frame(tf) {
        Ok((mask, alt)) => {
            t.set_blocked(mask);
            // The alternate stack as the frame had it, unless the thread is
            // on the current one (Linux's restore_altstack, which ignores
            // the refusal).
            let mut mine = t.altstack.lock();
            if !mine.holds(tf.rsp) {
                *mine = alt;
            }
        }
        Err(()) => kill_current(SIGSEGV, format_args!("bad signal frame"), tf.rsp, tf.rip),
    }
}

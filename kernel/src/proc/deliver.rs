//! Acting on a signal: its handler run on the way back to user mode (the
//! frame is `sigframe.rs`), its default action, a fault turned into a
//! signal, and `rt_sigreturn`.

use core::sync::atomic::Ordering;

use x86_64::instructions::interrupts;

use super::exit::{exit_current, kill_current};
use super::sigframe::{SA_NODEFER, SA_RESETHAND, SA_RESTART, SI_KERNEL, SigAction, SigInfo, pop_frame, push_frame};
use super::signal::{Disposition, SIGSEGV, UNBLOCKABLE, deliverable, disposition, take_pending};
use super::{PENDING_ANY, Process, Status, current, current_pid};
use crate::arch::trapframe::TrapFrame;

/// Runs `p`'s handler for `sig` (the running process's): its frame on the
/// user stack, the registers of `tf` pointed at the handler, the mask
/// widened as the action says. A frame that cannot be written kills the
/// process with SIGSEGV, as on Linux.
fn run_handler(tf: &mut TrapFrame, p: &Process, sig: u8, info: &SigInfo) {
    let act = p.actions.lock()[sig as usize - 1];
    // After rt_sigsuspend the frame saves the mask it replaced.
    let old = p.saved_mask.lock().take().unwrap_or_else(|| p.blocked.load(Ordering::SeqCst));
    let alt = *p.altstack.lock();
    // The frame's pages may have to be faulted in (or read from swap):
    // interrupts on for that, as for any fault of user memory, even when
    // the signal is acted on at the end of an interrupt or a fault.
    let were_on = interrupts::are_enabled();
    if !were_on {
        interrupts::enable();
    }
    let pushed = push_frame(tf, sig, &act, info, old, &alt);
    if !were_on {
        interrupts::disable();
    }
    if pushed.is_err() {
        // Linux's force_sigsegv: SIGSEGV instead, unblocked, whose own
        // handler may still run (on its alternate stack, say) unless it
        // is the one whose frame failed.
        if sig == SIGSEGV {
            p.actions.lock()[SIGSEGV as usize - 1] = SigAction::default();
        }
        p.blocked.fetch_and(!(1 << (SIGSEGV - 1)), Ordering::SeqCst);
        if disposition(p, SIGSEGV) == Disposition::Handle {
            return run_handler(tf, p, SIGSEGV, &SigInfo { code: SI_KERNEL, ..SigInfo::default() });
        }
        kill_current(SIGSEGV, format_args!("signal {sig}'s frame could not be written"), tf.rsp, tf.rip)
    }
    let mut mask = old | act.mask;
    if act.flags & SA_NODEFER == 0 {
        mask |= 1 << (sig - 1);
    }
    p.blocked.store(mask & !UNBLOCKABLE, Ordering::SeqCst);
    if act.flags & SA_RESETHAND != 0 {
        p.actions.lock()[sig as usize - 1] = SigAction::default();
    }
}

/// Acts on the current process's pending signals, on its way back to user
/// mode with `tf`: runs the handler of the first one that has one (the
/// others wait for the next return), or ends the process by it.
pub fn check_signals(tf: &mut TrapFrame) {
    if PENDING_ANY.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(p) = current() else { return };
    let bits = deliverable(&p);
    if bits == 0 {
        return;
    }
    let sig = bits.trailing_zeros() as u8 + 1;
    match disposition(&p, sig) {
        Disposition::Handle => {
            let info = p.sig_info.lock()[sig as usize - 1];
            take_pending(&p, sig);
            run_handler(tf, &p, sig, &info);
        }
        Disposition::Ignore => take_pending(&p, sig),
        Disposition::Terminate => {
            drop(p);
            // The parent learns it from wait4; the console only in the
            // kernel's log (a fault's kill is reported on the console as
            // a crash).
            log::info!("pid {}: killed by signal {sig}", current_pid());
            exit_current(Status::Signaled(sig))
        }
    }
}

/// After `rt_sigsuspend`'s return to user mode is settled: puts back the
/// mask it replaced if no handler's frame took it.
pub fn restore_suspended_mask() {
    if let Some(p) = current()
        && let Some(mask) = p.saved_mask.lock().take()
    {
        p.blocked.store(mask, Ordering::SeqCst);
    }
}

/// Whether the system call interrupted now should be restarted: the signal
/// about to be acted on has a handler installed with `SA_RESTART`.
pub fn restart_after_handler() -> bool {
    let Some(p) = current() else { return false };
    let bits = deliverable(&p);
    if bits == 0 {
        return false;
    }
    let sig = bits.trailing_zeros() as u8 + 1;
    disposition(&p, sig) == Disposition::Handle && p.actions.lock()[sig as usize - 1].flags & SA_RESTART != 0
}

/// A fault in user mode the VM could not resolve, as signal `sig` with
/// `code` and the faulting address: the process's handler runs if it has
/// one and does not block the signal; otherwise the process is killed,
/// with `what` said on the console (Linux's force_sig_fault).
pub fn fault_signal(tf: &mut TrapFrame, sig: u8, code: i32, addr: u64, what: core::fmt::Arguments<'_>) {
    if let Some(p) = current()
        && p.blocked.load(Ordering::SeqCst) & (1 << (sig - 1)) == 0
        && disposition(&p, sig) == Disposition::Handle
    {
        let info = SigInfo { code, value: addr, value2: 0, fault: Some((addr, tf.error, tf.vector)) };
        run_handler(tf, &p, sig, &info);
        return;
    }
    kill_current(sig, what, addr, tf.rip)
}

/// `rt_sigreturn`: back from a handler to what its frame saved. A frame
/// that cannot be read kills the process with SIGSEGV.
pub fn sigreturn(tf: &mut TrapFrame) {
    let Some(p) = current() else { return };
    match pop_frame(tf) {
        Ok((mask, alt)) => {
            p.blocked.store(mask & !UNBLOCKABLE, Ordering::SeqCst);
            // The alternate stack as the frame had it, unless the thread is
            // on the current one (Linux's restore_altstack, which ignores
            // the refusal).
            let mut mine = p.altstack.lock();
            if !mine.holds(tf.rsp) {
                *mine = alt;
            }
        }
        Err(()) => kill_current(SIGSEGV, format_args!("bad signal frame"), tf.rsp, tf.rip),
    }
}

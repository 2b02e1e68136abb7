//! Breakpoints for tests: the count of `int3`s taken, and a one-shot
//! hardware breakpoint (DR0) that traps at one exact kernel instruction,
//! optionally preempting the thread there.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::trapframe::TrapFrame;

/// Number of breakpoint (#BP) exceptions taken and returned from.
pub static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

/// Where the trap frame of the #DB raised by [`break_once_at`] was pushed
/// (0: not raised since it was armed). (A)
pub static BREAK_ONCE_FRAME: AtomicU64 = AtomicU64::new(0);

/// Arms a one-shot hardware breakpoint (DR0) on the execution of `addr` in
/// kernel mode: the #DB it raises records where its trap frame went (in
/// [`BREAK_ONCE_FRAME`]), disarms it, and execution goes on at `addr`. For
/// tests that need a trap at one exact instruction, which the timer cannot
/// be made to hit. The breakpoint is the CPU's, not a thread's: arm it with
/// interrupts off, just before the code that is to hit it.
pub fn break_once_at(addr: u64) {
    BREAK_ONCE_PREEMPT.store(false, Ordering::SeqCst);
    arm_break_once(addr);
}

/// Whether the #DB of [`break_once_preempting`] is to preempt. (A)
static BREAK_ONCE_PREEMPT: AtomicBool = AtomicBool::new(false);
/// The thread that hit the breakpoint, and the RFLAGS it had there. (A)
pub static BREAK_ONCE_THREAD: AtomicU64 = AtomicU64::new(0);
pub static BREAK_ONCE_RFLAGS: AtomicU64 = AtomicU64::new(0);

/// As [`break_once_at`], and the #DB then does what a timer interrupt at
/// `addr` whose time slice is over would do: preempt the thread, if a timer
/// interrupt could come there (interrupts on) and the scheduler allows it.
/// For tests of what a preemption at one exact instruction does.
pub fn break_once_preempting(addr: u64) {
    BREAK_ONCE_PREEMPT.store(true, Ordering::SeqCst);
    arm_break_once(addr);
}

fn arm_break_once(addr: u64) {
    BREAK_ONCE_FRAME.store(0, Ordering::SeqCst);
    // SAFETY: DR0 and DR7 are writable at CPL 0. DR7 = L0 with R/W0 = LEN0
    // = 0 makes DR0 an instruction breakpoint, local to this context; the
    // #DB handler (`one_shot_breakpoint`) clears DR7 again.
    unsafe {
        core::arch::asm!("mov dr0, {}", in(reg) addr, options(nostack));
        core::arch::asm!("mov dr7, {}", in(reg) 1u64, options(nostack));
    }
}

/// The #DB of [`break_once_at`], if `tf` is one (DR6.B0 in kernel mode):
/// disarms the breakpoint, records the frame and returns true.
pub(super) fn one_shot_breakpoint(tf: &TrapFrame) -> bool {
    let dr6: u64;
    // SAFETY: reading DR6 at CPL 0 has no side effect.
    unsafe { core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nostack)) };
    if tf.cs & 3 != 0 || dr6 & 1 == 0 {
        return false;
    }
    // SAFETY: clearing DR7 disables every breakpoint; DR6's status bits
    // are cleared for the next #DB (its reserved bits read as 1).
    unsafe {
        core::arch::asm!("mov dr7, {}", in(reg) 0u64, options(nostack));
        core::arch::asm!("mov dr6, {}", in(reg) 0xFFFF_0FF0u64, options(nostack));
    }
    BREAK_ONCE_FRAME.store(tf as *const TrapFrame as u64, Ordering::SeqCst);
    BREAK_ONCE_THREAD.store(crate::kern::sched::current(), Ordering::SeqCst);
    BREAK_ONCE_RFLAGS.store(tf.rflags, Ordering::SeqCst);
    const IF: u64 = 1 << 9;
    if BREAK_ONCE_PREEMPT.swap(false, Ordering::SeqCst) && tf.rflags & IF != 0 {
        crate::kern::sched::preempt_now();
    }
    true
}
